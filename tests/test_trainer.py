"""The trainer: exact resume, SIGKILL safety, DDP equivalence, NaN and OOM messages, data order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from specreg.regularizer import SpectralRegularizer
from specreg.train.checkpoint import list_checkpoints
from specreg.train.config import config_from_dict
from specreg.train.trainer import EMA, StepBatches, Trainer, TrainingDiverged

# One thread: the numbers must not depend on how a busy machine schedules threads, and
# the subprocess runs (torchrun sets OMP_NUM_THREADS=1) must match in-process ones.
TINY = {
    "data": {"kind": "checkerboard", "size": 16, "n": 40},
    "model": {"kind": "unet", "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": [], "dropout": 0.1},
    "diffusion": {"kind": "edm"},
    "regularizer": {"loss": "fourier_ap", "lam": "auto"},
    "train": {"steps": 8, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "log_every": 1,
              "checkpoint_every": 2, "keep_checkpoints": 2, "threads": 1, "tensorboard": False,
              "progress_bar": False, "ema_decay": 0.9},
    "sample": {"n": 4, "steps": 3},
}
PARTS = ("loss", "diffusion", "spectral", "lam")


def tiny(**sections: dict) -> dict:
    raw = json.loads(json.dumps(TINY))
    for name, values in sections.items():
        raw[name].update(values)
    return raw


def curve(run_dir: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], *(r[k] for k in PARTS)) for r in rows]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(run_dir / "checkpoints")[-1] / "model.safetensors"))


def write_config(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "specreg.cli", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted 8-step run every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    Trainer(config_from_dict(tiny()), out).fit()
    return out


def test_reference_run_logs_every_part(reference):
    rows = curve(reference)
    assert [r[0] for r in rows] == list(range(1, 9))
    for _, loss, diffusion, spectral, lam in rows:
        assert spectral > 0 and lam > 0
        assert loss == pytest.approx(diffusion + lam * spectral, rel=1e-5)
    assert [p.name for p in list_checkpoints(reference / "checkpoints")] == ["step-00000006", "step-00000008"]


def test_resume_continues_the_curve_exactly(reference, tmp_path):
    Trainer(config_from_dict(tiny(train={"steps": 5})), tmp_path).fit()   # stops at 5, checkpoint at 5
    result = Trainer(config_from_dict(tiny()), tmp_path).fit()            # same dir: resumes
    assert result.resumed_from == 5
    assert curve(tmp_path) == curve(reference)
    a, b = final_weights(tmp_path), final_weights(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # model and EMA


def test_training_time_counts_every_sitting(tmp_path):
    """A resumed run's logged time and total_seconds continue from the sitting it resumes:
    a sitting that never reported its time (killed) still counts up to its checkpoint."""
    first = Trainer(config_from_dict(tiny(train={"steps": 5})), tmp_path).fit()
    before = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["time"]
    assert 0 < before <= first.seconds and first.total_seconds == first.seconds
    second = Trainer(config_from_dict(tiny()), tmp_path).fit()
    times = [json.loads(line)["time"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert times == sorted(times) and times[5] > before
    assert second.total_seconds == pytest.approx(before + second.seconds)


def test_resume_refuses_a_different_run(reference, tmp_path):
    Trainer(config_from_dict(tiny(train={"steps": 2})), tmp_path).fit()
    with pytest.raises(ValueError, match="regularizer.loss"):
        Trainer(config_from_dict(tiny(regularizer={"loss": "wavelet"})), tmp_path).fit()


def _run_until_pause(config: Path, out: Path, pause: str) -> None:
    proc = cli("train", str(config), "--out", str(out), env={"SPECREG_TEST_PAUSE": pause})
    try:
        for line in proc.stderr:
            if f"specreg-test-pause {pause.replace(':', ' ')}" in line:
                break
        else:
            raise AssertionError(f"the run ended without reaching {pause}: rc={proc.wait()}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_after_and_during_checkpoint(reference, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", tiny())
    out = tmp_path / "run"
    # killed right after checkpoint 4 was committed
    _run_until_pause(config, out, "after:4")
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000002", "step-00000004"]
    # resumed, then killed in the middle of writing checkpoint 6 (weights written, rest not)
    _run_until_pause(config, out, "during:6")
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000002", "step-00000004"]
    assert any(p.name.startswith(".tmp-step-00000006") for p in (out / "checkpoints").iterdir())
    # the same command again finishes the run; the curve is the uninterrupted one
    proc = cli("train", str(config), "--out", str(out))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "resumed from step 4" in err
    assert curve(out) == curve(reference)
    a, b = final_weights(out), final_weights(reference)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _zero_4kb(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = bytes(4096)
    path.write_bytes(bytes(data))


def test_corrupted_newest_checkpoint_is_skipped_and_set_aside(reference, tmp_path, capsys):
    Trainer(config_from_dict(tiny(train={"steps": 6})), tmp_path).fit()  # checkpoints 4 and 6
    _zero_4kb(tmp_path / "checkpoints" / "step-00000006" / "model.safetensors")  # still parses
    capsys.readouterr()
    result = Trainer(config_from_dict(tiny()), tmp_path).fit()
    err = capsys.readouterr().err
    assert result.resumed_from == 4
    assert "skipping checkpoint" in err and "step-00000006 is unreadable: model.safetensors does not match" in err
    assert "resuming from step 4" in err
    assert curve(tmp_path) == curve(reference)
    # moved out of the listing (so `keep` counts good ones only), kept for inspection
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "corrupt-step-00000006", "step-00000006", "step-00000008"]


def test_no_readable_checkpoint_says_it_starts_from_scratch(reference, tmp_path, capsys):
    Trainer(config_from_dict(tiny(train={"steps": 4})), tmp_path).fit()  # checkpoints 2 and 4
    for ckpt in list_checkpoints(tmp_path / "checkpoints"):
        data = (ckpt / "state.safetensors").read_bytes()
        (ckpt / "state.safetensors").write_bytes(data[:-8])  # truncated
    capsys.readouterr()
    result = Trainer(config_from_dict(tiny()), tmp_path).fit()
    err = capsys.readouterr().err
    assert result.resumed_from == 0
    assert "none of the 2 checkpoint(s)" in err and "training starts from scratch at step 0" in err
    assert curve(tmp_path) == curve(reference)


class _SignalAt(torch.utils.data.Dataset):
    """Checkerboards that send this process ``signum`` when item number ``n`` is read."""

    def __init__(self, n: int, signum: int) -> None:
        from specreg.data.images import Checkerboards

        self.data, self.n, self.signum, self.reads = Checkerboards(n=40, size=16), n, signum, 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        self.reads += 1
        if self.reads == self.n:
            os.kill(os.getpid(), self.signum)
        return self.data[i]


def test_sigterm_finishes_the_step_saves_and_stops(reference, tmp_path):
    from specreg.train.trainer import TrainingInterrupted

    before = signal.getsignal(signal.SIGTERM)
    cfg = config_from_dict(tiny(train={"checkpoint_every": 100}))
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(cfg, tmp_path, dataset=_SignalAt(3 * 8 + 2, signal.SIGTERM)).fit()  # during step 4
    assert info.value.signal_name == "SIGTERM" and info.value.step == 4
    assert str(info.value).startswith("SIGTERM at step 4; saved checkpoint ") and "\n" not in str(info.value)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000004"]
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    Trainer(cfg, tmp_path).fit()  # resumes at 4 and repeats the uninterrupted run
    assert curve(tmp_path) == curve(reference)


def test_ctrl_c_saves_a_checkpoint_and_exits_with_one_line(tmp_path):
    # a long run without scheduled checkpoints: all that survives Ctrl-C is what it saves
    long = tiny(train={"steps": 100_000, "checkpoint_every": 100_000})
    config = write_config(tmp_path / "long.yaml", long)
    out = tmp_path / "run"
    proc = cli("train", str(config), "--out", str(out))
    metrics = out / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 240
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    assert lines[0] == (f"specreg train: interrupted by SIGINT at step {step}; saved checkpoint "
                        f"{out / 'checkpoints' / f'step-{step:08d}'}; run the same command to resume")
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [f"step-{step:08d}"]
    assert len(metrics.read_text().splitlines()) == step
    # the same command resumes there, and says so before it trains
    more = cli("train", str(config), "--out", str(out), f"train.steps={step + 2}")
    _, err = more.communicate(timeout=240)
    assert more.returncode == 0, err
    assert err.splitlines()[0] == f"specreg: resuming from step {step} ({out / 'checkpoints' / f'step-{step:08d}'})"
    # ... and continues exactly as a run that was never interrupted
    uninterrupted = tmp_path / "uninterrupted"
    Trainer(config_from_dict(tiny(train={"steps": step + 2, "checkpoint_every": 100_000})), uninterrupted).fit()
    assert curve(out) == curve(uninterrupted)


def test_ddp_two_processes_match_one_with_accumulation(tmp_path):
    """Two gloo processes with micro-batch 4 = one process accumulating two micro-batches of 4.

    Same samples, noise and dropout masks by construction; only the float summation order
    may differ (DDP averages (g0 + g1)/2, accumulation adds g0/2 + g1/2). Tolerance: losses
    1e-6 relative, weights after 4 Adam steps 1e-6 absolute (measured on a 2-core CPU with
    gloo: identical to the last bit).
    """
    raw = tiny(regularizer={"lam": 0.1}, train={"steps": 4, "checkpoint_every": 4})
    two = write_config(tmp_path / "two.yaml", raw)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "specreg.cli", "train", str(two), "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    Trainer(config_from_dict({**raw, "train": {**raw["train"], "grad_accum": 2}}), tmp_path / "single").fit()
    a, b = curve(tmp_path / "ddp"), curve(tmp_path / "single")
    assert [r[0] for r in a] == [r[0] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert ra[1:] == pytest.approx(rb[1:], rel=1e-6, abs=1e-8)
    wa, wb = final_weights(tmp_path / "ddp"), final_weights(tmp_path / "single")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
    # the zero-initialised output conv has moved, so the comparison is not trivially true
    assert wa["model.net.out_conv.weight"].abs().max() > 1e-4


class _NaNAfter(nn.Module):
    """A spectral loss (per-sample |x̂0 − x0| mean) that turns NaN from call ``n`` on."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = (x0_hat - x0).abs().flatten(1).mean(1)
        return out * float("nan") if self.calls >= self.n else out


class _NaNNet(nn.Module):
    def __init__(self, net: nn.Module, n: int) -> None:
        super().__init__()
        self.net, self.n, self.calls = net, n, 0

    def forward(self, x, noise_label, class_labels=None, cond=None):
        self.calls += 1
        out = self.net(x, noise_label)
        return out * float("nan") if self.calls >= self.n else out


def test_nan_in_spectral_loss_stops_and_keeps_checkpoint(tmp_path):
    cfg = config_from_dict(tiny())
    reg = SpectralRegularizer(_NaNAfter(3), lam=0.5)
    with pytest.raises(TrainingDiverged) as info:
        Trainer(cfg, tmp_path, regularizer=reg).fit()
    msg = str(info.value)
    assert "step 3" in msg and "spectral" in msg and "step-00000002" in msg
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002"]


def test_nan_in_diffusion_loss_is_named(tmp_path):
    from specreg.train.build import build_net

    cfg = config_from_dict(tiny(regularizer={"loss": None}))
    with pytest.raises(TrainingDiverged, match="step 2: the diffusion loss is nan"):
        Trainer(cfg, tmp_path, net=_NaNNet(build_net(cfg), 2)).fit()


def test_out_of_memory_suggests_a_smaller_batch(tmp_path):
    class Hungry(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(RuntimeError, match=r"out of memory at step 1.*train\.batch_size=4"):
        Trainer(config_from_dict(tiny()), tmp_path, net=Hungry()).fit()


def test_step_batches_cover_each_epoch_and_ignore_the_split():
    n, B = 10, 4
    one = StepBatches(n, global_batch=B, micro_batch=2, world=1, rank=0, accum=2, seed=3, start_step=0, steps=5)
    stream = [i for batch in one for i in batch]
    assert len(stream) == 20
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert stream[:10] != stream[10:]  # a new order each epoch
    # two processes without accumulation see the same micro-batches, interleaved
    ranks = [list(StepBatches(n, global_batch=B, micro_batch=2, world=2, rank=r, accum=1, seed=3,
                              start_step=0, steps=5)) for r in (0, 1)]
    assert [i for pair in zip(*ranks) for batch in pair for i in batch] == stream
    # resuming at step 3 yields exactly the tail
    tail = StepBatches(n, global_batch=B, micro_batch=2, world=1, rank=0, accum=2, seed=3, start_step=3, steps=5)
    assert [i for batch in tail for i in batch] == stream[12:]


def test_ema_follows_its_formula():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.5)
    expected = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model, step)
        d = min(0.5, (1 + step) / (10 + step))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
    for e, p in zip(expected, ema.module.parameters()):
        torch.testing.assert_close(p, e)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_learning_rate_schedule(schedule):
    import math

    cfg = config_from_dict(tiny(train={"steps": 12, "warmup_steps": 4, "lr": 2.0, "lr_schedule": schedule}))
    lr = Trainer(cfg, "unused").learning_rate
    assert [lr(s) for s in range(1, 5)] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # warm-up
    # after warm-up, progress p = (step − 4) / 8 runs from 0 to 1
    expected = {"constant": lambda p: 2.0, "linear": lambda p: 2.0 * (1 - p),
                "cosine": lambda p: 1.0 + math.cos(math.pi * p)}[schedule]
    for step in range(5, 13):
        assert lr(step) == pytest.approx(expected((step - 4) / 8))


@pytest.mark.parametrize("threads, inside", [(0, 1), (3, 3)])
def test_threads_hold_during_fit_and_are_restored(tmp_path, monkeypatch, threads, inside):
    """train.threads=0 trains with one thread on a CPU (no GPU here); any count is set for
    the fit only, so the caller's own setting survives it."""
    seen: list[int] = []

    class Spy(nn.Module):  # records the thread count the training step runs with
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, *args, **kwargs):
            seen.append(torch.get_num_threads())
            return self.net(*args, **kwargs)

    from specreg.train.build import build_net

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = config_from_dict(tiny(train={"threads": threads, "steps": 2}))
        Trainer(cfg, tmp_path, net=Spy(build_net(cfg))).fit()
        assert seen and set(seen) == {inside}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
