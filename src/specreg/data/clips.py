"""Cutting a set into the items it is measured by: fixed-length segments of audio clips,
one seeded crop per clip, and a seeded subset of rows. Reference sets and ``specreg eval``
cut real data and samples by these same rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and torch load on first call, so that `specreg --help` stays light
    import numpy as np
    import torch

__all__ = ["crop_clips", "segments", "subset"]


def crop_clips(clips: Sequence[np.ndarray], length: int, seed: int) -> torch.Tensor:
    """One ``length``-sample segment of every clip, at an offset drawn uniformly from the
    clip's valid range; clip i's offset depends on (``seed``, i) only, so the samples and
    the reference are cut by one rule, whichever of them is which. Returns (N, 1, length)."""
    import numpy as np
    import torch

    out = []
    for i, c in enumerate(clips):
        if c.size < length:
            raise ValueError(f"clip {i} has {c.size} samples, fewer than the crop length {length}")
        start = int(np.random.default_rng([seed, i]).integers(0, c.size - length + 1))
        out.append(c[start:start + length])
    return torch.from_numpy(np.stack(out)).float()[:, None]


def segments(clips: Sequence[np.ndarray], length: int) -> torch.Tensor:
    """Every non-overlapping ``length``-sample segment of each clip (remainders dropped)."""
    import numpy as np
    import torch

    segs = [c[k * length:(k + 1) * length] for c in clips for k in range(c.size // length)]
    if not segs:
        raise ValueError(f"the reference clips are all shorter than the samples ({length} samples)")
    return torch.from_numpy(np.stack(segs)).float()[:, None]


def subset(r: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """``n`` rows of ``r`` drawn without replacement by ``seed``, kept in their order
    (all rows when ``n`` is None or not smaller than their count)."""
    import torch

    if n is None or n >= r.shape[0]:
        return r
    g = torch.Generator().manual_seed(seed)
    return r[torch.randperm(r.shape[0], generator=g)[:n].sort().values]
