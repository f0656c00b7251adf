"""Peak memory of forward+backward through one op: the default implementation against autograd through
the naive step loop (the ``reference`` implementation run in float32 with autograd).

Each measurement runs in a fresh subprocess and reports two numbers:

* ``saved``: bytes of the distinct storages autograd keeps for the backward pass (collected with
  ``torch.autograd.graph.saved_tensors_hooks``; exact and repeatable);
* ``peak``: the process's peak resident memory during forward+backward minus its resident memory before
  it (Linux: the high-water mark ``VmHWM``, reset first; elsewhere ``ru_maxrss``, minus the peak before;
  includes temporaries and allocator slack).

    python -m fastweights.bench.memory --op delta_rnn --batch 8 --time 1024 --heads 8 --dim 64

The defaults (``B=4 T=256 H=4 D=32``) take seconds; the naive loop's memory grows with ``B * T * H * D^2``, so the
command above (a minute and over 4 GB for the naive loop) shows the gap at a realistic size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

import torch

from ..ops import SPECS
from ..runs.progress import Progress

OPS = tuple(name for name, spec in SPECS.items() if spec.step_flops is not None)  # the recurrences, not compositions


def make_inputs(op: str, B: int, T: int, H: int, D: int, seed: int = 0) -> tuple[list[torch.Tensor], list]:
    """Raw random inputs of ``op`` (leaf tensors requiring grad) and the op's positional args made from them by
    the activations of its spec (so the activations are part of the graph)."""
    g = torch.Generator().manual_seed(seed)
    spec = SPECS[op]
    leaves = [x.requires_grad_() for x in spec.example_raw(lambda *s: torch.randn(*s, generator=g), B, T, H, D, D)]
    return leaves, spec.activate(leaves)


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _peak_rss_start() -> int:
    """Start measuring the peak resident memory; returns the baseline in bytes for :func:`_peak_rss`."""
    # ru_maxrss carries over from the parent through fork+exec, so a child of a large process (the speed
    # benchmark) never exceeds it and reports 0; the per-process VmHWM, reset to the current size, does not
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    hwm = _vm_hwm()
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    hwm = _vm_hwm()
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _saved_and_peak(forward) -> tuple[int, int]:
    """Run ``forward()`` (returning the output) and the backward of its squared sum; returns ``(bytes of the
    distinct storages autograd saved, peak resident memory growth)``."""
    storages: dict[int, int] = {}  # views of one storage (slices, transposes) count once

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    before = _peak_rss_start()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    out.square().sum().backward()
    return sum(storages.values()), _peak_rss() - before


def measure(op: str, impl: str, B: int, T: int, H: int, D: int) -> dict:
    """Forward+backward of ``op`` in this process; returns ``saved`` and ``peak`` bytes."""
    fn = SPECS[op].fn
    # warm-up: the first call loads kernels and thread pools, which must not count as the op's memory
    _, warm = make_inputs(op, 1, 3, 1, 4)
    fn(*warm, impl=impl)[0].sum().backward()
    _, args = make_inputs(op, B, T, H, D)
    saved, peak = _saved_and_peak(lambda: fn(*args, impl=impl)[0])
    return {"op": op, "impl": impl, "shape": {"B": B, "T": T, "H": H, "D": D}, "saved_bytes": saved,
            "peak_bytes": peak}


def measure_layer(name: str, impl: str | None, B: int, T: int, H: int, D: int, seed: int = 0) -> dict:
    """Forward+backward of the layer ``name`` (``d_model = H * D``, input ``x [B, T, H * D]``) in this
    process, with the op implementation ``impl``; returns ``saved`` and ``peak`` bytes like :func:`measure`."""
    from ..layers import build_layer

    torch.manual_seed(seed)
    layer = build_layer(name, H * D, H, D, impl=impl)
    layer(torch.randn(1, 3, H * D))[0].sum().backward()  # warm-up, as in measure
    layer.zero_grad(set_to_none=True)
    x = torch.randn(B, T, H * D, generator=torch.Generator().manual_seed(seed + 1)).requires_grad_()
    saved, peak = _saved_and_peak(lambda: layer(x)[0])
    return {"layer": name, "impl": impl, "shape": {"B": B, "T": T, "H": H, "D": D}, "saved_bytes": saved,
            "peak_bytes": peak}


def _in_fresh_interpreter(call: str, threads: int | None) -> dict:
    # the thread count must be set in the child: it starts with torch's default, not the parent's setting
    setup = "" if threads is None else f"import torch; torch.set_num_threads({int(threads)}); "
    code = f"{setup}import json; from fastweights.bench import memory; print(json.dumps(memory.{call}))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_isolated(op: str, impl: str | None, B: int, T: int, H: int, D: int, *, threads: int | None = None) -> dict:
    """:func:`measure` in a fresh interpreter so that peaks do not mix."""
    return _in_fresh_interpreter(f"measure({op!r}, {impl!r}, {B}, {T}, {H}, {D})", threads)


def run_isolated_layer(name: str, impl: str | None, B: int, T: int, H: int, D: int, *,
                       threads: int | None = None) -> dict:
    """:func:`measure_layer` in a fresh interpreter."""
    return _in_fresh_interpreter(f"measure_layer({name!r}, {impl!r}, {B}, {T}, {H}, {D})", threads)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastweights memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=OPS, default="delta_rnn")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--time", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--impls", default="auto,reference", help="comma-separated; reference = naive step loop")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    for name in ("batch", "time", "heads", "dim"):  # before any interpreter starts (their tracebacks say nothing)
        if getattr(a, name) < 1:
            p.error(f"argument --{name}: expected a positive integer, got {getattr(a, name)}")
    impls = [x.strip() for x in a.impls.split(",") if x.strip()]
    # one fresh interpreter per implementation, side by side: each reports its own process's peak
    bar = Progress(len(impls), prefix=f"memory {a.op}", stream=sys.stderr, every_s=0.0, unit="measurement")
    bar.update(0)
    with ThreadPoolExecutor(max_workers=len(impls)) as pool:
        futures = [pool.submit(run_isolated, a.op, impl, a.batch, a.time, a.heads, a.dim) for impl in impls]
        for done, _ in enumerate(as_completed(futures), 1):
            bar.update(done)
    bar.close()
    rows = [f.result() for f in futures]
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{a.op} forward+backward, fp32, B={a.batch} T={a.time} H={a.heads} D={a.dim}, torch {torch.__version__}")
    print(f"{'impl':<14}{'saved for backward':>22}{'peak RSS increase':>22}")
    for r in rows:
        print(f"{r['impl']:<14}{r['saved_bytes'] / 2**20:>18.1f} MiB{r['peak_bytes'] / 2**20:>18.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
