"""Delta Net: fast weights with the delta update rule (paper.md A.2)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from fastweights import ops

from .base import FastWeightLayer, FeatureMap, resolve_head_dim


class DeltaNet(FastWeightLayer):
    """Delta Net layer: per head ``W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_t^T``, ``y_t = W_t q_t``.

    Slow net: bias-free Linear ``d_model -> H * (3d + 1)``, per head ``[q~ | k~ | v~ | b~]``;
    ``q, k = phi(q~), phi(k~)``, ``v = v~``, ``beta = sigmoid(b~)``.

    Args:
        d_model: model width C. num_heads: H. head_dim: d (default ``d_model // num_heads``).
        feature_map: ``"elu1_sum_norm"`` (default), ``"elu1"``, ``"softmax"``, ``"dpfp"`` or ``"favor"``.
        sum_norm_eps: epsilon of the sum normalisation.
        output_scale: multiply the fast-net output by ``1/sqrt(d)``.
        dpfp_nu, favor_features, favor_redraw: parameters of the DPFP / FAVOR+ feature maps.
        impl: implementation of :func:`fastweights.ops.delta_rule` (None = default).

    State: ``S [B, H, K, d]`` (key-major; ``K`` = feature dimension), float32 (float64 for float64 layers).
    """

    op = "delta_rule"
    TASK_OPTIONS: ClassVar[dict[str, dict[str, Any]]] = {"lm": {"output_scale": True}, "rl": {"sum_norm_eps": 1e-5}}

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *,
                 feature_map: str = "elu1_sum_norm", sum_norm_eps: float = 0.0, output_scale: bool = False,
                 dpfp_nu: int = 2, favor_features: int = 16, favor_redraw: bool = True,
                 impl: str | None = None) -> None:
        _, h, hd = resolve_head_dim(d_model, num_heads, head_dim)
        super().__init__(d_model, num_heads, head_dim, slow_net_width=h * (3 * hd + 1),
                         output_scale=output_scale, impl=impl)
        self.feature_map = FeatureMap(feature_map, self.head_dim, sum_norm_eps=sum_norm_eps, dpfp_nu=dpfp_nu,
                                      favor_features=favor_features, favor_redraw=favor_redraw)

    def _state_sizes(self) -> tuple[int, int, int]:
        return self.feature_map.out_dim, self.head_dim, 1  # the fast matrix is [K, d], K the feature size

    def _fast(self, p: Tensor, state: Tensor | None, reset: Tensor | None) -> tuple[Tensor, Tensor]:
        d = self.head_dim
        q, k, v, b = self._heads(p).split([d, d, d, 1], dim=-1)
        self.feature_map.maybe_redraw()
        return ops.delta_rule(self.feature_map(q), self.feature_map(k), v, torch.sigmoid(b.squeeze(-1)),
                              initial_state=state, reset=reset, output_final_state=True, impl=self.impl)
