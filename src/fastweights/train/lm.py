"""Language modelling: training, evaluation and generation (paper.md C.3, E.1; in the style of nanoGPT's train.py).

Read top to bottom: processes and devices -> data -> model -> learning rate -> evaluation -> the training loop ->
evaluating a finished run -> generation.

Training (:func:`train_lm`). Adam with a linear warm-up and a cosine decay to 0 at ``max_steps``, global-norm
gradient clipping (paper.md E.1: lr 2.5e-4, 2000 warm-up steps, clip 0.25). By default every step draws
``batch_size`` windows of ``tgt_len + 1`` tokens at random positions of the training split and each starts from a
zero state: the paper's truncated-context training. With ``carry_state`` the split is cut into ``batch_size``
contiguous streams read in order (:class:`~fastweights.tasks.lm.StreamBatcher`, Transformer-XL's ordered
iterator); the state flows from each window to the next and is detached at every boundary (truncated BPTT, the
paper's "+ full context" runs); it restarts from zero at the start of every pass over the data.

Distributed data parallel. Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), every process
joins a process group (gloo on CPU, nccl on CUDA) and the model is wrapped in ``DistributedDataParallel``.
``batch_size`` is the **global** batch, split evenly over the processes: with random segments the global batch of a
step is drawn once from ``(seed, step)`` and process ``r`` takes rows ``[r * b, (r + 1) * b)``; with
``carry_state`` process ``r`` owns stream columns ``[r * b, (r + 1) * b)`` of the same ``batch_size`` streams. A
run on ``n`` processes therefore computes the gradients of the one-process run with the same ``batch_size``
(dropout masks aside: each process draws its own). Only process 0 writes files.

Runs. A run directory holds ``config.json``, ``meta.json``, ``metrics.csv`` (one row every ``eval_interval``
steps: train and valid loss/perplexity, learning rate, tokens/s), ``last.pt`` and ``best.pt`` (written atomically:
model, optimiser, step, every process's RNG state and carried state) and ``results.json``. ``resume`` continues
from ``last.pt`` exactly: the data of a step is a function of ``(seed, step)``, so an interrupted and resumed run
equals an uninterrupted one bit for bit.

Evaluation (:func:`evaluate_lm`), each reporting loss (nats/token), perplexity and tokens scored:

* ``sliding``: every token is predicted from exactly ``min(t, W)`` preceding tokens (the paper's stride-1 window
  of ``W = tgt_len``): windows of ``W`` tokens are batched and only their last position is scored;
* ``carry``: one pass over the split with the state carried (batch 1, chunks of ``eval_tgt_len``): equal to one
  forward over the whole text (with ``position_order="forward"`` or no positional encoding);
* ``segments``: non-overlapping segments, each from a zero state (fast; the validation during training).

Generation (:func:`generate`) decodes with :meth:`~fastweights.models.lm.LanguageModel.step`: constant memory per
token for the fast-weight layers.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fields import check_positive_int
from ..layers import detach_state
from ..models import count_parameters
from ..models.lm import LanguageModel, LMConfig, build_lm, paper_config
from ..tasks.lm import (
    EOS,
    LEVELS,
    TOKENIZERS,
    LMCorpus,
    StreamBatcher,
    Vocabulary,
    load_corpus,
    random_segments,
    stream_layout,
    tokenize,
    unigram_perplexity,
)
from ..weights import load_state
from .config import EVAL_MODES, ConfigError, LMTrainConfig, config_from_dict, config_to_dict
from .interrupt import StopSignals, interrupted, save_and_stop
from .progress import DurationEstimate, Progress, format_count, format_duration, format_number, plural
from .runs import (
    MetricsLog,
    checkpoint_path,
    diverged,
    load_checkpoint,
    nonfinite_parameter,
    open_run,
    read_json_file,
    read_run_config,
    restoring,
    run_metadata,
    save_good_checkpoint,
    vocab_difference,
    write_json,
)
from .schedule import warmup_cosine

#: The file of a run (and of an export) that holds its vocabulary and tokenisation (:class:`LMVocab`).
VOCAB_FILE = "vocab.json"

# ----------------------------------------------------------------------------------------------------------------
# Processes and devices
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a ``torchrun`` launch (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``); absent: a single process."""
    if "WORLD_SIZE" not in os.environ:
        return DistInfo()
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(f"torchrun environment: expected integers in RANK/WORLD_SIZE/LOCAL_RANK, got "
                          f"{os.environ.get('RANK')!r}/{os.environ.get('WORLD_SIZE')!r}/"
                          f"{os.environ.get('LOCAL_RANK')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"torchrun environment: expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, "
                          f"WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def run_device(device: str, dist: DistInfo) -> torch.device:
    """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if dist.enabled:
            dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    return dev


def _init_process_group(dist: DistInfo, device: torch.device) -> bool:
    """Join the process group (gloo on CPU, nccl on CUDA); True when this call created it (and must destroy it)."""
    import torch.distributed as td

    if not dist.enabled or td.is_initialized():
        return False
    td.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=dist.rank, world_size=dist.world_size)
    return True


def _all_mean(values: list[float], dist: DistInfo, device: torch.device) -> list[float]:
    """The mean of ``values`` over the processes (itself for one process)."""
    if not dist.enabled:
        return values
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return (t / dist.world_size).tolist()


def _all_sum(values: list[float], dist: DistInfo, device: torch.device) -> list[float]:
    if not dist.enabled:
        return values
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return t.tolist()


def _gather(obj: Any, dist: DistInfo) -> list[Any] | None:
    """Every process's ``obj``, on process 0 (None elsewhere)."""
    if not dist.enabled:
        return [obj]
    import torch.distributed as td

    out: list[Any] | None = [None] * dist.world_size if dist.is_main else None
    td.gather_object(obj, out, dst=0)
    return out


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes (to check that data-parallel processes hold identical models)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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


# ----------------------------------------------------------------------------------------------------------------
# Model and learning rate
# ----------------------------------------------------------------------------------------------------------------


def lm_model_config(cfg: LMTrainConfig, vocab_size: int) -> LMConfig:
    """The :class:`LMConfig` of a run: :func:`paper_config` with the run's model fields."""
    return paper_config(cfg.model, vocab_size, **cfg.model_fields())


def lr_at(step: int, cfg: LMTrainConfig) -> float:
    """Learning rate of update ``step`` (0-based; paper.md E.1), as the official training loop sets it: update 0 at
    the full ``lr`` (that loop adjusts the rate only after its first update), then ``lr * step / warmup_steps``
    while ``step < warmup_steps``, then ``lr * (1 + cos(pi * step / max_steps)) / 2`` (``CosineAnnealingLR(T_max=
    max_steps)`` stepped with the global step)."""
    if step == 0:
        return cfg.lr
    if step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    return warmup_cosine(step, cfg.lr, 0, cfg.max_steps)


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0)) if math.isfinite(loss) else float("nan")


def _map_state(state: Any, fn) -> Any:
    """Apply ``fn`` to every tensor of a (nested tuple / named tuple) model state."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_map_state(s, fn) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(s, fn) for s in state)
    return state


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


def _carry_sums(model: LanguageModel, ids: Tensor, chunk: int, device: torch.device,
                bar: Progress | None = None) -> tuple[float, int]:
    """One stream (batch 1), read in chunks of ``chunk`` tokens with the state carried across them."""
    n = ids.numel() - 1
    state, total = None, 0.0
    for k, start in enumerate(range(0, n, chunk)):
        end = min(start + chunk, n)
        nll, state = model(ids[start:end][None].long().to(device), state,
                           targets=ids[start + 1:end + 1][None].long().to(device))
        total += float(nll.double().sum())
        if bar is not None:
            bar.update(k + 1)
    return total, n


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
    if mode not in EVAL_MODES:
        raise ValueError(f"mode: expected one of {list(EVAL_MODES)}, got {mode!r}")
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
            total, count = _carry_sums(model, ids, context, device, bar)
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
    """Segments-mode loss on ``ids`` during training; the segment batches are shared out over the processes."""
    was_training = model.training
    model.eval()
    try:
        total, count = _segment_sums(model, ids.cpu(), cfg.eval_tgt_len, cfg.eval_batch_size, device,
                                     dist.rank, dist.world_size)
    finally:
        model.train(was_training)
    total, count = _all_sum([total, float(count)], dist, device)
    loss = total / count
    return {"loss": loss, "ppl": _ppl(loss)}


# ----------------------------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------------------------


def resume_command(run_dir: Path, dist: DistInfo) -> str:
    """The command line that continues the language-model run in ``run_dir``."""
    launch = f"torchrun --nproc_per_node={dist.world_size} -m fastweights.cli" if dist.enabled else "fastweights"
    return f"{launch} train lm --resume {run_dir}"


def train_lm(cfg: LMTrainConfig, run_dir: Path, *, resume: bool = False, stop_after_steps: int | None = None,
             quiet: bool = False, command: list[str] | None = None) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (see the module docstring); with ``resume`` continue from ``run_dir/last.pt`` (a
    run directory without a checkpoint yet starts from the beginning).

    Ctrl-C or SIGTERM saves a checkpoint at the last step boundary (one process; under ``torchrun`` the last
    ``eval_interval`` checkpoint stays) and raises :class:`~fastweights.train.interrupt.Interrupted`, whose message
    says where the run stands and how to resume it; the resumed run equals an uninterrupted one.
    ``stop_after_steps`` ends this call early (as an interruption would) after that many updates in total.
    ``command`` is recorded in meta.json (default ``sys.argv``). Returns the results (best validation, and, once
    ``max_steps`` are done, the test metrics of the best checkpoint; those also go to ``results.json``).
    """
    # -- setup: every check before any work, on every process (a failure on one alone would hang the others)
    cfg.validate()
    run_dir = Path(run_dir)
    dist = dist_info()
    local_batch_size(cfg, dist)
    again = resume_command(run_dir, dist)
    # process 0 owns the directory (the others write nothing there)
    lock, continues = open_run(run_dir, resume, again, config_to_dict(cfg), quiet=quiet or not dist.is_main,
                               lock=dist.is_main)
    with lock:
        return _train_locked(cfg, run_dir, dist, continues, again, stop_after_steps=stop_after_steps, quiet=quiet,
                             command=command)


def _train_locked(cfg: LMTrainConfig, run_dir: Path, dist: DistInfo, continues: bool, again: str, *,
                  stop_after_steps: int | None, quiet: bool, command: list[str] | None) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with StopSignals() as signals:
        try:
            corpus = load_lm_data(cfg)
        except KeyboardInterrupt as e:
            raise interrupted(e, "before the first training step", False, run_dir / "last.pt", again) from None
        if continues:
            lm_run_vocab(run_dir, cfg, corpus)  # the data must still be the run's
        batcher = make_stream_batcher(cfg, corpus.train, dist) if cfg.carry_state else None
        device = run_device(cfg.device, dist)
        owns_group = _init_process_group(dist, device)
        try:
            return _train(cfg, run_dir, corpus, batcher, device, dist, signals, continues=continues,
                          stop_after_steps=stop_after_steps, quiet=quiet or not dist.is_main, command=command,
                          again=again)
        finally:
            if owns_group:
                import torch.distributed as td

                td.destroy_process_group()


def _train(cfg: LMTrainConfig, run_dir: Path, corpus: LMCorpus, batcher: StreamBatcher | None,
           device: torch.device, dist: DistInfo, signals: StopSignals, *, continues: bool,
           stop_after_steps: int | None, quiet: bool, command: list[str] | None, again: str) -> dict[str, Any]:
    # -- model and optimiser (the same init on every process; DDP also broadcasts process 0's weights)
    torch.manual_seed(cfg.seed)
    raw_model = build_lm(lm_model_config(cfg, corpus.vocab_size)).to(device)
    model: torch.nn.Module = raw_model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(raw_model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    torch.manual_seed(cfg.seed + 7919 * (dist.rank + 1))  # dropout: a stream of its own on every process
    n_params = count_parameters(raw_model)
    log = MetricsLog(run_dir) if dist.is_main else None

    # -- state of the loop: fresh, or from last.pt. `sums` add up the steps since the last metrics row
    # (loss, steps, tokens, seconds); `validated`: the validation of `step` is done (or not due).
    step, best, elapsed, tokens_seen, state = 0, {"valid_loss": float("inf"), "step": 0}, 0.0, 0, None
    sums, validated = (0.0, 0, 0, 0.0), True
    if continues:
        ckpt = load_checkpoint(run_dir / "last.pt", keys=("model", "optimizer", "step", "best", "elapsed",
                                                          "tokens_seen", "ranks"))
        load_state(raw_model, ckpt["model"], f"checkpoint: {run_dir / 'last.pt'}")
        with restoring(run_dir / "last.pt"):
            opt.load_state_dict(ckpt["optimizer"])
            step, best, elapsed, tokens_seen = ckpt["step"], ckpt["best"], ckpt["elapsed"], ckpt["tokens_seen"]
            sums, validated = ckpt.get("sums", sums), ckpt.get("validated", True)  # older ones: at validations
            same_processes = len(ckpt["ranks"]) == dist.world_size
            if same_processes:
                mine = ckpt["ranks"][dist.rank]
                torch.set_rng_state(mine["torch_rng"])
                if device.type == "cuda" and mine["cuda_rng"] is not None:
                    torch.cuda.set_rng_state(mine["cuda_rng"], device)
                state = _map_state(mine["state"], lambda t: t.to(device))
        if not same_processes:  # another number of processes: other dropout streams; carried states restart from zero
            torch.manual_seed(cfg.seed + 7919 * (dist.rank + 1) + step)
            if not quiet:
                print(f"note: {run_dir} was saved by {plural(len(ckpt['ranks']), 'process', 'processes')}, resumed "
                      f"on {dist.world_size}: dropout masks and carried states (if any) restart", flush=True)
        if log is not None:
            log.truncate(step if validated else step - 1)  # rows written after the checkpoint belong to lost work
            if not (run_dir / VOCAB_FILE).exists():  # a run of format 1 gains its vocabulary
                LMVocab.of(corpus).save(run_dir / VOCAB_FILE)
    elif dist.is_main:
        if log is not None:
            log.truncate(0)
        LMVocab.of(corpus).save(run_dir / VOCAB_FILE)
        write_json(run_dir / "meta.json", {
            **run_metadata(cfg.seed, command), "parameters": n_params, "data": corpus.summary(),
            "world_size": dist.world_size, "device": str(device),
            "unigram_valid_ppl": unigram_perplexity(corpus.train, corpus.valid, corpus.vocab_size)})

    train_tokens = corpus.train.numel()
    if not quiet:
        mode = (f"carried state over {cfg.batch_size} streams ({format_count(len(batcher))} windows per pass)"
                if batcher else "random segments")
        at = f"; resumed at step {format_count(step)}" if continues else ""
        print(f"lm {cfg.model}: {format_count(n_params)} parameters; {corpus.summary()}; global batch "
              f"{cfg.batch_size} x {cfg.tgt_len} tokens, {mode}, {format_count(cfg.max_steps)} steps, "
              f"{plural(dist.world_size, 'process', 'processes')} on {device}{at}; run dir {run_dir}", flush=True)

    def this_process() -> dict[str, Any]:  # what each process adds to a checkpoint, as of the last step boundary
        return {"torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "state": _map_state(state, lambda t: t.detach().cpu())}

    def payload(ranks: list[Any] | None) -> dict[str, Any]:
        return {"model": raw_model.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
                "elapsed": elapsed, "tokens_seen": tokens_seen, "sums": sums, "validated": validated,
                "config": config_to_dict(cfg), "world_size": dist.world_size, "ranks": ranks}

    # -- the loop
    last_step = cfg.max_steps if stop_after_steps is None else min(cfg.max_steps, stop_after_steps)
    bar = Progress(cfg.max_steps, prefix="step", every_s=cfg.log_every_s, initial=step) if not quiet else None
    estimate = DurationEstimate(cfg.max_steps, step, unit="step",
                                extra=f"; validation every {format_count(cfg.eval_interval)} steps adds to it")
    boundary = this_process()
    model.train()
    try:
        while True:
            if not validated:  # every eval_interval steps and at the end: validate, log a row, checkpoint
                loss_sum, loss_steps, interval_tokens, interval_time = sums
                train_loss = _all_mean([loss_sum / loss_steps], dist, device)[0]
                if not math.isfinite(train_loss):
                    raise diverged(f"train loss {train_loss}", f"step {step}", run_dir)
                valid = validate(raw_model, corpus.valid, cfg, device, dist)
                if not math.isfinite(valid["loss"]):
                    raise diverged(f"validation loss {valid['loss']}", f"step {step}", run_dir)
                ranks = _gather(boundary, dist)
                with signals.held():
                    row = {"step": step, "epochs": tokens_seen / train_tokens, "train_loss": train_loss,
                           "train_ppl": _ppl(train_loss), "valid_loss": valid["loss"], "valid_ppl": valid["ppl"],
                           "lr": lr_at(step - 1, cfg), "tokens_per_s": interval_tokens / interval_time,
                           "elapsed_s": elapsed + interval_time}
                    is_best = valid["loss"] < best["valid_loss"]
                    if log is not None:
                        log.log(row)  # the row first: resume truncates rows newer than last.pt
                    elapsed += interval_time
                    sums, validated = (0.0, 0, 0, 0.0), True
                    if is_best:
                        best = {"valid_loss": valid["loss"], "valid_ppl": valid["ppl"], "step": step}
                    if dist.is_main:
                        if is_best:
                            save_good_checkpoint(raw_model, run_dir, "best.pt", payload(ranks), f"step {step}")
                        save_good_checkpoint(raw_model, run_dir, "last.pt", payload(ranks), f"step {step}")
                if bar is not None:
                    bar.close()
                    eta = f", ETA {format_duration(bar.eta(step))}" if step < cfg.max_steps else ""
                    print(f"step {format_count(step)}: train loss {train_loss:.4f} (ppl {row['train_ppl']:.2f}), "
                          f"valid loss {valid['loss']:.4f} (ppl {valid['ppl']:.2f}), "
                          f"{format_number(row['tokens_per_s'])} tokens/s{' (best)' if is_best else ''}{eta}",
                          flush=True)
            if step >= last_step:
                break
            t0 = time.perf_counter()
            x, y, new_streams = train_batch(cfg, corpus.train, step, dist, batcher)
            if new_streams:
                state = None
            try:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                    nll, new_state = model(x.to(device), state, targets=y.to(device))
            except (ValueError, RuntimeError) as e:  # a layer's check that NaN weights trip, e.g. a beta range
                if (bad := nonfinite_parameter(raw_model)) is not None:  # the same weights on every process
                    raise diverged(f"parameter {bad} is not finite", f"step {step}", run_dir) from None
                raise e
            loss = nll.float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.clip)
            loss_value = loss.item()
            if not dist.enabled and not math.isfinite(loss_value):  # torchrun: the all-reduced check at validation
                raise diverged(f"train loss {loss_value}", f"step {step}", run_dir)
            with signals.held():  # the update and the counters that describe it, all or nothing
                lr = lr_at(step, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.step()
                state = detach_state(new_state) if batcher is not None else None  # truncated BPTT
                step += 1
                tokens_seen += cfg.batch_size * x.shape[1]
                loss_sum, loss_steps, interval_tokens, interval_time = sums
                sums = (loss_sum + loss_value, loss_steps + 1, interval_tokens + cfg.batch_size * x.shape[1],
                        interval_time + time.perf_counter() - t0)
                validated = not (step % cfg.eval_interval == 0 or step == cfg.max_steps)
                boundary = this_process()
            if bar is not None:
                bar.update(step, loss=sums[0] / sums[1], lr=lr, tokens_per_s=sums[2] / sums[3])
                line = estimate.tick(step)
                if line is not None:
                    bar.close()
                    print(line, flush=True)
        if bar is not None:
            bar.close()
        results: dict[str, Any] = {"best_valid": best, "steps_done": step, "train_time_s": elapsed,
                                   "tokens_seen": tokens_seen, "tokens_per_s": tokens_seen / max(elapsed, 1e-9),
                                   "parameters": n_params, "world_size": dist.world_size}
        if dist.enabled:
            digests = _gather(parameter_digest(raw_model), dist)
            if dist.is_main:
                results["ranks_identical"] = len(set(digests)) == 1
        if step >= cfg.max_steps and dist.is_main and (run_dir / "best.pt").exists():
            results["unigram_ppl"] = {s: unigram_perplexity(corpus.train, corpus.split(s), corpus.vocab_size)
                                      for s in ("valid", "test")}
            mode = cfg.test_protocol()
            t_test = time.perf_counter()
            results["test"] = evaluate_lm_run(run_dir, "test", mode, corpus=corpus, device=str(device),
                                              progress=not quiet and mode != "segments")
            results["test_time_s"] = time.perf_counter() - t_test
            write_json(run_dir / "results.json", results)
            if not quiet:
                how = {"segments": f"non-overlapping segments of {cfg.eval_tgt_len} tokens",
                       "sliding": f"a sliding window of {results['test']['context']} tokens",
                       "carry": "the state carried through the split"}[mode]
                hint = (f"; the paper's protocol: fastweights eval {run_dir} --mode "
                        f"{'carry' if cfg.carry_state else 'sliding'}" if cfg.test_mode == "segments" else "")
                print(f"done: test ppl {results['test']['ppl']:.2f} (unigram {results['unigram_ppl']['test']:.1f}; "
                      f"best-validation checkpoint of step {format_count(best['step'])}, {how}), "
                      f"{format_duration(elapsed)} of training; run dir {run_dir}{hint}", flush=True)
    except KeyboardInterrupt as e:
        if bar is not None:
            bar.close()
        where = (f"at step {format_count(step)}/{format_count(cfg.max_steps)}" if step < cfg.max_steps or
                 not validated else "in the test evaluation after the last step")
        # under torchrun the processes stop at different points: a checkpoint needs them all, so none is written
        save = None if dist.enabled else lambda: save_good_checkpoint(raw_model, run_dir, "last.pt",
                                                                       payload([boundary]), f"step {step}")
        raise save_and_stop(e, signals, save, where, run_dir / "last.pt", again) from None
    finally:
        if log is not None:
            log.close()
    return results


# ----------------------------------------------------------------------------------------------------------------
# Evaluating a run
# ----------------------------------------------------------------------------------------------------------------


def lm_run_config(run_dir: Path, device: str | None = None) -> LMTrainConfig:
    """The validated configuration of a language-model run directory (``device`` replaces the run's)."""
    cfg = config_from_dict(read_run_config(run_dir))
    if not isinstance(cfg, LMTrainConfig):
        raise ValueError(f"run_dir: {run_dir} is a {cfg.task} run, not a language-model run")
    if device is not None:
        cfg.device = device
    cfg.validate()
    return cfg


def lm_run_vocab(run_dir: Path, cfg: LMTrainConfig, corpus: LMCorpus | None = None) -> LMVocab:
    """The vocabulary of a run: its ``vocab.json``, checked against ``corpus`` when one is given (a corpus whose
    vocabulary differs is refused). Runs without ``vocab.json`` (format 1) take it from ``corpus`` or their data."""
    path = Path(run_dir) / VOCAB_FILE
    if not path.is_file():
        return LMVocab.of(corpus if corpus is not None else load_lm_data(cfg))
    vocab = LMVocab.load(path)
    if corpus is not None:
        diff = vocab_difference("vocabulary", vocab.vocab.tokens, corpus.vocab.tokens)
        if diff is not None or (corpus.level, corpus.tokenizer) != (vocab.level, vocab.tokenizer):
            diff = diff or (f"read as {corpus.level}/{corpus.tokenizer}, the run's is {vocab.level}/"
                            f"{vocab.tokenizer}")
            raise ValueError(f"data: the corpus {corpus.source} does not match the run {run_dir} ({diff})")
    return vocab


def load_lm_model(run_dir: Path, checkpoint: str = "best", *, device: str | None = None,
                  corpus: LMCorpus | None = None) -> tuple[LMTrainConfig, LMVocab, LanguageModel]:
    """The configuration, vocabulary and trained model (in eval mode) of a language-model run directory; no data is
    read when the run holds its vocabulary (see :func:`lm_run_vocab`)."""
    cfg = lm_run_config(run_dir, device)
    path = checkpoint_path(run_dir, checkpoint)
    vocab = lm_run_vocab(run_dir, cfg, corpus)
    model = build_lm(lm_model_config(cfg, len(vocab.vocab)))
    load_state(model, load_checkpoint(path, keys=("model",))["model"], f"checkpoint: {path}")
    return cfg, vocab, model.to(cfg.device).eval()


def load_lm_run(run_dir: Path, checkpoint: str = "best", *, device: str | None = None,
                corpus: LMCorpus | None = None, data: str | Path | None = None
                ) -> tuple[LMTrainConfig, LMCorpus, LanguageModel]:
    """The configuration, corpus and trained model (in eval mode) of a language-model run directory.

    ``data`` reads the corpus from another directory than the run's (a moved corpus), tokenised as in the run; its
    vocabulary must equal the run's.
    """
    cfg = lm_run_config(run_dir, device)
    if cfg.threads:  # as in training (the cpu preset: one thread, fast on a shared machine)
        torch.set_num_threads(cfg.threads)
    if corpus is None:
        checkpoint_path(run_dir, checkpoint)  # a missing checkpoint before a long read of the data
        if data is not None:
            cfg.data = str(data)
            if (Path(run_dir) / VOCAB_FILE).is_file():  # the run's tokenizer, also where config.json left it to auto
                cfg.tokenizer = LMVocab.load(Path(run_dir) / VOCAB_FILE).tokenizer
        corpus = load_lm_data(cfg)
    cfg, _, model = load_lm_model(run_dir, checkpoint, device=device, corpus=corpus)
    return cfg, corpus, model


def evaluate_lm_run(run_dir: Path, split: str = "test", mode: str | None = None, *, checkpoint: str = "best",
                    context: int | None = None, batch_size: int | None = None, device: str | None = None,
                    corpus: LMCorpus | None = None, data: str | Path | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Evaluate a run's checkpoint on ``split`` with :func:`evaluate_lm`.

    ``mode`` None: the paper's protocol for the run (``carry`` for carried-state runs, else ``sliding``).
    ``context`` None: ``tgt_len`` for ``sliding`` (the training context), ``eval_tgt_len`` otherwise.
    ``data``: the corpus directory when it moved (see :func:`load_lm_run`).
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split: expected one of ['train', 'valid', 'test'], got {split!r}")
    if mode is not None and mode not in EVAL_MODES:
        raise ValueError(f"mode: expected one of {list(EVAL_MODES)}, got {mode!r}")
    if context is not None:
        check_positive_int("context", context)
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    cfg, corpus, model = load_lm_run(run_dir, checkpoint, device=device, corpus=corpus, data=data)
    mode = mode or ("carry" if cfg.carry_state else "sliding")
    context = context or (cfg.tgt_len if mode == "sliding" else cfg.eval_tgt_len)
    if mode == "segments" and batch_size is None:
        batch_size = cfg.eval_batch_size
    out = evaluate_lm(model, corpus.split(split), mode, context=context, batch_size=batch_size,
                      device=cfg.device, progress=progress)
    return {"split": split, "checkpoint": checkpoint, **out}


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Generation:
    """A decoded continuation: ``prompt_ids``, the new ``ids`` and their ``tokens`` and ``text``."""

    prompt_ids: list[int]
    ids: list[int]
    tokens: list[str]
    text: str
    level: str = "word"
    tokenizer: str | None = "whitespace"

    def after(self, prompt: str) -> str:
        """``prompt`` followed by the continuation, with a space between them where the tokens need one."""
        glued = self.level == "char" or not prompt or prompt.endswith((" ", "\n")) or self.text.startswith("\n") \
            or (self.tokenizer == "punctuation" and bool(self.tokens) and self.tokens[0] in _NO_SPACE_BEFORE)
        return prompt + ("" if glued else " ") + self.text


def encode_prompt(vocab: Vocabulary, prompt: str, level: str = "word", tokenizer: str = "whitespace") -> list[int]:
    """Token ids of ``prompt`` as the corpus readers make them: its lines joined by ``<eos>`` (no ``<eos>`` after the
    last line, which the model continues); an empty prompt is a lone ``<eos>`` (the start of a line)."""
    ids: list[int] = []
    lines = prompt.split("\n")
    for i, line in enumerate(lines):
        ids.extend(vocab.encode(tokenize(line, level, tokenizer)))
        if i < len(lines) - 1:
            ids.append(vocab.eos_id)
    return ids or [vocab.eos_id]


_NO_SPACE_BEFORE = frozenset(",.;:?!)]}")
_NO_SPACE_AFTER = frozenset("([{")


def detokenize(tokens: list[str], level: str = "word", tokenizer: str | None = "whitespace") -> str:
    """Text of tokens: ``<eos>`` becomes a line end; characters are joined by nothing, words by spaces (with the
    ``punctuation`` tokenizer, none before closing punctuation and none after an opening bracket)."""
    if level == "char":
        return "".join("\n" if t == EOS else t for t in tokens)
    glue = tokenizer == "punctuation"
    out: list[str] = []
    for t in tokens:
        if t == EOS:
            out.append("\n")
        elif out and out[-1] != "\n" and not (glue and (t in _NO_SPACE_BEFORE or out[-1] in _NO_SPACE_AFTER)):
            out.extend((" ", t))
        else:
            out.append(t)
    return "".join(out)


@torch.no_grad()
def generate(model: LanguageModel, vocab: Vocabulary, prompt: str, max_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None, *, level: str = "word",
             tokenizer: str = "whitespace") -> Generation:
    """Continue the text ``prompt`` by ``max_tokens`` tokens with :meth:`LanguageModel.generate` (step decoding:
    constant memory per token for fast-weight layers; ``temperature`` 0 = greedy, else sampling among the ``top_k``
    most likely with a generator seeded by ``seed``). ``level``/``tokenizer`` must be those of the corpus (prompt
    encoding). Models with reversed positions (the paper's truncated-context setting) cannot be decoded step by step
    and are refused: train with ``position_order=forward`` or ``positional_encoding=none`` (``--carry-state``).
    """
    if not isinstance(model, LanguageModel):
        raise TypeError(f"model: expected a LanguageModel, got {type(model).__name__}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt: expected a str, got {type(prompt).__name__}")
    check_positive_int("max_tokens", max_tokens)
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"vocab: {len(vocab)} tokens, but the model has vocab_size {model.config.vocab_size}")
    prompt_ids = encode_prompt(vocab, prompt, level, tokenizer)
    device = model.embedding.weight.device
    out = model.generate(torch.tensor(prompt_ids, device=device), max_tokens, temperature, top_k, seed).tolist()
    tokens = vocab.decode(out)
    return Generation(prompt_ids, out, tokens, detokenize(tokens, level, tokenizer), level, tokenizer)


@dataclass
class LMVocab:
    """The vocabulary of a language-model run and how text becomes its tokens (``vocab.json`` of the run).

    ``level`` is ``"word"`` or ``"char"``; ``tokenizer`` the word tokenizer (``"whitespace"`` or ``"punctuation"``;
    None at char level).
    """

    vocab: Vocabulary
    level: str = "word"
    tokenizer: str | None = "whitespace"

    @classmethod
    def of(cls, corpus: LMCorpus) -> LMVocab:
        """The vocabulary and tokenisation of a corpus."""
        return cls(corpus.vocab, corpus.level, corpus.tokenizer)

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a text as the corpus readers make them (see :func:`encode_prompt`)."""
        return encode_prompt(self.vocab, prompt, self.level, self.tokenizer or "whitespace")

    def decode(self, ids: list[int] | Tensor) -> str:
        """The text of token ids (see :func:`detokenize`)."""
        return detokenize(self.vocab.decode(ids), self.level, self.tokenizer)

    def generate(self, model: LanguageModel, prompt: str, max_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None) -> Generation:
        """:func:`generate` with this vocabulary and tokenisation."""
        return generate(model, self.vocab, prompt, max_tokens, temperature, top_k, seed, level=self.level,
                        tokenizer=self.tokenizer or "whitespace")

    def to_dict(self) -> dict[str, Any]:
        return {**self.vocab.to_dict(), "level": self.level, "tokenizer": self.tokenizer}

    @classmethod
    def from_dict(cls, data: Any, source: str = "vocabulary") -> LMVocab:
        vocab = Vocabulary.from_dict(data, source)
        level, tokenizer = data.get("level"), data.get("tokenizer")
        if level not in LEVELS:
            raise ValueError(f"{source}: level: expected one of {list(LEVELS)}, got {level!r}")
        if tokenizer not in ((None,) if level == "char" else TOKENIZERS):
            raise ValueError(f"{source}: tokenizer: expected one of {list(TOKENIZERS)} (none at char level), got "
                             f"{tokenizer!r}")
        return cls(vocab, level, tokenizer)

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> LMVocab:
        return cls.from_dict(read_json_file(Path(path), "vocabulary"), str(path))


def generate_from_run(run_dir: Path, prompt: str, max_tokens: int, temperature: float = 1.0,
                      top_k: int | None = None, seed: int | None = None, *, checkpoint: str = "best",
                      device: str | None = None) -> Generation:
    """:func:`generate` with the trained model of a run directory (its data is not needed)."""
    check_positive_int("max_tokens", max_tokens)
    cfg, vocab, model = load_lm_model(run_dir, checkpoint, device=device)
    if cfg.threads:  # as in training
        torch.set_num_threads(cfg.threads)
    return vocab.generate(model, prompt, max_tokens, temperature, top_k, seed)
