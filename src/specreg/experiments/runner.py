"""Executing one run of a study: train (or resume, or fine-tune from a pretrained model),
sample, measure, and write its record; and the real-vs-real noise floor.

A run's outputs in its directory (besides the trainer's own; names: :mod:`specreg.layout`):
the samples that were measured (``eval/``), the record (``run.json``,
:class:`~specreg.layout.RunRecord`: key, status, metrics, spectrum, timings, evaluation
settings), the training seconds and steps summed over sittings, the metrics along training
(evaluation.curve_every) and the weights a fine-tuning started from. :func:`execute`
returns the record it wrote, so nothing reads it back.

The study's floor: ``real/floor.json`` (the floor set measured against the reference
like a run, cached by its settings) and a grid of real items (or WAV clips).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from specreg.experiments.evaluate import measure
from specreg.experiments.plan import RunSpec, data_kind, on_curve, stable_hash
from specreg.experiments.study import Evaluation
from specreg.files import read_json, save_audio, save_image_grid, step_of, write_json
from specreg.layout import (
    CHECKPOINT_DIR,
    CURVE_FILE,
    EVAL_DIR,
    FINETUNE_FILE,
    FLOOR_FILE,
    LOCK_FILE,
    REAL_CLIP_PREFIX,
    REAL_DIR,
    SAMPLES_ARRAY,
    SAMPLES_GRID,
    TIMING_FILE,
    RunRecord,
    with_sidecars,
    write_run_record,
)


def _train(spec: RunSpec, on_checkpoint: Any = None) -> tuple[float, int]:
    """Train (or resume) one run; returns (training seconds of all its sittings, its steps).
    ``on_checkpoint(run_dir, step)`` runs after each checkpoint, after the band-weight figure."""
    from specreg.metrics.plots import redraw_band_weights
    from specreg.train.config import config_from_dict
    from specreg.train.trainer import Trainer

    cfg = config_from_dict(spec.config)
    net = None
    if spec.protocol == "finetune":
        path, weights = _pretrained_weights(spec)
        # the EMA weights, as a published checkpoint that the paper fine-tunes would hold;
        # when the run resumes, the trainer replaces them with its own checkpoint's
        net = pretrained_net(cfg, weights)
        write_json(spec.run_dir / FINETUNE_FILE, {"pretrained": str(path), "weights": "ema"})

    def after_checkpoint(run_dir: Path, step: int) -> None:
        redraw_band_weights(run_dir, step)
        if on_checkpoint is not None:
            on_checkpoint(run_dir, step)

    result = Trainer(cfg, spec.run_dir, net=net, on_checkpoint=after_checkpoint).fit()
    return result.total_seconds, result.step


def _pretrained_weights(spec: RunSpec) -> tuple[Path, dict[str, Any]]:
    """The EMA weights a fine-tuning starts from: the pretraining's newest readable
    checkpoint (a corrupt one is skipped), or its checkpoint at ``spec.pretrain_step``."""
    from specreg.train.checkpoint import checkpoint_name, latest_weights, load_weights

    root = spec.pretrain_dir / CHECKPOINT_DIR  # type: ignore[operator]
    try:
        if spec.pretrain_step is None:
            path, weights, _ = latest_weights(root)
            return path, weights
        path = root / checkpoint_name(spec.pretrain_step)
        if not path.is_dir():
            raise ValueError(f"it has no checkpoint at pretrain_step={spec.pretrain_step} ({path.name} is missing)")
        return path, load_weights(path)
    except ValueError as err:
        raise RuntimeError(f"{spec.label}: the pretrained model {spec.pretrain_dir}: {err}") from None


def pretrained_net(cfg: Any, weights: dict[str, Any]) -> Any:
    """The raw network of ``cfg`` carrying ``weights`` (a state dict of the trained module)."""
    from specreg.train.build import build_formulation, build_model, build_net

    net = build_net(cfg)
    model = build_model(build_formulation(cfg.diffusion), net)
    model.load_state_dict(weights)  # the module wraps `net`, so this fills `net` in place
    return net


def sample(spec: RunSpec, ev: Evaluation, real: Any, n: int,
           checkpoint: Path | None = None) -> tuple[Any, int | None, float]:
    """``n`` samples of the EMA weights of ``checkpoint`` (default: the run's newest) with
    seed ``ev.sample_seed + seed`` and the first ``n`` rows of the study's conditioning;
    returns (samples on the CPU, step (None for a checkpoint not named by its step), seconds)."""
    import torch

    from specreg.train.build import generate, load_trained

    t0 = time.time()
    cfg, model, formulation, step = load_trained(spec.run_dir, checkpoint=checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if isinstance(formulation, torch.nn.Module):
        formulation.to(device)
    generator = torch.Generator(device=device).manual_seed(ev.sample_seed + spec.seed)
    kw = {k: v[:n] for k, v in real.conditioning.items()}
    x = generate(cfg, formulation, model, n, generator=generator, model_kwargs=kw, batch_size=ev.batch_size)
    return x.float().cpu().clamp(-1, 1), step, time.time() - t0


def _train_with_curve(spec: RunSpec, ev: Evaluation, real: Any) -> tuple[float, int]:
    """Train keeping the checkpoint of every ``ev.curve_every`` steps and measure
    ``ev.curve_samples`` samples of each as soon as it is written (``curve.json``, reused
    when the run resumes; a resumed run first measures the kept checkpoints it lacks), so a
    long run's curve can be read, and a stopped run keeps it, while it trains. Checkpoints
    are written every gcd(``train.checkpoint_every``, ``curve_every``) steps, so a stopped
    run loses no more than its own checkpoint interval, and the curve's points are kept
    beyond ``train.keep_checkpoints`` (``train.keep_every``).
    Only the checkpoint cadence changes, and a measurement leaves the global random state as
    it found it, so the weights are those of the plain run. Returns the training seconds
    without the time spent measuring (each point records its ``seconds``; ``inline`` when
    measured inside the trainer's clock)."""
    import torch

    from specreg.train.checkpoint import checkpoint_name, list_checkpoints

    total = spec.config["train"]["steps"]
    every = math.gcd(int(spec.config["train"]["checkpoint_every"]), int(ev.curve_every))
    raw = {**spec.config, "train": {**spec.config["train"], "checkpoint_every": every,
                                    "keep_every": ev.curve_every}}
    path = spec.run_dir / CURVE_FILE
    kind, rate = data_kind(spec.config)
    n = min(ev.curve_samples, ev.n_samples)
    # paired audio metrics: the reference rows that go with the first n samples' log-mels
    reference = real.reference[:n] if kind == "audio" else real.reference

    def measure_point(ckpt: Path, inline: bool) -> None:
        points = read_json(path) or []
        step = step_of(ckpt)
        if not on_curve(step, ev.curve_every, total) or step in {p["step"] for p in points}:
            return
        t0 = time.time()
        with torch.random.fork_rng(devices=[]):  # building the sampling model draws initial weights
            x, _, _ = sample(spec, ev, real, n, checkpoint=ckpt)
        m = measure(x, real, ev, kind=kind, sample_rate=rate, reference=reference)["metrics"]
        points.append({"step": step, "metrics": m, "seconds": round(time.time() - t0, 3), "inline": inline})
        write_json(path, sorted(points, key=lambda p: p["step"]))

    def on_checkpoint(run_dir: Path, step: int) -> None:
        ckpt = run_dir / CHECKPOINT_DIR / checkpoint_name(step)
        if ckpt.is_dir():
            measure_point(ckpt, inline=True)

    def measure_kept() -> None:  # points whose checkpoints a sitting that measured afterwards left behind
        for ckpt in list_checkpoints(spec.run_dir / CHECKPOINT_DIR):
            measure_point(ckpt, inline=False)

    measure_kept()
    seconds, trained = _train(replace(spec, config=raw), on_checkpoint)
    measure_kept()
    measuring = sum(p.get("seconds", 0.0) for p in read_json(path) or [] if p.get("inline"))
    return seconds - measuring, trained


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` while it trains: two processes writing the same
    run (a second ``specreg compare`` on the same --out, or a worker left over from a killed
    one) would mix their checkpoints. The OS drops the lock when the holder dies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RuntimeError(f"{run_dir} is being trained by another process (another specreg compare on the same "
                               "--out, or a worker of one that was stopped); wait for it to finish or stop it, then "
                               "run again") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def execute(spec: RunSpec, ev: Evaluation, *, threads: int = 0, parallel: int | None = None) -> RunRecord:
    """Train one run, sample ``ev.n_samples`` with seed ``ev.sample_seed + seed``, measure,
    and write its record (``run.json``); a pretraining run is only measured along its
    curve, if it has one. Returns the record written. Holds a lock on the run directory
    and runs with ``threads`` torch threads (0: as they are), restored afterwards.
    ``parallel``: how many runs the caller trains at once (recorded with the timing, as
    step times are comparable only between runs trained in the same setting)."""
    from specreg.train.runtime import torch_threads

    with run_lock(spec.run_dir), torch_threads(threads):
        return _execute(spec, ev, parallel)


def _setting(spec: RunSpec, parallel: int | None) -> dict[str, Any]:
    """The setting a run trained in: device, torch threads (the trainer's rule) and runs at once."""
    import torch

    from specreg.train.runtime import cpu_threads

    gpu = torch.cuda.is_available()
    threads = int(spec.config["train"].get("threads") or cpu_threads() or torch.get_num_threads())
    return {"device": "cuda" if gpu else "cpu", "threads": threads, "parallel": parallel}


def _execute(spec: RunSpec, ev: Evaluation, parallel: int | None = None) -> RunRecord:
    from specreg.train.trainer import TrainingDiverged

    t0 = time.time()
    timing_path = spec.run_dir / TIMING_FILE
    base: dict[str, Any] = {"key": spec.key, "variant": spec.variant, "seed": spec.seed, "protocol": spec.protocol,
            "pretrained": None if spec.pretrain_dir is None else str(spec.pretrain_dir),
            "evaluation": asdict(ev)}
    real = ev.real_sets(spec.config)  # cheap (seconds); a pretraining run needs it only for its curve
    started = time.time()
    try:
        seconds, steps = _train_with_curve(spec, ev, real) if spec.curve else _train(spec)
    except TrainingDiverged as err:
        if spec.protocol == "pretrain":
            raise
        record = write_run_record(spec.run_dir, RunRecord(**base, status="diverged", error=str(err)))
        return with_sidecars(record, spec.run_dir, curve=spec.curve)  # as a later reader of it sees it
    # from the trainer's log, so a sitting that was killed still counts up to its last checkpoint
    timing: dict[str, Any] = {"train_s": seconds, "steps": steps, **_setting(spec, parallel),
                              "interval": [started, time.time()]}  # this sitting's wall clock: who ran beside it
    write_json(timing_path, timing)
    curve = read_json(spec.run_dir / CURVE_FILE) if spec.curve else None
    if spec.protocol == "pretrain":
        return write_run_record(spec.run_dir, RunRecord(**base, status="done", timing=timing, curve=curve))

    x, step, sample_s = sample(spec, ev, real, ev.n_samples)
    kind, rate = data_kind(spec.config)
    save_samples(x, spec.run_dir / EVAL_DIR, kind, rate)
    t2 = time.time()
    measured = measure(x, real, ev, kind=kind, sample_rate=rate)
    return write_run_record(spec.run_dir, RunRecord.from_dict({
        **base, "status": "done", "step": step, **measured, "reference": real.description, "curve": curve,
        "timing": {**timing, "sample_s": sample_s, "eval_s": time.time() - t2, "wall_s_this_call": time.time() - t0},
        "n_samples": ev.n_samples, "sample_seed": ev.sample_seed + spec.seed}))


def save_samples(x: Any, folder: Path, kind: str, rate: int | None) -> None:
    """The samples as an array and a grid of the first 64 images (or the first 8 clips as WAV)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / SAMPLES_ARRAY, x.numpy().astype(np.float32))
    if kind == "audio":
        save_audio(x[:8], folder, int(rate))  # type: ignore[arg-type]
    else:
        save_image_grid(x[:64], folder / SAMPLES_GRID)


SPREAD_RESAMPLES = 50  # bootstrap draws of floor_spread: its relative error ≈ 1/√(2·50) = 10 %


def floor_spread(real: Any, ev: Evaluation, *, kind: str, sample_rate: int | None,
                 resamples: int = SPREAD_RESAMPLES) -> dict[str, float]:
    """The real-vs-real standard deviation of every signed key (direction "zero": the
    ``*_bias`` keys) of ``ev.metrics`` at the study's sample counts: the bootstrap std of
    the key over ``resamples`` draws of ``n_samples`` floor items with replacement, each
    measured against the same reference like a run (the reference is common to every
    row of a study, so only the samples' draw varies). A signed key's practical floor
    (:func:`specreg.experiments.stats.practical_floor`)."""
    import statistics

    import torch

    from specreg.metrics.registry import METRICS

    signed = [m for m in ev.metrics if not METRICS[m].paired and any(k.direction == "zero" for k in METRICS[m].keys)]
    if not signed or real.floor is None or len(real.floor) < 2:
        return {}
    sub = replace(ev, metrics=signed)
    g = torch.Generator().manual_seed(ev.metric_seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = torch.randint(len(real.floor), (len(real.floor),), generator=g)
        values = measure(real.floor[idx], real, sub, kind=kind, sample_rate=sample_rate)["metrics"]
        for m in signed:
            for k in METRICS[m].keys:
                if k.direction == "zero" and k.name in values:
                    draws.setdefault(k.name, []).append(float(values[k.name]))
    return {k: statistics.stdev(v) for k, v in draws.items() if len(v) > 1}


def measure_floor(ev: Evaluation, out: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Real vs real with the same counts, cached in the study's ``real/floor.json``: the floor set
    (``n_samples`` real items disjoint from the reference) measured like a run, the
    real-vs-real spread of its signed keys (:func:`floor_spread`) and the reference's
    spectrum. With a training curve, also its first ``curve_samples`` items
    (``curve_metrics``). Paired metrics are left out (no floor from disjoint sets)."""
    import torch

    from specreg.metrics.registry import METRICS, band_metric

    key = stable_hash({"data": cfg["data"], "evaluation": asdict(ev)})
    path = out / FLOOR_FILE
    cached = read_json(path)
    if cached and cached.get("key") == key and "spread" in cached:
        return cached
    kind, rate = data_kind(cfg)
    real = ev.real_sets(cfg)
    if cached and cached.get("key") == key:  # written before the spread was recorded: add it only
        cached["spread"] = floor_spread(real, ev, kind=kind, sample_rate=rate)
        write_json(path, cached)
        return cached
    unpaired = replace(ev, metrics=[m for m in ev.metrics if not METRICS[m].paired])
    record = {"key": key, "reference": real.description, "floor_set": real.floor_description}
    if unpaired.metrics:
        record.update(measure(real.floor, real, unpaired, kind=kind, sample_rate=rate))
    else:
        record.update({"metrics": {}, "labels": {}, "skipped": {}})
    record["spread"] = floor_spread(real, ev, kind=kind, sample_rate=rate)
    spectrum = [band_metric(None).name]  # any spectral metric gives the spectrum; the cheapest
    ref = measure(real.reference, real, replace(ev, metrics=spectrum), kind=kind, sample_rate=rate)["spectrum"]
    record["reference_spectrum"] = ref
    if cfg.get("autoencoder", {}).get("name") and unpaired.metrics:  # a latent model can do no better than this
        from specreg.train.build import build_autoencoder
        from specreg.train.config import config_from_dict

        vae = build_autoencoder(config_from_dict(cfg))
        assert vae is not None  # for type checkers: autoencoder.name is set
        with torch.no_grad():
            recon = torch.cat([vae.images(vae.latents(real.floor[i:i + 256])) for i in range(0, len(real.floor), 256)])
        record["ceiling"] = measure(recon.clamp(-1, 1), real, unpaired, kind=kind, sample_rate=rate)["metrics"]
        record["ceiling_set"] = f"the autoencoder's reconstructions of the floor set ({cfg['autoencoder']['name']})"
    if ev.curve_every and unpaired.metrics:
        n = min(ev.curve_samples, ev.n_samples)
        reference = real.reference[:n] if kind == "audio" else real.reference
        record["curve_metrics"] = measure(real.floor[:n], real, unpaired, kind=kind, sample_rate=rate,
                                          reference=reference)["metrics"]
    (out / REAL_DIR).mkdir(parents=True, exist_ok=True)
    if kind == "audio":
        save_audio(torch.as_tensor(real.reference[:4]), out / REAL_DIR, int(rate or 0), prefix=REAL_CLIP_PREFIX)
    else:
        save_image_grid(torch.as_tensor(real.floor[:64]), out / REAL_DIR / SAMPLES_GRID)
    write_json(path, record)
    return record


__all__ = ["CURVE_FILE", "FLOOR_FILE", "SPREAD_RESAMPLES", "TIMING_FILE", "execute", "floor_spread",
           "measure_floor", "pretrained_net", "run_lock", "sample", "save_samples"]
