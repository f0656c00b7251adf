"""Compiled CPU implementation (numba) of the Recurrent Delta Net (:mod:`.rec_delta`, paper.md A.7).

The whole layer is one nonlinear recurrence, so both the forward and the hand-derived backward run as
machine-code time loops, one per batch row (``prange`` over B), with the heads inside the time loop: the heads of
a step are independent, so the out-of-order core overlaps their dependency chains. The inputs are read, and the
outputs and input gradients written, in their ``[B, T, H, ...]`` layout (no transposing copy); the states are
``[B, H, ...]``. The per-row functions may reorder reductions and fuse multiply-adds (``nb.reordering_kernel``),
so short dot products vectorise; accumulators keep the inputs' dtype (no float64 in float32 paths). Memory
follows the checkpointed path: the forward keeps the state ``(W, y)`` of every head at the start of every chunk
of ``checkpoint_every`` steps; the backward recomputes one chunk at a time from its checkpoint (into a per-row
buffer of ``checkpoint_every`` states of every head, with the forward's own step function) and back-propagates
through it step by step.

Per step (key-major ``W [D, D]``; ``P = [R_q; R_k; R_v; r_beta]`` stacked ``[3D+1, D]``, ``r = P a``)::

    a = tanh(y_{t-1})        q = softmax(q~ + r_q)   k = softmax(k~ + r_k)   v = v~ + r_v
    beta = sigmoid(b~ + r_b) d = v - W_{t-1}^T k      u = beta d
    W_t = W_{t-1} + k u^T    y_t = W_t^T q

Backward of one step, given ``gy`` (dL/dy_t: the output's gradient plus what step t+1 sends back through
``a``) and ``gW`` (dL/dW_t)::

    gq_s = W_t gy = W_{t-1} gy + k (u . gy)        gW += q gy^T
    gu   = gW^T k      gbeta = gu . d      gv = beta gu      (dL/dv_bar = -gv, v_bar = W_{t-1}^T k)
    gk_s = gW u - W_{t-1} gv                     gW_{t-1} = gW - k gv^T
    gz   = s * (g_s - <g_s, s>) for both softmaxes;  gz_b = gbeta beta (1 - beta)
    g_r  = [gz_q; gz_k; gv; gz_b]:  gP += g_r a^T,  ga = P^T g_r,  gy_{t-1} = ga * (1 - a^2)

A reset at ``t`` multiplies ``(W, y)`` by 0 before step ``t`` (and so their gradients after it). The gradient
of ``P`` (shared over batch and time) is accumulated per batch row into its own slice of a ``[B, H, 3D+1, D]``
buffer and summed over B afterwards, so the parallel loop has no write races (and the result does not depend on
the thread count).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..common import numba as nb
from ..common.checks import check_float_tensor
from ..common.delta import stack_recurrent
from ..common.numba import as_numpy, np_dtype
from ..common.registry import register
from ..common.scan import checkpoint_interval
from ..states import RecDeltaState
from . import prepare

# ------------------------------------------------------------------------------------------------ kernels


@nb.reordering_kernel
def _softmax(x, r, out):  # pragma: no cover - compiled
    """``out = softmax(x + r)`` (max-subtracted), all ``[D]``."""
    D = x.shape[0]
    m = x[0] + r[0]
    for i in range(D):
        e = x[i] + r[i]
        out[i] = e
        m = max(m, e)
    s = out.dtype.type(0)
    for i in range(D):
        e = np.exp(out[i] - m)
        out[i] = e
        s += e
    for i in range(D):
        out[i] = out[i] / s


@nb.reordering_kernel
def _step(W, y, PT, qt, kt, vt, bt, a, r, qs, ks, d, u, beta):  # pragma: no cover - compiled
    """One step of every head in place: ``W [H, D, D]`` (= W_{t-1}, already reset) -> W_t, ``y [H, D]`` -> y_t.

    ``PT [H, D, 3D+1]`` is P transposed (so that ``r = P a`` is a sum of scaled contiguous rows); ``qt, kt, vt
    [H, D]`` and ``bt [H]`` are the raw inputs of the step (views of the ``[B, T, H, ...]`` inputs). Fills
    ``a = tanh(y_{t-1})``, ``r [H, 3D+1]``, the softmaxes ``qs, ks``, ``d = v - W_{t-1}^T k``, ``u = beta d``
    (all ``[H, D]``) and ``beta [H]``, which the backward reuses. Each phase runs over all heads before the next
    one (independent work side by side). The forward kernel and the backward's recomputation both call this, so
    the recomputed chunk is the forward's arithmetic.
    """
    H, D = y.shape
    M = r.shape[1]
    zero = y.dtype.type(0)
    one = y.dtype.type(1)
    for h in range(H):
        for j in range(D):
            a[h, j] = np.tanh(y[h, j])
    for h in range(H):  # r = P a as a sum of scaled rows of P^T: contiguous, vectorisable
        rh = r[h]
        Ph = PT[h]
        for i in range(M):
            rh[i] = zero
        for j in range(D):
            aj = a[h, j]
            for i in range(M):
                rh[i] += Ph[j, i] * aj
    for h in range(H):
        _softmax(qt[h], r[h, 0:D], qs[h])
        _softmax(kt[h], r[h, D:2 * D], ks[h])
        beta[h] = one / (one + np.exp(-(bt[h] + r[h, 3 * D])))
    for h in range(H):
        Wh = W[h]
        dh = d[h]
        uh = u[h]
        yh = y[h]
        kh = ks[h]
        qh = qs[h]
        for j in range(D):
            dh[j] = zero
        for i in range(D):  # v_bar = W_{t-1}^T k, read before the write
            ki = kh[i]
            for j in range(D):
                dh[j] += Wh[i, j] * ki
        bh = beta[h]
        for j in range(D):
            dh[j] = (vt[h, j] + r[h, 2 * D + j]) - dh[j]
            uh[j] = bh * dh[j]
            yh[j] = zero
        for i in range(D):  # write, then read with the new matrix
            ki = kh[i]
            qi = qh[i]
            for j in range(D):
                w = Wh[i, j] + ki * uh[j]
                Wh[i, j] = w
                yh[j] += w * qi


@nb.reordering_kernel
def _forward_row(C, bi, q, k, v, b, PT, keep, W0, y0, out, Wf, yf, cpW, cpY):  # pragma: no cover - compiled
    """Batch row ``bi``: q, k, v ``[B, T, H, D]``, b ``[B, T, H]``, PT ``[H, D, 3D+1]``, keep ``[B, T]``, W0
    ``[B, H, D, D]``, y0 ``[B, H, D]``. Writes out ``[B, T, H, D]``, the final state Wf, yf (the running state
    lives there) and the chunk-start states cpW ``[B, H, NC, D, D]``, cpY ``[B, H, NC, D]`` (before that step's
    reset)."""
    T, H, D = q.shape[1], q.shape[2], q.shape[3]
    M = PT.shape[2]
    W = Wf[bi]
    y = yf[bi]
    W[:] = W0[bi]
    y[:] = y0[bi]
    a = np.empty((H, D), q.dtype)
    r = np.empty((H, M), q.dtype)
    qs = np.empty((H, D), q.dtype)
    ks = np.empty((H, D), q.dtype)
    d = np.empty((H, D), q.dtype)
    u = np.empty((H, D), q.dtype)
    beta = np.empty(H, q.dtype)
    for t in range(T):
        if t % C == 0:
            cpW[bi, :, t // C] = W
            cpY[bi, :, t // C] = y
        kp = keep[bi, t]
        if kp != 1.0:  # x * 1 == x exactly, so only resets need the multiply (0 * inf stays NaN, as in torch)
            W *= kp
            y *= kp
        _step(W, y, PT, q[bi, t], k[bi, t], v[bi, t], b[bi, t], a, r, qs, ks, d, u, beta)
        out[bi, t] = y


@nb.reordering_kernel
def _backward_row(C, bi, q, k, v, b, P, PT, keep, cpW, cpY, gout, gWf, gyf,
                  gq, gk, gv, gb, gP, gW0, gy0):  # pragma: no cover - compiled
    """Batch row ``bi``: the inputs of :func:`_forward_row` plus P ``[H, 3D+1, D]``, the checkpoints, and the
    incoming gradients gout ``[B, T, H, D]``, gWf ``[B, H, D, D]``, gyf ``[B, H, D]``. Writes gq, gk, gv
    ``[B, T, H, D]``, gb ``[B, T, H]``, the row's parameter gradient gP ``[B, H, 3D+1, D]`` and the initial-state
    gradients gW0, gy0."""
    T, H, D = q.shape[1], q.shape[2], q.shape[3]
    M = 3 * D + 1
    NC = cpW.shape[2]
    L = min(C, T)  # the longest chunk
    zero = q.dtype.type(0)
    one = q.dtype.type(1)
    gW = gW0[bi]  # the running gradients live in the outputs
    gy = gy0[bi]
    gW[:] = gWf[bi]
    gy[:] = gyf[bi]
    gPl = gP[bi]
    gPl[:] = zero
    W = np.empty((H, D, D), q.dtype)
    y = np.empty((H, D), q.dtype)
    # the recomputed chunk: state before each step (after its reset) and the step's vectors
    Wb = np.empty((L, H, D, D), q.dtype)
    ab = np.empty((L, H, D), q.dtype)
    qb = np.empty((L, H, D), q.dtype)
    kb = np.empty((L, H, D), q.dtype)
    db = np.empty((L, H, D), q.dtype)
    ub = np.empty((L, H, D), q.dtype)
    bb = np.empty((L, H), q.dtype)
    r = np.empty((H, M), q.dtype)
    g = np.empty(M, q.dtype)  # dL/dr = [gz_q; gz_k; gv; gz_b]
    gs = np.empty(D, q.dtype)
    gu = np.empty(D, q.dtype)
    ga = np.empty(D, q.dtype)
    for c in range(NC - 1, -1, -1):
        t0 = c * C
        n = min(C, T - t0)
        W[:] = cpW[bi, :, c]
        y[:] = cpY[bi, :, c]
        for s in range(n):
            t = t0 + s
            kp = keep[bi, t]
            if kp != 1.0:
                W *= kp
                y *= kp
            Wb[s] = W
            _step(W, y, PT, q[bi, t], k[bi, t], v[bi, t], b[bi, t], ab[s], r, qb[s], kb[s], db[s], ub[s], bb[s])
        for s in range(n - 1, -1, -1):
            t = t0 + s
            kp = keep[bi, t]
            for h in range(H):
                Wp = Wb[s, h]
                a = ab[s, h]
                qs = qb[s, h]
                ks = kb[s, h]
                dd = db[s, h]
                u = ub[s, h]
                beta = bb[s, h]
                gWh = gW[h]
                gyh = gy[h]
                Ph = P[h]
                gPh = gPl[h]
                go = gout[bi, t, h]
                ugy = zero
                for j in range(D):
                    gyh[j] += go[j]
                    ugy += u[j] * gyh[j]
                # read y = W_t^T q: gq_s = W_t gy with W_t = W_{t-1} + k u^T; gW += q gy^T; then gu = gW^T k
                for j in range(D):
                    gu[j] = zero
                for i in range(D):
                    qi = qs[i]
                    ki = ks[i]
                    acc = zero
                    for j in range(D):
                        acc += Wp[i, j] * gyh[j]
                        w = gWh[i, j] + qi * gyh[j]
                        gWh[i, j] = w
                        gu[j] += w * ki
                    gs[i] = acc + ki * ugy
                # softmax of q: gz = s * (g - <g, s>)
                dot = zero
                for i in range(D):
                    dot += gs[i] * qs[i]
                for i in range(D):
                    g[i] = qs[i] * (gs[i] - dot)
                # u = beta (v - W_{t-1}^T k)
                gbeta = zero
                for j in range(D):
                    gbeta += gu[j] * dd[j]
                    g[2 * D + j] = beta * gu[j]  # gv; dL/dv_bar = -gv
                g[3 * D] = gbeta * beta * (one - beta)
                # k enters the write (k u^T) and the retrieval (W_{t-1}^T k); W_{t-1} gets gW - k gv^T
                for i in range(D):
                    ki = ks[i]
                    acc = zero
                    for j in range(D):
                        gvj = g[2 * D + j]
                        acc += gWh[i, j] * u[j] - Wp[i, j] * gvj
                        gWh[i, j] -= ki * gvj
                    gs[i] = acc
                dot = zero
                for i in range(D):
                    dot += gs[i] * ks[i]
                for i in range(D):
                    g[D + i] = ks[i] * (gs[i] - dot)
                for i in range(D):
                    gq[bi, t, h, i] = g[i]
                    gk[bi, t, h, i] = g[D + i]
                    gv[bi, t, h, i] = g[2 * D + i]
                gb[bi, t, h] = g[3 * D]
                # r = P a: gP += g a^T, ga = P^T g; a = tanh(y_{t-1})
                for j in range(D):
                    ga[j] = zero
                for i in range(M):
                    gi = g[i]
                    for j in range(D):
                        gPh[i, j] += gi * a[j]
                        ga[j] += Ph[i, j] * gi
                for j in range(D):
                    gyh[j] = ga[j] * (one - a[j] * a[j])
                if kp != 1.0:
                    gWh *= kp
                    gyh *= kp


# the parallel kernels only distribute the batch rows: a small prange body keeps numba's (slow) parallel
# compilation short; the per-row work is compiled once as a plain function


@nb.parallel_kernel
def _forward_kernel(C, q, k, v, b, PT, keep, W0, y0, out, Wf, yf, cpW, cpY):  # pragma: no cover - compiled
    for bi in nb.prange(q.shape[0]):
        _forward_row(C, bi, q, k, v, b, PT, keep, W0, y0, out, Wf, yf, cpW, cpY)


@nb.parallel_kernel
def _backward_kernel(C, q, k, v, b, P, PT, keep, cpW, cpY, gout, gWf, gyf,
                     gq, gk, gv, gb, gP, gW0, gy0):  # pragma: no cover - compiled
    for bi in nb.prange(q.shape[0]):
        _backward_row(C, bi, q, k, v, b, P, PT, keep, cpW, cpY, gout, gWf, gyf, gq, gk, gv, gb, gP, gW0, gy0)


# ------------------------------------------------------------------------------------------------ autograd


# The recurrence is a pair of custom ops (forward, backward) with fake implementations (shapes only) and a
# registered autograd: torch.compile treats the numba kernels as opaque nodes of its graph instead of tracing
# into NumPy. The forward also returns the chunk-start states the backward needs.


@torch.library.custom_op("fastweights::rec_delta_recurrence", mutates_args=())
def _recurrence(checkpoint_every: int, keep: Tensor, q: Tensor, k: Tensor, v: Tensor, b: Tensor, P: Tensor, W0: Tensor,
                y0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(q, k, v [B, T, H, D], b [B, T, H], P [H, 3D + 1, D], W0 [B, H, D, D], y0 [B, H, D])``, ``keep [B, T]``
    -> ``(y [B, T, H, D], W_T, y_T, cpW [B, H, NC, D, D], cpY [B, H, NC, D])``."""
    B, T, H, D = q.shape
    C = checkpoint_every
    NC = math.ceil(T / C)
    dt = np_dtype(q.dtype)
    PT = np.ascontiguousarray(as_numpy(P).transpose(0, 2, 1))
    out = np.empty((B, T, H, D), dt)
    Wf = np.empty((B, H, D, D), dt)
    yf = np.empty((B, H, D), dt)
    cpW = np.empty((B, H, NC, D, D), dt)
    cpY = np.empty((B, H, NC, D), dt)
    nb.sync_threads()
    _forward_kernel(C, as_numpy(q), as_numpy(k), as_numpy(v), as_numpy(b), PT, as_numpy(keep), as_numpy(W0),
                    as_numpy(y0), out, Wf, yf, cpW, cpY)
    return tuple(torch.from_numpy(x) for x in (out, Wf, yf, cpW, cpY))


@_recurrence.register_fake
def _(checkpoint_every, keep, q, k, v, b, P, W0, y0):
    B, T, H, D = q.shape
    NC = math.ceil(T / checkpoint_every)
    return (q.new_empty(B, T, H, D), q.new_empty(B, H, D, D), q.new_empty(B, H, D), q.new_empty(B, H, NC, D, D),
            q.new_empty(B, H, NC, D))


@torch.library.custom_op("fastweights::rec_delta_recurrence_backward", mutates_args=())
def _recurrence_backward(checkpoint_every: int, keep: Tensor, q: Tensor, k: Tensor, v: Tensor, b: Tensor, P: Tensor,
                         cpW: Tensor, cpY: Tensor, g_out: Tensor, g_W: Tensor, g_y: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of q, k, v, b, P, W0, y0 from those of y, W_T, y_T."""
    B, T, H, D = q.shape
    dt = np_dtype(q.dtype)
    Pn = as_numpy(P)
    PT = np.ascontiguousarray(Pn.transpose(0, 2, 1))
    gq = np.empty((B, T, H, D), dt)
    gk = np.empty((B, T, H, D), dt)
    gv = np.empty((B, T, H, D), dt)
    gb = np.empty((B, T, H), dt)
    gP = np.empty((B, H, 3 * D + 1, D), dt)
    gW0 = np.empty((B, H, D, D), dt)
    gy0 = np.empty((B, H, D), dt)
    nb.sync_threads()
    _backward_kernel(checkpoint_every, as_numpy(q), as_numpy(k), as_numpy(v), as_numpy(b), Pn, PT, as_numpy(keep),
                     as_numpy(cpW), as_numpy(cpY), as_numpy(g_out.to(q.dtype)), as_numpy(g_W.to(q.dtype)),
                     as_numpy(g_y.to(q.dtype)), gq, gk, gv, gb, gP, gW0, gy0)
    return (torch.from_numpy(gq), torch.from_numpy(gk), torch.from_numpy(gv), torch.from_numpy(gb),
            torch.from_numpy(gP.sum(axis=0)), torch.from_numpy(gW0), torch.from_numpy(gy0))


@_recurrence_backward.register_fake
def _(checkpoint_every, keep, q, k, v, b, P, cpW, cpY, g_out, g_W, g_y):
    B, T, H, D = q.shape
    return (*(q.new_empty(B, T, H, D) for _ in range(3)), q.new_empty(B, T, H), torch.empty_like(P),
            q.new_empty(B, H, D, D), q.new_empty(B, H, D))


def _setup_context(ctx, inputs, output) -> None:
    checkpoint_every, keep, q, k, v, b, P = inputs[:7]
    ctx.checkpoint_every = checkpoint_every
    ctx.save_for_backward(keep, q, k, v, b, P, output[3], output[4])


def _backward(ctx, g_out, g_W, g_y, _g_cpW, _g_cpY):
    keep, q, k, v, b, P, cpW, cpY = ctx.saved_tensors
    grads = _recurrence_backward(ctx.checkpoint_every, keep, q, k, v, b, P, cpW, cpY, g_out, g_W, g_y)
    return (None, None, *(g if need else None for g, need in zip(grads, ctx.needs_input_grad[2:])))


_recurrence.register_autograd(_backward, setup_context=_setup_context)


@register("rec_delta", "compiled", priority=20, available=nb.numba_missing, devices=("cpu",))
def rec_delta_compiled(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, rec_q: Tensor, rec_k: Tensor, rec_v: Tensor, rec_beta: Tensor,
    *, initial_state: RecDeltaState | tuple | None = None, reset: Tensor | None = None,
    output_final_state: bool = False, checkpoint_every: int | None = None,
) -> tuple[Tensor, RecDeltaState | None]:
    """Same arguments and results as :func:`fastweights.ops.rec_delta` (numba kernels, CPU tensors only).

    q, k, v ``[B, T, H, D]`` and beta ``[B, T, H]`` raw; rec_q, rec_k, rec_v ``[H, D, D]``, rec_beta ``[H, D]``;
    state ``(W [B, H, D, D], y [B, H, D])``; checkpoint_every: steps per checkpoint (default ~sqrt(T)).
    Returns ``(y [B, T, H, D] in q's dtype, RecDeltaState or None)``.
    """
    in_dtype = check_float_tensor("q", q).dtype
    (q, k, v, beta), params, (W0, y0), reset = prepare(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, initial_state,
                                                       reset)
    B, T = q.shape[:2]
    C = checkpoint_interval(checkpoint_every, T)
    nb.check_runnable("rec_delta", q)
    y, W, y_last, _, _ = _recurrence(C, nb.keep_tensor(reset, B, T, q.dtype), q, k, v, beta, stack_recurrent(*params),
                                     W0, y0)
    return y.to(in_dtype), (RecDeltaState(W, y_last) if output_final_state else None)
