"""Sequential ListOps (paper.md C.2): the value of nested list operations, read token by token; one output at the
end. Score: the test accuracy of the best-validation checkpoint."""

from __future__ import annotations

from typing import Any

from .algorithmic import AlgorithmicTask
from .base import Flag


class ListOpsTask(AlgorithmicTask):
    name = "listops"
    summary = "ListOps: the value of nested list operations"
    flags = (Flag("--depth", "depth", "maximum nesting depth: 10 or 15 (default 10)", type=int),
             AlgorithmicTask.data_flag)

    def run_label(self, cfg: Any) -> str:
        return f"depth{cfg.depth}"
