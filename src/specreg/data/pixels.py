"""What every image data set shares: the pixel map to [−1, 1], the size check and the
error of a corrupt data file."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ChecksumError", "check_size", "to_unit_range"]


class ChecksumError(RuntimeError):
    """A data file is corrupt: bad checksum, truncated or not in the expected format."""


def to_unit_range(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels (…) → float32 in [−1, 1]: x = v/127.5 − 1."""
    v = torch.from_numpy(np.array(pixels, copy=True)) if isinstance(pixels, np.ndarray) else pixels
    return v.to(torch.float32) / 127.5 - 1.0


def check_size(name: str, value: int) -> int:
    """``value`` if it is an integer ≥ 1, else a one-line ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= 1")
    return value
