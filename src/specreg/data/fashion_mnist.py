"""Fashion-MNIST (Xiao et al. 2017): the idx reader, the published checksums, the
explicit download and the data set. Items are ``(x (1, size, size) in [−1, 1], label)``.

Nothing is downloaded unless :class:`FashionMNIST` is called with ``download=True`` or
:func:`download_fashion_mnist` is called; configs and studies never download.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from specreg._checks import check_choice
from specreg.data.pixels import ChecksumError, check_size, to_unit_range
from specreg.files import write_atomic

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_ROOT",
    "FashionMNIST",
    "download_fashion_mnist",
    "fashion_mnist_missing",
    "read_idx",
    "require_fashion_mnist",
]

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
        self.size = check_size("size", size)
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

