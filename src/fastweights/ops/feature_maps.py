"""Feature maps applied to queries and keys (paper.md A.2, A.10).

All maps act on the last axis. They compute in at least float32 and cast back, so that half-precision
inputs keep strictly positive features (a zero key would make sum normalisation divide by zero).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def elu_plus_one(x: Tensor) -> Tensor:
    """``ELU(x) + 1`` (> 0), computed as ``where(x > 0, x + 1, exp(x))`` in at least float32 and clamped to the
    dtype's smallest normal number, so that it never rounds to 0."""
    y = _upcast(x)
    y = torch.where(y > 0, y + 1, torch.exp(torch.clamp(y, max=0)))
    # exp underflows to 0 below about -87 (fp32) or -17 (fp16): keep the smallest normal number instead
    return y.to(x.dtype).clamp_min(torch.finfo(x.dtype).tiny)


def sum_norm(x: Tensor, eps: float = 0.0) -> Tensor:
    """``x / (sum(x) + eps)`` over the last axis (the features must be positive)."""
    y = _upcast(x)
    return (y / (y.sum(-1, keepdim=True) + eps)).to(x.dtype)


def elu_sum_norm(x: Tensor, eps: float = 0.0) -> Tensor:
    """``sum_norm(elu_plus_one(x), eps)``: the Delta Net default (paper.md A.2)."""
    return sum_norm(elu_plus_one(x), eps)


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
