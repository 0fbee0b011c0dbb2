"""Sampling's network calls split into chunks (``specreg.train.runtime.ChunkedForward``):
the same outputs as one call, the rows of every batched argument split and the rest passed
whole, the "auto" size from the largest activation, and ``generate`` drawing the same
samples with any chunk, for a deterministic and a stochastic sampler."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from specreg.train.build import build_formulation, build_model, build_net, generate
from specreg.train.config import load_config
from specreg.train.runtime import CPU_ACTIVATION_BUDGET, ChunkedForward, forward_chunk, largest_activation


class Recorder(nn.Module):
    """y = x · w + bias(label) + shift; records the batch of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.calls: list[int] = []

    def forward(self, x, sigma, label=None, shift=0.0):
        self.calls.append(x.shape[0])
        y = x * self.w + sigma.reshape(-1, *([1] * (x.ndim - 1))) + shift
        return y if label is None else y + label.reshape(-1, 1)


def test_chunks_split_batched_arguments_and_pass_the_rest_whole():
    net = Recorder()
    x, sigma, label = torch.randn(10, 3), torch.rand(10), torch.arange(10.0)
    expected = net(x, sigma, label=label, shift=torch.tensor(0.5))
    net.calls.clear()
    got = ChunkedForward(net, 4)(x, sigma, label=label, shift=torch.tensor(0.5))
    assert net.calls == [4, 4, 2]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    net.calls.clear()
    ChunkedForward(net, 16)(x, sigma)  # fewer items than a chunk: one call
    assert net.calls == [10]


def test_auto_chunk_holds_the_largest_activation_to_the_budget():
    net = nn.Sequential(nn.Linear(4, 1000), nn.ReLU(), nn.Linear(1000, 2))
    assert largest_activation(net, torch.randn(1, 4)) == 1000
    assert largest_activation(net, torch.randn(3, 4)) == 3000
    chunked = ChunkedForward(net)
    x = torch.randn(5000, 4)
    torch.testing.assert_close(chunked(x), net(x))
    assert chunked.chunk == CPU_ACTIVATION_BUDGET // 1000
    class Ones(nn.Module):  # one item's activation over the budget: chunks of one item
        def forward(self, x):
            return x.new_ones(x.shape[0], CPU_ACTIVATION_BUDGET + 1)

    big = ChunkedForward(nn.Sequential(Ones(), nn.Flatten(0, 0)))
    assert big(torch.randn(3, 4)).shape == (3, CPU_ACTIVATION_BUDGET + 1) and big.chunk == 1
    wide = ChunkedForward(nn.Linear(4, 8))
    wide(torch.randn(2, 4))
    assert wide.chunk == CPU_ACTIVATION_BUDGET // 8


def test_the_device_rule_and_bad_chunks():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert forward_chunk(torch.device("cpu")) == "auto"
        torch.set_num_threads(2)
        assert forward_chunk(torch.device("cpu")) is None  # threads share each call instead
    finally:
        torch.set_num_threads(old)
    assert forward_chunk(torch.device("meta")) is None  # an accelerator takes the whole batch
    for bad in (0, -1, 2.5, True, "big"):
        with pytest.raises(ValueError, match=rf"chunk={bad!r} is not accepted; expected a positive integer or 'auto'"):
            ChunkedForward(nn.Identity(), bad)


@pytest.mark.parametrize("base,overrides", [
    ("demo", ["data.size=16", "model.model_channels=8", "model.channel_mult=[1, 2]", "sample.steps=4"]),
    ("checkerboard", ["sample.steps=5", "sample.eta=1.0"]),  # DDIM η = 1: fresh noise at every step
    ("demo", ["data.size=16", "model.model_channels=8", "model.channel_mult=[1, 2]", "sample.steps=4",
              "sample.churn=10"]),  # EDM with churn: fresh noise at every step
])
def test_generate_draws_the_same_samples_with_any_chunk(base, overrides):
    cfg = load_config(base, overrides)
    formulation = build_formulation(cfg.diffusion)
    model = build_model(formulation, build_net(cfg))
    draws = {chunk: generate(cfg, formulation, model, 24, batch_size=12, forward_chunk=chunk,
                             generator=torch.Generator().manual_seed(3))
             for chunk in (12, 5, 1, "auto")}
    for chunk, x in draws.items():
        torch.testing.assert_close(x, draws[12], rtol=1e-5, atol=1e-6, msg=f"forward_chunk={chunk}")
