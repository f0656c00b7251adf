"""Compiled CPU implementation of the Delta RNN (numba; paper.md A.5).

The feed-forward part ``z_t = W_t^T q_t`` does not depend on the recurrence and runs, as in the
``checkpointed`` implementation, through :func:`delta_rule`. Only the (R, y) recursion is compiled,
as in :mod:`~fastweights.ops.common.compiled_linear`: one machine-code function per batch row (``prange`` over B),
with the heads interleaved inside the time loop (``for t: for h:``, so the out-of-order core overlaps the
dependency chains of different heads), the per-head state ``[H, V, V]`` of the row in L1/L2, small per-step vectors
in scratch arrays allocated once per row, and the inputs and outputs in their ``[B, T, H, V]`` layout (no
transposing copy). The step is written once (inlined at numba's IR level into the forward and into the backward's
recomputation, indexing whole arrays: a call or a sliced view per head and step costs as much as the step at
V = 16); the row kernels let reductions be reordered and multiply-adds fused (``nb.reordering_kernel``), and every
accumulator has the inputs' dtype.

Per head and step t (key-major ``R [V, V]``; ``m_t = 1 - reset[b, t]`` multiplies R and y first):

    d_t = rv_t - (m_t R_{t-1})^T rk_t     (retrieval with the OLD matrix)
    u_t = rbeta_t d_t
    R_t = m_t R_{t-1} + rk_t u_t^T
    v2: s_t = softmax(m_t y_{t-1});  y_t = z_t + R_t^T s_t
    v1: s_t = m_t y_{t-1};           y_t = softmax(z_t + R_t^T s_t)

One pass over R makes the write and both reads of the new matrix: the output ``R_t^T s_t`` and the next step's old
value ``R_t^T rk_{t+1}`` (a reset at t + 1 scales it by ``m_{t+1}``, as it scales ``R_t``). Key-major, all three are
row updates over contiguous rows (they vectorise).

Backward (hand-derived). With ``gy`` the gradient w.r.t. ``y_t`` (output gradient plus what step t+1 sent back)
and ``gR`` the gradient w.r.t. ``R_t``:

    ga   = gy                              (v2)   |   y_t * (gy - <y_t, gy>)   (v1: softmax Jacobian)
    gz_t = ga
    gR  += s_t ga^T                        (the read uses the NEW matrix R_t)
    gs   = R_t ga
    gu   = gR^T rk_t
    grk_t = gR u_t - rbeta_t m_t R_{t-1} gu     (the write's key, and the retrieval's key through d_t)
    grv_t = rbeta_t gu;   grbeta_t = <gu, d_t>
    gR_{t-1} = m_t (gR - rbeta_t rk_t gu^T)     (R_{t-1} reaches R_t directly and through the old value)
    gy_{t-1} = m_t (s_t * (gs - <s_t, gs>))     (v2: softmax Jacobian)  |  m_t gs   (v1)

The forward keeps R and y at the start of every chunk of ``checkpoint_every`` steps (nothing else); the backward
recomputes a chunk's R, y, s_t and d_t of every head of the row from its checkpoint (the forward's arithmetic) into
per-row buffers and walks the chunk backwards, all heads per step. The backward keeps states and gradients key-major:
``gu = gR^T rk`` is a row update and ``R_t ga``, ``gR u``, ``R_{t-1} gu`` are dot products along rows. Holding
them value-major instead (with a value-major copy of each recomputed state, as compiled_linear's backward does) was
measured slower here at V = 16 and V = 64, as was keeping gR in both layouts.
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
from ..states import DeltaRNNState
from . import prepare

# ------------------------------------------------------------------------------------------------- kernels

@nb.inline_kernel
def _old_value(R, r0, r1, rk, b, t, h, old):
    """``old[h] = R[r0, r1]^T rk[b, t, h]`` (``R [., ., V, V]``, ``rk [B, T, H, V]``, ``old [H, V]``)."""
    V = old.shape[1]
    for j in range(V):
        old[h, j] = old.dtype.type(0)
    for i in range(V):
        ki = rk[b, t, h, i]
        for j in range(V):
            old[h, j] += R[r0, r1, i, j] * ki


@nb.inline_kernel
def _step(v2, Rp, p0, p1, Rn, n0, n1, m, old, b, t, h, z, rk, rv, rbeta, s, d, u, y):
    """Head ``h`` of batch row ``b``, step ``t``. ``Rp[p0, p1]``: the state before the step (not yet masked); the new
    state ``R_t`` goes to ``Rn[n0, n1]`` (may be the same). ``old[h]``: ``R_{t-1}^T rk_t`` on entry, ``R_t^T
    rk_{t+1}`` on exit (the next step's old value, fused into the write). ``s [V]``: ``m_t y_{t-1}`` on entry,
    the read vector ``s_t`` on exit; writes ``d_t``, ``u_t`` and ``y_t`` into ``d, u, y [V]``."""
    V = y.shape[0]
    T = z.shape[1]
    zero = y.dtype.type(0)
    bt = rbeta[b, t, h]
    for j in range(V):
        dj = rv[b, t, h, j] - m * old[h, j]  # (m R_{t-1})^T rk_t
        d[j] = dj
        u[j] = bt * dj
        y[j] = zero
        old[h, j] = zero
    if v2:
        nb.softmax_inplace(s)
    tn = t + 1 if t + 1 < T else t
    # the write and both reads of R_t (the output, the next step's old value) in one pass over R
    if m != 1.0:  # reset: multiply (not assign) so that the semantics match the reference exactly
        for i in range(V):
            ki = rk[b, t, h, i]
            si = s[i]
            kn = rk[b, tn, h, i]
            for j in range(V):
                r = Rp[p0, p1, i, j] * m + ki * u[j]
                Rn[n0, n1, i, j] = r
                y[j] += r * si
                old[h, j] += r * kn
    else:
        for i in range(V):
            ki = rk[b, t, h, i]
            si = s[i]
            kn = rk[b, tn, h, i]
            for j in range(V):
                r = Rp[p0, p1, i, j] + ki * u[j]
                Rn[n0, n1, i, j] = r
                y[j] += r * si
                old[h, j] += r * kn
    for j in range(V):
        y[j] = z[b, t, h, j] + y[j]
    if not v2:
        nb.softmax_inplace(y)


@nb.reordering_kernel
def _forward_row(v2, C, b, z, rk, rv, rbeta, keep, R0, y0, ys, RT, yT, Rcp, ycp):
    """Batch row ``b``: z, rk, rv ``[B, T, H, V]``, rbeta ``[B, T, H]``, keep ``[B, T]``, R0 ``[B, H, V, V]``,
    y0 ``[B, H, V]``; writes ys ``[B, T, H, V]``, the final RT ``[B, H, V, V]`` / yT ``[B, H, V]`` and the
    chunk-start states Rcp ``[B, H, NC, V, V]`` / ycp ``[B, H, NC, V]``."""
    T, H, V = z.shape[1], z.shape[2], z.shape[3]
    dt = z.dtype
    old = np.empty((H, V), dt)  # R_{t-1}^T rk_t, computed by the previous step
    yc = np.empty((H, V), dt)  # y_{t-1} of every head
    s = np.empty(V, dt)
    d = np.empty(V, dt)
    u = np.empty(V, dt)
    y = np.empty(V, dt)
    for h in range(H):  # the running state lives in the output RT
        for i in range(V):
            yc[h, i] = y0[b, h, i]
            for j in range(V):
                RT[b, h, i, j] = R0[b, h, i, j]
        if T > 0:
            _old_value(RT, b, h, rk, b, 0, h, old)
    for t in range(T):
        m = keep[b, t]
        if t % C == 0:
            c = t // C
            for h in range(H):
                for i in range(V):
                    ycp[b, h, c, i] = yc[h, i]
                    for j in range(V):
                        Rcp[b, h, c, i, j] = RT[b, h, i, j]
        for h in range(H):
            for j in range(V):
                s[j] = yc[h, j] * m
            _step(v2, RT, b, h, RT, b, h, m, old, b, t, h, z, rk, rv, rbeta, s, d, u, y)
            for j in range(V):
                yc[h, j] = y[j]
                ys[b, t, h, j] = y[j]
    for h in range(H):
        for j in range(V):
            yT[b, h, j] = yc[h, j]


@nb.reordering_kernel
def _backward_row(v2, C, b, z, rk, rv, rbeta, keep, Rcp, ycp, gys, gRT, gyT, gz, grk, grv, grbeta, gR0, gy0):
    """Batch row ``b``: the inputs of :func:`_forward_row`, its saved Rcp and ycp, the output gradients gys
    ``[B, T, H, V]``, gRT ``[B, H, V, V]``, gyT ``[B, H, V]``; writes gz, grk, grv ``[B, T, H, V]``, grbeta
    ``[B, T, H]``, gR0 ``[B, H, V, V]`` and gy0 ``[B, H, V]``."""
    T, H, V = z.shape[1], z.shape[2], z.shape[3]
    NC = Rcp.shape[2]
    dt = z.dtype
    zero = dt.type(0)
    # the running gradients w.r.t. R_t and y_t live in the outputs gR0 and gy0
    for h in range(H):
        for i in range(V):
            gy0[b, h, i] = gyT[b, h, i] + (gys[b, T - 1, h, i] if T > 0 else zero)
            for j in range(V):
                gR0[b, h, i, j] = gRT[b, h, i, j]
    # chunk buffers per head: Rb[h, l] / yb[h, l] = state before step t0 + l (unmasked), l = 0..L; sb, db: s_t, d_t
    Rb = np.empty((H, C + 1, V, V), dt)
    yb = np.empty((H, C + 1, V), dt)
    sb = np.empty((H, C, V), dt)
    db = np.empty((H, C, V), dt)
    old = np.empty((H, V), dt)
    s = np.empty(V, dt)
    d = np.empty(V, dt)
    u = np.empty(V, dt)
    y = np.empty(V, dt)
    ga = np.empty(V, dt)
    gs = np.empty(V, dt)
    gu = np.empty(V, dt)
    for c in range(NC - 1, -1, -1):
        t0 = c * C
        L = min(C, T - t0)
        for h in range(H):
            for i in range(V):
                yb[h, 0, i] = ycp[b, h, c, i]
                for j in range(V):
                    Rb[h, 0, i, j] = Rcp[b, h, c, i, j]
            _old_value(Rb, h, 0, rk, b, t0, h, old)
        for l in range(L):  # recompute the chunk with the forward's arithmetic
            t = t0 + l
            m = keep[b, t]
            for h in range(H):
                for j in range(V):
                    s[j] = yb[h, l, j] * m
                _step(v2, Rb, h, l, Rb, h, l + 1, m, old, b, t, h, z, rk, rv, rbeta, s, d, u, y)
                for j in range(V):
                    yb[h, l + 1, j] = y[j]
                    sb[h, l, j] = s[j]
                    db[h, l, j] = d[j]
        for l in range(L - 1, -1, -1):
            t = t0 + l
            m = keep[b, t]
            for h in range(H):
                bt = rbeta[b, t, h]
                if v2:
                    for j in range(V):
                        ga[j] = gy0[b, h, j]
                else:  # softmax Jacobian at y_t
                    dot = zero
                    for j in range(V):
                        dot += yb[h, l + 1, j] * gy0[b, h, j]
                    for j in range(V):
                        ga[j] = yb[h, l + 1, j] * (gy0[b, h, j] - dot)
                for j in range(V):
                    gz[b, t, h, j] = ga[j]
                    gu[j] = zero
                    u[j] = bt * db[h, l, j]
                # pass 1: the read's gradient into gR, then (gR now the whole gradient of R_t) gu and grk
                for i in range(V):
                    si = sb[h, l, i]
                    ki = rk[b, t, h, i]
                    acc_s = zero
                    acc_k = zero
                    for j in range(V):
                        acc_s += Rb[h, l + 1, i, j] * ga[j]
                        g = gR0[b, h, i, j] + si * ga[j]
                        gR0[b, h, i, j] = g
                        gu[j] += g * ki
                        acc_k += g * u[j]
                    gs[i] = acc_s
                    grk[b, t, h, i] = acc_k
                gb = zero
                for j in range(V):
                    gb += gu[j] * db[h, l, j]
                    grv[b, t, h, j] = bt * gu[j]
                    gu[j] = -bt * gu[j]  # now the gradient of the old value (m R_{t-1})^T rk_t
                grbeta[b, t, h] = gb
                # pass 2: the old value into grk and gR, then the reset mask
                for i in range(V):
                    ki = rk[b, t, h, i]
                    acc_k = zero
                    for j in range(V):
                        acc_k += Rb[h, l, i, j] * gu[j]
                        gR0[b, h, i, j] = (gR0[b, h, i, j] + ki * gu[j]) * m
                    grk[b, t, h, i] += m * acc_k
                # the gradient of y_{t-1}: through the read vector s_t, plus the output gradient
                if v2:
                    dot = zero
                    for j in range(V):
                        dot += sb[h, l, j] * gs[j]
                    for j in range(V):
                        gy0[b, h, j] = m * (sb[h, l, j] * (gs[j] - dot))
                else:
                    for j in range(V):
                        gy0[b, h, j] = m * gs[j]
                if t > 0:
                    for j in range(V):
                        gy0[b, h, j] += gys[b, t - 1, h, j]


# the parallel kernels only distribute the batch rows: a small prange body keeps numba's (slow) parallel
# compilation short; the per-row work is compiled once as a plain function


@nb.parallel_kernel
def _forward_kernel(v2, C, z, rk, rv, rbeta, keep, R0, y0, ys, RT, yT, Rcp, ycp):
    for b in nb.prange(z.shape[0]):
        _forward_row(v2, C, b, z, rk, rv, rbeta, keep, R0, y0, ys, RT, yT, Rcp, ycp)


@nb.parallel_kernel
def _backward_kernel(v2, C, z, rk, rv, rbeta, keep, Rcp, ycp, gys, gRT, gyT, gz, grk, grv, grbeta, gR0, gy0):
    for b in nb.prange(z.shape[0]):
        _backward_row(v2, C, b, z, rk, rv, rbeta, keep, Rcp, ycp, gys, gRT, gyT, gz, grk, grv, grbeta, gR0, gy0)


# ------------------------------------------------------------------------------------------------- autograd


# The recurrence is a pair of custom ops (forward, backward) with fake implementations (shapes only) and a
# registered autograd: torch.compile treats the numba kernels as opaque nodes of its graph instead of tracing
# into NumPy. The forward also returns the chunk-start states the backward needs (Rcp, ycp).


@torch.library.custom_op("fastweights::delta_rnn_recurrence", mutates_args=())
def _recurrence(v2: bool, C: int, keep: Tensor, z: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor, R0: Tensor,
                y0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(z, rk, rv [B, T, H, V], rbeta [B, T, H], R0 [B, H, V, V], y0 [B, H, V])``, ``keep [B, T]`` (1 - reset)
    -> ``(y [B, T, H, V], R_T [B, H, V, V], y_T [B, H, V], Rcp [B, H, NC, V, V], ycp [B, H, NC, V])``."""
    B, T, H, V = z.shape
    NC = -(-T // C)
    dt = nb.np_dtype(z.dtype)
    ys = np.empty((B, T, H, V), dt)
    RT = np.empty((B, H, V, V), dt)
    yT = np.empty((B, H, V), dt)
    Rcp = np.empty((B, H, NC, V, V), dt)
    ycp = np.empty((B, H, NC, V), dt)
    nb.sync_threads()
    _forward_kernel(v2, C, _np(z), _np(rk), _np(rv), _np(rbeta), _np(keep), _np(R0), _np(y0), ys, RT, yT, Rcp, ycp)
    return (torch.from_numpy(ys), torch.from_numpy(RT), torch.from_numpy(yT), torch.from_numpy(Rcp),
            torch.from_numpy(ycp))


@_recurrence.register_fake
def _(v2, C, keep, z, rk, rv, rbeta, R0, y0):
    B, T, H, V = z.shape
    NC = -(-T // C)
    return (z.new_empty(B, T, H, V), z.new_empty(B, H, V, V), z.new_empty(B, H, V), z.new_empty(B, H, NC, V, V),
            z.new_empty(B, H, NC, V))


@torch.library.custom_op("fastweights::delta_rnn_recurrence_backward", mutates_args=())
def _recurrence_backward(v2: bool, C: int, keep: Tensor, z: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor,
                         Rcp: Tensor, ycp: Tensor, g_ys: Tensor, g_RT: Tensor, g_yT: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of z, rk, rv, rbeta, R0, y0 from those of y, R_T, y_T."""
    B, T, H, V = z.shape
    dt = nb.np_dtype(z.dtype)
    gz, grk, grv = (np.empty((B, T, H, V), dt) for _ in range(3))
    grbeta = np.empty((B, T, H), dt)
    gR0 = np.empty((B, H, V, V), dt)
    gy0 = np.empty((B, H, V), dt)
    nb.sync_threads()
    _backward_kernel(v2, C, _np(z), _np(rk), _np(rv), _np(rbeta), _np(keep), _np(Rcp), _np(ycp),
                     _np(g_ys.to(z.dtype)), _np(g_RT.to(z.dtype)), _np(g_yT.to(z.dtype)), gz, grk, grv, grbeta,
                     gR0, gy0)
    return (torch.from_numpy(gz), torch.from_numpy(grk), torch.from_numpy(grv), torch.from_numpy(grbeta),
            torch.from_numpy(gR0), torch.from_numpy(gy0))


@_recurrence_backward.register_fake
def _(v2, C, keep, z, rk, rv, rbeta, Rcp, ycp, g_ys, g_RT, g_yT):
    B, T, H, V = z.shape
    return (z.new_empty(B, T, H, V), rk.new_empty(B, T, H, V), rv.new_empty(B, T, H, V), rbeta.new_empty(B, T, H),
            z.new_empty(B, H, V, V), z.new_empty(B, H, V))


def _setup_context(ctx, inputs, output) -> None:
    v2, C, keep, z, rk, rv, rbeta, _, _ = inputs
    ctx.v2, ctx.C = v2, C
    ctx.save_for_backward(keep, z, rk, rv, rbeta, output[3], output[4])


def _backward(ctx, g_ys, g_RT, g_yT, _g_Rcp, _g_ycp):
    keep, z, rk, rv, rbeta, Rcp, ycp = ctx.saved_tensors
    grads = _recurrence_backward(ctx.v2, ctx.C, keep, z, rk, rv, rbeta, Rcp, ycp, g_ys, g_RT, g_yT)
    return (None, None, None, *(g if need else None for g, need in zip(grads, ctx.needs_input_grad[3:])))


_recurrence.register_autograd(_backward, setup_context=_setup_context)


@register("delta_rnn", "compiled", priority=20, available=nb.numba_missing, devices=("cpu",))
def delta_rnn_compiled(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor, *, version: int = 2,
    initial_state: DeltaRNNState | tuple | None = None, reset: Tensor | None = None,
    output_final_state: bool = False, checkpoint_every: int | None = None,
) -> tuple[Tensor, DeltaRNNState | None]:
    """Same signature and semantics as ``delta_rnn(impl="checkpointed")``; the (R, y) recursion runs in numba
    kernels on CPU tensors.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; rk, rv: ``[B, T, H, V]``; rbeta:
            ``[B, T, H]``; initial_state: ``DeltaRNNState(W [B,H,K,V], R [B,H,V,V], y [B,H,V])`` or None;
            reset: bool ``[B, T]``; checkpoint_every: steps between stored (R, y) states (default ~sqrt(T)).
    Returns:
        ``(y [B, T, H, V] in q's dtype, DeltaRNNState or None)``.
    """
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta, rk, rv, rbeta), (W0, R0, y0), reset = prepare(
        q, k, v, beta, rk, rv, rbeta, version, initial_state, reset)
    B, T = q.shape[:2]
    C = checkpoint_interval(checkpoint_every, T)
    nb.check_runnable("delta_rnn", q)
    z, W = feed_forward(q, k, v, beta, W0, reset)
    y, R, y_last, _, _ = _recurrence(version == 2, C, nb.keep_tensor(reset, B, T, z.dtype), z, rk, rv, rbeta, R0, y0)
    final = DeltaRNNState(W, R, y_last) if output_final_state else None
    return y.to(in_dtype), final
