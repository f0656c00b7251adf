"""Tasks of the paper (paper.md C.1-C.3): code execution, sequential ListOps and language modelling.

Both algorithmic generators reproduce the official ones draw for draw, so the default ``seed=42`` regenerates the
paper's data; both read and write the official file formats. See :mod:`fastweights.tasks.code_execution` and
:mod:`fastweights.tasks.listops`. :mod:`fastweights.tasks.lm` reads WikiText-103, plain-text directories and the
embedded Shakespeare corpus, and batches token streams.
"""

from fastweights.tasks import code_execution, listops, lm
from fastweights.tasks._io import SPLITS, DataFormatError

__all__ = ["SPLITS", "DataFormatError", "code_execution", "listops", "lm"]
