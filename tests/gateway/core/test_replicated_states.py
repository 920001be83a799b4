"""ReplicatedBook's two state machines, as tables.

Every row of REPLICA_TRANSITIONS and OUTPUT_TRANSITIONS is asserted literally (the table
is the spec below, test_transition_tables, which also raises every pair missing from it)
and by driving a real ReplicatedBook into the row's state and causing the row's event.
"""

from __future__ import annotations

import pytest

from gateway.core.model import BookCrossed
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthSnapshot
from gateway.core.model import ResubscribeWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.replicated import OUTPUT_TRANSITIONS
from gateway.core.replicated import PUBLISHED_STATE
from gateway.core.replicated import REPLICA_TRANSITIONS
from gateway.core.replicated import Output
from gateway.core.replicated import OutputEvent
from gateway.core.replicated import ReplicaEvent
from gateway.core.replicated import ReplicaState
from gateway.core.replicated import ReplicatedBook
from gateway.core.transitions import UndefinedTransition
from gateway.core.transitions import transition

from .state_tables import Scenario
from .state_tables import drive_row
from .state_tables import specify

KEY = "kraken:BTC/USD"

RS, RE = ReplicaState, ReplicaEvent
Out, OE = Output, OutputEvent

REPLICA_SPEC = specify(
    "replica",
    REPLICA_TRANSITIONS,
    """
    AWAITING_SNAPSHOT  SNAPSHOT_MATCHED  VALID              -
    VALID              SNAPSHOT_MATCHED  VALID              -
    AWAITING_SNAPSHOT  FAILED            AWAITING_SNAPSHOT  RESUBSCRIBE
    VALID              FAILED            AWAITING_SNAPSHOT  RESUBSCRIBE
    AWAITING_SNAPSHOT  SNAPSHOT_CROSSED  RETRY_WAIT         START_RETRY_CLOCK
    VALID              SNAPSHOT_CROSSED  RETRY_WAIT         START_RETRY_CLOCK
    RETRY_WAIT         SNAPSHOT_CROSSED  RETRY_WAIT         -
    RETRY_WAIT         SNAPSHOT_MATCHED  VALID              -
    RETRY_WAIT         FAILED            RETRY_WAIT         -
    RETRY_WAIT         RETRY_DUE         AWAITING_SNAPSHOT  RETRY
    """,
)

OUTPUT_SPEC = specify(
    "output",
    OUTPUT_TRANSITIONS,
    """
    SYNCING            ELECTED           LIVE               PUBLISH_RESET ANNOUNCE
    STALE_BEFORE_BOOK  ELECTED           LIVE               PUBLISH_RESET ANNOUNCE
    LIVE               ELECTED           LIVE               PUBLISH_SWITCH
    RESYNCING          ELECTED           LIVE               PUBLISH_SWITCH ANNOUNCE
    STALE              ELECTED           LIVE               PUBLISH_SWITCH ANNOUNCE
    LIVE               NO_VALID_REPLICA  RESYNCING          ANNOUNCE
    SYNCING            ALL_DOWN          STALE_BEFORE_BOOK  ANNOUNCE
    LIVE               ALL_DOWN          STALE              ANNOUNCE
    RESYNCING          ALL_DOWN          STALE              ANNOUNCE
    STALE_BEFORE_BOOK  ALL_DOWN          STALE_BEFORE_BOOK  -
    STALE              ALL_DOWN          STALE              -
    SYNCING            REPLICA_WAITS     SYNCING            ANNOUNCE
    RESYNCING          REPLICA_WAITS     RESYNCING          ANNOUNCE
    LIVE               REPLICA_WAITS     LIVE               -
    STALE_BEFORE_BOOK  REPLICA_WAITS     STALE_BEFORE_BOOK  -
    STALE              REPLICA_WAITS     STALE              -
    """,
)


def test_each_output_state_publishes_its_symbol_state() -> None:
    assert PUBLISHED_STATE == {
        Out.SYNCING: SymbolState.SYNCING,
        Out.STALE_BEFORE_BOOK: SymbolState.STALE,
        Out.LIVE: SymbolState.LIVE,
        Out.RESYNCING: SymbolState.RESYNCING,
        Out.STALE: SymbolState.STALE,
    }


def test_every_replica_pair_but_a_retry_outside_its_wait_is_defined() -> None:
    """A replica can always take a snapshot and always fail; only a waiting replica has
    a retry deadline."""
    assert REPLICA_SPEC.undefined() == [
        (RS.AWAITING_SNAPSHOT, RE.RETRY_DUE),
        (RS.VALID, RE.RETRY_DUE),
    ]
    with pytest.raises(UndefinedTransition, match="no transition for RETRY_DUE"):
        transition("replica", REPLICA_TRANSITIONS, RS.VALID, RE.RETRY_DUE)


def test_an_undefined_event_in_a_real_book_raises() -> None:
    arb = ReplicatedBook(KEY)
    with pytest.raises(UndefinedTransition):
        arb._output(OutputEvent.NO_VALID_REPLICA, "no leader to lose", [])
    assert arb.output is Output.SYNCING


# --- driving a real book into each row ------------------------------------------------------


def snap(conn: int, price: str = "100") -> DepthSnapshot:
    return DepthSnapshot("kraken", "BTC/USD", -1, ((price, "1"),), (("101", "1"),), 0, conn)


def book(*conns: int) -> ReplicatedBook:
    arb = ReplicatedBook(KEY)
    for conn in conns:
        arb.on_connection(conn, True, 0)
    return arb


def live() -> ReplicatedBook:
    """Leader 0 (bid 100); conn 1 valid with bid 99."""
    arb = book(0, 1)
    arb.on_snapshot(snap(0), 0)
    arb.on_snapshot(snap(1, "99"), 0)
    assert (arb.output, arb.leader) == (Output.LIVE, 0)
    return arb


def live_alone() -> ReplicatedBook:
    arb = book(0)
    arb.on_snapshot(snap(0), 0)
    return arb


def resyncing() -> ReplicatedBook:
    """Published before; conn 0's replica failed, conn 1 has none."""
    arb = book(0, 1)
    arb.on_snapshot(snap(0), 0)
    arb.invalidate(0, "sequence jump", 0)
    return arb


def stale() -> ReplicatedBook:
    arb = live_alone()
    arb.on_connection(0, False, 0)
    return arb


def stale_before_book() -> ReplicatedBook:
    arb = book(0)
    arb.on_connection(0, False, 0)
    return arb


DOWN = "every upstream connection down"
CROSSED_REASON = "crossed book (bid 102 >= ask 101)"


def waiting() -> ReplicatedBook:
    """Conn 0's replica waits after a crossed snapshot; nothing published."""
    arb = book(0)
    arb.on_snapshot(snap(0, "102"), 0)
    assert arb.replicas[0].state is RS.RETRY_WAIT and arb.deadline_ns() == 1_000_000_000
    return arb


def waits(conn: int, state: SymbolState) -> StatusChange:
    reason = f"conn {conn}: {CROSSED_REASON}; snapshot not used; next snapshot in 1 s"
    return StatusChange(KEY, state, reason)


#: (output before, event) -> (setup, input, what is published).
OUTPUT_SCENARIOS: dict[tuple[Output, OutputEvent], Scenario] = {
    (Out.SYNCING, OE.ELECTED): (
        lambda: book(0),
        lambda a: a.on_snapshot(snap(0), 0),
        [BookReset(KEY, 1, 0, 0, 0), StatusChange(KEY, SymbolState.LIVE, "snapshot")],
    ),
    (Out.STALE_BEFORE_BOOK, OE.ELECTED): (
        stale_before_book,
        lambda a: a.on_connection(3, True, 0) + a.on_snapshot(snap(3), 0),
        [BookReset(KEY, 1, 0, 0, 0), StatusChange(KEY, SymbolState.LIVE, "snapshot")],
    ),
    (Out.LIVE, OE.ELECTED): (
        live,
        lambda a: a.on_connection(0, False, 0),
        [BookDelta(KEY, 1, 1, 0, (("100", "0"), ("99", "1")), (), 0)],
    ),
    (Out.RESYNCING, OE.ELECTED): (
        resyncing,
        lambda a: a.on_snapshot(snap(1, "98"), 0),
        [
            BookDelta(KEY, 1, 1, 0, (("100", "0"), ("98", "1")), (), 0),
            StatusChange(KEY, SymbolState.LIVE, "snapshot"),
        ],
    ),
    (Out.STALE, OE.ELECTED): (
        stale,
        lambda a: a.on_connection(1, True, 0) + a.on_snapshot(snap(1, "98"), 0),
        [
            BookDelta(KEY, 1, 1, 0, (("100", "0"), ("98", "1")), (), 0),
            StatusChange(KEY, SymbolState.LIVE, "snapshot"),
        ],
    ),
    (Out.LIVE, OE.NO_VALID_REPLICA): (
        lambda: (a := book(0, 1), a.on_snapshot(snap(0), 0))[0],
        lambda a: a.invalidate(0, "sequence jump", 0),
        [
            ResubscribeWanted(KEY, 0, "sequence jump"),
            StatusChange(KEY, SymbolState.RESYNCING, "no valid replica"),
        ],
    ),
    (Out.SYNCING, OE.ALL_DOWN): (
        lambda: book(0, 1),
        lambda a: a.on_connection(0, False, 0) + a.on_connection(1, False, 0),
        [StatusChange(KEY, SymbolState.STALE, DOWN)],
    ),
    (Out.LIVE, OE.ALL_DOWN): (
        live_alone,
        lambda a: a.on_connection(0, False, 0),
        [StatusChange(KEY, SymbolState.STALE, DOWN)],
    ),
    (Out.RESYNCING, OE.ALL_DOWN): (
        resyncing,
        lambda a: a.on_connection(0, False, 0) + a.on_connection(1, False, 0),
        [StatusChange(KEY, SymbolState.STALE, DOWN)],
    ),
    (Out.STALE_BEFORE_BOOK, OE.ALL_DOWN): (
        stale_before_book,
        lambda a: a.on_connection(5, False, 0),
        [],
    ),
    (Out.STALE, OE.ALL_DOWN): (stale, lambda a: a.on_connection(5, False, 0), []),
    (Out.SYNCING, OE.REPLICA_WAITS): (
        lambda: book(0),
        lambda a: a.on_snapshot(snap(0, "102"), 0),
        [BookCrossed(KEY, 0, CROSSED_REASON), waits(0, SymbolState.SYNCING)],
    ),
    (Out.RESYNCING, OE.REPLICA_WAITS): (
        resyncing,
        lambda a: a.on_snapshot(snap(1, "102"), 0),
        [BookCrossed(KEY, 1, CROSSED_REASON), waits(1, SymbolState.RESYNCING)],
    ),
    (Out.LIVE, OE.REPLICA_WAITS): (
        live,
        lambda a: a.on_snapshot(snap(1, "102"), 0),
        [BookCrossed(KEY, 1, CROSSED_REASON)],
    ),
    (Out.STALE_BEFORE_BOOK, OE.REPLICA_WAITS): (
        stale_before_book,
        lambda a: a.on_snapshot(snap(3, "102"), 0),
        [BookCrossed(KEY, 3, CROSSED_REASON)],
    ),
    (Out.STALE, OE.REPLICA_WAITS): (
        stale,
        lambda a: a.on_snapshot(snap(3, "102"), 0),
        [BookCrossed(KEY, 3, CROSSED_REASON)],
    ),
}


@pytest.mark.parametrize("pair", list(OUTPUT_SPEC.expected))
def test_each_output_row_is_what_the_book_does(pair: tuple[Output, OutputEvent]) -> None:
    arb, out, published = drive_row(
        OUTPUT_SCENARIOS, OUTPUT_SPEC.expected, pair, lambda a: a.output
    )
    assert out == published and arb.state is PUBLISHED_STATE[arb.output]
    assert arb.has_book == (arb.output not in (Out.SYNCING, Out.STALE_BEFORE_BOOK))
    assert (arb.leader is not None) == (arb.output is Out.LIVE)


def test_every_output_row_has_a_scenario() -> None:
    assert set(OUTPUT_SCENARIOS) == set(OUTPUT_SPEC.expected)


BAD = DepthSnapshot("kraken", "BTC/USD", -1, (("x", "1"),), (), 0, 0)

#: (replica state before, event) -> (setup, input, what is published); the replica is conn 0.
REPLICA_SCENARIOS: dict[tuple[ReplicaState, ReplicaEvent], Scenario] = {
    (RS.AWAITING_SNAPSHOT, RE.SNAPSHOT_MATCHED): (
        lambda: book(0),
        lambda a: a.on_snapshot(snap(0), 0),
        ["BookReset", "StatusChange"],
    ),
    (RS.VALID, RE.SNAPSHOT_MATCHED): (
        live_alone,
        lambda a: a.on_snapshot(snap(0, "99"), 0),
        ["BookDelta"],
    ),
    (RS.AWAITING_SNAPSHOT, RE.FAILED): (
        lambda: book(0),
        lambda a: a.on_snapshot(BAD, 0),
        ["ResubscribeWanted"],
    ),
    (RS.VALID, RE.FAILED): (
        live,
        lambda a: a.invalidate(0, "sequence jump", 0),
        ["ResubscribeWanted", "BookDelta"],  # the output fails over to conn 1
    ),
    (RS.AWAITING_SNAPSHOT, RE.SNAPSHOT_CROSSED): (
        lambda: book(0),
        lambda a: a.on_snapshot(snap(0, "102"), 0),
        ["BookCrossed", "StatusChange"],
    ),
    (RS.VALID, RE.SNAPSHOT_CROSSED): (
        live,
        lambda a: a.on_snapshot(snap(0, "102"), 0),
        ["BookCrossed", "BookDelta"],  # the output fails over to conn 1
    ),
    (RS.RETRY_WAIT, RE.SNAPSHOT_CROSSED): (
        waiting,
        lambda a: a.on_snapshot(snap(0, "103"), 0),
        ["BookCrossed"],
    ),
    (RS.RETRY_WAIT, RE.SNAPSHOT_MATCHED): (
        waiting,
        lambda a: a.on_snapshot(snap(0), 0),
        ["BookReset", "StatusChange"],
    ),
    (RS.RETRY_WAIT, RE.FAILED): (waiting, lambda a: a.on_snapshot(BAD, 0), []),
    (RS.RETRY_WAIT, RE.RETRY_DUE): (
        waiting,
        lambda a: a.on_timer(999_999_999) + a.on_timer(1_000_000_000),
        ["ResubscribeWanted"],
    ),
}


@pytest.mark.parametrize("pair", list(REPLICA_SPEC.expected))
def test_each_replica_row_is_what_the_book_does(pair: tuple[ReplicaState, ReplicaEvent]) -> None:
    arb, out, published = drive_row(
        REPLICA_SCENARIOS, REPLICA_SPEC.expected, pair, lambda a: a.replicas[0].state
    )
    replica = arb.replicas[0]
    assert [type(e).__name__ for e in out] == published
    assert replica.valid == (replica.state is RS.VALID)
    if replica.state is not RS.VALID:
        assert replica.book.bids() == []
    if pair[1] is RE.FAILED and replica.state is RS.AWAITING_SNAPSHOT:
        assert arb.stats.replica_failures == 1
    assert (arb.deadline_ns() is not None) == (replica.state is RS.RETRY_WAIT)


def test_every_replica_row_has_a_scenario() -> None:
    assert set(REPLICA_SCENARIOS) == set(REPLICA_SPEC.expected)
