"""What several ops share, written once.

* :mod:`.checks`: argument validation (errors name the argument, the expected and the actual value) and the
  dtype policy; :func:`~.checks.check_reset` is also what layers and models validate a ``reset`` mask with;
* :mod:`.registry`: the implementations of each op and how ``impl=`` picks one (``supports``, fallback notices);
* :mod:`.spec`: :class:`~.spec.OpSpec`, what tests and benchmarks read about an op;
* :mod:`.chunked`: the chunkwise-parallel sum/delta rule; :mod:`.scan`: the checkpointed step loop of the
  nonlinear recurrences; :mod:`.delta`: the delta-rule pieces those recurrences share;
* :mod:`.numba`: the plumbing of the compiled CPU kernels (works unchanged without numba).
"""

from .checks import check_reset, set_value_checks

__all__ = ["check_reset", "set_value_checks"]
