"""The wavelets, boundary modes and levels the DWT of :mod:`specreg.transforms.wavelet` accepts.

Filters come from PyWavelets (every discrete wavelet, read once at import, or a custom
``pywt.Wavelet``); :func:`wavelet_key` validates a wavelet and names its filters,
:func:`check_level` resolves and validates the number of levels exactly as
``pywt.dwtn_max_level`` does: the deepest level is ⌊log2(n / (L − 1))⌋ for an axis of
n samples and a filter of L taps. Plain Python and PyWavelets, no torch: what is
accepted lives here, how the transform is computed in the modules that import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pywt

MODES = (
    "periodization",
    "zero",
    "constant",
    "symmetric",
    "reflect",
    "periodic",
    "smooth",
    "antisymmetric",
    "antireflect",
)
WaveletLike: TypeAlias = str | pywt.Wavelet


@dataclass(frozen=True)
class Filters:
    """Decomposition filters of a discrete wavelet, as PyWavelets defines them."""

    name: str
    dec_lo: tuple[float, ...]
    dec_hi: tuple[float, ...]

    @property
    def length(self) -> int:
        return len(self.dec_lo)

    @property
    def is_haar(self) -> bool:
        r = 1.0 / math.sqrt(2.0)
        return (
            self.length == 2
            and all(abs(a - b) < 1e-15 for a, b in zip(self.dec_lo, (r, r)))
            and all(abs(a - b) < 1e-15 for a, b in zip(self.dec_hi, (-r, r)))
        )


def _filters_of(w: pywt.Wavelet, name: str) -> Filters:
    return Filters(name, tuple(float(v) for v in w.dec_lo), tuple(float(v) for v in w.dec_hi))


# Every discrete wavelet of PyWavelets, read once (about a millisecond): lookups are then
# plain dict accesses, which torch.compile traces without leaving the graph.
_FILTERS: dict[str, Filters] = {n: _filters_of(pywt.Wavelet(n), n) for n in pywt.wavelist(kind="discrete")}


def discrete_families() -> list[str]:
    """Short names of the PyWavelets families that have discrete wavelets."""
    return [f for f in pywt.families() if any(n in _FILTERS for n in pywt.wavelist(f))]


def _is_continuous_name(name: str) -> bool:
    # Continuous names are a family plus parameters: "morl", "gaus3", "cmor1.5-1.0", ...
    family = name.split("-")[0].rstrip("0123456789.")
    return family in pywt.families() and family not in discrete_families()


def wavelet_key(wavelet: WaveletLike) -> str:
    """Validate ``wavelet`` and return the key under which its filters are registered.

    A name must be one of ``pywt.wavelist(kind="discrete")``; a ``pywt.Wavelet`` object
    (e.g. built from a custom filter bank) is registered under a key made of its filters.
    """
    if isinstance(wavelet, str):
        if wavelet in _FILTERS:
            return wavelet
        families = discrete_families()
        if _is_continuous_name(wavelet):
            raise ValueError(
                f"wavelet={wavelet!r} is a continuous wavelet: it has no discrete filter bank "
                f"and cannot be used for a DWT; expected a discrete wavelet from the families "
                f"{families} (e.g. 'haar', 'bior1.3', 'db4'; see pywt.wavelist(kind='discrete'))"
            )
        raise ValueError(
            f"wavelet={wavelet!r} is not accepted; expected the name of a discrete PyWavelets "
            f"wavelet from the families {families} (e.g. 'haar', 'bior1.3', 'db4'; see "
            "pywt.wavelist(kind='discrete'))"
        )
    if isinstance(wavelet, pywt.Wavelet):
        f = _filters_of(wavelet, wavelet.name or "custom")
        if f.length < 2 or len(f.dec_hi) != f.length:
            raise ValueError(
                f"wavelet={wavelet.name!r} has decomposition filters of lengths {f.length} and "
                f"{len(f.dec_hi)}; expected two filters of equal length >= 2"
            )
        key = f"custom:{f.name}:{hash((f.dec_lo, f.dec_hi)):x}"
        _FILTERS.setdefault(key, f)
        return key
    raise ValueError(
        f"wavelet={wavelet!r} is not accepted; expected a discrete wavelet name (str) or a pywt.Wavelet"
    )


def get_filters(wavelet: WaveletLike) -> Filters:
    """Filters of a discrete wavelet given by PyWavelets name or ``pywt.Wavelet`` object."""
    return _FILTERS[wavelet_key(wavelet)]


def _max_level_for(n: int, filter_length: int) -> int:
    # pywt.dwt_max_level in integer arithmetic: the largest k with (L − 1)·2^k ≤ n, or 0.
    if n < filter_length - 1:
        return 0
    k = 0
    while (filter_length - 1) * 2 ** (k + 1) <= n:
        k += 1
    return k


def dwt_max_level(size: int, wavelet: WaveletLike) -> int:
    """Deepest useful level for an axis of ``size`` samples: ⌊log2(size / (L − 1))⌋, at least 0.

    Same as ``pywt.dwt_max_level(size, L)``: the last level at which some coefficient is
    still free of boundary effects.
    """
    return _max_level_for(int(size), get_filters(wavelet).length)


def max_level(spatial_shape: tuple[int, ...], wavelet: WaveletLike) -> int:
    """``pywt.dwtn_max_level``: the smallest :func:`dwt_max_level` over the spatial axes."""
    return min(dwt_max_level(n, wavelet) for n in spatial_shape)


def check_level(level: int | None, spatial_shape: tuple[int, ...], wavelet: WaveletLike) -> int:
    """Resolve ``level=None`` to :func:`max_level`; reject negative and too deep levels."""
    deepest = max_level(spatial_shape, wavelet)
    if level is None:
        return deepest
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise ValueError(f"level={level!r} is not accepted; expected None or an integer >= 0")
    if level > deepest:
        f = get_filters(wavelet)
        raise ValueError(
            f"level={level} is too deep for spatial size {tuple(spatial_shape)} with wavelet "
            f"{f.name!r} (filter length {f.length}); the maximum is {deepest} "
            "(pywt.dwtn_max_level); use a smaller level or a larger signal"
        )
    return int(level)



__all__ = [
    "MODES",
    "Filters",
    "WaveletLike",
    "check_level",
    "discrete_families",
    "dwt_max_level",
    "get_filters",
    "max_level",
    "wavelet_key",
]
