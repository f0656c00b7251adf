"""Configuration of the sequence models (paper.md B.2, A.9)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastweights.fields import (
    check_choice,
    check_dict,
    check_positive_int,
    check_probability,
    embed,
    option,
)
from fastweights.layers.registry import check_layer

HEADS = ("per_position", "last")
#: The values of ``positional_encoding`` (``auto``: sinusoidal for the transformer only).
POSITIONAL_ENCODINGS = ("auto", "sinusoidal", "none")


@dataclass
class _ModelInputs:
    """What a :class:`ModelConfig` needs that the data decide (positional arguments)."""

    model: str
    vocab_size: int
    num_classes: int


@dataclass
class StackOptions:
    """The sizes of a stack of blocks, with one name and meaning in every task; the options of each model
    (:class:`ModelOptions`, :class:`~fastweights.models.LMOptions`, :class:`~fastweights.rl.agent.AgentOptions`)
    embed them with the model's defaults."""

    d_model: int = option(256, "width of the residual stream")
    num_layers: int = option(4, "residual blocks (the lstm model: LSTM layers)")
    num_heads: int = option(16, "heads of every fast-weight or attention layer")
    head_dim: int | None = option(None, "size of a head; none = d_model / num_heads")
    dropout: float = option(0.1, "dropout probability of the residual and feed-forward paths")
    layer_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "keyword options of the layer as JSON, e.g. {\"version\": 1}"})


@dataclass
@embed(StackOptions)
class ModelOptions:
    """The sizes and options of a sequence model, each with its meaning (``fastweights train code-exec --help``
    shows them): :class:`ModelConfig` and the training configuration of the algorithmic tasks share them."""

    d_ff: int | None = option(None, "width of the feed-forward sublayer; none = 4 * d_model")
    positional_encoding: str = option("auto", "sinusoidal, none or auto (sinusoidal for the transformer only)")
    head: str = option("per_position", "logits at every position (per_position) or at the last real token (last)")
    emb_size: int = option(128, "lstm model: embedding size")
    lstm_hidden: int | None = option(None, "lstm model: hidden size; none = d_model")


@dataclass
class ModelConfig(ModelOptions, _ModelInputs):
    """A token-in, class-logits-out sequence model: ``ModelConfig(model, vocab_size, num_classes, **options)``.

    Attributes:
        model: a layer name of :func:`fastweights.layers.available_layers` (``"delta_net"``, ``"transformer"``,
            ``"lstm"``, ...). ``"transformer"`` builds the algorithmic PyTorch-Transformer layout of paper.md A.9
            (post-LN blocks, attention projections with bias, attention dropout = ``dropout``, final LayerNorm,
            always positional encoding by default); ``"lstm"`` builds the algorithmic LSTM model (Embedding
            ``emb_size`` -> dropout -> ``nn.LSTM(emb_size, lstm_hidden, num_layers)`` -> dropout -> Linear); every
            other name builds pre-LN residual blocks around that layer (paper.md B.2) with no final LayerNorm.
        vocab_size: input vocabulary. num_classes: output classes.
        d_model, num_layers, num_heads, head_dim: stack sizes (head_dim None = d_model // num_heads).
        d_ff: feed-forward width (None = ``4 * d_model``, the paper's).
        dropout: residual/FF dropout (and, for ``lstm``, on the embeddings and LSTM outputs).
        positional_encoding: ``"sinusoidal"`` positions on the embeddings, ``"none"``, or ``"auto"``: sinusoidal for
            ``transformer``, none otherwise.
        head: ``"per_position"`` (logits at every step) or ``"last"`` (logits at the last real token, ListOps).
        layer_options: keyword options of the layer (e.g. ``{"version": 1}``; see ``layer_options(name)``).
        emb_size, lstm_hidden: ``lstm`` model only (lstm_hidden None = d_model).
    """

    def __post_init__(self) -> None:
        check_layer(self.model)
        for name in ("vocab_size", "num_classes", "d_model", "num_layers", "num_heads", "emb_size"):
            check_positive_int(name, getattr(self, name))
        for name in ("head_dim", "d_ff", "lstm_hidden"):
            check_positive_int(name, getattr(self, name), optional=True)
        check_probability("dropout", self.dropout)
        check_choice("positional_encoding", self.positional_encoding, POSITIONAL_ENCODINGS)
        check_choice("head", self.head, HEADS)
        check_dict("layer_options", self.layer_options)
        if self.model == "lstm" and self.positional_encoding == "sinusoidal":
            raise ValueError("positional_encoding: the lstm model has no positional encoding; leave it auto or none")

    @property
    def ff_dim(self) -> int:
        """Width of the feed-forward sublayer."""
        return 4 * self.d_model if self.d_ff is None else self.d_ff

    @property
    def use_positional_encoding(self) -> bool:
        """Whether the embeddings get the sinusoidal positional encoding."""
        if self.positional_encoding == "auto":
            return self.model == "transformer"
        return self.positional_encoding == "sinusoidal"
