r"""Fused forward and backward of the amplitude family (Eq. 14, Eq. 15, the radial PSD loss).

The losses of :mod:`specreg.losses.fourier` written with autograd take some thirty
elementwise passes over the spectrum, forward and backward, for the hardening (per-sample
powers of two, residue snapping, safe |·| and phase). Here each loss is one
``torch.autograd.Function`` for x̂0 (x0 without a gradient, the training case): the
forward computes the value and, in the same passes, the gradient with respect to the
half spectrum F̂ = rfftn(x̂0/ŝ); the backward is one inverse FFT and a per-sample product.

The rfftn's adjoint. For a real loss of F = rfftn(u) (orthonormal, over the last ndim
dims) with gradient G (PyTorch's convention, ∂/∂Re + i·∂/∂Im), ∂L/∂u = irfftn(c ⊙ G) with
c = 1/2 on the bins of the last dim that stand for a conjugate pair and 1 on DC and
Nyquist, orthonormal inverse. Every loss here is a Hermitian-weighted mean (weights
h = 1/c), so c·h = 1: the gradient is irfftn of the per-bin derivative with the weights
left out.

Same numbers as the autograd versions (``tests/test_losses_fourier.py`` compares them,
values and gradients, and runs gradcheck in float64); the scales, residue levels and the
NaN policy (a non-finite sample gives NaN) are the same functions.
"""

from __future__ import annotations

import math

import torch

from specreg.losses.base import per_sample_view, pow2_scale
from specreg.transforms.fourier import hermitian_weights, radial_bins, residue_tolerance, rfftn, spatial_dims


def _to_signal(g_f: torch.Tensor, shape: tuple[int, ...], ndim: int) -> torch.Tensor:
    """∂L/∂u from the Hermitian-weight-free per-bin gradient ``g_f`` (see module doc)."""
    return torch.fft.irfftn(g_f, s=shape, dim=spatial_dims(ndim), norm="ortho")


def _times_ratio(g: torch.Tensor, s: torch.Tensor, s_x: torch.Tensor) -> torch.Tensor:
    """g·(s/s_x) for powers of two s ≥ s_x, as two factors of at most 2^127 each."""
    e = torch.frexp(s).exponent - torch.frexp(s_x).exponent
    half = torch.div(e, 2, rounding_mode="floor")
    r1, r2 = torch.exp2(half.to(g.dtype)), torch.exp2((e - half).to(g.dtype))
    return g * per_sample_view(r1, g) * per_sample_view(r2, g)


def _scaled_spectrum(x: torch.Tensor, s_x: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(F[x/s_x] as real pairs (…, 2), |F| with residue set to 0, residue level), as
    ``fourier._spectrum``. |F| is a plain 2-norm over the pair (one pass, 2× faster than
    the complex ``abs``): x/s_x has max |x/s_x| in [1, 2), so |F|² ≤ 4N cannot overflow, and
    bins whose squares could underflow lie far below the residue level, which is zeroed."""
    # × 1/s_x, exact (a power of two) and the same numbers as ÷ s_x, at a product's cost
    f = torch.view_as_real(rfftn(x * per_sample_view(s_x.reciprocal(), x), ndim))
    a = torch.linalg.vector_norm(f, dim=-1)
    tol = residue_tolerance(a, ndim)
    return f, torch.where(a <= tol, 0.0, a), tol  # NaN stays NaN


def _times_pair(f: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The complex f·q for f as real pairs and a real q: one real product."""
    return torch.view_as_complex(f * q.unsqueeze(-1))


def _over(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """v/a where a > 0, else 0 (a ≥ 0)."""
    return torch.where(a > 0, v / a, 0.0)


def _inverse_norm(a: torch.Tensor) -> torch.Tensor:
    """1/a where a > 0, else 0 (a ≥ 0)."""
    return torch.where(a > 0, a.reciprocal(), 0.0)


def _scales(x0_hat: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s_hat, s0 = pow2_scale(x0_hat), pow2_scale(x0)
    return s_hat, s0, torch.maximum(s_hat, s0)


class FusedAmplitudeL1(torch.autograd.Function):
    """Eq. 14, L_A = mean_ω |A0 − Â|, value and ∂/∂x̂0; see the module docstring.

    ∂L/∂x̂0 = irfftn(sign(Â − A0)·F̂/|F̂| / n) exactly: the scales cancel (s·(ŝ/s)/ŝ = 1),
    so unlike the autograd version nothing underflows when x0 is 2^149 times larger."""

    @staticmethod
    def forward(ctx, x0_hat: torch.Tensor, x0: torch.Tensor, ndim: int) -> torch.Tensor:
        shape = tuple(x0.shape[-ndim:])
        s_hat, s0, s = _scales(x0_hat, x0)
        f_hat, a_hat, _ = _scaled_spectrum(x0_hat, s_hat, ndim)
        _, a0, _ = _scaled_spectrum(x0, s0, ndim)
        d = torch.addcmul(a_hat * per_sample_view(s_hat / s, a_hat), a0, per_sample_view(-s0 / s, a0))
        n = math.prod(x0.shape[1:])
        w = hermitian_weights(shape, dtype=d.dtype, device=d.device)
        value = torch.matmul(d.abs(), w).flatten(1).sum(1) * (s / n)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(_times_pair(f_hat, _over(torch.sign(d), a_hat)))  # the 1/n: in backward
            ctx.shape, ctx.ndim, ctx.n = shape, ndim, n
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        (g_f,) = ctx.saved_tensors
        grad = _to_signal(g_f, ctx.shape, ctx.ndim)
        return grad * per_sample_view(g / ctx.n, grad), None, None


def _snapped(f: torch.Tensor, tol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, small): z = ``snap_residue``(f) as real pairs, ``small`` where a part was snapped
    (its gradient is 0 there)."""
    small = f.abs() <= tol.unsqueeze(-1)
    return torch.where(small, 0.0, f), small  # +0, not f·0: −0 would put a negative real bin at −π


def _tangent(z: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """i·z as real pairs, (−Im z, Re z), 0 in the parts that were snapped."""
    return torch.where(small, 0.0, torch.stack([-z[..., 1], z[..., 0]], -1))


class FusedAmplitudePhase(torch.autograd.Function):
    """Eq. 15 in both forms (``weighted`` False: L_A·(1 + β·L_φ); True: the amplitude-weighted
    1 − cos form), value and ∂/∂x̂0, as :class:`specreg.losses.FourierAmplitudePhaseLoss`.

    The per-bin gradient is formed in units of s (the amplitude part times ŝ/s, as the
    autograd version) and multiplied by s/ŝ after the inverse FFT, so a gradient beyond
    the dtype is ±inf, never inf·0 = NaN."""

    @staticmethod
    def forward(ctx, x0_hat: torch.Tensor, x0: torch.Tensor, ndim: int, beta: float, weighted: bool
                ) -> torch.Tensor:
        shape = tuple(x0.shape[-ndim:])
        s_hat, s0, s = _scales(x0_hat, x0)
        f_hat, a_hat, tol_hat = _scaled_spectrum(x0_hat, s_hat, ndim)
        f0, a0, tol0 = _scaled_spectrum(x0, s0, ndim)
        r_hat = per_sample_view(s_hat / s, a_hat)
        A0 = a0 * per_sample_view(s0 / s, a0)
        d = torch.addcmul(-A0, a_hat, r_hat)
        z_hat, small = _snapped(f_hat, tol_hat)
        z0, _ = _snapped(f0, tol0)
        n = math.prod(x0.shape[1:])
        w = hermitian_weights(shape, dtype=a0.dtype, device=a0.device)
        need = ctx.needs_input_grad[0]
        if not weighted:
            # φ = atan2(Im, Re) of the snapped spectrum: atan2 is blind to |z|, and gives
            # atan2(+0, +0) = 0 where z = 0 (as safe_angle)
            dphi = torch.atan2(z_hat[..., 1], z_hat[..., 0]) - torch.atan2(z0[..., 1], z0[..., 0])
            l_a = torch.matmul(d.abs(), w).flatten(1).sum(1) / n
            l_phi = torch.matmul(dphi.abs(), w).flatten(1).sum(1) / n
            value = l_a * (1.0 + beta * l_phi) * s
            if need:
                # amplitude: sign·ŝ/s·F̂/|F̂|; phase: ∂φ̂/∂F̂ = i·z/|z|² on the snapped z
                coef_a = per_sample_view((1.0 + beta * l_phi) / n, d) * torch.sign(d) * r_hat
                coef_p = _over(per_sample_view(beta * l_a / n, d) * torch.sign(dphi), z_hat.square().sum(-1))
                g_f = torch.addcmul(f_hat * _over(coef_a, a_hat).unsqueeze(-1), _tangent(z_hat, small),
                                    coef_p.unsqueeze(-1))
        else:
            inv_hat = _inverse_norm(torch.linalg.vector_norm(z_hat, dim=-1))
            u_hat = z_hat * inv_hat.unsqueeze(-1)
            du = z0 * _inverse_norm(torch.linalg.vector_norm(z0, dim=-1)).unsqueeze(-1) - u_hat
            one_minus_cos = 0.5 * du.square().sum(-1)
            value = torch.matmul(d.abs() + beta * A0 * one_minus_cos, w).flatten(1).sum(1) * (s / n)
            if need:
                # 1 − cos = |u0 − û|²/2: ∂/∂û = û − u0, through û = z/|z| its tangential part
                # i·û·Im(conj(û)·(û − u0))/|z| = i·z·t, t = Im(conj(û)·(û − u0))/|z|²
                t = (u_hat[..., 1] * du[..., 0] - u_hat[..., 0] * du[..., 1]) * (beta / n) * A0 * inv_hat * inv_hat
                g_f = torch.addcmul(f_hat * _over(torch.sign(d) * (r_hat / n), a_hat).unsqueeze(-1),
                                    _tangent(z_hat, small), t.unsqueeze(-1))
        if need:
            ctx.save_for_backward(torch.view_as_complex(g_f), s, s_hat)
            ctx.shape, ctx.ndim = shape, ndim
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        g_f, s, s_hat = ctx.saved_tensors
        grad = _times_ratio(_to_signal(g_f, ctx.shape, ctx.ndim), s, s_hat)
        return grad * per_sample_view(g, grad), None, None, None, None


class FusedLogRadialPowerL1(torch.autograd.Function):
    """The radial PSD loss, mean_{c,r} |log10 P̂(r) − log10 P0(r)|, value and ∂/∂x̂0, as
    :class:`specreg.losses.PowerSpectrumLoss` (m and s detached there too)."""

    @staticmethod
    def forward(ctx, x0_hat: torch.Tensor, x0: torch.Tensor, ndim: int, eps: float) -> torch.Tensor:
        shape = tuple(x0.shape[-ndim:])
        index, counts, _ = radial_bins(shape)
        index = index.to(x0.device)
        counts = counts.to(device=x0.device, dtype=x0.dtype)
        w = hermitian_weights(shape, dtype=x0.dtype, device=x0.device)

        def log_power(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            s = pow2_scale(x)
            f, a, _ = _scaled_spectrum(x, s, ndim)
            m = a.flatten(1).amax(1)
            m = torch.where(m > 0, m, torch.ones_like(m))
            a2 = a.square()
            flat = (a2 * w).flatten(-ndim)
            p = flat.new_zeros(*flat.shape[:-1], counts.numel()).index_add_(-1, index, flat)
            p = (p / counts)[..., :-1] / per_sample_view(m * m, flat)  # ring means of (a/m)²
            log_scale = torch.log10(m) + torch.log10(s)
            return f, a, m, s, p, torch.log10(p + eps) + 2.0 * per_sample_view(log_scale, p)

        f_hat, a_hat, m_hat, s_hat, p_hat, lp_hat = log_power(x0_hat)
        *_, lp0 = log_power(x0)
        d = lp_hat - lp0
        n = d[0].numel()
        value = d.abs().flatten(1).mean(1)
        if ctx.needs_input_grad[0]:
            # ∂/∂P̂(r) = sign(d)/(n·ln10·(P̂ + eps)); P̂(r) = Σ_ring h·|F̂/m|²/count, and
            # |F̂|²'s gradient 2F̂ (0 where the amplitude is residue); h·c = 1 (module doc)
            coef = torch.sign(d) / ((n * math.log(10.0) / 2.0) * (p_hat + eps) * counts[:-1])
            coef = torch.cat([coef, torch.zeros_like(coef[..., :1])], -1)  # corners: no ring
            per_bin = coef.index_select(-1, index).reshape(a_hat.shape)
            q = per_bin * (a_hat > 0) / per_sample_view(m_hat * m_hat, a_hat)
            ctx.save_for_backward(_times_pair(f_hat, q), s_hat)
            ctx.shape, ctx.ndim = shape, ndim
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        g_f, s_hat = ctx.saved_tensors
        grad = _to_signal(g_f, ctx.shape, ctx.ndim)  # ∂/∂(x̂0/ŝ); ∂/∂x̂0 divides by ŝ, entry by entry
        grad = grad / per_sample_view(s_hat, grad)
        return grad * per_sample_view(g, grad), None, None, None


__all__ = ["FusedAmplitudeL1", "FusedAmplitudePhase", "FusedLogRadialPowerL1"]
