r"""Learned per-band weights for a loss that splits into bands (EDM2's learned uncertainty
applied per band); :class:`specreg.regularizer.SpectralRegularizer` turns Σ_b L_b into

    Σ_b [ L_b / exp(u_b(σ)) + u_b(σ) ]

(see :mod:`specreg.regularizer`, which re-exports it; kept apart so each module stays short).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from specreg.losses.extras import LogRecord


class BandWeights(nn.Module):
    r"""Learned per-band log-weights u(σ) (EDM2's uncertainty head, one output per band).

        u(σ) = Linear(φ(ln σ / 4)),   φ(c) = √2 · cos(2π (f·c + φ0)),

    with ``features`` frozen random frequencies f ~ N(0, 1) and phases φ0 ~ U[0, 1)
    (drawn from ``seed``, so every process and every resume gets the same ones). σ is
    clamped to [1e-8, 1e8] first (σ = 0 and ∞ occur in flow matching at t = 0 and 1).

    ``init="data"`` (default): the linear layer's weight starts at 0 and its bias at
    u_b = ln mean_batch L_b of the first training batch the regularizer sees
    (:meth:`initialize`, averaged over processes when torch.distributed is running), so
    every band starts at its stationary point, weighted to O(1) whatever its natural
    scale, and the head only has to learn the σ-dependence. ``init="zero"`` starts every
    weight at 1 (u = 0) as EDM2 does; with Adam that is slow when the band errors are far
    from 1: while every L_b e^{−u_b} lies on the same side of 1, every band gets the same
    ±lr step, so in a 600-step fine-tune at lr 2e-4 the bands never separated
    (docs/results/README.md §6). A band's start error is floored at ``INIT_FLOOR`` = 1e-6
    times the largest band's (a band with no error would otherwise start at weight
    1/tiny ≈ e^87), and a first batch with no error at all starts every u_b at 0.
    """

    freqs: torch.Tensor  # buffers
    phases: torch.Tensor
    initialized: torch.Tensor
    INIT_FLOOR = 1e-6  # a band's start error relative to the largest band's, at least

    INITS = ("data", "zero")

    def __init__(self, n_bands: int, features: int = 16, seed: int = 0, init: str = "data") -> None:
        super().__init__()
        for name, v in (("n_bands", n_bands), ("features", features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} is not accepted; expected an integer >= 1")
        if init not in self.INITS:
            raise ValueError(f"init={init!r} is not accepted; expected one of {list(self.INITS)}")
        g = torch.Generator().manual_seed(int(seed))
        self.register_buffer("freqs", 2 * math.pi * torch.randn(features, generator=g))
        self.register_buffer("phases", 2 * math.pi * torch.rand(features, generator=g))
        # saved with the head, so a resumed run does not start over
        self.register_buffer("initialized", torch.tensor(init == "zero"))
        self._ready: bool | None = init == "zero"  # a host copy of `initialized`: no device sync per step
        self.linear = nn.Linear(features, n_bands)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @property
    def ready(self) -> bool:
        """Whether the bias has its start value (data-dependent init done, or ``init="zero"``)."""
        if self._ready is None:
            self._ready = bool(self.initialized)
        return self._ready

    @torch.no_grad()
    def initialize(self, bands: torch.Tensor) -> None:
        """Set u_b = ln mean_batch L_b from band errors ``bands`` (B, n_bands), so that
        exp(−u_b)·L_b starts at 1 for every band; the mean is taken over all processes when
        torch.distributed is initialised (every rank must start from the same head)."""
        if bands.ndim != 2 or bands.shape[1] != self.linear.out_features:
            raise ValueError(f"bands has shape {tuple(bands.shape)}; expected (B, {self.linear.out_features})")
        m = bands.detach().to(self.linear.bias.dtype).mean(0)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(m)
            m /= torch.distributed.get_world_size()
        m = torch.nan_to_num(m, nan=1.0, posinf=1.0)
        # a band with no error on the first batch (a zero batch, a band the data lacks) would
        # start at weight 1/tiny ≈ e^87; the floor keeps every start weight within 1e6 of the
        # largest band's, and a batch with no error at all starts every weight at 1 (u = 0)
        floor = m.max() * self.INIT_FLOOR
        self.linear.bias.copy_(torch.where(floor > 0, torch.log(torch.maximum(m, floor)), torch.zeros_like(m)))
        self.initialized.fill_(True)
        self._ready = True

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # heads saved before the flag existed had been trained from their start value
        state_dict.setdefault(prefix + "initialized", torch.tensor(True))
        self._ready = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        """u(σ), shape (B, n_bands), for σ of shape (B,)."""
        c = torch.log(sigma.detach().to(self.freqs.dtype).clamp(1e-8, 1e8)) / 4
        feats = math.sqrt(2) * torch.cos(c[:, None] * self.freqs + self.phases)
        return self.linear(feats)

    @torch.no_grad()
    def weights(self, sigma: torch.Tensor) -> torch.Tensor:
        """The effective weights exp(−u_b(σ)), (len(σ), n_bands): what each band's error is
        multiplied by at noise level σ."""
        return torch.exp(-self(torch.as_tensor(sigma, dtype=self.freqs.dtype, device=self.freqs.device)
                                .reshape(-1)))

    LOG_SIGMA = (0.002, 80.0, 25)  # the σ grid of log_record: first, last, count (log-spaced)

    def log_record(self, labels: list[str] | None = None) -> LogRecord:
        """The weights exp(−u_b(σ)) on the σ grid ``LOG_SIGMA``, ``[band][sigma]``, as the log
        record ``band_weights`` (with ``sigma`` and the band names ``bands``: ``labels``, or
        "band b")."""
        lo, hi, n = self.LOG_SIGMA
        sigma = torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)
        w = self.weights(sigma.to(self.freqs.dtype)).cpu().double()
        labels = labels if labels is not None else [f"band {b}" for b in range(w.shape[1])]
        return LogRecord("band_weights", w.T.tolist(), {"sigma": sigma.tolist(), "bands": labels})


__all__ = ["BandWeights"]
