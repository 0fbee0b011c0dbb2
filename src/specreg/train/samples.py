"""The samples a run writes while it trains: ``samples/step-XXXXXXXX.png`` (a grid of
images) or ``samples/step-XXXXXXXX/`` (WAV clips), drawn with the EMA model and the
fixed seed ``sample.seed``, so grids of different steps show the same noise."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from specreg.files import save_audio, save_image_grid, step_name
from specreg.layout import SAMPLES_DIR
from specreg.train.build import conditioning_for_samples, generate

if TYPE_CHECKING:
    from specreg.models.vae import ConvVAE
    from specreg.train.config import Config



def write_samples(cfg: Config, out_dir: Path, formulation: Any, model: nn.Module, step: int,
                  dataset: Dataset | None = None, autoencoder: ConvVAE | None = None) -> Path:
    """Sample ``cfg.sample.n`` items with ``model`` and write them under ``out_dir/samples``;
    ``dataset`` gives an audio model's conditioning, ``autoencoder`` decodes a latent model's."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.sample.seed)
    kw = conditioning_for_samples(cfg, cfg.sample.n, dataset if cfg.data.is_audio else None)
    x = generate(cfg, formulation, model, cfg.sample.n, generator=generator, model_kwargs=kw,
                 autoencoder=autoencoder)
    folder = out_dir / SAMPLES_DIR
    if cfg.data.is_audio:
        save_audio(x, folder / step_name(step), cfg.data.sample_rate)
        return folder / step_name(step)
    return save_image_grid(x, folder / f"{step_name(step)}.png")


def samples_written(out_dir: Path, step: int) -> bool:
    """Whether the samples of ``step`` are on disk."""
    folder = out_dir / SAMPLES_DIR
    return (folder / f"{step_name(step)}.png").is_file() or (folder / step_name(step)).is_dir()


__all__ = ["SAMPLES_DIR", "samples_written", "write_samples"]
