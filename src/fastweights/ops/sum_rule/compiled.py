"""The sum rule as a fused recurrent CPU kernel (numba; :mod:`fastweights.ops.common.compiled_linear`)."""

from __future__ import annotations

from ..common import numba as nb
from ..common.compiled_linear import linear_rule_compiled, supports_compiled
from ..common.registry import register


@register("sum_rule", "compiled", priority=20, supports=supports_compiled, available=nb.numba_missing,
          devices=("cpu",))
def sum_rule_compiled(q, k, v, *, initial_state=None, reset=None, output_final_state=False,
                      checkpoint_every: int | None = None):
    """:func:`fastweights.ops.sum_rule` step by step in one compiled loop (``checkpoint_every``: steps between
    the states kept for the backward, default ~sqrt(T))."""
    return linear_rule_compiled("sum_rule", q, k, v, None, initial_state, reset, output_final_state,
                                checkpoint_every)
