"""Residual blocks around a sequence layer (paper.md B.2 pre-LN; A.9 post-LN for the PyTorch Transformer)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from fastweights.layers.base import SequenceLayer


class PositionwiseFF(nn.Module):
    """``Lin2(Drop(ReLU(Lin1(x))))``, Linear layers with bias: ``[..., D] -> [..., D]`` via width ``d_ff``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.lin1 = nn.Linear(d_model, d_ff)
        self.lin2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., D] -> [..., D]``."""
        return self.lin2(self.dropout(self.lin1(x).relu()))


class ResidualBlock(nn.Module):
    """Pre-LN block: ``x + Drop(layer(LN(x)))`` then ``x + Drop(FF(LN(x)))`` (residual from the
    un-normalised x, paper.md B.2/B.3).

    ``forward(x [B, T, D], state, reset) -> (x [B, T, D], layer state)``.
    """

    def __init__(self, layer: SequenceLayer, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        d_model = layer.d_model
        self.norm1 = nn.LayerNorm(d_model)
        self.layer = layer
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = PositionwiseFF(d_model, d_ff, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, state: Any = None, reset: Tensor | None = None) -> tuple[Tensor, Any]:
        """``x [B, T, D] -> (x [B, T, D], final layer state)``."""
        h, state = self.layer(self.norm1(x), state, reset)
        x = x + self.dropout(h)
        x = x + self.dropout(self.ff(self.norm2(x)))
        return x, state


class PostLNBlock(nn.Module):
    """Post-LN block as ``nn.TransformerEncoderLayer``: ``x = LN1(x + Drop(layer(x)))``,
    ``x = LN2(x + Drop(FF(x)))``.

    ``forward(x [B, T, D], state, reset) -> (x [B, T, D], layer state)``.
    """

    def __init__(self, layer: SequenceLayer, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        d_model = layer.d_model
        self.layer = layer
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = PositionwiseFF(d_model, d_ff, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, state: Any = None, reset: Tensor | None = None) -> tuple[Tensor, Any]:
        """``x [B, T, D] -> (x [B, T, D], final layer state)``."""
        h, state = self.layer(x, state, reset)
        x = self.norm1(x + self.dropout(h))
        x = self.norm2(x + self.dropout(self.ff(x)))
        return x, state
