"""Batching token streams: random windows (truncated context) and contiguous streams for a carried state, and the
unigram baseline (see :mod:`fastweights.data.lm`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value



def _check_ids(data: Tensor, name: str = "data") -> Tensor:
    if not isinstance(data, Tensor):
        raise TypeError(f"{name}: expected a 1-D integer tensor, got {type(data).__name__}")
    if data.dim() != 1 or data.is_floating_point() or data.is_complex() or data.dtype == torch.bool:
        raise ValueError(f"{name}: expected a 1-D integer tensor, got {data.dtype} of shape {list(data.shape)}")
    return data



def random_segments(
    data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw ``batch_size`` windows of ``seq_len + 1`` tokens at uniformly random start positions.

    Args:
        data: token ids ``[N]`` with ``N >= seq_len + 1``.
        generator: the random source (``None``: torch's global generator). The start positions are
            ``torch.randint(0, N - seq_len, (batch_size,))``.

    Returns:
        ``(inputs, targets)``, both ``[B, T]`` int64 on ``data``'s device; ``targets[:, t]`` is the token that
        follows ``inputs[:, t]`` in ``data`` (the window shifted by one).
    """
    _check_ids(data)
    _check_positive("batch_size", batch_size)
    _check_positive("seq_len", seq_len)
    n = data.numel()
    if n < seq_len + 1:
        raise ValueError(f"data: {n} tokens is too short for seq_len={seq_len} (need at least {seq_len + 1})")
    starts = torch.randint(0, n - seq_len, (batch_size,), generator=generator)
    index = starts.to(data.device)[:, None] + torch.arange(seq_len + 1, device=data.device)  # [B, T+1]
    windows = data[index].long()
    return windows[:, :-1], windows[:, 1:]



@dataclass(frozen=True)
class StreamLayout:
    """How :class:`StreamBatcher` cuts ``num_tokens`` tokens (numbers per rank unless said otherwise).

    ``num_streams = batch_size * world_size`` columns (all ranks) of ``stream_len = num_tokens // num_streams``
    tokens; ``dropped_tokens`` (< ``num_streams``) tail tokens are unused. Each column gives ``stream_len - 1``
    predictions, in ``num_batches`` windows of ``seq_len`` (the last one shorter unless dropped).
    """

    num_streams: int
    stream_len: int
    num_batches: int
    predicted_tokens: int  # per rank: batch_size * (number of target positions over all batches)
    dropped_tokens: int



def stream_layout(
    num_tokens: int, batch_size: int, seq_len: int, world_size: int = 1, drop_last: bool = False
) -> StreamLayout:
    """Count streams, batches and predicted tokens of :class:`StreamBatcher` without building it."""
    _check_positive("batch_size", batch_size)
    _check_positive("seq_len", seq_len)
    _check_positive("world_size", world_size)
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
        raise ValueError(f"num_tokens: expected a non-negative int, got {num_tokens!r}")
    streams = batch_size * world_size
    stream_len = num_tokens // streams
    if stream_len < 2:
        raise ValueError(f"data: {num_tokens} tokens is too short for batch_size * world_size = {streams} streams "
                         f"(need at least {2 * streams} tokens: two per stream)")
    positions = stream_len - 1  # target positions per column
    full, rest = divmod(positions, seq_len)
    num_batches = full + (1 if rest and not drop_last else 0)
    predicted = batch_size * (full * seq_len + (rest if rest and not drop_last else 0))
    return StreamLayout(streams, stream_len, num_batches, predicted, num_tokens - streams * stream_len)



class StreamBatcher:
    """Ordered LM batches over contiguous streams, for training or evaluation with a carried state.

    The ids ``data [N]`` are cut into ``S = batch_size * world_size`` contiguous streams: stream ``j`` is
    ``data[j * L:(j + 1) * L]`` with ``L = N // S`` (the last ``N - S * L`` tokens are dropped). Rank ``rank``
    owns streams ``[rank * batch_size, (rank + 1) * batch_size)``, so the ranks of a ``world_size`` run together
    see exactly the columns of a one-process run with batch size ``batch_size * world_size``. With
    ``world_size=1, rank=0`` this is Transformer-XL's ``LMOrderedIterator``.

    Iteration yields ``(inputs, targets)``, both ``[B, T]`` int64, window ``k`` covering column positions
    ``[k * seq_len, k * seq_len + T)`` with ``targets`` shifted by one; window ``k + 1`` continues each row where
    window ``k`` stopped, so a recurrent state can be carried across batches. The last window has
    ``T = (L - 1) % seq_len`` when that is non-zero; ``drop_last=True`` skips it (every batch then has
    ``T = seq_len``).
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        _check_ids(data)
        self.layout = stream_layout(data.numel(), batch_size, seq_len, world_size, drop_last)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank: expected an int in [0, {world_size}) for world_size={world_size}, got {rank!r}")
        self.batch_size, self.seq_len, self.rank, self.world_size = batch_size, seq_len, rank, world_size
        self.drop_last = drop_last
        used = self.layout.num_streams * self.layout.stream_len
        all_streams = data[:used].reshape(self.layout.num_streams, self.layout.stream_len)
        #: This rank's streams ``[B, L]`` (a view of ``data`` when it is contiguous).
        self.streams: Tensor = all_streams[rank * batch_size : (rank + 1) * batch_size]

    def __len__(self) -> int:
        return self.layout.num_batches

    def batch(self, index: int) -> tuple[Tensor, Tensor]:
        """Batch number ``index`` (0-based; e.g. to resume an epoch part-way)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
            raise IndexError(f"index: expected an int in [0, {len(self)}), got {index!r}")
        start = index * self.seq_len
        length = min(self.seq_len, self.layout.stream_len - 1 - start)
        window = self.streams[:, start : start + length + 1].long()
        return window[:, :-1], window[:, 1:]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for index in range(len(self)):
            yield self.batch(index)



def stream_batches(
    data: Tensor, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1, drop_last: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """Iterate over :class:`StreamBatcher` ``(inputs [B, T], targets [B, T])`` windows, in order."""
    return iter(StreamBatcher(data, batch_size, seq_len, rank, world_size, drop_last))



def unigram_perplexity(train_ids: Tensor, eval_ids: Tensor, vocab_size: int, k: float = 1.0) -> float:
    """Perplexity of an add-``k`` smoothed unigram model fit on ``train_ids``, on ``eval_ids``.

    ``p(w) = (count_train(w) + k) / (N_train + k * V)`` (``k = 1``: Laplace), so tokens never seen in training
    keep a non-zero probability. Returns ``exp(-mean_t log p(eval_ids[t]))``: the context-free baseline a
    trained language model must beat on the same split.
    """
    _check_ids(train_ids, "train_ids")
    _check_ids(eval_ids, "eval_ids")
    _check_positive("vocab_size", vocab_size)
    if not (isinstance(k, (int, float)) and not isinstance(k, bool) and k > 0 and math.isfinite(k)):
        raise ValueError(f"k: expected a positive finite number, got {k!r}")
    if eval_ids.numel() == 0:
        raise ValueError("eval_ids: expected at least one token, got none")
    for name, ids in (("train_ids", train_ids), ("eval_ids", eval_ids)):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(f"{name}: ids must lie in [0, {vocab_size}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")
    counts = torch.bincount(train_ids.long().cpu(), minlength=vocab_size).double()
    log_p = torch.log(counts + k) - math.log(train_ids.numel() + k * vocab_size)
    return math.exp(-float(log_p[eval_ids.long().cpu()].mean()))
