"""Randomness and data order: everything random in a step derives from ``(seed, step, micro)``.

``micro = k·world_size + rank`` numbers the micro-batches of one optimizer step across
processes and accumulation (k = 0 … grad_accum−1). From it come

* the data order (:class:`StepBatches`): global sample number i = step·B + micro·b + j
  (B the global batch, b the micro-batch) is position i mod N of the permutation of
  epoch i // N;
* the seed of the step's diffusion noise and noise levels, and of the global RNGs
  (python, numpy, torch: dropout and data-set randomness), ``derive_seed(seed, STEP,
  step, micro)``.

So the stream is a function of the step alone: a resumed run sees what the uninterrupted
one saw, and one process with ``grad_accum=2`` what two processes with ``grad_accum=1`` see.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

STEP, EPOCH = 0, 1  # key tags, so a step's seed never equals an epoch's


def derive_seed(seed: int, *key: int) -> int:
    """A 63-bit seed that depends only on (seed, *key) (non-negative integers), well mixed."""
    state = np.random.SeedSequence([int(seed), *map(int, key)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_everything(seed: int) -> None:
    """Reseed python, numpy and torch (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StepBatches(Sampler[list[int]]):
    """Index lists of this process's micro-batches, from ``start_step`` to ``steps``.

    Global sample number i = step·B + micro·b + j is item ``perm_e[i mod N]`` with
    e = i // N and ``perm_e`` a permutation seeded by (seed, e): every epoch visits each
    item once, and the position in the stream is a function of the step alone.
    """

    def __init__(self, n_items: int, *, global_batch: int, micro_batch: int, world: int, rank: int,
                 accum: int, seed: int, start_step: int, steps: int) -> None:
        self.n, self.B, self.b = n_items, global_batch, micro_batch
        self.world, self.rank, self.accum = world, rank, accum
        self.seed, self.start, self.steps = seed, start_step, steps
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.seed, EPOCH, epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep one epoch only
        return self._perms[epoch]

    def indices(self, step: int, micro: int) -> list[int]:
        """Items of micro-batch ``micro`` of optimizer step ``step`` (0-based)."""
        first = step * self.B + micro * self.b
        return [int(self._perm(i // self.n)[i % self.n]) for i in range(first, first + self.b)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            for k in range(self.accum):
                yield self.indices(step, k * self.world + self.rank)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.accum


__all__ = ["EPOCH", "STEP", "StepBatches", "derive_seed", "seed_everything"]
