"""Boundary extension of one DWT step: the samples a step reads beyond the ends of x.

Every mode of PyWavelets is a linear map from x to the extended signal x̃ (see
:mod:`specreg.transforms.wavelet` for the step and the rules of each mode): x̃[i] is a
sum of at most two samples of x with fixed coefficients, so :func:`extend` gathers the
extension with one or two ``index_select`` calls (and a multiply for the modes with
coefficients other than 1) and concatenates it to x.

The index plans are plain Python data cached per (length, filter length, mode); the
tensors made from them are cached by :func:`constant`, which is also what the
transform's filter and operator tensors are built through, so ``torch.compile`` traces
all of them as constants.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from specreg.transforms.wavelet_filters import MODES


def step_geometry(n: int, filter_length: int, mode: str) -> tuple[int, int]:
    """(M, s0): number of outputs and the virtual index of the first tap.

    See :mod:`specreg.transforms.wavelet` for the step these describe.
    """
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
    M, s0 = step_geometry(n, filter_length, mode)
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


def constant(key: tuple, build: Callable[..., torch.Tensor]) -> torch.Tensor:
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


def extend(x: torch.Tensor, axis: int, filter_length: int, mode: str) -> torch.Tensor:
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
        index = constant(
            ("idx", n, filter_length, mode, k, x.device),
            lambda row=idx[k]: torch.tensor(row, dtype=torch.long, device=x.device),
        )
        term = x.index_select(axis, index)
        if not plain[k]:
            weight = constant(
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


__all__ = ["constant", "extend", "step_geometry"]
