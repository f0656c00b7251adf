"""Algorithmic tasks of the paper: code execution (spec C.1) and sequential ListOps (spec C.2).

Both generators reproduce the official ones draw for draw, so the default ``seed=42`` regenerates the paper's data;
both read and write the official file formats. See :mod:`fastweights.tasks.code_execution` and
:mod:`fastweights.tasks.listops`.
"""

from fastweights.tasks import code_execution, listops
from fastweights.tasks._io import SPLITS, DataFormatError

__all__ = ["SPLITS", "DataFormatError", "code_execution", "listops"]
