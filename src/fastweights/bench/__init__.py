"""Measurements of speed and memory (run them; never assert timings in tests)."""
