"""The token bucket: burst at once, then the rate; its contract as a property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.ratelimit import TokenBucket


def test_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now_s=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s(100.0) == pytest.approx(0.5)
    assert not bucket.take(100.4)
    assert bucket.take(100.5)
    assert not bucket.take(100.5)
    # A long pause refills up to the burst, never beyond it.
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s(1000.0) > 0
    assert bucket.wait_s(1001.0) == 0.0


def test_a_clock_going_back_adds_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1, now_s=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bad_limits(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate_per_s > 0"):
        TokenBucket(rate, burst, 0.0)


@given(
    rate=st.floats(min_value=0.1, max_value=100.0),
    burst=st.integers(min_value=1, max_value=20),
    steps_s=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_the_interval(
    rate: float, burst: int, steps_s: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now_s = 0.0
    granted: list[float] = []
    for step_s in steps_s:
        now_s += step_s
        if bucket.take(now_s):
            granted.append(now_s)
    for i, start_s in enumerate(granted):
        for j in range(i, len(granted)):
            assert j - i + 1 <= burst + rate * (granted[j] - start_s) + 1e-6
