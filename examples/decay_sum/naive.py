"""The decayed sum rule as a plain step loop: the float64 oracle every other implementation is tested against."""

from __future__ import annotations

import torch

from fastweights.ops.common.checks import keep_mask
from fastweights.ops.common.registry import register

from . import prepare


@register("decay_sum", "reference")
def decay_sum_reference(q, k, v, g, *, initial_state=None, reset=None, output_final_state=False):
    in_dtype = q.dtype
    q, k, v, g, S, reset = prepare(q, k, v, g, initial_state, reset)
    keep = keep_mask(reset, q.dtype)
    outs = []
    for t in range(q.shape[1]):
        if keep is not None:
            S = S * keep[:, t, None, None, None]
        S = g[:, t, :, None, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append((q[:, t, :, None, :] @ S).squeeze(-2))
    return torch.stack(outs, dim=1).to(in_dtype), (S if output_final_state else None)
