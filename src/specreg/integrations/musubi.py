"""musubi-tuner: a ``compute_loss`` hook that adds the spectral term to its trainers.

musubi-tuner's ``NetworkTrainer`` (``training/trainer_base.py``) has extension points for
subclasses: ``call_dit(args, accelerator, transformer, latents, batch, noise,
noisy_model_input, timesteps, network_dtype)`` returns a ``DiTOutput(pred, target,
extra)``, and ``compute_loss(args, output, timesteps, noise_scheduler, dit_dtype,
network_dtype, global_step)`` returns ``(loss, metrics)``, the scalar to back-propagate
and a dict of floats to log. :class:`SpectralLossHook` is a mixin for its LoRA trainers
(the ``*_train_network.py`` scripts), set to each family's convention::

    import specreg
    from musubi_tuner.zimage_train_network import ZImageNetworkTrainer
    from specreg.integrations.musubi import SpectralLossHook

    class SpectralZImageTrainer(SpectralLossHook, ZImageNetworkTrainer):
        spectral_regularizer = specreg.SpectralRegularizer("fourier_amp", lam=0.05, sigma_max=0.7 / 0.3)
        spectral_target = "x0_minus_noise"  # Z-Image trains on latents − noise

Then run ``SpectralZImageTrainer().train(args)`` as the trainer's own ``main`` does.
``docs/own_loop.md`` has the setting of every family, read from musubi-tuner's sources,
and the scripts it cannot serve: the full fine-tuning scripts (``hv_train.py``,
``qwen_image_train.py``, ``zimage_train.py``, ``hidream_o1_train.py``) compute their own
MSE and never call ``compute_loss``, and HiDream-O1 predicts x0 on a token sequence with
a scaled noise.

The hook keeps the trainer's loss (``super().compute_loss``) and adds the batch mean of
λ·L_S(x̂0, x0) on the latents
(:func:`specreg.integrations.flow_matching.flow_matching_term`). ``compute_loss`` does not
receive the latents, so ``call_dit`` keeps them in ``output.extra``; t comes from the
noising itself (:func:`~specreg.integrations.flow_matching.flow_time`), whatever the
trainer's timestep convention. On its first step the hook runs
:func:`~specreg.integrations.flow_matching.check_flow_convention` on the trainer's own
target and stops with a ValueError naming the setting that fits, if ``spectral_target``
does not.

musubi-tuner is installed from its repository, not from PyPI, and these hooks are
"internal extension points" there; ``examples/flow_matching_lora.py`` runs the mixin on a
stand-in trainer with the same method signatures, and says so.
"""

from __future__ import annotations

from typing import Any

import torch

from specreg.integrations.flow_matching import (
    FLOW_TARGETS,
    LAYOUTS,
    check_flow_convention,
    flow_matching_term,
    flow_time,
)
from specreg.regularizer import SpectralRegularizer

EXTRA_KEY = "specreg"
"""The key of ``DiTOutput.extra`` under which ``call_dit`` keeps (latents, noise, x_t)."""


class SpectralLossHook:
    """Mixin for a musubi-tuner ``NetworkTrainer``: its loss plus λ·L_S on the latent x̂0.

    Put it first among the bases and set, as class or instance attributes:

    * ``spectral_regularizer``: a :class:`specreg.SpectralRegularizer`;
    * ``spectral_target``: what the trainer's ``call_dit`` puts in ``DiTOutput.target``:
      ``"noise_minus_x0"`` (noise − latents, the default: Wan, HunyuanVideo, FramePack,
      FLUX, Qwen-Image, Krea2, Kandinsky5), ``"x0_minus_noise"`` (latents − noise: Z-Image,
      Ideogram4) or ``"x0"`` (the latents);
    * ``spectral_layout``: the order of ``DiTOutput.pred``: ``"channels_first"`` (as the
      latents, the default) or ``"frames_first"`` (B, F, C, H, W: Kandinsky5, layered
      Qwen-Image). The latents musubi-tuner hands ``call_dit`` are channels-first in every
      family; the hook brings them to the prediction's order (an image's (B, C, H, W) to
      (B, 1, C, H, W)).

    Logged: ``loss/spectral`` (mean L_S) and ``loss/spectral_lambda`` (mean λ·g, 0 where
    gated).
    """

    spectral_regularizer: SpectralRegularizer | None = None
    spectral_target: str = "noise_minus_x0"
    spectral_layout: str = "channels_first"

    def call_dit(self, args: Any, accelerator: Any, transformer: Any, latents: torch.Tensor, batch: Any,
                 noise: torch.Tensor, noisy_model_input: torch.Tensor, timesteps: torch.Tensor,
                 network_dtype: torch.dtype, **kwargs: Any) -> Any:
        output = super().call_dit(args, accelerator, transformer, latents, batch, noise,  # type: ignore[misc]
                                  noisy_model_input, timesteps, network_dtype, **kwargs)
        output.extra[EXTRA_KEY] = (latents, noise, noisy_model_input)
        return output

    def compute_loss(self, args: Any, output: Any, timesteps: torch.Tensor, noise_scheduler: Any,
                     dit_dtype: torch.dtype, network_dtype: torch.dtype,
                     global_step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = super().compute_loss(args, output, timesteps, noise_scheduler,  # type: ignore[misc]
                                             dit_dtype, network_dtype, global_step)
        reg = self.spectral_regularizer
        if not isinstance(reg, SpectralRegularizer):
            raise ValueError(f"spectral_regularizer={reg!r} is not accepted; set it to a "
                             "specreg.SpectralRegularizer on the trainer class or instance")
        target, layout = self.spectral_target, self.spectral_layout
        if target not in FLOW_TARGETS:
            raise ValueError(f"spectral_target={target!r} is not accepted; expected one of {list(FLOW_TARGETS)}")
        if layout not in LAYOUTS:
            raise ValueError(f"spectral_layout={layout!r} is not accepted; expected one of {list(LAYOUTS)}")
        if EXTRA_KEY not in output.extra:
            raise ValueError(f"output.extra has no {EXTRA_KEY!r} entry: put SpectralLossHook before the "
                             "trainer class among the bases, so that its call_dit runs")
        latents, noise, x_t = (_in_layout(v, layout) for v in output.extra[EXTRA_KEY])
        if not (output.pred.shape == output.target.shape == latents.shape == x_t.shape):
            raise ValueError(f"spectral_layout={layout!r}: DiTOutput.pred {tuple(output.pred.shape)} and "
                             f"target {tuple(output.target.shape)} do not match the latents in that order "
                             f"{tuple(latents.shape)}; token sequences (HiDream-O1) and targets that drop "
                             "frames are not served")
        if not getattr(self, "_specreg_convention_checked", False):
            self._check_convention(output.target, x_t, latents, noise)
            self._specreg_convention_checked = True
        reg.to(output.pred.device)
        # per-sample flow-matching error, for lam=AutoLambda (the trainer's own loss is already reduced)
        mse = (output.pred.detach().float() - output.target.detach().float()).square().flatten(1).mean(1)
        term = flow_matching_term(reg, output.pred, x_t, latents, flow_time(latents, noise, x_t), target=target,
                                  layout=layout, diffusion_loss=mse)
        metrics = {**metrics, "loss/spectral": term.spectral.mean().item(),
                   "loss/spectral_lambda": term.lam.mean().item()}
        return loss + term.value.mean().to(loss.dtype), metrics

    def _check_convention(self, trainer_target: torch.Tensor, x_t: torch.Tensor, latents: torch.Tensor,
                          noise: torch.Tensor) -> None:
        """A model that outputs the trainer's target must get x̂0 = x0 (a zero spectral term)."""
        layout = self.spectral_layout
        check = check_flow_convention(trainer_target, x_t, latents, noise, target=self.spectral_target,
                                      layout=layout)
        if check.ok:
            return
        fits = [t for t in FLOW_TARGETS if check_flow_convention(trainer_target, x_t, latents, noise, target=t,
                                                                 layout=layout).ok]
        hint = (f"set spectral_target={fits[0]!r}" if fits else
                "no spectral_target fits: the noising is not x_t = (1 − t)·x0 + t·ε")
        raise ValueError(f"spectral_target={self.spectral_target!r} is not this trainer's convention: a model "
                         f"that outputs DiTOutput.target gets max|x̂0 − x0| = {check.max_error:.3g}; {hint}")


def _in_layout(latents: torch.Tensor, layout: str) -> torch.Tensor:
    """musubi-tuner's channels-first latents, (B, C, H, W) or (B, C, F, H, W), in ``layout``."""
    if layout == "channels_first":
        return latents
    return latents.unsqueeze(1) if latents.ndim == 4 else latents.transpose(1, 2)
