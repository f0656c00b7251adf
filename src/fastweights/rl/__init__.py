"""Reinforcement learning with fast weight programmers (paper.md B.3, C.4, E.3): a recurrent actor-critic agent whose
core is any registry layer, V-trace (IMPALA) losses, a synchronous learner with run directories and resume,
the paper's evaluation protocol, NumPy memory tasks and the Atari preprocessing of the paper (through ale-py).

Optional: ``gymnasium`` + ``ale-py`` for Atari (``pip install 'fastweights[rl]'``), ``ray[rllib]`` for
:mod:`fastweights.rl.rllib`. Everything else needs only torch and NumPy.
"""

from .actor import Actor, Rollout, learner_loss
from .agent import (
    RL_LAYER_DEFAULTS,
    ActOutput,
    Agent,
    AgentConfig,
    AgentOutput,
    ImpalaTorso,
    MLPTorso,
    RLCore,
    build_agent,
    rl_cores,
)
from .config import RLConfig, rl_config_from_dict, rl_config_to_dict
from .envs import (
    MEMORY_TASKS,
    AtariEnv,
    AtariGame,
    BatchedEnv,
    CountRecall,
    GymnasiumEnv,
    RepeatFirst,
    RepeatPrevious,
    StepResult,
    make_env,
)
from .evaluate import evaluate_agent
from .train import evaluate_run, load_agent, train
from .vtrace import VTraceReturns, impala_loss, linear_decay, rmsprop, vtrace_from_log_rhos, vtrace_from_logits

__all__ = [
    "MEMORY_TASKS",
    "RL_LAYER_DEFAULTS",
    "ActOutput",
    "Actor",
    "Agent",
    "AgentConfig",
    "AgentOutput",
    "AtariEnv",
    "AtariGame",
    "BatchedEnv",
    "CountRecall",
    "GymnasiumEnv",
    "ImpalaTorso",
    "MLPTorso",
    "RLConfig",
    "RLCore",
    "RepeatFirst",
    "RepeatPrevious",
    "Rollout",
    "StepResult",
    "VTraceReturns",
    "build_agent",
    "evaluate_agent",
    "evaluate_run",
    "impala_loss",
    "learner_loss",
    "linear_decay",
    "load_agent",
    "make_env",
    "rl_config_from_dict",
    "rl_config_to_dict",
    "rl_cores",
    "rmsprop",
    "train",
    "vtrace_from_log_rhos",
    "vtrace_from_logits",
]
