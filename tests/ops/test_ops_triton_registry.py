"""Device-specific implementations in the registry (``devices=``) and the registration of ``impl="triton"``.

A CUDA-only implementation must not produce a fallback notice for CPU inputs, nor a CPU-only one for CUDA inputs;
a notice is still given when an implementation meant for the input's device cannot run. No GPU is needed: the
logic is exercised with a fake op on the ``cpu`` and ``meta`` device types.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from fastweights import ops
from fastweights.ops.common import registry as _registry
from fastweights.ops.common.numba import NUMBA_AVAILABLE
from fastweights.ops.triton import _support

TRITON_OPS = ("sum_rule", "delta_rule", "delta_rnn", "delta_lstm", "rec_delta", "delta_delta", "delta_mlp")


def _impl(tag):
    def fn(*args, **kwargs):
        return tag

    return fn


@pytest.fixture
def fake(monkeypatch):
    """A fake op: ``accel`` (meta tensors only, never available: "its library is missing"), ``cpu_fast`` (CPU
    only, available unless ``state['cpu_ok']`` is False) and ``generic`` (every device)."""
    state = {"cpu_ok": True}
    impls = {
        "accel": _registry.Implementation("fake_op", "accel", _impl("accel"), 30,
                                          available=lambda: "its library is missing", devices=("meta",)),
        "cpu_fast": _registry.Implementation("fake_op", "cpu_fast", _impl("cpu_fast"), 20,
                                             available=lambda: None if state["cpu_ok"] else "numba is not installed",
                                             devices=("cpu",)),
        "generic": _registry.Implementation("fake_op", "generic", _impl("generic"), 10),
    }
    monkeypatch.setitem(_registry.IMPLEMENTATIONS, "fake_op", impls)
    monkeypatch.setattr(_registry, "_NOTICED", set())
    return state


def test_no_notice_for_an_implementation_meant_for_another_device(fake):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _registry.resolve("fake_op", None, torch.zeros(2))() == "cpu_fast"


def test_notice_names_only_implementations_meant_for_the_device(fake):
    q = torch.zeros(2, device="meta")
    with pytest.warns(UserWarning) as record:
        assert _registry.resolve("fake_op", None, q)() == "generic"
    messages = [str(w.message) for w in record]
    assert messages == ["fastweights: fake_op uses the 'generic' implementation because its library is missing "
                        "(the 'accel' one is faster)"]  # nothing about the CPU-only cpu_fast


def test_notice_for_a_refusing_implementation_of_the_same_device(fake):
    fake["cpu_ok"] = False
    with pytest.warns(UserWarning, match=r"fake_op uses the 'generic' implementation because numba is not installed "
                                         r"\(the 'cpu_fast' one is faster\)") as record:
        assert _registry.resolve("fake_op", None, torch.zeros(2))() == "generic"
    assert len(record) == 1  # not the meta-only accel


def test_available_implementations_per_device(fake):
    assert ops.available_implementations("cpu")["fake_op"] == ["cpu_fast", "generic"]
    assert ops.available_implementations(torch.device("meta"))["fake_op"] == ["accel", "generic"]
    assert ops.available_implementations()["fake_op"] == ["cpu_fast", "generic"]  # the default device


def test_unknown_impl_message_lists_device_specific_ones(fake):
    with pytest.raises(ValueError, match=r"impl: expected one of \['auto', 'generic'\] for fake_op \(device-specific: "
                                         r"'accel' \(meta\), 'cpu_fast' \(cpu\)\), got 'fast'"):
        _registry.resolve("fake_op", "fast")
    assert _registry.resolve("fake_op", "accel")() == "accel"  # an explicit name is always honoured


def test_register_keeps_devices():
    @_registry.register("fake_op2", "x", priority=1, devices=["cuda"])
    def fn():
        pass

    try:
        assert _registry.IMPLEMENTATIONS["fake_op2"]["x"].devices == ("cuda",)
    finally:
        del _registry.IMPLEMENTATIONS["fake_op2"]


@pytest.mark.parametrize("op", TRITON_OPS)
def test_triton_is_registered_for_cuda_first(op):
    base = _registry.COMPOSITIONS.get(op, op)  # a composition passes impl="triton" to the delta rule
    entry = _registry.IMPLEMENTATIONS[base]["triton"]
    assert entry.devices == ("cuda",) and entry.priority > max(
        e.priority for name, e in _registry.IMPLEMENTATIONS[base].items() if name != "triton")
    assert ops.available_implementations("cuda")[op][0] == "triton"
    assert "triton" not in ops.available_implementations("cpu")[op]
    assert "compiled" not in ops.available_implementations("cuda")[op]


def test_triton_never_chosen_or_noticed_for_cpu_tensors(monkeypatch):
    monkeypatch.setattr(_registry, "_NOTICED", set())
    q = torch.zeros(1, 2, 1, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for op in ("sum_rule", "delta_rule"):
            assert not _registry.IMPLEMENTATIONS[op]["triton"].meant_for(q.device.type)
            best = "compiled" if NUMBA_AVAILABLE else "chunked"  # the fastest CPU implementation at this head size
            assert _registry.resolve(op, None, q, q, q) is _registry.IMPLEMENTATIONS[op][best]


def test_triton_missing_is_reported_for_cuda_inputs(monkeypatch):
    """Without triton, a CUDA input falls back with the one-line notice (the device type is faked)."""
    monkeypatch.setattr(_registry, "_NOTICED", set())
    monkeypatch.setattr(_support, "_available", False)
    entry = _registry.IMPLEMENTATIONS["delta_rule"]["triton"]
    monkeypatch.setattr(entry, "devices", ("meta",))
    with pytest.warns(UserWarning, match=r"delta_rule uses the 'chunked' implementation because triton is not "
                                         r"installed \(pip install 'fastweights\[triton\]'\)"):
        _registry.resolve("delta_rule", None, torch.zeros(1, device="meta"))


@pytest.fixture
def partial(monkeypatch):
    """A fake op whose fast ``kern`` (``covers_all=False``) takes heads up to 4 and declines float64 as a choice."""
    from fastweights.ops.triton import FLOAT64

    def supports(q, *args, **kwargs):
        if q.dtype == torch.float64:
            return FLOAT64
        return f"it takes heads up to 4, got {q.shape[-1]}" if q.shape[-1] > 4 else None

    impls = {"kern": _registry.Implementation("fake_op", "kern", _impl("kern"), 30, supports, covers_all=False),
             "generic": _registry.Implementation("fake_op", "generic", _impl("generic"), 10)}
    monkeypatch.setitem(_registry.IMPLEMENTATIONS, "fake_op", impls)
    monkeypatch.setattr(_registry, "_NOTICED", set())


@pytest.mark.parametrize("impl", [None, "kern"])
def test_supports_sees_the_call_and_the_registry_falls_back(partial, impl):
    """The one fallback mechanism: a refused call goes to the next implementation with a one-time notice, also for an
    explicit impl= of a partial kernel; a Choice refusal (float64) falls back silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _registry.resolve("fake_op", impl, torch.zeros(2, 4)).name == "kern"
        assert _registry.resolve("fake_op", impl, torch.zeros(2, 4, dtype=torch.float64)).name == "generic"
    with pytest.warns(UserWarning, match=r"^fastweights: fake_op uses the 'generic' implementation because it takes "
                                         r"heads up to 4, got 8 \(the 'kern' one is faster\)$"):
        assert _registry.resolve("fake_op", impl, torch.zeros(2, 8)).name == "generic"


def test_triton_supports_refuse_float64_and_large_heads():
    from fastweights.ops.triton import FLOAT64, supports_linear, supports_recurrent

    q = torch.zeros(1, 2, 1, 4)
    assert supports_linear(q, q, q) is None and supports_recurrent(q, q, q) is None
    assert supports_linear(q.double(), q, q) is FLOAT64
    assert "key sizes up to 256, got 512" in supports_linear(torch.zeros(1, 2, 1, 512), q, q)
    assert "head sizes up to 128, got 256" in supports_recurrent(q, q, torch.zeros(1, 2, 1, 256))


def test_interpreting_flag(monkeypatch):
    for value, expected in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert _support.interpreting() is expected
    monkeypatch.delenv("TRITON_INTERPRET")
    assert _support.interpreting() is False
