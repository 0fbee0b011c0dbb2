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
from PIL import Image

from specreg.cli import build_parser, main

TINY = {
    "data": {"kind": "checkerboard", "size": 16, "n": 32},
    "model": {"kind": "unet", "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": []},
    "diffusion": {"kind": "edm"},
    "train": {"steps": 3, "batch_size": 4, "log_every": 1, "checkpoint_every": 2, "threads": 1,
              "tensorboard": False, "progress_bar": False},
    "sample": {"n": 4, "steps": 3},
}


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
    from specreg.data.images import TextureCrops
    from specreg.demo import FLOOR, HIGH_BAND, REFERENCE_N, run_demo

    out = tmp_path / "demo"
    report = run_demo(out, threads=1, quick=True,
                      overrides=["train.steps=3", "train.batch_size=4", "sample.n=8", "sample.steps=2",
                                 "train.progress_bar=false"])
    text = report.read_text()
    for name in ("baseline", "fourier_ap", "haar", FLOOR, "real (held-out rows)", "## Reading"):
        assert name in text
    for png in ("samples_real.png", "samples_baseline.png", "samples_haar.png", "spectra.png",
                "spectra_ratio.png"):
        assert (out / png).stat().st_size > 0
    numbers = json.loads((out / "lsd.json").read_text())
    # the report's numbers, recomputed with numpy from the same images
    reference = np.stack([x.numpy() for x, _ in TextureCrops(size=32, n=REFERENCE_N, seed=1, split="train")])
    floor_set = np.stack([x.numpy() for x, _ in TextureCrops(size=32, n=8, seed=2, split="train")])
    q = _numpy_radial_power(reference)
    for name, x in ((FLOOR, floor_set),
                    ("baseline", np.load(out / "baseline" / "samples.npy"))):
        p = _numpy_radial_power(x)
        assert numbers[name]["lsd"] == pytest.approx(_numpy_lsd(p, q), rel=1e-6)
        assert numbers[name]["lsd_high"] == pytest.approx(_numpy_lsd(p, q, lo=HIGH_BAND[0]), rel=1e-6)
    # three steps from scratch are nowhere near the data, and the reading quotes the numbers
    assert numbers["baseline"]["lsd"] > 5 * numbers[FLOOR]["lsd"]
    assert f"baseline {numbers['baseline']['lsd_high']:.3f}" in text
    assert f"floor {numbers[FLOOR]['lsd_high']:.3f}" in text
