"""Every sampler on Gaussian data with the closed-form optimal model.

x0 ~ N(μ, diag(s²)) in 16 dims. The optimal predictors are linear in x, so every sampler
is an affine map plus Gaussian noise, and the exact mean and variance of its output
(discretisation bias included) follow from a scalar recurrence per dim, derived here
from the papers' update rules. Each test checks

* the sample mean and variance (N = 4000 samples) against that recurrence within
  5 standard errors: SE(mean) = sqrt(var/N), SE(var) = var·sqrt(2/(N − 1)) for Gaussian
  samples — over 16 dims × 2 statistics × 17 runs a 5-SE false alarm has probability
  ~3e-4 (and the seeds are fixed);
* the recurrence's mean and variance against the data's μ and s², within the stated
  discretisation bias of the sampler at that step count (the bias bound is what "enough
  steps" means; it shrinks as steps grow).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from specreg.diffusion import DDPM, EDM, FlowMatching

D, N = 16, 4000
MU = np.linspace(-1.0, 1.0, D)
S = np.linspace(0.4, 1.5, D)
MU_T, S_T = torch.tensor(MU), torch.tensor(S)
T = 1000
ALPHA_BAR = np.cumprod(1 - np.linspace(1e-4, 0.02, T))  # Ho et al.'s linear schedule


def _check(x: torch.Tensor, mean: np.ndarray, var: np.ndarray, mean_bias: float, var_bias: float) -> None:
    x = x.double().numpy()
    m, v = x.mean(0), x.var(0, ddof=1)
    assert np.all(np.abs(m - mean) <= 5 * np.sqrt(var / N)), (m - mean) / np.sqrt(var / N)
    assert np.all(np.abs(v - var) <= 5 * var * math.sqrt(2 / (N - 1))), (v / var - 1) / math.sqrt(2 / (N - 1))
    # the sampler's own bias at this step count (exact, from the recurrence)
    assert np.all(np.abs(mean - MU) <= mean_bias), np.abs(mean - MU).max()
    assert np.all(np.abs(var / S**2 - 1) <= var_bias), np.abs(var / S**2 - 1).max()


# --- DDPM / DDIM ------------------------------------------------------------------------

def _vp_model(prediction):
    acp = torch.tensor(ALPHA_BAR)

    def model(x, t):
        a = acp[t].reshape(-1, 1)
        ra, rb = a.sqrt(), (1 - a).sqrt()
        x0 = MU_T + ra * S_T**2 / (a * S_T**2 + 1 - a) * (x - ra * MU_T)  # E[x0 | x_t]
        eps = (x - ra * x0) / rb
        return {"eps": eps, "x0": x0, "v": ra * eps - rb * x0}[prediction]

    return model


def _vp_recurrence(sampler, steps, eta):
    """Mean and variance of x after DDPM (Ho et al. Eq. 6–7) or DDIM (Song et al. Eq. 12)."""
    ratio = T // steps
    ts = list(range(0, T, ratio))[::-1][:steps]  # "leading" spacing
    m, v = np.zeros(D), np.ones(D)
    for i, t in enumerate(ts):
        a_t = ALPHA_BAR[t]
        prev = (ts[i + 1] if i + 1 < len(ts) else -1) if sampler == "ddpm" else t - ratio
        a_p = ALPHA_BAR[prev] if prev >= 0 else 1.0
        ra = math.sqrt(a_t)
        g = ra * S**2 / (a_t * S**2 + 1 - a_t)  # x̂0 = μ + g·(x − sqrt(ᾱ)μ)
        off = MU * (1 - g * ra)
        if sampler == "ddpm":
            beta = 1 - a_t / a_p
            c0, c1 = math.sqrt(a_p) * beta / (1 - a_t), math.sqrt(a_t / a_p) * (1 - a_p) / (1 - a_t)
            A, B, var_noise = c0 * g + c1, c0 * off, (1 - a_p) / (1 - a_t) * beta
        else:
            std2 = eta**2 * (1 - a_p) / (1 - a_t) * (1 - a_t / a_p)
            c = math.sqrt(max(1 - a_p - std2, 0.0)) / math.sqrt(1 - a_t)  # on ε̂ = (x − sqrt(ᾱ)x̂0)/sqrt(1 − ᾱ)
            A = math.sqrt(a_p) * g + c * (1 - ra * g)
            B = math.sqrt(a_p) * off - c * ra * off
            var_noise = std2
        m, v = A * m + B, A**2 * v + var_noise
    return m, v


# var_bias: the exact relative variance bias at that step count, rounded up (skipped steps
# shrink the variance; 1000 ancestral steps leave 2%)
@pytest.mark.parametrize("sampler,prediction,steps,eta,var_bias", [
    ("ddpm", "eps", 1000, 0.0, 0.03),
    ("ddpm", "v", 100, 0.0, 0.18),
    ("ddpm", "x0", 250, 0.0, 0.08),
    ("ddim", "eps", 100, 0.0, 0.08),
    ("ddim", "x0", 100, 1.0, 0.18),
    ("ddim", "v", 250, 1.0, 0.08),
    ("ddim", "x0", 100, 0.5, 0.10),
])
def test_ddpm_and_ddim(sampler, prediction, steps, eta, var_bias):
    ddpm = DDPM("linear", timesteps=T, prediction=prediction)
    x = ddpm.sample(_vp_model(prediction), (N, D), sampler, steps=steps, eta=eta,
                    generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean, var = _vp_recurrence(sampler, steps, eta)
    _check(x, mean, var, mean_bias=0.02, var_bias=var_bias)


# --- EDM ------------------------------------------------------------------------------------

def _edm_denoiser(x, sigma):
    sig = sigma.reshape(-1, 1).to(torch.float64)
    return MU_T + S_T**2 / (S_T**2 + sig**2) * (x.double() - MU_T)  # E[x0 | x0 + σε = x]


def _edm_recurrence(sampler, sigmas, churn=0.0, S_min=0.0, S_max=math.inf, S_noise=1.0):
    """Mean and variance of x for Euler/Heun with churn (Karras Alg. 2) and DPM-Solver++(2M).

    With y = x − μ the optimal denoiser gives x − D = σ²/(s² + σ²)·y, so dy/dσ = k(σ)·y,
    k(σ) = σ/(s² + σ²).
    """
    sig = sigmas.tolist()
    n = len(sig) - 1
    k = lambda q: q / (S**2 + q**2)  # noqa: E731
    c = lambda q: S**2 / (S**2 + q**2)  # noqa: E731  (D − μ = c·y)
    if sampler == "dpmpp_2m":
        # deterministic: y_i = f_i·y_0
        f, f_prev = np.ones(D), None
        for i in range(n):
            if sig[i + 1] == 0:
                f_new = c(sig[i]) * f
            else:
                r_sig = sig[i + 1] / sig[i]
                d_mix = c(sig[i]) * f
                if f_prev is not None:
                    r = math.log(sig[i - 1] / sig[i]) / math.log(sig[i] / sig[i + 1])
                    d_mix = (1 + 1 / (2 * r)) * c(sig[i]) * f - 1 / (2 * r) * c(sig[i - 1]) * f_prev
                f_new = r_sig * f + (1 - r_sig) * d_mix
            f_prev, f = f, f_new
        return MU - MU * f, sig[0] ** 2 * f**2
    m, v = -MU.copy(), np.full(D, sig[0] ** 2)  # y at σ_0: mean −μ, variance σ_0²
    for i in range(n):
        s_i, s_next = sig[i], sig[i + 1]
        gamma = min(churn / n, math.sqrt(2) - 1) if S_min <= s_i <= S_max else 0.0
        s_hat = s_i * (1 + gamma)
        v = v + (s_hat**2 - s_i**2) * S_noise**2
        h = s_next - s_hat
        A = 1 + h * k(s_hat)
        if sampler == "heun" and s_next > 0:
            A = 1 + h / 2 * (k(s_hat) + k(s_next) * A)
        m, v = A * m, A**2 * v
    return MU + m, v


@pytest.mark.parametrize("sampler,steps,churn,var_bias", [
    ("heun", 18, 0.0, 0.15),
    ("heun", 18, 40.0, 0.35),
    ("heun", 40, 40.0, 0.10),
    ("euler", 100, 0.0, 0.07),
    ("dpmpp_2m", 18, 0.0, 0.17),
    ("dpmpp_2m", 40, 0.0, 0.03),
])
def test_edm_samplers(sampler, steps, churn, var_bias):
    edm = EDM("edm")
    opts = {"S_min": 0.05, "S_max": 50.0} if churn else {}
    x = edm.sample(_edm_denoiser, (N, D), sampler, steps=steps, churn=churn,
                   generator=torch.Generator().manual_seed(2), **opts)
    mean, var = _edm_recurrence(sampler, edm.sigmas(steps), churn=churn, **opts)
    # x starts at N(0, σ_max²), not at the noisy data's N(μ, σ_max² + s²): the mean keeps
    # ≈ |μ|·s/σ_max ≤ 0.02 of that mismatch
    _check(x, mean, var, mean_bias=0.03, var_bias=var_bias)


# --- flow matching ------------------------------------------------------------------------

def _flow_velocity(x, t):
    t = t.reshape(-1, 1).to(torch.float64)
    x = x.double()
    var = (1 - t) ** 2 * S_T**2 + t**2  # Var[x_t]
    x0 = MU_T + (1 - t) * S_T**2 / var * (x - (1 - t) * MU_T)  # E[x0 | x_t]
    eps = t / var * (x - (1 - t) * MU_T)  # E[ε | x_t]
    return eps - x0


def _flow_recurrence(method, ts):
    """Mean and variance after Euler/Heun on dx/dt = v(x, t) = P(t)·x + Q(t)."""
    def pq(t):
        var = (1 - t) ** 2 * S**2 + t**2
        P = t / var - (1 - t) * S**2 / var
        return P, -P * (1 - t) * MU - MU

    ts = ts.tolist()
    m, v = np.zeros(D), np.ones(D)
    for t, t_next in zip(ts[:-1], ts[1:]):
        h = t_next - t
        P, Q = pq(t)
        A, B = 1 + h * P, h * Q
        if method == "heun" and t_next > 0:
            P2, Q2 = pq(t_next)
            A, B = 1 + h / 2 * (P + P2 * A), h / 2 * (Q + P2 * B + Q2)
        m, v = A * m + B, A**2 * v
    return m, v


@pytest.mark.parametrize("method,steps,shift,var_bias", [
    ("euler", 50, 1.0, 0.08),
    ("euler", 100, 3.0, 0.08),
    ("heun", 20, 1.0, 0.02),
    ("heun", 20, 3.0, 0.15),  # the shift spends the steps at high noise
])
def test_flow_samplers(method, steps, shift, var_bias):
    fm = FlowMatching(shift=shift)
    x = fm.sample(_flow_velocity, (N, D), method, steps=steps, generator=torch.Generator().manual_seed(3),
                  dtype=torch.float64)
    mean, var = _flow_recurrence(method, fm.timesteps(steps))
    _check(x, mean, var, mean_bias=0.01, var_bias=var_bias)
