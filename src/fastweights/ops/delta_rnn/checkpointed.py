"""The Delta RNN in pure PyTorch: the chunked delta rule for W, the (R, y) recursion through the memory-lean
:func:`~fastweights.ops.common.scan.checkpointed_scan`."""

from __future__ import annotations

import torch

from ..common.checks import check_float_tensor
from ..common.delta import feed_forward, read, recurrent_delta_update
from ..common.registry import register
from ..common.scan import checkpointed_scan
from ..states import DeltaRNNState
from . import prepare


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
                           output_final_state=False, checkpoint_every: int | None = None):
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y0), reset = prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    z, W = feed_forward(q, k, v, beta, W0, reset, impl="chunked")  # pure PyTorch throughout
    step = _step_v2 if version == 2 else _step_v1
    y, (R, y_last) = checkpointed_scan(step, (z, rk, rv, rbeta), (), (R0, y0), reset, checkpoint_every)
    final = DeltaRNNState(W, R, y_last) if output_final_state else None
    return y.to(in_dtype), final
