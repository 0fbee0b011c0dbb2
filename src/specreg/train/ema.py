"""The exponential moving average of the network's weights, the model that samples."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of a module's weights (and a copy of its buffers).

    θ_ema ← d_t·θ_ema + (1 − d_t)·θ with d_t = min(decay, (1 + t)/(10 + t)) at step t:
    the warm-up keeps the average from being dominated by the random initial weights in
    short runs, and reaches ``decay`` after ≈ 10/(1 − decay) steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_p: list[torch.Tensor] = [p for p in self.module.parameters()]
        new_p = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, new_p, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


__all__ = ["EMA"]
