"""Delta MLP: a deep feed-forward fast net whose every matrix follows the delta rule (paper.md A.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastweights import ops
from fastweights.ops import feature_maps as fm
from fastweights.ops.common.checks import activated_arguments

from .base import FastWeightLayer, check_nonnegative_float, check_positive_int, resolve_head_dim


class DeltaMLP(FastWeightLayer):
    """Delta MLP layer: per head a residual MLP of ``L = fast_net_depth`` fast layers, each two delta-rule
    matrices ``A_l [d -> f]`` and ``B_l [f -> d]`` (see :func:`fastweights.ops.delta_mlp`).

    Slow net: bias-free Linear ``d_model -> P``, ``P = H d + H 4L (d + f) + H 2L``, laid out in blocks
    ``[q~ (H x d) | kv (H x 4L(d+f)) | b~ (H x 2L)]``. Per head the kv piece is halved into a key block and a value
    block (``2L(d+f)`` each); the key block is cut into ``4L`` pieces of sizes ``d, f, d, f, ...``, the value block
    into ``f, d, f, d, ...``; fast layer ``l`` uses pieces ``2l`` and ``2l + 1`` of each. As in the paper's code,
    the pieces with index ``>= 2L`` are never used: half of the kv projection is dead weight, kept so parameter
    counts (and checkpoints) match; it is not computed in the forward pass (its gradient is zero).
    Per fast layer: keys ``sn_eps(elu1(.))``, raw values, ``beta = sigmoid(.)``; input ``h_0 = q~`` (raw);
    ``h_{l+1} = h_l + B_l sn_eps(elu1(A_l sn_eps(elu1(LN_l(h_l)))))`` with one slow LayerNorm ``LN_l`` over d per
    fast layer. The paper applies no output scale.

    Args:
        d_model: model width C. num_heads: H. head_dim: d (default ``d_model // num_heads``).
        fast_net_depth: L (default 1). fast_ff_dim: f (default ``4 * d_model // num_heads``, paper.md A.3).
        sum_norm_eps: epsilon of every sum normalisation (1e-5, as in the paper).
        output_scale: multiply the output by ``1/sqrt(d)`` (off in the paper). impl: op implementation.

    State: tuple of 2L matrices ``(A_0 [B, H, d, f], B_0 [B, H, f, d], A_1, B_1, ...)``.
    """

    op = "delta_mlp"

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *, fast_net_depth: int = 1,
                 fast_ff_dim: int | None = None, sum_norm_eps: float = 1e-5, output_scale: bool = False,
                 impl: str | None = None) -> None:
        dm, h, d = resolve_head_dim(d_model, num_heads, head_dim)
        L = check_positive_int("fast_net_depth", fast_net_depth)
        f = check_positive_int("fast_ff_dim", max(1, 4 * dm // h) if fast_ff_dim is None else fast_ff_dim)
        width = h * d + h * 4 * L * (d + f) + h * 2 * L
        super().__init__(d_model, num_heads, head_dim, slow_net_width=width, output_scale=output_scale, impl=impl)
        self.fast_net_depth, self.fast_ff_dim = L, f
        self.sum_norm_eps = check_nonnegative_float("sum_norm_eps", sum_norm_eps)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(L))
        # Rows of slow_net.weight that are actually used: q~, the first half of every head's key and value
        # blocks, and b~. Precomputed once so the dead half costs neither FLOPs nor activations.
        half = L * (d + f)  # used part of one key (or value) block
        kv0 = h * d
        rows = [torch.arange(kv0)]
        for head in range(h):
            start = kv0 + head * 4 * half
            rows += [torch.arange(start, start + half), torch.arange(start + 2 * half, start + 3 * half)]
        rows.append(torch.arange(kv0 + h * 4 * half, width))
        self.register_buffer("_used_rows", torch.cat(rows), persistent=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fast_net_depth={self.fast_net_depth}, fast_ff_dim={self.fast_ff_dim}"

    def _state_sizes(self) -> tuple[int, int, int]:
        return self.head_dim, self.fast_ff_dim, self.fast_net_depth  # A_l [d, f], B_l [f, d]

    def _forward(self, x: Tensor, state: tuple[Tensor, ...] | None, reset: Tensor | None
                 ) -> tuple[Tensor, tuple[Tensor, ...]]:
        B, T, _ = x.shape
        H, d, f, L, eps = self.num_heads, self.head_dim, self.fast_ff_dim, self.fast_net_depth, self.sum_norm_eps
        p = F.linear(x, self.slow_net.weight.index_select(0, self._used_rows))
        half = L * (d + f)
        q, kv, b = p.split([H * d, H * 2 * half, H * 2 * L], dim=-1)
        q = q.view(B, T, H, d)
        key_block, value_block = kv.view(B, T, H, 2 * half).split(half, dim=-1)
        key_pieces = key_block.split([d, f] * L, dim=-1)
        value_pieces = value_block.split([f, d] * L, dim=-1)
        betas = torch.sigmoid(b.view(B, T, H, 2 * L)).unbind(-1)
        keys = [fm.elu_sum_norm(k, eps) for k in key_pieces]
        with activated_arguments():  # the betas come from a sigmoid: no value check
            o, final = ops.delta_mlp(q, keys, list(value_pieces), list(betas), norms=list(self.norms), eps=eps,
                                     initial_state=state, reset=reset, output_final_state=True, impl=self.impl)
        if self.output_scale:
            o = o * (d ** -0.5)
        return self.out_proj(o.reshape(B, T, H * d)), final
