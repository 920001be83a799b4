"""LimitedLog writes a cause's burst, then drops and counts, and reports the count;
JsonFormatter writes one object a line with the call's context fields; ``mdgateway run``
writes JSON lines when asked."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import orjson
import pytest

from gateway.core.lograte import LogLimiter
from gateway.io.logs import JsonFormatter, LimitedLog
from tests.subscriber import mdgateway_process


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


def _record(msg: str, *args: object, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("gateway.io.upstream", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(fields)
    return record


def test_a_json_line_is_one_object_with_the_context_fields_the_call_gave() -> None:
    record = _record("conn %d %s: %s", 3, "ws://x", "closed\nfor good", venue="okx", connection=3)
    record.created = 0.25
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert orjson.loads(line) == {
        "time": "1970-01-01T00:00:00.250000+00:00",
        "level": "WARNING",
        "logger": "gateway.io.upstream",
        "message": "conn 3 ws://x: closed\nfor good",
        "venue": "okx",
        "connection": 3,
    }
    # Only the fields the call gave, not empty; a value of no JSON type is written as its str.
    symbol = orjson.loads(JsonFormatter().format(_record("x", symbol=Path("BTC"), venue="")))
    assert symbol["symbol"] == "BTC" and "venue" not in symbol and "connection" not in symbol


def test_a_json_line_carries_the_exception_text() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == "failed" and "ValueError: boom" in line["exception"]


def test_limited_lines_keep_their_context_fields(caplog: pytest.LogCaptureFixture) -> None:
    log = LimitedLog(logging.getLogger("test.limited.extra"), LogLimiter(burst=1))
    with caplog.at_level(logging.WARNING, logger="test.limited.extra"):
        assert log.warning("c", "bad frame", extra={"venue": "okx", "connection": 2})
    assert [(r.venue, r.connection) for r in caplog.records] == [("okx", 2)]  # type: ignore[attr-defined]


CONFIG = """
{log_format}
[server]
port = 0

[[venues]]
venue = "okx"
symbols = ["BTC-USDT"]
endpoints = ["ws://127.0.0.1:1"]
backoff_initial_s = 0.05
backoff_max_s = 0.1
"""


@pytest.mark.parametrize(
    ("in_config", "option"),
    [('log_format = "json"', ()), ('log_format = "text"', ("--log-format", "json"))],
    ids=["config", "option"],
)
def test_mdgateway_run_writes_json_lines(
    tmp_path: Path, in_config: str, option: tuple[str, ...]
) -> None:
    """Every stderr line of ``mdgateway run`` is a JSON object; a failing connection's lines
    name its venue, connection and endpoint."""
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(log_format=in_config))
    with mdgateway_process("run", "--config", str(config), *option) as process:
        assert process.stderr is not None
        lines = []
        for raw in process.stderr:  # bounded by the test's timeout
            lines.append(orjson.loads(raw))
            if lines[-1].get("connection") == 0:
                break
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    assert process.returncode == 0
    # The command's own last word on a signal is no log record.
    assert [raw for raw in rest.splitlines() if not raw.startswith("{")] == [
        "mdgateway: stopped by signal"
    ]
    lines += [orjson.loads(raw) for raw in rest.splitlines() if raw.startswith("{")]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    conn = next(line for line in lines if line.get("connection") == 0)
    assert conn["venue"] == "okx" and conn["endpoint"] == "ws://127.0.0.1:1"
    assert conn["logger"] == "gateway.io.upstream" and conn["level"] == "WARNING"
