"""Linear Transformer: fast weights with the sum (Hebbian) update rule (paper.md A.1)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from fastweights import ops

from .base import FeatureMapLayer


class LinearTransformer(FeatureMapLayer):
    """Linear Transformer layer (sum update rule): per head ``W_t = W_{t-1} + v_t k_t^T``, ``y_t = W_t q_t``.

    Slow net: bias-free Linear ``d_model -> H * 3d``, per head ``[q~ | k~ | v~]``; ``q, k = phi(q~), phi(k~)``
    with ``phi`` = ``feature_map``; ``v = v~``. No attention normalisation (denominator).

    Args: as :class:`~fastweights.layers.base.FeatureMapLayer`; ``feature_map`` defaults to ``"elu1"``,
    ``impl`` picks the implementation of :func:`fastweights.ops.sum_rule`. State: ``S [B, H, K, d]``.
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
        super().__init__(d_model, num_heads, head_dim, feature_map=feature_map, sum_norm_eps=sum_norm_eps,
                         output_scale=output_scale, dpfp_nu=dpfp_nu, favor_features=favor_features,
                         favor_redraw=favor_redraw, impl=impl)

    @staticmethod
    def pieces_per_head(head_dim: int) -> int:
        return 3 * head_dim  # q~, k~, v~

    def _fast(self, p: Tensor, state: Tensor | None, reset: Tensor | None) -> tuple[Tensor, Tensor]:
        q, k, v = self._heads(p).split(self.head_dim, dim=-1)
        self.feature_map.maybe_redraw()
        o, s = ops.sum_rule(self.feature_map(q), self.feature_map(k), v, initial_state=state, reset=reset,
                            output_final_state=True, impl=self.impl)
        return o, s
