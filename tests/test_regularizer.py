"""SpectralRegularizer (Eq. 17) and AutoLambda."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specreg.losses import FourierAmplitudeLoss
from specreg.regularizer import (
    AutoLambda,
    SpectralRegularizer,
    lambda_edm,
    sigma_from_alpha_bar,
    sigma_from_flow_t,
)


def _batch(seed=0, b=6):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, 1, 8, 8, generator=g, dtype=torch.float64)
    return x0 + 0.3 * torch.randn(b, 1, 8, 8, generator=g, dtype=torch.float64), x0


def test_constant_lambda_scales_the_loss():
    x_hat, x0 = _batch()
    raw = FourierAmplitudeLoss()(x_hat, x0)
    out = SpectralRegularizer(FourierAmplitudeLoss(), lam=0.25)(x_hat, x0)
    torch.testing.assert_close(out.spectral, raw)
    torch.testing.assert_close(out.value, 0.25 * raw)
    torch.testing.assert_close(out.lam, torch.full_like(raw, 0.25))


def test_lambda_zero_adds_exactly_zero():
    x_hat, x0 = _batch()
    out = SpectralRegularizer("fourier_amp", lam=0.0)(x_hat, x0)
    assert torch.equal(out.value, torch.zeros_like(out.value))


def test_edm_weight_is_the_published_formula():
    x_hat, x0 = _batch()
    sigma = torch.tensor([0.002, 0.01, 0.1, 0.5, 3.0, 80.0], dtype=torch.float64)
    sd = 0.5
    out = SpectralRegularizer("fourier_amp", lam="edm", sigma_data=sd)(x_hat, x0, sigma)
    want = (sigma**2 + sd**2) / (sigma * sd) ** 2
    torch.testing.assert_close(out.lam, want)
    torch.testing.assert_close(lambda_edm(sigma, sd), want)


def test_snr_weight_and_min_snr_clip():
    x_hat, x0 = _batch()
    alpha_bar = torch.tensor([0.999, 0.9, 0.5, 0.1, 0.01, 1e-4], dtype=torch.float64)
    sigma = sigma_from_alpha_bar(alpha_bar)
    out = SpectralRegularizer("fourier_amp", lam="snr")(x_hat, x0, sigma)
    torch.testing.assert_close(out.lam, alpha_bar / (1 - alpha_bar))
    clipped = SpectralRegularizer("fourier_amp", lam="snr", snr_gamma=5.0)(x_hat, x0, sigma)
    torch.testing.assert_close(clipped.lam, (alpha_bar / (1 - alpha_bar)).clamp(max=5.0))


def test_sigma_conversions():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(sigma_from_flow_t(t), t / (1 - t))
    # flow x_t / (1 − t) = x0 + σ ε: the VE noise level of the same point
    ab = torch.tensor([0.25], dtype=torch.float64)
    torch.testing.assert_close(sigma_from_alpha_bar(ab), torch.tensor([3.0], dtype=torch.float64).sqrt())


def test_gate_by_sigma_and_by_alpha_bar():
    x_hat, x0 = _batch()
    sigma = torch.tensor([0.1, 0.4, 0.49, 0.51, 2.0, 10.0], dtype=torch.float64)
    out = SpectralRegularizer("fourier_amp", lam=1.0, sigma_max=0.5)(x_hat, x0, sigma)
    assert torch.equal(out.lam > 0, sigma <= 0.5)
    assert torch.equal(out.value[sigma > 0.5], torch.zeros(3, dtype=torch.float64))
    # ᾱ ≥ 0.8  ⇔  σ ≤ sqrt(0.2/0.8) = 0.5
    gated = SpectralRegularizer("fourier_amp", lam=1.0, alpha_bar_min=0.8)(x_hat, x0, sigma)
    torch.testing.assert_close(gated.value, out.value)


def test_autolambda_holds_the_ratio():
    torch.manual_seed(0)
    auto = AutoLambda(ratio=0.2, beta=0.9)
    reg = SpectralRegularizer("fourier_amp", lam=auto)
    for step in range(200):
        x_hat, x0 = _batch(seed=step)
        diffusion = torch.full((x0.shape[0],), 0.05, dtype=torch.float64) * (1 + 0.1 * torch.rand(x0.shape[0]))
        out = reg(x_hat, x0, diffusion_loss=diffusion)
    # λ·E[L_S] ≈ ρ·E[L_diffusion] once the EMAs have settled
    assert out.value.mean().item() == pytest.approx(0.2 * diffusion.mean().item(), rel=0.1)
    assert not out.lam.requires_grad


def test_autolambda_is_frozen_in_eval_mode():
    auto = AutoLambda(ratio=0.1)
    x_hat, x0 = _batch()
    reg = SpectralRegularizer("fourier_amp", lam=auto)
    reg(x_hat, x0, diffusion_loss=torch.ones(6, dtype=torch.float64))
    before = auto.ema_spectral.clone()
    reg.eval()
    reg(x_hat * 3, x0, diffusion_loss=torch.ones(6, dtype=torch.float64))
    assert torch.equal(before, auto.ema_spectral)


def test_gradients_flow_to_x0_hat_only_through_the_loss():
    x_hat, x0 = _batch()
    x_hat.requires_grad_(True)
    sigma = torch.full((6,), 0.3, dtype=torch.float64)
    out = SpectralRegularizer("fourier_ap_weighted", lam="edm")(x_hat, x0, sigma)
    out.value.sum().backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SpectralRegularizer("fourier_amp", lam=-1.0), "lam=-1.0"),
        (lambda: SpectralRegularizer("fourier_amp", lam="weighted"), "lam='weighted'"),
        (lambda: SpectralRegularizer("nope"), "nope"),
        (lambda: SpectralRegularizer(FourierAmplitudeLoss(reduction="mean")), "reduction='mean'"),
        (lambda: SpectralRegularizer(FourierAmplitudeLoss(), ndim=2), "only accepted with a loss name"),
        (lambda: SpectralRegularizer("fourier_amp", sigma_max=1.0, alpha_bar_min=0.5), "at most one"),
        (lambda: SpectralRegularizer("fourier_amp", alpha_bar_min=2.0), "alpha_bar_min=2.0"),
        (lambda: AutoLambda(ratio=0), "ratio=0"),
        (lambda: AutoLambda(beta=1.0), "beta=1.0"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_missing_sigma_or_diffusion_loss_is_named():
    x_hat, x0 = _batch()
    with pytest.raises(ValueError, match="need sigma"):
        SpectralRegularizer("fourier_amp", lam="edm")(x_hat, x0)
    with pytest.raises(ValueError, match="diffusion_loss"):
        SpectralRegularizer("fourier_amp", lam=AutoLambda())(x_hat, x0)


@pytest.mark.parametrize("lam", ["edm", "snr"])
def test_infinite_and_zero_sigma_stay_finite(lam):
    # σ = ∞ (flow t = 1, zero terminal SNR) and σ = 0 (flow t = 0, where x̂0 = x0)
    x_hat, x0 = _batch(b=4)
    x_hat[2:] = x0[2:]
    x_hat.requires_grad_(True)
    sigma = torch.tensor([float("inf"), 1.0, 0.0, float("inf")], dtype=torch.float64)
    out = SpectralRegularizer("fourier_amp", lam=lam)(x_hat, x0, sigma)
    out.value.sum().backward()
    assert torch.isfinite(out.value).all() and torch.isfinite(x_hat.grad).all()
    if lam == "edm":
        assert out.lam[0].item() == pytest.approx(4.0)  # the limit 1/σ_data²


@pytest.mark.parametrize("bad", [float("nan"), -1.0])
@pytest.mark.parametrize("policy", [{"lam": "edm"}, {"lam": 1.0, "sigma_max": 2.0}, {"lam": "snr"}])
def test_a_sigma_that_is_not_a_noise_level_is_refused(bad, policy):
    # σ = NaN gave λ = 0 silently (NaN ≤ σ_max is False), σ = −1 passed
    x_hat, x0 = _batch(b=3)
    sigma = torch.tensor([0.5, bad, 1.0], dtype=torch.float64)
    reg = SpectralRegularizer("fourier_amp", **policy)
    with pytest.raises(ValueError, match=r"^sigma has 1 value\(s\) that are not noise levels \(first: "
                                         rf"{bad}\); expected sigma >= 0"):
        reg(x_hat, x0, sigma)


def test_sigma_off_the_cpu_or_compiled_marks_the_sample_nan(monkeypatch):
    # where reading σ would cost a device sync (σ on a GPU, or under torch.compile) it is
    # not read: that sample's λ (and value) become NaN, which the trainer reports
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x_hat, x0 = _batch(b=3)
    out = SpectralRegularizer("fourier_amp", lam=1.0, sigma_max=2.0)(
        x_hat, x0, torch.tensor([0.5, float("nan"), 3.0], dtype=torch.float64))
    assert out.lam[0] == 1.0 and torch.isnan(out.lam[1]) and out.lam[2] == 0.0
    assert torch.isnan(out.value[1]) and torch.isfinite(out.value[[0, 2]]).all()


def test_sigma_of_the_wrong_length_is_named():
    x_hat, x0 = _batch(b=3)
    with pytest.raises(ValueError, match=r"^sigma has 2 values \(shape \(2,\)\) for a batch of 3"):
        SpectralRegularizer("fourier_amp", lam="edm")(x_hat, x0, torch.ones(2))
    out = SpectralRegularizer("fourier_amp", lam="edm")(x_hat, x0, 0.5)  # one for all is fine
    assert out.lam.shape == (3,)


def test_a_decoding_regularizer_fits_its_loss_on_the_decoded_data():
    """space: decoded compares D(x̂0) with D(x0), so a whitening loss must be fitted on D(x0):
    its spectrum is the decoded images' (here 2× nearest upsampling and a gain of 3, so the
    spectrum has more bins and 9× the power), not the latents'. Failed before: the latents'."""
    from specreg.losses import FourierL2Loss
    from specreg.transforms.fourier import radial_average

    torch.manual_seed(0)
    z = torch.randn(10, 2, 8, 8, dtype=torch.float64)

    def decode(x: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    reg = SpectralRegularizer(FourierL2Loss(weights="whiten"), lam=1.0, decode=decode).fit(z)
    images = decode(z)
    f = torch.from_numpy(np.fft.rfft2(images.numpy(), norm="ortho"))  # numpy as the reference DFT
    expected = radial_average(f.real**2 + f.imag**2, (16, 16)).reshape(-1, reg.loss.spectrum.shape[-1]).mean(0)
    assert reg.loss.spectrum.shape == expected.shape
    torch.testing.assert_close(reg.loss.spectrum.double(), expected, rtol=1e-6, atol=0)
