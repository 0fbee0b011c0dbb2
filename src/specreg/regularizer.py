r"""Eq. 17: the spectral term λ·L_S(x̂0, x0) added to a diffusion loss.

    L_total = L_diffusion + λ(σ) · g(σ) · L_S(x̂0, x0)

σ is the noise-to-signal ratio of the sample's noise level, the one quantity every
formulation shares: EDM's σ itself; σ = sqrt((1 − ᾱ_t)/ᾱ_t) for DDPM/DDIM (VP);
σ = t/(1 − t) for rectified flow. :func:`sigma_from_alpha_bar` and
:func:`sigma_from_flow_t` convert.

λ policies:

* a number — the paper's "unweighted" images (λ = 1) and its audio runs (1e-4 … 1e-6);
* ``"edm"`` — λ_EDM(σ) = (σ² + σ_data²)/(σ·σ_data)², the paper's "weighted";
* ``"flow"`` — λ = 1/t² = (1 + 1/σ)², the velocity loss's own weight on x̂0 errors in
  flow matching (‖v̂ − v‖² = ‖x̂0 − x0‖²/t²), so ``lam_scale`` c sets the ratio to it;
* ``"snr"`` — λ = SNR = 1/σ², which turns an x̂0-space loss into the scale of the
  eps-prediction loss (‖ε − ε̂‖² = SNR·‖x0 − x̂0‖²); ``snr_gamma`` clips it at γ
  (min-SNR-γ, Hang et al. 2023) so that nearly clean samples do not dominate;
* :class:`AutoLambda` — set during training from measured sizes (see its docstring).

The gate g(σ) = 1[σ ≤ sigma_max] switches the term off at high noise, where x̂0 from
eps-prediction divides by sqrt(ᾱ_t) and is meaningless (and where, per the pilot in the
project docs, an amplitude loss pulls x̂0 away from the posterior mean). The fade is its
smooth form, g(σ) = logistic((ln σ_c − ln σ)/w): 1 well below σ_c, ½ at σ_c, 0 well
above, over a width of w nepers (the LoRA trainers' "t < 0.7" in flow matching is
σ_c = 0.7/0.3 ≈ 2.33). Gate and fade multiply.

Learned band weights (:class:`BandWeights`, EDM2's learned uncertainty applied per band):
a loss that splits into bands L_b (a :class:`~specreg.losses.extras.BandedLoss`) is replaced by

    Σ_b [ L_b / exp(u_b(σ)) + u_b(σ) ],

u a small head on the noise level trained with the network, started at each band's mean
error on the first batch. At its stationary point exp(u_b) = E[L_b | σ], so every band
contributes equally whatever its natural scale;
the term stays quadratic in x̂0, so a quadratic loss keeps the posterior mean.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from specreg._checks import check_choice, check_positive, host_readable
from specreg.band_weights import BandWeights
from specreg.losses.extras import BandedLoss, LogRecord, TrainingExtras


def sigma_from_alpha_bar(alpha_bar: torch.Tensor) -> torch.Tensor:
    """σ = sqrt((1 − ᾱ)/ᾱ), the VE noise level equivalent to a VP level ᾱ (∞ at ᾱ = 0)."""
    return torch.sqrt((1.0 - alpha_bar) / alpha_bar)


def sigma_from_flow_t(t: torch.Tensor) -> torch.Tensor:
    """σ = t/(1 − t) for x_t = (1 − t)·x0 + t·ε (∞ at t = 1)."""
    return t / (1.0 - t)


def lambda_flow(sigma: torch.Tensor) -> torch.Tensor:
    """λ_flow(σ) = 1/t² = (1 + 1/σ)² with t = σ/(1 + σ): the weight that puts an x̂0-space
    loss on the scale of the flow-matching velocity loss (‖v̂ − v‖² = ‖x̂0 − x0‖²/t²).
    1 at σ = ∞ (t = 1)."""
    return (1.0 + 1.0 / sigma) ** 2


def lambda_edm(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """λ_EDM(σ) = (σ² + σ_data²)/(σ·σ_data)², EDM's per-noise-level loss weight.

    Evaluated as 1/σ_data² + 1/σ², which equals it and has the right limit 1/σ_data²
    at σ = ∞ (flow t = 1, zero terminal SNR) instead of ∞/∞.
    """
    return 1.0 / sigma_data**2 + 1.0 / sigma**2


@dataclass
class RegularizerOutput:
    """Per-sample parts of the spectral term, each of shape (B,).

    ``value`` = ``lam`` · ``spectral`` is what is added to the diffusion loss; ``lam``
    is the λ actually used (0 where the gate is closed), ``spectral`` the raw L_S.
    """

    value: torch.Tensor
    spectral: torch.Tensor
    lam: torch.Tensor


class AutoLambda(nn.Module):
    r"""Sets λ from measured sizes so that the spectral term is a fixed fraction ρ of the
    diffusion term:

        λ = ρ · EMA[L_diffusion] / EMA[L_S]

    ρ (``ratio``) is the single knob: "the spectral term contributes ρ times as much
    loss as the diffusion term, on average". Default ρ = 0.1 — large enough to shape the
    spectrum, small enough that the diffusion objective (which sets the sampler's
    correctness) stays dominant. The EMAs (decay ``beta``, bias-corrected, float64) are
    updated from detached values in training mode only; λ is a detached scalar, so
    no gradient flows through it. Under DDP each process keeps its own EMAs; they agree
    up to batch noise. λ is never negative: a diffusion loss below 0 (a custom objective)
    gives λ = 0, and ``diffusion_loss`` must hold one value per sample.
    """

    ema_diffusion: torch.Tensor  # buffers
    ema_spectral: torch.Tensor
    steps: torch.Tensor

    def __init__(self, ratio: float = 0.1, beta: float = 0.99) -> None:
        super().__init__()
        self.ratio = check_positive("ratio", ratio)
        self.beta = check_positive("beta", beta)
        if not self.beta < 1.0:
            raise ValueError(f"beta={beta!r} is not accepted; expected 0 < beta < 1")
        self.register_buffer("ema_diffusion", torch.zeros((), dtype=torch.float64))
        self.register_buffer("ema_spectral", torch.zeros((), dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.float64))

    def forward(self, spectral: torch.Tensor, diffusion: torch.Tensor) -> torch.Tensor:
        """λ (a 0-dim tensor) given this batch's per-sample L_S and diffusion loss."""
        s = spectral.detach().mean().to(torch.float64)
        d = diffusion.detach().mean().to(torch.float64)
        if self.training:
            self.steps += 1
            self.ema_spectral.mul_(self.beta).add_((1 - self.beta) * s)
            self.ema_diffusion.mul_(self.beta).add_((1 - self.beta) * d)
        corr = 1.0 - self.beta ** self.steps.clamp(min=1.0)
        have = self.steps > 0
        ema_s = torch.where(have, self.ema_spectral / corr, s)
        ema_d = torch.where(have, self.ema_diffusion / corr, d)
        lam = self.ratio * ema_d / torch.where(ema_s > 0, ema_s, torch.ones_like(ema_s))
        # a diffusion loss below 0 (a custom objective) would turn the spectral term into a
        # reward: λ stays >= 0
        return lam.clamp_min(0).to(spectral.dtype)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, beta={self.beta}"


LAM_POLICIES = ("edm", "snr", "flow")
LAM_MAX = 1e8


def noise_levels(sigma: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
    """σ as a (B,) tensor of ``like``'s dtype and device: one value per sample, or one for all.

    A σ that is NaN or negative is not a noise level (0 … ∞ are). Where reading values
    costs no device sync (σ on the CPU, outside ``torch.compile``) it raises a
    ``ValueError``; elsewhere the regularizer's λ becomes NaN for that sample, which the
    trainer's finiteness check reports, instead of the 0 that a comparison with NaN gives.
    """
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device).reshape(-1)
    if s.numel() not in (1, batch):
        raise ValueError(f"sigma has {s.numel()} values (shape {tuple(torch.as_tensor(sigma).shape)}) for a batch "
                         f"of {batch}; expected one noise level per sample or a single one for all")
    if host_readable(s):
        bad = ~(s >= 0)
        if bool(bad.any()):
            raise ValueError(f"sigma has {int(bad.sum())} value(s) that are not noise levels (first: "
                             f"{float(s[bad][0])}); expected sigma >= 0 (0 … inf), not NaN or negative")
    return s.expand(batch)


class SpectralRegularizer(nn.Module, TrainingExtras):
    r"""λ·g·L_S(x̂0, x0) per sample (Eq. 17), with its parts kept apart for logging.

    Args:
        loss: a spectral loss module (per-sample (B,) output), or a name for
            :func:`specreg.losses.build_loss` (then ``loss_kwargs`` go to it).
        lam: a number from 0 to ``LAM_MAX`` = 1e8 (with ``lam_scale``; a larger constant
            is refused, as is a bool), ``"edm"``, ``"snr"``, ``"flow"`` or an
            :class:`AutoLambda`. A policy's λ(σ) is capped at ``LAM_MAX``.
        sigma_max: gate — apply only where σ ≤ sigma_max (None: everywhere).
        alpha_bar_min: the same gate in VP terms, ᾱ ≥ alpha_bar_min
            (σ_max = sqrt((1 − ᾱ_min)/ᾱ_min)). Give at most one of the two.
        sigma_data: σ_data of λ_EDM.
        snr_gamma: with ``lam="snr"``, clip λ at this value (min-SNR-γ).
        lam_scale: a factor on λ, e.g. 4 with ``lam="edm"`` for 4·λ_EDM(σ).
        fade_sigma, fade_width: the smooth gate logistic((ln σ_c − ln σ)/w) with
            σ_c = ``fade_sigma`` (None: no fade) and w = ``fade_width``.
        band_weights: learned per-band weights (:class:`BandWeights`); ``True`` builds
            one with a band per ``loss.per_band`` output (the loss must be a
            :class:`~specreg.losses.extras.BandedLoss`, as ``fourier_l2`` and ``wavelet_l2``
            with ``levels=`` are).
            Its parameters are trained with the network (give ``reg.parameters()`` to
            the optimizer) and it needs ``sigma``.
        decode: a map applied to x̂0 and x0 before the loss, e.g. a frozen VAE decoder
            for a latent model (``regularizer.space: decoded``): L_S(D(x̂0), D(x0)), with
            the gradient through D into x̂0. Not part of the module's parameters or state.

    Call ``reg(x0_hat, x0, sigma=..., diffusion_loss=...)``; ``sigma`` (B,) is needed by
    ``"edm"``, ``"snr"``, the gate, the fade and band weights, ``diffusion_loss`` (B,) by
    :class:`AutoLambda`. A training loop reaches its state through the
    :class:`~specreg.losses.extras.TrainingExtras` members: the loss's fit on data, the
    trainable parameters (the band weights'), and the band weights as a log record.

    Example (your own loop, eps-prediction)::

        x0_hat = specreg.x0_from_pred(eps_hat, x_t, prediction="eps", t=t,
                                      alphas_cumprod=scheduler.alphas_cumprod)
        reg = specreg.SpectralRegularizer("wavelet", lam=0.1, wavelet="haar")
        loss = mse_per_sample + reg(x0_hat, x0, sigma=sigma_t).value
    """

    def __init__(self, loss: nn.Module | str, lam: float | str | AutoLambda = 1.0, *,
                 sigma_max: float | None = None, alpha_bar_min: float | None = None,
                 sigma_data: float = 0.5, snr_gamma: float | None = None, lam_scale: float = 1.0,
                 fade_sigma: float | None = None, fade_width: float = 0.5,
                 band_weights: bool | BandWeights = False, decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 **loss_kwargs) -> None:
        super().__init__()
        if isinstance(loss, str):
            from specreg.losses.registry import build_loss

            loss = build_loss(loss, **loss_kwargs)
        elif loss_kwargs:
            raise ValueError(f"loss keyword arguments {sorted(loss_kwargs)} are only accepted with a loss name")
        if not callable(loss):
            raise ValueError(f"loss={loss!r} is not accepted; expected a loss module or a loss name")
        if getattr(loss, "reduction", "none") != "none":
            raise ValueError(f"loss has reduction={loss.reduction!r}; the regularizer needs per-sample "
                             "values, build the loss with reduction='none'")
        self.loss = loss
        self.lam: AutoLambda | str | float
        if isinstance(lam, AutoLambda):
            self.lam = lam
        elif isinstance(lam, str):
            self.lam = check_choice("lam", lam, LAM_POLICIES)
        elif isinstance(lam, bool):  # True is 1 to Python, but surely not meant as λ = 1
            raise ValueError(f"lam={lam!r} is not accepted; expected a number >= 0, {list(LAM_POLICIES)} or an "
                             "AutoLambda")
        else:
            self.lam = check_positive("lam", lam, allow_zero=True)
        if sigma_max is not None and alpha_bar_min is not None:
            raise ValueError("give at most one of sigma_max and alpha_bar_min (they are the same gate)")
        if alpha_bar_min is not None:
            a = check_positive("alpha_bar_min", alpha_bar_min)
            if a > 1:
                raise ValueError(f"alpha_bar_min={alpha_bar_min!r} is not accepted; expected 0 < alpha_bar_min <= 1")
            sigma_max = ((1.0 - a) / a) ** 0.5
        self.sigma_max = None if sigma_max is None else check_positive("sigma_max", sigma_max, allow_zero=True)
        self.sigma_data = check_positive("sigma_data", sigma_data)
        self.snr_gamma = None if snr_gamma is None else check_positive("snr_gamma", snr_gamma)
        self.lam_scale = check_positive("lam_scale", lam_scale, allow_zero=True)
        if isinstance(self.lam, float) and self.lam * self.lam_scale > LAM_MAX:  # it would be cut silently
            raise ValueError(f"lam={lam!r} (× lam_scale={lam_scale!r}) is not accepted; expected a constant λ "
                             f"<= {LAM_MAX:g}, the cap that keeps λ·L_S finite")
        self.fade_sigma = None if fade_sigma is None else check_positive("fade_sigma", fade_sigma)
        self.fade_width = check_positive("fade_width", fade_width)
        self.band_weights: BandWeights | None = None
        if band_weights is True:
            if not isinstance(loss, BandedLoss):
                raise ValueError(f"band_weights=True needs a loss that splits into bands (per_band), such as "
                                 f"fourier_l2 or wavelet_l2; {type(loss).__name__} does not")
            self.band_weights = BandWeights(loss.n_bands)
        elif isinstance(band_weights, BandWeights):
            self.band_weights = band_weights
        elif band_weights is not False:
            raise ValueError(f"band_weights={band_weights!r} is not accepted; expected True, False or a BandWeights")
        if decode is not None and not callable(decode):
            raise ValueError(f"decode={decode!r} is not accepted; expected a callable (e.g. a frozen VAE decoder)")
        # kept out of the module tree: a frozen decoder is neither trained nor checkpointed here
        self._decode: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = () if decode is None else (decode,)

    @property
    def needs_sigma(self) -> bool:
        return (isinstance(self.lam, str) or self.sigma_max is not None or self.fade_sigma is not None
                or self.band_weights is not None)

    def fade(self, sigma: torch.Tensor) -> torch.Tensor:
        """g(σ) = logistic((ln σ_c − ln σ)/w) (1 without a fade)."""
        if self.fade_sigma is None:
            return torch.ones_like(sigma)
        return torch.sigmoid((math.log(self.fade_sigma) - torch.log(sigma)) / self.fade_width)

    def weights(self, sigma: torch.Tensor | None, batch: int, like: torch.Tensor,
                spectral: torch.Tensor, diffusion_loss: torch.Tensor | None) -> torch.Tensor:
        """λ·g per sample, shape (B,)."""
        if self.needs_sigma and sigma is None:
            raise ValueError(f"lam={self.lam!r}, sigma_max={self.sigma_max!r} need sigma=(B,) noise levels")
        if sigma is not None:
            sigma = noise_levels(sigma, batch, like)
        if isinstance(self.lam, AutoLambda):
            if diffusion_loss is None:
                raise ValueError("lam=AutoLambda needs diffusion_loss=(B,) per-sample diffusion loss")
            if diffusion_loss.numel() != batch:
                raise ValueError(f"diffusion_loss has shape {tuple(diffusion_loss.shape)} for a batch of {batch}; "
                                 "expected (B,): one diffusion loss per sample")
            lam = self.lam(spectral, diffusion_loss).expand(batch)
        elif isinstance(self.lam, str):
            assert sigma is not None  # for type checkers: needs_sigma raised above without it
            if self.lam == "edm":
                lam = lambda_edm(sigma, self.sigma_data)
            elif self.lam == "snr":
                lam = sigma.pow(-2)
                if self.snr_gamma is not None:
                    lam = lam.clamp(max=self.snr_gamma)
            else:  # "flow" (check_choice accepted only LAM_POLICIES)
                lam = lambda_flow(sigma)
        else:
            lam = like.new_full((batch,), self.lam)
        # σ = 0 (flow t = 0) makes λ_EDM and SNR infinite while L_S = 0; a finite cap keeps
        # λ·L_S and its gradient finite (0·∞ would be NaN) and never binds in practice
        # (λ_EDM at EDM's σ_min = 0.002 is 2.5e5).
        lam = (lam * self.lam_scale).clamp(max=LAM_MAX)
        if sigma is not None:  # the fade and the gate need σ, so needs_sigma made sure it was given
            if self.fade_sigma is not None:
                lam = lam * self.fade(sigma)
            if self.sigma_max is not None:
                lam = torch.where(sigma <= self.sigma_max, lam, torch.zeros_like(lam))
            # not a noise level (NaN or < 0, on a device): say so with NaN, not 0
            lam = torch.where(sigma >= 0, lam, torch.full_like(lam, math.nan))
        return lam.to(like.dtype)

    def forward(self, x0_hat: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor | None = None, *,
                diffusion_loss: torch.Tensor | None = None) -> RegularizerOutput:
        if sigma is not None:
            sigma = noise_levels(sigma, x0.shape[0], x0)
        if self._decode:  # space "decoded": the loss sees D(x̂0) and D(x0), the gradient goes through D
            (decode,) = self._decode
            with torch.no_grad():
                x0 = decode(x0)
            x0_hat = decode(x0_hat)
        if self.band_weights is None:
            spectral = self.loss(x0_hat, x0)
            term = spectral
        else:
            if sigma is None:
                raise ValueError("band_weights need sigma=(B,) noise levels")
            if not isinstance(self.loss, BandedLoss):
                raise ValueError(f"band_weights need a loss that splits into bands (a BandedLoss); "
                                 f"{type(self.loss).__name__} is not one")
            bands = self.loss.per_band(x0_hat, x0)
            if not self.band_weights.ready and self.training and torch.is_grad_enabled():
                self.band_weights.initialize(bands)
            u = self.band_weights(sigma.to(bands.device))
            u = u.to(bands.dtype)
            spectral = bands.sum(1)
            term = (bands * torch.exp(-u) + u).sum(1)
        lam = self.weights(sigma, x0.shape[0], spectral, spectral, diffusion_loss)
        # where λ = 0 (gated or λ = 0) the product is exactly 0, never 0·inf; a NaN λ stays NaN
        value = torch.where(lam != 0, lam * term, torch.zeros_like(term))
        return RegularizerOutput(value=value, spectral=spectral, lam=lam)

    # ---- for a training loop (TrainingExtras) ----------------------------------------
    @property
    def needs_fit(self) -> bool:
        return isinstance(self.loss, TrainingExtras) and self.loss.needs_fit

    def fit(self, x0: torch.Tensor, chunk: int = 64) -> SpectralRegularizer:
        """Fit the loss on clean data ``x0`` as the loss will see it: D(x0) when the regularizer
        decodes (``regularizer.space: decoded``; decoded ``chunk`` items at a time, without
        gradients), else ``x0``; moved to the loss's device."""
        if not isinstance(self.loss, TrainingExtras):
            return self
        if self._decode:  # a whitening loss on decoded images needs the images' spectrum, not the latents'
            (decode,) = self._decode
            with torch.no_grad():
                x0 = torch.cat([decode(x0[i:i + chunk]) for i in range(0, x0.shape[0], chunk)])
        self.loss.fit(x0.to(next(itertools.chain(self.loss.buffers(), self.loss.parameters()), x0).device))
        return self

    def log_records(self) -> list[LogRecord]:
        """The loss's records, and the learned band weights' (:meth:`BandWeights.log_record`)."""
        out = self.loss.log_records() if isinstance(self.loss, TrainingExtras) else []
        if self.band_weights is not None:
            out.append(self.band_weights.log_record(self.loss.band_labels() if isinstance(self.loss, BandedLoss)
                                                    else None))
        return out

    def extra_repr(self) -> str:
        lam = self.lam if not isinstance(self.lam, nn.Module) else "AutoLambda"
        extra = "" if self.lam_scale == 1 else f", lam_scale={self.lam_scale}"
        if self.fade_sigma is not None:
            extra += f", fade_sigma={self.fade_sigma}, fade_width={self.fade_width}"
        return f"lam={lam!r}, sigma_max={self.sigma_max}, sigma_data={self.sigma_data}{extra}"
