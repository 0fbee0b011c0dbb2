"""The typed results object: committed reports re-render from their results.json with the
same numbers, and an old results.json loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from specreg.experiments.report import render, results_table
from specreg.experiments.results import StudyResults

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
COMMITTED = sorted(p.parent for p in RESULTS.glob("*/results.json"))


def table(lines: list[str]) -> dict[str, list[str]]:
    """variant (or first cell) → cells, with bold and † stripped: the numbers as printed."""
    rows = {}
    for line in lines:
        if line.startswith("| ") and not line.startswith("| variant"):
            cells = [re.sub(r"\*\*|\s*†", "", c).strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].split(" — ")[0]] = cells
    return rows


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_reports_rerender_with_the_same_numbers(folder, tmp_path):
    """Every number of a committed results table (means, stds, floor, seed spread) comes back
    from its results.json (the † marks: next test)."""
    res = StudyResults.load(folder / "results.json")
    text = (folder / "report.md").read_text()
    section = text[text.index("## Results"):]
    section = section[:section.index("\n## ", 3)] if "\n## " in section[3:] else section
    old = table(section.splitlines())
    new = table(results_table(res))
    assert set(new) == set(old)
    for name, cells in new.items():
        assert cells[3:] == old[name][3:], name
    text = render(res, tmp_path)  # the whole report renders from the old file
    assert "## Results" in text and res.command in text


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_reports_carry_the_current_marks_and_tests(folder):
    """Every committed report was re-rendered with the current rule: its † marks are the
    cells the rule marks, its results.json keeps those tests (p, BH-adjusted p, practical
    floor) and the real-vs-real spread of its signed keys."""
    res = StudyResults.load(folder / "results.json")
    raw = json.loads((folder / "results.json").read_text())
    assert raw["significance"] == json.loads(json.dumps(res.significance()))
    signed = [k for k in res.columns if k.endswith("_bias")]
    assert all(k in res.floor.get("spread", {}) for k in signed)
    text = (folder / "report.md").read_text()
    section = text[text.index("## Results"):]
    section = section[:section.index("\n## ", 3)]
    marked = set()
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| variant"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # "\|" is in a label
            marked |= {(cells[0].split(" — ")[0], k) for k, c in zip(res.columns, cells[3:]) if c.endswith("†")}
    assert marked == {(c["variant"], c["key"]) for c in res.cells() if c["marked"]}
    assert "Benjamini–Hochberg" in text


def test_update_marks_rewrites_the_tables_and_keeps_the_rest():
    """An old report whose results.json lacks labels and curves: the marks follow the
    current rule, a Tests section appears, every other section stays as it was."""
    from specreg.experiments.report_marks import update_marks

    folder = RESULTS / "images_fashion"
    res = StudyResults.load(folder / "results.json")
    old = ("# t\n\n## Results\n\nold rule text\n\n| variant | protocol |\n|---|---|\n| stale † |\n\n"
           "- **lsd**: a label kept\n\n## Training curves\n\ncurves kept\n\n## Reproduce\n\ncmd\n")
    new = update_marks(old, res)
    assert "old rule text" not in new and "Benjamini–Hochberg" in new and "stale" not in new
    assert "a label kept" in new and "curves kept" in new and new.endswith("cmd\n")
    assert new.index("## Results") < new.index("## Tests") < new.index("## Training curves")
    assert update_marks(new, res) == new  # idempotent: a second pass changes nothing


def test_results_round_trip_through_json(tmp_path):
    res = StudyResults.load(COMMITTED[0] / "results.json")
    res.save(tmp_path / "r.json")
    assert StudyResults.load(tmp_path / "r.json").to_dict() == res.to_dict()


def test_a_file_that_is_not_results_is_refused(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not the results.json of a study"):
        StudyResults.load(tmp_path / "x.json")


def test_report_only_on_a_0_1_results_file_says_what_it_lacks(tmp_path):
    """A results.json of specreg 0.1 holds the tables only: --report-only renders them and
    says, in one warning, how to rebuild the rest from the runs."""
    import shutil
    import warnings

    from specreg.experiments.compare import rerender

    old = next(f for f in COMMITTED if "timing" not in json.loads((f / "results.json").read_text()))
    shutil.copy(old / "results.json", tmp_path / "results.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "## Results" in rerender(tmp_path).read_text()
    assert len(caught) == 1 and "written by specreg 0.1" in str(caught[0].message)
    new = next(f for f in COMMITTED if "timing" in json.loads((f / "results.json").read_text()))
    shutil.copy(new / "results.json", tmp_path / "results.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rerender(tmp_path)
    assert not [w for w in caught if "specreg 0.1" in str(w.message)]


def test_plateau_verdicts_against_twice_the_curve_floor():
    """The last 20 % of a run's steps (at least one interval) decides: a gain beyond twice the
    curve's floor is "improving", a loss beyond it "worsening", else "flat"; a KID whose floor
    is negative and a signed bias have no noise scale and get no verdict."""
    from specreg.experiments.report import plateau_table

    def curve(run, steps, values):
        return {"run": run, "variant": run, "seed": 0,
                "points": [{"step": s, "metrics": dict(zip(("lsd", "domain_fd", "domain_kid", "lsd_high_bias"), v))}
                           for s, v in zip(steps, values)]}

    steps = [2000, 4000, 6000, 8000, 10000]
    # lsd floor 0.01: the window is 8000 → 10000 (20 % of 10 000 steps)
    improving = curve("improving", steps, [(0.30, 50, 9, 0.3), (0.2, 30, 5, 0.2), (0.1, 20, 3, 0.1),
                                           (0.08, 15, 2, 0.05), (0.05, 9, 1, 0.01)])
    flat = curve("flat", steps, [(0.30, 50, 9, 0.3), (0.2, 30, 5, 0.2), (0.1, 20, 3, 0.1), (0.061, 15, 2, 0.05),
                                 (0.05, 14, 1, 0.01)])
    worse = curve("worse", steps, [(0.30, 50, 9, 0.3), (0.2, 30, 5, 0.2), (0.1, 20, 3, 0.1), (0.04, 15, 2, 0.05),
                                   (0.07, 25, 1, 0.01)])
    # a coarse curve: one interval (50 % of the run) is the window
    coarse = curve("coarse", [1000, 2000], [(0.3, 40, 2, 0.1), (0.25, 39, 1, 0.0)])
    res = StudyResults(study={"evaluation": {}}, columns=["lsd", "domain_fd", "domain_kid", "lsd_high_bias"],
                       rows={}, floor={"curve_metrics": {"lsd": 0.01, "domain_fd": 2.0, "domain_kid": -0.5,
                                                         "lsd_high_bias": 0.003}},
                       curves=[improving, flat, worse, coarse])
    got = {(e["run"], e["key"]): e for e in res.plateaus()}
    assert {k for _, k in got} == {"lsd", "domain_fd"}  # no verdict for the KID and the bias
    assert got[("improving", "lsd")]["verdict"] == "improving"  # 0.03 > 0.02
    assert got[("improving", "lsd")]["gain"] == pytest.approx(0.03)
    assert (got[("improving", "lsd")]["from_step"], got[("improving", "lsd")]["to_step"]) == (8000, 10000)
    assert got[("improving", "domain_fd")]["verdict"] == "improving"  # 6 > 4
    assert got[("flat", "lsd")]["verdict"] == "flat"  # 0.011 ≤ 0.02
    assert got[("flat", "domain_fd")]["verdict"] == "flat"  # 1 ≤ 4
    assert got[("worse", "lsd")]["verdict"] == "worsening" and got[("worse", "domain_fd")]["gain"] == -10
    assert got[("coarse", "lsd")]["from_step"] == 1000 and got[("coarse", "lsd")]["verdict"] == "improving"
    assert got[("coarse", "domain_fd")]["verdict"] == "flat"
    lines = plateau_table(res)
    assert sum("**still improving**" in line for line in lines) == 3 and len(lines) == 2 + len(got)


def test_the_strict_rule_holds_the_last_quarter_to_the_floor_itself():
    """A pretraining's stricter rule: flat by the 20 % verdict *and* the gain over the last 25 %
    (at least one interval) within f itself: a flat 20 % verdict in LSD can hide a gain beyond f
    in the last quarter (the 64×64 texture pretraining of 12 000 steps had such a high band)."""
    from specreg.experiments.report import plateau_table

    steps = list(range(2000, 20001, 2000))
    # 20 %: 16 000 → 20 000 gains 0.002; 25 %: 14 000 (the last point ≤ 15 000) → gains 0.007
    lsd = [0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.036, 0.031, 0.030, 0.029]
    fd = [300.0, 250.0, 200.0, 160.0, 130.0, 110.0, 92.0, 91.8, 91.6, 91.5]  # both windows within bounds
    pts = [{"step": s, "metrics": {"lsd": a, "domain_fd": b}} for s, a, b in zip(steps, lsd, fd)]
    res = StudyResults(study={"evaluation": {}}, columns=["lsd", "domain_fd"], rows={},
                       floor={"curve_metrics": {"lsd": 0.0068, "domain_fd": 22.5}},
                       curves=[{"run": "_pretrain/k/seed0", "variant": "_pretrain", "seed": 0, "points": pts}])
    got = {e["key"]: e for e in res.plateaus()}
    assert got["lsd"]["from_step"] == 16000 and got["lsd"]["verdict"] == "flat"
    assert got["lsd"]["strict_from_step"] == 14000 and got["lsd"]["strict_gain"] == pytest.approx(0.007)
    assert got["lsd"]["strict"] is False  # 0.007 > 0.0068
    assert got["domain_fd"]["strict_gain"] == pytest.approx(0.5) and got["domain_fd"]["strict"] is True
    # an improving verdict is never strict, whatever the quarter gained
    rising = [{"step": s, "metrics": {"lsd": 0.2 - 0.01 * i, "domain_fd": 1.0}} for i, s in enumerate(steps)]
    res.curves = [{"run": "r", "variant": "r", "seed": 0, "points": rising}]
    e = next(e for e in res.plateaus() if e["key"] == "lsd")
    assert e["verdict"] == "improving" and e["strict"] is False
    res.curves = [{"run": "_pretrain/k/seed0", "variant": "_pretrain", "seed": 0, "points": pts}]
    table = "\n".join(plateau_table(res))
    assert "from 14000: 0.007 > 0.0068" in table and "from 14000: 0.5 ≤ 22" in table


def test_the_trend_reading_judges_the_last_40_percent_by_the_points_own_scatter():
    """A curve that swings from checkpoint to checkpoint by more than the floor (the 64×64
    texture pretraining's high band of 20 000 steps) is "unresolved", not flat, however a
    single start point falls; a steady fall is "improving"; a curve whose fitted change and
    interval sit within ± f is "flat", even a resolved fall smaller than f; fewer than three
    points in the window give no reading."""
    import numpy as np

    from specreg.experiments.report import plateau_table

    steps = list(range(2000, 20001, 2000))
    swinging = [0.0381, 0.0173, 0.0089, 0.0157, 0.0106, 0.0244, 0.0151, 0.0234, 0.0067, 0.0108]
    falling = [0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.045, 0.04, 0.035, 0.03]
    settled = [0.2, 0.15, 0.1, 0.08, 0.06, 0.0301, 0.0299, 0.0300, 0.0302, 0.0299]
    slow = [160.0, 117.0, 101.0, 96.0, 91.5, 90.0, 89.5, 89.0, 88.5, 88.0]  # falls 2.0 from 12 000, floor 22.5
    pts = [{"step": s, "metrics": {"lsd_high": a, "lsd": b, "domain_fd": c, "fid": d}}
           for s, a, b, c, d in zip(steps, swinging, falling, settled, slow)]
    res = StudyResults(study={"evaluation": {}}, columns=["lsd_high", "lsd", "domain_fd", "fid"], rows={},
                       floor={"curve_metrics": {"lsd_high": 0.0036, "lsd": 0.0068, "domain_fd": 0.003,
                                                "fid": 22.5}},
                       curves=[{"run": "_pretrain/k/seed0", "variant": "_pretrain", "seed": 0, "points": pts}])
    got = {e["key"]: e for e in res.plateaus()}
    assert all(e["trend_from_step"] == 12000 and e["trend_n"] == 5 for e in got.values())
    high = got["lsd_high"]
    fit = np.polyfit(steps[5:], swinging[5:], 1)
    assert high["trend_gain"] == pytest.approx(-fit[0] * 8000)  # positive: better
    assert high["trend"] == "unresolved" and high["trend_half_width"] > high["floor"]
    assert got["lsd"]["trend"] == "improving" and got["lsd"]["trend_gain"] == pytest.approx(0.02)
    assert got["domain_fd"]["trend"] == "flat"
    assert abs(got["domain_fd"]["trend_gain"]) + got["domain_fd"]["trend_half_width"] <= 0.003
    assert got["fid"]["trend_gain"] == pytest.approx(2.0) and got["fid"]["trend_p"] < 1e-6
    assert got["fid"]["trend"] == "flat"  # resolved, but 2.0 over 8 000 steps is within the floor
    table = "\n".join(plateau_table(res))
    assert "from 12000, 5 points: 0.02 ±" in table
    assert "| unresolved |" in table and "| **improving** |" in table and "| flat |" in table
    res.curves[0]["points"] = pts[:2]  # one interval: a window of two points
    assert {e["trend"] for e in res.plateaus()} == {None}
    assert "n/a (< 3 points)" in "\n".join(plateau_table(res))
