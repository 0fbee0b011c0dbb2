"""``specreg eval`` verdicts that do not depend on argument order (issue 26, item 4): the
noise floor from both sets, KID subsets with a spread, ``--crop`` by one rule, one band
vocabulary, a floor band on the spectrum plots, one default for the reference rows."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from specreg.cli import main
from specreg.data.audio import ASTERISK_ROOT
from specreg.experiments.evaluate import _fmt, evaluate, evaluate_dirs
from specreg.metrics.bands import BANDS, band_text

ROOT = Path(__file__).resolve().parents[1]
needs_speech = pytest.mark.skipif(not Path(ASTERISK_ROOT).is_dir(),
                                  reason="Asterisk prompts are not installed (asterisk-core-sounds-en-wav)")


def _fields(n: int, size: int, seed: int, *, smooth: float = 1.0, spread: float = 0.0) -> torch.Tensor:
    """Gaussian fields with a power-law spectrum ∝ |k|^(−2·smooth); ``spread`` > 0 gives each
    item its own random gain (a set whose items vary much more)."""
    g = np.random.default_rng(seed)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    k[0, 0] = 1.0 / size
    white = g.standard_normal((n, 1, size, size))
    x = np.fft.ifft2(np.fft.fft2(white) * k ** -smooth).real
    x /= np.sqrt((k ** (-2 * smooth)).mean())  # unit variance in expectation; each set's own std would couple its items
    x *= np.exp(spread * g.standard_normal((n, 1, 1, 1)))
    return torch.from_numpy(0.2 * x).float()


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """A small user feature extractor (4 features), so the domain metrics run fast."""
    x = x.flatten(1)
    return torch.stack([x.mean(1), x.std(1), x.abs().amax(1), (x[:, 1:] * x[:, :-1]).mean(1)], 1)


# ----------------------------------------------------------------------------- the floor


def test_swapping_samples_and_reference_gives_the_same_floors_and_verdicts():
    """A steady set against one whose items vary a lot: the floor used to come from the
    reference alone, so which set was the reference decided the verdict."""
    steady = _fields(96, 16, seed=0)
    varied = _fields(96, 16, seed=1, spread=0.8)
    kw = {"metrics": ["lsd", "lsd_high", "domain_fd", "domain_kid"], "progress": False,
          "feature_extractor": _pixels}
    ab, ba = evaluate(steady, varied, **kw), evaluate(varied, steady, **kw)
    keys = ("lsd", "lsd_bias", "lsd_high", "lsd_high_bias", "domain_fd")
    assert set(ab["floors"]) == set(ba["floors"]) == set(keys)
    for key in keys:
        assert ab["floors"][key] == pytest.approx(ba["floors"][key], rel=1e-9)
        assert abs(ab["metrics"][key]) == pytest.approx(abs(ba["metrics"][key]), rel=1e-6)
    assert ab["within_floor"] == ba["within_floor"]
    assert ab["metrics"]["domain_kid"] == pytest.approx(ba["metrics"]["domain_kid"], rel=1e-9)
    assert ab["metrics"]["domain_kid_std"] == pytest.approx(ba["metrics"]["domain_kid_std"], rel=1e-9)
    # the varied set is the noisier one: its half-splits dominate the floor in both orders
    assert ab["floors"]["lsd"] > 0


@pytest.mark.parametrize("n, m", [(48, 48), (24, 160)])
def test_the_floor_matches_the_distance_between_independent_real_sets(n, m):
    """Independent reference: the RMS distance and bias between independent draws of one
    distribution at n and m items (Monte Carlo) against the RMS floor the half-splits
    estimate. (Over 100 trials the ratios are 0.96–1.13 for all four keys; 16 trials here,
    so the bias keys, one degree of freedom per trial, get a wider band.)"""
    keys = ("lsd", "lsd_high", "lsd_bias", "lsd_high_bias")
    dist2, floor2 = [], []
    for t in range(16):
        res = evaluate(_fields(n, 16, seed=100 + 2 * t), _fields(m, 16, seed=101 + 2 * t),
                       metrics=["lsd", "lsd_high"], progress=False)
        dist2.append([res["metrics"][k] ** 2 for k in keys])
        floor2.append([res["floors"][k] ** 2 for k in keys])
    ratio = np.sqrt(np.mean(floor2, 0) / np.mean(dist2, 0))
    assert (0.8 < ratio[:2]).all() and (ratio[:2] < 1.25).all(), ratio
    assert (0.6 < ratio[2:]).all() and (ratio[2:] < 1.6).all(), ratio


def test_the_cli_prints_the_floor_beside_every_value_and_writes_it(tmp_path, capsys):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, _fields(64, 16, seed=3).numpy())
    np.save(b, _fields(64, 16, seed=4).numpy())
    assert main(["eval", str(a), "--reference", str(b), "--metrics", "lsd,lsd_low,lsd_high", "--no-progress",
                 "--out", str(tmp_path / "ab")]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "ab" / "metrics.json").read_text(encoding="utf-8"))
    assert "both" in saved["floor_method"]
    for key, value in saved["metrics"].items():
        assert key in saved["floors"] and saved["floors"][key] > 0
        line = next(line for line in out.splitlines() if line.split()[:1] == [key])
        assert line.split()[1:] == [_fmt(value), _fmt(saved["floors"][key])]  # beside its value, always
    md = (tmp_path / "ab" / "metrics.md").read_text(encoding="utf-8")
    assert "| metric | value | noise floor | meaning |" in md


# ----------------------------------------------------------------------------- KID


def test_kid_subsets_are_smaller_than_the_sets_so_their_spread_means_something():
    """200 items per side: the subsets used to be the whole sets (spread ~1e-12), and a
    negative KID was called "negative beyond its spread"."""
    x, r = _fields(200, 16, seed=5), _fields(200, 16, seed=6)
    res = evaluate(x, r, metrics=["domain_kid"], feature_extractor=_pixels, progress=False)
    kid, std = res["metrics"]["domain_kid"], res["metrics"]["domain_kid_std"]
    assert std > 1e-3 * abs(_pixels(x).double().var(0).sum().item())  # the spread of real draws
    assert not any("beyond its spread" in w for w in res["warnings"]) or abs(kid) > 2 * std
    # subsets as large as the smaller set: no spread, and a note says why
    res = evaluate(x, r[:50], metrics=["domain_kid"], feature_extractor=_pixels, kid_subset_size=50, progress=False)
    assert np.isnan(res["metrics"]["domain_kid_std"])
    assert any("no spread" in w for w in res["warnings"])


def test_kid_is_symmetric_in_its_arguments():
    from specreg.metrics.frechet import kid

    g = np.random.default_rng(0)
    a, b = g.standard_normal((60, 5)), g.standard_normal((90, 5)) + 0.3
    assert kid(a, b, subsets=20, subset_size=30, seed=3) == pytest.approx(kid(b, a, subsets=20, subset_size=30,
                                                                              seed=3), rel=1e-12)


# ----------------------------------------------------------------------------- --crop


def _write(folder: Path, clips: list[np.ndarray], rate: int) -> Path:
    import soundfile as sf

    folder.mkdir()
    for i, c in enumerate(clips):
        sf.write(str(folder / f"{i:03d}.wav"), c, rate)
    return folder


@needs_speech
def test_crop_cuts_both_sets_alike_two_halves_agree_two_sets_do_not(tmp_path):
    """Two halves of one recording set are within the floor in both orders; the same
    prompts through a telephone band-pass (another set) are not."""
    import scipy.signal

    from specreg.experiments.loading import audio_files, read_clips

    files = [p for p in audio_files(Path(ASTERISK_ROOT)) if p.parent.name != "silence"]
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:120]]
    clips, rate = read_clips(files)
    half_a = _write(tmp_path / "a", clips[:40], rate)
    half_b = _write(tmp_path / "b", clips[40:80], rate)
    sos = scipy.signal.butter(6, (300, 1200), btype="bandpass", fs=rate, output="sos")
    phone = _write(tmp_path / "phone", [scipy.signal.sosfilt(sos, c).astype(np.float32) for c in clips[80:]], rate)
    kw = {"metrics": ["lsd", "lsd_high"], "crop": True, "progress": False}
    ab = evaluate_dirs(half_a, half_b, out_dir=tmp_path / "ab", **kw)
    ba = evaluate_dirs(half_b, half_a, out_dir=tmp_path / "ba", **kw)
    assert ab["shape"] == ba["shape"]  # one crop length, the shortest clip of either set
    assert ab["floors"] == pytest.approx(ba["floors"], rel=1e-9)
    assert ab["metrics"]["lsd"] == pytest.approx(ba["metrics"]["lsd"], rel=1e-6)
    assert "lsd" in ab["within_floor"] and "lsd" in ba["within_floor"]
    ap = evaluate_dirs(half_a, phone, out_dir=tmp_path / "ap", **kw)
    pa = evaluate_dirs(phone, half_a, out_dir=tmp_path / "pa", **kw)
    for res in (ap, pa):
        assert "lsd" not in res["within_floor"] and res["metrics"]["lsd"] > 4 * res["floors"]["lsd"]


def test_crop_offsets_are_seeded_and_do_not_depend_on_the_role():
    from specreg.experiments.loading import crop_clips

    g = np.random.default_rng(0)
    clips = [g.standard_normal(n).astype(np.float32) for n in (900, 1500, 1000)]
    a, b = crop_clips(clips, 800, seed=3), crop_clips(clips, 800, seed=3)
    assert torch.equal(a, b) and a.shape == (3, 1, 800)
    for c, seg in zip(clips, a[:, 0].numpy()):  # each segment is a contiguous piece of its clip
        start = next(i for i in range(c.size - 799) if np.array_equal(c[i:i + 800], seg))
        assert 0 <= start <= c.size - 800
    assert not torch.equal(crop_clips(clips, 800, seed=4), a)


# ----------------------------------------------------------------------------- bands


def test_one_band_vocabulary_built_from_the_band_edges():
    from specreg.metrics.registry import METRICS, find_key

    for band, (lo, hi) in BANDS.items():
        key = METRICS[f"lsd_{band}"].keys
        assert [k.name for k in key] == [f"lsd_{band}", f"lsd_{band}_bias"]  # a signed bias for every band
        text = band_text(band)
        assert all(text in k.label for k in key)
        edges = [Fraction(f) for f in re.findall(r"\d+/\d+", text)]
        assert all(any(abs(float(e) - v) < 1e-12 for v in (lo, hi)) for e in edges)
    assert "lsd_upper" not in METRICS and find_key("lsd_upper").direction == "lower"  # old results still read
    demo = (ROOT / "src/specreg/configs/studies/demo.yaml").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for text in (demo, readme, (ROOT / "src/specreg/experiments/demo.py").read_text(encoding="utf-8")):
        assert "lsd_upper" not in text and "1/4" not in text
    assert "lsd_high_bias" in demo and "f ≥ 1/3" in readme


# ----------------------------------------------------------------------------- plots


def test_spectrum_plots_draw_the_noise_floor_band(tmp_path, monkeypatch):
    from matplotlib.collections import PolyCollection

    from specreg.metrics import plots

    f = np.arange(9) / 16
    floor = plots.floor_per_bin(f, {"lsd": 0.1, "lsd_high": 0.3})
    assert floor.tolist() == pytest.approx([0.1 if v < 1 / 3 else 0.3 for v in f])
    p = 1.0 / (1 + f)
    for fig in (plots.plot_spectra({"model": (f, p)}, reference=(f, p), floor=floor),
                plots.plot_spectrum_ratio({"model": (f, p)}, (f, p), floor=floor)):
        bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
        assert any("noise floor" in str(c.get_label()) for c in bands)
    seen = []
    monkeypatch.setattr(plots, "plot_spectra", lambda *a, **k: seen.append(k.get("floor")))
    x = tmp_path / "x.npy"
    np.save(x, _fields(32, 16, seed=7).numpy())
    np.save(tmp_path / "r.npy", _fields(32, 16, seed=8).numpy())
    evaluate_dirs(x, tmp_path / "r.npy", ["lsd", "lsd_high"], tmp_path / "out", progress=False)
    assert seen and seen[0] is not None and np.isfinite(seen[0]).all()


# ----------------------------------------------------------------------------- reference rows


def test_eval_and_compare_score_against_the_same_rows_by_default(tmp_path):
    """Built-in textures: the held-out rows for eval, compare (evaluation.split null) and the demo."""
    import yaml

    from specreg.experiments.reference import load_reference, real_sets
    from specreg.experiments.study import Evaluation

    like = torch.zeros(8, 1, 32, 32)
    demo = yaml.safe_load((ROOT / "src/specreg/configs/studies/demo.yaml").read_text(encoding="utf-8"))
    assert demo["evaluation"].get("split") is None and Evaluation().split is None
    r_eval, desc = load_reference("textures", like, "image", n_reference=16)
    r_compare = real_sets("textures", {"kind": "textures", "size": 32, "channels": 1}, n_samples=8,
                          n_reference=16, split=Evaluation().split, floor=False).reference
    assert torch.equal(r_eval, r_compare) and "held-out" in desc
    r_train, desc = load_reference("textures", like, "image", n_reference=16, split="train")
    assert not torch.equal(r_train, r_eval) and "train" in desc
    with pytest.raises(ValueError, match="split='train' is not accepted for reference"):
        load_reference(tmp_path, like, "image", split="train")
