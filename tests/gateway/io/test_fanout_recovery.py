"""The fan-out's recovery on the wire (recovered deltas, recovered:false snapshots, the
depth rule, the memory bound) and the latency fields of deltas, bbo and trades in JSON and
MessagePack."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest
from websockets.frames import Opcode

from gateway.core.model import SymbolState
from gateway.io.fanout import Fanout
from gateway.wire.config import ServerConfig
from gateway.wire.protocol import Bbo, Delta, Snapshot, Status, Subscribed, TradeMsg
from gateway.wire.recovery import delta_cost

from .fanout_helpers import KEY, KEY2, FakeView, RawClient, live_fanout, plain, sub, trade

if TYPE_CHECKING:
    from tests.gateway.conftest import Run
    from tests.gateway.io.conftest import Serving

BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1"), ("101.00", "2")]
SEND_NS = 1_796_000_000_000_000_123


@pytest.mark.parametrize("wire_format", ["json", "msgpack"])
def test_deltas_bbo_and_trades_carry_venue_receive_and_send_times(
    wire_format: str, run: Run, serving: Serving
) -> None:
    async def main() -> None:
        view, fanout = live_fanout(BIDS, ASKS, clock_ns=lambda: SEND_NS)
        async with serving(fanout):
            client = await RawClient.connect(fanout.port)
            async with client:
                await client.send(sub([KEY], channels=["book", "bbo", "trade"], format=wire_format))
                for _ in range(4):  # subscribed, status, snapshot, bbo
                    await client.message()
                fanout.publish(
                    [
                        view.delta(KEY, asks=[("100.40", "1")], recv_ns=111, event_ms=1_700),
                        trade(KEY, 9, recv_ns=222),
                    ]
                )
                opcode, payload, _ = await client.frame()
                assert opcode == (Opcode.TEXT if wire_format == "json" else Opcode.BINARY)
                raw = (
                    msgspec.json.decode(payload)
                    if wire_format == "json"
                    else msgspec.msgpack.decode(payload)
                )
                # On the wire under these names, whatever the encoding.
                assert (raw["event_ms"], raw["recv_ns"], raw["send_ns"]) == (1_700, 111, SEND_NS)
                assert "recovered" not in raw  # only re-sent deltas say so
                trade_msg = await client.message()
                assert isinstance(trade_msg, TradeMsg)
                assert (trade_msg.recv_ns, trade_msg.send_ns) == (222, SEND_NS)
                bbo = await client.message()
                assert isinstance(bbo, Bbo)
                assert (bbo.event_ms, bbo.recv_ns, bbo.send_ns) == (1_700, 111, SEND_NS)

    run(main)


def test_send_ns_is_read_once_per_publish() -> None:
    reads: list[int] = []

    def clock_ns() -> int:
        reads.append(len(reads))
        return len(reads)

    view, fanout = live_fanout(BIDS, ASKS, clock_ns=clock_ns)
    before = len(reads)
    fanout.publish([view.delta(KEY, bids=[("99.00", "1")]) for _ in range(5)])
    assert len(reads) == before + 1
    ring = fanout.rings[KEY]
    assert {e.msg.send_ns for e in ring.entries} == {before + 1}


def test_recovery_replies_name_the_instance_and_the_recovered_symbols(
    run: Run, serving: Serving
) -> None:
    """One request recovers KEY (its deltas follow, marked) and not KEY2 (a position of
    another epoch: a snapshot marked recovered:false)."""

    async def main() -> None:
        view, fanout = live_fanout(BIDS, ASKS)
        fanout.publish(view.reset(KEY2, BIDS, ASKS))
        for price in ("99.00", "98.00"):
            fanout.publish([view.delta(KEY, bids=[(price, "1")])])
        async with serving(fanout):
            client = await RawClient.connect(fanout.port)
            async with client:
                recover = {KEY: {"epoch": 1, "seq": 0}, KEY2: {"epoch": 99, "seq": 0}}
                await client.send(sub([KEY, KEY2], recover=recover))
                reply = await client.message()
                assert reply == Subscribed([KEY, KEY2], ["book"], fanout.instance, [KEY])
                assert plain(await client.message()) == Status(
                    KEY, SymbolState.LIVE, "snapshot applied"
                )
                got = [await client.message() for _ in range(2)]
                assert [(m.seq, m.recovered) for m in got if isinstance(m, Delta)] == [
                    (1, True),
                    (2, True),
                ]
                assert plain(await client.message()) == Status(
                    KEY2, SymbolState.LIVE, "snapshot applied"
                )
                snap = await client.message()
                assert isinstance(snap, Snapshot) and snap.symbol == KEY2
                assert snap.recovered is False
                fanout.publish([view.delta(KEY, bids=[("97.00", "1")])])
                live = await client.message()
                assert isinstance(live, Delta) and live.seq == 3 and live.recovered is None
                assert (fanout.stats.recoveries, fanout.stats.recovery_misses) == (1, 1)

    run(main)


def test_depth_limited_subscriptions_get_a_snapshot_not_a_recovery(
    run: Run, serving: Serving
) -> None:
    async def main() -> None:
        view, fanout = live_fanout(BIDS, ASKS)
        fanout.publish([view.delta(KEY, bids=[("99.00", "1")])])
        async with serving(fanout):
            client = await RawClient.connect(fanout.port)
            async with client:
                await client.send(sub([KEY], depth=1, recover={KEY: {"epoch": 1, "seq": 0}}))
                reply = await client.message()
                assert isinstance(reply, Subscribed) and reply.recovered == []
                await client.message()  # status
                snap = await client.message()
                assert isinstance(snap, Snapshot) and snap.recovered is False
                assert len(snap.bids) == 1 and snap.seq == 1

    run(main)


def test_the_rings_memory_is_bounded_and_recovery_can_be_off() -> None:
    view, fanout = live_fanout(BIDS, ASKS, recovery_bytes=10_000)
    for i in range(500):
        fanout.publish([view.delta(KEY, bids=[(f"{90 + i % 7}.00", str(i))])])
    ring = fanout.rings[KEY]
    assert 0 < ring.bytes <= 10_000
    assert len(ring.entries) == ring.bytes // delta_cost(ring.entries[0].msg)
    assert ring.last_seq == 500 and ring.evicted == 500 - len(ring.entries)

    view2 = FakeView()
    off = Fanout(view2, ServerConfig(recovery_bytes=0))
    off.publish(view2.reset(KEY, BIDS, ASKS))
    off.publish([view2.delta(KEY, bids=[("99.00", "1")])])
    assert off.rings == {}
