"""The simulated OKX venue: frames parse with feeds.okx, loopback books equal the truth."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from feeds import okx
from feeds.sim.book_process import BookProcess
from feeds.sim.connection import ConnState
from feeds.sim.okx import OkxProtocol
from feeds.sim.simulators import SimOkx
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Trade
from gateway.core.model import VenueNotice

from .conftest import frames_until
from .conftest import rendered_steps

SYMBOL = "BTC-USDT"


def test_rendered_frames_parse_back_to_the_same_levels_ids_and_checksums() -> None:
    proc = BookProcess(SYMBOL, 7, mid=60_000.0, tick="0.1")
    protocol = OkxProtocol(price_decimals=1)
    protocol.attach({SYMBOL: proc})
    state = ConnState(okx.WS_ENDPOINTS[0])
    frames = protocol.on_message(state, okx.subscribe_messages([SYMBOL])[0], time.time_ns())
    events = [e for f in frames for e in okx.parse(f, 0, 0)]
    assert [type(e) for e in events] == [VenueNotice, DepthSnapshot, VenueNotice]
    snap = events[1]
    assert isinstance(snap, DepthSnapshot)
    assert snap.last_id == proc.last_id
    book = L2Book()
    book.load(snap.bids, snap.asks)
    assert okx.book_checksum(book) == snap.checksum
    last = snap.last_id
    n_trades = 0
    for batch, rendered in rendered_steps(protocol, proc, state, 200):
        for pub, frame in rendered:
            assert frame == pub.frame
            for event in okx.parse(frame, 0, 0):
                if isinstance(event, Trade):
                    n_trades += 1
                    continue
                assert isinstance(event, DepthDiff)
                assert event.prev_id == last and event.last_id == batch.last_id > last
                assert len(event.bids) == len(batch.bids)
                assert len(event.asks) == len(batch.asks)
                book.apply(event.bids, event.asks)
                assert okx.book_checksum(book) == event.checksum
                last = event.last_id
    assert n_trades > 0
    assert book.normalized() == proc.book.normalized()
    assert protocol.on_message(state, "ping", 0) == [b"pong"]
    assert okx.parse(b"pong", 0, 0) == []


async def _follow(ws: ClientConnection, pongs: int) -> tuple[L2Book, list[int]]:
    """Rebuild the book from the snapshot and updates, checking ids and every checksum,
    until the ``pongs``-th pong."""
    book = L2Book()
    last = -2
    ids: list[int] = []
    async for raw in frames_until(ws, lambda raw: raw == b"pong", pongs):
        for event in okx.parse(raw, time.monotonic_ns(), 0):
            if isinstance(event, DepthSnapshot):
                book.load(event.bids, event.asks)
                last = event.last_id
            elif isinstance(event, DepthDiff):
                assert event.prev_id == last
                book.apply(event.bids, event.asks)
                last = event.last_id
                ids.append(last)
            else:
                continue
            assert okx.book_checksum(book) == event.checksum
    return book, ids


async def test_two_endpoints_send_the_same_ids_and_the_books_equal_the_true_book() -> None:
    async with SimOkx([SYMBOL, "ETH-USDT"], n_endpoints=2, interval_s=0.01) as sim:
        async with (
            connect(sim.public_urls[0]) as ws0,
            connect(sim.public_urls[1]) as ws1,
        ):
            for ws in (ws0, ws1):
                for message in okx.subscribe_messages([SYMBOL]):
                    await ws.send(message, text=True)
                await ws.send("ping", text=True)
            follow = [asyncio.create_task(_follow(ws, 2)) for ws in (ws0, ws1)]
            await sim.wait_steps(40)
            sim.pause()
            # The second pong comes after every update sent before the pause.
            for ws in (ws0, ws1):
                await ws.send("ping", text=True)
            (book0, ids0), (book1, ids1) = await asyncio.gather(*follow)
        truth = sim.true_book(SYMBOL)
        assert book0.bids() == truth.bids() and book0.asks() == truth.asks()
        assert book1.bids() == truth.bids() and book1.asks() == truth.asks()
        common = set(ids0) & set(ids1)
        assert len(common) > 5
        assert ids0[-1] == ids1[-1] == sim.last_id(SYMBOL)
        assert sim.stats(0).frames_sent > 0 and sim.stats(1).connections_accepted == 1


async def test_closed_endpoint_refuses_and_reopens_on_the_same_port() -> None:
    async with SimOkx([SYMBOL], n_endpoints=2, interval_s=0.05) as sim:
        url = sim.public_urls[1]
        await sim.close_endpoint(1)
        assert not sim.is_open(1)
        with pytest.raises(OSError):
            async with connect(url):
                pass
        await sim.open_endpoint(1)
        assert sim.public_urls[1] == url
        async with connect(url) as ws:
            await ws.send(okx.subscribe_messages([SYMBOL])[0], text=True)
            kinds = []
            for _ in range(3):
                kinds += [type(e) for e in okx.parse(await ws.recv(decode=False), 0, 0)]
            assert DepthSnapshot in kinds
        with pytest.raises(InvalidStatus):
            async with connect(sim.endpoint_urls[0] + "/nope"):
                pass


async def test_run_serves_as_a_task_until_cancelled_and_answers_ping() -> None:
    sim = SimOkx([SYMBOL], n_endpoints=1, interval_s=0.05)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(sim.run(ready))
        await ready.wait()
        async with connect(sim.public_urls[0]) as ws:
            await ws.send("ping", text=True)
            assert await ws.recv() == "pong"
        task.cancel()
    assert not sim.is_open(0)
