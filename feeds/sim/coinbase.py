"""A simulated Coinbase Advanced Trade market-data endpoint: ``level2`` (``l2_data``),
``market_trades`` and ``heartbeats``, wire-exact.

Renderer (pure functions) and :class:`CoinbaseProtocol` for
:class:`feeds.sim.simulators.SimVenue`; :class:`~feeds.sim.simulators.SimCoinbase` is the
venue ready to serve on path ``/`` (other paths: HTTP 404).

Client messages, one channel each: ``{"type":"subscribe","product_ids":["BTC-USD"],
"channel":"level2"}`` sends, per product newly subscribed, an ``l2_data`` ``snapshot``
event of the whole book, then a ``subscriptions`` message listing the connection's
subscriptions. ``unsubscribe`` (no ``product_ids``: the whole channel) removes them and
answers ``subscriptions``; subscribing ``level2`` again sends a fresh snapshot. Unknown
channels or products get ``{"type":"error","message":...}``.

Framing is per connection: ``sequence_num`` counts every message of the connection from 0
(acks, heartbeats, trades, l2_data), so the same book change has different numbers on
different connections. Book updates are the net level changes of a step (sides ``bid`` /
``offer``, ``new_quantity`` absolute, ``"0"`` deletes), rendered once per venue and
stamped per connection. ``heartbeats`` go once per heartbeat interval to connections
subscribed to them, with a per-connection ``heartbeat_counter``. Prices carry the tick's
decimals, sizes no trailing zeros; trades carry the maker's side, as Coinbase does.

REST (opt-in: ``SimCoinbase(..., rest=True)``, on
:attr:`~feeds.sim.simulators.SimVenue.rest_url`): the public ``GET
/api/v3/brokerage/market/product_book?product_id=BTC-USD&limit=N`` answers
``{"pricebook":{"product_id","bids":[{"price","size"}],"asks":[...],"time"},"last",
"mid_market","spread_bps","spread_absolute"}`` (:func:`product_book_body`) with the
current top ``limit`` levels per side (no ``limit`` or 0: the whole book, at most 250 per
side). As in a recorded response, prices and sizes have no trailing zeros (``"68923"``,
``"68926.3"``: unlike the WebSocket's prices), ``last`` equals ``mid_market``,
``spread_bps`` is exact to 12 decimals (a recorded value differs in its 10th significant
digit), and the book has no sequence. An unknown ``product_id`` gets HTTP 404
``{"error":"NOT_FOUND","error_details":...,"message":...}``; a missing ``product_id`` or a
``limit`` that is not a non-negative integer HTTP 400 ``INVALID_ARGUMENT`` (not verified).
REST is opt-in so that the default venue keeps serving no REST.

Limits (:mod:`feeds.sim.limits`): 8 connections per second and 8 client messages per
second per address, every connection together; REST 10 requests per second.

Not simulated: JWT, the 5 s subscribe deadline, the authenticated
``/api/v3/brokerage/product_book``, ``aggregation_price_increment``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from typing import Final

import msgspec

from feeds import coinbase
from feeds.sim.book_process import Batch
from feeds.sim.book_process import SimTrade
from feeds.sim.connection import ConnState
from feeds.sim.connection import Publication
from feeds.sim.connection import RestAnswer
from feeds.sim.numbers import fixed
from feeds.sim.numbers import iso_time
from feeds.sim.numbers import trim
from feeds.sim.rewrite import WireShape
from feeds.sim.venue import VenueProtocol
from feeds.sim.venue import query_int
from gateway.core.model import Level

PATH: Final = "/"
HEARTBEATS_KEY: Final = "heartbeats"

_encoder: Final = msgspec.json.Encoder()
_SEQ_FIELD: Final = b'"sequence_num":'
#: Where ``l2_data`` messages and REST books carry levels (:mod:`feeds.sim.rewrite`); the
#: venue has no book ids.
STREAM_SHAPE: Final = WireShape(
    sides=((("events", "*", "updates"), "mixed"),),
    price="price_level",
    qty="new_quantity",
    ask_value="offer",
)
REST_SHAPE: Final = WireShape(
    sides=((("pricebook", "bids"), "bid"), (("pricebook", "asks"), "ask")),
    symbol_param="product_id",
    price="price",
    qty="size",
)


def envelope_parts(channel: str, timestamp: str, events: Sequence[Any]) -> tuple[bytes, bytes]:
    """A message as ``(head, tail)``: the connection's ``sequence_num`` goes in between."""
    head = _encoder.encode({"channel": channel, "client_id": "", "timestamp": timestamp})
    tail = _encoder.encode({"events": list(events)})
    return head[:-1] + b"," + _SEQ_FIELD, b"," + tail[1:]


def stamp(head: bytes, tail: bytes, sequence_num: int) -> bytes:
    return head + str(sequence_num).encode() + tail


def l2_event(
    kind: str, product_id: str, bids: Sequence[Level], asks: Sequence[Level], when: str
) -> dict[str, Any]:
    """One ``l2_data`` event (``snapshot`` or ``update``)."""
    updates = [
        {"side": "bid", "event_time": when, "price_level": p, "new_quantity": q} for p, q in bids
    ]
    updates += [
        {"side": "offer", "event_time": when, "price_level": p, "new_quantity": q} for p, q in asks
    ]
    return {"type": kind, "product_id": product_id, "updates": updates}


def trades_event(product_id: str, trades: Sequence[tuple[SimTrade, Level]], when: str) -> Any:
    """A ``market_trades`` update event; ``side`` is the maker's."""
    return {
        "type": "update",
        "trades": [
            {
                "trade_id": str(t.trade_id),
                "product_id": product_id,
                "price": px,
                "size": qty,
                "side": "BUY" if t.buyer_is_maker else "SELL",
                "time": when,
            }
            for t, (px, qty) in trades
        ],
    }


def _text(value: Decimal) -> str:
    return trim(format(value, "f"))


def product_book_body(
    product_id: str, bids: Sequence[Level], asks: Sequence[Level], when: str
) -> bytes:
    """A ``market/product_book`` success body; ``bids`` / ``asks`` best first, as sent
    (no trailing zeros). Mid and spread come from the best levels (``""`` without both)."""
    book = {
        "product_id": product_id,
        "bids": [{"price": p, "size": q} for p, q in bids],
        "asks": [{"price": p, "size": q} for p, q in asks],
        "time": when,
    }
    mid = spread = spread_bps = ""
    if bids and asks:
        best_bid, best_ask = Decimal(bids[0][0]), Decimal(asks[0][0])
        mid_value = (best_bid + best_ask) / 2
        mid = _text(mid_value)
        spread = _text(best_ask - best_bid)
        if mid_value:
            bps = (best_ask - best_bid) / mid_value * 10_000
            spread_bps = _text(bps.quantize(Decimal("1e-12")))
    return _encoder.encode(
        {
            "pricebook": book,
            "last": mid,
            "mid_market": mid,
            "spread_bps": spread_bps,
            "spread_absolute": spread,
        }
    )


def rest_error_body(error: str, message: str) -> bytes:
    """A REST error body: ``{"error":error,"error_details":message,"message":message}``."""
    return _encoder.encode({"error": error, "error_details": message, "message": message})


def error_frame(message: str) -> bytes:
    return _encoder.encode({"type": "error", "message": message})


class _Request(msgspec.Struct):
    type: str
    channel: str = ""
    product_ids: list[str] | None = None
    jwt: str | None = None


_request_decoder: Final = msgspec.json.Decoder(_Request)


class CoinbaseProtocol(VenueProtocol):
    """Coinbase Advanced Trade ``level2`` + ``market_trades`` + ``heartbeats``."""

    name = "coinbase"
    path = PATH

    def __init__(self, price_decimals: int = 2, *, rest: bool = True) -> None:
        super().__init__()
        self._pd = price_decimals
        self.rest_path = coinbase.PRODUCT_BOOK_PATH if rest else None
        self.stream_shape = STREAM_SHAPE
        self.rest_shape = REST_SHAPE

    def format_level(self, symbol: str, level: Level) -> Level:
        return fixed(level[0], self._pd), trim(level[1])

    def _frame(self, state: ConnState, head: bytes, tail: bytes) -> bytes:
        frame = stamp(head, tail, state.seq)
        state.seq += 1
        return frame

    def _subscriptions(self, state: ConnState, now_ns: int) -> bytes:
        subs: dict[str, list[str]] = {}
        for key in sorted(state.subs):
            channel, _, product = key.partition(":")
            subs.setdefault(channel, []).append(product)
        head, tail = envelope_parts("subscriptions", iso_time(now_ns), [{"subscriptions": subs}])
        return self._frame(state, head, tail)

    def on_message(self, state: ConnState, message: str | bytes, now_ns: int) -> list[bytes]:
        try:
            request = _request_decoder.decode(message)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return [error_frame("failure to parse message")]
        if request.type not in ("subscribe", "unsubscribe"):
            return [error_frame(f"unknown message type {request.type!r}")]
        if request.channel not in coinbase.CHANNELS:
            return [error_frame(f"channel {request.channel!r} is not supported")]
        products = request.product_ids
        if products is None:
            if request.type == "subscribe":
                return [error_frame("product_ids is required")]
            products = [k.partition(":")[2] for k in state.subs if k.startswith(request.channel)]
        unknown = [p for p in products if p not in self.procs]
        if unknown:
            return [error_frame(f"Failed to subscribe: unknown product_ids {unknown}")]
        out: list[bytes] = []
        when = iso_time(now_ns)
        for product in products:
            key = f"{request.channel}:{product}"
            fresh = state.update_subscription(key, request.type != "unsubscribe")
            if fresh and request.channel == coinbase.LEVEL2_CHANNEL:
                bids, asks = self.wire_book(product)
                event = l2_event("snapshot", product, bids, asks, when)
                out.append(self._frame(state, *envelope_parts("l2_data", when, [event])))
        out.append(self._subscriptions(state, now_ns))
        return out

    def rest_response(self, query: Mapping[str, str], now_ns: int) -> RestAnswer:
        product = query.get("product_id", "")
        if not product:
            return RestAnswer(400, rest_error_body("INVALID_ARGUMENT", "product_id is required"))
        if product not in self.procs:
            return RestAnswer(
                404, rest_error_body("NOT_FOUND", f"ProductID {product} could not be found")
            )
        limit_text = query.get("limit", "0") or "0"
        limit = query_int(limit_text, 9)
        if limit is None:
            return RestAnswer(
                400, rest_error_body("INVALID_ARGUMENT", f"invalid limit {limit_text[:20]!r}")
            )
        book = self.procs[product].book
        bids = [(trim(p), trim(q)) for p, q in book.bids(limit or None)]
        asks = [(trim(p), trim(q)) for p, q in book.asks(limit or None)]
        return RestAnswer(200, product_book_body(product, bids, asks, iso_time(now_ns)))

    def on_batch(self, symbol: str, batch: Batch, now_ns: int) -> list[Publication]:
        when = iso_time(now_ns)
        pubs: list[Publication] = []
        if batch.trades:
            trades = self.wire_trades(symbol, batch.trades)
            head, tail = envelope_parts(
                coinbase.TRADES_CHANNEL, when, [trades_event(symbol, trades, when)]
            )
            pubs.append(Publication(f"{coinbase.TRADES_CHANNEL}:{symbol}", head, tail))
        bids, asks = self.wire_levels(symbol, batch.bids, batch.asks)
        event = l2_event("update", symbol, bids, asks, when)
        head, tail = envelope_parts("l2_data", when, [event])
        pubs.append(Publication(f"{coinbase.LEVEL2_CHANNEL}:{symbol}", head, tail))
        return pubs

    def on_heartbeat(self, now_ns: int) -> list[Publication]:
        return [Publication(HEARTBEATS_KEY, iso_time(now_ns).encode())]

    def frame_for(self, state: ConnState, pub: Publication) -> bytes | None:
        if pub.key == HEARTBEATS_KEY:
            if not any(k.startswith(HEARTBEATS_KEY + ":") for k in state.subs):
                return None
            counter = state.extra.get("heartbeat_counter", 0)
            assert isinstance(counter, int)
            state.extra["heartbeat_counter"] = counter + 1
            when = pub.frame.decode()
            event: Mapping[str, Any] = {"current_time": when, "heartbeat_counter": counter + 1}
            head, tail = envelope_parts(HEARTBEATS_KEY, when, [event])
            return self._frame(state, head, tail)
        if pub.key not in state.subs:
            return None
        return self._frame(state, pub.frame, pub.tail)
