"""Shared plumbing of the compiled CPU implementations (numba; optional extra ``fastweights[cpu]``).

The compiled kernels loop over time inside one machine-code function, parallel over batch x heads
(``numba.prange``), so the per-step cost is the arithmetic, not ~60 us of Python and dispatch per step.
They follow the memory rule of the default path: the forward keeps the state at the start of every chunk of
``chunk_size`` steps; the backward recomputes one chunk at a time from it.
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


def supports_compiled(q: Tensor) -> bool:
    """numba kernels run on CPU tensors; half-precision inputs are computed in float32 by the op."""
    return NUMBA_AVAILABLE and q.device.type == "cpu"


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


def keep_tensor(reset: Tensor | None, B: int, T: int, dtype: torch.dtype) -> Tensor:
    """``1 - reset`` as a contiguous ``[B, T]`` tensor of ``dtype`` (ones without a reset), for the kernels."""
    if reset is None:
        return torch.ones(B, T, dtype=dtype)
    return (~reset).to(dtype).contiguous()
