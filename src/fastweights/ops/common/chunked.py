"""Chunkwise-parallel form of the sum and delta rules (shared by ``sum_rule`` and ``delta_rule``).

Within a chunk of C steps starting from state ``S0 [K, V]`` (key-major, read ``o = S^T q``), the delta
updates ``S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T`` reduce to one unit-lower-triangular solve
(the UT/WY form, Yang et al. 2024):

    L U = diag(beta) (V - K S0),  L = I + strict_tril(diag(beta) K K^T)
    O     = Q S0 + tril(Q K^T) U          (the query reads the state *after* the write of its step)
    S_end = S0 + K^T U

so ``U = Uv - W S0`` with ``Uv = L^-1 diag(beta) V`` and ``W = L^-1 diag(beta) K``, both independent of the
state. The sum rule is the same with ``U = V``. Resets inside a chunk are handled with segment masks:
position ``i`` only sees positions ``j <= i`` of its own segment, and sees ``S0`` only if no reset happened
between the chunk start and ``i``. The last chunk is padded with zero keys/values/betas, which leaves the
state unchanged.

The backward pass is written by hand (flash-linear-attention's recipe): the forward keeps only its inputs and
the state at the start of every chunk; the backward recomputes the chunk-local matrices, runs the state
gradient backwards over the chunks (two small matmuls per chunk, like the forward) and obtains every input
gradient with batched matmuls over all chunks at once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .checks import check_chunk_size, check_float_tensor, check_qkv, check_reset, check_state_tensor, compute_dtype


def prepare_linear_inputs(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, initial_state: Tensor | None, reset: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Validate the inputs of ``sum_rule`` (``beta=None``) / ``delta_rule`` and cast them to the compute dtype."""
    B, T, H, K, V = check_qkv(q, k, v, beta) if beta is not None else check_qkv(q, k, v)
    reset = check_reset(reset, B, T, q.device)
    if initial_state is not None:
        initial_state = check_state_tensor("initial_state", initial_state, "[B, H, K, V]", (B, H, K, V), q.device)
    dt = compute_dtype(q.dtype)
    s0 = None if initial_state is None else initial_state.to(dt)
    return q.to(dt), k.to(dt), v.to(dt), None if beta is None else beta.to(dt), s0, reset


def linear_rule_chunked(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, initial_state: Tensor | None,
                        reset: Tensor | None, output_final_state: bool, chunk_size: int | None
                        ) -> tuple[Tensor, Tensor | None]:
    """The ``chunked`` implementation of ``sum_rule`` (``beta=None``) and ``delta_rule``; arguments as the ops."""
    in_dtype = check_float_tensor("q", q).dtype
    q, k, v, beta, s0, reset = prepare_linear_inputs(q, k, v, beta, initial_state, reset)
    C = resolve_chunk_size(chunk_size, q.shape[-1], delta=beta is not None)
    o, s = chunked_linear_recurrence(q, k, v, beta, s0, reset, C)
    return o.to(in_dtype), (s if output_final_state else None)


def resolve_chunk_size(chunk_size: int | None, head_dim: int, delta: bool) -> int:
    """The chunk length: ``chunk_size`` if given, else the CPU-tuned default.

    The chunk-local matrices cost ~C per step and head, the per-chunk state terms ~K*V/C, and the kept chunk
    states grow as K*V/C: measured with ``fastweights bench`` on a 2-core AVX-512 machine, C = K is best for the
    sum rule and C = K/2 for the delta rule (whose C x C triangular inverse costs extra), within [16, 64].
    """
    if chunk_size is not None:
        return check_chunk_size(chunk_size)
    return max(16, min(64, head_dim // 2 if delta else head_dim))


class _Chunks(NamedTuple):
    """Chunk-major views ``[B, H, N, C, *]`` of the inputs and the masks that encode resets."""

    q: Tensor
    k: Tensor
    v: Tensor
    beta: Tensor | None  # [B, H, N, C, 1]
    same: Tensor  # bool, j <= i within one segment: [C, C] or [B, 1, N, C, C]
    keep0: Tensor | None  # 1 where position i still sees the chunk's start state: [B, 1, N, C, 1]
    keep_end: Tensor | None  # 1 where the chunk has no reset, i.e. its start state survives: [B, 1, N, 1, 1]
    in_last: Tensor | None  # 1 for positions in the chunk's last segment (they write the end state)


def _to_chunks(x: Tensor, C: int) -> Tensor:
    """``[B, T, H, F] -> [B, H, N, C, F]``, zero-padding T up to a multiple of C."""
    B, T, H, Fdim = x.shape
    x = x.transpose(1, 2)
    pad = (-T) % C
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(B, H, (T + pad) // C, C, Fdim).contiguous()  # one copy here, not one per matmul


def _from_chunks(x: Tensor, T: int) -> Tensor:
    """Inverse of :func:`_to_chunks`: ``[B, H, N, C, F] -> [B, T, H, F]``."""
    B, H, N, C, Fdim = x.shape
    return x.reshape(B, H, N * C, Fdim)[:, :, :T].transpose(1, 2)


def _chunk(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, reset: Tensor | None, C: int) -> _Chunks:
    B, T = q.shape[:2]
    incl = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    bc = None if beta is None else _to_chunks(beta.unsqueeze(-1), C)
    if reset is None:
        return _Chunks(_to_chunks(q, C), _to_chunks(k, C), _to_chunks(v, C), bc, incl, None, None, None)
    N = -(-T // C)
    seg = F.pad(reset, (0, N * C - T)).view(B, N, C).cumsum(-1)  # resets in [chunk start, i]
    same = ((seg[..., :, None] == seg[..., None, :]) & incl)[:, None]
    keep0 = (seg == 0).to(q.dtype)[:, None, :, :, None]
    keep_end = (seg[..., -1] == 0).to(q.dtype)[:, None, :, None, None]
    in_last = (seg == seg[..., -1:]).to(q.dtype)[:, None, :, :, None]
    return _Chunks(_to_chunks(q, C), _to_chunks(k, C), _to_chunks(v, C), bc, same, keep0, keep_end, in_last)


def _mul(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


def _unit_lower_inverse(a: Tensor) -> Tensor:
    """``(I + a)^-1`` for strictly lower-triangular ``a [..., C, C]``, by 2x2 block recursion down to 16x16.

    Batched LAPACK solves are slow for many tiny systems; the recursion turns most of the work into bmm.
    """
    C = a.shape[-1]
    if C <= 16:
        lower = a.clone()
        lower.diagonal(dim1=-2, dim2=-1).fill_(1)
        eye = torch.eye(C, dtype=a.dtype, device=a.device).expand_as(lower)
        return torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
    h = C // 2
    top, bottom = _unit_lower_inverse(a[..., :h, :h]), _unit_lower_inverse(a[..., h:, h:])
    out = a.new_zeros(a.shape)
    out[..., :h, :h] = top
    out[..., h:, h:] = bottom
    out[..., h:, :h] = -(bottom @ (a[..., h:, :h] @ top))
    return out


def _strict(c: _Chunks) -> Tensor:
    C = c.q.shape[-2]
    return c.same & ~torch.eye(C, dtype=torch.bool, device=c.q.device)


def _intra(c: _Chunks) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """The state-independent chunk matrices: masked ``Q K^T``, ``L^-1`` and ``Uv``, ``W`` (None, V, None for
    the sum rule)."""
    qk = (c.q @ c.k.transpose(-1, -2)).masked_fill_(~c.same, 0)  # [B, H, N, C, C]
    if c.beta is None:
        return qk, None, c.v, None
    a = (c.beta * (c.k @ c.k.transpose(-1, -2))).masked_fill_(~_strict(c), 0)
    l_inv = _unit_lower_inverse(a)
    return qk, l_inv, l_inv @ (c.beta * c.v), l_inv @ _mul(c.beta * c.k, c.keep0)


class ChunkedLinearRecurrence(torch.autograd.Function):
    """Autograd function over ``(q, k, v, beta, initial_state)``; see :func:`chunked_linear_recurrence`."""

    @staticmethod
    def forward(ctx, q, k, v, beta, initial_state, reset, chunk_size):
        B, T, H, K = q.shape
        V = v.shape[-1]
        C = min(chunk_size, T)
        c = _chunk(q, k, v, beta, reset, C)
        N = c.q.shape[2]
        qk, _, u_v, w = _intra(c)
        state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state
        k_end_t = _mul(c.k, c.in_last).transpose(-1, -2)
        if w is None and c.keep_end is None:  # sum rule without resets: the chunk starts are a prefix sum
            increments = (k_end_t @ u_v).cumsum(2)  # [B, H, N, K, V]
            starts = torch.cat([state[:, :, None], state[:, :, None] + increments[:, :, :-1]], dim=2)
            state = state + increments[:, :, -1]
            u = u_v
        else:
            starts = q.new_empty(B, H, N, K, V)  # the state entering every chunk: all the backward keeps
            u = u_v if w is None else torch.empty_like(u_v)
            for n in range(N):
                starts[:, :, n] = state
                if w is not None:
                    torch.sub(u_v[:, :, n], w[:, :, n] @ state, out=u[:, :, n])
                carried = state if c.keep_end is None else state * c.keep_end[:, :, n]
                state = carried + k_end_t[:, :, n] @ u[:, :, n]
        o = _mul(c.q @ starts, c.keep0) + qk @ u
        ctx.save_for_backward(q, k, v, beta, starts, reset)
        ctx.chunk_size = C
        ctx.has_initial_state = initial_state is not None
        ctx.set_materialize_grads(False)
        return _from_chunks(o, T), state

    @staticmethod
    @once_differentiable
    def backward(ctx, d_o, d_final):
        q, k, v, beta, starts, reset = ctx.saved_tensors
        T = q.shape[1]
        B, H, N, K, V = starts.shape
        c = _chunk(q, k, v, beta, reset, ctx.chunk_size)
        qk, l_inv, u_v, w = _intra(c)
        u = u_v if w is None else u_v - w @ starts

        d_o = torch.zeros_like(c.v) if d_o is None else _to_chunks(d_o, ctx.chunk_size)
        d_u_from_o = qk.transpose(-1, -2) @ d_o  # [B, H, N, C, V]
        del qk  # the backward's peak memory decides the op's: free every chunk tensor once it is used
        d_start_from_o = _mul(c.q, c.keep0).transpose(-1, -2) @ d_o  # [B, H, N, K, V]
        k_end = _mul(c.k, c.in_last)
        d_state = starts.new_zeros(B, H, K, V) if d_final is None else d_final

        if w is None and c.keep_end is None:  # sum rule without resets: suffix sums
            suffix = d_start_from_o.flip(2).cumsum(2).flip(2)  # sum over chunks m >= n
            d_end = torch.cat([suffix[:, :, 1:], suffix.new_zeros(B, H, 1, K, V)], dim=2) + d_state[:, :, None]
            d_state = d_state + suffix[:, :, 0]
            d_u = d_u_from_o + k_end @ d_end
            del suffix
        else:  # the only sequential part: the state gradient, chunk by chunk from the end
            d_u = torch.empty_like(u)
            d_end = torch.empty_like(starts)  # gradient w.r.t. the state leaving chunk n
            for n in reversed(range(N)):
                d_end[:, :, n] = d_state
                torch.add(d_u_from_o[:, :, n], k_end[:, :, n] @ d_state, out=d_u[:, :, n])
                carried = d_state if c.keep_end is None else d_state * c.keep_end[:, :, n]
                d_state = d_start_from_o[:, :, n] + carried
                if w is not None:
                    d_state = d_state - w[:, :, n].transpose(-1, -2) @ d_u[:, :, n]

        del d_u_from_o, d_start_from_o, k_end
        d_qk = (d_o @ u.transpose(-1, -2)).masked_fill_(~c.same, 0)
        dq = _mul(d_o @ starts.transpose(-1, -2), c.keep0) + d_qk @ c.k
        del d_o
        dk = d_qk.transpose(-1, -2) @ c.q + _mul(u @ d_end.transpose(-1, -2), c.in_last)
        del d_qk, d_end, u
        if w is None:
            dv, dbeta = d_u, None
        else:  # through Uv = L^-1 diag(beta) V and W = L^-1 diag(beta) K (U = Uv - W S)
            l_inv_t = l_inv.transpose(-1, -2)
            d_rhs_v = l_inv_t @ d_u
            d_rhs_w = l_inv_t @ -(d_u @ starts.transpose(-1, -2))
            del d_u, l_inv_t, l_inv
            d_l = (d_rhs_v @ u_v.transpose(-1, -2)).add_(d_rhs_w @ w.transpose(-1, -2)).neg_()
            del u_v, w
            d_l.masked_fill_(~_strict(c), 0)
            d_rhs_w = _mul(d_rhs_w, c.keep0)
            m = c.beta * d_l  # gradient of K K^T (rows scaled by beta_i)
            dv = c.beta * d_rhs_v
            dk = dk + c.beta * d_rhs_w + m @ c.k + m.transpose(-1, -2) @ c.k
            dbeta = ((d_rhs_v * c.v).sum(-1) + (d_rhs_w * c.k).sum(-1)
                     + (d_l * (c.k @ c.k.transpose(-1, -2))).sum(-1))
            dbeta = _from_chunks(dbeta.unsqueeze(-1), T).squeeze(-1)
        d_initial = d_state if ctx.has_initial_state and ctx.needs_input_grad[4] else None
        return _from_chunks(dq, T), _from_chunks(dk, T), _from_chunks(dv, T), dbeta, d_initial, None, None


def chunked_linear_recurrence(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, initial_state: Tensor | None,
    reset: Tensor | None, chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """Sum rule (``beta is None``) or delta rule, chunkwise, with a hand-written backward.

    Shapes: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, ``beta [B, T, H]``, ``initial_state [B, H, K, V]``,
    ``reset`` bool ``[B, T]``. All float tensors share one dtype (the compute dtype).
    Returns ``o [B, T, H, V]`` and the final state ``[B, H, K, V]``.
    Saved for backward: the inputs and one ``[K, V]`` state per chunk and head.
    """
    if q.shape[1] == 1:  # one step (decoding): the recurrence itself is a handful of ops
        return _single_step(q[:, 0], k[:, 0], v[:, 0], None if beta is None else beta[:, 0], initial_state,
                            None if reset is None else reset[:, 0])
    return ChunkedLinearRecurrence.apply(q, k, v, beta, initial_state, reset, chunk_size)


def _single_step(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, state: Tensor | None,
                 reset: Tensor | None) -> tuple[Tensor, Tensor]:
    """``q, k [B, H, K]``, ``v [B, H, V]``, ``beta [B, H]``, ``state [B, H, K, V]``, ``reset [B]`` ->
    ``(o [B, 1, H, V], new state)``; plain autograd."""
    if state is None:
        new = k.unsqueeze(-1) * (v if beta is None else beta.unsqueeze(-1) * v).unsqueeze(-2)
    else:
        if reset is not None:
            state = state * (~reset).to(state.dtype)[:, None, None, None]
        u = v if beta is None else beta.unsqueeze(-1) * (v - (k.unsqueeze(-2) @ state).squeeze(-2))
        new = torch.addcmul(state, k.unsqueeze(-1), u.unsqueeze(-2))
    o = (q.unsqueeze(-2) @ new).squeeze(-2)
    return o.unsqueeze(1), new
