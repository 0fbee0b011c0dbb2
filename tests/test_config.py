"""Config loading: built-ins, checks with helpful errors, dotted overrides, saving."""

from __future__ import annotations

import pytest
import yaml

from specreg.train.config import (
    CONFIG_FILE,
    Config,
    apply_overrides,
    builtin_configs,
    config_from_dict,
    load_config,
    parse_override,
)


def test_builtin_configs_load():
    assert builtin_configs() == ["checkerboard", "demo", "fashion32", "speech-vocoder", "textures64"]
    for name in builtin_configs():
        cfg = load_config(name)
        assert isinstance(cfg, Config)
    assert load_config("speech-vocoder").model.kind == "diffwave"
    assert load_config("demo").diffusion.kind == "edm"
    assert load_config("demo").data.kind == "textures"


def test_overrides_typed_as_yaml():
    cfg = load_config("demo", ["train.steps=200", "regularizer.loss=fourier_ap", "regularizer.lam=edm",
                               "diffusion.kind=edm", "train.lr=3e-4", "model.channel_mult=[1, 2]",
                               "regularizer.options={wavelet: haar, levels: 3}", "train.grad_clip=null",
                               "train.progress_bar=false"])
    assert cfg.train.steps == 200 and type(cfg.train.steps) is int
    assert cfg.regularizer.loss == "fourier_ap"
    assert cfg.regularizer.lam == "edm"
    assert cfg.train.lr == pytest.approx(3e-4) and type(cfg.train.lr) is float
    assert cfg.model.channel_mult == [1, 2]
    assert cfg.regularizer.options == {"wavelet": "haar", "levels": 3}
    assert cfg.train.grad_clip is None
    assert cfg.train.progress_bar is False


def test_numeric_lam_and_int_for_float():
    cfg = load_config("demo", ["regularizer.lam=1", "train.ema_decay=0"])
    assert cfg.regularizer.lam == 1.0 and isinstance(cfg.regularizer.lam, float)
    assert cfg.train.ema_decay == 0.0


def test_loss_none_means_baseline():
    assert load_config("demo", ["regularizer.loss=none"]).regularizer.loss is None
    assert load_config("demo", ["regularizer.loss=null"]).regularizer.loss is None


def test_override_does_not_touch_input():
    raw = {"train": {"steps": 5}}
    out = apply_overrides(raw, ["train.steps=7"])
    assert raw == {"train": {"steps": 5}} and out == {"train": {"steps": 7}}


@pytest.mark.parametrize("override, words", [
    ("train.stpes=3", ["train.stpes", "steps", "batch_size"]),
    ("trian.steps=3", ["trian", "train", "regularizer"]),
    ("train.steps=abc", ["train.steps", "integer"]),
    ("train.steps=true", ["train.steps", "integer"]),
    ("train.steps=2.5", ["train.steps", "integer"]),
    ("train.lr=fast", ["train.lr", "number"]),
    ("diffusion.kind=score", ["diffusion.kind", "edm", "ddpm", "flow"]),
    ("regularizer.loss=fourier", ["regularizer.loss", "fourier_ap", "wavelet"]),
    ("regularizer.lam=big", ["regularizer.lam", "edm", "snr"]),
    ("regularizer.lam=-1", ["regularizer.lam", ">= 0"]),
    ("model.channel_mult=[1, x]", ["model.channel_mult[1]", "integer"]),
    ("regularizer.options=3", ["regularizer.options", "mapping"]),
    ("train.batch_size=0", ["train.batch_size", "> 0"]),
    ("train.ema_decay=1.5", ["train.ema_decay"]),
    ("sample.sampler=ddim", ["sample.sampler", "heun"]),
    ("model.kind=diffwave", ["model.kind", "data.kind"]),
    # non-finite numbers and Adam's betas: named by their key, not by torch
    ("train.lr=.inf", ["train.lr=inf", "finite number > 0"]),
    ("train.lr=.nan", ["train.lr=nan", "finite number > 0"]),
    ("train.weight_decay=nan", ["train.weight_decay=nan", "finite number >= 0"]),
    ("train.betas=[2, 0.999]", ["train.betas=[2.0, 0.999]", "0 <= β < 1"]),
    ("train.betas=[0.9, -0.1]", ["train.betas", "0 <= β < 1"]),
    ("diffusion.sigma_data=.inf", ["diffusion.sigma_data", "finite"]),
    ("regularizer.lam=.nan", ["regularizer.lam=nan", "finite number >= 0"]),
    ("regularizer.sigma_max=.nan", ["regularizer.sigma_max=nan", "finite"]),
    ("regularizer.snr_gamma=0", ["regularizer.snr_gamma=0", "> 0"]),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ValueError) as info:
        load_config("demo", [override])
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("text", ["train.steps", "steps=3", "=3"])
def test_bad_override_syntax(text):
    with pytest.raises(ValueError, match="section.key=value"):
        parse_override(text)


def test_unknown_config_name_lists_builtins():
    with pytest.raises(ValueError, match="demo"):
        load_config("no-such-config")


def test_yaml_file_and_run_dir(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 7\n  batch_size: 4\nregularizer:\n  loss: wavelet\n  lam: 0.1\n")
    cfg = load_config(path)
    assert (cfg.train.steps, cfg.train.batch_size, cfg.regularizer.loss) == (7, 4, "wavelet")
    assert cfg.model == Config().model  # missing sections take the defaults
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 7\n  colour: red\n")
    with pytest.raises(ValueError, match="train.colour"):
        load_config(bad)


def test_save_writes_every_resolved_value(tmp_path):
    cfg = load_config("demo", ["train.steps=11", "regularizer.loss=fourier_ap"])
    path = cfg.save(tmp_path)
    assert path == tmp_path / CONFIG_FILE
    raw = yaml.safe_load(path.read_text())  # read back with plain YAML, not our loader
    assert raw["train"]["steps"] == 11
    assert raw["regularizer"]["loss"] == "fourier_ap"
    assert set(raw) == {"data", "model", "diffusion", "regularizer", "autoencoder", "train", "sample"}
    assert set(raw["train"]) >= {"lr", "ema_decay", "checkpoint_every", "seed"}
    assert config_from_dict(raw) == cfg
    assert load_config(tmp_path) == cfg  # a run directory is accepted too
