"""State handling of every layer: step == forward, carried state == concatenation, resets == independent
runs, initial_state == None, gradients reach every parameter (float64, tiny shapes)."""

from __future__ import annotations

import pytest
import torch
from layer_variants import D_MODEL, HEADS, VARIANTS, variant_id

from fastweights.layers import FastWeightLayer, build_layer, detach_state


def leaves(state):
    """Flatten a (nested tuple) state into its tensors."""
    if state is None:
        return []
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for s in state for t in leaves(s)]


def assert_states_close(a, b, **tol):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.shape == y.shape
        if x.dtype == torch.bool:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y, **tol)


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float64)


@pytest.mark.parametrize(("T", "j"), [(70, 3), (5, 5)])
def test_forward_equals_prefix_then_steps(layer64, T, j):
    torch.manual_seed(1)
    x = randn(2, T, D_MODEL)
    y, final = layer64(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    if T - j > 0:
        ys, state = layer64(x[:, : T - j])
        ys = [ys]
    else:
        ys, state = [], None
    for t in range(T - j, T):
        y_t, state = layer64.step(x[:, t], state)
        assert y_t.shape == (2, D_MODEL)
        ys.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(ys, dim=1), y)
    assert_states_close(state, final)


def test_carried_state_equals_concatenation(layer64):
    torch.manual_seed(2)
    x = randn(2, 23, D_MODEL)
    y, final = layer64(x)
    y1, s1 = layer64(x[:, :9])
    y2, s2 = layer64(x[:, 9:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y)
    assert_states_close(s2, final)


def test_initial_state_is_the_zero_state(layer64):
    torch.manual_seed(3)
    x = randn(3, 6, D_MODEL)
    y, final = layer64(x)
    s0 = layer64.initial_state(3)
    for t in leaves(s0):
        assert t.shape[0] == 3 or t.dim() == 3  # batch first (nn.LSTM state: [layers, B, N])
        if t.is_floating_point():
            assert t.dtype == torch.float64
            assert not t.any()
    y0, final0 = layer64(x, s0)
    torch.testing.assert_close(y0, y)
    assert_states_close(final0, final)


def test_reset_equals_independent_runs(layer64):
    torch.manual_seed(4)
    B, T, k = 2, 17, 7
    x = randn(B, T, D_MODEL)
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[:, k] = True
    y, final = layer64(x, reset=reset)
    ya, _ = layer64(x[:, :k])
    yb, final_b = layer64(x[:, k:])
    torch.testing.assert_close(y, torch.cat([ya, yb], dim=1))
    assert_states_close(final, final_b)


def test_per_row_resets_with_carried_state(layer64):
    torch.manual_seed(5)
    B, T = 2, 15
    x, prefix = randn(B, T, D_MODEL), randn(B, 4, D_MODEL)
    _, carried = layer64(prefix)
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[0, 0] = reset[0, 9] = True  # row 0: the carried state is dropped at t = 0, again at 9
    reset[1, 5] = True  # row 1: carried state used until 5
    y, _ = layer64(x, carried, reset=reset)
    # row 0: three independent pieces none of which sees the prefix
    r0 = torch.cat([layer64(x[:1, :9])[0], layer64(x[:1, 9:])[0]], dim=1)
    torch.testing.assert_close(y[:1], r0)
    # row 1: prefix + x[:5] continues the carried state, then a fresh run
    full1, _ = layer64(torch.cat([prefix[1:], x[1:, :5]], dim=1))
    torch.testing.assert_close(y[1:, :5], full1[:, 4:])
    torch.testing.assert_close(y[1:, 5:], layer64(x[1:, 5:])[0])


def test_reset_at_every_step_is_memoryless(layer64):
    torch.manual_seed(6)
    x = randn(2, 5, D_MODEL)
    y, _ = layer64(x, reset=torch.ones(2, 5, dtype=torch.bool))
    singles = torch.cat([layer64(x[:, t : t + 1])[0] for t in range(5)], dim=1)
    torch.testing.assert_close(y, singles)


@pytest.mark.parametrize(("name", "opts"), VARIANTS, ids=[variant_id(v) for v in VARIANTS])
def test_gradient_reaches_every_parameter(name, opts):
    torch.manual_seed(7)
    layer = build_layer(name, D_MODEL, HEADS, **opts).eval()
    x = torch.randn(2, 6, D_MODEL, requires_grad=True)
    y, state = layer(x)
    loss = y.square().sum() + sum(t.square().sum() for t in leaves(state) if t.is_floating_point())
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in layer.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize(("name", "opts"), [v for v in VARIANTS if v[0] not in ("transformer", "lstm", "feedforward")],
                         ids=[variant_id(v) for v in VARIANTS if v[0] not in ("transformer", "lstm", "feedforward")])
def test_default_impl_matches_reference_impl(name, opts):
    torch.manual_seed(8)
    fast = build_layer(name, D_MODEL, HEADS, **opts).double().eval()
    ref = build_layer(name, D_MODEL, HEADS, impl="reference", **opts).double().eval()
    ref.load_state_dict(fast.state_dict())
    assert isinstance(fast, FastWeightLayer)
    x = randn(2, 11, D_MODEL)
    reset = torch.zeros(2, 11, dtype=torch.bool)
    reset[1, 4] = True
    y, s = fast(x, reset=reset)
    y_ref, s_ref = ref(x, reset=reset)
    torch.testing.assert_close(y, y_ref)
    assert_states_close(s, s_ref)


@pytest.mark.parametrize(("name", "opts"), VARIANTS, ids=[variant_id(v) for v in VARIANTS])
def test_float32_forward_is_finite_and_close_to_float64(name, opts):
    torch.manual_seed(9)
    layer = build_layer(name, D_MODEL, HEADS, **opts).eval()
    x = torch.randn(2, 9, D_MODEL)
    y, _ = layer(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    y64, _ = layer.double()(x.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-4, atol=1e-4)


def test_detach_state_keeps_structure(layer64):
    x = randn(2, 4, D_MODEL).requires_grad_()
    _, state = layer64(x)
    detached = detach_state(state)
    assert type(detached) is type(state)
    assert_states_close(detached, state)
    assert not any(t.requires_grad for t in leaves(detached))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("name", "opts"), VARIANTS, ids=[variant_id(v) for v in VARIANTS])
def test_cuda_matches_cpu(name, opts):
    torch.manual_seed(10)
    layer = build_layer(name, D_MODEL, HEADS, **opts).double().eval()
    x = randn(2, 37, D_MODEL)
    reset = torch.zeros(2, 37, dtype=torch.bool)
    reset[0, 11] = True
    y, state = layer(x, reset=reset)
    y_step, _ = layer.step(x[:, 0], state)
    layer_gpu = layer.cuda()
    y_gpu, state_gpu = layer_gpu(x.cuda(), reset=reset.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y)
    y_step_gpu, _ = layer_gpu.step(x[:, 0].cuda(), state_gpu)
    torch.testing.assert_close(y_step_gpu.cpu(), y_step)


def _live_tensors() -> dict[int, torch.Tensor]:
    """Every tensor alive now, by id (the dict keeps them alive, so ids stay unique while it exists)."""
    import gc

    gc.collect()
    return {id(o): o for o in gc.get_objects() if issubclass(type(o), torch.Tensor)}


def test_step_state_does_not_grow(layer64):
    """Decoding with ``step``: every fast-weight state keeps its size and holds no autograd history under
    no_grad, and repeated steps leave no tensors behind (softmax attention's KV cache is the one state that
    grows by design)."""
    torch.manual_seed(4)
    x_t = randn(2, D_MODEL)
    with torch.no_grad():
        _, state = layer64.step(x_t, None)
        shapes = [t.shape for t in leaves(state)]
        for _ in range(3):
            _, state = layer64.step(x_t, state)
        before = _live_tensors()
        for _ in range(100):
            y_t, state = layer64.step(x_t, state)
        after = _live_tensors()
    assert all(t.grad_fn is None for t in leaves(state))
    if type(layer64).__name__ != "SoftmaxAttention":
        assert [t.shape for t in leaves(state)] == shapes
        # Tensors created by the 100 steps and still alive: only the last output and the current state (with the
        # tensors they are views of) may be.
        # (Counting all live tensors would also see unrelated objects that other tests' caches free meanwhile.)
        new = {i for i in after if i not in before}
        ends = (y_t, *leaves(state))
        kept = {id(t) for t in ends} | {id(t._base) for t in ends if t._base is not None}
        left = [tuple(after[i].shape) for i in new - kept]
        assert not left, f"{len(left)} tensors left behind after 100 steps: shapes {left[:5]}"
