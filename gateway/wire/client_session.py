"""The client's side of a subscription: gateway messages in, typed events out. Pure.

:class:`ClientSession` is the core of :class:`gateway.io.client.GatewayClient` (the shell
owns the connection, the clock and the logs). Per subscribed symbol it keeps a
:class:`~gateway.core.subscriber.SubscribedBook` (the state machine ``mdgateway tap``
uses too: each delta must follow the previous message, a gap discards the book and asks
for a ``resync``), the gateway's last ``status`` and the position ``(epoch, seq)`` of the
last book message applied. Each message the shell receives, stamped with its receive time,
becomes a :class:`Step`: the events for the consumer, the requests to send, the warnings
to log and whether the gateway acknowledged the subscription.

Events (frozen; ``recv_ns`` is the client's wall clock when the message arrived, ns since
the Unix epoch):

* :class:`BookEvent`: a snapshot or a delta was applied; its ``book`` is consistent at
  ``(epoch, seq)``. Nothing is yielded for a delta that did not follow (the book is void
  until the resync's snapshot).
* :class:`BboEvent`: the top of book changed (``bbo`` channel).
* :class:`TradeEvent`: one trade (``trade`` channel).
* :class:`StatusEvent`: the symbol's state or its reason changed. The state is the
  gateway's, except while the client itself has no consistent book for a reason the
  gateway does not know: ``resyncing`` after a gap or a bad level (until the fresh
  snapshot), ``stale`` after the connection was lost (until the gateway's next status).
  A repeated status (same state and reason) yields nothing.
* :class:`RecoveryEvent`: after a reconnection, whether a book kept from the lost
  connection was recovered (the deltas it missed follow) or not (a snapshot follows);
  ``channel`` ``"trade"``: whether the trades missed while away follow or are lost.
* :class:`RetryEvent`: the gateway refused a ``resync`` (or the ``subscribe``) as
  ``rate_limited``; it is sent again after ``delay_s``.

Values of a later gateway (``docs/protocol.md``, Unknown values), each counted in
:class:`ClientStats` and logged (the first time per value or type):

* a ``status`` whose ``state`` this client does not know: the symbol's state is an
  :class:`~gateway.wire.protocol.UnknownValue` holding it (in :class:`StatusEvent` and
  :class:`BookEvent`), never ``live``, until the gateway's next known state. The book
  goes on (its seqs are still checked), as under a ``stale`` status;
* a ``trade`` with an unknown ``side``: yielded, its ``side`` an ``UnknownValue``: the
  trade happened, and dropping it would hide its volume and skip a trade ``seq``;
* an ``error`` with an unknown ``code``: while the ``subscribe`` awaits its answer, the
  subscription was refused (:class:`GatewayError`, with the code as sent, as for the
  known refusals); afterwards a warning with the code;
* a message of an unknown ``type``: ignored.

Recovery (``recover``, on by default): when the connection is lost, a live full-depth
book is kept at its ``(epoch, seq)``, and the trade stream at the ``(epoch, seq)`` of its
last trade (or where the gateway said it started); the next connection's ``subscribe``
names those positions in ``recover`` and ``recover_trades``, and the gateway's
``subscribed`` reply says which it recovers. Trades are yielded once each, in order: a
trade at or before the stream's position (a repeat) is dropped, one that skips seqs is
counted (``trade_gaps``) and logged.

Retries: a request the gateway refused as ``rate_limited`` is sent again after a capped
exponential backoff with full jitter (one per symbol's ``resync``, one for the
``subscribe``; reset when it is answered). The session decides; the shell asks
:meth:`ClientSession.next_retry_ns` when to call :meth:`ClientSession.on_timer`.

Latency: :class:`BookEvent` (deltas), :class:`BboEvent` and :class:`TradeEvent` carry the
gateway's ``event_ms`` (venue time; a trade's is ``ts_ms``), ``gateway_recv_ns`` and
``gateway_send_ns`` as the message had them (None or 0 when absent).
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Sequence
from decimal import Decimal
from decimal import InvalidOperation
from typing import ClassVar
from typing import Final
from typing import Literal

import msgspec

from gateway.core.backoff import Backoff
from gateway.core.book import L2Book
from gateway.core.model import Level
from gateway.core.model import Side
from gateway.core.model import SymbolState
from gateway.core.subscriber import BookSyncState
from gateway.core.subscriber import SubscribedBook
from gateway.core.subscriber import SubscriberAction
from gateway.core.transitions import Table
from gateway.core.transitions import transition
from gateway.wire.protocol import GOING_AWAY_REASON
from gateway.wire.protocol import Bbo
from gateway.wire.protocol import Channel
from gateway.wire.protocol import CloseCode
from gateway.wire.protocol import Delta
from gateway.wire.protocol import Error
from gateway.wire.protocol import ErrorCode
from gateway.wire.protocol import ProtocolError
from gateway.wire.protocol import RecoverFrom
from gateway.wire.protocol import Request
from gateway.wire.protocol import Resync
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import Subscribe
from gateway.wire.protocol import Subscribed
from gateway.wire.protocol import TradeMsg
from gateway.wire.protocol import UnknownMessage
from gateway.wire.protocol import UnknownValue
from gateway.wire.protocol import WireFormat
from gateway.wire.protocol import read_server_message

CHANNELS: Final[tuple[Channel, ...]] = ("book", "bbo", "trade")
#: Every symbol's ``stale`` reason once the gateway closed the connection because it is
#: stopping (1001 with :data:`~gateway.wire.protocol.GOING_AWAY_REASON`): a restart or a
#: deploy, not a fault of the network or of the gateway.
GATEWAY_STOPPED: Final = "the gateway stopped (a restart or a deploy, not a network fault)"


def disconnect_reason(close_code: int | None, close_reason: str, description: str) -> str:
    """Every symbol's ``stale`` reason once the connection ended, from the close frame the
    gateway sent (``close_code`` None: none came, the connection broke): :data:`GATEWAY_STOPPED`
    for the gateway's stop (1001 with :data:`~gateway.wire.protocol.GOING_AWAY_REASON`),
    else ``gateway connection lost: DESCRIPTION``."""
    if close_code == CloseCode.GOING_AWAY and close_reason == GOING_AWAY_REASON:
        return GATEWAY_STOPPED
    return f"gateway connection lost: {description}"


#: A symbol's state as the client tells it: the gateway's, or a later gateway's state
#: this client does not know (never ``live``).
ClientState = SymbolState | UnknownValue
#: Unknown values and message types remembered to log the first of each; beyond it,
#: they are counted only.
MAX_UNKNOWN_REMEMBERED: Final = 64
_TWO: Final = Decimal(2)


class GatewayError(Exception):
    """The gateway refused the subscription (unknown symbol, bad request, too many
    subscriptions): not retried."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _price(level: Level | None) -> Decimal | None:
    if level is None:
        return None
    try:
        return Decimal(level[0])
    except InvalidOperation:
        return None


def spread_of(bid: Level | None, ask: Level | None) -> Decimal | None:
    """Best ask minus best bid, exact (from the venue's decimal strings); None when a side
    is empty."""
    bid_price, ask_price = _price(bid), _price(ask)
    if bid_price is None or ask_price is None:
        return None
    return ask_price - bid_price


def mid_of(bid: Level | None, ask: Level | None) -> Decimal | None:
    """The mid price, exact; None when a side is empty."""
    bid_price, ask_price = _price(bid), _price(ask)
    if bid_price is None or ask_price is None:
        return None
    return (bid_price + ask_price) / _TWO


class Book:
    """One symbol's book as the client holds it: a read-only view, live.

    Levels are ``(price, qty)`` tuples of the venue's exact decimal strings, best first;
    :meth:`spread` and :meth:`mid` are exact :class:`~decimal.Decimal` values. The view
    follows the book as later messages change it: copy what must be kept (``bids()`` and
    ``asks()`` return new lists). Read it only while the symbol's last book event is the
    current one (:meth:`GatewayClient.book` returns None otherwise).
    """

    __slots__ = ("_sub", "symbol")

    def __init__(self, symbol: str, sub: SubscribedBook) -> None:
        self.symbol = symbol
        self._sub = sub

    @property
    def epoch(self) -> int:
        return self._sub.epoch

    @property
    def seq(self) -> int:
        return self._sub.seq

    @property
    def venue_id(self) -> int:
        """The venue's last update id the book reflects."""
        return self._sub.venue_id

    @property
    def l2(self) -> L2Book:
        """The underlying :class:`~gateway.core.book.L2Book` (do not modify it)."""
        return self._sub.book

    def best_bid(self) -> Level | None:
        return self._sub.book.best_bid()

    def best_ask(self) -> Level | None:
        return self._sub.book.best_ask()

    def bids(self, n: int | None = None) -> list[Level]:
        """The ``n`` best bids (all when None), best first."""
        return self._sub.book.bids(n)

    def asks(self, n: int | None = None) -> list[Level]:
        """The ``n`` best asks (all when None), best first."""
        return self._sub.book.asks(n)

    def levels(self, n: int | None = None) -> tuple[list[Level], list[Level]]:
        """``(bids, asks)``: the ``n`` best levels of each side (all when None)."""
        book = self._sub.book
        return book.bids(n), book.asks(n)

    @property
    def bid_count(self) -> int:
        return self._sub.book.bid_count

    @property
    def ask_count(self) -> int:
        return self._sub.book.ask_count

    def spread(self) -> Decimal | None:
        book = self._sub.book
        return spread_of(book.best_bid(), book.best_ask())

    def mid(self) -> Decimal | None:
        book = self._sub.book
        return mid_of(book.best_bid(), book.best_ask())

    def normalized(self) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
        """Both sides as numeric ``(price, qty)`` pairs, best first (book equality)."""
        return self._sub.book.normalized()

    def __repr__(self) -> str:
        return (
            f"Book({self.symbol!r}, epoch={self.epoch}, seq={self.seq}, "
            f"bid={self.best_bid()}, ask={self.best_ask()})"
        )


BookEventKind = Literal["snapshot", "delta"]


class BookEvent(msgspec.Struct, frozen=True):
    """A snapshot (``kind`` ``"snapshot"``: the book was replaced) or a delta (``"delta"``;
    its ``seq`` is always the previous book event's + 1 in the same epoch) was applied.
    ``book`` is consistent at ``(epoch, seq)`` now, and moves on with the next messages.
    ``state`` is the symbol's state (see :class:`StatusEvent`: an
    :class:`~gateway.wire.protocol.UnknownValue` is a later gateway's state, not
    ``live``); ``venue_id`` the venue's last update id the book reflects. For a delta:
    ``event_ms`` (the venue's event time, None when the venue sends none),
    ``gateway_recv_ns`` and ``gateway_send_ns`` (0 for a snapshot), and ``recovered``
    (re-sent from the gateway's recovery ring)."""

    symbol: str
    kind: BookEventKind
    epoch: int
    seq: int
    venue_id: int
    state: ClientState
    book: Book
    recv_ns: int
    event_ms: int | None = None
    gateway_recv_ns: int = 0
    gateway_send_ns: int = 0
    recovered: bool = False


class BboEvent(msgspec.Struct, frozen=True):
    """Top of book at ``(epoch, seq)`` of the gateway's book stream; a side is None when
    empty. Sent when it changes, and at subscription."""

    kind: ClassVar[Literal["bbo"]] = "bbo"

    symbol: str
    epoch: int
    seq: int
    bid: Level | None
    ask: Level | None
    recv_ns: int
    event_ms: int | None = None
    gateway_recv_ns: int = 0
    gateway_send_ns: int = 0

    def spread(self) -> Decimal | None:
        return spread_of(self.bid, self.ask)

    def mid(self) -> Decimal | None:
        return mid_of(self.bid, self.ask)


class TradeEvent(msgspec.Struct, frozen=True):
    """One trade; ``side`` is the aggressor's (an
    :class:`~gateway.wire.protocol.UnknownValue` when a later gateway sent a side this
    client does not know), ``ts_ms`` the venue's trade time (ms since the Unix epoch),
    ``price``/``qty`` the venue's decimal strings. ``(epoch, seq)``: its position in the
    symbol's trade stream (0 from a gateway that numbers none); ``recovered``: re-sent
    from the gateway's trade ring after a reconnection."""

    kind: ClassVar[Literal["trade"]] = "trade"

    symbol: str
    trade_id: int
    price: str
    qty: str
    side: Side | UnknownValue
    ts_ms: int
    recv_ns: int
    gateway_recv_ns: int = 0
    gateway_send_ns: int = 0
    epoch: int = 0
    seq: int = 0
    recovered: bool = False


class StatusEvent(msgspec.Struct, frozen=True):
    """The symbol's ``state`` or ``reason`` changed. ``state`` is the gateway's
    (``syncing``, ``live``, ``resyncing``, ``stale``; see ``docs/protocol.md``), or
    ``resyncing`` while the client rebuilds its book after a gap and ``stale`` while it
    is disconnected from every gateway; ``reason`` says why. A state of a later gateway
    that this client does not know is an :class:`~gateway.wire.protocol.UnknownValue`
    holding it (``str()``: ``unknown (VALUE)``): not ``live``, so do not trade on the
    book."""

    kind: ClassVar[Literal["status"]] = "status"

    symbol: str
    state: ClientState
    reason: str
    recv_ns: int


class RecoveryEvent(msgspec.Struct, frozen=True):
    """After a reconnection, for each stream kept from the lost connection.

    ``channel`` ``"book"``: ``recovered`` true when the gateway sends the deltas the book
    missed from ``(epoch, seq)`` on (the book stays as it was and goes on), false when it
    was discarded (a snapshot follows). ``channel`` ``"trade"``: ``recovered`` true when
    every trade after ``(epoch, seq)`` follows (``recovered`` trade events, then the live
    ones), false when the trades published meanwhile are lost (the live ones follow).
    ``instance`` names the gateway process that answered."""

    kind: ClassVar[Literal["recovery"]] = "recovery"

    symbol: str
    recovered: bool
    epoch: int
    seq: int
    instance: str
    recv_ns: int
    channel: Literal["book", "trade"] = "book"


class RetryEvent(msgspec.Struct, frozen=True):
    """The gateway refused a request as ``rate_limited``: ``op`` (``resync`` of
    ``symbol``, or the ``subscribe``, ``symbol`` None) is sent again after ``delay_s``
    (the ``attempt``-th retry since it was last answered); ``reason`` is the gateway's
    message."""

    kind: ClassVar[Literal["retry"]] = "retry"

    op: Literal["resync", "subscribe"]
    symbol: str | None
    attempt: int
    delay_s: float
    reason: str
    recv_ns: int


Event = BookEvent | BboEvent | TradeEvent | StatusEvent | RecoveryEvent | RetryEvent


@dataclasses.dataclass(slots=True)
class ClientStats:
    """Counts since the client was made. ``bad_messages``: undecodable messages, bad
    levels; ``statuses``: status events yielded (repeats are not)."""

    connects: int = 0
    #: Connections that ended; those the gateway closed because it stopped, among them or
    #: at the connect (closed at once while it was stopping).
    disconnects: int = 0
    gateway_stops: int = 0
    snapshots: int = 0
    deltas: int = 0
    gaps: int = 0
    bad_messages: int = 0
    bbos: int = 0
    trades: int = 0
    statuses: int = 0
    #: Books recovered after a reconnection, books that could not be, deltas re-sent.
    recoveries: int = 0
    recovery_misses: int = 0
    recovered_deltas: int = 0
    #: Trade streams recovered after a reconnection, those that could not be, trades
    #: re-sent; trades dropped as repeats; times the trade seq skipped (trades lost).
    trade_recoveries: int = 0
    trade_recovery_misses: int = 0
    recovered_trades: int = 0
    duplicate_trades: int = 0
    trade_gaps: int = 0
    #: Requests sent again after a ``rate_limited`` refusal.
    retries: int = 0
    #: Values and messages of a later gateway (``docs/protocol.md``, Unknown values):
    #: statuses with an unknown state, trades with an unknown side, errors with an
    #: unknown code, messages of an unknown type (ignored).
    unknown_states: int = 0
    unknown_sides: int = 0
    unknown_error_codes: int = 0
    unknown_messages: int = 0


@dataclasses.dataclass(slots=True)
class Step:
    """What one input asks of the shell: ``events`` for the consumer in order,
    ``requests`` to send, ``warnings`` to log as ``(cause, message)``, and ``subscribed``
    when the gateway acknowledged a subscription (the reconnect backoff starts over)."""

    events: list[Event] = dataclasses.field(default_factory=list)
    requests: list[Request] = dataclasses.field(default_factory=list)
    warnings: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    subscribed: bool = False


class _Symbol:
    """One symbol's state in the session."""

    __slots__ = ("book", "gateway_status", "loaded", "shown", "sub", "trade_at", "trades_kept")

    def __init__(self, symbol: str, with_book: bool) -> None:
        self.sub = SubscribedBook() if with_book else None
        self.book = Book(symbol, self.sub) if self.sub is not None else None
        #: The gateway's last status (or ``stale`` once the connection is lost).
        self.gateway_status: tuple[ClientState, str] = (SymbolState.SYNCING, "")
        #: The last status yielded (None: none yet).
        self.shown: tuple[ClientState, str] | None = None
        #: True once a snapshot was applied: ``(sub.epoch, sub.seq)`` is a position.
        self.loaded = False
        #: ``(epoch, seq)`` of the last trade received (or where the gateway said the
        #: stream starts); None before either.
        self.trade_at: tuple[int, int] | None = None
        #: The trade position is kept from a lost connection, for ``recover_trades``.
        self.trades_kept = False

    def status(self) -> tuple[ClientState, str]:
        sub = self.sub
        if sub is not None and sub.state in (BookSyncState.RESYNCING, BookSyncState.VOID):
            return SymbolState.RESYNCING, sub.problem
        return self.gateway_status


class RetryState(enum.Enum):
    """Where a request refused as ``rate_limited`` stands."""

    #: Not refused, or answered since.
    IDLE = enum.auto()
    #: Refused: to be sent again at its due time.
    WAITING = enum.auto()
    #: Sent again; no answer yet.
    SENT = enum.auto()


class RetryInput(enum.Enum):
    #: The gateway answered ``rate_limited``.
    REFUSED = enum.auto()
    #: The due time was reached.
    DUE = enum.auto()
    #: The request was answered (the resync's snapshot, ``subscribed``).
    ANSWERED = enum.auto()


class RetryAction(enum.Enum):
    #: Draw the backoff's next delay: the request is due then (a RetryEvent says so).
    SCHEDULE = enum.auto()
    SEND = enum.auto()
    RESET_BACKOFF = enum.auto()


_RS, _RI, _RA = RetryState, RetryInput, RetryAction
#: A refusal while waiting (the gateway repeating itself) draws a new, later delay.
RETRY_TRANSITIONS: Final[Table[RetryState, RetryInput, RetryAction]] = {
    (_RS.IDLE, _RI.REFUSED): (_RS.WAITING, (_RA.SCHEDULE,)),
    (_RS.IDLE, _RI.ANSWERED): (_RS.IDLE, ()),
    (_RS.WAITING, _RI.REFUSED): (_RS.WAITING, (_RA.SCHEDULE,)),
    (_RS.WAITING, _RI.DUE): (_RS.SENT, (_RA.SEND,)),
    (_RS.WAITING, _RI.ANSWERED): (_RS.IDLE, (_RA.RESET_BACKOFF,)),
    (_RS.SENT, _RI.REFUSED): (_RS.WAITING, (_RA.SCHEDULE,)),
    (_RS.SENT, _RI.ANSWERED): (_RS.IDLE, (_RA.RESET_BACKOFF,)),
}


class _Retry:
    """One request's retries after ``rate_limited``: its state (:data:`RETRY_TRANSITIONS`),
    its backoff and, while waiting, when it is due."""

    __slots__ = ("backoff", "delay_s", "due_ns", "state")

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.state = RetryState.IDLE
        #: When to send it again (wall clock ns), while WAITING.
        self.due_ns = 0
        #: The last delay drawn.
        self.delay_s = 0.0

    def handle(self, event: RetryInput, now_ns: int) -> tuple[RetryAction, ...]:
        self.state, actions = transition("retry", RETRY_TRANSITIONS, self.state, event)
        if RetryAction.SCHEDULE in actions:
            self.delay_s = self.backoff.next_delay_s()
            self.due_ns = now_ns + int(self.delay_s * 1e9)
        if RetryAction.RESET_BACKOFF in actions:
            self.backoff.reset()
        return actions


class ClientSession:
    """The subscription of ``symbols`` to ``channels`` and what the gateway sent for them.

    Args:
        symbols: symbol keys (``venue:SYMBOL``), duplicates dropped.
        channels: any of ``book``, ``bbo``, ``trade``.
        depth: levels per side of the ``book`` channel (the top N, kept exact); None for
            the full book.
        wire_format: the encoding asked of the gateway (``json`` or ``msgpack``).
        recover: keep live books across a lost connection and ask the gateway for the
            deltas they missed (full-depth books only: with a ``depth`` nothing is kept),
            and the trade streams' positions, for the trades they missed.
        retry_initial_s / retry_max_s: delay ceiling before sending a ``rate_limited``
            request again, doubled per refusal up to the cap, full jitter.
        rng: the retries' jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        channels: Sequence[Channel] = ("book",),
        depth: int | None = None,
        wire_format: WireFormat = "json",
        recover: bool = True,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("at least one symbol")
        if not channels:
            raise ValueError("at least one channel")
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; channels are {list(CHANNELS)}")
        if depth is not None and depth < 1:
            raise ValueError("depth must be >= 1 or None")
        if not 0 < retry_initial_s <= retry_max_s:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s")
        self.symbols = list(dict.fromkeys(symbols))
        self.channels: list[Channel] = list(dict.fromkeys(channels))
        self.depth = depth
        self.wire_format: WireFormat = wire_format
        self.recover = recover and depth is None
        self.recover_trades = recover and "trade" in self.channels
        self._retry_s = (retry_initial_s, retry_max_s)
        self._rng = rng if rng is not None else random.Random()
        #: Retries by the symbol of a ``resync``, or None for the ``subscribe``.
        self._retries: dict[str | None, _Retry] = {}
        #: A ``subscribe`` was sent on this connection and not acknowledged yet.
        self._subscribing = False
        #: The gateway instance of the current (or last) connection; "" before one.
        self.instance = ""
        self.stats = ClientStats()
        #: Unknown values and types already logged, by field (at most
        #: MAX_UNKNOWN_REMEMBERED in all).
        self._unknown_seen: set[tuple[str, str]] = set()
        with_book = "book" in self.channels
        self._symbols = {symbol: _Symbol(symbol, with_book) for symbol in self.symbols}

    # --- reading ----------------------------------------------------------------------------

    def book(self, symbol: str) -> Book | None:
        """The symbol's book while it is consistent, else None (before the first snapshot,
        during a resync, after the connection was lost, without the ``book`` channel)."""
        sym = self._symbols[symbol]
        if sym.sub is None or not sym.sub.synced:
            return None
        return sym.book

    def status(self, symbol: str) -> tuple[ClientState, str]:
        """The symbol's current state and reason, as the last :class:`StatusEvent` told."""
        return self._symbols[symbol].status()

    def position(self, symbol: str) -> tuple[int, int] | None:
        """``(epoch, seq)`` of the last book message applied for the symbol, kept across
        gaps and reconnections; None before the first snapshot."""
        sym = self._symbols[symbol]
        if sym.sub is None or not sym.loaded:
            return None
        return sym.sub.epoch, sym.sub.seq

    def subscribe_request(self) -> Subscribe:
        """The request to send on every new connection: with ``recover`` naming the
        position of every book kept from the lost connection."""
        kept = {
            symbol: RecoverFrom(sym.sub.epoch, sym.sub.seq)
            for symbol, sym in self._symbols.items()
            if sym.sub is not None and sym.sub.state is BookSyncState.DETACHED
        }
        kept_trades = {
            symbol: RecoverFrom(*sym.trade_at)
            for symbol, sym in self._symbols.items()
            if sym.trades_kept and sym.trade_at is not None
        }
        self._subscribing = True
        return Subscribe(
            self.symbols,
            self.channels,
            self.depth,
            self.wire_format,
            kept or None,
            kept_trades or None,
        )

    def next_retry_ns(self) -> int | None:
        """When :meth:`on_timer` has a request to send again, on the clock of
        :meth:`on_data`'s ``now_ns``, or None."""
        due = [r.due_ns for r in self._retries.values() if r.state is RetryState.WAITING]
        return min(due) if due else None

    def on_timer(self, now_ns: int) -> Step:
        """The requests whose retry is due at ``now_ns``: a ``resync`` still awaited, the
        ``subscribe`` still unacknowledged; each one sent as :data:`RETRY_TRANSITIONS`
        says (its ``SEND`` action)."""
        step = Step()
        for symbol, retry in self._retries.items():
            if retry.state is not RetryState.WAITING or retry.due_ns > now_ns:
                continue
            if RetryAction.SEND in retry.handle(RetryInput.DUE, now_ns):
                self.stats.retries += 1
                step.requests.append(self.subscribe_request() if symbol is None else Resync(symbol))
        return step

    # --- inputs -----------------------------------------------------------------------------

    def on_data(self, data: str | bytes, recv_ns: int, now_ns: int | None = None) -> Step:
        """One message from the gateway (text: JSON, binary: MessagePack) received at
        ``recv_ns`` (wall clock, stamped on the events). ``now_ns``: the same moment on the
        clock retries are timed on (:meth:`next_retry_ns`, :meth:`on_timer`), a monotonic
        one so that a wall clock stepped back delays no retry; default ``recv_ns``. Raises
        :class:`GatewayError` when the gateway refused the subscription."""
        step = Step()
        try:
            msg = read_server_message(data)
        except ProtocolError as exc:
            self.stats.bad_messages += 1
            step.warnings.append(("undecodable", f"undecodable message: {exc}"))
            return step
        if isinstance(msg, Delta | Snapshot | Status | Bbo | TradeMsg):
            sym = self._symbols.get(msg.symbol)
            if sym is None:
                return step  # not ours (e.g. from before an unsubscribe)
            if isinstance(msg, Delta):
                self._on_delta(sym, msg, recv_ns, step)
            elif isinstance(msg, Snapshot):
                self._on_snapshot(sym, msg, recv_ns, step)
            elif isinstance(msg, Status):
                state = msg.typed_state
                if isinstance(state, UnknownValue):
                    self.stats.unknown_states += 1
                    self._unknown("state", state.value, "symbol state not live", step)
                sym.gateway_status = (state, msg.reason)
                self._show_status(msg.symbol, sym, recv_ns, step)
            elif isinstance(msg, Bbo):
                self.stats.bbos += 1
                step.events.append(
                    BboEvent(
                        msg.symbol,
                        msg.epoch,
                        msg.seq,
                        msg.bid,
                        msg.ask,
                        recv_ns,
                        msg.event_ms,
                        msg.recv_ns,
                        msg.send_ns,
                    )
                )
            else:
                self._on_trade(sym, msg, recv_ns, step)
        elif isinstance(msg, Subscribed):
            step.subscribed = True
            self._subscribing = False
            self._answered(None, recv_ns)
            self._on_subscribed(msg, recv_ns, step)
        elif isinstance(msg, Error):
            self._on_error(msg, recv_ns, recv_ns if now_ns is None else now_ns, step)
        elif isinstance(msg, UnknownMessage):  # last: the common case does not pay for it
            self.stats.unknown_messages += 1
            self._unknown("type", msg.type, "message of unknown type ignored", step)
        return step

    def on_disconnected(self, reason: str, recv_ns: int) -> Step:
        """The connection was lost (``reason``: :func:`disconnect_reason`'s): every book is
        void until the next connection's snapshot or recovery, and every symbol is
        ``stale`` with ``reason`` until the gateway's next status. With ``recover`` the
        live books are kept for the next connection."""
        step = Step()
        self.stats.disconnects += 1
        if reason == GATEWAY_STOPPED:
            self.stats.gateway_stops += 1
        self._retries.clear()  # the next connection subscribes (and resyncs) anew
        self._subscribing = False
        for symbol, sym in self._symbols.items():
            if sym.sub is not None:
                sym.sub.on_disconnected(keep=self.recover)
            sym.trades_kept = self.recover_trades and sym.trade_at is not None
            sym.gateway_status = (SymbolState.STALE, reason)
            self._show_status(symbol, sym, recv_ns, step)
        return step

    # --- messages ---------------------------------------------------------------------------

    def _on_snapshot(self, sym: _Symbol, msg: Snapshot, recv_ns: int, step: Step) -> None:
        sub = sym.sub
        if sub is None or sym.book is None:
            return  # no book channel: nothing of it was asked for
        self._answered(msg.symbol, recv_ns)  # a snapshot answers any resync, good or bad
        actions = sub.on_snapshot(msg.epoch, msg.seq, msg.id, msg.bids, msg.asks)
        if SubscriberAction.BAD_LEVEL in actions:
            self.stats.bad_messages += 1
            step.warnings.append(("bad snapshot", f"{msg.symbol}: {sub.problem}; book void"))
            self._show_status(msg.symbol, sym, recv_ns, step)
            return
        sym.loaded = True
        self.stats.snapshots += 1
        self._show_status(msg.symbol, sym, recv_ns, step)  # a resync's end is a change
        step.events.append(self._book_event(msg.symbol, sym, sym.book, "snapshot", recv_ns))

    def _on_subscribed(self, msg: Subscribed, recv_ns: int, step: Step) -> None:
        """The gateway's answer to the recovery of every kept book and trade stream."""
        self.instance = msg.instance
        recovered = set(msg.recovered)
        recovered_trades = set(msg.recovered_trades)
        for symbol, sym in self._symbols.items():
            start = msg.trade_positions.get(symbol)
            if sym.trades_kept and sym.trade_at is not None:
                sym.trades_kept = False
                ok = symbol in recovered_trades
                if ok:
                    self.stats.trade_recoveries += 1
                else:
                    self.stats.trade_recovery_misses += 1
                epoch, seq = sym.trade_at
                step.events.append(
                    RecoveryEvent(symbol, ok, epoch, seq, msg.instance, recv_ns, "trade")
                )
                if ok:
                    start = None  # the recovered trades move the position on
            if start is not None:
                sym.trade_at = (start.epoch, start.seq)
            sub = sym.sub
            if sub is None or sub.state is not BookSyncState.DETACHED:
                continue
            ok = symbol in recovered
            sub.on_recovery(ok)
            if ok:
                self.stats.recoveries += 1
            else:
                self.stats.recovery_misses += 1
            step.events.append(RecoveryEvent(symbol, ok, sub.epoch, sub.seq, msg.instance, recv_ns))

    def _on_error(self, msg: Error, recv_ns: int, now_ns: int, step: Step) -> None:
        """Raise :class:`GatewayError` for a refused subscription, schedule a retry for a
        ``rate_limited`` one of ours, warn of the others."""
        code = msg.typed_code
        if code in (
            ErrorCode.UNKNOWN_SYMBOL,
            ErrorCode.BAD_REQUEST,
            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
        ):
            raise GatewayError(msg.code, msg.message)
        if isinstance(code, UnknownValue):
            self.stats.unknown_error_codes += 1
            if self._subscribing:  # the only request awaiting an answer: refused
                raise GatewayError(msg.code, msg.message)
        elif code is ErrorCode.RATE_LIMITED and self._retry(msg, recv_ns, now_ns, step):
            return
        step.warnings.append((f"error {msg.code}", f"error {msg.code}: {msg.message}"))

    def _unknown(self, field: str, value: str, what: str, step: Step) -> None:
        """Warn of a later gateway's ``value`` of ``field`` the first time it is seen."""
        key = (field, value)
        if key in self._unknown_seen or len(self._unknown_seen) >= MAX_UNKNOWN_REMEMBERED:
            return
        self._unknown_seen.add(key)
        step.warnings.append(
            (
                f"unknown {field}",
                f"{field} {value!r} unknown to this client (a later gateway's): {what}",
            )
        )

    def _on_trade(self, sym: _Symbol, msg: TradeMsg, recv_ns: int, step: Step) -> None:
        """Yield the trade unless it is a repeat; count a skip in the seqs."""
        at = sym.trade_at
        if msg.seq:  # numbered by the gateway
            if at is not None and at[0] == msg.epoch:
                if msg.seq <= at[1]:
                    self.stats.duplicate_trades += 1
                    return
                if msg.seq > at[1] + 1:
                    self.stats.trade_gaps += 1
                    step.warnings.append(
                        (
                            "trade gap",
                            f"{msg.symbol}: trades {at[1] + 1}-{msg.seq - 1} of epoch "
                            f"{msg.epoch} were not received",
                        )
                    )
            sym.trade_at = (msg.epoch, msg.seq)
        self.stats.trades += 1
        if msg.recovered:
            self.stats.recovered_trades += 1
        side = msg.typed_side
        if type(side) is UnknownValue:  # cheaper than isinstance of a Struct type, per trade
            self.stats.unknown_sides += 1
            self._unknown("side", side.value, "trade yielded with an unknown side", step)
        step.events.append(
            TradeEvent(
                msg.symbol,
                msg.id,
                msg.price,
                msg.qty,
                side,
                msg.ts_ms,
                recv_ns,
                msg.recv_ns,
                msg.send_ns,
                msg.epoch,
                msg.seq,
                bool(msg.recovered),
            )
        )

    def _answered(self, symbol: str | None, recv_ns: int) -> None:
        """The request retried for ``symbol`` (None: the subscribe) needs no retry now."""
        retry = self._retries.get(symbol)
        if retry is not None:
            retry.handle(RetryInput.ANSWERED, recv_ns)

    def _retry(self, msg: Error, recv_ns: int, now_ns: int, step: Step) -> bool:
        """Schedule the refused request again (due ``now_ns`` + the delay), if it is one of
        the session's (a resync still awaited, the subscribe); False when it is not."""
        symbol = msg.symbol
        if symbol is None:
            if not self._subscribing:
                return False
        else:
            sym = self._symbols.get(symbol)
            if sym is None or sym.sub is None or sym.sub.state is not BookSyncState.RESYNCING:
                return False
        retry = self._retries.get(symbol)
        if retry is None:
            retry = self._retries[symbol] = _Retry(Backoff(*self._retry_s, self._rng))
        retry.handle(RetryInput.REFUSED, now_ns)
        delay_s = retry.delay_s
        op: Literal["resync", "subscribe"] = "subscribe" if symbol is None else "resync"
        step.events.append(
            RetryEvent(op, symbol, retry.backoff.failures, delay_s, msg.message, recv_ns)
        )
        return True

    def _on_delta(self, sym: _Symbol, msg: Delta, recv_ns: int, step: Step) -> None:
        sub = sym.sub
        if sub is None or sym.book is None:
            return
        actions = sub.on_delta(msg.epoch, msg.seq, msg.id, msg.bids, msg.asks)
        if SubscriberAction.BOOK_UPDATED in actions:
            self.stats.deltas += 1
            if msg.recovered:
                self.stats.recovered_deltas += 1
            step.events.append(self._book_event(msg.symbol, sym, sym.book, "delta", recv_ns, msg))
            return
        if SubscriberAction.GAP in actions:
            self.stats.gaps += 1
        if SubscriberAction.BAD_LEVEL in actions:
            self.stats.bad_messages += 1
        if SubscriberAction.ASK_RESYNC in actions:
            step.warnings.append(("resync", f"{msg.symbol}: {sub.problem}; resync requested"))
            step.requests.append(Resync(msg.symbol))
            self._show_status(msg.symbol, sym, recv_ns, step)
        # Otherwise a snapshot is awaited: this delta is in it or before it.

    def _book_event(
        self,
        symbol: str,
        sym: _Symbol,
        book: Book,
        kind: BookEventKind,
        recv_ns: int,
        delta: Delta | None = None,
    ) -> BookEvent:
        state = sym.status()[0]
        if delta is None:
            return BookEvent(
                symbol, kind, book.epoch, book.seq, book.venue_id, state, book, recv_ns
            )
        return BookEvent(
            symbol,
            kind,
            book.epoch,
            book.seq,
            book.venue_id,
            state,
            book,
            recv_ns,
            delta.event_ms,
            delta.recv_ns,
            delta.send_ns,
            bool(delta.recovered),
        )

    def _show_status(self, symbol: str, sym: _Symbol, recv_ns: int, step: Step) -> None:
        status = sym.status()
        if status == sym.shown:
            return
        sym.shown = status
        self.stats.statuses += 1
        step.events.append(StatusEvent(symbol, status[0], status[1], recv_ns))
