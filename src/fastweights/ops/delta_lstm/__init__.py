"""Delta LSTM: six fast matrices, one feed-forward (W^g) and one recurrent (R^g) per gate (paper.md A.6).

Gates ``g`` in (input i, update u, output o), coupled forget gate ``1 - i``, no peepholes. Per step:

    z^g_t = W^g_t^T q^g_t                 (delta rule, independent of y: chunked)
    R^g_t = R^g_{t-1} + rbeta^g rk^g (rv^g - R^g_{t-1}^T rk^g)^T
    a_{t-1} = softmax(y_{t-1})   (v2-v4)   |   y_{t-1}   (v1)
    p^g = z^g_t + R^g_t^T a_{t-1};  i = sigmoid(p^i);  o = sigmoid(p^o)
    u = p^u (v4)  |  sigmoid(p^u) (v1-v3)
    c_t = i * u + (1 - i) * c_{t-1}
    y_t = o * c_t (v2, v4)  |  o * c_t + z^u_t (v3)  |  softmax(o * c_t) (v1)
"""

from __future__ import annotations

from functools import partial

from torch import Tensor

from ..common.delta import dispatch_recurrent, prepare_recurrent, recurrent_args
from ..common.spec import OpSpec, register_spec
from ..states import DeltaLSTMState

VERSIONS = (1, 2, 3, 4)
GATES = 3  # input, update, output
STATE = (("W", "[B, H, G, K, V]"), ("R", "[B, H, G, V, V]"), ("y", "[B, H, V]"), ("c", "[B, H, V]"))


prepare = partial(prepare_recurrent, versions=VERSIONS, state=STATE, gates=GATES)


def delta_lstm(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor, *, version: int = 4,
    initial_state: DeltaLSTMState | tuple | None = None, reset: Tensor | None = None,
    output_final_state: bool = False, impl: str | None = None, **kwargs,
) -> tuple[Tensor, DeltaLSTMState | None]:
    """Delta LSTM. Every input has a gate axis of size 3 ordered (input i, update u, output o).

    Args:
        q, k: ``[B, T, H, 3, K]`` feature-mapped; v: ``[B, T, H, 3, V]``; beta: ``[B, T, H, 3]`` in [0, 1].
        rk: ``[B, T, H, 3, V]`` (softmaxed); rv: ``[B, T, H, 3, V]``; rbeta: ``[B, T, H, 3]`` in [0, 1].
        version: 1-4 (paper.md A.6; 4 is the paper's main model).
        initial_state: ``DeltaLSTMState(W [B,H,3,K,V], R [B,H,3,V,V], y [B,H,V], c [B,H,V])`` or None.
        reset: bool ``[B, T]``; True at ``t`` zeroes every state component before step ``t``.
        impl: ``"compiled"`` (numba; the default on CPU when installed), ``"checkpointed"`` (pure PyTorch)
            or ``"reference"``; ``kwargs`` (``checkpoint_every``: steps between stored states, default ~sqrt(T))
            go to it.
    Returns:
        ``(y [B, T, H, V] in q's dtype, DeltaLSTMState or None)``.
    """
    return dispatch_recurrent("delta_lstm", impl, q, k, v, beta, rk, rv, rbeta, version=version,
                              initial_state=initial_state, reset=reset, output_final_state=output_final_state,
                              **kwargs)


SPEC = register_spec(OpSpec(
    "delta_lstm", delta_lstm,
    args=recurrent_args(", G"),
    state=STATE, state_type=DeltaLSTMState, versions=VERSIONS,
    step_flops=lambda K, V: 3 * (6 * K * V + 6 * V * V),
    flop_model="3 gates x (6*K*V + 6*V*V) per step and head (W^g and R^g per gate)",
    fast_oracle="checkpointed", checkpointed=True, bench_layer="delta_lstm",
))

from . import checkpointed, compiled, naive, triton  # noqa: E402,F401  (the backends register themselves)
