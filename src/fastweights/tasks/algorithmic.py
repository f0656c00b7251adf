"""What the two algorithmic tasks (code execution and ListOps) share: training, evaluation and loading through
:mod:`fastweights.train.algorithmic`, the grid's score (test accuracy of the best-validation checkpoint), its
convergence rule and the equal-training-time view of a grid."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Flag, Loaded, Task, needed_file

if TYPE_CHECKING:
    from ..train.algorithmic import TaskVocab

#: The convergence rule of the algorithmic grids: a finished run has converged when its best validation accuracy
#: rose by at most CONVERGED_RISE over the last CONVERGED_TAIL of its updates.
CONVERGED_TAIL = 0.2
CONVERGED_RISE = 0.01


@dataclass
class LoadedAlgorithmic(Loaded):
    """A code-execution or ListOps model (:class:`~fastweights.models.SequenceModel`) with its vocabularies."""

    vocab: TaskVocab = field(repr=False)

    def predict(self, tokens: str | list[str]) -> list[str] | str:
        """The model's answer for one input (tokens, or a string of space-separated tokens): code execution, the
        output token at every position (``_`` = nothing printed); ListOps, the value of the expression."""
        import torch

        if isinstance(tokens, str):
            tokens = tokens.split()
        index = {t: i for i, t in enumerate(self.vocab.input)}
        unknown = [t for t in tokens if t not in index]
        if unknown:
            raise ValueError(f"tokens: expected {self.task} tokens {self.vocab.input}, got unknown {unknown[:5]}")
        if not tokens:
            raise ValueError("tokens: expected at least one token, got none")
        device = next(self.model.parameters()).device
        src = torch.tensor([[index[t] for t in tokens]], device=device)
        with torch.no_grad():
            if self.model.config.head == "per_position":  # code execution: an output at every position
                return [self.vocab.output[i] for i in self.model(src)[0][0].argmax(-1).tolist()]
            lengths = torch.tensor([len(tokens)], device=device)
            return self.vocab.output[int(self.model(src, lengths=lengths)[0][0].argmax())]

    def save_files(self, out_dir: Path) -> None:
        from ..train.algorithmic import VOCAB_FILE

        self.vocab.save(out_dir / VOCAB_FILE)


class AlgorithmicTask(Task):
    """Code execution or ListOps: a sequence model trained with Adam on generated (or the official) data sets,
    validated on accuracy; a grid compares the test accuracy of the best-validation checkpoints."""

    eval_options = frozenset({"split", "data"})
    score_name = "test acc"
    curve_metrics = ("valid_acc", "train_loss")
    writes_data = True
    data_flag = Flag("--data", "data", "directory with the official data files (default: generate)",
                     commands=("train", "compare"))

    def config_class(self) -> type:
        from ..train.config import TrainConfig

        return TrainConfig

    def train(self, cfg: Any, run_dir: Path, *, resume: bool = False, command: list[str] | None = None
              ) -> dict[str, Any]:
        from ..train.algorithmic import train

        return train(cfg, run_dir, resume=resume, command=command)

    def describe(self, cfg: Any) -> list[str]:
        from ..models import count_parameters
        from ..runs.progress import format_count
        from ..train.algorithmic import build

        data, _, model = build(cfg, progress=True)
        sizes = ", ".join(f"{k} {v.src.shape[0]}" for k, v in data.splits.items())
        return [f"data: {data.source} ({sizes}; vocabulary {data.vocab_size}, classes {data.num_classes})",
                f"parameters: {format_count(count_parameters(model))}"]

    def prepare(self, configs: list[Any]) -> None:
        from ..train.algorithmic import load_task_data

        keys = ("num_vars", "depth", "max_length", "code_length", "train_size", "valid_size", "test_size",
                "data_seed", "data")
        for cfg in {tuple(getattr(c, k) for k in keys): c for c in configs}.values():
            load_task_data(cfg)

    def write_data(self, cfg: Any, out_dir: Path) -> list[Path]:
        from ..train.algorithmic import write_task_data

        return write_task_data(cfg, out_dir, progress=True)

    def evaluate(self, run_dir: Path, checkpoint: str, device: str | None, options: dict[str, Any]
                 ) -> dict[str, Any]:
        from ..train.algorithmic import evaluate_run

        split = options.get("split") or "test"
        metrics = evaluate_run(run_dir, split, checkpoint=checkpoint, device=device, data_dir=options.get("data"),
                               progress=True)
        return {"split": split, "checkpoint": checkpoint, **metrics}

    def load(self, run_dir: Path, checkpoint: str, device: str) -> Loaded:
        from ..train.algorithmic import load_algorithmic_model

        cfg, vocab, model = load_algorithmic_model(run_dir, checkpoint, device=device)
        return LoadedAlgorithmic(self.name, cfg, model, str(run_dir), checkpoint, vocab)

    def from_export(self, path: Path, cfg: Any) -> Loaded:
        from ..models import build_model
        from ..train.algorithmic import VOCAB_FILE, TaskVocab, model_config
        from ..weights import load_module

        vocab = TaskVocab.load(needed_file(path, VOCAB_FILE))
        if vocab.task != self.name:
            raise ValueError(f"vocabulary: {path / VOCAB_FILE} belongs to a {vocab.task} model, not {self.name}")
        model = build_model(model_config(cfg, vocab))
        load_module(model, needed_file(path, "model.safetensors"))
        return LoadedAlgorithmic(self.name, cfg, model.to(cfg.device).eval(), str(path), None, vocab)

    # -- grids -----------------------------------------------------------------------------------------------------

    def score(self, results: dict[str, Any]) -> float:
        return results["test"]["acc"]

    def summarize(self, model: str, runs: list[tuple[Any, Path, dict[str, Any]]]) -> dict[str, Any]:
        test = [res["test"]["acc"] for _, _, res in runs]
        prints = [res["test"]["print_acc"] for _, _, res in runs if "print_acc" in res["test"]]
        rises = [late_rise(metric_rows(d)) for _, d, _ in runs]
        return {
            "model": model, "parameters": runs[0][2]["parameters"], "seeds": [cfg.seed for cfg, _, _ in runs],
            "test_acc": test, "test_acc_mean": statistics.fmean(test),
            "test_acc_std": statistics.stdev(test) if len(test) > 1 else 0.0,
            "valid_acc_mean": statistics.fmean(res["best_valid"]["acc"] for _, _, res in runs),
            "test_print_acc_mean": statistics.fmean(prints) if prints else None,
            "late_rise": rises, "converged": sum(rise <= CONVERGED_RISE + 1e-12 for rise in rises),
            "train_time_s_mean": statistics.fmean(res["train_time_s"] for _, _, res in runs),
            "run_dirs": [str(d) for _, d, _ in runs],
        }

    #: Whether the grid's table has the print accuracy of code execution.
    print_accuracy: ClassVar[bool] = False
    #: What the task's accuracy is called in the table's title.
    accuracy_name: ClassVar[str] = "accuracy"

    def format_table(self, preset: str | None, rows: list[dict[str, Any]], configs: list[Any]) -> str:
        return format_table(self.name, preset, rows, self.print_accuracy, self.accuracy_name)

    def extra_reports(self, rows: list[dict[str, Any]], out_dir: Path) -> dict[str, tuple[str, Any]]:
        if not rows:
            return {}
        from ..runs.plots import plot_seed_bands

        budgets, timed = wall_time_rows(rows)
        try:
            groups = {row["model"]: [Path(d) for d in row["run_dirs"]] for row in rows}
            column = training_time_column(metric_rows(next(iter(groups.values()))[0]))
            plot = plot_seed_bands(groups, out_dir / "wall-time.png", ("valid_acc",), x=column)
            print(f"validation accuracy over training time: {plot}")
        except ValueError as e:  # matplotlib missing: the table is still the result
            print(f"(no plot: {e})")
        return {"wall_time": (format_wall_time_table(self.name, budgets, timed),
                              {"budgets_s": dict(budgets), "rows": timed})}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def format_table(task: str, preset: str | None, rows: list[dict[str, Any]], print_accuracy: bool = False,
                 accuracy_name: str = "accuracy") -> str:
    """A Markdown table of an algorithmic grid: test accuracy in % as mean ± std (n seeds) with the per-seed values,
    validation accuracy, convergence and training time."""
    lines = [f"{task}, preset {preset}: test {accuracy_name} (%) of the best-validation checkpoint, mean ± std over "
             f"seeds; converged = runs whose best validation accuracy rose by <= {_pct(CONVERGED_RISE)} points over "
             f"the last {CONVERGED_TAIL:.0%} of the updates (the largest rise in parentheses)",
             "", "| model | parameters | test acc | per seed | valid acc |"
             + (" test print acc |" if print_accuracy else "") + " converged | train time per run |",
             "|---|---:|---:|---|---:|" + ("---:|" if print_accuracy else "") + "---:|---:|"]
    for r in rows:
        n = len(r["test_acc"])
        cell = f"{_pct(r['test_acc_mean'])} ± {_pct(r['test_acc_std'])} ({n})" if n > 1 else _pct(r["test_acc_mean"])
        per_seed = ", ".join(_pct(a) for a in r["test_acc"])
        pa = f" {_pct(r['test_print_acc_mean'])} |" if print_accuracy else ""
        converged = f"{r['converged']}/{n} ({_pct(max(r['late_rise']))})"
        lines.append(f"| {r['model']} | {r['parameters']:,} | {cell} | {per_seed} | {_pct(r['valid_acc_mean'])} |"
                     f"{pa} {converged} | {r['train_time_s_mean'] / 60:.1f} min |")
    return "\n".join(lines)


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's ``metrics.csv``."""
    from ..runs.directory import MetricsLog

    return MetricsLog(Path(run_dir), tensorboard=False).rows()


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
    metrics = {r["model"]: [metric_rows(Path(d)) for d in r["run_dirs"]] for r in rows}
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
