"""Fixtures shared by the op tests (helpers live in ``_ops_helpers.py``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """The op tests run many tiny kernels in Python loops: intra-op threads only add overhead (and on a loaded
    2-core machine they make the suite several times slower). Restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
