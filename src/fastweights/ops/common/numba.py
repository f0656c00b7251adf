"""Shared plumbing of the compiled CPU implementations (numba; optional extra ``fastweights[cpu]``).

Every compiled backend takes its decorators (:data:`kernel`, :data:`parallel_kernel`, :data:`prange`), its
``supports`` and its array conversions from here, so that a machine without numba imports them all unchanged
(the decorators then leave the plain Python functions, which ``impl="auto"`` never selects).

The compiled kernels loop over time inside one machine-code function per batch row, parallel over the batch
(``numba.prange``), with the heads interleaved inside the time loop, so the per-step cost is the arithmetic, not
~60 us of Python and dispatch per step; they read the batch-first inputs where they lie (:func:`as_numpy`).
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
    # a helper inlined into its callers at numba's IR level: a call per head and step costs about as much as a
    # step at V = 16 (helpers take whole arrays and indices: slicing a view per head and step is as costly)
    inline_kernel = numba.njit(inline="always", cache=True, fastmath={"reassoc", "contract"})
    prange = numba.prange
else:  # pragma: no cover - the registry never selects a compiled implementation without numba

    def kernel(fn):
        return fn

    parallel_kernel = kernel
    reordering_kernel = kernel
    inline_kernel = kernel
    prange = range


@inline_kernel
def softmax_inplace(x):
    """``x = softmax(x)`` over a vector ``[V]`` (max-subtracted, like torch.softmax), in ``x``'s dtype."""
    V = x.shape[0]
    if V == 0:
        return
    mx = x[0]
    for j in range(1, V):
        mx = max(mx, x[j])
    tot = x.dtype.type(0)
    for j in range(V):
        e = np.exp(x[j] - mx)
        x[j] = e
        tot += e
    for j in range(V):
        x[j] = x[j] / tot


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
    """A C-contiguous numpy array of ``x`` (a no-op for a contiguous tensor), without autograd."""
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


def keep_tensor(reset: Tensor | None, B: int, T: int, dtype: torch.dtype) -> Tensor:
    """``1 - reset`` as a contiguous ``[B, T]`` tensor of ``dtype`` (ones without a reset), for the kernels."""
    if reset is None:
        return torch.ones(B, T, dtype=dtype)
    return (~reset).to(dtype).contiguous()
