"""A simulated OKX v5 public endpoint: the ``books`` and ``trades`` channels, wire-exact.

Renderer (pure functions: values in, bytes out) and :class:`OkxProtocol` for
:class:`feeds.sim.simulators.SimVenue`; :class:`~feeds.sim.simulators.SimOkx` is
the venue ready to serve.

Path ``/ws/v5/public`` (any other path: HTTP 404). Client messages:

- ``{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}, ...]}``: one
  ``{"event":"subscribe","arg":...,"connId":...}`` per arg (with the request's ``id`` when
  given), then for ``books`` the snapshot (whole book, ``prevSeqId`` -1, ``seqId`` = the
  current id, checksum). ``trades`` is supported too. An unknown ``instId`` or channel
  gets ``{"event":"error","code":"60018",...}``, malformed JSON ``60012``.
- ``unsubscribe``: ack; a later subscribe sends a fresh snapshot.
- the text ``ping``: the text ``pong``.

Updates are rendered once per venue, so every connection gets the same ids and
checksums: ``seqId`` is the BookProcess id after the step (it grows by the number of book
actions, so not by 1), ``prevSeqId`` the previous ``seqId``. Prices carry the tick's
decimals (``60000.01``), sizes have no trailing zeros (``0.0123``), a deletion is ``"0"``;
levels are ``[price, size, "0", orderCount]``. The checksum is
:func:`feeds.okx.checksum` of the top 25 wire strings.

REST (on :attr:`~feeds.sim.simulators.SimVenue.rest_url`): ``GET /api/v5/market/books?instId=
&sz=`` answers ``{"code":"0","msg":"","data":[{"asks","bids","ts","seqId"}]}`` with the
current top ``sz`` levels per side (default 1, at most 400) and, as in OKX's 2026
procedure, ``seqId`` = the ``seqId`` of the last update included (the last one rendered:
the book and the ids change together on the event loop). Errors come with HTTP 200 as
OKX sends its business errors: unknown ``instId`` ``51001`` "Instrument ID does not
exist", missing ``instId`` ``50014``, ``sz`` not in 1..400 ``51000`` "Parameter sz
error." (``data`` ``[]``; the HTTP status of the last two is not verified). Not
simulated: the 60 s empty keepalive update, sequence resets and the 64008 notice (only as
the ``restart`` and ``notice`` faults of :mod:`feeds.sim.faults`),
``books-full``, the REST book's 50 ms cache, login channels. The limits (3 connection
requests per second and 40 REST requests per 2 s per address) are :mod:`feeds.sim.limits`'.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Final

import msgspec

from feeds import okx
from feeds.sim.book_process import Batch
from feeds.sim.book_process import BookProcess
from feeds.sim.book_process import SimTrade
from feeds.sim.connection import ConnState
from feeds.sim.connection import Publication
from feeds.sim.connection import RestAnswer
from feeds.sim.numbers import fixed
from feeds.sim.numbers import trim
from feeds.sim.rewrite import WireShape
from feeds.sim.venue import VenueProtocol
from feeds.sim.venue import query_int
from gateway.core.model import Level

PATH: Final = "/ws/v5/public"
#: Levels per side in a ``books`` snapshot.
SNAPSHOT_DEPTH: Final = 400
#: Where ``books`` pushes and REST books carry ids and levels (:mod:`feeds.sim.rewrite`).
STREAM_SHAPE: Final = WireShape(
    sides=((("data", 0, "bids"), "bid"), (("data", 0, "asks"), "ask")),
    ids=((("data", 0, "prevSeqId"), "seq"), (("data", 0, "seqId"), "seq")),
    links=(("data", 0, "prevSeqId"),),
    symbol=("arg", "instId"),
)
REST_SHAPE: Final = WireShape(
    sides=((("data", 0, "bids"), "bid"), (("data", 0, "asks"), "ask")),
    ids=((("data", 0, "seqId"), "seq"),),
    symbol_param="instId",
)

_encoder: Final = msgspec.json.Encoder()


def _wire_levels(levels: Sequence[Level]) -> list[list[str]]:
    return [[p, q, "0", "0" if q == "0" else "1"] for p, q in levels]


def book_frame(
    inst_id: str,
    action: str,
    bids: Sequence[Level],
    asks: Sequence[Level],
    ts_ms: int,
    checksum: int,
    prev_seq_id: int,
    seq_id: int,
) -> bytes:
    """A ``books`` push (``action`` ``snapshot`` or ``update``) with wire-string levels."""
    data = {
        "asks": _wire_levels(asks),
        "bids": _wire_levels(bids),
        "ts": str(ts_ms),
        "checksum": checksum,
        "prevSeqId": prev_seq_id,
        "seqId": seq_id,
    }
    return _encoder.encode(
        {"arg": {"channel": okx.CHANNEL, "instId": inst_id}, "action": action, "data": [data]}
    )


def rest_books_body(bids: Sequence[Level], asks: Sequence[Level], ts_ms: int, seq_id: int) -> bytes:
    """A ``/api/v5/market/books`` success body with wire-string levels."""
    data = {
        "asks": _wire_levels(asks),
        "bids": _wire_levels(bids),
        "ts": str(ts_ms),
        "seqId": seq_id,
    }
    return _encoder.encode({"code": "0", "msg": "", "data": [data]})


def rest_error_body(code: str, msg: str) -> bytes:
    """A REST error body: ``{"code":code,"msg":msg,"data":[]}``."""
    return _encoder.encode({"code": code, "msg": msg, "data": []})


def trades_frame(inst_id: str, trades: Sequence[tuple[SimTrade, Level]], ts_ms: int) -> bytes:
    """A ``trades`` push; each trade with its ``(px, sz)`` wire strings."""
    data = [
        {
            "instId": inst_id,
            "tradeId": str(t.trade_id),
            "px": px,
            "sz": sz,
            "side": "sell" if t.buyer_is_maker else "buy",  # the taker's side
            "ts": str(ts_ms),
            "count": "1",
        }
        for t, (px, sz) in trades
    ]
    return _encoder.encode({"arg": {"channel": okx.TRADE_CHANNEL, "instId": inst_id}, "data": data})


def event_frame(event: str, arg: Mapping[str, str], conn_id: str, req_id: str | None) -> bytes:
    body: dict[str, Any] = {} if req_id is None else {"id": req_id}
    body.update(event=event, arg=dict(arg), connId=conn_id)
    return _encoder.encode(body)


def error_frame(code: str, msg: str, conn_id: str, req_id: str | None) -> bytes:
    body: dict[str, Any] = {} if req_id is None else {"id": req_id}
    body.update(event="error", code=code, msg=msg, connId=conn_id)
    return _encoder.encode(body)


class _Arg(msgspec.Struct):
    channel: str
    instId: str = ""


class _Request(msgspec.Struct):
    op: str
    args: list[_Arg] = []
    id: str | None = None


_request_decoder: Final = msgspec.json.Decoder(_Request)
_CHANNELS: Final = frozenset({okx.CHANNEL, okx.TRADE_CHANNEL})


class OkxProtocol(VenueProtocol):
    """OKX v5 public ``books`` + ``trades``; see the module docstring."""

    name = "okx"
    path = PATH
    rest_path = okx.SNAPSHOT_PATH
    stream_shape = STREAM_SHAPE
    rest_shape = REST_SHAPE

    def __init__(self, price_decimals: int = 2) -> None:
        super().__init__()
        self._price_decimals = price_decimals
        self._seq: dict[str, int] = {}
        self._conns = 0

    def attach(self, procs: Mapping[str, BookProcess]) -> None:
        super().attach(procs)
        self._seq = {symbol: proc.last_id for symbol, proc in procs.items()}

    def format_level(self, symbol: str, level: Level) -> Level:
        return fixed(level[0], self._price_decimals), trim(level[1])

    def last_id(self, symbol: str) -> int | None:
        return self._seq[symbol]

    def on_open(self, state: ConnState) -> list[bytes]:
        self._conns += 1
        state.extra["conn_id"] = f"{self._conns:08x}"
        return []

    def snapshot_frame(self, symbol: str, now_ns: int) -> bytes:
        bids, asks = self.wire_book(symbol, SNAPSHOT_DEPTH)
        crc = okx.checksum(bids[: okx.CHECKSUM_DEPTH], asks[: okx.CHECKSUM_DEPTH])
        return book_frame(
            symbol, "snapshot", bids, asks, now_ns // 1_000_000, crc, -1, self._seq[symbol]
        )

    def on_message(self, state: ConnState, message: str | bytes, now_ns: int) -> list[bytes]:
        conn_id = str(state.extra.get("conn_id", ""))
        if message in ("ping", b"ping"):
            return [b"pong"]
        try:
            request = _request_decoder.decode(message)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return [error_frame("60012", f"Invalid request: {message!r:.100}", conn_id, None)]
        if request.op not in ("subscribe", "unsubscribe"):
            return [error_frame("60012", f"Invalid request: op {request.op}", conn_id, request.id)]
        out: list[bytes] = []
        for arg in request.args:
            if arg.channel not in _CHANNELS or arg.instId not in self.procs:
                msg = f"Wrong URL or channel:{arg.channel},instId:{arg.instId} doesn't exist"
                out.append(error_frame("60018", msg, conn_id, request.id))
                continue
            key = f"{arg.channel}:{arg.instId}"
            wire_arg = {"channel": arg.channel, "instId": arg.instId}
            out.append(event_frame(request.op, wire_arg, conn_id, request.id))
            fresh = state.update_subscription(key, request.op != "unsubscribe")
            if fresh and arg.channel == okx.CHANNEL:
                out.append(self.snapshot_frame(arg.instId, now_ns))
        return out

    def rest_response(self, query: Mapping[str, str], now_ns: int) -> RestAnswer:
        inst_id = query.get("instId", "")
        if not inst_id:
            return RestAnswer(200, rest_error_body("50014", "Parameter instId can not be empty"))
        if inst_id not in self.procs:
            return RestAnswer(200, rest_error_body("51001", "Instrument ID does not exist"))
        sz = query_int(query.get("sz", "1"), 6)
        if sz is None or not 1 <= sz <= okx.MAX_SNAPSHOT_LIMIT:
            return RestAnswer(200, rest_error_body("51000", "Parameter sz error."))
        bids, asks = self.wire_book(inst_id, sz)
        return RestAnswer(200, rest_books_body(bids, asks, now_ns // 1_000_000, self._seq[inst_id]))

    def on_batch(self, symbol: str, batch: Batch, now_ns: int) -> list[Publication]:
        ts_ms = now_ns // 1_000_000
        pubs: list[Publication] = []
        if batch.trades:
            trades = self.wire_trades(symbol, batch.trades)
            pubs.append(Publication(f"trades:{symbol}", trades_frame(symbol, trades, ts_ms)))
        bids, asks = self.wire_levels(symbol, batch.bids, batch.asks)
        top_bids, top_asks = self.wire_book(symbol, okx.CHECKSUM_DEPTH)
        crc = okx.checksum(top_bids, top_asks)
        prev, self._seq[symbol] = self._seq[symbol], batch.last_id
        frame = book_frame(symbol, "update", bids, asks, ts_ms, crc, prev, batch.last_id)
        pubs.append(Publication(f"books:{symbol}", frame))
        return pubs

    def notice_frame(self, now_ns: int) -> bytes | None:
        """OKX's service-upgrade notice (code 64008), sent before a maintenance disconnect."""
        return okx.notice_frame(now_ns)
