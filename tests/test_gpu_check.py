"""benchmarks/gpu_check.sh --dry-run: the GPU check's every section runs on the CPU with tiny
sizes, so the script cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_dry_run_runs_every_section(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHON": sys.executable, "SPECREG_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads((out / "gpu_check.json").read_text())
    assert rec["environment"]["dry_run"] and rec["environment"]["device"] == "cpu"
    sections = rec["sections"]
    assert list(sections) == ["parity", "profiles", "compiled", "overhead", "peers"]
    assert all(sec["status"] == "ok" for sec in sections.values()), {k: v["status"] for k, v in sections.items()}

    parity = sections["parity"]["result"]
    from specreg.losses import LOSSES

    assert {name.split()[0] for name in (r["loss"] for r in parity)} >= set(LOSSES)  # every registered loss
    assert all(r["float32_ok"] and r["bf16_finite"] for r in parity)
    fft_rows = [r for r in parity if r["loss"].startswith(("fourier", "psd", "ffl", "mrstft"))]
    assert fft_rows and all("fft" in r["bf16_kernels"] for r in fft_rows)  # the dtype recorder saw the FFTs

    profiles = sections["profiles"]["result"]
    assert profiles and all(r["status"] == "ok" and r["main"]["finite"] for r in profiles)
    assert all(r["projected_hours"] > 0 for r in profiles)
    assert sections["compiled"]["result"]["compiled_ms"] > 0
    assert (out / "losses.md").read_text().count("|") > 20
    md = (out / "gpu_check.md").read_text()
    for name in sections:
        assert f"## {name}" in md


def test_the_gpu_check_needs_an_output_folder():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "usage: bash benchmarks/gpu_check.sh OUT_DIR" in proc.stderr


def test_without_a_cuda_device_the_check_says_so_and_stops(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "gpu")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device visible" in proc.stderr and "--dry-run" in proc.stderr
