"""Render the algorithmic table of docs/results.md from the summaries of the grid (results_algorithmic.sh, or
``fastweights compare --report-only`` on the records of docs/runs/algorithmic).

    python scripts/results_table.py runs/results

Each cell: test accuracy in % of the best-validation checkpoint, mean ± sample std over seeds (n seeds), the
number of converged runs (best validation accuracy up by at most 1 point over the last 20 % of the updates), then
the mean training wall time per run. The learning curves are each setting's curves.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SETTINGS = [("code-exec-3", "code execution, 3 variables"), ("code-exec-5", "code execution, 5 variables"),
            ("listops-10", "ListOps, depth 10"), ("listops-15", "ListOps, depth 15")]
#: The LSTM's longer ListOps runs (4x the updates): a row of their own, in the ListOps columns
LONG = {"listops-10": "listops-10-lstm-long", "listops-15": "listops-15-lstm-long"}
MODELS = ["lstm", "transformer", "linear_transformer", "delta_net", "delta_rnn", "rdn"]


def cell(row: dict | None) -> str:
    if row is None:
        return "not run"
    n = len(row["test_acc"])
    acc = f"{100 * row['test_acc_mean']:.1f}"
    if n > 1:
        acc += f" ± {100 * row['test_acc_std']:.1f} ({n})"
    converged = f"; {row['converged']}/{n} converged" if "converged" in row else ""
    return f"{acc}{converged}; {row['train_time_s_mean'] / 60:.1f} min"


def main(root: str) -> None:
    base = Path(root)
    found = {}
    for key in [k for k, _ in SETTINGS] + list(LONG.values()):
        path = base / key / "summary.json"
        if path.is_file():
            found[key] = {r["model"]: r for r in json.loads(path.read_text())["rows"]}
    print("| model | " + " | ".join(name for _, name in SETTINGS) + " |")
    print("|---|" + "---|" * len(SETTINGS))
    for model in MODELS:
        print(f"| {model} | " + " | ".join(cell(found.get(key, {}).get(model)) for key, _ in SETTINGS) + " |")
    long = [found.get(LONG[key], {}).get("lstm") if key in LONG else None for key, _ in SETTINGS]
    if any(long):
        print("| lstm, 4x the updates | " + " | ".join(cell(r) if r else "" for r in long) + " |")
    print()
    for key, name in SETTINGS:
        for model in MODELS:
            row = found.get(key, {}).get(model)
            if row is not None:
                seeds = ", ".join(f"{s}: {100 * a:.1f}" for s, a in zip(row["seeds"], row["test_acc"]))
                print(f"- {name}, {model}: per seed {seeds}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
