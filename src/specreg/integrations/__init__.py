"""Plug-ins for the training code people already run.

Each module is one small adapter in the calling convention of a trainer, with a runnable
example in ``examples/`` that the test suite runs for a few steps:

* :mod:`specreg.integrations.edm2` — :class:`~specreg.integrations.edm2.SpectralEDM2Loss`,
  an EDM2 loss class selected by name through ``loss_kwargs`` (``examples/edm2_loss.py``);
* :mod:`specreg.integrations.flow_matching` — the latent flow-matching recipe of the LoRA
  trainers: x̂0 = x_t − t·v̂ on latents, σ = t/(1 − t) for the gate and fade
  (``examples/flow_matching_lora.py``);
* :mod:`specreg.integrations.musubi` — a musubi-tuner ``compute_loss`` hook that adds
  that recipe to any of its flow-matching trainers.

They need only the core install (torch, numpy, PyWavelets).
"""
