"""Compiled CPU implementation (numba) of the Delta LSTM (paper.md A.6), registered as ``impl="compiled"``.

The feed-forward part ``z^g_t = W^g_t^T q^g_t`` does not depend on the recurrence, so it runs through
:func:`delta_rule` (its default implementation) exactly as in the ``checkpointed`` implementation. The recurrent
part (the three fast matrices ``R^g``, key-major ``[V, V]``, the output ``y`` and the cell ``c``) runs in one
machine-code loop per batch row, the heads inside the time loop. Per step t, with ``m = 1 - reset[b, t]`` and the
reset state ``R' = m R_{t-1}``, ``y' = m y_{t-1}``, ``c' = m c_{t-1}``:

    d^g = rv^g - R^g'^T rk^g;   R^g_t = R^g' + rbeta^g rk^g d^g^T      (retrieve with the old, write)
    a = softmax(y')  (v2-v4)  |  y'  (v1);    p^g = z^g_t + R^g_t^T a   (read with the new matrix)
    i = sigmoid(p^i),  o = sigmoid(p^o),  u = p^u (v4) | sigmoid(p^u) (v1-v3)
    c_t = i u + (1 - i) c';   h = o c_t;   y_t = h (v2, v4) | h + z^u_t (v3) | softmax(h) (v1)

Backward (hand-derived, :func:`_step_backward`). With ``gy`` the gradient of y_t (output gradient plus what step
t+1 sent back), ``gc`` that of c_t and ``G^g`` that of R^g_t:

    gh = y_t * (gy - <y_t, gy>)  (v1: softmax Jacobian)  |  gy  (v2-v4);   gz^u_t += gy  (v3 only)
    go = gh c_t;   gc_t = gc + gh o;   gi = gc_t (u - c');   gu = gc_t i;   gc' = gc_t (1 - i)
    gp^i = gi i (1 - i);   gp^o = go o (1 - o);   gp^u = gu (v4) | gu u (1 - u) (v1-v3);   gz^g_t += gp^g
    G^g += a gp^g^T;   ga = sum_g R^g_t gp^g
    grbeta^g = rk^g^T G^g d^g;   gd^g = rbeta^g G^g^T rk^g = grv^g;   grk^g = rbeta^g G^g d^g - R^g' gd^g
    gR^g' = G^g - rk^g gd^g^T
    gy' = a * (ga - <a, ga>)  (v2-v4: softmax Jacobian)  |  ga  (v1)
    gradients of R_{t-1}, y_{t-1}, c_{t-1}: m gR', m gy', m gc'

The kernels run one batch row per ``prange`` iteration and interleave its heads inside the time loop (``for t:
for h:``): consecutive steps of the loop body belong to independent heads, so the out-of-order core overlaps their
dependency chains. They read the inputs and write the outputs and input gradients in their batch-first
``[B, T, H, 3, V]`` layout (no transposing copies) and compile with reassociation and contraction allowed
(``nb.reordering_kernel``), so that the loops over ``V`` vectorise. ``R`` is key-major (``R[g, k, v]``; every row
contiguous), the forward updates it in place and fuses the write, the read ``R_t^T a`` and the next step's old
value ``R_t^T rk_{t+1}`` into one pass over ``R`` (a reset at ``t + 1`` scales that old value by ``m_{t+1}``, as it
scales ``R_t``). The forward keeps the state at the start of every chunk of ``checkpoint_every`` steps
(``[B, H, NC, ...]``); the backward recomputes one chunk of every head of its row from them with the forward's
step (the reset applied in place, so the buffers hold ``R', y', c'``) into per-row buffers and walks the chunk
backwards, head by head within each step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..common import numba as nb
from ..common.checks import check_float_tensor
from ..common.delta import feed_forward
from ..common.numba import as_numpy as _np  # a contiguous numpy view, short for the kernel calls
from ..common.registry import register
from ..common.scan import checkpoint_interval
from ..states import DeltaLSTMState
from . import prepare

# ------------------------------------------------------------------------------------------------ kernels

@nb.inline_kernel
def _old_value(R, r0, r1, rk, b, t, h, old):
    """``old[h, g] = R[r0, r1, g]^T rk[b, t, h, g]`` for every gate (``R [., ., G, V, V]``, ``old [H, G, V]``)."""
    G, V = old.shape[1], old.shape[2]
    for g in range(G):
        for v in range(V):
            old[h, g, v] = old.dtype.type(0)
        for k in range(V):
            r = rk[b, t, h, g, k]
            for v in range(V):
                old[h, g, v] += R[r0, r1, g, k, v] * r


@nb.inline_kernel
def _scale(m, R, r0, r1, Rr, q0, q1, y, c):
    """The reset ``Rr[q0, q1] = m R[r0, r1]`` (``[G, V, V]``; may be the same), ``y *= m``, ``c *= m`` (multiply, not
    assign, so that the semantics match the reference exactly)."""
    G, V = R.shape[2], R.shape[3]
    for g in range(G):
        for k in range(V):
            for v in range(V):
                Rr[q0, q1, g, k, v] = R[r0, r1, g, k, v] * m
    for v in range(V):
        y[v] *= m
        c[v] *= m


@nb.inline_kernel
def _step(version, Rp, p0, p1, Rn, n0, n1, m, old, b, t, h, z, rk, rv, rbeta, a, c, d, gate, y):
    """Head ``h`` of batch row ``b``, step ``t``, after the reset. ``Rp[p0, p1] [G, V, V]`` = R' (the reset state);
    ``R_t`` goes to ``Rn[n0, n1]`` (may be the same array and index). ``old[h] [G, V]``: ``R_{t-1}^T rk_t`` (before the
    reset) on entry, ``R_t^T rk_{t+1}`` on exit (the next step's old value, fused into the write). ``a [V]``: y' on
    entry, the fed-back ``a_t`` on exit; ``c [V]``: c' on entry, ``c_t`` on exit. Writes the write residuals
    ``d [G, V]``, ``gate [G, V]`` = (i, u, o) and ``y [V]`` = ``y_t``. The backward needs exactly these."""
    G, V = d.shape
    T = z.shape[1]
    zero = y.dtype.type(0)
    one = y.dtype.type(1)
    if version != 1:
        nb.softmax_inplace(a)
    tn = t + 1 if t + 1 < T else t
    for g in range(G):
        bt = rbeta[b, t, h, g]
        for v in range(V):
            d[g, v] = rv[b, t, h, g, v] - m * old[h, g, v]  # (m R_{t-1})^T rk_t
            gate[g, v] = zero
            old[h, g, v] = zero
        # the write R_t = R' + rbeta rk d^T and both reads of R_t (the recurrent term, the next old value)
        for k in range(V):
            w = bt * rk[b, t, h, g, k]
            ak = a[k]
            kn = rk[b, tn, h, g, k]
            for v in range(V):
                r = Rp[p0, p1, g, k, v] + w * d[g, v]
                Rn[n0, n1, g, k, v] = r
                gate[g, v] += ak * r
                old[h, g, v] += kn * r
        for v in range(V):
            gate[g, v] = z[b, t, h, g, v] + gate[g, v]  # pre-activation p^g
    for v in range(V):
        i = one / (one + np.exp(-gate[0, v]))
        u = gate[1, v] if version == 4 else one / (one + np.exp(-gate[1, v]))
        o = one / (one + np.exp(-gate[2, v]))
        gate[0, v] = i
        gate[1, v] = u
        gate[2, v] = o
        cn = i * u + (one - i) * c[v]
        c[v] = cn
        if version == 3:
            y[v] = o * cn + z[b, t, h, 1, v]
        else:
            y[v] = o * cn
    if version == 1:
        nb.softmax_inplace(y)


@nb.reordering_kernel
def _forward_row(version, C, b, z, rk, rv, rbeta, keep, R0, y0, c0, ys, RT, yT, cT, cpR, cpy, cpc):
    """Batch row ``b``: z, rk, rv ``[B, T, H, 3, V]``, rbeta ``[B, T, H, 3]``, keep ``[B, T]``, R0
    ``[B, H, 3, V, V]``, y0, c0 ``[B, H, V]``. Writes ys ``[B, T, H, V]``, the final RT, yT, cT and the state at
    the start of every chunk of ``C`` steps (before that step's reset) into cpR ``[B, H, NC, 3, V, V]``, cpy, cpc
    ``[B, H, NC, V]``."""
    T, H, G, V = z.shape[1], z.shape[2], z.shape[3], z.shape[4]
    dt = z.dtype
    old = np.empty((H, G, V), dt)  # R_{t-1}^T rk_t, computed by the previous step
    yc = np.empty((H, V), dt)  # y_{t-1} of every head
    a = np.empty(V, dt)
    d = np.empty((G, V), dt)
    gate = np.empty((G, V), dt)
    y = np.empty(V, dt)
    for h in range(H):  # the running state lives in the outputs RT, cT
        for v in range(V):
            yc[h, v] = y0[b, h, v]
            cT[b, h, v] = c0[b, h, v]
        for g in range(G):
            for k in range(V):
                for v in range(V):
                    RT[b, h, g, k, v] = R0[b, h, g, k, v]
        if T > 0:
            _old_value(RT, b, h, rk, b, 0, h, old)
    for t in range(T):
        m = keep[b, t]
        if t % C == 0:
            n = t // C
            for h in range(H):
                for v in range(V):
                    cpy[b, h, n, v] = yc[h, v]
                    cpc[b, h, n, v] = cT[b, h, v]
                for g in range(G):
                    for k in range(V):
                        for v in range(V):
                            cpR[b, h, n, g, k, v] = RT[b, h, g, k, v]
        for h in range(H):
            for v in range(V):
                a[v] = yc[h, v]
            if m != 1.0:
                _scale(m, RT, b, h, RT, b, h, a, cT[b, h])
            _step(version, RT, b, h, RT, b, h, m, old, b, t, h, z, rk, rv, rbeta, a, cT[b, h], d, gate, y)
            for v in range(V):
                yc[h, v] = y[v]
                ys[b, t, h, v] = y[v]
    for h in range(H):
        for v in range(V):
            yT[b, h, v] = yc[h, v]


@nb.reordering_kernel
def _backward_row(version, C, b, z, rk, rv, rbeta, keep, cpR, cpy, cpc, gys, gRT, gyT, gcT,
                  gz, grk, grv, grbeta, gR0, gy0, gc0):
    """Batch row ``b``: the inputs of :func:`_forward_row`, its checkpoints, the output gradients gys
    ``[B, T, H, V]``, gRT ``[B, H, 3, V, V]``, gyT, gcT ``[B, H, V]``. Writes gz, grk, grv ``[B, T, H, 3, V]``,
    grbeta ``[B, T, H, 3]`` and the initial-state gradients gR0, gy0, gc0."""
    T, H, G, V = z.shape[1], z.shape[2], z.shape[3], z.shape[4]
    NC = cpR.shape[2]
    dt = z.dtype
    zero = dt.type(0)
    one = dt.type(1)
    # the running gradients w.r.t. R_t, y_t (output gradient included) and c_t live in the outputs gR0, gy0, gc0
    for h in range(H):
        for v in range(V):
            gy0[b, h, v] = gyT[b, h, v] + gys[b, T - 1, h, v]
            gc0[b, h, v] = gcT[b, h, v]
        for g in range(G):
            for k in range(V):
                for v in range(V):
                    gR0[b, h, g, k, v] = gRT[b, h, g, k, v]
    # chunk buffers per head: Rb[h, l], yb[h, l], cb[h, l] = the state before step t0 + l (before its reset; the
    # reset state R' of a reset step goes to the scratch Rr), l = 0..L; ab, db, gb: the step's a_t, d_t and gates
    Rb = np.empty((H, C + 1, G, V, V), dt)
    yb = np.empty((H, C + 1, V), dt)
    cb = np.empty((H, C + 1, V), dt)
    ab = np.empty((H, C, V), dt)
    db = np.empty((H, C, G, V), dt)
    gb = np.empty((H, C, G, V), dt)
    Rr = np.empty((1, 1, G, V, V), dt)
    old = np.empty((H, G, V), dt)
    a = np.empty(V, dt)
    cn = np.empty(V, dt)
    d = np.empty((G, V), dt)
    gate = np.empty((G, V), dt)
    y = np.empty(V, dt)
    gh = np.empty(V, dt)
    gp = np.empty((G, V), dt)
    ga = np.empty(V, dt)
    gd = np.empty(V, dt)
    for ci in range(NC - 1, -1, -1):
        t0 = ci * C
        L = min(C, T - t0)
        for h in range(H):
            for v in range(V):
                yb[h, 0, v] = cpy[b, h, ci, v]
                cb[h, 0, v] = cpc[b, h, ci, v]
            for g in range(G):
                for k in range(V):
                    for v in range(V):
                        Rb[h, 0, g, k, v] = cpR[b, h, ci, g, k, v]
            _old_value(Rb, h, 0, rk, b, t0, h, old)
        for l in range(L):  # recompute the chunk with the forward's step
            t = t0 + l
            m = keep[b, t]
            for h in range(H):
                for v in range(V):
                    a[v] = yb[h, l, v]
                    cn[v] = cb[h, l, v]
                if m != 1.0:
                    _scale(m, Rb, h, l, Rr, 0, 0, a, cn)
                    _step(version, Rr, 0, 0, Rb, h, l + 1, m, old, b, t, h, z, rk, rv, rbeta, a, cn, d, gate, y)
                else:
                    _step(version, Rb, h, l, Rb, h, l + 1, m, old, b, t, h, z, rk, rv, rbeta, a, cn, d, gate, y)
                for v in range(V):
                    ab[h, l, v] = a[v]
                    cb[h, l + 1, v] = cn[v]
                    yb[h, l + 1, v] = y[v]
                for g in range(G):
                    for v in range(V):
                        db[h, l, g, v] = d[g, v]
                        gb[h, l, g, v] = gate[g, v]
        for l in range(L - 1, -1, -1):
            t = t0 + l
            m = keep[b, t]
            for h in range(H):
                # the output: y = softmax(h) (v1) | h (+ z^u for v3); gy0[b, h] is the whole gradient of y_t
                if version == 1:
                    s = zero
                    for v in range(V):
                        s += gy0[b, h, v] * yb[h, l + 1, v]
                    for v in range(V):
                        gh[v] = yb[h, l + 1, v] * (gy0[b, h, v] - s)
                else:
                    for v in range(V):
                        gh[v] = gy0[b, h, v]
                # h = o c_t;  c_t = i u + (1 - i) c';  the gates from the pre-activations p
                for v in range(V):
                    i, u, o = gb[h, l, 0, v], gb[h, l, 1, v], gb[h, l, 2, v]
                    go = gh[v] * cb[h, l + 1, v]
                    gct = gc0[b, h, v] + gh[v] * o
                    gi = gct * (u - m * cb[h, l, v])  # c' = m c_{t-1}
                    gu = gct * i
                    gc0[b, h, v] = m * (gct * (one - i))
                    gp[0, v] = gi * i * (one - i)
                    gp[1, v] = gu if version == 4 else gu * u * (one - u)
                    gp[2, v] = go * o * (one - o)
                    gz[b, t, h, 0, v] = gp[0, v]
                    gz[b, t, h, 1, v] = gp[1, v] + gy0[b, h, v] if version == 3 else gp[1, v]
                    gz[b, t, h, 2, v] = gp[2, v]
                    ga[v] = zero
                for g in range(G):
                    bt = rbeta[b, t, h, g]
                    for v in range(V):
                        gd[v] = zero
                    gbt = zero
                    # pass 1, row by row: the read p = z + R_t^T a gives ga and adds a gp^T to dL/dR_t; with the
                    # completed row of dL/dR_t =: G, the write R_t = R' + rbeta rk d^T gives dL/drbeta = rk^T G d,
                    # dL/drk = rbeta G d (direct part) and dL/dd = rbeta G^T rk (accumulated in gd)
                    for k in range(V):
                        ak = ab[h, l, k]
                        r = rk[b, t, h, g, k]
                        acc_a = zero
                        sd = zero
                        for v in range(V):
                            acc_a += Rb[h, l + 1, g, k, v] * gp[g, v]
                            G_ = gR0[b, h, g, k, v] + ak * gp[g, v]
                            gR0[b, h, g, k, v] = G_
                            sd += G_ * db[h, l, g, v]
                            gd[v] += r * G_
                        ga[k] += acc_a
                        grk[b, t, h, g, k] = bt * sd
                        gbt += r * sd
                    grbeta[b, t, h, g] = gbt
                    for v in range(V):
                        gd[v] = bt * gd[v]  # dL/dd = dL/drv
                        grv[b, t, h, g, v] = gd[v]
                    # pass 2: the residual d = rv - R'^T rk (R' = m R_{t-1}): dL/dR' = G - rk gd^T, dL/drk -= R' gd;
                    # then the reset
                    for k in range(V):
                        r = rk[b, t, h, g, k]
                        acc = zero
                        for v in range(V):
                            acc += Rb[h, l, g, k, v] * gd[v]
                            gR0[b, h, g, k, v] = (gR0[b, h, g, k, v] - r * gd[v]) * m
                        grk[b, t, h, g, k] -= m * acc
                # the fed-back copy a = y' (v1) | softmax(y') (v2-v4), y' = m y_{t-1}; plus y_{t-1}'s output gradient
                if version == 1:
                    for v in range(V):
                        gy0[b, h, v] = m * ga[v]
                else:
                    s = zero
                    for v in range(V):
                        s += ga[v] * ab[h, l, v]
                    for v in range(V):
                        gy0[b, h, v] = m * (ab[h, l, v] * (ga[v] - s))
                if t > 0:
                    for v in range(V):
                        gy0[b, h, v] += gys[b, t - 1, h, v]


# the parallel kernels only distribute the batch rows: a small prange body keeps numba's (slow) parallel
# compilation short; the per-row work is compiled once as a plain function


@nb.parallel_kernel
def _forward_kernel(version, C, z, rk, rv, rbeta, keep, R0, y0, c0, ys, RT, yT, cT, cpR, cpy, cpc):
    for b in nb.prange(z.shape[0]):
        _forward_row(version, C, b, z, rk, rv, rbeta, keep, R0, y0, c0, ys, RT, yT, cT, cpR, cpy, cpc)


@nb.parallel_kernel
def _backward_kernel(version, C, z, rk, rv, rbeta, keep, cpR, cpy, cpc, gys, gRT, gyT, gcT,
                     gz, grk, grv, grbeta, gR0, gy0, gc0):
    for b in nb.prange(z.shape[0]):
        _backward_row(version, C, b, z, rk, rv, rbeta, keep, cpR, cpy, cpc, gys, gRT, gyT, gcT,
                      gz, grk, grv, grbeta, gR0, gy0, gc0)


# ------------------------------------------------------------------------------------------ autograd glue


# The recurrence is a pair of custom ops (forward, backward) with fake implementations (shapes only) and a
# registered autograd: torch.compile treats the numba kernels as opaque nodes of its graph instead of tracing
# into NumPy. The forward also returns the chunk-start states the backward needs.


@torch.library.custom_op("fastweights::delta_lstm_recurrence", mutates_args=())
def _recurrence(version: int, checkpoint_every: int, keep: Tensor, z: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor,
                R0: Tensor, y0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(z, rk, rv [B, T, H, 3, V], rbeta [B, T, H, 3], R0 [B, H, 3, V, V], y0, c0 [B, H, V])``, ``keep [B, T]``
    -> ``(y [B, T, H, V], R_T, y_T, c_T, cpR [B, H, NC, 3, V, V], cpy, cpc [B, H, NC, V])``."""
    B, T, H, G, V = z.shape
    dt = nb.np_dtype(z.dtype)
    NC = -(-T // checkpoint_every)
    ys = np.empty((B, T, H, V), dt)
    RT, yT, cT = np.empty((B, H, G, V, V), dt), np.empty((B, H, V), dt), np.empty((B, H, V), dt)
    cpR, cpy, cpc = np.empty((B, H, NC, G, V, V), dt), np.empty((B, H, NC, V), dt), np.empty((B, H, NC, V), dt)
    nb.sync_threads()
    _forward_kernel(version, checkpoint_every, _np(z), _np(rk), _np(rv), _np(rbeta), _np(keep), _np(R0), _np(y0),
                    _np(c0), ys, RT, yT, cT, cpR, cpy, cpc)
    return tuple(torch.from_numpy(x) for x in (ys, RT, yT, cT, cpR, cpy, cpc))


@_recurrence.register_fake
def _(version, checkpoint_every, keep, z, rk, rv, rbeta, R0, y0, c0):
    B, T, H, G, V = z.shape
    NC = -(-T // checkpoint_every)
    return (z.new_empty(B, T, H, V), z.new_empty(B, H, G, V, V), z.new_empty(B, H, V), z.new_empty(B, H, V),
            z.new_empty(B, H, NC, G, V, V), z.new_empty(B, H, NC, V), z.new_empty(B, H, NC, V))


@torch.library.custom_op("fastweights::delta_lstm_recurrence_backward", mutates_args=())
def _recurrence_backward(version: int, checkpoint_every: int, keep: Tensor, z: Tensor, rk: Tensor, rv: Tensor,
                         rbeta: Tensor, cpR: Tensor, cpy: Tensor, cpc: Tensor, g_y: Tensor, g_R: Tensor,
                         g_yT: Tensor, g_cT: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of z, rk, rv, rbeta, R0, y0, c0 from those of y, R_T, y_T, c_T."""
    B, T, H, G, V = z.shape
    dt = nb.np_dtype(z.dtype)
    gz, grk, grv = (np.empty((B, T, H, G, V), dt) for _ in range(3))
    grbeta = np.empty((B, T, H, G), dt)
    gR0, gy0, gc0 = np.empty((B, H, G, V, V), dt), np.empty((B, H, V), dt), np.empty((B, H, V), dt)
    nb.sync_threads()
    _backward_kernel(version, checkpoint_every, _np(z), _np(rk), _np(rv), _np(rbeta), _np(keep), _np(cpR), _np(cpy),
                     _np(cpc), *(_np(g.to(z.dtype)) for g in (g_y, g_R, g_yT, g_cT)), gz, grk, grv, grbeta, gR0, gy0,
                     gc0)
    return tuple(torch.from_numpy(x) for x in (gz, grk, grv, grbeta, gR0, gy0, gc0))


@_recurrence_backward.register_fake
def _(version, checkpoint_every, keep, z, rk, rv, rbeta, cpR, cpy, cpc, g_y, g_R, g_yT, g_cT):
    B, T, H, G, V = z.shape
    return (z.new_empty(B, T, H, G, V), z.new_empty(B, T, H, G, V), z.new_empty(B, T, H, G, V),
            z.new_empty(B, T, H, G), z.new_empty(B, H, G, V, V), z.new_empty(B, H, V), z.new_empty(B, H, V))


def _setup_context(ctx, inputs, output) -> None:
    version, checkpoint_every, keep, z, rk, rv, rbeta = inputs[:7]
    ctx.version, ctx.checkpoint_every = version, checkpoint_every
    ctx.save_for_backward(keep, z, rk, rv, rbeta, *output[4:])


def _backward(ctx, g_y, g_R, g_yT, g_cT, *_checkpoints):
    keep, z, rk, rv, rbeta, cpR, cpy, cpc = ctx.saved_tensors
    grads = _recurrence_backward(ctx.version, ctx.checkpoint_every, keep, z, rk, rv, rbeta, cpR, cpy, cpc, g_y, g_R,
                                 g_yT, g_cT)
    return (None, None, None, *(g if need else None for g, need in zip(grads, ctx.needs_input_grad[3:])))


_recurrence.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------------------------ the op


@register("delta_lstm", "compiled", priority=20, available=nb.numba_missing, devices=("cpu",))
def delta_lstm_compiled(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor, *,
                        version: int = 4, initial_state: DeltaLSTMState | tuple | None = None,
                        reset: Tensor | None = None, output_final_state: bool = False,
                        checkpoint_every: int | None = None) -> tuple[Tensor, DeltaLSTMState | None]:
    """Delta LSTM with the recurrence in compiled CPU kernels; arguments and results as :func:`delta_lstm`.

    Args:
        q, k: ``[B, T, H, 3, K]``; v, rk, rv: ``[B, T, H, 3, V]``; beta, rbeta: ``[B, T, H, 3]``.
        initial_state: ``DeltaLSTMState(W [B,H,3,K,V], R [B,H,3,V,V], y [B,H,V], c [B,H,V])`` or None.
        reset: bool ``[B, T]``. checkpoint_every: steps per stored state (default ~sqrt(T)).
    Returns:
        ``(y [B, T, H, V] in q's dtype, DeltaLSTMState or None)``.
    """
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y0, c0), reset = prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    B, T = q.shape[:2]
    C = checkpoint_interval(checkpoint_every, T)
    nb.check_runnable("delta_lstm", q)
    z, W = feed_forward(q, k, v, beta, W0, reset)
    y, R, y_last, c = _recurrence(version, C, nb.keep_tensor(reset, B, T, z.dtype), z, rk, rv, rbeta, R0, y0, c0)[:4]
    final = DeltaLSTMState(W, R, y_last, c) if output_final_state else None
    return y.to(in_dtype), final
