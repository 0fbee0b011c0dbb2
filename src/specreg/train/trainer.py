"""The training loop: Eq. 17 (L_diffusion + λ·L_S) with Adam, EMA, checkpoints and logs.

Built on Hugging Face ``accelerate``, so the same code runs on a CPU, one GPU, or several
processes (DDP) launched with ``torchrun --nproc_per_node N`` or ``accelerate launch
--multi_gpu --num_processes N`` (both also on CPUs, with gloo), with optional mixed
precision and gradient accumulation.

Determinism. Everything random in a step is derived from ``(train.seed, step, micro)``,
where ``micro = k·world_size + rank`` numbers the micro-batches of one optimizer step
across processes and accumulation (k = 0 … grad_accum−1):

* the data order: global sample number i = step·B + micro·b + j (B the global batch,
  b the micro-batch) maps to position i mod N of the permutation of epoch i // N;
* the diffusion noise and noise levels (an explicit generator passed to the loss);
* dropout and any other use of the global RNGs (python, numpy, torch are reseeded).

So a run resumed from a checkpoint repeats the uninterrupted run exactly (on the same
hardware and thread count), and one process with ``grad_accum=2`` sees the same samples
and noise as two processes with ``grad_accum=1`` at the same global batch. (Exception:
state a regularizer keeps per process, i.e. AutoLambda's EMAs, is checkpointed from
process 0 only, so a resumed multi-process run with ``lam: auto`` restarts the other
processes' EMAs from process 0's.)

Outputs in the run directory: ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON
object per logged step: loss, diffusion, spectral, lam, lr, grad_norm, and time: seconds since
the run started, summed over the sittings of a resumed run up to the checkpoint each left),
``checkpoints/step-XXXXXXXX/`` (see :mod:`specreg.train.checkpoint`), ``samples/``
(PNG grids or WAV clips) and, when installed, TensorBoard event files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from specreg.files import check_folder, save_audio, save_image_grid, step_name, write_atomic
from specreg.layout import BAND_WEIGHTS_FILE, BAND_WEIGHTS_PLOT, METRICS_FILE, SAMPLES_DIR
from specreg.train.build import (
    batch_inputs,
    build_autoencoder,
    build_dataset,
    build_formulation,
    build_model,
    build_net,
    build_regularizer,
    conditioning_for_samples,
    generate,
    latent_dataset,
    spatial_ndim,
)
from specreg.train.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    find_latest,
    latest_checkpoint,
    restore_rng,
    save_checkpoint,
    set_aside,
)
from specreg.train.config import Config
from specreg.train.stop import StopNow, TrainingInterrupted, ignore_stop_signals, stop_at_step_end, stoppable

if TYPE_CHECKING:
    from specreg.models.vae import ConvVAE

# Sections whose change makes an old checkpoint meaningless for the new run.
_FIXED_SECTIONS = ("data", "model", "diffusion", "regularizer", "autoencoder")
_FROM_CONFIG: Any = object()


def cpu_threads() -> int:
    """The torch thread count a run uses when none is set: 1 without a GPU, else 0 (torch's
    default). Measured here: one thread per run is faster per core than two, and two runs
    of two threads on a 2-core CPU were up to 50× slower per step than alone."""
    return 0 if torch.cuda.is_available() else 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (0: leave the count as it is) and restore
    the previous count afterwards, so a library caller's setting survives."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n and torch.get_num_threads() != old:
            torch.set_num_threads(old)


class TrainingDiverged(RuntimeError):
    """A loss or the gradient became NaN or infinite; training stopped before the update."""


def _say_where_training_starts(root: Path, ckpt: Checkpoint | None, skipped: list[tuple[str, Path]]) -> None:
    """Before training starts: one line per unreadable checkpoint (why, and where it was
    moved), then the step training starts from and why."""
    for reason, moved in skipped:
        print(f"specreg: skipping {reason}; moved aside to {moved}", file=sys.stderr)
    if ckpt is not None:
        print(f"specreg: resuming from step {ckpt.step} ({ckpt.path})", file=sys.stderr)
    elif skipped:
        print(f"specreg: none of the {len(skipped)} checkpoint(s) in {root} is readable (see above): training "
              "starts from scratch at step 0", file=sys.stderr)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    out_dir: Path
    step: int
    resumed_from: int
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0  # this call
    total_seconds: float = 0.0  # every sitting of the run up to its last step (earlier ones from metrics.jsonl)
    is_main_process: bool = True


@dataclass
class _Run:
    """The live objects of one training run (built by :meth:`Trainer._setup`)."""

    acc: Any
    model: nn.Module
    optimizer: Any
    ema: EMA
    formulation: Any
    regularizer: nn.Module | None
    dataset: Dataset
    batches: Iterator[Any]
    world: int
    rank: int
    micro_batch: int
    start: int
    resumed_path: Path | None
    autoencoder: ConvVAE | None = None  # the frozen VAE of a latent model
    stop: bool = False  # a stop signal reached some process: save and stop after this step


# --------------------------------------------------------------------------- randomness

def derive_seed(seed: int, *key: int) -> int:
    """A 63-bit seed that depends only on (seed, *key) (non-negative integers), well mixed."""
    state = np.random.SeedSequence([int(seed), *map(int, key)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


_STEP, _EPOCH = 0, 1  # key tags, so a step's seed never equals an epoch's


def seed_everything(seed: int) -> None:
    """Reseed python, numpy and torch (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StepBatches(Sampler[list[int]]):
    """Index lists of this process's micro-batches, from ``start_step`` to ``steps``.

    Global sample number i = step·B + micro·b + j is item ``perm_e[i mod N]`` with
    e = i // N and ``perm_e`` a permutation seeded by (seed, e): every epoch visits each
    item once, and the position in the stream is a function of the step alone.
    """

    def __init__(self, n_items: int, *, global_batch: int, micro_batch: int, world: int, rank: int,
                 accum: int, seed: int, start_step: int, steps: int) -> None:
        self.n, self.B, self.b = n_items, global_batch, micro_batch
        self.world, self.rank, self.accum = world, rank, accum
        self.seed, self.start, self.steps = seed, start_step, steps
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.seed, _EPOCH, epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep one epoch only
        return self._perms[epoch]

    def indices(self, step: int, micro: int) -> list[int]:
        """Items of micro-batch ``micro`` of optimizer step ``step`` (0-based)."""
        first = step * self.B + micro * self.b
        return [int(self._perm(i // self.n)[i % self.n]) for i in range(first, first + self.b)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            for k in range(self.accum):
                yield self.indices(step, k * self.world + self.rank)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.accum


# --------------------------------------------------------------------------- EMA

class EMA:
    """Exponential moving average of a module's weights (and a copy of its buffers).

    θ_ema ← d_t·θ_ema + (1 − d_t)·θ with d_t = min(decay, (1 + t)/(10 + t)) at step t:
    the warm-up keeps the average from being dominated by the random initial weights in
    short runs, and reaches ``decay`` after ≈ 10/(1 − decay) steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_p: list[torch.Tensor] = [p for p in self.module.parameters()]
        new_p = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, new_p, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


# --------------------------------------------------------------------------- outputs

def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return rows


def _truncate_metrics(path: Path, step: int) -> list[dict[str, Any]]:
    """Drop log lines after ``step`` (written after the checkpoint we resume from); returns the kept rows."""
    rows = [r for r in _read_metrics(path) if r.get("step", 0) <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _flat_hparams(cfg: Config) -> dict[str, Any]:
    out = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            out[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def _is_oom(err: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    text = str(err)
    return ((oom_type is not None and isinstance(err, oom_type)) or "out of memory" in text
            or "can't allocate memory" in text)


# --------------------------------------------------------------------------- trainer

class Trainer:
    """Train the model of ``cfg`` into ``out_dir``; resumes if ``out_dir`` has a checkpoint.

    ``dataset``, ``net`` and ``regularizer`` replace the ones built from the config
    (tests use tiny stand-ins; ``regularizer=None`` trains the baseline).
    """

    _signal: str | None  # the stop signal's name, set while training (train.stop.stop_at_step_end)
    _stop_now: bool = False  # inside train.stop.stoppable: a signal stops at once

    def __init__(self, cfg: Config, out_dir: str | Path, *, dataset: Dataset | None = None,
                 net: nn.Module | None = None, regularizer: Any = _FROM_CONFIG) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self._time_before = 0.0  # training seconds of earlier sittings (set when resuming)
        self._dataset = dataset
        self._net = net
        self._regularizer = regularizer

    # ------------------------------------------------------------------ setup
    def _accelerator(self) -> Any:
        from accelerate import Accelerator

        t = self.cfg.train
        log_with = None
        if t.tensorboard:
            try:
                import tensorboard  # noqa: F401

                log_with = "tensorboard"
            except ImportError:
                pass
        world = int(os.environ.get("WORLD_SIZE", "1"))
        # accelerate only sets up multi-process CPU (gloo) training when asked for the CPU;
        # `accelerate launch --cpu` says so itself, torchrun does not
        cpu = world > 1 and not torch.cuda.is_available()
        acc = Accelerator(mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.grad_accum,
                          log_with=log_with, project_dir=str(self.out_dir), cpu=cpu)
        if acc.num_processes != world:
            raise RuntimeError(f"WORLD_SIZE={world} but accelerate set up {acc.num_processes} process(es); "
                               "every process would train alone and overwrite the others' checkpoints")
        return acc

    def _check_resume(self, ckpt: Checkpoint) -> None:
        saved = ckpt.config
        now = self.cfg.to_dict()
        default = Config().to_dict()  # a key newer than the checkpoint counts as its default
        changed = [f"{s}.{k}" for s in _FIXED_SECTIONS for k in now[s]
                   if saved.get(s, {}).get(k, default[s][k]) != now[s][k]]
        if changed:
            raise ValueError(
                f"{self.out_dir} holds a checkpoint of a different run (these settings differ: {changed}); "
                "use a new --out directory, or the same settings to resume"
            )

    def _optimizer(self, params: Any) -> torch.optim.Optimizer:
        t = self.cfg.train
        cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        beta1, beta2 = t.betas  # two numbers (config._check_ranges)
        return cls(params, lr=t.lr, betas=(beta1, beta2), weight_decay=t.weight_decay)

    def learning_rate(self, step: int) -> float:
        """lr at ``step`` (1-based): linear warm-up over ``train.warmup_steps``, then
        ``train.lr_schedule``: constant, or a cosine / linear decay reaching 0 at ``train.steps``.

        A function of the step alone, so nothing about it needs checkpointing.
        """
        t = self.cfg.train
        if step <= t.warmup_steps:
            return t.lr * step / t.warmup_steps
        if t.lr_schedule == "constant":
            return t.lr
        progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)  # 0 … 1
        if t.lr_schedule == "linear":
            return t.lr * (1.0 - progress)
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ main loop
    def fit(self) -> TrainResult:
        """Train to ``train.steps`` (resuming from the newest readable checkpoint); return a summary.

        SIGINT (Ctrl-C) or SIGTERM during training finishes the step under way, writes a
        checkpoint of it and raises :class:`TrainingInterrupted`; run again to resume.
        """
        with torch_threads(self.cfg.train.threads or cpu_threads()):
            return self._fit()

    def _fit(self) -> TrainResult:
        t = self.cfg.train
        t0 = time.time()
        run = self._setup()
        result = TrainResult(out_dir=self.out_dir, step=run.start, resumed_from=run.start,
                             checkpoint=run.resumed_path, is_main_process=run.acc.is_main_process)
        try:
            with stop_at_step_end(self):
                self._loop(run, result, t0)
        except TrainingDiverged as err:
            last = latest_checkpoint(self.out_dir / CHECKPOINT_DIR)
            where = f"the last good checkpoint is {last.path}" if last else "no checkpoint was written yet"
            raise TrainingDiverged(f"{err}; stopped before updating the weights, {where}. Try a smaller "
                                   "train.lr or regularizer.lam, or train.grad_clip") from None
        except RuntimeError as err:
            if _is_oom(err):
                raise RuntimeError(
                    f"out of memory at step {result.step + 1} with a micro-batch of {run.micro_batch} per "
                    f"process (train.batch_size={t.batch_size}, {run.world} process(es), train.grad_accum="
                    f"{t.grad_accum}). Use a smaller batch (e.g. train.batch_size={max(1, t.batch_size // 2)}), "
                    f"more accumulation (train.grad_accum={t.grad_accum * 2} keeps the global batch), "
                    "train.mixed_precision=bf16, or a smaller model"
                ) from err
            raise
        finally:
            if run.acc.log_with:
                run.acc.end_training()
        result.seconds = time.time() - t0
        result.total_seconds = self._time_before + result.seconds
        return result

    def _setup(self) -> _Run:
        """Build (or restore) everything a run needs, on every process."""
        cfg, t = self.cfg, self.cfg.train
        acc = self._accelerator()
        world, rank = acc.num_processes, acc.process_index
        if t.batch_size % (world * t.grad_accum):
            raise ValueError(
                f"train.batch_size={t.batch_size} is not divisible by processes × train.grad_accum = "
                f"{world} × {t.grad_accum}; choose a multiple of {world * t.grad_accum}"
            )
        for folder in (self.out_dir, self.out_dir / CHECKPOINT_DIR, self.out_dir / SAMPLES_DIR):
            check_folder(folder, "out_dir" if folder == self.out_dir else folder.name)  # before training
        ckpt, skipped = find_latest(self.out_dir / CHECKPOINT_DIR)
        if ckpt is not None:
            self._check_resume(ckpt)
        start = ckpt.step if ckpt is not None else 0

        dataset = self._dataset if self._dataset is not None else build_dataset(cfg.data)
        formulation = build_formulation(cfg.diffusion)
        # identical initial weights on every process (DDP also broadcasts rank 0's)
        seed_everything(t.seed)
        model = build_model(formulation, self._net if self._net is not None else build_net(cfg))
        autoencoder = build_autoencoder(cfg)
        if autoencoder is not None:  # a latent model trains on the data set's latents, encoded once
            autoencoder.to(acc.device)
            dataset = latent_dataset(dataset, autoencoder, cfg)
        regularizer = (build_regularizer(cfg.regularizer, ndim=spatial_ndim(cfg),
                                         sigma_data=cfg.diffusion.sigma_data, autoencoder=autoencoder)
                       if self._regularizer is _FROM_CONFIG else self._regularizer)
        model.to(acc.device)
        if isinstance(formulation, nn.Module):  # schedules kept as buffers
            formulation.to(acc.device)
        if regularizer is not None:
            regularizer.to(acc.device)
            _fit_regularizer(regularizer, dataset, cfg)
        # learned regularizer weights (BandWeights) train with the network
        reg_params = [] if regularizer is None else [p for p in regularizer.parameters() if p.requires_grad]
        optimizer = self._optimizer([*model.parameters(), *reg_params])
        ema = EMA(model, t.ema_decay)
        if ckpt is not None:
            model.load_state_dict(ckpt.model)
            ema.load_state_dict(ckpt.ema)
            optimizer.load_state_dict(ckpt.optimizer)
            if regularizer is not None:
                regularizer.load_state_dict(ckpt.regularizer)
            if ckpt.timesteps and getattr(formulation, "time_sampler", None) is not None:
                formulation.time_sampler.load_state_dict(ckpt.timesteps)  # the adaptive sampler's losses
            restore_rng(ckpt.rng["tensors"], ckpt.rng["meta"])
        acc.wait_for_everyone()  # every process has read its checkpoint before the unreadable ones move
        if acc.is_main_process:
            # all newer than the one resumed: out of the listing and of `keep`, kept for a look
            moved = [(reason, set_aside(path)) for path, reason in skipped]
            _say_where_training_starts(self.out_dir / CHECKPOINT_DIR, ckpt, moved)
            self._prepare_out_dir(start if ckpt is not None else None)
        acc.wait_for_everyone()
        model, optimizer = acc.prepare(model, optimizer)
        if acc.log_with:
            acc.init_trackers("tensorboard", config=_flat_hparams(cfg))

        micro_batch = t.batch_size // (world * t.grad_accum)
        n_items = len(dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__
        sampler = StepBatches(n_items, global_batch=t.batch_size, micro_batch=micro_batch, world=world,
                              rank=rank, accum=t.grad_accum, seed=t.seed, start_step=start, steps=t.steps)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=t.num_workers,
                            worker_init_fn=ignore_stop_signals if t.num_workers else None)
        return _Run(acc=acc, model=model, optimizer=optimizer, ema=ema, formulation=formulation,
                    regularizer=regularizer, dataset=dataset, batches=iter(loader), world=world, rank=rank,
                    micro_batch=micro_batch, start=start, resumed_path=ckpt.path if ckpt is not None else None,
                    autoencoder=autoencoder)

    def _prepare_out_dir(self, resumed_step: int | None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save(self.out_dir)
        metrics = self.out_dir / METRICS_FILE
        self._time_before = 0.0
        if resumed_step is not None:
            kept = _truncate_metrics(metrics, resumed_step)
            # "time" counts every sitting: a killed one's time up to the checkpoint it left is kept
            self._time_before = max((float(r.get("time", 0.0)) for r in kept), default=0.0)
        elif metrics.exists():
            metrics.unlink()  # a run that died before its first checkpoint starts over

    def _loop(self, run: _Run, result: TrainResult, t0: float) -> None:
        t, acc = self.cfg.train, run.acc
        bar = tqdm(total=t.steps, initial=run.start, disable=not (acc.is_main_process and t.progress_bar),
                   desc="train", dynamic_ncols=True)
        log_file = open(self.out_dir / METRICS_FILE, "a") if acc.is_main_process else None
        try:
            for step in range(run.start + 1, t.steps + 1):
                row = self._step(run, step)
                run.ema.update(acc.unwrap_model(run.model), step)
                result.step = step
                bar.update(1)
                if step % t.log_every == 0 or step == t.steps:
                    row["time"] = round(self._time_before + time.time() - t0, 3)
                    result.history.append(row)
                    bar.set_postfix(loss=f"{row['loss']:.4g}")
                    if log_file is not None:
                        log_file.write(json.dumps(row) + "\n")
                        log_file.flush()
                    if acc.log_with:
                        acc.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
                if step % t.checkpoint_every == 0 or step == t.steps or run.stop:
                    result.checkpoint = self._save(run, step)
                # after the last step's checkpoint, a signal during that step or its write counts too
                if run.stop or (step == t.steps and self._signalled(run)):
                    raise TrainingInterrupted(self._signal or "a stop signal (on another process)", step,
                                              result.checkpoint, acc.is_main_process)
                if t.sample_every and (step % t.sample_every == 0 or step == t.steps):
                    self._stoppable_samples(run, result, step)
            if run.start == t.steps and t.sample_every and not self._samples_written(t.steps):
                self._stoppable_samples(run, result, t.steps)  # a rerun after a stop during the final grid
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()

    def _signalled(self, run: _Run) -> bool:
        """Whether a stop signal reached any process (a collective call: every process calls it)."""
        mine = float(self._signal is not None)
        if run.world == 1:
            return mine > 0
        return float(run.acc.reduce(torch.tensor([mine], device=run.acc.device), reduction="sum")) > 0

    def _stoppable_samples(self, run: _Run, result: TrainResult, step: int) -> None:
        """Write the sample grid of ``step``; a stop signal ends it at once, after a checkpoint
        of ``step`` is on disk (it is unless ``train.sample_every`` falls between checkpoints)."""
        if run.acc.is_main_process:
            try:
                with stoppable(self):
                    self.write_samples(run.formulation, run.ema.module, step, run.dataset, run.autoencoder)
            except StopNow:
                if result.checkpoint is None or result.checkpoint.name != step_name(step):
                    result.checkpoint = self._save(run, step)
                raise TrainingInterrupted(self._signal or "a stop signal", step, result.checkpoint) from None
        run.acc.wait_for_everyone()

    def _samples_written(self, step: int) -> bool:
        folder = self.out_dir / SAMPLES_DIR
        return (folder / f"{step_name(step)}.png").is_file() or (folder / step_name(step)).is_dir()

    def _step(self, run: _Run, step: int) -> dict[str, Any]:
        """One optimizer step (``train.grad_accum`` micro-batches); returns its log row."""
        t, acc, model, optimizer = self.cfg.train, run.acc, run.model, run.optimizer
        lr = self.learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        parts = []
        for k in range(t.grad_accum):
            seed = derive_seed(t.seed, _STEP, step, k * run.world + run.rank)
            seed_everything(seed)  # dropout and data-set randomness
            x0, kw = batch_inputs(next(run.batches), self.cfg, acc.device)  # latents already
            generator = torch.Generator(device=acc.device).manual_seed(seed)
            with acc.accumulate(model):
                out = run.formulation.loss(model, x0, regularizer=run.regularizer, generator=generator, **kw)
                acc.backward(out.loss.mean())
            parts.append(torch.stack([out.loss.mean(), out.diffusion.mean(), out.spectral.mean(),
                                      out.lam.mean()]).detach().float())
        # every process gets the same numbers, so all stop together on NaN, and on a stop
        # signal that reached any of them (the last entry)
        signalled = parts[0].new_tensor([float(getattr(self, "_signal", None) is not None)])
        stats = acc.reduce(torch.cat([torch.stack(parts).mean(0), signalled]), reduction="mean").tolist()
        loss, diffusion, spectral, lam = stats[:4]
        run.stop = stats[4] > 0
        _check_finite(step, loss=loss, diffusion=diffusion, spectral=spectral, lam=lam)
        if run.world > 1 and run.regularizer is not None:  # outside DDP's module: average by hand
            for p in run.regularizer.parameters():
                if p.grad is not None:
                    p.grad = acc.reduce(p.grad, reduction="mean")
        grad_norm = None
        if t.grad_clip is not None:
            grad_norm = float(acc.clip_grad_norm_(model.parameters(), t.grad_clip))
            # fp16 overflow is normal and handled by the loss scaler (it skips the step)
            if not math.isfinite(grad_norm) and t.mixed_precision != "fp16":
                raise TrainingDiverged(f"step {step}: the gradient norm is {grad_norm} although the losses "
                                       f"are finite (loss {loss:.4g})")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"step": step, "loss": loss, "diffusion": diffusion, "spectral": spectral, "lam": lam,
                "lr": lr, "grad_norm": grad_norm}

    def _save(self, run: _Run, step: int) -> Path:
        t, acc = self.cfg.train, run.acc
        path = self.out_dir / CHECKPOINT_DIR / f"step-{step:08d}"
        if acc.is_main_process:
            n_items = len(run.dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__
            seen = step * t.batch_size
            path = save_checkpoint(
                self.out_dir / CHECKPOINT_DIR, step, model=acc.unwrap_model(run.model).state_dict(),
                ema=run.ema.state_dict(), optimizer=run.optimizer.state_dict(), config=self.cfg.to_dict(),
                regularizer=run.regularizer.state_dict() if run.regularizer is not None else None,
                data={"samples_seen": seen, "epoch": seen // n_items, "index_in_epoch": seen % n_items,
                      "dataset_len": n_items},
                keep=t.keep_checkpoints,
                timesteps=_sampler_state(run.formulation),
            )
            if run.regularizer is not None and getattr(run.regularizer, "band_weights", None) is not None:
                log_band_weights(self.out_dir, step, run.regularizer)
        acc.wait_for_everyone()
        return path

    def write_samples(self, formulation: Any, model: nn.Module, step: int, dataset: Dataset | None = None,
                      autoencoder: ConvVAE | None = None) -> Path:
        """Sample ``sample.n`` items with ``model`` (the EMA) and write a PNG grid or WAV clips."""
        cfg = self.cfg
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.sample.seed)
        kw = conditioning_for_samples(cfg, cfg.sample.n, dataset if cfg.data.is_audio else None)
        x = generate(cfg, formulation, model, cfg.sample.n, generator=generator, model_kwargs=kw,
                     autoencoder=autoencoder)
        folder = self.out_dir / SAMPLES_DIR
        if cfg.data.is_audio:
            save_audio(x, folder / step_name(step), cfg.data.sample_rate)
            return folder / step_name(step)
        return save_image_grid(x, folder / f"{step_name(step)}.png")




def _sampler_state(formulation: Any) -> dict[str, torch.Tensor] | None:
    """The noise-level sampler's buffers (only the adaptive sampler has any), for the checkpoint."""
    sampler = getattr(formulation, "time_sampler", None)
    return None if sampler is None else {k: v.detach().cpu() for k, v in sampler.state_dict().items()}


def _fit_regularizer(regularizer: nn.Module, dataset: Dataset, cfg: Config, n: int = 512) -> None:
    """Give a loss that estimates something from data (``fourier_l2`` with
    ``weights="whiten"``: the data's spectrum) the first ``n`` training items. Runs before
    a checkpoint is loaded, so a resumed run loads the same values it computes here."""
    loss = getattr(regularizer, "loss", None)
    if loss is None or not getattr(loss, "needs_fit", False):
        return
    count = min(n, len(dataset))  # type: ignore[arg-type]  # torch's Dataset declares no __len__
    x0 = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(count)])
    loss.fit(x0.to(next(iter(loss.buffers())).device))


def log_band_weights(out_dir: Path, step: int, regularizer: nn.Module, n_sigma: int = 25) -> Path:
    """Append the learned band weights exp(−u_b(σ)) on a σ grid (0.002 … 80, log-spaced) at
    ``step`` to ``out_dir/band_weights.json`` and redraw ``band_weights.png``."""
    from specreg.metrics.plots import plot_band_weights

    path = out_dir / BAND_WEIGHTS_FILE
    sigma = torch.logspace(math.log10(0.002), math.log10(80.0), n_sigma, dtype=torch.float64)
    head: Any = regularizer.band_weights  # a BandWeights, or any module with its weights() and freqs
    w = head.weights(sigma.to(head.freqs.dtype)).cpu().double()
    band_labels = getattr(regularizer.loss, "band_labels", None)
    labels = band_labels() if band_labels is not None else [f"band {b}" for b in range(w.shape[1])]
    record: dict[str, Any] = {"sigma": sigma.tolist(), "bands": labels, "steps": {}}
    if path.is_file():
        try:
            record["steps"] = json.loads(path.read_text()).get("steps", {})
        except json.JSONDecodeError:
            pass
    record["steps"][str(step)] = w.T.tolist()  # [band][sigma]
    record["steps"] = {k: record["steps"][k] for k in sorted(record["steps"], key=int) if int(k) <= step}
    write_atomic(path, json.dumps(record) + "\n")
    plot_band_weights(record, out_dir / BAND_WEIGHTS_PLOT)
    return path


def _check_finite(step: int, **parts: float) -> None:
    """Raise :class:`TrainingDiverged` naming the first non-finite part."""
    for name in ("diffusion", "spectral", "lam"):
        if not math.isfinite(parts[name]):
            what = {"diffusion": "the diffusion loss", "spectral": "the spectral loss (L_S)",
                    "lam": "the weight λ"}[name]
            raise TrainingDiverged(f"step {step}: {what} is {parts[name]} ({_fmt(parts)})")
    if not math.isfinite(parts["loss"]):
        raise TrainingDiverged(f"step {step}: the total loss overflowed: λ·spectral is not finite ({_fmt(parts)})")


def _fmt(parts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in parts.items())


def train(cfg: Config, out_dir: str | Path, **kwargs: Any) -> TrainResult:
    """Shorthand for ``Trainer(cfg, out_dir, **kwargs).fit()``."""
    return Trainer(cfg, out_dir, **kwargs).fit()
