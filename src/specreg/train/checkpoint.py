"""Checkpoints that survive a kill at any moment and load without unpickling.

One checkpoint is a directory ``checkpoints/step-00001000/`` holding

* ``model.safetensors``     weights of the model (``model.*``) and of its EMA (``ema.*``);
* ``optimizer.safetensors`` every tensor of the optimizer state (``state.<param>.<name>``);
* ``state.safetensors``     torch's CPU (and CUDA) generator states (``rng.*``) and the
                            regularizer's buffers (``regularizer.*``, e.g. AutoLambda's EMAs);
* ``state.json``            step, resolved config, the optimizer's non-tensor state and
                            param groups, python/numpy RNG states, data-loader position.

Nothing is pickled: safetensors and JSON cannot run code when read, so a checkpoint
from an untrusted source is safe to open.

Atomicity: the files are written and fsynced inside a hidden temporary directory next
to the final one, which is then renamed into place (``os.replace`` on a directory is a
single atomic rename on POSIX), and the parent is fsynced. A process killed during a
write leaves only a stale ``.tmp-*`` directory, which is ignored and cleaned up later;
the previous checkpoint is never touched before the new one is complete. Old
checkpoints beyond ``keep`` are first renamed aside, then deleted, so a kill while
pruning never leaves a half-deleted directory that looks like a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoints"
PREFIX = "step-"
FILES = ("model.safetensors", "optimizer.safetensors", "state.safetensors", "state.json")
FORMAT_VERSION = 1

# Test hook: "during:<step>" or "after:<step>" makes the writer announce itself on stderr
# and sleep, so a test can SIGKILL the process at a known point of the write.
_PAUSE_ENV = "SPECREG_TEST_PAUSE"


@dataclass
class Checkpoint:
    """Everything read back from one checkpoint directory."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    config: dict[str, Any]
    rng: dict[str, Any]
    regularizer: dict[str, torch.Tensor] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- file helpers

def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # Directory fsync makes a rename durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tensors_for_disk(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; a clone on CPU is neither
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def _pause(where: str, step: int) -> None:
    if os.environ.get(_PAUSE_ENV) == f"{where}:{step}":
        print(f"specreg-test-pause {where} {step}", file=sys.stderr, flush=True)
        time.sleep(600)


# --------------------------------------------------------------------------- optimizer

def optimizer_to_flat(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    groups = []
    for group in meta["param_groups"]:
        # JSON turns tuples into lists; Adam's betas are documented as a tuple
        groups.append({k: tuple(v) if k == "betas" else v for k, v in group.items()})
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------- RNG

def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The python, numpy and torch (CPU, CUDA) generator states: (tensors, JSON part)."""
    tensors = {"torch.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch.cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only where the devices exist)."""
    torch.set_rng_state(tensors["torch.cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# --------------------------------------------------------------------------- save / load

def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Committed checkpoint directories under ``root``, oldest first (by step)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit():
            found.append((int(p.name[len(PREFIX):]), p))
    return [p for _, p in sorted(found)]


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    model: Mapping[str, torch.Tensor],
    ema: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any],
    config: Mapping[str, Any],
    regularizer: Mapping[str, torch.Tensor] | None = None,
    data: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write a checkpoint for ``step`` atomically under ``root``; keep the newest ``keep``.

    ``model``, ``ema`` are state dicts; ``optimizer`` is ``optimizer.state_dict()``;
    ``config`` the resolved config as a mapping; ``regularizer`` the regularizer's state
    dict (buffers such as AutoLambda's EMAs); ``data`` the data-loader position.
    Returns the committed directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()

    weights = {f"model.{k}": v for k, v in model.items()}
    weights.update({f"ema.{k}": v for k, v in ema.items()})
    save_file(_tensors_for_disk(weights), str(tmp / "model.safetensors"), metadata={"step": str(step)})
    _pause("during", step)
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    save_file(_tensors_for_disk(opt_tensors), str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_meta = capture_rng()
    state_tensors = {f"rng.{k}": v for k, v in rng_tensors.items()}
    state_tensors.update({f"regularizer.{k}": v for k, v in (regularizer or {}).items()})
    save_file(_tensors_for_disk(state_tensors), str(tmp / "state.safetensors"))
    state = {
        "format": FORMAT_VERSION, "step": step, "config": dict(config), "optimizer": opt_meta,
        "rng": rng_meta, "data": dict(data or {}), "extra": dict(extra or {}),
    }
    (tmp / "state.json").write_text(json.dumps(state))
    for name in FILES:
        _fsync_file(tmp / name)
    _fsync_dir(tmp)

    if final.exists():  # re-saving a step (e.g. training resumed from an older checkpoint)
        _discard(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune_checkpoints(root, keep)
    _pause("after", step)
    return final


def _discard(path: Path) -> None:
    """Rename aside first (atomic), then delete: a half-deleted dir never looks valid."""
    trash = path.parent / f".del-{path.name}-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints and any stale temporary directories."""
    root = Path(root)
    for p in list_checkpoints(root)[:-keep] if keep > 0 else []:
        _discard(p)
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith((".tmp-", ".del-")):
            shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read one checkpoint directory; raise ``ValueError`` if it is incomplete or corrupt."""
    path = Path(path)
    missing = [n for n in FILES if not (path / n).is_file()]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: missing {missing}")
    try:
        state = json.loads((path / "state.json").read_text())
        weights = load_file(str(path / "model.safetensors"), device=str(map_location))
        opt_tensors = load_file(str(path / "optimizer.safetensors"), device=str(map_location))
        state_tensors = load_file(str(path / "state.safetensors"))
    except Exception as err:  # any parse error means the directory cannot be trusted
        raise ValueError(f"checkpoint {path} is unreadable: {err}") from None
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format {state.get('format')!r}; this version reads "
                         f"{FORMAT_VERSION}")
    model = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    ema = {k[len("ema."):]: v for k, v in weights.items() if k.startswith("ema.")}
    rng = {k[len("rng."):]: v for k, v in state_tensors.items() if k.startswith("rng.")}
    reg = {k[len("regularizer."):]: v for k, v in state_tensors.items() if k.startswith("regularizer.")}
    return Checkpoint(
        path=path, step=int(state["step"]), model=model, ema=ema,
        optimizer=optimizer_from_flat(opt_tensors, state["optimizer"]), config=state["config"],
        rng={"tensors": rng, "meta": state["rng"]}, regularizer=reg, data=state["data"], extra=state["extra"],
    )


def load_weights(path: str | Path, *, ema: bool = True) -> dict[str, torch.Tensor]:
    """Only the (EMA or raw) model weights of a checkpoint directory, for sampling."""
    prefix = "ema." if ema else "model."
    weights = load_file(str(Path(path) / "model.safetensors"))
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def latest_checkpoint(root: str | Path) -> Checkpoint | None:
    """The newest checkpoint under ``root`` that loads; corrupt ones are skipped with a warning."""
    for path in reversed(list_checkpoints(root)):
        try:
            return load_checkpoint(path)
        except ValueError as err:
            print(f"specreg: skipping {err}", file=sys.stderr)
    return None
