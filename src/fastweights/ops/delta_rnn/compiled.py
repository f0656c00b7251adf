"""Compiled CPU implementation of the Delta RNN (numba; paper.md A.5).

The feed-forward part ``z_t = W_t^T q_t`` does not depend on the recurrence and runs, as in the
``checkpointed`` implementation, through the chunked :func:`delta_rule`. Only the (R, y) recursion is compiled.
Per (b, h) and step t (key-major ``R [V, V]``; ``m_t = 1 - reset[b, t]`` multiplies R and y first):

    d_t = rv_t - R_{t-1}^T rk_t          (retrieval with the OLD matrix)
    u_t = rbeta_t d_t
    R_t = R_{t-1} + rk_t u_t^T
    v2: s_t = softmax(y_{t-1});  y_t = z_t + R_t^T s_t
    v1: s_t = y_{t-1};           y_t = softmax(z_t + R_t^T s_t)

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

The forward keeps R and y at the start of every chunk of ``checkpoint_every`` steps; the backward recomputes a chunk's
R_{t-1}, y_{t-1}, s_t and d_t from its checkpoint into per-(b, h) buffers and walks the chunk backwards.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..common import numba as nb
from ..common.checks import check_float_tensor
from ..common.delta import feed_forward
from ..common.numba import as_numpy, forward_outputs, from_bh_major, softmax_into, to_bh_major
from ..common.registry import register
from ..common.scan import checkpoint_interval
from ..states import DeltaRNNState
from . import prepare

# ------------------------------------------------------------------------------------------------- kernels


@nb.kernel
def _step(v2, R, y_prev, m, z, rk, rv, rbeta, d, u, s, y_out):
    """One step in place on ``R [V, V]`` (the state before step t, not yet masked); writes ``d_t = rv - R^T rk``,
    ``u_t = rbeta d_t``, the read vector ``s_t`` and ``y_t`` into ``d, u, s, y_out [V]``. ``y_prev`` is only read."""
    V = R.shape[0]
    if m != 1.0:  # reset: multiply (not assign) so that the semantics match the reference exactly
        for i in range(V):
            for j in range(V):
                R[i, j] *= m
    for j in range(V):
        d[j] = 0.0
    for i in range(V):
        rki = rk[i]
        for j in range(V):
            d[j] += R[i, j] * rki
    for j in range(V):
        d[j] = rv[j] - d[j]
        u[j] = rbeta * d[j]
    # the read vector: y_out serves as scratch for the masked previous output
    for j in range(V):
        y_out[j] = y_prev[j] * m
    if v2:
        softmax_into(y_out, s)
    else:
        for j in range(V):
            s[j] = y_out[j]
    # write and read fused in one pass over R (the read needs the row of R_t just written)
    for j in range(V):
        y_out[j] = 0.0
    for i in range(V):
        rki = rk[i]
        si = s[i]
        for j in range(V):
            R[i, j] += rki * u[j]
            y_out[j] += R[i, j] * si
    for j in range(V):
        y_out[j] = z[j] + y_out[j]
    if not v2:
        softmax_into(y_out, y_out)


@nb.kernel
def _forward_sequence(v2, C, z, rk, rv, rbeta, keep, R0, y0, ys, R, yT, Rcp, ycp):
    """One (b, h): z, rk, rv ``[T, V]``, rbeta, keep ``[T]``, R0 ``[V, V]``, y0 ``[V]``; writes ys ``[T, V]``, the
    final R ``[V, V]`` / yT ``[V]`` and the chunk-start states Rcp ``[NC, V, V]`` / ycp ``[NC, V]``."""
    T, V = z.shape
    for i in range(V):  # the running state lives in the output R
        for j in range(V):
            R[i, j] = R0[i, j]
    d = np.empty(V, z.dtype)
    u = np.empty(V, z.dtype)
    s = np.empty(V, z.dtype)
    for t in range(T):
        y_prev = y0 if t == 0 else ys[t - 1]
        if t % C == 0:
            c = t // C
            for i in range(V):
                for j in range(V):
                    Rcp[c, i, j] = R[i, j]
                ycp[c, i] = y_prev[i]
        _step(v2, R, y_prev, keep[t], z[t], rk[t], rv[t], rbeta[t], d, u, s, ys[t])
    for j in range(V):
        yT[j] = ys[T - 1, j]


@nb.kernel
def _backward_sequence(v2, C, z, rk, rv, rbeta, keep, Rcp, ycp, gys, gRT, gyT, gz, grk, grv, grbeta, gR, gy0):
    """One (b, h), arguments as in :func:`_forward_sequence` plus the output gradients gys ``[T, V]``, gRT
    ``[V, V]``, gyT ``[V]``; writes the gradients gz, grk, grv ``[T, V]``, grbeta ``[T]``, gR (of R0) and gy0."""
    T, V = z.shape
    NC = Rcp.shape[0]
    # chunk buffers: Rb[l] / yb[l] = state before step t0 + l (unmasked), l = 0..L; sb, db: s_t and d_t
    Rb = np.empty((C + 1, V, V), z.dtype)
    yb = np.empty((C + 1, V), z.dtype)
    sb = np.empty((C, V), z.dtype)
    db = np.empty((C, V), z.dtype)
    gy = np.empty(V, z.dtype)
    ga = np.empty(V, z.dtype)
    gs = np.empty(V, z.dtype)
    gu = np.empty(V, z.dtype)
    u = np.empty(V, z.dtype)
    for i in range(V):  # the running gradient w.r.t. R_t lives in the output gR
        gy[i] = gyT[i] + gys[T - 1, i]
        for j in range(V):
            gR[i, j] = gRT[i, j]
    for c in range(NC - 1, -1, -1):
        t0 = c * C
        L = min(C, T - t0)
        for i in range(V):
            yb[0, i] = ycp[c, i]
            for j in range(V):
                Rb[0, i, j] = Rcp[c, i, j]
        for l in range(L):
            t = t0 + l
            for i in range(V):
                for j in range(V):
                    Rb[l + 1, i, j] = Rb[l, i, j]
            _step(v2, Rb[l + 1], yb[l], keep[t], z[t], rk[t], rv[t], rbeta[t], db[l], u, sb[l], yb[l + 1])
        for l in range(L - 1, -1, -1):
            t = t0 + l
            m = keep[t]
            rb = rbeta[t]
            rkt = rk[t]
            Rt = Rb[l + 1]
            Rp = Rb[l]  # R_{t-1} before the reset mask (the mask is applied to its contributions below)
            st = sb[l]
            dt = db[l]
            if v2:
                for j in range(V):
                    ga[j] = gy[j]
            else:  # softmax Jacobian at y_t
                yt = yb[l + 1]
                dot = 0.0
                for j in range(V):
                    dot += yt[j] * gy[j]
                for j in range(V):
                    ga[j] = yt[j] * (gy[j] - dot)
            for j in range(V):
                gz[t, j] = ga[j]
                gu[j] = 0.0
                u[j] = rb * dt[j]
            # pass 1: the read's gradient into gR, then (with gR now the full gradient of R_t) gu and grk
            for i in range(V):
                si = st[i]
                rki = rkt[i]
                acc_s = 0.0
                acc_k = 0.0
                for j in range(V):
                    acc_s += Rt[i, j] * ga[j]
                    g = gR[i, j] + si * ga[j]
                    gR[i, j] = g
                    gu[j] += g * rki
                    acc_k += g * u[j]
                gs[i] = acc_s
                grk[t, i] = acc_k
            dot = 0.0
            for j in range(V):
                dot += gu[j] * dt[j]
                grv[t, j] = rb * gu[j]
            grbeta[t] = dot
            # pass 2: the old value R_{t-1}^T rk (g_old = -rbeta gu) into grk and gR, then the reset mask
            for i in range(V):
                rki = rkt[i]
                acc_k = 0.0
                for j in range(V):
                    g_old = -rb * gu[j]
                    acc_k += Rp[i, j] * g_old
                    gR[i, j] = (gR[i, j] + rki * g_old) * m
                grk[t, i] += m * acc_k
            # gradient of y_{t-1} through the read vector s_t
            if v2:
                dot = 0.0
                for j in range(V):
                    dot += st[j] * gs[j]
                for j in range(V):
                    gy[j] = m * (st[j] * (gs[j] - dot))
            else:
                for j in range(V):
                    gy[j] = m * gs[j]
            if t > 0:
                for j in range(V):
                    gy[j] += gys[t - 1, j]
    for j in range(V):
        gy0[j] = gy[j]


# the parallel kernels only distribute the (b, h) pairs: a small prange body keeps numba's (slow) parallel
# compilation short; the per-sequence work is compiled once as a plain function


@nb.parallel_kernel
def _forward_kernel(v2, C, z, rk, rv, rbeta, keep, R0, y0, ys, RT, yT, Rcp, ycp):
    """z, rk, rv: ``[B, H, T, V]``; rbeta: ``[B, H, T]``; keep: ``[B, T]``; R0: ``[B, H, V, V]``; y0: ``[B, H, V]``.
    Writes ys ``[B, H, T, V]``, the final RT ``[B, H, V, V]`` / yT ``[B, H, V]`` and the chunk-start states
    Rcp ``[B, H, NC, V, V]`` / ycp ``[B, H, NC, V]``."""
    B, H = z.shape[:2]
    for n in nb.prange(B * H):
        b, h = n // H, n % H
        _forward_sequence(v2, C, z[b, h], rk[b, h], rv[b, h], rbeta[b, h], keep[b], R0[b, h], y0[b, h], ys[b, h],
                          RT[b, h], yT[b, h], Rcp[b, h], ycp[b, h])


@nb.parallel_kernel
def _backward_kernel(v2, C, z, rk, rv, rbeta, keep, Rcp, ycp, gys, gRT, gyT, gz, grk, grv, grbeta, gR0, gy0):
    """Inputs as in :func:`_forward_kernel` plus the output gradients gys ``[B, H, T, V]``, gRT ``[B, H, V, V]``,
    gyT ``[B, H, V]``; writes the gradients of z, rk, rv (``[B, H, T, V]``), rbeta (``[B, H, T]``), R0, y0."""
    B, H = z.shape[:2]
    for n in nb.prange(B * H):
        b, h = n // H, n % H
        _backward_sequence(v2, C, z[b, h], rk[b, h], rv[b, h], rbeta[b, h], keep[b], Rcp[b, h], ycp[b, h],
                           gys[b, h], gRT[b, h], gyT[b, h], gz[b, h], grk[b, h], grv[b, h], grbeta[b, h], gR0[b, h],
                           gy0[b, h])


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
    zn, rkn, rvn, rbn = (to_bh_major(x) for x in (z, rk, rv, rbeta))
    dt = zn.dtype
    ys, RT, yT, Rcp, ycp = forward_outputs(B, H, T, NC, V, (V, V), dt)
    nb.sync_threads()
    _forward_kernel(v2, C, zn, rkn, rvn, rbn, as_numpy(keep), as_numpy(R0), as_numpy(y0), ys, RT, yT, Rcp, ycp)
    # batch-first and contiguous, like the other implementations' outputs
    return (from_bh_major(ys).contiguous(), torch.from_numpy(RT), torch.from_numpy(yT), torch.from_numpy(Rcp),
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
    zn, rkn, rvn, rbn = (to_bh_major(x) for x in (z, rk, rv, rbeta))
    dt = zn.dtype
    gz, grk, grv = (np.empty_like(zn) for _ in range(3))
    grbeta = np.empty_like(rbn)
    B, H, _, V = zn.shape
    gR0 = np.empty((B, H, V, V), dt)
    gy0 = np.empty((B, H, V), dt)
    nb.sync_threads()
    _backward_kernel(v2, C, zn, rkn, rvn, rbn, as_numpy(keep), Rcp.numpy(), ycp.numpy(), to_bh_major(g_ys.to(z.dtype)),
                     as_numpy(g_RT.to(z.dtype)), as_numpy(g_yT.to(z.dtype)), gz, grk, grv, grbeta, gR0, gy0)
    return (from_bh_major(gz), from_bh_major(grk), from_bh_major(grv), from_bh_major(grbeta),
            torch.from_numpy(gR0), torch.from_numpy(gy0))


@_recurrence_backward.register_fake
def _(v2, C, keep, z, rk, rv, rbeta, Rcp, ycp, g_ys, g_RT, g_yT):
    B, T, H, V = z.shape
    # the real gradients are [B, H, T, ...] arrays seen batch-first: the same strides here
    return (*(x.new_empty(B, H, T, V).transpose(1, 2) for x in (z, rk, rv)), rbeta.new_empty(B, H, T).transpose(1, 2),
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
