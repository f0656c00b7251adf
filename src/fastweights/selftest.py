"""``fastweights selftest``: check the op implementations of this machine against the float64 reference.

    fastweights selftest [--device cuda] [--dtypes float32,bfloat16,float16] [--json PATH]
                         [--ops delta_rule,...] [--shape BxTxHxD] [--speed | --no-speed] [--speed-shape BxTxHxD]

On a CUDA device it checks the Triton kernels (``impl="triton"``), for every op, version and dtype:

* **correctness** on a small shape (``--shape``, ``B x T x H x D``, default 2 x 40 x 2 x 16 on CUDA and
  2 x 24 x 2 x 8 on the CPU; ``K = V = D``): the output, the final state
  and the gradients of every input and of the initial state (of a random weighted sum of the output and the final
  state), with resets, against the op's float64 step loop (``impl="reference"``, on the CPU); relative Frobenius
  errors within :data:`fastweights.ops.triton.safety.TOLERANCES` (float32 1e-3; bfloat16/float16 1e-2 for outputs
  and states, 2e-2 for gradients). The largest error relative to its tolerance is reported;
* **speed** on a moderate shape (``--speed-shape``; default 4 x 1024 x 8 x 64 for the chunked ops, 4 x 256 x 8 x 32
  for the recurrent ones): forward (no autograd) and forward + backward (gradients of every input), the minimum
  over ``--reps`` timings after one warm-up call, ``torch.cuda.synchronize`` around each, for the kernel and for
  the PyTorch implementation ``impl="auto"`` would run without Triton (``chunked``, ``checkpointed``).

It prints a table (op, implementation, dtype, largest error and its tolerance, PASS/FAIL, times, speed-up) and
exits with status 1 if a correctness check fails or raises. The first-use check of the Triton kernels
(:mod:`fastweights.ops.triton.safety`) is off during the run: the kernels themselves are measured.

Without a CUDA device (or with ``--device cpu``) it says so in one line and checks the CPU implementations instead
(every one meant for the CPU, e.g. ``compiled``, ``chunked``, ``checkpointed``) the same way, in float32 unless
``--dtypes`` says otherwise and without timings unless ``--speed``; under ``TRITON_INTERPRET=1`` also ``triton``,
through Triton's CPU interpreter.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime

import torch

from .ops import SPECS
from .ops.common import registry
from .ops.triton import _support, gpu_bench, safety

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SHORT = {dt: name for name, dt in gpu_bench.DTYPES.items()}  # torch.bfloat16 -> "bf16" (gpu_bench's Case)
CHECK_SHAPES = {"cuda": (2, 40, 2, 16), "cpu": (2, 24, 2, 8)}  # B, T, H, D of the correctness checks
SPEED_SHAPES = {False: (4, 1024, 8, 64), True: (4, 256, 8, 32)}  # by OpSpec.checkpointed: a step loop is slower
SCHEMA = "fastweights.selftest/1"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One op and version (``delta_lstm`` v1-v4, ...) as ``fastweights selftest`` checks it."""

    op: str
    version: int | None = None

    @property
    def name(self) -> str:
        return self.op + ("" if self.version is None else f" v{self.version}")

    @property
    def kwargs(self) -> dict:
        return {} if self.version is None else {"version": self.version}


def variants(ops: list[str] | None = None) -> list[Variant]:
    """Every registered op (or those in ``ops``) and each of its versions."""
    return [Variant(name, v) for name, spec in SPECS.items() if ops is None or name in ops
            for v in (spec.versions or (None,))]


def implementations(op: str, device: torch.device) -> list[tuple[str, str | None]]:
    """``[(impl, why it cannot run here or None)]`` to check on ``device``: ``triton`` on a GPU; on the CPU every
    implementation meant for it except the reference (the oracle), plus ``triton`` under ``TRITON_INTERPRET=1``."""
    base = registry.COMPOSITIONS.get(op, op)
    entries = registry.IMPLEMENTATIONS[base]
    if device.type == "cuda":
        names = ["triton"]
    else:
        names = [n for n in registry.available_implementations("cpu")[op] if n != SPECS[op].oracle]
        if _support.interpreting() and "triton" in entries:
            names.append("triton")
    return [(n, entries[n].unavailable()) for n in names]


def pytorch_impl(op: str, device: torch.device) -> str:
    """The best PyTorch implementation (one for every device: ``chunked``, ``checkpointed``), what ``impl="auto"``
    runs on a GPU without the Triton kernels."""
    base = registry.COMPOSITIONS.get(op, op)
    for entry in sorted(registry.IMPLEMENTATIONS[base].values(), key=lambda e: (-e.priority, e.name)):
        if entry.devices is None and entry.unavailable() is None:
            return entry.name
    raise RuntimeError(f"no PyTorch implementation of {op} for {device}")  # every op has "reference"


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def check_correctness(var: Variant, impl: str, dtype: torch.dtype, device: torch.device,
                      shape: tuple[int, int, int, int], oracle_cache: dict) -> dict:
    """Errors of ``impl`` on ``device`` against the float64 reference on the CPU (see the module docstring)."""
    spec = SPECS[var.op]
    B, T, H, D = shape
    ex = safety.make_example(spec, B=B, T=T, H=H, K=D, V=D, dtype=dtype, device=device, version=var.version)
    key = (var, dtype)
    if key not in oracle_cache:
        oracle_cache[key] = safety.run_example(spec, ex, impl=spec.oracle, dtype=torch.float64, device="cpu")
    rec: dict = {"oracle": f"{spec.oracle} float64"}
    if var.op not in registry.COMPOSITIONS:  # what really ran (an implementation may hand a call on)
        rec["resolved"] = registry.resolve(var.op, impl, *ex.xs, **var.kwargs).name
    cmp = safety.compare(ex, safety.run_example(spec, ex, impl=impl), oracle_cache[key])
    rec.update({"errors": cmp.errors, "worst": cmp.worst, "max_err": cmp.worst_err, "tol": cmp.worst_tol,
                "tol_out": cmp.tol_out, "tol_grad": cmp.tol_grad, "pass": cmp.passed})
    return rec


def check_speed(var: Variant, impl: str, dtype: torch.dtype, device: torch.device, shape: tuple[int, int, int, int],
                reps: int) -> dict:
    """Minimum fwd and fwd+bwd milliseconds of ``impl`` and of the PyTorch implementation on ``shape``."""
    B, T, H, D = shape
    case = gpu_bench.Case(var.op, SHORT[dtype], B, T, H, D, version=var.version)
    args, _, _ = gpu_bench.make_args(case, str(device))
    ref = pytorch_impl(var.op, device)
    out = {"shape": {"B": B, "T": T, "H": H, "D": D}, "pytorch_impl": ref}
    for side, name in (("impl", impl), ("pytorch", ref)):
        f = gpu_bench.op_fn(case, name)
        m = gpu_bench.measure(lambda *xs, f=f: f(*xs)[0], args, str(device), warmup=1, reps=reps, stat=min)
        out[side] = {"fwd_ms": m["fwd_ms"], "fwd_bwd_ms": m["fwd_bwd_ms"]}
    out["speedup_fwd"] = out["pytorch"]["fwd_ms"] / out["impl"]["fwd_ms"]
    out["speedup_fwd_bwd"] = out["pytorch"]["fwd_bwd_ms"] / out["impl"]["fwd_bwd_ms"]
    return out


def run(device: torch.device, dtypes: list[torch.dtype], ops: list[str] | None = None, *,
        shape: tuple[int, int, int, int] | None = None, speed: bool = False,
        speed_shape: tuple[int, int, int, int] | None = None, reps: int = 5,
        log: Callable[[str], None] = lambda msg: None) -> dict:
    """Every check on ``device``; returns the result that ``--json`` writes (``rows``, ``all_pass``, ...)."""
    start = time.perf_counter()
    shape = shape or CHECK_SHAPES[device.type]
    threads = torch.get_num_threads()
    try:
        if device.type == "cpu":
            torch.set_num_threads(1)  # tiny ops in Python loops: more threads only add overhead
        rows = _rows(device, dtypes, ops, shape, speed, speed_shape, reps, log)
    finally:
        torch.set_num_threads(threads)
    checked = [r for r in rows if r["status"] != "skipped"]
    return {"schema": SCHEMA, "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "info": gpu_bench.device_info(str(device)),
            "settings": {"dtypes": [str(d).removeprefix("torch.") for d in dtypes], "shape": list(shape),
                         "speed": speed, "speed_shape": None if speed_shape is None else list(speed_shape),
                         "reps": reps, "interpreter": _support.interpreting()},
            "rows": rows, "checked": len(checked), "failed": [f"{r['name']} {r['impl']} {r['dtype']}"
                                                              for r in checked if not r["pass"]],
            "all_pass": bool(checked) and all(r["pass"] for r in checked),
            "elapsed_s": time.perf_counter() - start}


def _rows(device: torch.device, dtypes: list[torch.dtype], ops: list[str] | None, shape: tuple[int, int, int, int],
          speed: bool, speed_shape: tuple[int, int, int, int] | None, reps: int,
          log: Callable[[str], None]) -> list[dict]:
    rows: list[dict] = []
    oracle_cache: dict = {}
    with safety.triton_check(False):  # measure the kernels, not the fallback a failed first-use check would pick
        for var in variants(ops):
            spec = SPECS[var.op]
            for impl, why in implementations(var.op, device):
                for dtype in dtypes:
                    row: dict = {"op": var.op, "version": var.version, "name": var.name, "impl": impl,
                                 "dtype": str(dtype).removeprefix("torch.")}
                    rows.append(row)
                    if why is not None:
                        row.update({"status": "skipped", "why": why})
                        continue
                    log(f"{var.name} {impl} {row['dtype']}: correctness ...")
                    try:
                        row.update(check_correctness(var, impl, dtype, device, shape, oracle_cache))
                        row["status"] = "PASS" if row["pass"] else "FAIL"
                    except Exception as e:  # a compile or launch error is a result too: report it, go on
                        row.update({"status": "ERROR", "pass": False, "error": _error(e),
                                    "traceback": traceback.format_exc(limit=4)})
                        continue
                    if speed:
                        log(f"{var.name} {impl} {row['dtype']}: speed ...")
                        try:
                            row["speed"] = check_speed(var, impl, dtype, device,
                                                       speed_shape or SPEED_SHAPES[spec.checkpointed], reps)
                        except Exception as e:  # e.g. out of memory at a user's --speed-shape
                            row["speed"] = {"error": _error(e)}
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    return rows


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def table(result: dict) -> str:
    """The result as a text table, a line per (op, implementation, dtype), then the errors and a summary."""
    timed = any("speed" in r for r in result["rows"])
    head = f"{'op':<15}{'impl':<14}{'dtype':<10}{'max err':>9}{'tol':>8}  {'largest at':<27}{'result':<8}"
    if timed:
        head += f"{'fwd ms':>9}{'fwd+bwd':>9}  {'pytorch':<13}{'fwd ms':>9}{'fwd+bwd':>9}{'speed-up':>10}"
    lines = [head.rstrip()]
    notes = []
    for r in result["rows"]:
        line = f"{r['name']:<15}{r['impl']:<14}{r['dtype']:<10}"
        if r["status"] == "skipped":
            lines.append(line + f"{'-':>9}{'-':>8}  {'':<27}{'skipped':<8}{r['why']}")
            continue
        if r["status"] == "ERROR":
            lines.append(line + f"{'-':>9}{'-':>8}  {'':<27}{'ERROR':<8}")
            notes.append(f"{r['name']} {r['impl']} {r['dtype']}: {r['error']}")
            continue
        line += f"{r['max_err']:>9.1e}{r['tol']:>8.0e}  {r['worst']:<27}{r['status']:<8}"
        if r.get("resolved") not in (None, r["impl"]):
            notes.append(f"{r['name']} {r['impl']} {r['dtype']}: ran the {r['resolved']!r} implementation")
        s = r.get("speed")
        if s is not None and "error" in s:
            notes.append(f"{r['name']} {r['impl']} {r['dtype']}: timing failed: {s['error']}")
        elif s is not None:
            line += (f"{_ms(s['impl']['fwd_ms']):>9}{_ms(s['impl']['fwd_bwd_ms']):>9}  {s['pytorch_impl']:<13}"
                     f"{_ms(s['pytorch']['fwd_ms']):>9}{_ms(s['pytorch']['fwd_bwd_ms']):>9}"
                     f"{s['speedup_fwd_bwd']:>9.2f}x")
        lines.append(line.rstrip())
    lines += notes
    if timed:
        lines.append("times: minimum over repeats; speed-up = pytorch / impl, forward + backward")
    n, failed = result["checked"], result["failed"]
    if n == 0:
        lines.append("selftest: nothing could be checked")
    elif failed:
        lines.append(f"selftest: {len(failed)} of {n} checks FAILED: {', '.join(failed)}")
    else:
        lines.append(f"selftest: all {n} checks passed ({result['elapsed_s']:.0f} s)")
    return "\n".join(lines)


def _shape(text: str, flag: str) -> tuple[int, int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{flag}: expected B x T x H x D as four positive integers like 2x40x2x16, "
                                         f"got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _dtypes(text: str) -> list[torch.dtype]:
    names = [ALIASES.get(n.strip(), n.strip()) for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--dtypes: expected a comma-separated subset of {', '.join(DTYPES)}, "
                                         f"got {text!r}")
    return [DTYPES[n] for n in dict.fromkeys(names)]


def _ops(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in SPECS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--ops: expected a comma-separated subset of {', '.join(SPECS)}, "
                                         f"got {text!r}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastweights selftest",
                                description="Check the op implementations of this machine (on a GPU: the Triton "
                                            "kernels) against the float64 reference, and time them.",
                                epilog="Exit status 1 when a correctness check fails. docs/gpu.md")
    p.add_argument("--device", default="cuda", help="cuda (default; cuda:N), or cpu: the CPU implementations")
    p.add_argument("--dtypes", type=_dtypes, default=None,
                   help="comma-separated input dtypes (default float32,bfloat16,float16 on CUDA, float32 on the CPU)")
    p.add_argument("--ops", type=_ops, default=None, help=f"comma-separated ops (default all: {', '.join(SPECS)})")
    p.add_argument("--shape", type=lambda t: _shape(t, "--shape"), default=None, metavar="BxTxHxD",
                   help="shape of the correctness checks (default 2x40x2x16 on CUDA, 2x24x2x8 on the CPU)")
    p.add_argument("--speed", action=argparse.BooleanOptionalAction, default=None,
                   help="time the implementations (default: on CUDA only)")
    p.add_argument("--speed-shape", type=lambda t: _shape(t, "--speed-shape"), default=None, metavar="BxTxHxD",
                   help="shape of the timings (default 4x1024x8x64; recurrent ops 4x256x8x32)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions; the minimum is reported (default 5)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every number as JSON to PATH")
    return p


def main(argv: list[str] | None = None) -> int:
    """``fastweights selftest ...``; returns the exit status (0: every check passed, 1: one failed, 2: bad usage)."""
    p = parser()
    a = p.parse_args(argv)
    try:
        device = torch.device(a.device)
    except RuntimeError:
        p.error(f"--device: expected cuda, cuda:N or cpu, got {a.device!r}")
    if device.type not in ("cuda", "cpu"):
        p.error(f"--device: expected cuda, cuda:N or cpu, got {a.device!r}")
    if a.reps < 1:
        p.error(f"--reps: expected a positive integer, got {a.reps}")
    if device.type == "cuda" and not torch.cuda.is_available():
        device = torch.device("cpu")
    if device.type == "cpu":
        what = ", ".join(sorted({n for v in variants(a.ops) for n, _ in implementations(v.op, device)}))
        print(f"selftest: no CUDA device{' selected' if torch.cuda.is_available() else ''}: checking the CPU "
              f"implementations ({what}) against the float64 reference instead; the Triton kernels need a CUDA GPU"
              + (" (here: triton under TRITON_INTERPRET=1)" if _support.interpreting() else ""), flush=True)
    elif _support.triton_missing():
        print(f"selftest: {_support.TRITON_MISSING}: the 'triton' rows will be skipped", flush=True)
    dtypes = a.dtypes or ([torch.float32] if device.type == "cpu" else list(DTYPES.values()))
    speed = device.type == "cuda" if a.speed is None else a.speed
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - t0:7.1f}s {msg}", file=sys.stderr, flush=True)

    result = run(device, dtypes, a.ops, shape=a.shape, speed=speed, speed_shape=a.speed_shape, reps=a.reps, log=log)
    info = result["info"]
    print(f"device {device}{' (' + info['gpu'] + ')' if info.get('gpu') else ''}, torch {info['torch']}, "
          f"triton {info['triton'] or '-'}")
    print(table(result))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
            fh.write("\n")
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
