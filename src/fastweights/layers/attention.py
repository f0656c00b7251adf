"""Causal multi-head softmax attention, the Transformer baseline (paper.md A.9), with a KV cache as its state."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SequenceLayer, check_bool, check_nonnegative_float, resolve_head_dim


class KVCache(NamedTuple):
    """State of :class:`SoftmaxAttention`: every key/value seen so far (L = number of cached steps)."""

    k: Tensor  # [B, H, L, d]
    v: Tensor  # [B, H, L, d]
    visible: Tensor  # bool [B, L]: cached positions of the current episode (False once a reset followed them)


class SoftmaxAttention(SequenceLayer):
    """Causal multi-head scaled dot-product attention.

    ``[q | k | v] = x W_in (+ b_in)`` with blocks of ``H * d`` (PyTorch ``nn.MultiheadAttention`` layout),
    ``softmax(q k^T / sqrt(d))`` over the past (causal), output Linear ``H * d -> d_model``. A ``reset`` at ``t``
    starts a new episode: queries from ``t`` on attend only to keys from ``t`` on (of the same row).

    Args:
        d_model: model width C. num_heads: H. head_dim: d (default ``d_model // num_heads``).
        bias: biases in the projections.
        mha_init: initialise as PyTorch's ``nn.MultiheadAttention`` does (the algorithmic baseline's layer):
            a xavier-uniform input projection and zero biases; False: ``nn.Linear``'s default init.
        attn_dropout: dropout on the attention weights in training mode (the PyTorch encoder layer uses the
            model dropout here).

    State: :class:`KVCache` ``(k [B, H, L, d], v [B, H, L, d], visible [B, L])``; it grows by T per call.
    """

    STATE_TYPES: ClassVar[tuple[type, ...]] = (KVCache,)

    # the algorithmic baseline is PyTorch's encoder layer (projections with bias, nn.MultiheadAttention's init);
    # the LM baseline has no biases
    TASK_OPTIONS: ClassVar[dict[str, dict[str, Any]]] = {"algorithmic": {"bias": True, "mha_init": True},
                                                         "lm": {"bias": False}}

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *, bias: bool = False,
                 mha_init: bool = False, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model, self.num_heads, self.head_dim = resolve_head_dim(d_model, num_heads, head_dim)
        self.bias = check_bool("bias", bias)
        self.mha_init = check_bool("mha_init", mha_init)
        self.attn_dropout = check_nonnegative_float("attn_dropout", attn_dropout)
        if self.attn_dropout >= 1.0:
            raise ValueError(f"attn_dropout: expected a probability in [0, 1), got {attn_dropout!r}")
        inner = self.num_heads * self.head_dim
        self.qkv_proj = nn.Linear(self.d_model, 3 * inner, bias=bias)
        self.out_proj = nn.Linear(inner, self.d_model, bias=bias)
        if mha_init:  # nn.MultiheadAttention._reset_parameters: one xavier draw over the stacked q, k, v blocks
            nn.init.xavier_uniform_(self.qkv_proj.weight)
            for proj in (self.qkv_proj, self.out_proj):
                if proj.bias is not None:
                    nn.init.zeros_(proj.bias)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, head_dim={self.head_dim}, bias={self.bias}, "
                f"mha_init={self.mha_init}, attn_dropout={self.attn_dropout}")

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> KVCache:
        """Empty cache: ``k, v [B, H, 0, d]``, ``visible [B, 0]``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size: expected an int >= 0, got {batch_size!r}")
        pdev, pdt = self._param_device_dtype()
        device, dtype = (pdev if device is None else device), (pdt if dtype is None else dtype)
        empty = torch.zeros(batch_size, self.num_heads, 0, self.head_dim, device=device, dtype=dtype)
        return KVCache(empty, empty.clone(), torch.zeros(batch_size, 0, dtype=torch.bool, device=device))

    def _forward(self, x: Tensor, state: KVCache | None, reset: Tensor | None) -> tuple[Tensor, KVCache]:
        B, T, _ = x.shape
        H, d = self.num_heads, self.head_dim
        q, k, v = (t.view(B, T, H, d).transpose(1, 2) for t in self.qkv_proj(x).split(H * d, dim=-1))
        if state is None:
            state = self.initial_state(B, x.device, x.dtype)
        elif not isinstance(state, tuple) or len(state) != 3:
            raise TypeError(f"state: expected a KVCache (k, v, visible), got {type(state).__name__}")
        past_k, past_v, visible = state
        if past_k.shape[:2] != (B, H) or past_k.shape[-1] != d or visible.shape != past_k.shape[:1] + past_k.shape[2:3]:
            raise ValueError(f"state: expected a KVCache with k, v [B, H, L, d] = [{B}, {H}, L, {d}] and visible "
                             f"[B, L], got k {list(past_k.shape)}, visible {list(visible.shape)}")
        keys = torch.cat([past_k.to(k.dtype), k], dim=2)
        values = torch.cat([past_v.to(v.dtype), v], dim=2)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        dropout = self.attn_dropout if self.training else 0.0
        if reset is None:
            new_visible = torch.cat([visible, visible.new_ones(B, T)], dim=1)
            if past_k.shape[2] == 0:
                mask = None
            else:
                mask = torch.cat([visible[:, None, :].expand(B, T, -1), causal.expand(B, T, T)], dim=-1)
        else:
            # seg[b, t] = number of resets of row b up to t: queries and keys of one episode share it.
            seg = reset.long().cumsum(1)
            fresh = seg == 0  # still in the episode of the cache
            same = (seg[:, :, None] == seg[:, None, :]) & causal
            past = visible[:, None, :] & fresh[:, :, None]
            mask = torch.cat([past, same], dim=-1)
            new_visible = torch.cat([visible & fresh[:, -1:], seg == seg[:, -1:]], dim=1)
        if mask is None:
            o = F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[:, None], dropout_p=dropout)
        y = self.out_proj(o.transpose(1, 2).reshape(B, T, H * d))
        if reset is not None:
            # Drop the leading cache entries no row can see any more, so that a cache does not grow across
            # episodes (one host sync, only on calls with resets).
            first = int(new_visible.any(0).to(torch.int8).argmax())
            if first:
                keys, values, new_visible = keys[:, :, first:], values[:, :, first:], new_visible[:, first:]
        return y, KVCache(keys, values, new_visible)
