"""specreg: spectral regularization of diffusion models.

Fourier amplitude, amplitude+phase and wavelet L1 losses on the predicted clean sample
x̂0 (Eq. 14–16 of Chandran et al. 2026), the regularized objective (Eq. 17) for DDPM,
DDIM, EDM and flow matching, and the metrics to tell whether it helped.

    >>> import torch, specreg
    >>> reg = specreg.SpectralRegularizer("wavelet", wavelet="haar", lam=0.1)
    >>> x0 = torch.randn(4, 1, 32, 32)
    >>> reg(x0 + 0.1 * torch.randn_like(x0), x0).value.shape
    torch.Size([4])
"""

from specreg.diffusion import (
    DDPM,
    EDM,
    DiffusionLoss,
    FlowMatching,
    eps_from_pred,
    karras_sigmas,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    x0_from_pred,
)
from specreg.losses import (
    FocalFrequencyLoss,
    FourierAmplitudeLoss,
    FourierAmplitudePhaseLoss,
    MultiResolutionSTFTLoss,
    PowerSpectrumLoss,
    SpectralLoss,
    WaveletLoss,
    build_loss,
)
from specreg.metrics import (
    KID,
    FrechetDistance,
    SpectrumMetric,
    frechet_distance,
    kid,
    log_spectral_distance,
    radial_power_spectrum,
)
from specreg.regularizer import (
    AutoLambda,
    RegularizerOutput,
    SpectralRegularizer,
    lambda_edm,
    sigma_from_alpha_bar,
    sigma_from_flow_t,
)
from specreg.transforms import wavedec

__version__ = "0.1.0"

__all__ = [
    "DDPM",
    "EDM",
    "KID",
    "AutoLambda",
    "DiffusionLoss",
    "FlowMatching",
    "FocalFrequencyLoss",
    "FourierAmplitudeLoss",
    "FourierAmplitudePhaseLoss",
    "FrechetDistance",
    "MultiResolutionSTFTLoss",
    "PowerSpectrumLoss",
    "RegularizerOutput",
    "SpectralLoss",
    "SpectralRegularizer",
    "SpectrumMetric",
    "WaveletLoss",
    "build_loss",
    "eps_from_pred",
    "frechet_distance",
    "karras_sigmas",
    "kid",
    "lambda_edm",
    "log_spectral_distance",
    "radial_power_spectrum",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
    "sigma_from_alpha_bar",
    "sigma_from_flow_t",
    "wavedec",
    "x0_from_pred",
]
