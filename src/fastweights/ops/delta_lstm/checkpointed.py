"""The Delta LSTM in pure PyTorch: the chunked delta rule for the three W^g, the (R, y, c) recursion through the
memory-lean :func:`~fastweights.ops.common.scan.checkpointed_scan`."""

from __future__ import annotations

import torch
from torch import Tensor

from ..common.checks import check_float_tensor
from ..common.delta import feed_forward, read, recurrent_delta_update
from ..common.registry import register
from ..common.scan import checkpointed_scan
from ..states import DeltaLSTMState
from . import VERSIONS, prepare


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
                            output_final_state=False, checkpoint_every: int | None = None):
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y0, c0), reset = prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    z, W = feed_forward(q, k, v, beta, W0, reset, impl="chunked")  # pure PyTorch throughout
    y, (R, y_last, c) = checkpointed_scan(_STEPS[version], (z, rk, rv, rbeta), (), (R0, y0, c0), reset,
                                          checkpoint_every)
    final = DeltaLSTMState(W, R, y_last, c) if output_final_state else None
    return y.to(in_dtype), final
