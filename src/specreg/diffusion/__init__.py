"""Diffusion formulations (DDPM/DDIM, EDM with VP/VE/EDM preconditioning, flow matching),
the predicted clean sample x̂0 for every parameterization, and samplers.

Every formulation's ``loss(model, x0, regularizer=None, ...)`` returns a
:class:`DiffusionLoss` of per-sample (B,) tensors; with a
:class:`specreg.regularizer.SpectralRegularizer` the spectral term λ·L_S(x̂0, x0) of
Eq. 17 is added, with x̂0 always from :func:`x0_from_pred`.
"""

from specreg.diffusion.base import DiffusionLoss
from specreg.diffusion.ddpm import DDPM, ddim_step, ddpm_step, inference_timesteps, make_betas
from specreg.diffusion.edm import EDM, Denoiser
from specreg.diffusion.flow import FlowMatching, sample_flow, shift_time
from specreg.diffusion.prediction import (
    alpha_bar_from_sigma,
    eps_from_pred,
    flow_t_from_sigma,
    sigma_from_alpha_bar,
    sigma_from_flow_t,
    x0_from_pred,
)
from specreg.diffusion.samplers import (
    karras_sigmas,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    ve_sigmas,
    vp_sigmas,
)

__all__ = [
    "DDPM",
    "EDM",
    "Denoiser",
    "DiffusionLoss",
    "FlowMatching",
    "alpha_bar_from_sigma",
    "ddim_step",
    "ddpm_step",
    "eps_from_pred",
    "flow_t_from_sigma",
    "inference_timesteps",
    "karras_sigmas",
    "make_betas",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_flow",
    "sample_heun",
    "shift_time",
    "sigma_from_alpha_bar",
    "sigma_from_flow_t",
    "ve_sigmas",
    "vp_sigmas",
    "x0_from_pred",
]
