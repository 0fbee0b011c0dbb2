"""Denoising networks, all called as ``net(x, noise_label, class_labels=None, cond=None)``.

``noise_label`` is a float tensor of shape (B,) (or 0-dim, broadcast to the batch): the
DDPM timestep t, EDM's c_noise or the flow time t. The output has the shape of ``x``;
what it means (ε, x̂0, v, velocity, or the raw F_θ of EDM's preconditioning) is decided
by the diffusion formulation that wraps the network.
"""

from specreg.models.diffwave import DiffWave, DiffWaveConfig, default_upsample_strides
from specreg.models.unet import UNET_PRESETS, UNet, UNetConfig, unet_preset

__all__ = [
    "UNET_PRESETS",
    "DiffWave",
    "DiffWaveConfig",
    "UNet",
    "UNetConfig",
    "default_upsample_strides",
    "unet_preset",
]
