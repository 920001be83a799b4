"""The fixed-bucket histogram: every observation in exactly the first bucket whose bound
holds it, cumulative counts as Prometheus reads them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.histogram import Histogram

BOUNDS = (0.0, 0.001, 0.01, 0.1, 1.0)


def test_a_value_on_a_bound_counts_in_that_bucket_and_above_the_last_in_overflow() -> None:
    histogram = Histogram(BOUNDS)
    for value in (-0.5, 0.0, 0.001, 0.002, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.counts == [2, 1, 1, 0, 1, 1]
    assert histogram.cumulative() == [
        (0.0, 2),
        (0.001, 3),
        (0.01, 4),
        (0.1, 4),
        (1.0, 5),
        (math.inf, 6),
    ]
    assert histogram.count == 6 and histogram.sum == pytest.approx(7.503)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (0.0, math.inf), (math.nan,)])
def test_bounds_must_be_finite_and_strictly_ascending(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds)


@given(st.lists(st.floats(min_value=-10, max_value=100, allow_nan=False)))
def test_cumulative_counts_are_the_observations_at_or_below_each_bound(values: list[float]) -> None:
    histogram = Histogram(BOUNDS)
    for value in values:
        histogram.observe(value)
    assert len(histogram.counts) == len(BOUNDS) + 1, "memory is the buckets, whatever came"
    for bound, count in histogram.cumulative():
        assert count == sum(1 for value in values if value <= bound)
    assert histogram.count == len(values)
    assert histogram.sum == pytest.approx(math.fsum(values), abs=1e-9)
