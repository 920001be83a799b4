"""A sequenced book's per-connection machines (gateway/core/connections.py), as tables.

The placement and trust tables are asserted literally (the specs below, checked by
test_transition_tables, which also raises every pair they leave out), and every row is
driven through :class:`Connections`: from the row's state, reached by real events, the
event gives the row's new state and actions, and the connection's slot is the one the
actions leave. How a SequencedBook decides the events is tested by its own behaviour
(test_unplaced_subscriptions, the venue property tests).
"""

from __future__ import annotations

import pytest

from gateway.core.book import L2Book
from gateway.core.connections import BEHIND
from gateway.core.connections import PLACEMENT_TRANSITIONS
from gateway.core.connections import TRUST_TRANSITIONS
from gateway.core.connections import UNPLACED
from gateway.core.connections import Answer
from gateway.core.connections import ConnAction
from gateway.core.connections import Connections
from gateway.core.connections import Lag
from gateway.core.connections import Placement
from gateway.core.connections import PlacementEvent
from gateway.core.connections import Trust
from gateway.core.connections import TrustEvent
from gateway.core.model import DepthSnapshot
from gateway.core.model import SnapshotWanted
from gateway.core.placement import Replica
from gateway.core.transitions import UndefinedTransition

from .state_tables import specify
from .test_unplaced_subscriptions import bybit_book
from .test_unplaced_subscriptions import delta
from .test_unplaced_subscriptions import reconnects
from .test_unplaced_subscriptions import snapshot as bybit_snapshot

P, E, A = Placement, PlacementEvent, ConnAction
CONN = 7
#: The id a connection was heard at when a reset came elsewhere.
HIGH = 41
#: When the row's event happens (its setup happens at 1).
NOW_NS = 500

PLACEMENT_SPEC = specify(
    "placement",
    PLACEMENT_TRANSITIONS,
    """
    IN_SEQUENCE             RESET_ELSEWHERE_PAST  IN_SEQUENCE  -
    BEHIND_RESET            RESET_ELSEWHERE_PAST  IN_SEQUENCE  -
    BEHIND_SILENT           RESET_ELSEWHERE_PAST  BEHIND_SILENT  COUNT_RESET
    BEHIND_UNTIL_RECONNECT  RESET_ELSEWHERE_PAST  BEHIND_UNTIL_RECONNECT  COUNT_RESET
    AWAITING_ANSWER         RESET_ELSEWHERE_PAST  BEHIND_SILENT  START_LAG ASK_RECONNECT
    TO_COMPARE              RESET_ELSEWHERE_PAST  BEHIND_SILENT  START_LAG ASK_RECONNECT
    REPLICA                 RESET_ELSEWHERE_PAST  BEHIND_SILENT  START_LAG ASK_RECONNECT
    REOPENING               RESET_ELSEWHERE_PAST  BEHIND_SILENT  START_LAG ASK_RECONNECT
    REOPENING_UNANSWERED    RESET_ELSEWHERE_PAST  BEHIND_SILENT  START_LAG ASK_RECONNECT
    IN_SEQUENCE             RESET_ELSEWHERE  BEHIND_RESET  START_LAG
    BEHIND_RESET            RESET_ELSEWHERE  BEHIND_RESET  COUNT_RESET
    BEHIND_SILENT           RESET_ELSEWHERE  BEHIND_SILENT  COUNT_RESET
    BEHIND_UNTIL_RECONNECT  RESET_ELSEWHERE  BEHIND_UNTIL_RECONNECT  COUNT_RESET
    AWAITING_ANSWER         RESET_ELSEWHERE  BEHIND_SILENT  START_LAG ASK_RECONNECT
    TO_COMPARE              RESET_ELSEWHERE  BEHIND_SILENT  START_LAG ASK_RECONNECT
    REPLICA                 RESET_ELSEWHERE  BEHIND_SILENT  START_LAG ASK_RECONNECT
    REOPENING               RESET_ELSEWHERE  BEHIND_SILENT  START_LAG ASK_RECONNECT
    REOPENING_UNANSWERED    RESET_ELSEWHERE  BEHIND_SILENT  START_LAG ASK_RECONNECT
    IN_SEQUENCE             RESET_ELSEWHERE_UNHEARD  BEHIND_SILENT  START_LAG ASK_RECONNECT
    BEHIND_RESET            RESET_ELSEWHERE_UNHEARD  BEHIND_RESET  COUNT_RESET
    BEHIND_SILENT           RESET_ELSEWHERE_UNHEARD  BEHIND_SILENT  COUNT_RESET
    BEHIND_UNTIL_RECONNECT  RESET_ELSEWHERE_UNHEARD  BEHIND_UNTIL_RECONNECT  COUNT_RESET
    AWAITING_ANSWER         RESET_ELSEWHERE_UNHEARD  BEHIND_SILENT  START_LAG ASK_RECONNECT
    TO_COMPARE              RESET_ELSEWHERE_UNHEARD  BEHIND_SILENT  START_LAG ASK_RECONNECT
    REPLICA                 RESET_ELSEWHERE_UNHEARD  BEHIND_SILENT  START_LAG ASK_RECONNECT
    REOPENING               RESET_ELSEWHERE_UNHEARD  BEHIND_SILENT  START_LAG ASK_RECONNECT
    REOPENING_UNANSWERED    RESET_ELSEWHERE_UNHEARD  BEHIND_SILENT  START_LAG ASK_RECONNECT
    BEHIND_RESET            CROSSED_RESETS  IN_SEQUENCE  -
    BEHIND_SILENT           CROSSED_RESETS  IN_SEQUENCE  -
    BEHIND_UNTIL_RECONNECT  CROSSED_RESETS  IN_SEQUENCE  -
    BEHIND_RESET            NOBODY_CROSSED  IN_SEQUENCE  -
    BEHIND_SILENT           NOBODY_CROSSED  BEHIND_SILENT  -
    BEHIND_UNTIL_RECONNECT  NOBODY_CROSSED  BEHIND_UNTIL_RECONNECT  -
    IN_SEQUENCE             LED_ELSEWHERE  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    BEHIND_RESET            LED_ELSEWHERE  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    BEHIND_SILENT           LED_ELSEWHERE  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    BEHIND_UNTIL_RECONNECT  LED_ELSEWHERE  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    AWAITING_ANSWER         LED_ELSEWHERE  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    TO_COMPARE              LED_ELSEWHERE  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    REPLICA                 LED_ELSEWHERE  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    REOPENING               LED_ELSEWHERE  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    REOPENING_UNANSWERED    LED_ELSEWHERE  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    IN_SEQUENCE             BUILT_BOOK  IN_SEQUENCE  -
    AWAITING_ANSWER         BUILT_BOOK  IN_SEQUENCE  -
    TO_COMPARE              BUILT_BOOK  IN_SEQUENCE  -
    REPLICA                 BUILT_BOOK  IN_SEQUENCE  -
    REOPENING               BUILT_BOOK  IN_SEQUENCE  -
    REOPENING_UNANSWERED    BUILT_BOOK  IN_SEQUENCE  -
    IN_SEQUENCE             RESUBSCRIBED  AWAITING_ANSWER  AWAIT_ANSWER
    BEHIND_RESET            RESUBSCRIBED  BEHIND_RESET  -
    BEHIND_SILENT           RESUBSCRIBED  BEHIND_SILENT  -
    BEHIND_UNTIL_RECONNECT  RESUBSCRIBED  BEHIND_UNTIL_RECONNECT  -
    AWAITING_ANSWER         RESUBSCRIBED  AWAITING_ANSWER  -
    TO_COMPARE              RESUBSCRIBED  TO_COMPARE  -
    REPLICA                 RESUBSCRIBED  REPLICA  -
    REOPENING               RESUBSCRIBED  REOPENING  -
    REOPENING_UNANSWERED    RESUBSCRIBED  REOPENING_UNANSWERED  -
    IN_SEQUENCE             LEADS_RESET  IN_SEQUENCE  -
    AWAITING_ANSWER         LEADS_RESET  IN_SEQUENCE  -
    TO_COMPARE              LEADS_RESET  IN_SEQUENCE  -
    REPLICA                 LEADS_RESET  IN_SEQUENCE  -
    REOPENING               LEADS_RESET  IN_SEQUENCE  -
    REOPENING_UNANSWERED    LEADS_RESET  IN_SEQUENCE  -
    IN_SEQUENCE             ANSWERED_AHEAD  TO_COMPARE  TAKE_ANSWER
    AWAITING_ANSWER         ANSWERED_AHEAD  TO_COMPARE  TAKE_ANSWER
    TO_COMPARE              ANSWERED_AHEAD  TO_COMPARE  TAKE_ANSWER
    REPLICA                 ANSWERED_AHEAD  TO_COMPARE  TAKE_ANSWER
    REOPENING               ANSWERED_AHEAD  TO_COMPARE  TAKE_ANSWER
    REOPENING_UNANSWERED    ANSWERED_AHEAD  TO_COMPARE  TAKE_ANSWER
    IN_SEQUENCE             ANSWERED_BELOW  REPLICA  TAKE_ANSWER TAKE_REPLICA
    AWAITING_ANSWER         ANSWERED_BELOW  REPLICA  TAKE_ANSWER TAKE_REPLICA
    TO_COMPARE              ANSWERED_BELOW  REPLICA  TAKE_ANSWER TAKE_REPLICA
    REPLICA                 ANSWERED_BELOW  REPLICA  TAKE_ANSWER TAKE_REPLICA
    REOPENING               ANSWERED_BELOW  REPLICA  TAKE_ANSWER TAKE_REPLICA
    REOPENING_UNANSWERED    ANSWERED_BELOW  REPLICA  TAKE_ANSWER TAKE_REPLICA
    IN_SEQUENCE             AGREES  IN_SEQUENCE  -
    AWAITING_ANSWER         AGREES  IN_SEQUENCE  -
    TO_COMPARE              AGREES  IN_SEQUENCE  -
    REPLICA                 AGREES  IN_SEQUENCE  -
    REOPENING               AGREES  IN_SEQUENCE  -
    REOPENING_UNANSWERED    AGREES  IN_SEQUENCE  -
    REPLICA                 PASSED_BOOK  TO_COMPARE  PROMOTE_REPLICA
    IN_SEQUENCE             COMPARE_FAILED  REOPENING  DROP_ANSWER ASK_RECONNECT
    AWAITING_ANSWER         COMPARE_FAILED  REOPENING  DROP_ANSWER ASK_RECONNECT
    TO_COMPARE              COMPARE_FAILED  REOPENING  DROP_ANSWER ASK_RECONNECT
    REPLICA                 COMPARE_FAILED  REOPENING  DROP_ANSWER ASK_RECONNECT
    REOPENING               COMPARE_FAILED  REOPENING  DROP_ANSWER ASK_RECONNECT
    REOPENING_UNANSWERED    COMPARE_FAILED  REOPENING  DROP_ANSWER ASK_RECONNECT
    AWAITING_ANSWER         WINDOW_PASSED  REOPENING_UNANSWERED  ASK_RECONNECT
    TO_COMPARE              WINDOW_PASSED  AWAITING_ANSWER  AWAIT_ANSWER RESYNC
    REPLICA                 WINDOW_PASSED  AWAITING_ANSWER  AWAIT_ANSWER RESYNC
    IN_SEQUENCE             IDS_WENT_BACK  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    BEHIND_RESET            IDS_WENT_BACK  BEHIND_UNTIL_RECONNECT  START_LAG ASK_RECONNECT
    IN_SEQUENCE             DOWN  IN_SEQUENCE  -
    BEHIND_RESET            DOWN  IN_SEQUENCE  -
    BEHIND_SILENT           DOWN  IN_SEQUENCE  -
    BEHIND_UNTIL_RECONNECT  DOWN  IN_SEQUENCE  -
    AWAITING_ANSWER         DOWN  IN_SEQUENCE  -
    TO_COMPARE              DOWN  IN_SEQUENCE  -
    REPLICA                 DOWN  IN_SEQUENCE  -
    REOPENING               DOWN  IN_SEQUENCE  -
    REOPENING_UNANSWERED    DOWN  IN_SEQUENCE  -
    """,
)

TRUST_SPEC = specify(
    "trust",
    TRUST_TRANSITIONS,
    """
    TRUSTED     CONTRADICTED  DISTRUSTED  ASK_RECONNECT
    DISTRUSTED  CONTRADICTED  DISTRUSTED  ASK_RECONNECT
    TRUSTED     DOWN          TRUSTED     -
    DISTRUSTED  DOWN          TRUSTED     -
    """,
)


def snapshot(last_id: int) -> DepthSnapshot:
    return DepthSnapshot("bybit-linear", "BTCUSDT", last_id, (("90", "1"),), (), 0, CONN)


#: The answer and replica of the setups, and those the rows' events give.
SETUP_SNAP = snapshot(10)
SETUP_REPLICA = Replica(L2Book(), 10)
EVENT_SNAP = snapshot(20)
EVENT_REPLICA = Replica(L2Book(), 20)

#: Real events that take a fresh connection to each state.
PATHS: dict[Placement, tuple[PlacementEvent, ...]] = {
    P.IN_SEQUENCE: (),
    P.BEHIND_RESET: (E.RESET_ELSEWHERE,),
    P.BEHIND_SILENT: (E.RESET_ELSEWHERE_UNHEARD,),
    P.BEHIND_UNTIL_RECONNECT: (E.LED_ELSEWHERE,),
    P.AWAITING_ANSWER: (E.RESUBSCRIBED,),
    P.TO_COMPARE: (E.ANSWERED_AHEAD,),
    P.REPLICA: (E.ANSWERED_BELOW,),
    P.REOPENING: (E.ANSWERED_AHEAD, E.COMPARE_FAILED),
    P.REOPENING_UNANSWERED: (E.RESUBSCRIBED, E.WINDOW_PASSED),
}


def reach(state: Placement) -> Connections:
    """A Connections with :data:`CONN` in ``state``, reached at time 1 (and another
    connection, 3, unplaced first: its place in the order is kept)."""
    conns = Connections()
    conns.move(3, E.RESUBSCRIBED, 1)
    for event in PATHS[state]:
        conns.move(CONN, event, 1, high=HIGH, snap=SETUP_SNAP, replica=SETUP_REPLICA)
    assert conns.placement(CONN) is state
    return conns


def test_every_state_is_reached_by_its_path() -> None:
    assert set(PATHS) == set(Placement)
    for state in Placement:
        reach(state)


@pytest.mark.parametrize(("state", "event"), list(PLACEMENT_SPEC.expected), ids=lambda x: x.name)
def test_each_row_moves_the_connection_and_keeps_its_slot(
    state: Placement, event: PlacementEvent
) -> None:
    new, actions = PLACEMENT_SPEC.expected[state, event]
    conns = reach(state)
    lag_before = conns.behind.get(CONN)
    resets_before = lag_before.resets if lag_before is not None else 0
    answer_before = conns.unplaced.get(CONN)
    since_before = answer_before.since_ns if answer_before is not None else None

    got = conns.move(CONN, event, NOW_NS, high=HIGH, snap=EVENT_SNAP, replica=EVENT_REPLICA)

    assert got == actions
    assert conns.placement(CONN) is new
    assert (CONN in conns.behind) == (new in BEHIND)
    assert (CONN in conns.unplaced) == (new in UNPLACED)
    lag, answer = conns.behind.get(CONN), conns.unplaced.get(CONN)
    if A.START_LAG in actions:
        assert lag == Lag(1, HIGH if new is P.BEHIND_RESET else -1)
    elif A.COUNT_RESET in actions:
        assert lag is not None and lag.resets == resets_before + 1
    if new in UNPLACED:
        assert answer is not None
        # The connection unplaced first stays first: the book's reasons and reconnects
        # come in that order.
        assert list(conns.unplaced) == [3, CONN]
        check_answer(answer, actions, since_before)


def check_answer(answer: Answer, actions: tuple[ConnAction, ...], since_before: int | None) -> None:
    if A.TAKE_ANSWER in actions:
        assert answer.snap is EVENT_SNAP and answer.since_ns == NOW_NS
        assert answer.replica is (EVENT_REPLICA if A.TAKE_REPLICA in actions else None)
    elif A.PROMOTE_REPLICA in actions:
        assert answer.snap is EVENT_SNAP and answer.replica is None
        assert answer.since_ns == since_before == 1
    elif A.DROP_ANSWER in actions or A.AWAIT_ANSWER in actions:
        assert answer.snap is None and answer.replica is None
        if A.AWAIT_ANSWER in actions:
            assert answer.since_ns == NOW_NS
    elif since_before is not None:
        assert answer.since_ns == since_before  # nothing happened to it
    else:
        assert answer.since_ns == NOW_NS  # entered without an answer: waited from now


@pytest.mark.parametrize(("state", "event"), PLACEMENT_SPEC.undefined(), ids=lambda x: x.name)
def test_an_event_a_state_does_not_allow_raises_and_changes_nothing(
    state: Placement, event: PlacementEvent
) -> None:
    conns = reach(state)
    behind, unplaced = dict(conns.behind), dict(conns.unplaced)
    with pytest.raises(UndefinedTransition, match=f"no transition for {event.name}"):
        conns.move(CONN, event, NOW_NS, snap=EVENT_SNAP)
    assert conns.placement(CONN) is state
    assert conns.behind == behind and conns.unplaced == unplaced


#: state: (silent, answered, waits, trusted) while TRUSTED.
QUESTIONS: dict[Placement, tuple[bool, bool, bool, bool]] = {
    P.IN_SEQUENCE: (False, True, False, True),
    P.BEHIND_RESET: (False, True, False, True),
    P.BEHIND_SILENT: (True, True, False, True),
    P.BEHIND_UNTIL_RECONNECT: (True, True, False, True),
    P.AWAITING_ANSWER: (False, False, True, False),
    P.TO_COMPARE: (False, True, True, False),
    P.REPLICA: (False, True, True, False),
    P.REOPENING: (False, True, False, False),
    P.REOPENING_UNANSWERED: (False, False, False, False),
}


@pytest.mark.parametrize("state", list(Placement), ids=lambda s: s.name)
def test_what_the_book_asks_of_each_state(state: Placement) -> None:
    conns = reach(state)
    silent, answered, waits, trusted = QUESTIONS[state]
    assert conns.silent(CONN) is silent
    assert conns.answered(CONN) is answered
    assert conns.waits(CONN) is waits
    assert conns.trusted(CONN) is trusted
    assert conns.is_unplaced(CONN) is (state in UNPLACED)
    # Connection 3 awaits its answer since 1; CONN's wait, when it waits, began at 1 too.
    assert conns.earliest_wait_ns() == 1


def test_the_earliest_wait_is_of_the_connections_that_wait() -> None:
    conns = Connections()
    assert conns.earliest_wait_ns() is None
    conns.move(1, E.RESUBSCRIBED, 100)
    conns.move(2, E.ANSWERED_AHEAD, 50, snap=SETUP_SNAP)
    assert conns.earliest_wait_ns() == 50
    conns.move(2, E.COMPARE_FAILED, 300)  # reopening: nothing awaited of it
    assert conns.earliest_wait_ns() == 100


@pytest.mark.parametrize(("state", "event"), list(TRUST_SPEC.expected), ids=lambda x: x.name)
def test_trust_rows(state: Trust, event: TrustEvent) -> None:
    conns = Connections()
    conns.move(CONN, E.RESET_ELSEWHERE, high=HIGH)  # trust is orthogonal to placement
    if state is Trust.DISTRUSTED:
        conns.blame(CONN)
    assert conns.trust(CONN) is state
    new, actions = TRUST_SPEC.expected[state, event]
    if event is TrustEvent.CONTRADICTED:
        assert conns.blame(CONN) == actions
        assert conns.placement(CONN) is P.BEHIND_RESET
    else:
        conns.down(CONN)
        assert conns.placement(CONN) is P.IN_SEQUENCE and not conns.behind
    assert conns.trust(CONN) is new
    assert conns.trusted(CONN) is (new is Trust.TRUSTED)


@pytest.mark.parametrize("state", [s for s in Placement if s in BEHIND], ids=lambda s: s.name)
def test_crossing_each_reset_it_lags_brings_it_back_in_sequence(state: Placement) -> None:
    conns = reach(state)
    conns.move(CONN, E.RESET_ELSEWHERE, high=HIGH)  # a second reset
    assert conns.crossed_reset(CONN, 3) is True
    assert conns.placement(CONN) is state and conns.behind[CONN] == Lag(1, 3)
    assert conns.crossed_reset(CONN, 1) is False
    assert conns.placement(CONN) is P.IN_SEQUENCE and CONN not in conns.behind


# --- the book moves them ------------------------------------------------------------------


def test_an_answer_ahead_of_the_book_is_to_compare_until_the_book_reaches_it() -> None:
    arb = bybit_book(u=2)
    arb.on_snapshot(bybit_snapshot(5, conn=1), 0)  # conn 1's answer, ahead of the book
    assert arb.conns.placement(1) is P.TO_COMPARE and not arb.conns.trusted(1)
    for u in (3, 4):
        arb.on_diff(delta(u, 0), 0)
    assert arb.conns.placement(1) is P.TO_COMPARE
    arb.on_diff(delta(5, 0), 0)  # the book at 5 is conn 1's answer
    assert arb.conns.placement(1) is P.IN_SEQUENCE and arb.conns.trusted(1)


def test_an_answer_not_reached_within_the_reset_window_resyncs_and_is_awaited_anew() -> None:
    arb = bybit_book(u=2)
    arb.on_snapshot(bybit_snapshot(5, conn=1), 0)
    assert arb.deadline_ns() == arb.reset_window_ns
    out = arb.on_timer(arb.reset_window_ns)
    assert arb.conns.placement(1) is P.AWAITING_ANSWER and not arb.conns.answered(1)
    assert sum(isinstance(e, SnapshotWanted) for e in out) == 1  # the resync


def test_a_reset_delivered_elsewhere_puts_the_heard_behind_and_the_silent_reconnecting() -> None:
    arb = bybit_book(conns=(0, 1, 2), u=2)
    arb.on_diff(delta(3, 1), 0)  # conn 1 heard at 3; conn 2 silent
    out = arb.on_snapshot(bybit_snapshot(1, conn=0), 0)  # conn 0 delivers a reset first
    assert arb.conns.placement(1) is P.BEHIND_RESET and arb.conns.behind[1] == Lag(1, 3)
    assert arb.conns.placement(2) is P.BEHIND_SILENT and arb.conns.silent(2)
    assert reconnects(out) == [2]
    arb.on_snapshot(bybit_snapshot(1, conn=1), 0)  # conn 1's copy of the reset
    assert arb.conns.placement(1) is P.IN_SEQUENCE and 1 not in arb.conns.behind
    arb.on_connection(2, False, 0)
    assert arb.conns.placement(2) is P.IN_SEQUENCE and not arb.conns.behind
