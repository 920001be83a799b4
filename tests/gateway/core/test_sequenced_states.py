"""SequencedBook's two state machines, as tables.

Every row of SYNC_TRANSITIONS and STATUS_TRANSITIONS is asserted twice: literally (the
table is the one below), and by driving a real SequencedBook into the row's state and
giving it the input that causes the row's event (the new state and the published events
are the row's). Every pair missing from a table raises UndefinedTransition.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable

import pytest

from gateway.core.arbiter import BinanceSpotRule
from gateway.core.book import L2Book
from gateway.core.model import (
    ArbiterEvent,
    BookDelta,
    BookReset,
    DepthDiff,
    DepthSnapshot,
    SnapshotWanted,
    StatusChange,
    SymbolState,
)
from gateway.core.sequenced import (
    STATUS_TRANSITIONS,
    SYNC_TRANSITIONS,
    SequencedBook,
    StatusAction,
    StatusEvent,
    Sync,
    SyncAction,
    SyncEvent,
)
from gateway.core.transitions import UndefinedTransition, transition

KEY = "binance:BTCUSDT"
WINDOW_NS = 1_000

S, E, A = Sync, SyncEvent, SyncAction
St, SE = SymbolState, StatusEvent
ANNOUNCE = (StatusAction.ANNOUNCE,)

EXPECTED_SYNC = {
    (S.UNSYNCED, E.UPDATE_WITHOUT_BOOK): (S.AWAITING_SNAPSHOT, (A.ASK_SNAPSHOT,)),
    (S.AWAITING_SNAPSHOT, E.UPDATE_WITHOUT_BOOK): (S.AWAITING_SNAPSHOT, ()),
    (S.UNSYNCED, E.SNAPSHOT_REFUSED): (S.UNSYNCED, ()),
    (S.AWAITING_SNAPSHOT, E.SNAPSHOT_REFUSED): (S.AWAITING_SNAPSHOT, ()),
    (S.UNSYNCED, E.SNAPSHOT_UNUSABLE): (S.AWAITING_SNAPSHOT, (A.ASK_SNAPSHOT,)),
    (S.AWAITING_SNAPSHOT, E.SNAPSHOT_UNUSABLE): (S.AWAITING_SNAPSHOT, (A.ASK_SNAPSHOT,)),
    (S.AWAITING_SNAPSHOT, E.SNAPSHOT_BROKEN): (
        S.AWAITING_SNAPSHOT,
        (A.COUNT_GAP, A.ASK_SNAPSHOT),
    ),
    (S.UNSYNCED, E.BOOK_BUILT): (S.SYNCED, (A.PUBLISH_RESET,)),
    (S.AWAITING_SNAPSHOT, E.BOOK_BUILT): (S.SYNCED, (A.PUBLISH_RESET,)),
    (S.AWAITING_SNAPSHOT, E.BOOK_BUILT_WITH_HOLE): (S.HOLE, (A.PUBLISH_RESET, A.START_HOLE_CLOCK)),
    (S.SYNCED, E.HOLE_OPENED): (S.HOLE, (A.START_HOLE_CLOCK,)),
    (S.HOLE, E.HOLE_CLOSED): (S.SYNCED, (A.STOP_HOLE_CLOCK,)),
    (S.SYNCED, E.GAP): (S.AWAITING_SNAPSHOT, (A.COUNT_GAP, A.ANNOUNCE_RESYNC, A.ASK_SNAPSHOT)),
    (S.HOLE, E.GAP): (
        S.AWAITING_SNAPSHOT,
        (A.STOP_HOLE_CLOCK, A.COUNT_GAP, A.ANNOUNCE_RESYNC, A.ASK_SNAPSHOT),
    ),
}

EXPECTED_STATUS = {
    (St.SYNCING, SE.ALL_DOWN): (St.STALE, ANNOUNCE),
    (St.LIVE, SE.ALL_DOWN): (St.STALE, ANNOUNCE),
    (St.RESYNCING, SE.ALL_DOWN): (St.STALE, ANNOUNCE),
    (St.STALE, SE.ALL_DOWN): (St.STALE, ()),
    (St.LIVE, SE.GAP): (St.RESYNCING, ANNOUNCE),
    (St.STALE, SE.GAP): (St.RESYNCING, ANNOUNCE),
    (St.SYNCING, SE.RESET_WITH_CONNECTION): (St.LIVE, ANNOUNCE),
    (St.RESYNCING, SE.RESET_WITH_CONNECTION): (St.LIVE, ANNOUNCE),
    (St.STALE, SE.RESET_WITH_CONNECTION): (St.LIVE, ANNOUNCE),
    (St.SYNCING, SE.RESET_WITHOUT_CONNECTION): (St.STALE, ANNOUNCE),
    (St.RESYNCING, SE.RESET_WITHOUT_CONNECTION): (St.STALE, ANNOUNCE),
    (St.STALE, SE.RESET_WITHOUT_CONNECTION): (St.STALE, ()),
    (St.STALE, SE.UPSTREAM_BACK): (St.LIVE, ANNOUNCE),
}


def test_the_tables_are_exactly_these_rows() -> None:
    assert dict(SYNC_TRANSITIONS) == EXPECTED_SYNC
    assert dict(STATUS_TRANSITIONS) == EXPECTED_STATUS


SYNC_PAIRS = list(itertools.product(Sync, SyncEvent))
STATUS_PAIRS = list(itertools.product(SymbolState, StatusEvent))


@pytest.mark.parametrize(("state", "event"), [p for p in SYNC_PAIRS if p not in EXPECTED_SYNC])
def test_undefined_sync_pairs_are_errors(state: Sync, event: SyncEvent) -> None:
    with pytest.raises(UndefinedTransition, match=f"no transition for {event.name}"):
        transition("sync", SYNC_TRANSITIONS, state, event)


@pytest.mark.parametrize(("state", "event"), [p for p in STATUS_PAIRS if p not in EXPECTED_STATUS])
def test_undefined_status_pairs_are_errors(state: SymbolState, event: StatusEvent) -> None:
    with pytest.raises(UndefinedTransition, match=f"in state {state.name}"):
        transition("status", STATUS_TRANSITIONS, state, event)


def test_an_undefined_event_in_a_real_book_raises() -> None:
    arb = book()
    with pytest.raises(UndefinedTransition):
        arb._sync(SyncEvent.GAP, [])  # no book: nothing can be lost
    assert arb.sync is Sync.UNSYNCED


# --- driving a real book into each row ------------------------------------------------------


def crc(book: L2Book) -> int:
    return zlib.crc32(repr(book.normalized()).encode())


def diff(first: int, last: int, conn: int = 0, checksum: int | None = None) -> DepthDiff:
    bids = (("100", str(last)),)
    return DepthDiff("binance", "BTCUSDT", first, last, -1, bids, (), 0, 0, conn, checksum)


def snap(
    last_id: int, bids: tuple[tuple[str, str], ...] = (("99", "1"),), **kw: object
) -> DepthSnapshot:
    return DepthSnapshot("binance", "BTCUSDT", last_id, bids, (("101", "1"),), 0, -1, **kw)  # type: ignore[arg-type]


BAD = (("x", "1"),)


def book(conns: tuple[int, ...] = (0, 1), checksum: bool = False) -> SequencedBook:
    arb = SequencedBook(
        KEY, BinanceSpotRule(), reorder_window_ns=WINDOW_NS, checksum=crc if checksum else None
    )
    for conn in conns:
        arb.on_connection(conn, True, 0)
    return arb


def awaiting(**kw: object) -> SequencedBook:
    """AWAITING_SNAPSHOT, update 11 buffered."""
    arb = book(**kw)  # type: ignore[arg-type]
    arb.on_diff(diff(11, 11), 0)
    assert arb.sync is Sync.AWAITING_SNAPSHOT
    return arb


def synced(**kw: object) -> SequencedBook:
    """SYNCED at id 11, LIVE."""
    arb = awaiting(**kw)
    arb.on_snapshot(snap(10), 0)
    assert (arb.sync, arb.state, arb.applied_id) == (Sync.SYNCED, St.LIVE, 11)
    return arb


def hole() -> SequencedBook:
    """HOLE: 13 buffered, 12 missing, connection 1 may still deliver it."""
    arb = synced()
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


Setup = Callable[[], SequencedBook]
Act = Callable[[SequencedBook], list[ArbiterEvent]]


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


#: (the machine's state before, event) -> (drive a book into that state, the input that
#: causes the event, the published event kinds). The state after is the table's.
SYNC_SCENARIOS: dict[tuple[Sync, SyncEvent], tuple[Setup, Act, list[str]]] = {
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
    (S.UNSYNCED, E.SNAPSHOT_REFUSED): (book, lambda a: a.on_snapshot(snap(10, BAD), 0), []),
    (S.AWAITING_SNAPSHOT, E.SNAPSHOT_REFUSED): (
        awaiting,
        lambda a: a.on_snapshot(snap(10, BAD), 0),
        [],
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
}


@pytest.mark.parametrize(("state", "event"), list(EXPECTED_SYNC))
def test_each_sync_row_is_what_the_book_does(state: Sync, event: SyncEvent) -> None:
    setup, act, published = SYNC_SCENARIOS[state, event]
    arb = setup()
    assert arb.sync is state
    out = act(arb)
    new_state, _ = EXPECTED_SYNC[state, event]
    assert arb.sync is new_state
    assert kinds(out) == published
    assert arb.has_book == (new_state in (S.SYNCED, S.HOLE))
    assert arb.snapshot_wanted == (new_state is S.AWAITING_SNAPSHOT)
    assert (arb.deadline_ns() is not None) == (new_state is S.HOLE)


def test_every_sync_row_has_a_scenario() -> None:
    assert set(SYNC_SCENARIOS) == set(EXPECTED_SYNC)


def stale_hole() -> SequencedBook:
    return all_down(hole())


def resyncing_without_connection() -> SequencedBook:
    arb = stale_hole()
    arb.on_timer(WINDOW_NS)
    return arb


def stale_synced() -> SequencedBook:
    return all_down(synced())


DOWN = "every upstream connection down"
WINDOW_PASSED = "reorder window passed with ids missing"

#: (status before, event) -> (setup, input, what is published); a StatusChange in it
#: carries the table's new state.
STATUS_SCENARIOS: dict[tuple[SymbolState, StatusEvent], tuple[Setup, Act, list[ArbiterEvent]]] = {
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
}


@pytest.mark.parametrize(("state", "event"), list(EXPECTED_STATUS))
def test_each_status_row_is_what_the_book_does(state: SymbolState, event: StatusEvent) -> None:
    setup, act, published = STATUS_SCENARIOS[state, event]
    arb = setup()
    assert arb.state is state
    out = act(arb)
    assert arb.state is EXPECTED_STATUS[state, event][0]
    assert out == published


def test_every_status_row_has_a_scenario() -> None:
    assert set(STATUS_SCENARIOS) == set(EXPECTED_STATUS)


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
