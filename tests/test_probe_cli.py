"""``specreg probe RUN_DIR``: the files it writes, for a pixel and a latent run; one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from specreg.cli import main
from specreg.train.config import config_from_dict
from specreg.train.trainer import Trainer


def _run(tmp_path, name: str, **extra):
    raw = {"data": {"kind": "checkerboard", "size": 16, "n": 40},
           "model": {"kind": "unet", "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1},
           "diffusion": {"kind": "edm"},
           "train": {"steps": 2, "batch_size": 8, "log_every": 1, "checkpoint_every": 2, "threads": 1,
                     "tensorboard": False, "progress_bar": False},
           "sample": {"n": 4, "steps": 3}}
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    Trainer(config_from_dict(raw), tmp_path / name).fit()
    return tmp_path / name


def test_probe_writes_a_self_describing_record_and_figures(tmp_path, capsys):
    run = _run(tmp_path, "pix", regularizer={"loss": "fourier_l2", "lam": "edm", "options": {"weights": "power"}})
    out = tmp_path / "probe"
    assert main(["probe", str(run), "--out", str(out), "--n", "12", "--sigmas", "5", "--bands", "3"]) == 0
    record = json.loads((out / "probe.json").read_text())
    assert len(record["axes"]["sigma"]) == 5 and len(record["axes"]["band_edges"]) == 4
    model = record["spaces"]["model"]
    assert np.asarray(model["ratio"]).shape == (5, 3) and record["step"] == 2
    weight = record["training_weight"]
    assert np.all(np.asarray(weight["spectral"]) > 0)  # the run's regularizer is in the weight
    assert (out / "probe.png").stat().st_size > 0
    assert "| band (cycles/sample) |" in (out / "probe.md").read_text()
    assert "wrote probe.json" in capsys.readouterr().out


def test_probe_of_a_latent_run_has_a_decoded_map(tmp_path):
    run = _run(tmp_path, "lat", autoencoder={"name": "fashion_vae"})
    out = tmp_path / "probe"
    assert main(["probe", str(run), "--out", str(out), "--n", "8", "--sigmas", "3", "--bands", "2"]) == 0
    record = json.loads((out / "probe.json").read_text())
    assert set(record["spaces"]) == {"model", "decoded"}
    assert np.all(np.isfinite(np.asarray(record["spaces"]["decoded"]["w"])))


@pytest.mark.parametrize("args, words", [(["--n", "1"], "--n=1"), (["--sigmas", "1"], "--sigmas=1")])
def test_bad_arguments_are_one_line(tmp_path, capsys, args, words):
    run = _run(tmp_path, "pix")
    assert main(["probe", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1  # one line, no traceback


@pytest.mark.parametrize("kind, sampler", [("flow", "euler"), ("ddpm", "ddim")])
def test_probe_of_flow_and_ddpm_runs(tmp_path, kind, sampler):
    run = _run(tmp_path, kind, diffusion={"kind": kind}, sample={"sampler": sampler})
    out = tmp_path / "probe"
    assert main(["probe", str(run), "--out", str(out), "--n", "8", "--sigmas", "6", "--bands", "2"]) == 0
    record = json.loads((out / "probe.json").read_text())
    sigma = np.asarray(record["axes"]["sigma"])
    assert np.all(np.diff(sigma) > 0) and np.all(np.isfinite(np.asarray(record["spaces"]["model"]["e"])))
    if kind == "ddpm":  # the grid is made of the schedule's own noise levels
        from specreg.diffusion import DDPM

        table = DDPM("linear", timesteps=1000).sigma(torch.arange(1000)).numpy()
        assert np.all(np.isin(sigma, table))


def test_split_train_probes_the_run_s_own_training_items(tmp_path):
    """``--split train`` maps the items the run trained on (the data section built as training
    builds it), held out by default; a checkpoint other than the newest can be named; a map on
    training items is never taken for the study's held-out map."""
    from specreg.data.registry import build_dataset, held_out_dataset
    from specreg.experiments.probe import probe_items
    from specreg.experiments.study_probe import _cached
    from specreg.train.config import load_config

    run = _run(tmp_path, "pix", data={"kind": "textures"},
               train={"steps": 4})
    cfg = load_config(run / "config.yaml")
    train = torch.stack([x for x, *_ in build_dataset(cfg.data)])
    held = torch.stack([x for x, *_ in held_out_dataset(cfg.data)[0]])

    def rows_of(x0, pool):  # each item's row in pool, -1 where it is none of them
        match = (x0.flatten(1)[:, None] == pool.flatten(1)[None]).all(-1)
        return [int(m.nonzero()[0]) if m.any() else -1 for m in match]

    x_train, _, what = probe_items(cfg, 8, seed=3, split="train")
    x_held, _, _ = probe_items(cfg, 8, seed=3)
    assert min(rows_of(x_train, train)) >= 0 and len(set(rows_of(x_train, train))) == 8
    assert rows_of(x_held, train) == [-1] * 8 and min(rows_of(x_held, held)) >= 0
    assert what == "8 items from the run's own training items (data.kind=textures, n=40)"
    with pytest.raises(ValueError, match=r"split='test' is not accepted; expected one of \['held-out', 'train'\]"):
        probe_items(cfg, 8, split="test")

    out = run / "probe"
    first = run / "checkpoints" / "step-00000002"
    assert main(["probe", str(run), "--n", "8", "--sigmas", "3", "--bands", "2", "--split", "train",
                 "--checkpoint", str(first)]) == 0
    record = json.loads((out / "probe.json").read_text())
    assert record["settings"]["split"] == "train" and record["step"] == 2
    assert _cached(run, n_items=8, n_sigma=3, checkpoint=first) is None  # not the study's held-out map
    assert main(["probe", str(run), "--n", "8", "--sigmas", "3", "--bands", "2", "--checkpoint", str(first)]) == 0
    cached = _cached(run, n_items=8, n_sigma=3, checkpoint=first)
    assert cached is not None and cached["settings"]["split"] == "held-out"
    assert not np.allclose(cached["spaces"]["model"]["e"], record["spaces"]["model"]["e"])
