"""The one integrator family against the three sampling APIs it replaced.

tests/data/sampler_reference.npz holds the outputs of the earlier samplers (EDM's
``samplers.py``, the Euler/Heun of ``flow.py``, DDPM/DDIM of ``ddpm.py``) on the cases of
tests/_sampler_cases.py, saved before they were rewritten. Each case is compared bit for bit,
except DDPM's ancestral sampler, now DDIM with η = 1 and ε̂ consistent with x̂0 (the same
step in other arithmetic): to 1e-6 relative to max(1, |x|) (measured: 4.7e-10 on its float32
outputs, 3.1e-15 on the float64 trajectory the callback sees). DDIM's float32 outputs are
bitwise equal, its float64 trajectory to 2.2e-16, so its callback is held to 1e-6 as well.
"""

from __future__ import annotations

import numpy as np
import pytest
from _sampler_cases import REFERENCE, callbacks, cases

REF = np.load(REFERENCE)
CASES = cases()



def _tolerance(name: str) -> float:
    return 1e-6 if "/ddpm/" in name else 0.0


def _max_rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))


def test_the_reference_covers_every_case():
    assert {k for k in REF.files if not k.startswith("callback/")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sampler_equals_the_earlier_implementation(name):
    got = CASES[name]().detach().double().numpy()
    want = REF[name]
    assert got.shape == want.shape and got.dtype == want.dtype
    assert _max_rel_diff(got, want) <= _tolerance(name), name


@pytest.mark.parametrize("name", sorted(callbacks()))
def test_callbacks_see_what_they_saw_before(name):
    seen = callbacks()[name]()
    np.testing.assert_array_equal([s[0] for s in seen], REF[f"callback/{name}/index"])
    np.testing.assert_array_equal([s[1] for s in seen], REF[f"callback/{name}/level"])
    for key, k in (("x", 2), ("x0_hat", 3)):
        got = np.stack([s[k].double().numpy() for s in seen])
        assert _max_rel_diff(got, REF[f"callback/{name}/{key}"]) <= (1e-6 if name.startswith("ddpm") else 0.0)
