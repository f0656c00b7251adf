"""fastweights: fast weight programmers in PyTorch (Irie et al., NeurIPS 2021)."""

__version__ = "0.1.0"
