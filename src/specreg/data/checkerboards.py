"""The paper's toy: checkerboards of random period and phase, and where their spectrum lies.

A board of even period p is the product of two square waves of period p pixels; its
energy sits on the spectral lines (k₁/p, k₂/p), k₁, k₂ odd, and nowhere else.
:func:`checkerboard_harmonics` is that one fact; the peak table of the spectral metrics
(:func:`checkerboard_peaks`) and the line set of a reference (:func:`checkerboard_lines`)
are both built from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from specreg.data.pixels import check_size

__all__ = ["CHECKERBOARD_PERIODS", "Checkerboards", "checkerboard", "checkerboard_harmonics", "checkerboard_lines",
           "checkerboard_peaks"]

CHECKERBOARD_PERIODS = (4, 8, 16)
"""Periods (pixels per full black-white cycle) of the boards of :class:`Checkerboards` by default."""


def checkerboard(size: int, period: int, phase: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A ±1 checkerboard (size × size) of squares with side period/2, shifted by ``phase``.

    x[i, j] = +1 if ⌊(i + φ_y)/(p/2)⌋ + ⌊(j + φ_x)/(p/2)⌋ is even, else −1: a product of
    two square waves of period p pixels along each axis.
    """
    half = period // 2
    i = (np.arange(size) + phase[0]) // half
    j = (np.arange(size) + phase[1]) // half
    return np.where((i[:, None] + j[None, :]) % 2 == 0, 1.0, -1.0).astype(np.float32)


def checkerboard_harmonics(period: int) -> tuple[np.ndarray, np.ndarray]:
    """The odd harmonics k = 1, 3, …, p − 1 of a sampled square wave of even period p and
    their frequencies k/p (cycles/pixel, in (0, 1), not aliased): the only DFT lines of
    the wave besides none at 0 (its mean is 0)."""
    k = np.arange(1, period, 2)
    return k, k / period


def checkerboard_lines(periods: Sequence[int]) -> list[tuple[float, float]]:
    """Every spectral line (k₁/p, k₂/p) (cycles/pixel, k₁, k₂ odd, not aliased) of a
    board of any period in ``periods``, sorted: the ``peaks`` of the checkerboard reference,
    which the peak metric aliases into [−½, ½)."""
    lines: set[tuple[float, float]] = set()
    for p in periods:
        _, f = checkerboard_harmonics(int(p))
        lines.update((float(f1), float(f2)) for f1 in f for f2 in f)
    return sorted(lines)


def checkerboard_peaks(period: int) -> tuple[np.ndarray, np.ndarray]:
    """Radial frequencies (cycles/pixel) of a checkerboard's spectral peaks and their power.

    A sampled square wave of even period p has DFT lines only at odd harmonics k/p
    (:func:`checkerboard_harmonics`), with |S_k| = 2/|sin(πk/p)| per period (Σ|S_k|² = p²).
    The checkerboard is the product of two such waves, so its power sits at (k₁/p, k₂/p),
    k₁, k₂ odd (aliased into [−½, ½)), with fraction (|S_k₁|·|S_k₂|/p²)² of the total.
    Returns ``(radii, power)`` sorted by radius, equal radii merged, power summing to 1;
    the strongest peak is the fundamental at radius √2/p. Exact when p divides the image size.
    """
    k, f = checkerboard_harmonics(period)
    amp = 2.0 / np.abs(np.sin(np.pi * k / period)) / period  # |S_k| / p
    freq = np.where(k < period / 2, f, f - 1.0)
    ky, kx = np.meshgrid(freq, freq, indexing="ij")
    radius = np.round(np.hypot(ky, kx), 12).ravel()
    power = (amp[:, None] * amp[None, :]).ravel() ** 2
    radii, inverse = np.unique(radius, return_inverse=True)
    return radii, np.bincount(inverse, weights=power)


class Checkerboards(Dataset):
    """The paper's toy: ``size``×``size`` gray checkerboards of random period and phase.

    Sample i has period ``periods_of[i]`` drawn uniformly from ``periods`` (pixels per
    full black-white cycle; even, dividing ``size``) and an integer phase drawn uniformly
    in [0, p)² — both from ``numpy.random.default_rng(seed)``. Values are ±1; the label is
    the index of the period in ``periods``. :meth:`peaks` gives the true spectral peaks
    (radial frequencies in cycles/pixel, as :func:`specreg.transforms.radial_bins`) for
    the spectral metrics.
    """

    def __init__(self, n: int, size: int = 64, periods: Sequence[int] = CHECKERBOARD_PERIODS,
                 seed: int = 0) -> None:
        self.n = check_size("n", n)
        self.size = check_size("size", size)
        self.periods = tuple(int(p) for p in periods)
        bad = [p for p in self.periods if p < 2 or p % 2 or self.size % p]
        if not self.periods or bad:
            raise ValueError(f"periods={tuple(periods)!r} is not accepted; expected even periods >= 2 that divide "
                             f"size={self.size}")
        rng = np.random.default_rng(seed)
        self.labels = torch.from_numpy(rng.integers(0, len(self.periods), self.n))
        self.periods_of = torch.tensor(self.periods)[self.labels]
        self.phases = torch.from_numpy(np.stack([rng.integers(0, int(p), 2) for p in self.periods_of]))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        p = int(self.periods_of[index])
        phase = (int(self.phases[index, 0]), int(self.phases[index, 1]))
        return torch.from_numpy(checkerboard(self.size, p, phase))[None], int(self.labels[index])

    def peaks(self, index: int | None = None, period: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(radii, power) of the true peaks for sample ``index`` or a given ``period``."""
        if (index is None) == (period is None):
            raise ValueError("pass exactly one of index= or period=")
        return checkerboard_peaks(int(self.periods_of[index]) if period is None else period)

    def fundamental_frequencies(self) -> dict[int, float]:
        """Period → radial frequency √2/p (cycles/pixel) of its strongest peak."""
        return {p: float(np.sqrt(2.0) / p) for p in self.periods}
