"""The Recurrent Delta Net in pure PyTorch, through the memory-lean
:func:`~fastweights.ops.common.scan.checkpointed_scan`."""

from __future__ import annotations

import torch

from ..common.checks import check_float_tensor
from ..common.delta import read, recurrent_delta_update, stack_recurrent
from ..common.registry import register
from ..common.scan import checkpointed_scan
from ..states import RecDeltaState
from . import prepare


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
                           output_final_state=False, checkpoint_every: int | None = None):
    in_dtype = check_float_tensor("q", q).dtype
    xs, params, state, reset = prepare(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, initial_state, reset)
    y, (W, y_last) = checkpointed_scan(_step, xs, (stack_recurrent(*params),), state, reset, checkpoint_every)
    return y.to(in_dtype), (RecDeltaState(W, y_last) if output_final_state else None)
