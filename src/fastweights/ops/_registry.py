"""Which implementations exist for each op, and how ``impl=`` is resolved.

Every implementation of an op has the op's public signature. ``impl=None`` (or ``"auto"``) picks, among the
implementations whose ``supports(q)`` accepts the inputs (device, dtype, installed packages), the one with
the highest ``priority``. The choice never depends on the sequence length, so training and decoding run the
same math. When a faster implementation exists but cannot be used here (e.g. numba is not installed), the
fallback is announced once with a one-line warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor


@dataclass
class Implementation:
    fn: Callable
    priority: int
    supports: Callable[[Tensor], bool] | None  # None: every input
    missing: str | None  # why ``supports`` may refuse, for the one-line notice (e.g. "numba is not installed")


IMPLEMENTATIONS: dict[str, dict[str, Implementation]] = {}
_NOTICED: set[tuple[str, str]] = set()


def register(op: str, name: str, *, priority: int = 0, supports: Callable[[Tensor], bool] | None = None,
             missing: str | None = None) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        IMPLEMENTATIONS.setdefault(op, {})[name] = Implementation(fn, priority, supports, missing)
        return fn

    return deco


def _ranked(op: str) -> list[tuple[str, Implementation]]:
    return sorted(IMPLEMENTATIONS[op].items(), key=lambda item: (-item[1].priority, item[0]))


def resolve(op: str, impl: str | None, q: Tensor | None = None) -> Callable:
    """The implementation of ``op`` named ``impl``, or the best one supporting ``q`` for None/"auto"."""
    impls = IMPLEMENTATIONS[op]
    if impl not in (None, "auto"):
        if impl not in impls:
            raise ValueError(f"impl: expected one of {['auto', *sorted(impls)]} for {op}, got {impl!r}")
        return impls[impl].fn
    skipped = []
    for name, entry in _ranked(op):
        if entry.supports is None or not isinstance(q, Tensor) or entry.supports(q):
            for other in skipped:
                if entry.priority < IMPLEMENTATIONS[op][other].priority and (op, other) not in _NOTICED:
                    _NOTICED.add((op, other))
                    why = IMPLEMENTATIONS[op][other].missing or "it does not support these inputs"
                    warnings.warn(f"fastweights: {op} uses the {name!r} implementation because {why} "
                                  f"(the {other!r} one is faster)", stacklevel=3)
            return entry.fn
        skipped.append(name)
    raise RuntimeError(f"no implementation of {op} supports these inputs")  # every op has an unconditional one


def available_implementations() -> dict[str, list[str]]:
    """``{op: [implementation names]}``, in the order ``impl="auto"`` tries them."""
    return {op: [name for name, _ in _ranked(op)] for op in IMPLEMENTATIONS}
