"""Serving subscribers: one local WebSocket server, every message encoded once.

The asyncio shell between the service and its subscribers. :meth:`Fanout.publish` is
synchronous and called by the service after each pipeline step; it turns gateway events
into protocol messages (:mod:`gateway.wire.protocol`), encodes each one at most once per wire
format in use, builds the WebSocket frame once (server frames are unmasked and compression
is off, so the same bytes are valid on every connection) and writes those bytes to each
subscriber's transport. It never awaits and never creates a task.

Slow subscribers (the policy in ``docs/protocol.md``, decided per subscriber by
:class:`gateway.core.flow.SubscriberFlow`; this shell feeds it buffer sizes and the clock
and writes, resends or closes as it answers): a subscriber whose transport write
buffer holds more than ``max_buffer_bytes`` is *behind*. While behind, nothing more of its
symbols is written to it (deltas, bbo, trades and status are dropped and the symbols noted);
once its buffer drains to ``low_water_bytes`` it is sent, per noted symbol, the current
``status``, a fresh ``snapshot`` and the current ``bbo`` (conflation): its book is
consistent again and it skipped the deltas in between. Trades dropped meanwhile are lost. A
subscriber that falls behind more than ``max_conflations`` times within
``conflation_window_s``, or stays behind longer than ``max_behind_s``, is disconnected with
close code 1008 and reason "subscriber too slow: ...". Memory per subscriber is thus bounded
by ``max_buffer_bytes`` plus the largest single message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import http
import itertools
import logging
import secrets
import struct
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Protocol
from urllib.parse import parse_qs

import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from gateway.core.flow import WRITE, FlowAction, FlowPolicy, FlowState, SubscriberFlow
from gateway.core.model import (
    BookDelta,
    BookReset,
    GatewayEvent,
    StatusChange,
    SymbolState,
    TradeOut,
)
from gateway.core.pipeline import BookState
from gateway.core.ratelimit import TokenBucket
from gateway.io.changes import StateChanges
from gateway.io.health import HttpAnswer, HttpRoute, health_answer
from gateway.io.logs import FD_EXHAUSTION, LimitedLog
from gateway.wire.config import ServerConfig, exposure_warning, listen_error
from gateway.wire.protocol import (
    Bbo,
    CloseCode,
    Delta,
    Error,
    ErrorCode,
    ListSymbols,
    Ping,
    Pong,
    ProtocolError,
    Resync,
    ServerMessage,
    Snapshot,
    Status,
    Subscribe,
    Subscribed,
    SymbolInfo,
    Symbols,
    TradeMsg,
    Unsubscribe,
    Unsubscribed,
    decode_request,
    encode_json,
    encode_msgpack,
)
from gateway.wire.protocol import (
    Request as ClientRequest,
)
from gateway.wire.recovery import RecoveryRing, RingEntry, new_instance

log = logging.getLogger(__name__)

#: Close code for a subscriber disconnected by the slow-subscriber policy.
CLOSE_TOO_SLOW: Final = CloseCode.TOO_SLOW  # 1008
#: Close code for a connection refused because ``max_subscribers`` are connected.
CLOSE_TOO_MANY: Final = CloseCode.TRY_AGAIN_LATER  # 1013
#: Close code for a subscriber whose serving raised: only that subscriber is closed.
CLOSE_INTERNAL_ERROR: Final = CloseCode.INTERNAL_ERROR  # 1011
#: The reason sent with :data:`CLOSE_INTERNAL_ERROR`.
INTERNAL_ERROR_REASON: Final = "internal error"

_OPEN: Final = State.OPEN
_LIVE: Final = FlowState.LIVE
_BEHIND: Final = FlowState.BEHIND
_DISCONNECTED: Final = FlowState.DISCONNECTED
_DEFAULTS: Final = ServerConfig()
_TEXT: Final = int(Opcode.TEXT)
_BINARY: Final = int(Opcode.BINARY)


#: The path of the WebSocket endpoint; every other path is an HTTP route or 404.
WEBSOCKET_PATH: Final = "/"


class BookView(Protocol):
    """What the fanout reads from the service.

    Contract: between two :meth:`Fanout.publish` calls, and during one, the view reflects
    every event passed to ``publish`` so far (the service updates its books, then publishes
    the events of that step, with no await in between).
    """

    def book_state(self, key: str) -> BookState | None:
        """The symbol's consistent book, or None when ``key`` is unknown or has no
        consistent book (before its first snapshot, or while it is being resynced)."""
        ...

    def symbols(self) -> list[tuple[str, SymbolState]]:
        """Every symbol key the gateway carries, with its state."""
        ...


def build_frame(payload: bytes, *, binary: bool) -> bytes:
    """One unmasked, unfragmented, uncompressed WebSocket frame: the bytes a server sends.

    Equal to ``websockets.frames.Frame(opcode, payload).serialize(mask=False,
    extensions=[])`` (tested), without its per-call overhead.
    """
    head1 = 0x80 | (_BINARY if binary else _TEXT)
    length = len(payload)
    if length < 126:
        return bytes((head1, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", head1, 126, length) + payload
    return struct.pack("!BBQ", head1, 127, length) + payload


def _frame_json(msg: ServerMessage) -> bytes:
    return build_frame(encode_json(msg), binary=False)


def _frame_msgpack(msg: ServerMessage) -> bytes:
    return build_frame(encode_msgpack(msg), binary=True)


@dataclasses.dataclass(slots=True)
class FanoutStats:
    """Counters over the fanout's life (``subscribers`` is the current count)."""

    subscribers: int = 0
    subscribers_total: int = 0
    rejected: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    dropped: int = 0
    conflations: int = 0
    slow_disconnects: int = 0
    bad_requests: int = 0
    #: Subscribers closed with 1011 because serving them raised (a bug, isolated).
    subscriber_errors: int = 0
    #: Close frames the gateway sent first, by close code (1008, 1009, 1011, 1013...).
    closes_sent: dict[int, int] = dataclasses.field(default_factory=dict)
    #: Requests refused because of the connection's request rate (``rate_limited``).
    rate_limited: int = 0
    #: HTTP requests refused at the handshake, by status (401, 403, 404).
    http_refused: dict[int, int] = dataclasses.field(default_factory=dict)
    #: Symbols recovered from the ring (``subscribe.recover``), deltas re-sent for them,
    #: and symbols whose recovery could not be served (a snapshot instead).
    recoveries: int = 0
    recovered_messages: int = 0
    recovery_misses: int = 0


class SubscriberStats(msgspec.Struct, frozen=True):
    """One subscriber's counters, as read by :meth:`Fanout.subscriber_stats`; its lag:
    ``buffered_bytes`` written but not yet sent, ``behind_s`` how long it has been behind
    (0 while live)."""

    id: int
    remote: str
    wire_format: str
    books: int
    messages_sent: int
    bytes_sent: int
    dropped: int
    conflations: int
    bad_requests: int
    behind: bool
    buffered_bytes: int
    behind_s: float


class _Subscriber:
    """One connection's subscriptions, flow state and counters."""

    __slots__ = (
        "abort_handle",
        "bad_requests",
        "bbo",
        "books",
        "bytes_sent",
        "conn",
        "flow",
        "id",
        "messages_sent",
        "msgpack",
        "protocol",
        "remote",
        "requests",
        "trades",
        "transport",
    )

    def __init__(
        self, sub_id: int, conn: ServerConnection, policy: FlowPolicy, requests: TokenBucket
    ) -> None:
        self.id = sub_id
        #: The rate of the requests that cost the gateway work (subscribe, resync, list).
        self.requests = requests
        self.conn = conn
        self.transport = conn.transport
        self.protocol = conn.protocol
        self.remote = _remote(conn)
        self.msgpack = False
        #: Book subscriptions: key → snapshot depth (None: full book).
        self.books: dict[str, int | None] = {}
        self.bbo: set[str] = set()
        self.trades: set[str] = set()
        self.flow = SubscriberFlow(policy)
        self.abort_handle: asyncio.TimerHandle | None = None
        self.messages_sent = 0
        self.bytes_sent = 0
        self.bad_requests = 0

    def subscribed_to(self, key: str) -> bool:
        return key in self.books or key in self.bbo or key in self.trades


_SubSet = dict[_Subscriber, None]


def _remote(conn: ServerConnection) -> str:
    address = conn.remote_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


class Fanout:
    """Serves the gateway's books, bbo, trades and statuses to local subscribers.

    Args:
        view: where snapshots and symbol states are read (see :class:`BookView`).
        max_buffer_bytes: a subscriber whose transport write buffer is above this is behind.
        max_conflations: a subscriber falling behind more often than this within
            ``conflation_window_s`` is disconnected (1008).
        conflation_window_s: the window of ``max_conflations``.
        max_behind_s: a subscriber behind for longer than this is disconnected (1008).
        low_water_bytes: a behind subscriber is resynced once its buffer is at or below
            this; default ``max_buffer_bytes // 4``.
        max_subscribers: further connections are closed with 1013.
        check_interval_s: how often behind subscribers are checked for recovery/deadline.
        close_timeout_s: a disconnected subscriber's TCP connection is aborted if the
            closing handshake has not finished by then.
        ping_interval_s: WebSocket keepalive ping interval (None: off); the ping timeout is
            the same.
        max_request_bytes: largest request message accepted (larger: close 1009).
        max_subscriptions: most symbols one connection may be subscribed to (on any
            channel); a ``subscribe`` beyond is refused (``too_many_subscriptions``).
        requests_per_s, request_burst: each connection's token bucket for ``subscribe``,
            ``resync`` and ``list`` (``rate_limited`` beyond).
        token: when set, every connection (WebSocket or HTTP route) must present it
            (``Authorization: Bearer`` or ``?token=``), else HTTP 401 at the handshake.
        allowed_origins: a connection with an ``Origin`` header (a browser's) not listed
            here is refused with HTTP 403; one without is not concerned.
        healthz_not_live_share: ``/healthz`` answers 503 when at least this share of the
            symbols is not live (:mod:`gateway.io.health`).
        http_routes: further GET paths answered over HTTP on the same port (``/metrics``).
        recovery_bytes, recovery_age_s: bounds of each symbol's recovery ring
            (:mod:`gateway.wire.recovery`); ``recovery_bytes`` 0 keeps no ring.
        instance: the gateway instance's id (``subscribed.instance``); default a new one.
        clock_s: monotonic seconds for the slow-subscriber policy, the request rate, the
            log rate and the recovery rings' ages (tests pass a fake).
        clock_ns: the wall clock stamped as ``send_ns``, read once per publish.

    The defaults are :class:`~gateway.wire.config.ServerConfig`'s; :meth:`from_config`
    takes them from a configuration. HTTP GET routes are in :attr:`http_routes`.
    """

    def __init__(
        self,
        view: BookView,
        *,
        max_buffer_bytes: int = _DEFAULTS.max_buffer_bytes,
        max_conflations: int = _DEFAULTS.max_conflations,
        conflation_window_s: float = _DEFAULTS.conflation_window_s,
        max_behind_s: float = _DEFAULTS.max_behind_s,
        low_water_bytes: int | None = None,
        max_subscribers: int = _DEFAULTS.max_subscribers,
        check_interval_s: float = 0.05,
        close_timeout_s: float = 2.0,
        ping_interval_s: float | None = 20.0,
        max_request_bytes: int = _DEFAULTS.max_request_bytes,
        max_subscriptions: int = _DEFAULTS.max_subscriptions,
        requests_per_s: float = _DEFAULTS.requests_per_s,
        request_burst: int = _DEFAULTS.request_burst,
        token: str | None = _DEFAULTS.token,
        allowed_origins: Iterable[str] = _DEFAULTS.allowed_origins,
        healthz_not_live_share: float = _DEFAULTS.healthz_not_live_share,
        http_routes: Mapping[str, HttpRoute] | None = None,
        recovery_bytes: int = _DEFAULTS.recovery_bytes,
        recovery_age_s: float = _DEFAULTS.recovery_age_s,
        instance: str | None = None,
        clock_s: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if max_buffer_bytes < 1 or max_conflations < 0 or max_subscribers < 0:
            raise ValueError("max_buffer_bytes >= 1, max_conflations >= 0, max_subscribers >= 0")
        if max_subscriptions < 1 or not requests_per_s > 0 or request_burst < 1:
            raise ValueError("max_subscriptions >= 1, requests_per_s > 0, request_burst >= 1")
        self._view = view
        self.max_buffer_bytes = max_buffer_bytes
        self.low_water_bytes = max_buffer_bytes // 4 if low_water_bytes is None else low_water_bytes
        self.max_conflations = max_conflations
        self.conflation_window_s = conflation_window_s
        self.max_behind_s = max_behind_s
        self.max_subscribers = max_subscribers
        self.check_interval_s = check_interval_s
        self.close_timeout_s = close_timeout_s
        self.ping_interval_s = ping_interval_s
        self.max_request_bytes = max_request_bytes
        self.max_subscriptions = max_subscriptions
        self.requests_per_s = requests_per_s
        self.request_burst = request_burst
        self._token = None if token is None else token.encode()
        self.allowed_origins = frozenset(allowed_origins)
        self.healthz_not_live_share = healthz_not_live_share
        #: HTTP GET routes served on the subscriber port beside the WebSocket endpoint
        #: (:data:`WEBSOCKET_PATH`); any other path is answered 404. Routes are added
        #: with ``http_routes`` or here, before :meth:`serve`; the Origin and token checks
        #: apply to every route.
        self.http_routes: dict[str, HttpRoute] = {"/healthz": self._healthz, **(http_routes or {})}
        self.flow_policy = FlowPolicy(
            max_buffer_bytes=max_buffer_bytes,
            low_water_bytes=self.low_water_bytes,
            max_conflations=max_conflations,
            conflation_window_s=conflation_window_s,
            max_behind_s=max_behind_s,
        )
        self._clock_s = clock_s
        #: Lines a subscriber can cause (refusals, closes, errors), rate-limited per cause.
        self._log = LimitedLog(log, clock_s=clock_s)
        #: The clock read once per step (a publish, a request, a check), for the flow policy.
        self._now_s = clock_s()
        self.stats = FanoutStats()
        #: Notified after a subscriber connects or goes, after every request handled, and
        #: after every check of the subscribers behind; not per published message.
        self.changes = StateChanges()
        #: The bound ``(host, port)`` pairs once :meth:`serve` is listening.
        self.addresses: list[tuple[str, int]] = []
        self._ids = itertools.count(1)
        self._subs: _SubSet = {}
        self._behind: _SubSet = {}
        #: Book subscribers that hold the current snapshot and get deltas.
        self._book: dict[str, _SubSet] = {}
        #: Book subscribers waiting for the symbol's first (or next) consistent book.
        self._pending: dict[str, _SubSet] = {}
        self._bbo: dict[str, _SubSet] = {}
        self._trade: dict[str, _SubSet] = {}
        self._last_top: dict[str, tuple[object, object]] = {}
        self._reasons: dict[str, str] = {}
        self._init_recovery(recovery_bytes, recovery_age_s, instance, clock_ns)

    @classmethod
    def from_config(
        cls,
        view: BookView,
        server: ServerConfig,
        http_routes: Mapping[str, HttpRoute] | None = None,
        instance: str | None = None,
    ) -> Fanout:
        """A fan-out with the limits of a configuration's ``[server]`` table, serving
        ``http_routes`` beside ``/healthz``, named ``instance``."""
        return cls(
            view,
            healthz_not_live_share=server.healthz_not_live_share,
            http_routes=http_routes,
            max_buffer_bytes=server.max_buffer_bytes,
            max_conflations=server.max_conflations,
            conflation_window_s=server.conflation_window_s,
            max_behind_s=server.max_behind_s,
            max_subscribers=server.max_subscribers,
            max_request_bytes=server.max_request_bytes,
            max_subscriptions=server.max_subscriptions,
            requests_per_s=server.requests_per_s,
            request_burst=server.request_burst,
            token=server.token,
            allowed_origins=server.allowed_origins,
            recovery_bytes=server.recovery_bytes,
            recovery_age_s=server.recovery_age_s,
            instance=instance,
        )

    # --- publishing (hot path) --------------------------------------------------------------

    def publish(self, events: Sequence[GatewayEvent]) -> None:
        """Send one pipeline step's events to the subscribers concerned. Never blocks.

        BookDelta → ``delta`` to book subscribers (and ``bbo`` after the batch to bbo
        subscribers when the top of book changed); BookReset → a fresh ``snapshot`` to
        every book subscriber of the key (the deltas after it in the same batch are already
        in that snapshot and are skipped); StatusChange → ``status`` to every subscriber of
        the key; TradeOut → ``trade``.
        """
        snapshot_at: dict[str, tuple[int, int]] | None = None
        self._now_s = self._clock_s()
        self._send_ns = self._clock_ns()
        for event in events:
            if isinstance(event, BookDelta):
                key = event.key
                if snapshot_at is not None:
                    at = snapshot_at.get(key)
                    if at is not None and (event.epoch, event.seq) <= at:
                        continue
                subs = self._book.get(key)
                if subs or self._recovery_bytes:
                    msg = self._delta_message(event)
                    if subs:
                        self._send_delta(msg, subs)
            elif isinstance(event, TradeOut):
                self._send_trade(event)
            elif isinstance(event, BookReset):
                key = event.key
                at = self._send_reset(key)
                if at is not None:
                    self._restart_ring(key, at)
                    if snapshot_at is None:
                        snapshot_at = {}
                    snapshot_at[key] = at
            elif isinstance(event, StatusChange):
                self._send_status(event)
        if self._bbo:
            changed = {e.key: e for e in events if isinstance(e, (BookDelta, BookReset))}
            for key in changed.keys() & self._bbo.keys():
                self._send_bbo(key, force=False, cause=changed[key])

    def _send_delta(self, msg: Delta, subs: _SubSet) -> None:
        key = msg.symbol
        json_frame: bytes | None = None
        msgpack_frame: bytes | None = None
        now_s = self._now_s
        sent = 0
        sent_bytes = 0
        for sub in subs:
            flow = sub.flow
            if flow.state is _LIVE and sub.protocol.state is not _OPEN:
                continue
            try:
                transport = sub.transport
                actions = flow.on_message(key, transport.get_write_buffer_size(), now_s)
                if actions is not WRITE:
                    self._act(sub, actions)
                    continue
                if sub.msgpack:
                    if msgpack_frame is None:
                        msgpack_frame = _frame_msgpack(msg)
                    frame = msgpack_frame
                else:
                    if json_frame is None:
                        json_frame = _frame_json(msg)
                    frame = json_frame
                transport.write(frame)
            except Exception as exc:  # confined to this subscriber (see _fail)
                self._fail(sub, exc)
                continue
            sub.messages_sent += 1
            sub.bytes_sent += len(frame)
            sent += 1
            sent_bytes += len(frame)
        self.stats.messages_sent += sent
        self.stats.bytes_sent += sent_bytes

    def _send_reset(self, key: str) -> tuple[int, int] | None:
        """Snapshot to every book subscriber of ``key``; returns the snapshot's (epoch, seq)."""
        state = self._view.book_state(key)
        if state is None:
            log.error("%s: BookReset published but the view has no book for it", key)
            return None
        pending = self._pending.pop(key, None)
        if pending:
            self._book.setdefault(key, {}).update(pending)
        subs = self._book.get(key)
        if subs:
            frames: dict[tuple[int | None, bool], bytes] = {}
            for sub in subs:
                try:
                    depth = sub.books[key]
                    frame = frames.get((depth, sub.msgpack))
                    if frame is None:
                        frame = frames[depth, sub.msgpack] = self._snapshot_frame(
                            key, state, depth, sub.msgpack
                        )
                    self._deliver(sub, key, frame)
                except Exception as exc:  # confined to this subscriber (see _fail)
                    self._fail(sub, exc)
        return state[1], state[2]

    def _send_status(self, event: StatusChange) -> None:
        key = event.key
        self._reasons[key] = event.reason
        subs = self._subscribers_of(key)
        if subs:
            self._deliver_all(subs, key, Status(key, event.state, event.reason))

    def _send_trade(self, event: TradeOut) -> None:
        trade = event.trade
        key = trade.key
        subs = self._trade.get(key)
        if subs:
            msg = TradeMsg(
                key,
                trade.trade_id,
                trade.price,
                trade.qty,
                trade.side,
                trade.trade_ms,
                trade.recv_ns,
                self._send_ns,
            )
            self._deliver_all(subs, key, msg)

    def _send_bbo(
        self, key: str, *, force: bool, cause: BookDelta | BookReset | None = None
    ) -> None:
        subs = self._bbo.get(key)
        if not subs:
            return
        state = self._view.book_state(key)
        if state is None:
            return
        book = state[0]
        top = (book.best_bid(), book.best_ask())
        if not force and self._last_top.get(key) == top:
            return
        self._last_top[key] = top
        if cause is None:
            msg = Bbo(key, state[1], state[2], top[0], top[1])
        else:
            event_ms = cause.event_ms if isinstance(cause, BookDelta) else None
            msg = Bbo(
                key, state[1], state[2], top[0], top[1], event_ms, cause.recv_ns, self._send_ns
            )
        self._deliver_all(subs, key, msg)

    # --- delivery ---------------------------------------------------------------------------

    def _deliver_all(self, subs: Iterable[_Subscriber], key: str, msg: ServerMessage) -> None:
        json_frame: bytes | None = None
        msgpack_frame: bytes | None = None
        for sub in subs:
            try:
                if sub.msgpack:
                    if msgpack_frame is None:
                        msgpack_frame = _frame_msgpack(msg)
                    self._deliver(sub, key, msgpack_frame)
                else:
                    if json_frame is None:
                        json_frame = _frame_json(msg)
                    self._deliver(sub, key, json_frame)
            except Exception as exc:  # confined to this subscriber (see _fail)
                self._fail(sub, exc)

    def _deliver(self, sub: _Subscriber, key: str, frame: bytes) -> bool:
        """Write a message of ``key`` unless the subscriber is (or just fell) behind."""
        flow = sub.flow
        if flow.state is _LIVE and sub.protocol.state is not _OPEN:
            return False
        actions = flow.on_message(key, sub.transport.get_write_buffer_size(), self._now_s)
        if actions is not WRITE:
            self._act(sub, actions)
            return False
        self._write(sub, frame)
        return True

    def _reply(self, sub: _Subscriber, msg: ServerMessage) -> None:
        """A reply to a request: written even while behind (replies are small and paced by
        the client's requests), up to twice the buffer limit; beyond, the subscriber is
        not reading at all and is disconnected."""
        if sub.protocol.state is not _OPEN:
            return
        actions = sub.flow.on_reply(sub.transport.get_write_buffer_size())
        if FlowAction.WRITE in actions:
            self._write(sub, _frame_msgpack(msg) if sub.msgpack else _frame_json(msg))
        else:
            self._act(sub, actions)

    def _write(self, sub: _Subscriber, frame: bytes) -> None:
        sub.transport.write(frame)
        sub.messages_sent += 1
        sub.bytes_sent += len(frame)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(frame)

    def _snapshot_frame(
        self,
        key: str,
        state: BookState,
        depth: int | None,
        msgpack: bool,
        recovered: bool | None = None,
    ) -> bytes:
        book, epoch, seq, venue_id, _ = state
        msg = Snapshot(key, epoch, seq, venue_id, book.bids(depth), book.asks(depth), recovered)
        return _frame_msgpack(msg) if msgpack else _frame_json(msg)

    # --- recovery (gateway/wire/recovery.py) ---------------------------------------------------

    def _init_recovery(
        self,
        recovery_bytes: int,
        recovery_age_s: float,
        instance: str | None,
        clock_ns: Callable[[], int],
    ) -> None:
        if recovery_bytes < 0 or recovery_age_s < 0:
            raise ValueError("recovery_bytes >= 0 and recovery_age_s >= 0")
        #: Names this gateway process in every ``subscribed`` reply.
        self.instance = (
            new_instance(clock_ns(), secrets.randbits(32)).id if instance is None else instance
        )
        self._recovery_bytes = recovery_bytes
        self._recovery_age_s = recovery_age_s
        self._clock_ns = clock_ns
        #: The wall clock read once per publish: the ``send_ns`` of its messages.
        self._send_ns = 0
        #: Each symbol's recent deltas (none when ``recovery_bytes`` is 0).
        self.rings: dict[str, RecoveryRing] = {}

    def _ring(self, key: str) -> RecoveryRing:
        ring = self.rings.get(key)
        if ring is None:
            ring = self.rings[key] = RecoveryRing(self._recovery_bytes, self._recovery_age_s)
        return ring

    def _delta_message(self, event: BookDelta) -> Delta:
        """The ``delta`` of a published BookDelta, stamped ``send_ns``; kept in the
        symbol's recovery ring."""
        msg = Delta(
            event.key,
            event.epoch,
            event.seq,
            event.venue_id,
            event.bids,
            event.asks,
            event.event_ms,
            event.recv_ns,
            self._send_ns,
        )
        if self._recovery_bytes:
            self._ring(event.key).append(msg, self._now_s)
        return msg

    def _restart_ring(self, key: str, at: tuple[int, int]) -> None:
        """A snapshot at ``at`` started a new epoch of ``key``."""
        if self._recovery_bytes:
            self._ring(key).restart(*at)

    def _recovery_plan(
        self, request: Subscribe, keys: list[str], channels: Sequence[str]
    ) -> dict[str, list[RingEntry]]:
        """The symbols of ``request.recover`` the rings can serve completely, with the
        deltas each missed. Only full-depth book subscriptions are recovered."""
        recover = request.recover
        if not recover or "book" not in channels:
            return {}
        plan: dict[str, list[RingEntry]] = {}
        for key in keys:
            position = recover.get(key)
            if position is None:
                continue
            ring = self.rings.get(key)
            entries = None
            if ring is not None and request.depth is None:
                entries = ring.since(position.epoch, position.seq, self._now_s)
            if entries is None:
                self.stats.recovery_misses += 1
            else:
                plan[key] = entries
        return plan

    def _recover_book(self, sub: _Subscriber, key: str, entries: list[RingEntry]) -> None:
        """Send the deltas ``sub`` missed (``recovered: true``); its book is then current
        and it follows the live stream. A subscriber that falls behind meanwhile gets a
        snapshot later (conflation), as for any delta it could not take."""
        self._pending.get(key, {}).pop(sub, None)
        self._book.setdefault(key, {})[sub] = None
        self.stats.recoveries += 1
        ring = self.rings[key]
        build = _frame_msgpack if sub.msgpack else _frame_json
        for entry in entries:
            if not self._deliver(sub, key, ring.frame(entry, sub.msgpack, build)):
                break
            self.stats.recovered_messages += 1

    # --- slow subscribers -------------------------------------------------------------------

    def _act(self, sub: _Subscriber, actions: tuple[FlowAction, ...]) -> None:
        """Carry out what the subscriber's flow answered (WRITE is the caller's)."""
        for action in actions:
            if action is FlowAction.DROP:
                self.stats.dropped += 1
            elif action is FlowAction.CONFLATE:
                self.stats.conflations += 1
            elif action is FlowAction.RESEND_OWED:
                self._recover(sub)
            elif action is FlowAction.DISCONNECT:
                self._kick(sub, sub.flow.close_reason)
        if sub.flow.state is _BEHIND:
            self._behind[sub] = None

    def check_behind(self) -> None:
        """Resync subscribers whose buffer drained; disconnect those behind too long.
        :meth:`serve` calls it every ``check_interval_s``."""
        if not self._behind:
            return
        self._now_s = now_s = self._clock_s()
        for sub in list(self._behind):
            if sub.flow.state is not _BEHIND or sub.protocol.state is not _OPEN:
                del self._behind[sub]
                continue
            try:
                actions = sub.flow.on_check(sub.transport.get_write_buffer_size(), now_s)
                if sub.flow.state is not _BEHIND:
                    del self._behind[sub]
                self._act(sub, actions)
            except Exception as exc:  # confined to this subscriber (see _fail)
                self._behind.pop(sub, None)
                self._fail(sub, exc)
        self.changes.notify()

    def _recover(self, sub: _Subscriber) -> None:
        """Conflation: send the current state of every key whose messages were dropped."""
        for key in sub.flow.take_owed():
            if sub.subscribed_to(key):
                self._resend(sub, key)

    def _resend(self, sub: _Subscriber, key: str) -> None:
        """status, then snapshot (book channel), then bbo: the subscriber's view of ``key``
        becomes current."""
        state = self._view.book_state(key)
        sym_state = state[4] if state is not None else self._symbol_state(key)
        if sym_state is not None:
            self._deliver_all((sub,), key, Status(key, sym_state, self._reasons.get(key, "")))
        if key in sub.books:
            self._sync_book(sub, key, state)
        if key in sub.bbo and state is not None:
            top = (state[0].best_bid(), state[0].best_ask())
            self._deliver_all((sub,), key, Bbo(key, state[1], state[2], top[0], top[1]))

    def _sync_book(
        self,
        sub: _Subscriber,
        key: str,
        state: BookState | None,
        recovered: bool | None = None,
    ) -> None:
        """Send the book's snapshot now (marked ``recovered``), or park the subscriber
        until the next BookReset."""
        book_subs = self._book.get(key)
        if book_subs is not None:
            book_subs.pop(sub, None)
        if state is None:
            self._pending.setdefault(key, {})[sub] = None
            return
        self._pending.get(key, {}).pop(sub, None)
        self._book.setdefault(key, {})[sub] = None
        frame = self._snapshot_frame(key, state, sub.books[key], sub.msgpack, recovered)
        self._deliver(sub, key, frame)

    def _kick(self, sub: _Subscriber, reason: str) -> None:
        """Close a subscriber the slow-subscriber policy disconnected (1008)."""
        self.stats.slow_disconnects += 1
        self._log.warning(
            CLOSE_TOO_SLOW, "subscriber %d (%s) disconnected: %s", sub.id, sub.remote, reason
        )
        self._close(sub, CLOSE_TOO_SLOW, reason)

    def _fail(self, sub: _Subscriber, exc: Exception) -> None:
        """Serving ``sub`` raised: a bug, confined to this subscriber. It is closed with
        1011 "internal error"; the error is counted and logged (rate-limited per exception
        type, with its traceback). The pipeline, the service and the other subscribers
        never see it."""
        self.stats.subscriber_errors += 1
        self._log.error(
            (CLOSE_INTERNAL_ERROR, type(exc)),
            "subscriber %d (%s): internal error, closing it with 1011:\n%s",
            sub.id,
            sub.remote,
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        self._close(sub, CLOSE_INTERNAL_ERROR, INTERNAL_ERROR_REASON)

    def _close(self, sub: _Subscriber, code: int, reason: str) -> None:
        """Close without awaiting: nothing more is written to the subscriber, the close
        frame is queued behind the pending data, and the TCP connection is aborted if the
        closing handshake has not ended within ``close_timeout_s``."""
        if sub.abort_handle is not None:
            return  # already closing
        sub.flow.on_closed()
        loop = asyncio.get_running_loop()
        sub.abort_handle = loop.call_later(self.close_timeout_s, sub.transport.abort)
        if sub.protocol.state is not _OPEN:
            return
        try:
            sub.protocol.send_close(code, reason)
            sub.conn.send_data()
        except Exception:  # the transport failed under us: no closing handshake
            sub.transport.abort()

    # --- requests ---------------------------------------------------------------------------

    def _on_message(self, sub: _Subscriber, data: str | bytes) -> None:
        """One request: applied, or refused with an ``error`` reply (a ProtocolError);
        anything else it raises closes this subscriber alone (:meth:`_fail`)."""
        self._now_s = self._clock_s()
        try:
            try:
                request = decode_request(data, msgpack=isinstance(data, bytes))
                self._dispatch(sub, request)
            except ProtocolError as exc:
                sub.bad_requests += 1
                self.stats.bad_requests += 1
                self._log.warning(
                    exc.code,
                    "subscriber %d (%s): refused request: %s",
                    sub.id,
                    sub.remote,
                    exc,
                )
                self._reply(sub, Error(exc.code, str(exc), exc.symbol))
        except Exception as exc:  # confined to this subscriber (see _fail)
            self._fail(sub, exc)
        finally:
            self.changes.notify()

    def _dispatch(self, sub: _Subscriber, request: ClientRequest) -> None:
        if isinstance(request, (Subscribe, Resync, ListSymbols)) and not sub.requests.take(
            self._now_s
        ):
            self.stats.rate_limited += 1
            raise ProtocolError(
                f"more than {self.request_burst} subscribe/resync/list requests at once or "
                f"{self.requests_per_s:g} per second; not applied, retry in "
                f"{sub.requests.wait_s(self._now_s):.3f} s",
                ErrorCode.RATE_LIMITED,
                symbol=request.symbol if isinstance(request, Resync) else None,
            )
        if isinstance(request, Subscribe):
            self._on_subscribe(sub, request)
        elif isinstance(request, Unsubscribe):
            self._on_unsubscribe(sub, request.symbols)
        elif isinstance(request, Resync):
            self._on_resync(sub, request.symbol)
        elif isinstance(request, ListSymbols):
            infos = [SymbolInfo(key, state) for key, state in self._view.symbols()]
            self._reply(sub, Symbols(infos))
        elif isinstance(request, Ping):
            self._reply(sub, Pong(request.id))

    def _on_subscribe(self, sub: _Subscriber, request: Subscribe) -> None:
        known = dict(self._view.symbols())
        keys = list(dict.fromkeys(request.symbols))
        unknown = [key for key in keys if key not in known]
        if unknown:
            raise ProtocolError(
                f"unknown symbol(s): {', '.join(unknown[:20])}; nothing was subscribed",
                ErrorCode.UNKNOWN_SYMBOL,
                symbol=unknown[0],
            )
        subscribed = sub.books.keys() | sub.bbo | sub.trades
        added = sum(1 for key in keys if key not in subscribed)
        if len(subscribed) + added > self.max_subscriptions:
            raise ProtocolError(
                f"subscribing to {added} more symbol(s) would exceed the connection's "
                f"limit of {self.max_subscriptions} (subscribed: {len(subscribed)}); "
                "nothing was subscribed",
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            )
        if request.format is not None:
            sub.msgpack = request.format == "msgpack"
        channels = list(dict.fromkeys(request.channels))
        plan = self._recovery_plan(request, keys, channels)
        self._reply(sub, Subscribed(keys, channels, self.instance, list(plan)))
        for key in keys:
            state = self._view.book_state(key)
            sym_state = state[4] if state is not None else known[key]
            self._deliver_all((sub,), key, Status(key, sym_state, self._reasons.get(key, "")))
            if "book" in channels:
                sub.books[key] = request.depth
                entries = plan.get(key)
                if entries is not None:
                    self._recover_book(sub, key, entries)
                else:
                    asked = request.recover is not None and key in request.recover
                    self._sync_book(sub, key, state, False if asked else None)
            if "bbo" in channels:
                sub.bbo.add(key)
                self._bbo.setdefault(key, {})[sub] = None
                if state is not None:
                    top = (state[0].best_bid(), state[0].best_ask())
                    self._last_top[key] = top  # current, as for any other bbo subscriber
                    self._deliver_all((sub,), key, Bbo(key, state[1], state[2], top[0], top[1]))
            if "trade" in channels:
                sub.trades.add(key)
                self._trade.setdefault(key, {})[sub] = None

    def _on_unsubscribe(self, sub: _Subscriber, symbols: list[str]) -> None:
        keys = list(dict.fromkeys(symbols))
        for key in keys:
            self._forget(sub, key)
        self._reply(sub, Unsubscribed(keys))

    def _on_resync(self, sub: _Subscriber, key: str) -> None:
        if key not in sub.books:
            raise ProtocolError(
                f"not subscribed to the book of {key}", ErrorCode.NOT_SUBSCRIBED, symbol=key
            )
        if FlowAction.WRITE not in sub.flow.on_resync(key):
            return  # behind: the snapshot comes with the recovery (or never: disconnected)
        state = self._view.book_state(key)
        if state is None:
            sym_state = self._symbol_state(key)
            if sym_state is not None:
                self._deliver_all((sub,), key, Status(key, sym_state, self._reasons.get(key, "")))
        self._sync_book(sub, key, state)

    def _forget(self, sub: _Subscriber, key: str) -> None:
        sub.books.pop(key, None)
        sub.bbo.discard(key)
        sub.trades.discard(key)
        sub.flow.forget(key)
        for registry in (self._book, self._pending, self._bbo, self._trade):
            subs = registry.get(key)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del registry[key]

    def _subscribers_of(self, key: str) -> _SubSet:
        merged: _SubSet = {}
        for registry in (self._book, self._pending, self._bbo, self._trade):
            subs = registry.get(key)
            if subs:
                merged.update(subs)
        return merged

    def _symbol_state(self, key: str) -> SymbolState | None:
        return dict(self._view.symbols()).get(key)

    # --- serving ----------------------------------------------------------------------------

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, ready: asyncio.Event | None = None
    ) -> None:
        """Serve subscribers on ``ws://host:port/`` (and :attr:`http_routes`) until cancelled.
        Binding beyond loopback without a token is warned about.

        ``port`` 0 picks a free port; the bound addresses are in :attr:`addresses` when
        ``ready`` is set. On cancellation every connection is closed (1001) and
        CancelledError propagates. Raises :class:`~gateway.wire.config.ListenError` when
        the address cannot be bound.
        """
        try:
            listening = await serve(
                self._handle,
                host,
                port,
                compression=None,  # frames are shared between connections: no per-connection state
                process_request=self._process_request,
                ping_interval=self.ping_interval_s,
                ping_timeout=self.ping_interval_s,
                close_timeout=self.close_timeout_s,
                max_size=self.max_request_bytes,
            )
        except OSError as exc:
            raise listen_error(exc, host, port) from exc
        FD_EXHAUSTION.watch(asyncio.get_running_loop())  # accepts out of descriptors
        async with listening as server:
            self.addresses = [sock.getsockname()[:2] for sock in server.sockets]
            log.info("serving subscribers on %s", self.addresses)
            warning = exposure_warning(host, self._token is not None)
            if warning is not None:
                log.warning("%s", warning)
            if ready is not None:
                ready.set()
            try:
                while True:
                    await asyncio.sleep(self.check_interval_s)
                    self.check_behind()
                    FD_EXHAUSTION.probe("accepting subscribers")
            finally:
                self.addresses = []

    @property
    def port(self) -> int:
        """The bound TCP port; raises RuntimeError before :meth:`serve` is listening."""
        if not self.addresses:
            raise RuntimeError("not serving")
        return self.addresses[0][1]

    def subscriber_stats(self) -> list[SubscriberStats]:
        now_s = self._clock_s()
        return [
            SubscriberStats(
                sub.id,
                sub.remote,
                "msgpack" if sub.msgpack else "json",
                len(sub.books),
                sub.messages_sent,
                sub.bytes_sent,
                sub.flow.dropped,
                sub.flow.conflations,
                sub.bad_requests,
                sub.flow.state is not _LIVE,
                sub.transport.get_write_buffer_size(),
                now_s - sub.flow.behind_since_s if sub.flow.state is _BEHIND else 0.0,
            )
            for sub in self._subs
        ]

    def _healthz(self) -> HttpAnswer:
        return health_answer(
            self._view.symbols(), self._reasons, len(self._subs), self.healthz_not_live_share
        )

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """The handshake's checks, in order: the Origin (403), the token (401), the path
        (an HTTP route, the WebSocket endpoint, or 404). None: go on with the WebSocket."""
        FD_EXHAUSTION.succeeded()  # a connection was accepted
        path, _, query = request.path.partition("?")
        origins = request.headers.get_all("Origin")
        if origins and (len(origins) > 1 or origins[0] not in self.allowed_origins):
            return self._refuse(conn, http.HTTPStatus.FORBIDDEN, "origin not allowed", origins[0])
        if self._token is not None and not self._authorized(request, query):
            response = self._refuse(conn, http.HTTPStatus.UNAUTHORIZED, "missing or wrong token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="mdgateway"'
            return response
        route = self.http_routes.get(path)
        if route is not None:
            return route().response(conn)
        if path != WEBSOCKET_PATH:
            return self._refuse(conn, http.HTTPStatus.NOT_FOUND, "no such path", path)
        return None

    def _authorized(self, request: Request, query: str) -> bool:
        """The token, from ``Authorization: Bearer`` or ``?token=``, compared in constant
        time."""
        token = self._token
        assert token is not None
        presented: list[str] = []
        for value in request.headers.get_all("Authorization"):
            scheme, _, credentials = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                presented.append(credentials.strip())
        presented += parse_qs(query).get("token", [])
        if len(presented) != 1:
            return False
        return hmac.compare_digest(presented[0].encode(errors="surrogateescape"), token)

    def _refuse(
        self, conn: ServerConnection, status: http.HTTPStatus, why: str, detail: str = ""
    ) -> Response:
        """An HTTP error at the handshake: counted per status, logged rate-limited."""
        refused = self.stats.http_refused
        refused[status] = refused.get(status, 0) + 1
        self._log.warning(
            status,
            "refused connection from %s: %d %s%s",
            _remote(conn),
            status,
            why,
            f" ({detail[:100]!r})" if detail else "",
        )
        return conn.respond(status, f"{why}\n")

    async def _handle(self, conn: ServerConnection) -> None:
        if len(self._subs) >= self.max_subscribers:
            self.stats.rejected += 1
            self._note_close_sent(CLOSE_TOO_MANY)
            self._log.warning(
                CLOSE_TOO_MANY,
                "refused subscriber %s: %d connected (close code 1013)",
                conn.remote_address,
                len(self._subs),
            )
            await conn.close(CLOSE_TOO_MANY, f"too many subscribers (max {self.max_subscribers})")
            return
        requests = TokenBucket(self.requests_per_s, self.request_burst, self._clock_s())
        sub = _Subscriber(next(self._ids), conn, self.flow_policy, requests)
        self._subs[sub] = None
        self.stats.subscribers = len(self._subs)
        self.stats.subscribers_total += 1
        self.changes.notify()
        log.info("subscriber %d connected from %s", sub.id, sub.remote)
        try:
            async for data in conn:
                if sub.flow.state is _DISCONNECTED:
                    continue
                self._on_message(sub, data)
        except ConnectionClosed:
            pass
        finally:
            self._remove(sub)

    def _remove(self, sub: _Subscriber) -> None:
        for key in list(sub.books) + list(sub.bbo) + list(sub.trades):
            self._forget(sub, key)
        self._behind.pop(sub, None)
        self._subs.pop(sub, None)
        self.stats.subscribers = len(self._subs)
        self.changes.notify()
        if sub.abort_handle is not None:
            sub.abort_handle.cancel()
        protocol = sub.protocol
        sent, received = protocol.close_sent, protocol.close_rcvd
        if sent is not None and not protocol.close_rcvd_then_sent:
            self._note_close_sent(sent.code)
            if sent.code == CloseCode.MESSAGE_TOO_BIG:
                self._log.warning(
                    sent.code,
                    "subscriber %d (%s) closed with 1009: %s",
                    sub.id,
                    sub.remote,
                    sent.reason,
                )
            how = f"closed by the gateway with {sent.code} ({sent.reason})"
        elif received is not None:
            how = f"closed by the subscriber with {received.code}"
        else:
            how = "connection lost (1006)"
        log.info(
            "subscriber %d (%s) gone: %s, %d messages sent",
            sub.id,
            sub.remote,
            how,
            sub.messages_sent,
        )

    def _note_close_sent(self, code: int) -> None:
        self.stats.closes_sent[code] = self.stats.closes_sent.get(code, 0) + 1
