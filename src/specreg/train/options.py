"""Free-form constructor options of a config (``model.options``, ``diffusion.options``,
``regularizer.options``, ``regularizer.auto``), checked before they reach a constructor.

A misspelt key would otherwise surface as ``TypeError: __init__() got an unexpected
keyword argument`` with a traceback; here it is a ``ValueError`` naming the dotted key,
the value and the keys accepted.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def accepted_options(factory: Callable[..., Any], fixed: Mapping[str, Any] = {}) -> list[str] | None:
    """Keyword arguments ``factory`` takes besides ``fixed``; None if it takes any (``**kwargs``)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if p.kind in _NAMED and n != "self" and n not in fixed]


def construct(factory: Callable[..., T], options: Mapping[str, Any], key: str, **fixed: Any) -> T:
    """``factory(**fixed, **options)``; an option it does not take, one that the config sets
    elsewhere (``fixed``), or one it refuses raises ``ValueError`` naming ``key.<option>``."""
    if not isinstance(options, Mapping):
        raise ValueError(f"{key}={options!r} is not accepted; expected a mapping of option names to values")
    accepted = accepted_options(factory, fixed)
    for name, value in options.items():
        if name in fixed:
            raise ValueError(f"{key}.{name}={value!r} is not accepted: {name} is set by its own config key; "
                             "set it there")
        if accepted is not None and name not in accepted:
            raise ValueError(f"{key}.{name}={value!r} is not accepted: {_name(factory)} takes no option {name!r}; "
                             f"accepted: {accepted}")
    try:
        return factory(**fixed, **options)
    except (TypeError, ValueError) as err:
        if not options:
            raise
        text = str(err)
        # a constructor's own check names the option: give it its config key
        named = next((n for n in options if text.startswith(f"{n}=")), None)
        if named is not None:
            raise ValueError(f"{key}.{text}") from None
        raise ValueError(f"{key}={dict(options)!r} is not accepted: {text}") from None


def _name(factory: Callable[..., Any]) -> str:
    return getattr(factory, "__qualname__", None) or type(factory).__name__
