"""The subscriber-side book state machine: its table row by row, undefined pairs, and the
classification of snapshots and deltas (continuity, bad levels, strict order)."""

from __future__ import annotations

import pytest

from gateway.core.subscriber import TRANSITIONS
from gateway.core.subscriber import BookSyncState
from gateway.core.subscriber import SubscribedBook
from gateway.core.subscriber import SubscriberAction
from gateway.core.subscriber import SubscriberError
from gateway.core.subscriber import SubscriberEvent

from .state_tables import specify

S, E, A = BookSyncState, SubscriberEvent, SubscriberAction

#: The machine written out: state, event, new state, actions.
SUBSCRIBER_SPEC = specify(
    "subscriber",
    TRANSITIONS,
    """
    AWAITING_SNAPSHOT  SNAPSHOT               LIVE               BOOK_READY
    AWAITING_SNAPSHOT  BAD_SNAPSHOT           VOID               BAD_LEVEL DISCARD
    AWAITING_SNAPSHOT  DELTA_DOES_NOT_FOLLOW  AWAITING_SNAPSHOT  EARLY_DELTA
    AWAITING_SNAPSHOT  DISCONNECTED           AWAITING_SNAPSHOT  DISCARD
    LIVE               SNAPSHOT               LIVE               BOOK_READY
    LIVE               BAD_SNAPSHOT           VOID               BAD_LEVEL DISCARD
    LIVE               DELTA_FOLLOWS          LIVE               BOOK_UPDATED
    LIVE               DELTA_BAD_LEVEL        RESYNCING          BAD_LEVEL DISCARD ASK_RESYNC
    LIVE               DELTA_DOES_NOT_FOLLOW  RESYNCING          GAP DISCARD ASK_RESYNC
    LIVE               DISCONNECTED           AWAITING_SNAPSHOT  DISCARD
    RESYNCING          SNAPSHOT               LIVE               BOOK_READY
    RESYNCING          BAD_SNAPSHOT           VOID               BAD_LEVEL DISCARD
    RESYNCING          DELTA_DOES_NOT_FOLLOW  RESYNCING          IGNORED_DELTA
    RESYNCING          DISCONNECTED           AWAITING_SNAPSHOT  DISCARD
    VOID               SNAPSHOT               LIVE               BOOK_READY
    VOID               BAD_SNAPSHOT           VOID               BAD_LEVEL DISCARD
    VOID               DELTA_DOES_NOT_FOLLOW  RESYNCING          GAP ASK_RESYNC
    VOID               DISCONNECTED           AWAITING_SNAPSHOT  DISCARD
    AWAITING_SNAPSHOT  DETACHED               AWAITING_SNAPSHOT  DISCARD
    LIVE               DETACHED               DETACHED
    RESYNCING          DETACHED               AWAITING_SNAPSHOT  DISCARD
    VOID               DETACHED               AWAITING_SNAPSHOT  DISCARD
    DETACHED           SNAPSHOT               LIVE               BOOK_READY
    DETACHED           BAD_SNAPSHOT           VOID               BAD_LEVEL DISCARD
    DETACHED           DELTA_DOES_NOT_FOLLOW  DETACHED           EARLY_DELTA
    DETACHED           DISCONNECTED           AWAITING_SNAPSHOT  DISCARD
    DETACHED           DETACHED               DETACHED
    DETACHED           RECOVERED              LIVE               BOOK_RECOVERED
    DETACHED           NOT_RECOVERED          AWAITING_SNAPSHOT  DISCARD
    """,
)
UNDEFINED = SUBSCRIBER_SPEC.undefined()
BIDS = [("100", "1"), ("99", "2")]
ASKS = [("101", "1")]


def in_state(state: BookSyncState) -> SubscribedBook:
    """A book brought to ``state`` through its inputs."""
    sub = SubscribedBook()
    if state is not S.AWAITING_SNAPSHOT:
        sub.on_snapshot(1, 0, 1000, BIDS, ASKS)
    if state is S.RESYNCING:
        sub.on_delta(1, 5, 1005, [], [])
    elif state is S.VOID:
        sub.on_snapshot(1, 0, 1000, [("x", "1")], [])
    elif state is S.DETACHED:
        sub.on_disconnected(keep=True)
    assert sub.state is state
    return sub


@pytest.mark.parametrize(("state", "event"), list(SUBSCRIBER_SPEC.expected), ids=lambda x: x.name)
def test_every_row(state: BookSyncState, event: SubscriberEvent) -> None:
    sub = in_state(state)
    new_state, actions = SUBSCRIBER_SPEC.expected[state, event]
    assert sub.handle(event) == actions
    assert sub.state is new_state
    assert sub.synced is (new_state is S.LIVE)
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
    sub = in_state(S.LIVE)
    sub.on_delta(1, 1, 1001, [], [])
    assert sub.on_delta(epoch, seq, 2000, [], []) == (A.GAP, A.DISCARD, A.ASK_RESYNC)
    assert sub.state is S.RESYNCING and sub.book.bids() == []
    assert sub.problem == f"sequence gap: expected epoch 1 seq 2, got epoch {epoch} seq {seq}"
    assert (sub.epoch, sub.seq) == (1, 1), "the position of the last book"
    assert sub.on_delta(epoch, seq + 1, 2001, [], []) == (A.IGNORED_DELTA,)
    assert sub.on_snapshot(epoch, seq + 1, 2001, BIDS, ASKS) == (A.BOOK_READY,)
    assert sub.synced and (sub.epoch, sub.seq) == (epoch, seq + 1)


def test_a_bad_level_in_a_delta_asks_for_a_resync() -> None:
    sub = in_state(S.LIVE)
    assert sub.on_delta(1, 1, 1001, [("-1", "1")], []) == (A.BAD_LEVEL, A.DISCARD, A.ASK_RESYNC)
    assert sub.problem.startswith("bad level in delta")
    assert sub.state is S.RESYNCING


def test_a_bad_snapshot_voids_the_book_until_a_delta_asks_for_a_resync() -> None:
    sub = in_state(S.LIVE)
    assert sub.on_snapshot(1, 3, 1003, [("nan?", "1")], []) == (A.BAD_LEVEL, A.DISCARD)
    assert (sub.state, sub.synced) == (S.VOID, False)
    assert sub.problem.startswith("bad level in snapshot")
    assert sub.on_delta(1, 4, 1004, [], []) == (A.GAP, A.ASK_RESYNC)
    assert sub.state is S.RESYNCING


@pytest.mark.parametrize("strict", [False, True])
def test_snapshot_order_is_checked_only_when_strict(strict: bool) -> None:
    sub = SubscribedBook(strict_snapshot_order=strict)
    actions = sub.on_snapshot(1, 0, 1000, [("99", "1"), ("100", "1")], ASKS)
    assert actions == ((A.BAD_LEVEL, A.DISCARD) if strict else (A.BOOK_READY,))
    assert SubscribedBook(strict_snapshot_order=True).on_snapshot(1, 0, 1, BIDS, ASKS) == (
        A.BOOK_READY,
    )


def test_a_disconnection_discards_the_book() -> None:
    sub = in_state(S.LIVE)
    assert sub.on_disconnected() == (A.DISCARD,)
    assert sub.state is S.AWAITING_SNAPSHOT and not sub.synced
    assert sub.on_delta(1, 1, 1001, [], []) == (A.EARLY_DELTA,)


def test_a_detached_book_is_kept_at_its_position_and_recovered_or_discarded() -> None:
    sub = in_state(S.LIVE)
    sub.on_delta(1, 1, 1001, [("98", "1")], [])
    assert sub.on_disconnected(keep=True) == ()
    assert (sub.state, sub.synced) == (S.DETACHED, False)
    assert (sub.epoch, sub.seq) == (1, 1) and sub.book.bid_count == 3
    assert sub.on_recovery(True) == (A.BOOK_RECOVERED,)
    assert sub.on_delta(1, 2, 1002, [("97", "1")], []) == (A.BOOK_UPDATED,)
    assert sub.book.bid_count == 4
    sub.on_disconnected(keep=True)
    assert sub.on_recovery(False) == (A.DISCARD,)
    assert sub.state is S.AWAITING_SNAPSHOT and sub.book.bid_count == 0
