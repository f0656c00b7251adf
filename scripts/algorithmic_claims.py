"""The numbers behind the algorithmic claims table of docs/results.md, read from the run records.

    python scripts/algorithmic_claims.py [docs/runs/algorithmic]

For every setting: each model's test accuracy per seed (%), mean, sample std and range, and whether every run
converged (the rule of ``fastweights compare``: best validation accuracy up by at most 1 point over the last 20 % of
the updates). Then, for each pair of models the claims compare, the per-seed gaps (runs of one seed train on the
same examples in the same order whatever the model), their mean and two standard errors (2 x sample std of the
gaps / sqrt(n)), and the verdict of the rule of docs/results.md: the order holds in every seed and the mean gap is
more than two standard errors from 0.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

from fastweights.tasks.algorithmic import CONVERGED_RISE, late_rise

SETTINGS = ("code-exec-3", "code-exec-5", "listops-10", "listops-15", "listops-10-lstm-long", "listops-15-lstm-long")
MODELS = ("lstm", "transformer", "linear_transformer", "delta_net", "delta_rnn", "rdn")
#: ((setting, model) better, (setting, model) worse) for every comparison a claim of the paper makes
PAIRS = [((s, a), (s, b)) for s in ("code-exec-3", "code-exec-5") for a in ("delta_rnn", "rdn")
         for b in ("delta_net", "transformer", "linear_transformer")] \
    + [((s, a), (s, b)) for s in ("listops-10", "listops-15") for a in ("delta_net", "delta_rnn", "rdn")
       for b in ("transformer", "linear_transformer")] \
    + [((s, "lstm"), (s, b)) for s in ("code-exec-3", "code-exec-5")
       for b in ("transformer", "linear_transformer", "delta_net", "delta_rnn", "rdn")] \
    + [(("listops-10-lstm-long", "lstm"), ("listops-15-lstm-long", "lstm"))]  # the LSTM's collapse at depth 15


def load(root: Path) -> dict[str, dict[str, dict[int, tuple[float, bool]]]]:
    """setting -> model -> seed -> (test accuracy, converged)."""
    out: dict[str, dict[str, dict[int, tuple[float, bool]]]] = {}
    for setting in SETTINGS:
        for results in sorted((root / setting).glob("*-seed*/results.json")):
            run = results.parent
            model, _, seed = run.name.rpartition("-seed")
            with open(run / "metrics.csv", newline="") as f:
                rise = late_rise(list(csv.DictReader(f)))
            acc = json.loads(results.read_text())["test"]["acc"]
            out.setdefault(setting, {}).setdefault(model, {})[int(seed)] = (100 * acc, rise <= CONVERGED_RISE + 1e-12)
    return out


def main(root: Path) -> None:
    data = load(root)
    for setting in SETTINGS:
        print(f"## {setting}")
        for model in MODELS:
            runs = data.get(setting, {}).get(model, {})
            if not runs:
                continue
            accs = [a for a, _ in runs.values()]
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            converged = sum(c for _, c in runs.values())
            print(f"- {model}: {statistics.fmean(accs):.1f} ± {std:.1f} (range {min(accs):.1f}-{max(accs):.1f}; "
                  f"seeds {', '.join(f'{s}: {a:.1f}' for s, (a, _) in sorted(runs.items()))}); converged "
                  f"{converged}/{len(runs)}")
    print("\n## per-seed gaps (better - worse, points)")
    for (setting_a, a), (setting_b, b) in PAIRS:
        ra, rb = data.get(setting_a, {}).get(a, {}), data.get(setting_b, {}).get(b, {})
        seeds = sorted(set(ra) & set(rb))
        if not seeds:
            continue
        gaps = [ra[s][0] - rb[s][0] for s in seeds]
        mean = statistics.fmean(gaps)
        two_se = 2 * statistics.stdev(gaps) / math.sqrt(len(gaps)) if len(gaps) > 1 else math.inf
        holds = all(g > 0 for g in gaps) and mean > two_se
        converged = all(ra[s][1] and rb[s][1] for s in seeds)
        print(f"- {setting_a} {a} - {setting_b} {b}: {', '.join(f'{g:+.1f}' for g in gaps)} (mean {mean:+.1f}, "
              f"2 SE {two_se:.1f}; n={len(gaps)}): {'holds' if holds else 'does not hold'}"
              f"{'' if converged else ' (not every run converged)'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/runs/algorithmic"))
