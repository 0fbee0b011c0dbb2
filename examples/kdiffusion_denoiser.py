"""Spectral regularization in k-diffusion's ``Denoiser`` convention.

k-diffusion (Crowson) trains a Karras et al. preconditioned denoiser through
``Denoiser.loss(input, noise, sigma, **kwargs)``, which returns one loss value per
sample; ``input`` is the clean batch x0, the inner model is called with
(c_in·x, σ) and its output F is compared with the target (x0 − c_skip·x)/c_out, where
(c_skip, c_out, c_in) = ``get_scalings(σ)``. Below, :class:`SpectralDenoiser` subclasses
that ``Denoiser`` and adds λ·L_S(x̂0, x0) in two marked lines, with x̂0 = D(x; σ) =
c_skip·x + c_out·F — the same number EDM's denoiser returns.

Why a stand-in: ``import k_diffusion`` imports torchvision (through its augmentation and
evaluation modules), which must be a build matching the installed torch exactly; specreg
does not depend on torchvision, and with the CPU torch wheel that specreg's set-up
installs the import fails. So the example subclasses the real
``k_diffusion.layers.Denoiser`` when ``import k_diffusion`` works, and otherwise a local
class with the same constructor, ``get_scalings``, ``loss`` and ``forward`` written to
k-diffusion's conventions (nothing imported from it). ``tests/test_examples.py`` checks
that this loss equals ``specreg.EDM("edm").loss`` for the same σ and noise.

    python examples/kdiffusion_denoiser.py --steps 3000 --loss haar --lam 0.1

Data: Fashion-MNIST padded to 32×32 in [−1, 1] (the Debian package
``dataset-fashion-mnist``; see ``specreg.data.FashionMNIST``).
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import specreg
from specreg.data import FashionMNIST
from specreg.models import unet_preset
from specreg.train.trainer import save_image_grid


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Append singleton dims to x until it has ``target_dims`` dims (k-diffusion's utils.append_dims)."""
    return x[(...,) + (None,) * (target_dims - x.ndim)]


try:  # the real class, where k-diffusion imports (it needs a torchvision matching torch)
    from k_diffusion.layers import Denoiser, dct, freq_weight_nd

    HAVE_K_DIFFUSION = True
except (ImportError, RuntimeError, OSError):
    HAVE_K_DIFFUSION = False

    def dct(x: torch.Tensor) -> torch.Tensor:
        """Orthonormal DCT-II over the last 2 (B, C, H, W) or 3 (B, C, F, H, W) dims.

        X[k] = s_k·Σ_n x[n]·cos(π(2n + 1)k/(2N)), s_0 = √(1/N), s_k = √(2/N): the orthonormal
        transform, as k-diffusion's (torch has no DCT; a matrix product per axis is exact
        and small at these sizes).
        """
        if x.ndim not in (4, 5):
            raise ValueError(f"dct needs (B, C, H, W) or (B, C, F, H, W) input; got shape {tuple(x.shape)}")
        for dim in range(2, x.ndim):
            n = x.shape[dim]
            k = torch.arange(n, dtype=torch.float64)[:, None]
            basis = torch.cos(math.pi * (2 * torch.arange(n, dtype=torch.float64) + 1) * k / (2 * n))
            basis = (basis * math.sqrt(2 / n)).index_fill(0, torch.tensor([0]), 1 / math.sqrt(n))
            x = torch.movedim(torch.movedim(x, dim, -1) @ basis.T.to(x), -1, dim)
        return x

    def freq_weight_nd(shape: tuple[int, ...], scales: float = 0, dtype: torch.dtype | None = None,
                       device: torch.device | None = None) -> torch.Tensor:
        """k-diffusion's DCT frequency weights: w = min over axes of −log2(r), r = (k + 1)/(2N).

        r runs over N evenly spaced values from 1/(2N) to 1/2, so the lowest frequency of an
        axis weighs log2(2N) and the highest 1; with ``scales`` ≥ 1 each axis's weight is
        clipped at ``scales`` (``loss_scales`` of a k-diffusion config).
        """
        weights = []
        for axis, n in enumerate(shape):
            w = -torch.log2(torch.linspace(0.5 / n, 0.5, n, dtype=dtype, device=device))
            if scales >= 1:
                w = w.clamp_max(scales)
            weights.append(w.view([-1 if i == axis else 1 for i in range(len(shape))]))
        return functools.reduce(torch.minimum, weights)

    class Denoiser(nn.Module):
        """Stand-in for ``k_diffusion.layers.Denoiser``: same signature, same numbers.

        D(x; σ) = c_skip·x + c_out·F(c_in·x, σ) with
        c_skip = σ_d²/(σ² + σ_d²), c_out = σ·σ_d/sqrt(σ² + σ_d²), c_in = 1/sqrt(σ² + σ_d²).
        ``loss`` = weighting(σ)·mean((F − (x0 − c_skip·x)/c_out)²) per sample, which is
        λ_EDM(σ)·mean((D − x0)²) since 1/c_out² = λ_EDM(σ) (EDM's loss, Karras et al. Eq. 8).
        With ``scales`` ≠ 1 the squared error is taken on the DCT of F − target, weighted
        per frequency by :func:`freq_weight_nd` (k-diffusion's ``loss_scales``).
        """

        def __init__(self, inner_model: Callable[..., torch.Tensor], sigma_data: float = 1.0,
                     weighting: str | Callable[[torch.Tensor], torch.Tensor] = "karras", scales: float = 1) -> None:
            super().__init__()
            self.inner_model = inner_model
            self.sigma_data = sigma_data
            self.scales = scales
            if callable(weighting):
                self.weighting = weighting
            elif weighting == "karras":
                self.weighting = torch.ones_like
            elif weighting == "soft-min-snr":
                self.weighting = self._weighting_soft_min_snr
            elif weighting == "snr":
                self.weighting = self._weighting_snr
            else:
                raise ValueError(f"weighting={weighting!r} is not accepted; expected 'karras', "
                                 "'soft-min-snr', 'snr' or a callable")

        def _weighting_soft_min_snr(self, sigma: torch.Tensor) -> torch.Tensor:
            return (sigma * self.sigma_data) ** 2 / (sigma**2 + self.sigma_data**2) ** 2

        def _weighting_snr(self, sigma: torch.Tensor) -> torch.Tensor:
            return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

        def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            c_skip = self.sigma_data**2 / (sigma**2 + self.sigma_data**2)
            c_out = sigma * self.sigma_data / (sigma**2 + self.sigma_data**2) ** 0.5
            c_in = 1 / (sigma**2 + self.sigma_data**2) ** 0.5
            return c_skip, c_out, c_in

        def loss(self, input: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
            c_skip, c_out, c_in = [append_dims(x, input.ndim) for x in self.get_scalings(sigma)]
            c_weight = self.weighting(sigma)
            noised_input = input + noise * append_dims(sigma, input.ndim)
            model_output = self.inner_model(noised_input * c_in, sigma, **kwargs)
            target = (input - c_skip * noised_input) / c_out
            if self.scales == 1:
                return (model_output - target).pow(2).flatten(1).mean(1) * c_weight
            sq_error = dct(model_output - target) ** 2
            f_weight = freq_weight_nd(sq_error.shape[2:], self.scales, dtype=sq_error.dtype, device=sq_error.device)
            return (sq_error * f_weight).flatten(1).mean(1) * c_weight

        def forward(self, input: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
            c_skip, c_out, c_in = [append_dims(x, input.ndim) for x in self.get_scalings(sigma)]
            return self.inner_model(input * c_in, sigma, **kwargs) * c_out + input * c_skip


class SpectralDenoiser(Denoiser):
    """k-diffusion's ``Denoiser`` whose per-sample loss adds λ·L_S(x̂0, x0) (Eq. 17).

    ``loss`` repeats the parent's lines instead of calling ``super().loss`` because the
    parent does not return the network output, and x̂0 needs it: running the network a
    second time would double the cost of a step. It takes the parent's options
    (``sigma_data``, ``weighting``, ``scales``) and honours ``scales`` as the parent does,
    also when set after construction.
    """

    def __init__(self, inner_model: Callable[..., torch.Tensor], regularizer: specreg.SpectralRegularizer,
                 sigma_data: float = 1.0, weighting: str | Callable[[torch.Tensor], torch.Tensor] = "karras",
                 scales: float = 1) -> None:
        super().__init__(inner_model, sigma_data=sigma_data, weighting=weighting, scales=scales)
        self.regularizer = regularizer

    def loss(self, input: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        c_skip, c_out, c_in = [append_dims(x, input.ndim) for x in self.get_scalings(sigma)]
        c_weight = self.weighting(sigma)
        noised_input = input + noise * append_dims(sigma, input.ndim)
        model_output = self.inner_model(noised_input * c_in, sigma, **kwargs)
        target = (input - c_skip * noised_input) / c_out
        if self.scales == 1:
            loss = (model_output - target).pow(2).flatten(1).mean(1) * c_weight
        else:  # k-diffusion's loss_scales: a frequency-weighted error on the DCT
            sq_error = dct(model_output - target) ** 2
            f_weight = freq_weight_nd(sq_error.shape[2:], self.scales, dtype=sq_error.dtype, device=sq_error.device)
            loss = (sq_error * f_weight).flatten(1).mean(1) * c_weight
        x0_hat = specreg.x0_from_pred(model_output * c_out + noised_input * c_skip, noised_input, prediction="edm")  # specreg line 1
        return loss + self.regularizer(x0_hat, input, sigma=sigma).value  # specreg line 2


class InnerModel(nn.Module):
    """k-diffusion's inner-model convention, ``inner(c_in·x, σ)``, around specreg's UNet.

    k-diffusion hands the inner model σ itself; its image models turn it into the noise
    label c_noise = ln(σ)/4 (EDM's choice), which is what this wrapper does.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.net(x, sigma.log() / 4, **kwargs)


def rand_log_normal(shape: tuple[int, ...], loc: float, scale: float, generator: torch.Generator,
                    device: torch.device) -> torch.Tensor:
    """σ = exp(loc + scale·n), n ~ N(0, 1): k-diffusion's ``utils.rand_log_normal``."""
    return (torch.randn(shape, generator=generator) * scale + loc).exp().to(device)


def lam_arg(text: str) -> float | str:
    """λ on the command line: a number, or a policy name ("edm", "snr")."""
    try:
        return float(text)
    except ValueError:
        return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--loss", default="haar", help="spectral loss name for specreg.build_loss (e.g. haar, "
                   "fourier_amp, fourier_ap_weighted)")
    p.add_argument("--lam", type=lam_arg, default=0.1, help='λ: a number, "edm" or "snr"')
    # x̂0 = D(x; σ) is a bounded blend of x and the network output at every σ: no gate by default.
    p.add_argument("--sigma-max", type=float, default=None, help="apply the term only where σ ≤ this")
    p.add_argument("--sigma-data", type=float, default=0.5, help="σ_data of the preconditioning")
    p.add_argument("--loss-scales", type=float, default=1, help="k-diffusion's loss_scales: 1 = plain MSE, "
                   "otherwise a DCT frequency-weighted error with the weights clipped at this value")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--samples", type=int, default=64, help="images in the sample grid")
    p.add_argument("--sample-steps", type=int, default=18, help="Heun steps (Karras σ grid)")
    p.add_argument("--out", type=Path, default=Path("runs/kdiffusion_denoiser"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-every", type=int, default=100)
    return p.parse_args(argv)


def batches(loader: DataLoader):
    """Endless batches, reshuffled each epoch."""
    while True:
        yield from loader


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Train, sample, write ``samples.png``; return the per-step batch-mean losses."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    data = FashionMNIST(split="train", size=32)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    generator = torch.Generator().manual_seed(args.seed)

    print("Denoiser: " + ("k_diffusion.layers.Denoiser" if HAVE_K_DIFFUSION else "local stand-in (k_diffusion "
                          "does not import here)"))
    reg = specreg.SpectralRegularizer(args.loss, lam=args.lam, sigma_max=args.sigma_max, sigma_data=args.sigma_data)
    model = SpectralDenoiser(InnerModel(unet_preset("cpu32s")), reg, sigma_data=args.sigma_data,
                             scales=args.loss_scales).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    history = []
    model.train()
    for step, (x0, _) in zip(range(args.steps), batches(loader)):
        x0 = x0.to(device)
        noise = torch.randn_like(x0)
        sigma = rand_log_normal((x0.shape[0],), loc=-1.2, scale=1.2, generator=generator, device=device)
        loss = model.loss(x0, noise, sigma)  # (B,), as k-diffusion's train loop expects
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()

        history.append({"loss": loss.mean().item()})
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:6d}  loss {history[-1]['loss']:.4f}")

    # Sampling sees only D(x; σ) = model(x, σ), the convention of k-diffusion's samplers
    # (and of specreg's, which follow it).
    model.eval()
    sigmas = specreg.karras_sigmas(args.sample_steps, sigma_min=0.002, sigma_max=80.0, device=device)
    x = torch.randn((args.samples, 1, 32, 32), generator=torch.Generator().manual_seed(args.seed)).to(device)
    with torch.no_grad():
        x = specreg.sample_heun(model, x * sigmas[0].float(), sigmas)
    grid = save_image_grid(x, args.out / "samples.png")
    print(f"wrote {grid}")
    return history


if __name__ == "__main__":
    main()
