"""Rough edges found by the adversarial run of issue 29: checkpoints that are not what
their name says, long or lossy messages, pixel scaling, JSON validity, λ and band-weight
edge cases, file modes. Each test failed before its fix."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat

import numpy as np
import pytest
import torch
from _tiny import tiny_config
from PIL import Image

from specreg.train.checkpoint import latest_weights, list_checkpoints, load_checkpoint, verify
from specreg.train.config import config_from_dict
from specreg.train.trainer import Trainer

TINY = tiny_config(steps=4, checkpoint_every=2, sample_steps=2)


def _cfg(steps: int):
    return config_from_dict({**TINY, "train": {**TINY["train"], "steps": steps}})


@pytest.fixture
def run(tmp_path):
    Trainer(_cfg(4), tmp_path / "run").fit()  # checkpoints 2 and 4
    return tmp_path / "run"


# --------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_checkpoint_folder_replaced_by_a_file_or_link_is_named_and_set_aside(run, kind, capsys):
    ckpts = run / "checkpoints"
    newest = ckpts / "step-00000004"
    shutil.move(newest, run / "moved")
    if kind == "file":
        newest.write_text("not a checkpoint")
    else:
        newest.symlink_to(run / "moved", target_is_directory=True)
    capsys.readouterr()
    result = Trainer(_cfg(6), run).fit()
    err = capsys.readouterr().err
    assert result.resumed_from == 2
    what = "file" if kind == "file" else "symbolic link"
    assert f"skipping checkpoint {newest} is not a folder but a {what}" in err
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["corrupt-step-00000004", "step-00000004", "step-00000006"], names
    assert not (ckpts / "step-00000004").is_symlink() and load_checkpoint(ckpts / "step-00000004").step == 4
    assert (run / "moved" / "model.safetensors").is_file()  # a link is never followed when deleting


def test_a_copy_renamed_to_a_later_step_is_refused_and_the_real_one_kept(run, capsys):
    ckpts = run / "checkpoints"
    shutil.copytree(ckpts / "step-00000002", ckpts / "step-00000009")
    with pytest.raises(ValueError, match="holds step 2 under the name of step 9"):
        load_checkpoint(ckpts / "step-00000009")
    path, _, skipped = latest_weights(ckpts)  # what `specreg sample` reads
    assert path.name == "step-00000004" and "holds step 2 under the name of step 9" in skipped[0][1]
    capsys.readouterr()
    result = Trainer(_cfg(6), run).fit()
    assert result.resumed_from == 4  # the real newest one, not the copy under the wrong step
    assert "holds step 2 under the name of step 9" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-00000004", "step-00000006"]
    assert (ckpts / "corrupt-step-00000009").is_dir()


def test_a_manifest_with_an_invalid_utf8_byte_is_a_short_line(run):
    manifest = run / "checkpoints" / "step-00000004" / "manifest.json"
    manifest.write_bytes(b"\xff" + manifest.read_bytes()[1:])
    with pytest.raises(ValueError) as info:
        verify(manifest.parent)
    assert "manifest.json is damaged (not UTF-8 at byte 0)" in str(info.value)
    assert len(str(info.value)) < 200


# --------------------------------------------------------------------------- data and eval inputs

def test_sixteen_bit_pngs_are_scaled_by_their_bit_depth(tmp_path):
    from specreg.data.images import ImageFolder

    ramp = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)  # 0 … 65535 over the image
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode.startswith("I")
    x = ImageFolder(tmp_path, size=16)[0][0]
    expected = np.rint(ramp / 65535 * 255) / 127.5 - 1
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-6)
    assert float((x == 1).float().mean()) < 0.01  # was 99 % clipped to +1


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16])
def test_integer_pixels_are_rescaled_like_uint8(tmp_path, dtype):
    from specreg.experiments.loading import load_samples

    pixels = np.random.default_rng(0).integers(0, 256, (3, 1, 8, 8))
    np.save(tmp_path / "wide.npy", pixels.astype(dtype))
    np.save(tmp_path / "byte.npy", pixels.astype(np.uint8))
    wide, byte = load_samples(tmp_path / "wide.npy")["x"], load_samples(tmp_path / "byte.npy")["x"]
    assert torch.equal(wide, byte) and float(wide.max()) <= 1


def test_integers_that_are_neither_pixels_nor_pcm_are_refused(tmp_path):
    from specreg.experiments.loading import load_samples

    np.save(tmp_path / "x.npy", np.full((2, 1, 4, 4), 300, np.int64))
    with pytest.raises(ValueError, match="int64 with values 300 … 300"):
        load_samples(tmp_path / "x.npy")


def test_non_finite_numbers_are_written_as_valid_json(tmp_path):
    from specreg.files import write_json

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))

    path = write_json(tmp_path / "m.json", {"metrics": {"lsd": math.inf, "fd": 1.5, "kid": [math.nan]}},
                      finite=True)
    data = strict(path.read_text())
    assert data["metrics"] == {"lsd": None, "fd": 1.5, "kid": [None]}
    assert data["non_finite"] == {"metrics.lsd": "inf", "metrics.kid[0]": "nan"}


def test_json_outputs_get_the_mode_of_a_new_file(tmp_path):
    from specreg.files import write_atomic, write_json

    old = os.umask(0o022)
    try:
        a = write_json(tmp_path / "a.json", {"x": 1})
        b = write_atomic(tmp_path / "b.txt", "x")
        os.umask(0o002)
        c = write_json(tmp_path / "c.json", [])
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (a, b, c)] == [0o644, 0o644, 0o664]


# --------------------------------------------------------------------------- λ and band weights

def test_a_constant_lam_beyond_the_cap_and_a_bool_are_refused():
    from specreg.regularizer import LAM_MAX, SpectralRegularizer

    with pytest.raises(ValueError, match=r"lam=1000000000.0 .* expected a constant λ <= 1e\+08"):
        SpectralRegularizer("fourier_amp", lam=1e9)
    with pytest.raises(ValueError, match="lam=.* lam_scale=4"):
        SpectralRegularizer("fourier_amp", lam=LAM_MAX, lam_scale=4)
    with pytest.raises(ValueError, match="lam=True is not accepted"):
        SpectralRegularizer("fourier_amp", lam=True)
    assert SpectralRegularizer("fourier_amp", lam=LAM_MAX).lam == LAM_MAX  # the cap itself is fine


def test_auto_lambda_refuses_a_diffusion_loss_of_the_wrong_length_and_stays_non_negative():
    from specreg.regularizer import AutoLambda, SpectralRegularizer

    reg = SpectralRegularizer("fourier_amp", lam=AutoLambda())
    x0, x0_hat = torch.zeros(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"diffusion_loss has shape \(3,\) for a batch of 2"):
        reg(x0_hat, x0, diffusion_loss=torch.ones(3))
    out = reg(x0_hat, x0, diffusion_loss=-torch.ones(2))
    assert bool((out.lam >= 0).all()) and bool((out.value >= 0).all())


def test_a_first_batch_with_zero_error_gives_bounded_band_weights():
    from specreg.regularizer import BandWeights

    head = BandWeights(3)
    head.initialize(torch.zeros(4, 3))
    assert torch.equal(head.linear.bias.detach(), torch.zeros(3))
    head = BandWeights(3)
    head.initialize(torch.tensor([[1.0, 0.0, 1e-3]]))
    expected = torch.tensor([0.0, math.log(1e-6), math.log(1e-3)])
    torch.testing.assert_close(head.linear.bias.detach(), expected)


def test_a_long_message_is_cut_to_one_line():
    from specreg.cli import _one_line

    text = "start " + "\n".join(f"key.{i} differs" for i in range(200)) + " end"
    line = _one_line(text)
    assert len(line) <= 400 and "\n" not in line and line.startswith("start key.0") and line.endswith(" end")
    assert _one_line("short\nmessage") == "short message"
