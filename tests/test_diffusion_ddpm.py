"""DDPM/DDIM against diffusers' DDPMScheduler and DDIMScheduler; the training loss."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

from specreg.diffusion import DDPM, inference_timesteps
from specreg.losses import FourierAmplitudeLoss
from specreg.regularizer import SpectralRegularizer

DIFFUSERS_NAMES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
OURS = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}


def _gaussian_model(alphas_cumprod, prediction, mu=0.3, s=0.8):
    """The optimal predictor for x0 ~ N(mu, s²): smooth and well scaled, so trajectories stay O(1)."""
    acp = alphas_cumprod.double()

    def model(x, t):
        a = acp[torch.as_tensor(t)].reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        ra, rb = a.sqrt(), (1 - a).sqrt()
        x0 = mu + ra * s**2 / (a * s**2 + (1 - a)) * (x - ra * mu)
        eps = (x - ra * x0) / rb
        return {"eps": eps, "x0": x0, "v": ra * eps - rb * x0}[prediction]

    return model


@pytest.mark.parametrize("schedule", list(OURS))
def test_betas_equal_diffusers(schedule):
    kw = {"beta_start": 0.00085, "beta_end": 0.012} if schedule == "scaled_linear" else {}
    for T in (1000, 37):
        ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule, **kw)
        ours = DDPM(OURS[schedule], timesteps=T, **kw)
        assert ours.betas.dtype == torch.float64 and ours.alphas_cumprod.shape == (T,)
        # diffusers builds its β in float32
        torch.testing.assert_close(ours.betas, ref.betas.double(), rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod.double(), rtol=2e-5, atol=1e-9)
    # zero terminal SNR: diffusers' rescaling (run in float64: in float32 the ratios
    # ᾱ_i/ᾱ_{i−1} lose the small β to rounding) applied to the same β
    ref = DDPMScheduler(beta_schedule=schedule, **kw)
    ours = DDPM(betas=ref.betas, prediction="v", zero_terminal_snr=True)
    torch.testing.assert_close(ours.betas, rescale_zero_terminal_snr(ref.betas.double()), rtol=1e-10, atol=1e-15)
    assert ours.alphas_cumprod[-1] == 0
    torch.testing.assert_close(ours.alphas_cumprod[0], 1 - ref.betas.double()[0], rtol=1e-14, atol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_inference_timesteps_equal_diffusers(spacing):
    for steps in (1, 3, 7, 50, 1000):
        for offset in (0, 1):
            if spacing == "leading" and offset == 1 and steps == 1000:
                continue  # would visit t = 1000
            ref = DDIMScheduler(timestep_spacing=spacing, steps_offset=offset)
            ref.set_timesteps(steps)
            assert inference_timesteps(1000, steps, spacing, offset) == ref.timesteps.tolist()


def _float64_reference(scheduler):
    """Make a diffusers scheduler compute with ᾱ in float64 (it keeps float32 ᾱ), so that the
    comparison is of the update rules to 1e-5, not of float32 rounding amplified by 1/sqrt(ᾱ)."""
    scheduler.alphas_cumprod = torch.cumprod(1 - scheduler.betas.double(), 0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = (scheduler.one if scheduler.config.set_alpha_to_one
                                         else scheduler.alphas_cumprod[0])
    return scheduler


def _trajectories(ref, ours, model, steps, shape, step_kwargs):
    ref.set_timesteps(steps)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    expected = []
    for t in ref.timesteps:
        out = ref.step(model(x, t), t, x, generator=g, **step_kwargs)
        x = out.prev_sample
        expected.append((x, out.pred_original_sample))
    got = []
    sampler = "ddim" if isinstance(ref, DDIMScheduler) else "ddpm"
    final = ours.sample(model, shape, sampler, steps=steps, eta=step_kwargs.get("eta", 0.0),
                        generator=torch.Generator().manual_seed(11), dtype=torch.float64,
                        callback=lambda i, t, x_prev, x0_hat: got.append((x_prev.clone(), x0_hat.clone())))
    assert len(got) == len(expected)
    for (x_ref, x0_ref), (x_got, x0_got) in zip(expected, got):
        torch.testing.assert_close(x_got, x_ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(x0_got, x0_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(final, expected[-1][0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("schedule,steps", [("linear", 1000), ("squaredcos_cap_v2", 1000), ("linear", 50),
                                            ("scaled_linear", 13)])
def test_ddpm_trajectory_equals_diffusers(prediction, schedule, steps):
    ref = _float64_reference(DDPMScheduler(beta_schedule=schedule, prediction_type=DIFFUSERS_NAMES[prediction],
                                           clip_sample=False))
    ours = DDPM(betas=ref.betas, prediction=prediction)
    _trajectories(ref, ours, _gaussian_model(ours.alphas_cumprod, prediction), steps, (6, 2, 4), {})


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_trajectory_equals_diffusers(prediction, eta):
    ref = _float64_reference(DDIMScheduler(beta_schedule="squaredcos_cap_v2",
                                           prediction_type=DIFFUSERS_NAMES[prediction], clip_sample=False))
    ours = DDPM(betas=ref.betas, prediction=prediction)
    _trajectories(ref, ours, _gaussian_model(ours.alphas_cumprod, prediction), 50, (6, 2, 4), {"eta": eta})


@pytest.mark.parametrize("options", [
    {"timestep_spacing": "trailing", "set_alpha_to_one": False},
    {"timestep_spacing": "linspace", "steps_offset": 1},
    {"steps_offset": 1, "clip_sample": True, "clip_sample_range": 0.5},
])
def test_ddim_and_ddpm_options_equal_diffusers(options):
    for cls, eta in ((DDIMScheduler, 0.5), (DDPMScheduler, None)):
        ref_opts = dict(options)
        if cls is DDPMScheduler:
            ref_opts.pop("set_alpha_to_one", None)
        ref_opts.setdefault("clip_sample", False)
        ref = _float64_reference(cls(prediction_type="v_prediction", **ref_opts))
        ours = DDPM(betas=ref.betas, prediction="v", **options)
        step_kwargs = {} if eta is None else {"eta": eta}
        _trajectories(ref, ours, _gaussian_model(ours.alphas_cumprod, "v", mu=1.5), 7, (5, 3), step_kwargs)


def test_default_float32_sampling_close_to_unmodified_diffusers():
    # out of the box: our float64 schedule against diffusers' float32 one, float32 everywhere
    ref = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False)
    ours = DDPM("cosine", prediction="v")
    model = _gaussian_model(ours.alphas_cumprod, "v")
    model32 = lambda x, t: model(x.double(), t).float()  # noqa: E731
    ref.set_timesteps(50)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 4, generator=g)
    for t in ref.timesteps:
        x = ref.step(model32(x, t), t, x, eta=0.0).prev_sample
    got = ours.sample(model32, (8, 4), "ddim", steps=50, generator=torch.Generator().manual_seed(3))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, x, rtol=0, atol=1e-4)


# --- the training loss -------------------------------------------------------------------

class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t, scale=1.0):
        return scale * self.conv(x) * (1 + t.to(x.dtype).reshape(-1, 1, 1, 1) / 1000)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_loss_is_the_mse_of_the_target(prediction):
    torch.manual_seed(0)
    net = _Net().double()
    ref = _float64_reference(DDPMScheduler(beta_schedule="squaredcos_cap_v2"))
    ours = DDPM("cosine", prediction=prediction)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 17, 400, 998, 999])
    out = ours.loss(net, x0, t=t, noise=noise, scale=0.5)
    x_t = ref.add_noise(x0, noise, t)
    target = {"eps": noise, "x0": x0, "v": ref.get_velocity(x0, noise, t)}[prediction]
    expected = ((net(x_t, t, scale=0.5) - target) ** 2).mean(dim=(1, 2, 3))
    # diffusers' β are float32-rounded values of ours
    torch.testing.assert_close(out.diffusion, expected, rtol=1e-6, atol=1e-9)
    assert torch.equal(out.loss, out.diffusion)
    assert torch.equal(out.spectral, torch.zeros(5, dtype=torch.float64)) and torch.equal(out.lam, out.spectral)
    a = ref.alphas_cumprod[t]
    # the last cosine β is 0.999, whose float32 rounding moves ᾱ_999 by 1.3e-5 (relative)
    torch.testing.assert_close(out.sigma, ((1 - a) / a).sqrt(), rtol=2e-5, atol=0)


def test_loss_draws_t_and_noise_from_the_generator():
    net = _Net()
    ddpm = DDPM()
    x0 = torch.randn(4, 1, 8, 8)
    a = ddpm.loss(net, x0, generator=torch.Generator().manual_seed(5))
    b = ddpm.loss(net, x0, generator=torch.Generator().manual_seed(5))
    c = ddpm.loss(net, x0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.loss, b.loss) and not torch.equal(a.loss, c.loss)
    assert a.loss.shape == (4,) and a.loss.dtype == torch.float32


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_regularizer_zero_lambda_is_exact_and_spectral_term_changes_gradients(prediction):
    torch.manual_seed(0)
    net = _Net()
    ddpm = DDPM("cosine", prediction=prediction)
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 1, 998, 999])  # both ends of the schedule, ᾱ_999 ≈ 2.5e-9
    plain = ddpm.loss(net, x0, t=t, noise=noise)
    zero = ddpm.loss(net, x0, regularizer=SpectralRegularizer(FourierAmplitudeLoss(), lam=0.0), t=t, noise=noise)
    assert torch.equal(zero.loss, plain.loss)
    grad_plain = torch.autograd.grad(plain.loss.mean(), list(net.parameters()))
    for lam in (1.0, "edm", "snr"):
        reg = SpectralRegularizer(FourierAmplitudeLoss(), lam=lam)
        out = ddpm.loss(net, x0, regularizer=reg, t=t, noise=noise)
        assert torch.isfinite(out.loss).all() and (out.spectral > 0).all()
        torch.testing.assert_close(out.loss, out.diffusion + out.lam * out.spectral)
        grads = torch.autograd.grad(out.loss.mean(), list(net.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
        assert any(not torch.allclose(g, h) for g, h in zip(grads, grad_plain))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="schedule='sigmoid' is not accepted"):
        DDPM("sigmoid")
    with pytest.raises(ValueError, match="prediction='flow' is not accepted"):
        DDPM(prediction="flow")
    with pytest.raises(ValueError, match="zero_terminal_snr=True with prediction='eps'"):
        DDPM(zero_terminal_snr=True)
    with pytest.raises(ValueError, match="timestep_spacing='even'"):
        DDPM(timestep_spacing="even")
    with pytest.raises(ValueError, match="betas must"):
        DDPM(betas=torch.tensor([0.1, 1.5]))
    ddpm = DDPM(timesteps=10)
    model = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="steps=11 is not accepted"):
        ddpm.sample(model, (2, 3), steps=11)
    with pytest.raises(ValueError, match="sampler='euler' is not accepted"):
        ddpm.sample(model, (2, 3), sampler="euler")
    with pytest.raises(ValueError, match="shape="):
        ddpm.sample(model, (2,))
    with pytest.raises(ValueError, match="eta=-1"):
        ddpm.sample(model, (2, 3), sampler="ddim", eta=-1)
    with pytest.raises(ValueError, match=r"outside \[0, 9\]"):
        DDPM(timesteps=10, steps_offset=1).sample(model, (2, 3), steps=10)
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t has values outside \[0, 9\]"):
        ddpm.loss(model, x0, t=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="noise has shape"):
        ddpm.loss(model, x0, noise=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="x0 must be a floating-point"):
        ddpm.loss(model, torch.zeros(2, 3, dtype=torch.long))
