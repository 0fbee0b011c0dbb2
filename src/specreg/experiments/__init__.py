"""Experiments on top of the library: evaluation of generated samples (``specreg eval``),
studies over variants and seeds (``specreg compare``) and the demo.

The pipeline of a study, one module per step: :mod:`.study` (the file and its profiles)
→ :mod:`.plan` (runs and their identity) → :mod:`.compare` (scheduling) → :mod:`.runner`
(one run) → :mod:`.results` (typed results) → :mod:`.report` (markdown). Measurement:
:mod:`.evaluate` over the metric registry (:mod:`specreg.metrics.registry`), against the
real data of :mod:`.reference`, read from disk by :mod:`.loading`. :mod:`.commands` holds
the command-line commands. This package is imported by the command line when it builds
its parser, so its modules import torch only inside their functions.
"""

from specreg._optional import require

# studies train: without the extra, one line says what to install (the metrics' own
# packages are checked where they are imported, with the same one line)
require(__name__, "train", ("accelerate", "safetensors", "tqdm", "yaml"))

from specreg.experiments.compare import CompareResult, rerender, run_compare  # noqa: E402
from specreg.experiments.evaluate import evaluate, evaluate_dirs, measure  # noqa: E402
from specreg.experiments.loading import load_samples  # noqa: E402
from specreg.experiments.plan import RunSpec, plan_runs  # noqa: E402
from specreg.experiments.reference import REFERENCE_SETS, RealSets, load_reference, real_sets  # noqa: E402
from specreg.experiments.results import StudyResults  # noqa: E402
from specreg.experiments.study import Evaluation, Study, load_study  # noqa: E402

REFERENCES = REFERENCE_SETS  # the name of earlier versions

__all__ = [
    "REFERENCES",
    "REFERENCE_SETS",
    "CompareResult",
    "Evaluation",
    "RealSets",
    "RunSpec",
    "Study",
    "StudyResults",
    "evaluate",
    "evaluate_dirs",
    "load_reference",
    "load_samples",
    "load_study",
    "measure",
    "plan_runs",
    "real_sets",
    "rerender",
    "run_compare",
]
