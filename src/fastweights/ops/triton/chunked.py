"""Triton kernels of the chunkwise-parallel sum and delta rules (the UT/WY form of ``ops/common/chunked.py``).

Per chunk of ``C`` steps starting from the state ``S0 [K, V]`` (key-major, read ``o = S^T q``)::

    A     = strict_tril(diag(beta) K K^T)   (within one reset segment)     T = (I + A)^-1  (forward substitution)
    W     = T diag(beta * keep0) K          Uv = T diag(beta) V            (state-independent: parallel)
    U     = Uv - W S0                       (sum rule: U = V)
    O     = keep0 * Q S0 + tril_same(Q K^T) U
    S_end = keep_end * S0 + (K * in_last)^T U

Kernels (one program per (b, h) and chunk unless said otherwise; ``N`` chunks, V split into blocks of ``BV``):

forward   ``_prep_kernel``        T, W, Uv                                   (delta rule only)
          ``_fwd_state_kernel``   the sequential pass over the chunks, per (V-block, b, h): stores the state
                                  entering every chunk (kept for the backward) and U; the final state
          ``_fwd_output_kernel``  O, per (V-block, chunk, b, h)
backward  ``_prep_kernel``        W again, from the saved T                  (delta rule only)
          ``_bwd_local_kernel``   dU from the outputs, ``tril_same(QK^T)^T dO``
          ``_bwd_state_kernel``   the reverse pass over the chunks: the gradient of the state leaving every chunk,
                                  the full dU and the initial-state gradient
          ``_bwd_inputs_kernel``  dq, dk, dv, dbeta per chunk (loops over the V-blocks)

The backward follows the hand-written backward of ``ops/common/chunked.py`` line by line (same variable names). Resets
are segment masks (:func:`chunk_segments`); the padded tail of the last chunk is loaded as zeros (zero keys,
values and betas leave the state unchanged). Saved for the backward: the inputs, T and one state per chunk.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..common.checks import check_chunk_size, check_float_tensor, check_qkv, check_reset, check_state_tensor
from ._common import chunk_segments, device_fn, dot_config, keep_factor, mm, mm_in, next_pow2, warps_for
from ._support import check_runnable

DEFAULT_CHUNK = 64


# ------------------------------------------------------------------------------------------------- kernels


@device_fn
def unit_lower_inverse(A, C: tl.constexpr):
    """``(I + A)^-1`` for a strictly lower-triangular ``A [C, C]`` by forward substitution, row by row:
    ``T[i] = e_i - sum_{j < i} A[i, j] T[j]``."""
    rows = tl.arange(0, C)
    eye = tl.where(rows[:, None] == rows[None, :], 1.0, 0.0)
    Tm = eye
    for i in range(1, C):
        a_i = tl.sum(tl.where(rows[:, None] == i, A, 0.0), 0)  # row i of A, indexed by the column j
        new = tl.sum(a_i[:, None] * Tm, 0)  # sum_j A[i, j] T[j, :]
        Tm = tl.where(rows[:, None] == i, eye - new[None, :], Tm)
    return Tm


@device_fn
def unit_lower_inverse_blocked(A, C: tl.constexpr, MERGES: tl.constexpr, PREC: tl.constexpr):
    """``(I + A)^-1`` with matrix products (tensor cores), for ``C = 16 * 2**MERGES``.

    First the inverses of the 16 x 16 diagonal blocks, by forward substitution run for the i-th row of every block
    at once (15 products ``rows_i(A_blockdiag) @ T``); then ``MERGES`` doublings of the block size: with ``T_b``
    block-diagonal and ``M`` the lower-left ``b x b`` parts of ``A``'s ``2b``-blocks, ``T_2b = T_b - T_b M T_b``
    (the inverse of ``[[I + A11, 0], [A21, I + A22]]`` is ``[[T1, 0], [-T2 A21 T1, T2]]``).
    """
    rows = tl.arange(0, C)
    eye = tl.where(rows[:, None] == rows[None, :], 1.0, 0.0)
    Ad = tl.where((rows // 16)[:, None] == (rows // 16)[None, :], A, 0.0)
    Tm = eye
    for i in range(1, 16):
        sel = (rows % 16) == i
        Tm = tl.where(sel[:, None], eye - mm(tl.where(sel[:, None], Ad, 0.0), Tm, PREC), Tm)
    for s in tl.static_range(MERGES):
        rb = rows // (16 << s)
        M = tl.where(((rb % 2) == 1)[:, None] & (rb[None, :] == rb[:, None] - 1), A, 0.0)
        Tm = Tm - mm(mm(Tm, M, PREC), Tm, PREC)
    return Tm


@triton.jit
def _prep_kernel(k_ptr, v_ptr, beta_ptr, reset_ptr, tm_ptr, w_ptr, uv_ptr, T, H, K, V, N,
                 C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_RESET: tl.constexpr,
                 LOAD_T: tl.constexpr, STORE_UV: tl.constexpr, HALF_DOT: tl.constexpr, PREC: tl.constexpr,
                 MERGES: tl.constexpr):
    """T, W (and Uv) of one chunk; ``MERGES`` >= 0 selects :func:`unit_lower_inverse_blocked`, -1 the row-by-row
    substitution."""
    n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    t0 = n * C
    offs = tl.arange(0, C)
    ck = tl.arange(0, BK)
    tmask = (t0 + offs) < T
    row = ((b * T + t0 + offs) * H + h).to(tl.int64)
    kt = tl.load(k_ptr + row[:, None] * K + ck[None, :], mask=tmask[:, None] & (ck[None, :] < K), other=0.0)
    beta = tl.load(beta_ptr + row, mask=tmask, other=0.0).to(tl.float32)
    seg, _total = chunk_segments(reset_ptr, b, t0, T, C, HAS_RESET)
    cb = (bh * N + n).to(tl.int64)
    tm_ptrs = tm_ptr + cb * C * C + offs[:, None] * C + offs[None, :]
    if LOAD_T:
        Tm = tl.load(tm_ptrs)
    else:
        kk = mm_in(kt, tl.trans(kt), HALF_DOT, PREC)
        strict = (seg[:, None] == seg[None, :]) & (offs[:, None] > offs[None, :])
        A = tl.where(strict, beta[:, None] * kk, 0.0)
        if MERGES >= 0:
            Tm = unit_lower_inverse_blocked(A, C, MERGES, PREC)
        else:
            Tm = unit_lower_inverse(A, C)
        tl.store(tm_ptrs, Tm)
    bk = kt.to(tl.float32) * tl.where(seg == 0, beta, 0.0)[:, None]
    W = mm(Tm, bk, PREC)
    tl.store(w_ptr + cb * C * K + offs[:, None] * K + ck[None, :], W, mask=ck[None, :] < K)
    if STORE_UV:
        for iv in range(0, tl.cdiv(V, BV)):
            cv = iv * BV + tl.arange(0, BV)
            vt = tl.load(v_ptr + row[:, None] * V + cv[None, :], mask=tmask[:, None] & (cv[None, :] < V), other=0.0)
            Uv = mm(Tm, vt.to(tl.float32) * beta[:, None], PREC)
            tl.store(uv_ptr + cb * C * V + offs[:, None] * V + cv[None, :], Uv, mask=cv[None, :] < V)


@triton.jit
def _fwd_state_kernel(k_ptr, v_ptr, w_ptr, uv_ptr, u_ptr, s0_ptr, starts_ptr, st_ptr, reset_ptr, T, H, K, V, N,
                      C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DELTA: tl.constexpr,
                      HAS_RESET: tl.constexpr, HAS_INIT: tl.constexpr, PREC: tl.constexpr):
    iv = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs = tl.arange(0, C)
    ck = tl.arange(0, BK)
    cv = iv * BV + tl.arange(0, BV)
    kvmask = (ck[:, None] < K) & (cv[None, :] < V)
    kv_off = ck[:, None] * V + cv[None, :]
    sbase = bh.to(tl.int64) * K * V
    if HAS_INIT:
        S = tl.load(s0_ptr + sbase + kv_off, mask=kvmask, other=0.0)
    else:
        S = tl.zeros([BK, BV], dtype=tl.float32)
    for n in range(N):
        cb = (bh * N + n).to(tl.int64)
        tl.store(starts_ptr + cb * K * V + kv_off, S, mask=kvmask)
        t0 = n * C
        tmask = (t0 + offs) < T
        row = ((b * T + t0 + offs) * H + h).to(tl.int64)
        seg, total = chunk_segments(reset_ptr, b, t0, T, C, HAS_RESET)
        kt = tl.load(k_ptr + row[:, None] * K + ck[None, :], mask=tmask[:, None] & (ck[None, :] < K), other=0.0)
        cv_off = offs[:, None] * V + cv[None, :]
        if DELTA:
            W = tl.load(w_ptr + cb * C * K + offs[:, None] * K + ck[None, :], mask=ck[None, :] < K, other=0.0)
            Uv = tl.load(uv_ptr + cb * C * V + cv_off, mask=cv[None, :] < V, other=0.0)
            U = Uv - mm(W, S, PREC)
            tl.store(u_ptr + cb * C * V + cv_off, U, mask=cv[None, :] < V)
        else:
            U = tl.load(v_ptr + row[:, None] * V + cv[None, :], mask=tmask[:, None] & (cv[None, :] < V),
                        other=0.0).to(tl.float32)
        k_end = tl.where((seg == total)[:, None], kt.to(tl.float32), 0.0)
        S = tl.where(total == 0, S, 0.0) + mm(tl.trans(k_end), U, PREC)
    tl.store(st_ptr + sbase + kv_off, S, mask=kvmask)


@device_fn
def _chunk_tiles(q_ptr, k_ptr, reset_ptr, b, h, t0, T, H, K, C: tl.constexpr, BK: tl.constexpr,
                 HAS_RESET: tl.constexpr):
    """What the intra-chunk kernels read first: the chunk's rows of ``[B * T * H]`` (int64), their in-sequence mask,
    the queries and keys ``[C, BK]``, the segment ids and their total (:func:`chunk_segments`), and the mask
    ``same [C, C]`` of the (query i, key j) pairs that see each other (j <= i in one segment)."""
    offs = tl.arange(0, C)
    ck = tl.arange(0, BK)
    tmask = (t0 + offs) < T
    row = ((b * T + t0 + offs) * H + h).to(tl.int64)
    kmask = tmask[:, None] & (ck[None, :] < K)
    qt = tl.load(q_ptr + row[:, None] * K + ck[None, :], mask=kmask, other=0.0)
    kt = tl.load(k_ptr + row[:, None] * K + ck[None, :], mask=kmask, other=0.0)
    seg, total = chunk_segments(reset_ptr, b, t0, T, C, HAS_RESET)
    same = (seg[:, None] == seg[None, :]) & (offs[:, None] >= offs[None, :])
    return row, tmask, qt, kt, seg, total, same


@triton.jit
def _fwd_output_kernel(q_ptr, k_ptr, v_ptr, u_ptr, starts_ptr, o_ptr, reset_ptr, T, H, K, V, N,
                       C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DELTA: tl.constexpr,
                       HAS_RESET: tl.constexpr, HALF_DOT: tl.constexpr, PREC: tl.constexpr):
    iv = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2)
    b = bh // H
    h = bh % H
    offs = tl.arange(0, C)
    ck = tl.arange(0, BK)
    cv = iv * BV + tl.arange(0, BV)
    row, tmask, qt, kt, seg, _total, same = _chunk_tiles(q_ptr, k_ptr, reset_ptr, b, h, n * C, T, H, K, C, BK,
                                                         HAS_RESET)
    qk = tl.where(same, mm_in(qt, tl.trans(kt), HALF_DOT, PREC), 0.0)
    vmask = tmask[:, None] & (cv[None, :] < V)
    cb = (bh * N + n).to(tl.int64)
    S = tl.load(starts_ptr + cb * K * V + ck[:, None] * V + cv[None, :],
                mask=(ck[:, None] < K) & (cv[None, :] < V), other=0.0)
    if DELTA:
        U = tl.load(u_ptr + cb * C * V + offs[:, None] * V + cv[None, :], mask=cv[None, :] < V, other=0.0)
    else:
        U = tl.load(v_ptr + row[:, None] * V + cv[None, :], mask=vmask, other=0.0).to(tl.float32)
    o = tl.where((seg == 0)[:, None], mm(qt, S, PREC), 0.0) + mm(qk, U, PREC)
    tl.store(o_ptr + row[:, None] * V + cv[None, :], o.to(o_ptr.dtype.element_ty), mask=vmask)


@triton.jit
def _bwd_local_kernel(q_ptr, k_ptr, do_ptr, du_ptr, reset_ptr, T, H, K, V, N,
                      C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_RESET: tl.constexpr,
                      HALF_DOT: tl.constexpr, PREC: tl.constexpr):
    iv = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2)
    b = bh // H
    h = bh % H
    offs = tl.arange(0, C)
    cv = iv * BV + tl.arange(0, BV)
    row, tmask, qt, kt, _seg, _total, same = _chunk_tiles(q_ptr, k_ptr, reset_ptr, b, h, n * C, T, H, K, C, BK,
                                                          HAS_RESET)
    qk = tl.where(same, mm_in(qt, tl.trans(kt), HALF_DOT, PREC), 0.0)
    do = tl.load(do_ptr + row[:, None] * V + cv[None, :], mask=tmask[:, None] & (cv[None, :] < V), other=0.0)
    du = mm(tl.trans(qk), do, PREC)
    cb = (bh * N + n).to(tl.int64)
    tl.store(du_ptr + cb * C * V + offs[:, None] * V + cv[None, :], du, mask=cv[None, :] < V)


@triton.jit
def _bwd_state_kernel(q_ptr, k_ptr, do_ptr, w_ptr, du_ptr, dend_ptr, dst_ptr, ds0_ptr, reset_ptr, T, H, K, V, N,
                      C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DELTA: tl.constexpr,
                      HAS_RESET: tl.constexpr, HAS_DFINAL: tl.constexpr, HAS_INIT: tl.constexpr,
                      PREC: tl.constexpr):
    iv = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs = tl.arange(0, C)
    ck = tl.arange(0, BK)
    cv = iv * BV + tl.arange(0, BV)
    kvmask = (ck[:, None] < K) & (cv[None, :] < V)
    kv_off = ck[:, None] * V + cv[None, :]
    sbase = bh.to(tl.int64) * K * V
    if HAS_DFINAL:
        dS = tl.load(dst_ptr + sbase + kv_off, mask=kvmask, other=0.0)
    else:
        dS = tl.zeros([BK, BV], dtype=tl.float32)
    for i in range(N):
        n = N - 1 - i
        cb = (bh * N + n).to(tl.int64)
        tl.store(dend_ptr + cb * K * V + kv_off, dS, mask=kvmask)  # the gradient of the state leaving chunk n
        t0 = n * C
        tmask = (t0 + offs) < T
        row = ((b * T + t0 + offs) * H + h).to(tl.int64)
        kmask = tmask[:, None] & (ck[None, :] < K)
        seg, total = chunk_segments(reset_ptr, b, t0, T, C, HAS_RESET)
        qt = tl.load(q_ptr + row[:, None] * K + ck[None, :], mask=kmask, other=0.0).to(tl.float32)
        kt = tl.load(k_ptr + row[:, None] * K + ck[None, :], mask=kmask, other=0.0).to(tl.float32)
        do = tl.load(do_ptr + row[:, None] * V + cv[None, :], mask=tmask[:, None] & (cv[None, :] < V), other=0.0)
        cv_off = cb * C * V + offs[:, None] * V + cv[None, :]
        k_end = tl.where((seg == total)[:, None], kt, 0.0)
        du = tl.load(du_ptr + cv_off, mask=cv[None, :] < V, other=0.0) + mm(k_end, dS, PREC)
        tl.store(du_ptr + cv_off, du, mask=cv[None, :] < V)
        q0 = tl.where((seg == 0)[:, None], qt, 0.0)
        dS_new = mm(tl.trans(q0), do, PREC) + tl.where(total == 0, dS, 0.0)
        if DELTA:
            W = tl.load(w_ptr + cb * C * K + offs[:, None] * K + ck[None, :], mask=ck[None, :] < K, other=0.0)
            dS_new -= mm(tl.trans(W), du, PREC)
        dS = dS_new
    if HAS_INIT:
        tl.store(ds0_ptr + sbase + kv_off, dS, mask=kvmask)


@triton.jit
def _bwd_inputs_kernel(q_ptr, k_ptr, v_ptr, beta_ptr, tm_ptr, starts_ptr, dend_ptr, du_ptr, do_ptr,
                       dq_ptr, dk_ptr, dv_ptr, dbeta_ptr, reset_ptr, T, H, K, V, N,
                       C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DELTA: tl.constexpr,
                       HAS_RESET: tl.constexpr, HALF_DOT: tl.constexpr, PREC: tl.constexpr):
    n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs = tl.arange(0, C)
    ck = tl.arange(0, BK)
    row, tmask, qt, kt, seg, total, same = _chunk_tiles(q_ptr, k_ptr, reset_ptr, b, h, n * C, T, H, K, C, BK,
                                                        HAS_RESET)
    kmask = tmask[:, None] & (ck[None, :] < K)
    qf = qt.to(tl.float32)
    kf = kt.to(tl.float32)
    keep0 = seg == 0
    in_last = seg == total
    cb = (bh * N + n).to(tl.int64)
    if DELTA:
        beta = tl.load(beta_ptr + row, mask=tmask, other=0.0).to(tl.float32)
        Tm = tl.load(tm_ptr + cb * C * C + offs[:, None] * C + offs[None, :])
        W = mm(Tm, kf * tl.where(keep0, beta, 0.0)[:, None], PREC)
        d_l = tl.zeros([C, C], dtype=tl.float32)  # gradient of L^-1's argument, accumulated over V-blocks
        tmp = tl.zeros([C, BK], dtype=tl.float32)  # dU S^T
        dbeta = tl.zeros([C], dtype=tl.float32)
    d_qk = tl.zeros([C, C], dtype=tl.float32)
    dq_acc = tl.zeros([C, BK], dtype=tl.float32)
    dk_acc = tl.zeros([C, BK], dtype=tl.float32)
    for iv in range(0, tl.cdiv(V, BV)):
        cv = iv * BV + tl.arange(0, BV)
        vmask = tmask[:, None] & (cv[None, :] < V)
        kvmask = (ck[:, None] < K) & (cv[None, :] < V)
        kv_off = cb * K * V + ck[:, None] * V + cv[None, :]
        cv_off = cb * C * V + offs[:, None] * V + cv[None, :]
        do = tl.load(do_ptr + row[:, None] * V + cv[None, :], mask=vmask, other=0.0).to(tl.float32)
        S = tl.load(starts_ptr + kv_off, mask=kvmask, other=0.0)
        dE = tl.load(dend_ptr + kv_off, mask=kvmask, other=0.0)
        du = tl.load(du_ptr + cv_off, mask=cv[None, :] < V, other=0.0)
        vf = tl.load(v_ptr + row[:, None] * V + cv[None, :], mask=vmask, other=0.0).to(tl.float32)
        if DELTA:
            Uv = mm(Tm, vf * beta[:, None], PREC)
            U = Uv - mm(W, S, PREC)
            d_rhs_v = mm(tl.trans(Tm), du, PREC)
            tl.store(dv_ptr + row[:, None] * V + cv[None, :], (beta[:, None] * d_rhs_v).to(dv_ptr.dtype.element_ty),
                     mask=vmask)
            dbeta += tl.sum(d_rhs_v * vf, 1)
            d_l += mm(d_rhs_v, tl.trans(Uv), PREC)
            tmp += mm(du, tl.trans(S), PREC)
        else:
            U = vf
            tl.store(dv_ptr + row[:, None] * V + cv[None, :], du.to(dv_ptr.dtype.element_ty), mask=vmask)
        d_qk += mm(do, tl.trans(U), PREC)
        dq_acc += mm(do, tl.trans(S), PREC)
        dk_acc += mm(U, tl.trans(dE), PREC)
    d_qk = tl.where(same, d_qk, 0.0)
    dq = tl.where(keep0[:, None], dq_acc, 0.0) + mm(d_qk, kf, PREC)
    dk = mm(tl.trans(d_qk), qf, PREC) + tl.where(in_last[:, None], dk_acc, 0.0)
    if DELTA:
        d_rhs_w = -mm(tl.trans(Tm), tmp, PREC)
        strict = same & (offs[:, None] > offs[None, :])
        d_l = tl.where(strict, -(d_l + mm(d_rhs_w, tl.trans(W), PREC)), 0.0)
        d_rhs_w = tl.where(keep0[:, None], d_rhs_w, 0.0)
        m = beta[:, None] * d_l  # the gradient of K K^T, rows scaled by beta_i
        dk += beta[:, None] * d_rhs_w + mm(m, kf, PREC) + mm(tl.trans(m), kf, PREC)
        kk = mm_in(kt, tl.trans(kt), HALF_DOT, PREC)
        dbeta += tl.sum(d_rhs_w * kf, 1) + tl.sum(d_l * kk, 1)
        tl.store(dbeta_ptr + row, dbeta.to(dbeta_ptr.dtype.element_ty), mask=tmask)
    tl.store(dq_ptr + row[:, None] * K + ck[None, :], dq.to(dq_ptr.dtype.element_ty), mask=kmask)
    tl.store(dk_ptr + row[:, None] * K + ck[None, :], dk.to(dk_ptr.dtype.element_ty), mask=kmask)


@triton.jit
def _step_kernel(q_ptr, k_ptr, v_ptr, beta_ptr, s0_ptr, o_ptr, s_ptr, reset_ptr, H, K, V,
                 BK: tl.constexpr, BV: tl.constexpr, DELTA: tl.constexpr, HAS_INIT: tl.constexpr,
                 HAS_RESET: tl.constexpr):
    """One step (decoding, T = 1) of one (V-block, b, h): ``S <- m S + k u^T``, ``o = S^T q``."""
    iv = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    ck = tl.arange(0, BK)
    cv = iv * BV + tl.arange(0, BV)
    kvmask = (ck[:, None] < K) & (cv[None, :] < V)
    kv_off = bh.to(tl.int64) * K * V + ck[:, None] * V + cv[None, :]
    qv = tl.load(q_ptr + bh * K + ck, mask=ck < K, other=0.0).to(tl.float32)
    kv = tl.load(k_ptr + bh * K + ck, mask=ck < K, other=0.0).to(tl.float32)
    vv = tl.load(v_ptr + bh * V + cv, mask=cv < V, other=0.0).to(tl.float32)
    if HAS_INIT:
        S = tl.load(s0_ptr + kv_off, mask=kvmask, other=0.0) * keep_factor(reset_ptr, b, 0, 1, HAS_RESET)
    else:
        S = tl.zeros([BK, BV], dtype=tl.float32)
    if DELTA:
        u = tl.load(beta_ptr + bh).to(tl.float32) * (vv - tl.sum(S * kv[:, None], 0))
    else:
        u = vv
    S = S + kv[:, None] * u[None, :]
    tl.store(o_ptr + bh * V + cv, tl.sum(S * qv[:, None], 0).to(o_ptr.dtype.element_ty), mask=cv < V)
    tl.store(s_ptr + kv_off, S, mask=kvmask)


# ------------------------------------------------------------------------------------------------ launchers


def _blocks(K: int, V: int) -> tuple[int, int]:
    return next_pow2(K), min(64, next_pow2(V))


def _state_block(BV: int) -> int:
    """V-block of the two sequential kernels: narrower than the parallel kernels' blocks, so that B * H * V / BVS
    programs keep more multiprocessors busy during the walk over the chunks."""
    return min(32, BV)


# None: the blocked inverse for half-precision inputs on a GPU (TF32 products), the row-by-row substitution otherwise
# (exact float32 on the CUDA cores; and under the interpreter); True/False force one (the tests cover both)
BLOCKED_INVERSE: bool | None = None


def _merges(C: int, half_dot: bool) -> int:
    blocked = (half_dot and C >= 32) if BLOCKED_INVERSE is None else BLOCKED_INVERSE
    return (C // 16).bit_length() - 1 if blocked else -1


def _warps(C: int, BK: int, BV: int) -> int:
    return warps_for(C * max(BK, BV) * 2)


def chunked_forward(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, s0: Tensor | None, reset: Tensor | None,
                    C: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """``(o [B, T, H, V] in q's dtype, final state fp32, T matrices or None, chunk-start states)``.

    All tensors contiguous; ``reset`` int32 ``[B, T]`` or None; ``s0`` fp32 ``[B, H, K, V]`` or None.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = triton.cdiv(T, C)
    BK, BV = _blocks(K, V)
    half_dot, prec = dot_config(q.dtype)
    delta = beta is not None
    f32 = {"dtype": torch.float32, "device": q.device}
    dummy = q  # never read: behind a constexpr flag
    reset_arg = reset if reset is not None else dummy
    nw = _warps(C, BK, BV)
    tm = w = uv = u = None
    if delta:
        tm = torch.empty(B, H, N, C, C, **f32)
        w = torch.empty(B, H, N, C, K, **f32)
        uv = torch.empty(B, H, N, C, V, **f32)
        u = torch.empty(B, H, N, C, V, **f32)
        _prep_kernel[(N, B * H)](k, v, beta, reset_arg, tm, w, uv, T, H, K, V, N, C=C, BK=BK, BV=BV,
                                 HAS_RESET=reset is not None, LOAD_T=False, STORE_UV=True, HALF_DOT=half_dot,
                                 PREC=prec, MERGES=_merges(C, half_dot), num_warps=nw)
    starts = torch.empty(B, H, N, K, V, **f32)
    final = torch.empty(B, H, K, V, **f32)
    nv = triton.cdiv(V, BV)
    BVS = _state_block(BV)
    _fwd_state_kernel[(triton.cdiv(V, BVS), B * H)](
        k, v, w if delta else dummy, uv if delta else dummy, u if delta else dummy, s0 if s0 is not None else dummy,
        starts, final, reset_arg, T, H, K, V, N, C=C, BK=BK, BV=BVS, DELTA=delta, HAS_RESET=reset is not None,
        HAS_INIT=s0 is not None, PREC=prec, num_warps=_warps(C, BK, BVS))
    o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
    _fwd_output_kernel[(nv, N, B * H)](q, k, v, u if delta else dummy, starts, o, reset_arg, T, H, K, V, N,
                                       C=C, BK=BK, BV=BV, DELTA=delta, HAS_RESET=reset is not None,
                                       HALF_DOT=half_dot, PREC=prec, num_warps=nw)
    return o, final, tm, starts


def chunked_backward(q, k, v, beta, reset, tm, starts, d_o, d_final, has_init: bool, C: int):
    """Gradients ``(dq, dk, dv, dbeta or None, d_initial or None)`` of :func:`chunked_forward`."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = triton.cdiv(T, C)
    BK, BV = _blocks(K, V)
    nv = triton.cdiv(V, BV)
    half_dot, prec = dot_config(q.dtype)
    delta = beta is not None
    f32 = {"dtype": torch.float32, "device": q.device}
    dummy = q
    reset_arg = reset if reset is not None else dummy
    has_reset = reset is not None
    nw = _warps(C, BK, BV)
    d_o = torch.zeros_like(v) if d_o is None else d_o.contiguous()
    w = None
    if delta:
        w = torch.empty(B, H, N, C, K, **f32)
        _prep_kernel[(N, B * H)](k, v, beta, reset_arg, tm, w, dummy, T, H, K, V, N, C=C, BK=BK, BV=BV,
                                 HAS_RESET=has_reset, LOAD_T=True, STORE_UV=False, HALF_DOT=half_dot, PREC=prec,
                                 MERGES=-1, num_warps=nw)
    du = torch.empty(B, H, N, C, V, **f32)
    _bwd_local_kernel[(nv, N, B * H)](q, k, d_o, du, reset_arg, T, H, K, V, N, C=C, BK=BK, BV=BV,
                                      HAS_RESET=has_reset, HALF_DOT=half_dot, PREC=prec, num_warps=nw)
    dend = torch.empty_like(starts)
    ds0 = torch.empty(B, H, K, V, **f32) if has_init else None
    d_final = None if d_final is None else d_final.to(torch.float32).contiguous()
    BVS = _state_block(BV)
    _bwd_state_kernel[(triton.cdiv(V, BVS), B * H)](
        q, k, d_o, w if delta else dummy, du, dend, d_final if d_final is not None else dummy,
        ds0 if has_init else dummy, reset_arg, T, H, K, V, N, C=C, BK=BK, BV=BVS, DELTA=delta, HAS_RESET=has_reset,
        HAS_DFINAL=d_final is not None, HAS_INIT=has_init, PREC=prec, num_warps=_warps(C, BK, BVS))
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dbeta = torch.empty_like(beta) if delta else None
    _bwd_inputs_kernel[(N, B * H)](q, k, v, beta if delta else dummy, tm if delta else dummy, starts, dend, du, d_o,
                                   dq, dk, dv, dbeta if delta else dummy, reset_arg, T, H, K, V, N, C=C, BK=BK,
                                   BV=BV, DELTA=delta, HAS_RESET=has_reset, HALF_DOT=half_dot, PREC=prec,
                                   num_warps=nw)
    return dq, dk, dv, dbeta, ds0


class ChunkedTriton(torch.autograd.Function):
    """``(q, k, v, beta or None, s0 fp32 or None)`` -> ``(o, final state fp32)``; ``reset`` int32 or None."""

    @staticmethod
    def forward(ctx, q, k, v, beta, s0, reset, C):
        o, final, tm, starts = chunked_forward(q, k, v, beta, s0, reset, C)
        ctx.save_for_backward(q, k, v, beta, reset, tm, starts)
        ctx.C = C
        ctx.has_init = s0 is not None
        ctx.set_materialize_grads(False)
        return o, final

    @staticmethod
    @once_differentiable
    def backward(ctx, d_o, d_final):
        q, k, v, beta, reset, tm, starts = ctx.saved_tensors
        dq, dk, dv, dbeta, ds0 = chunked_backward(q, k, v, beta, reset, tm, starts, d_o, d_final,
                                                  ctx.has_init and ctx.needs_input_grad[4], ctx.C)
        return dq, dk, dv, dbeta, ds0, None, None


def single_step(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, s0: Tensor | None,
                reset: Tensor | None) -> tuple[Tensor, Tensor]:
    """T = 1 without autograd (decoding): one fused kernel; ``(o [B, 1, H, V], new state fp32)``."""
    B, _, H, K = q.shape
    V = v.shape[-1]
    BK, BV = _blocks(K, V)
    o = torch.empty(B, 1, H, V, dtype=q.dtype, device=q.device)
    s = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device)
    dummy = q
    _step_kernel[(triton.cdiv(V, BV), B * H)](q, k, v, beta if beta is not None else dummy,
                                              s0 if s0 is not None else dummy, o, s,
                                              reset if reset is not None else dummy, H, K, V, BK=BK, BV=BV,
                                              DELTA=beta is not None, HAS_INIT=s0 is not None,
                                              HAS_RESET=reset is not None, num_warps=warps_for(BK * BV))
    return o, s


# ------------------------------------------------------------------------------------------------ the ops


def resolve_triton_chunk(chunk_size: object, T: int) -> int:
    """The chunk length: ``chunk_size`` (a power of two in [16, 128]) or 64, shortened for short sequences."""
    if chunk_size is None:
        return max(16, min(DEFAULT_CHUNK, triton.next_power_of_2(T)))
    C = check_chunk_size(chunk_size)
    if C < 16 or C > 128 or C & (C - 1):
        raise ValueError(f"chunk_size: the 'triton' implementation needs a power of two in [16, 128], got {C}")
    return C


def linear_rule(op: str, q, k, v, beta, initial_state, reset, output_final_state, chunk_size):
    """``sum_rule`` (``beta is None``) / ``delta_rule`` with the Triton kernels; arguments as the ops.

    The registry sends float64 inputs and keys over ``MAX_KEY_DIM`` to the PyTorch implementation
    (:func:`fastweights.ops.triton.supports_linear`)."""
    check_float_tensor("q", q)
    B, T, H, K, V = check_qkv(q, k, v, beta) if beta is not None else check_qkv(q, k, v)
    reset = check_reset(reset, B, T, q.device)
    if initial_state is not None:
        initial_state = check_state_tensor("initial_state", initial_state, "[B, H, K, V]", (B, H, K, V), q.device)
    check_runnable(op, q)
    C = resolve_triton_chunk(chunk_size, T)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    beta = None if beta is None else beta.contiguous()
    s0 = None if initial_state is None else initial_state.to(torch.float32).contiguous()
    reset_i = None if reset is None else reset.to(torch.int32).contiguous()
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, beta, s0))
    if T == 1 and not grad:  # decoding: one fused step
        o, s = single_step(q, k, v, beta, s0, reset_i)
    else:
        o, s = ChunkedTriton.apply(q, k, v, beta, s0, reset_i, C)
    return o, (s if output_final_state else None)

