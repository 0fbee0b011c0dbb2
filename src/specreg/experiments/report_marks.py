"""Bringing the marks of an earlier ``report.md`` up to the current rule, for a study whose
``results.json`` predates what :func:`specreg.experiments.report.render` needs to draw the
rest (labels, curves, set-up): the results and λ-grid tables and their rule text are
rendered anew, a "Tests" section is added, every other section is kept as it was.
"""

from __future__ import annotations

from specreg.experiments.report import (
    RESULTS_TEXT,
    lambda_section,
    mark_counts,
    results_table,
    tests_section,
    timing_note,
    timing_table,
)
from specreg.experiments.results import StudyResults
from specreg.experiments.stats import FDR_Q


def _sections(text: str) -> list[list[str]]:
    """A markdown text as sections of lines, each (after the first) starting at a "## " line."""
    out: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("## "):
            out.append([])
        out[-1].append(line)
    return out


def _replace_tables(lines: list[str], text: str | None, table: list[str]) -> list[str]:
    """``lines`` with the first paragraph after the header replaced by ``text`` (when given)
    and the first table replaced by ``table``."""
    out, i = [lines[0]], 1
    if text is not None:
        while i < len(lines) and not lines[i].strip():
            out.append(lines[i])
            i += 1
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("|"):
            i += 1
        out.append(text)
    rest = lines[i:]
    start = next((k for k, line in enumerate(rest) if line.startswith("|")), None)
    if start is None:
        return out + rest
    end = next((k for k in range(start, len(rest)) if not rest[k].startswith("|")), len(rest))
    return out + rest[:start] + table + rest[end:]


def update_marks(old: str, res: StudyResults) -> str:
    """An earlier ``report.md`` with its marks brought up to the current rule: the results
    and λ-grid tables and their rule text replaced, a "Tests" section added (or replaced),
    and, where ``res`` has timings, the timing table and its note; every other section kept
    as it was. For reports whose results.json predates what :func:`render` needs to draw
    the rest (labels, curves, set-up)."""
    counts = mark_counts(res)
    sections = [s for s in _sections(old) if not (s and s[0] == "## Tests")]
    out: list[list[str]] = []
    after = "## Automatic λ against the λ grid" if any(s and s[0] == "## Automatic λ against the λ grid"
                                                        for s in sections) else "## Results"
    for sec in sections:
        head = sec[0] if sec else ""
        if head == "## Results":
            sec = _replace_tables(sec, RESULTS_TEXT.format(q=FDR_Q, m=counts["tested"]), results_table(res))
        elif head == "## Automatic λ against the λ grid":
            new = lambda_section(res)
            sec = _replace_tables(sec, new[1], new[2].split("\n")) if new else sec
        elif head == "## Runs and wall time" and res.timing:
            sec = _replace_tables(sec, None, timing_table(res)[0])
            if not any(line.startswith(("Every run trained", "s / step compares")) for line in sec):
                end = next(k for k in range(len(sec) - 1, -1, -1) if sec[k].startswith("|"))
                sec = [*sec[:end + 1], "", timing_note(res.timing), *sec[end + 1:]]
        out.append(sec)
        if head == after and tests_section(res):
            t = tests_section(res)
            out.append([t[0], "", t[1], "", t[2], ""])
    return "\n".join("\n".join(sec) for sec in out).rstrip() + "\n"


__all__ = ["update_marks"]
