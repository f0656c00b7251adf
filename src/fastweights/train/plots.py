"""Learning curves of one or more runs on one figure (needs the optional ``plot`` extra: matplotlib)."""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError
from .runs import MetricsLog, read_json


def plot_runs(run_dirs: list[Path], out: Path, metrics: tuple[str, ...] = ("valid_acc", "train_loss")) -> Path:
    """One panel per metric (x = epoch, or step for runs that log no epochs), one line per run labelled ``model``
    (+ task when they differ)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plot: matplotlib is not installed; pip install 'fastweights[plot]'") from None
    runs = []
    for d in map(Path, run_dirs):
        rows = MetricsLog(d, tensorboard=False).rows()
        if not (d / "config.json").is_file() or not rows:
            raise FileNotFoundError(f"run_dir: {d} has no config.json or no metrics yet")
        runs.append((read_json(d / "config.json"), rows))
    tasks = {cfg["task"] for cfg, _ in runs}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    x_name = "epoch" if all("epoch" in rows[0] for _, rows in runs) else "step"  # LM runs log steps
    for ax, metric in zip(axes[0], metrics):
        for cfg, rows in runs:
            xs = [int(r[x_name]) for r in rows if r.get(metric, "") != ""]
            ys = [float(r[metric]) for r in rows if r.get(metric, "") != ""]
            label = cfg["model"] if len(tasks) == 1 else f"{cfg['task']} {cfg['model']}"
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
        ax.set_xlabel(x_name)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(", ".join(sorted(tasks)))
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
