"""Datasets. Every item is a pair: ``(x, label)`` for images and waveforms (label −1
when the data has no classes), ``(x, mel)`` for :class:`MelConditioned`.

Images are float32 (C, H, W) in [−1, 1]; waveforms float32 (1, T) in [−1, 1]. Nothing
is downloaded unless a constructor is called with ``download=True``.
"""

from specreg.data.audio import (
    ASTERISK_ROOT,
    AsteriskSpeech,
    AudioFolder,
    LogMel,
    MelConditioned,
    asterisk_split,
    load_audio,
    mel_filterbank,
)
from specreg.data.images import (
    FASHION_MNIST_ROOT,
    Checkerboards,
    ChecksumError,
    FashionMNIST,
    ImageFolder,
    SkDigits,
    TextureCrops,
    checkerboard,
    checkerboard_peaks,
    download_fashion_mnist,
    read_idx,
)

__all__ = [
    "ASTERISK_ROOT",
    "FASHION_MNIST_ROOT",
    "AsteriskSpeech",
    "AudioFolder",
    "ChecksumError",
    "Checkerboards",
    "FashionMNIST",
    "ImageFolder",
    "LogMel",
    "MelConditioned",
    "SkDigits",
    "TextureCrops",
    "asterisk_split",
    "checkerboard",
    "checkerboard_peaks",
    "download_fashion_mnist",
    "load_audio",
    "mel_filterbank",
    "read_idx",
]
