"""Evaluation: spectral metrics (radial power spectrum, LSD, peak energy), distribution
distances on features (Fréchet distance, KID; FID offline in :mod:`specreg.metrics.fid`)
and audio metrics (MR-STFT, PESQ, NDB, DNSMOS); the registry of metrics
(:mod:`specreg.metrics.registry`), their accumulator protocol
(:class:`~specreg.metrics.accumulator.Accumulator`) and the evaluation engine
(:func:`~specreg.metrics.evaluation.evaluate`). FAD and UTMOS are not offered (no weights
that run offline; :mod:`specreg.metrics.audio`).

Optional packages (pesq, speechmos, torch-fidelity) are imported only when the
metric that needs them is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are imported on first use (PEP 562): the command line imports
# specreg.metrics.registry while it builds its parser, and that must not load torch.
_EXPORTS = {
    "Accumulator": "accumulator",
    "evaluate": "evaluation",
    **dict.fromkeys(("NDBResult", "dnsmos", "mr_stft_distance", "ndb", "pesq"), "audio"),
    **dict.fromkeys(("KID", "DomainClassifier", "DomainEmbedding", "FrechetDistance", "frechet_distance",
                     "frechet_distance_from_stats", "inception_feature_extractor", "kid", "load_domain_embedding"),
                    "frechet"),
    **dict.fromkeys(("FIDInception", "FIDStream"), "fid"),
    "plot_spectra": "plots",
    **dict.fromkeys(("BANDS", "SpectrumMetric", "log_spectral_distance", "log_spectral_distance_from_spectra",
                     "peak_energy_fraction", "radial_power_spectrum"), "spectrum"),
}

if TYPE_CHECKING:
    from specreg.metrics.accumulator import Accumulator
    from specreg.metrics.audio import NDBResult, dnsmos, mr_stft_distance, ndb, pesq
    from specreg.metrics.evaluation import evaluate
    from specreg.metrics.fid import FIDInception, FIDStream
    from specreg.metrics.frechet import (
        KID,
        DomainClassifier,
        DomainEmbedding,
        FrechetDistance,
        frechet_distance,
        frechet_distance_from_stats,
        inception_feature_extractor,
        kid,
        load_domain_embedding,
    )
    from specreg.metrics.plots import plot_spectra
    from specreg.metrics.spectrum import (
        BANDS,
        SpectrumMetric,
        log_spectral_distance,
        log_spectral_distance_from_spectra,
        peak_energy_fraction,
        radial_power_spectrum,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BANDS",
    "Accumulator",
    "KID",
    "DomainClassifier",
    "DomainEmbedding",
    "FIDInception",
    "FIDStream",
    "FrechetDistance",
    "NDBResult",
    "SpectrumMetric",
    "dnsmos",
    "evaluate",
    "frechet_distance",
    "frechet_distance_from_stats",
    "inception_feature_extractor",
    "kid",
    "load_domain_embedding",
    "log_spectral_distance",
    "log_spectral_distance_from_spectra",
    "mr_stft_distance",
    "ndb",
    "peak_energy_fraction",
    "pesq",
    "plot_spectra",
    "radial_power_spectrum",
]
