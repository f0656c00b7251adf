"""Pieces shared by the recurrences built on the delta rule (Delta RNN, Delta LSTM, RDN) and their backends.

* :func:`read`, :func:`recurrent_delta_update`: the key-major read ``M^T x`` and one delta write, as step functions
  of :func:`~fastweights.ops.common.scan.checkpointed_scan` use them;
* :func:`feed_forward`: the fast matrices driven by slow-net outputs only (``z = W^T q``, any gate axis folded into
  the heads), run by the delta rule (``impl``: its implementation; by default the fastest for the inputs);
* :func:`prepare_state`: the validated initial state (zeros when None) in the compute dtype;
* :func:`check_recurrent_inputs`, :func:`check_version`: argument checks of the recurrent ops;
* :func:`recurrent_args`, :func:`prepare_recurrent`, :func:`dispatch_recurrent`: the arguments, their validation
  and the dispatch the Delta RNN and the Delta LSTM (the same arguments with a gate axis) share;
* :func:`stack_recurrent`: RDN's slow recurrent matrices stacked into one ``[H, 3D+1, D]`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .checks import (
    check_float_tensor,
    check_options,
    check_qkv,
    check_reset,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_state_tuple,
    check_unit_interval,
    compute_dtype,
)
from .registry import dispatch
from .spec import FEATURE, SIGMOID, SOFTMAX, VALUE, ArgSpec, layout_shape


def col(x: Tensor) -> Tensor:
    """``x [..., n]`` as a column ``[..., n, 1]`` (the step loops of ``naive.py`` write the paper's matrix algebra)."""
    return x[..., :, None]


def row(x: Tensor) -> Tensor:
    """``x [..., n]`` as a row ``[..., 1, n]``."""
    return x[..., None, :]


def read(M: Tensor, x: Tensor) -> Tensor:
    """``M^T x`` for key-major ``M [..., K, V]`` and ``x [..., K]``."""
    # a batched matmul: einsum lowers this contraction to a copy-heavy path that is ~10x slower on CPU
    return (x.unsqueeze(-2) @ M).squeeze(-2)


def recurrent_delta_update(R: Tensor, rk: Tensor, rv: Tensor, rbeta: Tensor) -> Tensor:
    """One delta write of key-major matrices ``R [..., K, V]`` with ``rk [..., K]``, ``rv [..., V]``,
    ``rbeta [...]``: ``R + rbeta rk (rv - R^T rk)^T``."""
    old = read(R, rk)
    return R + (rbeta[..., None] * rk)[..., :, None] * (rv - old)[..., None, :]


def check_recurrent_inputs(rk, rv, rbeta, lead: tuple[int, ...], V: int, layout: str, ref: Tensor) -> None:
    """``rk, rv``: ``lead + (V,)``; ``rbeta``: ``lead`` (shared by Delta RNN and Delta LSTM)."""
    for name, t, shape in (("rk", rk, (*lead, V)), ("rv", rv, (*lead, V)), ("rbeta", rbeta, lead)):
        check_float_tensor(name, t)
        check_shape(name, t, layout + (", V]" if name != "rbeta" else "]"), shape)
    check_same_device("q", ref, rk=rk, rv=rv, rbeta=rbeta)
    check_same_dtype("q", ref, rk=rk, rv=rv, rbeta=rbeta)
    check_unit_interval("rbeta", rbeta)


def check_version(version: object, allowed: tuple[int, ...]) -> int:
    if version not in allowed or isinstance(version, bool):
        raise ValueError(f"version: expected one of {list(allowed)}, got {version!r}")
    return version  # type: ignore[return-value]


def recurrent_args(gate: str = "") -> tuple[ArgSpec, ...]:
    """``q, k, v, beta, rk, rv, rbeta`` of the Delta RNN (``gate=""``) or the Delta LSTM (``gate=", G"``)."""
    lead = f"[B, T, H{gate}"
    return (ArgSpec("q", f"{lead}, K]", FEATURE), ArgSpec("k", f"{lead}, K]", FEATURE),
            ArgSpec("v", f"{lead}, V]", VALUE), ArgSpec("beta", f"{lead}]", SIGMOID),
            ArgSpec("rk", f"{lead}, V]", SOFTMAX), ArgSpec("rv", f"{lead}, V]", VALUE),
            ArgSpec("rbeta", f"{lead}]", SIGMOID))


def prepare_recurrent(q, k, v, beta, rk, rv, rbeta, version, initial_state, reset, *, versions: tuple[int, ...],
                      state: Sequence[tuple[str, str]], gates: int = 0):
    """Validate a Delta RNN (``gates=0``) / Delta LSTM (``gates=3``) call before any work and cast it to the
    compute dtype: ``((q, k, v, beta, rk, rv, rbeta), state tuple, reset)``."""
    check_version(version, versions)
    g = f", {gates}" if gates else ""
    shape = check_qkv(q, k, v, beta, beta_layout=f"[B, T, H{g}]", q_layout=f"[B, T, H{g}, K]",
                      v_layout=f"[B, T, H{g}, V]")
    if gates and shape[3] != gates:
        raise ValueError(f"q: expected a gate axis of size 3 (input, update, output) in [B, T, H, 3, K], "
                         f"got shape {list(q.shape)}")
    (B, T, H), (K, V) = shape[:3], shape[-2:]
    check_recurrent_inputs(rk, rv, rbeta, tuple(shape[:-2]), V, f"[B, T, H{g}", q)
    reset = check_reset(reset, B, T, q.device)
    # the gate axis is written "3" in messages, as the arguments' layouts write it
    fields = [(name, layout.replace("G", "3")) for name, layout in state] if gates else state
    prepared = prepare_state(initial_state, fields, {"B": B, "H": H, "3": gates, "K": K, "V": V}, q)
    dt = compute_dtype(q.dtype)
    return tuple(x.to(dt) for x in (q, k, v, beta, rk, rv, rbeta)), prepared, reset


def dispatch_recurrent(op: str, impl: str | None, *args, **kwargs):
    """:func:`~fastweights.ops.common.registry.dispatch` for an op with a checkpoint interval: ``checkpoint_every`` is
    the one option beyond the op's arguments (``chunk_size``, the parallel chunk width of the sum and delta rules, is
    refused with the options it does take)."""
    check_options(op, {k: v for k, v in kwargs.items() if k not in ("initial_state", "reset", "output_final_state",
                                                                     "version")}, ("checkpoint_every",))
    return dispatch(op, impl, *args, **kwargs)


def prepare_state(initial_state: object, fields: Sequence[tuple[str, str]], dims: dict[str, int], q: Tensor
                  ) -> tuple[Tensor, ...]:
    """The validated state tuple in the compute dtype (zeros when None); ``fields``: (name, layout) as in the
    op's spec, their axes sized by ``dims`` (e.g. ``{"B": 2, "H": 4, "K": 16, "V": 16}``)."""
    full = [(name, layout, layout_shape(layout, dims)) for name, layout in fields]
    state = check_state_tuple(initial_state, full, q.device)
    dt = compute_dtype(q.dtype)
    if state is None:
        return tuple(q.new_zeros(*shape, dtype=dt) for _, _, shape in full)
    return tuple(s.to(dt) for s in state)


def feed_forward(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, W0: Tensor, reset: Tensor | None,
                 impl: str | None = None) -> tuple[Tensor, Tensor]:
    """``z = W^T q`` of the feed-forward fast matrices and their final state, by the delta rule.

    ``q, k [B, T, H, *G, K]``, ``v [B, T, H, *G, V]``, ``beta [B, T, H, *G]``, ``W0 [B, H, *G, K, V]``; the gate
    axes ``G`` (the Delta LSTM's three gates) are independent delta rules, so they are folded into the heads.
    Returns ``(z [B, T, H, *G, V], W [B, H, *G, K, V])``.
    """
    from ..delta_rule import delta_rule  # the op package imports this module

    B, T, H = q.shape[:3]
    gates, K, V = tuple(q.shape[3:-1]), q.shape[-1], v.shape[-1]
    if not gates:  # nothing to fold (the reshapes would cost a decoding step ~10% of its time)
        return delta_rule(q, k, v, beta, initial_state=W0, reset=reset, output_final_state=True, impl=impl)
    n = H
    for g in gates:
        n *= g
    z, W = delta_rule(q.reshape(B, T, n, K), k.reshape(B, T, n, K), v.reshape(B, T, n, V), beta.reshape(B, T, n),
                      initial_state=W0.reshape(B, n, K, V), reset=reset, output_final_state=True, impl=impl)
    return z.view(B, T, H, *gates, V), W.view(B, H, *gates, K, V)


def stack_recurrent(rec_q: Tensor, rec_k: Tensor, rec_v: Tensor, rec_beta: Tensor) -> Tensor:
    """``[H, 3D+1, D]``: RDN's ``rec_q, rec_k, rec_v [H, D, D]`` and ``rec_beta [H, D]`` applied in one matmul
    (autograd splits the gradient back)."""
    return torch.cat([rec_q, rec_k, rec_v, rec_beta.unsqueeze(1)], dim=1)
