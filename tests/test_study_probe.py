"""The error maps in a study report (specreg.experiments.study_probe): a tiny study end to end,
the variant-against-baseline difference against the two probe.json files, the curve, and
settings that do not rename runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from specreg.experiments.compare import plan_runs, rerender, run_compare
from specreg.experiments.study import load_study
from specreg.experiments.study_probe import SECTION, difference

TINY = ["data.n=64", "model.model_channels=8", "model.channel_mult=[1, 2]", "train.batch_size=8",
        "train.warmup_steps=0", "train.log_every=1", "train.checkpoint_every=50", "train.tensorboard=false",
        "train.progress_bar=false", "sample.steps=3"]


def _study(tmp_path, **evaluation):
    study = {
        "name": "tiny", "base": "demo", "overrides": TINY, "seeds": [0], "baseline": "baseline",
        "variants": [{"name": "baseline"},
                     {"name": "low", "overrides": ["diffusion.timesteps_sampler={name: lognormal, P_mean: -2.5}"]}],
        "evaluation": {"reference": "textures", "n_samples": 8, "n_reference": 16, "metrics": ["lsd"],
                       "columns": ["lsd"], "probe_items": 16, "probe_sigmas": 4, "curve_every": 2,
                       "curve_samples": 4, **evaluation},
        "profiles": {"tiny": {"overrides": ["train.steps=4"]}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("study_probe")
    path = _study(tmp)
    run_compare(path, tmp / "out", "tiny")
    torch.set_num_threads(old)
    return path, tmp / "out"


def test_report_links_the_maps_and_the_difference_matches_the_records(study_run):
    _, out = study_run
    report = (out / "report.md").read_text()
    assert report.count(SECTION) == 1 and "probe/probe.md" in report
    text = (out / "probe" / "probe.md").read_text()
    assert "## baseline (baseline)" in text and "## low against baseline" in text
    base = json.loads((out / "runs" / "baseline" / "seed0" / "probe" / "probe.json").read_text())
    low = json.loads((out / "runs" / "low" / "seed0" / "probe" / "probe.json").read_text())
    d, floor = difference(low, base)
    e_low, e_base = np.asarray(low["spaces"]["model"]["e"]), np.asarray(base["spaces"]["model"]["e"])
    np.testing.assert_allclose(d, np.log10(e_low) - np.log10(e_base), rtol=1e-9, atol=1e-14)
    assert d.shape == (4, 8) and np.all(floor > 0)
    assert (out / "probe" / "probe.png").stat().st_size > 0


def test_the_baselines_curve_is_probed_at_each_kept_checkpoint(study_run):
    _, out = study_run
    text = (out / "probe" / "probe.md").read_text()
    assert "## Along the training of baseline/seed0" in text
    steps = [int(line.split("|")[1]) for line in text.splitlines() if line.startswith("| ") and
             line.split("|")[1].strip().isdigit()]
    assert steps == [2, 4]
    assert (out / "probe" / "curve.png").stat().st_size > 0


def test_a_checkpoint_off_the_curve_is_not_probed(study_run, tmp_path):
    """A checkpoint written when a run was stopped (not a multiple of curve_every) is kept
    on disk but is no point of the curve: the maps along training skip it."""
    import shutil

    from specreg.experiments.plan import on_curve
    from specreg.experiments.study_probe import probe_study

    assert [s for s in range(7) if on_curve(s, 2, 5)] == [2, 4, 5]
    assert not on_curve(None, 2, 4) and not on_curve(2, 0, 4)
    path, out = study_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    ckpts = copy / "runs" / "baseline" / "seed0" / "checkpoints"
    (ckpts / "step-00000003").mkdir()  # a stray entry: probing it would fail to load
    study = load_study(path, "tiny")
    probe_study(study, plan_runs(study, copy), copy)
    steps = [int(line.split("|")[1]) for line in (copy / "probe" / "probe.md").read_text().splitlines()
             if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert steps == [2, 4]


def test_probing_in_two_processes_writes_the_maps_of_one(study_run, tmp_path):
    """``compare --jobs 2`` probes the variants and the curve checkpoints two at a time, in
    spawned processes: the maps and the summary (but for its wall times) are those of probing
    one at a time."""
    import shutil

    from specreg.experiments.study_probe import probe_study

    path, out = study_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for old in copy.rglob("probe.json"):  # every map probed anew
        old.unlink()
    study = load_study(path, "tiny")
    probe_study(study, plan_runs(study, copy), copy, jobs=2)
    maps = sorted(p.relative_to(out) for p in out.rglob("probe.json"))
    assert maps and maps == sorted(p.relative_to(copy) for p in copy.rglob("probe.json"))
    assert any("curve" in str(p) for p in maps)
    for rel in maps:
        a, b = json.loads((out / rel).read_text()), json.loads((copy / rel).read_text())
        for key in ("e", "w", "e_floor"):
            np.testing.assert_allclose(b["spaces"]["model"][key], a["spaces"]["model"][key], rtol=1e-12, atol=0)
    def summary(folder):  # without the probes' own wall times ("Took … s.")
        return [line for line in (folder / "probe" / "probe.md").read_text().splitlines()
                if not line.startswith("Took ")]

    assert summary(copy) == summary(out)


def test_rerender_keeps_one_section(study_run):
    _, out = study_run
    rerender(out)
    rerender(out)
    assert (out / "report.md").read_text().count(SECTION) == 1


def test_probe_settings_do_not_rename_runs(tmp_path):
    a = plan_runs(load_study(_study(tmp_path), "tiny"), tmp_path / "o")
    b = plan_runs(load_study(_study(tmp_path, probe_items=0, probe_sigmas=8), "tiny"), tmp_path / "o")
    assert [s.key for s in a] == [s.key for s in b]


def test_a_band_without_power_prints_a_dash_not_nan():
    """Checkerboards have no power in the lowest band: w = 0 there and e/w is undefined."""
    from specreg.experiments.study_probe import log_ratio_cell

    assert [log_ratio_cell(v) for v in (float("nan"), 0.4615, -0.2)] == ["—", "+0.462", "-0.200"]


def test_the_maps_index_resolves_in_a_moved_and_in_a_published_copy(study_run, tmp_path):
    """``probe/maps.json`` names each row's map relative to the study folder, and
    ``scripts/publish_study.sh`` copies those maps: the index resolves in a moved copy of the
    folder and in the published one, and names the same records as the original. A contrast
    against a twin study travels with the report; the checkpoints do not."""
    import shutil
    import subprocess
    from pathlib import Path

    _, out = study_run
    index = json.loads((out / "probe" / "maps.json").read_text())
    assert set(index["maps"]) == {"baseline", "low"} and index["baselines"]["low"] == "baseline"
    assert index["curves"] == {"baseline/seed0": [2, 4]}
    moved = tmp_path / "elsewhere" / "study"
    shutil.copytree(out, moved)
    for name in ("contrast.md", "contrast.json"):
        (moved / name).write_text(f"{name} of this study\n")
    published = tmp_path / "docs" / "tiny"
    root = Path(__file__).resolve().parents[1]
    subprocess.run(["bash", str(root / "scripts" / "publish_study.sh"), str(moved), str(published)],
                   check=True, capture_output=True)
    assert not (published / "runs" / "baseline" / "seed0" / "checkpoints").exists()
    for name in ("contrast.md", "contrast.json"):
        assert (published / name).read_text() == f"{name} of this study\n"
    for name, rel in index["maps"].items():
        assert not Path(rel).is_absolute() and rel == f"runs/{name}/seed0/probe/probe.json"
        original = json.loads((out / rel).read_text())
        for folder in (moved, published):
            assert json.loads((folder / rel).read_text()) == original
