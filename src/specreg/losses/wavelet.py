"""Wavelet coefficient matching, Eq. 16 of the paper.

    L_W = Σ_{s,ℓ} γ_{s,ℓ} · mean_{channels, locations} |W0^{(s,ℓ)} − Ŵ0^{(s,ℓ)}|

per sample, where W0^{(s,ℓ)} is the band of level (scale) s and orientation ℓ of the
multilevel DWT of x0 (:func:`specreg.transforms.wavelet.wavedec`, PyWavelets semantics)
and Ŵ0 the same band of x̂0. Units: those of x0 (the coefficients of orthogonal
wavelets are in signal units).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import product
from typing import Any

import torch

from specreg._checks import check_choice
from specreg.losses.base import SpectralLoss, scale_value, scaled_difference
from specreg.transforms.wavelet import MODES, WaveletLike, get_filters, max_level, wavedec_unscaled, wavelet_key

#: Levels used when ``levels=None``: this many, or fewer when the signal is too short.
DEFAULT_LEVELS = 3

GammaKey = str | int | tuple[int, str]
Gamma = None | float | Sequence[float] | Mapping[GammaKey, float]


def _check_weight(name: str, value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not accepted; expected a finite number >= 0") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}={value!r} is not accepted; expected a finite number >= 0")
    return v


class WaveletLoss(SpectralLoss):
    """L1 distance between the wavelet coefficients of x̂0 and x0, band by band (Eq. 16).

    Per sample: for every band (the approximation of the coarsest level, if
    ``include_approx``, and every detail band of every level) the mean of
    |W0 − Ŵ0| over channels and locations, times the band's weight γ, summed over bands.

    Choices the paper leaves open, made here:

    * **Per-band mean**, not a sum over all coefficients: every band counts equally
      whatever its size, so a 3-level loss is not dominated by the finest level (which
      holds 3/4 of the coefficients in 2-D), and the value does not grow with the size.
    * **γ = 1 for every band** by default. Orthonormal filters keep energy, not means:
      a constant offset c gives approximation coefficients c·2^{s·ndim/2} after s
      levels, so with ``include_approx`` the low-pass residue weighs more as ``levels``
      grows (lower ``gamma["approx"]`` to compensate).
    * **L1, not L2.** For an orthonormal transform (Haar or any orthogonal wavelet with
      ``mode="periodization"`` on even sizes) Parseval gives Σ|W0 − Ŵ0|² = Σ|x0 − x̂0|²,
      so a squared loss on the coefficients would repeat the pixel MSE the diffusion
      loss already has. L1 is not invariant under the transform: it favours errors that
      are sparse in the wavelet basis and gives each band a say of its own.
    * **One transform.** Every boundary mode is linear, so W(x̂0) − W(x0) = W(x̂0 − x0):
      the loss transforms the difference once (half the work; equal up to rounding).

    Args:
        wavelet: discrete PyWavelets wavelet; the paper uses ``"haar"`` and ``"bior1.3"``.
        levels: number of levels; ``None`` = min(3, ``pywt.dwtn_max_level`` of the
            spatial shape), decided per call. A signal too short for even one level, or
            an explicit ``levels`` deeper than the maximum, raises ``ValueError``.
        ndim: spatial dims transformed: 1 (audio), 2 (images), 3 (volumes).
        gamma: band weights γ (finite, >= 0; bands not named get 1):

            * ``None``: 1 for every band;
            * a number: that weight for every band, the approximation included;
            * a sequence with one weight per level, coarse → fine (the order of
              ``pywt.wavedecn``'s detail dicts), given to every detail band of that
              level; the approximation keeps 1. Its length must equal ``levels``;
            * a dict whose keys are ``"approx"``, a level index ``i`` (1 = coarsest
              detail level, ``levels`` = finest, i.e. the position in the pywt
              coefficient list) for all bands of that level, or ``(i, band)`` such as
              ``(3, "dd")`` for one band; ``(i, band)`` wins over ``i``.
        include_approx: include the coarsest approximation band (the low-pass residue).
        mode: boundary extension of the DWT (see ``specreg.transforms.wavelet.MODES``).
        reduction: ``"none"`` (shape (B,)), ``"mean"`` or ``"sum"``.

    Example:
        >>> loss = WaveletLoss("haar", levels=3)
        >>> x0 = torch.randn(4, 3, 32, 32)
        >>> loss(x0 + 0.1, x0).shape
        torch.Size([4])
    """

    def __init__(
        self,
        wavelet: WaveletLike = "haar",
        levels: int | None = None,
        ndim: int = 2,
        gamma: Gamma = None,
        include_approx: bool = True,
        mode: str = "periodization",
        reduction: str = "none",
    ) -> None:
        super().__init__(ndim=ndim, reduction=reduction)
        self.wavelet_key = wavelet_key(wavelet)
        self.wavelet = get_filters(self.wavelet_key).name
        self.mode = check_choice("mode", mode, MODES)
        if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 1):
            raise ValueError(f"levels={levels!r} is not accepted; expected None or an integer >= 1")
        self.levels = levels
        if not isinstance(include_approx, bool):
            raise ValueError(f"include_approx={include_approx!r} is not accepted; expected True or False")
        self.include_approx = include_approx
        self.gamma = gamma
        self._gamma = self._parse_gamma(gamma)
        if levels is not None:
            self.band_weights(levels)  # validate a sequence's length and dict keys now

    # ---- configuration ---------------------------------------------------------------

    def _parse_gamma(self, gamma: Gamma) -> tuple[str, Any]:
        """Normalise γ to ("all", w) | ("levels", (w, ...)) | ("dict", {key: w})."""
        if gamma is None:
            return ("all", 1.0)
        if isinstance(gamma, (int, float)) and not isinstance(gamma, bool):
            return ("all", _check_weight("gamma", gamma))
        if isinstance(gamma, Mapping):
            keys = {"".join(p) for p in product("ad", repeat=self.ndim)} - {"a" * self.ndim}
            out: dict[GammaKey, float] = {}
            for k, v in gamma.items():
                ok = (
                    k == "approx"
                    or (isinstance(k, int) and not isinstance(k, bool) and k >= 1)
                    or (
                        isinstance(k, tuple)
                        and len(k) == 2
                        and isinstance(k[0], int)
                        and not isinstance(k[0], bool)
                        and k[0] >= 1
                        and k[1] in keys
                    )
                )
                if not ok:
                    raise ValueError(
                        f"gamma has the key {k!r}, which is not accepted; expected 'approx', a level "
                        f"index i >= 1 (1 = coarsest) or a pair (i, band) with band one of {sorted(keys)}"
                    )
                if k == "approx" and not self.include_approx:
                    raise ValueError("gamma has the key 'approx' but include_approx=False; drop one of them")
                out[k] = _check_weight(f"gamma[{k!r}]", v)
            return ("dict", out)
        if isinstance(gamma, Sequence) and not isinstance(gamma, str):
            return ("levels", tuple(_check_weight(f"gamma[{i}]", v) for i, v in enumerate(gamma)))
        raise ValueError(
            f"gamma={gamma!r} is not accepted; expected None, a number, a sequence with one weight "
            "per level (coarse to fine) or a dict {'approx' | i | (i, band): weight}"
        )

    def resolve_levels(self, spatial_shape: tuple[int, ...]) -> int:
        """The number of levels used for signals of this spatial shape."""
        deepest = max_level(tuple(spatial_shape), self.wavelet_key)
        if self.levels is None:
            if deepest < 1:
                raise ValueError(
                    f"x0 of spatial size {tuple(spatial_shape)} is too small for one level of the "
                    f"{self.wavelet!r} wavelet (filter length {get_filters(self.wavelet_key).length}); "
                    "use a shorter wavelet (e.g. 'haar') or larger signals"
                )
            return min(DEFAULT_LEVELS, deepest)
        if self.levels > deepest:
            raise ValueError(
                f"levels={self.levels} is too deep for x0 of spatial size {tuple(spatial_shape)} with "
                f"wavelet {self.wavelet!r}; the maximum is {deepest} (pywt.dwtn_max_level)"
            )
        return self.levels

    def band_weights(self, levels: int) -> dict[tuple[int, str], float]:
        """γ of every band for ``levels`` levels: keys (0, "approx") and (i, band), i = 1..levels
        (coarse → fine, the position in the pywt coefficient list)."""
        kind, g = self._gamma
        bands = [k for k in ("".join(p) for p in product("ad", repeat=self.ndim)) if k != "a" * self.ndim]
        keys = [(0, "approx")] if self.include_approx else []
        keys += [(i, b) for i in range(1, levels + 1) for b in bands]
        if kind == "all":
            return dict.fromkeys(keys, g)
        w = dict.fromkeys(keys, 1.0)
        if kind == "levels":
            if len(g) != levels:
                raise ValueError(
                    f"gamma has length {len(g)} but {levels} levels are used; expected one weight "
                    "per level, coarse to fine"
                )
            w.update({(i, b): g[i - 1] for i in range(1, levels + 1) for b in bands})
            return w
        for k in g:
            if k != "approx" and (k[0] if isinstance(k, tuple) else k) > levels:
                raise ValueError(
                    f"gamma has the key {k!r} but only {levels} levels are used; expected level "
                    f"indices 1..{levels} (1 = coarsest)"
                )
        for k, v in g.items():  # "approx" and whole levels first ...
            if k == "approx":
                w[(0, "approx")] = v
            elif not isinstance(k, tuple):
                w.update({(k, b): v for b in bands})
        for k, v in g.items():  # ... so that (i, band) entries win over i
            if isinstance(k, tuple):
                w[k] = v
        return w

    # ---- loss ----------------------------------------------------------------------------

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        levels = self.resolve_levels(tuple(x0.shape[-self.ndim :]))
        gamma = self.band_weights(levels)
        # Haar bands come unnormalised, their factor folded into γ (one pass fewer per level)
        # the difference in units of its per-sample power of two: Haar's unnormalised sums
        # grow by 2^ndim a level and overflowed from 3e37 (float32) on
        d, scale = scaled_difference(x0_hat, x0, 1)
        coeffs, factors = wavedec_unscaled(d, self.wavelet_key, levels, self.ndim, self.mode)
        bands = [((0, "approx"), coeffs[0], factors[0])] if self.include_approx else []
        bands += [((i, k), b, factors[i]) for i, d in enumerate(coeffs[1:], start=1) for k, b in d.items()]
        total = x0.new_zeros(x0.shape[0])
        for key, band, factor in bands:
            if gamma[key] != 0.0:  # a zero weight costs nothing (and its band no backward)
                total = total + (gamma[key] * factor) * band.abs().mean(dim=tuple(range(1, band.dim())))
        return scale_value(total, scale, 1)

    def extra_repr(self) -> str:
        return (
            f"wavelet={self.wavelet!r}, levels={self.levels}, ndim={self.ndim}, gamma={self.gamma!r}, "
            f"include_approx={self.include_approx}, mode={self.mode!r}, reduction={self.reduction!r}"
        )


__all__ = ["DEFAULT_LEVELS", "WaveletLoss"]
