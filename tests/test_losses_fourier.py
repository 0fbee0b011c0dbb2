"""Fourier losses (Eq. 14, 15), PSD loss and FFL against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specreg.losses import (
    FocalFrequencyLoss,
    FourierAmplitudeLoss,
    FourierAmplitudePhaseLoss,
    PowerSpectrumLoss,
    build_loss,
)

SHAPES = {1: (3, 2, 37), 2: (2, 3, 12, 17), 3: (2, 1, 6, 7, 8)}


def _pair(ndim: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(*SHAPES[ndim], generator=g, dtype=dtype)
    x0_hat = x0 + 0.5 * torch.randn(*SHAPES[ndim], generator=g, dtype=dtype)
    return x0_hat, x0


def _np_fft(x: np.ndarray, ndim: int) -> np.ndarray:
    axes = tuple(range(-ndim, 0))
    return np.fft.fftn(x, axes=axes, norm="ortho")


def _per_sample_mean(v: np.ndarray) -> np.ndarray:
    return v.reshape(v.shape[0], -1).mean(1)


# --- numpy references: full complex FFT, no Hermitian shortcut ---------------------------

def ref_amp(x_hat, x0, ndim):
    return _per_sample_mean(np.abs(np.abs(_np_fft(x0, ndim)) - np.abs(_np_fft(x_hat, ndim))))


def _snap_real(f: np.ndarray) -> np.ndarray:
    # Bins that are real in exact arithmetic (DC, Nyquist) carry ±1e-17 imaginary rounding
    # in a full complex FFT, which flips their phase between π and −π: the printed form's
    # branch cut. Snap them to the real axis, as an rfft does exactly.
    return np.where(np.abs(f.imag) < 1e-12 * np.abs(f).max(), f.real + 0j, f)


def ref_ap_paper(x_hat, x0, ndim):
    f0, f1 = _snap_real(_np_fft(x0, ndim)), _snap_real(_np_fft(x_hat, ndim))
    l_a = _per_sample_mean(np.abs(np.abs(f0) - np.abs(f1)))
    l_phi = _per_sample_mean(np.abs(np.angle(f0) - np.angle(f1)))
    return l_a * (1 + l_phi)


def ref_ap_weighted(x_hat, x0, ndim):
    f0, f1 = _np_fft(x0, ndim), _np_fft(x_hat, ndim)
    dphi = np.angle(f0) - np.angle(f1)
    return _per_sample_mean(np.abs(np.abs(f0) - np.abs(f1)) + np.abs(f0) * (1 - np.cos(dphi)))


def ref_psd(x_hat, x0, ndim, eps=1e-10):
    def log_radial(x):
        f = _np_fft(x, ndim)
        p = np.abs(f) ** 2
        shape = x.shape[-ndim:]
        n_min = min(shape)
        grids = np.meshgrid(*[np.fft.fftfreq(n) * n_min for n in shape], indexing="ij")
        r = np.rint(np.sqrt(sum(g**2 for g in grids))).astype(int)
        n_bins = n_min // 2 + 1
        lead = p.shape[:-ndim]
        p = p.reshape(*lead, -1)
        r = r.reshape(-1)
        out = np.stack([p[..., r == b].mean(-1) for b in range(n_bins)], -1)
        m = np.abs(f).reshape(*lead[:1], -1).max(1).reshape(-1, *([1] * (out.ndim - 1)))
        return np.log10(out / m**2 + eps) + 2 * np.log10(m)

    return _per_sample_mean(np.abs(log_radial(x_hat) - log_radial(x0)))


REFERENCES = {
    "fourier_amp": ref_amp,
    "fourier_ap": ref_ap_paper,
    "fourier_ap_weighted": ref_ap_weighted,
    "psd": ref_psd,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_matches_numpy_reference(name, ndim):
    x_hat, x0 = _pair(ndim)
    got = build_loss(name, ndim=ndim)(x_hat, x0).numpy()
    want = REFERENCES[name](x_hat.numpy(), x0.numpy(), ndim)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_float32_matches_reference():
    x_hat, x0 = _pair(2, dtype=torch.float32)
    got = FourierAmplitudeLoss()(x_hat, x0).numpy()
    np.testing.assert_allclose(got, ref_amp(x_hat.double().numpy(), x0.double().numpy(), 2), rtol=1e-5)


def test_ffl_matches_reference_package():
    ffl_pkg = pytest.importorskip("focal_frequency_loss")
    for alpha, log_matrix, patch in [(1.0, False, 1), (2.0, True, 1), (1.0, False, 2)]:
        ref = ffl_pkg.FocalFrequencyLoss(loss_weight=1.0, alpha=alpha, patch_factor=patch, log_matrix=log_matrix)
        x_hat, x0 = _pair(2, seed=3, dtype=torch.float32)
        x_hat, x0 = x_hat[:1, :, :12, :16], x0[:1, :, :12, :16]
        ours = FocalFrequencyLoss(alpha=alpha, patch_factor=patch, log_matrix=log_matrix)(x_hat, x0)
        torch.testing.assert_close(ours[0], ref(x_hat, x0), rtol=1e-5, atol=1e-7)


def test_ffl_per_sample_equals_one_at_a_time():
    x_hat, x0 = _pair(2, seed=4)
    loss = FocalFrequencyLoss()
    whole = loss(x_hat, x0)
    single = torch.stack([loss(x_hat[i : i + 1], x0[i : i + 1])[0] for i in range(x0.shape[0])])
    torch.testing.assert_close(whole, single)


ALL = ["fourier_amp", "fourier_ap", "fourier_ap_weighted", "psd", "ffl"]


@pytest.mark.parametrize("name", ALL)
def test_gradcheck_float64(name):
    x_hat, x0 = _pair(2, seed=1)
    x_hat = x_hat[:2, :2, :6, :7].clone().requires_grad_(True)
    x0 = x0[:2, :2, :6, :7]
    # FFL's focal weight is detached by definition (no gradient through it), which a
    # finite difference cannot see; with alpha=0 the weight is constant and FFL is exact.
    loss = build_loss(name, alpha=0.0) if name == "ffl" else build_loss(name)
    assert torch.autograd.gradcheck(lambda a: loss(a, x0), (x_hat,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_zero_on_equal_inputs(name, ndim):
    _, x0 = _pair(ndim)
    assert torch.all(build_loss(name, ndim=ndim)(x0, x0) == 0)


def test_amplitude_shift_invariance_and_weighted_phase_sensitivity():
    _, x0 = _pair(2, seed=2)
    shifted = torch.roll(x0, shifts=(3, -5), dims=(-2, -1))
    amp = FourierAmplitudeLoss()(shifted, x0)
    torch.testing.assert_close(amp, torch.zeros_like(amp), atol=1e-12, rtol=0)
    weighted = FourierAmplitudePhaseLoss(form="weighted")(shifted, x0)
    assert torch.all(weighted > 0.1)


def test_printed_form_is_blind_to_a_pure_shift():
    # Eq. 15 as printed multiplies by L_A, which a circular shift leaves at 0: the phase
    # error of the shift costs nothing.
    _, x0 = _pair(2, seed=2)
    shifted = torch.roll(x0, shifts=(3, -5), dims=(-2, -1))
    phase_err = FourierAmplitudePhaseLoss(form="paper")
    assert torch.all(phase_err(shifted, x0) < 1e-10)
    assert torch.all(FourierAmplitudePhaseLoss(form="weighted")(shifted, x0) > 0.1)


def test_weighted_form_has_no_branch_cut_jump():
    # Phases just either side of ±π are 2e-3 apart on the circle. The weighted form's
    # phase part sees that small error; the printed form's |φ0 − φ̂0| sees ≈ 2π.
    n, k = 16, 3
    t = torch.arange(n, dtype=torch.float64)
    x0 = torch.cos(2 * torch.pi * k * t / n + (torch.pi - 1e-3)).view(1, 1, n)
    x_hat = 1.1 * torch.cos(2 * torch.pi * k * t / n + (-torch.pi + 1e-3)).view(1, 1, n)
    amp = FourierAmplitudeLoss(ndim=1)(x_hat, x0)
    weighted_phase_part = FourierAmplitudePhaseLoss(ndim=1, form="weighted")(x_hat, x0) - amp
    assert 0 <= weighted_phase_part.item() < 1e-5
    printed_phase_factor = FourierAmplitudePhaseLoss(ndim=1, form="paper")(x_hat, x0) / amp - 1
    # the two signal bins (k, n−k) of 16 carry a ≈2π jump, so mean |Δφ| ≥ 2·(2π − 2e-3)/16;
    # the empty bins add more, since rounding noise gives them arbitrary phases
    assert printed_phase_factor.item() >= 2 * (2 * torch.pi - 2e-3) / n


BAD_INPUTS = {
    "zeros": lambda x: torch.zeros_like(x),
    "constant": lambda x: torch.full_like(x, 3.0),
    "tiny": lambda x: x * 1e-20,
    "huge": lambda x: x * 1e20,
}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_finite_value_and_gradient(name, case):
    g = torch.Generator().manual_seed(5)
    a = BAD_INPUTS[case](torch.randn(2, 2, 13, 11, generator=g))
    b = BAD_INPUTS[case](torch.randn(2, 2, 13, 11, generator=g))
    if name == "ffl" and case == "huge":
        # FFL is quadratic: its true value at 1e20-scaled input (~1e40) exceeds float32,
        # so this scale is checked in float64, where it is representable.
        a, b = a.double(), b.double()
    for pair in [(a, b), (a, a), (torch.zeros_like(a), b), (a, torch.zeros_like(b))]:
        x_hat = pair[0].clone().requires_grad_(True)
        val = build_loss(name)(x_hat, pair[1])
        assert torch.isfinite(val).all(), (name, case, val)
        val.sum().backward()
        assert torch.isfinite(x_hat.grad).all(), (name, case)


@pytest.mark.parametrize("name", ALL)
def test_bf16_autocast_and_half_input(name):
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(2, 1, 16, 16, generator=g)
    x_hat = (x0 + 0.3 * torch.randn(2, 1, 16, 16, generator=g)).bfloat16().requires_grad_(True)
    loss = build_loss(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = loss(x_hat, x0.bfloat16())
    assert v.dtype == torch.float32
    v.sum().backward()
    assert torch.isfinite(v).all() and torch.isfinite(x_hat.grad).all()
    want = loss(x_hat.detach().float(), x0.bfloat16().float())
    torch.testing.assert_close(v, want)


def test_reductions():
    x_hat, x0 = _pair(2)
    per = FourierAmplitudeLoss()(x_hat, x0)
    assert per.shape == (x0.shape[0],)
    torch.testing.assert_close(FourierAmplitudeLoss(reduction="mean")(x_hat, x0), per.mean())
    torch.testing.assert_close(FourierAmplitudeLoss(reduction="sum")(x_hat, x0), per.sum())


def test_extra_leading_dims_are_channels():
    g = torch.Generator().manual_seed(7)
    video = torch.randn(2, 3, 4, 8, 8, generator=g, dtype=torch.float64)
    other = torch.randn(2, 3, 4, 8, 8, generator=g, dtype=torch.float64)
    got = FourierAmplitudeLoss(ndim=2)(video, other)
    want = FourierAmplitudeLoss(ndim=2)(video.flatten(1, 2), other.flatten(1, 2))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: FourierAmplitudeLoss()(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 9)), "must be equal"),
        (lambda: FourierAmplitudeLoss(ndim=2)(torch.zeros(8, 8), torch.zeros(8, 8)), "at least 4 dims"),
        (lambda: FourierAmplitudeLoss()(torch.zeros(2, 1, 8, 8, dtype=torch.long),
                                        torch.zeros(2, 1, 8, 8, dtype=torch.long)), "floating dtype"),
        (lambda: FourierAmplitudeLoss(ndim=4), "ndim=4"),
        (lambda: FourierAmplitudeLoss(reduction="avg"), "reduction='avg'"),
        (lambda: FourierAmplitudePhaseLoss(form="printed"), "form='printed'"),
        (lambda: FocalFrequencyLoss(patch_factor=0), "patch_factor=0"),
        (lambda: FocalFrequencyLoss(patch_factor=3)(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)), "divide"),
        (lambda: build_loss("fourier"), "fourier_amp"),
        (lambda: build_loss("fourier_amp", wavelet="haar"), "fourier_amp"),
        (lambda: PowerSpectrumLoss(eps=0), "eps=0"),
    ],
)
def test_bad_input_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "name, backend",
    # inductor (the default, ~20 s to compile here) once; the graph capture for the rest
    [("fourier_ap_weighted", "inductor"), ("fourier_amp", "aot_eager"), ("fourier_ap", "aot_eager"),
     ("psd", "aot_eager"), ("ffl", "aot_eager")],
)
def test_torch_compile_matches_eager(name, backend):
    x_hat, x0 = _pair(2, seed=8, dtype=torch.float32)
    loss = build_loss(name)
    compiled = torch.compile(loss, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x_hat, x0), loss(x_hat, x0), rtol=1e-5, atol=1e-6)


# --- issue 17: no NaN at any scale; Eq. 15's phase stable on bins that are real -----------

@pytest.mark.parametrize("name", ["fourier_ap", "fourier_ap_weighted", "fourier_amp", "psd"])
@pytest.mark.parametrize("x", [
    torch.full((1, 1, 11, 11, 11), 1e-20),
    torch.full((1, 1, 5, 67), 7e-31),
    torch.full((1, 1, 5, 67), 1e-300, dtype=torch.float64),
], ids=["3d-1e-20", "2d-7e-31", "2d-1e-300-f64"])
def test_tiny_constant_input_gives_zero_not_nan(name, x):
    # the FFT of a tiny constant leaves subnormal residue (~3.6e-43) in its empty bins,
    # where z/|z| used to give NaN
    value = build_loss(name, ndim=x.dim() - 2)(x, x)
    assert torch.equal(value, torch.zeros_like(value))


@pytest.mark.parametrize("name, x_hat, x0", [
    ("fourier_amp", torch.full((1, 1, 5, 67), 1e-30), torch.zeros(1, 1, 5, 67)),
    ("psd", torch.full((1, 1, 5, 67), 7e-31), torch.full((1, 1, 5, 67), -3e-31)),  # 335 NaN before
    ("psd", torch.full((1, 1, 11, 11), 1e-35), torch.full((1, 1, 11, 11), 1e-36)),
])
def test_tiny_input_has_finite_gradient(name, x_hat, x0):
    x_hat = x_hat.clone().requires_grad_(True)
    value = build_loss(name)(x_hat, x0)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(x_hat.grad).all()
    if name == "fourier_amp":  # a constant's spectrum is its DC bin alone: L_A = |DC| / N
        assert value.item() == pytest.approx(1e-30 * np.sqrt(5 * 67) / (5 * 67), rel=1e-6)
        # d/dx |DC|/N with DC = Σx/√N: 1/(N√N) for every element
        torch.testing.assert_close(x_hat.grad, torch.full_like(x_hat, (5 * 67) ** -1.5), rtol=1e-5, atol=0)


def test_focal_frequency_loss_scales_as_a_square():
    # FFL(c·a, c·b) = c²·FFL(a, b): finite at 1e19 in float32 and bfloat16 (was inf); where
    # the value (~1e40) overflows float32 the gradient (~1e20) is still right, and at 1e-30
    # (value ~1e-60, below float32) too
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    ffl = build_loss("ffl")
    torch.testing.assert_close(ffl(a * 1e19, b * 1e19) / 1e38, ffl(a, b), rtol=1e-5, atol=0)
    torch.testing.assert_close(ffl((a * 1e19).bfloat16(), (b * 1e19).bfloat16()) / 1e38,
                               ffl(a.bfloat16(), b.bfloat16()), rtol=1e-2, atol=0)
    for kw in ({}, {"log_matrix": True, "alpha": 2.0}, {"batch_matrix": True}):
        ffl = build_loss("ffl", **kw)
        for scale in (1e20, 1e-30):
            x = (a * scale).requires_grad_(True)
            ffl(x, b * scale).sum().backward()
            x64 = (a.double() * scale).requires_grad_(True)
            ffl(x64, b.double() * scale).sum().backward()
            assert torch.isfinite(x.grad).all()
            torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-3, atol=1e-4 * x64.grad.abs().max().item())


@pytest.mark.parametrize("name", ["ffl", "fourier_l2", "wavelet_l2"])
def test_quadratic_losses_keep_a_finite_gradient_where_the_value_overflows(name):
    # at 1e20 the true value (~1e40) is beyond float32 and +inf is the honest answer; the
    # gradient (~1e20) is representable and must stay finite (s² overflowed before)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    loss = build_loss(name)
    x = (a * 1e20).requires_grad_(True)
    value = loss(x, b * 1e20)
    value.sum().backward()
    assert torch.isposinf(value).all()
    x64 = (a.double() * 1e20).requires_grad_(True)
    loss(x64, b.double() * 1e20).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-3, atol=1e-4 * x64.grad.abs().max().item())


def _even(x: torch.Tensor) -> torch.Tensor:
    """x[n] + x[−n mod N] over the last two dims: a real-symmetric signal, whose spectrum is
    real in exact arithmetic (the FFT leaves ±1e-16 imaginary residue)."""
    dims = [-2, -1]
    return x + x.flip(dims).roll([1, 1], dims)


@pytest.mark.parametrize("shape", [(7, 9), (16, 16)])
def test_printed_phase_is_stable_on_bins_that_are_real(shape):
    # residue of either sign put negative real bins at +π or −π at random, so |φ0 − φ̂0|
    # jumped between 0 and 2π: the value was off by 17–34 % (51 % in float32)
    g = torch.Generator().manual_seed(0)
    x0 = _even(torch.randn(4, 2, *shape, generator=g, dtype=torch.float64))
    x_hat = _even(torch.randn(4, 2, *shape, generator=g, dtype=torch.float64))
    want = torch.from_numpy(ref_ap_paper(x_hat.numpy(), x0.numpy(), 2))
    loss = FourierAmplitudePhaseLoss(form="paper")
    torch.testing.assert_close(loss(x_hat, x0), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss(x_hat.float(), x0.float()), want.float(), rtol=1e-5, atol=0)
    # a mirror image has the same spectrum: the same value
    mirror = [-2, -1]
    torch.testing.assert_close(loss(x_hat.flip(mirror).roll([1, 1], mirror), x0.flip(mirror).roll([1, 1], mirror)),
                               loss(x_hat, x0), rtol=1e-12, atol=0)


def test_phase_gradient_has_no_cancellation_residue():
    # found by tests/test_fuzz_losses.py: x̂0 at 1e-31 against x0 at 1e19, opposite real
    # phases. The true gradient of the weighted form is 0; autograd's z/|z| backward left a
    # rounding residue of two cancelling terms, which the 1/|F̂| ~ 1e31 that follows made
    # infinite (safe_unit now forms the tangential part in one term).
    x_hat = torch.tensor([6.404226289240335e-31, 1.0490011669718274e-31]).view(1, 1, 2, 1).requires_grad_(True)
    x0 = torch.tensor([1.2573022116246454e19, -1.3210485972682146e19]).view(1, 1, 2, 1)
    for form in ("paper", "weighted"):
        x_hat.grad = None
        FourierAmplitudePhaseLoss(ndim=1, form=form)(x_hat, x0).sum().backward()
        assert torch.isfinite(x_hat.grad).all(), form


# --- issue 31: the fused functions (x0 without a gradient) against the autograd form ------

FUSED = ["fourier_amp", "fourier_ap", "fourier_ap_weighted", "psd"]


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("ndim, shape", [(1, (2, 2, 33)), (2, (3, 2, 7, 9)), (3, (1, 2, 4, 5, 6)), (2, (2, 1, 1, 1))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_fused_matches_the_autograd_form(name, ndim, shape, dtype):
    # per_sample_autograd is the same loss written with autograd operations (the form that
    # passed the hardening of issue 17, used when x0 needs a gradient); values and
    # gradients must agree to rounding, at ordinary, far-apart and tiny scales, on
    # random and constant signals
    loss = build_loss(name, ndim=ndim)
    g = torch.Generator().manual_seed(31)
    tol = {torch.float64: 1e-12, torch.float32: 2e-5}[dtype]
    for sa, sb in [(1.0, 1.0), (1e10, 1e-10), (1e-30, 1e-30), (1.0, 0.0)]:
        for constant in (False, True):
            a = torch.randn(shape, generator=g, dtype=torch.float64) * sa
            b = torch.randn(shape, generator=g, dtype=torch.float64) * sb
            if constant:
                a = a.mean(dim=tuple(range(2, a.dim())), keepdim=True).expand_as(a).contiguous()
            a, b = a.to(dtype), b.to(dtype)
            x1, x2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
            v1 = loss(x1, b)  # fused
            v2 = loss.per_sample_autograd(x2, b)
            v1.sum().backward()
            v2.sum().backward()
            torch.testing.assert_close(v1.detach(), v2.detach(), rtol=tol, atol=0)
            scale = float(x2.grad.abs().max())
            torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=tol * max(scale, 1e-300))


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("ndim, shape, scale", [(1, (2, 1, 9), 1.0), (3, (1, 1, 3, 4, 5), 1.0),
                                               (2, (2, 1, 5, 6), 1e-200), (2, (2, 1, 5, 6), 1e200)])
def test_fused_gradcheck_float64(name, ndim, shape, scale):
    g = torch.Generator().manual_seed(5)
    x_hat = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    loss = build_loss(name, ndim=ndim)
    assert torch.autograd.gradcheck(lambda a: loss(a, x0) / scale ** {"psd": 0}.get(name, 1), (x_hat,),
                                    eps=1e-6 * scale, atol=1e-5)
