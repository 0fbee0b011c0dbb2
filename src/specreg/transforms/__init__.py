"""Differentiable N-D transforms (no losses here): Fourier, wavelet, STFT."""

from specreg.transforms.fourier import radial_average, radial_bins, rfftn

__all__ = ["radial_average", "radial_bins", "rfftn"]
