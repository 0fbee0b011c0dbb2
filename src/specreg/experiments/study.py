"""Study files: their schema and :func:`load_study`, which applies a profile.

A *study* file (YAML) says what to train, how often, and how to measure it::

    name: images_textures
    base: demo                          # built-in config name, or a YAML path (relative to the study)
    extends: other.yaml                 # optional: start from another study (its keys; profiles merged by name)
    overrides: [data.n=4096]            # applied to every run
    seeds: [0, 1, 2]                    # train.seed of each repetition
    baseline: baseline                  # the row the others are measured against
    protocol: scratch                   # or finetune (see specreg.experiments.plan); a variant may set its own
    variants:
      - name: baseline
        label: EDM loss only
        overrides: []
      - name: fourier_ap
        label: + λ_EDM(σ)·L_AP (Eq. 15 as printed)
        overrides: [regularizer.loss=fourier_ap, regularizer.lam=edm]
        curve: true                     # measure every seed along training (evaluation.curve_every)
    lambda_grids:                       # optional: an automatic λ judged against a grid of constant λ
      - {auto: haar_auto, grid: [haar_1e-4, haar_1e-5, haar_1e-6]}
    finetune:                           # only for protocol: finetune
      steps: 2000                       # fine-tuning steps after the pretrained model
      pretrain_seed: 0                  # train.seed of the one pretrained model every seed starts from
      pretrain_seeds: []                # or one pretrained model per seed: seeds[i] starts from the
                                        #   model pretrained with seed pretrain_seeds[i] (same length)
      # a variant may set pretrain_step: N to start from the pretraining's checkpoint at step N
      # (one its curve keeps: a multiple of evaluation.curve_every) instead of its final weights
      overrides: [train.lr=2e-4, train.warmup_steps=0]
    evaluation:
      reference: textures               # a built-in reference set (specreg.experiments.reference)
      split: null                       # its split (null: the held-out one)
      n_samples: 512                    # generated items per run (and items of the floor set)
      n_reference: 2048                 # reference items
      metrics: [lsd, lsd_high]          # names of the metric registry (specreg.metrics.registry)
      columns: [lsd, lsd_high, lsd_high_bias]   # optional: the result keys tabulated
      sample_seed: 1000                 # run k samples with seed sample_seed + k
      metric_seed: 1000                 # seed of KID's subsets and NDB's k-means
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

The file is checked by the same typed-schema code as run configs (:mod:`specreg.schema`):
an unknown key, a wrong type or a value out of range names its dotted key the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from specreg.layout import PRETRAIN_DIR
from specreg.schema import choice, describe, from_mapping

PROTOCOLS = ("scratch", "finetune")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _reference_names() -> tuple[str, ...]:
    from specreg.experiments.reference import REFERENCE_ALIASES, REFERENCE_SETS

    return (*REFERENCE_SETS, *REFERENCE_ALIASES)


# ============================================================================ the schema


def _study_default_metrics() -> tuple[str, ...]:
    from specreg.metrics.registry import study_default_metrics

    return study_default_metrics()


@dataclass
class Evaluation:
    """How every run is measured (see the module docstring)."""

    reference: str = field(default="textures", metadata=choice(_reference_names, help="built-in reference set"))
    split: str | None = field(default=None, metadata=describe("split of the reference set (null: held out)"))
    n_samples: int = field(default=512, metadata=describe("generated items per run", minimum=1))
    n_reference: int = field(default=2048, metadata=describe("reference items", minimum=1))
    metrics: list[str] = field(default_factory=lambda: list(_study_default_metrics()), metadata=describe(
        "metric names (specreg.metrics.registry)"))
    columns: list[str] = field(default_factory=list, metadata=describe("result keys tabulated (empty: primary)"))
    sample_seed: int = field(default=1000, metadata=describe("run k samples with seed sample_seed + k", minimum=0))
    metric_seed: int = field(default=1000, metadata=describe("seed of KID subsets and NDB k-means", minimum=0))
    reference_seed: int = field(default=1, metadata=describe("seed of the reference (s) and floor (s + 1)",
                                                            minimum=0))
    batch_size: int = field(default=256, metadata=describe("items per sampling / feature batch", minimum=1))
    peak_tolerance: float | None = field(default=None, metadata=describe(
        "peak_energy: cycles/sample (null: two bins)", minimum=1e-300))
    segment_length: int | None = field(default=None, metadata=describe(
        "audio: evaluated clip length (null: data.segment_length)", minimum=1))
    curve_every: int = field(default=0, metadata=describe("> 0: measure along training every this many steps",
                                                          minimum=0))
    curve_samples: int = field(default=128, metadata=describe("samples per curve point", minimum=1))
    probe_items: int = field(default=256, metadata=describe(
        "held-out items of the report's spectral error maps, at most n_samples (specreg probe; 0: no maps)",
        minimum=0))
    probe_sigmas: int = field(default=32, metadata=describe("noise levels of the error maps", minimum=2))

    def __post_init__(self) -> None:
        from specreg.experiments.reference import canonical_reference

        self.reference = canonical_reference(self.reference)
        self.metrics = [m.strip().lower().replace("-", "_") for m in self.metrics]
        self.columns = [m.strip().lower().replace("-", "_") for m in self.columns]

    def real_sets(self, cfg: Mapping[str, Any], *, floor: bool = True) -> Any:
        """The reference (and floor) set of a run with config ``cfg`` (a resolved run config
        as a mapping): :func:`specreg.experiments.reference.real_sets` with these settings.
        ``specreg compare`` and ``specreg eval`` of a compare run both build it here."""
        from specreg.experiments.reference import real_sets

        return real_sets(self.reference, cfg["data"], n_samples=self.n_samples, n_reference=self.n_reference,
                         seed=self.reference_seed, split=self.split, segment_length=self.segment_length,
                         num_classes=int(cfg.get("model", {}).get("num_classes", 0)), paired=True, floor=floor)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Evaluation:
        """Checked construction from a mapping (e.g. the ``evaluation`` of a run record)."""
        return from_mapping(cls, dict(raw), "evaluation")


@dataclass
class Finetune:
    """protocol: finetune — the fine-tuning after the pretrained model.

    With one pretrained model (``pretrain_seeds`` empty) a mark says that fine-tuning this
    model differs, not that the recipe does; ``pretrain_seeds`` gives each seed its own
    pretraining, so the seed spread includes the pretraining's."""

    steps: int = field(default=0, metadata=describe("fine-tuning steps", minimum=1))
    pretrain_seed: int = field(default=0, metadata=describe("train.seed of the pretrained model", minimum=0))
    pretrain_seeds: list[int] = field(default_factory=list, metadata=describe(
        "one pretrained model per seed: seeds[i] fine-tunes from the model pretrained with seed pretrain_seeds[i] "
        "(empty: every seed from pretrain_seed)"))
    overrides: list[str] = field(default_factory=list, metadata=describe("overrides of the fine-tuning only"))


@dataclass
class VariantFile:
    name: str = field(metadata=describe("a folder name: letters, digits, '.', '_', '-'"))
    label: str = ""
    overrides: list[str] = field(default_factory=list)
    protocol: str | None = field(default=None, metadata=choice(None, *PROTOCOLS))
    baseline: str | None = None
    curve: bool = field(default=False, metadata=describe("measure every seed along training"))
    pretrain_step: int | None = field(default=None, metadata=describe(
        "protocol finetune: start from the pretraining's checkpoint at this step (a multiple of "
        "evaluation.curve_every, which the pretraining keeps) instead of its final weights", minimum=1))


@dataclass
class GridFile:
    auto: str
    grid: list[str]


@dataclass
class ProfileFile:
    description: str = ""
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    variants: list[str] | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyFile:
    """The keys of a study file (see the module docstring)."""

    base: str
    variants: list[VariantFile]
    name: str = ""
    title: str = ""
    description: str = ""
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: str | None = None
    protocol: str = field(default="scratch", metadata=choice(*PROTOCOLS))
    finetune: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, ProfileFile] = field(default_factory=dict)
    lambda_grids: list[GridFile] = field(default_factory=list)


# ============================================================================ a study with a profile applied


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: a name, a label and the overrides that define it."""

    name: str
    label: str = ""
    overrides: tuple[str, ...] = ()
    protocol: str = "scratch"
    baseline: str | None = None  # the row it is measured against (None: it is a baseline)
    curve: bool = False  # measure every seed along training
    pretrain_step: int | None = None  # finetune: start from the pretraining's checkpoint at this step


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

    def pretrain_seed_of(self, seed: int) -> int:
        """train.seed of the pretrained model that fine-tuning seed ``seed`` starts from."""
        ps = self.finetune.pretrain_seeds
        return ps[self.seeds.index(seed)] if ps else self.finetune.pretrain_seed

    def column_keys(self) -> tuple[str, ...]:
        """The result keys tabulated: ``evaluation.columns``, else each metric's primary key."""
        from specreg.metrics.registry import METRICS

        if self.evaluation.columns:
            return tuple(self.evaluation.columns)
        return tuple(METRICS[m].primary if m in METRICS else m for m in self.evaluation.metrics)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _err(where: str, msg: str) -> ValueError:
    return ValueError(f"study {where}: {msg}")


def find_study(study: str | Path) -> Path:
    """A study file: a path, ``configs/studies/<name>.yaml`` under the working directory, or a
    study shipped with the package (``specreg/configs/studies``)."""
    from importlib import resources

    path = Path(study)
    if path.is_file():
        return path
    if path.suffix not in (".yaml", ".yml"):
        for found in (Path("configs") / "studies" / f"{study}.yaml",
                      Path(str(resources.files("specreg") / "configs" / "studies" / f"{study}.yaml"))):
            if found.is_file():
                return found
    raise ValueError(f"study {str(study)!r} not found: expected a study YAML file (e.g. "
                     "configs/studies/images_textures.yaml) or the name of a shipped study")


def _read(study: str | Path | Mapping[str, Any], _seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], str,
                                                                                        Path | None]:
    if isinstance(study, Mapping):
        return dict(study), "<mapping>", None
    path = find_study(study)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"study {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"study {str(path)!r} must be a mapping of keys to values")
    if "extends" in raw:
        raw = _extend(raw, path, _seen)
    return raw, str(path), path.parent


def _extend(raw: dict[str, Any], path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A study that ``extends`` another (a path relative to it): the parent's keys, each
    top-level key the child gives replacing the parent's whole, and ``profiles`` merged by
    name (a child profile replaces the parent's profile of that name). Two studies that
    differ in data but share their rows keep the rows in one file."""
    parent = raw.pop("extends")
    if not isinstance(parent, str) or not parent.endswith((".yaml", ".yml")):
        raise ValueError(f"study {str(path)!r}: extends={parent!r} is not accepted; expected the path of another "
                         "study YAML file, relative to this one")
    target = Path(parent) if Path(parent).is_absolute() else path.parent / parent
    if target.resolve() in seen or target.resolve() == path.resolve():
        raise ValueError(f"study {str(path)!r}: extends={parent!r} leads back to itself")
    if not target.is_file():
        raise ValueError(f"study {str(path)!r}: extends={parent!r} is not a file")
    base, _, _ = _read(target, (*seen, path.resolve()))
    if "base" in base and "base" not in raw and str(base["base"]).endswith((".yaml", ".yml")) \
            and not Path(base["base"]).is_absolute():  # the parent's base config, relative to the parent
        base["base"] = os.path.relpath(target.parent / base["base"], path.parent)
    profiles = {**(base.get("profiles") or {}), **(raw.pop("profiles", None) or {})}
    return {**base, **raw, "profiles": profiles}


def load_study(study: str | Path | Mapping[str, Any], profile: str = "small") -> Study:
    """Read a study (a YAML path, a study name, or a mapping) and apply ``profile``. Every key
    is checked; an unknown key or a bad value raises ``ValueError`` naming it."""
    raw, where, folder = _read(study)
    try:
        f = from_mapping(StudyFile, raw, "study")
    except ValueError as err:
        raise _err(where, str(err)) from None
    base = f.base
    if folder is not None and base.endswith((".yaml", ".yml")) and not Path(base).is_absolute():
        base = str(folder / base)
    if profile not in f.profiles:
        raise ValueError(f"profile={profile!r} is not accepted for study {where}; expected one of {list(f.profiles)}")
    prof = f.profiles[profile]

    variants: list[Variant] = []
    for i, v in enumerate(f.variants):
        if not _NAME.match(v.name) or v.name == PRETRAIN_DIR:
            raise _err(where, f"variants[{i}].name={v.name!r} is not accepted; expected letters, digits, '.', '_' "
                              "or '-' (it names a folder)")
        if any(v.name == w.name for w in variants):
            raise _err(where, f"variant name {v.name!r} appears twice")
        baseline = v.baseline if v.baseline is not None else f.baseline
        protocol = v.protocol or f.protocol
        if v.pretrain_step is not None and protocol != "finetune":
            raise _err(where, f"variants[{i}].pretrain_step={v.pretrain_step!r} is not accepted for protocol "
                              f"{protocol!r}; it names a checkpoint of the pretraining (protocol finetune)")
        variants.append(Variant(v.name, v.label, tuple(v.overrides), protocol,
                                None if baseline == v.name else baseline, v.curve, v.pretrain_step))
    names = [v.name for v in variants]
    for variant in variants:
        if variant.baseline is not None and variant.baseline not in names:
            raise _err(where, f"variant {variant.name!r} is compared with baseline {variant.baseline!r}, which is "
                              f"not a variant; variants: {names}")

    keep = prof.variants or names
    unknown = [k for k in keep if k not in names]
    if unknown:
        raise _err(where, f"profiles.{profile}.variants names {unknown[0]!r}, which is not a variant; "
                          f"variants: {names}")
    chosen = tuple(v for v in variants if v.name in keep)
    chosen = tuple(v if v.baseline is None or v.baseline in keep else replace(v, baseline=None) for v in chosen)

    seeds = tuple(prof.seeds if prof.seeds is not None else f.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise _err(where, f"seeds={list(seeds)} is not accepted; expected distinct integers >= 0")
    try:  # a profile updates evaluation and finetune key by key; each part is checked under its own name
        from_mapping(Evaluation, prof.evaluation, f"profiles.{profile}.evaluation")
        from_mapping(Finetune, prof.finetune, f"profiles.{profile}.finetune")
        evaluation = from_mapping(Evaluation, {**f.evaluation, **prof.evaluation}, "evaluation")
        finetune = from_mapping(Finetune, {**f.finetune, **prof.finetune}, "finetune")
    except ValueError as err:
        raise _err(where, str(err)) from None
    if any(v.protocol == "finetune" for v in chosen) and finetune.steps < 1:
        raise _err(where, "a variant uses protocol finetune, so finetune.steps must be an integer >= 1")
    ps = list(finetune.pretrain_seeds)
    if ps and (len(ps) != len(seeds) or len(set(ps)) != len(ps) or min(ps) < 0):
        raise _err(where, f"finetune.pretrain_seeds={ps} is not accepted; expected {len(seeds)} distinct integers "
                          f">= 0, one per seed {list(seeds)} (or [] for one pretrained model, seed pretrain_seed)")
    grids = []
    for i, g in enumerate(f.lambda_grids):
        for n in (g.auto, *g.grid):
            if n not in names:
                raise _err(where, f"lambda_grids[{i}] names {n!r}, which is not a variant; variants: {names}")
        if len(g.grid) < 2 or g.auto in g.grid:
            raise _err(where, f"lambda_grids[{i}].grid={list(g.grid)} is not accepted; expected two or more "
                              "constant-λ variants, not including the auto variant")
        kept = tuple(n for n in g.grid if n in keep)
        if g.auto in keep and len(kept) >= 2:
            grids.append((g.auto, kept))
    return Study(name=f.name or Path(where).stem, base=base, overrides=(*f.overrides, *prof.overrides),
                 seeds=seeds, variants=chosen, evaluation=evaluation, finetune=finetune, profile=profile,
                 profiles=tuple(f.profiles), title=f.title,
                 description="\n\n".join(t.strip() for t in (f.description, prof.description) if t), source=where,
                 cut=tuple(n for n in names if n not in keep), lambda_grids=tuple(grids))


__all__ = ["PRETRAIN_DIR", "PROTOCOLS", "Evaluation", "Finetune", "Study", "StudyFile", "Variant", "find_study",
           "load_study"]
