"""Train several models with one preset and compare them: a table on stdout (also ``summary.md``) and a
learning-curve plot. Finished runs are reused and interrupted ones resumed, so re-running is cheap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .algorithmic import train
from .config import config_to_dict, resolve_config
from .plots import plot_runs
from .runs import read_json


def compare(task: str, models: list[str], preset: str | None, overrides: list[str], out_dir: Path,
            flags: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    cfgs = [resolve_config(task, preset, overrides, model=m, **flags) for m in models]  # validate all first
    rows, run_dirs = [], []
    for cfg in cfgs:
        what = f"vars{cfg.num_vars}" if task == "code-exec" else f"depth{cfg.depth}"
        run_dir = Path(out_dir) / f"{task}-{what}-{cfg.model}"
        same = (run_dir / "config.json").is_file() and read_json(run_dir / "config.json") == config_to_dict(cfg)
        if same and (run_dir / "results.json").is_file():
            print(f"{cfg.model}: finished run found in {run_dir}, reusing it", flush=True)
            results = read_json(run_dir / "results.json")
        else:
            resume = same and (run_dir / "last.pt").is_file()
            if not same and (run_dir / "config.json").exists():
                raise ValueError(f"out_dir: {run_dir} holds a run with a different configuration; "
                                 f"choose another --out-dir or remove it")
            results = train(cfg, run_dir, resume=resume)
        run_dirs.append(run_dir)
        rows.append({"model": cfg.model, "parameters": results["parameters"],
                     "valid_acc": results["best_valid"]["acc"], "best_epoch": results["best_valid"]["epoch"],
                     "test_acc": results["test"]["acc"], "test_print_acc": results["test"].get("print_acc"),
                     "train_time_s": results["train_time_s"], "run_dir": str(run_dir)})
    table = format_table(task, preset, rows)
    print("\n" + table)
    out_dir = Path(out_dir)
    (out_dir / "summary.md").write_text(table + "\n")
    try:
        plot = plot_runs(run_dirs, out_dir / "curves.png")
        print(f"\nlearning curves: {plot}")
    except ValueError as e:  # matplotlib missing: the table is still the result
        print(f"\n(no plot: {e})")
    return rows


def format_table(task: str, preset: str | None, rows: list[dict[str, Any]]) -> str:
    metric = "sequence acc" if task == "code-exec" else "accuracy"
    lines = [f"{task}, preset {preset}: test {metric} of the best-validation checkpoint",
             "", f"| model | parameters | valid acc (epoch) | test acc |"
             f"{' test print acc |' if task == 'code-exec' else ''} train time |",
             f"|---|---:|---:|---:|{'---:|' if task == 'code-exec' else ''}---:|"]
    for r in rows:
        pa = f" {r['test_print_acc']:.3f} |" if task == "code-exec" else ""
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['valid_acc']:.3f} ({r['best_epoch']}) | "
                     f"{r['test_acc']:.3f} |{pa} {r['train_time_s'] / 60:.1f} min |")
    return "\n".join(lines)
