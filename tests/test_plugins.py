"""The trainer plug-ins against each convention they claim (issue #32).

musubi-tuner: one stand-in per trainer family, each re-implementing only what its
``call_dit`` does with the latents (the target it forms, the order of its output, see the
table in docs/own_loop.md). A network that outputs the trainer's own target must get
x̂0 = x0 and a zero spectral term; a network that does not must get λ·L_S of x̂0 formed
here, independently, from the convention. EDM2: ``loss_kwargs`` go through the JSON
dump and re-read of train_edm2.py before the loss is built. k-diffusion: ``scales`` ≠ 1
against the DCT frequency weighting computed with scipy.fft.dctn.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import scipy.fft
import torch
from torch import nn

import specreg
from specreg.integrations.flow_matching import check_flow_convention, flow_matching_term

ROOT = Path(__file__).resolve().parents[1]
F32 = (torch.float32, torch.float32)  # dit_dtype, network_dtype of musubi-tuner's process_batch


@cache
def example(name: str) -> ModuleType:
    """Import examples/<name>.py (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"specreg_example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------
# musubi-tuner: the families' conventions, as their call_dit forms pred and target


def _cf_to_ff(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) → (B, F, C, H, W); an image (B, C, H, W) → (B, 1, C, H, W)."""
    return x.unsqueeze(1) if x.ndim == 4 else x.transpose(1, 2)


# family: (latent shape, the target its call_dit forms, the layout of its output, hook setting)
FAMILIES = {
    "wan": ((3, 4, 3, 8, 8), lambda x0, eps: eps - x0, "channels_first", "noise_minus_x0"),
    "flux": ((3, 4, 8, 8), lambda x0, eps: eps - x0, "channels_first", "noise_minus_x0"),
    "zimage": ((3, 4, 8, 8), lambda x0, eps: x0 - eps, "channels_first", "x0_minus_noise"),
    "ideogram4": ((3, 16, 4, 4), lambda x0, eps: x0 - eps, "channels_first", "x0_minus_noise"),
    "kandinsky5_video": ((3, 4, 3, 8, 8), lambda x0, eps: _cf_to_ff(eps - x0), "frames_first", "noise_minus_x0"),
    "kandinsky5_image": ((3, 4, 8, 8), lambda x0, eps: _cf_to_ff(eps - x0), "frames_first", "noise_minus_x0"),
    "qwen_image_layered": ((3, 4, 3, 8, 8), lambda x0, eps: _cf_to_ff(eps - x0), "frames_first", "noise_minus_x0"),
    "x0_prediction": ((3, 4, 8, 8), lambda x0, eps: x0, "channels_first", "x0"),
}


def family_trainer(name: str, lam: float = 1.0, loss: nn.Module | None = None):
    """A stand-in trainer of family ``name`` with the hook set to its convention."""
    ex = example("flow_matching_lora")
    from specreg.integrations.musubi import SpectralLossHook

    shape, form_target, layout, target = FAMILIES[name]

    class Family(ex.NetworkTrainer):
        def call_dit(self, args, accelerator, transformer, latents, batch, noise, noisy_model_input, timesteps,
                     network_dtype, **kwargs):
            trainer_target = form_target(latents, noise)
            # the "transformer" is told the target: a perfect model, or a perturbed one
            return ex.DiTOutput(pred=transformer(noisy_model_input, trainer_target), target=trainer_target)

    class SpectralFamily(SpectralLossHook, Family):
        spectral_target = target
        spectral_layout = layout

    trainer = SpectralFamily()
    trainer.spectral_regularizer = specreg.SpectralRegularizer(
        specreg.FourierAmplitudeLoss(ndim=2) if loss is None else loss, lam=lam)
    return Family(), trainer, shape


def run_batch(trainer, shape: tuple[int, ...], model, seed: int = 0):
    ex = example("flow_matching_lora")
    args = ex.parse_args(["--discrete-flow-shift", "3.0"])
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    torch.manual_seed(seed + 1)
    loss, metrics = trainer.process_batch(args, None, model, None, {}, latents, noise, None, *F32, None, 0)
    torch.manual_seed(seed + 1)  # replay the stand-in's draw of t
    t = torch.sigmoid(args.sigmoid_scale * torch.randn(shape[0]))
    t = t * args.discrete_flow_shift / (1 + (args.discrete_flow_shift - 1) * t)
    return loss, metrics, latents, noise, t


def perfect(x_t: torch.Tensor, trainer_target: torch.Tensor) -> torch.Tensor:
    return trainer_target.clone()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_perfect_model_gets_zero_spectral_term_in_every_family(name):
    _, trainer, shape = family_trainer(name)
    loss, metrics, *_ = run_batch(trainer, shape, perfect)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)  # the trainer's MSE is 0, and so is λ·L_S
    assert metrics["loss/spectral"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["loss/spectral_lambda"] == pytest.approx(1.0)  # the term is on, not gated


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_hook_adds_lambda_times_the_loss_of_the_conventions_x0_hat(name):
    # A 3-D loss over (F, H, W) where the latents are video: it sees the frames axis only
    # if the layout was undone, so a frames-first output read as channels-first fails here.
    video = len(FAMILIES[name][0]) == 5
    loss_fn = specreg.FourierAmplitudeLoss(ndim=3 if video else 2)
    plain, trainer, shape = family_trainer(name, lam=0.5, loss=loss_fn)
    g = torch.Generator().manual_seed(9)
    delta = {}

    def imperfect(x_t, trainer_target):
        delta.setdefault("d", 0.3 * torch.randn(trainer_target.shape, generator=g))
        return trainer_target + delta["d"]

    base, *_ = run_batch(plain, shape, imperfect)
    total, metrics, x0, eps, t = run_batch(trainer, shape, imperfect)
    # x̂0 written out from the convention, in the latents' own (channels-first) order
    pred = FAMILIES[name][1](x0, eps) + delta["d"]
    if FAMILIES[name][2] == "frames_first":
        pred = pred.squeeze(1) if not video else pred.transpose(1, 2)
    t_b = t.view(-1, *([1] * (x0.ndim - 1)))
    x_t = (1 - t_b) * x0 + t_b * eps
    x0_hat = {"noise_minus_x0": x_t - t_b * pred, "x0_minus_noise": x_t + t_b * pred, "x0": pred}[FAMILIES[name][3]]
    expected = loss_fn(x0_hat, x0)
    torch.testing.assert_close(total, base + 0.5 * expected.mean(), rtol=1e-5, atol=1e-6)
    assert metrics["loss/spectral"] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert float(expected.min()) > 0.01  # the term is really there


def test_the_hook_names_the_right_target_when_the_setting_is_wrong():
    # Z-Image's convention with the old default: before issue #32, max|x̂0 − x0| of a
    # perfect model was several latent units and the hook punished it.
    _, trainer, shape = family_trainer("zimage")
    trainer.spectral_target = "noise_minus_x0"
    with pytest.raises(ValueError, match=r"spectral_target='noise_minus_x0'.*set spectral_target='x0_minus_noise'"):
        run_batch(trainer, shape, perfect)
    _, trainer, shape = family_trainer("kandinsky5_video")
    trainer.spectral_layout = "channels_first"  # its (B, F, C, H, W) output read as (B, C, F, H, W)
    with pytest.raises(ValueError, match="spectral_layout='channels_first'"):
        run_batch(trainer, shape, perfect)
    trainer.spectral_layout = "sideways"
    with pytest.raises(ValueError, match="spectral_layout='sideways' is not accepted"):
        run_batch(trainer, shape, perfect)


def test_hidream_o1_is_refused_not_served():
    # HiDream-O1's call_dit returns x0 as a token sequence (B, N, D) and noises with a
    # scaled noise: the hook stops with a ValueError instead of a wrong x̂0.
    ex = example("flow_matching_lora")
    from specreg.integrations.musubi import SpectralLossHook

    class TokenSequence(ex.NetworkTrainer):
        def call_dit(self, args, accelerator, transformer, latents, batch, noise, noisy_model_input, timesteps,
                     network_dtype, **kwargs):
            tokens = latents.flatten(2).transpose(1, 2)  # (B, H·W, C)
            return ex.DiTOutput(pred=tokens.clone(), target=tokens)

    class Spectral(SpectralLossHook, TokenSequence):
        spectral_regularizer = specreg.SpectralRegularizer("fourier_amp", lam=1.0)
        spectral_target = "x0"

    with pytest.raises(ValueError, match="HiDream-O1"):
        run_batch(Spectral(), (2, 4, 8, 8), perfect)


def test_the_stand_in_trainer_has_musubis_signatures():
    # Parameter names in kohya-ss/musubi-tuner at 30c658c: training/trainer_base.py l. 499,
    # 1122 and 1157, and call_dit as the families write it (wan_train_network.py l. 627).
    # The hook overrides call_dit and compute_loss (positionally), and the tests drive the
    # stand-in through process_batch as musubi's training loop does.
    import inspect

    trainer = example("flow_matching_lora").NetworkTrainer
    names = {name: list(inspect.signature(getattr(trainer, name)).parameters)[1:] for name in
             ("get_noisy_model_input_and_timesteps", "call_dit", "process_batch", "compute_loss")}
    assert names == {
        "get_noisy_model_input_and_timesteps": ["args", "noise", "latents", "timesteps", "noise_scheduler", "device",
                                                "dtype"],
        "call_dit": ["args", "accelerator", "transformer", "latents", "batch", "noise", "noisy_model_input",
                     "timesteps", "network_dtype", "kwargs"],
        "process_batch": ["args", "accelerator", "transformer", "network", "batch", "latents", "noise",
                          "noise_scheduler", "dit_dtype", "network_dtype", "vae", "global_step"],
        "compute_loss": ["args", "output", "timesteps", "noise_scheduler", "dit_dtype", "network_dtype",
                         "global_step"],
    }


# --------------------------------------------------------------------------------------
# check_flow_convention and flow_matching_term on their own


def _noised(shape, t, seed=0, noise_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t_b = torch.as_tensor(t).view(-1, *([1] * (len(shape) - 1)))
    return x0, eps, (1 - t_b) * x0 + t_b * noise_scale * eps


@pytest.mark.parametrize("target", ["noise_minus_x0", "x0_minus_noise", "x0"])
def test_check_flow_convention_accepts_only_the_right_target(target):
    x0, eps, x_t = _noised((3, 4, 8, 8), [0.02, 0.5, 0.97])  # t near 0 too: the target error still shows
    trainer_target = {"noise_minus_x0": eps - x0, "x0_minus_noise": x0 - eps, "x0": x0}[target]
    for setting in ("noise_minus_x0", "x0_minus_noise", "x0"):
        check = check_flow_convention(trainer_target, x_t, x0, eps, target=setting)
        assert check.ok == (setting == target), (setting, check)
        if setting == target:
            assert check.max_error < 1e-5 and check.target_error == 0.0
    torch.testing.assert_close(check.t, torch.tensor([0.02, 0.5, 0.97]), rtol=0, atol=1e-6)
    # bfloat16 tensors, latents of small scale (as a VAE's can be): rounding stays within rtol
    small = 0.1 * x0
    t_b = torch.tensor([0.02, 0.5, 0.97]).view(-1, 1, 1, 1)
    small_target = {"noise_minus_x0": eps - small, "x0_minus_noise": small - eps, "x0": small}[target]
    low = [v.bfloat16() for v in (small_target, (1 - t_b) * small + t_b * eps, small, eps)]
    for setting in ("noise_minus_x0", "x0_minus_noise", "x0"):
        assert check_flow_convention(*low, target=setting).ok == (setting == target), setting


def test_check_flow_convention_refuses_a_scaled_noise_and_reads_layouts():
    x0, eps, x_t = _noised((2, 4, 8, 8), [0.3, 0.6], noise_scale=7.5)  # HiDream-O1's kind of noising
    check = check_flow_convention(x0, x_t, x0, eps, target="x0")
    assert not check.ok and check.max_error == 0.0 and check.noising_error > 1.0
    x0, eps, x_t = _noised((2, 4, 3, 8, 8), [0.3, 0.6])
    ff = [v.transpose(1, 2) for v in (eps - x0, x_t, x0, eps)]
    assert check_flow_convention(*ff, target="noise_minus_x0", layout="frames_first").ok
    with pytest.raises(ValueError, match="must share one shape"):
        check_flow_convention(ff[0], x_t, x0, eps, target="noise_minus_x0")
    with pytest.raises(ValueError, match="target='v' is not accepted"):
        check_flow_convention(eps - x0, x_t, x0, eps, target="v")


@pytest.mark.parametrize("target", ["noise_minus_x0", "x0_minus_noise", "x0"])
def test_flow_matching_term_frames_first_equals_channels_first(target):
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(3, 4, 3, 8, 8, generator=g)
    x0, eps, x_t = _noised((3, 4, 3, 8, 8), [0.1, 0.4, 0.8])
    reg = specreg.SpectralRegularizer(specreg.FourierAmplitudeLoss(ndim=3), lam=1.0)
    t = torch.tensor([0.1, 0.4, 0.8])
    cf = flow_matching_term(reg, pred, x_t, x0, t, target=target)
    ff = flow_matching_term(reg, *(v.transpose(1, 2) for v in (pred, x_t, x0)), t, target=target,
                            layout="frames_first")
    torch.testing.assert_close(ff.value, cf.value)
    t_b = t.view(-1, 1, 1, 1, 1)
    x0_hat = {"noise_minus_x0": x_t - t_b * pred, "x0_minus_noise": x_t + t_b * pred, "x0": pred}[target]
    torch.testing.assert_close(cf.spectral, specreg.FourierAmplitudeLoss(ndim=3)(x0_hat, x0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layout='frames_first' needs"):
        flow_matching_term(reg, pred[:, 0], x_t[:, 0], x0[:, 0], t, layout="frames_first")


# --------------------------------------------------------------------------------------
# NVlabs/edm2: loss_kwargs through train_edm2.py's JSON dump


@pytest.mark.parametrize("lam", [0.25, "edm", "auto", {"auto": {"ratio": 0.2, "beta": 0.9}}])
def test_edm2_loss_kwargs_survive_train_edm2s_json_dump(lam):
    from specreg.integrations.edm2 import SpectralEDM2Loss

    ex = example("edm2_loss")
    c = {"loss_kwargs": {"class_name": "specreg.integrations.edm2.SpectralEDM2Loss", "P_mean": -0.8,
                         "P_std": 1.6, "loss": "haar", "lam": lam, "sigma_max": None}}
    text = json.dumps(c, indent=2)  # what train_edm2.py prints, and writes to training_options.json
    again = json.loads(text)
    assert again == c
    loss_fn = ex.construct_class_by_name(**again["loss_kwargs"])
    assert isinstance(loss_fn, SpectralEDM2Loss)
    built = loss_fn.regularizer.lam
    if isinstance(lam, dict) or lam == "auto":
        assert isinstance(built, specreg.AutoLambda)
        assert (built.ratio, built.beta) == ((0.2, 0.9) if isinstance(lam, dict) else (0.1, 0.99))
    else:
        assert built == lam
    net = ex.Precond(specreg.models.unet_preset("cpu32s", model_channels=8, attn_resolutions=()))
    out = loss_fn(net=net, images=torch.rand(2, 1, 32, 32) * 2 - 1)
    assert out.shape == (2, 1, 32, 32) and bool(torch.isfinite(out).all())


def test_edm2_lam_objects_still_work_but_not_in_json():
    from specreg.integrations.edm2 import SpectralEDM2Loss

    auto = specreg.AutoLambda(ratio=0.3)
    assert SpectralEDM2Loss(loss="haar", lam=auto).regularizer.lam is auto
    with pytest.raises(TypeError):  # why the docstring steers to plain data
        json.dumps({"lam": auto})
    for bad in ({"auto": 0.1}, {"ratio": 0.1}, "exp", True):
        with pytest.raises(ValueError, match="lam=.* is not accepted"):
            SpectralEDM2Loss(loss="haar", lam=bad)


# --------------------------------------------------------------------------------------
# k-diffusion: Denoiser(scales=...) and its DCT frequency weighting


class TinyNet(nn.Module):
    """A small float64 network with a nonlinearity, in k-diffusion's inner-model convention."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 2, 3, padding=1, dtype=torch.float64)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)) * (1 + sigma.log().view(-1, 1, 1, 1) / 4) + 0.3 * x


def dct_weighted_loss(error: np.ndarray, scales: float, c_weight: np.ndarray) -> np.ndarray:
    """k-diffusion's loss_scales loss, from scipy's orthonormal DCT-II and the weights'
    closed form: axis weight min(log2(2n/(k + 1)), scales) (no clip below 1), the minimum
    over axes, times the squared coefficient, mean per sample, times c_weight."""
    axes = tuple(range(2, error.ndim))
    coeffs = scipy.fft.dctn(error, type=2, norm="ortho", axes=axes)
    weight = np.ones(())
    for axis in axes:
        n = error.shape[axis]
        w = np.log2(2 * n / (np.arange(n) + 1.0))
        w = np.minimum(w, scales) if scales >= 1 else w
        shape = [1] * error.ndim
        shape[axis] = n
        weight = np.minimum(weight, w.reshape(shape)) if weight.ndim else w.reshape(shape)
    return (coeffs**2 * weight).reshape(len(error), -1).mean(1) * c_weight


@pytest.mark.parametrize("scales", [2, 3.5, 0])
def test_kdiffusion_scales_follow_the_dct_weighting(scales):
    kd = example("kdiffusion_denoiser")
    net = TinyNet()
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(4, 2, 8, 12, generator=g, dtype=torch.float64) * 0.5
    noise = torch.randn(4, 2, 8, 12, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.3, 1.0, 8.0], dtype=torch.float64)
    sd = 0.5
    # the inner model's error against k-diffusion's target (x0 − c_skip·x)/c_out, written out
    c_skip, c_out, c_in = (v.view(-1, 1, 1, 1) for v in (sd**2 / (sigma**2 + sd**2),
                                                          sigma * sd / (sigma**2 + sd**2).sqrt(),
                                                          1 / (sigma**2 + sd**2).sqrt()))
    x = x0 + sigma.view(-1, 1, 1, 1) * noise
    with torch.no_grad():
        error = (net(x * c_in, sigma) - (x0 - c_skip * x) / c_out).numpy()
    reference = torch.from_numpy(dct_weighted_loss(error, scales, np.ones(4)))

    plain = kd.Denoiser(net, sigma_data=sd, scales=scales)
    torch.testing.assert_close(plain.loss(x0, noise, sigma).detach(), reference, rtol=1e-10, atol=0)
    zero = specreg.SpectralRegularizer("haar", lam=0.0)
    spectral = kd.SpectralDenoiser(net, zero, sigma_data=sd, scales=scales)
    torch.testing.assert_close(spectral.loss(x0, noise, sigma).detach(), reference, rtol=1e-10, atol=0)
    # set after construction, as a config might: honoured too
    late = kd.SpectralDenoiser(net, zero, sigma_data=sd)
    late.scales = scales
    torch.testing.assert_close(late.loss(x0, noise, sigma).detach(), reference, rtol=1e-10, atol=0)
    # and the spectral term still adds λ·L_S(D, x0) on top
    reg = specreg.SpectralRegularizer("haar", lam=0.4)
    with torch.no_grad():
        d = kd.Denoiser(net, sigma_data=sd)(x, sigma)
        added = 0.4 * specreg.build_loss("haar")(d, x0)
    torch.testing.assert_close(kd.SpectralDenoiser(net, reg, sigma_data=sd, scales=scales).loss(x0, noise, sigma)
                               .detach(), reference + added, rtol=1e-10, atol=1e-12)
    assert not math.isclose(float(reference.mean()), float(torch.from_numpy(error**2).flatten(1).mean(1).mean()))


def test_kdiffusion_dct_weights_on_video_and_the_real_weightings():
    kd = example("kdiffusion_denoiser")
    if kd.HAVE_K_DIFFUSION:
        pytest.skip("the real k_diffusion imports here; this checks the stand-in")
    g = torch.Generator().manual_seed(5)
    error = torch.randn(2, 3, 4, 6, 8, generator=g, dtype=torch.float64)
    coeffs = scipy.fft.dctn(error.numpy(), type=2, norm="ortho", axes=(2, 3, 4))
    torch.testing.assert_close(kd.dct(error), torch.from_numpy(coeffs), rtol=0, atol=1e-12)
    sigma = torch.tensor([0.2, 2.0], dtype=torch.float64)
    torch.testing.assert_close(kd.Denoiser(None, sigma_data=0.5, weighting="snr").weighting(sigma),
                               0.25 / (sigma**2 + 0.25))
