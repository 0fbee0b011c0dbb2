"""``specreg compare``: a tiny study end to end (report, skip on re-run, dry run, CLI parser),
the report's statistics against numpy, the fine-tuning protocol, parallel jobs, the shipped
study files and the error messages."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from specreg.data.audio import ASTERISK_ROOT
from specreg.data.images import FASHION_MNIST_ROOT, TextureCrops
from specreg.experiments.commands import add_compare_parser
from specreg.experiments.compare import DONE_FILE, RunSpec, load_study, plan_runs, rerender, run_compare
from specreg.experiments.results import StudyResults, collect
from specreg.experiments.runner import measure_floor
from specreg.experiments.stats import Stat
from specreg.layout import RunRecord
from specreg.train.checkpoint import list_checkpoints

STUDIES = Path(__file__).resolve().parents[1] / "configs" / "studies"
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "specreg" / "configs" / "studies"
TINY_OVERRIDES = [
    "data.n=64", "model.model_channels=8", "model.channel_mult=[1, 2]", "train.batch_size=8",
    "train.warmup_steps=0", "train.log_every=1", "train.checkpoint_every=50", "train.tensorboard=false",
    "train.progress_bar=false", "sample.steps=3",
]


def tiny_study(**changes: object) -> dict:
    study = {
        "name": "tiny",
        "base": "demo",
        "overrides": TINY_OVERRIDES,
        "seeds": [0],
        "baseline": "baseline",
        "variants": [
            {"name": "baseline", "label": "EDM loss only"},
            {"name": "haar", "label": "+ Haar L1", "overrides": ["regularizer.loss=haar", "regularizer.lam=0.1"]},
        ],
        "evaluation": {"reference": "textures", "n_samples": 8, "n_reference": 16, "metrics": ["lsd", "lsd_high"],
                       "columns": ["lsd", "lsd_high", "lsd_high_bias"]},
        "profiles": {"tiny": {"overrides": ["train.steps=3"]}, "small": {"overrides": ["train.steps=5"]}},
    }
    study.update(changes)
    return study


def write_study(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # one thread: fast on a busy 2-core machine and the same numbers in-process and in workers
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    study = write_study(tmp / "tiny.yaml", tiny_study())
    result = run_compare(study, tmp / "out", "tiny")
    return study, tmp / "out", result


# ----------------------------------------------------------------------------- numpy references


def numpy_radial(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ring-averaged |fft2|² (orthonormal) of square images (N, C, S, S): rings of width 1/S at
    round(|k|) on the full grid, averaged over samples and channels."""
    s = x.shape[-1]
    p = (np.abs(np.fft.fft2(x, norm="ortho")) ** 2).mean(axis=(0, 1))
    k = np.fft.fftfreq(s) * s
    ring = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
    n_bins = s // 2 + 1
    return np.arange(n_bins) / s, np.array([p[ring == i].mean() for i in range(n_bins)])


def numpy_lsd(x: np.ndarray, r: np.ndarray, lo: float = 0.0) -> tuple[float, float]:
    f, p = numpy_radial(x)
    _, q = numpy_radial(r)
    d = (np.log10(p) - np.log10(q))[f >= lo]
    return float(np.sqrt((d**2).mean())), float(d.mean())


def crops(n: int, seed: int) -> np.ndarray:
    ds = TextureCrops(("brick", "grass", "gravel"), 32, n, seed=seed, split="eval")
    return np.stack([ds[i][0].numpy() for i in range(n)]).astype(np.float64)


def table_rows(report: str) -> dict[str, list[str]]:
    """The rows of the report's results table (the first table under "## Results")."""
    rows = {}
    section = report[report.index("## Results"):]
    section = section[:section.index("\n## ", 3)] if "\n## " in section[3:] else section
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| variant"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].split(" — ")[0]] = cells
    return rows


def number(cell: str) -> float:
    return float(re.match(r"\**(-?[0-9.e+-]+)", cell).group(1))


def results_of(study, specs, out) -> StudyResults:
    """The typed results of a study from its runs' records (``spec.recorded``; no training)."""
    floor = measure_floor(study.evaluation, out, [s for s in specs if s.protocol != "pretrain"][0].config)
    return collect(study, specs, floor, out, command="specreg compare x --out y", wall_s=1.0)


# ----------------------------------------------------------------------------- end to end


def test_report_has_table_command_and_versions(tiny_run):
    _, out, result = tiny_run
    res = result.results
    assert result.report == out / "report.md"
    assert res.columns == ["lsd", "lsd_high", "lsd_high_bias"]
    for name in ("baseline", "haar"):
        for key in res.columns:  # one seed: a mean and no std
            s = res.rows[name].stats[key]
            assert s.n == 1 and s.std is None and np.isfinite(s.mean)
    assert "specreg compare" in res.command and "--profile tiny" in res.command
    assert {"python", "torch", "numpy", "specreg"} <= set(res.versions)
    text = result.report.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| variant"))
    assert "lsd ↓" in header and "lsd_high ↓" in header and "lsd_high_bias →0" in header
    assert res.command in text and "s / step" in text
    assert (out / "spectra.png").is_file() and (out / "real" / "samples.png").is_file()
    assert (out / "runs" / "haar" / "seed0" / "eval" / "samples.png").is_file()
    assert StudyResults.load(out / "results.json").to_dict() == res.to_dict()


def test_timing_rows_carry_their_setting_and_say_when_they_compare(tiny_run, monkeypatch):
    """Step times compare only within one setting (threads, runs at once): each run records
    it, the table shows it per row, and the note says whether the rows compare."""
    from specreg.experiments import demo
    from specreg.experiments.report import timing_note, timing_table

    _, _, result = tiny_run
    res = result.results
    assert all(t["threads"] >= 1 and t["parallel"] == 1 and t["device"] in ("cpu", "cuda") for t in res.timing)
    lines, _ = timing_table(res)
    assert "setting" in lines[0] and all(" at once" in line for line in lines[2:])
    assert timing_note(res.timing).startswith("Every run trained in the same setting")
    mixed = [{**res.timing[0], "threads": 2, "parallel": 1, "interval": [0.0, 10.0]},
             {**res.timing[1], "threads": 1, "parallel": 2, "interval": [0.0, 10.0]}]
    assert "compares only between rows of the same setting" in timing_note(mixed)
    old = [{k: v for k, v in t.items() if k not in ("threads", "parallel", "device")} for t in res.timing]
    assert "without a recorded setting" in timing_note(old)  # a results.json from before the setting was recorded
    res.timing = mixed
    monkeypatch.setattr(demo, "reading", lambda res: "")  # the demo's upper band is not in this study
    text = demo.short_report(res, "specreg demo", 1.0, quick=True)
    assert "2 threads, 1 at once" in text and "1 thread, 2 at once" in text and "docs/benchmarks.md" in text


def test_a_run_that_trained_alone_is_not_called_one_of_two_at_once():
    """With --jobs 2 and three runs, the third trains alone after the first two shared the
    cores: the recorded wall-clock intervals say so, and the rows do not compare."""
    from specreg.experiments.report import setting, shared_share, timing_note

    base = {"threads": 1, "parallel": 2, "device": "cpu", "train_s": 1.0, "steps": 1}
    timing = [{**base, "interval": [0.0, 100.0]}, {**base, "interval": [5.0, 100.0]},
              {**base, "interval": [100.0, 160.0]}, {**base, "interval": [50.0, 150.0]}]
    assert shared_share(timing[0], timing[:3]) == pytest.approx(0.95)
    assert shared_share(timing[2], timing[:3]) == 0.0
    assert [setting(t, timing[:3]) for t in timing[:3]] == ["1 thread, 2 at once", "1 thread, 2 at once",
                                                            "1 thread, alone"]
    assert "compares only between rows of the same setting" in timing_note(timing[:3])
    # overlaps are counted once: [50, 100] by two runs, [100, 150] by the third
    assert shared_share(timing[3], timing) == pytest.approx(1.0)
    assert setting({**base, "interval": [0.0, 10.0]}, [{**base, "interval": [5.0, 20.0]}]) == \
        "1 thread, beside another run 50% of its time"


def test_metrics_match_numpy_on_saved_samples(tiny_run):
    """The stored LSD is that of the saved samples against the documented reference crops."""
    _, out, result = tiny_run
    res = result.results
    reference = crops(16, seed=1)
    for name in ("baseline", "haar"):
        run = out / "runs" / name / "seed0"
        x = np.load(run / "eval" / "samples.npy").astype(np.float64)
        assert x.shape == (8, 1, 32, 32)
        lsd, _ = numpy_lsd(x, reference)
        lsd_high, bias_high = numpy_lsd(x, reference, lo=1 / 3)
        metrics = json.loads((run / DONE_FILE).read_text())["metrics"]
        assert metrics["lsd"] == pytest.approx(lsd, rel=1e-6)
        assert metrics["lsd_high"] == pytest.approx(lsd_high, rel=1e-6)
        assert res.rows[name].stats["lsd"].mean == pytest.approx(lsd, rel=1e-6)
        assert res.rows[name].stats["lsd_high_bias"].mean == pytest.approx(bias_high, rel=1e-6)
    # the noise floor: 8 other held-out crops against the same reference
    floor_set = crops(8, seed=2)
    floor_lsd, _ = numpy_lsd(floor_set, reference)
    assert res.floor_value("lsd") == pytest.approx(floor_lsd, rel=1e-6)
    # the spread of a signed key: the bootstrap std over resamples of the floor set (the
    # same draws: torch.randint with the metric seed), each against the same reference
    from specreg.experiments.runner import SPREAD_RESAMPLES

    g = torch.Generator().manual_seed(res.study["evaluation"]["metric_seed"])
    draws = [numpy_lsd(floor_set[torch.randint(8, (8,), generator=g).numpy()], reference, lo=1 / 3)[1]
             for _ in range(SPREAD_RESAMPLES)]
    assert res.spread("lsd_high_bias") == pytest.approx(np.std(draws, ddof=1), rel=1e-5)
    assert set(res.floor["spread"]) == {"lsd_bias", "lsd_high_bias"}


def test_eval_of_a_compare_run_reproduces_its_metrics(tiny_run, tmp_path):
    """`specreg eval RUN_DIR` on a run that compare measured scores it against the same
    reference items with the same metrics and seeds: the numbers are identical."""
    from specreg.cli import main

    _, out, _ = tiny_run
    run = out / "runs" / "haar" / "seed0"
    recorded = json.loads((run / DONE_FILE).read_text())["metrics"]
    assert main(["eval", str(run), "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["metrics"] == recorded  # exactly, not approximately
    assert main(["eval", str(run), "--reference", "textures", "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "f" / "metrics.json").read_text())["metrics"] == recorded


def test_report_renders_from_results_json_alone(tiny_run, tmp_path):
    _, out, result = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "runs")  # nothing but results.json (and the images it links)
    before = result.report.read_text()
    assert rerender(copy).read_text() == before


def test_second_invocation_skips_finished_runs(tiny_run):
    study, out, _ = tiny_run
    done = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob(DONE_FILE)}
    ckpts = sorted(str(p) for p in (out / "runs").rglob("step-*"))
    assert len(done) == 2 and ckpts
    again = run_compare(study, out, "tiny")
    assert [s.status for s in again.runs] == ["done", "done"]
    assert {p: p.stat().st_mtime_ns for p in done} == done
    assert sorted(str(p) for p in (out / "runs").rglob("step-*")) == ckpts
    assert "baseline" in again.results.rows
    # the wall time reported is that of the invocation that trained, not of this re-run
    calls = json.loads((out / "invocations.json").read_text())
    assert calls[0]["trained"] == 2 and calls[-1]["trained"] == 0
    assert re.search(rf"wall time of the 1 invocation\(s\) that trained runs: {calls[0]['wall_s'] / 60:.1f} min",
                     again.report.read_text())


def test_an_invocation_keeps_its_wall_time_while_it_runs(tmp_path):
    """A sitting killed part-way (a session's end) still has its entry: written at the start,
    after each run and on a heartbeat, in place rather than appended."""
    import time

    from specreg.experiments.report import wall_text
    from specreg.experiments.results import StudyResults
    from specreg.layout import Invocation

    old = {"started": "2026-01-01T00:00:00", "wall_s": 60.0, "trained": 3, "command": "earlier"}
    (tmp_path / "invocations.json").write_text(json.dumps([old]))
    inv = Invocation(tmp_path, "specreg compare s.yaml", time.time(), planned=4, every=0.05)
    time.sleep(0.3)  # killed here, before any run finished: the heartbeat has written its time
    entries = json.loads((tmp_path / "invocations.json").read_text())
    assert entries[0] == old and len(entries) == 2
    assert entries[1]["wall_s"] > 0 and entries[1]["trained"] == 0 and entries[1]["planned"] == 4
    inv.ran()
    final = inv.close()
    assert len(final) == 2 and final[1]["trained"] == 1 and final[1]["wall_s"] >= entries[1]["wall_s"]
    assert json.loads((tmp_path / "invocations.json").read_text()) == final
    res = StudyResults(study={}, columns=[], rows={}, floor={}, invocations=final)
    # both sittings count, the killed one too (it had runs to train)
    assert "wall time of the 2 invocation(s)" in wall_text(res, 0.0)


def test_records_of_earlier_versions_count_as_done(tiny_run, tmp_path):
    """A run measured before the record was called run.json (metrics.json) is not retrained."""
    study, out, _ = tiny_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for rec in (copy / "runs").rglob(DONE_FILE):
        rec.rename(rec.with_name("metrics.json"))
    assert [s.status for s in plan_runs(load_study(study, "tiny"), copy)] == ["done", "done"]


def fake_record(spec: RunSpec, values: dict | None = None) -> RunRecord:
    """Write a finished run's record without training and hand it to ``spec`` as the runner
    does; return it."""
    record = {"key": spec.key, "status": "done", "seed": spec.seed, "variant": spec.variant,
              "metrics": values or {"lsd": 0.1, "lsd_high": 0.2, "lsd_high_bias": 0.0},
              "spectrum": {"freqs": list(np.arange(17) / 32), "power": [1.0] * 17},
              "timing": {"train_s": 1.0, "steps": 1}}
    spec.record_path.parent.mkdir(parents=True, exist_ok=True)
    spec.record_path.write_text(json.dumps(record))
    spec.recorded = RunRecord.from_dict(record)
    return spec.recorded


def test_runs_train_seed_by_seed(tmp_path, monkeypatch):
    """Every variant trains at the first seed before any trains at the next, so a study
    stopped part-way compares all its variants; the results count the seeds done."""
    import specreg.experiments.compare as compare

    order: list[str] = []

    def fake_execute(spec, ev, **_):
        order.append(spec.label)
        if len(order) > 2:  # "stopped" after the first seed
            raise KeyboardInterrupt
        return fake_record(spec)

    monkeypatch.setattr(compare, "execute", fake_execute)
    study = tiny_study(seeds=[0, 1, 2])
    with pytest.raises(KeyboardInterrupt):
        run_compare(study, tmp_path / "out", "tiny")
    assert order == ["baseline/seed0", "haar/seed0", "baseline/seed1"]
    st = load_study(study, "tiny")
    res = results_of(st, plan_runs(st, tmp_path / "out"), tmp_path / "out")
    assert res.rows["baseline"].n_done == 1 and res.rows["haar"].n_done == 1
    assert "| 1/3 |" in rerender_text(res, tmp_path)


def rerender_text(res: StudyResults, out: Path) -> str:
    from specreg.experiments.report import render

    return render(res, out, draw=False)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_run_alone_in_the_main_process_gets_the_jobs_cores(tmp_path, monkeypatch, jobs):
    """Without a GPU a lone run (a pretraining, or --jobs 1) trains and samples on --jobs
    threads; more would oversubscribe the cores the user granted."""
    import specreg.experiments.compare as compare

    seen: list[tuple[int, int]] = []

    def fake_execute(spec, ev, threads=0, parallel=None):
        assert parallel == 1  # recorded with the timing: this run trains alone
        seen.append((threads, spec.config["train"]["threads"]))
        return fake_record(spec)

    monkeypatch.setattr(compare, "execute", fake_execute)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_compare(tiny_study(variants=[{"name": "baseline"}]), tmp_path / "out", "tiny", jobs=jobs)
    assert seen == [(jobs, jobs)]


def test_dry_run_lists_runs_without_training(tmp_path, capsys):
    study = write_study(tmp_path / "tiny.yaml", tiny_study(seeds=[0, 3]))
    parser = argparse.ArgumentParser(prog="specreg")
    sub = parser.add_subparsers(dest="command", required=True)
    add_compare_parser(sub)
    args = parser.parse_args(["compare", str(study), "--out", str(tmp_path / "out"), "--profile", "tiny",
                              "--dry-run"])
    assert args.func(args) == 0
    listing = capsys.readouterr().out
    for label in ("baseline/seed0", "baseline/seed3", "haar/seed0", "haar/seed3"):
        assert label in listing
    assert listing.count("new") == 4
    assert not (tmp_path / "out").exists()


def test_parser_help_and_defaults(capsys):
    parser = argparse.ArgumentParser(prog="specreg")
    sub = parser.add_subparsers(dest="command", required=True)
    add_compare_parser(sub)
    args = parser.parse_args(["compare", "study.yaml", "--out", "o"])
    assert (args.profile, args.jobs, args.dry_run, args.report_only) == ("small", 1, False, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--help"])
    text = capsys.readouterr().out
    for option in ("--out", "--profile", "--dry-run", "--jobs", "--report-only", "tiny", "full"):
        assert option in text
    args = parser.parse_args(["compare", "study.yaml", "--out", "o", "--jobs", "0"])
    with pytest.raises(ValueError, match="--jobs=0"):
        args.func(args)


# ----------------------------------------------------------------------------- statistics


def fabricate(study, out: Path, values: dict[str, list[float]], metrics) -> StudyResults:
    """Records with the given per-seed values for every run of ``study``; their results."""
    specs = plan_runs(study, out)
    for spec in specs:
        fake_record(spec, metrics(values[spec.variant][spec.seed]))
    return results_of(study, specs, out)


def test_table_mean_std_best_and_marker_against_numpy(tmp_path):
    """Fabricated per-seed results: numpy's mean ± sample std, the best mean, and a resolved
    difference only where it exceeds the resolution; the table shows the same."""
    study = load_study(tiny_study(seeds=[0, 1, 2], variants=[
        {"name": "baseline"}, {"name": "far", "overrides": ["regularizer.loss=haar"]},
        {"name": "near", "overrides": ["regularizer.loss=fourier_amp"]}]), "tiny")
    values = {"baseline": [0.30, 0.32, 0.34], "far": [0.10, 0.11, 0.12], "near": [0.29, 0.33, 0.31]}
    res = fabricate(study, tmp_path, values, lambda v: {"lsd": v, "lsd_high": 2 * v, "lsd_high_bias": -v})
    for name, vals in values.items():
        s = res.rows[name].stats["lsd"]
        assert s.mean == pytest.approx(np.mean(vals)) and s.std == pytest.approx(np.std(vals, ddof=1))
        assert s.by_seed == dict(enumerate(vals))
    assert res.is_best("far", "lsd") and not res.is_best("baseline", "lsd")
    assert res.is_best("baseline", "lsd_high_bias") is False  # closest to zero wins for a bias:
    assert res.is_best("far", "lsd_high_bias")
    # far differs by 0.21 (≫ floor and seed error), near by 0.01 (within the seed error)
    assert res.versus_baseline("far", "lsd")[2] and not res.versus_baseline("near", "lsd")[2]
    assert res.versus_baseline("baseline", "lsd") is None
    assert res.median_spread("lsd") == pytest.approx(np.median([np.std(v, ddof=1) for v in values.values()]))
    rows = table_rows(rerender_text(res, tmp_path))
    assert rows["far"][3].startswith("**") and rows["far"][3].endswith("†") and not rows["near"][3].endswith("†")
    assert "3/3" in rows["baseline"][2]


def test_differences_pair_by_seed_as_scipy_t_tests_do():
    """Δ, half-width and p: paired by seed when two rows share ≥ 2 seeds (scipy's
    ttest_rel), otherwise Welch (ttest_ind, equal_var=False); one seed: no test."""
    from scipy import stats as sps

    from specreg.experiments.stats import difference

    def row(vals: dict[int, float]) -> Stat:
        return Stat.of(vals)

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 6))
        seed_effect = rng.normal(0, 1, n)  # shared by both rows: what pairing removes
        a = seed_effect + rng.normal(0, 0.1, n) + rng.choice([0.0, 0.1, 0.3])
        b = seed_effect + rng.normal(0, 0.1, n)
        d = difference(row(dict(enumerate(a))), row(dict(enumerate(b))))
        ref = sps.ttest_rel(a, b)
        assert d.paired and d.diff == pytest.approx(np.mean(a - b)) and d.p == pytest.approx(ref.pvalue)
        assert d.half_width == pytest.approx(ref.confidence_interval().high - np.mean(a - b))
        # no seed in common: Welch
        d = difference(row(dict(enumerate(a))), row({10 + i: v for i, v in enumerate(b)}))
        ref = sps.ttest_ind(a, b, equal_var=False)
        assert not d.paired and d.p == pytest.approx(ref.pvalue)
        assert d.half_width == pytest.approx(ref.confidence_interval().high - (np.mean(a) - np.mean(b)))
    base = row({0: 0.30, 1: 0.40, 2: 0.50})
    shifted = row({0: 0.32, 1: 0.421, 2: 0.519})
    d = difference(shifted, base)
    assert d.diff == pytest.approx(0.02) and d.half_width < 0.02 and d.p < 0.05  # resolved only because paired
    same = difference(row({0: 0.75, 1: 1.25, 2: 1.75}), row({0: 0.5, 1: 1.0, 2: 1.5}))  # identical shifts
    assert same.p == 0.0 and same.half_width == 0.0
    assert difference(row({0: 0.9}), base).p is None  # one seed: unknown noise


def test_auto_lambda_against_its_grid(tmp_path):
    """The AutoLambda comparison: best and median of the grid, the auto variant's rank, and
    auto − best resolved only beyond the resolution; a profile without the grid has none."""
    lam = [{"name": f"g{i}", "overrides": ["regularizer.loss=haar", f"regularizer.lam={10.0 ** -i}"]}
           for i in (1, 2, 3)]
    auto = {"name": "auto", "overrides": ["regularizer.loss=haar", "regularizer.lam=auto"]}
    raw = tiny_study(seeds=[0, 1], variants=[{"name": "baseline"}, *lam, auto],
                     lambda_grids=[{"auto": "auto", "grid": ["g1", "g2", "g3"]}])
    raw["profiles"]["small"]["variants"] = ["baseline", "g1", "auto"]
    study = load_study(raw, "tiny")
    assert study.lambda_grids == (("auto", ("g1", "g2", "g3")),)
    assert load_study(raw, "small").lambda_grids == ()  # one grid point left: nothing to judge
    values = {"baseline": [0.30, 0.31], "g1": [0.50, 0.52], "g2": [0.20, 0.21], "g3": [0.40, 0.41],
              "auto": [0.25, 0.26]}
    res = fabricate(study, tmp_path, values, lambda v: {"lsd": v, "lsd_high": v, "lsd_high_bias": v - 0.3})
    grid = {e["key"]: e for e in res.lambda_grids()}
    e = grid["lsd"]
    assert e["best_name"] == "g2" and e["best"].mean == pytest.approx(0.205)
    assert e["median"] == pytest.approx(0.405) and (e["rank"], e["of"]) == (2, 4)
    assert e["diff"] == pytest.approx(0.05)
    # paired over 2 seeds: d = (0.05, 0.05) has no spread (up to rounding), so the practical floor decides
    assert e["p"] < 1e-9 and e["marked"] == (0.05 > 2 * res.floor_value("lsd"))
    assert grid["lsd_high_bias"]["best_name"] in ("g2", "g3")  # closest to zero wins for a bias
    assert "## Automatic λ against the λ grid" in rerender_text(res, tmp_path)


def test_steps_to_reach_the_baseline_from_curves(tmp_path):
    """Variants measured along training on every seed: the first step at which a seed is at
    least as good as its baseline's final value at that seed."""
    study = load_study(tiny_study(seeds=[0, 1], variants=[
        {"name": "baseline", "curve": True}, {"name": "fast", "overrides": ["regularizer.loss=haar"], "curve": True}],
        evaluation={**tiny_study()["evaluation"], "curve_every": 1, "curve_samples": 8}), "tiny")
    specs = plan_runs(study, tmp_path)
    assert all(s.curve for s in specs)  # every seed, not only the baseline's first
    finals = {"baseline": [0.25, 0.45], "fast": [0.20, 0.35]}  # on more samples than the curves
    curves = {("baseline", 0): [0.9, 0.5, 0.30], ("baseline", 1): [0.8, 0.39, 0.40],
              ("fast", 0): [0.5, 0.3, 0.20], ("fast", 1): [0.9, 0.8, 0.35]}
    for spec in specs:
        fake_record(spec, {"lsd": finals[spec.variant][spec.seed], "lsd_high": 0.0, "lsd_high_bias": 0.0})
        points = [{"step": 100 * (k + 1), "metrics": {"lsd": v}} for k, v in enumerate(curves[(spec.variant,
                                                                                              spec.seed)])]
        (spec.run_dir / "curve.json").write_text(json.dumps(points))
    specs = plan_runs(study, tmp_path)  # read back: the records, with the curves beside them
    reach = {(e["variant"], e["key"]): e for e in results_of(study, specs, tmp_path).steps_to_reach()}
    fast = reach[("fast", "lsd")]
    # the targets are the baseline's last curve points (0.30, 0.40), measured like the curves
    assert fast["by_seed"] == {0: 200, 1: 300} and fast["stat"].mean == pytest.approx(250)
    assert reach[("baseline", "lsd")]["by_seed"] == {0: 300, 1: 200}  # its own final value, reached early on seed 1


def test_a_curve_point_s_sampling_noise_is_tabled_beside_the_curve(tmp_path):
    """point_noise.json, written beside a curve by scripts/curve_point_noise.py after the run,
    reaches results.json and the report: the sd over sample seeds per checkpoint, and the
    points' scatter about the trend line in the plateau table, to read one against the other."""
    import statistics

    from specreg.layout import POINT_NOISE_FILE

    study = load_study(tiny_study(evaluation={**tiny_study()["evaluation"], "curve_every": 1, "curve_samples": 8}),
                       "tiny")
    specs = plan_runs(study, tmp_path)
    (spec,) = [s for s in specs if s.curve]
    for s in specs:
        fake_record(s)
    values = [0.09, 0.05, 0.06, 0.04, 0.055]
    (spec.run_dir / "curve.json").write_text(json.dumps(
        [{"step": 100 * (k + 1), "metrics": {"lsd": v, "lsd_high": v}} for k, v in enumerate(values)]))
    high = [0.041, 0.046, 0.039]
    (spec.run_dir / POINT_NOISE_FILE).write_text(json.dumps(
        [{"step": 400, "seed": s, "n": 8, "lsd": 0.04, "lsd_high": v, "lsd_high_bias": 0.0, "floors": None}
         for s, v in zip((1, 2, 3), high)]))
    res = results_of(study, plan_runs(study, tmp_path), tmp_path)
    (curve,) = res.curves
    (g,) = curve["point_noise"]
    assert g["step"] == 400 and g["seeds"] == [1, 2, 3]
    assert g["sd"]["lsd_high"] == pytest.approx(statistics.stdev(high)) and g["sd"]["lsd"] == 0
    back = StudyResults.from_dict(json.loads(json.dumps(res.to_dict())))  # as results.json keeps it
    assert back.curves[0]["point_noise"] == curve["point_noise"]
    text = rerender_text(back, tmp_path)
    assert "How noisy is one curve point?" in text
    assert f"| {spec.label} | 400 | 8 | 1, 2, 3 | 0.04 ± 0 | 0.042 ± {statistics.stdev(high):.2g} |" in text
    scatter = {e["key"]: e["trend_scatter"] for e in back.plateaus()}
    window = [300, 400, 500]  # the last 40 % of 500 steps
    resid = np.array(values[2:]) - np.polyval(np.polyfit(window, values[2:], 1), window)
    assert scatter["lsd"] == pytest.approx(math.sqrt((resid**2).sum() / 1))
    assert "scatter about the line" in text and f"| {scatter['lsd']:.2g} |" in text
    # a curve without the file gets no point_noise and no table
    (spec.run_dir / POINT_NOISE_FILE).unlink()
    res = results_of(study, plan_runs(study, tmp_path), tmp_path)
    assert "point_noise" not in res.curves[0] and "How noisy" not in rerender_text(res, tmp_path)


# ----------------------------------------------------------------------------- protocols and jobs


def test_finetune_starts_from_pretrained_ema_weights(tmp_path):
    study = tiny_study(
        protocol="finetune",
        finetune={"steps": 2, "pretrain_seed": 0, "overrides": ["train.lr=1e-12"]},
        variants=[{"name": "baseline"},
                  {"name": "haar", "overrides": ["regularizer.loss=haar", "regularizer.lam=0.1"]},
                  {"name": "vp", "overrides": ["diffusion.precond=vp"], "baseline": "vp"}],
    )
    result = run_compare(study, tmp_path / "out", "tiny")
    pretrains = [s for s in result.runs if s.protocol == "pretrain"]
    # baseline and haar differ only in the regularizer: one shared pretrained model; vp has its own
    assert len(pretrains) == 2
    by_name = {s.variant: s for s in result.runs}
    assert by_name["baseline"].pretrain_dir == by_name["haar"].pretrain_dir != by_name["vp"].pretrain_dir
    for name in ("baseline", "haar"):
        spec = by_name[name]
        pre = load_file(str(list_checkpoints(spec.pretrain_dir / "checkpoints")[-1] / "model.safetensors"))
        pre_steps = list_checkpoints(spec.pretrain_dir / "checkpoints")[-1].name
        assert pre_steps == "step-00000003"  # the profile's train.steps
        ft_ckpt = list_checkpoints(spec.run_dir / "checkpoints")[-1]
        assert ft_ckpt.name == "step-00000002"  # finetune.steps
        ft = load_file(str(ft_ckpt / "model.safetensors"))
        # lr 1e-12: Adam moves each weight by at most ~1e-12 per step, so the raw weights after
        # fine-tuning are the pretrained EMA weights they started from
        ema_keys = [k for k in pre if k.startswith("ema.")]
        assert ema_keys
        for k in ema_keys:
            torch.testing.assert_close(ft["model." + k[4:]], pre[k], atol=1e-9, rtol=0)
        assert json.loads((spec.run_dir / "finetune.json").read_text())["weights"] == "ema"
    assert "Fine-tuning protocol" in result.report.read_text()


def test_pretrain_seeds_give_each_seed_its_own_pretrained_model(tmp_path, capsys):
    """finetune.pretrain_seeds: seed i fine-tunes from the model pretrained with seed
    pretrain_seeds[i]; the dry run states the cost (two pretrainings, not one)."""
    study = tiny_study(protocol="finetune", seeds=[0, 1],
                       finetune={"steps": 2, "pretrain_seeds": [5, 6], "overrides": []})

    path = write_study(tmp_path / "s.yaml", study)
    parser = argparse.ArgumentParser()
    add_compare_parser(parser.add_subparsers())
    args = parser.parse_args(["compare", str(path), "--out", str(tmp_path / "out"), "--profile", "tiny",
                              "--dry-run"])
    args.func(args)
    plan = capsys.readouterr().out
    # 2 pretrainings × 3 steps (the profile's train.steps) + 4 fine-tunings × 2 steps
    assert "cost: 2 pretraining(s), 6 steps + 4 runs, 8 steps = 14 training steps" in plan
    result = run_compare(study, tmp_path / "out", "tiny")
    pre = {s.run_dir: s for s in result.runs if s.protocol == "pretrain"}
    assert sorted(s.config["train"]["seed"] for s in pre.values()) == [5, 6]
    for spec in (s for s in result.runs if s.protocol == "finetune"):
        assert pre[spec.pretrain_dir].config["train"]["seed"] == {0: 5, 1: 6}[spec.seed]
        started = json.loads((spec.run_dir / "finetune.json").read_text())
        assert str(spec.pretrain_dir) in json.dumps(started)
    text = result.report.read_text()
    assert "seed 0 from pretraining seed 5, 1 from pretraining seed 6" in text
    one = plan_runs(load_study(tiny_study(protocol="finetune", seeds=[0, 1], finetune={"steps": 2}), "tiny"),
                    tmp_path / "one")
    assert len({s.pretrain_dir for s in one if s.protocol == "finetune"}) == 1  # the default: one model
    with pytest.raises(ValueError, match=r"finetune.pretrain_seeds=\[5\] is not accepted; expected 2 distinct"):
        load_study(tiny_study(protocol="finetune", seeds=[0, 1], finetune={"steps": 2, "pretrain_seeds": [5]}),
                   "tiny")


def test_pretrain_step_starts_from_an_earlier_checkpoint_of_the_pretraining(tmp_path):
    """A variant's pretrain_step fine-tunes from the pretraining's checkpoint at that step
    (kept by its curve), shares the one pretraining, leaves the other runs' keys as they were,
    and a step the pretraining does not keep is refused in one line before anything trains."""
    finetune = {"steps": 2, "overrides": ["train.lr=1e-12"]}
    evaluation = {**tiny_study()["evaluation"], "curve_every": 2, "curve_samples": 4}
    plain = tiny_study(protocol="finetune", finetune=finetune, evaluation=evaluation,
                       profiles={"tiny": {"overrides": ["train.steps=4"]}})
    study = {**plain, "variants": [*plain["variants"],
                                   {"name": "baseline_at2", "pretrain_step": 2, "baseline": "baseline_at2"}]}
    result = run_compare(study, tmp_path / "out", "tiny")
    by_name = {s.variant: s for s in result.runs}
    assert by_name["baseline_at2"].pretrain_dir == by_name["baseline"].pretrain_dir
    assert sum(s.protocol == "pretrain" for s in result.runs) == 1
    kept = by_name["baseline"].pretrain_dir / "checkpoints"
    assert [p.name for p in list_checkpoints(kept)] == ["step-00000002", "step-00000004"]
    for name, step in (("baseline", 4), ("baseline_at2", 2)):
        spec = by_name[name]
        started = json.loads((spec.run_dir / "finetune.json").read_text())["pretrained"]
        assert started.endswith(f"step-{step:08d}")
        pre = load_file(str(kept / f"step-{step:08d}" / "model.safetensors"))
        ft = load_file(str(list_checkpoints(spec.run_dir / "checkpoints")[-1] / "model.safetensors"))
        for k in (k for k in pre if k.startswith("ema.")):  # lr 1e-12: the weights it started from
            torch.testing.assert_close(ft["model." + k[4:]], pre[k], atol=1e-9, rtol=0)
    assert "baseline_at2 (from step 2)" in result.report.read_text()
    # the runs without pretrain_step keep the keys they had without the new row
    before = {s.label: s.key for s in plan_runs(load_study(plain, "tiny"), tmp_path / "plain")}
    assert {s.label: s.key for s in result.runs if s.label in before} == before
    bad = {**study, "variants": [*plain["variants"], {"name": "at3", "pretrain_step": 3, "baseline": "at3"}]}
    with pytest.raises(ValueError, match=r"variant 'at3': pretrain_step=3 is not accepted; the pretraining keeps "
                                         r"checkpoints at multiples of evaluation.curve_every=2 up to train.steps=4"):
        plan_runs(load_study(bad, "tiny"), tmp_path / "bad")
    scratch = tiny_study(variants=[{"name": "baseline"}, {"name": "x", "pretrain_step": 2}])
    with pytest.raises(ValueError, match=r"variants\[1\].pretrain_step=2 is not accepted for protocol 'scratch'"):
        load_study(scratch, "tiny")


def test_two_jobs_give_the_same_numbers_as_one(tiny_run, tmp_path):
    study, out, _ = tiny_run
    parallel = run_compare(study, tmp_path / "out", "tiny", jobs=2)
    for spec in parallel.runs:
        a = json.loads((out / "runs" / spec.variant / "seed0" / DONE_FILE).read_text())["metrics"]
        b = json.loads((spec.run_dir / DONE_FILE).read_text())["metrics"]
        assert a == pytest.approx(b, rel=1e-6)


# ----------------------------------------------------------------------------- study files


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_studies_resolve_in_every_profile(path, tmp_path):
    profiles = load_study(path, "small").profiles  # with those of a study it extends
    assert {"small", "full"} <= set(profiles)
    for profile in profiles:
        study = load_study(path, profile)
        runs = plan_runs(study, tmp_path / profile)  # resolves and checks every config
        assert runs and all(s.status == "new" for s in runs)
        assert {v.name for v in study.variants} <= {s.variant for s in runs}


needs_speech = pytest.mark.skipif(not Path(ASTERISK_ROOT).is_dir(),
                                  reason="Asterisk prompts are not installed (asterisk-core-sounds-en-wav)")
needs_fashion = pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(),
                                   reason="Fashion-MNIST is not installed (dataset-fashion-mnist)")


def test_toy_study_tiny_profile_end_to_end(tmp_path):
    """Real checkerboards put all the energy near their fundamentals exactly on them, so the
    floor row's peak_energy is 1; a barely trained model leaks."""
    result = run_compare(STUDIES / "toy_checkerboard.yaml", tmp_path / "out", "tiny")
    res = result.results
    assert {"baseline", "fourier_ap"} <= set(res.rows)
    assert res.floor_value("peak_energy") == pytest.approx(1.0, abs=1e-6)
    assert res.rows["baseline"].stats["peak_energy"].mean < 0.99


@needs_fashion
def test_fashion_study_tiny_profile_end_to_end(tmp_path):
    result = run_compare(STUDIES / "images_fashion.yaml", tmp_path / "out", "tiny")
    assert [s.protocol for s in result.runs] == ["pretrain", "finetune", "finetune"]
    assert {"vp_baseline_ft", "vp_fourier_ap_ft"} <= set(result.results.rows)


def test_quadratic_study_tiny_profile_end_to_end(tmp_path):
    """The posterior-mean study's new rows run through the harness: a whitened fourier_l2
    fitted on the data, and learned band weights whose plot reaches the report."""
    result = run_compare(STUDIES / "quadratic_textures.yaml", tmp_path / "out", "tiny")
    res = result.results
    assert {"baseline_ft", "fl2_white_x1", "bands_1"} <= set(res.rows)
    assert res.rows["bands_1"].band_weights and (tmp_path / "out" / res.rows["bands_1"].band_weights).is_file()
    assert "## Learned band weights" in result.report.read_text()


@needs_fashion
def test_latent_study_tiny_profile_end_to_end(tmp_path):
    """Latent flow matching on the shipped VAE's latents: samples are decoded images, the
    spectral loss runs on latents and on decoded images, and the floor has a ceiling row
    (the VAE's own reconstructions, measured like a run)."""
    result = run_compare(STUDIES / "latent_fashion.yaml", tmp_path / "out", "tiny")
    res = result.results
    assert {"baseline_ft", "fft_decoded", "quad_latent"} <= set(res.rows)
    spec = next(s for s in result.runs if s.variant == "fft_decoded")
    assert np.load(spec.run_dir / "eval" / "samples.npy").shape == (16, 1, 32, 32)
    assert spec.config["regularizer"]["space"] == "decoded"
    assert res.floor["ceiling"]["lsd"] > 0 and "reconstructions" in res.floor["ceiling_set"]
    assert "latent model's ceiling" in result.report.read_text()


@needs_speech
def test_audio_study_pairs_each_sample_with_its_reference_clip(tmp_path):
    """mrstft compares sample i with the real clip whose log-mel conditioned it: recomputed
    with auraloss on the saved samples and the documented held-out segments."""
    auraloss = pytest.importorskip("auraloss")
    from specreg.data.audio import AsteriskSpeech

    result = run_compare(STUDIES / "audio_vocoder.yaml", tmp_path / "out", "tiny")
    spec = next(s for s in result.runs if s.variant == "baseline")
    x = np.load(spec.run_dir / "eval" / "samples.npy")
    assert x.shape == (4, 1, 4096)
    ref_set = AsteriskSpeech(split="eval", sample_rate=8000, segment_length=4096, random_crop=False, seed=1)
    ref = np.stack([ref_set[i][0].numpy() for i in range(4)])
    loss = auraloss.freq.MultiResolutionSTFTLoss(window="hann_window")
    per = [float(loss(torch.from_numpy(x[i])[None], torch.from_numpy(ref[i])[None])) for i in range(4)]
    shifted = [float(loss(torch.from_numpy(x[i])[None], torch.from_numpy(ref[(i + 1) % 4])[None]))
               for i in range(4)]
    metrics = json.loads((spec.run_dir / DONE_FILE).read_text())["metrics"]
    assert metrics["mrstft"] == pytest.approx(np.mean(per), rel=1e-4)
    assert metrics["mrstft"] != pytest.approx(np.mean(shifted), rel=1e-3)


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.stem)
def test_studies_shipped_in_the_package_resolve(path, tmp_path):
    for profile in yaml.safe_load(path.read_text())["profiles"]:
        assert plan_runs(load_study(path.stem, profile), tmp_path / profile)


def test_a_study_extends_another_keeping_its_rows(tmp_path):
    """``extends``: the parent's keys, the child's top-level keys replacing them whole, profiles
    merged by name; the resolution study's 32×32 twin shares the 64×64 rows and pretrains
    exactly §3's baseline (the same pretraining folder)."""
    parent = write_study(tmp_path / "parent.yaml", {**tiny_study(), "overrides": ["data.size=16"],
                                                    "profiles": {"tiny": tiny_study()["profiles"]["tiny"],
                                                                 "other": {"seeds": [3]}}})
    child = write_study(tmp_path / "child.yaml", {"extends": parent.name, "name": "child", "overrides": [],
                                                 "profiles": {"tiny": {"seeds": [1]}}})
    a, b = load_study(parent, "tiny"), load_study(child, "tiny")
    assert [v.name for v in b.variants] == [v.name for v in a.variants] and b.name == "child"
    assert "data.size=16" in a.overrides and "data.size=16" not in b.overrides and b.seeds == (1,)
    assert load_study(child, "other").seeds == (3,)
    loop = write_study(tmp_path / "loop.yaml", {"extends": "loop.yaml"})
    with pytest.raises(ValueError, match="extends='loop.yaml' leads back to itself"):
        load_study(loop, "tiny")
    with pytest.raises(ValueError, match="extends=3 is not accepted"):
        load_study(write_study(tmp_path / "bad.yaml", {"extends": 3}), "tiny")
    twin = plan_runs(load_study(STUDIES / "resolution_textures_32.yaml", "small"), tmp_path / "t")
    sec3 = plan_runs(load_study(STUDIES / "images_textures_finetune.yaml", "small"), tmp_path / "s")
    assert twin[0].protocol == sec3[0].protocol == "pretrain"
    assert twin[0].run_dir.parent.name == sec3[0].run_dir.parent.name
    big = plan_runs(load_study(STUDIES / "resolution_textures_64.yaml", "small"), tmp_path / "b")
    assert big[0].config["data"]["size"] == 64 and twin[0].config["data"]["size"] == 32
    assert [s.variant for s in big[1:]] == [s.variant for s in twin[1:]]


def test_shipped_studies_exist():
    names = {p.stem for p in STUDIES.glob("*.yaml")}
    assert {"toy_checkerboard", "images_textures", "images_textures_finetune", "images_fashion",
            "audio_vocoder"} <= names


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("change, match", [
    ({"variant": [{"name": "x"}]}, "unknown key study.variant; accepted keys in study"),
    ({"seeds": "0"}, "study.seeds='0' has the wrong type; expected a list of an integer"),
    ({"variants": [{"name": "a b"}]}, "variants\\[0\\].name='a b'"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "appears twice"),
    ({"variants": [{"name": "a", "overrides": ["regularizer.los=haar"]}], "baseline": None},
     "variant 'a'.*regularizer.los"),
    ({"evaluation": {"reference": "cifar"}}, "evaluation.reference='cifar'"),
    ({"evaluation": {"n_samples": 0}}, "evaluation.n_samples=0"),
    ({"protocol": "finetune"}, "finetune.steps"),
    ({"baseline": "nope"}, "baseline 'nope'"),
    ({"evaluation": {"reference": "speech"}}, "reference='speech' does not fit data.kind='textures'"),
    ({"evaluation": {"metrics": ["peak_energy"]}}, "'peak_energy', which is not measured"),
    ({"evaluation": {"metrics": ["lsd"], "columns": ["pesq"]}}, "columns contains 'pesq'"),
    ({"evaluation": {"n_sample": 3}}, "unknown key evaluation.n_sample; accepted keys in evaluation"),
    ({"profiles": {"tiny": {"evaluation": {"n_samples": -1}}}}, "profiles.tiny.evaluation.n_samples=-1"),
])
def test_bad_studies_name_the_key(change, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        plan_runs(load_study(tiny_study(**change), "tiny"), tmp_path)


def test_unknown_profile_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"profile='huge'.*\['tiny', 'small'\]"):
        load_study(tiny_study(), "huge")


def test_changed_settings_rerun_instead_of_skipping(tiny_run, tmp_path):
    """A finished run is reused only with the same settings: more samples re-measure it."""
    study, out, _ = tiny_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    changed = tiny_study(evaluation={**tiny_study()["evaluation"], "n_samples": 4})
    specs = plan_runs(load_study(changed, "tiny"), copy)
    assert [s.status for s in specs] == ["resume", "resume"]  # a checkpoint, but not these metrics
    assert isinstance(specs[0], RunSpec)


def test_curve_checkpoints_leave_training_unchanged(tiny_run, tmp_path):
    """Keeping a checkpoint per curve point does not change the weights of the run, and
    the last point of the curve is the final measurement (same samples)."""
    study, out, _ = tiny_run
    raw = tiny_study()
    raw["evaluation"] = {**raw["evaluation"], "curve_every": 2, "curve_samples": 8}
    result = run_compare(raw, tmp_path / "out", "tiny")
    spec = next(s for s in result.runs if s.variant == "baseline")
    assert spec.curve and not next(s for s in result.runs if s.variant == "haar").curve
    points = json.loads((spec.run_dir / "curve.json").read_text())
    assert [p["step"] for p in points] == [2, 3]
    final = json.loads((spec.run_dir / DONE_FILE).read_text())["metrics"]
    assert points[-1]["metrics"]["lsd"] == pytest.approx(final["lsd"], rel=1e-12)
    assert points[0]["metrics"]["lsd"] != pytest.approx(final["lsd"], rel=1e-6)
    one = load_file(str(list_checkpoints(out / "runs" / "baseline" / "seed0" / "checkpoints")[-1] /
                        "model.safetensors"))
    seg = load_file(str(list_checkpoints(spec.run_dir / "checkpoints")[-1] / "model.safetensors"))
    for k in one:
        torch.testing.assert_close(seg[k], one[k], atol=0, rtol=0)
    assert "## Training curves" in result.report.read_text()


def test_a_run_being_trained_elsewhere_is_not_touched(tmp_path):
    """A second process on the same run directory stops with a message instead of mixing
    checkpoints (the lock is held by a subprocess here)."""
    import subprocess
    import sys

    pytest.importorskip("fcntl")
    study = write_study(tmp_path / "tiny.yaml", tiny_study())
    run_dir = tmp_path / "out" / "runs" / "baseline" / "seed0"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(run_dir / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match="being trained by another process"):
            run_compare(study, tmp_path / "out", "tiny")
        assert not (run_dir / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- many GPUs and clusters


def test_workers_take_one_gpu_each():
    from specreg.experiments.compare import gpu_of_slot

    assert [gpu_of_slot(k, 4) for k in range(6)] == ["0", "1", "2", "3", "0", "1"]
    assert [gpu_of_slot(k, 2, "3,5") for k in range(3)] == ["3", "5", "3"]  # within what the user made visible


def test_a_study_through_submitit_local_jobs_gives_the_local_results(tiny_run, tmp_path):
    """2 variants × 2 seeds as submitit local jobs: the same run directories, records and
    results as the study run in this process (and a second invocation skips them all)."""
    pytest.importorskip("submitit")
    from specreg.experiments.cluster import ClusterOptions

    raw = tiny_study(seeds=[0, 1])
    local = run_compare(raw, tmp_path / "here", "tiny")
    jobs = run_compare(raw, tmp_path / "jobs", "tiny", cluster=ClusterOptions("local"))
    assert [s.status for s in jobs.runs] == ["trained"] * 4
    assert list((tmp_path / "jobs" / "submitit").iterdir())  # the jobs' logs
    for name, row in local.results.rows.items():
        for key, stat in row.stats.items():
            assert jobs.results.rows[name].stats[key].by_seed == pytest.approx(stat.by_seed, rel=1e-6)
    again = run_compare(raw, tmp_path / "jobs", "tiny", cluster=ClusterOptions("local"))
    assert [s.status for s in again.runs] == ["done"] * 4


def test_an_orphaned_worker_takes_no_further_run(monkeypatch):
    """A pool worker whose parent died (it got SIGTERM, stopped its run at a checkpoint)
    must exit instead of training the next queued run unseen."""
    from specreg.experiments import compare
    from specreg.train import TrainingInterrupted

    class Exited(Exception):
        pass

    def fake_exit(code):
        raise Exited(code)

    started = []

    def fake_execute(spec, ev, threads, parallel=None):
        started.append(spec)
        if spec == "dies":  # the parent dies while this run trains: the trainer stops it
            monkeypatch.setattr(compare, "_parent_pid", os.getppid() + 1)
            raise TrainingInterrupted("SIGTERM", 5, None)
        return {"status": "done"}

    monkeypatch.setattr(compare, "execute", fake_execute)
    monkeypatch.setattr(compare.os, "_exit", fake_exit)
    monkeypatch.setattr(compare, "_parent_pid", os.getppid())
    monkeypatch.setattr(compare, "_worker_stop", None)
    assert compare._execute_in_worker("a", None) == {"status": "done"}  # parent alive: runs
    with pytest.raises(Exited) as err:  # interrupted by the parent's death: exits, no re-raise
        compare._execute_in_worker("dies", None)
    assert err.value.args == (143,)
    with pytest.raises(Exited):  # the next queued run is never started
        compare._execute_in_worker("b", None)
    assert started == ["a", "dies"]


def test_a_fine_tuning_of_another_pretraining_is_not_resumed(tmp_path, capsys):
    """A fine-tuning's folder is named by variant and seed only: a study run again into the
    same --out with another pretraining (here another profile's pretraining steps; the
    fine-tuning itself is unchanged) must not resume the earlier fine-tunings as its own.
    It is refused in one line before anything trains, the dry run included; a copy of the
    study folder elsewhere still resumes and finds its runs done."""
    import shutil

    study = tiny_study(protocol="finetune", finetune={"steps": 2, "overrides": []})
    first = run_compare(study, tmp_path / "out", "tiny")
    ft = next(s for s in first.runs if s.protocol == "finetune")
    assert list_checkpoints(ft.run_dir / "checkpoints")
    path = write_study(tmp_path / "s.yaml", study)
    parser = argparse.ArgumentParser()
    add_compare_parser(parser.add_subparsers())
    args = parser.parse_args(["compare", str(path), "--out", str(tmp_path / "out"), "--profile", "small",
                              "--dry-run"])
    with pytest.raises(ValueError, match=r"holds a fine-tuning of another pretrained model .*use a new --out folder"):
        args.func(args)
    with pytest.raises(ValueError, match="another pretrained model"):
        run_compare(study, tmp_path / "out", "small")
    shutil.copytree(tmp_path / "out", tmp_path / "moved")
    again = plan_runs(load_study(path, "tiny"), tmp_path / "moved")
    assert {s.status for s in again} == {"done"}
    from specreg.experiments.plan import status

    for spec in (s for s in again if s.protocol == "finetune"):  # killed before its record: resumed
        spec.recorded = None
        assert status(spec) == "resume"


def test_a_curve_run_checkpoints_at_its_own_interval_and_keeps_the_curve_points(tmp_path):
    """A run measured along training used to checkpoint only every evaluation.curve_every
    steps, so a stopped run could lose more than train.checkpoint_every. It now writes a
    checkpoint every gcd(checkpoint_every, curve_every) steps and keeps the curve's points
    beyond train.keep_checkpoints; the curve is measured at those points only."""
    study = tiny_study(overrides=[*TINY_OVERRIDES, "train.checkpoint_every=2", "train.keep_checkpoints=3"],
                       evaluation={**tiny_study()["evaluation"], "curve_every": 3, "curve_samples": 4},
                       variants=[{"name": "baseline"}], profiles={"tiny": {"overrides": ["train.steps=7"]}})
    result = run_compare(study, tmp_path / "out", "tiny")
    spec = next(s for s in result.runs if s.variant == "baseline")
    kept = [p.name for p in list_checkpoints(spec.run_dir / "checkpoints")]
    # gcd(2, 3) = 1: a checkpoint every step; kept: the newest three (5, 6, 7) and the multiples
    # of 3 (before: checkpoints at 3, 6 and the last step only)
    assert kept == ["step-00000003", "step-00000005", "step-00000006", "step-00000007"]
    curve = json.loads((spec.run_dir / "curve.json").read_text())
    assert [p["step"] for p in curve] == [3, 6, 7]


def test_a_curve_point_is_measured_when_its_checkpoint_is_written(tmp_path, monkeypatch):
    """A long pretraining's curve used to be measured only after its last step, so a run
    stopped part-way had no curve to read. Each point is now measured as soon as its
    checkpoint exists (the newest checkpoint on disk is the point's own), records its
    seconds, and those seconds are not counted as training time."""
    import specreg.experiments.runner as runner

    SLOW = 2.0

    seen: list[tuple[int, int]] = []
    real_sample = runner.sample

    def spy(spec, ev, real, n, checkpoint=None):
        if checkpoint is not None:  # a curve point, not the final samples
            newest = list_checkpoints(spec.run_dir / "checkpoints")[-1]
            seen.append((int(checkpoint.name.split("-")[1]), int(newest.name.split("-")[1])))
            time.sleep(SLOW)  # a point far slower than the run's own writing after its last log line
        return real_sample(spec, ev, real, n, checkpoint=checkpoint)

    monkeypatch.setattr(runner, "sample", spy)
    study = tiny_study(evaluation={**tiny_study()["evaluation"], "curve_every": 2, "curve_samples": 4},
                       variants=[{"name": "baseline"}], profiles={"tiny": {"overrides": ["train.steps=5"]}})
    result = run_compare(study, tmp_path / "out", "tiny")
    spec = result.runs[0]
    curve = json.loads((spec.run_dir / "curve.json").read_text())
    assert [p["step"] for p in curve] == [2, 4, 5]
    assert all(p["inline"] and p["seconds"] >= SLOW for p in curve)
    assert seen == [(2, 2), (4, 4), (5, 5)]  # each measured before training went on
    logged = [json.loads(line) for line in (spec.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_s = json.loads((spec.run_dir / DONE_FILE).read_text())["timing"]["train_s"]
    # the trainer's clock less the measuring: its last log line's time plus the final
    # checkpoint's writing, which takes well under one point's SLOW seconds even on a busy
    # machine (counting a single point would add at least SLOW)
    assert train_s < max(r["time"] for r in logged if "time" in r) + 0.75 * SLOW


def test_require_plateau_stops_before_fine_tuning_from_a_pretraining_still_improving(tmp_path, monkeypatch):
    """--require-plateau: the fine-tunings start only when every pretraining's curve meets the
    strict rule (20 % verdict within 2f, last 25 % within f) in each tabulated distance;
    otherwise the study stops in one line naming the run, the metric and its gains."""
    import specreg.experiments.compare as compare

    steps = [2, 4, 6, 8]
    study = tiny_study(protocol="finetune", finetune={"steps": 2},
                       evaluation={**tiny_study()["evaluation"], "curve_every": 2, "curve_samples": 4})
    monkeypatch.setattr(compare, "measure_floor", lambda *a, **k: {"curve_metrics": {"lsd": 0.01, "lsd_high": 0.01}})

    class FineTuning(Exception):
        pass

    def run(high: list[float], at: list[int] = steps) -> list[str]:
        ran: list[str] = []

        def fake_execute(spec, ev, **_):
            ran.append(spec.protocol if spec.protocol == "pretrain" else spec.variant)
            if spec.protocol != "pretrain":
                raise FineTuning
            record = fake_record(spec)
            curve = [{"step": s, "metrics": {"lsd": 0.05, "lsd_high": h}} for s, h in zip(at, high)]
            spec.recorded = RunRecord.from_dict({**record.to_dict(), "curve": curve})
            return spec.recorded

        monkeypatch.setattr(compare, "execute", fake_execute)
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        with pytest.raises((FineTuning, ValueError)) as caught:
            run_compare(study, out, "tiny", require_plateau=True)
        return [*ran, str(caught.value)]

    # the high band gains 0.015 over the last 25 % (6 → 8, also the 20 % window): within 2f, beyond f
    got = run([0.2, 0.1, 0.035, 0.02])
    assert got[0] == "pretrain" and len(got) == 2
    assert got[1].startswith("--require-plateau: not fine-tuning; _pretrain/") and "lsd_high gained 0.015" in got[1]
    assert "\n" not in got[1] and " lsd " not in got[1]  # LSD is flat: only the high band is named
    # within f: the fine-tunings start
    assert run([0.2, 0.1, 0.025, 0.02])[:2] == ["pretrain", "baseline"]
    # one point cannot show a plateau
    assert "seed0 has 1 curve point(s), too few to tell" in run([0.02], at=[8])[1]
    # a study without a curve cannot be held to it, before anything trains
    refused = r"require_plateau \(--require-plateau\) is not accepted for 'tiny' \(evaluation.curve_every=0"
    with pytest.raises(ValueError, match=refused):
        run_compare(tiny_study(protocol="finetune", finetune={"steps": 2}), tmp_path / "none", "tiny",
                    require_plateau=True)
    assert "--require-plateau" in compare.compare_command("s.yaml", "out", "small", require_plateau=True)
