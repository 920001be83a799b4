"""The fan-out never goes on silently without a listener: a listening socket that stops
listening under the server (uvloop closes one on an accept error and says nothing) ends
``serve`` with an ERROR logged and :class:`ListenerLost`, on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from feeds.sim.simulators import SimBinanceSpot
from gateway.io.fanout import check_listening
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config
from gateway.wire.config import ListenerLost
from tests.harness import running

from .fanout_helpers import live_fanout

BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1"), ("101.00", "2")]

Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
#: Bound of each run: the listener is checked every 0.05 s (Fanout.check_interval_s).
BOUND_S = 10


def _listener(name: object) -> socket.socket:
    """A new descriptor of this process's socket listening on ``name`` (a duplicate: what
    is done to the socket through it is done to the server's)."""
    for entry in os.listdir("/dev/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(entry)))
        except OSError:  # not a socket, or the listing's own descriptor, gone
            continue
        try:
            if (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
                and sock.getsockname() == name
            ):
                return sock
        except OSError:
            pass
        sock.close()
    raise LookupError(f"no socket listens on {name!r}")


@contextlib.asynccontextmanager
async def _cancelled_at_exit(task: asyncio.Task[None]) -> AsyncIterator[None]:
    """The block; then ``task`` cancelled and awaited if it has not ended (a failed test)."""
    try:
        yield
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _stop_listening(name: object) -> None:
    """Make the socket listening on ``name`` stop listening, as an accept error ends it."""
    with _listener(name) as same:
        same.shutdown(socket.SHUT_RD)


@RUNNERS
def test_a_tcp_listener_that_stops_listening_ends_serve_with_an_error_logged(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    ports: list[int] = []

    async def main() -> None:
        _view, fanout = live_fanout(BIDS, ASKS)
        ready = asyncio.Event()
        serving = asyncio.create_task(fanout.serve("127.0.0.1", 0, ready))
        async with asyncio.timeout(BOUND_S), _cancelled_at_exit(serving):
            await ready.wait()
            ports.append(fanout.port)
            _stop_listening(("127.0.0.1", fanout.port))
            with pytest.raises(ListenerLost, match=f"on 127.0.0.1:{fanout.port}$"):
                await serving

    with caplog.at_level(logging.ERROR, logger="gateway.io.fanout"):
        run(main())
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.io.fanout"] == [
        f"no longer listening for subscribers on 127.0.0.1:{ports[0]}: "
        "the gateway stops (restart it)"
    ]


def test_a_listener_is_lost_when_closed_not_listening_or_another_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tempfile.TemporaryDirectory(prefix="mdg-", dir="/tmp") as directory:
        path = str(Path(directory) / "gw.sock")
        with socket.socket(socket.AF_UNIX) as unix, socket.socket() as tcp:
            unix.bind(path)
            unix.listen()
            tcp.bind(("127.0.0.1", 0))
            tcp.listen()
            listeners = [(unix, path), (tcp, tcp.getsockname())]
            check_listening(listeners)  # both listen: nothing said

            with pytest.raises(ListenerLost, match=r"on 127\.0\.0\.1:\d+$"):
                check_listening([(tcp, ("127.0.0.1", 1))])  # the descriptor is another's
            with socket.socket() as bound_only:
                bound_only.bind(("127.0.0.1", 0))
                with pytest.raises(ListenerLost):
                    check_listening([(bound_only, bound_only.getsockname())])
            unix.close()  # as uvloop closes a listener on an accept error
            with pytest.raises(ListenerLost, match=f"on unix:{path}$"):
                check_listening(listeners)
    assert [r.levelname for r in caplog.records] == ["ERROR"] * 3


@RUNNERS
def test_listeners_that_keep_listening_keep_serving(run: Runner) -> None:
    async def main() -> None:
        _view, fanout = live_fanout(BIDS, ASKS, check_interval_s=0.001)
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(fanout.serve("127.0.0.1", 0, ready))
            await ready.wait()
            # Many checks, and a connection accepted meanwhile: serving goes on.
            for _ in range(50):
                _reader, writer = await asyncio.open_connection("127.0.0.1", fanout.port)
                writer.close()
                await writer.wait_closed()
            assert not serving.done()
            serving.cancel()

    run(main())


def test_the_service_stops_when_its_listener_is_lost() -> None:
    async def main() -> None:
        async with SimBinanceSpot(["BTCUSDT"], n_endpoints=2, seed=3, interval_s=0.02) as sim:
            binance = dataclasses.replace(DEMO_VENUES[0], symbols=("BTCUSDT",))
            service = Service(demo_config([(binance, sim)], port=0))
            ready = asyncio.Event()
            running = asyncio.create_task(service.run(ready))
            async with asyncio.timeout(BOUND_S), _cancelled_at_exit(running):
                await ready.wait()
                await sim.wait_connections(0, 1)
                _stop_listening(("127.0.0.1", service.port))
                with pytest.raises(ExceptionGroup) as raised:
                    await running
                assert raised.group_contains(ListenerLost)
                # Its venues stopped with it: the service left no connection open.
                await sim.wait_connections(0, 0)
                await sim.wait_connections(1, 0)

    uvloop.run(main())


class _Records(logging.Handler):
    """Sets ``seen`` at the first record whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.seen = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.prefix):
            self.messages.append(record.getMessage())
            self.seen.set()


async def test_an_event_loop_running_late_is_warned_about() -> None:
    # Each reading of the clock 2.5 s after the one before: every check wakes 2.5 s late.
    readings = itertools.count(0.0, 2.5)
    _view, fanout = live_fanout(BIDS, ASKS, clock_s=lambda: next(readings))
    records = _Records("the event loop ran")
    logging.getLogger("gateway.io.fanout").addHandler(records)
    try:
        async with running(lambda ready: fanout.serve("127.0.0.1", 0, ready)):
            await asyncio.wait_for(records.seen.wait(), BOUND_S)
    finally:
        logging.getLogger("gateway.io.fanout").removeHandler(records)
    late_s = 2.5 - fanout.check_interval_s
    assert records.messages[0].startswith(f"the event loop ran {late_s:.1f} s late")


async def test_an_event_loop_on_time_is_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    readings = itertools.count(0.0, 0.9)  # each check 0.9 s after the last: within the bound
    _view, fanout = live_fanout(BIDS, ASKS, clock_s=lambda: next(readings))
    checks = itertools.count(1)
    twenty_checks = asyncio.Event()
    original = fanout.check_behind

    def counted() -> None:
        if next(checks) == 20:
            twenty_checks.set()
        original()

    fanout.check_behind = counted  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="gateway.io.fanout"):
        async with running(lambda ready: fanout.serve("127.0.0.1", 0, ready)):
            await asyncio.wait_for(twenty_checks.wait(), BOUND_S)
    assert not [r for r in caplog.records if "event loop" in r.getMessage()]
