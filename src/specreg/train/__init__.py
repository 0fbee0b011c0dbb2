"""Training: configs, checkpoints, the accelerate trainer and the config → objects builders.

Names are imported on first use, so ``import specreg.train`` (and the CLI's ``--help``)
does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from specreg._optional import require

# Its modules import these at load time: without the extra, one line says what to install.
require(__name__, "train", ("accelerate", "safetensors", "tqdm", "yaml"))

_EXPORTS = {
    "Config": "config", "load_config": "config", "config_from_dict": "config", "dump_config": "config",
    "builtin_configs": "config",
    "Checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "latest_checkpoint": "checkpoint", "list_checkpoints": "checkpoint",
    "Trainer": "trainer", "TrainResult": "trainer", "TrainingDiverged": "failures", "train": "trainer",
    "TrainingInterrupted": "trainer", "find_latest": "checkpoint",
    "EMA": "ema",
    "build_dataset": "build", "build_net": "build", "build_formulation": "build", "build_model": "build",
    "build_regularizer": "build", "generate": "build", "load_trained": "build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
