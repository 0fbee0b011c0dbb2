"""Cells of a study report's markdown tables: numbers to a few significant digits, rows
with escaped pipes, and which keys are paired (they have no real-vs-real floor)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def fmt(v: float | None, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits, scientific outside [1e-3, 1e5)."""
    if v is None or not math.isfinite(v):
        return "—"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.{max(1, digits - 2)}e}"


def row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def is_paired(key: str) -> bool:
    """Whether ``key``'s metric pairs samples with reference items (no floor from disjoint sets)."""
    from specreg.metrics.registry import metric_of

    m = metric_of(key)
    return m is not None and m.paired


__all__ = ["fmt", "is_paired", "row"]
