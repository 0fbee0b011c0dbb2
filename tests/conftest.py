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
