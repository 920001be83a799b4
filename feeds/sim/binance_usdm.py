"""Binance USD-M futures, simulated: the venue's id sequencing and its wire format.

Pure: no I/O, no clock, no asyncio. :class:`UsdmBook` turns a spot-style
:class:`~feeds.sim.book_process.BookProcess` (contiguous ids) into a futures diff stream
(exchange-protocols.md §2); the ``*_frame`` / ``*_body`` functions render the exact bytes
the venue sends, compact JSON in the venue's key order, and :mod:`feeds.binance_usdm`
parses every one of them back to the same ids and levels.

Ids. Futures update ids are not contiguous between events: the first id ``U`` of an event
is the previous event's ``u`` plus a seeded ``k >= 1`` (mostly more than 1: ids the stream
does not show), and every event carries ``pu``, the previous event's ``u``. Within an
event the ids are those of its actions, contiguous.

Engine ahead of the stream. Each interval runs the book process in two half steps. The
first half ends the open event, which is then published; the second half already belongs
to the next event, which stays open until the next interval. The REST snapshot reads the
engine (:meth:`UsdmBook.snapshot`), so its ``lastUpdateId`` is usually *inside* the next
event's range (``U <= lastUpdateId < u``), as on the real venue, and otherwise equal to the
last published ``u`` (then the next event's ``pu`` equals it). Either way the documented
sync works: drop ``u < lastUpdateId``, the first event covers ``lastUpdateId``, then
``pu`` chains. Levels are absolute, so applying the whole first event on top of a
mid-event snapshot gives the right book. :meth:`UsdmBook.flush` publishes the open event
early (the simulator does so on pause, so a paused venue's snapshot is the stream's book).

:class:`BinanceUsdmProtocol` is the spot protocol (:mod:`feeds.sim.binance_spot`) with the
futures wire, for :class:`~feeds.sim.simulators.SimBinanceUsdm`:

- WebSocket paths (the 2026 split): ``/public/stream?streams=<s>@depth@100ms/...`` and
  ``/market/stream?streams=<s>@aggTrade/...``; a stream of the other endpoint in the URL
  closes with 1008. Live SUBSCRIBE accepts both kinds on either path (a simplification). At
  most 200 streams per connection. One simulated trade is one aggTrade.
- ``depthUpdate`` carries ``E``, ``T``, ``U``, ``u`` and ``pu``.
- REST ``GET /fapi/v1/depth?symbol=X&limit=N``, ``limit`` one of
  :data:`feeds.binance_usdm.SNAPSHOT_LIMITS` (default 500; another value gets 400
  ``-1130``), body ``{"lastUpdateId","E","T","bids","asks"}`` read from the engine.
- :meth:`~BinanceUsdmProtocol.true_book` and :meth:`~BinanceUsdmProtocol.last_id` are the
  book and ``u`` of the last *published* event; :meth:`~BinanceUsdmProtocol.snapshot` is the
  engine's. Pausing publishes the open event, so while paused all three agree.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import msgspec

from feeds import binance_usdm as usdm
from feeds.binance import depth_stream
from feeds.binance_usdm import trade_stream
from feeds.sim import binance_spot
from feeds.sim.binance_spot import BinanceSpotProtocol
from feeds.sim.binance_spot import rest_error_body
from feeds.sim.book_process import Batch
from feeds.sim.book_process import BookProcess
from feeds.sim.book_process import RangeChange
from feeds.sim.book_process import SimTrade
from feeds.sim.book_process import parse_e8
from feeds.sim.connection import Publication
from feeds.sim.connection import RestAnswer
from feeds.sim.rewrite import WireShape
from gateway.core.book import L2Book
from gateway.core.model import Level

__all__ = [
    "BinanceUsdmProtocol",
    "UsdmBook",
    "UsdmEvent",
    "agg_trade_frame",
    "depth_stream",
    "event_frame",
    "rest_error_body",
    "snapshot_body",
    "trade_stream",
]

#: Milliseconds between the matching engine's transaction time ``T`` and event time ``E``.
TRANSACTION_LAG_MS: Final = 1
#: Mean of the extra ids hidden between two events (``k - 1``).
_MEAN_HIDDEN_IDS: Final = 6.0
#: Where depth events carry ids and levels (:mod:`feeds.sim.rewrite`); ``u`` last.
STREAM_SHAPE: Final = WireShape(
    sides=((("data", "b"), "bid"), (("data", "a"), "ask")),
    ids=((("data", "pu"), "id"), (("data", "U"), "id"), (("data", "u"), "id")),
    symbol=("data", "s"),
)


class UsdmEvent(RangeChange, frozen=True, gc=False):
    """One futures diff: ids ``first_id..last_id`` (``U..u``) after ``prev_id`` (``pu``)."""

    prev_id: int


class UsdmBook:
    """The futures view of one symbol's :class:`BookProcess`; see the module docstring.

    Args:
        process: the symbol's book process; this object drives it (call nothing else on it).
        seed: seeds the hidden-id gaps, so the id stream depends on the seed only.
    """

    __slots__ = ("_last_u", "_offset", "_open", "_process", "_published", "_rng", "_trades")

    def __init__(self, process: BookProcess, seed: int) -> None:
        self._process = process
        self._rng = random.Random(f"binance-usdm-ids:{process.symbol}:{seed}")
        #: futures id = process id + offset (constant within an event).
        self._offset = self._rng.randrange(1_000_000_000_000, 8_000_000_000_000)
        self._last_u = process.last_id + self._offset
        #: Process batches of the open (not yet published) event, oldest first.
        self._open: list[Batch] = []
        self._trades: list[SimTrade] = []
        self._published = L2Book()
        self._published.load(process.book.bids(), process.book.asks())

    @property
    def symbol(self) -> str:
        return self._process.symbol

    @property
    def last_u(self) -> int:
        """``u`` of the last published event (the initial id before any)."""
        return self._last_u

    @property
    def engine_id(self) -> int:
        """The futures id of the engine's book (REST ``lastUpdateId``)."""
        return self._process.last_id + self._offset

    @property
    def published_book(self) -> L2Book:
        """The book as of :attr:`last_u`. Read only: callers must not mutate it."""
        return self._published

    def snapshot(self, limit: int) -> tuple[int, list[Level], list[Level]]:
        """``(lastUpdateId, bids, asks)`` of the engine: the top ``limit`` levels per side."""
        _, bids, asks = self._process.snapshot(limit)
        return self.engine_id, bids, asks

    def take_trades(self) -> list[SimTrade]:
        """The trades the engine made since the last call (one aggTrade each), oldest first."""
        trades, self._trades = self._trades, []
        return trades

    def step(self) -> UsdmEvent | None:
        """One interval: the first half step closes the open event, which is returned (None
        when it has no actions); the second half step opens the next one."""
        self._half_step()
        event = self.flush()
        self._half_step()
        return event

    def flush(self) -> UsdmEvent | None:
        """Publish the open event now; None when it has no actions."""
        if not self._open:
            return None
        batches, self._open = self._open, []
        bids = _merge([b.bids for b in batches], best_high=True)
        asks = _merge([b.asks for b in batches], best_high=False)
        event = UsdmEvent(
            symbol=self._process.symbol,
            first_id=batches[0].first_id + self._offset,
            last_id=batches[-1].last_id + self._offset,
            prev_id=self._last_u,
            bids=bids,
            asks=asks,
        )
        self._last_u = event.last_id
        self._published.apply(bids, asks)
        return event

    def _half_step(self) -> None:
        batch = self._process.step()
        if batch is None:
            return
        self._trades.extend(batch.trades)
        if not self._open:
            # A new event: k - 1 ids the stream does not show come before it.
            k = 1 + int(self._rng.expovariate(1.0 / _MEAN_HIDDEN_IDS))
            self._offset = self._last_u + k - batch.first_id
        self._open.append(batch)


def _merge(changes: Sequence[tuple[Level, ...]], best_high: bool) -> tuple[Level, ...]:
    """Net change of several changes of one side (later wins), best price first."""
    net: dict[str, str] = {}
    for levels in changes:
        net.update(levels)
    return tuple(sorted(net.items(), key=lambda level: parse_e8(level[0]), reverse=best_high))


# --- wire structs: field order is the venue's key order ------------------------------------


class _AggTrade(msgspec.Struct):
    e: str
    E: int
    s: str
    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 - the venue's key
    T: int
    m: bool


class _CombinedTrade(msgspec.Struct):
    stream: str
    data: _AggTrade


_encoder: Final = msgspec.json.Encoder()


def event_frame(event: UsdmEvent, event_ms: int, pair: str | None = None) -> bytes:
    """The combined-stream ``depthUpdate`` frame of ``event`` on ``<symbol>@depth@100ms``;
    ``T`` is ``E - TRANSACTION_LAG_MS``; ``pair`` (COIN-M) is sent as ``ps``."""
    return binance_spot.depth_frame(
        event.symbol,
        event.first_id,
        event.last_id,
        event.bids,
        event.asks,
        event_ms,
        prev_id=event.prev_id,
        transaction_ms=event_ms - TRANSACTION_LAG_MS,
        pair=pair,
    )


def agg_trade_frame(symbol: str, trade: SimTrade, event_ms: int) -> bytes:
    """A combined-stream ``aggTrade`` frame on ``<symbol>@aggTrade`` (market endpoint): one
    simulated trade is one aggregate, ``a == f == l`` = its trade id; ``T`` = ``E``."""
    data = _AggTrade(
        e="aggTrade",
        E=event_ms,
        s=symbol.upper(),
        a=trade.trade_id,
        p=trade.price,
        q=trade.qty,
        f=trade.trade_id,
        l=trade.trade_id,
        T=event_ms,
        m=trade.buyer_is_maker,
    )
    return _encoder.encode(_CombinedTrade(stream=trade_stream(symbol), data=data))


def snapshot_body(
    last_id: int,
    bids: Sequence[Level],
    asks: Sequence[Level],
    event_ms: int,
    symbol: str | None = None,
    pair: str | None = None,
) -> bytes:
    """The REST ``GET /fapi/v1/depth`` response body; with ``symbol`` and ``pair``, COIN-M's
    ``/dapi/v1/depth`` body."""
    return binance_spot.snapshot_body(
        last_id,
        bids,
        asks,
        event_ms=event_ms,
        transaction_ms=event_ms - TRANSACTION_LAG_MS,
        symbol=symbol,
        pair=pair,
    )


# --- the venue protocol ---------------------------------------------------------------------


class BinanceUsdmProtocol(BinanceSpotProtocol):
    """Binance USD-M futures streams and REST depth; see the module docstring.

    Args:
        seed: seeds every symbol's hidden-id gaps (:class:`UsdmBook`).
        max_incoming_per_s / rest_weight_limit_1m: as :class:`BinanceSpotProtocol`'s.
    """

    name = "binance-usdm"
    rest_path = usdm.SNAPSHOT_PATH
    stream_shape = STREAM_SHAPE
    stream_path = "/public/stream"
    market_path = "/market/stream"
    max_streams = usdm.MAX_STREAMS_PER_CONNECTION
    default_limit = "500"

    def __init__(
        self,
        seed: int,
        max_incoming_per_s: int | None = usdm.MAX_MESSAGES_PER_S,
        rest_weight_limit_1m: int | None = usdm.REST_WEIGHT_PER_MINUTE,
    ) -> None:
        super().__init__(max_incoming_per_s, rest_weight_limit_1m)
        self._seed = seed
        self.books: dict[str, UsdmBook] = {}
        self._depth_streams: dict[str, str] = {}
        self._trade_streams: dict[str, str] = {}

    def attach(self, procs: Mapping[str, BookProcess]) -> None:
        super().attach(procs)
        self.books = {sym: UsdmBook(proc, self._seed) for sym, proc in procs.items()}
        self._depth_streams = {depth_stream(sym): sym for sym in procs}
        self._trade_streams = {trade_stream(sym): sym for sym in procs}
        self._stream_symbols = {**self._depth_streams, **self._trade_streams}

    def check_path(self, path: str) -> str | None:
        if urlsplit(path).path not in (self.stream_path, self.market_path):
            return (
                "Only combined streams are simulated: /public/stream?streams=... or"
                " /market/stream?streams=...\n"
            )
        return None

    def url_streams(self, path: str) -> tuple[set[str], str | None]:
        streams, error = super().url_streams(path)
        if error is not None:
            return streams, error
        market = urlsplit(path).path == self.market_path
        wrong = self._depth_streams if market else self._trade_streams
        for name in sorted(streams):
            if name in wrong:
                where = "/public" if market else "/market"
                return set(), f"Stream {name} is served on {where}"
        return streams, None

    def pair_of(self, symbol: str) -> str | None:
        """The pair events and REST bodies name beside ``symbol`` (COIN-M); None on USD-M."""
        return None

    def step(self, now_ns: int) -> list[Publication]:
        return self._publish(lambda book: book.step(), now_ns)

    def on_pause(self, now_ns: int) -> list[Publication]:
        """Publish every open event, so a paused venue's snapshot is its stream's book."""
        return self._publish(lambda book: book.flush(), now_ns)

    def _publish(
        self, next_event: Callable[[UsdmBook], UsdmEvent | None], now_ns: int
    ) -> list[Publication]:
        event_ms = now_ns // 1_000_000
        pubs: list[Publication] = []
        for symbol, book in self.books.items():
            event = next_event(book)
            stream = trade_stream(symbol)
            for trade in book.take_trades():
                pubs.append(Publication(stream, agg_trade_frame(symbol, trade, event_ms)))
            if event is not None:
                frame = event_frame(event, event_ms, self.pair_of(symbol))
                pubs.append(Publication(depth_stream(symbol), frame))
        return pubs

    def true_book(self, symbol: str) -> L2Book:
        """A copy of the book of ``symbol`` as of the last published event."""
        source = self.books[symbol].published_book
        book = L2Book()
        book.load(source.bids(), source.asks())
        return book

    def last_id(self, symbol: str) -> int | None:
        """``u`` of the last published event of ``symbol``."""
        return self.books[symbol].last_u

    def snapshot(self, symbol: str, limit: int) -> tuple[int, list[Level], list[Level]]:
        """``(lastUpdateId, bids, asks)`` of the engine, as the REST endpoint serves it."""
        return self.books[symbol].snapshot(limit)

    def served_limit(self, limit: int, now_ns: int) -> int | RestAnswer:
        if limit not in usdm.SNAPSHOT_LIMITS:
            return self.rest_error(-1130, "Data sent for parameter 'limit' is not valid.", now_ns)
        return limit

    def snapshot_weight(self, limit: int) -> int:
        return usdm.snapshot_weight(limit)

    def snapshot_body(self, symbol: str, limit: int, now_ns: int) -> bytes:
        # The engine's book as of arrival.
        pair = self.pair_of(symbol)
        return snapshot_body(
            *self.snapshot(symbol, limit),
            now_ns // 1_000_000,
            symbol=None if pair is None else symbol.upper(),
            pair=pair,
        )
