"""Memory-lean backpropagation through a nonlinear recurrence (Delta RNN, Delta LSTM, RDN).

A nonlinear recurrence cannot be chunked over time, and autograd through a step loop keeps every
per-step state (a d x d matrix per head per step) for the backward pass. ``checkpointed_scan`` instead
runs the loop without building a graph, keeps only the state at the start of every chunk of
``checkpoint_every`` steps, and in the backward pass recomputes one chunk at a time (last chunk first) to
back-propagate through it. Memory: the inputs/outputs (O(T D)), one state per chunk, and one chunk's
graph; compute: about one extra forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .checks import check_chunk_size

# step(xs_t, params, state) -> (y_t, new_state); xs_t are the per-step slices x[:, t] of every input.
StepFn = Callable[[tuple[Tensor, ...], tuple[Tensor, ...], tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]]


def default_checkpoint_every(T: int) -> int:
    """~sqrt(T): balances the stored chunk-start states against one chunk's recomputed graph."""
    return max(16, math.isqrt(max(T - 1, 0)) + 1)


def checkpoint_interval(checkpoint_every: object, T: int) -> int:
    """``checkpoint_every`` (a positive int) or the default for ``T`` steps."""
    if checkpoint_every is None:
        return default_checkpoint_every(T)
    return check_chunk_size(checkpoint_every, "checkpoint_every")


def _run(step: StepFn, xs: Sequence[Tensor], params: Sequence[Tensor], state: tuple[Tensor, ...],
         keep: Tensor | None, t0: int, t1: int, checkpoints: list | None = None, every: int = 0):
    ys = []
    for t in range(t0, t1):
        if checkpoints is not None and (t - t0) % every == 0:
            checkpoints.append(state)
        if keep is not None:
            state = tuple(s * keep[:, t].view(-1, *([1] * (s.dim() - 1))) for s in state)
        y, state = step(tuple(x[:, t] for x in xs), tuple(params), state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


class _CheckpointedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, step, chunk_size, n_xs, n_params, keep, *tensors):
        xs, params, state = tensors[:n_xs], tensors[n_xs:n_xs + n_params], tensors[n_xs + n_params:]
        T = xs[0].shape[1]
        checkpoints: list[tuple[Tensor, ...]] = []
        ys, final = _run(step, xs, params, tuple(state), keep, 0, T, checkpoints, chunk_size)
        ctx.step, ctx.chunk_size, ctx.n_xs, ctx.n_params, ctx.n_state = step, chunk_size, n_xs, n_params, len(state)
        ctx.keep = keep
        ctx.save_for_backward(*xs, *params, *(s for cp in checkpoints for s in cp))
        return (ys, *final)

    @staticmethod
    def backward(ctx, grad_ys, *grad_final):
        saved = ctx.saved_tensors
        n_xs, n_params, n_state, C = ctx.n_xs, ctx.n_params, ctx.n_state, ctx.chunk_size
        xs, params = saved[:n_xs], saved[n_xs:n_xs + n_params]
        flat = saved[n_xs + n_params:]
        checkpoints = [flat[i:i + n_state] for i in range(0, len(flat), n_state)]
        T = xs[0].shape[1]
        g_state = tuple(grad_final)
        g_xs: list[list[Tensor]] = [[] for _ in xs]
        g_params = [torch.zeros_like(p) for p in params]
        for c in reversed(range(len(checkpoints))):
            t0, t1 = c * C, min(T, (c + 1) * C)
            with torch.enable_grad():
                s0 = tuple(s.detach().requires_grad_() for s in checkpoints[c])
                xs_c = tuple(x[:, t0:t1].detach().requires_grad_() for x in xs)
                ps = tuple(p.detach().requires_grad_() for p in params)
                # offset the slices so that step t reads xs_c[:, t - t0]
                ys, state = _run(ctx.step, [_Shift(x, t0) for x in xs_c], ps, s0, ctx.keep, t0, t1)
                grads = torch.autograd.grad(
                    (ys, *state), (*s0, *xs_c, *ps), (grad_ys[:, t0:t1], *g_state), allow_unused=True
                )
            g_state = tuple(torch.zeros_like(s) if g is None else g for g, s in zip(grads[:n_state], s0))
            for i, (g, x) in enumerate(zip(grads[n_state:n_state + n_xs], xs_c)):
                g_xs[i].append(torch.zeros_like(x) if g is None else g)
            for i, g in enumerate(grads[n_state + n_xs:]):
                if g is not None:
                    g_params[i] += g
        grad_xs = [torch.cat(gs[::-1], dim=1) for gs in g_xs]
        return (None, None, None, None, None, *grad_xs, *g_params, *g_state)


class _Shift:
    """A view of a chunk slice indexed with absolute time: ``_Shift(x, t0)[:, t] == x[:, t - t0]``."""

    def __init__(self, x: Tensor, t0: int):
        self.x, self.t0 = x, t0

    def __getitem__(self, idx):
        return self.x[:, idx[1] - self.t0]


def checkpointed_scan(
    step: StepFn, xs: Sequence[Tensor], params: Sequence[Tensor], state: Sequence[Tensor],
    reset: Tensor | None = None, checkpoint_every: int | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run ``step`` over time with chunk-checkpointed backpropagation.

    Args:
        step: ``step(xs_t, params, state) -> (y_t, state)``; must be a pure function of its arguments.
        xs: per-step inputs ``[B, T, ...]``. params: time-invariant tensors (gradients are summed over t).
        state: initial state tensors ``[B, ...]`` (gradients flow into them).
        reset: bool ``[B, T]``: True at ``t`` multiplies every state tensor by 0 before step ``t``.
        checkpoint_every: steps per checkpoint (default ~sqrt(T)).
    Returns:
        ``(ys [B, T, ...], final_state)``.
    """
    T = xs[0].shape[1]
    C = checkpoint_interval(checkpoint_every, T)
    keep = None if reset is None else (~reset).to(xs[0].dtype)
    out = _CheckpointedScan.apply(step, C, len(xs), len(params), keep, *xs, *params, *state)
    return out[0], tuple(out[1:])

