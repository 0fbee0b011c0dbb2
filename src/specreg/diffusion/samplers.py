"""Samplers for the probability-flow ODE dx/dσ = (x − D(x; σ))/σ (Karras et al. 2022).

One convention everywhere (k-diffusion's): ``denoiser(x, sigma, **model_kwargs) -> x0_hat``
with ``sigma`` a (B,) tensor, and every sampler is a plain function
``sample_x(denoiser, x, sigmas, ...)`` that starts from x ~ N(0, σ_0²·I) at ``sigmas[0]``
and integrates down the decreasing grid ``sigmas`` (last entry 0). x is the
variance-exploding state x = x0 + σ·ε. As in NVlabs/edm the arithmetic runs in the dtype
of ``x`` (pass float64) and the denoiser's output is cast to it.

Grids: :func:`karras_sigmas` (EDM), :func:`vp_sigmas` and :func:`ve_sigmas` (the time
discretisations of Song et al. 2021 expressed as σ levels; the ODE stays EDM's).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from specreg._checks import check_positive

DenoiserFn = Callable[..., torch.Tensor]
Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


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


def _denoise(denoiser: DenoiserFn, x: torch.Tensor, sigma: float, model_kwargs: dict[str, Any]) -> torch.Tensor:
    s = x.new_full((x.shape[0],), sigma)
    return denoiser(x, s, **model_kwargs).to(x.dtype)


def _check_sigmas(sigmas: torch.Tensor | list[float]) -> list[float]:
    values = [float(s) for s in sigmas]  # one host sync for the whole run, as NVlabs/edm does per step
    if len(values) < 2 or any(b >= a for a, b in zip(values, values[1:])) or values[-1] < 0:
        raise ValueError("sigmas must be a strictly decreasing sequence of >= 2 non-negative noise levels")
    return values


def _first_order_then_heun(denoiser: DenoiserFn, x: torch.Tensor, sigmas: torch.Tensor | list[float], *,
                           heun: bool, churn: float, S_min: float, S_max: float, S_noise: float,
                           generator: torch.Generator | None, model_kwargs: dict[str, Any] | None,
                           callback: Callback | None) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 2 (``heun=True``) or its Euler variant (``heun=False``)."""
    values = _check_sigmas(sigmas)
    check_positive("churn", churn, allow_zero=True)
    check_positive("S_noise", S_noise, allow_zero=True)
    kwargs = model_kwargs or {}
    n = len(values) - 1
    for i in range(n):
        sigma, sigma_next = values[i], values[i + 1]
        # churn: raise the noise level to σ̂ = σ·(1 + γ) by adding fresh noise
        gamma = min(churn / n, math.sqrt(2) - 1) if S_min <= sigma <= S_max else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * S_noise * eps
        x0_hat = _denoise(denoiser, x, sigma_hat, kwargs)
        d = (x - x0_hat) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        # the second-order correction needs D at σ_next, undefined for σ_next = 0
        if heun and sigma_next > 0:
            d_next = (x_next - _denoise(denoiser, x_next, sigma_next, kwargs)) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (0.5 * d + 0.5 * d_next)
        x = x_next
        if callback is not None:
            callback(i, sigma, x, x0_hat)
    return x


@torch.no_grad()
def sample_euler(denoiser: DenoiserFn, x: torch.Tensor, sigmas: torch.Tensor | list[float], *, churn: float = 0.0,
                 S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                 generator: torch.Generator | None = None, model_kwargs: dict[str, Any] | None = None,
                 callback: Callback | None = None) -> torch.Tensor:
    """Euler steps x ← x + (σ_{i+1} − σ̂_i)·(x − D(x; σ̂_i))/σ̂_i, with optional churn.

    ``churn`` is S_churn: at σ_i ∈ [S_min, S_max] the level is first raised to
    σ̂_i = σ_i·(1 + γ), γ = min(S_churn/N, √2 − 1), by adding N(0, S_noise²·(σ̂² − σ²)) noise
    (N = number of steps). With churn = 0 this is deterministic and equals DDIM (η = 0).
    """
    return _first_order_then_heun(denoiser, x, sigmas, heun=False, churn=churn, S_min=S_min, S_max=S_max,
                                  S_noise=S_noise, generator=generator, model_kwargs=model_kwargs,
                                  callback=callback)


@torch.no_grad()
def sample_heun(denoiser: DenoiserFn, x: torch.Tensor, sigmas: torch.Tensor | list[float], *, churn: float = 0.0,
                S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                generator: torch.Generator | None = None, model_kwargs: dict[str, Any] | None = None,
                callback: Callback | None = None) -> torch.Tensor:
    """Heun's second-order method with churn (Karras et al. 2022, Algorithm 2).

    Euler predictor x' = x̂ + (σ_{i+1} − σ̂)·d, d = (x̂ − D(x̂; σ̂))/σ̂, then the corrector
    x_{i+1} = x̂ + (σ_{i+1} − σ̂)·(d + d')/2 with d' = (x' − D(x'; σ_{i+1}))/σ_{i+1}, except on
    the last step to σ = 0 (Euler). Churn as in :func:`sample_euler`. 2N − 1 denoiser calls.
    """
    return _first_order_then_heun(denoiser, x, sigmas, heun=True, churn=churn, S_min=S_min, S_max=S_max,
                                  S_noise=S_noise, generator=generator, model_kwargs=model_kwargs,
                                  callback=callback)


@torch.no_grad()
def sample_dpmpp_2m(denoiser: DenoiserFn, x: torch.Tensor, sigmas: torch.Tensor | list[float], *,
                    model_kwargs: dict[str, Any] | None = None, callback: Callback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), as in k-diffusion's ``sample_dpmpp_2m``.

    With λ = −log σ, h_i = λ_{i+1} − λ_i and r_i = h_{i−1}/h_i:

        D̃_i = (1 + 1/(2r_i))·D_i − 1/(2r_i)·D_{i−1}       (D_i = D(x_i; σ_i))
        x_{i+1} = (σ_{i+1}/σ_i)·x_i + (1 − σ_{i+1}/σ_i)·D̃_i   [= (σ'/σ)x − expm1(−h)·D̃]

    The first step (no history) and the last (σ_{i+1} = 0, where x_{i+1} = D_i) are first
    order. One denoiser call per step; deterministic.
    """
    values = _check_sigmas(sigmas)
    kwargs = model_kwargs or {}
    x0_prev: torch.Tensor | None = None
    for i in range(len(values) - 1):
        sigma, sigma_next = values[i], values[i + 1]
        x0_hat = _denoise(denoiser, x, sigma, kwargs)
        if sigma_next == 0:
            x = x0_hat
        else:
            h = math.log(sigma / sigma_next)
            x0_mix = x0_hat
            if x0_prev is not None:
                r = math.log(values[i - 1] / sigma) / h
                x0_mix = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * x0_prev
            x = (sigma_next / sigma) * x - math.expm1(-h) * x0_mix
        x0_prev = x0_hat
        if callback is not None:
            callback(i, sigma, x, x0_hat)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}
