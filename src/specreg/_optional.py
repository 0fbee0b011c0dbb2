"""Optional dependencies: which extra installs what, and the one-line error when it is missing.

``pip install specreg`` brings torch, numpy and PyWavelets: the transforms, losses,
regularizer, x̂0 helpers, formulations and samplers need nothing else. Training, data,
metrics and audio quality measures need an extra. Code that needs one either checks a
whole subpackage on import (:func:`require`) or wraps its deferred import
(:func:`needs_extra`), so that using it without the extra fails with one line that says
what to install, e.g.::

    specreg.train needs the 'train' extra: pip install 'specreg[train]' (missing module 'accelerate')
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

# Import name → extras that install it. Kept in step with pyproject.toml's
# [project.optional-dependencies] by tests/test_packaging.py.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("accelerate", "safetensors", "yaml", "tqdm", "PIL", "skimage", "scipy", "soundfile", "tensorboard",
              "matplotlib"),
    "metrics": ("scipy", "sklearn", "torchmetrics", "matplotlib", "safetensors", "PIL"),
    "audio": ("pesq", "speechmos", "librosa", "onnxruntime"),
    "cluster": ("submitit",),
}

_OPTIONAL_ROOTS = frozenset(m for modules in EXTRA_MODULES.values() for m in modules)


class MissingExtraError(ModuleNotFoundError):
    """A feature was used without the extra that installs its dependencies.

    A :class:`ModuleNotFoundError` (so ``except ImportError`` still catches it) whose
    message is one line naming the extra; ``feature``, ``extra`` and ``name`` (the
    missing module) are kept as attributes.
    """

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'specreg[{extra}]' "
                         f"(missing module '{missing}')", name=missing)
        self.feature = feature
        self.extra = extra


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked finder counts as missing
        return False


def require(feature: str, extra: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is installed.

    Only looks the modules up (no import), so it costs microseconds and keeps imports
    lazy. ``modules`` narrows the check to those the feature imports at load time.
    """
    for module in modules if modules is not None else EXTRA_MODULES[extra]:
        if not _installed(module):
            raise MissingExtraError(feature, extra, module)


@contextmanager
def needs_extra(extra: str, feature: str) -> Iterator[None]:
    """Turn a missing optional module imported inside the block into the one-line error.

    ::

        with needs_extra("train", "specreg.data.TextureCrops"):
            import skimage.data

    Only a missing module that an extra installs is converted; any other import error
    (a broken installation, a bug) passes through unchanged.
    """
    if extra not in EXTRA_MODULES:
        raise ValueError(f"extra={extra!r} is not accepted; expected one of {sorted(EXTRA_MODULES)}")
    try:
        yield
    except MissingExtraError:
        raise
    except ModuleNotFoundError as err:
        root = (err.name or "").partition(".")[0]
        if root not in _OPTIONAL_ROOTS:
            raise
        raise MissingExtraError(feature, extra, root) from None
