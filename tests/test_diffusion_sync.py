"""The training losses read no tensor value on the host (no device sync per step).

Two checks, each able to fail:
- ``torch.compile(..., fullgraph=True)`` of a loss with σ/t and ε given: Dynamo raises at
  any graph break, and ``.item()``, ``bool(tensor)``, ``float(tensor)``, ``.tolist()`` and
  Python branching on a tensor value all break the graph (before the losses skipped their
  value checks under compile and off the CPU, EDM's ``bool((sigma <= 0).any())`` did).
- a dispatch mode that counts ``aten._local_scalar_dense`` (what ``.item()``, ``bool`` and
  ``float`` of a tensor call) on the path the trainer takes: σ/t and ε drawn from a generator.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from specreg.diffusion import DDPM, EDM, FlowMatching


class _ScalarReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * (1 + 0.01 * level.to(x.dtype).reshape(-1, 1, 1, 1))


def _setup(kind: str) -> tuple[Any, Any, torch.Tensor]:
    """(formulation, model, the noise level to pass: σ for EDM, t for flow and DDPM)."""
    if kind.startswith("edm"):
        edm = EDM(kind.split("-")[1])
        return edm, edm.precondition(_Net()), torch.tensor([0.1, 1.0, 5.0, 30.0])
    if kind == "flow":
        return FlowMatching(), _Net(), torch.tensor([0.1, 0.4, 0.7, 0.95])
    return DDPM("linear", 50, "v"), _Net(), torch.tensor([0, 10, 30, 49])


KINDS = ["edm-edm", "edm-vp", "edm-ve", "flow", "ddpm"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_loss_compiles_to_one_graph(kind):
    form, model, level = _setup(kind)
    key = "sigma" if kind.startswith("edm") else "t"
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def step(x0: torch.Tensor, level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return form.loss(model, x0, **{key: level}, noise=noise).loss

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x0, level, noise), step(x0, level, noise))


@pytest.mark.parametrize("kind", KINDS)
def test_the_training_path_reads_no_scalar(kind):
    # without a regularizer: specreg.regularizer checks its σ on the host (outside compile)
    form, model, _ = _setup(kind)
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with _ScalarReads() as reads:
        out = form.loss(model, x0, generator=torch.Generator().manual_seed(3))
        out.loss.mean().backward()
    assert reads.count == 0
    assert torch.isfinite(out.loss).all()
