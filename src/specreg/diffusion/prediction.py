"""The predicted clean sample x̂0 from any network parameterization (Eq. 5 and its relatives).

Every formulation in the project computes x̂0 here and nowhere else, so the spectral
regularizer sees the same quantity whatever the network predicts.

Forward processes and what the network output ``pred`` means:

* Discrete VP (DDPM/DDIM): x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε, ε ~ N(0, I).

  - ``"eps"`` (diffusers: ``"epsilon"``): pred = ε̂, x̂0 = (x_t − sqrt(1 − ᾱ)·ε̂) / sqrt(ᾱ)   (Eq. 5)
  - ``"v"`` (diffusers: ``"v_prediction"``): pred = v̂ ≈ sqrt(ᾱ)·ε − sqrt(1 − ᾱ)·x0,
    x̂0 = sqrt(ᾱ)·x_t − sqrt(1 − ᾱ)·v̂
  - ``"x0"`` (diffusers: ``"sample"``): pred = x̂0

* Rectified flow (SD3): x_t = (1 − t)·x0 + t·ε, t ∈ [0, 1].

  - ``"flow"`` (diffusers: ``"flow_prediction"``): pred = v̂ ≈ ε − x0, x̂0 = x_t − t·v̂

* EDM: ``"edm"``: pred is the preconditioned denoiser output D(x; σ), which is x̂0 itself.

The noise level can be given as an integer timestep ``t`` indexing ``alphas_cumprod``, as
``alpha_bar`` = ᾱ directly, or as ``sigma``, the equivalent variance-exploding noise-to-signal
ratio σ = sqrt((1 − ᾱ)/ᾱ) (so ᾱ = 1/(1 + σ²)); for flow, ``t`` is the float time and
σ = t/(1 − t) (so t = σ/(1 + σ)). Scaling x_t by 1/sqrt(ᾱ) (VP) or 1/(1 − t) (flow) turns
every process into x0 + σ·ε, which is why σ is the one noise coordinate the regularizer uses.

Zero terminal SNR. With ᾱ = 0 (σ = ∞) an ε-prediction carries no information about x0 and
Eq. 5 divides by zero. ``x0_from_pred`` never returns NaN for it: by default it raises a
``ValueError``; with ``return_mask=True`` it returns x̂0 = 0 at those samples (the
prior mean of centred data) together with a boolean mask that is ``False`` there, so a
caller can drop them from a loss. v-, x0-, flow- and EDM-predictions are defined at
every noise level. Nothing is ever clamped: x̂0 from ε at low SNR is large by design
and the regularizer's weighting λ(σ) is what keeps its loss sane.

Precision: the result is float32 unless ``pred`` or ``x_t`` is float64 (then float64);
half-precision network outputs under autocast are promoted, because 1/sqrt(ᾱ) reaches
~10⁴ for common schedules.
"""

from __future__ import annotations

from typing import Literal, overload

import torch

from specreg._checks import check_choice
from specreg.regularizer import sigma_from_alpha_bar, sigma_from_flow_t

__all__ = [
    "ACCEPTED",
    "PREDICTIONS",
    "alpha_bar_from_sigma",
    "canonical_prediction",
    "eps_from_pred",
    "flow_t_from_sigma",
    "sigma_from_alpha_bar",
    "sigma_from_flow_t",
    "x0_from_pred",
]

PREDICTIONS = ("eps", "v", "x0", "flow", "edm")
ALIASES = {
    "epsilon": "eps",
    "v_prediction": "v",
    "sample": "x0",
    "flow_prediction": "flow",
}
ACCEPTED = PREDICTIONS + tuple(ALIASES)

# Parameterizations whose noise level is ᾱ of a VP process.
_VP = ("eps", "v", "x0")


def canonical_prediction(prediction: str) -> str:
    """Map a prediction name (ours or diffusers') to one of ``PREDICTIONS``."""
    check_choice("prediction", prediction, ACCEPTED)
    return ALIASES.get(prediction, prediction)


def alpha_bar_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of ``specreg.regularizer.sigma_from_alpha_bar``: ᾱ = 1/(1 + σ²)."""
    return 1 / (1 + sigma.square())


def flow_t_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of ``specreg.regularizer.sigma_from_flow_t``: t = σ/(1 + σ) (1 at σ = ∞)."""
    return torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma / (1 + sigma))


def _result_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(x.dtype == torch.float64 for x in tensors) else torch.float32


def _sqrt_pair(alpha_bar: torch.Tensor, like: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(ᾱ), sqrt(1 − ᾱ)) shaped per sample, computed in the wider of ᾱ's dtype and
    ``dtype`` (1 − ᾱ near ᾱ = 1 loses digits in float32), returned in ``dtype``."""
    a = _per_sample(alpha_bar, like)
    a = a.to(torch.promote_types(a.dtype, dtype))
    return a.sqrt().to(dtype), (1 - a).sqrt().to(dtype)


def _per_sample(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Shape a (B,) or scalar coefficient to broadcast against x of shape (B, ...)."""
    return coef.reshape(-1, *([1] * (x.dim() - 1)))


def _as_level(name: str, value: torch.Tensor | float, x_t: torch.Tensor) -> torch.Tensor:
    """A noise level given per sample (B,) or once for the batch (scalar or (1,))."""
    value = torch.as_tensor(value, device=x_t.device)
    if value.dim() > 1 or (value.dim() == 1 and value.shape[0] not in (1, x_t.shape[0])):
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}; expected a scalar or shape ({x_t.shape[0]},) "
            f"(one value per sample of x_t with shape {tuple(x_t.shape)})"
        )
    return value


def _check_in_range(name: str, value: torch.Tensor, low: float, high: float, *, high_open: bool = False) -> None:
    """Value check (one host sync); used only by the user-facing entry points."""
    bad = (value < low) | (value >= high if high_open else value > high) | torch.isnan(value)
    if bool(bad.any()):
        shown = value[bad].flatten()[:4].tolist()
        interval = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name} has values {shown} outside {interval}")


def _resolve_level(
    kind: str,
    prediction: str,
    x_t: torch.Tensor,
    t: torch.Tensor | float | None,
    sigma: torch.Tensor | float | None,
    alphas_cumprod: torch.Tensor | None,
    alpha_bar: torch.Tensor | float | None,
    validate: bool,
) -> torch.Tensor:
    """The noise level a formula needs: ᾱ (``kind="vp"``) or the flow time t (``kind="flow"``)."""
    given = [n for n, v in (("t", t), ("sigma", sigma), ("alpha_bar", alpha_bar)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"pass only one of t, sigma, alpha_bar; got {given}")

    if kind == "flow":
        if alphas_cumprod is not None or alpha_bar is not None:
            raise ValueError(
                "prediction='flow' takes the flow time t in [0, 1] or sigma, not alphas_cumprod/alpha_bar"
            )
        if t is not None:
            t = _as_level("t", t, x_t)
            if not t.is_floating_point():
                raise ValueError(f"t has dtype {t.dtype}; for prediction='flow' t is a float time in [0, 1]")
            if validate:
                _check_in_range("t", t, 0.0, 1.0)
            return t
        if sigma is not None:
            sigma = _as_level("sigma", sigma, x_t)
            if validate:
                _check_in_range("sigma", sigma, 0.0, float("inf"))
            return flow_t_from_sigma(sigma.to(_result_dtype(sigma)))
        raise ValueError("prediction='flow' needs the flow time t (float in [0, 1]) or sigma")

    if t is not None:
        if alphas_cumprod is None:
            raise ValueError(
                f"prediction={prediction!r} with an integer timestep t needs alphas_cumprod "
                "(or pass alpha_bar or sigma instead of t)"
            )
        t = _as_level("t", t, x_t)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(
                f"t has dtype {t.dtype}; with alphas_cumprod t must be integer timesteps indexing it"
            )
        if validate:
            n = alphas_cumprod.shape[0]
            if bool(((t < 0) | (t >= n)).any()):
                raise ValueError(
                    f"t has values {t[(t < 0) | (t >= n)].flatten()[:4].tolist()} outside "
                    f"[0, {n - 1}] (alphas_cumprod has {n} entries)"
                )
        return alphas_cumprod.to(x_t.device)[t]
    if alpha_bar is not None:
        alpha_bar = _as_level("alpha_bar", alpha_bar, x_t)
        if not alpha_bar.is_floating_point():
            alpha_bar = alpha_bar.to(torch.float32)
        if validate:
            _check_in_range("alpha_bar", alpha_bar, 0.0, 1.0)
        return alpha_bar
    if sigma is not None:
        sigma = _as_level("sigma", sigma, x_t)
        if validate:
            _check_in_range("sigma", sigma, 0.0, float("inf"))
        return alpha_bar_from_sigma(sigma.to(_result_dtype(sigma)))
    raise ValueError(
        f"prediction={prediction!r} needs the noise level: t with alphas_cumprod, alpha_bar, or sigma"
    )


def _check_pred(pred: torch.Tensor, x_t: torch.Tensor) -> None:
    for name, x in (("pred", pred), ("x_t", x_t)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a floating-point torch.Tensor, got {got}")
        if x.dim() < 1:
            raise ValueError(f"{name} must have a batch dim, got shape {tuple(x.shape)}")
    if pred.shape != x_t.shape:
        raise ValueError(
            f"pred has shape {tuple(pred.shape)} but x_t has shape {tuple(x_t.shape)}; they must be equal"
        )


@overload
def x0_from_pred(
    pred: torch.Tensor,
    x_t: torch.Tensor,
    *,
    prediction: str,
    t: torch.Tensor | float | None = None,
    sigma: torch.Tensor | float | None = None,
    alphas_cumprod: torch.Tensor | None = None,
    alpha_bar: torch.Tensor | float | None = None,
    return_mask: Literal[False] = False,
    validate: bool = True,
) -> torch.Tensor: ...


@overload
def x0_from_pred(
    pred: torch.Tensor,
    x_t: torch.Tensor,
    *,
    prediction: str,
    t: torch.Tensor | float | None = None,
    sigma: torch.Tensor | float | None = None,
    alphas_cumprod: torch.Tensor | None = None,
    alpha_bar: torch.Tensor | float | None = None,
    return_mask: Literal[True],
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def x0_from_pred(
    pred: torch.Tensor,
    x_t: torch.Tensor,
    *,
    prediction: str,
    t: torch.Tensor | float | None = None,
    sigma: torch.Tensor | float | None = None,
    alphas_cumprod: torch.Tensor | None = None,
    alpha_bar: torch.Tensor | float | None = None,
    return_mask: bool = False,
    validate: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


def x0_from_pred(
    pred: torch.Tensor,
    x_t: torch.Tensor,
    *,
    prediction: str,
    t: torch.Tensor | float | None = None,
    sigma: torch.Tensor | float | None = None,
    alphas_cumprod: torch.Tensor | None = None,
    alpha_bar: torch.Tensor | float | None = None,
    return_mask: bool = False,
    validate: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The predicted clean sample x̂0 from a network output (see the module doc for formulas).

    Args:
        pred: network output, shape (B, ...), same shape as ``x_t``.
        x_t: the noisy input the network saw.
        prediction: ``"eps"``, ``"v"``, ``"x0"``, ``"flow"``, ``"edm"`` or a diffusers name
            (``"epsilon"``, ``"v_prediction"``, ``"sample"``, ``"flow_prediction"``).
        t: integer timesteps indexing ``alphas_cumprod`` (VP), or the float flow time in
            [0, 1] (``"flow"``); a scalar or one per sample (B,).
        sigma: the equivalent VE noise level σ ≥ 0 (∞ allowed), instead of ``t``.
        alphas_cumprod: the schedule ᾱ_0..ᾱ_{T−1}, needed with integer ``t``.
        alpha_bar: ᾱ in [0, 1] given directly, instead of ``t``.
        return_mask: also return a (B,) boolean tensor, ``False`` where x̂0 is undefined
            (ε-prediction at ᾱ = 0; x̂0 is 0 there).
        validate: check the values of ``t``/``sigma``/``alpha_bar`` and ᾱ = 0 (host syncs).
            Internal callers whose schedule was validated once pass ``False``.

    Returns:
        x̂0 with the shape of ``pred`` (float32, or float64 if an input is float64), and the
        mask if ``return_mask``. Differentiable in ``pred`` and ``x_t``; never clamped.

    Example:
        >>> a = torch.tensor([0.25])
        >>> x0, eps = torch.ones(1, 3), torch.zeros(1, 3)
        >>> x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        >>> x0_from_pred(eps, x_t, prediction="eps", alpha_bar=a)
        tensor([[1., 1., 1.]])
    """
    prediction = canonical_prediction(prediction)
    _check_pred(pred, x_t)
    level: torch.Tensor | None = None
    if prediction in ("eps", "v", "flow"):  # x0 and edm outputs are x̂0 at any noise level
        kind = "flow" if prediction == "flow" else "vp"
        level = _resolve_level(kind, prediction, x_t, t, sigma, alphas_cumprod, alpha_bar, validate)
    dtype = _result_dtype(pred, x_t)
    batch = pred.shape[0]
    valid = torch.ones(batch, dtype=torch.bool, device=pred.device)

    if level is None:  # "x0" or "edm"
        x0_hat = pred.to(dtype)
    elif prediction == "flow":
        t_b = _per_sample(level.to(dtype), pred)
        x0_hat = x_t.to(dtype) - t_b * pred.to(dtype)
    elif prediction == "v":
        sqrt_a, sqrt_b = _sqrt_pair(level, pred, dtype)
        x0_hat = sqrt_a * x_t.to(dtype) - sqrt_b * pred.to(dtype)
    else:  # eps
        valid = (level > 0).expand(batch) if level.dim() == 0 or level.shape[0] == 1 else level > 0
        if validate and not return_mask and not bool(valid.all()):
            raise ValueError(
                "x̂0 is undefined for prediction='eps' where alpha_bar == 0 (zero terminal SNR); "
                "use v-prediction, avoid that timestep, or pass return_mask=True"
            )
        ok = _per_sample(valid, pred)
        # A safe denominator keeps the discarded branch finite, so gradients stay finite too.
        sqrt_a, sqrt_b = _sqrt_pair(torch.where(level > 0, level, torch.ones_like(level)), pred, dtype)
        x0_hat = (x_t.to(dtype) - sqrt_b * pred.to(dtype)) / sqrt_a
        x0_hat = torch.where(ok, x0_hat, torch.zeros_like(x0_hat))

    return (x0_hat, valid) if return_mask else x0_hat


def eps_from_pred(
    pred: torch.Tensor,
    x_t: torch.Tensor,
    *,
    prediction: str,
    t: torch.Tensor | float | None = None,
    sigma: torch.Tensor | float | None = None,
    alphas_cumprod: torch.Tensor | None = None,
    alpha_bar: torch.Tensor | float | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """The predicted noise ε̂ implied by a network output (used by DDIM).

    * ``"eps"``: ε̂ = pred
    * ``"v"``:   ε̂ = sqrt(ᾱ)·v̂ + sqrt(1 − ᾱ)·x_t
    * ``"x0"``:  ε̂ = (x_t − sqrt(ᾱ)·x̂0) / sqrt(1 − ᾱ)   (undefined at ᾱ = 1, gives 0 there)
    * ``"flow"``: ε̂ = x_t + (1 − t)·v̂
    * ``"edm"``: ε̂ = (x − D)/σ for the VE input x = x0 + σ·ε (needs ``sigma`` > 0)

    Arguments as for :func:`x0_from_pred`; the result is float32 or float64 likewise.
    """
    prediction = canonical_prediction(prediction)
    _check_pred(pred, x_t)
    dtype = _result_dtype(pred, x_t)
    x_t_c, pred_c = x_t.to(dtype), pred.to(dtype)
    if prediction == "edm":
        if sigma is None or t is not None or alpha_bar is not None:
            raise ValueError("eps_from_pred with prediction='edm' needs sigma (and only sigma)")
        sigma = _as_level("sigma", sigma, x_t)
        if validate:
            _check_in_range("sigma", sigma, 0.0, float("inf"))
        s = _per_sample(sigma.to(dtype), pred)
        return (x_t_c - pred_c) / torch.where(s > 0, s, torch.ones_like(s))
    if prediction == "eps":
        return pred_c
    kind = "flow" if prediction == "flow" else "vp"
    level = _resolve_level(kind, prediction, x_t, t, sigma, alphas_cumprod, alpha_bar, validate)
    if prediction == "flow":
        return x_t_c + (1 - _per_sample(level.to(dtype), pred)) * pred_c
    sqrt_a, sqrt_b = _sqrt_pair(level, pred, dtype)
    if prediction == "v":
        return sqrt_a * pred_c + sqrt_b * x_t_c
    # x0: undefined where ᾱ = 1 (no noise); a safe denominator keeps it finite, 0 there
    eps_hat = (x_t_c - sqrt_a * pred_c) / torch.where(sqrt_b > 0, sqrt_b, torch.ones_like(sqrt_b))
    return torch.where(sqrt_b > 0, eps_hat, torch.zeros_like(eps_hat))
