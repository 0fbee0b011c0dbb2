"""Spectral metrics against closed forms and straightforward numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from specreg.metrics.spectrum import (
    SpectrumMetric,
    log_spectral_distance,
    log_spectral_distance_from_spectra,
    peak_energy_fraction,
    radial_power_spectrum,
)


def _numpy_radial(x: np.ndarray, ndim: int) -> np.ndarray:
    """Ring average of |fftn|² over the full grid, by a loop over rings."""
    spatial = x.shape[-ndim:]
    n_min = min(spatial)
    P = np.abs(np.fft.fftn(x, axes=tuple(range(-ndim, 0)), norm="ortho")) ** 2
    P = P.reshape(-1, *spatial).mean(0)
    grids = np.meshgrid(*[np.fft.fftfreq(n) * n_min for n in spatial], indexing="ij")
    r = np.rint(np.sqrt(sum(g**2 for g in grids)))
    return np.array([P[r == k].mean() for k in range(n_min // 2 + 1)])


@pytest.mark.parametrize(
    "shape, ndim", [((4, 2, 50), 1), ((3, 2, 16, 16), 2), ((2, 1, 12, 20), 2), ((2, 1, 8, 8, 8), 3)]
)
def test_radial_power_spectrum_matches_numpy(shape: tuple[int, ...], ndim: int) -> None:
    x = torch.randn(shape, dtype=torch.float64)
    freqs, power = radial_power_spectrum(x, ndim)
    n_min = min(shape[-ndim:])
    np.testing.assert_allclose(freqs.numpy(), np.arange(n_min // 2 + 1) / n_min)
    np.testing.assert_allclose(power.numpy(), _numpy_radial(x.numpy(), ndim), rtol=1e-10)


@pytest.mark.parametrize("shape, ndim", [((512, 1, 256), 1), ((64, 1, 64, 64), 2)])
def test_white_noise_is_flat(shape: tuple[int, ...], ndim: int) -> None:
    # E|F[x](ω)|² = σ² at every ω for white noise and the orthonormal DFT; each 1-D ring
    # averages 2·512 exponential variables (relative std 3 %), a 2-D ring at least 8·64
    g = torch.Generator().manual_seed(0)
    sigma = 0.5
    _, power = radial_power_spectrum(sigma * torch.randn(shape, generator=g), ndim)
    assert power[1:].mean() == pytest.approx(sigma**2, rel=0.03)
    np.testing.assert_allclose(power[1:].numpy(), sigma**2, rtol=0.3)


def test_sinusoid_peaks_at_its_bin_1d() -> None:
    n, k = 128, 9
    t = torch.arange(n, dtype=torch.float64)
    x = torch.sin(2 * math.pi * k * t / n).view(1, 1, n)
    _, power = radial_power_spectrum(x, ndim=1)
    # |F[k]|² = |F[−k]|² = n/4 for a unit sine with the orthonormal DFT; the ring holds both
    expected = np.zeros(n // 2 + 1)
    expected[k] = n / 4
    np.testing.assert_allclose(power.numpy(), expected, atol=1e-9)


def test_plane_wave_peaks_at_its_radius_2d() -> None:
    n = 64
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    img = torch.cos(2 * math.pi * (3 * x + 4 * y) / n).view(1, 1, n, n)  # |ω| = 5 bins
    _, power = radial_power_spectrum(img)
    assert int(power.argmax()) == 5
    assert float(power[5]) > 1e6 * float(torch.cat([power[:5], power[6:]]).max() + 1e-300)


def test_per_channel_and_overflow_safety() -> None:
    x = torch.randn(8, 3, 16, 16)
    x[:, 1] = 2 * x[:, 0]
    _, pc = radial_power_spectrum(x, per_channel=True)
    assert pc.shape == (3, 9)
    np.testing.assert_allclose(pc[1].numpy(), 4 * pc[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(pc[2].numpy(), _numpy_radial(x[:, 2].double().numpy(), 2), rtol=1e-5)
    _, p = radial_power_spectrum(x)
    np.testing.assert_allclose(p.numpy(), pc.mean(0).numpy(), rtol=1e-12)
    # power scales by c² exactly; float32 input at 1e20 (power 1e40) neither overflows nor underflows at 1e-20
    for c in (1e20, 1e-20):
        _, pcx = radial_power_spectrum(c * x)
        assert torch.isfinite(pcx).all() and (pcx > 0).all()
        np.testing.assert_allclose(pcx.numpy() / c**2, p.numpy(), rtol=1e-5)


def test_lsd_closed_forms() -> None:
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(16, 1, 32, 32, generator=g)
    assert log_spectral_distance(ref, ref) == 0.0
    # a gain c scales every bin's power by c², so LSD = bias = 2 log10 c in every band
    for band in (None, "low", "mid", "high", (0.25, 0.5)):
        lsd, bias = log_spectral_distance(10 * ref, ref, band=band, return_bias=True)
        assert lsd == pytest.approx(2.0, abs=1e-6) and bias == pytest.approx(2.0, abs=1e-6)
        lsd, bias = log_spectral_distance(0.1 * ref, ref, band=band, return_bias=True)
        assert lsd == pytest.approx(2.0, abs=1e-6) and bias == pytest.approx(-2.0, abs=1e-6)


def test_lsd_bands_select_the_documented_bins() -> None:
    freqs = torch.arange(33, dtype=torch.float64) / 64  # a 64-pixel signal: 0 … 0.5
    ref = torch.ones(33, dtype=torch.float64)
    gen = torch.where(freqs >= 1 / 3, 10.0, 1.0).double()  # one decade too much in the top third
    f = freqs.numpy()
    for band, lo, hi in (("low", 0, 1 / 6), ("mid", 1 / 6, 1 / 3), ("high", 1 / 3, 0.5), (None, 0, 0.5)):
        sel = (f >= lo) & ((f < hi) | (hi == 0.5))
        d = np.where(f >= 1 / 3, 1.0, 0.0)[sel]
        lsd, bias = log_spectral_distance_from_spectra(freqs, gen, ref, band=band)
        assert lsd == pytest.approx(np.sqrt((d**2).mean()), abs=1e-12)
        assert bias == pytest.approx(d.mean(), abs=1e-12)
    # the pilot's "high" = upper half of the bins, through the bands= edges
    lsd, _ = log_spectral_distance_from_spectra(freqs, gen, ref, band="high", bands={"high": (0.25, 0.5)})
    sel = f >= 0.25
    assert lsd == pytest.approx(np.sqrt((np.where(f >= 1 / 3, 1.0, 0.0)[sel] ** 2).mean()), abs=1e-12)


def test_lsd_errors() -> None:
    a = torch.randn(4, 1, 16, 16)
    with pytest.raises(ValueError, match="band"):
        log_spectral_distance(a, a, band="ultra")
    with pytest.raises(ValueError, match="band"):
        log_spectral_distance(a, a, band=(0.4, 0.2))
    with pytest.raises(ValueError, match="no radial bin"):
        log_spectral_distance(a, a, band=(0.01, 0.02))
    with pytest.raises(ValueError, match="spatial shapes"):
        log_spectral_distance(a, torch.randn(4, 1, 32, 32))
    with pytest.raises(ValueError, match="non-empty"):
        log_spectral_distance(a[:0], a)
    with pytest.raises(ValueError, match="ndim"):
        radial_power_spectrum(a, ndim=4)


def test_streaming_spectrum_independent_of_batching() -> None:
    x = torch.randn(16, 3, 12, 12, dtype=torch.float64)
    _, full = radial_power_spectrum(x)
    for splits in ([16], [1] * 16, [3, 5, 8]):
        m = SpectrumMetric()
        for part in torch.split(x, splits):
            m.update(part)
        freqs, power = m.compute()
        np.testing.assert_allclose(power.numpy(), full.numpy(), rtol=1e-12)
    # merging two processes' states equals one process seeing everything
    a, b = SpectrumMetric(per_channel=True), SpectrumMetric(per_channel=True)
    a.update(x[:7])
    b.update(x[7:])
    _, pc = radial_power_spectrum(x, per_channel=True)
    np.testing.assert_allclose(a.merge(b).compute()[1].numpy(), pc.numpy(), rtol=1e-12)
    a.sync()  # no process group: a no-op
    assert a.n == 16


def test_streaming_spectrum_errors() -> None:
    m = SpectrumMetric()
    with pytest.raises(ValueError, match="before any update"):
        m.compute()
    m.update(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="cannot be pooled"):
        m.update(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="merge"):
        m.merge(SpectrumMetric(ndim=1))


def _numpy_peak_fraction(x: np.ndarray, peaks: list[tuple[float, ...]], tol: float) -> np.ndarray:
    spatial = x.shape[2:]
    P = (np.abs(np.fft.fftn(x, axes=tuple(range(2, x.ndim)))) ** 2).sum(1)
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in spatial], indexing="ij")
    on = np.zeros(spatial, bool)
    near = np.zeros(spatial, bool)
    for f in peaks:
        k = np.floor(np.array(f) * np.array(spatial) + 0.5).astype(int)
        for s in (1, -1):
            dist = np.sqrt(sum(np.minimum(np.abs(g - s * fi) % 1, 1 - np.abs(g - s * fi) % 1) ** 2
                               for g, fi in zip(grids, f)))
            near |= dist <= tol + 1e-9
            on[tuple(np.mod(s * k, spatial))] = True
    near |= on
    return P[:, on].sum(1) / P[:, near].sum(1)


def test_peak_energy_fraction() -> None:
    n = 32
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    checker = np.where(((x // 4) + (y // 4)) % 2 == 0, 1.0, -1.0)  # period 8: odd harmonics of 1/8
    peaks = [(a / 8, b / 8) for a in (1, 3) for b in (1, 3)] + [(a / 8, -b / 8) for a in (1, 3) for b in (1, 3)]
    clean = torch.from_numpy(checker).view(1, 1, n, n)
    frac = peak_energy_fraction(clean, peaks, tolerance=2 / n)
    assert frac.shape == (1,) and float(frac[0]) == pytest.approx(1.0, abs=1e-12)
    # a blurred, noisy checkerboard leaks energy next to the peaks
    g = np.random.default_rng(0)
    kernel = np.fft.fft2(np.pad(np.ones((2, 2)) / 4, ((0, n - 2), (0, n - 2))))
    blurred = np.real(np.fft.ifft2(np.fft.fft2(checker) * kernel)) + 0.3 * g.standard_normal((2, 1, n, n))
    frac = peak_energy_fraction(torch.from_numpy(blurred), peaks, tolerance=2 / n)
    np.testing.assert_allclose(frac.numpy(), _numpy_peak_fraction(blurred, peaks, 2 / n), rtol=1e-10)
    assert (frac < 0.99).all()


def test_peak_energy_fraction_1d_leakage() -> None:
    n = 64
    t = np.arange(n)
    on_bin = np.sin(2 * np.pi * 5 * t / n)[None, None]
    off_bin = np.sin(2 * np.pi * 5.5 * t / n)[None, None]  # between bins: leaks into neighbours
    assert float(peak_energy_fraction(torch.from_numpy(on_bin), [5 / n], 3 / n, ndim=1)[0]) == pytest.approx(1.0)
    frac = peak_energy_fraction(torch.from_numpy(off_bin), [5.5 / n], 3 / n, ndim=1)
    np.testing.assert_allclose(frac.numpy(), _numpy_peak_fraction(off_bin, [(5.5 / n,)], 3 / n), rtol=1e-10)
    assert float(frac[0]) < 0.6
    with pytest.raises(ValueError, match="entries"):
        peak_energy_fraction(torch.from_numpy(on_bin), [(0.1, 0.2)], 0.05, ndim=1)
    with pytest.raises(ValueError, match="empty"):
        peak_energy_fraction(torch.from_numpy(on_bin), [], 0.05, ndim=1)
    with pytest.raises(ValueError, match="tolerance"):
        peak_energy_fraction(torch.from_numpy(on_bin), [0.1], -1.0, ndim=1)
