"""When the Triton implementations can run (no import of triton here: ``import fastweights`` stays light).

The kernels run on CUDA tensors. They also run on CPU tensors under Triton's interpreter, which must be switched
on with the environment variable ``TRITON_INTERPRET=1`` *before* the kernel modules are imported (the
``@triton.jit`` decorator reads it); the tests use that (``tests/ops/test_ops_triton.py``). ``impl="auto"`` never
picks Triton for CPU tensors: the interpreter is orders of magnitude slower than the other CPU implementations.
"""

from __future__ import annotations

import importlib.util
import os

from torch import Tensor

TRITON_MISSING = "triton is not installed (pip install 'fastweights[triton]')"
MAX_KEY_DIM = 256  # the chunked kernels hold K in one register tile; larger heads use the PyTorch implementation
MAX_VALUE_DIM = 128  # the recurrent state is a register tile: larger heads use the PyTorch implementation
_TRUE = ("1", "true", "yes", "on", "y")  # what triton's own env_bool accepts
_available: bool | None = None


def triton_available() -> bool:
    """Whether ``import triton`` can succeed (checked without importing it)."""
    global _available
    if _available is None:
        _available = importlib.util.find_spec("triton") is not None
    return _available


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


def triton_missing() -> str | None:
    """The ``available`` of every Triton implementation: None when triton is installed, else why not."""
    return None if triton_available() else TRITON_MISSING


def check_runnable(op: str, q: Tensor) -> None:
    """Raise a clear error when an explicit ``impl="triton"`` cannot run on these inputs."""
    if not triton_available():
        raise RuntimeError(f"{op}: the 'triton' implementation is unavailable: {TRITON_MISSING}")
    if q.device.type == "cuda":
        return
    if q.device.type == "cpu" and interpreting():
        from . import _common  # imports triton: the kernels are defined now if they were not before

        if not _common.INTERPRET:
            raise RuntimeError(f"{op}: TRITON_INTERPRET=1 was set after the Triton kernels were compiled for the "
                               "GPU; set it before the first use of impl='triton' (before importing triton)")
        return
    raise RuntimeError(f"{op}: the 'triton' implementation runs on CUDA tensors (or on CPU tensors under "
                       f"TRITON_INTERPRET=1, for tests), got device {q.device}")
