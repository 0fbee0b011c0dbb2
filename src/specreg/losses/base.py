"""The common frame of every spectral loss: checks, precision, per-sample reduction."""

from __future__ import annotations

import torch
from torch import nn

from specreg._checks import REDUCTIONS, check_choice, check_ndim, check_pair, compute_dtype, reduce


class SpectralLoss(nn.Module):
    """Base class: ``forward(x0_hat, x0)`` on (B, C, *spatial) returns (B,) by default.

    Subclasses implement :meth:`per_sample` on tensors already checked and cast:
    float16/bfloat16 inputs are computed in float32 with autocast disabled, because FFTs
    and logarithms need the range (and cuFFT rejects half for most sizes); float64 stays
    float64 (used by gradcheck). ``reduction`` is ``"none"`` (shape (B,)), ``"mean"`` or
    ``"sum"``. Nothing in ``forward`` reads tensor values on the host, so losses run under
    ``torch.compile`` without graph breaks or device syncs.
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
