"""LimitedLog writes a cause's burst, then drops and counts, and reports the count."""

from __future__ import annotations

import logging

import pytest

from gateway.core.lograte import LogLimiter
from gateway.io.logs import LimitedLog


def test_lines_past_the_burst_are_dropped_and_the_next_written_line_says_how_many(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = LimitedLog(
        logging.getLogger("test.limited"), LogLimiter(burst=1, window_s=5.0), lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        assert log.warning("refused", "refused %s", "a")
        assert not log.warning("refused", "refused %s", "b")
        assert not log.warning("refused", "refused %s", "c")
        now[0] = 5.0
        assert log.warning("refused", "refused %s", "d")
    assert [r.getMessage() for r in caplog.records] == [
        "refused a",
        "refused d (2 similar suppressed)",
    ]
    assert log.suppressed == 2


def test_a_disabled_level_costs_no_budget(caplog: pytest.LogCaptureFixture) -> None:
    log = LimitedLog(logging.getLogger("test.limited.info"), LogLimiter(burst=1))
    with caplog.at_level(logging.WARNING, logger="test.limited.info"):
        assert not log.info("x", "quiet")
        assert log.warning("x", "loud")
    assert [r.getMessage() for r in caplog.records] == ["loud"]
