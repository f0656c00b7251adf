"""Decayed sum rule: the sum rule whose fast matrix fades by a gate ``g_t`` in [0, 1] before each write.

``S_t = g_t S_{t-1} + k_t v_t^T``, ``o_t = S_t^T q_t`` (key-major ``S [B, H, K, V]``). The worked example of
``docs/extending.md``: a recurrence with a step loop (``naive.py``) and one backend (``parallel.py``), which the test
suite registers and checks against the step loop.
"""

from __future__ import annotations

from torch import Tensor

from fastweights.ops.common.checks import check_qkv, check_reset, check_state_tensor, compute_dtype
from fastweights.ops.common.registry import dispatch
from fastweights.ops.common.spec import FEATURE, SIGMOID, VALUE, ArgSpec, OpSpec, register_spec


def prepare(q, k, v, g, initial_state, reset):
    """Validate a call before any work and cast it to the compute dtype: ``(q, k, v, g, S0, reset)``."""
    B, T, H, K, V = check_qkv(q, k, v, g)  # g is checked like a write strength: [B, T, H] in [0, 1]
    reset = check_reset(reset, B, T, q.device)
    dt = compute_dtype(q.dtype)
    S0 = q.new_zeros(B, H, K, V, dtype=dt) if initial_state is None else check_state_tensor(
        "initial_state", initial_state, "[B, H, K, V]", (B, H, K, V), q.device).to(dt)
    return q.to(dt), k.to(dt), v.to(dt), g.to(dt), S0, reset


def decay_sum(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, *, initial_state: Tensor | None = None, reset: Tensor | None = None,
    output_final_state: bool = False, impl: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Decayed sum rule: ``S_t = g_t S_{t-1} + k_t v_t^T``, ``o_t = S_t^T q_t``.

    Args:
        q, k: ``[B, T, H, K]`` feature-mapped; v: ``[B, T, H, V]``; g: ``[B, T, H]`` decay gates in [0, 1].
        initial_state: ``[B, H, K, V]`` or None (zeros). reset: bool ``[B, T]``; True at ``t`` zeroes the state
            before step ``t``. impl: ``"parallel"`` (default) or ``"reference"``.
    Returns:
        ``(o [B, T, H, V] in q's dtype, final state [B, H, K, V] or None)``.
    """
    return dispatch("decay_sum", impl, q, k, v, g, initial_state=initial_state, reset=reset,
                    output_final_state=output_final_state)


SPEC = register_spec(OpSpec(
    "decay_sum", decay_sum,
    args=(ArgSpec("q", "[B, T, H, K]", FEATURE), ArgSpec("k", "[B, T, H, K]", FEATURE),
          ArgSpec("v", "[B, T, H, V]", VALUE), ArgSpec("g", "[B, T, H]", SIGMOID)),
    state=(("S", "[B, H, K, V]"),),
    step_flops=lambda K, V: 5 * K * V, flop_model="5*K*V per step and head (decay, write k v^T, read S^T q)",
))

from . import naive, parallel  # noqa: E402,F401  (the implementations register themselves)
