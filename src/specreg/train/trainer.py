"""The training loop: Eq. 17 (L_diffusion + λ·L_S) with Adam, EMA, checkpoints and logs.

Built on Hugging Face ``accelerate``, so the same code runs on a CPU, one GPU, or several
processes (DDP) launched with ``torchrun --nproc_per_node N`` or ``accelerate launch
--multi_gpu --num_processes N`` (both also on CPUs, with gloo), with optional mixed
precision and gradient accumulation. Its parts live by concern in :mod:`specreg.train`:
``runtime`` (threads, devices, processes), ``order`` (data order and every seed), ``ema``,
``optim``, ``failures``, ``log`` (``metrics.jsonl``, log records), ``samples``, ``stop``
(signals) and ``checkpoint``; what stays here (over 400 lines) is the one ``Trainer``,
whose set-up, loop, step and save share a run's live objects. A regularizer's state is
reached only through :class:`~specreg.losses.extras.TrainingExtras`: fitted on the first
training items, its extra parameters trained with the network, its log records written
at each checkpoint.

Determinism. Everything random in a step is derived from ``(train.seed, step, micro)``
(:mod:`specreg.train.order`), so a run resumed from a checkpoint repeats the
uninterrupted run exactly (on the same hardware and thread count), and one process with
``grad_accum=2`` sees the same samples and noise as two processes with ``grad_accum=1`` at
the same global batch. (Exception: state a regularizer keeps per process, i.e.
AutoLambda's EMAs, is checkpointed from process 0 only, so a resumed multi-process run
with ``lam: auto`` restarts the other processes' EMAs from process 0's.)

Outputs in the run directory: ``config.yaml`` (resolved), ``metrics.jsonl``,
``checkpoints/step-XXXXXXXX/``, ``samples/``, a regularizer's log records
(``band_weights.json`` with learned band weights) and, when installed, TensorBoard event
files. Figures are the caller's: ``on_checkpoint`` runs after each checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from specreg.files import check_folder, save_image_grid, step_name
from specreg.losses.extras import TrainingExtras
from specreg.train.build import (
    batch_inputs,
    build_autoencoder,
    build_dataset,
    build_formulation,
    build_model,
    build_net,
    build_regularizer,
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
from specreg.train.ema import EMA
from specreg.train.failures import TrainingDiverged, check_finite, is_oom, out_of_memory
from specreg.train.log import METRICS_FILE, MetricsLog, flat_hparams, start_metrics, write_log_record
from specreg.train.optim import learning_rate, make_optimizer
from specreg.train.order import STEP, StepBatches, derive_seed, seed_everything
from specreg.train.runtime import cpu_threads, make_accelerator, torch_threads
from specreg.train.samples import SAMPLES_DIR, samples_written, write_samples
from specreg.train.stop import StopNow, TrainingInterrupted, ignore_stop_signals, stop_at_step_end, stoppable

if TYPE_CHECKING:
    from specreg.models.vae import ConvVAE

FIT_ITEMS = 512  # a regularizer fitted on data (TrainingExtras.needs_fit) sees the first this many items
# Sections whose change makes an old checkpoint meaningless for the new run.
_FIXED_SECTIONS = ("data", "model", "diffusion", "regularizer", "autoencoder")
_FROM_CONFIG: Any = object()


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
    extra_params: list[nn.Parameter]  # what trains with the network besides it (learned band weights)
    dataset: Dataset
    batches: Iterator[Any]
    world: int
    rank: int
    micro_batch: int
    start: int
    resumed_path: Path | None
    autoencoder: ConvVAE | None = None  # the frozen VAE of a latent model
    stop: bool = False  # a stop signal reached some process: save and stop after this step


# --------------------------------------------------------------------------- trainer

class Trainer:
    """Train the model of ``cfg`` into ``out_dir``; resumes if ``out_dir`` has a checkpoint.

    ``dataset``, ``net`` and ``regularizer`` replace the ones built from the config
    (tests use tiny stand-ins; ``regularizer=None`` trains the baseline).
    ``on_checkpoint(out_dir, step)`` runs on the main process after each checkpoint and
    its log records are written (the command line and studies draw figures there).
    """

    _signal: str | None  # the stop signal's name, set while training (train.stop.stop_at_step_end)
    _stop_now: bool = False  # inside train.stop.stoppable: a signal stops at once

    def __init__(self, cfg: Config, out_dir: str | Path, *, dataset: Dataset | None = None,
                 net: nn.Module | None = None, regularizer: Any = _FROM_CONFIG,
                 on_checkpoint: Callable[[Path, int], None] | None = None) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self._time_before = 0.0  # training seconds of earlier sittings (set when resuming)
        self._dataset = dataset
        self._net = net
        self._regularizer = regularizer
        self._on_checkpoint = on_checkpoint

    # ------------------------------------------------------------------ setup
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

    def learning_rate(self, step: int) -> float:
        """lr at ``step`` (1-based): :func:`specreg.train.optim.learning_rate` of ``train``."""
        return learning_rate(self.cfg.train, step)

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
            if is_oom(err):
                raise out_of_memory(t, result.step + 1, run.micro_batch, run.world) from err
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
        acc = make_accelerator(t, self.out_dir)
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
        if isinstance(regularizer, TrainingExtras) and regularizer.needs_fit:  # before a checkpoint loads
            regularizer.fit(_first_items(dataset, FIT_ITEMS))
        extra_params = _extra_parameters(regularizer)
        optimizer = make_optimizer(t, [*model.parameters(), *extra_params])
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
            acc.init_trackers("tensorboard", config=flat_hparams(cfg))

        micro_batch = t.batch_size // (world * t.grad_accum)
        n_items = len(dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__
        sampler = StepBatches(n_items, global_batch=t.batch_size, micro_batch=micro_batch, world=world,
                              rank=rank, accum=t.grad_accum, seed=t.seed, start_step=start, steps=t.steps)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=t.num_workers,
                            worker_init_fn=ignore_stop_signals if t.num_workers else None)
        return _Run(acc=acc, model=model, optimizer=optimizer, ema=ema, formulation=formulation,
                    regularizer=regularizer, extra_params=extra_params, dataset=dataset, batches=iter(loader),
                    world=world, rank=rank, micro_batch=micro_batch, start=start,
                    resumed_path=ckpt.path if ckpt is not None else None, autoencoder=autoencoder)

    def _prepare_out_dir(self, resumed_step: int | None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save(self.out_dir)
        self._time_before = start_metrics(self.out_dir, resumed_step)

    def _loop(self, run: _Run, result: TrainResult, t0: float) -> None:
        t, acc = self.cfg.train, run.acc
        bar = tqdm(total=t.steps, initial=run.start, disable=not (acc.is_main_process and t.progress_bar),
                   desc="train", dynamic_ncols=True)
        log = MetricsLog(self.out_dir, acc, write=acc.is_main_process)
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
                    log.write(row)
                if step % t.checkpoint_every == 0 or step == t.steps or run.stop:
                    result.checkpoint = self._save(run, step)
                # after the last step's checkpoint, a signal during that step or its write counts too
                if run.stop or (step == t.steps and self._signalled(run)):
                    raise TrainingInterrupted(self._signal or "a stop signal (on another process)", step,
                                              result.checkpoint, acc.is_main_process)
                if t.sample_every and (step % t.sample_every == 0 or step == t.steps):
                    self._stoppable_samples(run, result, step)
            if run.start == t.steps and t.sample_every and not samples_written(self.out_dir, t.steps):
                self._stoppable_samples(run, result, t.steps)  # a rerun after a stop during the final grid
        finally:
            bar.close()
            log.close()

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

    def _step(self, run: _Run, step: int) -> dict[str, Any]:
        """One optimizer step (``train.grad_accum`` micro-batches); returns its log row."""
        t, acc, model, optimizer = self.cfg.train, run.acc, run.model, run.optimizer
        lr = self.learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        parts = []
        for k in range(t.grad_accum):
            seed = derive_seed(t.seed, STEP, step, k * run.world + run.rank)
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
        check_finite(step, loss=loss, diffusion=diffusion, spectral=spectral, lam=lam)
        if run.world > 1:  # the regularizer's parameters are outside DDP's module: average by hand
            for p in run.extra_params:
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
                keep_every=t.keep_every,
                timesteps=_sampler_state(run.formulation),
            )
            if isinstance(run.regularizer, TrainingExtras):
                for record in run.regularizer.log_records():
                    write_log_record(self.out_dir, step, record)
            if self._on_checkpoint is not None:
                self._on_checkpoint(self.out_dir, step)
        acc.wait_for_everyone()
        return path

    def write_samples(self, formulation: Any, model: nn.Module, step: int, dataset: Dataset | None = None,
                      autoencoder: ConvVAE | None = None) -> Path:
        """Sample ``sample.n`` items with ``model`` (the EMA) and write a PNG grid or WAV clips."""
        return write_samples(self.cfg, self.out_dir, formulation, model, step, dataset, autoencoder)


def _sampler_state(formulation: Any) -> dict[str, torch.Tensor] | None:
    """The noise-level sampler's buffers (only the adaptive sampler has any), for the checkpoint."""
    sampler = getattr(formulation, "time_sampler", None)
    return None if sampler is None else {k: v.detach().cpu() for k, v in sampler.state_dict().items()}


def _first_items(dataset: Dataset, n: int) -> torch.Tensor:
    """The clean x0 of the first ``n`` items of ``dataset`` (all, if it has fewer), stacked."""
    count = min(n, len(dataset))  # type: ignore[arg-type]  # torch's Dataset declares no __len__
    return torch.stack([torch.as_tensor(dataset[i][0]) for i in range(count)])


def _extra_parameters(regularizer: nn.Module | None) -> list[nn.Parameter]:
    """What the optimizer trains besides the network: a TrainingExtras' extra parameters (a
    plain module's trainable ones)."""
    if regularizer is None:
        return []
    if isinstance(regularizer, TrainingExtras):
        return regularizer.extra_parameters()
    return [p for p in regularizer.parameters() if p.requires_grad]


def train(cfg: Config, out_dir: str | Path, **kwargs: Any) -> TrainResult:
    """Shorthand for ``Trainer(cfg, out_dir, **kwargs).fit()``."""
    return Trainer(cfg, out_dir, **kwargs).fit()


# Names that lived here before the split (experiments, tests and older code import them from here).
__all__ = ["EMA", "METRICS_FILE", "SAMPLES_DIR", "StepBatches", "TrainResult", "Trainer", "TrainingDiverged",
           "TrainingInterrupted", "cpu_threads", "save_image_grid", "torch_threads", "train"]
