"""Make-before-break renewal of upstream connections. Pure: no I/O, no clock reads.

A *slot* is one planned connection of a venue (each endpoint times
``connections_per_endpoint`` times each shard of its symbols, each trade-only endpoint
times each trade shard, each standby endpoint times each shard); it keeps its slot number
for the gateway's life while the physical connections serving it come and go, each with a
conn id of its own. A renewal (the connection reached its age, the venue announced a
shutdown, the connection scored worst for too long, spent its subscribe requests for the
hour, or the pipeline asked to reopen it: its copies contradicted, its sequence unknown
after a venue reset; the cause is counted) never closes the old connection first:

1. the slot asks for the venue's renewal slot: one renewal of a venue at a time, the
   others wait in line (first come, first served);
2. granted, it opens a replacement connection with the same subscriptions (to the same
   endpoint; for a worst score, to another where one is free:
   :func:`gateway.core.score.rotated_endpoint`) and waits until the replacement caught up
   (the pipeline's ``CaughtUp``: its copies reached each book's applied id, its replicas
   are valid, or, trade-only, a trade arrived);
3. then the old connection is closed and the replacement serves the slot. If the
   replacement has not caught up within ``renew_timeout_s`` the old one is closed anyway
   (a timed-out renewal, counted and logged); if the old one goes down meanwhile, the
   replacement serves at once.

When the venue stops, every slot's machine is stopped (:attr:`Renewal.STOPPED`): the
events the stop itself causes (old connections falling as they are closed) start and end
no renewal, whatever state each slot was in.

Each slot's machine is an explicit table (:data:`RENEWAL_TRANSITIONS`);
:class:`VenueRenewals` holds a venue's slots and its renewal slot, and turns the machines'
actions into :data:`Command` values the shell carries out.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final

import msgspec

from gateway.core.stats import SlotRenewals
from gateway.core.transitions import Table
from gateway.core.transitions import transition

#: Share of ``max_connection_age_s`` over which connections' ages are spread at random, so
#: connections opened together are not due together.
AGE_JITTER: Final = 0.05


def renewal_age_s(max_age_s: float, jitter_draw: float, jitter: float = AGE_JITTER) -> float:
    """The age at which a connection is renewed: ``max_age_s`` less up to ``jitter`` of it.
    ``jitter_draw`` is a uniform draw in [0, 1) (the caller's random source)."""
    if not 0.0 <= jitter_draw < 1.0 or not 0.0 <= jitter < 1.0:
        raise ValueError("need 0 <= jitter_draw < 1 and 0 <= jitter < 1")
    return max_age_s * (1.0 - jitter * jitter_draw)


class Renewal(enum.Enum):
    """Where one slot's renewal stands."""

    #: One connection serves the slot; no renewal is due.
    STEADY = "steady"
    #: A renewal is due; waiting for the venue's renewal slot.
    QUEUED = "queued"
    #: The replacement is open (or opening) beside the old connection, catching up.
    CATCHING_UP = "catching up"
    #: The venue stops: no renewal starts or ends any more; every later event is ignored.
    STOPPED = "stopped"


class RenewalEvent(enum.Enum):
    #: The connection should be renewed (age, the venue's notice, a worse score).
    DUE = "due"
    #: The venue's renewal slot is this slot's now.
    SLOT_GRANTED = "slot granted"
    #: The replacement caught up with the books.
    CAUGHT_UP = "caught up"
    #: ``renew_timeout_s`` passed without the replacement catching up.
    TIMED_OUT = "timed out"
    #: The old connection went down by itself.
    OLD_DOWN = "old down"
    #: The venue stops (its connections close with it).
    STOP = "stop"


class RenewalAction(enum.Enum):
    #: Ask for the venue's renewal slot (granted at once when free).
    ASK_SLOT = "ask slot"
    #: Leave the line for the venue's renewal slot.
    LEAVE_QUEUE = "leave queue"
    #: Open the replacement connection and start its ``renew_timeout_s`` clock.
    OPEN_REPLACEMENT = "open replacement"
    #: Close the old connection; the replacement serves the slot from now on.
    CLOSE_OLD = "close old"
    #: Give the venue's renewal slot to the next slot in line.
    RELEASE_SLOT = "release slot"


_S, _E, _A = Renewal, RenewalEvent, RenewalAction
#: A due renewal while one is already under way is the same renewal. An old connection
#: that goes down before its replacement was opened ends the renewal (its own reconnect is
#: a fresh connection); after, the replacement takes over at once. A stop ends every state
#: with no action: the venue's renewal slot is given to no one any more
#: (:meth:`VenueRenewals.stop`), and a connection falling as the venue closes it is not an
#: old connection down.
RENEWAL_TRANSITIONS: Final[Table[Renewal, RenewalEvent, RenewalAction]] = {
    (_S.STEADY, _E.DUE): (_S.QUEUED, (_A.ASK_SLOT,)),
    (_S.STEADY, _E.OLD_DOWN): (_S.STEADY, ()),
    (_S.QUEUED, _E.DUE): (_S.QUEUED, ()),
    (_S.QUEUED, _E.SLOT_GRANTED): (_S.CATCHING_UP, (_A.OPEN_REPLACEMENT,)),
    (_S.QUEUED, _E.OLD_DOWN): (_S.STEADY, (_A.LEAVE_QUEUE,)),
    (_S.CATCHING_UP, _E.DUE): (_S.CATCHING_UP, ()),
    (_S.CATCHING_UP, _E.CAUGHT_UP): (_S.STEADY, (_A.CLOSE_OLD, _A.RELEASE_SLOT)),
    (_S.CATCHING_UP, _E.TIMED_OUT): (_S.STEADY, (_A.CLOSE_OLD, _A.RELEASE_SLOT)),
    (_S.CATCHING_UP, _E.OLD_DOWN): (_S.STEADY, (_A.CLOSE_OLD, _A.RELEASE_SLOT)),
    (_S.STEADY, _E.STOP): (_S.STOPPED, ()),
    (_S.QUEUED, _E.STOP): (_S.STOPPED, ()),
    (_S.CATCHING_UP, _E.STOP): (_S.STOPPED, ()),
    (_S.STOPPED, _E.DUE): (_S.STOPPED, ()),
    (_S.STOPPED, _E.CAUGHT_UP): (_S.STOPPED, ()),
    (_S.STOPPED, _E.TIMED_OUT): (_S.STOPPED, ()),
    (_S.STOPPED, _E.OLD_DOWN): (_S.STOPPED, ()),
}


# --- commands for the shell -----------------------------------------------------------------


class OpenReplacement(msgspec.Struct, frozen=True, gc=False):
    """Open a replacement connection for ``slot`` (same subscriptions, on the slot's
    endpoint, which the shell may rotate first), report its conn id with
    :meth:`VenueRenewals.opened`, and start its timeout."""

    slot: int


class CloseConnection(msgspec.Struct, frozen=True, gc=False):
    """Close connection ``conn_id`` of ``slot`` for good; ``replacement`` now serves the slot.
    ``outcome``: the event that ended the renewal (caught up, timed out, old down)."""

    slot: int
    conn_id: int
    replacement: int
    outcome: RenewalEvent


Command = OpenReplacement | CloseConnection


class _Slot:
    def __init__(self, conn_id: int, state: Renewal) -> None:
        self.state = state
        self.conn_id = conn_id
        self.replacement: int | None = None
        self.stats = SlotRenewals(due={})


class VenueRenewals:
    """Every slot's renewal machine of one venue, and the venue's renewal slot.

    Contract: at most one slot of the venue is ever in :attr:`Renewal.CATCHING_UP`; a
    slot's old connection is closed (:class:`CloseConnection`) only after its replacement
    caught up, the timeout passed, or the old connection went down by itself. Once
    :meth:`stop` was called, no event yields a command any more.
    """

    def __init__(self) -> None:
        self._slots: dict[int, _Slot] = {}
        self._by_conn: dict[int, int] = {}
        #: The slot holding the venue's renewal slot, and the slots waiting for it.
        self.holder: int | None = None
        self._line: deque[int] = deque()
        #: The venue stopped (:meth:`stop`).
        self.stopped = False

    def add(self, slot: int, conn_id: int) -> None:
        """Slot ``slot`` is served by connection ``conn_id`` (stopped at once once the
        venue stopped)."""
        self._slots[slot] = _Slot(conn_id, Renewal.STOPPED if self.stopped else Renewal.STEADY)
        self._by_conn[conn_id] = slot

    def remove(self, slot: int) -> tuple[list[int], list[Command]]:
        """Slot ``slot`` is given up (a released standby endpoint): its connections, for
        the shell to close, and the commands of the venue's renewal slot passing on."""
        entry = self._slots.pop(slot)
        conn_ids = (
            [entry.conn_id] if entry.replacement is None else [entry.conn_id, entry.replacement]
        )
        for conn_id in conn_ids:
            self._by_conn.pop(conn_id, None)
        if slot in self._line:
            self._line.remove(slot)
        if self.holder != slot:
            return conn_ids, []
        self.holder = None
        return conn_ids, self._grant()

    def state(self, slot: int) -> Renewal:
        return self._slots[slot].state

    def serving(self, slot: int) -> int:
        """The conn id that serves ``slot`` now (the old one while a renewal is under way)."""
        return self._slots[slot].conn_id

    def replacement(self, slot: int) -> int | None:
        return self._slots[slot].replacement

    def slot_of(self, conn_id: int) -> int | None:
        """The slot of a connection serving or replacing one; None for a closed one."""
        return self._by_conn.get(conn_id)

    def stats(self, slot: int) -> SlotRenewals:
        return self._slots[slot].stats

    @property
    def slots(self) -> list[int]:
        return list(self._slots)

    # --- events -----------------------------------------------------------------------------

    def stop(self) -> None:
        """The venue stops: every slot's machine goes to :attr:`Renewal.STOPPED` from
        whatever state it is in, and the venue's renewal slot is given to no one any more.
        Every later event (the connections falling as they close) yields no command.
        Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.holder = None
        self._line.clear()
        for slot in self._slots:
            stop_commands = self._step(slot, RenewalEvent.STOP)
            assert not stop_commands, "a stop carries out nothing"

    def due(self, conn_id: int, cause: str) -> list[Command]:
        """Connection ``conn_id`` should be renewed. Ignored for a connection that no
        longer serves its slot (a replacement's own age or notice waits for its turn)."""
        slot = self._slot_served(conn_id)
        if slot is None:
            return []
        stats = self._slots[slot].stats
        stats.due[cause] = stats.due.get(cause, 0) + 1
        return self._step(slot, RenewalEvent.DUE)

    def opened(self, slot: int, conn_id: int) -> None:
        """The shell opened replacement ``conn_id`` for ``slot`` (after OpenReplacement)."""
        self._slots[slot].replacement = conn_id
        self._by_conn[conn_id] = slot

    def caught_up(self, conn_id: int) -> list[Command]:
        """Connection ``conn_id`` caught up; only a replacement's catching up counts."""
        slot = self._slot_served(conn_id, as_replacement=True)
        return [] if slot is None else self._step(slot, RenewalEvent.CAUGHT_UP)

    def timed_out(self, slot: int, conn_id: int) -> list[Command]:
        """The timeout of replacement ``conn_id`` passed (ignored once it is over)."""
        if self._slots[slot].replacement != conn_id:
            return []
        return self._step(slot, RenewalEvent.TIMED_OUT)

    def down(self, conn_id: int) -> list[Command]:
        """Connection ``conn_id`` went down (a replacement's fall is its own retry's)."""
        slot = self._slot_served(conn_id)
        return [] if slot is None else self._step(slot, RenewalEvent.OLD_DOWN)

    def _slot_served(self, conn_id: int, *, as_replacement: bool = False) -> int | None:
        """The slot ``conn_id`` serves as its connection (or, ``as_replacement``, as its
        replacement); None when it does not (any more)."""
        slot = self._by_conn.get(conn_id)
        if slot is None:
            return None
        entry = self._slots[slot]
        return slot if (entry.replacement if as_replacement else entry.conn_id) == conn_id else None

    # --- the machine ------------------------------------------------------------------------

    def _step(self, slot: int, event: RenewalEvent) -> list[Command]:
        entry = self._slots[slot]
        entry.state, actions = transition("renewal", RENEWAL_TRANSITIONS, entry.state, event)
        commands: list[Command] = []
        for action in actions:
            if action is RenewalAction.ASK_SLOT:
                self._line.append(slot)
                commands.extend(self._grant())
            elif action is RenewalAction.LEAVE_QUEUE:
                self._line.remove(slot)
            elif action is RenewalAction.OPEN_REPLACEMENT:
                commands.append(OpenReplacement(slot))
            elif action is RenewalAction.CLOSE_OLD:
                commands.append(self._promote(slot, entry, event))
            elif action is RenewalAction.RELEASE_SLOT:
                self.holder = None
                commands.extend(self._grant())
        return commands

    def _promote(self, slot: int, entry: _Slot, event: RenewalEvent) -> CloseConnection:
        old, replacement = entry.conn_id, entry.replacement
        assert replacement is not None, "a renewal catching up has its replacement"
        del self._by_conn[old]
        entry.conn_id, entry.replacement = replacement, None
        if event is RenewalEvent.CAUGHT_UP:
            entry.stats.caught_up += 1
        elif event is RenewalEvent.TIMED_OUT:
            entry.stats.timed_out += 1
        else:
            entry.stats.old_down += 1
        return CloseConnection(slot, old, replacement, event)

    def _grant(self) -> list[Command]:
        if self.holder is not None or not self._line:
            return []
        self.holder = self._line.popleft()
        return self._step(self.holder, RenewalEvent.SLOT_GRANTED)
