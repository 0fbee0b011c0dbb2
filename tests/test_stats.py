"""Study statistics: Benjamini–Hochberg adjusted p-values against the step-up rule and
scipy, and the marking rule on synthetic cells with known effects."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specreg.experiments.results import Row, StudyResults
from specreg.experiments.stats import FDR_Q, Stat, bh_adjust, practical_floor


def step_up(p: list[float], q: float) -> set[int]:
    """The BH step-up rule as written (Benjamini & Hochberg 1995): reject the k smallest
    p-values, k the largest i with p_(i) ≤ i·q/m."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    m, k = len(p), 0
    for rank, i in enumerate(order, 1):
        if p[i] <= rank * q / m:
            k = rank
    return set(order[:k])


def test_bh_adjusted_p_values_match_scipy_and_the_step_up_rule():
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(1)
    for _ in range(300):
        m = int(rng.integers(1, 40))
        p = np.concatenate([rng.uniform(0, 1, m), rng.uniform(0, 1e-3, int(rng.integers(0, 5)))]).tolist()
        adj = bh_adjust(p)
        assert adj == pytest.approx(false_discovery_control(p, method="bh").tolist())
        for q in (0.01, 0.05, 0.2):
            assert {i for i, a in enumerate(adj) if a <= q} == step_up(p, q)
    assert bh_adjust([]) == []


def study(values: dict[str, dict[str, list[float]]], floor: dict[str, float],
          spread: dict[str, float] | None = None) -> StudyResults:
    """A study from per-seed values {variant: {key: [seed 0, 1, …]}}; the first variant is
    every other's baseline."""
    names = list(values)
    rows = {n: Row({"name": n, "baseline": None if n == names[0] else names[0]},
                   {k: Stat.of(dict(enumerate(v))) for k, v in keys.items()}) for n, keys in values.items()}
    cols = list(values[names[0]])
    return StudyResults(study={"seeds": [0, 1, 2]}, columns=cols, rows=rows,
                        floor={"metrics": floor, **({"spread": spread} if spread else {})})


def synthetic(rng: np.random.Generator, effects: dict[str, float], n_variants: int, seeds: int = 3,
              noise: float = 0.01) -> StudyResults:
    """Variants whose per-seed values are the baseline's + effect + noise (a shared seed
    effect, as a seed fixes data order and sampling noise)."""
    seed_effect = {k: rng.normal(0, 0.05, seeds) for k in effects}
    base = {k: 1.0 + seed_effect[k] for k in effects}
    values = {"base": {k: v.tolist() for k, v in base.items()}}
    for i in range(n_variants):
        values[f"v{i}"] = {k: (base[k] + e + rng.normal(0, noise, seeds)).tolist() for k, e in effects.items()}
    return study(values, floor={"lsd": 0.001, "lsd_high": 0.001, "lsd_high_bias": 0.0}, spread={"lsd_high_bias": 0.01})


def test_a_null_family_marks_about_nothing_and_strong_effects_survive():
    rng = np.random.default_rng(2)
    null_marks, raw_hits = 0, 0
    for _ in range(40):  # 40 studies × 30 cells with no effect
        res = synthetic(rng, {"lsd": 0.0, "lsd_high": 0.0, "lsd_high_bias": 0.0}, n_variants=10)
        cells = res.cells()
        assert len(cells) == 30 and all(c["p_adj"] >= c["p"] for c in cells)
        null_marks += sum(c["marked"] for c in cells)
        raw_hits += sum(c["p"] < 0.05 for c in cells)
    # p < 0.05 alone: ~5 % of 1200 cells; after BH the family-wise rate under the null is ≤ q
    assert raw_hits > 30 and null_marks <= 0.05 * 40
    res = synthetic(rng, {"lsd": 0.2, "lsd_high": -0.2, "lsd_high_bias": 0.2}, n_variants=10)
    assert all(c["marked"] for c in res.cells())


def test_a_consistent_shift_below_the_practical_floor_is_not_marked():
    """The latent study's case: +0.0007 decades on every seed is certain (p ≈ 0, it
    survives BH) but smaller than the bias's real-vs-real spread, so it is not marked; the
    same for a distance within twice its noise floor."""
    res = study({"base": {"lsd_high_bias": [0.10, 0.20, 0.30], "lsd": [1.0, 1.1, 1.2]},
                 "tiny": {"lsd_high_bias": [0.1007, 0.2007, 0.3007], "lsd": [1.003, 1.1031, 1.2029]},
                 "big": {"lsd_high_bias": [0.15, 0.25, 0.35], "lsd": [1.3, 1.4, 1.5]}},
                floor={"lsd": 0.01, "lsd_high_bias": -0.002}, spread={"lsd_high_bias": 0.011})
    cells = {(c["variant"], c["key"]): c for c in res.cells()}
    tiny = cells[("tiny", "lsd_high_bias")]
    assert tiny["p_adj"] <= FDR_Q and tiny["practical_floor"] == 0.011 and not tiny["marked"]
    assert cells[("tiny", "lsd")]["p_adj"] <= FDR_Q and cells[("tiny", "lsd")]["practical_floor"] == 0.02
    assert not cells[("tiny", "lsd")]["marked"]
    assert cells[("big", "lsd_high_bias")]["marked"] and cells[("big", "lsd")]["marked"]
    assert res.versus_baseline("big", "lsd")[2] and not res.versus_baseline("tiny", "lsd")[2]
    # results.json keeps p, adjusted p and both thresholds of every cell
    sig = res.to_dict()["significance"]
    assert sig["q"] == FDR_Q and len(sig["cells"]) == 4
    assert {"p", "p_adj", "practical_floor", "marked"} <= set(sig["cells"][0])


def test_practical_floor_by_kind_of_key():
    assert practical_floor("lsd", 0.01) == (0.02, "2 × noise floor")  # a distance
    assert practical_floor("lsd_high_bias", -0.004, 0.011) == (0.011, "real-vs-real spread")
    assert practical_floor("lsd_high_bias", -0.004) == (0.004, "|real vs real|")  # an old study: one draw
    assert practical_floor("pesq", 3.0) == (0.0, "none")  # paired, no real-vs-real value


def test_trend_matches_numpy_polyfit_and_student_t():
    """The fitted change b·S, its 95 % half-width from the residual scatter and p, against an
    independent least-squares fit (numpy's polyfit, covariance scaled by the residuals over
    n − 2) and Student's t from scipy."""
    from scipy.stats import t as student

    from specreg.experiments.stats import trend

    steps = [12000, 14000, 16000, 18000, 20000]
    values = [0.0106, 0.0244, 0.0151, 0.0234, 0.0067]
    (b, _), cov = np.polyfit(steps, values, 1, cov=True)
    se, span = math.sqrt(cov[0, 0]), 8000
    got = trend(steps, values)
    assert got.n == 5 and got.change == pytest.approx(b * span, rel=1e-9)
    assert got.half_width == pytest.approx(student.ppf(0.975, 3) * se * span, rel=1e-6)
    assert got.p == pytest.approx(2 * student.sf(abs(b / se), 3), rel=1e-6)
    residuals = np.array(values) - np.polyval(np.polyfit(steps, values, 1), steps)
    assert got.scatter == pytest.approx(math.sqrt((residuals**2).sum() / 3), rel=1e-9)
    assert got.scatter > 0.005  # this curve's points stray well beyond a 0.0049 sampling sd
    exact = trend([0, 1, 2, 3], [1.0, 0.5, 0.0, -0.5])  # no scatter: the slope is certain
    assert exact.change == pytest.approx(-1.5) and exact.half_width == pytest.approx(0, abs=1e-12)
    assert exact.p < 1e-9 and exact.scatter == pytest.approx(0, abs=1e-12)
    assert trend([0, 1], [1.0, 0.0]) is None  # two points leave no scatter to judge by
    with pytest.raises(ValueError, match="steps and values: 3 against 2 points"):
        trend([0, 1, 2], [1.0, 0.0])


def test_point_spread_groups_by_checkpoint_and_sample_count():
    """One curve point's sampling noise: per (step, n) the mean and the n − 1 standard
    deviation over sample seeds, against the standard library; a key a group lacks is left
    out, and a group of one seed has no standard deviation."""
    import statistics

    from specreg.experiments.stats import point_spread

    lsd = {1000: 0.0201, 1: 0.0262, 2: 0.0155, 3: 0.0198}
    entries = [{"step": 8000, "seed": s, "n": 256, "lsd_high": v, "lsd": 2 * v} for s, v in lsd.items()]
    entries += [{"step": 2000, "seed": 1, "n": 256, "lsd_high": 0.05, "lsd": 0.1},
                {"step": 8000, "seed": 1, "n": 64, "lsd_high": 0.03}]
    got = point_spread(entries, ["lsd", "lsd_high", "fid"])
    assert [(g["step"], g["n"]) for g in got] == [(2000, 256), (8000, 64), (8000, 256)]
    one, few, full = got
    assert one["sd"] == {"lsd": None, "lsd_high": None} and one["mean"]["lsd_high"] == 0.05
    assert set(few["mean"]) == {"lsd_high"}  # no lsd measured there, no fid anywhere
    assert full["seeds"] == [1, 2, 3, 1000]
    assert full["mean"]["lsd_high"] == pytest.approx(statistics.fmean(lsd.values()))
    assert full["sd"]["lsd_high"] == pytest.approx(statistics.stdev(lsd.values()))
    assert full["sd"]["lsd"] == pytest.approx(2 * statistics.stdev(lsd.values()))
    assert point_spread([], ["lsd"]) == []
