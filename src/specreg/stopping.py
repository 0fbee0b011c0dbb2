"""Stop signals (SIGINT, SIGTERM) outside training: one exception, one line, no traceback.

Training handles them itself (:mod:`specreg.train.stop`: finish the step, write a
checkpoint, then stop). Everywhere else (loading, sampling, measuring) nothing is lost by
stopping at once, so :func:`stop_on_signals` turns either signal into :class:`Stopped`,
which the command line reports in one line with exit status 130 (SIGINT) or 143
(SIGTERM); without it SIGTERM would end the process with no word. A signal that is
ignored when the block starts (``nohup``, a background job, a pool worker that leaves
SIGINT to its parent) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; ``signal_name`` says which. A ``KeyboardInterrupt``, so code
    that stops on Ctrl-C still does."""

    def __init__(self, signal_name: str, detail: str = "") -> None:
        self.signal_name = signal_name
        super().__init__(f"{signal_name}{'; ' + detail if detail else ''}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.signal_name, str(self).partition("; ")[2])


@contextlib.contextmanager
def handle_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Install ``handler`` for SIGINT and SIGTERM (those not ignored) for the block and
    restore the previous handlers afterwards. Only the main thread can own signal handlers;
    elsewhere the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for s in STOP_SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _raise(signum: int, frame: Any) -> None:
    raise Stopped(signal.Signals(signum).name)


def stop_on_signals() -> contextlib.AbstractContextManager[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` in the main thread while the block runs."""
    return handle_signals(_raise)


__all__ = ["STOP_SIGNALS", "Stopped", "handle_signals", "stop_on_signals"]
