"""Experiments on top of the library: evaluation of generated samples (``specreg eval``)
and comparison studies over variants and seeds (``specreg compare``).

This package is imported by the command line when it builds its parser, so its modules
import torch only inside their functions.
"""

from specreg.experiments.compare import CompareResult, load_study, plan_runs, run_compare
from specreg.experiments.evaluate import (
    DEFAULT_METRICS,
    METRICS,
    REFERENCES,
    add_eval_parser,
    evaluate,
    evaluate_dirs,
    load_reference,
    load_samples,
    run_eval,
)

__all__ = [
    "CompareResult",
    "load_study",
    "plan_runs",
    "run_compare",
    "DEFAULT_METRICS",
    "METRICS",
    "REFERENCES",
    "add_eval_parser",
    "evaluate",
    "evaluate_dirs",
    "load_reference",
    "load_samples",
    "run_eval",
]
