"""Checkpoints: exact round trip without pickle, atomic writes, keep-last-k, corrupt skipping."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from specreg.train import checkpoint as ck


def _trained_pair(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)
    for _ in range(3):
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(root, step, model, opt, keep=3, **kw):
    return ck.save_checkpoint(root, step, model=model.state_dict(), ema=model.state_dict(),
                              optimizer=opt.state_dict(), config={"train": {"steps": 9}}, keep=keep, **kw)


def test_round_trip_continues_training_identically(tmp_path):
    model, opt = _trained_pair()
    path = _save(tmp_path, 3, model, opt, data={"samples_seen": 96},
                 regularizer={"ema_diffusion": torch.tensor(0.25, dtype=torch.float64)})
    loaded = ck.load_checkpoint(path)
    assert loaded.step == 3 and loaded.data == {"samples_seen": 96}
    assert loaded.config == {"train": {"steps": 9}}
    assert loaded.regularizer["ema_diffusion"].dtype == torch.float64
    # a fresh model/optimizer restored from disk takes the same next step as the original
    model2, opt2 = _trained_pair(seed=1)
    model2.load_state_dict(loaded.model)
    opt2.load_state_dict(loaded.optimizer)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (model2, opt2)):
        m(x).square().mean().backward()
        o.step()
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_files_are_safetensors_and_json_only(tmp_path, monkeypatch):
    model, opt = _trained_pair()
    path = _save(tmp_path, 1, model, opt)
    assert sorted(p.name for p in path.iterdir()) == sorted(ck.FILES)
    for name in ck.FILES:
        if name.endswith(".safetensors"):
            with safe_open(str(path / name), framework="pt") as f:
                assert len(list(f.keys())) > 0
        else:
            json.loads((path / name).read_text())
    # loading never goes through pickle
    import pickle

    def refuse(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert ck.load_checkpoint(path).step == 1


def test_rng_states_restore_every_generator():
    tensors, meta = ck.capture_rng()
    meta = json.loads(json.dumps(meta))  # what goes to disk is plain JSON
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), np.random.randn())
    ck.restore_rng(tensors, meta)
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), np.random.randn())
    assert first == again


def test_keep_last_k_and_listing(tmp_path):
    model, opt = _trained_pair()
    for step in (10, 20, 30, 40, 50):
        _save(tmp_path, step, model, opt, keep=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-00000040", "step-00000050"]
    assert ck.latest_checkpoint(tmp_path).step == 50
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = _trained_pair()
    _save(tmp_path, 10, model, opt)
    real = ck.save_file
    calls = []

    def failing(tensors, filename, metadata=None):
        calls.append(filename)
        if "optimizer" in filename:
            raise OSError("disk full")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ck, "save_file", failing)
    with pytest.raises(OSError):
        _save(tmp_path, 20, model, opt)
    assert calls  # the write really started
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-00000010"]
    assert ck.latest_checkpoint(tmp_path).step == 10
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # the debris of the failed write
    monkeypatch.setattr(ck, "save_file", real)
    _save(tmp_path, 20, model, opt)  # the next save cleans it up
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_corrupt_or_incomplete_newest_is_skipped(tmp_path):
    model, opt = _trained_pair()
    for step in (1, 2, 3):
        _save(tmp_path, step, model, opt)
    newest = tmp_path / "step-00000003"
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "step-00000002" / "state.json").unlink()
    with pytest.raises(ValueError, match="unreadable"):
        ck.load_checkpoint(newest)
    with pytest.raises(ValueError, match="incomplete"):
        ck.load_checkpoint(tmp_path / "step-00000002")
    assert ck.latest_checkpoint(tmp_path).step == 1
    assert ck.latest_checkpoint(tmp_path / "nothing-here") is None


def test_weights_only_loader(tmp_path):
    model, opt = _trained_pair()
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    path = ck.save_checkpoint(tmp_path, 5, model=model.state_dict(), ema=ema, optimizer=opt.state_dict(),
                              config={})
    raw = ck.load_weights(path, ema=False)
    assert all(torch.equal(raw[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(ck.load_weights(path)[k], v) for k, v in ema.items())


# --------------------------------------------------------------------------- integrity

def _zero_block(path, size=4096):
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start:start + size] = bytes(min(size, len(data) - start))
    path.write_bytes(bytes(data))


def _patch_nans(path, n=16):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    key = max(tensors, key=lambda k: tensors[k].numel())
    tensors[key].view(-1)[:n] = float("nan")
    save_file(tensors, str(path), metadata={"step": "3"})  # a well-formed file, other bytes


@pytest.mark.parametrize("damage", ["zeroed 4 KB", "16 NaNs", "truncated", "optimizer zeroed"])
def test_checkpoint_changed_after_writing_is_refused_and_skipped(tmp_path, damage):
    model, opt = _trained_pair()
    for step in (1, 2, 3):
        _save(tmp_path, step, model, opt)
    newest = tmp_path / "step-00000003"
    weights = newest / "model.safetensors"
    if damage == "zeroed 4 KB":
        _zero_block(weights)
    elif damage == "16 NaNs":
        _patch_nans(weights)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    else:
        _zero_block(newest / "optimizer.safetensors", 64)
    with pytest.raises(ValueError, match="unreadable: (model|optimizer).safetensors (does not match the SHA-256|has)"):
        ck.load_checkpoint(newest)
    ckpt, skipped = ck.find_latest(tmp_path)
    assert ckpt.step == 2 and [p.name for p, _ in skipped] == ["step-00000003"]
    if damage != "optimizer zeroed":  # sampling reads the weights only
        with pytest.raises(ValueError, match="unreadable"):
            ck.load_weights(newest)
    path, _, skipped = ck.latest_weights(tmp_path)
    assert path.name == ("step-00000003" if damage == "optimizer zeroed" else "step-00000002")


def test_manifest_records_every_file_and_one_file_mode(tmp_path):
    import hashlib
    import os
    import stat

    model, opt = _trained_pair()
    path = _save(tmp_path, 1, model, opt)
    manifest = json.loads((path / ck.MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(ck.PAYLOAD)
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    umask = os.umask(0)
    os.umask(umask)
    modes = {name: stat.S_IMODE((path / name).stat().st_mode) for name in ck.FILES}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # safetensors alone would write 0600


def test_format_1_checkpoints_without_manifest_still_load(tmp_path):
    model, opt = _trained_pair()
    path = _save(tmp_path, 4, model, opt)
    (path / ck.MANIFEST).unlink()
    state = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**state, "format": 1}))
    assert ck.load_checkpoint(path).step == 4
    assert ck.load_weights(path).keys() == model.state_dict().keys()
    # a format-2 checkpoint without its manifest is incomplete
    path5 = _save(tmp_path, 5, model, opt)
    (path5 / ck.MANIFEST).unlink()
    with pytest.raises(ValueError, match="incomplete: missing \\['manifest.json'\\]"):
        ck.load_checkpoint(path5)


def test_set_aside_hides_a_checkpoint_from_listing_and_pruning(tmp_path):
    model, opt = _trained_pair()
    for step in (1, 5):
        _save(tmp_path, step, model, opt, keep=2)
    moved = ck.set_aside(tmp_path / "step-00000005")
    assert moved.name == "corrupt-step-00000005" and moved.is_dir()
    _save(tmp_path, 2, model, opt, keep=2)
    _save(tmp_path, 3, model, opt, keep=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert moved.is_dir()  # never pruned


def test_keep_every_keeps_multiples_beyond_the_newest(tmp_path):
    """prune_checkpoints(keep, keep_every): the newest ``keep`` and every step that is a
    multiple of ``keep_every``; without keep_every only the newest (as before)."""
    from specreg.train.checkpoint import prune_checkpoints

    for keep_every, expected in ((3, ["step-00000003", "step-00000006", "step-00000007", "step-00000008"]),
                                 (0, ["step-00000007", "step-00000008"])):
        root = tmp_path / f"every{keep_every}"
        for step in range(1, 9):
            (root / f"step-{step:08d}").mkdir(parents=True)
        prune_checkpoints(root, 2, keep_every)
        assert sorted(p.name for p in root.iterdir()) == expected
