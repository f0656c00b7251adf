"""Training tooling: configuration and presets, run directories (metrics, atomic checkpoints, resume),
progress display, and the training loops of the benchmarks."""
