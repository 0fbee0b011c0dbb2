"""Spectral regularization in the NVlabs/edm pattern: an ``EDMLoss``-style class.

NVlabs/edm (``training/loss.py``) writes the objective as a small class,
``loss_fn(net, images, labels, augment_pipe)``: draw σ from a log-normal, optionally
augment the batch to y, denoise y + n with the preconditioned network D, and return the
per-element weighted error λ_EDM(σ)·(D − y)²; the training loop sums it. Below,
:class:`SpectralEDMLoss` is that class plus two marked lines that add λ·L_S(x̂0, y),
with x̂0 = D(y + n; σ). The network follows EDM's ``EDMPrecond`` calling convention
``net(x, sigma, class_labels, augment_labels=...)`` around specreg's UNet and
preconditioning; samples come from EDM's Heun sampler (``specreg.EDM.sample``).

    python examples/edm_style_loss.py --steps 3000 --loss haar --lam 0.1

Data: 32×32 gray crops of the scikit-image textures brick, grass and gravel
(``specreg.data.TextureCrops``), augmented by random horizontal flips.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import specreg
from specreg.data import TextureCrops
from specreg.models import unet_preset
from specreg.train.trainer import save_image_grid


class SpectralEDMLoss:
    """NVlabs/edm's ``EDMLoss`` with the spectral term of Eq. 17 added.

    Returns the per-element loss (B, C, H, W), as EDM's does: λ_EDM(σ)·(D − y)² plus the
    per-sample λ·L_S(x̂0, y) broadcast over the elements of that sample.
    """

    def __init__(self, regularizer: specreg.SpectralRegularizer, P_mean: float = -1.2, P_std: float = 1.2,
                 sigma_data: float = 0.5) -> None:
        self.regularizer = regularizer
        self.P_mean = P_mean
        self.P_std = P_std
        self.sigma_data = sigma_data

    def __call__(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None,
                 augment_pipe=None) -> torch.Tensor:
        rnd_normal = torch.randn([images.shape[0], 1, 1, 1], device=images.device)
        sigma = (rnd_normal * self.P_std + self.P_mean).exp()
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        y, augment_labels = augment_pipe(images) if augment_pipe is not None else (images, None)
        n = torch.randn_like(y) * sigma
        D_yn = net(y + n, sigma, labels, augment_labels=augment_labels)
        loss = weight * ((D_yn - y) ** 2)
        # The spectral target is y, the augmented image, not `images`: the denoiser is trained
        # to reproduce y from y + n, so D_yn estimates y, and only y's spectrum is the one it
        # should match. The per-sample value is added to every element of its sample, so that
        # loss.mean((1, 2, 3)) = EDM's per-sample mean + λ·L_S, the balance of specreg.EDM.loss.
        x0_hat = specreg.x0_from_pred(D_yn, y + n, prediction="edm")  # specreg line 1
        return loss + self.regularizer(x0_hat, y, sigma=sigma.flatten()).value.reshape(-1, 1, 1, 1)  # specreg line 2


class FlipAugment:
    """A minimal stand-in for NVlabs/edm's ``AugmentPipe``: horizontal flip with probability p.

    Returns ``(images, augment_labels)`` like ``AugmentPipe``; the labels are the flip
    flags (B, 1).
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flip = torch.rand(images.shape[0], device=images.device) < self.p
        y = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        return y, flip.to(images.dtype).view(-1, 1)


class EDMPrecond(nn.Module):
    """EDM's ``EDMPrecond`` calling convention around specreg's UNet and preconditioning.

    ``net(x, sigma, class_labels=None, augment_labels=None)`` → D(x; σ) = x̂0, with
    ``sigma`` of shape (B, 1, 1, 1) as the loss passes it, or (B,) as samplers do.
    """

    def __init__(self, unet: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.denoiser = specreg.EDM("edm", sigma_data=sigma_data).precondition(unet)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        # EDM's networks embed augment_labels so that strong, leaking augmentations can be
        # switched off at sampling time; a flipped texture is still a plausible texture, so
        # this UNet does without that input.
        return self.denoiser(x, sigma.reshape(-1), class_labels=class_labels)


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
    p.add_argument("--augment", type=float, default=0.5, help="probability of a horizontal flip")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--samples", type=int, default=64, help="images in the sample grid")
    p.add_argument("--sample-steps", type=int, default=18, help="Heun steps of EDM's sampler")
    p.add_argument("--out", type=Path, default=Path("runs/edm_style_loss"))
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
    """Train, sample, write ``samples.png``; return the per-step losses."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    data = TextureCrops(("brick", "grass", "gravel"), size=32, n=3000, seed=args.seed, split="train")
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))

    net = EDMPrecond(unet_preset("cpu32s")).to(device)
    reg = specreg.SpectralRegularizer(args.loss, lam=args.lam, sigma_max=args.sigma_max)
    loss_fn = SpectralEDMLoss(reg)
    augment_pipe = FlipAugment(args.augment) if args.augment > 0 else None
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)

    history = []
    net.train()
    for step, (images, _) in zip(range(args.steps), batches(loader)):
        images = images.to(device)
        loss = loss_fn(net=net, images=images, augment_pipe=augment_pipe)
        optimizer.zero_grad(set_to_none=True)
        # NVlabs/edm's training loop: sum over elements, divided by the batch size.
        loss.sum().div(images.shape[0]).backward()
        optimizer.step()

        history.append({"loss": loss.mean().item()})
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:6d}  loss {history[-1]['loss']:.4f}")

    net.eval()
    x = specreg.EDM("edm").sample(net, (args.samples, 1, 32, 32), sampler="heun", steps=args.sample_steps,
                                  generator=torch.Generator().manual_seed(args.seed), device=device)
    grid = save_image_grid(x, args.out / "samples.png")
    print(f"wrote {grid}")
    return history


if __name__ == "__main__":
    main()
