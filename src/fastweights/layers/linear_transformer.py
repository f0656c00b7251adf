"""Linear Transformer: fast weights with the sum (Hebbian) update rule (paper.md A.1)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from fastweights import ops

from .base import FastWeightLayer, FeatureMap, resolve_head_dim


class LinearTransformer(FastWeightLayer):
    """Linear Transformer layer (sum update rule): per head ``W_t = W_{t-1} + v_t k_t^T``, ``y_t = W_t q_t``.

    Slow net: bias-free Linear ``d_model -> H * 3d``, per head ``[q~ | k~ | v~]``; ``q, k = phi(q~), phi(k~)``
    with ``phi`` = ``feature_map``; ``v = v~``. No attention normalisation (denominator).

    Args:
        d_model: model width C. num_heads: H. head_dim: d (default ``d_model // num_heads``).
        feature_map: one of ``"elu1"``, ``"elu1_sum_norm"``, ``"softmax"``, ``"dpfp"``, ``"favor"``.
        sum_norm_eps: epsilon of the sum normalisation.
        output_scale: multiply the fast-net output by ``1/sqrt(d)``.
        dpfp_nu, favor_features, favor_redraw: parameters of the DPFP / FAVOR+ feature maps.
        impl: implementation of :func:`fastweights.ops.sum_rule` (None = default).

    State: ``S [B, H, K, d]`` (key-major; ``K`` = feature dimension), float32 (float64 for float64 layers).
    """

    op = "sum_rule"
    # the LM runs have no attention normalisation (denominator) and scale the output instead
    TASK_OPTIONS: ClassVar[dict[str, dict[str, Any]]] = {
        "lm": {"feature_map": "elu1", "output_scale": True},
        "rl": {"feature_map": "elu1_sum_norm", "sum_norm_eps": 1e-5},
    }

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *, feature_map: str = "elu1",
                 sum_norm_eps: float = 0.0, output_scale: bool = False, dpfp_nu: int = 2, favor_features: int = 16,
                 favor_redraw: bool = True, impl: str | None = None) -> None:
        _, h, hd = resolve_head_dim(d_model, num_heads, head_dim)
        super().__init__(d_model, num_heads, head_dim, slow_net_width=h * 3 * hd, output_scale=output_scale,
                         impl=impl)
        self.feature_map = FeatureMap(feature_map, self.head_dim, sum_norm_eps=sum_norm_eps, dpfp_nu=dpfp_nu,
                                      favor_features=favor_features, favor_redraw=favor_redraw)

    def _state_sizes(self) -> tuple[int, int, int]:
        return self.feature_map.out_dim, self.head_dim, 1  # the fast matrix is [K, d], K the feature size

    def _fast(self, p: Tensor, state: Tensor | None, reset: Tensor | None) -> tuple[Tensor, Tensor]:
        q, k, v = self._heads(p).split(self.head_dim, dim=-1)
        self.feature_map.maybe_redraw()
        o, s = ops.sum_rule(self.feature_map(q), self.feature_map(k), v, initial_state=state, reset=reset,
                            output_final_state=True, impl=self.impl)
        return o, s
