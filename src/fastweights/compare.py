"""Train a grid of models x seeds with one preset and compare them: a table of mean ± std over seeds on stdout
(also ``summary.md`` and ``summary.json``) and learning curves with the seeds as a band (``curves.png``).

Any registered task (:mod:`fastweights.tasks`): the task resolves each configuration, trains each run, scores it
(:meth:`~fastweights.tasks.Task.score`: the paper's tasks compare the test accuracy or perplexity of the
best-validation checkpoint, or the mean return of the final evaluation), makes the table and adds its own views
(the algorithmic tasks: convergence and equal training time).

The grid is resumable: a run whose directory holds the same configuration and a ``results.json`` is reused, one
with a ``last.pt`` is resumed, one that never reached its first checkpoint is started again. With ``jobs > 1``
the runs are separate ``fastweights train`` processes, ``jobs`` at a time (each with the preset's thread count;
the cpu presets use one thread), their output in ``logs/<run>.log``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plugins import PLUGINS_ENV, trusted_modules
from .runs.config import config_to_dict, run_identity
from .runs.directory import RunLock, read_json, read_json_file, write_json
from .runs.plots import plot_seed_bands
from .tasks import Task, config_from_dict, get_task


@dataclass
class GridRun:
    """One cell x seed of the grid: its configuration, directory and what has to be done (``finished``,
    ``resume`` or ``new``)."""

    cfg: Any
    run_dir: Path
    state: str

    @property
    def name(self) -> str:
        return self.run_dir.name


def plan_grid(task: str, models: list[str], seeds: list[int] | None, preset: str | None, overrides: list[str],
              out_dir: Path, flags: dict[str, Any] | None = None) -> list[GridRun]:
    """Resolve and validate every configuration, then classify each run directory ``out_dir/<model>-seed<S>``.
    Raises ``ValueError`` before anything runs if a directory holds a run with another configuration."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    spec = get_task(task)
    runs = []
    for model in models:
        for seed in seeds or [None]:
            extra = [] if seed is None else [f"seed={seed}"]
            cfg = spec.resolve_config(preset, [*overrides, *extra], {**flags, "model": model})
            run_dir = Path(out_dir) / f"{model}-seed{cfg.seed}"
            config_file = run_dir / "config.json"
            if not config_file.is_file():
                state = "new"
            # logging and checkpoint cadence and threads are not part of a run's identity
            elif run_identity(config_to_dict(config_from_dict(read_json_file(config_file, "out_dir"),
                                                              f"out_dir: {config_file}: "))) \
                    != run_identity(config_to_dict(cfg)):
                raise ValueError(f"out_dir: {run_dir} holds a run with a different configuration; choose another "
                                 f"--out-dir or remove it")
            elif (run_dir / "results.json").is_file():
                state = "finished"
            elif (run_dir / "last.pt").is_file():
                state = "resume"
            else:
                state = "new"  # stopped before its first checkpoint: train() reuses the directory
            runs.append(GridRun(cfg, run_dir, state))
    return runs


def _train_command(run: GridRun, preset_file: Path) -> list[str]:
    base = [sys.executable, "-m", "fastweights.cli", "train", run.cfg.task]
    if run.state == "resume":
        return [*base, "--resume", str(run.run_dir)]
    return [*base, "--preset", str(preset_file), "--run-dir", str(run.run_dir)]


def run_grid(runs: list[GridRun], out_dir: Path, jobs: int = 1) -> None:
    """Train every run that is not finished: in this process for ``jobs == 1``, else as ``jobs`` parallel
    ``fastweights train`` processes. Raises ``RuntimeError`` naming the runs that failed (the others still run)."""
    todo = [r for r in runs if r.state != "finished"]
    for r in runs:
        if r.state == "finished":
            print(f"{r.name}: finished run found in {r.run_dir}, reusing it", flush=True)
    by_task: dict[str, list[GridRun]] = {}
    for r in todo:
        by_task.setdefault(r.cfg.task, []).append(r)
    for name, task_runs in by_task.items():  # each data set once, before parallel runs race to write it
        get_task(name).prepare([r.cfg for r in task_runs])
    if jobs <= 1:
        for i, r in enumerate(todo):
            print(f"[{i + 1}/{len(todo)}] {r.name}{' (resumed)' if r.state == 'resume' else ''}", flush=True)
            get_task(r.cfg.task).train(r.cfg, r.run_dir, resume=r.state == "resume")
        return
    logs, configs = Path(out_dir) / "logs", Path(out_dir) / "configs"
    logs.mkdir(parents=True, exist_ok=True)
    configs.mkdir(parents=True, exist_ok=True)
    pending, running, failed, done = list(todo), {}, [], 0
    # the runs are child processes: the modules of layers the user named go with them
    child_env = {**os.environ, PLUGINS_ENV: ",".join(trusted_modules())}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                r = pending.pop(0)
                preset_file = configs / f"{r.name}.json"
                write_json(preset_file, config_to_dict(r.cfg))
                log = open(logs / f"{r.name}.log", "a")
                proc = subprocess.Popen(_train_command(r, preset_file), stdout=log, stderr=subprocess.STDOUT,
                                        env=child_env)
                running[proc] = (r, log, time.perf_counter())
                print(f"start {r.name}{' (resumed)' if r.state == 'resume' else ''}: log {logs / (r.name + '.log')}",
                      flush=True)
            time.sleep(0.5)
            for proc in [p for p in running if p.poll() is not None]:
                r, log, t0 = running.pop(proc)
                log.close()
                done += 1
                if proc.returncode == 0 and (r.run_dir / "results.json").is_file():
                    spec = get_task(r.cfg.task)
                    score = spec.score(read_json(r.run_dir / "results.json"))
                    print(f"[{done}/{len(todo)}] {r.name}: {spec.score_name} {score:.4f} "
                          f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
                else:
                    failed.append(r.name)
                    print(f"[{done}/{len(todo)}] {r.name}: FAILED (exit {proc.returncode}); see "
                          f"{logs / (r.name + '.log')}", flush=True)
    except KeyboardInterrupt:
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait()
        raise
    if failed:
        raise RuntimeError(f"grid: {len(failed)} run(s) failed: {', '.join(failed)} (logs in {logs})")


def summarize(task: Task, runs: list[GridRun]) -> list[dict[str, Any]]:
    """One row per model with a finished run (:meth:`~fastweights.tasks.Task.summarize`): typically the mean and
    standard deviation of the score over seeds (sample std; 0 for one seed), the per-seed values and the mean
    training time per run."""
    by_model: dict[str, list[tuple[Any, Path, dict[str, Any]]]] = {}
    for r in runs:
        if (r.run_dir / "results.json").is_file():
            by_model.setdefault(r.cfg.model, []).append((r.cfg, r.run_dir, read_json(r.run_dir / "results.json")))
    return [task.summarize(model, items) for model, items in by_model.items()]


def compare(task: str, models: list[str], preset: str | None, overrides: list[str], out_dir: Path,
            flags: dict[str, Any] | None = None, seeds: list[int] | None = None, jobs: int = 1,
            report_only: bool = False) -> list[dict[str, Any]]:
    """Plan, run (resumably) and summarise the grid ``models x seeds``; returns :func:`summarize`'s rows.
    ``report_only``: train nothing; summarise the finished runs and name the others (a grid still in progress, or
    the published run records copied to a directory)."""
    if jobs < 1:
        raise ValueError(f"jobs: expected a positive integer, got {jobs}")
    if not models:
        raise ValueError("models: expected at least one model name, got none")
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct seeds, got {seeds}")
    out_dir = Path(out_dir)
    runs = plan_grid(task, models, seeds, preset, overrides, out_dir, flags)
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir, argument="out_dir"):  # one grid at a time in out_dir (each run also locks its own directory)
        return _compare_locked(task, preset, overrides, out_dir, runs, jobs, report_only)


def _compare_locked(task: str, preset: str | None, overrides: list[str], out_dir: Path, runs: list[GridRun],
                    jobs: int, report_only: bool) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    if report_only:  # runs are only read
        missing = [r.name for r in runs if r.state != "finished"]
        if len(missing) == len(runs):
            raise ValueError(f"report_only: no finished run of the grid in {out_dir} "
                             f"(expected {', '.join(r.name for r in runs)})")
        if missing:
            print(f"report only: {len(missing)} of {len(runs)} runs not finished, left out: {', '.join(missing)}",
                  flush=True)
    else:
        run_grid(runs, out_dir, jobs)
    spec = get_task(task)
    rows = summarize(spec, runs)
    table = spec.format_table(preset, rows, [r.cfg for r in runs])
    wall = time.perf_counter() - t0
    print("\n" + table + ("" if report_only else
                          f"\n\ngrid wall time: {wall / 60:.1f} min ({jobs} job{'s' if jobs > 1 else ''} at a time)"))
    try:
        groups = {row["model"]: [Path(d) for d in row["run_dirs"]] for row in rows}
        plot = plot_seed_bands(groups, out_dir / "curves.png", spec.curve_metrics)
        print(f"learning curves: {plot}")
    except ValueError as e:  # matplotlib missing: the table is still the result
        print(f"(no plot: {e})")
    extra = spec.extra_reports(rows, out_dir)
    for text, _ in extra.values():
        print("\n" + text)
        table += "\n\n" + text
    (out_dir / "summary.md").write_text(table + "\n")
    write_json(out_dir / "summary.json", {"task": task, "preset": preset, "overrides": overrides, "rows": rows,
                                          **{name: value for name, (_, value) in extra.items()},
                                          "grid_wall_time_s": None if report_only else wall,
                                          "not_finished": [r.name for r in runs if r.state != "finished"]
                                          if report_only else []})
    return rows
