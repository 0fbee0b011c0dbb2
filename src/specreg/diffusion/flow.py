"""Rectified flow / flow matching in the Stable Diffusion 3 convention (Esser et al. 2024).

Forward process x_t = (1 − t)·x0 + t·ε, t ∈ [0, 1] (t = 1 is pure noise); the network
predicts the velocity v = dx_t/dt = ε − x0, so x̂0 = x_t − t·v̂ and the equivalent VE
noise level handed to the regularizer is σ = t/(1 − t). diffusers'
``FlowMatchEulerDiscreteScheduler`` uses the same convention with its ``sigmas`` equal to t.

Training times t: ``"uniform"`` t ~ U(0, 1), or ``"logit_normal"`` t = sigmoid(n),
n ~ N(logit_mean, logit_std²) (SD3's default, mean 0, std 1); then the resolution shift
t' = s·t/(1 + (s − 1)·t) (``shift`` = s; s > 1 spends more time at high noise; diffusers'
formula). The same shift maps the sampling grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from specreg._checks import check_choice, check_positive
from specreg.diffusion.base import (
    DiffusionLoss,
    check_data,
    check_noise,
    check_shape,
    check_steps,
    combine,
    host_readable,
    mean_per_sample,
    module_device,
    per_sample,
    rand,
    randn,
)
from specreg.diffusion.prediction import x0_from_pred
from specreg.diffusion.samplers import Prediction, integrate
from specreg.diffusion.timesteps import TimestepSampler, weigh
from specreg.regularizer import sigma_from_flow_t

TIME_SAMPLINGS = ("uniform", "logit_normal")
FLOW_SAMPLERS = ("euler", "heun")

Velocity = Callable[..., torch.Tensor]


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = s·t/(1 + (s − 1)·t): maps [0, 1] onto itself, fixing 0 and 1."""
    return shift * t / (1 + (shift - 1) * t)


class FlowPath:
    """Flow matching's ODE path for :func:`specreg.diffusion.samplers.integrate`: τ = t,
    x_t = (1 − t)·x0 + t·ε (a = 1 − t, b = t, σ = t/(1 − t)); the slope dx/dt is the
    velocity v̂ itself, x̂0 = x − t·v̂, ε̂ = x + (1 − t)·v̂. The model is called
    ``velocity(x.to(dtype), t, **model_kwargs)`` with t (B,) in ``dtype``."""

    sigma_time = False

    def __init__(self, velocity: Velocity, model_kwargs: dict[str, Any] | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        self.velocity, self.kwargs, self.dtype = velocity, model_kwargs or {}, dtype

    def scales(self, tau: float) -> tuple[float, float]:
        return 1.0 - tau, tau

    def predict(self, x: torch.Tensor, tau: float) -> Prediction:
        t_batch = torch.full((x.shape[0],), tau, dtype=self.dtype, device=x.device)
        v = self.velocity(x.to(self.dtype), t_batch, **self.kwargs).to(x.dtype)
        return Prediction(x - tau * v, x + (1 - tau) * v, v)

    def noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return randn(tuple(x.shape), generator, x.device, self.dtype).to(x.dtype)


@torch.no_grad()
def sample_flow(velocity: Velocity, x: torch.Tensor, ts: torch.Tensor | list[float], *, method: str = "euler",
                model_kwargs: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32,
                callback: Callable[[int, float, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) down the decreasing grid ``ts`` (from ~1 to 0) on :class:`FlowPath`.

    Euler: x ← x + (t_{i+1} − t_i)·v(x, t_i). Heun: with the Euler point x',
    x ← x + (t_{i+1} − t_i)·(v(x, t_i) + v(x', t_{i+1}))/2, except on a last step to t = 0,
    which is Euler (as diffusers' ``FlowMatchHeunDiscreteScheduler``). The model is called
    ``velocity(x.to(dtype), t, **model_kwargs)`` with t (B,) in ``dtype``; the update runs
    in the dtype of ``x``. ``callback(i, t_i, x_next, x0_hat)`` after each step.
    """
    check_choice("method", method, FLOW_SAMPLERS)
    values = [float(t) for t in ts]
    if len(values) < 2 or any(b >= a for a, b in zip(values, values[1:])) or values[-1] < 0 or values[0] > 1:
        raise ValueError("ts must be a strictly decreasing sequence of >= 2 times in [0, 1]")
    return integrate(FlowPath(velocity, model_kwargs, dtype), x, values, method, callback=callback)


class FlowMatching:
    """Flow-matching formulation: time sampling, loss, ODE sampler.

    Args:
        time_sampling: ``"uniform"`` or ``"logit_normal"``.
        logit_mean, logit_std: parameters of the logit-normal time density.
        shift: the time shift s > 0 applied to training and sampling times (1: none).

    The model is called ``model(x_t, t, **model_kwargs)`` with float t (B,) in [0, 1]
    (diffusers' SD3 transformer expects 1000·t: wrap it).

    Example:
        >>> fm = FlowMatching("logit_normal", shift=3.0)
        >>> out = fm.loss(model, x0, regularizer=reg)             # doctest: +SKIP
        >>> x = fm.sample(model, (16, 4, 32, 32), steps=28)       # doctest: +SKIP
    """

    def __init__(self, time_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                 shift: float = 1.0, time_sampler: TimestepSampler | None = None) -> None:
        self.time_sampler = time_sampler  # None: the draw of sample_t; else a registry entry (σ → t = σ/(1 + σ))
        self.time_sampling = check_choice("time_sampling", time_sampling, TIME_SAMPLINGS)
        self.logit_mean = float(logit_mean)
        self.logit_std = check_positive("logit_std", logit_std)
        self.shift = check_positive("shift", shift)

    def sample_t(self, batch: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        """Training times t (B,), float64.

        Drawn in float64 so that t = 0 exactly (σ = 0, where an EDM-weighted λ is
        infinite) has probability ~2⁻⁵³ rather than float32's 2⁻²⁴ per sample.
        """
        if self.time_sampling == "uniform":
            t = rand(batch, generator, device, torch.float64)
        else:
            t = torch.sigmoid(randn((batch,), generator, device, torch.float64) * self.logit_std + self.logit_mean)
        return shift_time(t, self.shift)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 − t)·x0 + t·noise, in the dtype of x0."""
        t = per_sample(t, x0).to(x0.dtype)
        return (1 - t) * x0 + t * noise

    @staticmethod
    def target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The velocity v = ε − x0."""
        return noise - x0

    @staticmethod
    def predict_x0(v_hat: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂0 = x_t − t·v̂, via :func:`x0_from_pred` (``prediction="flow"``)."""
        return x0_from_pred(v_hat, x_t, prediction="flow", t=t, validate=False)

    @staticmethod
    def sigma(t: torch.Tensor) -> torch.Tensor:
        """The equivalent VE noise level σ = t/(1 − t)."""
        return sigma_from_flow_t(t)

    def loss(self, model: Velocity, x0: torch.Tensor, regularizer: Any | None = None,
             generator: torch.Generator | None = None, *, t: torch.Tensor | None = None,
             noise: torch.Tensor | None = None, **model_kwargs: Any) -> DiffusionLoss:
        """Per-sample loss (B,): mean((model(x_t, t) − (ε − x0))²) [+ the spectral term].

        t and ε are drawn unless given (t: (B,) floats in [0, 1]).
        """
        check_data("x0", x0)
        batch = x0.shape[0]
        drawn = None
        if t is None and self.time_sampler is not None:
            drawn = self.time_sampler.sample(batch, generator, x0.device)
            t = drawn / (1 + drawn)
        elif t is None:
            t = self.sample_t(batch, generator, x0.device)
        else:
            t = torch.as_tensor(t, device=x0.device)
            if t.shape != (batch,) or not t.is_floating_point() or (
                    host_readable(t) and bool(((t < 0) | (t > 1)).any())):
                raise ValueError(f"t must be float times in [0, 1] of shape ({batch},), got {tuple(t.shape)}")
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, x0.dtype)
        check_noise(noise, x0)
        dtype = torch.float64 if x0.dtype == torch.float64 else torch.float32
        sigma = self.sigma(t.to(torch.float64)).to(dtype)  # from float64 t: finite unless t == 1
        t_model = t.to(x0.dtype)
        x_t = self.add_noise(x0, noise, t_model)
        v_hat = model(x_t, t_model, **model_kwargs)
        diffusion = mean_per_sample((v_hat.to(dtype) - self.target(x0, noise).to(dtype)).square())
        x0_hat = self.predict_x0(v_hat, x_t, t_model)
        out = combine(diffusion, x0_hat, x0, sigma, regularizer)
        return out if drawn is None else weigh(out, self.time_sampler, drawn)

    def timesteps(self, steps: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The sampling grid (steps + 1,), float64: shift(linspace(1, 0, steps + 1))."""
        check_steps(steps)
        return shift_time(torch.linspace(1, 0, steps + 1, dtype=torch.float64, device=device), self.shift)

    @torch.no_grad()
    def sample(self, model: Velocity, shape: tuple[int, ...], sampler: str = "euler", steps: int = 50,
               generator: torch.Generator | None = None, *, ts: torch.Tensor | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
               callback: Any | None = None, **model_kwargs: Any) -> torch.Tensor:
        """Draw samples: x_1 = ε ~ N(0, I), then the ODE from t = 1 to 0 (:func:`sample_flow`).

        ``ts`` overrides the grid (decreasing, in [0, 1], e.g. diffusers' ``scheduler.sigmas``);
        x at ``ts[0]`` starts as pure noise. Arithmetic in float64, model in ``dtype``.
        Returns ``dtype``.
        """
        check_choice("sampler", sampler, FLOW_SAMPLERS)
        shape = check_shape(shape)
        device = module_device(model) if device is None else torch.device(device)
        grid = self.timesteps(steps, device=device) if ts is None else ts
        x = randn(shape, generator, device, dtype).to(torch.float64)
        x = sample_flow(model, x, grid, method=sampler, model_kwargs=model_kwargs, dtype=dtype, callback=callback)
        return x.to(dtype)

    def __repr__(self) -> str:
        return (f"FlowMatching(time_sampling={self.time_sampling!r}, logit_mean={self.logit_mean}, "
                f"logit_std={self.logit_std}, shift={self.shift})")
