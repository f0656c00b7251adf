"""Speed of every fast-weight op and layer: the default implementation against the naive step loop.

    fastweights bench [--ops sum_rule,delta_rule] [--layers delta_net] [--shapes tiny,paper,lm]
                      [--repeat 3] [--no-memory] [--naive-max-seconds 120] [--threads N] [--json PATH]
    python -m fastweights.bench ...

For every op (``q, k, v [B, T, H, D]``, activated inputs from :func:`fastweights.bench.memory.make_inputs`)
and every layer (``x [B, T, H * D]``, ``d_model = H * D``, ``num_heads = H``, ``head_dim = D``) at every
shape, in one process and interleaved repeat by repeat (so that a change of the machine's load hits both
alike), it times

* ``naive``: ``impl="reference"``, the plain autograd step loop a user would write (float32);
* ``default``: ``impl=None``, whatever the op resolves to on these inputs (its name is recorded);

``forward`` (under ``torch.no_grad()``: inference) and ``forward_backward`` (forward with autograd, then
``out.square().sum().backward()``). Each is timed once as a warm-up (kernels compile, the allocator and the
thread pools grow), then ``--repeat`` times; a repeat runs the call as often as needed to last
``--min-time`` and records the time per call. Tables use the minimum. Memory of forward+backward comes from
:mod:`fastweights.bench.memory`: the bytes saved for backward, and the peak resident memory in one fresh
interpreter per measurement; at shapes where the naive loop's states (``B T H D^2`` floats) stay below
``PEAK_MIN_BYTES`` the peak is below the resolution of resident memory, so only the saved bytes are measured there,
in this process (seconds instead of a fresh interpreter each).

The naive loop pays Python and dispatch costs at every step, so one forward+backward at ``lm`` can take
minutes: before its first full call, one forward+backward on a ``PREFIX_STEPS``-step prefix is timed and
scaled to ``T``; when that estimate, or then the first full call, exceeds ``--naive-max-seconds``, the naive
side is skipped with a note.

Matmul peak (fp32, ``torch.bmm`` into a preallocated output, max GFLOP/s over repeats, measured at the start
and at the end of the run): square ``[4, 256, 256] x [4, 256, 256]`` blocks, and at each head size ``D``
``[n, 256, D] x [n, D, D]`` (a 256-row chunk of keys against a ``D x D`` state, the shape chunked kernels
use), with ``n`` large enough for ~64 MFLOP per call.

Roofline efficiency = FLOPs of the recurrent form / (peak at 256 x time). FLOP model, per step and head,
forward (``K`` key size, ``V`` value size; both ``D`` here; O(D) terms such as softmax are left out; a
multiply-add counts 2):

* ``sum_rule``: write ``k v^T`` (2KV), read ``S^T q`` (2KV): **4KV** (no old value is read);
* ``delta_rule``: read ``S^T k`` (2KV), rank-1 write (2KV), read ``S^T q`` (2KV): **6KV**;
* ``delta_rnn`` (v2): the delta rule on ``W [K, V]`` (6KV) and on ``R [V, V]`` (write 4VV, read
  ``R^T softmax(y)`` 2VV): **6KV + 6VV**;
* ``delta_lstm`` (v4): that, for each of the 3 gates (the op keeps 3 ``W`` and 3 ``R``): **18KV + 18VV**;
* ``rec_delta``: the recurrent projections ``R_q a, R_k a`` ([K, V] each, 4KV) and ``R_v a`` (2VV), then the
  delta rule (6KV): **10KV + 2VV**;
* layers: their op's count plus ``2 * in * out`` per token for every ``nn.Linear`` (slow and output
  projections); feature maps are left out.

Forward+backward counts 3x the forward. The chunked forms do ~3x the recurrent FLOPs, so an efficiency
above 1/3 is not possible for them; the number measures how far a kernel is from what the math needs.

The JSON (``--json``) holds the machine, versions, threads, date, the load (busy fraction of all CPUs from
``/proc/stat`` over a short sample before and after the run and over the whole run, and ``/proc/loadavg``),
the peaks, every raw time, the derived columns and the implementations used.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import torch
from torch import Tensor, nn

from ..ops import SPECS
from ..runs.progress import Progress
from . import memory
from .memory import OPS, make_inputs, run_isolated, run_isolated_layer

# name -> (B, T, H, D)
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 64, 2, 16),
    "paper": (16, 512, 16, 16),
    "lm": (4, 2048, 8, 64),
}
DEFAULT_SHAPES = ("tiny", "paper", "lm")
# the layers benchmarked and the op each runs (its implementation is what impl= picks), from the ops' specs
LAYER_OPS: dict[str, str] = {spec.bench_layer: name for name, spec in SPECS.items() if spec.bench_layer}
NAIVE = "reference"
PREFIX_STEPS = 128  # steps of the prefix whose naive forward+backward estimates the full call
MAX_CALLS = 1000  # cap on calls per timed repeat (tiny shapes take ~0.1 ms)
PEAK_REPEATS = 5
PEAK_SQUARE = (4, 256, 256, 256)  # bmm [n, M, K] x [n, K, N] as (n, M, K, N)
PEAK_HEAD_FLOP = 2**26  # FLOPs per call of the head-size bmm: enough that one call is not dispatch-bound
LOAD_SAMPLE_S = 0.5
PEAK_MIN_BYTES = 16 * 2**20  # naive-loop states below this: no peak-RSS measurement (noise), saved bytes only


# --------------------------------------------------------------------------------------------- FLOP model


def step_flops(op: str, K: int, V: int) -> int:
    """Forward FLOPs of the recurrent form of ``op`` per time step and head (the op's spec; module docstring)."""
    spec = SPECS.get(op)
    if spec is None or spec.step_flops is None:
        raise ValueError(f"op: no FLOP model for {op!r}; expected one of {sorted(FLOP_MODEL)}")
    return spec.step_flops(K, V)


FLOP_MODEL = {name: spec.flop_model for name, spec in SPECS.items() if spec.flop_model is not None}


def op_flops(op: str, B: int, T: int, H: int, D: int) -> int:
    """Forward FLOPs of ``op`` on ``[B, T, H, D]`` inputs (``K = V = D``)."""
    return step_flops(op, D, D) * B * T * H


def linear_flops(module: nn.Module, tokens: int) -> int:
    """FLOPs of every ``nn.Linear`` inside ``module`` applied to ``tokens`` rows."""
    return sum(2 * m.in_features * m.out_features * tokens for m in module.modules() if isinstance(m, nn.Linear))


# --------------------------------------------------------------------------------------------- machine


def _cpu_ticks() -> tuple[int, int] | None:
    """``(busy, total)`` jiffies of all CPUs since boot, from the first line of ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    total = sum(fields)
    return total - fields[3] - fields[4], total


def _busy_between(a: tuple[int, int] | None, b: tuple[int, int] | None) -> float | None:
    if a is None or b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1])


def _loadavg() -> list[float] | None:
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def load_sample(seconds: float = LOAD_SAMPLE_S) -> dict:
    """The busy fraction of all CPUs over ``seconds`` (while this process sleeps: other jobs' load) and the
    1/5/15-minute load averages."""
    a = _cpu_ticks()
    time.sleep(seconds)
    return {"busy_fraction": _busy_between(a, _cpu_ticks()), "sample_seconds": seconds, "loadavg": _loadavg()}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"platform": platform.platform(), "cpu_model": _cpu_model(), "cores": os.cpu_count(),
            "usable_cores": affinity, "python": platform.python_version()}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def numba_version() -> str | None:
    """numba's version when it is importable (found without importing it: the import itself takes ~1 s)."""
    return _version("numba") if importlib.util.find_spec("numba") is not None else None


# --------------------------------------------------------------------------------------------- timing


def _timed(fn: Callable[[], object], calls: int) -> tuple[float, object]:
    """Seconds per call of ``calls`` back-to-back calls, and the last result."""
    t0 = time.perf_counter()
    for _ in range(calls):
        out = fn()
    return (time.perf_counter() - t0) / calls, out


def _calls_for(seconds_per_call: float, min_time: float) -> int:
    return max(1, min(MAX_CALLS, math.ceil(min_time / max(seconds_per_call, 1e-9))))


def _warm_up(fn: Callable[[], object], min_time: float) -> tuple[float, object]:
    """Warm-up call(s); returns the time of the last one. A second call calibrates how many calls a repeat
    needs to last ``min_time`` (the first includes compilation, so it would under-count them); it is left
    out when the first call alone lasts that long."""
    t, out = _timed(fn, 1)
    if t < min_time:
        t, out = _timed(fn, 1)
    return t, out


def matmul_peak(n: int, M: int, K: int, N: int, *, repeats: int = PEAK_REPEATS, min_time: float = 0.05) -> dict:
    """fp32 GFLOP/s of ``torch.bmm([n, M, K], [n, K, N])`` into a preallocated output, ``repeats`` times."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, M, K, generator=g), torch.randn(n, K, N, generator=g)
    out = torch.empty(n, M, N)
    flop = 2 * n * M * K * N
    t, _ = _warm_up(lambda: torch.bmm(a, b, out=out), min_time)
    calls = _calls_for(t, min_time)
    seconds = [_timed(lambda: torch.bmm(a, b, out=out), calls)[0] for _ in range(repeats)]
    gflops = [flop / s / 1e9 for s in seconds]
    return {"a": [n, M, K], "b": [n, K, N], "flop_per_call": flop, "calls_per_repeat": calls,
            "seconds": seconds, "gflops": gflops, "gflops_max": max(gflops)}


def head_peak_shape(D: int) -> tuple[int, int, int, int]:
    """``(n, 256, D, D)``: a 256-row chunk against a ``D x D`` state, batched to ~``PEAK_HEAD_FLOP``."""
    return max(8, math.ceil(PEAK_HEAD_FLOP / (2 * 256 * D * D))), 256, D, D


def measure_peaks(head_dims: list[int], when: str, min_time: float) -> dict[str, dict]:
    peaks = {"square_256": {**matmul_peak(*PEAK_SQUARE, min_time=min_time), "when": when}}
    for D in head_dims:
        peaks[f"head_{D}"] = {**matmul_peak(*head_peak_shape(D), min_time=min_time), "when": when}
    return peaks


# --------------------------------------------------------------------------------------------- cases

Calls = tuple[Callable[[], Tensor], Callable[[], Tensor]]  # (forward, forward_backward)


def op_calls(op: str, impl: str | None, B: int, T: int, H: int, D: int) -> tuple[Calls, list[Tensor]]:
    """The forward and forward+backward closures of ``op`` on ``[B, T, H, D]`` inputs, and its arguments."""
    _, args = make_inputs(op, B, T, H, D)
    # the feature maps of make_inputs stay outside the timing: the activated inputs become the leaves
    leaves = [a.detach().requires_grad_() for a in args]
    fn = SPECS[op].fn

    def forward() -> Tensor:
        with torch.no_grad():
            return fn(*leaves, impl=impl)[0]

    def forward_backward() -> Tensor:
        for x in leaves:
            x.grad = None
        out = fn(*leaves, impl=impl)[0]
        out.square().sum().backward()
        return out

    return (forward, forward_backward), leaves


def build_bench_layer(name: str, impl: str | None, H: int, D: int, seed: int = 0) -> nn.Module:
    """The layer ``name`` at ``d_model = H * D``; the same ``seed`` gives the same weights for every impl."""
    from ..layers import build_layer

    torch.manual_seed(seed)
    return build_layer(name, H * D, H, D, impl=impl)


def layer_calls(name: str, impl: str | None, B: int, T: int, H: int, D: int) -> Calls:
    """The forward and forward+backward closures of the layer ``name`` on ``x [B, T, H * D]``."""
    layer = build_bench_layer(name, impl, H, D)
    x = torch.randn(B, T, H * D, generator=torch.Generator().manual_seed(1)).requires_grad_()

    def forward() -> Tensor:
        with torch.no_grad():
            return layer(x)[0]

    def forward_backward() -> Tensor:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        out = layer(x)[0]
        out.square().sum().backward()
        return out

    return forward, forward_backward


def step_call(name: str, impl: str | None, B: int, H: int, D: int) -> Callable[[], Tensor]:
    """One decoding step of the layer ``name`` (``x_t [B, H * D]``, no grad), the state carried from call to
    call as a decoder carries it."""
    layer = build_bench_layer(name, impl, H, D)
    x_t = torch.randn(B, H * D, generator=torch.Generator().manual_seed(2))
    carried = [layer.initial_state(B)]

    def step() -> Tensor:
        with torch.no_grad():
            y, carried[0] = layer.step(x_t, carried[0])
        return y

    return step


def time_steps(name: str, B: int, H: int, D: int, repeat: int, min_time: float) -> dict:
    """Seconds per ``layer.step`` call, naive (reference op) and default, interleaved; min over repeats."""
    fns = {side: step_call(name, impl, B, H, D) for side, impl in (("naive", NAIVE), ("default", None))}
    calls = {side: _calls_for(_warm_up(fn, min_time)[0], min_time) for side, fn in fns.items()}
    times: dict[str, list[float]] = {side: [] for side in fns}
    for _ in range(repeat):
        for side, fn in fns.items():
            times[side].append(_timed(fn, max(calls[side], 20))[0])
    return {side: min(t) for side, t in times.items()}


def resolved_impl(op: str, args: list[Tensor]) -> tuple[str, list[str]]:
    """The name of the implementation ``impl=None`` runs for ``op`` on ``args`` (its positional arguments), and
    any fallback notice that resolving it raised."""
    from ..ops.common.registry import resolve

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name = resolve(op, None, *args).name
    return name, [str(w.message) for w in caught]


def bench_case(kind: str, name: str, shape: str, B: int, T: int, H: int, D: int, *, repeat: int,
               naive_max_seconds: float, min_time: float) -> dict:
    """Time the naive and the default implementation of one op or layer at one shape (see module doc)."""
    op = name if kind == "op" else LAYER_OPS[name]

    def calls(impl: str | None, steps: int) -> tuple[Calls, list[Tensor]]:
        if kind == "op":
            return op_calls(op, impl, B, steps, H, D)
        return layer_calls(name, impl, B, steps, H, D), [torch.zeros(1)]  # a CPU tensor: what a layer gets

    notes: list[str] = []
    (d_f, d_fb), args = calls(None, T)
    impl_name, notices = resolved_impl(op, args)
    notes += notices
    flops = op_flops(op, B, T, H, D)
    if kind == "layer":
        flops += linear_flops(build_bench_layer(name, None, H, D), B * T)

    fns = {"default": {"forward": d_f, "forward_backward": d_fb}}
    warm: dict[str, dict[str, float]] = {"default": {}, "naive": {}}
    warm["default"]["forward"], out_default = _warm_up(d_f, min_time)
    warm["default"]["forward_backward"], _ = _warm_up(d_fb, min_time)

    skipped = None
    out_naive = None
    if T > PREFIX_STEPS:  # estimate first: a full naive call at lm can take minutes
        (_, p_fb), _ = calls(NAIVE, PREFIX_STEPS)
        _timed(p_fb, 1)
        estimate = _timed(p_fb, 1)[0] * T / PREFIX_STEPS
        if estimate > naive_max_seconds:
            skipped = (f"naive skipped: one forward+backward estimated at {estimate:.0f} s (from {PREFIX_STEPS} "
                       f"steps) > --naive-max-seconds {naive_max_seconds:g}")
    if skipped is None:
        (n_f, n_fb), _ = calls(NAIVE, T)
        # the forward+backward goes first: it is the call the limit is about
        warm["naive"]["forward_backward"], _ = _warm_up(n_fb, min_time)
        if warm["naive"]["forward_backward"] > naive_max_seconds:
            skipped = (f"naive skipped: one forward+backward took {warm['naive']['forward_backward']:.0f} s "
                       f"> --naive-max-seconds {naive_max_seconds:g}")
        else:
            warm["naive"]["forward"], out_naive = _warm_up(n_f, min_time)
            fns["naive"] = {"forward": n_f, "forward_backward": n_fb}
    if skipped:
        notes.append(skipped)

    n_calls = {side: {what: _calls_for(t, min_time) for what, t in w.items()} for side, w in warm.items()
               if side in fns}
    times: dict[str, dict[str, list[float]]] = {side: {"forward": [], "forward_backward": []} for side in fns}
    for _ in range(repeat):  # interleaved, so that a change of load hits both sides
        for what in ("forward", "forward_backward"):
            for side in fns:
                times[side][what].append(_timed(fns[side][what], n_calls[side][what])[0])

    def side_record(side: str, impl: str) -> dict:
        rec = {"impl": impl, "forward_s": times.get(side, {}).get("forward", []),
               "forward_backward_s": times.get(side, {}).get("forward_backward", []),
               "calls_per_repeat": n_calls.get(side), "warmup_s": warm[side] or None, "memory": None}
        if side == "naive":
            rec["skipped"] = skipped
        return rec

    step_s = time_steps(name, B, H, D, repeat, min_time) if kind == "layer" else None
    diff = None
    if out_naive is not None:
        diff = (out_naive.double() - out_default.double()).abs().max().item()
    return {"kind": kind, "name": name, "op": op, "shape_name": shape, "shape": {"B": B, "T": T, "H": H, "D": D},
            "flops": {"forward": flops, "forward_backward": 3 * flops,
                      "model": FLOP_MODEL[op] + (" + 2*in*out per token per nn.Linear" if kind == "layer" else "")},
            "naive": side_record("naive", NAIVE), "default": side_record("default", impl_name),
            "step_s": step_s, "max_abs_diff_forward": diff, "notes": notes}


def measures_peak(B: int, T: int, H: int, D: int) -> bool:
    """Whether the peak resident memory is measured at this shape (see ``PEAK_MIN_BYTES``)."""
    return 4 * B * T * H * D * D >= PEAK_MIN_BYTES


def add_memory(case: dict, threads: int | None) -> None:
    """Fill ``case[side]["memory"]`` with ``saved_bytes`` / ``peak_bytes`` (fresh interpreter each; small shapes:
    ``saved_bytes`` only, measured in this process, ``peak_bytes`` None)."""
    s = case["shape"]
    shape = (s["B"], s["T"], s["H"], s["D"])
    if not measures_peak(*shape):
        measure = memory.measure if case["kind"] == "op" else memory.measure_layer
        for side, impl in (("naive", NAIVE), ("default", None)):
            if not case[side].get("skipped"):
                case[side]["memory"] = {"saved_bytes": measure(case["name"], impl, *shape)["saved_bytes"],
                                        "peak_bytes": None}
        return
    isolated = run_isolated if case["kind"] == "op" else run_isolated_layer
    sides = [(side, impl) for side, impl in (("naive", NAIVE), ("default", None)) if not case[side].get("skipped")]
    # the two interpreters run side by side: each reports its own process's peak, so they do not mix, and
    # starting torch twice (seconds each) no longer adds up
    with ThreadPoolExecutor(max_workers=len(sides)) as pool:
        futures = {side: pool.submit(isolated, case["name"], impl, *shape, threads=threads) for side, impl in sides}
    for side, future in futures.items():
        try:
            m = future.result()
        except subprocess.CalledProcessError as e:  # e.g. killed for memory at a large shape: keep the timings
            tail = (e.stderr or "").strip().splitlines()[-1:] or [f"exit status {e.returncode}"]
            case["notes"].append(f"memory of {side} failed: {tail[0]}")
            continue
        case[side]["memory"] = {"saved_bytes": m["saved_bytes"], "peak_bytes": m["peak_bytes"]}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def derive(case: dict, peak_256: float, peak_head: float) -> dict:
    """Speed-ups, memory ratios and roofline efficiencies of one case (GFLOP/s peaks)."""
    best = {side: {what: min(case[side][f"{what}_s"]) if case[side][f"{what}_s"] else None
                   for what in ("forward", "forward_backward")} for side in ("naive", "default")}
    eff = {side: {what: (case["flops"][what] / (peak_256 * 1e9 * t) if t else None) for what, t in b.items()}
           for side, b in best.items()}
    mem = {side: case[side]["memory"] or {} for side in ("naive", "default")}
    return {
        "best_s": best,
        "speedup_forward": _ratio(best["naive"]["forward"], best["default"]["forward"]),
        "speedup_forward_backward": _ratio(best["naive"]["forward_backward"], best["default"]["forward_backward"]),
        "memory_ratio_saved": _ratio(mem["naive"].get("saved_bytes"), mem["default"].get("saved_bytes")),
        "memory_ratio_peak": _ratio(mem["naive"].get("peak_bytes"), mem["default"].get("peak_bytes")),
        "efficiency": eff,
        "peak_gflops_256": peak_256,
        "peak_gflops_head": peak_head,
    }


# --------------------------------------------------------------------------------------------- output


def _fmt_s(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1e3:.3g}" if t * 1e3 < 1000 else f"{t * 1e3:.0f}"


def _fmt_us(t: float | None) -> str:
    return "-" if t is None else f"{t * 1e6:.0f}"


def _fmt_x(r: float | None) -> str:
    return "-" if r is None else f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def _fmt_pct(e: float | None) -> str:
    return "-" if e is None else f"{100 * e:.2g}%"


def _fmt_mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def format_table(report: dict) -> str:
    """The results of ``report`` as an aligned text table (times in ms, minimum over repeats)."""
    head = ["", "name", "shape", "default impl", "fwd naive", "fwd dflt", "x", "f+b naive", "f+b dflt", "x",
            "eff fwd", "eff f+b", "saved naive", "saved dflt", "x", "peak naive", "peak dflt", "x",
            "step naive", "step dflt"]
    rows = []
    for c in report["results"]:
        d, b = c["derived"], c["derived"]["best_s"]
        mn, md = c["naive"]["memory"] or {}, c["default"]["memory"] or {}
        rows.append([c["kind"], c["name"], c["shape_name"], c["default"]["impl"],
                     _fmt_s(b["naive"]["forward"]), _fmt_s(b["default"]["forward"]), _fmt_x(d["speedup_forward"]),
                     _fmt_s(b["naive"]["forward_backward"]), _fmt_s(b["default"]["forward_backward"]),
                     _fmt_x(d["speedup_forward_backward"]),
                     _fmt_pct(d["efficiency"]["default"]["forward"]),
                     _fmt_pct(d["efficiency"]["default"]["forward_backward"]),
                     _fmt_mib(mn.get("saved_bytes")), _fmt_mib(md.get("saved_bytes")), _fmt_x(d["memory_ratio_saved"]),
                     _fmt_mib(mn.get("peak_bytes")), _fmt_mib(md.get("peak_bytes")), _fmt_x(d["memory_ratio_peak"]),
                     *(_fmt_us((c.get("step_s") or {}).get(side)) for side in ("naive", "default"))])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    left = 4  # the name columns read better left-aligned

    def line(r: list) -> str:
        return "  ".join(str(v).ljust(w) if i < left else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths)))

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def format_report(report: dict) -> str:
    m, load = report["machine"], report["load"]
    peaks = report["matmul_peak"]

    def busy(x: dict) -> str:
        return "?" if x.get("busy_fraction") is None else f"{100 * x['busy_fraction']:.0f}%"

    lines = [
        f"fastweights bench  {report['date']}  {m['cpu_model']} ({m['cores']} cores), torch {report['torch']}, "
        f"numba {report['numba'] or 'not installed'}, {report['threads']} threads",
        f"load: CPUs busy {busy(load['before'])} before / {busy(load['during'])} during (incl. this run) / "
        f"{busy(load['after'])} after; loadavg {load['before']['loadavg']} -> {load['after']['loadavg']}",
        "fp32 bmm peak, max GFLOP/s: " + ", ".join(
            f"{k} {v['gflops_max']:.0f} ({v['a']} @ {v['b']})" for k, v in peaks.items()),
        f"times: ms per call, min of {report['settings']['repeat']}; fwd = forward under no_grad, f+b = forward + "
        "backward; x = naive / default; eff = recurrent-form FLOPs / (256 peak x time), default impl; "
        "saved / peak = MiB saved for backward / peak RSS increase; step = us per one-token layer.step (no grad)",
        "",
        format_table(report),
    ]
    notes = [f"{c['kind']} {c['name']} {c['shape_name']}: {n}" for c in report["results"] for n in c["notes"]]
    notes += report["notes"]
    if notes:
        lines += ["", "notes:", *(f"  {n}" for n in notes)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- CLI


def _parse_list(p: argparse.ArgumentParser, flag: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if items == ["none"]:
        return []
    unknown = [x for x in items if x not in allowed]
    if unknown:
        p.error(f"{flag}: unknown {', '.join(map(repr, unknown))}; expected a comma-separated subset of "
                f"{list(allowed)} (or 'none')")
    return items


def _parse_shapes(p: argparse.ArgumentParser, text: str) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Named shapes or ``BxTxHxD``."""
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        if item in SHAPES:
            out.append((item, SHAPES[item]))
            continue
        parts = item.split("x")
        if len(parts) == 4 and all(s.isdigit() and int(s) > 0 for s in parts):
            out.append((item, tuple(int(s) for s in parts)))
            continue
        p.error(f"--shapes: unknown shape {item!r}; expected names from {list(SHAPES)} or BxTxHxD (e.g. 8x1024x8x64)")
    if not out:
        p.error("--shapes: expected at least one shape")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastweights bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {list(OPS)}, or 'none'")
    p.add_argument("--layers", default=",".join(LAYER_OPS),
                   help=f"comma-separated subset of {list(LAYER_OPS)}, or 'none' (d_model = H * D)")
    p.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                   help="comma-separated: " + ", ".join(f"{k} (B,T,H,D = {v})" for k, v in SHAPES.items())
                   + ", or BxTxHxD")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats after one warm-up; the minimum is used")
    p.add_argument("--min-time", type=float, default=0.05,
                   help="seconds one timed repeat lasts at least (short calls run several times)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements (subprocesses)")
    p.add_argument("--naive-max-seconds", type=float, default=120.0,
                   help="skip the naive loop where one forward+backward takes longer than this")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write every measurement as JSON")
    p.add_argument("--load-sample", type=float, default=LOAD_SAMPLE_S, metavar="SECONDS",
                   help="how long the CPUs' busy fraction is sampled before and after the run")
    p.add_argument("--train", action="store_true",
                   help="time whole training steps of every model instead (its options: fastweights bench --train "
                        "--help)")
    return p


def run(ops: list[str], layers: list[str], shapes: list[tuple[str, tuple[int, int, int, int]]], *, repeat: int,
        memory: bool, naive_max_seconds: float, min_time: float, threads: int | None,
        load_sample_s: float = LOAD_SAMPLE_S) -> dict:
    """Run the whole benchmark; returns the report that ``--json`` writes."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(ops, layers, shapes, repeat=repeat, memory=memory, naive_max_seconds=naive_max_seconds,
                    min_time=min_time, threads=threads, load_sample_s=load_sample_s)
    finally:  # main() may be called from Python (tests, notebooks): leave the process as it was
        torch.set_num_threads(previous_threads)


def _run(ops: list[str], layers: list[str], shapes: list[tuple[str, tuple[int, int, int, int]]], *, repeat: int,
         memory: bool, naive_max_seconds: float, min_time: float, threads: int | None,
         load_sample_s: float) -> dict:
    from .. import __version__
    from ..ops import available_implementations

    load_before = load_sample(load_sample_s)
    ticks_start, t_start = _cpu_ticks(), time.perf_counter()
    head_dims = sorted({shape[3] for _, shape in shapes})
    cases = [(kind, name, shape_name, shape) for shape_name, shape in shapes
             for kind, names in (("op", ops), ("layer", layers)) for name in names]
    bar = Progress(len(cases) + 2, prefix="bench", stream=sys.stderr, every_s=0.0, unit="case")
    bar.update(0, next=f"matmul peak (D = {head_dims})")
    peaks_start = measure_peaks(head_dims, "start", min_time)

    results = []
    for done, (kind, name, shape_name, (B, T, H, D)) in enumerate(cases, 1):
        bar.update(done, next=f"{kind} {name} {shape_name} (B={B} T={T} H={H} D={D})")
        case = bench_case(kind, name, shape_name, B, T, H, D, repeat=repeat, naive_max_seconds=naive_max_seconds,
                          min_time=min_time)
        if memory:
            add_memory(case, torch.get_num_threads() if threads is not None else None)
        results.append(case)

    bar.update(len(cases) + 1, next="matmul peak again")
    peaks_end = measure_peaks(head_dims, "end", min_time)
    bar.update(len(cases) + 2)
    bar.close()
    during = {"busy_fraction": _busy_between(ticks_start, _cpu_ticks()),
              "seconds": time.perf_counter() - t_start}
    load_after = load_sample(load_sample_s)

    # one record per peak shape: the start and end measurements together, the max over both
    peaks = {}
    for key in peaks_start:
        s, e = peaks_start[key], peaks_end[key]
        peaks[key] = {"a": s["a"], "b": s["b"], "flop_per_call": s["flop_per_call"],
                      "runs": [s, e], "gflops_max": max(s["gflops_max"], e["gflops_max"])}
    for case in results:
        case["derived"] = derive(case, peaks["square_256"]["gflops_max"],
                                 peaks[f"head_{case['shape']['D']}"]["gflops_max"])

    notes = []
    if memory and any(not measures_peak(*shape) for _, shape in shapes):
        notes.append(f"peak RSS not measured where the naive loop's states stay below "
                     f"{PEAK_MIN_BYTES // 2**20} MiB (resident memory is too coarse there): saved bytes only")
    busy = load_before["busy_fraction"]
    if busy is not None and busy > 0.5 and torch.get_num_threads() > 1:
        # OpenMP threads that wait for a descheduled sibling turn multi-threaded timings into noise
        notes.append(f"the CPUs were {100 * busy:.0f}% busy before the run (other jobs) and torch used "
                     f"{torch.get_num_threads()} threads: timings suffer from oversubscription; "
                     "--threads 1 is steadier on a shared machine")
    torch_threads = torch.get_num_threads()
    numba_threads = None
    if "numba" in sys.modules:  # only when a compiled implementation loaded it
        from ..ops.common.numba import sync_threads

        sync_threads()  # asking numba starts its OpenMP pool, which would reset torch's thread count
        numba_threads = sys.modules["numba"].get_num_threads()
    return {
        "schema": "fastweights.bench.ops/1",
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "fastweights": __version__,
        "torch": torch.__version__,
        "numba": numba_version(),
        "threads": torch_threads,
        "numba_threads": numba_threads,
        "load": {"before": load_before, "during": during, "after": load_after},
        "settings": {"ops": ops, "layers": layers, "shapes": {n: dict(zip("BTHD", s)) for n, s in shapes},
                     "repeat": repeat, "min_time": min_time, "memory": memory,
                     "naive_max_seconds": naive_max_seconds, "naive_impl": NAIVE},
        "implementations": available_implementations(),
        "matmul_peak": peaks,
        "results": results,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--train" in argv:  # a mode with options of its own
        from .train_bench import main as train_main

        return train_main([x for x in argv if x != "--train"])
    p = build_parser()
    a = p.parse_args(argv)
    ops = _parse_list(p, "--ops", a.ops, OPS)
    layers = _parse_list(p, "--layers", a.layers, tuple(LAYER_OPS))
    shapes = _parse_shapes(p, a.shapes)
    if not ops and not layers:
        p.error("--ops/--layers: nothing to benchmark")
    if a.repeat < 1:
        p.error(f"--repeat: expected a positive int, got {a.repeat}")
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads: expected a positive int, got {a.threads}")
    if not a.naive_max_seconds > 0 or not a.min_time >= 0 or not a.load_sample > 0:
        p.error("--naive-max-seconds and --load-sample must be > 0, --min-time >= 0")
    report = run(ops, layers, shapes, repeat=a.repeat, memory=not a.no_memory,
                 naive_max_seconds=a.naive_max_seconds, min_time=a.min_time, threads=a.threads,
                 load_sample_s=a.load_sample)
    print(format_report(report))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1, allow_nan=False)  # NaN/inf would be invalid JSON: None stands in
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
