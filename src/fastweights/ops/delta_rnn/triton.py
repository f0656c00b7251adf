"""The Delta RNN with Triton kernels: the chunked delta-rule kernels for W, the fused recurrent kernel of
:mod:`fastweights.ops.triton.recurrent` for (R, y) (triton is imported on first use)."""

from __future__ import annotations

from ..common.checks import check_float_tensor
from ..common.delta import feed_forward
from ..common.scan import checkpoint_interval
from ..states import DeltaRNNState
from ..triton import register_triton, supports_recurrent
from ..triton._support import check_runnable
from . import prepare


@register_triton("delta_rnn", supports=supports_recurrent)
def delta_rnn_triton(q, k, v, beta, rk, rv, rbeta, *, version=2, initial_state=None, reset=None,
                     output_final_state=False, checkpoint_every=None):
    """:func:`fastweights.ops.delta_rnn` with Triton kernels (``checkpoint_every``: steps per stored state)."""
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y0), reset = prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    check_runnable("delta_rnn", q)
    from ..triton.recurrent import delta_rnn_recurrence

    z, W = feed_forward(q, k, v, beta, W0, reset, impl="triton")
    y, R, y_last = delta_rnn_recurrence(version == 2, checkpoint_interval(checkpoint_every, q.shape[1]), reset, z,
                                        rk, rv, rbeta, R0, y0)
    return y.to(in_dtype), (DeltaRNNState(W, R, y_last) if output_final_state else None)
