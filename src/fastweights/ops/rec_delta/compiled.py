"""Compiled CPU implementation (numba) of the Recurrent Delta Net (:mod:`.rec_delta`, paper.md A.7).

The whole layer is one nonlinear recurrence, so both the forward and the hand-derived backward run as
machine-code time loops, parallel over the B x H pairs (``prange``). Memory follows the checkpointed path:
the forward keeps the state ``(W, y)`` at the start of every chunk of ``checkpoint_every`` steps; the backward
recomputes one chunk at a time from its checkpoint (into a per-pair buffer of ``checkpoint_every`` states) and
back-propagates through it step by step.

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
of ``P`` (shared over batch and time) is accumulated per (b, h) pair into its own slice of a ``[B, H, 3D+1, D]``
buffer and summed over B afterwards, so the parallel loop has no write races.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..common import numba as nb
from ..common.checks import check_float_tensor
from ..common.delta import stack_recurrent
from ..common.numba import as_numpy, forward_outputs, from_bh_major, np_dtype, to_bh_major
from ..common.registry import register
from ..common.scan import checkpoint_interval
from ..states import RecDeltaState
from . import prepare

# ------------------------------------------------------------------------------------------------ kernels


@nb.kernel
def _softmax(x, r, out):  # pragma: no cover - compiled
    """``out = softmax(x + r)`` (max-subtracted), all ``[D]``."""
    D = x.shape[0]
    m = x[0] + r[0]
    for i in range(D):
        out[i] = x[i] + r[i]
        m = max(m, out[i])
    s = 0.0
    for i in range(D):
        out[i] = np.exp(out[i] - m)
        s += out[i]
    for i in range(D):
        out[i] = out[i] / s


@nb.kernel
def _step(W, y, PT, qt, kt, vt, bt, a, r, qs, ks, d, u):  # pragma: no cover - compiled
    """One step in place: ``W [D, D]`` (= W_{t-1}, already reset) -> W_t, ``y [D]`` -> y_t; returns beta.

    ``PT [D, 3D+1]`` is P transposed (so that ``r = P a`` runs along contiguous rows); ``qt, kt, vt [D]`` and
    the scalar ``bt`` are the raw inputs of the step. Fills ``a = tanh(y_{t-1})``, ``r [3D+1]``, the softmaxes
    ``qs, ks``, ``d = v - W_{t-1}^T k`` and ``u = beta d`` (all ``[D]``), which the backward reuses. The forward
    kernel and the backward's recomputation both call this, so the recomputed chunk is bit-identical.
    """
    D = y.shape[0]
    M = r.shape[0]
    for j in range(D):
        a[j] = np.tanh(y[j])
    for i in range(M):
        r[i] = 0.0
    for j in range(D):  # r = P a as a sum of scaled rows of P^T: contiguous, vectorisable
        aj = a[j]
        for i in range(M):
            r[i] += PT[j, i] * aj
    _softmax(qt, r[0:D], qs)
    _softmax(kt, r[D:2 * D], ks)
    beta = 1.0 / (1.0 + np.exp(-(bt + r[3 * D])))
    for j in range(D):
        d[j] = 0.0
    for i in range(D):  # v_bar = W_{t-1}^T k, read before the write
        ki = ks[i]
        for j in range(D):
            d[j] += W[i, j] * ki
    for j in range(D):
        d[j] = (vt[j] + r[2 * D + j]) - d[j]
        u[j] = beta * d[j]
    for j in range(D):
        y[j] = 0.0
    for i in range(D):  # write, then read with the new matrix
        ki = ks[i]
        qi = qs[i]
        for j in range(D):
            W[i, j] += ki * u[j]
            y[j] += W[i, j] * qi
    return beta


@nb.parallel_kernel
def _forward_kernel(q, k, v, b, PT, keep, W0, y0, C, out, Wf, yf, cpW, cpY):  # pragma: no cover - compiled
    """q, k, v ``[B, H, T, D]``, b ``[B, H, T]``, PT ``[H, D, 3D+1]``, keep ``[B, T]``, W0 ``[B, H, D, D]``,
    y0 ``[B, H, D]``. Writes out ``[B, H, T, D]``, the final state Wf, yf, and the chunk-start states
    cpW ``[B, H, NC, D, D]``, cpY ``[B, H, NC, D]`` (before that step's reset)."""
    B, H, T, D = q.shape
    M = 3 * D + 1
    for bh in nb.prange(B * H):
        bi = bh // H
        h = bh % H
        W = W0[bi, h].copy()
        y = y0[bi, h].copy()
        a = np.empty(D, q.dtype)
        r = np.empty(M, q.dtype)
        qs = np.empty(D, q.dtype)
        ks = np.empty(D, q.dtype)
        d = np.empty(D, q.dtype)
        u = np.empty(D, q.dtype)
        for t in range(T):
            if t % C == 0:
                cpW[bi, h, t // C] = W
                cpY[bi, h, t // C] = y
            kp = keep[bi, t]
            if kp != 1.0:  # x * 1 == x exactly, so only resets need the multiply (0 * inf stays NaN, as in torch)
                W *= kp
                y *= kp
            _step(W, y, PT[h], q[bi, h, t], k[bi, h, t], v[bi, h, t], b[bi, h, t], a, r, qs, ks, d, u)
            out[bi, h, t] = y
        Wf[bi, h] = W
        yf[bi, h] = y


@nb.parallel_kernel
def _backward_kernel(q, k, v, b, P, PT, keep, cpW, cpY, C, gout, gWf, gyf,
                     gq, gk, gv, gb, gP, gW0, gy0):  # pragma: no cover - compiled
    """Inputs as in the forward plus P ``[H, 3D+1, D]``, the checkpoints, and the incoming gradients gout
    ``[B, H, T, D]``, gWf ``[B, H, D, D]``, gyf ``[B, H, D]``. Writes gq, gk, gv ``[B, H, T, D]``, gb
    ``[B, H, T]``, the per-pair parameter gradients gP ``[B, H, 3D+1, D]`` and the initial-state gradients."""
    B, H, T, D = q.shape
    M = 3 * D + 1
    NC = cpW.shape[2]
    L = min(C, T)  # the longest chunk
    for bh in nb.prange(B * H):
        bi = bh // H
        h = bh % H
        gW = gWf[bi, h].copy()
        gy = gyf[bi, h].copy()
        gPl = gP[bi, h]
        gPl[:] = 0.0
        W = np.empty((D, D), q.dtype)
        y = np.empty(D, q.dtype)
        # the recomputed chunk: state before each step (after its reset) and the step's vectors
        Wb = np.empty((L, D, D), q.dtype)
        ab = np.empty((L, D), q.dtype)
        qb = np.empty((L, D), q.dtype)
        kb = np.empty((L, D), q.dtype)
        db = np.empty((L, D), q.dtype)
        ub = np.empty((L, D), q.dtype)
        bb = np.empty(L, q.dtype)
        r = np.empty(M, q.dtype)
        g = np.empty(M, q.dtype)  # dL/dr = [gz_q; gz_k; gv; gz_b]
        gs = np.empty(D, q.dtype)
        gu = np.empty(D, q.dtype)
        ga = np.empty(D, q.dtype)
        Ph = P[h]
        for c in range(NC - 1, -1, -1):
            t0 = c * C
            n = min(C, T - t0)
            W[:, :] = cpW[bi, h, c]
            y[:] = cpY[bi, h, c]
            for s in range(n):
                t = t0 + s
                kp = keep[bi, t]
                if kp != 1.0:
                    W *= kp
                    y *= kp
                Wb[s] = W
                bb[s] = _step(W, y, PT[h], q[bi, h, t], k[bi, h, t], v[bi, h, t], b[bi, h, t],
                              ab[s], r, qb[s], kb[s], db[s], ub[s])
            for s in range(n - 1, -1, -1):
                t = t0 + s
                Wp = Wb[s]
                a = ab[s]
                qs = qb[s]
                ks = kb[s]
                dd = db[s]
                u = ub[s]
                beta = bb[s]
                ugy = 0.0
                for j in range(D):
                    gy[j] += gout[bi, h, t, j]
                    ugy += u[j] * gy[j]
                # read y = W_t^T q: gq_s = W_t gy with W_t = W_{t-1} + k u^T; gW += q gy^T; then gu = gW^T k
                for j in range(D):
                    gu[j] = 0.0
                for i in range(D):
                    qi = qs[i]
                    ki = ks[i]
                    acc = 0.0
                    for j in range(D):
                        acc += Wp[i, j] * gy[j]
                        gW[i, j] += qi * gy[j]
                        gu[j] += gW[i, j] * ki
                    gs[i] = acc + ki * ugy
                # softmax of q: gz = s * (g - <g, s>)
                dot = 0.0
                for i in range(D):
                    dot += gs[i] * qs[i]
                for i in range(D):
                    g[i] = qs[i] * (gs[i] - dot)
                # u = beta (v - W_{t-1}^T k)
                gbeta = 0.0
                for j in range(D):
                    gbeta += gu[j] * dd[j]
                    g[2 * D + j] = beta * gu[j]  # gv; dL/dv_bar = -gv
                g[3 * D] = gbeta * beta * (1.0 - beta)
                # k enters the write (k u^T) and the retrieval (W_{t-1}^T k); W_{t-1} gets gW - k gv^T
                for i in range(D):
                    ki = ks[i]
                    acc = 0.0
                    for j in range(D):
                        gvj = g[2 * D + j]
                        acc += gW[i, j] * u[j] - Wp[i, j] * gvj
                        gW[i, j] -= ki * gvj
                    gs[i] = acc
                dot = 0.0
                for i in range(D):
                    dot += gs[i] * ks[i]
                for i in range(D):
                    g[D + i] = ks[i] * (gs[i] - dot)
                for i in range(D):
                    gq[bi, h, t, i] = g[i]
                    gk[bi, h, t, i] = g[D + i]
                    gv[bi, h, t, i] = g[2 * D + i]
                gb[bi, h, t] = g[3 * D]
                # r = P a: gP += g a^T, ga = P^T g; a = tanh(y_{t-1})
                for j in range(D):
                    ga[j] = 0.0
                for i in range(M):
                    gi = g[i]
                    for j in range(D):
                        gPl[i, j] += gi * a[j]
                        ga[j] += Ph[i, j] * gi
                for j in range(D):
                    gy[j] = ga[j] * (1.0 - a[j] * a[j])
                kp = keep[bi, t]
                if kp != 1.0:
                    gW *= kp
                    gy *= kp
        gW0[bi, h] = gW
        gy0[bi, h] = gy


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
    out, Wf, yf, cpW, cpY = forward_outputs(B, H, T, NC, D, (D, D), dt)
    nb.sync_threads()
    _forward_kernel(to_bh_major(q), to_bh_major(k), to_bh_major(v), to_bh_major(b), PT, as_numpy(keep), as_numpy(W0),
                    as_numpy(y0), C, out, Wf, yf, cpW, cpY)
    return from_bh_major(out), *(torch.from_numpy(x) for x in (Wf, yf, cpW, cpY))


@_recurrence.register_fake
def _(checkpoint_every, keep, q, k, v, b, P, W0, y0):
    B, T, H, D = q.shape
    NC = math.ceil(T / checkpoint_every)
    return (q.new_empty(B, H, T, D).transpose(1, 2), q.new_empty(B, H, D, D), q.new_empty(B, H, D),
            q.new_empty(B, H, NC, D, D), q.new_empty(B, H, NC, D))


@torch.library.custom_op("fastweights::rec_delta_recurrence_backward", mutates_args=())
def _recurrence_backward(checkpoint_every: int, keep: Tensor, q: Tensor, k: Tensor, v: Tensor, b: Tensor, P: Tensor,
                         cpW: Tensor, cpY: Tensor, g_out: Tensor, g_W: Tensor, g_y: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of q, k, v, b, P, W0, y0 from those of y, W_T, y_T."""
    B, T, H, D = q.shape
    dt = np_dtype(q.dtype)
    Pn = as_numpy(P)
    PT = np.ascontiguousarray(Pn.transpose(0, 2, 1))
    gq = np.empty((B, H, T, D), dt)
    gk = np.empty((B, H, T, D), dt)
    gv = np.empty((B, H, T, D), dt)
    gb = np.empty((B, H, T), dt)
    gP = np.empty((B, H, 3 * D + 1, D), dt)
    gW0 = np.empty((B, H, D, D), dt)
    gy0 = np.empty((B, H, D), dt)
    nb.sync_threads()
    _backward_kernel(to_bh_major(q), to_bh_major(k), to_bh_major(v), to_bh_major(b), Pn, PT, as_numpy(keep),
                     cpW.numpy(), cpY.numpy(), checkpoint_every, to_bh_major(g_out.to(q.dtype)),
                     as_numpy(g_W.to(q.dtype)), as_numpy(g_y.to(q.dtype)), gq, gk, gv, gb, gP, gW0, gy0)
    return (from_bh_major(gq), from_bh_major(gk), from_bh_major(gv), from_bh_major(gb),
            torch.from_numpy(gP.sum(axis=0)), torch.from_numpy(gW0), torch.from_numpy(gy0))


@_recurrence_backward.register_fake
def _(checkpoint_every, keep, q, k, v, b, P, cpW, cpY, g_out, g_W, g_y):
    B, T, H, D = q.shape
    # the real gradients are [B, H, T, ...] arrays seen batch-first: the same strides here
    return (*(q.new_empty(B, H, T, D).transpose(1, 2) for _ in range(3)), q.new_empty(B, H, T).transpose(1, 2),
            torch.empty_like(P), q.new_empty(B, H, D, D), q.new_empty(B, H, D))


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
