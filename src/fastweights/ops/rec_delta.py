"""Recurrent Delta Net (RDN): every slow output also depends on the previous fast-net output (paper.md A.7).

Per step, with ``a = tanh(y_{t-1})`` (``y_0 = 0``, so there is no recurrent contribution at t = 1):

    q_t = softmax(q~_t + R_q a)   k_t = softmax(k~_t + R_k a)   v_t = v~_t + R_v a
    beta_t = sigmoid(b~_t + r_beta . a)
    W_t = W_{t-1} + beta_t k_t (v_t - W_{t-1}^T k_t)^T            y_t = W_t^T q_t

The whole layer is sequential; the default implementation uses :func:`checkpointed_scan`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import (
    check_float_tensor,
    check_qkv,
    check_reset,
    check_shape,
    check_state_tuple,
    compute_dtype,
    keep_mask,
)
from ._registry import register, resolve
from ._scan import checkpointed_scan
from .delta_rnn import read, recurrent_delta_update
from .states import RecDeltaState


def _prepare(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, initial_state, reset):
    B, T, H, D, _ = check_qkv(q, k, v, beta, q_layout="[B, T, H, D]", v_layout="[B, T, H, D]", square=True,
                                  beta_is_probability=False)
    for name, t, layout, shape in (("rec_q", rec_q, "[H, D, D]", (H, D, D)), ("rec_k", rec_k, "[H, D, D]", (H, D, D)),
                                   ("rec_v", rec_v, "[H, D, D]", (H, D, D)), ("rec_beta", rec_beta, "[H, D]", (H, D))):
        check_float_tensor(name, t)
        check_shape(name, t, layout, shape)
        if t.device != q.device:
            raise ValueError(f"{name}: expected a tensor on device {q.device} (the device of q), got {t.device}")
    reset = check_reset(reset, B, T, q.device)
    state = check_state_tuple(initial_state, (("W", "[B, H, D, D]", (B, H, D, D)),
                                              ("y", "[B, H, D]", (B, H, D))), q.device)
    dt = compute_dtype(q.dtype)
    if state is None:
        state = (q.new_zeros(B, H, D, D, dtype=dt), q.new_zeros(B, H, D, dtype=dt))
    inputs = tuple(x.to(dt) for x in (q, k, v, beta))
    params = tuple(p.to(dt) for p in (rec_q, rec_k, rec_v, rec_beta))
    return inputs, params, tuple(s.to(dt) for s in state), reset


def _step(xs, params, state):
    q, k, v, b = xs  # [B, H, D] x3, [B, H]
    rec_qkvb, = params  # [H, 3D+1, D]: rec_q, rec_k, rec_v and rec_beta stacked, applied in one matmul
    W, y = state
    D = y.shape[-1]
    a = torch.tanh(y)
    r = (rec_qkvb @ a.unsqueeze(-1)).squeeze(-1)  # [B, H, 3D+1]
    rq, rk, rv, rb = r[..., :D], r[..., D:2 * D], r[..., 2 * D:3 * D], r[..., 3 * D]
    q = torch.softmax(q + rq, dim=-1)
    k = torch.softmax(k + rk, dim=-1)
    beta = torch.sigmoid(b + rb)
    W = recurrent_delta_update(W, k, v + rv, beta)
    y = read(W, q)
    return y, (W, y)


@register("rec_delta", "checkpointed", priority=10)
def rec_delta_checkpointed(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, *, initial_state=None, reset=None,
                           output_final_state=False, chunk_size: int | None = None):
    in_dtype = check_float_tensor("q", q).dtype
    xs, params, state, reset = _prepare(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, initial_state, reset)
    rq, rk, rv, rb = params
    stacked = torch.cat([rq, rk, rv, rb.unsqueeze(1)], dim=1)
    y, (W, y_last) = checkpointed_scan(_step, xs, (stacked,), state, reset, chunk_size)
    return y.to(in_dtype), (RecDeltaState(W, y_last) if output_final_state else None)


@register("rec_delta", "reference")
def rec_delta_reference(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, *, initial_state=None, reset=None,
                        output_final_state=False):
    """Plain step loop in the paper's orientation (``W [D, D]`` value-major, read ``W q``)."""
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta), (Rq, Rk, Rv, rb), (W0, y), reset = _prepare(
        q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, initial_state, reset)
    W = W0.transpose(-1, -2)
    keep = keep_mask(reset, q.dtype)
    outs = []
    for t in range(q.shape[1]):
        if keep is not None:
            m = keep[:, t, None, None]
            W, y = W * m[..., None], y * m
        a = torch.tanh(y)[..., :, None]  # [B, H, D, 1]
        qt = torch.softmax(q[:, t] + (Rq @ a).squeeze(-1), dim=-1)
        kt = torch.softmax(k[:, t] + (Rk @ a).squeeze(-1), dim=-1)
        vt = v[:, t] + (Rv @ a).squeeze(-1)
        bt = torch.sigmoid(beta[:, t] + (rb[..., None, :] @ a).squeeze(-1).squeeze(-1))
        W = W + bt[..., None, None] * (vt[..., :, None] - W @ kt[..., :, None]) @ kt[..., None, :]
        y = (W @ qt[..., :, None]).squeeze(-1)
        outs.append(y)
    final = RecDeltaState(W.transpose(-1, -2), y) if output_final_state else None
    return torch.stack(outs, dim=1).to(in_dtype), final


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
            or ``"reference"``; ``kwargs`` (``chunk_size``) go to it.
    Returns:
        ``(y [B, T, H, D] in q's dtype, RecDeltaState or None)``.
    """
    fn = resolve("rec_delta", impl, q)
    return fn(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, initial_state=initial_state, reset=reset,
              output_final_state=output_final_state, **kwargs)
