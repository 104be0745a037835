"""Evaluation side of the suite: benchmarks, metrics, statistics."""
