r"""The latent flow-matching recipe of the LoRA trainers, as one function.

Rectified-flow models (SD3, Flux, Wan, HunyuanVideo, Qwen-Image, …) and the trainers
that fine-tune them (musubi-tuner, ai-toolkit, sd-scripts, the Anima trainers) noise the
VAE latents as x_t = (1 − t)·x0 + t·ε with t ∈ [0, 1] and train the network to predict
v = ε − x0. The spectral losses those trainers have added all act on the same
estimate of the clean latent, one Euler step to t = 0:

    x̂0 = x_t − t·v̂,   σ = t/(1 − t),

and they switch the term off at high noise ("only when t < 0.7") or fade it with a
sigmoid in t. Both are options of :class:`specreg.SpectralRegularizer` in σ units: the
gate ``sigma_max = t_max/(1 − t_max)`` (t < 0.7 is ``sigma_max=0.7 / 0.3``) and the fade
``fade_sigma``/``fade_width`` (a logistic in ln σ, which is logit(t): a fade centred on
t_c is ``fade_sigma = t_c/(1 − t_c)``, its width measured in logit(t)).

:func:`flow_matching_term` is that recipe; :func:`flow_time` recovers t from the noising
itself for trainers whose hooks receive only their own timestep convention.
``examples/flow_matching_lora.py`` runs it in a musubi-tuner-style trainer
(:mod:`specreg.integrations.musubi`).
"""

from __future__ import annotations

import torch

from specreg.diffusion.prediction import x0_from_pred
from specreg.regularizer import RegularizerOutput, SpectralRegularizer, sigma_from_flow_t


def flow_matching_term(regularizer: SpectralRegularizer, v_pred: torch.Tensor, x_t: torch.Tensor,
                       x0: torch.Tensor, t: torch.Tensor, *,
                       diffusion_loss: torch.Tensor | None = None) -> RegularizerOutput:
    """λ·g(σ)·L_S(x̂0, x0) per sample for a velocity-predicting flow model.

    Args:
        regularizer: the spectral term, e.g.
            ``SpectralRegularizer("fourier_amp", lam=0.05, sigma_max=0.7 / 0.3)``.
        v_pred: the network output v̂ (B, C, H, W), or (B, C, F, H, W) for video latents,
            whose frames then count as channels of a 2-D loss.
        x_t: the noisy latents the network saw, x_t = (1 − t)·x0 + t·ε.
        x0: the clean latents.
        t: flow time in [0, 1] per sample (B,) or a number, the t of x_t above; not the
            trainer's 1000-scaled timestep (see :func:`flow_time`).
        diffusion_loss: the per-sample flow-matching loss (B,), needed only with
            ``lam=AutoLambda``.

    Returns:
        The :class:`~specreg.RegularizerOutput`; add ``.value.mean()`` to a mean loss, or
        ``.value`` to a per-sample one. Computed in float32 (or float64) whatever the
        network's dtype.
    """
    t = torch.as_tensor(t, device=v_pred.device).reshape(-1).expand(v_pred.shape[0])
    x0_hat = x0_from_pred(v_pred, x_t, prediction="flow", t=t.to(torch.float32))
    return regularizer(x0_hat, x0.to(x0_hat.dtype), sigma_from_flow_t(t.to(x0_hat.dtype)),
                       diffusion_loss=diffusion_loss)


def flow_time(x0: torch.Tensor, noise: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """The flow time t (B,) of x_t = (1 − t)·x0 + t·ε, by least squares over each sample.

    x_t − x0 = t·(ε − x0), so t = ⟨x_t − x0, ε − x0⟩ / ‖ε − x0‖². Trainers disagree on how
    they scale timesteps (1000·t, 1000·t + 1, a shifted scheduler's table); the noisy
    latents say exactly which t was used. Computed in float32, clamped to [0, 1]; exact
    up to rounding (about 1e-3 for bfloat16 latents of a few thousand elements).
    """
    x0, noise, x_t = (v.detach().to(torch.float32).flatten(1) for v in (x0, noise, x_t))
    direction = noise - x0
    t = ((x_t - x0) * direction).sum(1) / direction.square().sum(1).clamp_min(torch.finfo(torch.float32).tiny)
    return t.clamp(0.0, 1.0)
