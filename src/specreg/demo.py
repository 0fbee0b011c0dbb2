"""``specreg demo``; it lives in :mod:`specreg.experiments.demo` (kept importable here)."""

from specreg.experiments.demo import run_demo

__all__ = ["run_demo"]
