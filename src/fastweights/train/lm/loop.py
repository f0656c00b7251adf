"""The training loop (:func:`train_lm`): checkpoints, validation, resume, torchrun."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from ...data.lm import (
    LMCorpus,
    StreamBatcher,
    unigram_perplexity,
)
from ...layers import detach_state
from ...models import count_parameters, state_types
from ...models.lm import build_lm
from ...runs.config import config_to_dict
from ...runs.directory import (
    nonfinite_parameter,
)
from ...runs.progress import DurationEstimate, Progress, format_count, format_duration, format_number, plural
from ...runs.run import Run
from ...weights import load_state
from ..config import LMTrainConfig
from .data import load_lm_data, local_batch_size, make_stream_batcher, train_batch
from .dist import DistInfo, _all_mean, _gather, _init_process_group, dist_info, parameter_digest, run_device
from .evaluate import describe_eval, validate
from .generate import VOCAB_FILE, LMVocab
from .model import _map_state, _ppl, lm_model_config, lr_at
from .run import evaluate_lm_run, lm_run_vocab

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
    ``eval_interval`` checkpoint stays) and raises :class:`~fastweights.runs.interrupt.Interrupted`, whose message
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
    with Run(cfg, run_dir, resume=resume, again=again, quiet=quiet or not dist.is_main, owner=dist.is_main,
             checkpoint_types=state_types()) as run:
        return _train_locked(cfg, run, dist, stop_after_steps=stop_after_steps, quiet=quiet, command=command)


def _train_locked(cfg: LMTrainConfig, run: Run, dist: DistInfo, *, stop_after_steps: int | None, quiet: bool,
                  command: list[str] | None) -> dict[str, Any]:
    with run.preparing():
        corpus = load_lm_data(cfg)
    if run.continues:
        lm_run_vocab(run.dir, cfg, corpus)  # the data must still be the run's
    batcher = make_stream_batcher(cfg, corpus.train, dist) if cfg.carry_state else None
    device = run_device(cfg.device, dist)
    owns_group = _init_process_group(dist, device)
    try:
        return _train(cfg, run, corpus, batcher, device, dist, stop_after_steps=stop_after_steps,
                      quiet=quiet or not dist.is_main, command=command)
    finally:
        if owns_group:
            import torch.distributed as td

            td.destroy_process_group()


def _train(cfg: LMTrainConfig, run: Run, corpus: LMCorpus, batcher: StreamBatcher | None, device: torch.device,
           dist: DistInfo, *, stop_after_steps: int | None, quiet: bool, command: list[str] | None
           ) -> dict[str, Any]:
    run_dir = run.dir
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
    log = run.metrics()

    # -- state of the loop: fresh, or from last.pt. `sums` add up the steps since the last metrics row
    # (loss, steps, tokens, seconds); `validated`: the validation of `step` is done (or not due).
    step, best, elapsed, tokens_seen, state = 0, {"valid_loss": float("inf"), "step": 0}, 0.0, 0, None
    sums, validated = (0.0, 0, 0, 0.0), True
    if run.continues:
        ckpt = run.load_last(("model", "optimizer", "step", "best", "elapsed", "tokens_seen", "ranks"))
        load_state(raw_model, ckpt["model"], f"checkpoint: {run.last}")
        with run.restoring():
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
    elif dist.is_main:
        if log is not None:
            log.truncate(0)
        run.write(VOCAB_FILE, LMVocab.of(corpus).to_dict())
        run.begin(command, parameters=n_params, data=corpus.summary(), world_size=dist.world_size,
                  device=str(device),
                  unigram_valid_ppl=unigram_perplexity(corpus.train, corpus.valid, corpus.vocab_size))

    train_tokens = corpus.train.numel()
    if not quiet:
        mode = (f"carried state over {cfg.batch_size} streams ({format_count(len(batcher))} windows per pass)"
                if batcher else "random segments")
        if cfg.validation_protocol() == "carry":
            mode += f", validated with the state carried along {cfg.eval_batch_size} streams"
        at = f"; resumed at step {format_count(step)}" if run.continues else ""
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
                    raise run.diverged(f"train loss {train_loss}", f"step {step}")
                valid = validate(raw_model, corpus.valid, cfg, device, dist)
                if not math.isfinite(valid["loss"]):
                    raise run.diverged(f"validation loss {valid['loss']}", f"step {step}")
                ranks = _gather(boundary, dist)
                with run.signals.held():
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
                            run.save("best.pt", raw_model, payload(ranks), f"step {step}")
                        run.save("last.pt", raw_model, payload(ranks), f"step {step}")
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
                    raise run.diverged(f"parameter {bad} is not finite", f"step {step}") from None
                raise e
            loss = nll.float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_norm_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_norm_clip)
            loss_value = loss.item()
            if not dist.enabled and not math.isfinite(loss_value):  # torchrun: the all-reduced check at validation
                raise run.diverged(f"train loss {loss_value}", f"step {step}")
            with run.signals.held():  # the update and the counters that describe it, all or nothing
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
                bar.advance(step, estimate, loss=sums[0] / sums[1], lr=lr, tokens_per_s=sums[2] / sums[3])
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
            run.finish(results)
            if not quiet:
                how = describe_eval(mode, results["test"]["context"])
                hint = (f"; the paper's protocol: fastweights eval {run_dir} --mode {cfg.paper_protocol()}"
                        if cfg.test_mode == "segments" else "")
                print(f"done: test ppl {results['test']['ppl']:.2f} (unigram {results['unigram_ppl']['test']:.1f}; "
                      f"best-validation checkpoint of step {format_count(best['step'])}, {how}), "
                      f"{format_duration(elapsed)} of training; run dir {run_dir}{hint}", flush=True)
    except KeyboardInterrupt as e:
        if bar is not None:
            bar.close()
        where = (f"at step {format_count(step)}/{format_count(cfg.max_steps)}" if step < cfg.max_steps or
                 not validated else "in the test evaluation after the last step")
        # under torchrun the processes stop at different points: a checkpoint needs them all, so none is written
        save = None if dist.enabled else lambda: run.save("last.pt", raw_model, payload([boundary]), f"step {step}")
        raise run.stop(e, save, where) from None
    finally:
        if log is not None:
            log.close()
    return results
