"""The paper's evaluation protocol of a trained agent (paper.md C.4): runs of greedy (or sampled) episodes, played
back to back in one environment or in parallel copies, with the noneg filter of the Atari games that need it."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from ..runs.progress import Progress
from .actor import Actor
from .agent import Agent
from .config import RL_EVAL_MODES, RLConfig
from .envs import is_atari, make_env


@torch.no_grad()
def evaluate_agent(agent: Agent, cfg: RLConfig, *, episodes: int | None = None, runs: int | None = None,
                   greedy: bool | None = None, num_envs: int | None = None, seed: int | None = None,
                   mode: str | None = None, noneg: bool | None = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate ``runs`` runs of ``episodes`` episodes each (greedy actions by default); returns the mean and std of
    the run means, each run's mean, and ``dropped`` (episodes the noneg filter left out). Arguments left None take
    the config's ``eval_*`` values. ``progress``: a progress line on stderr.

    ``mode`` (``cfg.eval_mode``):

    * ``"consecutive"``, the official test (paper.md C.4): one environment plays ``runs * episodes`` episodes back
      to back, through lost lives, game overs and run boundaries, the core state carried from step to step (reset
      at every episode start, as in training); run ``r`` is the mean of episodes ``r * episodes`` to
      ``(r + 1) * episodes - 1``. On Atari an episode is one life (episodic life stays on at test time).
    * ``"parallel"``: each run makes ``num_envs`` (``cfg.eval_envs``) fresh copies, each with a share of the run's
      episodes decided in advance (so short episodes are not favoured), each share played back to back.

    ``noneg`` (``cfg.noneg()``; Atari only): an episode with a negative return is not counted, and its copy starts
    a new game with a zeroed core state (the official evaluation of BattleZone and UpNDown, whose emulation
    sometimes yields a hugely negative score); episodes are played until every share is complete.
    """
    episodes = cfg.eval_episodes if episodes is None else episodes
    runs = cfg.eval_runs if runs is None else runs
    greedy = cfg.eval_greedy if greedy is None else greedy
    seed = cfg.seed + 1_000_003 if seed is None else seed
    mode = cfg.eval_mode if mode is None else mode
    noneg = cfg.noneg() if noneg is None else noneg
    for name, v in (("episodes", episodes), ("runs", runs)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if mode not in RL_EVAL_MODES:
        raise ValueError(f"mode: expected one of {list(RL_EVAL_MODES)}, got {mode!r}")
    if mode == "consecutive" and num_envs not in (None, 1):
        raise ValueError(f"num_envs: the consecutive mode plays one environment, got {num_envs}; use "
                         f"mode='parallel' for several")
    if noneg and not is_atari(cfg.env):
        raise ValueError(f"noneg: the filter restarts Atari games; env {cfg.env!r} is not an Atari game")
    device = next(agent.parameters()).device
    was_training = agent.training
    agent.eval()
    bar = Progress(runs * episodes, prefix="eval", stream=sys.stderr, unit="episode") if progress else None
    dropped = 0
    if mode == "consecutive":
        (returns,), dropped = _play_episodes(agent, cfg, [runs * episodes], seed, greedy, noneg, device, bar, 0)
        run_means = [float(np.mean(returns[r * episodes:(r + 1) * episodes])) for r in range(runs)]
    else:
        n = min(cfg.eval_envs if num_envs is None else num_envs, episodes)
        quota = [episodes // n + (i < episodes % n) for i in range(n)]
        run_means = []
        for r in range(runs):
            shares, d = _play_episodes(agent, cfg, quota, seed + r, greedy, noneg, device, bar, r * episodes)
            run_means.append(float(np.mean([x for share in shares for x in share])))
            dropped += d
    if bar is not None:
        bar.close()
    agent.train(was_training)
    return {"mean": float(np.mean(run_means)), "std": float(np.std(run_means)), "run_means": run_means,
            "episodes": episodes, "runs": runs, "greedy": greedy, "mode": mode, "noneg": noneg, "dropped": dropped}


def _play_episodes(agent: Agent, cfg: RLConfig, quota: list[int], seed: int, greedy: bool, noneg: bool,
                   device: torch.device, bar: Progress | None, done_before: int) -> tuple[list[list[float]], int]:
    """Copy ``i`` of a fresh ``len(quota)``-copy environment plays until it has ``quota[i]`` counted episodes,
    back to back; returns each copy's episode returns and the number of episodes the noneg filter dropped."""
    env = make_env(cfg.env, len(quota), cfg.env_options)
    try:
        actor = Actor(env, agent, device, seed)
        got: list[list[float]] = [[] for _ in quota]
        dropped = 0
        while any(len(g) < q for g, q in zip(got, quota)):
            _, _, info = actor.step(greedy=greedy)
            restart = []
            for i, ret in zip(info["episode_envs"], info["episode_returns"]):
                if noneg and ret < 0:
                    restart.append(i)
                    dropped += 1
                elif len(got[i]) < quota[i]:
                    got[i].append(float(ret))
            if restart:  # those rows already start a new episode (done): their core state is zeroed at it
                actor.obs[restart] = torch.as_tensor(env.new_game(np.array(restart)), device=device)
            if bar is not None:
                bar.update(done_before + sum(map(len, got)))
    finally:
        env.close()
    return got, dropped
