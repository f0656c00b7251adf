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

import torch
from torch import Tensor

from ._common import check_float_tensor, check_qkv, check_reset, check_state_tuple, compute_dtype, keep_mask
from ._registry import register, resolve
from ._scan import checkpointed_scan
from .delta_rnn import check_recurrent_inputs, check_version, read, recurrent_delta_update
from .delta_rule import delta_rule
from .states import DeltaLSTMState

VERSIONS = (1, 2, 3, 4)
GATES = 3  # input, update, output


def _prepare(q, k, v, beta, rk, rv, rbeta, version, initial_state, reset):
    check_version(version, VERSIONS)
    B, T, H, G, K, V = check_qkv(q, k, v, beta, beta_layout="[B, T, H, 3]", q_layout="[B, T, H, 3, K]",
                                 v_layout="[B, T, H, 3, V]")
    if G != GATES:
        raise ValueError(f"q: expected a gate axis of size 3 (input, update, output) in [B, T, H, 3, K], "
                         f"got shape {list(q.shape)}")
    check_recurrent_inputs(rk, rv, rbeta, (B, T, H, G), V, "[B, T, H, 3", q)
    reset = check_reset(reset, B, T, q.device)
    state = check_state_tuple(initial_state, (("W", "[B, H, 3, K, V]", (B, H, G, K, V)),
                                              ("R", "[B, H, 3, V, V]", (B, H, G, V, V)),
                                              ("y", "[B, H, V]", (B, H, V)),
                                              ("c", "[B, H, V]", (B, H, V))), q.device)
    dt = compute_dtype(q.dtype)
    if state is None:
        state = (q.new_zeros(B, H, G, K, V, dtype=dt), q.new_zeros(B, H, G, V, V, dtype=dt),
                 q.new_zeros(B, H, V, dtype=dt), q.new_zeros(B, H, V, dtype=dt))
    inputs = tuple(x.to(dt) for x in (q, k, v, beta, rk, rv, rbeta))
    return inputs, tuple(s.to(dt) for s in state), reset


def _cell(version: int, z: Tensor, rec: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Gates from ``z, rec [B, H, 3, V]`` (feed-forward and recurrent parts) and the old cell ``c``."""
    p = z + rec
    i, o = torch.sigmoid(p[:, :, 0]), torch.sigmoid(p[:, :, 2])
    u = p[:, :, 1] if version == 4 else torch.sigmoid(p[:, :, 1])
    c = i * u + (1 - i) * c
    if version == 1:
        y = torch.softmax(o * c, dim=-1)
    elif version == 3:
        y = o * c + z[:, :, 1]
    else:
        y = o * c
    return y, c


def _make_step(version: int):
    def step(xs, params, state):
        z, rk, rv, rbeta = xs  # [B, H, 3, V] x3, [B, H, 3]
        R, y, c = state
        R = recurrent_delta_update(R, rk, rv, rbeta)
        a = y if version == 1 else torch.softmax(y, dim=-1)
        y, c = _cell(version, z, read(R, a[:, :, None, :]), c)
        return y, (R, y, c)

    return step


_STEPS = {ver: _make_step(ver) for ver in VERSIONS}


@register("delta_lstm", "checkpointed", priority=10)
def delta_lstm_checkpointed(q, k, v, beta, rk, rv, rbeta, *, version=4, initial_state=None, reset=None,
                            output_final_state=False, chunk_size: int | None = None):
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y0, c0), reset = _prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    B, T, H, G, K = q.shape
    V = v.shape[-1]
    # The three feed-forward matrices are independent delta rules: fold the gate axis into the heads.
    z, W = delta_rule(q.reshape(B, T, H * G, K), k.reshape(B, T, H * G, K), v.reshape(B, T, H * G, V),
                      beta.reshape(B, T, H * G), initial_state=W0.reshape(B, H * G, K, V), reset=reset,
                      output_final_state=True)
    z = z.view(B, T, H, G, V)
    y, (R, y_last, c) = checkpointed_scan(_STEPS[version], (z, rk, rv, rbeta), (), (R0, y0, c0), reset, chunk_size)
    final = DeltaLSTMState(W.view(B, H, G, K, V), R, y_last, c) if output_final_state else None
    return y.to(in_dtype), final


@register("delta_lstm", "reference")
def delta_lstm_reference(q, k, v, beta, rk, rv, rbeta, *, version=4, initial_state=None, reset=None,
                         output_final_state=False):
    """Plain step loop, one gate at a time, in the paper's orientation (``W^g [V, K]``, ``R^g [V, V]``)."""
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y, c), reset = _prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    W = [W0[:, :, g].transpose(-1, -2) for g in range(GATES)]
    R = [R0[:, :, g].transpose(-1, -2) for g in range(GATES)]
    keep = keep_mask(reset, q.dtype)
    col = lambda x: x[..., :, None]  # noqa: E731
    row = lambda x: x[..., None, :]  # noqa: E731
    outs = []
    for t in range(q.shape[1]):
        if keep is not None:
            m = keep[:, t, None, None]
            W = [w * m[..., None] for w in W]
            R = [r * m[..., None] for r in R]
            y, c = y * m, c * m
        a = y if version == 1 else torch.softmax(y, dim=-1)
        pre, zs = [], []
        for g in range(GATES):
            kt, rkt = k[:, t, :, g], rk[:, t, :, g]
            W[g] = W[g] + beta[:, t, :, g, None, None] * (col(v[:, t, :, g]) - W[g] @ col(kt)) @ row(kt)
            R[g] = R[g] + rbeta[:, t, :, g, None, None] * (col(rv[:, t, :, g]) - R[g] @ col(rkt)) @ row(rkt)
            zs.append((W[g] @ col(q[:, t, :, g])).squeeze(-1))
            pre.append(zs[g] + (R[g] @ col(a)).squeeze(-1))
        i, o = torch.sigmoid(pre[0]), torch.sigmoid(pre[2])
        u = pre[1] if version == 4 else torch.sigmoid(pre[1])
        c = i * u + (1 - i) * c
        y = {1: torch.softmax(o * c, dim=-1), 2: o * c, 3: o * c + zs[1], 4: o * c}[version]
        outs.append(y)
    final = None
    if output_final_state:
        final = DeltaLSTMState(torch.stack([w.transpose(-1, -2) for w in W], dim=2),
                               torch.stack([r.transpose(-1, -2) for r in R], dim=2), y, c)
    return torch.stack(outs, dim=1).to(in_dtype), final


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
            or ``"reference"``; ``kwargs`` (``chunk_size``) go to it.
    Returns:
        ``(y [B, T, H, V] in q's dtype, DeltaLSTMState or None)``.
    """
    fn = resolve("delta_lstm", impl, q)
    return fn(q, k, v, beta, rk, rv, rbeta, version=version, initial_state=initial_state, reset=reset,
              output_final_state=output_final_state, **kwargs)
