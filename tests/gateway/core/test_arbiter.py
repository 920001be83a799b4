"""SequencedBook and TradeDedup: the pure arbitration core, without an event loop."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from collections.abc import Sequence

import pytest

from feeds.binance import BinanceSpotRule
from feeds.binance_usdm import BinanceFuturesRule
from gateway.core.arbiter import ArbiterLimits
from gateway.core.arbiter import TradeDedup
from gateway.core.book import L2Book
from gateway.core.model import ArbiterEvent
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import ReconnectWanted
from gateway.core.model import Side
from gateway.core.model import SnapshotWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import Trade
from gateway.core.model import TradeOut
from gateway.core.sequenced import SequencedBook
from tests.gateway.core import arbiter_streams as streams

KEY = "binance:BTCUSDT"
WINDOW_NS = 100_000_000


diff = functools.partial(streams.diff, symbol="BTCUSDT")
snap = functools.partial(streams.snap, symbol="BTCUSDT")


def kinds(events: Sequence[ArbiterEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def synced(last_id: int = 100, conns: tuple[int, ...] = (0, 1, 2)) -> SequencedBook:
    arb = SequencedBook(KEY, BinanceSpotRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS))
    for c in conns:
        arb.on_connection(c, True, 0)
    arb.on_diff(diff(last_id - 1, last_id, conn=conns[0]), 0)
    events = arb.on_snapshot(snap(last_id), 0)
    assert isinstance(events[0], BookReset)
    return arb


def test_initial_sync_buffers_diffs_and_drops_those_older_than_the_snapshot() -> None:
    arb = SequencedBook(KEY, BinanceSpotRule())
    arb.on_connection(0, True, 0)
    out = arb.on_diff(diff(95, 98, bids=[("99", "2")]), 0)
    assert out == [SnapshotWanted(KEY, "initial sync")]
    assert arb.on_diff(diff(99, 103, bids=[("100", "5")]), 0) == []
    assert arb.on_diff(diff(104, 104, asks=[("102", "1")]), 0) == []
    out = arb.on_snapshot(snap(100), 0)
    assert kinds(out) == ["BookReset", "StatusChange"]
    reset = out[0]
    assert isinstance(reset, BookReset)
    # The reset publishes the book after the buffered diffs that link.
    assert (reset.epoch, reset.seq, reset.venue_id) == (1, 0, 104)
    assert arb.book.bids() == [("100", "5")]
    assert arb.book.asks() == [("101", "1"), ("102", "1")]
    assert arb.stats.stale == 1 and arb.stats.duplicates == 0
    assert arb.state is SymbolState.LIVE


def test_first_copy_wins_and_later_copies_are_duplicates_per_connection() -> None:
    arb = synced(100)
    out = arb.on_diff(diff(101, 102, conn=1, bids=[("100", "3")]), 1)
    assert kinds(out) == ["BookDelta"]
    delta = out[0]
    assert isinstance(delta, BookDelta)
    assert (delta.seq, delta.venue_id, delta.bids) == (1, 102, (("100", "3"),))
    assert arb.on_diff(diff(101, 102, conn=0, bids=[("100", "3")]), 2) == []
    assert arb.on_diff(diff(101, 102, conn=2, bids=[("100", "3")]), 3) == []
    assert arb.stats.conn(1).first_wins == 1
    assert arb.stats.conn(0).duplicates == 1 and arb.stats.conn(2).duplicates == 1
    assert arb.stats.duplicates == 2


def test_differently_batched_copies_are_arbitrated_by_id_coverage() -> None:
    arb = synced(100)
    assert kinds(arb.on_diff(diff(101, 102, conn=0), 0)) == ["BookDelta"]
    # Another connection batched 101..104 into one event: it overlaps and links.
    out = arb.on_diff(diff(101, 104, conn=1, asks=[("101", "0")]), 0)
    assert kinds(out) == ["BookDelta"]
    assert arb.applied_id == 104 and arb.book.asks() == []
    assert arb.on_diff(diff(103, 104, conn=0), 0) == []
    assert arb.stats.duplicates == 1


def test_future_update_waits_for_the_missing_ids_from_another_connection() -> None:
    arb = synced(100)
    arb.on_diff(diff(101, 101, conn=0), 0)
    # Connection 0 skipped 102; connection 1 has not delivered 102 yet.
    assert arb.on_diff(diff(103, 103, conn=0), 10) == []
    assert arb.pending == 1
    assert arb.deadline_ns() == 10 + WINDOW_NS
    out = arb.on_diff(diff(102, 102, conn=1), 20)
    assert [e.seq for e in out if isinstance(e, BookDelta)] == [2, 3]
    assert arb.applied_id == 103 and arb.pending == 0 and arb.stats.gaps == 0
    assert arb.deadline_ns() is None


def test_gap_is_declared_at_once_when_every_connection_is_past_the_hole() -> None:
    arb = synced(100)
    arb.on_diff(diff(101, 101, conn=0), 0)
    assert arb.on_diff(diff(103, 103, conn=0), 0) == []
    assert arb.on_diff(diff(103, 103, conn=1), 0) == []
    out = arb.on_diff(diff(104, 104, conn=2), 0)
    assert kinds(out) == ["StatusChange", "SnapshotWanted"]
    assert out[0] == StatusChange(
        KEY, SymbolState.RESYNCING, "gap 102: ids missing on every connection"
    )
    assert arb.stats.gaps == 1 and arb.state is SymbolState.RESYNCING
    # A second hole while resyncing does not ask again.
    assert arb.on_diff(diff(106, 106, conn=0), 0) == []
    out = arb.on_snapshot(snap(104), 0)
    assert kinds(out) == ["BookReset", "StatusChange"]
    assert out[0] == BookReset(KEY, 2, 0, 104, 0)
    assert arb.stats.resyncs == 1


def test_gap_is_declared_when_the_reorder_window_passes() -> None:
    arb = synced(100)
    arb.on_diff(diff(102, 102, conn=0), 1_000)
    assert arb.on_timer(1_000 + WINDOW_NS - 1) == []
    out = arb.on_timer(1_000 + WINDOW_NS)
    assert kinds(out) == ["StatusChange", "SnapshotWanted"]
    assert arb.stats.gaps == 1


def test_a_snapshot_older_than_every_stream_is_not_published_and_another_is_wanted() -> None:
    arb = SequencedBook(KEY, BinanceSpotRule())
    arb.on_connection(0, True, 0)
    arb.on_diff(diff(200, 210), 0)
    out = arb.on_snapshot(snap(150), 0)
    assert out == [SnapshotWanted(KEY, "snapshot older than the stream")]
    assert arb.stats.snapshots_unused == 1 and arb.stats.gaps == 0
    out = arb.on_snapshot(snap(205), 0)
    assert isinstance(out[0], BookReset) and out[0].venue_id == 210


def test_snapshots_are_ignored_while_the_book_is_built() -> None:
    arb = synced(100)
    assert arb.on_snapshot(snap(500), 0) == []
    assert arb.applied_id == 100 and arb.stats.snapshots_unused == 1


def test_a_snapshot_before_any_diff_builds_the_book() -> None:
    arb = SequencedBook(KEY, BinanceSpotRule())
    arb.on_connection(0, True, 0)
    out = arb.on_snapshot(snap(100), 0)
    assert kinds(out) == ["BookReset", "StatusChange"]
    assert kinds(arb.on_diff(diff(99, 101), 0)) == ["BookDelta"]


def test_all_connections_down_is_stale_and_the_next_applied_update_is_live() -> None:
    arb = synced(100, conns=(0, 1))
    assert arb.on_connection(0, False, 0) == []
    out = arb.on_connection(1, False, 0)
    assert out == [StatusChange(KEY, SymbolState.STALE, "every upstream connection down")]
    arb.on_connection(1, True, 0)
    out = arb.on_diff(diff(101, 101, conn=1), 0)
    assert kinds(out) == ["BookDelta", "StatusChange"]
    assert out[1] == StatusChange(KEY, SymbolState.LIVE, "upstream back")


def test_reconnect_after_missed_ids_resyncs_once() -> None:
    arb = synced(100, conns=(0,))
    arb.on_connection(0, False, 0)
    arb.on_connection(0, True, 0)
    out = arb.on_diff(diff(150, 151, conn=0), 0)
    assert kinds(out) == ["StatusChange", "SnapshotWanted"]
    assert arb.stats.resyncs == 1


def test_a_full_reorder_buffer_is_a_gap_and_stays_bounded() -> None:
    arb = SequencedBook(KEY, BinanceSpotRule(), ArbiterLimits(max_pending=4))
    arb.on_connection(0, True, 0)
    arb.on_connection(1, True, 0)  # silent, so the gap is never certain
    arb.on_diff(diff(99, 100, conn=0), 0)
    arb.on_snapshot(snap(100), 0)
    for i in range(4):
        assert arb.on_diff(diff(110 + i, 110 + i), 0) == []
    out = arb.on_diff(diff(120, 120), 0)
    assert kinds(out) == ["StatusChange", "SnapshotWanted"]
    assert arb.pending == 4 and arb.stats.pending_dropped == 1
    for i in range(10):
        arb.on_diff(diff(130 + i, 130 + i), 0)
    assert arb.pending == 4


def test_a_bad_level_does_not_touch_the_book_and_another_copy_repairs_it() -> None:
    arb = synced(100)
    before = arb.book.normalized()
    assert arb.on_diff(diff(101, 101, conn=0, bids=[("100", "nan")]), 0) == []
    assert arb.book.normalized() == before and arb.stats.bad_updates == 1
    out = arb.on_diff(diff(101, 101, conn=1, bids=[("100", "7")]), 0)
    assert kinds(out) == ["BookDelta"] and arb.book.bids() == [("100", "7")]


def test_crossed_books_are_counted() -> None:
    arb = synced(100)
    arb.on_diff(diff(101, 101, bids=[("101.5", "1")]), 0)
    assert arb.stats.crossed == 1


@pytest.mark.parametrize("window", [-1])
def test_bad_parameters_are_rejected(window: int) -> None:
    with pytest.raises(ValueError):
        ArbiterLimits(reorder_window_ns=window)
    with pytest.raises(ValueError):
        ArbiterLimits(max_pending=0)
    with pytest.raises(ValueError):
        ArbiterLimits(max_id_jump=0)
    with pytest.raises(ValueError):
        SequencedBook(KEY, BinanceSpotRule(), reset_window_ns=window)
    with pytest.raises(ValueError):
        TradeDedup(0)


def test_futures_rule_links_by_pu_and_by_coverage() -> None:
    rule = BinanceFuturesRule()
    arb = SequencedBook("binance-usdm:BTCUSDT", rule)
    arb.on_connection(0, True, 0)
    arb.on_diff(diff(90, 95, prev=80), 0)
    # Futures snapshot rule: first applied event has U <= L <= u.
    out = arb.on_snapshot(snap(93), 0)
    assert isinstance(out[0], BookReset) and out[0].venue_id == 95
    # Ids jump (not contiguous) but pu links.
    assert kinds(arb.on_diff(diff(120, 130, prev=95), 0)) == ["BookDelta"]
    # pu 135 was never seen, and the only connection is past it: a certain gap.
    out = arb.on_diff(diff(140, 150, prev=135), 0)
    assert kinds(out) == ["StatusChange", "SnapshotWanted"]


def test_spot_rule_rejects_a_futures_chain() -> None:
    arb = SequencedBook("binance-usdm:BTCUSDT", BinanceSpotRule())
    arb.on_connection(0, True, 0)
    arb.on_diff(diff(90, 95, prev=80), 0)
    arb.on_snapshot(snap(93), 0)
    out = arb.on_diff(diff(120, 130, prev=95), 0)
    assert kinds(out) == ["StatusChange", "SnapshotWanted"]


def test_trades_first_copy_wins_with_bounded_memory() -> None:
    dedup = TradeDedup(capacity=2)

    def trade(tid: int, conn: int) -> Trade:
        return Trade("binance", "BTCUSDT", tid, "1", "1", Side.BUY, 0, 0, conn)

    assert dedup.on_trade(trade(1, 0)) == [TradeOut(trade(1, 0))]
    assert dedup.on_trade(trade(1, 1)) == []
    dedup.on_trade(trade(2, 1))
    dedup.on_trade(trade(3, 1))
    assert dedup.duplicates == 1 and dedup.accepted == 3
    assert dedup.remembered() == 2


def total_qty(book: L2Book) -> int:
    """A toy checksum: the sum of all quantities."""
    return int(sum(float(q) for _, q in book.bids() + book.asks()))


def checked(last_id: int = 100) -> SequencedBook:
    arb = SequencedBook(KEY, BinanceSpotRule(), checksum=total_qty)
    arb.on_connection(0, True, 0)
    arb.on_connection(1, True, 0)
    assert isinstance(arb.on_snapshot(snap(last_id), 0)[0], BookReset)
    return arb


def test_checksums_are_verified_and_a_mismatch_resyncs() -> None:
    arb = checked()
    d = DepthDiff("binance", "BTCUSDT", 101, 101, -1, (("100", "3"),), (), 0, 0, 0, checksum=4)
    assert kinds(arb.on_diff(d, 0)) == ["BookDelta"]
    assert arb.stats.checksum_ok == 1
    bad = DepthDiff("binance", "BTCUSDT", 102, 102, -1, (("99", "1"),), (), 0, 0, 0, checksum=77)
    out = arb.on_diff(bad, 0)
    assert kinds(out) == ["BookDelta", "StatusChange", "SnapshotWanted"]
    assert out[1] == StatusChange(KEY, SymbolState.RESYNCING, "checksum mismatch")
    assert arb.stats.checksum_failed == 1 and not arb.has_book


def test_a_buffered_update_failing_its_checksum_after_the_snapshot_is_not_published() -> None:
    arb = SequencedBook(KEY, BinanceSpotRule(), checksum=total_qty)
    arb.on_connection(0, True, 0)
    arb.on_diff(DepthDiff("binance", "BTCUSDT", 101, 101, -1, (), (), 0, 0, 0, checksum=99), 0)
    out = arb.on_snapshot(snap(100), 0)
    assert out == [SnapshotWanted(KEY, "checksum mismatch after the snapshot")]
    assert not arb.has_book and arb.epoch == 0


def inband(
    last_id: int, bids: Iterable[Level], conn: int = 1, reset: bool = False
) -> DepthSnapshot:
    return DepthSnapshot("bybit-spot", "BTCUSDT", last_id, tuple(bids), (), 0, conn, reset=reset)


def test_in_band_snapshots_while_live_older_are_stale_newer_jump_as_a_delta() -> None:
    arb = synced(100)
    # Connection 1 is in the stream (a subscription's answer is placed first: see the
    # tests of unplaced subscriptions).
    arb.on_diff(diff(99, 100, conn=1), 0)
    assert arb.on_snapshot(inband(100, [("100", "9")]), 0) == []
    assert arb.stats.snapshots_unused == 1
    out = arb.on_snapshot(inband(150, [("100", "2"), ("98", "1")]), 0)
    assert kinds(out) == ["BookDelta"]
    delta = out[0]
    assert isinstance(delta, BookDelta)
    assert (delta.epoch, delta.seq, delta.venue_id) == (1, 1, 150)
    assert sorted(delta.bids) == [("100", "2"), ("98", "1")] and delta.asks == (("101", "0"),)
    assert arb.book.bids() == [("100", "2"), ("98", "1")] and arb.book.asks() == []
    assert arb.applied_id == 150 and arb.stats.jumps == 1
    # A REST snapshot while live is not used.
    assert arb.on_snapshot(snap(500), 0) == []


def test_a_venue_reset_replaces_the_book_once_and_late_copies_are_ignored() -> None:
    arb = synced(100)
    arb.on_diff(diff(101, 101, bids=[("99", "1")]), 0)
    reset = inband(1, [("50", "1")], conn=0, reset=True)
    out = arb.on_snapshot(reset, 0)
    # Connections 1 and 2, silent until the reset, are asked to reconnect.
    assert kinds(out) == ["ReconnectWanted", "ReconnectWanted", "BookDelta"]
    assert arb.applied_id == 1
    assert arb.stats.venue_resets == 1
    assert kinds(arb.on_diff(diff(2, 2, conn=0, bids=[("51", "1")]), 0)) == ["BookDelta"]
    # The same reset arrives late from connection 1: not applied again.
    assert arb.on_snapshot(inband(1, [("50", "1")], conn=1, reset=True), 0) == []
    assert arb.applied_id == 2 and arb.book.bids() == [("51", "1"), ("50", "1")]
    assert arb.stats.gaps == 0


def test_after_a_venue_reset_a_slower_connections_old_sequence_is_never_applied() -> None:
    arb = synced(100)
    arb.on_diff(diff(101, 101, conn=1, bids=[("99", "1")]), 0)
    arb.on_snapshot(inband(1, [("50", "1")], conn=0, reset=True), 0)
    # Connection 1 has not delivered the reset yet: its 102 and its snapshot at 103 are of
    # the old sequence, not a future update of the new one or a jump ahead.
    assert arb.on_diff(diff(102, 102, conn=1, bids=[("98", "7")]), 0) == []
    assert arb.on_snapshot(inband(103, [("97", "7")], conn=1), 0) == []
    assert arb.pending == 0 and arb.stats.jumps == 0
    for u in range(2, 104):
        arb.on_diff(diff(u, u, conn=0, bids=[("51", str(u))]), 0)
    assert arb.book.bids() == [("51", "103"), ("50", "1")] and arb.applied_id == 103
    # Its copy of the reset: it is in the new sequence from then on.
    assert arb.on_snapshot(inband(1, [("50", "1")], conn=1, reset=True), 0) == []
    assert kinds(arb.on_diff(diff(104, 104, conn=1, bids=[("52", "1")]), 0)) == ["BookDelta"]
    assert (arb.stats.gaps, arb.stats.resyncs, arb.stats.venue_resets) == (0, 0, 1)


def test_a_connection_silent_until_a_venue_reset_is_behind_it_and_reopened() -> None:
    arb = synced(100, conns=(0, 1))
    arb.on_diff(diff(101, 101, conn=0, bids=[("99", "1")]), 0)
    arb.on_connection(2, True, 0)  # up, nothing delivered yet
    out = arb.on_snapshot(inband(1, [("50", "1")], conn=0, reset=True), 0)
    assert kinds(out) == ["ReconnectWanted", "ReconnectWanted", "BookDelta"]
    reopened = [e for e in out if isinstance(e, ReconnectWanted)]
    assert {e.conn_id for e in reopened} == {1, 2} and not any(e.fault for e in reopened)
    # Connection 2's subscription was answered before the reset: its snapshot and update
    # are of the old sequence, neither a jump nor applied.
    assert arb.on_snapshot(inband(101, [("99", "1")], conn=2), 0) == []
    assert arb.on_diff(diff(102, 102, conn=2, bids=[("98", "7")]), 0) == []
    assert arb.applied_id == 1 and arb.book.bids() == [("50", "1")]
    assert arb.stats.jumps == 0 and arb.pending == 0


def test_a_silent_connections_old_ids_below_the_new_book_are_never_applied() -> None:
    arb = synced(3, conns=(0,))
    arb.on_connection(1, True, 0)
    arb.on_snapshot(inband(1, [("50", "1")], conn=0, reset=True), 0)
    arb.on_diff(diff(2, 2, conn=0, bids=[("51", "1")]), 0)
    # Connection 1's old sequence: a snapshot at 2 (at or below the book), then 3 and 4,
    # which would link to the new sequence's 2 and 3.
    assert arb.on_snapshot(inband(2, [("90", "1")], conn=1), 0) == []
    assert arb.on_diff(diff(3, 3, conn=1, bids=[("91", "1")]), 0) == []
    arb.on_diff(diff(3, 3, conn=0, bids=[("52", "1")]), 0)
    assert arb.on_diff(diff(4, 4, conn=1, bids=[("92", "1")]), 0) == []
    assert arb.applied_id == 3 and arb.book.bids() == [("52", "1"), ("51", "1"), ("50", "1")]
    # Reopened, as asked: heard from in the new sequence.
    arb.on_connection(1, False, 0)
    arb.on_connection(1, True, 0)
    assert arb.on_snapshot(inband(3, [("52", "1"), ("51", "1"), ("50", "1")], conn=1), 0) == []
    assert kinds(arb.on_diff(diff(4, 4, conn=1, bids=[("53", "1")]), 0)) == ["BookDelta"]
    assert (arb.stats.gaps, arb.stats.resyncs, arb.stats.venue_resets) == (0, 0, 1)


def test_a_silent_connection_stays_behind_a_reset_until_it_reconnects() -> None:
    arb = synced(100, conns=(0,))
    arb.on_connection(1, True, 0)
    arb.on_snapshot(inband(1, [("50", "1")], conn=0, reset=True), 0)
    arb.on_connection(0, False, 0)
    # Alone, it is still not heard: its old sequence's snapshot is not a jump.
    assert arb.on_snapshot(inband(101, [("99", "1")], conn=1), 0) == []
    assert arb.applied_id == 1 and arb.stats.jumps == 0
    arb.on_connection(1, False, 0)
    arb.on_connection(1, True, 0)
    assert kinds(arb.on_snapshot(inband(5, [("55", "1")], conn=1), 0)) == ["BookDelta"]
    assert arb.applied_id == 5 and arb.stats.jumps == 1


def test_connections_behind_a_reset_are_heard_again_once_none_up_delivered_it() -> None:
    arb = synced(100, conns=(0, 1))
    arb.on_diff(diff(101, 101, conn=1, bids=[("99", "1")]), 0)
    arb.on_snapshot(inband(1, [("50", "1")], conn=0, reset=True), 0)
    stale = arb.stats.stale
    assert arb.on_diff(diff(102, 102, conn=1), 0) == [] and arb.stats.stale == stale + 1
    arb.on_connection(0, False, 0)
    # Connection 1 alone: its ids are no longer taken as the old sequence's.
    arb.on_diff(diff(103, 103, conn=1), 0)
    assert arb.stats.stale == stale + 1 and arb.pending == 1


def test_a_second_venue_reset_with_the_same_book_is_applied() -> None:
    arb = synced(100)
    reset = inband(1, [("50", "1")], conn=0, reset=True)
    arb.on_snapshot(reset, 0)
    arb.on_diff(diff(2, 2, conn=0, bids=[("51", "1")]), 0)
    # The venue restarted again with the same book: connection 0 sends it after id 2, so
    # it is no late copy of the first.
    assert kinds(arb.on_snapshot(reset, 0)) == ["BookDelta"]
    assert arb.applied_id == 1 and arb.book.bids() == [("50", "1")]
    assert arb.stats.venue_resets == 2
