"""Short-time Fourier transform of (B, C, T) signals, with the settings of auraloss.

The STFT of a signal x of T samples at resolution (n_fft, hop, win_length) is

    X[k, m] = Σ_n w[n − m·hop] · x_pad[n] · e^{−2πi k (n − m·hop) / n_fft},
    k = 0 … n_fft/2,  m = 0 … ⌊T / hop⌋,

with ``torch.stft`` defaults: the signal is reflect-padded by n_fft/2 on each side
(``center=True``), the window w of ``win_length`` samples (periodic, as
``torch.hann_window`` builds it) is zero-padded to ``n_fft`` in the centre, and there is
no normalisation (X is in signal units × samples). These are the settings of
``auraloss.freq.STFTLoss``, so losses built on this module agree with it.

:func:`windowed_frames_rfft` is the same transform up to a phase factor per bin, for
callers that only use magnitudes (the MR-STFT loss): it windows only the ``win_length``
samples the window covers and has a cheaper backward than ``torch.stft``'s.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from specreg._checks import check_choice, check_signal

WINDOWS = ("hann", "hamming", "blackman", "bartlett", "kaiser")


def window_name(window: str) -> str:
    """Accept ``"hann"`` and auraloss's spelling ``"hann_window"`` alike; return the short name."""
    if isinstance(window, str) and window.endswith("_window"):
        window = window[: -len("_window")]
    return check_choice("window", window, WINDOWS)


@lru_cache(maxsize=32)
def _window_cpu(name: str, win_length: int, dtype: torch.dtype) -> torch.Tensor:
    return getattr(torch, f"{name}_window")(win_length, dtype=dtype)


def make_window(window: str, win_length: int, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The periodic analysis window of ``win_length`` samples (cached per name, size, dtype)."""
    return _window_cpu(window_name(window), int(win_length), dtype).to(device)


def check_resolution(n_fft: int, hop: int, win_length: int) -> tuple[int, int, int]:
    """One STFT resolution: positive integers with hop ≤ win_length ≤ n_fft.

    A hop longer than the window would skip samples; a window longer than the FFT would
    be truncated by ``torch.stft``.
    """
    values = {"n_fft": n_fft, "hop": hop, "win_length": win_length}
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} is not accepted; expected a positive integer")
    if not hop <= win_length <= n_fft:
        raise ValueError(
            f"(n_fft, hop, win_length)=({n_fft}, {hop}, {win_length}) is not accepted; "
            "expected hop <= win_length <= n_fft"
        )
    return n_fft, hop, win_length


def min_length(n_fft: int) -> int:
    """Shortest signal the centred STFT accepts: reflect padding by n_fft/2 needs T > n_fft/2."""
    return n_fft // 2 + 1


def stft(x: torch.Tensor, n_fft: int, hop: int, win_length: int,
         window: str | torch.Tensor = "hann") -> torch.Tensor:
    """Complex STFT of ``x`` (B, C, T) → (B, C, n_fft//2 + 1, frames), frames = T//hop + 1.

    ``window`` is a name from :data:`WINDOWS` (a cached window is used) or a tensor of
    ``win_length`` samples (e.g. a registered buffer of a loss).
    """
    check_signal("x", x, 1)
    n_fft, hop, win_length = check_resolution(n_fft, hop, win_length)
    T = x.shape[-1]
    if T < min_length(n_fft):
        raise ValueError(
            f"x has {T} samples; the centred STFT with n_fft={n_fft} needs at least "
            f"{min_length(n_fft)} (reflect padding by n_fft/2 must be shorter than the signal)"
        )
    if isinstance(window, str):
        w = make_window(window, win_length, dtype=x.dtype, device=x.device)
    else:
        if window.shape != (win_length,):
            raise ValueError(f"window has shape {tuple(window.shape)}; expected ({win_length},)")
        w = window.to(dtype=x.dtype, device=x.device)
    lead = x.shape[:-1]
    X = torch.stft(x.reshape(-1, T), n_fft, hop, win_length, w, center=True,
                   pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    return X.reshape(*lead, *X.shape[-2:])


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, win_length: int,
                   window: str | torch.Tensor = "hann", floor: float | torch.Tensor = 0.0) -> torch.Tensor:
    """|STFT| of ``x`` (B, C, T) → (B, C, n_fft//2 + 1, frames), clamped below at ``floor``
    (a number, or a tensor > 0 that broadcasts against the result, e.g. one per sample).

    The magnitude is the complex abs (``hypot``), so it neither overflows for signals
    near 1e20 in float32 nor underflows for 1e-20, unlike sqrt(re² + im²).
    auraloss uses sqrt(max(re² + im², eps)), which is the same as this with
    floor = sqrt(eps), up to rounding.
    """
    X = stft(x, n_fft, hop, win_length, window)
    if not isinstance(floor, torch.Tensor):
        if floor <= 0:
            return X.abs()
        floor = torch.tensor(floor, dtype=X.real.dtype, device=X.device)
    # bins below the floor end at the floor anyway; zeroing them first keeps the gradient
    # of |X|, X/|X|, from turning a subnormal X (a tiny signal) into NaN
    # (X.abs() < floor, not >=, so that NaN stays NaN: a NaN input gives a NaN loss)
    return torch.maximum(torch.where(X.abs() < floor, torch.zeros_like(X), X).abs(), floor)


class _RealFFT(torch.autograd.Function):
    """``torch.fft.rfft(x, n)`` along the last axis (length L ≤ n), with a real-to-complex backward.

    For a real loss of Y = rfft(x, n) with gradient G (PyTorch's convention, ∂/∂Re + i∂/∂Im),
    ∂L/∂x[j] = Re Σ_k G[k] e^{2πijk/n} = n · irfft(c ⊙ G, n)[j], where c = 1/2 on the bins that
    stand for a conjugate pair and 1 on the DC (and, n even, the Nyquist) bin. autograd's own
    backward pads G to the full two-sided spectrum and runs a complex-to-complex FFT, about
    twice the work of this complex-to-real one.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> torch.Tensor:
        ctx.n, ctx.length = n, x.shape[-1]
        return torch.fft.rfft(x, n=n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        n = ctx.n
        c = torch.full((g.shape[-1],), 0.5 * n, dtype=g.real.dtype, device=g.device)
        c[0] = n
        if n % 2 == 0:
            c[-1] = n
        return torch.fft.irfft(g * c, n=n)[..., : ctx.length], None


def windowed_frames_rfft(x: torch.Tensor, n_fft: int, hop: int, win_length: int,
                         window: torch.Tensor) -> torch.Tensor:
    """|·|-equivalent of :func:`stft`: (B, C, T) → complex (B, C, frames, n_fft//2 + 1).

    Frame m holds the ``win_length`` samples under the window, x_pad[m·hop + l + j]·w[j]
    with l = (n_fft − win_length)//2 (``torch.stft``'s centring), transformed with an
    n_fft-point real FFT. Moving them to the start of the FFT frame multiplies bin k by
    e^{2πi k l / n_fft}, so |result| = |:func:`stft`| (transposed) while the windowing and
    the overlap-add of the backward touch win_length samples per frame instead of n_fft.
    Arguments are not checked (callers check them once).
    """
    T = x.shape[-1]
    lead = x.shape[:-1]
    pad = n_fft // 2
    xp = F.pad(x.reshape(-1, 1, T), (pad, pad), mode="reflect").squeeze(1)
    frames = 1 + (T + 2 * pad - n_fft) // hop
    left = (n_fft - win_length) // 2
    seg = xp[:, left:].unfold(-1, win_length, hop)[:, :frames] * window
    Y = _RealFFT.apply(seg, n_fft)
    return Y.reshape(*lead, *Y.shape[-2:])

