"""The fan-out's recovery on the wire (recovered deltas, recovered:false snapshots, the
depth rule, the memory bound, recovered trades, the trades a slow subscriber missed) and
the latency fields of deltas, bbo and trades in JSON and MessagePack."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from websockets.frames import Opcode

from gateway.core.model import SymbolState
from gateway.io.fanout import Fanout
from gateway.wire.config import ServerConfig
from gateway.wire.protocol import Bbo
from gateway.wire.protocol import Delta
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import Subscribed
from gateway.wire.protocol import TradeMsg
from gateway.wire.recovery import delta_cost
from tests.harness import wait_until

from .fanout_helpers import KEY
from .fanout_helpers import KEY2
from .fanout_helpers import FakeView
from .fanout_helpers import RawClient
from .fanout_helpers import flood_until
from .fanout_helpers import live_fanout
from .fanout_helpers import plain
from .fanout_helpers import serving
from .fanout_helpers import sub
from .fanout_helpers import trade

BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1"), ("101.00", "2")]
SEND_NS = 1_796_000_000_000_000_123


@pytest.mark.parametrize("wire_format", ["json", "msgpack"])
async def test_deltas_bbo_and_trades_carry_venue_receive_and_send_times(wire_format: str) -> None:
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


async def test_recovery_replies_name_the_instance_and_the_recovered_symbols() -> None:
    """One request recovers KEY (its deltas follow, marked) and not KEY2 (a position of
    another epoch: a snapshot marked recovered:false)."""
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


async def test_depth_limited_subscriptions_get_a_snapshot_not_a_recovery() -> None:
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


async def test_trades_missed_while_away_are_replayed_in_order_before_the_live_ones() -> None:
    """A trade subscriber learns where the trade stream starts, goes away while trades
    are published, and comes back naming that position: every trade it missed follows,
    marked, in seq order, each once, then the live ones."""
    _, fanout = live_fanout(BIDS, ASKS, clock_ns=lambda: SEND_NS)
    fanout.publish([trade(KEY, 1)])  # before anyone subscribed: numbered all the same
    async with serving(fanout):
        first = await RawClient.connect(fanout.port)
        async with first:
            await first.send(sub([KEY], channels=["trade"]))
            reply = await first.message()
            assert isinstance(reply, Subscribed) and reply.recovered_trades == []
            start = reply.trade_positions[KEY]
            assert (start.epoch, start.seq) == (fanout.trade_epoch, 1)
            await first.message()  # status
            fanout.publish([trade(KEY, 2)])
            got = await first.message()
            assert isinstance(got, TradeMsg) and (got.epoch, got.seq) == (start.epoch, 2)
        fanout.publish([trade(KEY, 10 + i, qty=f"0.{i + 1}") for i in range(3)])

        back = await RawClient.connect(fanout.port)
        async with back:
            recover_trades = {KEY: {"epoch": start.epoch, "seq": 2}}
            await back.send(sub([KEY], channels=["trade"], recover_trades=recover_trades))
            reply = await back.message()
            assert isinstance(reply, Subscribed) and reply.recovered_trades == [KEY]
            await back.message()  # status
            missed = [await back.message() for _ in range(3)]
            assert [(m.id, m.seq, m.recovered) for m in missed if isinstance(m, TradeMsg)] == [
                (10, 3, True),
                (11, 4, True),
                (12, 5, True),
            ]
            fanout.publish([trade(KEY, 13)])
            live = await back.message()
            assert isinstance(live, TradeMsg) and (live.seq, live.recovered) == (6, None)
    stats = fanout.stats
    assert (stats.trade_recoveries, stats.recovered_trades, stats.trade_recovery_misses) == (
        1,
        3,
        0,
    )


@pytest.mark.parametrize("moved_on", ["evicted", "other_epoch", "recovery_off"])
async def test_a_trade_recovery_the_ring_cannot_serve_says_so_and_replays_nothing(
    moved_on: str,
) -> None:
    """Never a silent partial: the symbol is left out of ``recovered_trades`` and no trade
    of the gap is sent (the client learns from ``trade_positions`` how far the stream is)."""
    recovery_bytes = {"evicted": 2_000, "other_epoch": 1 << 20, "recovery_off": 0}[moved_on]
    _, fanout = live_fanout(BIDS, ASKS, recovery_bytes=recovery_bytes)
    for i in range(1, 41):  # far more than 2000 bytes of trades
        fanout.publish([trade(KEY, i)])
    epoch = fanout.trade_epoch + (1 if moved_on == "other_epoch" else 0)
    async with serving(fanout):
        client = await RawClient.connect(fanout.port)
        async with client:
            recover_trades = {KEY: {"epoch": epoch, "seq": 1}}
            await client.send(sub([KEY], channels=["trade", "bbo"], recover_trades=recover_trades))
            reply = await client.message()
            assert isinstance(reply, Subscribed) and reply.recovered_trades == []
            at = reply.trade_positions[KEY]
            assert (at.epoch, at.seq) == (fanout.trade_epoch, 40)
            assert isinstance(await client.message(), Status)
            assert isinstance(await client.message(), Bbo)  # the current top, then live only
            fanout.publish([trade(KEY, 41)])
            live = await client.message()
            assert isinstance(live, TradeMsg) and (live.seq, live.recovered) == (41, None)
    assert (fanout.stats.trade_recoveries, fanout.stats.trade_recovery_misses) == (0, 1)
    if recovery_bytes:
        assert 0 < fanout.trade_rings[KEY].bytes <= recovery_bytes
    else:
        assert fanout.trade_rings == {}


def test_every_trade_is_numbered_and_kept_from_the_first() -> None:
    _, fanout = live_fanout(BIDS, ASKS)
    fanout.publish([trade(KEY, 7), trade(KEY2, 8), trade(KEY, 9)])
    kept = fanout.trade_rings[KEY].since(fanout.trade_epoch, 0, 0.0)
    assert kept is not None and [(e.msg.id, e.msg.seq) for e in kept] == [(7, 1), (9, 2)]
    other = fanout.trade_rings[KEY2].since(fanout.trade_epoch, 0, 0.0)
    assert other is not None and [(e.msg.id, e.msg.seq) for e in other] == [(8, 1)]


def test_a_restart_at_a_repeated_clock_reading_does_not_serve_the_last_process_trades() -> None:
    """The clock stepped back across a restart: the new process reads the old start time
    again, yet its trade epoch is another, so an old position is not served from it."""
    _, first = live_fanout(BIDS, ASKS, clock_ns=lambda: SEND_NS)
    _, restarted = live_fanout(BIDS, ASKS, clock_ns=lambda: SEND_NS)
    first.publish([trade(KEY, 7)])
    restarted.publish([trade(KEY, 8), trade(KEY, 9)])
    assert first.trade_epoch != restarted.trade_epoch
    assert restarted.trade_rings[KEY].since(first.trade_epoch, 1, 0.0) is None
    assert restarted.instance != first.instance


# --- the trades a slow subscriber missed ---------------------------------------------------------


async def _fall_behind(fanout: Fanout, view: FakeView) -> RawClient:
    """A book and trade subscriber that reads nothing: it gets trade 1, then big deltas
    until it is behind."""
    slow = await RawClient.connect(fanout.port, rcvbuf_bytes=4096)
    await slow.send(sub([KEY], channels=["book", "trade"]))
    await wait_until(fanout.changes, lambda: fanout.stats.messages_sent >= 3)
    fanout.publish([trade(KEY, 1)])
    await flood_until(fanout, view, lambda: fanout.stats.conflations >= 1)
    return slow


async def _read_until(client: RawClient, last: Callable[[ServerMessage], bool]) -> list[TradeMsg]:
    """The trades ``client`` reads until the message for which ``last`` holds."""
    trades: list[TradeMsg] = []
    while True:
        msg = await client.message()
        if isinstance(msg, TradeMsg):
            trades.append(msg)
        if last(msg):
            return trades


def _trade(seq: int) -> Callable[[ServerMessage], bool]:
    return lambda msg: isinstance(msg, TradeMsg) and msg.seq == seq


@pytest.mark.async_timeout_s(40)
async def test_trades_missed_while_behind_are_replayed_once_in_order_before_the_live_ones() -> None:
    """500 trades dropped while the subscriber is behind follow its catch-up from the trade
    ring, marked; the replay is written like any message, so it falls behind again (it is
    far more than the buffer) and goes on at the next catch-up, each trade once."""
    view, fanout = live_fanout(
        BIDS,
        ASKS,
        max_buffer_bytes=32 * 1024,
        max_conflations=100,
        max_behind_s=30.0,
        clock_s=lambda: 0.0,  # frozen: no deadline passes, no ring entry ages
    )
    async with serving(fanout):
        slow = await _fall_behind(fanout, view)
        async with slow:
            fanout.publish([trade(KEY, 100 + seq) for seq in range(2, 502)])
            behind = fanout.subscriber_stats()[0]
            assert behind.behind and fanout.stats.conflation_replayed_trades == 0
            got = await _read_until(slow, _trade(501))
            assert not fanout.subscriber_stats()[0].behind, "written, so live"
            fanout.publish([trade(KEY, 999)])
            got += await _read_until(slow, _trade(502))
    assert [(t.seq, t.id, t.recovered) for t in got] == [
        (1, 1, None),
        *[(seq, 100 + seq, True) for seq in range(2, 502)],
        (502, 999, None),
    ]
    assert fanout.stats.conflation_replayed_trades == 500
    assert fanout.stats.conflations >= 2, "the replay counts against the buffer limit"
    assert (fanout.stats.conflation_trade_misses, fanout.stats.slow_disconnects) == (0, 0)


@pytest.mark.async_timeout_s(40)
async def test_trades_missed_while_behind_that_the_ring_no_longer_holds_are_not_sent() -> None:
    """All or nothing: the ring lost the oldest of the missed trades, so none is sent; the
    next live trade's seq shows the gap."""
    view, fanout = live_fanout(
        BIDS,
        ASKS,
        max_buffer_bytes=32 * 1024,
        max_behind_s=30.0,
        recovery_bytes=2_000,  # a few trades
        clock_s=lambda: 0.0,
    )
    async with serving(fanout):
        slow = await _fall_behind(fanout, view)
        async with slow:
            fanout.publish([trade(KEY, 100 + seq) for seq in range(2, 42)])
            ring = fanout.trade_rings[KEY]
            assert ring.floor_seq > 1 and ring.last_seq == 41, "the ring holds the last few"
            # The catch-up's snapshot, and with it the decision: nothing of the gap.
            got = await _read_until(slow, lambda msg: isinstance(msg, Snapshot) and msg.seq > 0)
            assert fanout.stats.conflation_trade_misses == 1
            fanout.publish([trade(KEY, 999)])
            got += await _read_until(slow, _trade(42))
    assert [(t.seq, t.id, t.recovered) for t in got] == [(1, 1, None), (42, 999, None)]
    assert fanout.stats.conflation_replayed_trades == 0
