"""The spectral error map in every study report: the baselines' maps, each variant's map
against its baseline's, and the maps along a baseline's training curve.

After ``specreg compare`` has measured its runs, :func:`probe_study` probes the first seed of
every variant (``specreg probe``'s :func:`~specreg.experiments.probe.probe_run`, written to
``<run>/probe/`` without a figure of its own, and reused while the run's step and the
settings are unchanged) and every checkpoint kept along a curve (``evaluation.curve_every``:
the baseline's first seed of a scratch study, the pretrained model of a fine-tuning study),
``--jobs`` of them at once (spawned processes of one torch thread each, like the runs),
then writes under the study's folder:

* ``probe/probe.md``: per baseline, its e/w summary; per variant, the σ ranges per band where
  its error e is lower (or higher) than its baseline's beyond the floors, i.e. where
  |log10(e_v/e_b)| > 2·(f_v/e_v + f_b/e_b)/ln 10, f the maps' floors; per curve, the
  training-weight-weighted mean log10(e/w) of each band at each step;
* ``probe/probe.png`` (baseline e/w, then log10 e_v/e_b per variant) and ``probe/curve.png``;

a variant is probed on its baseline's σ grid (a variant that moves the σ sampler still gets
its own training weight on that grid), so the maps compare cell by cell;

and appends a short section pointing at them to ``report.md``. It uses
min(``evaluation.probe_items``, ``evaluation.n_samples``) held-out items;
``evaluation.probe_items: 0`` turns it off. One seed per variant: the maps are a diagnostic of where in (σ, f) the rows
differ, not a statistic over seeds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from specreg.layout import (
    CHECKPOINT_DIR,
    PROBE_CURVE_DIR,
    PROBE_CURVE_PLOT,
    PROBE_DIR,
    PROBE_MAPS,
    PROBE_PLOT,
    PROBE_RECORD,
    PROBE_SUMMARY,
    REPORT_FILE,
)

SECTION = "## Spectral error maps"
DIFF_FLOORS = 2.0


def _target(run_dir: Path, checkpoint: Path | None) -> Path | None:
    from specreg.train.checkpoint import list_checkpoints

    ckpts = list_checkpoints(Path(run_dir) / CHECKPOINT_DIR)
    return None if not ckpts else checkpoint if checkpoint is not None else ckpts[-1]


def _cached(run_dir: Path, *, n_items: int, n_sigma: int, checkpoint: Path | None = None,
            out: Path | None = None, sigmas: list[float] | None = None) -> dict[str, Any] | None:
    """The map already written for these settings and the run's (or ``checkpoint``'s) step, if any."""
    from specreg.files import step_of

    target = _target(run_dir, checkpoint)
    cached = (out if out is not None else Path(run_dir) / PROBE_DIR) / PROBE_RECORD
    if target is None or not cached.is_file():
        return None
    record = json.loads(cached.read_text())
    settings = record.get("settings", {})
    same_grid = sigmas is None or record.get("axes", {}).get("sigma") == list(sigmas)
    held_out = settings.get("split", "held-out") == "held-out"  # a map on training items is not the study's
    if record.get("step") == step_of(Path(target).name) and settings.get("n_items") == n_items \
            and (settings.get("n_sigma") == n_sigma or sigmas is not None) and same_grid and held_out:
        return record
    return None


def _fresh(kw: dict[str, Any]) -> dict[str, Any]:
    """Probe a run (or ``kw["checkpoint"]``) now, whatever is cached; one call of :func:`_map`."""
    from specreg.experiments.probe import probe_run

    run_dir, out = Path(kw["run_dir"]), kw.get("out")
    return probe_run(run_dir, out if out is not None else run_dir / PROBE_DIR, n_items=kw["n_items"],
                     n_sigma=kw["n_sigma"], checkpoint=_target(run_dir, kw.get("checkpoint")), plot=False,
                     sigmas=kw.get("sigmas"))


def _arr(record: dict[str, Any], key: str, space: str = "model") -> np.ndarray:
    return np.asarray(record["spaces"][space][key], dtype=float)


def difference(variant: dict[str, Any], baseline: dict[str, Any], space: str = "model"
               ) -> tuple[np.ndarray, np.ndarray]:
    """(log10 e_v/e_b, its floor) on the shared (σ, band) grid."""
    if variant["axes"]["sigma"] != baseline["axes"]["sigma"] or \
            variant["axes"]["band_edges"] != baseline["axes"]["band_edges"]:
        raise ValueError("the variant's and the baseline's maps are on different grids (σ or bands); probe both "
                         "with the same settings and formulation")
    ev, eb = _arr(variant, "e", space), _arr(baseline, "e", space)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log10(ev / eb)
        floor = (_arr(variant, "e_floor", space) / ev + _arr(baseline, "e_floor", space) / eb) / np.log(10)
    return d, floor


def _ranges(sigma: list[float], mask: np.ndarray) -> str:
    from specreg.experiments.probe import MIN_RUN, _runs

    runs = [(i, j) for i, j in _runs(mask) if j - i + 1 >= MIN_RUN]
    return ", ".join(f"{sigma[i]:.3g}–{sigma[j]:.3g}" for i, j in runs) or "none"


def curve_summary(records: list[dict[str, Any]], space: str = "model") -> tuple[list[int], np.ndarray]:
    """Steps and (n_steps, n_bands) training-weight-weighted mean log10(e/w) per band."""
    steps, rows = [], []
    for r in records:
        ratio = _arr(r, "ratio", space)
        weight = np.asarray(r["training_weight"]["total"], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = np.log10(ratio)
            ok = np.isfinite(lr) & (weight > 0)
            rows.append(np.where(ok, lr * weight, 0).sum(0) / np.where(ok, weight, 0).sum(0))
        steps.append(int(r["step"]))
    return steps, np.asarray(rows)


def log_ratio_cell(v: float) -> str:
    """A table cell of log10(e/w): signed, or "—" where it is undefined (a band without power)."""
    return f"{v:+.3f}" if np.isfinite(v) else "—"


def _map(jobs: int, calls: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """The map for each of ``calls`` (None for a run without a checkpoint), in order: the cached
    one where it matches, else probed, up to ``jobs`` at once in spawned processes of one
    torch thread each (as ``compare --jobs`` trains)."""
    out = [_cached(**kw) for kw in calls]
    todo = [i for i, r in enumerate(out) if r is None and _target(calls[i]["run_dir"], calls[i].get("checkpoint"))]
    if jobs > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            for i, r in zip(todo, pool.map(_fresh, [calls[i] for i in todo]), strict=True):
                out[i] = r
    else:
        for i in todo:
            out[i] = _fresh(calls[i])
    return out


def probe_study(study: Any, specs: list[Any], out: str | Path, *, jobs: int = 1) -> Path | None:
    """Probe the study's runs and write ``probe/`` and the report's section (module doc);
    ``jobs`` probes at once (``compare --jobs``)."""
    from specreg.experiments.plan import on_curve
    from specreg.experiments.probe import band_label, summary_markdown
    from specreg.files import step_of
    from specreg.train.checkpoint import list_checkpoints

    ev = study.evaluation
    if ev.probe_items == 0:
        return None
    out = Path(out)
    # no more items than the study samples: its tiny profiles stay tiny
    n, ns = max(2, min(ev.probe_items, ev.n_samples)), ev.probe_sigmas
    first: dict[str, Any] = {}
    for spec in specs:
        if spec.protocol != "pretrain" and spec.variant not in first and spec.status != "diverged":
            first[spec.variant] = spec
    baselines = {v.name: v.baseline for v in study.variants}
    # baselines first, on their own training range; then each variant on its baseline's σ grid
    # (cell by cell) and every curve checkpoint, which no longer depend on one another
    own = [name for name in first if baselines.get(name) is None]
    records = {k: r for k, r in zip(own, _map(jobs, [dict(run_dir=first[k].run_dir, n_items=n, n_sigma=ns)
                                                     for k in own])) if r is not None}
    tasks: list[tuple[str, str, dict[str, Any]]] = []  # (what, name, _cached's arguments)
    for name in first:
        if (base := baselines.get(name)) is not None:
            grid = records[base]["axes"]["sigma"] if base in records else None
            tasks.append(("map", name, dict(run_dir=first[name].run_dir, n_items=n, n_sigma=ns, sigmas=grid)))
    for spec in specs:
        if not spec.curve or (spec.protocol != "pretrain" and baselines.get(spec.variant) is not None):
            continue
        total = int(spec.config["train"]["steps"])
        for ck in list_checkpoints(spec.run_dir / CHECKPOINT_DIR):
            if on_curve(step_of(ck), ev.curve_every, total):  # not e.g. one written when the run was stopped
                tasks.append(("curve", spec.label, dict(run_dir=spec.run_dir, n_items=n, n_sigma=ns, checkpoint=ck,
                                                        out=spec.run_dir / PROBE_DIR / PROBE_CURVE_DIR / ck.name)))
    curves: dict[str, list[dict[str, Any]]] = {}
    for (what, name, _), r in zip(tasks, _map(jobs, [t[2] for t in tasks]), strict=True):
        if r is None:
            continue
        if what == "map":
            records[name] = r
        else:
            curves.setdefault(name, []).append(r)
    records = {k: records[k] for k in first if k in records}  # the order of the study's rows
    if not records:
        return None
    folder = out / PROBE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# Spectral error maps of {study.name}", "",
             f"First seed of each row; {n} held-out items, {ns} noise levels. e = the denoiser's relative error per "
             "band, w = the per-frequency Wiener filter's (see `specreg probe --help`). A variant's row lists, per "
             f"band, the σ ranges where its e is lower / higher than its baseline's by more than {DIFF_FLOORS:g} "
             "floors (two halves of the items) at two or more neighbouring σ.", ""]
    for name, record in records.items():
        base = baselines.get(name)
        if base is None:
            lines += [f"## {name} (baseline)", "", *summary_markdown(record, level=3).splitlines()[2:], ""]
    for name, record in records.items():
        base = baselines.get(name)
        if base is None or base not in records:
            continue
        d, floor = difference(record, records[base])
        sigma, edges = record["axes"]["sigma"], record["axes"]["band_edges"]
        lines += [f"## {name} against {base}", "", "| band | σ where e is lower | σ where e is higher |",
                  "|---|---|---|"]
        for b in range(d.shape[1]):
            lower = np.nan_to_num(-d[:, b] - DIFF_FLOORS * floor[:, b], nan=-1) > 0
            higher = np.nan_to_num(d[:, b] - DIFF_FLOORS * floor[:, b], nan=-1) > 0
            lines.append(f"| {band_label(edges, b)} | {_ranges(sigma, lower)} | {_ranges(sigma, higher)} |")
        lines.append("")
    for label, steps_records in curves.items():
        steps, table = curve_summary(steps_records)
        edges = steps_records[0]["axes"]["band_edges"]
        lines += [f"## Along the training of {label}", "",
                  "Training-weight-weighted mean log10(e/w) per band (negative: better than the Wiener filter; "
                  "— where the data have no power in the band, so the Wiener error w is 0 and e/w is undefined).",
                  "",
                  "| step | " + " | ".join(band_label(edges, b) for b in range(table.shape[1]))
                  + " |", "|---" * (table.shape[1] + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(map(log_ratio_cell, row)) + " |"
                  for s, row in zip(steps, table, strict=True)]
        lines.append("")
    (folder / PROBE_SUMMARY).write_text("\n".join(lines))
    (folder / PROBE_MAPS).write_text(json.dumps(maps_index(out, first, records, baselines, curves), indent=1))
    _plot(records, baselines, folder / PROBE_PLOT)
    if curves:
        _plot_curves(curves, folder / PROBE_CURVE_PLOT)
    _append_section(out / REPORT_FILE, bool(curves))
    return folder / PROBE_SUMMARY


def maps_index(out: Path, first: dict[str, Any], records: dict[str, Any], baselines: dict[str, str | None],
               curves: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``probe/maps.json``: each row's map record and each curve's steps, by paths relative to the
    study folder ``out`` (``runs/<variant>/seed0/probe/probe.json``), so the index still resolves
    in a copy of the folder such as a published one."""
    def rel(path: Path) -> str:
        return Path(os.path.relpath(path, out)).as_posix()

    return {"maps": {k: rel(Path(first[k].run_dir) / PROBE_DIR / PROBE_RECORD) for k in records},
            "baselines": baselines,
            "curves": {k: [r["step"] for r in v] for k, v in curves.items()}}


def _plot(records: dict[str, Any], baselines: dict[str, str | None], path: Path) -> None:
    from specreg.experiments.probe import _figure, heat

    panels: list[tuple[str, Any, str | None]] = [(n, r, None) for n, r in records.items() if baselines.get(n) is None]
    panels += [(n, r, baselines[n]) for n, r in records.items() if baselines.get(n) in records]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = _figure(cols, rows)
    for i, (name, record, base) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        sigma, edges = record["axes"]["sigma"], record["axes"]["band_edges"]
        if base is None:
            heat(ax, sigma, edges, _arr(record, "ratio"), title=f"{name}: e/w", diverging=True, label="log10 e/w")
        else:
            d, floor = difference(record, records[base])
            shown = np.where(np.abs(d) > DIFF_FLOORS * floor, 10**d, np.nan)  # within the floors: blank
            heat(ax, sigma, edges, shown, title=f"{name}: e / e({base}) beyond the floor", diverging=True,
                 label="log10 e/e_base")
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


def _plot_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    from specreg.experiments.probe import _figure

    fig = _figure(len(curves), 1)
    for i, (label, records) in enumerate(curves.items()):
        steps, table = curve_summary(records)
        edges = records[0]["axes"]["band_edges"]
        ax = fig.add_subplot(1, len(curves), i + 1)
        for b in range(table.shape[1]):
            ax.plot(steps, table[:, b], marker="o", label=f"[{edges[b]:.2g}, {edges[b + 1]:.2g})")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("weighted mean log10 e/w")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


def _append_section(report: Path, curve: bool) -> None:
    if not report.is_file():
        return
    text = report.read_text()
    if SECTION in text:
        text = text[: text.index(SECTION)].rstrip() + "\n"
    summary, maps, along = (f"{PROBE_DIR}/{name}" for name in (PROBE_SUMMARY, PROBE_PLOT, PROBE_CURVE_PLOT))
    extra = f" and ![error maps along training]({along})" if curve else ""
    text += (f"\n{SECTION}\n\nWhere in (noise level, frequency) each row's denoiser is worse than a Wiener filter, "
             f"and how each variant's error differs from its baseline's: [{summary}]({summary}), "
             f"![error maps]({maps}){extra}.\n")
    report.write_text(text)


__all__ = ["curve_summary", "difference", "probe_study"]
