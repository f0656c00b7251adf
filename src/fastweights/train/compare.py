"""Train a grid of models x seeds with one preset and compare them: a table of mean ± std over seeds on stdout
(also ``summary.md`` and ``summary.json``) and learning curves with the seeds as a band (``curves.png``).

Tasks: ``code-exec`` and ``listops`` (score: test accuracy of the best-validation checkpoint), ``lm`` (score: test
perplexity of the best-validation checkpoint under the configuration's ``test_mode``; ``flags["carry_state"]`` trains
every model with the state carried) and ``rl`` (score: the final evaluation's mean return; the environment from
``flags["env"]`` or the preset).

The grid is resumable: a run whose directory holds the same configuration and a ``results.json`` is reused, one
with a ``last.pt`` is resumed, one that never reached its first checkpoint is started again. With ``jobs > 1``
the runs are separate ``fastweights train`` processes, ``jobs`` at a time (each with the preset's thread count;
the cpu presets use one thread), their output in ``logs/<run>.log``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..rl.config import RLConfig, resolve_rl_config
from ..runs.config import config_from_dict, config_to_dict, resolve_config, run_identity
from ..runs.directory import MetricsLog, RunLock, read_json, read_json_file, write_json
from ..runs.plots import plot_seed_bands
from .algorithmic import load_task_data, train
from .config import LMTrainConfig, TrainConfig
from .lm.evaluate import describe_eval


@dataclass
class GridRun:
    """One cell x seed of the grid: its configuration, directory and what has to be done (``finished``,
    ``resume`` or ``new``)."""

    cfg: TrainConfig | LMTrainConfig | RLConfig
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
    runs = []
    for model in models:
        for seed in seeds or [None]:
            extra = [] if seed is None else [f"seed={seed}"]
            cfg = _resolve(task, preset, [*overrides, *extra], model, flags)
            run_dir = Path(out_dir) / f"{model}-seed{cfg.seed}"
            config_file = run_dir / "config.json"
            if not config_file.is_file():
                state = "new"
            # read back through config_from_dict: a run written by an earlier version (old key names) still counts;
            # logging and checkpoint cadence and threads are not part of a run's identity
            elif run_identity(config_to_dict(config_from_dict(read_json_file(config_file, "out_dir")))) \
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


def _resolve(task: str, preset: str | None, overrides: list[str], model: str, flags: dict[str, Any]
             ) -> TrainConfig | LMTrainConfig | RLConfig:
    if task == "rl":
        return resolve_rl_config(model=model, preset=preset, overrides=overrides, **flags)
    return resolve_config(task, preset, overrides, model=model, **flags)


def _train_in_process(run: GridRun) -> None:
    if isinstance(run.cfg, RLConfig):
        from ..rl.train import train as train_rl

        train_rl(run.cfg, run.run_dir, resume=run.state == "resume")
    elif isinstance(run.cfg, LMTrainConfig):
        from .lm import train_lm

        train_lm(run.cfg, run.run_dir, resume=run.state == "resume")
    else:
        train(run.cfg, run.run_dir, resume=run.state == "resume")


def _score(task: str, results: dict[str, Any]) -> float:
    """The number a grid compares: test accuracy (algorithmic), test perplexity (lm) or mean evaluation return
    (rl)."""
    if task == "rl":
        return results["eval"]["mean"]
    return results["test"]["ppl"] if task == "lm" else results["test"]["acc"]


#: What :func:`_score` reports, as a progress line says it.
SCORE_NAMES = {"rl": "eval return", "lm": "test ppl"}


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
    # Generate each data set once, before any run starts: parallel runs would otherwise race to write it.
    algorithmic = [r for r in todo if isinstance(r.cfg, TrainConfig)]
    for key in {(r.cfg.task, r.cfg.num_vars, r.cfg.depth, r.cfg.max_length, r.cfg.code_length, r.cfg.train_size,
                 r.cfg.valid_size, r.cfg.test_size, r.cfg.data_seed, r.cfg.data): r for r in algorithmic}.values():
        load_task_data(key.cfg)
    lm = [r for r in todo if isinstance(r.cfg, LMTrainConfig)]
    if lm:  # tokenise (and cache) each corpus once
        from .lm import load_lm_data

        for key in {(r.cfg.data, r.cfg.level, r.cfg.tokenizer): r for r in lm}.values():
            load_lm_data(key.cfg)
    if jobs <= 1:
        for i, r in enumerate(todo):
            print(f"[{i + 1}/{len(todo)}] {r.name}{' (resumed)' if r.state == 'resume' else ''}", flush=True)
            _train_in_process(r)
        return
    logs, configs = Path(out_dir) / "logs", Path(out_dir) / "configs"
    logs.mkdir(parents=True, exist_ok=True)
    configs.mkdir(parents=True, exist_ok=True)
    pending, running, failed, done = list(todo), {}, [], 0
    try:
        while pending or running:
            while pending and len(running) < jobs:
                r = pending.pop(0)
                preset_file = configs / f"{r.name}.json"
                write_json(preset_file, config_to_dict(r.cfg))
                log = open(logs / f"{r.name}.log", "a")
                proc = subprocess.Popen(_train_command(r, preset_file), stdout=log, stderr=subprocess.STDOUT)
                running[proc] = (r, log, time.perf_counter())
                print(f"start {r.name}{' (resumed)' if r.state == 'resume' else ''}: log {logs / (r.name + '.log')}",
                      flush=True)
            time.sleep(0.5)
            for proc in [p for p in running if p.poll() is not None]:
                r, log, t0 = running.pop(proc)
                log.close()
                done += 1
                if proc.returncode == 0 and (r.run_dir / "results.json").is_file():
                    score = _score(r.cfg.task, read_json(r.run_dir / "results.json"))
                    what = SCORE_NAMES.get(r.cfg.task, "test acc")
                    print(f"[{done}/{len(todo)}] {r.name}: {what} {score:.4f} "
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


#: The convergence rule of the algorithmic grids: a finished run has converged when its best validation accuracy
#: rose by at most CONVERGED_RISE over the last CONVERGED_TAIL of its updates.
CONVERGED_TAIL = 0.2
CONVERGED_RISE = 0.01


def late_rise(rows: list[dict[str, str]]) -> float:
    """How much the best validation accuracy of a run's ``metrics.csv`` rows rose over the last
    :data:`CONVERGED_TAIL` of its updates: the best over all rows minus the best over the rows up to that point
    (0 before the first row). A run has converged when this is at most :data:`CONVERGED_RISE`."""
    if not rows:
        raise ValueError("metrics: no validation rows")
    last = int(rows[-1]["step"])
    cut = (1 - CONVERGED_TAIL) * last
    accs = [(int(r["step"]), float(r["valid_acc"])) for r in rows]
    return max(a for _, a in accs) - max((a for step, a in accs if step <= cut), default=0.0)


def _metric_rows(run_dir: Path) -> list[dict[str, str]]:
    return MetricsLog(run_dir, tensorboard=False).rows()


def summarize(runs: list[GridRun]) -> list[dict[str, Any]]:
    """One row per model: mean and standard deviation over seeds (sample std; 0 for one seed) of the test
    accuracy of the best-validation checkpoints (lm: their test perplexity; rl: the final evaluation's mean
    return), per-seed values, and the mean training time per run."""
    by_model: dict[str, list[tuple[GridRun, dict[str, Any]]]] = {}
    for r in runs:
        if (r.run_dir / "results.json").is_file():
            by_model.setdefault(r.cfg.model, []).append((r, read_json(r.run_dir / "results.json")))
    rows = []
    for model, items in by_model.items():
        if items[0][0].cfg.task == "rl":
            returns = [res["eval"]["mean"] for _, res in items]
            rows.append({
                "model": model, "parameters": items[0][1]["parameters"], "seeds": [r.cfg.seed for r, _ in items],
                "eval_return": returns, "eval_return_mean": statistics.fmean(returns),
                "eval_return_std": statistics.stdev(returns) if len(returns) > 1 else 0.0,
                "final_train_return_mean": statistics.fmean(res["final_return"] for _, res in items),
                "train_time_s_mean": statistics.fmean(res["train_time_s"] for _, res in items),
                "run_dirs": [str(r.run_dir) for r, _ in items],
            })
            continue
        if items[0][0].cfg.task == "lm":
            ppl = [res["test"]["ppl"] for _, res in items]
            rows.append({
                "model": model, "parameters": items[0][1]["parameters"], "seeds": [r.cfg.seed for r, _ in items],
                "test_mode": items[0][1]["test"]["mode"], "test_context": items[0][1]["test"]["context"],
                "valid_mode": items[0][0].cfg.validation_protocol(),
                "test_ppl": ppl, "test_ppl_mean": statistics.fmean(ppl),
                "test_ppl_std": statistics.stdev(ppl) if len(ppl) > 1 else 0.0,
                "valid_ppl_mean": statistics.fmean(res["best_valid"]["valid_ppl"] for _, res in items),
                "best_steps": [res["best_valid"]["step"] for _, res in items],
                "tokens_per_s_mean": statistics.fmean(res["tokens_per_s"] for _, res in items),
                "train_time_s_mean": statistics.fmean(res["train_time_s"] for _, res in items),
                "run_dirs": [str(r.run_dir) for r, _ in items],
            })
            continue
        test = [res["test"]["acc"] for _, res in items]
        prints = [res["test"]["print_acc"] for _, res in items if "print_acc" in res["test"]]
        times = [res["train_time_s"] for _, res in items]
        rises = [late_rise(_metric_rows(r.run_dir)) for r, _ in items]
        rows.append({
            "model": model, "parameters": items[0][1]["parameters"], "seeds": [r.cfg.seed for r, _ in items],
            "test_acc": test, "test_acc_mean": statistics.fmean(test),
            "test_acc_std": statistics.stdev(test) if len(test) > 1 else 0.0,
            "valid_acc_mean": statistics.fmean(res["best_valid"]["acc"] for _, res in items),
            "test_print_acc_mean": statistics.fmean(prints) if prints else None,
            "late_rise": rises, "converged": sum(rise <= CONVERGED_RISE + 1e-12 for rise in rises),
            "train_time_s_mean": statistics.fmean(times), "run_dirs": [str(r.run_dir) for r, _ in items],
        })
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def format_table(task: str, preset: str | None, rows: list[dict[str, Any]], env: str | None = None) -> str:
    """A Markdown table: test accuracy in % (rl: mean evaluation return) as mean ± std (n seeds) with the per-seed
    values."""
    if task == "rl":
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
    if task == "lm":
        how = describe_eval(rows[0]["test_mode"], rows[0]["test_context"]) if rows else "no finished run"
        valid = {"carry": "state carried", "segments": "segments"}[rows[0]["valid_mode"]] if rows else "segments"
        lines = [f"lm, preset {preset}: test perplexity of the best-validation checkpoint ({how}), mean ± std over "
                 "seeds", "", f"| model | parameters | test ppl | per seed | best valid ppl ({valid}), mean | "
                 "best step per seed | tokens/s | train time per run |", "|---|---:|---:|---|---:|---:|---:|---:|"]
        for r in rows:
            n = len(r["test_ppl"])
            cell = f"{r['test_ppl_mean']:.1f} ± {r['test_ppl_std']:.1f} ({n})" if n > 1 else f"{r['test_ppl_mean']:.1f}"
            lines.append(f"| {r['model']} | {r['parameters']:,} | {cell} | "
                         f"{', '.join(f'{x:.1f}' for x in r['test_ppl'])} | {r['valid_ppl_mean']:.1f} | "
                         f"{', '.join(str(s) for s in r['best_steps'])} | {r['tokens_per_s_mean']:,.0f} | "
                         f"{r['train_time_s_mean'] / 60:.1f} min |")
        return "\n".join(lines)
    code = task == "code-exec"
    metric = "sequence accuracy" if code else "accuracy"
    lines = [f"{task}, preset {preset}: test {metric} (%) of the best-validation checkpoint, mean ± std over seeds; "
             f"converged = runs whose best validation accuracy rose by <= {_pct(CONVERGED_RISE)} points over the last "
             f"{CONVERGED_TAIL:.0%} of the updates (the largest rise in parentheses)",
             "", "| model | parameters | test acc | per seed | valid acc |" + (" test print acc |" if code else "")
             + " converged | train time per run |",
             "|---|---:|---:|---|---:|" + ("---:|" if code else "") + "---:|---:|"]
    for r in rows:
        n = len(r["test_acc"])
        cell = f"{_pct(r['test_acc_mean'])} ± {_pct(r['test_acc_std'])} ({n})" if n > 1 else _pct(r["test_acc_mean"])
        per_seed = ", ".join(_pct(a) for a in r["test_acc"])
        pa = f" {_pct(r['test_print_acc_mean'])} |" if code else ""
        converged = f"{r['converged']}/{n} ({_pct(max(r['late_rise']))})"
        lines.append(f"| {r['model']} | {r['parameters']:,} | {cell} | {per_seed} | {_pct(r['valid_acc_mean'])} |"
                     f"{pa} {converged} | {r['train_time_s_mean'] / 60:.1f} min |")
    return "\n".join(lines)


def training_time_column(rows: list[dict[str, str]]) -> str:
    """The column of ``metrics.csv`` that measures a run's training time for the equal-time view: ``cpu_s`` (the
    process's CPU seconds, which other jobs on the machine do not inflate), else the wall-clock ``elapsed_s``."""
    return "cpu_s" if rows and "cpu_s" in rows[0] else "elapsed_s"


def best_within(rows: list[dict[str, str]], seconds: float) -> float | None:
    """The best validation accuracy a run had reached after ``seconds`` of training (:func:`training_time_column`
    of its ``metrics.csv`` rows: training time without the validations); None before its first validation."""
    column = training_time_column(rows)
    reached = [float(r["valid_acc"]) for r in rows if float(r[column]) <= seconds]
    return max(reached) if reached else None


def wall_time_rows(rows: list[dict[str, Any]]) -> tuple[list[tuple[str, float]], list[dict[str, Any]]]:
    """The equal-time view of an algorithmic grid: the budgets (each model's mean training time per run in the
    :func:`training_time_column`, shortest first, named by the model) and, per model, the mean over seeds of the
    best validation accuracy reached within each budget (a run that finished sooner keeps its final best)."""
    metrics = {r["model"]: [_metric_rows(Path(d)) for d in r["run_dirs"]] for r in rows}
    budgets = sorted(((model, statistics.fmean(float(m[-1][training_time_column(m)]) for m in runs))
                      for model, runs in metrics.items()), key=lambda b: b[1])
    out = []
    for model, runs in metrics.items():
        cells = []
        for _, seconds in budgets:
            reached = [best_within(m, seconds) for m in runs]
            cells.append(statistics.fmean(reached) if None not in reached else None)
        out.append({"model": model, "valid_acc_within": cells, "seeds": len(runs)})
    return budgets, out


def format_wall_time_table(task: str, budgets: list[tuple[str, float]], rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`wall_time_rows`: validation accuracy (%) per model and budget."""
    head = " | ".join(f"{seconds / 60:.1f} min ({model}'s run)" for model, seconds in budgets)
    lines = [f"{task}: best validation accuracy (%) reached within equal training time (one thread's CPU time, "
             "validations left out; mean over seeds; a budget is the mean training time of one model's whole run; "
             "'-' = no validation yet)", "",
             f"| model | {head} |", "|---|" + "---:|" * len(budgets)]
    for r in rows:
        cells = " | ".join("-" if v is None else _pct(v) for v in r["valid_acc_within"])
        lines.append(f"| {r['model']} | {cells} |")
    return "\n".join(lines)


def compare(task: str, models: list[str], preset: str | None, overrides: list[str], out_dir: Path,
            flags: dict[str, Any] | None = None, seeds: list[int] | None = None, jobs: int = 1,
            report_only: bool = False) -> list[dict[str, Any]]:
    """Plan, run (resumably) and summarise the grid ``models x seeds``; returns :func:`summarize`'s rows.
    ``report_only``: train nothing; summarise the finished runs and name the others (a grid still in progress, or
    the published run records copied to a directory)."""
    if jobs < 1:
        raise ValueError(f"jobs: expected a positive integer, got {jobs}")
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
    rows = summarize(runs)
    table = format_table(task, preset, rows, env=getattr(runs[0].cfg, "env", None) if runs else None)
    wall = time.perf_counter() - t0
    print("\n" + table + ("" if report_only else
                          f"\n\ngrid wall time: {wall / 60:.1f} min ({jobs} job{'s' if jobs > 1 else ''} at a time)"))
    wall_time = None
    if task in ("code-exec", "listops") and rows:
        budgets, timed = wall_time_rows(rows)
        wall_time = {"budgets_s": dict(budgets), "rows": timed}
        wall_table = format_wall_time_table(task, budgets, timed)
        print("\n" + wall_table)
        table += "\n\n" + wall_table
    (out_dir / "summary.md").write_text(table + "\n")
    write_json(out_dir / "summary.json", {"task": task, "preset": preset, "overrides": overrides, "rows": rows,
                                          "wall_time": wall_time,
                                          "grid_wall_time_s": None if report_only else wall,
                                          "not_finished": [r.name for r in runs if r.state != "finished"]
                                          if report_only else []})
    try:
        groups = {row["model"]: [Path(d) for d in row["run_dirs"]] for row in rows}
        metrics = {"rl": ("episode_return",), "lm": ("valid_ppl", "train_loss")}.get(task, ("valid_acc", "train_loss"))
        plot = plot_seed_bands(groups, out_dir / "curves.png", metrics)
        print(f"learning curves: {plot}")
        if task in ("code-exec", "listops"):
            plot = plot_seed_bands(groups, out_dir / "wall-time.png", ("valid_acc",),
                                   x=training_time_column(_metric_rows(next(iter(groups.values()))[0])))
            print(f"validation accuracy over training time: {plot}")
    except ValueError as e:  # matplotlib missing: the table is still the result
        print(f"(no plot: {e})")
    return rows
