"""Binance spot: endpoints, stream names, and parsing of wire frames into venue-neutral events.

Pure: takes bytes, returns events; no I/O. Frames come from combined streams
(``/stream?streams=...``, payload ``{"stream": name, "data": event}``) or raw streams
(``/ws/...``, the event alone). Any frame that breaks the venue's contract raises
:class:`gateway.core.model.VenueContractError` and nothing else.

Sequence rule (exchange-protocols.md §1): a diff covers update ids ``U..u``; it links to a
book at id ``L`` when ``U <= L + 1 <= u``; ``u <= L`` is old; ``U > L + 1`` means ids were
missed. The REST snapshot's ``lastUpdateId`` is the book's id.

Prices and quantities are strings in plain fixed-point decimal (:data:`NUMBERS`), the only
form the recorded spot and USD-M sessions hold (``"65000.10000000"``, ``"0.00000000"``,
``"3366"``); the futures adapters share this grammar.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlencode

import msgspec

from feeds.common import FIXED_POINT
from feeds.common import MAX_INT
from feeds.common import check_levels
from feeds.common import check_snapshot_range
from feeds.common import decode
from feeds.common import notice
from feeds.common import rest_snapshot
from gateway.core.arbiter import Link
from gateway.core.arbiter import StatelessRule
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Side
from gateway.core.model import Trade
from gateway.core.model import VenueContractError
from gateway.core.model import VenueEvent
from gateway.core.model import VenueNotice

VENUE: Final = "binance"
#: Update and trade ids are signed 64-bit on spot and futures (and in every encoding
#: downstream).
MAX_ID: Final = MAX_INT - 1
#: How prices and quantities are written on the wire (spot, USD-M and COIN-M alike).
NUMBERS: Final = FIXED_POINT

#: Production endpoints (exchange-protocols.md §1).
WS_ENDPOINTS: Final = (
    "wss://stream.binance.com:9443",
    "wss://stream.binance.com:443",
    "wss://data-stream.binance.vision",
)
REST_ENDPOINTS: Final = ("https://api.binance.com", "https://data-api.binance.vision")

DEPTH_SUFFIX: Final = "@depth@100ms"
TRADE_SUFFIX: Final = "@trade"
#: The combined-stream name of the ``serverShutdown`` notice.
SHUTDOWN_STREAM: Final = "!serverShutdown"
SNAPSHOT_PATH: Final = "/api/v3/depth"
#: Largest REST depth (weight 250 of the 6000/min budget).
MAX_SNAPSHOT_LIMIT: Final = 5000
#: The REST depth asked for unless configured (weight 50).
DEFAULT_SNAPSHOT_LIMIT: Final = 1000
#: Binance allows 1024 streams per connection; two streams per symbol.
MAX_STREAMS_PER_CONNECTION: Final = 1024
MAX_SYMBOLS_PER_CONNECTION: Final = MAX_STREAMS_PER_CONNECTION // 2


#: REST request weight of ``/api/v3/depth``: ``(largest limit, weight)``, ascending.
SNAPSHOT_WEIGHTS: Final = ((100, 5), (500, 25), (1000, 50), (MAX_SNAPSHOT_LIMIT, 250))


def weight_at(limit: int, steps: Sequence[tuple[int, int]]) -> int:
    """The weight of the first step whose largest limit is at least ``limit``; the last
    step's above them all."""
    for largest, weight in steps:
        if limit <= largest:
            return weight
    return steps[-1][1]


def snapshot_weight(limit: int) -> int:
    """REST request weight of ``/api/v3/depth`` at ``limit`` levels."""
    return weight_at(limit, SNAPSHOT_WEIGHTS)


def depth_stream(symbol: str) -> str:
    """``btcusdt@depth@100ms`` for ``BTCUSDT``."""
    return symbol.lower() + DEPTH_SUFFIX


def trade_stream(symbol: str) -> str:
    """``btcusdt@trade`` for ``BTCUSDT``."""
    return symbol.lower() + TRADE_SUFFIX


def stream_names(symbol: str) -> list[str]:
    return [depth_stream(symbol), trade_stream(symbol)]


def stream_url(endpoint: str, symbols: Sequence[str]) -> str:
    """Combined-stream URL carrying depth diffs and trades of ``symbols``."""
    if not symbols:
        raise ValueError("at least one symbol is required")
    if len(symbols) > MAX_SYMBOLS_PER_CONNECTION:
        raise ValueError(f"at most {MAX_SYMBOLS_PER_CONNECTION} symbols per connection")
    names = [name for symbol in symbols for name in stream_names(symbol)]
    return endpoint.rstrip("/") + "/stream?streams=" + "/".join(names)


def check_snapshot_limit(limit: int) -> None:
    """Raises ValueError unless ``/api/v3/depth`` serves ``limit`` levels (1..5000)."""
    check_snapshot_range(limit, MAX_SNAPSHOT_LIMIT)


def snapshot_url(rest_base: str, symbol: str, limit: int) -> str:
    """``GET /api/v3/depth?symbol=<SYMBOL>&limit=<limit>`` (:func:`check_snapshot_limit`)."""
    check_snapshot_limit(limit)
    query = urlencode({"symbol": symbol.upper(), "limit": limit})
    return f"{rest_base.rstrip('/')}{SNAPSHOT_PATH}?{query}"


def subscribe_frame(symbols: Sequence[str], request_id: int) -> bytes:
    """A live SUBSCRIBE request for ``symbols`` (used where the URL cannot carry streams)."""
    params = [name for symbol in symbols for name in stream_names(symbol)]
    return msgspec.json.encode({"method": "SUBSCRIBE", "params": params, "id": request_id})


# --- sequence rule ------------------------------------------------------------------------


class BinanceSpotRule(StatelessRule):
    """Binance spot's link rule (a :class:`gateway.core.arbiter.LinkRule`): ``u <= L`` is
    stale; ``U <= L + 1 <= u`` links; ``U > L + 1`` leaves a hole.

    Levels are absolute, so an update overlapping applied ids is applied whole; this also
    covers connections that batch the same ids into different events.
    """

    name = "binance-spot"
    #: Ids are contiguous per symbol; BTCUSDT spans ~1.5k ids per 100 ms event at most.
    max_id_jump = 10**6

    def classify(self, diff: DepthDiff, applied_id: int) -> Link:
        if diff.last_id <= applied_id:
            return Link.STALE
        if diff.first_id <= applied_id + 1:
            return Link.LINKS
        return Link.FUTURE

    def continues(self, diff: DepthDiff, last_id: int) -> bool:
        return self.classify(diff, last_id) is Link.LINKS


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
    """A depthUpdate of spot or USD-M; only futures events carry ``pu`` and ``T``."""

    s: str
    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    pu: int | None = None
    E: int = 0
    T: int = 0
    e: str = "depthUpdate"


class _Trade(msgspec.Struct):
    """A spot ``trade`` (id ``t``) or a USD-M ``aggTrade`` (id ``a``)."""

    s: str
    p: str
    q: str
    T: int
    m: bool
    t: int | None = None
    a: int | None = None
    e: str = "trade"


class _RestDepth(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_kind_decoder: Final = msgspec.json.Decoder(_Kind)
_depth_decoder: Final = msgspec.json.Decoder(_DepthUpdate)
_trade_decoder: Final = msgspec.json.Decoder(_Trade)
_rest_depth_decoder: Final = msgspec.json.Decoder(_RestDepth)


class Framing:
    """Binance's WebSocket framing and events for one market, shared by spot and USD-M.

    A frame is a combined-stream envelope (``{"stream": name, "data": event}``, routed by
    the stream name), a raw event (routed by its ``e``), a control reply, or the
    ``serverShutdown`` notice. Depth streams are those ``is_depth_stream`` accepts; trade
    streams end in ``trade_suffix``. ``futures``: depth events must carry ``pu`` (below
    ``U``, kept as ``prev_id``) and trades are ``aggTrade`` events (id ``a``); otherwise
    ``prev_id`` is -1 and trades are ``trade`` events (id ``t``).
    """

    __slots__ = (
        "_futures",
        "_is_depth_stream",
        "_trade_event_name",
        "_trade_suffix",
        "venue",
    )

    def __init__(
        self,
        venue: str,
        *,
        is_depth_stream: Callable[[str], object],
        trade_suffix: str,
        futures: bool,
    ) -> None:
        self.venue = venue
        self._is_depth_stream = is_depth_stream
        self._trade_suffix = trade_suffix
        self._futures = futures
        self._trade_event_name = "aggTrade" if futures else "trade"

    def parse(self, raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
        """Events in one frame: depth diffs become DepthDiff, trades Trade, the
        ``serverShutdown`` notice and control replies (acks, errors) VenueNotice; other
        streams and events give an empty list. Raises VenueContractError for anything that
        is not a valid frame."""
        if raw[:10] == b'{"stream":':
            env = decode(_envelope_decoder, raw, "bad combined-stream envelope")
            stream = env.stream
            if self._is_depth_stream(stream):
                return [self.depth_event(env.data, recv_ns, conn_id)]
            if stream.endswith(self._trade_suffix):
                return [self.trade_event(env.data, recv_ns, conn_id)]
            if stream == SHUTDOWN_STREAM:
                return [self._shutdown(recv_ns, conn_id)]
            return []
        kind = decode(_kind_decoder, raw, "undecodable frame")
        venue = self.venue
        if kind.e is not None:
            if kind.e == "depthUpdate":
                return [self.depth_event(raw, recv_ns, conn_id)]
            if kind.e == self._trade_event_name:
                return [self.trade_event(raw, recv_ns, conn_id)]
            if kind.e == "serverShutdown":
                return [self._shutdown(recv_ns, conn_id)]
            # A stream the gateway did not ask for (bookTicker, kline, ...): ignored.
            return []
        if kind.code is not None:
            detail = f"code {kind.code}: {kind.msg}"
            return [notice(venue, "error", detail, recv_ns, conn_id)]
        if kind.id is not None:
            return [notice(venue, "ack", f"request {kind.id}", recv_ns, conn_id)]
        raise VenueContractError("frame is neither an event nor a control reply")

    def depth_event(self, raw: bytes | msgspec.Raw, recv_ns: int, conn_id: int) -> DepthDiff:
        """One depthUpdate payload as a DepthDiff ``U..u``."""
        d = decode(_depth_decoder, raw, "bad depthUpdate")
        if d.U < 0 or d.u < d.U or d.u > MAX_ID:
            raise VenueContractError(f"depthUpdate with U={d.U}, u={d.u}")
        prev_id = -1
        if self._futures:
            if d.pu is None or d.pu < -1 or d.pu >= d.U:
                # pu is the last id of the previous event: below this event's first id.
                raise VenueContractError(f"depthUpdate with pu={d.pu} not below U={d.U}")
            prev_id = d.pu
        return DepthDiff(
            venue=self.venue,
            symbol=d.s,
            first_id=d.U,
            last_id=d.u,
            prev_id=prev_id,
            bids=check_levels(d.b, NUMBERS, "depthUpdate bids"),
            asks=check_levels(d.a, NUMBERS, "depthUpdate asks"),
            event_ms=d.E,
            recv_ns=recv_ns,
            conn_id=conn_id,
        )

    def trade_event(self, raw: bytes | msgspec.Raw, recv_ns: int, conn_id: int) -> Trade:
        """One trade (spot) or aggTrade (USD-M) payload as a Trade."""
        what = self._trade_event_name
        t = decode(_trade_decoder, raw, f"bad {what}")
        trade_id = t.a if self._futures else t.t
        if trade_id is None or not 0 <= trade_id <= MAX_ID:
            raise VenueContractError(f"{what} with id {trade_id} out of range")
        check_levels([(t.p, t.q)], NUMBERS, what)
        return Trade(
            venue=self.venue,
            symbol=t.s,
            trade_id=trade_id,
            price=t.p,
            qty=t.q,
            # "m": the buyer is the maker, so the aggressor sold.
            side=Side.SELL if t.m else Side.BUY,
            trade_ms=t.T,
            recv_ns=recv_ns,
            conn_id=conn_id,
        )

    def _shutdown(self, recv_ns: int, conn_id: int) -> VenueNotice:
        return notice(self.venue, "shutdown", "serverShutdown", recv_ns, conn_id, reconnect=True)


def _is_spot_depth_stream(stream: str) -> bool:
    return stream.endswith((DEPTH_SUFFIX, "@depth"))


_FRAMING: Final = Framing(
    VENUE, is_depth_stream=_is_spot_depth_stream, trade_suffix=TRADE_SUFFIX, futures=False
)
_parse: Final = _FRAMING.parse


def parse(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """Events in one WebSocket frame from a combined or raw stream.

    Depth diffs become DepthDiff, trades Trade, the ``serverShutdown`` notice and control
    replies (acks, errors) VenueNotice; other streams are ignored (empty list). Raises
    VenueContractError for anything that is not a valid Binance frame.
    """
    return _parse(raw, recv_ns, conn_id)


def depth_snapshot(
    venue: str, symbol: str, body: bytes, recv_ns: int, conn_id: int
) -> DepthSnapshot:
    """A Binance REST depth body (spot's ``/api/v3/depth``, USD-M's ``/fapi/v1/depth``:
    ``lastUpdateId``, ``bids``, ``asks``; other keys ignored) as a snapshot of ``symbol`` on
    ``venue``; ``lastUpdateId`` must be in ``0..MAX_ID``."""
    d = decode(_rest_depth_decoder, body, f"bad depth snapshot for {symbol}")
    if not 0 <= d.lastUpdateId <= MAX_ID:
        raise VenueContractError(f"depth snapshot for {symbol} has lastUpdateId out of range")
    return rest_snapshot(venue, symbol, d.lastUpdateId, d.bids, d.asks, recv_ns, conn_id, NUMBERS)


def parse_snapshot(symbol: str, body: bytes, recv_ns: int, conn_id: int = -1) -> DepthSnapshot:
    """A REST ``/api/v3/depth`` response body as a snapshot of ``symbol``."""
    return depth_snapshot(VENUE, symbol, body, recv_ns, conn_id)


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
#: A depthUpdate event of spot or futures, as a frame's first bytes show it.
DEPTH_UPDATE_SHAPE: Final = re.compile(rb'"e"\s*:\s*"depthUpdate"')


def frame_venue(head: bytes) -> str | None:
    """``binance`` when ``head`` (a frame's first bytes) is a spot depth update: one without
    the ``pu`` / ``ps`` that futures updates carry (:func:`feeds.binance_usdm.frame_venue`)."""
    if DEPTH_UPDATE_SHAPE.search(head) and b'"pu":' not in head and b'"ps":' not in head:
        return VENUE
    return None


def notice_frame(now_ns: int) -> bytes:
    """The combined-stream ``serverShutdown`` notice at ``now_ns``: reconnect soon."""
    event_ms = now_ns // 1_000_000
    return b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":%d}}' % event_ms
