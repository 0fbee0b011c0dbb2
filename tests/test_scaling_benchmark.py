"""benchmarks/scaling.py: its exponent fit and CPU peak-memory reading against known answers,
and one tiny sweep (the script cannot rot). Timings themselves are not tested."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"


@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location("scaling_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_fitted_exponent_of_a_power_law_is_its_power(scaling):
    ns = [32**2, 64**2, 128**2, 256**2]
    assert scaling.fit_exponent(ns, [3.0 * n**1.5 for n in ns]) == pytest.approx(1.5)
    # N log N over 32² … 512² has a slope a little above 1, larger over small N
    expected = scaling.expected_exponent("fourier_amp", "image", ns, "time")
    assert expected == pytest.approx(1 + 1 / math.log(128**2), abs=0.02)
    assert scaling.expected_exponent("wavelet haar L3", "image", ns, "time") == 1.0
    assert scaling.expected_exponent("fourier_amp", "image", ns, "memory") == 1.0


def test_cpu_peak_memory_is_the_largest_live_allocation(scaling):
    def work():
        big = torch.ones(4 * 2**20, dtype=torch.uint8)  # 4 MiB, freed before the next
        del big
        small = torch.ones(2**20, dtype=torch.uint8)
        del small

    peak = scaling.peak_bytes(work, "cpu")
    assert 4 * 2**20 <= peak < 5 * 2**20


def test_a_tiny_sweep_measures_every_loss_and_the_step(scaling):
    results = scaling.run({"image": [16, 32]}, 1, "cpu", log=lambda _: None)
    names = set(results["image"])
    assert {k for k in scaling.LOSSES if k != "mrstft"} | {scaling.STEP, scaling.STEP_BASE} == names
    for points in results["image"].values():
        assert [p["n"] for p in points] == [256, 1024]
        assert all(p["ms"] >= 0 and p["bytes"] > 0 for p in points)
    rows = scaling.exponents(results)
    assert len(rows) == len(names) and all(r["memory_top3"] > 0.5 for r in rows)  # memory grows with N
