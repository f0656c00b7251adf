"""Feature maps (paper.md A.2) and the implementation registry."""

from __future__ import annotations

import math

import pytest
import torch

from fastweights import ops
from fastweights.ops import (
    dpfp,
    elu_plus_one,
    elu_sum_norm,
    favor_plus,
    orthogonal_gaussian_projection,
    softmax,
    sum_norm,
)
from fastweights.ops.common.numba import NUMBA_AVAILABLE

HALF = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
ALL_FLOATS = [*HALF, pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]


@pytest.mark.parametrize("dtype", HALF)
def test_elu_plus_one_is_strictly_positive_for_very_negative_half_inputs(dtype):
    """exp(-30) ~ 9e-14 underflows in float16: the map must still return a positive number."""
    x = torch.tensor([-1e4, -100.0, -30.0, -17.0, -1.0, 0.0, 2.0], dtype=dtype)
    y = elu_plus_one(x)
    assert y.dtype == dtype
    assert (y > 0).all(), y
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_elu_plus_one_never_rounds_to_zero_in_full_precision(dtype):
    """The docstring promises ``> 0`` and "never rounds to 0"; exp underflows to 0 below about -104 (float32)
    and -745 (float64), which makes elu_sum_norm of such logits 0/0 = NaN."""
    x = torch.tensor([-1e4, -800.0, -200.0, -30.0], dtype=dtype)
    y = elu_plus_one(x)
    assert (y > 0).all(), y
    k = elu_sum_norm(torch.full((2, 4), -200.0, dtype=dtype))
    assert torch.isfinite(k).all(), k


@pytest.mark.parametrize("dtype", ALL_FLOATS)
def test_elu_plus_one_values(dtype):
    x = torch.linspace(-5, 5, 41, dtype=torch.float64)
    expected = torch.nn.functional.elu(x) + 1
    tol = {torch.float16: 1e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(elu_plus_one(x.to(dtype)).double(), expected, rtol=tol, atol=tol)


def test_elu_plus_one_gradient_matches_elu():
    x = torch.linspace(-5, 5, 40, dtype=torch.float64, requires_grad=True)  # avoids x == 0 exactly
    (g,) = torch.autograd.grad(elu_plus_one(x).sum(), x)
    expected = torch.where(x > 0, torch.ones_like(x), torch.exp(x)).detach()
    torch.testing.assert_close(g, expected)


@pytest.mark.parametrize("dtype", ALL_FLOATS)
def test_sum_norm_sums_to_one(dtype):
    x = torch.rand(3, 5, 7, dtype=torch.float64).to(dtype) + 0.1
    s = sum_norm(x).double().sum(-1)
    tol = {torch.float16: 1e-2, torch.bfloat16: 3e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(s, torch.ones_like(s), rtol=0, atol=tol)
    assert sum_norm(x).dtype == dtype


def test_sum_norm_eps():
    x = torch.tensor([1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(sum_norm(x, eps=1.0), x / 5.0)


@pytest.mark.parametrize("dtype", ALL_FLOATS)
def test_elu_sum_norm_of_very_negative_half_inputs_is_a_distribution(dtype):
    """The reason elu_plus_one never rounds to zero: sum normalisation of all-(-30) logits stays finite."""
    y = elu_sum_norm(torch.full((4, 8), -30.0, dtype=dtype))
    assert torch.isfinite(y).all() and (y > 0).all()
    torch.testing.assert_close(y.double().sum(-1), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-2)


def test_dpfp_shape_and_hand_computation():
    """x = [1, -2, 3]: r = [relu(x), relu(-x)] = [1, 0, 3, 0, 2, 0];
    roll(r, 1) = [0, 1, 0, 3, 0, 2] -> r * roll = 0;  roll(r, 2) = [2, 0, 1, 0, 3, 0] -> [2, 0, 3, 0, 6, 0]."""
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    y = dpfp(x, nu=2)
    assert y.shape == (2 * 3 * 2,)
    expected = torch.tensor([0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 6, 0], dtype=torch.float64)
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("nu", [1, 2, 3])
def test_dpfp_shape_and_formula(nu):
    d = 5
    x = torch.randn(2, 4, d, dtype=torch.float64)
    y = dpfp(x, nu=nu)
    assert y.shape == (2, 4, 2 * d * nu)
    assert (y >= 0).all()
    r = torch.cat([x.clamp_min(0), (-x).clamp_min(0)], dim=-1)
    for i in range(1, nu + 1):
        block = y[..., (i - 1) * 2 * d:i * 2 * d]
        torch.testing.assert_close(block, r * torch.cat([r[..., -i:], r[..., :-i]], dim=-1))


@pytest.mark.parametrize("nu", [0, -1, 1.5, 7])
def test_dpfp_rejects_bad_nu(nu):
    with pytest.raises(ValueError, match="nu"):
        dpfp(torch.randn(3), nu=nu)  # d = 3: at most 2d = 6 rolls


def test_favor_plus_positive_shape_and_formula():
    d, m = 4, 6
    g = torch.Generator().manual_seed(0)
    P = orthogonal_gaussian_projection(d, m, generator=g, dtype=torch.float64)
    assert P.shape == (d, m)
    x = torch.randn(3, 5, d, dtype=torch.float64, generator=g)
    y = favor_plus(x, P)
    assert y.shape == (3, 5, 2 * m)
    assert (y > 0).all()
    xp, sq = x @ P, 0.5 * (x * x).sum(-1, keepdim=True)
    expected = (torch.cat([torch.exp(xp - sq), torch.exp(-xp - sq)], dim=-1) + 1e-4) / math.sqrt(2 * m)
    torch.testing.assert_close(y, expected)


def test_favor_plus_approximates_the_softmax_kernel():
    """E[phi(x) . phi(y)] = exp(x . y) (up to the 1e-4 offset), with many features."""
    d, m = 4, 4096
    g = torch.Generator().manual_seed(1)
    P = orthogonal_gaussian_projection(d, m, generator=g, dtype=torch.float64)
    x, y = 0.3 * torch.randn(2, d, dtype=torch.float64, generator=g)
    approx = (favor_plus(x, P) * favor_plus(y, P)).sum()
    assert abs(approx.item() / math.exp((x * y).sum().item()) - 1) < 0.05


def test_orthogonal_gaussian_projection_blocks_are_orthogonal():
    d, m = 4, 10
    P = orthogonal_gaussian_projection(d, m, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u = P / P.norm(dim=0, keepdim=True)
    block = u[:, :d]
    torch.testing.assert_close(block.T @ block, torch.eye(d, dtype=torch.float64))


def test_favor_plus_rejects_a_mismatched_projection():
    with pytest.raises(ValueError, match="projection"):
        favor_plus(torch.randn(2, 3), torch.randn(4, 5))


@pytest.mark.parametrize("dtype", ALL_FLOATS)
def test_softmax_exact(dtype):
    x = (10 * torch.randn(4, 9, dtype=torch.float64)).to(dtype)
    y = softmax(x)
    assert y.dtype == dtype
    expected = torch.softmax(x.double(), dim=-1)
    tol = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 1e-6}.get(dtype, 1e-15)
    torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol)


def test_feature_map_table():
    x = torch.randn(3, 4, dtype=torch.float64)
    fm = ops.feature_maps.FEATURE_MAPS
    torch.testing.assert_close(fm["identity"](x), x)
    torch.testing.assert_close(fm["elu1"](x), elu_plus_one(x))
    torch.testing.assert_close(fm["elu1_sum_norm"](x), elu_sum_norm(x))
    torch.testing.assert_close(fm["softmax"](x), torch.softmax(x, -1))


# -------------------------------------------------------------------------------------------- registry

SEQUENTIAL_DEFAULT = "compiled" if NUMBA_AVAILABLE else "checkpointed"
LINEAR_DEFAULT = "compiled" if NUMBA_AVAILABLE else "chunked"  # the chunked form for heads above MAX_HEAD
DEFAULTS = {
    "sum_rule": LINEAR_DEFAULT, "delta_rule": LINEAR_DEFAULT, "delta_delta": LINEAR_DEFAULT,
    "delta_mlp": LINEAR_DEFAULT,
    "delta_rnn": SEQUENTIAL_DEFAULT, "delta_lstm": SEQUENTIAL_DEFAULT, "rec_delta": SEQUENTIAL_DEFAULT,
}


def test_available_implementations_lists_every_op_with_its_default_first():
    impls = ops.available_implementations()
    assert set(impls) == set(DEFAULTS)
    for op, default in DEFAULTS.items():
        assert impls[op][0] == default, (op, impls[op])
        assert "reference" in impls[op], (op, impls[op])
        assert len(set(impls[op])) == len(impls[op])


def test_available_implementations_returns_a_copy():
    impls = ops.available_implementations()
    impls["sum_rule"].clear()
    assert ops.available_implementations()["sum_rule"][0] == LINEAR_DEFAULT


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_elu_feature_maps_backward_matches_autograd_of_the_formula(eps, compiled, monkeypatch):
    """The hand-written backward of ``elu_plus_one`` / ``elu_sum_norm`` (the compiled kernels and the PyTorch
    path) against autograd through the formula, on a strided view like the layers pass."""
    from fastweights.ops.common import compiled_feature_maps

    if compiled:
        pytest.importorskip("numba")
    else:
        monkeypatch.setattr(compiled_feature_maps, "usable", lambda x: False)
    wide = 3 * torch.randn(3, 5, 2, 11, dtype=torch.float64)
    wide[0, 0, 0, :3] = torch.tensor([0.0, -800.0, 40.0], dtype=torch.float64)  # the kink, underflow, large
    x = wide[..., :7]
    assert not x.is_contiguous()
    def elu1(t):
        return torch.where(t > 0, t + 1, torch.exp(t.clamp(max=0))).clamp_min(torch.finfo(t.dtype).tiny)

    for fn, formula in (
        (elu_plus_one, elu1),
        (lambda t: elu_sum_norm(t, eps), lambda t: elu1(t) / (elu1(t).sum(-1, keepdim=True) + eps)),
    ):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = fn(a), formula(b)
        g = torch.randn_like(ya)
        (ga,), (gb,) = torch.autograd.grad(ya, a, g), torch.autograd.grad(yb, b, g)
        torch.testing.assert_close(ya, yb, rtol=1e-15, atol=0)
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-300)
    assert torch.autograd.gradcheck(lambda t: elu_sum_norm(t, eps), (x[:1, :2].clone().requires_grad_(),))
