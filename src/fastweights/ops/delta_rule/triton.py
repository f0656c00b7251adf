"""The delta rule with the chunkwise Triton kernels (:mod:`fastweights.ops.triton.chunked`; triton is imported on
first use)."""

from __future__ import annotations

from ..triton import linear_rule_triton, register_triton, supports_linear


@register_triton("delta_rule", supports=supports_linear)
def delta_rule_triton(q, k, v, beta, *, initial_state=None, reset=None, output_final_state=False, chunk_size=None):
    """:func:`fastweights.ops.delta_rule` with Triton kernels (``chunk_size``: power of two in [16, 128])."""
    return linear_rule_triton("delta_rule", q, k, v, beta, initial_state, reset, output_final_state, chunk_size)
