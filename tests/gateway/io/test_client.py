"""GatewayClient against a real Fanout: consistent books, gap recovery, bbo and trades,
status changes only, reconnection and fail-over over several URLs."""

from __future__ import annotations

import asyncio
import base64
import http
import itertools
import json
import logging
import socket
from collections.abc import Awaitable
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from typing import NamedTuple

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import unix_serve
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request
from websockets.http11 import Response

from gateway.core.model import STARTING_REASON
from gateway.core.model import Side
from gateway.core.model import SymbolState
from gateway.io.changes import StateChanges
from gateway.io.client import GATEWAY_STOPPED
from gateway.io.client import BboEvent
from gateway.io.client import BookEvent
from gateway.io.client import ClientState
from gateway.io.client import Event
from gateway.io.client import GatewayClient
from gateway.io.client import GatewayError
from gateway.io.client import RecoveryEvent
from gateway.io.client import RetryEvent
from gateway.io.client import StatusEvent
from gateway.io.client import TradeEvent
from gateway.io.client import subscribe
from gateway.io.fanout import Fanout
from gateway.io.fanout import StopResult
from gateway.wire.protocol import UnknownValue
from gateway.wire.protocol import WireFormat
from tests.harness import wait_until
from tests.harness import ws_serving

from .fanout_helpers import KEY
from .fanout_helpers import KEY2
from .fanout_helpers import FakeView
from .fanout_helpers import live_fanout
from .fanout_helpers import serving
from .fanout_helpers import start_serving
from .fanout_helpers import trade

BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1"), ("101.00", "2")]
LIVE, STALE, RESYNCING = SymbolState.LIVE, SymbolState.STALE, SymbolState.RESYNCING


class Consumer:
    """Iterates a client and checks every yielded book against the published history at
    the moment it is yielded (the book object is reused afterwards), and that no book is
    held while a status says it is being rebuilt or the connection was lost (a gateway's
    ``stale`` keeps its last book)."""

    def __init__(self, client: GatewayClient, view: FakeView) -> None:
        self.client = client
        self.view = view
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._cursor = 0

    async def run(self) -> None:
        async for event in self.client:
            if isinstance(event, BookEvent):
                expected = self.view.history[event.symbol, event.epoch, event.seq]
                assert event.book.normalized() == expected, event
                assert self.client.book(event.symbol) is event.book
            if isinstance(event, StatusEvent) and (
                event.state is RESYNCING
                or "connection lost" in event.reason
                or event.reason == GATEWAY_STOPPED
            ):
                assert self.client.book(event.symbol) is None, event
            self.events.append(event)
            self._changed.set()

    async def until(self, predicate: Callable[[Event], bool]) -> Event:
        """The first event after the one ``until`` last returned that matches
        ``predicate``, waiting for it if needed."""
        while True:
            for index in range(self._cursor, len(self.events)):
                if predicate(self.events[index]):
                    self._cursor = index + 1
                    return self.events[index]
            self._changed.clear()
            await self._changed.wait()

    def seqs(self, symbol: str, kind: str) -> list[int]:
        return [
            e.seq
            for e in self.events
            if isinstance(e, BookEvent) and e.symbol == symbol and e.kind == kind
        ]

    def statuses(self, symbol: str) -> list[tuple[ClientState, str]]:
        return [
            (e.state, e.reason)
            for e in self.events
            if isinstance(e, StatusEvent) and e.symbol == symbol
        ]


def snapshot_of(symbol: str, seq: int | None = None) -> Callable[[Event], bool]:
    return lambda e: (
        isinstance(e, BookEvent)
        and e.kind == "snapshot"
        and e.symbol == symbol
        and (seq is None or e.seq == seq)
    )


def delta_of(symbol: str, seq: int) -> Callable[[Event], bool]:
    return lambda e: (
        isinstance(e, BookEvent) and e.kind == "delta" and e.symbol == symbol and e.seq == seq
    )


def status_of(symbol: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, StatusEvent) and e.symbol == symbol


@pytest.mark.parametrize("wire_format", ["json", "msgpack"])
async def test_client_yields_consistent_books_and_recovers_from_a_gap(
    wire_format: WireFormat,
) -> None:
    view, fanout = live_fanout(BIDS, ASKS)
    async with serving(fanout), asyncio.TaskGroup() as tasks:
        client = GatewayClient(
            f"ws://127.0.0.1:{fanout.port}/",
            [KEY, KEY2],
            wire_format=wire_format,
        )
        consumer = Consumer(client, view)
        task = tasks.create_task(consumer.run())
        first = await consumer.until(snapshot_of(KEY))
        assert isinstance(first, BookEvent)
        assert (first.epoch, first.seq, first.venue_id) == (1, 0, 1000)
        assert first.state is LIVE
        assert client.book(KEY2) is None  # no book yet upstream

        for i in range(1, 6):
            fanout.publish([view.delta(KEY, bids=[(f"99.{i}0", str(i))])])
        fanout.publish(view.reset(KEY2, [("10.0", "1")], [("11.0", "1")]))
        fanout.publish([view.delta(KEY2, asks=[("11.0", "0")])])
        await consumer.until(delta_of(KEY, 5))
        await consumer.until(delta_of(KEY2, 1))
        assert consumer.seqs(KEY, "delta") == [1, 2, 3, 4, 5]

        # A lost message: the view moves two steps, the client sees only the second.
        view.delta(KEY, asks=[("100.50", "0")])
        fanout.publish([view.delta(KEY, asks=[("100.75", "3")])])
        gap = await consumer.until(status_of(KEY))
        assert isinstance(gap, StatusEvent) and gap.state is RESYNCING
        assert "sequence gap" in gap.reason
        back = await consumer.until(status_of(KEY))  # the resync's snapshot ends it
        assert isinstance(back, StatusEvent) and back.state is LIVE
        resynced = await consumer.until(snapshot_of(KEY))
        assert isinstance(resynced, BookEvent) and resynced.seq == 7
        fanout.publish([view.delta(KEY, bids=[("99.10", "0")])])
        await consumer.until(delta_of(KEY, 8))
        assert client.stats.gaps == 1
        assert 6 not in consumer.seqs(KEY, "delta") and 7 not in consumer.seqs(KEY, "delta")
        book = client.book(KEY)
        assert book is not None and book.normalized() == view.history[KEY, 1, 8]
        assert client.position(KEY) == (1, 8)
        # One status per change, none per delta.
        assert consumer.statuses(KEY) == [
            (LIVE, "snapshot applied"),
            (RESYNCING, "sequence gap: expected epoch 1 seq 6, got epoch 1 seq 7"),
            (LIVE, "snapshot applied"),
        ]
        assert consumer.statuses(KEY2) == [
            (SymbolState.SYNCING, STARTING_REASON),
            (LIVE, "snapshot applied"),
        ]

        await client.aclose()
        await task  # the iteration ends after aclose
        assert fanout.stats.bad_requests == 0


async def test_bbo_trades_and_status_changes_are_typed_events_stamped_on_receipt() -> None:
    view, fanout = live_fanout(BIDS, ASKS)
    clock = itertools.count(1_700_000_000_000_000_000)
    async with serving(fanout), asyncio.TaskGroup() as tasks:
        client = GatewayClient(
            f"ws://127.0.0.1:{fanout.port}/",
            [KEY],
            channels=["book", "bbo", "trade"],
            clock_ns=lambda: next(clock),
        )
        consumer = Consumer(client, view)
        task = tasks.create_task(consumer.run())
        await consumer.until(lambda e: isinstance(e, BboEvent))
        snapshot = next(e for e in consumer.events if isinstance(e, BookEvent))
        assert snapshot.book.levels(1) == ([("100.00", "1")], [("100.50", "1")])

        fanout.publish([view.delta(KEY, bids=[("100.25", "2")])])  # a new top: a bbo
        fanout.publish([view.delta(KEY, bids=[("99.00", "4")])])  # deeper: no bbo
        fanout.publish([trade(KEY, 7, "100.5", "0.1")])
        fanout.publish([view.status(KEY, LIVE, "snapshot applied")])  # a repeat: nothing
        fanout.publish([view.status(KEY, STALE, "every connection down")])
        await consumer.until(lambda e: isinstance(e, StatusEvent) and e.state is STALE)

        assert [e.kind for e in consumer.events] == [
            "status",
            "snapshot",
            "bbo",
            "delta",
            "bbo",
            "delta",
            "trade",
            "status",
        ]
        bbos = [e for e in consumer.events if isinstance(e, BboEvent)]
        assert [(b.seq, b.bid, b.ask) for b in bbos] == [
            (0, ("100.00", "1"), ("100.50", "1")),
            (1, ("100.25", "2"), ("100.50", "1")),
        ]
        assert bbos[1].spread() == Decimal("0.25")
        (traded,) = [e for e in consumer.events if isinstance(e, TradeEvent)]
        assert (traded.trade_id, traded.price, traded.qty, traded.side, traded.ts_ms) == (
            7,
            "100.5",
            "0.1",
            Side.BUY,
            1_700_000_000_000,
        )
        # Each message stamped once on receipt, in order.
        stamps = [e.recv_ns for e in consumer.events]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        book = client.book(KEY)
        assert book is not None and book.best_bid() == ("100.25", "2")
        assert book.spread() == Decimal("0.25") and client.stats.statuses == 2
        await client.aclose()
        await task


def _notify_on_every_retry(client: GatewayClient) -> StateChanges:
    """A notifier of every backoff step the client takes before a round of connects."""
    retries = StateChanges()
    backoff = client._backoff
    next_delay_s = backoff.next_delay_s

    def counted() -> float:
        delay_s = next_delay_s()
        retries.notify()
        return delay_s

    backoff.next_delay_s = counted  # type: ignore[method-assign]
    return retries


class Following(NamedTuple):
    """A client following ``KEY`` from a fan-out's server, and the tasks involved."""

    client: GatewayClient
    consumer: Consumer
    consuming: asyncio.Task[None]
    server: asyncio.Task[None]

    async def close(self) -> None:
        await self.client.aclose()
        await self.consuming
        self.server.cancel()


async def following(
    tasks: asyncio.TaskGroup,
    fanout: Fanout,
    view: FakeView,
    **options: Any,
) -> Following:
    """A client (``options``) of ``fanout``'s new server, once it holds the first snapshot."""
    server = await start_serving(tasks, fanout, 0)
    client = GatewayClient(
        f"ws://127.0.0.1:{fanout.port}/",
        [KEY],
        backoff_initial_s=0.02,
        backoff_max_s=0.1,
        **options,
    )
    consumer = Consumer(client, view)
    consuming = tasks.create_task(consumer.run())
    await consumer.until(snapshot_of(KEY, 0))
    return Following(client, consumer, consuming, server)


def is_recovery(event: Event) -> bool:
    return isinstance(event, RecoveryEvent)


@pytest.mark.parametrize("wire_format", ["json", "msgpack"])
async def test_client_recovers_every_missed_delta_after_the_connection_drops(
    wire_format: str,
) -> None:
    """The same gateway instance (its server restarted, its fan-out and rings kept): the
    kept book goes on with the deltas it missed, seq-continuous, and no snapshot."""
    view, fanout = live_fanout(BIDS, ASKS)
    async with asyncio.TaskGroup() as tasks:
        f = await following(tasks, fanout, view, wire_format=wire_format)
        client, consumer, port = f.client, f.consumer, fanout.port
        fanout.publish([view.delta(KEY, bids=[("99.90", "1")])])
        await consumer.until(delta_of(KEY, 1))

        f.server.cancel()
        lost = await consumer.until(status_of(KEY))
        assert isinstance(lost, StatusEvent) and lost.state is STALE
        assert client.book(KEY) is None and client.position(KEY) == (1, 1)
        for price in ("98.00", "97.00", "96.00"):  # the book moves on meanwhile
            fanout.publish([view.delta(KEY, bids=[(price, "1")])])

        f = f._replace(server=await start_serving(tasks, fanout, port))
        recovery = await consumer.until(is_recovery)
        assert recovery == RecoveryEvent(KEY, True, 1, 1, fanout.instance, recovery.recv_ns)
        for seq in (2, 3, 4):
            missed = await consumer.until(delta_of(KEY, seq))
            assert isinstance(missed, BookEvent) and missed.recovered
        fanout.publish([view.delta(KEY, asks=[("100.50", "0")])])
        live = await consumer.until(delta_of(KEY, 5))
        assert isinstance(live, BookEvent) and not live.recovered
        assert consumer.seqs(KEY, "snapshot") == [0]  # never re-sent
        assert consumer.seqs(KEY, "delta") == [1, 2, 3, 4, 5]
        book = client.book(KEY)
        assert book is not None and book.normalized() == view.history[KEY, 1, 5]
        assert client.stats.recoveries == 1 and client.stats.recovered_deltas == 3
        assert fanout.stats.recoveries == 1 and fanout.stats.recovered_messages == 3
        await f.close()


def recovery_of(channel: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, RecoveryEvent) and e.channel == channel


def trades_of(consumer: Consumer) -> list[tuple[int, int, bool]]:
    return [(e.trade_id, e.seq, e.recovered) for e in consumer.events if isinstance(e, TradeEvent)]


@pytest.mark.parametrize("wire_format", ["json", "msgpack"])
async def test_client_recovers_every_trade_missed_while_the_connection_was_down(
    wire_format: str,
) -> None:
    """Trades published while the client was away come after the reconnection, each once
    and in order, marked recovered, then the live ones; the book is recovered beside."""
    view, fanout = live_fanout(BIDS, ASKS)
    async with asyncio.TaskGroup() as tasks:
        f = await following(
            tasks, fanout, view, channels=["book", "trade"], wire_format=wire_format
        )
        client, consumer, port = f.client, f.consumer, fanout.port
        fanout.publish([trade(KEY, 1)])
        await consumer.until(lambda e: isinstance(e, TradeEvent))

        f.server.cancel()
        await consumer.until(status_of(KEY))  # stale: the connection is lost
        fanout.publish([trade(KEY, 2), view.delta(KEY, bids=[("99.90", "1")])])
        fanout.publish([trade(KEY, 3), trade(KEY, 4)])

        f = f._replace(server=await start_serving(tasks, fanout, port))
        trades = await consumer.until(recovery_of("trade"))
        assert trades == RecoveryEvent(
            KEY, True, fanout.trade_epoch, 1, fanout.instance, trades.recv_ns, "trade"
        )
        book = await consumer.until(recovery_of("book"))
        assert isinstance(book, RecoveryEvent) and book.recovered
        await consumer.until(lambda e: isinstance(e, TradeEvent) and e.seq == 4)
        fanout.publish([trade(KEY, 5)])
        await consumer.until(lambda e: isinstance(e, TradeEvent) and e.seq == 5)
        assert trades_of(consumer) == [
            (1, 1, False),
            (2, 2, True),
            (3, 3, True),
            (4, 4, True),
            (5, 5, False),
        ]
        assert consumer.seqs(KEY, "delta") == [1] and consumer.seqs(KEY, "snapshot") == [0]
        stats = client.stats
        assert (stats.trade_recoveries, stats.recovered_trades, stats.duplicate_trades) == (1, 3, 0)
        await f.close()


async def test_a_client_back_after_the_trade_ring_moved_on_is_told_the_trades_are_lost() -> None:
    now_s = [0.0]
    view, fanout = live_fanout(BIDS, ASKS, recovery_age_s=10.0, clock_s=lambda: now_s[0])
    async with asyncio.TaskGroup() as tasks:
        f = await following(tasks, fanout, view, channels=["book", "trade"])
        port = fanout.port
        fanout.publish([trade(KEY, 1)])
        await f.consumer.until(lambda e: isinstance(e, TradeEvent))
        f.server.cancel()
        await f.consumer.until(status_of(KEY))
        fanout.publish([trade(KEY, 2)])
        now_s[0] = 11.0  # trade 2 is older than recovery_age_s: gone from the ring
        fanout.publish([trade(KEY, 3)])

        f = f._replace(server=await start_serving(tasks, fanout, port))
        lost = await f.consumer.until(recovery_of("trade"))
        assert isinstance(lost, RecoveryEvent) and not lost.recovered and lost.seq == 1
        fanout.publish([trade(KEY, 4)])
        await f.consumer.until(lambda e: isinstance(e, TradeEvent) and e.seq == 4)
        assert trades_of(f.consumer) == [(1, 1, False), (4, 4, False)]  # none of the gap
        assert f.client.stats.trade_recovery_misses == 1 and f.client.stats.trade_gaps == 0
        assert fanout.stats.trade_recovery_misses == 1
        await f.close()


async def test_a_rate_limited_resync_is_retried_until_the_gateway_answers_it() -> None:
    """A fan-out whose request budget is spent (its clock stands still) refuses the
    client's resync; the client says so and retries, and once the budget refills the
    retry is answered and the book is consistent again."""
    now_s = [0.0]
    view, fanout = live_fanout(
        BIDS, ASKS, request_burst=1, requests_per_s=1.0, clock_s=lambda: now_s[0]
    )
    async with asyncio.TaskGroup() as tasks:
        f = await following(tasks, fanout, view, retry_initial_s=0.005, retry_max_s=0.02)
        client, consumer = f.client, f.consumer
        view.delta(KEY, asks=[("100.50", "0")])  # lost: the client sees a gap
        fanout.publish([view.delta(KEY, asks=[("100.75", "3")])])
        gap = await consumer.until(status_of(KEY))
        assert isinstance(gap, StatusEvent) and gap.state is RESYNCING
        first = await consumer.until(lambda e: isinstance(e, RetryEvent))
        assert isinstance(first, RetryEvent) and (first.op, first.symbol) == ("resync", KEY)
        again = await consumer.until(lambda e: isinstance(e, RetryEvent))
        assert isinstance(again, RetryEvent) and again.attempt == first.attempt + 1
        assert client.book(KEY) is None  # still resyncing, and said so

        now_s[0] = 10.0  # the budget refills: the next retry is answered
        back = await consumer.until(snapshot_of(KEY, 2))
        assert isinstance(back, BookEvent) and back.state is LIVE
        book = client.book(KEY)
        assert book is not None and book.normalized() == view.history[KEY, 1, 2]
        assert client.stats.retries >= 2 and fanout.stats.rate_limited >= 2
        await f.close()


async def test_rate_limited_retries_are_timed_on_the_monotonic_clock_not_the_wall_clock() -> None:
    """The wall clock stands still (as if stepped back) while a refused resync waits: its
    retry is sent all the same once its delay has passed, and answered."""
    now_s = [0.0]
    view, fanout = live_fanout(
        BIDS, ASKS, request_burst=1, requests_per_s=1.0, clock_s=lambda: now_s[0]
    )
    async with asyncio.TaskGroup() as tasks:
        f = await following(
            tasks,
            fanout,
            view,
            retry_initial_s=0.005,
            retry_max_s=0.02,
            clock_ns=lambda: 1_700_000_000_000_000_000,
        )
        view.delta(KEY, asks=[("100.50", "0")])  # lost: the client sees a gap
        fanout.publish([view.delta(KEY, asks=[("100.75", "3")])])
        refused = await f.consumer.until(lambda e: isinstance(e, RetryEvent))
        assert isinstance(refused, RetryEvent) and refused.symbol == KEY
        now_s[0] = 10.0  # the budget refills: the retry, once sent, is answered
        back = await f.consumer.until(snapshot_of(KEY, 2))
        assert isinstance(back, BookEvent) and back.state is LIVE
        assert f.client.stats.retries >= 1
        await f.close()


async def test_a_client_back_after_the_ring_moved_on_gets_a_snapshot() -> None:
    now_s = [0.0]
    view, fanout = live_fanout(BIDS, ASKS, recovery_age_s=10.0, clock_s=lambda: now_s[0])
    async with asyncio.TaskGroup() as tasks:
        f = await following(tasks, fanout, view)
        port = fanout.port
        f.server.cancel()
        await f.consumer.until(status_of(KEY))
        fanout.publish([view.delta(KEY, bids=[("98.00", "1")])])
        now_s[0] = 11.0  # delta 1 is older than recovery_age_s: gone from the ring
        fanout.publish([view.delta(KEY, bids=[("97.00", "1")])])

        f = f._replace(server=await start_serving(tasks, fanout, port))
        recovery = await f.consumer.until(is_recovery)
        assert isinstance(recovery, RecoveryEvent) and not recovery.recovered
        back = await f.consumer.until(snapshot_of(KEY))
        assert isinstance(back, BookEvent) and back.seq == 2 and not back.recovered
        assert fanout.stats.recovery_misses == 1 and fanout.stats.recoveries == 0
        assert f.client.stats.recovery_misses == 1
        await f.close()


async def test_a_client_of_a_restarted_gateway_gets_a_snapshot() -> None:
    """Another gateway instance on the same port: nothing of the old epochs is known, the
    client is told it was not recovered and its book restarts from a snapshot."""
    view, fanout = live_fanout(BIDS, ASKS)
    async with asyncio.TaskGroup() as tasks:
        f = await following(tasks, fanout, view)
        port = fanout.port
        f.server.cancel()
        await f.consumer.until(status_of(KEY))

        restarted = Fanout(view)
        restarted.publish(view.reset(KEY, BIDS, ASKS))  # its own epoch
        assert restarted.instance != fanout.instance
        f = f._replace(server=await start_serving(tasks, restarted, port))
        recovery = await f.consumer.until(is_recovery)
        assert isinstance(recovery, RecoveryEvent) and not recovery.recovered
        assert recovery.instance == restarted.instance
        back = await f.consumer.until(snapshot_of(KEY))
        assert isinstance(back, BookEvent) and (back.epoch, back.seq) == (2, 0)
        assert restarted.stats.recovery_misses == 1
        await f.close()


async def test_client_without_recovery_reconnects_after_the_gateway_restarts() -> None:
    view, fanout = live_fanout(BIDS, ASKS)
    async with asyncio.TaskGroup() as tasks:
        server = await start_serving(tasks, fanout, 0)
        port = fanout.port
        client = GatewayClient(
            f"ws://127.0.0.1:{port}/",
            [KEY],
            recover=False,
            backoff_initial_s=0.02,
            backoff_max_s=0.1,
        )
        retries = _notify_on_every_retry(client)
        consumer = Consumer(client, view)
        consuming = tasks.create_task(consumer.run())
        await consumer.until(snapshot_of(KEY, 0))

        server.cancel()  # the server's stop: 1001, "the gateway is stopping"
        lost = await consumer.until(status_of(KEY))
        assert isinstance(lost, StatusEvent) and lost.state is STALE
        assert lost.reason == GATEWAY_STOPPED and client.stats.gateway_stops == 1
        # The book moves on while the client is away.
        for _ in range(3):
            fanout.publish([view.delta(KEY, bids=[("98.00", "1")])])
        # A few refused reconnects (each round after the first counts a backoff step).
        await wait_until(retries, lambda: client._backoff.failures >= 3)
        assert client.url is None

        server = await start_serving(tasks, fanout, port)
        live = await consumer.until(status_of(KEY))
        assert isinstance(live, StatusEvent) and live.state is LIVE
        back = await consumer.until(snapshot_of(KEY))
        assert isinstance(back, BookEvent) and back.seq == 3 and back.state is LIVE
        fanout.publish([view.delta(KEY, asks=[("100.50", "0")])])
        await consumer.until(delta_of(KEY, 4))
        assert client.stats.connects == 2 and client.stats.disconnects == 1

        await client.aclose()
        await consuming
        server.cancel()


async def test_a_connect_refused_while_the_gateway_stops_is_its_stop_logged_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.io.client")
    _view, fanout = live_fanout(BIDS, ASKS)
    async with asyncio.TaskGroup() as tasks:
        server = await start_serving(tasks, fanout, 0)
        # Draining (no subscriber holds it): every connection is closed at once with 1001.
        assert await fanout.stop(drain_s=1.0) == StopResult(closed=0, aborted=0)
        client = GatewayClient(
            f"ws://127.0.0.1:{fanout.port}/", [KEY], backoff_initial_s=0.01, backoff_max_s=0.02
        )
        retries = _notify_on_every_retry(client)
        consuming = tasks.create_task(Consumer(client, FakeView()).run())
        # Three rounds of connects refused (each round after the first counts a step).
        await wait_until(retries, lambda: client._backoff.failures >= 3)
        await client.aclose()
        await consuming
        server.cancel()
    assert client.stats.gateway_stops >= 3
    logged = [r for r in caplog.records if r.name == "gateway.io.client"]
    assert [r.getMessage() for r in logged if r.levelno >= logging.WARNING] == []
    assert sum(GATEWAY_STOPPED in r.getMessage() for r in logged) >= 3


def _refused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_the_urls_are_tried_in_order_and_a_lost_gateway_fails_over_to_the_next() -> None:
    view, first = live_fanout(BIDS, ASKS)
    second = Fanout(view)
    async with asyncio.TaskGroup() as tasks:
        first_server = await start_serving(tasks, first, 0)
        second_server = await start_serving(tasks, second, 0)
        dead = f"ws://127.0.0.1:{_refused_port()}/"
        urls = [dead, f"ws://127.0.0.1:{first.port}/", f"ws://127.0.0.1:{second.port}/"]
        client = GatewayClient(urls, [KEY], backoff_initial_s=0.02, backoff_max_s=0.1)
        consumer = Consumer(client, view)
        consuming = tasks.create_task(consumer.run())
        await consumer.until(snapshot_of(KEY, 0))
        assert client.url == urls[1]  # the first that accepts

        first_server.cancel()
        lost = await consumer.until(status_of(KEY))
        assert isinstance(lost, StatusEvent) and lost.state is STALE
        await consumer.until(snapshot_of(KEY, 0))
        assert client.url == urls[2]
        assert client.stats.connects == 2 and client.stats.disconnects == 1
        await client.aclose()
        await consuming
        second_server.cancel()


async def test_without_reconnect_the_iteration_ends_and_unknown_symbols_raise() -> None:
    _view, fanout = live_fanout(BIDS, ASKS)
    async with asyncio.TaskGroup() as tasks:
        server = await start_serving(tasks, fanout, 0)
        url = f"ws://127.0.0.1:{fanout.port}/"

        with pytest.raises(GatewayError, match="unknown_symbol"):
            async for _ in subscribe(url, ["nowhere:XYZ"]):
                pass

        kinds = []
        async with GatewayClient(url, [KEY], reconnect=False) as client:
            async for event in client:
                kinds.append((event.kind, client.session.status(KEY)[0]))
                if event.kind == "snapshot":
                    server.cancel()
        assert kinds == [("status", LIVE), ("snapshot", LIVE), ("status", STALE)]

    dead = f"ws://127.0.0.1:{_refused_port()}/"
    with pytest.raises(OSError):
        async with GatewayClient([dead, url], [KEY], reconnect=False) as client:
            await anext(client)


async def test_too_many_subscriptions_raise() -> None:
    _view, fanout = live_fanout(BIDS, ASKS, max_subscriptions=1)
    async with asyncio.TaskGroup() as tasks:
        server = await start_serving(tasks, fanout, 0)
        url = f"ws://127.0.0.1:{fanout.port}/"
        with pytest.raises(GatewayError, match="too_many_subscriptions"):
            async for _ in subscribe(url, [KEY, KEY2], reconnect=False):
                pass
        server.cancel()


TOKEN = "client-token-0123456789"


async def test_a_token_is_sent_as_a_bearer_header_never_in_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The client logs its URLs, and websockets its request lines and headers at DEBUG.
    caplog.set_level(logging.DEBUG)
    _view, fanout = live_fanout(BIDS, ASKS, token=TOKEN)
    async with serving(fanout):
        url = f"ws://127.0.0.1:{fanout.port}/"
        for urls, token in (
            (url, TOKEN),
            (f"{url}?token={TOKEN}", None),  # in the URL: moved into the header
            (f"{url}?token=wrong-token-0123456", TOKEN),  # the argument wins
        ):
            async with GatewayClient(urls, [KEY], token=token, reconnect=False) as client:
                assert client.urls == [url]
                event = await anext(client)
                assert event.symbol == KEY and client.url == url
        # Refused: the error, its message and the log lines name no token.
        for token in ("wrong-token-0123456789", None):
            with pytest.raises(InvalidStatus) as info:
                async with GatewayClient(url, [KEY], token=token, reconnect=False) as client:
                    await anext(client)
            assert info.value.response.status_code == 401
            assert "401" in str(info.value) and "token" not in str(info.value)
    assert fanout.stats.http_refused == {401: 2}
    logged = caplog.text
    assert "Authorization: Bearer ***" in logged and "GET / HTTP/1.1" in logged
    assert "token=" not in logged.replace("token=***", "")
    assert TOKEN not in logged and "wrong-token" not in logged


async def test_a_urls_password_is_used_to_connect_and_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "pass-0123456789"
    _view, fanout = live_fanout(BIDS, ASKS)
    async with serving(fanout):
        url = f"ws://alice:{password}@127.0.0.1:{fanout.port}/"
        shown = f"ws://alice:***@127.0.0.1:{fanout.port}/"
        async with GatewayClient(url, [KEY], reconnect=False) as client:
            assert client.urls == [shown]
            event = await anext(client)
            assert event.symbol == KEY and client.url == shown
    # What the server was sent: the password, as HTTP Basic credentials.
    authorizations: list[str | None] = []

    def record(conn: ServerConnection, request: Request) -> Response:
        authorizations.append(request.headers.get("Authorization"))
        return conn.respond(http.HTTPStatus.UNAUTHORIZED, "no\n")

    async def never_called(conn: ServerConnection) -> None:  # every request gets the 401
        await conn.close()

    async with ws_serving(never_called, process_request=record) as server:
        port = server.sockets[0].getsockname()[1]
        client = GatewayClient(f"ws://alice:{password}@127.0.0.1:{port}/", [KEY], reconnect=False)
        with pytest.raises(InvalidStatus):
            await anext(client)
    credentials = base64.b64encode(f"alice:{password}".encode()).decode()
    assert authorizations == [f"Basic {credentials}"]
    assert "alice:***@127.0.0.1" in caplog.text and password not in caplog.text
    assert credentials not in caplog.text


async def test_a_unix_socket_url_sends_its_token_as_a_header(tmp_path: Path) -> None:
    requests: list[tuple[str, str | None]] = []

    def record(conn: ServerConnection, request: Request) -> Response:
        requests.append((request.path, request.headers.get("Authorization")))
        return conn.respond(http.HTTPStatus.UNAUTHORIZED, "no\n")

    path = str(tmp_path / "gw.sock")
    async with unix_serve(lambda conn: conn.close(), path, process_request=record):
        for url, token in ((f"unix:{path}?token={TOKEN}&x=1", None), (f"unix:{path}", TOKEN)):
            client = GatewayClient(url, [KEY], token=token, reconnect=False)
            assert client.urls == [url.partition("?")[0] + ("?x=1" if "x=1" in url else "")]
            with pytest.raises(InvalidStatus):
                await anext(client)
    assert requests == [("/?x=1", f"Bearer {TOKEN}"), ("/", f"Bearer {TOKEN}")]


def test_the_urls_kept_show_no_password_or_token_in_their_repr() -> None:
    client = GatewayClient(
        ["ws://alice:hunter2@127.0.0.1:1/", f"ws://127.0.0.1:2/?token={TOKEN}"], [KEY]
    )
    shown = repr(client._targets)  # what a log line or a debugger shows of them
    assert "hunter2" not in shown and TOKEN not in shown, shown
    assert [target.token for target in client._targets] == [None, TOKEN]


@pytest.mark.parametrize("urls", [[], ["unix:"], ["unix:?token=x"], ["http://127.0.0.1:8765/"]])
def test_urls_other_than_websocket_ones_are_refused(urls: list[str]) -> None:
    with pytest.raises(ValueError, match="URL"):
        GatewayClient(urls, [KEY])


async def test_a_later_gateways_values_and_message_types_keep_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A scripted later gateway (on loopback) sends a new message type, a new state, a
    trade side and an error code this client does not know: the connection stays, the
    symbol is not live meanwhile, each is counted and logged once; a subscribe refused
    with an unknown code raises."""
    later: list[dict[str, Any]] = [
        {"type": "subscribed", "symbols": [KEY], "channels": ["book", "trade"]},
        {"type": "status", "symbol": KEY, "state": "live", "reason": ""},
        {"type": "snapshot", "symbol": KEY, "epoch": 1, "seq": 0, "id": 1,
         "bids": [["100", "1"]], "asks": [["101", "1"]]},
        {"type": "funding", "symbol": KEY, "rate": "0.0001"},
        {"type": "status", "symbol": KEY, "state": "halted", "reason": "venue halt"},
        {"type": "trade", "symbol": KEY, "id": 9, "price": "100.5", "qty": "1",
         "side": "auction", "ts_ms": 1, "epoch": 4, "seq": 1},
        {"type": "delta", "symbol": KEY, "epoch": 1, "seq": 1, "id": 2,
         "bids": [["100", "2"]], "asks": []},
        {"type": "funding", "symbol": KEY, "rate": "0.0002"},
        {"type": "error", "code": "entitlement_expiring", "message": "renew soon"},
        {"type": "status", "symbol": KEY, "state": "live", "reason": ""},
        {"type": "delta", "symbol": KEY, "epoch": 1, "seq": 2, "id": 3,
         "bids": [["100", "3"]], "asks": []},
    ]  # fmt: skip
    refusal = [{"type": "error", "code": "entitlement_required", "message": "no entitlement"}]

    def gateway(replies: list[dict[str, Any]]) -> Callable[[ServerConnection], Awaitable[None]]:
        async def answer(conn: ServerConnection) -> None:
            await conn.recv()  # the subscribe
            for reply in replies:
                await conn.send(json.dumps(reply))
            await conn.wait_closed()

        return answer

    async with ws_serving(gateway(later)) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        events: list[Event] = []
        async with GatewayClient(url, [KEY], channels=["book", "trade"]) as client:
            async for event in client:
                events.append(event)
                if isinstance(event, BookEvent) and event.seq == 2:
                    break
            stats = client.stats
            assert (stats.connects, stats.disconnects, stats.bad_messages) == (1, 0, 0)
            assert (stats.unknown_messages, stats.unknown_states) == (2, 1)
            assert (stats.unknown_sides, stats.unknown_error_codes) == (1, 1)
    halted = UnknownValue("halted")
    assert [(e.kind, getattr(e, "state", None)) for e in events] == [
        ("status", LIVE),
        ("snapshot", LIVE),
        ("status", halted),
        ("trade", None),
        ("delta", halted),
        ("status", LIVE),
        ("delta", LIVE),
    ]
    trade = events[3]
    assert isinstance(trade, TradeEvent) and trade.side == UnknownValue("auction")
    logged = [r.getMessage() for r in caplog.records if "unknown to this client" in r.message]
    assert len([line for line in logged if "'funding'" in line]) == 1
    assert any("entitlement_expiring" in r.getMessage() for r in caplog.records)

    async with ws_serving(gateway(refusal)) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        with pytest.raises(GatewayError, match="entitlement_required"):
            async for _ in subscribe(url, [KEY]):
                pass
