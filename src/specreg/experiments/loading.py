"""Reading samples and reference data from disk for ``specreg eval``.

Sample formats :func:`load_samples` reads:

* a folder of image files (PNG, JPEG, …; all the same size; gray when every image is
  gray, R = G = B counting as gray) or of audio files (WAV, FLAC, …; all the same sample
  rate and length);
* a tensor file: ``.npy`` (``numpy.save``), ``.pt`` (``torch.save`` of a tensor or of a
  dict holding it under ``"samples"``) or ``.safetensors`` (tensor ``"samples"`` or the
  only tensor; an optional metadata entry ``"sample_rate"``), shaped as above;
* a folder holding ``samples.npy`` / ``samples.pt`` / ``samples.safetensors`` (what
  ``specreg sample --out DIR`` writes; its WAV files give the sample rate);
* a run directory of ``specreg compare``: its ``eval/samples.npy``, with the record of how
  compare measured it (:data:`RUN_RECORD`), so ``specreg eval`` scores it the same way;
* a run directory of ``specreg train``: its ``samples/`` folder is searched as above, else
  the newest ``samples/step-XXXXXXXX/`` folder of WAVs, else the newest
  ``samples/step-XXXXXXXX.png`` grid, cut into images with the run's ``config.yaml``.

References (built-in sets, folders, tensor files) are read by
:mod:`specreg.experiments.reference`, with the readers here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specreg.data.clips import crop_clips, segments, subset  # moved to the data layer; importable here as before
from specreg.files import newest_step
from specreg.layout import CONFIG_FILE, EVAL_DIR, RUN_RECORD, SAMPLE_FILES, SAMPLES_ARRAY, SAMPLES_DIR, read_run_record

if TYPE_CHECKING:  # heavy imports happen inside the functions, so `specreg --help` stays fast
    import numpy as np
    import torch

TENSOR_SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")


def _read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) or (H, W, 1); 16-bit images are scaled to 8 bits."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            wide = np.asarray(im, dtype=np.float64)
            a = np.clip(np.rint(wide / 65535.0 * 255.0), 0, 255).astype(np.uint8)[..., None]
        elif im.mode in ("1", "L", "LA"):
            a = np.asarray(im.convert("L"), dtype=np.uint8)[..., None]
        else:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return a


def load_image_folder(folder: Path) -> torch.Tensor:
    """Every image file under ``folder`` (sorted, recursive) as float32 (N, C, H, W) in [−1, 1]."""
    import numpy as np
    import torch

    from specreg.data.images import IMAGE_EXTENSIONS

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{str(folder)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    arrays = []
    for p in files:
        try:
            arrays.append(_read_image(p))
        except OSError as err:
            raise ValueError(f"cannot read image {str(p)!r}: {err}") from None
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"images in {str(folder)!r} have different sizes {sorted(sizes)}; all samples must have "
                         "one size")
    gray = all(a.shape[2] == 1 or (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]))
               for a in arrays)
    stack = np.stack([a[..., :1] if gray else np.broadcast_to(a, (*a.shape[:2], 3)) for a in arrays])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def audio_files(folder: Path) -> list[Path]:
    from specreg.data.audio import AUDIO_EXTENSIONS

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def read_clips(files: Sequence[Path]) -> tuple[list[np.ndarray], int]:
    """Mono float32 clips at their common native rate (an error if the rates differ)."""
    import soundfile as sf

    clips: list[np.ndarray] = []
    rates: dict[int, Path] = {}
    for p in files:
        try:
            data, rate = sf.read(str(p), dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"cannot read audio file {str(p)!r}: {err}") from None
        clips.append(data.mean(axis=1))
        rates.setdefault(int(rate), p)
    if len(rates) > 1:
        raise ValueError(f"audio files have different sample rates: "
                         f"{ {r: p.name for r, p in rates.items()} }; resample them to one rate first")
    return clips, next(iter(rates))


def shortest_clip(folder: Path) -> int | None:
    """The length in samples of the shortest audio file under ``folder`` (None: no audio files)."""
    import soundfile as sf

    lengths = []
    for p in audio_files(folder):
        try:
            lengths.append(int(sf.info(str(p)).frames))
        except (RuntimeError, OSError) as err:
            raise ValueError(f"cannot read audio file {str(p)!r}: {err}") from None
    return min(lengths) if lengths else None


def load_audio_folder(folder: Path, *, crop: bool = False, length: int | None = None,
                      seed: int = 0) -> tuple[torch.Tensor, int]:
    """Every audio file under ``folder`` (sorted) as float32 (N, 1, T) and its sample rate.

    Clips of different lengths are refused unless ``crop``: then every clip is cut to one
    segment of T samples at a seeded offset (:func:`crop_clips`), T = the shortest clip, or
    ``length`` when shorter (``specreg eval --crop`` passes the reference's shortest, so both
    sets are cut to one length by one rule)."""
    import numpy as np
    import torch

    files = audio_files(folder)
    if not files:
        raise ValueError(f"{str(folder)!r} holds no audio files")
    clips, rate = read_clips(files)
    lengths = {c.size for c in clips}
    if 0 in lengths:
        empty = [p.name for p, c in zip(files, clips) if c.size == 0]
        raise ValueError(f"audio files in {str(folder)!r} are empty: {empty[:5]}")
    if crop:
        return crop_clips(clips, min(min(lengths), length or min(lengths)), seed), rate
    if len(lengths) > 1:
        raise ValueError(f"audio files in {str(folder)!r} have different lengths ({min(lengths)} … {max(lengths)} "
                         "samples); pass crop=True (--crop) to cut one segment of the shortest length from every "
                         "clip, or give clips of one length")
    return torch.from_numpy(np.stack(clips))[:, None].float(), rate


def load_tensor_file(path: Path) -> tuple[torch.Tensor, int | None]:
    """A tensor from ``.npy``, ``.pt``/``.pth`` or ``.safetensors`` and the sample rate it
    records (safetensors metadata ``sample_rate``), if any. A file that does not parse
    (empty, cut short, another format) is a ``ValueError`` naming it."""
    suffix = path.suffix.lower()
    if suffix in TENSOR_SUFFIXES:
        try:
            return _read_tensor_file(path, suffix)
        except Exception as err:  # numpy's, torch's, safetensors' parse errors
            if isinstance(err, ValueError) and str(err).startswith(repr(str(path))):
                raise  # our own message about what the file holds
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            if type(err).__name__ == "UnpicklingError":  # torch's advice about weights_only does not apply here
                first = "not a file of tensors written by torch.save"
            raise ValueError(f"{str(path)!r} is not a readable {suffix} tensor file ({type(err).__name__}: "
                             f"{first})") from None
    raise ValueError(f"{str(path)!r} is not a tensor file; accepted suffixes: {list(TENSOR_SUFFIXES)}")


def _read_tensor_file(path: Path, suffix: str) -> tuple[torch.Tensor, int | None]:
    import numpy as np
    import torch

    rate = None
    if suffix == ".npy":
        t: Any = torch.from_numpy(np.load(path, allow_pickle=False))
    elif suffix in (".pt", ".pth"):
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the outcome is what matters
            warnings.simplefilter("ignore", UserWarning)
            t = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(t, dict):
            if "samples" in t:
                t = t["samples"]
            elif len(t) == 1:
                t = next(iter(t.values()))
            else:
                raise ValueError(f"{str(path)!r} holds a dict with keys {sorted(t)}; expected a tensor or a dict "
                                 "with the key 'samples'")
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            key = "samples" if "samples" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"{str(path)!r} holds tensors {keys}; expected one tensor or one named 'samples'")
            t = f.get_tensor(key)
            meta = f.metadata() or {}
        if "sample_rate" in meta:
            rate = int(meta["sample_rate"])
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{str(path)!r} does not hold a tensor (got {type(t).__name__})")
    return t, rate


def run_record(run_dir: Path) -> dict[str, Any]:
    """The record ``specreg compare`` wrote into ``run_dir`` after measuring it, as a mapping
    ({} if none; :func:`specreg.layout.read_run_record` reads it)."""
    rec = read_run_record(run_dir)
    return {} if rec is None else rec.to_dict()


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    import yaml

    cfg = yaml.safe_load(path.read_text())
    return cfg if isinstance(cfg, dict) else {}


def _find_config(path: Path) -> dict[str, Any]:
    """The run config of a run directory, its samples/ folder or a step folder in it."""
    for folder in (path, path.parent, path.parent.parent):
        if (folder / CONFIG_FILE).is_file():
            return _read_config(folder)
    return {}


def split_grid(grid: torch.Tensor, size: int, n: int | None = None) -> torch.Tensor:
    """Cut a sample grid (C, H, W) written by ``save_image_grid`` (square tiles of side
    ``size`` separated and framed by 1-pixel gaps, row-major) into (n, C, size, size)."""
    c, h, w = grid.shape
    rows, cols = (h - 1) / (size + 1), (w - 1) / (size + 1)
    if rows != int(rows) or cols != int(cols) or rows < 1 or cols < 1:
        raise ValueError(f"a grid of {h}×{w} pixels is not made of {size}×{size} tiles with 1-pixel gaps")
    rows, cols = int(rows), int(cols)
    n = rows * cols if n is None else min(n, rows * cols)
    tiles = [grid[:, 1 + i // cols * (size + 1): 1 + i // cols * (size + 1) + size,
                  1 + i % cols * (size + 1): 1 + i % cols * (size + 1) + size] for i in range(n)]
    import torch

    return torch.stack(tiles)


def load_samples(path: str | Path, *, sample_rate: int | None = None, crop: bool = False,
                 crop_length: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Load generated samples from any of the formats in the module docstring.

    Returns ``{"x": tensor, "kind": "image"|"audio", "sample_rate": int|None, "source": str,
    "config": dict, "record": dict}`` (``config`` is the run's config.yaml when one was
    found, else {}; ``record`` is the :data:`RUN_RECORD` of a run that ``specreg compare``
    measured, else {}). ``sample_rate`` gives the rate of audio tensors that do not record
    one; it must agree with the rate of WAV files or safetensors metadata. ``crop``: every
    audio file is cut to one segment of the shortest length (or ``crop_length`` when
    shorter) at an offset seeded by ``seed`` (:func:`load_audio_folder`; else files of
    different lengths are refused).
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise ValueError(f"samples path {str(path)!r} does not exist")
    config: dict[str, Any] = {}
    record: dict[str, Any] = {}
    rate: int | None = None
    source = str(path)
    if path.is_dir() and (path / EVAL_DIR / SAMPLES_ARRAY).is_file() and (found := run_record(path)):
        record = found  # a run of specreg compare: the samples it measured
        path = path / EVAL_DIR
    if path.is_file():
        x, rate = load_tensor_file(path)
        config = _find_config(path.parent)
    else:
        folder = path
        config = _find_config(path)
        if (path / SAMPLES_DIR).is_dir() and not any((path / f).is_file() for f in SAMPLE_FILES):
            folder = path / SAMPLES_DIR
        tensor_file = next((folder / f for f in SAMPLE_FILES if (folder / f).is_file()), None)
        step_dir = newest_step(p for p in folder.iterdir() if p.is_dir())
        grid = newest_step(folder.glob("step-*.png"))
        if tensor_file is not None:
            x, rate = load_tensor_file(tensor_file)
            source = str(tensor_file)
            wavs = [p for p in audio_files(folder) if p.parent == folder]
            if rate is None and wavs:
                rate = read_clips(wavs[:1])[1]
        elif step_dir is not None and audio_files(step_dir):  # a run's samples/: the newest step's WAVs
            x, rate = load_audio_folder(step_dir, crop=crop, length=crop_length, seed=seed)
            source = str(step_dir)
        elif grid is not None:  # a run's samples/: the newest step's PNG grid
            data = config.get("data", {})
            if "size" not in data:
                raise ValueError(f"cannot cut the sample grid {str(grid)!r} into images: the run's config.yaml "
                                 "with data.size is missing; pass a folder of single images or a tensor file")
            g = load_image_file(grid, int(data.get("channels", 1)))
            x = split_grid(g, int(data["size"]), config.get("sample", {}).get("n"))
            source = f"{grid} (grid cut into {x.shape[0]} images)"
        elif audio_files(folder):
            x, rate = load_audio_folder(folder, crop=crop, length=crop_length, seed=seed)
        else:
            from specreg.data.images import IMAGE_EXTENSIONS

            if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file()):
                raise ValueError(
                    f"no samples found in {str(folder)!r}: it holds no image or audio files, no "
                    f"{' / '.join(SAMPLE_FILES)}, and no step-XXXXXXXX samples of a run"
                )
            x = load_image_folder(folder)
    if x.dtype == torch.uint8:
        x = x.float() / 127.5 - 1.0
    elif not x.dtype.is_floating_point:
        x = _integer_samples(x, source)
    if x.dim() == 4:
        kind = "image"
    elif x.dim() in (2, 3):
        kind = "audio"
        if x.dim() == 3 and x.shape[1] != 1:
            raise ValueError(f"samples in {source} have shape {tuple(x.shape)}; expected images (N, C, H, W) or "
                             "mono audio (N, T) / (N, 1, T)")
    else:
        raise ValueError(f"samples in {source} have shape {tuple(x.shape)}; expected images (N, C, H, W) or audio "
                         "(N, T) / (N, 1, T)")
    if x.shape[0] == 0:
        raise ValueError(f"no samples found in {source} (the tensor is empty)")
    if kind == "audio":
        if sample_rate is not None and rate is not None and int(sample_rate) != rate:
            raise ValueError(f"sample_rate={sample_rate} but the samples in {source} are at {rate} Hz; "
                             "resample them instead of relabelling")
        if sample_rate is not None:
            rate = sample_rate
        elif rate is None:
            rate = config.get("data", {}).get("sample_rate")
        if rate is None:
            raise ValueError(f"the audio samples in {source} carry no sample rate; pass sample_rate= "
                             "(--sample-rate)")
    # rate is known for audio (checked above) and unused for images
    return {"x": x.float(), "kind": kind, "sample_rate": None if kind == "image" or rate is None else int(rate),
            "source": source, "config": config, "record": record}


def _integer_samples(x: torch.Tensor, source: str) -> torch.Tensor:
    """Integer samples other than uint8, by what their values can be: 8-bit pixels (images
    with values 0 … 255 in any integer type) → v/127.5 − 1; 16-bit PCM audio (int16) →
    v/32768. Anything else is refused, not read as if already in [−1, 1]."""
    import torch

    # read in int64: torch has no min/max for uint16/32/64
    lo, hi = (int(x.to(torch.int64).min()), int(x.to(torch.int64).max())) if x.numel() and x.dtype != torch.bool \
        else (0, 1)
    if x.dtype != torch.bool and x.dim() == 4 and 0 <= lo and hi <= 255:
        return x.float() / 127.5 - 1.0
    if x.dtype == torch.int16 and x.dim() in (2, 3):
        return x.float() / 32768.0
    raise ValueError(f"samples in {source} are {str(x.dtype).removeprefix('torch.')} with values {lo} … {hi} and "
                     f"shape {tuple(x.shape)}; expected floats in [-1, 1], images of 8-bit pixels (0 … 255, any "
                     "integer type) or 16-bit PCM audio (int16)")


def load_image_file(path: Path, channels: int) -> torch.Tensor:
    """One image file as float32 (C, H, W) in [−1, 1] with ``channels`` channels."""
    import numpy as np
    import torch

    a = _read_image(path)
    a = a[..., :1] if channels == 1 else np.broadcast_to(a, (*a.shape[:2], 3))
    a = np.array(a, dtype=np.uint8)  # a writable copy (PIL arrays are read-only)
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 127.5 - 1.0


__all__ = ["EVAL_DIR", "RUN_RECORD", "SAMPLE_FILES", "TENSOR_SUFFIXES", "audio_files", "crop_clips",
           "load_audio_folder", "load_image_file", "load_image_folder", "load_samples", "load_tensor_file",
           "read_clips", "run_record", "segments", "shortest_clip", "split_grid", "subset"]
