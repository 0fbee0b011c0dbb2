"""Metric knowledge lives in ``specreg.metrics``: no module outside it names a metric.

Every string literal of the Python sources of ``src/specreg`` outside ``metrics/`` is read
with :mod:`ast` (docstrings skipped, comments are not literals); a literal that equals a
metric's name or one of its result keys (from the registry, legacy keys included) fails
the test. Configs (YAML) may name metrics: that is what they are for. Names that are also
the names of other things are allowed only where they mean that thing, listed below.
"""

from __future__ import annotations

import ast
from pathlib import Path

from specreg.metrics.registry import LEGACY_KEYS, METRICS

SRC = Path(__file__).resolve().parents[1] / "src" / "specreg"

# (file inside src/specreg, literal): why the literal there is not a metric name
OTHER_MEANINGS = {
    ("losses/registry.py", "mrstft"): "the loss of that name (losses registry)",
    ("train/build.py", "mrstft"): "the loss of that name (a regularizer config's loss)",
    ("_optional.py", "pesq"): "the pip package of that name",
}


def metric_strings() -> set[str]:
    names = set(METRICS) | set(LEGACY_KEYS)
    names |= {k.name for m in METRICS.values() for k in m.keys}
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


def offenders(root: Path = SRC) -> list[str]:
    names = metric_strings()
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("metrics/"):
            continue
        for line, value in literals(path):
            if value in names and (rel, value) not in OTHER_MEANINGS:
                out.append(f"{rel}:{line}: {value!r}")
    return out


def test_no_metric_name_outside_the_metrics_package():
    found = offenders()
    assert not found, ("metric names written outside specreg.metrics (read them from the registry entry "
                       "instead):\n" + "\n".join(found))


def test_the_check_finds_a_name_and_skips_docstrings(tmp_path):
    """The check itself can fail: a literal metric name is found, a docstring or comment is not."""
    (tmp_path / "mod.py").write_text('"""lsd_high in a docstring"""\n# domain_fd in a comment\n'
                                     'KEY = "lsd_high"\nOTHER = f"{KEY}_x"\n', encoding="utf-8")
    assert offenders(tmp_path) == ["mod.py:3: 'lsd_high'"]


def test_other_meanings_are_still_there():
    """An allowance whose literal has gone is stale: remove it."""
    for (rel, value) in OTHER_MEANINGS:
        assert value in {v for _, v in literals(SRC / rel)}, f"{rel} no longer has {value!r}"


def test_the_engine_names_no_metric():
    """Inside specreg.metrics only the registry (and each metric's own module) names metrics:
    the engine, the accumulators of the streaming side, the floor and the protocol do not."""
    names = metric_strings()
    found = [f"{rel}:{line}: {value!r}" for rel in ("streaming.py", "floor.py", "evaluation.py", "accumulator.py",
                                                    "rules.py", "plots.py")
             for line, value in literals(SRC / "metrics" / rel) if value in names]
    assert not found, "\n".join(found)
