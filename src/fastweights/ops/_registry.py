"""Which implementations exist for each op, and how ``impl=`` is resolved.

Every implementation of an op has the op's public signature. ``impl=None`` (or ``"auto"``) picks the
default; the choice never depends on the sequence length, so training and decoding run the same math.
"""

from __future__ import annotations

from collections.abc import Callable

IMPLEMENTATIONS: dict[str, dict[str, Callable]] = {}
DEFAULTS: dict[str, str] = {}


def register(op: str, name: str, *, default: bool = False) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        IMPLEMENTATIONS.setdefault(op, {})[name] = fn
        if default:
            DEFAULTS[op] = name
        return fn

    return deco


def resolve(op: str, impl: str | None) -> Callable:
    impls = IMPLEMENTATIONS[op]
    name = DEFAULTS[op] if impl in (None, "auto") else impl
    if name not in impls:
        raise ValueError(f"impl: expected one of {['auto', *sorted(impls)]} for {op}, got {impl!r}")
    return impls[name]


def available_implementations() -> dict[str, list[str]]:
    """``{op: [implementation names]}``, the default first."""
    return {op: sorted(impls, key=lambda n: (n != DEFAULTS.get(op), n)) for op, impls in IMPLEMENTATIONS.items()}
