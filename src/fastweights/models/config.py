"""Configuration of the sequence models (paper.md B.2, A.9)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastweights.layers.registry import available_layers

HEADS = ("per_position", "last")


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


@dataclass
class ModelConfig:
    """A token-in, class-logits-out sequence model.

    Attributes:
        model: a layer name of :func:`fastweights.layers.available_layers` (``"delta_net"``, ``"transformer"``,
            ``"lstm"``, ...). ``"transformer"`` builds the algorithmic PyTorch-Transformer layout of paper.md A.9
            (post-LN blocks, attention projections with bias, attention dropout = ``dropout``, final LayerNorm,
            always positional encoding by default); ``"lstm"`` builds the algorithmic LSTM model (Embedding
            ``emb_size`` -> dropout -> ``nn.LSTM(emb_size, hidden_size, num_layers)`` -> dropout -> Linear); every
            other name builds pre-LN residual blocks around that layer (paper.md B.2) with no final LayerNorm.
        vocab_size: input vocabulary. num_classes: output classes.
        d_model, num_layers, num_heads, head_dim: stack sizes (head_dim None = d_model // num_heads).
        ff_factor, d_ff: feed-forward width ``d_ff`` (None = ``ff_factor * d_model``).
        dropout: residual/FF dropout (and, for ``lstm``, on the embeddings and LSTM outputs).
        positional_encoding: sinusoidal PE on the embeddings; None = True for ``transformer``, False otherwise.
        head: ``"per_position"`` (logits at every step) or ``"last"`` (logits at the last real token, ListOps).
        layer_options: keyword options of the layer (e.g. ``{"version": 1}``; see ``layer_options(name)``).
        emb_size, hidden_size: ``lstm`` model only (hidden_size None = d_model).
    """

    model: str
    vocab_size: int
    num_classes: int
    d_model: int = 256
    num_layers: int = 4
    num_heads: int = 16
    head_dim: int | None = None
    ff_factor: int = 4
    d_ff: int | None = None
    dropout: float = 0.1
    positional_encoding: bool | None = None
    head: str = "per_position"
    layer_options: dict[str, Any] = field(default_factory=dict)
    emb_size: int = 128
    hidden_size: int | None = None

    def __post_init__(self) -> None:
        if self.model not in available_layers():
            raise ValueError(f"model: unknown model {self.model!r}; expected one of {available_layers()}")
        for name in ("vocab_size", "num_classes", "d_model", "num_layers", "num_heads", "ff_factor", "emb_size"):
            _positive_int(name, getattr(self, name))
        for name in ("head_dim", "d_ff", "hidden_size"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")
        if self.positional_encoding is not None and not isinstance(self.positional_encoding, bool):
            raise ValueError(f"positional_encoding: expected None or a bool, got {self.positional_encoding!r}")
        if self.head not in HEADS:
            raise ValueError(f"head: expected one of {list(HEADS)}, got {self.head!r}")
        if not isinstance(self.layer_options, dict):
            raise ValueError(f"layer_options: expected a dict, got {type(self.layer_options).__name__}")
        if self.model == "lstm" and self.positional_encoding:
            raise ValueError("positional_encoding: the lstm model has no positional encoding; leave it None/False")

    @property
    def ff_dim(self) -> int:
        """Width of the feed-forward sublayer."""
        return self.ff_factor * self.d_model if self.d_ff is None else self.d_ff

    @property
    def use_positional_encoding(self) -> bool:
        """Whether the embeddings get the sinusoidal positional encoding."""
        if self.positional_encoding is None:
            return self.model == "transformer"
        return self.positional_encoding
