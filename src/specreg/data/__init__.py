"""Datasets. Every item is a pair: ``(x, label)`` for images and waveforms (label −1
when the data has no classes), ``(x, mel)`` for :class:`MelConditioned`.

Images are float32 (C, H, W) in [−1, 1]; waveforms float32 (1, T) in [−1, 1]. Nothing
is downloaded unless a constructor is called with ``download=True``.

Every data set a config or a study can name is one entry of the registry
(:mod:`specreg.data.registry`; the entry types in :mod:`specreg.data.entry`, the shipped
entries in :mod:`specreg.data.sets`): its kind,
reference names, builder, train/held-out rows and special structure. Training and the
reference sets of ``specreg eval`` / ``specreg compare`` are built by that one factory.

Names are imported on first use (PEP 562), so the registry can be read (``specreg
--help``, config checks) without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name → the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("ASTERISK_ROOT", "AsteriskSpeech", "AudioFolder", "LogMel", "MelConditioned", "asterisk_split",
                     "load_audio", "mel_filterbank"), "audio"),
    **dict.fromkeys(("Checkerboards", "checkerboard", "checkerboard_lines", "checkerboard_peaks"), "checkerboards"),
    **dict.fromkeys(("FASHION_MNIST_ROOT", "FashionMNIST", "download_fashion_mnist", "read_idx"), "fashion_mnist"),
    **dict.fromkeys(("ImageFolder", "SkDigits"), "images"),
    "ChecksumError": "pixels",
    "TextureCrops": "textures",
    **dict.fromkeys(("DataSet", "RealRequest", "RealSets", "Rows"), "entry"),
    **dict.fromkeys(("DATASETS", "build_dataset", "data_set", "reference_set", "register", "unregister"),
                    "registry"),
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from specreg.data.audio import (
        ASTERISK_ROOT as ASTERISK_ROOT,
        AsteriskSpeech as AsteriskSpeech,
        AudioFolder as AudioFolder,
        LogMel as LogMel,
        MelConditioned as MelConditioned,
        asterisk_split as asterisk_split,
        load_audio as load_audio,
        mel_filterbank as mel_filterbank,
    )
    from specreg.data.checkerboards import (
        Checkerboards as Checkerboards,
        checkerboard as checkerboard,
        checkerboard_lines as checkerboard_lines,
        checkerboard_peaks as checkerboard_peaks,
    )
    from specreg.data.entry import (
        DataSet as DataSet,
        RealRequest as RealRequest,
        RealSets as RealSets,
        Rows as Rows,
    )
    from specreg.data.fashion_mnist import (
        FASHION_MNIST_ROOT as FASHION_MNIST_ROOT,
        FashionMNIST as FashionMNIST,
        download_fashion_mnist as download_fashion_mnist,
        read_idx as read_idx,
    )
    from specreg.data.images import ImageFolder as ImageFolder, SkDigits as SkDigits
    from specreg.data.pixels import ChecksumError as ChecksumError
    from specreg.data.registry import (
        DATASETS as DATASETS,
        build_dataset as build_dataset,
        data_set as data_set,
        reference_set as reference_set,
        register as register,
        unregister as unregister,
    )
    from specreg.data.textures import TextureCrops as TextureCrops


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
