"""``python -m fastweights.bench``: the op and layer speed benchmark (see :mod:`fastweights.bench.ops_bench`);
``python -m fastweights.bench --train``: whole training steps (see :mod:`fastweights.bench.train_bench`)."""

from .ops_bench import main

raise SystemExit(main())
