"""Word-level language model of the paper's WikiText-103 experiments (paper.md B.1, E.1, A.11, F.6).

``tokens [B, T] -> scaled embedding (+ sinusoidal positions) -> N blocks -> dropout -> tied adaptive softmax``.

* :class:`LMConfig` describes the model; :func:`paper_config` gives the paper's small configuration (the training
  presets are ``fastweights/configs/lm-<preset>.json``); :func:`build_lm` builds a :class:`LanguageModel`.
* :class:`AdaptiveLogSoftmax` is the Transformer-XL style output layer (``div_val = 1``), its word weights tied to
  the input embedding; with no cutoffs it is a plain (tied) full softmax.
* Every layer of :func:`fastweights.layers.available_layers` can be used; the LM-specific layer options of the
  paper (1/sqrt(d) output scale, the Linear Transformer's elu+1 map, bias-free attention) are the layers'
  ``"lm"`` presets (``TASK_OPTIONS``), filled in by :func:`lm_layer_options`.

Position handling (paper.md B.1 item 2). The paper adds absolute sinusoids ``[sin(p w) | cos(p w)]`` (concatenated, not
interleaved) with **reversed** positions: in a call over T tokens, token t gets ``p = T - 1 - t`` (the last token 0),
optionally clamped at ``clamp_len``; its code restarts these positions at every segment, also when the fast
weights are carried over. The paper's "+ full context" runs (the only ones that carry state) use no positional
encoding at all. Reversed positions depend on the length of the call, so a reversed-position model cannot be
decoded step by step: :meth:`LanguageModel.step` refuses it. ``position_order="forward"`` numbers tokens
``0, 1, 2, ...`` from the start of the stream (or the last reset), continuing from the counter kept in the state,
so split calls and single steps equal one long call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastweights.fields import (
    check_bool,
    check_choice,
    check_dict,
    check_number,
    check_positive_int,
    check_probability,
    embed,
    option,
)
from fastweights.layers.registry import build_layer, check_layer, task_options
from fastweights.ops.common import check_reset

from .blocks import NORM_PLACEMENTS, BlockStack
from .config import StackOptions
from .sequence_model import ModelState, _check_tokens, episode_positions, split_state

BLOCKS = NORM_PLACEMENTS  # LMConfig.block is the norm placement of every ResidualBlock
SOFTMAXES = ("auto", "adaptive", "full")
POSITIONAL_ENCODINGS = ("sinusoidal", "none")
POSITION_ORDERS = ("reversed", "forward")
WT103_VOCAB_SIZE = 267_735
WT103_CUTOFFS = (20_000, 40_000, 200_000)


@dataclass
class _LMInputs:
    """What an :class:`LMConfig` needs that the data decide (positional arguments)."""

    model: str
    vocab_size: int


@dataclass
@embed(StackOptions, d_model=128, num_layers=16, num_heads=8)
class LMOptions:
    """The sizes and options of a language model, each with its meaning (``fastweights train lm --help`` shows
    them): :class:`LMConfig` and the training configuration of ``lm`` share them."""

    d_ff: int = option(2048, "width of the feed-forward sublayer")
    dropatt: float = option(0.0, "dropout on the attention weights (transformer)")
    positional_encoding: str = option("sinusoidal", "sinusoidal or none")
    position_order: str = option("reversed", "reversed (the paper) or forward (needed for step-by-step "
                                             "generation)")
    clamp_len: int | None = option(None, "largest position encoded; none = no clamp")
    softmax: str = option("auto", "output layer: adaptive, full or auto (adaptive when the vocabulary exceeds the "
                                  "first cutoff)")
    cutoffs: tuple[int, ...] = option(WT103_CUTOFFS, "adaptive-softmax cluster boundaries")
    div_val: int = option(1, "adaptive-softmax width divisor (only 1, the paper's)")
    tie_weight: bool = option(True, "the output word weights are the input embedding")
    block: str = option("paper", "paper, pre_ln or post_ln")
    final_norm: bool = option(False, "a LayerNorm before the output layer (the paper: none)")
    init_std: float | None = option(0.02, "standard deviation of the normal initialisation; none = PyTorch's")


@dataclass
class LMConfig(LMOptions, _LMInputs):
    """A word-level language model (defaults: the paper's small WT103 configuration, paper.md E.1).

    Attributes:
        model: a layer name of :func:`fastweights.layers.available_layers`.
        vocab_size: number of word types (WT103: 267,735).
        d_model, num_layers, num_heads, head_dim: stack sizes (``head_dim`` None = ``d_model // num_heads``).
        d_ff: width of the feed-forward sublayer (``d_inner``).
        dropout: on the embeddings (after adding the positions), on every sublayer output, inside the FF
            sublayer and on the final hidden state (paper.md B.1 item 5).
        dropatt: attention-weight dropout of the ``transformer`` layer (the paper: 0.0; no other layer has one).
        positional_encoding: ``"sinusoidal"`` (the paper's truncated-context models) or ``"none"`` (its
            "+ full context" models).
        position_order: ``"reversed"`` (the paper: ``p = T - 1 - t`` within each call, whatever the state or
            ``reset``) or ``"forward"`` (``p`` counts tokens from the start of the stream or the row's last reset,
            continuing from the state's counter; step-decodable).
        clamp_len: positions larger than this are clamped to it (None: no clamp; the paper evaluates with 256).
        softmax: ``"adaptive"`` (Transformer-XL adaptive softmax), ``"full"`` or ``"auto"`` (adaptive only when
            ``vocab_size`` exceeds the first cutoff; the cutoffs not below ``vocab_size`` are then dropped).
        cutoffs: adaptive-softmax cluster boundaries (WT103: 20000, 40000, 200000).
        div_val: only 1 (the paper's setting: every cluster uses ``d_model``-wide word vectors, hence no
            projections and nothing for ``tie_projs`` to tie).
        tie_weight: the output word weights are the input embedding (the paper: True).
        block: ``"paper"`` (the official ``--pre_lnorm`` DecoderLayer, paper.md F.6: ``h = LN(x)``,
            ``h = h + Drop(layer(h))``, ``out = h + Drop(FF(LN(h)))``), ``"pre_ln"`` (textbook pre-LN, residual from the
            un-normalised x) or ``"post_ln"`` (``LN(x + Drop(layer(x)))``; the paper's "+ full context" runs and its
            Transformer baseline). With ``transformer``, ``"paper"`` applies the same F.6 structure; the official
            attention with ``--pre_lnorm`` instead takes q from the un-normalised input and adds the residual to it
            (paper.md A.9), which is not reproduced (the paper's baseline ran post-LN).
        final_norm: a LayerNorm before the output layer (the paper: none).
        init_std: N(0, init_std) init of Linear/Embedding weights and cluster weights, N(1, init_std) LayerNorm
            gains, zero biases (paper.md B.1 item 6; RDN recurrent weights and ``nn.LSTM`` keep their own init);
            None keeps PyTorch's default init.
        layer_options: keyword options of the layer, on top of :func:`lm_layer_options`'s LM defaults
            (e.g. ``{"version": 1}``, ``{"fast_net_depth": 2}``, ``{"feature_map": "dpfp"}``).
    """

    def __post_init__(self) -> None:
        check_layer(self.model)
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff"):
            check_positive_int(name, getattr(self, name))
        if self.head_dim is not None:
            check_positive_int("head_dim", self.head_dim)
        elif self.d_model % self.num_heads:
            raise ValueError(f"head_dim: d_model = {self.d_model} is not divisible by num_heads = {self.num_heads}; "
                             f"pass head_dim explicitly")
        check_probability("dropout", self.dropout)
        check_probability("dropatt", self.dropatt)
        check_choice("positional_encoding", self.positional_encoding, POSITIONAL_ENCODINGS)
        check_choice("position_order", self.position_order, POSITION_ORDERS)
        if self.positional_encoding == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"d_model: the [sin | cos] positional encoding needs an even d_model, got {self.d_model}")
        check_positive_int("clamp_len", self.clamp_len, optional=True)
        check_choice("softmax", self.softmax, SOFTMAXES)
        if not isinstance(self.cutoffs, (tuple, list)):
            raise ValueError(f"cutoffs: expected a tuple of increasing positive ints, got {self.cutoffs!r}")
        self.cutoffs = tuple(self.cutoffs)
        for c in self.cutoffs:
            check_positive_int("cutoffs", c)
        if any(a >= b for a, b in pairwise(self.cutoffs)):
            raise ValueError(f"cutoffs: expected strictly increasing values, got {list(self.cutoffs)}")
        if self.softmax == "adaptive":
            if not self.cutoffs:
                raise ValueError("cutoffs: softmax='adaptive' needs at least one cutoff")
            if self.cutoffs[-1] >= self.vocab_size:
                raise ValueError(f"cutoffs: softmax='adaptive' needs every cutoff below vocab_size = "
                                 f"{self.vocab_size}, got {list(self.cutoffs)} (softmax='auto' drops the others)")
        if isinstance(self.div_val, bool) or self.div_val != 1:
            raise ValueError(f"div_val: only div_val = 1 (the paper's setting) is implemented, got {self.div_val!r}")
        check_bool("tie_weight", self.tie_weight)
        check_choice("block", self.block, BLOCKS)
        check_bool("final_norm", self.final_norm)
        if self.init_std is not None:
            check_number("init_std", self.init_std, low=0, low_open=True, high=math.inf, high_open=True,
                         expected="None or a finite float > 0")
        check_dict("layer_options", self.layer_options)

    @property
    def effective_cutoffs(self) -> tuple[int, ...]:
        """The cutoffs the output layer uses: () for a full softmax."""
        if self.softmax == "full":
            return ()
        return tuple(c for c in self.cutoffs if c < self.vocab_size)

    @property
    def adaptive(self) -> bool:
        """Whether the output layer is an adaptive softmax (at least one cluster)."""
        return bool(self.effective_cutoffs)


def lm_layer_options(config: LMConfig) -> dict[str, Any]:
    """The options the LM passes to ``build_layer``: the layer's ``"lm"`` preset of the paper's settings (paper.md
    A.1-A.9, A.10, F.5; the table is the layer class's ``TASK_OPTIONS``, read by
    :func:`fastweights.layers.task_options`) and, for ``transformer``, ``attn_dropout = dropatt``, all overridden
    by ``config.layer_options``."""
    options = task_options(config.model, "lm", config.layer_options)
    if config.model == "transformer":
        options = {"attn_dropout": config.dropatt, **options}
    return options


def lm_positional_encoding(positions: Tensor, dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Transformer-XL absolute sinusoids: ``positions [...]`` -> ``[..., dim]`` =
    ``[sin(p w_0), ..., sin(p w_{dim/2-1}) | cos(p w_0), ..., cos(p w_{dim/2-1})]`` with ``w_j = 10000^(-2j/dim)``
    (concatenated halves, not interleaved; paper.md B.1)."""
    inv_freq = torch.pow(10000.0, -torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


class AdaptiveLogSoftmax(nn.Module):
    """Transformer-XL adaptive softmax with ``div_val = 1`` (every cluster scores ``d_model``-wide word vectors),
    or a full softmax when ``cutoffs`` is empty.

    Words ``[0, c_0)`` form the shortlist; cluster ``i = 1..n`` holds words ``[c_{i-1}, c_i)`` (``c_n = V``). The head
    scores the shortlist words and one logit per cluster; cluster ``i``'s logit is head column
    ``c_0 + n - i`` (the last column belongs to the first tail cluster, Transformer-XL's order), i.e. row ``n - i``
    of ``cluster_weight``/``cluster_bias``. Then
    ``log p(w) = log softmax(head)[w]`` for a shortlist word and
    ``log p(w) = log softmax(head)[c_0 + n - i] + log softmax(tail_i)[w - c_{i-1}]`` for a word of cluster i, where the
    tail logits are ``h W[c_{i-1}:c_i]^T + b[c_{i-1}:c_i]``. ``W [V, D]`` (the word weights) is the input embedding when
    tied; ``b [V]`` are the output biases.

    Args:
        vocab_size: V. d_model: D. cutoffs: increasing, all in ``(0, V)``; () = full softmax.
        weight: a ``[V, D]`` parameter to tie the word weights to (None: own parameter).
    """

    def __init__(self, vocab_size: int, d_model: int, cutoffs: tuple[int, ...] = (), *,
                 weight: nn.Parameter | None = None) -> None:
        super().__init__()
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.d_model = check_positive_int("d_model", d_model)
        cutoffs = tuple(cutoffs)
        if any(not 0 < c < vocab_size for c in cutoffs) or any(a >= b for a, b in pairwise(cutoffs)):
            raise ValueError(f"cutoffs: expected increasing values in (0, vocab_size = {vocab_size}), "
                             f"got {list(cutoffs)}")
        self.cutoffs = cutoffs
        self.bounds = (0, *cutoffs, vocab_size)
        self.n_clusters = len(cutoffs)
        self.shortlist_size = cutoffs[0] if cutoffs else vocab_size
        if weight is None:
            weight = nn.Parameter(torch.empty(vocab_size, d_model))
            nn.init.normal_(weight, 0.0, 0.02)
        elif tuple(weight.shape) != (vocab_size, d_model):
            raise ValueError(f"weight: expected a tied weight of shape [V, D] = [{vocab_size}, {d_model}], "
                             f"got {list(weight.shape)}")
        self.weight = weight
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        if self.n_clusters:
            self.cluster_weight = nn.Parameter(torch.zeros(self.n_clusters, d_model))
            self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters))
        else:
            self.cluster_weight = self.cluster_bias = None

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, d_model={self.d_model}, cutoffs={list(self.cutoffs)}"

    def _head_logits(self, h: Tensor) -> Tensor:
        c0 = self.shortlist_size
        if not self.n_clusters:
            return F.linear(h, self.weight, self.bias)
        weight = torch.cat([self.weight[:c0], self.cluster_weight])
        bias = torch.cat([self.bias[:c0], self.cluster_bias])
        return F.linear(h, weight, bias)

    def _tail_log_probs(self, h: Tensor, i: int) -> Tensor:
        lo, hi = self.bounds[i], self.bounds[i + 1]
        return F.log_softmax(F.linear(h, self.weight[lo:hi], self.bias[lo:hi]), dim=-1)

    def _check_hidden(self, hidden: object) -> Tensor:
        if not isinstance(hidden, Tensor) or not hidden.is_floating_point():
            raise TypeError(f"hidden: expected a floating-point torch.Tensor [..., D], got "
                            f"{hidden.dtype if isinstance(hidden, Tensor) else type(hidden).__name__}")
        if hidden.dim() < 1 or hidden.shape[-1] != self.d_model:
            raise ValueError(f"hidden: expected last dim D = {self.d_model}, got shape {list(hidden.shape)}")
        return hidden

    def log_prob(self, hidden: Tensor) -> Tensor:
        """Full log-distribution: ``hidden [..., D] -> [..., V]`` (sums to 1 in probability)."""
        hidden = self._check_hidden(hidden)
        head = F.log_softmax(self._head_logits(hidden), dim=-1)
        if not self.n_clusters:
            return head
        c0, n = self.shortlist_size, self.n_clusters
        parts = [head[..., :c0]]
        for i in range(1, n + 1):
            parts.append(self._tail_log_probs(hidden, i) + head[..., c0 + n - i, None])
        return torch.cat(parts, dim=-1)

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Negative log-likelihood of ``targets [...]`` (int) under ``hidden [..., D]``: ``[...]``.

        Only the tail clusters that contain a target are scored, and only for those positions (a host sync
        per cluster, as in Transformer-XL).
        """
        hidden = self._check_hidden(hidden)
        if not isinstance(targets, Tensor) or targets.is_floating_point() or targets.dtype == torch.bool:
            raise TypeError(f"targets: expected an integer torch.Tensor, got "
                            f"{targets.dtype if isinstance(targets, Tensor) else type(targets).__name__}")
        if tuple(targets.shape) != tuple(hidden.shape[:-1]):
            raise ValueError(f"targets: expected shape {list(hidden.shape[:-1])} (hidden without its last dim), "
                             f"got {list(targets.shape)}")
        if targets.device.type == "cpu" and targets.numel() and (targets.min() < 0 or targets.max() >= self.vocab_size):
            raise ValueError(f"targets: expected token ids in [0, {self.vocab_size}), got values in "
                             f"[{int(targets.min())}, {int(targets.max())}]")
        shape = targets.shape
        h = hidden.reshape(-1, self.d_model)
        t = targets.reshape(-1).long()
        head = F.log_softmax(self._head_logits(h), dim=-1)
        if not self.n_clusters:
            return -head.gather(1, t[:, None]).squeeze(1).view(shape)
        c0, n = self.shortlist_size, self.n_clusters
        bounds = torch.tensor(self.cutoffs, device=t.device)
        cluster = torch.bucketize(t, bounds, right=True)  # 0 = shortlist, i = tail cluster i
        head_index = torch.where(cluster == 0, t, c0 + n - cluster)
        logp = head.gather(1, head_index[:, None]).squeeze(1)
        for i in range(1, n + 1):
            rows = (cluster == i).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            tail = self._tail_log_probs(h.index_select(0, rows), i)
            picked = tail.gather(1, (t.index_select(0, rows) - self.bounds[i])[:, None]).squeeze(1)
            logp = logp.index_add(0, rows, picked)
        return (-logp).view(shape)


class LanguageModel(nn.Module):
    """Word-level LM: ``Embedding * sqrt(D)`` (+ positions) -> Drop -> N blocks -> [LN] -> Drop -> output layer.

    State: :class:`~fastweights.models.ModelState` ``(position [B], layers)``: ``position`` counts the tokens each row
    has read since its start or last reset (long), ``layers`` holds one state per layer (fast weights, recurrent
    vectors, a KV cache for ``transformer``, ``(h, c)`` for ``lstm``). Carrying it from call to call continues the
    sequence (the paper's ``--carry_over_fast_weight``); detach it between training segments for truncated BPTT
    (:func:`fastweights.layers.detach_state`).
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        if not isinstance(config, LMConfig):
            raise TypeError(f"config: expected an LMConfig, got {type(config).__name__}")
        self.config = config
        D = config.d_model
        self.embedding = nn.Embedding(config.vocab_size, D)
        self.emb_scale = math.sqrt(D)
        self.dropout = nn.Dropout(config.dropout)
        options = lm_layer_options(config)
        self.blocks = BlockStack.build(
            config.num_layers, lambda: build_layer(config.model, D, config.num_heads, config.head_dim, **options),
            config.d_ff, config.dropout, norm=config.block)
        self.final_norm = nn.LayerNorm(D) if config.final_norm else None
        self.output = AdaptiveLogSoftmax(config.vocab_size, D, config.effective_cutoffs,
                                         weight=self.embedding.weight if config.tie_weight else None)
        if config.init_std is not None:
            self.reset_parameters(config.init_std)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """The paper's LM init (paper.md B.1 item 6): Linear and Embedding weights and the cluster weights N(0, std),
        LayerNorm gains N(1, std), all biases 0. RDN recurrent weights and ``nn.LSTM`` keep their own init."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, std)
            elif isinstance(m, nn.LayerNorm):
                if m.weight is not None:
                    nn.init.normal_(m.weight, 1.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        out = self.output
        if not self.config.tie_weight:
            nn.init.normal_(out.weight, 0.0, std)
        nn.init.zeros_(out.bias)
        if out.cluster_weight is not None:
            nn.init.normal_(out.cluster_weight, 0.0, std)
            nn.init.zeros_(out.cluster_bias)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> ModelState:
        """Zero state: position 0 and every layer's ``initial_state``."""
        batch_size = check_positive_int("batch_size", batch_size)
        device = self.embedding.weight.device if device is None else device
        return ModelState(torch.zeros(batch_size, dtype=torch.long, device=device),
                          self.blocks.initial_state(batch_size, device))

    def _positions(self, start: Tensor, reset: Tensor | None, time: int) -> tuple[Tensor, Tensor]:
        """(positions fed to the encoding [B, T], the new counter [B])."""
        counted = episode_positions(start, reset, time)
        if self.config.position_order == "forward":
            positions = counted
        else:
            positions = torch.arange(time - 1, -1, -1, device=start.device).expand(start.shape[0], time)
        if self.config.clamp_len is not None:
            positions = positions.clamp(max=self.config.clamp_len)
        return positions, counted[:, -1] + 1

    def hidden(self, tokens: Tensor, state: ModelState | None = None, reset: Tensor | None = None
               ) -> tuple[Tensor, ModelState]:
        """The final hidden states ``[B, T, D]`` (after the last dropout) and the new state; see :meth:`forward`."""
        tokens = _check_tokens(tokens, self.config.vocab_size, name="tokens", layout="[B, T]")
        B, T = tokens.shape
        if T == 0:
            raise ValueError(f"tokens: expected at least one time step, got shape {list(tokens.shape)}")
        reset = check_reset(reset, B, T, tokens.device)
        start, layer_states = split_state(state, B, len(self.blocks), tokens.device)
        positions, counter = self._positions(start, reset, T)
        x = self.embedding(tokens) * self.emb_scale
        if self.config.positional_encoding == "sinusoidal":
            x = x + lm_positional_encoding(positions, self.config.d_model, x.dtype)
        x, layer_states = self.blocks(self.dropout(x), layer_states, reset)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.dropout(x), ModelState(counter, layer_states)

    def forward(self, tokens: Tensor, state: ModelState | None = None, targets: Tensor | None = None,
                reset: Tensor | None = None) -> tuple[Tensor, ModelState]:
        """Run the model over token sequences.

        Args:
            tokens: ``[B, T]`` integer token ids in ``[0, vocab_size)``.
            state: a state from a previous call or :meth:`initial_state` (None = zero state, position 0).
            targets: optional ``[B, T]`` next-token ids; then the output is the per-token NLL ``[B, T]``
                (cheap with the adaptive softmax: only the clusters of the targets are scored).
            reset: optional bool ``[B, T]``; True at ``t`` starts a new stream in row ``b`` (every layer state is
                zeroed before step ``t`` and the position counter restarts).
        Returns:
            ``(output, final_state)``: the NLL ``[B, T]`` when targets are given, otherwise the full
            log-distribution ``[B, T, V]`` (for a large vocabulary prefer ``targets`` in training).
        """
        h, state = self.hidden(tokens, state, reset)
        if targets is None:
            return self.output.log_prob(h), state
        targets = _check_tokens(targets, self.config.vocab_size, name="targets", layout="[B, T]")
        if targets.shape != tokens.shape:
            raise ValueError(f"targets: expected the shape of tokens [B, T] = {list(tokens.shape)}, "
                             f"got {list(targets.shape)}")
        return self.output.nll(h, targets.to(h.device)), state

    def log_probs(self, hidden: Tensor) -> Tensor:
        """Full log-distribution of hidden states from :meth:`hidden`: ``[..., D] -> [..., V]``."""
        return self.output.log_prob(hidden)

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Per-token NLL of ``targets [...]`` under hidden states ``[..., D]`` from :meth:`hidden`."""
        return self.output.nll(hidden, targets)

    def step(self, tokens_t: Tensor, state: ModelState | None = None) -> tuple[Tensor, ModelState]:
        """One decoding step: ``tokens_t [B] -> (log_probs [B, V], state)``, equal to the full forward.

        Every layer advances its state by one token (constant memory for the fast-weight layers; a KV cache
        grows by one entry for ``transformer``). Not available with reversed positions (they count back from the
        end of each call, so one token cannot know its position in a longer call).
        """
        if self.config.positional_encoding == "sinusoidal" and self.config.position_order == "reversed":
            raise ValueError("step: positions are reversed within each call (position_order='reversed', paper.md B.1), "
                             "so a single step cannot reproduce a longer forward; use position_order='forward' or "
                             "positional_encoding='none' for step decoding, or re-run the window with forward()")
        tokens_t = _check_tokens(tokens_t, self.config.vocab_size, name="tokens_t", layout="[B]")
        h, state = self.hidden(tokens_t[:, None], state)
        return self.output.log_prob(h[:, 0]), state

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int | None = None) -> Tensor:
        """Continue ``prompt`` (token ids ``[B, T]`` or ``[T]``) by ``max_new_tokens`` tokens: ``[B, N]`` (or ``[N]``).

        The prompt is read in one forward, then every new token costs one :meth:`step`: constant memory per token
        for the fast-weight layers (the ``transformer`` layer's KV cache grows by one entry). ``temperature`` 0 is
        greedy decoding (argmax); otherwise tokens are drawn from ``softmax(log_probs / temperature)`` restricted to
        the ``top_k`` most likely (None: all) with a CPU generator seeded by ``seed`` (None: nondeterministic).
        Models with reversed positions cannot be decoded step by step and are refused.
        """
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected a positive integer, got {max_new_tokens!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not 0 <= temperature < math.inf:
            raise ValueError(f"temperature: expected a finite number >= 0 (0 = greedy), got {temperature!r}")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise ValueError(f"top_k: expected a positive integer, got {top_k!r}")
        if self.config.positional_encoding == "sinusoidal" and self.config.position_order == "reversed":
            raise ValueError("generate: this model adds reversed positions (position_order='reversed', the paper's "
                             "truncated-context setting), which restart at every call, so it cannot be decoded step "
                             "by step; train with position_order=forward or positional_encoding=none (e.g. "
                             "--carry-state)")
        single = isinstance(prompt, Tensor) and prompt.dim() == 1
        prompt = _check_tokens(prompt[None] if single else prompt, self.config.vocab_size, name="prompt",
                               layout="[B, T]")
        if prompt.shape[1] == 0:
            raise ValueError("prompt: expected at least one token (e.g. the id of <eos> to start a line)")
        gen = torch.Generator()
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()
        was_training = self.training
        self.eval()
        try:
            device = self.embedding.weight.device
            h, state = self.hidden(prompt.to(device))
            log_probs = self.log_probs(h[:, -1])  # [B, V]
            out = []
            for i in range(max_new_tokens):
                if temperature == 0:
                    token = log_probs.argmax(-1)
                else:
                    logits = log_probs.float().cpu() / temperature
                    if top_k is not None and top_k < logits.shape[-1]:
                        kth = logits.topk(top_k, dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, -math.inf)
                    token = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)[:, 0].to(device)
                out.append(token)
                if i + 1 < max_new_tokens:
                    log_probs, state = self.step(token, state)
        finally:
            self.train(was_training)
        ids = torch.stack(out, dim=1)
        return ids[0] if single else ids


def build_lm(config: LMConfig) -> LanguageModel:
    """Build the :class:`LanguageModel` a :class:`LMConfig` describes."""
    if not isinstance(config, LMConfig):
        raise TypeError(f"config: expected an LMConfig, got {type(config).__name__}")
    return LanguageModel(config)


def paper_config(model: str, vocab_size: int = WT103_VOCAB_SIZE, *, full_context: bool = False,
                 **overrides: Any) -> LMConfig:
    """The paper's small WT103 configuration (paper.md E.1): 16 layers, D 128, 8 heads of 16, d_inner 2048, dropout
    0.1, dropatt 0.0, tied adaptive softmax (20000, 40000, 200000; div_val 1), N(0, 0.02) init, reversed
    sinusoidal positions (``clamp_len`` 256 as in its evaluation; no effect on 256-token segments).

    Block: ``"paper"`` (``--pre_lnorm``) for the fast-weight models; ``"post_ln"`` for ``transformer`` (its
    baseline script has no ``--pre_lnorm``, paper.md A.9) and for ``full_context=True`` (the "+ full context" rows:
    post-LN and no positional encoding, state carried across segments). ``overrides`` replace any field.
    """
    base = LMConfig(model, vocab_size, d_model=128, num_layers=16, num_heads=8, head_dim=16, d_ff=2048, dropout=0.1,
                    dropatt=0.0, positional_encoding="none" if full_context else "sinusoidal",
                    position_order="reversed", clamp_len=256, softmax="auto", cutoffs=WT103_CUTOFFS, div_val=1,
                    tie_weight=True,
                    block="post_ln" if full_context or model == "transformer" else "paper", final_norm=False,
                    init_std=0.02)
    return replace(base, **overrides) if overrides else base
