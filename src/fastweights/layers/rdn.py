"""Recurrent Delta Net (RDN): the slow net also reads the previous fast-net output (paper.md A.7)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fastweights import ops

from .base import FastWeightLayer, resolve_head_dim


class RecurrentDeltaNet(FastWeightLayer):
    """Recurrent Delta Net layer.

    Slow feed-forward net: bias-free Linear ``d_model -> H * (3d + 1)``, per head ``[q~ | k~ | v~ | b~]``, passed
    to the op raw (no activation). Slow recurrent weights per head ``rec_q, rec_k, rec_v [H, d, d]`` and
    ``rec_beta [H, d]``, initialised N(0, std = 1/sqrt(d)). Per step, with ``a = tanh(y_{t-1})``:
    ``q = softmax(q~ + R_q a)``, ``k = softmax(k~ + R_k a)``, ``v = v~ + R_v a``, ``beta = sigmoid(b~ + r_beta . a)``,
    then the delta rule and ``y_t = W_t q_t`` (see :func:`fastweights.ops.rec_delta`).

    Args:
        d_model: model width C. num_heads: H. head_dim: d (default ``d_model // num_heads``).
        output_scale: multiply the output by ``1/sqrt(d)``. impl: implementation of the op.

    State: ``RecDeltaState(W [B, H, d, d], y [B, H, d])``.
    """

    op = "rec_delta"
    TASK_OPTIONS: ClassVar[dict[str, dict[str, Any]]] = {"lm": {"output_scale": True}}

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *, output_scale: bool = False,
                 impl: str | None = None) -> None:
        _, h, hd = resolve_head_dim(d_model, num_heads, head_dim)
        super().__init__(d_model, num_heads, head_dim, slow_net_width=h * (3 * hd + 1),
                         output_scale=output_scale, impl=impl)
        self.rec_q = nn.Parameter(torch.empty(h, hd, hd))
        self.rec_k = nn.Parameter(torch.empty(h, hd, hd))
        self.rec_v = nn.Parameter(torch.empty(h, hd, hd))
        self.rec_beta = nn.Parameter(torch.empty(h, hd))
        self.reset_rec_parameters()

    def reset_rec_parameters(self) -> None:
        """Re-draw the recurrent weights from N(0, 1/sqrt(d)) (the paper's init, kept by its LM initialiser)."""
        std = 1.0 / math.sqrt(self.head_dim)
        for p in (self.rec_q, self.rec_k, self.rec_v, self.rec_beta):
            nn.init.normal_(p, mean=0.0, std=std)

    def _fast(self, p: Tensor, state: ops.RecDeltaState | None, reset: Tensor | None
              ) -> tuple[Tensor, ops.RecDeltaState]:
        d = self.head_dim
        q, k, v, b = self._heads(p).split([d, d, d, 1], dim=-1)
        return ops.rec_delta(q, k, v, b.squeeze(-1), self.rec_q, self.rec_k, self.rec_v, self.rec_beta,
                             initial_state=state, reset=reset, output_final_state=True, impl=self.impl)
