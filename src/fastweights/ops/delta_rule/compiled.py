"""The delta rule as a fused recurrent CPU kernel (numba; :mod:`fastweights.ops.common.compiled_linear`)."""

from __future__ import annotations

from ..common import numba as nb
from ..common.compiled_linear import MAX_HEAD, linear_rule_compiled, supports_up_to
from ..common.registry import register


@register("delta_rule", "compiled", priority=20, supports=supports_up_to(MAX_HEAD["delta_rule"]),
          available=nb.numba_missing, devices=("cpu",))
def delta_rule_compiled(q, k, v, beta, *, initial_state=None, reset=None, output_final_state=False,
                        checkpoint_every: int | None = None):
    """:func:`fastweights.ops.delta_rule` step by step in one compiled loop (``checkpoint_every``: steps between
    the states kept for the backward, default ~sqrt(T))."""
    return linear_rule_compiled("delta_rule", q, k, v, beta, initial_state, reset, output_final_state,
                                checkpoint_every)
