"""The streaming side of the metric registry: the :class:`Context` a metric is computed in,
the :class:`Batch` whose shared work (spectra, domain features, NDB vectors) is computed
once and cached for every metric, and the accumulators the registry's entries build
(:class:`~specreg.metrics.accumulator.Accumulator`: ``update(batch)``, ``update_paired(x,
r)`` for paired metrics, ``merge``, ``sync``, ``compute() -> {key: value}``); their rules
of applicability and warnings are in :mod:`specreg.metrics.rules`. Every accumulator takes the
metric's name and writes its keys from it; nothing here branches on a metric's name.
Float64 running sums where the metric allows, so results do not depend on the batching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from specreg.metrics.accumulator import Accumulator

if TYPE_CHECKING:  # heavy imports happen inside the functions, so the CLI's --help stays fast
    import numpy as np
    import torch


@dataclass
class Context:
    """What a metric needs to know about the data and the evaluation."""

    kind: str
    ndim: int
    n: int  # samples
    m: int  # reference items
    shape: tuple[int, ...]  # (C, *spatial) of one item
    sample_rate: int | None = None
    seed: int = 0  # KID subsets, NDB's k-means
    device: Any = "cpu"
    feature_extractor: Any = None  # user features for domain_fd/domain_kid
    kid_subsets: int = 100
    kid_subset_size: int | None = None  # default min(1000, n // 2, m // 2)
    ndb_bins: int | None = None  # default max(2, min(50, m // 10))
    peaks: list[tuple[float, ...]] | None = None  # known spectral lines (peak_energy)
    peak_tolerance: float | None = None  # cycles/sample; default two bins
    _shipped: Any = field(default=None, repr=False)

    @property
    def rate(self) -> int:
        """The audio sample rate, which the audio metrics need."""
        if self.sample_rate is None:
            raise ValueError("this metric needs the audio's sample rate; the evaluation context has none")
        return self.sample_rate

    @property
    def kid_size(self) -> int:
        # subsets smaller than both sets, so that their spread says how much the value moves
        # with the items drawn; subsets as large as a set would all be that set (spread 0)
        return self.kid_subset_size if self.kid_subset_size is not None else min(1000, self.n // 2, self.m // 2)

    @property
    def ndb_k(self) -> Any:
        return self.ndb_bins if self.ndb_bins is not None else max(2, min(50, self.m // 10))

    @property
    def shipped(self) -> Any:
        """The project's domain embedding for this kind of data (loaded once, offline)."""
        if self._shipped is None:
            from specreg.metrics.domain import fashion_embedding, speech_embedding

            self._shipped = (fashion_embedding() if self.kind == "image" else speech_embedding()).to(self.device)
        return self._shipped

    @property
    def extractor(self) -> Any:
        return self.feature_extractor if self.feature_extractor is not None else self.shipped

    @property
    def embedding(self) -> dict[str, Any] | None:
        """What the domain features are, for the report (None with a user extractor)."""
        if self.feature_extractor is not None:
            return None
        s, meta = self.shipped, self.shipped.metadata
        return {"name": type(s).__name__, "dim": s.dim, "task": meta.get("task"),
                "accuracy": meta.get("accuracy", {}).get("test"), "label": s.description}

    def label_fields(self) -> dict[str, Any]:
        """Values of the ``{fd}``, ``{kid}``, ``{ndb_on}`` and ``{fid_net}`` fields of the keys' labels
        (``{fid_net}`` names the FID weights and their sha1, hashed only when a label uses it)."""
        from specreg.metrics.domain import DOMAIN_FD_LABEL, DOMAIN_KID_LABEL

        if self.feature_extractor is not None:
            fd = "Fréchet distance on the features of a user feature extractor"
            kid = "KID on the features of a user feature extractor"
        else:
            features = f"; features: {embedding_name(self.embedding)}"
            fd, kid = DOMAIN_FD_LABEL + features, DOMAIN_KID_LABEL + features
        return {"fd": fd, "kid": kid, "ndb_on": "log-mel spectrograms" if self.kind == "audio" else "pixels",
                "fid_net": _OnFormat("specreg.metrics.fid", "fid_label")}


class _OnFormat:
    """A label field computed when a label is formatted with it (``module.function()``)."""

    def __init__(self, module: str, function: str) -> None:
        self.module, self.function = module, function

    def __format__(self, spec: str) -> str:
        import importlib

        return format(getattr(importlib.import_module(self.module), self.function)(), spec)


def embedding_name(info: Mapping[str, Any] | None) -> str:
    if not info:
        return "user feature extractor"
    acc = info.get("accuracy")
    accuracy = "" if acc is None else f", held-out accuracy {acc:.3f}"
    return f"{info['name']} ({info['task']}; D={info['dim']}{accuracy})"


class Batch:
    """A batch of one side (samples or reference), with the work several metrics share
    computed on first use and cached: its summed radial power spectrum, its domain
    features, its NDB vectors."""

    def __init__(self, x: torch.Tensor, real: bool, ctx: Context) -> None:
        self.x, self.real, self.ctx = x, real, ctx

    @cached_property
    def radial_power(self) -> torch.Tensor:
        """Each item's radial power spectrum, (B, C, n_bins), float64."""
        from specreg.metrics.spectrum import _flatten_channels, power_spectrum
        from specreg.transforms.fourier import radial_average

        x = _flatten_channels(self.x, self.ctx.ndim)
        return radial_average(power_spectrum(x, self.ctx.ndim), tuple(x.shape[-self.ctx.ndim:])).cpu()

    @cached_property
    def radial_power_sum(self) -> torch.Tensor:
        """Σ over items of the radial power spectrum, (C, n_bins), float64."""
        return self.radial_power.sum(0)

    def _at_speech_rate(self) -> torch.Tensor:
        import torch

        from specreg.metrics.audio import resample
        from specreg.metrics.domain import SPEECH_SAMPLE_RATE

        if self.ctx.sample_rate == SPEECH_SAMPLE_RATE:
            return self.x
        return torch.from_numpy(resample(self.x.double().numpy(), self.ctx.rate, SPEECH_SAMPLE_RATE)).float()

    @cached_property
    def features(self) -> np.ndarray:
        """Domain features (N, D), float64 (the user's extractor, or the shipped embedding;
        audio is resampled to the shipped embedding's 8 kHz first)."""
        import torch

        ctx = self.ctx
        inp = self._at_speech_rate() if ctx.feature_extractor is None and ctx.kind == "audio" else self.x
        extractor = ctx.extractor
        if isinstance(extractor, torch.nn.Module):
            extractor.eval()
        with torch.no_grad():
            f = extractor(inp.to(ctx.device))
        return torch.as_tensor(f).detach().double().cpu().numpy()

    @cached_property
    def ndb_rows(self) -> np.ndarray:
        """NDB's points: pixels, or the shipped embedding's log-mel input for audio."""
        import torch

        with torch.no_grad():
            z = self.ctx.shipped.features(self._at_speech_rate().to(self.ctx.device)) if self.ctx.kind == "audio" \
                else self.x
        return z.reshape(z.shape[0], -1).double().cpu().numpy()


class Spectra(Accumulator):
    """Both sides' mean radial spectra (float64 sums, any batching)."""

    def __init__(self, ctx: Context) -> None:
        from specreg.metrics.spectrum import SpectrumMetric

        super().__init__()
        self.ndim = ctx.ndim
        self.samples: SpectrumMetric = self.add_state("samples", SpectrumMetric(ctx.ndim), "child")
        self.reference: SpectrumMetric = self.add_state("reference", SpectrumMetric(ctx.ndim), "child")

    def update(self, batch: Batch) -> None:
        side = self.reference if batch.real else self.samples
        side.add(tuple(batch.x.shape[-self.ndim:]), batch.radial_power_sum, batch.x.shape[0])

    def spectra(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        freqs, p = self.samples.compute()
        _, q = self.reference.compute()
        return freqs, p, q

    def compute(self) -> Any:
        return self.spectra()


class LSD(Spectra):
    """Log-spectral distance ``name`` and its signed ``name_bias`` over one band."""

    def __init__(self, ctx: Context, name: str, band: str | None) -> None:
        super().__init__(ctx)
        self.name, self.band = name, band

    def compute(self) -> dict[str, float]:
        from specreg.metrics.spectrum import log_spectral_distance_from_spectra

        freqs, p, q = self.spectra()
        lsd, bias = log_spectral_distance_from_spectra(freqs, p, q, band=self.band)
        return {self.name: lsd, f"{self.name}_bias": bias}


class FD(Accumulator):
    """Fréchet distance ``name`` on the batches' domain features."""

    def __init__(self, ctx: Context, name: str) -> None:
        from specreg.metrics.frechet import FrechetDistance

        super().__init__()
        self.name = name
        self.fd: FrechetDistance = self.add_state("fd", FrechetDistance(), "child")

    def update(self, batch: Batch) -> None:
        self.fd.add_features(batch.features, batch.real)

    def compute(self) -> dict[str, float]:
        return {self.name: self.fd.compute()}


class KIDStream(Accumulator):
    """KID ``name`` on the batches' domain features, and ``name_std``, its spread over the
    random subsets (NaN when every subset is the whole smaller set)."""

    def __init__(self, ctx: Context, name: str) -> None:
        from specreg.metrics.frechet import KID

        super().__init__()
        self.name = name
        kid = KID(subsets=ctx.kid_subsets, subset_size=ctx.kid_size, seed=ctx.seed)
        self.kid: KID = self.add_state("kid", kid, "child")
        self.whole = ctx.kid_size >= min(ctx.n, ctx.m)  # every subset holds the whole smaller set

    def update(self, batch: Batch) -> None:
        self.kid.add_features(batch.features, batch.real)

    def compute(self) -> dict[str, float]:
        mean, std = self.kid.compute()
        return {self.name: mean, f"{self.name}_std": float("nan") if self.whole else std}


class NDB(Accumulator):
    """NDB/k ``name``, with ``name_number`` (different bins) and ``name_bins`` (k)."""

    def __init__(self, ctx: Context, name: str) -> None:
        super().__init__()
        self.name, self.k, self.seed = name, ctx.ndb_k, ctx.seed
        self.rows: dict[bool, list[Any]] = self.add_state("rows", {True: [], False: []}, "cat")

    def update(self, batch: Batch) -> None:
        self.rows[batch.real].append(batch.ndb_rows)

    def compute(self) -> dict[str, float]:
        import numpy as np

        from specreg.metrics.audio import ndb

        res = ndb(np.concatenate(self.rows[False]), np.concatenate(self.rows[True]), k=self.k, seed=self.seed)
        return {self.name: res.fraction, f"{self.name}_number": float(res.number), f"{self.name}_bins": float(self.k)}


class MeanOverClips(Accumulator):
    """The mean over clips of a per-clip value: of sample i against reference i
    (``update_paired``) or of the samples alone (``update``)."""

    def __init__(self, ctx: Context, name: str) -> None:
        super().__init__()
        self.ctx, self.name = ctx, name
        self.values: list[Any] = self.add_state("values", [], "cat")

    def update(self, batch: Batch) -> None:
        return None

    def update_paired(self, x: torch.Tensor, r: torch.Tensor) -> None:
        return None

    def compute(self) -> dict[str, float]:
        import numpy as np

        return {self.name: float(np.concatenate(self.values).mean())}


class MRSTFT(MeanOverClips):
    """Multi-resolution STFT distance, sample i against reference i."""

    def update_paired(self, x: torch.Tensor, r: torch.Tensor) -> None:
        from specreg.metrics.audio import mr_stft_distance

        self.values.append(mr_stft_distance(x, r, reduction="none").numpy())


class PESQ(MeanOverClips):
    """PESQ of sample i (degraded) against reference i (nb at 8 kHz, wb at 16 kHz, else wb after resampling)."""

    def update_paired(self, x: torch.Tensor, r: torch.Tensor) -> None:
        import numpy as np

        from specreg.metrics.audio import pesq

        rate = self.ctx.rate
        self.values.append(np.atleast_1d(pesq(r[:, 0].numpy(), x[:, 0].numpy(), rate,
                                              resample_to_16k=rate not in (8000, 16000))))


DNSMOS_PARTS = ("ovrl", "sig", "bak", "p808")


class DNSMOS(MeanOverClips):
    """DNSMOS P.835 of the samples alone: ``name_<part>`` for each of :data:`DNSMOS_PARTS`."""

    def update(self, batch: Batch) -> None:
        if not batch.real:
            from specreg.metrics.audio import dnsmos

            # as a WAV writer would: DNSMOS rejects values outside [−1, 1]
            self.values.extend(dnsmos(batch.x[:, 0].clamp(-1, 1).numpy(), self.ctx.rate))

    def compute(self) -> dict[str, float]:
        import numpy as np

        return {f"{self.name}_{k}": float(np.mean([d[f"{k}_mos"] for d in self.values])) for k in DNSMOS_PARTS}


class PeakEnergy(Accumulator):
    """Share of the samples' energy near the known spectral lines that sits on them."""

    def __init__(self, ctx: Context, name: str) -> None:
        super().__init__()
        self.ctx, self.name = ctx, name
        self.fractions: list[Any] = self.add_state("fractions", [], "cat")

    @property
    def tolerance(self) -> float:
        t = self.ctx.peak_tolerance
        return t if t is not None else 2.0 / self.ctx.shape[-1]

    def update(self, batch: Batch) -> None:
        if not batch.real:
            from specreg.metrics.spectrum import peak_energy_fraction

            self.fractions.append(peak_energy_fraction(batch.x, self.ctx.peaks or [], self.tolerance,
                                                       self.ctx.ndim))

    def compute(self) -> dict[str, float]:
        import torch

        return {self.name: float(torch.nanmean(torch.cat(self.fractions)))}


__all__ = ["DNSMOS", "DNSMOS_PARTS", "FD", "LSD", "MRSTFT", "NDB", "PESQ", "Batch", "Context", "KIDStream",
           "MeanOverClips", "PeakEnergy", "Spectra", "embedding_name"]
