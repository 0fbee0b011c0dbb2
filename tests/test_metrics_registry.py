"""The metric registry: every entry describes itself completely, and a new metric is one entry."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from specreg.experiments.evaluate import evaluate
from specreg.metrics import registry
from specreg.metrics.registry import DIRECTIONS, KINDS, METRICS, Context, Key, Metric, find_key, labels


def test_every_entry_is_complete_and_consistent():
    seen = set()
    for name, m in METRICS.items():
        assert m.name == name and m.keys and set(m.kinds) <= set(KINDS) and set(m.default_for) <= set(m.kinds)
        assert m.primary == m.keys[0].name
        for k in m.keys:
            assert k.name not in seen, f"two metrics write {k.name}"
            seen.add(k.name)
            assert k.direction in DIRECTIONS and k.label
            if k.distance:  # a distance between two sets: smaller is closer
                assert k.direction == "lower"
            assert find_key(k.name) is k
    assert registry.default_metrics("image") == ("lsd", "lsd_low", "lsd_mid", "lsd_high", "domain_fd", "domain_kid")


@pytest.mark.parametrize("kind", KINDS)
def test_every_label_renders_for_the_context(kind):
    ctx = Context(kind, 2 if kind == "image" else 1, 10, 10, (1, 8, 8) if kind == "image" else (1, 64),
                  feature_extractor=lambda x: x.flatten(1))
    out = labels(registry.metric_names(kind), ctx)
    assert all(out.values()) and "{" not in "".join(out.values())


def test_the_mid_band_against_numpy():
    """lsd_mid: RMS and mean of log10(P/Q) over the rings 1/6 <= f < 1/3 of the full fft2 grid."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 1, 16, 16, generator=g)
    r = torch.randn(30, 1, 16, 16, generator=g).cumsum(-1) / 4

    def radial(a: np.ndarray) -> np.ndarray:
        p = (np.abs(np.fft.fft2(a, norm="ortho")) ** 2).mean(axis=(0, 1))
        k = np.fft.fftfreq(16) * 16
        ring = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
        return np.array([p[ring == i].mean() for i in range(9)])

    d = np.log10(radial(x.numpy().astype(np.float64))) - np.log10(radial(r.numpy().astype(np.float64)))
    f = np.arange(9) / 16
    d = d[(f >= 1 / 6) & (f < 1 / 3)]
    res = evaluate(x, r, metrics=["lsd_mid"], progress=False)["metrics"]
    assert res["lsd_mid"] == pytest.approx(np.sqrt((d**2).mean()), rel=1e-6)  # float32 FFTs
    assert res["lsd_mid_bias"] == pytest.approx(d.mean(), rel=1e-6)


class _MeanGap:
    """|mean(samples) − mean(reference)|, streamed."""

    def __init__(self, ctx: Context) -> None:
        self.sums = {True: [0.0, 0], False: [0.0, 0]}

    def update(self, batch) -> None:
        self.sums[batch.real][0] += float(batch.x.double().sum())
        self.sums[batch.real][1] += batch.x.numel()

    def compute(self) -> dict[str, float]:
        means = {k: s / n for k, (s, n) in self.sums.items()}
        return {"mean_gap": abs(means[False] - means[True])}


def test_a_new_metric_is_one_entry(monkeypatch):
    """Registering one Metric is all it takes: evaluate computes it, its name is accepted,
    and ranking reads its direction from the entry."""
    entry = Metric("mean_gap", ("image",), (Key("mean_gap", "lower", "gap between the means", True),), _MeanGap)
    monkeypatch.setitem(METRICS, "mean_gap", entry)
    x, r = torch.rand(9, 1, 8, 8), torch.rand(13, 1, 8, 8) + 0.5
    res = evaluate(x, r, metrics=["mean_gap", "lsd"], batch_size=4, progress=False)
    assert res["metrics"]["mean_gap"] == pytest.approx(abs(float(x.double().mean() - r.double().mean())))
    assert res["labels"]["mean_gap"] == "gap between the means"
    assert find_key("mean_gap").score(-2.0) == -2.0 and registry.metric_of("mean_gap") is entry


def test_a_metric_the_data_cannot_support_is_skipped_by_default_and_refused_by_name(monkeypatch):
    entry = replace(METRICS["lsd"], name="picky", keys=(Key("picky", "lower", "x"),), default_for=("image",),
                    problem=lambda ctx: "picky needs more")
    monkeypatch.setitem(METRICS, "picky", entry)
    x = torch.rand(4, 1, 8, 8)
    res = evaluate(x, x, progress=False)
    assert res["skipped"]["picky"] == "picky needs more" and "picky" not in res["metrics"]
    with pytest.raises(ValueError, match="picky needs more"):
        evaluate(x, x, metrics=["picky"], progress=False)
