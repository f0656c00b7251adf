"""Batched environments with one convention: ``done[i]`` = the observation just returned for environment ``i`` is
the first one of a new episode (the previous episode ended with the action just taken).

Every environment here is a :class:`BatchedEnv` of ``num_envs`` copies that reset themselves:

* ``reset(seed) -> obs [N, *obs_shape]`` starts every copy;
* ``step(actions [N]) -> StepResult(obs, reward [N], done [N], info)``: ``reward`` is the reward of the action
  just taken, ``done`` marks the copies whose episode ended with it (their ``obs`` already starts the next
  episode: gymnasium's ``AutoresetMode.SAME_STEP``), and ``info["episode_returns"]`` /
  ``info["episode_lengths"]`` list the undiscounted returns and lengths of the episodes that ended.

Environments:

* memory tasks in NumPy (no dependency, vectorised, CPU-fast; each needs memory to be solved):
  :class:`RepeatFirst`, :class:`RepeatPrevious`, :class:`CountRecall`;
* Atari through ``ale-py`` (:class:`AtariEnv`) with the paper's preprocessing (paper.md C.4: torchbeast's wrappers,
  :class:`AtariGame`);
* MinAtar's 10x10 miniature games (:class:`fastweights.rl.minatar.MinAtarEnv`);
* any registered gymnasium id with a discrete action space (:class:`GymnasiumEnv`), e.g. popgym's tasks.

:func:`make_env` builds one from a name (see its docstring).
"""

from __future__ import annotations

from typing import Any

from .atari import FRAME_SIZE, AtariEnv, AtariGame, _game_name, gym_frame_limit, warp_frame
from .base import BatchedEnv, EpisodeStats, StepResult
from .gym import GymnasiumEnv
from .memory import MEMORY_TASKS, CountRecall, RepeatFirst, RepeatPrevious

__all__ = ["FRAME_SIZE", "MEMORY_TASKS", "AtariEnv", "AtariGame", "BatchedEnv", "CountRecall", "EpisodeStats",
           "GymnasiumEnv", "RepeatFirst", "RepeatPrevious", "StepResult", "atari_game", "gym_frame_limit", "is_atari",
           "make_env", "warp_frame"]


def is_atari(name: str) -> bool:
    """Whether ``make_env`` treats ``name`` as an Atari game."""
    return name.startswith(("atari:", "ALE/")) or "NoFrameskip" in name


def atari_game(name: str) -> str | None:
    """ale-py's ROM id of the Atari environment ``name`` (``"UpNDownNoFrameskip-v4"`` -> ``"up_n_down"``); None if
    ``make_env`` does not treat ``name`` as an Atari game."""
    return _game_name(name.removeprefix("atari:")) if is_atari(name) else None


def make_env(name: str, num_envs: int, options: dict[str, Any] | None = None) -> BatchedEnv:
    """Build a :class:`BatchedEnv` from a name:

    * ``"repeat_first"``, ``"repeat_previous"``, ``"count_recall"``: the NumPy memory tasks (options:
      ``num_symbols``, ``length``, and ``delay`` for repeat_previous);
    * ``"BreakoutNoFrameskip-v4"``, ``"atari:Breakout"`` or ``"ALE/Breakout-v5"``: :class:`AtariEnv` (the
      paper's preprocessing whichever id is given; options: ``noop_max``, ``frameskip``, ``frame_stack``,
      ``episodic_life``, ``max_episode_frames``, ``fire_reset``);
    * ``"minatar:<game>"`` (``breakout``, ``space_invaders``, ``asterix``, ``freeway``, ``seaquest``):
      :class:`~fastweights.rl.minatar.MinAtarEnv` (options: ``sticky_action_prob``, ``difficulty_ramping``,
      ``max_episode_steps``);
    * ``"gym:<id>"`` (e.g. ``"gym:popgym-RepeatFirstEasy-v0"``): :class:`GymnasiumEnv`, options passed to
      ``gymnasium.make``.
    """
    options = dict(options or {})
    if not isinstance(name, str) or not name:
        raise ValueError(f"env: expected an environment name, got {name!r}")
    try:
        if name in MEMORY_TASKS:
            return MEMORY_TASKS[name](num_envs, **options)
        if is_atari(name):
            return AtariEnv(name.removeprefix("atari:"), num_envs, **options)
        if name.startswith("gym:"):
            return GymnasiumEnv(name[4:], num_envs, **options)
        if name.startswith("minatar:"):
            from ..minatar import MinAtarEnv  # imports this package

            return MinAtarEnv(name, num_envs, **options)
    except TypeError as e:  # unknown option
        raise ValueError(f"env_options: {e}") from None
    raise ValueError(f"env: unknown environment {name!r}; expected one of {sorted(MEMORY_TASKS)}, an Atari id "
                     f"like 'BreakoutNoFrameskip-v4' or 'atari:Breakout', 'minatar:<game>' or 'gym:<gymnasium id>'")
