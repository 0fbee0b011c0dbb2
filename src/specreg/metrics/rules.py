"""The rules the registry's entries declare: why a metric cannot be computed on given data
(``problem``: too few items, wrong shape, no known spectral lines) and what a reader of its
values should know (``warnings``). Each takes the metric's name, for the message, first;
none branches on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from specreg.metrics.streaming import Context



def gray_images_problem(name: str, ctx: Context) -> str | None:
    """The shipped image embedding takes gray 2-D images only."""
    if ctx.feature_extractor is None and ctx.kind == "image" and (len(ctx.shape) != 3 or ctx.shape[0] != 1):
        return (f"{name} uses the shipped Fashion-MNIST classifier, which takes gray 2-D images (N, 1, H, W); "
                f"samples have shape {(ctx.n, *ctx.shape)}. Pass feature_extractor= or drop {name} from metrics")
    return None


def full_rank_problem(name: str, ctx: Context) -> str | None:
    """A Fréchet distance on the shipped features needs more items than dimensions on each side."""
    if ctx.feature_extractor is None:
        d = ctx.shipped.dim
        for side, count in (("samples", ctx.n), ("reference", ctx.m)):
            if count <= d:
                return (f"{name} needs more {side} than feature dimensions for a full-rank covariance: "
                        f"{side} has {count}, the embedding has D={d}; use at least {5 * d} (5·D for a "
                        f"stable estimate) or drop {name}")
    return None


def kid_subsets_problem(name: str, ctx: Context) -> str | None:
    if not 2 <= ctx.kid_size <= min(ctx.n, ctx.m):
        return (f"{name} needs subsets of 2 … {min(ctx.n, ctx.m)} items on each side (samples {ctx.n}, "
                f"reference {ctx.m}; by default half the smaller set, so at least 4 items each); got "
                f"kid_subset_size={ctx.kid_size}")
    return None


def ndb_problem(name: str, ctx: Context) -> str | None:
    k = ctx.ndb_k
    if isinstance(k, bool) or not isinstance(k, int) or k < 2 or ctx.m < k or ctx.n < 2:
        return (f"{name} with k={k!r} bins needs an integer k >= 2, at least k reference items and 2 samples; got "
                f"reference {ctx.m}, samples {ctx.n}")
    return None


def peaks_problem(name: str, ctx: Context) -> str | None:
    return None if ctx.peaks else f"{name} needs data with known spectral lines (reference: checkerboards)"


def kid_warnings(name: str, values: Mapping[str, float], ctx: Context, x: torch.Tensor,
                 r: torch.Tensor) -> list[str]:
    """A KID without spread, or negative beyond its spread."""
    kid, kid_std = values.get(name), values.get(f"{name}_std")
    n, m = x.shape[0], r.shape[0]
    if kid is None:
        return []
    if not math.isfinite(kid_std if kid_std is not None else math.nan):
        return [f"{name} has no spread: its subsets of {ctx.kid_size} items are the whole of the smaller set "
                f"({min(n, m)} items), so every subset gives the same value; pass a smaller kid_subset_size or "
                "use more items"]
    if kid_std is not None and kid < 0 and -kid > 2 * kid_std:
        return [f"{name} = {kid:.3g} is negative beyond its spread (± {kid_std:.2g}): KID's unbiased estimate "
                "falls below 0 when the two sets are closer than two independent draws of one distribution, "
                "typically when they share items or their features barely vary (crops of one image); read it as "
                "no measurable difference"]
    return []


def quiet_reference_warnings(name: str, values: Mapping[str, float], ctx: Context, x: torch.Tensor,
                             r: torch.Tensor) -> list[str]:
    """Near-silent reference clips dominate MR-STFT's spectral-convergence term."""
    rms = r.flatten(1).pow(2).mean(1).sqrt()
    quiet = (rms < 1e-4).nonzero().flatten().tolist()
    if not quiet:
        return []
    return [f"{len(quiet)} reference clip(s) are near-silent (RMS < 1e-4, e.g. items {quiet[:5]}): "
            "MR-STFT's spectral-convergence term divides by their magnitude and dominates the mean"]


__all__ = ["full_rank_problem", "gray_images_problem", "kid_subsets_problem", "kid_warnings", "ndb_problem",
           "peaks_problem", "quiet_reference_warnings"]
