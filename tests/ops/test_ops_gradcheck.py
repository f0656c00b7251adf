"""``torch.autograd.gradcheck`` of every op on tiny float64 shapes, with an initial state and resets.

Gradients are checked w.r.t. every input (including ``rec_delta``'s slow recurrent matrices) and every
initial-state component, for the output and every final-state component. The chunked rules get ``chunk_size=2``
and the checkpointed scans ``checkpoint_every=2`` so that T = 5 spans several chunks (and a ragged last one).
"""

from __future__ import annotations

import pytest
import torch
from _ops_helpers import ALL_CASES, DELTA, SUM, call, case_params, interval_kw, make_inputs, make_reset

B, T, H, K, V = 2, 5, 2, 2, 3


def _gradcheck(case, impl):
    _, xs, _, st = make_inputs(case, B=B, T=T, H=H, K=K if not case.square else 3,
                                          V=3 if case.square else V, seed=17)
    # batch 0: reset on a chunk boundary; batch 1: inside a chunk (initial state still reaches both)
    reset = make_reset(B, T, [(0, 2), (1, 3)])
    kw = interval_kw(case, 2) if case.chunk_kwarg and impl is None else {}
    leaves = tuple(x.clone().requires_grad_() for x in [*xs, *st])
    n = len(xs)

    def fn(*ts):
        out, fin = call(case, list(ts[:n]), list(ts[n:]), reset, impl=impl, **kw)
        return (out, *fin)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_gradcheck_default(case):
    _gradcheck(case, None)


@pytest.mark.parametrize("case", case_params([SUM, DELTA]))
def test_gradcheck_reference(case):
    _gradcheck(case, "reference")
