"""The one accumulator protocol of the metrics: ``update`` → ``merge`` / ``sync`` → ``compute``.

A metric's running state is a few named values, each declared once with
:meth:`Accumulator.add_state` and a rule for combining two processes' values (as
torchmetrics' ``add_state``):

* ``"sum"``: numbers, numpy arrays or torch tensors (or a dict of them, e.g. one per
  side: samples ``False``, reference ``True``) that add up; ``None`` until the first
  update, so shapes need not be known in advance;
* ``"cat"``: lists (or a dict of lists) that concatenate;
* ``"child"``: another :class:`Accumulator`, merged and synced by its own rules.

From these declarations the base class derives :meth:`~Accumulator.reset`,
:meth:`~Accumulator.merge` (add another in-process state) and :meth:`~Accumulator.sync`
(``torch.distributed``: one ``all_reduce`` of every ``"sum"`` state in float64, one
``all_gather_object`` of the ``"cat"`` states; a no-op without a process group), so no
metric writes its own. Subclasses write ``update`` and ``compute`` only. Written here
rather than taken from torchmetrics because the states are numpy and torch alike, may be
``None`` before the first update, and must not import torch when the CLI builds its parser.
"""

from __future__ import annotations

import copy
from typing import Any

REDUCTIONS = ("sum", "cat", "child")


def _is_none_tree(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and any(_is_none_tree(x) for x in v.values()))


def _sum(a: Any, b: Any, name: str) -> Any:
    """a + b for one ``"sum"`` state (in place for arrays and tensors, so views stay valid)."""
    if isinstance(a, dict):
        return {k: _sum(a[k], b[k], f"{name}[{k!r}]") for k in a}
    if b is None:
        return a
    if a is None:
        return copy.deepcopy(b)
    shape_a, shape_b = getattr(a, "shape", ()), getattr(b, "shape", ())
    if tuple(shape_a) != tuple(shape_b):
        raise ValueError(f"state {name} of shape {tuple(shape_b)} cannot be pooled with one of shape "
                         f"{tuple(shape_a)}")
    if shape_a:
        a += b
        return a
    return a + b


def _leaves(v: Any) -> list[Any]:
    return [x for k in v for x in _leaves(v[k])] if isinstance(v, dict) else [v]


class Accumulator:
    """Base of every streaming metric; see the module docstring."""

    def __init__(self) -> None:
        self._states: dict[str, tuple[str, Any]] = {}

    def add_state(self, name: str, default: Any, reduce: str) -> Any:
        """Declare state ``name`` with its initial value and combining rule (``"sum"``,
        ``"cat"`` or ``"child"``); the value is set as attribute ``name`` and returned, so
        that ``self.name: T = self.add_state("name", ...)`` gives type checkers its type."""
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce={reduce!r} is not accepted; expected one of {list(REDUCTIONS)}")
        if "_states" not in self.__dict__:
            self._states = {}
        self._states[name] = (reduce, default if reduce == "child" else copy.deepcopy(default))
        setattr(self, name, default if reduce == "child" else copy.deepcopy(default))
        return getattr(self, name)

    def reset(self) -> None:
        """Every state back to its declared initial value."""
        for name, (reduce, default) in self._states.items():
            if reduce == "child":
                getattr(self, name).reset()
            else:
                setattr(self, name, copy.deepcopy(default))

    def _check_merge(self, other: Accumulator) -> None:
        """Raise if ``other`` cannot be merged into this one (override to check settings)."""
        if type(other) is not type(self):
            raise ValueError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")

    def merge(self, other: Any) -> Any:
        """Add ``other``'s state to this one (e.g. gathered from another process); returns self."""
        self._check_merge(other)
        for name, (reduce, _) in self._states.items():
            mine, theirs = getattr(self, name), getattr(other, name)
            if reduce == "child":
                mine.merge(theirs)
            elif reduce == "cat":
                if isinstance(mine, dict):
                    for k in mine:
                        mine[k].extend(copy.deepcopy(theirs[k]))
                else:
                    mine.extend(copy.deepcopy(theirs))
            else:
                setattr(self, name, _sum(mine, theirs, name))
        return self

    def sync(self) -> None:
        """Combine the states of all processes (no-op outside ``torch.distributed``).

        Every process must have updated every ``"sum"`` state at least once, with the same shapes.
        """
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        sums = [n for n, (r, _) in self._states.items() if r == "sum"]
        for name in sums:
            if _is_none_tree(getattr(self, name)):
                raise ValueError(f"{type(self).__name__}.sync() needs update() of every state on every process "
                                 f"({name} is still empty here)")
        if sums:
            leaves = [x for n in sums for x in _leaves(getattr(self, n))]
            flat = torch.cat([torch.as_tensor(x, dtype=torch.float64).detach().cpu().reshape(-1) for x in leaves])
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            flat = flat.to(device)
            dist.all_reduce(flat)
            flat, at = flat.cpu(), 0

            def put(v: Any) -> Any:
                nonlocal at
                if isinstance(v, dict):
                    return {k: put(x) for k, x in v.items()}
                size = int(torch.as_tensor(v).numel())
                part, at = flat[at:at + size], at + size
                if isinstance(v, torch.Tensor):
                    return part.reshape(v.shape).to(v.dtype)
                if hasattr(v, "shape"):  # numpy
                    return part.numpy().reshape(v.shape).astype(v.dtype)
                return type(v)(round(float(part)) if isinstance(v, int) else float(part))

            for name in sums:
                setattr(self, name, put(getattr(self, name)))
        cats = [n for n, (r, _) in self._states.items() if r == "cat"]
        if cats:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, {n: getattr(self, n) for n in cats})
            for name in cats:
                parts = [g[name] for g in gathered]
                if isinstance(parts[0], dict):
                    setattr(self, name, {k: [x for p in parts for x in p[k]] for k in parts[0]})
                else:
                    setattr(self, name, [x for p in parts for x in p])
        for name, (reduce, _) in self._states.items():
            if reduce == "child":
                getattr(self, name).sync()

    def update(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - each metric writes its own
        raise NotImplementedError

    def compute(self) -> Any:  # pragma: no cover - each metric writes its own
        raise NotImplementedError


__all__ = ["REDUCTIONS", "Accumulator"]
