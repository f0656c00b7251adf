"""Sum (Hebbian) update rule — the Linear Transformer's fast weights (paper.md A.1).

``S_t = S_{t-1} + k_t v_t^T``; ``o_t = S_t^T q_t``. Key-major state ``S [B, H, K, V]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._chunked import chunked_linear_recurrence, prepare_linear_inputs, resolve_chunk_size
from ._common import check_float_tensor, keep_mask
from ._registry import register, resolve


@register("sum_rule", "chunked", priority=10)
def sum_rule_chunked(q, k, v, *, initial_state=None, reset=None, output_final_state=False,
                     chunk_size: int | None = None):
    in_dtype = check_float_tensor("q", q).dtype
    q, k, v, _, s0, reset = prepare_linear_inputs(q, k, v, None, initial_state, reset)
    chunk_size = resolve_chunk_size(chunk_size, q.shape[-1], delta=False)
    o, s = chunked_linear_recurrence(q, k, v, None, s0, reset, chunk_size)
    return o.to(in_dtype), (s if output_final_state else None)


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


def sum_rule(
    q: Tensor, k: Tensor, v: Tensor, *, initial_state: Tensor | None = None, reset: Tensor | None = None,
    output_final_state: bool = False, impl: str | None = None, **kwargs,
) -> tuple[Tensor, Tensor | None]:
    """Linear-Transformer fast weights: ``S_t = S_{t-1} + k_t v_t^T``, ``o_t = S_t^T q_t``.

    Args:
        q, k: ``[B, T, H, K]`` feature-mapped queries and keys. v: ``[B, T, H, V]``.
        initial_state: ``[B, H, K, V]`` or None (zeros); receives gradients.
        reset: bool ``[B, T]``; True at ``t`` zeroes the state before step ``t``.
        output_final_state: return the final state ``[B, H, K, V]`` (in float32/float64) instead of None.
        impl: ``"chunked"`` (default) or ``"reference"``; extra ``kwargs`` (e.g. ``chunk_size``) go to it.
    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state or None)``.
    """
    fn = resolve("sum_rule", impl, q)
    return fn(q, k, v, initial_state=initial_state, reset=reset, output_final_state=output_final_state, **kwargs)
