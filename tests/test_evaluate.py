"""``specreg eval``: loading, metrics against numpy/scipy/auraloss/pesq references and
closed forms, batch-size independence, outputs and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
from PIL import Image

from specreg.data.audio import ASTERISK_ROOT
from specreg.experiments.evaluate import (
    METRICS,
    REFERENCES,
    evaluate,
    evaluate_dirs,
    load_samples,
    split_grid,
)
from specreg.metrics.domain import fashion_embedding

needs_speech = pytest.mark.skipif(not Path(ASTERISK_ROOT).is_dir(),
                                  reason="Asterisk prompts are not installed (asterisk-core-sounds-en-wav)")


# ----------------------------------------------------------------------------- references


def _numpy_radial(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ring-averaged |fft2|² (orthonormal) of square images (N, C, S, S), rings of width 1/S
    at round(|k|), averaged over the full grid, samples and channels."""
    s = x.shape[-1]
    p = (np.abs(np.fft.fft2(x, norm="ortho")) ** 2).mean(axis=(0, 1))
    k = np.fft.fftfreq(s) * s
    ring = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
    n_bins = s // 2 + 1
    power = np.array([p[ring == i].mean() for i in range(n_bins)])
    return np.arange(n_bins) / s, power


def _numpy_lsd(x: np.ndarray, r: np.ndarray, lo: float = 0.0, hi: float = 0.5) -> tuple[float, float]:
    f, p = _numpy_radial(x)
    _, q = _numpy_radial(r)
    keep = (f >= lo) & ((f < hi) | (hi >= 0.5))
    d = np.log10(p[keep]) - np.log10(q[keep])
    return float(np.sqrt((d**2).mean())), float(d.mean())


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))


def _numpy_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (xᵀy/D + 1)³, written out with loops over pairs."""
    d = a.shape[1]
    k = lambda u, v: (u @ v.T / d + 1.0) ** 3  # noqa: E731
    kaa, kbb = k(a, a), k(b, b)
    m, n = len(a), len(b)
    saa = (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
    sbb = (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
    return float(saa + sbb - 2 * k(a, b).mean())


def _images(n: int, seed: int, size: int = 32, smooth: float = 1.0) -> np.ndarray:
    """uint8 (n, size, size) gray images: smoothed noise blobs on a dark background."""
    rng = np.random.default_rng(seed)
    x = scipy.ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, smooth, smooth))
    x = (x - x.mean()) / x.std()
    return np.clip(np.rint(127.5 + 60 * x), 0, 255).astype(np.uint8)


def _write_pngs(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"img-{i:04d}.png")
    return folder


def _unit(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float64)[:, None] / 127.5 - 1.0


# ----------------------------------------------------------------------------- images


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # scipy's sqrtm on dead feature dims
def test_png_folder_against_numpy_scipy_references(tmp_path: Path) -> None:
    samples = _images(160, seed=1, smooth=1.0)
    reference = _images(160, seed=2, smooth=1.3)
    folder = _write_pngs(tmp_path / "samples", samples)
    ref_file = tmp_path / "ref.npy"
    np.save(ref_file, reference[:, None])  # uint8 N×1×H×W is accepted as images
    out = tmp_path / "eval"
    res = evaluate_dirs(folder, ref_file, ["lsd", "lsd_high", "domain_fd", "domain_kid"], out, progress=False)

    x, r = _unit(samples), _unit(reference)
    values = res["metrics"]
    lsd, bias = _numpy_lsd(x, r)
    assert values["lsd"] == pytest.approx(lsd, rel=1e-6)
    assert values["lsd_bias"] == pytest.approx(bias, rel=1e-6)
    lsd_high, bias_high = _numpy_lsd(x, r, 1 / 3, 0.5)
    assert values["lsd_high"] == pytest.approx(lsd_high, rel=1e-6)
    assert values["lsd_high_bias"] == pytest.approx(bias_high, rel=1e-6)

    fe = fashion_embedding()
    with torch.no_grad():
        fa = fe(torch.from_numpy(x).float()).double().numpy()
        fb = fe(torch.from_numpy(r).float()).double().numpy()
    assert values["domain_fd"] == pytest.approx(_scipy_fd(fa, fb), rel=1e-4)
    # the default KID subsets hold half of each set (80 of 160): unbiased estimates of the
    # full sets' MMD², so their mean lies near it, within the spread of one subset, and the
    # spread is that of real draws (subsets of the whole sets would all be equal: spread 0)
    full = _numpy_mmd2(fa, fb)
    assert abs(values["domain_kid"] - full) < values["domain_kid_std"]
    assert values["domain_kid_std"] > 0.01 * abs(full)

    assert res["n_samples"] == 160 and res["n_reference"] == 160
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["metrics"] == pytest.approx(values)
    assert "not FID" in saved["labels"]["domain_fd"]
    md = (out / "metrics.md").read_text(encoding="utf-8")
    assert "| domain_fd |" in md and "not FID" in md
    assert (out / "spectrum.png").stat().st_size > 0


def test_scaled_samples_give_the_closed_form_lsd() -> None:
    # P_gen = a²·P_ref in every bin ⇒ LSD = |bias| = 2·|log10 a| in every band
    r = torch.from_numpy(_unit(_images(20, seed=3))).float()
    res = evaluate(0.5 * r, r, metrics="lsd,lsd_low,lsd_mid,lsd_high", progress=False)
    expected = 2 * np.log10(0.5)
    for band in ("lsd", "lsd_low", "lsd_mid", "lsd_high"):
        assert res["metrics"][band] == pytest.approx(-expected, rel=1e-9)
        assert res["metrics"][f"{band}_bias"] == pytest.approx(expected, rel=1e-9)
    same = evaluate(r, r, metrics=["lsd"], progress=False)["metrics"]
    assert same["lsd"] == 0.0


def test_audio_lsd_closed_form_and_hz_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    r = torch.from_numpy(0.1 * rng.normal(size=(6, 1, 2000))).float()
    res = evaluate(3.0 * r, r, kind="audio", sample_rate=8000, metrics=["lsd", "lsd_high"], progress=False)
    assert res["metrics"]["lsd"] == pytest.approx(2 * np.log10(3.0), rel=1e-6)
    assert res["metrics"]["lsd_high_bias"] == pytest.approx(2 * np.log10(3.0), rel=1e-6)
    assert res["sample_rate"] == 8000


def test_results_do_not_depend_on_batch_size() -> None:
    x = torch.from_numpy(_unit(_images(130, seed=4))).float()
    r = torch.from_numpy(_unit(_images(150, seed=5, smooth=1.5))).float()
    metrics = ["lsd", "lsd_high", "domain_fd", "domain_kid", "ndb"]
    a = evaluate(x, r, metrics=metrics, batch_size=29, ndb_bins=5, progress=False)["metrics"]
    b = evaluate(x, r, metrics=metrics, batch_size=500, ndb_bins=5, progress=False)["metrics"]
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-9), key


def test_domain_fd_ranks_blur_above_noise_free_samples() -> None:
    # the FD between two halves of one set is far below that between a set and its blurred copy
    imgs = _unit(_images(300, seed=6, smooth=0.7))
    blurred = scipy.ndimage.gaussian_filter(imgs[150:], sigma=(0, 0, 1.5, 1.5))
    a, b, c = (torch.from_numpy(v).float() for v in (imgs[:150], imgs[150:], blurred))
    same = evaluate(a, b, metrics=["domain_fd"], progress=False)["metrics"]["domain_fd"]
    blur = evaluate(a, c, metrics=["domain_fd"], progress=False)["metrics"]["domain_fd"]
    assert same < 0.5 * blur


def test_run_directory_grid_is_cut_into_the_saved_images(tmp_path: Path) -> None:
    from specreg.train.trainer import save_image_grid

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "config.yaml").write_text("data: {size: 16, channels: 1}\nsample: {n: 10}\n")
    old = torch.rand(10, 1, 16, 16) * 2 - 1
    new = torch.rand(10, 1, 16, 16) * 2 - 1
    save_image_grid(old, run / "samples" / "step-00000100.png")
    save_image_grid(new, run / "samples" / "step-00000200.png")
    loaded = load_samples(run)
    assert loaded["kind"] == "image" and loaded["x"].shape == (10, 1, 16, 16)
    quantized = ((new.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
    torch.testing.assert_close(loaded["x"], quantized, atol=1e-6, rtol=0)


def test_split_grid_rejects_wrong_tile_sizes() -> None:
    with pytest.raises(ValueError, match="tiles"):
        split_grid(torch.zeros(1, 36, 35), size=16)


def test_tensor_formats_and_sample_rate(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    x = torch.rand(4, 1, 3000) - 0.5
    save_file({"samples": x}, str(tmp_path / "a.safetensors"), metadata={"sample_rate": "16000"})
    torch.save({"samples": x}, tmp_path / "b.pt")
    a = load_samples(tmp_path / "a.safetensors")
    assert a["kind"] == "audio" and a["sample_rate"] == 16000
    torch.testing.assert_close(a["x"], x)
    with pytest.raises(ValueError, match="16000 Hz"):
        load_samples(tmp_path / "a.safetensors", sample_rate=8000)
    with pytest.raises(ValueError, match="sample rate"):
        load_samples(tmp_path / "b.pt")
    b = load_samples(tmp_path / "b.pt", sample_rate=22050)
    assert b["sample_rate"] == 22050
    # what `specreg sample --out DIR` writes: samples.npy next to WAVs that carry the rate
    import soundfile as sf

    (tmp_path / "s").mkdir()
    np.save(tmp_path / "s" / "samples.npy", x.numpy())
    sf.write(str(tmp_path / "s" / "sample-000.wav"), x[0, 0].numpy(), 11025, subtype="PCM_16")
    s = load_samples(tmp_path / "s")
    assert s["sample_rate"] == 11025 and s["x"].shape == (4, 1, 3000)


# ----------------------------------------------------------------------------- audio


@needs_speech
def test_paired_audio_metrics_against_auraloss_and_pesq(tmp_path: Path) -> None:
    auraloss = pytest.importorskip("auraloss")
    pesq_pkg = pytest.importorskip("pesq")
    import soundfile as sf

    files = sorted(Path(ASTERISK_ROOT).glob("*.wav"))
    clips = [c for c in (sf.read(str(p), dtype="float32")[0] for p in files) if c.size >= 16000][:4]
    ref = np.stack([c[:16000] for c in clips])
    rng = np.random.default_rng(0)
    deg = (ref + 0.01 * rng.normal(size=ref.shape)).astype(np.float32)
    (tmp_path / "ref").mkdir()
    (tmp_path / "gen").mkdir()
    for i in range(len(ref)):
        sf.write(str(tmp_path / "ref" / f"{i}.wav"), ref[i], 8000, subtype="FLOAT")
        sf.write(str(tmp_path / "gen" / f"{i}.wav"), deg[i], 8000, subtype="FLOAT")
    res = evaluate_dirs(tmp_path / "gen", tmp_path / "ref", ["mrstft", "pesq"], tmp_path / "out", progress=False)
    loss = auraloss.freq.MultiResolutionSTFTLoss(window="hann_window")
    expected = np.mean([float(loss(torch.from_numpy(deg[i])[None, None], torch.from_numpy(ref[i])[None, None]))
                        for i in range(len(ref))])
    assert res["metrics"]["mrstft"] == pytest.approx(expected, rel=1e-4)
    expected_pesq = np.mean([pesq_pkg.pesq(8000, ref[i].astype(np.float64), deg[i].astype(np.float64), "nb")
                             for i in range(len(ref))])
    assert res["metrics"]["pesq"] == pytest.approx(expected_pesq, rel=1e-6)


@needs_speech
def test_speech_reference_and_domain_metrics_run_on_wav_folder(tmp_path: Path) -> None:
    import soundfile as sf

    rng = np.random.default_rng(1)
    (tmp_path / "gen").mkdir()
    for i in range(40):
        sf.write(str(tmp_path / "gen" / f"{i:02d}.wav"), 0.05 * rng.normal(size=8000), 8000, subtype="PCM_16")
    res = evaluate_dirs(tmp_path / "gen", "speech", ["lsd", "domain_fd", "ndb"], None, progress=False)
    assert res["out_dir"] == str(tmp_path / "gen" / "eval")
    assert res["n_reference"] > 100  # every 1-s segment of the held-out prompts
    assert res["metrics"]["domain_fd"] > 0 and res["metrics"]["lsd"] > 0.1  # white noise is not speech
    assert 0 <= res["metrics"]["ndb"] <= 1


# ----------------------------------------------------------------------------- errors


def test_error_empty_sample_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no samples found"):
        evaluate_dirs(tmp_path / "empty", "fashion-mnist", progress=False)


def test_error_unknown_reference_lists_accepted(tmp_path: Path) -> None:
    folder = _write_pngs(tmp_path / "s", _images(3, seed=0))
    with pytest.raises(ValueError, match="accepted names") as err:
        evaluate_dirs(folder, "cifar-10", ["lsd"], progress=False)
    for name in REFERENCES:
        assert name in str(err.value)


def test_error_unknown_metric_lists_accepted() -> None:
    x = torch.zeros(4, 1, 16, 16)
    with pytest.raises(ValueError, match="not a metric for image data") as err:
        evaluate(x, x, metrics=["inception_score"], progress=False)
    assert all(m in str(err.value) for m in METRICS["image"])
    with pytest.raises(ValueError, match="applies to audio data"):
        evaluate(x, x, metrics=["pesq"], progress=False)


def test_error_mismatched_shapes_and_sample_rates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must match"):
        evaluate(torch.zeros(4, 1, 32, 32), torch.zeros(4, 1, 28, 28), metrics=["lsd"], progress=False)
    a = torch.zeros(4, 1, 4000)
    with pytest.raises(ValueError, match="same sample rate"):
        evaluate(a, a, kind="audio", sample_rate=8000, reference_sample_rate=16000, metrics=["lsd"],
                 progress=False)
    with pytest.raises(ValueError, match="sample_rate=None"):
        evaluate(a, a, kind="audio", metrics=["lsd"], progress=False)
    import soundfile as sf

    for name, rate in (("gen", 8000), ("ref", 16000)):
        (tmp_path / name).mkdir()
        sf.write(str(tmp_path / name / "a.wav"), np.zeros(4000), rate)
    with pytest.raises(ValueError, match="16000 Hz but the samples are at 8000 Hz"):
        evaluate_dirs(tmp_path / "gen", tmp_path / "ref", ["lsd"], progress=False)


def test_error_too_few_samples_for_a_covariance() -> None:
    x = torch.from_numpy(_unit(_images(30, seed=0))).float()
    r = torch.from_numpy(_unit(_images(200, seed=1))).float()
    with pytest.raises(ValueError, match="domain_fd needs more samples than feature dimensions"):
        evaluate(x, r, metrics=["domain_fd"], progress=False)
    with pytest.raises(ValueError, match="ndb"):
        evaluate(x, r[:10], metrics=["ndb"], ndb_bins=20, progress=False)


def test_defaults_skip_what_the_data_cannot_support(tmp_path: Path) -> None:
    # 40 samples < D = 64: asked for by name → error (above); by default → skipped with the reason
    folder = _write_pngs(tmp_path / "s", _images(40, seed=0))
    np.save(tmp_path / "r.npy", _images(200, seed=1)[:, None])
    res = evaluate_dirs(folder, tmp_path / "r.npy", None, tmp_path / "o", progress=False)
    assert "domain_fd" in res["skipped"] and "domain_fd" not in res["metrics"]
    assert "domain_kid" in res["metrics"] and "lsd_high" in res["metrics"]
    assert "skipped domain_fd" in (tmp_path / "o" / "metrics.md").read_text(encoding="utf-8")


def test_error_paired_metrics_need_pairs() -> None:
    a, b = torch.zeros(4, 1, 4000), torch.zeros(5, 1, 4000)
    with pytest.raises(ValueError, match="compare sample i with reference i"):
        evaluate(a, b, kind="audio", sample_rate=8000, metrics=["mrstft"], progress=False)


# ----------------------------------------------------------------------------- CLI


def test_cli_eval_writes_outputs_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from specreg.cli import build_parser, main

    help_text = build_parser()._subparsers._group_actions[0].choices["eval"].format_help()
    help_text = " ".join(help_text.split())  # argparse wraps lines
    for option in ("--reference", "--metrics", "--out", "--sample-rate", "--n-reference", "fashion-mnist", "not FID"):
        assert option in help_text
    folder = _write_pngs(tmp_path / "s", _images(12, seed=0))
    ref = _write_pngs(tmp_path / "r", _images(12, seed=1))
    out = tmp_path / "o"
    assert main(["eval", str(folder), "--reference", str(ref), "--metrics", "lsd,lsd_high", "--out", str(out),
                 "--no-progress"]) == 0
    assert {p.name for p in out.iterdir()} == {"metrics.json", "metrics.md", "spectrum.png"}
    assert "lsd_high" in capsys.readouterr().out
    assert main(["eval", str(folder), "--reference", "nope", "--no-progress"]) == 2
    assert "accepted names" in capsys.readouterr().err


# ----------------------------------------------------------------------------- what the numbers do not say


def test_a_set_against_itself_warns_that_kid_is_negative_and_items_are_shared() -> None:
    x = torch.from_numpy(_unit(_images(200, seed=3))).float()
    res = evaluate(x, x, metrics=["domain_kid", "lsd"], progress=False)
    assert res["metrics"]["domain_kid"] < 0
    text = " ".join(res["warnings"])
    assert "negative beyond its spread" in text and "200 of the 200 samples are also items of the reference" in text


def test_lsd_within_its_noise_floor_warns_and_a_real_difference_does_not() -> None:
    same_a = torch.from_numpy(_unit(_images(24, seed=4))).float()
    same_b = torch.from_numpy(_unit(_images(24, seed=5))).float()
    res = evaluate(same_a, same_b, metrics=["lsd", "lsd_high"], progress=False)
    assert "lsd" in res["within_floor"]
    assert any("lsd = " in w and "noise floor" in w for w in res["warnings"])
    blurred = torch.from_numpy(_unit(_images(24, seed=4, smooth=3.0))).float()
    res = evaluate(blurred, same_b, metrics=["lsd_high"], progress=False)
    assert "lsd_high" not in res["within_floor"]
    assert not any("lsd_high =" in w for w in res["warnings"])


def test_near_silent_reference_clips_are_named_for_mrstft() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 4000, generator=g) * 0.1
    r = torch.randn(4, 1, 4000, generator=g) * 0.1
    r[2] *= 1e-6
    res = evaluate(x, r, kind="audio", metrics=["mrstft"], sample_rate=8000, progress=False)
    assert any("near-silent" in w and "[2]" in w for w in res["warnings"])


def test_audio_clips_of_different_lengths_can_be_cropped(tmp_path: Path) -> None:
    import soundfile as sf

    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, length in enumerate((3000, 2500, 4100)):
        sf.write(str(folder / f"c{i}.wav"), (0.1 * rng.standard_normal(length)).astype(np.float32), 8000)
    with pytest.raises(ValueError, match="different lengths.*--crop"):
        load_samples(folder)
    loaded = load_samples(folder, crop=True)
    assert loaded["x"].shape == (3, 1, 2500)
