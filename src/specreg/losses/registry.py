"""Build any spectral loss from a short name, so configs and the CLI can name one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from specreg.losses.fourier import (
    FocalFrequencyLoss,
    FourierAmplitudeLoss,
    FourierAmplitudePhaseLoss,
    PowerSpectrumLoss,
)


def _wavelet(**kw: Any) -> nn.Module:
    from specreg.losses.wavelet import WaveletLoss

    return WaveletLoss(**kw)


def _fourier_l2(**kw: Any) -> nn.Module:
    from specreg.losses.quadratic import FourierL2Loss

    return FourierL2Loss(**kw)


def _wavelet_l2(**kw: Any) -> nn.Module:
    from specreg.losses.quadratic import WaveletL2Loss

    return WaveletL2Loss(**kw)


def _mrstft(**kw: Any) -> nn.Module:
    from specreg.losses.stft import MultiResolutionSTFTLoss

    return MultiResolutionSTFTLoss(**kw)


def _ap(form: str) -> Callable[..., nn.Module]:
    def make(**kw: Any) -> nn.Module:
        if "form" in kw and kw["form"] != form:
            raise ValueError(f"form={kw['form']!r} contradicts the loss name; use 'fourier_ap' "
                             "(form='paper') or 'fourier_ap_weighted' (form='weighted')")
        kw.pop("form", None)
        return FourierAmplitudePhaseLoss(form=form, **kw)

    return make


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "fourier_amp": FourierAmplitudeLoss,
    "fourier_ap": _ap("paper"),
    "fourier_ap_weighted": _ap("weighted"),
    "wavelet": _wavelet,
    "fourier_l2": _fourier_l2,
    "wavelet_l2": _wavelet_l2,
    "mrstft": _mrstft,
    "psd": PowerSpectrumLoss,
    "ffl": FocalFrequencyLoss,
}

# Common spellings that map onto the names above (a wavelet name alone means "wavelet").
_ALIASES = {"haar": ("wavelet", {"wavelet": "haar"}), "bior1.3": ("wavelet", {"wavelet": "bior1.3"})}


def loss_names() -> tuple[str, ...]:
    """Every name :func:`build_loss` accepts (registered losses and their shorthands)."""
    return tuple(sorted([*LOSSES, *_ALIASES]))


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Return the loss called ``name`` built with ``kwargs``.

    Names: ``fourier_amp`` (Eq. 14), ``fourier_ap`` (Eq. 15 as printed),
    ``fourier_ap_weighted`` (Eq. 15, amplitude-weighted wrap-aware phase), ``wavelet``
    (Eq. 16; pass ``wavelet="haar"``, ``"bior1.3"``, …), ``fourier_l2`` and ``wavelet_l2``
    (frequency- and band-weighted L2, which keep the posterior mean), ``mrstft``, ``psd``, ``ffl``;
    ``haar`` and ``bior1.3`` are shorthands for the wavelet loss with that family.
    """
    if name in _ALIASES:
        base, extra = _ALIASES[name]
        return LOSSES[base](**{**extra, **kwargs})
    if name not in LOSSES:
        raise ValueError(f"loss name={name!r} is not accepted; expected one of {list(loss_names())}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as e:  # unknown keyword: say which loss and what it takes
        raise ValueError(f"build_loss({name!r}): {e}") from None
