"""Typed schemas for YAML files: dataclasses checked key by key on load.

Run configs (:mod:`specreg.train.config`) and study files
(:mod:`specreg.experiments.study`) are both nested dataclasses, read by
:func:`from_mapping`: the type hints say what each key accepts (``int``, ``float``,
``str``, ``bool``, ``None``, unions, ``list[...]``, ``dict[str, ...]``, nested
dataclasses, lists and mappings of them) and a field's ``metadata["choices"]`` restricts
its values (an entry may be ``float`` for "any number", or a function returning the
current names, e.g. the loss registry's). Every problem is a ``ValueError`` naming the
dotted key, the value and what is accepted, worded the same for every file:

* ``unknown key train.stpes; accepted keys in train: [...]``
* ``train.steps='many' has the wrong type; expected an integer``
* ``regularizer.loss='l3' is not accepted; expected one of [...]``
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

T = TypeVar("T")


def choice(*values: Any, help: str = "") -> dict[str, Any]:
    """Field metadata: the accepted values (``float`` = any number; a function = names read
    at check time) and a help text."""
    return {"choices": values, "help": help}


def describe(text: str, *, minimum: float | None = None) -> dict[str, Any]:
    """Field metadata: a help text, and optionally the smallest accepted number."""
    return {"help": text} if minimum is None else {"help": text, "minimum": minimum}


def type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"a list of {type_name(arg)}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {[f.name for f in dataclasses.fields(tp)]}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise ``ValueError`` naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return coerce(key, value, arg)
            except ValueError as err:
                errors.append(err)
        # a nested mapping that failed deeper down: its own message is the useful one
        deep = [e for e in errors if not str(e).startswith(f"{key}=")]
        if deep:
            raise deep[0]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is Any:
        return value
    elif dataclasses.is_dataclass(tp):
        if value is None or isinstance(value, dict):
            return from_mapping(tp, value, key)  # type: ignore[arg-type]
    elif origin is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [coerce(f"{key}[{i}]", v, arg) for i, v in enumerate(value)]
    elif origin is dict:
        args = typing.get_args(tp)
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            if args and args[1] is not Any:
                return {k: coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
            return dict(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        # bool is an int subclass in Python; `steps: true` is a typo, not 1
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML reads "1e-4" (no dot) as a string; accept it as the number it means
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ValueError(f"{key}={value!r} has the wrong type; expected {type_name(tp)}")


def check_choice(key: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise unless ``value`` is one of ``choices`` (see :func:`choice`)."""
    choices = tuple(x for c in choices for x in (c() if callable(c) and not isinstance(c, type) else (c,)))
    ok = any((c is float and isinstance(value, float)) or (not isinstance(c, type) and value == c)
             for c in choices)
    if not ok:
        shown = ["a number" if c is float else c for c in choices]
        raise ValueError(f"{key}={value!r} is not accepted; expected one of {shown}")


def check_known_keys(cls: type, raw: Mapping[str, Any], name: str) -> None:
    """Raise ``ValueError`` naming the first key of ``raw`` that is not a field of the
    dataclass ``cls`` (``unknown key {name}.{key}; accepted keys in {name}: [...]``)."""
    accepted = sorted(f.name for f in dataclasses.fields(cls))
    unknown = [k for k in raw if k not in accepted]
    if unknown:
        raise ValueError(f"unknown key {name}.{unknown[0]}; accepted keys in {name}: {accepted}")


def constructor_kwargs(cls: type, config: Any, name: str) -> dict[str, Any]:
    """The keyword arguments held by ``config``: an instance of the dataclass ``cls`` (all
    its fields) or a mapping whose keys are checked by :func:`check_known_keys`.

    Values pass unchanged: for a class whose constructor checks its own arguments (the
    networks' ``from_config``), where :func:`from_mapping` would check them a second time.
    """
    if isinstance(config, cls):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}
    if not isinstance(config, Mapping):
        raise ValueError(f"{name} config must be a mapping of keys to values or a {cls.__name__}, got {config!r}")
    check_known_keys(cls, config, name)
    return dict(config)


def from_mapping(cls: type[T], raw: Any, name: str) -> T:
    """Build the dataclass ``cls`` from a mapping (missing keys take their defaults), checking
    every key; ``name`` is the dotted prefix used in messages."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{name} must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    check_known_keys(cls, raw, name)
    missing = [k for k, f in fields.items() if k not in raw and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing key {name}.{missing[0]}")
    values = {}
    for key, value in raw.items():
        dotted = f"{name}.{key}"
        value = coerce(dotted, value, hints[key])
        meta = fields[key].metadata
        if meta.get("choices"):
            check_choice(dotted, value, meta["choices"])
        lowest = meta.get("minimum")
        if lowest is not None and value is not None and not value >= lowest:
            numeric = [a for a in (typing.get_args(hints[key]) or (hints[key],)) if a is not type(None)]
            raise ValueError(f"{dotted}={value!r} is not accepted; expected {type_name(numeric[0])} >= {lowest}")
        values[key] = value
    return cls(**values)


__all__ = [
    "check_choice",
    "check_known_keys",
    "choice",
    "coerce",
    "constructor_kwargs",
    "describe",
    "from_mapping",
    "type_name",
]
