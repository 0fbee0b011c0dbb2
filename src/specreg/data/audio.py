"""Audio datasets and log-mel features.

Waveform datasets return ``(x, label)`` like the image datasets: ``x`` is a float32
tensor (1, segment_length) in [−1, 1] (mono, at the dataset's ``sample_rate``), label −1.
:class:`MelConditioned` wraps one of them for a mel-conditioned vocoder and returns
``(x, mel)`` with mel (n_mels, segment_length / hop_length).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from specreg._checks import check_all_read, check_choice, check_int, check_positive

__all__ = [
    "ASTERISK_ROOT",
    "AUDIO_EXTENSIONS",
    "AsteriskSpeech",
    "AudioFolder",
    "LogMel",
    "MelConditioned",
    "asterisk_split",
    "hz_to_mel",
    "load_audio",
    "mel_filterbank",
    "mel_to_hz",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read a sound file as mono float32 at ``sample_rate`` Hz.

    Channels are averaged (mixdown); a file at another rate r is resampled by the
    rational factor sample_rate/r with ``scipy.signal.resample_poly`` (polyphase FIR,
    Kaiser window), which low-pass filters before decimating.
    """
    from specreg._optional import needs_extra

    with needs_extra("train", "specreg.data.load_audio"):
        import soundfile as sf
        from scipy.signal import resample_poly

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = data.mean(axis=1)
    if rate != sample_rate:
        g = math.gcd(int(rate), int(sample_rate))
        x = resample_poly(x, sample_rate // g, rate // g)
    return np.ascontiguousarray(x, dtype=np.float32)


class AudioFolder(Dataset):
    """Every WAV/FLAC/… file under ``root`` (recursively, or the given ``files``), cut to segments.

    Files are read once at construction (mono mixdown, resampled to ``sample_rate``) and
    kept in memory. An unreadable or empty file (a corrupt .wav, a text file saved as one)
    is refused with ``ValueError`` naming how many and the first five: no file is skipped,
    so the set holds exactly the clips given. Each item is one segment of ``segment_length`` samples
    (None: the whole clip) per file: a clip shorter than that is zero-padded at the
    end; a longer one is cropped at a random offset drawn from torch's global RNG at
    each access (``random_crop=True``) or at a fixed offset per file drawn once from
    ``numpy.random.default_rng(seed)`` (``random_crop=False``, for evaluation sets).
    """

    def __init__(self, root: str | os.PathLike, sample_rate: int, segment_length: int | None,
                 random_crop: bool = True, seed: int = 0, files: Sequence[str | os.PathLike] | None = None,
                 extensions: Sequence[str] = AUDIO_EXTENSIONS) -> None:
        self.root = Path(root)
        self.sample_rate = check_int("sample_rate", sample_rate, lo=1)
        self.segment_length = None if segment_length is None else check_int("segment_length", segment_length, lo=1)
        self.random_crop = bool(random_crop)
        self.seed = seed
        if not self.root.is_dir():
            raise FileNotFoundError(f"audio folder root={str(self.root)!r} does not exist or is not a folder")
        if files is None:
            exts = tuple(e.lower() for e in extensions)
            paths = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
            if not paths:
                raise FileNotFoundError(f"no audio files ({', '.join(exts)}) found under root={str(self.root)!r}")
        else:
            paths = [self.root / p for p in files]
            if not paths:
                raise ValueError("files=[] is not accepted; expected at least one audio file")
        self.files: list[Path] = []
        self.clips: list[np.ndarray] = []
        failures: list[tuple[str, str]] = []
        for path in paths:
            try:
                clip = load_audio(path, self.sample_rate)
                if clip.size == 0:
                    raise ValueError("no samples")
            except (RuntimeError, OSError, ValueError) as err:  # soundfile's errors are RuntimeErrors
                failures.append((path.name, str(err)))
                continue
            self.files.append(path)
            self.clips.append(clip)
        check_all_read(self.root, "audio", len(paths), failures)
        rng = np.random.default_rng(seed)
        seg = self.segment_length or 0
        self._fixed_offsets = [int(rng.integers(0, max(c.size - seg, 0) + 1)) for c in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[index]
        seg = self.segment_length
        if seg is None:
            return torch.from_numpy(clip.copy())[None], -1
        if clip.size > seg:
            if self.random_crop:
                start = int(torch.randint(clip.size - seg + 1, ()))
            else:
                start = self._fixed_offsets[index]
            clip = clip[start: start + seg]
        x = torch.zeros(1, seg)
        x[0, : clip.size] = torch.from_numpy(clip.copy())
        return x, -1

    @property
    def durations(self) -> list[float]:
        """Length of each clip in seconds."""
        return [c.size / self.sample_rate for c in self.clips]


# --------------------------------------------------------------------------------------
# Asterisk prompts (Allison, US English)

ASTERISK_ROOT = "/usr/share/asterisk/sounds/en_US_f_Allison"  # Debian package asterisk-core-sounds-en-wav


def asterisk_split(name: str) -> str:
    """``"eval"`` or ``"train"`` for a prompt name (path below the root, no extension).

    A prompt is held out when the first 8 hex digits of MD5(name) (as an integer) are
    divisible by 10, e.g. ``"digits/7"`` and ``"vm-password"``: a fixed ≈10 % split that
    needs no list and does not change when prompts are added. The 558 speech prompts of
    asterisk-core-sounds-en-wav give 498 train and 60 eval prompts.
    """
    digest = hashlib.md5(name.encode("utf-8"), usedforsecurity=False).hexdigest()
    return "eval" if int(digest[:8], 16) % 10 == 0 else "train"


class AsteriskSpeech(AudioFolder):
    """The Asterisk PBX voice prompts by Allison Smith: 568 studio-quality 8 kHz speech files.

    Debian/Ubuntu install them with ``apt-get install asterisk-core-sounds-en-wav``
    (default root ``/usr/share/asterisk/sounds/en_US_f_Allison``). The ``silence/``
    folder (10 files of digital silence) is excluded unless ``include_silence=True``.
    ``split="eval"`` (or ``"test"``) holds out the prompts chosen by :func:`asterisk_split`
    (60 of 558), ``"train"`` the rest, ``"all"`` everything. ``random_crop`` defaults to True for
    training and False (fixed, seeded offsets) otherwise.
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", sample_rate: int = 8000,
                 segment_length: int | None = 8000, random_crop: bool | None = None, seed: int = 0,
                 include_silence: bool = False) -> None:
        # "test" is accepted for "eval" so that one split vocabulary serves every dataset.
        self.split = {"test": "eval"}.get(check_choice("split", split, ("train", "eval", "test", "all")), split)
        base = Path(root) if root is not None else Path(ASTERISK_ROOT)
        wavs = sorted(base.rglob("*.wav")) if base.is_dir() else []
        if not wavs:
            raise FileNotFoundError(
                f"no Asterisk prompts (*.wav) found in {str(base)!r}. Install them with "
                "'apt-get install asterisk-core-sounds-en-wav' (Debian/Ubuntu) or pass root= a folder "
                "holding the en_US_f_Allison prompts"
            )
        names = [p.relative_to(base).with_suffix("").as_posix() for p in wavs]
        chosen = [
            p.relative_to(base) for p, name in zip(wavs, names)
            if (include_silence or not name.startswith("silence/"))
            and (self.split == "all" or asterisk_split(name) == self.split)
        ]
        if not chosen:
            raise FileNotFoundError(f"no {self.split!r} prompts found in {str(base)!r}")
        self.names = [p.with_suffix("").as_posix() for p in chosen]
        super().__init__(base, sample_rate, segment_length,
                         random_crop=(self.split == "train") if random_crop is None else random_crop,
                         seed=seed, files=chosen)


# --------------------------------------------------------------------------------------
# Log-mel features


def hz_to_mel(f: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    """Frequency in Hz → mel.

    ``"htk"``: m = 2595·log10(1 + f/700). ``"slaney"`` (Auditory Toolbox): linear below
    1 kHz, m = f/(200/3), logarithmic above, m = 15 + 27·ln(f/1000)/ln(6.4).
    """
    f = np.asarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    linear = f / (200.0 / 3.0)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(f >= 1000.0, log, linear)


def mel_to_hz(m: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    linear = m * (200.0 / 3.0)
    log = 1000.0 * np.exp((m - 15.0) * (np.log(6.4) / 27.0))
    return np.where(m >= 15.0, log, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None,
                   scale: str = "slaney", norm: str | None = "slaney") -> torch.Tensor:
    """Triangular mel filters (n_mels, n_fft//2 + 1) on the rfft bin frequencies.

    n_mels + 2 edges f_0 … f_{M+1} equally spaced in mel between f_min and f_max; filter
    m rises linearly from f_m to f_{m+1} and falls to f_{m+2}. ``norm="slaney"`` scales
    filter m by 2/(f_{m+2} − f_m) (equal area, Slaney's Auditory Toolbox); None keeps a
    peak of 1.
    """
    check_choice("scale", scale, ("slaney", "htk"))
    check_choice("norm", norm, ("slaney", None))
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"f_min={f_min!r}, f_max={f_max!r} are not accepted; expected "
                         f"0 <= f_min < f_max <= sample_rate/2 = {sample_rate / 2}")
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2), scale)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= 2.0 / (upper - lower)
    return torch.from_numpy(weights.astype(np.float32))


class LogMel(nn.Module):
    """Log-mel spectrogram: ln(max(M·|STFT(x)|^power, floor)), (…, T) → (…, n_mels, T // hop).

    STFT with a periodic Hann window of ``win_length`` (default ``n_fft``) samples,
    centred frames (the signal is padded by n_fft/2 with ``pad_mode``), hop
    ``hop_length``; M is :func:`mel_filterbank`. Frame k is centred on sample k·hop; the
    frame centred on sample T (which sees only padding on its right) is dropped so that
    frames · hop = T exactly, the alignment DiffWave's upsampler expects. Units: ln of
    STFT magnitude (``power=1``) or power (``power=2``) per mel band.
    """

    window: torch.Tensor  # buffers
    mel_basis: torch.Tensor

    def __init__(self, sample_rate: int = 8000, n_fft: int = 512, hop_length: int = 100,
                 win_length: int | None = None, n_mels: int = 80, f_min: float = 0.0, f_max: float | None = None,
                 power: float = 1.0, floor: float = 1e-5, center: bool = True, pad_mode: str = "reflect",
                 mel_scale: str = "slaney", norm: str | None = "slaney") -> None:
        super().__init__()
        self.sample_rate = check_int("sample_rate", sample_rate, lo=1)
        self.n_fft = check_int("n_fft", n_fft, lo=1)
        self.hop_length = check_int("hop_length", hop_length, lo=1)
        self.win_length = self.n_fft if win_length is None else check_int("win_length", win_length, lo=1)
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length={win_length!r} is not accepted; expected <= n_fft={n_fft}")
        self.n_mels = check_int("n_mels", n_mels, lo=1)
        self.power = check_choice("power", power, (1.0, 2.0))
        self.floor = check_positive("floor", floor)
        self.center = bool(center)
        self.pad_mode = check_choice("pad_mode", pad_mode, ("reflect", "constant", "replicate", "circular"))
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True), persistent=False)
        self.register_buffer("mel_basis", mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, mel_scale, norm),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        length = x.shape[-1]
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = torch.stft(x.reshape(-1, length).to(dtype), self.n_fft, self.hop_length, self.win_length,
                              self.window.to(dtype), center=self.center, pad_mode=self.pad_mode,
                              return_complex=True)
            mag = spec.abs() if self.power == 1.0 else spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.mel_basis.to(dtype), mag)
            out = mel.clamp_min(self.floor).log()
        return out[..., : length // self.hop_length].reshape(*lead, self.n_mels, -1)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"win_length={self.win_length}, n_mels={self.n_mels}, power={self.power}")


class MelConditioned(Dataset):
    """Pairs each waveform of ``dataset`` with its log-mel: items ``(x (1, T), mel (n_mels, T/hop))``.

    T must be a multiple of ``logmel.hop_length`` (choose ``segment_length`` = k·hop);
    otherwise construction (when the dataset has a fixed ``segment_length``) or access
    raises.
    """

    def __init__(self, dataset: Dataset, logmel: LogMel | None = None) -> None:
        self.dataset = dataset
        self.logmel = logmel if logmel is not None else LogMel()
        seg = getattr(dataset, "segment_length", None)
        if seg is not None and seg % self.logmel.hop_length:
            raise ValueError(
                f"segment_length={seg} of the wrapped dataset is not a multiple of hop_length="
                f"{self.logmel.hop_length}; the mel frames would not tile the audio"
            )

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dataset[index][0]
        if x.shape[-1] % self.logmel.hop_length:
            raise ValueError(f"item {index} has {x.shape[-1]} samples, not a multiple of hop_length="
                             f"{self.logmel.hop_length}")
        with torch.no_grad():
            mel = self.logmel(x[0])
        return x, mel
