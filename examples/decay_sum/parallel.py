"""The decayed sum rule in parallel (attention-like) form: every step at once, ``O(T^2)`` per batch and head.

With ``a_t = g_t (1 - reset_t)`` and ``D[t, s] = a_{s+1} ... a_t`` (1 on the diagonal, 0 above it),

    o_t = sum_{s <= t} D[t, s] (q_t . k_s) v_s + (a_1 ... a_t) S_0^T q_t,
    S_T = sum_s D[T, s] k_s v_s^T + (a_1 ... a_T) S_0.

``D`` is a cumulative product down the columns of a matrix holding ``a_t`` below the diagonal and 1 elsewhere
(no logarithms, so a reset's zero is exact); autograd gives the backward.
"""

from __future__ import annotations

import torch

from fastweights.ops.common.registry import register

from . import prepare


@register("decay_sum", "parallel", priority=10)
def decay_sum_parallel(q, k, v, g, *, initial_state=None, reset=None, output_final_state=False):
    in_dtype = q.dtype
    q, k, v, g, S0, reset = prepare(q, k, v, g, initial_state, reset)
    T = q.shape[1]
    a = g if reset is None else g * (~reset).to(g.dtype)[..., None]  # [B, T, H]
    a = a.transpose(1, 2)  # [B, H, T]
    below = torch.ones(T, T, dtype=torch.bool, device=q.device).tril(-1)  # t > s
    D = torch.where(below, a[..., :, None], torch.ones_like(a)[..., :, None]).cumprod(dim=-2)  # [B, H, T, T]
    D = D * torch.ones(T, T, dtype=q.dtype, device=q.device).tril()
    P = a.cumprod(dim=-1)  # [B, H, T]: a_1 ... a_t
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, *]
    o = (D * (qh @ kh.transpose(-1, -2))) @ vh + P[..., None] * (qh @ S0)
    final = None
    if output_final_state:
        final = (D[..., -1, :, None] * kh).transpose(-1, -2) @ vh + P[..., -1, None, None] * S0
    return o.transpose(1, 2).to(in_dtype), final
