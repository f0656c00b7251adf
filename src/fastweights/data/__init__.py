"""The data of the paper's tasks (paper.md C.1-C.3): code execution, sequential ListOps and language modelling.

Both algorithmic generators reproduce the official ones draw for draw, so the default ``seed=42`` regenerates the
paper's data; both read and write the official file formats. See :mod:`fastweights.data.code_execution` and
:mod:`fastweights.data.listops`. :mod:`fastweights.data.lm` reads WikiText-103, plain-text directories and the
embedded Shakespeare corpus, and batches token streams.
"""

from fastweights.data import code_execution, listops, lm
from fastweights.data._io import SPLITS, DataFormatError

__all__ = ["SPLITS", "DataFormatError", "code_execution", "listops", "lm"]
