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
from fastweights.ops import _registry
from fastweights.ops.triton import _support

TRITON_OPS = ("sum_rule", "delta_rule", "delta_rnn", "delta_lstm", "rec_delta", "delta_delta", "delta_mlp")


def _impl(tag):
    def fn(*args, **kwargs):
        return tag

    return fn


@pytest.fixture
def fake(monkeypatch):
    """A fake op: ``accel`` (meta tensors only, refuses everything: "its library is missing"), ``cpu_fast`` (CPU
    only, accepts CPU tensors unless ``state['cpu_ok']`` is False) and ``generic`` (every device)."""
    state = {"cpu_ok": True}
    impls = {
        "accel": _registry.Implementation(_impl("accel"), 30, lambda q: False, "its library is missing", ("meta",)),
        "cpu_fast": _registry.Implementation(_impl("cpu_fast"), 20, lambda q: state["cpu_ok"] and
                                             q.device.type == "cpu", "numba is not installed", ("cpu",)),
        "generic": _registry.Implementation(_impl("generic"), 10, None, None),
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
    entry = _registry.IMPLEMENTATIONS[op]["triton"]
    assert entry.devices == ("cuda",) and entry.priority > max(
        e.priority for name, e in _registry.IMPLEMENTATIONS[op].items() if name != "triton")
    assert ops.available_implementations("cuda")[op][0] == "triton"
    assert "triton" not in ops.available_implementations("cpu")[op]
    assert "compiled" not in ops.available_implementations("cuda")[op]


def test_triton_never_chosen_or_noticed_for_cpu_tensors(monkeypatch):
    monkeypatch.setattr(_registry, "_NOTICED", set())
    q = torch.zeros(1, 2, 1, 4)
    assert not _support.supports_triton(q)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for op in ("sum_rule", "delta_rule"):
            assert _registry.resolve(op, None, q) is _registry.IMPLEMENTATIONS[op]["chunked"].fn


def test_triton_missing_is_reported_for_cuda_inputs(monkeypatch):
    """Without triton, a CUDA input falls back with the one-line notice (the device type is faked)."""
    monkeypatch.setattr(_registry, "_NOTICED", set())
    monkeypatch.setattr(_support, "_available", False)
    entry = _registry.IMPLEMENTATIONS["delta_rule"]["triton"]
    monkeypatch.setattr(entry, "devices", ("meta",))
    monkeypatch.setattr(entry, "supports", lambda q: q.device.type == "meta" and _support.triton_available())
    with pytest.warns(UserWarning, match=r"delta_rule uses the 'chunked' implementation because triton is not "
                                         r"installed \(pip install 'fastweights\[triton\]'\)"):
        _registry.resolve("delta_rule", None, torch.zeros(1, device="meta"))


def test_interpreting_flag(monkeypatch):
    for value, expected in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert _support.interpreting() is expected
    monkeypatch.delenv("TRITON_INTERPRET")
    assert _support.interpreting() is False
