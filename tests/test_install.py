"""The light core: ``import specreg`` is lazy, the core works without any extra, and a
feature whose extra is missing fails with one line naming it.

Two ways of taking packages away, both in a subprocess: a real core-only environment (a
venv without pip whose site-packages holds links to torch, numpy, PyWavelets and their
own dependencies only, so every other package is really absent), and a meta-path
blocker that hides chosen modules (to remove one extra while keeping the others).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import specreg
from specreg._optional import EXTRA_MODULES, MissingExtraError, needs_extra, require

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CORE = ("torch", "numpy", "PyWavelets")
EXTRA_MESSAGE = re.compile(r"^.+ needs the '(\w+)' extra: pip install 'specreg\[\1\]' \(missing module '[\w.]+'\)$")


def run_python(code: str, *, python: str = sys.executable, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(SRC)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([python, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


# --------------------------------------------------------------------------------------
# Lazy top-level imports (issue 17 item 16: `specreg --help` imported torch)


def test_import_and_cli_parser_do_not_load_torch():
    result = run_python("""
        import sys
        import specreg
        assert specreg.__version__
        import specreg.cli
        parser = specreg.cli.build_parser()
        assert {"train", "sample", "demo", "eval", "compare"} <= set(parser._subparsers._group_actions[0].choices)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       {"torch", "numpy", "pywt", "accelerate", "scipy", "matplotlib", "sklearn", "PIL"})
        print(heavy)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_answers_without_torch():
    result = run_python("""
        import sys
        from specreg.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code == 0
        assert "torch" not in sys.modules
    """)
    assert result.returncode == 0, result.stderr
    assert "usage: specreg" in result.stdout


def test_every_public_name_resolves_to_its_definition():
    for name in specreg.__all__:
        value = getattr(specreg, name)
        assert value is getattr(__import__(specreg._EXPORTS[name], fromlist=[name]), name)
    assert set(specreg.__all__) <= set(dir(specreg))
    assert specreg.losses.WaveletLoss is specreg.WaveletLoss  # subpackages as attributes
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        specreg.not_a_name  # noqa: B018


def test_star_import_gives_the_public_names():
    namespace: dict = {}
    exec("from specreg import *", namespace)
    assert set(specreg.__all__) <= set(namespace)


# --------------------------------------------------------------------------------------
# The helpers


def test_require_and_needs_extra_give_one_line():
    with pytest.raises(MissingExtraError) as err:
        require("feature x", "train", ("specreg_no_such_module",))
    assert str(err.value) == ("feature x needs the 'train' extra: pip install 'specreg[train]' "
                              "(missing module 'specreg_no_such_module')")
    assert isinstance(err.value, ImportError) and err.value.extra == "train"
    require("feature x", "train", ("os",))  # present: nothing raised

    with pytest.raises(ModuleNotFoundError) as other:  # not an optional module: passes through as it was
        with needs_extra("train", "feature y"):
            import specreg_no_such_module  # noqa: F401
    assert not isinstance(other.value, MissingExtraError)
    with pytest.raises(ValueError, match="extra='gpu' is not accepted"):
        with needs_extra("gpu", "feature z"):
            pass


# --------------------------------------------------------------------------------------
# A real core-only environment


def _closure(names: tuple[str, ...]) -> list[md.Distribution]:
    """The installed distributions ``names`` need, without extras (what `pip install` pulls)."""
    from packaging.requirements import Requirement

    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        try:
            dist = md.distribution(todo.pop())
        except md.PackageNotFoundError:  # a platform-only dependency that is not installed here
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


@pytest.fixture(scope="module")
def core_python(tmp_path_factory) -> str:
    """A venv without pip whose site-packages links only the core's distributions."""
    pytest.importorskip("packaging")
    root = tmp_path_factory.mktemp("core-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for dist in _closure(CORE):
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists() and top != "__pycache__":
                (site / top).symlink_to(source)
    (site / "specreg-src.pth").write_text(str(SRC) + "\n")
    return str(python)


def test_core_environment_has_only_the_core(core_python):
    result = run_python("""
        import importlib.util
        for name in ("yaml", "accelerate", "scipy", "matplotlib", "sklearn", "PIL", "safetensors", "tqdm",
                     "skimage", "soundfile", "torchmetrics", "pesq", "speechmos", "librosa", "diffusers"):
            assert importlib.util.find_spec(name) is None, name
        import torch, numpy, pywt
        print(torch.__version__)
    """, python=core_python)
    assert result.returncode == 0, result.stderr


def readme_own_loop_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Use it in your own loop\s*$(.*?)(?=^## )", text, flags=re.M | re.S)
    assert section, "README.md has no section 'Use it in your own loop'"
    code = re.search(r"```python\n(.*?)```", section.group(1), flags=re.S)
    assert code and "specreg.SpectralRegularizer" in code.group(1)
    return code.group(1)


def test_core_only_runs_the_own_loop_snippet(core_python, tmp_path):
    # The README's "Use it in your own loop" block as written, with an EDM denoiser for its
    # `denoiser`; then the other core pieces: a formulation's loss, a sampler, the plug-ins.
    snippet = tmp_path / "own_loop.py"
    snippet.write_text(readme_own_loop_snippet(), encoding="utf-8")
    result = run_python(f"""
        import sys
        import torch
        import specreg

        torch.manual_seed(0)
        net = torch.nn.Conv2d(1, 1, 3, padding=1)
        edm = specreg.EDM("edm")
        denoiser = edm.precondition(lambda x, c_noise, **kw: net(x))
        x0 = torch.rand(4, 1, 16, 16) * 2 - 1
        sigma = torch.tensor([0.05, 0.3, 1.0, 5.0])
        scope = dict(denoiser=denoiser, edm_weight=specreg.lambda_edm, x0=x0, sigma=sigma,
                     x_noisy=x0 + sigma.view(-1, 1, 1, 1) * torch.randn_like(x0))
        exec(open({str(snippet)!r}, encoding="utf-8").read(), scope)
        assert scope["loss"].shape == (4,) and torch.isfinite(scope["loss"]).all()
        assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()

        haar = specreg.SpectralRegularizer("haar", lam=0.1, sigma_max=1.0)
        out = specreg.FlowMatching().loss(lambda x, t, **kw: net(x), x0, regularizer=haar)
        assert out.loss.shape == (4,)
        x = specreg.sample_heun(denoiser, torch.randn(2, 1, 16, 16) * 80, specreg.karras_sigmas(4))
        assert torch.isfinite(x).all()
        assert specreg.radial_power_spectrum(x)[1].ndim == 1

        from specreg.integrations.edm2 import SpectralEDM2Loss
        from specreg.integrations.flow_matching import flow_matching_term
        import specreg.integrations.musubi

        gone = sorted(m for m in ("yaml", "accelerate", "scipy", "matplotlib", "PIL", "safetensors")
                      if m in sys.modules)
        print("OK", gone)
    """, python=core_python)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK []"


FEATURES = {  # a use of a feature without its extra → the extra its one-line error must name
    "import specreg.train": "train",
    "from specreg.train import Trainer": "train",
    "from specreg.data import TextureCrops; TextureCrops(('brick',), size=8, n=1)": "train",
    "from specreg.data import ImageFolder; ImageFolder('.', size=8)": "train",
    "import numpy as np; from specreg.metrics import plot_spectra; "
    "plot_spectra({'a': (np.arange(1, 4.0), np.ones(3))})": "metrics",
    "import numpy as np; from specreg.metrics.audio import pesq; s = 0.5 * np.sin(np.arange(8000) * 0.05); "
    "pesq(s, s, 8000)": "audio",
}


def test_core_only_features_name_their_extra(core_python):
    result = run_python(f"""
        from specreg import MissingExtraError
        for code in {list(FEATURES)!r}:
            try:
                exec(code, {{}})
            except MissingExtraError as err:
                print(err)
            else:
                print("no error:", code)
    """, python=core_python)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(FEATURES)
    for line, extra in zip(lines, FEATURES.values()):
        assert EXTRA_MESSAGE.match(line) and f"'{extra}' extra" in line, line


def test_core_only_command_line_says_which_extra(core_python):
    result = run_python("import sys; from specreg.cli import main; sys.exit(main(['--help']))", python=core_python)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "specreg: the command line needs the 'train' extra: pip install 'specreg[train]'\n"


# --------------------------------------------------------------------------------------
# One extra missing, the others present (a meta-path blocker)

BLOCKER = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
assert not BLOCKED & {{m.partition(".")[0] for m in sys.modules}}
sys.meta_path.insert(0, Blocker())
"""


def run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    return run_python(BLOCKER.format(blocked=sorted(blocked)) + textwrap.dedent(code))


def test_audio_extra_missing_with_metrics_present():
    result = run_blocked(("pesq", "speechmos", "librosa", "onnxruntime"), """
        import numpy as np
        from specreg import MissingExtraError
        from specreg.metrics.audio import dnsmos, ndb, pesq, resample
        assert ndb(np.random.default_rng(0).normal(size=(60, 2)), np.random.default_rng(1).normal(size=(60, 2)),
                   k=3)  # scikit-learn is there: NDB works
        s = 0.5 * np.sin(np.arange(16000) * 0.05)
        for call in (lambda: pesq(s[:8000], s[:8000], 8000),
                     lambda: dnsmos(s, 16000),
                     lambda: resample(np.zeros(100), 8000, 16000)):
            try:
                call()
            except MissingExtraError as err:
                print(err)
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and all(EXTRA_MESSAGE.match(line) and "'audio' extra" in line for line in lines), lines
    assert "specreg.metrics.audio.pesq needs the 'audio' extra" in lines[0]


def test_train_extra_missing_stops_the_cli_with_one_line():
    result = run_blocked(("accelerate",), """
        import sys
        from specreg.cli import main
        sys.exit(main(["train", "demo", "--out", "unused", "--print-config"]))
    """)
    assert result.returncode == 1
    assert result.stderr == "specreg: the command line needs the 'train' extra: pip install 'specreg[train]'\n"


def test_extra_modules_are_known_extras():
    assert set(EXTRA_MODULES) == {"train", "metrics", "audio", "cluster"}
