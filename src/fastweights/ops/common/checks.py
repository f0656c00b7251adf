"""Input validation and dtype policy shared by every op.

Every public op validates its arguments *before* doing any work and raises ``TypeError`` (wrong type or
dtype) or ``ValueError`` (wrong shape, device or value) with a message naming the argument, the expected
and the actual value.

Value checks (``beta`` inside [0, 1]) need to read the tensor; on CUDA that is a device synchronisation.
They therefore run by default only for CPU tensors. :func:`set_value_checks` switches them on or off
everywhere (``True``/``False``) or back to the default (``None``). Code traced by ``torch.compile`` skips them
(reading a value would break the graph); shape, dtype and device checks still run while tracing.

They guard what a user passes to an op. The layers pass write strengths that come out of a sigmoid (or a
softmax), which cannot leave [0, 1]: they call the ops inside :func:`activated_arguments`, so that a training
step does not read every ``beta`` once more (a full pass over the tensor per check).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

_VALUE_CHECKS: bool | None = None
_ACTIVATED: contextvars.ContextVar[bool] = contextvars.ContextVar("fastweights_activated_arguments", default=False)


def activated_arguments() -> contextlib.AbstractContextManager[None]:
    """Inside this block the ops skip their value checks: for callers whose probability arguments come from a
    sigmoid or softmax (the layers), not from a user. Shape, dtype and device checks still run. (While
    ``torch.compile`` traces, value checks are off anyway and the block does nothing.)"""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return _activated()


@contextlib.contextmanager
def _activated() -> Iterator[None]:
    token = _ACTIVATED.set(True)
    try:
        yield
    finally:
        _ACTIVATED.reset(token)


def set_value_checks(enabled: bool | None) -> None:
    """Turn value checks on (``True``), off (``False``) or back to "CPU tensors only" (``None``)."""
    global _VALUE_CHECKS
    _VALUE_CHECKS = enabled


def _value_checks_for(t: Tensor) -> bool:
    if torch.compiler.is_compiling() or _ACTIVATED.get():  # a data-dependent check would break the graph
        return False
    if _VALUE_CHECKS is None:
        return t.device.type == "cpu"
    return _VALUE_CHECKS


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def check_float_tensor(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    return t


def check_shape(name: str, t: Tensor, layout: str, expected: Sequence[int]) -> None:
    """Check ``t.shape == expected``; ``layout`` names the axes, e.g. ``"[B, T, H, K]"``."""
    if t.dim() != len(expected):
        raise ValueError(
            f"{name}: expected a {len(expected)}-d tensor {layout} = {_fmt(expected)}, "
            f"got a {t.dim()}-d tensor of shape {_fmt(t.shape)}"
        )
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {layout} = {_fmt(expected)}, got {_fmt(t.shape)}")


def check_rank(name: str, t: Tensor, layout: str) -> None:
    rank = layout.count(",") + 1
    if t.dim() != rank:
        raise ValueError(f"{name}: expected a {rank}-d tensor {layout}, got shape {_fmt(t.shape)}")


def check_same_device(ref_name: str, ref: Tensor, **others: Tensor | None) -> None:
    for name, t in others.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"{name}: expected a tensor on device {ref.device} (the device of {ref_name}), "
                             f"got device {t.device}")


def check_same_dtype(ref_name: str, ref: Tensor, **others: Tensor) -> None:
    for name, t in others.items():
        if t.dtype != ref.dtype:
            raise TypeError(f"{name}: expected dtype {ref.dtype} (the dtype of {ref_name}), got {t.dtype}")


def check_unit_interval(name: str, t: Tensor) -> None:
    """``t`` must lie in [0, 1] (cheap on CPU; see the module docstring for CUDA)."""
    if _value_checks_for(t) and t.numel() > 0:
        lo, hi = float(t.detach().min()), float(t.detach().max())
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise ValueError(f"{name}: expected values in [0, 1] (apply a sigmoid first), "
                             f"got values in [{lo:.4g}, {hi:.4g}]")


def check_reset(reset: object, batch: int, time: int, device: torch.device) -> Tensor | None:
    """``reset``: bool ``[B, T]``; True at ``t`` zeroes the state before step ``t``."""
    if reset is None:
        return None
    if not isinstance(reset, Tensor):
        raise TypeError(f"reset: expected a bool torch.Tensor [B, T], got {type(reset).__name__}")
    if reset.dtype != torch.bool:
        raise TypeError(f"reset: expected dtype torch.bool, got {reset.dtype}")
    check_shape("reset", reset, "[B, T]", (batch, time))
    if reset.device != device:
        raise ValueError(f"reset: expected a tensor on device {device}, got device {reset.device}")
    return reset


def check_chunk_size(chunk_size: object, name: str = "chunk_size") -> int:
    """A positive int (``name``: the argument, ``chunk_size`` or ``checkpoint_every``)."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"{name}: expected a positive int, got {chunk_size!r}")
    return chunk_size


def check_options(op: str, kwargs: dict, allowed: tuple[str, ...]) -> None:
    """Refuse a keyword option ``op`` does not take, naming the ones it does (every implementation would otherwise
    fail in its own way, or a reference loop ignore it)."""
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{unknown[0]}: {op} takes no option {unknown[0]!r} (got {unknown[0]}="
                        f"{kwargs[unknown[0]]!r}); its options: {', '.join(allowed)}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """State and accumulation dtype: at least float32 (float64 stays float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_state_tensor(name: str, t: object, layout: str, expected: Sequence[int], device: torch.device) -> Tensor:
    t = check_float_tensor(name, t)
    check_shape(name, t, layout, expected)
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on device {device}, got device {t.device}")
    return t


def check_state_tuple(
    initial_state: object, fields: Sequence[tuple[str, str, Sequence[int]]], device: torch.device
) -> tuple[Tensor, ...] | None:
    """Validate a multi-component state given as a (named) tuple; ``fields`` = (name, layout, shape)."""
    if initial_state is None:
        return None
    if not isinstance(initial_state, (tuple, list)):
        raise TypeError(f"initial_state: expected a tuple of {len(fields)} tensors "
                        f"({', '.join(f[0] for f in fields)}), got {type(initial_state).__name__}")
    if len(initial_state) != len(fields):
        raise ValueError(f"initial_state: expected {len(fields)} tensors ({', '.join(f[0] for f in fields)}), "
                         f"got {len(initial_state)}")
    return tuple(
        check_state_tensor(f"initial_state.{n}", t, layout, shape, device)
        for (n, layout, shape), t in zip(fields, initial_state)
    )


def keep_mask(reset: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``1 - reset`` as a float ``[B, T]`` tensor (None when there is no reset)."""
    return None if reset is None else (~reset).to(dtype)


def check_qkv(
    q: object, k: object, v: object, beta: object | None = None, *, beta_layout: str = "[B, T, H]",
    q_layout: str = "[B, T, H, K]", v_layout: str = "[B, T, H, V]", square: bool = False,
    beta_is_probability: bool = True,
) -> tuple[int, ...]:
    """Validate the common ``q, k, v[, beta]`` inputs; returns ``(*q.shape, V)``.

    ``q`` fixes B, T, H (and any extra axes such as the Delta LSTM gate axis) and K; ``k`` must match
    ``q``; ``v`` must match up to its last axis; ``beta`` must equal ``q.shape[:-1]``.
    """
    q = check_float_tensor("q", q)
    check_rank("q", q, q_layout)
    if q.shape[1] == 0:
        raise ValueError(f"q: expected at least one time step, got T = 0 (shape {_fmt(q.shape)})")
    k = check_float_tensor("k", k)
    check_shape("k", k, q_layout.replace("V", "K"), q.shape)
    v = check_float_tensor("v", v)
    check_rank("v", v, v_layout)
    lead = tuple(q.shape[:-1])
    if tuple(v.shape[:-1]) != lead:
        raise ValueError(f"v: expected shape {v_layout} with leading dims {_fmt(lead)} (those of q), "
                         f"got {_fmt(v.shape)}")
    if square and v.shape[-1] != q.shape[-1]:
        raise ValueError(f"v: this op needs a square state (K == V): expected last dim {q.shape[-1]}, "
                         f"got {v.shape[-1]}")
    tensors = {"k": k, "v": v}
    if beta is not None:
        beta = check_float_tensor("beta", beta)
        check_shape("beta", beta, beta_layout, lead)
        tensors["beta"] = beta
    check_same_device("q", q, **tensors)
    check_same_dtype("q", q, **tensors)
    if beta is not None and beta_is_probability:
        check_unit_interval("beta", beta)
    return (*q.shape, v.shape[-1])
