"""SequencedBook's two state machines, as tables.

Every row of SYNC_TRANSITIONS and STATUS_TRANSITIONS is asserted twice: literally (the
table is the spec below, test_transition_tables, which also raises every pair missing from
it), and by driving a real SequencedBook into the row's state and giving it the input that
causes the row's event (the new state and the published events are the row's).
"""

from __future__ import annotations

import pytest

from feeds.binance import BinanceSpotRule
from gateway.core.arbiter import ArbiterLimits
from gateway.core.model import ArbiterEvent
from gateway.core.model import BookCrossed
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import SnapshotWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.sequenced import STATUS_TRANSITIONS
from gateway.core.sequenced import SYNC_TRANSITIONS
from gateway.core.sequenced import SequencedBook
from gateway.core.sequenced import StatusEvent
from gateway.core.sequenced import Sync
from gateway.core.sequenced import SyncEvent
from gateway.core.transitions import UndefinedTransition

from .arbiter_streams import crc
from .state_tables import Scenario
from .state_tables import drive_row
from .state_tables import specify

KEY = "binance:BTCUSDT"
WINDOW_NS = 1_000

S, E = Sync, SyncEvent
St, SE = SymbolState, StatusEvent

SYNC_SPEC = specify(
    "sync",
    SYNC_TRANSITIONS,
    """
    UNSYNCED           UPDATE_WITHOUT_BOOK   AWAITING_SNAPSHOT  ASK_SNAPSHOT
    AWAITING_SNAPSHOT  UPDATE_WITHOUT_BOOK   AWAITING_SNAPSHOT  -
    UNSYNCED           SNAPSHOT_REFUSED      RETRY_WAIT         START_RETRY_CLOCK
    AWAITING_SNAPSHOT  SNAPSHOT_REFUSED      RETRY_WAIT         START_RETRY_CLOCK
    UNSYNCED           SNAPSHOT_UNUSABLE     AWAITING_SNAPSHOT  ASK_SNAPSHOT
    AWAITING_SNAPSHOT  SNAPSHOT_UNUSABLE     AWAITING_SNAPSHOT  ASK_SNAPSHOT
    AWAITING_SNAPSHOT  SNAPSHOT_BROKEN       AWAITING_SNAPSHOT  COUNT_GAP ASK_SNAPSHOT
    UNSYNCED           BOOK_BUILT            SYNCED             PUBLISH_RESET
    AWAITING_SNAPSHOT  BOOK_BUILT            SYNCED             PUBLISH_RESET
    AWAITING_SNAPSHOT  BOOK_BUILT_WITH_HOLE  HOLE               PUBLISH_RESET START_HOLE_CLOCK
    SYNCED             HOLE_OPENED           HOLE               START_HOLE_CLOCK
    HOLE               HOLE_CLOSED           SYNCED             STOP_HOLE_CLOCK
    SYNCED  GAP  AWAITING_SNAPSHOT  COUNT_GAP ANNOUNCE_RESYNC ASK_SNAPSHOT
    HOLE  GAP  AWAITING_SNAPSHOT  STOP_HOLE_CLOCK COUNT_GAP ANNOUNCE_RESYNC ASK_SNAPSHOT
    SYNCED  CROSSED  AWAITING_SNAPSHOT  COUNT_RESYNC ANNOUNCE_RESYNC ASK_SNAPSHOT
    HOLE  CROSSED  AWAITING_SNAPSHOT  STOP_HOLE_CLOCK COUNT_RESYNC ANNOUNCE_RESYNC ASK_SNAPSHOT
    UNSYNCED           SNAPSHOT_CROSSED      RETRY_WAIT         START_RETRY_CLOCK
    AWAITING_SNAPSHOT  SNAPSHOT_CROSSED      RETRY_WAIT         START_RETRY_CLOCK
    RETRY_WAIT         SNAPSHOT_CROSSED      RETRY_WAIT         -
    RETRY_WAIT         RETRY_DUE             AWAITING_SNAPSHOT  ASK_SNAPSHOT
    RETRY_WAIT         UPDATE_WITHOUT_BOOK   RETRY_WAIT         -
    RETRY_WAIT         SNAPSHOT_REFUSED      RETRY_WAIT         -
    RETRY_WAIT         SNAPSHOT_UNUSABLE     RETRY_WAIT         -
    RETRY_WAIT         SNAPSHOT_BROKEN       RETRY_WAIT         COUNT_GAP
    RETRY_WAIT         BOOK_BUILT            SYNCED             STOP_RETRY_CLOCK PUBLISH_RESET
    RETRY_WAIT  BOOK_BUILT_WITH_HOLE  HOLE  STOP_RETRY_CLOCK PUBLISH_RESET START_HOLE_CLOCK
    SYNCED             UPDATE_HELD           HOLE               START_HOLE_CLOCK
    HOLE               UPDATE_HELD           HOLE               -
    SYNCED  VENUE_RESET  AWAITING_SNAPSHOT \
        COUNT_VENUE_RESET COUNT_RESYNC FORGET_SEQUENCE ANNOUNCE_VENUE_RESET ASK_SNAPSHOT
    HOLE  VENUE_RESET  AWAITING_SNAPSHOT  STOP_HOLE_CLOCK \
        COUNT_VENUE_RESET COUNT_RESYNC FORGET_SEQUENCE ANNOUNCE_VENUE_RESET ASK_SNAPSHOT
    AWAITING_SNAPSHOT  VENUE_RESET  AWAITING_SNAPSHOT \
        COUNT_VENUE_RESET FORGET_SEQUENCE ANNOUNCE_VENUE_RESET
    """,
)

STATUS_SPEC = specify(
    "status",
    STATUS_TRANSITIONS,
    """
    SYNCING    ALL_DOWN                  STALE      ANNOUNCE
    LIVE       ALL_DOWN                  STALE      ANNOUNCE
    RESYNCING  ALL_DOWN                  STALE      ANNOUNCE
    STALE      ALL_DOWN                  STALE      -
    LIVE       GAP                       RESYNCING  ANNOUNCE
    STALE      GAP                       RESYNCING  ANNOUNCE
    SYNCING    RESET_WITH_CONNECTION     LIVE       ANNOUNCE
    RESYNCING  RESET_WITH_CONNECTION     LIVE       ANNOUNCE
    STALE      RESET_WITH_CONNECTION     LIVE       ANNOUNCE
    SYNCING    RESET_WITHOUT_CONNECTION  STALE      ANNOUNCE
    RESYNCING  RESET_WITHOUT_CONNECTION  STALE      ANNOUNCE
    STALE      RESET_WITHOUT_CONNECTION  STALE      -
    STALE      UPSTREAM_BACK             LIVE       ANNOUNCE
    SYNCING    SNAPSHOT_NOT_USED         SYNCING    ANNOUNCE
    RESYNCING  SNAPSHOT_NOT_USED         RESYNCING  ANNOUNCE
    STALE      SNAPSHOT_NOT_USED         STALE      -
    LIVE       VENUE_RESET               RESYNCING  ANNOUNCE
    STALE      VENUE_RESET               RESYNCING  ANNOUNCE
    RESYNCING  VENUE_RESET               RESYNCING  ANNOUNCE
    """,
)


def test_an_undefined_event_in_a_real_book_raises() -> None:
    arb = book()
    with pytest.raises(UndefinedTransition):
        arb._sync(SyncEvent.GAP, [])  # no book: nothing can be lost
    assert arb.sync is Sync.UNSYNCED


# --- driving a real book into each row ------------------------------------------------------


def diff(first: int, last: int, conn: int = 0, checksum: int | None = None) -> DepthDiff:
    bids = (("100", str(last)),)
    return DepthDiff("binance", "BTCUSDT", first, last, -1, bids, (), 0, 0, conn, checksum)


def snap(
    last_id: int, bids: tuple[tuple[str, str], ...] = (("99", "1"),), checksum: int | None = None
) -> DepthSnapshot:
    asks = (("101", "1"),)
    return DepthSnapshot("binance", "BTCUSDT", last_id, bids, asks, 0, -1, checksum=checksum)


BAD = (("x", "1"),)
#: Bids above the snapshots' ask (101): a crossed book.
CROSSED = (("102", "1"),)
CROSSED_REASON = "crossed book (bid 102 >= ask 101)"
WAITING = f"{CROSSED_REASON}; snapshot not used; next snapshot in 1 s"


def book(conns: tuple[int, ...] = (0, 1), checksum: bool = False) -> SequencedBook:
    arb = SequencedBook(
        KEY,
        BinanceSpotRule(),
        ArbiterLimits(reorder_window_ns=WINDOW_NS),
        checksum=crc if checksum else None,
    )
    for conn in conns:
        arb.on_connection(conn, True, 0)
    return arb


def awaiting(conns: tuple[int, ...] = (0, 1), checksum: bool = False) -> SequencedBook:
    """AWAITING_SNAPSHOT, update 11 buffered."""
    arb = book(conns, checksum)
    arb.on_diff(diff(11, 11), 0)
    assert arb.sync is Sync.AWAITING_SNAPSHOT
    return arb


def synced(conns: tuple[int, ...] = (0, 1), checksum: bool = False) -> SequencedBook:
    """SYNCED at id 11, LIVE."""
    arb = awaiting(conns, checksum)
    arb.on_snapshot(snap(10), 0)
    assert (arb.sync, arb.state, arb.applied_id) == (Sync.SYNCED, St.LIVE, 11)
    return arb


def hole(conns: tuple[int, ...] = (0, 1)) -> SequencedBook:
    """HOLE: 13 buffered, 12 missing, connection 1 may still deliver it."""
    arb = synced(conns=conns)
    arb.on_diff(diff(13, 13), 0)
    assert arb.sync is Sync.HOLE
    return arb


def resyncing(conns: tuple[int, ...] = (0, 1)) -> SequencedBook:
    """AWAITING_SNAPSHOT after a gap, RESYNCING."""
    arb = hole()
    arb.on_timer(WINDOW_NS)
    for conn in (0, 1):
        if conn not in conns:
            arb.on_connection(conn, False, 0)
    assert (arb.sync, arb.state) == (Sync.AWAITING_SNAPSHOT, St.RESYNCING)
    return arb


def all_down(arb: SequencedBook) -> SequencedBook:
    for conn in (0, 1):
        arb.on_connection(conn, False, 0)
    assert arb.state is St.STALE
    return arb


def kinds(events: list[ArbiterEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def waiting_for_11_with_bad_checksum() -> SequencedBook:
    arb = book(checksum=True)
    arb.on_diff(diff(11, 11, checksum=1), 0)  # not the checksum of snapshot 10 + 11
    return arb


def waiting_for_20_from_both() -> SequencedBook:
    arb = book()
    arb.on_diff(diff(20, 20, conn=0), 0)
    arb.on_diff(diff(20, 20, conn=1), 0)
    return arb


def waiting_for_20_from_one() -> SequencedBook:
    arb = book()
    arb.on_diff(diff(20, 20, conn=0), 0)
    return arb


def crossing(last: int, conn: int = 0) -> DepthDiff:
    """Update ``last`` with a bid above the snapshots' ask."""
    return DepthDiff("binance", "BTCUSDT", last, last, -1, (("101.5", "2"),), (), 0, 0, conn)


def retry_wait(arb: SequencedBook | None = None) -> SequencedBook:
    """RETRY_WAIT: a crossed snapshot (with update 11 buffered, unless ``arb`` is given)."""
    arb = awaiting() if arb is None else arb
    arb.on_snapshot(snap(10, CROSSED), 0)
    assert arb.sync is Sync.RETRY_WAIT and arb.deadline_ns() == 1_000_000_000
    return arb


def retry_wait_with_bad_checksum_buffered() -> SequencedBook:
    arb = retry_wait(book(checksum=True))
    arb.on_diff(diff(11, 11, checksum=1), 0)  # not the checksum of snapshot 10 + 11
    return arb


def retry_wait_for_20_from_one() -> SequencedBook:
    return retry_wait(waiting_for_20_from_one())


#: Beyond BinanceSpotRule.max_id_jump.
FAR = 2 * BinanceSpotRule.max_id_jump


def far_copy(conn: int) -> DepthDiff:
    """Links to id 11, but jumps implausibly far."""
    return diff(12, 12 + FAR, conn=conn)


RESET_WINDOW_NS = 2 * WINDOW_NS


def behind(arb: SequencedBook) -> SequencedBook:
    """Connection 0 restarted its ids (below the book's 11) at time 0."""
    arb.on_diff(diff(3, 3, conn=0), 0)
    return arb


def resyncing_with_checksum() -> SequencedBook:
    """RESYNCING after a gap at id 11; connection 0 then delivers id 3."""
    arb = synced(checksum=True)
    arb.on_diff(diff(12, 12, checksum=1), 0)
    arb.on_diff(diff(3, 3, conn=0), 0)
    assert (arb.sync, arb.state, arb.applied_id) == (Sync.AWAITING_SNAPSHOT, St.RESYNCING, 12)
    return arb


def resyncing_behind() -> SequencedBook:
    """:func:`resyncing_with_checksum`, then connection 0 delivers id 4 a reset window
    later: every connection was below the book's id for the window, none catching up."""
    arb = resyncing_with_checksum()
    arb.on_diff(diff(4, 4, conn=0), RESET_WINDOW_NS)
    assert arb.stats.venue_resets == 0
    return arb


#: A snapshot below the book's id (the venue restarted), whose checksum fails: the reset is
#: recognised and the resync goes on.
RESET_SNAPSHOT = snap(5, checksum=1)


#: (the machine's state before, event) -> (drive a book into that state, the input that
#: causes the event, the published event kinds). The state after is the table's.
SYNC_SCENARIOS: dict[tuple[Sync, SyncEvent], Scenario] = {
    (S.UNSYNCED, E.UPDATE_WITHOUT_BOOK): (
        book,
        lambda a: a.on_diff(diff(5, 6), 0),
        ["SnapshotWanted"],
    ),
    (S.AWAITING_SNAPSHOT, E.UPDATE_WITHOUT_BOOK): (
        awaiting,
        lambda a: a.on_diff(diff(12, 12), 0),
        [],
    ),
    (S.UNSYNCED, E.SNAPSHOT_REFUSED): (
        book,
        lambda a: a.on_snapshot(snap(10, BAD), 0),
        ["StatusChange"],
    ),
    (S.AWAITING_SNAPSHOT, E.SNAPSHOT_REFUSED): (
        awaiting,
        lambda a: a.on_snapshot(snap(10, BAD), 0),
        ["StatusChange"],
    ),
    (S.UNSYNCED, E.SNAPSHOT_UNUSABLE): (
        lambda: book(checksum=True),
        lambda a: a.on_snapshot(snap(10, checksum=1), 0),
        ["SnapshotWanted"],
    ),
    (S.AWAITING_SNAPSHOT, E.SNAPSHOT_UNUSABLE): (
        waiting_for_20_from_both,
        lambda a: a.on_snapshot(snap(10), 0),
        ["SnapshotWanted"],
    ),
    (S.AWAITING_SNAPSHOT, E.SNAPSHOT_BROKEN): (
        waiting_for_11_with_bad_checksum,
        lambda a: a.on_snapshot(snap(10), 0),
        ["SnapshotWanted"],
    ),
    (S.UNSYNCED, E.BOOK_BUILT): (
        book,
        lambda a: a.on_snapshot(snap(10), 0),
        ["BookReset", "StatusChange"],
    ),
    (S.AWAITING_SNAPSHOT, E.BOOK_BUILT): (
        awaiting,
        lambda a: a.on_snapshot(snap(11), 0),
        ["BookReset", "StatusChange"],
    ),
    (S.AWAITING_SNAPSHOT, E.BOOK_BUILT_WITH_HOLE): (
        waiting_for_20_from_one,
        lambda a: a.on_snapshot(snap(10), 500),
        ["BookReset", "StatusChange"],
    ),
    (S.SYNCED, E.HOLE_OPENED): (synced, lambda a: a.on_diff(diff(13, 13), 500), []),
    (S.HOLE, E.HOLE_CLOSED): (
        hole,
        lambda a: a.on_diff(diff(12, 12, conn=1), 0),
        ["BookDelta", "BookDelta"],
    ),
    (S.SYNCED, E.GAP): (
        lambda: synced(checksum=True),
        lambda a: a.on_diff(diff(12, 12, checksum=1), 0),
        ["BookDelta", "StatusChange", "SnapshotWanted"],
    ),
    (S.HOLE, E.GAP): (hole, lambda a: a.on_timer(WINDOW_NS), ["StatusChange", "SnapshotWanted"]),
    (S.SYNCED, E.CROSSED): (
        synced,
        lambda a: a.on_diff(crossing(12), 0),
        ["BookCrossed", "StatusChange", "SnapshotWanted"],
    ),
    (S.HOLE, E.CROSSED): (
        hole,
        lambda a: a.on_diff(crossing(12, conn=1), 0),
        ["BookCrossed", "StatusChange", "SnapshotWanted"],
    ),
    (S.UNSYNCED, E.SNAPSHOT_CROSSED): (
        book,
        lambda a: a.on_snapshot(snap(10, CROSSED), 0),
        ["BookCrossed", "StatusChange"],
    ),
    (S.AWAITING_SNAPSHOT, E.SNAPSHOT_CROSSED): (
        awaiting,
        lambda a: a.on_snapshot(snap(10, CROSSED), 0),
        ["BookCrossed", "StatusChange"],
    ),
    (S.RETRY_WAIT, E.SNAPSHOT_CROSSED): (
        retry_wait,
        lambda a: a.on_snapshot(snap(12, CROSSED), 0),
        ["BookCrossed"],
    ),
    (S.RETRY_WAIT, E.RETRY_DUE): (
        retry_wait,
        lambda a: a.on_timer(999_999_999) + a.on_timer(1_000_000_000),
        ["SnapshotWanted"],
    ),
    (S.RETRY_WAIT, E.UPDATE_WITHOUT_BOOK): (retry_wait, lambda a: a.on_diff(diff(12, 12), 0), []),
    (S.RETRY_WAIT, E.SNAPSHOT_REFUSED): (
        retry_wait,
        lambda a: a.on_snapshot(snap(12, BAD), 0),
        [],
    ),
    (S.RETRY_WAIT, E.SNAPSHOT_UNUSABLE): (
        lambda: retry_wait(book(checksum=True)),
        lambda a: a.on_snapshot(snap(10, checksum=1), 0),
        [],
    ),
    (S.RETRY_WAIT, E.SNAPSHOT_BROKEN): (
        retry_wait_with_bad_checksum_buffered,
        lambda a: a.on_snapshot(snap(10), 0),
        [],
    ),
    (S.RETRY_WAIT, E.BOOK_BUILT): (
        retry_wait,
        lambda a: a.on_snapshot(snap(11), 0),
        ["BookReset", "StatusChange"],
    ),
    (S.RETRY_WAIT, E.BOOK_BUILT_WITH_HOLE): (
        retry_wait_for_20_from_one,
        lambda a: a.on_snapshot(snap(10), 500),
        ["BookReset", "StatusChange"],
    ),
    (S.SYNCED, E.UPDATE_HELD): (synced, lambda a: a.on_diff(far_copy(1), 0), []),
    (S.HOLE, E.UPDATE_HELD): (
        lambda: hole(conns=(0, 1, 2)),
        # From the connection that delivered 13: another's 13 would contradict it.
        lambda a: a.on_diff(far_copy(0), 0),
        [],
    ),
    (S.SYNCED, E.VENUE_RESET): (
        lambda: behind(synced()),
        lambda a: a.on_diff(diff(4, 4, conn=1), RESET_WINDOW_NS),
        ["StatusChange", "SnapshotWanted"],
    ),
    (S.HOLE, E.VENUE_RESET): (
        lambda: behind(hole()),
        lambda a: a.on_diff(diff(4, 4, conn=0), RESET_WINDOW_NS),
        ["StatusChange", "SnapshotWanted"],
    ),
    (S.AWAITING_SNAPSHOT, E.VENUE_RESET): (
        resyncing_behind,
        lambda a: a.on_snapshot(RESET_SNAPSHOT, RESET_WINDOW_NS),
        ["StatusChange", "SnapshotWanted"],
    ),
}


@pytest.mark.parametrize("pair", list(SYNC_SPEC.expected))
def test_each_sync_row_is_what_the_book_does(pair: tuple[Sync, SyncEvent]) -> None:
    arb, out, published = drive_row(SYNC_SCENARIOS, SYNC_SPEC.expected, pair, lambda a: a.sync)
    assert kinds(out) == published
    assert arb.has_book == (arb.sync in (S.SYNCED, S.HOLE))
    assert arb.snapshot_wanted == (arb.sync is S.AWAITING_SNAPSHOT)
    assert (arb.deadline_ns() is not None) == (arb.sync in (S.HOLE, S.RETRY_WAIT))


def test_every_sync_row_has_a_scenario() -> None:
    assert set(SYNC_SCENARIOS) == set(SYNC_SPEC.expected)


@pytest.mark.parametrize(
    "at_ns", [RESET_WINDOW_NS - 1, 10 * RESET_WINDOW_NS], ids=["within the window", "silent"]
)
def test_a_snapshot_below_the_book_before_a_reset_is_shown_is_not_used(at_ns: int) -> None:
    """Every connection below the book's id, not shown for the reset window by a stale
    update (lagging connections, a REST server answering from behind): no venue reset, no
    book from the older point; a newer snapshot is asked."""
    arb = resyncing_with_checksum()
    out = arb.on_snapshot(RESET_SNAPSHOT, at_ns)
    assert out == [SnapshotWanted(KEY, "snapshot older than the book")]
    assert (arb.sync, arb.state, arb.applied_id) == (Sync.AWAITING_SNAPSHOT, St.RESYNCING, 12)
    assert arb.stats.venue_resets == 0 and arb.stats.snapshots_unused == 1


def test_a_snapshot_below_the_book_waiting_to_retry_is_not_used_even_after_a_reset() -> None:
    """A reset shown while the book waits to ask again (a refused snapshot): a snapshot
    below the book is not used then; the next one asked may be."""
    arb = resyncing_behind()
    arb.on_snapshot(snap(10, BAD), RESET_WINDOW_NS)
    assert arb.sync is Sync.RETRY_WAIT
    arb.on_diff(diff(5, 5, conn=0), 2 * RESET_WINDOW_NS)
    assert arb.on_snapshot(RESET_SNAPSHOT, 2 * RESET_WINDOW_NS) == []
    assert (arb.sync, arb.applied_id, arb.stats.venue_resets) == (Sync.RETRY_WAIT, 12, 0)


def stale_hole() -> SequencedBook:
    return all_down(hole())


def resyncing_without_connection() -> SequencedBook:
    arb = stale_hole()
    arb.on_timer(WINDOW_NS)
    return arb


def stale_synced() -> SequencedBook:
    return all_down(synced())


def stale_then_behind() -> SequencedBook:
    """STALE with a book; connection 0 came back with restarted ids."""
    arb = stale_synced()
    arb.on_connection(0, True, 0)
    return behind(arb)


DOWN = "every upstream connection down"
RESET = "venue reset: every connection below the book's id 11 for 0 ms (up to id 4)"
RESET_BY_SNAPSHOT = (
    "venue reset: snapshot id 5 and every connection below the book's id 12 for 0 ms (up to id 4)"
)
WINDOW_PASSED = "gap 12: reorder window passed with ids missing"

#: (status before, event) -> (setup, input, what is published); a StatusChange in it
#: carries the table's new state.
STATUS_SCENARIOS: dict[tuple[SymbolState, StatusEvent], Scenario] = {
    (St.SYNCING, SE.ALL_DOWN): (
        lambda: book(conns=(0,)),
        lambda a: a.on_connection(0, False, 0),
        [StatusChange(KEY, St.STALE, DOWN)],
    ),
    (St.LIVE, SE.ALL_DOWN): (
        synced,
        lambda a: a.on_connection(0, False, 0) + a.on_connection(1, False, 0),
        [StatusChange(KEY, St.STALE, DOWN)],
    ),
    (St.RESYNCING, SE.ALL_DOWN): (
        lambda: resyncing(conns=(1,)),
        lambda a: a.on_connection(1, False, 0),
        [StatusChange(KEY, St.STALE, DOWN)],
    ),
    (St.STALE, SE.ALL_DOWN): (lambda: all_down(book()), lambda a: a.on_connection(7, False, 0), []),
    (St.LIVE, SE.GAP): (
        hole,
        lambda a: a.on_timer(WINDOW_NS),
        [StatusChange(KEY, St.RESYNCING, WINDOW_PASSED), SnapshotWanted(KEY, WINDOW_PASSED)],
    ),
    (St.STALE, SE.GAP): (
        stale_hole,
        lambda a: a.on_timer(WINDOW_NS),
        [StatusChange(KEY, St.RESYNCING, WINDOW_PASSED), SnapshotWanted(KEY, WINDOW_PASSED)],
    ),
    (St.SYNCING, SE.RESET_WITH_CONNECTION): (
        book,
        lambda a: a.on_snapshot(snap(10), 0),
        [BookReset(KEY, 1, 0, 10, 0), StatusChange(KEY, St.LIVE, "snapshot applied")],
    ),
    (St.RESYNCING, SE.RESET_WITH_CONNECTION): (
        resyncing,
        lambda a: a.on_snapshot(snap(20), 0),
        [BookReset(KEY, 2, 0, 20, 0), StatusChange(KEY, St.LIVE, "snapshot applied")],
    ),
    (St.STALE, SE.RESET_WITH_CONNECTION): (
        lambda: all_down(book()),
        lambda a: a.on_connection(0, True, 0) + a.on_snapshot(snap(10), 0),
        [BookReset(KEY, 1, 0, 10, 0), StatusChange(KEY, St.LIVE, "snapshot applied")],
    ),
    (St.SYNCING, SE.RESET_WITHOUT_CONNECTION): (
        lambda: book(conns=()),
        lambda a: a.on_snapshot(snap(10), 0),
        [BookReset(KEY, 1, 0, 10, 0), StatusChange(KEY, St.STALE, DOWN)],
    ),
    (St.RESYNCING, SE.RESET_WITHOUT_CONNECTION): (
        resyncing_without_connection,
        lambda a: a.on_snapshot(snap(20), 0),
        [BookReset(KEY, 2, 0, 20, 0), StatusChange(KEY, St.STALE, DOWN)],
    ),
    (St.STALE, SE.RESET_WITHOUT_CONNECTION): (
        lambda: all_down(book()),
        lambda a: a.on_snapshot(snap(10), 0),
        [BookReset(KEY, 1, 0, 10, 0)],
    ),
    (St.STALE, SE.UPSTREAM_BACK): (
        stale_synced,
        lambda a: a.on_connection(0, True, 0) + a.on_diff(diff(12, 12), 0),
        [
            BookDelta(KEY, 1, 1, 12, (("100", "12"),), (), 0),
            StatusChange(KEY, St.LIVE, "upstream back"),
        ],
    ),
    (St.SYNCING, SE.SNAPSHOT_NOT_USED): (
        book,
        lambda a: a.on_snapshot(snap(10, CROSSED), 0),
        [BookCrossed(KEY, -1, CROSSED_REASON), StatusChange(KEY, St.SYNCING, WAITING)],
    ),
    (St.RESYNCING, SE.SNAPSHOT_NOT_USED): (
        resyncing,
        lambda a: a.on_snapshot(snap(20, CROSSED), 0),
        [BookCrossed(KEY, -1, CROSSED_REASON), StatusChange(KEY, St.RESYNCING, WAITING)],
    ),
    (St.STALE, SE.SNAPSHOT_NOT_USED): (
        lambda: all_down(book()),
        lambda a: a.on_snapshot(snap(10, CROSSED), 0),
        [BookCrossed(KEY, -1, CROSSED_REASON)],
    ),
    (St.LIVE, SE.VENUE_RESET): (
        lambda: behind(synced()),
        lambda a: a.on_diff(diff(4, 4, conn=1), RESET_WINDOW_NS),
        [StatusChange(KEY, St.RESYNCING, RESET), SnapshotWanted(KEY, RESET)],
    ),
    (St.STALE, SE.VENUE_RESET): (
        stale_then_behind,
        lambda a: a.on_diff(diff(4, 4, conn=0), RESET_WINDOW_NS),
        [StatusChange(KEY, St.RESYNCING, RESET), SnapshotWanted(KEY, RESET)],
    ),
    (St.RESYNCING, SE.VENUE_RESET): (
        resyncing_behind,
        lambda a: a.on_snapshot(RESET_SNAPSHOT, RESET_WINDOW_NS),
        [
            StatusChange(KEY, St.RESYNCING, RESET_BY_SNAPSHOT),
            SnapshotWanted(KEY, "snapshot checksum mismatch"),
        ],
    ),
}


@pytest.mark.parametrize("pair", list(STATUS_SPEC.expected))
def test_each_status_row_is_what_the_book_does(pair: tuple[SymbolState, StatusEvent]) -> None:
    _, out, published = drive_row(STATUS_SCENARIOS, STATUS_SPEC.expected, pair, lambda a: a.state)
    assert out == published


def test_every_status_row_has_a_scenario() -> None:
    assert set(STATUS_SCENARIOS) == set(STATUS_SPEC.expected)


def test_a_snapshot_broken_by_a_buffered_update_counts_a_gap_without_announcing_it() -> None:
    arb = waiting_for_11_with_bad_checksum()
    out = arb.on_snapshot(snap(10), 0)
    assert out == [SnapshotWanted(KEY, "checksum mismatch after the snapshot")]
    assert (arb.stats.gaps, arb.stats.resyncs, arb.state) == (1, 1, St.SYNCING)


def test_the_hole_clock_starts_when_the_hole_opens() -> None:
    arb = waiting_for_20_from_one()
    arb.on_snapshot(snap(10), 500)
    assert arb.deadline_ns() == 500 + WINDOW_NS
    arb = synced()
    arb.on_diff(diff(13, 13), 700)
    assert arb.deadline_ns() == 700 + WINDOW_NS
    assert arb.on_timer(700 + WINDOW_NS - 1) == [] and arb.sync is Sync.HOLE


# --- crossed books (venues whose books never cross) -----------------------------------------


def test_an_update_that_crosses_the_book_is_not_published_and_the_book_is_rebuilt() -> None:
    arb = synced()
    out = arb.on_diff(crossing(12), 0)
    reason = "crossed book (bid 101.5 >= ask 101)"
    assert out == [
        BookCrossed(KEY, -1, reason),
        StatusChange(KEY, St.RESYNCING, reason),
        SnapshotWanted(KEY, reason),
    ]
    assert not arb.has_book and arb.state is St.RESYNCING
    assert (arb.stats.crossed, arb.stats.crossed_faults, arb.stats.resyncs) == (1, 1, 1)
    assert arb.stats.gaps == 0
    # The rebuild is crossed again: not used, said so, and the next snapshot waits.
    out = arb.on_snapshot(snap(12, CROSSED), 0)
    assert out == [BookCrossed(KEY, -1, CROSSED_REASON), StatusChange(KEY, St.RESYNCING, WAITING)]
    assert arb.sync is Sync.RETRY_WAIT and not arb.has_book and arb.state is St.RESYNCING


def test_crossed_snapshots_in_a_row_wait_longer_each_time_until_a_good_one() -> None:
    arb = retry_wait()
    waits = []
    now = 0
    for _ in range(8):
        deadline = arb.deadline_ns()
        assert deadline is not None
        waits.append((deadline - now) // 1_000_000_000)
        now = deadline
        assert arb.on_timer(now) == [SnapshotWanted(KEY, "retry after a crossed snapshot")]
        out = arb.on_snapshot(snap(10, CROSSED), now)
        assert kinds(out) == ["BookCrossed", "StatusChange"]
        assert arb.sync is Sync.RETRY_WAIT
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    assert arb.stats.crossed_faults == 9
    arb.on_timer(arb.deadline_ns() or 0)
    out = arb.on_snapshot(snap(11), now)
    assert kinds(out) == ["BookReset", "StatusChange"] and arb.state is St.LIVE
    # A good book resets the wait: the next crossed snapshot waits 1 s again.
    arb.on_diff(crossing(12), now)
    arb.on_snapshot(snap(12, CROSSED), now)
    assert arb.deadline_ns() == now + 1_000_000_000


def test_a_newer_snapshot_that_is_crossed_while_live_is_not_published() -> None:
    arb = synced()
    in_band = DepthSnapshot("binance", "BTCUSDT", 30, CROSSED, (("101", "1"),), 0, 0)
    out = arb.on_snapshot(in_band, 0)
    assert kinds(out) == ["BookCrossed", "StatusChange", "SnapshotWanted"]
    assert not arb.has_book and arb.state is St.RESYNCING


def test_a_venue_whose_books_may_cross_publishes_and_counts_them() -> None:
    arb = SequencedBook(KEY, BinanceSpotRule(), may_cross=True)
    arb.on_connection(0, True, 0)
    out = arb.on_snapshot(snap(10, CROSSED), 0)
    assert kinds(out) == ["BookReset", "StatusChange"] and arb.state is St.LIVE
    assert arb.book.is_crossed()
    out = arb.on_diff(DepthDiff("binance", "BTCUSDT", 11, 11, -1, (("103", "1"),), (), 0, 0, 0), 0)
    assert kinds(out) == ["BookDelta"] and arb.state is St.LIVE
    assert (arb.stats.crossed, arb.stats.crossed_faults) == (2, 0)
