"""The Delta LSTM as a plain step loop, one gate at a time: the float64 test oracle and the naive baseline."""

from __future__ import annotations

import torch

from ..common.checks import check_float_tensor, keep_mask
from ..common.delta import col, row
from ..common.registry import register
from ..states import DeltaLSTMState
from . import GATES, prepare


@register("delta_lstm", "reference")
def delta_lstm_reference(q, k, v, beta, rk, rv, rbeta, *, version=4, initial_state=None, reset=None,
                         output_final_state=False):
    """Plain step loop, one gate at a time, in the paper's orientation (``W^g [V, K]``, ``R^g [V, V]``)."""
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y, c), reset = prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    W = [W0[:, :, g].transpose(-1, -2) for g in range(GATES)]
    R = [R0[:, :, g].transpose(-1, -2) for g in range(GATES)]
    keep = keep_mask(reset, q.dtype)
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
