"""Every study's ``full`` profile (the one meant for a GPU) builds and trains on a CPU, so a
config or shape error shows here before anyone pays for a GPU.

For each configs/studies/*.yaml: plan every run of the full profile (every variant's
config resolved and checked), build every variant's regularizer, then train 2 steps of the
full profile's network at batch 1 on a few items of its data set — the pretrained model,
and for protocol ``finetune`` one regularized variant fine-tuned from it — and draw one
sample with 2 sampler steps from the trained weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from specreg.experiments.plan import RunSpec, plan_runs
from specreg.experiments.runner import pretrained_net
from specreg.experiments.study import load_study
from specreg.train.build import (
    build_autoencoder,
    build_dataset,
    build_regularizer,
    conditioning_for_samples,
    generate,
    load_trained,
    spatial_ndim,
)
from specreg.train.checkpoint import CHECKPOINT_DIR, latest_weights
from specreg.train.config import config_from_dict
from specreg.train.trainer import Trainer

STUDIES = sorted((Path(__file__).resolve().parents[1] / "configs" / "studies").glob("*.yaml"))
ITEMS = 4  # items of the data set the smoke runs train on


def smoke_config(spec: RunSpec, steps: int = 2, batch: int = 1):
    """The run's config cut to ``steps`` steps at a batch of at most ``batch``, quiet, one thread."""
    raw = json.loads(json.dumps(spec.config))
    t = raw["train"]
    t.update(steps=steps, batch_size=min(batch, t["batch_size"]), grad_accum=1, warmup_steps=0, threads=1,
             progress_bar=False, tensorboard=False, sample_every=0, log_every=1, checkpoint_every=steps)
    raw["data"]["n"] = min(raw["data"]["n"], ITEMS)
    raw["sample"]["steps"] = 2
    return config_from_dict(raw)


def test_every_study_is_found():
    assert len(STUDIES) >= 10 and any(p.stem == "resolution_textures_64" for p in STUDIES)


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_full_profile_trains_two_steps_and_samples_on_a_cpu(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECREG_CACHE", str(tmp_path / "cache"))  # latents of the few items, not ~/.cache
    study = load_study(path, "full")
    specs = plan_runs(study, tmp_path / "study")  # raises on a bad override of any variant
    runs = [s for s in specs if s.protocol != "pretrain"]
    assert {s.variant for s in runs} == {v.name for v in study.variants}

    cfg0 = config_from_dict(runs[0].config)
    autoencoder = build_autoencoder(cfg0)
    seen = set()
    for spec in runs:  # every variant's regularizer builds (loss name, options, λ policy)
        reg = spec.config["regularizer"]
        if json.dumps(reg, sort_keys=True) in seen:
            continue
        seen.add(json.dumps(reg, sort_keys=True))
        cfg = config_from_dict(spec.config)
        build_regularizer(cfg.regularizer, ndim=spatial_ndim(cfg), sigma_data=cfg.diffusion.sigma_data,
                          autoencoder=autoencoder)

    regularized = [s for s in runs if s.config["regularizer"]["loss"] is not None]
    if any(s.protocol == "finetune" for s in runs):
        first = next(s for s in specs if s.protocol == "pretrain")
        second = next((s for s in regularized if s.protocol == "finetune"), None)
        chosen = [first, *([second] if second else [])]
    else:
        chosen = [regularized[0] if regularized else runs[0]]

    data = None
    for spec in chosen:
        cfg = smoke_config(spec)
        if data is None:
            data = Subset(build_dataset(cfg.data), range(ITEMS))
        net = None
        if spec.protocol == "finetune":
            _, weights, _ = latest_weights(spec.pretrain_dir / CHECKPOINT_DIR)
            net = pretrained_net(cfg, weights)  # the pretrained model's shapes fit the fine-tuning's
        result = Trainer(cfg, spec.run_dir, dataset=data, net=net).fit()
        assert result.step == 2
        assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)

        cfg_s, model, formulation, step = load_trained(spec.run_dir)
        assert step == 2 and cfg_s.sample.steps == 2
        kw = conditioning_for_samples(cfg_s, 1, data if cfg_s.data.is_audio else None)
        x = generate(cfg_s, formulation, model, 1, generator=torch.Generator().manual_seed(0), model_kwargs=kw)
        assert x.shape[0] == 1 and torch.isfinite(x).all()
        if not cfg_s.data.is_audio:
            assert tuple(x.shape[-2:]) == (cfg_s.data.size, cfg_s.data.size)
    assert dataclasses.is_dataclass(cfg0)
