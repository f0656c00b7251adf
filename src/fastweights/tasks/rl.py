"""Reinforcement learning (paper.md C.4): an IMPALA agent (V-trace) with a fast-weight or LSTM core on memory tasks,
MinAtar or Atari. Score: the mean return of the final evaluation."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Flag, Loaded, Task, needed_file

if TYPE_CHECKING:
    from ..rl.spec import EnvSpec

ENV_HELP = ("repeat_first | repeat_previous | count_recall | minatar:<game> | <Game>NoFrameskip-v4 | gym:<id> "
            "(default: the preset's)")


@dataclass
class LoadedAgent(Loaded):
    """An RL agent (:class:`~fastweights.rl.Agent`: ``initial_state``, ``act``) with its environment spec."""

    env: EnvSpec

    def save_files(self, out_dir: Path) -> None:
        from ..rl.spec import ENV_FILE
        from ..runs.directory import write_json

        write_json(out_dir / ENV_FILE, self.env.to_dict())


class RLTask(Task):
    name = "rl"
    summary = "reinforcement learning: memory tasks, MinAtar, Atari"
    flags = (Flag("--env", "env", ENV_HELP, commands=("train", "compare")),)
    eval_options = frozenset({"episodes", "runs", "sample"})
    checkpoints = ("last", "step-")
    score_name = "eval return"
    curve_metrics = ("episode_return", "loss")

    def config_class(self) -> type:
        from ..rl.config import RLConfig

        return RLConfig

    def resolve_config(self, preset: str | None, overrides: list[str], flags: dict[str, Any]) -> Any:
        """:meth:`Task.resolve_config`, except that an ``env`` flag naming another environment than the preset's
        drops the preset's ``env_options`` (unless ``env_options`` is overridden too): they belong to the preset's
        own environment."""
        from ..runs.config import resolve_fields

        def drop_foreign_options(cfg: Any, preset_values: dict[str, Any]) -> None:
            options_given = any(o.split("=", 1)[0].strip().replace("-", "_") == "env_options" for o in overrides)
            if flags.get("env") not in (None, preset_values.get("env", cfg.env)) and not options_given:
                cfg.env_options = {}

        return resolve_fields(self.config_class(), self.name, preset, overrides, flags, drop_foreign_options)

    def train(self, cfg: Any, run_dir: Path, *, resume: bool = False, command: list[str] | None = None
              ) -> dict[str, Any]:
        from ..rl.train import train

        return train(cfg, run_dir, resume=resume, command=command)

    def run_label(self, cfg: Any) -> str:
        return cfg.env.replace("/", "-").replace(":", "-")

    def describe(self, cfg: Any) -> list[str]:
        from ..models import count_parameters
        from ..rl.spec import build
        from ..runs.progress import format_count

        env, agent = build(cfg, num_envs=1)
        env.close()
        return [f"environment: observation {list(env.obs_shape)}, {env.num_actions} actions",
                f"parameters: {format_count(count_parameters(agent))}"]

    def checkpoint_types(self) -> list[Any]:
        from ..rl.train import checkpoint_types

        return checkpoint_types()

    def check_checkpoint(self, run_dir: Path, checkpoint: str | None) -> str:
        names = sorted(p.stem for p in Path(run_dir).glob("*.pt"))
        checkpoint = checkpoint or "last"
        if checkpoint not in names:
            raise ValueError(f"--checkpoint: {run_dir} is an rl run, which keeps {names or 'no checkpoint'} (no best: "
                             f"RL runs are not validated); got {checkpoint!r}")
        return checkpoint

    def evaluate(self, run_dir: Path, checkpoint: str, device: str | None, options: dict[str, Any]
                 ) -> dict[str, Any]:
        from ..rl.train import evaluate_run

        episodes, runs = options.get("episodes"), options.get("runs")  # 0 is refused, not read as "not given"
        return evaluate_run(run_dir, episodes=30 if episodes is None else episodes, runs=5 if runs is None else runs,
                            greedy=not options.get("sample"), checkpoint=checkpoint, device=device, progress=True)

    def load(self, run_dir: Path, checkpoint: str, device: str) -> Loaded:
        from ..rl.train import env_spec, load_agent

        checkpoint = "last" if checkpoint == "best" else checkpoint  # RL runs are not validated: no best.pt
        cfg, agent = load_agent(run_dir, checkpoint, device)
        return LoadedAgent(self.name, cfg, agent, str(run_dir), checkpoint, env_spec(run_dir, cfg))

    def from_export(self, path: Path, cfg: Any) -> Loaded:
        from ..rl.agent import Agent
        from ..rl.spec import ENV_FILE, EnvSpec, agent_config
        from ..runs.directory import read_json_file
        from ..weights import load_module

        spec = EnvSpec.from_dict(read_json_file(needed_file(path, ENV_FILE), "env"), str(path / ENV_FILE))
        agent = Agent(agent_config(cfg, spec))
        load_module(agent, needed_file(path, "model.safetensors"))
        return LoadedAgent(self.name, cfg, agent.to(cfg.device).eval(), str(path), None, spec)

    # -- grids -----------------------------------------------------------------------------------------------------

    def score(self, results: dict[str, Any]) -> float:
        return results["eval"]["mean"]

    def summarize(self, model: str, runs: list[tuple[Any, Path, dict[str, Any]]]) -> dict[str, Any]:
        returns = [res["eval"]["mean"] for _, _, res in runs]
        return {
            "model": model, "parameters": runs[0][2]["parameters"], "seeds": [cfg.seed for cfg, _, _ in runs],
            "eval_return": returns, "eval_return_mean": statistics.fmean(returns),
            "eval_return_std": statistics.stdev(returns) if len(returns) > 1 else 0.0,
            "final_train_return_mean": statistics.fmean(res["final_return"] for _, _, res in runs),
            "train_time_s_mean": statistics.fmean(res["train_time_s"] for _, _, res in runs),
            "run_dirs": [str(d) for _, d, _ in runs],
        }

    def format_table(self, preset: str | None, rows: list[dict[str, Any]], configs: list[Any]) -> str:
        env = configs[0].env if configs else None
        lines = [f"rl {env}, preset {preset}: mean return of the final evaluation, mean ± std over seeds", "",
                 "| model | parameters | eval return | per seed | final training return | train time per run |",
                 "|---|---:|---:|---|---:|---:|"]
        for r in rows:
            n = len(r["eval_return"])
            cell = (f"{r['eval_return_mean']:.2f} ± {r['eval_return_std']:.2f} ({n})" if n > 1
                    else f"{r['eval_return_mean']:.2f}")
            lines.append(f"| {r['model']} | {r['parameters']:,} | {cell} | "
                         f"{', '.join(f'{x:.2f}' for x in r['eval_return'])} | {r['final_train_return_mean']:.2f} | "
                         f"{r['train_time_s_mean'] / 60:.1f} min |")
        return "\n".join(lines)
