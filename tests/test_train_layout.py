"""The training package stays split by concern: no module over 450 lines, no plotting or
study code imported, and a regularizer's state reached through TrainingExtras only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAIN = Path(__file__).resolve().parents[1] / "src" / "specreg" / "train"
MODULES = sorted(TRAIN.glob("*.py"))
# what the trainer once probed a regularizer for with getattr/hasattr
PROBED = {"needs_fit", "fit", "per_band", "band_labels", "band_weights", "loss"}


def _imports(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_the_package_is_found():
    assert {"trainer.py", "runtime.py", "order.py", "ema.py", "log.py"} <= {p.name for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_a_train_module_is_short_and_imports_no_plotting_or_studies(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 450, f"{path.name} has {len(text.splitlines())} lines; split it by concern"
    bad = sorted(m for m in _imports(ast.parse(text))
                 if m.split(".")[0] == "matplotlib" or m.startswith(("specreg.metrics", "specreg.experiments")))
    assert not bad, f"{path.name} imports {bad}: figures and studies belong to the caller"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_train_module_probes_a_regularizer_for_attributes(path):
    probes = [node.args[1].value for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in PROBED]
    assert not probes, f"{path.name} probes {probes}; use specreg.losses.extras.TrainingExtras"
