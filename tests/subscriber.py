"""A subscriber for the end-to-end tests: the public client followed in a task, keeping what
it saw and waking waiters on every update, so that a test waits on what the subscriber saw
(with a bound), never on time; a gateway serving it; and the ``mdgateway`` command run as a
child process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from feeds.sim.simulators import SimBinanceSpot
from gateway.io.capture_writer import CaptureWriter
from gateway.io.changes import StateChanges
from gateway.io.client import BookEvent
from gateway.io.client import Event
from gateway.io.client import GatewayClient
from gateway.io.client import StatusEvent
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config
from gateway.wire.config import Config
from gateway.wire.config import ServerConfig
from gateway.wire.config import VenueConfig
from gateway.wire.config import validate
from tests.harness import started
from tests.harness import wait_until

ROOT = Path(__file__).resolve().parents[1]
#: The ``mdgateway`` command of this checkout.
MDGATEWAY = [sys.executable, "-m", "gateway.tools.cli"]
#: The symbol of :func:`live_demo_gateway`, and the bound of its wait for the book.
DEMO_KEY = "binance:BTCUSDT"
LIVE_WITHIN_S = 15.0


@contextlib.contextmanager
def mdgateway_process(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``mdgateway ARGS`` started from the repository root with its output piped; killed on
    leaving if it is still running (a test that stops it itself checks how it ended)."""
    process = subprocess.Popen(
        [*MDGATEWAY, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_mdgateway(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``mdgateway ARGS`` from the repository root, its output captured (unbuffered); the
    child is killed and TimeoutExpired raised after ``timeout_s``."""
    return subprocess.run(
        [*MDGATEWAY, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def mdgateway_output(
    *args: str, timeout_s: float, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``mdgateway ARGS`` as a child process from the repository root, without blocking the
    loop (a gateway may run on it): its exit code, stdout and stderr. ``env`` is added to
    this environment; the child is killed and TimeoutError raised after ``timeout_s``."""
    process = await asyncio.create_subprocess_exec(
        *MDGATEWAY,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


class Subscriber:
    """Follows the gateway at ``url`` for ``keys`` with :class:`GatewayClient`.

    Keeps the last venue id per symbol, the number of book events, the status changes in
    order, and calls ``on_update`` with every event. ``depth``: the book subscription's.
    """

    def __init__(
        self,
        url: str,
        keys: list[str],
        backoff_max_s: float = 0.5,
        on_update: Callable[[Event], None] | None = None,
        depth: int | None = None,
    ) -> None:
        self.client = GatewayClient(url, keys, backoff_max_s=backoff_max_s, depth=depth)
        self.venue_ids: dict[str, int] = {}
        self.updates = 0
        #: The state of every status update, in order.
        self.statuses: list[str] = []
        self._on_update = on_update
        self._changes = StateChanges()

    async def follow(self) -> None:
        async with self.client:
            async for update in self.client:
                if isinstance(update, StatusEvent):
                    self.statuses.append(update.state.value)
                if isinstance(update, BookEvent):
                    self.venue_ids[update.symbol] = update.venue_id
                    self.updates += 1
                if self._on_update is not None:
                    self._on_update(update)
                self._changes.notify()

    async def until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Return once ``predicate()`` holds, checked now and after every update; raise
        TimeoutError after ``timeout_s``."""
        await wait_until(self._changes, predicate, timeout_s)


def loopback_config(
    venue: str, symbols: list[str], endpoints: list[str], rest: list[str], **options: Any
) -> Config:
    """One venue on loopback endpoints, served on an ephemeral port; quick to notice a
    stall and to reconnect, ``options`` for the venue's other settings."""
    settings: dict[str, Any] = {
        "stall_timeout_s": 3.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
        **options,
    }
    return validate(
        Config(
            venues=[
                VenueConfig(
                    venue=venue, symbols=symbols, endpoints=endpoints, rest=rest, **settings
                )
            ],
            server=ServerConfig(port=0),
        )
    )


@contextlib.asynccontextmanager
async def serving(
    config: Config,
    keys: list[str],
    backoff_max_s: float = 0.5,
    on_update: Callable[[Event], None] | None = None,
    capture: CaptureWriter | None = None,
) -> AsyncIterator[tuple[Service, Subscriber]]:
    """The gateway of ``config`` running (recording into ``capture`` where given), and a
    :class:`Subscriber` of ``keys`` following it; both stop on leaving."""
    service = Service(config, capture=capture)
    async with asyncio.TaskGroup() as tasks:
        service_task = await started(tasks, service.run)
        url = f"ws://127.0.0.1:{service.port}/"
        subscriber = Subscriber(url, keys, backoff_max_s, on_update)
        follower = tasks.create_task(subscriber.follow())
        try:
            yield service, subscriber
        finally:
            follower.cancel()
            service_task.cancel()


@contextlib.asynccontextmanager
async def live_demo_gateway() -> AsyncIterator[tuple[SimBinanceSpot, Service, str]]:
    """A gateway of the demo's Binance spot, simulated (``BTCUSDT``, two endpoints, steps
    every 20 ms), on an ephemeral port: yields the simulator, the service and its URL once
    the book is live, so that what connects then starts from a live book."""
    async with SimBinanceSpot(["BTCUSDT"], n_endpoints=2, seed=3, interval_s=0.02) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=("BTCUSDT",))
        async with serving(demo_config([(binance, sim)], port=0), [DEMO_KEY]) as (
            service,
            watcher,
        ):
            await watcher.until(lambda: "live" in watcher.statuses, LIVE_WITHIN_S)
            yield sim, service, f"ws://127.0.0.1:{service.port}/"
