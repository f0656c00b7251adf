"""Delta Net: fast weights with the delta update rule (paper.md A.2)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from fastweights import ops

from .base import FeatureMapLayer


class DeltaNet(FeatureMapLayer):
    """Delta Net layer: per head ``W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_t^T``, ``y_t = W_t q_t``.

    Slow net: bias-free Linear ``d_model -> H * (3d + 1)``, per head ``[q~ | k~ | v~ | b~]``;
    ``q, k = phi(q~), phi(k~)``, ``v = v~``, ``beta = sigmoid(b~)``.

    Args: as :class:`~fastweights.layers.base.FeatureMapLayer`; ``feature_map`` defaults to ``"elu1_sum_norm"``,
    ``impl`` picks the implementation of :func:`fastweights.ops.delta_rule`. State: ``S [B, H, K, d]``.
    """

    op = "delta_rule"
    TASK_OPTIONS: ClassVar[dict[str, dict[str, Any]]] = {"lm": {"output_scale": True}, "rl": {"sum_norm_eps": 1e-5}}

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *,
                 feature_map: str = "elu1_sum_norm", sum_norm_eps: float = 0.0, output_scale: bool = False,
                 dpfp_nu: int = 2, favor_features: int = 16, favor_redraw: bool = True,
                 impl: str | None = None) -> None:
        super().__init__(d_model, num_heads, head_dim, feature_map=feature_map, sum_norm_eps=sum_norm_eps,
                         output_scale=output_scale, dpfp_nu=dpfp_nu, favor_features=favor_features,
                         favor_redraw=favor_redraw, impl=impl)

    @staticmethod
    def pieces_per_head(head_dim: int) -> int:
        return 3 * head_dim + 1  # q~, k~, v~ and the scalar b~

    def _fast(self, p: Tensor, state: Tensor | None, reset: Tensor | None) -> tuple[Tensor, Tensor]:
        d = self.head_dim
        q, k, v, b = self._heads(p).split([d, d, d, 1], dim=-1)
        self.feature_map.maybe_redraw()
        return ops.delta_rule(self.feature_map(q), self.feature_map(k), v, torch.sigmoid(b.squeeze(-1)),
                              initial_state=state, reset=reset, output_final_state=True, impl=self.impl)
