"""Lint and types: ``ruff check src tests benchmarks examples scripts`` and ``mypy src/specreg`` report nothing.

Both read their settings from pyproject.toml ([tool.ruff], [tool.mypy]) and run from the
repository root, as a developer would run them. mypy keeps its cache in .mypy_cache, so a
second run takes seconds.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_tool(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (it comes with the test extra: pip install -e '.[test]')")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"`python -m {module} {' '.join(args)}` exited with {proc.returncode}:\n"
                    f"{proc.stdout}{proc.stderr}", pytrace=False)


def test_ruff_finds_nothing_in_the_code() -> None:
    _run_tool("ruff", "check", "src", "tests", "benchmarks", "examples", "scripts")


def test_mypy_finds_nothing_in_the_package() -> None:
    _run_tool("mypy", "src/specreg")
