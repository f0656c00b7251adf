"""The delta rule in chunkwise-parallel (UT/WY) form (:mod:`fastweights.ops.common.chunked`)."""

from __future__ import annotations

from ..common.chunked import linear_rule_chunked
from ..common.registry import register


@register("delta_rule", "chunked", priority=10)
def delta_rule_chunked(q, k, v, beta, *, initial_state=None, reset=None, output_final_state=False,
                       chunk_size: int | None = None):
    return linear_rule_chunked(q, k, v, beta, initial_state, reset, output_final_state, chunk_size)
