"""Turn a :class:`~specreg.train.config.Config` into the objects a run needs.

Each builder is small and takes one config section, so scripts and tests can build one
piece (say, the network) without the rest:

* :func:`build_dataset`      data section → ``Dataset`` of ``(x, label)`` or audio items;
* :func:`build_net`          model section → raw network ``net(x, noise_label, class_labels, cond)``;
* :func:`build_formulation`  diffusion section → ``DDPM``, ``EDM`` or ``FlowMatching``;
* :func:`build_model`        the trainable module: EDM's preconditioned denoiser D(x; σ) = x̂0,
                             or the raw network for DDPM and flow matching;
* :func:`build_regularizer`  regularizer section → ``SpectralRegularizer`` (λ·L_S of Eq. 17) or None;
* :func:`build_autoencoder`  autoencoder section → the frozen VAE of a latent model, or None;
* :func:`batch_inputs`       a collated batch → (x0, model keyword arguments);
* :func:`generate`           samples with the configured sampler;
* :func:`load_trained`       a run directory → (config, model with EMA weights, formulation, step).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from specreg.data import registry
from specreg.files import step_of, write_atomic
from specreg.train.checkpoint import CHECKPOINT_DIR, latest_weights, list_checkpoints, load_weights
from specreg.train.config import (
    CONFIG_FILE,
    Config,
    DataConfig,
    DiffusionConfig,
    RegularizerConfig,
    SampleConfig,
    load_config,
)
from specreg.train.options import construct

if TYPE_CHECKING:
    from specreg.models.vae import ConvVAE


def spatial_ndim(cfg: Config) -> int:
    """1 for audio (B, 1, L), 2 for images (B, C, H, W)."""
    return 1 if cfg.data.is_audio else 2


def build_dataset(data: DataConfig, split: str | None = None) -> Dataset:
    """The data set named by ``data.kind``; items are ``(x, label)`` for images.

    Built by the data set's registry entry (:func:`specreg.data.registry.build_dataset`),
    the same factory that builds the reference sets. A data set that is not there (a
    missing or empty folder, Fashion-MNIST or the speech prompts not installed) raises
    ``ValueError`` naming ``data.root``, so the command line says it in one line.
    """
    try:
        return registry.build_dataset(data, split)
    except FileNotFoundError as err:
        raise ValueError(f"data.root={data.root!r} (data.kind={data.kind}): {err}") from None


def build_autoencoder(cfg: Config) -> ConvVAE | None:
    """The frozen autoencoder of a latent model (``autoencoder.name``), or None for pixels."""
    if cfg.autoencoder.name is None:
        return None
    from specreg.models.vae import load_autoencoder

    vae = load_autoencoder(cfg.autoencoder.name)
    if vae.in_channels != cfg.data.channels or cfg.data.size % 4:
        raise ValueError(f"autoencoder.name={cfg.autoencoder.name!r} takes {vae.in_channels}-channel images with "
                         f"sides divisible by 4; data.channels={cfg.data.channels}, data.size={cfg.data.size}")
    return vae


class LatentDataset(Dataset):
    """``dataset``'s items with the image replaced by the autoencoder's scaled latents,
    encoded once (as the trainers people run cache their latents) and kept in memory.

    The latents of a data set are cached on disk (``$SPECREG_CACHE``, default
    ``~/.cache/specreg``; safetensors, written atomically) under a key of the autoencoder's
    weights and the data section, so the runs of a study encode it once.
    """

    def __init__(self, dataset: Dataset, autoencoder: ConvVAE, *, key: str | None = None,
                 batch_size: int = 512) -> None:
        self.dataset = dataset
        n_items = len(dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__
        cached = _latent_cache(key) if key else None
        if cached is not None and cached.is_file():
            from safetensors.torch import load_file

            self.latents = load_file(str(cached))["latents"]
            if self.latents.shape[0] == n_items:
                return
        device = next(autoencoder.parameters()).device
        chunks = []
        with torch.no_grad():
            for start in range(0, n_items, batch_size):
                x = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, n_items))])
                chunks.append(autoencoder.latents(x.to(device)).cpu())
        self.latents = torch.cat(chunks)
        if cached is not None:
            from safetensors.torch import save

            write_atomic(cached, save({"latents": self.latents.contiguous()}))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        return self.latents[i], self.dataset[i][1]


def _latent_cache(key: str) -> Path:
    root = Path(os.environ.get("SPECREG_CACHE", Path.home() / ".cache" / "specreg"))
    return root / "latents" / f"{key}.safetensors"


def latent_dataset(dataset: Dataset, autoencoder: ConvVAE, cfg: Config) -> LatentDataset:
    """:class:`LatentDataset` of ``dataset`` (built from ``cfg.data``), cached by the
    autoencoder's weights and the data section."""
    import hashlib
    import json

    digest = hashlib.sha1(json.dumps(dataclasses.asdict(cfg.data), sort_keys=True).encode())
    for name, t in sorted(autoencoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return LatentDataset(dataset, autoencoder, key=digest.hexdigest()[:16])


def model_shape(cfg: Config) -> tuple[int, int, int]:
    """(C, H, W) of what the diffusion model sees: the images, or an autoencoder's latents."""
    if cfg.autoencoder.name is None:
        return cfg.data.channels, cfg.data.size, cfg.data.size
    from specreg.models.vae import load_autoencoder

    return load_autoencoder(cfg.autoencoder.name).latent_shape((cfg.data.channels, cfg.data.size, cfg.data.size))


def build_net(cfg: Config) -> nn.Module:
    """The raw denoising network of ``cfg.model`` sized for ``cfg.data`` (or its latents)."""
    m = cfg.model
    if m.kind == "unet":
        from specreg.models.unet import UNet

        channels, size, _ = model_shape(cfg)
        return construct(UNet, m.options, "model.options", in_channels=channels, model_channels=m.model_channels,
                         channel_mult=list(m.channel_mult), num_res_blocks=m.num_res_blocks,
                         attn_resolutions=list(m.attn_resolutions), dropout=m.dropout,
                         num_classes=m.num_classes or None, resolution=size)
    from specreg.models.diffwave import DiffWave

    return construct(DiffWave, m.options, "model.options", residual_layers=m.residual_layers,
                     residual_channels=m.residual_channels, dilation_cycle=m.dilation_cycle,
                     n_mels=cfg.data.n_mels, hop_length=cfg.data.hop_length)


def build_formulation(diffusion: DiffusionConfig) -> Any:
    """``EDM``, ``DDPM`` or ``FlowMatching`` with the configured options."""
    from specreg import diffusion as D

    key = "diffusion.options"
    fixed: dict[str, Any] = {}
    if diffusion.timesteps_sampler:  # absent: the formulation's own draw, unchanged
        from specreg.diffusion.timesteps import build_timestep_sampler

        fixed["time_sampler"] = build_timestep_sampler(diffusion.timesteps_sampler, where="diffusion.timesteps_sampler")
    if diffusion.kind == "edm":
        return construct(D.EDM, diffusion.options, key, precond=diffusion.precond, sigma_data=diffusion.sigma_data,
                         **fixed)
    if diffusion.kind == "ddpm":
        return construct(D.DDPM, diffusion.options, key, schedule=diffusion.schedule,
                         timesteps=diffusion.timesteps, prediction=diffusion.prediction, **fixed)
    return construct(D.FlowMatching, diffusion.options, key, **fixed)


def build_model(formulation: Any, net: nn.Module) -> nn.Module:
    """The module that is trained, checkpointed and handed to the sampler.

    EDM trains the preconditioned denoiser D(x; σ) (its only parameters are the
    network's); DDPM and flow matching call the network directly.
    """
    precondition = getattr(formulation, "precondition", None)
    return precondition(net) if callable(precondition) else net


def build_regularizer(reg: RegularizerConfig, *, ndim: int = 2, sigma_data: float = 0.5,
                      autoencoder: ConvVAE | None = None) -> nn.Module | None:
    """λ·L_S of Eq. 17, or None for the baseline (``regularizer.loss: null``); with
    ``regularizer.space: decoded`` the loss sees ``autoencoder.images`` of x̂0 and x0."""
    if reg.loss is None:
        return None
    from specreg.losses.registry import build_loss
    from specreg.regularizer import SpectralRegularizer

    # the STFT loss is 1-D by construction; the others take ndim (unless the options set it)
    fixed = {} if reg.loss == "mrstft" or "ndim" in reg.options else {"ndim": ndim}
    name = reg.loss
    loss = construct(lambda **kw: build_loss(name, **kw), reg.options, "regularizer.options", **fixed)
    lam: Any = reg.lam
    if lam == "auto":
        from specreg.regularizer import AutoLambda

        lam = construct(AutoLambda, reg.auto, "regularizer.auto")
    return SpectralRegularizer(loss, lam=lam, sigma_max=reg.sigma_max, sigma_data=sigma_data,
                               snr_gamma=reg.snr_gamma, lam_scale=reg.lam_scale, fade_sigma=reg.fade_sigma,
                               fade_width=reg.fade_width, band_weights=reg.band_weights == "learned",
                               decode=autoencoder.images if reg.space == "decoded" and autoencoder is not None
                               else None)


def batch_inputs(batch: Any, cfg: Config, device: torch.device) -> tuple[torch.Tensor, dict[str, Any]]:
    """A collated batch → (x0 on ``device``, keyword arguments of the model).

    Images: ``(x, label)``; labels go to ``class_labels`` only for class-conditional
    models. Audio: ``(wave, mel)``; the mel spectrogram goes to ``cond``. A latent model's
    batches already hold the scaled latents (:class:`LatentDataset`).
    """
    x0, extra = batch[0], batch[1]
    x0 = x0.to(device, non_blocking=True)
    if cfg.data.is_audio:
        return x0, {"cond": extra.to(device, non_blocking=True)}
    if cfg.model.num_classes > 0:
        return x0, {"class_labels": extra.to(device, non_blocking=True)}
    return x0, {}


def sample_kwargs(diffusion_kind: str, sample: SampleConfig) -> dict[str, Any]:
    """The keyword arguments of ``formulation.sample`` for this formulation."""
    kw: dict[str, Any] = {"sampler": sample.sampler, "steps": sample.steps}
    if diffusion_kind == "edm":
        kw["churn"] = sample.churn
    elif diffusion_kind == "ddpm":
        kw["eta"] = sample.eta
    return kw


@torch.no_grad()
def generate(cfg: Config, formulation: Any, model: nn.Module, n: int, *, generator: torch.Generator,
             model_kwargs: dict[str, Any] | None = None, batch_size: int = 256,
             autoencoder: ConvVAE | None = None, forward_chunk: int | str | None = None) -> torch.Tensor:
    """``n`` samples (n, C, *spatial) on ``model``'s device, drawn in batches of ``batch_size``.

    ``model_kwargs`` (conditioning, e.g. ``class_labels`` or ``cond``) must have ``n`` rows.
    A latent model's samples are decoded to images (by ``autoencoder``, else the config's).
    The batch fixes the noise drawn; each network call takes at most ``forward_chunk``
    items of it ("auto": :class:`specreg.train.runtime.ChunkedForward`'s rule; None: the
    device's, :func:`specreg.train.runtime.forward_chunk`), which changes the time, not the
    samples.
    """
    from specreg.train.runtime import chunked

    model_kwargs = dict(model_kwargs or {})
    device = next(model.parameters()).device
    net = chunked(model, device, forward_chunk)
    if autoencoder is None and cfg.autoencoder.name is not None:
        autoencoder = build_autoencoder(cfg)
    if autoencoder is not None:
        autoencoder = autoencoder.to(device)
    was_training = model.training
    model.eval()
    kw = sample_kwargs(cfg.diffusion.kind, cfg.sample)
    out = []
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        chunk_kw = {k: v[start:stop].to(device) for k, v in model_kwargs.items()}
        shape = _sample_shape(cfg, stop - start, chunk_kw)
        x = formulation.sample(net, shape, generator=generator, **kw, **chunk_kw).float()
        out.append(x if autoencoder is None else autoencoder.images(x).float())
    model.train(was_training)
    return torch.cat(out)


def _sample_shape(cfg: Config, n: int, kw: dict[str, Any]) -> tuple[int, ...]:
    if cfg.data.is_audio:
        # a vocoder's output length is set by its conditioning: frames × hop
        frames = kw["cond"].shape[-1] if "cond" in kw else cfg.data.segment_length // cfg.data.hop_length
        return (n, 1, frames * cfg.data.hop_length)
    return (n, *model_shape(cfg))


def conditioning_for_samples(cfg: Config, n: int, dataset: Dataset | None = None) -> dict[str, Any]:
    """Conditioning of ``n`` samples: classes 0, 1, …, K−1 in turn; the first mels of the data."""
    if cfg.data.is_audio:
        dataset = dataset if dataset is not None else build_dataset(cfg.data, split="test")
        n_items = len(dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__
        mels = [dataset[i % n_items][1] for i in range(n)]
        return {"cond": torch.stack(mels)}
    if cfg.model.num_classes > 0:
        return {"class_labels": torch.arange(n) % cfg.model.num_classes}
    return {}


def load_trained(run_dir: str | Path, *, ema: bool = True, checkpoint: str | Path | None = None,
                 overrides: list[str] | None = None) -> tuple[Config, nn.Module, Any, int | None]:
    """Rebuild a trained model from a run directory (its ``config.yaml`` and newest checkpoint).

    Returns ``(config, model, formulation, step)`` (step None for a ``checkpoint`` whose name is
    not ``step-XXXXXXXX``); ``model`` carries the EMA weights
    unless ``ema=False``. ``overrides`` change the sample section (or anything else)
    of the saved config. Without ``checkpoint``, a newest checkpoint that is unreadable
    (truncated, or changed since it was written) is skipped with a line on stderr, as
    training does, and the one before is used.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ValueError(f"{run_dir} is not a run directory: it has no {CONFIG_FILE}")
    cfg = load_config(run_dir / CONFIG_FILE, overrides)
    if checkpoint is None:
        if not list_checkpoints(run_dir / CHECKPOINT_DIR):
            raise ValueError(f"{run_dir} holds no checkpoint under {CHECKPOINT_DIR}/; train first")
        checkpoint, weights, skipped = latest_weights(run_dir / CHECKPOINT_DIR, ema=ema)
        for _, reason in skipped:
            print(f"specreg: skipping {reason}", file=sys.stderr)
    else:
        weights = load_weights(checkpoint, ema=ema)
    formulation = build_formulation(cfg.diffusion)
    model = build_model(formulation, build_net(cfg))
    load_matching(model, weights, f"{run_dir / CONFIG_FILE} does not match the checkpoint {checkpoint}")
    step = step_of(Path(checkpoint).name)
    return cfg, model.eval(), formulation, step


def load_matching(model: nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(weights)``, or one ``ValueError`` starting with ``what`` that
    counts the missing, unexpected and differently shaped tensors and names the first of
    each (torch's own message lists every key, a hundred lines for a changed width)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{len(items)} {label} (first: {items[0]})" for label, items in
                 (("missing tensors", missing), ("unexpected tensors", unexpected), ("shape mismatches", shapes))
                 if items]
        raise ValueError(f"{what}: {', '.join(parts)}; was the config edited after training? Sample with the "
                         "config the run was trained with")
    model.load_state_dict(weights)
