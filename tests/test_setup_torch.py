"""scripts/install_torch.sh (set-up's PyTorch step): which build it asks pip for, and that an
unreachable CPU wheel index costs seconds. pip itself is replaced by a recorder (PYTHON
points at a wrapper that logs ``-m pip`` calls and runs everything else with this Python),
so nothing is downloaded or installed."""

from __future__ import annotations

import http.server
import importlib.metadata
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_torch.sh"


@pytest.fixture
def fake(tmp_path):
    """(env, log): env runs the script with a recording pip and no NVIDIA GPU."""
    log = tmp_path / "pip.log"
    py = tmp_path / "python"
    py.write_text(f'#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "pip" ]; then shift 2; echo "$@" >> "{log}"; exit 0; fi\n'
                  f'exec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexit 9\n")  # present but finds no GPU, as on a machine without a driver
    smi.chmod(0o755)
    env = {**os.environ, "PYTHON": str(py), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "TORCH_PIN": "torch==0.0.1"}  # never the installed version, so the step is not skipped
    env.pop("TORCH_SPEC", None)
    return env, log, smi


def _run(env: dict[str, str]) -> tuple[str, float]:
    t0 = time.perf_counter()
    out = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr, time.perf_counter() - t0


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_silent_cpu_index_falls_back_to_the_default_index_within_seconds(fake):
    env, log, _ = fake
    with socket.socket() as server:  # accepts connections (kernel backlog) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        env["TORCH_CPU_INDEX"] = f"http://127.0.0.1:{server.getsockname()[1]}/whl/cpu"
        env["TORCH_INDEX_TIMEOUT"] = "2"
        text, seconds = _run(env)
    assert "did not answer within 2 s" in text and "default index" in text
    assert _calls(log) == ["install -q torch==0.0.1"]
    assert 1.5 < seconds < 8, seconds  # the probe waited its timeout, and not pip's retries


def test_a_refused_cpu_index_falls_back_at_once(fake):
    env, log, _ = fake
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env["TORCH_CPU_INDEX"] = f"http://127.0.0.1:{port}/whl/cpu"
    text, seconds = _run(env)
    assert "did not answer" in text
    assert _calls(log) == ["install -q torch==0.0.1"]
    assert seconds < 5, seconds


def test_a_reachable_cpu_index_is_used_without_a_gpu(fake):
    env, log, _ = fake

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        env["TORCH_CPU_INDEX"] = url
        text, _ = _run(env)
    finally:
        httpd.shutdown()
    assert _calls(log) == [f"install -q --index-url {url} --retries 1 --timeout 30 torch==0.0.1"]
    assert "CPU build" in text


def test_an_nvidia_gpu_gets_the_default_index(fake):
    env, log, smi = fake
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100'\n")
    env["TORCH_CPU_INDEX"] = "http://127.0.0.1:9/never-asked"
    text, _ = _run(env)
    assert _calls(log) == ["install -q torch==0.0.1"]
    assert "NVIDIA GPU found" in text


def test_torch_spec_overrides_everything(fake):
    env, log, _ = fake
    env["TORCH_SPEC"] = "torch>=2.4"
    _run(env)
    assert _calls(log) == ["install -q torch>=2.4"]


def test_the_pinned_cpu_build_already_installed_skips_the_step(fake):
    env, log, _ = fake
    version = importlib.metadata.version("torch")
    if not version.endswith("+cpu"):
        pytest.skip(f"this environment's torch is {version}, not a CPU build")
    env["TORCH_PIN"] = f"torch=={version.removesuffix('+cpu')}"
    env["TORCH_CPU_INDEX"] = "http://127.0.0.1:9/never-asked"
    text, seconds = _run(env)
    assert _calls(log) == []
    assert "already installed" in text
    assert seconds < 5, seconds


def test_setup_sh_installs_torch_through_this_script():
    setup = (SCRIPT.parent / "setup.sh").read_text()
    torch_step = setup.index("scripts/install_torch.sh")
    assert torch_step < setup.index('pip install -q -e ".[')
