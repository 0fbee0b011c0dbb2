"""Stop signals at every point of a run (issue 29): the last step, the final checkpoint
write, the final sample grid, and `compare --jobs 2`. Each ends with the newest consistent
checkpoint on disk, a line saying so and a non-zero exit; the rerun resumes there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from _tiny import tiny_config

from specreg.train.checkpoint import list_checkpoints, load_checkpoint
from specreg.train.config import config_from_dict
from specreg.train.trainer import Trainer, TrainingInterrupted

TINY = tiny_config(steps=4, checkpoint_every=100, sample_steps=2)


def _cfg(**train):
    return config_from_dict({**TINY, "train": {**TINY["train"], **train}})


def _kill_self(signum=signal.SIGTERM):
    os.kill(os.getpid(), signum)


def _steps(run: Path) -> list[int]:
    return [load_checkpoint(p).step for p in list_checkpoints(run / "checkpoints")]


def test_a_signal_during_the_last_step_is_not_swallowed(tmp_path, monkeypatch):
    original = Trainer._step

    def step(self, run, n):
        if n == 4:
            _kill_self()
        return original(self, run, n)

    monkeypatch.setattr(Trainer, "_step", step)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(_cfg(), tmp_path).fit()
    assert (info.value.signal_name, info.value.step) == ("SIGTERM", 4)
    assert info.value.checkpoint == tmp_path / "checkpoints" / "step-00000004"
    assert _steps(tmp_path) == [4]


def test_a_signal_during_the_final_checkpoint_write_is_not_swallowed(tmp_path, monkeypatch):
    from specreg.train import trainer as module

    original = module.save_checkpoint

    def save(root, step, **kw):
        if step == 4:
            _kill_self(signal.SIGINT)
        return original(root, step, **kw)

    monkeypatch.setattr(module, "save_checkpoint", save)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(_cfg(), tmp_path).fit()
    assert (info.value.signal_name, info.value.step) == ("SIGINT", 4)
    assert _steps(tmp_path) == [4]  # complete (load_checkpoint verified it)
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_signal_during_the_final_sample_grid_stops_it_and_the_rerun_writes_it(tmp_path, monkeypatch):
    original = Trainer.write_samples
    calls = []

    def write_samples(self, *args, **kw):
        calls.append(args[2])
        if len(calls) == 1:
            _kill_self(signal.SIGINT)
        return original(self, *args, **kw)

    monkeypatch.setattr(Trainer, "write_samples", write_samples)
    cfg = _cfg(sample_every=4)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(cfg, tmp_path).fit()
    assert info.value.step == 4 and _steps(tmp_path) == [4]
    assert not (tmp_path / "samples" / "step-00000004.png").exists()
    result = Trainer(cfg, tmp_path).fit()  # nothing left to train: the grid is written
    assert result.resumed_from == 4 and (tmp_path / "samples" / "step-00000004.png").is_file()
    assert calls == [4, 4]


def test_a_signal_between_checkpoints_when_sampling_saves_that_step(tmp_path, monkeypatch):
    original = Trainer.write_samples

    def write_samples(self, *args, **kw):
        _kill_self()
        return original(self, *args, **kw)

    monkeypatch.setattr(Trainer, "write_samples", write_samples)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(_cfg(sample_every=3, steps=6), tmp_path).fit()
    assert info.value.step == 3 and _steps(tmp_path) == [3]


def _study(tmp_path: Path) -> Path:
    study = {
        "name": "stop", "base": "demo", "seeds": [0], "baseline": "baseline",
        "overrides": ["data.n=32", "data.size=16", "model.model_channels=8", "model.channel_mult=[1, 2]",
                      "train.batch_size=4", "train.warmup_steps=0", "train.log_every=1",
                      "train.checkpoint_every=1000", "train.tensorboard=false", "train.progress_bar=false",
                      "sample.steps=2"],
        "variants": [{"name": "baseline"}, {"name": "haar", "overrides": ["regularizer.loss=haar"]}],
        "evaluation": {"reference": "textures", "n_samples": 4, "n_reference": 8, "metrics": ["lsd"],
                       "columns": ["lsd"]},
        "profiles": {"tiny": {"overrides": ["train.steps=40"]}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _compare(study: Path, out: Path, jobs: int = 2) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "specreg.cli", "compare", str(study), "--out", str(out),
                             "--profile", "tiny", "--jobs", str(jobs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_sigterm_to_compare_with_two_jobs_stops_both_runs_at_checkpoints_and_the_rerun_resumes(tmp_path):
    study, out = _study(tmp_path), tmp_path / "out"
    runs = [out / "runs" / name / "seed0" for name in ("baseline", "haar")]
    proc = _compare(study, out)
    try:
        deadline = time.monotonic() + 300
        while not all((r / "metrics.jsonl").is_file() and len((r / "metrics.jsonl").read_text().splitlines()) >= 2
                      for r in runs):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("specreg compare:")]
    assert len(said) == 1, err[-3000:]
    assert said[0].startswith("specreg compare: interrupted by SIGTERM; 2 run(s) stopped at their checkpoints"), err
    assert said[0].endswith("run the same command to resume")
    stopped = {}
    for r in runs:
        steps = _steps(r)
        assert len(steps) == 1 and 2 <= steps[0] < 40, (r, steps)
        stopped[r] = steps[0]
        assert not [p for p in (r / "checkpoints").iterdir() if p.name.startswith(".")]
        assert not (r / "run.json").exists()
    # a rerun resumes both where they stopped and finishes the study (--jobs 1: the same
    # runs, without the workers' start-up time)
    again = _compare(study, out, jobs=1)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    for r, step in stopped.items():
        assert f"specreg: resuming from step {step} ({r / 'checkpoints' / f'step-{step:08d}'})" in err
        assert json.loads((r / "run.json").read_text())["status"] == "done"


def test_sigterm_outside_training_is_one_line_and_exit_143(tmp_path):
    """Loading, sampling, measuring: SIGTERM used to end the process without a word."""
    code = ("import os, signal, sys, time\n"
            "import specreg.cli as cli\n"
            "def slow(args):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(30)\n"
            "cli.run_sample = slow\n"
            f"sys.exit(cli.main(['sample', {str(tmp_path)!r}, '--n', '2', '--out', {str(tmp_path / 's')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip() == "specreg sample: interrupted by SIGTERM"


def test_a_stopped_worker_starts_no_further_run(monkeypatch):
    """A pool worker whose run was stopped (or that got SIGTERM while idle) refuses the runs
    still queued for it: they are left to the rerun, not trained unseen."""
    from specreg.experiments import compare
    from specreg.stopping import Stopped

    started = []
    a, stopped, queued, b = (SimpleNamespace(label=name) for name in ("a", "stopped", "queued", "b"))

    def fake_execute(spec, ev, threads, parallel=1):
        started.append(spec.label)
        if spec is stopped:
            raise TrainingInterrupted("SIGTERM", 3, None)
        return {"status": "done"}

    monkeypatch.setattr(compare, "execute", fake_execute)
    monkeypatch.setattr(compare, "_parent_pid", None)
    monkeypatch.setattr(compare, "_worker_stop", None)
    assert compare._execute_in_worker(a, None) == {"status": "done"}
    with pytest.raises(TrainingInterrupted):
        compare._execute_in_worker(stopped, None)
    with pytest.raises(Stopped, match="SIGTERM; queued not started"):
        compare._execute_in_worker(queued, None)
    assert started == ["a", "stopped"]
    monkeypatch.setattr(compare, "_worker_stop", None)
    compare._worker_signal(signal.SIGTERM, None)  # idle: remembered, nothing raised
    with pytest.raises(Stopped):
        compare._execute_in_worker(b, None)
    assert started == ["a", "stopped"]
