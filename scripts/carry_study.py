"""Carry an unfinished study to the next sitting on a machine that keeps nothing between
sittings: copy what a resume and the final report need from ``results/<name>`` into
``carry/<name>`` (replacing what was there), and nothing else.

    python scripts/carry_study.py results/<name> [carry/<name>]

What is carried:

* every file of the study folder up to ``--max-file-mb`` (records, curves, configs, logs,
  floors, sample grids), except the sample arrays under a run's ``eval/`` (the run's record
  holds its metrics and spectrum; its ``samples.png`` is carried) and the checkpoints;
* of a run not yet done (no ``run.json`` with status "done"): its newest checkpoint, whole
  (model, EMA, optimizer, random state), so that a resume continues where it stopped;
* of a finished pretraining (``runs/_pretrain/``), which the fine-tunings start from: the
  weights of its newest checkpoint (``model.safetensors`` with the manifest and
  ``state.json``, no optimizer).

Not carried: older checkpoints (their curve points are in ``curve.json``; the report's error
maps along the curve lose them) and the weights of finished fine-tunings (their records
hold every number; the error map of a finished seed-0 run is lost unless it was probed).
The folder's ``MANIFEST.txt`` lists what was left out and why. To resume, copy it back:
``mkdir -p results && cp -rn carry/<name> results/`` and run the study's command.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from specreg.layout import (
    CHECKPOINT_DIR,
    CHECKPOINT_MODEL,
    CHECKPOINT_STATE,
    CONFIG_FILE,
    EVAL_DIR,
    LOCK_FILE,
    PRETRAIN_DIR,
    SAMPLES_GRID,
    read_run_record,
)

MANIFEST = "MANIFEST.txt"
WEIGHTS = (CHECKPOINT_MODEL, "manifest.json", CHECKPOINT_STATE)


def run_dirs(study: Path) -> list[Path]:
    """Every run folder of a study (one that holds the trainer's ``config.yaml``)."""
    return sorted(p.parent for p in (study / "runs").rglob(CONFIG_FILE))


def is_done(run: Path) -> bool:
    record = read_run_record(run)
    return record is not None and record.status == "done"


def plan(study: Path, max_bytes: int) -> tuple[list[tuple[Path, str]], list[str]]:
    """``(files to copy with their reason, lines on what is left out)``, paths relative to ``study``."""
    from specreg.train.checkpoint import list_checkpoints

    runs = run_dirs(study)
    pending = [r for r in runs if not is_done(r)]
    pretrains = [r for r in runs if PRETRAIN_DIR in r.relative_to(study).parts]
    copy: list[tuple[Path, str]] = []
    left: list[str] = []
    for f in sorted(p for p in study.rglob("*") if p.is_file()):
        rel = f.relative_to(study)
        if CHECKPOINT_DIR in rel.parts or rel.name == LOCK_FILE:
            continue
        if EVAL_DIR in rel.parts[:-1] and rel.name != SAMPLES_GRID and "runs" in rel.parts:
            left.append(f"{rel}: a run's samples (its record holds their metrics)")
        elif f.stat().st_size > max_bytes:
            left.append(f"{rel}: {f.stat().st_size / 2**20:.1f} MB, over the limit")
        else:
            copy.append((rel, "file"))
    for run in runs:
        ckpts = list_checkpoints(run / CHECKPOINT_DIR)
        rel_run = run.relative_to(study)
        if not ckpts:
            continue
        newest = ckpts[-1]
        if run in pending:
            copy += [(p.relative_to(study), "resume") for p in sorted(newest.iterdir()) if p.is_file()]
        elif run in pretrains:
            copy += [(newest.relative_to(study) / name, "weights") for name in WEIGHTS
                     if (newest / name).is_file()]
        for old in ckpts[:-1] + ([] if run in pending or run in pretrains else [newest]):
            left.append(f"{rel_run / CHECKPOINT_DIR / old.name}: checkpoint not needed to resume")
    return copy, left


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="the study folder, results/<name>")
    ap.add_argument("dest", type=Path, nargs="?", help="default: carry/<name>")
    ap.add_argument("--max-file-mb", type=float, default=1.0, help="largest plain file carried (default 1)")
    args = ap.parse_args()
    if not (args.study / "runs").is_dir():
        raise SystemExit(f"carry_study: study={str(args.study)!r} has no runs/ folder; pass results/<name>")
    dest = args.dest or Path("carry") / args.study.name
    copy, left = plan(args.study, int(args.max_file_mb * 2**20))
    if dest.exists():
        shutil.rmtree(dest)
    total = 0
    for rel, _ in copy:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(args.study / rel, dest / rel)
        total += (dest / rel).stat().st_size
    (dest / MANIFEST).write_text("Left out of this carry:\n" + "".join(f"- {line}\n" for line in left))
    kinds = {k: sum(1 for _, r in copy if r == k) for k in ("file", "resume", "weights")}
    print(f"carried {len(copy)} files ({total / 2**20:.1f} MB) into {dest}: {kinds['file']} records, "
          f"{kinds['resume']} checkpoint files to resume from, {kinds['weights']} pretrained-weight files; "
          f"{len(left)} left out ({dest / MANIFEST})")


if __name__ == "__main__":
    main()
