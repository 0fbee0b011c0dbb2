"""What a loss offers besides its value: bands, and extras for a training loop.

Two explicit protocols, so that neither the regularizer nor the trainer probes attributes:

* :class:`BandedLoss` — the loss also splits into bands L_b that sum to its value; what
  learned band weights (:class:`specreg.regularizer.BandWeights`) need.
* :class:`TrainingExtras` — what a module with state of its own asks of a training loop
  beyond ``forward``: to be fitted on clean data before training, extra parameters that
  train with the network, and values to log at each checkpoint. Every
  :class:`~specreg.losses.SpectralLoss` is one (asking nothing by default); the
  :class:`~specreg.regularizer.SpectralRegularizer` is one that passes on its loss's and
  adds its band weights'. The trainer calls exactly these four members.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class LogRecord:
    """Values logged at a checkpoint: the trainer keeps ``<name>.json`` in the run directory
    as ``{**fixed, "steps": {step: value}}`` (steps after the one resumed from are dropped)."""

    name: str
    value: Any  # this step's value (JSON-serialisable)
    fixed: dict[str, Any] = field(default_factory=dict)  # what does not change with the step (axes, labels)


class TrainingExtras:
    """What a training loop does for a module besides calling it (a mixin for ``nn.Module`` classes).

    The defaults ask for nothing but the module's trainable parameters, so a module that
    needs none of it implements the protocol by inheriting it.
    """

    @property
    def needs_fit(self) -> bool:
        """Whether :meth:`fit` must see clean training data before training starts."""
        return False

    def fit(self, x0: torch.Tensor) -> Any:
        """Estimate what the module takes from data on the clean batch ``x0`` (B, C, *spatial);
        called once before training (and before a checkpoint is loaded, so a resumed run
        loads the same values) only where :attr:`needs_fit` is true."""
        return self

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer trains with the network: the module's own trainable ones."""
        if not isinstance(self, nn.Module):
            return []
        return [p for p in self.parameters() if p.requires_grad]

    def log_records(self) -> list[LogRecord]:
        """Values to log at each checkpoint (none by default)."""
        return []


class BandedLoss:
    """A loss that also returns its value split into ``n_bands`` bands, (B, n_bands), which
    sum to the per-sample value; mixed into the loss classes that can (``fourier_l2``,
    ``wavelet_l2``)."""

    @property
    def n_bands(self) -> int:  # pragma: no cover
        """How many bands :meth:`per_band` returns."""
        raise NotImplementedError

    def per_band(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def band_labels(self) -> list[str]:
        """One name per band, in :meth:`per_band`'s order."""
        return [f"band {b}" for b in range(self.n_bands)]


__all__ = ["BandedLoss", "LogRecord", "TrainingExtras"]
