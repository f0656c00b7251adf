"""The Recurrent Delta Net with the fused recurrent Triton kernel of :mod:`fastweights.ops.triton.recurrent`
(triton is imported on first use)."""

from __future__ import annotations

from ..common.checks import check_float_tensor
from ..common.delta import stack_recurrent
from ..common.scan import checkpoint_interval
from ..states import RecDeltaState
from ..triton import register_triton, supports_recurrent
from ..triton._support import check_runnable
from . import prepare


@register_triton("rec_delta", supports=supports_recurrent)
def rec_delta_triton(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, *, initial_state=None, reset=None,
                     output_final_state=False, checkpoint_every=None):
    """:func:`fastweights.ops.rec_delta` with Triton kernels (``checkpoint_every``: steps per stored state)."""
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta), params, (W0, y0), reset = prepare(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, initial_state,
                                                       reset)
    check_runnable("rec_delta", q)
    from ..triton.recurrent import rec_delta_recurrence

    y, W, y_last = rec_delta_recurrence(checkpoint_interval(checkpoint_every, q.shape[1]), reset, q, k, v, beta,
                                        stack_recurrent(*params), W0, y0)
    return y.to(in_dtype), (RecDeltaState(W, y_last) if output_final_state else None)
