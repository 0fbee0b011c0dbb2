"""Evaluation in the study layer: :func:`measure` (a study's measurement of one run) and
:func:`evaluate_dirs` (``specreg eval``: load from disk, evaluate, write ``metrics.json``,
``metrics.md`` and ``spectrum.png``), both around the library's engine
:func:`specreg.metrics.evaluation.evaluate` (re-exported here as :func:`evaluate`), where
the metrics of the registry are streamed, their floors estimated and their warnings
written. Which metrics exist: :func:`specreg.metrics.registry.metric_table`.

Formats on disk: :mod:`specreg.experiments.loading`; built-in references:
:mod:`specreg.experiments.reference`.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specreg.experiments import loading
from specreg.files import write_json
from specreg.layout import EVAL_DIR, EVAL_RECORD, EVAL_SPECTRUM_PLOT, EVAL_SUMMARY
from specreg.metrics.evaluation import evaluate
from specreg.metrics.registry import KINDS

if TYPE_CHECKING:  # heavy imports happen inside the functions, so `specreg --help` stays fast
    from specreg.experiments.reference import RealSets
    from specreg.experiments.study import Evaluation


def measure(samples: Any, real: RealSets, ev: Evaluation, *, kind: str, sample_rate: int | None,
            reference: Any = None) -> dict[str, Any]:
    """A study's measurement of one set of samples: :func:`evaluate` of ``ev.metrics``
    against ``real.reference`` (or ``reference``) with the study's metric seed and batch
    size, and the samples' radial spectrum. Returns ``{"metrics", "labels", "skipped",
    "spectrum": {"freqs", "power"}}``. ``specreg eval`` of a compare run calls this too,
    so the two agree exactly."""
    res = evaluate(samples, real.reference if reference is None else reference, kind=kind, metrics=ev.metrics,
                   sample_rate=sample_rate, batch_size=ev.batch_size, seed=ev.metric_seed, progress=False,
                   return_spectra=True, peaks=real.peaks, peak_tolerance=ev.peak_tolerance, floor=False)
    spectra = res["spectra"]
    return {"metrics": res["metrics"], "labels": res["labels"], "skipped": res["skipped"],
            "spectrum": {"freqs": spectra["freqs"].tolist(), "power": spectra["samples"].tolist()}}


# ============================================================================ from disk


def _fmt(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.3e}"


def floor_cell(key: str, result: dict[str, Any]) -> str:
    """What stands beside a value: its noise floor, its spread (a key declared ``spread_of``
    it, KID's), or "—" where neither applies."""
    from specreg.metrics.registry import metric_of

    floors = result.get("floors") or {}
    if key in floors:
        return _fmt(floors[key])
    spread = next((k.name for k in getattr(metric_of(key), "keys", ()) if k.spread_of == key), None)
    if spread is not None and spread in result["metrics"]:
        std = result["metrics"][spread]
        return f"spread ± {_fmt(std)}" if math.isfinite(std) else "no spread (subsets = a whole set)"
    return "—"


def write_markdown(result: dict[str, Any], path: Path) -> Path:
    """``metrics.md``: where the numbers come from and one table row per value."""
    from specreg.metrics.registry import embedding_name

    lines = ["# specreg eval", "",
             f"- samples: {result.get('samples', '')} ({result['n_samples']} items)",
             f"- reference: {result.get('reference', '')} ({result['n_reference']} items)"]
    if result.get("embedding"):
        lines.append(f"- domain features: {embedding_name(result['embedding'])}; values are a "
                     "domain Fréchet distance (project classifier), not FID")
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"- skipped {name}: {reason}")
    for text in result.get("warnings", []):
        lines.append(f"- **warning**: {text}")
    if result.get("floor_method"):
        lines.append(f"- noise floor: {result['floor_method']}; a value within twice its floor does not tell the "
                     "two sets apart")
    lines += ["", "| metric | value | noise floor | meaning |", "|---|---|---|---|"]
    for key, value in result["metrics"].items():
        meaning = result["labels"].get(key, "").replace("|", "\\|")
        lines.append(f"| {key} | {_fmt(value)} | {floor_cell(key, result)} | {meaning} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _as_in_study(loaded: dict[str, Any], reference: str | Path | None) -> Evaluation | None:
    """The evaluation settings of a run that ``specreg compare`` measured, when ``reference``
    is that study's (or not given); None otherwise."""
    from specreg.experiments.reference import canonical_reference
    from specreg.experiments.study import Evaluation

    rec = loaded.get("record") or {}
    if "evaluation" not in rec or not loaded.get("config"):
        return None
    ev = Evaluation.from_dict(rec["evaluation"])
    if reference is not None and canonical_reference(str(reference)) != ev.reference:
        return None
    return ev


def evaluate_dirs(samples: str | Path, reference: str | Path | None = None,
                  metrics: Iterable[str] | str | None = None, out_dir: str | Path | None = None, *,
                  sample_rate: int | None = None, n_reference: int | None = None, batch_size: int | None = None,
                  seed: int | None = None, reference_seed: int | None = None, device: str | None = None,
                  progress: bool = True, feature_extractor: Any = None, crop: bool = False,
                  split: str | None = None) -> dict[str, Any]:
    """Load samples and reference from disk, :func:`evaluate` them, write the results.

    ``samples``: a sample folder, run directory or tensor file
    (:mod:`specreg.experiments.loading`). ``reference``: a built-in set
    (``fashion-mnist``, ``textures``, ``checkerboards``, ``speech``), a folder or a tensor
    file; it may be left out for a run directory that ``specreg compare`` measured, whose
    recorded settings (reference, counts, seeds, metrics) are then the defaults, so the
    result equals compare's for that run. ``seed`` seeds KID's subsets and NDB's k-means
    (default 0), the halves of the noise floor and ``crop``'s offsets; ``reference_seed`` the
    choice of reference items (default 1, as a study's). ``split``: the rows of a built-in
    reference (``None``: the held-out ones — Fashion-MNIST test images, the texture
    photographs' held-out ``eval`` rows, the held-out speech prompts — as ``specreg
    compare`` by default; ``"train"``: the training rows). ``crop``: audio clips of
    different lengths are cut by one rule on both sides — the shortest clip of either set
    gives the length T, and every clip of each set gives one T-sample segment at an offset
    seeded by ``seed`` (:func:`specreg.experiments.loading.crop_clips`).
    ``out_dir`` (default: ``<samples>/eval`` for a folder, ``<file stem>-eval`` next to a
    file) receives ``metrics.json``, ``metrics.md`` and ``spectrum.png``. Returns the
    result dict of :func:`evaluate` plus ``samples``, ``reference``, ``out_dir`` and the
    written ``files``.
    """
    from specreg.metrics.registry import METRICS, check_metrics

    crop_length = None
    if crop and reference is not None and Path(reference).is_dir():
        crop_length = loading.shortest_clip(Path(reference))  # both sets cut to the shorter of the two
    crop_seed = 0 if seed is None else seed
    loaded = loading.load_samples(samples, sample_rate=sample_rate, crop=crop, crop_length=crop_length,
                                  seed=crop_seed)
    x, kind, rate = loaded["x"], loaded["kind"], loaded["sample_rate"]
    study = _as_in_study(loaded, reference)
    peaks = tolerance = None
    if study is not None:
        from dataclasses import replace

        ev = replace(study, n_reference=study.n_reference if n_reference is None else n_reference,
                     reference_seed=study.reference_seed if reference_seed is None else reference_seed,
                     split=study.split if split is None else split)
        real = ev.real_sets(loaded["config"], floor=False)
        r, ref_desc, peaks, tolerance = real.reference, real.description, real.peaks, ev.peak_tolerance
        metrics = ev.metrics if metrics is None else metrics
        seed = ev.metric_seed if seed is None else seed
        batch_size = ev.batch_size if batch_size is None else batch_size
    else:
        if reference is None:
            raise ValueError(f"reference=None is not accepted for {str(samples)!r}: pass --reference (a built-in "
                             "set, a folder or a tensor file); it may be left out only for a run directory that "
                             "specreg compare measured")
        names = check_metrics(metrics, kind)
        paired = any(METRICS[p].paired for p in names)
        from specreg.experiments.reference import load_reference

        r, ref_desc = load_reference(reference, x, kind, sample_rate=rate, n_reference=n_reference,
                                     seed=1 if reference_seed is None else reference_seed, paired=paired,
                                     config=loaded["config"], split=split,
                                     crop_seed=crop_seed if crop and kind == "audio" else None)
    result = evaluate(x, r, kind=kind, metrics=metrics, sample_rate=rate, batch_size=batch_size or 256,
                      seed=0 if seed is None else seed, device=device, progress=progress,
                      feature_extractor=feature_extractor, return_spectra=True, peaks=peaks, peak_tolerance=tolerance)
    spectra = result.pop("spectra")
    samples_path = Path(samples)
    out = Path(out_dir) if out_dir is not None else (
        samples_path / EVAL_DIR if samples_path.is_dir() else samples_path.with_name(samples_path.stem + "-eval"))
    out.mkdir(parents=True, exist_ok=True)
    from specreg import __version__

    result = {"samples": loaded["source"], "reference": ref_desc, **result,
              "specreg_version": __version__, "date": datetime.datetime.now().isoformat(timespec="seconds")}
    files = [out / EVAL_RECORD, out / EVAL_SUMMARY]
    from specreg.metrics.plots import floor_per_bin, plot_spectra

    freqs = spectra["freqs"]
    xlabel = "frequency (cycles / sample)"
    if kind == "audio":
        freqs, xlabel = freqs * rate, "frequency (Hz)"
    floor = floor_per_bin(spectra["freqs"], result.get("floors") or {}) if result.get("floors") else None
    plot_spectra({"samples": (freqs, spectra["samples"])}, reference=(freqs, spectra["reference"]),
                 path=out / EVAL_SPECTRUM_PLOT, xlabel=xlabel, title="Radially averaged power spectrum"
                 if kind == "image" else "Power spectrum", floor=floor)
    files.append(out / EVAL_SPECTRUM_PLOT)
    result["out_dir"] = str(out)
    result["files"] = [str(f) for f in files]
    write_json(out / EVAL_RECORD, result, finite=True)  # an infinite metric: null, named under non_finite
    write_markdown(result, out / EVAL_SUMMARY)
    return result


__all__ = ["KINDS", "evaluate", "evaluate_dirs", "measure", "write_markdown"]


def __getattr__(name: str) -> Any:
    """Names of earlier versions, now read from the registries: ``METRICS`` and
    ``DEFAULT_METRICS`` (kind → metric names), ``REFERENCES`` (built-in reference sets)."""
    if name in ("METRICS", "DEFAULT_METRICS"):
        from specreg.metrics.registry import default_metrics, metric_names

        names = metric_names if name == "METRICS" else default_metrics
        return {k: names(k) for k in KINDS}
    if name == "REFERENCES":
        from specreg.experiments.reference import REFERENCE_SETS

        return REFERENCE_SETS
    if name in ("load_samples", "split_grid"):
        return getattr(loading, name)
    if name == "load_reference":
        from specreg.experiments.reference import load_reference

        return load_reference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
