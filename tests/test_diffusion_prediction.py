"""x0_from_pred / eps_from_pred against diffusers and closed forms; errors; gradients."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler

from specreg.diffusion import eps_from_pred, x0_from_pred

DIFFUSERS_NAMES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _tensors(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_x0_equals_diffusers_pred_original_sample_at_every_timestep(schedule, prediction):
    ref = DDPMScheduler(beta_schedule=schedule, prediction_type=DIFFUSERS_NAMES[prediction], clip_sample=False)
    # diffusers takes square roots of its float32 ᾱ in float32; give it the same ᾱ in float64
    # so that the comparison is of the formulas, not of float32 rounding
    ref.alphas_cumprod = ref.alphas_cumprod.double()
    T = len(ref.alphas_cumprod)
    x_t, out = _tensors((T, 2, 3), seed=1)
    # one batched call over all T timesteps (mixed t) against T reference steps
    ours = x0_from_pred(out, x_t, prediction=prediction, t=torch.arange(T), alphas_cumprod=ref.alphas_cumprod)
    # the diffusers name gives the same
    alias = x0_from_pred(out, x_t, prediction=DIFFUSERS_NAMES[prediction], t=torch.arange(T),
                         alphas_cumprod=ref.alphas_cumprod)
    expected = torch.stack([ref.step(out[t:t + 1], t, x_t[t:t + 1]).pred_original_sample[0] for t in range(T)])
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alias, ours, rtol=0, atol=0)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_eps_equals_diffusers_ddim_epsilon(prediction):
    # DDIM's x_prev with eta = 0 is sqrt(ᾱ_prev)·x̂0 + sqrt(1 − ᾱ_prev)·ε̂; recover ε̂ from it
    ref = DDIMScheduler(prediction_type=DIFFUSERS_NAMES[prediction], clip_sample=False)
    ref.set_timesteps(10)
    x_t, out = _tensors((1, 4), seed=2)
    for t in ref.timesteps.tolist():
        step = ref.step(out, t, x_t, eta=0.0)
        prev = t - 100
        a_prev = ref.alphas_cumprod[prev].double() if prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        if a_prev == 1:
            continue
        eps_ref = (step.prev_sample - a_prev.sqrt() * step.pred_original_sample) / (1 - a_prev).sqrt()
        eps = eps_from_pred(out, x_t, prediction=prediction, t=torch.tensor([t]), alphas_cumprod=ref.alphas_cumprod)
        torch.testing.assert_close(eps, eps_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_inverts_the_forward_process(prediction):
    # x_t from diffusers' add_noise, target from the definitions, x̂0 must be x0 again
    ref = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    t = torch.tensor([0, 1, 10, 500, 990, 999])
    x0, eps = _tensors((6, 1, 4, 4), seed=3)
    x_t = ref.add_noise(x0, eps, t)
    target = {"eps": eps, "x0": x0, "v": ref.get_velocity(x0, eps, t)}[prediction]
    x0_hat = x0_from_pred(target, x_t, prediction=prediction, t=t, alphas_cumprod=ref.alphas_cumprod)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-7, atol=1e-7)
    eps_hat = eps_from_pred(target, x_t, prediction=prediction, t=t, alphas_cumprod=ref.alphas_cumprod)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-7, atol=1e-7)


def test_level_given_as_t_alpha_bar_or_sigma_agree():
    ref = DDPMScheduler()
    t = torch.tensor([3, 400, 999])
    x_t, out = _tensors((3, 5), seed=4)
    alpha_bar = ref.alphas_cumprod[t].double()
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    for prediction in ("eps", "v"):
        a = x0_from_pred(out, x_t, prediction=prediction, t=t, alphas_cumprod=ref.alphas_cumprod.double())
        b = x0_from_pred(out, x_t, prediction=prediction, alpha_bar=alpha_bar)
        c = x0_from_pred(out, x_t, prediction=prediction, sigma=sigma)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-9)
    # a scalar level broadcasts over the batch
    one = x0_from_pred(out, x_t, prediction="eps", alpha_bar=0.3)
    each = x0_from_pred(out, x_t, prediction="eps", alpha_bar=torch.full((3,), 0.3, dtype=torch.float64))
    torch.testing.assert_close(one, each)


def test_flow_matches_diffusers_stochastic_euler_step():
    # FlowMatchEuler's stochastic step is x_prev = (1 − σ')·x̂0 + σ'·noise with x̂0 = x − σ·v
    ref = FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=True)
    ref.set_timesteps(8)
    x, v = _tensors((2, 6), seed=5, dtype=torch.float32)
    for i, timestep in enumerate(ref.timesteps):
        g = torch.Generator().manual_seed(i)
        prev = ref.step(v, timestep, x, generator=g).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
        t, t_next = ref.sigmas[i], ref.sigmas[i + 1]
        x0_hat = x0_from_pred(v, x, prediction="flow", t=t)
        torch.testing.assert_close((1 - t_next) * x0_hat + t_next * noise, prev, rtol=1e-6, atol=1e-6)
        # σ = t/(1 − t) is the same level
        if t < 1:
            torch.testing.assert_close(x0_from_pred(v, x, prediction="flow", sigma=t / (1 - t)), x0_hat,
                                       rtol=1e-5, atol=1e-5)


def test_flow_and_edm_closed_forms():
    x0, eps = _tensors((4, 3), seed=6)
    t = torch.tensor([0.0, 0.3, 0.9, 1.0], dtype=torch.float64)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    torch.testing.assert_close(x0_from_pred(eps - x0, x_t, prediction="flow", t=t), x0)
    torch.testing.assert_close(x0_from_pred(eps - x0, x_t, prediction="flow_prediction", t=t), x0)
    torch.testing.assert_close(eps_from_pred(eps - x0, x_t, prediction="flow", t=t), eps)
    # EDM: the denoiser output is x̂0 whatever the level; ε̂ = (x − D)/σ
    sigma = torch.tensor([0.1, 1.0, 5.0, 80.0], dtype=torch.float64)
    x = x0 + sigma[:, None] * eps
    assert torch.equal(x0_from_pred(x0, x, prediction="edm"), x0)
    torch.testing.assert_close(eps_from_pred(x0, x, prediction="edm", sigma=sigma), eps)


def test_zero_terminal_snr_eps_raises_or_masks():
    x_t, out = _tensors((3, 4), seed=7)
    alpha_bar = torch.tensor([0.5, 0.0, 1e-3], dtype=torch.float64)
    with pytest.raises(ValueError, match="undefined"):
        x0_from_pred(out, x_t, prediction="eps", alpha_bar=alpha_bar)
    x0_hat, valid = x0_from_pred(out, x_t, prediction="eps", alpha_bar=alpha_bar, return_mask=True)
    assert valid.tolist() == [True, False, True]
    assert torch.isfinite(x0_hat).all() and torch.equal(x0_hat[1], torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(x0_hat[2], (x_t[2] - (1 - 1e-3) ** 0.5 * out[2]) / 1e-3**0.5)
    # v-prediction is defined there: x̂0 = −v̂
    x0_v, valid_v = x0_from_pred(out, x_t, prediction="v", alpha_bar=alpha_bar, return_mask=True)
    assert valid_v.all() and torch.equal(x0_v[1], -out[1])
    # gradients through the masked form stay finite
    out_g = out.clone().requires_grad_(True)
    x0_hat, _ = x0_from_pred(out_g, x_t, prediction="eps", alpha_bar=alpha_bar, return_mask=True)
    x0_hat.square().sum().backward()
    assert torch.isfinite(out_g.grad).all() and torch.equal(out_g.grad[1], torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("prediction", ["eps", "v", "x0", "flow", "edm"])
def test_gradients_finite_at_every_timestep_float32_and_bf16_autocast(prediction):
    ref = DDPMScheduler(beta_schedule="squaredcos_cap_v2")  # ᾱ_{T−1} ≈ 2.5e-9: the hardest case
    T = 1000
    if prediction == "flow":
        level = {"t": torch.linspace(0, 1, T)}
    elif prediction == "edm":
        level = {}
    else:
        level = {"t": torch.arange(T), "alphas_cumprod": ref.alphas_cumprod}
    net = torch.nn.Linear(8, 8)
    x_t = torch.randn(T, 8, generator=torch.Generator().manual_seed(8))
    for autocast in (False, True):
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = net(x_t)
            assert out.dtype == (torch.bfloat16 if autocast else torch.float32)
            x0_hat = x0_from_pred(out, x_t, prediction=prediction, **level)
        assert x0_hat.dtype == torch.float32 and torch.isfinite(x0_hat).all()
        x0_hat.abs().mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_gradcheck_float64():
    x_t, out = _tensors((3, 2), seed=9)
    alpha_bar = torch.tensor([0.9, 0.5, 0.01], dtype=torch.float64)
    for prediction in ("eps", "v"):
        torch.autograd.gradcheck(lambda p, x, k=prediction: x0_from_pred(p, x, prediction=k, alpha_bar=alpha_bar),
                                 (out.requires_grad_(True), x_t.requires_grad_(True)))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    torch.autograd.gradcheck(lambda p, x: x0_from_pred(p, x, prediction="flow", t=t), (out, x_t))


def test_bad_inputs_raise():
    x = torch.zeros(2, 3)
    acp = DDPMScheduler().alphas_cumprod
    with pytest.raises(ValueError, match="prediction='noise' is not accepted.*'eps'.*'v_prediction'"):
        x0_from_pred(x, x, prediction="noise", alpha_bar=0.5)
    with pytest.raises(ValueError, match="needs alphas_cumprod"):
        x0_from_pred(x, x, prediction="eps", t=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="needs the noise level"):
        x0_from_pred(x, x, prediction="v")
    with pytest.raises(ValueError, match=r"outside \[0, 999\]"):
        x0_from_pred(x, x, prediction="eps", t=torch.tensor([0, 1000]), alphas_cumprod=acp)
    with pytest.raises(ValueError, match=r"outside \[0, 999\]"):
        x0_from_pred(x, x, prediction="v", t=torch.tensor([-1, 3]), alphas_cumprod=acp)
    with pytest.raises(ValueError, match="integer timesteps"):
        x0_from_pred(x, x, prediction="eps", t=torch.tensor([0.5, 0.2]), alphas_cumprod=acp)
    with pytest.raises(ValueError, match=r"t has values \[1.5\] outside \[0.0, 1.0\]"):
        x0_from_pred(x, x, prediction="flow", t=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="float time"):
        x0_from_pred(x, x, prediction="flow", t=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not alphas_cumprod"):
        x0_from_pred(x, x, prediction="flow", t=torch.tensor([0, 1]), alphas_cumprod=acp)
    with pytest.raises(ValueError, match="needs the flow time"):
        x0_from_pred(x, x, prediction="flow")
    with pytest.raises(ValueError, match=r"pred has shape \(2, 3\) but x_t has shape \(2, 4\)"):
        x0_from_pred(x, torch.zeros(2, 4), prediction="x0")
    with pytest.raises(ValueError, match="sigma has values"):
        x0_from_pred(x, x, prediction="eps", sigma=torch.tensor([1.0, -0.1]))
    with pytest.raises(ValueError, match="sigma has values"):
        x0_from_pred(x, x, prediction="flow", sigma=torch.tensor([float("nan"), 1.0]))
    with pytest.raises(ValueError, match="alpha_bar has values"):
        x0_from_pred(x, x, prediction="v", alpha_bar=torch.tensor([1.2, 0.5]))
    with pytest.raises(ValueError, match="only one of"):
        x0_from_pred(x, x, prediction="eps", alpha_bar=0.5, sigma=1.0)
    with pytest.raises(ValueError, match=r"t has shape \(3,\)"):
        x0_from_pred(x, x, prediction="flow", t=torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="floating-point"):
        x0_from_pred(torch.zeros(2, 3, dtype=torch.long), x, prediction="x0")
    with pytest.raises(ValueError, match="needs sigma"):
        eps_from_pred(x, x, prediction="edm")
