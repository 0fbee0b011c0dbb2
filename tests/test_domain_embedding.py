"""The shipped domain embeddings: package data, offline loading, and that their features
separate real data from degraded data (checked with scipy/numpy references)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
from safetensors.torch import load_file

from specreg.data.audio import ASTERISK_ROOT
from specreg.data.images import FASHION_MNIST_ROOT
from specreg.metrics.domain import (
    DOMAIN_FD_LABEL,
    FASHION_ASSET,
    SPEECH_ASSET,
    SPEECH_DEGRADATIONS,
    SPEECH_FRONTEND,
    fashion_embedding,
    speech_embedding,
)

ASSETS = resources.files("specreg") / "assets"
needs_fashion = pytest.mark.skipif(not Path(FASHION_MNIST_ROOT, "t10k-images-idx3-ubyte.gz").is_file(),
                                   reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
needs_speech = pytest.mark.skipif(not Path(ASTERISK_ROOT).is_dir(),
                                  reason="Asterisk prompts are not installed (asterisk-core-sounds-en-wav)")


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook Fréchet distance with scipy's general matrix square root."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))


@pytest.mark.parametrize("name", [FASHION_ASSET, SPEECH_ASSET])
def test_assets_are_small_safetensors_with_a_complete_sidecar(name: str) -> None:
    weights, sidecar = ASSETS / f"{name}.safetensors", ASSETS / f"{name}.json"
    assert weights.is_file() and sidecar.is_file()
    with resources.as_file(weights) as path:
        assert path.stat().st_size < 1_000_000
        state = load_file(str(path))
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    for key in ("architecture", "config", "command", "data", "accuracy", "date", "torch_version", "label"):
        assert key in meta, key
    assert meta["label"] == DOMAIN_FD_LABEL
    cfg = meta["config"]
    # the sidecar's architecture agrees with the stored tensors
    assert tuple(state["head.weight"].shape) == (cfg["num_classes"], cfg["embed_dim"])
    assert state["features.0.weight"].shape[1] == cfg["in_channels"]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in state.values())
    # an accuracy well above chance, on data held out from training
    assert meta["accuracy"]["test"] > 2.0 / cfg["num_classes"]


def test_speech_sidecar_matches_the_loader_frontend() -> None:
    meta = json.loads((ASSETS / f"{SPEECH_ASSET}.json").read_text(encoding="utf-8"))
    assert meta["config"]["frontend"] == SPEECH_FRONTEND
    assert meta["config"]["classes"] == list(SPEECH_DEGRADATIONS)


def test_embeddings_load_offline_frozen_with_the_right_shapes() -> None:
    fe, se = fashion_embedding(), speech_embedding()
    assert not any(p.requires_grad for p in fe.parameters())
    assert not any(p.requires_grad for p in se.parameters())
    assert fe.description == se.description == DOMAIN_FD_LABEL
    with torch.no_grad():
        assert fe(torch.zeros(3, 1, 32, 32)).shape == (3, fe.dim)
        assert se(torch.zeros(2, 8000)).shape == (2, se.dim)
        assert se(torch.zeros(2, 1, 4000)).shape == (2, se.dim)


def test_embedding_input_errors() -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        fashion_embedding()(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 1600"):
        speech_embedding()(torch.zeros(2, 1000))
    with pytest.raises(ValueError, match="mono"):
        speech_embedding()(torch.zeros(2, 2, 8000))


@needs_fashion
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # scipy's sqrtm on dead feature dims
def test_fashion_embedding_classifies_and_separates_real_from_blurred() -> None:
    from specreg.data.images import FashionMNIST

    test = FashionMNIST(split="test", size=32)
    x = torch.stack([test[i][0] for i in range(1200)])
    y = test.labels[:1200]
    fe = fashion_embedding()
    with torch.no_grad():
        logits = fe.embedding.classifier(x)
        feats = fe(x).double().numpy()
    # the classifier head of the shipped weights works (chance is 0.1)
    assert (logits.argmax(1) == y).float().mean() > 0.7
    # independent degradation: scipy Gaussian blur (σ = 1.5 px) of the second 600
    blurred = torch.from_numpy(scipy.ndimage.gaussian_filter(x[600:].numpy(), sigma=(0, 0, 1.5, 1.5)))
    with torch.no_grad():
        feats_blur = fe(blurred).double().numpy()
    real_real = _scipy_fd(feats[:600], feats[600:])
    real_blur = _scipy_fd(feats[:600], feats_blur)
    assert real_real < 0.2 * real_blur


def _lowpass(x: np.ndarray, cutoff_hz: float, rate: int) -> np.ndarray:
    """Brick-wall low-pass with numpy's FFT."""
    spec = np.fft.rfft(x, axis=-1)
    spec[..., np.fft.rfftfreq(x.shape[-1], 1.0 / rate) > cutoff_hz] = 0
    return np.fft.irfft(spec, n=x.shape[-1], axis=-1)


def _segments(clips: list[np.ndarray], length: int) -> np.ndarray:
    return np.stack([c[k * length:(k + 1) * length] for c in clips for k in range(c.size // length)])


@needs_speech
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_speech_embedding_separates_real_from_lowpassed_speech() -> None:
    import soundfile as sf

    root = Path(ASTERISK_ROOT)
    clips = []
    for path in sorted(root.glob("*.wav")):  # top-level prompts: sentences, several seconds each
        clip, rate = sf.read(str(path), dtype="float32")
        assert rate == 8000
        clips.append(clip)
    segs = _segments(clips, 8000)
    # two disjoint sets of 1-s segments (interleaved, so both span all prompts), ~9·D each
    a, b = segs[0::2][:300], segs[1::2][:300]
    se = speech_embedding()
    with torch.no_grad():
        f_a = se(torch.from_numpy(a)).double().numpy()
        f_b = se(torch.from_numpy(b)).double().numpy()
        f_low = se(torch.from_numpy(_lowpass(b, 1500.0, 8000)).float()).double().numpy()
    assert a.shape[0] > 5 * se.dim
    assert _scipy_fd(f_a, f_b) < 0.2 * _scipy_fd(f_a, f_low)
