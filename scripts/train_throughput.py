"""Training throughput (tokens/s) of an algorithmic preset: forward, backward and Adam step on real batches.

    python scripts/train_throughput.py --model delta_rnn --preset paper --steps 3 [key=value ...]
    python scripts/train_throughput.py ... --baseline-rev e8a8ed8     # side by side with an older revision

With ``--baseline-rev`` the older revision's package is exported from git into a temporary directory under the
name ``fastweights_baseline`` and both versions train the same model (same seed, same batches) in this one
process, their steps interleaved, so that a change of machine load hits both alike. Prints one JSON line per
version: tokens per second (non-padding input tokens), seconds per step (min and median), threads, revision.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def export_baseline(rev: str, dest: Path) -> str:
    """Write revision ``rev``'s ``src/fastweights`` to ``dest/fastweights_baseline`` (imports renamed)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src/fastweights"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    pkg = dest / "fastweights_baseline"
    (dest / "src" / "fastweights").rename(pkg)
    for path in pkg.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\b(from|import) fastweights\b", r"\1 fastweights_baseline", text))
    sys.path.insert(0, str(dest))
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True,
                          text=True).stdout.strip()


def setup(package: str, task: str, preset: str, overrides: list[str], data):
    """Model, optimiser and the step function of ``package`` (``fastweights`` or ``fastweights_baseline``)."""
    algorithmic = importlib.import_module(f"{package}.train.algorithmic")
    config = importlib.import_module(f"{package}.train.config")
    models = importlib.import_module(f"{package}.models")
    cfg = config.resolve_config(task, preset, overrides)
    torch.manual_seed(cfg.seed)
    model = models.build_model(algorithmic.model_config(cfg, data))
    opt = algorithmic.make_optimizer(cfg, model)
    model.train()

    def step(src, tgt, lengths) -> None:
        loss = algorithmic.loss_fn(cfg.task, algorithmic.batch_logits(model, cfg.task, src, lengths), tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return cfg, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="code-exec")
    p.add_argument("--model", default="delta_rnn")
    p.add_argument("--preset", default="paper")
    p.add_argument("--steps", type=int, default=3, help="timed steps per version (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--baseline-rev", default=None, help="git revision to measure side by side (e.g. e8a8ed8)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from fastweights.runs.config import preset_path
    from fastweights.tasks import resolve_config
    from fastweights.train.algorithmic import load_task_data

    overrides = [f"model={a.model}", *a.overrides]
    preset = str(preset_path(a.task, a.preset))  # a file path: the baseline revision reads the same preset
    data = load_task_data(resolve_config(a.task, preset, overrides))
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    versions = {head: "fastweights"}
    with tempfile.TemporaryDirectory() as tmp:
        if a.baseline_rev:
            versions = {export_baseline(a.baseline_rev, Path(tmp)): "fastweights_baseline", **versions}
        steps = {rev: setup(pkg, a.task, preset, overrides, data) for rev, pkg in versions.items()}
        split = data.splits["train"]
        g = torch.Generator().manual_seed(0)
        batch_size = next(iter(steps.values()))[0].batch_size
        times: dict[str, list[float]] = {rev: [] for rev in versions}
        tokens = 0
        for i in range(a.steps + 1):
            idx = torch.randint(split.src.shape[0], (batch_size,), generator=g)
            batch = split.src[idx], split.tgt[idx], split.lengths[idx]
            for rev, (_, step) in steps.items():  # the same batch for every version, back to back
                t0 = time.perf_counter()
                step(*batch)
                if i > 0:  # the first step pays one-off costs (compilation, allocation)
                    times[rev].append(time.perf_counter() - t0)
            if i > 0:
                tokens += int(batch[2].sum())
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    for rev, ts in times.items():
        print(json.dumps({"revision": rev, "model": a.model, "preset": a.preset, "batch_size": batch_size,
                          "tokens_per_s": tokens / sum(ts), "s_per_step_min": min(ts),
                          "s_per_step_median": statistics.median(ts), "steps": len(ts),
                          "threads": torch.get_num_threads(), "loadavg_after": load}))


if __name__ == "__main__":
    main()
