#!/usr/bin/env python
"""Train the shipped latent autoencoder (``specreg/assets/fashion_vae``) on a CPU in minutes.

A :class:`specreg.models.vae.ConvVAE` (32×32 gray ↔ 4×8×8 latents) on the Fashion-MNIST
train split (60 000 images padded to 32×32, as ``FashionMNIST(size=32)``, random
horizontal flips): loss = per-pixel MSE of the reconstruction from a sampled latent +
β·KL per latent element (a nearly deterministic autoencoder, as latent-diffusion VAEs are),
Adam with a cosine decay. Afterwards the scaling factor s = 1/std(μ) of the training
latents is stored, and the latent model's *ceiling* is measured on the 10 000 test
images: decode(encode(x)) against a disjoint half of the test split, by the same metrics
and code as every study (LSD over all bins and the high band, the domain Fréchet distance
on the project's Fashion-MNIST classifier), next to the same numbers for real images.

Writes ``<out>/fashion_vae.safetensors`` and ``fashion_vae.json`` (architecture, scaling
factor, the ceiling, the command, training time, versions).

Usage (defaults reproduce the shipped file)::

    python scripts/train_vae.py --out src/specreg/assets
    python scripts/train_vae.py --steps 20 --out /tmp/vae     # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("src/specreg/assets"), help="output folder")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--beta", type=float, default=1e-4, help="KL weight per latent element")
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-eval", type=int, default=5000, help="test images reconstructed for the ceiling")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "latent_channels", "threads", "n_eval"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)} is not accepted; expected an integer >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from specreg.data.images import FashionMNIST
    from specreg.experiments.evaluate import evaluate
    from specreg.models.vae import ConvVAE, kl_divergence, latent_std, save_autoencoder

    train = FashionMNIST(split="train", size=32)
    images = torch.stack([train[i][0] for i in range(len(train))])
    vae = ConvVAE(in_channels=1, latent_channels=args.latent_channels)
    opt = torch.optim.Adam(vae.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    log = []
    for step in range(1, args.steps + 1):
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(images), (args.batch_size,), generator=g)
        x = images[idx]
        flip = torch.rand(args.batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        recon, mean, logvar = vae(x, generator=g)
        mse = (recon - x).square().flatten(1).mean(1)
        kl = kl_divergence(mean, logvar) / mean[0].numel()
        loss = (mse + args.beta * kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == args.steps:
            log.append({"step": step, "mse": float(mse.detach().mean()), "kl_per_element": float(kl.detach().mean())})
            print(f"step {step}: mse {log[-1]['mse']:.5f}, kl/element {log[-1]['kl_per_element']:.3f}", flush=True)
    train_s = time.time() - t0
    vae.eval()
    vae.scaling_factor.fill_(1.0 / latent_std(vae, images[:10000]))

    # the ceiling: reconstructions of test images against other test images, like a study
    test = FashionMNIST(split="test", size=32)
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(1))
    n = min(args.n_eval, len(test) // 2)
    x = torch.stack([test[int(i)][0] for i in perm[:n]])
    reference = torch.stack([test[int(i)][0] for i in perm[n:2 * n]])
    with torch.no_grad():
        recon = torch.cat([vae.images(vae.latents(x[i:i + 500])) for i in range(0, n, 500)]).clamp(-1, 1)
    metrics = ["lsd", "lsd_high", "domain_fd"]
    ceiling = {
        "reconstructions": evaluate(recon, reference, metrics=metrics, progress=False)["metrics"],
        "real (the same images, not encoded)": evaluate(x, reference, metrics=metrics, progress=False)["metrics"],
        "reconstruction mse": float((recon - x).square().mean()),
    }
    print(f"ceiling on {n} test images: {ceiling}")
    from specreg import __version__

    meta = {
        "task": "Fashion-MNIST 32×32 (padded) ↔ latents "
                f"{args.latent_channels}×8×8; latents = scaling_factor × posterior mean",
        "training": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "beta": args.beta,
                     "seed": args.seed, "seconds": round(train_s, 1), "log": log},
        "ceiling": {"n": n, "reference": f"{n} other Fashion-MNIST test images (seed 1)", **ceiling},
        "command": shlex.join([sys.executable.split("/")[-1], *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "specreg": __version__},
    }
    path = save_autoencoder(vae, args.out / "fashion_vae.safetensors", meta)
    print(f"wrote {path} and {path.with_suffix('.json')} ({train_s / 60:.1f} min of training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
