"""Coalescing: a subscriber's messages of one loop turn go out in one transport write,
frames intact and in order; the pending bytes count for the slow-subscriber policy."""

from __future__ import annotations

import msgspec

from gateway.wire.protocol import Delta
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import Subscribed
from tests.harness import wait_until

from .fanout_helpers import KEY
from .fanout_helpers import RawClient
from .fanout_helpers import levels
from .fanout_helpers import live_fanout
from .fanout_helpers import serving

SUBSCRIBE = msgspec.json.encode({"op": "subscribe", "symbols": [KEY]}).decode()


async def test_messages_of_one_turn_go_out_in_one_write_per_subscriber() -> None:
    view, fanout = live_fanout(levels(5, 95, -1), levels(5, 105, 1))
    async with serving(fanout):
        clients = [await RawClient.connect(fanout.port) for _ in range(3)]
        for client in clients:
            await client.send(SUBSCRIBE)
            assert isinstance(await client.message(), Subscribed)
            assert isinstance(await client.message(), Status)
            assert isinstance(await client.message(), Snapshot)
        writes, sent = fanout.stats.writes, fanout.stats.messages_sent
        for i in range(16):  # 16 publishes in one turn: no await in between
            fanout.publish([view.delta(KEY, bids=[(f"90.{i:02d}", "1")])])
        for client in clients:
            seqs = []
            for _ in range(16):
                msg = await client.message()
                assert isinstance(msg, Delta)
                seqs.append(msg.seq)
            assert seqs == list(range(1, 17)), "frames intact and in order"
            await client.close()
        assert fanout.stats.messages_sent - sent == 3 * 16
        assert fanout.stats.writes - writes == 3, "one write per subscriber"


async def test_pending_bytes_count_for_the_slow_subscriber_policy() -> None:
    """Within one turn nothing reaches the transport, yet the subscriber falls behind once
    its pending frames pass ``max_buffer_bytes``; it is conflated when they have drained."""
    view, fanout = live_fanout(
        levels(5, 95, -1), levels(5, 105, 1), max_buffer_bytes=2000, max_behind_s=30
    )
    async with serving(fanout):
        client = await RawClient.connect(fanout.port)
        async with client:
            await client.send(SUBSCRIBE)
            for _ in range(3):
                await client.message()
            for i in range(40):  # about 110 B each: behind after about 18
                fanout.publish([view.delta(KEY, bids=[(f"90.{i:02d}", "1")])])
            assert fanout.stats.conflations == 1 and fanout.stats.dropped > 0
            last = view.books[KEY].seq
            seqs = []
            while True:
                msg = await client.message()
                if isinstance(msg, Snapshot):
                    break
                if isinstance(msg, Delta):
                    seqs.append(msg.seq)
            assert seqs == list(range(1, len(seqs) + 1)) and 0 < len(seqs) < 40
            assert (msg.seq, msg.bids[0]) == (last, ("95.00", "1.00000000"))
            await wait_until(fanout.changes, lambda: not fanout.subscriber_stats()[0].behind)
            assert fanout.stats.slow_disconnects == 0
