"""specreg: spectral regularization of diffusion models.

Fourier amplitude, amplitude+phase and wavelet L1 losses on the predicted clean sample
x̂0 (Eq. 14–16 of Chandran et al. 2026), the regularized objective (Eq. 17) for DDPM,
DDIM, EDM and flow matching, and the metrics to tell whether it helped.

    >>> import torch, specreg
    >>> reg = specreg.SpectralRegularizer("wavelet", wavelet="haar", lam=0.1)
    >>> x0 = torch.randn(4, 1, 32, 32)
    >>> reg(x0 + 0.1 * torch.randn_like(x0), x0).value.shape
    torch.Size([4])

The names below are imported on first use (PEP 562), so ``import specreg`` and the
``specreg --help`` command do not load torch; ``specreg.SpectralRegularizer`` and
``from specreg import x0_from_pred`` work as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# Public name → the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("DDPM", "EDM", "DiffusionLoss", "FlowMatching", "eps_from_pred", "karras_sigmas", "sample_dpmpp_2m",
         "sample_euler", "sample_heun", "x0_from_pred"),
        "specreg.diffusion"),
    **dict.fromkeys(
        ("FocalFrequencyLoss", "FourierAmplitudeLoss", "FourierAmplitudePhaseLoss", "MultiResolutionSTFTLoss",
         "PowerSpectrumLoss", "SpectralLoss", "WaveletLoss", "build_loss"),
        "specreg.losses"),
    **dict.fromkeys(
        ("KID", "FrechetDistance", "SpectrumMetric", "frechet_distance", "kid", "log_spectral_distance",
         "radial_power_spectrum"),
        "specreg.metrics"),
    **dict.fromkeys(
        ("AutoLambda", "RegularizerOutput", "SpectralRegularizer", "lambda_edm", "sigma_from_alpha_bar",
         "sigma_from_flow_t"),
        "specreg.regularizer"),
    "wavedec": "specreg.transforms",
    "MissingExtraError": "specreg._optional",
}

# Subpackages reachable as attributes (``specreg.losses.WaveletLoss``) without importing them first.
_SUBMODULES = frozenset(("cli", "data", "demo", "diffusion", "experiments", "integrations", "losses", "metrics",
                         "models", "regularizer", "train", "transforms"))

__all__ = sorted(_EXPORTS)

# What type checkers and IDEs see; at run time __getattr__ imports on demand. `X as X` marks each name as
# re-exported (PEP 484), since linters cannot read the computed __all__.
if TYPE_CHECKING:
    from specreg._optional import MissingExtraError as MissingExtraError
    from specreg.diffusion import (
        DDPM as DDPM,
        EDM as EDM,
        DiffusionLoss as DiffusionLoss,
        FlowMatching as FlowMatching,
        eps_from_pred as eps_from_pred,
        karras_sigmas as karras_sigmas,
        sample_dpmpp_2m as sample_dpmpp_2m,
        sample_euler as sample_euler,
        sample_heun as sample_heun,
        x0_from_pred as x0_from_pred,
    )
    from specreg.losses import (
        FocalFrequencyLoss as FocalFrequencyLoss,
        FourierAmplitudeLoss as FourierAmplitudeLoss,
        FourierAmplitudePhaseLoss as FourierAmplitudePhaseLoss,
        MultiResolutionSTFTLoss as MultiResolutionSTFTLoss,
        PowerSpectrumLoss as PowerSpectrumLoss,
        SpectralLoss as SpectralLoss,
        WaveletLoss as WaveletLoss,
        build_loss as build_loss,
    )
    from specreg.metrics import (
        KID as KID,
        FrechetDistance as FrechetDistance,
        SpectrumMetric as SpectrumMetric,
        frechet_distance as frechet_distance,
        kid as kid,
        log_spectral_distance as log_spectral_distance,
        radial_power_spectrum as radial_power_spectrum,
    )
    from specreg.regularizer import (
        AutoLambda as AutoLambda,
        RegularizerOutput as RegularizerOutput,
        SpectralRegularizer as SpectralRegularizer,
        lambda_edm as lambda_edm,
        sigma_from_alpha_bar as sigma_from_alpha_bar,
        sigma_from_flow_t as sigma_from_flow_t,
    )
    from specreg.transforms import wavedec as wavedec


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
