"""A DDPM++-style U-Net (Song et al. 2021, as re-implemented in NVlabs/edm ``SongUNet``).

Every network in :mod:`specreg.models` is called the same way::

    out = net(x, noise_label, class_labels=None, cond=None)   # out.shape == x.shape

``noise_label`` is the scalar the formulation feeds the network for each sample, shape
(B,) or a 0-dim tensor broadcast to the batch: the DDPM timestep t (as float, 0 … T−1),
EDM's c_noise = ln(σ)/4, or the flow-matching time t ∈ [0, 1]. The network does not
know which; the sinusoidal embedding covers all three scales.

Architecture (DDPM++ "standard" encoder and decoder):

* noise embedding: e = MLP(PE(c)), with PE(c)_j = [sin(c·ω_j), cos(c·ω_j)],
  ω_j = (1/10000)^(j/(h−1)), j = 0 … h−1, h = model_channels/2, and a two-layer SiLU MLP
  to ``4·model_channels`` features. A class label adds a learned embedding to PE(c)
  before the MLP.
* residual blocks: GroupNorm → SiLU → 3×3 conv → adaptive GroupNorm
  (x ← norm(x)·(1 + scale(e)) + shift(e)) → SiLU → dropout → 3×3 conv, plus a (1×1)
  skip path; the sum is scaled by √½ so that activations keep unit variance.
  ``adaptive_scale=False`` adds e instead (norm(x + W·e)), which is EDM's DDPM++ block:
  then the network has EDM SongUNet's parameters in the same order, and with copied
  weights its output agrees with SongUNet's to float32 rounding.
* self-attention (after the block, also scaled by √½) at the chosen resolutions and
  always at the bottleneck.
* down/upsampling inside residual blocks: 2×2 average pooling and nearest-neighbour
  ×2, which is exactly EDM's ``resample_filter=[1, 1]``.
* output: GroupNorm → SiLU → 3×3 conv whose weights and bias start at zero, so a
  freshly built network outputs exactly 0 (the preconditioned denoiser starts at
  c_skip·x, an eps-predictor at ε̂ = 0).

The last conv of each residual branch and each attention projection start at 1e-5 of
the Xavier scale (EDM's ``init_zero``): the branches begin almost switched off, which
keeps the initial network near the identity on its skip paths, yet every parameter
receives gradient from the first step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from specreg._checks import check_int, check_int_sequence, check_positive
from specreg.models.layers import (
    PositionalEmbedding,
    SelfAttention,
    UNetBlock,
    class_embedding_input,
    group_count,
    group_norm,
    noise_label_batch,
    xavier,
)
from specreg.schema import constructor_kwargs

# The building blocks live in specreg.models.layers; they stay importable from here.
__all__ = [
    "UNET_PRESETS",
    "PositionalEmbedding",
    "SelfAttention",
    "UNet",
    "UNetBlock",
    "UNetConfig",
    "class_embedding_input",
    "group_count",
    "noise_label_batch",
    "unet_preset",
]


# --------------------------------------------------------------------------------------
# The network


@dataclass
class UNetConfig:
    """Every constructor argument of :class:`UNet` (save it next to the weights)."""

    in_channels: int = 1
    out_channels: int | None = None
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    num_classes: int | None = None
    resolution: int = 32
    num_heads: int = 1
    label_dropout: float = 0.0
    cond_channels: int = 0
    channel_mult_emb: int = 4
    mid_attention: bool = True
    max_positions: float = 10000.0
    adaptive_scale: bool = True

    def __post_init__(self) -> None:
        # YAML and JSON give lists; the network wants tuples.
        self.channel_mult = tuple(self.channel_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)


UNET_PRESETS: dict[str, dict[str, Any]] = {
    # 1.37 M parameters at 32×32 gray: trains on a CPU.
    "cpu32": dict(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                  resolution=32),
    # 0.77 M parameters: the same at width 24, about half the compute.
    "cpu32s": dict(model_channels=24, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                   resolution=32),
    # 64×64 gray toy (checkerboards) at CPU scale, 1.92 M parameters.
    "cpu64": dict(model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                  resolution=64),
    # EDM's DDPM++ CIFAR-10 network (55.73 M parameters, 3 channels, 10 classes).
    "ddpmpp32": dict(model_channels=128, channel_mult=(2, 2, 2), num_res_blocks=4, attn_resolutions=(16,),
                     resolution=32, dropout=0.13, adaptive_scale=False),
    # EDM's DDPM++ network for 64×64 (AFHQv2, FFHQ; ≈62 M parameters).
    "ddpmpp64": dict(model_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=4,
                     attn_resolutions=(16,), resolution=64, dropout=0.05, adaptive_scale=False),
}


class UNet(nn.Module):
    """DDPM++ U-Net: ``net(x, noise_label, class_labels=None, cond=None)`` → shape of x.

    Args:
        in_channels: image channels C of x (1 gray, 3 RGB, any other count).
        out_channels: output channels (default ``in_channels``).
        model_channels: width of the first level; level ℓ has
            ``model_channels·channel_mult[ℓ]`` channels.
        channel_mult: one multiplier per resolution level; the image is halved between
            levels, so H and W must be divisible by 2^(len(channel_mult)−1).
        num_res_blocks: residual blocks per level in the encoder (decoder: one more).
        attn_resolutions: feature-map sizes (with ``resolution`` as the input size) that
            get self-attention; the bottleneck always has one (``mid_attention``).
        dropout: dropout probability inside residual blocks.
        num_classes: number of classes for class conditioning (None: unconditional;
            then ``class_labels`` is ignored so that one training loop serves both).
        resolution: nominal input size, used only to place attention; other sizes
            divisible by 2^(levels−1) also run.
        num_heads: attention heads (must divide each attended width).
        label_dropout: probability, in training, of replacing a sample's class label by
            the unconditional (zero) label, for classifier-free guidance.
        cond_channels: channels of an optional image-shaped ``cond`` concatenated to x
            (0: no ``cond``).
        channel_mult_emb: noise-embedding width = ``model_channels·channel_mult_emb``.
        mid_attention: self-attention in the first bottleneck block (EDM: always).
        max_positions: lowest frequency of the positional embedding is 1/max_positions.
        adaptive_scale: scale-and-shift conditioning (True, as in ADM) or EDM's DDPM++
            additive conditioning (False; with the ``ddpmpp*`` presets this reproduces
            EDM's networks, 55.73 M parameters for CIFAR-10).

    ``class_labels``: integer (B,) with −1 (or any out-of-range value) meaning "no
    label", or float (B, num_classes).
    """

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, model_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.0,
                 num_classes: int | None = None, resolution: int = 32, num_heads: int = 1,
                 label_dropout: float = 0.0, cond_channels: int = 0, channel_mult_emb: int = 4,
                 mid_attention: bool = True, max_positions: float = 10000.0,
                 adaptive_scale: bool = True) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, lo=1)
        out_channels = in_channels if out_channels is None else check_int("out_channels", out_channels, lo=1)
        model_channels = check_int("model_channels", model_channels, lo=4)
        if model_channels % 2:
            raise ValueError(f"model_channels={model_channels!r} is not accepted; expected an even number")
        channel_mult = check_int_sequence("channel_mult", channel_mult)
        num_res_blocks = check_int("num_res_blocks", num_res_blocks, lo=1)
        attn_resolutions = tuple(attn_resolutions)
        if attn_resolutions:
            attn_resolutions = check_int_sequence("attn_resolutions", attn_resolutions)
        _check_probability("dropout", dropout)
        _check_probability("label_dropout", label_dropout)
        if num_classes is not None:
            num_classes = check_int("num_classes", num_classes, lo=1)
        resolution = check_int("resolution", resolution, lo=1)
        cond_channels = check_int("cond_channels", cond_channels, lo=0)
        self.config = UNetConfig(
            in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
            channel_mult=channel_mult, num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
            dropout=float(dropout), num_classes=num_classes, resolution=resolution, num_heads=num_heads,
            label_dropout=float(label_dropout), cond_channels=cond_channels,
            channel_mult_emb=check_int("channel_mult_emb", channel_mult_emb, lo=1),
            mid_attention=bool(mid_attention), max_positions=float(max_positions),
            adaptive_scale=bool(adaptive_scale),
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.cond_channels = cond_channels
        self.label_dropout = float(label_dropout)
        self.num_levels = len(channel_mult)

        noise_channels = model_channels
        emb_channels = model_channels * self.config.channel_mult_emb
        block: dict[str, Any] = dict(emb_channels=emb_channels, num_heads=num_heads, dropout=dropout,
                                     adaptive_scale=self.config.adaptive_scale)

        # Mapping network: PE(c) (+ class embedding) → 2-layer SiLU MLP.
        self.map_noise = PositionalEmbedding(noise_channels, max_positions)
        self.map_label = xavier(nn.Linear(num_classes, noise_channels)) if num_classes else None
        self.map_layer0 = xavier(nn.Linear(noise_channels, emb_channels))
        self.map_layer1 = xavier(nn.Linear(emb_channels, emb_channels))

        # Encoder: every module's output is kept for the decoder's skip connections.
        self.conv_in = xavier(nn.Conv2d(in_channels + cond_channels, model_channels, 3, padding=1))
        self.enc = nn.ModuleList()
        skips = [model_channels]
        cout = model_channels
        for level, mult in enumerate(channel_mult):
            res = resolution >> level
            if level > 0:
                self.enc.append(UNetBlock(cout, cout, down=True, **block))
                skips.append(cout)
            for _ in range(num_res_blocks):
                cin, cout = cout, model_channels * mult
                self.enc.append(UNetBlock(cin, cout, attention=res in attn_resolutions, **block))
                skips.append(cout)

        # Decoder: bottleneck pair, then per level an upsampling block and
        # num_res_blocks + 1 blocks that each consume one skip.
        self.dec = nn.ModuleList()
        self._takes_skip: list[bool] = []
        for level in reversed(range(self.num_levels)):
            res = resolution >> level
            mult = channel_mult[level]
            if level == self.num_levels - 1:
                self._add_dec(UNetBlock(cout, cout, attention=self.config.mid_attention, **block), False)
                self._add_dec(UNetBlock(cout, cout, **block), False)
            else:
                self._add_dec(UNetBlock(cout, cout, up=True, **block), False)
            for idx in range(num_res_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_res_blocks and res in attn_resolutions
                self._add_dec(UNetBlock(cin, cout, attention=attn, **block), True)
        self.out_norm = group_norm(cout, 1e-6)
        self.out_conv = nn.Conv2d(cout, out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)  # initial output exactly zero
        if self.out_conv.bias is not None:  # it has one (Conv2d's default); this narrows the type
            nn.init.zeros_(self.out_conv.bias)

    def _add_dec(self, block: UNetBlock, takes_skip: bool) -> None:
        self.dec.append(block)
        self._takes_skip.append(takes_skip)

    @classmethod
    def from_config(cls, config: UNetConfig | Mapping[str, Any]) -> UNet:
        """Build from a :class:`UNetConfig` or a plain dict of constructor arguments."""
        return cls(**constructor_kwargs(UNetConfig, config, "UNet"))

    def embed(self, noise_label: torch.Tensor | float, class_labels: torch.Tensor | None, batch: int,
              device: torch.device) -> torch.Tensor:
        """The conditioning vector e (B, emb_channels) from noise and class labels."""
        dtype = self.map_layer0.weight.dtype
        c = noise_label_batch(noise_label, batch, device=device, dtype=dtype)
        emb = self.map_noise(c)
        # map_label exists exactly when num_classes is set; testing both tells type checkers it is an int
        if self.map_label is not None and self.num_classes and class_labels is not None:
            onehot = class_embedding_input(class_labels.to(device), self.num_classes, batch, dtype)
            if self.training and self.label_dropout > 0:
                keep = torch.rand(batch, 1, device=device) >= self.label_dropout
                onehot = onehot * keep.to(dtype)
            # EDM scales one-hot labels by √K so the embedding has unit-scale inputs.
            emb = emb + self.map_label(onehot * math.sqrt(self.num_classes))
        emb = F.silu(self.map_layer0(emb))
        return F.silu(self.map_layer1(emb))

    def _check_input(self, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x has shape {shape}; expected (B, C, H, W)")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x has {x.shape[1]} channels; this UNet expects in_channels={self.in_channels}")
        factor = 2 ** (self.num_levels - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"x has spatial size {tuple(x.shape[2:])}; with {self.num_levels} levels H and W must be "
                f"divisible by {factor}"
            )
        if self.cond_channels == 0 and cond is not None:
            raise ValueError("cond was given but this UNet was built with cond_channels=0")
        if self.cond_channels > 0:
            if cond is None:
                raise ValueError(f"this UNet was built with cond_channels={self.cond_channels}; cond is required")
            if cond.shape != (x.shape[0], self.cond_channels, *x.shape[2:]):
                raise ValueError(
                    f"cond has shape {tuple(cond.shape)}; expected "
                    f"{(x.shape[0], self.cond_channels, *x.shape[2:])}"
                )

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor | float,
                class_labels: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x, cond)
        emb = self.embed(noise_label, class_labels, x.shape[0], x.device)
        h = self.conv_in(x if cond is None else torch.cat([x, cond.to(x.dtype)], dim=1))
        skips = [h]
        for block in self.enc:
            h = block(h, emb)
            skips.append(h)
        for block, takes_skip in zip(self.dec, self._takes_skip):
            if takes_skip:
                h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, emb)
        return self.out_conv(F.silu(self.out_norm(h)))


def unet_preset(name: str, **overrides: Any) -> UNet:
    """A :class:`UNet` from :data:`UNET_PRESETS` with some arguments overridden."""
    if name not in UNET_PRESETS:
        raise ValueError(f"name={name!r} is not accepted; expected one of {sorted(UNET_PRESETS)}")
    return UNet(**{**UNET_PRESETS[name], **overrides})


def _check_probability(name: str, value: float) -> float:
    v = check_positive(name, value, allow_zero=True)
    if v >= 1:
        raise ValueError(f"{name}={value!r} is not accepted; expected a probability in [0, 1)")
    return v
