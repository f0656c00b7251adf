"""Delta update rule — Delta Net's fast weights (paper.md A.0, A.2).

``S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T`` (the old value is read *before* the write),
``o_t = S_t^T q_t`` (the query reads the state *after* the write). Key-major ``S [B, H, K, V]``.
"""

from __future__ import annotations

from torch import Tensor

from ..common.registry import dispatch
from ..common.spec import FEATURE, SIGMOID, VALUE, ArgSpec, OpSpec, register_spec


def delta_rule(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, initial_state: Tensor | None = None,
    reset: Tensor | None = None, output_final_state: bool = False, impl: str | None = None, **kwargs,
) -> tuple[Tensor, Tensor | None]:
    """Delta-rule fast weights (Delta Net).

    Args:
        q, k: ``[B, T, H, K]`` feature-mapped queries and keys (keep keys sum-normalised for stability).
        v: ``[B, T, H, V]``. beta: ``[B, T, H]`` write strengths in [0, 1] (already through a sigmoid).
        initial_state: ``[B, H, K, V]`` or None (zeros); receives gradients.
        reset: bool ``[B, T]``; True at ``t`` zeroes the state before step ``t``.
        output_final_state: return the final state ``[B, H, K, V]`` (float32/float64) instead of None.
        impl: ``"compiled"`` (a fused recurrent CPU kernel, numba; the default for CPU tensors with heads up to
            128 x 128 when numba is installed), ``"chunked"`` (the chunkwise-parallel form; the default
            otherwise), ``"triton"`` (CUDA) or ``"reference"``; extra ``kwargs`` go to it: ``chunk_size`` (the
            chunked form's chunk width; setting it selects that form) or ``checkpoint_every`` (the compiled
            form's steps between the states kept for the backward).
    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state or None)``.
    """
    return dispatch("delta_rule", impl, q, k, v, beta, initial_state=initial_state, reset=reset,
                    output_final_state=output_final_state, **kwargs)


SPEC = register_spec(OpSpec(
    "delta_rule", delta_rule,
    args=(ArgSpec("q", "[B, T, H, K]", FEATURE), ArgSpec("k", "[B, T, H, K]", FEATURE),
          ArgSpec("v", "[B, T, H, V]", VALUE), ArgSpec("beta", "[B, T, H]", SIGMOID)),
    state=(("S", "[B, H, K, V]"),),
    step_flops=lambda K, V: 6 * K * V,
    flop_model="6*K*V per step and head (read S^T k, rank-1 write, read S^T q)",
    fast_oracle="chunked", bench_layer="delta_net",
))

from . import chunked, compiled, naive, triton  # noqa: E402,F401  (the backends register themselves)
