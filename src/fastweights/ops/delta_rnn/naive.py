"""The Delta RNN as a plain step loop: the float64 test oracle and the naive baseline."""

from __future__ import annotations

import torch

from ..common.checks import check_float_tensor, keep_mask
from ..common.delta import col, row
from ..common.registry import register
from ..states import DeltaRNNState
from . import prepare


@register("delta_rnn", "reference")
def delta_rnn_reference(q, k, v, beta, rk, rv, rbeta, *, version=2, initial_state=None, reset=None,
                        output_final_state=False):
    """Plain step loop in the paper's orientation (``W [V, K]``, ``R [V, V]``, read ``W q``, ``R s``)."""
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y), reset = prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    W, R = W0.transpose(-1, -2), R0.transpose(-1, -2)
    keep = keep_mask(reset, q.dtype)
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

