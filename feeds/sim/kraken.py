"""A simulated Kraken spot WebSocket v2 endpoint: ``book`` and ``trade``, wire-exact.

Renderer (pure functions) and :class:`KrakenProtocol` for
:class:`feeds.sim.simulators.SimVenue`; :class:`~feeds.sim.simulators.SimKraken` is the
venue ready to serve (path ``/v2``; other paths: HTTP 404).

On connect: a ``status`` message. Client messages (``req_id`` echoed when given):

- ``{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10}}``:
  one ack per symbol (``{"method":"subscribe","result":{...},"success":true,...}``), then
  the snapshot of the top ``depth`` levels (unless ``"snapshot":false``). ``depth`` is one
  of 10, 25, 100, 500, 1000 (the book process holds at most 250 levels per side).
  ``trade`` (without a snapshot of past trades) is supported too. An unknown symbol,
  channel or depth gets ``{"error":...,"success":false,...}``.
- ``unsubscribe``: ack; subscribing again sends a fresh snapshot.
- ``{"method":"ping","req_id":N}``: ``{"method":"pong","req_id":N,...}``.
- ``{"method":"subscribe","params":{"channel":"instrument","snapshot":true}}`` (``snapshot``
  defaults to true): an ack ``{"method":"subscribe","result":{"channel":"instrument",
  "snapshot":true},"success":true,...}`` then one ``instrument`` ``snapshot`` frame listing
  every simulated pair (:func:`instrument_frame`) with the precisions the simulator renders
  at, so that :func:`feeds.kraken.precisions_from_instrument` gives back exactly
  ``{symbol: (price_precision, qty_precision)}``. ``"snapshot":false`` gets the ack only;
  ``unsubscribe`` an ack. No ``instrument`` updates are ever sent (pairs never change).

Heartbeats ``{"channel":"heartbeat"}`` go to every subscribed connection once per heartbeat
interval. Kraken has no ids: updates are the same bytes on every connection subscribed at
the same depth, rendered once per (symbol, depth).

Book updates, per subscribed depth D: the levels of the new top D that are new or changed
(so a level moving up into the top D from deeper is sent as an insert), and a zero
quantity for levels of the old top D that left the book. A level pushed out of the top D
by better ones is NOT sent: the client truncates to D after every message, as Kraken
requires. Prices and quantities are JSON numbers at fixed precision (price: the tick's
decimals, quantity: 8), never in exponent form; the checksum is
:func:`feeds.kraken.checksum_levels` of the top 10 (CRC32 of the digits, unsigned).

REST (opt-in: ``SimKraken(..., rest=True)``, on :attr:`~feeds.sim.simulators.SimVenue.rest_url`):
``GET /0/public/Depth?pair=<pair>&count=N`` answers, as ``api.kraken.com`` does,
``{"error":[],"result":{"XXBTZUSD":{"asks":[[price,volume,timestamp],...],"bids":[...]}}}``
with the current top ``count`` levels per side (default 100, 1..500; the book holds at most
250 per side). Prices are strings at the price precision, volumes at the qty precision
(the same digits as the WebSocket levels; the real endpoint pads BTC/USD prices to 5
decimals: compare by value), and each level's timestamp is the second of its last change
(levels never changed carry the time the venue was built).

Pair names (:func:`rest_pair_name`): ``pair`` may be the v2 symbol (``BTC/USD``), the REST
name or the altname; the result is always keyed by the REST name. The REST name follows
Kraken's legacy rule: when both assets are legacy ones (``XBT ETH LTC XRP XLM XMR ETC ZEC
MLN REP`` X-prefixed, fiat ``USD EUR GBP JPY CAD AUD CHF`` Z-prefixed) it is the two
four-letter codes (``XXBTZUSD``, ``XETHZUSD``, ``XETHXXBT``), otherwise the altname, the v1
codes concatenated (``SOLUSD``, ``XBTUSDT``); ``DOGE/USD`` is ``XDGUSD`` and ``USDT/USD``
``USDTZUSD`` as on Kraken. An unknown pair gets ``{"error":["EQuery:Unknown asset pair"]}``
with HTTP 200, as Kraken sends it; a missing ``pair`` or a ``count`` that is not an integer
in 1..500 gets ``{"error":["EGeneral:Invalid arguments"]}`` (HTTP 200; the real answer to
these two is not verified). REST is opt-in so that the default venue keeps serving no REST.

Not simulated: ``instrument`` updates, rate limits, ``snapshot`` of past trades.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from typing import Final

import msgspec

from feeds import kraken
from feeds.sim.book_process import Batch
from feeds.sim.book_process import BookProcess
from feeds.sim.book_process import SimTrade
from feeds.sim.connection import ConnState
from feeds.sim.connection import Publication
from feeds.sim.connection import RestAnswer
from feeds.sim.numbers import fixed
from feeds.sim.numbers import iso_time
from feeds.sim.rewrite import WireShape
from feeds.sim.venue import VenueProtocol
from feeds.sim.venue import query_int
from gateway.core.model import Level

PATH: Final = "/v2"
QTY_PRECISION: Final = 8
HEARTBEAT: Final = b'{"channel":"heartbeat"}'
#: REST order book (``?pair=&count=``), served when the venue is built with ``rest=True``.
DEPTH_PATH: Final = "/0/public/Depth"
DEPTH_DEFAULT_COUNT: Final = 100
DEPTH_MAX_COUNT: Final = 500
UNKNOWN_PAIR: Final = "EQuery:Unknown asset pair"
INVALID_ARGUMENTS: Final = "EGeneral:Invalid arguments"
#: Quantity step of the venue when none is given (the simulators' default lot).
DEFAULT_LOT: Final = "0.00001"
#: Where ``book`` pushes and REST books carry levels (:mod:`feeds.sim.rewrite`); no ids.
STREAM_SHAPE: Final = WireShape(
    sides=((("data", 0, "bids"), "bid"), (("data", 0, "asks"), "ask")),
    symbol=("data", 0, "symbol"),
    price="price",
    qty="qty",
)
REST_SHAPE: Final = WireShape(
    sides=((("result", "*", "bids"), "bid"), (("result", "*", "asks"), "ask")),
    symbol_param="pair",
)

#: v2 asset codes whose v1 / REST code differs.
_V1_ASSETS: Final = {"BTC": "XBT", "DOGE": "XDG"}
#: Legacy crypto assets (REST code X + v1 code) and fiat (Z + code).
_LEGACY_CRYPTO: Final = frozenset(
    {"XBT", "ETH", "LTC", "XRP", "XLM", "XMR", "ETC", "ZEC", "MLN", "REP"}
)
_LEGACY_FIAT: Final = frozenset({"USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF"})
#: REST names that do not follow the rule.
_REST_NAME_EXCEPTIONS: Final = {"DOGE/USD": "XDGUSD", "USDT/USD": "USDTZUSD"}

_encoder: Final = msgspec.json.Encoder()


def _levels(levels: Sequence[Level]) -> list[dict[str, msgspec.Raw]]:
    """Levels as ``{"price": <number>, "qty": <number>}`` with the exact digits."""
    return [{"price": msgspec.Raw(p.encode()), "qty": msgspec.Raw(q.encode())} for p, q in levels]


def book_frame(
    kind: str,
    symbol: str,
    bids: Sequence[Level],
    asks: Sequence[Level],
    checksum: int,
    timestamp: str | None = None,
) -> bytes:
    """A ``book`` push of ``kind`` ``snapshot`` or ``update`` (the update with a timestamp)."""
    data: dict[str, Any] = {
        "symbol": symbol,
        "bids": _levels(bids),
        "asks": _levels(asks),
        "checksum": checksum,
    }
    if timestamp is not None:
        data["timestamp"] = timestamp
    return _encoder.encode({"channel": kraken.BOOK_CHANNEL, "type": kind, "data": [data]})


def trade_frame(symbol: str, trades: Sequence[tuple[SimTrade, Level]], timestamp: str) -> bytes:
    """A ``trade`` update; ``side`` is the taker's."""
    data = [
        {
            "symbol": symbol,
            "side": "sell" if t.buyer_is_maker else "buy",
            "price": msgspec.Raw(px.encode()),
            "qty": msgspec.Raw(qty.encode()),
            "ord_type": "market",
            "trade_id": t.trade_id,
            "timestamp": timestamp,
        }
        for t, (px, qty) in trades
    ]
    return _encoder.encode({"channel": kraken.TRADE_CHANNEL, "type": "update", "data": data})


def status_frame(connection_id: int) -> bytes:
    return _encoder.encode(
        {
            "channel": "status",
            "type": "update",
            "data": [
                {
                    "version": "2.0.10",
                    "system": "online",
                    "api_version": "v2",
                    "connection_id": connection_id,
                }
            ],
        }
    )


def reply_frame(
    method: str,
    req_id: int | None,
    time_ns: int,
    *,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
    symbol: str | None = None,
) -> bytes:
    """A method reply: success with ``result``, or failure with ``error``."""
    body: dict[str, Any] = {"method": method}
    if error is not None:
        body["error"] = error
        if symbol is not None:
            body["symbol"] = symbol
        body["success"] = False
    elif result is not None:
        body["result"] = dict(result)
        body["success"] = True
    if req_id is not None:
        body["req_id"] = req_id
    stamp = iso_time(time_ns)
    body["time_in"] = stamp
    body["time_out"] = stamp
    return _encoder.encode(body)


def _number(text: str) -> msgspec.Raw:
    """A decimal string as a fixed-point JSON number (never exponent form)."""
    return msgspec.Raw(format(Decimal(text).normalize(), "f").encode())


def increment(precision: int) -> str:
    """The smallest step at ``precision`` decimals: ``"0.00000001"`` at 8, ``"1"`` at 0."""
    return "1" if precision == 0 else "0." + "0" * (precision - 1) + "1"


def _legacy_code(v1: str) -> str | None:
    if v1 in _LEGACY_CRYPTO:
        return "X" + v1
    if v1 in _LEGACY_FIAT:
        return "Z" + v1
    return None


def altname(symbol: str) -> str:
    """The REST ``altname`` of a v2 symbol: v1 codes concatenated (``BTC/USD`` -> ``XBTUSD``)."""
    base, _, quote = symbol.partition("/")
    return _V1_ASSETS.get(base, base) + _V1_ASSETS.get(quote, quote)


def rest_pair_name(symbol: str) -> str:
    """The REST pair name of a v2 symbol (``BTC/USD`` -> ``XXBTZUSD``, ``SOL/USD`` ->
    ``SOLUSD``); see the module docstring for the rule."""
    if symbol in _REST_NAME_EXCEPTIONS:
        return _REST_NAME_EXCEPTIONS[symbol]
    base, sep, quote = symbol.partition("/")
    if sep:
        legacy_base = _legacy_code(_V1_ASSETS.get(base, base))
        legacy_quote = _legacy_code(_V1_ASSETS.get(quote, quote))
        if legacy_base is not None and legacy_quote is not None:
            return legacy_base + legacy_quote
    return altname(symbol)


def instrument_frame(
    symbols: Sequence[str], price_precision: int, qty_precision: int, tick: str, lot: str
) -> bytes:
    """The ``instrument`` ``snapshot`` frame: the assets of ``symbols`` and one pair each,
    all at ``price_precision`` / ``qty_precision``; ``tick`` is the price increment and
    ``lot`` the smallest order quantity (``qty_min``)."""
    assets: dict[str, dict[str, Any]] = {}
    pairs: list[dict[str, Any]] = []
    for symbol in symbols:
        base, _, quote = symbol.partition("/")
        for asset in (base, quote):
            if asset and asset not in assets:
                assets[asset] = {
                    "id": asset,
                    "status": "enabled",
                    "precision": qty_precision,
                    "precision_display": qty_precision,
                    "borrowable": False,
                    "collateral_value": msgspec.Raw(b"0.0"),
                    "margin_rate": msgspec.Raw(b"0.0"),
                }
        pairs.append(
            {
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "status": "online",
                "qty_precision": qty_precision,
                "qty_increment": _number(increment(qty_precision)),
                "price_precision": price_precision,
                "price_increment": _number(tick),
                "cost_precision": 5,
                "marginable": False,
                "has_index": True,
                "cost_min": msgspec.Raw(b"0.5"),
                "tick_size": _number(tick),
                "qty_min": _number(lot),
            }
        )
    data = {"assets": list(assets.values()), "pairs": pairs}
    return _encoder.encode({"channel": kraken.INSTRUMENT_CHANNEL, "type": "snapshot", "data": data})


#: A REST Depth level: price and volume strings, and the second of its last change.
DepthLevel = tuple[str, str, int]


def depth_body(pair_name: str, bids: Sequence[DepthLevel], asks: Sequence[DepthLevel]) -> bytes:
    """A ``/0/public/Depth`` success body keyed by the REST ``pair_name``."""
    book = {"asks": [list(lv) for lv in asks], "bids": [list(lv) for lv in bids]}
    return _encoder.encode({"error": [], "result": {pair_name: book}})


def rest_error_body(*errors: str) -> bytes:
    """A REST error body: ``{"error":[...]}`` (no ``result``)."""
    return _encoder.encode({"error": list(errors)})


class _Params(msgspec.Struct):
    channel: str = ""
    symbol: list[str] = []
    depth: int = kraken.DEFAULT_DEPTH
    snapshot: bool = True


class _Request(msgspec.Struct):
    method: str
    params: _Params | None = None
    req_id: int | None = None


_request_decoder: Final = msgspec.json.Decoder(_Request)

#: A (symbol, depth) view: price -> qty wire strings, best first.
_View = tuple[dict[str, str], dict[str, str]]


class KrakenProtocol(VenueProtocol):
    """Kraken v2 ``book`` + ``trade``; see the module docstring."""

    name = "kraken"
    path = PATH

    def __init__(
        self,
        price_precision: int = 1,
        qty_precision: int = QTY_PRECISION,
        *,
        tick: str | None = None,
        lot: str = DEFAULT_LOT,
        rest: bool = True,
    ) -> None:
        super().__init__()
        self._pp = price_precision
        self._qp = qty_precision
        self._tick = increment(price_precision) if tick is None else tick
        self._lot = lot
        self._zero = fixed("0", qty_precision)
        #: The top-D view each subscribed depth last sent, per (symbol, depth).
        self._views: dict[tuple[str, int], _View] = {}
        self._conns = 0
        self._instrument: bytes | None = None
        self.rest_path = DEPTH_PATH if rest else None
        self.stream_shape = STREAM_SHAPE
        self.rest_shape = REST_SHAPE
        #: REST ``pair`` spellings accepted -> symbol.
        self._pair_names: dict[str, str] = {}
        #: Per symbol, bids and asks: BookProcess price -> second of the level's last change.
        self._level_s: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
        #: The second of the levels unchanged since :meth:`attach` (see :meth:`_started_s`).
        self._start_s: int | None = None

    @property
    def precisions(self) -> dict[str, tuple[int, int]]:
        """``{symbol: (price_precision, qty_precision)}`` the venue renders at."""
        return {symbol: (self._pp, self._qp) for symbol in self.procs}

    def attach(self, procs: Mapping[str, BookProcess]) -> None:
        super().attach(procs)
        self._instrument = None
        self._start_s = None
        self._level_s = {symbol: ({}, {}) for symbol in procs}
        self._pair_names = {}
        for symbol in procs:
            for name in (symbol, rest_pair_name(symbol), altname(symbol)):
                self._pair_names.setdefault(name, symbol)

    def format_level(self, symbol: str, level: Level) -> Level:
        return fixed(level[0], self._pp), fixed(level[1], self._qp)

    def on_open(self, state: ConnState) -> list[bytes]:
        self._conns += 1
        return [status_frame(1_000_000_000 + self._conns)]

    def _view(self, symbol: str, depth: int) -> _View:
        bids, asks = self.wire_book(symbol, depth)
        return dict(bids), dict(asks)

    def snapshot_frame(self, symbol: str, depth: int) -> bytes:
        bids, asks = self._view(symbol, depth)
        self._views.setdefault((symbol, depth), (bids, asks))
        bid_levels, ask_levels = list(bids.items()), list(asks.items())
        crc = kraken.checksum_levels(bid_levels, ask_levels)
        return book_frame("snapshot", symbol, bid_levels, ask_levels, crc)

    def on_message(self, state: ConnState, message: str | bytes, now_ns: int) -> list[bytes]:
        try:
            request = _request_decoder.decode(message)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return [reply_frame("", None, now_ns, error="Malformed request")]
        if request.method == "ping":
            return [reply_frame("pong", request.req_id, now_ns)]
        if request.method not in ("subscribe", "unsubscribe") or request.params is None:
            unsupported = f"Method not supported: {request.method}"
            return [reply_frame(request.method, request.req_id, now_ns, error=unsupported)]
        p = request.params
        if p.channel == kraken.INSTRUMENT_CHANNEL:
            return self._on_instrument(state, request, now_ns)
        out: list[bytes] = []
        for symbol in p.symbol:
            error: str | None = None
            if p.channel not in (kraken.BOOK_CHANNEL, kraken.TRADE_CHANNEL):
                error = f"Channel not supported: {p.channel}"
            elif symbol not in self.procs:
                error = f"Currency pair not supported {symbol}"
            elif p.channel == kraken.BOOK_CHANNEL and p.depth not in kraken.DEPTHS:
                error = f"Invalid depth: {p.depth}"
            if error is not None:
                out.append(
                    reply_frame(request.method, request.req_id, now_ns, error=error, symbol=symbol)
                )
                continue
            result: dict[str, Any] = {"channel": p.channel}
            if p.channel == kraken.BOOK_CHANNEL:
                result["depth"] = p.depth
                key = f"book:{p.depth}:{symbol}"
            else:
                key = f"trade:{symbol}"
            if request.method == "subscribe":
                result["snapshot"] = p.snapshot
            result["symbol"] = symbol
            out.append(reply_frame(request.method, request.req_id, now_ns, result=result))
            fresh = state.update_subscription(key, request.method != "unsubscribe")
            if request.method == "unsubscribe":
                continue
            if p.channel == kraken.BOOK_CHANNEL:
                if fresh and p.snapshot:
                    out.append(self.snapshot_frame(symbol, p.depth))
                else:
                    self._views.setdefault((symbol, p.depth), self._view(symbol, p.depth))
        return out

    def instrument_frame(self) -> bytes:
        """The ``instrument`` snapshot of every simulated pair (rendered once)."""
        if self._instrument is None:
            self._instrument = instrument_frame(
                list(self.procs), self._pp, self._qp, self._tick, self._lot
            )
        return self._instrument

    def _on_instrument(self, state: ConnState, request: _Request, now_ns: int) -> list[bytes]:
        assert request.params is not None
        snapshot = request.params.snapshot
        result: dict[str, Any] = {"channel": kraken.INSTRUMENT_CHANNEL}
        if request.method == "subscribe":
            result["snapshot"] = snapshot
        out = [reply_frame(request.method, request.req_id, now_ns, result=result)]
        key = kraken.INSTRUMENT_CHANNEL
        if state.update_subscription(key, request.method != "unsubscribe") and snapshot:
            out.append(self.instrument_frame())
        return out

    def rest_response(self, query: Mapping[str, str], now_ns: int) -> RestAnswer:
        pair = query.get("pair", "")
        if not pair:
            return RestAnswer(200, rest_error_body(INVALID_ARGUMENTS))
        symbol = self._pair_names.get(pair)
        if symbol is None:
            return RestAnswer(200, rest_error_body(UNKNOWN_PAIR))
        count = query_int(query.get("count", str(DEPTH_DEFAULT_COUNT)), 6)
        if count is None or not 1 <= count <= DEPTH_MAX_COUNT:
            return RestAnswer(200, rest_error_body(INVALID_ARGUMENTS))
        book = self.procs[symbol].book
        bid_s, ask_s = self._level_s[symbol]
        start_s = self._started_s(now_ns)
        sides: list[list[DepthLevel]] = []
        for levels, seconds in ((book.bids(count), bid_s), (book.asks(count), ask_s)):
            side: list[DepthLevel] = []
            for level in levels:
                price, qty = self.format_level(symbol, level)
                side.append((price, qty, seconds.get(level[0], start_s)))
            sides.append(side)
        return RestAnswer(200, depth_body(rest_pair_name(symbol), sides[0], sides[1]))

    def _started_s(self, now_ns: int) -> int:
        """The second the levels of the books as attached are stamped with: that of the first
        time given after :meth:`attach` (the protocol reads no clock)."""
        if self._start_s is None:
            self._start_s = now_ns // 1_000_000_000
        return self._start_s

    def _stamp_levels(self, symbol: str, batch: Batch, now_ns: int) -> None:
        self._started_s(now_ns)
        now_s = now_ns // 1_000_000_000
        for changes, seconds in zip((batch.bids, batch.asks), self._level_s[symbol], strict=True):
            for price, qty in changes:
                if qty.strip("0."):
                    seconds[price] = now_s
                else:
                    seconds.pop(price, None)

    def _update(self, symbol: str, depth: int, batch: Batch, timestamp: str) -> bytes | None:
        old_bids, old_asks = self._views[(symbol, depth)]
        new_bids, new_asks = self._view(symbol, depth)
        self._views[(symbol, depth)] = (new_bids, new_asks)
        sides: list[list[Level]] = []
        for old, new, changes in (
            (old_bids, new_bids, batch.bids),
            (old_asks, new_asks, batch.asks),
        ):
            gone = {fixed(p, self._pp) for p, q in changes if not q.strip("0.")}
            levels = [(p, q) for p, q in new.items() if old.get(p) != q]
            levels += [(p, self._zero) for p in old if p not in new and p in gone]
            sides.append(levels)
        if not sides[0] and not sides[1]:
            return None
        crc = kraken.checksum_levels(list(new_bids.items()), list(new_asks.items()))
        return book_frame("update", symbol, sides[0], sides[1], crc, timestamp)

    def on_batch(self, symbol: str, batch: Batch, now_ns: int) -> list[Publication]:
        if self.rest_path is not None:
            self._stamp_levels(symbol, batch, now_ns)
        stamp = iso_time(now_ns)
        pubs: list[Publication] = []
        if batch.trades:
            trades = self.wire_trades(symbol, batch.trades)
            pubs.append(Publication(f"trade:{symbol}", trade_frame(symbol, trades, stamp)))
        for view_symbol, depth in list(self._views):
            if view_symbol == symbol:
                frame = self._update(symbol, depth, batch, stamp)
                if frame is not None:
                    pubs.append(Publication(f"book:{depth}:{symbol}", frame))
        return pubs

    def on_heartbeat(self, now_ns: int) -> list[Publication]:
        return [Publication("*", HEARTBEAT)]

    def frame_for(self, state: ConnState, pub: Publication) -> bytes | None:
        if pub.key == "*":
            return pub.frame if state.subs else None
        return super().frame_for(state, pub)
