"""Experiments on top of the library: evaluation of generated samples (``specreg eval``).

This package is imported by the command line when it builds its parser, so its modules
import torch only inside their functions.
"""

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
