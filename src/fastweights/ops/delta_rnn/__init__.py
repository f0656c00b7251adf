"""Delta RNN: a Delta Net feed-forward part plus a fast recurrent matrix (paper.md A.5).

Per step (key-major ``W [K, V]``, ``R [V, V]``):

    W_t = W_{t-1} + beta_t  k_t  (v_t  - W_{t-1}^T k_t)^T          z_t = W_t^T q_t
    R_t = R_{t-1} + rbeta_t rk_t (rv_t - R_{t-1}^T rk_t)^T
    v2: y_t = z_t + R_t^T softmax(y_{t-1})      (y_0 = 0, so softmax(y_0) is uniform)
    v1: y_t = softmax(z_t + R_t^T y_{t-1})

The W part does not depend on y, so every fast implementation runs it with the delta rule (the pure-PyTorch
``checkpointed`` one with the chunked form, the compiled one with the default)
(:func:`~fastweights.ops.common.delta.feed_forward`) and only the (R, y) recursion step by step.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor

from ..common.delta import dispatch_recurrent, prepare_recurrent, recurrent_args
from ..common.spec import OpSpec, register_spec
from ..states import DeltaRNNState

VERSIONS = (1, 2)
STATE = (("W", "[B, H, K, V]"), ("R", "[B, H, V, V]"), ("y", "[B, H, V]"))


prepare = partial(prepare_recurrent, versions=VERSIONS, state=STATE)  # (q, ..., rbeta, version, state0, reset)


def delta_rnn(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor, *, version: int = 2,
    initial_state: DeltaRNNState | tuple | None = None, reset: Tensor | None = None,
    output_final_state: bool = False, impl: str | None = None, **kwargs,
) -> tuple[Tensor, DeltaRNNState | None]:
    """Delta RNN (fast RNN with a delta-rule feed-forward and recurrent fast matrix).

    Args:
        q, k: ``[B, T, H, K]`` feature-mapped; v: ``[B, T, H, V]``; beta: ``[B, T, H]`` in [0, 1].
        rk: ``[B, T, H, V]`` recurrent keys (already softmaxed); rv: ``[B, T, H, V]``; rbeta: ``[B, T, H]``.
        version: 2 (the paper's main model) or 1 (softmax output, appendix ablation).
        initial_state: ``DeltaRNNState(W [B,H,K,V], R [B,H,V,V], y [B,H,V])`` or None (zeros).
        reset: bool ``[B, T]``; True at ``t`` zeroes W, R and y before step ``t``.
        impl: ``"compiled"`` (numba; the default on CPU when installed), ``"checkpointed"`` (pure PyTorch)
            or ``"reference"``; ``kwargs`` (``checkpoint_every``: steps between stored states, default
            ~sqrt(T)) go to it.
    Returns:
        ``(y [B, T, H, V] in q's dtype, DeltaRNNState or None)``.
    """
    return dispatch_recurrent("delta_rnn", impl, q, k, v, beta, rk, rv, rbeta, version=version,
                              initial_state=initial_state, reset=reset, output_final_state=output_final_state,
                              **kwargs)


SPEC = register_spec(OpSpec(
    "delta_rnn", delta_rnn,
    args=recurrent_args(),
    state=STATE, state_type=DeltaRNNState, versions=VERSIONS, softmax_versions=(1,),  # A.5: v1 softmaxes q, k
    step_flops=lambda K, V: 6 * K * V + 6 * V * V,
    flop_model="6*K*V + 6*V*V per step and head (delta rule on W [K,V] and on R [V,V])",
    fast_oracle="checkpointed", checkpointed=True, bench_layer="delta_rnn",
))

from . import checkpointed, compiled, naive, triton  # noqa: E402,F401  (the backends register themselves)
