"""Training noise-level samplers: one registry for EDM (σ), DDPM (timesteps) and flow matching (t).

Every sampler is a distribution of the equivalent VE noise level σ ∈ (0, ∞) — the axis the
regularizer and :mod:`specreg.metrics.probe` use — with its CDF and density as functions
(float64). A formulation turns σ into its own variable: EDM uses σ; flow matching
t = σ/(1 + σ); DDPM the timestep whose σ_t = √((1 − ᾱ_t)/ᾱ_t) is nearest in ln σ (so DDPM
trains on the discretised distribution).

Registry (``name`` and its keys; every entry also takes ``shift`` s > 0, σ → s·σ):

=================  ===================================================================
``lognormal``      ln σ ~ N(P_mean, P_std²) (EDM's default, P_mean −1.2, P_std 1.2)
``logit_normal``   flow t = shift(sigmoid(n)), n ~ N(mean, std²) (SD3); SD3's shift
                   t' = s·t/(1 + (s − 1)·t) is σ' = s·σ, so ln σ ~ N(mean + ln s, std²)
``resolution``     logit_normal with s = shift·√(n/n_base), n pixels or latent tokens
``uniform``        flow t ~ U(t_min, t_max), σ = t/(1 − t) (flow matching's default)
``vp``             t ~ U(ε_t, 1), σ = √(exp(½β_d t² + β_min t) − 1) (EDM's VP default)
``loguniform``     ln σ ~ U(ln sigma_min, ln sigma_max) (EDM's VE default)
``mixture``        (1 − q)·base + q·low: "uniform + a fraction q from a low-noise density"
``adaptive``       bins of equal base mass drawn ∝ the running RMS loss per bin (below)
=================  ===================================================================

The adaptive sampler. Bin k of K holds base mass 1/K; it is drawn with probability
Q_k = (1 − floor)·r_k/Σr + floor/K, r_k = √(EMA of the per-sample loss² in bin k), and σ
within the bin from the base density. With ``weighting: importance`` (default) each
sample's loss is multiplied by w = (1/K)/Q_k = p_base/q, so E_q[w·ℓ] = E_p[ℓ]: the
objective (and its expected gradient) is the base sampler's, only its variance changes.
r ∝ √E[ℓ²] is the proposal that minimises that variance (Nichol & Dhariwal 2021 use it for
L_vlb); the floor bounds w ≤ 1/floor. ``weighting: none`` is what loss-following trainers
do: the objective itself moves toward the bins with large loss.

The entries live in :mod:`specreg.diffusion.noise_levels` (base class, closed-form entries,
the registry and its builder) and :mod:`specreg.diffusion.adaptive` (``mixture``,
``adaptive``); this module is the registry's public face.

An empty config (``diffusion.timesteps_sampler: {}``) keeps each formulation's own draw,
so runs without the key are unchanged draw for draw; :func:`default_sampler` gives the
registry entry with the same distribution (checked by a KS test).

Example:
    >>> s = build_timestep_sampler({"name": "logit_normal", "mean": 0.0, "std": 1.0, "shift": 3.0})
    >>> sigma = s.sample(4, torch.Generator().manual_seed(0))
    >>> bool((s.cdf(sigma) > 0).all())
    True
"""

from __future__ import annotations

from typing import Any

import torch

from specreg.diffusion.adaptive import WEIGHTINGS, Adaptive, Mixture
from specreg.diffusion.base import DiffusionLoss
from specreg.diffusion.noise_levels import (
    REGISTRY,
    VP,
    Discrete,
    LogitNormal,
    LogNormal,
    LogUniform,
    Resolution,
    TimestepSampler,
    Uniform,
    build_timestep_sampler,
    resolution_shift,
    sampler_names,
)


def default_sampler(formulation: Any) -> TimestepSampler:
    """The registry entry with the distribution of ``formulation``'s training σ (its configured
    sampler, or the entry equal to its own built-in draw)."""
    own = getattr(formulation, "time_sampler", None)
    if own is not None:
        return own
    kind = type(formulation).__name__
    if kind == "EDM":  # its schedule's entry (specreg.diffusion.schedule.edm_training_sampler)
        return formulation.noise_sampler
    if kind == "FlowMatching":
        if formulation.time_sampling == "uniform":
            return Uniform(shift=formulation.shift)
        return LogitNormal(formulation.logit_mean, formulation.logit_std, shift=formulation.shift)
    if kind == "DDPM":
        return Discrete(formulation.sigma(torch.arange(formulation.num_timesteps)))
    raise ValueError(f"formulation {formulation!r} is not accepted; expected EDM, DDPM or FlowMatching")


def nearest_timestep(sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Index of the entry of the increasing table ``sigmas`` nearest to each σ in ln σ (DDPM)."""
    log_table = sigmas.to(torch.float64).clamp_min(1e-300).log()
    mid = (log_table[1:] + log_table[:-1]) / 2
    return torch.searchsorted(mid.to(sigma.device), sigma.to(torch.float64).clamp_min(1e-300).log().contiguous())


def weigh(out: DiffusionLoss, sampler: TimestepSampler | None, sigma: torch.Tensor) -> DiffusionLoss:
    """Let ``sampler`` see the step's losses, then apply its importance weights (if any) to
    ``loss`` and ``diffusion`` (the raw spectral term and λ stay as they are, for logging)."""
    if sampler is None:
        return out
    w = sampler.importance(sigma.detach())
    sampler.observe(sigma.detach(), out.loss.detach())
    if w is None:
        return out
    w = w.to(out.loss.device, out.loss.dtype)
    return DiffusionLoss(loss=out.loss * w, diffusion=out.diffusion * w, spectral=out.spectral, lam=out.lam,
                         sigma=out.sigma)


__all__ = ["REGISTRY", "Adaptive", "Discrete", "LogNormal", "LogUniform", "LogitNormal", "Mixture", "Resolution",
           "TimestepSampler", "Uniform", "VP", "build_timestep_sampler", "default_sampler", "nearest_timestep",
           "resolution_shift", "sampler_names", "weigh", "WEIGHTINGS"]
