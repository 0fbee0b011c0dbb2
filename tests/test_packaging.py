"""The package as users get it: sdist and wheel build, ``twine check`` passes, the wheel
holds the code, configs and assets and nothing else, the metadata is complete, the core
dependencies are torch, numpy and PyWavelets, and the version is written once.

The build runs offline (``--no-isolation``: the setuptools of this environment) on a copy
of the files a build reads, so the work tree is left as it was.
"""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import specreg
from specreg._optional import EXTRA_MODULES

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
Requirement = pytest.importorskip("packaging.requirements").Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
# import name → distribution name, where they differ
DISTRIBUTION = {"yaml": "pyyaml", "PIL": "pillow", "skimage": "scikit-image", "sklearn": "scikit-learn"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``python -m build`` (sdist, then the wheel from it) on a copy of the project's files."""
    pytest.importorskip("build")
    src = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = src / "dist"
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SetuptoolsDeprecationWarning" not in result.stdout + result.stderr
    return out


def only(folder: Path, pattern: str) -> Path:
    files = sorted(folder.glob(pattern))
    assert len(files) == 1, files
    return files[0]


def test_twine_check_passes(dist):
    pytest.importorskip("twine")
    files = [str(only(dist, "*.whl")), str(only(dist, "*.tar.gz"))]
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_wheel_holds_code_configs_and_assets_only(dist):
    wheel = only(dist, f"specreg-{specreg.__version__}-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # every file of the package folder ships (code, configs, studies, assets, py.typed): a data
    # file that pyproject's package-data misses fails here
    package = ROOT / "src" / "specreg"
    expected = {f"specreg/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    inside = {n for n in names if n.startswith("specreg/")}
    assert inside == expected, (sorted(expected - inside), sorted(inside - expected))
    assert "specreg/configs/demo.yaml" in inside and "specreg/py.typed" in inside
    assert any(n.endswith(".safetensors") for n in inside)  # the domain classifiers' weights
    info = f"specreg-{specreg.__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    assert names - inside <= {f"{info}/{n}" for n in
                              ("METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt", "licenses/LICENSE")}
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "specreg = specreg.cli:main" in entry_points


def test_sdist_holds_what_a_build_needs(dist):
    sdist = only(dist, f"specreg-{specreg.__version__}.tar.gz")
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "src/specreg/__init__.py",
                 "src/specreg/configs/demo.yaml", "src/specreg/py.typed"):
        assert name in names, name


def test_metadata_is_complete_and_the_core_is_light(dist):
    wheel = only(dist, "*.whl")
    meta = email.message_from_bytes(
        zipfile.ZipFile(wheel).read(f"specreg-{specreg.__version__}.dist-info/METADATA"))
    assert meta["Version"] == specreg.__version__
    assert meta["License-Expression"] == "MIT"
    assert not [c for c in meta.get_all("Classifier") if c.startswith("License ::")]  # PEP 639: the SPDX string only
    assert "Programming Language :: Python :: 3" in meta.get_all("Classifier")
    assert meta["Requires-Python"] and meta["Summary"] and meta["Author"]
    assert meta["Description-Content-Type"] == "text/markdown"
    unconditional = {Requirement(r).name for r in meta.get_all("Requires-Dist") if ";" not in r}
    assert unconditional == {"torch", "numpy", "PyWavelets"}
    assert {"train", "metrics", "audio", "all", "audio-metrics", "test", "docs", "bench"} <= set(
        meta.get_all("Provides-Extra"))


def test_version_is_written_once_and_the_changelog_leads_with_it():
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "specreg.__version__"}
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## (\S+)", changelog, flags=re.M)
    assert first and first.group(1) == specreg.__version__


def test_no_requirement_can_replace_the_installed_torch():
    # scripts/setup.sh installs torch==2.13.0 (the CPU wheel) first; a bare `torch` or a range
    # that excludes it would make pip pull a CUDA build.
    requirements = [*PYPROJECT["project"]["dependencies"], *(r for rs in EXTRAS.values() for r in rs)]
    torch_reqs = [Requirement(r) for r in requirements if Requirement(r).name == "torch"]
    assert torch_reqs
    for req in torch_reqs:
        assert str(req.specifier) and req.specifier.contains("2.13.0"), str(req)


def _installs(extra: str) -> set[str]:
    """Distribution names an extra installs, following self-references like specreg[train]."""
    names: set[str] = set()
    for line in EXTRAS[extra]:
        req = Requirement(line)
        if req.name == "specreg":
            for sub in req.extras:
                names |= _installs(sub)
        else:
            names.add(req.name.lower())
    return names


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_each_extra_installs_the_modules_its_errors_promise(extra):
    # A MissingExtraError tells users to install this extra for these modules: it must.
    wanted = {DISTRIBUTION.get(m, m).lower() for m in EXTRA_MODULES[extra]}
    assert wanted <= _installs(extra), sorted(wanted - _installs(extra))


def test_all_and_test_extras_cover_every_extra():
    every = _installs("train") | _installs("metrics") | _installs("audio") | _installs("cluster")
    assert _installs("all") == every
    assert every | _installs("docs") <= _installs("test")
    assert _installs("audio-metrics") == _installs("audio")
