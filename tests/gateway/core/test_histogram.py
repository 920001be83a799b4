"""The fixed-bucket histogram: every observation in exactly the first bucket whose bound
holds it, cumulative counts as Prometheus reads them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.histogram import Histogram
from gateway.core.histogram import quantile

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


def test_quantile_interpolates_within_the_bucket_it_falls_in() -> None:
    histogram = Histogram([0.0, 0.001, 0.01, 0.1])
    for value in [0.0005] * 50 + [0.005] * 40 + [0.05] * 9 + [5.0]:
        histogram.observe(value)
    buckets = histogram.cumulative()
    assert quantile(buckets, 0.5) == pytest.approx(0.001)  # the 50th of 100: the first bucket's top
    assert quantile(buckets, 0.25) == pytest.approx(0.0005)
    assert quantile(buckets, 0.7) == pytest.approx(0.001 + 0.009 * 20 / 40)
    assert quantile(buckets, 0.99) == pytest.approx(0.1)
    assert quantile(buckets, 1.0) == 0.1, "in the +Inf bucket: the last finite bound"


def test_quantile_of_values_at_or_below_zero_and_of_nothing() -> None:
    histogram = Histogram([0.0, 0.001])
    assert quantile(histogram.cumulative(), 0.5) is None
    histogram.observe(-0.002)
    assert quantile(histogram.cumulative(), 0.99) == 0.0
    with pytest.raises(ValueError, match="q must"):
        quantile(histogram.cumulative(), 1.5)
