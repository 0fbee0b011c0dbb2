"""Spectral losses on (x0_hat, x0): Eq. 14–16 of the paper and their peers.

Every loss maps (B, C, *spatial) pairs to per-sample values (B,) by default.
"""

from specreg.losses.base import SpectralLoss
from specreg.losses.fourier import (
    FocalFrequencyLoss,
    FourierAmplitudeLoss,
    FourierAmplitudePhaseLoss,
    PowerSpectrumLoss,
)
from specreg.losses.quadratic import FourierL2Loss, WaveletL2Loss
from specreg.losses.registry import LOSSES, build_loss, loss_names
from specreg.losses.stft import MultiResolutionSTFTLoss
from specreg.losses.wavelet import WaveletLoss

__all__ = [
    "LOSSES",
    "MultiResolutionSTFTLoss",
    "FocalFrequencyLoss",
    "FourierAmplitudeLoss",
    "FourierAmplitudePhaseLoss",
    "FourierL2Loss",
    "PowerSpectrumLoss",
    "SpectralLoss",
    "WaveletL2Loss",
    "WaveletLoss",
    "build_loss",
    "loss_names",
]
