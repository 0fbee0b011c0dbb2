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
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from specreg._checks import check_all_read, check_choice, check_positive
from specreg.files import write_atomic

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
    "to_unit_range",
]


class ChecksumError(RuntimeError):
    """A data file is corrupt: bad checksum, truncated or not in the expected format."""


def to_unit_range(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels (…) → float32 in [−1, 1]: x = v/127.5 − 1."""
    v = torch.from_numpy(np.array(pixels, copy=True)) if isinstance(pixels, np.ndarray) else pixels
    return v.to(torch.float32) / 127.5 - 1.0


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= 1")
    return value


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
        self.size = _check_size("size", size)
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
# Fashion-MNIST

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist

# Published MD5 of each gzip file (zalandoresearch/fashion-mnist README) and of its
# uncompressed idx content. A file is accepted when either matches: a distribution may
# recompress the files (Debian's package does), which changes the first but not the second.
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
FASHION_MNIST_URLS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_FASHION_SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                   "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

_IDX_DTYPES: dict[int, npt.DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
                                          0x0E: ">f8"}


def read_idx(data: bytes, name: str = "idx data") -> np.ndarray:
    """Parse the idx format (LeCun's MNIST format): magic 0 0 <dtype> <ndim>, big-endian
    int32 dims, then the values in C order."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise ChecksumError(f"{name} is not an idx file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ChecksumError(f"{name} is truncated: {len(data)} bytes, header alone needs {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise ChecksumError(f"{name} has {len(data)} bytes; its header {dims} implies {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _fashion_content(name: str, raw: bytes, where: str, verify: bool) -> bytes:
    """The uncompressed idx bytes of a Fashion-MNIST file, checked against its MD5s."""
    gz_md5, content_md5 = FASHION_MNIST_FILES[name]
    compressed = raw[:2] == b"\x1f\x8b"
    if compressed:
        try:
            content = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ChecksumError(f"{where} is not a valid gzip file ({err}); the file is corrupt or truncated: "
                                "reinstall or download it again") from None
    else:
        content = raw
    if verify and _md5(content) != content_md5 and not (compressed and _md5(raw) == gz_md5):
        raise ChecksumError(
            f"{where} does not match the published Fashion-MNIST checksums (MD5 of the gzip file "
            f"{gz_md5}, of its content {content_md5}); the file is corrupt: reinstall or download it again"
        )
    return content


def _find_fashion_file(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_missing(root: str | os.PathLike, split: str = "train") -> list[str]:
    """The Fashion-MNIST files of ``split`` (``"train"``, ``"test"`` or ``"eval"``) that
    ``root`` lacks (gzipped or not); [] when all are there or the split is unknown."""
    names = _FASHION_SPLITS.get({"eval": "test"}.get(split, split), ())
    return [n for n in names if _find_fashion_file(Path(root), n) is None]


def require_fashion_mnist(root: str | os.PathLike | None, split: str = "train", *, key: str = "data.root") -> Path:
    """``root`` (default: the Debian package's folder) if it holds the files of ``split``,
    else a one-line ``ValueError`` naming ``key`` and how to install them (configs and
    studies never download)."""
    folder = Path(FASHION_MNIST_ROOT if root is None else root)
    missing = fashion_mnist_missing(folder, split)
    if missing:
        raise ValueError(f"{key}={None if root is None else str(root)!r}: Fashion-MNIST files {missing} not found in "
                         f"{str(folder)!r}; install them with 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu) "
                         f"or set {key} to a folder holding them")
    return folder


def download_fashion_mnist(root: str | os.PathLike, urls: Sequence[str] = FASHION_MNIST_URLS,
                           timeout: float = 60.0) -> Path:
    """Download the four Fashion-MNIST files into ``root`` (only those missing or corrupt).

    Every download is checked against the published MD5 before it is moved into place,
    so a failed or tampered transfer never leaves a file behind. Returns ``root``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        existing = _find_fashion_file(root, name)
        if existing is not None:
            try:
                _fashion_content(name, existing.read_bytes(), str(existing), verify=True)
                continue
            except ChecksumError:
                pass  # replaced below
        errors = []
        for base in urls:
            url = base + name
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    raw = response.read()
            except (urllib.error.URLError, OSError) as err:
                errors.append(f"{url}: {err}")
                continue
            _fashion_content(name, raw, f"the download from {url}", verify=True)
            write_atomic(root / name, raw)
            break
        else:
            raise RuntimeError(f"could not download {name}: " + "; ".join(errors))
    return root


class FashionMNIST(Dataset):
    """Fashion-MNIST (Xiao et al. 2017): 60 000 train / 10 000 test 28×28 gray images, 10 classes.

    ``split`` is ``"train"`` or ``"test"`` (alias ``"eval"``). Reads the four standard idx files
    (``*-idx?-ubyte.gz`` or uncompressed) from ``root``,
    by default the Debian package location ``/usr/share/datasets/fashion-mnist``
    (``apt-get install dataset-fashion-mnist``). ``download=True`` fetches missing files
    into ``root`` (checksummed); nothing is downloaded otherwise. With ``verify=True`` the
    files are checked against the published MD5s (cheap: they are decompressed anyway).

    ``size=28`` keeps the native size. A larger ``size`` with ``fit="pad"`` pads with
    background (−1), centred (28 → 32 adds 2 pixels on each side, the usual choice for
    power-of-two U-Nets); ``fit="resize"`` resizes bilinearly with antialiasing.
    Items are ``(x (1, size, size), label)``; ``images`` (uint8, N×28×28) and ``labels``
    (int64, N) hold the raw data.
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", size: int = 28,
                 fit: str = "pad", download: bool = False, verify: bool = True) -> None:
        # "eval" is accepted for "test" so that one split vocabulary serves every dataset.
        self.split = {"eval": "test"}.get(check_choice("split", split, ("train", "test", "eval")), split)
        self.size = _check_size("size", size)
        self.fit = check_choice("fit", fit, ("pad", "resize"))
        if self.fit == "pad" and self.size < 28:
            raise ValueError(f"size={size!r} is not accepted with fit='pad'; expected size >= 28 "
                             "(or fit='resize')")
        self.root = Path(root) if root is not None else Path(FASHION_MNIST_ROOT)
        names = _FASHION_SPLITS[self.split]
        missing = [n for n in names if _find_fashion_file(self.root, n) is None]
        if missing and download:
            if root is None:
                raise ValueError(
                    "download=True needs root= a writable folder; the default root "
                    f"{FASHION_MNIST_ROOT!r} belongs to the Debian package dataset-fashion-mnist"
                )
            download_fashion_mnist(self.root)
            missing = [n for n in names if _find_fashion_file(self.root, n) is None]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST files {missing} not found in {str(self.root)!r}. Install them with "
                "'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), pass root= a folder holding the "
                "idx files, or pass download=True with a writable root="
            )
        arrays = []
        for name in names:
            path = _find_fashion_file(self.root, name)
            if path is None:  # there a moment ago (checked above), gone since
                raise FileNotFoundError(f"Fashion-MNIST file {name!r} vanished from {str(self.root)!r}")
            content = _fashion_content(name, path.read_bytes(), str(path), verify)
            arrays.append(read_idx(content, str(path)))
        images, labels = arrays
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
            raise ChecksumError(f"Fashion-MNIST {self.split} files in {str(self.root)!r} have unexpected shapes "
                                f"{images.shape} and {labels.shape}")
        self.images = torch.from_numpy(images.copy())
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = to_unit_range(self.images[index])[None]
        if self.size != 28:
            if self.fit == "pad":
                before = (self.size - 28) // 2
                after = self.size - 28 - before
                x = F.pad(x, (before, after, before, after), value=-1.0)
            else:
                x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                                  antialias=True)[0]
        return x, int(self.labels[index])


# --------------------------------------------------------------------------------------
# scikit-image textures

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
        self.size = _check_size("size", size)
        self.n = _check_size("n", n)
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


# --------------------------------------------------------------------------------------
# Checkerboards (the paper's toy)


def checkerboard(size: int, period: int, phase: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A ±1 checkerboard (size × size) of squares with side period/2, shifted by ``phase``.

    x[i, j] = +1 if ⌊(i + φ_y)/(p/2)⌋ + ⌊(j + φ_x)/(p/2)⌋ is even, else −1: a product of
    two square waves of period p pixels along each axis.
    """
    half = period // 2
    i = (np.arange(size) + phase[0]) // half
    j = (np.arange(size) + phase[1]) // half
    return np.where((i[:, None] + j[None, :]) % 2 == 0, 1.0, -1.0).astype(np.float32)


def checkerboard_peaks(period: int) -> tuple[np.ndarray, np.ndarray]:
    """Radial frequencies (cycles/pixel) of a checkerboard's spectral peaks and their power.

    A sampled square wave of even period p has DFT lines only at odd harmonics k/p,
    with |S_k| = 2/|sin(πk/p)| per period (Σ|S_k|² = p²). The checkerboard is the product
    of two such waves, so its power sits at (k₁/p, k₂/p), k₁, k₂ odd (aliased into
    [−½, ½)), with fraction (|S_k₁|·|S_k₂|/p²)² of the total. Returns ``(radii, power)``
    sorted by radius, equal radii merged, power summing to 1; the strongest peak is the
    fundamental at radius √2/p. Exact when p divides the image size.
    """
    k = np.arange(1, period, 2)
    amp = 2.0 / np.abs(np.sin(np.pi * k / period)) / period  # |S_k| / p
    freq = np.where(k < period / 2, k / period, k / period - 1.0)
    ky, kx = np.meshgrid(freq, freq, indexing="ij")
    radius = np.round(np.hypot(ky, kx), 12).ravel()
    power = (amp[:, None] * amp[None, :]).ravel() ** 2
    radii, inverse = np.unique(radius, return_inverse=True)
    return radii, np.bincount(inverse, weights=power)


class Checkerboards(Dataset):
    """The paper's toy: ``size``×``size`` gray checkerboards of random period and phase.

    Sample i has period ``periods_of[i]`` drawn uniformly from ``periods`` (pixels per
    full black-white cycle; even, dividing ``size``) and an integer phase drawn uniformly
    in [0, p)² — both from ``numpy.random.default_rng(seed)``. Values are ±1; the label is
    the index of the period in ``periods``. :meth:`peaks` gives the true spectral peaks
    (radial frequencies in cycles/pixel, as :func:`specreg.transforms.radial_bins`) for
    the spectral metrics.
    """

    def __init__(self, n: int, size: int = 64, periods: Sequence[int] = (4, 8, 16), seed: int = 0) -> None:
        self.n = _check_size("n", n)
        self.size = _check_size("size", size)
        self.periods = tuple(int(p) for p in periods)
        bad = [p for p in self.periods if p < 2 or p % 2 or self.size % p]
        if not self.periods or bad:
            raise ValueError(f"periods={tuple(periods)!r} is not accepted; expected even periods >= 2 that divide "
                             f"size={self.size}")
        rng = np.random.default_rng(seed)
        self.labels = torch.from_numpy(rng.integers(0, len(self.periods), self.n))
        self.periods_of = torch.tensor(self.periods)[self.labels]
        self.phases = torch.from_numpy(np.stack([rng.integers(0, int(p), 2) for p in self.periods_of]))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        p = int(self.periods_of[index])
        phase = (int(self.phases[index, 0]), int(self.phases[index, 1]))
        return torch.from_numpy(checkerboard(self.size, p, phase))[None], int(self.labels[index])

    def peaks(self, index: int | None = None, period: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(radii, power) of the true peaks for sample ``index`` or a given ``period``."""
        if (index is None) == (period is None):
            raise ValueError("pass exactly one of index= or period=")
        return checkerboard_peaks(int(self.periods_of[index]) if period is None else period)

    def fundamental_frequencies(self) -> dict[int, float]:
        """Period → radial frequency √2/p (cycles/pixel) of its strongest peak."""
        return {p: float(np.sqrt(2.0) / p) for p in self.periods}


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

        self.size = _check_size("size", size)
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
