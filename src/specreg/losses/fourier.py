"""Fourier-domain losses on x̂0 (Eq. 14 and 15), the radial power-spectrum loss and the
focal frequency loss.

All spectra are orthonormal DFTs over the last ``ndim`` dims (see
:mod:`specreg.transforms.fourier`), so amplitudes are in the units of the signal. Every
"mean over frequencies" is over the *full* DFT grid (computed on the ``rfftn`` half with
Hermitian weights, exactly equal to the full-grid mean and half the work) and over
channels, giving one value per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specreg._checks import check_choice, check_positive
from specreg.losses.base import (
    SpectralLoss,
    per_sample_view,
    pow2_scale,
    scale_down,
    scale_up,
    scale_value,
    scaled_difference,
)
from specreg.losses.fourier_fused import FusedAmplitudeL1, FusedAmplitudePhase, FusedLogRadialPowerL1
from specreg.transforms.fourier import (
    full_mean,
    radial_average,
    residue_tolerance,
    rfftn,
    safe_amplitude,
    safe_angle,
    safe_unit,
    snap_residue,
)


def _spectrum(u: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(F[u], |F[u]|, residue level) of a signal u scaled to max|u| in [1, 2): amplitudes at
    the level of the FFT's rounding residue are 0 (they are 0 in exact arithmetic, and
    their arbitrary phase would give |F| a gradient)."""
    f = rfftn(u, ndim)
    a = safe_amplitude(f)
    tol = residue_tolerance(a, ndim)
    return f, torch.where(a <= tol, torch.zeros_like(a), a), tol  # NaN stays NaN (a NaN input gives NaN)


def _amplitudes(x0_hat: torch.Tensor, x0: torch.Tensor, ndim: int, phases: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Â/s, A0/s, F̂, F0, s) for a loss homogeneous of degree 1, to be returned as
    ``scale_up(value, s, 1)``.

    Each argument is divided by its own power of two ŝ, s0 (max|x/s| in [1, 2)), so its
    spectrum neither overflows at 1e30 nor goes subnormal at 1e-30 and the smaller one
    keeps its phases; the amplitudes are in units of s = max(ŝ, s0) (exact: ŝ/s and s0/s
    are powers of two ≤ 1). With ``phases`` the spectra's FFT rounding residue is snapped
    to 0 (:func:`~specreg.transforms.fourier.snap_residue`)."""
    s_hat, s0 = pow2_scale(x0_hat), pow2_scale(x0)
    s = torch.maximum(s_hat, s0)
    f_hat, a_hat, tol_hat = _spectrum(scale_down(x0_hat, s_hat, s), ndim)
    f0, a0, tol0 = _spectrum(scale_down(x0, s0, s), ndim)
    if phases:
        f_hat, f0 = snap_residue(f_hat, ndim, tol_hat), snap_residue(f0, ndim, tol0)
    return a_hat * per_sample_view(s_hat / s, a_hat), a0 * per_sample_view(s0 / s, a0), f_hat, f0, s


class FourierAmplitudeLoss(SpectralLoss):
    r"""Eq. 14: L_A = mean_ω |A0(ω) − Â0(ω)|, with A = |F[x]| (orthonormal DFT).

    The mean runs over channels and the full frequency grid, per sample. Invariant to a
    circular shift of either argument (a shift only changes phases).

    Example:
        >>> loss = FourierAmplitudeLoss(ndim=2)
        >>> x0 = torch.randn(4, 3, 32, 32)
        >>> loss(x0 + 0.1 * torch.randn_like(x0), x0).shape
        torch.Size([4])
    """

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if not x0.requires_grad:  # the training case: one fused function (fourier_fused)
            return FusedAmplitudeL1.apply(x0_hat, x0, self.ndim)
        return self.per_sample_autograd(x0_hat, x0)

    def per_sample_autograd(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The same loss written with autograd operations (gradients for both arguments)."""
        a_hat, a0, _, _, s = _amplitudes(x0_hat, x0, self.ndim)
        return scale_up(full_mean((a0 - a_hat).abs(), x0.shape[-self.ndim:], self.ndim), s, 1)


class FourierAmplitudePhaseLoss(SpectralLoss):
    r"""Eq. 15, in two forms.

    ``form="paper"`` — the formula as printed, per sample:

        L_AP = L_A · (1 + L_φ),  L_A = mean_ω |A0 − Â0|,  L_φ = mean_ω |φ0 − φ̂0|,

    with φ = atan2(Im F, Re F) ∈ (−π, π] (radians). Because it *multiplies* by the
    amplitude error, it is blind to phase wherever the amplitudes agree: a circular shift
    of x0 has L_A = 0 and therefore costs nothing, whatever its phase error. The bare
    phase difference also jumps by 2π across the branch cut.

    ``form="weighted"`` — per-frequency, amplitude-weighted and wrap-aware:

        L_APw = mean_ω [ |A0 − Â0| + β · A0 · (1 − cos(φ0 − φ̂0)) ],

    both terms in signal units. 1 − cos is smooth and 2π-periodic (no branch cut), and
    weighting by A0 makes phase count only where x0 has spectral energy, which is the
    paper's stated motivation. It satisfies |F0 − F̂|² = (A0 − Â)² + 2·A0·Â·(1 − cos Δφ),
    so it penalises the same two parts as the complex error, but with L1 on amplitudes.
    Not shift-invariant. ``phase_weight`` is β.
    """

    def __init__(self, ndim: int = 2, form: str = "paper", phase_weight: float = 1.0,
                 reduction: str = "none") -> None:
        super().__init__(ndim, reduction)
        self.form = check_choice("form", form, ("paper", "weighted"))
        self.phase_weight = check_positive("phase_weight", phase_weight, allow_zero=True)

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        # amplitudes in units of s (both terms are homogeneous of degree 1); phases come
        # from spectra whose rounding residue is snapped to 0, so a bin that is real in
        # exact arithmetic has φ = 0 or +π, never −π by a residue of −1e-16
        if not x0.requires_grad:  # the training case: one fused function (fourier_fused)
            return FusedAmplitudePhase.apply(x0_hat, x0, self.ndim, self.phase_weight, self.form == "weighted")
        return self.per_sample_autograd(x0_hat, x0)

    def per_sample_autograd(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The same loss written with autograd operations (gradients for both arguments)."""
        a_hat, a0, f_hat, f0, s = _amplitudes(x0_hat, x0, self.ndim, phases=True)
        shape = x0.shape[-self.ndim:]
        if self.form == "paper":
            l_a = full_mean((a0 - a_hat).abs(), shape, self.ndim)
            l_phi = full_mean((safe_angle(f0) - safe_angle(f_hat)).abs(), shape, self.ndim)
            return scale_up(l_a * (1.0 + self.phase_weight * l_phi), s, 1)
        # 1 − cos Δφ = |e^{iφ0} − e^{iφ̂}|² / 2: exactly 0 at equal phases, accurate for
        # small Δφ (1 − cos cancels there); taken as 1/2 where F̂ = 0 (no phase defined).
        du = safe_unit(f0) - safe_unit(f_hat)
        one_minus_cos = 0.5 * (du.real**2 + du.imag**2)
        per_bin = (a0 - a_hat).abs() + self.phase_weight * a0 * one_minus_cos
        return scale_up(full_mean(per_bin, shape, self.ndim), s, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, form={self.form!r}, phase_weight={self.phase_weight}"


def log_radial_power(x: torch.Tensor, ndim: int, eps: float) -> torch.Tensor:
    r"""log10 of the radially averaged power spectrum, (B, C, n_bins).

    P(r) = mean_{|ω| ≈ r} |F[x](ω)|². Computed as (s·m)²·mean(|F[x/s]/m|²) with s the
    sample's power of two (:func:`specreg.losses.base.pow2_scale`) and m the largest
    amplitude of F[x/s] (detached), so it neither overflows at 1e30 nor underflows at
    1e-30; ``eps`` is then a floor *relative* to m², i.e. a dynamic range of 1/eps.
    """
    s = pow2_scale(x)
    _, a, _ = _spectrum(x / per_sample_view(s, x), ndim)
    m = a.flatten(1).amax(1).detach()
    m = torch.where(m > 0, m, torch.ones_like(m)).view(-1, *([1] * (a.dim() - 1)))
    p = radial_average((a / m) ** 2, x.shape[-ndim:])
    log_scale = torch.log10(m.flatten()) + torch.log10(s)
    return torch.log10(p + eps) + 2.0 * log_scale.view(-1, *([1] * (p.dim() - 1)))


class PowerSpectrumLoss(SpectralLoss):
    r"""L1 between radially averaged log power spectra (per sample, per channel):

        L_PSD = mean_{c, r} | log10 P̂(r) − log10 P0(r) |,

    P(r) the mean of |F|² over the ring of radius r (bin width 1/min(size) cycles per
    sample, rings up to Nyquist of the smallest side). Insensitive to phase and to
    orientation; it matches the shape of the spectrum, which is what the radial-spectrum
    metric measures. ``eps`` is a relative floor (dynamic range 1/eps of the peak power).
    """

    def __init__(self, ndim: int = 2, eps: float = 1e-10, reduction: str = "none") -> None:
        super().__init__(ndim, reduction)
        self.eps = check_positive("eps", eps)

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if not x0.requires_grad:  # the training case: one fused function (fourier_fused)
            return FusedLogRadialPowerL1.apply(x0_hat, x0, self.ndim, self.eps)
        return self.per_sample_autograd(x0_hat, x0)

    def per_sample_autograd(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The same loss written with autograd operations (gradients for both arguments)."""
        d = log_radial_power(x0_hat, self.ndim, self.eps) - log_radial_power(x0, self.ndim, self.eps)
        return d.abs().flatten(1).mean(1)


class FocalFrequencyLoss(SpectralLoss):
    r"""Focal frequency loss (Jiang et al., ICCV 2021), per sample:

        L_FFL = mean_ω  w(ω) · |F0(ω) − F̂(ω)|²,   w = (|F0 − F̂|^α / max_ω |F0 − F̂|^α),

    with the weight matrix w detached (no gradient through it), optionally ``log_matrix``
    (w = log(1 + |ΔF|^α), normalised the same way) and normalised per sample and channel
    (or over the whole batch with ``batch_matrix=True``). Like the reference
    implementation the DFT is orthonormal; ``patch_factor`` > 1 splits each image into
    patch_factor^ndim patches first. ``loss_weight`` scales the result.
    """

    def __init__(self, ndim: int = 2, alpha: float = 1.0, patch_factor: int = 1,
                 log_matrix: bool = False, batch_matrix: bool = False, loss_weight: float = 1.0,
                 reduction: str = "none") -> None:
        super().__init__(ndim, reduction)
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        if isinstance(patch_factor, bool) or not isinstance(patch_factor, int) or patch_factor < 1:
            raise ValueError(f"patch_factor={patch_factor!r} is not accepted; expected an integer >= 1")
        self.patch_factor = patch_factor
        self.log_matrix = bool(log_matrix)
        self.batch_matrix = bool(batch_matrix)
        self.loss_weight = check_positive("loss_weight", loss_weight, allow_zero=True)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_factor
        if p == 1:
            return x
        spatial = x.shape[-self.ndim:]
        if any(s % p for s in spatial):
            raise ValueError(
                f"patch_factor={p} does not divide the spatial shape {tuple(spatial)}; "
                "choose a factor of every side"
            )
        b = x.shape[0]
        x = x.reshape(b, -1, *spatial)
        for d in range(self.ndim):
            # split axis (2 + 2d) into (p, s/p) and move p just after the channel dims
            axis = 2 + 2 * d
            x = x.unflatten(axis, (p, spatial[d] // p)).movedim(axis, 1 + d)
        return x.reshape(b, -1, *(s // p for s in spatial))

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        # F is linear, so ΔF = F[x0 − x̂0]: one transform, of the difference divided by its
        # power of two s (see scaled_difference); the loss is quadratic, L = s²·L(d/s), and
        # its gradient s·∇L(d/s) is formed entry by entry (s² overflows float32 from 1e19 on)
        d, s = scaled_difference(x0, x0_hat, 2)
        diff = rfftn(self._patches(d), self.ndim)
        dist = diff.real**2 + diff.imag**2
        with torch.no_grad():
            w = self._focal_weights(diff.abs(), torch.log(s[0]) + torch.log(s[1]))  # s·h may exceed the dtype
        shape = tuple(n // self.patch_factor for n in x0.shape[-self.ndim:])
        return scale_value(self.loss_weight * full_mean(w * dist, shape, self.ndim), s, 2)

    def _focal_weights(self, mag: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        """w = |ΔF|^α (or log(1 + |ΔF|^α)) normalised to max 1, from |ΔF|/s = ``mag`` and ln s = ``log_s`` (B,).

        Computed in logarithms, ln w = α·(ln mag + ln s), which neither overflows nor
        underflows (|ΔF|^α itself does at large α or scale); ln ln(1 + w) is
        ln softplus(ln w), or ln w itself below ln w = −15, where the two agree to 3e-7.
        """
        if self.alpha == 0:  # |ΔF|^0 = 1 everywhere, 0^0 included
            return torch.ones_like(mag)
        log_w = self.alpha * (torch.log(mag) + per_sample_view(log_s, mag))  # −inf where ΔF = 0
        if self.log_matrix:
            log_w = torch.where(log_w < -15.0, log_w, torch.log(F.softplus(log_w)))
        dims = tuple(range(-self.ndim, 0))
        top = log_w.amax() if self.batch_matrix else log_w.amax(dim=dims, keepdim=True)
        return torch.exp(log_w - torch.where(torch.isfinite(top), top, torch.zeros_like(top))).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, alpha={self.alpha}, patch_factor={self.patch_factor}, "
                f"log_matrix={self.log_matrix}, batch_matrix={self.batch_matrix}")


__all__ = [
    "FocalFrequencyLoss",
    "FourierAmplitudeLoss",
    "FourierAmplitudePhaseLoss",
    "PowerSpectrumLoss",
    "log_radial_power",
]
