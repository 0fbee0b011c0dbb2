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


class _Amplitude(torch.autograd.Function):
    """|z| with the backward g·z/|z| formed by real divisions (each part ≤ 1; 0 at z = 0).

    ``torch.abs``'s own backward, g·sgn(z), divides z by |z| as complex numbers, which
    takes 1/|z|: inf, then NaN, for a subnormal z such as the FFT's rounding residue of a
    tiny signal.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        a = z.abs()
        ctx.save_for_backward(z, a)
        return a

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        z, a = ctx.saved_tensors
        a = torch.where(a > 0, a, torch.ones_like(a))
        return torch.complex(z.real / a * g, z.imag / a * g)


def safe_amplitude(z: torch.Tensor) -> torch.Tensor:
    """|z| computed with ``hypot`` (no overflow of re² + im² at 1e20, no underflow at 1e-20),
    with a gradient that is finite everywhere: 0 at z = 0, and no NaN at subnormal z."""
    return _Amplitude.apply(z)


def residue_tolerance(amplitude: torch.Tensor, ndim: int) -> torch.Tensor:
    """The level of FFT rounding residue in a spectrum of amplitudes ``amplitude`` (over the
    last ``ndim`` dims, ``rfftn`` layout): eps·(2 + log2 N)·max|F| per signal (N its number
    of samples, eps the machine epsilon; measured residue ≤ 1.5·eps·max|F| up to
    N = 65536), and at least the smallest normal number. Detached, kept dims of size 1."""
    finfo = torch.finfo(amplitude.dtype)
    n = max(1, math.prod(amplitude.shape[-ndim:-1]) * 2 * (amplitude.shape[-1] - 1))  # N (N − 1 if odd)
    tol = amplitude.detach().amax(dim=spatial_dims(ndim), keepdim=True) * (finfo.eps * (2.0 + math.log2(n)))
    return tol.clamp_min(finfo.tiny)


def snap_residue(f: torch.Tensor, ndim: int, tol: torch.Tensor | None = None) -> torch.Tensor:
    """The spectrum ``f`` (over the last ``ndim`` dims) with FFT rounding residue set to exactly +0.

    An FFT leaves rounding residue of a few eps·max|F| where the exact result is 0: the
    non-DC bins of a constant, the imaginary part of the Nyquist bins and of every bin of
    an even-symmetric signal. Its sign is arbitrary, so a phase on the negative real axis
    flips between +π and −π; its direction is arbitrary, so it gives |F| a gradient where
    the exact one is 0; and at tiny scales it is subnormal, where z/|z| (whose complex
    division takes 1/|z|) overflows to inf and NaN. Every real and imaginary part at most
    ``tol`` (default :func:`residue_tolerance`) becomes +0.
    """
    tol = residue_tolerance(f.abs(), ndim) if tol is None else tol
    re, im = f.real, f.imag
    # written so that NaN is kept (a comparison with NaN is false)
    return torch.complex(torch.where(re.abs() <= tol, torch.zeros_like(re), re),
                         torch.where(im.abs() <= tol, torch.zeros_like(im), im))


class _UnitPhasor(torch.autograd.Function):
    """u = z/|z| (0 at z = 0), with the backward i·u·Im(conj(u)·g)/|z|.

    That is the tangential part of the incoming gradient g, formed as one term. autograd's
    own backward of z/|z| subtracts two terms of size |g|/|z| that cancel in the radial
    direction (to which the phasor is blind); their rounding residue, multiplied by a
    large 1/|z|, made a finite gradient infinite. Here a g along u gives exactly 0.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        a = z.abs()
        a = torch.where(a > 0, a, torch.ones_like(a))
        u = torch.complex(z.real / a, z.imag / a)  # real divisions: no 1/|z| overflow for subnormal z
        ctx.save_for_backward(u, a)
        return u

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        u, a = ctx.saved_tensors
        t = (u.real * g.imag - u.imag * g.real) / a  # Im(conj(u)·g)/|z|; u = 0 where z = 0
        return torch.complex(-u.imag * t, u.real * t)


def safe_unit(z: torch.Tensor) -> torch.Tensor:
    """The phasor e^{iφ} = z/|z|, defined as 0 where z = 0, with finite gradients there
    (see :class:`_UnitPhasor` for its backward)."""
    return _UnitPhasor.apply(z)


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
    radius = torch.sqrt(sum((g**2 for g in mesh), torch.zeros((), dtype=torch.float64)))
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
    return torch.sqrt(sum((g**2 for g in torch.meshgrid(*grids, indexing="ij")), torch.zeros((), dtype=torch.float64)))


def radial_frequency(spatial_shape: tuple[int, ...]) -> torch.Tensor:
    """|f| of every ``rfftn`` bin of a signal of ``spatial_shape``, in cycles per sample
    (float64, CPU, the rfft grid's shape): 0 at DC, 0.5 at the Nyquist frequency of an
    axis, up to 0.5·√ndim in the corners."""
    shape = tuple(int(s) for s in spatial_shape)
    # under torch.compile: traced from Python constants (a cache lookup is host-side state)
    return _radial_frequency_cpu.__wrapped__(shape) if torch.compiler.is_compiling() else _radial_frequency_cpu(shape)


def radial_bins(spatial_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Radial binning of the ``rfftn`` grid of a signal of ``spatial_shape``.

    Returns ``(index, counts, freqs)``: ``index`` (flattened rfft bins → radial bin; bins
    beyond the Nyquist radius of the smallest side go to an extra overflow bin),
    ``counts`` (full-spectrum bins per radial bin, overflow last) and ``freqs`` (bin
    centres in cycles per sample, 0 … 0.5). Bin width is 1/min(spatial_shape).
    """
    shape = tuple(int(s) for s in spatial_shape)
    return _radial_index_cpu.__wrapped__(shape) if torch.compiler.is_compiling() else _radial_index_cpu(shape)


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
