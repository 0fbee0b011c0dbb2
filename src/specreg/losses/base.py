"""The common frame of every spectral loss: checks, precision, per-sample reduction."""

from __future__ import annotations

import math

import torch
from torch import nn

from specreg._checks import REDUCTIONS, check_choice, check_ndim, check_pair, compute_dtype, reduce
from specreg.losses.extras import TrainingExtras


class SpectralLoss(nn.Module, TrainingExtras):
    """Base class: ``forward(x0_hat, x0)`` on (B, C, *spatial) returns (B,) by default.

    Subclasses implement :meth:`per_sample` on tensors already checked and cast:
    float16/bfloat16 inputs are computed in float32 with autocast disabled, because FFTs
    and logarithms need the range (and cuFFT rejects half for most sizes); float64 stays
    float64 (used by gradcheck). ``reduction`` is ``"none"`` (shape (B,)), ``"mean"`` or
    ``"sum"``. Nothing in ``forward`` reads tensor values on the host, so losses run under
    ``torch.compile`` without graph breaks or device syncs.

    Finite input gives a value that is never NaN: finite, or +inf where the true value
    exceeds the dtype. A sample holding NaN or ±inf (in either argument) gets a NaN value,
    the other samples their own values, so a non-finite check downstream sees it.

    Every loss is a :class:`~specreg.losses.extras.TrainingExtras` that asks a training
    loop for nothing; a loss fitted on data (``fourier_l2`` with ``weights="whiten"``)
    overrides its members.
    """

    def __init__(self, ndim: int = 2, reduction: str = "none") -> None:
        super().__init__()
        self.ndim = check_ndim(ndim)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        check_pair(x0_hat, x0, self.ndim)
        dtype = compute_dtype(x0_hat)
        with torch.autocast(device_type=x0_hat.device.type, enabled=False):
            per = self.per_sample(x0_hat.to(dtype), x0.to(dtype))
        return reduce(per, self.reduction)

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, reduction={self.reduction!r}"


# --------------------------------------------------------------------------- scaling

def pow2_scale(x: torch.Tensor) -> torch.Tensor:
    """The per-sample power of two s with max|x/s| in [1, 2) (1 where x = 0), shape (B,), detached.

    Dividing by a power of two is exact, so a loss computed on x/s and multiplied back
    by the right power of s equals the unscaled one to rounding, while its transforms see
    numbers near 1: nothing overflows at 1e30 or sinks into subnormal numbers at 1e-30.
    s stays within the dtype's normal range (2^-126 … 2^127 in float32).
    """
    lo, hi = torch.aminmax(x.detach().flatten(1), dim=1)  # one pass, not abs then amax
    m = torch.maximum(hi, -lo)
    finfo = torch.finfo(x.dtype)
    # frexp gives m = f·2^E with f in [0.5, 1) exactly; floor(log2(m)) rounded up to 1024
    # for float64's largest value, and 2^1024 is inf
    e = torch.frexp(torch.where(m > 0, m, torch.ones_like(m))).exponent - 1
    return torch.exp2(e.clamp(math.frexp(finfo.tiny)[1] - 1, math.frexp(finfo.max)[1] - 1).to(x.dtype))


def per_sample_view(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``s`` of shape (B,) viewed as (B, 1, …, 1) to broadcast against ``like``."""
    return s.view(-1, *([1] * (like.dim() - 1)))


def _times_power(v: torch.Tensor, s: torch.Tensor, k: int) -> torch.Tensor:
    # v·s^k by repeated products: s^k alone may overflow where v·s^k does not
    s = per_sample_view(s, v)
    for _ in range(abs(k)):
        v = v * s if k > 0 else v / s
    return v


class _Rescale(torch.autograd.Function):
    """v·s^k in the forward and g·s^j in the backward, for a per-sample power of two s."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, s: torch.Tensor, k: int, j: int) -> torch.Tensor:
        ctx.save_for_backward(s)
        ctx.j = j
        return _times_power(v, s, k)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        (s,) = ctx.saved_tensors
        return _times_power(g, s, ctx.j), None, None, None


class _Divide(torch.autograd.Function):
    """x/s_x in the forward and (g/s_x)·s in the backward, for per-sample powers of two."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s_x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s_x, s)
        return x / per_sample_view(s_x, x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        # g·(s/s_x), s ≥ s_x, as two factors ≥ 1 of at most 2^127 each (s/s_x itself may
        # exceed the range, and g/s_x first overflowed for s = s_x = 2^-126 and |g| > 4)
        s_x, s = ctx.saved_tensors
        e = torch.frexp(s).exponent - torch.frexp(s_x).exponent  # log2(s/s_x), exact
        half = torch.div(e, 2, rounding_mode="floor")
        r1, r2 = torch.exp2(half.to(g.dtype)), torch.exp2((e - half).to(g.dtype))
        return g * per_sample_view(r1, g) * per_sample_view(r2, g), None, None


def scale_down(x: torch.Tensor, s: torch.Tensor, common: torch.Tensor | None = None) -> torch.Tensor:
    """x/s (s from :func:`pow2_scale`), to be paired with :func:`scale_up`, which applies the
    whole factor s^(k−1) of the gradient at once: the gradient passes through unchanged.

    With ``common`` (the scale ``scale_up`` uses, when each argument of a loss has its own
    scale s), the gradient is multiplied by s_common/s instead, after the transforms have
    summed it in scaled units: a true gradient beyond the dtype's range comes out as ±inf,
    never as NaN from inf − inf.
    """
    return _Rescale.apply(x, s, -1, 0) if common is None else _Divide.apply(x, s, common)


def scale_up(v: torch.Tensor, s: torch.Tensor, k: int) -> torch.Tensor:
    """s^k·v for v = L(:func:`scale_down`(x, s)) with L homogeneous of degree k.

    The value is s^k·L(x/s) = L(x); the gradient is s^(k−1)·∇L(x/s), exactly the
    derivative of L(x), formed without the intermediate s^k (for a quadratic L in float32
    s² overflows from s = 2^64 on, although the gradient s·∇L(x/s) is representable).
    """
    return _Rescale.apply(v, s, k, k - 1)


class _ScaledDifference(torch.autograd.Function):
    """u = (a − b)/(h·s) in the forward; g·s^(k−1)·h^(k−1) and its negative in the backward."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, k: int):
        finfo = torch.finfo(a.dtype)
        m = torch.maximum(a.abs().flatten(1).amax(1), b.abs().flatten(1).amax(1))
        h = torch.where(m >= finfo.max / 2, torch.full_like(m, 2.0), torch.ones_like(m))
        hv = per_sample_view(h, a)
        d = a / hv - b / hv
        s = pow2_scale(d)
        ctx.save_for_backward(s, h)
        ctx.k = k
        ctx.mark_non_differentiable(s, h)
        return d / per_sample_view(s, d), s, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor, _gs: torch.Tensor, _gh: torch.Tensor):
        s, h = ctx.saved_tensors
        g = _times_power(_times_power(g, s, ctx.k - 1), h, ctx.k - 1)
        return g, -g, None


def scaled_difference(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(u, (s, h)) with u = (a − b)/(h·s), for a loss L(a − b) homogeneous of degree k, to
    be returned as :func:`scale_value`(L(u), (s, h), k).

    The backward of u applies the gradient's whole factor (h·s)^(k−1) to each entry of
    ∇L(u), after the transforms have summed it in scaled units: an entry beyond the
    dtype's range is ±inf, an entry that is 0 stays 0 (a factor applied to the scalar
    loss instead turned into inf·0 = NaN in the transforms' backward). a − b of two finite
    numbers overflows when both lie beyond half the dtype's largest value with opposite
    signs (2e38 − (−2e38) in float32): such a sample is halved first, h = 2 (exact but
    for subnormal entries, 2^-150 against a sample near 2^127); every other sample has
    h = 1 and its difference is exact. s is :func:`pow2_scale` of the (halved) difference,
    so the transforms see numbers near 1 however large or small a − b is. Scales are
    detached, shape (B,).
    """
    u, s, h = _ScaledDifference.apply(a, b, k)
    return u, (s, h)


def scale_value(v: torch.Tensor, scales: tuple[torch.Tensor, ...], k: int) -> torch.Tensor:
    """v·Π s^k over ``scales`` (each (B,), applied in order), the gradient passing through
    unchanged (:func:`scaled_difference` applies its factor)."""
    for s in scales:
        v = _Rescale.apply(v, s, k, 0)
    return v
