r"""The latent flow-matching recipe of the LoRA trainers, as one function.

Rectified-flow models (SD3, Flux, Wan, HunyuanVideo, Qwen-Image, Z-Image, …) and the
trainers that fine-tune them (musubi-tuner, ai-toolkit, sd-scripts, the Anima trainers)
noise the VAE latents as x_t = (1 − t)·x0 + t·ε with t ∈ [0, 1]. They disagree on what
the network is trained to output, so the trainer's convention is an argument
(``target=``), and with it the clean-latent estimate the spectral losses act on:

==================== ============ =====================================================
``target``           trained on   x̂0
==================== ============ =====================================================
``"noise_minus_x0"`` ε − x0       x_t − t·v̂  (Wan, HunyuanVideo, FLUX, Qwen-Image, SD3)
``"x0_minus_noise"`` x0 − ε       x_t + t·v̂  (musubi-tuner's Z-Image and Ideogram4)
``"x0"``             x0           the output itself (x0-prediction)
==================== ============ =====================================================

Each row is exact: a network that outputs the trainer's target gives x̂0 = x0
(:func:`check_flow_convention` tests that on a trainer's own tensors). The noise level is
σ = t/(1 − t) for the gate and fade of :class:`specreg.SpectralRegularizer`: the trainers'
"only when t < 0.7" is ``sigma_max = 0.7 / 0.3``, and a fade centred on t_c is
``fade_sigma = t_c/(1 − t_c)``, its width measured in logit(t) = ln σ.

Video latents come in two layouts (``layout=``): ``"channels_first"`` (B, C, F, H, W),
the latents of every musubi-tuner family, and ``"frames_first"`` (B, F, C, H, W), the
output of its Kandinsky5 and layered Qwen-Image trainers. The term moves frames-first
tensors to channels-first, so a 3-D loss sees (F, H, W) and a 2-D loss treats the frames
as channels either way.

:func:`flow_matching_term` is the recipe; :func:`flow_time` recovers t from the noising
itself for trainers whose hooks receive only their own timestep convention.
``examples/flow_matching_lora.py`` runs it in a musubi-tuner-style trainer
(:mod:`specreg.integrations.musubi`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specreg.diffusion.prediction import x0_from_pred
from specreg.regularizer import RegularizerOutput, SpectralRegularizer, sigma_from_flow_t

FLOW_TARGETS = ("noise_minus_x0", "x0_minus_noise", "x0")
"""What a flow-matching network is trained to output (``target=``)."""

LAYOUTS = ("channels_first", "frames_first")
"""(B, C, F, H, W) or (B, F, C, H, W) for video latents (``layout=``)."""


def _check(target: str, layout: str) -> None:
    if target not in FLOW_TARGETS:
        raise ValueError(f"target={target!r} is not accepted; expected one of {list(FLOW_TARGETS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not accepted; expected one of {list(LAYOUTS)}")


def channels_first(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` in (B, C, …) order: frames-first (B, F, C, H, W) becomes (B, C, F, H, W)."""
    if layout == "channels_first":
        return x
    if x.ndim != 5:
        raise ValueError(f"layout='frames_first' needs (B, F, C, H, W) tensors; got shape {tuple(x.shape)}")
    return x.transpose(1, 2)


def flow_x0_hat(pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, target: str) -> torch.Tensor:
    r"""x̂0 from the network output under the trainer's ``target`` (float32 or float64).

    From x_t = (1 − t)·x0 + t·ε: x0 = x_t − t·(ε − x0) = x_t + t·(x0 − ε). ``t`` is (B,).
    """
    if target == "x0":
        return x0_from_pred(pred, x_t, prediction="x0")
    v = pred if target == "noise_minus_x0" else -pred
    return x0_from_pred(v, x_t, prediction="flow", t=t)


def flow_matching_term(regularizer: SpectralRegularizer, pred: torch.Tensor, x_t: torch.Tensor,
                       x0: torch.Tensor, t: torch.Tensor | float, *, target: str = "noise_minus_x0",
                       layout: str = "channels_first",
                       diffusion_loss: torch.Tensor | None = None) -> RegularizerOutput:
    """λ·g(σ)·L_S(x̂0, x0) per sample for a flow-matching model (σ = t/(1 − t)).

    Args:
        regularizer: the spectral term, e.g.
            ``SpectralRegularizer("fourier_amp", lam=0.05, sigma_max=0.7 / 0.3)``.
        pred: the network output (B, C, H, W), or video (B, C, F, H, W) / (B, F, C, H, W).
        x_t: the noisy latents the network saw, x_t = (1 − t)·x0 + t·ε.
        x0: the clean latents.
        t: flow time in [0, 1] per sample (B,) or a number, the t of x_t above; not the
            trainer's 1000-scaled timestep (see :func:`flow_time`).
        target: what the network is trained to output: ``"noise_minus_x0"`` (ε − x0, the
            default), ``"x0_minus_noise"`` (x0 − ε) or ``"x0"`` (see the module table).
        layout: ``"channels_first"`` or ``"frames_first"``, the order of ``pred``,
            ``x_t`` and ``x0`` alike (they must have the same shape).
        diffusion_loss: the per-sample flow-matching loss (B,), needed only with
            ``lam=AutoLambda``.

    Returns:
        The :class:`~specreg.RegularizerOutput`; add ``.value.mean()`` to a mean loss, or
        ``.value`` to a per-sample one. Computed in float32 (or float64) whatever the
        network's dtype.
    """
    _check(target, layout)
    pred, x_t, x0 = (channels_first(v, layout) for v in (pred, x_t, x0))
    t = torch.as_tensor(t, device=pred.device).reshape(-1).expand(pred.shape[0])
    x0_hat = flow_x0_hat(pred, x_t, t.to(torch.float32), target)
    return regularizer(x0_hat, x0.to(x0_hat.dtype), sigma_from_flow_t(t.to(x0_hat.dtype)),
                       diffusion_loss=diffusion_loss)


def flow_time(x0: torch.Tensor, noise: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """The flow time t (B,) of x_t = (1 − t)·x0 + t·ε, by least squares over each sample.

    x_t − x0 = t·(ε − x0), so t = ⟨x_t − x0, ε − x0⟩ / ‖ε − x0‖². Trainers disagree on how
    they scale timesteps (1000·t, 1000·t + 1, a shifted scheduler's table); the noisy
    latents say exactly which t was used. Computed in float32, clamped to [0, 1]; exact
    up to rounding (about 1e-3 for bfloat16 latents of a few thousand elements). The
    three tensors share one layout, whichever it is.
    """
    x0, noise, x_t = (v.detach().to(torch.float32).flatten(1) for v in (x0, noise, x_t))
    direction = noise - x0
    t = ((x_t - x0) * direction).sum(1) / direction.square().sum(1).clamp_min(torch.finfo(torch.float32).tiny)
    return t.clamp(0.0, 1.0)


@dataclass(frozen=True)
class FlowConventionCheck:
    """What :func:`check_flow_convention` found for a model that outputs the trainer's target.

    Attributes:
        max_error: max |x̂0 − x0| over the batch, in latent units (0 to rounding when the
            setting is right).
        target_error: max |trainer target − the setting's target (ε − x0, x0 − ε or x0)|;
            unlike ``max_error`` it does not shrink with t.
        noising_error: max |x_t − (1 − t)·x0 − t·ε| with t from :func:`flow_time`: not
            0 where the trainer scales or clips its noise.
        scale: the larger of max |x0| and max |ε|, the yardstick of the three errors.
        t: the flow time of each sample (B,).
        ok: every error ≤ rtol·scale: x̂0 = x0, so every spectral loss of a perfect model
            is zero up to the same rounding.
    """

    max_error: float
    target_error: float
    noising_error: float
    scale: float
    t: torch.Tensor
    ok: bool


def check_flow_convention(trainer_target: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor,
                          noise: torch.Tensor, *, target: str, layout: str = "channels_first",
                          rtol: float = 1e-2) -> FlowConventionCheck:
    r"""The "a perfect model gives zero" test of a trainer's convention, on its own tensors.

    Take one batch from the trainer: the clean latents x0, the noise ε, the noisy input
    x_t it built from them and the target it trains the network on (musubi-tuner's
    ``DiTOutput.target``). Fed that target as the prediction, the x̂0 of ``target=`` must
    be x0, so that every spectral term of a perfect model is zero. Where it is not,
    ``target=`` or ``layout=`` is wrong for this trainer, or its noising is not
    x_t = (1 − t)·x0 + t·ε (a scaled or clipped noise, as HiDream-O1's), which no setting
    serves. ``rtol`` (relative to the larger of max |x0| and max |ε|) covers bfloat16
    rounding.

    Args:
        trainer_target: the trainer's target tensor, in the layout ``layout``.
        x_t, x0, noise: the noisy input, clean latents and noise, in the same layout and
            shape as ``trainer_target``.
        target, layout: the setting under test (see :func:`flow_matching_term`).
        rtol: the accepted error relative to the larger of max |x0| and max |ε|.

    Returns:
        A :class:`FlowConventionCheck`; assert ``.ok`` in a test of your trainer.

    Example:
        >>> import torch
        >>> x0, eps = torch.randn(2, 2, 4, 8, 8)
        >>> t = torch.tensor([0.3, 0.8]).view(-1, 1, 1, 1)
        >>> x_t = (1 - t) * x0 + t * eps
        >>> check_flow_convention(x0 - eps, x_t, x0, eps, target="x0_minus_noise").ok
        True
        >>> check_flow_convention(x0 - eps, x_t, x0, eps, target="noise_minus_x0").ok
        False
    """
    _check(target, layout)
    shapes = {tuple(v.shape) for v in (trainer_target, x_t, x0, noise)}
    if len(shapes) != 1:
        raise ValueError(f"trainer_target, x_t, x0 and noise must share one shape; got {sorted(shapes)}")
    trainer_target, x_t, x0, noise = (channels_first(v.detach(), layout).to(torch.float32)
                                      for v in (trainer_target, x_t, x0, noise))
    t = flow_time(x0, noise, x_t)
    t_b = t.view(-1, *([1] * (x0.ndim - 1)))
    expected = {"noise_minus_x0": noise - x0, "x0_minus_noise": x0 - noise, "x0": x0}[target]
    max_error = float((flow_x0_hat(trainer_target, x_t, t, target) - x0).abs().max())
    target_error = float((trainer_target - expected).abs().max())
    noising_error = float((x_t - (1 - t_b) * x0 - t_b * noise).abs().max())
    scale = max(float(x0.abs().max()), float(noise.abs().max()))
    ok = max(max_error, target_error, noising_error) <= rtol * scale
    return FlowConventionCheck(max_error=max_error, target_error=target_error, noising_error=noising_error,
                               scale=scale, t=t, ok=ok)
