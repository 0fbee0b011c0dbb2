"""The one integrator family against the three sampling APIs it replaced.

tests/data/sampler_reference.npz holds the outputs of the earlier samplers (EDM's
``samplers.py``, the Euler/Heun of ``flow.py``, DDPM/DDIM of ``ddpm.py``) on the cases of
tests/_sampler_cases.py, saved before they were rewritten. On the machine that saved them
each case was equal bit for bit, except DDPM's ancestral sampler, now DDIM with η = 1 and ε̂
consistent with x̂0 (the same step in other arithmetic; measured there: 4.7e-10 relative to
max(1, |x|) on its float32 outputs, 3.1e-15 on the float64 trajectory the callback sees).
Another CPU rounds torch's float32 kernels differently: on a second machine the same code
gave up to 1.1e-5 (91 float32 ulps, a 7-step Heun through the VP denoiser) and 3e-8 on the
float64 outputs of float32 networks. So every case is held to :data:`TOLERANCE` relative to
max(1, |x|): ten times the largest cross-machine difference measured, and a hundredth of
the smallest difference between two reference cases of three or more steps that differ in
one setting (sampler, σ grid or shift: 1.1e-2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _sampler_cases import REFERENCE, callbacks, cases

from specreg.diffusion import DDPM, ddim_step, ddpm_step, eps_from_pred, karras_sigmas, sample_euler
from specreg.diffusion.ddpm import DDPMPath
from specreg.diffusion.flow import FlowPath
from specreg.diffusion.samplers import SigmaPath, integrate

REF = np.load(REFERENCE)
CASES = cases()



TOLERANCE = 1e-4  # relative to max(1, |x|): float32 rounding across CPUs, not a changed algorithm


def _max_rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))


def test_the_reference_covers_every_case():
    assert {k for k in REF.files if not k.startswith("callback/")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sampler_equals_the_earlier_implementation(name):
    got = CASES[name]().detach().double().numpy()
    want = REF[name]
    assert got.shape == want.shape and got.dtype == want.dtype
    assert _max_rel_diff(got, want) <= TOLERANCE, name


@pytest.mark.parametrize("name", sorted(callbacks()))
def test_callbacks_see_what_they_saw_before(name):
    seen = callbacks()[name]()
    np.testing.assert_array_equal([s[0] for s in seen], REF[f"callback/{name}/index"])
    np.testing.assert_array_equal([s[1] for s in seen], REF[f"callback/{name}/level"])
    for key, k in (("x", 2), ("x0_hat", 3)):
        got = np.stack([s[k].double().numpy() for s in seen])
        assert _max_rel_diff(got, REF[f"callback/{name}/{key}"]) <= TOLERANCE


# --- one family: the same integrator on different paths ----------------------------------


def _velocity(x, t):
    tb = t.reshape(-1, *([1] * (x.dim() - 1)))
    return x * (0.9 + 0.1 * tb) - torch.tanh(x.roll(1, -1)) * (1 - 0.5 * tb)


def _flow_as_denoiser(x_ve, sigma):
    """The flow model seen on the σ path: x_flow = (1 − t)·x_ve with t = σ/(1 + σ), x̂0 = x_flow − t·v."""
    t = (sigma / (1 + sigma)).reshape(-1, *([1] * (x_ve.dim() - 1)))
    x = (1 - t) * x_ve
    return x - t * _velocity(x, t.flatten())


TS = [0.9, 0.7, 0.45, 0.2, 0.05, 0.0]
SIGMAS_OF_TS = [t / (1 - t) for t in TS]


def _flow_start():
    return torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.9


@pytest.mark.parametrize("method", ["dpmpp_2m", "ddim", "euler"])
def test_flow_path_is_the_sigma_path_rescaled(method):
    """DPM++(2M) and DDIM depend only on the levels (a, b); Euler in t on the flow path is Euler
    in σ as well (both keep x̂0 and ε̂ fixed over a step). Flow's Heun in t is not Heun in σ."""
    x = _flow_start()
    got = integrate(FlowPath(_velocity, dtype=torch.float64), x, TS, method)
    want = integrate(SigmaPath(_flow_as_denoiser), x / (1 - TS[0]), SIGMAS_OF_TS, method)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)
    if method == "euler":
        heun_t = integrate(FlowPath(_velocity, dtype=torch.float64), x, TS, "heun")
        heun_sigma = integrate(SigmaPath(_flow_as_denoiser), x / (1 - TS[0]), SIGMAS_OF_TS, "heun")
        assert (heun_t - heun_sigma).abs().max() > 1e-4


def test_ddim_without_noise_is_euler_in_sigma():
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 20
    grid = karras_sigmas(7, 0.01, 20.0).tolist()
    ddim = integrate(SigmaPath(_flow_as_denoiser), x, grid, "ddim")
    torch.testing.assert_close(ddim, sample_euler(_flow_as_denoiser, x, grid), rtol=1e-12, atol=1e-12)


def test_ddim_with_eta_one_is_the_ddpm_posterior_step():
    """On DDPM's path one ``ddim`` step with η = 1 and ε̂ consistent with x̂0 is ``ddpm_step``,
    and with the network's ε̂ it is ``ddim_step`` (Ho et al. Eq. 6–7; Song et al. Eq. 12)."""
    ddpm = DDPM("cosine", 30, "v")
    ab = ddpm.alphas_cumprod.tolist()
    model = lambda x, t: torch.tanh(x) * 0.5  # noqa: E731
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z = torch.randn(2, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = model(x, None).double()
    x0_hat = ddpm.predict_x0(out, x, 20)
    eps_hat = eps_from_pred(out, x, prediction="v", alpha_bar=torch.tensor(ab[20], dtype=torch.float64))
    for consistent, eta, want in ((True, [1.0], ddpm_step(x0_hat, x, ab[20], ab[12], z)),
                                  (False, [0.4], ddim_step(x0_hat, eps_hat, ab[20], ab[12], 0.4, z))):
        path = DDPMPath(ddpm, model, ab, 1.0, torch.float64, {}, eps_from_x0=consistent)
        path.noise = lambda like, generator: z  # type: ignore[method-assign]
        got = integrate(path, x, [20, 12], "ddim", eta=eta)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
