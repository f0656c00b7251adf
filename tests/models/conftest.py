"""Fixtures of the model tests."""

from __future__ import annotations

import torch

# Tiny shapes: intra-op threads only add contention (100x slower on a loaded 2-core machine).
torch.set_num_threads(1)
