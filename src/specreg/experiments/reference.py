"""Real data to measure samples against: one builder for ``specreg eval``, ``specreg
compare`` and the demo, so every path scores against the same data.

The built-in reference sets are entries of the data-set registry
(:mod:`specreg.data.registry`; what each one is: :mod:`specreg.data.sets`).
:func:`real_sets` builds, for a built-in reference set, the *reference* (``n_reference``
items, seed ``s``) and a disjoint *floor* set of the samples' size (``n_samples`` items,
seed ``s + 1``), which, measured against the reference like a run, gives each metric's
noise floor.

:func:`load_reference` gives ``specreg eval`` a reference shaped like its samples: a
built-in set through :func:`real_sets`, or a folder of images or audio files (images are
resized/cropped to the samples' size; audio must have the samples' sample rate and is cut
into segments of their length, or paired one file per sample in sorted order when a paired
metric is asked for), or a tensor file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specreg.data import registry
from specreg.data.clips import crop_clips, segments, subset
from specreg.data.registry import DEFAULT_COUNT, LiveMapping, RealRequest, RealSets, canonical_reference
from specreg.experiments.loading import audio_files, load_tensor_file, read_clips

if TYPE_CHECKING:
    import torch

# Views of the registry (specreg.data.registry), read at each use: a registered set appears in them.
REFERENCE_SETS: Mapping[str, str] = LiveMapping(
    lambda: {n: registry.reference_set(n).description for n in registry.reference_names()})
"""Built-in reference name → what it is."""
REFERENCE_ALIASES: Mapping[str, str] = LiveMapping(registry.reference_aliases)
"""Other spellings of the built-in reference names → the name."""
DATA_KIND: Mapping[str, str] = LiveMapping(
    lambda: {n: registry.reference_set(n).name for n in registry.reference_names()})
"""Built-in reference name → the ``data.kind`` it is the reference of."""


def has_peaks(name: str) -> bool:
    """Whether built-in reference ``name`` has known spectral lines (metrics that need them apply)."""
    try:
        return registry.reference_set(name).peaks is not None
    except ValueError:  # a folder or file of the user's: no known lines
        return False


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
    instead of every segment. ``paired`` (audio): the reference is the held-out segments
    whose log-mels condition the samples, item i with sample i. What each set is:
    :mod:`specreg.data.sets`.
    """
    from specreg.schema import from_mapping
    from specreg.train.config import DataConfig

    if isinstance(data, Mapping):
        data = from_mapping(DataConfig, dict(data), "data")
    request = RealRequest(n_samples=n_samples, n_reference=n_reference, seed=seed, split=split,
                          segment_length=segment_length, num_classes=num_classes, paired=paired, floor=floor,
                          crop_seed=crop_seed)
    return registry.real_sets(name, data, request)


def data_like(reference: str, shape: tuple[int, ...], *, sample_rate: int | None = None,
              config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The data section that built-in reference ``reference`` needs for samples of ``shape``
    ((C, H, W) or (1, T)): the run's own where its config is known (texture names, data
    root, mel settings), the samples' size, channels, rate and length otherwise."""
    entry = registry.reference_set(reference)
    ref = entry.reference
    known = dict((config or {}).get("data", {}))
    data: dict[str, Any] = {"kind": entry.name}
    if known.get("kind") == entry.name:
        data.update({k: v for k, v in known.items() if k in ("names", "root", "n_mels", "n_fft", "hop_length")})
    if entry.kind == "audio":
        data.update(sample_rate=int(sample_rate or known.get("sample_rate", 8000)), segment_length=int(shape[-1]))
    else:
        c, h, w = shape
        if h != w:
            raise ValueError(f"reference {ref!r} is square images; samples are {h}×{w}")
        if c not in entry.channels:
            what = "gray" if entry.channels == (1,) else f"{'- or '.join(map(str, entry.channels))}-channel"
            raise ValueError(f"reference {ref!r} is square {what} images; samples have shape {tuple(shape)}")
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
    (:func:`specreg.data.clips.crop_clips`), not into every segment.
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
        is_audio = registry.reference_set(ref).kind == "audio"
        if is_audio != (kind == "audio"):
            same_kind = [repr(n) for n in registry.reference_names()
                         if (registry.reference_set(n).kind == "audio") == (kind == "audio")]
            want = ", ".join([*same_kind, f"a folder of {'audio files' if kind == 'audio' else 'images'} or a "
                                          "tensor file"])
            raise ValueError(f"reference {ref!r} is {'audio' if is_audio else 'images'} but the samples are "
                             f"{kind}s; accepted {kind} references: {want}".replace("audios", "audio"))
        if is_audio and paired:
            raise ValueError(f"mrstft and pesq compare sample i with its own reference clip; reference {ref!r} has "
                             "no such pairing. Pass --reference a folder (or tensor file) of the matching real "
                             "clips, or drop mrstft/pesq")
        data = data_like(ref, tuple(like.shape[1:]), sample_rate=sample_rate, config=config)
        sets = real_sets(ref, data, n_samples=like.shape[0], n_reference=n_reference, seed=seed, split=split,
                         paired=paired, floor=False, crop_seed=crop_seed if is_audio else None,
                         segment_length=int(like.shape[-1]) if is_audio else None)
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


__all__ = ["DATA_KIND", "DEFAULT_COUNT", "REFERENCE_ALIASES", "REFERENCE_SETS", "RealRequest", "RealSets",
           "canonical_reference", "data_like", "load_reference", "real_sets", "resolve_reference"]
