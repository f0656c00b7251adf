"""fastweights: fast weight programmers in PyTorch (Irie et al., NeurIPS 2021).

Docstrings cite the facts of the paper they follow as ``paper.md <section>`` (e.g. ``paper.md A.5``): the sections of
``docs/paper.md``, which restates the paper's models, tasks, hyper-parameters and published numbers.

``fastweights.load(run_dir)`` returns the trained model of a run directory, ``fastweights.export(run_dir, out_dir)``
writes it as weights without pickles (safetensors) and ``fastweights.from_pretrained(out_dir)`` loads that
(:mod:`fastweights.loading`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "export", "from_pretrained", "load"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import fastweights` (e.g. for the command line's --version) stays free of torch.
    if name in ("load", "export", "from_pretrained"):
        from . import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'fastweights' has no attribute {name!r}")
