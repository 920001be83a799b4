"""A fixed-bucket histogram, cheap enough for the receive path. Pure.

Bounded: its memory is its buckets, whatever it observes. Each bound is a bucket's upper
bound, inclusive, as Prometheus reads ``le``; a value above the last bound falls in the
overflow bucket (``+Inf``). Reading it (:meth:`Histogram.cumulative`) is for scrapes, not
for the hot path.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise


class Histogram:
    """Counts of observations per bucket, and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if not bounds or any(low >= high for low, high in pairwise(bounds)):
            raise ValueError("bounds must be non-empty and strictly ascending")
        if not all(math.isfinite(bound) for bound in bounds):
            raise ValueError("bounds must be finite (the overflow bucket is +Inf)")
        self.bounds = tuple(bounds)
        #: Observations per bucket (not cumulative); the last one is the overflow bucket.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)`` per bucket, ``inf`` last."""
        running = 0
        out = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out
