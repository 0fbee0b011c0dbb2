"""Evaluate generated samples against a reference set: ``specreg eval`` and its functions.

:func:`evaluate` takes two in-memory batches; :func:`evaluate_dirs` loads them from disk,
runs :func:`evaluate` and writes ``metrics.json``, ``metrics.md`` (a markdown table) and
``spectrum.png`` (radially averaged power spectra) into an output folder.

Metrics (names accepted by ``metrics=`` / ``--metrics``):

============  ======  =================================================================
name          kinds   value (keys written)
============  ======  =================================================================
lsd           both    log-spectral distance over all radial bins, in decades (``lsd``),
                      and the signed mean log10 ratio (``lsd_bias``; > 0 = too much power)
lsd_low       both    the same on f ∈ [0, 1/6) cycles/sample (``lsd_low``, ``lsd_low_bias``)
lsd_mid       both    f ∈ [1/6, 1/3)
lsd_high      both    f ∈ [1/3, 1/2]
domain_fd     both    domain Fréchet distance on the shipped classifier's features
                      (:mod:`specreg.metrics.domain`); *not* FID/FAD
domain_kid    both    KID on the same features (``domain_kid``, ``domain_kid_std``)
ndb           both    NDB/k on pixels (images) or log-mel spectrograms (audio)
                      (``ndb``, ``ndb_number``, ``ndb_bins``)
mrstft        audio   multi-resolution STFT distance, paired (sample i vs reference i)
pesq          audio   PESQ MOS-LQO, paired
dnsmos        audio   DNSMOS P.835 of the samples alone (``dnsmos_ovrl``, ``dnsmos_sig``,
                      ``dnsmos_bak``, ``dnsmos_p808``)
============  ======  =================================================================

The spectral definitions are those of :mod:`specreg.metrics.spectrum` (orthonormal DFT,
bins of width 1/min(size) cycles per sample); for audio the frequencies in the plot are
converted to Hz. The domain features: images go through the Fashion-MNIST classifier
(gray images only), audio is resampled to 8 kHz and goes through the speech classifier;
``feature_extractor=`` replaces them (then the label says "user feature extractor").
NDB uses k = min(50, M/10) k-means bins of the M reference items unless told otherwise;
KID uses 100 subsets of min(1000, N, M) items.

Metrics named explicitly must be computable, or a ``ValueError`` says why (too few items
for a full-rank covariance, RGB images for the gray embedding, unpaired data for a
paired metric). With the default list, such metrics are skipped instead and listed with
their reason under ``"skipped"`` in the result and in ``metrics.md``.

Inputs. Images are (N, C, H, W) float in [−1, 1] (uint8 0 … 255 is converted);
audio (N, T) or (N, 1, T) float in [−1, 1] at ``sample_rate`` Hz. Samples and
reference must have the same C, H, W (images) or T (audio) and sample rate.

Sample formats :func:`evaluate_dirs` reads:

* a folder of image files (PNG, JPEG, …; all the same size; gray when every image is
  gray, R = G = B counting as gray) or of audio files (WAV, FLAC, …; all the same sample
  rate and length);
* a tensor file: ``.npy`` (``numpy.save``), ``.pt`` (``torch.save`` of a tensor or of a
  dict holding it under ``"samples"``) or ``.safetensors`` (tensor ``"samples"`` or the
  only tensor; an optional metadata entry ``"sample_rate"``), shaped as above;
* a folder holding ``samples.npy`` / ``samples.pt`` / ``samples.safetensors`` (what
  ``specreg sample --out DIR`` writes; its WAV files give the sample rate);
* a run directory of ``specreg train``: its ``samples/`` folder is searched as above, else
  the newest ``samples/step-XXXXXXXX/`` folder of WAVs, else the newest
  ``samples/step-XXXXXXXX.png`` grid, cut into images with the run's ``config.yaml``.

References: ``fashion-mnist`` (the 10 000 test images at the samples' size: native 28,
padded to 32 as in training, else resized), ``textures`` (crops from the held-out
``eval`` rows of the scikit-image textures; the run's texture names when known),
``speech`` (every non-overlapping segment of the samples' length of the held-out Asterisk
prompts, loaded at the samples' sample rate), a folder of images or audio files (images
are resized/cropped to the samples' size; audio must have the samples' sample rate and
is cut into segments of their length, or paired one file per sample in sorted order when
a paired metric is asked for), or a tensor file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports happen inside the functions, so `specreg --help` stays fast
    import numpy as np
    import torch

KINDS = ("image", "audio")

REFERENCES: dict[str, str] = {
    "fashion-mnist": "Fashion-MNIST test split (10 000 images)",
    "textures": "scikit-image texture crops from the held-out eval rows",
    "speech": "held-out (eval) Asterisk speech prompts, cut into segments",
}
REFERENCE_ALIASES = {"fashion_mnist": "fashion-mnist", "fashion": "fashion-mnist", "fashionmnist": "fashion-mnist",
                     "texture": "textures", "asterisk": "speech"}

_SPECTRAL = {
    "lsd": (None, "all radial bins"),
    "lsd_low": ("low", "f < 1/6 cycles/sample"),
    "lsd_mid": ("mid", "1/6 <= f < 1/3 cycles/sample"),
    "lsd_high": ("high", "f >= 1/3 cycles/sample"),
}
METRICS: dict[str, tuple[str, ...]] = {
    "image": ("lsd", "lsd_low", "lsd_mid", "lsd_high", "domain_fd", "domain_kid", "ndb"),
    "audio": ("lsd", "lsd_low", "lsd_mid", "lsd_high", "domain_fd", "domain_kid", "ndb", "mrstft", "pesq",
              "dnsmos"),
}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "image": ("lsd", "lsd_low", "lsd_mid", "lsd_high", "domain_fd", "domain_kid"),
    "audio": ("lsd", "lsd_high", "domain_fd", "domain_kid", "ndb"),
}
PAIRED_METRICS = ("mrstft", "pesq")
SAMPLE_FILES = ("samples.npy", "samples.pt", "samples.safetensors")
TENSOR_SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")
USER_FD_LABEL = "Fréchet distance on the features of a user feature extractor"
USER_KID_LABEL = "KID on the features of a user feature extractor"


# ============================================================================ evaluate


def _check_metrics(metrics: Iterable[str] | str | None, kind: str) -> tuple[str, ...]:
    if metrics is None:
        return DEFAULT_METRICS[kind]
    if isinstance(metrics, str):
        metrics = [metrics]
    names = []
    for m in metrics:
        for name in str(m).split(","):
            name = name.strip().lower().replace("-", "_")
            if not name:
                continue
            if name not in METRICS[kind]:
                other = next((k for k in KINDS if k != kind and name in METRICS[k]), None)
                hint = f" (it applies to {other} data)" if other else ""
                raise ValueError(f"metrics contains {name!r}, which is not a metric for {kind} data{hint}; "
                                 f"accepted: {list(METRICS[kind])}")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError(f"metrics is empty; accepted: {list(METRICS[kind])}")
    return tuple(names)


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


def _shipped_extractor(kind: str) -> Any:
    from specreg.metrics.domain import fashion_embedding, speech_embedding

    return fashion_embedding() if kind == "image" else speech_embedding()


def _labels(metrics: Sequence[str], kind: str, user_extractor: bool, embedding_name: str) -> dict[str, str]:
    from specreg.metrics.domain import DOMAIN_FD_LABEL, DOMAIN_KID_LABEL

    out: dict[str, str] = {}
    for m in metrics:
        if m in _SPECTRAL:
            where = _SPECTRAL[m][1]
            out[m] = f"log-spectral distance, RMS of log10(P_gen/P_ref) over {where} (decades)"
            out[f"{m}_bias"] = f"mean of log10(P_gen/P_ref) over {where} (decades; > 0 = too much power)"
        elif m == "domain_fd":
            fd = USER_FD_LABEL if user_extractor else f"{DOMAIN_FD_LABEL}; features: {embedding_name}"
            out[m] = fd
        elif m == "domain_kid":
            out[m] = USER_KID_LABEL if user_extractor else f"{DOMAIN_KID_LABEL}; features: {embedding_name}"
            out[f"{m}_std"] = "standard deviation of the KID over its random subsets"
        elif m == "ndb":
            on = "log-mel spectrograms" if kind == "audio" else "pixels"
            out[m] = f"NDB/k: fraction of k-means bins (fitted on the reference {on}) whose share differs (p < 0.05)"
            out["ndb_number"] = "number of statistically different bins"
            out["ndb_bins"] = "number of bins k"
        elif m == "mrstft":
            out[m] = "multi-resolution STFT distance, sample i vs reference i (auraloss definition; lower is better)"
        elif m == "pesq":
            out[m] = "PESQ MOS-LQO, sample i degraded vs reference i (nb at 8 kHz, wb at 16 kHz, else wb at 16 kHz)"
        elif m == "dnsmos":
            for key, what in (("ovrl", "overall"), ("sig", "signal"), ("bak", "background"), ("p808", "P.808")):
                out[f"dnsmos_{key}"] = f"DNSMOS P.835 {what} MOS of the samples (1–5, higher is better)"
    return out


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _skip_or_raise(problems: dict[str, str], names: list[str], explicit: bool) -> dict[str, str]:
    """Metrics that cannot be computed: an error when the caller asked for them by name,
    otherwise (the defaults) they are dropped and reported under ``"skipped"``."""
    if problems and explicit:
        raise ValueError(next(iter(problems.values())))
    for name in problems:
        names.remove(name)
    return problems


def evaluate(samples: Any, reference: Any, *, kind: str = "image", metrics: Iterable[str] | str | None = None,
             ndim: int | None = None, sample_rate: int | None = None, reference_sample_rate: int | None = None,
             batch_size: int = 256, feature_extractor: Any = None, kid_subsets: int = 100,
             kid_subset_size: int | None = None, ndb_bins: int | None = None, seed: int = 0,
             device: str | None = None, progress: bool = True, return_spectra: bool = False) -> dict[str, Any]:
    """Compute ``metrics`` of generated ``samples`` against ``reference``.

    Args:
        samples, reference: images (N, C, H, W) in [−1, 1] (or uint8), or audio (N, T) /
            (N, 1, T) in [−1, 1]; numpy arrays or tensors. N may differ between them.
        kind: ``"image"`` or ``"audio"``.
        metrics: names from :data:`METRICS` (a list or a comma-separated string);
            ``None`` = :data:`DEFAULT_METRICS` of the kind, where those that the data
            cannot support (too few items for a covariance, RGB images for the gray
            embedding) are skipped and listed under ``"skipped"`` instead of raising.
        ndim: spatial dims for the spectral metrics (default 2 for images, 1 for audio;
            3 for volumes with ``kind="image"``, spectral metrics only).
        sample_rate, reference_sample_rate: audio rates in Hz (the second defaults to the
            first; they must agree).
        batch_size: items per forward pass of the feature extractor. Results do not
            depend on it (running sums are float64; features are computed per item).
        feature_extractor: replaces the shipped domain embedding (images: (N, C, H, W);
            audio: (N, 1, T) at ``sample_rate``) → (N, D).
        kid_subsets, kid_subset_size: KID's random subsets (default size min(1000, N, M)).
        ndb_bins: k of NDB (default min(50, M // 10), at least 2; M = reference count).
        seed: seed of KID's subsets and NDB's k-means.
        device: where the feature extractors run (default CPU).
        progress: show a tqdm bar on stderr.
        return_spectra: add ``"spectra"``: ``{"freqs", "samples", "reference"}`` float64
            tensors (frequencies in cycles per sample).

    Returns:
        ``{"kind", "n_samples", "n_reference", "shape", "sample_rate", "metrics": {key:
        float}, "labels": {key: meaning}, "embedding": {...} or None, "skipped": {name:
        reason}}``.
    """
    import torch

    from specreg._checks import check_choice, check_ndim

    kind = check_choice("kind", kind, KINDS)
    ndim = check_ndim(ndim if ndim is not None else (2 if kind == "image" else 1))
    if kind == "audio" and ndim != 1:
        raise ValueError(f"ndim={ndim} is not accepted for audio; expected 1")
    names = list(_check_metrics(metrics, kind))
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
    paired = [p for p in names if p in PAIRED_METRICS]
    if paired and x.shape != r.shape:
        raise ValueError(f"{paired} compare sample i with reference i, so they need as many reference clips "
                         f"as samples of the same length; got samples {tuple(x.shape)} and reference "
                         f"{tuple(r.shape)}")

    device = torch.device(device or "cpu")
    shipped = None  # the shipped embedding: domain features, and the log-mel front end of audio NDB
    if (feature_extractor is None and {"domain_fd", "domain_kid"} & set(names)) or (kind == "audio" and "ndb" in names):
        shipped = _shipped_extractor(kind).to(device)
    kid_size = kid_subset_size if kid_subset_size is not None else min(1000, n, m)
    k_ndb = ndb_bins if ndb_bins is not None else max(2, min(50, m // 10))
    skipped = _skip_or_raise(_problems(names, kind, x, m, shipped, feature_extractor, kid_size, k_ndb),
                             names, explicit=metrics is not None)

    extractor = feature_extractor if feature_extractor is not None else shipped
    if isinstance(extractor, torch.nn.Module):
        extractor = extractor.to(device).eval()
    embedding_info = None
    if feature_extractor is None and {"domain_fd", "domain_kid"} & set(names):
        meta = shipped.metadata
        embedding_info = {"name": type(shipped).__name__, "dim": shipped.dim, "task": meta.get("task"),
                          "accuracy": meta.get("accuracy", {}).get("test"), "label": shipped.description}

    state = _Accumulators(names, kind, ndim, sample_rate, extractor, feature_extractor is None, shipped, device)
    total = len(_batches(n, batch_size)) + len(_batches(m, batch_size))
    if state.per_clip:
        total += len(_batches(n, batch_size))
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="specreg eval", unit="batch", disable=not progress, file=sys.stderr) as bar:
        for real, data in ((False, x), (True, r)):
            for sl in _batches(data.shape[0], batch_size):
                state.update(data[sl], real)
                bar.update(1)
        if state.per_clip:
            for sl in _batches(n, batch_size):
                state.update_paired(x[sl], r[sl])
                bar.update(1)
    values, spectra = state.compute(kid_subsets, kid_size, k_ndb, seed)

    result: dict[str, Any] = {
        "kind": kind, "n_samples": n, "n_reference": m, "shape": list(x.shape[1:]),
        "sample_rate": sample_rate if kind == "audio" else None,
        "metrics": values,
        "labels": _labels(names, kind, feature_extractor is not None,
                          "" if embedding_info is None else _embedding_name(embedding_info)),
        "embedding": embedding_info,
        "skipped": skipped,
    }
    if return_spectra:
        result["spectra"] = spectra
    return result


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


def _problems(names: Sequence[str], kind: str, x: torch.Tensor, m: int, shipped: Any, feature_extractor: Any,
              kid_size: int, k_ndb: Any) -> dict[str, str]:
    """Why each requested metric cannot be computed on these data (empty when all can)."""
    n = x.shape[0]
    out: dict[str, str] = {}
    domain = [p for p in names if p in ("domain_fd", "domain_kid")]
    if domain and feature_extractor is None and kind == "image" and (x.dim() != 4 or x.shape[1] != 1):
        for p in domain:
            out[p] = (f"{p} uses the shipped Fashion-MNIST classifier, which takes gray 2-D images (N, 1, H, W); "
                      f"samples have shape {tuple(x.shape)}. Pass feature_extractor= or drop {p} from metrics")
    if "domain_fd" in names and "domain_fd" not in out and shipped is not None and feature_extractor is None:
        d = shipped.dim
        for side, count in (("samples", n), ("reference", m)):
            if count <= d:
                out["domain_fd"] = (f"domain_fd needs more {side} than feature dimensions for a full-rank "
                                    f"covariance: {side} has {count}, the embedding has D={d}; use at least "
                                    f"{5 * d} (5·D for a stable estimate) or drop domain_fd")
                break
    if "domain_kid" in names and "domain_kid" not in out and not 2 <= kid_size <= min(n, m):
        out["domain_kid"] = (f"domain_kid needs subsets of 2 … {min(n, m)} items on each side (samples {n}, "
                             f"reference {m}); got kid_subset_size={kid_size}")
    if "ndb" in names:
        if isinstance(k_ndb, bool) or not isinstance(k_ndb, int) or k_ndb < 2 or m < k_ndb or n < 2:
            out["ndb"] = (f"ndb with k={k_ndb!r} bins needs an integer k >= 2, at least k reference items and 2 "
                          f"samples; got reference {m}, samples {n}")
    return out


class _Accumulators:
    """Running state of every requested metric over the batches of both sides."""

    def __init__(self, names: Sequence[str], kind: str, ndim: int, sample_rate: int | None, extractor: Any,
                 resample_for_extractor: bool, shipped: Any, device: torch.device) -> None:
        from specreg.metrics.spectrum import SpectrumMetric

        self.names, self.kind, self.sample_rate, self.device = list(names), kind, sample_rate, device
        self.extractor, self.shipped = extractor, shipped
        self.resample_for_extractor = resample_for_extractor and kind == "audio"
        self.spectral = [p for p in names if p in _SPECTRAL]
        self.domain = [p for p in names if p in ("domain_fd", "domain_kid")]
        self.spectra = {True: SpectrumMetric(ndim), False: SpectrumMetric(ndim)}
        self.feats: dict[bool, list[Any]] = {True: [], False: []}
        self.ndb_rows: dict[bool, list[Any]] = {True: [], False: []}
        self.per_clip: dict[str, list[Any]] = {p: [] for p in ("mrstft", "pesq", "dnsmos") if p in names}

    def _speech_rate(self, b: torch.Tensor) -> torch.Tensor:
        import torch

        from specreg.metrics.audio import resample
        from specreg.metrics.domain import SPEECH_SAMPLE_RATE

        if self.sample_rate == SPEECH_SAMPLE_RATE:
            return b
        return torch.from_numpy(resample(b.double().numpy(), self.sample_rate, SPEECH_SAMPLE_RATE)).float()

    def update(self, b: torch.Tensor, real: bool) -> None:
        import torch

        if self.spectral:
            self.spectra[real].update(b)
        with torch.no_grad():
            if self.domain:
                inp = self._speech_rate(b) if self.resample_for_extractor else b
                f = self.extractor(inp.to(self.device))
                self.feats[real].append(torch.as_tensor(f).detach().double().cpu().numpy())
            if "ndb" in self.names:
                z = self.shipped.features(self._speech_rate(b).to(self.device)) if self.kind == "audio" else b
                self.ndb_rows[real].append(z.reshape(z.shape[0], -1).double().cpu().numpy())

    def update_paired(self, xb: torch.Tensor, rb: torch.Tensor) -> None:
        import numpy as np

        from specreg.metrics.audio import dnsmos, mr_stft_distance, pesq

        if "mrstft" in self.per_clip:
            self.per_clip["mrstft"].append(mr_stft_distance(xb, rb, reduction="none").numpy())
        if "pesq" in self.per_clip:
            kw = {} if self.sample_rate in (8000, 16000) else {"resample_to_16k": True}
            self.per_clip["pesq"].append(np.atleast_1d(pesq(rb[:, 0].numpy(), xb[:, 0].numpy(), self.sample_rate,
                                                            **kw)))
        if "dnsmos" in self.per_clip:
            # as a WAV writer would: DNSMOS rejects values outside [−1, 1]
            self.per_clip["dnsmos"].extend(dnsmos(xb[:, 0].clamp(-1, 1).numpy(), self.sample_rate))

    def compute(self, kid_subsets: int, kid_size: int, k_ndb: int, seed: int
                ) -> tuple[dict[str, float], dict[str, Any] | None]:
        import numpy as np

        values: dict[str, float] = {}
        spectra = None
        if self.spectral:
            from specreg.metrics.spectrum import log_spectral_distance_from_spectra

            freqs, p = self.spectra[False].compute()
            _, q = self.spectra[True].compute()
            for name in self.spectral:
                values[name], values[f"{name}_bias"] = log_spectral_distance_from_spectra(
                    freqs, p, q, band=_SPECTRAL[name][0])
            spectra = {"freqs": freqs, "samples": p, "reference": q}
        if self.domain:
            from specreg.metrics.frechet import frechet_distance, kid

            fa, fb = np.concatenate(self.feats[False]), np.concatenate(self.feats[True])
            if "domain_fd" in self.domain:
                values["domain_fd"] = frechet_distance(fa, fb)
            if "domain_kid" in self.domain:
                values["domain_kid"], values["domain_kid_std"] = kid(fa, fb, kid_subsets, kid_size, seed=seed)
        if "ndb" in self.names:
            from specreg.metrics.audio import ndb

            res = ndb(np.concatenate(self.ndb_rows[False]), np.concatenate(self.ndb_rows[True]), k=k_ndb, seed=seed)
            values["ndb"], values["ndb_number"], values["ndb_bins"] = res.fraction, float(res.number), float(k_ndb)
        if "mrstft" in self.per_clip:
            values["mrstft"] = float(np.concatenate(self.per_clip["mrstft"]).mean())
        if "pesq" in self.per_clip:
            values["pesq"] = float(np.concatenate(self.per_clip["pesq"]).mean())
        if "dnsmos" in self.per_clip:
            for key in ("ovrl", "sig", "bak", "p808"):
                values[f"dnsmos_{key}"] = float(np.mean([d[f"{key}_mos"] for d in self.per_clip["dnsmos"]]))
        return values, spectra


def _embedding_name(info: dict[str, Any]) -> str:
    acc = info.get("accuracy")
    acc_text = "" if acc is None else f", held-out accuracy {acc:.3f}"
    return f"{info['name']} ({info['task']}; D={info['dim']}{acc_text})"


# ============================================================================ loading


def _read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) or (H, W, 1); 16-bit images are scaled to 8 bits."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float64)
            a = np.clip(np.rint(a / 65535.0 * 255.0), 0, 255).astype(np.uint8)[..., None]
        elif im.mode in ("1", "L", "LA"):
            a = np.asarray(im.convert("L"), dtype=np.uint8)[..., None]
        else:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return a


def load_image_folder(folder: Path) -> torch.Tensor:
    """Every image file under ``folder`` (sorted, recursive) as float32 (N, C, H, W) in [−1, 1]."""
    import numpy as np
    import torch

    from specreg.data.images import IMAGE_EXTENSIONS

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{str(folder)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    arrays = []
    for p in files:
        try:
            arrays.append(_read_image(p))
        except OSError as err:
            raise ValueError(f"cannot read image {str(p)!r}: {err}") from None
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"images in {str(folder)!r} have different sizes {sorted(sizes)}; all samples must have "
                         "one size")
    gray = all(a.shape[2] == 1 or (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]))
               for a in arrays)
    stack = np.stack([a[..., :1] if gray else np.broadcast_to(a, (*a.shape[:2], 3)) for a in arrays])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _audio_files(folder: Path) -> list[Path]:
    from specreg.data.audio import AUDIO_EXTENSIONS

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _read_clips(files: Sequence[Path]) -> tuple[list[np.ndarray], int]:
    """Mono float32 clips at their common native rate (an error if the rates differ)."""
    import soundfile as sf

    clips, rates = [], {}
    for p in files:
        try:
            data, rate = sf.read(str(p), dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"cannot read audio file {str(p)!r}: {err}") from None
        clips.append(data.mean(axis=1))
        rates.setdefault(int(rate), p)
    if len(rates) > 1:
        raise ValueError(f"audio files have different sample rates: "
                         f"{ {r: p.name for r, p in rates.items()} }; resample them to one rate first")
    return clips, next(iter(rates))


def load_audio_folder(folder: Path) -> tuple[torch.Tensor, int]:
    """Every audio file under ``folder`` (sorted) as float32 (N, 1, T) and its sample rate."""
    import numpy as np
    import torch

    files = _audio_files(folder)
    if not files:
        raise ValueError(f"{str(folder)!r} holds no audio files")
    clips, rate = _read_clips(files)
    lengths = {c.size for c in clips}
    if len(lengths) > 1:
        raise ValueError(f"audio files in {str(folder)!r} have different lengths ({min(lengths)} … {max(lengths)} "
                         "samples); generated samples must all have one length")
    if 0 in lengths:
        raise ValueError(f"audio files in {str(folder)!r} are empty")
    return torch.from_numpy(np.stack(clips))[:, None].float(), rate


def load_tensor_file(path: Path) -> tuple[torch.Tensor, int | None]:
    """A tensor from ``.npy``, ``.pt``/``.pth`` or ``.safetensors`` and the sample rate it
    records (safetensors metadata ``sample_rate``), if any."""
    import numpy as np
    import torch

    suffix = path.suffix.lower()
    rate = None
    if suffix == ".npy":
        t: Any = torch.from_numpy(np.load(path, allow_pickle=False))
    elif suffix in (".pt", ".pth"):
        t = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(t, dict):
            if "samples" in t:
                t = t["samples"]
            elif len(t) == 1:
                t = next(iter(t.values()))
            else:
                raise ValueError(f"{str(path)!r} holds a dict with keys {sorted(t)}; expected a tensor or a dict "
                                 "with the key 'samples'")
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            key = "samples" if "samples" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"{str(path)!r} holds tensors {keys}; expected one tensor or one named 'samples'")
            t = f.get_tensor(key)
            meta = f.metadata() or {}
        if "sample_rate" in meta:
            rate = int(meta["sample_rate"])
    else:
        raise ValueError(f"{str(path)!r} is not a tensor file; accepted suffixes: {list(TENSOR_SUFFIXES)}")
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{str(path)!r} does not hold a tensor (got {type(t).__name__})")
    return t, rate


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    cfg = yaml.safe_load(path.read_text())
    return cfg if isinstance(cfg, dict) else {}


def _find_config(path: Path) -> dict[str, Any]:
    """The run config of a run directory, its samples/ folder or a step folder in it."""
    for folder in (path, path.parent, path.parent.parent):
        if (folder / "config.yaml").is_file():
            return _read_config(folder)
    return {}


def split_grid(grid: torch.Tensor, size: int, n: int | None = None) -> torch.Tensor:
    """Cut a sample grid (C, H, W) written by ``save_image_grid`` (square tiles of side
    ``size`` separated and framed by 1-pixel gaps, row-major) into (n, C, size, size)."""
    c, h, w = grid.shape
    rows, cols = (h - 1) / (size + 1), (w - 1) / (size + 1)
    if rows != int(rows) or cols != int(cols) or rows < 1 or cols < 1:
        raise ValueError(f"a grid of {h}×{w} pixels is not made of {size}×{size} tiles with 1-pixel gaps")
    rows, cols = int(rows), int(cols)
    n = rows * cols if n is None else min(n, rows * cols)
    tiles = [grid[:, 1 + i // cols * (size + 1): 1 + i // cols * (size + 1) + size,
                  1 + i % cols * (size + 1): 1 + i % cols * (size + 1) + size] for i in range(n)]
    import torch

    return torch.stack(tiles)


_STEP = re.compile(r"step-(\d+)")


def _newest(paths: Iterable[Path]) -> Path | None:
    steps = [(int(m.group(1)), p) for p in paths if (m := _STEP.fullmatch(p.stem if p.is_file() else p.name))]
    return max(steps)[1] if steps else None


def load_samples(path: str | Path, *, sample_rate: int | None = None) -> dict[str, Any]:
    """Load generated samples from any of the formats in the module docstring.

    Returns ``{"x": tensor, "kind": "image"|"audio", "sample_rate": int|None, "source": str,
    "config": dict}`` (``config`` is the run's config.yaml when one was found, else {}).
    ``sample_rate`` gives the rate of audio tensors that do not record one; it must
    agree with the rate of WAV files or safetensors metadata.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise ValueError(f"samples path {str(path)!r} does not exist")
    config: dict[str, Any] = {}
    rate: int | None = None
    source = str(path)
    if path.is_file():
        x, rate = load_tensor_file(path)
        config = _find_config(path.parent)
    else:
        folder = path
        config = _find_config(path)
        if (path / "samples").is_dir() and not any((path / f).is_file() for f in SAMPLE_FILES):
            folder = path / "samples"
        tensor_file = next((folder / f for f in SAMPLE_FILES if (folder / f).is_file()), None)
        step_dir = _newest(p for p in folder.iterdir() if p.is_dir())
        grid = _newest(folder.glob("step-*.png"))
        if tensor_file is not None:
            x, rate = load_tensor_file(tensor_file)
            source = str(tensor_file)
            wavs = [p for p in _audio_files(folder) if p.parent == folder]
            if rate is None and wavs:
                rate = _read_clips(wavs[:1])[1]
        elif step_dir is not None and _audio_files(step_dir):  # a run's samples/: the newest step's WAVs
            x, rate = load_audio_folder(step_dir)
            source = str(step_dir)
        elif grid is not None:  # a run's samples/: the newest step's PNG grid
            data = config.get("data", {})
            if "size" not in data:
                raise ValueError(f"cannot cut the sample grid {str(grid)!r} into images: the run's config.yaml "
                                 "with data.size is missing; pass a folder of single images or a tensor file")
            g = load_image_file(grid, int(data.get("channels", 1)))
            x = split_grid(g, int(data["size"]), config.get("sample", {}).get("n"))
            source = f"{grid} (grid cut into {x.shape[0]} images)"
        elif _audio_files(folder):
            x, rate = load_audio_folder(folder)
        else:
            from specreg.data.images import IMAGE_EXTENSIONS

            if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file()):
                raise ValueError(
                    f"no samples found in {str(folder)!r}: it holds no image or audio files, no "
                    f"{' / '.join(SAMPLE_FILES)}, and no step-XXXXXXXX samples of a run"
                )
            x = load_image_folder(folder)
    if x.dtype == torch.uint8:
        x = x.float() / 127.5 - 1.0
    if x.dim() == 4:
        kind = "image"
    elif x.dim() in (2, 3):
        kind = "audio"
        if x.dim() == 3 and x.shape[1] != 1:
            raise ValueError(f"samples in {source} have shape {tuple(x.shape)}; expected images (N, C, H, W) or "
                             "mono audio (N, T) / (N, 1, T)")
    else:
        raise ValueError(f"samples in {source} have shape {tuple(x.shape)}; expected images (N, C, H, W) or audio "
                         "(N, T) / (N, 1, T)")
    if x.shape[0] == 0:
        raise ValueError(f"no samples found in {source} (the tensor is empty)")
    if kind == "audio":
        if sample_rate is not None and rate is not None and int(sample_rate) != rate:
            raise ValueError(f"sample_rate={sample_rate} but the samples in {source} are at {rate} Hz; "
                             "resample them instead of relabelling")
        if sample_rate is not None:
            rate = sample_rate
        elif rate is None:
            rate = config.get("data", {}).get("sample_rate")
        if rate is None:
            raise ValueError(f"the audio samples in {source} carry no sample rate; pass sample_rate= "
                             "(--sample-rate)")
    return {"x": x.float(), "kind": kind, "sample_rate": None if kind == "image" else int(rate), "source": source,
            "config": config}


def load_image_file(path: Path, channels: int) -> torch.Tensor:
    """One image file as float32 (C, H, W) in [−1, 1] with ``channels`` channels."""
    import numpy as np
    import torch

    a = _read_image(path)
    a = a[..., :1] if channels == 1 else np.broadcast_to(a, (*a.shape[:2], 3))
    a = np.array(a, dtype=np.uint8)  # a writable copy (PIL arrays are read-only)
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 127.5 - 1.0


def _segments(clips: Sequence[np.ndarray], length: int) -> torch.Tensor:
    """Every non-overlapping ``length``-sample segment of each clip (remainders dropped)."""
    import numpy as np
    import torch

    segs = [c[k * length:(k + 1) * length] for c in clips for k in range(c.size // length)]
    if not segs:
        raise ValueError(f"the reference clips are all shorter than the samples ({length} samples)")
    return torch.from_numpy(np.stack(segs)).float()[:, None]


def _subset(r: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    import torch

    if n is None or n >= r.shape[0]:
        return r
    g = torch.Generator().manual_seed(seed)
    return r[torch.randperm(r.shape[0], generator=g)[:n].sort().values]


def resolve_reference(name: str | Path) -> str | Path:
    """A built-in reference name (aliases folded) or an existing path; else a ValueError."""
    key = str(name).strip().lower()
    key = REFERENCE_ALIASES.get(key, key)
    if key in REFERENCES and not isinstance(name, Path):
        return key
    path = Path(name)
    if path.exists():
        return path
    raise ValueError(f"reference={str(name)!r} is neither a built-in data set nor an existing folder or tensor file; "
                     f"accepted names: {list(REFERENCES)}")


def load_reference(reference: str | Path, like: torch.Tensor, kind: str, *, sample_rate: int | None = None,
                   n_reference: int | None = None, seed: int = 0, paired: bool = False,
                   config: dict[str, Any] | None = None) -> tuple[torch.Tensor, str]:
    """The reference set shaped like the samples ``like`` (see the module docstring).

    Returns ``(reference (M, …) float32, description)``. ``n_reference`` caps M (a seeded
    random subset; for ``textures`` the number of crops, default 2048).
    """
    try:
        return _load_reference(reference, like, kind, sample_rate=sample_rate, n_reference=n_reference, seed=seed,
                               paired=paired, config=config)
    except FileNotFoundError as err:  # a data set that is not installed: the message says how to get it
        raise ValueError(str(err)) from None


def _load_reference(reference: str | Path, like: torch.Tensor, kind: str, *, sample_rate: int | None,
                    n_reference: int | None, seed: int, paired: bool, config: dict[str, Any] | None
                    ) -> tuple[torch.Tensor, str]:
    import torch

    from specreg.metrics.audio import _rate

    ref = resolve_reference(reference)
    config = config or {}
    if kind == "image":
        c, h, w = like.shape[1:]
        if ref == "fashion-mnist":
            from specreg.data.images import FashionMNIST

            if c != 1 or h != w:
                raise ValueError(f"reference 'fashion-mnist' is square gray images; samples have shape "
                                 f"{tuple(like.shape[1:])}")
            fit = "pad" if h in (28, 32) else "resize"  # 32: padded, as FashionMNIST(size=32) trains
            ds = FashionMNIST(split="test", size=h, fit=fit)
            idx = _subset(torch.arange(len(ds)), n_reference, seed)
            r = torch.stack([ds[int(i)][0] for i in idx])
            return r, f"Fashion-MNIST test split, {r.shape[0]} images at {h}×{h} ({fit})"
        if ref == "textures":
            from specreg.data.images import TextureCrops

            if h != w:
                raise ValueError(f"reference 'textures' is square crops; samples are {h}×{w}")
            names = config.get("data", {}).get("names") if config.get("data", {}).get("kind") == "textures" else None
            names = tuple(names or ("brick", "grass", "gravel"))
            count = 2048 if n_reference is None else n_reference
            ds = TextureCrops(names=names, size=h, n=count, seed=seed + 1, channels=c, split="eval")
            r = torch.stack([ds[i][0] for i in range(len(ds))])
            return r, f"{count} texture crops {h}×{h} of {list(names)} from the held-out eval rows (seed {seed + 1})"
        if ref == "speech":
            raise ValueError("reference 'speech' is audio but the samples are images; accepted image references: "
                             "'fashion-mnist', 'textures', a folder of images or a tensor file")
        if ref.is_file():
            r, _ = load_tensor_file(ref)
            r = _subset(r, n_reference, seed)
            return (r.float() / 127.5 - 1.0 if r.dtype == torch.uint8 else r.float()), f"tensor file {ref}"
        from specreg.data.images import ImageFolder

        if h != w:
            raise ValueError(f"a reference image folder is resized and centre-cropped to squares; samples are {h}×{w}")
        ds = ImageFolder(ref, size=h, channels=c, crop="center")
        idx = _subset(torch.arange(len(ds)), n_reference, seed)
        r = torch.stack([ds[int(i)][0] for i in idx])
        return r, f"image folder {ref}, {r.shape[0]} images resized/cropped to {h}×{h}"

    # audio
    rate = _rate("sample_rate", sample_rate)
    length = like.shape[-1]
    if ref in ("fashion-mnist", "textures"):
        raise ValueError(f"reference {ref!r} is images but the samples are audio; accepted audio references: "
                         "'speech', a folder of audio files or a tensor file")
    if ref == "speech":
        if paired:
            raise ValueError("mrstft and pesq compare sample i with its own reference clip; reference 'speech' has "
                             "no such pairing. Pass --reference a folder (or tensor file) of the matching real "
                             "clips, or drop mrstft/pesq")
        from specreg.data.audio import AsteriskSpeech

        ds = AsteriskSpeech(split="eval", sample_rate=rate, segment_length=None)
        r = _subset(_segments(ds.clips, length), n_reference, seed)
        return r, (f"held-out Asterisk prompts ({len(ds)} eval prompts) at {rate} Hz, {r.shape[0]} segments of "
                   f"{length} samples")
    if ref.is_file():
        r, file_rate = load_tensor_file(ref)
        if file_rate is not None and file_rate != rate:
            raise ValueError(f"reference {str(ref)!r} is at {file_rate} Hz but the samples are at {rate} Hz; "
                             "resample one of them first")
        return _subset(r.float(), None if paired else n_reference, seed), f"tensor file {ref}"
    files = _audio_files(ref)
    if not files:
        raise ValueError(f"reference folder {str(ref)!r} holds no audio files")
    clips, ref_rate = _read_clips(files)
    if ref_rate != rate:
        raise ValueError(f"reference folder {str(ref)!r} is at {ref_rate} Hz but the samples are at {rate} Hz; "
                         "resample one of them first")
    if paired:
        import numpy as np

        short = [p.name for p, c in zip(files, clips) if c.size < length]
        if len(clips) != like.shape[0] or short:
            raise ValueError(f"paired metrics need one reference clip per sample, at least {length} samples long, "
                             f"matched in sorted file order; {str(ref)!r} has {len(clips)} clips for "
                             f"{like.shape[0]} samples" + (f", too short: {short[:5]}" if short else ""))
        r = torch.from_numpy(np.stack([c[:length] for c in clips])).float()[:, None]
        return r, f"audio folder {ref}, {len(clips)} clips paired with the samples in sorted order"
    r = _subset(_segments(clips, length), n_reference, seed)
    return r, f"audio folder {ref}, {r.shape[0]} segments of {length} samples from {len(clips)} files"


# ============================================================================ writing


def _fmt(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.3e}"


def write_markdown(result: dict[str, Any], path: Path) -> Path:
    """``metrics.md``: where the numbers come from and one table row per value."""
    lines = ["# specreg eval", "",
             f"- samples: {result.get('samples', '')} ({result['n_samples']} items)",
             f"- reference: {result.get('reference', '')} ({result['n_reference']} items)"]
    if result.get("embedding"):
        lines.append(f"- domain features: {_embedding_name(result['embedding'])}; values are a "
                     "domain Fréchet distance (project classifier), not FID")
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"- skipped {name}: {reason}")
    lines += ["", "| metric | value | meaning |", "|---|---|---|"]
    for key, value in result["metrics"].items():
        meaning = result["labels"].get(key, "").replace("|", "\\|")
        lines.append(f"| {key} | {_fmt(value)} | {meaning} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def evaluate_dirs(samples: str | Path, reference: str | Path, metrics: Iterable[str] | str | None = None,
                  out_dir: str | Path | None = None, *, sample_rate: int | None = None,
                  n_reference: int | None = None, batch_size: int = 256, seed: int = 0,
                  device: str | None = None, progress: bool = True, feature_extractor: Any = None
                  ) -> dict[str, Any]:
    """Load samples and reference from disk, :func:`evaluate` them, write the results.

    ``samples``: a sample folder, run directory or tensor file (module docstring).
    ``reference``: ``fashion-mnist``, ``textures``, ``speech``, a folder or a tensor file.
    ``out_dir`` (default: ``<samples>/eval`` for a folder, ``<file stem>-eval`` next to a
    file) receives ``metrics.json``, ``metrics.md`` and ``spectrum.png`` (when a spectral
    metric was computed). Returns the result dict of :func:`evaluate` plus ``samples``,
    ``reference``, ``out_dir`` and the written ``files``.
    """
    loaded = load_samples(samples, sample_rate=sample_rate)
    x, kind, rate = loaded["x"], loaded["kind"], loaded["sample_rate"]
    names = _check_metrics(metrics, kind)
    paired = any(p in PAIRED_METRICS for p in names)
    r, ref_desc = load_reference(reference, x, kind, sample_rate=rate, n_reference=n_reference, seed=seed,
                                 paired=paired, config=loaded["config"])
    result = evaluate(x, r, kind=kind, metrics=metrics, sample_rate=rate, batch_size=batch_size, seed=seed,
                      device=device, progress=progress, feature_extractor=feature_extractor, return_spectra=True)
    spectra = result.pop("spectra")
    samples_path = Path(samples)
    out = Path(out_dir) if out_dir is not None else (
        samples_path / "eval" if samples_path.is_dir() else samples_path.with_name(samples_path.stem + "-eval"))
    out.mkdir(parents=True, exist_ok=True)
    from specreg import __version__

    result = {"samples": loaded["source"], "reference": ref_desc, **result,
              "specreg_version": __version__, "date": datetime.datetime.now().isoformat(timespec="seconds")}
    files = [out / "metrics.json", out / "metrics.md"]
    if spectra is not None:
        from specreg.metrics.plots import plot_spectra

        freqs = spectra["freqs"]
        xlabel = "frequency (cycles / sample)"
        if kind == "audio":
            freqs, xlabel = freqs * rate, "frequency (Hz)"
        plot_spectra({"samples": (freqs, spectra["samples"])}, reference=(freqs, spectra["reference"]),
                     path=out / "spectrum.png", xlabel=xlabel, title="Radially averaged power spectrum"
                     if kind == "image" else "Power spectrum")
        files.append(out / "spectrum.png")
    result["out_dir"] = str(out)
    result["files"] = [str(f) for f in files]
    (out / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_markdown(result, out / "metrics.md")
    return result


# ============================================================================ CLI


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``specreg eval`` to a sub-parser collection; returns the parser."""
    metric_list = "; ".join(f"{k}: {', '.join(v)}" for k, v in METRICS.items())
    defaults = "; ".join(f"{k}: {','.join(v)}" for k, v in DEFAULT_METRICS.items())
    p = subparsers.add_parser(
        "eval", help="compare generated samples with a reference set (spectra, domain FD/KID, audio metrics)",
        description=(
            "Evaluate generated samples against a reference set and write metrics.json, metrics.md and "
            "spectrum.png. RUN_DIR_OR_SAMPLE_DIR is a folder of PNG/WAV files, a folder with samples.npy "
            "(as written by "
            "`specreg sample`), a run directory of `specreg train` (its samples/ folder: samples.npy, else the "
            "newest step-XXXXXXXX/ WAVs or step-XXXXXXXX.png grid), or a .npy/.pt/.safetensors tensor file "
            "(images N×C×H×W in [-1, 1] or uint8; audio N×T or N×1×T in [-1, 1]). domain_fd and domain_kid use "
            "the project's own small classifiers (Fashion-MNIST; 8 kHz speech degradations): they are a domain "
            "Fréchet distance, not FID/FAD."),
        epilog=("Examples: specreg eval runs/f32 --reference fashion-mnist;  "
                "specreg eval runs/voc/samples/step-00005000 --reference speech --metrics lsd,domain_fd,dnsmos;  "
                "specreg eval gen.npy --reference real_wavs/ --metrics mrstft,pesq --sample-rate 22050"),
    )
    p.add_argument("samples", metavar="RUN_DIR_OR_SAMPLE_DIR", type=Path,
                   help="run directory, sample folder (PNG/WAV or samples.npy) or tensor file")
    p.add_argument("--reference", required=True, metavar="DATASET_OR_DIR",
                   help=f"built-in reference ({', '.join(REFERENCES)}), a folder of images/audio, or a tensor file")
    p.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                   help=f"metrics, space- or comma-separated. Accepted: {metric_list}. Default: {defaults}")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: RUN_DIR_OR_SAMPLE_DIR/eval, or <file stem>-eval next to a "
                        "tensor file)")
    p.add_argument("--sample-rate", type=int, default=None, metavar="HZ",
                   help="audio sample rate in Hz when the samples do not record it (tensor files)")
    p.add_argument("--n-reference", type=int, default=None, metavar="N",
                   help="use at most this many reference items (a seeded subset); textures: number of crops "
                        "(default 2048)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B",
                   help="items per feature-extractor batch (default 256)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of subsets, KID subsets and NDB's k-means (default 0)")
    p.add_argument("--device", default=None, help="torch device of the feature extractors (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    """Hook used by :mod:`specreg.cli` (``COMMAND_MODULES``) to add ``specreg eval``."""
    add_eval_parser(subparsers)


def run_eval(args: argparse.Namespace) -> int:
    """Run ``specreg eval`` from parsed arguments; prints the table, returns 0."""
    for name in ("n_reference", "sample_rate"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')}={v} is not accepted; expected a positive integer")
    result = evaluate_dirs(args.samples, args.reference, args.metrics, args.out, sample_rate=args.sample_rate,
                           n_reference=args.n_reference, batch_size=args.batch_size, seed=args.seed,
                           device=args.device, progress=not args.no_progress)
    width = max((len(k) for k in result["metrics"]), default=0)
    print(f"samples:   {result['samples']} ({result['n_samples']})")
    print(f"reference: {result['reference']} ({result['n_reference']})")
    for key, value in result["metrics"].items():
        print(f"  {key:<{width}}  {_fmt(value)}")
    if result.get("embedding"):
        print("  (domain_fd/domain_kid: domain Fréchet distance (project classifier), not FID)")
    for name, reason in result.get("skipped", {}).items():
        print(f"  skipped {name}: {reason}")
    print(f"wrote {', '.join(result['files'])}")
    return 0


__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "REFERENCES",
    "add_eval_parser",
    "evaluate",
    "evaluate_dirs",
    "load_reference",
    "load_samples",
    "register",
    "run_eval",
    "split_grid",
]
