"""Delta RNN: a Delta Net feed-forward part plus a fast recurrent matrix (paper.md A.5).

Per step (key-major ``W [K, V]``, ``R [V, V]``):

    W_t = W_{t-1} + beta_t  k_t  (v_t  - W_{t-1}^T k_t)^T          z_t = W_t^T q_t
    R_t = R_{t-1} + rbeta_t rk_t (rv_t - R_{t-1}^T rk_t)^T
    v2: y_t = z_t + R_t^T softmax(y_{t-1})      (y_0 = 0, so softmax(y_0) is uniform)
    v1: y_t = softmax(z_t + R_t^T y_{t-1})

The W part does not depend on y, so the default implementation runs it with the chunked delta rule and
only the (R, y) recursion step by step, through the memory-lean :func:`checkpointed_scan`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import (
    check_float_tensor,
    check_qkv,
    check_reset,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_state_tuple,
    check_unit_interval,
    compute_dtype,
    keep_mask,
)
from ._registry import register, resolve
from ._scan import checkpointed_scan
from .delta_rule import delta_rule
from .states import DeltaRNNState

VERSIONS = (1, 2)


def check_recurrent_inputs(rk, rv, rbeta, lead: tuple[int, ...], V: int, layout: str, ref: Tensor) -> None:
    """``rk, rv``: ``lead + (V,)``; ``rbeta``: ``lead`` (shared by Delta RNN and Delta LSTM)."""
    for name, t, shape in (("rk", rk, (*lead, V)), ("rv", rv, (*lead, V)), ("rbeta", rbeta, lead)):
        check_float_tensor(name, t)
        check_shape(name, t, layout + (", V]" if name != "rbeta" else "]"), shape)
    check_same_device("q", ref, rk=rk, rv=rv, rbeta=rbeta)
    check_same_dtype("q", ref, rk=rk, rv=rv, rbeta=rbeta)
    check_unit_interval("rbeta", rbeta)


def check_version(version: object, allowed: tuple[int, ...]) -> int:
    if version not in allowed or isinstance(version, bool):
        raise ValueError(f"version: expected one of {list(allowed)}, got {version!r}")
    return version  # type: ignore[return-value]


def _prepare(q, k, v, beta, rk, rv, rbeta, version, initial_state, reset):
    check_version(version, VERSIONS)
    B, T, H, K, V = check_qkv(q, k, v, beta)
    check_recurrent_inputs(rk, rv, rbeta, (B, T, H), V, "[B, T, H", q)
    reset = check_reset(reset, B, T, q.device)
    state = check_state_tuple(initial_state, (("W", "[B, H, K, V]", (B, H, K, V)),
                                              ("R", "[B, H, V, V]", (B, H, V, V)),
                                              ("y", "[B, H, V]", (B, H, V))), q.device)
    dt = compute_dtype(q.dtype)
    if state is None:
        state = (q.new_zeros(B, H, K, V, dtype=dt), q.new_zeros(B, H, V, V, dtype=dt), q.new_zeros(B, H, V, dtype=dt))
    inputs = tuple(x.to(dt) for x in (q, k, v, beta, rk, rv, rbeta))
    return inputs, tuple(s.to(dt) for s in state), reset


def recurrent_delta_update(R: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor) -> Tensor:
    """One delta write of key-major matrices ``R [..., K, V]`` with ``rk [..., K]``, ``rv [..., V]``,
    ``rbeta [...]``: ``R + rbeta rk (rv - R^T rk)^T``."""
    old = read(R, rk)
    return R + (rbeta[..., None] * rk)[..., :, None] * (rv - old)[..., None, :]


def read(M: Tensor, x: Tensor) -> Tensor:
    """``M^T x`` for key-major ``M [..., K, V]`` and ``x [..., K]``."""
    # a batched matmul: einsum lowers this contraction to a copy-heavy path that is ~10x slower on CPU
    return (x.unsqueeze(-2) @ M).squeeze(-2)


def _step_v2(xs, params, state):
    z, rk, rv, rbeta = xs
    R, y = state
    R = recurrent_delta_update(R, rk, rv, rbeta)
    y = z + read(R, torch.softmax(y, dim=-1))
    return y, (R, y)


def _step_v1(xs, params, state):
    z, rk, rv, rbeta = xs
    R, y = state
    R = recurrent_delta_update(R, rk, rv, rbeta)
    y = torch.softmax(z + read(R, y), dim=-1)
    return y, (R, y)


@register("delta_rnn", "checkpointed", priority=10)
def delta_rnn_checkpointed(q, k, v, beta, rk, rv, rbeta, *, version=2, initial_state=None, reset=None,
                           output_final_state=False, chunk_size: int | None = None):
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y0), reset = _prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    z, W = delta_rule(q, k, v, beta, initial_state=W0, reset=reset, output_final_state=True)
    step = _step_v2 if version == 2 else _step_v1
    y, (R, y_last) = checkpointed_scan(step, (z, rk, rv, rbeta), (), (R0, y0), reset, chunk_size)
    final = DeltaRNNState(W, R, y_last) if output_final_state else None
    return y.to(in_dtype), final


@register("delta_rnn", "reference")
def delta_rnn_reference(q, k, v, beta, rk, rv, rbeta, *, version=2, initial_state=None, reset=None,
                        output_final_state=False):
    """Plain step loop in the paper's orientation (``W [V, K]``, ``R [V, V]``, read ``W q``, ``R s``)."""
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y), reset = _prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    W, R = W0.transpose(-1, -2), R0.transpose(-1, -2)
    keep = keep_mask(reset, q.dtype)
    col = lambda x: x[..., :, None]  # noqa: E731
    row = lambda x: x[..., None, :]  # noqa: E731
    outs = []
    for t in range(q.shape[1]):
        if keep is not None:
            m = keep[:, t, None, None]
            W, R, y = W * m[..., None], R * m[..., None], y * m
        kt, rkt, bt, rbt = k[:, t], rk[:, t], beta[:, t, :, None, None], rbeta[:, t, :, None, None]
        W = W + bt * (col(v[:, t]) - W @ col(kt)) @ row(kt)
        R = R + rbt * (col(rv[:, t]) - R @ col(rkt)) @ row(rkt)
        z = (W @ col(q[:, t])).squeeze(-1)
        if version == 2:
            y = z + (R @ col(torch.softmax(y, dim=-1))).squeeze(-1)
        else:
            y = torch.softmax(z + (R @ col(y)).squeeze(-1), dim=-1)
        outs.append(y)
    final = DeltaRNNState(W.transpose(-1, -2), R.transpose(-1, -2), y) if output_final_state else None
    return torch.stack(outs, dim=1).to(in_dtype), final


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
            or ``"reference"``; ``kwargs`` (``chunk_size``) go to it.
    Returns:
        ``(y [B, T, H, V] in q's dtype, DeltaRNNState or None)``.
    """
    fn = resolve("delta_rnn", impl, q)
    return fn(q, k, v, beta, rk, rv, rbeta, version=version, initial_state=initial_state, reset=reset,
              output_final_state=output_final_state, **kwargs)
