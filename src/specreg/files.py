"""Small shared file I/O, below ``train/`` and ``experiments/``: atomic JSON, sample
writers (PNG grids, WAV clips) and the step names of checkpoints and sample folders.

Every file a run or a study writes for later reading goes through :func:`write_atomic`
(write to a unique temporary name beside it, then rename: a reader never sees half a
file, and two writers never share a temporary name); every
``step-XXXXXXXX`` name is made by :func:`step_name` and read by :func:`step_of`.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

STEP_PREFIX = "step-"
_STEP = re.compile(r"step-(\d+)")


def step_name(step: int) -> str:
    """``step-00001234``: the name of a checkpoint or sample folder of ``step``."""
    return f"{STEP_PREFIX}{int(step):08d}"


def step_of(path: str | os.PathLike) -> int | None:
    """The step of a ``step-XXXXXXXX`` name (a folder, or a file such as ``step-….png``); None otherwise."""
    p = Path(path)
    m = _STEP.fullmatch(p.stem if p.suffix else p.name)
    return int(m.group(1)) if m else None


def newest_step(paths: Any) -> Path | None:
    """The path with the largest step among ``paths`` (names that are not steps are ignored)."""
    steps = [(s, p) for p in paths if (s := step_of(p)) is not None]
    return max(steps)[1] if steps else None


def check_folder(path: str | os.PathLike, name: str = "--out") -> Path:
    """Refuse, before anything is written, an output folder that cannot be one: the empty
    string (it would mean the current directory), an existing file, or a path below a file.
    Returns the path; ``ValueError`` naming ``name`` otherwise."""
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError(f"{name}={text!r} is not accepted; expected a folder path (use . for the current directory)")
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{name}='{p}' is a file; expected a folder (new or existing)")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name}='{p}' lies below the file '{parent}'; expected a folder path")
            break
    return p


def folder_arg(text: str) -> Path:
    """An ``argparse`` type for an output folder option: :func:`check_folder` at parse time."""
    import argparse

    try:
        return check_folder(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--out=")) from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or None if it is missing or unreadable (e.g. cut short by a kill)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` atomically: into a unique hidden temporary
    file in the same folder, then ``os.replace``. A kill or an error leaves either the old
    file or the new one, never half of one, and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a new file's mode, as open() gives
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask (read from /proc where it can be: setting it to read it back
    would race other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any, *, finite: bool = False) -> Path:
    """Write ``obj`` as indented UTF-8 JSON atomically (:func:`write_atomic`).

    JSON has no infinity or NaN (Python writes ``Infinity``, which strict readers refuse).
    ``finite=True`` writes each such number as ``null`` and, for a mapping, lists them
    under ``"non_finite"`` (dotted path → ``"inf"``, ``"-inf"`` or ``"nan"``), so the
    file is valid JSON that still says what was there."""
    if finite:
        found: dict[str, str] = {}
        obj = _nulls_for_non_finite(obj, "", found)
        if found and isinstance(obj, dict):
            obj = {**obj, "non_finite": found}
    return write_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=not finite) + "\n")


def _nulls_for_non_finite(obj: Any, where: str, found: dict[str, str]) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        found[where or "."] = str(obj)
        return None
    if isinstance(obj, dict):
        return {k: _nulls_for_non_finite(v, f"{where}.{k}" if where else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nulls_for_non_finite(v, f"{where}[{i}]", found) for i, v in enumerate(obj)]
    return obj


def save_image_grid(x: torch.Tensor, path: str | Path, *, nrow: int | None = None, scale: int = 1) -> Path:
    """Write images (n, C, H, W) in [-1, 1] as one PNG grid (1-pixel gaps), enlarged ``scale``×
    by pixel repetition (small images stay sharp)."""
    import torch
    from PIL import Image

    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = torch.full((c, ncol * (h + 1) + 1, nrow * (w + 1) + 1), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(arr[..., 0] if c == 1 else arr[..., :3])
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    image.save(path)
    return path


def save_audio(x: torch.Tensor, folder: str | Path, sample_rate: int, *, prefix: str = "sample") -> list[Path]:
    """Write waveforms (n, 1, L) in [-1, 1] as 16-bit WAV files ``prefix-000.wav`` …"""
    import soundfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, wave in enumerate(x.detach().float().cpu().clamp(-1, 1)):
        path = folder / f"{prefix}-{i:03d}.wav"
        soundfile.write(str(path), wave.reshape(-1).numpy(), sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


__all__ = ["check_folder", "folder_arg", "newest_step",
           "read_json", "save_audio", "save_image_grid", "step_name", "step_of", "write_json"]
