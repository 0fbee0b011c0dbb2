"""Spectral regularization in a latent flow-matching trainer, as the LoRA trainers add it.

Rectified-flow fine-tuning scripts (musubi-tuner, ai-toolkit, sd-scripts, the Anima
trainers) noise VAE latents as x_t = (1 − t)·x0 + t·ε, train v̂ ≈ ε − x0 with an MSE,
and put any spectral loss on the clean-latent estimate x̂0 = x_t − t·v̂, usually only at
t < 0.7. With specreg that is :class:`specreg.integrations.musubi.SpectralLossHook` on
musubi-tuner's ``compute_loss`` extension point (a mixin, one class attribute)::

    class SpectralTrainer(SpectralLossHook, WanNetworkTrainer):
        spectral_regularizer = specreg.SpectralRegularizer("fourier_amp", lam=0.05, sigma_max=0.7 / 0.3)

musubi-tuner is installed from its repository, not from PyPI, so this script runs the
mixin on a **stand-in** of its ``NetworkTrainer``: the same ``process_batch`` →
``call_dit`` → ``compute_loss`` chain with musubi's method signatures, its ``DiTOutput``,
its "shift" timestep sampling (t = shift·s/(1 + (shift − 1)·s), s = sigmoid(N(0, 1)),
network timestep 1000·t + 1) and its default loss (MSE against ε − x0, averaged). The
"VAE" is a fixed, invertible pixel-unshuffle (32×32 gray → 4×16×16 latents), so nothing
is downloaded; the "DiT" is specreg's small UNet on the latents. In a LoRA run only the
optimizer's parameter list differs; the loss is the same.

    python examples/flow_matching_lora.py --steps 3000 --loss fourier_amp --lam 0.05 --t-max 0.7

Data: 32×32 gray crops of the scikit-image textures brick, grass and gravel.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import specreg
from specreg.data import TextureCrops
from specreg.diffusion import sample_flow
from specreg.integrations.musubi import SpectralLossHook
from specreg.models import UNet
from specreg.train.trainer import save_image_grid

LATENT_SCALE = 2.0  # the stand-in VAE's scaling factor: latents of unit-ish variance


def encode(images: torch.Tensor) -> torch.Tensor:
    """The stand-in VAE encoder: (B, 1, 32, 32) → (B, 4, 16, 16), invertible."""
    return F.pixel_unshuffle(images, 2) * LATENT_SCALE


def decode(latents: torch.Tensor) -> torch.Tensor:
    return F.pixel_shuffle(latents / LATENT_SCALE, 2)


# --------------------------------------------------------------------------------------
# A stand-in of musubi-tuner's NetworkTrainer: the extension points and their signatures


@dataclass
class DiTOutput:
    """musubi-tuner's return type of ``call_dit``."""

    pred: torch.Tensor
    target: torch.Tensor
    extra: dict = field(default_factory=dict)


class NetworkTrainer:
    """The part of musubi-tuner's ``NetworkTrainer`` that a training step goes through."""

    def get_noisy_model_input_and_timesteps(self, args: argparse.Namespace, noise: torch.Tensor,
                                            latents: torch.Tensor, timesteps: list[float] | None,
                                            noise_scheduler: Any, device: torch.device,
                                            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # musubi's --timestep_sampling shift: a shifted sigmoid of a normal draw (or the
        # batch's bucketed t), then network timesteps 1000·t + 1.
        if timesteps is not None:
            t = torch.as_tensor(timesteps, device=device, dtype=torch.float32)
        else:
            t = torch.sigmoid(args.sigmoid_scale * torch.randn(latents.shape[0], device=device))
            t = (t * args.discrete_flow_shift) / (1 + (args.discrete_flow_shift - 1) * t)
        timesteps = t * 1000.0 + 1
        t = t.view(-1, *([1] * (latents.ndim - 1)))  # images (B, C, H, W) and video (B, C, F, H, W)
        return (1 - t) * latents + t * noise, timesteps

    def call_dit(self, args: argparse.Namespace, accelerator: Any, transformer: Any, latents: torch.Tensor,
                 batch: dict[str, torch.Tensor], noise: torch.Tensor, noisy_model_input: torch.Tensor,
                 timesteps: torch.Tensor, network_dtype: torch.dtype, **kwargs: Any) -> DiTOutput:
        raise NotImplementedError("subclass must implement `call_dit`")

    def process_batch(self, args: argparse.Namespace, accelerator: Any, transformer: Any, network: Any,
                      batch: dict[str, Any], latents: torch.Tensor, noise: torch.Tensor, noise_scheduler: Any,
                      dit_dtype: torch.dtype, network_dtype: torch.dtype, vae: Any,
                      global_step: int) -> tuple[torch.Tensor, dict]:
        noisy_model_input, timesteps = self.get_noisy_model_input_and_timesteps(
            args, noise, latents, batch.get("timesteps"), noise_scheduler, latents.device, dit_dtype)
        output = self.call_dit(args, accelerator, transformer, latents, batch, noise, noisy_model_input, timesteps,
                               network_dtype)
        return self.compute_loss(args, output, timesteps, noise_scheduler, dit_dtype, network_dtype, global_step)

    def compute_loss(self, args: argparse.Namespace, output: DiTOutput, timesteps: torch.Tensor,
                     noise_scheduler: Any, dit_dtype: torch.dtype, network_dtype: torch.dtype,
                     global_step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.mse_loss(output.pred.to(network_dtype), output.target, reduction="none")
        return loss.mean(), {}


class ToyDiTTrainer(NetworkTrainer):
    """An "architecture": the network predicts v = ε − x0 from (x_t, timesteps)."""

    def call_dit(self, args, accelerator, transformer, latents, batch, noise, noisy_model_input, timesteps,
                 network_dtype, **kwargs):
        model_pred = transformer(noisy_model_input, timesteps)
        return DiTOutput(pred=model_pred, target=noise - latents)


# --------------------------------------------------------------------------------------
# The whole specreg part: the hook first among the bases, and the regularizer


class SpectralToyDiTTrainer(SpectralLossHook, ToyDiTTrainer):
    spectral_regularizer = None  # set in main() from the command line


def lam_arg(text: str) -> float | str:
    """λ on the command line: a number, or a policy name ("edm", "snr")."""
    try:
        return float(text)
    except ValueError:
        return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--loss", default="fourier_amp", help="spectral loss name for specreg.build_loss (e.g. "
                   "fourier_amp, haar)")
    p.add_argument("--lam", type=lam_arg, default=0.05, help='λ: a number, "edm" or "snr"')
    p.add_argument("--t-max", type=float, default=0.7, help="apply the term only where t < this (gate "
                   "sigma_max = t/(1 − t)); 1 = everywhere")
    p.add_argument("--fade-t", type=float, default=None, help="instead of the gate, fade the term out "
                   "around this t (fade_sigma = t/(1 − t), width --fade-width in logit(t))")
    p.add_argument("--fade-width", type=float, default=0.4)
    p.add_argument("--discrete-flow-shift", type=float, default=3.0)
    p.add_argument("--sigmoid-scale", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--samples", type=int, default=64, help="images in the sample grid")
    p.add_argument("--sample-steps", type=int, default=30, help="Euler steps from t = 1 to 0")
    p.add_argument("--out", type=Path, default=Path("runs/flow_matching_lora"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-every", type=int, default=100)
    return p.parse_args(argv)


def build_regularizer(args: argparse.Namespace) -> specreg.SpectralRegularizer:
    """σ = t/(1 − t): the trainers' "t < 0.7" is the gate sigma_max = 0.7/0.3."""
    sigma_max = None if args.t_max >= 1 or args.fade_t is not None else args.t_max / (1 - args.t_max)
    fade_sigma = None if args.fade_t is None else args.fade_t / (1 - args.fade_t)
    return specreg.SpectralRegularizer(args.loss, lam=args.lam, sigma_max=sigma_max, fade_sigma=fade_sigma,
                                       fade_width=args.fade_width)


def batches(loader: DataLoader):
    """Endless batches, reshuffled each epoch."""
    while True:
        yield from loader


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Train, sample, write ``samples.png``; return the per-step losses."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    data = TextureCrops(("brick", "grass", "gravel"), size=32, n=3000, seed=args.seed, split="train")
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))

    trainer = SpectralToyDiTTrainer()
    trainer.spectral_regularizer = build_regularizer(args)
    dit = UNet(in_channels=4, model_channels=24, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
               resolution=16).to(device)
    optimizer = torch.optim.AdamW(dit.parameters(), lr=args.lr)

    history = []
    dit.train()
    for step, (images, _) in zip(range(args.steps), batches(loader)):
        latents = encode(images.to(device))
        noise = torch.randn_like(latents)
        loss, metrics = trainer.process_batch(args, None, dit, None, {}, latents, noise, None, torch.float32,
                                              torch.float32, None, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        history.append({"loss": loss.item(), **metrics})
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:6d}  loss {loss.item():.4f}  L_S {metrics['loss/spectral']:.4f}  "
                  f"λ {metrics['loss/spectral_lambda']:.4f}")

    dit.eval()
    noise = torch.randn(args.samples, 4, 16, 16, generator=torch.Generator().manual_seed(args.seed)).to(device)
    with torch.no_grad():
        latents = sample_flow(lambda x, t: dit(x, t * 1000 + 1), noise, torch.linspace(1, 0, args.sample_steps + 1))
    grid = save_image_grid(decode(latents).clamp(-1, 1), args.out / "samples.png")
    print(f"wrote {grid}")
    return history


if __name__ == "__main__":
    main()
