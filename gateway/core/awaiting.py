"""Requests awaiting their snapshot, per connection, and when each is due to be asked
again. Pure: time is ``now_ns``.

A subscription (on connect) or a resubscription (unsubscribe, subscribe) asks the venue
for a fresh snapshot of one symbol on one connection. The venue may never send it (the
subscribe or its answer lost) while its updates for the symbol keep coming on that
connection: the channel is not silent, so :mod:`gateway.core.activity` never reports it,
and on an unsequenced venue that connection has no replica of the symbol until it
reconnects. :class:`AwaitedSnapshots` keeps each (connection, key) asked there and not
answered by a snapshot on that connection since. Its wait starts when its request left
the connection's queue (:meth:`AwaitedSnapshots.written`), not when it was asked: a
connection paces what it sends, so a request may wait there longer than the venue takes
to answer. One unanswered for ``timeout_s`` after that is due (:meth:`AwaitedSnapshots.due`),
and each time it is asked again its wait doubles, up to ``max_timeout_s``, until the
snapshot comes or the connection ends.
"""

from __future__ import annotations

from typing import Final
from typing import NamedTuple


class AwaitLimits(NamedTuple):
    """A request unanswered ``timeout_s`` after it was written is asked again; each
    further ask waits twice as long as the one before, at most ``max_timeout_s``."""

    timeout_s: float = 5.0
    max_timeout_s: float = 60.0

    def check(self) -> None:
        if not 0 < self.timeout_s <= self.max_timeout_s:
            raise ValueError("need 0 < timeout_s <= max_timeout_s")


#: The limits by default (``venues[]`` config's defaults).
DEFAULT_AWAIT_LIMITS: Final = AwaitLimits()


class Unanswered(NamedTuple):
    """``key``'s request on ``conn_id``, written ``waited_s`` ago, is still not answered
    by a snapshot; ``asks``: the resubscribes asked there (0: only its subscription)."""

    conn_id: int
    key: str
    waited_s: float
    asks: int


class _Awaited:
    __slots__ = ("asks", "wait_ns", "written_ns")

    def __init__(self, asks: int, wait_ns: int) -> None:
        self.asks = asks
        self.wait_ns = wait_ns
        #: When its last request left the queue; None: not yet (not due).
        self.written_ns: int | None = None


class AwaitedSnapshots:
    """Per connection, the keys asked there whose snapshot has not come since.

    Contract: a (connection, key) is awaited from :meth:`subscribed` or :meth:`asked`
    until :meth:`answered` or its connection is forgotten. It is due (:meth:`due`) once
    ``wait`` passed since its request was :meth:`written` (or it was postponed), never
    while the request is not written. ``wait`` is ``timeout_s`` for the first request and
    twice the one before (at most ``max_timeout_s``) for each ask after a written one; an
    ask while the last is not written yet changes nothing (that request answers it).
    Memory: one entry per awaited (connection, key).
    """

    def __init__(self, limits: AwaitLimits = DEFAULT_AWAIT_LIMITS) -> None:
        limits.check()
        self.limits = limits
        self._timeout_ns = int(limits.timeout_s * 1_000_000_000)
        self._max_timeout_ns = int(limits.max_timeout_s * 1_000_000_000)
        self._by_conn: dict[int, dict[str, _Awaited]] = {}
        #: No entry is due before this (a lower bound: an entry answered since may be the
        #: one that set it).
        self.next_due_ns: int | None = None

    def __bool__(self) -> bool:
        return bool(self._by_conn)

    def subscribed(self, conn_id: int, key: str) -> None:
        """``key`` is subscribed on ``conn_id`` as it connects: awaited, its first request
        (no resubscribe asked), its wait starting when written. Already awaited: nothing."""
        self._by_conn.setdefault(conn_id, {}).setdefault(key, _Awaited(0, self._timeout_ns))

    def asked(self, conn_id: int, key: str) -> None:
        """``key`` is resubscribed on ``conn_id``: awaited, its wait starting when the
        request is written; twice the last wait when its last request was written and
        not answered (asked again). Its last request not written yet: nothing changes."""
        awaited = self._by_conn.setdefault(conn_id, {})
        entry = awaited.get(key)
        if entry is None:
            awaited[key] = _Awaited(1, self._timeout_ns)
        elif entry.written_ns is not None:
            entry.asks += 1
            entry.wait_ns = min(self._max_timeout_ns, 2 * entry.wait_ns)
            entry.written_ns = None

    def written(self, conn_id: int, key: str, now_ns: int) -> None:
        """The request of ``key`` left ``conn_id``'s queue now (written to the socket, or
        given up: the venue will not see it): its wait starts now. Not awaited (answered
        already): nothing."""
        entry = self._by_conn.get(conn_id, {}).get(key)
        if entry is not None:
            entry.written_ns = now_ns
            self._due_by(now_ns + entry.wait_ns)

    def postpone(self, conn_id: int, key: str, now_ns: int) -> None:
        """``key`` stays awaited on ``conn_id``, due again one wait from now, not asked
        (another rule asks it meanwhile). Its request not written: nothing."""
        entry = self._by_conn.get(conn_id, {}).get(key)
        if entry is not None and entry.written_ns is not None:
            entry.written_ns = now_ns
            self._due_by(now_ns + entry.wait_ns)

    def answered(self, conn_id: int, key: str) -> None:
        """A snapshot of ``key`` came on ``conn_id`` (or it need not come any more)."""
        awaited = self._by_conn.get(conn_id)
        if awaited is not None and awaited.pop(key, None) is not None and not awaited:
            del self._by_conn[conn_id]

    def forget_connection(self, conn_id: int) -> None:
        """``conn_id`` came up or went down: nothing is awaited on it."""
        self._by_conn.pop(conn_id, None)

    def awaiting(self, conn_id: int) -> frozenset[str]:
        """The keys awaited on ``conn_id``, their requests written or not."""
        return frozenset(self._by_conn.get(conn_id, ()))

    def due(self, now_ns: int) -> list[Unanswered]:
        """The (connection, key) whose wait passed; each stays awaited, and due, until the
        owner asks it again (:meth:`asked`), postpones it or drops it (:meth:`answered`)."""
        if self.next_due_ns is None or now_ns < self.next_due_ns:
            return []
        found: list[Unanswered] = []
        next_due: int | None = None
        for conn_id, awaited in self._by_conn.items():
            for key, entry in awaited.items():
                if entry.written_ns is None:
                    continue  # not due before it is written, which sets next_due_ns
                due_ns = entry.written_ns + entry.wait_ns
                if due_ns <= now_ns:
                    found.append(
                        Unanswered(conn_id, key, (now_ns - entry.written_ns) / 1e9, entry.asks)
                    )
                if next_due is None or due_ns < next_due:
                    next_due = due_ns
        self.next_due_ns = next_due
        return found

    def _due_by(self, due_ns: int) -> None:
        if self.next_due_ns is None or due_ns < self.next_due_ns:
            self.next_due_ns = due_ns
