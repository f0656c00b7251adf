"""GPU benchmark and numerics check of the Triton kernels, in one run (``scripts/gpu_check.sh`` calls it).

    python -m fastweights.ops.triton.gpu_bench [--json PATH] [--budget-s 330] [--cases delta_rule,...]
    python -m fastweights.ops.triton.gpu_bench --device cpu --tiny     # smoke run of the harness on a CPU

For every case (``FULL_CASES``), on one device and in one process:

* **numerics** first: our default implementation (``impl=None``: ``triton`` on CUDA tensors) against the float64
  PyTorch implementation (``chunked`` for the sum/delta rule, ``checkpointed`` for the recurrent ops; both are
  tested equal to the reference step loop to ~1e-12), on the full shape: the output, the final state and the
  gradient of every input of ``sum(out * w)`` for a random ``w`` (rounded to the input dtype, the same ``w`` for
  both); relative Frobenius error (= relative RMSE);
* **time** (median of CUDA-event timings after warm-up): ``fwd`` = a forward under ``torch.no_grad()``,
  ``fwd+bwd`` = a forward with autograd and the gradients of every input. Sides: ours; the naive step loop
  (``impl="reference"`` on the GPU) run on a prefix of ``naive_steps`` steps and scaled linearly to ``T`` (its cost
  per step is constant: kernel launches); flash-linear-attention's kernels when ``fla`` is importable
  (``chunk_delta_rule``/``fused_recurrent_delta_rule`` for the delta rule; ``chunk_linear_attn``,
  ``fused_chunk_linear_attn``, ``fused_recurrent_linear_attn`` (``normalize=False``) and ``chunk_simple_gla``
  (``g=None``) for the sum rule; always ``scale=1``), with their own errors against the same float64 oracle.

Targets: sum/delta rule fwd+bwd within ``FLA_TARGET`` x the fastest fla kernel; recurrent ops fwd+bwd at least
``NAIVE_TARGET`` x faster than the naive loop; bf16 outputs within 1e-2 and gradients within 2e-2 of float64.

Prints a table, then one line ``JSON {...}`` (also written to ``--json``) with the GPU's name and every number. Optional
sides (naive, fla) are skipped with a note once ``--budget-s`` seconds have passed, to bound the run's length.

``fastweights selftest`` (:mod:`fastweights.selftest`) reuses the inputs, timing and reporting pieces of this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import inspect
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime

import torch
from torch import Tensor

from ... import ops
from . import safety
from .safety import rel_err  # relative Frobenius error (= relative RMSE), shared with the first-use check

FLA_TARGET = 1.2  # ours / fastest fla, fwd+bwd, at most
NAIVE_TARGET = 50.0  # naive / ours, fwd+bwd, at least
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TOLERANCES = {name: safety.TOLERANCES[dt] for name, dt in DTYPES.items()}  # (outputs, gradients)
ORACLE = {name: spec.fast_oracle for name, spec in ops.SPECS.items()}  # the float64 oracle at benchmark sizes


@dataclasses.dataclass(frozen=True)
class Case:
    op: str
    dtype: str
    B: int
    T: int
    H: int
    D: int
    version: int | None = None
    naive_steps: int = 128  # the naive loop runs this many steps; its times are scaled to T
    target: str = "naive"  # "fla": ours within FLA_TARGET x fla; "naive": >= NAIVE_TARGET x faster than naive

    @property
    def name(self) -> str:
        return self.op + (f" v{self.version}" if self.version is not None else "")


FULL_CASES = [
    Case("delta_rule", "bf16", 8, 4096, 16, 64, target="fla"),
    Case("sum_rule", "bf16", 8, 4096, 16, 64, target="fla"),
    Case("delta_rnn", "fp32", 32, 1024, 8, 32, version=2),
    Case("delta_lstm", "fp32", 32, 1024, 8, 32, version=4),
    Case("rec_delta", "fp32", 32, 1024, 8, 32),
]
TINY_CASES = [dataclasses.replace(c, B=2, T=40, H=2, D=16, naive_steps=8, dtype="fp32") for c in FULL_CASES]


# ------------------------------------------------------------------------------------------------ inputs


def make_args(case: Case, device: str, seed: int = 0) -> tuple[list[Tensor], list[str], int]:
    """Activated inputs like the layers produce them: ``(args, names, n_time_major)``; the first
    ``n_time_major`` args have the time axis at dim 1 (the rest: RDN's slow recurrent weights)."""
    g = torch.Generator(device=device).manual_seed(seed)
    dt = DTYPES[case.dtype]
    spec = ops.SPECS.get(case.op)
    if spec is None:
        raise ValueError(f"op: unknown op {case.op!r}")

    def rn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, device=device)

    args = [a.to(dt) for a in spec.example_inputs(rn, case.B, case.T, case.H, case.D, case.D, version=case.version)]
    specs = spec.arg_specs()
    return args, [a.name for a in specs], sum(1 for a in specs if "T" in a.layout)


def prefix(args: list[Tensor], n_time: int, steps: int) -> list[Tensor]:
    return [a[:, :steps].contiguous() if i < n_time else a for i, a in enumerate(args)]


def op_fn(case: Case, impl: str | None, output_final_state: bool = False) -> Callable[..., tuple]:
    """``f(*args) -> (output, final state)``: the op on the flat arguments of :func:`make_args` with ``impl``."""
    spec = ops.SPECS[case.op]
    kw = {} if case.version is None else {"version": case.version}
    return lambda *xs: spec.call(xs, impl=impl, output_final_state=output_final_state, **kw)


# ------------------------------------------------------------------------------------------------ fla


def fla_variants(op: str) -> tuple[dict[str, Callable[..., Tensor]], str | None]:
    """``({name: fn(*args) -> output}, None)`` with flash-linear-attention's kernels for ``op``, or ``({}, why)``."""
    if op not in ("sum_rule", "delta_rule"):
        return {}, None
    try:
        if op == "delta_rule":
            from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule

            fns = {"fla chunk_delta_rule": chunk_delta_rule,
                   "fla fused_recurrent_delta_rule": fused_recurrent_delta_rule}
        else:
            from fla.ops.linear_attn import chunk_linear_attn, fused_chunk_linear_attn, fused_recurrent_linear_attn

            fns = {"fla chunk_linear_attn": chunk_linear_attn, "fla fused_chunk_linear_attn": fused_chunk_linear_attn,
                   "fla fused_recurrent_linear_attn": fused_recurrent_linear_attn}
            try:
                from fla.ops.simple_gla import chunk_simple_gla

                fns["fla chunk_simple_gla(g=None)"] = chunk_simple_gla
            except Exception:  # an optional extra kernel
                pass
    except Exception as e:  # fla is optional; any import failure just skips it
        return {}, f"fla not importable: {type(e).__name__}: {e}"
    return {name: _fla_adapter(fn) for name, fn in fns.items()}, None


def _fla_adapter(fn: Callable) -> Callable[..., Tensor]:
    """Call an fla kernel with our semantics: batch-first ``[B, T, H, D]`` inputs, no ``1/sqrt(d)`` scale, no
    normalisation of linear attention; returns the output only."""
    params = inspect.signature(fn).parameters
    kwargs = {"scale": 1.0, "output_final_state": False}
    if "normalize" in params:
        kwargs["normalize"] = False
    if "head_first" in params:  # older fla releases
        kwargs["head_first"] = False

    def call(*xs: Tensor) -> Tensor:
        out = fn(*xs, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    return call


# ------------------------------------------------------------------------------------------------ timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str, warmup: int, reps: int,
            stat: Callable[[list[float]], float] = statistics.median) -> float:
    """Milliseconds per call after ``warmup`` calls, the ``stat`` (median; ``min``) of ``reps`` timings (CUDA events
    on a GPU)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return stat(times)


def _leaves(args: list[Tensor]) -> list[Tensor]:
    return [a.detach().clone().requires_grad_() for a in args]


def measure(f: Callable[..., Tensor], args: list[Tensor], device: str, warmup: int, reps: int,
            stat: Callable[[list[float]], float] = statistics.median) -> dict:
    """fwd (no_grad) and fwd+bwd (gradients of every input) times of ``f(*args) -> out`` (:func:`time_ms`) and the
    peak memory of fwd+bwd."""
    leaves = _leaves(args)
    with torch.no_grad():
        w = torch.randn_like(f(*leaves), dtype=torch.float32).to(args[0].dtype)

    def fwd():
        with torch.no_grad():
            f(*leaves)

    def fwd_bwd():
        torch.autograd.grad(f(*leaves), leaves, w)

    res = {"fwd_ms": time_ms(fwd, device, warmup, reps, stat)}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    res["fwd_bwd_ms"] = time_ms(fwd_bwd, device, warmup, reps, stat)
    res["peak_mem_gb"] = ((torch.cuda.max_memory_allocated() - base) / 2**30) if device.startswith("cuda") else None
    return res


# ------------------------------------------------------------------------------------------------ numerics


def grads_of(f: Callable[..., Tensor], args: list[Tensor], w: Tensor) -> tuple[Tensor, list[Tensor]]:
    leaves = _leaves(args)
    out = f(*leaves)
    return out.detach(), list(torch.autograd.grad(out, leaves, w.to(out.dtype)))


def numerics(case: Case, args: list[Tensor], names: list[str], device: str,
             fla: dict[str, Callable[..., Tensor]]) -> tuple[dict, dict[str, dict]]:
    """Errors of ours (and of every fla kernel) against the float64 oracle on the full shape."""
    tol_out, tol_grad = TOLERANCES[case.dtype]
    g = torch.Generator(device=device).manual_seed(1)
    ours_f = op_fn(case, None, output_final_state=True)
    oracle_f = op_fn(case, ORACLE[case.op], output_final_state=True)
    args64 = [a.to(torch.float64) for a in args]
    with torch.no_grad():
        out, fin = ours_f(*args)
        out64, fin64 = oracle_f(*args64)
        fin = (fin,) if isinstance(fin, Tensor) else tuple(fin)
        fin64 = (fin64,) if isinstance(fin64, Tensor) else tuple(fin64)
        err_state = max(rel_err(a, e) for a, e in zip(fin, fin64))
    w = torch.randn(out.shape, generator=g, device=device).to(out.dtype)  # the same rounded w for every side
    del out64, fin64, fin
    o, gx = grads_of(lambda *xs: ours_f(*xs)[0], args, w)
    o64, gx64 = grads_of(lambda *xs: oracle_f(*xs)[0], args64, w.to(torch.float64))
    err_grads = {n: rel_err(a, e) for n, a, e in zip(names, gx, gx64)}
    res = {"oracle": f"{ORACLE[case.op]} float64", "err_out": rel_err(o, o64), "err_state": err_state,
           "err_grads": err_grads, "err_grad_max": max(err_grads.values()), "tol_out": tol_out, "tol_grad": tol_grad}
    res["pass"] = bool(res["err_out"] <= tol_out and err_state <= tol_out and res["err_grad_max"] <= tol_grad)
    del o, gx
    fla_err = {}
    for name, f in fla.items():
        try:
            fo, fg = grads_of(f, args, w)
            fla_err[name] = {"err_out": rel_err(fo, o64), "err_grad_max": max(rel_err(a, e) for a, e in zip(fg, gx64))}
        except Exception as e:  # report, do not abort the run
            fla_err[name] = {"error": f"{type(e).__name__}: {e}"}
    return res, fla_err


# ------------------------------------------------------------------------------------------------ run


def resolved_impl(case: Case, args: list[Tensor]) -> str:
    from ..common.registry import resolve

    kw = {} if case.version is None else {"version": case.version}
    return resolve(case.op, None, *args, **kw).name


def run_case(case: Case, device: str, *, reps: int, deadline: float, log: Callable[[str], None]) -> dict:
    args, names, n_time = make_args(case, device)
    fla, fla_why = fla_variants(case.op)
    rec: dict = {"op": case.op, "version": case.version, "dtype": case.dtype,
                 "shape": {"B": case.B, "T": case.T, "H": case.H, "D": case.D}, "impl": resolved_impl(case, args),
                 "target": case.target}
    log(f"[{case.name}] numerics ...")
    try:
        rec["numerics"], fla_err = numerics(case, args, names, device, fla)
    except Exception as e:
        rec["numerics"], fla_err = {"error": traceback.format_exc(limit=3), "pass": False}, {}
        log(f"[{case.name}] numerics failed: {e}")
    log(f"[{case.name}] timing ours ({rec['impl']}) ...")
    rec["ours"] = measure(lambda *xs: op_fn(case, None)(*xs)[0], args, device, warmup=2, reps=reps)

    steps = min(case.naive_steps, case.T)
    if time.perf_counter() > deadline:
        rec["naive"] = {"skipped": "time budget"}
    else:
        log(f"[{case.name}] timing the naive loop on {steps} steps ...")
        m = measure(lambda *xs: op_fn(case, "reference")(*xs)[0], prefix(args, n_time, steps), device, warmup=1,
                    reps=3)
        scale = case.T / steps
        rec["naive"] = {"steps_measured": steps, "scaled_by": scale, "fwd_ms": m["fwd_ms"] * scale,
                        "fwd_bwd_ms": m["fwd_bwd_ms"] * scale, "skipped": None}

    rec["fla"] = {}
    if fla_why:
        rec["fla_unavailable"] = fla_why
    for name, f in fla.items():
        if time.perf_counter() > deadline:
            rec["fla"][name] = {"skipped": "time budget"}
            continue
        log(f"[{case.name}] timing {name} ...")
        try:
            rec["fla"][name] = {**measure(f, args, device, warmup=2, reps=reps), **fla_err.get(name, {})}
        except Exception as e:  # fla may refuse a dtype or shape: report it
            rec["fla"][name] = {"error": f"{type(e).__name__}: {e}"}
    rec["targets"] = targets(rec)
    del args
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rec


def targets(rec: dict) -> dict:
    ours = rec["ours"]["fwd_bwd_ms"]
    out: dict = {}
    fla_times = {n: r["fwd_bwd_ms"] for n, r in rec.get("fla", {}).items() if "fwd_bwd_ms" in r}
    if fla_times:
        best = min(fla_times, key=fla_times.get)
        ratio = ours / fla_times[best]
        out["vs_fla"] = {"fastest": best, "ours_over_fla": ratio, "target": FLA_TARGET,
                         "met": bool(ratio <= FLA_TARGET) if rec["target"] == "fla" else None}
    naive = rec.get("naive", {})
    if naive.get("fwd_bwd_ms"):
        speedup = naive["fwd_bwd_ms"] / ours
        out["vs_naive"] = {"speedup": speedup, "target": NAIVE_TARGET,
                           "met": bool(speedup >= NAIVE_TARGET) if rec["target"] == "naive" else None}
    return out


def device_info(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}
    for dist in ("triton", "fla-core", "flash-linear-attention"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}", "sm_count":
                     props.multi_processor_count, "memory_gb": props.total_memory / 2**30, "cuda": torch.version.cuda})
    else:
        info["gpu"] = None
    return info


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def table(result: dict) -> str:
    lines = [f"GPU: {result['info'].get('gpu')}  torch {result['info']['torch']}  triton {result['info']['triton']}  "
             f"fla {result['info']['fla-core'] or result['info']['flash-linear-attention']}",
             f"{'case':<14}{'dtype':<6}{'B x T x H x D':<18}{'side':<34}{'fwd ms':>10}{'fwd+bwd ms':>12}"
             f"{'x ours':>9}  notes"]
    for r in result["cases"]:
        s = r["shape"]
        name = r["op"] + (f" v{r['version']}" if r["version"] else "")
        dims = "x".join(str(s[k]) for k in "BTHD")
        head = f"{name:<14}{r['dtype']:<6}{dims:<18}"
        ours = r["ours"]["fwd_bwd_ms"]
        num = r["numerics"]
        note = (f"err out {num['err_out']:.1e} state {num['err_state']:.1e} grad {num['err_grad_max']:.1e} "
                f"({'PASS' if num['pass'] else 'FAIL'})") if "err_out" in num else "numerics: ERROR"
        lines.append(f"{head}{'ours (' + r['impl'] + ')':<34}{_fmt(r['ours']['fwd_ms']):>10}{_fmt(ours):>12}"
                     f"{'1.00':>9}  {note}")
        nv = r["naive"]
        if nv.get("skipped"):
            lines.append(f"{'':<38}{'naive loop':<34}{'':>10}{'':>12}{'':>9}  skipped: {nv['skipped']}")
        else:
            lines.append(f"{'':<38}{'naive loop (est. from ' + str(nv['steps_measured']) + ' steps)':<34}"
                         f"{_fmt(nv['fwd_ms']):>10}{_fmt(nv['fwd_bwd_ms']):>12}{_fmt(nv['fwd_bwd_ms'] / ours):>9}")
        for name, f in r.get("fla", {}).items():
            if "fwd_bwd_ms" in f:
                errs = f"err out {f['err_out']:.1e} grad {f['err_grad_max']:.1e}" if "err_out" in f else ""
                lines.append(f"{'':<38}{name:<34}{_fmt(f['fwd_ms']):>10}{_fmt(f['fwd_bwd_ms']):>12}"
                             f"{_fmt(f['fwd_bwd_ms'] / ours):>9}  {errs}")
            else:
                lines.append(f"{'':<38}{name:<34}{'':>10}{'':>12}{'':>9}  {f.get('skipped') or f.get('error')}")
        if r.get("fla_unavailable"):
            lines.append(f"{'':<38}{'fla':<34}{'':>10}{'':>12}{'':>9}  {r['fla_unavailable']}")
        for key, t in r["targets"].items():
            if t.get("met") is None:
                continue
            value = t.get("ours_over_fla", t.get("speedup"))
            lines.append(f"{'':<38}target {key}: {value:.2f} (target {'<=' if key == 'vs_fla' else '>='} "
                         f"{t['target']}) {'MET' if t['met'] else 'NOT MET'}")
    lines.append(f"numerics: {'all pass' if result['all_numerics_pass'] else 'FAILURES'}; "
                 f"elapsed {result['elapsed_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m fastweights.ops.triton.gpu_bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke run of the harness)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (fp32), for a smoke run")
    p.add_argument("--cases", default="", help="comma-separated ops to run (default: all)")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions per side (median)")
    p.add_argument("--budget-s", type=float, default=330.0, help="skip the naive loop and fla after this many s")
    p.add_argument("--json", default=None, help="also write the JSON result to this path")
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device (use --device cpu --tiny for a smoke run)")
    cases = TINY_CASES if a.tiny else FULL_CASES
    if a.cases:
        wanted = set(a.cases.split(","))
        cases = [c for c in cases if c.op in wanted]
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - start:7.1f}s {msg}", file=sys.stderr, flush=True)

    result = {"schema": "fastweights.gpu_bench/1", "date": datetime.now().astimezone().isoformat(timespec="seconds"),
              "info": device_info(a.device), "settings": {"reps": a.reps, "budget_s": a.budget_s, "tiny": a.tiny},
              "cases": []}
    for case in cases:
        try:
            result["cases"].append(run_case(case, a.device, reps=a.reps, deadline=start + a.budget_s, log=log))
        except Exception as e:  # keep the other cases
            log(f"[{case.name}] FAILED: {type(e).__name__}: {e}")
            result.setdefault("failed", {})[case.name] = traceback.format_exc(limit=5)
    result["elapsed_s"] = time.perf_counter() - start
    result["all_numerics_pass"] = bool(result["cases"]) and "failed" not in result and all(
        r["numerics"].get("pass") for r in result["cases"])
    print(table(result))
    text = json.dumps(result, default=str)
    print("JSON " + text)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(text + "\n")
    return result


if __name__ == "__main__":
    res = main()
    sys.exit(0 if res["all_numerics_pass"] else 1)
