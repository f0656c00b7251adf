"""Tasks of the paper: code execution (spec C.1), sequential ListOps (spec C.2) and language modelling (spec C.3).

Both algorithmic generators reproduce the official ones draw for draw, so the default ``seed=42`` regenerates the
paper's data; both read and write the official file formats. See :mod:`fastweights.tasks.code_execution` and
:mod:`fastweights.tasks.listops`. :mod:`fastweights.tasks.lm` reads WikiText-103, plain-text directories and the
embedded Shakespeare corpus, and batches token streams.
"""

from fastweights.tasks import code_execution, listops, lm
from fastweights.tasks._io import SPLITS, DataFormatError

__all__ = ["SPLITS", "DataFormatError", "code_execution", "listops", "lm"]
