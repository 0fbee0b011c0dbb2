"""Checkpoints that survive a kill at any moment and load without unpickling.

One checkpoint is a directory ``checkpoints/step-00001000/`` holding

* ``model.safetensors``     weights of the model (``model.*``) and of its EMA (``ema.*``);
* ``optimizer.safetensors`` every tensor of the optimizer state (``state.<param>.<name>``);
* ``state.safetensors``     torch's CPU (and CUDA) generator states (``rng.*``) and the
                            regularizer's buffers (``regularizer.*``, e.g. AutoLambda's EMAs);
* ``state.json``            step, resolved config, the optimizer's non-tensor state and
                            param groups, python/numpy RNG states, data-loader position;
* ``manifest.json``         the size and SHA-256 of each file above, taken when it was written.

Nothing is pickled: safetensors and JSON cannot run code when read, so a checkpoint
from an untrusted source is safe to open.

Integrity: every load checks the files it reads against ``manifest.json`` first, so a
checkpoint changed after it was written (zeroed blocks, flipped bits, a NaN patched into
the weights, a truncated copy) is refused with ``ValueError`` like one that does not
parse, and :func:`find_latest` falls back to the one before; so is a checkpoint whose
stored step differs from its name (a copy renamed to another step), and a ``step-…``
entry that is a file or a symbolic link is reported, not skipped silently. Checkpoints written before
manifests existed (format 1) load unchecked. Every file gets the mode of a newly created
file (0666 minus the umask), like every other output of a run.

(Over 400 lines: writing, verifying and loading are one format, kept together so the
manifest rule cannot drift between the writer and the readers.)

Atomicity: the files are written and fsynced inside a hidden temporary directory next
to the final one, which is then renamed into place (``os.replace`` on a directory is a
single atomic rename on POSIX), and the parent is fsynced. A process killed during a
write leaves only a stale ``.tmp-*`` directory, which is ignored and cleaned up later;
the previous checkpoint is never touched before the new one is complete. Old
checkpoints beyond ``keep`` are first renamed aside, then deleted, so a kill while
pruning never leaves a half-deleted directory that looks like a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from specreg.files import STEP_PREFIX, step_name, step_of
from specreg.layout import (
    CHECKPOINT_DIR as CHECKPOINT_DIR,  # where a run keeps them; imported from here too
    CHECKPOINT_MANIFEST as MANIFEST,
    CHECKPOINT_MODEL,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_PAYLOAD as PAYLOAD,
    CHECKPOINT_STATE,
    CHECKPOINT_TENSORS,
)

PREFIX = STEP_PREFIX
FILES = (*PAYLOAD, MANIFEST)
FORMAT_VERSION = 2  # 2: with manifest.json; 1 (no manifest) is still read
CORRUPT_PREFIX = "corrupt-"  # a checkpoint set aside by set_aside() (not listed, never pruned)

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
    timesteps: dict[str, torch.Tensor] = field(default_factory=dict)


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    # legacy=True (the default) gives the (name, keys, pos, has_gauss, gauss) tuple of the global MT19937
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
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
    return step_name(step)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Committed checkpoint directories under ``root``, oldest first (by step). A
    ``step-…`` entry that is not a real directory (a file, a symbolic link) is not one:
    :func:`find_latest` reports it (:func:`stray_entries`)."""
    return [p for p in _step_entries(root) if _is_real_dir(p)]


def stray_entries(root: str | Path) -> list[tuple[Path, str]]:
    """``step-…`` entries under ``root`` that are not checkpoint folders, with the reason."""
    return [(p, f"checkpoint {p} is not a folder but a {'symbolic link' if p.is_symlink() else 'file'}; "
                "checkpoints are real folders, so it is not read")
            for p in _step_entries(root) if not _is_real_dir(p)]


def _step_entries(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if (step := step_of(p.name)) is not None]
    return [p for _, p in sorted(found)]


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


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
    timesteps: Mapping[str, torch.Tensor] | None = None,
    keep_every: int = 0,  # with keep: see prune_checkpoints
) -> Path:
    """Write a checkpoint for ``step`` atomically under ``root``, then prune; returns it.

    ``model``, ``ema`` are state dicts; ``optimizer`` is ``optimizer.state_dict()``;
    ``config`` the resolved config as a mapping; ``regularizer`` the regularizer's state
    dict (buffers such as AutoLambda's EMAs); ``data`` the data-loader position;
    ``timesteps`` the noise-level sampler's state (the adaptive sampler's running losses)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()

    weights = {f"model.{k}": v for k, v in model.items()}
    weights.update({f"ema.{k}": v for k, v in ema.items()})
    save_file(_tensors_for_disk(weights), str(tmp / CHECKPOINT_MODEL), metadata={"step": str(step)})
    _pause("during", step)
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    save_file(_tensors_for_disk(opt_tensors), str(tmp / CHECKPOINT_OPTIMIZER))
    rng_tensors, rng_meta = capture_rng()
    state_tensors = {f"rng.{k}": v for k, v in rng_tensors.items()}
    state_tensors.update({f"regularizer.{k}": v for k, v in (regularizer or {}).items()})
    state_tensors.update({f"timesteps.{k}": v for k, v in (timesteps or {}).items()})
    save_file(_tensors_for_disk(state_tensors), str(tmp / CHECKPOINT_TENSORS))
    state = {
        "format": FORMAT_VERSION, "step": step, "config": dict(config), "optimizer": opt_meta,
        "rng": rng_meta, "data": dict(data or {}), "extra": dict(extra or {}),
    }
    (tmp / CHECKPOINT_STATE).write_text(json.dumps(state))
    mode = stat.S_IMODE((tmp / CHECKPOINT_STATE).stat().st_mode)  # a new file's: 0666 minus the umask
    files = {}
    for name in PAYLOAD:
        os.chmod(tmp / name, mode)  # safetensors creates its files 0600
        _fsync_file(tmp / name)
        files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT_VERSION, "files": files}, indent=1))
    _fsync_file(tmp / MANIFEST)
    _fsync_dir(tmp)

    if final.exists():  # re-saving a step (e.g. training resumed from an older checkpoint)
        _discard(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune_checkpoints(root, keep, keep_every)
    _pause("after", step)
    return final


def _discard(path: Path) -> None:
    """Rename aside first (atomic), then delete: a half-deleted dir never looks valid."""
    trash = path.parent / f".del-{path.name}-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)
    _remove(trash)


def _remove(path: Path) -> None:
    if _is_real_dir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:  # a file or a symbolic link (never followed): rmtree refuses both
        path.unlink(missing_ok=True)


def prune_checkpoints(root: str | Path, keep: int, keep_every: int = 0) -> None:
    """Delete stale temporary entries and all checkpoints but the newest ``keep`` and those
    whose step is a multiple of ``keep_every`` (> 0)."""
    root = Path(root)
    for p in list_checkpoints(root)[:-keep] if keep > 0 else []:
        if not (keep_every > 0 and (step_of(p.name) or 0) % keep_every == 0):
            _discard(p)
    for p in root.iterdir():
        if p.name.startswith((".tmp-", ".del-")):
            _remove(p)


def verify(path: str | Path, names: tuple[str, ...] = PAYLOAD) -> None:
    """Check the files ``names`` of checkpoint ``path`` against its manifest (size, then
    SHA-256); raise ``ValueError`` naming the first that is missing or differs."""
    path = Path(path)
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: missing {missing}")
    if not (path / MANIFEST).is_file():
        try:
            legacy = json.loads((path / CHECKPOINT_STATE).read_text()).get("format") == 1
        except (OSError, ValueError, AttributeError):
            legacy = False
        if legacy:  # written before manifests existed: nothing to check against
            return
        raise ValueError(f"checkpoint {path} is incomplete: missing {[MANIFEST]}")
    try:
        recorded = json.loads((path / MANIFEST).read_text())["files"]
        expected = {n: (int(recorded[n]["bytes"]), str(recorded[n]["sha256"])) for n in names}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"checkpoint {path} is unreadable: its {MANIFEST} is damaged ({_brief(err)})") from None
    for name, (size, digest) in expected.items():
        found = (path / name).stat().st_size
        if found != size:
            raise ValueError(f"checkpoint {path} is unreadable: {name} has {found} bytes but {size} were written "
                             "(cut short or overwritten)")
        if _sha256(path / name) != digest:
            raise ValueError(f"checkpoint {path} is unreadable: {name} does not match the SHA-256 taken when it "
                             "was written (changed on disk since)")


def _brief(err: Exception) -> str:
    """An error in a few words (a UnicodeDecodeError's repr quotes the whole file)."""
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 at byte {err.start}"
    return f"{type(err).__name__}: {' '.join(str(err).split())[:100]}"


def _check_named_step(path: Path, stored: int | str | None) -> None:
    """A checkpoint renamed or copied to another step's name would resume under the wrong
    step (and get the real one pruned): the step stored inside it must match its name."""
    named = step_of(path.name)
    if stored is not None and named is not None and int(stored) != named:
        raise ValueError(f"checkpoint {path} is unreadable: it holds step {int(stored)} under the name of step "
                         f"{named} (renamed or copied?)")


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read one checkpoint directory; raise ``ValueError`` if it is incomplete or corrupt."""
    path = Path(path)
    verify(path)
    try:
        state = json.loads((path / CHECKPOINT_STATE).read_text())
        weights = load_file(str(path / CHECKPOINT_MODEL), device=str(map_location))
        opt_tensors = load_file(str(path / CHECKPOINT_OPTIMIZER), device=str(map_location))
        state_tensors = load_file(str(path / CHECKPOINT_TENSORS))
    except Exception as err:  # any parse error means the directory cannot be trusted
        raise ValueError(f"checkpoint {path} is unreadable: {err}") from None
    _check_named_step(path, state.get("step"))
    if state.get("format") not in (1, FORMAT_VERSION):
        raise ValueError(f"checkpoint {path} has format {state.get('format')!r}; this version reads "
                         f"1 … {FORMAT_VERSION}")
    model = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    ema = {k[len("ema."):]: v for k, v in weights.items() if k.startswith("ema.")}
    rng = {k[len("rng."):]: v for k, v in state_tensors.items() if k.startswith("rng.")}
    reg = {k[len("regularizer."):]: v for k, v in state_tensors.items() if k.startswith("regularizer.")}
    steps = {k[len("timesteps."):]: v for k, v in state_tensors.items() if k.startswith("timesteps.")}
    return Checkpoint(
        path=path, step=int(state["step"]), model=model, ema=ema,
        optimizer=optimizer_from_flat(opt_tensors, state["optimizer"]), config=state["config"],
        rng={"tensors": rng, "meta": state["rng"]}, regularizer=reg, data=state["data"], extra=state["extra"],
        timesteps=steps,
    )


def load_weights(path: str | Path, *, ema: bool = True) -> dict[str, torch.Tensor]:
    """Only the (EMA or raw) model weights of a checkpoint directory, for sampling; checked
    against the manifest, ``ValueError`` if incomplete or corrupt."""
    path = Path(path)
    verify(path, (CHECKPOINT_MODEL,))
    try:
        weights = load_file(str(path / CHECKPOINT_MODEL))
        with safe_open(str(path / CHECKPOINT_MODEL), framework="pt") as f:
            stored = (f.metadata() or {}).get("step")
    except Exception as err:  # any parse error means the file cannot be trusted
        raise ValueError(f"checkpoint {path} is unreadable: {err}") from None
    _check_named_step(path, stored)
    prefix = "ema." if ema else "model."
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def find_latest(root: str | Path) -> tuple[Checkpoint | None, list[tuple[Path, str]]]:
    """The newest checkpoint under ``root`` that loads (None if none does), and the newer
    ones skipped on the way as ``(path, reason)``."""
    skipped: list[tuple[Path, str]] = stray_entries(root)
    for path in reversed(list_checkpoints(root)):
        try:
            return load_checkpoint(path), skipped
        except ValueError as err:
            skipped.append((path, str(err)))
    return None, skipped


def latest_weights(root: str | Path, *, ema: bool = True
                   ) -> tuple[Path, dict[str, torch.Tensor], list[tuple[Path, str]]]:
    """The weights of the newest checkpoint under ``root`` that loads: ``(path, weights,
    skipped)``, skipped as in :func:`find_latest`; ``ValueError`` if none loads."""
    skipped: list[tuple[Path, str]] = stray_entries(root)
    for path in reversed(list_checkpoints(root)):
        try:
            return path, load_weights(path, ema=ema), skipped
        except ValueError as err:
            skipped.append((path, str(err)))
    if not skipped:
        raise ValueError(f"{root} holds no checkpoint; train first")
    raise ValueError(f"none of the {len(skipped)} checkpoints in {root} is readable (newest: {skipped[0][1]})")


def latest_checkpoint(root: str | Path) -> Checkpoint | None:
    """The newest checkpoint under ``root`` that loads; corrupt ones are skipped with a warning."""
    ckpt, skipped = find_latest(root)
    for _, reason in skipped:
        print(f"specreg: skipping {reason}", file=sys.stderr)
    return ckpt


def set_aside(path: str | Path) -> Path:
    """Rename an unreadable checkpoint to ``corrupt-step-…`` next to it: no longer listed, so
    neither resumed from nor counted by ``keep`` (a newer corrupt one would otherwise make
    pruning delete the good ones), but kept for inspection. Returns the new path."""
    path = Path(path)
    target = path.with_name(CORRUPT_PREFIX + path.name)
    if target.exists():
        target = path.with_name(f"{CORRUPT_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, target)
    return target
