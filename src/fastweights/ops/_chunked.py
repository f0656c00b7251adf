"""Chunkwise-parallel form of the sum and delta rules (shared by ``sum_rule`` and ``delta_rule``).

Within a chunk of C steps starting from state ``S0 [K, V]`` (key-major, read ``o = S^T q``), the delta
updates ``S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T`` reduce to one unit-lower-triangular solve
(the UT/WY form, Yang et al. 2024):

    (I + strict_tril(diag(beta) K K^T)) U = diag(beta) (V - K S0)
    O     = Q S0 + tril(Q K^T) U          (the query reads the state *after* the write of its step)
    S_end = S0 + K^T U

The sum rule is the same with ``U = V``. Resets inside a chunk are handled with segment masks: position
``i`` only sees positions ``j <= i`` of its own segment, and sees ``S0`` only if no reset happened between
the chunk start and ``i``. The last chunk is padded with zero keys/values/betas, which leaves the state
unchanged. Autograd through this form keeps O(T (C + D)) activations plus one state per chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def chunked_linear_recurrence(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, initial_state: Tensor | None,
    reset: Tensor | None, chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """Sum rule (``beta is None``) or delta rule, chunkwise.

    Shapes: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, ``beta [B, T, H]``, ``initial_state [B, H, K, V]``,
    ``reset`` bool ``[B, T]``. All float tensors share one dtype (the compute dtype).
    Returns ``o [B, T, H, V]`` and the final state ``[B, H, K, V]``.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = min(chunk_size, T)
    pad = (-T) % C
    N = (T + pad) // C

    def to_chunks(x: Tensor) -> Tensor:  # [B, T, H, *] -> [B, H, N, C, *]
        x = x.transpose(1, 2)
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        return x.reshape(B, H, N, C, x.shape[-1])

    qc, kc, vc = to_chunks(q), to_chunks(k), to_chunks(v)
    dtype, device = q.dtype, q.device
    incl = torch.ones(C, C, dtype=torch.bool, device=device).tril()
    if reset is None:
        same = incl  # [C, C]
        keep0 = None  # every position sees S0
        keep_end = None
        in_last = None
    else:
        r = F.pad(reset, (0, pad)).view(B, N, C)
        seg = r.cumsum(-1)  # number of resets in [chunk start, i]
        same = (seg[..., :, None] == seg[..., None, :]) & incl  # [B, N, C, C]
        same = same[:, None]  # broadcast over H
        keep0 = (seg == 0).to(dtype)[:, None, :, :, None]  # [B, 1, N, C, 1]
        keep_end = (seg[..., -1] == 0).to(dtype)[:, None, :, None, None]  # [B, 1, N, 1, 1]
        in_last = (seg == seg[..., -1:]).to(dtype)[:, None, :, :, None]  # [B, 1, N, C, 1]

    qk = (qc @ kc.transpose(-1, -2)).masked_fill(~same, 0)  # [B, H, N, C, C]
    if beta is None:
        u_from_v, w = vc, kc  # U = V - 0: the sum rule never reads the old value
    else:
        bc = to_chunks(beta.unsqueeze(-1))  # [B, H, N, C, 1]
        strict = same & ~torch.eye(C, dtype=torch.bool, device=device)
        a = (bc * (kc @ kc.transpose(-1, -2))).masked_fill(~strict, 0)
        eye = torch.eye(C, dtype=dtype, device=device)
        bk = bc * kc if keep0 is None else bc * kc * keep0
        rhs = torch.cat([bc * vc, bk], dim=-1)
        sol = torch.linalg.solve_triangular(eye + a, rhs, upper=False, unitriangular=True)
        u_from_v, w = sol[..., :V], sol[..., V:]  # U = u_from_v - w @ S0
    k_end = kc if in_last is None else kc * in_last

    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state
    outputs = []
    for n in range(N):
        qn = qc[:, :, n]
        if beta is None:
            u = u_from_v[:, :, n]
        else:
            u = u_from_v[:, :, n] - w[:, :, n] @ state
        q_s0 = qn @ state
        if keep0 is not None:
            q_s0 = q_s0 * keep0[:, :, n]
        outputs.append(q_s0 + qk[:, :, n] @ u)
        carried = state if keep_end is None else state * keep_end[:, :, n]
        state = carried + k_end[:, :, n].transpose(-1, -2) @ u
    o = torch.stack(outputs, dim=2).reshape(B, H, N * C, V)[:, :, :T]
    return o.transpose(1, 2), state
