"""A study's ``report.md`` and plots, rendered from its :class:`StudyResults` alone.

``render(results, out)`` writes ``spectra.png`` and ``spectra_ratio.png`` (when the
results hold spectra) and returns the markdown; :func:`write_report` saves both. Every
number comes from the results object, so a report can be re-rendered from a
``results.json`` (``specreg compare --report-only``); :mod:`.report_marks` brings the
marks of a report whose results.json predates labels, curves and set-up up to date.
:func:`render_template` fills a study's own short report (``specreg demo``: the template
beside its study file) with the same tables. The training-curve section is
:mod:`.report_curves`; table cells are formatted by :mod:`.report_table`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from specreg.experiments.report_curves import curve_table, curves_section, plateau_table, reach_table
from specreg.experiments.report_table import fmt, is_paired, row
from specreg.experiments.results import StudyResults
from specreg.experiments.stats import FDR_Q, Stat
from specreg.layout import (
    FULL_REPORT,
    REAL_CLIP_PREFIX,
    REAL_DIR,
    REPORT_FILE,
    RESULTS_FILE,
    SAMPLES_GRID,
    SPECTRA_PLOT,
    SPECTRA_RATIO_PLOT,
)
from specreg.metrics.registry import ARROWS, find_key

SPECTRA = f"![spectra]({SPECTRA_PLOT}) ![ratio]({SPECTRA_RATIO_PLOT})"

RESULTS_TEXT = (
    "Mean ± standard deviation over seeds (sample std, n − 1; \"—\" with one seed). ↓ lower is better, "
    "↑ higher is better, →0 closest to zero is best; the best mean per column is **bold**. † marks a mean "
    "whose difference Δ to its baseline's passes two tests (cells listed under \"Tests\"): it survives "
    "Benjamini–Hochberg false-discovery control at q = {q} over the family of {m} tested cells (every "
    "variant × metric cell with a baseline and at least two seeds), and |Δ| exceeds the metric's practical "
    "floor (distances: twice the real-vs-real noise floor; signed biases: the real-vs-real spread of the bias "
    "at these sample counts). Each cell's p-value is two-sided: paired by seed where both rows share at least "
    "two seeds (a seed fixes the data order, the noise and the sampling noise of every variant; Student t of "
    "the per-seed differences), otherwise Welch's. With a single seed nothing is tested. Without †, this study "
    "does not resolve the difference.")
def _direction(key: str) -> str:
    spec = find_key(key)
    return spec.direction if spec is not None else ""


def results_table(res: StudyResults) -> list[str]:
    """One row per variant, one column per key: mean ± std, the best in bold, † where the
    difference to the row's baseline is marked (stats); then the noise floor and the seed spread."""
    cols = res.columns
    n_seeds = len(res.seeds)
    marks = {(c["variant"], c["key"]) for c in res.cells() if c["marked"]}
    lines = [row(["variant", "protocol", "seeds", *[k + ARROWS.get(_direction(k), "") for k in cols]]),
             "|" + "---|" * (3 + len(cols))]
    for name, r in res.rows.items():
        seeds = f"{r.n_done}/{n_seeds}" + (f" ({r.n_diverged} diverged)" if r.n_diverged else "")
        label = r.variant.get("label", "")
        cells = [name + (f" — {label}" if label else ""), str(r.variant.get("protocol", "")), seeds]
        for key in cols:
            s = r.stats.get(key, Stat(math.nan, None, 0))
            text = f"{fmt(s.mean)} ± {fmt(s.std, 2)}"
            if res.is_best(name, key):
                text = f"**{text}**"
            if (name, key) in marks:
                text += " †"
            cells.append(text)
        lines.append(row(cells))
    ev = res.study.get("evaluation", {})
    floor = [f"real vs real: noise floor ({ev.get('n_samples')} vs {ev.get('n_reference')})", "", ""]
    floor += ["n/a (paired)" if is_paired(k) else fmt(res.floor_value(k)) for k in cols]
    lines.append(row(floor))
    if res.floor.get("ceiling"):  # a latent model: what decoding alone costs
        lines.append(row(["autoencoder reconstructions of real (the latent model's ceiling)", "", "",
                          *["n/a (paired)" if is_paired(k) else fmt(res.floor["ceiling"].get(k)) for k in cols]]))
    lines.append(row(["seed spread: median std over variants", "", "", *[fmt(res.median_spread(k), 2) for k in cols]]))
    return lines


def legend(res: StudyResults) -> list[str]:
    """What each column of the results table measures."""
    return [f"- **{k}**: {res.labels.get(k, '')}" for k in res.columns]


def lambda_grid_table(res: StudyResults) -> list[str]:
    entries = res.lambda_grids()
    if not entries:
        return []
    lines = [row(["auto λ", "metric", "auto", "best of grid", "median of grid", "auto's rank", "auto − best"]),
             "|---" * 7 + "|"]
    for e in entries:
        a, b = e["stat"], e["best"]
        lines.append(row([e["auto"], e["key"], f"{fmt(a.mean)} ± {fmt(a.std, 2)}", f"{fmt(b.mean)} ({e['best_name']})",
                          fmt(e["median"]), f"{e['rank']} of {e['of']}",
                          f"{fmt(e['diff'], 2)}{' †' if e['marked'] else ''}"]))
    return lines


def tests_table(res: StudyResults) -> list[str]:
    """Every tested cell: Δ = variant − baseline, its 95 % half-width, p, the BH-adjusted p,
    the practical floor and the verdict (why a cell is not marked)."""
    cells = [c for c in res.cells() if c["p"] is not None]
    if not cells:
        return []
    lines = [row(["variant", "metric", "Δ vs baseline", "95 % half-width", "seeds", "p", "p (BH)",
                  "practical floor", "marked"]), "|---" * 9 + "|"]
    for c in cells:
        why = "†" if c["marked"] else ("p (BH) > q" if c["p_adj"] > FDR_Q else "|Δ| ≤ floor")
        lines.append(row([c["variant"], c["key"], fmt(c["diff"], 3), fmt(c["half_width"], 2),
                          f"{c['n']} {'paired' if c['paired'] else 'unpaired'}", fmt(c["p"], 2), fmt(c["p_adj"], 2),
                          f"{fmt(c['practical_floor'], 2)} ({c['floor_rule']})" if c["practical_floor"] else "none",
                          why]))
    return lines


def mark_counts(res: StudyResults) -> dict[str, int]:
    """How many cells were tested, have p < 0.05 alone, survive BH, and are marked."""
    cells = [c for c in res.cells() if c["p"] is not None]
    return {"tested": len(cells), "p<0.05": sum(c["p"] < 0.05 for c in cells),
            "bh": sum(c["p_adj"] <= FDR_Q for c in cells), "marked": sum(c["marked"] for c in cells)}


def shared_share(t: dict, timing: Sequence[dict]) -> float | None:
    """The share of ``t``'s training time during which another run of ``timing`` trained too
    (from the recorded wall-clock intervals; None where ``t`` has none)."""
    if not t.get("interval"):
        return None
    a, b = t["interval"]
    others = sorted((max(a, u["interval"][0]), min(b, u["interval"][1])) for u in timing
                    if u is not t and u.get("interval") and u["interval"][0] < b and u["interval"][1] > a)
    covered, end = 0.0, a
    for lo, hi in others:  # the union of the overlaps
        lo = max(lo, end)
        if hi > lo:
            covered, end = covered + hi - lo, hi
    return covered / (b - a) if b > a else None


def setting(t: dict, timing: Sequence[dict] = ()) -> str:
    """The setting a run trained in, as a table cell: threads (or GPU) and, where the runs'
    wall-clock intervals were recorded, whether it shared the machine with another run
    (more than 90 % of its time: "N at once"; under 10 %: "alone") — with ``--jobs N`` the
    last runs of a queue train alone and take fewer seconds per step."""
    if t.get("threads") is None:
        return "not recorded"
    where = "GPU" if t.get("device") == "cuda" else f"{t['threads']} thread{'s' if t['threads'] != 1 else ''}"
    share = shared_share(t, timing) if t.get("parallel") and t["parallel"] > 1 else None
    if share is None:
        return where + (f", {t['parallel']} at once" if t.get("parallel") else "")
    if share >= 0.9:
        return f"{where}, {t['parallel']} at once"
    return f"{where}, alone" if share <= 0.1 else f"{where}, beside another run {share:.0%} of its time"


def timing_note(timing: Sequence[dict]) -> str:
    """Whether the s / step of these rows may be compared, and where a loss's cost is measured."""
    settings = {setting(t, timing) for t in timing if t.get("train_s")}
    if len(settings) == 1 and "not recorded" not in settings:
        return f"Every run trained in the same setting ({settings.pop()}), so their s / step compare."
    return ("s / step compares only between rows of the same setting (torch threads per run, runs trained at "
            "once: runs that share the cores take longer per step than a run alone)"
            + ("; runs without a recorded setting were trained before it was recorded" if "not recorded" in
               settings else "")
            + ". What each regularizer adds to a training step, measured in one setting: docs/benchmarks.md.")


def timing_table(res: StudyResults) -> tuple[list[str], float]:
    lines = [row(["run", "steps", "train s", "s / step", "setting", "sample s", "eval s", "status"]),
             "|---" * 8 + "|"]
    total = 0.0
    for t in res.timing:
        train_s, steps = t.get("train_s"), t.get("steps")
        total += train_s or 0.0
        per = fmt(train_s / steps, 3) if train_s and steps else "—"
        lines.append(row([t["run"], str(steps if steps is not None else "—"), fmt(train_s), per, setting(t, res.timing),
                          fmt(t.get("sample_s"), 3), fmt(t.get("eval_s"), 3), str(t.get("status", ""))]))
    return lines, total


def setup_text(res: StudyResults) -> str:
    st, s = res.study, res.setup
    if not s:
        return ""
    ev = st.get("evaluation", {})
    text = (f"Base config `{st.get('base')}` with {len(res.rows)} variants × {len(res.seeds)} seeds "
            f"({', '.join(map(str, res.seeds))}); {'/'.join(map(str, s['steps']))} training steps per run, batch "
            f"{s['batch_size']}; {ev.get('n_samples')} samples per run ({s['sampler']}, {s['sample_steps']} steps, "
            f"sampling seed {ev.get('sample_seed')} + run seed).")
    if res.pretrains:
        ft = st.get("finetune", {})
        ps = ft.get("pretrain_seeds") or []
        which = (f"one per seed: seed {', '.join(f'{s} from pretraining seed {p}' for s, p in zip(res.seeds, ps))}"
                 if ps else f"seed {ft.get('pretrain_seed')}, one model for every seed")
        text += (f"\n\nFine-tuning protocol: each pretrained model below was trained for {res.pretrains[0]['steps']} "
                 f"steps without a regularizer ({which}); the variants marked `finetune` were "
                 f"fine-tuned from its final EMA weights (those marked \"from step N\" from the EMA weights of "
                 f"its checkpoint at step N) for {ft.get('steps')} steps with a fresh optimizer "
                 f"(fine-tuning overrides: {', '.join(ft.get('overrides') or []) or 'none'}).\n")
        for p in res.pretrains:
            text += f"\n- `{p['dir']}`: {', '.join(p['users'])}"
    return text


def wall_text(res: StudyResults, total_train: float) -> str:
    entries = [e for e in res.invocations if e.get("planned", e.get("trained"))]  # it had runs to train
    text = f"Training time summed over runs: {total_train / 60:.1f} min; this invocation: {res.wall_s / 60:.1f} min"
    if entries:
        wall = sum(e["wall_s"] for e in entries)
        text += (f"; wall time of the {len(entries)} invocation(s) that trained runs: {wall / 60:.1f} min "
                 f"(started {', '.join(e['started'] for e in entries)})")
    return text + "."


def sample_links(res: StudyResults, out: Path) -> list[str]:
    lines = []
    if res.kind == "audio":
        wavs = sorted((out / REAL_DIR).glob(f"{REAL_CLIP_PREFIX}*.wav"))[:2]
        lines.append("- real reference: " + ", ".join(f"[{w.name}]({REAL_DIR}/{w.name})" for w in wavs))
    else:
        lines.append(f"**real** (floor set)\n\n![real]({REAL_DIR}/{SAMPLES_GRID})\n")
    for name, r in res.rows.items():
        if r.samples is None:
            continue
        if res.kind == "audio":
            wavs = sorted((out / r.samples).glob("*.wav"))[:2]
            lines.append(f"- {name} (seed {r.samples_seed}): " + ", ".join(f"[{w.name}]({r.samples}/{w.name})"
                                                                          for w in wavs))
        else:
            lines.append(f"**{name}** (seed {r.samples_seed})\n\n![{name}]({r.samples}/{SAMPLES_GRID})\n")
    return lines


def plots(res: StudyResults, out: Path) -> list[str]:
    """``spectra.png`` (mean spectrum over seeds per variant and the reference) and
    ``spectra_ratio.png``; returns the markdown that shows them."""
    import numpy as np

    from specreg.metrics.plots import floor_per_bin, plot_spectra, plot_spectrum_ratio

    spectra = {n: (np.asarray(r.spectrum["freqs"]), np.asarray(r.spectrum["power"]))
               for n, r in res.rows.items() if r.spectrum}
    ref = res.floor.get("reference_spectrum")
    if not spectra or not ref:
        return ["(no finished run yet)"]
    scale, xlabel = (res.sample_rate, "frequency (Hz)") if res.kind == "audio" else (1, "frequency (cycles / pixel)")
    f_ref, p_ref = np.asarray(ref["freqs"]) * scale, np.asarray(ref["power"])
    floor = floor_per_bin(ref["freqs"], res.floor.get("metrics") or {})  # the real-vs-real LSD, per band
    plot_spectra({k: (f * scale, p) for k, (f, p) in spectra.items()}, reference=(f_ref, p_ref),
                 path=out / SPECTRA_PLOT, reference_label="real reference", xlabel=xlabel, floor=floor)
    plot_spectrum_ratio({k: (f * scale, p) for k, (f, p) in spectra.items()}, (f_ref, p_ref),
                        out / SPECTRA_RATIO_PLOT, xlabel=xlabel, floor=floor)
    return [SPECTRA]


def lambda_section(res: StudyResults) -> list[str]:
    """The "Automatic λ against the λ grid" section (header, text, table), or nothing."""
    grid = lambda_grid_table(res)
    if not grid:
        return []
    return ["## Automatic λ against the λ grid",
            "Does the automatic λ remove the need to tune λ? Per metric: the auto variant's mean ± std, the best "
            "and the median of the grid's means, the auto variant's rank among the grid and itself (1 = best), "
            "and auto − best (paired by seed where possible; † by the rule above, with these cells as their own "
            "Benjamini–Hochberg family).", "\n".join(grid)]


def tests_section(res: StudyResults) -> list[str]:
    """The "Tests" section (header, text, table), or nothing."""
    tests, counts = tests_table(res), mark_counts(res)
    if not tests:
        return []
    return ["## Tests",
            f"Each tested cell of the results table: of {counts['tested']}, {counts['p<0.05']} have p < 0.05 on "
            f"their own (about {0.05 * counts['tested']:.1f} expected by chance if nothing differed), "
            f"{counts['bh']} survive Benjamini–Hochberg at q = {FDR_Q}, and {counts['marked']} of those also exceed "
            "their practical floor (†). \"practical floor\": the |Δ| a mark needs, and its source (\"|real vs "
            "real|\": a study that did not record the spread of a bias uses the size of its one real-vs-real value).",
            "\n".join(tests)]


def render(res: StudyResults, out: Path, *, draw: bool = True) -> str:
    """The markdown of ``report.md``; with ``draw`` also (re)writes the plots into ``out``."""
    st = res.study
    nl = "\n"
    diverged = [f"- {name}/seed{d['seed']}: {d.get('error', '')}" for name, r in res.rows.items() for d in r.diverged]
    counts = mark_counts(res)
    times, total_train = timing_table(res)
    bands = [f"**{n}** (seed {r.samples_seed})\n\n![{n}]({r.band_weights})\n" for n, r in res.rows.items()
             if r.band_weights]
    sections = [
        f"# {st.get('title') or st.get('name')} — profile `{st.get('profile')}`",
        st.get("description", ""),
        f"Variants of the study left out by this profile: {', '.join(st['cut'])}." if st.get("cut") else "",
        setup_text(res),
        "## Results",
        RESULTS_TEXT.format(q=FDR_Q, m=counts["tested"]),
        nl.join(results_table(res)),
        f"Reference: {res.floor.get('reference')}. Noise floor: {res.floor.get('floor_set')}, against the same "
        "reference.",
        nl.join(legend(res)),
        ("Diverged runs (left out of the means):" + nl + nl.join(diverged)) if diverged else "",
        *lambda_section(res),
        *tests_section(res),
        *curves_section(res),
        *(["## Learned band weights",
           "exp(−u_b(σ)) of each band against the noise level, at the last checkpoint (grey: earlier ones).",
           nl.join(bands)] if bands else []),
        "## Spectra",
        "Radially averaged power spectra, mean over seeds, against the real reference (dashed), and the error "
        "in decades, log10(P / P_real):",
        nl.join(plots(res, out)) if draw else SPECTRA,
        "## Samples",
        nl.join(sample_links(res, out)),
        "## Runs and wall time",
        nl.join(times),
        timing_note(res.timing),
        wall_text(res, total_train),
        "## Reproduce",
        f"```\n{res.command}\n```",
        f"Software: {', '.join(f'{k} {v}' for k, v in res.versions.items())}; {res.device}; {res.platform}.",
    ]
    return nl.join(nl + s for s in sections if s).lstrip() + nl


def render_template(template: str, res: StudyResults, **extra: str) -> str:
    """A study's own short report: ``template`` (``str.format`` fields) filled with the
    tables of :func:`render` (``results_table``, ``legend``, ``timing_table``,
    ``timing_note``), the set-up (``description``, ``steps``, ``batch_size``, ``n_samples``,
    ``sampler``, ``sample_steps``, ``device``, ``reference``, ``floor_set``), the images
    (``variants``, ``real_samples``, ``sample_grids``, ``spectra``), ``full_report`` (the
    study's report beside it) and ``extra``. The plots are those of :func:`write_report`."""
    nl, s, ev = "\n", res.setup, res.study.get("evaluation", {})
    return template.format(**{
        "description": res.study.get("description", "").strip(), "steps": s.get("steps", ["?"])[0],
        "batch_size": s.get("batch_size"), "n_samples": ev.get("n_samples"), "sampler": s.get("sampler"),
        "sample_steps": s.get("sample_steps"), "device": res.device, "reference": res.floor.get("reference"),
        "floor_set": res.floor.get("floor_set"), "results_table": nl.join(results_table(res)),
        "legend": nl.join(legend(res)), "timing_table": nl.join(timing_table(res)[0]),
        "timing_note": timing_note(res.timing), "variants": ", ".join(res.rows),
        "real_samples": f"![real]({REAL_DIR}/{SAMPLES_GRID})", "spectra": SPECTRA, "full_report": FULL_REPORT,
        "sample_grids": " ".join(f"![{n}]({r.samples}/{SAMPLES_GRID})" for n, r in res.rows.items() if r.samples),
        **extra})


def write_report(res: StudyResults, out: Path) -> Path:
    """Write ``results.json``, the plots and ``report.md`` into ``out``; return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    res.save(out / RESULTS_FILE)
    path = out / REPORT_FILE
    path.write_text(render(res, out), encoding="utf-8")
    return path


__all__ = ["curve_table", "fmt", "lambda_grid_table", "lambda_section", "legend", "mark_counts", "plateau_table",
           "reach_table", "render", "render_template", "results_table", "setting", "shared_share", "tests_section",
           "tests_table", "timing_note", "timing_table", "write_report"]
