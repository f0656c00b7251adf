"""Delta Delta Net: a Delta Net whose fast net is itself a Delta Net (paper.md A.4)."""

from __future__ import annotations

import torch
from torch import Tensor

from fastweights import ops
from fastweights.ops import feature_maps as fm

from .base import FastWeightLayer, check_nonnegative_float, resolve_head_dim


class DeltaDeltaNet(FastWeightLayer):
    """Delta Delta Net layer.

    Slow net: bias-free Linear ``d_model -> H * (5d + 2)``, per head ``[q~ (d) | k~ (d) | v~ (3d+1) | b~ (1)]``.
    Level 1: ``q, k = sn_eps(elu1(q~, k~))``, ``beta = sigmoid(b~)``; the fast programmer ``M_t`` (delta rule,
    value ``v~``) outputs ``g_t = M_t q_t``, split into ``[q' | k' | v' | b']``, which drive the level-2 Delta
    Net ``W_t`` (``sn_eps(elu1)`` on q', k', sigmoid on b'); output ``y_t = W_t q''`` (see
    :func:`fastweights.ops.delta_delta`). The paper applies no output scale.

    Args:
        d_model: model width C. num_heads: H. head_dim: d (default ``d_model // num_heads``).
        sum_norm_eps: epsilon of the sum normalisations of both levels (1e-5, as in the paper).
        output_scale: multiply the output by ``1/sqrt(d)`` (off in the paper). impl: op implementation.

    State: ``DeltaDeltaState(M [B, H, d, 3d+1], W [B, H, d, d])``.
    """

    op = "delta_delta"

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *, sum_norm_eps: float = 1e-5,
                 output_scale: bool = False, impl: str | None = None) -> None:
        _, h, hd = resolve_head_dim(d_model, num_heads, head_dim)
        super().__init__(d_model, num_heads, head_dim, slow_net_width=h * (5 * hd + 2),
                         output_scale=output_scale, impl=impl)
        self.sum_norm_eps = check_nonnegative_float("sum_norm_eps", sum_norm_eps)

    def _fast(self, p: Tensor, state: ops.DeltaDeltaState | None, reset: Tensor | None
              ) -> tuple[Tensor, ops.DeltaDeltaState]:
        d, eps = self.head_dim, self.sum_norm_eps
        q, k, v, b = self._heads(p).split([d, d, 3 * d + 1, 1], dim=-1)
        return ops.delta_delta(fm.elu_sum_norm(q, eps), fm.elu_sum_norm(k, eps), v, torch.sigmoid(b.squeeze(-1)),
                               eps=eps, initial_state=state, reset=reset, output_final_state=True, impl=self.impl)
