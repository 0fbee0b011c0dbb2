"""Noise schedules in σ: the sampling grids and EDM's training distributions.

Sampling grids, float64, shape (n + 1,), decreasing, last entry 0 (Karras et al. 2022,
Table 1, and Eq. 5):

* :func:`karras_sigmas`: σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ (EDM).
* :func:`vp_sigmas`: Song et al.'s VP time steps t_i = 1 + i/(n−1)·(ε_s − 1) as σ_vp(t_i).
* :func:`ve_sigmas`: Song et al.'s VE steps, geometric from σ_max to σ_min.

The VP schedule σ_vp(t) = √(exp(½β_d t² + β_min t) − 1) and its inverse are here because
the grids, VP preconditioning (c_noise) and VP training all use them.

Training σ (:func:`edm_training_sampler`) is an entry of the noise-level registry
(:mod:`specreg.diffusion.timesteps`): ``"edm"`` log-normal, ``"vp"`` t ~ U(ε_t, 1),
``"ve"`` log-uniform. EDM draws them in float32, as it always has.
"""

from __future__ import annotations

import math

import torch

from specreg._checks import check_positive
from specreg.diffusion.timesteps import VP, LogNormal, LogUniform, TimestepSampler

__all__ = ["edm_training_sampler", "karras_sigmas", "ve_sigmas", "vp_sigma", "vp_sigma_inv", "vp_sigmas"]


def vp_sigma(t: torch.Tensor, beta_d: float, beta_min: float) -> torch.Tensor:
    """σ_vp(t) = sqrt(exp(½β_d t² + β_min t) − 1)."""
    return torch.expm1(0.5 * beta_d * t**2 + beta_min * t).sqrt()


def vp_sigma_inv(sigma: torch.Tensor, beta_d: float, beta_min: float) -> torch.Tensor:
    """t = (sqrt(β_min² + 2β_d·ln(1 + σ²)) − β_min)/β_d, the inverse of :func:`vp_sigma`."""
    return ((beta_min**2 + 2 * beta_d * torch.log1p(sigma**2)).sqrt() - beta_min) / beta_d


def _check_grid(n: int, sigma_min: float, sigma_max: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is not accepted; expected an integer number of steps >= 1")
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min={sigma_min} must be smaller than sigma_max={sigma_max}")


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """EDM's noise levels (Karras et al. 2022, Eq. 5), float64, shape (n + 1,):

        σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,  i = 0 … n−1,  σ_n = 0.

    With n = 1 the grid is (σ_max, 0).
    """
    _check_grid(n, sigma_min, sigma_max)
    check_positive("rho", rho)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def vp_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, epsilon_s: float = 1e-3,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Song et al.'s VP time steps as σ levels (Karras et al. Table 1), float64, (n + 1,):

        t_i = 1 + i/(n−1)·(ε_s − 1),  σ(t) = sqrt(exp(½β_d t² + β_min t) − 1),

    with β_d, β_min chosen so that σ(1) = σ_max and σ(ε_s) = σ_min; σ_n = 0.
    """
    _check_grid(n, sigma_min, sigma_max)
    check_positive("epsilon_s", epsilon_s)
    log_max, log_min = math.log(sigma_max**2 + 1), math.log(sigma_min**2 + 1)
    beta_d = 2 * (log_min / epsilon_s - log_max) / (epsilon_s - 1)
    beta_min = log_max - 0.5 * beta_d
    ramp = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    t = 1 + ramp * (epsilon_s - 1)
    return _append_zero(torch.expm1(0.5 * beta_d * t**2 + beta_min * t).sqrt())


def ve_sigmas(n: int, sigma_min: float = 0.02, sigma_max: float = 100.0,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Song et al.'s VE time steps as σ levels, float64, (n + 1,): geometric from σ_max to
    σ_min, σ_i = σ_max·(σ_min/σ_max)^{i/(n−1)}, then σ_n = 0."""
    _check_grid(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    return _append_zero(sigma_max * (sigma_min / sigma_max) ** ramp)


def edm_training_sampler(precond: str, *, P_mean: float = -1.2, P_std: float = 1.2, beta_d: float = 19.9,
                         beta_min: float = 0.1, epsilon_t: float = 1e-5, ve_sigma_min: float = 0.02,
                         ve_sigma_max: float = 100.0) -> TimestepSampler:
    """The registry entry of EDM's training σ for ``precond`` (Karras et al. 2022, Table 1):
    ``"edm"`` ln σ ~ N(P_mean, P_std²), ``"vp"`` σ_vp(t), t ~ U(ε_t, 1), ``"ve"``
    ln σ ~ U(ln σ_min^ve, ln σ_max^ve)."""
    if precond == "edm":
        return LogNormal(P_mean, P_std)
    if precond == "vp":
        return VP(beta_d, beta_min, epsilon_t)
    return LogUniform(ve_sigma_min, ve_sigma_max)
