"""Audio metrics of the paper's vocoder experiment: MR-STFT, PESQ, NDB, DNSMOS.

Audio is given as numpy arrays or tensors: (T,) one mono clip, (B, T) B mono clips or
(B, C, T). Values are in [-1, 1] (full scale). Sample rates are in Hz.

The optional packages (pesq, speechmos, librosa, onnxruntime) are imported only when their
metric is called, with an error naming the package when it is missing. No metric
downloads anything: DNSMOS uses the ONNX models shipped inside speechmos.

Not public metrics: the paper's FAD (VGGish) and UTMOS have no registry entry, because
neither has weights that run offline here (VGGish is not bundled; the utmos package only
loads its checkpoint from the Hugging Face hub, with no local-path option), so they left
the public API; the project's audio Fréchet distance is ``domain_fd`` on the shipped speech
embedding. :func:`frechet_audio_distance` stays as a module helper for an embedder the user
injects (not exported by :mod:`specreg.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import torch

from specreg._checks import check_positive
from specreg.losses.stft import MultiResolutionSTFTLoss
from specreg.metrics.frechet import frechet_distance


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array or tensor, got {type(x).__name__}") from None
    if x.size == 0:
        raise ValueError(f"{name} has shape {x.shape}; expected non-empty audio")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def _clips(x: Any, name: str) -> np.ndarray:
    """Audio as (B, T) mono clips: (T,) → (1, T); (B, T) as is; (B, 1, T) squeezed."""
    x = _as_numpy(x, name)
    if x.ndim == 1:
        return x[None]
    if x.ndim == 3 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 2:
        return x
    raise ValueError(f"{name} has shape {x.shape}; expected (T,), (B, T) or (B, 1, T) mono audio")


def _rate(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} is not accepted; expected a positive integer (Hz)")
    return int(value)


def _same_rate(sample_rate: int, other: int | None, other_name: str) -> int:
    sample_rate = _rate("sample_rate", sample_rate)
    if other is not None and _rate(other_name, other) != sample_rate:
        raise ValueError(
            f"sample_rate={sample_rate} but {other_name}={other}; both signals must have the same "
            "sample rate (resample one first)"
        )
    return sample_rate


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling along the last axis (librosa's default soxr_hq)."""
    if orig_sr == target_sr:
        return x
    from specreg._optional import needs_extra

    with needs_extra("audio", "specreg.metrics.audio.resample"):
        import librosa
    return librosa.resample(x, orig_sr=orig_sr, target_sr=target_sr, axis=-1)


# ----------------------------------------------------------------------------- MR-STFT


@overload
def mr_stft_distance(a: Any, b: Any, sample_rate: int | None = None, *, sample_rate_b: int | None = None,
                     reduction: Literal["mean"] = "mean", **loss_kwargs: Any) -> float: ...


@overload
def mr_stft_distance(a: Any, b: Any, sample_rate: int | None = None, *, sample_rate_b: int | None = None,
                     reduction: Literal["none"], **loss_kwargs: Any) -> torch.Tensor: ...


@overload
def mr_stft_distance(a: Any, b: Any, sample_rate: int | None = None, *, sample_rate_b: int | None = None,
                     reduction: str = "mean", **loss_kwargs: Any) -> float | torch.Tensor: ...


def mr_stft_distance(a: Any, b: Any, sample_rate: int | None = None, *, sample_rate_b: int | None = None,
                     reduction: str = "mean", **loss_kwargs: Any) -> float | torch.Tensor:
    """Multi-resolution STFT distance of generated audio ``a`` to reference ``b``.

    The value of :class:`specreg.losses.stft.MultiResolutionSTFTLoss` (auraloss's
    definition; ``loss_kwargs`` are its resolutions and weights) with ``a`` as x̂0 and
    ``b`` as x0, per clip; ``reduction="mean"`` gives the mean over clips as a float,
    ``"none"`` a float64 tensor (B,). Shapes must be equal. ``sample_rate`` is only
    checked: when both rates are given they must agree (the default resolutions are the
    ones the paper used at 22.05 kHz).
    """
    if sample_rate is not None:
        _same_rate(sample_rate, sample_rate_b, "sample_rate_b")
    x0_hat, x0 = _as_numpy(a, "a"), _as_numpy(b, "b")
    if x0_hat.shape != x0.shape:
        raise ValueError(f"a has shape {x0_hat.shape} but b has shape {x0.shape}; they must be equal")
    if x0.ndim in (1, 2):
        x0_hat, x0 = x0_hat.reshape(-1, 1, x0.shape[-1]), x0.reshape(-1, 1, x0.shape[-1])
    elif x0.ndim != 3:
        raise ValueError(f"a has shape {x0.shape}; expected (T,), (B, T) or (B, C, T)")
    loss = MultiResolutionSTFTLoss(**loss_kwargs, reduction="none")
    with torch.no_grad():
        per = loss(torch.from_numpy(x0_hat), torch.from_numpy(x0))
    if reduction == "none":
        return per
    if reduction != "mean":
        raise ValueError(f"reduction={reduction!r} is not accepted; expected 'mean' or 'none'")
    return float(per.mean())


# ----------------------------------------------------------------------------- PESQ


PESQ_RATES = {8000: "nb", 16000: "wb"}


def pesq(ref: Any, deg: Any, sample_rate: int, *, deg_sample_rate: int | None = None,
         mode: str | None = None, resample_to_16k: bool = False) -> float | np.ndarray:
    """PESQ (ITU-T P.862, MOS-LQO) of degraded ``deg`` against reference ``ref``.

    Uses the ``pesq`` package. Mode ``"nb"`` (P.862.1 mapping) at 8 kHz and ``"wb"``
    (P.862.2) at 16 kHz by default; ``"nb"`` may also be asked for at 16 kHz. Other rates
    raise unless ``resample_to_16k=True`` (e.g. 22.05 kHz vocoder output), which resamples
    both signals to 16 kHz and scores wide-band. Scores run from about 1.0 to the
    mapping's maximum (≈ 4.549 nb, ≈ 4.644 wb). Returns a float for (T,) input, an array
    (B,) for batches. ``ref`` and ``deg`` must have the same shape.
    """
    sample_rate = _same_rate(sample_rate, deg_sample_rate, "deg_sample_rate")
    r, d = _clips(ref, "ref"), _clips(deg, "deg")
    if r.shape != d.shape:
        raise ValueError(f"ref has shape {r.shape} but deg has shape {d.shape}; they must be equal")
    for name, clips in (("ref", r), ("deg", d)):
        silent = np.flatnonzero(np.abs(clips).max(-1) == 0)
        if silent.size:
            raise ValueError(f"{name} clip {int(silent[0])} is silent (all zeros); PESQ needs speech in both signals")
    if sample_rate not in PESQ_RATES:
        if not resample_to_16k:
            raise ValueError(
                f"sample_rate={sample_rate} is not accepted by PESQ; expected 8000 (nb) or 16000 (wb), "
                "or pass resample_to_16k=True"
            )
        r, d = resample(r, sample_rate, 16000), resample(d, sample_rate, 16000)
        sample_rate = 16000
    if mode is None:
        mode = PESQ_RATES[sample_rate]
    if mode not in ("nb", "wb") or (mode == "wb" and sample_rate != 16000):
        raise ValueError(f"mode={mode!r} is not accepted at {sample_rate} Hz; expected 'nb' at 8000, "
                         "'wb' or 'nb' at 16000")
    from specreg._optional import needs_extra

    with needs_extra("audio", "specreg.metrics.audio.pesq"):
        from pesq import PesqError, pesq as _pesq
    scores = []
    for ri, di in zip(r, d):
        try:
            scores.append(float(_pesq(sample_rate, ri, di, mode)))
        except PesqError as e:
            raise ValueError(f"PESQ failed: {type(e).__name__}: {e} (silent or too short audio?)") from e
    return scores[0] if _as_numpy(ref, "ref").ndim == 1 else np.asarray(scores)


# ----------------------------------------------------------------------------- NDB


class NDBResult(NamedTuple):
    """Number and fraction of statistically different bins, and the per-bin details."""

    number: int
    fraction: float
    p_values: np.ndarray  # (k,)
    proportions: np.ndarray  # (k,) of the samples
    reference_proportions: np.ndarray  # (k,)


def ndb(samples: Any, reference: Any, k: int = 50, alpha: float = 0.05, *, seed: int = 0,
        n_init: int = 3) -> NDBResult:
    """Number of statistically different bins (Richardson & Weiss 2018).

    Each sample (any shape after the first dim, flattened to a vector) is a point. The
    reference points are clustered by k-means into ``k`` bins (scikit-learn, seeded); both
    sets are assigned to their nearest centroid, and each bin's proportions are compared
    with a two-sided two-proportion z-test with pooled variance:

        z = (p_s − p_r) / sqrt(p̄ (1 − p̄) (1/n_s + 1/n_r)),  p̄ = (c_s + c_r) / (n_s + n_r)

    A bin is different when its p-value is below ``alpha``. Returns an :class:`NDBResult`;
    ``fraction`` = NDB/k is what the paper reports (0 best). For two samples of one
    distribution the expected fraction is about ``alpha``.
    """
    s = _as_numpy(samples, "samples")
    r = _as_numpy(reference, "reference")
    if s.ndim < 1 or r.ndim < 1:
        raise ValueError("samples and reference must have a leading sample dimension")
    s, r = s.reshape(s.shape[0], -1), r.reshape(r.shape[0], -1)
    if s.shape[1] != r.shape[1]:
        raise ValueError(f"samples have {s.shape[1]} values each but reference {r.shape[1]}; they must match")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k={k!r} is not accepted; expected an integer >= 2")
    if r.shape[0] < k:
        raise ValueError(f"reference has {r.shape[0]} samples; k-means with k={k} bins needs at least k")
    if s.shape[0] < 2:
        raise ValueError(f"samples has {s.shape[0]} samples; expected at least 2")
    alpha = check_positive("alpha", alpha)
    if alpha >= 1:
        raise ValueError(f"alpha={alpha} is not accepted; expected 0 < alpha < 1")
    from specreg._optional import needs_extra

    with needs_extra("metrics", "specreg.metrics.audio.ndb"):
        from scipy.stats import norm
        from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(r)
    c_r = np.bincount(km.labels_, minlength=k).astype(np.float64)
    c_s = np.bincount(km.predict(s), minlength=k).astype(np.float64)
    n_r, n_s = r.shape[0], s.shape[0]
    p_r, p_s = c_r / n_r, c_s / n_s
    pooled = (c_r + c_s) / (n_r + n_s)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_s + 1 / n_r))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (p_s - p_r) / np.where(se > 0, se, 1.0), 0.0)
    p_values = 2 * norm.sf(np.abs(z))
    number = int((p_values < alpha).sum())
    return NDBResult(number, number / k, p_values, p_s, p_r)


# ----------------------------------------------------------------------------- DNSMOS


DNSMOS_RATE = 16000


def dnsmos(audio: Any, sample_rate: int, *, personalized: bool = False) -> dict[str, float] | list[dict[str, float]]:
    """DNSMOS P.835 (Reddy et al. 2022) with the ONNX models shipped in ``speechmos``.

    Runs offline. The models expect 16 kHz, so other rates are resampled (librosa, soxr)
    and then clipped to [−1, 1], which speechmos requires. Clips shorter than 9.01 s are
    looped to that length by speechmos. Returns, per clip, ``{"ovrl_mos", "sig_mos",
    "bak_mos", "p808_mos"}`` on the 1–5 MOS scale; a dict for (T,) input, a list of dicts
    for a batch. ``personalized=True`` uses the personalised DNSMOS models.
    """
    sample_rate = _rate("sample_rate", sample_rate)
    x = _clips(audio, "audio")
    if np.abs(x).max() > 1.0:
        raise ValueError(f"audio peaks at {np.abs(x).max():.3g}; DNSMOS expects values in [-1, 1] (full scale)")
    from specreg._optional import needs_extra

    with needs_extra("audio", "specreg.metrics.audio.dnsmos"):
        from speechmos import dnsmos as _dnsmos
    x = np.clip(resample(x, sample_rate, DNSMOS_RATE), -1.0, 1.0).astype(np.float32)
    model_type = "dnsmos_personalized" if personalized else "dnsmos"
    out = []
    for clip in x:
        res = _dnsmos.run(clip, sr=DNSMOS_RATE, model_type=model_type)
        out.append({key: float(res[key]) for key in ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")})
    return out[0] if _as_numpy(audio, "audio").ndim == 1 else out


# ----------------------------------------------------------------------------- FAD


Embedder = Callable[[torch.Tensor], Any]


def embed_audio(x: Any, embedder: Embedder, batch_size: int = 16) -> np.ndarray:
    """Run ``embedder`` on batches of ``x`` (float32 tensors, first dim = clips) and pool the
    embeddings into (N, D): per-clip (B, D) outputs stay, per-frame (B, frames, D) outputs
    are flattened to B·frames rows (as FAD does with VGGish frames)."""
    xt = torch.as_tensor(_as_numpy(x, "audio"), dtype=torch.float32)
    rows = []
    with torch.no_grad():
        for start in range(0, xt.shape[0], batch_size):
            e = embedder(xt[start:start + batch_size])
            e = torch.as_tensor(e).detach().double().cpu()
            if e.dim() == 3:
                e = e.reshape(-1, e.shape[-1])
            if e.dim() != 2:
                raise ValueError(f"embedder returned shape {tuple(e.shape)}; expected (B, D) or (B, frames, D)")
            rows.append(e.numpy())
    return np.concatenate(rows)


def frechet_audio_distance(a: Any, b: Any, embedder: Embedder | None, *, batch_size: int = 16) -> float:
    """Fréchet audio distance (Kilgour et al. 2019) between generated ``a`` and reference ``b``.

    FAD is the Fréchet distance between Gaussians fitted to embeddings of the two sets
    (see :func:`specreg.metrics.frechet.frechet_distance`). The embedding network is
    injected: ``embedder`` maps a float32 tensor of clips (the first dim of ``a``/``b``) to
    (B, D) or (B, frames, D). The paper used VGGish; its weights are not bundled, so wrap
    your own VGGish (e.g. ``torchvggish`` loaded from a local weights file) or any other
    embedding network. More embedding rows than dimensions are needed.
    """
    if embedder is None or not callable(embedder):
        raise ValueError(
            "frechet_audio_distance needs an embedder: a callable mapping a batch of clips to (B, D) or "
            "(B, frames, D) embeddings. VGGish weights are not bundled and never downloaded; load "
            "VGGish from a local weights file (e.g. with torchvggish) and pass it, or use another "
            "embedding network"
        )
    return frechet_distance(embed_audio(a, embedder, batch_size), embed_audio(b, embedder, batch_size))


__all__ = ["NDBResult", "dnsmos", "mr_stft_distance", "ndb", "pesq", "resample"]
