r"""NVlabs/edm2: the uncertainty-weighted loss of EDM2 plus the spectral term.

EDM2 (Karras et al. 2024, "Analyzing and improving the training dynamics of diffusion
models") trains with a learned per-σ uncertainty u(σ), the ``logvar`` output of its
network, and the per-element loss

    L = λ_EDM(σ) / e^{u(σ)} · (D(x0 + n; σ) − x0)² + u(σ),   ln σ ~ N(P_mean, P_std²),

with λ_EDM(σ) = (σ² + σ_data²)/(σ·σ_data)². Its training loop builds the loss object by
class name from ``loss_kwargs`` (``dnnlib.util.construct_class_by_name``), calls
``loss_fn(net=ddp, images=images, labels=labels)``, where ``images`` are already encoded
(VAE latents for its 512² models, scaled RGB for the 64² ones), and back-propagates
``loss.sum()`` divided by the batch. So a loss class whose constructor takes plain values
plugs in without touching EDM2's code; in ``train_edm2.py``::

    c.loss_kwargs = dnnlib.EasyDict(class_name="specreg.integrations.edm2.SpectralEDM2Loss",
                                    P_mean=opts.P_mean, P_std=opts.P_std, loss="haar", lam=0.1)

``train_edm2.py`` prints and saves its whole config with ``json.dumps``/``json.dump``
before training, so every option is plain data: λ is a number, a policy name or
``{"auto": {"ratio": 0.1}}`` for an :class:`~specreg.AutoLambda` (:func:`lam_from_data`).

NVlabs/edm2 is not a pip package (clone it, then ``pip install specreg`` in its
environment). This class follows its documented convention: the network is called
``net(x, sigma, labels, return_logvar=True)`` with σ of shape (B, 1, 1, 1) and returns
``(D, logvar)``; ``examples/edm2_loss.py`` runs it against a stand-in with that
signature, and the tests check it against the loss above, term by term.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from specreg.regularizer import LAM_POLICIES, AutoLambda, RegularizerOutput, SpectralRegularizer, lambda_edm


def lam_from_data(lam: Any) -> float | str | AutoLambda:
    """λ from plain data, the form that survives EDM2's JSON dump of ``loss_kwargs``.

    * a number ≥ 0: a constant λ;
    * ``"edm"`` (λ_EDM(σ)), ``"snr"`` (1/σ²) or ``"flow"``: a policy of
      :class:`~specreg.SpectralRegularizer`;
    * ``"auto"`` or ``{"auto": {"ratio": 0.1, "beta": 0.99}}``: an :class:`~specreg.AutoLambda`
      with those keyword arguments (all optional);
    * an :class:`~specreg.AutoLambda` object is passed through (it works where nothing
      serialises the options, but EDM2's ``json.dump`` rejects it).
    """
    if isinstance(lam, AutoLambda):
        return lam
    if isinstance(lam, (int, float)) and not isinstance(lam, bool):
        return float(lam)
    if lam == "auto":
        return AutoLambda()
    if isinstance(lam, str) and lam in LAM_POLICIES:
        return lam
    if isinstance(lam, Mapping) and list(lam) == ["auto"] and isinstance(lam["auto"], (Mapping, type(None))):
        return AutoLambda(**dict(lam["auto"] or {}))
    raise ValueError(f"lam={lam!r} is not accepted; expected a number, one of {['auto', *LAM_POLICIES]} "
                     "or {'auto': {'ratio': ..., 'beta': ...}}")


class SpectralEDM2Loss:
    r"""EDM2's loss with λ·L_S(x̂0, x0) added, x̂0 = D(x0 + n; σ) (Eq. 17 on EDM2).

    Per element (B, C, H, W), as EDM2's training loop expects:

        L = λ_EDM(σ)·e^{−u(σ)}·(D − x0)² + u(σ) + λ(σ)·g(σ)·L_S(D, x0)

    The per-sample spectral term is added to every element of its sample, so that
    ``loss.mean((1, 2, 3))`` is EDM2's per-sample mean plus λ·L_S, the balance of
    :meth:`specreg.EDM.loss`: a λ means the same here as there. The learned uncertainty
    u(σ) weights only the denoising error: it keeps estimating that error, and the
    spectral term is not silently rescaled by it. On EDM2's latent models x0 is a VAE
    latent, so the loss shapes the latent's spectrum (see ``docs/own_loop.md``).

    Args:
        P_mean, P_std: the log-normal σ distribution (EDM2's defaults −0.4 and 1.0; its
            presets pass their own).
        sigma_data: σ_data of λ_EDM, also used by ``lam="edm"``.
        loss: a loss name for :func:`specreg.build_loss` (``"haar"``, ``"fourier_amp"``, …)
            or a loss module with per-sample output.
        lam: plain data (:func:`lam_from_data`): a number, ``"edm"``, ``"snr"``, or
            ``{"auto": {"ratio": 0.1}}`` for an :class:`~specreg.AutoLambda` (fed the
            per-sample λ_EDM-weighted error, before the uncertainty). An ``AutoLambda``
            object works too, but not in ``loss_kwargs``: EDM2 dumps them to JSON.
        regularizer: a ready :class:`~specreg.SpectralRegularizer`; then ``loss``, ``lam``
            and ``regularizer_kwargs`` must be left out.
        **regularizer_kwargs: passed to :class:`~specreg.SpectralRegularizer`: the gate
            ``sigma_max``, the fade ``fade_sigma``/``fade_width``, ``lam_scale`` and the
            loss's own options (``wavelet=``, ``levels=``, …). Learned band weights are not
            accepted: EDM2's optimizer only sees the network's parameters.

    The object is picklable (EDM2 pickles it into every snapshot) and has
    ``state_dict``/``load_state_dict`` (EDM2's ``CheckpointIO`` saves it with the training
    state, so an :class:`~specreg.AutoLambda` resumes where it was). After each call,
    ``last`` holds the detached :class:`~specreg.RegularizerOutput` for logging, e.g.
    ``training_stats.report("Loss/spectral", loss_fn.last.spectral)``.

    Example:
        >>> import torch
        >>> from specreg.integrations.edm2 import SpectralEDM2Loss
        >>> def net(x, sigma, labels=None, return_logvar=False):  # a stand-in: D = x / (1 + σ²)
        ...     d = x / (1 + sigma**2)
        ...     return (d, torch.zeros_like(sigma)) if return_logvar else d
        >>> loss_fn = SpectralEDM2Loss(loss="haar", lam=0.1)
        >>> loss_fn(net=net, images=torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, P_mean: float = -0.4, P_std: float = 1.0, sigma_data: float = 0.5, *,
                 loss: str | nn.Module | None = None, lam: float | str | Mapping | AutoLambda | None = None,
                 regularizer: SpectralRegularizer | None = None, **regularizer_kwargs: Any) -> None:
        self.P_mean = float(P_mean)
        self.P_std = float(P_std)
        self.sigma_data = float(sigma_data)
        if regularizer is not None:
            if loss is not None or lam is not None or regularizer_kwargs:
                raise ValueError("give either regularizer= or loss=/lam=/options, not both")
            if not isinstance(regularizer, SpectralRegularizer):
                raise ValueError(f"regularizer={regularizer!r} is not accepted; expected a "
                                 "specreg.SpectralRegularizer")
            self.regularizer = regularizer
        else:
            if regularizer_kwargs.get("band_weights", False) is not False:
                raise ValueError("band_weights is not accepted: EDM2's optimizer only updates the network's "
                                 "parameters, so learned band weights would never train")
            regularizer_kwargs.setdefault("sigma_data", self.sigma_data)
            self.regularizer = SpectralRegularizer("haar" if loss is None else loss,
                                                   lam=0.1 if lam is None else lam_from_data(lam),
                                                   **regularizer_kwargs)
        self.last: RegularizerOutput | None = None

    def __call__(self, net: Any, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self._follow(images.device)
        batch = images.shape[0]
        # Same draws in the same order as EDM2's loss: ln σ first, then the noise.
        sigma = torch.exp(self.P_mean + self.P_std * torch.randn(batch, device=images.device))
        sigma_b = sigma.view(-1, *([1] * (images.ndim - 1)))
        noisy = images + torch.randn_like(images) * sigma_b
        x0_hat, logvar = net(noisy, sigma_b, labels, return_logvar=True)
        weighted_error = lambda_edm(sigma_b, self.sigma_data) * (x0_hat - images).square()
        loss = weighted_error * torch.exp(-logvar) + logvar
        dims = tuple(range(1, images.ndim))
        term = self.regularizer(x0_hat, images, sigma, diffusion_loss=weighted_error.mean(dims).detach())
        self.last = RegularizerOutput(value=term.value.detach(), spectral=term.spectral.detach(),
                                      lam=term.lam.detach())
        return loss + term.value.view_as(sigma_b).to(loss.dtype)

    def _follow(self, device: torch.device) -> None:
        """EDM2 never moves the loss object: follow the data to its device on first use."""
        state = list(self.regularizer.parameters()) + list(self.regularizer.buffers())
        if state and state[0].device != device:
            self.regularizer.to(device)

    def state_dict(self) -> dict[str, Any]:
        """The regularizer's state (AutoLambda's running means): tensors only, so EDM2's
        ``torch.load`` with ``weights_only=True`` reads it back."""
        return dict(self.regularizer.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.regularizer.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(P_mean={self.P_mean}, P_std={self.P_std}, sigma_data={self.sigma_data}, "
                f"regularizer={self.regularizer!r})")
