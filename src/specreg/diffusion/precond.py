"""Preconditioning (Karras et al. 2022, Table 1): a raw network F made into a denoiser

    D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ)),

whose output is the predicted clean sample x̂0 for the VE state x = x0 + σ·ε.

============  =====================  ==========================  ====================  ===================
precond       c_skip                 c_out                       c_in                  c_noise
============  =====================  ==========================  ====================  ===================
``"edm"``     σ_d²/(σ² + σ_d²)        σ·σ_d/sqrt(σ² + σ_d²)        1/sqrt(σ² + σ_d²)      ¼·ln σ
``"vp"``      1                      −σ                          1/sqrt(σ² + 1)        (M − 1)·σ⁻¹_vp(σ)
``"ve"``      1                      σ                           1                     ln(σ/2)
============  =====================  ==========================  ====================  ===================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from specreg.diffusion.base import per_sample
from specreg.diffusion.schedule import vp_sigma_inv

PRECONDS = ("edm", "vp", "ve")

Coefficients = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def coefficients(precond: str, sigma: torch.Tensor, *, sigma_data: float = 0.5, beta_d: float = 19.9,
                 beta_min: float = 0.1, M: int = 1000) -> Coefficients:
    """(c_skip, c_out, c_in, c_noise) at σ, each with the shape of ``sigma`` (module doc table)."""
    if precond == "edm":
        sd2 = sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sigma**2 + sd2).sqrt()
        c_noise = sigma.log() / 4
    elif precond == "vp":
        c_skip = torch.ones_like(sigma)
        c_out = -sigma
        c_in = 1 / (sigma**2 + 1).sqrt()
        c_noise = (M - 1) * vp_sigma_inv(sigma, beta_d, beta_min)
    else:
        c_skip = torch.ones_like(sigma)
        c_out = sigma
        c_in = torch.ones_like(sigma)
        c_noise = (0.5 * sigma).log()
    return c_skip, c_out, c_in, c_noise


class Preconditioned(Protocol):
    """What :class:`Denoiser` needs of a formulation (:class:`specreg.diffusion.EDM` has it)."""

    precond: str

    @property
    def supported_range(self) -> tuple[float, float]: ...

    def coefficients(self, sigma: torch.Tensor) -> Coefficients: ...


class Denoiser(nn.Module):
    """D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise): a raw network made into an x̂0 predictor.

    As in NVlabs/edm, x and σ are cast to ``dtype`` (float32) before the network and its
    output is cast back, so mixed-precision networks (autocast) still return float32 x̂0.
    ``sigma`` may be a scalar or (B,). ``sigma_min``/``sigma_max`` give the supported range.
    Only ``net`` is a submodule, so ``state_dict`` is the network's.
    """

    def __init__(self, net: Callable[..., torch.Tensor], formulation: Preconditioned,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.net = net
        self.formulation = formulation
        self.dtype = dtype
        self.sigma_min, self.sigma_max = formulation.supported_range

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **model_kwargs: Any) -> torch.Tensor:
        x = x.to(self.dtype)
        sigma = torch.as_tensor(sigma, device=x.device).to(self.dtype).reshape(-1)
        if sigma.shape[0] == 1:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = self.formulation.coefficients(sigma)
        F_x = self.net(per_sample(c_in, x) * x, c_noise, **model_kwargs)
        return per_sample(c_skip, x) * x + per_sample(c_out, x) * F_x.to(self.dtype)

    def extra_repr(self) -> str:
        return f"precond={self.formulation.precond!r}, dtype={self.dtype}"
