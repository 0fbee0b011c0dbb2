"""Suite-wide settings.

Tests use one torch thread: the suite's tensors are small, and on a 2-core machine two
OpenMP threads per op stall whenever anything else runs (measured: a 10 s file took
100 s under load). Benchmarks, not tests, measure speed.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_dynamo(request):
    """torch.compile keeps at most 8 compiled versions of one function (e.g. the losses'
    shared ``forward``); tests that compile start from an empty cache, so their order and
    number in a session do not matter."""
    if "compile" in request.node.name:
        torch._dynamo.reset()
    yield


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_delivered():
    """A suite started in the background of a non-interactive shell (``cmd &``) inherits
    SIGINT ignored, and so would every `specreg` process it starts: the stop-signal tests
    need Ctrl-C to be delivered, so the session restores Python's own handler."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(autouse=True)
def _signal_handlers():
    """Every test leaves SIGINT and SIGTERM as it found them: code that sets up a pool worker
    or a stop handler in-process (compare's worker initialiser ignores SIGINT) would otherwise
    leave the rest of the session, and every subprocess it starts, deaf to Ctrl-C."""
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in before.items():
        if signal.getsignal(s) is not handler:
            signal.signal(s, handler)
