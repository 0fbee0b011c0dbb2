"""The shape of the house, as tests: module sizes, no import cycles, imports point down.

Rules (read from the source with ``ast``, nothing is imported):

* **Size**: every module under ``src/specreg`` has at most :data:`MAX_LINES` lines.
* **No cycles**: the graph "module A imports module B" over all ``specreg`` modules has no
  cycle.
* **Layers**: a module imports only modules of its own layer or of a lower one, in the
  order of :data:`LAYERS` (the data's path: transforms → losses → regularizer → diffusion →
  models, data → train, integrations → metrics → experiments → CLI). Within a layer any
  import is allowed; the cycle check keeps it one-way. ``models`` and ``data`` share a
  layer below ``train`` (training builds networks and data sets, never the reverse);
  ``integrations`` (plug-ins for other trainers) sits beside ``train``.
* **Base**: the small shared modules in :data:`BASE` (argument checks, optional extras,
  file I/O, YAML schemas, stop signals) may be imported from anywhere and import no other
  ``specreg`` module except each other.
* **The root package** ``specreg/__init__.py`` is the public facade: it imports its names
  on first use (PEP 562) and names them statically only under ``TYPE_CHECKING``, so
  ``from specreg import __version__`` loads nothing and is allowed from every layer. The
  test checks that it keeps it that way (no run-time import of a ``specreg`` module) and
  leaves it out of the other checks.

What counts as an import: ``import a.b``, ``from a.b import c`` (an edge to ``a.b.c`` when
that is a module, else to ``a.b``; a package is its ``__init__``) and relative imports,
wherever they stand. An edge goes to the module named, not to the packages above it whose
``__init__`` also runs: a package that re-exports its own submodules is not a cycle.

**Lazy imports inside functions count** like top-level ones: deferring an import hides
an upward dependency or a cycle from Python at import time, not from the reader
(``specreg --help`` stays fast by importing inside functions, which is fine as long as
those imports point down). Imports under ``if TYPE_CHECKING:`` count too: a type
annotation is knowledge of the other layer.

Allow-lists (each entry is checked to be still needed, so a fixed entry must be removed):

* :data:`BEING_SPLIT`: modules over the size limit that are being split in the same
  round of issue 30; the lead removes the list at merge.
* :data:`KNOWN_UPWARD`: upward imports found when these tests were written, each with
  where it stands and which item of issue 30 removes it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "specreg"
MAX_LINES = 450

# Lowest first. A key is a module or subpackage directly under specreg/.
LAYERS: dict[str, int] = {
    "transforms": 1,
    "losses": 2,
    "regularizer": 3,
    "band_weights": 3,  # learned band weights of the quadratic losses, used by the regularizer
    "diffusion": 4,
    "models": 5,
    "data": 5,
    "train": 6,
    "integrations": 6,
    "metrics": 7,
    "experiments": 8,
    "demo": 8,  # specreg/demo.py: a compatibility alias of experiments/demo.py
    "cli": 9,
}
BASE = frozenset({"_checks", "_optional", "files", "layout", "schema", "stopping"})

# Modules being split by other engineers in the same round of issue 30 (trainer by concern,
# image data, timestep samplers, report, evaluation engine). The lead removes this list when
# the splits are merged; test_size_allow_list_is_still_needed fails for an entry that fits.
BEING_SPLIT: frozenset[str] = frozenset()

# (importer, imported) pairs that point up. Each names the line it stood on when found.
KNOWN_UPWARD: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: str  # inside the repo's src/
    line: int
    lazy: bool  # inside a function
    type_checking: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        where = "inside a function" if self.lazy else "under TYPE_CHECKING" if self.type_checking else "top level"
        return f"{self.path}:{self.line} {self.importer} imports {self.imported} ({where})"


def _modules() -> dict[str, Path]:
    """Dotted module name → file; a package is named by its ``__init__.py``."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest prefix of ``name`` that is a module (``specreg.x.y.func`` → ``specreg.x.y``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(stmt: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The specreg modules one import statement names (``from a import b``: ``a.b`` when that
    is a module, else ``a``; relative imports resolved against ``package``)."""
    if isinstance(stmt, ast.Import):
        names = [a.name for a in stmt.names]
    else:
        source = stmt.module or ""
        if stmt.level:
            parts = package.split(".")
            source = ".".join(parts[: len(parts) - (stmt.level - 1)] + ([source] if source else []))
        names = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in stmt.names]
    return [t for t in (_resolve(n) for n in names if n.split(".")[0] == PACKAGE) if t is not None]


def _walk(node: ast.AST, *, lazy: bool, type_checking: bool, module: str, package: str,
          rel: str) -> Iterator[Import]:
    """Every specreg import below ``node``, with whether it stands in a function and whether
    under ``if TYPE_CHECKING:`` (its body only: an ``else`` branch runs)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _targets(child, package):
                if target != module:
                    yield Import(module, target, rel, child.lineno, lazy, type_checking)
        elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for branch, tc in ((child.body, True), (child.orelse, type_checking)):
                block = ast.Module(body=branch, type_ignores=[])
                yield from _walk(block, lazy=lazy, type_checking=tc, module=module, package=package, rel=rel)
        else:
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _walk(child, lazy=inner, type_checking=type_checking, module=module, package=package,
                             rel=rel)


def _imports() -> list[Import]:
    out: list[Import] = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        rel = path.relative_to(SRC).as_posix()
        out.extend(_walk(tree, lazy=False, type_checking=False, module=module, package=package, rel=rel))
    return out


IMPORTS = _imports()
EDGES = [i for i in IMPORTS if i.importer != PACKAGE]  # the root facade: see test_root_package_loads_nothing


def _top(module: str) -> str:
    """``specreg.metrics.plots`` → ``metrics``; ``specreg`` → ``""``."""
    return module.split(".")[1] if "." in module else ""


def _layer(module: str) -> int:
    top = _top(module)
    if top in BASE or module == PACKAGE:  # the root facade loads nothing when imported
        return 0
    return LAYERS[top]


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


# ----------------------------------------------------------------------------------------
# The walker itself, on a made-up module (so the rules below cannot pass by reading nothing)


def test_the_walker_sees_top_level_lazy_relative_and_type_checking_imports(tmp_path):
    src = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import specreg.losses.fourier\n"
        "from specreg.metrics import plots\n"
        "from ..diffusion import samplers\n"
        "if TYPE_CHECKING:\n"
        "    from specreg.models.vae import ConvVAE\n"
        "else:\n"
        "    from specreg.data import audio\n"
        "def f():\n"
        "    from specreg.experiments.study import load_study\n"
        "    return load_study\n"
    )
    found = {(i.imported, i.line, i.lazy, i.type_checking)
             for i in _walk(ast.parse(src), lazy=False, type_checking=False, module="specreg.train.fake",
                            package="specreg.train", rel="specreg/train/fake.py")}
    assert found == {
        ("specreg.losses.fourier", 3, False, False),
        ("specreg.metrics.plots", 4, False, False),
        ("specreg.diffusion.samplers", 5, False, False),
        ("specreg.models.vae", 7, False, True),
        ("specreg.data.audio", 9, False, False),
        ("specreg.experiments.study", 11, True, False),
    }


def test_every_module_has_a_layer():
    unplaced = sorted({_top(m) for m in MODULES if m != PACKAGE} - set(LAYERS) - BASE)
    assert not unplaced, f"specreg/{unplaced[0]} has no layer: add it to LAYERS or BASE in this file"
    assert len(IMPORTS) > 100, "the walker found almost no imports: it reads nothing"


# ----------------------------------------------------------------------------------------
# Size


def test_no_module_over_the_line_limit():
    long = sorted(f"{p.relative_to(SRC).as_posix()} ({_lines(p)} lines)" for p in MODULES.values()
                  if _lines(p) > MAX_LINES and p.relative_to(SRC).as_posix() not in BEING_SPLIT)
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_size_allow_list_is_still_needed():
    fits = sorted(name for name in BEING_SPLIT if not (SRC / name).is_file() or _lines(SRC / name) <= MAX_LINES)
    assert not fits, f"remove from BEING_SPLIT in tests/test_architecture.py (now absent or within the limit): {fits}"


# ----------------------------------------------------------------------------------------
# Cycles and direction


def _cycle(edges: list[Import]) -> list[str] | None:
    """One import cycle among ``edges``, as [a, b, …, a], or None."""
    graph: dict[str, set[str]] = {}
    for i in edges:
        graph.setdefault(i.importer, set()).add(i.imported)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = dfs(w)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = dfs(v)
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = _cycle(EDGES)
    if cycle:
        steps = [next(str(i) for i in EDGES if i.importer == a and i.imported == b) for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle " + " → ".join(cycle) + ":\n" + "\n".join(steps))


def test_the_checks_find_a_planted_cycle_and_upward_import():
    # diffusion/edm.py imports losses (through regularizer); a lazy import back closes a cycle
    planted = Import("specreg.losses.base", "specreg.diffusion.edm", "specreg/losses/base.py", 1, True, False)
    cycle = _cycle(EDGES + [planted])
    assert cycle is not None and cycle[0] == cycle[-1] and "specreg.losses.base" in cycle
    assert planted in _upward(EDGES + [planted])


def _upward(edges: list[Import]) -> list[Import]:
    return [i for i in edges if _layer(i.imported) > _layer(i.importer)]


def test_imports_point_down_only():
    up = [i for i in _upward(EDGES) if (i.importer, i.imported) not in KNOWN_UPWARD]
    assert not up, "upward imports (order: " + " < ".join(LAYERS) + "):\n" + "\n".join(map(str, up))


def test_base_modules_import_only_base_modules():
    bad = [str(i) for i in EDGES if _top(i.importer) in BASE and _top(i.imported) not in BASE]
    assert not bad, "\n".join(bad)


def test_known_upward_imports_are_still_there():
    present = {(i.importer, i.imported) for i in _upward(EDGES)}
    gone = sorted(KNOWN_UPWARD - present)
    assert not gone, f"remove from KNOWN_UPWARD in tests/test_architecture.py (fixed): {gone}"


def test_root_package_loads_nothing():
    runtime = [str(i) for i in IMPORTS if i.importer == PACKAGE and not i.type_checking]
    assert not runtime, "specreg/__init__.py must import its names on first use:\n" + "\n".join(runtime)
