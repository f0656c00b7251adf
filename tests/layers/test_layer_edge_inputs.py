"""Edge inputs every registry layer must take or refuse with one clear error: an empty batch, no time step,
an input of another dtype than the parameters, and states of the wrong kind or batch."""

from __future__ import annotations

import pytest
import torch

from fastweights.layers import available_layers, build_layer

LAYERS = available_layers()


@pytest.mark.parametrize("name", LAYERS)
def test_an_empty_batch_runs_forward_and_backward(name):
    torch.manual_seed(0)
    layer = build_layer(name, d_model=16, num_heads=2)
    x = torch.randn(0, 5, 16, requires_grad=True)
    y, state = layer(x)
    assert y.shape == (0, 5, 16)
    y.sum().backward()
    assert x.grad.shape == x.shape
    y2, _ = layer(x, state)  # the returned (empty) state is accepted back
    assert y2.shape == (0, 5, 16)


@pytest.mark.parametrize("name", LAYERS)
def test_no_time_step_is_refused_with_the_shape(name):
    layer = build_layer(name, d_model=16, num_heads=2)
    with pytest.raises(ValueError, match=r"x: expected at least one time step, got T = 0 \(shape \[2, 0, 16\]\)"):
        layer(torch.randn(2, 0, 16))


@pytest.mark.parametrize("name", LAYERS)
def test_an_input_of_another_dtype_is_refused_before_any_work(name):
    layer = build_layer(name, d_model=16, num_heads=2)
    with pytest.raises(TypeError, match=r"x: expected dtype torch.float32 .* got torch.float64"):
        layer(torch.randn(2, 3, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"x_t: expected dtype torch.float32 .* got torch.float64"):
        layer.step(torch.randn(2, 16, dtype=torch.float64), layer.initial_state(2))


def test_autocast_inputs_of_another_dtype_are_accepted():
    layer = build_layer("delta_net", d_model=16, num_heads=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = layer(torch.randn(2, 3, 16, dtype=torch.bfloat16))
    assert y.shape == (2, 3, 16)


def test_lstm_state_of_the_wrong_batch_is_refused():
    layer = build_layer("lstm", d_model=16, num_heads=2)
    state = layer.initial_state(3)
    with pytest.raises(ValueError, match=r"state.h: expected shape \[num_layers, B, hidden\] = \[1, 2, 16\], "
                                         r"got shape \[1, 3, 16\]"):
        layer(torch.randn(2, 4, 16), state)


def test_feedforward_layer_refuses_a_state():
    layer = build_layer("feedforward", d_model=16, num_heads=2)
    with pytest.raises(TypeError, match="state: the feed-forward layer has no state"):
        layer(torch.randn(2, 4, 16), torch.zeros(2, 16))
    _, state = layer(torch.randn(2, 4, 16), ())
    assert state == ()
