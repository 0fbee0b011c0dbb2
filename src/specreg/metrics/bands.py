"""The frequency bands of the spectral metrics, in one place and without heavy imports
(the metric registry's labels are built from them when ``specreg --help`` runs).

Radial frequency f is in cycles per sample, 0 ≤ f ≤ 0.5; a band (f_lo, f_hi) holds
f_lo ≤ f < f_hi (f_hi inclusive at 0.5). The thirds of the range: ``low`` f < 1/6, ``mid``
1/6 ≤ f < 1/3, ``high`` f ≥ 1/3 — the only bands the metrics (``lsd_low``, ``lsd_mid``,
``lsd_high`` and their ``_bias``), reports, the demo and the docs use.
"""

from __future__ import annotations

BANDS: dict[str, tuple[float, float]] = {
    "low": (0.0, 1.0 / 6.0),
    "mid": (1.0 / 6.0, 1.0 / 3.0),
    "high": (1.0 / 3.0, 0.5),
}


def band_text(band: str | None, unit: str = "cycles/sample") -> str:
    """The band's edges as a reader sees them, from :data:`BANDS`: ``"f >= 1/3 cycles/sample"``."""
    from fractions import Fraction

    if band is None:
        return "all radial bins"
    lo, hi = (str(Fraction(v).limit_denominator(64)) for v in BANDS[band])
    if BANDS[band][0] == 0:
        return f"f < {hi} {unit}"
    if BANDS[band][1] >= 0.5:
        return f"f >= {lo} {unit}"
    return f"{lo} <= f < {hi} {unit}"


__all__ = ["BANDS", "band_text"]
