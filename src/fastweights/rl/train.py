"""Synchronous IMPALA-style training (V-trace actor-critic) of an :class:`~fastweights.rl.agent.Agent`, its run
directory and resume, and the trained agent of a run read back. The pieces of an update are :mod:`.actor`'s, the
environment spec :mod:`.spec`'s, the evaluation protocol :mod:`.evaluate`'s.

One update: the ``num_envs`` streams act for ``unroll_length`` steps with the current parameters (no gradient),
keeping the core state at the start of the unroll; the learner re-runs the agent over the unroll (plus the next
observation, for the bootstrap value) from that stored state, with gradients (truncated BPTT over the unroll;
``cut_state_grad_every_step`` detaches the state after every step instead, as the official kernels do), and
takes one RMSProp step on the V-trace loss. The acting policy equals the learner's policy (on-policy), so the
importance weights are 1 up to float rounding; V-trace still corrects any lag.

Run directory (see :mod:`fastweights.runs.directory`): ``config.json``, ``meta.json``, ``metrics.csv`` (one row per
``log_interval`` updates: ``step`` = agent steps, ``episode_return`` = mean return of the episodes that ended since the
last row, losses, ``steps_per_s``), ``last.pt`` (every ``checkpoint_interval`` updates and at the end), optional
``step-<N>.pt`` extra checkpoints, ``results.json`` (final evaluation), ``curves.png`` (if matplotlib is installed).

Resume continues exactly (same parameters, same metrics) for environments that can snapshot their state (the
NumPy memory tasks); Atari environments are restarted from a fresh seed on resume (new episodes, same learner).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fields import ConfigError
from ..models import count_parameters
from ..runs.directory import (
    checkpoint_path,
    load_checkpoint,
    nonfinite_parameter,
    read_json_file,
    read_run_config,
)
from ..runs.progress import DurationEstimate, Progress, format_count, format_duration, format_number
from ..runs.run import Run
from ..weights import load_state
from .actor import Actor, learner_loss
from .agent import Agent
from .config import RLConfig, rl_config_from_dict, rl_config_to_dict
from .envs import BatchedEnv
from .evaluate import evaluate_agent
from .spec import ENV_FILE, EnvSpec, agent_config, build
from .vtrace import linear_decay, rmsprop

# ----------------------------------------------------------------------------------------------------------------
# Learner
# ----------------------------------------------------------------------------------------------------------------


class _Window:
    """Metrics accumulated between two rows of metrics.csv."""

    def __init__(self) -> None:
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.game_returns: list[float] = []
        self.losses: dict[str, float] = {}
        self.updates = 0
        self.seconds = 0.0

    def add(self, infos: list[dict[str, Any]], losses: dict[str, float], seconds: float) -> None:
        for info in infos:
            self.returns += [float(r) for r in info.get("episode_returns", ())]
            self.lengths += [int(n) for n in info.get("episode_lengths", ())]
            self.game_returns += [float(r) for r in info.get("game_returns", ())]
        for k, v in losses.items():
            self.losses[k] = self.losses.get(k, 0.0) + v
        self.updates += 1
        self.seconds += seconds


def checkpoint_types() -> list[Any]:
    """The types besides tensors and plain containers that RL checkpoints hold: the agents' recurrent states, the
    metrics window, the episode statistics and the NumPy arrays and random generators of the snapshots of the memory
    tasks (for :func:`~fastweights.runs.checkpoints.load_checkpoint`)."""
    from numpy.random import _pcg64, _pickle, bit_generator

    from ..models import state_types
    from .envs import EpisodeStats

    try:  # NumPy 2 moved numpy.core to numpy._core; accept arrays pickled under either name
        from numpy._core import multiarray
    except ImportError:  # NumPy 1
        from numpy.core import multiarray
    reconstruct = [(multiarray._reconstruct, f"{p}.multiarray._reconstruct") for p in ("numpy.core", "numpy._core")]
    return [
        *state_types(), _Window, EpisodeStats, *reconstruct, np.ndarray, np.dtype,
        *{type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"}, bit_generator.SeedSequence,
        bit_generator.__pyx_unpickle_SeedSequence, _pickle.__generator_ctor, _pickle.__bit_generator_ctor,
        _pcg64.PCG64,
    ]


def _plot(run_dir: Path) -> None:
    from ..runs.plots import plot_runs

    try:
        plot_runs([run_dir], run_dir / "curves.png", ("episode_return", "loss"))
    except (ConfigError, FileNotFoundError):  # matplotlib missing, or nothing logged yet
        pass


# ----------------------------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------------------------


def resume_command(run_dir: Path) -> str:
    """The command line that continues the RL run in ``run_dir``."""
    return f"fastweights train rl --resume {run_dir}"


def train(cfg: RLConfig, run_dir: Path, *, resume: bool = False, stop_after_updates: int | None = None,
          quiet: bool = False, command: list[str] | None = None, evaluate_at_end: bool = True) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (``resume``: continue from ``run_dir/last.pt``; a run directory without a
    checkpoint yet starts from the beginning).

    Ctrl-C or SIGTERM lets the current update finish, saves a checkpoint and raises
    :class:`~fastweights.runs.interrupt.Interrupted` (message: where the run stands and how to resume it).
    ``stop_after_updates`` ends this call early (as an interruption would) after that many updates in total.
    At the end of training the last checkpoint is evaluated with the paper's protocol (:func:`evaluate_agent`)
    and ``results.json`` written (``evaluate_at_end=False`` skips that).
    Returns the results: ``updates``, ``steps``, ``train_time_s``, ``final_return`` (mean episode return of the
    last metrics row), ``parameters``, and ``eval`` when evaluated.
    """
    run_dir = Path(run_dir)
    again = resume_command(run_dir)
    cfg.validate()
    with Run(cfg, run_dir, resume=resume, again=again, quiet=quiet, checkpoint_types=checkpoint_types()) as run:
        with run.preparing("before the first update"):
            env, agent = build(cfg)
        try:
            return _train_loop(cfg, run, env, agent, torch.device(cfg.device), stop_after_updates=stop_after_updates,
                               quiet=quiet, command=command, evaluate_at_end=evaluate_at_end)
        finally:
            env.close()


def _train_loop(cfg: RLConfig, run: Run, env: BatchedEnv, agent: Agent, device: torch.device, *,
                stop_after_updates: int | None, quiet: bool, command: list[str] | None, evaluate_at_end: bool
                ) -> dict[str, Any]:
    agent.to(device)
    opt = rmsprop(agent.parameters(), cfg.lr, alpha=cfg.rms_alpha, eps=cfg.rms_eps, momentum=cfg.rms_momentum)
    sched = linear_decay(opt, cfg.total_steps, cfg.steps_per_update) if cfg.lr_schedule == "linear" else None
    actor = Actor(env, agent, device, cfg.seed)
    run_dir = run.dir
    log = run.metrics()
    update, elapsed, window, last_row = 0, 0.0, _Window(), {}
    if run.continues:
        ckpt = run.load_last(("agent", "optimizer", "scheduler", "update", "elapsed", "window", "last_row", "rng",
                              "actor"), map_location=device)
        load_state(agent, ckpt["agent"], f"checkpoint: {run.last}")
        with run.restoring():
            opt.load_state_dict(ckpt["optimizer"])
            if sched is not None:
                sched.load_state_dict(ckpt["scheduler"])
            update, elapsed, window, last_row = ckpt["update"], ckpt["elapsed"], ckpt["window"], ckpt["last_row"]
            torch.set_rng_state(ckpt["rng"])
            if ckpt["actor"] is not None:
                actor.set_state(ckpt["actor"])
        if ckpt["actor"] is None:  # the environment cannot be restored: restart its episodes from a seed of this point
            actor = Actor(env, agent, device, cfg.seed + 7919 * update)
        log.truncate(update * cfg.steps_per_update)
    else:
        log.truncate(0)
        run.begin(command, parameters=count_parameters(agent), obs_shape=list(env.obs_shape),
                  num_actions=env.num_actions)
        run.write(ENV_FILE, EnvSpec.of(cfg, env).to_dict())
    total = cfg.total_updates
    last = total if stop_after_updates is None else min(total, stop_after_updates)
    if not quiet:
        at = f"; resumed at update {format_count(update)}" if run.continues else ""
        print(f"rl {cfg.env} {cfg.model}: {format_count(count_parameters(agent))} parameters, {env.num_envs} envs x "
              f"{cfg.unroll_length} steps per update, {format_count(total)} updates "
              f"({format_count(cfg.total_steps)} steps){at}; run dir {run_dir}", flush=True)
    bar = Progress(total, prefix=f"rl {cfg.model}", every_s=cfg.log_every_s, initial=update, unit="update") \
        if not quiet else None
    estimate = DurationEstimate(total, update, unit="update", extra="; the final evaluation adds to it")
    extra = sorted(s for s in cfg.extra_checkpoints if s > update * cfg.steps_per_update)  # not yet written

    def payload() -> dict[str, Any]:
        return {"agent": agent.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": None if sched is None else sched.state_dict(), "update": update, "elapsed": elapsed,
                "window": window, "last_row": last_row, "rng": torch.get_rng_state(), "actor": actor.get_state(),
                "config": rl_config_to_dict(cfg), "step": update * cfg.steps_per_update}

    agent.train()
    try:
        while update < last:
            # an update changes the environments, the actor and the learner: a signal waits until it is done
            with run.signals.held():
                t0 = time.perf_counter()
                try:
                    ro, infos = actor.rollout(cfg.unroll_length)
                    loss, losses = learner_loss(agent, ro, cfg)
                except (ValueError, RuntimeError) as e:  # a layer's check that NaN weights trip, e.g. a beta range
                    if (bad := nonfinite_parameter(agent)) is not None:
                        raise run.diverged(f"parameter {bad} is not finite", f"update {update}") from None
                    raise e
                if not math.isfinite(loss_value := loss.item()):
                    raise run.diverged(f"loss {loss_value}", f"update {update}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                max_norm = cfg.grad_norm_clip if cfg.grad_norm_clip > 0 else math.inf
                grad_norm = float(torch.nn.utils.clip_grad_norm_(agent.parameters(), max_norm))
                lr = opt.param_groups[0]["lr"]
                opt.step()
                if sched is not None:
                    sched.step()
                update += 1
                seconds = time.perf_counter() - t0
                elapsed += seconds
                window.add(infos, {**losses, "grad_norm": grad_norm, "lr": lr}, seconds)
                step = update * cfg.steps_per_update
                if update % cfg.log_interval == 0 or update == total:
                    row: dict[str, Any] = {"step": step, "update": update}
                    row["episode_return"] = float(np.mean(window.returns)) if window.returns else ""
                    row["episode_length"] = float(np.mean(window.lengths)) if window.lengths else ""
                    row["episodes"] = len(window.returns)
                    if window.game_returns or "game_returns" in (infos[-1] if infos else {}):
                        row["game_return"] = float(np.mean(window.game_returns)) if window.game_returns else ""
                    row.update({k: v / window.updates for k, v in window.losses.items()})
                    row["steps_per_s"] = window.updates * cfg.steps_per_update / max(window.seconds, 1e-9)
                    row["elapsed_s"] = elapsed
                    log.log(row)
                    last_row, window = row, _Window()
                while extra and step >= extra[0]:
                    run.save(f"step-{extra.pop(0)}.pt", agent, payload(), f"update {update}")
                if update % cfg.checkpoint_interval == 0 or update == last:
                    run.save("last.pt", agent, payload(), f"update {update}")
            if bar is not None:
                shown = {"return": last_row.get("episode_return", ""), "steps_per_s": last_row.get("steps_per_s", "")}
                bar.advance(update, estimate, **{k: v for k, v in shown.items() if v != ""})
        if bar is not None:
            bar.close()
        results: dict[str, Any] = {"updates": update, "steps": update * cfg.steps_per_update,
                                   "train_time_s": elapsed, "final_return": last_row.get("episode_return", None),
                                   "parameters": count_parameters(agent)}
        _plot(run_dir)
        if update >= total and evaluate_at_end:
            results["eval"] = evaluate_agent(agent, cfg, progress=not quiet)
            run.finish(results)
            if not quiet:
                ev = results["eval"]
                print(f"done: return {format_number(ev['mean'])} +- {format_number(ev['std'])} "
                      f"({'greedy' if cfg.eval_greedy else 'sampled'}, {ev['runs']} runs x {ev['episodes']} "
                      f"episodes), {format_duration(elapsed)} of training; run dir {run_dir}", flush=True)
    except KeyboardInterrupt as e:
        if bar is not None:
            bar.close()
        where = (f"at update {format_count(update)}/{format_count(total)}" if update < total
                 else "in the final evaluation")
        raise run.stop(e, lambda: run.save("last.pt", agent, payload(), f"update {update}"), where) from None
    finally:
        log.close()
    return results


def rl_run_config(run_dir: Path, device: str | None = None) -> RLConfig:
    """The configuration of an RL run directory (``device`` replaces the run's)."""
    values = read_run_config(run_dir)
    if values.get("task") != "rl":
        raise ValueError(f"run_dir: {run_dir} is a {values.get('task')} run, not an rl run")
    cfg = rl_config_from_dict(values, f"config: {Path(run_dir) / 'config.json'}: ")
    if device is not None:
        cfg.device = device
    return cfg


def env_spec(run_dir: Path, cfg: RLConfig) -> EnvSpec:
    """The environment spec of a run: its ``env.json``."""
    path = Path(run_dir) / ENV_FILE
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: {run_dir} has no {ENV_FILE} (the run stopped before training started)")
    return EnvSpec.from_dict(read_json_file(path, "env"), str(path))


def load_agent(run_dir: Path, checkpoint: str = "last", device: str | None = None) -> tuple[RLConfig, Agent]:
    """The configuration and the trained agent (in eval mode) of a run directory (``checkpoint``: ``last`` or
    ``step-<N>``)."""
    cfg = rl_run_config(run_dir, device)
    path = checkpoint_path(run_dir, checkpoint)
    agent = Agent(agent_config(cfg, env_spec(run_dir, cfg)))
    load_state(agent, load_checkpoint(path, keys=("agent",), types=checkpoint_types())["agent"], f"checkpoint: {path}")
    return cfg, agent.to(cfg.device).eval()


def evaluate_run(run_dir: Path | str, episodes: int = 30, runs: int = 5, greedy: bool = True, *,
                 checkpoint: str = "last", device: str | None = None, num_envs: int | None = None,
                 seed: int | None = None, mode: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate a run's checkpoint (default 5 runs x 30 greedy episodes) with :func:`evaluate_agent`; ``mode``:
    ``consecutive`` or ``parallel``, none = the run's ``eval_mode``. Returns ``{"mean", "std", "run_means",
    "episodes", "runs", "greedy", "mode", "noneg", "dropped", "checkpoint", "step"}``."""
    cfg, agent = load_agent(Path(run_dir), checkpoint, device)
    ckpt_step = load_checkpoint(Path(run_dir) / f"{checkpoint}.pt", keys=("step",), types=checkpoint_types())["step"]
    out = evaluate_agent(agent, cfg, episodes=episodes, runs=runs, greedy=greedy, num_envs=num_envs, seed=seed,
                         mode=mode, progress=progress)
    return {**out, "checkpoint": checkpoint, "step": ckpt_step}
