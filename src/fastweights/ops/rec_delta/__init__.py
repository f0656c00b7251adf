"""Recurrent Delta Net (RDN): every slow output also depends on the previous fast-net output (paper.md A.7).

Per step, with ``a = tanh(y_{t-1})`` (``y_0 = 0``, so there is no recurrent contribution at t = 1):

    q_t = softmax(q~_t + R_q a)   k_t = softmax(k~_t + R_k a)   v_t = v~_t + R_v a
    beta_t = sigmoid(b~_t + r_beta . a)
    W_t = W_{t-1} + beta_t k_t (v_t - W_{t-1}^T k_t)^T            y_t = W_t^T q_t

The whole layer is sequential; the PyTorch implementation uses :func:`checkpointed_scan`.
"""

from __future__ import annotations

from torch import Tensor

from ..common.checks import check_float_tensor, check_qkv, check_reset, check_shape, compute_dtype
from ..common.delta import dispatch_recurrent, prepare_state
from ..common.spec import RAW, VALUE, WEIGHT, ArgSpec, OpSpec, register_spec
from ..states import RecDeltaState

STATE = (("W", "[B, H, D, D]"), ("y", "[B, H, D]"))


def prepare(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, initial_state, reset):
    """Validate a call (before any work) and cast it to the compute dtype:
    ``((q, k, v, beta), (rec_q, rec_k, rec_v, rec_beta), (W0, y0), reset)``."""
    B, T, H, D, _ = check_qkv(q, k, v, beta, q_layout="[B, T, H, D]", v_layout="[B, T, H, D]", square=True,
                                  beta_is_probability=False)
    for name, t, layout, shape in (("rec_q", rec_q, "[H, D, D]", (H, D, D)), ("rec_k", rec_k, "[H, D, D]", (H, D, D)),
                                   ("rec_v", rec_v, "[H, D, D]", (H, D, D)), ("rec_beta", rec_beta, "[H, D]", (H, D))):
        check_float_tensor(name, t)
        check_shape(name, t, layout, shape)
        if t.device != q.device:
            raise ValueError(f"{name}: expected a tensor on device {q.device} (the device of q), got {t.device}")
    reset = check_reset(reset, B, T, q.device)
    state = prepare_state(initial_state, STATE, {"B": B, "H": H, "D": D}, q)
    dt = compute_dtype(q.dtype)
    inputs = tuple(x.to(dt) for x in (q, k, v, beta))
    params = tuple(p.to(dt) for p in (rec_q, rec_k, rec_v, rec_beta))
    return inputs, params, state, reset


def rec_delta(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, rec_q: Tensor, rec_k: Tensor, rec_v: Tensor, rec_beta: Tensor,
    *, initial_state: RecDeltaState | tuple | None = None, reset: Tensor | None = None,
    output_final_state: bool = False, impl: str | None = None, **kwargs,
) -> tuple[Tensor, RecDeltaState | None]:
    """Recurrent Delta Net.

    Args:
        q, k, v: ``[B, T, H, D]`` raw slow pre-activations (no feature map); beta: ``[B, T, H]`` raw (no sigmoid).
        rec_q, rec_k, rec_v: ``[H, D, D]`` slow recurrent matrices (acting as ``R @ tanh(y_{t-1})``);
        rec_beta: ``[H, D]``. They may be float32 parameters with half-precision inputs.
        initial_state: ``RecDeltaState(W [B,H,D,D], y [B,H,D])`` or None (zeros).
        reset: bool ``[B, T]``; True at ``t`` zeroes W and y before step ``t``.
        impl: ``"compiled"`` (numba; the default on CPU when installed), ``"checkpointed"`` (pure PyTorch)
            or ``"reference"``; ``kwargs`` (``checkpoint_every``: steps between stored states, default ~sqrt(T))
            go to it.
    Returns:
        ``(y [B, T, H, D] in q's dtype, RecDeltaState or None)``.
    """
    return dispatch_recurrent("rec_delta", impl, q, k, v, beta, rec_q, rec_k, rec_v, rec_beta,
                              initial_state=initial_state, reset=reset, output_final_state=output_final_state,
                              **kwargs)


SPEC = register_spec(OpSpec(
    "rec_delta", rec_delta,
    args=(ArgSpec("q", "[B, T, H, D]", RAW), ArgSpec("k", "[B, T, H, D]", RAW), ArgSpec("v", "[B, T, H, D]", VALUE),
          ArgSpec("beta", "[B, T, H]", RAW), ArgSpec("rec_q", "[H, D, D]", WEIGHT),
          ArgSpec("rec_k", "[H, D, D]", WEIGHT), ArgSpec("rec_v", "[H, D, D]", WEIGHT),
          ArgSpec("rec_beta", "[H, D]", WEIGHT)),
    state=STATE, state_type=RecDeltaState,
    step_flops=lambda K, V: 10 * K * V + 2 * V * V,
    flop_model="10*K*V + 2*V*V per step and head (R_q a, R_k a, R_v a, then the delta rule)",
    fast_oracle="checkpointed", checkpointed=True, square=True, bench_layer="rdn",
))

from . import checkpointed, compiled, naive, triton  # noqa: E402,F401  (the backends register themselves)
