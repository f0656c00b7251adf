"""The Recurrent Delta Net as a plain step loop: the float64 test oracle and the naive baseline."""

from __future__ import annotations

import torch

from ..common.checks import check_float_tensor, keep_mask
from ..common.registry import register
from ..states import RecDeltaState
from . import prepare


@register("rec_delta", "reference")
def rec_delta_reference(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, *, initial_state=None, reset=None,
                        output_final_state=False):
    """Plain step loop in the paper's orientation (``W [D, D]`` value-major, read ``W q``)."""
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta), (Rq, Rk, Rv, rb), (W0, y), reset = prepare(
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
