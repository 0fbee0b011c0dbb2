"""Quadratic spectral losses (fourier_l2, wavelet_l2), learned band weights and the σ fade,
against numpy/PyWavelets references, Parseval, and an exact posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import torch

from specreg.losses import FourierAmplitudeLoss, FourierL2Loss, WaveletL2Loss, WaveletLoss, build_loss
from specreg.regularizer import BandWeights, SpectralRegularizer

SHAPES = {1: (3, 2, 37), 2: (2, 3, 12, 17), 3: (2, 1, 6, 7, 8)}


def _pair(ndim: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(*SHAPES[ndim], generator=g, dtype=dtype)
    return x0 + 0.5 * torch.randn(*SHAPES[ndim], generator=g, dtype=dtype), x0


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(1)


def _np_radius(shape: tuple[int, ...]) -> np.ndarray:
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    return np.sqrt(sum(g**2 for g in grids))


def _np_fourier_l2(x_hat: np.ndarray, x0: np.ndarray, ndim: int, w_of_bin) -> np.ndarray:
    """mean over channels and the full fftn grid of w·|F(x̂ − x0)|², w normalised to mean 1."""
    shape = x0.shape[-ndim:]
    f = np.fft.fftn(x_hat - x0, axes=tuple(range(-ndim, 0)), norm="ortho")
    w = w_of_bin(shape)
    w = w / w.mean()
    return (w * np.abs(f) ** 2).reshape(x0.shape[0], -1).mean(1)


# ----------------------------------------------------------------------------- fourier_l2


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_flat_fourier_l2_is_the_mse_by_parseval(ndim):
    x_hat, x0 = _pair(ndim)
    torch.testing.assert_close(FourierL2Loss(ndim=ndim)(x_hat, x0), _mse(x_hat, x0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_power_weights_against_numpy(ndim, p):
    x_hat, x0 = _pair(ndim, seed=1)
    got = FourierL2Loss(ndim=ndim, weights="power", power=p, floor=0.05)(x_hat, x0)
    want = _np_fourier_l2(x_hat.numpy(), x0.numpy(), ndim, lambda s: (_np_radius(s) / 0.5) ** p + 0.05)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def _np_radial_bins(shape: tuple[int, ...]) -> np.ndarray:
    n_min = min(shape)
    r = np.rint(_np_radius(shape) * n_min).astype(int)
    return np.minimum(r, n_min // 2)  # the corners take the last ring's value


@pytest.mark.parametrize("ndim", [1, 2])
def test_whitening_weights_are_one_over_the_fitted_spectrum(ndim):
    x_hat, x0 = _pair(ndim, seed=2)
    data = torch.randn(40, *SHAPES[ndim][1:], dtype=torch.float64).cumsum(-1)  # a red spectrum
    loss = FourierL2Loss(ndim=ndim, weights="whiten").fit(data)
    shape = SHAPES[ndim][-ndim:]
    # numpy: the radial power spectrum of the data, mean over items and channels
    p = np.abs(np.fft.fftn(data.numpy(), axes=tuple(range(-ndim, 0)), norm="ortho")) ** 2
    p = p.reshape(-1, *shape).mean(0)
    bins = _np_radial_bins(shape)
    idx = np.rint(_np_radius(shape) * min(shape)).astype(int)
    s = np.array([p[idx == b].mean() for b in range(min(shape) // 2 + 1)])
    np.testing.assert_allclose(loss.spectrum.numpy(), s, rtol=1e-10)
    want = _np_fourier_l2(x_hat.numpy(), x0.numpy(), ndim, lambda sh: 1.0 / s[bins])
    np.testing.assert_allclose(loss(x_hat, x0).numpy(), want, rtol=1e-10)
    # kept in a buffer: a fresh loss loading the state dict gives the same values
    again = FourierL2Loss(ndim=ndim, weights="whiten")
    again.load_state_dict(loss.state_dict())
    torch.testing.assert_close(again(x_hat, x0), loss(x_hat, x0))
    with pytest.raises(ValueError, match="call loss.fit"):
        FourierL2Loss(ndim=ndim, weights="whiten")(x_hat, x0)


def test_user_weights_per_radial_bin():
    x_hat, x0 = _pair(2, seed=3)
    table = torch.linspace(0.5, 3.0, 7, dtype=torch.float64)  # 12×17: min side 12 → 7 rings
    got = FourierL2Loss(weights=table)(x_hat, x0)
    want = _np_fourier_l2(x_hat.numpy(), x0.numpy(), 2, lambda s: table.numpy()[_np_radial_bins(s)])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    with pytest.raises(ValueError, match="has 5 radial bins but signals of spatial size"):
        FourierL2Loss(weights=torch.ones(5))(x_hat, x0)


@pytest.mark.parametrize("loss", [FourierL2Loss(bands=3), FourierL2Loss(weights="power", bands=5),
                                  WaveletL2Loss("haar", levels=2, gamma=[1.0, 3.0]),
                                  WaveletL2Loss("db2", levels=1, include_approx=False)],
                         ids=["fourier-3", "fourier-power-5", "haar-2", "db2-details"])
def test_bands_sum_to_the_loss(loss):
    x_hat, x0 = _pair(2, seed=4)
    x_hat, x0 = x_hat[..., :12], x0[..., :12]
    bands = loss.per_band(x_hat, x0)
    assert bands.shape == (2, loss.n_bands) and len(loss.band_labels()) == loss.n_bands
    assert bool((bands >= 0).all())
    torch.testing.assert_close(bands.sum(1), loss(x_hat, x0), rtol=1e-12, atol=0)


def test_octave_bands_split_where_they_say():
    """A pure tone at 0.3125 cycles/sample (a whole number of periods) lands in the top band [1/4, ∞) only."""
    t = torch.arange(64, dtype=torch.float64)
    x = torch.cos(2 * math.pi * 0.3125 * t)[None, None]
    bands = FourierL2Loss(ndim=1, bands=3).per_band(x, torch.zeros_like(x))
    assert bands[0, 2] > 0 and torch.allclose(bands[0, :2], torch.zeros(2, dtype=torch.float64), atol=1e-12)


# ----------------------------------------------------------------------------- wavelet_l2


@pytest.mark.parametrize("wavelet, levels", [("haar", 3), ("db2", 2), ("sym4", 1), ("coif1", 1)])
def test_wavelet_l2_with_unit_gamma_is_the_mse(wavelet, levels):
    g = torch.Generator().manual_seed(5)
    x0, x_hat = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64), \
        torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    loss = WaveletL2Loss(wavelet, levels=levels)
    torch.testing.assert_close(loss(x_hat, x0), _mse(x_hat, x0), rtol=1e-12, atol=0)


def test_wavelet_l2_against_pywavelets_with_band_weights():
    g = torch.Generator().manual_seed(6)
    x0, x_hat = torch.randn(2, 2, 16, 20, generator=g, dtype=torch.float64), \
        torch.randn(2, 2, 16, 20, generator=g, dtype=torch.float64)
    gamma = {"approx": 0.5, 1: 2.0, (2, "dd"): 4.0}
    got = WaveletL2Loss("db2", levels=2, gamma=gamma, mode="symmetric")(x_hat, x0)
    coeffs = pywt.wavedecn((x_hat - x0).numpy(), "db2", mode="symmetric", level=2, axes=(-2, -1))
    n = x0[0].numel()
    want = 0.5 * (coeffs[0] ** 2).reshape(2, -1).sum(1)
    for i, det in enumerate(coeffs[1:], start=1):
        for key, band in det.items():
            w = 4.0 if (i, key) == (2, "dd") else 2.0 if i == 1 else 1.0
            want = want + w * (band**2).reshape(2, -1).sum(1)
    np.testing.assert_allclose(got.numpy(), want / n, rtol=1e-10)


def test_biorthogonal_wavelets_are_refused_with_the_reason():
    for name in ("bior1.3", "rbio2.2"):
        with pytest.raises(ValueError, match="biorthogonal.*would not be the MSE"):
            WaveletL2Loss(name)
    with pytest.raises(ValueError, match="levels=<int>"):
        WaveletL2Loss("haar").n_bands  # noqa: B018


# ----------------------------------------------------------------------------- numerics


LOSSES = {
    "flat": lambda nd: FourierL2Loss(ndim=nd),
    "power": lambda nd: FourierL2Loss(ndim=nd, weights="power"),
    "whiten": lambda nd: FourierL2Loss(ndim=nd, weights="whiten", spectrum=torch.linspace(2.0, 0.01, 3)),
    "wavelet_l2": lambda nd: WaveletL2Loss("haar", levels=1, ndim=nd),
}
CASES = {"zero": lambda x: 0 * x, "constant": lambda x: torch.full_like(x, 0.7), "tiny": lambda x: x * 1e-20,
         "huge": lambda x: x * 1e18}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_value_and_gradient_and_zero_on_equal_inputs(name, case, dtype):
    g = torch.Generator().manual_seed(7)
    x0 = CASES[case](torch.randn(2, 1, 4, 4, generator=g)).to(dtype)
    x_hat = CASES[case](torch.randn(2, 1, 4, 4, generator=g)).to(dtype).requires_grad_(True)
    loss = LOSSES[name](2)
    value = loss(x_hat, x0)
    assert value.shape == (2,) and bool(torch.isfinite(value).all()) and bool((value >= 0).all())
    value.sum().backward()
    assert bool(torch.isfinite(x_hat.grad).all())
    assert torch.equal(loss(x0, x0), torch.zeros(2, dtype=dtype))
    if case == "huge":  # scaled per sample: the value is that of the unscaled difference
        ref = LOSSES[name](2)(x_hat.detach().double() / 1e18, x0.double() / 1e18) * 1e36
        torch.testing.assert_close(value.double(), ref, rtol=1e-4, atol=0)


@pytest.mark.parametrize("name", LOSSES)
def test_gradcheck_float64(name):
    x_hat, x0 = _pair(2, seed=9)
    x_hat, x0 = x_hat[:1, :1, :4, :4].clone().requires_grad_(True), x0[:1, :1, :4, :4]
    loss = LOSSES[name](2)
    assert torch.autograd.gradcheck(lambda a: loss(a, x0), (x_hat,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["power", "wavelet_l2"])
def test_torch_compile_matches_eager(name):
    x_hat, x0 = _pair(2, seed=10, dtype=torch.float32)
    x_hat, x0 = x_hat[..., :12], x0[..., :12]
    loss = LOSSES[name](2)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x_hat, x0), loss(x_hat, x0), rtol=1e-5, atol=1e-6)


def test_registry_names_and_bad_arguments():
    assert isinstance(build_loss("fourier_l2", weights="power", power=1.0), FourierL2Loss)
    assert isinstance(build_loss("wavelet_l2", wavelet="db2"), WaveletL2Loss)
    for call, match in [(lambda: FourierL2Loss(weights="pink"), "weights='pink'"),
                        (lambda: FourierL2Loss(weights="power", floor=0.0), "floor=0"),
                        (lambda: FourierL2Loss(bands=0), "bands=0"),
                        (lambda: FourierL2Loss(weights=torch.tensor([1.0, -1.0])), "weights is not accepted"),
                        (lambda: FourierL2Loss(spectrum=torch.ones(3)), "only used with weights='whiten'")]:
        with pytest.raises(ValueError, match=match):
            call()


# ----------------------------------------------------------------------------- band weights and the fade


def test_band_weights_start_at_one_and_learn_each_bands_scale():
    """Σ_b [L_b e^{-u_b} + u_b] is stationary at e^{u_b} = L_b: gradient descent on u alone
    finds each band's scale, whatever it is."""
    head = BandWeights(3, init="zero")
    sigma = torch.tensor([0.1, 1.0, 10.0])
    torch.testing.assert_close(head.weights(sigma), torch.ones(3, 3))
    target = torch.tensor([1e-3, 1.0, 5.0])  # the bands' natural scales
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        u = head(sigma)
        (target * torch.exp(-u) + u).sum(1).mean().backward()
        opt.step()
    torch.testing.assert_close(1 / head.weights(sigma), target.expand(3, 3), rtol=2e-2, atol=0)


def _train_head(reg, x_hat, x0, sigma, steps, lr):
    opt = torch.optim.Adam(reg.band_weights.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        reg(x_hat, x0, sigma).value.mean().backward()
        opt.step()
    return reg.band_weights.weights(sigma) * reg.loss.per_band(x_hat, x0)  # weighted band errors (B, bands)


def test_band_weights_start_each_band_at_its_scale_from_the_first_batch():
    """A fine-tune's lr: the data-dependent start puts every band at weight·error ≈ 1 at
    step 0; from a zero start Adam moves all bands in lockstep (same ±lr steps while every
    L_b e^{-u_b} is on the same side of 1), so the bands never separate."""
    torch.manual_seed(0)
    x0 = torch.randn(8, 1, 16, 16)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(8, 1, 16, 16), 3, 1, 1)
    x_hat = x0 + 0.3 * smooth + 0.01 * torch.randn(8, 1, 16, 16)  # band errors ≪ 1, over a decade apart
    sigma = torch.full((8,), 1.0)
    bands = FourierL2Loss(bands=4).per_band(x_hat, x0)
    assert float(bands.mean(0).max() / bands.mean(0).min()) > 10 and float(bands.max()) < 1
    data = SpectralRegularizer(FourierL2Loss(bands=4), lam=1.0, band_weights=True)
    assert not data.band_weights.ready
    with torch.no_grad():
        data(x_hat, x0, sigma)  # no gradient, no training step: no init
    assert not data.band_weights.ready
    weighted = _train_head(data, x_hat, x0, sigma, steps=1, lr=2e-4)
    assert bool(data.band_weights.initialized)
    torch.testing.assert_close(weighted.mean(0), torch.ones(4), rtol=1e-2, atol=0)  # one Adam step after the start
    zero = SpectralRegularizer(FourierL2Loss(bands=4), lam=1.0, band_weights=BandWeights(4, init="zero"))
    _train_head(zero, x_hat, x0, sigma, steps=600, lr=2e-4)
    w = zero.band_weights.weights(sigma)[0]
    assert float(w.max() / w.min()) < 1.05  # near lockstep, where the bands' scales differ > 10×


def test_band_weights_start_survives_a_checkpoint():
    head = BandWeights(2)
    head.initialize(torch.tensor([[1e-3, 2.0], [3e-3, 4.0]]))
    torch.testing.assert_close(head.weights(torch.tensor([1.0]))[0], torch.tensor([500.0, 1 / 3]))
    fresh = BandWeights(2)
    fresh.load_state_dict(head.state_dict())
    assert fresh.ready
    old = {k: v for k, v in head.state_dict().items() if k != "initialized"}  # saved before the flag existed
    fresh = BandWeights(2)
    fresh.load_state_dict(old)
    assert fresh.ready
    with pytest.raises(ValueError, match="init='ones' is not accepted"):
        BandWeights(2, init="ones")
    with pytest.raises(ValueError, match=r"expected \(B, 2\)"):
        head.initialize(torch.ones(3))


def test_regularizer_with_learned_band_weights():
    x_hat, x0 = _pair(2, seed=11)
    x_hat, x0 = x_hat[..., :12].float(), x0[..., :12].float()
    reg = SpectralRegularizer("fourier_l2", lam=0.5, band_weights=BandWeights(3, init="zero"), bands=3)
    sigma = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        reg.band_weights.linear.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    out = reg(x_hat, x0, sigma)
    bands = reg.loss.per_band(x_hat, x0)
    u = torch.tensor([0.1, -0.2, 0.3])
    torch.testing.assert_close(out.value, 0.5 * (bands * torch.exp(-u) + u).sum(1))
    torch.testing.assert_close(out.spectral, bands.sum(1))
    out.value.sum().backward()
    assert reg.band_weights.linear.bias.grad is not None
    assert len(list(reg.parameters())) == 2
    with pytest.raises(ValueError, match="needs a loss that splits into bands"):
        SpectralRegularizer("fourier_amp", band_weights=True)
    with pytest.raises(ValueError, match="need sigma"):
        reg(x_hat, x0)


def test_fade_is_a_smooth_gate():
    reg = SpectralRegularizer("fourier_l2", lam=2.0, fade_sigma=2.33, fade_width=0.5)
    sigma = torch.tensor([0.0, 0.1, 2.33, 80.0, math.inf])
    g = reg.fade(sigma)
    torch.testing.assert_close(g[2], torch.tensor(0.5))
    assert g[0] == 1 and g[-1] == 0 and bool((g[:-1] >= g[1:]).all())
    x = torch.randn(5, 1, 8, 8)
    out = reg(x + 1, x, sigma)
    torch.testing.assert_close(out.lam, 2.0 * g)
    assert bool(torch.isfinite(out.value).all())
    both = SpectralRegularizer("fourier_l2", lam=1.0, fade_sigma=2.33, sigma_max=1.0, lam_scale=3.0)
    torch.testing.assert_close(both(x + 1, x, sigma).lam, 3.0 * g * (sigma <= 1.0))


# ----------------------------------------------------------------------------- the posterior mean


def _posterior(k: int = 6, sigma: float = 0.8, seed: int = 12):
    """K clean 1×16×16 images, a noisy x_t from one of them, and the exact posterior p_k ∝ N(x_t; x0_k, σ²)."""
    g = torch.Generator().manual_seed(seed)
    # close enough to each other (relative to σ) that the posterior spreads over several
    x0s = torch.randn(k, 1, 1, 16, 16, generator=g, dtype=torch.float64).cumsum(-1) * 0.02
    x_t = x0s[2] + sigma * torch.randn(1, 1, 16, 16, generator=g, dtype=torch.float64)
    logp = torch.stack([-((x_t - x) ** 2).sum() / (2 * sigma**2) for x in x0s])
    p = torch.softmax(logp, 0)
    assert float(p.max()) < 0.5  # a real mixture, not one image
    return x0s, p, (p[:, None, None, None, None] * x0s).sum(0)


QUADRATIC = {
    "fourier_l2 flat": lambda: FourierL2Loss(),
    "fourier_l2 power p=2": lambda: FourierL2Loss(weights="power", power=2.0),
    "fourier_l2 whiten": lambda: FourierL2Loss(weights="whiten", spectrum=torch.logspace(1, -3, 9)),
    "wavelet_l2 haar γ=1,2,4": lambda: WaveletL2Loss("haar", levels=3, gamma=[1.0, 2.0, 4.0]),
}


def _expected_gradient(loss_fn, x0s, p, at):
    at = at.clone().requires_grad_(True)
    total = sum(pk * loss_fn(at, x) for pk, x in zip(p, x0s))
    (grad,) = torch.autograd.grad(total.sum(), at)
    return grad


@pytest.mark.parametrize("name", QUADRATIC)
def test_quadratic_losses_keep_the_posterior_mean(name):
    """∇ E_{x0|x_t}[L(x̂0, x0)] vanishes at x̂0 = E[x0 | x_t] (to float64 round-off)."""
    x0s, p, mean = _posterior()
    grad = _expected_gradient(QUADRATIC[name](), x0s, p, mean)
    assert float(grad.abs().max()) < 1e-12


def test_learned_band_weights_keep_the_posterior_mean():
    x0s, p, mean = _posterior()
    reg = SpectralRegularizer(FourierL2Loss(bands=4), lam=1.0, band_weights=BandWeights(4, init="zero"))
    with torch.no_grad():
        reg.band_weights.linear.bias.copy_(torch.tensor([0.7, -1.0, 2.0, 0.1]))
    sigma = torch.tensor([0.8])
    grad = _expected_gradient(lambda a, x: reg(a.float(), x.float(), sigma).value.double(), x0s, p, mean.float())
    assert float(grad.abs().max()) < 1e-6  # float32 inside the regularizer
    grad = _expected_gradient(lambda a, x: reg.loss.per_band(a, x) @ torch.exp(-reg.band_weights(sigma)[0]).double(),
                              x0s, p, mean)
    assert float(grad.abs().max()) < 1e-12


@pytest.mark.parametrize("loss", [FourierAmplitudeLoss(), WaveletLoss("haar", levels=3)], ids=["fourier_amp", "haar"])
def test_l1_losses_move_away_from_the_posterior_mean(loss):
    """The paper's L1 losses: the expected loss is not stationary at the posterior mean."""
    x0s, p, mean = _posterior()
    grad = _expected_gradient(loss, x0s, p, mean)
    assert float(grad.abs().max()) > 1e-3
