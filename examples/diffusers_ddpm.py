"""Spectral regularization in a plain diffusers DDPM training loop: two marked lines.

The loop is the core of diffusers' unconditional image training example: a
``UNet2DModel``, ``DDPMScheduler.add_noise``, and an MSE against whatever the scheduler's
``prediction_type`` asks for (ε, v or x0). specreg adds exactly two lines, each marked
``# specreg``: the predicted clean sample x̂0 from the model output, then
λ·L_S(x̂0, x0) added to the per-sample loss. The regularizer is built once, before the
loop. Sampling is diffusers' own ``DDPMPipeline``; a PNG grid of samples is written.

    python examples/diffusers_ddpm.py --steps 3000 --prediction epsilon --loss haar --lam 0.1

Data: Fashion-MNIST padded to 32×32 in [−1, 1] (the Debian package
``dataset-fashion-mnist``; see ``specreg.data.FashionMNIST``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from torch.utils.data import DataLoader

import specreg
from specreg.data import FashionMNIST
from specreg.train.trainer import save_image_grid


def lam_arg(text: str) -> float | str:
    """λ on the command line: a number, or a policy name ("edm", "snr")."""
    try:
        return float(text)
    except ValueError:
        return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--prediction", default="epsilon", choices=("epsilon", "v_prediction", "sample"),
                   help="DDPMScheduler prediction_type")
    p.add_argument("--loss", default="haar", help="spectral loss name for specreg.build_loss (e.g. haar, "
                   "fourier_amp, fourier_ap_weighted)")
    p.add_argument("--lam", type=lam_arg, default=0.1, help='λ: a number, "edm" or "snr"')
    # x̂0 from ε divides by sqrt(ᾱ_t): at t = 999 its error is 157× the ε error, so by default the
    # term only acts where σ ≤ 1 (ᾱ ≥ 0.5). Pass a large value to switch the gate off.
    p.add_argument("--sigma-max", type=float, default=1.0, help="apply the term only where σ ≤ this")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--samples", type=int, default=64, help="images in the sample grid")
    p.add_argument("--sample-steps", type=int, default=100, help="DDPMPipeline num_inference_steps")
    p.add_argument("--out", type=Path, default=Path("runs/diffusers_ddpm"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-every", type=int, default=100)
    return p.parse_args(argv)


def make_unet() -> UNet2DModel:
    """A tiny diffusers UNet for 32×32 gray images (0.18 M parameters)."""
    return UNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8,
    )


def batches(loader: DataLoader):
    """Endless batches, reshuffled each epoch."""
    while True:
        yield from loader


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Train, sample, write ``samples.png``; return the per-step batch-mean losses."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    data = FashionMNIST(split="train", size=32)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))

    model = make_unet().to(device)
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=args.prediction)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    reg = specreg.SpectralRegularizer(args.loss, lam=args.lam, sigma_max=args.sigma_max)

    history = []
    model.train()
    for step, (clean, _) in zip(range(args.steps), batches(loader)):
        clean = clean.to(device)
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), device=device)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        model_output = model(noisy, timesteps).sample
        if scheduler.config.prediction_type == "epsilon":
            target = noise
        elif scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(clean, noise, timesteps)
        else:
            target = clean
        # Per-sample (B,) MSE: the regularizer adds one value per sample, so reduce after it.
        loss = F.mse_loss(model_output.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        diffusion = loss.detach()  # logged only
        x0_hat = specreg.x0_from_pred(model_output, noisy, prediction=scheduler.config.prediction_type, t=timesteps, alphas_cumprod=scheduler.alphas_cumprod)  # specreg line 1
        loss = loss + reg(x0_hat, clean, sigma=specreg.sigma_from_alpha_bar(scheduler.alphas_cumprod.to(clean.device)[timesteps])).value  # specreg line 2
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()

        history.append({"loss": loss.mean().item(), "diffusion": diffusion.mean().item()})
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:6d}  loss {history[-1]['loss']:.4f}  diffusion {history[-1]['diffusion']:.4f}")

    # Sampling is untouched by the regularizer: diffusers' own pipeline and scheduler.
    model.eval()
    pipeline = DDPMPipeline(unet=model, scheduler=scheduler).to(device)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=args.samples, num_inference_steps=args.sample_steps, output_type="np",
                      generator=torch.Generator().manual_seed(args.seed)).images  # (N, H, W, C) in [0, 1]
    grid = save_image_grid(torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1, args.out / "samples.png")
    print(f"wrote {grid}")
    return history


if __name__ == "__main__":
    main()
