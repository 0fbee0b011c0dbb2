"""Argument checks shared by every layer.

Each check raises ``ValueError`` naming the argument, the value received and what would
be accepted, so that a user reading the message alone knows how to fix the call.
Checks look only at Python-level metadata (shapes, dtypes, option strings); they never
read tensor values, so they cause no host sync and are safe under ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

REDUCTIONS = ("none", "mean", "sum")


def check_choice(name: str, value: T, accepted: Iterable[T]) -> T:
    """Return ``value`` if it is one of ``accepted``, else raise a ``ValueError``."""
    accepted = tuple(accepted)
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not accepted; expected one of {list(accepted)}")
    return value


SEED_RANGE = (0, 2**64 - 1)  # what torch.Generator.manual_seed takes without overflow (and numpy's SeedSequence)


def check_int(name: str, value: object, *, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (a Python or numpy integer, not a bool) with ``lo <= value <= hi``;
    ``ValueError`` naming ``name``, the value and the accepted range otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
            lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            want = f"an integer from {lo} to {hi}"
        elif lo is not None:
            want = f"an integer >= {lo}"
        else:
            want = "an integer" + (f" <= {hi}" if hi is not None else "")
        raise ValueError(f"{name}={value!r} is not accepted; expected {want}")
    return int(value)


def check_device(name: str, device: str | torch.device | None) -> torch.device:
    """A torch device this build and machine can use (``cpu``; ``cuda``/``cuda:N`` where a GPU
    is visible; ``mps`` on Apple silicon); None is cuda if available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    usable = ["cpu"]
    if torch.cuda.is_available():
        usable += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        usable.append("mps")
    if dev is None or (dev.type != "cpu" and str(dev) not in usable):
        why = "" if dev is None or dev.type != "cuda" or torch.cuda.is_available() else (
            " (this torch build has no CUDA or no GPU is visible)")
        raise ValueError(f"{name}={str(device)!r} is not accepted{why}; usable here: {usable}")
    return dev


def check_ndim(ndim: int) -> int:
    """Spatial dimensionality: 1 (audio), 2 (images) or 3 (volumes, video)."""
    if isinstance(ndim, bool) or not isinstance(ndim, int) or ndim not in (1, 2, 3):
        raise ValueError(f"ndim={ndim!r} is not accepted; expected 1 (audio), 2 (images) or 3 (volumes)")
    return ndim


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Reject negative (or zero) and non-finite numbers."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not accepted; expected a number") from None
    ok = v >= 0 if allow_zero else v > 0
    if not ok or v != v or v in (float("inf"), float("-inf")):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} is not accepted; expected a finite number {bound}")
    return v


def check_signal(name: str, x: torch.Tensor, ndim: int) -> None:
    """A batch of signals: floating tensor of shape (B, C, *spatial) with ``ndim`` spatial dims.

    Dims between the batch and the spatial dims are all treated as channels, so
    (B, C, T, H, W) with ``ndim=2`` is a batch of C·T images per sample.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()) or x.is_complex():
        raise ValueError(
            f"{name} has dtype {x.dtype}; expected a real floating dtype "
            "(float16, bfloat16, float32 or float64)"
        )
    if x.dim() < ndim + 2:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} ({x.dim()} dims); with ndim={ndim} expected at least "
            f"{ndim + 2} dims: (batch, channels, {', '.join('LHW'[-ndim:] if ndim < 3 else 'DHW')})"
        )
    if any(s == 0 for s in x.shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; every dim must be non-empty")


def check_pair(x0_hat: torch.Tensor, x0: torch.Tensor, ndim: int) -> None:
    """Both arguments of a loss: valid signals of identical shape."""
    check_signal("x0_hat", x0_hat, ndim)
    check_signal("x0", x0, ndim)
    if x0_hat.shape != x0.shape:
        raise ValueError(
            f"x0_hat has shape {tuple(x0_hat.shape)} but x0 has shape {tuple(x0.shape)}; "
            "they must be equal"
        )


def check_int_sequence(name: str, value: Sequence[int], *, min_value: int = 1) -> tuple[int, ...]:
    """A non-empty sequence of integers, each at least ``min_value``."""
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not accepted; expected a sequence of integers") from None
    if not out or any(v < min_value for v in out) or any(float(a) != float(b) for a, b in zip(out, value)):
        raise ValueError(f"{name}={value!r} is not accepted; expected a non-empty sequence of integers >= {min_value}")
    return out


def check_all_read(root: object, kind: str, total: int, failures: Sequence[tuple[str, str]]) -> None:
    """Refuse a folder some of whose ``total`` files could not be read, so that a data set
    never shrinks silently (reporting N items when more files were given). ``failures``
    holds (file name, error) pairs; the message gives their count and the first five."""
    if not failures:
        return
    shown = "; ".join(f"{name} ({str(err)[:100]})" for name, err in failures[:5])
    more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
    raise ValueError(f"root={str(root)!r} holds {len(failures)} of {total} {kind} files that cannot be read: "
                     f"{shown}{more}; fix or remove them (no file of a data folder is skipped)")


def reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``"none"`` (keep shape (B,)), ``"mean"`` or ``"sum"`` to per-sample values."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Half-precision inputs are computed in float32 (FFTs and logs need the range)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def host_readable(x: torch.Tensor) -> bool:
    """Whether a value check on ``x`` costs no device sync: a CPU tensor outside ``torch.compile``.

    The diffusion losses and the regularizer check user-given noise levels only then; on an
    accelerator (and when compiled) they read no tensor value on the host, so a training
    step never waits for the device.
    """
    return x.device.type == "cpu" and not torch.compiler.is_compiling()
