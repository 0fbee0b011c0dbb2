"""Image datasets: every item is ``(x, label)``.

``x`` is a float32 tensor (C, H, W) with values in [−1, 1] (pixel value v ∈ 0 … 255
maps to v/127.5 − 1); ``label`` is a Python ``int``: the class index where the data
has classes, −1 where it has none (the networks treat −1 as "no label"). A
``DataLoader`` collates the pair into ``(x (B, C, H, W), label (B,) int64)``.

Nothing here downloads behind the caller's back: :class:`FashionMNIST` downloads only
with ``download=True``; the other datasets are generated or read from local files.
Random crops (``crop="random"``) draw from torch's global RNG, so ``torch.manual_seed``
and the ``DataLoader``'s per-worker seeding make them reproducible; datasets that
sample at construction (:class:`TextureCrops`, :class:`Checkerboards`) take a ``seed``.

This module holds the image folder and scikit-learn's digits; each other set has its
own module (:mod:`specreg.data.fashion_mnist`, :mod:`specreg.data.textures`,
:mod:`specreg.data.checkerboards`), whose names are importable from here as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from specreg._checks import check_all_read, check_choice
from specreg.data.checkerboards import Checkerboards, checkerboard, checkerboard_peaks
from specreg.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    FASHION_MNIST_ROOT,
    FashionMNIST,
    download_fashion_mnist,
    fashion_mnist_missing,
    read_idx,
    require_fashion_mnist,
)
from specreg.data.pixels import ChecksumError, check_size, to_unit_range
from specreg.data.textures import TEXTURE_EVAL_ROWS, TextureCrops

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_ROOT",
    "IMAGE_EXTENSIONS",
    "TEXTURE_EVAL_ROWS",
    "ChecksumError",
    "Checkerboards",
    "FashionMNIST",
    "ImageFolder",
    "SkDigits",
    "TextureCrops",
    "checkerboard",
    "checkerboard_peaks",
    "download_fashion_mnist",
    "fashion_mnist_missing",
    "read_idx",
    "require_fashion_mnist",
    "to_unit_range",
]


# --------------------------------------------------------------------------------------
# ImageFolder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# PIL's modes of 16-bit gray images ("I" is how it opens a 16-bit PNG on some versions)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def sixteen_to_eight_bits(pixels: np.ndarray) -> np.ndarray:
    """16-bit gray pixels (0 … 65535) → uint8 by their bit depth: round(v · 255 / 65535)."""
    wide = np.asarray(pixels, dtype=np.float64)
    return np.clip(np.rint(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8)


class ImageFolder(Dataset):
    """Every PNG/JPEG/… image under ``root`` (recursively), resized and cropped to a square.

    Each image is converted to gray (``channels=1``) or RGB (``channels=3``), resized
    with Pillow's antialiased bicubic filter so that its shorter side is ``size``, then
    cropped to ``size × size`` at the centre (``crop="center"``) or at a random offset
    along the longer side (``crop="random"``, drawn at each access).

    A file with an image extension that Pillow cannot decode (text saved as .png, an
    empty .jpg, a truncated .png) is refused with ``ValueError`` naming how many and the
    first five: no file is skipped, so the set holds exactly the images given (the same
    rule as for samples being evaluated). With ``class_folders=True`` the label is the index of the
    image's first-level subfolder in ``classes`` (sorted names); images directly in
    ``root`` get −1, as do all images otherwise.

    With ``cache=True`` (default) every image is decoded once at construction and kept
    as uint8 (size × longer side); with ``cache=False`` construction only checks the
    headers and images are decoded at each access.
    """

    def __init__(self, root: str | os.PathLike, size: int, channels: int = 1, crop: str = "center",
                 class_folders: bool = False, cache: bool = True,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        from specreg._optional import needs_extra

        with needs_extra("train", "specreg.data.ImageFolder"):
            from PIL import Image  # Pillow is needed only here

        self._image_module = Image
        self.root = Path(root)
        self.size = check_size("size", size)
        self.channels = check_choice("channels", channels, (1, 3))
        self.crop = check_choice("crop", crop, ("center", "random"))
        self.cache = bool(cache)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder root={str(self.root)!r} does not exist or is not a folder")
        exts = tuple(e.lower() for e in extensions)
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise FileNotFoundError(f"no image files ({', '.join(exts)}) found under root={str(self.root)!r}")
        self.classes: list[str] = []
        if class_folders:
            self.classes = sorted({p.relative_to(self.root).parts[0] for p in files
                                   if len(p.relative_to(self.root).parts) > 1})
        class_index = {name: i for i, name in enumerate(self.classes)}

        self.files: list[Path] = []
        self.labels: list[int] = []
        self._pixels: list[np.ndarray] = []
        failures: list[tuple[str, str]] = []
        for path in files:
            try:
                if self.cache:
                    self._pixels.append(self._load(path))
                else:
                    with Image.open(path) as im:
                        im.verify()
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                failures.append((str(path.relative_to(self.root)), str(err)))
                continue
            parts = path.relative_to(self.root).parts
            self.files.append(path)
            self.labels.append(class_index.get(parts[0], -1) if len(parts) > 1 else -1)
        check_all_read(self.root, "image", len(files), failures)

    def _load(self, path: Path) -> np.ndarray:
        """Decode, convert and resize so that the shorter side is ``size``: uint8 (h, w, C)."""
        Image = self._image_module
        with Image.open(path) as im:
            if im.mode in SIXTEEN_BIT_MODES:  # PIL's convert("L") would clip them at 255, not scale them
                im = Image.fromarray(sixteen_to_eight_bits(np.asarray(im)))
            im = im.convert("L" if self.channels == 1 else "RGB")
            w, h = im.size
            scale = self.size / min(w, h)
            new = (max(self.size, round(w * scale)), max(self.size, round(h * scale)))
            im = im.resize(new, Image.Resampling.BICUBIC)
            pixels = np.asarray(im, dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.crop == "center":
            pixels = self._crop(pixels, (pixels.shape[0] - self.size) // 2, (pixels.shape[1] - self.size) // 2)
        return np.ascontiguousarray(pixels)

    def _crop(self, pixels: np.ndarray, top: int, left: int) -> np.ndarray:
        return pixels[top: top + self.size, left: left + self.size]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = self._pixels[index] if self.cache else self._load(self.files[index])
        if pixels.shape[0] != self.size or pixels.shape[1] != self.size:
            top = int(torch.randint(pixels.shape[0] - self.size + 1, ()))
            left = int(torch.randint(pixels.shape[1] - self.size + 1, ()))
            pixels = self._crop(pixels, top, left)
        x = to_unit_range(pixels).permute(2, 0, 1).contiguous()
        return x, self.labels[index]


# --------------------------------------------------------------------------------------
# scikit-learn digits


class SkDigits(Dataset):
    """scikit-learn's 1 797 handwritten digits (8×8, values 0 … 16), upsampled to ``size``.

    Values map to [−1, 1] as v/8 − 1; upsampling is bilinear (``mode="bilinear"``) or
    pixel replication (``mode="nearest"``). Labels are the digits 0 … 9.
    """

    def __init__(self, size: int = 32, mode: str = "bilinear") -> None:
        from specreg._optional import needs_extra

        with needs_extra("metrics", "specreg.data.SkDigits"):
            from sklearn.datasets import load_digits

        self.size = check_size("size", size)
        self.mode = check_choice("mode", mode, ("bilinear", "nearest"))
        digits = load_digits()
        x = torch.from_numpy(digits.images.astype(np.float32))[:, None] / 8.0 - 1.0
        if self.size != 8:
            kwargs = {"align_corners": False} if self.mode == "bilinear" else {}
            x = F.interpolate(x, size=(self.size, self.size), mode=self.mode, **kwargs)
        self.images = x.clamp(-1.0, 1.0)
        self.labels = torch.from_numpy(digits.target.astype(np.int64))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
