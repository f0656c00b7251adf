"""Compiled CPU implementation (numba) of the Delta LSTM (paper.md A.6), registered as ``impl="compiled"``.

The feed-forward part ``z^g_t = W^g_t^T q^g_t`` does not depend on the recurrence, so it runs through the
chunked :func:`delta_rule` exactly as in the ``checkpointed`` implementation. The recurrent part (the three
fast matrices ``R^g``, key-major ``[V, V]``, the output ``y`` and the cell ``c``) runs in one machine-code loop
per (batch, head). Per step t, with ``m = 1 - reset[b, t]`` and the reset state ``R' = m R_{t-1}``,
``y' = m y_{t-1}``, ``c' = m c_{t-1}``:

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

The forward kernel keeps the state at the start of every chunk of ``checkpoint_every`` steps; the backward kernel
recomputes one chunk at a time from it into per-(b, h) buffers and walks the chunk backwards. All kernel
arrays are ``[B, H, T, ...]`` (each (b, h) sequence contiguous).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..common import numba as nb
from ..common.checks import check_float_tensor
from ..common.delta import feed_forward
from ..common.numba import as_numpy, forward_outputs, from_bh_major, np_dtype, softmax_into, to_bh_major
from ..common.registry import register
from ..common.scan import checkpoint_interval
from ..states import DeltaLSTMState
from . import prepare

# ------------------------------------------------------------------------------------------------ kernels


@nb.kernel
def _dot(x, y):
    """``sum_v x[v] y[v]`` for vectors of length >= 1, in their dtype, with four partial sums: without
    fastmath the compiler may not reorder a single running sum, which would serialise the adds."""
    n = x.shape[0]
    if n < 4:
        s = x[0] * y[0]
        for i in range(1, n):
            s += x[i] * y[i]
        return s
    s0, s1, s2, s3 = x[0] * y[0], x[1] * y[1], x[2] * y[2], x[3] * y[3]
    i = 4
    while i + 4 <= n:
        s0 += x[i] * y[i]
        s1 += x[i + 1] * y[i + 1]
        s2 += x[i + 2] * y[i + 2]
        s3 += x[i + 3] * y[i + 3]
        i += 4
    s = (s0 + s1) + (s2 + s3)
    while i < n:
        s += x[i] * y[i]
        i += 1
    return s


@nb.kernel
def _reset(kp, R, y, c):
    """Multiply the state ``R [3, V, V]``, ``y, c [V]`` by the keep flag in place (a no-op for kp = 1)."""
    if kp != 1.0:
        R *= kp
        y *= kp
        c *= kp


@nb.kernel
def _reset_into(kp, R, y, c, Rr, yr, cr):
    """``Rr, yr, cr = kp R, kp y, kp c`` (the reset state, into scratch buffers of the same shapes)."""
    for g in range(R.shape[0]):
        for k in range(R.shape[1]):
            for v in range(R.shape[2]):
                Rr[g, k, v] = kp * R[g, k, v]
    for v in range(y.shape[0]):
        yr[v] = kp * y[v]
        cr[v] = kp * c[v]


@nb.kernel
def _step(version, Rsrc, Rdst, yprev, cprev, z, rk, rv, rbeta, a, d, gate, cnew, ynew):
    """One step of one (batch, head), after the reset.

    In: ``Rsrc [3, V, V]`` = R', ``yprev, cprev [V]`` = y', c' (the reset previous state), ``z, rk, rv [3, V]``,
    ``rbeta [3]``.
    Out: ``Rdst [3, V, V]`` = R_t (a different array from ``Rsrc``), ``a [V]`` the fed-back copy, ``d [3, V]`` the write
    residuals ``rv - R'^T rk``, ``gate [3, V]`` = (i, u, o), ``cnew, ynew [V]``. The backward needs exactly these.
    """
    G, V = z.shape
    if version == 1:
        for v in range(V):
            a[v] = yprev[v]
    else:
        softmax_into(yprev, a)
    for g in range(G):
        Rs, Rd, dg, pg = Rsrc[g], Rdst[g], d[g], gate[g]
        # residual of the write, read with the old matrix; accumulated row by row (key-major R: each row is
        # contiguous) so that the inner loops are vectorisable axpys
        for v in range(V):
            dg[v] = 0.0
        for k in range(V):
            r, Rk = rk[g, k], Rs[k]
            for v in range(V):
                dg[v] += r * Rk[v]
        for v in range(V):
            dg[v] = rv[g, v] - dg[v]
        # write, and read the recurrent term R_t^T a with the new matrix in the same pass
        for v in range(V):
            pg[v] = 0.0
        for k in range(V):
            w, ak, Rsk, Rdk = rbeta[g] * rk[g, k], a[k], Rs[k], Rd[k]
            for v in range(V):
                val = Rsk[v] + w * dg[v]
                Rdk[v] = val
                pg[v] += ak * val
        for v in range(V):
            pg[v] = z[g, v] + pg[v]  # pre-activation p^g
    for v in range(V):
        i = 1.0 / (1.0 + np.exp(-gate[0, v]))
        u = gate[1, v] if version == 4 else 1.0 / (1.0 + np.exp(-gate[1, v]))
        o = 1.0 / (1.0 + np.exp(-gate[2, v]))
        gate[0, v] = i
        gate[1, v] = u
        gate[2, v] = o
        cn = i * u + (1.0 - i) * cprev[v]
        cnew[v] = cn
        if version == 3:
            ynew[v] = o * cn + z[1, v]
        else:
            ynew[v] = o * cn
    if version == 1:
        softmax_into(ynew, ynew)


@nb.kernel
def _step_backward(version, kp, Rsrc, Rt, cprev, cnew, ynew, a, d, gate, rk, rbeta, gy, gc, GR, gyprev,
                   gz, grk, grv, grbeta, gh, gp, ga, gd):
    """Back-propagate one step of one (batch, head) (the inverse data flow of :func:`_reset` + :func:`_step`).

    In: the step's saved quantities (``Rsrc`` = R' and ``cprev`` = c' after the reset, ``Rt`` = R_t, ``cnew``,
    ``ynew``, ``a``, ``d``, ``gate``), its keep flag ``kp``, ``gy [V]`` the total gradient of y_t (output + later
    steps), ``gc [V]`` and ``GR [3, V, V]`` the gradients of c_t and R_t.
    Out: ``gc``, ``GR`` overwritten with the gradients of c_{t-1}, R_{t-1} (before the reset), ``gyprev [V]`` that
    of y_{t-1}; ``gz, grk, grv [3, V]`` and ``grbeta [3]`` of the step inputs. ``gh, gp, ga, gd`` are scratch.
    """
    G, V = gate.shape
    # output: y = softmax(h) (v1) | h (+ z^u for v3)
    if version == 1:
        s = _dot(gy, ynew)
        for v in range(V):
            gh[v] = ynew[v] * (gy[v] - s)
    else:
        for v in range(V):
            gh[v] = gy[v]
    # h = o c_t;  c_t = i u + (1 - i) c';  gates from the pre-activations p
    for v in range(V):
        i, u, o = gate[0, v], gate[1, v], gate[2, v]
        go = gh[v] * cnew[v]
        gct = gc[v] + gh[v] * o
        gi = gct * (u - cprev[v])
        gu = gct * i
        gc[v] = gct * (1.0 - i)
        gp[0, v] = gi * i * (1.0 - i)
        gp[1, v] = gu if version == 4 else gu * u * (1.0 - u)
        gp[2, v] = go * o * (1.0 - o)
        gz[0, v] = gp[0, v]
        gz[1, v] = gp[1, v] + gy[v] if version == 3 else gp[1, v]
        gz[2, v] = gp[2, v]
    for k in range(V):
        ga[k] = 0.0
    for g in range(G):
        Gg, Rtg, Rsg, gpg, dg = GR[g], Rt[g], Rsrc[g], gp[g], d[g]
        rb = rbeta[g]
        for v in range(V):
            gd[v] = 0.0
        gb = 0.0
        # row by row: the read p = z + R_t^T a gives ga and adds a gp^T to dL/dR_t; with the completed row of
        # dL/dR_t =: G, the write R_t = R' + rbeta rk d^T gives dL/drbeta = rk^T G d, dL/drk = rbeta G d (direct
        # part) and dL/dd = rbeta G^T rk (accumulated in gd)
        for k in range(V):
            ak, r, Gk = a[k], rk[g, k], Gg[k]
            ga[k] += _dot(Rtg[k], gpg)
            for v in range(V):
                Gk[v] += ak * gpg[v]
            sd = _dot(Gk, dg)
            for v in range(V):
                gd[v] += r * Gk[v]
            gb += r * sd
            grk[g, k] = rb * sd
        grbeta[g] = gb
        for v in range(V):
            gd[v] = rb * gd[v]  # dL/dd = dL/drv
            grv[g, v] = gd[v]
        # the residual d = rv - R'^T rk: dL/dR' = G - rk gd^T, dL/drk -= R' gd
        for k in range(V):
            r, Gk = rk[g, k], Gg[k]
            grk[g, k] -= _dot(Rsg[k], gd)
            for v in range(V):
                Gk[v] -= r * gd[v]
    # the fed-back copy a = y' (v1) | softmax(y') (v2-v4)
    if version == 1:
        for v in range(V):
            gyprev[v] = ga[v]
    else:
        s = _dot(ga, a)
        for v in range(V):
            gyprev[v] = a[v] * (ga[v] - s)
    # the reset y' = kp y_{t-1} (and R', c')
    if kp != 1.0:
        GR *= kp
        gc *= kp
        gyprev *= kp


@nb.parallel_kernel
def _forward_kernel(version, C, z, rk, rv, rbeta, keep, R0, y0, c0, y_out, R_out, y_last, c_last, cpR, cpy, cpc):
    """Forward over ``z, rk, rv [B, H, T, 3, V]``, ``rbeta [B, H, T, 3]``, ``keep [B, T]`` from ``R0 [B, H, 3, V, V]``,
    ``y0, c0 [B, H, V]``. Writes ``y_out [B, H, T, V]``, the final ``R_out, y_last, c_last`` and the state at the
    start of every chunk of ``C`` steps (before that step's reset) into ``cpR [B, H, NC, 3, V, V]``,
    ``cpy, cpc [B, H, NC, V]``."""
    B, H, T, G, V = z.shape
    for bh in nb.prange(B * H):
        b, h = bh // H, bh % H
        # R ping-pongs between two buffers: a step that reads and writes the same array cannot be vectorised
        # (the compiler's runtime overlap check fails and it falls back to scalar code)
        R, Rnext = np.empty((G, V, V), z.dtype), np.empty((G, V, V), z.dtype)
        R[:] = R0[b, h]
        yprev = y0[b, h].copy()
        cprev = c0[b, h].copy()
        cnew = np.empty(V, z.dtype)
        a = np.empty(V, z.dtype)
        d = np.empty((G, V), z.dtype)
        gate = np.empty((G, V), z.dtype)
        for t in range(T):
            if t % C == 0:
                cpR[b, h, t // C] = R
                cpy[b, h, t // C] = yprev
                cpc[b, h, t // C] = cprev
            _reset(keep[b, t], R, yprev, cprev)
            _step(version, R, Rnext, yprev, cprev, z[b, h, t], rk[b, h, t], rv[b, h, t], rbeta[b, h, t],
                  a, d, gate, cnew, y_out[b, h, t])
            R, Rnext = Rnext, R
            yprev[:] = y_out[b, h, t]
            cprev[:] = cnew
        R_out[b, h] = R
        y_last[b, h] = yprev
        c_last[b, h] = cprev


@nb.parallel_kernel
def _backward_kernel(version, C, z, rk, rv, rbeta, keep, cpR, cpy, cpc, gy_out, gR_T, gy_T, gc_T,
                     gz, grk, grv, grbeta, gR0, gy0, gc0):
    """Backward of :func:`_forward_kernel`. In: its inputs and checkpoints, ``gy_out [B, H, T, V]`` and the
    gradients of the final state ``gR_T [B, H, 3, V, V]``, ``gy_T, gc_T [B, H, V]``. Out: ``gz, grk, grv
    [B, H, T, 3, V]``, ``grbeta [B, H, T, 3]`` and the initial-state gradients ``gR0, gy0, gc0``."""
    B, H, T, G, V = z.shape
    NC = cpR.shape[2]
    Cm = min(C, T)
    for bh in nb.prange(B * H):
        b, h = bh // H, bh % H
        # one chunk's recomputed states: Rs[j], Ys[j], Cs[j] hold the state entering step t0 + j (before its
        # reset; the reset state of a reset step goes to the scratch Rr, yr, cr), so Rs[j + 1] is R after the
        # step; the other buffers hold the per-step quantities that _step_backward needs
        Rs = np.empty((Cm + 1, G, V, V), z.dtype)
        Ys = np.empty((Cm + 1, V), z.dtype)
        Cs = np.empty((Cm + 1, V), z.dtype)
        As = np.empty((Cm, V), z.dtype)
        Ds = np.empty((Cm, G, V), z.dtype)
        Gt = np.empty((Cm, G, V), z.dtype)
        Rr = np.empty((G, V, V), z.dtype)
        yr = np.empty(V, z.dtype)
        cr = np.empty(V, z.dtype)
        # gradient carries (w.r.t. the state after the current step) live in the initial-state outputs
        GR = gR0[b, h]
        GR[:] = gR_T[b, h]
        gy = gy0[b, h]
        gy[:] = gy_T[b, h]
        gc = gc0[b, h]
        gc[:] = gc_T[b, h]
        gyt = np.empty(V, z.dtype)
        gh = np.empty(V, z.dtype)
        gp = np.empty((G, V), z.dtype)
        ga = np.empty(V, z.dtype)
        gd = np.empty(V, z.dtype)
        for ci in range(NC - 1, -1, -1):
            t0 = ci * C
            n = min(C, T - t0)
            Rs[0] = cpR[b, h, ci]
            Ys[0] = cpy[b, h, ci]
            Cs[0] = cpc[b, h, ci]
            for j in range(n):
                t = t0 + j
                kp = keep[b, t]
                if kp != 1.0:
                    _reset_into(kp, Rs[j], Ys[j], Cs[j], Rr, yr, cr)
                    _step(version, Rr, Rs[j + 1], yr, cr, z[b, h, t], rk[b, h, t], rv[b, h, t], rbeta[b, h, t],
                          As[j], Ds[j], Gt[j], Cs[j + 1], Ys[j + 1])
                else:
                    _step(version, Rs[j], Rs[j + 1], Ys[j], Cs[j], z[b, h, t], rk[b, h, t], rv[b, h, t],
                          rbeta[b, h, t], As[j], Ds[j], Gt[j], Cs[j + 1], Ys[j + 1])
            for j in range(n - 1, -1, -1):
                t = t0 + j
                kp = keep[b, t]
                for v in range(V):
                    gyt[v] = gy_out[b, h, t, v] + gy[v]
                if kp != 1.0:
                    _reset_into(kp, Rs[j], Ys[j], Cs[j], Rr, yr, cr)
                    Rp, cp = Rr, cr
                else:
                    Rp, cp = Rs[j], Cs[j]
                _step_backward(version, kp, Rp, Rs[j + 1], cp, Cs[j + 1], Ys[j + 1], As[j], Ds[j], Gt[j],
                               rk[b, h, t], rbeta[b, h, t], gyt, gc, GR, gy, gz[b, h, t], grk[b, h, t],
                               grv[b, h, t], grbeta[b, h, t], gh, gp, ga, gd)


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
    dt = np_dtype(z.dtype)
    NC = -(-T // checkpoint_every)
    arrays = [to_bh_major(x) for x in (z, rk, rv, rbeta)]
    y, R_T, y_T, cpR, cpy = forward_outputs(B, H, T, NC, V, (G, V, V), dt)
    c_T, cpc = np.empty((B, H, V), dt), np.empty((B, H, NC, V), dt)  # the cell, kept like y
    nb.sync_threads()
    _forward_kernel(version, checkpoint_every, *arrays, as_numpy(keep), *(as_numpy(x) for x in (R0, y0, c0)), y,
                    R_T, y_T, c_T, cpR, cpy, cpc)
    # [B, T, H, V] contiguous, like the other implementations (callers may .view() it)
    return (from_bh_major(y).contiguous(), *(torch.from_numpy(x) for x in (R_T, y_T, c_T, cpR, cpy, cpc)))


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
    arrays = [to_bh_major(x) for x in (z, rk, rv, rbeta)]
    gy_out = to_bh_major(g_y.to(z.dtype))
    g_final = [as_numpy(g.to(z.dtype)) for g in (g_R, g_yT, g_cT)]
    npdt = np_dtype(z.dtype)
    gz, grk, grv = (np.empty((B, H, T, G, V), npdt) for _ in range(3))
    grbeta = np.empty((B, H, T, G), npdt)
    gR0, gy0, gc0 = np.empty((B, H, G, V, V), npdt), np.empty((B, H, V), npdt), np.empty((B, H, V), npdt)
    nb.sync_threads()
    _backward_kernel(version, checkpoint_every, *arrays, as_numpy(keep), cpR.numpy(), cpy.numpy(), cpc.numpy(), gy_out,
                     *g_final, gz, grk, grv, grbeta, gR0, gy0, gc0)
    return (from_bh_major(gz), from_bh_major(grk), from_bh_major(grv), from_bh_major(grbeta),
            torch.from_numpy(gR0), torch.from_numpy(gy0), torch.from_numpy(gc0))


@_recurrence_backward.register_fake
def _(version, checkpoint_every, keep, z, rk, rv, rbeta, cpR, cpy, cpc, g_y, g_R, g_yT, g_cT):
    B, T, H, G, V = z.shape
    # the real gradients are [B, H, T, ...] arrays seen batch-first: the same strides here
    return (*(z.new_empty(B, H, T, G, V).transpose(1, 2) for _ in range(3)), z.new_empty(B, H, T, G).transpose(1, 2),
            z.new_empty(B, H, G, V, V), z.new_empty(B, H, V), z.new_empty(B, H, V))


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
