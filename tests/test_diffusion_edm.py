"""EDM/VP/VE (Karras et al. 2022, Table 1): preconditioning, noise levels, weights, loss,
and the σ-space samplers against diffusers' EDM schedulers and Algorithm 2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler
from scipy import stats

from specreg.diffusion import (
    EDM,
    karras_sigmas,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    ve_sigmas,
    vp_sigmas,
)
from specreg.losses import FourierAmplitudeLoss
from specreg.regularizer import SpectralRegularizer

SIGMAS = np.array([0.002, 0.01, 0.1, 0.5, 1.0, 3.0, 20.0, 80.0])


def _vp_sigma_np(t, beta_d=19.9, beta_min=0.1):
    return np.sqrt(np.exp(0.5 * beta_d * t**2 + beta_min * t) - 1)


def _table1(precond, sigma, sigma_data=0.5, M=1000, beta_d=19.9, beta_min=0.1):
    """Table 1 of Karras et al. 2022, written out in numpy."""
    if precond == "edm":
        return (sigma_data**2 / (sigma**2 + sigma_data**2), sigma * sigma_data / np.sqrt(sigma**2 + sigma_data**2),
                1 / np.sqrt(sigma**2 + sigma_data**2), np.log(sigma) / 4)
    if precond == "vp":
        # σ⁻¹ by solving ½β_d t² + β_min t = ln(1 + σ²) for t > 0
        t = (-beta_min + np.sqrt(beta_min**2 + 2 * beta_d * np.log(1 + sigma**2))) / beta_d
        return np.ones_like(sigma), -sigma, 1 / np.sqrt(sigma**2 + 1), (M - 1) * t
    return np.ones_like(sigma), sigma, np.ones_like(sigma), np.log(sigma / 2)


@pytest.mark.parametrize("precond", ["edm", "vp", "ve"])
def test_coefficients_equal_table_1(precond):
    edm = EDM(precond, sigma_data=0.5)
    got = edm.coefficients(torch.tensor(SIGMAS, dtype=torch.float64))
    for g, e in zip(got, _table1(precond, SIGMAS)):
        # 1e-9: ln(1 + σ²) at σ = 0.002 loses digits in the reference's float64 (ours uses log1p)
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-9, atol=1e-12)
    if precond == "vp":  # c_noise = (M − 1)·t on the VP schedule
        t = np.array([1e-5, 0.1, 0.5, 1.0])
        c_noise = edm.coefficients(torch.tensor(_vp_sigma_np(t)))[3].numpy()
        np.testing.assert_allclose(c_noise, 999 * t, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("precond", ["edm", "vp", "ve"])
def test_denoiser_wraps_the_network(precond):
    edm = EDM(precond, sigma_data=0.7)

    def net(x_in, c_noise, shift=0.0):
        assert x_in.dtype == torch.float32 and c_noise.shape == (x_in.shape[0],)
        return 2 * x_in + c_noise.reshape(-1, 1, 1, 1) + shift

    denoiser = edm.precondition(net)
    x = torch.randn(len(SIGMAS), 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = denoiser(x, torch.tensor(SIGMAS), shift=0.5)
    assert out.dtype == torch.float32
    c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in _table1(precond, SIGMAS, sigma_data=0.7))
    xn = x.numpy()
    expected = c_skip * xn + c_out * (2 * c_in * xn + c_noise + 0.5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    # a scalar σ is used for every sample
    torch.testing.assert_close(denoiser(x[:2], 1.0), denoiser(x[:2], torch.tensor([1.0, 1.0])))
    # a network under bf16 autocast still gives float32 x̂0
    lin = torch.nn.Linear(3, 3)
    wrapped = edm.precondition(lambda x_in, c_noise: lin(x_in))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert wrapped(x.float(), torch.tensor(SIGMAS, dtype=torch.float32)).dtype == torch.float32


def test_supported_ranges_follow_nvlabs():
    lo, hi = EDM("vp").supported_range
    np.testing.assert_allclose([lo, hi], _vp_sigma_np(np.array([1e-5, 1.0])), rtol=1e-10)
    assert EDM("ve").supported_range == (0.02, 100.0)
    assert EDM("edm").supported_range == (0.0, math.inf)
    # sampling grids are clipped into them (as NVlabs/edm's sampler does): VE starts at 80,
    # stops at 0.02; VP at [0.002, 80]
    np.testing.assert_allclose(EDM("ve").sigmas(18)[[0, -2, -1]].numpy(), [80.0, 0.02, 0.0])
    np.testing.assert_allclose(EDM("vp").sigmas(18)[[0, -2, -1]].numpy(), [80.0, 0.002, 0.0])


N_SIGMA = 200_000


def test_edm_noise_is_log_normal():
    sigma = EDM("edm", P_mean=-1.2, P_std=1.2).sample_sigma(N_SIGMA, torch.Generator().manual_seed(1)).double()
    log_sigma = sigma.log()
    # mean within 5 standard errors (1.2/sqrt(N)); std within 5 SE of a normal's std (1.2/sqrt(2N))
    assert abs(log_sigma.mean().item() + 1.2) < 5 * 1.2 / math.sqrt(N_SIGMA)
    assert abs(log_sigma.std().item() - 1.2) < 5 * 1.2 / math.sqrt(2 * N_SIGMA)
    assert stats.kstest(log_sigma.numpy(), stats.norm(-1.2, 1.2).cdf).pvalue > 1e-3


def test_vp_noise_is_uniform_in_t():
    sigma = EDM("vp", epsilon_t=1e-3).sample_sigma(N_SIGMA, torch.Generator().manual_seed(2)).double().numpy()
    t = (-0.1 + np.sqrt(0.1**2 + 2 * 19.9 * np.log1p(sigma**2))) / 19.9
    assert t.min() >= 1e-3 - 1e-6 and t.max() <= 1 + 1e-6
    # U(ε, 1): mean (1 + ε)/2 with SE (1 − ε)/sqrt(12 N); KS for the shape
    assert abs(t.mean() - (1 + 1e-3) / 2) < 5 * (1 - 1e-3) / math.sqrt(12 * N_SIGMA)
    assert stats.kstest(t, stats.uniform(1e-3, 1 - 1e-3).cdf).pvalue > 1e-3


def test_ve_noise_is_log_uniform():
    sigma = EDM("ve").sample_sigma(N_SIGMA, torch.Generator().manual_seed(3)).double().numpy()
    lo, hi = math.log(0.02), math.log(100)
    u = np.log(sigma)
    assert u.min() >= lo - 1e-6 and u.max() <= hi + 1e-6
    assert abs(u.mean() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * N_SIGMA)
    assert stats.kstest(u, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


@pytest.mark.parametrize("precond", ["edm", "vp", "ve"])
def test_loss_weight_and_loss(precond):
    edm = EDM(precond, sigma_data=0.5)
    s = SIGMAS
    expected_weight = (s**2 + 0.25) / (s * 0.5) ** 2 if precond == "edm" else 1 / s**2
    np.testing.assert_allclose(edm.weight(torch.tensor(s)).numpy(), expected_weight, rtol=1e-12)

    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(len(s), 1, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(len(s), 1, 4, 4, generator=g, dtype=torch.float64)
    denoiser = lambda x, sigma, k=1.0: k * x / (1 + sigma.reshape(-1, 1, 1, 1))  # noqa: E731
    out = edm.loss(denoiser, x0, sigma=torch.tensor(s), noise=noise, k=0.5)
    x = x0.numpy() + s.reshape(-1, 1, 1, 1) * noise.numpy()
    D = 0.5 * x / (1 + s.reshape(-1, 1, 1, 1))
    np.testing.assert_allclose(out.diffusion.numpy(), expected_weight * ((D - x0.numpy()) ** 2).mean(axis=(1, 2, 3)),
                               rtol=1e-10)
    assert torch.equal(out.loss, out.diffusion) and torch.equal(out.sigma, torch.tensor(s))
    # drawn noise levels are reproducible from the generator
    a = edm.loss(denoiser, x0, generator=torch.Generator().manual_seed(9))
    b = edm.loss(denoiser, x0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.loss, b.loss) and a.loss.shape == (len(s),)


@pytest.mark.parametrize("precond", ["edm", "vp", "ve"])
def test_regularizer_zero_lambda_exact_and_gradients_finite_at_sigma_ends(precond):
    torch.manual_seed(0)
    edm = EDM(precond)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    denoiser = edm.precondition(lambda x, c_noise: net(x) * (1 + 0.01 * c_noise.reshape(-1, 1, 1, 1)))
    lo, hi = edm.supported_range
    sigma = torch.tensor([max(0.002, lo), max(0.002, lo), min(80.0, hi), min(80.0, hi)])
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    plain = edm.loss(denoiser, x0, sigma=sigma, noise=noise)
    zero = edm.loss(denoiser, x0, SpectralRegularizer(FourierAmplitudeLoss(), lam=0.0), sigma=sigma, noise=noise)
    assert torch.equal(plain.loss, zero.loss)
    grad_plain = torch.autograd.grad(plain.loss.mean(), list(net.parameters()))
    for lam in (1.0, "edm"):
        out = edm.loss(denoiser, x0, SpectralRegularizer(FourierAmplitudeLoss(), lam=lam), sigma=sigma, noise=noise)
        assert torch.isfinite(out.loss).all() and (out.spectral > 0).all()
        grads = torch.autograd.grad(out.loss.mean(), list(net.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
        assert any(not torch.allclose(g, h) for g, h in zip(grads, grad_plain))


# --- grids and samplers --------------------------------------------------------------------

def test_karras_sigmas_equal_the_formula_and_diffusers():
    for n in (1, 2, 18, 40):
        got = karras_sigmas(n, 0.002, 80.0, 7.0)
        ramp = np.linspace(0, 1, n)
        expected = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
        assert got.dtype == torch.float64 and got.shape == (n + 1,) and got[-1] == 0
        np.testing.assert_allclose(got[:-1].numpy(), expected, rtol=1e-13)
        ref = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0)
        ref.set_timesteps(n)
        np.testing.assert_allclose(got.numpy(), ref.sigmas.double().numpy(), rtol=1e-6)


def test_vp_and_ve_grids():
    grid = vp_sigmas(10, 0.002, 80.0, epsilon_s=1e-3).numpy()
    np.testing.assert_allclose(grid[[0, -2, -1]], [80.0, 0.002, 0.0], rtol=1e-9)
    # equally spaced in t on a VP schedule: invert σ(t) = sqrt(exp(½β_d t² + β_min t) − 1)
    # through its two unknowns using the end points, then check the spacing
    y = np.log1p(grid[:-1] ** 2)  # = ½β_d t² + β_min t, t from 1 down to ε_s
    t = np.linspace(1, 1e-3, 10)
    coef, *_ = np.linalg.lstsq(np.stack([0.5 * t**2, t], 1), y, rcond=None)
    np.testing.assert_allclose(np.stack([0.5 * t**2, t], 1) @ coef, y, rtol=1e-9)
    grid = ve_sigmas(5, 0.02, 100.0).numpy()
    np.testing.assert_allclose(grid[:-1], np.geomspace(100, 0.02, 5), rtol=1e-12)


def _smooth_denoiser(x, sigma):
    """A nonlinear x̂0 (float64 in, float64 out) so that samplers differ from one another."""
    s = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    return torch.tanh(x) * 0.8 / (1 + 0.1 * s) + 0.1 * x / (1 + s**2)


def _start(shape, sigma0, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sigma0


def test_euler_equals_diffusers_edm_euler():
    ref = EDMEulerScheduler()
    ref.set_timesteps(12)
    x0 = _start((4, 6), float(ref.sigmas[0]), seed=5)
    x = x0.float()
    for i, timestep in enumerate(ref.timesteps):
        sigma = ref.sigmas[i].double()
        x0_hat = _smooth_denoiser(x.double(), sigma.expand(x.shape[0])).float()
        x = ref.step(torch.zeros_like(x), timestep, x, pred_original_sample=x0_hat).prev_sample
    got = sample_euler(_smooth_denoiser, x0, ref.sigmas.double())
    torch.testing.assert_close(got, x.double(), rtol=1e-5, atol=1e-5)  # diffusers steps in float32


def test_dpmpp_2m_equals_diffusers_edm_dpmsolver():
    for n in (5, 20):
        ref = EDMDPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint")
        ref.set_timesteps(n)
        # feed x̂0 directly: the solver, not diffusers' preconditioning, is under test
        ref.precondition_outputs = lambda sample, model_output, sigma: model_output
        x0 = _start((4, 6), float(ref.sigmas[0]), seed=6)
        x = x0.float()
        for i, timestep in enumerate(ref.timesteps):
            x0_hat = _smooth_denoiser(x.double(), ref.sigmas[i].double().expand(x.shape[0])).float()
            x = ref.step(x0_hat, timestep, x).prev_sample
        got = sample_dpmpp_2m(_smooth_denoiser, x0, ref.sigmas.double())
        torch.testing.assert_close(got, x.double(), rtol=1e-5, atol=1e-5)


def _heun_reference(denoiser, x, sigmas, churn, S_min, S_max, S_noise, generator):
    """Karras et al. 2022, Algorithm 2, line by line."""
    sigmas = sigmas.tolist()
    N = len(sigmas) - 1
    for i in range(N):
        t_i, t_next = sigmas[i], sigmas[i + 1]
        gamma = min(churn / N, 2**0.5 - 1) if S_min <= t_i <= S_max else 0.0
        t_hat = t_i + gamma * t_i
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, dtype=torch.float64) * S_noise
            x = x + (t_hat**2 - t_i**2) ** 0.5 * eps
        d = (x - denoiser(x, torch.full((x.shape[0],), t_hat, dtype=torch.float64))) / t_hat
        x_next = x + (t_next - t_hat) * d
        if t_next != 0:
            d_prime = (x_next - denoiser(x_next, torch.full((x.shape[0],), t_next, dtype=torch.float64))) / t_next
            x_next = x + (t_next - t_hat) * (0.5 * d + 0.5 * d_prime)
        x = x_next
    return x


@pytest.mark.parametrize("churn,S_min,S_max,S_noise", [(0.0, 0.0, math.inf, 1.0), (40.0, 0.05, 50.0, 1.003),
                                                       (80.0, 0.0, math.inf, 1.0)])
def test_heun_equals_algorithm_2(churn, S_min, S_max, S_noise):
    sigmas = karras_sigmas(18)
    x0 = _start((4, 6), 80.0, seed=7)
    expected = _heun_reference(_smooth_denoiser, x0, sigmas, churn, S_min, S_max, S_noise,
                               torch.Generator().manual_seed(8))
    got = sample_heun(_smooth_denoiser, x0, sigmas, churn=churn, S_min=S_min, S_max=S_max, S_noise=S_noise,
                      generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_euler_with_churn_differs_and_heun_calls_count():
    calls = []

    def counting(x, sigma):
        calls.append(float(sigma[0]))
        return _smooth_denoiser(x, sigma)

    sample_heun(counting, _start((2, 3), 80.0, 0), karras_sigmas(18))
    assert len(calls) == 2 * 18 - 1
    a = sample_euler(_smooth_denoiser, _start((2, 3), 80.0, 0), karras_sigmas(18), churn=10.0,
                     generator=torch.Generator().manual_seed(1))
    b = sample_euler(_smooth_denoiser, _start((2, 3), 80.0, 0), karras_sigmas(18))
    assert not torch.allclose(a, b)


def test_edm_sample_passes_model_kwargs_and_returns_float32():
    edm = EDM("edm")
    seen = {}

    def net(x_in, c_noise, label=None):
        seen["label"] = label
        return torch.zeros_like(x_in)

    x = edm.sample(edm.precondition(net), (3, 1, 4, 4), "dpmpp_2m", steps=4,
                   generator=torch.Generator().manual_seed(0), label="cat")
    assert seen["label"] == "cat" and x.dtype == torch.float32 and x.shape == (3, 1, 4, 4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="precond='iddpm' is not accepted"):
        EDM("iddpm")
    with pytest.raises(ValueError, match="sigma_min=.* must be smaller"):
        EDM(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="sigma_data=0"):
        EDM(sigma_data=0)
    with pytest.raises(ValueError, match="M=1"):
        EDM("vp", M=1)
    edm = EDM()
    f = lambda x, s: x  # noqa: E731
    with pytest.raises(ValueError, match="sampler='ddim' is not accepted"):
        edm.sample(f, (2, 3), "ddim")
    with pytest.raises(ValueError, match="churn=1.0 is not accepted with sampler='dpmpp_2m'"):
        edm.sample(f, (2, 3), "dpmpp_2m", churn=1.0)
    with pytest.raises(ValueError, match="discretization='iddpm'"):
        edm.sample(f, (2, 3), discretization="iddpm")
    with pytest.raises(ValueError, match="steps=0"):
        edm.sample(f, (2, 3), steps=0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_euler(f, torch.zeros(2, 3), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="churn=-1"):
        sample_heun(f, torch.zeros(2, 3), karras_sigmas(3), churn=-1)
    with pytest.raises(ValueError, match="n=0"):
        karras_sigmas(0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        edm.loss(f, torch.zeros(2, 3), sigma=torch.tensor([0.0, 1.0]))
