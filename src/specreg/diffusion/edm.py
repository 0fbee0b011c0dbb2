"""EDM and its VP/VE special cases (Karras et al. 2022, Table 1), composed of three parts:

* preconditioning c_skip, c_out, c_in, c_noise and the :class:`Denoiser` wrapper —
  :mod:`specreg.diffusion.precond`;
* the objective λ(σ)·‖D(x0 + σε; σ) − x0‖² — :mod:`specreg.diffusion.objectives`;
* the schedule: training σ from the noise-level registry and the sampling grids —
  :mod:`specreg.diffusion.schedule`;

sampled by the integrators of :mod:`specreg.diffusion.samplers` on the σ path. The
:class:`EDM` class keeps the configured numbers together and is what the training code
builds from ``diffusion.kind: edm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from specreg._checks import check_choice, check_int, check_positive
from specreg.diffusion.base import (
    DiffusionLoss,
    check_data,
    check_noise,
    check_shape,
    check_steps,
    combine,
    host_readable,
    module_device,
    randn,
)
from specreg.diffusion.objectives import denoising_loss, loss_weight
from specreg.diffusion.precond import PRECONDS, Coefficients, Denoiser, coefficients
from specreg.diffusion.samplers import SigmaPath, check_sigmas, integrate
from specreg.diffusion.schedule import edm_training_sampler, karras_sigmas, ve_sigmas, vp_sigma, vp_sigma_inv, vp_sigmas
from specreg.diffusion.timesteps import TimestepSampler, weigh

DISCRETIZATIONS = ("edm", "vp", "ve")
EDM_SAMPLERS = ("euler", "heun", "dpmpp_2m")

__all__ = ["DISCRETIZATIONS", "EDM", "EDM_SAMPLERS", "PRECONDS", "Denoiser"]


class EDM:
    """An EDM-family formulation: preconditioning, noise distribution, weight, loss, sampler.

    Args:
        precond: ``"edm"``, ``"vp"`` or ``"ve"`` (Table 1 of Karras et al. 2022).
        sigma_data: σ_d, the data standard deviation assumed by ``"edm"``.
        P_mean, P_std: the log-normal training noise of ``"edm"``.
        sigma_min, sigma_max, rho: the sampling grid (:func:`karras_sigmas`); clipped to the
            range the preconditioning supports, as NVlabs/edm does (VP: [σ_vp(ε_t), σ_vp(1)],
            VE: [ve_sigma_min, ve_sigma_max]).
        beta_d, beta_min, M, epsilon_t: the VP schedule, its number of DDPM steps M (for
            c_noise) and the smallest training time ε_t.
        ve_sigma_min, ve_sigma_max: the VE training range.

    The raw network is called ``net(c_in·x, c_noise, **kw)`` with c_noise of shape (B,).

    Example:
        >>> edm = EDM("edm")
        >>> denoiser = edm.precondition(net)                       # doctest: +SKIP
        >>> out = edm.loss(denoiser, x0, regularizer=reg)          # doctest: +SKIP
        >>> x = edm.sample(denoiser, (16, 3, 32, 32), steps=18)    # doctest: +SKIP
    """

    def __init__(self, precond: str = "edm", *, sigma_data: float = 0.5, P_mean: float = -1.2,
                 P_std: float = 1.2, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                 beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000, epsilon_t: float = 1e-5,
                 ve_sigma_min: float = 0.02, ve_sigma_max: float = 100.0,
                 time_sampler: TimestepSampler | None = None) -> None:
        self.precond = check_choice("precond", precond, PRECONDS)
        self.sigma_data = check_positive("sigma_data", sigma_data)
        self.P_mean = float(P_mean)
        self.P_std = check_positive("P_std", P_std)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        self.rho = check_positive("rho", rho)
        self.beta_d = check_positive("beta_d", beta_d)
        self.beta_min = check_positive("beta_min", beta_min, allow_zero=True)
        self.M = check_int("M", M, lo=2)
        self.epsilon_t = check_positive("epsilon_t", epsilon_t)
        if not self.epsilon_t < 1:
            raise ValueError(f"epsilon_t={epsilon_t!r} is not accepted; expected 0 < epsilon_t < 1")
        self.ve_sigma_min = check_positive("ve_sigma_min", ve_sigma_min)
        self.ve_sigma_max = check_positive("ve_sigma_max", ve_sigma_max)
        self.time_sampler = time_sampler  # None: the draw below (module doc); else a registry entry
        for lo, hi in (("sigma_min", "sigma_max"), ("ve_sigma_min", "ve_sigma_max")):
            if not getattr(self, lo) < getattr(self, hi):
                raise ValueError(f"{lo}={getattr(self, lo)} must be smaller than {hi}={getattr(self, hi)}")
        # the built-in training σ as a registry entry, drawn in float32 (unchanged numbers)
        self.noise_sampler = edm_training_sampler(
            self.precond, P_mean=self.P_mean, P_std=self.P_std, beta_d=self.beta_d, beta_min=self.beta_min,
            epsilon_t=self.epsilon_t, ve_sigma_min=self.ve_sigma_min, ve_sigma_max=self.ve_sigma_max)

    # --- the VP schedule ----------------------------------------------------------------

    def vp_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ_vp(t) = sqrt(exp(½β_d t² + β_min t) − 1)."""
        return vp_sigma(t, self.beta_d, self.beta_min)

    def vp_sigma_inv(self, sigma: torch.Tensor) -> torch.Tensor:
        """t = (sqrt(β_min² + 2β_d·ln(1 + σ²)) − β_min)/β_d, the inverse of :meth:`vp_sigma`."""
        return vp_sigma_inv(sigma, self.beta_d, self.beta_min)

    @property
    def supported_range(self) -> tuple[float, float]:
        """The σ range the preconditioning was trained on: where sampling may go."""
        if self.precond == "vp":
            t = torch.tensor([self.epsilon_t, 1.0], dtype=torch.float64)
            lo, hi = self.vp_sigma(t).tolist()
            return lo, hi
        if self.precond == "ve":
            return self.ve_sigma_min, self.ve_sigma_max
        return 0.0, math.inf

    # --- Table 1 ------------------------------------------------------------------------

    def coefficients(self, sigma: torch.Tensor) -> Coefficients:
        """(c_skip, c_out, c_in, c_noise) at σ (:func:`specreg.diffusion.precond.coefficients`)."""
        return coefficients(self.precond, sigma, sigma_data=self.sigma_data, beta_d=self.beta_d,
                            beta_min=self.beta_min, M=self.M)

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """The loss weight λ(σ) (:func:`specreg.diffusion.objectives.loss_weight`)."""
        return loss_weight(self.precond, sigma, self.sigma_data)

    def sample_sigma(self, batch: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """Training noise levels σ (B,), float32: the configured registry entry, else the
        built-in one (:func:`specreg.diffusion.schedule.edm_training_sampler`)."""
        if self.time_sampler is not None:
            return self.time_sampler.sample(batch, generator, device).to(torch.float32)
        return self.noise_sampler.sample(batch, generator, device, torch.float32)

    def precondition(self, net: Callable[..., torch.Tensor], dtype: torch.dtype = torch.float32) -> Denoiser:
        """Wrap a raw network into the denoiser D(x; σ) = x̂0 (see :class:`Denoiser`)."""
        return Denoiser(net, self, dtype=dtype)

    # --- training ---------------------------------------------------------------------

    def loss(self, denoiser: Callable[..., torch.Tensor], x0: torch.Tensor, regularizer: Any | None = None,
             generator: torch.Generator | None = None, *, sigma: torch.Tensor | None = None,
             noise: torch.Tensor | None = None, **model_kwargs: Any) -> DiffusionLoss:
        """Per-sample loss (B,): λ(σ)·mean((D(x0 + σε; σ) − x0)²) [+ the spectral term on x̂0 = D].

        ``denoiser(x, sigma, **model_kwargs)`` returns x̂0 (e.g. from :meth:`precondition`).
        σ and ε are drawn unless given (σ: (B,) positive).
        """
        check_data("x0", x0)
        batch = x0.shape[0]
        drawn = None
        if sigma is None and self.time_sampler is not None:
            drawn = self.time_sampler.sample(batch, generator, x0.device)
            sigma = drawn.to(torch.float32)
        elif sigma is None:
            sigma = self.sample_sigma(batch, generator, x0.device)
        else:
            sigma = torch.as_tensor(sigma, device=x0.device)
            if sigma.shape != (batch,) or not sigma.is_floating_point() or (
                    host_readable(sigma) and bool((sigma <= 0).any())):
                raise ValueError(f"sigma must be positive noise levels of shape ({batch},), got {tuple(sigma.shape)}")
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, x0.dtype)
        check_noise(noise, x0)
        sigma = sigma.to(torch.float64 if x0.dtype == torch.float64 else torch.float32)
        diffusion, x0_hat = denoising_loss(denoiser, x0, sigma, noise, self.weight(sigma), **model_kwargs)
        out = combine(diffusion, x0_hat, x0, sigma, regularizer)
        return out if drawn is None else weigh(out, self.time_sampler, drawn)

    # --- sampling ---------------------------------------------------------------------

    def sigmas(self, steps: int, discretization: str = "edm",
               device: torch.device | str | None = None) -> torch.Tensor:
        """The sampling grid (steps + 1,), float64, within the supported range.

        ``"edm"``: :func:`karras_sigmas` (ρ = ``rho``); ``"vp"``: :func:`vp_sigmas`;
        ``"ve"``: :func:`ve_sigmas`. Only the grid changes; the ODE is always EDM's
        dx/dσ = (x − D)/σ (Karras et al. §3: the VP/VE scaling and schedule are a
        reparameterisation of the same ODE).
        """
        check_choice("discretization", discretization, DISCRETIZATIONS)
        check_steps(steps)
        lo, hi = self.supported_range
        sigma_min, sigma_max = max(self.sigma_min, lo), min(self.sigma_max, hi)
        if discretization == "vp":
            return vp_sigmas(steps, sigma_min, sigma_max, device=device)
        if discretization == "ve":
            return ve_sigmas(steps, sigma_min, sigma_max, device=device)
        return karras_sigmas(steps, sigma_min, sigma_max, self.rho, device=device)

    @torch.no_grad()
    def sample(self, denoiser: Callable[..., torch.Tensor], shape: tuple[int, ...], sampler: str = "heun",
               steps: int = 18, churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"),
               S_noise: float = 1.0, generator: torch.Generator | None = None, *, discretization: str = "edm",
               device: torch.device | str | None = None, callback: Any | None = None,
               **model_kwargs: Any) -> torch.Tensor:
        """Draw samples: x_0 = ε·σ_0 (float64), then ``sampler`` down :meth:`sigmas`.

        ``sampler``: ``"heun"`` (Karras Alg. 2, 2·steps − 1 calls), ``"euler"`` or
        ``"dpmpp_2m"`` (deterministic; churn not accepted). ``churn`` = S_churn with
        S_min, S_max, S_noise as in NVlabs/edm (their ImageNet setting: 40, 0.05, 50, 1.003).
        Returns float32.
        """
        check_choice("sampler", sampler, EDM_SAMPLERS)
        shape = check_shape(shape)
        if sampler == "dpmpp_2m" and churn > 0:
            raise ValueError(f"churn={churn!r} is not accepted with sampler='dpmpp_2m' (deterministic); use 0")
        device = module_device(denoiser) if device is None else torch.device(device)
        sigmas = self.sigmas(steps, discretization, device=device)
        x = randn(shape, generator, device, torch.float32).to(torch.float64) * sigmas[0]
        if sampler != "dpmpp_2m":
            check_positive("churn", churn, allow_zero=True)
            check_positive("S_noise", S_noise, allow_zero=True)
        x = integrate(SigmaPath(denoiser, model_kwargs), x, check_sigmas(sigmas), sampler, churn=churn, S_min=S_min,
                      S_max=S_max, S_noise=S_noise, generator=generator, callback=callback)
        return x.to(torch.float32)

    def __repr__(self) -> str:
        return f"EDM(precond={self.precond!r}, sigma_data={self.sigma_data})"

