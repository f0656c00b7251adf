"""The first-use check of the Triton kernels (``fastweights.ops.triton.safety``), exercised on the CPU.

The check is meant for CUDA tensors; here the checked device types are patched to ``("cpu",)`` and a fake ``"triton"``
entry of the delta rule (the ``chunked`` implementation, correct, raising or subtly wrong) is registered through
the same guard that :func:`~fastweights.ops.triton.register_triton` installs. No triton and no GPU are needed.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from fastweights import ops
from fastweights.ops.common import registry as _registry
from fastweights.ops.triton import FLOAT64, safety, supports_linear

TRITON_OPS = ("sum_rule", "delta_rule", "delta_rnn", "delta_lstm", "rec_delta")


def _inputs(B=2, T=12, H=2, K=8, V=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    xs = ops.SPECS["delta_rule"].example_inputs(lambda *s: torch.randn(*s, generator=g), B, T, H, K, V)
    return [x.to(dtype) for x in xs]


@pytest.fixture
def fake(monkeypatch):
    """A fake ``"triton"`` delta rule on CPU tensors behind the first-use check, then ``chunked`` and
    ``reference``. ``state["mode"]``: ``"ok"`` (the chunked implementation), ``"raise"``, ``"grad"`` (gradient of
    k scaled by 1.1), ``"state"`` (final state scaled) or ``"nested"`` (calls ``delta_rule(impl="triton")`` from
    inside itself once); ``state["calls"]`` lists the keyword arguments and shapes of every call."""
    monkeypatch.setattr(safety, "DEVICE_TYPES", ("cpu",))
    monkeypatch.setattr(safety, "_RESULTS", {})
    monkeypatch.setattr(safety, "_ENABLED", None)
    monkeypatch.delenv(safety.ENV, raising=False)
    monkeypatch.setattr(_registry, "_NOTICED", set())
    chunked = _registry.IMPLEMENTATIONS["delta_rule"]["chunked"].fn
    state = {"mode": "ok", "calls": [], "depth": 0}

    def kernel(q, k, v, beta, *, initial_state=None, reset=None, output_final_state=False, chunk_size=None):
        state["calls"].append({"reset": reset, "initial_state": initial_state, "q": tuple(q.shape),
                               "v": tuple(v.shape), "grad": torch.is_grad_enabled() and q.requires_grad})
        mode = state["mode"]
        if mode == "raise":
            raise RuntimeError("CUDA error: an illegal instruction\n   was encountered")
        if mode == "grad":
            k = k + 0.1 * (k - k.detach())  # same value, gradient of k x 1.1
        if mode == "nested" and state["depth"] == 0:
            state["depth"] += 1
            try:
                ops.delta_rule(q, k, v, beta, impl="triton")
            finally:
                state["depth"] -= 1
        o, s = chunked(q, k, v, beta, initial_state=initial_state, reset=reset, output_final_state=output_final_state)
        if mode == "state" and s is not None:
            s = s * 1.05
        return o, s

    entry = _registry.Implementation("delta_rule", "triton", kernel, 30,
                                     safety.guard("delta_rule", "triton", supports_linear, kernel),
                                     devices=("cpu",), covers_all=False)
    impls = _registry.IMPLEMENTATIONS["delta_rule"]
    # as on a GPU: the kernel, then the PyTorch implementations (no CPU-only ones such as numba's)
    monkeypatch.setitem(_registry.IMPLEMENTATIONS, "delta_rule",
                        {"triton": entry, "chunked": impls["chunked"], "reference": impls["reference"]})
    return state


def _chunked(xs):
    return ops.delta_rule(*xs, impl="chunked")[0]


def test_a_correct_kernel_is_checked_once_and_kept(fake):
    xs = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            torch.testing.assert_close(ops.delta_rule(*xs)[0], _chunked(xs))
    check, *user = fake["calls"]
    assert len(user) == 3  # one check, then the three calls
    assert check["reset"] is not None and check["reset"].any() and check["initial_state"] is not None
    assert check["grad"] and check["q"][1] == safety.CHECK_SHAPE["T"]
    assert safety.triton_check_results() == {("delta_rule", None, "cpu", torch.float32): safety.Outcome(True)}
    assert _registry.resolve("delta_rule", None, *xs).name == "triton"


def test_each_dtype_is_checked_on_its_own(fake):
    ops.delta_rule(*_inputs())
    ops.delta_rule(*_inputs(dtype=torch.bfloat16))
    ops.delta_rule(*_inputs(dtype=torch.bfloat16))
    assert [c["q"][1] for c in fake["calls"]] == [40, 12, 40, 12, 12]
    assert set(safety.triton_check_results()) == {("delta_rule", None, "cpu", torch.float32),
                                                  ("delta_rule", None, "cpu", torch.bfloat16)}


def test_the_check_uses_the_head_sizes_of_the_call(fake):
    ops.delta_rule(*_inputs(K=4, V=12))
    assert fake["calls"][0]["q"] == (2, 40, 2, 4) and fake["calls"][0]["v"] == (2, 40, 2, 12)


def test_a_raising_kernel_falls_back_with_one_warning(fake):
    fake["mode"] = "raise"
    xs = _inputs()
    with pytest.warns(RuntimeWarning) as record:
        out = ops.delta_rule(*xs)[0]
        ops.delta_rule(*xs)
        explicit = ops.delta_rule(*xs, impl="triton")[0]  # an explicit impl="triton" falls back too
    assert len(record) == 1, [str(w.message) for w in record]
    message = str(record[0].message)
    assert message.startswith("fastweights: the 'triton' implementation of delta_rule failed its first-use check "
                              "on cpu (float32 inputs): RuntimeError: CUDA error: an illegal instruction was "
                              "encountered; delta_rule runs the 'chunked' implementation")
    assert safety.ENV in message and record[0].filename == __file__  # points at the user's call
    assert len(fake["calls"]) == 1  # only the check ran the kernel
    torch.testing.assert_close(out, _chunked(xs))
    torch.testing.assert_close(explicit, _chunked(xs))
    assert _registry.resolve("delta_rule", None, *xs).name == "chunked"
    outcome = safety.triton_check_results()[("delta_rule", None, "cpu", torch.float32)]
    assert not outcome.ok and outcome.fallback == "chunked" and outcome.problem.startswith("RuntimeError")


@pytest.mark.parametrize(("mode", "names"), [("grad", "grad k"), ("state", "final state")])
def test_a_mismatching_kernel_falls_back_naming_the_mismatch(fake, mode, names):
    fake["mode"] = mode
    xs = _inputs()
    with pytest.warns(RuntimeWarning, match=rf"delta_rule failed its first-use check on cpu \(float32 inputs\): "
                                            rf"largest mismatch: {names}, relative error [0-9.e+-]+ \(tolerance "
                                            rf"1e-03\); delta_rule runs the 'chunked' implementation") as record:
        out = ops.delta_rule(*xs, output_final_state=True)
        ops.delta_rule(*xs)
    assert len(record) == 1
    torch.testing.assert_close(out[1], ops.delta_rule(*xs, impl="chunked", output_final_state=True)[1])
    assert len(fake["calls"]) == 1


def test_the_output_mismatch_is_caught_by_the_check_itself():
    chunked = _registry.IMPLEMENTATIONS["delta_rule"]["chunked"].fn

    factor = [1.01]

    def scaled(*args, **kwargs):
        o, s = chunked(*args, **kwargs)
        return o * factor[0], s

    ok, problem = safety.first_use_check("delta_rule", scaled, chunked, "cpu", torch.float32)
    # scaling the output scales every gradient alike: the largest of the equal errors may be any of them
    assert not ok and problem.startswith("largest mismatch: ")
    assert "relative error 1.0e-02 (tolerance 1e-03)" in problem
    factor[0] = 1.003
    ok, problem = safety.first_use_check("delta_rule", scaled, chunked, "cpu", torch.bfloat16)
    assert ok and problem is None  # within the half-precision tolerance
    ok, problem = safety.first_use_check("delta_rule", scaled, chunked, "cpu", torch.float32)
    assert not ok and "relative error 3.0e-03 (tolerance 1e-03)" in problem  # the output and every gradient


def test_a_raising_oracle_keeps_the_kernel():
    chunked = _registry.IMPLEMENTATIONS["delta_rule"]["chunked"].fn

    def broken(*args, **kwargs):
        raise ValueError("no")

    ok, problem = safety.first_use_check("delta_rule", chunked, broken, "cpu", torch.float32)
    assert ok and problem == "could not check: the PyTorch implementation raised ValueError: no"


def test_the_check_runs_with_gradients_under_inference_mode(fake):
    with torch.inference_mode():
        ops.delta_rule(*_inputs())
    assert fake["calls"][0]["grad"] and safety.triton_check_results()[("delta_rule", None, "cpu", torch.float32)].ok


def test_the_environment_variable_switches_the_check_off(fake, monkeypatch):
    fake["mode"] = "raise"
    monkeypatch.setenv(safety.ENV, "0")
    assert not safety.triton_check_enabled()
    with pytest.raises(RuntimeError, match="illegal instruction"):  # the kernel runs unchecked
        ops.delta_rule(*_inputs())
    assert safety.triton_check_results() == {}
    previous = safety.set_triton_check(True)  # the function overrides the variable
    try:
        assert previous is None and safety.triton_check_enabled()
        with pytest.warns(RuntimeWarning, match="first-use check"):
            ops.delta_rule(*_inputs())
    finally:
        safety.set_triton_check(None)


def test_set_triton_check_off_and_back(fake):
    fake["mode"] = "raise"
    with safety.triton_check(False):
        assert not safety.triton_check_enabled()
        with pytest.raises(RuntimeError, match="illegal instruction"):
            ops.delta_rule(*_inputs())
    assert safety.triton_check_enabled()
    with pytest.raises(TypeError, match=r"enabled: expected True, False or None, got 'no'"):
        safety.set_triton_check("no")


def test_no_check_while_torch_compile_traces(fake, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    ops.delta_rule(*_inputs())
    assert len(fake["calls"]) == 1 and safety.triton_check_results() == {}


def test_the_check_does_not_recurse_into_itself(fake):
    fake["mode"] = "nested"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.delta_rule(*_inputs())
    # the check's kernel call made one nested call (unchecked: its key is being checked), then the user's call
    # made one nested call too (the key is known by then)
    assert [c["q"][1] for c in fake["calls"]] == [40, 40, 12, 12]
    assert list(safety.triton_check_results().values()) == [safety.Outcome(True)]


def test_reset_forgets_the_results(fake):
    ops.delta_rule(*_inputs())
    safety.reset_triton_checks()
    ops.delta_rule(*_inputs())
    assert [c["q"][1] for c in fake["calls"]] == [40, 12, 40, 12]


def test_cpu_tensors_are_not_checked_by_default(monkeypatch):
    """The interpreter tests pass CPU tensors to an explicit impl="triton": nothing of the check runs for them."""

    def fail(*args, **kwargs):
        raise AssertionError("the first-use check ran for CPU tensors")

    monkeypatch.setattr(safety, "first_use_check", fail)
    assert safety.DEVICE_TYPES == ("cuda",)
    q = torch.zeros(1, 2, 1, 4)
    for op in TRITON_OPS:
        entry = _registry.IMPLEMENTATIONS[op]["triton"]
        assert entry.refusal(q, q, q, q) is None


@pytest.mark.parametrize("op", TRITON_OPS)
def test_every_triton_entry_is_guarded_and_keeps_its_own_refusals(op):
    entry = _registry.IMPLEMENTATIONS[op]["triton"]
    assert entry.supports.__qualname__.startswith("guard.")
    q = torch.zeros(1, 2, 1, 4, dtype=torch.float64)
    assert entry.refusal(q, q, q, q) is FLOAT64
    big = torch.zeros(1, 2, 1, 512)
    assert "sizes up to" in entry.refusal(big, big, big, big)


def test_the_version_is_part_of_the_key():
    def fn(q, *, version=4):
        pass

    assert safety._default_version(fn) == 4
    assert safety._default_version(lambda q: None) is None
    spec = ops.SPECS["delta_lstm"]
    xs = spec.example_inputs(torch.randn, 1, 3, 2, 5, 7, version=4)
    assert safety._head_sizes(spec, tuple(xs)) == (5, 7)
