"""``python -m fastweights.bench``: the op and layer speed benchmark (see :mod:`fastweights.bench.ops_bench`)."""

from .ops_bench import main

raise SystemExit(main())
