"""The tiny run config that the CLI, trainer and stop-signal tests train (a 16×16 checkerboard
U-Net with 8 channels, seconds per run)."""

from __future__ import annotations

from typing import Any


def tiny_config(steps: int = 2, checkpoint_every: int = 2, sample_steps: int = 2) -> dict[str, Any]:
    """A run config as a mapping: ``steps`` training steps, a checkpoint every
    ``checkpoint_every``, 4 samples of ``sample_steps`` steps."""
    return {
        "data": {"kind": "checkerboard", "size": 16, "n": 32},
        "model": {"kind": "unet", "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attn_resolutions": []},
        "diffusion": {"kind": "edm"},
        "train": {"steps": steps, "batch_size": 4, "log_every": 1, "checkpoint_every": checkpoint_every,
                  "threads": 1, "tensorboard": False, "progress_bar": False},
        "sample": {"n": 4, "steps": sample_steps},
    }
