"""MultiResolutionSTFTLoss and the STFT transform, checked against auraloss and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

auraloss = pytest.importorskip("auraloss")

from specreg.losses.stft import MultiResolutionSTFTLoss  # noqa: E402
from specreg.transforms.stft import stft_magnitude  # noqa: E402

SETTINGS = [
    {},  # auraloss's defaults
    {"fft_sizes": (256, 128, 64), "hop_sizes": (64, 32, 16), "win_lengths": (128, 64, 32)},
    {"fft_sizes": (512,), "hop_sizes": (128,), "win_lengths": (512,), "window": "hamming"},
    {"fft_sizes": (256, 512), "hop_sizes": (50, 100), "win_lengths": (200, 400), "w_sc": 0.5, "w_log_mag": 2.0},
]


def _auraloss(kw: dict) -> torch.nn.Module:
    kw = dict(kw)
    window = kw.pop("window", "hann")
    if "fft_sizes" in kw:
        kw = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    return auraloss.freq.MultiResolutionSTFTLoss(window=f"{window}_window", **kw)


@pytest.mark.parametrize("kw", SETTINGS)
@pytest.mark.parametrize("channels", [1, 2])
def test_equals_auraloss_batch_of_one(kw: dict, channels: int) -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, channels, 4000, generator=g)
    x0_hat = x0 + 0.3 * torch.randn(1, channels, 4000, generator=g)
    ours = MultiResolutionSTFTLoss(**kw)(x0_hat, x0)
    ref = _auraloss(kw)(x0_hat, x0)
    assert ours.shape == (1,)
    torch.testing.assert_close(ours[0], ref, rtol=1e-4, atol=0)


def test_per_sample_equals_each_sample_alone() -> None:
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 2, 3000, generator=g)
    # different error sizes per sample so that a pooled (whole-batch) norm would differ
    x0_hat = x0 + torch.tensor([0.05, 0.5, 2.0]).view(3, 1, 1) * torch.randn(3, 2, 3000, generator=g)
    per = MultiResolutionSTFTLoss()(x0_hat, x0)
    ref = torch.stack([_auraloss({})(x0_hat[i:i + 1], x0[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(per, ref, rtol=1e-4, atol=0)
    assert MultiResolutionSTFTLoss(reduction="mean")(x0_hat, x0) == pytest.approx(float(ref.mean()), rel=1e-4)
    assert MultiResolutionSTFTLoss(reduction="sum")(x0_hat, x0) == pytest.approx(float(ref.sum()), rel=1e-4)


def test_zero_for_identical_signals_with_finite_gradient() -> None:
    x0 = torch.randn(2, 1, 3000)
    x0_hat = x0.clone().requires_grad_(True)
    loss = MultiResolutionSTFTLoss()(x0_hat, x0)
    assert torch.equal(loss, torch.zeros(2))
    loss.sum().backward()
    assert torch.isfinite(x0_hat.grad).all()


def test_stft_magnitude_matches_numpy() -> None:
    """Centred, reflect-padded, periodic-Hann STFT written out with numpy."""
    n_fft, hop, win = 64, 16, 48
    x = torch.randn(2, 3, 300, dtype=torch.float64)
    ours = stft_magnitude(x, n_fft, hop, win, "hann")
    xn = np.pad(x.numpy(), [(0, 0), (0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    w = np.pad(w, ((n_fft - win) // 2, n_fft - win - (n_fft - win) // 2))
    frames = 1 + (xn.shape[-1] - n_fft) // hop
    ref = np.stack([np.abs(np.fft.rfft(xn[..., m * hop:m * hop + n_fft] * w, axis=-1)) for m in range(frames)], -1)
    assert ours.shape == ref.shape == (2, 3, n_fft // 2 + 1, 300 // hop + 1)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-10)


def test_gradcheck_float64() -> None:
    loss = MultiResolutionSTFTLoss(fft_sizes=(32, 16), hop_sizes=(8, 4), win_lengths=(16, 8))
    g = torch.Generator().manual_seed(2)
    x0_hat = torch.randn(1, 2, 24, dtype=torch.float64, generator=g, requires_grad=True)
    x0 = torch.randn(1, 2, 24, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (x0_hat, x0), eps=1e-6, atol=1e-5)


def test_gradcheck_float64_fast_path() -> None:
    """x0 without a gradient takes the fused path (own STFT backward and own loss gradient)."""
    loss = MultiResolutionSTFTLoss(fft_sizes=(32, 16, 15), hop_sizes=(8, 4, 5), win_lengths=(16, 8, 11))
    g = torch.Generator().manual_seed(2)
    x0_hat = torch.randn(2, 2, 40, dtype=torch.float64, generator=g, requires_grad=True)
    x0 = torch.randn(2, 2, 40, dtype=torch.float64, generator=g)
    x0[1, :, :20] = 0.0  # some bins of S at the floor
    assert torch.autograd.gradcheck(lambda xh: loss(xh, x0), (x0_hat,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 3e-3, 40.0, 1e20])
def test_fast_path_equals_autograd_path(scale: float) -> None:
    """Value and gradient of the fused path (x0 constant) against the plain-autograd one
    (taken when x0 needs a gradient), with part of x̂0 under the magnitude floor."""
    g = torch.Generator().manual_seed(4)
    x0 = scale * torch.randn(3, 2, 3000, generator=g, dtype=torch.float64)
    x0_hat = x0 + scale * 0.3 * torch.randn(3, 2, 3000, generator=g, dtype=torch.float64)
    x0_hat[0, :, :1500] = 0.0
    loss = MultiResolutionSTFTLoss(fft_sizes=(1024, 256, 255), hop_sizes=(120, 64, 50), win_lengths=(600, 256, 200))
    a = x0_hat.clone().requires_grad_(True)
    fast = loss(a, x0)
    (g_fast,) = torch.autograd.grad(fast.sum(), a)
    b = x0_hat.clone().requires_grad_(True)
    slow = loss(b, x0.clone().requires_grad_(True))
    (g_slow,) = torch.autograd.grad(slow.sum(), b)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=0)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-7, atol=1e-12 * float(g_slow.abs().max()))


def test_scale_invariant_at_1e20_where_auraloss_overflows() -> None:
    """SC and the log-ratio are invariant to a common gain once magnitudes are far above
    the floor, so the value at 1e20 must equal auraloss's at unit scale."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, 1, 3000, generator=g)
    x0_hat = x0 + 0.2 * torch.randn(1, 1, 3000, generator=g)
    ref = _auraloss({})(x0_hat, x0)
    big = MultiResolutionSTFTLoss()(1e20 * x0_hat, 1e20 * x0)
    torch.testing.assert_close(big[0], ref, rtol=1e-3, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: (torch.zeros(s), torch.zeros(s)),
        lambda s: (torch.ones(s), torch.full(s, 3.0)),
        lambda s: (1e-20 * torch.randn(s), 1e-20 * torch.randn(s)),
        lambda s: (1e20 * torch.randn(s), 1e20 * torch.randn(s)),
        lambda s: (1e20 * torch.randn(s), torch.zeros(s)),
        lambda s: (torch.zeros(s), 1e20 * torch.randn(s)),
    ],
    ids=["zeros", "constants", "tiny", "huge", "huge-vs-zero", "zero-vs-huge"],
)
def test_finite_values_and_gradients(make) -> None:
    x0_hat, x0 = make((2, 1, 2100))
    x0_hat.requires_grad_(True)
    loss = MultiResolutionSTFTLoss()(x0_hat, x0)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(x0_hat.grad).all()


def test_bf16_autocast() -> None:
    x0 = torch.randn(2, 1, 2100).bfloat16()
    x0_hat = (x0.float() + 0.1 * torch.randn(2, 1, 2100)).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = MultiResolutionSTFTLoss()(x0_hat, x0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    ref = _auraloss({})(x0_hat.detach().float()[:1], x0.float()[:1])
    torch.testing.assert_close(loss[0].detach(), ref, rtol=1e-4, atol=0)
    loss.sum().backward()
    assert torch.isfinite(x0_hat.grad.float()).all()


def test_window_is_a_buffer_that_moves_with_the_module() -> None:
    loss = MultiResolutionSTFTLoss().double()
    buffers = dict(loss.named_buffers())
    assert set(buffers) == {"window_0", "window_1", "window_2"}
    assert buffers["window_0"].dtype == torch.float64
    assert loss.state_dict() == {}  # non-persistent: checkpoints stay free of derived data


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"fft_sizes": (1024, 512), "hop_sizes": (120,), "win_lengths": (600,)}, "one entry per resolution"),
        ({"fft_sizes": (0,), "hop_sizes": (1,), "win_lengths": (1,)}, "fft_sizes"),
        ({"fft_sizes": (64,), "hop_sizes": (-1,), "win_lengths": (32,)}, "hop_sizes"),
        ({"fft_sizes": (64,), "hop_sizes": (40,), "win_lengths": (32,)}, "hop <= win_length <= n_fft"),
        ({"fft_sizes": (64,), "hop_sizes": (16,), "win_lengths": (128,)}, "hop <= win_length <= n_fft"),
        ({"fft_sizes": (64.5,), "hop_sizes": (16,), "win_lengths": (32,)}, "fft_sizes"),
        ({"window": "triangle"}, "window"),
        ({"eps": 0.0}, "eps"),
        ({"w_sc": -1.0}, "w_sc"),
        ({"reduction": "max"}, "reduction"),
        ({"ndim": 2}, "ndim"),
    ],
)
def test_bad_arguments(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MultiResolutionSTFTLoss(**kw)


def test_bad_inputs() -> None:
    loss = MultiResolutionSTFTLoss()
    with pytest.raises(ValueError, match="needs at least 1025"):
        loss(torch.randn(1, 1, 1024), torch.randn(1, 1, 1024))
    loss(torch.randn(1, 1, 1025), torch.randn(1, 1, 1025))  # the shortest accepted length
    with pytest.raises(ValueError, match="shape"):
        loss(torch.randn(1, 1, 3000), torch.randn(1, 1, 2999))
    with pytest.raises(ValueError, match="dims"):
        loss(torch.randn(3000), torch.randn(3000))
    with pytest.raises(ValueError, match="dtype"):
        loss(torch.ones(1, 1, 3000, dtype=torch.long), torch.ones(1, 1, 3000, dtype=torch.long))


def test_extra_dims_between_batch_and_time_are_channels() -> None:
    # (B, C, K, T) died with a torch shape error; it is (B, C·K, T), as in the other losses
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 2, 3, 40, generator=g)
    x0_hat = torch.randn(2, 2, 3, 40, generator=g)
    kw = {"fft_sizes": (16,), "hop_sizes": (4,), "win_lengths": (16,)}
    loss = MultiResolutionSTFTLoss(**kw)
    want = loss(x0_hat.flatten(1, 2), x0.flatten(1, 2))
    torch.testing.assert_close(loss(x0_hat, x0), want)
    torch.testing.assert_close(loss(x0_hat, x0.clone().requires_grad_(True)), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="x0 has 40 samples"):
        MultiResolutionSTFTLoss()(x0_hat, x0)


@pytest.mark.parametrize("scale0, scale_hat", [(1e20, 1.0), (1e30, 1e-3), (1e-30, 1e-30)])
def test_finite_gradient_when_the_arguments_differ_by_many_decades(scale0: float, scale_hat: float) -> None:
    # found by tests/test_fuzz_losses.py: x0 at 1e20 against x̂0 at 1 gave a NaN gradient
    # (|STFT(x̂0)|² fell below float32 once both were scaled for x0, and (g/|Y|)·Y overflowed)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 1, 64, generator=g, dtype=torch.float64) * scale0
    x0_hat = torch.randn(2, 1, 64, generator=g, dtype=torch.float64) * scale_hat
    loss = MultiResolutionSTFTLoss(fft_sizes=(16, 32), hop_sizes=(4, 8), win_lengths=(16, 32))
    a = x0_hat.float().requires_grad_(True)
    value = loss(a, x0.float())
    value.sum().backward()
    a64 = x0_hat.clone().requires_grad_(True)
    want = loss(a64, x0)
    want.sum().backward()
    torch.testing.assert_close(value.double(), want, rtol=1e-4, atol=0)
    torch.testing.assert_close(a.grad.double(), a64.grad, rtol=1e-3, atol=1e-4 * a64.grad.abs().max().item())


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1.2345e-30), (torch.float64, 6.4321e-302)])
def test_tiny_signals_with_gradients_for_both_arguments(dtype: torch.dtype, scale: float) -> None:
    # found by tests/test_fuzz_losses.py: with x0 needing a gradient too (the plain-autograd
    # path), |STFT| of a tiny signal had the NaN gradient of |z| at subnormal z, although
    # the floor clamps those bins and their gradient is 0
    loss = MultiResolutionSTFTLoss(fft_sizes=(4,), hop_sizes=(1,), win_lengths=(3,))
    x0_hat = torch.full((1, 1, 9), -scale, dtype=dtype, requires_grad=True)
    x0 = (torch.randn(1, 1, 9, dtype=dtype) * scale).requires_grad_(True)
    value = loss(x0_hat, x0)
    value.sum().backward()
    assert torch.equal(value, torch.zeros(1, dtype=dtype))  # all below the floor: no difference
    assert torch.isfinite(x0_hat.grad).all() and torch.isfinite(x0.grad).all()
