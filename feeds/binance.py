"""Binance spot: endpoints, stream names, and parsing of wire frames into venue-neutral events.

Pure: takes bytes, returns events; no I/O. Frames come from combined streams
(``/stream?streams=...``, payload ``{"stream": name, "data": event}``) or raw streams
(``/ws/...``, the event alone). Any frame that breaks the venue's contract raises
:class:`gateway.core.model.VenueContractError` and nothing else.

Sequence rule (exchange-protocols.md §1): a diff covers update ids ``U..u``; it links to a
book at id ``L`` when ``U <= L + 1 <= u``; ``u <= L`` is old; ``U > L + 1`` means ids were
missed. The REST snapshot's ``lastUpdateId`` is the book's id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final
from urllib.parse import urlencode

import msgspec

from gateway.core.model import (
    DepthDiff,
    DepthSnapshot,
    Level,
    Side,
    Trade,
    VenueContractError,
    VenueEvent,
    VenueNotice,
)

VENUE: Final = "binance"

#: Production endpoints (exchange-protocols.md §1).
WS_ENDPOINTS: Final = (
    "wss://stream.binance.com:9443",
    "wss://stream.binance.com:443",
    "wss://data-stream.binance.vision",
)
REST_ENDPOINTS: Final = ("https://api.binance.com", "https://data-api.binance.vision")

DEPTH_SUFFIX: Final = "@depth@100ms"
TRADE_SUFFIX: Final = "@trade"
SNAPSHOT_PATH: Final = "/api/v3/depth"
#: Largest REST depth (weight 250 of the 6000/min budget).
MAX_SNAPSHOT_LIMIT: Final = 5000
#: Binance allows 1024 streams per connection; two streams per symbol.
MAX_SYMBOLS_PER_CONNECTION: Final = 512


def snapshot_weight(limit: int) -> int:
    """REST request weight of ``/api/v3/depth`` at ``limit`` levels."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def stream_names(symbol: str) -> list[str]:
    s = symbol.lower()
    return [s + DEPTH_SUFFIX, s + TRADE_SUFFIX]


def stream_url(endpoint: str, symbols: Sequence[str]) -> str:
    """Combined-stream URL carrying depth diffs and trades of ``symbols``."""
    if not symbols:
        raise ValueError("at least one symbol is required")
    if len(symbols) > MAX_SYMBOLS_PER_CONNECTION:
        raise ValueError(f"at most {MAX_SYMBOLS_PER_CONNECTION} symbols per connection")
    names = [name for symbol in symbols for name in stream_names(symbol)]
    return endpoint.rstrip("/") + "/stream?streams=" + "/".join(names)


def snapshot_url(rest_base: str, symbol: str, limit: int) -> str:
    if not 1 <= limit <= MAX_SNAPSHOT_LIMIT:
        raise ValueError(f"snapshot limit must be 1..{MAX_SNAPSHOT_LIMIT}, got {limit}")
    query = urlencode({"symbol": symbol.upper(), "limit": limit})
    return f"{rest_base.rstrip('/')}{SNAPSHOT_PATH}?{query}"


def subscribe_frame(symbols: Sequence[str], request_id: int) -> bytes:
    """A live SUBSCRIBE request for ``symbols`` (used where the URL cannot carry streams)."""
    params = [name for symbol in symbols for name in stream_names(symbol)]
    return msgspec.json.encode({"method": "SUBSCRIBE", "params": params, "id": request_id})


# --- wire structs: one module-level decoder per message -----------------------------------


class _Envelope(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _Kind(msgspec.Struct):
    """Just enough of a raw-stream event or a control reply to route it."""

    e: str | None = None
    result: msgspec.Raw = msgspec.Raw()
    id: int | str | None = None
    code: int | None = None
    msg: str | None = None


class _DepthUpdate(msgspec.Struct):
    s: str
    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    E: int = 0
    e: str = "depthUpdate"


class _Trade(msgspec.Struct):
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool
    e: str = "trade"


class _ServerShutdown(msgspec.Struct):
    e: str
    E: int = 0


class _RestDepth(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


#: msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 inside a string.
DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError)

_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_kind_decoder: Final = msgspec.json.Decoder(_Kind)
_depth_decoder: Final = msgspec.json.Decoder(_DepthUpdate)
_trade_decoder: Final = msgspec.json.Decoder(_Trade)
_shutdown_decoder: Final = msgspec.json.Decoder(_ServerShutdown)
_rest_depth_decoder: Final = msgspec.json.Decoder(_RestDepth)


def check_levels(levels: list[tuple[str, str]], what: str) -> tuple[Level, ...]:
    """The levels as a tuple, after checking each is a finite decimal pair with a positive
    price and a non-negative quantity."""
    for price, qty in levels:
        try:
            p = float(price)
            q = float(qty)
        except ValueError:
            raise VenueContractError(f"{what}: level is not numeric: {price!r}, {qty!r}") from None
        if not (p > 0.0 and q >= 0.0 and math.isfinite(p) and math.isfinite(q)):
            raise VenueContractError(f"{what}: level out of range: {price!r}, {qty!r}")
    return tuple(levels)


def _depth_event(raw: bytes | msgspec.Raw, recv_ns: int, conn_id: int) -> DepthDiff:
    try:
        d = _depth_decoder.decode(raw)
    except DECODE_ERRORS as exc:
        raise VenueContractError(f"bad depthUpdate: {exc}") from None
    if d.u < d.U or d.U < 0:
        raise VenueContractError(f"depthUpdate with U={d.U} > u={d.u} or negative")
    return DepthDiff(
        venue=VENUE,
        symbol=d.s,
        first_id=d.U,
        last_id=d.u,
        prev_id=-1,
        bids=check_levels(d.b, "depthUpdate bids"),
        asks=check_levels(d.a, "depthUpdate asks"),
        event_ms=d.E,
        recv_ns=recv_ns,
        conn_id=conn_id,
    )


def _trade_event(raw: bytes | msgspec.Raw, recv_ns: int, conn_id: int) -> Trade:
    try:
        t = _trade_decoder.decode(raw)
    except DECODE_ERRORS as exc:
        raise VenueContractError(f"bad trade: {exc}") from None
    check_levels([(t.p, t.q)], "trade")
    return Trade(
        venue=VENUE,
        symbol=t.s,
        trade_id=t.t,
        price=t.p,
        qty=t.q,
        # "m": the buyer is the maker, so the aggressor sold.
        side=Side.SELL if t.m else Side.BUY,
        trade_ms=t.T,
        recv_ns=recv_ns,
        conn_id=conn_id,
    )


#: Parses one event payload of a stream into its venue event.
EventParser = Callable[[bytes | msgspec.Raw, int, int], VenueEvent]


def _notice(
    venue: str, kind: str, detail: str, reconnect: bool, recv_ns: int, conn_id: int
) -> VenueNotice:
    return VenueNotice(
        venue=venue,
        kind=kind,
        detail=detail,
        reconnect=reconnect,
        recv_ns=recv_ns,
        conn_id=conn_id,
    )


def parse_frame(
    raw: bytes,
    recv_ns: int,
    conn_id: int,
    *,
    venue: str,
    by_stream: Callable[[str], EventParser | None],
    by_event: Mapping[str, EventParser],
) -> list[VenueEvent]:
    """Events in one frame of Binance's WebSocket framing, shared by spot and USD-M: a
    combined-stream envelope (``{"stream": name, "data": event}``, routed by ``by_stream``)
    or a raw event (routed by its ``e`` through ``by_event``), a control reply, or the
    ``serverShutdown`` notice. Streams and events with no parser give an empty list.
    Raises VenueContractError for anything that is not a valid frame."""
    if raw[:10] == b'{"stream":':
        try:
            env = _envelope_decoder.decode(raw)
        except DECODE_ERRORS as exc:
            raise VenueContractError(f"bad combined-stream envelope: {exc}") from None
        parser = by_stream(env.stream)
        if parser is not None:
            return [parser(env.data, recv_ns, conn_id)]
        if env.stream == "!serverShutdown":
            return [_notice(venue, "shutdown", "serverShutdown", True, recv_ns, conn_id)]
        return []
    try:
        kind = _kind_decoder.decode(raw)
    except DECODE_ERRORS as exc:
        raise VenueContractError(f"undecodable frame: {exc}") from None
    if kind.e is not None:
        parser = by_event.get(kind.e)
        if parser is not None:
            return [parser(raw, recv_ns, conn_id)]
        if kind.e == "serverShutdown":
            return [_notice(venue, "shutdown", "serverShutdown", True, recv_ns, conn_id)]
        # A stream the gateway did not ask for (bookTicker, kline, ...): ignored.
        return []
    if kind.code is not None:
        detail = f"code {kind.code}: {kind.msg}"
        return [_notice(venue, "error", detail, False, recv_ns, conn_id)]
    if kind.id is not None:
        return [_notice(venue, "ack", f"request {kind.id}", False, recv_ns, conn_id)]
    raise VenueContractError("frame is neither an event nor a control reply")


def _spot_stream(stream: str) -> EventParser | None:
    if stream.endswith(DEPTH_SUFFIX) or stream.endswith("@depth"):
        return _depth_event
    if stream.endswith(TRADE_SUFFIX):
        return _trade_event
    return None


_SPOT_EVENTS: Final[Mapping[str, EventParser]] = {
    "depthUpdate": _depth_event,
    "trade": _trade_event,
}


def parse(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """Events in one WebSocket frame from a combined or raw stream.

    Streams other than depth diffs, trades and shutdown notices are ignored (empty list).
    Raises VenueContractError for anything that is not a valid Binance frame.
    """
    return parse_frame(
        raw, recv_ns, conn_id, venue=VENUE, by_stream=_spot_stream, by_event=_SPOT_EVENTS
    )


def parse_snapshot(symbol: str, body: bytes, recv_ns: int, conn_id: int = -1) -> DepthSnapshot:
    """A REST ``/api/v3/depth`` response body as a snapshot of ``symbol``."""
    try:
        d = _rest_depth_decoder.decode(body)
    except DECODE_ERRORS as exc:
        raise VenueContractError(f"bad depth snapshot for {symbol}: {exc}") from None
    if d.lastUpdateId < 0:
        raise VenueContractError(f"depth snapshot for {symbol} has negative lastUpdateId")
    return DepthSnapshot(
        venue=VENUE,
        symbol=symbol.upper(),
        last_id=d.lastUpdateId,
        bids=check_levels(d.bids, "snapshot bids"),
        asks=check_levels(d.asks, "snapshot asks"),
        recv_ns=recv_ns,
        conn_id=conn_id,
    )


# --- recognising Binance in captures (VenueAdapter.hosts, frame_venue, notice_frame) --------

#: Hosts of Binance spot's WebSocket and REST endpoints (market-data mirrors included).
HOSTS: Final = {
    "stream.binance.com": VENUE,
    "data-stream.binance.vision": VENUE,
    "api.binance.com": VENUE,
    "data-api.binance.vision": VENUE,
}
#: cryptofeed's feed id of Binance spot.
CRYPTOFEED_NAMES: Final = {"BINANCE": VENUE}
_DEPTH_UPDATE_SHAPE: Final = re.compile(rb'"e"\s*:\s*"depthUpdate"')


def frame_venue(head: bytes) -> str | None:
    """``binance`` when ``head`` (a frame's first bytes) is a spot depth update: one without
    the ``pu`` / ``ps`` that futures updates carry (:func:`feeds.binance_usdm.frame_venue`)."""
    if _DEPTH_UPDATE_SHAPE.search(head) and b'"pu":' not in head and b'"ps":' not in head:
        return VENUE
    return None


def notice_frame(now_ns: int) -> bytes:
    """The combined-stream ``serverShutdown`` notice at ``now_ns``: reconnect soon."""
    event_ms = now_ns // 1_000_000
    return b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":%d}}' % event_ms
