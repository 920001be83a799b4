"""The slow-subscriber flow policy: one subscriber's flow state as a state machine. Pure.

The fan-out shell (:mod:`gateway.io.fanout`) owns the sockets; it tells a
:class:`SubscriberFlow` what happens (a message or a reply is ready to be written, with
the transport's buffered byte count; a periodic check; the subscriber asks for a resync)
and acts on the :class:`FlowAction` values it gets back. Time comes in as ``now_s``
(seconds on any monotonic clock); nothing here reads a clock.

States (:class:`FlowState`):

* ``LIVE``: messages are written.
* ``BEHIND``: the write buffer went above ``max_buffer_bytes``. Messages are dropped and
  their keys noted as *owed*; once a check finds the buffer at or below
  ``low_water_bytes`` the subscriber is live again and is sent, per owed key, the current
  status, snapshot and bbo (conflation).
* ``DISCONNECTED``: the policy closed the connection (1008), or the shell closed it for
  another reason (``CLOSED``); nothing more is written.

Trades are not conflated: a stream has no snapshot. A dropped trade notes, besides its
key, the subscriber's *trade position* (the seq of the last trade of the key it was
written, :attr:`SubscriberFlow.owed_trades`). At the resend of the owed keys the shell
tells the flow, per owed position, whether the trade ring still holds every trade after it
(:meth:`SubscriberFlow.on_missed_trades`): if it does they are replayed (written like any
message: falling behind again notes the position reached), if not none of them is sent
(all or nothing, as a reconnection's recovery: the next trade's seq shows the gap). Until
another trade of the key is written, a skipped subscriber stands at its old position.

A subscriber that falls behind more than ``max_conflations`` times within
``conflation_window_s``, stays behind longer than ``max_behind_s``, or lets its replies
pile up above twice ``max_buffer_bytes`` is disconnected. Each input is first classified
into a :class:`FlowEvent` (the only place where sizes and times are compared); the
transition is then looked up in :data:`TRANSITIONS`, ``(state, event) -> (new state,
actions)``; a pair missing from the table is a bug and raises :class:`FlowError`.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Final


class FlowState(enum.Enum):
    LIVE = "live"
    BEHIND = "behind"
    DISCONNECTED = "disconnected"


class FlowEvent(enum.Enum):
    #: A message is ready and the buffer is at or below ``max_buffer_bytes``.
    MESSAGE_FITS = "message_fits"
    #: A message is ready and the buffer is above ``max_buffer_bytes``.
    MESSAGE_OVERFLOWS = "message_overflows"
    #: As MESSAGE_OVERFLOWS for a live subscriber, and falling behind now would be more
    #: than ``max_conflations`` times within ``conflation_window_s``.
    MESSAGE_OVERFLOWS_TOO_OFTEN = "message_overflows_too_often"
    #: A reply to a request is ready and the buffer is at or below twice the limit.
    REPLY_FITS = "reply_fits"
    #: A reply is ready and the buffer is above twice the limit: replies are not read.
    REPLY_UNREAD = "reply_unread"
    #: The subscriber asked for a fresh snapshot of a key.
    RESYNC_ASKED = "resync_asked"
    #: Check of a behind subscriber: the buffer is at or below ``low_water_bytes``.
    DRAINED = "drained"
    #: Check: still above low water, behind for at most ``max_behind_s``.
    STILL_BEHIND = "still_behind"
    #: Check: still above low water, behind for more than ``max_behind_s``.
    BEHIND_TOO_LONG = "behind_too_long"
    #: The shell closed the connection for another reason (an error while serving it, a
    #: limit): nothing more is written.
    CLOSED = "closed"
    #: At a resend of owed keys: the trade ring holds every trade after the key's owed
    #: trade position.
    TRADES_HELD = "trades_held"
    #: At a resend of owed keys: a trade after the owed trade position is no longer held.
    TRADES_LOST = "trades_lost"


class FlowAction(enum.Enum):
    """What a transition asks for. DROP, OWE and CONFLATE are bookkeeping the flow does
    itself (the shell may count them too); WRITE, RESEND_OWED, REPLAY_TRADES, SKIP_TRADES
    and DISCONNECT are for the shell (the trade ones forget the owed trade position, or
    mark it skipped, before they return)."""

    #: Write the message or reply now (for RESYNC_ASKED: send the snapshot now).
    WRITE = "write"
    #: The message is not written: counted in ``dropped``, its key noted as owed.
    DROP = "drop"
    #: The key is noted as owed (its snapshot, or its missed trades, come with the
    #: recovery); nothing is dropped. An owed trade position stays owed.
    OWE = "owe"
    #: One more fall behind: counted in ``conflations``, ``behind_since_s`` is now.
    CONFLATE = "conflate"
    #: Send status, snapshot and bbo of every key of :meth:`SubscriberFlow.take_owed`,
    #: and decide each owed trade position (:meth:`SubscriberFlow.on_missed_trades`).
    RESEND_OWED = "resend_owed"
    #: Write every trade after the owed trade position, from the trade ring, in order,
    #: marked recovered (each write classified as a message of the key).
    REPLAY_TRADES = "replay_trades"
    #: Send none of the missed trades: they are lost, and the next trade's seq says so.
    SKIP_TRADES = "skip_trades"
    #: Close the connection (1008) with :attr:`SubscriberFlow.close_reason`.
    DISCONNECT = "disconnect"


Transition = tuple[FlowState, tuple[FlowAction, ...]]

_LIVE, _BEHIND, _GONE = FlowState.LIVE, FlowState.BEHIND, FlowState.DISCONNECTED
_E = FlowEvent
_A = FlowAction

#: The whole policy: ``(state, event) -> (new state, actions in order)``.
TRANSITIONS: Final[dict[tuple[FlowState, FlowEvent], Transition]] = {
    (_LIVE, _E.MESSAGE_FITS): (_LIVE, (_A.WRITE,)),
    (_LIVE, _E.MESSAGE_OVERFLOWS): (_BEHIND, (_A.DROP, _A.CONFLATE)),
    (_LIVE, _E.MESSAGE_OVERFLOWS_TOO_OFTEN): (_GONE, (_A.DROP, _A.CONFLATE, _A.DISCONNECT)),
    (_LIVE, _E.REPLY_FITS): (_LIVE, (_A.WRITE,)),
    (_LIVE, _E.REPLY_UNREAD): (_GONE, (_A.DISCONNECT,)),
    (_LIVE, _E.RESYNC_ASKED): (_LIVE, (_A.WRITE,)),
    (_LIVE, _E.CLOSED): (_GONE, ()),
    # Behind: whatever the buffer holds now, nothing of the symbols is written until a
    # check finds it drained (replies still go out: they are small and paced by requests).
    (_BEHIND, _E.MESSAGE_FITS): (_BEHIND, (_A.DROP,)),
    (_BEHIND, _E.MESSAGE_OVERFLOWS): (_BEHIND, (_A.DROP,)),
    (_BEHIND, _E.REPLY_FITS): (_BEHIND, (_A.WRITE,)),
    (_BEHIND, _E.REPLY_UNREAD): (_GONE, (_A.DISCONNECT,)),
    (_BEHIND, _E.RESYNC_ASKED): (_BEHIND, (_A.OWE,)),
    (_BEHIND, _E.DRAINED): (_LIVE, (_A.RESEND_OWED,)),
    (_BEHIND, _E.STILL_BEHIND): (_BEHIND, ()),
    (_BEHIND, _E.BEHIND_TOO_LONG): (_GONE, (_A.DISCONNECT,)),
    (_BEHIND, _E.CLOSED): (_GONE, ()),
    # Missed trades are decided once live; behind again (a resend before them overflowed),
    # the position waits for the next drain.
    (_LIVE, _E.TRADES_HELD): (_LIVE, (_A.REPLAY_TRADES,)),
    (_LIVE, _E.TRADES_LOST): (_LIVE, (_A.SKIP_TRADES,)),
    (_BEHIND, _E.TRADES_HELD): (_BEHIND, (_A.OWE,)),
    (_BEHIND, _E.TRADES_LOST): (_BEHIND, (_A.OWE,)),
    (_GONE, _E.MESSAGE_FITS): (_GONE, (_A.DROP,)),
    (_GONE, _E.MESSAGE_OVERFLOWS): (_GONE, (_A.DROP,)),
    (_GONE, _E.REPLY_FITS): (_GONE, ()),
    (_GONE, _E.REPLY_UNREAD): (_GONE, ()),
    (_GONE, _E.RESYNC_ASKED): (_GONE, ()),
    (_GONE, _E.CLOSED): (_GONE, ()),
    (_GONE, _E.TRADES_HELD): (_GONE, ()),
    (_GONE, _E.TRADES_LOST): (_GONE, ()),
}

#: The (LIVE, MESSAGE_FITS) actions: :meth:`SubscriberFlow.on_message` returns this very
#: tuple on its hot path, so the shell may test it by identity.
WRITE: Final = TRANSITIONS[_LIVE, _E.MESSAGE_FITS][1]


class FlowError(Exception):
    """An event the state does not accept: a bug in the caller."""


@dataclasses.dataclass(frozen=True, slots=True)
class FlowPolicy:
    """The limits of the slow-subscriber policy (see the module docstring)."""

    max_buffer_bytes: int = 4 * 1024 * 1024
    #: A behind subscriber is resynced once its buffer is at or below this.
    low_water_bytes: int = 1024 * 1024
    max_conflations: int = 5
    conflation_window_s: float = 60.0
    max_behind_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_buffer_bytes < 1 or self.max_conflations < 0:
            raise ValueError("max_buffer_bytes >= 1, max_conflations >= 0")
        if not 0 <= self.low_water_bytes <= self.max_buffer_bytes:
            raise ValueError("0 <= low_water_bytes <= max_buffer_bytes")


class SubscriberFlow:
    """One subscriber's flow state, counters, owed keys and owed trade positions.

    Every ``on_*`` method classifies its input, applies the transition and returns its
    actions; the bookkeeping actions (DROP, OWE, CONFLATE) are already done when it
    returns.
    """

    __slots__ = (
        "_conflation_times_s",
        "behind_since_s",
        "close_reason",
        "conflations",
        "dropped",
        "owed",
        "owed_trades",
        "policy",
        "skipped_trades",
        "state",
    )

    def __init__(self, policy: FlowPolicy) -> None:
        self.policy = policy
        self.state = FlowState.LIVE
        #: Keys whose messages were dropped or deferred while behind: owed a resend.
        self.owed: set[str] = set()
        #: Key → the seq of the last trade of the key written before one was dropped.
        self.owed_trades: dict[str, int] = {}
        #: Key → (position, last seq) of a SKIP_TRADES: the subscriber stands at the position
        #: while no trade after the last seq was written.
        self.skipped_trades: dict[str, tuple[int, int]] = {}
        self.dropped = 0
        #: Times the subscriber fell behind, over its life.
        self.conflations = 0
        self.behind_since_s = 0.0
        #: Why the flow disconnected the subscriber ("" until it did).
        self.close_reason = ""
        self._conflation_times_s: collections.deque[float] = collections.deque()

    # --- inputs ---------------------------------------------------------------------------

    def on_message(
        self, key: str, buffered_bytes: int, now_s: float, trade_seq: int | None = None
    ) -> tuple[FlowAction, ...]:
        """A message of ``key`` is ready (``trade_seq``: it is the trade of that seq in the
        key's trade stream); ``buffered_bytes`` is the transport's write buffer. Returns
        :data:`WRITE` (the same object) when it is to be written."""
        if self.state is _LIVE and buffered_bytes <= self.policy.max_buffer_bytes:
            return WRITE  # the (LIVE, MESSAGE_FITS) row without the lookup: the hot path
        if buffered_bytes <= self.policy.max_buffer_bytes:
            event = _E.MESSAGE_FITS
        elif self.state is _LIVE and self._falls_behind_too_often(now_s):
            event = _E.MESSAGE_OVERFLOWS_TOO_OFTEN
        else:
            event = _E.MESSAGE_OVERFLOWS
        return self.handle(event, key, now_s, trade_seq)

    def on_reply(self, buffered_bytes: int) -> tuple[FlowAction, ...]:
        """A reply to one of the subscriber's requests is ready."""
        if buffered_bytes > 2 * self.policy.max_buffer_bytes:
            return self.handle(_E.REPLY_UNREAD, None, 0.0)
        return self.handle(_E.REPLY_FITS, None, 0.0)

    def on_resync(self, key: str) -> tuple[FlowAction, ...]:
        """The subscriber asked for a fresh snapshot of ``key``."""
        return self.handle(_E.RESYNC_ASKED, key, 0.0)

    def on_check(self, buffered_bytes: int, now_s: float) -> tuple[FlowAction, ...]:
        """The periodic check of a behind subscriber."""
        if buffered_bytes <= self.policy.low_water_bytes:
            event = _E.DRAINED
        elif now_s - self.behind_since_s > self.policy.max_behind_s:
            event = _E.BEHIND_TOO_LONG
        else:
            event = _E.STILL_BEHIND
        return self.handle(event, None, now_s)

    def on_closed(self) -> tuple[FlowAction, ...]:
        """The shell closed the connection itself (not for being slow)."""
        return self.handle(_E.CLOSED)

    def on_missed_trades(self, key: str, held: bool, last_seq: int) -> tuple[FlowAction, ...]:
        """At the resend of the owed keys, for a key of :attr:`owed_trades`: ``held``,
        the trade ring holds every trade after its position; ``last_seq`` is the key's last
        trade published. REPLAY_TRADES: replay from the position, now no longer owed."""
        return self.handle(_E.TRADES_HELD if held else _E.TRADES_LOST, key, 0.0, last_seq)

    # --- owed keys --------------------------------------------------------------------------

    def take_owed(self) -> set[str]:
        """The owed keys (after RESEND_OWED), which are no longer owed."""
        owed, self.owed = self.owed, set()
        return owed

    def forget(self, key: str) -> None:
        """The subscriber unsubscribed from ``key``: nothing is owed for it."""
        self.owed.discard(key)
        self.owed_trades.pop(key, None)
        self.skipped_trades.pop(key, None)

    # --- the machine ------------------------------------------------------------------------

    def _falls_behind_too_often(self, now_s: float) -> bool:
        window_s = self.policy.conflation_window_s
        recent = sum(1 for t in self._conflation_times_s if now_s - t <= window_s)
        return recent + 1 > self.policy.max_conflations

    def handle(
        self,
        event: FlowEvent,
        key: str | None = None,
        now_s: float = 0.0,
        trade_seq: int | None = None,
    ) -> tuple[FlowAction, ...]:
        """Apply one classified event (what the ``on_*`` methods do after classifying):
        the transition of :data:`TRANSITIONS`, its bookkeeping done, its actions returned.
        ``trade_seq`` is the seq of a trade message, or the last seq of ``key``'s trade
        stream for TRADES_HELD and TRADES_LOST. Raises :class:`FlowError` for a pair the
        table does not hold."""
        transition = TRANSITIONS.get((self.state, event))
        if transition is None:
            raise FlowError(f"{event.name} is not accepted in state {self.state.name}")
        new_state, actions = transition
        for action in actions:
            if action is _A.DROP:
                self.dropped += 1
                if key is not None:
                    self.owed.add(key)
                    if trade_seq is not None:
                        self._owe_trades(key, trade_seq)
            elif (action is _A.REPLAY_TRADES or action is _A.SKIP_TRADES) and key is not None:
                position = self.owed_trades.pop(key, None)
                if action is _A.SKIP_TRADES and position is not None and trade_seq is not None:
                    self.skipped_trades[key] = (position, trade_seq)
            elif action is _A.OWE:
                if key is not None:
                    self.owed.add(key)
            elif action is _A.CONFLATE:
                self._conflate(now_s)
            elif action is _A.DISCONNECT:
                self.close_reason = self._reason(event)
        self.state = new_state
        return actions

    def _owe_trades(self, key: str, seq: int) -> None:
        """The trade ``seq`` of ``key`` is dropped: the position before it is owed, unless
        an earlier drop owes one already, or a skip left the subscriber further back (no
        trade after the skip's last seq was written)."""
        if key in self.owed_trades:
            return
        skipped = self.skipped_trades.pop(key, None)
        if skipped is not None and seq == skipped[1] + 1:
            self.owed_trades[key] = skipped[0]
        else:
            self.owed_trades[key] = seq - 1

    def _conflate(self, now_s: float) -> None:
        self.conflations += 1
        self.behind_since_s = now_s
        times = self._conflation_times_s
        times.append(now_s)
        while times and now_s - times[0] > self.policy.conflation_window_s:
            times.popleft()

    def _reason(self, event: FlowEvent) -> str:
        policy = self.policy
        if event is _E.MESSAGE_OVERFLOWS_TOO_OFTEN:
            return (
                f"subscriber too slow: fell behind {len(self._conflation_times_s)} times "
                f"within {policy.conflation_window_s:g} s (limit {policy.max_conflations})"
            )
        if event is _E.BEHIND_TOO_LONG:
            return (
                f"subscriber too slow: send buffer above {policy.max_buffer_bytes} bytes "
                f"for more than {policy.max_behind_s:g} s"
            )
        return "subscriber too slow: it does not read its replies"
