"""musubi-tuner: a ``compute_loss`` hook that adds the spectral term to its trainers.

musubi-tuner's ``NetworkTrainer`` (``training/trainer_base.py``) has extension points for
subclasses: ``call_dit(args, accelerator, transformer, latents, batch, noise,
noisy_model_input, timesteps, network_dtype)`` returns a ``DiTOutput(pred, target,
extra)``, and ``compute_loss(args, output, timesteps, noise_scheduler, dit_dtype,
network_dtype, global_step)`` returns ``(loss, metrics)``, the scalar to back-propagate
and a dict of floats to log. :class:`SpectralLossHook` is a mixin for any of its
flow-matching trainers::

    import specreg
    from musubi_tuner.wan_train_network import WanNetworkTrainer
    from specreg.integrations.musubi import SpectralLossHook

    class SpectralWanTrainer(SpectralLossHook, WanNetworkTrainer):
        spectral_regularizer = specreg.SpectralRegularizer("fourier_amp", lam=0.05, sigma_max=0.7 / 0.3)

Then run ``SpectralWanTrainer().train(args)`` as the trainer's own ``main`` does. The hook
keeps the trainer's loss (``super().compute_loss``) and adds the batch mean of
λ·L_S(x̂0, x0), x̂0 = x_t − t·v̂ on the latents
(:func:`specreg.integrations.flow_matching.flow_matching_term`). ``compute_loss`` does not
receive the latents, so ``call_dit`` keeps them in ``output.extra``; t comes from the
noising itself (:func:`~specreg.integrations.flow_matching.flow_time`), whatever the
trainer's timestep convention.

musubi-tuner is installed from its repository, not from PyPI, and these hooks are
"internal extension points" there; ``examples/flow_matching_lora.py`` runs the mixin on a
stand-in trainer with the same method signatures, and says so.
"""

from __future__ import annotations

from typing import Any

import torch

from specreg.integrations.flow_matching import flow_matching_term, flow_time
from specreg.regularizer import SpectralRegularizer

EXTRA_KEY = "specreg"
"""The key of ``DiTOutput.extra`` under which ``call_dit`` keeps (latents, noise, x_t)."""


class SpectralLossHook:
    """Mixin for a musubi-tuner ``NetworkTrainer``: its loss plus λ·L_S on the latent x̂0.

    Put it first among the bases and set ``spectral_regularizer`` (class or instance
    attribute) to a :class:`specreg.SpectralRegularizer`. Logged: ``loss/spectral``
    (mean L_S) and ``loss/spectral_lambda`` (mean λ·g, 0 where gated).
    """

    spectral_regularizer: SpectralRegularizer | None = None

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
        if EXTRA_KEY not in output.extra:
            raise ValueError(f"output.extra has no {EXTRA_KEY!r} entry: put SpectralLossHook before the "
                             "trainer class among the bases, so that its call_dit runs")
        latents, noise, x_t = output.extra[EXTRA_KEY]
        reg.to(output.pred.device)
        # per-sample flow-matching error, for lam=AutoLambda (the trainer's own loss is already reduced)
        mse = (output.pred.detach().float() - output.target.detach().float()).square().flatten(1).mean(1)
        term = flow_matching_term(reg, output.pred, x_t, latents, flow_time(latents, noise, x_t), diffusion_loss=mse)
        metrics = {**metrics, "loss/spectral": term.spectral.mean().item(),
                   "loss/spectral_lambda": term.lam.mean().item()}
        return loss + term.value.mean().to(loss.dtype), metrics
