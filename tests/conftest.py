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
