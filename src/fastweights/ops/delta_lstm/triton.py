"""The Delta LSTM with Triton kernels: the chunked delta-rule kernels for the three W^g, the fused recurrent kernel
of :mod:`fastweights.ops.triton.recurrent` for (R, y, c) (triton is imported on first use)."""

from __future__ import annotations

from ..common.checks import check_float_tensor
from ..common.delta import feed_forward
from ..common.scan import checkpoint_interval
from ..states import DeltaLSTMState
from ..triton import register_triton, supports_recurrent
from ..triton._support import check_runnable
from . import prepare


@register_triton("delta_lstm", supports=supports_recurrent)
def delta_lstm_triton(q, k, v, beta, rk, rv, rbeta, *, version=4, initial_state=None, reset=None,
                      output_final_state=False, checkpoint_every=None):
    """:func:`fastweights.ops.delta_lstm` with Triton kernels (``checkpoint_every``: steps per stored state)."""
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y0, c0), reset = prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    check_runnable("delta_lstm", q)
    from ..triton.recurrent import delta_lstm_recurrence

    z, W = feed_forward(q, k, v, beta, W0, reset, impl="triton")
    y, R, y_last, c = delta_lstm_recurrence(version, checkpoint_interval(checkpoint_every, q.shape[1]), reset, z, rk,
                                            rv, rbeta, R0, y0, c0)
    return y.to(in_dtype), (DeltaLSTMState(W, R, y_last, c) if output_final_state else None)
