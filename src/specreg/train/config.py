"""Run configuration: nested dataclasses loaded from YAML and checked on load.

A config has seven sections, one dataclass each: ``data``, ``model``, ``diffusion``,
``regularizer``, ``autoencoder`` (latent diffusion), ``train`` and ``sample``. It is read
from a built-in name (``demo``, ``checkerboard``, ``fashion32``, ``textures64``,
``speech-vocoder``; files shipped in ``specreg/configs``) or a YAML path, then dotted
overrides are applied::

    cfg = load_config("demo", ["train.steps=200", "regularizer.loss=fourier_ap",
                               "regularizer.lam=edm", "diffusion.kind=edm"])

Override values are typed by YAML (``200`` is an int, ``1e-4`` a float, ``edm`` a
string, ``null`` None, ``[1, 2]`` a list). Every key and value is checked: an unknown
key or a wrong type raises ``ValueError`` naming the dotted key and what is accepted, so
a typo never silently trains the wrong model. The resolved config (every default
filled in) is saved to the run directory as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from specreg.layout import CONFIG_FILE
from specreg.schema import choice, describe, from_mapping

_choice, _help = choice, describe  # field metadata (specreg.schema): accepted values and help


def _loss_names() -> tuple[str, ...]:
    """The loss registry's names, read when a config is checked (a newly registered loss is
    accepted without an edit here; torch is imported only then)."""
    from specreg.losses.registry import loss_names

    return loss_names()


def _data_names() -> tuple[str, ...]:
    """The data-set registry's names (specreg.data.registry), read when a config is checked:
    a newly registered data set is accepted without an edit here."""
    from specreg.data.registry import data_names

    return data_names()


@dataclass
class DataConfig:
    """Which data set to train on and how to cut it."""

    kind: str = field(default="textures", metadata=_choice(_data_names, help="data set family"))
    names: list[str] = field(default_factory=lambda: ["brick", "grass", "gravel"], metadata=_help(
        "textures: scikit-image texture names to crop from"))
    size: int = field(default=32, metadata=_help("images: side length in pixels"))
    channels: int = field(default=1, metadata=_help("images: 1 (gray) or 3 (RGB)"))
    n: int = field(default=4096, metadata=_help("synthetic/cropped sets: number of items"))
    root: str | None = field(default=None, metadata=_help(
        "folder or data root; null uses the loader's default location"))
    split: str = field(default="train", metadata=_help("split name for sets that have splits"))
    seed: int = field(default=0, metadata=_help("seed of the data set's own randomness (crops, boards)"))
    sample_rate: int = field(default=8000, metadata=_help("audio: sampling rate in Hz"))
    segment_length: int = field(default=8192, metadata=_help("audio: training clip length in samples"))
    n_mels: int = field(default=80, metadata=_help("audio: mel bands of the conditioning"))
    n_fft: int = field(default=512, metadata=_help("audio: FFT size of the mel conditioning"))
    hop_length: int = field(default=128, metadata=_help("audio: hop of the mel conditioning in samples"))

    @property
    def is_audio(self) -> bool:
        from specreg.data.registry import DATASETS

        entry = DATASETS.get(self.kind)
        return entry is not None and entry.kind == "audio"


@dataclass
class ModelConfig:
    """The denoising network (UNet for images, DiffWave for audio)."""

    kind: str = field(default="unet", metadata=_choice("unet", "diffwave", help="network family"))
    model_channels: int = field(default=32, metadata=_help("unet: channels at the top level"))
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2], metadata=_help(
        "unet: channel multiplier per resolution level"))
    num_res_blocks: int = field(default=1, metadata=_help("unet: residual blocks per level"))
    attn_resolutions: list[int] = field(default_factory=list, metadata=_help(
        "unet: resolutions (pixels) that get self-attention"))
    dropout: float = field(default=0.0, metadata=_help("dropout probability"))
    num_classes: int = field(default=0, metadata=_help("class-conditional if > 0 (labels from the data)"))
    residual_layers: int = field(default=30, metadata=_help("diffwave: residual layers"))
    residual_channels: int = field(default=64, metadata=_help("diffwave: residual channels"))
    dilation_cycle: int = field(default=10, metadata=_help("diffwave: dilation cycle length"))
    options: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "further constructor arguments of the network, e.g. {label_dropout: 0.1}"))


@dataclass
class DiffusionConfig:
    """The forward process and training objective (Eq. 17's L_diffusion)."""

    kind: str = field(default="edm", metadata=_choice("edm", "ddpm", "flow", help="formulation"))
    precond: str = field(default="edm", metadata=_choice("edm", "vp", "ve", help="edm: preconditioning"))
    sigma_data: float = field(default=0.5, metadata=_help("edm: data standard deviation σ_data"))
    schedule: str = field(default="linear", metadata=_choice(
        "linear", "scaled_linear", "cosine", help="ddpm: β schedule"))
    timesteps: int = field(default=1000, metadata=_help("ddpm: number of diffusion steps T"))
    prediction: str = field(default="eps", metadata=_choice(
        "eps", "x0", "v", help="ddpm: what the network predicts"))
    options: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "further constructor arguments of the formulation, e.g. {P_mean: -1.2, P_std: 1.2}"))
    timesteps_sampler: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "training noise-level sampler, e.g. {name: logit_normal, mean: 0, std: 1, shift: 3} "
        "(specreg.diffusion.timesteps; {}: the formulation's own draw)"))


@dataclass
class RegularizerConfig:
    """The spectral term λ·L_S of Eq. 17 (``loss: null`` trains the baseline)."""

    loss: str | None = field(default=None, metadata=_choice(
        None, "none", _loss_names, help="spectral loss name (null: no regularizer, the baseline)"))
    lam: float | str = field(default=1.0, metadata=_choice(
        float, "edm", "snr", "flow", "auto",
        help="λ: a constant, 'edm' (λ_EDM(σ)), 'snr', 'flow' (1/t²) or 'auto' (AutoLambda)"))
    sigma_max: float | None = field(default=None, metadata=_help(
        "apply the term only where σ <= sigma_max (null: everywhere)"))
    snr_gamma: float | None = field(default=None, metadata=_help(
        "with lam: snr, clip λ at this value (min-SNR-γ; null: no clipping)"))
    lam_scale: float = field(default=1.0, metadata=_help("a factor on λ, e.g. 4 with lam: edm for 4·λ_EDM(σ)"))
    fade_sigma: float | None = field(default=None, metadata=_help(
        "smooth gate: weight logistic((ln fade_sigma − ln σ)/fade_width) (null: no fade)"))
    fade_width: float = field(default=0.5, metadata=_help("width of the fade in nepers of σ"))
    space: str = field(default="latent", metadata=_choice(
        "latent", "decoded", help="where L_S is computed: on the model's own x̂0 (pixels for a pixel-space model), "
        "or, with an autoencoder, on its decoder's images D(x̂0) against D(x0)"))
    band_weights: str = field(default="fixed", metadata=_choice(
        "fixed", "learned", help="learned: per-band weights u(σ) trained with the network (EDM2-style, started "
        "at each band's mean error on the first batch; losses with bands: fourier_l2, wavelet_l2 with levels)"))
    options: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "keyword arguments of the loss, e.g. {wavelet: haar, levels: 3}"))
    auto: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "keyword arguments of AutoLambda when lam is 'auto'"))


@dataclass
class AutoencoderConfig:
    """Latent diffusion: the frozen autoencoder whose latents the model learns (null: pixels)."""

    name: str | None = field(default=None, metadata=_help(
        "a shipped autoencoder (fashion_vae) or a .safetensors path written by scripts/train_vae.py; "
        "null: the model works on the data itself"))


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing."""

    steps: int = field(default=1000, metadata=_help("optimizer steps in total"))
    batch_size: int = field(default=32, metadata=_help(
        "global batch per optimizer step (split over processes and accumulation)"))
    grad_accum: int = field(default=1, metadata=_help("gradient accumulation micro-steps per optimizer step"))
    optimizer: str = field(default="adam", metadata=_choice("adam", "adamw", help="optimizer"))
    lr: float = field(default=2e-4, metadata=_help("peak learning rate"))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata=_help("Adam β1, β2"))
    weight_decay: float = field(default=0.0, metadata=_help("weight decay (decoupled for adamw)"))
    warmup_steps: int = field(default=0, metadata=_help("linear learning-rate warm-up steps"))
    lr_schedule: str = field(default="constant", metadata=_choice(
        "constant", "cosine", "linear", help="after warm-up: constant, or decay to 0 at train.steps"))
    grad_clip: float | None = field(default=1.0, metadata=_help("max gradient norm (null: no clipping)"))
    ema_decay: float = field(default=0.999, metadata=_help("EMA decay of the weights"))
    mixed_precision: str = field(default="no", metadata=_choice("no", "fp16", "bf16", help="autocast precision"))
    seed: int = field(default=0, metadata=_help("seed of data order, noise and initialisation"))
    log_every: int = field(default=10, metadata=_help("steps between log lines (metrics.jsonl)"))
    sample_every: int = field(default=0, metadata=_help("steps between sample grids (0: never)"))
    checkpoint_every: int = field(default=500, metadata=_help("steps between checkpoints (and one at the end)"))
    keep_checkpoints: int = field(default=2, metadata=_help("checkpoints kept on disk (oldest removed)"))
    keep_every: int = field(default=0, metadata=_help("also keep each checkpoint whose step is a multiple of this, "
                                                     "beyond keep_checkpoints (0: none), e.g. a curve's points"))
    num_workers: int = field(default=0, metadata=_help("data-loader worker processes"))
    threads: int = field(default=0, metadata=_help(
        "CPU threads for torch while training (0: one thread without a GPU, faster per core and "
        "immune to a busy machine; torch's default with one)"))
    progress_bar: bool = field(default=True, metadata=_help("show a tqdm progress bar"))
    tensorboard: bool = field(default=True, metadata=_help("also log to TensorBoard when it is installed"))


@dataclass
class SampleConfig:
    """How to sample (periodic grids during training and ``specreg sample``)."""

    sampler: str = field(default="heun", metadata=_choice(
        "heun", "euler", "dpmpp_2m", "ddpm", "ddim", help="sampler (edm: heun/euler/dpmpp_2m; "
        "ddpm: ddpm/ddim; flow: euler/heun)"))
    steps: int = field(default=18, metadata=_help("sampling steps"))
    n: int = field(default=16, metadata=_help("samples per periodic grid"))
    eta: float = field(default=0.0, metadata=_help("ddim: η (0: deterministic)"))
    churn: float = field(default=0.0, metadata=_help("edm: stochastic churn S_churn"))
    seed: int = field(default=0, metadata=_help("seed of the sampling noise"))


@dataclass
class Config:
    """A whole run. ``Config()`` is a small texture-EDM baseline."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, run_dir: str | Path) -> Path:
        """Write the resolved config to ``run_dir/config.yaml``; return the path."""
        path = Path(run_dir) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_config(self))
        return path


# --------------------------------------------------------------------------- checking

SAMPLERS: dict[str, tuple[str, ...]] = {
    "edm": ("heun", "euler", "dpmpp_2m"), "ddpm": ("ddpm", "ddim"), "flow": ("euler", "heun"),
}


def _check_ranges(cfg: Config) -> None:
    """Numbers that must be positive, and cross-field rules."""
    positive = {
        "data.size": cfg.data.size, "data.channels": cfg.data.channels, "data.n": cfg.data.n,
        "train.steps": cfg.train.steps, "train.batch_size": cfg.train.batch_size,
        "train.grad_accum": cfg.train.grad_accum, "train.lr": cfg.train.lr,
        "train.log_every": cfg.train.log_every, "train.checkpoint_every": cfg.train.checkpoint_every,
        "train.keep_checkpoints": cfg.train.keep_checkpoints, "sample.steps": cfg.sample.steps,
        "sample.n": cfg.sample.n, "model.model_channels": cfg.model.model_channels,
        "diffusion.sigma_data": cfg.diffusion.sigma_data,
    }
    for key, value in positive.items():
        if not (value > 0 and math.isfinite(value)):  # also refuses nan and .inf
            raise ValueError(f"{key}={value!r} is not accepted; expected a finite number > 0")
    non_negative = {"train.warmup_steps": cfg.train.warmup_steps, "train.sample_every": cfg.train.sample_every,
                    "train.keep_every": cfg.train.keep_every,
                    "train.num_workers": cfg.train.num_workers, "train.threads": cfg.train.threads,
                    "train.weight_decay": cfg.train.weight_decay, "model.num_classes": cfg.model.num_classes}
    for key, value in non_negative.items():
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{key}={value!r} is not accepted; expected a finite number >= 0")
    seeds = {"data.seed": cfg.data.seed, "train.seed": cfg.train.seed, "sample.seed": cfg.sample.seed}
    for key, value in seeds.items():
        if not 0 <= value < 2**64:  # torch.Generator.manual_seed overflows beyond 64 bits
            raise ValueError(f"{key}={value!r} is not accepted; expected an integer from 0 to 2**64 - 1")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ValueError(f"train.ema_decay={cfg.train.ema_decay!r} is not accepted; expected 0 <= decay < 1")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ValueError(f"model.dropout={cfg.model.dropout!r} is not accepted; expected 0 <= p < 1")
    if len(cfg.train.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.train.betas):
        raise ValueError(f"train.betas={cfg.train.betas!r} is not accepted; expected two numbers [β1, β2], "
                         "each 0 <= β < 1")
    if cfg.train.grad_clip is not None and not cfg.train.grad_clip > 0:
        raise ValueError(f"train.grad_clip={cfg.train.grad_clip!r} is not accepted; expected a number > 0 or null")
    for key in ("lam_scale", "fade_width", "fade_sigma"):
        value = getattr(cfg.regularizer, key)
        if value is not None and not (math.isfinite(value) and value >= (0 if key == "lam_scale" else 1e-300)):
            raise ValueError(f"regularizer.{key}={value!r} is not accepted; expected a finite number "
                             f"{'>= 0' if key == 'lam_scale' else '> 0'}")
    if isinstance(cfg.regularizer.lam, float) and not (cfg.regularizer.lam >= 0 and math.isfinite(cfg.regularizer.lam)):
        raise ValueError(f"regularizer.lam={cfg.regularizer.lam!r} is not accepted; expected a finite number >= 0")
    for key in ("sigma_max", "snr_gamma"):
        value = getattr(cfg.regularizer, key)
        if value is not None and not (math.isfinite(value) and value >= (0 if key == "sigma_max" else 1e-300)):
            raise ValueError(f"regularizer.{key}={value!r} is not accepted; expected a finite number "
                             f"{'>= 0' if key == 'sigma_max' else '> 0'} or null")
    if cfg.diffusion.timesteps_sampler:
        from specreg.diffusion.timesteps import build_timestep_sampler

        build_timestep_sampler(cfg.diffusion.timesteps_sampler, where="diffusion.timesteps_sampler")
    samplers = SAMPLERS[cfg.diffusion.kind]
    if cfg.sample.sampler not in samplers:
        raise ValueError(f"sample.sampler={cfg.sample.sampler!r} is not accepted with "
                         f"diffusion.kind={cfg.diffusion.kind!r}; expected one of {list(samplers)}")
    if cfg.regularizer.space == "decoded" and cfg.autoencoder.name is None:
        raise ValueError("regularizer.space='decoded' needs an autoencoder (autoencoder.name); a pixel-space model "
                         "has nothing to decode, use regularizer.space=latent")
    if cfg.autoencoder.name is not None and cfg.data.is_audio:
        raise ValueError(f"autoencoder.name={cfg.autoencoder.name!r} is not accepted for audio data; the shipped "
                         "autoencoders are for images")
    if cfg.data.is_audio != (cfg.model.kind == "diffwave"):
        raise ValueError(f"model.kind={cfg.model.kind!r} does not fit data.kind={cfg.data.kind!r}; "
                         "audio data (speech, audio_folder) needs model.kind=diffwave, images need unet")


SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and check a :class:`Config` from nested mappings (missing keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"a config must be a mapping with sections {list(SECTIONS)}, got {raw!r}")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]}; accepted sections: {list(SECTIONS)}")
    cfg = Config(**{name: from_mapping(cls, raw.get(name), name) for name, cls in SECTIONS.items()})
    if cfg.regularizer.loss == "none":  # the natural spelling on a command line
        cfg.regularizer.loss = None
    _check_ranges(cfg)
    return cfg


# --------------------------------------------------------------------------- loading

def builtin_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    folder = resources.files("specreg") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_dir():
            path = path / CONFIG_FILE
        if not path.is_file():
            raise ValueError(f"config {str(name_or_path)!r} not found (no such file)")
        text = path.read_text()
    else:
        resource = resources.files("specreg") / "configs" / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise ValueError(f"config {str(name_or_path)!r} is neither a file nor a built-in config; "
                             f"built-in configs: {builtin_configs()}")
        text = resource.read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config {str(name_or_path)!r} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):  # overrides could not be applied to it
        raise ValueError(f"config {str(name_or_path)!r} is not accepted: its top level is a "
                         f"{type(raw).__name__}; a config must be a mapping with sections {list(SECTIONS)}")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=200"`` → (["train", "steps"], 200), with YAML scalar typing."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or "." not in key:
        raise ValueError(f"override {text!r} is not accepted; expected section.key=value, e.g. train.steps=200")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted ``key=value`` overrides in nested mappings (a copy; ``raw`` is unchanged)."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return out


def load_config(name_or_path: str | Path = "demo", overrides: list[str] | None = None) -> Config:
    """Load a built-in config by name or a YAML file (or run dir), apply overrides, check."""
    return config_from_dict(apply_overrides(_read_yaml(name_or_path), list(overrides or [])))


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text (sections in declaration order)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
