"""``scripts/carry_study.py``: a study carried part-way to a fresh folder goes on there
(finished runs stay done, an unfinished one resumes, a missing one starts from the carried
pretrained weights) and ends with the numbers the uncarried study measured."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from specreg.experiments.compare import plan_runs, run_compare
from specreg.experiments.study import load_study
from specreg.layout import read_run_record
from specreg.train.checkpoint import list_checkpoints, load_weights

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.n=64", "model.model_channels=8", "model.channel_mult=[1, 2]", "train.batch_size=8",
        "train.warmup_steps=0", "train.log_every=1", "train.checkpoint_every=50", "train.tensorboard=false",
        "train.progress_bar=false", "sample.steps=3"]


def carry_module():
    spec = importlib.util.spec_from_file_location("carry_study", ROOT / "scripts" / "carry_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_carried_study_resumes_and_measures_what_the_uncarried_one_did(tmp_path, monkeypatch):
    study = {"name": "tiny", "base": "demo", "overrides": TINY, "seeds": [0], "baseline": "baseline",
             "protocol": "finetune", "finetune": {"steps": 2},
             "variants": [{"name": "baseline"}, {"name": "haar", "overrides": ["regularizer.loss=haar"]},
                          {"name": "amp", "overrides": ["regularizer.loss=fourier_amp"]}],
             "evaluation": {"reference": "textures", "n_samples": 8, "n_reference": 16, "metrics": ["lsd"],
                            "columns": ["lsd"], "probe_items": 0},
             "profiles": {"tiny": {"overrides": ["train.steps=3"]}}}
    out = tmp_path / "results" / "tiny"
    first = run_compare(study, out, "tiny")
    by = {s.variant: s for s in first.runs}
    measured = {v: read_run_record(s.run_dir).metrics["lsd"] for v, s in by.items() if s.protocol == "finetune"}
    # the sitting ends part-way: haar trained but was not measured, amp never started
    (by["haar"].run_dir / "run.json").unlink()
    shutil.rmtree(by["amp"].run_dir)

    carried = tmp_path / "carry" / "tiny"
    monkeypatch.setattr("sys.argv", ["carry_study.py", str(out), str(carried)])
    carry_module().main()

    def rel(p: Path) -> Path:
        return p.relative_to(out)

    pretrain = next(s for s in first.runs if s.protocol == "pretrain")
    pre = carried / rel(list_checkpoints(pretrain.run_dir / "checkpoints")[-1])
    assert sorted(p.name for p in pre.iterdir()) == ["manifest.json", "model.safetensors", "state.json"]
    load_weights(pre)  # weights alone pass the manifest check
    haar_ckpt = carried / rel(list_checkpoints(by["haar"].run_dir / "checkpoints")[-1])
    assert (haar_ckpt / "optimizer.safetensors").is_file()  # whole: it resumes
    assert not (carried / rel(by["baseline"].run_dir) / "checkpoints").exists()  # done: record only
    base_eval = carried / rel(by["baseline"].run_dir) / "eval"
    assert sorted(p.name for p in base_eval.iterdir()) == ["samples.png"]
    assert "eval/samples" in (carried / "MANIFEST.txt").read_text()

    fresh = tmp_path / "elsewhere" / "tiny"
    shutil.copytree(carried, fresh)
    planned = {s.variant: s.status for s in plan_runs(load_study(study, "tiny"), fresh)}
    assert planned == {pretrain.variant: "done", "baseline": "done", "haar": "resume", "amp": "new"}
    again = run_compare(study, fresh, "tiny")
    for spec in again.runs:
        if spec.protocol == "finetune":
            assert read_run_record(spec.run_dir).metrics["lsd"] == pytest.approx(measured[spec.variant], rel=1e-6)


def test_a_folder_without_runs_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["carry_study.py", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"study=.* has no runs/ folder; pass results/<name>"):
        carry_module().main()
