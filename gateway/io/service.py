"""The gateway service: upstream connections → venue pipeline → fan-out.

Three nested TaskGroups, stopped from the inside out when :meth:`Service.run` is cancelled:
the venues' (one reader per connection, a renewal's replacement and its timeout among them,
one snapshot fetcher, audit loop and scoring loop per venue, the reorder-window timer), then
the subscriber server's, then the capture writer's. So the venues stop first (each one's
renewals stopped, :attr:`VenueRuntime.stopping`, and every symbol published ``stale``, the
gateway is stopping); then every subscriber is sent what is queued for it and closed with
1001 and that reason, within ``server.stop_drain_s`` (:meth:`Fanout.stop`); then the
server stops; the capture writer last, so that every connection's last frames and
disconnect are written.
Connections are renewed make-before-break (:mod:`gateway.core.renewal`), scored, replaced
when worst, and backed by standby endpoints (:mod:`gateway.core.score`).
Frames are handled synchronously from the reader that received them: the venue's pipeline
parses and arbitrates, the shell acts and publishes, with no await in between, so the
fan-out always sees books and events agree.
"""

from __future__ import annotations

import asyncio
import functools
import http
import itertools
import logging
import secrets
import time
from collections.abc import Callable

import msgspec

from gateway.core import pipeline
from gateway.core.arbiter import SymbolArbiter
from gateway.core.budget import SharedBudgets
from gateway.core.model import SymbolState
from gateway.core.stats import SymbolStats
from gateway.io.capture_writer import CaptureWriter
from gateway.io.changes import StateChanges
from gateway.io.fanout import Fanout
from gateway.io.fanout import StopResult
from gateway.io.health import HttpAnswer
from gateway.io.metrics import metrics_answer
from gateway.io.metrics import metrics_registry
from gateway.io.venue_runtime import VenueRuntime
from gateway.wire.config import Config
from gateway.wire.recovery import INSTANCE_NONCE_BITS
from gateway.wire.recovery import new_instance

log = logging.getLogger(__name__)


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
        #: This process: its id (told to subscribers) and the base of every epoch.
        self.instance = new_instance(time.time_ns(), secrets.randbits(INSTANCE_NONCE_BITS))
        self.fanout = Fanout(
            self,
            config.server,
            http_routes={"/metrics": functools.partial(metrics_answer, self.metrics)},
            instance=self.instance,
        )
        self.fanout.http_routes["/subscribers"] = functools.partial(subscribers_answer, self.fanout)
        conn_ids = itertools.count(0)
        #: Notified after every upstream connection goes up or down (the pipeline told) and
        #: after every failed attempt: ``await connection_changes.wait_until(...)`` waits on
        #: the connections' state.
        self.connection_changes = StateChanges()
        #: The budgets of every venue, per limit group and source address.
        self.budgets = SharedBudgets()
        self.venues = [
            VenueRuntime(
                cfg,
                conn_ids,
                self.fanout.publish,
                clock_ns,
                capture,
                self.connection_changes,
                epoch_base=self.instance.epoch_base,
                budgets=self.budgets,
            )
            for cfg in config.venues
        ]
        self._books: dict[str, SymbolArbiter] = {
            key: book for venue in self.venues for key, book in venue.books.items()
        }
        self._pipelines: dict[str, pipeline.VenuePipeline] = {
            key: venue.pipeline for venue in self.venues for key in venue.books
        }
        #: How the subscribers were ended when the service stopped (None before).
        self.stop_result: StopResult | None = None
        self._timer_interval_s = max(
            0.002, min(cfg.reorder_window_ms for cfg in config.venues) / 4000.0
        )

    # --- BookView for the fan-out -----------------------------------------------------------

    def book_state(self, key: str) -> pipeline.BookState | None:
        owner = self._pipelines.get(key)
        return None if owner is None else owner.book_state(key)

    def symbols(self) -> list[tuple[str, SymbolState]]:
        return [(key, self._pipelines[key].state(key)) for key in self._books]

    def symbol_stats(self, key: str) -> SymbolStats:
        return self._books[key].stats

    @property
    def books(self) -> dict[str, SymbolArbiter]:
        return self._books

    # --- running ----------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Runs until cancelled; ``ready`` is set once subscribers can connect. Cancelled,
        it stops in order (the module's docstring) and :attr:`stop_result` says how the
        subscribers ended; cancelled again meanwhile, the subscribers left are aborted."""
        server = self.config.server
        serving = asyncio.Event()
        async with asyncio.TaskGroup() as outer:
            # The capture writer is in the outer group: on cancellation it is stopped after
            # every connection, so their last frames and disconnects are written.
            if self.capture is not None:
                outer.create_task(self.capture.run())
            async with asyncio.TaskGroup() as front:
                serve = front.create_task(
                    self.fanout.serve(
                        server.host,
                        server.port,
                        serving,
                        unix_path=server.unix_path,
                        unix_mode=server.unix_mode,
                    )
                )
                await serving.wait()
                try:
                    async with asyncio.TaskGroup() as tasks:
                        for venue in self.venues:
                            if venue.fetcher is not None:
                                tasks.create_task(venue.fetcher.run())
                                if venue.cfg.audit_interval_s > 0:
                                    tasks.create_task(venue.audit())
                            venue.start(tasks)
                        tasks.create_task(self._timers())
                        if ready is not None:
                            ready.set()
                finally:
                    # The venues have stopped, their last statuses queued for the subscribers.
                    try:
                        if not serve.done():
                            self.stop_result = await self.fanout.stop(server.stop_drain_s)
                    finally:
                        serve.cancel()

    @property
    def port(self) -> int:
        return self.fanout.port

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(self._timer_interval_s)
            for venue in self.venues:
                if venue.pipeline.timer_armed:
                    venue.on_timer()
