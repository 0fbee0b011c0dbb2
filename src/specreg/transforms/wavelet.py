"""Differentiable multilevel N-D discrete wavelet transform (DWT) that matches PyWavelets.

:func:`wavedec` returns exactly what ``pywt.wavedecn(x, wavelet, mode=mode, level=level,
axes=<last ndim axes>)`` returns, as torch tensors with autograd:
``[a_n, {details of level n}, ..., {details of level 1}]`` (coarsest first). Detail keys
spell, for each transformed axis in order, ``"a"`` (low-pass) or ``"d"`` (high-pass):
``"d"`` in 1-D; ``"ad"``, ``"da"``, ``"dd"`` in 2-D (first letter = height axis); seven
keys in 3-D. Coefficients are in the units of the signal (the filters of orthogonal
wavelets have unit norm, so ``periodization`` is an orthonormal transform).

One analysis step along an axis of length n, with the reversed decomposition filters
w_c = dec_c[::-1] (c = lo, hi; L taps), is the strided correlation

    y_c[o] = Σ_{j<L} w_c[j] · x̃[s0 + 2o + j],      o = 0, …, M−1,

where x̃ is x extended beyond its ends by the boundary ``mode`` (PyWavelets semantics):

* ``periodization``: M = ⌈n/2⌉, s0 = ⌊L/2⌋ − L + 1; x̃ is periodic with period n + (n mod 2),
  an odd-length signal first being extended by repeating its last sample (as pywt does);
* every other mode: M = ⌊(n + L − 1)/2⌋, s0 = 2 − L, and x̃ follows the mode
  (``zero``, ``constant``, ``symmetric``, ``reflect``, ``periodic``, ``smooth``,
  ``antisymmetric``, ``antireflect``).

Implementation (chosen for speed of forward + backward on CPU and GPU):

* Haar: pairwise sums and differences (x[2o] ± x[2o+1]) / √2 on a reshaped view, after
  extending an odd axis by its one extension sample.
* Other wavelets on axes up to :data:`DENSE_MAX` samples: the whole step along one axis,
  boundary extension included (every mode is linear in x), is a small dense matrix
  A_c (M × n), applied with one matrix product. Low- and high-pass are separate products,
  so autograd never has to scatter gradients into slices of a larger tensor.
* Longer axes (audio): explicit extension and one ``conv1d`` with 2 output channels
  (low, high) and stride 2, on the axis moved last.

Operators are built once in float64 from the PyWavelets filters and cached per
(wavelet, length, mode, dtype, device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

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

#: Axes longer than this use ``conv1d`` instead of a dense (M × n) operator; below it the
#: matrix product is faster (forward and backward) than a strided convolution.
DENSE_MAX = 256

WaveletLike = Union[str, pywt.Wavelet]
Coeffs = list  # [Tensor, dict[str, Tensor], ...]: the pywt.wavedecn layout


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
            and np.allclose(self.dec_lo, (r, r), rtol=0, atol=1e-15)
            and np.allclose(self.dec_hi, (-r, r), rtol=0, atol=1e-15)
        )


@lru_cache(maxsize=1)
def _discrete_families() -> tuple[str, ...]:
    discrete = set(pywt.wavelist(kind="discrete"))
    return tuple(f for f in pywt.families() if any(w in discrete for w in pywt.wavelist(f)))


@lru_cache(maxsize=128)
def _filters_from_name(name: str) -> Filters:
    if name not in pywt.wavelist(kind="discrete"):
        families = list(_discrete_families())
        if name in pywt.wavelist(kind="continuous") or name.split("-")[0].rstrip("0123456789.") in (
            "cmor", "shan", "fbsp", "gaus", "mexh", "morl", "cgau"
        ):
            raise ValueError(
                f"wavelet={name!r} is a continuous wavelet, which has no discrete filter bank "
                f"and cannot be used for a DWT; expected a discrete wavelet from the families "
                f"{families} (e.g. 'haar', 'bior1.3', 'db4'; see pywt.wavelist(kind='discrete'))"
            )
        raise ValueError(
            f"wavelet={name!r} is not accepted; expected the name of a discrete PyWavelets "
            f"wavelet from the families {families} (e.g. 'haar', 'bior1.3', 'db4'; see "
            "pywt.wavelist(kind='discrete'))"
        )
    w = pywt.Wavelet(name)
    return Filters(name, tuple(float(v) for v in w.dec_lo), tuple(float(v) for v in w.dec_hi))


def get_filters(wavelet: WaveletLike) -> Filters:
    """Filters of a discrete wavelet given by PyWavelets name or ``pywt.Wavelet`` object."""
    if isinstance(wavelet, Filters):
        return wavelet
    if isinstance(wavelet, pywt.Wavelet):
        lo, hi = tuple(float(v) for v in wavelet.dec_lo), tuple(float(v) for v in wavelet.dec_hi)
        if len(lo) < 2 or len(lo) != len(hi):
            raise ValueError(
                f"wavelet={wavelet.name!r} has decomposition filters of lengths {len(lo)} and "
                f"{len(hi)}; expected two filters of equal length >= 2"
            )
        return Filters(wavelet.name or "custom", lo, hi)
    if not isinstance(wavelet, str):
        raise ValueError(
            f"wavelet={wavelet!r} is not accepted; expected a discrete wavelet name (str) or "
            "a pywt.Wavelet"
        )
    return _filters_from_name(wavelet)


def dwt_max_level(size: int, wavelet: WaveletLike) -> int:
    """Deepest useful level for an axis of ``size`` samples: ⌊log2(size / (L − 1))⌋, at least 0.

    Same as ``pywt.dwt_max_level(size, L)``: the last level at which some coefficient is
    still free of boundary effects.
    """
    return int(pywt.dwt_max_level(int(size), get_filters(wavelet).length))


def max_level(spatial_shape: tuple[int, ...], wavelet: WaveletLike) -> int:
    """``pywt.dwtn_max_level``: the smallest :func:`dwt_max_level` over the spatial axes."""
    return min(dwt_max_level(n, wavelet) for n in spatial_shape)


def check_level(level: int | None, spatial_shape: tuple[int, ...], wavelet: WaveletLike) -> int:
    """Resolve ``level=None`` to the maximum; reject levels too deep for the smallest axis."""
    deepest = max_level(spatial_shape, wavelet)
    if level is None:
        return deepest
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise ValueError(f"level={level!r} is not accepted; expected None or an integer >= 0")
    if level > deepest:
        name = get_filters(wavelet).name
        raise ValueError(
            f"level={level} is too deep for spatial size {tuple(spatial_shape)} with wavelet "
            f"{name!r} (filter length {get_filters(wavelet).length}); the maximum is {deepest} "
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


def _extension_terms(v: np.ndarray, n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """x̃[v] = Σ_t coef[..., t] · x[idx[..., t]] (two terms), for integer virtual indices v.

    Indices inside [0, n) map to themselves. Outside, the rules are PyWavelets' (valid
    for extensions up to n samples, which is all a level allowed by :func:`check_level`
    ever needs).
    """
    v = np.asarray(v, dtype=np.int64)
    idx = np.zeros(v.shape + (2,), dtype=np.int64)
    coef = np.zeros(v.shape + (2,), dtype=np.float64)
    inside = (v >= 0) & (v < n)
    left, right = v < 0, v >= n
    i0, c0 = idx[..., 0], coef[..., 0]
    i1, c1 = idx[..., 1], coef[..., 1]
    i0[inside], c0[inside] = v[inside], 1.0
    if mode == "zero":
        pass
    elif mode == "constant":
        i0[left], c0[left] = 0, 1.0
        i0[right], c0[right] = n - 1, 1.0
    elif mode in ("periodic", "periodization"):
        period = n + (n % 2) if mode == "periodization" else n
        out = ~inside
        j = np.mod(v[out], period)
        i0[out], c0[out] = np.minimum(j, n - 1), 1.0  # the extra sample repeats x[n-1]
    elif mode == "symmetric":  # half-sample symmetric: x1 x0 | x0 x1 ...
        out = ~inside
        j = np.mod(v[out], 2 * n)
        i0[out], c0[out] = np.where(j < n, j, 2 * n - 1 - j), 1.0
    elif mode == "reflect":  # whole-sample symmetric: x2 x1 | x0 x1 ...
        out = ~inside
        if n == 1:
            i0[out], c0[out] = 0, 1.0
        else:
            j = np.mod(v[out], 2 * n - 2)
            i0[out], c0[out] = np.where(j < n, j, 2 * n - 2 - j), 1.0
    elif mode == "antisymmetric":  # -x1 -x0 | x0 x1 ... xn-1 | -xn-1 -xn-2
        out = ~inside
        j = np.mod(v[out], 2 * n)
        i0[out] = np.where(j < n, j, 2 * n - 1 - j)
        c0[out] = np.where(j < n, 1.0, -1.0)
    elif mode == "smooth":  # first-order extrapolation from the two end samples
        if n == 1:
            i0[~inside], c0[~inside] = 0, 1.0
        else:
            k = -v[left]
            i0[left], c0[left], i1[left], c1[left] = 0, 1.0 + k, 1, -k
            k = v[right] - n + 1
            i0[right], c0[right], i1[right], c1[right] = n - 1, 1.0 + k, n - 2, -k
    elif mode == "antireflect":  # 2·x0 − x[k] | x0 x1 ... | 2·x[n-1] − x[n-1-k]
        if n == 1:
            i0[~inside], c0[~inside] = 0, 1.0
        else:
            i0[left], c0[left], i1[left], c1[left] = 0, 2.0, -v[left], -1.0
            i0[right], c0[right], i1[right], c1[right] = n - 1, 2.0, 2 * n - 2 - v[right], -1.0
    else:  # pragma: no cover - modes are validated by the caller
        raise ValueError(f"mode={mode!r} is not accepted; expected one of {list(MODES)}")
    return idx, coef


@lru_cache(maxsize=512)
def _analysis_matrices(filters: Filters, n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The dense operators A_lo, A_hi (M × n, float64) of one step along an axis of length n."""
    L = filters.length
    M, s0 = _step_geometry(n, L, mode)
    v = s0 + 2 * np.arange(M)[:, None] + np.arange(L)[None, :]  # (M, L) virtual indices
    idx, coef = _extension_terms(v, n, mode)
    out = []
    for dec in (filters.dec_lo, filters.dec_hi):
        w = np.asarray(dec[::-1], dtype=np.float64)
        A = np.zeros((M, n), dtype=np.float64)
        rows = np.broadcast_to(np.arange(M)[:, None, None], idx.shape)
        np.add.at(A, (rows, idx), coef * w[None, :, None])
        out.append(A)
    return out[0], out[1]


@lru_cache(maxsize=512)
def _pad_plan(n: int, filter_length: int, mode: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Extension terms of the samples left and right of x that one conv step reads."""
    M, s0 = _step_geometry(n, filter_length, mode)
    stop = s0 + 2 * M + filter_length - 2  # one past the last virtual index read
    v = np.concatenate([np.arange(s0, 0), np.arange(n, max(stop, n))])
    idx, coef = _extension_terms(v, n, mode)
    return idx, coef, -s0, max(stop, n) - n


_TENSOR_CACHE: dict[tuple, torch.Tensor] = {}


def _cached_tensor(key: tuple, make, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    full_key = (key, dtype, device)
    t = _TENSOR_CACHE.get(full_key)
    if t is None:
        t = torch.as_tensor(make(), dtype=dtype, device=device)
        if len(_TENSOR_CACHE) > 1024:  # bounded: distinct sizes seen by a program are few
            _TENSOR_CACHE.clear()
        _TENSOR_CACHE[full_key] = t
    return t


def _extend(x: torch.Tensor, axis: int, filters_length: int, mode: str) -> torch.Tensor:
    """x with the extension samples one step reads concatenated along ``axis`` (< 0)."""
    n = x.shape[axis]
    idx_np, coef_np, n_left, n_right = _pad_plan(n, filters_length, mode)
    if n_left + n_right == 0:
        return x
    used = coef_np != 0
    shape = [1] * x.dim()
    shape[axis] = len(idx_np)
    pad = None
    for t in range(2):
        if not used[:, t].any():
            continue
        idx = _cached_tensor(("idx", n, filters_length, mode, t), lambda: idx_np[:, t], torch.long, x.device)
        term = x.index_select(axis, idx)
        if not np.all(coef_np[used[:, t], t] == 1.0) or not used[:, t].all():
            coef = _cached_tensor(("coef", n, filters_length, mode, t), lambda: coef_np[:, t], x.dtype, x.device)
            term = term * coef.reshape(shape)
        pad = term if pad is None else pad + term
    if pad is None:  # zero mode
        pad_shape = list(x.shape)
        pad_shape[axis] = len(idx_np)
        pad = x.new_zeros(pad_shape)
    left, right = pad.split([n_left, n_right], dim=axis)
    return torch.cat([left, x, right], dim=axis)


# --------------------------------------------------------------------------------------
# One analysis step along one axis: (low, high)
# --------------------------------------------------------------------------------------


def _step_haar(x: torch.Tensor, axis: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled Haar step: (x[2o] + x[2o+1], x[2o] − x[2o+1]); the caller multiplies by 1/√2."""
    if x.shape[axis] % 2:
        x = _extend(x, axis, 2, mode)  # Haar reads exactly one extension sample, on the right
    v = x.unflatten(axis, (-1, 2))
    even, odd = v.select(axis, 0), v.select(axis, 1)
    return even + odd, even - odd


def _apply_along(A: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Contract axis ``axis`` (< 0) of x with the columns of A: y[..., o, ...] = Σ_i A[o, i] x[..., i, ...]."""
    if axis == -1:
        return x @ A.mT
    n = x.shape[axis]
    lead, trail = x.shape[:axis], x.shape[axis + 1 :]
    y = A @ x.reshape(-1, n, math.prod(trail))
    return y.reshape(*lead, A.shape[0], *trail)


def _step_dense(x: torch.Tensor, axis: int, filters: Filters, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[axis]
    key = ("dense", filters, n, mode)
    A_lo = _cached_tensor(key + ("lo",), lambda: _analysis_matrices(filters, n, mode)[0], x.dtype, x.device)
    A_hi = _cached_tensor(key + ("hi",), lambda: _analysis_matrices(filters, n, mode)[1], x.dtype, x.device)
    return _apply_along(A_lo, x, axis), _apply_along(A_hi, x, axis)


def _step_conv(x: torch.Tensor, axis: int, filters: Filters, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    L = filters.length
    xe = _extend(x, axis, L, mode).movedim(axis, -1)
    lead = xe.shape[:-1]
    weight = _cached_tensor(
        ("conv", filters),
        lambda: np.stack([filters.dec_lo[::-1], filters.dec_hi[::-1]])[:, None, :],
        x.dtype,
        x.device,
    )
    y = F.conv1d(xe.reshape(-1, 1, xe.shape[-1]), weight, stride=2)  # (N, 2, M)
    y = y.reshape(*lead, 2, y.shape[-1])
    return y.select(-2, 0).movedim(-1, axis), y.select(-2, 1).movedim(-1, axis)


def _dwtn_level(x: torch.Tensor, ndim: int, filters: Filters, mode: str) -> dict[str, torch.Tensor]:
    """One N-D level: {key: band} with pywt keys (character i ↔ spatial axis i)."""
    haar = filters.is_haar
    bands: dict[str, torch.Tensor] = {"": x}
    # Last axis first: its product is one large GEMM on a contiguous input.
    for axis in range(-1, -ndim - 1, -1):
        new: dict[str, torch.Tensor] = {}
        for key, b in bands.items():
            if haar:
                lo, hi = _step_haar(b, axis, mode)
            elif b.shape[axis] <= DENSE_MAX:
                lo, hi = _step_dense(b, axis, filters, mode)
            else:
                lo, hi = _step_conv(b, axis, filters, mode)
            new["a" + key], new["d" + key] = lo, hi
        bands = new
    if haar:  # the 1/√2 of every axis, applied once per band
        scale = 2.0 ** (-ndim / 2)
        bands = {k: b * scale for k, b in bands.items()}
    return bands


def wavedec(
    x: torch.Tensor,
    wavelet: WaveletLike = "haar",
    level: int | None = None,
    ndim: int = 2,
    mode: str = "periodization",
) -> Coeffs:
    """Multilevel DWT over the last ``ndim`` dims, equal to ``pywt.wavedecn``.

    Args:
        x: real floating tensor (B, C, *spatial) (further leading dims are allowed and
            treated as channels); differentiable.
        wavelet: discrete PyWavelets wavelet name (``"haar"``, ``"bior1.3"``, ``"db4"``…)
            or a ``pywt.Wavelet``.
        level: number of levels; ``None`` = ``pywt.dwtn_max_level`` of the spatial shape.
            A level deeper than that raises ``ValueError``.
        ndim: number of transformed (spatial) dims: 1, 2 or 3.
        mode: boundary extension, one of :data:`MODES` (pywt semantics).

    Returns:
        ``[a_level, {detail bands of level `level`}, ..., {detail bands of level 1}]``:
        coarsest approximation first, then one dict per level from coarse to fine, keyed
        like pywt (``"d"``; ``"ad"``, ``"da"``, ``"dd"``; ``"aad"`` … ``"ddd"``). Every
        tensor keeps the leading dims of ``x``; coefficients are in the units of ``x``.

    Example:
        >>> x = torch.randn(2, 3, 32, 32)
        >>> coeffs = wavedec(x, "bior1.3", level=2)
        >>> coeffs[0].shape, sorted(coeffs[1])
        (torch.Size([2, 3, 8, 8]), ['ad', 'da', 'dd'])
    """
    ndim = check_ndim(ndim)
    check_signal("x", x, ndim)
    mode = check_choice("mode", mode, MODES)
    filters = get_filters(wavelet)
    spatial = tuple(x.shape[-ndim:])
    level = check_level(level, spatial, filters)
    details: list[dict[str, torch.Tensor]] = []
    a = x
    for _ in range(level):
        bands = _dwtn_level(a, ndim, filters, mode)
        a = bands.pop("a" * ndim)
        details.append(bands)
    return [a, *reversed(details)]


__all__ = ["MODES", "DENSE_MAX", "Filters", "check_level", "dwt_max_level", "get_filters", "max_level", "wavedec"]
