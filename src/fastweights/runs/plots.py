"""Learning curves of one or more runs on one figure (needs the optional ``plot`` extra: matplotlib)."""

from __future__ import annotations

from pathlib import Path

from ..fields import ConfigError
from .directory import MetricsLog, read_json


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plot: matplotlib is not installed; pip install 'fastweights[plot]'") from None
    return plt


def _series(rows: list[dict[str, str]], x_name: str, metric: str) -> tuple[list[float], list[float]]:
    pairs = [(float(r[x_name]), float(r[metric])) for r in rows if r.get(metric, "") != ""]
    return [x for x, _ in pairs], [y for _, y in pairs]


#: Columns of training time in seconds that ``plot_seed_bands`` can use as its x axis (shown in minutes).
TIME_COLUMNS = {"elapsed_s": "training time (min)", "cpu_s": "training CPU time (min)"}


def _save(plt, fig, title: str, out: Path) -> Path:
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_runs(run_dirs: list[Path], out: Path, metrics: tuple[str, ...]) -> Path:
    """One panel per metric (x = update, or epoch for runs that log no updates), one line per run labelled
    ``model``.

    The runs must be of one task (their metrics do not share an axis otherwise), and every metric a column of
    every run's ``metrics.csv`` (``fastweights plot`` draws the task's ``curve_metrics`` by default)."""
    runs = []
    for d in map(Path, run_dirs):
        rows = MetricsLog(d, tensorboard=False).rows()
        if not (d / "config.json").is_file() or not rows:
            raise FileNotFoundError(f"run_dir: {d} has no config.json or no metrics yet")
        runs.append((read_json(d / "config.json"), rows))
    tasks = sorted({cfg["task"] for cfg, _ in runs})
    if len(tasks) > 1:
        raise ConfigError(f"run_dirs: runs of different tasks ({', '.join(tasks)}) do not share an axis; plot each "
                          f"task's runs on a figure of its own")
    x_names = ("epoch", "step", "update")
    valid = [c for c in runs[0][1][0] if c not in x_names and all(c in rows[0] for _, rows in runs)]
    unknown = [m for m in metrics if m not in valid]
    if unknown or not metrics:
        raise ConfigError(f"metrics: unknown metric(s) {unknown or metrics}; the metrics.csv of "
                          f"{'these runs' if len(runs) > 1 else 'this run'} has: {', '.join(valid)}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    x_name = "step" if all("step" in rows[0] for _, rows in runs) else "epoch"
    for ax, metric in zip(axes[0], metrics):
        for cfg, rows in runs:
            xs, ys = _series(rows, x_name, metric)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=cfg["model"])
        ax.set_xlabel(x_name)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(plt, fig, tasks[0], out)


def plot_seed_bands(groups: dict[str, list[Path]], out: Path,
                    metrics: tuple[str, ...] = ("valid_acc", "train_loss"), x: str | None = None) -> Path:
    """Learning curves of several seeds per model: the mean over seeds as a line, the range (min to max) over
    seeds as a band. ``groups`` maps a label (the model) to its run directories; x = update (epoch for runs that
    log no updates), cut to the points every seed of the group has reached. ``x="elapsed_s"`` or ``"cpu_s"``: x =
    that training time in minutes instead, the mean over seeds at each row (the seeds' rows fall at the same
    updates)."""
    plt = _pyplot()
    loaded: dict[str, list[list[dict[str, str]]]] = {}
    tasks = set()
    for label, dirs in groups.items():
        for d in map(Path, dirs):
            rows = MetricsLog(d, tensorboard=False).rows()
            if not (d / "config.json").is_file() or not rows:
                raise FileNotFoundError(f"run_dir: {d} has no config.json or no metrics yet")
            tasks.add(read_json(d / "config.json")["task"])
            loaded.setdefault(label, []).append(rows)
    x_name = x or ("step" if all("step" in rows[0] for runs in loaded.values() for rows in runs) else "epoch")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, runs in loaded.items():
            series = [_series(rows, x_name, metric) for rows in runs]
            n = min(len(xs) for xs, _ in series)
            if n == 0:
                continue
            xs = series[0][0][:n]
            if x_name in TIME_COLUMNS:
                xs = [sum(c) / len(c) / 60 for c in zip(*(seed_xs[:n] for seed_xs, _ in series))]
            columns = list(zip(*(ys[:n] for _, ys in series)))
            mean = [sum(c) / len(c) for c in columns]
            line = ax.plot(xs, mean, marker="." if n < 30 else None, label=f"{label} ({len(runs)})")[0]
            if len(runs) > 1:
                ax.fill_between(xs, [min(c) for c in columns], [max(c) for c in columns], alpha=0.2,
                                color=line.get_color(), linewidth=0)
        if "loss" in metric:  # losses span decades: one diverging model would flatten every other curve
            ax.set_yscale("log")
        ax.set_xlabel(TIME_COLUMNS.get(x_name, x_name))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="model (seeds)", title_fontsize=8)
    return _save(plt, fig, f"{', '.join(sorted(tasks))}: mean over seeds, band = min..max", out)
