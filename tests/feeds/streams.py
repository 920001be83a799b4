"""Strategies the venue property tests share: how redundant connections deliver the copies
of one venue stream."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any
from typing import Generic
from typing import Protocol
from typing import TypeVar

from hypothesis import note
from hypothesis import strategies as st

from gateway.core.arbiter import SymbolArbiter
from gateway.core.model import ReconnectWanted
from gateway.core.model import SnapshotWanted

T = TypeVar("T")
M = TypeVar("M")
Ex = TypeVar("Ex")


class Draw(Protocol):
    """A composite strategy's ``draw``, or ``st.data()``'s ``.draw``."""

    def __call__(self, strategy: st.SearchStrategy[Ex], label: Any = ...) -> Ex: ...


def interleaved(draw: Draw, copies: Sequence[Sequence[T]]) -> list[tuple[int, T]]:
    """Every connection's copy (``copies[c]``, each non-empty) as ``(c, item)`` in one
    arbitrary interleaving that keeps each connection's order (its stream is in order);
    every connection's first item comes first, in connection order (its subscription was
    answered before anything else is delivered)."""
    schedule: list[tuple[int, T]] = [(c, copy[0]) for c, copy in enumerate(copies)]
    cursors = [1] * len(copies)
    while True:
        left = [c for c, copy in enumerate(copies) if cursors[c] < len(copy)]
        if not left:
            return schedule
        c = draw(st.sampled_from(left))
        schedule.append((c, copies[c][cursors[c]]))
        cursors[c] += 1


class LateSubscriptions(Generic[M]):
    """Connections ``0..n_conns-1``, all up, delivering a venue's messages as ``(index,
    message)``, each in order, interleaved arbitrarily.

    The first connection's subscription is answered first: its queue is ``first``, every
    message of the venue; another's when it
    first delivers, at any message before the next reset (``resets``: their indices) that
    no connection delivered: a slow connection's first snapshot may be of a sequence the
    book has left, never of one it has not heard of. With ``unseen``, at any message at
    all: also after a reset no connection delivered yet (its first snapshot is of a
    sequence the book has not heard of). ``subscription(conn, at)`` is connection
    ``conn``'s queue when its subscription is answered at message ``at``. A connection the book asks
    to reconnect (:class:`ReconnectWanted`) goes down and up and subscribes again, answered
    where the venue is: at the latest message delivered."""

    def __init__(
        self,
        draw: Draw,
        n_conns: int,
        first: list[tuple[int, M]],
        resets: Sequence[int],
        subscription: Callable[[int, int], list[tuple[int, M]]],
        *,
        unseen: bool = False,
    ) -> None:
        self.draw = draw
        self.n_messages = len(first)
        self.resets = [] if unseen else resets
        self.subscription = subscription
        self.queues: list[list[tuple[int, M]]] = [first]
        self.queues += [[] for _ in range(1, n_conns)]
        self.unanswered = set(range(1, n_conns))
        #: The latest message any connection delivered.
        self.position = 0
        self._started = False

    def connect(self, arb: SymbolArbiter) -> None:
        """Every connection comes up."""
        for conn in range(len(self.queues)):
            arb.on_connection(conn, True, 0)

    def next(self) -> tuple[int, int, M] | None:
        """The next delivery ``(connection, index, message)``; None once all are done."""
        left = [c for c, queue in enumerate(self.queues) if queue or c in self.unanswered]
        if not left:
            return None
        conn = self.draw(st.sampled_from(left)) if self._started else 0
        self._started = True
        if conn in self.unanswered:
            self.unanswered.discard(conn)
            ahead = [i - 1 for i in self.resets if i > self.position]
            upto = ahead[0] if ahead else self.n_messages - 1
            self.queues[conn] = self.subscription(conn, self.draw(st.integers(0, upto)))
        index, message = self.queues[conn].pop(0)
        self.position = max(self.position, index)
        return conn, index, message

    def deliveries(self, arb: SymbolArbiter, step_ns: int = 0) -> Iterator[tuple[int, int, M, int]]:
        """Every delivery as ``(connection, index, message, now_ns)``, the clock ``step_ns``
        past the delivery before; the caller gives it to ``arb`` and the book's answer to
        :meth:`answer`. Once no delivery is left the venue is quiet: while the book has a
        deadline, its timer fires then (a window the book waits out; the clock never goes
        back), the connections do what the timer's events ask, and deliveries go on."""
        now_ns = 0
        while True:
            while (delivery := self.next()) is not None:
                now_ns += step_ns
                conn, index, message = delivery
                yield conn, index, message, now_ns
            deadline = arb.deadline_ns()
            if deadline is None:
                return
            note(f"timer at {deadline}")
            now_ns = max(now_ns, deadline)
            self.answer(arb, arb.on_timer(now_ns), now_ns)

    def answer(self, arb: SymbolArbiter, out: Sequence[object], now_ns: int) -> None:
        """Does what the book's answer ``out`` asks of the connections: :meth:`reopen`,
        then :meth:`resubscribe`."""
        self.reopen(arb, out, now_ns)
        self.resubscribe(out)

    def reopen(self, arb: SymbolArbiter, out: Sequence[object], now_ns: int) -> None:
        """Reconnects every connection ``out`` asks to reconnect."""
        for conn in (e.conn_id for e in out if isinstance(e, ReconnectWanted)):
            note(f"conn {conn} reconnects at #{self.position}")
            arb.on_connection(conn, False, now_ns)
            arb.on_connection(conn, True, now_ns)
            self.queues[conn] = self.subscription(conn, self.position)
            self.unanswered.discard(conn)

    def resubscribe(self, out: Sequence[object]) -> None:
        """When ``out`` asks a snapshot, every connection that has answered subscribes
        again (the gateway's way on a venue with in-band snapshots), answered where the
        venue is, after what it already had in flight."""
        if not any(isinstance(e, SnapshotWanted) for e in out):
            return
        note(f"every connection subscribes again at #{self.position}")
        for conn, queue in enumerate(self.queues):
            if conn in self.unanswered:
                continue
            answer = self.subscription(conn, self.position)[:1]
            at = next((k for k, (index, _) in enumerate(queue) if index > self.position), None)
            queue[len(queue) if at is None else at : at] = answer
