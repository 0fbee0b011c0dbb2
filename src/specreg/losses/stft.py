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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from specreg._checks import check_int_sequence, check_positive
from specreg.losses.base import SpectralLoss
from specreg.transforms.stft import check_resolution, make_window, min_length, stft_magnitude, window_name


def safe_frobenius(d: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """‖d‖_F over ``dims`` without overflow and with a finite gradient at d = 0.

    d is divided by its detached max |d| before squaring, so values near 1e20 (whose
    squares overflow float32) stay in range; at d = 0 the sqrt is masked out, so the
    gradient there is 0 instead of 0/0.
    """
    scale = d.detach().abs().amax(dim=dims, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    s = (d / scale).square().sum(dim=dims)
    nonzero = s > 0
    root = torch.sqrt(torch.where(nonzero, s, torch.ones_like(s)))
    return torch.where(nonzero, root, torch.zeros_like(root)) * scale.reshape(s.shape)


class MultiResolutionSTFTLoss(SpectralLoss):
    """Per-sample multi-resolution STFT loss on (B, C, T) audio; see the module docstring.

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
        if x0.shape[-1] < self.min_length:
            raise ValueError(
                f"x0 has {x0.shape[-1]} samples; MultiResolutionSTFTLoss with fft_sizes "
                f"{[r[0] for r in self.resolutions]} needs at least {self.min_length}"
            )
        floor = self.eps**0.5
        dims = (1, 2, 3)  # channels, frequency, frames
        total = x0.new_zeros(x0.shape[0])
        for i, (n_fft, hop, win) in enumerate(self.resolutions):
            window = getattr(self, f"window_{i}")
            S_hat = stft_magnitude(x0_hat, n_fft, hop, win, window, floor=floor)
            S = stft_magnitude(x0, n_fft, hop, win, window, floor=floor)
            if self.w_sc:
                total = total + self.w_sc * safe_frobenius(S - S_hat, dims) / safe_frobenius(S, dims)
            if self.w_log_mag:
                total = total + self.w_log_mag * (S.log() - S_hat.log()).abs().mean(dim=dims)
        return total / len(self.resolutions)

    def extra_repr(self) -> str:
        return (f"resolutions={self.resolutions}, window={self.window_name!r}, w_sc={self.w_sc}, "
                f"w_log_mag={self.w_log_mag}, eps={self.eps}, reduction={self.reduction!r}")
