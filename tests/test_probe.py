"""The spectral error map (specreg.metrics.probe) against closed-form cases: the Wiener filter
on stationary Gaussian data reaches its bound, an exact posterior mean on a discrete prior
beats it, the maps do not depend on the batch size, and the training-weight map integrates
to a direct Monte-Carlo of each formulation's loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from specreg.diffusion import DDPM, EDM, FlowMatching
from specreg.metrics.probe import (
    as_denoiser,
    probe_sigmas,
    spectral_error_map,
    training_weight_map,
)

SIZE = 16


def _gaussian(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stationary Gaussian images with power S(f) = |H(f)|² (a red spectrum), and S."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    fy = torch.fft.fftfreq(SIZE, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(SIZE, dtype=torch.float64)[None, :]
    f = (fx**2 + fy**2).sqrt()
    S = 0.5 / (1 + (f / 0.05) ** 2)  # 1/f²-like, so bands separate across σ
    x0 = torch.fft.irfftn(S.sqrt() * torch.fft.rfftn(z, dim=(-2, -1), norm="ortho"), s=(SIZE, SIZE),
                          dim=(-2, -1), norm="ortho")
    return x0, S


def _wiener(S: torch.Tensor, scale: float = 1.0):
    def D(x, sigma):
        s2 = sigma.to(torch.float64).reshape(-1, 1, 1, 1) ** 2
        gain = scale * S / (scale * S + s2)
        return torch.fft.irfftn(gain * torch.fft.rfftn(x.to(torch.float64), dim=(-2, -1), norm="ortho"),
                                s=x.shape[-2:], dim=(-2, -1), norm="ortho")
    return D


SIGMAS = np.geomspace(0.01, 10, 12)


def test_the_wiener_filter_on_gaussian_data_reaches_w():
    x0, S = _gaussian(512)
    m = spectral_error_map(_wiener(S), x0, SIGMAS, bands=4, batch_size=100)["model"]
    np.testing.assert_allclose(m.e, m.w, rtol=0.06)
    assert np.nanmax(m.e_floor / m.e) < 0.1  # the floor is the size of that Monte-Carlo error
    # a filter that believes the power is 4× larger is worse than the bound where it matters
    bad = spectral_error_map(_wiener(S, scale=4.0), x0, SIGMAS, bands=4, batch_size=100)["model"]
    assert np.nanmax(bad.ratio) > 1.3


def test_the_posterior_mean_on_a_discrete_prior_beats_w():
    g = torch.Generator().manual_seed(1)
    atoms = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    x0 = atoms[torch.randint(0, 4, (512,), generator=g)]

    def posterior_mean(x, sigma):
        s2 = sigma.to(torch.float64).reshape(-1, 1) ** 2
        d2 = ((x.to(torch.float64)[:, None] - atoms[None]) ** 2).flatten(2).sum(-1)  # (B, 4)
        p = torch.softmax(-d2 / (2 * s2), dim=1)
        return torch.einsum("bk,kchw->bchw", p, atoms)

    m = spectral_error_map(posterior_mean, x0, np.geomspace(0.05, 20, 10), bands=3, batch_size=128)["model"]
    assert np.all(m.e <= m.w + 3 * (m.e_floor + m.w_floor) + 1e-9)
    assert np.nanmin(m.ratio) < 0.2  # a nonlinear denoiser earns far more than the linear bound


def test_maps_do_not_depend_on_the_batch_size():
    x0, S = _gaussian(40)
    a = spectral_error_map(_wiener(S), x0, SIGMAS[:4], bands=3, batch_size=7)["model"]
    b = spectral_error_map(_wiener(S), x0, SIGMAS[:4], bands=3, batch_size=40)["model"]
    for key in ("e", "w", "e_floor", "ratio_floor"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-10)


def _mc_loss(form, D, x0, reg, draws: int = 60) -> float:
    g = torch.Generator().manual_seed(7)
    vals = []
    for _ in range(draws):
        vals.append(form.loss(D, x0, regularizer=reg, generator=g).loss.double().mean())
    return float(torch.stack(vals).mean())


@pytest.mark.parametrize("case", ["edm", "edm+fourier_l2", "vp", "flow", "ddpm-eps", "ddpm-v", "adaptive"])
def test_training_weight_map_integrates_to_the_objective(case):
    """Σ T(σ, b)·e(σ, b) on a fine grid = E[loss] drawn the formulation's own way."""
    from specreg.diffusion.timesteps import build_timestep_sampler
    from specreg.losses.registry import build_loss
    from specreg.regularizer import SpectralRegularizer

    x0, S = _gaussian(256, seed=3)
    x0 = x0.float()
    wiener = _wiener(S)
    reg = None
    if case.startswith("edm"):
        form = EDM("edm")
        if case.endswith("fourier_l2"):
            reg = SpectralRegularizer(build_loss("fourier_l2"), lam="edm", lam_scale=0.5, fade_sigma=0.3)
    elif case == "vp":
        form = EDM("vp")
    elif case == "flow":
        form = FlowMatching("logit_normal", shift=2.0)
    elif case == "adaptive":
        sampler = build_timestep_sampler({"name": "adaptive", "bins": 8, "base": {"name": "lognormal"}})
        g = torch.Generator().manual_seed(0)
        for _ in range(10):
            sg = sampler.sample(128, g)
            sampler.observe(sg, 1 / sg)
        form = EDM("edm", time_sampler=sampler)
    else:
        form = DDPM("linear", timesteps=50, prediction=case.split("-")[1])
    if isinstance(form, DDPM):
        grid = form.sigma(torch.arange(50)).numpy()
        # the network of DDPM sees x_t: wrap the Wiener denoiser into the model's output
        def model(x_t, t):
            a = form.alpha_bar(t).reshape(-1, 1, 1, 1)
            sig = ((1 - a) / a).sqrt()
            x0_hat = wiener(x_t / a.sqrt(), sig.flatten())
            eps = (x_t - a.sqrt() * x0_hat) / (1 - a).sqrt()
            return (eps if form.prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0_hat).float()
        D_probe, D_loss = as_denoiser(form, model), model
    elif isinstance(form, FlowMatching):
        grid = np.geomspace(1e-4, 1e4, 400)
        def model(x_t, t):
            tt = t.to(torch.float64).reshape(-1, 1, 1, 1)
            x0_hat = wiener(x_t / (1 - tt), (tt / (1 - tt)).flatten())
            return ((x_t - x0_hat) / tt).float()  # v = ε − x0 = (x_t − x0)/t
        D_probe, D_loss = as_denoiser(form, model), model
    else:
        grid = np.geomspace(1e-4, 1e3, 400)
        D_probe = D_loss = lambda x, s: wiener(x, s).float()  # noqa: E731
    m = spectral_error_map(D_probe, x0, grid, bands=4, batch_size=256)["model"]
    T = training_weight_map(form, grid, x0, bands=4, regularizer=reg)
    predicted = float(np.nansum(T.total * m.e))
    assert predicted == pytest.approx(_mc_loss(form, D_loss, x0, reg), rel=0.04)


def test_probe_sigmas_span_the_training_range():
    s = probe_sigmas(EDM("edm"), 32)
    assert s.size == 32 and s[0] == pytest.approx(math.exp(-1.2 - 3.0902 * 1.2), rel=1e-3)
    ddpm = DDPM("linear", timesteps=1000)
    d = probe_sigmas(ddpm, 32)
    table = ddpm.sigma(torch.arange(1000)).numpy()
    assert np.all(np.isin(d, table)) and np.all(np.diff(d) > 0)


def test_decoded_maps_use_the_decoder():
    x0, S = _gaussian(32)
    decode = lambda z: torch.nn.functional.avg_pool2d(z, 2)  # noqa: E731  (a linear "decoder")
    S_hat = torch.fft.rfftn(x0, dim=(-2, -1), norm="ortho").abs().square().mean(0)  # the set's own S
    maps = spectral_error_map(_wiener(S_hat), x0, SIGMAS[:3], bands=2, batch_size=16, decode=decode)
    assert set(maps) == {"model", "decoded"}
    # the latent Wiener filter (from the set's spectrum) decoded *is* the denoiser here: e = w
    np.testing.assert_allclose(maps["decoded"].e, maps["decoded"].w, rtol=1e-9)


def test_bad_arguments_give_one_line():
    x0, S = _gaussian(4)
    for kwargs, words in (({"sigmas": [0.1, -1]}, "sigmas="), ({"sigmas": [0.1], "bands": 0}, "bands=0"),
                          ({"sigmas": [0.1], "batch_size": 0}, "batch_size=0")):
        with pytest.raises(ValueError, match=words):
            spectral_error_map(_wiener(S), x0, **kwargs)


def test_one_dimensional_signals_reach_w_too():
    """Audio-shaped (N, 1, L): the same maps over the last dim only."""
    g = torch.Generator().manual_seed(4)
    L = 256
    f = torch.fft.rfftfreq(L, dtype=torch.float64)
    S = 0.3 / (1 + (f / 0.02) ** 2)
    z = torch.randn(400, 1, L, generator=g, dtype=torch.float64)
    x0 = torch.fft.irfft(S.sqrt() * torch.fft.rfft(z, norm="ortho"), n=L, norm="ortho")

    def D(x, sigma):
        gain = S / (S + sigma.to(torch.float64).reshape(-1, 1, 1) ** 2)
        return torch.fft.irfft(gain * torch.fft.rfft(x.to(torch.float64), norm="ortho"), n=L, norm="ortho")

    m = spectral_error_map(D, x0, SIGMAS, ndim=1, bands=4, batch_size=64)["model"]
    np.testing.assert_allclose(m.e, m.w, rtol=0.06)
