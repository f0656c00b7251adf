"""impl=auto: the best implementation that supports the inputs, and a one-line notice on fallback."""

from __future__ import annotations

import warnings

import pytest
import torch

from fastweights.ops.common import registry as _registry
from fastweights.ops.common.numba import NUMBA_MISSING


def test_auto_falls_back_with_one_notice(monkeypatch):
    entry = _registry.IMPLEMENTATIONS["rec_delta"]["compiled"]
    monkeypatch.setattr(entry, "available", lambda: NUMBA_MISSING)
    monkeypatch.setattr(_registry, "_NOTICED", set())
    q = torch.zeros(1, 2, 1, 2)
    with pytest.warns(UserWarning, match=r"rec_delta uses the 'checkpointed' implementation because numba"):
        chosen = _registry.resolve("rec_delta", None, q)
    assert chosen is _registry.IMPLEMENTATIONS["rec_delta"]["checkpointed"]
    assert chosen.name == "checkpointed"  # a named implementation: callers need not compare functions
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the notice is given once per op
        assert _registry.resolve("rec_delta", "auto", q) is chosen


def test_explicit_impl_and_unknown_impl():
    assert _registry.resolve("delta_rule", "reference") is _registry.IMPLEMENTATIONS["delta_rule"]["reference"]
    with pytest.raises(ValueError, match=r"impl: expected one of \['auto', 'chunked', 'reference'\] for delta_rule"):
        _registry.resolve("delta_rule", "fast")


@pytest.mark.parametrize("op", ["delta_delta", "delta_mlp"])
def test_compositions_pass_impl_through(op):
    """Compositions register nothing of their own: they offer, check and pass on the delta rule's implementations."""
    from fastweights import ops

    assert op not in _registry.IMPLEMENTATIONS and _registry.COMPOSITIONS[op] == "delta_rule"
    assert ops.available_implementations()[op] == ops.available_implementations()["delta_rule"]
    with pytest.raises(ValueError, match=rf"impl: expected one of \['auto', 'chunked', 'reference'\] for {op}"):
        _registry.check_impl(op, "fast")


@pytest.mark.parametrize("op", ["delta_rnn", "delta_lstm", "rec_delta"])
def test_compiled_kernels_keep_torch_thread_setting(op):
    pytest.importorskip("numba")
    from fastweights import ops
    from fastweights.bench.memory import make_inputs

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, args = make_inputs(op, 2, 5, 2, 3)
        getattr(ops, op)(*args, impl="compiled")[0].sum().backward()
        assert torch.get_num_threads() == 1  # numba's OpenMP pool must not reset torch's thread count
    finally:
        torch.set_num_threads(before)
