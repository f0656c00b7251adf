"""Fused recurrent CPU kernels of the sum and delta rules (numba; the ``compiled`` implementations).

The recurrent form costs ``6 K V`` FLOPs per step and head (delta rule; ``4 K V`` for the sum rule) against ~3x that
for the chunkwise form, but as a loop of PyTorch ops it pays ~60 us of dispatch per step. Here the loop runs in one
machine-code function per batch row: the state of every head (``[H, K, V]``, 1 KiB per head at K = V = 16) stays in
L1, the heads are interleaved inside the time loop (the out-of-order core overlaps the dependency chains of
different heads), and the inputs are read in their ``[B, T, H, D]`` layout, so no transposing copy is made.

Per head and step (key-major ``S [K, V]``, ``m_t = 1 - reset_t``), as the reference loop:

    S' = m_t S_{t-1};  w_t = v_t - S'^T k_t;  u_t = beta_t w_t   (sum rule: u_t = v_t)
    S_t = S' + k_t u_t^T;  o_t = S_t^T q_t

The forward fuses the write with both reads of the new state: the output ``S_t^T q_t`` and the next step's old value
``S_t^T k_{t+1}`` (a reset at ``t + 1`` scales it by ``m_{t+1}``, as it scales ``S_t``).

Backward (hand-derived; ``gS`` the gradient w.r.t. ``S_t``, from later steps, ``go`` that of ``o_t``):

    gS += q_t go^T;       gq_t = S_t go;       gu = gS^T k_t;       gk_t = gS u_t
    delta rule:  gbeta_t = <gu, w_t>;  gw = beta_t gu;  gv_t = gw;  gk_t -= m_t S_{t-1} gw;  gS -= k_t gw^T
    sum rule:    gv_t = gu
    gS_{t-1} = m_t gS

The forward keeps the state at the start of every chunk of ``checkpoint_every`` steps and ``w`` (one vector per
step, the size of the output); the backward recomputes a chunk's states from its checkpoint (``S_t = S' + k u^T``,
the forward's arithmetic) and walks it backwards. Without a gradient the forward keeps nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import numba as nb
from .checks import check_float_tensor
from .chunked import _single_step, prepare_linear_inputs
from .numba import as_numpy as _np  # a contiguous numpy view, short for the kernel calls
from .scan import checkpoint_interval

# ------------------------------------------------------------------------------------------------- kernels


@nb.reordering_kernel
def _forward_row(delta, save, C, b, q, k, v, beta, keep, S0, o, ST, Scp, Wv):
    """Batch row ``b``: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, beta ``[B, T, H]`` (delta), keep ``[B, T]``,
    S0 ``[B, H, K, V]``; writes o ``[B, T, H, V]``, the final state ST ``[B, H, K, V]`` and, when ``save``, the
    chunk-start states Scp ``[B, H, NC, K, V]`` and ``w`` into Wv ``[B, T, H, V]`` (delta)."""
    T, H, K = q.shape[1], q.shape[2], q.shape[3]
    V = v.shape[3]
    S = ST[b]  # the running state lives in the output
    for h in range(H):
        for i in range(K):
            for j in range(V):
                S[h, i, j] = S0[b, h, i, j]
    old = np.zeros((H, V), o.dtype)  # S_{t-1}^T k_t, computed by the previous step
    u = np.empty(V, o.dtype)
    acc = np.empty(V, o.dtype)
    if delta:
        for h in range(H):
            for i in range(K):
                ki = k[b, 0, h, i]
                for j in range(V):
                    old[h, j] += S[h, i, j] * ki
    for t in range(T):
        m = keep[b, t]
        if save and t % C == 0:
            c = t // C
            for h in range(H):
                for i in range(K):
                    for j in range(V):
                        Scp[b, h, c, i, j] = S[h, i, j]
        tn = t + 1 if t + 1 < T else t
        for h in range(H):
            Sh = S[h]
            if m != 1.0:  # multiply (not assign) so that the semantics match the reference exactly
                for i in range(K):
                    for j in range(V):
                        Sh[i, j] *= m
            for j in range(V):
                acc[j] = 0.0
            if delta:
                bt = beta[b, t, h]
                oh = old[h]
                for j in range(V):
                    w = v[b, t, h, j] - m * oh[j]
                    if save:
                        Wv[b, t, h, j] = w
                    u[j] = bt * w
                    oh[j] = 0.0
                for i in range(K):
                    ki = k[b, t, h, i]
                    qi = q[b, t, h, i]
                    kn = k[b, tn, h, i]
                    for j in range(V):
                        s = Sh[i, j] + ki * u[j]
                        Sh[i, j] = s
                        acc[j] += s * qi
                        oh[j] += s * kn
            else:
                for i in range(K):
                    ki = k[b, t, h, i]
                    qi = q[b, t, h, i]
                    for j in range(V):
                        s = Sh[i, j] + ki * v[b, t, h, j]
                        Sh[i, j] = s
                        acc[j] += s * qi
            for j in range(V):
                o[b, t, h, j] = acc[j]


@nb.reordering_kernel
def _backward_row(delta, C, b, q, k, v, beta, keep, Scp, Wv, go, gST, gq, gk, gv, gbeta, gS0):
    """Batch row ``b``: the inputs of :func:`_forward_row`, its saved Scp and Wv, the output gradients go
    ``[B, T, H, V]`` and gST ``[B, H, K, V]``; writes gq, gk ``[B, T, H, K]``, gv ``[B, T, H, V]``, gbeta
    ``[B, T, H]`` (delta) and gS0 ``[B, H, K, V]``.

    The backward holds states and state gradients value-major (``[V, K]``): then the products with ``go`` and
    ``gw`` that give ``gq`` and ``gk`` are row updates, which vectorise, and only ``gu = gS^T k`` is a dot
    product per row.
    """
    T, H, K = q.shape[1], q.shape[2], q.shape[3]
    V = v.shape[3]
    NC = Scp.shape[2]
    zero = q.dtype.type(0)  # float32 accumulators for float32 inputs (a literal 0.0 would be float64)
    gS = np.empty((H, V, K), q.dtype)  # the running gradient w.r.t. S_t, value-major
    for h in range(H):
        for i in range(K):
            for j in range(V):
                gS[h, j, i] = gST[b, h, i, j]
    Sb = np.empty((H, C + 1, V, K), q.dtype)  # Sb[h, l]: the state before step t0 + l (unmasked), value-major
    gu = np.empty(V, q.dtype)
    for c in range(NC - 1, -1, -1):
        t0 = c * C
        L = min(C, T - t0)
        for h in range(H):
            for i in range(K):
                for j in range(V):
                    Sb[h, 0, j, i] = Scp[b, h, c, i, j]
        for l in range(L):  # recompute the chunk's states with the forward's arithmetic
            t = t0 + l
            m = keep[b, t]
            for h in range(H):
                kt = k[b, t, h]
                for j in range(V):
                    uj = beta[b, t, h] * Wv[b, t, h, j] if delta else v[b, t, h, j]
                    Sp = Sb[h, l, j]
                    Sn = Sb[h, l + 1, j]
                    if m != 1.0:
                        for i in range(K):
                            Sn[i] = Sp[i] * m + kt[i] * uj
                    else:
                        for i in range(K):
                            Sn[i] = Sp[i] + kt[i] * uj
        for l in range(L - 1, -1, -1):
            t = t0 + l
            m = keep[b, t]
            for h in range(H):
                gSh = gS[h]
                qt = q[b, t, h]
                kt = k[b, t, h]
                got = go[b, t, h]
                gqt = gq[b, t, h]
                gkt = gk[b, t, h]
                for i in range(K):
                    gqt[i] = 0.0
                    gkt[i] = 0.0
                # the read's gradient joins gS, which is then the whole gradient of S_t
                for j in range(V):
                    gj = got[j]
                    uj = beta[b, t, h] * Wv[b, t, h, j] if delta else v[b, t, h, j]
                    row = gSh[j]
                    St = Sb[h, l + 1, j]
                    acc = zero
                    for i in range(K):
                        g = row[i] + qt[i] * gj
                        row[i] = g
                        gqt[i] += St[i] * gj
                        gkt[i] += g * uj
                        acc += g * kt[i]
                    gu[j] = acc
                if delta:  # through the old value S'^T k_t
                    bt = beta[b, t, h]
                    gb = zero
                    for j in range(V):
                        gb += gu[j] * Wv[b, t, h, j]
                        gv[b, t, h, j] = bt * gu[j]
                    gbeta[b, t, h] = gb
                    for j in range(V):
                        gw = bt * gu[j]
                        mgw = m * gw
                        row = gSh[j]
                        Sp = Sb[h, l, j]
                        for i in range(K):
                            gkt[i] -= Sp[i] * mgw
                            row[i] = (row[i] - kt[i] * gw) * m
                else:
                    for j in range(V):
                        gv[b, t, h, j] = gu[j]
                    if m != 1.0:
                        for j in range(V):
                            for i in range(K):
                                gSh[j, i] *= m
    for h in range(H):
        for i in range(K):
            for j in range(V):
                gS0[b, h, i, j] = gS[h, j, i]


# the parallel kernels only distribute the batch rows: a small prange body keeps numba's (slow) parallel
# compilation short; the per-row work is compiled once as a plain function


@nb.parallel_kernel
def _forward_kernel(delta, save, C, q, k, v, beta, keep, S0, o, ST, Scp, Wv):
    for b in nb.prange(q.shape[0]):
        _forward_row(delta, save, C, b, q, k, v, beta, keep, S0, o, ST, Scp, Wv)


@nb.parallel_kernel
def _backward_kernel(delta, C, q, k, v, beta, keep, Scp, Wv, go, gST, gq, gk, gv, gbeta, gS0):
    for b in nb.prange(q.shape[0]):
        _backward_row(delta, C, b, q, k, v, beta, keep, Scp, Wv, go, gST, gq, gk, gv, gbeta, gS0)


# ------------------------------------------------------------------------------------------------- autograd


# Two entry points share the kernels. In eager mode an autograd.Function (:class:`_LinearRecurrence`) calls them
# directly; under torch.compile a pair of custom ops (forward, backward) with fake implementations and a registered
# autograd makes them opaque nodes of the graph. (Calling a custom op imports torch._dynamo, and with it triton,
# on first use: the eager path keeps that cost off ordinary CPU code.) ``beta`` is an empty tensor for the sum
# rule; ``save`` False (no gradient needed) keeps no checkpoints.


def _forward(delta: bool, save: bool, C: int, keep: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor,
             S0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] or empty, S0 [B, H, K, V])``, ``keep [B, T]`` ->
    ``(o [B, T, H, V], S_T [B, H, K, V], Scp [B, H, NC, K, V], w [B, T, H, V])`` (Scp, w empty unless ``save``)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    dt = nb.np_dtype(q.dtype)
    NC = -(-T // C) if save else 0
    o = np.empty((B, T, H, V), dt)
    ST = np.empty((B, H, K, V), dt)
    Scp = np.empty((B, H, NC, K, V), dt)
    Wv = np.empty((B, T, H, V) if save and delta else (0, 0, 0, 0), dt)
    b = _np(beta) if delta else np.empty((0, 0, 0), dt)
    nb.sync_threads()
    _forward_kernel(delta, save, C, _np(q), _np(k), _np(v), b, _np(keep), _np(S0), o, ST, Scp, Wv)
    return torch.from_numpy(o), torch.from_numpy(ST), torch.from_numpy(Scp), torch.from_numpy(Wv)


def _backward_grads(delta: bool, C: int, keep: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor,
                    Scp: Tensor, Wv: Tensor, g_o: Tensor, g_ST: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of q, k, v, beta (empty for the sum rule) and S0 from those of o and S_T."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    dt = nb.np_dtype(q.dtype)
    gq, gk = np.empty((B, T, H, K), dt), np.empty((B, T, H, K), dt)
    gv = np.empty((B, T, H, V), dt)
    gbeta = np.empty((B, T, H) if delta else (0, 0, 0), dt)
    gS0 = np.empty((B, H, K, V), dt)
    b = _np(beta) if delta else np.empty((0, 0, 0), dt)
    nb.sync_threads()
    _backward_kernel(delta, C, _np(q), _np(k), _np(v), b, _np(keep), _np(Scp), _np(Wv), _np(g_o.to(q.dtype)),
                     _np(g_ST.to(q.dtype)), gq, gk, gv, gbeta, gS0)
    return (torch.from_numpy(gq), torch.from_numpy(gk), torch.from_numpy(gv), torch.from_numpy(gbeta),
            torch.from_numpy(gS0))


def _zero_grads(v: Tensor, Scp: Tensor, g_o: Tensor | None, g_ST: Tensor | None) -> tuple[Tensor, Tensor]:
    """The output gradients with None (an output that did not reach the loss) as zeros."""
    return (torch.zeros_like(v) if g_o is None else g_o,
            Scp.new_zeros(Scp.shape[:2] + Scp.shape[3:]) if g_ST is None else g_ST)


class _LinearRecurrence(torch.autograd.Function):
    """Eager entry: ``(delta, save, C, keep, q, k, v, beta, S0) -> (o, S_T)`` (arguments as :func:`_forward`)."""

    @staticmethod
    def forward(ctx, delta, save, C, keep, q, k, v, beta, S0):
        o, ST, Scp, Wv = _forward(delta, save, C, keep, q, k, v, beta, S0)
        ctx.delta, ctx.C = delta, C
        ctx.save_for_backward(keep, q, k, v, beta, Scp, Wv)
        ctx.set_materialize_grads(False)
        return o, ST

    @staticmethod
    @once_differentiable
    def backward(ctx, g_o, g_ST):
        keep, q, k, v, beta, Scp, Wv = ctx.saved_tensors
        grads = _backward_grads(ctx.delta, ctx.C, keep, q, k, v, beta, Scp, Wv, *_zero_grads(v, Scp, g_o, g_ST))
        gq, gk, gv, gbeta, gS0 = grads
        return (None, None, None, None, gq, gk, gv, gbeta if ctx.delta else None, gS0)


@torch.library.custom_op("fastweights::linear_rule_recurrence", mutates_args=())
def _recurrence(delta: bool, save: bool, C: int, keep: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor,
                S0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The traced entry (torch.compile): :func:`_forward` as a custom op."""
    return _forward(delta, save, C, keep, q, k, v, beta, S0)


@_recurrence.register_fake
def _(delta, save, C, keep, q, k, v, beta, S0):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NC = -(-T // C) if save else 0
    Wshape = (B, T, H, V) if save and delta else (0, 0, 0, 0)
    return q.new_empty(B, T, H, V), q.new_empty(B, H, K, V), q.new_empty(B, H, NC, K, V), q.new_empty(Wshape)


@torch.library.custom_op("fastweights::linear_rule_recurrence_backward", mutates_args=())
def _recurrence_backward(delta: bool, C: int, keep: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor,
                         Scp: Tensor, Wv: Tensor, g_o: Tensor, g_ST: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The traced entry of :func:`_backward_grads`."""
    return _backward_grads(delta, C, keep, q, k, v, beta, Scp, Wv, g_o, g_ST)


@_recurrence_backward.register_fake
def _(delta, C, keep, q, k, v, beta, Scp, Wv, g_o, g_ST):
    B, T, H, _ = q.shape
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            q.new_empty((B, T, H) if delta else (0, 0, 0)), Scp.new_empty(Scp.shape[:2] + Scp.shape[3:]))


def _setup_context(ctx, inputs, output) -> None:
    delta, _, C, keep, q, k, v, beta, _ = inputs
    ctx.delta, ctx.C = delta, C
    ctx.save_for_backward(keep, q, k, v, beta, output[2], output[3])


def _backward(ctx, g_o, g_ST, _g_Scp, _g_W):
    keep, q, k, v, beta, Scp, Wv = ctx.saved_tensors
    g_o, g_ST = _zero_grads(v, Scp, g_o, g_ST)
    gq, gk, gv, gbeta, gS0 = _recurrence_backward(ctx.delta, ctx.C, keep, q, k, v, beta, Scp, Wv, g_o, g_ST)
    grads = (gq, gk, gv, gbeta if ctx.delta else None, gS0)
    return (None, None, None, None, *(g if need else None for g, need in zip(grads, ctx.needs_input_grad[4:])))


_recurrence.register_autograd(_backward, setup_context=_setup_context)


def linear_rule_compiled(op: str, q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None,
                         initial_state: Tensor | None, reset: Tensor | None, output_final_state: bool,
                         checkpoint_every: int | None) -> tuple[Tensor, Tensor | None]:
    """The ``compiled`` implementation of ``sum_rule`` (``beta=None``) and ``delta_rule``; arguments as the ops.

    ``checkpoint_every``: steps between the states the forward keeps for the backward (default ~sqrt(T)).
    """
    in_dtype = check_float_tensor("q", q).dtype
    q, k, v, beta, s0, reset = prepare_linear_inputs(q, k, v, beta, initial_state, reset)
    B, T, H, K = q.shape
    C = checkpoint_interval(checkpoint_every, T)
    nb.check_runnable(op, q)
    if T == 1:  # one step (decoding): a handful of PyTorch ops cost less than entering the kernel
        o, s = _single_step(q[:, 0], k[:, 0], v[:, 0], None if beta is None else beta[:, 0], s0,
                            None if reset is None else reset[:, 0])
        return o.to(in_dtype), (s if output_final_state else None)
    if s0 is None:
        s0 = q.new_zeros(B, H, K, v.shape[-1])
    delta = beta is not None
    tensors = (q, k, v, s0) if beta is None else (q, k, v, beta, s0)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    keep = nb.keep_tensor(reset, B, T, q.dtype)
    b = q.new_empty(0, 0, 0) if beta is None else beta
    if torch.compiler.is_compiling():
        o, s, _, _ = _recurrence(delta, save, C, keep, q, k, v, b, s0)
    else:
        o, s = _LinearRecurrence.apply(delta, save, C, keep, q, k, v, b, s0)
    return o.to(in_dtype), (s if output_final_state else None)


def supports_up_to(max_head: int) -> Callable[..., str | None]:
    """The ``supports`` of a compiled sum/delta rule that beats the chunked form for heads of up to ``max_head``
    keys x values (measured with ``fastweights bench``, docs/performance.md). Larger heads, and calls that set
    the chunked form's ``chunk_size``, go to the chunked form without a notice; a call that sets
    ``checkpoint_every`` (the recurrent form's interval) stays here whatever the head size."""

    def supports(q: object, k: object = None, v: object = None, *args: object, **kwargs: object) -> str | None:
        from .registry import Choice

        if "chunk_size" in kwargs:
            return Choice("chunk_size= sets the chunk width of the chunked form")
        if "checkpoint_every" in kwargs or not isinstance(q, Tensor) or q.dim() == 0:
            return None  # the op's argument checks report wrong types
        K = q.shape[-1]
        V = v.shape[-1] if isinstance(v, Tensor) and v.dim() > 0 else K
        if K * V > max_head:
            return Choice(f"heads of {K} x {V} run faster in the chunked form")
        return None

    return supports


# K * V up to which the recurrent kernels beat the chunked form, forward+backward, one thread (docs/performance.md)
MAX_HEAD = {"sum_rule": 96 * 96, "delta_rule": 128 * 128}
