"""Feature maps applied to queries and keys (paper.md A.2, A.10).

All maps act on the last axis. They compute in at least float32 and cast back, so that half-precision
inputs keep strictly positive features (a zero key would make sum normalisation divide by zero).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .common import compiled_feature_maps


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _elu_plus_one(y: Tensor) -> Tensor:
    """``ELU(y) + 1`` as ``exp(min(y, 0)) + max(y, 0)``: exactly ``exp(y)`` below 0 and ``y + 1`` above."""
    return torch.clamp(y, max=0).exp_().add_(torch.clamp(y, min=0))


class _EluSumNorm(torch.autograd.Function):
    """``elu_plus_one`` then (``normalize``) ``sum_norm`` with a hand-written backward. On CPU float32/float64
    tensors (numba installed) both directions are one compiled pass (:mod:`.common.compiled_feature_maps`);
    elsewhere ~10 PyTorch elementwise passes instead of autograd's ~25. The derivative of ``ELU(x) + 1`` is
    ``min(ELU(x) + 1, 1)``; that of ``y / s`` with ``s = sum(y) + eps`` is ``(g - <g, y / s>) / s``."""

    @staticmethod
    def forward(ctx, x: Tensor, eps: float, normalize: bool) -> Tensor:
        ctx.eps, ctx.normalize = eps, normalize
        ctx.compiled = compiled_feature_maps.usable(x)
        if ctx.compiled:
            ctx.save_for_backward(x)
            return compiled_feature_maps.elu_norm_forward(x, eps, normalize)
        y = _elu_plus_one(_upcast(x))
        # exp underflows to 0 below about -87 (fp32) or -17 (fp16): keep the smallest normal number instead
        tiny = torch.finfo(x.dtype).tiny
        y = y.to(x.dtype).clamp_min_(tiny) if y.dtype != x.dtype else y.clamp_min_(tiny)
        if not normalize:
            ctx.save_for_backward(y)
            return y
        yc = _upcast(y)
        s = yc.sum(-1, keepdim=True) + eps
        out = (yc / s).to(x.dtype)
        ctx.save_for_backward(y, out, s)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None]:
        if ctx.compiled:
            (x,) = ctx.saved_tensors
            return compiled_feature_maps.elu_norm_backward(x, g, ctx.eps, ctx.normalize), None, None
        if not ctx.normalize:
            (y,) = ctx.saved_tensors
            return (g * y.clamp(max=1)).to(g.dtype), None, None
        y, out, s = ctx.saved_tensors
        gc = _upcast(g)
        g_y = (gc - (gc * _upcast(out)).sum(-1, keepdim=True)).div_(s)
        return g_y.mul_(_upcast(y).clamp(max=1)).to(g.dtype), None, None


def elu_plus_one(x: Tensor) -> Tensor:
    """``ELU(x) + 1`` (> 0), computed in at least float32 as ``exp(min(x, 0)) + max(x, 0)`` (exactly ``exp(x)``
    below 0, where ``ELU(x) + 1`` would round) and clamped to the dtype's smallest normal number, so that it never
    rounds to 0."""
    return _EluSumNorm.apply(x, 0.0, False)


def sum_norm(x: Tensor, eps: float = 0.0) -> Tensor:
    """``x / (sum(x) + eps)`` over the last axis (the features must be positive)."""
    y = _upcast(x)
    return (y / (y.sum(-1, keepdim=True) + eps)).to(x.dtype)


def elu_sum_norm(x: Tensor, eps: float = 0.0) -> Tensor:
    """``sum_norm(elu_plus_one(x), eps)``: the Delta Net default (paper.md A.2), one autograd node."""
    return _EluSumNorm.apply(x, eps, True)


def softmax(x: Tensor) -> Tensor:
    """Exact softmax over the last axis, in at least float32."""
    return torch.softmax(_upcast(x), dim=-1).to(x.dtype)


def dpfp(x: Tensor, nu: int = 2) -> Tensor:
    """Deterministic parameter-free projection (Schlag et al. 2021): ``[..., d] -> [..., 2 d nu]``.

    ``r = [relu(x), relu(-x)]``; the output concatenates ``r * roll(r, i)`` for ``i = 1..nu``.
    """
    if not isinstance(nu, int) or nu < 1:
        raise ValueError(f"nu: expected a positive int, got {nu!r}")
    r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    if nu > r.shape[-1]:
        raise ValueError(f"nu: expected at most 2*d = {r.shape[-1]} rolls, got {nu}")
    return torch.cat([r * torch.roll(r, shifts=i, dims=-1) for i in range(1, nu + 1)], dim=-1)


def orthogonal_gaussian_projection(
    dim: int, num_features: int, *, generator: torch.Generator | None = None, device=None, dtype=None
) -> Tensor:
    """A ``[dim, num_features]`` Gaussian-orthogonal random matrix for FAVOR+ (blocks of orthogonal
    columns, each column rescaled to the norm of a Gaussian vector)."""
    blocks = []
    remaining = num_features
    while remaining > 0:
        g = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        qmat, _ = torch.linalg.qr(g)
        blocks.append(qmat[:, : min(dim, remaining)])
        remaining -= dim
    proj = torch.cat(blocks, dim=1)
    norms = torch.randn(dim, num_features, generator=generator, dtype=torch.float64).norm(dim=0)
    return (proj * norms).to(device=device, dtype=dtype or torch.get_default_dtype())


def favor_plus(x: Tensor, projection: Tensor) -> Tensor:
    """FAVOR+ positive random features (Performer), ``[..., d] -> [..., 2 m]`` with ``projection [d, m]``:
    ``(2m)^(-1/2) * ([exp(xP - |x|^2/2), exp(-xP - |x|^2/2)] + 1e-4)``."""
    if projection.dim() != 2 or projection.shape[0] != x.shape[-1]:
        raise ValueError(f"projection: expected shape [d, m] with d = {x.shape[-1]}, got {list(projection.shape)}")
    y = _upcast(x)
    xp = y @ projection.to(y.dtype)
    half_sq = 0.5 * (y * y).sum(-1, keepdim=True)
    m = projection.shape[1]
    feats = torch.cat([torch.exp(xp - half_sq), torch.exp(-xp - half_sq)], dim=-1) + 1e-4
    return (feats / math.sqrt(2 * m)).to(x.dtype)


FEATURE_MAPS = {
    "identity": lambda x: x,
    "elu1": elu_plus_one,
    "elu1_sum_norm": elu_sum_norm,
    "softmax": softmax,
}
