"""Random square crops of scikit-image texture photographs; items ``(x (C, size, size)
in [−1, 1], label = index of the photograph)``.

The training and held-out rows of each photograph are disjoint (:data:`TEXTURE_EVAL_ROWS`
at the bottom are held out), so training crops and reference crops share no pixel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from specreg._checks import check_choice, check_positive
from specreg.data.pixels import check_size, to_unit_range

__all__ = ["TEXTURE_EVAL_ROWS", "TextureCrops"]

TEXTURE_EVAL_ROWS = 128
"""Rows at the bottom of each texture image reserved for ``split="eval"``."""


def _texture_image(name: str) -> np.ndarray:
    from specreg._optional import needs_extra

    with needs_extra("train", "specreg.data.TextureCrops"):
        import skimage.data

    loader: Callable[[], np.ndarray] | None = getattr(skimage.data, name, None)
    if loader is None or not callable(loader) or name.startswith("_"):
        raise ValueError(f"names contains {name!r}, which is not a scikit-image data image "
                         "(e.g. 'brick', 'grass', 'gravel', 'camera')")
    image = np.asarray(loader())
    if image.ndim == 3:  # colour images: ITU-R 601 luma, as skimage.color.rgb2gray
        image = np.rint(image[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721]))
    if image.ndim != 2:
        raise ValueError(f"scikit-image image {name!r} has shape {image.shape}; expected a 2-D image")
    return np.clip(image, 0, 255).astype(np.uint8)


class TextureCrops(Dataset):
    """Random square crops of scikit-image texture photographs (brick, grass, gravel).

    Each 512×512 grayscale image (optionally rescaled by ``scale``) is split by rows: the
    bottom ``TEXTURE_EVAL_ROWS`` rows (a quarter at scale 1) are held out for
    ``split="eval"`` (or ``"test"``), the rows above are ``split="train"``; ``split="all"`` uses the
    whole image. Crops never straddle the boundary, so training crops and evaluation
    reference crops share no pixel. Crop ``i`` comes from image ``names[i % len(names)]``
    (label = that index) at a position drawn from ``numpy.random.default_rng(seed)``:
    the set is fixed given (names, size, n, seed, split, scale).

    Convention for evaluation: train on ``split="train"``; draw the reference set from
    ``split="eval"``; measure the metric's noise floor with two ``split="eval"`` sets of
    different seeds.
    """

    def __init__(self, names: Sequence[str] = ("brick", "grass", "gravel"), size: int = 32, n: int = 3000,
                 seed: int = 0, channels: int = 1, split: str = "train", scale: float = 1.0) -> None:
        self.names = tuple(names)
        if not self.names:
            raise ValueError("names=() is not accepted; expected at least one scikit-image texture name")
        self.size = check_size("size", size)
        self.n = check_size("n", n)
        self.seed = seed
        self.channels = check_choice("channels", channels, (1, 3))
        # "test" is accepted for "eval" so that one split vocabulary serves every dataset.
        self.split = {"test": "eval"}.get(check_choice("split", split, ("train", "eval", "test", "all")), split)
        self.scale = check_positive("scale", scale)
        rng = np.random.default_rng(seed)
        crops = np.empty((self.n, self.size, self.size), dtype=np.uint8)
        sources = [self._region(name) for name in self.names]
        self.labels = torch.arange(self.n) % len(self.names)
        for i in range(self.n):
            region = sources[i % len(self.names)]
            top = int(rng.integers(0, region.shape[0] - self.size + 1))
            left = int(rng.integers(0, region.shape[1] - self.size + 1))
            crops[i] = region[top: top + self.size, left: left + self.size]
        self.crops = torch.from_numpy(crops)

    def _region(self, name: str) -> np.ndarray:
        image = _texture_image(name)
        eval_rows = TEXTURE_EVAL_ROWS
        if self.scale != 1.0:
            from skimage.transform import rescale

            image = np.rint(rescale(image.astype(np.float64), self.scale, anti_aliasing=True,
                                    preserve_range=True)).clip(0, 255).astype(np.uint8)
            eval_rows = round(TEXTURE_EVAL_ROWS * self.scale)
        region = {"train": image[: image.shape[0] - eval_rows], "eval": image[image.shape[0] - eval_rows:],
                  "all": image}[self.split]
        if min(region.shape) < self.size:
            raise ValueError(f"size={self.size} is larger than the {self.split!r} region {region.shape} of "
                             f"texture {name!r} at scale={self.scale}")
        return region

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = to_unit_range(self.crops[index])[None]
        if self.channels == 3:
            x = x.expand(3, -1, -1).contiguous()
        return x, int(self.labels[index])

