"""specreg: spectral regularization of diffusion models.

Fourier amplitude, amplitude+phase and wavelet L1 losses on the predicted clean sample
x̂0 (Eq. 14–16 of Chandran et al. 2026), the regularized objective (Eq. 17) for DDPM,
DDIM, EDM and flow matching, and the metrics to tell whether it helped.
"""

__version__ = "0.1.0"
