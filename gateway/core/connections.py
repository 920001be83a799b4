"""What a sequenced book knows of each connection, as two machines (docs/architecture.md,
State machines): its *placement* (is what it delivers in the book's sequence?) and its
*trust* (may its ids confirm or contradict another connection's copy?).

:class:`~gateway.core.sequenced.SequencedBook` works out which event happened to a
connection; :data:`PLACEMENT_TRANSITIONS` and :data:`TRUST_TRANSITIONS` alone decide what
follows. :class:`Connections` keeps each connection's states and the data that goes with
them (slots: a lag for the states behind a reset, an answer for the unplaced ones), and
answers the book's questions (:meth:`Connections.trusted`, :meth:`Connections.waits`, ...).
The book carries out the actions that reach outside it (:attr:`ConnAction.ASK_RECONNECT`,
:attr:`ConnAction.RESYNC`).

Pure: no I/O, no event loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from dataclasses import field

from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.placement import Replica
from gateway.core.transitions import Table
from gateway.core.transitions import transition


class Placement(enum.Enum):
    """Where a connection that is up stands against the book's sequence."""

    #: What it delivers is of the book's sequence (or it has delivered nothing to doubt).
    IN_SEQUENCE = "in sequence"
    #: It has not delivered its copy of the venue resets applied since; its latest id in
    #: the older sequence is known (:class:`Lag`).
    BEHIND_RESET = "behind a reset"
    #: It was silent (or unplaced) when a reset was delivered elsewhere: it may be in
    #: either sequence, and was asked to reconnect.
    BEHIND_SILENT = "silent at a reset"
    #: Another connection led the book into a sequence it answered in: how many resets
    #: this one lags is unknown, so nothing it delivers is used until it reconnects.
    BEHIND_UNTIL_RECONNECT = "behind until it reconnects"
    #: Asked to subscribe again (an in-band resync); its answer is awaited within the
    #: reset window, and its stream until then is of no known sequence.
    AWAITING_ANSWER = "awaiting its answer"
    #: Its subscription snapshot is ahead of the book: compared once the book reaches it.
    TO_COMPARE = "answer to compare"
    #: Its subscription snapshot is below the book and not comparable: its own updates
    #: build a replica of it, compared where its stream reaches an id the book kept.
    REPLICA = "replica to compare"
    #: Its answer could not be placed: asked to reconnect, nothing is awaited of it.
    REOPENING = "reopening"
    #: It did not answer within the reset window: asked to reconnect; its stream is still
    #: of no known sequence.
    REOPENING_UNANSWERED = "reopening unanswered"


#: The states of a connection not known to be in the book's sequence: nothing it
#: delivers is used, and its ids neither confirm nor contradict another's.
UNPLACED = frozenset(
    {
        Placement.AWAITING_ANSWER,
        Placement.TO_COMPARE,
        Placement.REPLICA,
        Placement.REOPENING,
        Placement.REOPENING_UNANSWERED,
    }
)
#: The states behind a venue reset (a :class:`Lag` each).
BEHIND = frozenset(
    {Placement.BEHIND_RESET, Placement.BEHIND_SILENT, Placement.BEHIND_UNTIL_RECONNECT}
)
#: The unplaced states in which something is awaited within the reset window.
_WAITING = frozenset({Placement.AWAITING_ANSWER, Placement.TO_COMPARE, Placement.REPLICA})
#: The unplaced states in which it has not answered since it was asked to subscribe again.
_UNANSWERED = frozenset({Placement.AWAITING_ANSWER, Placement.REOPENING_UNANSWERED})


class PlacementEvent(enum.Enum):
    #: Another connection delivered a venue reset first; this one had already delivered
    #: its copy (the rule saw it).
    RESET_ELSEWHERE_PAST = "reset elsewhere, past it"
    #: Another connection delivered a venue reset first; this one was heard from.
    RESET_ELSEWHERE = "reset elsewhere"
    #: Another connection delivered a venue reset first; this one delivered nothing since
    #: it came up (or since the previous reset).
    RESET_ELSEWHERE_UNHEARD = "reset elsewhere, unheard"
    #: It delivered its copy of every reset it lagged.
    CROSSED_RESETS = "crossed the resets"
    #: A connection went down and none of those up delivered the reset.
    NOBODY_CROSSED = "nobody crossed"
    #: Another connection leads the book into the sequence it answered in.
    LED_ELSEWHERE = "led elsewhere"
    #: The book was built from its snapshot.
    BUILT_BOOK = "built the book"
    #: The book was rebuilt in band from another's snapshot: it was asked to subscribe again.
    RESUBSCRIBED = "resubscribed"
    #: The book follows it into a reset it delivered first (a reset snapshot, or an answer
    #: or replica that differs from the book).
    LEADS_RESET = "leads a reset"
    #: Its subscription snapshot is ahead of the book.
    ANSWERED_AHEAD = "answered ahead"
    #: Its subscription snapshot is below the book and not comparable: a replica is kept.
    ANSWERED_BELOW = "answered below"
    #: Its answer (or replica) agrees with the book at its id.
    AGREES = "agrees"
    #: Its replica's stream passed the book's id: its book there is the answer to compare.
    PASSED_BOOK = "passed the book"
    #: Its answer can no longer be compared (unusable, a chain broken, differing once the
    #: book reached it).
    COMPARE_FAILED = "compare failed"
    #: The reset window passed with something still awaited of it.
    WINDOW_PASSED = "window passed"
    #: Its own ids went back with no reset snapshot between, on a venue whose ids go down
    #: only at one: its stream restarted in no known sequence (behind a reset, it lost a
    #: reset snapshot: the one it lags, or a later one).
    IDS_WENT_BACK = "its ids went back"
    #: It went down.
    DOWN = "down"


class ConnAction(enum.Enum):
    """What follows a move. The book carries out ASK_RECONNECT (a
    :class:`~gateway.core.model.ReconnectWanted`) and RESYNC (the sync machine's GAP);
    :class:`Connections` the rest, on the connection's slot: START_LAG a new lag of one
    reset at the id it was heard at (-1 outside BEHIND_RESET), COUNT_RESET one reset more;
    TAKE_ANSWER the snapshot given as its answer, awaited from now; TAKE_REPLICA the
    replica given beside it; PROMOTE_REPLICA the snapshot given (its replica's book) in
    place of both; DROP_ANSWER both forgotten; AWAIT_ANSWER both forgotten, and an answer
    awaited from now."""

    ASK_RECONNECT = "ask reconnect"
    RESYNC = "resync"
    START_LAG = "start lag"
    COUNT_RESET = "count reset"
    TAKE_ANSWER = "take answer"
    TAKE_REPLICA = "take replica"
    PROMOTE_REPLICA = "promote replica"
    DROP_ANSWER = "drop answer"
    AWAIT_ANSWER = "await answer"


_P, _PE, _A = Placement, PlacementEvent, ConnAction
_IN = _P.IN_SEQUENCE
_BR, _BS, _BU = _P.BEHIND_RESET, _P.BEHIND_SILENT, _P.BEHIND_UNTIL_RECONNECT
_AW, _TC, _RP = _P.AWAITING_ANSWER, _P.TO_COMPARE, _P.REPLICA
_RO, _RU = _P.REOPENING, _P.REOPENING_UNANSWERED
_UNPLACED_ORDER = (_AW, _TC, _RP, _RO, _RU)
_BEHIND_ORDER = (_BR, _BS, _BU)
_SILENT = (_BS, (_A.START_LAG, _A.ASK_RECONNECT))
_COUNT = (_A.COUNT_RESET,)


def _rows() -> Table[Placement, PlacementEvent, ConnAction]:
    table: dict[tuple[Placement, PlacementEvent], tuple[Placement, tuple[ConnAction, ...]]] = {}
    # A reset delivered elsewhere: the unplaced may be in either sequence.
    for event in (_PE.RESET_ELSEWHERE_PAST, _PE.RESET_ELSEWHERE, _PE.RESET_ELSEWHERE_UNHEARD):
        for state in _UNPLACED_ORDER:
            table[state, event] = _SILENT
        for state in (_BS, _BU):
            table[state, event] = (state, _COUNT)
    table[_IN, _PE.RESET_ELSEWHERE_PAST] = (_IN, ())
    table[_BR, _PE.RESET_ELSEWHERE_PAST] = (_IN, ())
    table[_IN, _PE.RESET_ELSEWHERE] = (_BR, (_A.START_LAG,))
    table[_BR, _PE.RESET_ELSEWHERE] = (_BR, _COUNT)
    table[_IN, _PE.RESET_ELSEWHERE_UNHEARD] = _SILENT
    table[_BR, _PE.RESET_ELSEWHERE_UNHEARD] = (_BR, _COUNT)
    for state in _BEHIND_ORDER:
        table[state, _PE.CROSSED_RESETS] = (_IN, ())
        table[state, _PE.NOBODY_CROSSED] = (_IN if state is _BR else state, ())
        table[state, _PE.RESUBSCRIBED] = (state, ())
    table[_IN, _PE.RESUBSCRIBED] = (_AW, (_A.AWAIT_ANSWER,))
    for state in (_IN, *_UNPLACED_ORDER):
        if state is not _IN:
            table[state, _PE.RESUBSCRIBED] = (state, ())
        table[state, _PE.BUILT_BOOK] = (_IN, ())
        table[state, _PE.LEADS_RESET] = (_IN, ())
        table[state, _PE.AGREES] = (_IN, ())
        table[state, _PE.ANSWERED_AHEAD] = (_TC, (_A.TAKE_ANSWER,))
        table[state, _PE.ANSWERED_BELOW] = (_RP, (_A.TAKE_ANSWER, _A.TAKE_REPLICA))
        table[state, _PE.COMPARE_FAILED] = (_RO, (_A.DROP_ANSWER, _A.ASK_RECONNECT))
    table[_RP, _PE.PASSED_BOOK] = (_TC, (_A.PROMOTE_REPLICA,))
    table[_AW, _PE.WINDOW_PASSED] = (_RU, (_A.ASK_RECONNECT,))
    for state in (_TC, _RP):
        table[state, _PE.WINDOW_PASSED] = (_AW, (_A.AWAIT_ANSWER, _A.RESYNC))
    for state in (_IN, _BR):
        table[state, _PE.IDS_WENT_BACK] = (_BU, (_A.START_LAG, _A.ASK_RECONNECT))
    for state in Placement:
        table[state, _PE.LED_ELSEWHERE] = (_BU, (_A.START_LAG, _A.ASK_RECONNECT))
        table[state, _PE.DOWN] = (_IN, ())
    return table


#: The placement machine (docs/architecture.md, State machines).
PLACEMENT_TRANSITIONS: Table[Placement, PlacementEvent, ConnAction] = _rows()


class Trust(enum.Enum):
    """Whether a connection's ids may confirm or contradict another's copy: TRUSTED until
    one of its copies is contradicted, then DISTRUSTED (asked to reconnect; until it goes
    down it neither confirms a held copy nor stands for the book)."""

    TRUSTED = "trusted"
    DISTRUSTED = "distrusted"


class TrustEvent(enum.Enum):
    """CONTRADICTED: a copy of it (or its snapshot) was contradicted while it is up."""

    CONTRADICTED = "contradicted"
    DOWN = "down"


#: The trust machine, orthogonal to placement.
TRUST_TRANSITIONS: Table[Trust, TrustEvent, ConnAction] = {
    (Trust.TRUSTED, TrustEvent.CONTRADICTED): (Trust.DISTRUSTED, (_A.ASK_RECONNECT,)),
    (Trust.DISTRUSTED, TrustEvent.CONTRADICTED): (Trust.DISTRUSTED, (_A.ASK_RECONNECT,)),
    (Trust.TRUSTED, TrustEvent.DOWN): (Trust.TRUSTED, ()),
    (Trust.DISTRUSTED, TrustEvent.DOWN): (Trust.TRUSTED, ()),
}


@dataclass(slots=True)
class Lag:
    """The slot of a connection behind a reset."""

    #: How many venue resets it lags.
    resets: int
    #: The latest id it delivered, in the sequence it is still in (-1: none yet).
    high: int


@dataclass(slots=True)
class Answer:
    """The slot of an unplaced connection."""

    #: Its subscription snapshot (TO_COMPARE, REPLICA: compared with the book when the
    #: book's id reaches it; after a replica passed the book's id, the replica's book
    #: there). None in the other unplaced states.
    snap: DepthSnapshot | None
    #: Since when something is awaited of it: not placed within the reset window, the book
    #: resyncs (a snapshot to compare) or the connection is reopened (an answer awaited).
    since_ns: int
    #: Its own book (REPLICA only).
    replica: Replica | None = None
    #: The updates its connection delivered past its snapshot ahead of the book, in order
    #: (at most ``max_pending``, the oldest dropped): buffered for the book once the
    #: snapshot is placed, as no other connection may deliver them.
    ahead: list[DepthDiff] = field(default_factory=list)


class Connections:
    """Each connection's placement and trust, and their slots.

    A connection absent from it is IN_SEQUENCE and TRUSTED. :attr:`behind` holds a
    :class:`Lag` for exactly the connections in a BEHIND state, :attr:`unplaced` an
    :class:`Answer` for exactly those in an :data:`UNPLACED` state (in the order they
    first became unplaced). Only this class adds or removes them; the book updates a
    lag's id as the connection delivers.
    """

    def __init__(self) -> None:
        self._placement: dict[int, Placement] = {}
        self._trust: dict[int, Trust] = {}
        self.behind: dict[int, Lag] = {}
        self.unplaced: dict[int, Answer] = {}

    def placement(self, conn_id: int) -> Placement:
        return self._placement.get(conn_id, Placement.IN_SEQUENCE)

    def trust(self, conn_id: int) -> Trust:
        return self._trust.get(conn_id, Trust.TRUSTED)

    def move(
        self,
        conn_id: int,
        event: PlacementEvent,
        now_ns: int = 0,
        *,
        high: int = -1,
        snap: DepthSnapshot | None = None,
        replica: Replica | None = None,
    ) -> tuple[ConnAction, ...]:
        """Moves ``conn_id``'s placement on ``event`` and keeps its slot: ``high`` is the id
        it was heard at (START_LAG into BEHIND_RESET), ``snap`` its answer (TAKE_ANSWER,
        PROMOTE_REPLICA), ``replica`` its replica (TAKE_REPLICA). Returns the actions,
        ASK_RECONNECT and RESYNC being the caller's to carry out. Raises
        :class:`~gateway.core.transitions.UndefinedTransition` for an event the state
        does not allow."""
        state = self.placement(conn_id)
        new, actions = transition("placement", PLACEMENT_TRANSITIONS, state, event)
        if new is Placement.IN_SEQUENCE:
            self._placement.pop(conn_id, None)
        else:
            self._placement[conn_id] = new
        if new not in BEHIND:
            self.behind.pop(conn_id, None)
        if new not in UNPLACED:
            self.unplaced.pop(conn_id, None)
            answer = None
        else:
            answer = self.unplaced.setdefault(conn_id, Answer(None, now_ns))
        for action in actions:
            if action is ConnAction.START_LAG:
                self.behind[conn_id] = Lag(1, high if new is Placement.BEHIND_RESET else -1)
            elif action is ConnAction.COUNT_RESET:
                self.behind[conn_id].resets += 1
            elif answer is None:
                continue  # the rest keep an unplaced state's slot
            elif action is ConnAction.TAKE_ANSWER:
                answer = self.unplaced[conn_id] = Answer(snap, now_ns)
            elif action is ConnAction.TAKE_REPLICA:
                answer.replica = replica
            elif action is ConnAction.PROMOTE_REPLICA:
                answer.snap, answer.replica = snap, None
            elif action is ConnAction.DROP_ANSWER:
                answer.snap = answer.replica = None
            elif action is ConnAction.AWAIT_ANSWER:
                answer.snap = answer.replica = None
                answer.since_ns = now_ns
        return actions

    def crossed_reset(self, conn_id: int, first_id: int) -> bool:
        """``conn_id``, behind, delivered its copy of a reset, its stream now at
        ``first_id``: it lags one reset less. True while it still lags one."""
        lag = self.behind[conn_id]
        lag.resets -= 1
        lag.high = first_id
        if lag.resets > 0:
            return True
        self.move(conn_id, PlacementEvent.CROSSED_RESETS)
        return False

    def blame(self, conn_id: int) -> tuple[ConnAction, ...]:
        """A copy of ``conn_id`` (up) was contradicted; returns the actions."""
        self._trust[conn_id], actions = transition(
            "trust", TRUST_TRANSITIONS, self.trust(conn_id), TrustEvent.CONTRADICTED
        )
        return actions

    def down(self, conn_id: int) -> None:
        """``conn_id`` went down: it is forgotten (in sequence and trusted when up again)."""
        self.move(conn_id, PlacementEvent.DOWN)
        trust, _ = transition("trust", TRUST_TRANSITIONS, self.trust(conn_id), TrustEvent.DOWN)
        if trust is Trust.TRUSTED:
            self._trust.pop(conn_id, None)

    def trusted(self, conn_id: int) -> bool:
        """Whether its ids may confirm or contradict another's copy: TRUSTED, and not
        unplaced."""
        return self.trust(conn_id) is Trust.TRUSTED and conn_id not in self.unplaced

    def is_unplaced(self, conn_id: int) -> bool:
        return conn_id in self.unplaced

    def silent(self, conn_id: int) -> bool:
        """Behind a reset with its sequence unknown (BEHIND_SILENT, BEHIND_UNTIL_RECONNECT)."""
        return self.placement(conn_id) in (
            Placement.BEHIND_SILENT,
            Placement.BEHIND_UNTIL_RECONNECT,
        )

    def answered(self, conn_id: int) -> bool:
        """False while it has not answered since it was asked to subscribe again."""
        return self.placement(conn_id) not in _UNANSWERED

    def waits(self, conn_id: int) -> bool:
        """True while something is awaited of it within the reset window."""
        return self.placement(conn_id) in _WAITING

    def earliest_wait_ns(self) -> int | None:
        """Since when the longest-waiting connection waits (None: none waits)."""
        since = [a.since_ns for c, a in self.unplaced.items() if self.waits(c)]
        return min(since, default=None)
