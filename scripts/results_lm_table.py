"""Markdown table of the runs written by scripts/results_lm.sh: test perplexity, truncated and carried."""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELS = ["transformer", "linear_transformer", "delta_net", "delta_mlp", "delta_delta_net", "delta_rnn",
          "delta_lstm", "rdn", "lstm", "feedforward"]


def cell(run: Path, mode: str) -> str:
    path = run / f"test-{mode}.json"
    if not path.exists():
        return "-"
    return f"{json.loads(path.read_text())['ppl']:.1f}"


def minutes(run: Path) -> str:
    results = run / "results.json"
    if not results.exists():
        return "-"
    r = json.loads(results.read_text())
    seconds = r.get("train_time_s")
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def main(out: Path) -> None:
    print("| model | test ppl, 128-token segments (truncated training) | test ppl, state carried (carried-state "
          "training) | train min (truncated / carried) |")
    print("|---|---|---|---|")
    for m in MODELS:
        t, c = out / f"{m}-truncated", out / f"{m}-carry"
        print(f"| {m} | {cell(t, 'segments')} | {cell(c, 'carry')} | {minutes(t)} / {minutes(c)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/results-lm"))
