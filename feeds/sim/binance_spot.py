"""A simulated Binance spot venue: its wire format, rendered, and :class:`BinanceSpotProtocol`
for :class:`feeds.sim.simulators.SimVenue` (:class:`~feeds.sim.simulators.SimBinanceSpot`
is the venue ready to serve).

Pure: takes values, returns bytes; no I/O, no clock. Output is compact JSON (no spaces)
with the venue's key order, so a frame from a combined stream starts with ``{"stream":``
exactly as Binance's does (``feeds.binance.parse`` relies on that prefix).
:mod:`feeds.binance` parses every frame rendered here back to the same ids, levels and
trades.

Stream names are lower case (``btcusdt@depth@100ms``, ``btcusdt@trade``); the ``s`` field
of an event is the upper-case symbol.

WebSocket endpoints serve combined streams only: ``/stream?streams=a@depth@100ms/a@trade``
(any other path gets HTTP 404). Simulated streams are ``<symbol>@depth@100ms`` and
``<symbol>@trade`` of the configured symbols, lower case; any other stream name in the URL
closes the connection with code 1008 and a reason naming the stream. Live requests
``SUBSCRIBE``, ``UNSUBSCRIBE`` (reply ``{"result":null,"id":N}``) and
``LIST_SUBSCRIPTIONS`` are answered; an unknown stream or method gets ``{"code":2,...}``,
malformed JSON ``{"code":3,...}``. More than ``max_incoming_per_s`` client messages within
one second close the connection with code 1008 (Binance allows 5), and so do more than
``max_streams`` streams in the URL: the protocol's :attr:`~feeds.sim.venue.VenueProtocol.limiter`
(:mod:`feeds.sim.limits`), applied by the shell, counts them. Each step's trades and
depth diff are rendered once. The ``notice`` is ``serverShutdown``.

REST: ``GET /api/v3/depth?symbol=BTCUSDT&limit=N`` returns the book as of the moment the
request arrived (the simulator may deliver it later, stale on arrival like a real one).
``limit`` defaults to 100 and is clamped to 1..5000. Errors carry Binance bodies: 400
``{"code":-1121,"msg":"Invalid symbol."}``, 400 ``-1102`` for a missing symbol, 400
``-1100`` for a non-numeric limit, 429 ``-1003`` with ``Retry-After`` once the request
weight of the last 60 s would exceed ``rest_weight_limit_1m`` (None: no limit), then 418
for an address that asks again before that ``Retry-After`` (the limiter's ban). Every
answer carries ``X-MBX-USED-WEIGHT-1M``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from typing import Final
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import msgspec

from feeds import binance
from feeds.binance import MAX_SNAPSHOT_LIMIT
from feeds.binance import SNAPSHOT_PATH
from feeds.binance import depth_stream
from feeds.binance import snapshot_weight
from feeds.binance import trade_stream
from feeds.sim.book_process import Batch
from feeds.sim.book_process import BookProcess
from feeds.sim.book_process import SimTrade
from feeds.sim.connection import CloseConnection
from feeds.sim.connection import ConnState
from feeds.sim.connection import Publication
from feeds.sim.connection import RestAnswer
from feeds.sim.limits import REST_SOURCE
from feeds.sim.rewrite import WireShape
from feeds.sim.venue import VenueProtocol
from feeds.sim.venue import query_int
from gateway.core.model import Level

#: Binance's cap on streams per connection.
MAX_STREAMS_PER_CONNECTION: Final = 1024
#: WebSocket close code of a policy violation (bad stream, message flood).
POLICY_VIOLATION: Final = 1008
#: Content type of Binance's JSON answers.
CONTENT_TYPE: Final = "application/json;charset=UTF-8"
_REST_WINDOW_NS: Final = 60 * 1_000_000_000
_SECOND_NS: Final = 1_000_000_000
#: Where depth events and REST books carry ids and levels (:mod:`feeds.sim.rewrite`).
STREAM_SHAPE: Final = WireShape(
    sides=((("data", "b"), "bid"), (("data", "a"), "ask")),
    ids=((("data", "U"), "id"), (("data", "u"), "id")),
    symbol=("data", "s"),
)
REST_SHAPE: Final = WireShape(
    sides=((("bids",), "bid"), (("asks",), "ask")),
    ids=((("lastUpdateId",), "id"),),
    symbol_param="symbol",
)


# --- wire structs: field order is the venue's key order ------------------------------------


class _DepthUpdate(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Spot's ``depthUpdate``; futures events also carry ``T`` and ``pu``, COIN-M's ``ps``."""

    e: str
    E: int
    T: int | None = None
    s: str
    ps: str | None = None
    U: int
    u: int
    pu: int | None = None
    b: Sequence[Level]
    a: Sequence[Level]


class _Trade(msgspec.Struct):
    e: str
    E: int
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool
    M: bool


class _Combined(msgspec.Struct):
    stream: str
    data: _DepthUpdate | _Trade


class _RestDepth(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Spot's depth body; futures bodies also carry ``E`` and ``T``, COIN-M's ``symbol``
    and ``pair``."""

    lastUpdateId: int
    symbol: str | None = None
    pair: str | None = None
    E: int | None = None
    T: int | None = None
    bids: Sequence[Level]
    asks: Sequence[Level]


class _Result(msgspec.Struct):
    result: list[str] | None
    id: int | str | None


class _Error(msgspec.Struct):
    code: int
    msg: str
    id: int | str | None = None


class _RestError(msgspec.Struct):
    code: int
    msg: str


_encoder: Final = msgspec.json.Encoder()


def depth_frame(
    symbol: str,
    first_id: int,
    last_id: int,
    bids: Sequence[Level],
    asks: Sequence[Level],
    event_ms: int,
    *,
    prev_id: int | None = None,
    transaction_ms: int | None = None,
    pair: str | None = None,
) -> bytes:
    """A combined-stream ``depthUpdate`` frame on ``<symbol>@depth@100ms``; a futures
    event also carries ``prev_id`` (``pu``) and ``transaction_ms`` (``T``), a COIN-M one
    its ``pair`` (``ps``)."""
    data = _DepthUpdate(
        e="depthUpdate",
        E=event_ms,
        T=transaction_ms,
        s=symbol.upper(),
        ps=pair,
        U=first_id,
        u=last_id,
        pu=prev_id,
        b=bids,
        a=asks,
    )
    return _encoder.encode(_Combined(stream=depth_stream(symbol), data=data))


def batch_frame(batch: Batch, event_ms: int) -> bytes:
    """:func:`depth_frame` of a :class:`~feeds.sim.book_process.Batch`."""
    return depth_frame(
        batch.symbol, batch.first_id, batch.last_id, batch.bids, batch.asks, event_ms
    )


def trade_frame(symbol: str, trade: SimTrade, event_ms: int, trade_ms: int | None = None) -> bytes:
    """A combined-stream ``trade`` frame on ``<symbol>@trade``; ``T`` defaults to ``E``."""
    data = _Trade(
        e="trade",
        E=event_ms,
        s=symbol.upper(),
        t=trade.trade_id,
        p=trade.price,
        q=trade.qty,
        T=event_ms if trade_ms is None else trade_ms,
        m=trade.buyer_is_maker,
        M=True,
    )
    return _encoder.encode(_Combined(stream=trade_stream(symbol), data=data))


def snapshot_body(
    last_id: int,
    bids: Sequence[Level],
    asks: Sequence[Level],
    *,
    event_ms: int | None = None,
    transaction_ms: int | None = None,
    symbol: str | None = None,
    pair: str | None = None,
) -> bytes:
    """The REST ``GET /api/v3/depth`` response body; a futures body also carries
    ``event_ms`` (``E``) and ``transaction_ms`` (``T``), a COIN-M one the ``symbol`` and
    its ``pair``."""
    return _encoder.encode(
        _RestDepth(
            lastUpdateId=last_id,
            symbol=symbol,
            pair=pair,
            E=event_ms,
            T=transaction_ms,
            bids=bids,
            asks=asks,
        )
    )


def result_frame(request_id: int | str | None, result: list[str] | None = None) -> bytes:
    """The reply to a live request: ``{"result":null,"id":N}`` for SUBSCRIBE/UNSUBSCRIBE,
    the stream list for LIST_SUBSCRIPTIONS."""
    return _encoder.encode(_Result(result=result, id=request_id))


def error_frame(code: int, msg: str, request_id: int | str | None = None) -> bytes:
    """A WebSocket request error, e.g. ``{"code":2,"msg":"Invalid request: ...","id":1}``."""
    return _encoder.encode(_Error(code=code, msg=msg, id=request_id))


def rest_error_body(code: int, msg: str) -> bytes:
    """A REST error body, e.g. ``{"code":-1121,"msg":"Invalid symbol."}``."""
    return _encoder.encode(_RestError(code=code, msg=msg))


# --- the venue protocol ---------------------------------------------------------------------


class _Request(msgspec.Struct):
    method: str
    params: list[str] | None = None
    id: int | str | None = None


_request_decoder: Final = msgspec.json.Decoder(_Request)


class BinanceSpotProtocol(VenueProtocol):
    """Binance spot combined streams, live requests and the REST depth endpoint; see the
    module docstring. Symbols are upper case.

    Args:
        max_incoming_per_s: client messages allowed per second (None: unlimited).
        rest_weight_limit_1m: REST request weight per 60 s before 429 (None: unlimited).
    """

    name = "binance-spot"
    rest_path = SNAPSHOT_PATH
    stream_shape = STREAM_SHAPE
    rest_shape = REST_SHAPE
    #: The only WebSocket path served (combined streams).
    stream_path = "/stream"
    #: The venue's cap on streams per connection.
    max_streams = MAX_STREAMS_PER_CONNECTION
    #: The REST ``limit`` when none is given.
    default_limit = "100"

    def __init__(
        self, max_incoming_per_s: int | None = 5, rest_weight_limit_1m: int | None = 6000
    ) -> None:
        super().__init__()
        self.limiter.limits = replace(
            self.limiter.limits, messages_per_s=max_incoming_per_s, max_streams=self.max_streams
        )
        self._rest_weight_limit = rest_weight_limit_1m
        #: ``(now_ns, weight)`` of the REST requests of the last 60 s, oldest first.
        self._rest_weights: deque[tuple[int, int]] = deque()
        #: Stream name -> symbol, for every simulated stream.
        self._stream_symbols: dict[str, str] = {}
        #: Answers served, by HTTP status (rate-limited ones are 429).
        self.rest_statuses: dict[int, int] = {}

    def attach(self, procs: Mapping[str, BookProcess]) -> None:
        super().attach(procs)
        self._stream_symbols = {}
        for sym in procs:
            self._stream_symbols[depth_stream(sym)] = sym
            self._stream_symbols[trade_stream(sym)] = sym

    # --- WebSocket ------------------------------------------------------------------------

    def check_path(self, path: str) -> str | None:
        if urlsplit(path).path != self.stream_path:
            return f"Only combined streams are simulated: {self.stream_path}?streams=...\n"
        return None

    def on_open(self, state: ConnState) -> list[bytes]:
        streams, error = self.url_streams(state.path)
        if error is not None:
            raise CloseConnection(POLICY_VIOLATION, error)
        state.subs = streams
        return []

    def url_streams(self, path: str) -> tuple[set[str], str | None]:
        """The streams named in ``/stream?streams=a/b``, or an error close reason."""
        query = parse_qs(urlsplit(path).query)
        names = [name for value in query.get("streams", []) for name in value.split("/") if name]
        for name in names:
            problem = self.stream_problem(name)
            if problem is not None:
                return set(), problem
        return set(names), None

    def stream_problem(self, name: str) -> str | None:
        """Why stream ``name`` cannot be subscribed; None when it can."""
        if name in self._stream_symbols:
            return None
        if name.partition("@")[0].upper() in self.procs and name == name.lower():
            return f"Stream not simulated: {name}"
        return f"Invalid stream name (unknown symbol): {name}"

    def on_message(self, state: ConnState, message: str | bytes, now_ns: int) -> list[bytes]:
        return [self.control_reply(state, message)]

    def control_reply(self, state: ConnState, message: str | bytes) -> bytes:
        """The answer to one live request."""
        try:
            request = _request_decoder.decode(message)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return error_frame(3, f"Invalid JSON: {exc}")
        if request.method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            names = request.params or []
            for name in names:
                problem = self.stream_problem(name)
                if problem is not None:
                    return error_frame(2, f"Invalid request: {problem}", request.id)
            if request.method == "UNSUBSCRIBE":
                state.subs.difference_update(names)
            elif len(state.subs | set(names)) > self.max_streams:
                return error_frame(2, "Invalid request: too many streams", request.id)
            else:
                state.subs.update(names)
            return result_frame(request.id)
        if request.method == "LIST_SUBSCRIPTIONS":
            return result_frame(request.id, sorted(state.subs))
        return error_frame(2, f"Invalid request: unknown method {request.method!r}", request.id)

    def on_batch(self, symbol: str, batch: Batch, now_ns: int) -> list[Publication]:
        event_ms = now_ns // 1_000_000
        stream = trade_stream(symbol)
        pubs = [Publication(stream, trade_frame(symbol, t, event_ms)) for t in batch.trades]
        pubs.append(Publication(depth_stream(symbol), batch_frame(batch, event_ms)))
        return pubs

    def last_id(self, symbol: str) -> int | None:
        return self.procs[symbol].last_id

    def notice_frame(self, now_ns: int) -> bytes | None:
        """Binance's ``serverShutdown``: the client should reconnect soon."""
        return binance.notice_frame(now_ns)

    # --- REST -----------------------------------------------------------------------------

    def snapshot(self, symbol: str, limit: int) -> tuple[int, list[Level], list[Level]]:
        """``(lastUpdateId, bids, asks)`` of ``symbol`` as the REST endpoint serves it."""
        return self.procs[symbol].snapshot(limit)

    def served_limit(self, limit: int, now_ns: int) -> int | RestAnswer:
        """The limit served, or the venue's error answer."""
        return min(max(limit, 1), MAX_SNAPSHOT_LIMIT)

    def snapshot_weight(self, limit: int) -> int:
        return snapshot_weight(limit)

    def snapshot_body(self, symbol: str, limit: int, now_ns: int) -> bytes:
        return snapshot_body(*self.snapshot(symbol, limit))

    def rest_response(self, query: Mapping[str, str], now_ns: int) -> RestAnswer:
        answer = self._rest_answer(query, now_ns)
        self.rest_statuses[answer.status] = self.rest_statuses.get(answer.status, 0) + 1
        return answer

    def _rest_answer(self, query: Mapping[str, str], now_ns: int) -> RestAnswer:
        symbol = query.get("symbol", "")
        if not symbol:
            return self.rest_error(
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                now_ns,
            )
        if symbol not in self.procs:
            return self.rest_error(-1121, "Invalid symbol.", now_ns)
        given = query_int(query.get("limit", self.default_limit), 20)
        if given is None:
            return self.rest_error(
                -1100,
                "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
                now_ns,
            )
        limit = self.served_limit(given, now_ns)
        if isinstance(limit, RestAnswer):
            return limit
        used = self._use_weight(self.snapshot_weight(limit), now_ns)
        if used is None:
            error = self.rest_error(
                -1003,
                "Too much request weight used; please use WebSocket Streams for live updates"
                " to avoid polling the API.",
                now_ns,
                429,
            )
            retry_after_s = _REST_WINDOW_NS // _SECOND_NS
            self.limiter.rest_refused(REST_SOURCE, retry_after_s, now_ns)
            retry = (("Retry-After", str(retry_after_s)),)
            return error._replace(headers=error.headers + retry)
        return self._json(200, self.snapshot_body(symbol, limit, now_ns), used)

    def _use_weight(self, weight: int, now_ns: int) -> int | None:
        """Record ``weight``; the weight used in the window, or None when over the limit."""
        used = self._used_weight(now_ns)
        if self._rest_weight_limit is not None and used + weight > self._rest_weight_limit:
            return None
        self._rest_weights.append((now_ns, weight))
        return used + weight

    def _used_weight(self, now_ns: int) -> int:
        weights = self._rest_weights
        while weights and weights[0][0] <= now_ns - _REST_WINDOW_NS:
            weights.popleft()
        return sum(w for _, w in weights)

    def rest_error(self, code: int, msg: str, now_ns: int, status: int = 400) -> RestAnswer:
        """A Binance error answer (with the weight used)."""
        return self._json(status, rest_error_body(code, msg), self._used_weight(now_ns))

    @staticmethod
    def _json(status: int, body: bytes, used_weight: int) -> RestAnswer:
        headers = (("X-MBX-USED-WEIGHT-1M", str(used_weight)),)
        return RestAnswer(status, body, headers, CONTENT_TYPE)
