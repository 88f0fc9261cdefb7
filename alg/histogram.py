"""Histograms with fixed buckets: counts of observations by upper bound, their sum and
number, as Prometheus exports them (``ryu_apps.metrics``)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence


class Histogram:
    """Observations counted in fixed buckets.

    Args:
        bounds: the buckets' upper bounds, increasing, finite (``+Inf`` is implied).

    Raises:
        ValueError: no bounds, bounds not increasing, or one not finite.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        if not bounds:
            raise ValueError("a histogram needs at least one bucket")
        if any(not math.isfinite(b) for b in bounds):
            raise ValueError(f"bucket bounds must be finite: {list(bounds)}")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"bucket bounds must increase: {list(bounds)}")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation: in the first bucket whose bound is at least ``value``."""
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[float, int]]:
        """Cumulative counts by upper bound, the last one ``+Inf`` (all observations)."""
        out = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self._counts, strict=True):
            total += count
            out.append((bound, total))
        return out
