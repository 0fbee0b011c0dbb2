"""The shipped data sets, one :class:`~specreg.data.entry.DataSet` entry each, listed in
:data:`SHIPPED` (the registry, :mod:`specreg.data.registry`, starts from that list).

Reference sets (built-in names of ``evaluation.reference`` and ``specreg eval
--reference``), each with a disjoint floor set of the samples' size (seed ``s + 1``):

* ``textures``: crops of the scikit-image photographs the run's data names (default
  brick, grass, gravel) at the samples' size, from the held-out ``eval`` rows (``split``
  ``train``: from the training rows); also the reference of an image folder;
* ``checkerboards``: boards of the training distribution (known spectral lines, for
  ``peak_energy``);
* ``fashion-mnist``: two disjoint random subsets of the 10 000 test images (``split``
  ``train``: of the 60 000 training images), padded to 32 as in training (other sizes
  resized);
* ``speech``: held-out Asterisk prompts. ``paired=True`` (a vocoder study): the reference
  is the held-out prompt segments whose log-mels condition the samples, item i with
  sample i, and the floor set is training segments; ``paired=False`` (``specreg eval``
  of unconditional samples): every non-overlapping segment of the samples' length.

Nothing here imports torch at load time: each builder imports its data set class.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from specreg.data.entry import DEFAULT_COUNT, DataSet, RealRequest, RealSets, Rows

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from specreg.data.checkerboards import Checkerboards

__all__ = ["AUDIO_FOLDER", "CHECKERBOARD", "FASHION_MNIST", "IMAGE_FOLDER", "SHIPPED", "SPEECH", "TEXTURES"]


def _stack(ds: Any) -> torch.Tensor:
    import torch

    return torch.stack([ds[i][0] for i in range(len(ds))])


def _count(request: RealRequest) -> int:
    """Items of a generated reference: as asked, else :data:`DEFAULT_COUNT`."""
    return DEFAULT_COUNT if request.n_reference is None else request.n_reference


# --------------------------------------------------------------------------------------
# textures


def _textures(data: Any, split: str) -> Dataset:
    from specreg.data.textures import TextureCrops

    return TextureCrops(names=list(data.names), size=data.size, n=data.n, seed=data.seed,
                        channels=data.channels, split=split)


def _textures_real(data: Any, q: RealRequest) -> RealSets:
    split = q.split or TEXTURES.rows.held_out or "eval"
    m, n, s = _count(q), q.n_samples, q.seed
    r = _textures(dataclasses.replace(data, n=m, seed=s), split)
    f = _textures(dataclasses.replace(data, n=n, seed=s + 1), split) if q.floor else None
    what = (f"{data.size}×{data.size} crops of {list(data.names)} from the "
            f"{'held-out eval' if split == 'eval' else split} rows")
    return RealSets(_stack(r), None if f is None else _stack(f), f"{m} {what} (seed {s})",
                    f"{n} other {what} (seed {s + 1})")


TEXTURES = DataSet(
    "textures", "image", _textures, Rows("eval"), reference="textures", aliases=("texture",),
    description="scikit-image texture crops from the held-out eval rows", real=_textures_real,
    serves=("image_folder",))


# --------------------------------------------------------------------------------------
# checkerboards


def _checkerboard(data: Any, split: str) -> Checkerboards:
    from specreg.data.checkerboards import Checkerboards

    return Checkerboards(n=data.n, size=data.size, seed=data.seed)  # generated: no split


def _checkerboard_real(data: Any, q: RealRequest) -> RealSets:
    if q.split is not None:
        raise ValueError(f"split={q.split!r} is not accepted for reference 'checkerboards' (generated boards "
                         "have no splits); expected null")
    m, n, s = _count(q), q.n_samples, q.seed
    boards = _checkerboard(dataclasses.replace(data, n=m, seed=s), data.split)
    floor = _stack(_checkerboard(dataclasses.replace(data, n=n, seed=s + 1), data.split)) if q.floor else None
    what = f"{data.size}×{data.size} checkerboards, periods {list(boards.periods)} px, random phase"
    return RealSets(_stack(boards), floor, f"{m} {what} (seed {s})", f"{n} other {what} (seed {s + 1})")


def _checkerboard_lines(data: Any) -> list[tuple[float, ...]]:
    """Every spectral line of the boards :func:`_checkerboard` draws: a board's energy sits
    on these lines and nowhere else (aliased into [−½, ½) by the metric)."""
    from specreg.data.checkerboards import CHECKERBOARD_PERIODS, checkerboard_lines

    return list(checkerboard_lines(CHECKERBOARD_PERIODS))


CHECKERBOARD = DataSet(
    "checkerboard", "image", _checkerboard, Rows(None, reseed=1, text="checkerboards of data.seed + 1"),
    reference="checkerboards", aliases=("checkerboard",),
    description="checkerboards of the training distribution (known spectral lines)", real=_checkerboard_real,
    peaks=_checkerboard_lines)


# --------------------------------------------------------------------------------------
# Fashion-MNIST


def _fashion(data: Any, split: str, fit: str = "pad") -> Dataset:
    from specreg.data.fashion_mnist import FashionMNIST, require_fashion_mnist

    # a config never downloads, so FashionMNIST's download=True hint does not apply
    return FashionMNIST(root=require_fashion_mnist(data.root, split), split=split, size=data.size, fit=fit)


def _fashion_real(data: Any, q: RealRequest) -> RealSets:
    import torch

    split = q.split or FASHION_MNIST.rows.held_out or "test"
    n, s, floor = q.n_samples, q.seed, q.floor
    fit = "pad" if data.size in (28, 32) else "resize"  # 32: padded, as FashionMNIST(size=32) trains
    ds = _fashion(data, split, fit)
    total = len(ds)  # type: ignore[arg-type]  # torch's Dataset declares no __len__
    m = total - (n if floor else 0) if q.n_reference is None else q.n_reference
    if m + (n if floor else 0) > total or m < 1:
        raise ValueError(f"n_samples + n_reference = {n + m} exceeds the {total} Fashion-MNIST {split} "
                         "images; the floor set and the reference must be disjoint")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(s))
    images = torch.stack([ds[int(i)][0] for i in perm[:m]])
    fl = torch.stack([ds[int(i)][0] for i in perm[m:m + n]]) if floor else None
    cond = {"class_labels": torch.arange(n) % q.num_classes} if q.num_classes > 0 else {}
    what = f"Fashion-MNIST {split} images at {data.size}×{data.size} ({fit})"
    return RealSets(images, fl, f"{m} {what} (random subset, seed {s})", f"{n} other {what}", cond)


FASHION_MNIST = DataSet(
    "fashion_mnist", "image", _fashion, Rows("test"), reference="fashion-mnist",
    aliases=("fashion_mnist", "fashion", "fashionmnist"), description="Fashion-MNIST test split (10 000 images)",
    real=_fashion_real, channels=(1,))


# --------------------------------------------------------------------------------------
# a folder of images


def _image_folder(data: Any, split: str) -> Dataset:
    from specreg.data.images import ImageFolder

    if data.root is None:
        raise ValueError("data.kind=image_folder needs data.root (a folder of images)")
    return ImageFolder(root=data.root, size=data.size, channels=data.channels)  # a folder has no split


IMAGE_FOLDER = DataSet(
    "image_folder", "image", _image_folder,
    Rows(None, text="the training folder's own items (an image folder has no held-out split)"))


# --------------------------------------------------------------------------------------
# speech (Asterisk prompts) and a folder of audio files: waveforms with their log-mels


def _with_mels(waves: Dataset, data: Any) -> Dataset:
    from specreg.data.audio import LogMel, MelConditioned

    mel = LogMel(sample_rate=data.sample_rate, n_fft=data.n_fft, hop_length=data.hop_length, n_mels=data.n_mels)
    return MelConditioned(waves, mel)


def _speech(data: Any, split: str) -> Dataset:
    from specreg.data.audio import AsteriskSpeech

    # root=None: the Debian package's folder
    return _with_mels(AsteriskSpeech(root=data.root, split=split, sample_rate=data.sample_rate,
                                     segment_length=data.segment_length), data)


def _speech_real(d: Any, q: RealRequest) -> RealSets:
    import torch

    from specreg.data.audio import AsteriskSpeech, LogMel, MelConditioned
    from specreg.data.clips import crop_clips, segments, subset

    n, m, s, split = q.n_samples, q.n_reference, q.seed, q.split or SPEECH.rows.held_out or "eval"
    kw = {} if d.root is None else {"root": d.root}
    length = q.segment_length or d.segment_length  # a vocoder is convolutional: any multiple of the hop
    seg = f"{length}-sample segments at {d.sample_rate} Hz"
    f, floor_what = None, ""
    if q.floor:
        tr_set = AsteriskSpeech(split="train", sample_rate=d.sample_rate, segment_length=length, random_crop=False,
                                seed=s + 1, **kw)
        perm = torch.randperm(len(tr_set), generator=torch.Generator().manual_seed(s + 1))
        f = torch.stack([tr_set[int(i)][0] for i in perm[:n]])
        floor_what = f"{n} {seg} of training prompts"
    if not q.paired:
        ds = AsteriskSpeech(split=split, sample_rate=d.sample_rate, segment_length=None, **kw)
        if q.crop_seed is None:
            r, how = subset(segments(ds.clips, length), m, s), "segments"
        else:  # one segment per prompt, as the samples were cut
            long = [c for c in ds.clips if c.size >= length]
            if not long:
                raise ValueError(f"every {split} prompt is shorter than the samples' crop length ({length} samples)")
            r, how = subset(crop_clips(long, length, q.crop_seed), m, s), "segments (one per prompt, seeded offset)"
        return RealSets(r, f, f"held-out Asterisk prompts ({len(ds)} {split} prompts) at {d.sample_rate} Hz, "
                              f"{r.shape[0]} {how} of {length} samples", floor_what)
    # paired: the reference must go with the conditioning of the samples
    if length % d.hop_length:
        raise ValueError(f"evaluation.segment_length={length} is not a multiple of data.hop_length={d.hop_length}")
    mel = LogMel(sample_rate=d.sample_rate, n_fft=d.n_fft, hop_length=d.hop_length, n_mels=d.n_mels)
    ev_set = MelConditioned(AsteriskSpeech(split=split, sample_rate=d.sample_rate, segment_length=length,
                                           random_crop=False, seed=s, **kw), mel)
    items = [ev_set[i % len(ev_set)] for i in range(n)]
    repeat = f", each of the {len(ev_set)} prompts used {math.ceil(n / len(ev_set))}×" if n > len(ev_set) else ""
    return RealSets(torch.stack([x for x, _ in items]), f,
                    f"{n} {seg} of held-out prompts, paired with the samples' log-mels{repeat}",
                    floor_what, {"cond": torch.stack([c for _, c in items])})


SPEECH = DataSet(
    "speech", "audio", _speech, Rows("eval"), reference="speech", aliases=("asterisk",),
    description="held-out (eval) Asterisk speech prompts, cut into segments", real=_speech_real)


def _audio_folder(data: Any, split: str) -> Dataset:
    from specreg.data.audio import AudioFolder

    if data.root is None:
        raise ValueError("data.kind=audio_folder needs data.root (a folder of audio files)")
    return _with_mels(AudioFolder(root=data.root, sample_rate=data.sample_rate,  # a folder has no split
                                  segment_length=data.segment_length), data)


AUDIO_FOLDER = DataSet(
    "audio_folder", "audio", _audio_folder,
    Rows(None, text="the training folder's own items (an audio folder has no held-out split)"))


SHIPPED = (TEXTURES, CHECKERBOARD, FASHION_MNIST, IMAGE_FOLDER, SPEECH, AUDIO_FOLDER)
"""The shipped data sets, in the order configs list them; a new one is an entry above and a name here."""
