"""Peak memory of forward+backward through one op: the default implementation against autograd through
the naive step loop (the ``reference`` implementation run in float32 with autograd).

Each measurement runs in a fresh subprocess and reports two numbers:

* ``saved``: bytes of the distinct storages autograd keeps for the backward pass (collected with
  ``torch.autograd.graph.saved_tensors_hooks``; exact and repeatable);
* ``peak``: the process's peak resident memory during forward+backward minus the peak before it
  (``ru_maxrss``; includes temporaries and allocator slack).

    python -m fastweights.bench.memory --op delta_rnn --batch 8 --time 1024 --heads 8 --dim 64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from ..ops import feature_maps as fm

OPS = ("sum_rule", "delta_rule", "delta_rnn", "delta_lstm", "rec_delta")


def make_inputs(op: str, B: int, T: int, H: int, D: int, seed: int = 0) -> tuple[list[torch.Tensor], list]:
    """Activated random inputs of ``op`` (leaf tensors requiring grad) and the op's positional args."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    G = (3,) if op == "delta_lstm" else ()
    if op == "rec_delta":
        leaves = [rand(B, T, H, D), rand(B, T, H, D), rand(B, T, H, D), rand(B, T, H),
                  rand(H, D, D) / D**0.5, rand(H, D, D) / D**0.5, rand(H, D, D) / D**0.5, rand(H, D) / D**0.5]
        leaves = [x.requires_grad_() for x in leaves]
        return leaves, leaves
    leaves = [rand(B, T, H, *G, D) for _ in range(3)] + [rand(B, T, H, *G)]
    if op in ("delta_rnn", "delta_lstm"):
        leaves += [rand(B, T, H, *G, D), rand(B, T, H, *G, D), rand(B, T, H, *G)]
    leaves = [x.requires_grad_() for x in leaves]
    q, k, v, b = leaves[:4]
    args = [fm.elu_sum_norm(q), fm.elu_sum_norm(k), v, torch.sigmoid(b)]
    if op in ("delta_rnn", "delta_lstm"):
        args += [fm.softmax(leaves[4]), leaves[5], torch.sigmoid(leaves[6])]
    if op == "sum_rule":
        args = args[:3]
    return leaves, args


def measure(op: str, impl: str, B: int, T: int, H: int, D: int) -> dict:
    """Forward+backward of ``op`` in this process; returns ``saved`` and ``peak`` bytes."""
    import fastweights.ops as ops

    fn = getattr(ops, op)
    # warm-up: the first call loads kernels and thread pools, which must not count as the op's memory
    _, warm = make_inputs(op, 1, 3, 1, 4)
    fn(*warm, impl=impl)[0].sum().backward()
    _, args = make_inputs(op, B, T, H, D)
    storages: dict[int, int] = {}  # views of one storage (slices, transposes) count once

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = fn(*args, impl=impl)
    out.square().sum().backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"op": op, "impl": impl, "shape": {"B": B, "T": T, "H": H, "D": D}, "saved_bytes": sum(storages.values()),
            "peak_bytes": after - before}


def run_isolated(op: str, impl: str, B: int, T: int, H: int, D: int) -> dict:
    """:func:`measure` in a fresh interpreter so that peaks do not mix."""
    code = (f"import json; from fastweights.bench.memory import measure; "
            f"print(json.dumps(measure({op!r}, {impl!r}, {B}, {T}, {H}, {D})))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastweights memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=OPS, default="delta_rnn")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--time", type=int, default=1024)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--impls", default="auto,reference", help="comma-separated; reference = naive step loop")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    rows = [run_isolated(a.op, impl, a.batch, a.time, a.heads, a.dim) for impl in a.impls.split(",")]
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
