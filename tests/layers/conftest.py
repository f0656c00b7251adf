"""Fixtures of the layer tests."""

from __future__ import annotations

import pytest
import torch
from layer_variants import D_MODEL, HEADS, VARIANTS, variant_id

from fastweights.layers import build_layer

# Tiny shapes: intra-op threads only add contention (100x slower on a loaded 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(params=VARIANTS, ids=[variant_id(v) for v in VARIANTS])
def layer64(request):
    """A float64 layer in eval mode, built with a fixed seed."""
    name, opts = request.param
    torch.manual_seed(0)
    return build_layer(name, D_MODEL, HEADS, **opts).double().eval()
