"""Delta update rule — Delta Net's fast weights (paper.md A.0, A.2).

``S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T`` (the old value is read *before* the write),
``o_t = S_t^T q_t`` (the query reads the state *after* the write). Key-major ``S [B, H, K, V]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._chunked import chunked_linear_recurrence, prepare_linear_inputs, resolve_chunk_size
from ._common import check_float_tensor, keep_mask
from ._registry import register, resolve


@register("delta_rule", "chunked", priority=10)
def delta_rule_chunked(q, k, v, beta, *, initial_state=None, reset=None, output_final_state=False,
                       chunk_size: int | None = None):
    in_dtype = check_float_tensor("q", q).dtype
    q, k, v, beta, s0, reset = prepare_linear_inputs(q, k, v, beta, initial_state, reset)
    chunk_size = resolve_chunk_size(chunk_size, q.shape[-1], delta=True)
    o, s = chunked_linear_recurrence(q, k, v, beta, s0, reset, chunk_size)
    return o.to(in_dtype), (s if output_final_state else None)


@register("delta_rule", "reference")
def delta_rule_reference(q, k, v, beta, *, initial_state=None, reset=None, output_final_state=False):
    """Plain step loop in the paper's orientation: ``W_t = W_{t-1} (I - beta k k^T) + beta v k^T`` with
    ``W [V, K]``, ``o_t = W_t q_t``. The test oracle (run it in float64) and the naive baseline."""
    in_dtype = check_float_tensor("q", q).dtype
    q, k, v, beta, s0, reset = prepare_linear_inputs(q, k, v, beta, initial_state, reset)
    B, T, H, K = q.shape
    W = q.new_zeros(B, H, v.shape[-1], K) if s0 is None else s0.transpose(-1, -2)
    eye = torch.eye(K, dtype=q.dtype, device=q.device)
    keep = keep_mask(reset, q.dtype)
    outs = []
    for t in range(T):
        if keep is not None:
            W = W * keep[:, t, None, None, None]
        kt, bt = k[:, t, :, :, None], beta[:, t, :, None, None]  # [B, H, K, 1], [B, H, 1, 1]
        W = W @ (eye - bt * kt @ kt.transpose(-1, -2)) + bt * v[:, t, :, :, None] @ kt.transpose(-1, -2)
        outs.append((W @ q[:, t, :, :, None]).squeeze(-1))
    final = W.transpose(-1, -2) if output_final_state else None
    return torch.stack(outs, dim=1).to(in_dtype), final


def delta_rule(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, initial_state: Tensor | None = None,
    reset: Tensor | None = None, output_final_state: bool = False, impl: str | None = None, **kwargs,
) -> tuple[Tensor, Tensor | None]:
    """Delta-rule fast weights (Delta Net).

    Args:
        q, k: ``[B, T, H, K]`` feature-mapped queries and keys (keep keys sum-normalised for stability).
        v: ``[B, T, H, V]``. beta: ``[B, T, H]`` write strengths in [0, 1] (already through a sigmoid).
        initial_state: ``[B, H, K, V]`` or None (zeros); receives gradients.
        reset: bool ``[B, T]``; True at ``t`` zeroes the state before step ``t``.
        output_final_state: return the final state ``[B, H, K, V]`` (float32/float64) instead of None.
        impl: ``"chunked"`` (default) or ``"reference"``; extra ``kwargs`` (e.g. ``chunk_size``) go to it.
    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state or None)``.
    """
    fn = resolve("delta_rule", impl, q)
    return fn(q, k, v, beta, initial_state=initial_state, reset=reset, output_final_state=output_final_state,
              **kwargs)
