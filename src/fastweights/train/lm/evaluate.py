"""Evaluation in three modes: sliding windows, carried state, non-overlapping segments (see :func:`evaluate_lm`)."""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor

from ...data.lm import StreamBatcher
from ...fields import check_positive_int
from ...models.lm import LanguageModel, LMConfig
from ...runs.progress import Progress
from ..config import LM_EVAL_MODES, LMTrainConfig
from .dist import DistInfo, _all_sum
from .model import _ppl

# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


def _check_ids(ids: Tensor) -> Tensor:
    if not isinstance(ids, Tensor):
        raise ValueError(f"ids: expected a 1-D integer tensor of token ids, got {type(ids).__name__}")
    if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"ids: expected a 1-D integer tensor of token ids, got {ids.dtype} of shape {list(ids.shape)}")
    if ids.numel() < 2:
        raise ValueError(f"ids: expected at least 2 tokens (one to predict), got {ids.numel()}")
    return ids


def step_decodable(config: LMConfig) -> bool:
    """Whether a token's output depends only on the tokens before it, not on the length of the call (forward or no
    positions): then step decoding, prefixes and carried state all equal one long forward."""
    return config.positional_encoding == "none" or config.position_order == "forward"


def _segment_sums(model: LanguageModel, ids: Tensor, length: int, batch_size: int, device: torch.device,
                  rank: int = 0, world_size: int = 1, bar: Progress | None = None) -> tuple[float, int]:
    """Summed NLL and count of the tokens of non-overlapping ``length``-token segments, each from a zero state;
    with ``world_size > 1`` this process scores batches ``rank, rank + world_size, ...`` only."""
    n = ids.numel() - 1  # predictions
    full = n // length
    batches = [(ids[i * length:(min(i + batch_size, full)) * length].view(-1, length),
                ids[i * length + 1:(min(i + batch_size, full)) * length + 1].view(-1, length))
               for i in range(0, full, batch_size)]
    if n % length:
        batches.append((ids[full * length:n][None], ids[full * length + 1:n + 1][None]))
    total, count = 0.0, 0
    for k, (x, y) in enumerate(batches):
        if k % world_size != rank:
            continue
        nll, _ = model(x.long().to(device), targets=y.long().to(device))
        total += float(nll.double().sum())
        count += y.numel()
        if bar is not None:
            bar.update(k + 1)
    return total, count


def _sliding_sums(model: LanguageModel, ids: Tensor, window: int, batch_size: int, device: torch.device,
                  bar: Progress | None = None) -> tuple[float, int]:
    """Every token ``ids[j]`` (``j >= 1``) scored with ``ids[max(0, j - W):j]`` as its context: the first ``W``
    targets by one forward over ``ids[:W]`` (as the official evaluation does; with reversed positions their position
    codes are those of that window), every later one as the last position of its own window."""
    n = ids.numel()
    first = min(window, n - 1)  # targets 1..first have their whole prefix as context
    nll, _ = model(ids[:first][None].long().to(device), targets=ids[1:first + 1][None].long().to(device))
    total = float(nll.double().sum())
    if n - 1 > window:  # targets j = W+1 .. n-1, window ids[j-W:j] = row s = j - W of the unfolded view
        windows = ids.unfold(0, window, 1)  # [n - W + 1, W], a view
        starts = range(1, n - window, batch_size)
        for k, s0 in enumerate(starts):
            s1 = min(s0 + batch_size, n - window)
            h, _ = model.hidden(windows[s0:s1].long().to(device))
            nll = model.nll(h[:, -1], ids[s0 + window:s1 + window].long().to(device))
            total += float(nll.double().sum())
            if bar is not None:
                bar.update(k + 1)
    return total, n - 1


def _stream_sums(model: LanguageModel, ids: Tensor, streams: int, length: int, device: torch.device,
                 bar: Progress | None = None) -> tuple[float, int]:
    """Summed NLL and count of the tokens of ``streams`` contiguous streams of ``ids`` (Transformer-XL's ordered
    iterator: the last ``len(ids) % streams`` tokens are dropped), read in windows of ``length`` tokens with the
    state carried from window to window; each stream starts from a zero state. ``streams=1`` is the ``carry``
    evaluation: one pass over the split, every token but the first scored."""
    total, count, state = 0.0, 0, None
    for k, (x, y) in enumerate(StreamBatcher(ids, streams, length)):
        nll, state = model(x.to(device), state, targets=y.to(device))
        total += float(nll.double().sum())
        count += y.numel()
        if bar is not None:
            bar.update(k + 1)
    return total, count


def describe_eval(mode: str, context: int) -> str:
    """How an :func:`evaluate_lm` result of ``mode`` scored its tokens, as a table or a log line says it."""
    return {"segments": f"non-overlapping segments of {context} tokens",
            "sliding": f"a sliding window of {context} tokens",
            "carry": "the state carried through the split"}[mode]


@torch.no_grad()
def evaluate_lm(model: LanguageModel, ids: Tensor, mode: str = "segments", *, context: int = 256,
                batch_size: int | None = None, device: torch.device | str | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Loss (mean NLL in nats/token), perplexity and number of scored tokens of ``model`` on ``ids [N]``.

    Every token but the first is scored once (``N - 1`` tokens) under each mode:

    * ``"sliding"``: token ``j`` is predicted from exactly ``ids[max(0, j - context):j]`` from a zero state
      (paper.md C.3's stride-1 evaluation): the first ``context`` targets by one forward over the first window, as
      the official code does (the same as separate forwards unless positions are reversed), every later token as
      the last position of its own window. Windows of ``context`` tokens are run in batches of ``batch_size``:
      ``context`` times the work of ``segments``.
    * ``"carry"``: one stream with the state carried through the whole of ``ids``, run in chunks of ``context``
      tokens (memory only; the result equals one forward over ``ids`` for step-decodable models, see
      :func:`step_decodable`; reversed positions restart at every chunk, as in the paper's code).
    * ``"segments"``: non-overlapping segments of ``context`` tokens, each from a zero state, ``batch_size`` per
      forward (the validation of training).

    ``batch_size`` None: about 4096 tokens per forward. Returns ``{"mode", "context", "loss", "ppl", "tokens"}``.
    """
    if not isinstance(model, LanguageModel):
        raise TypeError(f"model: expected a LanguageModel, got {type(model).__name__}")
    ids = _check_ids(ids)
    if mode not in LM_EVAL_MODES:
        raise ValueError(f"mode: expected one of {list(LM_EVAL_MODES)}, got {mode!r}")
    context = check_positive_int("context", context)
    batch_size = max(1, 4096 // context) if batch_size is None else check_positive_int("batch_size", batch_size)
    device = torch.device(device) if device is not None else model.embedding.weight.device
    ids = ids.cpu()
    n = ids.numel() - 1
    bar = None
    if progress:
        steps = {"sliding": math.ceil(max(n - context, 0) / batch_size), "carry": math.ceil(n / context),
                 "segments": math.ceil((n // context) / batch_size) + (1 if n % context else 0)}[mode]
        bar = Progress(max(steps, 1), prefix=f"eval {mode}", stream=sys.stderr)
    was_training = model.training
    model.eval()
    try:
        if mode == "sliding":
            total, count = _sliding_sums(model, ids, context, batch_size, device, bar)
        elif mode == "carry":
            total, count = _stream_sums(model, ids, 1, context, device, bar)
        else:
            total, count = _segment_sums(model, ids, context, batch_size, device, bar=bar)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    loss = total / count
    return {"mode": mode, "context": context, "loss": loss, "ppl": _ppl(loss), "tokens": count}


@torch.no_grad()
def validate(model: LanguageModel, ids: Tensor, cfg: LMTrainConfig, device: torch.device,
             dist: DistInfo) -> dict[str, float]:
    """The validation loss on ``ids`` during training, by ``cfg.validation_protocol()``: ``segments`` shares the
    segment batches out over the processes; ``carry`` reads ``eval_batch_size`` contiguous streams of ``ids`` with
    the state carried from window to window (every process reads them all: one pass costs about as much as one
    segments validation, and the streams cannot be split without changing the result)."""
    was_training = model.training
    model.eval()
    try:
        if cfg.validation_protocol() == "carry":
            total, count = _stream_sums(model, ids.cpu(), cfg.eval_batch_size, cfg.eval_tgt_len, device)
        else:
            total, count = _segment_sums(model, ids.cpu(), cfg.eval_tgt_len, cfg.eval_batch_size, device,
                                         dist.rank, dist.world_size)
            total, count = _all_sum([total, float(count)], dist, device)
    finally:
        model.train(was_training)
    loss = total / count
    return {"loss": loss, "ppl": _ppl(loss)}
