"""Figures for the spectral metrics (matplotlib, non-interactive Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def floor_per_bin(freqs: Any, floors: Mapping[str, float | None]) -> np.ndarray:
    """The log-spectral noise floor (decades) at each frequency (cycles per sample): the
    floor of the band of :data:`specreg.metrics.bands.BANDS` that holds it (``lsd_low``,
    ``lsd_mid``, ``lsd_high``) where that was measured, else the whole-range ``lsd`` floor;
    NaN where neither was. A step curve: each value is a band's RMS real-vs-real log ratio."""
    from specreg.metrics.bands import BANDS
    from specreg.metrics.registry import band_metric

    f = _np(freqs)
    whole = floors.get(band_metric(None).primary)
    out = np.full(f.shape, np.nan if whole is None else float(whole))
    for band, (lo, hi) in BANDS.items():
        value = floors.get(band_metric(band).primary)
        if value is not None:
            out[(f >= lo) & ((f < hi) | ((f <= hi) & (hi >= 0.5)))] = float(value)
    return out


def _floor_band(ax: Any, freqs: Any, centre: Any, floor: Any, *, log: bool) -> None:
    """Shade centre·10^(±floor) (``log``) or centre ± floor around a curve, where the floor is known."""
    f, c, fl = _np(freqs), _np(centre), _np(floor)
    keep = (f > 0) & np.isfinite(fl) & ((c > 0) if log else True)
    if not keep.any():
        return
    lo, hi = (c * 10.0 ** -fl, c * 10.0 ** fl) if log else (c - fl, c + fl)
    ax.fill_between(f[keep], lo[keep], hi[keep], color="grey", alpha=0.3, linewidth=0,
                    label="± noise floor (real vs real)")


def plot_spectra(spectra: Mapping[str, tuple[Any, Any]], reference: tuple[Any, Any] | None = None,
                 path: str | os.PathLike | None = None, *, title: str = "Radially averaged power spectrum",
                 reference_label: str = "reference", xlabel: str = "frequency (cycles / sample)",
                 ylabel: str = "power", floor: Any = None) -> Any:
    """Log-log plot of radial power spectra, one line per model, the reference dashed black.

    ``floor``: the log-spectral noise floor in decades at each of the reference's
    frequencies (:func:`floor_per_bin`); the band reference·10^(±floor) is shaded grey, so a
    curve inside it is as close to the reference as another real set would be.

    ``spectra`` maps a name to ``(freqs, power)`` as returned by
    :func:`specreg.metrics.spectrum.radial_power_spectrum`; the DC bin (f = 0) cannot be
    shown on a log axis and is dropped. Saves to ``path`` when given (format from the
    suffix) and returns the matplotlib Figure. The figure is drawn on the Agg canvas
    without pyplot, so it works headless and leaves pyplot's state alone.
    """
    if not spectra and reference is None:
        raise ValueError("spectra is empty and no reference is given; nothing to plot")
    # a bare Figure on the Agg canvas: no pyplot state, the user's backend is untouched
    from specreg._optional import needs_extra

    with needs_extra("metrics", "specreg.metrics.plot_spectra"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lines = [(name, spec, False) for name, spec in spectra.items()]
    if reference is not None:
        lines.append((reference_label, reference, True))
    for i, (name, (freqs, power), is_ref) in enumerate(lines):
        f, p = _np(freqs), _np(power)
        if f.shape != p.shape or f.ndim != 1:
            raise ValueError(f"spectrum {name!r} has freqs {f.shape} and power {p.shape}; expected equal 1-D shapes")
        keep = (f > 0) & (p > 0)
        ax.loglog(f[keep], p[keep], label=str(name), color="black" if is_ref else None,
                  linestyle="--" if is_ref else line_style(i), linewidth=1.5)
    if reference is not None and floor is not None:
        _floor_band(ax, reference[0], reference[1], floor, log=True)
    tidy_log_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def line_style(i: int) -> str:
    """The line style of the i-th curve: solid for the first ten (matplotlib's colour
    cycle), then dashed, dash-dot and dotted, so that curves 1 and 11 never look alike."""
    return ("-", "--", "-.", ":")[(i // 10) % 4]


def tidy_log_axis(axis) -> None:
    """Label only the decades of a log axis: over less than a decade, matplotlib labels
    every minor tick and the labels run into each other."""
    from matplotlib.ticker import NullFormatter

    axis.set_minor_formatter(NullFormatter())


def _figure(size: tuple[float, float] = (5.5, 4.0)) -> tuple[Any, Any]:
    from specreg._optional import needs_extra

    with needs_extra("metrics", "specreg.metrics.plots"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _finish(fig: Any, ax: Any, path: str | os.PathLike | None, xlabel: str, ylabel: str, title: str) -> Any:
    """Labels, a grid and a small legend on a log-x axis; saved to ``path`` when given."""
    tidy_log_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_band_weights(record: Mapping[str, Any], path: str | os.PathLike | None = None) -> Any:
    """Learned band weights exp(−u_b(σ)) against σ, one line per band, at the newest step
    of ``record`` (the ``band_weights.json`` a run with ``regularizer.band_weights:
    learned`` writes: ``{"sigma", "bands", "steps": {step: [band][sigma]}}``); earlier
    steps thin and grey, so the plot shows whether the weights settled."""
    steps = sorted(record["steps"], key=int)
    if not steps:
        raise ValueError("record has no steps; nothing to plot")
    sigma = _np(record["sigma"])
    fig, ax = _figure()
    for step in steps[:-1]:
        for w in record["steps"][step]:
            ax.loglog(sigma, _np(w), color="grey", alpha=0.3, linewidth=0.7)
    for label, w in zip(record["bands"], record["steps"][steps[-1]]):
        ax.loglog(sigma, _np(w), label=str(label), linewidth=1.5)
    return _finish(fig, ax, path, "noise level σ", "band weight exp(−u_b(σ))",
                   f"Learned band weights at step {steps[-1]} (grey: earlier)")


def redraw_band_weights(run_dir: str | os.PathLike, step: int | None = None) -> None:
    """Redraw ``band_weights.png`` of a run directory from its ``band_weights.json`` (nothing
    when the run has none); the trainer's ``on_checkpoint`` hook, so ``step`` is unused."""
    import json
    from pathlib import Path

    from specreg.layout import BAND_WEIGHTS_FILE, BAND_WEIGHTS_PLOT

    path = Path(run_dir) / BAND_WEIGHTS_FILE
    if path.is_file():
        plot_band_weights(json.loads(path.read_text()), Path(run_dir) / BAND_WEIGHTS_PLOT)


def plot_spectrum_ratio(spectra: Mapping[str, tuple[Any, Any]], reference: tuple[Any, Any],
                        path: str | os.PathLike | None = None, *, xlabel: str = "frequency (cycles / sample)",
                        band: tuple[float, float] | None = None,
                        title: str = "Spectrum error against the real reference", floor: Any = None) -> Any:
    """log10(P / P_real) against frequency, one line per spectrum (0 is a perfect spectrum),
    on a log frequency axis; ``band`` (in the units of the frequencies) is shaded. Names
    starting with "real" are drawn dotted. ``floor``: the noise floor in decades per
    frequency (:func:`floor_per_bin`), shaded as 0 ± floor."""
    f = _np(reference[0])
    p_ref = _np(reference[1])
    keep = f > 0
    tiny = np.finfo(np.float64).tiny
    fig, ax = _figure()
    for i, (name, (_, power)) in enumerate(spectra.items()):
        ratio = np.log10(np.maximum(_np(power), tiny)) - np.log10(np.maximum(p_ref, tiny))
        ax.plot(f[keep], ratio[keep], label=str(name), linestyle=":" if str(name).startswith("real") else line_style(i))
    ax.axhline(0.0, color="black", linewidth=1)
    if floor is not None:
        _floor_band(ax, f, np.zeros_like(f), floor, log=False)
    if band is not None:
        ax.axvspan(*band, color="grey", alpha=0.15, label="band")
    ax.set_xscale("log")
    return _finish(fig, ax, path, xlabel, "log10(P / P_real)  (decades)", title)
