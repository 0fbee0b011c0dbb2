"""Property-based fuzz of every registered loss (hypothesis).

For every name of :func:`specreg.losses.registry.loss_names` (plus every PyWavelets
discrete wavelet and boundary mode for the wavelet losses) the draws cover ndim 1–3,
sides of 1, odd, prime and power-of-two lengths, float32 and float64 (bfloat16 under
autocast for 2-D), per-argument scales 0 and 1e-30 … 1e30 (1e-300 in float64), random,
constant, sparse and identical inputs. Each case must end in one of two ways:

* a ``ValueError`` whose message starts with the argument it is about (``x0 has …``,
  ``levels=…``, ``wavelet=…``, ``patch_factor=…``, ``(n_fft, hop, win_length)=…``); or
* a value of shape (B,), ≥ 0, exactly 0 for identical arguments, finite, and a finite
  gradient with respect to both arguments.

The one non-finite result accepted is ±inf where the true number lies beyond the
dtype's range, checked by recomputing in float64: the value of a quadratic loss (ffl,
fourier_l2, wavelet_l2) at 1e20 in float32 (≈ 1e40), or a gradient that exceeds the range
somewhere (e.g. of the phase losses with respect to an argument 1e60 times smaller than
the other, ≈ 1e49; its other entries, sums of such terms, may then be ±inf as well).
NaN is never accepted.

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
QUADRATIC = {"ffl", "fourier_l2", "wavelet_l2"}  # values ~ scale², may exceed float32 at 1e20
F32_MAX = torch.finfo(torch.float32).max
SIDES = (1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 17, 31)
EXPONENTS = (-30, -20, -10, -3, 0, 3, 10, 20, 30)
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
def signals(draw: Any, name: str, ndim: int, dtype: torch.dtype, kw: dict[str, Any]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, x0): shape (B, C[, K], *spatial), each with its own scale and kind."""
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
        scale = 1e-300 if tiny else 10.0 ** draw(st.sampled_from(EXPONENTS))
        if kind == "zero":
            return np.zeros((*lead, *spatial))
        if kind == "constant":
            return np.broadcast_to(rng.normal(size=(*lead, *[1] * ndim)), (*lead, *spatial)) * scale
        x = rng.normal(size=(*lead, *spatial)) * scale
        return x * (rng.random(x.shape) < 0.1) if kind == "sparse" else x

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


def _beyond_range(got: torch.Tensor, want64: torch.Tensor, *, whole: bool = False) -> None:
    """Never NaN; infinite entries of ``got`` only where the float64 result's magnitude
    exceeds ``got``'s dtype, with its sign. With ``whole`` (a gradient) it is enough that
    the float64 result exceeds the range somewhere: each entry of a gradient is a sum of
    per-frequency terms that then exceed it too, so an entry whose terms cancel to a
    representable number cannot be resolved in the narrower dtype either."""
    bad = ~torch.isfinite(got)
    assert not torch.isnan(got).any(), "NaN"
    if bad.any():
        limit = torch.finfo(got.dtype).max
        assert got.dtype != torch.float64, "non-finite in float64"
        if whole:
            assert bool(want64.abs().max() > limit), f"non-finite where float64 gives at most {want64.abs().max()}"
            return
        assert bool((want64[bad].abs() > limit).all()), f"non-finite where float64 gives {want64[bad].tolist()}"
        assert bool((got[bad].sign() == want64[bad].sign()).all())


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
        assert x0.dtype == torch.float32  # float64 draws stay far inside their range
        v64, gh64, g064 = _value_and_grads(loss, x0_hat.double(), x0.double(), grad_x0)
        _beyond_range(value, v64)
        if not torch.isfinite(value).all():
            assert name in QUADRATIC, f"{name} overflowed: {value.tolist()}"
        for g, g64 in zip(grads, (gh64, g064)):
            _beyond_range(g, g64, whole=True)
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
    x0_hat, x0 = data.draw(signals(name, 2, torch.float32, kw), label="signals")
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
    if not torch.isfinite(value).all():  # bfloat16 has float32's range: only a quadratic overflows
        assert name in QUADRATIC
        _beyond_range(value, loss(x0_hat.double(), x0.double()))
    assert a.grad.dtype == torch.bfloat16 and not torch.isnan(a.grad).any()
    _record("bfloat16", name, "value" if torch.isfinite(value).all() else "beyond range")


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
