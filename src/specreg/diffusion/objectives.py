"""EDM's training objective (Karras et al. 2022, Eq. 2 and Table 1), stateless.

Loss weights λ(σ): ``"edm"`` (σ² + σ_d²)/(σ·σ_d)², ``"vp"`` and ``"ve"`` 1/σ².

The per-sample diffusion term is λ(σ)·mean over non-batch dims of (D(x0 + σε; σ) − x0)²,
i.e. NVlabs/edm's loss divided by the number of elements per sample. Nothing here reads a
tensor's value on the host, so the loss runs without a device sync and compiles to one
graph (tests/test_diffusion_edm.py checks both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from specreg.diffusion.base import mean_per_sample, per_sample
from specreg.diffusion.prediction import x0_from_pred


def loss_weight(precond: str, sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """λ(σ): (σ² + σ_d²)/(σ·σ_d)² for ``"edm"``, 1/σ² for ``"vp"`` and ``"ve"``."""
    if precond == "edm":
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    return 1 / sigma**2


def denoising_loss(denoiser: Callable[..., torch.Tensor], x0: torch.Tensor, sigma: torch.Tensor,
                   noise: torch.Tensor, lam: torch.Tensor, **model_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ·mean((D(x0 + σ·ε; σ) − x0)²) per sample (B,), x̂0 = D), in float64 for float64 x0
    and float32 otherwise; σ and λ of shape (B,) in that dtype."""
    dtype = torch.float64 if x0.dtype == torch.float64 else torch.float32
    x = x0.to(dtype) + per_sample(sigma, x0) * noise.to(dtype)
    x0_hat = x0_from_pred(denoiser(x, sigma, **model_kwargs), x, prediction="edm", validate=False)
    return lam * mean_per_sample((x0_hat.to(dtype) - x0.to(dtype)).square()), x0_hat
