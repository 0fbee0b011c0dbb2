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


CPU_ACTIVATION_BUDGET = 2**21  # elements of a call's largest activation; benchmarks/sampling_chunk.py


def forward_chunk(device: torch.device) -> str | None:
    """How many items one network call takes while sampling on ``device``: "auto"
    (:class:`ChunkedForward`'s rule) on a CPU running one torch thread (a run's default
    there, :func:`cpu_threads`), where a call on a whole sampling batch spills out of the
    caches (measured with one thread, benchmarks/sampling_chunk.py: a 64×64 item costs 1.6
    times as much in a batch of 64 as in one of 16, a DiffWave clip 2.7 times as much in 32
    as in 2); None (the whole batch) with more threads, which split each call between them,
    and on an accelerator, which wants large batches."""
    return "auto" if device.type == "cpu" and torch.get_num_threads() == 1 else None


def largest_activation(net: torch.nn.Module, *args: Any, **kwargs: Any) -> int:
    """Elements of the largest tensor any submodule of ``net`` outputs on this call."""
    sizes = [0]

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                sizes.append(t.numel())

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    try:
        with torch.no_grad():
            net(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return max(sizes)


class ChunkedForward(torch.nn.Module):
    """``net`` called on at most ``chunk`` items at a time: every tensor argument whose first
    dimension is the batch's (that of the first argument) is split along it, and the outputs
    are concatenated. Equal to one call when the network treats items independently (no
    batch statistics), which a denoiser in eval mode does: what sampling uses it for.

    ``chunk="auto"``: set at the first call so that the largest activation of a call holds
    about :data:`CPU_ACTIVATION_BUDGET` elements (measured on one item), at least one item.
    """

    def __init__(self, net: torch.nn.Module, chunk: int | str = "auto") -> None:
        super().__init__()
        if chunk != "auto" and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"chunk={chunk!r} is not accepted; expected a positive integer or 'auto'")
        self.net, self.chunk = net, chunk

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        n = x.shape[0]

        def part(v: Any, sl: slice) -> Any:
            return v[sl] if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == n else v

        def rows(sl: slice) -> tuple[list[Any], dict[str, Any]]:
            return [x[sl], *(part(a, sl) for a in args)], {k: part(v, sl) for k, v in kwargs.items()}

        if self.chunk == "auto":
            one_args, one_kwargs = rows(slice(0, 1))
            self.chunk = max(1, CPU_ACTIVATION_BUDGET // max(1, largest_activation(self.net, *one_args, **one_kwargs)))
        chunk = int(self.chunk)
        if n <= chunk:
            return self.net(x, *args, **kwargs)
        outs = []
        for i in range(0, n, chunk):
            a, kw = rows(slice(i, i + chunk))
            outs.append(self.net(*a, **kw))
        return torch.cat(outs)


def chunked(net: torch.nn.Module, device: torch.device, chunk: int | str | None = None) -> torch.nn.Module:
    """``net`` for inference on ``device``: its calls split by ``chunk`` (None: the device's
    rule, :func:`forward_chunk`), or ``net`` itself where the rule is the whole batch."""
    chunk = forward_chunk(device) if chunk is None else chunk
    return net if chunk is None else ChunkedForward(net, chunk)


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


__all__ = ["CPU_ACTIVATION_BUDGET", "ChunkedForward", "chunked", "cpu_threads", "forward_chunk", "largest_activation",
           "make_accelerator", "torch_threads"]
