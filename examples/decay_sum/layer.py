"""A layer on the decayed sum rule: what makes the recurrence of ``decay_sum`` a model in every task.

``--model decay_sum.layer:DecaySumNet`` (with ``examples/`` on the Python path) trains it in code execution, ListOps,
language modelling or RL, with no edit of fastweights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastweights.layers.base import FeatureMapLayer

from . import decay_sum


class DecaySumNet(FeatureMapLayer):
    """Per head ``S_t = g_t S_{t-1} + phi(k_t) v_t^T``, ``y_t = S_t^T phi(q_t)``, the gate ``g_t = sigmoid(g~_t)``.

    Slow net: bias-free Linear ``d_model -> H * (3d + 1)``, per head ``[q~ | k~ | v~ | g~]``. State: ``S [B, H, K, d]``.
    """

    op = "decay_sum"

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *, feature_map: str = "elu1",
                 output_scale: bool = False, impl: str | None = None) -> None:
        super().__init__(d_model, num_heads, head_dim, feature_map=feature_map, sum_norm_eps=0.0,
                         output_scale=output_scale, dpfp_nu=2, favor_features=16, favor_redraw=True, impl=impl)

    @staticmethod
    def pieces_per_head(head_dim: int) -> int:
        return 3 * head_dim + 1  # q~, k~, v~, g~

    def _fast(self, p: Tensor, state: Tensor | None, reset: Tensor | None) -> tuple[Tensor, Tensor]:
        q, k, v, g = self._heads(p).split([self.head_dim] * 3 + [1], dim=-1)
        return decay_sum(self.feature_map(q), self.feature_map(k), v, torch.sigmoid(g[..., 0]), initial_state=state,
                         reset=reset, output_final_state=True, impl=self.impl)
