"""Where a run executes: torch CPU threads and the accelerate set-up (devices, processes,
mixed precision). Stop signals have their own module, :mod:`specreg.train.stop`, and
running out of memory is told in :mod:`specreg.train.failures`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from specreg.train.config import TrainConfig


def cpu_threads() -> int:
    """The torch thread count a run uses when none is set: 1 without a GPU, else 0 (torch's
    default). Measured here: one thread per run is faster per core than two, and two runs
    of two threads on a 2-core CPU were up to 50× slower per step than alone."""
    return 0 if torch.cuda.is_available() else 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (0: leave the count as it is) and restore
    the previous count afterwards, so a library caller's setting survives."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n and torch.get_num_threads() != old:
            torch.set_num_threads(old)


def make_accelerator(t: TrainConfig, out_dir: Path) -> Any:
    """The ``accelerate.Accelerator`` of a run: the processes torchrun or ``accelerate
    launch`` started (``WORLD_SIZE``), ``t.mixed_precision``, ``t.grad_accum`` and, with
    ``t.tensorboard`` where TensorBoard is installed, its event files under ``out_dir``."""
    from accelerate import Accelerator

    log_with = None
    if t.tensorboard:
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            pass
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # accelerate only sets up multi-process CPU (gloo) training when asked for the CPU;
    # `accelerate launch --cpu` says so itself, torchrun does not
    cpu = world > 1 and not torch.cuda.is_available()
    acc = Accelerator(mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.grad_accum,
                      log_with=log_with, project_dir=str(out_dir), cpu=cpu)
    if acc.num_processes != world:
        raise RuntimeError(f"WORLD_SIZE={world} but accelerate set up {acc.num_processes} process(es); "
                           "every process would train alone and overwrite the others' checkpoints")
    return acc


__all__ = ["cpu_threads", "make_accelerator", "torch_threads"]
