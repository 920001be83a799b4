"""The gateway service: upstream connections → venue pipeline → fan-out.

One TaskGroup holds every task (subscriber server, one reader per endpoint, one snapshot
fetcher per venue, the reorder-window timer); cancelling :meth:`Service.run` stops them all.
Frames are handled synchronously from the reader that received them: the venue's pipeline
parses and arbitrates, the shell acts and publishes, with no await in between, so the
fan-out always sees books and events agree.
"""

from __future__ import annotations

import asyncio
import functools
import http
import itertools
import random
import time
from collections.abc import Callable, Sequence

import msgspec

from gateway.core import pipeline
from gateway.core.arbiter import SymbolArbiter, SymbolStats
from gateway.core.backoff import Backoff
from gateway.core.budget import AttemptBudget
from gateway.core.model import DepthSnapshot, GatewayEvent, SymbolState
from gateway.io.capture_writer import CaptureWriter
from gateway.io.changes import StateChanges
from gateway.io.fanout import Fanout
from gateway.io.health import HttpAnswer
from gateway.io.metrics import metrics_answer, metrics_registry
from gateway.io.upstream import Connection, SnapshotFetcher
from gateway.wire.config import Config, VenueConfig
from gateway.wire.venues import adapter_for

#: Share of max_connection_age_s by which consecutive endpoints are staggered.
AGE_STAGGER = 0.02


class VenueRuntime:
    """One venue's shell: its connections, snapshot fetcher and capture around its
    :class:`~gateway.core.pipeline.VenuePipeline`. Every input goes to the pipeline; its
    publications go to ``publish``, its actions are carried out here."""

    def __init__(
        self,
        cfg: VenueConfig,
        conn_ids: itertools.count[int],
        publish: Callable[[Sequence[GatewayEvent]], None],
        clock_ns: Callable[[], int],
        capture: CaptureWriter | None = None,
        connection_changes: StateChanges | None = None,
    ) -> None:
        self.cfg = cfg
        #: Notified by every connection of this venue (:attr:`Connection.changes`).
        self.connection_changes = (
            StateChanges() if connection_changes is None else connection_changes
        )
        #: Records every raw frame, connection event and REST response, when capturing.
        self.capture = capture
        self.adapter = adapter_for(cfg.venue)
        self._publish = publish
        self._clock_ns = clock_ns
        self.connections: dict[int, Connection] = {}
        #: Connection attempts of every connection of the venue together.
        self.attempts = AttemptBudget(
            self.adapter.connect_attempts_per_window, self.adapter.connect_window_s
        )
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
                max_body_bytes=cfg.max_rest_body_bytes,
                on_audit=self.on_audit_snapshot,
            )
        self.pipeline = pipeline.VenuePipeline(
            self.adapter,
            cfg.symbols,
            reorder_window_ns=int(cfg.reorder_window_ms * 1_000_000),
            max_pending=cfg.max_pending,
            max_id_jump=cfg.max_id_jump,
            rest_snapshots=self.fetcher is not None,
            trade_conn_ids=self.trade_connections,
            max_levels=cfg.max_levels,
        )

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
            changes=self.connection_changes,
            healthy_after_s=cfg.healthy_after_s,
            attempts=self.attempts,
            venue=cfg.venue,
        )

    # --- what the pipeline holds ------------------------------------------------------------

    @property
    def books(self) -> dict[str, SymbolArbiter]:
        return self.pipeline.books

    @property
    def stats(self) -> pipeline.VenueStats:
        return self.pipeline.stats

    @property
    def bad_frames_by_conn(self) -> dict[int, int]:
        return self.pipeline.bad_frames_by_conn

    # --- inputs, all synchronous ------------------------------------------------------------

    def on_frame(self, conn_id: int, raw: bytes, recv_ns: int) -> bool:
        """Handles one frame; True when the venue asked this connection to reconnect."""
        if self.capture is not None:
            self.capture.record_frame(conn_id, raw, recv_ns)
        step = self.pipeline.receive_frame(conn_id, raw, recv_ns, self._clock_ns())
        return self._act(step, conn_id)

    def on_state(self, conn_id: int, up: bool) -> None:
        if self.capture is not None:
            url = self.connections[conn_id].url
            if up:
                self.capture.record_connect(conn_id, url, self.cfg.venue)
            else:
                self.capture.record_disconnect(conn_id, url)
        self._act(self.pipeline.receive_connection(conn_id, up, self._clock_ns()))

    def on_snapshot(self, snapshot: DepthSnapshot) -> None:
        self._act(self.pipeline.receive_snapshot(snapshot, self._clock_ns()))

    def on_timer(self) -> None:
        self._act(self.pipeline.on_timer(self._clock_ns()))

    # --- audits (gateway.core.audit) --------------------------------------------------------

    def on_audit_snapshot(self, snapshot: DepthSnapshot) -> None:
        self._act(self.pipeline.receive_audit_snapshot(snapshot, self._clock_ns()))

    async def audit(self) -> None:
        """Every ``audit_interval_s``, asks an audit snapshot of each book the pipeline can
        audit; runs until cancelled (not started when the interval is 0)."""
        fetcher = self.fetcher
        if fetcher is None or self.cfg.audit_interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.cfg.audit_interval_s)
            for symbol in self.pipeline.auditable_symbols():
                fetcher.request_audit(symbol)

    # --- acting on a step -------------------------------------------------------------------

    def _act(self, step: pipeline.Step, frame_conn_id: int = -1) -> bool:
        """Carries out the step's actions and publishes it. True when the step asks the
        connection that received the frame, ``frame_conn_id``, to reconnect: that
        connection's reader acts on it."""
        reconnect = False
        for action in step.actions:
            if isinstance(action, pipeline.FetchSnapshot):
                if self.fetcher is not None:
                    self.fetcher.request(action.symbol)
            elif isinstance(action, pipeline.Resubscribe):
                connection = self.connections.get(action.conn_id)
                resubscribe = self.adapter.resubscribe_messages
                if connection is not None and resubscribe is not None:
                    connection.send(resubscribe(action.symbol))
            elif isinstance(action, pipeline.BookRebuilt):
                if self.fetcher is not None:
                    self.fetcher.succeeded(action.symbol)
            elif isinstance(action, pipeline.Reconnect):
                reconnect = reconnect or action.conn_id == frame_conn_id
        if step.publications:
            self._publish(step.publications)
        return reconnect


def subscribers_answer(fanout: Fanout) -> HttpAnswer:
    """``GET /subscribers``: every connected subscriber's counters and lag, as JSON
    ``{"subscribers": [...]}`` (the fields of :class:`~gateway.io.fanout.SubscriberStats`)."""
    document = {"subscribers": fanout.subscriber_stats()}
    return HttpAnswer(http.HTTPStatus.OK, "application/json", msgspec.json.encode(document))


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
        #: What ``GET /metrics`` exposes, read from the stats at each scrape.
        self.metrics = metrics_registry(self)
        self.fanout = Fanout.from_config(
            self,
            config.server,
            http_routes={"/metrics": functools.partial(metrics_answer, self.metrics)},
        )
        self.fanout.http_routes["/subscribers"] = functools.partial(subscribers_answer, self.fanout)
        conn_ids = itertools.count(0)
        #: Notified after every upstream connection goes up or down (the pipeline told) and
        #: after every failed attempt: ``await connection_changes.wait_until(...)`` waits on
        #: the connections' state.
        self.connection_changes = StateChanges()
        self.venues = [
            VenueRuntime(
                cfg, conn_ids, self.fanout.publish, clock_ns, capture, self.connection_changes
            )
            for cfg in config.venues
        ]
        self._books: dict[str, SymbolArbiter] = {
            key: book for venue in self.venues for key, book in venue.books.items()
        }
        self._pipelines: dict[str, pipeline.VenuePipeline] = {
            key: venue.pipeline for venue in self.venues for key in venue.books
        }
        self._timer_interval_s = max(
            0.002, min(cfg.reorder_window_ms for cfg in config.venues) / 4000.0
        )

    # --- BookView for the fan-out -----------------------------------------------------------

    def book_state(self, key: str) -> pipeline.BookState | None:
        owner = self._pipelines.get(key)
        return None if owner is None else owner.book_state(key)

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
                        if venue.cfg.audit_interval_s > 0:
                            tasks.create_task(venue.audit())
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
                if venue.pipeline.timer_armed:
                    venue.on_timer()
