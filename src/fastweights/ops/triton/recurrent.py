"""Fused recurrent Triton kernels: Delta RNN (v1, v2), Delta LSTM (v1-v4) and the Recurrent Delta Net.

One program per (batch, head) walks the time axis with the whole state in registers (``[V, V]`` tiles, padded to a
power of two and masked), as the numba kernels do on CPU (``ops/<op>/compiled.py``, whose docstrings derive the
backward passes used here). The Delta RNN/LSTM feed-forward parts ``z = W^T q`` do not depend on the recurrence
and come from the chunked delta-rule kernels; only the recurrent part is fused.

Memory: the forward writes the outputs (float32, kept for the backward: they are the previous outputs the
recurrence feeds back) and the state at the start of every chunk of ``checkpoint_every`` steps. The backward kernel
recomputes one chunk at a time from its checkpoint, writing the state entering each step of the chunk to a
per-program scratch buffer (``[checkpoint_every, ...]`` per (b, h), L2-resident at the usual sizes), then walks the
chunk backwards with the hand-derived step gradients; everything else a step needs is recomputed from that state.
A reset at ``t`` multiplies the state by 0 before step ``t`` (and the state gradients after it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import device_fn, keep_factor, masked_softmax, next_pow2, sigmoid, warps_for

# ------------------------------------------------------------------------------------------------ helpers


@device_fn
def _vec(ptr, off, cv, V):
    return tl.load(ptr + off + cv, mask=cv < V, other=0.0).to(tl.float32)


@device_fn
def _mat(ptr, off, ri, cv, V):
    return tl.load(ptr + off + ri[:, None] * V + cv[None, :], mask=(ri[:, None] < V) & (cv[None, :] < V), other=0.0)


@device_fn
def _mat_scratch(ptr, off, ri, V):
    """A matrix this program wrote to its scratch buffer before a barrier (``.cg``: read from L2, not L1)."""
    return tl.load(ptr + off + ri[:, None] * V + ri[None, :], mask=(ri[:, None] < V) & (ri[None, :] < V), other=0.0,
                   cache_modifier=".cg")


@device_fn
def _store_mat(ptr, off, x, ri, cv, V):
    tl.store(ptr + off + ri[:, None] * V + cv[None, :], x, mask=(ri[:, None] < V) & (cv[None, :] < V))


@device_fn
def _write_read(R, rk, rv, rb, a):
    """One delta write of the key-major ``R [V, V]`` (retrieval with the old matrix) and the read of ``a`` with
    the new one: returns ``(d, R_new, R_new^T a)`` with ``d = rv - R^T rk``."""
    d = rv - tl.sum(R * rk[:, None], 0)
    R = R + rk[:, None] * (rb * d)[None, :]
    return d, R, tl.sum(R * a[:, None], 0)


@device_fn
def _write(R, rk, rv, rb):
    """The delta write alone: ``R + rk (rb (rv - R^T rk))^T``."""
    d = rv - tl.sum(R * rk[:, None], 0)
    return R + rk[:, None] * (rb * d)[None, :]


@device_fn
def _write_read_backward(G, Rp, Rt, rk, d, rb, a, gp):
    """Backward of :func:`_write_read` for the read's gradient ``gp`` and ``G`` = dL/dR_t (from later steps).

    Returns ``(G', ga, grk, grv, grb)`` with ``G'`` = dL/dR' (the matrix entering the step, after its reset).
    """
    G = G + a[:, None] * gp[None, :]  # the read uses the new matrix
    ga = tl.sum(Rt * gp[None, :], 1)
    gu = tl.sum(G * rk[:, None], 0)  # dL/du, u = rb d
    grv = rb * gu
    grb = tl.sum(gu * d, 0)
    grk = rb * tl.sum(G * d[None, :], 1) - tl.sum(Rp * grv[None, :], 1)
    G = G - rk[:, None] * grv[None, :]
    return G, ga, grk, grv, grb


# ------------------------------------------------------------------------------------------------ Delta RNN


@triton.jit
def _rnn_fwd_kernel(z_ptr, rk_ptr, rv_ptr, rb_ptr, reset_ptr, r0_ptr, y0_ptr, y_ptr, rT_ptr, yT_ptr, rcp_ptr,
                    ycp_ptr, T, H, V, NC, CS, BV: tl.constexpr, V2: tl.constexpr, HAS_RESET: tl.constexpr,
                    STORE_CP: tl.constexpr):
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    ri = tl.arange(0, BV)
    vm = ri < V
    mbase = bh.to(tl.int64) * V * V
    R = _mat(r0_ptr, mbase, ri, ri, V)
    y = _vec(y0_ptr, bh.to(tl.int64) * V, ri, V)
    for t in range(T):
        if STORE_CP:
            if t % CS == 0:
                c = (bh * NC + t // CS).to(tl.int64)
                _store_mat(rcp_ptr, c * V * V, R, ri, ri, V)
                tl.store(ycp_ptr + c * V + ri, y, mask=vm)
        m = keep_factor(reset_ptr, b, t, T, HAS_RESET)
        R = R * m
        y = y * m
        off = ((b * T + t) * H + h).to(tl.int64)
        if V2:
            s = masked_softmax(y, vm)
        else:
            s = y
        _d, R, rd = _write_read(R, _vec(rk_ptr, off * V, ri, V), _vec(rv_ptr, off * V, ri, V),
                               tl.load(rb_ptr + off), s)
        y = _vec(z_ptr, off * V, ri, V) + rd
        if not V2:
            y = masked_softmax(y, vm)
        tl.store(y_ptr + off * V + ri, y, mask=vm)
    _store_mat(rT_ptr, mbase, R, ri, ri, V)
    tl.store(yT_ptr + bh.to(tl.int64) * V + ri, y, mask=vm)


@triton.jit
def _rnn_bwd_kernel(rk_ptr, rv_ptr, rb_ptr, reset_ptr, y0_ptr, y_ptr, rcp_ptr, gy_ptr, grT_ptr, gyT_ptr,
                    gz_ptr, grk_ptr, grv_ptr, grb_ptr, gr0_ptr, gy0_ptr, scratch_ptr, T, H, V, NC, CS,
                    BV: tl.constexpr, V2: tl.constexpr, HAS_RESET: tl.constexpr, HAS_GFINAL: tl.constexpr):
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    ri = tl.arange(0, BV)
    vm = ri < V
    mbase = bh.to(tl.int64) * V * V
    sbase = bh.to(tl.int64) * CS * V * V
    if HAS_GFINAL:
        G = _mat(grT_ptr, mbase, ri, ri, V)
        gy = _vec(gyT_ptr, bh.to(tl.int64) * V, ri, V)
    else:
        G = tl.zeros([BV, BV], dtype=tl.float32)
        gy = tl.zeros([BV], dtype=tl.float32)
    for ci in range(NC):
        c = NC - 1 - ci
        t0 = c * CS
        L = tl.minimum(CS, T - t0)
        # recompute the chunk: the matrix entering every step (after its reset) goes to the scratch buffer
        R = _mat(rcp_ptr, (bh * NC + c).to(tl.int64) * V * V, ri, ri, V)
        for l in range(L):
            t = t0 + l
            R = R * keep_factor(reset_ptr, b, t, T, HAS_RESET)
            _store_mat(scratch_ptr, sbase + l * V * V, R, ri, ri, V)
            off = ((b * T + t) * H + h).to(tl.int64)
            R = _write(R, _vec(rk_ptr, off * V, ri, V), _vec(rv_ptr, off * V, ri, V), tl.load(rb_ptr + off))
        tl.debug_barrier()
        for li in range(L):
            l = L - 1 - li
            t = t0 + l
            m = keep_factor(reset_ptr, b, t, T, HAS_RESET)
            off = ((b * T + t) * H + h).to(tl.int64)
            Rp = _mat_scratch(scratch_ptr, sbase + l * V * V, ri, V)
            rk = _vec(rk_ptr, off * V, ri, V)
            rb = tl.load(rb_ptr + off)
            d = _vec(rv_ptr, off * V, ri, V) - tl.sum(Rp * rk[:, None], 0)
            Rt = Rp + rk[:, None] * (rb * d)[None, :]
            if t > 0:
                yp = _vec(y_ptr, (off - H) * V, ri, V)
            else:
                yp = _vec(y0_ptr, bh.to(tl.int64) * V, ri, V)
            yp = yp * m
            if V2:
                s = masked_softmax(yp, vm)
            else:
                s = yp
            gy = gy + _vec(gy_ptr, off * V, ri, V)
            if V2:
                ga = gy
            else:  # softmax Jacobian at y_t
                yt = _vec(y_ptr, off * V, ri, V)
                ga = yt * (gy - tl.sum(yt * gy, 0))
            tl.store(gz_ptr + off * V + ri, ga, mask=vm)
            G, gs, grk, grv, grb = _write_read_backward(G, Rp, Rt, rk, d, rb, s, ga)
            tl.store(grk_ptr + off * V + ri, grk, mask=vm)
            tl.store(grv_ptr + off * V + ri, grv, mask=vm)
            tl.store(grb_ptr + off, grb)
            G = G * m
            if V2:
                gy = m * (s * (gs - tl.sum(s * gs, 0)))
            else:
                gy = m * gs
        tl.debug_barrier()  # the next chunk overwrites the scratch buffer
    _store_mat(gr0_ptr, mbase, G, ri, ri, V)
    tl.store(gy0_ptr + bh.to(tl.int64) * V + ri, gy, mask=vm)


# ------------------------------------------------------------------------------------------------ Delta LSTM


@triton.jit
def _lstm_fwd_kernel(z_ptr, rk_ptr, rv_ptr, rb_ptr, reset_ptr, r0_ptr, y0_ptr, c0_ptr, y_ptr, c_ptr, rT_ptr, yT_ptr,
                     cT_ptr, rcp_ptr, ycp_ptr, ccp_ptr, T, H, V, NC, CS, BV: tl.constexpr,
                     VERSION: tl.constexpr, HAS_RESET: tl.constexpr, STORE_CP: tl.constexpr):
    """Gate-major layouts: z, rk, rv ``[B, T, H, 3, V]``, rbeta ``[B, T, H, 3]``, R ``[B, H, 3, V, V]``."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    ri = tl.arange(0, BV)
    vm = ri < V
    VV = V * V
    mbase = bh.to(tl.int64) * 3 * VV
    vbase = bh.to(tl.int64) * V
    Ri = _mat(r0_ptr, mbase, ri, ri, V)
    Ru = _mat(r0_ptr, mbase + VV, ri, ri, V)
    Ro = _mat(r0_ptr, mbase + 2 * VV, ri, ri, V)
    y = _vec(y0_ptr, vbase, ri, V)
    c = _vec(c0_ptr, vbase, ri, V)
    for t in range(T):
        if STORE_CP:
            if t % CS == 0:
                cpi = (bh * NC + t // CS).to(tl.int64)
                _store_mat(rcp_ptr, cpi * 3 * VV, Ri, ri, ri, V)
                _store_mat(rcp_ptr, cpi * 3 * VV + VV, Ru, ri, ri, V)
                _store_mat(rcp_ptr, cpi * 3 * VV + 2 * VV, Ro, ri, ri, V)
                tl.store(ycp_ptr + cpi * V + ri, y, mask=vm)
                tl.store(ccp_ptr + cpi * V + ri, c, mask=vm)
        m = keep_factor(reset_ptr, b, t, T, HAS_RESET)
        Ri = Ri * m
        Ru = Ru * m
        Ro = Ro * m
        y = y * m
        c = c * m
        if VERSION == 1:
            a = y
        else:
            a = masked_softmax(y, vm)
        off = ((b * T + t) * H + h).to(tl.int64)
        g0 = off * 3 * V
        zu = _vec(z_ptr, g0 + V, ri, V)
        _d, Ri, pi = _write_read(Ri, _vec(rk_ptr, g0, ri, V), _vec(rv_ptr, g0, ri, V), tl.load(rb_ptr + off * 3), a)
        _d, Ru, pu = _write_read(Ru, _vec(rk_ptr, g0 + V, ri, V), _vec(rv_ptr, g0 + V, ri, V),
                                tl.load(rb_ptr + off * 3 + 1), a)
        _d, Ro, po = _write_read(Ro, _vec(rk_ptr, g0 + 2 * V, ri, V), _vec(rv_ptr, g0 + 2 * V, ri, V),
                                tl.load(rb_ptr + off * 3 + 2), a)
        ig = sigmoid(_vec(z_ptr, g0, ri, V) + pi)
        og = sigmoid(_vec(z_ptr, g0 + 2 * V, ri, V) + po)
        if VERSION == 4:
            ug = zu + pu
        else:
            ug = sigmoid(zu + pu)
        c = ig * ug + (1.0 - ig) * c
        y = og * c
        if VERSION == 1:
            y = masked_softmax(y, vm)
        if VERSION == 3:
            y = y + zu
        y = tl.where(vm, y, 0.0)
        c = tl.where(vm, c, 0.0)
        tl.store(y_ptr + off * V + ri, y, mask=vm)
        tl.store(c_ptr + off * V + ri, c, mask=vm)
    _store_mat(rT_ptr, mbase, Ri, ri, ri, V)
    _store_mat(rT_ptr, mbase + VV, Ru, ri, ri, V)
    _store_mat(rT_ptr, mbase + 2 * VV, Ro, ri, ri, V)
    tl.store(yT_ptr + vbase + ri, y, mask=vm)
    tl.store(cT_ptr + vbase + ri, c, mask=vm)


@device_fn
def _lstm_gate_recompute(scratch_ptr, soff, z_ptr, rk_ptr, rv_ptr, rb_ptr, g0, gi, off, a, ri, V):
    """Gate ``gi``'s matrix entering the step (from the scratch buffer), its write residual, the new matrix and
    the pre-activation ``p = z + R_t^T a``."""
    Rp = _mat_scratch(scratch_ptr, soff, ri, V)
    rk = _vec(rk_ptr, g0 + gi * V, ri, V)
    rb = tl.load(rb_ptr + off * 3 + gi)
    d = _vec(rv_ptr, g0 + gi * V, ri, V) - tl.sum(Rp * rk[:, None], 0)
    Rt = Rp + rk[:, None] * (rb * d)[None, :]
    p = _vec(z_ptr, g0 + gi * V, ri, V) + tl.sum(Rt * a[:, None], 0)
    return Rp, rk, rb, d, Rt, p


@triton.jit
def _lstm_bwd_kernel(z_ptr, rk_ptr, rv_ptr, rb_ptr, reset_ptr, y0_ptr, c0_ptr, y_ptr, c_ptr, rcp_ptr, gy_ptr,
                     grT_ptr, gyT_ptr, gcT_ptr, gz_ptr, grk_ptr, grv_ptr, grb_ptr, gr0_ptr, gy0_ptr, gc0_ptr,
                     scratch_ptr, T, H, V, NC, CS, BV: tl.constexpr, VERSION: tl.constexpr,
                     HAS_RESET: tl.constexpr, HAS_GFINAL: tl.constexpr):
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    ri = tl.arange(0, BV)
    vm = ri < V
    VV = V * V
    mbase = bh.to(tl.int64) * 3 * VV
    vbase = bh.to(tl.int64) * V
    sbase = bh.to(tl.int64) * CS * 3 * VV
    if HAS_GFINAL:
        Gi = _mat(grT_ptr, mbase, ri, ri, V)
        Gu = _mat(grT_ptr, mbase + VV, ri, ri, V)
        Go = _mat(grT_ptr, mbase + 2 * VV, ri, ri, V)
        gy = _vec(gyT_ptr, vbase, ri, V)
        gc = _vec(gcT_ptr, vbase, ri, V)
    else:
        Gi = tl.zeros([BV, BV], dtype=tl.float32)
        Gu = tl.zeros([BV, BV], dtype=tl.float32)
        Go = tl.zeros([BV, BV], dtype=tl.float32)
        gy = tl.zeros([BV], dtype=tl.float32)
        gc = tl.zeros([BV], dtype=tl.float32)
    for ci in range(NC):
        cidx = NC - 1 - ci
        t0 = cidx * CS
        L = tl.minimum(CS, T - t0)
        cpo = (bh * NC + cidx).to(tl.int64) * 3 * VV
        Ri = _mat(rcp_ptr, cpo, ri, ri, V)
        Ru = _mat(rcp_ptr, cpo + VV, ri, ri, V)
        Ro = _mat(rcp_ptr, cpo + 2 * VV, ri, ri, V)
        for l in range(L):
            t = t0 + l
            m = keep_factor(reset_ptr, b, t, T, HAS_RESET)
            Ri = Ri * m
            Ru = Ru * m
            Ro = Ro * m
            so = sbase + l * 3 * VV
            _store_mat(scratch_ptr, so, Ri, ri, ri, V)
            _store_mat(scratch_ptr, so + VV, Ru, ri, ri, V)
            _store_mat(scratch_ptr, so + 2 * VV, Ro, ri, ri, V)
            off = ((b * T + t) * H + h).to(tl.int64)
            g0 = off * 3 * V
            Ri = _write(Ri, _vec(rk_ptr, g0, ri, V), _vec(rv_ptr, g0, ri, V), tl.load(rb_ptr + off * 3))
            Ru = _write(Ru, _vec(rk_ptr, g0 + V, ri, V), _vec(rv_ptr, g0 + V, ri, V), tl.load(rb_ptr + off * 3 + 1))
            Ro = _write(Ro, _vec(rk_ptr, g0 + 2 * V, ri, V), _vec(rv_ptr, g0 + 2 * V, ri, V),
                        tl.load(rb_ptr + off * 3 + 2))
        tl.debug_barrier()
        for li in range(L):
            l = L - 1 - li
            t = t0 + l
            m = keep_factor(reset_ptr, b, t, T, HAS_RESET)
            off = ((b * T + t) * H + h).to(tl.int64)
            g0 = off * 3 * V
            if t > 0:
                yp = _vec(y_ptr, (off - H) * V, ri, V)
                cp = _vec(c_ptr, (off - H) * V, ri, V)
            else:
                yp = _vec(y0_ptr, vbase, ri, V)
                cp = _vec(c0_ptr, vbase, ri, V)
            yp = yp * m
            cp = cp * m
            if VERSION == 1:
                a = yp
            else:
                a = masked_softmax(yp, vm)
            so = sbase + l * 3 * VV
            Rpi, rki, rbi, di, Rti, pi = _lstm_gate_recompute(scratch_ptr, so, z_ptr, rk_ptr, rv_ptr, rb_ptr, g0, 0,
                                                              off, a, ri, V)
            Rpu, rku, rbu, du, Rtu, pu = _lstm_gate_recompute(scratch_ptr, so + VV, z_ptr, rk_ptr, rv_ptr, rb_ptr,
                                                              g0, 1, off, a, ri, V)
            Rpo, rko, rbo, do, Rto, po = _lstm_gate_recompute(scratch_ptr, so + 2 * VV, z_ptr, rk_ptr, rv_ptr,
                                                              rb_ptr, g0, 2, off, a, ri, V)
            ig = sigmoid(pi)
            og = sigmoid(po)
            if VERSION == 4:
                ug = pu
            else:
                ug = sigmoid(pu)
            ct = _vec(c_ptr, off * V, ri, V)
            gy = gy + _vec(gy_ptr, off * V, ri, V)
            if VERSION == 1:  # softmax Jacobian at y_t
                yt = _vec(y_ptr, off * V, ri, V)
                gh = yt * (gy - tl.sum(yt * gy, 0))
            else:
                gh = gy
            go = gh * ct
            gct = gc + gh * og
            gi = gct * (ug - cp)
            gu = gct * ig
            gc = gct * (1.0 - ig)
            gpi = gi * ig * (1.0 - ig)
            if VERSION == 4:
                gpu = gu
            else:
                gpu = gu * ug * (1.0 - ug)
            gpo = go * og * (1.0 - og)
            tl.store(gz_ptr + g0 + ri, gpi, mask=vm)
            if VERSION == 3:
                tl.store(gz_ptr + g0 + V + ri, gpu + gy, mask=vm)
            else:
                tl.store(gz_ptr + g0 + V + ri, gpu, mask=vm)
            tl.store(gz_ptr + g0 + 2 * V + ri, gpo, mask=vm)
            Gi, ga_i, grk, grv, grb = _write_read_backward(Gi, Rpi, Rti, rki, di, rbi, a, gpi)
            tl.store(grk_ptr + g0 + ri, grk, mask=vm)
            tl.store(grv_ptr + g0 + ri, grv, mask=vm)
            tl.store(grb_ptr + off * 3, grb)
            Gu, ga_u, grk, grv, grb = _write_read_backward(Gu, Rpu, Rtu, rku, du, rbu, a, gpu)
            tl.store(grk_ptr + g0 + V + ri, grk, mask=vm)
            tl.store(grv_ptr + g0 + V + ri, grv, mask=vm)
            tl.store(grb_ptr + off * 3 + 1, grb)
            Go, ga_o, grk, grv, grb = _write_read_backward(Go, Rpo, Rto, rko, do, rbo, a, gpo)
            tl.store(grk_ptr + g0 + 2 * V + ri, grk, mask=vm)
            tl.store(grv_ptr + g0 + 2 * V + ri, grv, mask=vm)
            tl.store(grb_ptr + off * 3 + 2, grb)
            ga = ga_i + ga_u + ga_o
            if VERSION == 1:
                gy = ga
            else:
                gy = a * (ga - tl.sum(a * ga, 0))
            gy = gy * m
            gc = gc * m
            Gi = Gi * m
            Gu = Gu * m
            Go = Go * m
        tl.debug_barrier()
    _store_mat(gr0_ptr, mbase, Gi, ri, ri, V)
    _store_mat(gr0_ptr, mbase + VV, Gu, ri, ri, V)
    _store_mat(gr0_ptr, mbase + 2 * VV, Go, ri, ri, V)
    tl.store(gy0_ptr + vbase + ri, gy, mask=vm)
    tl.store(gc0_ptr + vbase + ri, gc, mask=vm)


# ------------------------------------------------------------------------------------------------ RDN


@device_fn
def _rdn_inputs(q_ptr, k_ptr, v_ptr, b_ptr, off, a, Rq, Rk, Rv, rbv, ri, vm, D):
    """The step's activated q, k (softmax), v and beta (sigmoid) from the raw inputs and ``a = tanh(y')``."""
    qs = masked_softmax(_vec(q_ptr, off * D, ri, D) + tl.sum(Rq * a[None, :], 1), vm)
    ks = masked_softmax(_vec(k_ptr, off * D, ri, D) + tl.sum(Rk * a[None, :], 1), vm)
    vv = _vec(v_ptr, off * D, ri, D) + tl.sum(Rv * a[None, :], 1)
    beta = sigmoid(tl.load(b_ptr + off).to(tl.float32) + tl.sum(rbv * a, 0))
    return qs, ks, vv, beta


@device_fn
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _rdn_fwd_kernel(q_ptr, k_ptr, v_ptr, b_ptr, p_ptr, reset_ptr, w0_ptr, y0_ptr, y_ptr, wT_ptr, yT_ptr, wcp_ptr,
                    ycp_ptr, T, H, D, NC, CS, BD: tl.constexpr, HAS_RESET: tl.constexpr, STORE_CP: tl.constexpr):
    """``p_ptr``: the slow recurrent weights stacked per head, ``[H, 3D+1, D]`` (R_q, R_k, R_v, r_beta)."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    ri = tl.arange(0, BD)
    vm = ri < D
    DD = D * D
    pbase = h.to(tl.int64) * (3 * D + 1) * D
    Rq = _mat(p_ptr, pbase, ri, ri, D)
    Rk = _mat(p_ptr, pbase + DD, ri, ri, D)
    Rv = _mat(p_ptr, pbase + 2 * DD, ri, ri, D)
    rbv = _vec(p_ptr, pbase + 3 * DD, ri, D)
    W = _mat(w0_ptr, bh.to(tl.int64) * DD, ri, ri, D)
    y = _vec(y0_ptr, bh.to(tl.int64) * D, ri, D)
    for t in range(T):
        if STORE_CP:
            if t % CS == 0:
                c = (bh * NC + t // CS).to(tl.int64)
                _store_mat(wcp_ptr, c * DD, W, ri, ri, D)
                tl.store(ycp_ptr + c * D + ri, y, mask=vm)
        m = keep_factor(reset_ptr, b, t, T, HAS_RESET)
        W = W * m
        y = y * m
        off = ((b * T + t) * H + h).to(tl.int64)
        qs, ks, vv, beta = _rdn_inputs(q_ptr, k_ptr, v_ptr, b_ptr, off, _tanh(y), Rq, Rk, Rv, rbv, ri, vm, D)
        _d, W, y = _write_read(W, ks, vv, beta, qs)
        tl.store(y_ptr + off * D + ri, y, mask=vm)
    _store_mat(wT_ptr, bh.to(tl.int64) * DD, W, ri, ri, D)
    tl.store(yT_ptr + bh.to(tl.int64) * D + ri, y, mask=vm)


@triton.jit
def _rdn_bwd_kernel(q_ptr, k_ptr, v_ptr, b_ptr, p_ptr, reset_ptr, y0_ptr, y_ptr, wcp_ptr, gy_ptr, gwT_ptr, gyT_ptr,
                    gq_ptr, gk_ptr, gv_ptr, gb_ptr, gp_ptr, gw0_ptr, gy0_ptr, scratch_ptr, T, H, D, NC, CS,
                    BD: tl.constexpr, HAS_RESET: tl.constexpr, HAS_GFINAL: tl.constexpr):
    """``gp_ptr``: per-(b, h) gradients of the stacked slow weights, ``[B, H, 3D+1, D]`` (summed over B later)."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    ri = tl.arange(0, BD)
    vm = ri < D
    DD = D * D
    pbase = h.to(tl.int64) * (3 * D + 1) * D
    Rq = _mat(p_ptr, pbase, ri, ri, D)
    Rk = _mat(p_ptr, pbase + DD, ri, ri, D)
    Rv = _mat(p_ptr, pbase + 2 * DD, ri, ri, D)
    rbv = _vec(p_ptr, pbase + 3 * DD, ri, D)
    sbase = bh.to(tl.int64) * CS * DD
    if HAS_GFINAL:
        gW = _mat(gwT_ptr, bh.to(tl.int64) * DD, ri, ri, D)
        gy = _vec(gyT_ptr, bh.to(tl.int64) * D, ri, D)
    else:
        gW = tl.zeros([BD, BD], dtype=tl.float32)
        gy = tl.zeros([BD], dtype=tl.float32)
    gRq = tl.zeros([BD, BD], dtype=tl.float32)
    gRk = tl.zeros([BD, BD], dtype=tl.float32)
    gRv = tl.zeros([BD, BD], dtype=tl.float32)
    grb = tl.zeros([BD], dtype=tl.float32)
    for ci in range(NC):
        c = NC - 1 - ci
        t0 = c * CS
        L = tl.minimum(CS, T - t0)
        W = _mat(wcp_ptr, (bh * NC + c).to(tl.int64) * DD, ri, ri, D)
        for l in range(L):
            t = t0 + l
            m = keep_factor(reset_ptr, b, t, T, HAS_RESET)
            W = W * m
            _store_mat(scratch_ptr, sbase + l * DD, W, ri, ri, D)
            off = ((b * T + t) * H + h).to(tl.int64)
            if t > 0:
                yp = _vec(y_ptr, (off - H) * D, ri, D)
            else:
                yp = _vec(y0_ptr, bh.to(tl.int64) * D, ri, D)
            qs, ks, vv, beta = _rdn_inputs(q_ptr, k_ptr, v_ptr, b_ptr, off, _tanh(yp * m), Rq, Rk, Rv, rbv, ri, vm,
                                           D)
            W = _write(W, ks, vv, beta)
        tl.debug_barrier()
        for li in range(L):
            l = L - 1 - li
            t = t0 + l
            m = keep_factor(reset_ptr, b, t, T, HAS_RESET)
            off = ((b * T + t) * H + h).to(tl.int64)
            if t > 0:
                yp = _vec(y_ptr, (off - H) * D, ri, D)
            else:
                yp = _vec(y0_ptr, bh.to(tl.int64) * D, ri, D)
            a = _tanh(yp * m)
            qs, ks, vv, beta = _rdn_inputs(q_ptr, k_ptr, v_ptr, b_ptr, off, a, Rq, Rk, Rv, rbv, ri, vm, D)
            Wp = _mat_scratch(scratch_ptr, sbase + l * DD, ri, D)
            d = vv - tl.sum(Wp * ks[:, None], 0)
            u = beta * d
            Wt = Wp + ks[:, None] * u[None, :]
            gy = gy + _vec(gy_ptr, off * D, ri, D)
            # read y = W_t^T q
            gqs = tl.sum(Wt * gy[None, :], 1)
            gW = gW + qs[:, None] * gy[None, :]
            # write W_t = W' + k u^T, u = beta (v - W'^T k)
            gu = tl.sum(gW * ks[:, None], 0)
            gbeta = tl.sum(gu * d, 0)
            gvv = beta * gu
            gks = tl.sum(gW * u[None, :], 1) - tl.sum(Wp * gvv[None, :], 1)
            gW = gW - ks[:, None] * gvv[None, :]
            # the activations
            gzq = qs * (gqs - tl.sum(gqs * qs, 0))
            gzk = ks * (gks - tl.sum(gks * ks, 0))
            gzb = gbeta * beta * (1.0 - beta)
            tl.store(gq_ptr + off * D + ri, gzq, mask=vm)
            tl.store(gk_ptr + off * D + ri, gzk, mask=vm)
            tl.store(gv_ptr + off * D + ri, gvv, mask=vm)
            tl.store(gb_ptr + off, gzb)
            # the slow recurrent weights r = P a
            gRq += gzq[:, None] * a[None, :]
            gRk += gzk[:, None] * a[None, :]
            gRv += gvv[:, None] * a[None, :]
            grb += gzb * a
            ga = (tl.sum(Rq * gzq[:, None], 0) + tl.sum(Rk * gzk[:, None], 0) + tl.sum(Rv * gvv[:, None], 0)
                  + rbv * gzb)
            gy = m * (ga * (1.0 - a * a))
            gW = gW * m
        tl.debug_barrier()
    gpo = bh.to(tl.int64) * (3 * D + 1) * D
    _store_mat(gp_ptr, gpo, gRq, ri, ri, D)
    _store_mat(gp_ptr, gpo + DD, gRk, ri, ri, D)
    _store_mat(gp_ptr, gpo + 2 * DD, gRv, ri, ri, D)
    tl.store(gp_ptr + gpo + 3 * DD + ri, grb, mask=vm)
    _store_mat(gw0_ptr, bh.to(tl.int64) * DD, gW, ri, ri, D)
    tl.store(gy0_ptr + bh.to(tl.int64) * D + ri, gy, mask=vm)


# ------------------------------------------------------------------------------------------------ autograd


def _f32(*shape, device) -> Tensor:
    return torch.empty(*shape, dtype=torch.float32, device=device)


def _forward_outputs(B: int, T: int, H: int, V: int, NC: int, matrix: tuple[int, ...], store_cp: bool,
                     device: torch.device) -> tuple[Tensor, ...]:
    """float32 outputs of a recurrent forward kernel whose state per (b, h) is a fast matrix ``[*matrix]`` and the
    last output ``[V]``: ``(y [B, T, H, V], matrix_T [B, H, *matrix], y_T [B, H, V], matrix at every chunk start
    [B, H, NC, *matrix], y there [B, H, NC, V])``. Without ``store_cp`` (no backward) the final states stand in
    for the chunk-start buffers, which the kernel then does not write."""
    y = _f32(B, T, H, V, device=device)
    mT, yT = _f32(B, H, *matrix, device=device), _f32(B, H, V, device=device)
    mcp = _f32(B, H, NC, *matrix, device=device) if store_cp else mT
    ycp = _f32(B, H, NC, V, device=device) if store_cp else yT
    return y, mT, yT, mcp, ycp


def _zeros_if_none(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g.to(torch.float32).contiguous()


class _DeltaRNNTriton(torch.autograd.Function):
    """``(z, rk, rv [B, T, H, V], rbeta [B, T, H], R0 [B, H, V, V], y0 [B, H, V])`` (float32, contiguous) ->
    ``(y [B, T, H, V], R_T, y_T)``."""

    @staticmethod
    def forward(ctx, v2, CS, reset, z, rk, rv, rbeta, R0, y0):
        B, T, H, V = z.shape
        NC = triton.cdiv(T, CS)
        dev = z.device
        store_cp = any(ctx.needs_input_grad[3:])
        y, RT, yT, rcp, ycp = _forward_outputs(B, T, H, V, NC, (V, V), store_cp, dev)
        BV = next_pow2(V, 2)
        _rnn_fwd_kernel[(B * H,)](z, rk, rv, rbeta, reset if reset is not None else z, R0, y0, y, RT, yT, rcp, ycp,
                                  T, H, V, NC, CS, BV=BV, V2=v2, HAS_RESET=reset is not None, STORE_CP=store_cp,
                                  num_warps=warps_for(BV * BV))
        ctx.v2, ctx.CS = v2, CS
        ctx.save_for_backward(rk, rv, rbeta, reset, y0, y, rcp if store_cp else None)
        ctx.set_materialize_grads(False)
        return y, RT, yT

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_RT, g_yT):
        rk, rv, rbeta, reset, y0, y, rcp = ctx.saved_tensors
        B, T, H, V = y.shape
        CS = ctx.CS
        NC = triton.cdiv(T, CS)
        dev = y.device
        g_y = _zeros_if_none(g_y, y)
        has_gfinal = g_RT is not None or g_yT is not None
        g_RT = _zeros_if_none(g_RT, torch.empty(B, H, V, V, device=dev)) if has_gfinal else None
        g_yT = _zeros_if_none(g_yT, y0) if has_gfinal else None
        gz, grk, grv = torch.empty_like(y), torch.empty_like(y), torch.empty_like(y)
        grb = _f32(B, T, H, device=dev)
        gR0, gy0 = _f32(B, H, V, V, device=dev), _f32(B, H, V, device=dev)
        scratch = _f32(B * H, CS, V, V, device=dev)
        BV = next_pow2(V, 2)
        _rnn_bwd_kernel[(B * H,)](rk, rv, rbeta, reset if reset is not None else y, y0, y, rcp, g_y,
                                  g_RT if has_gfinal else y, g_yT if has_gfinal else y, gz, grk, grv, grb, gR0, gy0,
                                  scratch, T, H, V, NC, CS, BV=BV, V2=ctx.v2, HAS_RESET=reset is not None,
                                  HAS_GFINAL=has_gfinal, num_warps=warps_for(4 * BV * BV))
        return None, None, None, gz, grk, grv, grb, gR0, gy0


class _DeltaLSTMTriton(torch.autograd.Function):
    """``(z, rk, rv [B, T, H, 3, V], rbeta [B, T, H, 3], R0 [B, H, 3, V, V], y0, c0 [B, H, V])`` ->
    ``(y [B, T, H, V], R_T, y_T, c_T)``."""

    @staticmethod
    def forward(ctx, version, CS, reset, z, rk, rv, rbeta, R0, y0, c0):
        B, T, H, _, V = z.shape
        NC = triton.cdiv(T, CS)
        dev = z.device
        store_cp = any(ctx.needs_input_grad[3:])
        y, RT, yT, rcp, ycp = _forward_outputs(B, T, H, V, NC, (3, V, V), store_cp, dev)
        c, cT = _f32(B, T, H, V, device=dev), _f32(B, H, V, device=dev)  # the cell, kept like y
        ccp = _f32(B, H, NC, V, device=dev) if store_cp else cT
        BV = next_pow2(V, 2)
        _lstm_fwd_kernel[(B * H,)](z, rk, rv, rbeta, reset if reset is not None else z, R0, y0, c0, y, c, RT, yT, cT,
                                   rcp, ycp, ccp, T, H, V, NC, CS, BV=BV, VERSION=version,
                                   HAS_RESET=reset is not None, STORE_CP=store_cp, num_warps=warps_for(3 * BV * BV))
        ctx.version, ctx.CS = version, CS
        ctx.save_for_backward(z, rk, rv, rbeta, reset, y0, c0, y, c, rcp if store_cp else None)
        ctx.set_materialize_grads(False)
        return y, RT, yT, cT

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_RT, g_yT, g_cT):
        z, rk, rv, rbeta, reset, y0, c0, y, c, rcp = ctx.saved_tensors
        B, T, H, V = y.shape
        CS = ctx.CS
        NC = triton.cdiv(T, CS)
        dev = y.device
        g_y = _zeros_if_none(g_y, y)
        has_gfinal = g_RT is not None or g_yT is not None or g_cT is not None
        if has_gfinal:
            g_RT = _zeros_if_none(g_RT, torch.empty(B, H, 3, V, V, device=dev))
            g_yT, g_cT = _zeros_if_none(g_yT, y0), _zeros_if_none(g_cT, c0)
        gz, grk, grv = torch.empty_like(z), torch.empty_like(z), torch.empty_like(z)
        grb = torch.empty_like(rbeta)
        gR0 = _f32(B, H, 3, V, V, device=dev)
        gy0, gc0 = _f32(B, H, V, device=dev), _f32(B, H, V, device=dev)
        scratch = _f32(B * H, CS, 3, V, V, device=dev)
        BV = next_pow2(V, 2)
        _lstm_bwd_kernel[(B * H,)](z, rk, rv, rbeta, reset if reset is not None else y, y0, c0, y, c, rcp, g_y,
                                   g_RT if has_gfinal else y, g_yT if has_gfinal else y, g_cT if has_gfinal else y,
                                   gz, grk, grv, grb, gR0, gy0, gc0, scratch, T, H, V, NC, CS, BV=BV,
                                   VERSION=ctx.version, HAS_RESET=reset is not None, HAS_GFINAL=has_gfinal,
                                   num_warps=warps_for(9 * BV * BV))
        return None, None, None, gz, grk, grv, grb, gR0, gy0, gc0


class _RecDeltaTriton(torch.autograd.Function):
    """``(q, k, v [B, T, H, D], b [B, T, H], P [H, 3D+1, D], W0 [B, H, D, D], y0 [B, H, D])`` ->
    ``(y [B, T, H, D], W_T, y_T)``."""

    @staticmethod
    def forward(ctx, CS, reset, q, k, v, b, P, W0, y0):
        B, T, H, D = q.shape
        NC = triton.cdiv(T, CS)
        dev = q.device
        store_cp = any(ctx.needs_input_grad[2:])
        y, WT, yT, wcp, ycp = _forward_outputs(B, T, H, D, NC, (D, D), store_cp, dev)
        BD = next_pow2(D, 2)
        _rdn_fwd_kernel[(B * H,)](q, k, v, b, P, reset if reset is not None else q, W0, y0, y, WT, yT, wcp, ycp,
                                  T, H, D, NC, CS, BD=BD, HAS_RESET=reset is not None, STORE_CP=store_cp,
                                  num_warps=warps_for(5 * BD * BD))
        ctx.CS = CS
        ctx.save_for_backward(q, k, v, b, P, reset, y0, y, wcp if store_cp else None)
        ctx.set_materialize_grads(False)
        return y, WT, yT

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_WT, g_yT):
        q, k, v, b, P, reset, y0, y, wcp = ctx.saved_tensors
        B, T, H, D = q.shape
        CS = ctx.CS
        NC = triton.cdiv(T, CS)
        dev = q.device
        g_y = _zeros_if_none(g_y, y)
        has_gfinal = g_WT is not None or g_yT is not None
        if has_gfinal:
            g_WT, g_yT = _zeros_if_none(g_WT, torch.empty(B, H, D, D, device=dev)), _zeros_if_none(g_yT, y0)
        gq, gk, gv = torch.empty_like(y), torch.empty_like(y), torch.empty_like(y)
        gb = _f32(B, T, H, device=dev)
        gP = _f32(B, H, 3 * D + 1, D, device=dev)
        gW0, gy0 = _f32(B, H, D, D, device=dev), _f32(B, H, D, device=dev)
        scratch = _f32(B * H, CS, D, D, device=dev)
        BD = next_pow2(D, 2)
        _rdn_bwd_kernel[(B * H,)](q, k, v, b, P, reset if reset is not None else q, y0, y, wcp, g_y,
                                  g_WT if has_gfinal else y, g_yT if has_gfinal else y, gq, gk, gv, gb, gP, gW0, gy0,
                                  scratch, T, H, D, NC, CS, BD=BD, HAS_RESET=reset is not None,
                                  HAS_GFINAL=has_gfinal, num_warps=warps_for(12 * BD * BD))
        return None, None, gq, gk, gv, gb, gP.sum(0), gW0, gy0


# ------------------------------------------------------------------------------------------------ entries
# Called by the ``triton`` backends of the ops (``ops/<op>/triton.py``) on validated inputs in float32;
# ``CS`` is the checkpoint interval, ``reset`` the op's bool ``[B, T]`` or None.


def _int_reset(reset: Tensor | None) -> Tensor | None:
    return None if reset is None else reset.to(torch.int32).contiguous()


def delta_rnn_recurrence(v2: bool, CS: int, reset: Tensor | None, z: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor,
                         R0: Tensor, y0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The (R, y) recursion of the Delta RNN: ``(y [B, T, H, V], R_T [B, H, V, V], y_T [B, H, V])``."""
    return _DeltaRNNTriton.apply(v2, CS, _int_reset(reset), z.contiguous(), rk.contiguous(), rv.contiguous(),
                                 rbeta.contiguous(), R0.contiguous(), y0.contiguous())


def delta_lstm_recurrence(version: int, CS: int, reset: Tensor | None, z: Tensor, rk: Tensor, rv: Tensor,
                          rbeta: Tensor, R0: Tensor, y0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The (R, y, c) recursion of the Delta LSTM: ``(y [B, T, H, V], R_T [B, H, 3, V, V], y_T, c_T [B, H, V])``."""
    return _DeltaLSTMTriton.apply(version, CS, _int_reset(reset), z.contiguous(), rk.contiguous(), rv.contiguous(),
                                  rbeta.contiguous(), R0.contiguous(), y0.contiguous(), c0.contiguous())


def rec_delta_recurrence(CS: int, reset: Tensor | None, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, P: Tensor,
                         W0: Tensor, y0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The Recurrent Delta Net with the stacked ``P [H, 3D+1, D]``: ``(y [B, T, H, D], W_T, y_T)``."""
    return _RecDeltaTriton.apply(CS, _int_reset(reset), q.contiguous(), k.contiguous(), v.contiguous(),
                                 beta.contiguous(), P.contiguous(), W0.contiguous(), y0.contiguous())
