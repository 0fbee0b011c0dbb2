"""Atomic writes (specreg.files.write_atomic), which every JSON record, the latent cache
and the Fashion-MNIST download go through."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from specreg import files


def test_write_atomic_writes_text_and_bytes_and_leaves_no_temporary(tmp_path: Path) -> None:
    files.write_atomic(tmp_path / "sub" / "a.txt", "ümlaut\n")
    files.write_atomic(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "ümlaut\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.txt", "b.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = files.write_json(tmp_path / "r.json", {"v": 1})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        files.write_json(path, {"v": 2})
    assert files.read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_concurrent_writers_never_leave_a_mixed_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    payloads = [{"writer": k, "data": [k] * 20_000} for k in range(4)]

    def write(k: int) -> None:
        for _ in range(10):
            files.write_json(path, payloads[k])

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(path.read_text()) in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


def test_latent_cache_is_written_once_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LatentDataset encodes once, writes the cache atomically, and a second instance
    reads the same latents without calling the encoder."""
    import torch
    from torch.utils.data import TensorDataset

    from specreg.models.vae import ConvVAE
    from specreg.train.build import LatentDataset

    monkeypatch.setenv("SPECREG_CACHE", str(tmp_path))
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(6, 1, 16, 16) * 2 - 1, torch.arange(6))
    vae = ConvVAE(channels=(4, 4, 4)).eval()
    first = LatentDataset(data, vae, key="k", batch_size=4)
    with torch.no_grad():
        assert torch.allclose(first.latents, vae.latents(data.tensors[0]), atol=1e-5)
    cache = tmp_path / "latents" / "k.safetensors"
    assert [p.name for p in cache.parent.iterdir()] == ["k.safetensors"]

    monkeypatch.setattr(ConvVAE, "latents", lambda self, x: pytest.fail("encoded again"))
    second = LatentDataset(data, vae, key="k")
    assert torch.equal(second.latents, first.latents)
    assert second[3][1] == 3
