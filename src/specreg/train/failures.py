"""How a run fails, told in one message that says what to try: a loss or the gradient that
is no longer finite (:class:`TrainingDiverged`, raised before the update), and running out
of memory."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from specreg.train.config import TrainConfig


class TrainingDiverged(RuntimeError):
    """A loss or the gradient became NaN or infinite; training stopped before the update."""


def check_finite(step: int, **parts: float) -> None:
    """Raise :class:`TrainingDiverged` naming the first non-finite part."""
    for name in ("diffusion", "spectral", "lam"):
        if not math.isfinite(parts[name]):
            what = {"diffusion": "the diffusion loss", "spectral": "the spectral loss (L_S)",
                    "lam": "the weight λ"}[name]
            raise TrainingDiverged(f"step {step}: {what} is {parts[name]} ({_fmt(parts)})")
    if not math.isfinite(parts["loss"]):
        raise TrainingDiverged(f"step {step}: the total loss overflowed: λ·spectral is not finite ({_fmt(parts)})")


def _fmt(parts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in parts.items())


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` says a device (or the host) ran out of memory."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    text = str(err)
    return ((oom_type is not None and isinstance(err, oom_type)) or "out of memory" in text
            or "can't allocate memory" in text)


def out_of_memory(t: TrainConfig, step: int, micro_batch: int, world: int) -> RuntimeError:
    """The error to raise when ``step`` ran out of memory: what the batch was, and what to try."""
    return RuntimeError(
        f"out of memory at step {step} with a micro-batch of {micro_batch} per process (train.batch_size="
        f"{t.batch_size}, {world} process(es), train.grad_accum={t.grad_accum}). Use a smaller batch (e.g. "
        f"train.batch_size={max(1, t.batch_size // 2)}), more accumulation (train.grad_accum={t.grad_accum * 2} "
        "keeps the global batch), train.mixed_precision=bf16, or a smaller model"
    )


__all__ = ["TrainingDiverged", "check_finite", "is_oom", "out_of_memory"]
