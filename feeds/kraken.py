"""Kraken spot WebSocket v2: endpoints, subscribe messages, parsing of wire frames, and the
book checksum (exchange-protocols.md §5, §8).

Pure: takes bytes, returns events; no I/O. Any frame that breaks the venue's contract
raises :class:`gateway.core.model.VenueContractError` and nothing else.

Kraken's ``book`` channel carries **no sequence ids** (an unsequenced venue: docs/architecture.md).
Every :class:`~gateway.core.model.DepthSnapshot` has ``last_id = -1`` and every
:class:`~gateway.core.model.DepthDiff` has ``first_id = last_id = prev_id = -1``; ``event_ms``
is the update's ``timestamp`` (0 when absent). Each connection keeps its own replica, and
the only integrity signal is the CRC32 ``checksum`` that Kraken sends with every snapshot
and update: on a mismatch that connection resubscribes (:func:`resubscribe_messages`).
One event is produced per element of ``data`` (one per symbol).

Prices and quantities are JSON **numbers** on the wire, written in plain fixed point at the
instrument's precision (``0.00005100``, ``1774.00``: every number of the recorded session).
They are taken as the raw number text, never through a float, so a level keeps the venue's
exact digits, which is what the checksum needs. The grammar is :data:`NUMBERS`: a JSON
number in exponent form (``5e-06``), negative, or a string is a contract error.

Replica maintenance (what the arbiter must do, and what the recorded session proves:
2,962 of 2,962 checksums with it, 1,170 without the truncation):

1. apply all levels of a message in order (one price may appear twice: the last wins);
   a quantity of 0 deletes the level;
2. truncate both sides to the subscribed depth (:func:`truncate_to_depth`): Kraken sends no
   deletion for a level pushed out of scope;
3. compare :func:`book_checksum` (or a :func:`checksum_function` with the instrument's
   precisions) with the message's ``checksum``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from decimal import Decimal
from decimal import InvalidOperation
from itertools import islice
from typing import Final

import msgspec

from feeds.common import DECODE_ERRORS
from feeds.common import FIXED_POINT
from feeds.common import MAX_INT
from feeds.common import check_levels
from feeds.common import decode
from feeds.common import decode_push
from feeds.common import endpoint_url
from feeds.common import iso_ms
from feeds.common import notice
from feeds.common import taker_side
from feeds.common import unique_symbols
from feeds.common import unsequenced_diff
from feeds.common import unsequenced_snapshot
from gateway.core.book import L2Book
from gateway.core.model import InstrumentPrecision
from gateway.core.model import Level
from gateway.core.model import Trade
from gateway.core.model import VenueContractError
from gateway.core.model import VenueEvent

VENUE: Final = "kraken"
#: How prices and quantities are written: the text of a JSON number, in fixed point.
NUMBERS: Final = FIXED_POINT

#: Public WebSocket v2 endpoints (exchange-protocols.md §5): production and beta (same
#: matching engine). The unified ``wss://uws.kraken.com/v2/public`` of newer docs takes an
#: ``asset_class`` parameter and is not used here.
WS_ENDPOINTS: Final = (
    "wss://ws.kraken.com/v2",
    "wss://beta-ws.kraken.com/v2",
)
#: Authenticated endpoints (private data only: never used for market data).
AUTH_WS_ENDPOINTS: Final = (
    "wss://ws-auth.kraken.com/v2",
    "wss://beta-ws-auth.kraken.com/v2",
)
REST_ENDPOINTS: Final = ("https://api.kraken.com",)
#: REST ``AssetPairs`` (``pair_decimals`` / ``lot_decimals``: see precisions_from_assetpairs).
ASSET_PAIRS_PATH: Final = "/0/public/AssetPairs"

BOOK_CHANNEL: Final = "book"
TRADE_CHANNEL: Final = "trade"
INSTRUMENT_CHANNEL: Final = "instrument"
#: Book depths the venue accepts.
DEPTHS: Final = (10, 25, 100, 500, 1000)
DEFAULT_DEPTH: Final = 10
#: Levels per side covered by the checksum, whatever the subscribed depth.
CHECKSUM_DEPTH: Final = 10
#: Application-level ``ping`` period. Kraken sends a ``heartbeat`` about once a second
#: when nothing else flows; the ping's ``pong`` proves the request path works too.
PING_INTERVAL_S: Final = 30.0

#: Instrument precisions (decimals) above this are refused.
_MAX_PRECISION: Final = 40
_UINT32: Final = 1 << 32


# --- URLs and outgoing messages -----------------------------------------------------------


#: The URL a connection opens: the endpoint itself (Kraken subscribes by message).
connect_url: Final = endpoint_url


def _check_depth(depth: int) -> None:
    if depth not in DEPTHS:
        raise ValueError(f"book depth must be one of {DEPTHS}, got {depth!r}")


def _book_request(method: str, symbols: list[str], depth: int) -> bytes:
    params: dict[str, object] = {"channel": BOOK_CHANNEL, "symbol": symbols, "depth": depth}
    if method == "subscribe":
        params["snapshot"] = True
    return msgspec.json.encode({"method": method, "params": params})


def _trade_request(method: str, symbols: list[str]) -> bytes:
    params: dict[str, object] = {"channel": TRADE_CHANNEL, "symbol": symbols}
    if method == "subscribe":
        params["snapshot"] = False
    return msgspec.json.encode({"method": method, "params": params})


def instrument_message() -> bytes:
    """Subscribe to the ``instrument`` channel: the precisions checksums are computed at."""
    return msgspec.json.encode(
        {"method": "subscribe", "params": {"channel": INSTRUMENT_CHANNEL, "snapshot": True}}
    )


def subscribe_messages(symbols: Sequence[str], depth: int = DEFAULT_DEPTH) -> list[bytes]:
    """Subscribe requests: the ``book`` of ``symbols`` at ``depth`` with a snapshot, and
    their ``trade`` channel (without the snapshot of past trades)."""
    _check_depth(depth)
    unique = unique_symbols(symbols)
    return [_book_request("subscribe", unique, depth), _trade_request("subscribe", unique)]


def unsubscribe_messages(symbols: Sequence[str], depth: int = DEFAULT_DEPTH) -> list[bytes]:
    """Unsubscribe requests for the ``book`` (at ``depth``) and ``trade`` of ``symbols``."""
    _check_depth(depth)
    unique = unique_symbols(symbols)
    return [_book_request("unsubscribe", unique, depth), _trade_request("unsubscribe", unique)]


def resubscribe_messages(symbol: str, depth: int = DEFAULT_DEPTH) -> list[bytes]:
    """Unsubscribe and subscribe the book of one symbol again, for a fresh snapshot on this
    connection (after its replica failed the checksum). Trades are left alone."""
    _check_depth(depth)
    unique = unique_symbols([symbol])
    return [_book_request("unsubscribe", unique, depth), _book_request("subscribe", unique, depth)]


def ping_message(req_id: int = 1) -> bytes:
    """The application-level ``ping`` (answered by ``{"method":"pong",...}``)."""
    return msgspec.json.encode({"method": "ping", "req_id": req_id})


# --- checksum -----------------------------------------------------------------------------


def _fixed(text: str, precision: int) -> str:
    """``text`` as fixed-point decimal with exactly ``precision`` decimals."""
    head, _, frac = text.partition(".")
    if (
        head.isascii()
        and head.isdigit()
        and (not frac or (frac.isascii() and frac.isdigit()))
        and len(frac) <= precision
    ):
        return f"{head}.{frac.ljust(precision, '0')}" if precision else head
    # Exponent form, or more digits than the precision: render through Decimal.
    try:
        return format(Decimal(text), f".{precision}f")
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {text!r}") from None


def _part(text: str, precision: int | None) -> str:
    if precision is not None:
        text = _fixed(text, precision)
    return text.replace(".", "").lstrip("0")


def checksum_levels(
    bids: Iterable[Level],
    asks: Iterable[Level],
    price_precision: int | None = None,
    qty_precision: int | None = None,
) -> int:
    """Kraken's checksum of a book given best first on each side: unsigned CRC32 of the top
    10 asks (ascending) followed by the top 10 bids (descending), each level as
    ``price + qty`` with the ``.`` removed and leading zeros stripped.

    With ``price_precision`` / ``qty_precision`` each value is first rendered in fixed
    point at that many decimals (``0.566`` at 4 is ``0.5660``): needed when the wire numbers
    do not carry the instrument's precision. With None, a level's own digits are used
    (correct when the strings keep the wire's digits, as in every recorded session).
    """
    for precision in (price_precision, qty_precision):
        if precision is not None and precision < 0:
            raise ValueError(f"precision must be >= 0, got {precision}")
    parts: list[str] = []
    for side in (asks, bids):
        for price, qty in islice(side, CHECKSUM_DEPTH):
            parts.append(_part(price, price_precision))
            parts.append(_part(qty, qty_precision))
    return zlib.crc32("".join(parts).encode("ascii"))


def checksum(
    book: L2Book, price_precision: int | None = None, qty_precision: int | None = None
) -> int:
    """:func:`checksum_levels` of an L2Book (which keeps the level strings). The book must
    already be truncated to the subscribed depth (:func:`truncate_to_depth`)."""
    return checksum_levels(
        book.bids(CHECKSUM_DEPTH), book.asks(CHECKSUM_DEPTH), price_precision, qty_precision
    )


def book_checksum(book: L2Book) -> int:
    """:func:`checksum` from the level strings' own digits (no precision needed): a
    ``gateway.core.arbiter.Checksum``."""
    return checksum(book)


def checksum_function(
    price_precision: int | None = None, qty_precision: int | None = None
) -> Callable[[L2Book], int]:
    """A ``gateway.core.arbiter.Checksum`` rendering values at the instrument's precisions (see
    :func:`precisions_from_assetpairs`, :func:`precisions_from_instrument`)."""
    for precision in (price_precision, qty_precision):
        if precision is not None and precision < 0:
            raise ValueError(f"precision must be >= 0, got {precision}")
    if price_precision is None and qty_precision is None:
        return book_checksum

    def _checksum(book: L2Book) -> int:
        return checksum(book, price_precision, qty_precision)

    return _checksum


def truncate_to_depth(book: L2Book, depth: int) -> None:
    """Keep the best ``depth`` levels per side: to do after **every** message (snapshot or
    update) before the checksum, since Kraken sends no deletion for levels that fall out of
    the subscribed depth."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    book.truncate(depth)


# --- instrument precisions ----------------------------------------------------------------


class _AssetPair(msgspec.Struct):
    pair_decimals: int
    lot_decimals: int
    wsname: str = ""


class _AssetPairs(msgspec.Struct):
    error: list[str] = []
    result: dict[str, _AssetPair] = {}


class _InstrumentPair(msgspec.Struct):
    symbol: str
    price_precision: int
    qty_precision: int


class _InstrumentData(msgspec.Struct):
    pairs: list[_InstrumentPair] = []


class _InstrumentFrame(msgspec.Struct):
    channel: str
    data: _InstrumentData


_asset_pairs_decoder: Final = msgspec.json.Decoder(_AssetPairs)
_instrument_decoder: Final = msgspec.json.Decoder(_InstrumentFrame)

#: WebSocket v1 / REST asset codes whose v2 spelling differs.
_V2_ASSETS: Final = {"XBT": "BTC", "XDG": "DOGE"}


def v2_symbol(wsname: str) -> str:
    """The WebSocket v2 spelling of a v1 / REST ``wsname`` (``XBT/USD`` -> ``BTC/USD``)."""
    base, sep, quote = wsname.partition("/")
    if not sep:
        return wsname
    return f"{_V2_ASSETS.get(base, base)}/{_V2_ASSETS.get(quote, quote)}"


def _check_precision(name: str, price: int, qty: int) -> tuple[int, int]:
    if not (0 <= price <= _MAX_PRECISION and 0 <= qty <= _MAX_PRECISION):
        raise VenueContractError(f"{name}: precisions out of range: {price}, {qty}")
    return price, qty


def precisions_from_assetpairs(body: bytes) -> dict[str, tuple[int, int]]:
    """``{symbol: (price_precision, qty_precision)}`` from a REST ``AssetPairs`` response
    (``pair_decimals``, ``lot_decimals``).

    Keys are the WebSocket v2 symbols (``BTC/USD``) and, where it differs, the ``wsname``
    the response gives (``XBT/USD``). Pairs without a ``wsname`` are skipped.
    """
    pairs = decode(_asset_pairs_decoder, body, "bad AssetPairs response")
    if pairs.error:
        raise VenueContractError(f"AssetPairs error: {'; '.join(pairs.error)}")
    out: dict[str, tuple[int, int]] = {}
    for name, pair in pairs.result.items():
        if not pair.wsname:
            continue
        precisions = _check_precision(name, pair.pair_decimals, pair.lot_decimals)
        out[v2_symbol(pair.wsname)] = precisions
        out.setdefault(pair.wsname, precisions)
    return out


def precisions_from_instrument(raw: bytes) -> dict[str, tuple[int, int]]:
    """``{symbol: (price_precision, qty_precision)}`` from an ``instrument`` channel frame
    (``data.pairs[*].price_precision`` / ``qty_precision``)."""
    frame = decode(_instrument_decoder, raw, "bad instrument frame")
    if frame.channel != "instrument":
        raise VenueContractError(f"not an instrument frame: channel {frame.channel!r}")
    return {
        p.symbol: _check_precision(p.symbol, p.price_precision, p.qty_precision)
        for p in frame.data.pairs
    }


# --- wire structs: one module-level decoder per message -----------------------------------


class _Frame(msgspec.Struct):
    """A channel push (``channel`` + ``data``) or a method reply: just enough to route it."""

    channel: str | None = None
    type: str | None = None
    #: Empty when absent (msgspec cannot decode ``Raw | None``: it would expect null).
    data: msgspec.Raw = msgspec.Raw()
    method: str | None = None
    success: bool | None = None
    error: str | None = None
    result: msgspec.Raw = msgspec.Raw()
    symbol: str | None = None
    #: The v1-style rate-limit reply ``{"Error": "Exceeded msg rate"}``.
    Error: str | None = None


class _Level(msgspec.Struct):
    price: msgspec.Raw
    qty: msgspec.Raw


class _BookData(msgspec.Struct):
    symbol: str
    bids: list[_Level] = []
    asks: list[_Level] = []
    checksum: int | None = None
    timestamp: str | None = None


class _TradeData(msgspec.Struct):
    symbol: str
    side: str
    price: msgspec.Raw
    qty: msgspec.Raw
    trade_id: int
    timestamp: str


class _Status(msgspec.Struct):
    system: str = ""
    api_version: str = ""
    connection_id: int | None = None


class _Result(msgspec.Struct):
    channel: str = ""
    symbol: str = ""


_frame_decoder: Final = msgspec.json.Decoder(_Frame)
_book_decoder: Final = msgspec.json.Decoder(list[_BookData])
_trade_decoder: Final = msgspec.json.Decoder(list[_TradeData])
_status_decoder: Final = msgspec.json.Decoder(list[_Status])
_result_decoder: Final = msgspec.json.Decoder(_Result)


# --- parsing ------------------------------------------------------------------------------


def _text(raw: msgspec.Raw) -> str:
    """The JSON text of ``raw``, for the grammar check; any non-ASCII byte stays a
    character the ASCII grammar refuses."""
    return str(raw, "latin-1")


def _levels(raw: list[_Level], what: str) -> tuple[Level, ...]:
    return check_levels([(_text(lv.price), _text(lv.qty)) for lv in raw], NUMBERS, what)


def _checksum_field(value: int | None, symbol: str) -> int | None:
    if value is not None and not 0 <= value < _UINT32:
        raise VenueContractError(f"{symbol}: checksum out of the unsigned 32-bit range: {value}")
    return value


def _book_events(
    kind: str | None, data: msgspec.Raw, recv_ns: int, conn_id: int
) -> list[VenueEvent]:
    if kind not in ("snapshot", "update"):
        raise VenueContractError(f"book push with type {kind!r}")
    items = decode_push(_book_decoder, data, "book")
    if not items:
        raise VenueContractError("book push with empty data")
    events: list[VenueEvent] = []
    for d in items:
        if not d.symbol:
            raise VenueContractError("book data without symbol")
        bids = _levels(d.bids, f"{d.symbol} bids")
        asks = _levels(d.asks, f"{d.symbol} asks")
        crc = _checksum_field(d.checksum, d.symbol)
        if kind == "snapshot":
            events.append(unsequenced_snapshot(VENUE, d.symbol, bids, asks, recv_ns, conn_id, crc))
        else:
            event_ms = 0 if d.timestamp is None else iso_ms(d.timestamp, "timestamp")
            events.append(
                unsequenced_diff(VENUE, d.symbol, bids, asks, event_ms, recv_ns, conn_id, crc)
            )
    return events


def _trade_events(data: msgspec.Raw, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    items = decode_push(_trade_decoder, data, "trade")
    events: list[VenueEvent] = []
    for t in items:
        side = taker_side(t.side)  # Kraken's ``side`` is the taker's side
        if not 0 <= t.trade_id < MAX_INT:
            raise VenueContractError(f"trade_id out of range: {t.trade_id}")
        ((price, qty),) = check_levels([(_text(t.price), _text(t.qty))], NUMBERS, "trade")
        events.append(
            Trade(
                venue=VENUE,
                symbol=t.symbol,
                trade_id=t.trade_id,
                price=price,
                qty=qty,
                side=side,
                trade_ms=iso_ms(t.timestamp, "trade timestamp"),
                recv_ns=recv_ns,
                conn_id=conn_id,
            )
        )
    return events


def _status_events(data: msgspec.Raw, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    items = decode_push(_status_decoder, data, "status")
    return [
        notice(VENUE, "status", f"system {s.system} api {s.api_version}".strip(), recv_ns, conn_id)
        for s in items
    ]


def _reply(frame: _Frame, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    method = frame.method or ""
    if method == "pong":
        return []
    if frame.success is False or frame.error is not None:
        symbol = f" {frame.symbol}" if frame.symbol else ""
        return [notice(VENUE, "error", f"{method}{symbol}: {frame.error}", recv_ns, conn_id)]
    detail = method
    if frame.result:
        try:
            result = _result_decoder.decode(frame.result)
        except DECODE_ERRORS:
            result = _Result()  # results of other methods have other shapes
        detail = f"{method} {result.channel} {result.symbol}".rstrip()
    return [notice(VENUE, "ack", detail, recv_ns, conn_id)]


def parse(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """Events in one WebSocket frame.

    ``book`` pushes become DepthSnapshot / DepthDiff (one per element of ``data``),
    ``trade`` pushes become Trade, ``instrument`` pushes an InstrumentPrecision per pair,
    ``status`` pushes and method replies (subscribe acks) become VenueNotice (kind
    ``status`` / ``ack``; kind ``error`` for a failed request or a rate-limit reply).
    ``heartbeat``, ``pong`` and other channels give an empty list.
    Raises VenueContractError for anything that is not a valid Kraken v2 frame.
    """
    frame = decode(_frame_decoder, raw, "undecodable frame")
    channel = frame.channel
    if channel == BOOK_CHANNEL:
        return _book_events(frame.type, frame.data, recv_ns, conn_id)
    if channel == TRADE_CHANNEL:
        return _trade_events(frame.data, recv_ns, conn_id)
    if channel == "status":
        return _status_events(frame.data, recv_ns, conn_id)
    if channel is not None:
        if channel == INSTRUMENT_CHANNEL:
            return [
                InstrumentPrecision(VENUE, symbol, pp, qp, recv_ns, conn_id)
                for symbol, (pp, qp) in precisions_from_instrument(raw).items()
            ]
        return []  # heartbeat, ticker, ...: nothing for the book
    if frame.method is not None:
        return _reply(frame, recv_ns, conn_id)
    if frame.Error is not None:
        return [notice(VENUE, "error", frame.Error, recv_ns, conn_id)]
    if frame.error is not None:
        return [notice(VENUE, "error", frame.error, recv_ns, conn_id)]
    raise VenueContractError("frame is neither a channel push nor a method reply")


# --- recognising Kraken in captures (VenueAdapter.hosts, frame_venue) -----------------------

HOSTS: Final = {"kraken.com": VENUE}
#: cryptofeed's feed id of Kraken.
CRYPTOFEED_NAMES: Final = {"KRAKEN": VENUE}
_CHANNEL_SHAPE: Final = re.compile(
    rb'"channel"\s*:\s*"(?:book|trade|ticker|status|heartbeat|ohlc|instrument|level3)"'
)
_REPLY_SHAPE: Final = re.compile(rb'"method"\s*:\s*"(?:subscribe|unsubscribe|pong)"')
_REPLY_FIELD_SHAPE: Final = re.compile(rb'"time_in"\s*:')


def frame_venue(head: bytes) -> str | None:
    """``kraken`` when ``head`` (a frame's first bytes) has a v2 channel (``book``,
    ``status``, ``heartbeat``, ...) or is a v2 method reply. OKX's ``arg`` objects name
    channels too: the venue registry lists OKX first."""
    if _CHANNEL_SHAPE.search(head) or (
        _REPLY_SHAPE.search(head) and _REPLY_FIELD_SHAPE.search(head)
    ):
        return VENUE
    return None
