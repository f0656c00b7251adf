"""fastweights: fast weight programmers in PyTorch (Irie et al., NeurIPS 2021).

Docstrings cite the facts of the paper they follow as ``paper.md <section>`` (e.g. ``paper.md A.5``): the sections of
``docs/paper.md``, which restates the paper's models, tasks, hyper-parameters and published numbers.
"""

__version__ = "0.1.0"
