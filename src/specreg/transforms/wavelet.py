"""Differentiable multilevel N-D discrete wavelet transform (DWT) that matches PyWavelets.

:func:`wavedec` returns what ``pywt.wavedecn(x, wavelet, mode=mode, level=level,
axes=<last ndim axes>)`` returns, as torch tensors with autograd:
``[a_n, {details of level n}, ..., {details of level 1}]`` (coarsest first). Detail keys
spell, for each transformed axis in order, ``"a"`` (low-pass) or ``"d"`` (high-pass):
``"d"`` in 1-D; ``"ad"``, ``"da"``, ``"dd"`` in 2-D (first letter = height axis); seven
keys in 3-D. Coefficients are in the units of the signal: the filters of orthogonal
wavelets have unit norm, so with ``mode="periodization"`` and an even size at every level
the transform is orthonormal.

One analysis step along an axis of length n, with the reversed decomposition filters
w_c = dec_c[::-1] (c = lo, hi; L taps), is the strided correlation

    y_c[o] = Σ_{j<L} w_c[j] · x̃[s0 + 2o + j],      o = 0, …, M−1,

where x̃ is x extended beyond its ends by the boundary ``mode`` (PyWavelets semantics):

* ``periodization``: M = ⌈n/2⌉, s0 = ⌊L/2⌋ − L + 1; x̃ is periodic with period n + (n mod 2),
  an odd-length signal being first extended by repeating its last sample (as pywt does);
* every other mode: M = ⌊(n + L − 1)/2⌋, s0 = 2 − L, and x̃ follows the mode
  (``zero``, ``constant``, ``symmetric``, ``reflect``, ``periodic``, ``smooth``,
  ``antisymmetric``, ``antireflect``).

Implementation (chosen for the speed of forward + backward):

* Haar: pairwise sums and differences (x[2o] ± x[2o+1]) / √2 on a reshaped view, after
  appending the one extension sample an odd axis needs; along the last axis with a
  hand-written backward that writes the interleaved gradient in one pass.
* Other wavelets, on axes of up to :data:`DENSE_MAX` samples: a whole step along one axis,
  boundary extension included (every mode is linear in x), is one small dense matrix
  [A_lo; A_hi] (2M × n) applied with one matrix product. All axes of a level are
  transformed before the bands are split off with ``unbind``, so a level costs one GEMM
  per axis forward and one backward, and autograd never scatters into zero-filled copies.
* Longer axes (audio): explicit extension and one ``conv1d`` with 2 output channels
  (low, high) and stride 2, on the axis moved last.

Operators are built once in float64 from the PyWavelets filters and cached per
(wavelet, length, mode, dtype, device). The builders are marked as constant for
``torch.compile``, so a compiled caller traces the transform without graph breaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

import numpy as np
import pywt
import torch
import torch.nn.functional as F

from specreg._checks import check_choice, check_ndim, check_signal

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

#: Axes longer than this use ``conv1d`` instead of a dense (2M × n) operator, whose cost
#: grows as n²; up to here the matrix product is faster, forward and backward.
DENSE_MAX = 256

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


# --------------------------------------------------------------------------------------
# Boundary extension: every mode is a linear map from x to the extended signal x̃.
# --------------------------------------------------------------------------------------


def _step_geometry(n: int, filter_length: int, mode: str) -> tuple[int, int]:
    """(M, s0): number of outputs and virtual index of the first tap (see module doc)."""
    L = filter_length
    if mode == "periodization":
        return (n + 1) // 2, L // 2 - L + 1
    return (n + L - 1) // 2, 2 - L


def _extension_terms(i: int, n: int, mode: str) -> tuple[tuple[int, float], ...]:
    """x̃[i] = Σ coef · x[idx] over the returned (idx, coef) pairs (empty: x̃[i] = 0).

    PyWavelets' rules; the ones with an end sample as a pivot (smooth, antireflect) are
    valid for extensions of up to n − 1 samples, which is all a level allowed by
    :func:`check_level` ever reads.
    """
    if 0 <= i < n:
        return ((i, 1.0),)
    left = i < 0
    if mode == "zero":
        return ()
    if mode == "constant" or n == 1:
        return ((0 if left else n - 1, 1.0),)
    if mode == "periodic":
        return ((i % n, 1.0),)
    if mode == "periodization":  # period n + (n mod 2); the extra sample repeats x[n-1]
        return ((min(i % (n + n % 2), n - 1), 1.0),)
    if mode in ("symmetric", "antisymmetric"):  # x1 x0 | x0 x1 … (negated for anti-)
        j = i % (2 * n)
        if j < n:
            return ((j, 1.0),)
        return ((2 * n - 1 - j, 1.0 if mode == "symmetric" else -1.0),)
    if mode == "reflect":  # x2 x1 | x0 x1 …
        j = i % (2 * n - 2)
        return ((j if j < n else 2 * n - 2 - j, 1.0),)
    if mode == "smooth":  # first-order extrapolation from the two end samples
        k = -i if left else i - n + 1
        return ((0, 1.0 + k), (1, -float(k))) if left else ((n - 1, 1.0 + k), (n - 2, -float(k)))
    if mode == "antireflect":  # 2·x0 − x[k] | x0 x1 … | 2·x[n−1] − x[2n−2−i]
        return ((0, 2.0), (-i, -1.0)) if left else ((n - 1, 2.0), (2 * n - 2 - i, -1.0))
    raise ValueError(f"mode={mode!r} is not accepted; expected one of {list(MODES)}")


def _pad_plan_uncached(n: int, filter_length: int, mode: str) -> tuple:
    """The samples one step reads outside x, as plain Python data:
    (n_left, n_right, used[2], plain[2], idx[2], coef[2]) with pad = Σ_k coef[k] · x[idx[k]]
    over the used terms (``plain``: all coefficients are 1)."""
    M, s0 = _step_geometry(n, filter_length, mode)
    stop = max(s0 + 2 * M + filter_length - 2, n)  # one past the last virtual index read
    virtual = list(range(s0, 0)) + list(range(n, stop))
    terms = [_extension_terms(i, n, mode) for i in virtual]
    # Two index/coefficient columns; an absent second term reads x[0] with weight 0.
    idx = tuple(tuple(t[k][0] if k < len(t) else 0 for t in terms) for k in range(2))
    coef = tuple(tuple(t[k][1] if k < len(t) else 0.0 for t in terms) for k in range(2))
    used = tuple(any(c != 0.0 for c in coef[k]) for k in range(2))
    plain = tuple(all(c == 1.0 for c in coef[k]) for k in range(2))
    return -s0, stop - n, used, plain, idx, coef


_pad_plan_cached = lru_cache(maxsize=512)(_pad_plan_uncached)


def _pad_plan(n: int, filter_length: int, mode: str) -> tuple:
    # torch.compile traces the plain function (it would warn about, and bypass, the cache).
    if torch.compiler.is_compiling():
        return _pad_plan_uncached(n, filter_length, mode)
    return _pad_plan_cached(n, filter_length, mode)


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _constant(key: tuple, build) -> torch.Tensor:
    """A tensor that depends only on Python values (``key``), built by ``build()``.

    Eager: cached. Under torch.compile: built inside the traced graph from Python
    constants (a cache of tensors would put host-side lookups into the trace).
    """
    if torch.compiler.is_compiling():
        return build()
    t = _CONSTANTS.get(key)
    if t is None:
        if len(_CONSTANTS) > 1024:  # bounded: a program sees few distinct sizes
            _CONSTANTS.clear()
        # A tensor made under inference_mode could not be saved for a later backward.
        with torch.inference_mode(False):
            t = _CONSTANTS[key] = build()
    return t


def _extend(x: torch.Tensor, axis: int, filter_length: int, mode: str) -> torch.Tensor:
    """x with the extension samples one step reads concatenated along ``axis`` (< 0)."""
    n = x.shape[axis]
    n_left, n_right, used, plain, idx, coef = _pad_plan(n, filter_length, mode)
    if n_left + n_right == 0:
        return x
    shape = [1] * x.dim()
    shape[axis] = n_left + n_right
    pad = None
    for k in range(2):
        if not used[k]:
            continue
        index = _constant(
            ("idx", n, filter_length, mode, k, x.device),
            lambda row=idx[k]: torch.tensor(row, dtype=torch.long, device=x.device),
        )
        term = x.index_select(axis, index)
        if not plain[k]:
            weight = _constant(
                ("coef", n, filter_length, mode, k, x.dtype, x.device),
                lambda row=coef[k]: torch.tensor(row, dtype=x.dtype, device=x.device),
            )
            term = term * weight.reshape(shape)
        pad = term if pad is None else pad + term
    if pad is None:  # zero mode
        pad_shape = list(x.shape)
        pad_shape[axis] = n_left + n_right
        pad = x.new_zeros(pad_shape)
    left, right = pad.split([n_left, n_right], dim=axis)
    return torch.cat([left, x, right], dim=axis)


# --------------------------------------------------------------------------------------
# One level
# --------------------------------------------------------------------------------------


class _HaarLastAxis(torch.autograd.Function):
    """Unscaled Haar step along the last axis of an even-length x: (x[2o] + x[2o+1], x[2o] − x[2o+1]).

    Autograd's own backward of the interleaved views is a ``stack`` along a trailing axis
    of size 2, which copies one element at a time; this backward writes the two halves of
    the gradient, (g_s + g_d, g_s − g_d), straight into the strided even and odd slots of
    one buffer (1.5× faster forward + backward for a 3-level Haar loss on the CPU).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.shape = x.shape
        even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
        return even + odd, even - odd

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_s: torch.Tensor | None, g_d: torch.Tensor | None) -> torch.Tensor:
        if g_s is None:
            if g_d is None:  # autograd asks for a backward only when some output has a gradient
                raise TypeError("backward got no gradient for either output")
            g_s = torch.zeros_like(g_d)
        elif g_d is None:
            g_d = torch.zeros_like(g_s)
        g = g_s.new_empty(ctx.shape)
        g_even, g_odd = g.unflatten(-1, (-1, 2)).unbind(-1)
        torch.add(g_s, g_d, out=g_even)
        torch.sub(g_s, g_d, out=g_odd)
        return g


def _haar_step(x: torch.Tensor, axis: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled Haar step along ``axis`` (< 0): (x[2o] + x[2o+1], x[2o] − x[2o+1])."""
    if x.shape[axis] % 2:
        x = _extend(x, axis, 2, mode)  # Haar reads exactly one extension sample, on the right
    if axis == -1 and not torch.compiler.is_compiling():  # (inductor fuses the plain form itself)
        return _HaarLastAxis.apply(x)
    # unbind, not two selects: its backward is one stack instead of two zero-filled copies
    # (along an earlier axis the stacked pieces are whole rows, so that stack is fast)
    even, odd = x.unflatten(axis, (-1, 2)).unbind(axis)
    return even + odd, even - odd


def _conv_step_last(x: torch.Tensor, key: str, mode: str) -> torch.Tensor:
    """One step along the last axis by explicit extension and a strided ``conv1d``: [lo; hi]."""
    f = _FILTERS[key]
    xe = _extend(x, -1, f.length, mode)
    weight = _constant(
        ("conv", key, x.dtype, x.device),
        lambda: torch.tensor([[f.dec_lo[::-1]], [f.dec_hi[::-1]]], dtype=x.dtype, device=x.device),
    )
    y = F.conv1d(xe.reshape(-1, 1, xe.shape[-1]), weight, stride=2)  # (N, 2, M), channel-major
    return y.reshape(*x.shape[:-1], -1)


def _dense_operator(key: str, n: int, mode: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[A_lo; A_hi] (2M × n): one step along an axis of length n, extension included.

    Built as the images of the unit vectors under :func:`_conv_step_last`, so the dense
    and the convolution paths share one definition of every mode; in float64 on the CPU
    (some accelerators have no float64), then moved.
    """

    def build() -> torch.Tensor:
        eye = torch.eye(n, dtype=torch.float64)
        return _conv_step_last(eye, key, mode).mT.contiguous().to(device=device, dtype=dtype)

    return _constant(("dense", key, n, mode, dtype, device), build)


def _apply_along(A: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """y[..., o, ...] = Σ_i A[o, i] · x[..., i, ...] along ``axis`` (< 0)."""
    if axis == -1:
        return x @ A.mT
    n = x.shape[axis]
    lead, trail = x.shape[:axis], x.shape[axis + 1 :]
    y = A @ x.reshape(-1, n, math.prod(trail))
    return y.reshape(*lead, A.shape[0], *trail)


def _stacked_step(x: torch.Tensor, axis: int, key: str, mode: str) -> torch.Tensor:
    """One step along ``axis`` (< 0), low and high stacked: that axis becomes [y_lo; y_hi]."""
    n = x.shape[axis]
    if n <= DENSE_MAX:
        return _apply_along(_dense_operator(key, n, mode, x.dtype, x.device), x, axis)
    return _conv_step_last(x.movedim(axis, -1), key, mode).movedim(-1, axis)


def _split_bands(y: torch.Tensor, ndim: int) -> dict[str, torch.Tensor]:
    """Bands of a tensor stacked [lo; hi] along each of the last ``ndim`` axes, keyed like pywt.

    ``unbind`` (rather than slicing) keeps the backward pass to one ``stack`` per axis
    instead of a zero-filled copy of the whole level per band.
    """
    for i in range(ndim - 1, -1, -1):  # unflattening the later axes first keeps indices simple
        pos = -(2 * (ndim - i) - 1)
        y = y.unflatten(pos, (2, y.shape[pos] // 2))
    bands: dict[str, torch.Tensor] = {"": y}
    for i in range(ndim):
        pos = -(2 * (ndim - i))
        bands = {k + c: part for k, t in bands.items() for c, part in zip("ad", t.unbind(pos))}
    return bands


def _dwtn_level(x: torch.Tensor, ndim: int, key: str, mode: str, scaled: bool = True) -> dict[str, torch.Tensor]:
    """One N-D level over the last ``ndim`` dims: {pywt key: band}, the approximation included.

    ``scaled=False`` (Haar only) leaves out the factor 2^(−ndim/2) of the level, so the
    bands are 2^(ndim/2) times the true ones (see :func:`wavedec_unscaled`).
    """
    if _FILTERS[key].is_haar:
        bands: dict[str, torch.Tensor] = {"": x}
        for axis in range(-1, -ndim - 1, -1):
            new: dict[str, torch.Tensor] = {}
            for k, b in bands.items():
                new["a" + k], new["d" + k] = _haar_step(b, axis, mode)
            bands = new
        if not scaled:
            return bands
        scale = 2.0 ** (-ndim / 2)  # the 1/√2 of every axis, applied once per band
        return {k: b * scale for k, b in bands.items()}
    y = x
    for axis in range(-1, -ndim - 1, -1):  # last axis first: one large GEMM on a contiguous input
        y = _stacked_step(y, axis, key, mode)
    return _split_bands(y, ndim)


def wavedec(
    x: torch.Tensor,
    wavelet: WaveletLike = "haar",
    level: int | None = None,
    ndim: int = 2,
    mode: str = "periodization",
) -> list:
    """Multilevel DWT over the last ``ndim`` dims, equal to ``pywt.wavedecn``.

    Args:
        x: real floating tensor (B, C, *spatial) (further leading dims are allowed and
            treated as channels); differentiable.
        wavelet: discrete PyWavelets wavelet name (``"haar"``, ``"bior1.3"``, ``"db4"``…)
            or a ``pywt.Wavelet``.
        level: number of levels; ``None`` = ``pywt.dwtn_max_level`` of the spatial shape
            (0 for signals shorter than the filter). A deeper level raises ``ValueError``.
        ndim: number of transformed (spatial) dims: 1, 2 or 3.
        mode: boundary extension, one of :data:`MODES` (pywt semantics).

    Returns:
        ``[a_level, {detail bands of level `level`}, ..., {detail bands of level 1}]``:
        coarsest approximation first, then one dict per level from coarse to fine, keyed
        like pywt (``"d"``; ``"ad"``, ``"da"``, ``"dd"``; ``"aad"`` … ``"ddd"``). Every
        tensor keeps the leading dims of ``x``, has the dtype of ``x`` and is in its units.
        Bands may be non-contiguous views.

    Example:
        >>> x = torch.randn(2, 3, 32, 32)
        >>> coeffs = wavedec(x, "bior1.3", level=2)
        >>> tuple(coeffs[0].shape), sorted(coeffs[1])
        ((2, 3, 8, 8), ['ad', 'da', 'dd'])
    """
    return wavedec_unscaled(x, wavelet, level, ndim, mode, scaled=True)[0]


def wavedec_unscaled(
    x: torch.Tensor,
    wavelet: WaveletLike = "haar",
    level: int | None = None,
    ndim: int = 2,
    mode: str = "periodization",
    scaled: bool = False,
) -> tuple[list, list[float]]:
    """:func:`wavedec` without the Haar normalisation, and the factors that restore it.

    For Haar, the factor 2^(−ndim/2) of every level is a pass over every band, forward
    and backward; a caller that only needs a linear function of each band (a loss on
    |coefficients|) can apply it to a scalar instead. Returns ``(coeffs, factors)`` with
    ``coeffs`` structured as :func:`wavedec`'s result and ``factors[i]`` the number that
    multiplies every band of ``coeffs[i]`` to give :func:`wavedec`'s values:
    2^(−s·ndim/2) for the bands of level s (1 = finest) for Haar, 1 for other wavelets
    (whose levels are always normalised) and with ``scaled=True``.
    """
    ndim = check_ndim(ndim)
    check_signal("x", x, ndim)
    mode = check_choice("mode", mode, MODES)
    key = wavelet_key(wavelet)
    level = check_level(level, tuple(x.shape[-ndim:]), key)
    raw = not scaled and _FILTERS[key].is_haar
    details: list[dict[str, torch.Tensor]] = []
    a = x
    for _ in range(level):
        bands = _dwtn_level(a, ndim, key, mode, scaled=not raw)
        a = bands.pop("a" * ndim)
        details.append(bands)
    # every mode's extension is linear and homogeneous, so the factors commute with it
    factors = [2.0 ** (-s * ndim / 2) if raw else 1.0 for s in range(level + 1)]  # s = 0: x itself
    return [a, *reversed(details)], [factors[-1], *reversed(factors[1:])]


__all__ = [
    "DENSE_MAX",
    "MODES",
    "Filters",
    "check_level",
    "discrete_families",
    "dwt_max_level",
    "get_filters",
    "max_level",
    "wavedec",
    "wavedec_unscaled",
    "wavelet_key",
]
