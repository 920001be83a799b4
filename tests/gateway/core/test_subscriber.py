"""The subscriber-side book state machine: its table row by row, undefined pairs, and the
classification of snapshots and deltas (continuity, bad levels, strict order)."""

from __future__ import annotations

import itertools

import pytest

from gateway.core.model import SymbolState
from gateway.core.subscriber import (
    TRANSITIONS,
    BookSyncState,
    SubscribedBook,
    SubscriberAction,
    SubscriberError,
    SubscriberEvent,
)

AWAITING = BookSyncState.AWAITING_SNAPSHOT
LIVE = BookSyncState.LIVE
RESYNCING = BookSyncState.RESYNCING
VOID = BookSyncState.VOID
E = SubscriberEvent
A = SubscriberAction

EXPECTED: dict[tuple[BookSyncState, SubscriberEvent], tuple[BookSyncState, tuple[A, ...]]] = {
    (AWAITING, E.SNAPSHOT): (LIVE, (A.BOOK_READY,)),
    (AWAITING, E.BAD_SNAPSHOT): (VOID, (A.BAD_LEVEL, A.DISCARD)),
    (AWAITING, E.DELTA_DOES_NOT_FOLLOW): (AWAITING, (A.EARLY_DELTA,)),
    (AWAITING, E.DISCONNECTED): (AWAITING, (A.DISCARD,)),
    (LIVE, E.SNAPSHOT): (LIVE, (A.BOOK_READY,)),
    (LIVE, E.BAD_SNAPSHOT): (VOID, (A.BAD_LEVEL, A.DISCARD)),
    (LIVE, E.DELTA_FOLLOWS): (LIVE, (A.BOOK_UPDATED,)),
    (LIVE, E.DELTA_BAD_LEVEL): (RESYNCING, (A.BAD_LEVEL, A.DISCARD, A.ASK_RESYNC)),
    (LIVE, E.DELTA_DOES_NOT_FOLLOW): (RESYNCING, (A.GAP, A.DISCARD, A.ASK_RESYNC)),
    (LIVE, E.DISCONNECTED): (AWAITING, (A.DISCARD,)),
    (RESYNCING, E.SNAPSHOT): (LIVE, (A.BOOK_READY,)),
    (RESYNCING, E.BAD_SNAPSHOT): (VOID, (A.BAD_LEVEL, A.DISCARD)),
    (RESYNCING, E.DELTA_DOES_NOT_FOLLOW): (RESYNCING, (A.IGNORED_DELTA,)),
    (RESYNCING, E.DISCONNECTED): (AWAITING, (A.DISCARD,)),
    (VOID, E.SNAPSHOT): (LIVE, (A.BOOK_READY,)),
    (VOID, E.BAD_SNAPSHOT): (VOID, (A.BAD_LEVEL, A.DISCARD)),
    (VOID, E.DELTA_DOES_NOT_FOLLOW): (RESYNCING, (A.GAP, A.ASK_RESYNC)),
    (VOID, E.DISCONNECTED): (AWAITING, (A.DISCARD,)),
}
UNDEFINED = sorted(
    set(itertools.product(BookSyncState, SubscriberEvent)) - set(EXPECTED),
    key=lambda pair: (pair[0].value, pair[1].value),
)
BIDS = [("100", "1"), ("99", "2")]
ASKS = [("101", "1")]


def in_state(state: BookSyncState) -> SubscribedBook:
    """A book brought to ``state`` through its inputs."""
    sub = SubscribedBook()
    if state is not AWAITING:
        sub.on_snapshot(1, 0, 1000, BIDS, ASKS)
    if state is RESYNCING:
        sub.on_delta(1, 5, 1005, [], [])
    elif state is VOID:
        sub.on_snapshot(1, 0, 1000, [("x", "1")], [])
    assert sub.state is state
    return sub


def test_the_table_is_the_documented_machine() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), list(EXPECTED), ids=lambda x: x.name)
def test_every_row(state: BookSyncState, event: SubscriberEvent) -> None:
    sub = in_state(state)
    new_state, actions = EXPECTED[state, event]
    assert sub.handle(event) == actions
    assert sub.state is new_state
    assert sub.synced is (new_state is LIVE)
    if A.DISCARD in actions:
        assert sub.book.bid_count == sub.book.ask_count == 0


@pytest.mark.parametrize(("state", "event"), UNDEFINED, ids=lambda x: x.name)
def test_undefined_pairs_are_errors(state: BookSyncState, event: SubscriberEvent) -> None:
    sub = in_state(state)
    with pytest.raises(SubscriberError, match=event.name):
        sub.handle(event)
    assert sub.state is state


# --- classification --------------------------------------------------------------------------


def test_snapshot_then_following_deltas_keep_the_book() -> None:
    sub = SubscribedBook()
    assert sub.on_delta(1, 3, 1003, [], []) == (A.EARLY_DELTA,)
    assert sub.on_snapshot(1, 7, 1007, BIDS, ASKS) == (A.BOOK_READY,)
    assert (sub.epoch, sub.seq, sub.venue_id) == (1, 7, 1007)
    assert sub.on_delta(1, 8, 1010, [("100", "0"), ("99.5", "3")], [("102", "4")]) == (
        A.BOOK_UPDATED,
    )
    assert (sub.epoch, sub.seq, sub.venue_id) == (1, 8, 1010)
    assert sub.book.bids() == [("99.5", "3"), ("99", "2")]
    assert sub.book.asks() == [("101", "1"), ("102", "4")]


@pytest.mark.parametrize(
    ("epoch", "seq"), [(1, 3), (1, 1), (1, 0), (2, 2), (0, 2)], ids=lambda v: str(v)
)
def test_a_delta_that_does_not_follow_is_a_gap(epoch: int, seq: int) -> None:
    sub = in_state(LIVE)
    sub.on_delta(1, 1, 1001, [], [])
    assert sub.on_delta(epoch, seq, 2000, [], []) == (A.GAP, A.DISCARD, A.ASK_RESYNC)
    assert sub.state is RESYNCING and sub.book.bids() == []
    assert sub.status is SymbolState.RESYNCING
    assert (
        sub.reason
        == sub.problem
        == (f"sequence gap: expected epoch 1 seq 2, got epoch {epoch} seq {seq}")
    )
    assert (sub.epoch, sub.seq) == (1, 1), "the position of the last book"
    assert sub.on_delta(epoch, seq + 1, 2001, [], []) == (A.IGNORED_DELTA,)
    assert sub.on_snapshot(epoch, seq + 1, 2001, BIDS, ASKS) == (A.BOOK_READY,)
    assert sub.synced and (sub.epoch, sub.seq) == (epoch, seq + 1)


def test_a_bad_level_in_a_delta_asks_for_a_resync() -> None:
    sub = in_state(LIVE)
    assert sub.on_delta(1, 1, 1001, [("-1", "1")], []) == (A.BAD_LEVEL, A.DISCARD, A.ASK_RESYNC)
    assert sub.problem.startswith("bad level in delta")
    assert sub.state is RESYNCING and sub.status is SymbolState.RESYNCING


def test_a_bad_snapshot_voids_the_book_until_a_delta_asks_for_a_resync() -> None:
    sub = in_state(LIVE)
    assert sub.on_snapshot(1, 3, 1003, [("nan?", "1")], []) == (A.BAD_LEVEL, A.DISCARD)
    assert sub.state is VOID and not sub.synced
    assert sub.problem.startswith("bad level in snapshot")
    assert sub.on_delta(1, 4, 1004, [], []) == (A.GAP, A.ASK_RESYNC)
    assert sub.state is RESYNCING and sub.status is SymbolState.RESYNCING


@pytest.mark.parametrize("strict", [False, True])
def test_snapshot_order_is_checked_only_when_strict(strict: bool) -> None:
    sub = SubscribedBook(strict_snapshot_order=strict)
    actions = sub.on_snapshot(1, 0, 1000, [("99", "1"), ("100", "1")], ASKS)
    assert actions == ((A.BAD_LEVEL, A.DISCARD) if strict else (A.BOOK_READY,))
    assert SubscribedBook(strict_snapshot_order=True).on_snapshot(1, 0, 1, BIDS, ASKS) == (
        A.BOOK_READY,
    )


def test_status_and_disconnection() -> None:
    sub = in_state(LIVE)
    sub.on_status(SymbolState.LIVE, "snapshot applied")
    assert (sub.status, sub.reason) == (SymbolState.LIVE, "snapshot applied")
    assert sub.state is LIVE
    assert sub.on_disconnected("gateway connection lost") == (A.DISCARD,)
    assert sub.state is AWAITING and not sub.synced
    assert (sub.status, sub.reason) == (SymbolState.STALE, "gateway connection lost")
    assert sub.on_delta(1, 1, 1001, [], []) == (A.EARLY_DELTA,)
