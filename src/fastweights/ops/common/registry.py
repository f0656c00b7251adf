"""Which implementations exist for each op, and how ``impl=`` is resolved.

Every implementation of an op has the op's public signature. ``impl=None`` (or ``"auto"``) picks, among the
implementations meant for the inputs' device type and ``available`` in this process (``available()`` returns None
or why not, e.g. "numba is not installed"), the one with the highest ``priority`` whose ``supports`` accepts the
whole call. ``supports(*args, **kwargs)`` sees exactly what the op was called with and returns None (it can
take the call) or the reason it cannot, phrased to follow "because" ("numba is not installed"). The choice never
depends on the sequence length, so training and decoding run the same math. When a faster implementation is
passed over, the fallback is announced once per op and implementation with a one-line warning, here and nowhere
else; a :class:`Choice` reason (e.g. "float64 inputs stay in float64") falls back without a notice.

An explicit ``impl="name"`` is honoured as named (an implementation that cannot run here raises its own clear
error); only an implementation registered with ``covers_all=False`` (a kernel that takes some inputs only, like the
Triton ones) hands the calls its ``supports`` refuses on to the next implementation, with the same notice.

An implementation may be meant for some device types only (``devices=("cuda",)`` for the Triton kernels,
``("cpu",)`` for the numba kernels; ``None``: every device). Skipping it for inputs on another device type is
not a fallback and gives no notice, and :func:`available_implementations` lists, per device type, only the
implementations meant for it.

Compositions of other ops (``delta_delta``, ``delta_mlp`` run the delta rule) register no implementations of
their own: :func:`register_composition` records which op their ``impl=`` is passed to.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Supports = Callable[..., "str | None"]


class Choice(str):
    """A refusal that is a deliberate choice, not a missing capability: the fallback gives no notice."""


@dataclass
class Implementation:
    """One named implementation of ``op``; calling it calls ``fn``."""

    op: str
    name: str
    fn: Callable
    priority: int
    supports: Supports | None = None  # None: every call
    available: Callable[[], str | None] | None = None  # None: always
    devices: tuple[str, ...] | None = None  # device types it is meant for (``torch.device.type``); None: all
    covers_all: bool = True  # False: an explicit impl= of it still falls back where ``supports`` refuses

    def meant_for(self, device_type: str | None) -> bool:
        return self.devices is None or device_type is None or device_type in self.devices

    def refusal(self, *args: Any, **kwargs: Any) -> str | None:
        """Why this implementation cannot take the call (None: it can)."""
        return None if self.supports is None else self.supports(*args, **kwargs)

    def unavailable(self) -> str | None:
        """Why this implementation cannot run in this process (None: it can)."""
        return None if self.available is None else self.available()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


IMPLEMENTATIONS: dict[str, dict[str, Implementation]] = {}
COMPOSITIONS: dict[str, str] = {}  # op -> the op its impl= is passed to
_NOTICED: set[tuple[str, str]] = set()


def register(op: str, name: str, *, priority: int = 0, supports: Supports | None = None,
             available: Callable[[], str | None] | None = None, devices: tuple[str, ...] | list[str] | None = None,
             covers_all: bool = True) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as the implementation ``name`` of ``op`` (``fn`` itself is returned)."""
    devs = None if devices is None else tuple(devices)

    def deco(fn: Callable) -> Callable:
        IMPLEMENTATIONS.setdefault(op, {})[name] = Implementation(op, name, fn, priority, supports, available, devs,
                                                                 covers_all)
        return fn

    return deco


def register_composition(op: str, of: str) -> None:
    """``op`` is built from ``of`` and passes its ``impl=`` through: it offers ``of``'s implementations."""
    COMPOSITIONS[op] = of


def _ranked(op: str) -> list[Implementation]:
    return sorted(IMPLEMENTATIONS[op].values(), key=lambda e: (-e.priority, e.name))


def _device_specific(impls: dict[str, Implementation]) -> str:
    """`` (device-specific: 'compiled' (cpu), 'triton' (cuda))`` for the error message, or ``""``."""
    specific = [f"{name!r} ({', '.join(entry.devices)})" for name, entry in sorted(impls.items())
                if entry.devices is not None]
    return f" (device-specific: {', '.join(specific)})" if specific else ""


def check_impl(op: str, impl: object) -> None:
    """``impl`` must be None, ``"auto"`` or the name of an implementation of ``op`` (or of what it composes)."""
    impls = IMPLEMENTATIONS[COMPOSITIONS.get(op, op)]
    if impl not in (None, "auto") and impl not in impls:
        general = sorted(name for name, entry in impls.items() if entry.devices is None)
        raise ValueError(f"impl: expected one of {['auto', *general]} for {op}{_device_specific(impls)}, "
                         f"got {impl!r}")


def _first_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)


def _notice(op: str, chosen: Implementation, passed: list[tuple[Implementation, str]]) -> None:
    for other, why in passed:
        if isinstance(why, Choice) or other.priority <= chosen.priority or (op, other.name) in _NOTICED:
            continue
        _NOTICED.add((op, other.name))
        warnings.warn(f"fastweights: {op} uses the {chosen.name!r} implementation because {why} "
                      f"(the {other.name!r} one is faster)", stacklevel=4)


def resolve(op: str, impl: str | None, *args: Any, **kwargs: Any) -> Implementation:
    """The implementation of ``op`` that runs the call ``op(*args, **kwargs)`` for ``impl``.

    ``impl`` None/"auto": the best one meant for the inputs' device whose ``supports`` accepts the call; a name:
    that one (or, for a ``covers_all=False`` one refusing the call, the next that accepts it).
    """
    check_impl(op, impl)
    q = _first_tensor(args, kwargs)
    device_type = q.device.type if q is not None else None
    ranked = _ranked(op)
    if impl not in (None, "auto"):
        named = IMPLEMENTATIONS[op][impl]
        why = None if named.covers_all else named.refusal(*args, **kwargs)
        if why is None:
            return named
        passed = [(named, why)]
        ranked = [e for e in ranked if e.priority < named.priority]
    else:
        passed = []
    for entry in ranked:
        if not entry.meant_for(device_type):
            continue  # e.g. a CUDA kernel for CPU inputs: not a fallback, no notice
        why = entry.unavailable() or entry.refusal(*args, **kwargs)
        if why is None:
            _notice(op, entry, passed)
            return entry
        passed.append((entry, why))
    raise RuntimeError(f"no implementation of {op} supports these inputs")  # every op has an unconditional one


def dispatch(op: str, impl: str | None, *args: Any, **kwargs: Any) -> Any:
    """Run ``op(*args, **kwargs)`` with the implementation :func:`resolve` picks."""
    return resolve(op, impl, *args, **kwargs)(*args, **kwargs)


def _device_type(device: str | torch.device | None) -> str:
    if device is None:  # the device new tensors go to (``torch.set_default_device``), normally the CPU
        return torch.empty(0).device.type
    return torch.device(device).type


def available_implementations(device: str | torch.device | None = None) -> dict[str, list[str]]:
    """``{op: [implementation names]}`` meant for tensors on ``device`` (default: the default device, normally
    the CPU), in the order ``impl="auto"`` tries them there; e.g. ``available_implementations("cuda")``.
    A composition (``delta_delta``) lists the implementations of the op it passes ``impl=`` to."""
    dt = _device_type(device)
    out = {op: [e.name for e in _ranked(op) if e.meant_for(dt)] for op in IMPLEMENTATIONS}
    return out | {op: out[of] for op, of in COMPOSITIONS.items()}
