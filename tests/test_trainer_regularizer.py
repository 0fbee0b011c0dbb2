"""Regularizers with state of their own in training: learned band weights train with the
network and resume with it; a whitening spectrum is fitted from the data and checkpointed."""

from __future__ import annotations

import json

import torch

from specreg.train.checkpoint import latest_checkpoint
from specreg.train.config import config_from_dict
from specreg.train.trainer import Trainer

TINY = {
    "data": {"kind": "checkerboard", "size": 16, "n": 40},
    "model": {"kind": "unet", "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": []},
    "diffusion": {"kind": "edm"},
    "train": {"steps": 6, "batch_size": 8, "lr": 1e-2, "log_every": 1, "checkpoint_every": 3,
              "keep_checkpoints": 3, "threads": 1, "tensorboard": False, "progress_bar": False},
    "sample": {"n": 4, "steps": 3},
}


def cfg(steps: int, **regularizer) -> object:
    raw = json.loads(json.dumps(TINY))
    raw["train"]["steps"] = steps
    raw["regularizer"] = regularizer
    return config_from_dict(raw)


BANDS = {"loss": "fourier_l2", "options": {"bands": 3}, "band_weights": "learned", "lam": 1.0}


def test_learned_band_weights_train_checkpoint_and_resume_exactly(tmp_path):
    Trainer(cfg(6, **BANDS), tmp_path / "straight").fit()
    Trainer(cfg(3, **BANDS), tmp_path / "resumed").fit()
    result = Trainer(cfg(6, **BANDS), tmp_path / "resumed").fit()
    assert result.resumed_from == 3
    heads = [latest_checkpoint(tmp_path / d / "checkpoints").regularizer for d in ("straight", "resumed")]
    keys = [k for k in heads[0] if k.startswith("band_weights.linear")]
    assert keys and any(float(heads[0][k].abs().max()) > 0 for k in keys)  # they moved off 0
    for k in heads[0]:
        torch.testing.assert_close(heads[1][k], heads[0][k], rtol=0, atol=0)
    record = json.loads((tmp_path / "straight" / "band_weights.json").read_text())
    assert sorted(record["steps"], key=int) == ["3", "6"] and len(record["bands"]) == 3
    assert len(record["steps"]["6"]) == 3 and len(record["steps"]["6"][0]) == len(record["sigma"])
    assert (tmp_path / "straight" / "band_weights.png").stat().st_size > 0


def test_whitening_spectrum_is_fitted_on_the_data_and_checkpointed(tmp_path):
    Trainer(cfg(3, loss="fourier_l2", options={"weights": "whiten"}, lam="edm"), tmp_path / "w").fit()
    state = latest_checkpoint(tmp_path / "w" / "checkpoints").regularizer
    from specreg.data.images import Checkerboards
    from specreg.losses import FourierL2Loss

    data = Checkerboards(n=40, size=16, seed=0)
    expected = FourierL2Loss(weights="whiten").fit(torch.stack([data[i][0] for i in range(40)])).spectrum
    torch.testing.assert_close(state["loss.spectrum"], expected)  # the training data's spectrum, 9 rings


def test_a_checkpoint_without_the_new_regularizer_keys_still_resumes(tmp_path):
    """Config keys added later (lam_scale, fade, band_weights) count as their defaults when
    a checkpoint written before them is resumed."""
    run = tmp_path / "old"
    Trainer(cfg(3, loss="haar", lam=0.1), run).fit()
    ckpt = latest_checkpoint(run / "checkpoints")
    state = json.loads((ckpt.path / "state.json").read_text())
    for key in ("lam_scale", "fade_sigma", "fade_width", "band_weights"):
        state["config"]["regularizer"].pop(key)
    (ckpt.path / "state.json").write_text(json.dumps(state))
    manifest = ckpt.path / "manifest.json"  # as the older version would have written it
    if manifest.is_file():
        import hashlib

        record = json.loads(manifest.read_text())
        data = (ckpt.path / "state.json").read_bytes()
        record["files"]["state.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest.write_text(json.dumps(record))
    assert Trainer(cfg(6, loss="haar", lam=0.1), run).fit().resumed_from == 3
