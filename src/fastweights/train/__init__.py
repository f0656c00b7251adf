"""Training tooling (the benchmark training loops arrive with the task issues)."""
