"""Depth-N book streams through the fan-out: each depth's subscribers hold the full book's
top N after every message, on their own gap-free seq, encoded once per depth."""

from __future__ import annotations

import contextlib
import random

import msgspec
import pytest

from gateway.core.book import L2Book
from gateway.core.model import BookDelta
from gateway.core.model import Level
from gateway.io import fanout as fanout_module
from gateway.io.fanout import Fanout
from gateway.wire.protocol import Delta
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import Subscribed

from .fanout_helpers import KEY
from .fanout_helpers import RawClient
from .fanout_helpers import levels
from .fanout_helpers import live_fanout
from .fanout_helpers import serving

DEPTHS = (1, 3, None)


def sub(depth: int | None) -> str:
    return msgspec.json.encode({"op": "subscribe", "symbols": [KEY], "depth": depth}).decode()


def _cut(book: L2Book, depth: int | None) -> L2Book:
    cut = L2Book()
    cut.load(book.bids(depth), book.asks(depth))
    return cut


async def _subscribe(fanout: Fanout, depth: int | None) -> tuple[RawClient, Snapshot]:
    client = await RawClient.connect(fanout.port)
    await client.send(sub(depth))
    assert isinstance(await client.message(), Subscribed)
    assert isinstance(await client.message(), Status)
    snap = await client.message()
    assert isinstance(snap, Snapshot)
    return client, snap


def _random_update(rng: random.Random) -> tuple[list[Level], list[Level]]:
    def side(low: int) -> list[Level]:
        return [
            (f"{low + rng.randrange(12)}.00", rng.choice(["0", "1", "2"]))
            for _ in range(rng.randrange(4))
        ]

    return side(90), side(103)


async def test_each_depth_holds_the_full_books_top_n_after_every_message() -> None:
    """Random publishes of one to three deltas; the subscribers check their book after
    each message against the full book at the message's ``id``."""
    rng = random.Random(5)

    view, fanout = live_fanout(levels(8, 95, -1), levels(8, 105, 1))
    history = {view.books[KEY].venue_id: _cut(view.books[KEY].book, None)}
    async with serving(fanout), contextlib.AsyncExitStack() as stack:
        clients = {}
        for depth in DEPTHS:
            client, snap = await _subscribe(fanout, depth)
            await stack.enter_async_context(client)
            book = L2Book()
            book.load(snap.bids, snap.asks)
            clients[depth] = (client, book, [snap.seq])
        for _ in range(60):
            batch = []
            for _ in range(rng.randint(1, 3)):
                batch.append(view.delta(KEY, *_random_update(rng)))
                history[view.books[KEY].venue_id] = _cut(view.books[KEY].book, None)
            fanout.publish(batch)
        final_id = view.books[KEY].venue_id
        fanout.publish([view.delta(KEY, bids=[("102.00", "9")])])  # the best bid: in every top N
        for depth, (client, book, seqs) in clients.items():
            while True:
                msg = await client.message()
                assert isinstance(msg, Delta), msg
                assert msg.seq == seqs[-1] + 1, "every depth's seq has no gap"
                seqs.append(msg.seq)
                book.apply(msg.bids, msg.asks)
                if msg.id > final_id:
                    break
                assert book.normalized() == _cut(history[msg.id], depth).normalized()
                if depth is not None:
                    assert book.bid_count <= depth and book.ask_count <= depth
        full_seqs = clients[None][2]
        assert len(clients[1][2]) < len(clients[3][2]) < len(full_seqs), (
            "changes beyond a depth send it nothing"
        )


async def test_a_change_beyond_the_depth_sends_nothing_and_one_inside_follows_on() -> None:
    view, fanout = live_fanout(levels(5, 95, -1), levels(5, 105, 1))
    async with serving(fanout):
        client, snap = await _subscribe(fanout, 2)
        async with client:
            assert snap.bids == [("95.00", "1.00000000"), ("94.00", "1.00000000")]
            fanout.publish([view.delta(KEY, bids=[("92.00", "5")])])  # beyond the top 2
            fanout.publish([view.delta(KEY, bids=[("95.00", "0")])])  # 93 comes in
            delta = await client.message()
            assert isinstance(delta, Delta)
            assert (delta.seq, delta.id) == (snap.seq + 1, snap.id + 2)
            assert sorted(delta.bids) == [("93.00", "1.00000000"), ("95.00", "0")]
            assert delta.asks == ()


async def test_each_depth_is_computed_and_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[ServerMessage] = []
    real_json = fanout_module._frame_json

    def count_json(msg: ServerMessage) -> bytes:
        encoded.append(msg)
        return real_json(msg)

    monkeypatch.setattr(fanout_module, "_frame_json", count_json)

    view, fanout = live_fanout(levels(5, 95, -1), levels(5, 105, 1))
    async with serving(fanout), contextlib.AsyncExitStack() as stack:
        clients = []
        for depth in (2, 2, 2, 4, 4, None):
            client, _ = await _subscribe(fanout, depth)
            clients.append(await stack.enter_async_context(client))
        encoded.clear()
        batch: list[BookDelta] = [
            view.delta(KEY, bids=[("94.00", "7")]),
            view.delta(KEY, bids=[("92.00", "3")]),  # inside the top 4 only
        ]
        fanout.publish(batch)
        deltas = [msg for msg in encoded if isinstance(msg, Delta)]
        # Full book: two deltas; depth 2 and depth 4: one each, for the whole publish.
        assert sorted(len(d.bids) for d in deltas) == [1, 1, 1, 2]
        for client in clients:
            assert isinstance(await client.message(), Delta)
