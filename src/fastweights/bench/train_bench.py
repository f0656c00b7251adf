"""Time of whole training steps of every model, side by side with the Transformer and the LSTM.

    fastweights bench --train [--models delta_net,delta_rnn,...] [--shapes code-exec,code-exec-long,lm]
                              [--rounds 5] [--threads 1] [--json PATH]
    python -m fastweights.bench --train ...

One training step is what the training loops do per update, the model in train mode with dropout 0 (so that
the models are compared on their own work): forward, cross-entropy, ``zero_grad``, backward, gradient
clipping where the preset clips, ``loss.item()`` and one Adam step. The shapes (``TRAIN_SHAPES``):

* ``code-exec``: the model of the code-execution ``cpu`` preset (sizes, Adam settings and batch size read from
  ``fastweights/configs/code-exec-cpu.json``) on ``[B, T] = [32, 64]`` random token ids of the task's
  vocabularies (22 input tokens and 26 output classes for 3 variables), per-position cross-entropy;
* ``code-exec-long``: the same model at ``[8, 1024]``;
* ``lm``: the language model of the LM ``cpu`` preset (``lm-cpu.json``: 4 layers of D = 128, tied adaptive
  softmax over the embedded corpus's word vocabulary) on one batch of ``batch_size x tgt_len`` random segments
  of that corpus, its per-token NLL averaged, as the LM loop's step on random segments (the preset carries no
  state: every step starts from the zero state, the truncated-context step).

All models of a shape are built first (the same seed, the same batch), stepped once (numba compiles, Adam
creates its state) and warmed up; then every round times every model once, in an order rotated from round
to round, so that a change of the machine's load hits all of them alike. A model's time in one round is the
mean over as many back-to-back steps as last ``--min-time``; the reported time is the minimum over rounds.

After the timed rounds, ``--profile-steps`` extra steps of every model run under :mod:`torch.profiler`: the
share of a step spent in the fast-weight ops is the CPU time (self + children) of their outermost events
over the CPU time of the whole step. An op's events are the ``fastweights.<op>`` range around every call of
an implementation of :mod:`fastweights.ops` (opened here for the profiled steps), the autograd functions
defined in :mod:`fastweights.ops` (e.g. ``ChunkedLinearRecurrence`` and its ``...Backward``) and the custom
ops of the ``fastweights::`` namespace with their generated backward nodes (e.g.
``fastweights::delta_rnn_recurrence``). The backward of an implementation made of plain autograd ops (the
``reference`` ones) has no such name and is not counted. The profiler adds a cost per event, so the share is
approximate; the timed rounds run without it. The same extra steps record the implementation every op
resolved to.

The JSON (``--json``) holds the machine, versions, threads, date, the machine's load (as ``fastweights bench``
records it: the busy fraction of all CPUs before and after the run and over the whole run), the fp32 matmul
peak at the start and the end, every round's time and the derived columns.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile, record_function

from ..runs.progress import Progress
from .ops_bench import (
    LOAD_SAMPLE_S,
    _busy_between,
    _calls_for,
    _cpu_ticks,
    _timed,
    _warm_up,
    load_sample,
    machine_info,
    measure_peaks,
    numba_version,
)


@dataclass(frozen=True)
class TrainShape:
    """One named training-step shape: ``task``'s ``preset`` (model sizes, optimiser, clipping) on ``[batch, seq_len]``.

    ``batch`` / ``seq_len`` None take the preset's ``batch_size`` / ``tgt_len`` (the LM's segment length).
    ``vocab_size`` None: the task's vocabularies (code-exec: the fixed input and output vocabularies of the
    preset's ``num_vars``; lm: the embedded corpus, loaded once); an int gives random tokens of that vocabulary
    (and as many classes). ``overrides``: ``key=value`` changes to the preset, as ``fastweights train`` takes them.
    """

    task: str
    batch: int | None = None
    seq_len: int | None = None
    preset: str = "cpu"
    vocab_size: int | None = None
    overrides: tuple[str, ...] = ()


TRAIN_SHAPES: dict[str, TrainShape] = {
    "code-exec": TrainShape("code-exec", seq_len=64),
    "code-exec-long": TrainShape("code-exec", batch=8, seq_len=1024),
    "lm": TrainShape("lm"),
}
DEFAULT_TRAIN_SHAPES = tuple(TRAIN_SHAPES)
BASELINE = "transformer"  # the step every ratio is taken against
# "feedforward" (no mixing along the sequence) is left out unless named
DEFAULT_MODELS = ("transformer", "lstm", "linear_transformer", "delta_net", "delta_rnn", "rdn", "delta_mlp",
                  "delta_delta_net", "delta_lstm")
STEP_EVENT = "train_bench.step"  # the profiler range around one whole step (not a fast-weight op's name)
ENGINE_PREFIX = "autograd::engine::evaluate_function: "


# --------------------------------------------------------------------------------------------- one training step


@dataclass
class TrainCase:
    """A model with its optimiser and batch; ``step()`` runs one training step and returns the loss."""

    model: str
    shape_name: str
    step: Callable[[], float]
    batch: int
    seq_len: int
    parameters: int
    config: dict

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len


def _config(shape: TrainShape, model: str):
    """The preset's training configuration of ``shape.task`` for ``model``, its overrides applied, dropout 0."""
    from ..tasks import resolve_config

    return resolve_config(shape.task, shape.preset, [*shape.overrides, "dropout=0"], model=model)


def _step_fn(model: nn.Module, opt: torch.optim.Optimizer, clip: float, loss_of: Callable[[], Tensor]
             ) -> Callable[[], float]:
    """The update of the training loops (``fastweights.train``) with the loss ``loss_of()``."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> float:
        loss = loss_of()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        value = loss.item()  # the loops read it every step (a device sync off the CPU)
        opt.step()
        return value

    return step


def code_exec_case(model_name: str, shape_name: str, shape: TrainShape, seed: int = 0) -> TrainCase:
    """One step of the code-execution model: logits ``[B, T, classes]`` of token ids ``[B, T]``, per-position
    cross-entropy against random classes, Adam with the preset's settings."""
    from ..data import code_execution
    from ..models.sequence_model import build_model, count_parameters
    from ..train.algorithmic import loss_fn, make_optimizer
    from ..train.config import model_config

    cfg = _config(shape, model_name)
    if shape.vocab_size is None:
        vocab, classes = len(code_execution.input_vocab(cfg.num_vars)), len(code_execution.output_vocab())
    else:
        vocab = classes = shape.vocab_size
    B, T = shape.batch or cfg.batch_size, shape.seq_len or 64
    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg, vocab, classes))
    model.train()
    g = torch.Generator().manual_seed(seed)
    src, tgt = torch.randint(0, vocab, (B, T), generator=g), torch.randint(0, classes, (B, T), generator=g)
    step = _step_fn(model, make_optimizer(cfg, model), cfg.grad_norm_clip,
                    lambda: loss_fn("code-exec", model(src)[0].float(), tgt))
    config = {"preset": shape.preset, "vocab_size": vocab, "num_classes": classes, "d_model": cfg.d_model,
              "num_layers": cfg.num_layers, "num_heads": cfg.num_heads, "head_dim": cfg.head_dim,
              "dropout": cfg.dropout, "grad_norm_clip": cfg.grad_norm_clip, "lr": cfg.lr,
              "overrides": list(shape.overrides)}
    return TrainCase(model_name, shape_name, step, B, T, count_parameters(model), config)


_CORPUS: dict[tuple, tuple[Tensor, int]] = {}  # (data, level, tokenizer) -> training split: loaded once per process


def _lm_tokens(cfg) -> tuple[Tensor, int]:
    """The training split of the LM configuration's corpus and its vocabulary size."""
    from ..train.lm.data import load_lm_data

    key = (cfg.data, cfg.level, cfg.tokenizer)
    if key not in _CORPUS:
        corpus = load_lm_data(cfg)
        _CORPUS[key] = (corpus.train, corpus.vocab_size)
    return _CORPUS[key]


def lm_case(model_name: str, shape_name: str, shape: TrainShape, seed: int = 0) -> TrainCase:
    """One step of the language model on ``[B, T]`` segments (zero initial state): mean per-token NLL of the
    model's output layer (the adaptive softmax of the preset), clipping and Adam as the LM loop does them."""
    from ..data.lm import random_segments
    from ..models.lm import build_lm
    from ..models.sequence_model import count_parameters
    from ..train.lm.data import segment_generator
    from ..train.lm.model import lm_model_config

    cfg = _config(shape, model_name)
    B, T = shape.batch or cfg.batch_size, shape.seq_len or cfg.tgt_len
    if shape.vocab_size is None:
        train_ids, vocab = _lm_tokens(cfg)
        x, y = random_segments(train_ids, B, T, segment_generator(cfg.seed, seed))
    else:
        vocab = shape.vocab_size
        ids = torch.randint(0, vocab, (B, T + 1), generator=torch.Generator().manual_seed(seed))
        x, y = ids[:, :-1], ids[:, 1:]
    torch.manual_seed(cfg.seed)
    lm_config = lm_model_config(cfg, vocab)
    model = build_lm(lm_config)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    step = _step_fn(model, opt, cfg.grad_norm_clip, lambda: model(x, None, targets=y)[0].float().mean())
    config = {"preset": shape.preset, "vocab_size": vocab, "d_model": cfg.d_model, "num_layers": cfg.num_layers,
              "num_heads": cfg.num_heads, "head_dim": cfg.head_dim, "d_ff": cfg.d_ff, "dropout": cfg.dropout,
              "softmax": "adaptive" if lm_config.adaptive else "full", "cutoffs": list(lm_config.effective_cutoffs),
              "block": lm_config.block, "grad_norm_clip": cfg.grad_norm_clip, "lr": cfg.lr,
              "carry_state": cfg.carry_state, "overrides": list(shape.overrides)}
    return TrainCase(model_name, shape_name, step, B, T, count_parameters(model), config)


def build_case(model: str, shape_name: str, shape: TrainShape) -> TrainCase:
    """The :class:`TrainCase` of ``model`` at ``shape``."""
    if shape.task == "code-exec":
        return code_exec_case(model, shape_name, shape)
    if shape.task == "lm":
        return lm_case(model, shape_name, shape)
    raise ValueError(f"task: expected 'code-exec' or 'lm', got {shape.task!r}")


# --------------------------------------------------------------------------------------------- op share


def fast_weight_functions() -> set[str]:
    """The profiler names of the autograd functions defined in :mod:`fastweights.ops` (forward and backward)."""
    import fastweights.ops  # noqa: F401  (defines them)

    found, todo = set(), list(torch.autograd.Function.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("fastweights.ops"):
            found |= {cls.__name__, f"{cls.__name__}Backward"}
    return found


def is_op_event(name: str, functions: set[str]) -> bool:
    """Whether a profiler event belongs to a fast-weight op (see the module docstring)."""
    name = name.removeprefix(ENGINE_PREFIX)
    return (name.startswith(("fastweights.", "fastweights::")) or "GeneratedBackwardFor_fastweights_" in name
            or name in functions)


@contextlib.contextmanager
def labelled_ops(used: dict[str, set[str]]) -> Iterator[None]:
    """While open, every call of an op's implementation runs inside ``record_function("fastweights.<op>")``
    and its name is added to ``used[op]``.

    The registry dispatches through :meth:`Implementation.__call__`; wrapping it for the profiled steps only
    keeps the timed steps free of the range's cost.
    """
    from ..ops.common.registry import Implementation

    original = Implementation.__call__

    def call(self, *args, **kwargs):
        used.setdefault(self.op, set()).add(self.name)
        with record_function(f"fastweights.{self.op}"):
            return original(self, *args, **kwargs)

    Implementation.__call__ = call
    try:
        yield
    finally:
        Implementation.__call__ = original


def op_share(step: Callable[[], object], steps: int = 1) -> dict:
    """Profile ``steps`` training steps: the share of their CPU time spent in fast-weight ops (0 <= share <= 1),
    the seconds of each outermost op event name, and the implementations the ops resolved to."""
    functions = fast_weight_functions()
    used: dict[str, set[str]] = {}
    with labelled_ops(used), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function(STEP_EVENT):
                step()
    total_us, op_us = 0.0, 0.0
    by_name: dict[str, float] = {}
    for event in prof.events():
        if event.name == STEP_EVENT:
            total_us += event.cpu_time_total
            continue
        if not is_op_event(event.name, functions):
            continue
        parent = event.cpu_parent
        while parent is not None and not is_op_event(parent.name, functions):
            parent = parent.cpu_parent
        if parent is None:  # outermost: its children are inside its time already
            op_us += event.cpu_time_total
            key = event.name.removeprefix(ENGINE_PREFIX)
            by_name[key] = by_name.get(key, 0.0) + event.cpu_time_total * 1e-6
    share = min(1.0, op_us / total_us) if total_us > 0 else None
    return {"share": share, "profiled_steps": steps, "profiled_step_s": total_us * 1e-6 / steps,
            "op_s_per_step": op_us * 1e-6 / steps, "op_events_s": {k: v / steps for k, v in sorted(by_name.items())},
            "implementations": {op: sorted(names) for op, names in sorted(used.items())}}


# --------------------------------------------------------------------------------------------- the run


def bench_shape(models: list[str], shape_name: str, shape: TrainShape, *, rounds: int, min_time: float,
                max_step_seconds: float, profile_steps: int,
                bar: Callable[[str], None] = lambda what: None) -> tuple[list[dict], list[str]]:
    """Time one training step of every model at one shape (see the module docstring); returns one record per
    model and the notes (models left out)."""
    cases: dict[str, TrainCase] = {}
    first: dict[str, float] = {}
    calls: dict[str, int] = {}
    warm: dict[str, float] = {}
    notes: list[str] = []
    for name in models:
        bar(f"{shape_name}: build and warm up {name}")
        case = build_case(name, shape_name, shape)
        first[name], _ = _timed(case.step, 1)  # numba compiles, Adam creates its state
        if first[name] > 2 * max_step_seconds:
            notes.append(f"{name} at {shape_name} left out: its first step took {first[name]:.0f} s "
                         f"(> 2 x --max-step-seconds {max_step_seconds:g})")
            continue
        warm[name], _ = _warm_up(case.step, min_time)
        if warm[name] > max_step_seconds:
            notes.append(f"{name} at {shape_name} left out: one step took {warm[name]:.1f} s "
                         f"> --max-step-seconds {max_step_seconds:g}")
            continue
        cases[name] = case
        calls[name] = _calls_for(warm[name], min_time)

    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        bar(f"{shape_name}: round {r + 1}/{rounds}")
        shift = r % max(len(names), 1)
        for name in names[shift:] + names[:shift]:  # rotated, so that no model always follows the same one
            times[name].append(_timed(cases[name].step, calls[name])[0])

    results = []
    for name in names:
        bar(f"{shape_name}: profile {name}")
        case = cases[name]
        results.append({"model": name, "shape_name": shape_name, "task": shape.task, "batch": case.batch,
                        "seq_len": case.seq_len, "tokens_per_step": case.tokens, "parameters": case.parameters,
                        "config": case.config, "first_step_s": first[name], "warmup_s": warm[name],
                        "calls_per_round": calls[name], "step_s": times[name],
                        "profile": op_share(case.step, profile_steps)})
    return results, notes


def derive(results: list[dict]) -> None:
    """Add ``derived`` to every record: the best step time (min over rounds), tokens/s, the ratio of the step
    time to the Transformer's at the same shape (None where it was not run), that ratio in every round (both
    steps timed under about the same load: their spread shows how far the load moved the ratio) and the op
    share."""
    by_key = {(r["shape_name"], r["model"]): r["step_s"] for r in results}
    for r in results:
        t = min(r["step_s"])
        base = by_key.get((r["shape_name"], BASELINE))
        r["derived"] = {"best_step_s": t, "ms_per_step": 1e3 * t, "tokens_per_s": r["tokens_per_step"] / t,
                        "ratio_to_transformer": t / min(base) if base else None,
                        "ratio_to_transformer_rounds": [a / b for a, b in zip(r["step_s"], base)] if base else None,
                        "op_share": r["profile"]["share"]}


def run(models: list[str], shapes: list[tuple[str, TrainShape]], *, rounds: int = 5, min_time: float = 0.5,
        max_step_seconds: float = 60.0, profile_steps: int = 1, threads: int | None = 1,
        load_sample_s: float = LOAD_SAMPLE_S) -> dict:
    """Run the benchmark; returns the report that ``--json`` writes (torch's thread count is restored)."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(models, shapes, rounds=rounds, min_time=min_time, max_step_seconds=max_step_seconds,
                    profile_steps=profile_steps, load_sample_s=load_sample_s)
    finally:
        torch.set_num_threads(previous_threads)


def _run(models: list[str], shapes: list[tuple[str, TrainShape]], *, rounds: int, min_time: float,
         max_step_seconds: float, profile_steps: int, load_sample_s: float) -> dict:
    from .. import __version__
    from ..ops import available_implementations

    load_before = load_sample(load_sample_s)
    ticks_start, t_start = _cpu_ticks(), time.perf_counter()
    progress = Progress(len(shapes) + 2, prefix="bench --train", stream=sys.stderr, every_s=10.0, unit="shape")
    done = [0]

    def bar(what: str) -> None:
        progress.update(done[0], next=what)

    bar("matmul peak")
    peaks_start = measure_peaks([], "start", 0.05)
    done[0] += 1
    results, notes = [], []
    for shape_name, shape in shapes:
        r, n = bench_shape(models, shape_name, shape, rounds=rounds, min_time=min_time,
                           max_step_seconds=max_step_seconds, profile_steps=profile_steps, bar=bar)
        results += r
        notes += n
        done[0] += 1
    bar("matmul peak again")
    peaks_end = measure_peaks([], "end", 0.05)
    done[0] += 1
    progress.update(done[0])
    progress.close()
    during = {"busy_fraction": _busy_between(ticks_start, _cpu_ticks()), "seconds": time.perf_counter() - t_start}
    load_after = load_sample(load_sample_s)
    derive(results)

    numba_threads = None
    if "numba" in sys.modules:  # only when a compiled implementation loaded it
        from ..ops.common.numba import sync_threads

        sync_threads()  # asking numba starts its OpenMP pool, which would reset torch's thread count
        numba_threads = sys.modules["numba"].get_num_threads()
    s, e = peaks_start["square_256"], peaks_end["square_256"]
    return {
        "schema": "fastweights.bench.train/1",
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "fastweights": __version__,
        "torch": torch.__version__,
        "numba": numba_version(),
        "threads": torch.get_num_threads(),
        "numba_threads": numba_threads,
        "load": {"before": load_before, "during": during, "after": load_after},
        "settings": {"models": models, "shapes": {n: asdict(s) for n, s in shapes}, "rounds": rounds,
                     "min_time": min_time, "max_step_seconds": max_step_seconds, "profile_steps": profile_steps,
                     "baseline": BASELINE, "dropout": 0.0},
        "implementations": available_implementations(),
        "matmul_peak": {"square_256": {"a": s["a"], "b": s["b"], "runs": [s, e],
                                       "gflops_max": max(s["gflops_max"], e["gflops_max"])}},
        "results": results,
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------- output


def _fmt_ms(t: float) -> str:
    return f"{t:.3g}" if t < 1000 else f"{t:.0f}"


def _fmt_impls(impls: dict[str, list[str]]) -> str:
    return ", ".join(f"{op} {'/'.join(names)}" for op, names in impls.items()) or "-"


def format_table(report: dict) -> str:
    """The results as an aligned text table: one row per shape and model, in the order they ran."""
    head = ["shape", "model", "B x T", "params", "ms/step", "tokens/s", "x transformer", "per round", "fw ops",
            "implementations"]
    rows = []
    for r in report["results"]:
        d = r["derived"]
        per_round = d["ratio_to_transformer_rounds"]
        rows.append([r["shape_name"], r["model"], f"{r['batch']} x {r['seq_len']}", f"{r['parameters'] / 1e6:.2f}M",
                     _fmt_ms(d["ms_per_step"]), f"{d['tokens_per_s']:.0f}",
                     "-" if d["ratio_to_transformer"] is None else f"{d['ratio_to_transformer']:.2f}",
                     "-" if not per_round else f"{min(per_round):.2f}-{max(per_round):.2f}",
                     "-" if d["op_share"] is None else f"{100 * d['op_share']:.0f}%",
                     _fmt_impls(r["profile"]["implementations"])])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    left = {0, 1, len(head) - 1}  # names read better left-aligned

    def line(r: list) -> str:
        return "  ".join(str(v).ljust(w) if i in left else str(v).rjust(w)
                         for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def format_report(report: dict) -> str:
    m, load = report["machine"], report["load"]

    def busy(x: dict) -> str:
        return "?" if x.get("busy_fraction") is None else f"{100 * x['busy_fraction']:.0f}%"

    st = report["settings"]
    peak = report["matmul_peak"]["square_256"]
    lines = [
        f"fastweights bench --train  {report['date']}  {m['cpu_model']} ({m['cores']} cores), torch {report['torch']}, "
        f"numba {report['numba'] or 'not installed'}, {report['threads']} threads",
        f"load: CPUs busy {busy(load['before'])} before / {busy(load['during'])} during (incl. this run) / "
        f"{busy(load['after'])} after; loadavg {load['before']['loadavg']} -> {load['after']['loadavg']}; "
        f"fp32 bmm peak {peak['gflops_max']:.0f} GFLOP/s ({peak['a']} @ {peak['b']})",
        f"one training step (forward, cross-entropy, backward, Adam; train mode, dropout 0): ms/step = min over "
        f"{st['rounds']} rounds; x transformer = ms/step / the transformer's at that shape (per round: the range of "
        f"that ratio within each round); fw ops = share of a profiled step's CPU time in the fast-weight ops",
        "",
        format_table(report),
    ]
    if report["notes"]:
        lines += ["", "notes:", *(f"  {n}" for n in report["notes"])]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- CLI


def _fail(p: argparse.ArgumentParser, message: str) -> None:
    p.exit(2, f"{p.prog}: error: {message}\n")  # one line: what was given and what is allowed


def _parse_names(p: argparse.ArgumentParser, flag: str, text: str, allowed: list[str]) -> list[str]:
    items = list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    unknown = [x for x in items if x not in allowed]
    if unknown or not items:
        given = ", ".join(map(repr, unknown)) if unknown else repr(text)
        _fail(p, f"{flag}: expected a comma-separated subset of {allowed}, got {given}")
    return items


def build_parser() -> argparse.ArgumentParser:
    from ..layers import available_layers

    p = argparse.ArgumentParser(prog="fastweights bench --train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated subset of {available_layers()}; the {BASELINE}, which every ratio is "
                        f"taken against, is always added (default: all but feedforward)")
    p.add_argument("--shapes", default=",".join(DEFAULT_TRAIN_SHAPES),
                   help="comma-separated subset of " + ", ".join(
                       f"{k} ({s.task} {s.preset} preset, B x T = {s.batch or 'preset'} x {s.seq_len or 'preset'})"
                       for k, s in TRAIN_SHAPES.items()))
    p.add_argument("--rounds", type=int, default=5,
                   help="timed rounds after the warm-up; each times every model in turn; the minimum is used")
    p.add_argument("--min-time", type=float, default=0.5,
                   help="seconds one model's turn in a round lasts at least (short steps run several times)")
    p.add_argument("--max-step-seconds", type=float, default=60.0,
                   help="leave a model out of a shape where one warmed-up step takes longer than this")
    p.add_argument("--profile-steps", type=int, default=1,
                   help="steps profiled after the rounds for the share of the fast-weight ops")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write every measurement as JSON")
    p.add_argument("--load-sample", type=float, default=LOAD_SAMPLE_S, metavar="SECONDS",
                   help="how long the CPUs' busy fraction is sampled before and after the run")
    return p


def main(argv: list[str] | None = None, shapes: dict[str, TrainShape] | None = None) -> int:
    """``fastweights bench --train`` (``argv`` without ``--train``); ``shapes`` replaces :data:`TRAIN_SHAPES`
    (tests inject tiny ones)."""
    from ..layers import available_layers

    known = TRAIN_SHAPES if shapes is None else shapes
    p = build_parser()
    if shapes is not None:
        p.set_defaults(shapes=",".join(known))
    a = p.parse_args(argv)
    models = _parse_names(p, "--models", a.models, available_layers())
    if BASELINE not in models:
        models.insert(0, BASELINE)
    shape_names = _parse_names(p, "--shapes", a.shapes, list(known))
    for flag, value in (("--rounds", a.rounds), ("--profile-steps", a.profile_steps), ("--threads", a.threads)):
        if value < 1:
            _fail(p, f"{flag}: expected a positive int, got {value}")
    for flag, value in (("--max-step-seconds", a.max_step_seconds), ("--load-sample", a.load_sample)):
        if not value > 0:
            _fail(p, f"{flag}: expected a number > 0, got {value}")
    if not a.min_time >= 0:
        _fail(p, f"--min-time: expected a number >= 0, got {a.min_time}")
    report = run(models, [(n, known[n]) for n in shape_names], rounds=a.rounds, min_time=a.min_time,
                 max_step_seconds=a.max_step_seconds, profile_steps=a.profile_steps, threads=a.threads,
                 load_sample_s=a.load_sample)
    print(format_report(report))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1, allow_nan=False)  # NaN/inf would be invalid JSON
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
