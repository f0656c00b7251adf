"""The quickstart demo: a small Delta RNN learns a synthetic memory task on CPU in about a minute.

Task (delayed recall): the input is a stream of random tokens; the target at step ``t`` is the token seen
``delay`` steps earlier (no target for the first ``delay`` steps). Solving it needs memory of the recent
past, which the fast weights provide; chance accuracy is ``1 / vocab``.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..models import ModelConfig, build_model, count_parameters
from ..runs.progress import format_count, format_duration, plural


def delayed_recall_batch(batch: int, length: int, vocab: int, delay: int, generator: torch.Generator):
    """``tokens [B, T]`` uniform in ``[0, vocab)`` and ``targets [B, T]`` (-1 where there is none)."""
    tokens = torch.randint(0, vocab, (batch, length), generator=generator)
    targets = torch.full_like(tokens, -1)
    targets[:, delay:] = tokens[:, :-delay]
    return tokens, targets


#: Accuracy on new sequences from which the demo counts the task as solved (chance is 1 / vocab).
SOLVED_ACCURACY = 0.9


def run_demo(steps: int = 200, model: str = "delta_rnn", seed: int = 0, batch: int = 32, length: int = 32,
             vocab: int = 8, delay: int = 3, log_every: int = 25) -> list[float]:
    """Train and print the loss as it falls, then a verdict line: the accuracy on new sequences and whether that
    solves the task (at least :data:`SOLVED_ACCURACY`). Returns the logged losses."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = ModelConfig(model=model, vocab_size=vocab, num_classes=vocab, d_model=64, num_layers=2, num_heads=4,
                      dropout=0.0)
    net = build_model(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    print(f"demo: {model}, {format_count(count_parameters(net))} parameters, delayed recall (delay {delay}, vocab "
          f"{vocab}, chance accuracy {1 / vocab:.3f}), {steps} steps of batch {batch} x {length} tokens")
    losses = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        tokens, targets = delayed_recall_batch(batch, length, vocab, delay, gen)
        logits, _ = net(tokens)
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == 1:
            mask = targets >= 0
            acc = (logits.argmax(-1)[mask] == targets[mask]).float().mean().item()
            losses.append(loss.item())
            print(f"step {step:5d}  loss {loss.item():.4f}  accuracy {acc:.3f}  "
                  f"({format_duration(time.perf_counter() - start)})", flush=True)
    tokens, targets = delayed_recall_batch(4 * batch, length, vocab, delay, gen)  # sequences not trained on
    net.eval()
    with torch.no_grad():
        pred = net(tokens)[0].argmax(-1)
    mask = targets >= 0
    acc = (pred[mask] == targets[mask]).float().mean().item()
    verdict = "solved" if acc >= SOLVED_ACCURACY else "not solved"
    hint = "" if acc >= SOLVED_ACCURACY else f"; more steps may solve it (--steps {2 * steps})"
    print(f"{verdict}: accuracy {acc:.3f} on {format_count(int(mask.sum()))} new tokens (chance {1 / vocab:.3f}; "
          f"solved means >= {SOLVED_ACCURACY}) after {plural(steps, 'step')} of {model}, "
          f"{format_duration(time.perf_counter() - start)}{hint}", flush=True)
    return losses
