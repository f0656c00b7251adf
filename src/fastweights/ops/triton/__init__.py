"""Triton GPU kernels for the fast-weight ops, registered as ``impl="triton"`` (the default for CUDA tensors).

Each op's ``triton.py`` (``ops/<op>/triton.py``) registers its entry with :func:`register_triton`; registration needs
no triton: an entry imports its kernel module on first use, so ``import fastweights`` never imports triton, and on
CPU inputs these entries are simply not meant for the device (no fallback notice).

* ``sum_rule``, ``delta_rule``: chunkwise-parallel UT/WY kernels with a hand-written backward (:mod:`.chunked`);
  a fused single-step kernel for decoding (T = 1 without autograd).
* ``delta_rnn`` (v1, v2), ``delta_lstm`` (v1-v4), ``rec_delta``: fused recurrent kernels, one program per
  (batch, head) with the state in registers, the state checkpointed every ``checkpoint_every`` steps and a
  hand-derived backward that recomputes one chunk at a time (:mod:`.recurrent`). The feed-forward fast matrices
  of the Delta RNN / LSTM run through the chunked delta-rule kernels.
* ``delta_delta``, ``delta_mlp``: compositions, run with ``impl="triton"`` passed to their delta rules.

Inputs float32/bfloat16/float16 (float64 runs the PyTorch implementation), states and accumulation float32,
outputs in the input dtype. Calls the kernels do not take (float64, too large heads) go to the next implementation
through the registry's ``supports`` (:func:`supports_linear`, :func:`supports_recurrent`).

Every entry gets the first-use check of :mod:`.safety` through :func:`register_triton`: the first call per (op,
version, CUDA device, dtype) compares the kernel with the PyTorch implementation on a tiny input, and a kernel that
raises or disagrees is switched off there for the rest of the process, with one warning
(:func:`set_triton_check`, ``FASTWEIGHTS_TRITON_CHECK=0``: off). See ``docs/gpu.md``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..common.registry import Choice, register
from . import safety
from ._support import MAX_KEY_DIM, MAX_VALUE_DIM, triton_missing
from .safety import reset_triton_checks, set_triton_check, triton_check, triton_check_enabled, triton_check_results

__all__ = [
    "FLOAT64", "PRIORITY", "linear_rule_triton", "register_triton", "reset_triton_checks", "set_triton_check",
    "supports_linear", "supports_recurrent", "triton_check", "triton_check_enabled", "triton_check_results",
]

PRIORITY = 30  # above "compiled" (20) and the PyTorch implementations (10)
FLOAT64 = Choice("float64 inputs stay in float64 (the kernels compute in float32)")


def register_triton(op: str, supports: Callable[..., str | None]) -> Callable[[Callable], Callable]:
    """Register ``fn`` as ``impl="triton"`` of ``op`` (CUDA tensors; ``supports`` refusals go to the next one),
    behind the first-use check of :mod:`.safety` (a failed check is one more refusal)."""

    def deco(fn: Callable) -> Callable:
        return register(op, "triton", priority=PRIORITY, supports=safety.guard(op, "triton", supports, fn),
                        available=triton_missing, devices=("cuda",), covers_all=False)(fn)

    return deco


def _refusal(q: object, size: int, limit: int, what: str) -> str | None:
    if not isinstance(q, Tensor):
        return None  # the implementation's own argument checks report it
    if q.dtype.is_floating_point and q.itemsize == 8:
        return FLOAT64
    if size > limit:
        return f"the 'triton' kernels take {what} sizes up to {limit}, got {size}"
    return None


def supports_linear(q: object, *args: object, **kwargs: object) -> str | None:
    """``supports`` of the sum/delta-rule kernels: not float64, key size up to ``MAX_KEY_DIM``."""
    return _refusal(q, q.shape[-1] if isinstance(q, Tensor) else 0, MAX_KEY_DIM, "key")


def supports_recurrent(q: object, k: object, v: object, *args: object, **kwargs: object) -> str | None:
    """``supports`` of the fused recurrent kernels: not float64, head (value) size up to ``MAX_VALUE_DIM``."""
    return _refusal(q, v.shape[-1] if isinstance(v, Tensor) else 0, MAX_VALUE_DIM, "head")


def linear_rule_triton(op: str, q, k, v, beta, initial_state, reset, output_final_state, chunk_size):
    """``sum_rule`` (``beta is None``) / ``delta_rule`` with the kernels of :mod:`.chunked` (imports triton)."""
    from .chunked import linear_rule

    return linear_rule(op, q, k, v, beta, initial_state, reset, output_final_state, chunk_size)
