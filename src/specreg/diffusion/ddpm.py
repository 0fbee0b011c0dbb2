"""Discrete-time variance-preserving diffusion: DDPM training, DDPM and DDIM sampling.

Forward process (Ho et al. 2020): x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε, ε ~ N(0, I),
ᾱ_t = Π_{s≤t} (1 − β_s), t = 0 … T−1. The equivalent VE noise level handed to the
regularizer is σ_t = sqrt((1 − ᾱ_t)/ᾱ_t).

Schedules, update steps and timestep spacings follow diffusers' ``DDPMScheduler`` and
``DDIMScheduler`` (same β, same model, same noise → same trajectory), with two choices of
ours, both documented where they apply: ᾱ is kept in float64, and ``clip_sample``
defaults to False (diffusers: True), because clipping x̂0 to [−1, 1] only suits pixel
data in that range and hides errors of x̂0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from specreg._checks import check_choice, check_int, check_positive
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
    randint,
    randn,
)
from specreg.diffusion.prediction import canonical_prediction, eps_from_pred, x0_from_pred
from specreg.diffusion.samplers import Prediction, integrate
from specreg.diffusion.timesteps import TimestepSampler, nearest_timestep, weigh
from specreg.regularizer import sigma_from_alpha_bar

SCHEDULES = ("linear", "scaled_linear", "cosine", "squaredcos_cap_v2")
SPACINGS = ("leading", "trailing", "linspace")
SAMPLERS = ("ddpm", "ddim")


def make_betas(schedule: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_0 … β_{T−1} in float64.

    * ``"linear"``: β linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020).
    * ``"scaled_linear"``: sqrt(β) linear, i.e. β = (linspace(sqrt β_start, sqrt β_end))²
      (Stable Diffusion).
    * ``"cosine"`` (= diffusers' ``"squaredcos_cap_v2"``, Nichol & Dhariwal 2021):
      ᾱ(s) = cos²((s + 0.008)/1.008 · π/2), β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999).
    """
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), 0.999) for i in range(timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(ᾱ) so that ᾱ_{T−1} = 0 and ᾱ_0 is unchanged (Lin et al. 2024, Alg. 1).

    sqrt(ᾱ)' = (sqrt(ᾱ) − sqrt(ᾱ_{T−1})) · sqrt(ᾱ_0)/(sqrt(ᾱ_0) − sqrt(ᾱ_{T−1})).
    The last step then reaches pure noise (σ = ∞); use v- or x0-prediction with it.
    """
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bar = sqrt_ab**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def inference_timesteps(num_timesteps: int, steps: int, spacing: str = "leading", steps_offset: int = 0) -> list[int]:
    """The decreasing timesteps a ``steps``-step sampler visits (diffusers' ``set_timesteps``).

    With r = T // steps: ``"leading"`` → (steps−1)·r, …, r, 0, each + ``steps_offset``;
    ``"trailing"`` → round(T − k·T/steps) − 1 for k = 0 … steps−1 (always starts at T−1);
    ``"linspace"`` → round(linspace(0, T−1, steps)), reversed. See Lin et al. 2024, Table 2.
    """
    check_choice("timestep_spacing", spacing, SPACINGS)
    check_steps(steps, maximum=num_timesteps)
    if spacing == "leading":
        ts = (np.arange(steps) * (num_timesteps // steps)).round()[::-1].astype(np.int64) + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(num_timesteps, 0, -num_timesteps / steps)).astype(np.int64) - 1
    else:
        ts = np.linspace(0, num_timesteps - 1, steps).round()[::-1].astype(np.int64)
    out = [int(t) for t in ts]
    if out[0] >= num_timesteps or out[-1] < 0:
        raise ValueError(
            f"steps={steps}, timestep_spacing={spacing!r}, steps_offset={steps_offset} give timesteps "
            f"{out[0]}…{out[-1]} outside [0, {num_timesteps - 1}]"
        )
    return out


def ddpm_step(x0_hat: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One ancestral step x_t → x_prev from the posterior q(x_prev | x_t, x0 = x̂0) (Ho et al. Eq. 6–7).

    With α = ᾱ_t/ᾱ_prev and β = 1 − α:
        μ = sqrt(ᾱ_prev)·β/(1 − ᾱ_t) · x̂0 + sqrt(α)·(1 − ᾱ_prev)/(1 − ᾱ_t) · x_t
        x_prev = μ + sqrt(max(β̃, 1e-20))·noise,  β̃ = (1 − ᾱ_prev)/(1 − ᾱ_t)·β  ("fixed_small")
    ``noise=None`` returns μ (diffusers adds no noise at t = 0). The 1e-20 floor is diffusers'.
    """
    alpha = alpha_bar_t / alpha_bar_prev
    beta = 1 - alpha
    mean = (alpha_bar_prev**0.5 * beta / (1 - alpha_bar_t)) * x0_hat \
        + (alpha**0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar_t)) * x_t
    if noise is None:
        return mean
    variance = max((1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta, 1e-20)
    return mean + variance**0.5 * noise


def ddim_step(x0_hat: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float,
              eta: float, noise: torch.Tensor | None) -> torch.Tensor:
    """One DDIM step (Song et al. 2021, Eq. 12):

        σ_η² = η² · (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev)
        x_prev = sqrt(ᾱ_prev)·x̂0 + sqrt(1 − ᾱ_prev − σ_η²)·ε̂ + σ_η·noise

    η = 0 is the deterministic sampler, η = 1 the DDPM posterior variance. ``noise`` is
    ignored when η = 0. The radicand is floored at 0 against rounding.
    """
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)
    std = eta * variance**0.5
    x_prev = alpha_bar_prev**0.5 * x0_hat + max(1 - alpha_bar_prev - std**2, 0.0) ** 0.5 * eps_hat
    if eta > 0 and noise is not None:
        x_prev = x_prev + std * noise
    return x_prev


class DDPMPath:
    """DDPM's discrete path for :func:`specreg.diffusion.samplers.integrate`: τ = the integer
    timestep t, a = √ᾱ_t, b = √(1 − ᾱ_t) (σ = √((1 − ᾱ_t)/ᾱ_t)); τ = −1 is the end of
    sampling, with ᾱ = ``final``. x̂0 is clipped to ±``clip_sample_range`` if the formulation
    says so; ε̂ is the network's own (DDIM, as diffusers) or, with ``eps_from_x0``, the one
    consistent with the clipped x̂0, ε̂ = (x − a·x̂0)/b, which makes DDIM with η = 1 DDPM's
    posterior step. No slope: the time is discrete, so only the DDIM step applies."""

    sigma_time = False

    def __init__(self, ddpm: DDPM, model: Callable[..., torch.Tensor], alpha_bars: list[float], final: float,
                 dtype: torch.dtype, model_kwargs: dict[str, Any], *, eps_from_x0: bool) -> None:
        self.ddpm, self.model, self.alpha_bars, self.final = ddpm, model, alpha_bars, final
        self.dtype, self.kwargs, self.eps_from_x0 = dtype, model_kwargs, eps_from_x0

    def _alpha_bar(self, tau: float) -> float:
        return self.alpha_bars[int(tau)] if tau >= 0 else self.final

    def scales(self, tau: float) -> tuple[float, float]:
        alpha_bar = self._alpha_bar(tau)
        return alpha_bar**0.5, (1 - alpha_bar) ** 0.5

    def predict(self, x: torch.Tensor, tau: float) -> Prediction:
        t = int(tau)
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        output = self.model(x.to(self.dtype), t_batch, **self.kwargs).to(torch.float64)
        x0_hat = self.ddpm.predict_x0(output, x, t)
        if self.ddpm.clip_sample:
            x0_hat = x0_hat.clamp(-self.ddpm.clip_sample_range, self.ddpm.clip_sample_range)
        if self.eps_from_x0:
            a, b = self.scales(t)
            return Prediction(x0_hat, (x - a * x0_hat) / b, None)
        alpha_bar_t = torch.tensor(self.alpha_bars[t], dtype=torch.float64, device=x.device)
        eps_hat = eps_from_pred(output, x, prediction=self.ddpm.prediction, alpha_bar=alpha_bar_t, validate=False)
        return Prediction(x0_hat, eps_hat, None)

    def noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return randn(tuple(x.shape), generator, x.device, self.dtype).to(x.dtype)


class DDPM(nn.Module):
    """A discrete VP diffusion: noise schedule, training loss, DDPM/DDIM samplers.

    Args:
        schedule: ``"linear"``, ``"scaled_linear"`` or ``"cosine"`` (alias ``"squaredcos_cap_v2"``),
            see :func:`make_betas`.
        timesteps: T, the number of training timesteps.
        prediction: what the network outputs: ``"eps"``, ``"x0"`` or ``"v"`` (or diffusers'
            ``"epsilon"``, ``"sample"``, ``"v_prediction"``).
        beta_start, beta_end: ends of the linear schedules.
        betas: explicit β (T,) instead of a named schedule (diffusers' ``trained_betas``).
        zero_terminal_snr: rescale so that ᾱ_{T−1} = 0 (:func:`rescale_zero_terminal_snr`);
            not allowed with eps-prediction, whose x̂0 is undefined there.
        clip_sample, clip_sample_range: clamp x̂0 to ±range inside the samplers only
            (never in training). Default False (diffusers: True).
        timestep_spacing, steps_offset: how a sampler with fewer steps than T picks its
            timesteps (:func:`inference_timesteps`); diffusers' defaults "leading" and 0.
        set_alpha_to_one: DDIM's ᾱ after the last step: 1 (True, diffusers' default) or ᾱ_0.

    Buffers: ``betas`` and ``alphas_cumprod`` (float64, T entries).

    The model is called ``model(x_t, t, **model_kwargs)`` with integer timesteps t (B,).

    Example:
        >>> ddpm = DDPM("cosine", timesteps=1000, prediction="v")
        >>> out = ddpm.loss(model, x0, regularizer=reg)      # doctest: +SKIP
        >>> out.loss.mean().backward()                         # doctest: +SKIP
        >>> x = ddpm.sample(model, (16, 3, 32, 32), sampler="ddim", steps=50)  # doctest: +SKIP
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    def __init__(
        self,
        schedule: str = "linear",
        timesteps: int = 1000,
        prediction: str = "eps",
        *,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        betas: torch.Tensor | None = None,
        zero_terminal_snr: bool = False,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
        time_sampler: TimestepSampler | None = None,
    ) -> None:
        super().__init__()
        self.prediction = canonical_prediction(prediction)
        check_choice("prediction", self.prediction, ("eps", "x0", "v"))
        if betas is None:
            check_int("timesteps", timesteps, lo=2)
            check_positive("beta_start", beta_start)
            check_positive("beta_end", beta_end)
            betas = make_betas(schedule, timesteps, beta_start, beta_end)
            self.schedule = schedule
        else:
            betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
            self.schedule = "custom"
        if betas.numel() < 2 or bool(((betas <= 0) | (betas > 1)).any()):
            raise ValueError("betas must hold at least 2 values, each in (0, 1]")
        if zero_terminal_snr:
            if self.prediction == "eps":
                raise ValueError(
                    "zero_terminal_snr=True with prediction='eps' is not accepted: at ᾱ = 0 the noise "
                    "prediction says nothing about x0; use prediction='v' or 'x0'"
                )
            betas = rescale_zero_terminal_snr(betas)
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        if self.prediction == "eps" and bool((alphas_cumprod <= 0).any()):
            raise ValueError("this schedule reaches ᾱ = 0, where prediction='eps' cannot give x̂0; use 'v' or 'x0'")
        self.register_buffer("betas", betas)
        self.register_buffer("alphas_cumprod", alphas_cumprod)
        self.num_timesteps = int(betas.numel())
        self.clip_sample = bool(clip_sample)
        self.clip_sample_range = check_positive("clip_sample_range", clip_sample_range)
        self.timestep_spacing = check_choice("timestep_spacing", timestep_spacing, SPACINGS)
        self.steps_offset = check_int("steps_offset", steps_offset, lo=0)
        self.set_alpha_to_one = bool(set_alpha_to_one)
        # None: t ~ U{0, …, T−1}; else a registry entry, σ → the nearest timestep in ln σ
        self.time_sampler = time_sampler

    # --- forward process -------------------------------------------------------------

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ_t (float64, on the device of t) for integer timesteps t."""
        # index where t lives: copying the (T,) table is cheap and needs no host sync
        return self.alphas_cumprod.to(t.device)[t]

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The equivalent VE noise level σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) (float64)."""
        return sigma_from_alpha_bar(self.alpha_bar(t))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·noise, in the dtype of x0."""
        a = per_sample(self.alpha_bar(t), x0)
        return a.sqrt().to(x0.dtype) * x0 + (1 - a).sqrt().to(x0.dtype) * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output: ε, x0, or v = sqrt(ᾱ_t)·ε − sqrt(1 − ᾱ_t)·x0."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        a = per_sample(self.alpha_bar(t), x0)
        return a.sqrt().to(x0.dtype) * noise - (1 - a).sqrt().to(x0.dtype) * x0

    def predict_x0(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x̂0 from the network output at integer timesteps t, via :func:`x0_from_pred`."""
        alpha_bar = self.alpha_bar(torch.as_tensor(t, device=x_t.device))
        # the schedule was validated once in __init__, so no per-call value checks (no host sync)
        return x0_from_pred(output, x_t, prediction=self.prediction, alpha_bar=alpha_bar, validate=False)

    # --- training --------------------------------------------------------------------

    def loss(self, model: Callable[..., torch.Tensor], x0: torch.Tensor, regularizer: Any | None = None,
             generator: torch.Generator | None = None, *, t: torch.Tensor | None = None,
             noise: torch.Tensor | None = None, **model_kwargs: Any) -> DiffusionLoss:
        """Per-sample training loss (B,), optionally with the spectral term (Eq. 17).

        t ~ U{0, …, T−1}, ε ~ N(0, I) (or the given ``t``, ``noise``); the diffusion term is
        mean over non-batch dims of (model(x_t, t) − target)², target as in :meth:`target`;
        the regularizer gets x̂0 = :meth:`predict_x0` and σ_t.
        """
        check_data("x0", x0)
        batch = x0.shape[0]
        drawn = None
        if t is None and self.time_sampler is not None:
            drawn = self.time_sampler.sample(batch, generator, x0.device)
            t = nearest_timestep(drawn, self.sigma(torch.arange(self.num_timesteps, device=x0.device)))
        elif t is None:
            t = randint(self.num_timesteps, batch, generator, x0.device)
        else:
            t = torch.as_tensor(t, device=x0.device)
            if t.shape != (batch,) or t.is_floating_point():
                raise ValueError(f"t must be integer timesteps of shape ({batch},), got {t.dtype} {tuple(t.shape)}")
            if host_readable(t) and bool(((t < 0) | (t >= self.num_timesteps)).any()):
                raise ValueError(f"t has values outside [0, {self.num_timesteps - 1}]")
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, x0.dtype)
        check_noise(noise, x0)
        x_t = self.add_noise(x0, noise, t)
        output = model(x_t, t, **model_kwargs)
        dtype = torch.float64 if x0.dtype == torch.float64 else torch.float32
        diffusion = mean_per_sample((output.to(dtype) - self.target(x0, noise, t).to(dtype)).square())
        x0_hat = self.predict_x0(output, x_t, t)
        sigma = self.sigma(t).to(dtype)
        out = combine(diffusion, x0_hat, x0, sigma, regularizer)
        return out if drawn is None else weigh(out, self.time_sampler, drawn)

    # --- sampling --------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, model: Callable[..., torch.Tensor], shape: tuple[int, ...], sampler: str = "ddpm",
               steps: int | None = None, eta: float = 0.0, generator: torch.Generator | None = None, *,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
               callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
               **model_kwargs: Any) -> torch.Tensor:
        """Draw samples x0 of ``shape`` by ancestral DDPM or DDIM.

        Args:
            sampler: ``"ddpm"`` (ancestral, "fixed_small" variance) or ``"ddim"``.
            steps: number of model calls; default T for DDPM, 50 for DDIM. Fewer than T
                picks timesteps by ``timestep_spacing`` (diffusers' ``set_timesteps``).
            eta: DDIM's η (0: deterministic; 1: DDPM variance). Ignored by ``"ddpm"``.
            generator: source of x_T and of every step's noise.
            device: defaults to the device of the model's parameters (CPU for a function).
            dtype: dtype of x handed to the model and of the noise draws (x_T ~ N(0, I),
                then noise per step in the order diffusers draws it); the update
                arithmetic runs in float64.
            callback: called after each step as ``callback(i, t, x_prev, x0_hat)``.

        Step rules (as diffusers): DDPM goes from each timestep to the next in the list
        (ᾱ = 1 after the last) and adds noise while t > 0; DDIM goes from t to
        t − ⌊T/steps⌋ (ᾱ after the last step = 1 or ᾱ_0, ``set_alpha_to_one``) and
        computes ε̂ from the unclipped output. Returns x0 in ``dtype``.
        """
        check_choice("sampler", sampler, SAMPLERS)
        shape = check_shape(shape)
        eta = check_positive("eta", eta, allow_zero=True)
        if steps is None:
            steps = self.num_timesteps if sampler == "ddpm" else min(50, self.num_timesteps)
        timesteps = inference_timesteps(self.num_timesteps, steps, self.timestep_spacing, self.steps_offset)
        device = module_device(model) if device is None else torch.device(device)
        alpha_bars = self.alphas_cumprod.tolist()
        x = randn(shape, generator, device, dtype).to(torch.float64)
        if sampler == "ddpm":  # the posterior step: DDIM with η = 1 and ε̂ consistent with the clipped x̂0
            path = DDPMPath(self, model, alpha_bars, 1.0, dtype, model_kwargs, eps_from_x0=True)
            eta_i: list[float] = [1.0 if t > 0 else 0.0 for t in timesteps]  # no noise at t = 0 (diffusers)
            to = None
        else:
            path = DDPMPath(self, model, alpha_bars, 1.0 if self.set_alpha_to_one else alpha_bars[0], dtype,
                            model_kwargs, eps_from_x0=False)
            eta_i = [eta] * len(timesteps)
            ratio = self.num_timesteps // steps
            to = [max(t - ratio, -1) for t in timesteps]
        x = integrate(path, x, [*timesteps, -1], "ddim", eta=eta_i, to=to, generator=generator, callback=callback)
        return x.to(dtype)

    def extra_repr(self) -> str:
        return (f"schedule={self.schedule!r}, timesteps={self.num_timesteps}, prediction={self.prediction!r}, "
                f"clip_sample={self.clip_sample}, timestep_spacing={self.timestep_spacing!r}")
