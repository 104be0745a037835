"""Benchmarks: a versioned protocol file plus a small loader each (DESIGN §4)."""
