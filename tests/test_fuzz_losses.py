"""Property-based fuzz of every registered loss (hypothesis).

For every name of :func:`specreg.losses.registry.loss_names` (plus every PyWavelets
discrete wavelet and boundary mode for the wavelet losses) the draws cover ndim 1–3,
sides of 1, odd, prime and power-of-two lengths, float32 and float64 (bfloat16 under
autocast for 2-D), per-argument scales 0, 1e-30 … 1e30 and the dtype's edges (its largest
finite value, multiples of its smallest subnormal, 10^e near both; 1e-300 in float64),
random, constant, sparse and identical inputs; ``test_every_loss_at_the_dtypes_edges``
adds five fixed edge pairs per loss and dtype (float32, float64, bfloat16). Each case must
end in one of two ways:

* a ``ValueError`` whose message starts with the argument it is about (``x0 has …``,
  ``levels=…``, ``wavelet=…``, ``patch_factor=…``, ``(n_fft, hop, win_length)=…``); or
* a value of shape (B,), ≥ 0, exactly 0 for identical arguments, finite, and a finite
  gradient with respect to both arguments.

The one non-finite result accepted is ±inf where the true number lies beyond the
dtype's range, checked by recomputing in float64 (for a loss homogeneous of degree k, at
inputs scaled to ≈ 1 and scaled back in logarithms, so beyond float64 too): the value of a
quadratic loss (ffl, fourier_l2, wavelet_l2) at 1e20 in float32 (≈ 1e40), or a gradient
that exceeds the range somewhere (e.g. of the phase losses with respect to an argument
1e60 times smaller than the other, ≈ 1e49; its other entries, sums of such terms, may
then be ±inf as well). Where float64 cannot hold the case (a float64 pair spanning its
largest value and its subnormals; mrstft, not homogeneous, beyond float64) ±inf is
accepted unconfirmed. NaN is never accepted. A sample holding NaN or ±inf gets a NaN
value (``test_a_non_finite_sample_gets_nan_and_the_others_their_value``).

Draws are derandomized, so the suite runs the same cases every time
(``SPECREG_FUZZ_EXAMPLES`` sets examples per loss, default 200; ``SPECREG_FUZZ_RANDOM=1``
draws fresh ones; ``SPECREG_FUZZ_LOG=file`` appends one JSON line per case with its
outcome). docs/reliability.md lists what was found and the command to rerun.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
import pywt  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from specreg.losses.registry import build_loss, loss_names  # noqa: E402
from specreg.transforms.wavelet import MODES  # noqa: E402

EXAMPLES = int(os.environ.get("SPECREG_FUZZ_EXAMPLES", "200"))
LOG = os.environ.get("SPECREG_FUZZ_LOG")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                derandomize=not os.environ.get("SPECREG_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NAMES = loss_names()
WAVELETS = tuple(pywt.wavelist(kind="discrete"))
FILTER_LENGTH = {w: pywt.Wavelet(w).dec_len for w in WAVELETS}
SIDES = (1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 17, 31)
EXPONENTS = (-30, -20, -10, -3, 0, 3, 10, 20, 30)
# the dtype's edges: "max" puts the sample's largest magnitude at the largest finite value,
# "subnormal" draws small integer multiples of the smallest subnormal; 10^e near both ends
EDGES = {torch.float32: (-44, -40, -38, 35, 37, "max", "max", "subnormal"),
         torch.bfloat16: (-40, -38, 35, 37, "max", "max", "subnormal"),
         torch.float64: (-320, -310, -300, 200, 300, 307, "max", "max", "subnormal")}
# degree k of homogeneity, L(c·x0_hat, c·x0) = c^k·L(x0_hat, x0), which gives a reference
# for results beyond even float64 (mrstft's floor is absolute: it is not homogeneous)
DEGREE = {"fourier_amp": 1, "fourier_ap": 1, "fourier_ap_weighted": 1, "wavelet": 1, "haar": 1, "bior1.3": 1,
          "fourier_l2": 2, "wavelet_l2": 2, "ffl": 2, "psd": 0}
# a refusal names its argument first: "x0 has …", "levels=3 is …", "(n_fft, hop, win_length)=…"
NAMES_ARGUMENT = re.compile(r"^(x0_hat|x0|sigma|\(n_fft, hop, win_length\)=|[a-z_]+=|[a-z_]+\[)")


# --------------------------------------------------------------------------- draws

@st.composite
def options(draw: Any, name: str, ndim: int) -> dict[str, Any]:
    """Constructor arguments of loss ``name`` (some deliberately out of range)."""
    if name == "mrstft":
        n_fft = draw(st.sampled_from([4, 8, 16, 32]))
        win = draw(st.integers(1, n_fft))
        return {"fft_sizes": [n_fft], "win_lengths": [win], "hop_sizes": [draw(st.integers(1, win))]}
    kw: dict[str, Any] = {"ndim": ndim}
    if name in ("wavelet", "wavelet_l2"):  # every family in 1-D; shorter filters in 2-D, 3-D (cost)
        kw["wavelet"] = draw(st.sampled_from([w for w in WAVELETS if FILTER_LENGTH[w] <= (999, 32, 12)[ndim - 1]]))
    if name in ("wavelet", "wavelet_l2", "haar", "bior1.3"):
        kw["mode"] = draw(st.sampled_from(MODES))
        kw["levels"] = draw(st.sampled_from([None, None, 1, 2]))
    elif name == "ffl":
        kw.update(alpha=draw(st.sampled_from([0.0, 1.0, 2.0])), log_matrix=draw(st.booleans()),
                  batch_matrix=draw(st.booleans()), patch_factor=draw(st.sampled_from([1, 1, 2])))
    elif name == "fourier_l2":
        kw["weights"] = draw(st.sampled_from(["flat", "power"]))
    return kw


@st.composite
def signals(draw: Any, name: str, ndim: int, dtype: torch.dtype, kw: dict[str, Any],
            edge: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, x0): shape (B, C[, K], *spatial), each with its own scale and kind; scales
    reach the edges of ``edge`` (default ``dtype``), the dtype the loss will see."""
    finfo = torch.finfo(edge or dtype)
    sides = SIDES if ndim < 3 else SIDES[:8]
    if name == "mrstft":
        spatial = (draw(st.sampled_from([1, 5, 9, 17, 33, 40, 67])),)
    elif (kw.get("wavelet") or name) in FILTER_LENGTH and draw(st.integers(0, 4)):  # mostly a level or two
        n = 2 * (FILTER_LENGTH[kw.get("wavelet") or name] - 1)  # pywt.dwt_max_level ≥ 1 from here
        spatial = tuple(draw(st.integers(n, 2 * n + 3)) for _ in range(ndim))
    else:
        spatial = tuple(draw(st.sampled_from(sides)) for _ in range(ndim))
    lead = (draw(st.integers(1, 3)), draw(st.integers(1, 2))) + ((2,) if draw(st.integers(0, 5)) == 0 else ())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # float64 also at 1e-300, for both arguments at once: against 1e30 a gradient may be
    # ~1e330, beyond float64, and nothing wider can confirm that it truly is
    tiny = dtype == torch.float64 and draw(st.integers(0, 9)) == 0

    def one() -> np.ndarray:
        kind = draw(st.sampled_from(["random", "random", "constant", "sparse", "zero"]))
        e = "tiny" if tiny else draw(st.sampled_from(EXPONENTS + EDGES[edge or dtype]))
        if kind == "zero":
            return np.zeros((*lead, *spatial))
        if kind == "constant":
            x = np.broadcast_to(rng.normal(size=(*lead, *[1] * ndim)), (*lead, *spatial))
        else:
            x = rng.normal(size=(*lead, *spatial))
            x = x * (rng.random(x.shape) < 0.1) if kind == "sparse" else x
        if e == "max":  # max |x| = the largest finite value (≤ it after rounding to the dtype)
            top = np.abs(x).max()
            return x / top * finfo.max if top > 0 else x
        if e == "subnormal":
            return np.round(4 * x) * finfo.smallest_normal * finfo.eps  # k·smallest subnormal
        return x * (1e-300 if e == "tiny" else 10.0 ** e)

    x0 = torch.tensor(one(), dtype=dtype)
    x0_hat = x0.clone() if draw(st.integers(0, 4)) == 0 else torch.tensor(one(), dtype=dtype)
    return x0_hat, x0


# --------------------------------------------------------------------------- checks

def _record(test: str, name: str, outcome: str) -> str:
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps({"test": test, "loss": name, "outcome": outcome}) + "\n")
    return outcome


def _refusal_names_argument(err: ValueError) -> None:
    message = str(err)
    assert "\n" not in message and NAMES_ARGUMENT.match(message), f"refusal does not name its argument: {message!r}"


def _value_and_grads(loss: torch.nn.Module, x0_hat: torch.Tensor, x0: torch.Tensor, grad_x0: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    a = x0_hat.clone().requires_grad_(True)
    b = x0.clone().requires_grad_(grad_x0)
    value = loss(a, b)
    value.sum().backward()
    return value.detach(), a.grad, b.grad if grad_x0 else None


def _reference(name: str, loss: torch.nn.Module, x0_hat: torch.Tensor, x0: torch.Tensor, grad_x0: bool
               ) -> list[tuple[torch.Tensor, float] | None]:
    """[(value, log2 factor), (∇x0_hat, …), (∇x0, … or None)] in float64, each true result
    being the tensor times 2^factor. A homogeneous loss is evaluated at c·x (c = 2^-m,
    max |c·x| ≈ 1), whose results times c^-k (value) and c^-(k−1) (gradients) are the true
    ones, so even a result beyond float64's range is known; mrstft at x itself. None where
    float64 cannot tell: a float64 pair that spans its largest value and its subnormals
    (c·x flushes the small one to 0), or mrstft beyond float64."""
    a, b = x0_hat.double(), x0.double()
    k = DEGREE.get(name)
    m = 0
    if k is not None:
        top = float(torch.maximum(a.abs().max(), b.abs().max()))
        m = int(np.floor(np.log2(top))) if top > 0 else 0
        a2, b2 = torch.ldexp(a, torch.tensor(-m)), torch.ldexp(b, torch.tensor(-m))
        if bool(((a2 == 0) & (a != 0)).any() or ((b2 == 0) & (b != 0)).any()):
            return [None, None, None]  # float64 from its largest value to its subnormals: no span holds both
        a, b = a2, b2
    v, ga, gb = _value_and_grads(loss, a, b, grad_x0)
    if not (torch.isfinite(v).all() and torch.isfinite(ga).all() and (gb is None or torch.isfinite(gb).all())):
        return [None, None, None]  # mrstft (not homogeneous) beyond float64 itself
    k = k or 0
    return [(v, float(k * m)), (ga, float((k - 1) * m)), (gb, float((k - 1) * m)) if grad_x0 else None]


def _beyond_range(got: torch.Tensor, ref: tuple[torch.Tensor, float] | None, *, whole: bool = False) -> None:
    """Never NaN; infinite entries of ``got`` only where the true result (``ref``, from
    :func:`_reference`) exceeds ``got``'s dtype, with its sign. With ``whole`` (a gradient)
    it is enough that the true result exceeds the range somewhere: each entry of a gradient
    is a sum of per-frequency terms that then exceed it too, so an entry whose terms cancel
    to a representable number cannot be resolved in the dtype either."""
    bad = ~torch.isfinite(got)
    assert not torch.isnan(got).any(), "NaN"
    if bad.any() and ref is not None:  # without a reference: ±inf, never NaN, is all one can ask
        want, log2_factor = ref
        assert torch.isfinite(want).all(), f"the float64 reference is not finite: {want.flatten()[:4].tolist()}"
        log2_limit = float(np.log2(torch.finfo(got.dtype).max))
        over = torch.log2(want.abs()) + log2_factor > log2_limit
        if whole:
            assert bool(over.any()), f"non-finite where the true result is at most {want.abs().max()}·2^{log2_factor}"
            return
        assert bool(over[bad].all()), f"non-finite where the true result is {want[bad].tolist()}·2^{log2_factor}"
        assert bool((got[bad].sign() == want[bad].sign()).all())


def check_case(name: str, kw: dict[str, Any], x0_hat: torch.Tensor, x0: torch.Tensor, grad_x0: bool,
               test: str = "fuzz") -> str:
    """Run one case; return its outcome ("value", "refused" or "beyond range")."""
    try:
        loss = build_loss(name, **kw)
        value, g_hat, g0 = _value_and_grads(loss, x0_hat, x0, grad_x0)
    except ValueError as err:
        _refusal_names_argument(err)
        return _record(test, name, "refused")
    assert value.shape == (x0.shape[0],)
    assert not torch.isnan(value).any(), f"NaN value {value.tolist()}"
    assert bool((value >= 0).all()), f"negative value {value.tolist()}"
    outcome = "value"
    grads = [g for g in (g_hat, g0) if g is not None]
    if not (torch.isfinite(value).all() and all(torch.isfinite(g).all() for g in grads)):
        ref = _reference(name, loss, x0_hat, x0, grad_x0)
        _beyond_range(value, ref[0])
        for g, r in zip(grads, ref[1:]):
            _beyond_range(g, r, whole=True)
        outcome = "beyond range"
    same = loss(x0, x0.clone())
    assert torch.equal(same, torch.zeros_like(same)), f"loss(x, x) = {same.tolist()}"
    return _record(test, name, outcome)


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_every_loss_is_finite_nonnegative_zero_on_equal_or_refuses(name: str, data: Any) -> None:
    ndim = 1 if name == "mrstft" else data.draw(st.integers(1, 3), label="ndim")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    kw = data.draw(options(name, ndim), label="options")
    x0_hat, x0 = data.draw(signals(name, ndim, dtype, kw), label="signals")
    check_case(name, kw, x0_hat, x0, grad_x0=data.draw(st.booleans(), label="grad_x0"))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "mrstft"])
@settings(FUZZ, max_examples=max(1, EXAMPLES // 4))
@given(data=st.data())
def test_bfloat16_under_autocast_2d(name: str, data: Any) -> None:
    kw = data.draw(options(name, 2), label="options")
    x0_hat, x0 = data.draw(signals(name, 2, torch.float32, kw, edge=torch.bfloat16), label="signals")
    x0_hat, x0 = x0_hat.bfloat16(), x0.bfloat16()
    try:
        loss = build_loss(name, **kw)
        a = x0_hat.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(a, x0)
            same = loss(x0, x0)
        value.sum().backward()
    except ValueError as err:
        _refusal_names_argument(err)
        _record("bfloat16", name, "refused")
        return
    assert value.dtype == torch.float32 and value.shape == (x0.shape[0],)
    assert torch.equal(same, torch.zeros_like(same))
    assert not torch.isnan(value).any() and bool((value >= 0).all())
    assert a.grad.dtype == torch.bfloat16
    finite = bool(torch.isfinite(value).all() and torch.isfinite(a.grad).all())
    if not finite:  # the value is computed in float32, the gradient is rounded to bfloat16
        ref = _reference(name, loss, x0_hat, x0, False)
        _beyond_range(value, ref[0])
        _beyond_range(a.grad, ref[1], whole=True)
    assert not torch.isnan(a.grad).any()
    _record("bfloat16", name, "value" if finite else "beyond range")


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_every_wavelet_and_mode(wavelet: str) -> None:
    # every (family member, boundary mode) once, on a 1-D signal long enough for one level
    length = 2 * pywt.Wavelet(wavelet).dec_len + 1  # odd
    rng = np.random.default_rng(sum(map(ord, wavelet)))
    for i, mode in enumerate(MODES):
        dtype = (torch.float32, torch.float64)[i % 2]
        scale = 10.0 ** EXPONENTS[(i + len(wavelet)) % len(EXPONENTS)]
        x0 = torch.tensor(rng.normal(size=(2, 1, length)) * scale, dtype=dtype)
        x0_hat = torch.tensor(rng.normal(size=(2, 1, length)) * scale, dtype=dtype)
        for name in ("wavelet", "wavelet_l2"):
            outcome = check_case(name, {"wavelet": wavelet, "mode": mode, "ndim": 1}, x0_hat, x0, grad_x0=i % 3 == 0,
                                 test="wavelets")
            orthogonal = pywt.Wavelet(wavelet).orthogonal
            assert outcome != "refused" or (name == "wavelet_l2" and not orthogonal)


# --------------------------------------------------------------------------- the dtype's edges

def _edge_pairs(shape: tuple[int, ...], dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    finfo = torch.finfo(dtype)
    g = torch.Generator().manual_seed(29)
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    unit = r / r.abs().max()
    sub = torch.round(4 * torch.randn(shape, generator=g, dtype=torch.float64)) * (finfo.smallest_normal * finfo.eps)
    top = unit * finfo.max
    return {"max vs 0": (top, torch.zeros(shape, dtype=torch.float64)),
            "max vs −max": (top, -top),
            "constant 0.9·max vs 0": (torch.full(shape, 0.9 * finfo.max, dtype=torch.float64),
                                      torch.zeros(shape, dtype=torch.float64)),
            "max vs subnormal": (top, sub),
            "subnormal vs subnormal": (sub, sub.flip(-1))}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_every_loss_at_the_dtypes_edges(name: str, dtype: torch.dtype) -> None:
    # the largest finite value, its negative and the subnormals, value and both gradients:
    # finite, or ±inf only where the true result (homogeneity reference) exceeds the dtype
    shape, kw = ((2, 1, 64), {"fft_sizes": [16], "hop_sizes": [4], "win_lengths": [16]}) if name == "mrstft" \
        else ((2, 2, 16, 16), {"ndim": 2})
    for case, (x0_hat, x0) in _edge_pairs(shape, dtype).items():
        outcome = check_case(name, kw, x0_hat.to(dtype), x0.to(dtype), grad_x0=True, test="edges")
        assert outcome != "refused", case


def _pywt_wavelet_loss(x0_hat: torch.Tensor, x0: torch.Tensor, levels: int) -> float:
    coeffs = pywt.wavedecn((x0_hat - x0).double().numpy()[0, 0], "haar", mode="periodization", level=levels)
    bands = [coeffs[0]] + [b for d in coeffs[1:] for b in d.values()]
    return float(sum(np.abs(b).mean() for b in bands))


def test_haar_near_float32s_largest_value_is_the_true_finite_value() -> None:
    # issue #29: a constant 3e37 gave NaN (true value 2.4e38), randn·1e35 on 256² gave inf
    # (true value ≈ 7.9e35): Haar's unnormalised level sums overflowed
    loss = build_loss("haar")
    x0_hat = torch.full((1, 1, 8, 8), 3e37)
    got = loss(x0_hat, torch.zeros_like(x0_hat))
    want = _pywt_wavelet_loss(x0_hat, torch.zeros_like(x0_hat), 3)
    assert want < torch.finfo(torch.float32).max and float(got) == pytest.approx(want, rel=1e-5)
    x0_hat = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0)) * 1e35
    a = x0_hat.clone().requires_grad_(True)
    got = loss(a, torch.zeros_like(x0_hat))
    got.sum().backward()
    assert float(got) == pytest.approx(_pywt_wavelet_loss(x0_hat, torch.zeros_like(x0_hat), 3), rel=1e-5)
    assert torch.isfinite(a.grad).all()


@pytest.mark.parametrize("name", ["fourier_l2", "wavelet_l2", "ffl"])
def test_quadratic_loss_beyond_float32_is_inf_with_an_inf_not_nan_gradient(name: str) -> None:
    # issue #29: 2e38 against −2e38 gave a NaN value and gradient: x̂0 − x0 itself overflows.
    # The true value, mean |F[x̂0 − x0]|² = (4e38)² ≈ 1.6e77, and gradient 2(x̂0 − x0)/N = 4e38
    # both exceed float32: +inf and ±inf of the right sign
    a = torch.tensor([[[2e38, 2e38]]], requires_grad=True)
    b = torch.tensor([[[-2e38, -2e38]]], requires_grad=True)
    kw = {"ndim": 1, **({"wavelet": "haar"} if name == "wavelet_l2" else {})}
    value = build_loss(name, **kw)(a, b)
    value.sum().backward()
    assert torch.equal(value, torch.tensor([float("inf")]))
    assert torch.equal(a.grad, torch.full_like(a, float("inf")))
    assert torch.equal(b.grad, torch.full_like(b, -float("inf")))
    # halved but representable: 1e38 against −1e38, true value 4e76 (inf), gradient 2e38 (finite)
    a = torch.tensor([[[1e38, 1e38]]], requires_grad=True)
    value = build_loss(name, **kw)(a, -a.detach())
    value.sum().backward()
    assert torch.isinf(value).all()
    # (ffl: its focal weight is 1 on the only nonzero bin, DC, so all three agree)
    torch.testing.assert_close(a.grad, torch.full_like(a, 2e38), rtol=1e-6, atol=0)


def test_mrstft_with_a_huge_x0_that_needs_a_gradient() -> None:
    # issue #29: x0 = 1e36·randn requiring grad gave NaN (83.9 without grad): the autograd
    # path took |STFT| of the unscaled signal, which overflowed
    g = torch.Generator().manual_seed(0)
    x0 = 1e36 * torch.randn(1, 1, 4096, generator=g)
    x0_hat = torch.randn(1, 1, 4096, generator=g)
    loss = build_loss("mrstft")
    without = loss(x0_hat, x0)
    a, b = x0_hat.clone().requires_grad_(True), x0.clone().requires_grad_(True)
    value = loss(a, b)
    value.sum().backward()
    torch.testing.assert_close(value.detach(), without, rtol=1e-5, atol=0)
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    # both paths' gradient of x0_hat is float64's (the fast path's was 95 % off: the small
    # signal's squared magnitudes were subnormal)
    a2, a64 = x0_hat.clone().requires_grad_(True), x0_hat.double().requires_grad_(True)
    loss(a2, x0).sum().backward()
    loss(a64, x0.double()).sum().backward()
    for grad in (a.grad, a2.grad):
        torch.testing.assert_close(grad.double(), a64.grad, rtol=0, atol=1e-3 * float(a64.grad.abs().max()))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("name", NAMES)
def test_a_non_finite_sample_gets_nan_and_the_others_their_value(name: str, bad: float) -> None:
    # the documented behaviour for non-finite input (docs/reliability.md): the sample that
    # holds NaN or ±inf, in x̂0 or in x0, gets a NaN value — never a finite number that hides
    # it (the amplitude losses used to read it as 0) — and every other sample its own value
    # and a finite gradient
    shape, kw = ((3, 1, 256), {"fft_sizes": [64], "hop_sizes": [16], "win_lengths": [64]}) if name == "mrstft" \
        else ((3, 2, 16, 16), {"ndim": 2})
    loss = build_loss(name, **kw)
    g = torch.Generator().manual_seed(31)
    for which in (0, 1):
        x = [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
        x[which][1, 0, 3] = bad
        a, b = x[0].clone().requires_grad_(True), x[1].clone().requires_grad_(True)
        value = loss(a, b)
        value.sum().backward()
        assert torch.isnan(value[1]), (which, value.tolist())
        keep = torch.tensor([0, 2])
        torch.testing.assert_close(value[keep].detach(), loss(x[0][keep], x[1][keep]))
        assert torch.isfinite(a.grad[keep]).all() and torch.isfinite(b.grad[keep]).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_compiles_as_one_graph(name: str) -> None:
    # README: "torch.compile-able" — dynamo captures each loss, forward and backward, in one
    # graph (fullgraph=True raises at a graph break); the eager backend keeps it quick
    # (Inductor, which runs complex FFT arithmetic as ATen calls, in test_losses_fourier.py)
    shape, kw = ((2, 1, 2048), {}) if name == "mrstft" else ((2, 2, 16, 16), {"ndim": 2})
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=g)
    a = torch.randn(shape, generator=g).requires_grad_(True)
    loss = build_loss(name, **kw)
    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="eager", fullgraph=True)
    value = compiled(a, x0)
    value.sum().backward()
    torch.testing.assert_close(value, loss(a, x0))
