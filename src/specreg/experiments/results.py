"""The results of a study as one typed object, saved as ``results.json``.

:class:`StudyResults` holds everything a report shows — per variant the mean ± std of
every tabulated key over seeds (with the per-seed values), the noise floor, the training
curves, the timings, the spectra, links to samples — and the comparisons derived from
it: the best row per key, each row's difference to its baseline with its test, its
Benjamini–Hochberg-adjusted p-value and whether it is marked (:mod:`specreg.experiments.stats`;
``results.json`` keeps them under ``significance``), the automatic-λ-against-its-grid
comparison and, for runs measured along training, the steps each variant needs to reach
its baseline's final value and whether each measured run had stopped improving at its end. The report
(:mod:`specreg.experiments.report`) only renders this object, and tests read numbers
from it, never from markdown. ``StudyResults.load`` also reads the ``results.json`` of
earlier versions (they lack curves, timings and spectra; a missing real-vs-real
``spread`` falls back as :func:`specreg.experiments.stats.practical_floor` says).
(Over 400 lines: the typed object and every comparison derived from it, which the
report and the tests read from one place.)
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from specreg.experiments.stats import FDR_Q, Stat, bh_adjust, difference, marked, point_spread, practical_floor
from specreg.files import read_json, write_json
from specreg.layout import BAND_WEIGHTS_PLOT, EVAL_DIR, INVOCATIONS_FILE, RESULTS_FILE, read_point_noise


@dataclass
class Row:
    """One variant: its stats per key over its finished seeds, and what it produced."""

    variant: dict[str, Any]  # name, label, overrides, protocol, baseline, curve
    stats: dict[str, Stat]
    n_done: int = 0
    n_diverged: int = 0
    diverged: list[dict[str, Any]] = field(default_factory=list)  # {seed, error}
    spectrum: dict[str, list[float]] | None = None  # mean over seeds: {freqs, power}
    samples: str | None = None  # path (relative to the study folder) of the first seed's samples
    samples_seed: int | None = None
    band_weights: str | None = None  # learned band weights plot of the first seed, if any

    @property
    def name(self) -> str:
        return str(self.variant["name"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = {k: s.to_dict() for k, s in self.stats.items()}
        return d

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any], variant: Mapping[str, Any] | None = None) -> Row:
        return cls(variant=dict(raw.get("variant") or variant or {"name": name}),
                   stats={k: Stat.from_dict(v) for k, v in (raw.get("stats") or {}).items()},
                   n_done=int(raw.get("n_done", 0)), n_diverged=int(raw.get("n_diverged", 0)),
                   diverged=list(raw.get("diverged") or []), spectrum=raw.get("spectrum"),
                   samples=raw.get("samples"), samples_seed=raw.get("samples_seed"),
                   band_weights=raw.get("band_weights"))


def _adjust(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the BH-adjusted p-value (over the cells that have a test) and the mark to each cell."""
    tested = [c for c in cells if c["p"] is not None]
    for c, q in zip(tested, bh_adjust([c["p"] for c in tested])):
        c["p_adj"] = q
    for c in cells:
        c.setdefault("p_adj", None)
        c["marked"] = marked(c["p_adj"], c["diff"], c["practical_floor"])
    return cells


PLATEAU_TAIL = 0.2  # StudyResults.plateaus: the share of a run's steps whose gain decides "flat"
PLATEAU_STRICT_TAIL = 0.25  # ... and the share whose gain must stay within the floor itself ("strict")
PLATEAU_TREND_TAIL = 0.4  # ... and the share whose least-squares trend is judged against the points' scatter


@dataclass
class StudyResults:
    """A study's results (module docstring). ``study`` is the study with its profile applied
    (as a dict); ``floor`` holds the real-vs-real ``metrics`` (and ``curve_metrics``), the
    descriptions of the ``reference`` and ``floor_set`` and the ``reference_spectrum``."""

    study: dict[str, Any]
    columns: list[str]
    rows: dict[str, Row]
    floor: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    kind: str = "image"
    sample_rate: int | None = None
    curves: list[dict[str, Any]] = field(default_factory=list)  # {run, variant, seed, points}
    # {run, steps, train_s, sample_s, eval_s, status, device, threads, parallel (runs trained at once),
    #  interval (wall-clock start and end of the run's last sitting)}
    timing: list[dict[str, Any]] = field(default_factory=list)
    pretrains: list[dict[str, Any]] = field(default_factory=list)  # {dir, users, steps}
    setup: dict[str, Any] = field(default_factory=dict)
    invocations: list[dict[str, Any]] = field(default_factory=list)
    command: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    device: str = ""
    platform: str = ""
    wall_s: float = 0.0

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = {k: r.to_dict() for k, r in self.rows.items()}
        d["significance"] = self.significance()  # derived: written for readers, recomputed on load
        return d

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StudyResults:
        study = dict(raw["study"])
        variants = {v["name"]: v for v in study.get("variants", [])}
        ev = study.get("evaluation", {})
        columns = list(raw.get("columns") or ev.get("columns") or ev.get("metrics") or [])
        return cls(study=study, columns=columns,
                   rows={k: Row.from_dict(k, r, variants.get(k)) for k, r in raw["rows"].items()},
                   floor=dict(raw.get("floor") or {}),
                   **{k: raw[k] for k in ("labels", "kind", "sample_rate", "curves", "timing", "pretrains", "setup",
                                          "invocations", "command", "versions", "device", "platform", "wall_s")
                      if k in raw})

    @classmethod
    def load(cls, path: str | os.PathLike) -> StudyResults:
        raw = read_json(path)
        if not isinstance(raw, dict) or "rows" not in raw or "study" not in raw:
            raise ValueError(f"{str(path)!r} is not the results.json of a study")
        return cls.from_dict(raw)

    # ------------------------------------------------------------------ derived
    @property
    def variants(self) -> list[str]:
        return list(self.rows)

    @property
    def seeds(self) -> list[int]:
        return list(self.study.get("seeds", []))

    def floor_value(self, key: str) -> float | None:
        v = (self.floor.get("metrics") or {}).get(key)
        return None if v is None else float(v)

    def best(self, key: str) -> float | None:
        """The best score (see :meth:`specreg.metrics.registry.Key.score`) of ``key`` over rows."""
        from specreg.metrics.registry import find_key

        spec = find_key(key)
        if spec is None or not spec.ranked:
            return None
        scores = [spec.score(r.stats[key].mean) for r in self.rows.values() if key in r.stats]
        scores = [s for s in scores if math.isfinite(s)]
        return min(scores) if scores else None

    def is_best(self, variant: str, key: str) -> bool:
        from specreg.metrics.registry import find_key

        best, spec, s = self.best(key), find_key(key), self.rows[variant].stats.get(key)
        return best is not None and spec is not None and s is not None and math.isfinite(s.mean) \
            and spec.score(s.mean) == best

    def spread(self, key: str) -> float | None:
        """The real-vs-real standard deviation of ``key`` at the study's sample counts (the
        floor record's ``spread``; None where the study did not measure it)."""
        v = (self.floor.get("spread") or {}).get(key)
        return None if v is None else float(v)

    def practical_floor(self, key: str) -> tuple[float, str]:
        """The smallest |Δ| of ``key`` that a mark needs, and its rule (see stats)."""
        return practical_floor(key, self.floor_value(key), self.spread(key))

    def _cell(self, variant: str, other: str, key: str) -> dict[str, Any]:
        d = difference(self.rows[variant].stats[key], self.rows[other].stats[key])
        floor, rule = self.practical_floor(key)
        return {"variant": variant, "baseline": other, "key": key, "diff": d.diff, "half_width": d.half_width,
                "p": d.p, "n": d.n, "paired": d.paired, "practical_floor": floor, "floor_rule": rule}

    def cells(self) -> list[dict[str, Any]]:
        """Every variant × key cell of the results table that has a baseline and data: its
        test (stats.difference), its BH-adjusted p-value over the family of tested cells
        (``p_adj``; None without a test), its practical floor and whether it is marked."""
        out = []
        for name, row in self.rows.items():
            base = row.variant.get("baseline")
            if base is None or base not in self.rows:
                continue
            for key in self.columns:
                a, b = row.stats.get(key), self.rows[base].stats.get(key)
                if a is not None and b is not None and math.isfinite(a.mean) and math.isfinite(b.mean):
                    out.append(self._cell(name, base, key))
        return _adjust(out)

    def versus_baseline(self, variant: str, key: str) -> tuple[float, float | None, bool] | None:
        """(Δ = ``variant`` − its baseline of ``key``, its 95 % half-width, marked?) (None
        for a baseline or a row without data)."""
        for c in self.cells():
            if c["variant"] == variant and c["key"] == key:
                return c["diff"], c["half_width"], c["marked"]
        return None

    def significance(self) -> dict[str, Any]:
        """What results.json keeps of the tests: the rule's thresholds, the families and
        every cell with its p-value, adjusted p-value and practical floor."""
        return {"q": FDR_Q, "method": "Benjamini-Hochberg (scipy.stats.false_discovery_control)",
                "family": "every variant x metric cell of the results table with a baseline and >= 2 seeds",
                "lambda_family": "every automatic-lambda - best-of-grid cell (a second family)",
                "cells": self.cells(), "lambda_cells": [
                    {k: e[k] for k in ("auto", "best_name", "key", "diff", "half_width", "p", "p_adj",
                                       "practical_floor", "floor_rule", "marked")} for e in self.lambda_grids()]}

    def median_spread(self, key: str) -> float | None:
        spreads = [r.stats[key].std for r in self.rows.values() if key in r.stats]
        stds = [s for s in spreads if s is not None]
        return statistics.median(stds) if stds else None

    def lambda_grids(self) -> list[dict[str, Any]]:
        """Each automatic λ against its grid of constant λ, per ranked key: the auto row's
        stat, the best and the median of the grid's means, auto's rank among auto + grid
        (1 = best), and auto − best (paired where possible) with its test; these cells are
        their own BH family (``p_adj``, ``marked``)."""
        from specreg.metrics.registry import find_key

        out = []
        for auto, grid in self.study.get("lambda_grids") or []:
            for key in self.columns:
                spec = find_key(key)
                if spec is None or not spec.ranked or auto not in self.rows:
                    continue
                a = self.rows[auto].stats.get(key)
                pts = [(n, self.rows[n].stats[key]) for n in grid if n in self.rows and key in self.rows[n].stats
                       and math.isfinite(self.rows[n].stats[key].mean)]
                if a is None or not math.isfinite(a.mean) or len(pts) < 2:
                    continue
                best_name, best = min(pts, key=lambda p: spec.score(p[1].mean))
                d = difference(a, best)
                floor, rule = self.practical_floor(key)
                out.append({"auto": auto, "key": key, "stat": a, "best": best, "best_name": best_name,
                            "median": statistics.median(p[1].mean for p in pts),
                            "rank": 1 + sum(spec.score(p[1].mean) < spec.score(a.mean) for p in pts),
                            "of": len(pts) + 1, "diff": d.diff, "half_width": d.half_width, "p": d.p,
                            "practical_floor": floor, "floor_rule": rule})
        return _adjust(out)

    def steps_to_reach(self) -> list[dict[str, Any]]:
        """For variants measured along training on several seeds: per ranked key, the first
        curve step at which a seed is at least as good as its baseline's *final* curve value
        at the same seed (None: not reached), with mean ± std over the seeds that reached it."""
        from specreg.metrics.registry import find_key

        curves = {(c["variant"], c["seed"]): c["points"] for c in self.curves}
        out = []
        for name, row in self.rows.items():
            base = row.variant.get("baseline") or name
            seeds = sorted(s for (v, s) in curves if v == name)
            if len(seeds) < 2 or base not in self.rows:
                continue
            for key in self.columns:
                spec = find_key(key)
                if spec is None or not spec.ranked:
                    continue
                by_seed: dict[int, int | None] = {}
                for s in seeds:
                    # the baseline's last curve point: the same number of samples as the curve
                    # it is compared with (the final measurement uses more)
                    last = (curves.get((base, s)) or [{}])[-1].get("metrics", {})
                    target = last.get(key)
                    if target is None:
                        continue
                    hit = [p["step"] for p in curves[(name, s)] if key in p["metrics"]
                           and spec.score(p["metrics"][key]) <= spec.score(target)]
                    by_seed[s] = min(hit) if hit else None
                reached = [v for v in by_seed.values() if v is not None]
                out.append({"variant": name, "baseline": base, "key": key, "by_seed": by_seed,
                            "stat": Stat.of({s: float(v) for s, v in by_seed.items() if v is not None}),
                            "reached": len(reached), "seeds": len(by_seed)})
        return out

    def plateaus(self, tail: float = PLATEAU_TAIL, strict_tail: float = PLATEAU_STRICT_TAIL,
                 trend_tail: float = PLATEAU_TREND_TAIL) -> list[dict[str, Any]]:
        """Has each measured run stopped improving? Per curve and distance key whose
        real-vs-real floor f at the curve's sample size is positive (FD, LSD: a biased
        estimator's level, the scale of its sampling noise; an unbiased KID or a signed bias
        has none): the gain Δ = v(start) − v(last) over the last ``tail`` of the run's steps
        (at least one curve interval), against 2f. ``verdict``: "improving" if Δ > 2f,
        "worsening" if Δ < −2f, else "flat"; a run is long enough for a key when it is not
        "improving". The stricter rule a pretraining is held to adds the gain Δ_q over the last
        ``strict_tail`` of the steps against f itself: ``strict`` is true when the verdict is not
        "improving" and Δ_q ≤ f.

        Both compare single points, whose checkpoint-to-checkpoint scatter can exceed f. The
        trend reading fits a line through every point of the last ``trend_tail`` of the steps
        (:func:`~specreg.experiments.stats.trend`, at least three points): the fitted gain
        G ± h (95 %) over that window, judged by the points' own scatter. ``trend``: "flat" if
        |G| + h ≤ f (the whole interval within the floor, even where it excludes 0), else
        "improving" if G − h > 0, "worsening" if G + h < 0, else "unresolved" (the curve
        cannot tell); None with fewer than three points. ``trend_scatter``: the points'
        residual standard deviation about that line, to set beside one point's sampling
        noise where the run has it measured (a curve's ``point_noise``:
        :func:`~specreg.experiments.stats.point_spread`)."""
        from specreg.experiments.stats import trend
        from specreg.metrics.floor import FACTOR
        from specreg.metrics.registry import find_key

        def start_of(pts: list[dict[str, Any]], share: float) -> dict[str, Any]:
            last = pts[-1]
            window = max(last["step"] - pts[-2]["step"], share * last["step"])
            return max((p for p in pts[:-1] if p["step"] <= last["step"] - window),
                       key=lambda p: p["step"], default=pts[0])

        floors = self.floor.get("curve_metrics") or {}
        out = []
        for c in self.curves:
            pts = c["points"]
            if len(pts) < 2:
                continue
            last, start, q_start = pts[-1], start_of(pts, tail), start_of(pts, strict_tail)
            for key in self.columns:
                spec, f = find_key(key), floors.get(key)
                a, b, q = start["metrics"].get(key), last["metrics"].get(key), q_start["metrics"].get(key)
                if spec is None or not spec.distance or f is None or not f > 0 or a is None or b is None:
                    continue
                gain, bound = spec.score(a) - spec.score(b), FACTOR * float(f)
                verdict = "improving" if gain > bound else "worsening" if gain < -bound else "flat"
                q_gain = None if q is None else spec.score(q) - spec.score(b)
                window = [p for p in pts if p["step"] >= last["step"] * (1 - trend_tail)
                          and p["metrics"].get(key) is not None]
                fit = trend([p["step"] for p in window], [-spec.score(p["metrics"][key]) for p in window])
                reading = None if fit is None else (
                    "flat" if abs(fit.change) + fit.half_width <= float(f) else
                    "improving" if fit.change - fit.half_width > 0 else
                    "worsening" if fit.change + fit.half_width < 0 else "unresolved")
                out.append({"run": c["run"], "key": key, "from_step": start["step"], "to_step": last["step"],
                            "start": a, "end": b, "gain": gain, "bound": bound, "verdict": verdict,
                            "strict_from_step": q_start["step"], "strict_gain": q_gain, "floor": float(f),
                            "strict": verdict != "improving" and q_gain is not None and q_gain <= float(f),
                            "trend_from_step": window[0]["step"] if window else None,
                            "trend_gain": None if fit is None else fit.change,
                            "trend_half_width": None if fit is None else fit.half_width,
                            "trend_p": None if fit is None else fit.p, "trend_n": len(window), "trend": reading,
                            "trend_scatter": None if fit is None else fit.scatter})
        return out


# ============================================================================ building it from a study's runs


def versions() -> dict[str, str]:
    import numpy as np
    import torch

    import specreg

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "specreg": specreg.__version__}


def device_text() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda: " + torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores; one torch thread per run, --jobs threads for a run alone)"


def collect(study: Any, specs: Sequence[Any], floor: Mapping[str, Any], out: Path, *, command: str,
            wall_s: float, invocations: Sequence[Mapping[str, Any]] = ()) -> StudyResults:
    """The :class:`StudyResults` of ``study`` from its runs' records (``spec.recorded``: as
    planning read them, or as the runner returned them; nothing is read back) and the
    study's ``invocations`` (the entries of ``invocations.json``); beside each curve, the
    sampling noise of single points where ``scripts/curve_point_noise.py`` measured it
    (``point_noise.json``, read here: the script writes it after the run). Paths are given
    relative to the study folder ``out``."""
    import json

    import numpy as np

    from specreg.experiments.plan import data_kind

    runs = [s for s in specs if s.protocol != "pretrain"]
    kind, rate = data_kind(runs[0].config)
    study_dict = json.loads(json.dumps(study.to_dict()))  # as results.json holds it (lists, not tuples)
    variant_dicts = {v["name"]: v for v in study_dict["variants"]}
    columns = list(study.column_keys())
    labels = dict(floor.get("labels", {}))
    rows: dict[str, Row] = {}
    for v in study.variants:
        records = [(s, r) for s in runs if s.variant == v.name and (r := s.recorded) is not None]
        ok = [(s, r) for s, r in records if r.status == "done"]
        stats = {key: Stat.of({int(r.seed): r.metrics[key] for _, r in ok if key in (r.metrics or {})})
                 for key in columns}
        for _, r in records:
            labels.update(r.labels or {})
        diverged = [r for _, r in records if r.status == "diverged"]
        row = Row(variant_dicts[v.name], stats, len(ok), len(diverged),
                  [{"seed": r.seed, "error": r.error or ""} for r in diverged])
        if ok:
            spectra = [r.spectrum for _, r in ok]
            row.spectrum = {"freqs": spectra[0]["freqs"],
                            "power": np.mean([p["power"] for p in spectra], axis=0).tolist()}
            first = ok[0][0]
            row.samples_seed = first.seed
            row.samples = str((first.run_dir / EVAL_DIR).relative_to(out))
            if (first.run_dir / BAND_WEIGHTS_PLOT).is_file():  # drawn by the trainer for a loss that learns them
                row.band_weights = str((first.run_dir / BAND_WEIGHTS_PLOT).relative_to(out))
        rows[v.name] = row
    curves = [{"run": s.label, "variant": s.variant, "seed": s.seed, "points": s.recorded.curve,
               **({"point_noise": spread} if (spread := point_spread(read_point_noise(s.run_dir), columns)) else {})}
              for s in specs if s.curve and s.recorded is not None and s.recorded.curve]
    timing = []
    for s in specs:
        rec = s.recorded
        tim = (rec.timing if rec is not None else None) or {}
        timing.append({"run": s.label, "steps": tim.get("steps"), "train_s": tim.get("train_s"),
                       "sample_s": tim.get("sample_s"), "eval_s": tim.get("eval_s"),
                       "status": s.status if rec is None else rec.status,
                       **{k: tim.get(k) for k in ("device", "threads", "parallel", "interval")}})
    pretrains = [{"dir": str(p.run_dir.relative_to(out)), "steps": p.config["train"]["steps"],
                  "users": sorted({s.variant + ("" if s.pretrain_step is None else f" (from step {s.pretrain_step})")
                                   for s in runs if s.pretrain_dir == p.run_dir})}
                 for p in specs if p.protocol == "pretrain"]
    cfg = runs[0].config
    setup = {"steps": sorted({s.config["train"]["steps"] for s in runs}), "batch_size": cfg["train"]["batch_size"],
             "sampler": cfg["sample"]["sampler"], "sample_steps": cfg["sample"]["steps"]}
    return StudyResults(
        study=study_dict, columns=columns, rows=rows,
        floor={k: floor.get(k) for k in ("metrics", "curve_metrics", "spread", "reference", "floor_set",
                                         "reference_spectrum", "ceiling", "ceiling_set") if k in floor},
        labels=labels, kind=kind, sample_rate=rate, curves=curves, timing=timing, pretrains=pretrains, setup=setup,
        invocations=[dict(e) for e in invocations], command=command, versions=versions(),
        device=device_text(), platform=platform.platform(), wall_s=wall_s)


__all__ = ["INVOCATIONS_FILE", "PLATEAU_STRICT_TAIL", "PLATEAU_TAIL", "PLATEAU_TREND_TAIL", "RESULTS_FILE", "Row",
           "StudyResults", "collect", "device_text", "versions"]
