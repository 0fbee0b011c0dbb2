"""Every file and folder name of a run directory and of a study's output folder, with the
readers and writers of the records kept there. No other module spells one of these names
(tests/test_layout.py greps for them); below ``train/`` and ``experiments/``, like
:mod:`specreg.files`, so the trainer and the study harness share it.

A run directory (``specreg train --out DIR``; a study's ``runs/<variant>/seed<k>/``)::

    config.yaml          the resolved run config                        (train)
    metrics.jsonl        one JSON line per logged step                  (train)
    checkpoints/step-XXXXXXXX/{model,optimizer,state}.safetensors, state.json, manifest.json
    samples/             grids (step-XXXXXXXX.png) or WAV folders along training (train)
    band_weights.json, band_weights.png   learned band weights of a loss that has them (train)
    run.json             the record of a study run (:class:`RunRecord`); ``metrics.json``
                         before it was named so (still read)
    timing.json          train seconds and steps, summed over sittings
    curve.json           metrics along training (evaluation.curve_every)
    point_noise.json     one curve checkpoint measured on several sample seeds
                         (scripts/curve_point_noise.py): the noise of one curve point
    finetune.json        the weights a fine-tuning started from
    eval/samples.npy, eval/samples.png (or eval/*.wav)   the samples a study measured
    eval/metrics.json, metrics.md, spectrum.png   what ``specreg eval RUN_DIR`` writes by default
    probe/probe.json, probe.png, probe.md   the spectral error map (``specreg probe``);
                         probe/curve/step-XXXXXXXX/ along a training curve
    .lock                held while a study trains the run

A study's output folder (``specreg compare --out DIR``)::

    study.json, invocations.json      the study as run; every invocation's start and wall time
    runs/<variant>/seed<k>/           run directories
    runs/_pretrain/<key>/seed<k>/     pretrained models (protocol finetune)
    real/floor.json, real/samples.png (or real/reference-*.wav)   the real-vs-real noise floor
    results.json, report.md, spectra.png, spectra_ratio.png
    probe/probe.md, probe.png, curve.png, maps.json   the study's spectral error maps
    contrast.json, contrast.md        ``specreg compare --contrast`` against another study
    study_report.md                   ``specreg demo``: the full report beside its short one
    submitit/<job>/                   the jobs' logs (``--executor local`` or ``slurm``)
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from specreg.files import read_json, write_json

# ----------------------------------------------------------------------------- a run directory
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_MODEL = "model.safetensors"  # the weights (and the EMA weights)
CHECKPOINT_OPTIMIZER = "optimizer.safetensors"
CHECKPOINT_TENSORS = "state.safetensors"  # tensors of the training state (RNG states, ...)
CHECKPOINT_STATE = "state.json"
CHECKPOINT_PAYLOAD = (CHECKPOINT_MODEL, CHECKPOINT_OPTIMIZER, CHECKPOINT_TENSORS, CHECKPOINT_STATE)
CHECKPOINT_MANIFEST = "manifest.json"
SAMPLES_DIR = "samples"
BAND_WEIGHTS_FILE = "band_weights.json"
BAND_WEIGHTS_PLOT = "band_weights.png"
RUN_RECORD = "run.json"
LEGACY_RUN_RECORD = "metrics.json"  # the record's name before it was run.json
TIMING_FILE = "timing.json"
CURVE_FILE = "curve.json"
POINT_NOISE_FILE = "point_noise.json"
FINETUNE_FILE = "finetune.json"
LOCK_FILE = ".lock"
EVAL_DIR = "eval"  # where specreg compare keeps a run's samples (and specreg eval writes by default)
EVAL_RECORD = "metrics.json"  # specreg eval's output (in eval/ by default), beside:
EVAL_SUMMARY = "metrics.md"
EVAL_SPECTRUM_PLOT = "spectrum.png"
SAMPLE_FILES = ("samples.npy", "samples.pt", "samples.safetensors")  # a samples folder's tensor, by preference
SAMPLES_ARRAY = SAMPLE_FILES[0]
SAMPLES_GRID = "samples.png"
SAMPLE_OUT_GRID = "grid.png"  # specreg sample --out DIR: samples.npy and a grid of the first 256 images
PROBE_DIR = "probe"
PROBE_RECORD = "probe.json"
PROBE_PLOT = "probe.png"
PROBE_SUMMARY = "probe.md"
PROBE_FILES = (PROBE_RECORD, PROBE_PLOT, PROBE_SUMMARY)
PROBE_CURVE_DIR = "curve"  # probe/curve/<checkpoint>/ of a run measured along training

# ----------------------------------------------------------------------------- a study's folder
STUDY_FILE = "study.json"
INVOCATIONS_FILE = "invocations.json"
RUNS_DIR = "runs"
PRETRAIN_DIR = "_pretrain"
REAL_DIR = "real"
FLOOR_RECORD = "floor.json"
FLOOR_FILE = Path(REAL_DIR) / FLOOR_RECORD
REAL_CLIP_PREFIX = "reference"  # real/reference-000.wav …
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
SPECTRA_PLOT = "spectra.png"
SPECTRA_RATIO_PLOT = "spectra_ratio.png"
PROBE_MAPS = "maps.json"
PROBE_CURVE_PLOT = "curve.png"
CONTRAST_RECORD = "contrast.json"
CONTRAST_REPORT = "contrast.md"
FULL_REPORT = "study_report.md"  # specreg demo: the study's own report, beside the demo's short one
JOB_LOG_DIR = "submitit"


def run_dir(out: str | os.PathLike, variant: str, seed: int) -> Path:
    """``out/runs/<variant>/seed<k>``: a study run's directory."""
    return Path(out) / RUNS_DIR / variant / f"seed{seed}"


def pretrain_dir(out: str | os.PathLike, key: str, seed: int) -> Path:
    """``out/runs/_pretrain/<key>/seed<k>``: a pretrained model's directory."""
    return run_dir(out, f"{PRETRAIN_DIR}/{key}", seed)


# ----------------------------------------------------------------------------- a run's record
@dataclass
class RunRecord:
    """What ``run.json`` holds: a study run's identity (``key``), how it ended (``status``:
    "done" or "diverged") and what it measured. A pretraining run holds its ``timing`` and
    ``curve`` only; a diverged run its ``error``. Keys this version does not know are kept
    in ``extra`` and written back."""

    key: str
    variant: str
    seed: int
    protocol: str = "scratch"
    pretrained: str | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    status: str = "done"
    error: str | None = None
    step: int | None = None
    metrics: dict[str, Any] | None = None
    labels: dict[str, str] | None = None
    skipped: dict[str, Any] | None = None
    spectrum: dict[str, list[float]] | None = None
    reference: str | None = None
    curve: list[dict[str, Any]] | None = None
    timing: dict[str, Any] | None = None
    n_samples: int | None = None
    sample_seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in raw.items() if k in known},
                   extra={k: v for k, v in raw.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The record as written: fields left None are absent (``pretrained`` always, and
        ``curve`` of a run that did not diverge, are written, as null if need be)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "extra" and (v is not None or f.name == "pretrained"
                                      or (f.name == "curve" and self.status != "diverged")):
                out[f.name] = v
        return {**out, **self.extra}


def read_run_record(run: str | os.PathLike) -> RunRecord | None:
    """The record ``specreg compare`` wrote into a run directory (None if none): ``run.json``,
    else a ``metrics.json`` of earlier versions. A record without its ``timing`` (a diverged
    run) or ``curve`` gets them from ``timing.json`` / ``curve.json``, as they stand."""
    run = Path(run)
    for name in (RUN_RECORD, LEGACY_RUN_RECORD):
        raw = read_json(run / name)
        if isinstance(raw, dict) and "key" in raw and "variant" in raw:
            return with_sidecars(RunRecord.from_dict(raw), run, curve="curve" not in raw)
    return None


def with_sidecars(record: RunRecord, run: str | os.PathLike, *, curve: bool) -> RunRecord:
    """``record`` with the ``timing`` of ``timing.json`` where it has none and, if ``curve``,
    the points of ``curve.json`` (a diverged run's record holds neither)."""
    record.timing = record.timing or read_json(Path(run) / TIMING_FILE)
    if curve:
        record.curve = read_json(Path(run) / CURVE_FILE)
    return record


def read_point_noise(run: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of ``point_noise.json`` (one per checkpoint step, sample seed and sample
    count; see ``scripts/curve_point_noise.py``), [] if there is none."""
    raw = read_json(Path(run) / POINT_NOISE_FILE)
    return [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []


def write_run_record(run: str | os.PathLike, record: RunRecord) -> RunRecord:
    """Write ``run.json``; a record of this run under the legacy name is removed (it would
    shadow nothing, but confuse)."""
    run = Path(run)
    write_json(run / RUN_RECORD, record.to_dict())
    legacy = run / LEGACY_RUN_RECORD
    if legacy.is_file() and (read_json(legacy) or {}).get("key"):
        legacy.unlink()
    return record


# ----------------------------------------------------------------------------- a study's records
def write_study(out: str | os.PathLike, study: dict[str, Any], command: str) -> Path:
    """``study.json``: the study as run and the command that runs it."""
    return write_json(Path(out) / STUDY_FILE, {"study": study, "command": command})


def read_invocations(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of ``invocations.json`` ([] if none)."""
    return read_json(Path(out) / INVOCATIONS_FILE) or []


def write_invocation(out: str | os.PathLike, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Write ``entry`` into ``invocations.json``: in place of the entry with the same
    ``started``, ``pid`` and ``command`` (one invocation keeps its entry current while it
    runs), else appended. Returns every entry now in it."""
    same = ("started", "pid", "command")
    entries = [e for e in read_invocations(out) if not ("pid" in entry and all(e.get(k) == entry.get(k) for k in same))]
    entries.append(entry)
    entries.sort(key=lambda e: str(e.get("started", "")))
    write_json(Path(out) / INVOCATIONS_FILE, entries)
    return entries


class Invocation:
    """This invocation's entry in ``invocations.json`` (start, wall seconds, runs planned and
    trained), so that a study run in several sittings reports the wall time of all of them.
    The entry is written when training starts, after each finished run and every ``every``
    seconds, so a sitting that is killed (a session's end) keeps its wall time up to the
    last minute instead of vanishing."""

    def __init__(self, out: str | os.PathLike, command: str, t0: float, *, planned: int, every: float = 60.0) -> None:
        self.out, self.t0, self._lock, self._stop = out, t0, threading.Lock(), threading.Event()
        self.entry: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
                                      "wall_s": 0.0, "planned": planned, "trained": 0, "command": command,
                                      "pid": os.getpid()}
        self._write()
        if planned:
            threading.Thread(target=self._beat, args=(every,), daemon=True).start()

    def _write(self) -> list[dict[str, Any]]:
        with self._lock:
            self.entry["wall_s"] = round(time.time() - self.t0, 1)
            return write_invocation(self.out, dict(self.entry))

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            self._write()

    def ran(self) -> None:
        """One more run finished."""
        with self._lock:
            self.entry["trained"] += 1
        self._write()

    def close(self) -> list[dict[str, Any]]:
        """Stop the heartbeat, write the final entry; returns every entry."""
        self._stop.set()
        return self._write()


__all__ = [
    "BAND_WEIGHTS_FILE", "BAND_WEIGHTS_PLOT", "CHECKPOINT_DIR", "CHECKPOINT_MANIFEST", "CHECKPOINT_MODEL",
    "CHECKPOINT_OPTIMIZER", "CHECKPOINT_PAYLOAD", "CHECKPOINT_STATE", "CHECKPOINT_TENSORS", "CONFIG_FILE",
    "CONTRAST_RECORD", "CONTRAST_REPORT", "CURVE_FILE", "EVAL_DIR", "EVAL_RECORD", "EVAL_SPECTRUM_PLOT",
    "EVAL_SUMMARY", "FINETUNE_FILE", "FLOOR_FILE", "FLOOR_RECORD", "FULL_REPORT", "INVOCATIONS_FILE", "JOB_LOG_DIR",
    "LEGACY_RUN_RECORD", "LOCK_FILE", "METRICS_FILE", "POINT_NOISE_FILE", "PRETRAIN_DIR", "PROBE_CURVE_DIR",
    "PROBE_CURVE_PLOT",
    "PROBE_DIR", "PROBE_FILES", "PROBE_MAPS", "PROBE_PLOT", "PROBE_RECORD", "PROBE_SUMMARY", "REAL_CLIP_PREFIX",
    "REAL_DIR", "REPORT_FILE", "RESULTS_FILE", "RUNS_DIR", "RUN_RECORD", "SAMPLES_ARRAY", "SAMPLES_DIR",
    "SAMPLE_OUT_GRID", "SAMPLES_GRID", "SAMPLE_FILES", "SPECTRA_PLOT", "SPECTRA_RATIO_PLOT", "STUDY_FILE",
    "TIMING_FILE", "Invocation", "RunRecord", "write_invocation", "pretrain_dir", "read_invocations",
    "read_point_noise", "read_run_record", "run_dir", "with_sidecars", "write_run_record", "write_study",
]
