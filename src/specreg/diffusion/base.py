"""What every formulation's ``loss`` returns, and the one place the regularizer is applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from specreg._checks import (
    check_int,
    host_readable as host_readable,  # ddpm, edm and flow import it from here
)


@dataclass
class DiffusionLoss:
    """Per-sample parts of the training objective (Eq. 17), each of shape (B,).

    Attributes:
        loss: the total, ``diffusion + lam·spectral`` (what to reduce and backpropagate).
        diffusion: the formulation's own term (noise/v/velocity MSE, or EDM's weighted
            denoiser MSE), averaged over the non-batch dims.
        spectral: the raw spectral loss L_S(x̂0, x0) (zeros without a regularizer).
        lam: the λ used per sample, 0 where gated (zeros without a regularizer).
        sigma: the equivalent VE noise level σ of each sample (see
            :mod:`specreg.diffusion.prediction`), for logging and binning by noise level.
    """

    loss: torch.Tensor
    diffusion: torch.Tensor
    spectral: torch.Tensor
    lam: torch.Tensor
    sigma: torch.Tensor

    def mean(self) -> torch.Tensor:
        """The batch mean of the total loss (the usual scalar to call ``backward`` on)."""
        return self.loss.mean()


def mean_per_sample(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dim but the first: (B, ...) → (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def per_sample(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Shape a (B,) coefficient to broadcast against x of shape (B, ...)."""
    return coef.reshape(-1, *([1] * (x.dim() - 1)))


def combine(
    diffusion: torch.Tensor,
    x0_hat: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    regularizer: Any | None,
) -> DiffusionLoss:
    """Add the regularizer's λ·g·L_S(x̂0, x0) to the per-sample diffusion term.

    ``regularizer`` has the :class:`specreg.regularizer.SpectralRegularizer` interface:
    ``regularizer(x0_hat, x0, sigma=sigma, diffusion_loss=diffusion)`` returning an object
    with ``value``, ``spectral`` and ``lam`` of shape (B,). Without one the total *is* the
    diffusion term (same tensor), so training without regularization is bit-for-bit the
    plain objective.
    """
    sigma = sigma.detach()
    if regularizer is None:
        zeros = torch.zeros_like(diffusion)
        return DiffusionLoss(loss=diffusion, diffusion=diffusion, spectral=zeros.detach(),
                             lam=zeros.detach(), sigma=sigma)
    out = regularizer(x0_hat, x0, sigma=sigma, diffusion_loss=diffusion)
    return DiffusionLoss(loss=diffusion + out.value.to(diffusion.dtype), diffusion=diffusion,
                         spectral=out.spectral, lam=out.lam, sigma=sigma)


def _draw_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device:
    # Draw where the generator lives, then move: a CPU generator then gives the same
    # numbers whatever device the data is on (as diffusers' randn_tensor does).
    return torch.device(device) if generator is None else generator.device


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` from ``generator`` (or the global RNG)."""
    draw = _draw_device(generator, device)
    return torch.randn(tuple(shape), generator=generator, device=draw, dtype=dtype).to(device)


def rand(batch: int, generator: torch.Generator | None, device: torch.device | str,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform U[0, 1) values, shape (batch,)."""
    draw = _draw_device(generator, device)
    return torch.rand((batch,), generator=generator, device=draw, dtype=dtype).to(device)


def randint(high: int, batch: int, generator: torch.Generator | None,
            device: torch.device | str) -> torch.Tensor:
    """Uniform integers in [0, high), shape (batch,)."""
    draw = _draw_device(generator, device)
    return torch.randint(0, high, (batch,), generator=generator, device=draw).to(device)


def module_device(model: Any) -> torch.device:
    """Where a model's parameters live (CPU for plain functions and parameter-free modules)."""
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for buffer in model.buffers():
            return buffer.device
    return torch.device("cpu")


def check_data(name: str, x: torch.Tensor) -> None:
    """A batch of training data: a floating tensor with a non-empty batch dim."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {got}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected (batch, ...) with batch >= 1 "
                         "and at least one more dim")


def check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a batch to sample: at least (batch, features), all positive integers."""
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape={shape!r} is not accepted; expected a tuple of positive integers") from None
    if len(out) < 2 or any(s <= 0 for s in out):
        raise ValueError(f"shape={shape!r} is not accepted; expected (batch, ...) with at least 2 positive dims")
    return out


def check_noise(noise: torch.Tensor, x0: torch.Tensor) -> None:
    if not isinstance(noise, torch.Tensor) or noise.shape != x0.shape:
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise has shape {got} but x0 has shape {tuple(x0.shape)}; they must be equal")


def check_steps(steps: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A number of sampling steps."""
    return check_int("steps", steps, lo=minimum, hi=maximum)
