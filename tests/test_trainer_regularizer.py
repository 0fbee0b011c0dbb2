"""Regularizers with state of their own in training: learned band weights train with the
network and resume with it; a whitening spectrum is fitted from the data and checkpointed;
any loss reaches the trainer through the TrainingExtras protocol (fit, parameters, logs)."""

from __future__ import annotations

import json

import torch

from specreg.losses import SpectralLoss
from specreg.losses.extras import LogRecord
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
    from specreg.metrics.plots import redraw_band_weights

    Trainer(cfg(6, **BANDS), tmp_path / "straight", on_checkpoint=redraw_band_weights).fit()
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
    assert (tmp_path / "straight" / "band_weights.png").stat().st_size > 0  # drawn by the caller's hook
    assert not (tmp_path / "resumed" / "band_weights.png").exists()  # the trainer draws nothing itself
    # the log record resumes too: the resumed run's file reads as the uninterrupted run's
    files = [(tmp_path / d / "band_weights.json").read_bytes() for d in ("straight", "resumed")]
    assert files[0] == files[1]


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


class _ToyExtras(SpectralLoss):
    """A loss with state of its own, reached only through the TrainingExtras members: fitted
    on the data (their mean), a trainable scale, and the scale logged at each checkpoint."""

    def __init__(self) -> None:
        super().__init__(ndim=2)
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.register_buffer("mean", torch.zeros(()))
        self.fitted_on = 0

    @property
    def needs_fit(self) -> bool:
        return self.fitted_on == 0

    def fit(self, x0: torch.Tensor) -> _ToyExtras:
        self.mean, self.fitted_on = x0.double().mean().to(self.mean), len(x0)
        return self

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.scale**2 * (x0_hat - x0).pow(2).flatten(1).mean(1) + (self.scale - 1.5) ** 2

    def log_records(self) -> list[LogRecord]:
        return [LogRecord("toy", float(self.scale.detach()), {"what": "scale"})]


def test_a_loss_with_state_of_its_own_is_fitted_trained_and_logged_through_the_protocol(tmp_path):
    from specreg.data.images import Checkerboards
    from specreg.regularizer import SpectralRegularizer

    loss, calls = _ToyExtras(), []
    Trainer(cfg(6), tmp_path, regularizer=SpectralRegularizer(loss, lam=1.0),
            on_checkpoint=lambda out, step: calls.append((out, step))).fit()
    data = Checkerboards(n=40, size=16, seed=0)
    assert loss.fitted_on == 40  # all 40 items (fewer than FIT_ITEMS), before training
    torch.testing.assert_close(loss.mean, torch.stack([data[i][0] for i in range(40)]).double().mean().float())
    assert float(loss.scale.detach()) != 1.0  # an extra parameter: the optimizer moved it
    state = latest_checkpoint(tmp_path / "checkpoints").regularizer
    torch.testing.assert_close(state["loss.scale"], loss.scale.detach())
    record = json.loads((tmp_path / "toy.json").read_text())
    assert record["what"] == "scale" and sorted(record["steps"], key=int) == ["3", "6"]
    assert record["steps"]["6"] == float(loss.scale.detach())
    assert calls == [(tmp_path, 3), (tmp_path, 6)]  # after each checkpoint
