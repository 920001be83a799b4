"""The books of a replay at its current position: the pure core behind the replay's REST
snapshots and in-band resubscribe answers (:mod:`feeds.sim.replay`).

No asyncio, websockets or socket. :class:`ReplayBooks` keeps a capture's records in
recorded order (each ``add`` returns the record's index) and rebuilds every book with the
gateway's own :class:`~gateway.core.pipeline.VenuePipeline`, one per venue, fed the records
with their receive times as the clock, as ``mdgateway verify`` feeds it. The replay's
position is a record count: :meth:`ReplayBooks.advance` feeds the records before it (a
position behind the one reached starts the rebuild over, as a looping replay does), at most
``budget`` at a time so that a shell can let other work run in between.

At a position, a book that is consistent (synced, not waiting for a snapshot) is answered
in the venue's own format, rendered by the simulators' venue renderers:

- REST (:meth:`ReplayBooks.rest_answer`): a request to a venue's depth snapshot path
  (``snapshot_paths`` of :data:`gateway.wire.venues.ADAPTERS`) for a symbol (``symbol`` or
  ``instId``) gets the book with its last update id: Binance spot ``lastUpdateId`` (limit
  default 100, at most 5000), USD-M ``lastUpdateId``/``E``/``T`` (default 500, at most
  1000), OKX ``seqId`` (``sz`` default 1, at most 400), Bybit ``u`` (``limit`` default 25,
  at most 1000). None when no consistent book answers: the caller serves what was recorded.
- In band (:meth:`ReplayBooks.in_band_answer`): an OKX ``books`` or Bybit ``orderbook.N``
  subscribe gets the venue's snapshot push (OKX: 400 levels per side, checksum,
  ``prevSeqId`` -1, ``seqId``; Bybit: ``N`` levels per side, ``u``).

Which venue a record belongs to, and how the records drive the pipelines, is
:mod:`gateway.capture.driver`'s (``verify``'s too): a record added with its venue
(:class:`Routed`, told by the caller's own :class:`~gateway.capture.driver.VenueRouter`, as
the replay tool does for captures replayed side by side) keeps it; any other is told by the
books' router, with ``default_venue`` as the default. Only the venues the replay answers
snapshots for are driven.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Final
from typing import NamedTuple
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

import msgspec

from feeds import bybit
from feeds import okx
from feeds.sim import binance_spot
from feeds.sim import binance_usdm
from feeds.sim import bybit as sim_bybit
from feeds.sim import coinbase as sim_coinbase
from feeds.sim import kraken as sim_kraken
from feeds.sim import okx as sim_okx
from feeds.sim.rewrite import WireShape
from gateway.capture import REST_SYMBOL_PARAMS
from gateway.capture import CaptureRecord
from gateway.capture.driver import RecordDriver
from gateway.capture.driver import VenueRouter
from gateway.capture.driver import venue_adapter
from gateway.core.model import SymbolState
from gateway.core.model import symbol_key
from gateway.core.pipeline import BookState
from gateway.wire.venues import ADAPTERS
from gateway.wire.venues import VenueAdapter

__all__ = ["STREAM_SHAPES", "ReplayBooks", "Routed", "request_op", "rest_shape"]

_any_decoder: Final = msgspec.json.Decoder()

#: Renders a REST depth answer: ``(symbol, book, query, now_ns) -> body``.
_RestRenderer = Callable[[str, BookState, Mapping[str, str], int], bytes]


def _limit(query: Mapping[str, str], name: str, default: int, most: int) -> int:
    text = query.get(name, "")
    value = int(text) if text.isascii() and text.isdigit() else default
    return min(max(value, 1), most)


def _binance_spot_rest(
    symbol: str, book: BookState, query: Mapping[str, str], now_ns: int
) -> bytes:
    limit = _limit(query, "limit", 100, 5000)
    return binance_spot.snapshot_body(book.venue_id, book.book.bids(limit), book.book.asks(limit))


def _binance_usdm_rest(
    symbol: str, book: BookState, query: Mapping[str, str], now_ns: int
) -> bytes:
    limit = _limit(query, "limit", 500, 1000)
    return binance_usdm.snapshot_body(
        book.venue_id, book.book.bids(limit), book.book.asks(limit), now_ns // 1_000_000
    )


def _okx_rest(symbol: str, book: BookState, query: Mapping[str, str], now_ns: int) -> bytes:
    size = _limit(query, "sz", 1, okx.MAX_SNAPSHOT_LIMIT)
    return sim_okx.rest_books_body(
        book.book.bids(size), book.book.asks(size), now_ns // 1_000_000, book.venue_id
    )


def _bybit_rest(symbol: str, book: BookState, query: Mapping[str, str], now_ns: int) -> bytes:
    limit = _limit(query, "limit", 25, bybit.MAX_SNAPSHOT_LIMIT)
    return sim_bybit.rest_book_body(
        symbol,
        book.book.bids(limit),
        book.book.asks(limit),
        book.venue_id,
        book.venue_id,
        now_ns // 1_000_000,
    )


_REST_RENDERERS: Final[Mapping[str, _RestRenderer]] = {
    "binance": _binance_spot_rest,
    "binance-usdm": _binance_usdm_rest,
    "okx": _okx_rest,
    bybit.SPOT: _bybit_rest,
    bybit.LINEAR: _bybit_rest,
}


def _okx_in_band(
    args: list[Any], books: Callable[[str], BookState | None], ts_ms: int
) -> list[bytes]:
    frames: list[bytes] = []
    for arg in args:
        if not isinstance(arg, dict) or arg.get("channel") != okx.CHANNEL:
            continue
        inst_id = str(arg.get("instId", ""))
        book = books(inst_id)
        if book is None:
            continue
        bids = book.book.bids(sim_okx.SNAPSHOT_DEPTH)
        asks = book.book.asks(sim_okx.SNAPSHOT_DEPTH)
        crc = okx.checksum(bids[: okx.CHECKSUM_DEPTH], asks[: okx.CHECKSUM_DEPTH])
        frames.append(
            sim_okx.book_frame(inst_id, "snapshot", bids, asks, ts_ms, crc, -1, book.venue_id)
        )
    return frames


def _bybit_in_band(
    args: list[Any], books: Callable[[str], BookState | None], ts_ms: int
) -> list[bytes]:
    frames: list[bytes] = []
    for topic in args:
        parts = str(topic).split(".")
        if len(parts) != 3 or parts[0] != "orderbook" or not parts[1].isdigit():
            continue
        depth, symbol = int(parts[1]), parts[2]
        book = books(symbol)
        if book is None:
            continue
        bids, asks = book.book.bids(depth), book.book.asks(depth)
        frames.append(
            sim_bybit.book_frame(
                str(topic), "snapshot", symbol, bids, asks, book.venue_id, book.venue_id, ts_ms
            )
        )
    return frames


#: Answers the ``args`` of a subscribe request with snapshot pushes.
_InBandRenderer = Callable[[list[Any], Callable[[str], BookState | None], int], list[bytes]]

_IN_BAND_RENDERERS: Final[Mapping[str, _InBandRenderer]] = {
    "okx": _okx_in_band,
    bybit.SPOT: _bybit_in_band,
    bybit.LINEAR: _bybit_in_band,
}

#: The venues whose books the replay rebuilds: those it answers snapshots for.
_ANSWERED: Final = frozenset(_REST_RENDERERS) | frozenset(_IN_BAND_RENDERERS)


#: Where each venue's frames carry ids and levels, for the content faults
#: (:mod:`feeds.sim.rewrite`): the simulators' shapes of the venue.
STREAM_SHAPES: Final[Mapping[str, WireShape]] = {
    "binance": binance_spot.STREAM_SHAPE,
    "binance-usdm": binance_usdm.STREAM_SHAPE,
    "binance-coinm": binance_usdm.STREAM_SHAPE,
    "okx": sim_okx.STREAM_SHAPE,
    bybit.SPOT: sim_bybit.STREAM_SHAPE,
    bybit.LINEAR: sim_bybit.STREAM_SHAPE,
    "kraken": sim_kraken.STREAM_SHAPE,
    "coinbase": sim_coinbase.STREAM_SHAPE,
}
_REST_SHAPES: Final[Mapping[str, WireShape]] = {
    "binance": binance_spot.REST_SHAPE,
    "binance-usdm": binance_spot.REST_SHAPE,
    "binance-coinm": binance_spot.REST_SHAPE,
    "okx": sim_okx.REST_SHAPE,
    bybit.SPOT: sim_bybit.REST_SHAPE,
    bybit.LINEAR: sim_bybit.REST_SHAPE,
}


def _depth_request(target: str) -> tuple[list[str], str, dict[str, str]] | None:
    """The venues whose depth snapshot path ``GET target`` asks, the symbol it names and
    its query; None when it names no symbol."""
    path, query = _split(target)
    symbol = _query_symbol(query)
    if symbol is None:
        return None
    venues = [name for name, a in ADAPTERS.items() if path and path in a.snapshot_paths]
    return venues, symbol, query


def rest_shape(target: str) -> tuple[WireShape, str] | None:
    """The shape of the REST depth answer to ``GET target`` and the symbol it names; None
    when ``target`` is no venue's depth request."""
    request = _depth_request(target)
    if request is None:
        return None
    venues, symbol, _ = request
    shapes = [_REST_SHAPES[venue] for venue in venues if venue in _REST_SHAPES]
    return (shapes[0], symbol) if shapes else None


def _split(target: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(target)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


def _query_symbol(query: Mapping[str, str]) -> str | None:
    for name in REST_SYMBOL_PARAMS:
        if query.get(name):
            return query[name]
    return None


def request_op(message: str | bytes) -> str | None:
    """The ``op`` of a client request (``{"op":"subscribe",...}``, OKX's and Bybit's), or
    None for any other message."""
    text = message if isinstance(message, str) else message.decode("latin-1")
    if '"op"' not in text:
        return None
    try:
        request = _any_decoder.decode(message)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    op = request.get("op") if isinstance(request, dict) else None
    return op if isinstance(op, str) else None


class Routed(NamedTuple):
    """A record with the venue a :class:`~gateway.capture.driver.VenueRouter` told for it
    (None: no venue the gateway supports), asked in recorded order by the caller."""

    record: CaptureRecord
    venue: VenueAdapter | None


class ReplayBooks:
    """A capture's records and its books rebuilt up to a position: see the module doc."""

    def __init__(self, default_venue: str | None = None) -> None:
        self._router = VenueRouter(venue_adapter(default_venue))
        self._records: list[CaptureRecord] = []
        #: The venue of each record (None: no venue the gateway supports).
        self._venues: list[VenueAdapter | None] = []
        self._driver = RecordDriver(venues=_ANSWERED)
        self._fed = 0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def position(self) -> int:
        """Records fed so far."""
        return self._fed

    def add(self, record: CaptureRecord | Routed) -> int:
        """Keeps ``record`` (call in recorded order) with its venue: the one it is given
        with, else the books' router's; returns its index."""
        if isinstance(record, Routed):
            record, venue = record
        else:
            venue = self._router.venue_of(record)
        self._records.append(record)
        self._venues.append(venue)
        return len(self._records) - 1

    def venue_of(self, index: int) -> str | None:
        """The venue of the record at ``index``."""
        adapter = self._venues[index]
        return adapter.venue if adapter is not None else None

    def recv_ns(self, index: int) -> int:
        """The receive time of the record at ``index``."""
        return self._records[index].recv_ns

    def advance(self, position: int, budget: int | None = None) -> bool:
        """Feed the records before ``position`` (at most ``budget`` now); True once the
        books stand at ``position``. A position behind the one reached starts over."""
        position = min(position, len(self._records))
        if position < self._fed:
            self._driver = RecordDriver(venues=_ANSWERED)
            self._fed = 0
        end = position if budget is None else min(position, self._fed + budget)
        for index in range(self._fed, end):
            self._driver.feed(self._records[index], self._venues[index])
        self._fed = end
        return end == position

    def book(self, venue: str, symbol: str) -> BookState | None:
        """The consistent book of ``symbol`` at the current position, or None."""
        pipeline = self._driver.pipelines.get(venue)
        state = pipeline.book_state(symbol_key(venue, symbol)) if pipeline else None
        if state is None or state.state is not SymbolState.LIVE:
            return None
        return state

    def rest_answer(self, target: str, now_ns: int) -> bytes | None:
        """The venue's REST depth answer to ``GET target`` at the current position; None
        when ``target`` is no depth request or no consistent book answers it."""
        request = _depth_request(target)
        if request is None:
            return None
        venues, symbol, query = request
        for venue, render in _REST_RENDERERS.items():
            if venue not in venues:
                continue
            book = self.book(venue, symbol)
            if book is not None:
                return render(symbol, book, query, now_ns)
        return None

    def in_band_answer(self, venue: str | None, message: str | bytes, now_ns: int) -> list[bytes]:
        """The snapshot pushes answering a subscribe ``message`` on a connection of
        ``venue``, at the current position; [] for any other message or venue."""
        render = _IN_BAND_RENDERERS.get(venue or "")
        if render is None or venue is None:
            return []
        try:
            request = _any_decoder.decode(message)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return []
        if not isinstance(request, dict) or request.get("op") != "subscribe":
            return []
        args = request.get("args")
        if not isinstance(args, list):
            return []
        return render(args, lambda symbol: self.book(venue, symbol), now_ns // 1_000_000)
