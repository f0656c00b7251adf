"""Shared plumbing of the compiled CPU implementations (numba; optional extra ``fastweights[cpu]``).

Every compiled backend takes its decorators (:data:`kernel`, :data:`parallel_kernel`, :data:`prange`), its
``supports`` and its array conversions from here, so that a machine without numba imports them all unchanged
(the decorators then leave the plain Python functions, which ``impl="auto"`` never selects).

The compiled kernels loop over time inside one machine-code function, parallel over batch x heads
(``numba.prange``), so the per-step cost is the arithmetic, not ~60 us of Python and dispatch per step.
They follow the memory rule of the default path: the forward keeps the state at the start of every chunk of
``checkpoint_every`` steps; the backward recomputes one chunk at a time from it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

try:  # numba is optional: without it the pure-PyTorch implementations are used (with a one-line notice)
    import numba

    NUMBA_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised on machines without numba
    numba = None
    NUMBA_AVAILABLE = False

NUMBA_MISSING = "numba is not installed (pip install 'fastweights[cpu]')"
COMPILED_DTYPES = (torch.float32, torch.float64)

if NUMBA_AVAILABLE:
    kernel = numba.njit(cache=True, fastmath=False)  # a per-sequence function, compiled once
    parallel_kernel = numba.njit(parallel=True, cache=True, fastmath=False)  # distributes the (b, h) pairs
    # reductions may be reordered and a multiply-add fused (no assumption about NaN, inf or signed zeros beyond
    # that): what lets LLVM vectorise a dot product and keep several partial sums in flight
    reordering_kernel = numba.njit(cache=True, fastmath={"reassoc", "contract"})
    prange = numba.prange
else:  # pragma: no cover - the registry never selects a compiled implementation without numba

    def kernel(fn):
        return fn

    parallel_kernel = kernel
    reordering_kernel = kernel
    prange = range


@kernel
def softmax_into(x, out):
    """``out = softmax(x)`` over a vector ``[V]`` (max-subtracted, like torch.softmax); ``out`` may be ``x``."""
    V = x.shape[0]
    if V == 0:
        return
    m = x[0]
    for v in range(1, V):
        m = max(m, x[v])
    s = 0.0
    for v in range(V):
        e = np.exp(x[v] - m)
        out[v] = e
        s += e
    for v in range(V):
        out[v] = out[v] / s


def numba_missing() -> str | None:
    """The ``available`` of every compiled implementation: None when numba is installed, else why not."""
    return None if NUMBA_AVAILABLE else NUMBA_MISSING


def check_runnable(op: str, q: Tensor) -> None:
    """Raise a clear error when an explicit ``impl="compiled"`` cannot run (numba missing, not a CPU tensor)."""
    why = numba_missing()
    if why is None and q.device.type != "cpu":
        why = f"it runs on CPU tensors, got device {q.device}"
    if why is not None:
        raise RuntimeError(f"{op}: the 'compiled' implementation is unavailable: {why}")


def np_dtype(dtype: torch.dtype) -> type:
    """The numpy dtype of the kernels' arrays for tensors of ``dtype`` (float64 or float32)."""
    return np.float64 if dtype == torch.float64 else np.float32


def as_numpy(x: Tensor) -> np.ndarray:
    """A C-contiguous numpy array of ``x`` as it is (e.g. batch-head-major states), without autograd."""
    return x.detach().contiguous().numpy()


def sync_threads() -> None:
    """Use as many numba threads as torch uses (``torch.set_num_threads`` governs both).

    numba's OpenMP threading layer shares libgomp with torch: starting its thread pool sets the process-wide
    OpenMP thread count to numba's maximum, which would silently undo the user's ``torch.set_num_threads``.
    So the pool is started here first and torch's setting restored before the kernels run.
    """
    if not NUMBA_AVAILABLE:
        return
    n = torch.get_num_threads()
    from numba.np.ufunc import parallel

    parallel._launch_threads()  # idempotent; the first call is the one that resets OpenMP's thread count
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def to_bh_major(x: Tensor) -> np.ndarray:
    """``[B, T, H, ...]`` -> a C-contiguous numpy array ``[B, H, T, ...]`` (each (b, h) sequence contiguous)."""
    return x.detach().transpose(1, 2).contiguous().numpy()


def from_bh_major(a: np.ndarray) -> Tensor:
    """Inverse of :func:`to_bh_major`: ``[B, H, T, ...]`` numpy -> ``[B, T, H, ...]`` tensor."""
    return torch.from_numpy(a).transpose(1, 2)


def forward_outputs(B: int, H: int, T: int, num_chunks: int, V: int, matrix: tuple[int, ...], dtype: type
                    ) -> tuple[np.ndarray, ...]:
    """Empty outputs of a forward kernel whose state per (b, h) is a fast matrix ``[*matrix]`` and the last output
    ``[V]``: ``(y [B, H, T, V], matrix_T [B, H, *matrix], y_T [B, H, V], the matrix at every chunk start
    [B, H, num_chunks, *matrix], y there [B, H, num_chunks, V])``."""
    return (np.empty((B, H, T, V), dtype), np.empty((B, H, *matrix), dtype), np.empty((B, H, V), dtype),
            np.empty((B, H, num_chunks, *matrix), dtype), np.empty((B, H, num_chunks, V), dtype))


def keep_tensor(reset: Tensor | None, B: int, T: int, dtype: torch.dtype) -> Tensor:
    """``1 - reset`` as a contiguous ``[B, T]`` tensor of ``dtype`` (ones without a reset), for the kernels."""
    if reset is None:
        return torch.ones(B, T, dtype=dtype)
    return (~reset).to(dtype).contiguous()
