"""The chunked sum/delta rule with its hand-written backward (``ops/_chunked.py``), beyond the generic
equivalence tests: every chunk length including ragged and single-step chunks, both code paths of the
sum rule (prefix sum without resets, loop with resets), gradients of the final state alone, the block
triangular inverse, and the tuned default chunk length."""

from __future__ import annotations

import pytest
import torch
from _ops_helpers import DELTA, SUM, case_params, compare_runs, make_inputs, make_reset, run_with_grads

from fastweights.ops.common.chunked import _unit_lower_inverse, resolve_chunk_size

TOL = 1e-9


@pytest.mark.parametrize("case", case_params([SUM, DELTA]))
@pytest.mark.parametrize("chunk_size", [1, 2, 5, 16, 37, 64])
@pytest.mark.parametrize("with_reset", [False, True], ids=["no_reset", "reset"])
def test_every_chunk_length_matches_reference(case, chunk_size, with_reset):
    T = 37
    names, xs, st_names, st = make_inputs(case, B=2, T=T, H=2, K=5, V=3)
    reset = make_reset(2, T, [(0, 0), (0, 16), (1, 5), (1, 6), (1, 36)]) if with_reset else None
    got = run_with_grads(case, xs, st, reset, impl="chunked", chunk_size=chunk_size)
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    compare_runs(case, got, ref, TOL, names, st_names)


@pytest.mark.parametrize("case", case_params([SUM, DELTA]))
def test_gradient_through_final_state_only(case):
    """The output is unused: the backward gets no output gradient at all (None), only the state's."""
    names, xs, _, st = make_inputs(case, B=2, T=21, H=2, K=4, V=3)
    grads = []
    for impl in ("chunked", "reference"):
        leaves = [x.detach().clone().requires_grad_() for x in xs]
        s0 = st[0].detach().clone().requires_grad_()
        _, fin = case.fn(*leaves, initial_state=s0, output_final_state=True, impl=impl,
                         **({"chunk_size": 8} if impl == "chunked" else {}))
        weights = torch.randn(fin.shape, generator=torch.Generator().manual_seed(3), dtype=fin.dtype)
        inputs = [*leaves, s0]
        got = torch.autograd.grad((fin * weights).sum(), inputs, allow_unused=True)  # sum rule: q is unused
        grads.append([torch.zeros_like(x) if d is None else d for x, d in zip(inputs, got)])
    for name, a, e in zip([*names, "initial_state"], *grads):
        assert (a - e).abs().max() <= TOL * e.abs().max(), name


def test_chunked_accepts_no_initial_state_grad():
    """An initial state that does not require grad gets none, and the inputs' gradients are unaffected."""
    _, xs, _st_names, st = make_inputs(DELTA, B=1, T=9, H=1, K=3, V=3)
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    out, _ = DELTA.fn(*leaves, initial_state=st[0], chunk_size=4)
    out.sum().backward()
    assert all(x.grad is not None for x in leaves)


@pytest.mark.parametrize("C", [1, 2, 3, 16, 17, 31, 32, 48, 64, 100])
def test_unit_lower_inverse(C):
    g = torch.Generator().manual_seed(C)
    a = torch.randn(3, C, C, generator=g, dtype=torch.float64).tril(-1) / C**0.5
    inv = _unit_lower_inverse(a)
    eye = torch.eye(C, dtype=torch.float64)
    assert torch.allclose(inv @ (eye + a), eye.expand(3, C, C), atol=1e-10)


def test_default_chunk_length():
    assert resolve_chunk_size(None, 16, delta=True) == 16
    assert resolve_chunk_size(None, 64, delta=True) == 32
    assert resolve_chunk_size(None, 64, delta=False) == 64
    assert resolve_chunk_size(None, 256, delta=False) == 64
    assert resolve_chunk_size(None, 4, delta=False) == 16
    assert resolve_chunk_size(7, 64, delta=True) == 7
    with pytest.raises(ValueError, match="chunk_size"):
        resolve_chunk_size(0, 64, delta=True)
