"""Which implementations exist for each op, and how ``impl=`` is resolved.

Every implementation of an op has the op's public signature. ``impl=None`` (or ``"auto"``) picks, among the
implementations whose ``supports(q)`` accepts the inputs (device, dtype, installed packages), the one with
the highest ``priority``. The choice never depends on the sequence length, so training and decoding run the
same math. When a faster implementation exists but cannot be used here (e.g. numba is not installed), the
fallback is announced once with a one-line warning.

An implementation may be meant for some device types only (``devices=("cuda",)`` for the Triton kernels,
``("cpu",)`` for the numba kernels; ``None``: every device). Skipping it for inputs on another device type is
not a fallback and gives no notice, and :func:`available_implementations` lists, per device type, only the
implementations meant for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Implementation:
    fn: Callable
    priority: int
    supports: Callable[[Tensor], bool] | None  # None: every input
    missing: str | None  # why ``supports`` may refuse, for the one-line notice (e.g. "numba is not installed")
    devices: tuple[str, ...] | None = None  # device types it is meant for (``torch.device.type``); None: all

    def meant_for(self, device_type: str) -> bool:
        return self.devices is None or device_type in self.devices


IMPLEMENTATIONS: dict[str, dict[str, Implementation]] = {}
_NOTICED: set[tuple[str, str]] = set()


def register(op: str, name: str, *, priority: int = 0, supports: Callable[[Tensor], bool] | None = None,
             missing: str | None = None, devices: tuple[str, ...] | None = None) -> Callable[[Callable], Callable]:
    if devices is not None:
        devices = tuple(devices)

    def deco(fn: Callable) -> Callable:
        IMPLEMENTATIONS.setdefault(op, {})[name] = Implementation(fn, priority, supports, missing, devices)
        return fn

    return deco


def _ranked(op: str) -> list[tuple[str, Implementation]]:
    return sorted(IMPLEMENTATIONS[op].items(), key=lambda item: (-item[1].priority, item[0]))


def _device_specific(impls: dict[str, Implementation]) -> str:
    """`` (device-specific: 'compiled' (cpu), 'triton' (cuda))`` for the error message, or ``""``."""
    specific = [f"{name!r} ({', '.join(entry.devices)})" for name, entry in sorted(impls.items())
                if entry.devices is not None]
    return f" (device-specific: {', '.join(specific)})" if specific else ""


def resolve(op: str, impl: str | None, q: Tensor | None = None) -> Callable:
    """The implementation of ``op`` named ``impl``, or the best one supporting ``q`` for None/"auto"."""
    impls = IMPLEMENTATIONS[op]
    if impl not in (None, "auto"):
        if impl not in impls:
            general = sorted(name for name, entry in impls.items() if entry.devices is None)
            raise ValueError(f"impl: expected one of {['auto', *general]} for {op}{_device_specific(impls)}, "
                             f"got {impl!r}")
        return impls[impl].fn
    device_type = q.device.type if isinstance(q, Tensor) else None
    skipped = []
    for name, entry in _ranked(op):
        if entry.supports is None or not isinstance(q, Tensor) or entry.supports(q):
            for other in skipped:
                other_entry = IMPLEMENTATIONS[op][other]
                if not other_entry.meant_for(device_type):
                    continue  # e.g. a CUDA kernel for CPU inputs: not a fallback, no notice
                if entry.priority < other_entry.priority and (op, other) not in _NOTICED:
                    _NOTICED.add((op, other))
                    why = other_entry.missing or "it does not support these inputs"
                    warnings.warn(f"fastweights: {op} uses the {name!r} implementation because {why} "
                                  f"(the {other!r} one is faster)", stacklevel=3)
            return entry.fn
        skipped.append(name)
    raise RuntimeError(f"no implementation of {op} supports these inputs")  # every op has an unconditional one


def _device_type(device: str | torch.device | None) -> str:
    if device is None:  # the device new tensors go to (``torch.set_default_device``), normally the CPU
        return torch.empty(0).device.type
    return torch.device(device).type


def available_implementations(device: str | torch.device | None = None) -> dict[str, list[str]]:
    """``{op: [implementation names]}`` meant for tensors on ``device`` (default: the default device, normally
    the CPU), in the order ``impl="auto"`` tries them there; e.g. ``available_implementations("cuda")``."""
    dt = _device_type(device)
    return {op: [name for name, entry in _ranked(op) if entry.meant_for(dt)] for op in IMPLEMENTATIONS}
