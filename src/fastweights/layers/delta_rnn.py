"""Delta RNN: a Delta Net feed-forward part plus a fast recurrent matrix (paper.md A.5)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from fastweights import ops

from .base import FastWeightLayer, FeatureMap, check_choice, resolve_head_dim

# q/k feature maps that keep K = d (the recurrent part needs no other choice).
RECURRENT_FEATURE_MAPS = ("elu1_sum_norm", "elu1", "softmax")


class RecurrentFastLayer(FastWeightLayer):
    """The fast RNN and the fast LSTM: per gate a delta-rule feed-forward matrix and a delta-rule recurrent matrix,
    driven by ``[q~, k~, v~, rk~, rv~]`` (size d each) and ``[b~, rb~]`` (scalars) per head and gate; a cell
    ``version`` of ``VERSIONS``; one q/k feature map of :data:`RECURRENT_FEATURE_MAPS`."""

    GATES: ClassVar[int]
    VERSIONS: ClassVar[tuple[int, ...]]

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None, *, version: int, feature_map: str,
                 sum_norm_eps: float, output_scale: bool, impl: str | None) -> None:
        _, h, hd = resolve_head_dim(d_model, num_heads, head_dim)
        version = check_choice("version", version, self.VERSIONS)
        super().__init__(d_model, num_heads, head_dim, slow_net_width=h * self.GATES * (5 * hd + 2),
                         output_scale=output_scale, impl=impl)
        self.version = version
        self.feature_map = FeatureMap(feature_map, self.head_dim, sum_norm_eps=sum_norm_eps,
                                      allowed=RECURRENT_FEATURE_MAPS)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, version={self.version}"


class DeltaRNN(RecurrentFastLayer):
    """Delta RNN layer (fast RNN).

    Slow net: bias-free Linear ``d_model -> H * (5d + 2)``, per head ``[q~ | k~ | v~ | rk~ | rv~ | b~ | rb~]``
    (sizes d, d, d, d, d, 1, 1). ``q, k = phi(q~), phi(k~)``; ``v = v~``; ``beta = sigmoid(b~)``; recurrent key
    ``rk = softmax(rk~)``, ``rv = rv~``, ``rbeta = sigmoid(rb~)``. Per step (see :func:`fastweights.ops.delta_rnn`)
    ``z_t = W_t q_t`` (delta rule) and the fast recurrent matrix ``R_t`` (delta rule on rk, rv, rbeta):

    * version 2 (paper's main model): ``y_t = z_t + R_t softmax(y_{t-1})`` (linear output);
    * version 1 (appendix ablation): ``y_t = softmax(z_t + R_t y_{t-1})``.

    Args:
        d_model: model width C. num_heads: H. head_dim: d (default ``d_model // num_heads``).
        version: 2 (default) or 1.
        feature_map: q/k map, ``"elu1_sum_norm"``, ``"elu1"`` or ``"softmax"``; None = ``"elu1_sum_norm"``
            for version 2 and ``"softmax"`` for version 1 (paper.md A.5).
        sum_norm_eps: epsilon of the sum normalisation. output_scale: multiply the output by ``1/sqrt(d)``.
        impl: implementation of :func:`fastweights.ops.delta_rnn` (None = default).

    State: ``DeltaRNNState(W [B, H, d, d], R [B, H, d, d], y [B, H, d])``.
    """

    op = "delta_rnn"
    GATES = 1
    VERSIONS = (1, 2)
    TASK_OPTIONS: ClassVar[dict[str, dict[str, Any]]] = {
        "lm": {"output_scale": True}, "lm v1": {"output_scale": False}, "rl": {"feature_map": "softmax"},
    }

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *, version: int = 2,
                 feature_map: str | None = None, sum_norm_eps: float = 0.0, output_scale: bool = False,
                 impl: str | None = None) -> None:
        if feature_map is None:
            feature_map = "softmax" if version == 1 else "elu1_sum_norm"
        super().__init__(d_model, num_heads, head_dim, version=version, feature_map=feature_map,
                         sum_norm_eps=sum_norm_eps, output_scale=output_scale, impl=impl)

    def _fast(self, p: Tensor, state: ops.DeltaRNNState | None, reset: Tensor | None
              ) -> tuple[Tensor, ops.DeltaRNNState]:
        d = self.head_dim
        q, k, v, rk, rv, b, rb = self._heads(p).split([d, d, d, d, d, 1, 1], dim=-1)
        fmap = self.feature_map
        return ops.delta_rnn(fmap(q), fmap(k), v, torch.sigmoid(b.squeeze(-1)), torch.softmax(rk, dim=-1), rv,
                             torch.sigmoid(rb.squeeze(-1)), version=self.version, initial_state=state,
                             reset=reset, output_final_state=True, impl=self.impl)
