"""ReplicatedBook and ConnectionSequenceChecker: unit cases."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest

from gateway.core.arbiter import ConnectionSequenceChecker
from gateway.core.book import L2Book
from gateway.core.model import BookCrossed
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import ResubscribeWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.replicated import ReplicaState
from gateway.core.replicated import ReplicatedBook

from .arbiter_streams import crc

KEY = "kraken:BTC/USD"


def snap(
    conn: int,
    bids: Iterable[Level],
    asks: Iterable[Level] = (("101", "1"),),
    checksum: int | None = None,
) -> DepthSnapshot:
    return DepthSnapshot("kraken", "BTC/USD", -1, tuple(bids), tuple(asks), 0, conn, checksum)


def upd(
    conn: int,
    bids: Iterable[Level] = (),
    asks: Iterable[Level] = (),
    checksum: int | None = None,
    ms: int = 5,
) -> DepthDiff:
    return DepthDiff(
        "kraken", "BTC/USD", -1, -1, -1, tuple(bids), tuple(asks), ms, 0, conn, checksum
    )


def book_of(bids: Iterable[Level], asks: Iterable[Level]) -> L2Book:
    b = L2Book()
    b.load(bids, asks)
    return b


def _two_checked_replicas(arb: ReplicatedBook, bids: list[tuple[str, str]]) -> None:
    """Connections 0 and 1 up, each with a checksummed snapshot of ``bids`` (asks 101 x 1):
    connection 0 leads."""
    for conn in (0, 1):
        arb.on_connection(conn, True, 0)
        arb.on_snapshot(snap(conn, bids, checksum=crc(book_of(bids, [("101", "1")]))), 0)
    assert arb.leader == 0


def test_first_valid_snapshot_publishes_then_leader_updates_flow() -> None:
    arb = ReplicatedBook(KEY)
    arb.on_connection(0, True, 0)
    arb.on_connection(1, True, 0)
    out = arb.on_snapshot(snap(1, [("100", "1")]), 0)
    assert isinstance(out[0], BookReset) and arb.leader == 1
    assert out[1] == StatusChange(KEY, SymbolState.LIVE, "snapshot")
    out = arb.on_diff(upd(1, bids=[("100", "2")], ms=77), 0)
    (delta,) = out
    assert isinstance(delta, BookDelta)
    assert delta.venue_id == 77 and delta.seq == 1
    assert arb.on_diff(upd(0, bids=[("100", "2")]), 0) == []  # no replica yet on conn 0
    arb.on_snapshot(snap(0, [("100", "2")]), 0)
    assert arb.on_diff(upd(0, bids=[("99", "1")]), 0) == []  # a follower
    assert arb.stats.duplicates == 1 and arb.leader == 1


def test_truncation_to_depth_is_part_of_the_published_delta() -> None:
    arb = ReplicatedBook(KEY, depth=2)
    arb.on_connection(0, True, 0)
    arb.on_snapshot(snap(0, [("100", "1"), ("99", "1"), ("98", "1")]), 0)
    assert arb.book.bids() == [("100", "1"), ("99", "1")]
    (delta,) = arb.on_diff(upd(0, bids=[("100.5", "1")]), 0)
    assert isinstance(delta, BookDelta)
    assert delta.bids == (("100.5", "1"), ("99", "0"))


def test_a_checksum_mismatch_resubscribes_and_fails_over_with_a_delta() -> None:
    arb = ReplicatedBook(KEY, checksum=crc)
    good = [("100", "1")]
    _two_checked_replicas(arb, good)
    after = book_of([("100", "3")], [("101", "1")])
    arb.on_diff(upd(1, bids=[("100", "3")], checksum=crc(after)), 0)
    out = arb.on_diff(upd(0, bids=[("100", "9")], checksum=crc(after)), 0)
    assert out[0] == ResubscribeWanted(KEY, 0, "checksum mismatch")
    assert isinstance(out[1], BookDelta) and out[1].bids == (("100", "3"),)
    assert arb.leader == 1 and arb.stats.failovers == 1 and arb.stats.checksum_failed == 1
    assert arb.book.normalized() == after.normalized()


def test_no_valid_replica_is_resyncing_and_every_connection_down_is_stale() -> None:
    arb = ReplicatedBook(KEY)
    arb.on_connection(0, True, 0)
    arb.on_snapshot(snap(0, [("100", "1")]), 0)
    out = arb.invalidate(0, "sequence jump", 0)
    assert out[0] == ResubscribeWanted(KEY, 0, "sequence jump")
    assert out[1] == StatusChange(KEY, SymbolState.RESYNCING, "no valid replica")
    assert arb.has_book, "the last book stays published"
    out = arb.on_snapshot(snap(0, [("100", "4")]), 0)
    assert isinstance(out[0], BookDelta) and out[0].seq == 1, "no new epoch"
    out = arb.on_connection(0, False, 0)
    assert out == [StatusChange(KEY, SymbolState.STALE, "every upstream connection down")]


def test_a_consistently_faster_follower_takes_over_where_books_agree() -> None:
    arb = ReplicatedBook(KEY, checksum=crc, switch_margin_ns=1_000, lag_alpha=1.0)
    start = [("100", "1")]
    _two_checked_replicas(arb, start)
    state = book_of([("100", "2")], [("101", "1")])
    arb.on_diff(upd(1, bids=[("100", "2")], checksum=crc(state)), 1_000)  # conn 1 first
    arb.on_diff(upd(0, bids=[("100", "2")], checksum=crc(state)), 50_000)  # leader lags
    state2 = book_of([("100", "5")], [("101", "1")])
    out = arb.on_diff(upd(1, bids=[("100", "5")], checksum=crc(state2)), 60_000)
    assert arb.leader == 1 and arb.stats.failovers == 1
    assert isinstance(out[0], BookDelta) and out[0].bids == (("100", "5"),)
    assert arb.book.normalized() == state2.normalized()


def test_connection_sequence_checker() -> None:
    check = ConnectionSequenceChecker()
    assert [check.on_seq(0, s) for s in (0, 1, 2, 4, 5)] == [False, False, False, True, False]
    assert check.on_seq(1, 10) is False and check.gaps == 1
    check.reset(0)
    assert check.on_seq(0, 0) is False


def test_a_new_connection_whose_first_message_is_above_0_lost_messages() -> None:
    check = ConnectionSequenceChecker()
    check.reset(2)
    assert check.on_seq(2, 2) is True and check.gaps == 1, "messages 0 and 1 were lost"
    check.forget(2)
    assert check.on_seq(2, 7) is False, "a connection never reset: its first number as it comes"
    assert check.late(2, 7) and check.late(2, 6), "a duplicate, a message out of order"
    assert not check.late(2, 8) and not check.late(3, 0), "next; a connection not seen yet"


def test_a_sequence_jump_resubscribes_a_replica_awaiting_its_snapshot() -> None:
    # The messages lost may be the snapshot itself: waiting on would wait for ever.
    arb = ReplicatedBook(KEY)
    arb.on_connection(0, True, 0)
    arb.on_connection(1, True, 0)
    arb.on_snapshot(snap(1, [("100", "1")]), 0)
    out = arb.invalidate(0, "sequence jump", 0)
    assert out == [ResubscribeWanted(KEY, 0, "sequence jump")]
    assert arb.replicas[0].state is ReplicaState.AWAITING_SNAPSHOT and arb.leader == 1


def test_a_crossed_leader_update_is_never_published_and_the_output_fails_over() -> None:
    arb = ReplicatedBook(KEY)
    _two_checked_replicas(arb, [("100", "1")])
    out = arb.on_diff(upd(0, bids=[("101.5", "1")]), 0)
    reason = "crossed book (bid 101.5 >= ask 101)"
    assert out[:2] == [BookCrossed(KEY, 0, reason), ResubscribeWanted(KEY, 0, reason)]
    assert arb.leader == 1 and arb.state is SymbolState.LIVE
    assert not arb.book.is_crossed() and not any(isinstance(e, BookDelta) for e in out)
    assert (arb.stats.crossed_faults, arb.stats.replica_failures) == (1, 1)
    # The rebuild of conn 0 is crossed again: it waits, and the output stays on conn 1.
    out = arb.on_snapshot(snap(0, [("102", "1")]), 0)
    assert out == [BookCrossed(KEY, 0, "crossed book (bid 102 >= ask 101)")]
    assert arb.replicas[0].state is ReplicaState.RETRY_WAIT and arb.leader == 1
    assert arb.deadline_ns() == 1_000_000_000
    assert arb.on_timer(1_000_000_000) == [
        ResubscribeWanted(KEY, 0, "retry after a crossed snapshot")
    ]


def test_with_no_valid_replica_left_a_crossed_book_leaves_the_output_resyncing() -> None:
    arb = ReplicatedBook(KEY)
    arb.on_connection(0, True, 0)
    arb.on_snapshot(snap(0, [("100", "1")]), 0)
    out = arb.on_diff(upd(0, asks=[("99", "1")]), 0)
    assert arb.state is SymbolState.RESYNCING and not arb.book.is_crossed()
    assert not any(isinstance(e, BookDelta) for e in out)


def test_a_venue_whose_books_may_cross_publishes_them() -> None:
    arb = ReplicatedBook(KEY, may_cross=True)
    arb.on_connection(0, True, 0)
    arb.on_snapshot(snap(0, [("102", "1")]), 0)
    assert arb.state is SymbolState.LIVE and arb.book.is_crossed()
    assert (arb.stats.crossed_faults, arb.leader) == (0, 0)


def test_a_failover_goes_to_the_best_scored_valid_replica() -> None:
    arb = ReplicatedBook(KEY)
    for conn in (0, 1, 2):
        arb.on_connection(conn, True, 0)
        arb.on_snapshot(snap(conn, [("100", "1")]), 0)
    arb.replicas[1].lag_ewma_ns = 10.0  # lower lag, but a worse score
    arb.replicas[2].lag_ewma_ns = 50.0
    arb.scores = {0: 0.9, 1: 0.2, 2: 0.8}
    arb.on_connection(0, False, 0)
    assert arb.leader == 2
    # Equal scores (none known): the lowest lag.
    arb.scores = {}
    arb.on_connection(2, True, 0)
    arb.on_connection(2, False, 0)
    assert arb.leader == 1


def test_a_switch_to_a_replica_behind_serves_the_id_that_replica_is_at() -> None:
    arb = ReplicatedBook(KEY)
    for conn in (0, 1):
        arb.on_connection(conn, True, 0)
        arb.on_snapshot(
            DepthSnapshot("kraken", "BTC/USD", -1, (("100", "1"),), (), 7_000_000, conn), 0
        )
    arb.on_diff(upd(0, bids=[("100", "2")], ms=50), 0)
    arb.on_diff(upd(0, bids=[("100", "3")], ms=60), 0)
    arb.on_diff(upd(1, bids=[("100", "2")], ms=50), 0)
    assert arb.applied_id == 60
    (delta, *_) = arb.on_connection(0, False, 0)
    assert isinstance(delta, BookDelta) and delta.bids == (("100", "2"),)
    assert delta.venue_id == arb.applied_id == 50, "the id of the book served: conn 1's"
    assert delta.event_ms is None, "a switch is no venue update"
    arb.on_connection(2, True, 0)
    arb.on_snapshot(DepthSnapshot("kraken", "BTC/USD", -1, (("99", "1"),), (), 9_000_000, 2), 0)
    (delta, *_) = arb.on_connection(1, False, 0)
    assert isinstance(delta, BookDelta) and delta.venue_id == 9, "at its snapshot: when received"


def test_a_replica_failing_again_and_again_is_logged_a_few_lines_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every failure resubscribes and is counted; its line is limited per connection, the
    next line admitted saying how many were not written."""
    arb = ReplicatedBook(KEY)
    arb.on_connection(0, True, 0)
    caplog.set_level(logging.WARNING, logger="gateway.core.replicated")
    now_ns = 0
    for _ in range(50):
        now_ns += 10_000_000
        arb.on_snapshot(snap(0, [("100", "1")]), now_ns)
        assert arb.invalidate(0, "sequence jump", now_ns)[0] == ResubscribeWanted(
            KEY, 0, "sequence jump"
        )
    assert arb.stats.replica_failures == 50
    assert len([r for r in caplog.records if "failed (sequence jump)" in r.getMessage()]) == 5
    caplog.clear()
    arb.invalidate(0, "sequence jump", now_ns + 61 * 10**9)
    assert [r.getMessage() for r in caplog.records] == [
        f"{KEY}: replica of conn 0 failed (sequence jump); resubscribing (45 similar suppressed)"
    ]
