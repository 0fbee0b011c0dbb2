"""Differentiable N-D transforms (no losses here): Fourier, wavelet, STFT."""

from specreg.transforms.fourier import radial_average, radial_bins, rfftn
from specreg.transforms.stft import stft, stft_magnitude
from specreg.transforms.wavelet import wavedec

__all__ = ["radial_average", "radial_bins", "rfftn", "stft", "stft_magnitude", "wavedec"]
