"""Spectral regularization in a diffusers flow-matching (SD3-style) training loop.

The conventions are those of diffusers' ``FlowMatchEulerDiscreteScheduler`` and its SD3
training scripts: x_t = (1 − t)·x0 + t·ε with t ∈ [0, 1] (t = 1 is pure noise), the
network predicts the velocity v = ε − x0 and is conditioned on the timestep 1000·t, and
t is drawn logit-normally (``compute_density_for_timestep_sampling``, then an index into
the scheduler's training schedule, as the SD3 scripts do). specreg adds exactly two
lines, each marked ``# specreg``: x̂0 = x_t − t·v̂, then λ·L_S(x̂0, x0) with the noise
level σ = t/(1 − t). Samples come from the scheduler's own Euler ``step``.

    python examples/diffusers_flow_matching.py --steps 3000 --loss haar --lam 0.1

Data: Fashion-MNIST padded to 32×32 in [−1, 1] (the Debian package
``dataset-fashion-mnist``; see ``specreg.data.FashionMNIST``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel
from diffusers.training_utils import compute_density_for_timestep_sampling
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
    p.add_argument("--loss", default="haar", help="spectral loss name for specreg.build_loss (e.g. haar, "
                   "fourier_amp, fourier_ap_weighted)")
    p.add_argument("--lam", type=lam_arg, default=0.1, help='λ: a number, "edm" or "snr"')
    # x̂0 = x_t − t·v̂ has error t·|v − v̂|, bounded at every t, so no gate by default.
    p.add_argument("--sigma-max", type=float, default=None, help="apply the term only where σ ≤ this")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--samples", type=int, default=64, help="images in the sample grid")
    p.add_argument("--sample-steps", type=int, default=50, help="Euler steps of the scheduler")
    p.add_argument("--out", type=Path, default=Path("runs/diffusers_flow_matching"))
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


@torch.no_grad()
def sample(model: UNet2DModel, scheduler: FlowMatchEulerDiscreteScheduler, n: int, steps: int,
           generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Integrate from x_1 = ε to t = 0 with the scheduler's Euler ``step`` (N, C, H, W)."""
    scheduler.set_timesteps(steps, device=device)
    cfg = model.config
    x = torch.randn((n, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=generator).to(device)
    for timestep in scheduler.timesteps:
        v_hat = model(x, timestep.expand(n)).sample
        x = scheduler.step(v_hat, timestep, x).prev_sample
    return x


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
    generator = torch.Generator().manual_seed(args.seed)

    model = make_unet().to(device)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    reg = specreg.SpectralRegularizer(args.loss, lam=args.lam, sigma_max=args.sigma_max)

    history = []
    model.train()
    for step, (clean, _) in zip(range(args.steps), batches(loader)):
        clean = clean.to(device)
        noise = torch.randn_like(clean)
        # SD3's logit-normal density, mapped onto the training schedule: sigmas are the flow
        # times t, timesteps = 1000·t is what the network is conditioned on.
        u = compute_density_for_timestep_sampling("logit_normal", clean.shape[0], logit_mean=0.0, logit_std=1.0,
                                                  generator=generator)
        indices = (u * scheduler.config.num_train_timesteps).long()
        t = scheduler.sigmas[indices].to(device)
        timesteps = scheduler.timesteps[indices].to(device)
        t_b = t.view(-1, 1, 1, 1)
        noisy = (1 - t_b) * clean + t_b * noise  # = scheduler.scale_noise(clean, timesteps, noise)
        model_output = model(noisy, timesteps).sample
        # Per-sample (B,) MSE against the velocity: the regularizer adds one value per sample.
        loss = F.mse_loss(model_output.float(), (noise - clean).float(), reduction="none").mean(dim=(1, 2, 3))
        diffusion = loss.detach()  # logged only
        x0_hat = specreg.x0_from_pred(model_output, noisy, prediction="flow_prediction", t=t)  # specreg line 1
        loss = loss + reg(x0_hat, clean, sigma=specreg.sigma_from_flow_t(t)).value  # specreg line 2
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()

        history.append({"loss": loss.mean().item(), "diffusion": diffusion.mean().item()})
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:6d}  loss {history[-1]['loss']:.4f}  diffusion {history[-1]['diffusion']:.4f}")

    # A copy of the scheduler for sampling: set_timesteps replaces the training schedule.
    model.eval()
    sampler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
    x = sample(model, sampler, args.samples, args.sample_steps, torch.Generator().manual_seed(args.seed), device)
    grid = save_image_grid(x, args.out / "samples.png")
    print(f"wrote {grid}")
    return history


if __name__ == "__main__":
    main()
