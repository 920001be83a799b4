"""The gateway's stop on loopback: simulated venue → gateway (recording a capture) → a
GatewayClient and a subscriber that never reads. The client hears every symbol ``stale``
with the stopping reason, then the close 1001 with it; the silent subscriber is aborted at
the drain bound; the capture holds every upstream disconnect."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from feeds.sim.simulators import SimBinanceSpot
from gateway.capture import CaptureReader
from gateway.core.model import STOPPING_REASON
from gateway.core.model import SymbolState
from gateway.io.capture_writer import CaptureWriter
from gateway.io.client import GATEWAY_STOPPED
from gateway.io.client import Event
from gateway.io.client import StatusEvent
from gateway.io.fanout import StopResult
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config
from gateway.wire.config import ServerConfig

from .gateway.io.fanout_helpers import RawClient
from .gateway.io.fanout_helpers import sub
from .harness import started
from .harness import wait_until
from .subscriber import Subscriber

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KEYS = [f"binance:{s}" for s in SYMBOLS]
#: The stop's drain bound: the silent subscriber is aborted after it.
DRAIN_S = 0.5


def _statuses(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.symbol, str(e.state), e.reason) for e in events if isinstance(e, StatusEvent)]


# The sum of the test's own bounds: books live, the stop, the client's report of it.
@pytest.mark.async_timeout_s(35)
async def test_subscribers_hear_the_stop_then_1001_and_a_silent_one_is_aborted_at_the_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.io.client")
    async with SimBinanceSpot(SYMBOLS, n_endpoints=2, seed=4, interval_s=0.02) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=tuple(SYMBOLS))
        config = msgspec.structs.replace(
            demo_config([(binance, sim)], port=0),
            server=ServerConfig(port=0, stop_drain_s=DRAIN_S),
        )
        capture = CaptureWriter(tmp_path, flush_s=0.05)
        service = Service(config, capture=capture)
        events: list[Event] = []
        async with asyncio.TaskGroup() as tasks:
            service_task = await started(tasks, service.run)
            subscriber = Subscriber(
                f"ws://127.0.0.1:{service.port}/", KEYS, on_update=events.append
            )
            following = tasks.create_task(subscriber.follow())
            await subscriber.until(
                lambda: {s for s, state, _ in _statuses(events) if state == "live"} == set(KEYS),
                15,
            )
            async with await RawClient.connect(service.port) as silent:
                await silent.send(sub(KEYS))
                await wait_until(
                    service.fanout.changes,
                    lambda: sorted(s.books for s in service.fanout.subscriber_stats()) == [2, 2],
                    5,
                )
                # It never reads again: it never answers the close either.
                service_task.cancel()
                await asyncio.wait({service_task})
                # A reconnect during the drain is closed at once: a stop too, counted.
                await subscriber.until(lambda: subscriber.client.stats.gateway_stops >= 1, 5)
            following.cancel()

    assert service.stop_result == StopResult(closed=1, aborted=1)
    statuses = _statuses(events)
    stopped = [s for s in statuses if s[2] == GATEWAY_STOPPED]
    assert stopped == [(key, "stale", GATEWAY_STOPPED) for key in KEYS]
    before = statuses[: statuses.index(stopped[0])]
    for key in KEYS:
        last = [s for s in before if s[0] == key][-1]
        assert last == (key, str(SymbolState.STALE), STOPPING_REASON), before
    assert subscriber.client.stats.disconnects == 1
    # The stop, and any reconnect it closed while draining, is no fault of the client's.
    client_warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "gateway.io.client" and r.levelno >= logging.WARNING
    ]
    assert not any("stopping" in message for message in client_warnings), client_warnings
    # The capture writer stopped last: every connection's disconnect is written.
    kinds = Counter((r.kind, r.conn_id) for r in CaptureReader(tmp_path) if r.kind != "ws")
    opened = {conn for kind, conn in kinds if kind == "connect"}
    assert opened and {conn for kind, conn in kinds if kind == "disconnect"} == opened
    assert capture.stats.dropped == 0
