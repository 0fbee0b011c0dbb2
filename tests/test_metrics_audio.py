"""Audio metrics: MR-STFT vs auraloss, PESQ maxima from the P.862.1/.2 mappings, NDB vs a
chi-square test, DNSMOS offline on real speech, FAD with an injected embedder."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from specreg.metrics import audio
from specreg.metrics.frechet import frechet_distance_from_stats

SPEECH = "/usr/share/asterisk/sounds/en_US_f_Allison/digits/1.wav"  # Debian: asterisk-core-sounds-en-wav


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    if not os.path.isfile(SPEECH):
        pytest.skip(f"{SPEECH} is missing (Debian package asterisk-core-sounds-en-wav)")
    sf = pytest.importorskip("soundfile")
    x, sr = sf.read(SPEECH, dtype="float64")
    return x, sr


# ----------------------------------------------------------------------------- MR-STFT


def test_mr_stft_distance() -> None:
    auraloss = pytest.importorskip("auraloss")
    g = np.random.default_rng(0)
    b = g.standard_normal(4000)
    a = b + 0.2 * g.standard_normal(4000)
    assert audio.mr_stft_distance(b, b, 22050) == 0.0
    ref = auraloss.freq.MultiResolutionSTFTLoss()(torch.from_numpy(a).view(1, 1, -1),
                                                  torch.from_numpy(b).view(1, 1, -1))
    assert audio.mr_stft_distance(a, b, 22050, sample_rate_b=22050) == pytest.approx(float(ref), rel=1e-6)
    batch = np.stack([a, b])
    per = audio.mr_stft_distance(batch, np.stack([b, b]), reduction="none")
    assert per.shape == (2,) and float(per[1]) == 0.0 and float(per[0]) == pytest.approx(float(ref), rel=1e-6)


def test_mr_stft_distance_errors() -> None:
    x = np.zeros(4000)
    with pytest.raises(ValueError, match="same sample rate"):
        audio.mr_stft_distance(x, x, 22050, sample_rate_b=16000)
    with pytest.raises(ValueError, match="shape"):
        audio.mr_stft_distance(x, np.zeros(3999))
    with pytest.raises(ValueError, match="non-empty"):
        audio.mr_stft_distance(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="needs at least"):
        audio.mr_stft_distance(np.zeros(100), np.zeros(100))
    with pytest.raises(ValueError, match="reduction"):
        audio.mr_stft_distance(x, x, reduction="max")


# ----------------------------------------------------------------------------- PESQ


def _p862_mapping(raw: float, wideband: bool) -> float:
    """MOS-LQO from the raw PESQ score: ITU-T P.862.1 (narrow band) and P.862.2 (wide band)."""
    a, b = (1.3669, 3.8224) if wideband else (1.4945, 4.6607)
    return 0.999 + (4.999 - 0.999) / (1 + math.exp(-a * raw + b))


def test_pesq_of_speech_against_itself_is_the_maximum(speech) -> None:
    pytest.importorskip("pesq")
    x, sr = speech
    assert sr == 8000
    # identical signals get the best raw score, 4.5, mapped to MOS-LQO
    assert audio.pesq(x, x, sr) == pytest.approx(_p862_mapping(4.5, wideband=False), abs=2e-3)
    x16 = audio.resample(x, 8000, 16000)
    assert audio.pesq(x16, x16, 16000) == pytest.approx(_p862_mapping(4.5, wideband=True), abs=2e-3)
    noisy = x + 0.02 * np.random.default_rng(0).standard_normal(len(x))
    score = audio.pesq(x, noisy, sr)
    assert 1.0 < score < _p862_mapping(4.5, wideband=False) - 0.5
    scores = audio.pesq(np.stack([x, x]), np.stack([x, noisy]), sr)
    np.testing.assert_allclose(scores, [audio.pesq(x, x, sr), score])
    # 22.05 kHz vocoder output: resampled to 16 kHz and scored wide band on request
    x22 = audio.resample(x, 8000, 22050)
    assert audio.pesq(x22, x22, 22050, resample_to_16k=True) == pytest.approx(_p862_mapping(4.5, True), abs=2e-3)


def test_pesq_errors() -> None:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 8000)
    with pytest.raises(ValueError, match="same sample rate"):
        audio.pesq(x, x, 8000, deg_sample_rate=16000)
    with pytest.raises(ValueError, match="resample_to_16k"):
        audio.pesq(x, x, 22050)
    with pytest.raises(ValueError, match="mode"):
        audio.pesq(x, x, 8000, mode="wb")
    with pytest.raises(ValueError, match="shape"):
        audio.pesq(x, np.zeros(7999), 8000)
    with pytest.raises(ValueError, match="non-empty"):
        audio.pesq(np.zeros(0), np.zeros(0), 8000)
    with pytest.raises(ValueError, match="sample_rate"):
        audio.pesq(x, x, 0)
    with pytest.raises(ValueError, match="deg clip 0 is silent"):
        audio.pesq(x, np.zeros(8000), 8000)
    pytest.importorskip("pesq")
    with pytest.raises(ValueError, match="PESQ failed"):
        audio.pesq(np.ones(80), np.ones(80), 8000)  # far too short for PESQ


# ----------------------------------------------------------------------------- NDB


def test_ndb_p_values_equal_a_chi_square_test() -> None:
    from scipy.stats import chi2_contingency

    g = np.random.default_rng(0)
    ref, smp = g.standard_normal((600, 2)), g.standard_normal((400, 2)) + 0.3
    res = audio.ndb(smp, ref, k=8)
    c_s, c_r = np.rint(res.proportions * 400), np.rint(res.reference_proportions * 600)
    for i in range(8):
        # the pooled two-proportion z-test is the uncorrected 2×2 chi-square test
        table = [[c_s[i], 400 - c_s[i]], [c_r[i], 600 - c_r[i]]]
        assert res.p_values[i] == pytest.approx(chi2_contingency(table, correction=False)[1], rel=1e-8)
    assert res.number == int((res.p_values < 0.05).sum()) and res.fraction == res.number / 8


def test_ndb_false_positive_rate_and_power() -> None:
    g = np.random.default_rng(1)
    same = [audio.ndb(g.standard_normal((1500, 3)), g.standard_normal((1500, 3)), k=20, seed=s).fraction
            for s in range(4)]
    assert np.mean(same) < 0.15  # nominal rate alpha = 0.05, loose bound
    shifted = audio.ndb(g.standard_normal((1500, 3)) * 1.5 + 0.5, g.standard_normal((1500, 3)), k=20).fraction
    assert shifted > 0.5


def test_ndb_errors() -> None:
    a = np.random.randn(100, 3)
    with pytest.raises(ValueError, match="at least k"):
        audio.ndb(a, a[:10], k=20)
    with pytest.raises(ValueError, match="must match"):
        audio.ndb(a, np.random.randn(100, 4), k=5)
    with pytest.raises(ValueError, match="alpha"):
        audio.ndb(a, a, k=5, alpha=1.5)
    with pytest.raises(ValueError, match="k="):
        audio.ndb(a, a, k=1)
    with pytest.raises(ValueError, match="non-empty"):
        audio.ndb(np.zeros((0, 3)), a, k=5)


# ----------------------------------------------------------------------------- DNSMOS


def test_dnsmos_offline_on_speech(speech) -> None:
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    from speechmos import dnsmos as reference

    x, sr = speech
    scores = audio.dnsmos(x, sr)
    assert set(scores) == {"ovrl_mos", "sig_mos", "bak_mos", "p808_mos"}
    assert all(np.isfinite(v) and 1.0 <= v <= 5.0 for v in scores.values())
    # the same as calling speechmos by hand on the 16 kHz resampled clip
    x16 = np.clip(audio.resample(x, sr, 16000), -1, 1).astype(np.float32)
    direct = reference.run(x16, sr=16000)
    for key, v in scores.items():
        assert v == pytest.approx(float(direct[key]), rel=1e-6)


def test_dnsmos_errors() -> None:
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        audio.dnsmos(np.full(16000, 2.0), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        audio.dnsmos(np.zeros(16000), -1)
    with pytest.raises(ValueError, match="non-empty"):
        audio.dnsmos(np.zeros(0), 16000)


# ----------------------------------------------------------------------------- FAD (a module helper)


def test_fad_with_an_injected_embedder() -> None:
    g = np.random.default_rng(2)
    # "clips" of 8 frames × 3 values; the embedder returns per-frame embeddings (B, 8, 3)
    a = g.standard_normal((400, 24))
    b = g.standard_normal((400, 24)) * 2.0 + 1.0
    embedder = lambda x: x.view(x.shape[0], 8, 3)  # noqa: E731
    fad = audio.frechet_audio_distance(a, b, embedder, batch_size=64)
    population = frechet_distance_from_stats(np.zeros(3), np.eye(3), np.ones(3), 4.0 * np.eye(3))  # = 3 + 3·1
    assert population == pytest.approx(6.0)
    assert fad == pytest.approx(population, rel=0.1)
    assert abs(audio.frechet_audio_distance(a, a, embedder)) < 1e-6
    with pytest.raises(ValueError, match="embedder"):
        audio.frechet_audio_distance(a, b, None)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        audio.frechet_audio_distance(a, b, lambda x: x.view(-1))
