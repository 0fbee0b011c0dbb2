"""One module owns the layout of a run directory and of a study folder (specreg.layout):
no other source file spells one of its names, records round-trip, old folders load, and
the study's results are collected from the records the runs returned, not read back."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from specreg import layout
from specreg.layout import RunRecord, read_run_record, write_run_record

SRC = Path(layout.__file__).resolve().parent


def _names() -> list[str]:
    """Every file and folder name the layout module defines (its upper-case constants)."""
    out: set[str] = set()
    for attr, value in vars(layout).items():
        if not attr.isupper():
            continue
        for v in value if isinstance(value, tuple) else (value,):
            out.add(str(v))
    return sorted(out)


def _strings(tree: ast.AST) -> list[tuple[ast.Constant, bool]]:
    """Every string constant that is not a docstring, with whether it is the right side of a
    ``/`` (a path join such as ``run_dir / "checkpoints"``)."""
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    joined = {id(n.right) for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)}
    return [(n, id(n) in joined) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def _offenders(source: str) -> list[tuple[int, str]]:
    """(line, name) of every layout name ``source`` spells: a string that is a file name (with
    a dot) or ends in one after a "/" (an f-string's ``f"{folder}/run.json"``), or a folder
    name (a bare word such as "samples") joined onto a path. Prose that names a file (help
    texts, messages) and docstrings may."""
    names = _names()
    dotted = [n for n in names if "." in n.lstrip(".")]
    bare = [n for n in names if n not in dotted and "/" not in n]
    found = []
    for node, is_joined in _strings(ast.parse(source)):
        found += [(node.lineno, n) for n in dotted if re.search(rf"(?:^|/){re.escape(n)}(?:$|/)", node.value)]
        if is_joined and node.value in bare:
            found.append((node.lineno, node.value))
    return found


def test_no_module_but_the_layout_spells_a_run_or_study_file_name():
    names = set(_names())
    assert {"run.json", "metrics.jsonl", "results.json", "report.md", "study.json", "checkpoints", "samples",
            "probe", "runs"} <= names
    found = [f"{path.relative_to(SRC)}:{line}: {name!r}" for path in sorted(SRC.rglob("*.py"))
             if path != SRC / "layout.py" for line, name in _offenders(path.read_text(encoding="utf-8"))]
    assert not found, "\n".join(found)


def test_the_grep_finds_a_name_spelled_elsewhere():
    """The check above can fail: constants, joined folders and f-string paths are found;
    docstrings and prose are not."""
    source = ('"""run.json in a docstring"""\nRECORD = "run.json"\npath = run_dir / "checkpoints"\n'
              'name = f"{x}/report.md"\nhelp = "writes report.md and results.json"\n')
    assert _offenders(source) == [(2, "run.json"), (3, "checkpoints"), (4, "report.md")]


def test_a_record_round_trips_and_keeps_what_it_does_not_know(tmp_path):
    raw = {"key": "k", "variant": "v", "seed": 1, "protocol": "scratch", "pretrained": None, "evaluation": {},
           "status": "done", "step": 3, "metrics": {"lsd": 0.5}, "labels": {"lsd": "LSD"}, "skipped": {},
           "spectrum": {"freqs": [0.0], "power": [1.0]}, "reference": "r", "curve": None,
           "timing": {"train_s": 1.0, "steps": 3}, "n_samples": 4, "sample_seed": 1, "from_the_future": [1]}
    write_run_record(tmp_path, RunRecord.from_dict(raw))
    assert json.loads((tmp_path / "run.json").read_text()) == raw
    back = read_run_record(tmp_path)
    assert back is not None and back.to_dict() == raw and back.extra == {"from_the_future": [1]}
    diverged = RunRecord("k", "v", 1, status="diverged", error="nan loss").to_dict()
    assert "curve" not in diverged and diverged["pretrained"] is None and "metrics" not in diverged


def test_an_old_record_loads_and_is_replaced_when_rewritten(tmp_path):
    """Records of earlier versions (metrics.json; a diverged run without timing or curve in
    its record) load with what lies beside them; rewriting removes the old name."""
    (tmp_path / "metrics.json").write_text(json.dumps({"key": "k", "variant": "v", "seed": 0, "status": "diverged"}))
    (tmp_path / "timing.json").write_text(json.dumps({"train_s": 2.0, "steps": 5}))
    (tmp_path / "curve.json").write_text(json.dumps([{"step": 5, "metrics": {"lsd": 1.0}}]))
    rec = read_run_record(tmp_path)
    assert rec is not None and rec.status == "diverged" and rec.timing == {"train_s": 2.0, "steps": 5}
    assert rec.curve == [{"step": 5, "metrics": {"lsd": 1.0}}]
    write_run_record(tmp_path, rec)
    assert not (tmp_path / "metrics.json").exists() and read_run_record(tmp_path).key == "k"
    assert read_run_record(tmp_path / "nothing") is None


def test_results_come_from_the_returned_records_not_from_disk(tmp_path):
    """collect reads no run.json: with every record deleted after the runs returned them,
    the results are those of the records (before: rows without any finished seed)."""
    pytest.importorskip("torch")
    from test_compare import fake_record, results_of, tiny_study

    from specreg.experiments.compare import load_study, plan_runs

    study = load_study(tiny_study(seeds=[0, 1]), "tiny")
    specs = plan_runs(study, tmp_path)
    for spec in specs:
        fake_record(spec, {"lsd": 0.1 + spec.seed, "lsd_high": 0.2, "lsd_high_bias": 0.0})
        spec.record_path.unlink()
    res = results_of(study, specs, tmp_path)
    assert res.rows["baseline"].n_done == 2 and res.rows["baseline"].stats["lsd"].mean == pytest.approx(0.6)
    assert [t["status"] for t in res.timing] == ["done"] * len(specs)
