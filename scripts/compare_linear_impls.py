"""Forward and forward+backward time of the sum and delta rules' CPU implementations side by side.

    python scripts/compare_linear_impls.py [--shapes 8x512x8x32,4x2048x8x64,2x512x4x128] [--impls chunked,compiled]

One thread, each shape's implementations interleaved over two rounds in one process, min over repeats; prints
milliseconds and the ratio of the second implementation to the first. It is how the head size up to which the
``compiled`` kernels are the default (``fastweights.ops.common.compiled_linear.MAX_HEAD``) was chosen.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from fastweights.ops import delta_rule, elu_sum_norm, sum_rule


def _min_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="32x64x8x16,8x512x8x32,4x1024x8x48,4x2048x8x64,4x1024x4x96,2x512x4x128,"
                                       "2x256x2x256", help="comma-separated BxTxHxD")
    p.add_argument("--impls", default="chunked,compiled", help="two implementations to compare")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    first, second = a.impls.split(",")
    for shape in a.shapes.split(","):
        B, T, H, D = (int(x) for x in shape.split("x"))
        q, k = elu_sum_norm(torch.randn(B, T, H, D)), elu_sum_norm(torch.randn(B, T, H, D))
        v, beta = torch.randn(B, T, H, D), torch.rand(B, T, H)
        for op, args in ((sum_rule, (q, k, v)), (delta_rule, (q, k, v, beta))):
            best: dict[str, tuple[float, float]] = {}
            for _ in range(2):
                for impl in (first, second):
                    leaves = [x.clone().requires_grad_() for x in args]

                    def fwd(op: Callable = op, args: tuple = args, impl: str = impl) -> None:
                        with torch.no_grad():
                            op(*args, impl=impl)

                    def fwd_bwd(op: Callable = op, leaves: list = leaves, impl: str = impl) -> None:
                        op(*leaves, impl=impl)[0].sum().backward()

                    f, fb = _min_time(fwd, a.repeats), _min_time(fwd_bwd, a.repeats)
                    old = best.get(impl, (f, fb))
                    best[impl] = (min(old[0], f), min(old[1], fb))
            (f1, b1), (f2, b2) = best[first], best[second]
            print(f"{op.__name__:10s} {shape:14s} fwd {first} {f1 * 1e3:8.1f} ms  {second} {f2 * 1e3:8.1f} ms  "
                  f"x{f2 / f1:.2f} | f+b {first} {b1 * 1e3:8.1f} ms  {second} {b2 * 1e3:8.1f} ms  x{b2 / b1:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
