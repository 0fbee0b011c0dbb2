"""A difference of differences between two studies that share their rows: does a loss help
more in study B (e.g. 64×64) than in study A (e.g. 32×32)?

For a row r, a result key k and a study S, each seed s gives the paired change against
that study's own baseline, in the key's *score* (smaller is better: the value for "lower"
keys, its negative for "higher", its size for signed keys ranked toward 0)::

    d_S(s) = score(r_s) − score(baseline_s),     Δ_S = mean_s d_S(s)

with the paired half-width t₀.₉₇₅(n−1)·sd(d)/√n and the paired t test's two-sided p (a
negative Δ helps). The two studies train different models from different pretrainings, so
nothing pairs across them: the contrast Δ_B − Δ_A gets Welch's half-width and p from the
two sets of per-seed differences.

The rules of the study statistics in force (:mod:`specreg.experiments.stats`) decide: the
Δ_B of all cells form one family and the contrasts another, each under Benjamini–Hochberg
at q = 0.05, and a change counts only beyond study B's practical floor of the key (twice
the noise floor for a distance, the real-vs-real spread for a signed bias). A row
*supports* "helps more in B" when Δ_B < 0 and Δ_B − Δ_A < 0 both count.

A signed key (a spectral bias, ranked by its size) also gets its **signed shift**: d_S(s)
on the raw values, r_s − baseline_s, the same tests in two families of their own. It
answers "does the row move the spectrum further in B?" (``further``: Δ_B − Δ_A counts and
has Δ_B's sign), which the size cannot: a bias that crosses 0 shrinks in size while it moves.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from specreg.experiments.results import StudyResults
from specreg.experiments.stats import FDR_Q, bh_adjust, p_from_t, t975

READING = ("Δ: the row's change against its own study's fine-tuned baseline in the key's score (lower is "
           "better: the value, its negative for higher-is-better keys, its size for signed biases), mean over "
           "seeds ± the paired 95 % half-width; negative helps. Δ_B − Δ_A ± Welch's 95 % half-width (the studies "
           "share no seed noise). p_BH: Benjamini–Hochberg adjusted p, the Δ_B column and the contrast column "
           "each one family (q = 0.05). floor: study B's practical floor of the key (twice the noise floor for a "
           "distance, the real-vs-real spread for a signed bias). supports: Δ_B < 0 and Δ_B − Δ_A < 0, each "
           "with p_BH ≤ 0.05 and |value| beyond the floor.")
SHIFT_READING = ("Signed shifts of the bias keys: the same Δ on the raw signed values (> 0: the row adds power "
                 "against its baseline), each column its own family under BH. further: Δ_B − Δ_A counts (p_BH ≤ 0.05, "
                 "|value| beyond the floor) and has the sign of Δ_B, i.e. the row moves the spectrum further in B.")


@dataclass
class Delta:
    """A mean change, its 95 % half-width and two-sided p (None: fewer than two seeds), and
    after :func:`contrast` its Benjamini–Hochberg adjusted p within its family."""

    mean: float
    half_width: float | None
    n: int
    p: float | None = None
    p_adj: float | None = None

    def counts(self, floor: float, q: float = FDR_Q) -> bool:
        """Survives FDR control and exceeds ``floor`` (the rule of a study mark)."""
        return self.p_adj is not None and math.isfinite(self.mean) and self.p_adj <= q and abs(self.mean) > floor


@dataclass
class ContrastCell:
    """One row × key: Δ in study A, Δ in study B, Δ_B − Δ_A, B's practical floor of the key."""

    row: str
    key: str
    a: Delta
    b: Delta
    contrast: Delta
    floor: float
    supports: bool = False
    signed: bool = False  # a signed shift (raw values) rather than a change of score


def _score(key: str, value: float) -> float:
    from specreg.metrics.registry import find_key

    spec = find_key(key)
    return spec.score(value) if spec is not None and spec.ranked else value


def _signed(key: str) -> bool:
    from specreg.metrics.registry import find_key

    spec = find_key(key)
    return spec is not None and spec.direction == "zero"


def paired_change(res: StudyResults, row: str, key: str, signed: bool = False) -> tuple[Delta, list[float]]:
    """Δ of ``row`` against its baseline in ``res`` for ``key`` (module docstring), in the
    key's score or, with ``signed``, on the raw values; and the per-seed differences."""
    r = res.rows[row]
    base = r.variant.get("baseline") or res.study.get("baseline")
    if base is None or base not in res.rows or key not in r.stats or key not in res.rows[base].stats:
        return Delta(math.nan, None, 0), []
    a, b = r.stats[key].by_seed, res.rows[base].stats[key].by_seed
    f = (lambda v: v) if signed else (lambda v: _score(key, v))
    d = [f(a[s]) - f(b[s]) for s in sorted(set(a) & set(b))
         if math.isfinite(a[s]) and math.isfinite(b[s])]
    if len(d) < 2:
        return Delta(statistics.fmean(d) if d else math.nan, None, len(d)), d
    mean, se = statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d))
    p = (1.0 if mean == 0 else 0.0) if se == 0 else p_from_t(mean / se, len(d) - 1)
    return Delta(mean, t975(len(d) - 1) * se, len(d), p), d


def welch(a: list[float], b: list[float]) -> Delta:
    """mean(b) − mean(a) with Welch's 95 % half-width and two-sided p."""
    if len(a) < 2 or len(b) < 2:
        return Delta(math.nan, None, 0)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(b) - statistics.fmean(a)
    if va + vb == 0:
        return Delta(diff, 0.0, len(a) + len(b), 1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    se = math.sqrt(va + vb)
    return Delta(diff, t975(df) * se, len(a) + len(b), p_from_t(diff / se, df))


def _adjust(deltas: list[Delta]) -> None:
    tested = [d for d in deltas if d.p is not None]
    for d, p in zip(tested, bh_adjust([d.p for d in tested if d.p is not None]), strict=True):
        d.p_adj = p


def contrast(a: StudyResults, b: StudyResults, keys: list[str] | None = None) -> list[ContrastCell]:
    """Every row the two studies share (their baseline excepted) × every key both measured,
    then the signed shift of every signed key (``signed=True`` cells, families of their own)."""
    keys = keys or [k for k in b.columns if k in a.columns]
    cells: list[ContrastCell] = []
    shifts: list[ContrastCell] = []
    for row in [r for r in b.rows if r in a.rows]:
        if not (b.rows[row].variant.get("baseline") or b.study.get("baseline")) or row == b.study.get("baseline"):
            continue
        for key in keys:
            if not all(key in res.rows[row].stats for res in (a, b)):
                continue
            for signed, out in ((False, cells), (True, shifts)):
                if signed and not _signed(key):
                    continue
                da, sa = paired_change(a, row, key, signed)
                db, sb = paired_change(b, row, key, signed)
                out.append(ContrastCell(row, key, da, db, welch(sa, sb), b.practical_floor(key)[0], signed=signed))
    for group in (cells, shifts):
        for family in ([c.a for c in group], [c.b for c in group], [c.contrast for c in group]):
            _adjust(family)
    for c in cells:
        c.supports = c.b.counts(c.floor) and c.b.mean < 0 and c.contrast.counts(c.floor) and c.contrast.mean < 0
    return cells + shifts


def further(c: ContrastCell) -> bool:
    """A signed shift that is larger in B: Δ_B − Δ_A counts and has the sign of Δ_B."""
    return c.signed and c.contrast.counts(c.floor) and c.contrast.mean * c.b.mean > 0


def _fmt(d: Delta) -> str:
    if not math.isfinite(d.mean):
        return "—"
    hw = "" if d.half_width is None else f" ± {d.half_width:.3g}"
    return f"{d.mean:+.3g}{hw}"


def _p(d: Delta) -> str:
    return "—" if d.p_adj is None else f"{d.p_adj:.2g}"


def render(cells: list[ContrastCell], label_a: str, label_b: str, signed: bool = False) -> str:
    """A markdown table: one line per row × key, of the score cells or (``signed``) the shifts."""
    verdict = "further" if signed else "supports"
    lines = [f"| row | key | Δ {label_a} | Δ {label_b} | p_BH | Δ {label_b} − Δ {label_a} | p_BH | floor | {verdict} |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in (c for c in cells if c.signed == signed):
        yes = further(c) if signed else c.supports
        lines.append(f"| {c.row} | {c.key} | {_fmt(c.a)} | {_fmt(c.b)} | {_p(c.b)} | {_fmt(c.contrast)} | "
                     f"{_p(c.contrast)} | {c.floor:.3g} | {'yes' if yes else 'no'} |")
    return "\n".join(lines) + "\n"


def to_json(cells: list[ContrastCell]) -> list[dict[str, Any]]:
    return [asdict(c) for c in cells]


def write_contrast(dir_a: str | os.PathLike, dir_b: str | os.PathLike) -> Path:
    """``contrast.md`` and ``contrast.json`` in ``dir_b``: every shared row of the study in
    ``dir_a`` (A) against the study in ``dir_b`` (B), each read from its ``results.json``."""
    from specreg.files import write_json
    from specreg.layout import CONTRAST_RECORD, CONTRAST_REPORT, RESULTS_FILE

    a, b = (StudyResults.load(Path(d) / RESULTS_FILE) for d in (dir_a, dir_b))
    name_a, name_b = (str(r.study.get("name") or Path(d).name) for r, d in ((a, dir_a), (b, dir_b)))
    cells = contrast(a, b)
    if not cells:
        raise ValueError(f"--contrast {str(dir_a)!r}: the studies {name_a!r} and {name_b!r} share no row besides "
                         "their baselines, or no tabulated key")
    write_json(Path(dir_b) / CONTRAST_RECORD, {"a": name_a, "b": name_b, "cells": to_json(cells)})
    out = Path(dir_b) / CONTRAST_REPORT
    text = f"# {name_b} against {name_a}: Δ_B − Δ_A per row\n\n{READING}\n\n" + render(cells, name_a, name_b)
    if any(c.signed for c in cells):
        text += f"\n## Signed shifts\n\n{SHIFT_READING}\n\n" + render(cells, name_a, name_b, signed=True)
    out.write_text(text, encoding="utf-8")
    return out


__all__ = ["ContrastCell", "Delta", "contrast", "further", "paired_change", "render", "to_json", "welch",
           "write_contrast"]
