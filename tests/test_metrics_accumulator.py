"""One accumulator protocol for every metric: states declared with add_state, merge and
sync derived from them, and the keys each registry entry declares checked at compute."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from specreg.metrics.accumulator import Accumulator
from specreg.metrics.evaluation import evaluate
from specreg.metrics.registry import METRICS, Batch, Context, Key, Metric, check_metrics, metric_names


def _ctx(n: int, m: int) -> Context:
    return Context("image", 2, n, m, (1, 16, 16), feature_extractor=lambda x: x.flatten(1)[:, :6].double(),
                   kid_subsets=5, ndb_bins=4)


def _stream(name: str, ctx: Context, x: torch.Tensor, r: torch.Tensor, parts: int) -> dict[str, float]:
    """Split both sets over ``parts`` accumulators ("processes"), merge them, compute."""
    accs = [METRICS[name].make(ctx) for _ in range(parts)]
    for real, data in ((False, x), (True, r)):
        for i, chunk in enumerate(torch.tensor_split(data, parts)):
            accs[i].update(Batch(chunk, real, ctx))
    for other in accs[1:]:
        accs[0].merge(other)
    return METRICS[name].results(accs[0])


@pytest.mark.parametrize("name", ["lsd", "lsd_high", "domain_fd", "domain_kid", "ndb"])
def test_merged_accumulators_equal_one_pass(name):
    """Three merged states give what one accumulator that saw everything gives (and what
    the engine gives), for sums (spectra, Fréchet sums) and concatenated states (KID, NDB)."""
    g = torch.Generator().manual_seed(1)
    x, r = torch.rand(30, 1, 16, 16, generator=g) * 2 - 1, torch.rand(40, 1, 16, 16, generator=g).cumsum(-1) / 8
    ctx = _ctx(30, 40)
    one, merged = _stream(name, ctx, x, r, 1), _stream(name, ctx, x, r, 3)
    assert list(merged) == list(one)
    for key in one:
        assert merged[key] == pytest.approx(one[key], rel=1e-9, abs=1e-12, nan_ok=True)
    engine = evaluate(x, r, metrics=[name], feature_extractor=ctx.feature_extractor, kid_subsets=5, ndb_bins=4,
                      batch_size=7, progress=False, floor=False)["metrics"]
    for key in one:
        assert engine[key] == pytest.approx(one[key], rel=1e-9, abs=1e-12, nan_ok=True)


class _Sums(Accumulator):
    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", None, "sum")
        self.add_state("count", {True: 0, False: 0}, "sum")
        self.add_state("items", [], "cat")

    def update(self, x: np.ndarray, real: bool) -> None:
        self.total = x.sum(0) if self.total is None else self.total + x.sum(0)
        self.count[real] += x.shape[0]
        self.items.append(x)

    def compute(self) -> tuple[np.ndarray, dict[bool, int], int]:
        return self.total, self.count, len(self.items)


def test_the_protocol_merges_resets_and_refuses_mismatches():
    a, b = _Sums(), _Sums()
    a.update(np.ones((2, 3)), True)
    b.update(np.full((4, 3), 2.0), False)
    total, count, items = a.merge(b).compute()
    np.testing.assert_array_equal(total, np.full(3, 10.0))
    assert count == {True: 2, False: 4} and items == 2
    b.update(np.ones((1, 3)), True)  # merge copied b's state: a does not change with it
    assert a.compute()[1] == {True: 2, False: 4}
    a.reset()
    assert a.compute() == (None, {True: 0, False: 0}, 0)
    c = _Sums()
    c.update(np.ones((1, 4)), True)
    a.update(np.ones((1, 3)), True)
    with pytest.raises(ValueError, match="cannot be pooled"):
        a.merge(c)
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(METRICS["lsd"].make(_ctx(4, 4)))
    with pytest.raises(ValueError, match="reduce"):
        a.add_state("x", 0, "mean")


def test_sync_in_a_one_process_group_keeps_the_values(tmp_path):
    """sync() all-reduces the sum states and gathers the cat states; with one process (gloo)
    every value must come back unchanged, ints as ints."""
    import torch.distributed as dist

    from specreg.metrics.frechet import KID, FrechetDistance
    from specreg.metrics.spectrum import SpectrumMetric

    rng = np.random.default_rng(0)
    fd, kid, spec, sums = FrechetDistance(), KID(subsets=3, subset_size=5, seed=0), SpectrumMetric(), _Sums()
    for real in (True, False):
        f = rng.standard_normal((20, 3))
        fd.update(f, real=real)
        kid.update(f, real=real)
        sums.update(f, real)
    spec.update(torch.randn(5, 1, 8, 8))
    before = (fd.compute(), kid.compute(), spec.compute()[1].clone(), sums.compute())
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        for acc in (fd, kid, spec, sums):
            acc.sync()
    finally:
        dist.destroy_process_group()
    assert fd.compute() == pytest.approx(before[0], rel=1e-12)
    assert kid.compute() == before[1]
    torch.testing.assert_close(spec.compute()[1], before[2], rtol=0, atol=0)
    assert isinstance(spec.n, int) and spec.n == 5
    np.testing.assert_array_equal(sums.compute()[0], before[3][0])
    assert sums.compute()[1] == before[3][1] and all(isinstance(v, int) for v in sums.compute()[1].values())


class _Writes:
    def __init__(self, ctx: Context, out: dict[str, float]) -> None:
        self.out = out

    def update(self, batch: Batch) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return self.out


@pytest.mark.parametrize("out, word", [({"gap": 1.0, "gap_extra": 2.0}, "extra"), ({}, "missing")])
def test_an_accumulator_must_write_the_keys_its_entry_declares(monkeypatch, out, word):
    entry = Metric("gap", ("image",), (Key("gap", "lower", "a gap"),), lambda ctx: _Writes(ctx, out))
    monkeypatch.setitem(METRICS, "gap", entry)
    x = torch.rand(6, 1, 8, 8)
    with pytest.raises(ValueError, match=rf"metric 'gap'.*{word} \['gap"):
        evaluate(x, x, metrics=["gap"], progress=False)


def test_optional_keys_may_be_left_out(monkeypatch):
    entry = Metric("gap", ("image",), (Key("gap", "lower", "a gap"), Key("gap_floor", "", "floor", floor_of="gap",
                                                                          optional=True)),
                   lambda ctx: _Writes(ctx, {"gap": 1.0}))
    monkeypatch.setitem(METRICS, "gap", entry)
    x = torch.rand(6, 1, 8, 8)
    assert evaluate(x, x, metrics=["gap"], progress=False)["metrics"] == {"gap": 1.0}
    monkeypatch.setitem(METRICS, "gap", replace(entry, make=lambda ctx: _Writes(ctx, {"gap": 1.0, "gap_floor": 4.0})))
    res = evaluate(x, x, metrics=["gap"], progress=False)
    assert res["floors"] == {"gap": 4.0} and res["within_floor"] == ["gap"]


def test_peak_metrics_apply_only_to_data_with_spectral_lines():
    needs = [n for n, m in METRICS.items() if m.needs_peaks]
    assert needs and not set(needs) & set(metric_names("image", peaks=False))
    assert set(needs) <= set(metric_names("image", peaks=True)) == set(metric_names("image"))
    with pytest.raises(ValueError, match=rf"evaluation.metrics contains '{needs[0]}', which is not measured"):
        check_metrics([needs[0]], "image", peaks=False, arg="evaluation.metrics",
                      data="measured for these {kind} data")
