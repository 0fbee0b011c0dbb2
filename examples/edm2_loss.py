"""Spectral regularization in an NVlabs/edm2 training run: one entry in ``loss_kwargs``.

EDM2 builds its loss from ``loss_kwargs`` by class name and calls
``loss_fn(net=ddp, images=images, labels=labels)``; its network returns the denoised
image and the log-variance of its learned uncertainty, ``net(x, sigma, labels,
return_logvar=True)``. specreg's :class:`specreg.integrations.edm2.SpectralEDM2Loss`
is EDM2's loss plus λ·L_S(x̂0, x0), so in ``train_edm2.py`` the whole change is::

    c.loss_kwargs = dnnlib.EasyDict(class_name="specreg.integrations.edm2.SpectralEDM2Loss",
                                    P_mean=opts.P_mean, P_std=opts.P_std, loss="haar", lam=0.1)

NVlabs/edm2 is not a pip package (and its code is CC BY-NC-SA), so this script does not
import it: it runs the loss in a **stand-in** of EDM2's loop with the same conventions —
the loss object built by name (``construct_class_by_name``, as ``dnnlib.util``'s), a
network with EDM2's ``Precond`` signature returning ``(D, logvar)`` (specreg's UNet and
EDM preconditioning, plus a small logvar head on ln σ), ``loss.sum()`` over elements
divided by the batch, and the loss object's state saved and loaded as EDM2's
``CheckpointIO`` does (``state_dict``, ``torch.load(weights_only=True)``). Samples come
from EDM's Heun sampler on D (EDM2's ``generate_images.py`` uses the same one).

    python examples/edm2_loss.py --steps 3000 --loss haar --lam 0.1

Data: 32×32 gray crops of the scikit-image textures brick, grass and gravel, in pixel
space like EDM2's 64×64 models (its 512×512 models train on VAE latents).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

import specreg
from specreg.data import TextureCrops
from specreg.models import unet_preset
from specreg.train.trainer import save_image_grid


def construct_class_by_name(class_name: str, **kwargs: Any) -> Any:
    """Build ``module.Class(**kwargs)`` from its dotted name, as EDM2's ``dnnlib.util`` does."""
    module_name, _, attr = class_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)


class Precond(nn.Module):
    """A stand-in with EDM2's ``Precond`` calling convention.

    ``net(x, sigma, class_labels=None, return_logvar=False)`` → D(x; σ), or ``(D, logvar)``
    with ``return_logvar=True``; σ may be (B, 1, 1, 1) (the loss) or (B,) (samplers).
    logvar u(σ) is EDM2's kind of head: a linear layer on frozen Fourier features of
    ln(σ)/4, zero at the start.
    """

    def __init__(self, unet: nn.Module, sigma_data: float = 0.5, logvar_channels: int = 128) -> None:
        super().__init__()
        self.denoiser = specreg.EDM("edm", sigma_data=sigma_data).precondition(unet)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("freqs", 2 * math.pi * torch.randn(logvar_channels, generator=g))
        self.register_buffer("phases", 2 * math.pi * torch.rand(logvar_channels, generator=g))
        self.logvar_linear = nn.Linear(logvar_channels, 1)
        nn.init.zeros_(self.logvar_linear.weight)
        nn.init.zeros_(self.logvar_linear.bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None,
                return_logvar: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        sigma = sigma.reshape(-1)
        denoised = self.denoiser(x, sigma, class_labels=class_labels)
        if not return_logvar:
            return denoised
        c_noise = sigma.log().to(self.freqs.dtype) / 4
        features = math.sqrt(2) * torch.cos(c_noise[:, None] * self.freqs + self.phases)
        logvar = self.logvar_linear(features).reshape(-1, 1, 1, 1)
        return denoised, logvar


def lam_arg(text: str) -> float | str | dict:
    """λ on the command line: a number, a policy name ("edm", "snr", "auto") or JSON
    such as '{"auto": {"ratio": 0.2}}'."""
    try:
        return float(text)
    except ValueError:
        return json.loads(text) if text.lstrip().startswith("{") else text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--loss", default="haar", help="spectral loss name for specreg.build_loss (e.g. haar, "
                   "fourier_amp, fourier_ap_weighted)")
    p.add_argument("--lam", type=lam_arg, default=0.1, help='λ: a number, "edm", "snr", "auto" or '
                   'JSON such as \'{"auto": {"ratio": 0.2}}\'')
    p.add_argument("--sigma-max", type=float, default=None, help="apply the term only where σ ≤ this")
    # EDM2's ImageNet presets use P_mean −0.4 (512², latents) and −0.8 (64², pixels).
    p.add_argument("--P-mean", type=float, default=-0.8)
    p.add_argument("--P-std", type=float, default=1.6)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--samples", type=int, default=64, help="images in the sample grid")
    p.add_argument("--sample-steps", type=int, default=18, help="Heun steps of EDM's sampler")
    p.add_argument("--out", type=Path, default=Path("runs/edm2_loss"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-every", type=int, default=100)
    return p.parse_args(argv)


def batches(loader: DataLoader):
    """Endless batches, reshuffled each epoch."""
    while True:
        yield from loader


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Train, save the training state, sample, write ``samples.png``; return per-step losses."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    data = TextureCrops(("brick", "grass", "gravel"), size=32, n=3000, seed=args.seed, split="train")
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))

    # What train_edm2.py puts in its config: plain values, which it prints and saves as JSON
    # before training (so the loss is built here from the JSON round trip, as a resumed run is).
    loss_kwargs = dict(class_name="specreg.integrations.edm2.SpectralEDM2Loss", P_mean=args.P_mean,
                       P_std=args.P_std, loss=args.loss, lam=args.lam, sigma_max=args.sigma_max)
    loss_kwargs = json.loads(json.dumps(loss_kwargs, indent=2))
    loss_fn = construct_class_by_name(**loss_kwargs)
    net = Precond(unet_preset("cpu32s")).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.99))

    history = []
    net.train()
    for step, (images, _labels) in zip(range(args.steps), batches(loader)):
        images = images.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net=net, images=images, labels=None)
        # EDM2's loop: the per-element loss summed, divided by the batch.
        loss.sum().mul(1 / images.shape[0]).backward()
        optimizer.step()

        history.append({"loss": loss.mean().item(), "spectral": loss_fn.last.spectral.mean().item(),
                        "lam": loss_fn.last.lam.mean().item()})
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:6d}  loss {history[-1]['loss']:.4f}  L_S {history[-1]['spectral']:.4f}")

    # EDM2's CheckpointIO: objects with state_dict() are saved as their state dicts and read
    # back with torch.load (weights only since torch 2.6).
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({"net": net.state_dict(), "loss_fn": loss_fn.state_dict()}, args.out / "training-state.pt")
    state = torch.load(args.out / "training-state.pt", map_location="cpu", weights_only=True)
    loss_fn.load_state_dict(state["loss_fn"])

    net.eval()
    x = specreg.EDM("edm").sample(net, (args.samples, 1, 32, 32), sampler="heun", steps=args.sample_steps,
                                  generator=torch.Generator().manual_seed(args.seed), device=device)
    grid = save_image_grid(x, args.out / "samples.png")
    print(f"wrote {grid}")
    return history


if __name__ == "__main__":
    main()
