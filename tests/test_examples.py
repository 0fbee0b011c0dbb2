"""The examples in examples/: each trains for a few steps, and the conventions they rely on
hold against diffusers, specreg.EDM and the docs.

The short runs check that every example still runs end to end (finite losses, a sample
grid written). The convention tests check the two ``# specreg`` lines of each example
against an independent reference: diffusers' own x̂0 and σ for DDPM, diffusers' flow
scheduler for flow matching, and ``specreg.EDM("edm").loss`` for the k-diffusion and
NVlabs/edm patterns. The last tests keep README.md and docs/own_loop.md showing exactly
the lines the examples run.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler
from PIL import Image
from torch import nn

import specreg
from specreg.data import FASHION_MNIST_ROOT
from specreg.models import unet_preset

ROOT = Path(__file__).resolve().parents[1]
F32 = (torch.float32, torch.float32)  # dit_dtype, network_dtype of musubi-tuner's process_batch
EXAMPLES = ("diffusers_ddpm", "diffusers_flow_matching", "kdiffusion_denoiser", "edm_style_loss")

needs_fashion = pytest.mark.skipif(
    not (Path(FASHION_MNIST_ROOT) / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@cache
def example(name: str) -> ModuleType:
    """Import examples/<name>.py (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"specreg_example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in an example look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def keep_threads():
    """The runs pass --threads 1; give the rest of the test session its thread count back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def short_run(name: str, out: Path, *extra: str) -> list[dict[str, float]]:
    args = ["--steps", "3", "--batch-size", "4", "--samples", "4", "--sample-steps", "2", "--threads", "1",
            "--device", "cpu", "--out", str(out), *extra]
    history = example(name).main(args)
    assert len(history) == 3
    assert all(math.isfinite(v) for record in history for v in record.values())
    with Image.open(out / "samples.png") as grid:  # 4 images of 32×32 in a 2×2 grid, 1-pixel gaps
        assert grid.size == (2 * 33 + 1, 2 * 33 + 1)
    return history


# --------------------------------------------------------------------------------------
# Short runs


@needs_fashion
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_diffusers_ddpm_runs(tmp_path, prediction):
    short_run("diffusers_ddpm", tmp_path, "--prediction", prediction)


@needs_fashion
def test_diffusers_ddpm_term_is_added(tmp_path):
    # λ = 0: the total is the diffusion loss; λ = 1 without the gate: an untrained model's
    # x̂0 is far from x0, so the total must exceed it.
    off = short_run("diffusers_ddpm", tmp_path / "off", "--lam", "0")
    assert all(r["loss"] == pytest.approx(r["diffusion"], rel=1e-6) for r in off)
    on = short_run("diffusers_ddpm", tmp_path / "on", "--lam", "1", "--sigma-max", "1e9")
    assert all(r["loss"] > r["diffusion"] * 1.01 for r in on)


@needs_fashion
def test_diffusers_flow_matching_runs(tmp_path):
    history = short_run("diffusers_flow_matching", tmp_path, "--lam", "edm", "--loss", "fourier_ap_weighted")
    assert all(r["loss"] > r["diffusion"] for r in history)


@needs_fashion
def test_kdiffusion_denoiser_runs(tmp_path):
    short_run("kdiffusion_denoiser", tmp_path)


def test_edm_style_loss_runs(tmp_path):
    short_run("edm_style_loss", tmp_path, "--loss", "fourier_amp")


def test_edm2_loss_runs(tmp_path):
    history = short_run("edm2_loss", tmp_path, "--loss", "fourier_amp", "--lam", "edm")
    assert all(r["spectral"] > 0 and r["lam"] > 0 for r in history)
    assert (tmp_path / "training-state.pt").is_file()


def test_flow_matching_lora_runs(tmp_path):
    history = short_run("flow_matching_lora", tmp_path, "--loss", "haar", "--lam", "0.5", "--t-max", "1")
    assert all(r["loss/spectral"] > 0 and r["loss/spectral_lambda"] == 0.5 for r in history)


# --------------------------------------------------------------------------------------
# diffusers DDPM: line 1's x̂0 and line 2's σ are diffusers' own


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddpm_x0_hat_is_diffusers_pred_original_sample(prediction):
    # The example's scheduler, without x̂0 clipping so that diffusers' x̂0 is the raw formula.
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction, clip_sample=False)
    g = torch.Generator().manual_seed(0)
    noisy, model_output = torch.randn(2, 4, 1, 8, 8, generator=g)
    for t in (0, 17, 500, 999):
        timesteps = torch.full((4,), t)
        ours = specreg.x0_from_pred(model_output, noisy, prediction=scheduler.config.prediction_type, t=timesteps,
                                    alphas_cumprod=scheduler.alphas_cumprod)
        theirs = scheduler.step(model_output, t, noisy, generator=g).pred_original_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_ddpm_sigma_is_diffusers_karras_sigma():
    # diffusers' k-diffusion-style schedulers define σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) from the same β.
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    euler = EulerDiscreteScheduler(num_train_timesteps=1000)
    ours = specreg.sigma_from_alpha_bar(ddpm.alphas_cumprod)
    torch.testing.assert_close(ours, euler.sigmas[:-1].flip(0), rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------------
# diffusers flow matching: the example's x_t, timesteps and x̂0 follow the scheduler


def test_flow_noising_and_timesteps_follow_the_scheduler():
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    g = torch.Generator().manual_seed(1)
    clean, noise = torch.randn(2, 5, 1, 8, 8, generator=g)
    indices = torch.tensor([0, 1, 250, 700, 999])
    t = scheduler.sigmas[indices]
    timesteps = scheduler.timesteps[indices]
    torch.testing.assert_close(timesteps, 1000 * t)  # the network sees 1000·t
    t_b = t.view(-1, 1, 1, 1)
    torch.testing.assert_close((1 - t_b) * clean + t_b * noise, scheduler.scale_noise(clean, timesteps, noise))


def test_flow_x0_hat_is_the_schedulers_last_euler_step():
    # The scheduler's final step goes from t to 0: x ← x + (0 − t)·v̂, which is x̂0 = x_t − t·v̂.
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    scheduler.set_timesteps(5)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 1, 8, 8, generator=g)
    for timestep in scheduler.timesteps:
        v_hat = torch.randn(3, 1, 8, 8, generator=g)
        t = (timestep / 1000).expand(3)
        x0_hat = specreg.x0_from_pred(v_hat, x, prediction="flow_prediction", t=t)
        x = scheduler.step(v_hat, timestep, x).prev_sample
    torch.testing.assert_close(x, x0_hat, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# k-diffusion's Denoiser convention equals specreg.EDM("edm")


class TinyNet(nn.Module):
    """F(x, c_noise): depends on both inputs, float64 for exact comparisons."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1, dtype=torch.float64)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.tanh(self.conv(x)) * (1 + c_noise.view(-1, 1, 1, 1)) + 0.3 * x


def kd_inner(net: nn.Module):
    """k-diffusion's inner model is called with σ; EDM's with c_noise = ln(σ)/4."""
    return lambda x, sigma, **kw: net(x, sigma.log() / 4, **kw)


@pytest.mark.parametrize("loss_name", ["haar", "fourier_ap_weighted"])
@pytest.mark.parametrize("lam", [0.3, "edm"])
def test_kdiffusion_loss_equals_specreg_edm(loss_name, lam):
    kd = example("kdiffusion_denoiser")
    net = TinyNet()
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64) * 0.5
    noise = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.003, 0.1, 0.5, 3.0, 60.0], dtype=torch.float64)
    reg = specreg.SpectralRegularizer(loss_name, lam=lam, sigma_data=0.5)
    edm = specreg.EDM("edm", sigma_data=0.5)
    reference = edm.loss(edm.precondition(net, dtype=torch.float64), x0, regularizer=reg, sigma=sigma, noise=noise)

    plain = kd.Denoiser(kd_inner(net), sigma_data=0.5)
    torch.testing.assert_close(plain.loss(x0, noise, sigma), reference.diffusion, rtol=1e-10, atol=0)
    spectral = kd.SpectralDenoiser(kd_inner(net), reg, sigma_data=0.5)
    torch.testing.assert_close(spectral.loss(x0, noise, sigma), reference.loss, rtol=1e-10, atol=0)
    assert bool((reference.loss > reference.diffusion).all())  # the term is really there
    x = x0 + sigma.view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(spectral(x, sigma), edm.precondition(net, dtype=torch.float64)(x, sigma))


# --------------------------------------------------------------------------------------
# NVlabs/edm's EDMLoss pattern equals specreg.EDM("edm") with the augmented image as x0


def test_edm_style_loss_equals_specreg_edm_on_augmented_images():
    ex = example("edm_style_loss")
    torch.manual_seed(0)
    net = ex.EDMPrecond(unet_preset("cpu32s", model_channels=8, attn_resolutions=()))
    reg = specreg.SpectralRegularizer("wavelet", wavelet="haar", lam=0.5)
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    # p = 1 flips every image, so y differs from the images and a target of `images` would fail.
    augment = ex.FlipAugment(p=1.0)

    torch.manual_seed(5)
    ours = ex.SpectralEDMLoss(reg)(net, images, augment_pipe=augment)
    assert ours.shape == images.shape  # per element, as EDM's EDMLoss
    # Replay EDMLoss's draws in its order: σ, the augmentation, then the noise.
    torch.manual_seed(5)
    sigma = (torch.randn(4, 1, 1, 1) * 1.2 - 1.2).exp().flatten()
    y, _ = augment(images)
    eps = torch.randn_like(y)
    assert torch.equal(y, images.flip(-1))
    reference = specreg.EDM("edm").loss(net, y, regularizer=reg, sigma=sigma, noise=eps)
    torch.testing.assert_close(ours.mean(dim=(1, 2, 3)), reference.loss, rtol=1e-5, atol=1e-6)
    assert bool((reference.spectral > 0).all())


# --------------------------------------------------------------------------------------
# The docs show exactly the lines the examples run


def marked_lines(name: str) -> list[str]:
    """The lines of examples/<name>.py marked ``# specreg line N``, stripped, in order."""
    text = (ROOT / "examples" / f"{name}.py").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if re.search(r"#\s*specreg line \d\s*$", line)]


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_has_two_marked_lines(name):
    lines = marked_lines(name)
    assert [line.rsplit("#", 1)[1].strip() for line in lines] == ["specreg line 1", "specreg line 2"]
    assert lines[0].startswith("x0_hat = specreg.x0_from_pred(")


@pytest.mark.parametrize("name", EXAMPLES)
def test_own_loop_docs_show_the_examples_lines(name):
    docs = {line.strip() for line in (ROOT / "docs" / "own_loop.md").read_text(encoding="utf-8").splitlines()}
    missing = [line for line in marked_lines(name) if line not in docs]
    assert not missing, f"docs/own_loop.md lacks these lines of examples/{name}.py: {missing}"


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^##+ {re.escape(title)}\s*$(.*?)(?=^##+ |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no section '{title}'"
    return match.group(1)


def test_readme_shows_the_two_diffusers_lines():
    section = {line.strip() for line in readme_section("Two lines in a diffusers loop").splitlines()}
    missing = [line for line in marked_lines("diffusers_ddpm") if line not in section]
    assert not missing, f"README.md's 'Two lines in a diffusers loop' lacks: {missing}"


# --------------------------------------------------------------------------------------
# NVlabs/edm2: SpectralEDM2Loss is EDM2's uncertainty-weighted loss plus λ·L_S


def edm2_net(logvar: float = 0.3):
    """The example's stand-in of EDM2's Precond, with a nonzero learned uncertainty u(σ)."""
    ex = example("edm2_loss")
    torch.manual_seed(0)
    net = ex.Precond(unet_preset("cpu32s", model_channels=8, attn_resolutions=()))
    nn.init.constant_(net.logvar_linear.bias, logvar)
    return net


@pytest.mark.parametrize("lam", [0.0, 0.5, "edm"])
def test_edm2_loss_is_edm2s_loss_plus_the_spectral_term(lam):
    from specreg.integrations.edm2 import SpectralEDM2Loss

    net = edm2_net()
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    P_mean, P_std, sigma_data = -0.8, 1.6, 0.5
    loss_fn = example("edm2_loss").construct_class_by_name(
        class_name="specreg.integrations.edm2.SpectralEDM2Loss", P_mean=P_mean, P_std=P_std, loss="haar", lam=lam)
    assert isinstance(loss_fn, SpectralEDM2Loss)
    torch.manual_seed(5)
    ours = loss_fn(net=net, images=images, labels=None)
    assert ours.shape == images.shape  # per element, as EDM2's training loop sums it

    # EDM2's draws in EDM2's order (ln σ, then the noise), and its Eq. 21 written out.
    torch.manual_seed(5)
    sigma = (P_mean + P_std * torch.randn(4)).exp()
    noise = torch.randn_like(images) * sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        D, u = net(images + noise, sigma.view(-1, 1, 1, 1), None, return_logvar=True)
        weight = ((sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2).view(-1, 1, 1, 1)
        edm2 = weight / u.exp() * (D - images) ** 2 + u
        lam_s = specreg.lambda_edm(sigma, sigma_data) if lam == "edm" else torch.full((4,), float(lam))
        spectral = lam_s * specreg.build_loss("haar")(D, images)
    torch.testing.assert_close(ours.detach(), edm2 + spectral.view(-1, 1, 1, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_fn.last.value, spectral, rtol=1e-5, atol=1e-7)
    assert bool((u != 0).all())  # the uncertainty is really in play


def test_edm2_loss_with_zero_uncertainty_equals_specreg_edm():
    # With u = 0 EDM2's per-sample mean is EDM's λ_EDM-weighted loss: compare with the
    # independently tested specreg.EDM("edm").loss for the same σ and noise.
    from specreg.integrations.edm2 import SpectralEDM2Loss

    net = edm2_net(logvar=0.0)
    reg = specreg.SpectralRegularizer("fourier_ap_weighted", lam=0.3)
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    torch.manual_seed(7)
    ours = SpectralEDM2Loss(P_mean=-0.4, P_std=1.0, regularizer=reg)(net=net, images=images)
    torch.manual_seed(7)
    sigma = (-0.4 + torch.randn(3)).exp()
    eps = torch.randn_like(images)
    reference = specreg.EDM("edm").loss(net, images, regularizer=reg, sigma=sigma, noise=eps)
    torch.testing.assert_close(ours.mean(dim=(1, 2, 3)), reference.loss, rtol=1e-5, atol=1e-6)


def test_edm2_loss_state_survives_edm2s_checkpoint_and_snapshot(tmp_path):
    import pickle

    from specreg.integrations.edm2 import SpectralEDM2Loss

    net = edm2_net()
    loss_fn = SpectralEDM2Loss(loss="haar", lam=specreg.AutoLambda(ratio=0.2))
    for _ in range(3):
        loss_fn(net=net, images=torch.rand(2, 1, 32, 32))
    # CheckpointIO: state_dict() saved with torch.save, read back with weights_only torch.load
    torch.save({"loss_fn": loss_fn.state_dict()}, tmp_path / "training-state.pt")
    fresh = SpectralEDM2Loss(loss="haar", lam=specreg.AutoLambda(ratio=0.2))
    fresh.load_state_dict(torch.load(tmp_path / "training-state.pt", weights_only=True)["loss_fn"])
    assert float(fresh.regularizer.lam.steps) == 3
    torch.testing.assert_close(fresh.regularizer.lam.ema_spectral, loss_fn.regularizer.lam.ema_spectral)
    # network snapshots pickle the loss object
    again = pickle.loads(pickle.dumps(loss_fn))
    assert float(again.regularizer.lam.steps) == 3


def test_edm2_loss_rejects_what_edm2_cannot_train():
    from specreg.integrations.edm2 import SpectralEDM2Loss

    with pytest.raises(ValueError, match="band_weights"):
        SpectralEDM2Loss(loss="wavelet_l2", levels=2, band_weights=True)
    with pytest.raises(ValueError, match="either regularizer="):
        SpectralEDM2Loss(loss="haar", regularizer=specreg.SpectralRegularizer("haar"))


# --------------------------------------------------------------------------------------
# Latent flow matching and the musubi-tuner compute_loss hook


def test_flow_time_recovers_t_from_the_noising():
    from specreg.integrations.flow_matching import flow_time

    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(2, 5, 4, 3, 16, 16, generator=g)  # video latents (B, C, F, H, W)
    t = torch.tensor([0.0, 0.01, 0.5, 0.93, 1.0])
    x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps
    torch.testing.assert_close(flow_time(x0, eps, x_t), t, rtol=0, atol=1e-6)
    low = flow_time(x0.bfloat16(), eps.bfloat16(), x_t.bfloat16())
    torch.testing.assert_close(low, t, rtol=0, atol=2e-3)


def test_flow_matching_term_gates_at_t_max_and_handles_video():
    from specreg.integrations.flow_matching import flow_matching_term

    ex = example("flow_matching_lora")
    reg = ex.build_regularizer(ex.parse_args(["--loss", "fourier_amp", "--lam", "0.05", "--t-max", "0.7"]))
    assert reg.sigma_max == pytest.approx(0.7 / 0.3)
    g = torch.Generator().manual_seed(5)
    x0, eps, v_hat = torch.randn(3, 4, 4, 2, 8, 8, generator=g)
    t = torch.tensor([0.2, 0.69, 0.71, 0.95])
    x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps
    term = flow_matching_term(reg, v_hat.bfloat16(), x_t.bfloat16(), x0, t)
    assert term.value.dtype == torch.float32
    torch.testing.assert_close(term.lam, torch.tensor([0.05, 0.05, 0.0, 0.0]))
    x0_hat = x_t.bfloat16().float() - t.view(-1, 1, 1, 1, 1) * v_hat.bfloat16().float()
    torch.testing.assert_close(term.spectral, specreg.FourierAmplitudeLoss(ndim=2)(x0_hat, x0), rtol=1e-5, atol=1e-6)


def test_musubi_hook_adds_the_spectral_term_to_the_trainers_loss():
    ex = example("flow_matching_lora")
    args = ex.parse_args(["--loss", "fourier_amp", "--lam", "0.5", "--t-max", "0.7"])
    reg = ex.build_regularizer(args)
    torch.manual_seed(0)
    dit = ex.UNet(in_channels=4, model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                  resolution=16)
    latents = ex.encode(torch.rand(6, 1, 32, 32) * 2 - 1)
    noise = torch.randn_like(latents)
    plain, spectral = ex.ToyDiTTrainer(), ex.SpectralToyDiTTrainer()
    spectral.spectral_regularizer = reg

    torch.manual_seed(1)
    base, base_metrics = plain.process_batch(args, None, dit, None, {}, latents, noise, None, *F32, None, 0)
    torch.manual_seed(1)
    total, metrics = spectral.process_batch(args, None, dit, None, {}, latents, noise, None, *F32, None, 0)
    assert base_metrics == {}

    # Replay the stand-in's draw of t and form x̂0 = x_t − t·v̂ here.
    torch.manual_seed(1)
    t = torch.sigmoid(args.sigmoid_scale * torch.randn(6))
    t = t * args.discrete_flow_shift / (1 + (args.discrete_flow_shift - 1) * t)
    t_b = t.view(-1, 1, 1, 1)
    x_t = (1 - t_b) * latents + t_b * noise
    with torch.no_grad():
        x0_hat = x_t - t_b * dit(x_t, 1000 * t + 1)
    lam = torch.where(t < 0.7, 0.5, 0.0)
    expected = specreg.FourierAmplitudeLoss(ndim=2)(x0_hat, latents)
    torch.testing.assert_close(total.detach(), base.detach() + (lam * expected).mean(), rtol=1e-5, atol=1e-6)
    assert metrics["loss/spectral"] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert metrics["loss/spectral_lambda"] == pytest.approx(lam.mean().item())
    assert 0 < float(lam.mean()) < 0.5  # both sides of the gate were drawn

    with pytest.raises(ValueError, match="spectral_regularizer=None"):
        ex.SpectralToyDiTTrainer().process_batch(args, None, dit, None, {}, latents, noise, None, *F32, None, 0)
