"""Real data to measure samples against: one builder for ``specreg eval``, ``specreg
compare`` and the demo, so every path scores against the same data.

:func:`real_sets` builds, for a built-in reference set, the *reference* (``n_reference``
items, seed ``s``) and a disjoint *floor* set of the samples' size (``n_samples`` items,
seed ``s + 1``), which, measured against the reference like a run, gives each metric's
noise floor:

* ``textures``: crops of the scikit-image photographs the run's data names (default
  brick, grass, gravel) at the samples' size, from the held-out ``eval`` rows (``split``
  ``train``: from the training rows);
* ``checkerboards``: boards of the training distribution (known spectral lines, for
  ``peak_energy``);
* ``fashion-mnist``: two disjoint random subsets of the 10 000 test images (``split``
  ``train``: of the 60 000 training images), padded to 32 as in training (other sizes
  resized);
* ``speech``: held-out Asterisk prompts. ``paired=True`` (a vocoder study): the reference
  is the held-out prompt segments whose log-mels condition the samples, item i with
  sample i, and the floor set is training segments; ``paired=False`` (``specreg eval``
  of unconditional samples): every non-overlapping segment of the samples' length.

:func:`load_reference` gives ``specreg eval`` a reference shaped like its samples: a
built-in set through :func:`real_sets`, or a folder of images or audio files (images are
resized/cropped to the samples' size; audio must have the samples' sample rate and is cut
into segments of their length, or paired one file per sample in sorted order when a paired
metric is asked for), or a tensor file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specreg.experiments.loading import audio_files, crop_clips, load_tensor_file, read_clips, segments, subset

if TYPE_CHECKING:
    import torch

REFERENCE_SETS: dict[str, str] = {
    "textures": "scikit-image texture crops from the held-out eval rows",
    "checkerboards": "checkerboards of the training distribution (known spectral lines)",
    "fashion-mnist": "Fashion-MNIST test split (10 000 images)",
    "speech": "held-out (eval) Asterisk speech prompts, cut into segments",
}
REFERENCE_ALIASES = {"fashion_mnist": "fashion-mnist", "fashion": "fashion-mnist", "fashionmnist": "fashion-mnist",
                     "texture": "textures", "checkerboard": "checkerboards", "asterisk": "speech"}
DATA_KIND = {"textures": "textures", "checkerboards": "checkerboard", "fashion-mnist": "fashion_mnist",
             "speech": "speech"}
PEAKED = frozenset({"checkerboards"})  # built-in sets with known spectral lines (RealSets.peaks)
DEFAULT_COUNT = 2048  # items of a generated reference (textures, checkerboards) when none is given


def canonical_reference(name: str) -> str:
    """A built-in reference's name with aliases folded (``fashion`` → ``fashion-mnist``)."""
    key = str(name).strip().lower()
    key = REFERENCE_ALIASES.get(key, REFERENCE_ALIASES.get(key.replace("-", "_"), key))
    return key.replace("_", "-") if key.replace("_", "-") in REFERENCE_SETS else key


@dataclass
class RealSets:
    """The reference set, a disjoint real set of the samples' size (the noise floor; None
    when not asked for) and the conditioning of the samples (paired with the reference for
    audio), with descriptions for the report."""

    reference: Any
    floor: Any
    description: str
    floor_description: str
    conditioning: dict[str, Any] = field(default_factory=dict)
    peaks: list[tuple[float, ...]] | None = None


def has_peaks(name: str) -> bool:
    """Whether built-in reference ``name`` has known spectral lines (metrics that need them apply)."""
    return name in PEAKED


def _stack(ds: Any, count: int | None = None) -> Any:
    import torch

    return torch.stack([ds[i][0] for i in range(len(ds) if count is None else count)])


def real_sets(name: str, data: Any, *, n_samples: int, n_reference: int | None, seed: int = 1,
              split: str | None = None, segment_length: int | None = None, num_classes: int = 0,
              paired: bool = True, floor: bool = True, crop_seed: int | None = None) -> RealSets:
    """Build the reference (and floor) set of built-in reference ``name`` for data like ``data``.

    ``data`` is the run's data section (a :class:`specreg.train.config.DataConfig` or
    mapping; ``specreg eval`` passes one made from the samples' shape). ``n_reference``
    None: every item of a fixed set (Fashion-MNIST, speech segments), or
    :data:`DEFAULT_COUNT` generated ones. ``num_classes`` > 0 gives class labels 0…K−1 in
    turn as conditioning of class-conditional samples. ``crop_seed`` (unpaired speech):
    one segment per prompt at seeded offsets, as ``specreg eval --crop`` cuts the samples,
    instead of every segment. See the module docstring.
    """
    import torch

    from specreg.schema import from_mapping
    from specreg.train.config import DataConfig

    if isinstance(data, Mapping):
        data = from_mapping(DataConfig, dict(data), "data")
    ref = canonical_reference(name)
    if ref not in REFERENCE_SETS:
        raise ValueError(f"reference={name!r} is not a built-in reference set; accepted: {list(REFERENCE_SETS)}")
    if DATA_KIND[ref] != data.kind and not (ref == "textures" and data.kind == "image_folder"):
        raise ValueError(f"reference={ref!r} does not fit data.kind={data.kind!r}; expected reference="
                         f"{next((r for r, k in DATA_KIND.items() if k == data.kind), None)!r}")
    n, s = n_samples, seed
    if ref == "textures":
        from specreg.data.images import TextureCrops

        split = split or "eval"
        m = DEFAULT_COUNT if n_reference is None else n_reference
        r = TextureCrops(list(data.names), data.size, m, seed=s, channels=data.channels, split=split)
        f = TextureCrops(list(data.names), data.size, n, seed=s + 1, channels=data.channels, split=split) \
            if floor else None
        what = (f"{data.size}×{data.size} crops of {list(data.names)} from the "
                f"{'held-out eval' if split == 'eval' else split} rows")
        return RealSets(_stack(r), None if f is None else _stack(f), f"{m} {what} (seed {s})",
                        f"{n} other {what} (seed {s + 1})")
    if ref == "checkerboards":
        from specreg.data.images import Checkerboards

        if split is not None:
            raise ValueError(f"split={split!r} is not accepted for reference 'checkerboards' (generated boards "
                             "have no splits); expected null")
        m = DEFAULT_COUNT if n_reference is None else n_reference
        boards = Checkerboards(m, data.size, seed=s)
        # every spectral line of a board of period p: (k1/p, k2/p) with k1, k2 odd (aliased
        # into [−½, ½) by the metric); a board's energy sits on these lines and nowhere else
        peaks: list[tuple[float, ...]] = sorted({(k1 / p, k2 / p) for p in boards.periods
                                                 for k1 in range(1, p, 2) for k2 in range(1, p, 2)})
        what = f"{data.size}×{data.size} checkerboards, periods {list(boards.periods)} px, random phase"
        return RealSets(_stack(boards), _stack(Checkerboards(n, data.size, seed=s + 1)) if floor else None,
                        f"{m} {what} (seed {s})", f"{n} other {what} (seed {s + 1})", peaks=peaks)
    if ref == "fashion-mnist":
        from specreg.data.images import FashionMNIST, require_fashion_mnist

        split = split or "test"
        fit = "pad" if data.size in (28, 32) else "resize"  # 32: padded, as FashionMNIST(size=32) trains
        ds = FashionMNIST(root=require_fashion_mnist(data.root, split), split=split, size=data.size, fit=fit)
        m = len(ds) - (n if floor else 0) if n_reference is None else n_reference
        if m + (n if floor else 0) > len(ds) or m < 1:
            raise ValueError(f"n_samples + n_reference = {n + m} exceeds the {len(ds)} Fashion-MNIST {split} "
                             "images; the floor set and the reference must be disjoint")
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(s))
        images = torch.stack([ds[int(i)][0] for i in perm[:m]])
        fl = torch.stack([ds[int(i)][0] for i in perm[m:m + n]]) if floor else None
        cond = {"class_labels": torch.arange(n) % num_classes} if num_classes > 0 else {}
        what = f"Fashion-MNIST {split} images at {data.size}×{data.size} ({fit})"
        return RealSets(images, fl, f"{m} {what} (random subset, seed {s})", f"{n} other {what}", cond)
    return _speech(data, n=n, m=n_reference, s=s, split=split or "eval", segment_length=segment_length,
                   paired=paired, floor=floor, crop_seed=crop_seed)


def _speech(d: Any, *, n: int, m: int | None, s: int, split: str, segment_length: int | None, paired: bool,
            floor: bool, crop_seed: int | None = None) -> RealSets:
    import torch

    from specreg.data.audio import AsteriskSpeech, LogMel, MelConditioned

    kw = {} if d.root is None else {"root": d.root}
    length = segment_length or d.segment_length  # a vocoder is convolutional: any multiple of the hop
    seg = f"{length}-sample segments at {d.sample_rate} Hz"
    f, floor_what = None, ""
    if floor:
        tr_set = AsteriskSpeech(split="train", sample_rate=d.sample_rate, segment_length=length, random_crop=False,
                                seed=s + 1, **kw)
        perm = torch.randperm(len(tr_set), generator=torch.Generator().manual_seed(s + 1))
        f = torch.stack([tr_set[int(i)][0] for i in perm[:n]])
        floor_what = f"{n} {seg} of training prompts"
    if not paired:
        ds = AsteriskSpeech(split=split, sample_rate=d.sample_rate, segment_length=None, **kw)
        if crop_seed is None:
            r, how = subset(segments(ds.clips, length), m, s), "segments"
        else:  # one segment per prompt, as the samples were cut
            long = [c for c in ds.clips if c.size >= length]
            if not long:
                raise ValueError(f"every {split} prompt is shorter than the samples' crop length ({length} samples)")
            r, how = subset(crop_clips(long, length, crop_seed), m, s), "segments (one per prompt, seeded offset)"
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


def data_like(reference: str, shape: tuple[int, ...], *, sample_rate: int | None = None,
              config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The data section that built-in reference ``reference`` needs for samples of ``shape``
    ((C, H, W) or (1, T)): the run's own where its config is known (texture names, data
    root, mel settings), the samples' size, channels, rate and length otherwise."""
    ref = canonical_reference(reference)
    known = dict((config or {}).get("data", {}))
    same = known.get("kind") == DATA_KIND.get(ref)
    data: dict[str, Any] = {"kind": DATA_KIND[ref]}
    if same:
        data.update({k: v for k, v in known.items() if k in ("names", "root", "n_mels", "n_fft", "hop_length")})
    if ref == "speech":
        data.update(sample_rate=int(sample_rate or known.get("sample_rate", 8000)), segment_length=int(shape[-1]))
    else:
        c, h, w = shape
        if h != w:
            raise ValueError(f"reference {ref!r} is square images; samples are {h}×{w}")
        if ref == "fashion-mnist" and c != 1:
            raise ValueError(f"reference 'fashion-mnist' is square gray images; samples have shape {tuple(shape)}")
        data.update(size=int(h), channels=int(c))
    return data


def resolve_reference(name: str | Path) -> str | Path:
    """A built-in reference name (aliases folded) or an existing path; else a ValueError."""
    key = canonical_reference(str(name))
    if key in REFERENCE_SETS and not isinstance(name, Path):
        return key
    path = Path(name)
    if path.exists():
        return path
    raise ValueError(f"reference={str(name)!r} is neither a built-in data set nor an existing folder or tensor file; "
                     f"accepted names: {list(REFERENCE_SETS)}")


def load_reference(reference: str | Path, like: torch.Tensor, kind: str, *, sample_rate: int | None = None,
                   n_reference: int | None = None, seed: int = 1, paired: bool = False, split: str | None = None,
                   config: dict[str, Any] | None = None, crop_seed: int | None = None) -> tuple[torch.Tensor, str]:
    """The reference set shaped like the samples ``like``.

    Returns ``(reference (M, …) float32, description)``. A built-in set comes from
    :func:`specreg.experiments.reference.real_sets` with seed ``seed`` (the same items a
    study with ``reference_seed: seed`` scores against); a folder or tensor file is read
    here and ``n_reference`` caps it (a subset seeded by ``seed``). ``crop_seed``: audio
    clips are cut as ``specreg eval --crop`` cuts the samples, one segment of the samples'
    length per clip at offsets seeded by ``crop_seed``
    (:func:`specreg.experiments.loading.crop_clips`), not into every segment.
    """
    try:
        return _load_reference(reference, like, kind, sample_rate=sample_rate, n_reference=n_reference, seed=seed,
                               paired=paired, split=split, config=config, crop_seed=crop_seed)
    except FileNotFoundError as err:  # a data set that is not installed: the message says how to get it
        raise ValueError(str(err)) from None


def _load_reference(reference: str | Path, like: torch.Tensor, kind: str, *, sample_rate: int | None,
                    n_reference: int | None, seed: int, paired: bool, split: str | None,
                    config: dict[str, Any] | None, crop_seed: int | None) -> tuple[torch.Tensor, str]:
    import torch

    from specreg.metrics.audio import _rate

    ref = resolve_reference(reference)
    if isinstance(ref, str):
        is_audio = DATA_KIND[ref] == "speech"
        if is_audio != (kind == "audio"):
            want = "'speech', a folder of audio files or a tensor file" if kind == "audio" else \
                "'fashion-mnist', 'textures', 'checkerboards', a folder of images or a tensor file"
            raise ValueError(f"reference {ref!r} is {'audio' if is_audio else 'images'} but the samples are "
                             f"{kind}s; accepted {kind} references: {want}".replace("audios", "audio"))
        if ref == "speech" and paired:
            raise ValueError("mrstft and pesq compare sample i with its own reference clip; reference 'speech' has "
                             "no such pairing. Pass --reference a folder (or tensor file) of the matching real "
                             "clips, or drop mrstft/pesq")
        data = data_like(ref, tuple(like.shape[1:]), sample_rate=sample_rate, config=config)
        sets = real_sets(ref, data, n_samples=like.shape[0], n_reference=n_reference, seed=seed, split=split,
                         paired=paired, floor=False, crop_seed=crop_seed if ref == "speech" else None,
                         segment_length=int(like.shape[-1]) if ref == "speech" else None)
        return sets.reference, sets.description
    if split is not None:
        raise ValueError(f"split={split!r} is not accepted for reference {str(ref)!r}: splits belong to the built-in "
                         f"sets ({', '.join(REFERENCE_SETS)}); expected None for a folder or tensor file")
    if kind == "image":
        c, h, w = like.shape[1:]
        if ref.is_file():
            r, _ = load_tensor_file(ref)
            r = subset(r, n_reference, seed)
            return (r.float() / 127.5 - 1.0 if r.dtype == torch.uint8 else r.float()), f"tensor file {ref}"
        from specreg.data.images import ImageFolder

        if h != w:
            raise ValueError(f"a reference image folder is resized and centre-cropped to squares; samples are {h}×{w}")
        ds = ImageFolder(ref, size=h, channels=c, crop="center")
        idx = subset(torch.arange(len(ds)), n_reference, seed)
        r = torch.stack([ds[int(i)][0] for i in idx])
        return r, f"image folder {ref}, {r.shape[0]} images resized/cropped to {h}×{h}"

    # audio from disk
    rate = _rate("sample_rate", sample_rate)
    length = like.shape[-1]
    if ref.is_file():
        r, file_rate = load_tensor_file(ref)
        if file_rate is not None and file_rate != rate:
            raise ValueError(f"reference {str(ref)!r} is at {file_rate} Hz but the samples are at {rate} Hz; "
                             "resample one of them first")
        return subset(r.float(), None if paired else n_reference, seed), f"tensor file {ref}"
    files = audio_files(ref)
    if not files:
        raise ValueError(f"reference folder {str(ref)!r} holds no audio files")
    clips, ref_rate = read_clips(files)
    if ref_rate != rate:
        raise ValueError(f"reference folder {str(ref)!r} is at {ref_rate} Hz but the samples are at {rate} Hz; "
                         "resample one of them first")
    if paired:
        import numpy as np

        short = [p.name for p, c in zip(files, clips) if c.size < length]
        if len(clips) != like.shape[0] or short:
            raise ValueError(f"paired metrics need one reference clip per sample, at least {length} samples long, "
                             f"matched in sorted file order; {str(ref)!r} has {len(clips)} clips for "
                             f"{like.shape[0]} samples" + (f", too short: {short[:5]}" if short else ""))
        r = torch.from_numpy(np.stack([c[:length] for c in clips])).float()[:, None]
        return r, f"audio folder {ref}, {len(clips)} clips paired with the samples in sorted order"
    if crop_seed is not None:  # the samples' rule: one segment per clip at a seeded offset
        r = subset(crop_clips(clips, length, crop_seed), n_reference, seed)
        return r, (f"audio folder {ref}, {r.shape[0]} segments of {length} samples, one per file at a seeded "
                   f"offset (--crop)")
    r = subset(segments(clips, length), n_reference, seed)
    return r, f"audio folder {ref}, {r.shape[0]} segments of {length} samples from {len(clips)} files"


__all__ = ["DATA_KIND", "DEFAULT_COUNT", "REFERENCE_ALIASES", "REFERENCE_SETS", "RealSets", "canonical_reference",
           "data_like", "load_reference", "real_sets", "resolve_reference"]
