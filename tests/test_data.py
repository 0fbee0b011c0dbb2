"""Tests of the datasets and log-mel features against plain parsers, numpy FFTs, scipy and librosa."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from scipy.signal import resample_poly

from specreg.data import (
    ASTERISK_ROOT,
    FASHION_MNIST_ROOT,
    AsteriskSpeech,
    AudioFolder,
    Checkerboards,
    ChecksumError,
    FashionMNIST,
    ImageFolder,
    LogMel,
    MelConditioned,
    SkDigits,
    TextureCrops,
    asterisk_split,
    checkerboard_peaks,
    download_fashion_mnist,
    mel_filterbank,
    read_idx,
)
from specreg.data.audio import hz_to_mel, mel_to_hz
from specreg.data.images import TEXTURE_EVAL_ROWS

FASHION = Path(FASHION_MNIST_ROOT)
ASTERISK = Path(ASTERISK_ROOT)
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
needs_asterisk = pytest.mark.skipif(
    not ASTERISK.is_dir(), reason="Asterisk prompts not installed (apt-get install asterisk-core-sounds-en-wav)"
)


def plain_idx(path: Path, offset: int) -> np.ndarray:
    """The usual few-line MNIST reader: skip the header, read uint8."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


# --------------------------------------------------------------------------------------
# Fashion-MNIST


@needs_fashion
@pytest.mark.parametrize("split, prefix, n", [("train", "train", 60000), ("test", "t10k", 10000)])
def test_fashion_mnist_matches_plain_reader(split, prefix, n):
    ds = FashionMNIST(split=split)
    images = plain_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = plain_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz", 8)
    assert len(ds) == n == images.shape[0]
    np.testing.assert_array_equal(ds.images.numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert np.bincount(labels).tolist() == [n // 10] * 10  # the classes are balanced
    x, label = ds[123]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and label == labels[123]
    np.testing.assert_allclose(x[0].numpy(), images[123] / 127.5 - 1.0, atol=1e-6)


@needs_fashion
def test_fashion_mnist_pad_and_resize():
    raw = plain_idx(FASHION / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[5] / 127.5 - 1.0
    x, _ = FashionMNIST(split="test", size=32)[5]
    assert x.shape == (1, 32, 32)
    np.testing.assert_allclose(x[0, 2:30, 2:30].numpy(), raw, atol=1e-6)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(x[0].numpy()[border] == -1.0)
    assert torch.equal(FashionMNIST(split="eval").labels, FashionMNIST(split="test").labels)  # alias
    y, _ = FashionMNIST(split="test", size=56, fit="resize")[5]
    assert y.shape == (1, 56, 56)
    # a 2× bilinear upsampling keeps the mean of the image
    assert abs(y.mean().item() - raw.mean()) < 1e-3
    with pytest.raises(ValueError, match="size"):
        FashionMNIST(split="test", size=20)


def _copy_test_split(dst: Path) -> None:
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(FASHION / name, dst / name)


@needs_fashion
def test_fashion_mnist_checksum_errors(tmp_path):
    _copy_test_split(tmp_path)
    assert len(FashionMNIST(tmp_path, split="test")) == 10000
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[100] = (content[100] + 1) % 10  # a valid idx file with one label changed
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(ChecksumError, match="checksum"):
        FashionMNIST(tmp_path, split="test")
    assert FashionMNIST(tmp_path, split="test", verify=False).labels[100] == content[108]
    raw = (FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes()
    labels.write_bytes(raw[: len(raw) // 2])  # truncated download
    with pytest.raises(ChecksumError, match="gzip"):
        FashionMNIST(tmp_path, split="test")


def test_fashion_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        FashionMNIST(tmp_path / "nowhere")
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "download=True" in message and "root=" in message
    with pytest.raises(ValueError, match="split"):
        FashionMNIST(split="validation")


@needs_fashion
def test_fashion_mnist_download_is_checksummed(tmp_path, monkeypatch):
    served = {}

    def fake_urlopen(url, timeout=None):
        name = url.rsplit("/", 1)[1]
        served[name] = url
        data = (FASHION / name).read_bytes()
        if name.startswith("train-images") and fake_urlopen.corrupt:
            data = data[:-100] + bytes(100)  # damaged transfer
        return io.BytesIO(data)

    fake_urlopen.corrupt = True
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(ChecksumError):
        download_fashion_mnist(tmp_path)
    assert not (tmp_path / "train-images-idx3-ubyte.gz").exists()  # nothing left behind
    assert not list(tmp_path.glob("*.part"))
    fake_urlopen.corrupt = False
    ds = FashionMNIST(tmp_path, split="train", download=True)
    assert len(ds) == 60000 and set(served) == {
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    assert all(url.startswith("https://") for url in served.values())


def test_read_idx_against_numpy_and_bad_headers():
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], ">u4").tobytes() + values.tobytes()
    np.testing.assert_array_equal(read_idx(data), values)
    with pytest.raises(ChecksumError, match="magic"):
        read_idx(b"\x1f\x8b\x08\x00" + data[4:])
    with pytest.raises(ChecksumError, match="bytes"):
        read_idx(data[:-1])


# --------------------------------------------------------------------------------------
# ImageFolder


def test_image_folder(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    gray = np.zeros((20, 40), np.uint8)
    gray[:, 20:] = 255
    Image.fromarray(gray).save(tmp_path / "cats" / "a.png")
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "dogs" / "b.jpg", quality=95)
    Image.fromarray(gray.T).save(tmp_path / "loose.png")
    (tmp_path / "cats" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    (tmp_path / "dogs" / "truncated.png").write_bytes(buf.getvalue()[:60])
    (tmp_path / "notes.txt").write_text("not an image")  # not an image extension: not looked at
    (tmp_path / "notes.png").write_text("text saved as .png")
    (tmp_path / "empty.jpg").write_bytes(b"")

    # one rule for unreadable files: refused, with their count and names (never skipped)
    for cache in (True, False):
        with pytest.raises(ValueError, match=r"root='.*' holds 4 of 7 image files that cannot be read: "
                                             r"cats/corrupt.png \(.*\); dogs/truncated.png .*; empty.jpg .*; "
                                             r"notes.png"):
            ImageFolder(tmp_path, size=16, class_folders=True, cache=cache)
    for name in ("cats/corrupt.png", "dogs/truncated.png", "notes.png", "empty.jpg"):
        (tmp_path / name).unlink()
    ds = ImageFolder(tmp_path, size=16, class_folders=True)
    assert len(ds) == 3
    assert ds.classes == ["cats", "dogs"]
    items = {p.name: ds[i] for i, p in enumerate(ds.files)}
    assert items["a.png"][1] == 0 and items["b.jpg"][1] == 1 and items["loose.png"][1] == -1
    x = items["a.png"][0]
    assert x.shape == (1, 16, 16) and x.min() >= -1 and x.max() <= 1
    # 40×20 → 32×16 by the shorter side, then the central 16 columns: left half black
    expected = np.asarray(Image.fromarray(gray).resize((32, 16), Image.Resampling.BICUBIC))[:, 8:24]
    np.testing.assert_allclose(x[0].numpy(), expected / 127.5 - 1, atol=1e-6)
    assert x[0, :, 0].max() == -1 and x[0, :, -1].min() == 1

    rgb_ds = ImageFolder(tmp_path / "dogs", size=8, channels=3)
    assert rgb_ds[0][0].shape == (3, 8, 8) and rgb_ds[0][1] == -1

    # random crops: reproducible with torch's seed and always a window of the resized image
    rnd = ImageFolder(tmp_path / "cats", size=16, crop="random", cache=False)
    torch.manual_seed(1)
    first = [rnd[0][0] for _ in range(6)]
    torch.manual_seed(1)
    again = [rnd[0][0] for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    full = np.asarray(Image.fromarray(gray).resize((32, 16), Image.Resampling.BICUBIC)) / 127.5 - 1
    for crop in first:
        offsets = [o for o in range(17) if np.allclose(full[:, o:o + 16], crop[0].numpy(), atol=1e-6)]
        assert offsets


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing", size=8)
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolder(tmp_path, size=8)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="holds 1 of 1 image files that cannot be read: bad.png"):
        ImageFolder(tmp_path, size=8)
    with pytest.raises(ValueError, match="channels"):
        ImageFolder(tmp_path, size=8, channels=2)


# --------------------------------------------------------------------------------------
# Textures, checkerboards, digits


def _locate(image: np.ndarray, crop: np.ndarray) -> list[int]:
    """Rows at which ``crop`` occurs in ``image`` (exact match)."""
    size = crop.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(image, size, axis=1)  # (H, W-size+1, size)
    rows = []
    for r, c in zip(*np.nonzero((windows == crop[0]).all(axis=2))):
        if r + size <= image.shape[0] and np.array_equal(image[r:r + size, c:c + size], crop):
            rows.append(int(r))
    return rows


def test_texture_crops_split_and_determinism():
    import skimage.data

    train = TextureCrops(n=12, size=24, seed=3)
    assert torch.equal(train.crops, TextureCrops(n=12, size=24, seed=3).crops)
    assert not torch.equal(train.crops, TextureCrops(n=12, size=24, seed=4).crops)
    evals = TextureCrops(n=12, size=24, seed=3, split="eval")
    x, label = train[4]
    assert x.shape == (1, 24, 24) and label == 1 and -1 <= x.min() and x.max() <= 1
    assert train.labels.tolist() == [0, 1, 2] * 4
    boundary = 512 - TEXTURE_EVAL_ROWS
    for ds, inside in ((train, lambda r: r + 24 <= boundary), (evals, lambda r: r >= boundary)):
        for i in range(0, 12, 2):
            image = getattr(skimage.data, ds.names[int(ds.labels[i])])()
            rows = _locate(image, ds.crops[i].numpy())
            assert rows and all(inside(r) for r in rows)
    assert TextureCrops(n=3, size=16, channels=3)[0][0].shape == (3, 16, 16)
    assert torch.equal(TextureCrops(n=12, size=24, seed=3, split="test").crops, evals.crops)  # alias
    with pytest.raises(ValueError, match="scikit-image"):
        TextureCrops(names=("marble",), n=2)


@pytest.mark.parametrize("period", [4, 8, 16, 32])
def test_checkerboard_peaks_match_numpy_fft(period):
    ds = Checkerboards(40, size=64, periods=(period,), seed=period)
    x = ds[7][0][0].numpy().astype(np.float64)
    assert set(np.unique(x)) == {-1.0, 1.0}
    np.testing.assert_array_equal(x, np.roll(x, period, axis=0))
    np.testing.assert_array_equal(x, np.roll(x, period, axis=1))
    power = np.abs(np.fft.fft2(x)) ** 2
    power /= power.sum()
    f = np.fft.fftfreq(64)
    radius = np.round(np.hypot(f[:, None], f[None, :]), 9)
    lines = power > 1e-12
    radii = np.unique(radius[lines])
    measured = np.array([power[lines & (radius == r)].sum() for r in radii])
    expected_radii, expected_power = checkerboard_peaks(period)
    np.testing.assert_allclose(radii, expected_radii, atol=1e-9)
    np.testing.assert_allclose(measured, expected_power, atol=1e-9)
    assert np.isclose(expected_radii[np.argmax(expected_power)], np.sqrt(2) / period)


def test_checkerboards_dataset():
    ds = Checkerboards(200, seed=5)
    same = Checkerboards(200, seed=5)
    assert all(torch.equal(ds[i][0], same[i][0]) for i in range(0, 200, 17))
    assert set(ds.periods_of.tolist()) == {4, 8, 16}
    assert ds.phases.shape == (200, 2) and bool((ds.phases < ds.periods_of[:, None]).all())
    x, label = ds[3]
    assert x.shape == (1, 64, 64) and ds.periods[label] == int(ds.periods_of[3])
    radii, _ = ds.peaks(3)
    np.testing.assert_allclose(radii, checkerboard_peaks(int(ds.periods_of[3]))[0])
    assert ds.fundamental_frequencies()[8] == pytest.approx(np.sqrt(2) / 8)
    with pytest.raises(ValueError, match="periods"):
        Checkerboards(4, periods=(5,))
    with pytest.raises(ValueError, match="periods"):
        Checkerboards(4, size=64, periods=(12,))


def test_sk_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    ds = SkDigits(size=32, mode="nearest")
    assert len(ds) == 1797
    x, label = ds[10]
    assert label == digits.target[10] and x.shape == (1, 32, 32)
    np.testing.assert_allclose(x[0].numpy(), np.kron(digits.images[10], np.ones((4, 4))) / 8 - 1, atol=1e-6)
    y = SkDigits(size=32)[10][0]
    assert y.min() >= -1 and y.max() <= 1


# --------------------------------------------------------------------------------------
# Audio


def test_audio_folder_resampling_mixdown_and_skips(tmp_path):
    t16 = np.arange(16000) / 16000
    sine16 = 0.5 * np.sin(2 * np.pi * 440 * t16)
    sf.write(tmp_path / "a_16k.wav", sine16, 16000, subtype="FLOAT")
    t8 = np.arange(4000) / 8000
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 300 * t8), -0.2 * np.sin(2 * np.pi * 300 * t8)], axis=1)
    sf.write(tmp_path / "b_stereo.flac", stereo, 8000)
    sf.write(tmp_path / "c_short.wav", np.full(100, 0.25), 8000, subtype="FLOAT")
    (tmp_path / "d_corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(tmp_path / "e_empty.wav", np.zeros(0), 8000)
    (tmp_path / "f_text.wav").write_text("text saved as .wav")

    # one rule for unreadable files: refused, with their count and names (never skipped)
    with pytest.raises(ValueError, match=r"holds 3 of 6 audio files that cannot be read: d_corrupt.wav \(.*\); "
                                         r"e_empty.wav \(no samples\); f_text.wav"):
        AudioFolder(tmp_path, sample_rate=8000, segment_length=None)
    for name in ("d_corrupt.wav", "e_empty.wav", "f_text.wav"):
        (tmp_path / name).unlink()
    ds = AudioFolder(tmp_path, sample_rate=8000, segment_length=None)
    assert len(ds) == 3
    resampled = ds[0][0][0].numpy()
    assert resampled.shape == (8000,)
    np.testing.assert_allclose(resampled, resample_poly(sine16.astype(np.float32), 1, 2), atol=1e-6)
    # physically: the same 440 Hz tone sampled at 8 kHz (away from the filter's edge effects)
    analytic = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    np.testing.assert_allclose(resampled[200:-200], analytic[200:-200], atol=2e-3)
    mono = ds[1][0][0].numpy()
    np.testing.assert_allclose(mono, 0.1 * np.sin(2 * np.pi * 300 * t8), atol=1e-4)  # FLAC is 16-bit

    seg = AudioFolder(tmp_path, sample_rate=8000, segment_length=1000, random_crop=False, seed=2)
    x, label = seg[0]
    assert x.shape == (1, 1000) and label == -1
    full = ds[0][0][0].numpy()
    start = [s for s in range(full.size - 999) if np.array_equal(full[s:s + 1000], x[0].numpy())]
    assert start and torch.equal(seg[0][0], x)  # fixed offset: same segment every time
    short = seg[2][0][0]
    np.testing.assert_allclose(short[:100].numpy(), 0.25)
    assert torch.all(short[100:] == 0)  # zero-padded at the end
    with pytest.raises(FileNotFoundError):
        AudioFolder(tmp_path / "missing", 8000, 100)
    with pytest.raises(ValueError, match="sample_rate"):
        AudioFolder(tmp_path, 0, 100)


@needs_asterisk
def test_asterisk_split():
    train = AsteriskSpeech(split="train")
    evals = AsteriskSpeech(split="eval")
    speech = sorted(p.relative_to(ASTERISK).with_suffix("").as_posix() for p in ASTERISK.rglob("*.wav"))
    speech = [n for n in speech if not n.startswith("silence/")]
    assert len(train) + len(evals) == len(speech) == 558
    assert (len(train), len(evals)) == (498, 60)
    assert not set(train.names) & set(evals.names)
    assert sorted(train.names + evals.names) == speech
    assert all(int(hashlib.md5(n.encode()).hexdigest()[:8], 16) % 10 == 0 for n in evals.names)
    assert asterisk_split("digits/7") == "eval"
    x, label = evals[0]
    assert x.shape == (1, 8000) and label == -1 and x.abs().max() <= 1
    assert torch.equal(evals[3][0], evals[3][0])  # eval crops are fixed
    assert len(evals.files) == len(evals) and evals.sample_rate == 8000
    assert AsteriskSpeech(split="test", segment_length=800).names == evals.names  # alias


def test_asterisk_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install asterisk-core-sounds-en-wav"):
        AsteriskSpeech(root=tmp_path)


def test_mel_scale_and_filterbank_match_librosa():
    librosa = pytest.importorskip("librosa")
    f = np.array([0.0, 200.0, 999.0, 1000.0, 1500.0, 3999.0, 11025.0])
    for scale in ("slaney", "htk"):
        np.testing.assert_allclose(hz_to_mel(f, scale), librosa.hz_to_mel(f, htk=scale == "htk"), rtol=1e-10)
        np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, scale), scale), f, rtol=1e-10, atol=1e-8)
    for kw in (dict(sr=8000, n_fft=512, n_mels=80), dict(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000),
               dict(sr=16000, n_fft=400, n_mels=40, fmin=50.0, fmax=7600.0, htk=True, norm=None)):
        ours = mel_filterbank(kw["sr"], kw["n_fft"], kw["n_mels"], kw.get("fmin", 0.0), kw.get("fmax"),
                              scale="htk" if kw.get("htk") else "slaney", norm=kw.get("norm", "slaney"))
        ref = librosa.filters.mel(**kw)
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-7)


def test_log_mel_matches_librosa():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    y = (0.3 * np.sin(2 * np.pi * 500 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    logmel = LogMel(sample_rate=8000, n_fft=512, hop_length=100, n_mels=80)
    ours = logmel(torch.from_numpy(y)).numpy()
    ref = librosa.feature.melspectrogram(y=y, sr=8000, n_fft=512, hop_length=100, n_mels=80, power=1.0,
                                         center=True, pad_mode="reflect")
    assert ours.shape == (80, 40) and ref.shape == (80, 41)  # frames · hop = T
    np.testing.assert_allclose(ours, np.log(np.maximum(ref[:, :40], 1e-5)), atol=1e-3)
    batch = logmel(torch.from_numpy(np.stack([y, y]))[:, None])
    assert batch.shape == (2, 1, 80, 40)
    power = LogMel(hop_length=100, power=2.0)(torch.from_numpy(y)).numpy()
    ref2 = librosa.feature.melspectrogram(y=y, sr=8000, n_fft=512, hop_length=100, n_mels=80, power=2.0,
                                          center=True, pad_mode="reflect")
    np.testing.assert_allclose(power, np.log(np.maximum(ref2[:, :40], 1e-5)), atol=1e-3)


def test_mel_conditioned(tmp_path):
    sf.write(tmp_path / "a.wav", 0.1 * np.random.default_rng(1).standard_normal(3000), 8000, subtype="FLOAT")
    audio = AudioFolder(tmp_path, 8000, 1600, random_crop=False)
    pairs = MelConditioned(audio, LogMel(hop_length=100, n_mels=20))
    x, mel = pairs[0]
    assert x.shape == (1, 1600) and mel.shape == (20, 16)
    torch.testing.assert_close(mel, LogMel(hop_length=100, n_mels=20)(x[0]))
    with pytest.raises(ValueError, match="multiple of hop_length"):
        MelConditioned(AudioFolder(tmp_path, 8000, 1650), LogMel(hop_length=100))
