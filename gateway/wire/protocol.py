"""The subscriber protocol: the messages between the gateway and its subscribers.

Pure: no I/O, no asyncio. The messages are msgspec Structs; the module-level encoders and
decoders are built once. ``docs/protocol.md`` is the human reference and
``docs/protocol.schema.json`` the machine-readable one, generated from these Structs by
``python -m gateway.wire.protocol --write-schema``.

Client → gateway: one request per WebSocket message, a JSON object in a text frame (or the
same object as MessagePack in a binary frame), tagged by ``"op"``: ``subscribe``,
``unsubscribe``, ``resync``, ``list``, ``ping``.

Gateway → client: one message per WebSocket message, tagged by ``"type"``: ``snapshot``,
``delta``, ``status``, ``trade``, ``bbo``, ``subscribed``, ``unsubscribed``, ``symbols``,
``pong``, ``error``. JSON in text frames unless the connection asked for ``msgpack``, then
MessagePack in binary frames.

Unknown fields: requests are strict (one is refused as ``bad_request``); the decoders of
gateway messages ignore them, so that a later gateway may add fields to what it sends.

Unknown values: the enumerated fields of gateway messages (``status.state``,
``symbols[].state``, ``trade.side``, ``error.code``) decode as strings, so that a value
of a later gateway still decodes; each message has a typed accessor (``typed_state``,
``typed_side``, ``typed_code``) that gives the enum member, or an :class:`UnknownValue`
holding the string. The schema still lists the known values only: the gateway sends
nothing else. A message ``type`` this version does not know is, for a client,
an :class:`UnknownMessage` (:func:`read_server_message`), to be ignored.

Book stream semantics, per symbol:

* The first book message is a ``snapshot``; any later ``snapshot`` (same or new epoch)
  replaces the whole book.
* Each ``delta`` has the ``epoch`` of the stream and ``seq`` = previous ``seq`` + 1 (the
  previous message being the snapshot or delta before it). A delta whose epoch or seq does
  not follow means messages were lost: the client discards its book and sends ``resync``.
* Levels are ``[price, qty]`` with the venue's exact decimal strings; a delta's levels are
  absolute quantities and a quantity equal to zero (``"0"``, ``"0.000"``...) removes the level.
* Epochs are unique across restarts of the gateway; a client that reconnects may name its
  last ``(epoch, seq)`` per symbol in ``subscribe.recover`` and gets the deltas it missed
  (``recovered: true``) or a fresh snapshot (``recovered: false``), never a part of them.

Trades, per symbol: each ``trade`` carries ``(epoch, seq)``: ``epoch`` the gateway
process's trade epoch (unique across restarts), ``seq`` + 1 per trade of the symbol. A
client that reconnects may name its last trade position in ``subscribe.recover_trades`` and
gets every trade it missed (``recovered: true``) when the gateway still holds them all, or
none (the ``subscribed`` reply says which); ``subscribed.trade_positions`` says where the
live trade stream of each symbol starts.

Latency fields: ``delta``, ``bbo`` and ``trade`` carry ``recv_ns`` (the gateway's wall clock
when the first copy of the update was received) and ``send_ns`` (its wall clock when the
message was built for publishing, once per message); ``delta`` and ``bbo`` also carry
``event_ms``, the venue's event time, when the venue sends one (a trade's is ``ts_ms``).
"""

from __future__ import annotations

import enum
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated
from typing import Any
from typing import Final
from typing import Literal
from typing import TypeVar

import msgspec

from gateway.core.model import STOPPING_REASON
from gateway.core.model import Level
from gateway.core.model import Side
from gateway.core.model import SymbolState

#: Bumped on any incompatible change of the messages below.
PROTOCOL_VERSION: Final = 1

#: ``venue:SYMBOL``, the symbol spelled as the venue spells it (``binance:BTCUSDT``,
#: ``okx:BTC-USDT-SWAP``, ``kraken:BTC/USD``).
SYMBOL_KEY_PATTERN: Final = r"^[A-Za-z0-9_.\-]+:[A-Za-z0-9_.\-/]+$"

SymbolKey = Annotated[
    str,
    msgspec.Meta(
        pattern=SYMBOL_KEY_PATTERN,
        max_length=64,
        description="Symbol key 'venue:SYMBOL', e.g. 'binance:BTCUSDT'.",
    ),
]
#: At most this many symbols in one request (1024 keys of 64 characters fit in 70 KB).
MAX_SYMBOLS_PER_REQUEST: Final = 1024
SymbolList = Annotated[
    list[SymbolKey], msgspec.Meta(min_length=1, max_length=MAX_SYMBOLS_PER_REQUEST)
]
#: The deepest snapshot a subscriber may ask for (levels per side; the largest REST
#: snapshot any venue serves).
MAX_DEPTH: Final = 5000
#: Longest string ``id`` of a ``ping``.
MAX_PING_ID_LENGTH: Final = 64
#: Epochs, seqs and times stay below this: exact in every JSON reader (IEEE doubles).
JSON_SAFE_MAX: Final = 2**53 - 1
JsonSafeInt = Annotated[int, msgspec.Meta(ge=0, le=JSON_SAFE_MAX)]

Channel = Literal["book", "trade", "bbo"]
WireFormat = Literal["json", "msgpack"]
PingId = (
    Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    | Annotated[str, msgspec.Meta(max_length=MAX_PING_ID_LENGTH)]
    | None
)


#: An enumerated field's type.
E = TypeVar("E", bound=enum.StrEnum)


class UnknownValue(msgspec.Struct, frozen=True, gc=False):
    """A value of an enumerated field of a gateway message that this version does not
    know (a later gateway's): ``value`` as sent. Never sent by this gateway."""

    value: str

    def __str__(self) -> str:
        return f"unknown ({self.value})"


def members(kind: type[E]) -> Mapping[str, E]:
    """``kind``'s members by value, for :func:`typed_value`."""
    return {member.value: member for member in kind}


def typed_value(known: Mapping[str, E], value: str) -> E | UnknownValue:
    """The member of ``known`` (from :func:`members`) spelled ``value``, else an
    :class:`UnknownValue` holding it."""
    member = known.get(value)
    return UnknownValue(value) if member is None else member


def _open_enum(kind: type[enum.StrEnum]) -> msgspec.Meta:
    """A ``str`` field that carries ``kind``'s values: its schema lists them (what the
    gateway sends), and its decoding accepts any string (what a later gateway may send)."""
    schema: dict[str, Any] = {"title": kind.__name__}
    if kind.__doc__:
        schema["description"] = kind.__doc__.strip()
    schema["enum"] = sorted(member.value for member in kind)
    return msgspec.Meta(extra_json_schema=schema)


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` message."""

    #: The request could not be decoded or broke the schema; nothing was changed.
    BAD_REQUEST = "bad_request"
    #: A symbol the gateway does not carry; the request was not applied.
    UNKNOWN_SYMBOL = "unknown_symbol"
    #: ``resync`` of a symbol the connection has no book subscription for.
    NOT_SUBSCRIBED = "not_subscribed"
    #: A ``subscribe`` that would take the connection above its ``max_subscriptions``
    #: symbols; nothing was subscribed.
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    #: More ``subscribe``, ``resync`` and ``list`` requests than the connection's rate
    #: allows; the request was not applied (send it again later).
    RATE_LIMITED = "rate_limited"


#: ``error.code``: an :class:`ErrorCode` value.
WireErrorCode = Annotated[str, _open_enum(ErrorCode)]
_ERROR_CODES: Final = members(ErrorCode)


class CloseCode(enum.IntEnum):
    """The WebSocket close codes the gateway sends a subscriber (``docs/protocol.md``)."""

    #: The gateway is stopping (a restart, a deploy), with reason :data:`GOING_AWAY_REASON`,
    #: after every symbol's ``stale`` status with the same reason: reconnect with backoff.
    GOING_AWAY = 1001
    #: The client broke the WebSocket protocol itself (e.g. an unmasked frame).
    PROTOCOL_ERROR = 1002
    #: A text frame that is not valid UTF-8.
    INVALID_DATA = 1007
    #: The slow-subscriber policy closed the connection ("subscriber too slow: ...").
    TOO_SLOW = 1008
    #: A request larger than the server's ``max_request_bytes``.
    MESSAGE_TOO_BIG = 1009
    #: Keepalive ping timeout, or an error of the gateway while serving this connection
    #: ("internal error"); other subscribers and the feeds are not affected.
    INTERNAL_ERROR = 1011
    #: ``max_subscribers`` are connected: retry later with backoff.
    TRY_AGAIN_LATER = 1013


#: The reason of the close :attr:`CloseCode.GOING_AWAY` the gateway sends every subscriber
#: when it stops, once what was queued for the subscriber (the symbols' ``stale``
#: statuses with the same reason among it) has been sent.
GOING_AWAY_REASON: Final = STOPPING_REASON


class ProtocolError(ValueError):
    """A message that cannot be accepted. ``str(exc)`` says why, for the client; ``code``
    and ``symbol`` go into the ``error`` reply."""

    def __init__(
        self, message: str, code: ErrorCode = ErrorCode.BAD_REQUEST, *, symbol: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.symbol = symbol


# --- client → gateway ---------------------------------------------------------------------


class RecoverFrom(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A position in one symbol's stream: in ``subscribe.recover``, the ``(epoch, seq)`` of
    the last book message the client applied; in ``subscribe.recover_trades``, of the last
    trade. (The gateway's ``subscribed.trade_positions`` are :class:`StreamPosition`.)"""

    epoch: JsonSafeInt
    seq: JsonSafeInt


class Subscribe(
    msgspec.Struct,
    tag_field="op",
    tag="subscribe",
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    """Subscribe to channels of symbols; the reply is ``subscribed``.

    Then, per symbol: ``status``; on the ``book`` channel a ``snapshot`` (``depth`` best
    levels per side, or all when null) as soon as the symbol has a book, then ``delta``
    messages (with a depth: only the changes of the top ``depth`` levels, on the depth's
    own seq stream, so that the book stays the full book's top ``depth``); on ``bbo`` the
    current top of book then every change of it; on ``trade`` every trade. Subscribing
    again to a book re-sends its snapshot. ``format`` switches the whole connection's
    outgoing encoding from the ``subscribed`` reply on; null keeps
    the current one (JSON on a new connection).

    ``recover`` (book channel, full depth only): per symbol, the position of the book the
    client still holds. A symbol whose missed deltas the gateway still has is named in
    ``subscribed.recovered`` and gets them all (``recovered: true``) instead of a
    snapshot; any other gets a fresh snapshot (``recovered: false``).

    ``recover_trades`` (trade channel): per symbol, the position of the last trade the
    client received. A symbol whose missed trades the gateway still has is named in
    ``subscribed.recovered_trades`` and gets them all (``recovered: true``) before the
    live ones; any other gets none of them.
    """

    symbols: SymbolList
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=3)] = msgspec.field(
        default_factory=lambda: ["book"]
    )
    depth: Annotated[int, msgspec.Meta(ge=1, le=MAX_DEPTH)] | None = None
    format: WireFormat | None = None
    recover: (
        Annotated[dict[SymbolKey, RecoverFrom], msgspec.Meta(max_length=MAX_SYMBOLS_PER_REQUEST)]
        | None
    ) = None
    recover_trades: (
        Annotated[dict[SymbolKey, RecoverFrom], msgspec.Meta(max_length=MAX_SYMBOLS_PER_REQUEST)]
        | None
    ) = None


class Unsubscribe(
    msgspec.Struct, tag_field="op", tag="unsubscribe", frozen=True, forbid_unknown_fields=True
):
    """Drop every channel of these symbols; the reply is ``unsubscribed``. Idempotent."""

    symbols: SymbolList


class Resync(msgspec.Struct, tag_field="op", tag="resync", frozen=True, forbid_unknown_fields=True):
    """Ask for a fresh ``snapshot`` of a subscribed book (after a seq gap)."""

    symbol: SymbolKey


class ListSymbols(
    msgspec.Struct, tag_field="op", tag="list", frozen=True, forbid_unknown_fields=True
):
    """Ask which symbols the gateway carries; the reply is ``symbols``."""


class Ping(msgspec.Struct, tag_field="op", tag="ping", frozen=True, forbid_unknown_fields=True):
    """Application-level ping; the reply is ``pong`` with the same ``id``."""

    id: PingId = None


Request = Subscribe | Unsubscribe | Resync | ListSymbols | Ping


# --- gateway → client ---------------------------------------------------------------------
# Every struct here ignores unknown fields (msgspec's default; never forbid_unknown_fields):
# a later gateway may add fields without breaking older clients. Enumerated fields are
# strings for the same reason (a later gateway may add values), read through their typed
# accessors.

#: ``status.state`` and ``symbols[].state``: a :class:`SymbolState` value.
WireSymbolState = Annotated[str, _open_enum(SymbolState)]
#: ``trade.side``: a :class:`Side` value.
WireSide = Annotated[str, _open_enum(Side)]
_SYMBOL_STATES: Final = members(SymbolState)
_SIDES: Final = members(Side)


class StreamPosition(msgspec.Struct, frozen=True):
    """Where one symbol's trade stream stands (``subscribed.trade_positions``): the
    ``(epoch, seq)`` of its last trade published."""

    epoch: int
    seq: int


class Snapshot(
    msgspec.Struct, tag_field="type", tag="snapshot", frozen=True, gc=False, omit_defaults=True
):
    """The whole book (or its ``depth`` best levels) at ``(epoch, seq)``; replaces any
    book the client holds. ``id`` is the venue's last update id the book reflects.
    ``recovered`` is false on the snapshot that answers a ``subscribe`` whose ``recover``
    named the symbol but could not be served; absent otherwise."""

    symbol: str
    epoch: int
    seq: int
    id: int
    bids: list[Level]
    asks: list[Level]
    recovered: bool | None = None


class Delta(
    msgspec.Struct, tag_field="type", tag="delta", frozen=True, gc=False, omit_defaults=True
):
    """Changed levels, absolute quantities; a zero quantity removes the level.

    Applies to the book at ``(epoch, seq - 1)``. ``event_ms``: the venue's event time (ms
    since the Unix epoch; absent when the venue sends none); ``recv_ns``: the gateway's
    receive time of the update's first copy; ``send_ns``: when the gateway built the
    message for publishing (wall clock, ns since the Unix epoch). ``recovered`` is true on
    a delta re-sent from the recovery ring (its times are those of the first sending)."""

    symbol: str
    epoch: int
    seq: int
    id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    event_ms: int | None = None
    recv_ns: int = 0
    send_ns: int = 0
    recovered: bool | None = None


class Status(msgspec.Struct, tag_field="type", tag="status", frozen=True, gc=False):
    """The symbol's state: ``syncing`` (no book yet), ``live``, ``resyncing`` (the book is
    being rebuilt; a snapshot follows), ``stale`` (every upstream is down; the book is
    the last known one). ``since_ns``: when the symbol entered this state (wall clock, ns
    since the Unix epoch; for a symbol still in its first state, when the gateway
    started)."""

    symbol: str
    state: WireSymbolState
    reason: str
    since_ns: int = 0

    @property
    def typed_state(self) -> SymbolState | UnknownValue:
        """``state`` as a :class:`SymbolState`, or an :class:`UnknownValue` (a later
        gateway's state: not ``live`` for this client)."""
        return typed_value(_SYMBOL_STATES, self.state)


class TradeMsg(
    msgspec.Struct, tag_field="type", tag="trade", frozen=True, gc=False, omit_defaults=True
):
    """One trade, first copy only; ``side`` is the aggressor's side, ``ts_ms`` the venue's
    trade time in milliseconds since the Unix epoch; ``recv_ns`` and ``send_ns`` as in
    :class:`Delta`. ``(epoch, seq)``: the trade's position in the symbol's trade stream
    (``epoch`` the gateway process's trade epoch, ``seq`` + 1 per trade of the symbol).
    ``recovered`` is true on a trade re-sent from the trade ring (its times are those of
    the first sending)."""

    symbol: str
    id: int
    price: str
    qty: str
    side: WireSide
    ts_ms: int
    recv_ns: int = 0
    send_ns: int = 0
    epoch: int = 0
    seq: int = 0
    recovered: bool | None = None

    @property
    def typed_side(self) -> Side | UnknownValue:
        """``side`` as a :class:`Side`, or an :class:`UnknownValue` (a later gateway's)."""
        # typed_value inlined: once per trade. A member is a non-empty string, so true.
        return _SIDES.get(self.side) or UnknownValue(self.side)


class Bbo(msgspec.Struct, tag_field="type", tag="bbo", frozen=True, gc=False, omit_defaults=True):
    """Top of book at ``(epoch, seq)`` of the book stream; null for an empty side.
    ``event_ms``, ``recv_ns`` and ``send_ns`` are those of the update that changed it (as in
    :class:`Delta`); absent on the bbo sent at subscription or after a resync."""

    symbol: str
    epoch: int
    seq: int
    bid: Level | None
    ask: Level | None
    event_ms: int | None = None
    recv_ns: int = 0
    send_ns: int = 0


class Subscribed(msgspec.Struct, tag_field="type", tag="subscribed", frozen=True):
    """Acknowledges a ``subscribe``: the symbols and channels just added. ``instance``
    names the gateway process (new at every start); ``recovered``: the symbols of the
    request's ``recover`` whose missed deltas follow (the others get a snapshot);
    ``recovered_trades``: the symbols of its ``recover_trades`` whose missed trades
    follow (the others get none of them); ``trade_positions`` (trade channel): per
    symbol, the position of the last trade published before this reply (seq 0: none
    yet), after which the live trades follow."""

    symbols: list[str]
    channels: list[Channel]
    instance: str = ""
    recovered: list[str] = msgspec.field(default_factory=list)
    recovered_trades: list[str] = msgspec.field(default_factory=list)
    trade_positions: dict[str, StreamPosition] = msgspec.field(default_factory=dict)


class Unsubscribed(msgspec.Struct, tag_field="type", tag="unsubscribed", frozen=True):
    """Acknowledges an ``unsubscribe``; nothing more is sent for these symbols."""

    symbols: list[str]


class SymbolInfo(msgspec.Struct, frozen=True):
    symbol: str
    state: WireSymbolState

    @property
    def typed_state(self) -> SymbolState | UnknownValue:
        """As :attr:`Status.typed_state`."""
        return typed_value(_SYMBOL_STATES, self.state)


class Symbols(msgspec.Struct, tag_field="type", tag="symbols", frozen=True):
    """Reply to ``list``: every symbol the gateway carries and its state."""

    symbols: list[SymbolInfo]


class Pong(msgspec.Struct, tag_field="type", tag="pong", frozen=True):
    id: PingId = None


class Error(msgspec.Struct, tag_field="type", tag="error", frozen=True):
    """A request was refused; ``symbol`` names the symbol concerned, when one is."""

    code: WireErrorCode
    message: str
    symbol: str | None = None

    @property
    def typed_code(self) -> ErrorCode | UnknownValue:
        """``code`` as an :class:`ErrorCode`, or an :class:`UnknownValue` (a later
        gateway's)."""
        return typed_value(_ERROR_CODES, self.code)


ServerMessage = (
    Snapshot | Delta | Status | TradeMsg | Bbo | Subscribed | Unsubscribed | Symbols | Pong | Error
)
#: The ``type`` of every message above.
SERVER_MESSAGE_TYPES: Final = frozenset(
    str(cls.__struct_config__.tag) for cls in typing.get_args(ServerMessage)
)


class UnknownMessage(msgspec.Struct, frozen=True, gc=False):
    """A gateway message whose ``type`` this version does not know (a later gateway's),
    as :func:`read_server_message` gives it: a client ignores it. Never sent."""

    type: str


class _Tagged(msgspec.Struct):
    """Any gateway message, read for its ``type`` only."""

    type: str


# --- codecs -------------------------------------------------------------------------------

_json_encoder: Final = msgspec.json.Encoder()
_msgpack_encoder: Final = msgspec.msgpack.Encoder()

REQUEST_JSON_DECODER: Final[msgspec.json.Decoder[Request]] = msgspec.json.Decoder(Request)
REQUEST_MSGPACK_DECODER: Final[msgspec.msgpack.Decoder[Request]] = msgspec.msgpack.Decoder(Request)
SERVER_JSON_DECODER: Final[msgspec.json.Decoder[ServerMessage]] = msgspec.json.Decoder(
    ServerMessage
)
SERVER_MSGPACK_DECODER: Final[msgspec.msgpack.Decoder[ServerMessage]] = msgspec.msgpack.Decoder(
    ServerMessage
)
_TAG_JSON_DECODER: Final = msgspec.json.Decoder(_Tagged)
_TAG_MSGPACK_DECODER: Final = msgspec.msgpack.Decoder(_Tagged)
#: Longest ``type`` kept in an :class:`UnknownMessage` (the rest is cut).
MAX_UNKNOWN_TYPE_LENGTH: Final = 64

#: ``encode_json(msg)``: JSON bytes (UTF-8, sent in a text frame).
encode_json: Final = _json_encoder.encode
#: ``encode_msgpack(msg)``: MessagePack bytes (sent in a binary frame).
encode_msgpack: Final = _msgpack_encoder.encode


def encode(msg: ServerMessage | Request, wire_format: WireFormat) -> bytes:
    """Encode one message in ``wire_format``."""
    if wire_format == "json":
        return _json_encoder.encode(msg)
    return _msgpack_encoder.encode(msg)


def decode_request(data: bytes | str, *, msgpack: bool = False) -> Request:
    """Decode one client request: JSON, or MessagePack when ``msgpack`` is true.

    Raises :class:`ProtocolError` (code ``bad_request``) for malformed input, an unknown
    or missing ``op``, an unknown field, a field of the wrong type or out of range
    (including a symbol key not shaped ``venue:SYMBOL``).
    """
    try:
        if msgpack:
            if isinstance(data, str):
                raise ProtocolError("MessagePack requests must be binary frames")
            return REQUEST_MSGPACK_DECODER.decode(data)
        return REQUEST_JSON_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid request: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec raises UnicodeDecodeError for invalid UTF-8 inside a string.
        kind = "MessagePack" if msgpack else "JSON"
        raise ProtocolError(f"malformed {kind}: {exc}") from None


def read_server_message(data: bytes | str) -> ServerMessage | UnknownMessage:
    """Decode one gateway message as a client reads it: a ``str`` (text frame) as JSON,
    ``bytes`` (binary frame) as MessagePack; an object whose ``type`` is not one of
    :data:`SERVER_MESSAGE_TYPES` is an :class:`UnknownMessage` (its ``type`` cut to
    :data:`MAX_UNKNOWN_TYPE_LENGTH` characters). Raises :class:`ProtocolError` on anything
    else (malformed, no ``type``, a known type that breaks its schema)."""
    try:
        if isinstance(data, str):
            return SERVER_JSON_DECODER.decode(data)
        return SERVER_MSGPACK_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        # Only on failure, so the common case costs nothing: is it a later type?
        message_type = _message_type(data)
        if message_type is not None and message_type not in SERVER_MESSAGE_TYPES:
            return UnknownMessage(message_type[:MAX_UNKNOWN_TYPE_LENGTH])
        raise ProtocolError(f"invalid gateway message: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed gateway message: {exc}") from None


def _message_type(data: bytes | str) -> str | None:
    """The string ``type`` of a decodable message object, else None."""
    try:
        if isinstance(data, str):
            return _TAG_JSON_DECODER.decode(data).type
        return _TAG_MSGPACK_DECODER.decode(data).type
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None


def decode_server_message(data: bytes | str) -> ServerMessage:
    """Decode one gateway message as this gateway sends them: as
    :func:`read_server_message`, but an unknown ``type`` raises :class:`ProtocolError`
    too (the gateway's own tests hold it to the documented messages)."""
    msg = read_server_message(data)
    if isinstance(msg, UnknownMessage):
        raise ProtocolError(f"invalid gateway message: unknown type {msg.type!r}")
    return msg


def is_zero_qty(qty: str) -> bool:
    """True for a quantity that removes its level (``"0"``, ``"0.00"``, ``"0E-8"``...)."""
    try:
        return float(qty) == 0.0
    except ValueError:
        return False


# --- machine-readable spec ----------------------------------------------------------------

SCHEMA_PATH: Final = Path(__file__).resolve().parents[2] / "docs" / "protocol.schema.json"


def schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of both directions, generated from the Structs above."""
    (request, server), components = msgspec.json.schema_components(
        [Request, ServerMessage], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "mdgateway-subscriber-protocol",
        "title": f"mdgateway subscriber protocol v{PROTOCOL_VERSION}",
        "description": (
            "One message per WebSocket message. 'client_request': what a subscriber sends "
            "(JSON text frame, or MessagePack binary frame). 'server_message': what the "
            "gateway sends (JSON text frames, or MessagePack binary frames after a subscribe "
            "with format 'msgpack'). See docs/protocol.md."
        ),
        "properties": {"client_request": request, "server_message": server},
        "$defs": components,
    }


def schema_json() -> bytes:
    """The committed ``docs/protocol.schema.json`` content: indented, newline-terminated."""
    return msgspec.json.format(msgspec.json.encode(schema()), indent=2) + b"\n"


def main(argv: list[str]) -> int:
    """``--schema``: print the JSON Schema; ``--write-schema``: write it to SCHEMA_PATH."""
    if argv == ["--schema"]:
        sys.stdout.buffer.write(schema_json())
        return 0
    if argv == ["--write-schema"]:
        SCHEMA_PATH.write_bytes(schema_json())
        print(f"wrote {SCHEMA_PATH}")
        return 0
    print("usage: python -m gateway.wire.protocol --schema | --write-schema", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
