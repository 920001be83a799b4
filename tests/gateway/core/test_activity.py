"""ActivityMonitor: silence judged per (symbol, connection) against the symbol's own rate."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.activity import ActivityLimits
from gateway.core.activity import ActivityMonitor

LIMITS = ActivityLimits(factor=10.0, min_silence_s=1.0, max_silence_s=60.0, alpha=0.5)


def monitor_with(
    intervals_s: float, count: int = 5, *, conns: tuple[int, ...] = (0,)
) -> ActivityMonitor:
    """Symbol "A" updated ``count`` times ``intervals_s`` apart on each of ``conns``,
    from 0; the last update at ``(count - 1) * intervals_s``."""
    monitor = ActivityMonitor(LIMITS)
    for conn_id in conns:
        monitor.connection_up(conn_id, ["A"], 0.0)
    for i in range(count):
        for conn_id in conns:
            monitor.update("A", conn_id, i * intervals_s)
    return monitor


@pytest.mark.parametrize(
    ("interval_s", "bound_s"),
    [
        (0.01, 1.0),  # 10 x 0.01 = 0.1, raised to the minimum
        (0.5, 5.0),  # 10 x the usual interval
        (3.0, 30.0),
        (20.0, 60.0),  # 200, capped at the maximum
    ],
)
def test_the_bound_is_factor_times_the_usual_interval_within_the_limits(
    interval_s: float, bound_s: float
) -> None:
    monitor = monitor_with(interval_s)
    assert monitor.bound_s("A", 0) == pytest.approx(bound_s)


def test_a_channel_with_no_interval_yet_gets_the_maximum() -> None:
    monitor = ActivityMonitor(LIMITS)
    monitor.connection_up(0, ["A"], 0.0)
    assert monitor.bound_s("A", 0) == 60.0 and monitor.bound_s("B", 0) == 60.0


@pytest.mark.parametrize(
    ("other_traffic_at_s", "checked_at_s", "dead"),
    [
        (5.5, 5.9, False),  # silent 1.9 s: under the 2 s bound
        (5.5, 6.0, True),  # silent 2 s on a connection with traffic since
        (None, 6.0, False),  # the whole connection is silent: the stall timeout's concern
        (3.9, 6.0, False),  # traffic only before the symbol's last update
        (4.0, 6.0, False),  # traffic only with the symbol's last update
        (4.5, 9.0, False),  # traffic after it, but not within the bound: the connection is silent
        (4.1, 6.0, True),
    ],
)
def test_a_silent_channel_is_dead_only_on_a_connection_that_carries_other_traffic(
    other_traffic_at_s: float | None, checked_at_s: float, dead: bool
) -> None:
    monitor = monitor_with(0.2, 21)  # last update at 4.0, usual every 0.2 s: bound 2 s
    if other_traffic_at_s is not None:
        monitor.frame(0, other_traffic_at_s)
    found = monitor.check(checked_at_s)
    if dead:
        (silence,) = found
        assert (silence.symbol, silence.conn_id) == ("A", 0)
        assert (silence.silent_s, silence.usual_s) == pytest.approx((checked_at_s - 4.0, 0.2))
    else:
        assert found == []
    assert monitor.dead_everywhere("A") is dead


def test_dead_is_reported_once_per_silence_and_revived_by_the_next_update() -> None:
    monitor = monitor_with(0.2, 21, conns=(0, 1))
    monitor.frame(0, 6.5)
    monitor.update("A", 1, 6.5)
    assert [s.conn_id for s in monitor.check(6.5)] == [0]
    assert monitor.check(7.0) == [], "reported once"
    assert monitor.alive_elsewhere("A", 0) and not monitor.dead_everywhere("A")
    assert not monitor.alive_elsewhere("A", 1)
    assert monitor.update("A", 0, 7.0) is True, "alive again"
    assert monitor.update("A", 0, 7.2) is False
    # The silence did not enter the usual interval.
    assert monitor.bound_s("A", 0) == pytest.approx(2.0)


def test_a_silence_is_reported_again_after_twice_the_last_wait_while_traffic_goes_on() -> None:
    """Each report asks for a resubscribe: one never answered leaves the channel silent."""
    monitor = monitor_with(0.2, 21)  # the last update at 4.0; bound 2.0
    monitor.frame(0, 6.5)
    assert [s[:3] + s[4:] for s in monitor.check(6.5)] == [("A", 0, 2.5, 0)]
    monitor.frame(0, 10.0)
    assert monitor.check(10.4) == [], "twice the bound since the report: not yet"
    assert [s[:3] + s[4:] for s in monitor.check(10.5)] == [("A", 0, 6.5, 1)]
    monitor.frame(0, 18.0)
    assert monitor.check(18.4) == []
    assert [s.reported for s in monitor.check(18.5)] == [2]
    assert monitor.check(60.0) == [], "no traffic on the connection since the report"
    assert monitor.update("A", 0, 61.0) is True
    monitor.frame(0, 63.0)
    assert [s.reported for s in monitor.check(63.0)] == [0], "a new silence"


@given(
    interval_s=st.floats(0.01, 20.0),
    step_s=st.floats(0.05, 5.0),
)
def test_reports_of_one_silence_are_apart_by_a_wait_doubling_to_the_maximum(
    interval_s: float, step_s: float
) -> None:
    monitor = monitor_with(interval_s)
    last_s = 4 * interval_s
    bound_s = monitor.bound_s("A", 0)
    reported_s: list[float] = []
    for i in range(1, int(1000.0 / step_s)):
        now_s = last_s + i * step_s
        monitor.frame(0, now_s)  # the connection's other traffic
        for silence in monitor.check(now_s):
            assert silence.reported == len(reported_s)
            reported_s.append(now_s)
    # Checked every step_s: each report at most one step late (and float rounding).
    eps_s = 1e-9
    assert reported_s and bound_s - eps_s <= reported_s[0] - last_s <= bound_s + step_s + eps_s
    for k, (a, b) in enumerate(pairwise(reported_s), start=1):
        wait_s = min(LIMITS.max_silence_s, bound_s * 2**k)
        assert wait_s - eps_s <= b - a <= wait_s + step_s + eps_s


def test_dead_on_every_connection_and_the_reason_says_how_long_and_how_usual() -> None:
    monitor = monitor_with(0.2, 21, conns=(0, 1))
    monitor.frame(0, 9.0)
    monitor.frame(1, 9.0)
    assert len(monitor.check(9.0)) == 2 and monitor.dead_everywhere("A")
    assert (
        monitor.stale_reason("A", 9.0) == "no updates for 5 s on any connection (usual every 0.2 s)"
    )
    monitor.connection_down(0)
    monitor.connection_down(1)
    assert not monitor.dead_everywhere("A"), "no channel left"


def test_a_quiet_market_raises_the_bound() -> None:
    monitor = monitor_with(0.1, 11)  # 1 s bound
    for i in range(1, 40):
        monitor.update("A", 0, 1.0 + 0.9 * i)  # the market slows to one update per 0.9 s
    assert monitor.bound_s("A", 0) == pytest.approx(9.0)
    monitor.frame(0, 37.0)
    assert monitor.check(37.0) == [], "1.9 s of quiet is not a dead channel any more"


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        ActivityMonitor(ActivityLimits(min_silence_s=10.0, max_silence_s=1.0))
    with pytest.raises(ValueError):
        ActivityMonitor(ActivityLimits(factor=0.0))


@given(
    intervals=st.lists(st.floats(0.001, 100.0), min_size=1, max_size=30),
    silence_s=st.floats(0.0, 200.0),
)
@example(intervals=[68.58030883044275], silence_s=60.0)  # the sum rounds the silence down
def test_a_channel_is_never_dead_before_its_bound_and_the_bound_stays_in_the_limits(
    intervals: list[float], silence_s: float
) -> None:
    monitor = ActivityMonitor(LIMITS)
    monitor.connection_up(0, ["A"], 0.0)
    now_s = 0.0
    for interval_s in intervals:
        now_s += interval_s
        monitor.update("A", 0, now_s)
    bound_s = monitor.bound_s("A", 0)
    assert LIMITS.min_silence_s <= bound_s <= LIMITS.max_silence_s
    checked_s = now_s + silence_s
    monitor.frame(0, checked_s)  # other traffic right now
    found = monitor.check(checked_s)
    # The silence as the clock readings give it (now_s + 60.0 - now_s may be 59.99...).
    silent_s = checked_s - now_s
    assert bool(found) == (silent_s >= bound_s and silent_s > 0)
