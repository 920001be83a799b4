"""The simulated Kraken v2 venue: frames parse with feeds.kraken; a client that truncates to
the subscribed depth verifies every checksum and ends with the top of the true book."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect

from feeds import kraken
from feeds.sim.book_process import BookProcess
from feeds.sim.connection import ConnState
from feeds.sim.kraken import HEARTBEAT
from feeds.sim.kraken import KrakenProtocol
from feeds.sim.simulators import SimKraken
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Trade
from gateway.core.model import VenueNotice

from .conftest import frames_until
from .conftest import rendered_steps

SYMBOL = "BTC/USD"


def _check_numbers(frame: bytes) -> None:
    """Every price and qty is a fixed-point JSON number: never a string, never 1e-05."""
    assert b'"price":"' not in frame and b'"qty":"' not in frame
    for match in re.finditer(rb'"(price|qty)":([^,}]+)', frame):
        assert re.fullmatch(rb"\d+\.\d+", match.group(2)), match.group(0)


@pytest.mark.parametrize("depth", [10, 25])
def test_rendered_frames_parse_and_keep_a_truncated_replica_on_checksum(depth: int) -> None:
    proc = BookProcess(SYMBOL, 3, mid=60_000.0, tick="0.1", min_levels_per_side=20)
    protocol = KrakenProtocol(price_precision=1)
    protocol.attach({SYMBOL: proc})
    state = ConnState("/v2")
    frames: list[bytes] = []
    for message in kraken.subscribe_messages([SYMBOL], depth):
        frames += protocol.on_message(state, message, time.time_ns())
    events = [e for f in frames for e in kraken.parse(f, 0, 0)]
    assert [type(e) for e in events] == [VenueNotice, DepthSnapshot, VenueNotice]
    snap = events[1]
    assert isinstance(snap, DepthSnapshot)
    assert len(snap.bids) == len(snap.asks) == depth
    book = L2Book()
    book.load(snap.bids, snap.asks)
    assert kraken.book_checksum(book) == snap.checksum
    n_updates = n_trades = n_moved_in = 0
    for batch, rendered in rendered_steps(protocol, proc, state, 300):
        for _, frame in rendered:
            _check_numbers(frame)
            for event in kraken.parse(frame, 0, 0):
                if isinstance(event, Trade):
                    n_trades += 1
                    continue
                assert isinstance(event, DepthDiff)
                before = {p for p, _ in book.bids()} | {p for p, _ in book.asks()}
                book.apply(event.bids, event.asks)
                kraken.truncate_to_depth(book, depth)
                assert kraken.book_checksum(book) == event.checksum
                n_updates += 1
                batch_prices = {p for p, _ in batch.bids + batch.asks}
                for price, _ in event.bids + event.asks:
                    if price not in before and price + "0000000" not in batch_prices:
                        n_moved_in += 1  # untouched deeper level that entered the top
        truth = protocol.format_level
        assert book.bids() == [truth(SYMBOL, lv) for lv in proc.book.bids(depth)]
        assert book.asks() == [truth(SYMBOL, lv) for lv in proc.book.asks(depth)]
    assert n_updates > 50 and n_trades > 0 and n_moved_in > 0
    assert b'"method":"pong"' in protocol.on_message(state, kraken.ping_message(7), 0)[0]


def _is_pong(raw: bytes) -> bool:
    return b'"method":"pong"' in raw


async def _follow(
    ws: ClientConnection, pongs: int, depth: int, heartbeat: asyncio.Event
) -> tuple[L2Book, int, int]:
    """Rebuild the book with truncation, checking every checksum; counts snapshots and
    updates until the ``pongs``-th pong; sets ``heartbeat`` on the first heartbeat."""
    book = L2Book()
    snapshots = updates = 0
    async for raw in frames_until(ws, _is_pong, pongs):
        if raw == HEARTBEAT:
            heartbeat.set()
        for event in kraken.parse(raw, time.monotonic_ns(), 0):
            if isinstance(event, DepthSnapshot):
                book.load(event.bids, event.asks)
                snapshots += 1
            elif isinstance(event, DepthDiff):
                assert snapshots, "an update before the snapshot"
                book.apply(event.bids, event.asks)
                updates += 1
            else:
                continue
            kraken.truncate_to_depth(book, depth)
            assert kraken.book_checksum(book) == event.checksum
    return book, snapshots, updates


async def test_two_endpoints_books_equal_the_top_of_the_true_book_and_resubscribe_resnapshots() -> (
    None
):
    async with SimKraken(
        [SYMBOL, "ETH/USD"], n_endpoints=2, interval_s=0.01, heartbeat_interval_s=0.1
    ) as sim:
        heartbeats = [asyncio.Event(), asyncio.Event()]
        async with connect(sim.v2_urls[0]) as ws0, connect(sim.v2_urls[1]) as ws1:
            for ws in (ws0, ws1):
                for message in kraken.subscribe_messages([SYMBOL]):
                    await ws.send(message, text=True)
                await ws.send(kraken.ping_message(), text=True)
            follow = [
                asyncio.create_task(_follow(ws, 2, 10, heartbeat))
                for ws, heartbeat in zip((ws0, ws1), heartbeats, strict=True)
            ]
            await sim.wait_steps(20)
            for message in kraken.resubscribe_messages(SYMBOL):
                await ws1.send(message, text=True)
            await sim.wait_steps(20)
            for heartbeat in heartbeats:  # subscribed connections get heartbeats
                await heartbeat.wait()
            sim.pause()
            # The second pong comes after every update sent before the pause.
            for ws in (ws0, ws1):
                await ws.send(kraken.ping_message(), text=True)
            results = await asyncio.gather(*follow)
        truth = sim.true_book(SYMBOL)
        for book, _, updates in results:
            assert book.bids() == truth.bids(10) and book.asks() == truth.asks(10)
            assert updates > 5
        assert [snapshots for _, snapshots, _ in results] == [1, 2]
        assert sim.last_id(SYMBOL) is None
