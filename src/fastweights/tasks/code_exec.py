"""Code execution (paper.md C.1): the value a variable of a short program holds at the end; one output per
position. Score: the test sequence accuracy of the best-validation checkpoint."""

from __future__ import annotations

from typing import Any

from .algorithmic import AlgorithmicTask
from .base import Flag


class CodeExecTask(AlgorithmicTask):
    name = "code-exec"
    summary = "code execution: the final value of a variable of a program"
    flags = (Flag("--num-vars", "num_vars", "variables per program: 3 or 5 (default 3)", type=int),
             AlgorithmicTask.data_flag)
    print_accuracy = True
    accuracy_name = "sequence accuracy"

    def run_label(self, cfg: Any) -> str:
        return f"vars{cfg.num_vars}"
