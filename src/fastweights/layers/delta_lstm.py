"""Delta LSTM: six fast matrices, a delta-rule feed-forward and recurrent matrix per gate (paper.md A.6)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from fastweights import ops

from .delta_rnn import RecurrentFastLayer

GATES = 3  # input i, update u, output o


class DeltaLSTM(RecurrentFastLayer):
    """Delta LSTM layer (fast LSTM with coupled input/forget gates, no peepholes).

    Slow net: bias-free Linear ``d_model -> H * (15d + 6)``; per head, in this order,
    ``[q~_i, k~_i, v~_i, rk~_i, rv~_i, q~_u, ..., rv~_u, q~_o, ..., rv~_o]`` (15 vectors of size d) followed by
    ``[b~_i, rb~_i, b~_u, rb~_u, b~_o, rb~_o]`` (6 scalars). Per gate g: ``q_g, k_g = phi(.)``, ``v_g`` linear,
    ``beta_g = sigmoid(b~_g)``, ``rk_g = softmax(rk~_g)``, ``rv_g`` linear, ``rbeta_g = sigmoid(rb~_g)``.
    The cell (see :func:`fastweights.ops.delta_lstm`), version 4 (paper's main model):
    ``i, o = sigmoid(z + R softmax(y_{t-1}))``, ``u = z^u + R^u softmax(y_{t-1})``,
    ``c_t = i u + (1 - i) c_{t-1}``, ``y_t = o c_t``. Versions 1-3 are the appendix ablations.

    Args:
        d_model: model width C. num_heads: H. head_dim: d (default ``d_model // num_heads``).
        version: 1, 2, 3 or 4 (default).
        feature_map: q/k map, ``"elu1_sum_norm"`` (default, every version), ``"elu1"`` or ``"softmax"``.
        sum_norm_eps: epsilon of the sum normalisation.
        output_scale: multiply the output by ``1/sqrt(d)``.
        impl: implementation of :func:`fastweights.ops.delta_lstm` (None = default).

    State: ``DeltaLSTMState(W [B, H, 3, d, d], R [B, H, 3, d, d], y [B, H, d], c [B, H, d])``.
    """

    op = "delta_lstm"
    GATES = GATES
    VERSIONS = (1, 2, 3, 4)
    TASK_OPTIONS: ClassVar[dict[str, dict[str, Any]]] = {
        "lm": {"output_scale": True}, "lm v1": {"output_scale": False}, "rl": {"sum_norm_eps": 1e-5},
    }

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *, version: int = 4,
                 feature_map: str = "elu1_sum_norm", sum_norm_eps: float = 0.0, output_scale: bool = False,
                 impl: str | None = None) -> None:
        super().__init__(d_model, num_heads, head_dim, version=version, feature_map=feature_map,
                         sum_norm_eps=sum_norm_eps, output_scale=output_scale, impl=impl)

    def _fast(self, p: Tensor, state: ops.DeltaLSTMState | None, reset: Tensor | None
              ) -> tuple[Tensor, ops.DeltaLSTMState]:
        d = self.head_dim
        p = self._heads(p)
        vecs = p[..., : 15 * d].unflatten(-1, (GATES, 5, d))  # [B, T, H, gate, piece, d]
        scalars = p[..., 15 * d:].unflatten(-1, (GATES, 2))  # [B, T, H, gate, (b, rb)]
        q, k, v, rk, rv = vecs.unbind(-2)  # each [B, T, H, 3, d]
        fmap = self.feature_map
        return ops.delta_lstm(fmap(q), fmap(k), v, torch.sigmoid(scalars[..., 0]), torch.softmax(rk, dim=-1), rv,
                              torch.sigmoid(scalars[..., 1]), version=self.version, initial_state=state,
                              reset=reset, output_final_state=True, impl=self.impl)
