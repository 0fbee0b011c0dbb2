"""The training-curve section of a study report: the curve of each run measured along
training, whether it stopped improving (the 20 % verdict, the strict rule, the trend and
the points' scatter about it; :meth:`~specreg.experiments.results.StudyResults.plateaus`),
the sampling noise of single points where it was measured, and the steps each variant
needs to reach its baseline."""

from __future__ import annotations

from specreg.experiments.report_table import fmt, is_paired, row
from specreg.experiments.results import PLATEAU_STRICT_TAIL, PLATEAU_TAIL, PLATEAU_TREND_TAIL, StudyResults


def curve_table(res: StudyResults) -> list[str]:
    if not res.curves:
        return []
    cols = res.columns
    lines = [row(["run", "step", *cols]), "|" + "---|" * (2 + len(cols))]
    for c in res.curves:
        for p in c["points"]:
            lines.append(row([c["run"], str(p["step"]), *[fmt(p["metrics"].get(k)) for k in cols]]))
    ev = res.study.get("evaluation", {})
    fm = res.floor.get("curve_metrics") or {}
    lines.append(row([f"real vs real ({min(ev.get('curve_samples', 0), ev.get('n_samples', 0))} samples)", "",
                      *["n/a (paired)" if is_paired(k) else fmt(fm.get(k)) for k in cols]]))
    return lines


def plateau_table(res: StudyResults) -> list[str]:
    entries = res.plateaus()
    if not entries:
        return []
    verdict = {"flat": "stopped improving", "improving": "**still improving**", "worsening": "worsening"}
    lines = [row(["run", "metric", "steps", "start → end", "gain", "2 × floor", "verdict",
                  f"last {PLATEAU_STRICT_TAIL:.0%}: gain vs floor", f"last {PLATEAU_TREND_TAIL:.0%}: trend gain (p)",
                  "trend", "scatter about the line"]), "|---" * 11 + "|"]
    for e in entries:
        strict = ("n/a" if e["strict_gain"] is None else
                  f"from {e['strict_from_step']}: {fmt(e['strict_gain'], 2)} "
                  f"{'≤' if e['strict_gain'] <= e['floor'] else '>'} {fmt(e['floor'], 2)}")
        trend = ("n/a (< 3 points)" if e.get("trend") is None else
                 f"from {e['trend_from_step']}, {e['trend_n']} points: {fmt(e['trend_gain'], 2)} ± "
                 f"{fmt(e['trend_half_width'], 2)} (p {fmt(e['trend_p'], 2)})")
        reading = "n/a" if e.get("trend") is None else "**improving**" if e["trend"] == "improving" else e["trend"]
        lines.append(row([e["run"], e["key"], f"{e['from_step']} → {e['to_step']}",
                          f"{fmt(e['start'])} → {fmt(e['end'])}", fmt(e["gain"], 2), fmt(e["bound"], 2),
                          verdict[e["verdict"]], strict, trend, reading,
                          "n/a" if e.get("trend_scatter") is None else fmt(e["trend_scatter"], 2)]))
    return lines


def point_noise_table(res: StudyResults) -> list[str]:
    """One curve point's sampling noise where it was measured: per run and checkpoint, the
    mean and standard deviation over sample seeds of each tabulated key."""
    measured = [(c["run"], g) for c in res.curves for g in c.get("point_noise") or []]
    if not measured:
        return []
    cols = [k for k in res.columns if any(k in g["sd"] for _, g in measured)]
    lines = [row(["run", "step", "samples", "sample seeds", *cols]), "|---" * (4 + len(cols)) + "|"]
    for run, g in measured:
        cells = [f"{fmt(g['mean'][k])} ± {fmt(g['sd'][k], 2)}" if g["sd"].get(k) is not None else
                 fmt(g["mean"].get(k)) for k in cols]
        lines.append(row([run, str(g["step"]), str(g["n"]), ", ".join(map(str, g["seeds"])), *cells]))
    return lines


def reach_table(res: StudyResults) -> list[str]:
    entries = res.steps_to_reach()
    if not entries:
        return []
    lines = [row(["variant", "metric", "steps to reach the baseline's final value", "seeds that reached it",
                  "per seed"]), "|---" * 5 + "|"]
    for e in entries:
        s = e["stat"]
        per = ", ".join(f"{seed}: {'—' if v is None else v}" for seed, v in sorted(e["by_seed"].items()))
        lines.append(row([e["variant"], e["key"], f"{fmt(s.mean)} ± {fmt(s.std, 2)}" if s.n else "not reached",
                          f"{e['reached']}/{e['seeds']}", per]))
    return lines


def curves_section(res: StudyResults) -> list[str]:
    """The section's paragraphs and tables, in order (none for a study without curves)."""
    curves, flat, noise, reach = curve_table(res), plateau_table(res), point_noise_table(res), reach_table(res)
    ev = res.study.get("evaluation", {})
    return [
        *(["## Training curves",
           f"Runs measured every {ev.get('curve_every')} steps on "
           f"{min(ev.get('curve_samples', 0), ev.get('n_samples', 0))} "
           "samples (the first seed of each from-scratch baseline, each pretrained model, and every seed of "
           "variants that ask for a curve): a run is long enough when its numbers stop improving well before the "
           "last row.",
           "\n".join(curves)] if curves else []),
        *([f"Has each run stopped improving? The gain of each metric over the last {PLATEAU_TAIL:.0%} of its "
           "steps (at least one curve interval; positive: better), against twice the curve's noise floor, for "
           "the distances whose floor is positive (a KID or a bias has no such noise scale): \"stopped "
           "improving\" when the gain is within it. The last column holds a pretraining to a stricter rule: the "
           f"gain over the last {PLATEAU_STRICT_TAIL:.0%} of its steps (at least one interval) within the floor "
           "itself, once. Single points can scatter from checkpoint to checkpoint by more than the floor, so the "
           f"last two columns fit a least-squares line through every point of the last {PLATEAU_TREND_TAIL:.0%} of "
           "the steps (at least three): its gain over that window with a 95 % interval from the points' own "
           "scatter, read as \"flat\" when the whole interval lies within ± the floor, else \"improving\" (or "
           "\"worsening\") when it excludes 0, else \"unresolved\" (the curve cannot tell). The last column is "
           "the points' standard deviation about that line: where it exceeds one point's sampling noise "
           "(below, where measured), the checkpoints themselves differ.",
           "\n".join(flat)] if flat else []),
        *(["How noisy is one curve point? Checkpoints of the curve sampled again on other sample seeds "
           "(`scripts/curve_point_noise.py`), as many samples as the curve: mean ± standard deviation over "
           "the sample seeds.",
           "\n".join(noise)] if noise else []),
        *(["## Steps to reach the baseline",
           "For variants measured along training on several seeds: the first measured step at which a seed is at "
           "least as good as its baseline's final value at the same seed (its last curve point, on as many samples "
           "as the curve), mean ± std over the seeds that reached it (resolution: the curve's spacing).",
           "\n".join(reach)] if reach else []),
    ]


__all__ = ["curve_table", "curves_section", "plateau_table", "point_noise_table", "reach_table"]
