"""Compiled CPU kernels (numba) of the ELU + 1 feature map and its sum normalisation, forward and backward.

As PyTorch ops these maps are ~10 elementwise passes over the features forward and as many backward, each over a
strided view of the slow net's projection; here each direction is one pass per row ``[D]`` that reads the view
where it lies. Per row, with ``y = exp(min(x, 0)) + max(x, 0)`` (``ELU(x) + 1``, at least the dtype's smallest
normal number) and ``s = sum(y) + eps``:

    forward:   out = y / s                              (or ``y`` without normalisation)
    backward:  gx = (g - <g, y> / s) / s * min(y, 1)    (or ``g * min(y, 1)``)

``min(y, 1)`` is the derivative of ``ELU(x) + 1`` (``exp(x)`` below 0, 1 above). The backward recomputes ``y``
from ``x``, so only ``x`` is kept.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import numba as nb


@nb.parallel_kernel
def _forward_kernel(x, eps, tiny, normalize, out):
    """x, out ``[N, D]`` (x any strides)."""
    N, D = x.shape
    zero = x.dtype.type(0)
    lo = x.dtype.type(tiny)
    for n in nb.prange(N):
        s = zero
        for i in range(D):
            xi = x[n, i]
            y = np.exp(min(xi, zero)) + max(xi, zero)
            y = max(y, lo)
            out[n, i] = y
            s += y
        if normalize:
            s += eps
            for i in range(D):
                out[n, i] = out[n, i] / s


@nb.parallel_kernel
def _backward_kernel(x, g, eps, tiny, normalize, gx):
    """x, g, gx ``[N, D]`` (x, g any strides)."""
    N, D = x.shape
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    lo = x.dtype.type(tiny)
    for n in nb.prange(N):
        if normalize:
            s = zero
            dot = zero
            for i in range(D):
                xi = x[n, i]
                y = max(np.exp(min(xi, zero)) + max(xi, zero), lo)
                s += y
                dot += g[n, i] * y
            s += eps
            c = dot / s
            for i in range(D):
                xi = x[n, i]
                y = max(np.exp(min(xi, zero)) + max(xi, zero), lo)
                gx[n, i] = (g[n, i] - c) / s * min(y, one)
        else:
            for i in range(D):
                xi = x[n, i]
                y = max(np.exp(min(xi, zero)) + max(xi, zero), lo)
                gx[n, i] = g[n, i] * min(y, one)


def usable(x: Tensor) -> bool:
    """Whether the kernels take ``x``: a CPU float32/float64 tensor with a last axis, numba installed, and no
    ``torch.compile`` tracing (which traces the PyTorch form of the maps instead)."""
    return (nb.NUMBA_AVAILABLE and not torch.compiler.is_compiling() and x.device.type == "cpu"
            and x.dtype in nb.COMPILED_DTYPES and x.dim() >= 1 and x.numel() > 0)


def _rows(x: Tensor) -> np.ndarray:
    """``x [..., D]`` as a numpy ``[N, D]`` view (a copy only where the leading axes cannot be merged)."""
    return x.detach().reshape(-1, x.shape[-1]).numpy()


def elu_norm_forward(x: Tensor, eps: float, normalize: bool) -> Tensor:
    """``ELU(x) + 1`` (clamped to the smallest normal number), divided by its sum + ``eps`` when ``normalize``."""
    out = np.empty((x.numel() // x.shape[-1], x.shape[-1]), nb.np_dtype(x.dtype))
    nb.sync_threads()
    _forward_kernel(_rows(x), eps, float(torch.finfo(x.dtype).tiny), normalize, out)
    return torch.from_numpy(out).view(x.shape)


def elu_norm_backward(x: Tensor, g: Tensor, eps: float, normalize: bool) -> Tensor:
    """The gradient w.r.t. ``x`` of :func:`elu_norm_forward` given that of its output ``g``."""
    gx = np.empty((x.numel() // x.shape[-1], x.shape[-1]), nb.np_dtype(x.dtype))
    nb.sync_threads()
    _backward_kernel(_rows(x), _rows(g.to(x.dtype)), eps, float(torch.finfo(x.dtype).tiny), normalize, gx)
    return torch.from_numpy(gx).view(x.shape)
