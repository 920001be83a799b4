"""Serving subscribers: one local WebSocket server, every message encoded once.

The asyncio shell between the service and its subscribers. :meth:`Fanout.publish` is
synchronous and called by the service after each pipeline step; it turns gateway events
into protocol messages (:mod:`gateway.wire.protocol`), encodes each one at most once per wire
format in use, builds the WebSocket frame once (server frames are unmasked and compression
is off, so the same bytes are valid on every connection) and queues those bytes for each
subscriber; at the end of the event-loop turn each subscriber's frames go out in one
transport write (coalescing). It never awaits and never creates a task.

Slow subscribers (the policy in ``docs/protocol.md``, decided per subscriber by
:class:`gateway.core.flow.SubscriberFlow`; this shell feeds it buffer sizes and the clock
and writes, resends or closes as it answers): a subscriber whose unsent bytes (its
transport's write buffer and the frames queued this turn) are more than
``max_buffer_bytes`` is *behind*. While behind, nothing more of its symbols is written to
it (deltas, bbo, trades and status are dropped and the symbols noted); once its buffer
drains to ``low_water_bytes`` it is sent, per noted symbol, the current ``status``, a fresh
``snapshot`` and the current ``bbo`` (conflation): its book is consistent again and it
skipped the deltas in between. The trades dropped meanwhile follow from the symbol's trade
ring, marked ``recovered``, when the ring still holds all of them, and none of them when it
does not (the next trade's seq shows the gap); the replay is written like any message.
A subscriber that falls behind more than ``max_conflations`` times within
``conflation_window_s``, or stays behind longer than ``max_behind_s``, is disconnected
with close code 1008 and reason "subscriber too slow: ...". Memory per subscriber is thus
bounded by ``max_buffer_bytes`` plus the largest single message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import itertools
import logging
import os
import secrets
import socket
import stat
import struct
import time
import traceback
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Final
from typing import Protocol
from urllib.parse import parse_qs

import msgspec
from websockets.asyncio.server import Server
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve
from websockets.asyncio.server import unix_serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.http11 import Response
from websockets.protocol import State

from gateway.core.book import L2Book
from gateway.core.depth import depth_bounds
from gateway.core.depth import depth_delta
from gateway.core.flow import WRITE
from gateway.core.flow import FlowAction
from gateway.core.flow import FlowPolicy
from gateway.core.flow import FlowState
from gateway.core.flow import SubscriberFlow
from gateway.core.model import STARTING_REASON
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import GatewayEvent
from gateway.core.model import Level
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import TradeOut
from gateway.core.pipeline import BookState
from gateway.core.ratelimit import TokenBucket
from gateway.core.stats import FanoutStats
from gateway.io.changes import StateChanges
from gateway.io.health import HttpAnswer
from gateway.io.health import HttpRoute
from gateway.io.health import health_document
from gateway.io.logs import FD_EXHAUSTION
from gateway.io.logs import LimitedLog
from gateway.io.logs import redact_secrets
from gateway.io.server_close import AcceptedConnection
from gateway.io.server_close import close_servers
from gateway.wire.config import ListenerLost
from gateway.wire.config import ListenError
from gateway.wire.config import ServerConfig
from gateway.wire.config import allowed_host_names
from gateway.wire.config import exposure_warning
from gateway.wire.config import host_header_name
from gateway.wire.config import listen_error
from gateway.wire.protocol import GOING_AWAY_REASON
from gateway.wire.protocol import Bbo
from gateway.wire.protocol import CloseCode
from gateway.wire.protocol import Delta
from gateway.wire.protocol import Error
from gateway.wire.protocol import ErrorCode
from gateway.wire.protocol import ListSymbols
from gateway.wire.protocol import Ping
from gateway.wire.protocol import Pong
from gateway.wire.protocol import ProtocolError
from gateway.wire.protocol import RecoverFrom
from gateway.wire.protocol import Request as ClientRequest
from gateway.wire.protocol import Resync
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import StreamPosition
from gateway.wire.protocol import Subscribe
from gateway.wire.protocol import Subscribed
from gateway.wire.protocol import SymbolInfo
from gateway.wire.protocol import Symbols
from gateway.wire.protocol import TradeMsg
from gateway.wire.protocol import Unsubscribe
from gateway.wire.protocol import Unsubscribed
from gateway.wire.protocol import decode_request
from gateway.wire.protocol import encode_json
from gateway.wire.protocol import encode_msgpack
from gateway.wire.recovery import INSTANCE_NONCE_BITS
from gateway.wire.recovery import GatewayInstance
from gateway.wire.recovery import M
from gateway.wire.recovery import RecoveryRing
from gateway.wire.recovery import RingEntry
from gateway.wire.recovery import new_instance
from gateway.wire.tokens import TOKEN_PARAMETER
from gateway.wire.tokens import redact

log = logging.getLogger(__name__)
#: How late the event loop may wake :meth:`Fanout.serve`'s periodic check before a warning.
LOOP_LATE_WARN_S: Final = 1.0
# websockets logs request lines and headers at DEBUG: a token must not go with them.
redact_secrets(log, logging.getLogger("websockets.server"))

#: Close code for a subscriber disconnected by the slow-subscriber policy.
CLOSE_TOO_SLOW: Final = CloseCode.TOO_SLOW  # 1008
#: Close code for a connection refused because ``max_subscribers`` are connected.
CLOSE_TOO_MANY: Final = CloseCode.TRY_AGAIN_LATER  # 1013
#: Close code for a subscriber whose serving raised: only that subscriber is closed.
CLOSE_INTERNAL_ERROR: Final = CloseCode.INTERNAL_ERROR  # 1011
#: The reason sent with :data:`CLOSE_INTERNAL_ERROR`.
INTERNAL_ERROR_REASON: Final = "internal error"
#: Close code for every subscriber when the gateway stops, with :data:`GOING_AWAY_REASON`.
CLOSE_GOING_AWAY: Final = CloseCode.GOING_AWAY  # 1001

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


class StopResult(msgspec.Struct, frozen=True):
    """How :meth:`Fanout.stop` ended the subscribers connected when it began: ``closed``
    read everything queued for them and answered the close within the drain bound;
    ``aborted`` had not (they did not read, or the connection broke), and their TCP
    connections were aborted at the bound (or at once, when the stop was cancelled)."""

    closed: int
    aborted: int


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
        "pending",
        "pending_bytes",
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
        #: Frames written in this loop turn, joined into one transport write at its end.
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def buffered(self) -> int:
        """Unsent bytes: the transport's buffer and this turn's pending frames."""
        return self.transport.get_write_buffer_size() + self.pending_bytes

    def subscribed_to(self, key: str) -> bool:
        return key in self.books or key in self.bbo or key in self.trades


_SubSet = dict[_Subscriber, None]


class _DepthGroup:
    """The book subscribers of one symbol at one depth, and their stream's position."""

    __slots__ = ("bounds", "depth", "seq", "subs")

    def __init__(self, depth: int, book: L2Book, seq: int) -> None:
        self.depth = depth
        #: Where the top ``depth`` levels of the book end as the group holds it.
        self.bounds = depth_bounds(book, depth)
        #: The seq of the group's last snapshot or delta (its own stream, see below).
        self.seq = seq
        self.subs: _SubSet = {}


class _DepthStep:
    """One symbol's book deltas within one publish, for its depth groups."""

    __slots__ = ("asks", "bids", "left_live", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.bids: list[Level] = []
        self.asks: list[Level] = []
        #: The same publish takes the symbol out of ``live`` (a gap after these deltas).
        self.left_live = False


def _remote(conn: ServerConnection) -> str:
    address = conn.remote_address
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address) or "unix socket"


def _bind_unix(path: str, mode: int) -> socket.socket:
    """A Unix stream socket bound at ``path`` with permissions ``mode``, not yet listening
    (so no one connects before the mode is set). A socket file already there is removed
    when nothing answers on it (a server that died); a live server on it, or a file that
    is not a socket, is a :class:`ListenError`."""
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if not stat.S_ISSOCK(existing.st_mode):
            raise ListenError(f"cannot listen on unix:{path}: the file exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                log.warning("removing the stale socket file %s (nothing listens on it)", path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            except OSError as exc:
                raise _unix_listen_error(exc, path) from exc
            else:
                raise ListenError(
                    f"cannot listen on unix:{path}: a server is running on it (stop it, or "
                    "choose another server.unix_path)"
                )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        raise _unix_listen_error(exc, path) from exc
    return sock


def check_listening(listeners: Sequence[tuple[socket.socket, Any]]) -> None:
    """Raise :class:`ListenerLost`, logged, when a socket of ``listeners`` (each with the
    name it was bound to) no longer listens there. uvloop closes a listener on an accept
    error and reports nothing; asyncio keeps it but may fail every accept. Either way new
    subscribers and ``/healthz`` would wait or be refused while the gateway looks alive,
    so it stops and its supervisor restarts it."""
    for sock, name in listeners:
        try:
            # The descriptor may be closed, or reused by another socket since.
            listening = (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
                and sock.getsockname() == name
            )
        except OSError:
            listening = False
        if not listening:
            where = f"unix:{name}" if isinstance(name, str) else f"{name[0]}:{name[1]}"
            log.error(
                "no longer listening for subscribers on %s: the gateway stops (restart it)",
                where,
            )
            raise ListenerLost(f"no longer listening for subscribers on {where}")


def _unix_listen_error(exc: OSError, path: str) -> ListenError:
    error = ListenError(f"cannot listen on unix:{path}: {exc.strerror or exc}")
    error.errno = exc.errno
    return error


def _remove_socket_file(path: str, inode: int) -> None:
    """Remove the socket file bound by this server, unless another took its place."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)


class Fanout:
    """Serves the gateway's books, bbo, trades and statuses to local subscribers.

    Args:
        view: where snapshots and symbol states are read (see :class:`BookView`).
        server: the per-subscriber limits, token, allowed origins, ``/healthz`` threshold
            and recovery rings of a configuration's ``[server]`` table, each field as
            :class:`~gateway.wire.config.ServerConfig` documents it (its address fields
            are :meth:`serve`'s).
        low_water_bytes: a behind subscriber is resynced once its buffer is at or below
            this; default ``max_buffer_bytes // 4``.
        check_interval_s: how often behind subscribers are checked for recovery/deadline.
        close_timeout_s: a disconnected subscriber's TCP connection is aborted if the
            closing handshake has not finished by then.
        ping_interval_s: WebSocket keepalive ping interval (None: off); the ping timeout is
            the same.
        http_routes: further GET paths answered over HTTP on the same port (``/metrics``).
        instance: the gateway process: its id (``subscribed.instance``) and its trade
            epoch; default a new one.
        clock_s: monotonic seconds for the slow-subscriber policy, the request rate, the
            log rate and the recovery rings' ages (tests pass a fake).
        clock_ns: the wall clock stamped as ``send_ns``, read once per publish.

    HTTP GET routes are in :attr:`http_routes`.
    """

    def __init__(
        self,
        view: BookView,
        server: ServerConfig = _DEFAULTS,
        *,
        low_water_bytes: int | None = None,
        check_interval_s: float = 0.05,
        close_timeout_s: float = 2.0,
        ping_interval_s: float | None = 20.0,
        http_routes: Mapping[str, HttpRoute] | None = None,
        instance: GatewayInstance | None = None,
        clock_s: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if server.max_buffer_bytes < 1 or server.max_conflations < 0 or server.max_subscribers < 0:
            raise ValueError("max_buffer_bytes >= 1, max_conflations >= 0, max_subscribers >= 0")
        if (
            server.max_subscriptions < 1
            or not server.requests_per_s > 0
            or server.request_burst < 1
        ):
            raise ValueError("max_subscriptions >= 1, requests_per_s > 0, request_burst >= 1")
        self._view = view
        #: The ``[server]`` limits this fan-out serves by.
        self.server = server
        self.low_water_bytes = (
            server.max_buffer_bytes // 4 if low_water_bytes is None else low_water_bytes
        )
        self.check_interval_s = check_interval_s
        self.close_timeout_s = close_timeout_s
        self.ping_interval_s = ping_interval_s
        if server.token_file is not None or server.token_env is not None:
            # Serving without the token it names would let anyone in: refuse to start.
            raise ValueError(
                "server.token_file/token_env not read: load the configuration with "
                "gateway.wire.config.parse_config or resolve_token"
            )
        self._token = None if server.token is None else server.token.encode()
        self.allowed_origins = frozenset(server.allowed_origins)
        #: The Host names the TCP listener answers (None: any), set by :meth:`serve` from
        #: ``server.allowed_hosts`` and the bound address.
        self.allowed_hosts: frozenset[str] | None = None
        #: HTTP GET routes served on the subscriber port beside the WebSocket endpoint
        #: (:data:`WEBSOCKET_PATH`); any other path is answered 404. Routes are added
        #: with ``http_routes`` or here, before :meth:`serve`; the Host, Origin and token
        #: checks apply to every route.
        self.http_routes: dict[str, HttpRoute] = {"/healthz": self._healthz, **(http_routes or {})}
        self.flow_policy = FlowPolicy(
            max_buffer_bytes=server.max_buffer_bytes,
            low_water_bytes=self.low_water_bytes,
            max_conflations=server.max_conflations,
            conflation_window_s=server.conflation_window_s,
            max_behind_s=server.max_behind_s,
        )
        self._clock_s = clock_s
        #: Lines a subscriber can cause (refusals, closes, errors), rate-limited per cause.
        self._log = LimitedLog(log, clock_s=clock_s)
        #: The clock read once per step (a publish, a request, a check), for the flow policy.
        self._now_s = clock_s()
        self.stats = FanoutStats()
        #: Notified after a subscriber connects or goes, after every request handled,
        #: after every check of the subscribers behind and when the stop begins; not per
        #: published message.
        self.changes = StateChanges()
        #: The bound ``(host, port)`` pairs once :meth:`serve` is listening.
        self.addresses: list[tuple[str, int]] = []
        #: The Unix socket's path while :meth:`serve` listens on one.
        self.unix_path: str | None = None
        self._ids = itertools.count(1)
        self._subs: _SubSet = {}
        self._behind: _SubSet = {}
        #: Full-book subscribers that hold the current snapshot and get deltas.
        self._book: dict[str, _SubSet] = {}
        #: Book subscribers with a depth that hold the current snapshot: key → depth → group.
        self._depth: dict[str, dict[int, _DepthGroup]] = {}
        #: Book subscribers waiting for the symbol's first (or next) consistent book.
        self._pending: dict[str, _SubSet] = {}
        self._bbo: dict[str, _SubSet] = {}
        self._trade: dict[str, _SubSet] = {}
        self._last_top: dict[str, tuple[object, object]] = {}
        self._reasons: dict[str, str] = {}
        self._init_recovery(server.recovery_bytes, server.recovery_age_s, instance, clock_ns)
        #: Each symbol's last published state, and since when (wall clock ns); a symbol
        #: still in its first state has been in it since the fan-out started.
        self._states: dict[str, SymbolState] = {}
        self._since_ns: dict[str, int] = {}
        self._started_ns = clock_ns()
        #: Set by :meth:`stop`: a new connection is closed at once (1001).
        self.stopping = False
        #: Subscribers with pending frames, and the flush scheduled for the turn's end.
        self._unflushed: _SubSet = {}
        self._flush_handle: asyncio.Handle | None = None

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
        depth_steps = self._depth_steps(events) if self._depth else None
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
                if depth_steps is not None:
                    depth_step = depth_steps.get(key)
                    if depth_step is not None:
                        self._send_depth_deltas(event, depth_step)
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
                actions = flow.on_message(key, sub.buffered(), now_s)
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
                self._queue(sub, frame)
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
            for sub in pending:
                self._hold_book(sub, key, state)
        self._reset_depth_groups(key, state)
        subs = self._book_holders(key)
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
        if self._states.get(key) is not event.state:
            self._states[key] = event.state
            self._since_ns[key] = self._send_ns or self._clock_ns()
        subs = self._subscribers_of(key)
        if subs:
            self._deliver_all(subs, key, self._status(key, event.state))

    def _status(self, key: str, state: SymbolState) -> Status:
        """The ``status`` of ``key`` in ``state``, with its last reason and since when."""
        since_ns = self._since_ns.get(key, self._started_ns)
        return Status(key, state, self._reasons.get(key, STARTING_REASON), since_ns)

    def _send_trade(self, event: TradeOut) -> None:
        """The ``trade``, numbered in the symbol's trade stream (every trade, subscribed or
        not, so that positions stay comparable) and kept in its trade ring."""
        trade = event.trade
        key = trade.key
        ring = self._trade_ring(key) if self._recovery_bytes else None  # before the seq moves
        seq = self._trade_seqs[key] = self._trade_seqs.get(key, 0) + 1
        subs = self._trade.get(key)
        if subs or ring is not None:
            msg = TradeMsg(
                key,
                trade.trade_id,
                trade.price,
                trade.qty,
                trade.side,
                trade.trade_ms,
                trade.recv_ns,
                self._send_ns,
                self.trade_epoch,
                seq,
            )
            if ring is not None:
                ring.append(msg, self._now_s)
            if subs:
                self._deliver_all(subs, key, msg, seq)

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

    def _deliver_all(
        self,
        subs: Iterable[_Subscriber],
        key: str,
        msg: ServerMessage,
        trade_seq: int | None = None,
    ) -> None:
        json_frame: bytes | None = None
        msgpack_frame: bytes | None = None
        for sub in subs:
            try:
                if sub.msgpack:
                    if msgpack_frame is None:
                        msgpack_frame = _frame_msgpack(msg)
                    self._deliver(sub, key, msgpack_frame, trade_seq)
                else:
                    if json_frame is None:
                        json_frame = _frame_json(msg)
                    self._deliver(sub, key, json_frame, trade_seq)
            except Exception as exc:  # confined to this subscriber (see _fail)
                self._fail(sub, exc)

    def _deliver(
        self, sub: _Subscriber, key: str, frame: bytes, trade_seq: int | None = None
    ) -> bool:
        """Write a message of ``key`` (the trade ``trade_seq`` of its stream) unless the
        subscriber is (or just fell) behind."""
        flow = sub.flow
        if flow.state is _LIVE and sub.protocol.state is not _OPEN:
            return False
        actions = flow.on_message(key, sub.buffered(), self._now_s, trade_seq)
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
        actions = sub.flow.on_reply(sub.buffered())
        if FlowAction.WRITE in actions:
            self._write(sub, _frame_msgpack(msg) if sub.msgpack else _frame_json(msg))
        else:
            self._act(sub, actions)

    def _write(self, sub: _Subscriber, frame: bytes) -> None:
        self._queue(sub, frame)
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
        book, epoch, _, venue_id, _ = state
        seq = self._stream_seq(key, depth, state)
        msg = Snapshot(key, epoch, seq, venue_id, book.bids(depth), book.asks(depth), recovered)
        return _frame_msgpack(msg) if msgpack else _frame_json(msg)

    # --- recovery (gateway/wire/recovery.py) ---------------------------------------------------

    def _init_recovery(
        self,
        recovery_bytes: int,
        recovery_age_s: float,
        instance: GatewayInstance | None,
        clock_ns: Callable[[], int],
    ) -> None:
        if recovery_bytes < 0 or recovery_age_s < 0:
            raise ValueError("recovery_bytes >= 0 and recovery_age_s >= 0")
        #: Names this gateway process in every ``subscribed`` reply.
        if instance is None:
            instance = new_instance(clock_ns(), secrets.randbits(INSTANCE_NONCE_BITS))
        self.instance = instance.id
        self._recovery_bytes = recovery_bytes
        self._recovery_age_s = recovery_age_s
        self._clock_ns = clock_ns
        #: The wall clock read once per publish: the ``send_ns`` of its messages.
        self._send_ns = 0
        #: Each symbol's recent deltas (none when ``recovery_bytes`` is 0).
        self.rings: dict[str, RecoveryRing[Delta]] = {}
        #: The epoch of every trade stream of this process: random, not from the clock
        #: (unique across restarts, as book epochs are).
        self.trade_epoch = instance.epoch_base
        #: Each symbol's last trade seq (every trade published, from 1).
        self._trade_seqs: dict[str, int] = {}
        #: Each symbol's recent trades (none when ``recovery_bytes`` is 0), bounded as
        #: :attr:`rings` are.
        self.trade_rings: dict[str, RecoveryRing[TradeMsg]] = {}

    def _ring(self, key: str) -> RecoveryRing[Delta]:
        ring = self.rings.get(key)
        if ring is None:
            ring = self.rings[key] = RecoveryRing(self._recovery_bytes, self._recovery_age_s)
        return ring

    def _trade_ring(self, key: str) -> RecoveryRing[TradeMsg]:
        """The symbol's trade ring; a new one starts after the last trade published."""
        ring = self.trade_rings.get(key)
        if ring is None:
            ring = self.trade_rings[key] = RecoveryRing(self._recovery_bytes, self._recovery_age_s)
            ring.restart(self.trade_epoch, self._trade_seqs.get(key, 0))
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
    ) -> dict[str, list[RingEntry[Delta]]]:
        """The symbols of ``request.recover`` the rings can serve completely, with the
        deltas each missed. Only full-depth book subscriptions are recovered."""
        if "book" not in channels:
            return {}
        rings = self.rings if request.depth is None else {}
        plan, misses = self._served(request.recover, keys, rings.get)
        self.stats.recovery_misses += misses
        return plan

    def _served(
        self,
        positions: Mapping[str, RecoverFrom] | None,
        keys: list[str],
        ring_of: Callable[[str], RecoveryRing[M] | None],
    ) -> tuple[dict[str, list[RingEntry[M]]], int]:
        """Per key of ``keys`` named in ``positions``, the entries of its ring after the
        position, when the ring (``ring_of(key)``, None: none) can serve them all; and how
        many could not be served."""
        plan: dict[str, list[RingEntry[M]]] = {}
        misses = 0
        for key in keys:
            position = None if positions is None else positions.get(key)
            if position is None:
                continue
            ring = ring_of(key)
            entries = (
                None if ring is None else ring.since(position.epoch, position.seq, self._now_s)
            )
            if entries is None:
                misses += 1
            else:
                plan[key] = entries
        return plan, misses

    def _recover_book(self, sub: _Subscriber, key: str, entries: list[RingEntry[Delta]]) -> None:
        """Send the deltas ``sub`` missed (``recovered: true``); its book is then current
        and it follows the live stream. A subscriber that falls behind meanwhile gets a
        snapshot later (conflation), as for any delta it could not take."""
        self._pending.get(key, {}).pop(sub, None)
        self._book.setdefault(key, {})[sub] = None
        self.stats.recoveries += 1
        self.stats.recovered_messages += self._replay(sub, key, self.rings[key], entries)

    def _replay(
        self, sub: _Subscriber, key: str, ring: RecoveryRing[M], entries: list[RingEntry[M]]
    ) -> int:
        """Write ``entries`` of ``ring`` to ``sub`` marked ``recovered: true``, in order,
        until it falls behind; how many were written."""
        build = _frame_msgpack if sub.msgpack else _frame_json
        sent = 0
        for entry in entries:
            msg = entry.msg
            trade_seq = msg.seq if isinstance(msg, TradeMsg) else None
            if not self._deliver(sub, key, ring.frame(entry, sub.msgpack, build), trade_seq):
                break
            sent += 1
        return sent

    def _trade_recovery_plan(
        self, request: Subscribe, keys: list[str], channels: Sequence[str]
    ) -> dict[str, list[RingEntry[TradeMsg]]]:
        """The symbols of ``request.recover_trades`` the trade rings can serve completely,
        with the trades each missed."""
        if "trade" not in channels:
            return {}
        # A trade ring is made on demand (it holds what followed the last trade published);
        # with recovery off there is none.
        ring_of = self._trade_ring if self._recovery_bytes else self.trade_rings.get
        plan, misses = self._served(request.recover_trades, keys, ring_of)
        self.stats.trade_recovery_misses += misses
        return plan

    def _trade_positions(
        self, keys: list[str], channels: Sequence[str]
    ) -> dict[str, StreamPosition]:
        """Where each symbol's live trade stream stands (trade channel only)."""
        if "trade" not in channels:
            return {}
        return {key: StreamPosition(self.trade_epoch, self._trade_seqs.get(key, 0)) for key in keys}

    # --- depth-N book streams ---------------------------------------------------------------
    #
    # A subscriber with a depth holds the N best levels per side (docs/protocol.md, "Depth").
    # Subscribers are grouped by (key, depth); a group's delta is computed once per publish
    # by gateway.core.depth from the publish's deltas of the key and the book after them,
    # and encoded once per wire format. Each group has its own seq stream in the book's
    # epoch: its snapshot carries the group's seq, and a delta is sent (seq + 1) only when
    # something changed inside its top N, so after every message its book equals the full
    # book's top N at the delta's ``id``.

    def _hold_book(self, sub: _Subscriber, key: str, state: BookState) -> None:
        """``sub`` now holds the current snapshot of ``key`` at its depth: it gets deltas."""
        depth = sub.books[key]
        if depth is None:
            self._book.setdefault(key, {})[sub] = None
            return
        groups = self._depth.setdefault(key, {})
        group = groups.get(depth)
        if group is None:
            group = groups[depth] = _DepthGroup(depth, state[0], state[2])
        group.subs[sub] = None

    def _release_depth(self, sub: _Subscriber, key: str) -> None:
        groups = self._depth.get(key)
        if groups is None:
            return
        for depth, group in list(groups.items()):
            group.subs.pop(sub, None)
            if not group.subs:
                del groups[depth]
        if not groups:
            del self._depth[key]

    def _book_holders(self, key: str) -> _SubSet:
        """Every book subscriber of ``key`` holding the current snapshot, at any depth."""
        groups = self._depth.get(key)
        if not groups:
            return self._book.get(key) or {}
        holders = dict(self._book.get(key) or {})
        for group in groups.values():
            holders.update(group.subs)
        return holders

    def _reset_depth_groups(self, key: str, state: BookState) -> None:
        """A new snapshot for everyone: each group's stream restarts at the book's seq."""
        for group in self._depth.get(key, {}).values():
            group.bounds = depth_bounds(state[0], group.depth)
            group.seq = state[2]

    def _stream_seq(self, key: str, depth: int | None, state: BookState) -> int:
        """The seq a snapshot at ``depth`` carries: the group's, or the book's."""
        if depth is None:
            return state[2]
        group = self._depth.get(key, {}).get(depth)
        return state[2] if group is None else group.seq

    def _depth_steps(self, events: Sequence[GatewayEvent]) -> dict[str, _DepthStep]:
        """The symbols with depth subscribers among ``events``' deltas, and how many.
        A symbol with a BookReset in ``events`` is left out: its snapshot brings every
        depth group to the book after the publish."""
        steps: dict[str, _DepthStep] = {}
        depth = self._depth
        reset: set[str] = set()
        left_live: set[str] = set()
        for event in events:
            if isinstance(event, BookDelta) and event.key in depth:
                step = steps.get(event.key)
                if step is None:
                    step = steps[event.key] = _DepthStep()
                step.remaining += 1
            elif isinstance(event, BookReset):
                reset.add(event.key)
            elif isinstance(event, StatusChange) and event.state is not SymbolState.LIVE:
                left_live.add(event.key)
        for key in reset:
            steps.pop(key, None)
        for key in left_live & steps.keys():
            steps[key].left_live = True
        return steps

    def _send_depth_deltas(self, event: BookDelta, step: _DepthStep) -> None:
        """Collect ``event``'s levels; at the publish's last delta of the key, send each
        depth group its delta (when not empty)."""
        step.remaining -= 1
        step.bids += event.bids
        step.asks += event.asks
        groups = self._depth.get(event.key)
        if step.remaining or not groups:
            return
        state = self._view.book_state(event.key)
        if state is None:
            # Deltas and then a gap in one step: the book they led to is gone. The status
            # tells the groups; the resync's snapshot brings them to the rebuilt book.
            if not step.left_live:
                log.error("%s: BookDelta published but the view has no book for it", event.key)
            return
        book = state[0]
        for group in list(groups.values()):
            bids, asks = depth_delta(book, group.depth, step.bids, step.asks, group.bounds)
            group.bounds = depth_bounds(book, group.depth)
            if bids or asks:
                group.seq += 1
                delta = Delta(
                    event.key,
                    event.epoch,
                    group.seq,
                    event.venue_id,
                    bids,
                    asks,
                    event.event_ms,
                    event.recv_ns,
                    self._send_ns,
                )
                self._send_delta(delta, group.subs)

    # --- coalescing ---------------------------------------------------------------------------
    #
    # Frames for a subscriber are not written one by one: within one event-loop turn they
    # are queued on the subscriber (whole frames, in order) and joined into one
    # transport.write by a flush scheduled once per turn (loop.call_soon) when the first
    # frame is queued. The slow-subscriber policy counts the queued bytes as unsent
    # (_Subscriber.buffered), and a close flushes the subscriber's frames first.

    def _queue(self, sub: _Subscriber, frame: bytes) -> None:
        if not sub.pending:
            self._unflushed[sub] = None
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        sub.pending.append(frame)
        sub.pending_bytes += len(frame)

    def _flush(self) -> None:
        """The end of the loop turn: each subscriber's pending frames in one write."""
        self._flush_handle = None
        unflushed, self._unflushed = self._unflushed, {}
        for sub in unflushed:
            self._flush_one(sub)

    def _flush_one(self, sub: _Subscriber) -> None:
        pending = sub.pending
        if not pending:
            return
        sub.pending = []
        sub.pending_bytes = 0
        if sub.protocol.state is not _OPEN:
            return  # closing: no data frame may follow the close frame
        self.stats.writes += 1
        try:
            sub.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        except Exception as exc:  # confined to this subscriber (see _fail)
            self._fail(sub, exc)

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
                actions = sub.flow.on_check(sub.buffered(), now_s)
                if sub.flow.state is not _BEHIND:
                    del self._behind[sub]
                self._act(sub, actions)
            except Exception as exc:  # confined to this subscriber (see _fail)
                self._behind.pop(sub, None)
                self._fail(sub, exc)
        self.changes.notify()

    def _recover(self, sub: _Subscriber) -> None:
        """Conflation: send the current state of every key whose messages were dropped,
        and the trades it missed (:meth:`_resend_trades`)."""
        for key in sub.flow.take_owed():
            if sub.subscribed_to(key):
                self._resend(sub, key)
                if key in sub.trades:
                    self._resend_trades(sub, key)

    def _resend_trades(self, sub: _Subscriber, key: str) -> None:
        """The trades of ``key`` dropped while ``sub`` was behind, from the trade ring, when
        it holds every one of them; none otherwise (the flow decides)."""
        flow = sub.flow
        position = flow.owed_trades.get(key)
        if position is None:
            return
        ring = self.trade_rings.get(key)
        entries = None if ring is None else ring.since(self.trade_epoch, position, self._now_s)
        last_seq = self._trade_seqs.get(key, 0)
        actions = flow.on_missed_trades(key, entries is not None, last_seq)
        if FlowAction.REPLAY_TRADES in actions and ring is not None and entries is not None:
            self.stats.conflation_replayed_trades += self._replay(sub, key, ring, entries)
        elif FlowAction.SKIP_TRADES in actions:
            self.stats.conflation_trade_misses += 1
            self._log.warning(
                "conflation trade miss",
                "subscriber %d (%s): trades %d-%d of %s were dropped while it was behind "
                "and are no longer held: not sent",
                sub.id,
                sub.remote,
                position + 1,
                last_seq,
                key,
            )
        self._act(sub, actions)

    def _resend(self, sub: _Subscriber, key: str) -> None:
        """status, then snapshot (book channel), then bbo: the subscriber's view of ``key``
        becomes current."""
        state = self._view.book_state(key)
        sym_state = state[4] if state is not None else self._symbol_state(key)
        if sym_state is not None:
            self._deliver_all((sub,), key, self._status(key, sym_state))
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
        self._release_depth(sub, key)
        if state is None:
            self._pending.setdefault(key, {})[sub] = None
            return
        self._pending.get(key, {}).pop(sub, None)
        self._hold_book(sub, key, state)
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

    def _close(
        self, sub: _Subscriber, code: int, reason: str, abort_after_s: float | None = None
    ) -> None:
        """Close without awaiting: nothing more is written to the subscriber, the close
        frame is queued behind the pending data, and the TCP connection is aborted if the
        closing handshake has not ended within ``abort_after_s`` (default
        ``close_timeout_s``)."""
        if sub.abort_handle is not None:
            return  # already closing
        sub.flow.on_closed()
        loop = asyncio.get_running_loop()
        sub.abort_handle = loop.call_later(
            self.close_timeout_s if abort_after_s is None else abort_after_s, sub.transport.abort
        )
        if sub.protocol.state is not _OPEN:
            return
        self._flush_one(sub)  # the close frame goes behind the pending frames
        try:
            sub.protocol.send_close(code, reason)
            sub.conn.send_data()
        except Exception:  # the transport failed under us: no closing handshake
            sub.transport.abort()

    # --- the gateway's stop -----------------------------------------------------------------

    async def stop(self, drain_s: float) -> StopResult:
        """The gateway stops, its venues stopped first (their last statuses published): every
        subscriber is closed with :data:`CLOSE_GOING_AWAY` and :data:`GOING_AWAY_REASON`,
        the close frame behind what is queued for it, so that a subscriber reading on gets
        every last status, then the close. A subscriber that has not read all of it and
        answered the close within ``drain_s`` is aborted then: a slow one does not hold the
        stop longer. From the call on, a new connection is closed at once the same way.

        Called while :meth:`serve` runs (which the caller cancels next). Cancelled (a
        second signal), every subscriber left is aborted at once and CancelledError
        propagates."""
        self.stopping = True
        self.changes.notify()
        subs = list(self._subs)
        for sub in subs:
            self._close(sub, CLOSE_GOING_AWAY, GOING_AWAY_REASON, abort_after_s=drain_s)
        try:
            async with asyncio.timeout(drain_s):
                await self.changes.wait_until(lambda: self._subs.keys().isdisjoint(subs))
        except TimeoutError:
            pass
        finally:
            for sub in subs:
                if sub in self._subs:
                    sub.transport.abort()
        # A subscriber that answered the close received it, and everything before it.
        closed = sum(sub.protocol.close_rcvd is not None for sub in subs)
        result = StopResult(closed, len(subs) - closed)
        log.info(
            "stopped serving: %d subscribers closed (%d), %d aborted (not read and answered "
            "within %g s)",
            result.closed,
            CLOSE_GOING_AWAY,
            result.aborted,
            drain_s,
        )
        return result

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
                f"more than {self.server.request_burst} subscribe/resync/list requests at once or "
                f"{self.server.requests_per_s:g} per second; not applied, retry in "
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
        if len(subscribed) + added > self.server.max_subscriptions:
            raise ProtocolError(
                f"subscribing to {added} more symbol(s) would exceed the connection's "
                f"limit of {self.server.max_subscriptions} (subscribed: {len(subscribed)}); "
                "nothing was subscribed",
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            )
        if request.format is not None:
            sub.msgpack = request.format == "msgpack"
        channels = list(dict.fromkeys(request.channels))
        plan = self._recovery_plan(request, keys, channels)
        trade_plan = self._trade_recovery_plan(request, keys, channels)
        self._reply(
            sub,
            Subscribed(
                keys,
                channels,
                self.instance,
                list(plan),
                list(trade_plan),
                self._trade_positions(keys, channels),
            ),
        )
        for key in keys:
            state = self._view.book_state(key)
            sym_state = state[4] if state is not None else known[key]
            self._deliver_all((sub,), key, self._status(key, sym_state))
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
                trades = trade_plan.get(key)
                if trades is not None:  # before any live trade: no await until then
                    self.stats.trade_recoveries += 1
                    self.stats.recovered_trades += self._replay(
                        sub, key, self.trade_rings[key], trades
                    )

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
                self._deliver_all((sub,), key, self._status(key, sym_state))
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
        self._release_depth(sub, key)

    def _subscribers_of(self, key: str) -> _SubSet:
        merged: _SubSet = {}
        for registry in (self._book, self._pending, self._bbo, self._trade):
            subs = registry.get(key)
            if subs:
                merged.update(subs)
        for group in self._depth.get(key, {}).values():
            merged.update(group.subs)
        return merged

    def _symbol_state(self, key: str) -> SymbolState | None:
        return dict(self._view.symbols()).get(key)

    # --- serving ----------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ready: asyncio.Event | None = None,
        *,
        unix_path: str | None = None,
        unix_mode: int = _DEFAULTS.unix_mode,
    ) -> None:
        """Serve subscribers on ``ws://host:port/`` (and :attr:`http_routes`) until cancelled.
        Binding beyond loopback without a token is warned about; TCP requests whose ``Host``
        names no host of :attr:`allowed_hosts` are refused (421).

        ``port`` 0 picks a free port; the bound addresses are in :attr:`addresses` when
        ``ready`` is set. With ``unix_path``, the same protocol and routes are also served
        on a Unix domain socket there (see :meth:`_bind_unix`), removed when serving ends.
        On cancellation every connection still open is closed (1001 and
        :data:`GOING_AWAY_REASON`; :meth:`stop` first drains them within a bound), one
        still in its handshake aborted (:func:`~gateway.io.server_close.close_servers`),
        and CancelledError propagates.
        Raises :class:`~gateway.wire.config.ListenError` when an address cannot be bound,
        and :class:`~gateway.wire.config.ListenerLost` (logged as an ERROR) within
        ``check_interval_s`` of a listener no longer listening on its address.
        """
        options = self._server_options()
        self.allowed_hosts = allowed_host_names(host, self.server.allowed_hosts)
        try:
            listening = await serve(
                self._handle,
                host,
                port,
                **{**options, "process_request": self._process_tcp_request},
            )
        except OSError as exc:
            raise listen_error(exc, host, port) from exc
        FD_EXHAUSTION.watch(asyncio.get_running_loop())  # accepts out of descriptors
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(listening)
            # Before the server's own exit closes them with no reason (run first: LIFO).
            stack.push_async_callback(close_servers, [server], CLOSE_GOING_AWAY, GOING_AWAY_REASON)
            listeners = [(sock, sock.getsockname()) for sock in server.sockets]
            if unix_path is not None:
                unix_server = await self._serve_unix(stack, unix_path, unix_mode, options)
                listeners += [(sock, sock.getsockname()) for sock in unix_server.sockets]
            self.addresses = [sock.getsockname()[:2] for sock in server.sockets]
            log.info("serving subscribers on %s", self.addresses)
            warning = exposure_warning(host, self._token is not None)
            if warning is not None:
                log.warning("%s", warning)
            if ready is not None:
                ready.set()
            try:
                woken_s = self._clock_s()
                while True:
                    await asyncio.sleep(self.check_interval_s)
                    now_s = self._clock_s()
                    self._check_loop_late(now_s - woken_s - self.check_interval_s)
                    woken_s = now_s
                    self.check_behind()
                    FD_EXHAUSTION.probe("accepting subscribers")
                    check_listening(listeners)
            finally:
                self.addresses = []

    def _check_loop_late(self, late_s: float) -> None:
        """Warn (rate-limited) when the event loop woke :meth:`serve`'s check ``late_s``
        seconds late, at least :data:`LOOP_LATE_WARN_S`: meanwhile no subscriber was
        accepted, no ``/healthz`` answered, no connection read; said, not left silent."""
        if late_s >= LOOP_LATE_WARN_S:
            self._log.warning(
                "loop_late",
                "the event loop ran %.1f s late: subscribers, /healthz and connections "
                "waited (a process starved of CPU, or a long synchronous step: kill -USR1 "
                "the gateway's pid for every thread's stack)",
                late_s,
            )

    def _server_options(self) -> dict[str, Any]:
        """The websockets server options, the same for TCP and the Unix socket (TCP checks
        the Host header first: :meth:`_process_tcp_request`)."""
        return {
            "compression": None,  # frames are shared between connections: no per-connection state
            "create_connection": AcceptedConnection,
            "process_request": self._process_request,
            "ping_interval": self.ping_interval_s,
            "ping_timeout": self.ping_interval_s,
            "close_timeout": self.close_timeout_s,
            "max_size": self.server.max_request_bytes,
        }

    # --- the Unix domain socket -------------------------------------------------------------

    async def _serve_unix(
        self, stack: contextlib.AsyncExitStack, path: str, mode: int, options: dict[str, Any]
    ) -> Server:
        """Listen on ``path`` too, within ``stack``: the socket file is removed after the
        server closes (when it is still the one bound here). Returns the server."""
        sock = _bind_unix(path, mode)
        inode = os.stat(path).st_ino
        stack.callback(_remove_socket_file, path, inode)
        try:
            listening = await unix_serve(self._handle, sock=sock, **options)
        except BaseException:
            sock.close()
            raise
        await stack.enter_async_context(listening)
        stack.push_async_callback(close_servers, [listening], CLOSE_GOING_AWAY, GOING_AWAY_REASON)
        self.unix_path = path
        stack.callback(setattr, self, "unix_path", None)
        log.info("serving subscribers on unix:%s", path)
        return listening

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
                sub.buffered(),
                now_s - sub.flow.behind_since_s if sub.flow.state is _BEHIND else 0.0,
            )
            for sub in self._subs
        ]

    def _healthz(self) -> HttpAnswer:
        return health_document(
            self._view.symbols(),
            self._reasons,
            len(self._subs),
            self.server.healthz_not_live_share,
            self._since_ns,
        ).answer()

    def _process_tcp_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """A TCP handshake's checks: the ``Host`` header first (421 unless exactly one
        names an allowed host: a page of another site whose name was rebound to this
        address), then :meth:`_process_request`'s. None: go on with the WebSocket."""
        hosts = self.allowed_hosts
        if hosts is not None:
            values = request.headers.get_all("Host")
            if len(values) != 1 or host_header_name(values[0]) not in hosts:
                FD_EXHAUSTION.succeeded()  # a connection was accepted
                return self._refuse(
                    conn, http.HTTPStatus.MISDIRECTED_REQUEST, "host not allowed", ", ".join(values)
                )
        return self._process_request(conn, request)

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
        presented += parse_qs(query).get(TOKEN_PARAMETER, [])
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
            f" ({redact(detail)[:100]!r})" if detail else "",
        )
        return conn.respond(status, f"{why}\n")

    async def _handle(self, conn: ServerConnection) -> None:
        if self.stopping:
            self._note_close_sent(CLOSE_GOING_AWAY)
            await conn.close(CLOSE_GOING_AWAY, GOING_AWAY_REASON)
            return
        if len(self._subs) >= self.server.max_subscribers:
            self.stats.rejected += 1
            self._note_close_sent(CLOSE_TOO_MANY)
            self._log.warning(
                CLOSE_TOO_MANY,
                "refused subscriber %s: %d connected (close code 1013)",
                conn.remote_address,
                len(self._subs),
            )
            await conn.close(
                CLOSE_TOO_MANY, f"too many subscribers (max {self.server.max_subscribers})"
            )
            return
        requests = TokenBucket(
            self.server.requests_per_s, self.server.request_burst, self._clock_s()
        )
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
        self._unflushed.pop(sub, None)
        sub.pending = []
        sub.pending_bytes = 0
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
