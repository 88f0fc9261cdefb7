"""Benchmarks: each peer in the same run, reported as ratios."""
