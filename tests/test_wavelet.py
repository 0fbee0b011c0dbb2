"""The DWT against PyWavelets, and the wavelet loss (Eq. 16) against a numpy/pywt reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import torch

import specreg.transforms.wavelet as wt
from specreg.losses.wavelet import WaveletLoss
from specreg.transforms.wavelet import wavedec

WAVELETS = ["haar", "bior1.3", "db2", "db4", "sym4", "coif1"]
MODES = ["periodization", "zero", "constant", "symmetric", "reflect", "periodic", "smooth",
         "antisymmetric", "antireflect"]
# (ndim, spatial sizes): even, odd, prime; 3-D kept small. 307 (prime) is longer than
# DENSE_MAX, so 1-D also runs the convolution path.
SIZES = {
    1: [(2,), (16,), (31,), (64,), (307,)],
    2: [(16, 16), (13, 17), (32, 29)],
    3: [(4, 6, 5), (14, 15, 16)],
}


def _levels_to_test(spatial, wavelet):
    deepest = pywt.dwtn_max_level(spatial, wavelet)
    return sorted({lv for lv in (1, 2, deepest) if lv <= deepest}) or [0]


def _assert_matches_pywt(x: np.ndarray, wavelet, level, ndim, mode, dtype, atol):
    axes = tuple(range(-ndim, 0))
    ref = pywt.wavedecn(x, wavelet, mode=mode, level=level, axes=axes)
    out = wavedec(torch.tensor(x, dtype=dtype), wavelet, level=level, ndim=ndim, mode=mode)
    assert len(out) == len(ref)
    # atol relative to the band's largest coefficient: extrapolating modes ("smooth") make
    # coefficients of order 100 at deep levels, where float32 keeps ~7 digits.
    tol = lambda r: atol * max(1.0, float(np.abs(r).max()))  # noqa: E731
    np.testing.assert_allclose(out[0].double().numpy(), ref[0], rtol=0, atol=tol(ref[0]))
    for got, want in zip(out[1:], ref[1:]):
        assert sorted(got) == sorted(want)
        for k in want:
            assert got[k].dtype == dtype
            np.testing.assert_allclose(got[k].double().numpy(), want[k], rtol=0, atol=tol(want[k]), err_msg=k)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavedec_matches_pywt(wavelet, mode):
    rng = np.random.default_rng(0)
    for ndim, sizes in SIZES.items():
        for spatial in sizes:
            x = rng.standard_normal((2, 1 if ndim == 3 else 3, *spatial))
            for level in _levels_to_test(spatial, wavelet):
                _assert_matches_pywt(x, wavelet, level, ndim, mode, torch.float64, 1e-12)
                _assert_matches_pywt(x, wavelet, level, ndim, mode, torch.float32, 1e-5)


@pytest.mark.parametrize("mode", ["periodization", "symmetric", "zero", "smooth"])
@pytest.mark.parametrize("wavelet", ["bior1.3", "db2", "sym4"])
def test_convolution_path_matches_pywt(wavelet, mode, monkeypatch):
    # Every axis through explicit extension + conv1d (the path of axes longer than DENSE_MAX).
    monkeypatch.setattr(wt, "DENSE_MAX", 0)
    rng = np.random.default_rng(1)
    for ndim, spatial in [(1, (37,)), (2, (16, 23)), (3, (14, 9, 16))]:
        x = rng.standard_normal((2, 2, *spatial))
        for level in _levels_to_test(spatial, wavelet):
            _assert_matches_pywt(x, wavelet, level, ndim, mode, torch.float64, 1e-12)


def test_default_level_extra_dims_and_custom_wavelet():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 24, 40))  # (B, C, T, H, W): T is a channel dim for ndim=2
    for wavelet in ["haar", "db2", pywt.Wavelet("custom", filter_bank=pywt.Wavelet("sym3").filter_bank)]:
        _assert_matches_pywt(x, wavelet, None, 2, "symmetric", torch.float64, 1e-12)
    out = wavedec(torch.tensor(x), "haar", level=None, ndim=2)
    assert len(out) - 1 == pywt.dwtn_max_level((24, 40), "haar") == 4


def test_max_level_matches_pywt():
    for name in ["haar", "bior1.3", "db4", "coif1", "dmey"]:
        for n in range(1, 300):
            assert wt.dwt_max_level(n, name) == pywt.dwt_max_level(n, pywt.Wavelet(name).dec_len), (name, n)
    assert wt.max_level((64, 20, 33), "db2") == pywt.dwtn_max_level((64, 20, 33), "db2")


def test_haar_periodization_is_orthonormal():
    # Closed form: an orthonormal transform keeps the energy (Parseval).
    x = torch.randn(3, 2, 32, 16, dtype=torch.float64)
    coeffs = wavedec(x, "haar", level=3)
    energy = coeffs[0].pow(2).sum() + sum(b.pow(2).sum() for d in coeffs[1:] for b in d.values())
    torch.testing.assert_close(energy, x.pow(2).sum())


@pytest.mark.parametrize(
    "wavelet, mode, spatial, dense_max",
    [("haar", "periodization", (6, 7), 256), ("haar", "reflect", (5, 7), 256),
     ("bior1.3", "periodization", (11, 10), 256), ("bior1.3", "symmetric", (11, 13), 256),
     ("db2", "zero", (9, 11), 0)],
)
def test_wavedec_gradcheck(wavelet, mode, spatial, dense_max, monkeypatch):
    monkeypatch.setattr(wt, "DENSE_MAX", dense_max)
    x = torch.randn(2, 1, *spatial, dtype=torch.float64, requires_grad=True)

    def flat(x):
        c = wavedec(x, wavelet, level=1, mode=mode)
        return (c[0], *(b for d in c[1:] for b in d.values()))

    assert torch.autograd.gradcheck(flat, (x,), fast_mode=True)


@pytest.mark.parametrize("band", [("ad",), ("da",), ("dd", "da"), ("aa",)])
def test_haar_gradcheck_when_only_some_bands_are_used(band):
    # the Haar step along the last axis has its own backward; a band left unused hands it
    # no gradient (None) for one of its two outputs
    x = torch.randn(2, 2, 6, 10, dtype=torch.float64, requires_grad=True)

    def some(x):
        c = wavedec(x, "haar", level=2, mode="zero")
        d = {**c[2], "aa": c[0]}
        return tuple(d[k] for k in band) + (c[1]["dd"],)

    assert torch.autograd.gradcheck(some, (x,))


@pytest.mark.parametrize("wavelet, ndim, shape", [("haar", 1, (2, 3, 37)), ("haar", 2, (2, 1, 12, 9)),
                                                 ("haar", 3, (1, 2, 8, 6, 5)), ("bior1.3", 2, (2, 1, 24, 21))])
def test_wavedec_unscaled_times_its_factors_is_wavedec(wavelet, ndim, shape):
    x = torch.randn(*shape, dtype=torch.float64)
    ref = wavedec(x, wavelet, level=2, ndim=ndim, mode="symmetric")
    raw, factors = wt.wavedec_unscaled(x, wavelet, level=2, ndim=ndim, mode="symmetric")
    assert len(factors) == len(ref) == 3
    torch.testing.assert_close(raw[0] * factors[0], ref[0], rtol=1e-12, atol=1e-12)
    for r, f, d in zip(raw[1:], factors[1:], ref[1:]):
        assert sorted(r) == sorted(d)
        for k in d:
            torch.testing.assert_close(r[k] * f, d[k], rtol=1e-12, atol=1e-12)
    if wavelet == "haar":  # level s (1 = finest) carries 2^(s·ndim/2)
        assert factors == [2.0 ** (-2 * ndim / 2), 2.0 ** (-2 * ndim / 2), 2.0 ** (-ndim / 2)]
    else:
        assert factors == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------
# WaveletLoss
# ---------------------------------------------------------------------------------------


def _reference_loss(x_hat, x0, wavelet, levels, ndim, gamma_of, include_approx=True, mode="periodization"):
    """Eq. 16 from two pywt transforms: Σ_bands γ · mean over (channels, locations) |ΔW|."""
    axes = tuple(range(-ndim, 0))
    a = pywt.wavedecn(np.asarray(x_hat, dtype=np.float64), wavelet, mode=mode, level=levels, axes=axes)
    b = pywt.wavedecn(np.asarray(x0, dtype=np.float64), wavelet, mode=mode, level=levels, axes=axes)
    per = np.zeros(x0.shape[0])
    if include_approx:
        per += gamma_of(0, "approx") * np.abs(a[0] - b[0]).reshape(len(per), -1).mean(1)
    for i in range(1, levels + 1):
        for k in a[i]:
            per += gamma_of(i, k) * np.abs(a[i][k] - b[i][k]).reshape(len(per), -1).mean(1)
    return per


@pytest.mark.parametrize(
    "wavelet, ndim, shape, kwargs, gamma_of",
    [
        ("haar", 2, (3, 2, 32, 32), {}, lambda i, k: 1.0),
        ("bior1.3", 2, (2, 3, 40, 33), {"mode": "zero", "gamma": 0.5}, lambda i, k: 0.5),
        ("haar", 1, (2, 1, 101), {"levels": 4, "gamma": [4.0, 3.0, 2.0, 1.0]},
         lambda i, k: 1.0 if i == 0 else 5.0 - i),
        ("bior1.3", 2, (2, 2, 2, 32, 32), {"levels": 2, "gamma": {"approx": 0.25, 2: 3.0, (1, "dd"): 0.0,
                                                                   (2, "ad"): 7.0}},
         lambda i, k: {0: 0.25, 1: 0.0 if k == "dd" else 1.0, 2: 7.0 if k == "ad" else 3.0}[i]),
        ("db2", 3, (2, 1, 8, 12, 10), {"levels": 1, "include_approx": False, "mode": "symmetric"},
         lambda i, k: 1.0),
    ],
)
def test_loss_matches_reference(wavelet, ndim, shape, kwargs, gamma_of):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(*shape, generator=g, dtype=torch.float64)
    x_hat = x0 + torch.randn(*shape, generator=g, dtype=torch.float64)
    loss = WaveletLoss(wavelet, ndim=ndim, **kwargs)
    levels = kwargs.get("levels") or min(3, pywt.dwtn_max_level(shape[-ndim:], wavelet))
    ref = _reference_loss(x_hat.numpy(), x0.numpy(), wavelet, levels, ndim, gamma_of,
                          kwargs.get("include_approx", True), kwargs.get("mode", "periodization"))
    got = loss(x_hat, x0)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(loss(x_hat.float(), x0.float()).numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(WaveletLoss(wavelet, ndim=ndim, reduction="mean", **kwargs)(x_hat, x0).item(),
                               ref.mean(), rtol=1e-12)


def test_default_levels_are_three_or_fewer():
    g = torch.Generator().manual_seed(4)
    x0, x_hat = torch.randn(2, 2, 2, 16, 64, generator=g, dtype=torch.float64)
    one = lambda i, k: 1.0  # noqa: E731
    # haar on 16×64: pywt allows 4, the default uses 3; bior1.3 on 16×64 allows only 1.
    for wavelet, levels in [("haar", 3), ("bior1.3", 1)]:
        ref = _reference_loss(x_hat.numpy(), x0.numpy(), wavelet, levels, 2, one)
        np.testing.assert_allclose(WaveletLoss(wavelet)(x_hat, x0).numpy(), ref, rtol=1e-12)


def test_loss_of_equal_inputs_is_zero_with_zero_gradient():
    x0 = torch.randn(2, 3, 16, 16)
    x_hat = x0.clone().requires_grad_(True)
    for wavelet in ["haar", "bior1.3"]:
        value = WaveletLoss(wavelet)(x_hat, x0)
        assert torch.equal(value, torch.zeros(2))
        (grad,) = torch.autograd.grad(value.sum(), x_hat)
        assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize(
    "wavelet, mode, spatial",
    [("haar", "periodization", (8, 9)), ("bior1.3", "periodization", (11, 12)), ("bior1.3", "symmetric", (10, 13)),
     ("haar", "zero", (7,))],
)
def test_loss_gradcheck(wavelet, mode, spatial):
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(2, 2, *spatial, generator=g, dtype=torch.float64)
    x_hat = torch.randn(2, 2, *spatial, generator=g, dtype=torch.float64, requires_grad=True)
    loss = WaveletLoss(wavelet, levels=1, ndim=len(spatial), mode=mode, gamma={"approx": 0.5})
    assert torch.autograd.gradcheck(lambda xh: loss(xh, x0), (x_hat,), fast_mode=True)


@pytest.mark.parametrize("wavelet", ["haar", "bior1.3"])
@pytest.mark.parametrize(
    "case", ["zeros", "constant", "tiny", "huge", "prime"],
)
def test_loss_is_finite_on_extreme_inputs(wavelet, case):
    g = torch.Generator().manual_seed(6)
    shape = (2, 3, 31, 37) if case == "prime" else (2, 3, 32, 32)
    a, b = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    scale = {"tiny": 1e-20, "huge": 1e20}.get(case, 1.0)
    if case == "zeros":
        a, b = torch.zeros(shape), torch.zeros(shape)
    elif case == "constant":
        a, b = torch.full(shape, 3.0), torch.full(shape, -2.0)
    x_hat = (a * scale).requires_grad_(True)
    x0 = b * scale
    value = WaveletLoss(wavelet, mode="symmetric" if case == "prime" else "periodization")(x_hat, x0)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(x_hat.grad).all()
    levels = min(3, pywt.dwtn_max_level(shape[-2:], wavelet))
    ref = _reference_loss(x_hat.detach().double().numpy(), x0.double().numpy(), wavelet,
                          levels, 2, lambda i, k: 1.0, mode="symmetric" if case == "prime" else "periodization")
    np.testing.assert_allclose(value.detach().double().numpy(), ref, rtol=1e-5, atol=1e-30)


def test_first_call_under_inference_mode_does_not_break_a_later_backward():
    # Operators are cached on first use; one cached under inference_mode could not be
    # saved for backward later.
    shape = (1, 2, 23, 19)  # sizes no other test uses, so the first call here builds them
    for wavelet in ["haar", "db2"]:
        loss = WaveletLoss(wavelet, levels=1, mode="antireflect")
        with torch.inference_mode():
            loss(torch.randn(shape), torch.randn(shape))
        x_hat = torch.randn(shape, requires_grad=True)
        loss(x_hat, torch.randn(shape)).sum().backward()
        assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0


def test_bf16_under_autocast_is_computed_in_float32():
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(2, 3, 32, 32, generator=g).bfloat16()
    x_hat = torch.randn(2, 3, 32, 32, generator=g).bfloat16().requires_grad_(True)
    for wavelet in ["haar", "bior1.3"]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = WaveletLoss(wavelet)(x_hat, x0)
        assert value.dtype == torch.float32
        (grad,) = torch.autograd.grad(value.sum(), x_hat)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all()
        levels = min(3, pywt.dwtn_max_level((32, 32), wavelet))
        ref = _reference_loss(x_hat.detach().double().numpy(), x0.double().numpy(), wavelet, levels, 2,
                              lambda i, k: 1.0)
        np.testing.assert_allclose(value.detach().numpy(), ref, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def test_errors_of_wavedec():
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"level=5 .*\(16, 16\).*maximum is 4"):
        wavedec(x, "haar", level=5)
    with pytest.raises(ValueError, match="level=-1"):
        wavedec(x, "haar", level=-1)
    with pytest.raises(ValueError, match="wavelet='nope' is not accepted") as err:
        wavedec(x, "nope")
    for family in ["haar", "db", "sym", "coif", "bior", "rbio", "dmey"]:  # the discrete families
        assert f"'{family}'" in str(err.value)
    assert "'morl'" not in str(err.value)
    with pytest.raises(ValueError, match=r"'morl' is a continuous wavelet.*'haar'"):
        wavedec(x, "morl")
    with pytest.raises(ValueError, match=r"mode='wrap'.*'periodization'.*'symmetric'"):
        wavedec(x, "haar", mode="wrap")
    with pytest.raises(ValueError, match="dtype torch.int64"):
        wavedec(torch.ones(2, 3, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 4 dims"):
        wavedec(torch.randn(16, 16))
    with pytest.raises(ValueError, match="ndim=4"):
        wavedec(x, ndim=4)


def test_errors_of_wavelet_loss():
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="must be equal"):
        WaveletLoss()(x, torch.randn(2, 3, 16, 17))
    with pytest.raises(ValueError, match="at least 4 dims"):
        WaveletLoss()(torch.randn(3, 16, 16), torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match="dtype torch.int32"):
        WaveletLoss()(x.int(), x.int())
    with pytest.raises(ValueError, match=r"levels=5 .*\(16, 16\).*maximum is 4"):
        WaveletLoss("haar", levels=5)(x, x)
    with pytest.raises(ValueError, match=r"\(8, 8\) is too small .*'bior1.3'"):
        WaveletLoss("bior1.3")(torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"wavelet='mexh'.*continuous.*'bior'"):
        WaveletLoss("mexh")
    with pytest.raises(ValueError, match="levels=0"):
        WaveletLoss(levels=0)
    with pytest.raises(ValueError, match="mode='nope'"):
        WaveletLoss(mode="nope")
    # gamma: wrong length (named, with its length and the number of levels), checked at
    # construction when levels is given and per call otherwise
    with pytest.raises(ValueError, match="gamma has length 2 but 3 levels"):
        WaveletLoss(levels=3, gamma=[1.0, 2.0])
    with pytest.raises(ValueError, match="gamma has length 2 but 3 levels"):
        WaveletLoss(gamma=[1.0, 2.0])(x, x)
    with pytest.raises(ValueError, match=r"gamma\[1\]=-1.0"):
        WaveletLoss(gamma=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="gamma=nan"):
        WaveletLoss(gamma=float("nan"))
    with pytest.raises(ValueError, match=r"gamma has the key \(1, 'xd'\)"):
        WaveletLoss(gamma={(1, "xd"): 1.0})
    with pytest.raises(ValueError, match=r"gamma has the key 4 but only 3 levels"):
        WaveletLoss(levels=3, gamma={4: 1.0})
    with pytest.raises(ValueError, match="include_approx=False"):
        WaveletLoss(gamma={"approx": 1.0}, include_approx=False)
    with pytest.raises(ValueError, match="gamma='big'"):
        WaveletLoss(gamma="big")


# ---------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "wavelet, backend",
    # inductor once (~10 s to compile here); the graph capture (no graph break) for the other
    [("haar", "inductor"), ("bior1.3", "aot_eager")],
)
def test_torch_compile_matches_eager(wavelet, backend):
    g = torch.Generator().manual_seed(9)
    x0 = torch.randn(2, 3, 16, 17, generator=g)
    x_hat = torch.randn(2, 3, 16, 17, generator=g, requires_grad=True)
    loss = WaveletLoss(wavelet, levels=1, mode="symmetric")
    compiled = torch.compile(loss, backend=backend, fullgraph=True, dynamic=False)
    got, want = compiled(x_hat, x0), loss(x_hat, x0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (g_got,) = torch.autograd.grad(got.sum(), x_hat)
    (g_want,) = torch.autograd.grad(want.sum(), x_hat)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)
    assert math.isfinite(got.sum().item())
