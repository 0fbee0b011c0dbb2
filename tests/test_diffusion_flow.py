"""Flow matching (SD3 convention) against diffusers' flow-match schedulers and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from scipy import stats

from specreg.diffusion import FlowMatching, sample_flow, shift_time
from specreg.losses import FourierAmplitudeLoss
from specreg.regularizer import SpectralRegularizer


def _velocity(x, t):
    """A smooth nonlinear velocity field v(x, t) (float64)."""
    tt = t.to(torch.float64).reshape(-1, *([1] * (x.dim() - 1)))
    x = x.to(torch.float64)
    return torch.tanh(x) * (1 + tt) - 0.3 * x * tt


def test_shift_equals_diffusers_training_sigmas():
    for shift in (1.0, 3.0):
        ref = FlowMatchEulerDiscreteScheduler(shift=shift)
        t = torch.arange(1000, 0, -1, dtype=torch.float64) / 1000
        np.testing.assert_allclose(shift_time(t, shift).numpy(), ref.sigmas.double().numpy(), rtol=1e-6)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_equals_diffusers(shift):
    ref = FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x_start = torch.randn(3, 5, generator=g)
    x = x_start.clone()
    for i, timestep in enumerate(ref.timesteps):
        t = ref.sigmas[i].expand(x.shape[0])  # diffusers' sigmas are the flow times t
        x = ref.step(_velocity(x, t).float(), timestep, x).prev_sample
    got = sample_flow(_velocity, x_start.double(), ref.sigmas.double(), method="euler", dtype=torch.float64)
    torch.testing.assert_close(got, x.double(), rtol=1e-5, atol=1e-5)  # diffusers steps in float32


def test_heun_equals_diffusers():
    ref = FlowMatchHeunDiscreteScheduler(shift=2.0)
    ref.set_timesteps(8)
    x_start = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    x = x_start.clone()
    for timestep in ref.timesteps:
        t = (timestep / 1000).expand(x.shape[0])
        x = ref.step(_velocity(x, t).float(), timestep, x).prev_sample
    # diffusers' grid: the 8 distinct sigmas then 0
    grid = torch.unique_consecutive(ref.sigmas).double()
    got = sample_flow(_velocity, x_start.double(), grid, method="heun", dtype=torch.float64)
    torch.testing.assert_close(got, x.double(), rtol=1e-5, atol=1e-5)


def test_sample_uses_the_shifted_grid_and_generator():
    seen = []

    def model(x, t, label=None):
        seen.append((float(t[0]), label))
        return torch.zeros_like(x)

    fm = FlowMatching(shift=3.0)
    x = fm.sample(model, (2, 4), "heun", steps=4, generator=torch.Generator().manual_seed(2), label=7)
    # v = 0 leaves the initial noise unchanged
    torch.testing.assert_close(x, torch.randn(2, 4, generator=torch.Generator().manual_seed(2)))
    grid = [3 * u / (1 + 2 * u) for u in (1.0, 0.75, 0.5, 0.25)]
    # Heun: v at t_i and t_{i+1}, except the last step to 0 (Euler)
    expected = [grid[0], grid[1], grid[1], grid[2], grid[2], grid[3], grid[3]]
    np.testing.assert_allclose([t for t, _ in seen], expected, rtol=1e-6)
    assert all(label == 7 for _, label in seen)


N_T = 200_000


def test_time_sampling_distributions():
    g = torch.Generator().manual_seed(3)
    t = FlowMatching("uniform").sample_t(N_T, g).numpy()
    assert t.min() >= 0 and t.max() < 1 and stats.kstest(t, "uniform").pvalue > 1e-3
    t = FlowMatching("logit_normal", logit_mean=0.5, logit_std=0.8).sample_t(N_T, g).numpy()
    n = np.log(t / (1 - t))
    # mean within 5 SE (0.8/sqrt(N)), std within 5 SE (0.8/sqrt(2N))
    assert abs(n.mean() - 0.5) < 5 * 0.8 / math.sqrt(N_T) and abs(n.std() - 0.8) < 5 * 0.8 / math.sqrt(2 * N_T)
    assert stats.kstest(n, stats.norm(0.5, 0.8).cdf).pvalue > 1e-3
    # shift s: t' = s·t/(1 + (s − 1)·t) ⇔ t = t'/(s − (s − 1)·t'), which must be uniform
    t_shifted = FlowMatching("uniform", shift=3.0).sample_t(N_T, g).numpy()
    assert stats.kstest(t_shifted / (3 - 2 * t_shifted), "uniform").pvalue > 1e-3


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t, gain=1.0):
        return gain * self.conv(x) * (1 + t.reshape(-1, 1, 1, 1))


def test_loss_is_velocity_mse_and_x0_hat_is_consistent():
    torch.manual_seed(0)
    net = _Net().double()
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64)
    noise = torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.7, 0.999], dtype=torch.float64)
    seen = {}

    class Spy:
        def __call__(self, x0_hat, x0_, sigma, diffusion_loss):
            seen.update(x0_hat=x0_hat, sigma=sigma)
            zeros = torch.zeros_like(diffusion_loss)
            return type("Out", (), {"value": zeros, "spectral": zeros, "lam": zeros})()

    out = FlowMatching().loss(net, x0, Spy(), t=t, noise=noise, gain=0.5)
    x_t = (1 - t.reshape(-1, 1, 1, 1)) * x0 + t.reshape(-1, 1, 1, 1) * noise
    v_hat = net(x_t, t, gain=0.5)
    torch.testing.assert_close(out.diffusion, ((v_hat - (noise - x0)) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(seen["x0_hat"], x_t - t.reshape(-1, 1, 1, 1) * v_hat)
    torch.testing.assert_close(seen["sigma"], t / (1 - t))
    torch.testing.assert_close(out.sigma, t / (1 - t))


def test_regularizer_zero_lambda_exact_and_gradients_finite_at_both_ends():
    torch.manual_seed(0)
    net = _Net()
    fm = FlowMatching("logit_normal")
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    for t, lams in ((torch.tensor([0.0, 1e-6, 1 - 1e-6, 1.0]), (1.0,)),
                    (torch.tensor([1e-6, 1e-3, 0.999, 1 - 1e-6]), (1.0, "edm"))):
        plain = fm.loss(net, x0, t=t, noise=noise)
        zero = fm.loss(net, x0, SpectralRegularizer(FourierAmplitudeLoss(), lam=0.0), t=t, noise=noise)
        assert torch.equal(plain.loss, zero.loss)
        grad_plain = torch.autograd.grad(plain.loss.mean(), list(net.parameters()))
        for lam in lams:
            out = fm.loss(net, x0, SpectralRegularizer(FourierAmplitudeLoss(), lam=lam), t=t, noise=noise)
            assert torch.isfinite(out.loss).all()
            grads = torch.autograd.grad(out.loss.mean(), list(net.parameters()))
            assert all(torch.isfinite(g).all() for g in grads)
            assert any(not torch.allclose(g, h) for g, h in zip(grads, grad_plain))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="time_sampling='beta' is not accepted"):
        FlowMatching("beta")
    with pytest.raises(ValueError, match="shift=0"):
        FlowMatching(shift=0)
    with pytest.raises(ValueError, match="logit_std=-1"):
        FlowMatching("logit_normal", logit_std=-1)
    fm = FlowMatching()
    f = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="sampler='dpmpp_2m' is not accepted"):
        fm.sample(f, (2, 3), "dpmpp_2m")
    with pytest.raises(ValueError, match="strictly decreasing"):
        fm.sample(f, (2, 3), ts=torch.tensor([0.5, 0.7, 0.0]))
    with pytest.raises(ValueError, match=r"t must be float times in \[0, 1\]"):
        fm.loss(f, torch.zeros(2, 3), t=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="steps=0"):
        fm.sample(f, (2, 3), steps=0)
