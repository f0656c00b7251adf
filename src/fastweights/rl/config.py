"""Configuration of an RL run: :class:`RLConfig`, presets ``fastweights/configs/rl-<preset>.json`` and ``key=value``
overrides (the parser of :mod:`fastweights.train.config`).

Resolution order: dataclass defaults (the paper's Atari setting, spec E.3) < preset file < overrides < flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..train.config import ConfigError, apply_overrides, config_to_dict, dataclass_from_dict, load_preset

TASK = "rl"


@dataclass
class RLConfig:
    """Everything an RL run needs. Defaults: the paper's Atari setting (spec B.3, C.4, E.3) with a synchronous
    learner (``num_envs`` streams = the 32 trajectories of a batch)."""

    task: str = TASK
    # environment (see fastweights.rl.envs.make_env)
    env: str = "BreakoutNoFrameskip-v4"
    env_options: dict[str, Any] = field(default_factory=dict)
    # agent (see fastweights.rl.agent.AgentConfig)
    model: str = "delta_net"
    torso: str = "auto"
    torso_dim: int = 256
    mlp_layers: int = 1
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    head_dim: int | None = None
    d_ff: int = 512
    dropout: float = 0.0
    lstm_hidden: int = 256
    prev_action: bool = False
    layer_options: dict[str, Any] = field(default_factory=dict)
    # rollouts and learner
    num_envs: int = 32  # streams = trajectories per update
    unroll_length: int = 50
    total_steps: int = 200_000_000  # agent steps (each 4 frames on Atari)
    cut_state_grad_every_step: bool = False  # the official code's behaviour (spec F.9)
    # loss (spec E.3)
    discount: float = 0.99
    baseline_cost: float = 0.5
    entropy_cost: float = 0.01
    reward_clip: float = 1.0  # clip rewards to [-c, c] in the loss; 0 = off
    clip_rho: float = 1.0
    clip_c: float = 1.0
    clip_pg_rho: float = 1.0
    # optimiser (spec E.3)
    lr: float = 6e-4
    rms_alpha: float = 0.99
    rms_eps: float = 0.01
    rms_momentum: float = 0.0
    grad_norm_clip: float = 40.0  # 0 = off
    lr_decay: bool = True  # linear decay to 0 at total_steps
    # evaluation (spec C.4): greedy, eval_runs x eval_episodes episodes
    eval_episodes: int = 30
    eval_runs: int = 5
    eval_greedy: bool = True
    eval_envs: int = 30  # parallel copies during evaluation (each plays a fixed share of the episodes)
    # run
    seed: int = 1
    device: str = "cpu"
    threads: int | None = None
    log_every: int = 50  # updates between metrics rows
    checkpoint_every: int = 500  # updates between checkpoints (last.pt)
    extra_checkpoints: list[int] = field(default_factory=list)  # agent steps at which to keep step-<N>.pt
    log_every_s: float = 10.0
    out_dir: str = "runs"

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def total_updates(self) -> int:
        return -(-self.total_steps // self.steps_per_update)

    def agent_fields(self) -> dict[str, Any]:
        """The :class:`~fastweights.rl.agent.AgentConfig` fields of this run (besides obs_shape/num_actions)."""
        return {"core": self.model, "torso": self.torso, "torso_dim": self.torso_dim, "mlp_layers": self.mlp_layers,
                "d_model": self.d_model, "num_layers": self.num_layers, "num_heads": self.num_heads,
                "head_dim": self.head_dim, "d_ff": self.d_ff, "dropout": self.dropout,
                "lstm_hidden": self.lstm_hidden, "prev_action": self.prev_action,
                "layer_options": dict(self.layer_options)}

    def validate(self) -> None:
        import torch

        from .agent import rl_cores

        if self.task != TASK:
            raise ConfigError(f"task: expected {TASK!r}, got {self.task!r}")
        if self.model not in rl_cores():
            raise ConfigError(f"model: expected one of {rl_cores()}, got {self.model!r}")
        if not isinstance(self.env, str) or not self.env:
            raise ConfigError(f"env: expected an environment name, got {self.env!r}")
        for name in ("num_envs", "unroll_length", "total_steps", "eval_episodes", "eval_runs", "eval_envs",
                     "log_every", "checkpoint_every", "torso_dim", "d_model", "num_layers", "num_heads", "d_ff",
                     "lstm_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if not 0 <= self.discount <= 1:
            raise ConfigError(f"discount: expected a value in [0, 1], got {self.discount}")
        for name in ("baseline_cost", "entropy_cost", "reward_clip", "grad_norm_clip", "rms_momentum"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}: expected a value >= 0, got {getattr(self, name)}")
        for name in ("clip_rho", "clip_c", "clip_pg_rho", "lr", "rms_eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: expected a positive value, got {getattr(self, name)}")
        if not 0 <= self.rms_alpha < 1:
            raise ConfigError(f"rms_alpha: expected a value in [0, 1), got {self.rms_alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: expected a probability in [0, 1), got {self.dropout}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: expected a positive integer or none, got {self.threads}")
        if any(s < 1 for s in self.extra_checkpoints):
            raise ConfigError(f"extra_checkpoints: expected positive step counts, got {self.extra_checkpoints}")
        try:  # the agent fields (obs_shape/num_actions are only known with the environment)
            from .agent import AgentConfig

            AgentConfig(obs_shape=(4,), num_actions=2, **{**self.agent_fields(), "torso": "mlp"})
        except ValueError as e:
            raise ConfigError(str(e)) from None
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ConfigError(f"device: expected cpu, cuda or cuda:N, got {self.device!r}") from None
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device: {self.device!r} requested but CUDA is not available; use device=cpu")


def resolve_rl_config(env: str | None = None, model: str | None = None, preset: str | None = None,
                      overrides: list[str] | None = None, **flags: Any) -> RLConfig:
    """The validated :class:`RLConfig`: defaults < ``fastweights/configs/rl-<preset>.json`` < ``key=value`` overrides <
    ``env``/``model``/other flags (None = not given). An ``env`` flag naming another environment than the preset's
    drops the preset's ``env_options`` (unless ``env_options`` is overridden too)."""
    cfg = RLConfig()
    if preset is not None:
        load_preset(cfg, TASK, preset)
    preset_env = cfg.env
    overrides = list(overrides or [])
    apply_overrides(cfg, overrides)
    options_given = any(o.split("=", 1)[0].strip().replace("-", "_") == "env_options" for o in overrides)
    if env is not None and env != preset_env and not options_given:
        cfg.env_options = {}  # the preset's options belong to its own environment
    for key, value in {"env": env, "model": model, **flags}.items():
        if value is not None:
            if key not in {f.name for f in dataclasses.fields(RLConfig)}:
                raise ConfigError(f"{key}: not an RL configuration field")
            setattr(cfg, key, value)
    cfg.task = TASK
    cfg.validate()
    return cfg


rl_config_to_dict = config_to_dict


def rl_config_from_dict(values: dict[str, Any]) -> RLConfig:
    """The :class:`RLConfig` a ``config.json`` holds; unknown keys are ignored."""
    return dataclass_from_dict(RLConfig, values)


def default_preset(env: str | None) -> str:
    """The preset a command line without ``--preset`` uses: ``paper`` for Atari games, ``cpu`` otherwise."""
    from .envs import is_atari

    return "paper" if env is not None and is_atari(env) else "cpu"
