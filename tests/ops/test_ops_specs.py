"""Every op's spec against its implementations, and the worked example of ``docs/extending.md``.

An op is described once by its :class:`~fastweights.ops.OpSpec`; from it alone this module builds inputs, runs
every implementation meant for the CPU and compares it with the spec's oracle (the step loop of ``naive.py``) in
float64: outputs, final state and the gradients of every input and of the initial state. The example recurrence
(``examples/decay_sum``: a step loop and one backend, nothing else) is registered here the way an op of the library
registers itself, by importing its package, so adding a recurrence needs no test of its own.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest
import torch
from _ops_helpers import assert_rel_close, make_reset

from fastweights import ops
from fastweights.ops.common import registry
from fastweights.ops.common.spec import SPECS, layout_shape

F64 = torch.float64
TOL = 1e-9
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = ("__init__.py", "naive.py", "parallel.py")  # the op; layer.py, its layer, is tests/test_extending.py's


@pytest.fixture(scope="module")
def example():
    """Import (and so register) ``examples/decay_sum``; the registries are restored afterwards."""
    specs, impls = dict(SPECS), {op: dict(v) for op, v in registry.IMPLEMENTATIONS.items()}
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield importlib.import_module("decay_sum")
    finally:
        sys.path.remove(str(EXAMPLES))
        SPECS.clear()
        SPECS.update(specs)
        registry.IMPLEMENTATIONS.clear()
        registry.IMPLEMENTATIONS.update(impls)


def _variants(name: str) -> list:
    spec = SPECS[name]
    versions = spec.versions or (None,)
    return [pytest.param(name, v, id=name if v is None else f"{name}_v{v}") for v in versions]


LIBRARY_VARIANTS = [p for name in sorted(SPECS) for p in _variants(name)]


def _run(spec, xs, st, reset, impl, version, depth):
    """Forward + backward of a fixed random weighting of the output and the final state; float64 results."""
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    st_leaves = [s.detach().clone().requires_grad_() for s in st]
    init = st_leaves[0] if len(st_leaves) == 1 and spec.state_type is None and not spec.layered else (
        tuple(st_leaves))
    kw = {} if version is None else {"version": version}
    out, fin = spec.call(leaves, depth=depth, initial_state=init, reset=reset, output_final_state=True, impl=impl,
                         **kw)
    fin = [fin] if isinstance(fin, torch.Tensor) else list(fin)
    g = torch.Generator().manual_seed(7)
    loss = sum((torch.randn(t.shape, generator=g, dtype=F64) * t.to(F64)).sum() for t in [out, *fin])
    grads = torch.autograd.grad(loss, leaves + st_leaves)
    return [out.detach(), *(f.detach() for f in fin), *grads]


def check_against_oracle(name: str, version: int | None = None) -> list[str]:
    """Every CPU implementation of ``name`` == the spec's oracle; returns the implementations compared."""
    spec = SPECS[name]
    depth = 2 if spec.layered else 1
    B, T, H, K = 2, 7, 2, 3
    V = K if spec.square else 4
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    xs = spec.example_inputs(rand, B, T, H, K, V, version=version, depth=depth)
    st = [0.5 * s for s in spec.example_state(rand, B, H, K, V, depth=depth)]
    reset = make_reset(B, T, [(0, 3), (1, 0), (1, 5)])
    ref = _run(spec, xs, st, reset, spec.oracle, version, depth)
    names = [a.name for a in spec.arg_specs(depth)] + [n for n, _ in spec.state_specs(depth)]
    compared = []
    for impl in ops.available_implementations("cpu")[name]:
        entry = registry.IMPLEMENTATIONS[registry.COMPOSITIONS.get(name, name)][impl]
        if impl == spec.oracle or entry.unavailable():
            continue
        got = _run(spec, xs, st, reset, impl, version, depth)
        labels = ["output", *(f"final {n}" for n, _ in spec.state_specs(depth)), *(f"grad of {n}" for n in names)]
        for label, a, e in zip(labels, got, ref, strict=True):
            assert e.abs().sum() > 0 or label.startswith("final"), f"{name} {impl}: reference {label} is zero"
            assert_rel_close(a, e, TOL, f"{name} {impl}: {label}")
        compared.append(impl)
    return compared


def check_spec(name: str) -> None:
    """The spec's layouts agree with what the op returns."""
    spec = SPECS[name]
    depth = 2 if spec.layered else 1
    B, T, H, K = 2, 5, 3, 2
    V = K if spec.square else 4
    g = torch.Generator().manual_seed(1)
    xs = spec.example_inputs(lambda *s: torch.randn(*s, generator=g), B, T, H, K, V, depth=depth)
    dims = {"B": B, "T": T, "H": H, "K": K, "V": V, "D": K, "F": V, "G": 3, "P": 3 * K + 1}
    for a, x in zip(spec.arg_specs(depth), xs, strict=True):
        assert tuple(x.shape) == layout_shape(a.layout, dims), (name, a.name)
    out, fin = spec.call(xs, depth=depth, output_final_state=True)
    assert out.shape[:3] == (B, T, H)
    fin = [fin] if isinstance(fin, torch.Tensor) else list(fin)
    assert [tuple(f.shape) for f in fin] == [layout_shape(lay, dims) for _, lay in spec.state_specs(depth)]
    if spec.state_type is not None:
        assert list(spec.state_type._fields) == [n for n, _ in spec.state]
    if spec.step_flops is not None:
        assert spec.flops(B, T, H, K) == spec.step_flops(K, K) * B * T * H > 0


@pytest.mark.parametrize(("name", "version"), LIBRARY_VARIANTS)
def test_every_cpu_implementation_matches_the_oracle(name, version):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fallback notice (numba missing) is not what this test is about
        compared = check_against_oracle(name, version)
    assert compared or not ops.available_implementations("cpu")[name][:-1]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_layouts_match_the_op(name):
    check_spec(name)


def test_example_recurrence_is_registered_and_matches_its_naive_loop(example):
    assert SPECS["decay_sum"].fn is example.decay_sum
    assert ops.available_implementations("cpu")["decay_sum"] == ["parallel", "reference"]
    assert check_against_oracle("decay_sum") == ["parallel"]
    check_spec("decay_sum")


def test_example_resets_and_decay_follow_the_definition(example):
    """The example against values computed by hand: S_2 = g_2 k_1 v_1^T + k_2 v_2^T; a reset drops the past."""
    q, k, v = (torch.rand(1, 2, 1, 2, dtype=F64) for _ in range(3))
    g = torch.full((1, 2, 1), 0.25, dtype=F64)
    for impl in ("parallel", "reference"):
        o, S = example.decay_sum(q, k, v, g, output_final_state=True, impl=impl)
        S2 = 0.25 * k[0, 0, 0, :, None] * v[0, 0, 0] + k[0, 1, 0, :, None] * v[0, 1, 0]
        assert torch.allclose(S[0, 0], S2) and torch.allclose(o[0, 1, 0], q[0, 1, 0] @ S2)
        reset = torch.tensor([[False, True]])
        _, S = example.decay_sum(q, k, v, g, reset=reset, output_final_state=True, impl=impl)
        assert torch.allclose(S[0, 0], k[0, 1, 0, :, None] * v[0, 1, 0])


def test_example_touches_at_most_four_files():
    """docs/extending.md's claim: the example is its three files (a fourth, one export line in ``ops/__init__.py``,
    when it lives in the library); the walkthrough quotes them, so it cannot drift from the tested code."""
    folder = EXAMPLES / "decay_sum"
    assert sorted(p.name for p in folder.glob("*.py")) == sorted([*EXAMPLE_FILES, "layer.py"])
    doc = (Path(__file__).resolve().parents[2] / "docs" / "extending.md").read_text()
    for name in EXAMPLE_FILES:
        code = (folder / name).read_text()
        assert f"```python\n{code}```" in doc, f"docs/extending.md does not quote examples/decay_sum/{name} as is"
