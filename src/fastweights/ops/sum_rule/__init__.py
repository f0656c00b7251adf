"""Sum (Hebbian) update rule — the Linear Transformer's fast weights (paper.md A.1).

``S_t = S_{t-1} + k_t v_t^T``; ``o_t = S_t^T q_t``. Key-major state ``S [B, H, K, V]``.
"""

from __future__ import annotations

from torch import Tensor

from ..common.registry import dispatch
from ..common.spec import FEATURE, VALUE, ArgSpec, OpSpec, register_spec


def sum_rule(
    q: Tensor, k: Tensor, v: Tensor, *, initial_state: Tensor | None = None, reset: Tensor | None = None,
    output_final_state: bool = False, impl: str | None = None, **kwargs,
) -> tuple[Tensor, Tensor | None]:
    """Linear-Transformer fast weights: ``S_t = S_{t-1} + k_t v_t^T``, ``o_t = S_t^T q_t``.

    Args:
        q, k: ``[B, T, H, K]`` feature-mapped queries and keys. v: ``[B, T, H, V]``.
        initial_state: ``[B, H, K, V]`` or None (zeros); receives gradients.
        reset: bool ``[B, T]``; True at ``t`` zeroes the state before step ``t``.
        output_final_state: return the final state ``[B, H, K, V]`` (in float32/float64) instead of None.
        impl: ``"compiled"`` (a fused recurrent CPU kernel, numba; the default for CPU tensors with heads up to
            96 x 96 when numba is installed), ``"chunked"`` (the chunkwise-parallel form; the default
            otherwise), ``"triton"`` (CUDA) or ``"reference"``; extra ``kwargs`` go to it: ``chunk_size`` (the
            chunked form's chunk width; setting it selects that form) or ``checkpoint_every`` (the compiled
            form's steps between the states kept for the backward).
    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state or None)``.
    """
    return dispatch("sum_rule", impl, q, k, v, initial_state=initial_state, reset=reset,
                    output_final_state=output_final_state, **kwargs)


SPEC = register_spec(OpSpec(
    "sum_rule", sum_rule,
    args=(ArgSpec("q", "[B, T, H, K]", FEATURE), ArgSpec("k", "[B, T, H, K]", FEATURE),
          ArgSpec("v", "[B, T, H, V]", VALUE)),
    state=(("S", "[B, H, K, V]"),),
    step_flops=lambda K, V: 4 * K * V, flop_model="4*K*V per step and head (write k v^T, read S^T q)",
    fast_oracle="chunked", bench_layer="linear_transformer",
))

from . import chunked, compiled, naive, triton  # noqa: E402,F401  (the backends register themselves)
