"""The sum rule with the chunkwise Triton kernels (:mod:`fastweights.ops.triton.chunked`; triton is imported on
first use)."""

from __future__ import annotations

from ..triton import linear_rule_triton, register_triton, supports_linear


@register_triton("sum_rule", supports=supports_linear)
def sum_rule_triton(q, k, v, *, initial_state=None, reset=None, output_final_state=False, chunk_size=None):
    """:func:`fastweights.ops.sum_rule` with Triton kernels (``chunk_size``: power of two in [16, 128])."""
    return linear_rule_triton("sum_rule", q, k, v, None, initial_state, reset, output_final_state, chunk_size)
