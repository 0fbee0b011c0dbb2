"""A run's logs: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard scalars,
and the log records a regularizer hands over at each checkpoint (``<name>.json``).

``metrics.jsonl`` rows hold step, loss, diffusion, spectral, lam, lr, grad_norm and time:
seconds since the run started, summed over the sittings of a resumed run up to the
checkpoint each left. A resumed run first drops the rows written after its checkpoint,
so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from specreg.files import write_atomic
from specreg.layout import METRICS_FILE
from specreg.losses.extras import LogRecord

if TYPE_CHECKING:
    from specreg.train.config import Config



def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (none if it is missing; a line cut short by a kill is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return rows


def truncate_metrics(path: Path, step: int) -> list[dict[str, Any]]:
    """Drop log lines after ``step`` (written after the checkpoint we resume from); returns the kept rows."""
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def start_metrics(out_dir: Path, resumed_step: int | None) -> float:
    """Make ``out_dir/metrics.jsonl`` ready for a run resumed at ``resumed_step`` (None: a
    fresh start, which deletes the log of a run that died before its first checkpoint);
    returns the training seconds of the earlier sittings (0 for a fresh start)."""
    path = out_dir / METRICS_FILE
    if resumed_step is None:
        path.unlink(missing_ok=True)
        return 0.0
    kept = truncate_metrics(path, resumed_step)
    # "time" counts every sitting: a killed one's time up to the checkpoint it left is kept
    return max((float(r.get("time", 0.0)) for r in kept), default=0.0)


def flat_hparams(cfg: Config) -> dict[str, Any]:
    """The config as ``section.key`` → value (scalars as they are, others as text), for TensorBoard."""
    out = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            out[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


class MetricsLog:
    """Appends log rows to ``out_dir/metrics.jsonl`` (when ``write`` is true: the main
    process) and, where ``acc`` logs to TensorBoard, its scalars as ``train/<key>``."""

    def __init__(self, out_dir: Path, acc: Any, write: bool) -> None:
        self.acc = acc
        self._file: IO[str] | None = open(out_dir / METRICS_FILE, "a") if write else None

    def write(self, row: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        if self.acc.log_with:
            self.acc.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_log_record(out_dir: Path, step: int, record: LogRecord) -> Path:
    """Add ``record`` at ``step`` to ``out_dir/<record.name>.json`` (``{**fixed, "steps":
    {step: value}}``), dropping steps after ``step`` (left by a sitting that went further
    than the checkpoint resumed from); written atomically."""
    path = out_dir / f"{record.name}.json"
    out: dict[str, Any] = {**record.fixed, "steps": {}}
    if path.is_file():
        try:
            out["steps"] = json.loads(path.read_text()).get("steps", {})
        except json.JSONDecodeError:
            pass
    out["steps"][str(step)] = record.value
    out["steps"] = {k: out["steps"][k] for k in sorted(out["steps"], key=int) if int(k) <= step}
    write_atomic(path, json.dumps(out) + "\n")
    return path


__all__ = ["METRICS_FILE", "MetricsLog", "flat_hparams", "read_metrics", "start_metrics", "truncate_metrics",
           "write_log_record"]
