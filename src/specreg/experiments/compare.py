"""Compare variants of one training setup over seeds: ``specreg compare`` and :func:`run_compare`.

A *study* file (YAML) says what to train, how often, and how to measure it::

    name: images_textures
    base: demo                          # built-in config name, or a YAML path (relative to the study)
    overrides: [data.n=4096]            # applied to every run
    seeds: [0, 1, 2]                    # train.seed of each repetition
    baseline: baseline                  # the row the others are measured against
    protocol: scratch                   # or finetune (see below); a variant may set its own
    variants:
      - name: baseline
        label: EDM loss only
        overrides: []
      - name: fourier_ap
        label: + λ_EDM(σ)·L_AP (Eq. 15 as printed)
        overrides: [regularizer.loss=fourier_ap, regularizer.lam=edm]
    lambda_grids:                       # optional: an automatic λ judged against a grid of constant λ
      - {auto: haar_auto, grid: [haar_1e-4, haar_1e-5, haar_1e-6]}
    finetune:                           # only for protocol: finetune
      steps: 2000                       # fine-tuning steps after the pretrained model
      pretrain_seed: 0
      overrides: [train.lr=2e-4, train.warmup_steps=0]
    evaluation:
      reference: textures               # textures | checkerboards | fashion-mnist | speech
      n_samples: 512                    # generated items per run (and items of the floor set)
      n_reference: 2048                 # reference items
      metrics: [lsd, lsd_high]          # names of specreg eval, plus peak_energy (checkerboards)
      columns: [lsd, lsd_high, lsd_high_bias]   # optional: the result keys tabulated
      sample_seed: 1000                 # run k samples with seed sample_seed + k
      reference_seed: 1                 # seeds of the reference (s) and floor (s + 1) sets
      segment_length: null              # audio: evaluated clip length (null: data.segment_length)
      curve_every: 500                  # optional: measure the baselines' first seed along training
      curve_samples: 128                #   on this many samples per point
    profiles:                           # named settings; --profile picks one
      tiny:  {overrides: [train.steps=4], seeds: [0], variants: [baseline, fourier_ap],
              evaluation: {n_samples: 8, n_reference: 16}}
      small: {overrides: [...], seeds: [0, 1]}
      full:  {overrides: [...]}

The config of one run is: the base config, then the study's ``overrides``, then the
profile's ``overrides``, then the variant's ``overrides``, then ``train.seed=<seed>``. A
profile may also replace ``seeds``, keep only some ``variants`` (by name), and update
``evaluation`` and ``finetune`` key by key.

Protocols. ``scratch`` trains every (variant, seed) from random weights. ``finetune`` is
the paper's protocol: a *pretrained* model is trained first, then every variant is
fine-tuned from its final EMA weights for ``finetune.steps`` steps with a fresh
optimizer (``finetune.overrides`` apply to the fine-tuning only; ``train.seed`` of the
fine-tuning is the run's seed). The pretrained model is the variant's own config with
the regularizer removed, ``train.seed = finetune.pretrain_seed``, trained for the
profile's ``train.steps``: variants that differ only in their regularizer share one
pretrained model (as the paper fine-tunes one published checkpoint), variants that differ
elsewhere (VP vs VE) get their own. Seeds therefore vary the fine-tuning only. Fairness:
the baseline row of a fine-tuning study is the pretrained model fine-tuned for the same
number of steps without a regularizer, so extra training is not credited to the loss.

Outputs under ``out_dir``::

    invocations.json                 start, wall time and runs trained of every invocation
    runs/<variant>/seed<k>/          a run directory of the trainer (config.yaml, checkpoints, …)
        eval/samples.npy, eval/samples.png (or eval/*.wav)
        metrics.json                 the done marker: metrics, spectrum, timings, config key
        timing.json, curve.json, finetune.json   train time; curve points; the weights it started from
    runs/_pretrain/<key>/seed<k>/    pretrained models (protocol finetune)
    real/floor.json, real/samples.png   real-vs-real noise floor and a grid of real items
    spectra.png, spectra_ratio.png   one line per variant (mean over seeds) and the reference
    results.json, report.md

Running the same command again skips runs whose ``metrics.json`` matches the current
settings, resumes interrupted trainings from their newest checkpoint (the trainer's own
resume), and rewrites the report. A run that diverged is recorded as such and not retried.
A run directory is locked while it trains, so two invocations never write the same run.
Runs train seed by seed (every variant at the first seed, then at the next), so a study
stopped part-way already compares every variant; its report marks the missing seeds.

Training curves (``curve_every``): the first seed of each from-scratch baseline, and each
pretrained model, keeps a checkpoint every ``curve_every`` steps; each is sampled and
measured afterwards, so the report shows whether the runs were long enough.

``jobs`` > 1 runs that many trainings at once, each in its own process with one torch
thread (on a 2-core machine, two one-thread runs beat one two-thread run). Without a GPU
a run in the main process (``jobs`` = 1, or a phase with one run, such as a lone
pretraining) uses ``jobs`` threads, the cores it was granted: with more threads than free
cores, a step was up to 50× slower.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # heavy imports happen inside the functions, so `specreg --help` stays fast
    import torch

PROTOCOLS = ("scratch", "finetune")
REFERENCE_SETS = ("textures", "checkerboards", "fashion-mnist", "speech")
RUNS_DIR = "runs"
PRETRAIN_DIR = "_pretrain"
DONE_FILE = "metrics.json"
INVOCATIONS_FILE = "invocations.json"
EVAL_DIR = "eval"
# Train settings that do not change what is learned: excluded from a run's identity, so
# e.g. --jobs 2 (no progress bar, one thread) finds the runs of an earlier --jobs 1.
_VOLATILE_TRAIN_KEYS = ("progress_bar", "threads", "tensorboard", "num_workers", "log_every", "sample_every",
                        "checkpoint_every", "keep_checkpoints")
# Direction of each tabulated result key: lower is better, higher is better, or closest
# to zero (signed biases). Keys not listed are shown without a "best".
LOWER = ("lsd", "lsd_low", "lsd_mid", "lsd_high", "domain_fd", "domain_kid", "ndb", "mrstft")
HIGHER = ("peak_energy", "pesq", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")
# Distances between two sets: their real-vs-real value is a noise scale, so a difference
# smaller than it is not resolved. (For a score such as PESQ the real value is a ceiling.)
DISTANCES = ("lsd", "lsd_low", "lsd_mid", "lsd_high", "domain_fd", "domain_kid", "ndb")
# Metrics that compare sample i with reference i: no real-vs-real floor from disjoint sets.
PAIRED = ("mrstft", "pesq")
EXTRA_METRICS = ("peak_energy",)
# The first result key of each metric name (what a column shows unless `columns` says otherwise).
_PRIMARY = {"dnsmos": "dnsmos_ovrl"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOP_KEYS = ("name", "title", "description", "base", "overrides", "seeds", "baseline", "protocol", "variants",
             "finetune", "evaluation", "profiles", "lambda_grids")
_VARIANT_KEYS = ("name", "label", "overrides", "protocol", "baseline")
_PROFILE_KEYS = ("description", "overrides", "seeds", "variants", "evaluation", "finetune")
_FINETUNE_KEYS = ("steps", "pretrain_seed", "overrides")


# ============================================================================ study files


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: a name, a label and the overrides that define it."""

    name: str
    label: str = ""
    overrides: tuple[str, ...] = ()
    protocol: str = "scratch"
    baseline: str | None = None  # the row it is measured against (None: it is a baseline)


@dataclass(frozen=True)
class Evaluation:
    """How every run is measured (see the module docstring)."""

    reference: str = "textures"
    n_samples: int = 512
    n_reference: int = 2048
    metrics: tuple[str, ...] = ("lsd", "lsd_high")
    columns: tuple[str, ...] = ()
    sample_seed: int = 1000
    reference_seed: int = 1
    batch_size: int = 256
    peak_tolerance: float | None = None  # cycles/sample; None = 2 frequency bins
    segment_length: int | None = None  # audio: length of the evaluated clips (None: data.segment_length)
    curve_every: int = 0  # > 0: measure the baselines' first seed every this many steps
    curve_samples: int = 128  # samples per point of that curve


@dataclass(frozen=True)
class Finetune:
    steps: int = 0
    pretrain_seed: int = 0
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    """A study file with one profile applied."""

    name: str
    base: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    variants: tuple[Variant, ...]
    evaluation: Evaluation
    finetune: Finetune
    profile: str
    profiles: tuple[str, ...]
    title: str = ""
    description: str = ""
    source: str = ""
    cut: tuple[str, ...] = ()  # variants of the study left out by the profile
    # (auto variant, its grid of constant-λ variants), kept where the profile has the
    # auto variant and at least two of the grid
    lambda_grids: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def column_keys(self) -> tuple[str, ...]:
        if self.evaluation.columns:
            return self.evaluation.columns
        return tuple(_PRIMARY.get(m, m) for m in self.evaluation.metrics)


def _err(where: str, msg: str) -> ValueError:
    return ValueError(f"study {where}: {msg}")


def _as_list(where: str, key: str, value: Any, kind: type = str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, kind) and not isinstance(value, bool):  # a single item for a list of one
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                       for v in value):
        name = {str: "strings", int: "integers"}[kind]
        raise _err(where, f"{key}={value!r} is not accepted; expected a list of {name}")
    return tuple(value)


def _check_keys(where: str, section: str, raw: Any, accepted: Sequence[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err(where, f"{section} must be a mapping, got {raw!r}")
    unknown = [k for k in raw if k not in accepted]
    if unknown:
        raise _err(where, f"unknown key {section}.{unknown[0]}; accepted keys: {list(accepted)}")
    return raw


def _evaluation(where: str, raw: dict[str, Any], into: Evaluation) -> Evaluation:
    names = [f.name for f in Evaluation.__dataclass_fields__.values()]
    raw = _check_keys(where, "evaluation", raw, names)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("metrics", "columns"):
            values[key] = tuple(m.strip().lower().replace("-", "_") for m in _as_list(where, f"evaluation.{key}",
                                                                                       value))
        elif key == "reference":
            ref = str(value).strip().lower().replace("_", "-")
            ref = {"checkerboard": "checkerboards", "fashion": "fashion-mnist", "texture": "textures"}.get(ref, ref)
            if ref not in REFERENCE_SETS:
                raise _err(where, f"evaluation.reference={value!r} is not accepted; expected one of "
                                  f"{list(REFERENCE_SETS)}")
            values[key] = ref
        elif key == "segment_length" and value is None:
            values[key] = None
        elif key == "peak_tolerance":
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise _err(where, f"evaluation.peak_tolerance={value!r} is not accepted; expected a number > 0 "
                                  "(cycles per sample) or null")
            values[key] = None if value is None else float(value)
        else:
            minimum = 1 if key in ("n_samples", "n_reference", "batch_size", "curve_samples", "segment_length") else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise _err(where, f"evaluation.{key}={value!r} is not accepted; expected an integer >= {minimum}")
            values[key] = value
    return replace(into, **values)


def _finetune(where: str, raw: dict[str, Any], into: Finetune) -> Finetune:
    raw = _check_keys(where, "finetune", raw, _FINETUNE_KEYS)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "overrides":
            values[key] = _as_list(where, "finetune.overrides", value)
        elif isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "steps" else 0):
            raise _err(where, f"finetune.{key}={value!r} is not accepted; expected an integer >= "
                              f"{1 if key == 'steps' else 0}")
        else:
            values[key] = value
    return replace(into, **values)


def _read_study(study: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str, Path | None]:
    if isinstance(study, Mapping):
        return dict(study), "<mapping>", None
    path = Path(study)
    if not path.is_file():
        found = Path("configs") / "studies" / f"{study}.yaml"  # a bare name, run from the repository
        if path.suffix not in (".yaml", ".yml") and found.is_file():
            path = found
        else:
            raise ValueError(f"study {str(study)!r} not found: expected a study YAML file (e.g. "
                             "configs/studies/images_textures.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"study {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"study {str(path)!r} must be a mapping with keys {list(_TOP_KEYS)}")
    return raw, str(path), path.parent


def load_study(study: str | Path | Mapping[str, Any], profile: str = "small") -> Study:
    """Read a study (a YAML path, a name under ``configs/studies``, or a mapping) and apply
    ``profile``. Every key is checked; an unknown key or value raises ``ValueError``."""
    raw, where, folder = _read_study(study)
    raw = _check_keys(where, "top level", raw, _TOP_KEYS)
    for key in ("base", "variants"):
        if key not in raw:
            raise _err(where, f"missing key {key!r}")
    base = str(raw["base"])
    if folder is not None and base.endswith((".yaml", ".yml")) and not Path(base).is_absolute():
        base = str(folder / base)
    profiles = _check_keys(where, "profiles", raw.get("profiles"), list(raw.get("profiles") or {}))
    if profile not in profiles:
        raise ValueError(f"profile={profile!r} is not accepted for study {where}; expected one of {list(profiles)}")
    prof = _check_keys(where, f"profiles.{profile}", profiles[profile], _PROFILE_KEYS)

    default_protocol = raw.get("protocol", "scratch")
    if default_protocol not in PROTOCOLS:
        raise _err(where, f"protocol={default_protocol!r} is not accepted; expected one of {list(PROTOCOLS)}")
    study_baseline = raw.get("baseline")
    if not isinstance(raw["variants"], list) or not raw["variants"]:
        raise _err(where, "variants must be a non-empty list of {name, label, overrides}")
    variants: list[Variant] = []
    for i, v in enumerate(raw["variants"]):
        v = _check_keys(where, f"variants[{i}]", v, _VARIANT_KEYS)
        name = v.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name == PRETRAIN_DIR:
            raise _err(where, f"variants[{i}].name={name!r} is not accepted; expected letters, digits, '.', '_' "
                              "or '-' (it names a folder)")
        if any(name == w.name for w in variants):
            raise _err(where, f"variant name {name!r} appears twice")
        protocol = v.get("protocol", default_protocol)
        if protocol not in PROTOCOLS:
            raise _err(where, f"variants[{i}].protocol={protocol!r} is not accepted; expected one of "
                              f"{list(PROTOCOLS)}")
        baseline = v.get("baseline", study_baseline)
        variants.append(Variant(name, str(v.get("label", "")), _as_list(where, f"{name}.overrides",
                                                                       v.get("overrides")),
                                protocol, None if baseline == name else baseline))
    names = [v.name for v in variants]
    for v in variants:
        if v.baseline is not None and v.baseline not in names:
            raise _err(where, f"variant {v.name!r} is compared with baseline {v.baseline!r}, which is not a "
                              f"variant; variants: {names}")

    keep = _as_list(where, f"profiles.{profile}.variants", prof.get("variants")) or tuple(names)
    unknown = [k for k in keep if k not in names]
    if unknown:
        raise _err(where, f"profiles.{profile}.variants names {unknown[0]!r}, which is not a variant; "
                          f"variants: {names}")
    chosen = tuple(v for v in variants if v.name in keep)
    chosen = tuple(v if v.baseline is None or v.baseline in keep else replace(v, baseline=None) for v in chosen)

    seeds = _as_list(where, "seeds", prof.get("seeds", raw.get("seeds", [0])), int)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise _err(where, f"seeds={list(seeds)} is not accepted; expected distinct integers >= 0")
    evaluation = _evaluation(where, _check_keys(where, "evaluation", raw.get("evaluation"),
                                                list(Evaluation.__dataclass_fields__)), Evaluation())
    evaluation = _evaluation(where, prof.get("evaluation") or {}, evaluation)
    finetune = _finetune(where, _finetune_raw(where, raw.get("finetune")), Finetune())
    finetune = _finetune(where, _finetune_raw(where, prof.get("finetune")), finetune)
    if any(v.protocol == "finetune" for v in chosen) and finetune.steps < 1:
        raise _err(where, "a variant uses protocol finetune, so finetune.steps must be an integer >= 1")
    grids = []
    for i, g in enumerate(raw.get("lambda_grids") or []):
        g = _check_keys(where, f"lambda_grids[{i}]", g, ("auto", "grid"))
        auto, grid = g.get("auto"), _as_list(where, f"lambda_grids[{i}].grid", g.get("grid"))
        for n in (auto, *grid):
            if n not in names:
                raise _err(where, f"lambda_grids[{i}] names {n!r}, which is not a variant; variants: {names}")
        if len(grid) < 2 or auto in grid:
            raise _err(where, f"lambda_grids[{i}].grid={list(grid)} is not accepted; expected two or more "
                              "constant-λ variants, not including the auto variant")
        kept = tuple(n for n in grid if n in keep)
        if auto in keep and len(kept) >= 2:
            grids.append((auto, kept))
    return Study(name=str(raw.get("name", Path(where).stem)), base=base,
                 overrides=(*_as_list(where, "overrides", raw.get("overrides")),
                            *_as_list(where, f"profiles.{profile}.overrides", prof.get("overrides"))),
                 seeds=seeds, variants=chosen, evaluation=evaluation, finetune=finetune, profile=profile,
                 profiles=tuple(profiles), title=str(raw.get("title", "")),
                 description="\n\n".join(str(t).strip() for t in (raw.get("description"), prof.get("description"))
                                          if t), source=where,
                 cut=tuple(n for n in names if n not in keep), lambda_grids=tuple(grids))


def _finetune_raw(where: str, raw: Any) -> dict[str, Any]:
    return _check_keys(where, "finetune", raw, _FINETUNE_KEYS)


# ============================================================================ planning


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
    curve: bool = False  # measure along training (evaluation.curve_every)
    status: str = "new"  # "done", "resume" (has a checkpoint), "new"; after running: "trained", "diverged"

    @property
    def label(self) -> str:
        return f"{self.variant}/seed{self.seed}"


def _identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """What defines a run: its config without volatile train keys and without values equal
    to their defaults, so adding a config key (with a default) never renames finished runs."""
    from specreg.train.config import Config

    out = json.loads(json.dumps(cfg))
    for key in _VOLATILE_TRAIN_KEYS:
        out["train"].pop(key, None)
    return _non_default(out, json.loads(json.dumps(Config().to_dict())))


def _non_default(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        default = defaults.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(default, dict) and value and default:
            value = _non_default(value, default)
            if value:
                out[key] = value
        elif value != default:
            out[key] = value
    return out


_MISSING = object()


def _evaluation_identity(ev: dict[str, Any]) -> dict[str, Any]:
    return _non_default(ev, asdict(Evaluation()))


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _resolve(study: Study, extra: Sequence[str]) -> dict[str, Any]:
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
    measured = _evaluation_identity({**ev, **curve_ev})  # what a run with a curve measures (its done key)
    ev = _evaluation_identity(ev)
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
                pcfg["train"]["seed"] = study.finetune.pretrain_seed
                pkey = _hash(_identity(pcfg))
                if pkey not in pretrains:
                    pdir = out / RUNS_DIR / PRETRAIN_DIR / pkey / f"seed{study.finetune.pretrain_seed}"
                    done_key = _hash({"pretrain": pkey, "evaluation": measured}) if want_curve else pkey
                    pretrains[pkey] = RunSpec(f"{PRETRAIN_DIR}/{pkey}", study.finetune.pretrain_seed, pdir, pcfg,
                                              "pretrain", done_key, curve=want_curve)
                pre = pretrains[pkey]
                try:
                    cfg = _resolve(study, [*v.overrides, f"train.seed={seed}",
                                           f"train.steps={study.finetune.steps}", *study.finetune.overrides])
                except ValueError as err:
                    raise ValueError(f"variant {v.name!r}, finetune.overrides: {err}") from None
            # a curve for the first seed of each from-scratch baseline: was it trained long enough?
            curve = want_curve and seed == study.seeds[0] and v.baseline is None and v.protocol == "scratch"
            key = _hash({"config": _identity(cfg), "evaluation": measured if curve else ev, "protocol": v.protocol,
                         "pretrain": None if pre is None else _identity(pre.config)})
            runs.append(RunSpec(v.name, seed, out / RUNS_DIR / v.name / f"seed{seed}", cfg, v.protocol, key,
                                pretrain_dir=None if pre is None else pre.run_dir, curve=curve))
    _check_measurable(study, runs[0].config)
    if len(data_sections) > 1:
        names = list(data_sections.values())
        raise ValueError(f"variants {names[0]!r} and {names[1]!r} train on different data sections; the variants "
                         "of a study must share one data set (one reference and one noise floor)")
    specs = [*pretrains.values(), *runs]
    for spec in specs:
        spec.status = _status(spec)
    return specs


_REFERENCE_DATA = {"textures": "textures", "checkerboards": "checkerboard", "fashion-mnist": "fashion_mnist",
                   "speech": "speech"}


def _check_measurable(study: Study, cfg: Mapping[str, Any]) -> None:
    """Raise before any training if the evaluation cannot measure these runs."""
    from specreg.experiments.evaluate import METRICS

    ev, kind = study.evaluation, _kind(cfg)[0]
    data = cfg["data"]["kind"]
    if _REFERENCE_DATA[ev.reference] != data:
        raise ValueError(f"evaluation.reference={ev.reference!r} does not fit data.kind={data!r}; expected "
                         f"evaluation.reference={next((r for r, d in _REFERENCE_DATA.items() if d == data), None)!r}")
    accepted = [*METRICS[kind], *(EXTRA_METRICS if ev.reference == "checkerboards" else ())]
    for name in ev.metrics:
        if name not in accepted:
            raise ValueError(f"evaluation.metrics contains {name!r}, which is not measured for these {kind} "
                             f"data; accepted: {accepted}")
    for col in study.column_keys():
        if not any(col == m or col.startswith(m + "_") for m in ev.metrics):
            raise ValueError(f"evaluation.columns contains {col!r}, which no metric in evaluation.metrics "
                             f"{list(ev.metrics)} produces")


def _status(spec: RunSpec) -> str:
    done = spec.run_dir / DONE_FILE
    if done.is_file():
        try:
            if json.loads(done.read_text()).get("key") == spec.key:
                return "done"
        except json.JSONDecodeError:
            pass
    from specreg.train.checkpoint import CHECKPOINT_DIR, list_checkpoints

    return "resume" if list_checkpoints(spec.run_dir / CHECKPOINT_DIR) else "new"


# ============================================================================ real data


@dataclass
class RealSets:
    """The reference set, a disjoint real set of the samples' size (the noise floor) and
    the conditioning of the samples (paired with the reference for audio)."""

    reference: Any
    floor: Any
    description: str
    floor_description: str
    conditioning: dict[str, Any] = field(default_factory=dict)
    peaks: list[tuple[float, ...]] | None = None


def real_sets(cfg_dict: Mapping[str, Any], ev: Evaluation) -> RealSets:
    """Build the reference and floor sets named by ``ev.reference`` for a run's data.

    * ``textures``: ``n_reference`` crops (seed ``reference_seed``) and ``n_samples`` other
      crops (seed ``reference_seed + 1``) of the held-out ``eval`` rows.
    * ``checkerboards``: boards of the training distribution with seeds
      ``reference_seed`` and ``reference_seed + 1``.
    * ``fashion-mnist``: two disjoint random subsets of the 10 000 test images.
    * ``speech``: the reference is the held-out prompt segments whose log-mels condition the
      samples (item i of the samples is the vocoding of reference item i, so paired
      metrics apply); the floor set is ``n_samples`` training segments.
    """
    import torch

    from specreg.train.config import config_from_dict

    cfg = config_from_dict(json.loads(json.dumps(dict(cfg_dict))))
    d, n, m = cfg.data, ev.n_samples, ev.n_reference
    ref, s = ev.reference, ev.reference_seed
    if cfg.data.is_audio != (ref == "speech"):
        raise ValueError(f"evaluation.reference={ref!r} does not fit data.kind={d.kind!r}")
    if ref == "textures":
        from specreg.data.images import TextureCrops

        if d.kind != "textures":
            raise ValueError(f"evaluation.reference='textures' needs data.kind=textures, not {d.kind!r}")
        r = TextureCrops(list(d.names), d.size, m, seed=s, channels=d.channels, split="eval")
        f = TextureCrops(list(d.names), d.size, n, seed=s + 1, channels=d.channels, split="eval")
        what = f"{d.size}×{d.size} crops of {list(d.names)} from the held-out eval rows"
        return RealSets(_stack(r), _stack(f), f"{m} {what} (seed {s})", f"{n} other {what} (seed {s + 1})")
    if ref == "checkerboards":
        from specreg.data.images import Checkerboards

        if d.kind != "checkerboard":
            raise ValueError(f"evaluation.reference='checkerboards' needs data.kind=checkerboard, not {d.kind!r}")
        r, f = Checkerboards(m, d.size, seed=s), Checkerboards(n, d.size, seed=s + 1)
        # every spectral line of a board of period p: (k1/p, k2/p) with k1, k2 odd (aliased
        # into [−½, ½) by the metric); a board's energy sits on these lines and nowhere else
        peaks = sorted({(k1 / p, k2 / p) for p in r.periods for k1 in range(1, p, 2) for k2 in range(1, p, 2)})
        what = f"{d.size}×{d.size} checkerboards, periods {list(r.periods)} px, random phase"
        return RealSets(_stack(r), _stack(f), f"{m} {what} (seed {s})", f"{n} other {what} (seed {s + 1})",
                        peaks=peaks)
    if ref == "fashion-mnist":
        from specreg.data.images import FashionMNIST

        if d.kind != "fashion_mnist":
            raise ValueError(f"evaluation.reference='fashion-mnist' needs data.kind=fashion_mnist, not {d.kind!r}")
        kw = {} if d.root is None else {"root": d.root}
        ds = FashionMNIST(split="test", size=d.size, **kw)
        if n + m > len(ds):
            raise ValueError(f"evaluation.n_samples + n_reference = {n + m} exceeds the {len(ds)} Fashion-MNIST "
                             "test images; the floor set and the reference must be disjoint")
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(s))
        r = torch.stack([ds[int(i)][0] for i in perm[:m]])
        f = torch.stack([ds[int(i)][0] for i in perm[m:m + n]])
        cond = {}
        if cfg.model.num_classes > 0:
            cond = {"class_labels": torch.arange(n) % cfg.model.num_classes}
        what = f"Fashion-MNIST test images at {d.size}×{d.size}"
        return RealSets(r, f, f"{m} {what} (random subset, seed {s})", f"{n} other {what}", cond)
    # speech: the reference must be paired with the conditioning of the samples
    from specreg.data.audio import AsteriskSpeech, LogMel, MelConditioned

    kw = {} if d.root is None else {"root": d.root}
    length = ev.segment_length or d.segment_length  # a vocoder is convolutional: any multiple of the hop
    if length % d.hop_length:
        raise ValueError(f"evaluation.segment_length={length} is not a multiple of data.hop_length={d.hop_length}")
    mel = LogMel(sample_rate=d.sample_rate, n_fft=d.n_fft, hop_length=d.hop_length, n_mels=d.n_mels)
    ev_set = MelConditioned(AsteriskSpeech(split="eval", sample_rate=d.sample_rate, segment_length=length,
                                           random_crop=False, seed=s, **kw), mel)
    tr_set = AsteriskSpeech(split="train", sample_rate=d.sample_rate, segment_length=length, random_crop=False,
                            seed=s + 1, **kw)
    items = [ev_set[i % len(ev_set)] for i in range(n)]
    perm = torch.randperm(len(tr_set), generator=torch.Generator().manual_seed(s + 1))
    f = torch.stack([tr_set[int(i)][0] for i in perm[:n]])
    seg = f"{length}-sample segments at {d.sample_rate} Hz"
    repeat = f", each of the {len(ev_set)} prompts used {math.ceil(n / len(ev_set))}×" if n > len(ev_set) else ""
    return RealSets(torch.stack([x for x, _ in items]), f,
                    f"{n} {seg} of held-out prompts, paired with the samples' log-mels{repeat}",
                    f"{n} {seg} of training prompts", {"cond": torch.stack([c for _, c in items])})


def _stack(ds: Any) -> Any:
    import torch

    return torch.stack([ds[i][0] for i in range(len(ds))])


def measure(samples: Any, real: RealSets, ev: Evaluation, *, kind: str, sample_rate: int | None,
            reference: Any = None) -> dict[str, Any]:
    """Metrics of ``samples`` against ``real.reference`` (or ``reference``), and their spectrum.

    Uses :func:`specreg.experiments.evaluate.evaluate` for its metrics and adds
    ``peak_energy``: the mean over samples of :func:`specreg.metrics.peak_energy_fraction`
    at the spectral lines (k1/p, k2/p), k1 and k2 odd, of every checkerboard period p,
    within ``peak_tolerance`` (default two frequency bins): the share of the energy near
    the lines that sits exactly on them (1 for real boards; leakage lowers it). Returns ``{"metrics", "labels",
    "skipped", "spectrum": {"freqs", "power"}}``.
    """
    import torch

    from specreg.experiments.evaluate import evaluate
    from specreg.metrics.spectrum import peak_energy_fraction, radial_power_spectrum

    reference = real.reference if reference is None else reference
    names = [m for m in ev.metrics if m not in EXTRA_METRICS]
    out: dict[str, Any] = {"metrics": {}, "labels": {}, "skipped": {}}
    if names:
        res = evaluate(samples, reference, kind=kind, metrics=names, sample_rate=sample_rate,
                       batch_size=ev.batch_size, seed=ev.sample_seed, progress=False)
        out["metrics"].update(res["metrics"])
        out["labels"].update(res["labels"])
        out["skipped"].update(res.get("skipped") or {})
    if "peak_energy" in ev.metrics:
        if real.peaks is None:
            raise ValueError("metric peak_energy needs data with known spectral peaks (evaluation.reference: "
                             "checkerboards)")
        size = samples.shape[-1]
        tol = ev.peak_tolerance if ev.peak_tolerance is not None else 2.0 / size
        frac = peak_energy_fraction(torch.as_tensor(samples), real.peaks, tol)
        out["metrics"]["peak_energy"] = float(torch.nanmean(frac))
        out["labels"]["peak_energy"] = (f"share of the energy within {tol:.4g} cycles/sample of the checkerboards' "
                                        "spectral lines that sits exactly on them (1 = no leakage)")
    freqs, power = radial_power_spectrum(torch.as_tensor(samples), 1 if kind == "audio" else 2)
    out["spectrum"] = {"freqs": freqs.tolist(), "power": power.tolist()}
    return out


# ============================================================================ one run


def _train(spec: RunSpec) -> tuple[float, int]:
    """Train (or resume) one run; returns (seconds, steps trained in this call)."""
    from specreg.train.config import config_from_dict
    from specreg.train.trainer import Trainer

    cfg = config_from_dict(json.loads(json.dumps(spec.config)))
    net = None
    if spec.protocol == "finetune":
        from specreg.train.checkpoint import CHECKPOINT_DIR, list_checkpoints, load_weights

        found = list_checkpoints(spec.pretrain_dir / CHECKPOINT_DIR)  # type: ignore[operator]
        if not found:
            raise RuntimeError(f"{spec.label}: the pretrained model {spec.pretrain_dir} has no checkpoint")
        # the EMA weights, as a published checkpoint that the paper fine-tunes would hold;
        # when the run resumes, the trainer replaces them with its own checkpoint's
        net = _pretrained_net(cfg, load_weights(found[-1], ema=True))
        _write_json(spec.run_dir / "finetune.json", {"pretrained": str(found[-1]), "weights": "ema"})
    result = Trainer(cfg, spec.run_dir, net=net).fit()
    return result.seconds, result.step - result.resumed_from


def _pretrained_net(cfg: Any, weights: dict[str, Any]) -> Any:
    """The raw network of ``cfg`` carrying ``weights`` (a state dict of the trained module)."""
    from specreg.train.build import build_formulation, build_model, build_net

    net = build_net(cfg)
    model = build_model(build_formulation(cfg.diffusion), net)
    model.load_state_dict(weights)  # the module wraps `net`, so this fills `net` in place
    return net


def _sample(spec: RunSpec, ev: Evaluation, real: RealSets, n: int, checkpoint: Path | None = None
            ) -> tuple[Any, int, float]:
    """``n`` samples of the EMA weights of ``checkpoint`` (default: the run's newest) with
    seed ``ev.sample_seed + seed`` and the first ``n`` rows of the study's conditioning;
    returns (samples on the CPU, step, seconds)."""
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


def _kind(cfg: Mapping[str, Any]) -> tuple[str, int | None]:
    audio = cfg["data"]["kind"] in ("speech", "audio_folder")
    return ("audio", int(cfg["data"]["sample_rate"])) if audio else ("image", None)


def _train_with_curve(spec: RunSpec, ev: Evaluation, real: RealSets) -> tuple[float, int]:
    """Train keeping a checkpoint every ``ev.curve_every`` steps, then measure
    ``ev.curve_samples`` samples of each (``curve.json``, reused when the run resumes).
    Only the checkpoint cadence changes, so the weights are those of the plain run."""
    from specreg.train.checkpoint import CHECKPOINT_DIR, list_checkpoints

    total = spec.config["train"]["steps"]
    raw = json.loads(json.dumps(spec.config))
    raw["train"]["checkpoint_every"] = ev.curve_every
    raw["train"]["keep_checkpoints"] = total // ev.curve_every + 2
    seconds, trained = _train(replace(spec, config=raw))
    path = spec.run_dir / "curve.json"
    points = _read_json(path) or []
    have = {p["step"] for p in points}
    kind, rate = _kind(spec.config)
    n = min(ev.curve_samples, ev.n_samples)
    # paired audio metrics: the reference rows that go with the first n samples' log-mels
    reference = real.reference[:n] if kind == "audio" else real.reference
    for ckpt in list_checkpoints(spec.run_dir / CHECKPOINT_DIR):
        step = int(ckpt.name.split("-")[-1])
        if step in have or (step % ev.curve_every and step != total):
            continue
        x, _, _ = _sample(spec, ev, real, n, checkpoint=ckpt)
        m = measure(x, real, ev, kind=kind, sample_rate=rate, reference=reference)["metrics"]
        points.append({"step": step, "metrics": m})
        _write_json(path, sorted(points, key=lambda p: p["step"]))
    return seconds, trained


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` while it trains: two processes writing the same
    run (a second ``specreg compare`` on the same --out, or a worker left over from a killed
    one) would mix their checkpoints. The OS drops the lock when the holder dies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as handle:
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


def execute(spec: RunSpec, ev: Evaluation, *, threads: int = 0) -> dict[str, Any]:
    """Train one run, sample ``ev.n_samples`` with seed ``ev.sample_seed + seed``, measure,
    and write ``metrics.json`` (the done marker); a pretraining run is only measured along
    its curve, if it has one. Returns the record written. Holds a lock on the run directory
    and runs with ``threads`` torch threads (0: as they are), restored afterwards."""
    from specreg.train.trainer import torch_threads

    with _run_lock(spec.run_dir), torch_threads(threads):
        return _execute(spec, ev)


def _execute(spec: RunSpec, ev: Evaluation) -> dict[str, Any]:
    from specreg.train.trainer import TrainingDiverged

    t0 = time.time()
    timing_path = spec.run_dir / "timing.json"
    timing = _read_json(timing_path) or {"train_s": 0.0, "steps": 0}
    base = {"key": spec.key, "variant": spec.variant, "seed": spec.seed, "protocol": spec.protocol,
            "pretrained": None if spec.pretrain_dir is None else str(spec.pretrain_dir)}
    real = real_sets(spec.config, ev)  # cheap (seconds); a pretraining run needs it only for its curve
    try:
        seconds, steps = _train_with_curve(spec, ev, real) if spec.curve else _train(spec)
    except TrainingDiverged as err:
        if spec.protocol == "pretrain":
            raise
        record = {**base, "status": "diverged", "error": str(err)}
        _write_json(spec.run_dir / DONE_FILE, record)
        return record
    timing["train_s"] += seconds
    timing["steps"] += steps
    _write_json(timing_path, timing)
    curve = _read_json(spec.run_dir / "curve.json") if spec.curve else None
    if spec.protocol == "pretrain":
        record = {**base, "status": "done", "timing": timing, "curve": curve}
        _write_json(spec.run_dir / DONE_FILE, record)
        return record

    x, step, sample_s = _sample(spec, ev, real, ev.n_samples)
    kind, rate = _kind(spec.config)
    _save_samples(x, spec.run_dir / EVAL_DIR, kind, rate)
    t2 = time.time()
    measured = measure(x, real, ev, kind=kind, sample_rate=rate)
    record = {**base, "status": "done", "step": step, **measured, "reference": real.description, "curve": curve,
              "timing": {**timing, "sample_s": sample_s, "eval_s": time.time() - t2,
                         "wall_s_this_call": time.time() - t0},
              "n_samples": ev.n_samples, "sample_seed": ev.sample_seed + spec.seed}
    _write_json(spec.run_dir / DONE_FILE, record)
    return record


def _save_samples(x: Any, folder: Path, kind: str, rate: int | None) -> None:
    import numpy as np

    from specreg.train.trainer import save_audio, save_image_grid

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "samples.npy", x.numpy().astype(np.float32))
    if kind == "audio":
        save_audio(x[:8], folder, int(rate))  # type: ignore[arg-type]
    else:
        save_image_grid(x[:64], folder / "samples.png")


def _execute_in_worker(spec: RunSpec, ev: Evaluation) -> dict[str, Any]:
    # one torch thread per process: --jobs N processes share the machine's cores
    return execute(spec, ev, threads=1)


def _worker_init() -> None:
    """Make a worker die with the process that started it (Linux): a worker whose parent was
    killed would otherwise finish its run unseen and race the next invocation's workers."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux/glibc: the run lock still keeps runs apart
        pass


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ============================================================================ the study


@dataclass
class CompareResult:
    """What :func:`run_compare` did: the planned runs (with their status) and the report."""

    study: Study
    out_dir: Path
    runs: list[RunSpec]
    report: Path | None = None
    seconds: float = 0.0


def compare_command(study: str | Path | Mapping[str, Any], out_dir: str | Path, profile: str, jobs: int = 1,
                    dry_run: bool = False) -> str:
    """The command line that (re)runs this comparison."""
    src = "<study mapping>" if isinstance(study, Mapping) else str(study)
    parts = ["specreg", "compare", src, "--out", str(out_dir), "--profile", profile]
    if jobs != 1:
        parts += ["--jobs", str(jobs)]
    if dry_run:
        parts.append("--dry-run")
    return shlex.join(parts)


def run_compare(study: str | Path | Mapping[str, Any], out_dir: str | Path, profile: str = "small",
                dry_run: bool = False, *, jobs: int = 1, log: Any = None) -> CompareResult:
    """Run every (variant, seed) of ``study`` under ``profile`` into ``out_dir`` and write
    ``out_dir/report.md`` (see the module docstring). ``dry_run`` only plans and lists.

    ``jobs`` > 1 trains that many runs at once in separate processes with one torch
    thread each. ``log`` is a file for progress lines (default stderr).
    """
    t0 = time.time()
    log = sys.stderr if log is None else log
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} is not accepted; expected an integer >= 1")
    st = load_study(study, profile)
    out = Path(out_dir)
    specs = plan_runs(st, out)
    result = CompareResult(st, out, specs)
    command = compare_command(study, out_dir, profile, jobs)
    if dry_run:
        return result
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "study.json", {"study": asdict(st), "command": command})
    pre = [s for s in specs if s.protocol == "pretrain" and s.status != "done"]
    # seed-major: a study stopped part-way has every variant at its first seeds
    todo = sorted((s for s in specs if s.protocol != "pretrain" and s.status != "done"),
                  key=lambda s: st.seeds.index(s.seed))
    for phase in (pre, todo):  # fine-tuning needs its pretrained model
        for spec, record in _run_all(phase, st.evaluation, jobs, log):
            spec.status = "diverged" if record.get("status") == "diverged" else "trained"
    _log_invocation(out, command, t0, trained=len(pre) + len(todo))
    result.report = write_report(st, out, specs, command=command, wall_s=time.time() - t0)
    result.seconds = time.time() - t0
    return result


def _log_invocation(out: Path, command: str, t0: float, *, trained: int) -> None:
    """Append this invocation (start, wall seconds, runs it trained) to ``invocations.json``:
    a study run in several sittings reports the wall time of all of them."""
    path = out / INVOCATIONS_FILE
    entries = _read_json(path) or []
    entries.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
                    "wall_s": round(time.time() - t0, 1), "trained": trained, "command": command})
    _write_json(path, entries)


def _run_all(specs: list[RunSpec], ev: Evaluation, jobs: int, log: Any) -> Any:
    if not specs:
        return
    if jobs == 1 or len(specs) == 1:
        from specreg.train.trainer import cpu_threads

        # in the main process, one run at a time: without a GPU it gets one thread per job
        # (the cores --jobs grants), e.g. a lone pretraining with --jobs 2 trains on 2 threads
        threads = jobs * cpu_threads()
        for spec in specs:
            print(f"[compare] {spec.label}: {spec.protocol}, {spec.status} → {spec.run_dir}", file=log, flush=True)
            own = spec.config["train"].get("threads")  # a study's own setting wins
            run = spec if not threads else replace(spec, config=_with_train(spec.config, threads=own or threads))
            yield spec, execute(run, ev, threads=threads)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker (forking a process that holds torch's thread
    # pools is unsafe), which also picks up OMP settings from the environment
    ctx = multiprocessing.get_context("spawn")
    quiet = [replace(s, config=_quiet(s.config)) for s in specs]
    with ProcessPoolExecutor(max_workers=min(jobs, len(specs)), mp_context=ctx, initializer=_worker_init) as pool:
        futures = {pool.submit(_execute_in_worker, q, ev): s for q, s in zip(quiet, specs)}
        for s in specs:
            print(f"[compare] {s.label}: {s.protocol}, {s.status} → {s.run_dir} (queued)", file=log, flush=True)
        for fut in as_completed(futures):
            spec = futures[fut]
            record = fut.result()
            print(f"[compare] {spec.label}: {record.get('status')}", file=log, flush=True)
            yield spec, record


def _with_train(cfg: dict[str, Any], **train: Any) -> dict[str, Any]:
    """A copy of the run config ``cfg`` with these ``train`` settings (none of them is part
    of a run's identity)."""
    cfg = json.loads(json.dumps(cfg))
    cfg["train"].update(train)
    return cfg


def _quiet(cfg: dict[str, Any]) -> dict[str, Any]:
    return _with_train(cfg, progress_bar=False)  # bars of parallel runs would overwrite each other


# ============================================================================ the report


def _floor(st: Study, out: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Real vs real with the same counts, cached in ``real/floor.json``: the floor set
    (``n_samples`` real items disjoint from the reference) measured like a run. With a
    training curve, also its first ``curve_samples`` items (``curve_metrics``)."""
    import torch

    from specreg.train.trainer import save_audio, save_image_grid

    ev = st.evaluation
    key = _hash({"data": cfg["data"], "evaluation": asdict(ev)})
    path = out / "real" / "floor.json"
    cached = _read_json(path)
    if cached and cached.get("key") == key:
        return cached
    kind, rate = _kind(cfg)
    real = real_sets(cfg, ev)
    unpaired = replace(ev, metrics=tuple(m for m in ev.metrics if m not in PAIRED))
    record = {"key": key, **measure(real.floor, real, unpaired, kind=kind, sample_rate=rate),
              "reference": real.description, "floor_set": real.floor_description,
              "reference_spectrum": dict(zip(("freqs", "power"), _spectrum(real.reference, kind)))}
    if ev.curve_every:
        n = min(ev.curve_samples, ev.n_samples)
        ref = real.reference[:n] if kind == "audio" else real.reference
        record["curve_metrics"] = measure(real.floor[:n], real, unpaired, kind=kind, sample_rate=rate,
                                          reference=ref)["metrics"]
    (out / "real").mkdir(parents=True, exist_ok=True)
    if kind == "audio":
        save_audio(torch.as_tensor(real.reference[:4]), out / "real", int(rate or 0), prefix="reference")
    else:
        save_image_grid(torch.as_tensor(real.floor[:64]), out / "real" / "samples.png")
    _write_json(path, record)
    return record


def _spectrum(x: Any, kind: str) -> tuple[list[float], list[float]]:
    import torch

    from specreg.metrics.spectrum import radial_power_spectrum

    f, p = radial_power_spectrum(torch.as_tensor(x), 1 if kind == "audio" else 2)
    return f.tolist(), p.tolist()


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))  # sample std (n − 1)


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.{max(1, digits - 2)}e}"


def _direction(key: str) -> str:
    if key in LOWER:
        return "lower"
    if key in HIGHER:
        return "higher"
    if key.endswith("_bias"):
        return "zero"
    return ""


def _score(key: str, mean: float) -> float:
    """Smaller is better: the mean, its negative, or its size, by the key's direction."""
    return {"lower": mean, "higher": -mean, "zero": abs(mean)}.get(_direction(key), math.nan)


def aggregate(st: Study, specs: Sequence[RunSpec]) -> dict[str, Any]:
    """Per variant: the records of its seeds and, per column, mean, sample std and n."""
    rows: dict[str, Any] = {}
    for v in st.variants:
        records = [r for s in specs if s.variant == v.name and (r := _read_json(s.run_dir / DONE_FILE))]
        ok = [r for r in records if r.get("status") == "done"]
        stats = {}
        for key in st.column_keys():
            by_seed = {int(r["seed"]): r["metrics"][key] for r in ok if key in r.get("metrics", {})}
            mean, std = _mean_std(list(by_seed.values()))
            stats[key] = {"mean": mean, "std": std, "n": len(by_seed), "by_seed": by_seed}
        rows[v.name] = {"variant": asdict(v), "records": records, "n_done": len(ok),
                        "n_diverged": sum(1 for r in records if r.get("status") == "diverged"), "stats": stats}
    return rows


def _t975(df: float) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def difference(key: str, a: dict[str, Any], b: dict[str, Any], floor: float | None
               ) -> tuple[float, float | None]:
    """``a − b`` for ``key`` and the smallest size of it that the study resolves.

    Paired by seed where both have at least two seeds in common: a seed fixes the data
    order, the diffusion noise and the sampling noise of every variant, so the per-seed
    differences d_s = a_s − b_s carry far less noise than either mean; the difference is
    mean(d) and its 95 % half-width t₀.₉₇₅(n−1)·sd(d)/√n. Otherwise unpaired: the
    difference of the means with Welch's half-width. For distances the real-vs-real floor
    also bounds it: the resolution is max(2·floor, half-width). ``None``: not measurable
    (fewer than two seeds).
    """
    common = sorted(set(a.get("by_seed", {})) & set(b.get("by_seed", {})))
    parts = [2 * abs(floor)] if key in DISTANCES and floor is not None and math.isfinite(floor) else []
    if len(common) >= 2:
        d = [a["by_seed"][s] - b["by_seed"][s] for s in common]
        parts.append(_t975(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d)))
        return statistics.fmean(d), max(parts)
    diff = a["mean"] - b["mean"]
    if a["std"] is None or b["std"] is None:  # a single seed: its seed noise is unknown
        return diff, None
    va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
    if va + vb > 0:
        df = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
        parts.append(_t975(df) * math.sqrt(va + vb))
    return diff, max(parts, default=0.0)


def _resolved(diff: float, res: float | None) -> bool:
    """Whether a ``difference`` result is resolved (†)."""
    return res is not None and math.isfinite(diff) and abs(diff) > res


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def results_table(st: Study, rows: Mapping[str, Any], floor: Mapping[str, Any]) -> list[str]:
    """The paper's layout: one row per variant, one column per metric, mean ± std over
    seeds, the best mean in bold, † where the difference to the variant's baseline is
    resolved; then the real-vs-real floor and the median seed spread."""
    cols = st.column_keys()
    best: dict[str, float] = {}
    for key in cols:
        scores = [_score(key, rows[v.name]["stats"][key]["mean"]) for v in st.variants]
        if any(math.isfinite(s) for s in scores):
            best[key] = min(s for s in scores if math.isfinite(s))
    arrows = {"lower": " ↓", "higher": " ↑", "zero": " →0"}
    lines = [_row(["variant", "protocol", "seeds", *[k + arrows.get(_direction(k), "") for k in cols]]),
             "|" + "---|" * (3 + len(cols))]
    for v in st.variants:
        row = rows[v.name]
        seeds = f"{row['n_done']}/{len(st.seeds)}" + (f" ({row['n_diverged']} diverged)" if row["n_diverged"] else "")
        cells = [v.name + (f" — {v.label}" if v.label else ""), v.protocol, seeds]
        for key in cols:
            s = row["stats"][key]
            text = f"{_fmt(s['mean'])} ± {_fmt(s['std'], 2)}"
            if key in best and math.isfinite(s["mean"]) and _score(key, s["mean"]) == best[key]:
                text = f"**{text}**"
            if v.baseline is not None and math.isfinite(s["mean"]):
                b = rows[v.baseline]["stats"][key]
                if math.isfinite(b["mean"]) and _resolved(*difference(key, s, b, floor["metrics"].get(key))):
                    text += " †"
            cells.append(text)
        lines.append(_row(cells))
    ev = st.evaluation
    floor_cells = [f"real vs real: noise floor ({ev.n_samples} vs {ev.n_reference})", "", ""]
    floor_cells += ["n/a (paired)" if k in PAIRED else _fmt(floor["metrics"].get(k)) for k in cols]
    lines.append(_row(floor_cells))
    spread = ["seed spread: median std over variants", "", ""]
    for key in cols:
        stds = [rows[v.name]["stats"][key]["std"] for v in st.variants]
        stds = [s for s in stds if s is not None]
        spread.append(_fmt(statistics.median(stds), 2) if stds else "—")
    lines.append(_row(spread))
    return lines


def lambda_grid_table(st: Study, rows: Mapping[str, Any], floor: Mapping[str, Any]) -> list[str]:
    """Each automatic λ against its grid of constant λ, per metric: the auto variant's mean,
    the best and the median of the grid's means (median over grid points), the auto
    variant's rank among auto + grid, and whether auto − best is resolved (†, as in the
    results table). Metrics without a direction are left out."""
    lines: list[str] = []
    cols = [k for k in st.column_keys() if _direction(k)]
    for auto, grid in st.lambda_grids:
        if not lines:
            lines = [_row(["auto λ", "metric", "auto", "best of grid", "median of grid", "auto's rank",
                           "auto − best"]), "|---" * 7 + "|"]
        for key in cols:
            a = rows[auto]["stats"][key]
            pts = [(n, rows[n]["stats"][key]) for n in grid if math.isfinite(rows[n]["stats"][key]["mean"])]
            if not math.isfinite(a["mean"]) or len(pts) < 2:
                continue
            best_name, best = min(pts, key=lambda p: _score(key, p[1]["mean"]))
            median = statistics.median(p[1]["mean"] for p in pts)
            rank = 1 + sum(_score(key, p[1]["mean"]) < _score(key, a["mean"]) for p in pts)
            diff, res = difference(key, a, best, floor["metrics"].get(key))
            mark = " †" if _resolved(diff, res) else ""
            lines.append(_row([auto, key, f"{_fmt(a['mean'])} ± {_fmt(a['std'], 2)}",
                               f"{_fmt(best['mean'])} ({best_name})", _fmt(median), f"{rank} of {len(pts) + 1}",
                               f"{_fmt(diff, 2)}{mark}"]))
    return lines


def curve_table(st: Study, specs: Sequence[RunSpec], floor: Mapping[str, Any], out: Path) -> list[str]:
    """Metrics along training of the baselines' first seed (and of pretrained models)."""
    cols = st.column_keys()
    lines = []
    for s in specs:
        points = _read_json(s.run_dir / "curve.json") if s.curve else None
        if not points:
            continue
        if not lines:
            lines = [_row(["run", "step", *cols]), "|" + "---|" * (2 + len(cols))]
        for p in points:
            lines.append(_row([s.label, str(p["step"]), *[_fmt(p["metrics"].get(k)) for k in cols]]))
    if lines:
        fm = floor.get("curve_metrics", {})
        lines.append(_row([f"real vs real ({min(st.evaluation.curve_samples, st.evaluation.n_samples)} samples)",
                           "", *["n/a (paired)" if k in PAIRED else _fmt(fm.get(k)) for k in cols]]))
    return lines


def timing_table(specs: Sequence[RunSpec]) -> tuple[list[str], float]:
    """One row per run: steps trained, train/sample/eval seconds; and the summed train time."""
    lines = [_row(["run", "steps", "train s", "s / step", "sample s", "eval s", "status"]), "|---" * 7 + "|"]
    total = 0.0
    for s in specs:
        rec = _read_json(s.run_dir / DONE_FILE) or {}
        tim = rec.get("timing") or _read_json(s.run_dir / "timing.json") or {}
        train_s, steps = tim.get("train_s"), tim.get("steps")
        total += train_s or 0.0
        per = _fmt(train_s / steps, 3) if train_s and steps else "—"
        lines.append(_row([s.label, str(steps if steps is not None else "—"), _fmt(train_s), per,
                           _fmt(tim.get("sample_s"), 3), _fmt(tim.get("eval_s"), 3), str(rec.get("status", s.status))]))
    return lines, total


def _sample_links(st: Study, runs: Sequence[RunSpec], out: Path, kind: str) -> list[str]:
    lines = []
    if kind == "audio":
        wavs = sorted((out / "real").glob("reference*.wav"))[:2]
        lines.append("- real reference: " + ", ".join(f"[{w.name}](real/{w.name})" for w in wavs))
    else:
        lines.append("**real** (floor set)\n\n![real](real/samples.png)\n")
    for v in st.variants:
        first = next((s for s in runs if s.variant == v.name
                      and (_read_json(s.run_dir / DONE_FILE) or {}).get("status") == "done"), None)
        if first is None:
            continue
        rel = (first.run_dir / EVAL_DIR).relative_to(out)
        if kind == "audio":
            wavs = sorted((out / rel).glob("*.wav"))[:2]
            lines.append(f"- {v.name} (seed {first.seed}): " + ", ".join(f"[{w.name}]({rel / w.name})" for w in wavs))
        else:
            lines.append(f"**{v.name}** (seed {first.seed})\n\n![{v.name}]({rel / 'samples.png'})\n")
    return lines


def _plots(st: Study, rows: Mapping[str, Any], floor: Mapping[str, Any], out: Path, kind: str, rate: int | None
           ) -> list[str]:
    """``spectra.png`` (mean spectrum over seeds per variant and the reference) and
    ``spectra_ratio.png``; returns the markdown that shows them."""
    import numpy as np

    from specreg.metrics.plots import plot_spectra

    spectra: dict[str, tuple[Any, Any]] = {}
    for v in st.variants:
        done = [r for r in rows[v.name]["records"] if r.get("status") == "done"]
        if done:
            spectra[v.name] = (np.asarray(done[0]["spectrum"]["freqs"]),
                               np.mean([r["spectrum"]["power"] for r in done], axis=0))
    if not spectra:
        return ["(no finished run yet)"]
    ref = (np.asarray(floor["reference_spectrum"]["freqs"]), np.asarray(floor["reference_spectrum"]["power"]))
    scale, xlabel = (rate, "frequency (Hz)") if kind == "audio" else (1, "frequency (cycles / pixel)")
    plot_spectra({k: (f * scale, p) for k, (f, p) in spectra.items()}, reference=(ref[0] * scale, ref[1]),
                 path=out / "spectra.png", reference_label="real reference", xlabel=xlabel)
    _plot_ratio(spectra, ref, out / "spectra_ratio.png", scale, xlabel)  # type: ignore[arg-type]
    return ["![spectra](spectra.png) ![ratio](spectra_ratio.png)"]


def _versions() -> dict[str, str]:
    import numpy as np
    import torch

    import specreg

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "specreg": specreg.__version__}


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda: " + torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores; one torch thread per run, --jobs threads for a run alone)"


def _setup_text(st: Study, specs: Sequence[RunSpec], runs: Sequence[RunSpec], out: Path) -> str:
    cfg = runs[0].config
    steps = sorted({s.config["train"]["steps"] for s in runs})
    text = (f"Base config `{st.base}` with {len(st.variants)} variants × {len(st.seeds)} seeds "
            f"({', '.join(map(str, st.seeds))}); {'/'.join(map(str, steps))} training steps per run, batch "
            f"{cfg['train']['batch_size']}; {st.evaluation.n_samples} samples per run ({cfg['sample']['sampler']}, "
            f"{cfg['sample']['steps']} steps, sampling seed {st.evaluation.sample_seed} + run seed).")
    pretrains = [s for s in specs if s.protocol == "pretrain"]
    if pretrains:
        text += (f"\n\nFine-tuning protocol: each pretrained model below was trained for "
                 f"{pretrains[0].config['train']['steps']} steps without a regularizer (seed "
                 f"{st.finetune.pretrain_seed}); the variants marked `finetune` were fine-tuned from its final EMA "
                 f"weights for {st.finetune.steps} steps with a fresh optimizer (fine-tuning overrides: "
                 f"{', '.join(st.finetune.overrides) or 'none'}).\n")
        for p in pretrains:
            users = sorted({s.variant for s in runs if s.pretrain_dir == p.run_dir})
            text += f"\n- `{p.run_dir.relative_to(out)}`: {', '.join(users)}"
    return text


def write_report(st: Study, out: Path, specs: Sequence[RunSpec], *, command: str, wall_s: float) -> Path:
    """Write ``results.json``, the spectrum plots and ``report.md``; return the report's path."""
    runs = [s for s in specs if s.protocol != "pretrain"]
    floor = _floor(st, out, runs[0].config)
    rows = aggregate(st, specs)
    kind, rate = _kind(runs[0].config)
    labels = dict(floor.get("labels", {}))
    for row in rows.values():
        for r in row["records"]:
            labels.update(r.get("labels", {}))
    legend = [f"- **{k}**: {labels.get(k, '')}" for k in st.column_keys()]
    diverged = [f"- {v.name}/seed{r['seed']}: {r.get('error', '')}" for v in st.variants
                for r in rows[v.name]["records"] if r.get("status") == "diverged"]
    curves = curve_table(st, specs, floor, out)
    times, total_train = timing_table(specs)
    versions, device = _versions(), _device()
    _write_json(out / "results.json", {
        "study": asdict(st), "command": command, "versions": versions, "device": device,
        "floor": {k: floor.get(k) for k in ("metrics", "curve_metrics", "reference", "floor_set")},
        "rows": {k: {"stats": r["stats"], "n_done": r["n_done"], "n_diverged": r["n_diverged"]}
                 for k, r in rows.items()},
        "wall_s": wall_s})
    nl = "\n"
    sections = [
        f"# {st.title or st.name} — profile `{st.profile}`",
        st.description,
        f"Variants of the study left out by this profile: {', '.join(st.cut)}." if st.cut else "",
        _setup_text(st, specs, runs, out),
        "## Results",
        "Mean ± standard deviation over seeds (sample std, n − 1; \"—\" with one seed). ↓ lower is better, "
        "↑ higher is better, →0 closest to zero is best; the best mean per column is **bold**. † marks a mean "
        "whose difference to its baseline's is resolved: larger than twice the real-vs-real noise floor (for "
        "distances) and than the 95 % half-width of the difference over seeds. The difference is paired by seed "
        "where both rows share at least two seeds (a seed fixes the data order, the noise and the sampling noise "
        "of every variant): mean and Student-t half-width of the per-seed differences; otherwise the difference "
        "of the means with Welch's half-width. With a single seed nothing is marked. Without †, this study does "
        "not resolve the difference.",
        nl.join(results_table(st, rows, floor)),
        f"Reference: {floor['reference']}. Noise floor: {floor['floor_set']}, against the same reference.",
        nl.join(legend),
        ("Diverged runs (left out of the means):" + nl + nl.join(diverged)) if diverged else "",
        *(["## Automatic λ against the λ grid",
           "Does the automatic λ remove the need to tune λ? Per metric: the auto variant's mean ± std, the best "
           "and the median of the grid's means, the auto variant's rank among the grid and itself (1 = best), "
           "and auto − best (paired by seed where possible; † where resolved, as above).",
           nl.join(grid_lines)] if (grid_lines := lambda_grid_table(st, rows, floor)) else []),
        *(["## Training curves",
           "The first seed of each from-scratch baseline (and each pretrained model), measured every "
           f"{st.evaluation.curve_every} steps on {min(st.evaluation.curve_samples, st.evaluation.n_samples)} "
           "samples: a run is long enough when its numbers stop improving well before the last row.",
           nl.join(curves)] if curves else []),
        "## Spectra",
        "Radially averaged power spectra, mean over seeds, against the real reference (dashed), and the error "
        "in decades, log10(P / P_real):",
        nl.join(_plots(st, rows, floor, out, kind, rate)),
        "## Samples",
        nl.join(_sample_links(st, runs, out, kind)),
        "## Runs and wall time",
        nl.join(times),
        _wall_text(out, total_train, wall_s),
        "## Reproduce",
        f"```\n{command}\n```",
        f"Software: {', '.join(f'{k} {v}' for k, v in versions.items())}; {device}; {platform.platform()}.",
    ]
    path = out / "report.md"
    path.write_text(nl.join(nl + s for s in sections if s).lstrip() + nl, encoding="utf-8")
    return path


def _wall_text(out: Path, total_train: float, wall_s: float) -> str:
    entries = [e for e in (_read_json(out / INVOCATIONS_FILE) or []) if e.get("trained")]
    text = f"Training time summed over runs: {total_train / 60:.1f} min; this invocation: {wall_s / 60:.1f} min"
    if entries:
        wall = sum(e["wall_s"] for e in entries)
        text += (f"; wall time of the {len(entries)} invocation(s) that trained runs: {wall / 60:.1f} min "
                 f"(started {', '.join(e['started'] for e in entries)})")
    return text + "."


def _plot_ratio(spectra: Mapping[str, tuple[Any, Any]], ref: tuple[Any, Any], path: Path, scale: float,
                xlabel: str) -> None:
    """log10(P_variant / P_real) against frequency: 0 is a perfect spectrum."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    f = np.asarray(ref[0])
    keep = f > 0
    tiny = np.finfo(np.float64).tiny
    for name, (_, power) in spectra.items():
        ratio = np.log10(np.maximum(power, tiny)) - np.log10(np.maximum(ref[1], tiny))
        ax.plot(f[keep] * scale, ratio[keep], label=name)
    ax.axhline(0.0, color="black", linewidth=1)
    ax.set_xscale("log")
    from specreg.metrics.plots import tidy_log_axis

    tidy_log_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("log10(P / P_real)  (decades)")
    ax.set_title("Spectrum error against the real reference")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ============================================================================ CLI


def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``specreg compare`` to a sub-parser collection; returns the parser."""
    p = subparsers.add_parser(
        "compare", help="train and compare variants over seeds from a study file; write report.md",
        description=(
            "Run a study: train every (variant, seed) of a study YAML under one profile (runs/<variant>/seed<k>/), "
            "sample each run with a fixed seed, measure it against a real reference set, and write report.md: "
            "mean ± std over seeds per variant and metric (best in bold), the real-vs-real noise floor, the seed "
            "spread, spectrum plots, sample grids, wall times, the command and software versions. Running the "
            "same command again skips finished runs and resumes interrupted ones. With protocol: finetune a "
            "pretrained model is trained first and every variant is fine-tuned from it (the paper's protocol)."),
        epilog="Examples: specreg compare configs/studies/images_textures.yaml --out results/textures --dry-run;  "
               "specreg compare configs/studies/toy_checkerboard.yaml --out results/toy --profile small --jobs 2",
    )
    p.add_argument("study", metavar="CONFIG", help="a study YAML file (e.g. configs/studies/images_textures.yaml)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output folder (runs/, report.md, results.json, plots)")
    p.add_argument("--profile", default="small", metavar="NAME",
                   help="profile of the study: small (about an hour on a 2-core CPU), full (one GPU), or tiny "
                        "(a smoke test whose numbers mean nothing); default small")
    p.add_argument("--dry-run", action="store_true", help="list the runs (and whether each is done) without training")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N runs at once in separate processes with one torch thread each; a run alone (a "
                        "pretraining) gets N threads (default 1)")
    p.set_defaults(func=run_compare_cli)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    """Hook used by :mod:`specreg.cli` (``COMMAND_MODULES``) to add ``specreg compare``."""
    add_compare_parser(subparsers)


def run_compare_cli(args: argparse.Namespace) -> int:
    """Run ``specreg compare`` from parsed arguments; prints the plan or the report's path."""
    if args.jobs < 1:
        raise ValueError(f"--jobs={args.jobs} is not accepted; expected an integer >= 1")
    result = run_compare(args.study, args.out, args.profile, dry_run=args.dry_run, jobs=args.jobs)
    if args.dry_run:
        print(format_plan(result))
        return 0
    print(f"wrote {result.report} ({result.seconds / 60:.1f} min)")
    return 0


def format_plan(result: CompareResult) -> str:
    """The dry-run listing: one line per run with its status and directory."""
    st = result.study
    lines = [f"study {st.name} ({st.source}), profile {st.profile}: {len(result.runs)} runs "
             f"({sum(s.status == 'done' for s in result.runs)} done)"]
    if st.cut:
        lines.append(f"left out by this profile: {', '.join(st.cut)}")
    for s in result.runs:
        steps = s.config["train"]["steps"]
        lines.append(f"  {s.status:<7} {s.label:<40} {s.protocol:<9} {steps:>7} steps  {s.run_dir}")
    return "\n".join(lines)


__all__ = [
    "CompareResult",
    "Evaluation",
    "RealSets",
    "RunSpec",
    "Study",
    "Variant",
    "add_compare_parser",
    "aggregate",
    "compare_command",
    "execute",
    "format_plan",
    "load_study",
    "measure",
    "plan_runs",
    "real_sets",
    "register",
    "run_compare",
    "run_compare_cli",
    "write_report",
]
