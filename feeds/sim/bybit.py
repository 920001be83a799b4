"""A simulated Bybit v5 public endpoint (spot or linear): ``orderbook.{depth}`` and
``publicTrade``, wire-exact.

Renderer (pure functions) and :class:`BybitProtocol` for :class:`feeds.sim.simulators.SimVenue`;
:class:`~feeds.sim.simulators.SimBybit` is the venue ready to serve, on ``/v5/public/spot`` or
``/v5/public/linear`` (its ``category``; other paths: HTTP 404).

Client messages: ``{"req_id":..,"op":"subscribe","args":["orderbook.50.BTCUSDT",
"publicTrade.BTCUSDT"]}`` gets one ack (spot: ``ret_msg`` "subscribe"; linear: "") and then
a ``snapshot`` per book topic; ``unsubscribe`` gets an ack (subscribing again sends a fresh
snapshot); ``{"op":"ping"}`` gets the pong of the category. An unknown topic fails the
whole request (``"success":false``).

Book topics, per (symbol, depth) in 1, 50, 200, 1000, rendered once per venue: ``u`` grows
by exactly 1 per push of the topic (the same on every connection), ``seq`` is the book
process id (a cross sequence: increasing, not consecutive). A delta carries the levels of
the new top ``depth`` that are new or changed and a ``"0"`` for every level that left the
top ``depth`` (deleted or pushed deeper), so the client needs no truncation. Depth 1 is
snapshot-only, as on Bybit (pushed when the top changes; the 3 s re-push is not
simulated). Prices carry the tick's decimals, sizes the lot's. ``publicTrade`` ids are
decimal on spot and UUIDs on linear.

REST (on :attr:`~feeds.sim.simulators.SimVenue.rest_url`): ``GET /v5/market/orderbook?category=
&symbol=&limit=`` answers ``{"retCode":0,"retMsg":"OK","result":{"s","b","a","ts","u",
"seq","cts"},"retExtInfo":{},"time"}`` with the current top ``limit`` levels per side
(1..1000; default 1 on spot, 25 on linear), ``seq`` the book process id. Bybit does not
document how the REST ``u`` relates to a topic's ``u`` (the gateway does not link them);
the simulator's choice: ``u`` is the current ``u`` of the symbol's smallest book depth
ever subscribed (:meth:`BybitProtocol.last_id`), else of ``orderbook.200``, which the
first such request starts tracking (at :data:`FIRST_U`; a later subscribe to it goes on
from there). Errors are HTTP 200 with ``retCode`` 10001 (params error: unknown category
or symbol, a category other than the simulated one, ``limit`` out of range; the exact
``retMsg`` texts are not verified). Not simulated: ``u == 1`` service restarts (the
``restart`` fault of :mod:`feeds.sim.faults` restarts ids low, not at 1), option/inverse
categories, the 1000 market-data connections per IP, RPI orders. The limits that are
simulated (500 connections per 5 minutes, 21,000 argument characters per connection, 600
REST requests per 5 s per address) are :mod:`feeds.sim.limits`'.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Final

import msgspec

from feeds import bybit
from feeds.sim.book_process import Batch
from feeds.sim.book_process import SimTrade
from feeds.sim.connection import ConnState
from feeds.sim.connection import Publication
from feeds.sim.connection import RestAnswer
from feeds.sim.numbers import fixed
from feeds.sim.rewrite import WireShape
from feeds.sim.venue import VenueProtocol
from feeds.sim.venue import query_int
from gateway.core.model import Level

CATEGORIES: Final = ("spot", "linear")
#: The first ``u`` of every book topic.
FIRST_U: Final = 18_521_288
#: The book depth whose ``u`` a REST book carries when the symbol has no subscribed depth.
REST_U_DEPTH: Final = 200
#: Default REST ``limit`` per category.
REST_DEFAULT_LIMIT: Final = {"spot": 1, "linear": 25}
_BYBIT_CATEGORIES: Final = frozenset({"spot", "linear", "inverse", "option"})
#: Where ``orderbook`` pushes and REST books carry ids and levels
#: (:mod:`feeds.sim.rewrite`): ``seq`` (the cross sequence), then ``u``.
STREAM_SHAPE: Final = WireShape(
    sides=((("data", "b"), "bid"), (("data", "a"), "ask")),
    ids=((("data", "seq"), "seq"), (("data", "u"), "u")),
    symbol=("data", "s"),
)
REST_SHAPE: Final = WireShape(
    sides=((("result", "b"), "bid"), (("result", "a"), "ask")),
    ids=((("result", "seq"), "seq"), (("result", "u"), "u")),
    symbol_param="symbol",
)

_encoder: Final = msgspec.json.Encoder()


def book_frame(
    topic: str,
    kind: str,
    symbol: str,
    bids: Sequence[Level],
    asks: Sequence[Level],
    u: int,
    seq: int,
    ts_ms: int,
) -> bytes:
    """An ``orderbook`` push of ``kind`` ``snapshot`` or ``delta``."""
    data = {"s": symbol, "b": [list(lv) for lv in bids], "a": [list(lv) for lv in asks]}
    data_any: dict[str, Any] = {**data, "u": u, "seq": seq}
    return _encoder.encode(
        {"topic": topic, "type": kind, "ts": ts_ms, "data": data_any, "cts": ts_ms - 2}
    )


def rest_book_body(
    symbol: str, bids: Sequence[Level], asks: Sequence[Level], u: int, seq: int, ts_ms: int
) -> bytes:
    """A ``/v5/market/orderbook`` success body."""
    result: dict[str, Any] = {
        "s": symbol,
        "b": [list(lv) for lv in bids],
        "a": [list(lv) for lv in asks],
        "ts": ts_ms,
        "u": u,
        "seq": seq,
        "cts": ts_ms - 2,
    }
    return _encoder.encode(
        {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": ts_ms}
    )


def rest_error_body(ret_code: int, msg: str, ts_ms: int) -> bytes:
    """A REST error body (``result`` ``{}``)."""
    return _encoder.encode(
        {"retCode": ret_code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": ts_ms}
    )


def trade_frame(
    category: str, symbol: str, trades: Sequence[tuple[SimTrade, Level]], ts_ms: int
) -> bytes:
    """A ``publicTrade`` push; ``S`` is the taker's side."""
    data = [
        {
            "T": ts_ms,
            "s": symbol,
            "S": "Sell" if t.buyer_is_maker else "Buy",
            "v": qty,
            "p": px,
            "L": "ZeroPlusTick",
            "i": trade_id_text(category, symbol, t.trade_id),
            "BT": False,
        }
        for t, (px, qty) in trades
    ]
    return _encoder.encode(
        {"topic": bybit.trade_topic(symbol), "type": "snapshot", "ts": ts_ms, "data": data}
    )


def trade_id_text(category: str, symbol: str, trade_id: int) -> str:
    """Spot trade ids are decimal; linear ones are UUIDs (derived from the id, seeded)."""
    if category == "spot":
        return str(trade_id)
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{symbol}:{trade_id}"))


def reply_frame(
    category: str, op: str, req_id: str, conn_id: str, success: bool = True, msg: str = ""
) -> bytes:
    """The reply to ``op`` (subscribe, unsubscribe, ping) as the category sends it."""
    if success and op == "ping":
        msg = "pong"
    elif success and category == "spot":
        msg = op
    body = {"success": success, "ret_msg": msg, "conn_id": conn_id, "req_id": req_id, "op": op}
    return _encoder.encode(body)


class _Request(msgspec.Struct):
    op: str
    args: list[str] = []
    req_id: str = ""


_request_decoder: Final = msgspec.json.Decoder(_Request)


class BybitProtocol(VenueProtocol):
    """Bybit v5 public ``orderbook`` + ``publicTrade`` of one category."""

    name = "bybit"
    path: str
    rest_path = bybit.SNAPSHOT_PATH
    stream_shape = STREAM_SHAPE
    rest_shape = REST_SHAPE

    def __init__(
        self, category: str = "spot", price_decimals: int = 2, qty_decimals: int = 5
    ) -> None:
        super().__init__()
        if category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
        self.category = category
        self.path = f"/v5/public/{category}"
        self._pd = price_decimals
        self._qd = qty_decimals
        #: Per (symbol, depth): the top-depth view last pushed and the topic's last ``u``.
        self._views: dict[tuple[str, int], tuple[dict[str, str], dict[str, str]]] = {}
        self._u: dict[tuple[str, int], int] = {}
        self._conns = 0

    def format_level(self, symbol: str, level: Level) -> Level:
        return fixed(level[0], self._pd), fixed(level[1], self._qd)

    def last_id(self, symbol: str) -> int | None:
        """The ``u`` of the symbol's smallest subscribed book depth (None: none yet)."""
        for (s, _), u in sorted(self._u.items()):
            if s == symbol:
                return u
        return None

    def u(self, symbol: str, depth: int) -> int | None:
        """The last ``u`` of ``orderbook.{depth}.{symbol}`` (None: never subscribed)."""
        return self._u.get((symbol, depth))

    def on_open(self, state: ConnState) -> list[bytes]:
        self._conns += 1
        state.extra["conn_id"] = f"sim{self._conns:05d}-{self.category}"
        return []

    def _view(self, symbol: str, depth: int) -> tuple[dict[str, str], dict[str, str]]:
        bids, asks = self.wire_book(symbol, depth)
        return dict(bids), dict(asks)

    def _track(self, symbol: str, depth: int) -> None:
        if (symbol, depth) not in self._views:
            self._views[(symbol, depth)] = self._view(symbol, depth)
            self._u[(symbol, depth)] = FIRST_U

    def _topic(self, topic: str) -> tuple[str, int] | None:
        """``(symbol, depth)`` of a book topic, ``(symbol, 0)`` of a trade topic."""
        parts = topic.split(".")
        if len(parts) == 3 and parts[0] == "orderbook" and parts[1].isdigit():
            depth = int(parts[1])
            if depth in bybit.BOOK_DEPTHS and parts[2] in self.procs:
                return parts[2], depth
        if len(parts) == 2 and parts[0] == "publicTrade" and parts[1] in self.procs:
            return parts[1], 0
        return None

    def on_message(self, state: ConnState, message: str | bytes, now_ns: int) -> list[bytes]:
        conn_id = str(state.extra.get("conn_id", ""))
        try:
            request = _request_decoder.decode(message)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return [reply_frame(self.category, "", "", conn_id, False, "Invalid json")]
        op = request.op
        if op == "ping":
            return [reply_frame(self.category, op, request.req_id, conn_id)]
        if op not in ("subscribe", "unsubscribe"):
            return [reply_frame(self.category, op, request.req_id, conn_id, False, "Invalid op")]
        parsed = [self._topic(topic) for topic in request.args]
        bad = [topic for topic, p in zip(request.args, parsed, strict=True) if p is None]
        if bad:
            msg = f"Invalid topic: {bad[0]}" if op == "subscribe" else f"Not subscribed: {bad[0]}"
            return [reply_frame(self.category, op, request.req_id, conn_id, False, msg)]
        out = [reply_frame(self.category, op, request.req_id, conn_id)]
        ts_ms = now_ns // 1_000_000
        for topic, p in zip(request.args, parsed, strict=True):
            assert p is not None
            fresh = state.update_subscription(topic, op != "unsubscribe")
            if op == "unsubscribe":
                continue
            symbol, depth = p
            if depth and fresh:
                self._track(symbol, depth)
                bids, asks = self._views[(symbol, depth)]
                seq = self.procs[symbol].last_id
                u = self._u[(symbol, depth)]
                out.append(
                    book_frame(
                        topic, "snapshot", symbol, list(bids.items()), list(asks.items()), u,
                        seq, ts_ms,
                    )
                )  # fmt: skip
        return out

    def rest_u(self, symbol: str) -> int:
        """The ``u`` of a REST book of ``symbol``: see the module docstring."""
        u = self.last_id(symbol)
        if u is None:
            self._track(symbol, REST_U_DEPTH)
            u = self._u[(symbol, REST_U_DEPTH)]
        return u

    def rest_response(self, query: Mapping[str, str], now_ns: int) -> RestAnswer:
        ts_ms = now_ns // 1_000_000
        category = query.get("category", "")
        if category not in _BYBIT_CATEGORIES:
            return RestAnswer(200, rest_error_body(10001, "Illegal category", ts_ms))
        symbol = query.get("symbol", "")
        if category != self.category or symbol not in self.procs:
            return RestAnswer(200, rest_error_body(10001, "params error: symbol invalid", ts_ms))
        limit = query_int(query.get("limit", str(REST_DEFAULT_LIMIT[self.category])), 6)
        if limit is None or not 1 <= limit <= bybit.MAX_SNAPSHOT_LIMIT:
            return RestAnswer(200, rest_error_body(10001, "params error: limit invalid", ts_ms))
        bids, asks = self.wire_book(symbol, limit)
        u = self.rest_u(symbol)
        return RestAnswer(
            200, rest_book_body(symbol, bids, asks, u, self.procs[symbol].last_id, ts_ms)
        )

    def on_batch(self, symbol: str, batch: Batch, now_ns: int) -> list[Publication]:
        ts_ms = now_ns // 1_000_000
        pubs: list[Publication] = []
        if batch.trades:
            trades = self.wire_trades(symbol, batch.trades)
            frame = trade_frame(self.category, symbol, trades, ts_ms)
            pubs.append(Publication(bybit.trade_topic(symbol), frame))
        for key, (old_bids, old_asks) in list(self._views.items()):
            if key[0] != symbol:
                continue
            depth = key[1]
            new_bids, new_asks = self._view(symbol, depth)
            self._views[key] = (new_bids, new_asks)
            if depth == 1:
                if (new_bids, new_asks) == (old_bids, old_asks):
                    continue
                kind, bids, asks = "snapshot", list(new_bids.items()), list(new_asks.items())
            else:
                kind, bids, asks = "delta", _delta(old_bids, new_bids), _delta(old_asks, new_asks)
                if not bids and not asks:
                    continue
            self._u[key] += 1
            topic = bybit.book_topic(symbol, depth)
            frame = book_frame(topic, kind, symbol, bids, asks, self._u[key], batch.last_id, ts_ms)
            pubs.append(Publication(topic, frame))
        return pubs


def _delta(old: dict[str, str], new: dict[str, str]) -> list[Level]:
    levels = [(p, q) for p, q in new.items() if old.get(p) != q]
    levels += [(p, "0") for p in old if p not in new]
    return levels
