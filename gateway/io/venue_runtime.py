"""One venue's shell: its connections (renewed make-before-break, scored, replaced when
worst on another endpoint where one is free, backed by standby endpoints), its snapshot
fetcher and capture around its :class:`~gateway.core.pipeline.VenuePipeline`. Frames are
handled synchronously from the reader that received them: the pipeline parses and
arbitrates, the shell acts and publishes, with no await in between, so the fan-out always
sees books and events agree.

The venue stops when the task group running it is cancelled (the service stops, or its
task tree is cancelled): from then on its renewal machines are stopped
(:meth:`VenueRenewals.stop`), so that the stop's own events (old connections falling as
they are cancelled, a replacement catching up) open no replacement and close nothing, and
its pipeline is stopped (:meth:`VenuePipeline.stop`), so that they are no venue outage
either: the symbols are published stale for the stop, once, with no warning.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace

from gateway.core import pipeline
from gateway.core.activity import ActivityLimits
from gateway.core.arbiter import ArbiterLimits
from gateway.core.arbiter import SymbolArbiter
from gateway.core.awaiting import AwaitLimits
from gateway.core.backoff import Backoff
from gateway.core.budget import AttemptBudget
from gateway.core.budget import SharedBudgets
from gateway.core.limits import PlannedConnection
from gateway.core.limits import plan_connections
from gateway.core.model import DepthSnapshot
from gateway.core.model import GatewayEvent
from gateway.core.renewal import CloseConnection
from gateway.core.renewal import Command
from gateway.core.renewal import OpenReplacement
from gateway.core.renewal import Renewal
from gateway.core.renewal import RenewalEvent
from gateway.core.renewal import VenueRenewals
from gateway.core.renewal import renewal_age_s
from gateway.core.replicated import ReplicatedBook
from gateway.core.score import ReplacementPolicy
from gateway.core.score import Scorer
from gateway.core.score import StandbyAction
from gateway.core.score import StandbyPolicy
from gateway.core.score import Totals
from gateway.core.score import rotated_endpoint
from gateway.core.stats import VenueRuntimeStats
from gateway.core.stats import VenueStats
from gateway.io.capture_writer import CaptureWriter
from gateway.io.changes import StateChanges
from gateway.io.logs import LimitedLog
from gateway.io.upstream import Connection
from gateway.io.upstream import Sent
from gateway.io.upstream import SnapshotFetcher
from gateway.wire.config import VenueConfig
from gateway.wire.config import snapshot_limit
from gateway.wire.config import venue_limits
from gateway.wire.tokens import redacted_repr
from gateway.wire.venues import adapter_for

log = logging.getLogger(__name__)

#: How often connections are scored and the replacement and standby policies asked.
SCORE_INTERVAL_S = 1.0
#: The arrival lag counted for a connection of an unsequenced venue with no valid replica.
NO_REPLICA_LAG_S = 1.0
#: The window of a venue's subscribe requests per connection (OKX counts them per hour).
SUBSCRIBE_WINDOW_S = 3600.0


def _subscribe_budget(requests_per_hour: int) -> AttemptBudget:
    """A connection's own budget of subscribe requests (venues that limit them)."""
    return AttemptBudget(requests_per_hour, SUBSCRIBE_WINDOW_S)


@redacted_repr
@dataclass(frozen=True)
class SlotSpec:
    """What every connection of one slot (a configured connection) opens and sends. Its
    ``repr`` shows the URLs redacted."""

    url: str
    subscribe_messages: Sequence[bytes] = ()
    ping_message: bytes | None = None
    #: A trade-only connection: the books are not told of it.
    trades_only: bool = False
    #: A standby endpoint's: opened only while every primary is silent.
    standby: bool = False
    #: The configured endpoint the URL was built from (to build it again for other symbols).
    endpoint: str = ""
    #: The slot's shard of the venue's symbols (:func:`gateway.core.limits.plan_connections`),
    #: less those the venue refused.
    symbols: tuple[str, ...] = ()


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
        epoch_base: int = 0,
        budgets: SharedBudgets | None = None,
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
        #: Every open (or opening) connection, a renewal's replacement among them.
        self.connections: dict[int, Connection] = {}
        # --- venue limits: shared budgets, sharded connections (docs/architecture.md) ---
        #: The venue's limits with the configuration's overrides.
        self.limits = venue_limits(cfg)
        #: Per connection, its subscribe requests in the last hour (venues that limit them).
        self._subscribe_budgets: dict[int, AttemptBudget] = {}
        self._check_resubscriptions_fit()
        self._log = LimitedLog(log)
        budgets = SharedBudgets() if budgets is None else budgets
        #: What the budgets are kept per: the venue's limit group and source address (the
        #: configuration binds none: the host's default route).
        self.budget_key = (self.limits.group, None)
        #: Connection attempts of every connection sharing the budget key.
        self.attempts = budgets.attempts(
            self.budget_key,
            self.limits.connect_attempts_per_window,
            self.limits.connect_window_s,
        )
        self.weight_budget = budgets.weight(
            self.budget_key, self.limits.rest_weight_per_window, self.limits.rest_window_s
        )
        #: Messages of every connection of the budget key, where the venue counts per IP.
        self.shared_messages = (
            None
            if self.limits.messages_per_s_per_address is None
            else budgets.messages(
                self.budget_key, self.limits.messages_per_s_per_address, time.monotonic()
            )
        )
        self._conn_ids = conn_ids
        #: Per slot (a configured connection, numbered within the venue): what it opens.
        self.slots: dict[int, SlotSpec] = {}
        #: Every slot's make-before-break renewal, one renewal of the venue at a time.
        self.renewals = VenueRenewals()
        #: Draws of each connection's renewal age (AGE_JITTER), seeded per venue.
        self._age_rng = random.Random(cfg.venue)
        self._tasks: asyncio.TaskGroup | None = None
        #: Cancelled by nothing but the task group: tells that the group is being cancelled.
        self._scoring_task: asyncio.Task[None] | None = None
        self._running: dict[int, asyncio.Task[None]] = {}
        self._renew_timeouts: dict[int, asyncio.Task[None]] = {}
        #: Connections being closed for good: forgotten once their task ended.
        self._retiring: set[int] = set()
        #: Connections that carry trades only: the books are not told of them.
        self.trade_connections: set[int] = set()
        #: The symbols subscribed: the configured ones the venue did not refuse.
        self.subscribed = list(cfg.symbols)
        self.fetcher: SnapshotFetcher | None = None
        limit = snapshot_limit(cfg)
        if limit is not None:
            self.fetcher = SnapshotFetcher(
                self.adapter,
                cfg.rest,
                limit=limit,
                on_snapshot=self.on_snapshot,
                timeout_s=cfg.rest_timeout_s,
                backoff_max_s=cfg.snapshot_backoff_max_s,
                max_concurrent=cfg.max_concurrent_snapshots,
                on_response=None if capture is None else capture.record_rest,
                max_body_bytes=cfg.max_rest_body_bytes,
                on_audit=self.on_audit_snapshot,
                budget=self.weight_budget,
            )
        self.pipeline = pipeline.VenuePipeline(
            self.adapter,
            cfg.symbols,
            limits=ArbiterLimits(
                reorder_window_ns=int(cfg.reorder_window_ms * 1_000_000),
                max_pending=cfg.max_pending,
                max_levels=cfg.max_levels,
                max_id_jump=cfg.max_id_jump,
            ),
            rest_snapshots=self.fetcher is not None,
            epoch_base=epoch_base,
            activity=None
            if cfg.silence_factor == 0
            else ActivityLimits(cfg.silence_factor, cfg.silence_min_s, cfg.silence_max_s),
            awaiting=AwaitLimits(cfg.resubscribe_timeout_s, cfg.resubscribe_timeout_max_s),
        )
        # Each planned connection (a shard of the symbols on one endpoint) is a slot.
        for planned in self._plan(cfg.endpoints, cfg.connections_per_endpoint):
            self._add_slot(self._book_slot(planned.endpoint, planned.symbols))
        trade_endpoint, trade_url = self.adapter.trade_endpoint, self.adapter.trade_stream_url
        if trade_endpoint is not None and trade_url is not None:
            trade_endpoints = list(dict.fromkeys(trade_endpoint(e) for e in cfg.endpoints))
            for planned in self._plan(trade_endpoints, 1, streams_of=lambda symbol: 1):
                url = trade_url(planned.endpoint, planned.symbols)
                self._add_slot(
                    SlotSpec(
                        url, trades_only=True, endpoint=planned.endpoint, symbols=planned.symbols
                    )
                )
        #: Connection scores, the replacement of a worst connection, standby endpoints.
        self.scorer = Scorer()
        self.replacement = ReplacementPolicy(
            cfg.replace_margin, cfg.replace_after_s, cfg.replace_cooldown_s
        )
        self.standby: StandbyPolicy | None = None
        #: Slots of the standby endpoints: connected only while the policy says so.
        self.standby_slots: list[int] = []
        #: The order a slot replaced for its score rotates its endpoint in, and the slots
        #: whose replacement is to rotate (due for their score, not yet opened).
        self.rotation = list(dict.fromkeys([*cfg.endpoints, *cfg.standby_endpoints]))
        self._rotating: set[int] = set()
        #: ``rotations``: replacements opened on another endpoint than the replaced one's.
        self.runtime_stats = VenueRuntimeStats()
        if cfg.standby_endpoints:
            self.standby = StandbyPolicy(cfg.standby_after_s, cfg.standby_release_after_s)
            for planned in self._plan(cfg.standby_endpoints, 1):
                slot = len(self.slots)
                spec = self._book_slot(planned.endpoint, planned.symbols)
                self.slots[slot] = replace(spec, standby=True)
                self.standby_slots.append(slot)

    # --- connections and their renewal -----------------------------------------------------

    def _plan(
        self,
        endpoints: Sequence[str],
        connections_per_endpoint: int,
        streams_of: Callable[[str], int] | None = None,
    ) -> list[PlannedConnection]:
        """The venue's symbols sharded over connections to ``endpoints`` within its
        streams-per-connection limit (:func:`gateway.core.limits.plan_connections`)."""
        return plan_connections(
            self.cfg.symbols,
            endpoints,
            connections_per_endpoint=connections_per_endpoint,
            max_streams=self.limits.max_streams_per_connection,
            streams_of=self.adapter.streams_per_symbol if streams_of is None else streams_of,
        )

    def _book_slot(self, endpoint: str, symbols: tuple[str, ...]) -> SlotSpec:
        """A book connection's slot carrying ``symbols`` on ``endpoint``."""
        return SlotSpec(
            self.adapter.stream_url(endpoint, symbols),
            self.adapter.subscribe_messages(symbols),
            self.adapter.ping_message,
            endpoint=endpoint,
            symbols=symbols,
        )

    def _add_slot(self, spec: SlotSpec) -> None:
        slot = len(self.slots)
        self.slots[slot] = spec
        connection = self._open(slot)
        self.renewals.add(slot, connection.conn_id)

    def _open(self, slot: int) -> Connection:
        """A new connection (a conn id of its own) for ``slot``, started when running."""
        cfg, spec = self.cfg, self.slots[slot]
        conn_id = next(self._conn_ids)
        if spec.trades_only:
            self.trade_connections.add(conn_id)
            self.pipeline.add_trade_connection(conn_id)
        # A renewal's replacement carries the same shard as the connection it replaces.
        self.pipeline.set_connection_symbols(conn_id, spec.symbols)
        connection = self.connections[conn_id] = Connection(
            conn_id,
            spec.url,
            on_frame=self.on_frame,
            on_state=self.on_state,
            on_sent=self.on_sent,
            backoff=Backoff(cfg.backoff_initial_s, cfg.backoff_max_s, random.Random(conn_id)),
            stall_timeout_s=cfg.stall_timeout_s,
            # Jittered so that connections opened together are not due together.
            max_age_s=renewal_age_s(cfg.max_connection_age_s, self._age_rng.random()),
            subscribe_messages=spec.subscribe_messages,
            ping_message=spec.ping_message,
            ping_interval_s=self.adapter.ping_interval_s,
            max_messages_per_s=self.limits.messages_per_s,
            changes=self.connection_changes,
            healthy_after_s=cfg.healthy_after_s,
            attempts=self.attempts,
            shared_messages=self.shared_messages,
            venue=cfg.venue,
            on_aged=self._aged,
            slot=slot,
            max_frame_bytes=cfg.max_frame_bytes or self.adapter.max_frame_bytes,
        )
        if self._tasks is not None:
            self._start(connection)
        return connection

    def start(
        self, tasks: asyncio.TaskGroup, clock_s: Callable[[], float] = time.monotonic
    ) -> None:
        """Runs every connection (and later every replacement) in ``tasks``, and the
        scoring every :data:`SCORE_INTERVAL_S`."""
        self._tasks = tasks
        for connection in list(self.connections.values()):
            self._start(connection)
        self._scoring_task = tasks.create_task(self._scoring(clock_s))

    @property
    def stopping(self) -> bool:
        """True once the task group running the venue is being cancelled: it cancelled the
        scoring task (which nothing else cancels), or the task ended."""
        scoring = self._scoring_task
        return scoring is not None and (scoring.done() or scoring.cancelling() > 0)

    def stop(self) -> None:
        """The venue stops: its renewal machines are stopped (every later event renews
        nothing), the pending renewal timeouts cancelled, and its pipeline stopped (every
        symbol published stale for the stop; later inputs change nothing). Idempotent."""
        self._act(self.pipeline.stop())
        self.renewals.stop()
        for timeout in self._renew_timeouts.values():
            timeout.cancel()
        self._renew_timeouts.clear()

    def _machines(self) -> VenueRenewals:
        """The renewal machines, for an event to be driven into: stopped first once the
        venue is stopping, so that the stop's own events start and end no renewal."""
        if self.stopping:
            self.stop()
        return self.renewals

    async def _scoring(self, clock_s: Callable[[], float]) -> None:
        try:
            while True:
                await asyncio.sleep(SCORE_INTERVAL_S)
                self.evaluate(clock_s())
        finally:
            # Only the venue's task group ends it: the venue stops, whether or not a
            # connection of it was up to fall with the stop.
            self.stop()

    def _start(self, connection: Connection) -> None:
        assert self._tasks is not None
        conn_id = connection.conn_id
        task = self._running[conn_id] = self._tasks.create_task(connection.run())
        task.add_done_callback(lambda _: self._closed(conn_id))

    def _closed(self, conn_id: int) -> None:
        """Connection ``conn_id``'s task ended: forgotten when it was closed for good
        (renewed, or a released standby); kept, with its stats, when the service stopped."""
        self._running.pop(conn_id, None)
        if conn_id in self._retiring:
            self._retiring.discard(conn_id)
            self.connections.pop(conn_id, None)
            self.trade_connections.discard(conn_id)
            self._subscribe_budgets.pop(conn_id, None)
            self.pipeline.forget_connection(conn_id)
            self.connection_changes.notify()

    def _aged(self, conn_id: int) -> None:
        self._renew(self._machines().due(conn_id, "age"))

    def _renew(self, commands: list[Command]) -> None:
        """Carries out the renewal machines' commands."""
        for command in commands:
            if isinstance(command, OpenReplacement):
                self._open_replacement(command.slot)
            else:
                self._close_renewed(command)

    def _open_replacement(self, slot: int) -> None:
        old = self.renewals.serving(slot)
        if slot in self._rotating:
            self._rotating.discard(slot)
            self._rotate(slot)
        connection = self._open(slot)
        conn_id = connection.conn_id
        self.renewals.opened(slot, conn_id)
        self.pipeline.watch_catch_up(conn_id)
        log.info(
            "conn %d %s: renewing; replacement conn %d opens beside it",
            old,
            connection.endpoint,
            conn_id,
            extra=connection.log_fields,
        )
        if self._tasks is not None:
            self._renew_timeouts[slot] = self._tasks.create_task(self._renew_timeout(slot, conn_id))

    def _rotate(self, slot: int) -> None:
        """Moves ``slot`` to the next endpoint of :attr:`rotation` that no open connection
        serves its shard on (the endpoint of an idle standby slot takes the one left in
        exchange); stays when there is none."""
        spec = self.slots[slot]
        busy = {
            self.slots[c.slot].endpoint
            for c in self.connections.values()
            if self.slots[c.slot].symbols == spec.symbols and not self.slots[c.slot].trades_only
        }
        endpoint = rotated_endpoint(self.rotation, spec.endpoint, busy)
        if endpoint is None:
            return
        for idle in self.standby_slots:
            other = self.slots[idle]
            if other.endpoint == endpoint and other.symbols == spec.symbols:
                self.slots[idle] = replace(
                    self._book_slot(spec.endpoint, spec.symbols), standby=True
                )
        self.slots[slot] = replace(self._book_slot(endpoint, spec.symbols), standby=spec.standby)
        self.runtime_stats.rotations += 1
        self._venue_log(
            logging.INFO,
            "slot %d: the replacement moves from %s to %s",
            slot,
            spec.endpoint,
            endpoint,
        )

    async def _renew_timeout(self, slot: int, conn_id: int) -> None:
        await asyncio.sleep(self.cfg.renew_timeout_s)
        self._renew_timeouts.pop(slot, None)
        self._renew(self._machines().timed_out(slot, conn_id))

    def _close_renewed(self, command: CloseConnection) -> None:
        timeout = self._renew_timeouts.pop(command.slot, None)
        if timeout is not None:
            timeout.cancel()
        self.pipeline.unwatch_catch_up(command.replacement)
        connection = self.connections.get(command.conn_id)
        fields = {} if connection is None else connection.log_fields
        if command.outcome is RenewalEvent.TIMED_OUT:
            log.warning(
                "conn %d: replacement conn %d did not catch up within %g s; closing anyway",
                command.conn_id,
                command.replacement,
                self.cfg.renew_timeout_s,
                extra=fields,
            )
        else:
            log.info(
                "conn %d: closed, renewed by conn %d (%s)",
                command.conn_id,
                command.replacement,
                command.outcome.value,
                extra=fields,
            )
        self._stop(command.conn_id)

    def _stop(self, conn_id: int) -> None:
        """Closes connection ``conn_id`` for good."""
        self._retiring.add(conn_id)
        task = self._running.get(conn_id)
        if task is not None:
            task.cancel()
        else:
            self._closed(conn_id)

    # --- scores, replacement, standby --------------------------------------------------------

    def evaluate(self, now_s: float) -> None:
        """Scores the book connections, replaces one that stayed worst (make-before-break),
        connects or releases the standby endpoints. ``now_s``: the connections' clock."""
        cfg = self.cfg
        book = {
            conn_id: c
            for conn_id, c in self.connections.items()
            if not self.slots[c.slot].trades_only
        }
        scores = self.scorer.evaluate(
            {conn_id: self._totals(c, now_s) for conn_id, c in book.items()}
        )
        self.pipeline.conn_scores.clear()
        self.pipeline.conn_scores.update(scores)
        for conn_id, connection in book.items():
            connection.stats.score = scores[conn_id]
        # Only a settled primary serving its slot outside a renewal is compared.
        settled = {
            conn_id: scores[conn_id]
            for conn_id, c in book.items()
            if not self.slots[c.slot].standby
            and self.renewals.serving(c.slot) == conn_id
            and self.renewals.state(c.slot) is Renewal.STEADY
            and c.stats.connected
            and now_s - c.stats.connected_since_s >= cfg.replace_after_s
        }
        worst = self.replacement.evaluate(settled, now_s)
        if worst is not None:
            log.warning(
                "conn %d %s: scored worst by %g for %g s; replacing it",
                worst,
                book[worst].endpoint,
                cfg.replace_margin,
                cfg.replace_after_s,
                extra=book[worst].log_fields,
            )
            self._rotating.add(book[worst].slot)
            self._renew(self._machines().due(worst, "score"))
        if self.standby is not None:
            primaries = {
                conn_id: c.last_heard_s
                for conn_id, c in book.items()
                if not self.slots[c.slot].standby
            }
            action = self.standby.evaluate(primaries, now_s)
            if action is StandbyAction.CONNECT:
                self._venue_log(
                    logging.WARNING,
                    "every primary endpoint silent for %g s; connecting the standby endpoints",
                    cfg.standby_after_s,
                )
                for slot in self.standby_slots:
                    self.renewals.add(slot, self._open(slot).conn_id)
            elif action is StandbyAction.RELEASE:
                self._venue_log(
                    logging.INFO,
                    "primaries healthy for %g s; releasing the standby endpoints",
                    cfg.standby_release_after_s,
                )
                for slot in self.standby_slots:
                    conn_ids, commands = self.renewals.remove(slot)
                    for conn_id in conn_ids:
                        self.pipeline.unwatch_catch_up(conn_id)
                        self._stop(conn_id)
                    self._renew(commands)

    def _venue_log(self, level: int, message: str, *args: object) -> None:
        """A line about the venue as a whole: ``message`` after the venue's name, which
        it also carries as its ``venue`` field."""
        venue = self.cfg.venue
        log.log(level, "%s: " + message, venue, *args, extra={"venue": venue})

    def _totals(self, connection: Connection, now_s: float) -> Totals:
        """The counters of ``connection`` the score is computed from."""
        conn_id, stats = connection.conn_id, connection.stats
        first_wins = duplicates = 0
        lags_s: list[float] = []
        unsequenced = False
        for book in self.books.values():
            per_conn = book.stats.connections.get(conn_id)
            if per_conn is not None:
                first_wins += per_conn.first_wins
                duplicates += per_conn.duplicates
            if isinstance(book, ReplicatedBook):
                unsequenced = True
                replica = book.replicas.get(conn_id)
                if replica is not None and replica.valid:
                    lags_s.append(replica.lag_ewma_ns / 1e9)
        latency = self.pipeline.event_latency_by_conn.get(conn_id)
        lag_s = None
        if unsequenced:
            lag_s = sum(lags_s) / len(lags_s) if lags_s else NO_REPLICA_LAG_S
        return Totals(
            up=stats.connected,
            uptime_s=now_s - stats.connected_since_s if stats.connected else 0.0,
            first_wins=first_wins,
            duplicates=duplicates,
            latency_sum_s=0.0 if latency is None else latency.sum,
            latency_count=0 if latency is None else latency.count,
            lag_s=lag_s,
            frames=stats.frames,
            bad_frames=self.pipeline.bad_frames_by_conn.get(conn_id, 0),
            faults=self.pipeline.faults_by_conn.get(conn_id, 0),
            reconnects=stats.reconnects,
        )

    # --- what the pipeline holds ------------------------------------------------------------

    @property
    def books(self) -> dict[str, SymbolArbiter]:
        return self.pipeline.books

    @property
    def conn_symbols(self) -> dict[int, tuple[str, ...]]:
        """The symbols each open connection carries: its slot's shard."""
        return {conn_id: self.slots[c.slot].symbols for conn_id, c in self.connections.items()}

    @property
    def stats(self) -> VenueStats:
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

    def _resubscribe(self, action: pipeline.Resubscribe) -> None:
        """Sends the symbol's resubscription on its connection, within the venue's
        subscribe requests per connection and hour (OKX); past them, the connection is
        renewed instead (make-before-break): a new connection starts a new count."""
        connection = self.connections.get(action.conn_id)
        resubscribe = self.adapter.resubscribe_messages
        if connection is None or resubscribe is None:
            return
        limit = self.limits.subscribe_requests_per_hour
        budget = None
        if limit is not None:
            budget = self._subscribe_budgets.get(action.conn_id)
            if budget is None:
                budget = self._subscribe_budgets[action.conn_id] = _subscribe_budget(limit)
        # The connection queues it at most once, spending the budget only then, and only
        # when the whole group fits (checked at the start: every group can).
        sent = connection.send(
            resubscribe(action.symbol),
            key=action.symbol,
            budget=budget,
            now_s=self._clock_ns() / 1e9,
        )
        if sent is Sent.DROPPED or sent is Sent.OVER_BUDGET:
            # Given up: the venue will not see it; its wait starts now all the same.
            self.pipeline.receive_sent(action.conn_id, (action.symbol,), self._clock_ns())
        if sent is Sent.OVER_BUDGET:
            self._log.warning(
                ("subscribe budget", action.conn_id),
                "%s: conn %d spent its subscribe requests for the hour; renewing it",
                self.cfg.venue,
                action.conn_id,
                extra={"venue": self.cfg.venue, "connection": action.conn_id},
            )
            self._renew(self._machines().due(action.conn_id, "subscribe budget"))

    def _check_resubscriptions_fit(self) -> None:
        """Raises ValueError when a symbol's resubscription has more messages than a
        connection's whole subscribe budget: it could never be sent (it would renew the
        connection on every resync instead), so the venue is refused at its start."""
        resubscribe = self.adapter.resubscribe_messages
        limit = self.limits.subscribe_requests_per_hour
        if resubscribe is None or limit is None:
            return
        budget = _subscribe_budget(limit).budget
        for symbol in self.cfg.symbols:
            group = len(resubscribe(symbol))
            if group > budget:
                raise ValueError(
                    f"{self.cfg.venue}: resubscribing {symbol} takes {group} requests, "
                    f"more than the {budget} a connection may send per hour"
                )

    def on_state(self, conn_id: int, up: bool) -> None:
        if self.capture is not None:
            url = self.connections[conn_id].url
            if up:
                self.capture.record_connect(conn_id, url, self.cfg.venue)
            else:
                self.capture.record_disconnect(conn_id, url)
        if self.stopping:
            self.stop()  # before the pipeline hears of it: the stop's disconnects are no outage
        # Why it ended: the venue's close reason may name a symbol it refuses.
        reason = "" if up else self.connections[conn_id].stats.last_error
        self._act(self.pipeline.receive_connection(conn_id, up, self._clock_ns(), reason))
        if not up:
            self._renew(self._machines().down(conn_id))
            slot = self.connections[conn_id].slot
            if (
                slot in self._rotating
                and self.renewals.slot_of(conn_id) == slot
                and self.renewals.state(slot) is Renewal.STEADY
            ):
                self._rotating.discard(slot)  # its renewal ended before a replacement opened
        else:
            self._subscribe_budgets.pop(conn_id, None)  # a new connection, a new count

    def on_sent(self, conn_id: int, key: str | None) -> None:
        """Connection ``conn_id`` wrote a symbol's resubscription (``key``, the symbol) or,
        None, its subscription (its slot's symbols): the pipeline's waits for their
        snapshots start now."""
        connection = self.connections.get(conn_id)
        if connection is not None:
            symbols = self.slots[connection.slot].symbols if key is None else (key,)
            self.pipeline.receive_sent(conn_id, symbols, self._clock_ns())

    def on_snapshot(self, snapshot: DepthSnapshot, attempt: int | None = None) -> None:
        """The fetcher's answer to ``attempt`` (discarded by the pipeline when superseded);
        None: not tagged, used as it comes."""
        self._act(self.pipeline.receive_snapshot(snapshot, self._clock_ns(), attempt))

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
        connection that received the frame, ``frame_conn_id``, to reconnect at once (its
        copies went wrong): that connection's reader acts on it. A venue's notice renews
        the connection make-before-break instead."""
        reconnect = False
        for action in step.actions:
            if isinstance(action, pipeline.FetchSnapshot):
                if self.fetcher is not None:
                    self.fetcher.request(action.symbol, action.attempt)
            elif isinstance(action, pipeline.Resubscribe):
                self._resubscribe(action)
            elif isinstance(action, pipeline.BookRebuilt):
                if self.fetcher is not None:
                    self.fetcher.succeeded(action.symbol)
            elif isinstance(action, pipeline.SymbolRejected):
                self._without(action)
            elif isinstance(action, pipeline.Reconnect):
                if action.renew:
                    self._renew(self._machines().due(action.conn_id, "notice"))
                elif action.conn_id == frame_conn_id:
                    reconnect = True  # its reader closes it at once
                else:
                    # Another connection, its copies contradicted or its sequence unknown
                    # after a venue reset: replaced, make before break.
                    cause = "contradicted" if action.fault else "venue reset"
                    self._renew(self._machines().due(action.conn_id, cause))
            elif isinstance(action, pipeline.CaughtUp):
                self._renew(self._machines().caught_up(action.conn_id))
        if step.publications:
            self._publish(step.publications)
        return reconnect

    def _without(self, rejected: pipeline.SymbolRejected) -> None:
        """Subscribes every connection without the symbols the venue refused, from its next
        connect on (each slot: its shard less the refused); sends the rest of its shard again
        on the connection whose request was refused. A slot whose shard would be left empty
        stays as it is."""
        symbols = [s for s in self.subscribed if s != rejected.symbol]
        if not symbols:
            return  # nothing left to subscribe: the connections stay as they are
        if symbols != self.subscribed:
            self.subscribed = symbols
            trade_url = self.adapter.trade_stream_url
            for slot, spec in self.slots.items():
                shard = tuple(s for s in spec.symbols if s != rejected.symbol)
                if not shard or shard == spec.symbols:
                    continue
                if not spec.trades_only:
                    rebuilt = self._book_slot(spec.endpoint, shard)
                    self.slots[slot] = replace(
                        spec, url=rebuilt.url, subscribe_messages=rebuilt.subscribe_messages
                    )
                elif trade_url is not None:
                    self.slots[slot] = replace(spec, url=trade_url(spec.endpoint, shard))
                self.slots[slot] = replace(self.slots[slot], symbols=shard)
            for connection in self.connections.values():
                spec = self.slots[connection.slot]
                connection.subscribe_with(spec.url, spec.subscribe_messages)
        refused = self.connections.get(rejected.conn_id)
        if rejected.resend and refused is not None:
            shard = tuple(s for s in self.slots[refused.slot].symbols if s != rejected.symbol)
            if shard:
                refused.subscribe(self.adapter.subscribe_messages(shard))
