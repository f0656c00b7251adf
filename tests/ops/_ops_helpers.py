"""Shared helpers for the op tests: activated random inputs per op, one uniform call, error metrics.

Every op is described by an :class:`OpCase` (an op's :class:`~fastweights.ops.OpSpec` plus the variant tested).
:func:`make_inputs` builds realistic, already-activated inputs from the spec (feature-mapped queries/keys, sigmoid
betas, softmaxed recurrent keys; raw inputs for ``rec_delta`` and the ``h`` of ``delta_mlp``) as a flat list of
tensors with their argument names, plus a random initial state. :func:`call` runs an op from such a flat list
and always returns the final state as a tuple of tensors (or None).

``K`` is the key size and ``V`` the value size of an op's fast matrix. Square ops use ``K`` only
(``rec_delta``: D = K; ``delta_delta``: D = K, level-1 value 3D+1); ``delta_mlp`` uses D = K and the fast
hidden size F = V.

This module is imported by name (``tests/ops`` is on ``sys.path`` under pytest's default import mode); it
has a unique name so that it cannot clash with helpers of other test folders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fastweights import ops

F64 = torch.float64


@dataclasses.dataclass(frozen=True)
class OpCase:
    id: str
    op: str  # name in ops and in the implementation registry
    version: int | None = None
    depth: int = 1  # delta_mlp: number of fast layers
    norms: bool = False  # delta_mlp: apply a (weightless) LayerNorm before each fast layer
    chunk_kwarg: bool = True  # the default implementation takes chunk_size= (checkpoint_every= if recurrent)
    square: bool = False  # the op needs K == V
    recurrent: bool = False  # nonlinear recurrence (checkpointed scan by default)

    @property
    def spec(self) -> ops.OpSpec:
        return ops.SPECS[self.op]

    @property
    def fn(self):
        return self.spec.fn

    @property
    def single_state(self) -> bool:
        return self.spec.state_type is None and not self.spec.layered

    def __str__(self) -> str:
        return self.id


SUM = OpCase("sum_rule", "sum_rule")
DELTA = OpCase("delta_rule", "delta_rule")
RNN1 = OpCase("delta_rnn_v1", "delta_rnn", version=1, recurrent=True)
RNN2 = OpCase("delta_rnn_v2", "delta_rnn", version=2, recurrent=True)
LSTM = {v: OpCase(f"delta_lstm_v{v}", "delta_lstm", version=v, recurrent=True) for v in (1, 2, 3, 4)}
REC = OpCase("rec_delta", "rec_delta", square=True, recurrent=True)
DD = OpCase("delta_delta", "delta_delta", chunk_kwarg=False, square=True)
MLP1 = OpCase("delta_mlp_L1", "delta_mlp", depth=1, chunk_kwarg=False)
MLP2 = OpCase("delta_mlp_L2", "delta_mlp", depth=2, norms=True, chunk_kwarg=False)

ALL_CASES = [SUM, DELTA, RNN1, RNN2, *LSTM.values(), REC, DD, MLP1, MLP2]
RECURRENT_CASES = [c for c in ALL_CASES if c.recurrent]
CHUNK_KWARG_CASES = [c for c in ALL_CASES if c.chunk_kwarg]


def interval_kw(case: OpCase, n: object) -> dict[str, object]:
    """The default implementation's interval argument: ``chunk_size`` (parallel chunk width of the sum/delta rule) or
    ``checkpoint_every`` (steps between stored states of a recurrent op)."""
    return {("checkpoint_every" if case.spec.checkpointed else "chunk_size"): n}


def case_params(cases: Sequence[OpCase]):
    """``pytest.mark.parametrize`` argument values with readable ids."""
    import pytest

    return [pytest.param(c, id=c.id) for c in cases]


# ----------------------------------------------------------------------------------------------- inputs


def _randn(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64)


def make_inputs(
    case: OpCase, B: int = 2, T: int = 8, H: int = 2, K: int = 3, V: int = 4, *, dtype: torch.dtype = F64,
    seed: int = 0, state_scale: float = 0.5, value_scale: float = 1.0,
) -> tuple[list[str], list[Tensor], list[str], list[Tensor]]:
    """``(input names, inputs, state names, initial state)``, drawn in float64 and cast to ``dtype``.

    The state is float64 for float64 inputs and float32 otherwise (what an op returns as its final state).
    """
    g = torch.Generator().manual_seed(seed)
    spec = case.spec

    def rand(*shape: int) -> Tensor:
        return _randn(g, *shape)

    xs = spec.example_inputs(rand, B, T, H, K, V, version=case.version, value_scale=value_scale, depth=case.depth)
    st = spec.example_state(rand, B, H, K, V, depth=case.depth)
    names = [a.name for a in spec.arg_specs(case.depth)]
    st_names = (["initial_state"] if spec.state_type is None and not spec.layered else
                [f"initial_state.{n}" for n, _ in spec.state_specs(case.depth)])
    state_dtype = F64 if dtype == F64 else torch.float32
    xs = [x.to(dtype) for x in xs]
    st = [(state_scale * s).to(state_dtype) for s in st]
    return names, xs, st_names, st


def layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:])


def make_reset(B: int, T: int, at: Sequence[tuple[int, int]] = ()) -> Tensor:
    """bool ``[B, T]`` with True at the given ``(b, t)`` positions (those with ``t >= T`` are dropped)."""
    r = torch.zeros(B, T, dtype=torch.bool)
    for b, t in at:
        if t < T:
            r[b, t] = True
    return r


def standard_reset(B: int, T: int, boundaries: Sequence[int] = (16, 64)) -> Tensor:
    """Resets at t = 0 and mid-sequence in batch 0, at chunk boundaries and at the last step in batch 1."""
    at = [(0, 0), (B - 1, T - 1)] if T > 1 else [(0, 0)]
    if T > 2:
        at.append((0, T // 2))
    at += [(B - 1, b) for b in boundaries]
    return make_reset(B, T, at)


# ------------------------------------------------------------------------------------------------- call


def call(case: OpCase, xs: Sequence[Tensor], state: Sequence[Tensor] | None = None, reset: Tensor | None = None,
         impl: str | None = None, output_final_state: bool = True, **kwargs):
    """Run ``case`` on the flat inputs ``xs``; returns ``(output, final state tuple or None)``.

    ``state`` is a list/tuple of state components (as from :func:`make_inputs`); anything else (a bare
    tensor, say) is passed on as ``initial_state`` unchanged.
    """
    if case.version is not None:
        kwargs.setdefault("version", case.version)
    if not isinstance(state, (list, tuple)):
        init = state
    else:
        init = state[0] if case.single_state else tuple(state)
    if case.norms:
        kwargs.setdefault("norms", [layer_norm] * case.depth)
    out, fin = case.spec.call(xs, depth=case.depth, initial_state=init, reset=reset,
                              output_final_state=output_final_state, impl=impl, **kwargs)
    if fin is None:
        return out, None
    return out, ((fin,) if isinstance(fin, Tensor) else tuple(fin))


def loss_weights(tensors: Sequence[Tensor], seed: int = 1234) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=g, dtype=F64) for t in tensors]


def run_with_grads(case: OpCase, xs: Sequence[Tensor], state: Sequence[Tensor] | None, reset: Tensor | None,
                   impl: str | None = None, seed: int = 1234, **kwargs):
    """Forward + backward of a random weighted sum of the output and every final-state component (in float64).

    Returns ``(output, final state list, grads of the inputs, grads of the initial state)``, all detached.
    """
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    st = None if state is None else [s.detach().clone().requires_grad_() for s in state]
    out, fin = call(case, leaves, st, reset, impl=impl, **kwargs)
    outs = [out, *fin]
    loss = sum((w.to(t.device) * t.to(F64)).sum() for w, t in zip(loss_weights(outs, seed), outs))
    grads = torch.autograd.grad(loss, leaves + (st or []))
    n = len(leaves)
    return out.detach(), [f.detach() for f in fin], list(grads[:n]), list(grads[n:])


# ----------------------------------------------------------------------------------------------- metrics


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """``|a - e| / |e|`` (Frobenius norms, in float64); 0 when both are exactly zero."""
    a, e = actual.detach().to(F64), expected.detach().to(F64)
    num, den = (a - e).norm().item(), e.norm().item()
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def assert_rel_close(actual: Tensor, expected: Tensor, tol: float, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = rel_err(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def compare_runs(case: OpCase, got, ref, tol: float, in_names: Sequence[str], st_names: Sequence[str],
                 require_nonzero_grads: bool = True) -> None:
    """Compare two :func:`run_with_grads` results component by component."""
    (o, fin, gx, gs), (o_r, fin_r, gx_r, gs_r) = got, ref
    assert_rel_close(o, o_r, tol, f"{case.id}: output")
    assert len(fin) == len(fin_r) == len(st_names)
    for name, a, e in zip(st_names, fin, fin_r):
        assert_rel_close(a, e, tol, f"{case.id}: final {name.removeprefix('initial_state')}")
    for name, a, e in zip([*in_names, *st_names], [*gx, *gs], [*gx_r, *gs_r]):
        if require_nonzero_grads:
            assert e.abs().sum() > 0, f"{case.id}: reference gradient of {name} is identically zero"
        assert_rel_close(a, e, tol, f"{case.id}: grad of {name}")
