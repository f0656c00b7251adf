"""The sum rule as a plain step loop: the float64 test oracle and the naive baseline."""

from __future__ import annotations

import torch

from ..common.checks import check_float_tensor, keep_mask
from ..common.chunked import prepare_linear_inputs
from ..common.registry import register


@register("sum_rule", "reference")
def sum_rule_reference(q, k, v, *, initial_state=None, reset=None, output_final_state=False):
    """Plain step-by-step loop in the paper's orientation (``W [V, K]``, read ``W q``): the test oracle."""
    in_dtype = check_float_tensor("q", q).dtype
    q, k, v, _, s0, reset = prepare_linear_inputs(q, k, v, None, initial_state, reset)
    B, T, H, K = q.shape
    W = q.new_zeros(B, H, v.shape[-1], K) if s0 is None else s0.transpose(-1, -2)
    keep = keep_mask(reset, q.dtype)
    outs = []
    for t in range(T):
        if keep is not None:
            W = W * keep[:, t, None, None, None]
        W = W + v[:, t, :, :, None] * k[:, t, :, None, :]
        outs.append((W @ q[:, t, :, :, None]).squeeze(-1))
    final = W.transpose(-1, -2) if output_final_state else None
    return torch.stack(outs, dim=1).to(in_dtype), final
