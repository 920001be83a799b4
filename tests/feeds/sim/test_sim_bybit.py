"""The simulated Bybit venue: frames parse with feeds.bybit; loopback books equal the truth."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect

from feeds import bybit
from feeds.sim.book_process import BookProcess
from feeds.sim.bybit import BybitProtocol
from feeds.sim.connection import ConnState
from feeds.sim.simulators import SimBybit
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Trade
from gateway.core.model import VenueNotice

from .conftest import frames_until
from .conftest import rendered_steps

SYMBOL = "BTCUSDT"
DEPTH = 50


@pytest.mark.parametrize("venue", [bybit.SPOT, bybit.LINEAR])
def test_rendered_frames_parse_back_with_consecutive_u_and_the_top_of_the_book(venue: str) -> None:
    category = bybit.CATEGORIES[venue]
    proc = BookProcess(SYMBOL, 5, mid=60_000.0)
    protocol = BybitProtocol(category, price_decimals=2, qty_decimals=5)
    protocol.attach({SYMBOL: proc})
    state = ConnState(protocol.path)
    frames: list[bytes] = []
    for message in bybit.subscribe_messages([SYMBOL], DEPTH):
        frames += protocol.on_message(state, message, time.time_ns())
    events = [e for f in frames for e in bybit.parse(f, 0, 0, venue)]
    assert [type(e) for e in events] == [VenueNotice, DepthSnapshot]
    snap = events[1]
    assert isinstance(snap, DepthSnapshot) and not snap.reset
    book = L2Book()
    book.load(snap.bids, snap.asks)
    last = snap.last_id
    n_trades = 0
    for _, rendered in rendered_steps(protocol, proc, state, 200):
        for _, frame in rendered:
            for event in bybit.parse(frame, 0, 0, venue):
                if isinstance(event, Trade):
                    n_trades += 1
                    continue
                assert isinstance(event, DepthDiff)
                assert event.last_id == last + 1
                last = event.last_id
                book.apply(event.bids, event.asks)
        fmt = protocol.format_level
        assert book.bids() == [fmt(SYMBOL, lv) for lv in proc.book.bids(DEPTH)]
        assert book.asks() == [fmt(SYMBOL, lv) for lv in proc.book.asks(DEPTH)]
    assert n_trades > 0 and last == protocol.u(SYMBOL, DEPTH)
    pong = protocol.on_message(state, bybit.ping_message("p1"), 0)
    assert bybit.parse(pong[0], 0, 0, venue) == []


def _is_pong(raw: bytes) -> bool:
    return b'"op":"ping"' in raw


async def _follow(ws: ClientConnection, pongs: int, venue: str) -> tuple[L2Book, list[int]]:
    """Rebuild the book, checking that ``u`` grows by 1, until the ``pongs``-th pong."""
    book = L2Book()
    ids: list[int] = []
    async for raw in frames_until(ws, _is_pong, pongs):
        for event in bybit.parse(raw, time.monotonic_ns(), 0, venue):
            if isinstance(event, DepthSnapshot):
                book.load(event.bids, event.asks)
                ids.append(event.last_id)
            elif isinstance(event, DepthDiff):
                assert ids and event.last_id == ids[-1] + 1
                book.apply(event.bids, event.asks)
                ids.append(event.last_id)
    return book, ids


async def test_two_linear_endpoints_send_the_same_u_and_the_books_equal_the_true_book() -> None:
    async with SimBybit([SYMBOL], n_endpoints=2, interval_s=0.01, category="linear") as sim:
        async with connect(sim.public_urls[0]) as ws0, connect(sim.public_urls[1]) as ws1:
            for ws in (ws0, ws1):
                for message in bybit.subscribe_messages([SYMBOL], DEPTH):
                    await ws.send(message, text=True)
                await ws.send(bybit.ping_message(), text=True)
            follow = [asyncio.create_task(_follow(ws, 2, bybit.LINEAR)) for ws in (ws0, ws1)]
            await sim.wait_steps(40)
            sim.pause()
            # The second pong comes after every push sent before the pause.
            for ws in (ws0, ws1):
                await ws.send(bybit.ping_message(), text=True)
            (book0, ids0), (book1, ids1) = await asyncio.gather(*follow)
        truth = sim.true_book(SYMBOL)
        for book in (book0, book1):
            assert book.bids() == truth.bids(DEPTH) and book.asks() == truth.asks(DEPTH)
        assert ids0[-1] == ids1[-1] == sim.u(SYMBOL, DEPTH) == sim.last_id(SYMBOL)
        assert len(ids0) > 5
        with pytest.raises(OSError):
            await sim.close_endpoint(0)
            async with connect(sim.public_urls[0]):
                pass
