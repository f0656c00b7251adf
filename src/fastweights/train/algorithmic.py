"""Training and evaluation on the algorithmic benchmarks: code execution and sequential ListOps (paper.md C.1,
C.2, E.2). Read top to bottom: model -> loss and metrics -> loop -> evaluation; the data are
:mod:`fastweights.train.algorithmic_data`'s.

Code execution is per-position classification (cross-entropy at every non-pad position, metric =
sequence-level exact match); ListOps classifies at the last real token (metric = accuracy).
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import ModelConfig, build_model, count_parameters, state_types
from ..runs.config import config_to_dict, dataclass_from_dict
from ..runs.directory import (
    checkpoint_path,
    load_checkpoint,
    nonfinite_parameter,
    read_run_config,
)
from ..runs.progress import DurationEstimate, Progress, format_count, format_duration, plural
from ..runs.run import Run
from ..weights import load_state
from .algorithmic_data import (  # noqa: F401  (the data of a run, also reached from here)
    VOCAB_FILE,
    Split,
    TaskData,
    TaskVocab,
    cache_dir,
    given_data_dir,
    load_task_data,
    write_task_data,
)
from .config import ALGORITHMIC_TASKS, TrainConfig
from .config import model_config as task_model_config
from .schedule import warmup_cosine

# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


def model_config(cfg: TrainConfig, data: TaskData | TaskVocab) -> ModelConfig:
    """The :class:`ModelConfig` of a run: ``cfg``'s model with the sizes of the data's vocabularies."""
    return task_model_config(cfg, data.vocab_size, data.num_classes)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)


# ----------------------------------------------------------------------------------------------------------------
# Loss and metrics
# ----------------------------------------------------------------------------------------------------------------


def batch_logits(model, task: str, src: Tensor, lengths: Tensor) -> Tensor:
    """Trim padding to the longest sequence of the batch, then run the model."""
    T = int(lengths.max())
    if task == "code-exec":
        return model(src[:, :T])[0]  # [B, T, C]
    return model(src[:, :T], lengths=lengths)[0]  # [B, C]


def loss_fn(task: str, logits: Tensor, tgt: Tensor) -> Tensor:
    if task == "code-exec":
        T = logits.shape[1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, :T].reshape(-1), ignore_index=-1)
    return F.cross_entropy(logits, tgt)


@torch.no_grad()
def evaluate(model, task: str, split: Split, batch_size: int, device: torch.device,
             noop_index: int | None = None, progress: str | None = None) -> dict[str, float]:
    """Loss and the paper's metric on one split: code execution ``acc`` = sequence-level exact match (plus
    ``print_acc`` on the printed values); ListOps ``acc`` = accuracy at the last token. ``progress``: the label
    of a progress line on stderr, shown when the evaluation takes more than a few seconds."""
    model.eval()
    n = split.src.shape[0]
    bar = Progress(n, prefix=progress, stream=sys.stderr, unit="example", delay_s=3.0) if progress else None
    loss_sum, tokens, correct_seq, print_right, print_total = 0.0, 0, 0, 0, 0
    for i in range(0, n, batch_size):
        if bar is not None:
            bar.update(i)
        src, tgt, lengths = (x[i:i + batch_size].to(device) for x in (split.src, split.tgt, split.lengths))
        logits = batch_logits(model, task, src, lengths).float()
        if task == "code-exec":
            T = logits.shape[1]
            tgt = tgt[:, :T]
            mask = tgt >= 0
            loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-1,
                                        reduction="sum").item()
            tokens += int(mask.sum())
            pred = logits.argmax(-1)
            correct_seq += int(((pred == tgt) | ~mask).all(dim=1).sum())
            printed = mask & (tgt != noop_index)
            print_right += int(((pred == tgt) & printed).sum())
            print_total += int(printed.sum())
        else:
            loss_sum += F.cross_entropy(logits, tgt, reduction="sum").item()
            tokens += tgt.shape[0]
            correct_seq += int((logits.argmax(-1) == tgt).sum())
    if bar is not None:
        bar.close()
    model.train()
    out = {"loss": loss_sum / max(tokens, 1), "acc": correct_seq / max(n, 1)}
    if task == "code-exec":
        out["print_acc"] = print_right / max(print_total, 1)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------------------------


#: The longest warm-up of an algorithmic run, as a fraction of its updates: a run shortened to fewer than ten
#: warm-ups warms up over this fraction of its updates instead (and says so when it starts).
MAX_WARMUP_FRACTION = 0.1


def warmup_updates(cfg: TrainConfig, total_steps: int) -> int:
    """The warm-up of a run of ``total_steps`` updates: ``cfg.warmup_steps``, at most a tenth of the run."""
    return min(cfg.warmup_steps, math.ceil(MAX_WARMUP_FRACTION * total_steps))


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning rate of update ``step`` (0-based): a linear warm-up over :func:`warmup_updates`, then constant
    (``lr_schedule=constant``, the paper's setting) or a cosine decay from the end of the warm-up to 0 at the last
    update (``lr_schedule=cosine``)."""
    total = cfg.epochs * steps_per_epoch
    return warmup_cosine(step, cfg.lr, warmup_updates(cfg, total), total if cfg.lr_schedule == "cosine" else None,
                         decay_after_warmup=True)


def is_better(valid: dict[str, float], best: dict[str, float], rule: str = "acc") -> bool:
    """Model selection on validation. ``acc`` (the paper's rule): a strictly higher accuracy, so the first of equal
    ones is kept; ``acc_loss``: ties (e.g. the all-zero sequence accuracies early in training) broken by a lower
    loss."""
    if rule == "acc":
        return valid["acc"] > best["acc"]
    return (valid["acc"], -valid["loss"]) > (best["acc"], -best.get("loss", math.inf))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def epoch_order(seed: int, epoch: int, n: int) -> Tensor:
    """The training order of ``epoch``: a function of (seed, epoch) only, so a resumed run sees the same."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def build(cfg: TrainConfig, vocab: TaskVocab | None = None, *, progress: bool = False
          ) -> tuple[TaskData, ModelConfig, torch.nn.Module]:
    """The data (generated on first use; ``progress``: a progress line on stderr meanwhile; checked against the
    run's ``vocab`` when given), model configuration and freshly initialised model of ``cfg``."""
    data = load_task_data(cfg, vocab, progress=progress)
    mcfg = model_config(cfg, data)
    seed_everything(cfg.seed)
    model = build_model(mcfg)
    return data, mcfg, model


def resume_command(task: str, run_dir: Path) -> str:
    """The command line that continues the run in ``run_dir``."""
    return f"fastweights train {task} --resume {run_dir}"


def train(cfg: TrainConfig, run_dir: Path, *, resume: bool = False, stop_after_epochs: int | None = None,
          quiet: bool = False, command: list[str] | None = None) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir``; with ``resume`` continue from ``run_dir/last.pt`` (a run directory without a
    checkpoint yet starts from the beginning).

    Checkpoints (``last.pt``) are written after every epoch's validation and every ``cfg.checkpoint_every_s``
    seconds within an epoch; resuming from either gives the uninterrupted run bit for bit (the training order of
    an epoch is a function of ``(seed, epoch)``, the RNG state is saved at a step boundary). Ctrl-C or SIGTERM
    saves a checkpoint at the last step boundary and raises :class:`~fastweights.runs.interrupt.Interrupted`
    (message: where the run stands and the command that resumes it).

    The run directory is locked while the run trains (:func:`~fastweights.runs.directory.open_run`: a second training
    there is refused). A loss or parameter that turns NaN or infinite stops the run with
    :class:`~fastweights.runs.directory.TrainingDiverged`; it is never saved, so ``last.pt`` stays the last good one.
    ``stop_after_epochs`` ends this call early (as an interruption would) after that many epochs in total.
    ``command`` is recorded in meta.json (default ``sys.argv``).
    Returns the final results (best validation metrics and, when training finished, test metrics).
    """
    run_dir = Path(run_dir)
    again = resume_command(cfg.task, run_dir)
    if cfg.data is not None:  # before the run directory is made
        given_data_dir(cfg)
    with Run(cfg, run_dir, resume=resume, again=again, quiet=quiet, checkpoint_types=state_types()) as run:
        with run.preparing():
            run_vocab = (TaskVocab.load(run_dir / VOCAB_FILE) if run.continues and (run_dir / VOCAB_FILE).is_file()
                         else None)
            data, _, model = build(cfg, vocab=run_vocab, progress=not quiet)
        check_splits(data)
        return _train_loop(cfg, run, data, model, torch.device(cfg.device), stop_after_epochs=stop_after_epochs,
                           quiet=quiet, command=command)


def check_splits(data: TaskData) -> None:
    """Refuse data with an empty split before training: an empty training split has nothing to learn from, an empty
    validation or test split no metric to report (a loss or accuracy of 0 would be made up)."""
    for name in ("train", "valid", "test"):
        if name not in data.splits or data.splits[name].src.shape[0] == 0:
            raise ValueError(f"data: the {name} split of {data.source} is empty; every split needs examples")


def _train_loop(cfg: TrainConfig, run: Run, data: TaskData, model: torch.nn.Module, device: torch.device, *,
                stop_after_epochs: int | None, quiet: bool, command: list[str] | None) -> dict[str, Any]:
    run_dir = run.dir
    model.to(device)
    opt = make_optimizer(cfg, model)
    log = run.metrics()
    train_split = data.splits["train"]
    n = train_split.src.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    # Where the run stands: `batch` batches of `epoch` are done, `step` updates in all; `validated` is the step of
    # the last validation (one is due at the end of an epoch and every `eval_interval` updates); `window` holds the
    # training loss sum, batches, tokens, seconds and CPU seconds of this process since that validation (`elapsed`,
    # `cpu_elapsed`: the training time before it, validations left out); `rng` is the RNG state at this step
    # boundary.
    epoch, batch, step, validated, best, elapsed, cpu_elapsed = 0, 0, 0, 0, {"acc": -1.0, "epoch": -1}, 0.0, 0.0
    window = (0.0, 0, 0, 0.0, 0.0)

    def validation_due() -> bool:
        interval_hit = cfg.eval_interval > 0 and step % cfg.eval_interval == 0
        return step > validated and (batch == steps_per_epoch or interval_hit)

    if run.continues:
        ckpt = run.load_last(("model", "optimizer", "step", "best", "elapsed", "cpu_elapsed", "epoch", "batch",
                              "validated", "window", "rng"))
        load_state(model, ckpt["model"], f"checkpoint: {run.last}")
        with run.restoring():
            opt.load_state_dict(ckpt["optimizer"])
            step, best, elapsed, cpu_elapsed = ckpt["step"], ckpt["best"], ckpt["elapsed"], ckpt["cpu_elapsed"]
            epoch, batch, validated = ckpt["epoch"], ckpt["batch"], ckpt["validated"]
            window = tuple(ckpt["window"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            random.setstate(ckpt["rng"]["python"])
        # rows written after the checkpoint belong to lost work (with a validation due, so does that step's row)
        log.truncate(step - 1 if validation_due() else step)
    else:
        log.truncate(0)
        run.begin(command, parameters=count_parameters(model), data=data.source)
        run.write(VOCAB_FILE, data.vocab.to_dict())
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}

    def payload() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "batch": batch,
                "step": step, "validated": validated, "window": window, "best": best, "elapsed": elapsed,
                "cpu_elapsed": cpu_elapsed,
                "config": config_to_dict(cfg), "rng": rng}

    def where() -> str:
        return (f"at epoch {epoch + 1}/{cfg.epochs}, step {format_count(step)}/{format_count(total_steps)}"
                if epoch < cfg.epochs else "in the test evaluation after the last epoch")

    def validate() -> None:
        """Validate, log the row, keep the best checkpoint and save ``last.pt``; an epoch's last validation moves
        the run on to the next epoch."""
        nonlocal epoch, batch, validated, best, elapsed, cpu_elapsed, window
        valid = evaluate(model, cfg.task, data.splits["valid"], cfg.eval_batch_size, device, data.noop_index,
                         progress=None if quiet else "validation")
        if not math.isfinite(valid["loss"]):
            raise run.diverged(f"validation loss {valid['loss']}", f"step {step}")
        loss_sum, batches, tok, seconds, cpu_seconds = window
        with run.signals.held():
            row = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(batches, 1),
                   "valid_loss": valid["loss"], "valid_acc": valid["acc"]}
            if "print_acc" in valid:
                row["valid_print_acc"] = valid["print_acc"]
            row.update({"tokens_per_s": tok / seconds if seconds > 0 else 0.0, "elapsed_s": elapsed + seconds,
                        "cpu_s": cpu_elapsed + cpu_seconds})
            is_best = is_better(valid, best, cfg.select_best)
            # The row first: if the run dies before last.pt is replaced, resume truncates the CSV to the old
            # checkpoint and redoes the validation; the other order could lose a row for good.
            log.log(row)
            elapsed += seconds
            cpu_elapsed += cpu_seconds
            validated, window = step, (0.0, 0, 0, 0.0, 0.0)
            if batch == steps_per_epoch:
                epoch, batch = epoch + 1, 0
            if is_best:
                best = {**valid, "epoch": row["epoch"], "step": step}
                run.save("best.pt", model, payload(), f"step {step}")
            run.save("last.pt", model, payload(), f"step {step}")
        if not quiet:
            extra = f", print acc {valid['print_acc']:.4f}" if "print_acc" in valid else ""
            eta = f", ETA {format_duration(bar.eta(step))}" if bar is not None and step < total_steps else ""
            print(f"step {format_count(step)} (epoch {row['epoch']}): train loss {row['train_loss']:.4f}, valid loss "
                  f"{valid['loss']:.4f}, valid acc {valid['acc']:.4f}{extra}{' (best)' if is_best else ''}{eta}",
                  flush=True)

    if not quiet and warmup_updates(cfg, total_steps) < cfg.warmup_steps:
        print(f"warmup_steps: {format_count(cfg.warmup_steps)} updates would be more than a tenth of this run's "
              f"{format_count(total_steps)}; warming up over {format_count(warmup_updates(cfg, total_steps))}",
              flush=True)
    if not quiet:
        at = f"; resumed at epoch {epoch + 1}, step {format_count(step)}" if run.continues else ""
        every = (f"every {plural(cfg.eval_interval, 'step')} and " if cfg.eval_interval > 0 else "")
        print(f"{cfg.task} {cfg.model}: {format_count(count_parameters(model))} parameters, "
              f"{format_count(n)} training examples, {format_count(steps_per_epoch)} steps/epoch x "
              f"{plural(cfg.epochs, 'epoch')} = {format_count(total_steps)} steps, validation {every}after every "
              f"epoch{at}; run dir {run_dir}", flush=True)
    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
    bar = Progress(total_steps, every_s=cfg.log_every_s, initial=step) if not quiet else None
    estimate = DurationEstimate(total_steps, step, unit="step", extra="; the validations add to it")
    saved_at = time.monotonic()
    model.train()
    try:
        while epoch < last_epoch:
            order = epoch_order(cfg.seed, epoch, n)
            if bar is not None:
                bar.prefix = f"epoch {epoch + 1}/{cfg.epochs}"
            t0, cpu0 = time.perf_counter() - window[3], time.process_time() - window[4]
            while True:
                if validation_due():
                    if bar is not None:
                        bar.close()
                    end_of_epoch = batch == steps_per_epoch
                    validate()
                    saved_at = time.monotonic()
                    t0, cpu0 = time.perf_counter(), time.process_time()
                    if end_of_epoch:
                        break
                idx = order[batch * cfg.batch_size:(batch + 1) * cfg.batch_size]
                src, tgt, lengths = (x[idx].to(device) for x in (train_split.src, train_split.tgt,
                                                                 train_split.lengths))
                try:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                        logits = batch_logits(model, cfg.task, src, lengths)
                except (ValueError, RuntimeError) as e:  # a layer's check that NaN weights trip, e.g. a beta range
                    if (bad := nonfinite_parameter(model)) is not None:
                        raise run.diverged(f"parameter {bad} is not finite", f"step {step}") from None
                    raise e
                loss = loss_fn(cfg.task, logits.float(), tgt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_norm_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_norm_clip)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise run.diverged(f"train loss {loss_value}", f"step {step}")
                with run.signals.held():  # the update and the counters that describe it, all or nothing
                    for group in opt.param_groups:
                        group["lr"] = lr_at(step, cfg, steps_per_epoch)
                    opt.step()
                    step += 1
                    batch += 1
                    window = (window[0] + loss_value, window[1] + 1, window[2] + int(lengths.sum()),
                              time.perf_counter() - t0, time.process_time() - cpu0)
                    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
                if bar is not None:
                    bar.advance(step, estimate, loss=window[0] / window[1], tokens_per_s=window[2] / window[3])
                if cfg.checkpoint_every_s > 0 and time.monotonic() - saved_at >= cfg.checkpoint_every_s \
                        and not validation_due():
                    with run.signals.held():
                        run.save("last.pt", model, payload(), f"step {step}")
                    saved_at = time.monotonic()
        results: dict[str, Any] = {"best_valid": best, "epochs_done": epoch, "train_time_s": elapsed,
                                   "train_cpu_s": cpu_elapsed, "parameters": count_parameters(model)}
        if epoch >= cfg.epochs and (run_dir / "best.pt").exists():
            results["test"] = evaluate_run(run_dir, "test", data=data, device=cfg.device, progress=not quiet)
            run.finish(results)
            if not quiet:
                print(f"done: test acc {results['test']['acc']:.4f} ({cfg.task}, best-validation checkpoint of step "
                      f"{format_count(best['step'])}, epoch {best['epoch']}), {format_duration(elapsed)} of training; "
                      f"run dir {run_dir}", flush=True)
    except KeyboardInterrupt as e:
        if bar is not None:
            bar.close()
        raise run.stop(e, lambda: run.save("last.pt", model, payload(), f"step {step}"), where()) from None
    finally:
        log.close()
    return results


def algorithmic_run_config(run_dir: Path, device: str | None = None) -> TrainConfig:
    """The configuration of a code-execution or ListOps run directory (``device`` replaces the run's)."""
    values = read_run_config(run_dir)
    if values.get("task") not in ALGORITHMIC_TASKS:
        raise ValueError(f"run_dir: {run_dir} is a {values.get('task')} run, not a code-exec or listops run")
    cfg = dataclass_from_dict(TrainConfig, values, f"config: {Path(run_dir) / 'config.json'}: ")
    if device is not None:
        cfg.device = device
    return cfg


def run_vocab(run_dir: Path, cfg: TrainConfig, data: TaskData | None = None) -> TaskVocab:
    """The vocabularies of a run: its ``vocab.json`` (checked against ``data`` when given)."""
    path = Path(run_dir) / VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: {run_dir} has no {VOCAB_FILE} (the run stopped before training started)")
    vocab = TaskVocab.load(path)
    if vocab.task != cfg.task:
        raise ValueError(f"vocabulary: {path} belongs to a {vocab.task} run, the run is {cfg.task}")
    if data is not None and (diff := vocab.difference(data.vocab)) is not None:
        raise ValueError(f"data: the data in {data.source} do not match the run's vocabularies ({diff})")
    return vocab


def load_algorithmic_model(run_dir: Path, checkpoint: str = "best", *, device: str | None = None,
                           data: TaskData | None = None) -> tuple[TrainConfig, TaskVocab, torch.nn.Module]:
    """The configuration, vocabularies and trained model (in eval mode) of a code-execution or ListOps run; no data
    is read when the run holds its vocabularies."""
    cfg = algorithmic_run_config(run_dir, device)
    path = checkpoint_path(run_dir, checkpoint)
    vocab = run_vocab(run_dir, cfg, data)
    model = build_model(model_config(cfg, vocab))
    load_state(model, load_checkpoint(path, keys=("model",), types=state_types())["model"], f"checkpoint: {path}")
    return cfg, vocab, model.to(cfg.device).eval()


def evaluate_run(run_dir: Path, split: str = "test", *, checkpoint: str = "best", data: TaskData | None = None,
                 device: str | None = None, data_dir: str | Path | None = None,
                 progress: bool = False) -> dict[str, float]:
    """Evaluate the ``best`` (or ``last``) checkpoint of a run on ``split`` (``progress``: a progress line on
    stderr when it takes a while).

    ``data_dir``: the data when they moved (official file format); their vocabularies must equal the run's.
    """
    run_dir = Path(run_dir)
    if data is None:
        cfg = algorithmic_run_config(run_dir, device)
        checkpoint_path(run_dir, checkpoint)  # a missing checkpoint before reading the data
        if data_dir is not None:
            cfg.data = str(data_dir)
        data = load_task_data(cfg, run_vocab(run_dir, cfg))
    if split not in data.splits:
        raise ValueError(f"split: expected one of {sorted(data.splits)}, got {split!r}")
    cfg, _, model = load_algorithmic_model(run_dir, checkpoint, device=device, data=data)
    return evaluate(model, cfg.task, data.splits[split], cfg.eval_batch_size, torch.device(cfg.device),
                    data.noop_index, progress=f"eval {split}" if progress else None)
