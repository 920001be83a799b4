"""Venue-neutral events: what venue adapters produce and what the gateway publishes.

Every event is a frozen msgspec Struct with ``gc=False`` (they hold only strings, ints and
tuples of strings, so they cannot form reference cycles). Prices and quantities stay the
venue's exact decimal strings end to end; a quantity equal to zero removes the level.

Symbol keys are ``"<venue>:<SYMBOL>"`` with the symbol spelled as the venue spells it,
for example ``binance:BTCUSDT``.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

#: One price level as the venue sent it: ``(price, quantity)``.
Level = tuple[str, str]

#: The reason every symbol is ``stale`` with once the gateway stops
#: (:meth:`gateway.core.pipeline.VenuePipeline.stop`), and of the close (1001) every
#: subscriber gets after those statuses (:data:`gateway.wire.protocol.GOING_AWAY_REASON`).
STOPPING_REASON: Final = "the gateway is stopping"
#: The reason of a symbol still in its first state (``syncing``), before any status of it
#: was published: shown in ``/healthz`` and the ``status`` sent to its subscribers.
STARTING_REASON: Final = "no book yet: the gateway is connecting to the venue"


def symbol_key(venue: str, symbol: str) -> str:
    """The gateway-wide key of one venue's symbol."""
    return f"{venue}:{symbol}"


def log_fields(key: str) -> dict[str, str]:
    """The ``extra`` of a log line about the symbol of ``key``: its venue and symbol
    (JSON log lines carry them as fields)."""
    venue, _, symbol = key.partition(":")
    return {"venue": venue, "symbol": symbol}


class VenueContractError(Exception):
    """The venue sent something that breaks its documented contract.

    The one error a venue parser raises for bad input. The gateway counts it, logs it and
    goes on; it never corrupts a book.
    """


# --- events produced by venue adapters -------------------------------------------------


class DepthDiff(msgspec.Struct, frozen=True, gc=False):
    """An incremental book update covering venue update ids ``first_id..last_id``.

    ``prev_id`` is the venue's link to the previous event where it has one (Binance USD-M
    ``pu``, OKX ``prevSeqId``), else -1. Levels are absolute quantities. ``checksum`` is
    the venue's checksum of the book after this update where the venue sends one (OKX,
    Kraken), else None; a checksum the venue declares absent (OKX 0) is None.

    On unsequenced venues (Kraken, Coinbase) the ids are per connection, not shared.
    """

    venue: str
    symbol: str
    first_id: int
    last_id: int
    prev_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    event_ms: int
    recv_ns: int
    conn_id: int
    checksum: int | None = None

    @property
    def key(self) -> str:
        return symbol_key(self.venue, self.symbol)


class DepthSnapshot(msgspec.Struct, frozen=True, gc=False):
    """A full (or deep) book as of venue update id ``last_id``.

    ``conn_id`` is -1 for a REST snapshot, else the connection that sent it in band.
    ``reset`` is true when the venue declares that its sequence restarted with this
    snapshot (Bybit ``u == 1``): it replaces the book whatever ids came before.
    ``venue_time_ms`` is the venue's own time of the book (ms since the epoch; Bybit
    ``cts``, the matching engine's, else the push's ``ts``) where the venue gives one in
    band, else None: it orders two reset snapshots whose ids say nothing of which came
    first.
    """

    venue: str
    symbol: str
    last_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    recv_ns: int
    conn_id: int
    checksum: int | None = None
    reset: bool = False
    venue_time_ms: int | None = None

    @property
    def key(self) -> str:
        return symbol_key(self.venue, self.symbol)


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class Trade(msgspec.Struct, frozen=True, gc=False):
    """One trade; ``side`` is the aggressor's side."""

    venue: str
    symbol: str
    trade_id: int
    price: str
    qty: str
    side: Side
    trade_ms: int
    recv_ns: int
    conn_id: int

    @property
    def key(self) -> str:
        return symbol_key(self.venue, self.symbol)


class VenueNotice(msgspec.Struct, frozen=True, gc=False):
    """A control message from the venue: a subscribe ack, an error reply, a shutdown notice.

    ``reconnect`` is true when the venue asks the client to reconnect (Binance
    ``serverShutdown``).
    """

    venue: str
    kind: str
    detail: str
    reconnect: bool
    recv_ns: int
    conn_id: int


class ConnectionSequence(msgspec.Struct, frozen=True, gc=False):
    """A connection-wide message counter (Coinbase ``sequence_num``): every message on the
    connection carries the next number, so a jump means this connection lost messages."""

    venue: str
    seq: int
    recv_ns: int
    conn_id: int


class InstrumentPrecision(msgspec.Struct, frozen=True, gc=False):
    """Decimal places a venue renders an instrument's prices and quantities at (Kraken's
    ``instrument`` channel): what its checksum is computed on."""

    venue: str
    symbol: str
    price_precision: int
    qty_precision: int
    recv_ns: int
    conn_id: int


VenueEvent = (
    DepthDiff | DepthSnapshot | Trade | VenueNotice | ConnectionSequence | InstrumentPrecision
)


# --- events produced by the gateway -----------------------------------------------------


class SymbolState(enum.StrEnum):
    """What subscribers are told about a symbol's book."""

    #: No book yet: waiting for the first snapshot.
    SYNCING = "syncing"
    #: The book is consistent with the venue and deltas flow.
    LIVE = "live"
    #: The book lost an update on every copy or was found wrong (crossed, a venue reset; no
    #: valid replica); it is being rebuilt (docs/protocol.md, Symbol states).
    RESYNCING = "resyncing"
    #: The book is not kept current: every upstream connection carrying it is down, its
    #: updates stopped on every connection, the venue refused it, or the gateway stops.
    STALE = "stale"


class BookDelta(msgspec.Struct, frozen=True, gc=False):
    """A change to the published book: ``seq`` is the previous message's ``seq`` + 1.

    ``venue_id`` is the venue's last update id that the book reflects after this delta.
    ``recv_ns`` is when the update's first copy was received (wall clock, ns);
    ``event_ms`` the venue's event time of the update (ms since the Unix epoch), or None
    when the venue sends none.
    """

    key: str
    epoch: int
    seq: int
    venue_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    recv_ns: int
    event_ms: int | None = None


class BookReset(msgspec.Struct, frozen=True, gc=False):
    """The published book was rebuilt from a venue snapshot and starts a new epoch.

    Subscribers must replace their book with a fresh snapshot at ``(epoch, seq)``.
    """

    key: str
    epoch: int
    seq: int
    venue_id: int
    recv_ns: int


class StatusChange(msgspec.Struct, frozen=True, gc=False):
    key: str
    state: SymbolState
    reason: str


class TradeOut(msgspec.Struct, frozen=True, gc=False):
    """A trade accepted for publication (first copy across connections)."""

    trade: Trade


# --- commands an arbiter gives the pipeline around it (never published) -------------


class SnapshotWanted(msgspec.Struct, frozen=True, gc=False):
    """The book needs a venue snapshot (initial sync or a gap every copy missed)."""

    key: str
    reason: str


class ResubscribeWanted(msgspec.Struct, frozen=True, gc=False):
    """One connection's copy of a symbol is wrong (checksum mismatch, sequence jump): that
    connection must unsubscribe and subscribe the symbol again for a fresh snapshot."""

    key: str
    conn_id: int
    reason: str


class BookCrossed(msgspec.Struct, frozen=True, gc=False):
    """The book of ``key`` (``conn_id`` -1), or one connection's replica of it, became
    crossed on a venue whose books never cross: a venue fault the arbiter recovers from
    (``reason`` says how); the pipeline counts and logs it."""

    key: str
    conn_id: int
    reason: str


class ReconnectWanted(msgspec.Struct, frozen=True, gc=False):
    """Connection ``conn_id`` must be closed and opened again: it delivered a copy that the
    others contradict (implausible ids its own stream went back on), or (``fault`` False:
    nothing is counted against it) the sequence of what it delivers is unknown: it was
    silent (or its subscription not placed in the book's sequence) when a venue reset was
    declared, another connection's subscription led the book into a reset, or its own
    subscription snapshot differs from the book at that snapshot's id."""

    key: str
    conn_id: int
    reason: str
    fault: bool = True


#: What subscribers get: the publications of the pipeline, handed to the fan-out.
GatewayEvent = BookDelta | BookReset | StatusChange | TradeOut
#: What an arbiter asks of, or reports to, the pipeline around it; never published.
BookCommand = SnapshotWanted | ResubscribeWanted | BookCrossed | ReconnectWanted
#: What an arbiter returns: publications and commands, in the order they arose.
ArbiterEvent = GatewayEvent | BookCommand
