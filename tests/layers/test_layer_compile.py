"""Every registry layer under ``torch.compile`` on CPU, forward and backward, against eager mode.

The compiled CPU kernels (numba) are torch custom ops with fake implementations and a registered autograd, and the
value check of ``beta`` is skipped while tracing, so the fast-weight layers compile to one graph
(``fullgraph=True``). The ``lstm`` baseline is ``nn.LSTM``, which Dynamo itself runs eagerly (a graph break).
``aot_eager`` traces forward and backward as inductor does without generating code (seconds per layer); one
inductor test compiles the real thing.
"""

from __future__ import annotations

import pytest
import torch

from fastweights.layers import available_layers, build_layer


def _compare(name: str, backend: str) -> None:
    torch.manual_seed(0)
    layer = build_layer(name, 16, 2, 8)
    x = torch.randn(2, 12, 16, requires_grad=True)
    reset = torch.zeros(2, 12, dtype=torch.bool)
    reset[1, 5] = True  # the state restarts mid-sequence in one row
    kwargs = {} if name in ("transformer", "lstm", "feedforward") else {"reset": reset}
    y_ref, _ = layer(x, **kwargs)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, *layer.parameters()])
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend=backend, fullgraph=name != "lstm")
    y, _ = compiled(x, **kwargs)
    g = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", available_layers())
def test_layer_compiles_forward_and_backward(name):
    _compare(name, "aot_eager")


@pytest.mark.parametrize("name", ["delta_rnn"])
def test_layer_compiles_with_inductor(name):
    """The numba custom ops inside code that inductor generates (about 20 s on a loaded 2-core machine)."""
    _compare(name, "inductor")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in available_layers() if n != "delta_rnn"])
def test_every_layer_compiles_with_inductor(name):
    _compare(name, "inductor")
