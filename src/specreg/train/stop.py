"""Stop signals during training: finish the step, write a checkpoint, then stop.

SIGINT (Ctrl-C) and SIGTERM set a flag (:func:`stop_at_step_end`); the loop reads it once
per step, through the step's loss reduction so every DDP process stops after the same
step, writes a checkpoint and raises :class:`TrainingInterrupted`. The flag is read again
after the last step's checkpoint, so a signal during the last step or its write is not
swallowed. Work that is safe to abandon (the sample grids) runs under :func:`stoppable`:
there a signal stops it at once. A second signal stops at once anywhere.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from specreg.stopping import STOP_SIGNALS, Stopped, handle_signals


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM arrived during :meth:`Trainer.fit`: the step under way was
    finished and a checkpoint of it written, so the same command resumes from there.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C still does; ``step``,
    ``checkpoint`` and ``signal_name`` say where the run stopped.
    """

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None, is_main_process: bool = True) -> None:
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        self.is_main_process = is_main_process
        saved = f"saved checkpoint {checkpoint}" if checkpoint is not None else "no step finished, nothing saved"
        super().__init__(f"{signal_name} at step {step}; {saved}; run the same command to resume")

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process pools (compare's workers) intact
        return type(self), (self.signal_name, self.step, self.checkpoint, self.is_main_process)


class StopNow(Stopped):
    """A stop signal arrived during work that :func:`stoppable` marked as safe to abandon."""


class _Stoppable(Protocol):
    _signal: str | None  # the first stop signal's name
    _stop_now: bool  # inside stoppable(): raise StopNow on a signal


@contextlib.contextmanager
def stop_at_step_end(trainer: _Stoppable) -> Iterator[None]:
    """While training, SIGINT and SIGTERM set ``trainer._signal`` instead of stopping at once
    (inside :func:`stoppable`, they raise :class:`StopNow`). A second signal raises
    ``KeyboardInterrupt`` at once (nothing saved). Signals that are ignored stay ignored."""
    trainer._signal, trainer._stop_now = None, False

    def handler(signum: int, frame: Any) -> None:
        if trainer._signal is not None:  # the second one: stop now
            raise KeyboardInterrupt
        trainer._signal = signal.Signals(signum).name
        if trainer._stop_now:
            raise StopNow(trainer._signal)

    with handle_signals(handler):
        yield


@contextlib.contextmanager
def stoppable(trainer: _Stoppable) -> Iterator[None]:
    """A block that a stop signal may end at once (:class:`StopNow`), also one that arrived
    before the block started."""
    if trainer._signal is not None:
        raise StopNow(trainer._signal)
    trainer._stop_now = True
    try:
        yield
    finally:
        trainer._stop_now = False


def ignore_stop_signals(worker_id: int = 0) -> None:
    """Data-loader workers leave SIGINT/SIGTERM to the main process, which stops cleanly
    (a worker killed by Ctrl-C would make the next batch fail instead)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


__all__ = ["StopNow", "TrainingInterrupted", "ignore_stop_signals", "stop_at_step_end", "stoppable"]
