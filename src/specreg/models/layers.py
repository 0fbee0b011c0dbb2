"""Layers shared by the networks of :mod:`specreg.models`: conditioning inputs, init and blocks.

* :func:`noise_label_batch` and :func:`class_embedding_input` turn the ``noise_label`` and
  ``class_labels`` arguments every network takes into (B,) and (B, num_classes) tensors.
* :func:`group_count`, :func:`group_norm` and :func:`xavier` are EDM's GroupNorm rule and
  weight init (``ZERO_SCALE`` for branches that start almost off, EDM's ``init_zero``).
* :class:`PositionalEmbedding`, :class:`SelfAttention` and :class:`UNetBlock` are the
  building blocks of the DDPM++ U-Net (their equations are in :mod:`specreg.models.unet`
  and in each docstring).

Module and parameter names are those of the saved checkpoints: renaming an attribute
here changes the ``state_dict`` keys that old runs load.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from specreg._checks import check_positive

__all__ = [
    "ATTN_SCALE",
    "ZERO_SCALE",
    "PositionalEmbedding",
    "SelfAttention",
    "UNetBlock",
    "class_embedding_input",
    "group_count",
    "group_norm",
    "noise_label_batch",
    "xavier",
]


# --------------------------------------------------------------------------------------
# Conditioning inputs and initialisation (also used by DiffWave)


def noise_label_batch(noise_label: torch.Tensor | float, batch: int, *, device: torch.device,
                      dtype: torch.dtype) -> torch.Tensor:
    """The noise label as a (B,) tensor: a 0-dim (or one-element) label is broadcast.

    Accepts (B,), (B, 1, …, 1) (e.g. σ already shaped for broadcasting) or a scalar.
    Only shapes are inspected, never values.
    """
    c = torch.as_tensor(noise_label, device=device, dtype=dtype).reshape(-1)
    if c.numel() == 1:
        return c.expand(batch)
    if c.numel() != batch:
        shape = tuple(torch.as_tensor(noise_label).shape)
        raise ValueError(
            f"noise_label has shape {shape}; expected (B,) with B={batch}, a 0-dim tensor or a number"
        )
    return c


def class_embedding_input(class_labels: torch.Tensor, num_classes: int, batch: int,
                          dtype: torch.dtype) -> torch.Tensor:
    """Class labels as a (B, num_classes) float matrix.

    Integer labels (B,) become one-hot rows; a label outside 0 … num_classes−1 (the
    datasets use −1 for "no label") becomes a zero row, i.e. the unconditional
    embedding also used by label dropout. Float labels (B, num_classes) are used as they
    are (one-hot or soft labels).
    """
    if class_labels.is_floating_point():
        if class_labels.shape != (batch, num_classes):
            raise ValueError(
                f"class_labels has shape {tuple(class_labels.shape)}; float labels must be "
                f"(B, num_classes) = ({batch}, {num_classes}), integer labels (B,)"
            )
        return class_labels.to(dtype)
    if class_labels.shape != (batch,):
        raise ValueError(
            f"class_labels has shape {tuple(class_labels.shape)}; integer labels must be (B,) = ({batch},)"
        )
    classes = torch.arange(num_classes, device=class_labels.device)
    return (class_labels.unsqueeze(1) == classes).to(dtype)


def group_count(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """GroupNorm groups: min(32, C//4) as in EDM, lowered to the nearest divisor of C.

    EDM's rule alone fails for channel counts such as 130 (32 does not divide 130); the
    divisor keeps any width usable and is identical to EDM whenever EDM's rule works.
    """
    target = max(1, min(max_groups, channels // min_channels_per_group))
    for g in range(target, 0, -1):
        if channels % g == 0:
            return g
    return 1  # pragma: no cover - g = 1 always divides


def group_norm(channels: int, eps: float) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with :func:`group_count` groups."""
    return nn.GroupNorm(group_count(channels), channels, eps=eps)


_Layer = TypeVar("_Layer", nn.Linear, nn.Conv2d)


def xavier(layer: _Layer, scale: float = 1.0) -> _Layer:
    """Xavier-uniform weights times ``scale`` and zero bias (EDM's ``weight_init``)."""
    nn.init.xavier_uniform_(layer.weight)
    with torch.no_grad():
        layer.weight.mul_(scale)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


ZERO_SCALE = 1e-5  # EDM init_zero: residual branches start almost off but still learn
ATTN_SCALE = math.sqrt(0.2)  # EDM init_attn for the qkv projection


# --------------------------------------------------------------------------------------
# Building blocks


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a noise label c (B,) → (B, num_channels).

    PE(c) = [sin(c·ω_0), …, sin(c·ω_{h−1}), cos(c·ω_0), …, cos(c·ω_{h−1})],
    ω_j = (1/max_positions)^(j/(h−1)), h = num_channels/2: angular frequencies from 1
    down to 1/max_positions rad per unit of c (EDM's ``endpoint=True`` variant, with
    its sin/cos order).
    """

    def __init__(self, num_channels: int, max_positions: float = 10000.0) -> None:
        super().__init__()
        if num_channels < 4 or num_channels % 2:
            raise ValueError(f"num_channels={num_channels!r} is not accepted; expected an even number >= 4")
        self.num_channels = num_channels
        self.max_positions = check_positive("max_positions", max_positions)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        j = torch.arange(half, dtype=c.dtype, device=c.device) / (half - 1)
        angle = torch.outer(c, (1.0 / self.max_positions) ** j)
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, max_positions={self.max_positions:g}"


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions of a feature map.

    out = x + proj(softmax(qᵀk/√d)·v) per head, with q, k, v = 1×1 conv(GroupNorm(x))
    and d = C/num_heads; the caller applies the √½ skip scale.
    """

    def __init__(self, channels: int, num_heads: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        if num_heads < 1 or channels % num_heads:
            raise ValueError(
                f"num_heads={num_heads!r} is not accepted for {channels} channels; "
                "expected a positive divisor of the channel count"
            )
        self.num_heads = num_heads
        self.norm = group_norm(channels, eps)
        self.qkv = xavier(nn.Conv2d(channels, 3 * channels, 1), ATTN_SCALE)
        self.proj = xavier(nn.Conv2d(channels, channels, 1), ZERO_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(b * self.num_heads, d, 3, h * w)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # (B·heads, HW, d)
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √d) v
        return x + self.proj(a.transpose(1, 2).reshape(b, c, h, w))


class UNetBlock(nn.Module):
    """Residual block with adaptive scale-shift noise conditioning (and optional attention).

    h = conv0(SiLU(GN(x))) (after ×2 resampling if ``up``/``down``);
    h = conv1(dropout(SiLU(GN(h)·(1 + scale) + shift))), (scale, shift) = affine(e);
    y = √½ (h + skip(x)); with attention, y = √½ · attn(y).
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, *, up: bool = False,
                 down: bool = False, attention: bool = False, num_heads: int = 1, dropout: float = 0.0,
                 eps: float = 1e-6, adaptive_scale: bool = True) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a UNetBlock resamples in one direction: up and down cannot both be True")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.dropout = float(dropout)
        self.skip_scale = math.sqrt(0.5)
        self.adaptive_scale = adaptive_scale
        self.norm0 = group_norm(in_channels, eps)
        self.conv0 = xavier(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.affine = xavier(nn.Linear(emb_channels, (2 if adaptive_scale else 1) * out_channels))
        self.norm1 = group_norm(out_channels, eps)
        self.conv1 = xavier(nn.Conv2d(out_channels, out_channels, 3, padding=1), ZERO_SCALE)
        self.skip = None
        if in_channels != out_channels or up or down:
            self.skip = xavier(nn.Conv2d(in_channels, out_channels, 1))
        self.attn = SelfAttention(out_channels, num_heads, eps) if attention else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        # EDM's [1, 1] filter: a 2×2 box, i.e. average pooling down and nearest up.
        if self.down:
            return F.avg_pool2d(x, 2)
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(self._resample(F.silu(self.norm0(x))))
        params = self.affine(emb).to(h.dtype)[:, :, None, None]
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        else:  # EDM's DDPM++ setting: the embedding is only added
            h = F.silu(self.norm1(h + params))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        orig = self._resample(x)
        y = (h + (self.skip(orig) if self.skip is not None else orig)) * self.skip_scale
        if self.attn is not None:
            y = self.attn(y) * self.skip_scale
        return y
