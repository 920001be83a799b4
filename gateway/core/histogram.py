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


def quantile(cumulative: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile (0 <= q <= 1) estimated from ``(upper bound, observations at or
    below it)`` pairs in ascending order (:meth:`Histogram.cumulative`, or a scrape's
    ``_bucket`` series), as Prometheus' ``histogram_quantile``: linear within the bucket it
    falls in, from the previous bound (0 below the first, when the first is positive).
    In the ``+Inf`` bucket it is the last finite bound. None when nothing was observed."""
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within [0, 1]")
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for index, (bound, count) in enumerate(cumulative):
        if count >= rank and count > 0:
            if math.isinf(bound):
                return lower_bound if index else None
            if index == 0 and bound <= 0:
                return bound
            in_bucket = count - lower_count
            share = (rank - lower_count) / in_bucket if in_bucket else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
