"""Render the CPU columns of docs/results.md from the run directories written by results_algorithmic.sh.

    python scripts/results_table.py runs/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TASKS = [("code-exec-3", "code execution, 3 variables", "code-exec --num-vars 3"),
         ("code-exec-5", "code execution, 5 variables", "code-exec --num-vars 5"),
         ("listops-10", "ListOps, depth 10", "listops --depth 10"),
         ("listops-15", "ListOps, depth 15", "listops --depth 15")]
MODELS = ["lstm", "transformer", "linear_transformer", "delta_net", "delta_rnn", "rdn"]


def main(root: str) -> None:
    base = Path(root)
    print("| model | " + " | ".join(t[1] for t in TASKS) + " |")
    print("|---|" + "---|" * len(TASKS))
    for model in MODELS:
        cells = []
        for key, _, _ in TASKS:
            found = list((base / key).glob(f"*-{model}/results.json"))
            if not found:
                cells.append("not run")
                continue
            r = json.loads(found[0].read_text())
            test = r["test"]
            extra = f", print {100 * test['print_acc']:.1f}" if "print_acc" in test else ""
            cells.append(f"{100 * test['acc']:.1f} (valid {100 * r['best_valid']['acc']:.1f}{extra}); "
                         f"{r['train_time_s'] / 60:.1f} min")
        print(f"| {model} | " + " | ".join(cells) + " |")
    print()
    for _key, name, args in TASKS:
        print(f"- {name}: `fastweights train {args} --model MODEL --preset cpu threads=1`")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
