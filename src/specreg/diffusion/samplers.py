"""One family of probability-flow ODE integrators for EDM, flow matching and DDPM.

Every formulation's noisy state is x = a(τ)·x0 + b(τ)·ε in its own time τ, with the
variance-exploding noise level σ = b/a (Karras et al. 2022, Eq. 4, with s = a):

=========  ======================  ===========  ==============  =======================
path       τ                       a            b               σ
=========  ======================  ===========  ==============  =======================
EDM        σ                       1            σ               σ
flow       t ∈ [0, 1]              1 − t        t               t/(1 − t)
DDPM       timestep (integer)      √ᾱ_t         √(1 − ᾱ_t)      √((1 − ᾱ_t)/ᾱ_t)
=========  ======================  ===========  ==============  =======================

A :class:`Path` turns one model call at τ into x̂0, ε̂ = (x − a·x̂0)/b and the ODE's slope
dx/dτ; the integrators below only see those, so each is written once:

* ``euler``: x' = x + (τ' − τ)·dx/dτ (with EDM's stochastic churn on the σ path).
* ``heun``: Euler predictor x_e, then x' = x + (τ' − τ)·(d + d')/2 with d = dx/dτ at (x, τ)
  and d' at (x_e, τ'); Euler on a last step to σ = 0 (Karras et al. 2022, Alg. 1–2).
* ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022) in λ = ln(a/b) = −ln σ, with
  h = λ' − λ, r = h_prev/h, D̃ = (1 + 1/(2r))·x̂0 − 1/(2r)·x̂0_prev:
  x' = (b'/b)·x − a'·expm1(−h)·D̃; first order on the first step and the last (x' = a'·x̂0).
* ``ddim``: x' = a'·x̂0 + √(b'² − c²)·ε̂ + c·z, c = η·b'·√(1 − (a·b'/(a'·b))²) (Song et al.
  2021, Eq. 12, in (a, b)). With η = 0 this is the exact step of the ODE for a constant
  x̂0, the same as Euler in σ; with η = 1 and ε̂ consistent with x̂0 it is DDPM's ancestral
  step from the posterior q(x' | x, x̂0) (Ho et al. 2020, Eq. 6–7).

The Euler and Heun steps depend on τ (flow's Heun in t is not Heun in σ), the DPM++ and
DDIM steps only on the levels (a, b): that is why a path keeps its own time. Arithmetic runs
in the dtype of x (pass float64, as NVlabs/edm does); a path casts the model output to it.
The grid is a plain list of floats, read once per run (one host sync, as NVlabs/edm does
per step).

:func:`sample_euler`, :func:`sample_heun` and :func:`sample_dpmpp_2m` are k-diffusion's
convention, ``denoiser(x, sigma) -> x̂0`` on the σ path; flow matching and DDPM call
:func:`integrate` with their own paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import torch

from specreg._checks import check_positive
from specreg.diffusion.schedule import karras_sigmas, ve_sigmas, vp_sigmas

DenoiserFn = Callable[..., torch.Tensor]
Callback = Callable[[int, Any, torch.Tensor, torch.Tensor], None]  # (i, τ_i, x_next, x̂0)
METHODS = ("euler", "heun", "dpmpp_2m", "ddim")

__all__ = ["METHODS", "SAMPLERS", "Path", "Prediction", "SigmaPath", "integrate", "karras_sigmas",
           "sample_dpmpp_2m", "sample_euler", "sample_heun", "ve_sigmas", "vp_sigmas"]


class Prediction(NamedTuple):
    """What one model call at τ says about x: x̂0, ε̂ and the slope dx/dτ (None where τ is discrete)."""

    x0: torch.Tensor
    eps: torch.Tensor
    slope: torch.Tensor | None


class Path(Protocol):
    """A formulation's ODE in its own time τ (module doc)."""

    sigma_time: bool  # τ = σ (a = 1): the only path where EDM's churn is defined

    def scales(self, tau: float) -> tuple[float, float]:
        """(a, b) at τ: x = a·x0 + b·ε."""
        ...

    def predict(self, x: torch.Tensor, tau: float) -> Prediction:
        """One model call at τ."""
        ...

    def noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Fresh N(0, I) noise like x (each formulation keeps its own draw order and dtype)."""
        ...


class SigmaPath:
    """EDM's path: τ = σ, x = x0 + σ·ε, slope dx/dσ = (x − D(x; σ))/σ = ε̂."""

    sigma_time = True

    def __init__(self, denoiser: DenoiserFn, model_kwargs: dict[str, Any] | None = None) -> None:
        self.denoiser, self.kwargs = denoiser, model_kwargs or {}

    def scales(self, tau: float) -> tuple[float, float]:
        return 1.0, tau

    def predict(self, x: torch.Tensor, tau: float) -> Prediction:
        x0 = self.denoiser(x, x.new_full((x.shape[0],), tau), **self.kwargs).to(x.dtype)
        d = (x - x0) / tau
        return Prediction(x0, d, d)

    def noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _slope(pred: Prediction) -> torch.Tensor:
    if pred.slope is None:
        raise ValueError("this formulation's time is discrete; it has no Euler or Heun step (use 'ddim')")
    return pred.slope


def _euler_heun(path: Path, x: torch.Tensor, taus: list[float], *, heun: bool, churn: float, S_min: float,
                S_max: float, S_noise: float, generator: torch.Generator | None,
                callback: Callback | None) -> torch.Tensor:
    n = len(taus) - 1
    for i in range(n):
        tau, tau_next = taus[i], taus[i + 1]
        # churn (σ path only): raise the level to σ̂ = σ·(1 + γ) by adding fresh noise
        gamma = min(churn / n, math.sqrt(2) - 1) if churn > 0 and S_min <= tau <= S_max else 0.0
        tau_hat = tau * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(tau_hat**2 - tau**2) * S_noise * path.noise(x, generator)
        pred = path.predict(x, tau_hat)
        d = _slope(pred)
        x_next = x + (tau_next - tau_hat) * d
        # the second-order correction needs the model at τ', undefined where σ' = 0
        if heun and path.scales(tau_next)[1] > 0:
            d_next = _slope(path.predict(x_next, tau_next))
            x_next = x + (tau_next - tau_hat) * (0.5 * d + 0.5 * d_next)
        x = x_next
        if callback is not None:
            callback(i, tau, x, pred.x0)
    return x


def _log_ratio(a: float, b: float, a_next: float, b_next: float) -> float:
    """h = λ' − λ = ln((a'·b)/(a·b')) (∞ from a = 0, pure noise)."""
    return math.inf if a * b_next == 0 else math.log(b * a_next / (a * b_next))


def _dpmpp_2m(path: Path, x: torch.Tensor, taus: list[float], callback: Callback | None) -> torch.Tensor:
    x0_prev: torch.Tensor | None = None
    h_prev = math.nan
    for i in range(len(taus) - 1):
        (a, b), (a_next, b_next) = path.scales(taus[i]), path.scales(taus[i + 1])
        x0_hat = path.predict(x, taus[i]).x0
        if b_next == 0:
            x = a_next * x0_hat
            h = math.nan
        else:
            h = _log_ratio(a, b, a_next, b_next)
            x0_mix = x0_hat
            if x0_prev is not None:
                r = h_prev / h
                x0_mix = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * x0_prev
            x = (b_next / b) * x - a_next * math.expm1(-h) * x0_mix
        x0_prev, h_prev = x0_hat, h
        if callback is not None:
            callback(i, taus[i], x, x0_hat)
    return x


def _ddim(path: Path, x: torch.Tensor, taus: list[float], eta: Sequence[float], to: Sequence[float],
          generator: torch.Generator | None, callback: Callback | None) -> torch.Tensor:
    for i in range(len(taus) - 1):
        (a, b), (a_next, b_next) = path.scales(taus[i]), path.scales(to[i])
        pred = path.predict(x, taus[i])
        ratio = (a * b_next) / (a_next * b) if a_next * b > 0 else 0.0
        c = eta[i] * b_next * max(1 - ratio**2, 0.0) ** 0.5
        x = a_next * pred.x0 + max(b_next**2 - c**2, 0.0) ** 0.5 * pred.eps
        if eta[i] > 0:
            x = x + c * path.noise(x, generator)
        if callback is not None:
            callback(i, taus[i], x, pred.x0)
    return x


def integrate(path: Path, x: torch.Tensor, taus: Sequence[float], method: str, *, churn: float = 0.0,
              S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
              eta: float | Sequence[float] = 0.0, to: Sequence[float] | None = None,
              generator: torch.Generator | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Integrate ``path`` from ``taus[0]`` down the grid ``taus`` with ``method`` (module doc).

    Args:
        path: the formulation's :class:`Path`; x is its state at ``taus[0]``.
        taus: the grid in the path's time, n + 1 entries (checked by the caller).
        method: ``"euler"``, ``"heun"``, ``"dpmpp_2m"`` or ``"ddim"``.
        churn, S_min, S_max, S_noise: EDM's stochastic churn (Euler/Heun on the σ path).
        eta: DDIM's η, one value or one per step (a step with η = 0 draws no noise).
        to: DDIM only: the time each step lands on, n entries (default ``taus[1:]``); DDPM's
            DDIM lands on t − ⌊T/steps⌋ whatever timestep the next call uses.
        callback: ``callback(i, taus[i], x_next, x0_hat)`` after each step.
    """
    grid = list(taus)
    if method in ("euler", "heun"):
        if churn > 0 and not path.sigma_time:
            raise ValueError(f"churn={churn!r} is not accepted on this path; churn is defined in σ (EDM), use 0")
        return _euler_heun(path, x, grid, heun=method == "heun", churn=churn, S_min=S_min, S_max=S_max,
                           S_noise=S_noise, generator=generator, callback=callback)
    if method == "dpmpp_2m":
        return _dpmpp_2m(path, x, grid, callback)
    if method == "ddim":
        n = len(grid) - 1
        etas = [float(eta)] * n if isinstance(eta, (int, float)) else [float(e) for e in eta]
        return _ddim(path, x, grid, etas, grid[1:] if to is None else list(to), generator, callback)
    raise ValueError(f"method={method!r} is not accepted; expected one of {list(METHODS)}")


def check_sigmas(sigmas: torch.Tensor | Sequence[float]) -> list[float]:
    """The σ grid as floats: ≥ 2 strictly decreasing non-negative levels."""
    values = [float(s) for s in sigmas]
    if len(values) < 2 or any(b >= a for a, b in zip(values, values[1:])) or values[-1] < 0:
        raise ValueError("sigmas must be a strictly decreasing sequence of >= 2 non-negative noise levels")
    return values


def _churned(method: str, denoiser: DenoiserFn, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float],
             churn: float, S_min: float, S_max: float, S_noise: float, generator: torch.Generator | None,
             model_kwargs: dict[str, Any] | None, callback: Callback | None) -> torch.Tensor:
    values = check_sigmas(sigmas)
    check_positive("churn", churn, allow_zero=True)
    check_positive("S_noise", S_noise, allow_zero=True)
    return integrate(SigmaPath(denoiser, model_kwargs), x, values, method, churn=churn, S_min=S_min,
                     S_max=S_max, S_noise=S_noise, generator=generator, callback=callback)


@torch.no_grad()
def sample_euler(denoiser: DenoiserFn, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float], *,
                 churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                 generator: torch.Generator | None = None, model_kwargs: dict[str, Any] | None = None,
                 callback: Callback | None = None) -> torch.Tensor:
    """Euler steps x ← x + (σ_{i+1} − σ̂_i)·(x − D(x; σ̂_i))/σ̂_i, with optional churn.

    ``churn`` is S_churn: at σ_i ∈ [S_min, S_max] the level is first raised to
    σ̂_i = σ_i·(1 + γ), γ = min(S_churn/N, √2 − 1), by adding N(0, S_noise²·(σ̂² − σ²)) noise
    (N = number of steps). With churn = 0 this is deterministic and equals DDIM (η = 0).
    """
    return _churned("euler", denoiser, x, sigmas, churn, S_min, S_max, S_noise, generator, model_kwargs, callback)


@torch.no_grad()
def sample_heun(denoiser: DenoiserFn, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float], *,
                churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                generator: torch.Generator | None = None, model_kwargs: dict[str, Any] | None = None,
                callback: Callback | None = None) -> torch.Tensor:
    """Heun's second-order method with churn (Karras et al. 2022, Algorithm 2).

    Euler predictor x' = x̂ + (σ_{i+1} − σ̂)·d, d = (x̂ − D(x̂; σ̂))/σ̂, then the corrector
    x_{i+1} = x̂ + (σ_{i+1} − σ̂)·(d + d')/2 with d' = (x' − D(x'; σ_{i+1}))/σ_{i+1}, except on
    the last step to σ = 0 (Euler). Churn as in :func:`sample_euler`. 2N − 1 denoiser calls.
    """
    return _churned("heun", denoiser, x, sigmas, churn, S_min, S_max, S_noise, generator, model_kwargs, callback)


@torch.no_grad()
def sample_dpmpp_2m(denoiser: DenoiserFn, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float], *,
                    model_kwargs: dict[str, Any] | None = None, callback: Callback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022) on the σ path, as k-diffusion's ``sample_dpmpp_2m``:

        x_{i+1} = (σ_{i+1}/σ_i)·x_i − expm1(−h_i)·D̃_i,  h_i = ln(σ_i/σ_{i+1}),

    D̃ as in the module doc. One denoiser call per step; deterministic.
    """
    return integrate(SigmaPath(denoiser, model_kwargs), x, check_sigmas(sigmas), "dpmpp_2m", callback=callback)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}
