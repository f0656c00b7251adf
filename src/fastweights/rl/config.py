"""Configuration of an RL run: :class:`RLConfig`, presets ``fastweights/configs/rl-<preset>.json`` and ``key=value``
overrides (the parser of :mod:`fastweights.train.config`).

Resolution order: dataclass defaults (the paper's Atari setting, paper.md E.3) < preset file < overrides < flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..train.config import (
    ConfigError,
    apply_overrides,
    check_device,
    config_to_dict,
    dataclass_from_dict,
    load_preset,
    option,
)
from .envs import atari_game, is_atari

TASK = "rl"
#: evaluation protocols (see fastweights.rl.train.evaluate_agent)
EVAL_MODES = ("consecutive", "parallel")
#: the games whose official evaluation drops negative-return episodes (an emulator bug, gym issue 2233)
NONEG_GAMES = ("battle_zone", "up_n_down")


@dataclass
class RLConfig:
    """Everything an RL run needs. Defaults: the paper's Atari setting (paper.md B.3, C.4, E.3) with a synchronous
    learner (``num_envs`` streams = the 32 trajectories of a batch)."""

    task: str = option(TASK, "reinforcement learning (set by the command)")
    # environment (see fastweights.rl.envs.make_env)
    env: str = option("BreakoutNoFrameskip-v4", "repeat_first, repeat_previous, count_recall, <Game>NoFrameskip-v4, "
                                                "minatar:<game> or gym:<id>")
    env_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "keyword options of the environment as JSON, e.g. {\"length\": 10}"})
    # agent (see fastweights.rl.agent.AgentConfig)
    model: str = option("delta_net", "the core: feedforward, lstm or a fast-weight layer's registry name")
    torso: str = option("auto", "observation encoder: impala (Atari frames), conv (MinAtar frames), mlp "
                                "(vectors) or auto (by observation shape)")
    torso_dim: int = option(256, "width of the torso's output")
    mlp_layers: int = option(1, "hidden Linear+ReLU layers of the mlp torso")
    d_model: int = option(128, "width of the core's residual stream")
    num_layers: int = option(2, "residual blocks of the core")
    num_heads: int = option(4, "heads of every fast-weight layer")
    head_dim: int | None = option(None, "size of a head; none = d_model / num_heads")
    d_ff: int = option(512, "width of the core's feed-forward sublayer")
    dropout: float = option(0.0, "dropout probability in the core")
    lstm_hidden: int = option(256, "lstm core: hidden size")
    prev_action: bool = option(False, "also feed the previous action to the core (the paper does not)")
    layer_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "keyword options of the layer as JSON, e.g. {\"version\": 1}"})
    # rollouts and learner
    num_envs: int = option(32, "environment copies = trajectories per update")
    unroll_length: int = option(50, "agent steps per trajectory of an update")
    total_steps: int = option(200_000_000, "agent steps of the whole run (each 4 frames on Atari)")
    cut_state_grad_every_step: bool = option(False, "detach the core state after every step (the official "
                                                    "code, paper.md F.9)")
    # loss (paper.md E.3)
    discount: float = option(0.99, "discount factor")
    baseline_cost: float = option(0.5, "weight of the value loss")
    entropy_cost: float = option(0.01, "weight of the entropy bonus")
    reward_clip: float = option(1.0, "clip rewards to [-c, c] in the loss; 0 = off")
    clip_rho: float = option(1.0, "V-trace: clip of the importance weights of the value targets")
    clip_c: float = option(1.0, "V-trace: clip of the trace coefficients")
    clip_pg_rho: float = option(1.0, "V-trace: clip of the importance weights of the policy gradient")
    # optimiser (paper.md E.3)
    lr: float = option(6e-4, "learning rate of RMSProp")
    rms_alpha: float = option(0.99, "RMSProp's decay of the squared gradients")
    rms_eps: float = option(0.01, "RMSProp's epsilon")
    rms_momentum: float = option(0.0, "RMSProp's momentum")
    grad_norm_clip: float = option(40.0, "global gradient-norm clipping; 0 = off")
    lr_decay: bool = option(True, "decay the learning rate linearly to 0 at total_steps")
    # evaluation (paper.md C.4): greedy, eval_runs x eval_episodes episodes
    eval_episodes: int = option(30, "episodes per evaluation run")
    eval_runs: int = option(5, "evaluation runs (mean and std over them)")
    eval_greedy: bool = option(True, "greedy actions in evaluation (false: sampled)")
    eval_mode: str = option("parallel", "consecutive: one environment plays all episodes in a row (the official "
                                        "test); parallel: eval_envs copies per run")
    eval_envs: int = option(30, "parallel mode: copies per evaluation run")
    eval_noneg: bool | None = option(None, "drop negative-return evaluation episodes, start a new game; none = only "
                                           "for BattleZone, UpNDown")
    # run
    seed: int = option(1, "seed of the initialisation, actions and environments")
    device: str = option("cpu", "cpu, cuda or cuda:N")
    threads: int | None = option(None, "torch threads; none = torch's default")
    log_every: int = option(50, "updates between metrics rows")
    checkpoint_every: int = option(500, "updates between checkpoints (last.pt)")
    extra_checkpoints: list[int] = field(default_factory=list, metadata={
        "help": "agent steps at which to keep a step-<N>.pt checkpoint, e.g. 50000000"})
    log_every_s: float = option(10.0, "seconds between progress lines when the output is not a terminal")
    out_dir: str = option("runs", "where run directories are made (without --run-dir)")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def total_updates(self) -> int:
        return -(-self.total_steps // self.steps_per_update)

    def noneg(self) -> bool:
        """Whether evaluation drops negative-return episodes: ``eval_noneg``, or where it is none, whether ``env``
        is one of the games the official code filters (:data:`NONEG_GAMES`)."""
        if self.eval_noneg is not None:
            return self.eval_noneg
        return atari_game(self.env) in NONEG_GAMES

    def agent_fields(self) -> dict[str, Any]:
        """The :class:`~fastweights.rl.agent.AgentConfig` fields of this run (besides obs_shape/num_actions)."""
        return {"core": self.model, "torso": self.torso, "torso_dim": self.torso_dim, "mlp_layers": self.mlp_layers,
                "d_model": self.d_model, "num_layers": self.num_layers, "num_heads": self.num_heads,
                "head_dim": self.head_dim, "d_ff": self.d_ff, "dropout": self.dropout,
                "lstm_hidden": self.lstm_hidden, "prev_action": self.prev_action,
                "layer_options": dict(self.layer_options)}

    def validate(self) -> None:
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
        if self.eval_mode not in EVAL_MODES:
            raise ConfigError(f"eval_mode: expected one of {list(EVAL_MODES)}, got {self.eval_mode!r}")
        if self.eval_noneg and not is_atari(self.env):
            raise ConfigError(f"eval_noneg: the filter restarts Atari games; env {self.env!r} is not an Atari game")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: expected a positive integer or none, got {self.threads}")
        if any(s < 1 for s in self.extra_checkpoints):
            raise ConfigError(f"extra_checkpoints: expected positive step counts, got {self.extra_checkpoints}")
        try:  # the agent fields (obs_shape/num_actions are only known with the environment)
            from .agent import AgentConfig

            AgentConfig(obs_shape=(4,), num_actions=2, **{**self.agent_fields(), "torso": "mlp"})
        except ValueError as e:
            raise ConfigError(str(e)) from None
        check_device(self.device)


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

