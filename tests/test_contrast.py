"""The difference of differences between two studies (specreg.experiments.contrast),
against scipy's paired and Welch t intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from specreg.experiments.contrast import contrast, further, render
from specreg.experiments.results import StudyResults


def study(values: dict[str, dict[str, list[float]]], floor: dict[str, float]) -> StudyResults:
    """A results object with rows {name: {key: per-seed values}}, 'base' the baseline."""
    rows = {name: {"variant": {"name": name, "baseline": None if name == "base" else "base"},
                   "stats": {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "n": len(v),
                                 "by_seed": {str(s): x for s, x in enumerate(v)}} for k, v in keys.items()}}
            for name, keys in values.items()}
    return StudyResults.from_dict({"study": {"baseline": "base", "variants": []}, "columns": ["lsd", "lsd_high_bias"],
                                   "rows": rows, "floor": {"metrics": floor}})


def test_deltas_match_scipy_paired_and_welch_intervals():
    rng = np.random.default_rng(0)
    b32, l32 = rng.normal(0.1, 0.01, 3), rng.normal(0.1, 0.01, 3)
    b64, l64 = rng.normal(0.2, 0.01, 4), rng.normal(0.15, 0.01, 4)
    bias = {"base": [0.05, 0.06, 0.04], "loss": [-0.02, -0.01, -0.03]}
    a = study({"base": {"lsd": list(b32), "lsd_high_bias": bias["base"]},
               "loss": {"lsd": list(l32), "lsd_high_bias": bias["loss"]}}, {"lsd": 0.001})
    b = study({"base": {"lsd": list(b64), "lsd_high_bias": bias["base"]},
               "loss": {"lsd": list(l64), "lsd_high_bias": bias["loss"]}}, {"lsd": 0.001})
    cells = {c.key: c for c in contrast(a, b) if not c.signed}
    lsd = cells["lsd"]
    for got, x, y in ((lsd.a, l32, b32), (lsd.b, l64, b64)):
        ci = stats.ttest_rel(x, y).confidence_interval()
        assert got.mean == pytest.approx(np.mean(x - y))
        assert got.half_width == pytest.approx((ci.high - ci.low) / 2)
        assert got.p == pytest.approx(stats.ttest_rel(x, y).pvalue)
    w = stats.ttest_ind(l64 - b64, l32 - b32, equal_var=False).confidence_interval()
    assert lsd.contrast.mean == pytest.approx(np.mean(l64 - b64) - np.mean(l32 - b32))
    assert lsd.contrast.half_width == pytest.approx((w.high - w.low) / 2)
    assert lsd.contrast.p == pytest.approx(stats.ttest_ind(l64 - b64, l32 - b32, equal_var=False).pvalue)
    family = [c.b for c in cells.values()]  # the Δ_B of every cell: one family under BH
    assert [d.p_adj for d in family] == pytest.approx(list(stats.false_discovery_control([d.p for d in family])))
    assert lsd.supports  # helps at 64 (−0.05) and more than at 32 (≈ 0)
    # a signed key is scored by its size: |bias| 0.05 → 0.02 is a gain of 0.03, equal in both
    bias_cell = cells["lsd_high_bias"]
    assert bias_cell.b.mean == pytest.approx(-0.03) and bias_cell.contrast.mean == pytest.approx(0.0)
    assert not bias_cell.supports
    assert "| loss | lsd |" in render(list(cells.values()), "32×32", "64×64")


def test_signed_shifts_of_a_bias_are_tested_on_raw_values_in_families_of_their_own():
    # the bias crosses 0 in both studies: its size barely changes (0.05 → 0.03 and → 0.05),
    # but the row moves the spectrum down by 0.08 at A and by 0.15 at B
    base = [0.05, 0.06, 0.04]
    a = study({"base": {"lsd": [0.1, 0.1, 0.1], "lsd_high_bias": base},
               "loss": {"lsd": [0.1, 0.1, 0.1], "lsd_high_bias": [-0.03, -0.021, -0.04]}}, {"lsd": 0.001})
    b = study({"base": {"lsd": [0.1, 0.1, 0.1], "lsd_high_bias": base},
               "loss": {"lsd": [0.1, 0.1, 0.1], "lsd_high_bias": [-0.1, -0.092, -0.11]}}, {"lsd": 0.001})
    b.floor["spread"] = {"lsd_high_bias": 0.01}
    cells = contrast(a, b)
    shift = next(c for c in cells if c.signed)
    size = next(c for c in cells if c.key == "lsd_high_bias" and not c.signed)
    assert [c.key for c in cells if c.signed] == ["lsd_high_bias"]  # lsd has no sign
    la, lb = np.array([-0.03, -0.021, -0.04]), np.array([-0.1, -0.092, -0.11])
    assert shift.a.mean == pytest.approx(np.mean(la - base)) and shift.b.mean == pytest.approx(np.mean(lb - base))
    assert shift.b.p == pytest.approx(stats.ttest_rel(lb, base).pvalue)
    assert shift.contrast.p == pytest.approx(stats.ttest_ind(lb - base, la - base, equal_var=False).pvalue)
    assert shift.b.p_adj == pytest.approx(shift.b.p)  # one cell: a family of its own, not the score cells'
    assert size.b.mean == pytest.approx(np.mean(np.abs(lb)) - np.mean(base))
    assert further(shift) and not further(size) and not shift.supports
    text = render(cells, "A", "B", signed=True)
    assert "| further |" in text and "| loss | lsd_high_bias |" in text and text.rstrip().endswith("| yes |")
    assert "| loss | lsd |" not in text


def test_a_change_inside_twice_the_floor_supports_nothing():
    a = study({"base": {"lsd": [0.1, 0.1, 0.1]}, "loss": {"lsd": [0.1, 0.1, 0.1]}}, {"lsd": 0.01})
    b = study({"base": {"lsd": [0.2, 0.21, 0.2]}, "loss": {"lsd": [0.19, 0.2, 0.19]}}, {"lsd": 0.01})
    (cell,) = contrast(a, b, ["lsd"])
    assert cell.b.mean == pytest.approx(-0.01) and cell.b.p_adj < 0.05 and cell.floor == pytest.approx(0.02)
    assert not cell.supports  # significant, but inside twice the noise floor


def test_write_contrast_reads_two_result_folders(tmp_path):
    from specreg.experiments.contrast import write_contrast

    a = study({"base": {"lsd": [0.1, 0.11, 0.1]}, "loss": {"lsd": [0.1, 0.11, 0.1]}}, {"lsd": 0.001})
    b = study({"base": {"lsd": [0.2, 0.21, 0.2]}, "loss": {"lsd": [0.1, 0.11, 0.1]}}, {"lsd": 0.001})
    only = study({"base": {"lsd": [0.1, 0.1]}}, {"lsd": 0.001})
    for name, res in (("a", a), ("b", b), ("c", only)):
        res.study["name"] = f"study_{name}"
        res.save(tmp_path / name / "results.json")
    text = write_contrast(tmp_path / "a", tmp_path / "b").read_text(encoding="utf-8")
    assert "# study_b against study_a" in text and "| loss | lsd | +0 ± 0 | -0.1 ± " in text
    assert text.rstrip().endswith("| yes |")  # the keys neither study measured are left out
    cells = json.loads((tmp_path / "b" / "contrast.json").read_text())["cells"]
    assert [(c["row"], c["key"], c["supports"]) for c in cells] == [("loss", "lsd", True)]
    with pytest.raises(ValueError, match="share no row"):
        write_contrast(tmp_path / "c", tmp_path / "b")
