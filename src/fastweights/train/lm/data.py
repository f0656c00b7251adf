"""The corpus and the batches of a training step: random segments or contiguous streams, split over processes."""

from __future__ import annotations

import torch
from torch import Tensor

from ...data.lm import (
    LMCorpus,
    StreamBatcher,
    load_corpus,
    random_segments,
    stream_layout,
)
from ...fields import ConfigError
from ..config import LMTrainConfig
from .dist import DistInfo

# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def load_lm_data(cfg: LMTrainConfig) -> LMCorpus:
    """The corpus of ``cfg`` (embedded, WikiText or a text directory), checked against the segment lengths."""
    corpus = load_corpus(cfg.data, cfg.level, cfg.tokenizer)
    n = corpus.train.numel()
    if n < cfg.tgt_len + 1:
        raise ValueError(f"tgt_len: the training split has {n} tokens, fewer than tgt_len + 1 = {cfg.tgt_len + 1}")
    for split in ("valid", "test"):
        if corpus.split(split).numel() < 2:
            raise ValueError(f"data: the {split} split has {corpus.split(split).numel()} token(s); at least 2 are "
                             f"needed to score one")
    n_valid = corpus.valid.numel()
    if cfg.validation_protocol() == "carry" and n_valid < 2 * cfg.eval_batch_size:
        raise ValueError(f"eval_batch_size: the validation with the state carried reads {cfg.eval_batch_size} "
                         f"streams of at least 2 tokens, but the valid split has {n_valid} tokens; lower "
                         f"eval_batch_size to at most {n_valid // 2}")
    return corpus


def local_batch_size(cfg: LMTrainConfig, dist: DistInfo) -> int:
    """This process's share of the global ``batch_size``."""
    if cfg.batch_size % dist.world_size:
        raise ConfigError(f"batch_size: the global batch ({cfg.batch_size}) must be divisible by the number of "
                          f"processes ({dist.world_size})")
    return cfg.batch_size // dist.world_size


def make_stream_batcher(cfg: LMTrainConfig, train_ids: Tensor, dist: DistInfo) -> StreamBatcher:
    """``carry_state`` data: ``batch_size`` contiguous streams over all processes, this process's columns."""
    b = local_batch_size(cfg, dist)
    layout = stream_layout(train_ids.numel(), b, cfg.tgt_len, dist.world_size, drop_last=True)
    if layout.num_batches < 1:
        raise ValueError(f"tgt_len: streams of {layout.stream_len} tokens (training split / batch_size) are too short "
                         f"for one window of tgt_len + 1 = {cfg.tgt_len + 1} tokens; lower batch_size or tgt_len")
    return StreamBatcher(train_ids, b, cfg.tgt_len, dist.rank, dist.world_size, drop_last=True)


def segment_generator(seed: int, step: int) -> torch.Generator:
    """The random source of step ``step``'s segment positions: a function of ``(seed, step)`` only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train_batch(cfg: LMTrainConfig, train_ids: Tensor, step: int, dist: DistInfo,
                batcher: StreamBatcher | None) -> tuple[Tensor, Tensor, bool]:
    """``(inputs [b, T], targets [b, T], new_streams)`` of this process for update ``step`` (0-based).

    Random segments: the global batch of the step, this process's rows. Streams: window ``step mod len`` of this
    process's columns; ``new_streams`` is True at the first window of a pass (the carried state restarts).
    """
    if batcher is not None:
        index = step % len(batcher)
        x, y = batcher.batch(index)
        return x, y, index == 0
    x, y = random_segments(train_ids, cfg.batch_size, cfg.tgt_len, segment_generator(cfg.seed, step))
    b = cfg.batch_size // dist.world_size
    rows = slice(dist.rank * b, (dist.rank + 1) * b)
    return x[rows], y[rows], True
