"""The delta rule as a plain step loop: the float64 test oracle and the naive baseline."""

from __future__ import annotations

import torch

from ..common.checks import check_float_tensor, keep_mask
from ..common.chunked import prepare_linear_inputs
from ..common.registry import register


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
