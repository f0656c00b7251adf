"""Recurrent actor-critic agent of the paper's Atari experiments (paper.md B.3, A.9, A.10, A.11), with any registry
layer as its core.

    obs -> torso (IMPALA deep ResNet for 84x84x4 frames, one conv for MinAtar, MLP for vectors) -> ReLU'd features F
        -> concat [F, clip(prev_reward, -1, 1) (, one_hot(prev_action))]   (the core input, 257-d on Atari)
        -> core -> policy logits Linear(., A) and baseline Linear(., 1)

Cores (``AgentConfig.core``):

* ``"feedforward"``: no core, the heads read the core input (the paper's feed-forward baseline; not the registry's
  ``feedforward`` layer);
* ``"lstm"``: ``nn.LSTM(core input, lstm_hidden=256)``, 1 layer, no residual block (the paper's LSTM baseline; not
  the registry's ``lstm`` layer in blocks);
* any other registry layer (``delta_net``, ``linear_transformer``, ``delta_rnn``, ``rdn``, ``delta_lstm``,
  ``delta_mlp``, ``delta_delta_net``): Linear(core input -> D, bias) -> ``num_layers`` pre-LN residual blocks
  [layer + FF ``d_ff``] (a :class:`~fastweights.models.blocks.BlockStack`; paper.md B.3; D=128, 2 layers, 4 heads x
  32, FF 512 by default) with the layer's RL preset (``TASK_OPTIONS["rl"]``: the feature maps of paper.md A.10,
  sum-normalised with eps 1e-5 for Delta Net/LT, softmax for Delta RNN) unless ``layer_options`` says otherwise.
  ``"transformer"`` is refused: its KV cache would grow without bound along an RL stream.

Layout: **batch first** like the rest of the library: ``obs [B, T, ...]``, ``done [B, T]``. ``done[b, t]`` is True
when ``obs[b, t]`` is the first observation of a new episode: the core state of row b is zeroed before step t
(paper.md F.13: the official code multiplies every state by (1 - done)) and the previous reward/action inputs are
zeroed there too, so an episode never sees anything of the one before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..fields import (
    check_bool,
    check_dict,
    check_non_negative_int,
    check_positive_int,
    check_probability,
    embed,
    option,
)
from ..layers.base import detach_state
from ..layers.lstm import run_lstm
from ..layers.registry import available_layers, build_layer, check_layer, layer_options, task_options
from ..models.blocks import BlockStack
from ..models.config import StackOptions

TORSOS = ("auto", "impala", "conv", "mlp")
#: Cores that are no registry layer in residual blocks: no core at all, and a bare ``nn.LSTM`` (see the module
#: docstring; the registry layers of the same names are not used by the agent).
BASELINE_CORES = ("feedforward", "lstm")


def rl_cores() -> list[str]:
    """The registered core names an :class:`Agent` accepts (also a user's layer by import path, ``module:Class``)."""
    return [n for n in available_layers() if n != "transformer"]


def check_core(name: object, argument: str = "core") -> None:
    """Refuse a core an :class:`Agent` cannot run: no layer (:func:`fastweights.layers.check_layer`), or the
    ``transformer``, whose KV cache grows without bound along an RL stream."""
    if name == "transformer":
        raise ValueError(f"{argument}: expected one of {rl_cores()}, got 'transformer' (its KV cache grows without "
                         f"bound along an RL stream)")
    check_layer(name, argument)


#: The RL presets of the fast-weight cores (paper.md A.10), as the layers' ``TASK_OPTIONS["rl"]`` give them.
RL_LAYER_DEFAULTS: dict[str, dict[str, Any]] = {
    name: task_options(name, "rl") for name in rl_cores() if name not in BASELINE_CORES}


@dataclass
class _AgentInputs:
    """What an :class:`AgentConfig` needs that the environment decides (positional arguments, after the core)."""

    core: str
    obs_shape: tuple[int, ...]
    num_actions: int


@dataclass
@embed(StackOptions, after="mlp_layers", d_model=128, num_layers=2, num_heads=4, dropout=0.0)
class AgentOptions:
    """The sizes and options of an agent, each with its meaning (``fastweights train rl --help`` shows them):
    :class:`AgentConfig` and the RL training configuration share them."""

    torso: str = option("auto", "observation encoder: impala (Atari frames), conv (MinAtar frames), mlp (vectors) or "
                                "auto (by observation shape)")
    torso_dim: int = option(256, "width of the torso's output")
    mlp_layers: int = option(1, "hidden Linear+ReLU layers of the mlp torso")
    d_ff: int = option(512, "width of the core's feed-forward sublayer")
    lstm_hidden: int = option(256, "lstm core: hidden size")
    prev_action: bool = option(False, "also feed the previous action to the core (the paper does not)")


@dataclass
class AgentConfig(AgentOptions, _AgentInputs):
    """Sizes of an :class:`Agent` (defaults: the paper's Atari agent, paper.md B.3 / E.3).

    Attributes:
        core: ``"feedforward"``, ``"lstm"`` or a fast-weight registry layer (see :func:`rl_cores`).
        obs_shape: one observation's shape: ``(C, H, W)`` frames or ``(N,)`` vectors.
        num_actions: size of the discrete action space.
        torso: ``"impala"`` (Atari frames), ``"conv"`` (MinAtar's small frames), ``"mlp"`` (vectors) or
            ``"auto"`` (impala for 3-d observations).
        torso_dim: torso output width (256 on Atari). mlp_layers: hidden Linear+ReLU layers of the MLP torso.
        d_model, num_layers, num_heads, head_dim, d_ff, dropout: the fast-weight core (paper.md B.3).
        lstm_hidden: LSTM core width (256 in the paper).
        prev_action: also feed a one-hot of the previous action to the core (the paper does not: paper.md F.13).
        layer_options: options of the core layer on top of its RL preset (the layer's ``TASK_OPTIONS["rl"]``,
            see :func:`fastweights.layers.task_options`).
    """

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(s) for s in self.obs_shape)
        check_core(self.core)
        if not self.obs_shape or any(s < 1 for s in self.obs_shape):
            raise ValueError(f"obs_shape: expected positive sizes, got {self.obs_shape}")
        if self.torso not in TORSOS:
            raise ValueError(f"torso: expected one of {list(TORSOS)}, got {self.torso!r}")
        if self.resolved_torso in ("impala", "conv") and len(self.obs_shape) != 3:
            raise ValueError(f"torso: {self.resolved_torso} needs [C, H, W] observations, got obs_shape "
                             f"{self.obs_shape}")
        for name in ("num_actions", "torso_dim", "d_model", "num_layers", "num_heads", "d_ff", "lstm_hidden"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("head_dim", self.head_dim, optional=True)
        check_non_negative_int("mlp_layers", self.mlp_layers)
        check_probability("dropout", self.dropout)
        check_bool("prev_action", self.prev_action)
        check_dict("layer_options", self.layer_options)
        if self.core in BASELINE_CORES and self.layer_options:
            raise ValueError(f"layer_options: the {self.core} core takes none, got {sorted(self.layer_options)}")
        if self.core not in BASELINE_CORES:
            unknown = sorted(set(self.layer_options) - set(layer_options(self.core)))
            if unknown:
                raise ValueError(f"layer_options: layer {self.core!r} takes no option(s) {unknown}; "
                                 f"valid: {layer_options(self.core)}")

    @property
    def resolved_torso(self) -> str:
        if self.torso != "auto":
            return self.torso
        return "impala" if len(self.obs_shape) == 3 else "mlp"

    @property
    def core_layer_options(self) -> dict[str, Any]:
        """The options of the core layer: its RL preset overridden by ``layer_options``."""
        return task_options(self.core, "rl", self.layer_options)


class _ImpalaResidual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class ImpalaTorso(nn.Module):
    """IMPALA "deep" ResNet (paper.md B.3): for 16, 32, 32 channels: Conv3x3 -> MaxPool3x3/2 -> 2 residual blocks;
    then ReLU -> flatten -> Linear -> ReLU. Input uint8 (or float) ``[N, C, H, W]``, scaled by 1/255."""

    def __init__(self, in_shape: tuple[int, int, int], out_dim: int = 256, channels: tuple[int, ...] = (16, 32, 32)
                 ) -> None:
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1),
                       _ImpalaResidual(ch), _ImpalaResidual(ch)]
            c, h, w = ch, (h + 1) // 2, (w + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(c * h * w, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.fc.weight.dtype) / 255.0
        return F.relu(self.fc(F.relu(self.convs(x)).flatten(1)))


class ConvTorso(nn.Module):
    """The small torso of MinAtar's baselines for ``[C, 10, 10]`` binary frames: Conv3x3 (16 channels, no padding)
    -> ReLU -> flatten -> Linear -> ReLU. Input uint8 or float ``[N, C, H, W]``, used as it is (0/1 channels need
    no scaling)."""

    def __init__(self, in_shape: tuple[int, int, int], out_dim: int = 128, channels: int = 16) -> None:
        super().__init__()
        c, h, w = in_shape
        if h < 3 or w < 3:
            raise ValueError(f"obs_shape: the conv torso needs frames of at least 3x3, got {list(in_shape)}")
        self.conv = nn.Conv2d(c, channels, 3)
        self.fc = nn.Linear(channels * (h - 2) * (w - 2), out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc(F.relu(self.conv(x.to(self.fc.weight.dtype))).flatten(1)))


class MLPTorso(nn.Module):
    """``Linear(obs, torso_dim) -> ReLU`` plus ``hidden_layers`` more ``Linear -> ReLU`` for vector observations."""

    def __init__(self, in_dim: int, out_dim: int, hidden_layers: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim), nn.ReLU()]
        for _ in range(hidden_layers):
            layers += [nn.Linear(out_dim, out_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.to(self.net[0].weight.dtype).flatten(1))


class RLCore(nn.Module):
    """The recurrent core: ``forward(x [B, T, in_dim], state, reset [B, T]) -> (y [B, T, out_dim], state)``.

    ``cut_state_grad=True`` runs the core one step at a time and detaches the state after every step: what the
    official code's fast-weight kernels do (they return no gradient for their initial state, paper.md F.9). The
    LSTM core is never cut (the official LSTM baseline back-propagates through the whole unroll).
    """

    def __init__(self, config: AgentConfig, in_dim: int) -> None:
        super().__init__()
        self.kind = config.core
        if self.kind == "feedforward":
            self.out_dim = in_dim
        elif self.kind == "lstm":
            self.lstm = nn.LSTM(in_dim, config.lstm_hidden, 1, batch_first=True)
            self.out_dim = config.lstm_hidden
        else:
            self.input_proj = nn.Linear(in_dim, config.d_model)
            options = config.core_layer_options
            self.blocks = BlockStack.build(
                config.num_layers,
                lambda: build_layer(config.core, config.d_model, config.num_heads, config.head_dim, **options),
                config.d_ff, config.dropout)
            self.out_dim = config.d_model

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        p = next(self.parameters(), None)
        device = (p.device if p is not None else "cpu") if device is None else device
        if self.kind == "feedforward":
            return ()
        if self.kind == "lstm":
            z = torch.zeros(1, batch_size, self.out_dim, device=device, dtype=self.lstm.weight_ih_l0.dtype)
            return (z, z.clone())
        return self.blocks.initial_state(batch_size, device)

    def _run(self, x: Tensor, state: Any, reset: Tensor | None) -> tuple[Tensor, Any]:
        if self.kind == "feedforward":
            return x, ()
        if self.kind == "lstm":
            out, s = run_lstm(self.lstm, x, None if state is None else tuple(state), reset)
            return out, (s.h, s.c)
        return self.blocks(self.input_proj(x), state, reset)

    def forward(self, x: Tensor, state: Any = None, reset: Tensor | None = None, *, cut_state_grad: bool = False
                ) -> tuple[Tensor, Any]:
        if not cut_state_grad or self.kind in BASELINE_CORES:
            return self._run(x, state, reset)
        outs = []
        for t in range(x.shape[1]):
            y, state = self._run(x[:, t:t + 1], state, None if reset is None else reset[:, t:t + 1])
            state = detach_state(state)
            outs.append(y)
        return torch.cat(outs, dim=1), state


class AgentOutput(NamedTuple):
    """``logits [B, T, A]``, ``baseline [B, T]`` and the core state after the last step."""

    logits: Tensor
    baseline: Tensor
    state: Any


class ActOutput(NamedTuple):
    """One step: ``action [B]`` (long), ``logits [B, A]``, ``baseline [B]``, the new core state."""

    action: Tensor
    logits: Tensor
    baseline: Tensor
    state: Any


def _check_bt(name: str, x: object, B: int, T: int, *, kind: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [B, T] = [{B}, {T}], got {type(x).__name__}")
    if tuple(x.shape) != (B, T):
        raise ValueError(f"{name}: expected shape [B, T] = [{B}, {T}], got {list(x.shape)}")
    if kind == "bool" and x.dtype != torch.bool:
        raise TypeError(f"{name}: expected a bool tensor, got dtype {x.dtype}")
    if kind == "float" and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if kind == "long" and (x.is_floating_point() or x.dtype == torch.bool):
        raise TypeError(f"{name}: expected an integer tensor, got dtype {x.dtype}")
    return x


class Agent(nn.Module):
    """Actor-critic agent (see the module docstring).

    * ``forward(obs [B, T, *obs_shape], done [B, T], prev_reward [B, T], prev_action [B, T] | None, state)
      -> AgentOutput(logits [B, T, A], baseline [B, T], state)``;
    * ``act(obs [B, *obs_shape], done [B], prev_reward [B], prev_action [B] | None, state, greedy=False)
      -> ActOutput``: one step (sampled from softmax(logits), or argmax when ``greedy``);
    * ``initial_state(batch)``: the zero core state (what ``state=None`` means).
    """

    def __init__(self, config: AgentConfig) -> None:
        super().__init__()
        if not isinstance(config, AgentConfig):
            raise TypeError(f"config: expected an AgentConfig, got {type(config).__name__}")
        self.config = config
        if config.resolved_torso == "impala":
            self.torso: nn.Module = ImpalaTorso(config.obs_shape, config.torso_dim)  # type: ignore[arg-type]
        elif config.resolved_torso == "conv":
            self.torso = ConvTorso(config.obs_shape, config.torso_dim)  # type: ignore[arg-type]
        else:
            in_dim = 1
            for s in config.obs_shape:
                in_dim *= s
            self.torso = MLPTorso(in_dim, config.torso_dim, config.mlp_layers)
        core_in = config.torso_dim + 1 + (config.num_actions if config.prev_action else 0)
        self.core = RLCore(config, core_in)
        self.policy = nn.Linear(self.core.out_dim, config.num_actions)
        self.baseline = nn.Linear(self.core.out_dim, 1)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """Zero core state for ``batch_size`` streams: ``()`` (feedforward), ``(h, c)`` (lstm) or one state per
        fast-weight layer."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        return self.core.initial_state(batch_size, device)

    def forward(self, obs: Tensor, done: Tensor, prev_reward: Tensor | None = None,
                prev_action: Tensor | None = None, state: Any = None, *, cut_state_grad: bool = False
                ) -> AgentOutput:
        """Run over ``T`` steps of ``B`` streams (see the class docstring); ``prev_reward`` None = zeros.
        ``cut_state_grad``: detach the core state after every step (see :class:`RLCore`)."""
        cfg = self.config
        if not isinstance(obs, Tensor):
            raise TypeError(f"obs: expected a torch.Tensor [B, T, *{list(cfg.obs_shape)}], got {type(obs).__name__}")
        if obs.dim() != 2 + len(cfg.obs_shape) or tuple(obs.shape[2:]) != cfg.obs_shape:
            raise ValueError(f"obs: expected shape [B, T, *{list(cfg.obs_shape)}] (batch first), got "
                             f"{list(obs.shape)}")
        B, T = obs.shape[:2]
        done = _check_bt("done", done, B, T, kind="bool").to(obs.device)
        dtype = self.policy.weight.dtype
        keep = (~done).to(dtype)
        if prev_reward is None:
            prev_reward = torch.zeros(B, T, device=obs.device, dtype=dtype)
        prev_reward = _check_bt("prev_reward", prev_reward, B, T, kind="float")
        feats = self.torso(obs.reshape(B * T, *cfg.obs_shape)).view(B, T, -1)
        parts = [feats, (prev_reward.to(dtype).clamp(-1.0, 1.0) * keep)[..., None]]
        if cfg.prev_action:
            if prev_action is None:
                raise ValueError("prev_action: this agent was built with prev_action=True; pass the previous "
                                 "actions [B, T] (any value where done is True)")
            prev_action = _check_bt("prev_action", prev_action, B, T, kind="long")
            parts.append(F.one_hot(prev_action.long().clamp(0, cfg.num_actions - 1), cfg.num_actions).to(dtype)
                         * keep[..., None])
        h, state = self.core(torch.cat(parts, dim=-1), state, done, cut_state_grad=cut_state_grad)
        return AgentOutput(self.policy(h), self.baseline(h).squeeze(-1), state)

    def act(self, obs: Tensor, done: Tensor, prev_reward: Tensor | None = None, prev_action: Tensor | None = None,
            state: Any = None, *, greedy: bool = False, generator: torch.Generator | None = None) -> ActOutput:
        """One step for ``B`` streams: ``obs [B, *obs_shape]``, ``done [B]`` (bool), ``prev_reward [B]``,
        ``prev_action [B]``. Actions are sampled from ``softmax(logits)`` with ``generator``, or argmax if
        ``greedy``."""
        if not isinstance(obs, Tensor) or not isinstance(done, Tensor):
            raise TypeError("act: obs and done must be torch.Tensors [B, ...] and [B]")
        if done.dim() != 1:
            raise ValueError(f"done: expected shape [B], got {list(done.shape)}")
        out = self.forward(obs[:, None], done[:, None], None if prev_reward is None else prev_reward[:, None],
                           None if prev_action is None else prev_action[:, None], state)
        logits, baseline = out.logits[:, 0], out.baseline[:, 0]
        if greedy:
            action = logits.argmax(-1)
        else:
            action = torch.multinomial(F.softmax(logits.float(), dim=-1), 1, generator=generator).squeeze(-1)
        return ActOutput(action, logits, baseline, out.state)


def build_agent(config: AgentConfig) -> Agent:
    """The :class:`Agent` an :class:`AgentConfig` describes."""
    return Agent(config)
