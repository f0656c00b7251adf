"""No op mutates its inputs; the default implementations save O(T D) + one state per chunk for backward."""

from __future__ import annotations

import math

import pytest
import torch
from _ops_helpers import (
    ALL_CASES,
    DELTA,
    LSTM,
    REC,
    RNN2,
    call,
    case_params,
    interval_kw,
    loss_weights,
    make_inputs,
    standard_reset,
)

from fastweights.ops.common.scan import default_checkpoint_every

# --------------------------------------------------------------------------------------------- purity


@pytest.mark.parametrize("impl", [None, "reference"])
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_no_in_place_mutation(case, impl):
    """Inputs, initial state and reset are bit-identical after forward + backward; the outputs and the
    final state share no memory with them (so writing into a returned state cannot corrupt an input)."""
    T = 19
    kw = interval_kw(case, 8) if case.chunk_kwarg and impl is None else {}
    names, xs, st_names, st = make_inputs(case, T=T, K=3, V=3 if case.square else 4)
    reset = standard_reset(2, T, boundaries=(8, 16))
    xs = [x.requires_grad_() for x in xs]
    st = [s.requires_grad_() for s in st]
    before = [t.detach().clone() for t in [*xs, *st, reset]]
    out, fin = call(case, xs, st, reset, impl=impl, **kw)
    outs = [out, *fin]
    sum((w * t).sum() for w, t in zip(loss_weights(outs), outs)).backward()
    for name, b, a in zip([*names, *st_names, "reset"], before, [*xs, *st, reset]):
        assert torch.equal(b, a.detach()), f"{case.id}: {name} was modified in place"
    input_ptrs = {t.untyped_storage().data_ptr() for t in [*xs, *st, reset]}
    for i, t in enumerate(outs):
        assert t.untyped_storage().data_ptr() not in input_ptrs, f"{case.id}: returned tensor {i} aliases an input"


# --------------------------------------------------------------------------------------------- memory


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages that autograd saves for backward while ``fn`` runs."""
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("case", case_params([DELTA, RNN2, LSTM[4], REC]))
def test_saved_activation_memory_is_linear_in_T_D(case):
    """B = 1, T = 512, H = 2, D = 64, float32. The default implementation must save at most

        8 x (bytes of all inputs)                        -- O(T D): inputs, outputs, per-step vectors
      + 8 x G T H C x 4 bytes  (chunked rules, C = 64)   -- the C x C intra-chunk matrices, O(T C)
      + (ceil(T / C_scan) + 1) x (bytes of one state)    -- one checkpointed state per scan chunk

    (G = 3 gates for the Delta LSTM), while the reference step loop, which keeps a D x D state per step
    (> T H D^2 x 4 bytes), must exceed that bound: otherwise the test could not fail.
    """
    B, T, H, D, C = 1, 512, 2, 64, 64
    G = 3 if case.op == "delta_lstm" else 1
    _, xs, _, st = make_inputs(case, B=B, T=T, H=H, K=D, V=D, dtype=torch.float32)
    xs = [x.requires_grad_() for x in xs]
    st = [s.requires_grad_() for s in st]
    input_bytes = sum(x.numel() * x.element_size() for x in xs)
    state_bytes = sum(s.numel() * s.element_size() for s in st)
    n_checkpoints = math.ceil(T / default_checkpoint_every(T)) + 1
    chunk_matrices = 0 if case.op == "rec_delta" else 8 * G * T * H * C * 4
    bound = 8 * input_bytes + chunk_matrices + n_checkpoints * state_bytes

    default = saved_bytes(lambda: call(case, xs, st))
    reference = saved_bytes(lambda: call(case, xs, st, impl="reference"))
    assert reference > T * H * D * D * 4, f"reference saved {reference} B: the measurement does not see the states"
    assert reference > bound, f"bound {bound} B is too loose to tell: the reference saves only {reference} B"
    assert default < bound, f"{case.id}: default implementation saved {default} B for backward, bound {bound} B"
