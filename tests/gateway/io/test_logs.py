"""LimitedLog writes a cause's burst, then drops and counts, and reports the count;
FdExhaustion logs one ERROR per episode of EMFILE/ENFILE, in-process and in a process
whose descriptor limit is lowered; JsonFormatter writes one object a line with the call's
context fields; ``mdgateway run`` writes JSON lines when asked."""

from __future__ import annotations

import errno
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gateway.core.lograte import LogLimiter
from gateway.io.logs import FdExhaustion
from gateway.io.logs import JsonFormatter
from gateway.io.logs import LimitedLog
from gateway.io.logs import redact_secrets
from tests.subscriber import mdgateway_process

ROOT = Path(__file__).resolve().parents[3]


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


def test_each_level_writes_at_its_level_and_names_the_callers_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = LimitedLog(logging.getLogger("test.limited.levels"))
    with caplog.at_level(logging.INFO, logger="test.limited.levels"):
        assert log.info("i", "info") and log.warning("w", "warning") and log.error("e", "error")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "info"),
        (logging.WARNING, "warning"),
        (logging.ERROR, "error"),
    ]
    assert {(r.filename, r.funcName) for r in caplog.records} == {
        ("test_logs.py", "test_each_level_writes_at_its_level_and_names_the_callers_line")
    }


# --- file-descriptor exhaustion: one ERROR per episode ----------------------------------------


def test_descriptor_exhaustion_is_logged_once_per_episode_and_every_failure_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fd = FdExhaustion(logging.getLogger("test.fd"))
    emfile = OSError(errno.EMFILE, "Too many open files")
    wrapped = RuntimeError("connect failed")
    wrapped.__cause__ = OSError(errno.ENFILE, "Too many open files in system")
    with caplog.at_level(logging.INFO, logger="test.fd"):
        assert not fd.failed(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "x")
        for _ in range(3):
            assert fd.failed(emfile, "connecting upstream")
        fd.succeeded()
        fd.succeeded()  # no episode: nothing to end
        assert fd.failed(wrapped, "fetching snapshots")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("ulimit -n" in line for line in errors)
    assert "connecting upstream" in errors[0] and "fetching snapshots" in errors[1]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "file descriptors available again after 3 failures"
    ]
    assert (fd.stats.episodes, fd.stats.failures, fd.failing) == (2, 4, 1)


#: The start of a script run in a subprocess whose RLIMIT_NOFILE it lowers to 128:
#: ``exhaust()`` opens descriptors until none is left, ``release()`` closes them.
FD_PRELUDE = r"""
import asyncio, errno, json, logging, os, resource, socket, sys

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
from websockets.asyncio.server import serve

from gateway.core.backoff import Backoff
from gateway.io.changes import StateChanges
from gateway.io.fanout import Fanout
from gateway.io.logs import FD_EXHAUSTION
from gateway.io.upstream import Connection
from tests.gateway.io.fanout_helpers import FakeView, start_serving

hog = []


def exhaust():
    while True:
        try:
            hog.append(open(os.devnull, "rb"))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            return


def release():
    while hog:
        hog.pop().close()


resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
"""

#: Runs the script's ``main()`` on the loop its first argument names.
FD_RUN = r"""
if sys.argv[1] == "uvloop":
    import uvloop

    uvloop.run(main())
else:
    asyncio.run(main())
"""

#: An upstream Connection and the subscriber server each meet an episode of EMFILE, which
#: ends when descriptors are freed.
FD_SCRIPT = (
    FD_PRELUDE
    + r"""
async def main():
    fd = FD_EXHAUSTION

    async def upstream(ws):
        await ws.send("x")
        await ws.wait_closed()

    async with asyncio.timeout(20), serve(upstream, "127.0.0.1", 0) as up:
        up_port = up.sockets[0].getsockname()[1]
        fanout = Fanout(FakeView())
        async with asyncio.TaskGroup() as tasks:
            serving = await start_serving(tasks, fanout)
            client = socket.socket()  # made now: connecting it later needs no descriptor

            # Episode 1: upstream connects fail with EMFILE, then succeed.
            changes = StateChanges()
            conn = Connection(
                1, f"ws://127.0.0.1:{up_port}/", on_frame=lambda *a: False,
                on_state=lambda *a: None, backoff=Backoff(0.001, 0.002),
                stall_timeout_s=60.0, max_age_s=3600.0, changes=changes,
            )
            exhaust()
            upstream_task = tasks.create_task(conn.run())
            await fd.changes.wait_until(lambda: fd.stats.failures >= 5)
            release()
            await changes.wait_until(lambda: conn.stats.connects == 1)
            assert fd.failing == 0 and fd.stats.episodes == 1
            assert conn.stats.failed_attempts >= 4
            assert "Too many open files" in conn.stats.last_error

            # Episode 2: the subscriber server cannot accept, then can.
            exhaust()
            client.connect(("127.0.0.1", fanout.port))
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            before = fd.stats.failures
            await fd.changes.wait_until(lambda: fd.stats.failures > before)
            release()
            # uvloop closed the first client unaccepted; asyncio accepts it a second later.
            again = socket.create_connection(("127.0.0.1", fanout.port))
            again.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            await fd.changes.wait_until(lambda: fd.failing == 0)
            again.close()
            client.close()
            upstream_task.cancel()
            serving.cancel()
    print(json.dumps({"episodes": fd.stats.episodes, "failures": fd.stats.failures}))
"""
    + FD_RUN
)


def _run_fd_script(script: str, loop: str) -> tuple[dict[str, int], list[str], str]:
    """Runs ``script`` on ``loop``: its printed counts, its ERROR lines and its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", script, loop],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    return json.loads(done.stdout), errors, done.stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_descriptor_exhaustion_in_a_process_with_a_low_limit(loop: str) -> None:
    counts, errors, stderr = _run_fd_script(FD_SCRIPT, loop)
    assert len(errors) == 2, stderr
    # The first episode's line names the connect, unless the server's probe saw it first.
    assert "accepting subscribers" in errors[1]
    assert all("ulimit -n" in line for line in errors)
    assert stderr.count("file descriptors available again") == 2
    assert counts["episodes"] == 2 and counts["failures"] >= 6


#: The subscriber server fails to accept and is stopped before asyncio retries accepting;
#: no probe runs (its interval is an hour), so every failure counted is an accept's.
CLOSED_DURING_EPISODE_SCRIPT = (
    FD_PRELUDE
    + r"""
async def main():
    fd = FD_EXHAUSTION
    fanout = Fanout(FakeView(), check_interval_s=3600.0)
    async with asyncio.timeout(20), asyncio.TaskGroup() as tasks:
        serving = await start_serving(tasks, fanout)
        client = socket.socket()  # made now: connecting it later needs no descriptor
        exhaust()
        client.connect(("127.0.0.1", fanout.port))
        await fd.changes.wait_until(lambda: fd.stats.failures > 0)
        serving.cancel()
        await fd.changes.wait_until(lambda: fd.stats.retries_after_close > 0)
        release()
        client.close()
    retries = fd.stats.retries_after_close
    print(json.dumps({"failures": fd.stats.failures, "retries_after_close": retries}))
"""
    + FD_RUN
)


def test_a_server_stopped_before_asyncio_retries_accepting_logs_nothing_more() -> None:
    counts, errors, stderr = _run_fd_script(CLOSED_DURING_EPISODE_SCRIPT, "asyncio")
    assert len(errors) == 1 and "accepting subscribers" in errors[0], stderr
    assert "Traceback" not in stderr and "Exception in callback" not in stderr, stderr
    # One retry per failed accept; those that ran found the socket closed.
    assert 1 <= counts["retries_after_close"] <= counts["failures"], counts


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


def test_a_redacting_logger_writes_no_token_in_messages_or_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cret-token-0123456789"
    logger = logging.getLogger("tests.redacted")
    redact_secrets(logger)
    redact_secrets(logger)  # once is enough: no second filter
    assert len(logger.filters) == 1
    caplog.set_level(logging.DEBUG, logger="tests.redacted")
    logger.debug("< GET %s HTTP/1.1", f"/?token={secret}")
    logger.debug("< %s: %s", "Authorization", f"Bearer {secret}")
    logger.info("100%% plain, %d args kept", 2)
    logger.warning("gateway %s: connect failed", f"wss://alice:{secret}@gw:8765/")
    try:
        raise ValueError(f"invalid HTTP request line: GET /?token={secret} HTTP/1.0")
    except ValueError:
        logger.exception("opening handshake failed")
    messages = [record.getMessage() for record in caplog.records]
    assert messages[:4] == [
        "< GET /?token=*** HTTP/1.1",
        "< Authorization: Bearer ***",
        "100% plain, 2 args kept",
        "gateway wss://alice:***@gw:8765/: connect failed",
    ]
    failed = caplog.records[4]
    text = logging.Formatter().format(failed)
    line = json.loads(JsonFormatter().format(failed))
    assert "GET /?token=*** HTTP/1.0" in text and "GET /?token=***" in line["exception"]
    assert secret not in caplog.text + text + line["exception"]
