"""A simulated Kraken spot WebSocket v2 endpoint: ``book`` and ``trade``, wire-exact.

Renderer (pure functions) and :class:`KrakenProtocol` for :class:`feeds.sim.venue.SimVenue`;
:class:`SimKraken` is the venue ready to serve (path ``/v2``; other paths: HTTP 404).

On connect: a ``status`` message. Client messages (``req_id`` echoed when given):

- ``{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10}}``:
  one ack per symbol (``{"method":"subscribe","result":{...},"success":true,...}``), then
  the snapshot of the top ``depth`` levels (unless ``"snapshot":false``). ``depth`` is one
  of 10, 25, 100, 500, 1000 (the book process holds at most 250 levels per side).
  ``trade`` (without a snapshot of past trades) is supported too. An unknown symbol,
  channel or depth gets ``{"error":...,"success":false,...}``.
- ``unsubscribe``: ack; subscribing again sends a fresh snapshot.
- ``{"method":"ping","req_id":N}``: ``{"method":"pong","req_id":N,...}``.

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
Not simulated: the ``instrument`` channel, rate limits, ``snapshot`` of past trades.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from feeds import kraken
from feeds.sim.book_process import Batch, SimTrade
from feeds.sim.okx import decimals
from feeds.sim.venue import (
    ConnState,
    Publication,
    SimVenue,
    VenueProtocol,
    fixed,
    iso_time,
)
from gateway.model import Level

PATH: Final = "/v2"
QTY_PRECISION: Final = 8
HEARTBEAT: Final = b'{"channel":"heartbeat"}'

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

    def __init__(self, price_precision: int = 1, qty_precision: int = QTY_PRECISION) -> None:
        super().__init__()
        self._pp = price_precision
        self._qp = qty_precision
        self._zero = fixed("0", qty_precision)
        #: The top-D view each subscribed depth last sent, per (symbol, depth).
        self._views: dict[tuple[str, int], _View] = {}
        self._conns = 0

    def format_level(self, symbol: str, level: Level) -> Level:
        return fixed(level[0], self._pp), fixed(level[1], self._qp)

    def check_path(self, path: str) -> str | None:
        if urlsplit(path).path != PATH:
            return f"Only {PATH} is simulated\n"
        return None

    def on_open(self, state: ConnState) -> list[bytes]:
        self._conns += 1
        return [status_frame(1_000_000_000 + self._conns)]

    def _view(self, symbol: str, depth: int) -> _View:
        book = self.procs[symbol].book
        fmt = self.format_level
        bids = dict(fmt(symbol, lv) for lv in book.bids(depth))
        asks = dict(fmt(symbol, lv) for lv in book.asks(depth))
        return bids, asks

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
            if request.method == "unsubscribe":
                state.subs.discard(key)
                continue
            fresh = key not in state.subs
            state.subs.add(key)
            if p.channel == kraken.BOOK_CHANNEL:
                if fresh and p.snapshot:
                    out.append(self.snapshot_frame(symbol, p.depth))
                else:
                    self._views.setdefault((symbol, p.depth), self._view(symbol, p.depth))
        return out

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
        stamp = iso_time(now_ns)
        pubs: list[Publication] = []
        if batch.trades:
            trades = [(t, self.format_level(symbol, (t.price, t.qty))) for t in batch.trades]
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


class SimKraken(SimVenue):
    """A simulated Kraken v2 endpoint set: ``SimKraken(["BTC/USD"], n_endpoints=2)``;
    connect to :attr:`v2_urls`. Keyword arguments are those of
    :class:`~feeds.sim.venue.SimVenue`; the price precision is the tick's decimals."""

    def __init__(
        self,
        symbols: Sequence[str],
        n_endpoints: int = 2,
        seed: int = 1,
        interval_s: float = 0.1,
        *,
        tick: str = "0.1",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            KrakenProtocol(decimals(tick)),
            symbols,
            n_endpoints,
            seed,
            interval_s,
            tick=tick,
            **kwargs,
        )

    @property
    def v2_urls(self) -> list[str]:
        """``ws://host:port/v2`` of every endpoint."""
        return [url + PATH for url in self.endpoint_urls]
