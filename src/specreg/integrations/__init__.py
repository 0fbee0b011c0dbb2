"""Plug-ins for the training code people already run.

Each module is one small adapter in the calling convention of a trainer, with a runnable
example in ``examples/`` that the test suite runs for a few steps:

* :mod:`specreg.integrations.edm2` — :class:`~specreg.integrations.edm2.SpectralEDM2Loss`,
  an EDM2 loss class selected by name through ``loss_kwargs``, every option plain data
  that survives ``train_edm2.py``'s JSON dump (``examples/edm2_loss.py``);
* :mod:`specreg.integrations.flow_matching` — the latent flow-matching recipe of the LoRA
  trainers: x̂0 on latents under the trainer's ``target=`` (ε − x0, x0 − ε or x0) and
  ``layout=``, σ = t/(1 − t) for the gate and fade (``examples/flow_matching_lora.py``);
* :mod:`specreg.integrations.musubi` — a musubi-tuner ``compute_loss`` hook that adds
  that recipe to its LoRA trainers, set per family (the table in ``docs/own_loop.md``).

:func:`check_flow_convention` is the test of a trainer's setting on its own tensors: a
model that outputs the trainer's target must get x̂0 = x0, so a zero spectral term.

They need only the core install (torch, numpy, PyWavelets).
"""

from specreg.integrations.flow_matching import FlowConventionCheck, check_flow_convention

__all__ = ["FlowConventionCheck", "check_flow_convention"]
