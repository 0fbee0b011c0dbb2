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
    from its results.json. (The † marks may differ: sections 1, 2, 4 and 5 of
    docs/results/README.md were marked with an older rule.)"""
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
