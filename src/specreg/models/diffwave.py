"""DiffWave (Kong et al. 2021): a non-causal WaveNet for waveform diffusion.

Called like every network in :mod:`specreg.models`::

    out = net(x, noise_label, class_labels=None, cond=None)   # x, out: (B, 1, T)

* input: 1×1 conv to C = ``residual_channels`` channels, ReLU;
* diffusion-step embedding: e(t)_j = [sin(t·10^(4j/63)), cos(t·10^(4j/63))],
  j = 0 … 63 (128 values, paper Eq. in §3), then two fully connected layers with SiLU
  (128 → 512 → 512); each residual layer adds its own linear projection of it;
* ``residual_layers`` layers, layer i with a 3-tap conv of dilation 2^(i mod
  ``dilation_cycle``), gated activation tanh(·)·σ(·), a 1×1 conv split into residual
  (added to the input, scaled by √½) and skip outputs;
* optional mel conditioning: the log-mel (B, n_mels, frames) is upsampled in time by
  ``hop_length`` with transposed 2-D convs (strides whose product is the hop, leaky ReLU
  0.4) and enters every layer through a 1×1 conv added before the gate;
* output: Σ skips / √L → 1×1 conv → ReLU → 1×1 conv with zero-initialised weights, so a
  fresh network outputs exactly 0.

``noise_label`` is whatever the formulation feeds (DDPM step t as float, c_noise, or a
flow time); the paper's embedding was designed for integer steps t ∈ [0, T).
``class_labels`` is accepted for interface uniformity and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from specreg._checks import check_int, check_int_sequence
from specreg.models.layers import noise_label_batch
from specreg.schema import constructor_kwargs

__all__ = [
    "DiffWave",
    "DiffWaveConfig",
    "DiffWaveResidualLayer",
    "DiffusionStepEmbedding",
    "MelUpsampler",
    "default_upsample_strides",
]


def _kaiming_conv1d(*args: Any, **kwargs: Any) -> nn.Conv1d:
    # The reference implementation initialises every 1-D conv with Kaiming-normal weights.
    layer = nn.Conv1d(*args, **kwargs)
    nn.init.kaiming_normal_(layer.weight)
    return layer


def default_upsample_strides(hop_length: int) -> tuple[int, ...]:
    """Split ``hop_length`` into two time strides, as even as possible (256 → (16, 16)).

    The paper's vocoder uses two 16× layers for hop 256; a hop with no divisor other than
    1 and itself (e.g. 7) gets a single layer.
    """
    best = 1
    for s in range(1, math.isqrt(hop_length) + 1):
        if hop_length % s == 0:
            best = s
    if best == 1:
        return (hop_length,)
    return (hop_length // best, best)


class DiffusionStepEmbedding(nn.Module):
    """e(t) = SiLU(W₂·SiLU(W₁·[sin(t·10^(4j/63)), cos(t·10^(4j/63))]_{j=0…63})).

    Output (B, ``hidden``) with 128 sinusoid features in (half sin, half cos) order.
    """

    def __init__(self, num_frequencies: int = 64, hidden: int = 512) -> None:
        super().__init__()
        if num_frequencies < 2:
            raise ValueError(f"num_frequencies={num_frequencies!r} is not accepted; expected an integer >= 2")
        self.num_frequencies = num_frequencies
        self.projection1 = nn.Linear(2 * num_frequencies, hidden)
        self.projection2 = nn.Linear(hidden, hidden)

    def sinusoids(self, t: torch.Tensor) -> torch.Tensor:
        j = torch.arange(self.num_frequencies, dtype=t.dtype, device=t.device)
        angle = torch.outer(t, 10.0 ** (j * 4.0 / (self.num_frequencies - 1)))
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.projection1(self.sinusoids(t)))
        return F.silu(self.projection2(h))


class MelUpsampler(nn.Module):
    """Upsample a mel spectrogram (B, n_mels, frames) → (B, n_mels, frames·hop).

    Each stage is a transposed 2-D conv over (mel, time) with kernel (3, 2s), stride
    (1, s) and padding (1, s//2), followed by leaky ReLU(0.4); with even s it maps N
    frames to exactly N·s samples (odd s gives one extra sample, cropped).
    """

    def __init__(self, strides: Sequence[int]) -> None:
        super().__init__()
        self.strides = check_int_sequence("upsample_strides", strides)
        self.convs = nn.ModuleList(
            nn.ConvTranspose2d(1, 1, (3, 2 * s), stride=(1, s), padding=(1, s // 2)) for s in self.strides
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = mel.unsqueeze(1)
        for s, conv in zip(self.strides, self.convs):
            n = h.shape[-1]
            h = F.leaky_relu(conv(h)[..., : n * s], 0.4)
        return h.squeeze(1)


class DiffWaveResidualLayer(nn.Module):
    """One layer: y = dilconv(x + W_e·e) (+ W_c·mel); z = tanh(y_f)·σ(y_g);
    (res, skip) = 1×1 conv(z); returns ((x + res)/√2, skip)."""

    def __init__(self, channels: int, dilation: int, emb_channels: int, n_mels: int | None) -> None:
        super().__init__()
        self.dilation = dilation
        self.dilated_conv = _kaiming_conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.diffusion_projection = nn.Linear(emb_channels, channels)
        self.conditioner_projection = _kaiming_conv1d(n_mels, 2 * channels, 1) if n_mels else None
        self.output_projection = _kaiming_conv1d(channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor,
                mel: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.dilated_conv(x + self.diffusion_projection(emb).unsqueeze(-1))
        if self.conditioner_projection is not None and mel is not None:
            y = y + self.conditioner_projection(mel)
        gate, filt = y.chunk(2, dim=1)
        y = self.output_projection(torch.sigmoid(gate) * torch.tanh(filt))
        residual, skip = y.chunk(2, dim=1)
        return (x + residual) * math.sqrt(0.5), skip


@dataclass
class DiffWaveConfig:
    """Every constructor argument of :class:`DiffWave`."""

    residual_layers: int = 30
    residual_channels: int = 64
    dilation_cycle: int = 10
    n_mels: int | None = None
    hop_length: int = 256
    upsample_strides: tuple[int, ...] | None = None
    emb_channels: int = 512

    def __post_init__(self) -> None:
        if self.upsample_strides is not None:
            self.upsample_strides = tuple(self.upsample_strides)


class DiffWave(nn.Module):
    """DiffWave: ``net(x, noise_label, class_labels=None, cond=None)`` with x (B, 1, T).

    Args:
        residual_layers: L, number of residual layers (paper: 30).
        residual_channels: C, width of every layer (paper: 64).
        dilation_cycle: dilations 1, 2, …, 2^(cycle−1), repeated (paper: 10).
        n_mels: mel bands of ``cond``; None builds the unconditional model.
        hop_length: audio samples per mel frame; ``cond`` must have T / hop frames.
        upsample_strides: time strides of the upsampler, product = ``hop_length``
            (default :func:`default_upsample_strides`, (16, 16) for 256).
        emb_channels: width of the diffusion-step MLP (paper: 512).

    The receptive field is 1 + 2·Σᵢ 2^(i mod cycle) samples (6 139 for the paper's
    30 layers, cycle 10).
    """

    def __init__(self, residual_layers: int = 30, residual_channels: int = 64, dilation_cycle: int = 10,
                 n_mels: int | None = None, hop_length: int = 256,
                 upsample_strides: Sequence[int] | None = None, emb_channels: int = 512) -> None:
        super().__init__()
        for name, value in (("residual_layers", residual_layers), ("residual_channels", residual_channels),
                            ("dilation_cycle", dilation_cycle), ("hop_length", hop_length),
                            ("emb_channels", emb_channels)):
            check_int(name, value, lo=1)
        if n_mels is not None and (isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels < 1):
            raise ValueError(f"n_mels={n_mels!r} is not accepted; expected None (unconditional) or an integer >= 1")
        strides = default_upsample_strides(hop_length) if upsample_strides is None else \
            check_int_sequence("upsample_strides", upsample_strides)
        if math.prod(strides) != hop_length:
            raise ValueError(
                f"upsample_strides={tuple(upsample_strides or ())!r} is not accepted; their product must equal "
                f"hop_length={hop_length}"
            )
        self.config = DiffWaveConfig(residual_layers, residual_channels, dilation_cycle, n_mels, hop_length,
                                     tuple(strides), emb_channels)
        self.n_mels = n_mels
        self.hop_length = hop_length
        self.input_projection = _kaiming_conv1d(1, residual_channels, 1)
        self.diffusion_embedding = DiffusionStepEmbedding(64, emb_channels)
        self.upsampler = MelUpsampler(strides) if n_mels else None
        self.layers = nn.ModuleList(
            DiffWaveResidualLayer(residual_channels, 2 ** (i % dilation_cycle), emb_channels, n_mels)
            for i in range(residual_layers)
        )
        self.skip_projection = _kaiming_conv1d(residual_channels, residual_channels, 1)
        self.output_projection = _kaiming_conv1d(residual_channels, 1, 1)
        nn.init.zeros_(self.output_projection.weight)  # initial output exactly zero
        if self.output_projection.bias is not None:  # it has one (Conv1d's default); this narrows the type
            nn.init.zeros_(self.output_projection.bias)

    @property
    def receptive_field(self) -> int:
        """Samples of x that one output sample depends on: 1 + 2·Σ dilations."""
        return 1 + 2 * sum(cast(DiffWaveResidualLayer, layer).dilation for layer in self.layers)

    @classmethod
    def from_config(cls, config: DiffWaveConfig | Mapping[str, Any]) -> DiffWave:
        """Build from a :class:`DiffWaveConfig` or a plain dict of constructor arguments."""
        return cls(**constructor_kwargs(DiffWaveConfig, config, "DiffWave"))

    def _check_input(self, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x has shape {shape}; expected (B, 1, T)")
        if self.n_mels is None:
            if cond is not None:
                raise ValueError("cond was given but this DiffWave is unconditional (n_mels=None)")
            return
        if cond is None:
            raise ValueError(f"this DiffWave is mel-conditioned (n_mels={self.n_mels}); cond is required")
        expected = (x.shape[0], self.n_mels, x.shape[2] // self.hop_length)
        if x.shape[2] % self.hop_length or tuple(cond.shape) != expected:
            raise ValueError(
                f"cond has shape {tuple(cond.shape)} for x of shape {tuple(x.shape)}; expected "
                f"(B, n_mels, T / hop_length) = {expected} with T divisible by hop_length={self.hop_length}"
            )

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor | float,
                class_labels: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x, cond)
        dtype = self.input_projection.weight.dtype
        t = noise_label_batch(noise_label, x.shape[0], device=x.device, dtype=dtype)
        emb = self.diffusion_embedding(t)
        # _check_input made sure that a mel-conditioned model (one with an upsampler) got cond
        mel = self.upsampler(cond.to(dtype)) if self.upsampler is not None and cond is not None else None
        h = F.relu(self.input_projection(x))
        skip = torch.zeros_like(h)
        for layer in self.layers:
            h, s = layer(h, emb, mel)
            skip = skip + s
        h = F.relu(self.skip_projection(skip * (1.0 / math.sqrt(len(self.layers)))))
        return self.output_projection(h)
