"""The optimizer of a run and its learning-rate schedule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from specreg.train.config import TrainConfig


def make_optimizer(t: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """Adam or AdamW (``t.optimizer``) over ``params`` with ``t.lr``, ``t.betas`` and ``t.weight_decay``."""
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    beta1, beta2 = t.betas  # two numbers (config._check_ranges)
    return cls(params, lr=t.lr, betas=(beta1, beta2), weight_decay=t.weight_decay)


def learning_rate(t: TrainConfig, step: int) -> float:
    """lr at ``step`` (1-based): linear warm-up over ``t.warmup_steps``, then
    ``t.lr_schedule``: constant, or a cosine / linear decay reaching 0 at ``t.steps``.

    A function of the step alone, so nothing about it needs checkpointing.
    """
    if step <= t.warmup_steps:
        return t.lr * step / t.warmup_steps
    if t.lr_schedule == "constant":
        return t.lr
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)  # 0 … 1
    if t.lr_schedule == "linear":
        return t.lr * (1.0 - progress)
    return t.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


__all__ = ["learning_rate", "make_optimizer"]
