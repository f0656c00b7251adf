"""Shared pieces of the Triton kernels: dot products with the right precision, masked softmax, reset masks.

Importing this module imports triton and fixes, once per process, whether the kernels run under the interpreter
(``TRITON_INTERPRET=1`` at import time).

Precision policy. Inputs may be float32, bfloat16 or float16; states, accumulators and every derived matrix are
float32. A product of two *input* tiles (``Q K^T``, ``K K^T``) runs on the tensor cores in the input dtype when it
is half precision (float32 accumulation, exact products of the given values). A product involving a derived
float32 matrix (a state, ``L^-1``, ``U``, ``W``, a gradient) runs in float32 with ``input_precision`` =
:data:`FP32_PRECISION_HALF_INPUTS` (TF32 by default) for half-precision inputs, and in full IEEE float32 for
float32 inputs, so that float32 users get float32 results. Under the interpreter everything is float32 (its
bfloat16 dot is wrong upstream), so the interpreted tests check the algorithm, not the tensor-core rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._support import interpreting

INTERPRET: bool = interpreting()  # fixed when the kernels are defined (the @triton.jit decorators read it)

# input_precision of float32 products of derived matrices when the inputs are bf16/fp16 (on a GPU);
# "tf32x3" is closer to float32 and slower, "ieee" is exact float32 on the CUDA cores.
FP32_PRECISION_HALF_INPUTS = "tf32"

_HALF = (torch.bfloat16, torch.float16)


def device_fn(fn):
    """``@triton.jit`` for a device function called by the kernels. Under the interpreter it stays a plain Python
    function: the interpreter re-patches ``triton.language`` on every call of a jitted function (milliseconds),
    which would dominate the interpreted tests; as plain Python it runs inside the calling kernel's patched scope
    with the same semantics."""
    return fn if INTERPRET else triton.jit(fn)


def dot_config(dtype: torch.dtype) -> tuple[bool, str]:
    """``(HALF_DOT, PREC)`` for inputs of ``dtype``: input-tile products in half precision, and the
    ``input_precision`` of the float32 products."""
    if INTERPRET or dtype not in _HALF:
        return False, "ieee"
    return True, FP32_PRECISION_HALF_INPUTS


def next_pow2(n: int, minimum: int = 16) -> int:
    return max(minimum, triton.next_power_of_2(int(n)))


def warps_for(elements: int) -> int:
    """num_warps for a program holding about ``elements`` float32 values in registers (~32 per thread),
    a power of two in [1, 8]."""
    w = 1
    while w < 8 and elements > 32 * 32 * w:
        w *= 2
    return w


@device_fn
def mm(a, b, PREC: tl.constexpr):
    """``a @ b`` in float32 (derived matrices)."""
    return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PREC)


@device_fn
def mm_in(a, b, HALF_DOT: tl.constexpr, PREC: tl.constexpr):
    """``a @ b`` of two input tiles: in their (half) dtype on the tensor cores, else float32."""
    if HALF_DOT:
        return tl.dot(a, b)
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PREC)


@device_fn
def masked_softmax(x, mask):
    """softmax over the entries of the vector ``x`` where ``mask`` holds (0 elsewhere), max-subtracted."""
    xm = tl.where(mask, x, float("-inf"))
    e = tl.exp(xm - tl.max(xm, 0))
    e = tl.where(mask, e, 0.0)
    return e / tl.sum(e, 0)


@device_fn
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@device_fn
def chunk_segments(reset_ptr, b, t0, T, C: tl.constexpr, HAS_RESET: tl.constexpr):
    """Segment ids of the chunk's positions (the number of resets in [chunk start, i]) and their total.

    Position i sees position j <= i iff their ids agree, and sees the chunk's start state iff its id is 0; the
    positions whose id is the total write the chunk's end state, and the start state survives the chunk iff the
    total is 0. Padded positions (t >= T) carry no reset.
    """
    offs = tl.arange(0, C)
    if HAS_RESET:
        r = tl.load(reset_ptr + b * T + t0 + offs, mask=(t0 + offs) < T, other=0)
        seg = tl.cumsum(r, 0)
        total = tl.sum(r, 0)
    else:
        seg = tl.zeros([C], dtype=tl.int32)
        total = tl.sum(seg, 0)
    return seg, total


@device_fn
def keep_factor(reset_ptr, b, t, T, HAS_RESET: tl.constexpr):
    """1.0, or 0.0 when the state is reset before step ``t`` (a multiply, as in the reference)."""
    if HAS_RESET:
        return 1.0 - tl.load(reset_ptr + b * T + t).to(tl.float32)
    else:
        return b * 0.0 + 1.0  # a float32 scalar tensor: a jitted function returning a constant is version-fragile
