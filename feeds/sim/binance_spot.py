"""Binance spot wire format, rendered: the exact bytes the venue sends.

Pure: takes values, returns bytes; no I/O. Output is compact JSON (no spaces) with the
venue's key order, so a frame from a combined stream starts with ``{"stream":`` exactly as
Binance's does (``feeds.binance.parse`` relies on that prefix). :mod:`feeds.binance` parses
every frame rendered here back to the same ids, levels and trades.

Stream names are lower case (``btcusdt@depth@100ms``, ``btcusdt@trade``); the ``s`` field
of an event is the upper-case symbol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from feeds.binance import DEPTH_SUFFIX, TRADE_SUFFIX
from feeds.sim.book_process import Batch, SimTrade
from gateway.core.model import Level

SHUTDOWN_STREAM: Final = "!serverShutdown"


def depth_stream(symbol: str) -> str:
    """``btcusdt@depth@100ms`` for ``BTCUSDT``."""
    return symbol.lower() + DEPTH_SUFFIX


def trade_stream(symbol: str) -> str:
    """``btcusdt@trade`` for ``BTCUSDT``."""
    return symbol.lower() + TRADE_SUFFIX


# --- wire structs: field order is the venue's key order ------------------------------------


class _DepthUpdate(msgspec.Struct):
    e: str
    E: int
    s: str
    U: int
    u: int
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


class _Shutdown(msgspec.Struct):
    e: str
    E: int


class _Combined(msgspec.Struct):
    stream: str
    data: _DepthUpdate | _Trade | _Shutdown


class _RestDepth(msgspec.Struct):
    lastUpdateId: int
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
) -> bytes:
    """A combined-stream ``depthUpdate`` frame on ``<symbol>@depth@100ms``."""
    data = _DepthUpdate(
        e="depthUpdate", E=event_ms, s=symbol.upper(), U=first_id, u=last_id, b=bids, a=asks
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


def shutdown_frame(event_ms: int) -> bytes:
    """The combined-stream ``serverShutdown`` notice: the client should reconnect soon."""
    data = _Shutdown(e="serverShutdown", E=event_ms)
    return _encoder.encode(_Combined(stream=SHUTDOWN_STREAM, data=data))


def snapshot_body(last_id: int, bids: Sequence[Level], asks: Sequence[Level]) -> bytes:
    """The REST ``GET /api/v3/depth`` response body."""
    return _encoder.encode(_RestDepth(lastUpdateId=last_id, bids=bids, asks=asks))


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
