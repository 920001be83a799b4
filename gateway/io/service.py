"""The gateway service: upstream connections → venue parser → arbiter → fan-out.

One TaskGroup holds every task (subscriber server, one reader per endpoint, one snapshot
fetcher per venue, the reorder-window timer); cancelling :meth:`Service.run` stops them all.
Frames are handled synchronously from the reader that received them: parse, arbitrate,
publish, with no await in between, so the fan-out always sees books and events agree.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.core.arbiter import (
    ConnectionSequenceChecker,
    ReplicatedBook,
    SymbolArbiter,
    SymbolStats,
    TradeDedup,
)
from gateway.core.backoff import Backoff
from gateway.core.model import (
    BookDelta,
    BookReset,
    ConnectionSequence,
    DepthDiff,
    DepthSnapshot,
    GatewayEvent,
    InstrumentPrecision,
    ResubscribeWanted,
    SnapshotWanted,
    SymbolState,
    Trade,
    VenueContractError,
    VenueNotice,
    symbol_key,
)
from gateway.io.capture_writer import CaptureWriter
from gateway.io.fanout import BookState, Fanout
from gateway.io.upstream import Connection, SnapshotFetcher
from gateway.wire.config import Config, VenueConfig
from gateway.wire.venues import adapter_for

log = logging.getLogger(__name__)

#: Bad frames logged per connection before logging only every LOG_EVERY-th.
LOG_FIRST = 10
LOG_EVERY = 1000
#: Share of max_connection_age_s by which consecutive endpoints are staggered.
AGE_STAGGER = 0.02


@dataclass
class VenueStats:
    bad_frames: int = 0
    unknown_symbols: int = 0
    notices: int = 0
    #: Connection-wide sequence jumps (the connection lost messages and is reopened).
    connection_gaps: int = 0
    resubscribes: int = 0


class VenueRuntime:
    """One venue: its books, its connections and its snapshot fetcher."""

    def __init__(
        self,
        cfg: VenueConfig,
        conn_ids: itertools.count[int],
        publish: Callable[[Sequence[GatewayEvent]], None],
        clock_ns: Callable[[], int],
        capture: CaptureWriter | None = None,
    ) -> None:
        self.cfg = cfg
        #: Records every raw frame, connection event and REST response, when capturing.
        self.capture = capture
        self.adapter = adapter_for(cfg.venue)
        self._publish = publish
        self._clock_ns = clock_ns
        self.stats = VenueStats()
        self.books: dict[str, SymbolArbiter] = {}
        self.trades: dict[str, TradeDedup] = {}
        for symbol in cfg.symbols:
            key = symbol_key(cfg.venue, symbol)
            self.books[key] = self.adapter.new_arbiter(
                symbol,
                reorder_window_ns=int(cfg.reorder_window_ms * 1_000_000),
                max_pending=cfg.max_pending,
            )
            self.trades[key] = TradeDedup()
        self.connections: dict[int, Connection] = {}
        self.bad_frames_by_conn: dict[int, int] = {}
        self.sequences = ConnectionSequenceChecker()
        subscribe = self.adapter.subscribe_messages(cfg.symbols)
        endpoints = [e for e in cfg.endpoints for _ in range(cfg.connections_per_endpoint)]
        for index, endpoint in enumerate(endpoints):
            conn_id = next(conn_ids)
            self.connections[conn_id] = self._connection(
                conn_id,
                self.adapter.stream_url(endpoint, cfg.symbols),
                # Staggered so that the endpoints are never renewed together.
                max_age_s=cfg.max_connection_age_s * (1.0 - AGE_STAGGER * index),
                subscribe_messages=subscribe,
                ping_message=self.adapter.ping_message,
            )
        #: Connections that carry trades only: the books are not told of them.
        self.trade_connections: set[int] = set()
        trade_endpoint, trade_url = self.adapter.trade_endpoint, self.adapter.trade_stream_url
        if trade_endpoint is not None and trade_url is not None:
            for endpoint in dict.fromkeys(trade_endpoint(e) for e in cfg.endpoints):
                conn_id = next(conn_ids)
                self.trade_connections.add(conn_id)
                self.connections[conn_id] = self._connection(
                    conn_id, trade_url(endpoint, cfg.symbols), max_age_s=cfg.max_connection_age_s
                )
        self.fetcher: SnapshotFetcher | None = None
        if self.adapter.snapshot_url is not None and cfg.rest:
            self.fetcher = SnapshotFetcher(
                self.adapter,
                cfg.rest,
                limit=cfg.snapshot_limit,
                on_snapshot=self.on_snapshot,
                timeout_s=cfg.rest_timeout_s,
                on_response=None if capture is None else capture.record_rest,
            )
        #: Keys whose arbiter has a reorder deadline pending.
        self.waiting: set[str] = set()

    def _connection(
        self,
        conn_id: int,
        url: str,
        *,
        max_age_s: float,
        subscribe_messages: Sequence[bytes] = (),
        ping_message: bytes | None = None,
    ) -> Connection:
        cfg = self.cfg
        return Connection(
            conn_id,
            url,
            on_frame=self.on_frame,
            on_state=self.on_state,
            backoff=Backoff(cfg.backoff_initial_s, cfg.backoff_max_s, random.Random(conn_id)),
            stall_timeout_s=cfg.stall_timeout_s,
            max_age_s=max_age_s,
            subscribe_messages=subscribe_messages,
            ping_message=ping_message,
            ping_interval_s=self.adapter.ping_interval_s,
            max_messages_per_s=self.adapter.max_messages_per_s,
        )

    # --- inputs, all synchronous ------------------------------------------------------------

    def on_frame(self, conn_id: int, raw: bytes, recv_ns: int) -> bool:
        """Handles one frame; True when the venue asked this connection to reconnect."""
        if self.capture is not None:
            self.capture.record_frame(conn_id, raw, recv_ns)
        try:
            events = self.adapter.parse(raw, recv_ns, conn_id)
        except VenueContractError as exc:
            self._bad_frame(conn_id, raw, exc)
            return False
        now_ns = self._clock_ns()
        reconnect = False
        for event in events:
            if isinstance(event, DepthDiff):
                book = self.books.get(event.key)
                if book is None:
                    self.stats.unknown_symbols += 1
                    continue
                self._emit(book, book.on_diff(event, now_ns))
            elif isinstance(event, DepthSnapshot):
                book = self.books.get(event.key)
                if book is None:
                    self.stats.unknown_symbols += 1
                    continue
                self._emit(book, book.on_snapshot(event, now_ns))
            elif isinstance(event, InstrumentPrecision):
                self._set_precision(event)
            elif isinstance(event, ConnectionSequence):
                if self.sequences.on_seq(conn_id, event.seq):
                    # Every replica on this connection missed something: each is dropped
                    # and resubscribed on this connection only.
                    self.stats.connection_gaps += 1
                    log.warning("conn %d: messages lost (sequence jump); resubscribing", conn_id)
                    for book in self.books.values():
                        if isinstance(book, ReplicatedBook):
                            self._emit(book, book.invalidate(conn_id, "connection sequence jump"))
            elif isinstance(event, Trade):
                dedup = self.trades.get(event.key)
                if dedup is not None:
                    self._publish(dedup.on_trade(event))
            elif isinstance(event, VenueNotice):
                self.stats.notices += 1
                if event.kind == "error":
                    log.warning("conn %d: venue error: %s", conn_id, event.detail)
                reconnect = reconnect or event.reconnect
        return reconnect

    def on_state(self, conn_id: int, up: bool) -> None:
        if self.capture is not None:
            url = self.connections[conn_id].url
            if up:
                self.capture.record_connect(conn_id, url, self.cfg.venue)
            else:
                self.capture.record_disconnect(conn_id, url)
        now_ns = self._clock_ns()
        self.sequences.reset(conn_id)
        if conn_id in self.trade_connections:
            return
        for book in self.books.values():
            self._emit(book, book.on_connection(conn_id, up, now_ns))

    def on_snapshot(self, snapshot: DepthSnapshot) -> None:
        book = self.books.get(snapshot.key)
        if book is not None:
            self._emit(book, book.on_snapshot(snapshot, self._clock_ns()))

    def on_timer(self) -> None:
        now_ns = self._clock_ns()
        for key in list(self.waiting):
            book = self.books[key]
            deadline = book.deadline_ns()
            if deadline is None:
                self.waiting.discard(key)
            elif deadline <= now_ns:
                self._emit(book, book.on_timer(now_ns))

    # --- internals --------------------------------------------------------------------------

    def _emit(self, book: SymbolArbiter, events: list[GatewayEvent]) -> None:
        if book.deadline_ns() is not None:
            self.waiting.add(book.key)
        if not events:
            return
        for event in events:
            if isinstance(event, BookDelta):
                continue  # the common case: nothing to do but publish
            symbol = book.key.partition(":")[2]
            if isinstance(event, SnapshotWanted):
                if self.fetcher is not None:
                    self.fetcher.request(symbol)
                else:
                    # No REST snapshot: every connection subscribes again for an in-band one.
                    for conn_id in self.connections:
                        self._resubscribe(conn_id, symbol)
            elif isinstance(event, ResubscribeWanted):
                self._resubscribe(event.conn_id, symbol)
            elif isinstance(event, BookReset) and self.fetcher is not None:
                self.fetcher.succeeded(symbol)
        self._publish(events)

    def _set_precision(self, event: InstrumentPrecision) -> None:
        book = self.books.get(symbol_key(event.venue, event.symbol))
        make = self.adapter.checksum_at_precision
        if book is not None and make is not None:
            book.checksum = make(event.price_precision, event.qty_precision)

    def _resubscribe(self, conn_id: int, symbol: str) -> None:
        connection = self.connections.get(conn_id)
        if connection is None or self.adapter.resubscribe_messages is None:
            return
        self.stats.resubscribes += 1
        connection.send(self.adapter.resubscribe_messages(symbol))

    def _bad_frame(self, conn_id: int, raw: bytes, exc: VenueContractError) -> None:
        self.stats.bad_frames += 1
        count = self.bad_frames_by_conn[conn_id] = self.bad_frames_by_conn.get(conn_id, 0) + 1
        if count <= LOG_FIRST or count % LOG_EVERY == 0:
            log.warning(
                "conn %d: bad frame #%d from %s: %s; frame starts %r",
                conn_id,
                count,
                self.cfg.venue,
                exc,
                raw[:120],
            )


class Service:
    """The whole gateway for one configuration."""

    def __init__(
        self,
        config: Config,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        capture: CaptureWriter | None = None,
    ) -> None:
        self.config = config
        #: The capture of this run (``mdgateway run --capture DIR``), or None.
        self.capture = capture
        self.fanout = Fanout(
            self,
            max_buffer_bytes=config.server.max_buffer_bytes,
            max_subscribers=config.server.max_subscribers,
        )
        conn_ids = itertools.count(0)
        self.venues = [
            VenueRuntime(cfg, conn_ids, self.fanout.publish, clock_ns, capture)
            for cfg in config.venues
        ]
        self._books: dict[str, SymbolArbiter] = {
            key: book for venue in self.venues for key, book in venue.books.items()
        }
        self._timer_interval_s = max(
            0.002, min(cfg.reorder_window_ms for cfg in config.venues) / 4000.0
        )

    # --- BookView for the fan-out -----------------------------------------------------------

    def book_state(self, key: str) -> BookState | None:
        book = self._books.get(key)
        if book is None or not book.has_book:
            return None
        return (book.book, book.epoch, book.seq, book.applied_id, book.state)

    def symbols(self) -> list[tuple[str, SymbolState]]:
        return [(key, book.state) for key, book in self._books.items()]

    def symbol_stats(self, key: str) -> SymbolStats:
        return self._books[key].stats

    @property
    def books(self) -> dict[str, SymbolArbiter]:
        return self._books

    # --- running ----------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Runs until cancelled; ``ready`` is set once subscribers can connect."""
        server = self.config.server
        serving = asyncio.Event()
        async with asyncio.TaskGroup() as outer:
            # The capture writer is in the outer group: on cancellation it is stopped after
            # every connection, so their last frames and disconnects are written.
            if self.capture is not None:
                outer.create_task(self.capture.run())
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.fanout.serve(server.host, server.port, serving))
                await serving.wait()
                for venue in self.venues:
                    if venue.fetcher is not None:
                        tasks.create_task(venue.fetcher.run())
                    for connection in venue.connections.values():
                        tasks.create_task(connection.run())
                tasks.create_task(self._timers())
                if ready is not None:
                    ready.set()

    @property
    def port(self) -> int:
        return self.fanout.port

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(self._timer_interval_s)
            for venue in self.venues:
                if venue.waiting:
                    venue.on_timer()
