"""LogLimiter: a burst per cause per window, suppressed lines counted and reported;
LimitedLogger: the lines it admits, the count of suppressed ones appended."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.lograte import LimitedLogger
from gateway.core.lograte import LogLimiter


def test_a_cause_writes_its_burst_then_is_counted_until_the_window_ends() -> None:
    limiter = LogLimiter(burst=2, window_s=10.0)
    assert [limiter.admit("refused", 0.0 + i) for i in range(5)] == [0, 0, None, None, None]
    assert limiter.suppressed_total == 3
    # The next window's first line reports what the last one suppressed.
    assert limiter.admit("refused", 10.0) == 3
    assert limiter.admit("refused", 10.5) == 0


def test_causes_are_limited_independently() -> None:
    limiter = LogLimiter(burst=1, window_s=10.0)
    assert limiter.admit("a", 0.0) == 0
    assert limiter.admit("a", 1.0) is None
    assert limiter.admit("b", 1.0) == 0
    assert limiter.admit(("bad frame", 3), 1.0) == 0


def test_the_table_of_causes_is_bounded_and_forgets_the_least_recent() -> None:
    limiter = LogLimiter(burst=1, window_s=100.0, max_causes=3)
    for i in range(10):
        limiter.admit(i, float(i))
    assert len(limiter) == 3
    # 0 was forgotten: it may write again; 9 is remembered and still limited.
    assert limiter.admit(0, 11.0) == 0
    assert limiter.admit(9, 11.0) is None


@pytest.mark.parametrize(("burst", "window_s", "max_causes"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_bad_parameters(burst: int, window_s: float, max_causes: int) -> None:
    with pytest.raises(ValueError):
        LogLimiter(burst=burst, window_s=window_s, max_causes=max_causes)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 1000)), max_size=200))
def test_every_line_is_written_or_counted_and_no_window_exceeds_its_burst(
    calls: list[tuple[str, float]],
) -> None:
    limiter = LogLimiter(burst=3, window_s=10.0)
    written: dict[str, list[float]] = {}
    reported = 0
    for cause, now_s in sorted(calls, key=lambda c: c[1]):
        before = limiter.admit(cause, now_s)
        if before is not None:
            written.setdefault(cause, []).append(now_s)
            reported += before
    assert len(calls) == sum(map(len, written.values())) + limiter.suppressed_total
    assert reported <= limiter.suppressed_total
    # Windows are fixed, not sliding: any span of window_s touches at most two of them.
    for times in written.values():
        for i, start in enumerate(times):
            assert sum(1 for t in times[i:] if t < start + 10.0) <= 2 * 3


def test_limited_lines_are_written_with_the_count_suppressed_before_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = LimitedLogger(logging.getLogger("test.lograte"), LogLimiter(burst=1, window_s=5.0))
    fields = {"venue": "seq", "symbol": "BTC"}
    with caplog.at_level(logging.WARNING, logger="test.lograte"):
        assert log.warning("crossed", 0.0, "%s: crossed (%d)", "seq:BTC", 1, extra=fields)
        assert not log.warning("crossed", 1.0, "%s: crossed (%d)", "seq:BTC", 2, extra=fields)
        assert log.warning("gap", 1.0, "gap %d", 3)
        assert not log.warning("crossed", 4.9, "%s: crossed (%d)", "seq:BTC", 4, extra=fields)
        assert log.warning("crossed", 5.0, "%s: crossed (%d)", "seq:BTC", 5, extra=fields)
    assert [r.getMessage() for r in caplog.records] == [
        "seq:BTC: crossed (1)",
        "gap 3",
        "seq:BTC: crossed (5) (2 similar suppressed)",
    ]
    assert [getattr(r, "symbol", None) for r in caplog.records] == ["BTC", None, "BTC"]
    assert log.limiter.suppressed_total == 2


def test_a_level_not_written_costs_no_budget_and_each_level_names_the_callers_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = LimitedLogger(logging.getLogger("test.lograte.levels"), LogLimiter(burst=1))
    with caplog.at_level(logging.WARNING, logger="test.lograte.levels"):
        assert not log.info("x", 0.0, "quiet")
        assert log.warning("x", 0.0, "loud")
        assert log.error("e", 0.0, "error")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "loud"),
        (logging.ERROR, "error"),
    ]
    assert {r.filename for r in caplog.records} == {"test_lograte.py"}
    assert log.limiter.suppressed_total == 0
