"""Subscriptions answered in a sequence the book has not heard of (a venue reset no
connection delivered yet): the cases the venue property tests found, by name
(docs/architecture.md, Arbitration: unplaced connections)."""

from __future__ import annotations

from feeds.bybit import LINEAR
from feeds.bybit import BybitRule
from feeds.okx import VENUE as OKX
from feeds.okx import OkxRule
from gateway.core.arbiter import ArbiterLimits
from gateway.core.model import ArbiterEvent
from gateway.core.model import BookDelta
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import ReconnectWanted
from gateway.core.model import SnapshotWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.sequenced import SequencedBook

KEY = f"{LINEAR}:BTCUSDT"
WINDOW_NS = 10**9
BID: tuple[Level, ...] = (("90.0", "1"),)
ASK: tuple[Level, ...] = (("101.0", "2"),)


def bybit_book(conns: tuple[int, ...] = (0, 1), u: int = 2) -> SequencedBook:
    """Connections up; connection 0's subscription answered at ``u`` built the book."""
    arb = SequencedBook(KEY, BybitRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS))
    for conn in conns:
        arb.on_connection(conn, True, 0)
    arb.on_snapshot(snapshot(u, conn=0), 0)
    assert arb.state is SymbolState.LIVE and arb.applied_id == u
    return arb


def snapshot(
    u: int, conn: int, bids: tuple[Level, ...] = BID, asks: tuple[Level, ...] = ASK
) -> DepthSnapshot:
    """A Bybit snapshot as the parser gives it (``u == 1``: a declared reset)."""
    return DepthSnapshot(LINEAR, "BTCUSDT", u, bids, asks, 0, conn, reset=u == 1)


def delta(
    u: int, conn: int, bids: tuple[Level, ...] = (), asks: tuple[Level, ...] = ()
) -> DepthDiff:
    return DepthDiff(LINEAR, "BTCUSDT", u, u, -1, bids, asks, 0, 0, conn)


def reconnects(out: list[ArbiterEvent]) -> list[int]:
    return [e.conn_id for e in out if isinstance(e, ReconnectWanted)]


def test_an_answer_at_the_books_id_that_differs_leads_the_book_into_the_reset() -> None:
    arb = bybit_book()
    arb.on_diff(delta(3, 0, asks=(("101.0", "0"),)), 0)
    # Connection 1 is answered after a restart connection 0 has not delivered: at u = 3 of
    # the new sequence, whose book differs from the book's at u = 3.
    out = arb.on_snapshot(snapshot(3, 1, asks=(("105.0", "1"),)), 0)
    assert reconnects(out) == [0]
    assert [type(e) for e in out if not isinstance(e, ReconnectWanted)] == [BookDelta]
    assert arb.state is SymbolState.LIVE and arb.stats.venue_resets == 1
    assert arb.book.asks() == [("105.0", "1")]
    # Connection 0's u = 4, of the old sequence, would link: it is dropped.
    assert arb.on_diff(delta(4, 0, asks=(("101.0", "7"),)), 0) == []
    assert arb.applied_id == 3 and arb.book.asks() == [("105.0", "1")]
    # The new sequence goes on from connection 1.
    assert [type(e) for e in arb.on_diff(delta(4, 1, bids=(("91.0", "1"),)), 0)] == [BookDelta]


def test_an_answer_below_the_book_that_agrees_places_its_connection() -> None:
    arb = bybit_book()
    arb.on_diff(delta(3, 0, asks=(("101.0", "0"),)), 0)
    arb.on_diff(delta(4, 0, bids=(("91.0", "1"),)), 0)
    # Answered at u = 3 of the book's own sequence: its book then.
    assert arb.on_snapshot(snapshot(3, 1, asks=()), 0) == []
    assert arb.stats.snapshots_unused == 1
    # Placed: its update links and is applied.
    assert [type(e) for e in arb.on_diff(delta(5, 1, bids=(("92.0", "1"),)), 0)] == [BookDelta]


def test_an_answer_below_the_book_differing_where_a_later_update_wrote_leads_the_book() -> None:
    """Answered at u = 2 without the ask 101 the book had then, which the book's u = 3
    deleted: replayed onto the answer, u = 3 would hide the difference and place it.
    Compared with the book rewound to u = 2, it differs: it is of a sequence after a reset,
    which the book follows."""
    arb = bybit_book()
    arb.on_diff(delta(3, 0, asks=(("101.0", "0"),)), 0)
    out = arb.on_snapshot(snapshot(2, 1, asks=()), 0)
    assert reconnects(out) == [0]
    assert arb.state is SymbolState.LIVE and arb.stats.venue_resets == 1
    assert (arb.applied_id, arb.book.bids(), arb.book.asks()) == (2, list(BID), [])
    # Connection 0's u = 4, of the old sequence, is dropped; connection 1's u = 3 links.
    assert arb.on_diff(delta(4, 0, bids=(("91.0", "1"),)), 0) == []
    assert [type(e) for e in arb.on_diff(delta(3, 1, bids=(("92.0", "1"),)), 0)] == [BookDelta]
    assert arb.book.bids() == [("92.0", "1"), *BID]


def test_an_answer_ahead_of_the_book_is_no_jump_until_the_book_reaches_it() -> None:
    arb = bybit_book()
    # Small ids of two sequences overlap: u = 4 may be of a sequence after a restart.
    assert arb.on_snapshot(snapshot(4, 1, bids=(("95.0", "1"),)), 0) == []
    assert arb.applied_id == 2 and arb.stats.jumps == 0
    # Its update is not used, linking or not.
    assert arb.on_diff(delta(5, 1, bids=(("95.0", "3"),)), 0) == []
    # Connection 0 (the old sequence) moves the book to u = 4, which differs: connection 1
    # is of another sequence, its updates since dropped: it is reopened.
    arb.on_diff(delta(3, 0, asks=(("101.0", "0"),)), 0)
    out = arb.on_diff(delta(4, 0, bids=(("91.0", "1"),)), 0)
    assert [type(e) for e in out] == [ReconnectWanted, BookDelta]
    assert reconnects(out) == [1] and arb.state is SymbolState.LIVE


def test_an_answer_ahead_of_the_book_is_placed_when_the_book_reaches_it_in_agreement() -> None:
    arb = bybit_book()
    assert arb.on_snapshot(snapshot(3, 1, asks=()), 0) == []
    out = arb.on_diff(delta(3, 0, asks=(("101.0", "0"),)), 0)
    assert [type(e) for e in out] == [BookDelta]
    assert [type(e) for e in arb.on_diff(delta(4, 1, bids=(("91.0", "1"),)), 0)] == [BookDelta]


def test_a_reset_declared_by_an_unplaced_connection_reopens_the_others() -> None:
    """Connection 1, answered ahead of the book, then delivers a restart: the book follows
    it, and connection 0, maybe more than one restart behind, is reopened rather than
    taken to lag one (its copy of the first restart would take the book back)."""
    arb = bybit_book()
    arb.on_snapshot(snapshot(11, 1), 0)
    out = arb.on_snapshot(snapshot(1, 1, asks=(("102.0", "2"),)), 0)
    assert reconnects(out) == [0] and arb.applied_id == 1
    # Connection 0's restart of the sequence between, before it reconnects: dropped.
    assert arb.on_snapshot(snapshot(1, 0), 0) == []
    assert arb.book.asks() == [("102.0", "2")]


def rebuilt_in_a_newer_sequence() -> SequencedBook:
    """Three connections; a gap, and connection 0's answer, in a newer sequence, rebuilds
    the book at ``u = 8`` (its ask 102.0): the others were asked to subscribe again and
    have not answered."""
    arb = bybit_book((0, 1, 2))
    arb.on_diff(delta(3, 1), 0)  # connection 1 in the stream
    arb.on_diff(delta(4, 0), 0)
    arb.on_diff(delta(6, 0), 0)
    out = arb.on_timer(WINDOW_NS)
    assert any(isinstance(e, SnapshotWanted) for e in out)
    arb.on_snapshot(snapshot(8, 0, asks=(("102.0", "2"),)), WINDOW_NS)
    assert arb.state is SymbolState.LIVE and arb.applied_id == 8
    return arb


def test_a_reset_from_before_the_others_answer_after_a_rebuild_is_not_used() -> None:
    """After a book built from an in-band snapshot (every connection asked to subscribe
    again), a restart that another connection delivers before its answer may be the one
    the book's sequence began with: it does not take the book back."""
    arb = rebuilt_in_a_newer_sequence()
    # Connection 1 delivers, before its answer, the restart that began that sequence.
    assert arb.on_snapshot(snapshot(1, 1), WINDOW_NS) == []
    assert arb.applied_id == 8
    # Its answer agrees: it is placed.
    assert arb.on_snapshot(snapshot(8, 1, asks=(("102.0", "2"),)), WINDOW_NS) == []
    assert arb.on_diff(delta(9, 1, bids=(("91.0", "1"),)), WINDOW_NS)


def test_an_answer_not_placed_within_the_reset_window_resyncs() -> None:
    arb = bybit_book()
    arb.on_snapshot(snapshot(9, 1), 0)
    deadline = arb.deadline_ns()
    assert deadline == 2 * WINDOW_NS
    assert arb.on_timer(deadline - 1) == []
    out = arb.on_timer(deadline)
    status = [e for e in out if isinstance(e, StatusChange)]
    assert [s.state for s in status] == [SymbolState.RESYNCING]
    assert "subscription snapshot at id 9 not placed" in status[0].reason
    assert any(isinstance(e, SnapshotWanted) for e in out)


def okx_diff(prev: int, seq: int, conn: int, recv_ns: int) -> DepthDiff:
    return DepthDiff(OKX, "BTC-USDT", prev + 1, seq, prev, (("170", "1"),), (), recv_ns, 0, conn)


OKX_ASKS: tuple[Level, ...] = (("201", "1"),)


def okx_book(seq: int) -> SequencedBook:
    """Connections 0 and 1 up; connection 0's answer at seqId 20000 built the book, and its
    update (bid 170 to 1) moved it to ``seq``."""
    arb = SequencedBook(f"{OKX}:BTC-USDT", OkxRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS))
    arb.on_connection(0, True, 0)
    arb.on_connection(1, True, 0)
    arb.on_snapshot(DepthSnapshot(OKX, "BTC-USDT", 20_000, (("170", "2"),), OKX_ASKS, 1, 0), 1)
    arb.on_diff(okx_diff(20_000, seq, 0, 2), 2)
    assert arb.applied_id == seq
    return arb


def okx_answer_passed(
    book_seq: int, answer: tuple[int, Level], own: tuple[int, int], book_next: int
) -> tuple[SequencedBook, list[ArbiterEvent]]:
    """The book at ``book_seq`` (:func:`okx_book`); connection 1 answered at ``answer``'s
    seqId with its bid (not placed), then its own update ``own`` (prevSeqId, seqId), not
    used; then connection 0 moves the book to ``book_next``: the book and those events."""
    arb = okx_book(book_seq)
    seq_id, bid = answer
    assert arb.on_snapshot(DepthSnapshot(OKX, "BTC-USDT", seq_id, (bid,), OKX_ASKS, 3, 1), 3) == []
    assert arb.on_diff(okx_diff(*own, 1, 4), 4) == []
    return arb, arb.on_diff(okx_diff(book_seq, book_next, 0, 5), 5)


def test_an_okx_answer_in_a_new_sequence_waits_for_the_reset() -> None:
    """OKX resets go below the ids used before: an answer after a reset no connection
    delivered is below the book, older than the applied updates kept, and cannot be
    compared. Its connection is unplaced until the reset comes, then reopened."""
    arb = okx_book(20_003)
    answer = DepthSnapshot(OKX, "BTC-USDT", 19_500, (("180", "1"),), OKX_ASKS, 3, 1)
    assert arb.on_snapshot(answer, 3) == []
    # Its updates, of the new sequence, are not used.
    assert arb.on_diff(okx_diff(19_500, 19_502, 1, 4), 4) == []
    assert arb.applied_id == 20_003
    # Connection 0 delivers the reset: the book follows it; connection 1 is reopened.
    out = arb.on_diff(okx_diff(20_003, 19_500, 0, 5), 5)
    assert reconnects(out) == [1] and arb.applied_id == 19_500


def test_an_in_band_rebuild_forgets_updates_buffered_past_its_snapshot() -> None:
    """Buffered while the book waited, updates past the answer that rebuilds it came from a
    stream before that answer (or from a connection not answered yet): not applied."""
    arb = bybit_book()
    arb.on_diff(delta(3, 1), 0)  # connection 1 in the stream
    arb.on_diff(delta(5, 1), 0)
    out = arb.on_timer(WINDOW_NS)
    assert any(isinstance(e, SnapshotWanted) for e in out)
    # Connection 1's update of its old stream, past the answer to come.
    arb.on_diff(delta(9, 1, bids=(("99.0", "5"),)), WINDOW_NS)
    arb.on_snapshot(snapshot(8, 0, asks=(("102.0", "2"),)), WINDOW_NS)
    assert arb.state is SymbolState.LIVE and arb.applied_id == 8 and arb.pending == 0
    assert arb.book.bids() == list(BID)


def test_a_copy_from_before_the_others_answer_after_a_rebuild_does_not_place_them() -> None:
    """The shrunk example: after a book built from an in-band snapshot, another connection
    delivers, before its answer, an update of an older sequence whose ids and levels equal
    the book's applied update, then the restart that began the book's sequence. Its stream
    is of no known sequence until it answers: the equal copy places it nowhere, and the
    restart does not take the book back."""
    arb = rebuilt_in_a_newer_sequence()
    # Connection 0's u = 9 deletes an ask the book does not hold.
    deleted: tuple[Level, ...] = (("101.0", "0"),)
    assert [type(e) for e in arb.on_diff(delta(9, 0, asks=deleted), WINDOW_NS)] == [BookDelta]
    # Connection 1, before its answer: its older sequence's u = 9, the same deletion.
    assert arb.on_diff(delta(9, 1, asks=deleted), WINDOW_NS) == []
    # Then the restart that began the book's sequence: not used.
    assert arb.on_snapshot(snapshot(1, 1), WINDOW_NS) == []
    assert arb.state is SymbolState.LIVE and arb.applied_id == 9
    assert arb.book.asks() == [("102.0", "2")] and arb.stats.venue_resets == 0
    # Its answer agrees: it is placed.
    assert arb.on_snapshot(snapshot(9, 1, asks=(("102.0", "2"),)), WINDOW_NS) == []
    assert [type(e) for e in arb.on_diff(delta(10, 1, bids=(("91.0", "1"),)), WINDOW_NS)] == [
        BookDelta
    ]


def test_a_copy_from_a_connection_asked_to_reconnect_does_not_place_it() -> None:
    """Connection 1's answer ahead of the book differs from the book once the book reaches
    it: of another sequence, it is asked to reconnect. Until it goes down, an update of its
    sequence equal to the book's at the same id does not place it, and its next one is not
    applied."""
    arb = bybit_book()
    assert arb.on_snapshot(snapshot(4, 1, bids=(("95.0", "1"),)), 0) == []
    arb.on_diff(delta(3, 0, asks=(("101.0", "0"),)), 0)
    assert reconnects(arb.on_diff(delta(4, 0, bids=(("91.0", "1"),)), 0)) == [1]
    arb.on_diff(delta(5, 0, bids=(("92.0", "1"),)), 0)
    assert arb.on_diff(delta(5, 1, bids=(("92.0", "1"),)), 0) == []
    assert arb.on_diff(delta(6, 1, bids=(("95.0", "0"),)), 0) == []
    assert arb.applied_id == 5


def test_an_answer_older_than_the_book_is_placed_once_its_own_stream_agrees_with_the_book() -> None:
    """Answered at u = 2, below the snapshot the book was built from at u = 3: not
    comparable. Its own u = 3, applied onto its snapshot, gives the book at u = 3: placed."""
    arb = bybit_book(u=3)
    deeper: tuple[Level, ...] = (*ASK, ("103.0", "1"))
    assert arb.on_snapshot(snapshot(2, 1, asks=deeper), 0) == []
    assert arb.on_diff(delta(3, 1, asks=(("103.0", "0"),)), 0) == []
    assert arb.applied_id == 3
    # Placed: its next update links and is applied.
    assert [type(e) for e in arb.on_diff(delta(4, 1, bids=(("91.0", "1"),)), 0)] == [BookDelta]
    assert arb.book.bids() == [("91.0", "1"), *BID]


def test_an_answer_older_than_the_book_whose_stream_loses_an_update_is_reopened() -> None:
    """Answered at u = 2 of a sequence the book has not heard of (below the book at u = 3:
    not comparable), it loses u = 3; its u = 4 equals the book's by chance. Its book can
    no longer be compared: it is reopened, no fault, and its u = 5 is not applied."""
    arb = bybit_book(u=3)
    assert arb.on_snapshot(snapshot(2, 1, bids=(*BID, ("96.0", "0.5"))), 0) == []
    level: tuple[Level, ...] = (("102.0", "1.25"),)
    assert [type(e) for e in arb.on_diff(delta(4, 0, asks=level), 0)] == [BookDelta]
    out = arb.on_diff(delta(4, 1, asks=level), 0)
    assert reconnects(out) == [1] and len(out) == 1
    assert isinstance(out[0], ReconnectWanted) and not out[0].fault
    assert arb.on_diff(delta(5, 1, bids=(("94.0", "0"),)), 0) == []
    assert arb.applied_id == 4


def test_an_answer_older_than_the_book_whose_own_stream_differs_leads_the_book_into_it() -> None:
    """Answered at u = 2 of a sequence after a restart no connection delivered (below the
    book at u = 3: not comparable). Its own u = 3 gives a book that differs from the
    book's at u = 3: the book follows it, and connection 0 is reopened."""
    arb = bybit_book(u=3)
    arb.on_diff(delta(4, 0, bids=(("91.0", "1"),)), 0)
    assert arb.on_snapshot(snapshot(2, 1, asks=(("105.0", "1"),)), 0) == []
    out = arb.on_diff(delta(3, 1, bids=(("92.0", "1"),)), 0)
    assert reconnects(out) == [0]
    assert [type(e) for e in out if not isinstance(e, ReconnectWanted)] == [BookDelta]
    assert arb.state is SymbolState.LIVE and arb.stats.venue_resets == 1
    assert arb.applied_id == 3
    assert (arb.book.bids(), arb.book.asks()) == ([("92.0", "1"), *BID], [("105.0", "1")])
    # Connection 0's u = 5, of the old sequence, would link: it is dropped.
    assert arb.on_diff(delta(5, 0, asks=(("101.0", "7"),)), 0) == []
    assert [type(e) for e in arb.on_diff(delta(4, 1, bids=(("93.0", "1"),)), 0)] == [BookDelta]


def test_an_older_answer_whose_stream_differs_where_the_book_later_wrote_leads_the_book() -> None:
    """Answered at u = 2, below the snapshot the book was built from at u = 3 (not
    comparable). Its own u = 3 gives a book without the ask 101 that the book had at u = 3
    and deleted at u = 4: replayed onto the replica, u = 4 would hide the difference.
    Compared with the book rewound to u = 3, it differs: the book follows it."""
    arb = bybit_book(u=3)
    arb.on_diff(delta(4, 0, asks=(("101.0", "0"),)), 0)
    assert arb.on_snapshot(snapshot(2, 1), 0) == []
    out = arb.on_diff(delta(3, 1, asks=(("101.0", "0"),)), 0)
    assert reconnects(out) == [0]
    assert arb.state is SymbolState.LIVE and arb.stats.venue_resets == 1
    assert (arb.applied_id, arb.book.bids(), arb.book.asks()) == (3, list(BID), [])
    # Connection 0's u = 5, of the old sequence, would link: it is dropped.
    assert arb.on_diff(delta(5, 0, bids=(("91.0", "1"),)), 0) == []
    assert [type(e) for e in arb.on_diff(delta(4, 1, bids=(("93.0", "1"),)), 0)] == [BookDelta]


def test_an_answer_below_where_the_book_was_when_its_connection_came_up_is_placed_exactly() -> None:
    """The book keeps what its updates replaced only while a connection's answer may
    come: connection 1 comes up with the book at u = 4 and is answered at u = 3 (its
    server lagging), where the book's levels are not known. Replayed onto the answer, the
    book's u = 4 (ask 101 to 3) would hide that the answer holds ask 101 where the book
    held none. Compared through its own stream instead: its u = 4 differs from the book's,
    and the book follows it."""
    arb = bybit_book(conns=(0,))
    arb.on_diff(delta(3, 0, asks=(("101.0", "0"),)), 0)
    arb.on_diff(delta(4, 0, asks=(("101.0", "3"),)), 0)
    arb.on_connection(1, True, 0)
    assert arb.on_snapshot(snapshot(3, 1), 0) == []
    assert arb.applied_id == 4 and arb.stats.venue_resets == 0
    out = arb.on_diff(delta(4, 1, bids=(("95.0", "1"),)), 0)
    assert reconnects(out) == [0] and arb.stats.venue_resets == 1
    assert (arb.applied_id, arb.book.bids(), arb.book.asks()) == (
        4,
        [("95.0", "1"), *BID],
        list(ASK),
    )


def test_an_okx_answer_ahead_that_the_book_passes_inside_an_update_is_reopened() -> None:
    """Answered at seqId 20005, ahead of the book at 20003; connection 0's next update
    (prevSeqId 20003, seqId 20008) passes it. The book was never at 20005, so no answer
    of its sequence is there, and the book's levels there are not known (replayed onto
    the answer, the update would hide what it differs in): the connection is reopened,
    no fault, and its updates are not used."""
    arb, out = okx_answer_passed(20_003, (20_005, ("170", "1")), (20_005, 20_009), 20_008)
    assert reconnects(out) == [1] and arb.applied_id == 20_008
    assert all(not e.fault for e in out if isinstance(e, ReconnectWanted))
    assert arb.on_diff(okx_diff(20_008, 20_009, 1, 6), 6) == []
    assert arb.applied_id == 20_008


def test_an_okx_answer_whose_stream_passes_the_book_is_compared_where_the_book_gets() -> None:
    """Answered below the snapshot the book was built from (not comparable), its own next
    update ends past the book's id, at none the book kept: its book there is compared when
    the book reaches that id, and differs: it is reopened."""
    arb, out = okx_answer_passed(20_010, (19_990, ("180", "1")), (19_990, 20_015), 20_015)
    assert reconnects(out) == [1] and arb.applied_id == 20_015
    assert arb.book.bids() == [("170", "1")]


def test_an_answer_ahead_placed_later_brings_the_updates_its_connection_delivered() -> None:
    """Connection 1 is answered at u = 3, ahead of the book, then delivers u = 4, which no
    other connection delivers. When connection 0 brings the book to u = 3 in agreement,
    connection 1 is placed and its u = 4 is applied: the book does not stay behind."""
    arb = bybit_book()
    assert arb.on_snapshot(snapshot(3, 1, asks=()), 0) == []
    assert arb.on_diff(delta(4, 1, bids=(("91.0", "1"),)), 0) == []
    out = arb.on_diff(delta(3, 0, asks=(("101.0", "0"),)), 0)
    assert [type(e) for e in out] == [BookDelta, BookDelta]
    assert [e.venue_id for e in out if isinstance(e, BookDelta)] == [3, 4]
    assert arb.applied_id == 4 and arb.book.bids() == [("91.0", "1"), *BID]
