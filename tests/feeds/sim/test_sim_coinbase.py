"""The simulated Coinbase Advanced Trade venue: frames parse with feeds.coinbase, every
connection numbers its own messages, loopback books equal the truth."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect

from feeds import coinbase
from feeds.sim.book_process import BookProcess
from feeds.sim.coinbase import CoinbaseProtocol
from feeds.sim.connection import ConnState
from feeds.sim.limits import SimLimits
from feeds.sim.simulators import SimCoinbase
from gateway.core.book import L2Book
from gateway.core.model import ConnectionSequence
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Trade
from gateway.core.model import VenueNotice

from .conftest import frames_until

SYMBOL = "BTC-USD"


def test_rendered_frames_parse_back_with_a_per_connection_sequence() -> None:
    proc = BookProcess(SYMBOL, 9, mid=60_000.0)
    protocol = CoinbaseProtocol(price_decimals=2)
    protocol.attach({SYMBOL: proc})
    states = [ConnState("/"), ConnState("/")]
    books = [L2Book(), L2Book()]
    seqs: list[list[int]] = [[], []]
    n_trades = 0

    def feed(i: int, frame: bytes) -> None:
        nonlocal n_trades
        for event in coinbase.parse(frame, 0, i):
            if isinstance(event, ConnectionSequence):
                seqs[i].append(event.seq)
            elif isinstance(event, DepthSnapshot):
                books[i].load(event.bids, event.asks)
            elif isinstance(event, DepthDiff):
                books[i].apply(event.bids, event.asks)
            elif isinstance(event, Trade):
                n_trades += 1
            else:
                assert isinstance(event, VenueNotice) and event.kind == "ack"

    # Connection 1 subscribes to heartbeats first, so its numbers differ from connection 0's.
    messages = coinbase.subscribe_messages([SYMBOL])
    for i, order in enumerate((messages, messages[::-1])):
        for message in order:
            for frame in protocol.on_message(states[i], message, time.time_ns()):
                feed(i, frame)
    for step in range(150):
        batch = proc.step()
        pubs = [] if batch is None else protocol.on_batch(SYMBOL, batch, time.time_ns())
        if step % 10 == 0:
            pubs += protocol.on_heartbeat(time.time_ns())
        for pub in pubs:
            for i, state in enumerate(states):
                rendered = protocol.frame_for(state, pub)
                assert rendered is not None
                feed(i, rendered)
    for i in (0, 1):
        assert seqs[i] == list(range(len(seqs[i])))
        fmt = protocol.format_level
        assert books[i].bids() == [fmt(SYMBOL, lv) for lv in proc.book.bids()]
        assert books[i].asks() == [fmt(SYMBOL, lv) for lv in proc.book.asks()]
    assert n_trades > 0


#: A request the venue answers with an error frame: a barrier behind what was queued.
BARRIER = b'{"type":"barrier"}'
#: Stop the heartbeats of a connection (they go on while the venue is paused).
NO_HEARTBEATS = b'{"type":"unsubscribe","channel":"heartbeats"}'


def _is_barrier(raw: bytes) -> bool:
    return raw.startswith(b'{"type":"error"')


async def _follow(ws: ClientConnection) -> tuple[L2Book, int, list[int]]:
    """Rebuild the book and collect every ``sequence_num`` until the barrier's answer."""
    book = L2Book()
    snapshots = 0
    seqs: list[int] = []
    async for raw in frames_until(ws, _is_barrier):
        for event in coinbase.parse(raw, time.monotonic_ns(), 0):
            if isinstance(event, ConnectionSequence):
                seqs.append(event.seq)
            elif isinstance(event, DepthSnapshot):
                book.load(event.bids, event.asks)
                snapshots += 1
            elif isinstance(event, DepthDiff):
                assert snapshots
                book.apply(event.bids, event.asks)
    return book, snapshots, seqs


async def test_two_endpoints_books_equal_the_true_book_and_resubscribe_resnapshots() -> None:
    # The two connections send more than Coinbase's 8 messages per second per address,
    # which is not the subject here.
    async with SimCoinbase(
        [SYMBOL, "ETH-USD"],
        n_endpoints=2,
        interval_s=0.01,
        heartbeat_interval_s=0.05,
        limits=SimLimits(),
    ) as sim:
        async with connect(sim.endpoint_urls[0]) as ws0, connect(sim.endpoint_urls[1]) as ws1:
            for ws in (ws0, ws1):
                for message in coinbase.subscribe_messages([SYMBOL]):
                    await ws.send(message, text=True)
            follow = [asyncio.create_task(_follow(ws)) for ws in (ws0, ws1)]
            await sim.wait_steps(20)
            for message in coinbase.resubscribe_messages(SYMBOL):
                await ws1.send(message, text=True)
            await sim.wait_steps(20)
            sim.pause()
            for ws in (ws0, ws1):
                await ws.send(NO_HEARTBEATS, text=True)
                await ws.send(BARRIER, text=True)
            results = await asyncio.gather(*follow)
        await sim.wait_connections(1, 0)
        truth = sim.true_book(SYMBOL)
        for book, _, seqs in results:
            assert book.bids() == truth.bids() and book.asks() == truth.asks()
            assert seqs == list(range(len(seqs))) and len(seqs) > 10
        assert [snapshots for _, snapshots, _ in results] == [1, 2]
        # Every frame of the connection is numbered, but the barrier's error.
        assert sim.stats(1).frames_sent == len(results[1][2]) + 1
