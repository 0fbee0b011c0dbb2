"""Planning a study: every run it needs, where it lives, what defines it, and whether it is done.

Protocols. ``scratch`` trains every (variant, seed) from random weights. ``finetune`` is
the paper's protocol: a *pretrained* model is trained first, then every variant is
fine-tuned from its final EMA weights for ``finetune.steps`` steps with a fresh
optimizer (``finetune.overrides`` apply to the fine-tuning only; ``train.seed`` of the
fine-tuning is the run's seed). The pretrained model is the variant's own config with
the regularizer removed, ``train.seed = finetune.pretrain_seed``, trained for the
profile's ``train.steps``: variants that differ only in their regularizer share one
pretrained model (as the paper fine-tunes one published checkpoint; so do variants that
differ in ``diffusion.timesteps_sampler``, reset for the pretraining too), variants that differ
elsewhere (VP vs VE) get their own. Seeds therefore vary the fine-tuning only. Fairness:
the baseline row of a fine-tuning study is the pretrained model fine-tuned for the same
number of steps without a regularizer, so extra training is not credited to the loss.

Identity. A run's *key* hashes what defines its result: its config without volatile
train settings (threads, progress bar, logging and checkpoint cadence) and without values
equal to their defaults (so adding a config key never renames finished runs), its
protocol, its pretrained model's config, and the evaluation settings (likewise without
defaults). A run whose record (``run.json``, :class:`~specreg.layout.RunRecord`) holds the
current key is done; planning reads each record once and keeps it on the run's spec.

Layout under the study's output folder (:mod:`specreg.layout`)::

    runs/<variant>/seed<k>/          a run directory of the trainer, plus run.json (the record)
    runs/_pretrain/<key>/seed<k>/    pretrained models (protocol finetune)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from specreg.experiments.study import Evaluation, Study
from specreg.layout import (
    CHECKPOINT_DIR,
    FINETUNE_FILE,
    PRETRAIN_DIR,
    RUN_RECORD,
    RUNS_DIR,
    RunRecord,
    pretrain_dir,
    read_run_record,
    run_dir as run_dir_of,
)

# Train settings that do not change what is learned: excluded from a run's identity, so
# e.g. --jobs 2 (no progress bar, one thread) finds the runs of an earlier --jobs 1.
_VOLATILE_TRAIN_KEYS = ("progress_bar", "threads", "tensorboard", "num_workers", "log_every", "sample_every",
                        "checkpoint_every", "keep_checkpoints", "keep_every")
_MISSING = object()


@dataclass
class RunSpec:
    """One training run of a study: where it lives and the resolved config it trains."""

    variant: str
    seed: int
    run_dir: Path
    config: dict[str, Any]
    protocol: str  # "scratch", "finetune" or "pretrain"
    key: str
    pretrain_dir: Path | None = None
    pretrain_step: int | None = None  # finetune: the pretraining's checkpoint it starts from (None: the last)
    curve: bool = False  # measure along training (evaluation.curve_every)
    status: str = "new"  # "done", "resume" (has a checkpoint), "new"; after running: "trained", "diverged"
    # the run's record: as planning found it on disk, then as the runner returned it (None: not measured)
    recorded: RunRecord | None = None

    @property
    def label(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    @property
    def record_path(self) -> Path:
        return self.run_dir / RUN_RECORD


def _non_default(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        default = defaults.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(default, dict) and value and default:
            value = _non_default(value, default)
            if value:
                out[key] = value
        elif value != default and not (isinstance(value, (list, tuple)) and isinstance(default, (list, tuple))
                                        and list(value) == list(default)):
            out[key] = value
    return out


def identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """What defines a run: its config without volatile train keys and without values equal
    to their defaults, so adding a config key (with a default) never renames finished runs."""
    from specreg.train.config import Config

    out = json.loads(json.dumps(cfg))
    for key in _VOLATILE_TRAIN_KEYS:
        out["train"].pop(key, None)
    return _non_default(out, json.loads(json.dumps(Config().to_dict())))


# Read after training, by the report's error maps only: not part of what a run measures.
_REPORT_ONLY_EVALUATION_KEYS = ("probe_items", "probe_sigmas")


def evaluation_identity(ev: dict[str, Any]) -> dict[str, Any]:
    ev = {k: v for k, v in ev.items() if k not in _REPORT_ONLY_EVALUATION_KEYS}
    return _non_default(ev, asdict(Evaluation()))


def stable_hash(obj: Any) -> str:
    """12 hex digits of the SHA-1 of ``obj`` as sorted JSON."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _resolve(study: Study, extra: list[str]) -> dict[str, Any]:
    from specreg.train.config import load_config

    return load_config(study.base, [*study.overrides, *extra]).to_dict()


def plan_runs(study: Study, out_dir: str | Path) -> list[RunSpec]:
    """Every run of ``study`` in order: pretrained models first, then (variant, seed) runs.

    Checks every resolved config (a bad override raises ``ValueError`` before anything
    trains) and marks each run ``done``, ``resume`` or ``new`` from what is on disk.
    """
    from specreg.train.config import RegularizerConfig

    out = Path(out_dir)
    pretrains: dict[str, RunSpec] = {}
    runs: list[RunSpec] = []
    data_sections: dict[str, str] = {}
    ev = asdict(study.evaluation)
    curve_ev = {k: ev.pop(k) for k in ("curve_every", "curve_samples")}
    measured = evaluation_identity({**ev, **curve_ev})  # what a run with a curve measures (its done key)
    ev = evaluation_identity(ev)
    want_curve = study.evaluation.curve_every > 0
    for v in study.variants:
        for seed in study.seeds:
            try:
                cfg = _resolve(study, [*v.overrides, f"train.seed={seed}"])
            except ValueError as err:
                raise ValueError(f"variant {v.name!r}: {err}") from None
            data_sections.setdefault(json.dumps(cfg["data"], sort_keys=True), v.name)
            pre = None
            if v.protocol == "finetune":
                pcfg = json.loads(json.dumps(cfg))
                pcfg["regularizer"] = asdict(RegularizerConfig())
                pcfg["diffusion"]["timesteps_sampler"] = {}  # a schedule row fine-tunes the shared model
                pseed = study.pretrain_seed_of(seed)
                pcfg["train"]["seed"] = pseed
                pkey = stable_hash(identity(pcfg))
                if pkey not in pretrains:
                    pdir = pretrain_dir(out, pkey, pseed)
                    done_key = stable_hash({"pretrain": pkey, "evaluation": measured}) if want_curve else pkey
                    pretrains[pkey] = RunSpec(f"{PRETRAIN_DIR}/{pkey}", pseed, pdir, pcfg,
                                              "pretrain", done_key, curve=want_curve)
                pre = pretrains[pkey]
                check_pretrain_step(study, v.name, v.pretrain_step, int(pcfg["train"]["steps"]))
                try:
                    cfg = _resolve(study, [*v.overrides, f"train.seed={seed}",
                                           f"train.steps={study.finetune.steps}", *study.finetune.overrides])
                except ValueError as err:
                    raise ValueError(f"variant {v.name!r}, finetune.overrides: {err}") from None
            # a curve for the first seed of each from-scratch baseline (was it trained long
            # enough?), and for every seed of a variant that asks for one (steps to reach)
            curve = want_curve and v.protocol == "scratch" and (
                v.curve or (seed == study.seeds[0] and v.baseline is None))
            defined: dict[str, Any] = {"config": identity(cfg), "evaluation": measured if curve else ev,
                                       "protocol": v.protocol,
                                       "pretrain": None if pre is None else identity(pre.config)}
            if v.pretrain_step is not None:  # only when set, so that the keys of other runs stay as they were
                defined["pretrain_step"] = v.pretrain_step
            runs.append(RunSpec(v.name, seed, run_dir_of(out, v.name, seed), cfg, v.protocol, stable_hash(defined),
                                pretrain_dir=None if pre is None else pre.run_dir, pretrain_step=v.pretrain_step,
                                curve=curve))
    check_measurable(study, runs[0].config)
    if len(data_sections) > 1:
        names = list(data_sections.values())
        raise ValueError(f"variants {names[0]!r} and {names[1]!r} train on different data sections; the variants "
                         "of a study must share one data set (one reference and one noise floor)")
    specs = [*pretrains.values(), *runs]
    for spec in specs:
        spec.recorded = read_run_record(spec.run_dir)
        spec.status = status(spec)
    return specs


def on_curve(step: int | None, every: int, total: int) -> bool:
    """Whether a checkpoint at ``step`` is a point of a training curve measured every
    ``every`` steps (``evaluation.curve_every``) over ``total`` steps: a multiple of
    ``every``, or the last step. Such checkpoints are kept; others (one written when a run
    was stopped, say) are not curve points."""
    return step is not None and every > 0 and 0 < step <= total and (step % every == 0 or step == total)


def check_pretrain_step(study: Study, variant: str, step: int | None, total: int) -> None:
    """A variant's ``pretrain_step`` must name a checkpoint the pretraining keeps: its last
    step, or a point of its curve (one line naming it otherwise)."""
    every = study.evaluation.curve_every
    if step is None or step == total or on_curve(step, every, total):
        return
    kept = (f"multiples of evaluation.curve_every={every} up to train.steps={total}" if every > 0 else
            f"only its last step, train.steps={total} (evaluation.curve_every=0 keeps no earlier one)")
    raise ValueError(f"variant {variant!r}: pretrain_step={step} is not accepted; the pretraining keeps "
                     f"checkpoints at {kept}")


def data_kind(cfg: dict[str, Any]) -> tuple[str, int | None]:
    """``("audio", sample_rate)`` or ``("image", None)`` for a run config."""
    from specreg.data.registry import data_set

    audio = data_set(cfg["data"]["kind"]).kind == "audio"
    return ("audio", int(cfg["data"]["sample_rate"])) if audio else ("image", None)


def check_measurable(study: Study, cfg: dict[str, Any]) -> None:
    """Raise before any training if the evaluation cannot measure these runs."""
    from specreg.experiments.reference import DATA_KIND, has_peaks
    from specreg.metrics.registry import METRICS, check_metrics

    ev, kind = study.evaluation, data_kind(cfg)[0]
    data = cfg["data"]["kind"]
    if DATA_KIND[ev.reference] != data:
        raise ValueError(f"evaluation.reference={ev.reference!r} does not fit data.kind={data!r}; expected "
                         f"evaluation.reference={next((r for r, d in DATA_KIND.items() if d == data), None)!r}")
    if ev.metrics:  # the registry validates the names, and which apply to this reference
        check_metrics(ev.metrics, kind, peaks=has_peaks(ev.reference), arg="evaluation.metrics",
                      data="measured for these {kind} data")
    produced = [k.name for m in ev.metrics for k in METRICS[m].keys]
    for col in study.column_keys():
        if col not in produced:
            raise ValueError(f"evaluation.columns contains {col!r}, which no metric in evaluation.metrics "
                             f"{list(ev.metrics)} produces; they produce {produced}")


def status(spec: RunSpec) -> str:
    """``done`` (its record has the current key), ``resume`` (a checkpoint) or ``new``.

    A fine-tuning's folder is named by variant and seed only, so a study run again into the
    same folder with another pretraining (another profile, say) would find the earlier
    fine-tuning's checkpoints there and "resume" them, i.e. reuse a model fine-tuned from the
    other pretrained model under the new key; that is refused (``ValueError``), as the
    trainer refuses a checkpoint whose settings differ."""
    if spec.recorded is not None and spec.recorded.key == spec.key:
        return "done"
    from specreg.train.checkpoint import list_checkpoints

    if not list_checkpoints(spec.run_dir / CHECKPOINT_DIR):
        return "new"
    if (other := _other_pretraining(spec)) is not None:
        raise ValueError(f"{spec.run_dir} holds a fine-tuning of another pretrained model ({other}); this study "
                         f"fine-tunes {spec.pretrain_dir}: use a new --out folder (or remove that run folder)")
    return "resume"


def _other_pretraining(spec: RunSpec) -> str | None:
    """The pretrained model a fine-tuning's folder started from (its ``finetune.json``), if
    that is not ``spec``'s: another pretraining key or seed (compared by those two folder
    names, so a study folder that was moved or copied still matches), or another step."""
    from specreg.train.checkpoint import checkpoint_name

    started = spec.run_dir / FINETUNE_FILE
    if spec.protocol != "finetune" or spec.pretrain_dir is None or not started.is_file():
        return None  # a run from before finetune.json was written: nothing to compare
    recorded = Path(str(json.loads(started.read_text()).get("pretrained", "")))
    ours = (spec.pretrain_dir.parent.name, spec.pretrain_dir.name)
    same = (recorded.parent.parent.parent.name, recorded.parent.parent.name) == ours and \
        (spec.pretrain_step is None or recorded.name == checkpoint_name(spec.pretrain_step))
    return None if same else str(recorded)


__all__ = ["RUNS_DIR", "RunSpec", "check_measurable", "check_pretrain_step", "data_kind", "evaluation_identity",
           "identity", "on_curve", "plan_runs", "stable_hash", "status"]
