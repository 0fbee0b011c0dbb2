"""The ``specreg`` command line: help texts, errors, and a tiny train → sample run."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from _tiny import tiny_config
from PIL import Image

from specreg.cli import build_parser, main

TINY = tiny_config(steps=3, checkpoint_every=2, sample_steps=3)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    commands = _subcommands(parser)
    assert {"train", "sample", "demo"} <= set(commands)
    for name, sub in [("specreg", parser), *commands.items()]:
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{name}: option {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sample", "--help"], ["demo", "--help"]])
def test_help_exits_cleanly_and_lists_options(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    expected = {"--help": ["train", "sample", "demo"], "train": ["--out", "section.key=value", "demo"],
                "sample": ["--n", "--out", "--sampler", "--steps", "--seed"], "demo": ["--out", "--quick"]}
    for word in expected[argv[0]]:
        assert word in out


def test_installed_script_runs():
    script = shutil.which("specreg")
    if script is None:
        pytest.skip("the console script is not on PATH (package not installed)")
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "sample" in out.stdout


def test_bad_override_is_a_clear_error(capsys, tmp_path):
    code = main(["train", "demo", "--out", str(tmp_path), "train.stpes=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.stpes" in err and "steps" in err
    assert not (tmp_path / "checkpoints").exists()


def test_print_config_shows_overrides(capsys, tmp_path):
    assert main(["train", "demo", "--out", str(tmp_path), "--print-config", "regularizer.loss=fourier_ap",
                 "regularizer.lam=edm"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["regularizer"]["loss"] == "fourier_ap" and cfg["regularizer"]["lam"] == "edm"


def test_sample_needs_a_run_dir(capsys, tmp_path):
    assert main(["sample", str(tmp_path), "--n", "2", "--out", str(tmp_path / "s")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_train_then_sample_end_to_end(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = subprocess.run([sys.executable, "-m", "specreg.cli", "train", str(config), "--out", str(run),
                            "regularizer.loss=fourier_amp", "regularizer.lam=0.1"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["spectral"] > 0 and r["lam"] == pytest.approx(0.1) for r in rows)
    assert yaml.safe_load((run / "config.yaml").read_text())["regularizer"]["loss"] == "fourier_amp"

    out = tmp_path / "samples"
    sample = subprocess.run([sys.executable, "-m", "specreg.cli", "sample", str(run), "--n", "5", "--out",
                             str(out), "--sampler", "euler", "--steps", "2", "--seed", "1"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert sample.returncode == 0, sample.stderr[-3000:]
    x = np.load(out / "samples.npy")
    assert x.shape == (5, 1, 16, 16) and x.dtype == np.float32 and np.isfinite(x).all()
    grid = Image.open(out / "grid.png")
    # 5 images in a 3-wide grid: 2 rows; 16-pixel tiles with 1-pixel gaps
    assert grid.size == (3 * 17 + 1, 2 * 17 + 1)
    assert "step 3" in sample.stdout and "euler" in sample.stdout


def _numpy_radial_power(x: np.ndarray) -> np.ndarray:
    """Ring-averaged |FFT|² (orthonormal) of (B, 1, N, N) images, rings of width 1/N, DC to Nyquist."""
    n = x.shape[-1]
    power = np.abs(np.fft.fft2(x[:, 0].astype(np.float64), norm="ortho")) ** 2
    f = np.fft.fftfreq(n) * n
    ring = np.rint(np.hypot(*np.meshgrid(f, f, indexing="ij"))).astype(int)
    return np.array([power[:, ring == k].mean() for k in range(n // 2 + 1)])


def _numpy_lsd(p: np.ndarray, q: np.ndarray, lo: float = 0.0) -> float:
    freqs = np.arange(p.size) / (2 * (p.size - 1))
    keep = freqs >= lo
    return float(np.sqrt(np.mean(np.log10(p[keep] / q[keep]) ** 2)))


def test_demo_quick_writes_a_consistent_report(tmp_path):
    """The demo is the shipped study `demo` run by the compare harness; its short report
    quotes numbers that numpy recomputes from the saved samples and the documented crops."""
    from specreg.data.images import TextureCrops
    from specreg.experiments.results import StudyResults

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--jobs", "1", "train.steps=3", "train.batch_size=4",
                 "sample.steps=2", "train.progress_bar=false"]) == 0
    text = (out / "report.md").read_text()
    for name in ("baseline", "fourier_ap", "haar", "real vs real", "## Reading", "study_report.md"):
        assert name in text
    for png in ("real/samples.png", "runs/baseline/seed0/eval/samples.png", "runs/haar/seed0/eval/samples.png",
                "spectra.png", "spectra_ratio.png"):
        assert (out / png).stat().st_size > 0
    res = StudyResults.load(out / "results.json")
    n = res.study["evaluation"]["n_samples"]
    reference = np.stack([x.numpy() for x, _ in TextureCrops(size=32, n=2048, seed=1, split="eval")])
    floor_set = np.stack([x.numpy() for x, _ in TextureCrops(size=32, n=n, seed=2, split="eval")])
    q = _numpy_radial_power(reference)
    p = _numpy_radial_power(floor_set)
    assert res.floor_value("lsd") == pytest.approx(_numpy_lsd(p, q), rel=1e-6)
    assert res.floor_value("lsd_high") == pytest.approx(_numpy_lsd(p, q, lo=1 / 3), rel=1e-6)
    p = _numpy_radial_power(np.load(out / "runs" / "baseline" / "seed0" / "eval" / "samples.npy"))
    base = res.rows["baseline"].stats
    assert base["lsd"].mean == pytest.approx(_numpy_lsd(p, q), rel=1e-6)
    assert base["lsd_high"].mean == pytest.approx(_numpy_lsd(p, q, lo=1 / 3), rel=1e-6)
    # three steps from scratch are nowhere near the data, and the reading quotes the numbers
    assert base["lsd"].mean > 5 * res.floor_value("lsd")
    # one band vocabulary: the reading is about lsd_high (f ≥ 1/3) and quotes its signed bias
    assert f"baseline {base['lsd_high'].mean:.3f} (bias {base['lsd_high_bias'].mean:+.3f})" in text
    assert "lsd_high (f ≥ 1/3 cycles/pixel)" in text
    assert f"floor {res.floor_value('lsd_high'):.3f}" in text
    assert "lsd_upper" not in text and "1/4" not in text


# --------------------------------------------------------------------------- hardening (issue 17)

def _tiny_run(tmp_path, steps: int = 4):
    from specreg.train.config import config_from_dict
    from specreg.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(config_from_dict({**TINY, "train": {**TINY["train"], "steps": steps}}), run).fit()  # checkpoints 2, 4
    return run


def test_sample_falls_back_past_an_unreadable_checkpoint(capsys, tmp_path):
    run = _tiny_run(tmp_path)
    weights = run / "checkpoints" / "step-00000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated: safetensors' "incomplete metadata"
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s"), "--steps", "2"]) == 0
    out, err = capsys.readouterr()
    assert "skipping checkpoint" in err and "step-00000004 is unreadable" in err and "Traceback" not in err
    assert "of step 2" in out
    # nothing readable: one line that says so
    weights = run / "checkpoints" / "step-00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s2")]) == 2
    err = capsys.readouterr().err
    assert "error: none of the 2 checkpoints" in err and "is readable" in err


@pytest.mark.parametrize("case", ["missing folder", "empty folder", "unreadable file", "fashion root"])
def test_missing_or_broken_data_is_a_one_line_error(case, capsys, tmp_path):
    folder = tmp_path / "images"
    if case != "missing folder":
        folder.mkdir()
    if case == "unreadable file":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "good.png")
        (folder / "text.png").write_text("not an image")
    overrides = {"missing folder": ["data.kind=image_folder", f"data.root={folder}"],
                 "empty folder": ["data.kind=image_folder", f"data.root={folder}"],
                 "unreadable file": ["data.kind=image_folder", f"data.root={folder}", "data.size=8"],
                 "fashion root": ["data.kind=fashion_mnist", f"data.root={folder}"]}[case]
    assert main(["train", "demo", "--out", str(tmp_path / "run"), *overrides]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("specreg train: error: ") and "Traceback" not in err
    want = {"missing folder": f"data.root='{folder}' (data.kind=image_folder): image folder root='{folder}' "
                              "does not exist",
            "empty folder": "no image files",
            "unreadable file": "holds 1 of 2 image files that cannot be read: text.png",
            "fashion root": "Fashion-MNIST files ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'] "
                            f"not found in '{folder}'"}[case]
    assert want in first
    assert "download=True" not in err  # a config cannot download
    assert not (tmp_path / "run" / "checkpoints").exists()
