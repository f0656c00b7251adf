"""Token-in, logits-out sequence models: a stack of residual blocks around one layer type (paper.md B.2), the
algorithmic PyTorch-Transformer baseline and the algorithmic LSTM model (paper.md A.9)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from fastweights.layers.lstm import LSTMState, run_lstm
from fastweights.layers.registry import build_layer, task_options
from fastweights.ops.common import check_reset

from .blocks import BlockStack
from .config import ModelConfig


class ModelState(NamedTuple):
    """Carried state of a model: ``position [B]`` (long; steps since the start of each row's episode, used
    by the positional encoding) and one state per layer."""

    position: Tensor
    layers: tuple[Any, ...]


def sinusoidal_encoding(positions: Tensor, dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard interleaved sinusoidal encoding: ``positions [...]`` (long) -> ``[..., dim]`` with
    ``pe[2i] = sin(p / 10000^(2i/dim))`` and ``pe[2i+1] = cos(p / 10000^(2i/dim))``."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64)
                         * (-math.log(10000.0) / dim))
    angles = positions.to(torch.float64)[..., None] * inv_freq  # [..., ceil(dim/2)]
    pe = torch.empty(*positions.shape, dim, device=positions.device, dtype=torch.float64)
    pe[..., 0::2] = torch.sin(angles)
    pe[..., 1::2] = torch.cos(angles[..., : dim // 2])
    return pe.to(dtype)


def episode_positions(start: Tensor, reset: Tensor | None, time: int) -> Tensor:
    """Positions ``[B, T]`` of the next ``time`` steps: ``start [B] + t``, restarting at 0 at every reset."""
    t = torch.arange(time, device=start.device)
    if reset is None:
        return start[:, None] + t
    last_reset = torch.where(reset, t, -1).cummax(dim=1).values  # index of the latest reset at or before t
    return torch.where(last_reset >= 0, t - last_reset, start[:, None] + t)


def split_state(state: object, batch_size: int, num_layers: int, device: torch.device
                ) -> tuple[Tensor, tuple[Any, ...] | None]:
    """Check a model's ``state`` (None or a :class:`ModelState`) and return ``(position [B] on device, layer
    states)``; None means position 0 and the zero state of every layer (layer states None)."""
    if state is None:
        return torch.zeros(batch_size, dtype=torch.long, device=device), None
    if not isinstance(state, tuple) or len(state) != 2 or not isinstance(state[1], (tuple, list)) \
            or len(state[1]) != num_layers:
        raise TypeError(f"state: expected a ModelState(position, layers) with {num_layers} layer "
                        f"states, got {type(state).__name__}")
    start, layer_states = state
    if not isinstance(start, Tensor) or tuple(start.shape) != (batch_size,):
        raise ValueError(f"state: expected position of shape [B] = [{batch_size}], got "
                         f"{list(start.shape) if isinstance(start, Tensor) else type(start).__name__}")
    return start.to(device), tuple(layer_states)


def _check_tokens(tokens: object, vocab_size: int, *, name: str, layout: str) -> Tensor:
    rank = layout.count(",") + 1
    if not isinstance(tokens, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {layout} of token ids, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor {layout} of token ids, got dtype {tokens.dtype}")
    if tokens.dim() != rank:
        raise ValueError(f"{name}: expected a {rank}-d tensor {layout}, got shape {list(tokens.shape)}")
    # a range check reads the tensor: only where that costs no device synchronisation
    if tokens.device.type == "cpu" and tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"{name}: expected token ids in [0, {vocab_size}), got values in "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")
    return tokens


def _gather_last(h: Tensor, lengths: Tensor | None) -> Tensor:
    """``h [B, T, D]`` -> ``[B, D]`` at index ``lengths - 1`` (the last position when lengths is None)."""
    B, T, _ = h.shape
    if lengths is None:
        return h[:, -1]
    if not isinstance(lengths, Tensor) or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer torch.Tensor [B], got "
                        f"{lengths.dtype if isinstance(lengths, Tensor) else type(lengths).__name__}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths: expected shape [B] = [{B}], got {list(lengths.shape)}")
    if lengths.device.type == "cpu" and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths: expected values in [1, T = {T}], got [{int(lengths.min())}, {int(lengths.max())}]")
    idx = (lengths.to(h.device).long() - 1).view(B, 1, 1).expand(B, 1, h.shape[-1])
    return h.gather(1, idx).squeeze(1)


class _TokenModel(nn.Module):
    """Shared API: ``forward``, ``initial_state``, ``step``; subclasses implement ``_hidden``."""

    config: ModelConfig
    head: nn.Linear

    def _hidden(self, tokens: Tensor, state: ModelState | None, reset: Tensor | None
                ) -> tuple[Tensor, ModelState]:
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> ModelState:
        raise NotImplementedError

    def forward(self, tokens: Tensor, state: ModelState | None = None, reset: Tensor | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, ModelState]:
        """Run the model over token sequences.

        Args:
            tokens: ``[B, T]`` integer token ids in ``[0, vocab_size)``.
            state: a :class:`ModelState` from a previous call or ``initial_state``; None = zero state.
            reset: optional bool ``[B, T]``; True at ``t`` starts a new episode in row ``b`` (every layer
                state is zeroed and the positions restart at 0).
            lengths: ``[B]`` real lengths, used by ``head="last"`` (None = the last position).
        Returns:
            ``(logits, final_state)``; logits ``[B, T, num_classes]`` (``head="per_position"``) or
            ``[B, num_classes]`` (``head="last"``).
        """
        tokens = _check_tokens(tokens, self.config.vocab_size, name="tokens", layout="[B, T]")
        reset = check_reset(reset, tokens.shape[0], tokens.shape[1], tokens.device)
        h, state = self._hidden(tokens, state, reset)
        if self.config.head == "last":
            return self.head(_gather_last(h, lengths)), state
        return self.head(h), state

    def step(self, tokens_t: Tensor, state: ModelState | None = None) -> tuple[Tensor, ModelState]:
        """One step: ``tokens_t [B] -> (logits_t [B, num_classes], state)`` (equals the full forward)."""
        tokens_t = _check_tokens(tokens_t, self.config.vocab_size, name="tokens_t", layout="[B]")
        h, state = self._hidden(tokens_t[:, None], state, None)
        return self.head(h[:, 0]), state


class SequenceModel(_TokenModel):
    """Embedding (not scaled) -> [sinusoidal PE] -> N residual blocks -> [final LN] -> Linear head.

    Fast-weight and other layers: a :class:`~fastweights.models.blocks.BlockStack` of pre-LN blocks, no final
    LayerNorm (paper.md B.2). The ``transformer`` model: post-LN blocks, final LayerNorm, attention with biases
    and attention dropout = ``dropout`` (paper.md A.9). Layer options: the layer's ``"algorithmic"`` preset
    (:func:`fastweights.layers.task_options`) overridden by ``config.layer_options``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.model == "lstm":
            raise ValueError("model: use LSTMModel (or build_model) for the 'lstm' model")
        self.config = config
        D = config.d_model
        is_transformer = config.model == "transformer"
        options = task_options(config.model, "algorithmic", config.layer_options)
        if is_transformer:
            # nn.TransformerEncoderLayer: dropout on the attention weights
            options = {"attn_dropout": config.dropout, **options}
        self.embedding = nn.Embedding(config.vocab_size, D)
        self.blocks = BlockStack.build(
            config.num_layers, lambda: build_layer(config.model, D, config.num_heads, config.head_dim, **options),
            config.ff_dim, config.dropout, norm="post_ln" if is_transformer else "pre_ln")
        self.final_norm = nn.LayerNorm(D) if is_transformer else None
        self.head = nn.Linear(D, config.num_classes)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> ModelState:
        """Zero state: position 0 and every layer's ``initial_state``."""
        device = self.head.weight.device if device is None else device
        return ModelState(torch.zeros(batch_size, dtype=torch.long, device=device),
                          self.blocks.initial_state(batch_size, device))

    def _hidden(self, tokens: Tensor, state: ModelState | None, reset: Tensor | None
                ) -> tuple[Tensor, ModelState]:
        B, T = tokens.shape
        start, layer_states = split_state(state, B, len(self.blocks), tokens.device)
        positions = episode_positions(start, reset, T)
        h = self.embedding(tokens)
        if self.config.use_positional_encoding:
            h = h + sinusoidal_encoding(positions, self.config.d_model, h.dtype)
        h, layer_states = self.blocks(h, layer_states, reset)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return h, ModelState(positions[:, -1] + 1, layer_states)


class LSTMModel(_TokenModel):
    """Algorithmic LSTM baseline (paper.md A.9): Embedding(emb_size) -> Drop -> ``nn.LSTM(emb_size, lstm_hidden,
    num_layers)`` -> Drop -> Linear(lstm_hidden, num_classes). State: ``ModelState(position, (LSTMState,))``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.model != "lstm":
            raise ValueError(f"model: LSTMModel builds the 'lstm' model, got {config.model!r}")
        unknown = sorted(config.layer_options)
        if unknown:
            raise TypeError(f"layer_options: the lstm model takes no layer options, got {unknown}")
        self.config = config
        self.hidden_size = config.d_model if config.lstm_hidden is None else config.lstm_hidden
        self.embedding = nn.Embedding(config.vocab_size, config.emb_size)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.emb_size, self.hidden_size, config.num_layers, batch_first=True)
        self.head = nn.Linear(self.hidden_size, config.num_classes)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> ModelState:
        """Zero state: position 0 and zero ``(h, c) [num_layers, B, hidden_size]``."""
        w = self.head.weight
        device = w.device if device is None else device
        z = torch.zeros(self.config.num_layers, batch_size, self.hidden_size, device=device, dtype=w.dtype)
        return ModelState(torch.zeros(batch_size, dtype=torch.long, device=device), (LSTMState(z, z.clone()),))

    def _hidden(self, tokens: Tensor, state: ModelState | None, reset: Tensor | None
                ) -> tuple[Tensor, ModelState]:
        B, T = tokens.shape
        start = tokens.new_zeros(B, dtype=torch.long) if state is None else state[0]
        lstm_state = None if state is None else state[1][0]
        out, lstm_state = run_lstm(self.lstm, self.dropout(self.embedding(tokens)), lstm_state, reset)
        positions = episode_positions(start, reset, T)
        return self.dropout(out), ModelState(positions[:, -1] + 1, (lstm_state,))


def build_model(config: ModelConfig) -> SequenceModel | LSTMModel:
    """Build the model a :class:`ModelConfig` describes."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config: expected a ModelConfig, got {type(config).__name__}")
    return LSTMModel(config) if config.model == "lstm" else SequenceModel(config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter entries (each shared parameter counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def state_types() -> list[type]:
    """The types besides tensors in the recurrent states of every model: :class:`ModelState`, the layers'
    ``STATE_TYPES`` and the ops' state tuples (``OpSpec.state_type``). Checkpoints of carried states hold these
    (:func:`fastweights.runs.checkpoints.load_checkpoint` reads only the types it is given)."""
    from ..layers.registry import LAYERS
    from ..ops import SPECS

    types = {ModelState}
    for cls in LAYERS.values():
        types.update(cls.STATE_TYPES)
    types.update(spec.state_type for spec in SPECS.values() if spec.state_type is not None)
    return sorted(types, key=lambda t: f"{t.__module__}.{t.__qualname__}")
