"""Upstream shells: one WebSocket connection per venue endpoint, and the REST snapshot
fetcher. Thin: they receive, hand bytes to the service, and act on what it returns.

An endpoint's or REST base's ``user:password@`` is sent to the venue and shown nowhere:
the endpoint and base the stats, metrics and log lines name, and the errors kept, show it
as ``user:***@`` (:func:`gateway.wire.tokens.redact`)."""

from __future__ import annotations

import asyncio
import enum
import importlib
import logging
import math
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Final

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect

from gateway.core.backoff import Backoff
from gateway.core.backoff import ReconnectPolicy
from gateway.core.budget import RATE_LIMIT_STATUSES
from gateway.core.budget import AttemptBudget
from gateway.core.budget import WeightBudget
from gateway.core.budget import retry_after_s
from gateway.core.model import DepthSnapshot
from gateway.core.model import VenueContractError
from gateway.core.ratelimit import TokenBucket
from gateway.core.stats import ConnectionStats
from gateway.core.stats import FetcherStats
from gateway.io.changes import StateChanges
from gateway.io.logs import FD_EXHAUSTION
from gateway.io.logs import FdExhaustion
from gateway.io.logs import LimitedLog
from gateway.io.logs import redact_secrets
from gateway.wire.tokens import redact
from gateway.wire.venues import VenueAdapter

log = logging.getLogger(__name__)
# An endpoint's URL may carry a password: websockets' and httpx's own lines show URLs.
redact_secrets(log, logging.getLogger("websockets.client"), logging.getLogger("httpx"))

#: Largest frame accepted from a venue by default (each venue's own is
#: :attr:`~gateway.wire.venues.VenueAdapter.max_frame_bytes`).
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
#: Frames websockets may hold unread before it stops reading the socket (back-pressure).
MAX_QUEUED_FRAMES: Final = 64
#: Outgoing messages a connection may hold (resubscribes, pings) beyond its subscriptions.
MAX_OUTBOX_MESSAGES: Final = 64
#: Largest REST snapshot body read by default (a 5000-level snapshot is under 1 MiB).
MAX_REST_BODY_BYTES: Final = 16 * 1024 * 1024
#: Bytes of a failed REST response's body quoted in its error.
ERROR_BODY_QUOTE_BYTES: Final = 200
#: What httpx imports only once it runs: its client's transport (httpcore, certifi) when
#: made, and the network backend (anyio's, for asyncio) on its first request. Some 40 ms of
#: imports that would block the event loop, the first snapshot's frames waiting behind
#: them; :class:`SnapshotFetcher` imports them when it is made (a test holds the list to
#: what httpx imports).
HTTP_MODULES: Final = ("httpcore._backends.anyio", "anyio._backends._asyncio", "certifi")

#: on_frame(conn_id, raw, recv_ns) -> True when the venue asked this connection to reconnect.
FrameHandler = Callable[[int, bytes, int], bool]
#: on_state(conn_id, up)
StateHandler = Callable[[int, bool], None]
#: on_sent(conn_id, key): the last message of a group went out (:class:`Connection`).
SentHandler = Callable[[int, str | None], None]


class Sent(enum.Enum):
    """What :meth:`Connection.send` did with a group of messages."""

    #: Queued now (and taken from the budget given).
    QUEUED = "queued"
    #: Not queued: a group of the same key is queued, its last not yet taken for sending,
    #: and answers for them.
    ANSWERED = "answered"
    #: Not queued: the budget given has no room for them now.
    OVER_BUDGET = "over budget"
    #: Not queued: the connection is down (its subscriptions are sent again on connect) or
    #: its queue is full; counted in ``stats.messages_dropped``.
    DROPPED = "dropped"


class _Subscription(enum.Enum):
    """Marks the last message of a subscription in a connection's queue."""

    LAST = enum.auto()


#: What a queued message is the last of: a keyed group (its key), a subscription, or
#: nothing to report (None).
_Mark = str | _Subscription | None


class _Ended(enum.Enum):
    """Why an open connection ended, besides its close."""

    NOTICE = enum.auto()
    AGED = enum.auto()
    STALLED = enum.auto()


class Connection:
    """Keeps one WebSocket connection to one endpoint open, forever.

    After each connect it sends the venue's subscribe messages, then the venue's
    application-level ping every ``ping_interval_s`` where the venue wants one; protocol
    pings from the venue are answered by websockets. Outgoing messages go through a bounded
    queue (:meth:`send`), paced to ``max_messages_per_s`` (venues disconnect clients that
    send faster).

    Reconnects with capped exponential backoff and jitter after a failure; at once after a
    venue's reconnect notice or when the connection reaches ``max_age_s`` (renewed before
    the venue's own limit), if it was healthy. The backoff starts over only once the
    connection was up and receiving for ``healthy_after_s``
    (:class:`~gateway.core.backoff.ReconnectPolicy` decides). A connection that delivers
    nothing for ``stall_timeout_s`` is closed and reopened. Every attempt first waits for
    the venue's ``attempts`` budget, shared by the venue's connections.

    A frame above ``max_frame_bytes`` (its length is in its header) is not read: the
    connection is closed with 1009 (the venue broke its contract), counted in
    ``stats.oversized_frames``, logged rate-limited, and reopened after the backoff.

    With ``on_aged``, reaching ``max_age_s`` does not close the connection: ``on_aged`` is
    told and the connection serves on until its owner cancels :meth:`run` (a renewal that
    opens the replacement before the old connection closes, :mod:`gateway.core.renewal`).

    With ``on_sent``, ``on_sent(conn_id, key)`` is told when the last message of a keyed
    group (:meth:`send`) was written to the socket, and ``on_sent(conn_id, None)`` when the
    subscription was (its messages on connect, at once where there are none: the URL
    subscribes; or sent again, :meth:`subscribe`): the venue's answer can come from then on.

    ``clock_s`` and ``sleep`` are the time everything here runs on: the policy, the
    budget, the waits between attempts, the stall and age deadlines (the connect's own
    ``open_timeout_s`` excepted).
    """

    def __init__(
        self,
        conn_id: int,
        url: str,
        *,
        on_frame: FrameHandler,
        on_state: StateHandler,
        backoff: Backoff,
        stall_timeout_s: float,
        max_age_s: float,
        open_timeout_s: float = 10.0,
        subscribe_messages: Sequence[bytes] = (),
        ping_message: bytes | None = None,
        ping_interval_s: float = 20.0,
        max_messages_per_s: float = 4.0,
        changes: StateChanges | None = None,
        healthy_after_s: float = 10.0,
        attempts: AttemptBudget | None = None,
        shared_messages: TokenBucket | None = None,
        clock_s: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        fd_exhaustion: FdExhaustion = FD_EXHAUSTION,
        venue: str = "",
        on_aged: Callable[[int], None] | None = None,
        slot: int | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        on_sent: SentHandler | None = None,
    ) -> None:
        self.conn_id = conn_id
        self._on_sent = on_sent
        self.max_frame_bytes = max_frame_bytes
        #: The configured connection this one serves (stable across renewals); None: its own.
        self.slot = conn_id if slot is None else slot
        #: on_aged(conn_id): called at ``max_age_s`` instead of closing; the owner renews
        #: the connection (make-before-break) and cancels :meth:`run` when it is replaced.
        self._on_aged = on_aged
        self.url = url
        self._on_frame = on_frame
        self._on_state = on_state
        self.policy = ReconnectPolicy(backoff, healthy_after_s)
        #: The venue's connection-attempt budget; None: attempts are not limited.
        self.attempts = attempts
        #: Messages per second the venue allows every connection of the source address
        #: together (Coinbase), shared by them; None: only this connection's pace.
        self.shared_messages = shared_messages
        self._clock_s = clock_s
        self._sleep = sleep
        self._fd_exhaustion = fd_exhaustion
        self._log = LimitedLog(log, clock_s=clock_s)
        self._stall_timeout_s = stall_timeout_s
        self._max_age_s = max_age_s
        self._open_timeout_s = open_timeout_s
        self._subscribe_messages = list(subscribe_messages)
        self._ping_message = ping_message
        self._ping_interval_s = ping_interval_s
        self._send_interval_s = 1.0 / max_messages_per_s
        #: Messages to send, each with what it is the last of (:data:`_Mark`).
        self._outbox: asyncio.Queue[tuple[bytes, _Mark]] | None = None
        #: Keys of the groups queued whose last message is not written yet.
        self._queued_keys: set[str] = set()
        #: When the open connection last received a frame (or opened), on ``clock_s``.
        self._last_recv_s = 0.0
        self.stats = ConnectionStats()
        #: Notified after the connection goes up (``on_state`` told) or down, and after a
        #: failed attempt; may be shared by several connections.
        self.changes = StateChanges() if changes is None else changes
        #: The endpoint without the stream list and without a password, for logs and views.
        self.endpoint = redact(url.partition("?")[0].removesuffix("/stream"))
        #: The fields of this connection's log records (``extra=``; JSON logs show them).
        self.log_fields = {"venue": venue, "connection": conn_id, "endpoint": self.endpoint}

    @property
    def last_heard_s(self) -> float | None:
        """When the connection last received a frame or opened (``clock_s``); None: never."""
        return self._last_recv_s if self.stats.connects else None

    def subscribe_with(self, url: str, subscribe_messages: Sequence[bytes]) -> None:
        """From the next connect on, open ``url`` and send ``subscribe_messages`` (the
        venue refused a symbol: the others are subscribed without it)."""
        self.url = url
        self._subscribe_messages = list(subscribe_messages)

    def send(
        self,
        messages: Sequence[bytes],
        key: str | None = None,
        *,
        budget: AttemptBudget | None = None,
        now_s: float = 0.0,
    ) -> Sent:
        """Queue text messages for the venue, in order (:class:`Sent` says whether).

        ``key`` names what they ask for (a symbol's resubscription): while messages of that
        key are queued, their last not yet written, the same key is not queued again
        (ANSWERED: the snapshot the queued ones bring follows whatever asked again); once
        their last is written, ``on_sent(conn_id, key)`` is told.
        ``budget`` (a venue's subscribe requests per connection, with ``now_s`` on its
        clock) is spent one attempt per message when, and only when, they are queued, and
        only when the whole group fits in its window now (OVER_BUDGET otherwise: never part
        of a group, never one attempt past the budget). Nothing is spent for messages not
        queued. A group larger than the whole budget can never fit: ValueError (from
        :meth:`AttemptBudget.wait_s <gateway.core.budget.AttemptBudget.wait_s>`), which
        whoever builds the groups rules out beforehand (:class:`VenueRuntime
        <gateway.io.venue_runtime.VenueRuntime>` at its start)."""
        if key is not None and key in self._queued_keys:
            return Sent.ANSWERED
        outbox = self._outbox
        if outbox is None or outbox.maxsize - outbox.qsize() < len(messages):
            self.stats.messages_dropped += len(messages)
            return Sent.DROPPED
        if budget is not None:
            if budget.wait_s(now_s, attempts=len(messages)) > 0:
                return Sent.OVER_BUDGET
            budget.spend(now_s, attempts=len(messages))
        self._put(outbox, messages, key)
        if key is not None and messages:
            self._queued_keys.add(key)
        return Sent.QUEUED

    def subscribe(self, messages: Sequence[bytes]) -> Sent:
        """Queue subscribe messages now (the venue refused a request whole: the others
        again); ``on_sent(conn_id, None)`` once the last is written. QUEUED, or DROPPED
        (:meth:`send`)."""
        outbox = self._outbox
        if outbox is None or outbox.maxsize - outbox.qsize() < len(messages):
            self.stats.messages_dropped += len(messages)
            return Sent.DROPPED
        self._put(outbox, messages, _Subscription.LAST)
        return Sent.QUEUED

    @staticmethod
    def _put(
        outbox: asyncio.Queue[tuple[bytes, _Mark]], messages: Sequence[bytes], last: _Mark
    ) -> None:
        for i, message in enumerate(messages, 1):
            outbox.put_nowait((message, last if i == len(messages) else None))

    async def run(self) -> None:
        """Runs until cancelled."""
        while True:
            spent_s = await self._within_budget()
            renew = await self._session(spent_s)
            await self._sleep(self.policy.ended(renew=renew))

    async def _within_budget(self) -> float:
        """Waits until the venue's attempt budget admits an attempt, and spends it; the
        clock reading it was spent at."""
        if self.attempts is None:
            return 0.0
        while (wait_s := self.attempts.wait_s(self._clock_s())) > 0:
            self.stats.budget_waits += 1
            # Pacing within the venue's limit is the budget working, not a fault (counted in
            # budget_waits; the failures that made a reconnect storm are warned about).
            self._log.info(
                "attempt budget",
                "conn %d %s: the venue's connection-attempt budget (%d per %g s) is spent; "
                "waiting %.3g s",
                self.conn_id,
                self.endpoint,
                self.attempts.budget,
                self.attempts.window_s,
                wait_s,
                extra=self.log_fields,
            )
            await self._sleep(wait_s)
        spent_s = self._clock_s()
        self.attempts.spend(spent_s)
        return spent_s

    def _handshake_ended(self, spent_s: float) -> None:
        """The venue counted the attempt when its handshake arrived, at the latest now: the
        budget counts it from now on."""
        if self.attempts is not None:
            self.attempts.settle(spent_s, self._clock_s())

    async def _session(self, spent_s: float = 0.0) -> bool:
        """One attempt (spent from the budget at ``spent_s``) and, if it connects, the
        connection's life. Returns True when the connection ended to be renewed (the
        venue's notice, its maximum age)."""
        handshaking = True
        try:
            async with connect(
                self.url,
                compression=None,
                open_timeout=self._open_timeout_s,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                max_size=self.max_frame_bytes,
                max_queue=MAX_QUEUED_FRAMES,
            ) as ws:
                handshaking = False
                self._handshake_ended(spent_s)
                self._up(self._clock_s())
                outbox: asyncio.Queue[tuple[bytes, _Mark]] = asyncio.Queue(
                    maxsize=MAX_OUTBOX_MESSAGES + len(self._subscribe_messages)
                )
                if self._subscribe_messages:
                    self._put(outbox, self._subscribe_messages, _Subscription.LAST)
                elif self._on_sent is not None:
                    self._on_sent(self.conn_id, None)  # the URL subscribed
                self._outbox = outbox
                async with asyncio.TaskGroup() as tasks:
                    helpers = [tasks.create_task(self._write(ws, outbox))]
                    if self._ping_message is not None:
                        helpers.append(tasks.create_task(self._ping(outbox, self._ping_message)))
                    try:
                        return await self._read(ws, tasks)
                    finally:
                        for helper in helpers:
                            helper.cancel()
        except TimeoutError:
            self._failed("connect timed out")
        except OSError as exc:
            if self._fd_exhaustion.failed(exc, "connecting upstream"):
                self._failed(f"{type(exc).__name__}: {exc}", logged=True)
            else:
                self._failed(f"{type(exc).__name__}: {exc}", type(exc).__name__)
        except websockets.exceptions.InvalidStatus as exc:
            self._refused(exc)
            self._failed(f"{type(exc).__name__}: {exc}", type(exc).__name__)
        except websockets.exceptions.WebSocketException as exc:
            self._failed(f"{type(exc).__name__}: {exc}", type(exc).__name__)
        finally:
            if handshaking:
                self._handshake_ended(spent_s)
            self._outbox = None
            self._queued_keys.clear()
            self._down()
        return False

    async def _read(self, ws: ClientConnection, tasks: asyncio.TaskGroup) -> bool:
        """Hands every frame to the service until the connection ends (closed, stalled,
        aged, or the venue's notice); returns True when it ended to be renewed."""
        up_s = self._last_recv_s = self._clock_s()
        age_deadline_s = up_s + self._max_age_s
        receiver = tasks.create_task(self._receive(ws))
        try:
            while True:
                watchdog = tasks.create_task(self._watch(age_deadline_s))
                try:
                    done, _ = await asyncio.wait(
                        (receiver, watchdog), return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    watchdog.cancel()
                ended = receiver.result() if receiver in done else watchdog.result()
                if ended is not _Ended.AGED or self._on_aged is None:
                    break
                # Renewed make-before-break: the owner closes this connection when its
                # replacement caught up; until then it serves on, watched for stalls.
                age_deadline_s = math.inf
                self._on_aged(self.conn_id)
        finally:
            receiver.cancel()
        if ended is _Ended.NOTICE:
            self.stats.last_error = "venue asked to reconnect"
            self._log.info(
                "reconnect notice",
                "conn %d %s: venue asked to reconnect",
                self.conn_id,
                self.endpoint,
                extra=self.log_fields,
            )
            return True
        if ended is _Ended.AGED:
            self.stats.last_error = "renewed at max age"
            return True
        if ended is _Ended.STALLED:
            self._failed("stalled")
        elif (too_big := _too_big(ended)) is not None:
            self.stats.oversized_frames += 1
            self._failed(
                f"{too_big}, max_frame_bytes: the venue broke its contract; closed (1009)",
                "oversized frame",
            )
        else:
            self._failed(f"closed: {ended}", "closed")
        return False

    async def _receive(self, ws: ClientConnection) -> _Ended | websockets.ConnectionClosed:
        """Receives until the venue's notice (NOTICE) or the close (returned)."""
        try:
            while True:
                raw = await ws.recv(decode=False)
                self._last_recv_s = now_s = self._clock_s()
                self.stats.frames += 1
                self.stats.received_bytes += len(raw)
                self.policy.received(now_s)
                if self._on_frame(self.conn_id, raw, time.time_ns()):
                    return _Ended.NOTICE
        except websockets.ConnectionClosed as exc:
            return exc

    async def _watch(self, age_deadline_s: float) -> _Ended:
        """Returns when the connection stalled (nothing received for ``stall_timeout_s``)
        or reached its age; wakes about once per ``stall_timeout_s`` while frames flow."""
        while True:
            now_s = self._clock_s()
            if now_s >= age_deadline_s:
                return _Ended.AGED
            stall_s = self._last_recv_s + self._stall_timeout_s
            if now_s >= stall_s:
                return _Ended.STALLED
            await self._sleep(min(stall_s, age_deadline_s) - now_s)

    async def _write(
        self, ws: ClientConnection, outbox: asyncio.Queue[tuple[bytes, _Mark]]
    ) -> None:
        try:
            while True:
                message, last = await outbox.get()
                shared = self.shared_messages
                if shared is not None:
                    while not shared.take(self._clock_s()):
                        await self._sleep(shared.wait_s(self._clock_s()))
                await ws.send(message, text=True)
                self.stats.messages_sent += 1
                if last is not None:
                    key = None if last is _Subscription.LAST else last
                    if key is not None:
                        self._queued_keys.discard(key)
                    if self._on_sent is not None:
                        self._on_sent(self.conn_id, key)
                await asyncio.sleep(self._send_interval_s)
        except websockets.exceptions.ConnectionClosed:
            pass  # the reader sees the close and ends the session

    async def _ping(self, outbox: asyncio.Queue[tuple[bytes, _Mark]], message: bytes) -> None:
        while True:
            await asyncio.sleep(self._ping_interval_s)
            if outbox.full():
                self.stats.messages_dropped += 1
            else:
                outbox.put_nowait((message, None))

    def _up(self, now_s: float) -> None:
        self.stats.connected = True
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self.stats.connected_since_s = now_s
        self.policy.connected(self._clock_s())
        self._fd_exhaustion.succeeded()
        self._log.info(
            "connected",
            "conn %d connected to %s",
            self.conn_id,
            self.endpoint,
            extra=self.log_fields,
        )
        self._on_state(self.conn_id, True)
        self.changes.notify()

    def _refused(self, exc: websockets.exceptions.InvalidStatus) -> None:
        """A handshake refused over the venue's limits (429, or 418: banned): no
        connection sharing the attempt budget tries again before its ``Retry-After``."""
        response = exc.response
        if self.attempts is not None and response.status_code in RATE_LIMIT_STATUSES:
            self.stats.rate_limited += 1
            wait_s = retry_after_s(response.headers.get("Retry-After", ""))
            self.attempts.rate_limited(wait_s, self._clock_s())

    def _down(self) -> None:
        if self.stats.connected:
            self.stats.connected = False
            self._on_state(self.conn_id, False)
            self.changes.notify()

    def _failed(self, what: str, cause: str | None = None, *, logged: bool = False) -> None:
        """Counts and logs a failure; ``cause`` (default ``what``) is its kind, per which
        the log is limited: a venue chooses the text of its close reasons."""
        if not self.stats.connected:
            self.stats.failed_attempts += 1
        self.stats.last_error = what
        if not logged:
            self._log.warning(
                cause or what,
                "conn %d %s: %s",
                self.conn_id,
                self.endpoint,
                what,
                extra=self.log_fields,
            )
        self.changes.notify()


def _too_big(ended: object) -> str | None:
    """websockets' reason (``frame with N bytes exceeds limit of M bytes``) when the
    connection ended because it refused a frame above ``max_size``: the gateway sent 1009
    first (a 1009 of the venue's is echoed, not sent first); None otherwise."""
    if (
        isinstance(ended, websockets.ConnectionClosed)
        and ended.sent is not None
        and ended.sent.code == websockets.CloseCode.MESSAGE_TOO_BIG
        and not ended.rcvd_then_sent
    ):
        return ended.sent.reason or "a frame too big"
    return None


class BodyTooLarge(VenueContractError):
    """A REST body above the configured cap: abandoned unread, a failed fetch."""


class RateLimited(Exception):
    def __init__(self, retry_after_s: float, status: int) -> None:
        super().__init__(f"HTTP {status}, retry after {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


#: on_snapshot(snapshot, attempt): the answer to the request of that attempt.
SnapshotHandler = Callable[[DepthSnapshot, int], None]


class SnapshotFetcher:
    """Fetches REST snapshots on request, off the reader path, each symbol on its own.

    Each symbol with a request gets its own task (at most one per symbol, so the tasks are
    bounded by the number of symbols), which retries with the symbol's own backoff: one
    symbol's failures never delay another's snapshot. At most ``max_concurrent`` requests
    are in flight at once, and all of them share the venue's REST weight budget
    (:class:`gateway.core.budget.WeightBudget`, on ``clock_s``): a 429/418 blocks every
    symbol for its Retry-After (the venue bans the IP, not a symbol). The venue's REST bases
    are tried in order.

    Every request carries its attempt id (:meth:`request`); the snapshot is handed back
    with the attempt that was current when its request was sent, and fetched again when a
    newer attempt was asked meanwhile. The pipeline discards answers to superseded attempts
    (:class:`gateway.core.snapshots.SnapshotAttempts`).

    Bodies are read as a stream and abandoned (a failed fetch, :class:`BodyTooLarge`) as
    soon as they pass ``max_body_bytes``, decompressed; a declared ``Content-Length`` above
    it is not read at all. Failures are logged rate-limited per base and kind.

    Made, it imports what httpx would import later on the event loop (:data:`HTTP_MODULES`).
    """

    def __init__(
        self,
        adapter: VenueAdapter,
        rest_bases: list[str],
        *,
        limit: int,
        on_snapshot: SnapshotHandler,
        timeout_s: float,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 30.0,
        max_concurrent: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        on_response: Callable[[str, bytes, int], object] | None = None,
        clock_s: Callable[[], float] = time.monotonic,
        max_body_bytes: int = MAX_REST_BODY_BYTES,
        on_audit: Callable[[DepthSnapshot], None] | None = None,
        budget: WeightBudget | None = None,
    ) -> None:
        if adapter.snapshot_url is None or adapter.parse_snapshot is None:
            raise ValueError(f"venue {adapter.venue} has no REST snapshots")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        for module in HTTP_MODULES:  # now, not on the event loop (HTTP_MODULES)
            importlib.import_module(module)
        self._adapter = adapter
        self._snapshot_url = adapter.snapshot_url
        self._parse_snapshot = adapter.parse_snapshot
        self._bases = list(rest_bases)
        #: Each base as logs, stats and metrics show it: without a password.
        self._shown = {base: redact(base) for base in rest_bases}
        self._limit = limit
        self._on_snapshot = on_snapshot
        self._timeout_s = timeout_s
        self._transport = transport
        #: on_response(url, body, recv_ns): every 200 response body, before it is parsed.
        self._on_response = on_response
        #: Symbols whose task is to be started (each symbol once: bounded by the symbols).
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        #: Symbols queued or with a task running.
        self._queued: set[str] = set()
        #: The latest attempt asked per symbol.
        self._wanted: dict[str, int] = {}
        self._backoffs: dict[str, Backoff] = {}
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._max_concurrent = max_concurrent
        self._clock_s = clock_s
        self._max_body_bytes = max_body_bytes
        self._log = LimitedLog(log, clock_s=clock_s)
        self._weight = adapter.snapshot_weight(limit)
        #: The REST weight budget, shared by every fetcher of the same venue limits and
        #: source address (None: one of its own at the venue's limit).
        self.budget = WeightBudget(adapter.rest_weight_per_minute) if budget is None else budget
        self.stats = FetcherStats()
        # --- audit fetches (gateway.core.audit) ---
        #: on_audit(snapshot): a snapshot fetched by request_audit, never to be applied.
        self._on_audit = on_audit
        #: Symbols whose queued or running fetch is an audit.
        self._audits: set[str] = set()

    def request_audit(self, symbol: str) -> None:
        """Ask for a snapshot of ``symbol`` to audit its book, within the same budget; one
        fetch for the book already queued serves instead (it is applied, not audited). A
        failed audit fetch is not retried."""
        if symbol not in self._queued and self._on_audit is not None:
            self._audits.add(symbol)
            self._queued.add(symbol)
            self._queue.put_nowait(symbol)

    def request(self, symbol: str, attempt: int) -> None:
        """Ask for a snapshot of ``symbol`` for ``attempt``; a symbol already being fetched
        is not fetched twice at once (its answer goes to the latest attempt asked, or it
        is fetched again for it). An audit fetch under way is then not audited."""
        self._audits.discard(symbol)  # a fetch for the book is applied, not audited
        self._wanted[symbol] = attempt
        if symbol not in self._queued:
            self._queued.add(symbol)
            self._queue.put_nowait(symbol)

    def succeeded(self, symbol: str) -> None:
        """The book of ``symbol`` is live again: its next request need not wait."""
        backoff = self._backoffs.get(symbol)
        if backoff is not None:
            backoff.reset()

    async def run(self) -> None:
        """Runs until cancelled."""
        slots = asyncio.Semaphore(self._max_concurrent)
        async with (
            httpx.AsyncClient(
                timeout=self._timeout_s, transport=self._transport, follow_redirects=False
            ) as client,
            asyncio.TaskGroup() as tasks,
        ):
            while True:
                symbol = await self._queue.get()
                tasks.create_task(self._symbol(client, slots, symbol), name=f"snapshot-{symbol}")

    async def _symbol(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, symbol: str
    ) -> None:
        """An audit fetch: one try, to on_audit. Otherwise (or when the book asked for a
        snapshot meanwhile: the audit's answer predates that attempt and is dropped) fetches
        ``symbol`` until a snapshot answered its latest attempt."""
        try:
            if symbol in self._audits:
                snapshot = await self._try_bases(client, slots, symbol)
                if symbol in self._audits:
                    self._audits.discard(symbol)
                    if snapshot is not None and self._on_audit is not None:
                        self._on_audit(snapshot)
                    return
            while True:
                attempt = self._wanted[symbol]
                snapshot = await self._fetch(client, slots, symbol)
                self._on_snapshot(snapshot, attempt)
                if self._wanted[symbol] == attempt:
                    return
        finally:
            self._queued.discard(symbol)

    async def _fetch(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, symbol: str
    ) -> DepthSnapshot:
        backoff = self._backoffs.setdefault(
            symbol, Backoff(min(self._backoff_initial_s, self._backoff_max_s), self._backoff_max_s)
        )
        if backoff.failures:
            await asyncio.sleep(backoff.next_delay_s())
        else:
            backoff.failures = 1  # a second request soon after this one waits
        while True:
            snapshot = await self._try_bases(client, slots, symbol)
            if snapshot is not None:
                return snapshot
            # Only this symbol waits: the others' requests go on.
            await asyncio.sleep(backoff.next_delay_s())

    async def _try_bases(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, symbol: str
    ) -> DepthSnapshot | None:
        """The snapshot of ``symbol`` from the first base that gives one, each request
        within the budget and one of ``slots``; None when every base failed or one rate
        limited (counted and logged)."""
        for base in self._bases:
            try:
                async with slots:
                    await self._respect_limits()
                    snapshot = await self._get(client, base, symbol)
            except RateLimited as exc:
                self.stats.rate_limited += 1
                self.budget.rate_limited(exc.retry_after_s, self._clock_s())
                self._fail(base, symbol, str(exc), "rate limited")
                return None
            except (httpx.HTTPError, VenueContractError) as exc:
                if isinstance(exc, BodyTooLarge):
                    self.stats.oversized += 1
                if FD_EXHAUSTION.failed(exc, "fetching snapshots"):
                    self.stats.failures += 1
                    self.stats.last_error = redact(f"{type(exc).__name__}: {exc}")
                    continue
                self._fail(base, symbol, f"{type(exc).__name__}: {exc}", type(exc).__name__)
                continue
            FD_EXHAUSTION.succeeded()
            self.stats.snapshots += 1
            shown = self._shown[base]
            self.stats.by_base[shown] = self.stats.by_base.get(shown, 0) + 1
            return snapshot
        return None

    async def _get(self, client: httpx.AsyncClient, base: str, symbol: str) -> DepthSnapshot:
        url = self._snapshot_url(base, symbol, self._limit)
        self.stats.requests += 1
        self.budget.spend(self._weight, self._clock_s())
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            return await self._get_in_flight(client, url, symbol)
        finally:
            self.stats.in_flight -= 1

    async def _get_in_flight(
        self, client: httpx.AsyncClient, url: str, symbol: str
    ) -> DepthSnapshot:
        async with client.stream("GET", url) as response:
            if response.status_code in RATE_LIMIT_STATUSES:
                retry_after = retry_after_s(response.headers.get("Retry-After", ""))
                raise RateLimited(retry_after, response.status_code)
            used = response.headers.get("X-MBX-USED-WEIGHT-1M", "")
            if used.isdigit():
                self.budget.observe_used(int(used), self._clock_s())
            if response.status_code != 200:
                quote = await _read_body(response, ERROR_BODY_QUOTE_BYTES, truncate=True)
                raise httpx.HTTPStatusError(
                    f"HTTP {response.status_code}: {quote.decode(errors='replace')}",
                    request=response.request,
                    response=response,
                )
            body = await _read_body(response, self._max_body_bytes)
        recv_ns = time.time_ns()
        if self._on_response is not None:
            self._on_response(url, body, recv_ns)
        return self._parse_snapshot(symbol, body, recv_ns, -1)

    async def _respect_limits(self) -> None:
        """Sleep until the budget admits the next request (asked again after each sleep)."""
        while (wait_s := self.budget.wait_s(self._weight, self._clock_s())) > 0:
            self.stats.rate_limit_waits += 1
            self.stats.rate_limit_wait_s += wait_s
            self._log.warning(
                "weight budget",
                "%s: REST weight budget used or rate limited; waiting %.1f s",
                self._adapter.venue,
                wait_s,
                extra={"venue": self._adapter.venue},
            )
            await asyncio.sleep(wait_s)

    def _fail(self, base: str, symbol: str, what: str, kind: str) -> None:
        what, base = redact(what), self._shown[base]
        self.stats.failures += 1
        self.stats.last_error = what
        self._log.warning(
            (base, kind),
            "snapshot of %s from %s failed: %s",
            symbol,
            base,
            what,
            extra={"venue": self._adapter.venue, "symbol": symbol},
        )


async def _read_body(response: httpx.Response, max_bytes: int, *, truncate: bool = False) -> bytes:
    """The body of a streamed ``response``, decompressed, read no further than
    ``max_bytes``: above it, raises :class:`BodyTooLarge` (``truncate``: returns the first
    ``max_bytes`` instead). A declared ``Content-Length`` above it is not read at all."""
    declared = response.headers.get("Content-Length", "")
    if not truncate and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"body of {declared} bytes declared, above {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            if truncate:
                return b"".join(chunks)[:max_bytes]
            raise BodyTooLarge(f"body above {max_bytes} bytes")
    return b"".join(chunks)
