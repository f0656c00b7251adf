"""Training throughput (tokens/s) of an algorithmic preset: forward, backward and Adam step on real batches.

    python scripts/train_throughput.py --model delta_rnn --preset paper --steps 5 [key=value ...]

Runs against whichever ``fastweights`` is importable, so the same script measures an older checkout
(``PYTHONPATH=/path/to/old/src``); docs/performance.md compares two checkouts this way, alternating runs.
Prints one JSON line: tokens per second (non-padding input tokens), seconds per step, threads, the revision.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="code-exec")
    p.add_argument("--model", default="delta_rnn")
    p.add_argument("--preset", default="paper")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    a = p.parse_args()

    import fastweights
    from fastweights.train.algorithmic import batch_logits, build, loss_fn, make_optimizer
    from fastweights.train.config import resolve_config

    torch.set_num_threads(a.threads)
    cfg = resolve_config(a.task, a.preset, [f"model={a.model}", *a.overrides])
    data, _, model = build(cfg)
    opt = make_optimizer(cfg, model)
    split = data.splits["train"]
    g = torch.Generator().manual_seed(0)
    model.train()
    times, tokens = [], 0
    for i in range(a.steps + 1):
        idx = torch.randint(split.src.shape[0], (cfg.batch_size,), generator=g)
        src, tgt, lengths = split.src[idx], split.tgt[idx], split.lengths[idx]
        t0 = time.perf_counter()
        loss = loss_fn(cfg.task, batch_logits(model, cfg.task, src, lengths), tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i > 0:  # the first step pays one-off costs (compilation, allocation)
            times.append(time.perf_counter() - t0)
            tokens += int(lengths.sum())
    root = Path(fastweights.__file__).resolve().parents[2]
    rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip() or None
    print(json.dumps({"model": a.model, "preset": a.preset, "batch_size": cfg.batch_size,
                      "tokens_per_s": tokens / sum(times), "s_per_step": sum(times) / len(times),
                      "steps": len(times), "threads": torch.get_num_threads(), "revision": rev,
                      "source": str(root)}))


if __name__ == "__main__":
    main()
