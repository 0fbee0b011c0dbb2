"""plot_spectra writes a log-log figure with one line per model plus the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specreg.metrics.plots import plot_spectra
from specreg.metrics.spectrum import radial_power_spectrum


def test_plot_spectra_writes_a_png(tmp_path) -> None:
    ref = radial_power_spectrum(torch.randn(8, 1, 32, 32))
    spectra = {"baseline": radial_power_spectrum(0.5 * torch.randn(8, 1, 32, 32)),
               "haar": radial_power_spectrum(torch.randn(8, 1, 32, 32))}
    path = tmp_path / "spectra.png"
    fig = plot_spectra(spectra, reference=ref, path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["baseline", "haar", "reference"]
    # the DC bin cannot sit on a log axis: every line has the 16 non-zero frequencies
    for line, (freqs, power) in zip(ax.get_lines(), [*spectra.values(), ref]):
        np.testing.assert_allclose(line.get_xdata(), freqs[1:].numpy())
        np.testing.assert_allclose(line.get_ydata(), power[1:].numpy())
    assert ax.get_lines()[-1].get_linestyle() == "--"


def test_plot_spectra_errors() -> None:
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_spectra({})
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        plot_spectra({"bad": (np.arange(5), np.ones(4))})
