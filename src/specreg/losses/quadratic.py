r"""Quadratic spectral losses: frequency- and band-weighted L2 on x̂0 − x0.

    L_F = mean_ω w(|ω|) · |F[x̂0 − x0](ω)|²          (:class:`FourierL2Loss`)
    L_W = Σ_b γ_b · Σ |W_b(x̂0 − x0)|² / N             (:class:`WaveletL2Loss`)

Why quadratic. Both are d^T Q d with d = x̂0 − x0 and Q symmetric positive definite
(F is unitary, W is injective, every weight > 0). For any such Q,
E_{x0 | x_t}[(x̂0 − x0)^T Q (x̂0 − x0)] is minimised at x̂0 = E[x0 | x_t], the posterior
mean — the same minimiser as the diffusion MSE. So added to the diffusion loss they leave
the optimum, and with it the sampler's correctness, where it was; what they change is how
a finite network spends its capacity and gradient across frequencies. The paper's L1
losses (Eq. 14–16) do not have this property: an L1 on amplitudes is minimised near a
typical sample's amplitude, an L1 on wavelet coefficients at their posterior median
(``tests/test_posterior_mean.py`` checks both against an exact posterior).

Both losses can also return the error split into bands (:meth:`per_band`, summing to
the loss), which :class:`specreg.regularizer.BandWeights` weighs with learned,
noise-level-dependent weights.

Numerics: the difference is divided by its largest magnitude (a detached per-sample
power of two, exact; :func:`~specreg.losses.base.scaled_difference`, which also halves a
sample whose difference itself would overflow) before the transform and the square is
multiplied back at the end, so nothing overflows before the mean is taken and nothing
underflows, up to the dtype's largest value and down to its subnormals; the value is
+inf only where the true one exceeds the dtype, and the gradient then stays finite or ±inf.
"""

from __future__ import annotations

import math
from typing import Any

import pywt
import torch

from specreg._checks import check_choice, check_positive
from specreg.losses.base import SpectralLoss, scale_value, scaled_difference
from specreg.losses.extras import BandedLoss
from specreg.losses.wavelet import Gamma, WaveletLoss
from specreg.transforms.fourier import full_mean, hermitian_weights, radial_bins, radial_frequency, rfftn
from specreg.transforms.wavelet import WaveletLike, wavedec_unscaled

WEIGHTINGS = ("flat", "power", "whiten")
# whitening floors S at this fraction of its peak, so rings where the data has (almost) no
# power (checkerboards between their lines) get a large but bounded weight (≤ 1e6 × the peak's)
WHITEN_FLOOR = 1e-6
NYQUIST = 0.5  # cycles per sample


def _check_weights_tensor(name: str, w: Any) -> torch.Tensor:
    t = torch.as_tensor(w, dtype=torch.float64).detach().reshape(-1).clone()
    if t.numel() < 2 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or not bool((t > 0).any()):
        raise ValueError(f"{name} is not accepted; expected a 1-D tensor of >= 2 finite values >= 0, not all 0 "
                         "(one per radial bin of width 1/min(size) cycles per sample, DC first)")
    return t


class FourierL2Loss(SpectralLoss, BandedLoss):
    r"""Frequency-weighted L2 on the orthonormal DFT, per sample:

        L_F = mean_{c, ω} w(|ω|) · |F[x̂0 − x0](ω)|²,   mean_ω w = 1,

    the mean over channels and the full DFT grid (computed on the ``rfftn`` half with
    Hermitian weights). The weights depend on the radial frequency |ω| only and are
    normalised to mean 1 over the grid, so the value is in the units of the MSE:

    * ``weights="flat"`` (default): w = 1, and L_F *is* the per-sample MSE (Parseval);
    * ``weights="power"``: w ∝ (|ω|/f_Nyquist)^p + ``floor`` with p = ``power`` — more
      weight on high frequencies for p > 0 (|ω| up to √ndim·f_Nyquist in the corners);
    * ``weights="whiten"``: w ∝ 1/S(|ω|), S the data's radial power spectrum, so each
      frequency's error counts relative to the data's own power there. S comes from
      ``spectrum=`` or from :meth:`fit` on a batch of clean data, and is kept in a buffer
      (saved with the module's state dict, so with a run's checkpoints); S is floored at
      1e-6 of its peak, so a ring without power gets a large but bounded weight;
    * a tensor: one weight per radial bin (bin width 1/min(size) cycles per sample, DC
      first, as :func:`specreg.metrics.radial_power_spectrum`); the corners beyond the
      last bin take the last weight.

    ``bands`` sets how :meth:`per_band` splits the error for learned band weights: into
    octaves counted down from Nyquist, [f_N/2, ∞), [f_N/4, f_N/2), …, [0, f_N/2^(B−1)).

    Example:
        >>> loss = FourierL2Loss(ndim=2, weights="power", power=2.0)
        >>> x0 = torch.randn(4, 1, 32, 32)
        >>> loss(x0 + 0.1 * torch.randn_like(x0), x0).shape
        torch.Size([4])
    """

    bin_weights: torch.Tensor  # buffers
    spectrum: torch.Tensor

    def __init__(self, ndim: int = 2, weights: str | Any = "flat", power: float = 2.0, floor: float = 1e-2,
                 spectrum: Any = None, bands: int = 4, reduction: str = "none") -> None:
        super().__init__(ndim, reduction)
        if isinstance(weights, str):
            self.weighting = check_choice("weights", weights, WEIGHTINGS)
            bin_weights = torch.empty(0, dtype=torch.float64)
        else:
            self.weighting = "bins"
            bin_weights = _check_weights_tensor("weights", weights)
        self.power = check_positive("power", power, allow_zero=True)
        self.floor = check_positive("floor", floor, allow_zero=True)
        if self.weighting == "power" and self.floor == 0 and self.power > 0:
            raise ValueError("floor=0 with weights='power' gives the DC bin weight 0 (not positive definite: "
                             "the minimiser would no longer be unique); use floor > 0, e.g. 1e-2")
        if isinstance(bands, bool) or not isinstance(bands, int) or bands < 1:
            raise ValueError(f"bands={bands!r} is not accepted; expected an integer >= 1")
        self._n_bands = bands
        if spectrum is not None and self.weighting != "whiten":
            raise ValueError(f"spectrum= is only used with weights='whiten', not weights={weights!r}")
        self.register_buffer("bin_weights", bin_weights)
        self.register_buffer("spectrum", torch.empty(0, dtype=torch.float64) if spectrum is None
                             else _check_weights_tensor("spectrum", spectrum))

    @property
    def n_bands(self) -> int:
        """Octave bands of :meth:`per_band` (``bands``)."""
        return self._n_bands

    # ---- weights --------------------------------------------------------------------

    @property
    def needs_fit(self) -> bool:
        """True for ``weights="whiten"`` before :meth:`fit` (or ``spectrum=``) gave S."""
        return self.weighting == "whiten" and self.spectrum.numel() == 0

    @torch.no_grad()
    def fit(self, x0: torch.Tensor) -> FourierL2Loss:
        """Estimate S, the mean radial power spectrum of the clean batch ``x0`` (B, C, *spatial)
        over samples and channels, for ``weights="whiten"``; returns ``self``."""
        if self.weighting != "whiten":
            raise ValueError(f"fit() estimates the spectrum of weights='whiten'; this loss has "
                             f"weights={self.weighting!r}")
        from specreg._checks import check_signal
        from specreg.transforms.fourier import radial_average

        check_signal("x0", x0, self.ndim)
        x = x0.detach().to(torch.float64)
        f = rfftn(x, self.ndim)
        p = radial_average(f.real**2 + f.imag**2, tuple(x.shape[-self.ndim:]))
        s = p.reshape(-1, p.shape[-1]).mean(0).cpu()
        if not bool((s > 0).any()):
            raise ValueError("fit(x0): x0 has no power at any frequency (all zeros); fit on real data")
        self.spectrum = s.to(self.spectrum.device)
        return self

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # the fitted spectrum's length is known only once fitted: take the saved one's shape
        for name in ("spectrum", "bin_weights"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _per_bin(self, table: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
        index, counts, _ = radial_bins(shape)
        n_bins = counts.numel() - 1
        if table.numel() != n_bins:
            raise ValueError(f"{what} has {table.numel()} radial bins but signals of spatial size {shape} have "
                             f"{n_bins} (min(size)//2 + 1); fit or give it for this size")
        table = torch.cat([table, table[-1:]])  # corners beyond the last ring: the last value
        return table.to(index.device)[index].reshape(radial_frequency(shape).shape)

    def weight_map(self, spatial_shape: tuple[int, ...], *, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> torch.Tensor:
        """w on the ``rfftn`` grid of ``spatial_shape``, normalised to mean 1 over the full grid."""
        shape = tuple(int(s) for s in spatial_shape)
        f = radial_frequency(shape)
        if self.weighting == "flat":
            w = torch.ones_like(f)
        elif self.weighting == "power":
            w = (f / NYQUIST) ** self.power + self.floor
        elif self.weighting == "whiten":
            if self.needs_fit:
                raise ValueError("weights='whiten' needs the data's spectrum: call loss.fit(x0_batch) first or "
                                 "pass spectrum=")
            s = self.spectrum.detach().to("cpu", torch.float64)
            w = 1.0 / self._per_bin(torch.maximum(s, s.max() * WHITEN_FLOOR), shape, "spectrum")
        else:
            w = self._per_bin(self.bin_weights.detach().to("cpu", torch.float64), shape, "weights")
        herm = hermitian_weights(shape, dtype=torch.float64)
        w = w * (math.prod(shape) / (w * herm).sum())  # tensor ops only: no host sync under compile
        return w.to(device=device, dtype=dtype)

    def band_masks(self, spatial_shape: tuple[int, ...]) -> torch.Tensor:
        """(n_bands, *rfft_grid) 0/1 masks of :meth:`per_band`'s octave bands, coarse first."""
        f = radial_frequency(tuple(int(s) for s in spatial_shape))
        edges = [0.0] + [NYQUIST / 2 ** k for k in range(self.n_bands - 1, 0, -1)] + [math.inf]
        return torch.stack([((f >= lo) & (f < hi)).to(torch.float64) for lo, hi in zip(edges, edges[1:])])

    def band_labels(self) -> list[str]:
        """Names of :meth:`per_band`'s bands in cycles per sample, coarse first."""
        edges = [0.0] + [NYQUIST / 2 ** k for k in range(self.n_bands - 1, 0, -1)]
        return [f"[{lo:.4g}, {hi:.4g})" for lo, hi in zip(edges, edges[1:])] + [f">= {edges[-1]:.4g}"]

    # ---- loss -------------------------------------------------------------------------

    def _power(self, x0_hat: torch.Tensor, x0: torch.Tensor
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, ...]]:
        d, scale = scaled_difference(x0_hat, x0, 2)  # one transform: F is linear
        f = rfftn(d, self.ndim)
        return f.real**2 + f.imag**2, scale, tuple(x0.shape[-self.ndim:])

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        p, scale, shape = self._power(x0_hat, x0)
        w = self.weight_map(shape, dtype=p.dtype, device=p.device)
        return scale_value(full_mean(w * p, shape, self.ndim), scale, 2)

    def per_band(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The loss split into :attr:`n_bands` octave bands, (B, n_bands), coarse first;
        the bands sum to :meth:`per_sample`."""
        from specreg._checks import check_pair, compute_dtype

        check_pair(x0_hat, x0, self.ndim)
        dtype = compute_dtype(x0_hat)
        with torch.autocast(device_type=x0_hat.device.type, enabled=False):
            p, scale, shape = self._power(x0_hat.to(dtype), x0.to(dtype))
            w = self.weight_map(shape, dtype=p.dtype, device=p.device)
            masks = self.band_masks(shape).to(device=p.device, dtype=p.dtype)
            herm = hermitian_weights(shape, dtype=p.dtype, device=p.device)
            per_bin = (w * p * herm).reshape(p.shape[0], -1, *p.shape[-self.ndim:]).sum(1)  # over channels
            n_full = math.prod(p.shape[1:-1]) * shape[-1]
            return scale_value(torch.einsum("b...,k...->bk", per_bin, masks) / n_full, scale, 2)

    def extra_repr(self) -> str:
        extra = {"power": f", power={self.power}, floor={self.floor}", "flat": "", "bins": "",
                 "whiten": f", fitted={not self.needs_fit}"}[self.weighting]
        return f"{super().extra_repr()}, weights={self.weighting!r}{extra}, bands={self.n_bands}"


class WaveletL2Loss(WaveletLoss, BandedLoss):
    r"""Band-weighted L2 on the coefficients of an orthogonal wavelet, per sample:

        L_W = Σ_b γ_b · Σ_{channels, locations} |W_b(x̂0 − x0)|² / N,

    N the number of elements of one sample (channels × spatial). With every γ = 1, mode
    ``"periodization"`` and sizes divisible by 2^levels the transform is orthonormal and
    L_W is the per-sample MSE exactly (Parseval); γ > 1 on the finest levels moves weight
    to high frequencies. γ, ``levels``, ``mode`` and ``include_approx`` are as in
    :class:`specreg.losses.WaveletLoss` (γ keys: ``"approx"``, level i with 1 = coarsest,
    or ``(i, band)``).

    Biorthogonal wavelets (``bior*``, ``rbio*``) are refused: their analysis filters are
    not orthonormal, so all γ = 1 is not the MSE and a band's share of L_W is not its
    share of the error energy, which is what γ is meant to set.

    :meth:`per_band` splits L_W by level (the approximation first, if included, then the
    detail levels coarse → fine); it needs an explicit ``levels``.

    Example:
        >>> loss = WaveletL2Loss("haar", levels=3, gamma=[1.0, 2.0, 4.0])
        >>> x0 = torch.randn(4, 1, 32, 32)
        >>> loss(x0 + 0.1 * torch.randn_like(x0), x0).shape
        torch.Size([4])
    """

    def __init__(self, wavelet: WaveletLike = "haar", levels: int | None = None, ndim: int = 2, gamma: Gamma = None,
                 include_approx: bool = True, mode: str = "periodization", reduction: str = "none") -> None:
        super().__init__(wavelet, levels, ndim, gamma, include_approx, mode, reduction)
        if not pywt.Wavelet(self.wavelet).orthogonal:
            raise ValueError(f"wavelet={self.wavelet!r} is not accepted by wavelet_l2: it is biorthogonal, so its "
                             "coefficients do not keep the error's energy (all γ = 1 would not be the MSE, and γ "
                             "would not set a band's share of it); use an orthogonal family: haar, db*, sym*, "
                             "coif*")

    @property
    def n_bands(self) -> int:
        """Bands of :meth:`per_band`: one per level, plus the approximation if included."""
        if self.levels is None:
            raise ValueError("per-band weights need a fixed number of bands: build wavelet_l2 with levels=<int>")
        return self.levels + int(self.include_approx)

    def band_labels(self) -> list[str]:
        names = ["approx"] if self.include_approx else []
        return names + [f"level {i} ({'coarsest' if i == 1 else 'finest' if i == self.levels else 'detail'})"
                        for i in range(1, self.n_bands - len(names) + 1)]

    def _levels_sq(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        levels = self.resolve_levels(tuple(x0.shape[-self.ndim:]))
        gamma = self.band_weights(levels)
        d, scale = scaled_difference(x0_hat, x0, 2)
        coeffs, factors = wavedec_unscaled(d, self.wavelet_key, levels, self.ndim, self.mode)
        n = x0[0].numel()
        groups = ([[((0, "approx"), coeffs[0])]] if self.include_approx else [])
        groups += [[((i, k), b) for k, b in det.items()] for i, det in enumerate(coeffs[1:], start=1)]
        firsts = ([factors[0]] if self.include_approx else []) + list(factors[1:])
        out = []
        for group, factor in zip(groups, firsts):
            total = x0.new_zeros(x0.shape[0])
            for key, band in group:
                if gamma[key] != 0.0:
                    total = total + (gamma[key] * factor**2) * band.pow(2).flatten(1).sum(1)
            out.append(total)
        return scale_value(torch.stack(out, 1) / n, scale, 2)

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self._levels_sq(x0_hat, x0).sum(1)

    def per_band(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """L_W split by level, (B, n_bands): approximation (if included), then levels coarse → fine."""
        from specreg._checks import check_pair, compute_dtype

        _ = self.n_bands  # explicit levels required
        check_pair(x0_hat, x0, self.ndim)
        dtype = compute_dtype(x0_hat)
        with torch.autocast(device_type=x0_hat.device.type, enabled=False):
            return self._levels_sq(x0_hat.to(dtype), x0.to(dtype))


__all__ = ["WEIGHTINGS", "FourierL2Loss", "WaveletL2Loss"]
