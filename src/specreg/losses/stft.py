"""Multi-resolution STFT loss (Yamamoto et al. 2019), per sample, as auraloss defines it.

Used as an audio regularizer baseline and as the MR-STFT metric of the paper's vocoder
experiment. For each resolution r (n_fft, hop, win_length), with S = |STFT(x0)| and
Ŝ = |STFT(x̂0)| clamped below at sqrt(eps):

    L_sc(r)  = ‖S − Ŝ‖_F / ‖S‖_F                       (spectral convergence)
    L_mag(r) = mean |ln S − ln Ŝ|                       (log-magnitude L1, natural log)
    L        = (1/R) Σ_r [ w_sc · L_sc(r) + w_log_mag · L_mag(r) ]

Norms and means run over channels × frequency × frames of each sample, so a batch of
one gives exactly ``auraloss.freq.MultiResolutionSTFTLoss`` (which pools the whole
batch instead). L is dimensionless.

Speed (the usual case, x0 without a gradient): both signals are first scaled per sample
by a power of two g ≤ 1 that brings max |x| to at most 1 (the floor is scaled with them;
exact, and L does not change), so |S|² cannot overflow; the STFT windows only the
``win_length`` samples under the window (:func:`specreg.transforms.stft.windowed_frames_rfft`),
and the terms of one resolution and their gradient with respect to the STFT of x̂0 are computed in one fused pass
(:class:`_ResolutionTerms`). When x0 needs a gradient too, the loss is written with
plain autograd operations instead, on the same scaled signals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from specreg._checks import check_int_sequence, check_positive
from specreg.losses.base import SpectralLoss, scale_down, scale_value
from specreg.transforms.stft import (
    check_resolution,
    make_window,
    min_length,
    stft_magnitude,
    window_name,
    windowed_frames_rfft,
)

_DIMS = (1, 2, 3)  # every dim of one sample's spectrogram (channels, frequency and frames)


def _pow2_gain(*xs: torch.Tensor, dims: tuple[int, ...], floor: float = 0.0, reach: int = 1) -> torch.Tensor:
    """Per-sample power of two g applied to all ``xs`` (detached, exact to apply).

    g = 2^-e with e = ceil(log2 max|x|) over all ``xs`` (0 while max|x| ≤ 1), so that
    |STFT|² cannot overflow; but e stays ≤ the value that keeps (g·``floor``)² a normal
    float32 (≥ 2^-126): below it, magnitudes near the floor square to subnormals or 0
    and the log-magnitude term and its gradient lose all precision (a 1e20 x0 against a
    1 x̂0 made the gradient NaN). Overflow wins: e stays ≥ the value at which
    ``reach``·max|x|·g (a bound on |STFT|, ``reach`` the longest window) is 2^62.
    """
    m = torch.stack([x.detach().abs().amax(dim=dims, keepdim=True) for x in xs]).amax(0)
    # in the signals' own dtype: float64 beyond 3e38 went through float32 and was not scaled
    m = torch.nan_to_num(m, posinf=torch.finfo(m.dtype).max)
    e = torch.ceil(torch.log2(m.clamp_min(1.0)))
    if floor > 0:
        e = torch.maximum(e.clamp_max(math.floor(63 + math.log2(floor))), e + (math.ceil(math.log2(reach)) - 62))
    return torch.exp2(-e)


def safe_frobenius(d: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """‖d‖_F over ``dims`` without overflow and with a finite gradient at d = 0.

    d is divided by its detached max |d| before squaring, so values near 1e20 (whose
    squares overflow float32) stay in range; at d = 0 the sqrt is masked out, so the
    gradient there is 0 instead of 0/0.
    """
    scale = d.detach().abs().amax(dim=dims, keepdim=True)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # == 0, not > 0: NaN stays NaN
    s = (d / scale).square().sum(dim=dims)
    zero = s == 0
    root = torch.sqrt(torch.where(zero, torch.ones_like(s), s))
    return torch.where(zero, torch.zeros_like(root), root) * scale.reshape(s.shape)


def _spectral_convergence(S: torch.Tensor, S_hat: torch.Tensor) -> torch.Tensor:
    """‖S − Ŝ‖_F / ‖S‖_F per sample, with the gradient (S − Ŝ)/(‖S − Ŝ‖·‖S‖) formed without
    the intermediate ‖S − Ŝ‖/‖S‖, which may overflow where the gradient does not (Ŝ near
    the dtype's largest value against S at the floor: the value is then +inf, truly)."""
    d = S - S_hat
    scale = d.detach().abs().amax(dim=_DIMS).clamp_min(torch.finfo(d.dtype).tiny)  # (B,)
    u = scale_down(d, scale)  # d/scale, its gradient passed through unchanged
    s = u.square().sum(dim=_DIMS)
    zero = s == 0
    root = torch.where(zero, torch.zeros_like(s), torch.sqrt(torch.where(zero, torch.ones_like(s), s)))
    # ‖S − Ŝ‖ rescaled with its gradient passed through, then divided by ‖S‖ (whose own
    # gradient, −L_sc/‖S‖, needs the rescaled value)
    return scale_value(root, (scale,), 1) / safe_frobenius(S, _DIMS)


def _modulus(Y: torch.Tensor) -> torch.Tensor:
    """|Y| with ``hypot``: sqrt(re² + im²) is 2.5× faster on the CPU, but where one signal
    is far smaller than the other (x̂0 ~ 1 against x0 ~ 1e36, both scaled by the same gain)
    the small one's squares are subnormal, and its gradient came out wrong by 95 %."""
    return Y.abs()


class _ResolutionTerms(torch.autograd.Function):
    """w_sc·L_sc + w_log_mag·L_mag of one resolution from Y = STFT(x̂0) and S = max(|STFT(x0)|, floor).

    The forward also forms ∂L/∂Y = (∂L/∂Ŝ) · 1[|Y| ≥ floor] · Y/|Y| with

        ∂L/∂Ŝ = −w_sc (S − Ŝ) / (‖S − Ŝ‖ ‖S‖) − w_log_mag sign(ln S − ln Ŝ) / (N Ŝ),

    (the first term 0 where S = Ŝ everywhere), so the backward is one product with the
    incoming per-sample gradient. Inputs must be scaled so that |Y|² cannot overflow.
    """

    @staticmethod
    def forward(ctx, Y: torch.Tensor, S: torch.Tensor, log_S: torch.Tensor, norm_S: torch.Tensor,
                floor: torch.Tensor, w_sc: float, w_log_mag: float) -> torch.Tensor:
        M = _modulus(Y)
        S_hat = torch.maximum(M, floor)
        D = S - S_hat
        norm_D = safe_frobenius(D, _DIMS)  # S may sit at a floor scaled far below 1
        E = log_S - S_hat.log()
        count = E[0].numel()
        out = w_sc * (norm_D / norm_S) + w_log_mag * E.abs().sum(dim=_DIMS) / count
        if ctx.needs_input_grad[0]:
            coef_sc = torch.where(norm_D > 0, w_sc / (norm_D * norm_S).clamp_min(torch.finfo(M.dtype).tiny),
                                  torch.zeros_like(norm_D))
            g = D.mul_(-coef_sc.reshape(-1, 1, 1, 1))
            g.sub_(E.sign_().div_(S_hat).mul_(w_log_mag / count))
            # Y/M before the product: (g/M)·Y overflowed where g ~ 1/M is large
            kept = M >= floor  # M ≥ floor > 0 there
            g = torch.where(kept, g, torch.zeros_like(M))
            M = torch.where(kept, M, torch.ones_like(M))
            ctx.save_for_backward(torch.complex(Y.real / M * g, Y.imag / M * g))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out: torch.Tensor):
        (g_Y,) = ctx.saved_tensors
        return g_Y * g_out.reshape(-1, 1, 1, 1), None, None, None, None, None, None


class MultiResolutionSTFTLoss(SpectralLoss):
    """Per-sample multi-resolution STFT loss on (B, C, T) audio; see the module docstring.

    Dims between the batch and time dims count as channels: (B, C, K, T) is (B, C·K, T).

    Args:
        fft_sizes, hop_sizes, win_lengths: one entry per resolution, equal lengths,
            positive integers with hop ≤ win_length ≤ n_fft (auraloss's defaults).
        window: ``"hann"`` (or ``"hann_window"``), ``"hamming"``, ``"blackman"``,
            ``"bartlett"``, ``"kaiser"``; stored as non-persistent buffers.
        w_sc, w_log_mag: weights of the spectral-convergence and log-magnitude terms.
        eps: floor of the squared magnitude (magnitudes are clamped at sqrt(eps)).
        reduction: ``"none"`` → (B,), ``"mean"``, ``"sum"``.
        ndim: accepted for a uniform ``build_loss`` call; only 1 (audio) is valid.

    Signals need more than max(fft_sizes)/2 samples (reflect padding). Example::

        >>> loss = MultiResolutionSTFTLoss()
        >>> x0 = torch.randn(4, 1, 8000)
        >>> loss(x0 + 0.1 * torch.randn_like(x0), x0).shape
        torch.Size([4])
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        window: str = "hann",
        w_sc: float = 1.0,
        w_log_mag: float = 1.0,
        eps: float = 1e-8,
        reduction: str = "none",
        ndim: int = 1,
    ) -> None:
        if ndim != 1:
            raise ValueError(f"ndim={ndim!r} is not accepted; MultiResolutionSTFTLoss is for 1-D audio (ndim=1)")
        super().__init__(ndim=1, reduction=reduction)
        fft_sizes = check_int_sequence("fft_sizes", fft_sizes)
        hop_sizes = check_int_sequence("hop_sizes", hop_sizes)
        win_lengths = check_int_sequence("win_lengths", win_lengths)
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError(
                f"fft_sizes, hop_sizes and win_lengths have lengths {len(fft_sizes)}, {len(hop_sizes)}, "
                f"{len(win_lengths)}; expected one entry per resolution in each"
            )
        self.resolutions = tuple(check_resolution(*r) for r in zip(fft_sizes, hop_sizes, win_lengths))
        self.window_name = window_name(window)
        self.w_sc = check_positive("w_sc", w_sc, allow_zero=True)
        self.w_log_mag = check_positive("w_log_mag", w_log_mag, allow_zero=True)
        self.eps = check_positive("eps", eps)
        for i, (_, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window_{i}", make_window(self.window_name, win).clone(), persistent=False)

    @property
    def min_length(self) -> int:
        """Fewest samples a signal needs for every resolution."""
        return max(min_length(n_fft) for n_fft, _, _ in self.resolutions)

    def per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        # (B, C, …, T): every dim between batch and time is a channel, as in the other losses
        x0_hat, x0 = x0_hat.flatten(1, -2), x0.flatten(1, -2)
        if x0.shape[-1] < self.min_length:
            raise ValueError(
                f"x0 has {x0.shape[-1]} samples; MultiResolutionSTFTLoss with fft_sizes "
                f"{[r[0] for r in self.resolutions]} needs at least {self.min_length}"
            )
        if not x0.requires_grad:
            return self._fast_per_sample(x0_hat, x0)
        # the same exact per-sample gain as the fast path: |STFT| of a 1e36 signal overflowed
        gain = _pow2_gain(x0_hat, x0, dims=(1, 2), floor=self.eps**0.5,
                          reach=max(win for _, _, win in self.resolutions))  # (B, 1, 1)
        x0_hat, x0 = x0_hat * gain, x0 * gain
        floor = (self.eps**0.5 * gain).unsqueeze(-1)  # (B, 1, 1, 1)
        total = x0.new_zeros(x0.shape[0])
        for i, (n_fft, hop, win) in enumerate(self.resolutions):
            window = getattr(self, f"window_{i}")
            S_hat = stft_magnitude(x0_hat, n_fft, hop, win, window, floor=floor)
            S = stft_magnitude(x0, n_fft, hop, win, window, floor=floor)
            if self.w_sc:
                total = total + self.w_sc * _spectral_convergence(S, S_hat)
            if self.w_log_mag:
                total = total + self.w_log_mag * (S.log() - S_hat.log()).abs().mean(dim=_DIMS)
        return total / len(self.resolutions)

    def _fast_per_sample(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The same value, for x0 without a gradient (see the module docstring)."""
        gain = _pow2_gain(x0_hat, x0, dims=(1, 2), floor=self.eps**0.5,
                          reach=max(win for _, _, win in self.resolutions))  # (B, 1, 1)
        x0_hat, x0 = x0_hat * gain, x0 * gain
        floor = (self.eps**0.5 * gain).unsqueeze(-1)  # (B, 1, 1, 1)
        total = x0.new_zeros(x0.shape[0])
        for i, (n_fft, hop, win) in enumerate(self.resolutions):
            window = getattr(self, f"window_{i}").to(x0.dtype)
            with torch.no_grad():
                Y0 = windowed_frames_rfft(x0, n_fft, hop, win, window)
                S = torch.maximum(_modulus(Y0), floor)
                log_S, norm_S = S.log(), safe_frobenius(S, _DIMS)
            Y = windowed_frames_rfft(x0_hat, n_fft, hop, win, window)
            total = total + _ResolutionTerms.apply(Y, S, log_S, norm_S, floor, self.w_sc, self.w_log_mag)
        return total / len(self.resolutions)

    def extra_repr(self) -> str:
        return (f"resolutions={self.resolutions}, window={self.window_name!r}, w_sc={self.w_sc}, "
                f"w_log_mag={self.w_log_mag}, eps={self.eps}, reduction={self.reduction!r}")
