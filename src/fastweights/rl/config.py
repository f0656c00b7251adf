"""Configuration of an RL run: :class:`RLConfig`, presets ``fastweights/configs/rl-<preset>.json`` and ``key=value``
overrides (the parser of :mod:`fastweights.runs.config`); ``fastweights.tasks.resolve_config("rl", ...)`` resolves
one.

Resolution order: dataclass defaults (the paper's Atari setting, paper.md E.3) < preset file < overrides < flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..fields import (
    ConfigError,
    check_choice,
    check_non_negative,
    check_number,
    check_positive,
    check_positive_int,
    config_errors,
    embed,
    embedded_fields,
    option,
)
from ..runs.config import RunOptions, check_run_options, config_to_dict, dataclass_from_dict
from .agent import AgentOptions
from .envs import atari_game, is_atari

TASK = "rl"
#: evaluation protocols (see fastweights.rl.evaluate.evaluate_agent)
RL_EVAL_MODES = ("consecutive", "parallel")
#: the games whose official evaluation drops negative-return episodes (an emulator bug, gym issue 2233)
NONEG_GAMES = ("battle_zone", "up_n_down")


@dataclass
@embed(AgentOptions, after="model")
@embed(RunOptions, after="eval_noneg", seed=1)
class RLConfig:
    """Everything an RL run needs. Defaults: the paper's Atari setting (paper.md B.3, C.4, E.3) with a synchronous
    learner (``num_envs`` streams = the 32 trajectories of a batch)."""

    task: str = option(TASK, "reinforcement learning (set by the command)")
    # environment (see fastweights.rl.envs.make_env)
    env: str = option("BreakoutNoFrameskip-v4", "repeat_first, repeat_previous, count_recall, <Game>NoFrameskip-v4, "
                                                "minatar:<game> or gym:<id>")
    env_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "keyword options of the environment as JSON, e.g. {\"length\": 10}"})
    # agent: the fields of fastweights.rl.agent.AgentOptions (torso, d_model, num_layers, ...), and
    model: str = option("delta_net", "the core: feedforward, lstm or a fast-weight layer's registry name")
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
    lr_schedule: str = option("linear", "learning rate: linear (decays to 0 at total_steps, the paper) or constant")
    # evaluation (paper.md C.4): greedy, eval_runs x eval_episodes episodes
    eval_episodes: int = option(30, "episodes per evaluation run")
    eval_runs: int = option(5, "evaluation runs (mean and std over them)")
    eval_greedy: bool = option(True, "greedy actions in evaluation (false: sampled)")
    eval_mode: str = option("parallel", "consecutive: one environment plays all episodes in a row (the official "
                                        "test); parallel: eval_envs copies per run")
    eval_envs: int = option(30, "parallel mode: copies per evaluation run")
    eval_noneg: bool | None = option(None, "drop negative-return evaluation episodes, start a new game; none = only "
                                           "for BattleZone, UpNDown")
    # run: the fields of RunOptions (seed, device, threads, log_every_s, out_dir), and
    log_interval: int = option(50, "updates between metrics rows")
    checkpoint_interval: int = option(500, "updates between checkpoints (last.pt)")
    extra_checkpoints: list[int] = field(default_factory=list, metadata={
        "help": "agent steps at which to keep a step-<N>.pt checkpoint, e.g. 50000000"})

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
        return {"core": self.model, **embedded_fields(self, AgentOptions)}

    def validate(self) -> None:
        from .agent import AgentConfig, check_core

        check_choice("task", self.task, (TASK,), repr(TASK))
        with config_errors():
            check_core(self.model, "model")
        if not isinstance(self.env, str) or not self.env:
            raise ConfigError(f"env: expected an environment name, got {self.env!r}")
        for name in ("num_envs", "unroll_length", "total_steps", "eval_episodes", "eval_runs", "eval_envs",
                     "log_interval", "checkpoint_interval"):
            check_positive_int(name, getattr(self, name))
        check_number("discount", self.discount, low=0, high=1, expected="a value in [0, 1]")
        for name in ("baseline_cost", "entropy_cost", "reward_clip", "grad_norm_clip", "rms_momentum"):
            check_non_negative(name, getattr(self, name))
        for name in ("clip_rho", "clip_c", "clip_pg_rho", "lr", "rms_eps"):
            check_positive(name, getattr(self, name))
        check_number("rms_alpha", self.rms_alpha, low=0, high=1, high_open=True, expected="a value in [0, 1)")
        check_choice("eval_mode", self.eval_mode, RL_EVAL_MODES)
        check_choice("lr_schedule", self.lr_schedule, ("linear", "constant"), "'linear' or 'constant'")
        if self.eval_noneg and not is_atari(self.env):
            raise ConfigError(f"eval_noneg: the filter restarts Atari games; env {self.env!r} is not an Atari game")
        for step in self.extra_checkpoints:
            check_positive_int("extra_checkpoints", step)
        with config_errors():  # the agent fields (obs_shape/num_actions are only known with the environment)
            AgentConfig(obs_shape=(4,), num_actions=2, **{**self.agent_fields(), "torso": "mlp"})
        check_run_options(self)


rl_config_to_dict = config_to_dict


def rl_config_from_dict(values: dict[str, Any], where: str = "config: ") -> RLConfig:
    """The :class:`RLConfig` a ``config.json`` holds; an unknown key or a value of the wrong type is refused."""
    return dataclass_from_dict(RLConfig, values, where)

