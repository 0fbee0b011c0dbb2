"""N-dimensional real DFT helpers: orthonormal spectrum, Hermitian weights, safe polar parts,
radial binning.

Conventions (used by every Fourier loss and metric in the project):

* The DFT is taken over the last ``ndim`` dims with ``norm="ortho"``:
  F[x](ω) = N^{-1/2} Σ_n x[n] e^{-2πi⟨ω, n/N⟩}. By Parseval ‖F[x]‖₂ = ‖x‖₂, so amplitudes
  are in the same units as pixel (or sample) values and do not grow with the size.
* We compute ``rfftn`` (half the work) and weight each stored bin by how many bins of the
  full spectrum it stands for (1 or 2, :func:`hermitian_weights`). For real input the
  full spectrum is conjugate-symmetric, so any quantity that depends on |F| or on
  |φ| symmetrically gives, weighted this way, exactly the full-``fftn`` sum or mean.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from specreg._checks import check_ndim


def spatial_dims(ndim: int) -> tuple[int, ...]:
    """The last ``ndim`` dims, as negative indices."""
    return tuple(range(-ndim, 0))


def rfftn(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Orthonormal real DFT over the last ``ndim`` dims (complex, last dim halved)."""
    return torch.fft.rfftn(x, dim=spatial_dims(check_ndim(ndim)), norm="ortho")


def hermitian_weights(shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """Weights (n_last//2 + 1,) of the ``rfftn`` bins along the last dim.

    A bin whose mirror −ω is not stored (0 < k < n/2) counts twice; the DC bin and,
    for even n, the Nyquist bin count once. ``shape`` is the spatial shape of the signal.
    Σ weights · f(rfft bin) = Σ_full f(bin) for any f with f(F(−ω)) = f(F(ω)).
    """
    n_last = int(shape[-1])
    w = torch.full((n_last // 2 + 1,), 2.0, dtype=dtype, device=device)
    w[0] = 1.0
    if n_last % 2 == 0:
        w[-1] = 1.0
    return w


def full_mean(values: torch.Tensor, spatial_shape: tuple[int, ...], ndim: int) -> torch.Tensor:
    """Mean over the full spectrum, given per-bin ``values`` on the ``rfftn`` grid.

    ``values`` has shape (B, ..., *rfft_shape); the mean is over every dim but the first,
    so the result has shape (B,). Exact when values are mirror-symmetric (see module doc).
    """
    w = hermitian_weights(spatial_shape, dtype=values.dtype, device=values.device)
    n_full = math.prod(values.shape[1:-1]) * spatial_shape[-1]
    return (values * w).flatten(1).sum(1) / n_full


def safe_amplitude(z: torch.Tensor) -> torch.Tensor:
    """|z| computed with ``hypot`` (no overflow of re² + im² at 1e20, no underflow at 1e-20).

    ``torch.abs`` of a complex tensor already uses hypot, and its gradient at z = 0 is
    0 (sgn(0) = 0), so this is finite everywhere.
    """
    return z.abs()


def safe_unit(z: torch.Tensor) -> torch.Tensor:
    """The phasor e^{iφ} = z/|z|, defined as 0 where z = 0, with finite gradients there."""
    a = z.abs()
    return z / torch.where(a > 0, a, torch.ones_like(a))


def safe_angle(z: torch.Tensor) -> torch.Tensor:
    """The phase φ = atan2(Im z, Re z) in (−π, π], 0 where z = 0, with finite gradients.

    ``torch.angle`` has a 0/0 gradient at z = 0 and its atan2 gradient divides by
    re² + im², which underflows to 0 for tiny z; normalising to the unit circle first
    keeps every gradient finite.
    """
    u = safe_unit(z)
    nonzero = z.abs() > 0
    re = torch.where(nonzero, u.real, torch.ones_like(u.real))
    im = torch.where(nonzero, u.imag, torch.zeros_like(u.imag))
    return torch.atan2(im, re)


@lru_cache(maxsize=64)
def _radial_index_cpu(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ndim = len(shape)
    n_min = min(shape)
    grids = []
    for i, n in enumerate(shape):
        f = torch.fft.rfftfreq(n, dtype=torch.float64) if i == ndim - 1 else torch.fft.fftfreq(n, dtype=torch.float64)
        grids.append(f * n_min)  # in units of the coarsest bin width 1/n_min
    mesh = torch.meshgrid(*grids, indexing="ij")
    radius = torch.sqrt(sum(g**2 for g in mesh))
    index = torch.round(radius).long().flatten()
    n_bins = n_min // 2 + 1
    index = torch.where(index < n_bins, index, torch.full_like(index, n_bins))  # corners → overflow bin
    weights = hermitian_weights(shape, dtype=torch.float64).expand(*shape[:-1], -1).flatten()
    counts = torch.zeros(n_bins + 1, dtype=torch.float64).index_add_(0, index, weights)
    freqs = torch.arange(n_bins, dtype=torch.float64) / n_min
    return index, counts, freqs


@lru_cache(maxsize=64)
def _radial_frequency_cpu(shape: tuple[int, ...]) -> torch.Tensor:
    grids = [torch.fft.rfftfreq(n, dtype=torch.float64) if i == len(shape) - 1
             else torch.fft.fftfreq(n, dtype=torch.float64) for i, n in enumerate(shape)]
    return torch.sqrt(sum(g**2 for g in torch.meshgrid(*grids, indexing="ij")))


def radial_frequency(spatial_shape: tuple[int, ...]) -> torch.Tensor:
    """|f| of every ``rfftn`` bin of a signal of ``spatial_shape``, in cycles per sample
    (float64, CPU, the rfft grid's shape): 0 at DC, 0.5 at the Nyquist frequency of an
    axis, up to 0.5·√ndim in the corners."""
    return _radial_frequency_cpu(tuple(int(s) for s in spatial_shape))


def radial_bins(spatial_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Radial binning of the ``rfftn`` grid of a signal of ``spatial_shape``.

    Returns ``(index, counts, freqs)``: ``index`` (flattened rfft bins → radial bin; bins
    beyond the Nyquist radius of the smallest side go to an extra overflow bin),
    ``counts`` (full-spectrum bins per radial bin, overflow last) and ``freqs`` (bin
    centres in cycles per sample, 0 … 0.5). Bin width is 1/min(spatial_shape).
    """
    return _radial_index_cpu(tuple(int(s) for s in spatial_shape))


def radial_average(values: torch.Tensor, spatial_shape: tuple[int, ...]) -> torch.Tensor:
    """Average of per-bin ``values`` (…, *rfft_shape) over rings of equal |ω|.

    Uses Hermitian weights, so the result equals the ring average over the full
    ``fftn`` grid. Output shape (…, n_bins) with n_bins = min(spatial_shape)//2 + 1.
    """
    ndim = len(spatial_shape)
    index, counts, _ = radial_bins(spatial_shape)
    index = index.to(values.device)
    w = hermitian_weights(spatial_shape, dtype=values.dtype, device=values.device)
    flat = (values * w).flatten(-ndim)
    sums = flat.new_zeros(*flat.shape[:-1], counts.numel()).index_add(-1, index, flat)
    return (sums / counts.to(device=values.device, dtype=values.dtype))[..., :-1]
