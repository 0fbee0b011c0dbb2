"""A small convolutional VAE for latent diffusion at laptop scale.

Images (B, C, H, W) in [−1, 1] ↔ latents (B, z, H/4, W/4), as Stable Diffusion's
autoencoder does at 8× (here 4×: 32×32 gray images ↔ 4×8×8 latents, 4× fewer values):

    encoder: conv → [res → down]×2 → res → (μ, log σ²)      decoder: the mirror, nearest-upsampling

:meth:`ConvVAE.latents` returns the *scaled* posterior mean s·μ(x) and :meth:`ConvVAE.images`
decodes s⁻¹·z, with ``scaling_factor`` s set after training so that the latents of the
training data have unit variance (SD's 0.18215, measured here). Diffusion models train
on ``latents(x)`` and are sampled through ``images(z)``.

The project trains one on Fashion-MNIST (``scripts/train_vae.py``) and ships it
(``specreg/assets/fashion_vae.safetensors`` with its metadata in a ``.json``);
:func:`load_autoencoder` loads it by name, or any file saved the same way by path.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHIPPED = {"fashion_vae": "fashion_vae"}


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), _norm(c), nn.SiLU(),
                                  nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConvVAE(nn.Module):
    """Convolutional VAE with 4× spatial compression (see the module docstring).

    Args:
        in_channels: image channels (1 gray, 3 RGB).
        latent_channels: z, the latent channels.
        channels: widths at full, 1/2 and 1/4 resolution.
        scaling_factor: s, latents = s·μ (set by the training script; 1 before).
    """

    scaling_factor: torch.Tensor  # a buffer

    def __init__(self, in_channels: int = 1, latent_channels: int = 4, channels: tuple[int, int, int] = (32, 64, 64),
                 scaling_factor: float = 1.0) -> None:
        super().__init__()
        c0, c1, c2 = channels
        self.in_channels, self.latent_channels, self.channels = in_channels, latent_channels, tuple(channels)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, padding=1), _Res(c0), nn.Conv2d(c0, c1, 3, stride=2, padding=1), _Res(c1),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), _Res(c2), _norm(c2), nn.SiLU(),
            nn.Conv2d(c2, 2 * latent_channels, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, c2, 3, padding=1), _Res(c2), nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(c2, c1, 3, padding=1), _Res(c1), nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(c1, c0, 3, padding=1), _Res(c0), _norm(c0), nn.SiLU(), nn.Conv2d(c0, in_channels, 3, padding=1))
        self.register_buffer("scaling_factor", torch.tensor(float(scaling_factor)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z | x), each (B, z, H/4, W/4), unscaled."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"images have shape {tuple(x.shape)}; the autoencoder takes (B, {self.in_channels}, H, W) "
                             "with H and W divisible by 4")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, 4h, 4w) from unscaled latents (B, z, h, w)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction from a sampled z, μ, log σ²) — what training needs."""
        mean, logvar = self.encode(x)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.decode(mean + torch.exp(0.5 * logvar) * eps), mean, logvar

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """s·μ(x): the scaled latents a diffusion model trains on."""
        return self.encode(x)[0] * self.scaling_factor

    def images(self, z: torch.Tensor) -> torch.Tensor:
        """decode(z / s): images from scaled latents (differentiable; the weights may be frozen)."""
        return self.decode(z / self.scaling_factor)

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(z, H/4, W/4) for images of shape (C, H, W)."""
        _, h, w = image_shape
        return self.latent_channels, h // 4, w // 4

    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "latent_channels": self.latent_channels,
                "channels": list(self.channels), "scaling_factor": float(self.scaling_factor)}


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) ‖ N(0, I)) per sample, summed over latent elements: ½ Σ (μ² + σ² − 1 − log σ²)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def save_autoencoder(vae: ConvVAE, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """``path`` (.safetensors, the weights) and ``path`` with .json (config and ``metadata``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"config": vae.config(), **(metadata or {})}, indent=1) + "\n")
    return path


def load_autoencoder(name: str | Path) -> ConvVAE:
    """A frozen :class:`ConvVAE` in eval mode: a shipped one by name (``fashion_vae``) or a
    ``.safetensors`` file written by :func:`save_autoencoder`. Loaded offline."""
    from safetensors.torch import load_file

    if str(name) in SHIPPED:
        folder = resources.files("specreg") / "assets"
        path = Path(str(folder / f"{SHIPPED[str(name)]}.safetensors"))
    else:
        path = Path(name)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise ValueError(f"autoencoder {str(name)!r} not found: expected a shipped name ({list(SHIPPED)}) or a "
                         ".safetensors file with its .json beside it (scripts/train_vae.py writes both)")
    meta = json.loads(meta_path.read_text())
    vae = ConvVAE(**{**meta["config"], "channels": tuple(meta["config"]["channels"])})
    vae.load_state_dict(load_file(str(path)))
    vae.metadata = meta
    return vae.eval().requires_grad_(False)


def latent_std(vae: ConvVAE, images: torch.Tensor, batch: int = 512) -> float:
    """The standard deviation of the unscaled posterior means of ``images`` (for s = 1/std)."""
    with torch.no_grad():
        means = torch.cat([vae.encode(images[i:i + batch])[0] for i in range(0, len(images), batch)])
    return float(means.double().std()) or math.nan


__all__ = ["ConvVAE", "kl_divergence", "latent_std", "load_autoencoder", "save_autoencoder"]
