"""The evaluation engine: stream generated samples and a reference set through the
metrics of the registry (:mod:`specreg.metrics.registry`), batch by batch, with the noise
floor of every two-set distance estimated from both sets alike (:mod:`specreg.metrics.floor`).

:func:`evaluate` takes two in-memory batches and returns one result dict; it knows no
metric by name: each registry entry says what it writes, which data it applies to, its
floor and its warnings. Studies (:func:`specreg.experiments.evaluate.measure`) and
``specreg eval`` (:func:`specreg.experiments.evaluate.evaluate_dirs`) call it. The
metrics, for docs and help: :func:`specreg.metrics.registry.metric_table`.

Metrics named explicitly must be computable, or a ``ValueError`` says why (too few items
for a full-rank covariance, RGB images for the gray embedding, unpaired data for a
paired metric). With the default list, such metrics are skipped instead and listed with
their reason under ``"skipped"``.

Inputs. Images are (N, C, H, W) float in [−1, 1] (uint8 0 … 255 is converted);
audio (N, T) or (N, 1, T) float in [−1, 1] at ``sample_rate`` Hz. Samples and
reference must have the same C, H, W (images) or T (audio) and sample rate.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports happen inside the functions, so `specreg --help` stays fast
    import torch


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
        a dict with ``"kind"``, ``"n_samples"``, ``"n_reference"``, ``"shape"``,
        ``"sample_rate"``, ``"metrics"`` ({key: float}), ``"labels"`` ({key: meaning}),
        ``"floors"`` ({key: noise floor}), ``"floor_method"`` (str), ``"within_floor"``
        (keys whose absolute value is below twice their floor), ``"embedding"`` (dict or None), ``"skipped"``
        ({name: reason}) and ``"warnings"`` (list of str).
    """
    from specreg._checks import check_choice, check_ndim
    from specreg.metrics.floor import METHOD, SplitFloor, within_floor
    from specreg.metrics.registry import KINDS, METRICS, Batch, Context, check_metrics, labels
    from specreg.metrics.streaming import Spectra

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
    parts = [METRICS[name].floor(ctx) for name in names if METRICS[name].floor is not None]  # type: ignore[misc]
    splits = SplitFloor({False: n, True: m}, parts, seed=seed) if floor and parts else None
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
    for name, acc in accumulators.items():
        values.update(METRICS[name].results(acc))
    floors = splits.compute() if splits is not None else {}
    # a metric that estimates its own floor writes it as a key declared floor_of (fid_floor)
    floors.update({k.floor_of: values[k.name] for name in names for k in METRICS[name].keys
                   if k.floor_of and k.name in values and k.floor_of in values})
    within = within_floor(values, floors)
    result: dict[str, Any] = {
        "kind": kind, "n_samples": n, "n_reference": m, "shape": list(x.shape[1:]),
        "sample_rate": sample_rate if kind == "audio" else None,
        "metrics": values, "labels": labels(names, ctx),
        "floors": {key: floors[key] for key in values if key in floors},
        "floor_method": METHOD if floors else None,
        "within_floor": within,
        "embedding": ctx.embedding if any(METRICS[name].features for name in names) else None,
        "skipped": problems,
        "warnings": _warnings(values, floors, within, x, r, ctx, names),
    }
    if spectrum is not None:
        freqs, p, q = spectrum.spectra()
        result["spectra"] = {"freqs": freqs, "samples": p, "reference": q}
    return result


def _warnings(values: dict[str, float], floors: dict[str, float], within: list[str], x: torch.Tensor,
              r: torch.Tensor, ctx: Any, names: list[str]) -> list[str]:
    """What a reader of these numbers should know that the numbers do not say: values within
    their floor, items shared by both sets, then each metric's own warnings (its registry
    entry's). Every verdict here is symmetric in samples and reference (the floors are,
    :mod:`specreg.metrics.floor`)."""
    from specreg.metrics.registry import METRICS

    out = []
    n, m = x.shape[0], r.shape[0]
    if within:
        listed = ", ".join(f"{key} = {values[key]:.3g} (floor {floors[key]:.3g})" for key in within)
        out.append(f"within twice their noise floor at {n} vs {m} items: {listed}. These counts cannot tell the two "
                   "sets apart there; use more items")  # twice: specreg.metrics.floor.FACTOR
    shared = len({hash(t.numpy().tobytes()) for t in x} & {hash(t.numpy().tobytes()) for t in r})
    if shared:
        out.append(f"{shared} of the {n} samples are also items of the reference: distances between overlapping "
                   "sets are biased low (and KID negative)")
    for name in names:
        if METRICS[name].warnings is not None:
            out.extend(METRICS[name].warnings(values, ctx, x, r))  # type: ignore[misc]
    return out


__all__ = ["evaluate"]
