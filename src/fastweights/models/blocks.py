"""Residual blocks around a sequence layer and the stack of them every model runs (paper.md B.2 pre-LN, F.6 the
LM's ``--pre_lnorm`` block, A.9 post-LN for the PyTorch Transformer).

One block skeleton, :class:`ResidualBlock`, holds ``norm1, layer, norm2, ff, dropout``; where the LayerNorms sit
is its ``norm`` argument (:data:`NORM_PLACEMENTS`). :class:`BlockStack` is the list of blocks with the per-layer
states: the sequence model, the language model and the RL core all run theirs through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fastweights.layers.base import SequenceLayer, check_choice, check_positive_int

#: Where a :class:`ResidualBlock` puts its LayerNorms (see its docstring).
NORM_PLACEMENTS = ("pre_ln", "post_ln", "paper")


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
    """A sequence layer and a feed-forward sublayer, each with a residual connection and a LayerNorm.

    ``norm`` places the LayerNorms (``Drop`` = dropout, ``FF`` = :class:`PositionwiseFF`):

    * ``"pre_ln"`` (paper.md B.2/B.3): ``x = x + Drop(layer(LN1(x)))``, ``x = x + Drop(FF(LN2(x)))`` (the residual
      from the un-normalised x);
    * ``"paper"`` (the official LM ``DecoderLayer`` with ``--pre_lnorm``, paper.md B.1 item 3, F.6):
      ``h = LN1(x)``, ``h = h + Drop(layer(h))`` (the residual added to the *normalised* input),
      ``out = h + Drop(FF(LN2(h)))``;
    * ``"post_ln"`` (as ``nn.TransformerEncoderLayer``, paper.md A.9): ``x = LN1(x + Drop(layer(x)))``,
      ``x = LN2(x + Drop(FF(x)))``.

    The submodule names are the same for every placement, so weights move between them; their registration order
    (hence ``parameters()``'s order, which optimizer checkpoints index) is the one each placement always had.

    ``forward(x [B, T, D], state, reset) -> (x [B, T, D], layer state)``.
    """

    def __init__(self, layer: SequenceLayer, d_ff: int, dropout: float = 0.0, *, norm: str = "pre_ln") -> None:
        super().__init__()
        self.norm = check_choice("norm", norm, NORM_PLACEMENTS)
        d_model = layer.d_model
        if norm == "post_ln":
            self.layer = layer
            self.norm1 = nn.LayerNorm(d_model)
            self.ff = PositionwiseFF(d_model, d_ff, dropout)
            self.norm2 = nn.LayerNorm(d_model)
        else:
            self.norm1 = nn.LayerNorm(d_model)
            self.layer = layer
            self.norm2 = nn.LayerNorm(d_model)
            self.ff = PositionwiseFF(d_model, d_ff, dropout)
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}"

    def forward(self, x: Tensor, state: Any = None, reset: Tensor | None = None) -> tuple[Tensor, Any]:
        """``x [B, T, D] -> (x [B, T, D], final layer state)``."""
        if self.norm == "post_ln":
            h, state = self.layer(x, state, reset)
            x = self.norm1(x + self.dropout(h))
            return self.norm2(x + self.dropout(self.ff(x))), state
        if self.norm == "paper":
            x = self.norm1(x)
            h, state = self.layer(x, state, reset)
        else:
            h, state = self.layer(self.norm1(x), state, reset)
        x = x + self.dropout(h)
        return x + self.dropout(self.ff(self.norm2(x))), state


class BlockStack(nn.ModuleList):
    """:class:`ResidualBlock` s run in order, each carrying its layer's state.

    A ``ModuleList`` of the blocks (``stack[i]``, ``stack[a:b]`` is a stack too), so a model that keeps it as
    ``self.blocks`` has the state-dict keys ``blocks.<i>.<...>`` of a plain list of blocks. Build one with
    :meth:`build`.
    """

    @classmethod
    def build(cls, num_layers: int, make_layer: Callable[[], SequenceLayer], d_ff: int, dropout: float = 0.0,
              *, norm: str = "pre_ln") -> BlockStack:
        """``num_layers`` blocks of the same kind.

        Args:
            num_layers: number of blocks.
            make_layer: called once per block, in order, for that block's sequence layer (each block is built right
                after its layer, so a seeded model draws its weights in the order of one built block by block).
            d_ff: width of each feed-forward sublayer. dropout: residual and FF dropout.
            norm: LayerNorm placement of every block (see :class:`ResidualBlock`).
        """
        check_positive_int("num_layers", num_layers)
        return cls(ResidualBlock(make_layer(), d_ff, dropout, norm=norm) for _ in range(num_layers))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Any, ...]:
        """One zero state per block (each layer's ``initial_state``)."""
        return tuple(block.layer.initial_state(batch_size, device) for block in self)

    def forward(self, x: Tensor, states: Sequence[Any] | None = None, reset: Tensor | None = None
                ) -> tuple[Tensor, tuple[Any, ...]]:
        """Run every block: ``x [B, T, D] -> (x [B, T, D], final states)``.

        Args:
            x: the input of the first block.
            states: one state per block (a tuple or list, as returned before); None = every layer's zero state.
            reset: optional bool ``[B, T]``, passed to every layer (True at ``t`` zeroes row ``b``'s state first).
        """
        if states is None:
            states = (None,) * len(self)
        elif not isinstance(states, (tuple, list)) or len(states) != len(self):
            got = f"{len(states)} states" if isinstance(states, (tuple, list)) else type(states).__name__
            raise TypeError(f"states: expected a tuple of {len(self)} layer states (one per block), got {got}")
        finals = []
        for block, state in zip(self, states, strict=True):
            x, state = block(x, state, reset)
            finals.append(state)
        return x, tuple(finals)
