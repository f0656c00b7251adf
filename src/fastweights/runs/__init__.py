"""What every task's runs share: configuration resolution (:mod:`~fastweights.runs.config`: presets, ``key=value``
overrides, the one resolver), run directories (:mod:`~fastweights.runs.directory`: lock, naming, resume,
checkpoints, metrics), stopping and resuming (:mod:`~fastweights.runs.interrupt`), progress lines
(:mod:`~fastweights.runs.progress`) and plots (:mod:`~fastweights.runs.plots`). ``fastweights.train`` and
``fastweights.rl`` build on it; it imports neither at module level."""
