"""The recovery rings (book deltas and trades): all-or-nothing positions, eviction by bytes
and by age, the instance."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.model import Side
from gateway.wire.protocol import JSON_SAFE_MAX
from gateway.wire.protocol import Delta
from gateway.wire.protocol import TradeMsg
from gateway.wire.protocol import encode_json
from gateway.wire.recovery import INSTANCE_NONCE_BITS
from gateway.wire.recovery import TRADE_BASE_COST
from gateway.wire.recovery import M
from gateway.wire.recovery import RecoveryRing
from gateway.wire.recovery import delta_cost
from gateway.wire.recovery import message_cost
from gateway.wire.recovery import new_instance
from gateway.wire.recovery import recovered_copy

KEY = "binance:BTCUSDT"


def delta(epoch: int, seq: int, n_levels: int = 1) -> Delta:
    bids = tuple((f"{100 - i}.00", "1.5") for i in range(n_levels))
    return Delta(KEY, epoch, seq, 1000 + seq, bids, (), 1_700_000_000_000, 5, 7)


def trade(epoch: int, seq: int, qty: str = "0.5") -> TradeMsg:
    return TradeMsg(KEY, 9000 + seq, "100.25", qty, Side.SELL, 1_700_000_000_000, 5, 7, epoch, seq)


def live_delta(epoch: int, seq: int, n_levels: int) -> Delta:
    """A delta as the fan-out stores it: fresh strings and numbers of a venue's size."""
    bids = tuple((f"{60000 + seq + i / 100:.8f}", f"{i / 1000 + 0.5:.8f}") for i in range(n_levels))
    times = (
        1_700_000_000_000 + seq,
        1_700_000_000_000_000_000 + seq,
        1_700_000_000_000_000_001 + seq,
    )
    return Delta(KEY, epoch, seq, 40_000_000_000 + seq, bids, (), *times)


def live_trade(epoch: int, seq: int) -> TradeMsg:
    """A trade as the fan-out stores it: fresh strings and numbers of a venue's size."""
    return TradeMsg(
        KEY,
        3_000_000_000 + seq,
        f"{60000 + seq / 100:.8f}",
        f"{seq / 1000:.8f}",
        Side.BUY,
        1_700_000_000_000 + seq,
        1_700_000_000_000_000_000 + seq,
        1_700_000_000_000_000_001 + seq,
        epoch,
        seq,
    )


def filled(ring: RecoveryRing[Delta], epoch: int, seqs: range, now_s: float = 0.0) -> None:
    ring.restart(epoch, seqs.start - 1)
    for seq in seqs:
        ring.append(delta(epoch, seq), now_s)


def test_since_returns_every_delta_after_the_position_or_nothing() -> None:
    ring = RecoveryRing(max_bytes=1 << 20, max_age_s=60.0)
    assert ring.since(7, 0, 0.0) is None  # no epoch yet
    filled(ring, 7, range(1, 11))
    got = ring.since(7, 4, 0.0)
    assert got is not None and [e.msg.seq for e in got] == list(range(5, 11))
    at_snapshot = ring.since(7, 0, 0.0)
    assert at_snapshot is not None and len(at_snapshot) == 10
    assert ring.since(7, 10, 0.0) == []  # up to date: nothing missed, recovered
    assert ring.since(7, 11, 0.0) is None  # a position the stream never had
    assert ring.since(6, 4, 0.0) is None  # another epoch (or another instance's)


def test_a_new_epoch_or_a_delta_that_does_not_follow_restarts_the_ring() -> None:
    ring = RecoveryRing(max_bytes=1 << 20, max_age_s=60.0)
    filled(ring, 7, range(1, 6))
    ring.restart(8, 0)
    assert ring.since(7, 3, 0.0) is None and ring.since(8, 0, 0.0) == [] and ring.bytes == 0
    ring.append(delta(8, 1), 0.0)
    ring.append(delta(8, 3), 0.0)  # seq 2 never stored: nothing up to 3 can be served
    assert ring.since(8, 1, 0.0) is None
    assert ring.since(8, 3, 0.0) == []


def test_eviction_by_bytes_keeps_the_newest_and_moves_the_floor() -> None:
    cost = delta_cost(delta(1, 1))
    ring = RecoveryRing(max_bytes=cost * 4, max_age_s=60.0)
    filled(ring, 1, range(1, 11))
    assert ring.bytes == cost * 4 and len(ring.entries) == 4 and ring.evicted == 6
    assert ring.floor_seq == 6
    assert ring.since(1, 5, 0.0) is None  # delta 6 is gone: no partial recovery
    got = ring.since(1, 6, 0.0)
    assert got is not None and [e.msg.seq for e in got] == [7, 8, 9, 10]


def test_eviction_by_age_with_an_injected_clock() -> None:
    ring = RecoveryRing(max_bytes=1 << 20, max_age_s=10.0)
    ring.restart(1, 0)
    for seq in range(1, 6):
        ring.append(delta(1, seq), float(seq))  # stored at t = 1..5 s
    assert ring.since(1, 0, 10.5) is not None  # every entry at most 10 s old
    assert ring.since(1, 0, 12.5) is None  # t=1 and t=2 expired
    got = ring.since(1, 2, 12.5)
    assert got is not None and [e.msg.seq for e in got] == [3, 4, 5]
    assert ring.since(1, 5, 100.0) == []  # all expired, but nothing was missed
    assert ring.bytes == 0 and ring.evicted == 5


def test_recovered_frames_are_encoded_once_per_format_and_counted() -> None:
    ring = RecoveryRing(max_bytes=1 << 20, max_age_s=60.0)
    filled(ring, 1, range(1, 3))
    entries = ring.since(1, 0, 0.0)
    assert entries is not None
    builds: list[Delta] = []

    def build(msg: Delta) -> bytes:
        builds.append(msg)
        return encode_json(msg)

    before = ring.bytes
    first = ring.frame(entries[0], False, build)
    again = ring.frame(entries[0], False, build)
    assert first is again and len(builds) == 1
    assert builds[0] == recovered_copy(entries[0].msg) and builds[0].recovered is True
    assert msgspec.json.decode(first)["recovered"] is True
    assert ring.bytes == before + len(first)


@given(
    st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=200),
    st.integers(min_value=0, max_value=4000),
    st.lists(st.integers(min_value=0, max_value=200), max_size=5),
)
def test_the_ring_never_holds_more_than_its_bound_and_serves_contiguous_runs(
    level_counts: list[int], max_bytes: int, positions: list[int]
) -> None:
    ring = RecoveryRing(max_bytes=max_bytes, max_age_s=1e9)
    ring.restart(3, 0)
    for seq, n_levels in enumerate(level_counts, start=1):
        ring.append(delta(3, seq, n_levels), 0.0)
        assert ring.bytes <= max_bytes
        assert ring.bytes == sum(e.cost for e in ring.entries)
    for position in positions:
        got = ring.since(3, position, 0.0)
        if got is None:
            assert not ring.floor_seq <= position <= ring.last_seq
        else:
            assert [e.msg.seq for e in got] == list(range(position + 1, ring.last_seq + 1))
            for entry in got:
                ring.frame(entry, True, msgspec.msgpack.encode)
                assert ring.bytes <= max_bytes


def test_instances_differ_and_their_epochs_do_not_follow_the_wall_clock() -> None:
    start_ns = 1_796_000_000_123_456_789
    first = new_instance(start_ns, 1)
    twin = new_instance(start_ns, 2)
    # The clock stepped back across a restart: the earlier process's epochs do not recur.
    stepped_back = new_instance(start_ns - 10**9, 3)
    assert len({first.id, twin.id, stepped_back.id}) == 3
    assert len({first.epoch_base, twin.epoch_base, stepped_back.epoch_base}) == 3


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_an_instance_epoch_base_leaves_2_to_the_52_rebuilds_below_the_json_safe_max(
    start_ns: int, nonce: int
) -> None:
    base = new_instance(start_ns, nonce).epoch_base
    assert 0 <= base < 2**INSTANCE_NONCE_BITS
    assert base + 2**52 <= JSON_SAFE_MAX
    assert new_instance(start_ns, nonce) == new_instance(start_ns, nonce)


def test_a_trade_ring_serves_the_trades_after_a_position_marked_recovered() -> None:
    ring: RecoveryRing[TradeMsg] = RecoveryRing(max_bytes=1 << 20, max_age_s=60.0)
    ring.restart(42, 0)
    for seq in range(1, 6):
        ring.append(trade(42, seq), 0.0)
    got = ring.since(42, 2, 0.0)
    assert got is not None and [e.msg.seq for e in got] == [3, 4, 5]
    assert ring.since(41, 2, 0.0) is None  # another process's trade epoch
    assert message_cost(trade(42, 1)) == TRADE_BASE_COST + len("100.25") + len("0.5")
    frame = ring.frame(got[0], False, encode_json)
    decoded = msgspec.json.decode(frame)
    assert (decoded["type"], decoded["seq"], decoded["recovered"]) == ("trade", 3, True)


@given(
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=40), st.floats(min_value=0, max_value=5)),
        min_size=1,
        max_size=150,
    ),
    st.integers(min_value=0, max_value=6000),
    st.floats(min_value=0, max_value=30),
    st.lists(st.integers(min_value=0, max_value=160), max_size=6),
)
def test_a_trade_ring_is_bounded_and_serves_each_trade_once_in_order_or_nothing(
    trades: list[tuple[int, float]],
    max_bytes: int,
    max_age_s: float,
    positions: list[int],
) -> None:
    """Trades of growing sizes at growing times: after every append the ring holds at most
    ``max_bytes`` and nothing older than ``max_age_s``; any position is served with every
    trade after it, in seq order and each once, or not at all (None) when one is gone."""
    ring: RecoveryRing[TradeMsg] = RecoveryRing(max_bytes=max_bytes, max_age_s=max_age_s)
    ring.restart(7, 0)
    now_s = 0.0
    for seq, (qty_len, step_s) in enumerate(trades, start=1):
        now_s += step_s
        ring.append(trade(7, seq, "1" * qty_len), now_s)
        assert ring.bytes <= max_bytes
        assert ring.bytes == sum(e.cost for e in ring.entries)
        assert all(e.stored_s >= now_s - max_age_s for e in ring.entries)
    last = len(trades)
    for position in positions:
        got = ring.since(7, position, now_s)
        kept = [e.msg.seq for e in ring.entries]
        if got is None:
            # Served exactly when every trade after the position is still held.
            assert position > last or (position + 1 not in kept and position < last)
        else:
            assert [e.msg.seq for e in got] == list(range(position + 1, last + 1))


def taken_and_counted(ring: RecoveryRing[M], make: Callable[[int], M]) -> tuple[int, int]:
    """Bytes that 2000 messages ``make(seq)`` take once appended to ``ring``, as
    tracemalloc measures them, and the ring's own count of them."""
    ring.restart(7, 0)
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(1, 2001):
            ring.append(make(seq), 0.0)
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()
    assert len(ring.entries) == 2000
    return taken, ring.bytes


@pytest.mark.parametrize("n_levels", [1, 10, 100])
def test_a_delta_rings_count_of_bytes_is_the_memory_its_deltas_take(n_levels: int) -> None:
    """``recovery_bytes`` bounds memory: what a ring counts is within a quarter of what its
    deltas and entries take."""
    ring: RecoveryRing[Delta] = RecoveryRing(max_bytes=1 << 40, max_age_s=1e9)
    taken, counted = taken_and_counted(ring, lambda seq: live_delta(7, seq, n_levels))
    assert 0.8 <= taken / counted <= 1.25, (taken, counted)


def test_a_trade_rings_count_of_bytes_is_the_memory_its_trades_take() -> None:
    ring: RecoveryRing[TradeMsg] = RecoveryRing(max_bytes=1 << 40, max_age_s=1e9)
    taken, counted = taken_and_counted(ring, lambda seq: live_trade(7, seq))
    assert 0.8 <= taken / counted <= 1.25, (taken, counted)
