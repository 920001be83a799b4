"""A pluggable simulated venue on loopback: N WebSocket endpoints driven by BookProcess.

The generic asyncio shell of the simulated venues that subscribe by message (OKX, Kraken,
Bybit, Coinbase). What differs per venue lives in a :class:`VenueProtocol`: which URL paths
are served, what a connection receives on open, how a client message is answered
(subscribe acks, the in-band snapshot, app-level pongs, unsubscribe), how each
:class:`~feeds.sim.book_process.Batch` is rendered (ONCE per venue, as
:class:`Publication` objects) and how a publication is framed for one connection (the
identity for sequenced venues; Coinbase stamps its per-connection ``sequence_num``).

Lifecycle (structured concurrency), as :class:`feeds.sim.server.SimBinanceSpot`:
:class:`SimVenue` is an async context manager; entering binds every endpoint and starts the
generator in a TaskGroup entered in the caller's task; leaving cancels the generator,
closes every connection (1001) and waits for every handler. :meth:`SimVenue.run` serves
until cancelled and sets ``ready`` once the ports are bound. An instance is started once.

Tasks: one of its own (the generator); connection handlers belong to websockets' server,
each runs its reader and writer in a TaskGroup of the handler. No task per message.

Ordering: every frame for a connection, replies included, goes through that connection's
bounded FIFO queue (``client_queue_frames``; overflow closes with 1008 "client too slow"),
so a snapshot sent on subscribe is always followed by exactly the updates after it. Each
endpoint draws a seeded delivery delay per interval in ``[0, jitter_ms]``.

REST: a protocol with a :attr:`VenueProtocol.rest_path` (OKX, Bybit) also gets a plain HTTP
endpoint on a port of its own (:attr:`SimVenue.rest_url`), served through websockets'
``process_request`` hook as :class:`feeds.sim.server.SimBinanceSpot` serves its depth
endpoint: ``GET rest_path?query`` is answered by :meth:`VenueProtocol.rest_response` with
the book as of arrival (on the event loop, so consistent with the stream's ids), any other
path with 404 and a WebSocket handshake with the same HTTP answer (never 101). The REST
port stays open when endpoints are closed.

Faults: an optional :class:`feeds.sim.faults.FaultPlan` (``faults=``; see
``docs/faults.md``) is applied with time measured from entering the venue. Each
endpoint's writers ask the plan about every frame they send (replies included, counted
per endpoint over all its connections): drop, duplicate, extra delay (order kept), corrupt,
or hold behind the next frames (reorder; a held frame is flushed when nothing follows for
two intervals); a stall stops every writer of the endpoint (sockets open; WebSocket
pongs still answered; the bounded queue may then close a connection as too slow). A task
of the venue runs the timed actions: ``close`` closes the endpoint's connections (1001)
and keeps listening, ``refuse`` closes the endpoint (:meth:`SimVenue.close_endpoint`)
until the window ends, ``notice`` sends :meth:`VenueProtocol.notice_frame` to every
connection (venues without one skip it). REST requests get the plan's status (429 with
``Retry-After``, 418, 5xx) and extra delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Final, Self
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from feeds.sim.book_process import Batch, BookProcess
from feeds.sim.faults import FaultPlan
from feeds.sim.server import (
    TOO_SLOW_CODE,
    TOO_SLOW_REASON,
    EndpointStats,
    ServerLifecycle,
    fault_response,
    run_fault_schedule,
    write_with_faults,
)
from gateway.core.book import L2Book
from gateway.core.model import Level

_MAX_CLOSE_REASON: Final = 120
#: Initial mid by base asset; other symbols start at 100.
_BASE_MIDS: Final[Mapping[str, float]] = {
    "BTC": 60_000.0,
    "XBT": 60_000.0,
    "ETH": 3_000.0,
    "SOL": 150.0,
    "BNB": 600.0,
}
_DEFAULT_MID: Final = 100.0


def default_mid(symbol: str) -> float:
    """The initial mid of ``symbol`` by its base asset (``BTC-USDT``, ``BTC/USD``, ...)."""
    upper = symbol.upper()
    for base, mid in _BASE_MIDS.items():
        if upper.startswith(base):
            return mid
    return _DEFAULT_MID


# --- number formatting shared by the venue renderers ----------------------------------------


def fixed(text: str, decimals: int) -> str:
    """A decimal string (BookProcess's 8 decimals) with exactly ``decimals`` decimals.

    Only zeros may be cut: a value with more significant decimals raises ValueError."""
    head, _, frac = text.partition(".")
    frac = frac.ljust(decimals, "0")
    if frac[decimals:].strip("0"):
        raise ValueError(f"{text!r} has more than {decimals} significant decimals")
    return f"{head}.{frac[:decimals]}" if decimals else head


def trim(text: str) -> str:
    """A decimal string without trailing zeros (``"2.50000000"`` -> ``"2.5"``, zero -> ``"0"``)."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def iso_time(ns: int) -> str:
    """``2023-02-09T20:32:50.714964Z`` of a time in ns since the epoch (microseconds)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


# --- the protocol interface -----------------------------------------------------------------


class ConnState:
    """Per-connection state kept by the protocol: the subscription keys it receives, a
    counter for venues that number the messages of a connection, and free ``extra``."""

    __slots__ = ("extra", "path", "seq", "subs")

    def __init__(self, path: str) -> None:
        self.path = path
        self.subs: set[str] = set()
        self.seq = 0
        self.extra: dict[str, object] = {}


class Publication:
    """One rendered venue message for the connections subscribed to ``key``.

    ``frame`` is sent as is, unless the protocol frames per connection (then ``frame`` and
    ``tail`` are the parts around the per-connection field)."""

    __slots__ = ("frame", "key", "tail")

    def __init__(self, key: str, frame: bytes, tail: bytes = b"") -> None:
        self.key = key
        self.frame = frame
        self.tail = tail


class CloseConnection(Exception):
    """Raised by :meth:`VenueProtocol.on_message` to close the connection."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class VenueProtocol:
    """What a simulated venue says; the defaults suit a venue that frames nothing per
    connection. :meth:`attach` gives it the books before the server starts."""

    #: Used in task names and RNG seeds.
    name = "venue"
    #: Path of the REST depth endpoint; None: the venue serves no REST.
    rest_path: str | None = None

    def __init__(self) -> None:
        self.procs: Mapping[str, BookProcess] = {}

    def attach(self, procs: Mapping[str, BookProcess]) -> None:
        self.procs = procs

    def check_path(self, path: str) -> str | None:
        """None when ``path`` is served, else the body of a 404 response."""
        return None

    def on_open(self, state: ConnState) -> list[bytes]:
        """Frames sent when a connection opens (e.g. Kraken's ``status``)."""
        return []

    def on_message(self, state: ConnState, message: str | bytes, now_ns: int) -> list[bytes]:
        """Frames answering one client message, in order (acks, snapshots, pong). Updates
        ``state.subs``. May raise :class:`CloseConnection`."""
        return []

    def on_batch(self, symbol: str, batch: Batch, now_ns: int) -> list[Publication]:
        """The venue's messages for one step of ``symbol`` (called once per venue)."""
        return []

    def on_heartbeat(self, now_ns: int) -> list[Publication]:
        """Messages sent every heartbeat interval (paused or not)."""
        return []

    def frame_for(self, state: ConnState, pub: Publication) -> bytes | None:
        """``pub`` as sent on one connection, or None when the connection does not get it."""
        return pub.frame if pub.key in state.subs else None

    def format_level(self, symbol: str, level: Level) -> Level:
        """A BookProcess level in the venue's wire strings."""
        return level

    def last_id(self, symbol: str) -> int | None:
        """The venue's current book id of ``symbol`` (None: the venue has none)."""
        return None

    def notice_frame(self, now_ns: int) -> bytes | None:
        """The venue's maintenance or shutdown notice sent by the ``notice`` fault (None:
        the venue has none and the fault is skipped)."""
        return None

    def rest_response(self, query: Mapping[str, str], now_ns: int) -> tuple[int, bytes]:
        """HTTP status and JSON body answering ``GET rest_path?query`` (``query``: the first
        value of each parameter). Only called when :attr:`rest_path` is set."""
        raise NotImplementedError(f"{self.name} serves no REST")


# --- the server -----------------------------------------------------------------------------


class _Conn:
    __slots__ = ("close_code", "close_reason", "queue", "reader", "state", "wake", "writer", "ws")

    def __init__(self, ws: ServerConnection, state: ConnState) -> None:
        self.ws = ws
        self.state = state
        self.queue: deque[tuple[float, bytes]] = deque()
        self.wake = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    def stop(self, code: int | None = None, reason: str = "") -> None:
        if code is not None and self.close_code is None:
            self.close_code = code
            self.close_reason = reason[:_MAX_CLOSE_REASON]
        current = asyncio.current_task()
        for task in (self.reader, self.writer):
            if task is not None and task is not current:
                task.cancel()


class _Endpoint:
    __slots__ = (
        "accepted",
        "conns",
        "conns_changed",
        "fault_index",
        "frames_sent",
        "index",
        "last_deliver_s",
        "lock",
        "notices",
        "port",
        "rng",
        "server",
        "slow_closes",
    )

    def __init__(self, index: int, port: int, seed: str) -> None:
        self.index = index
        self.port = port
        self.rng = random.Random(seed)
        self.server: Server | None = None
        self.conns: set[_Conn] = set()
        self.conns_changed = asyncio.Event()
        self.last_deliver_s = 0.0
        self.lock = asyncio.Lock()
        self.accepted = 0
        self.frames_sent = 0
        self.slow_closes = 0
        self.fault_index = 0
        self.notices = 0

    def changed(self) -> None:
        self.conns_changed.set()
        self.conns_changed = asyncio.Event()


class SimVenue(ServerLifecycle):
    """A seeded venue speaking ``protocol`` on ``n_endpoints`` loopback WebSocket endpoints.

    Args:
        protocol: the venue's :class:`VenueProtocol`.
        symbols: the venue's symbols as it spells them (``BTC-USDT``, ``BTC/USD``).
        n_endpoints: number of endpoints; all serve the same venue events.
        seed: seeds every book and every endpoint's jitter.
        interval_s: time between generator steps.
        host: address to bind; keep it loopback.
        ports: one port per endpoint; None or 0 picks an ephemeral port (kept on reopen).
        rest_port: port of the REST endpoint, for a protocol with a ``rest_path``; None or
            0 picks an ephemeral port. Not allowed when the protocol serves no REST.
        jitter_ms: largest seeded per-endpoint delivery delay per interval.
        client_queue_frames: frames queued per connection before it is closed as too slow.
        heartbeat_interval_s: period of :meth:`VenueProtocol.on_heartbeat` (None: off).
        ping_interval_s / ping_timeout_s: WebSocket protocol pings (None: off).
        close_timeout_s: how long a closing handshake may take.
        mids: initial mid per symbol (default by base asset: BTC 60000, ETH 3000, ...).
        tick: price tick of every book; lot: quantity step.
        actions_per_step: Poisson mean of book actions per step and symbol.
        faults: the fault plan applied (see the module doc); None: no faults.
    """

    def __init__(
        self,
        protocol: VenueProtocol,
        symbols: Sequence[str],
        n_endpoints: int = 2,
        seed: int = 1,
        interval_s: float = 0.1,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        rest_port: int | None = None,
        *,
        jitter_ms: float = 0.0,
        client_queue_frames: int = 4096,
        heartbeat_interval_s: float | None = 1.0,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 60.0,
        close_timeout_s: float = 2.0,
        mids: Mapping[str, float] | None = None,
        tick: str = "0.01",
        lot: str = "0.00001",
        actions_per_step: float = 8.0,
        faults: FaultPlan | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("at least one symbol is required")
        if n_endpoints < 1:
            raise ValueError("n_endpoints must be at least 1")
        if ports is not None and len(ports) != n_endpoints:
            raise ValueError(f"ports has {len(ports)} entries for {n_endpoints} endpoints")
        if interval_s <= 0.0 or jitter_ms < 0.0:
            raise ValueError("interval_s must be > 0 and jitter_ms >= 0")
        if client_queue_frames < 1:
            raise ValueError("client_queue_frames must be at least 1")
        if heartbeat_interval_s is not None and heartbeat_interval_s <= 0.0:
            raise ValueError("heartbeat_interval_s must be > 0 or None")
        if faults is not None and faults.n_endpoints != n_endpoints:
            raise ValueError(f"the fault plan is for {faults.n_endpoints} endpoints")
        if rest_port is not None and protocol.rest_path is None:
            raise ValueError(f"{protocol.name} serves no REST: rest_port must be None")
        self._procs: dict[str, BookProcess] = {}
        for symbol in symbols:
            if symbol in self._procs:
                raise ValueError(f"duplicate symbol {symbol}")
            mid = (mids or {}).get(symbol, default_mid(symbol))
            self._procs[symbol] = BookProcess(
                symbol, seed, mid=mid, tick=tick, lot=lot, actions_per_step=actions_per_step
            )
        self.protocol = protocol
        protocol.attach(self._procs)
        self._host = host
        self._endpoints = [
            _Endpoint(i, (ports[i] if ports else 0) or 0, f"{protocol.name}-endpoint:{i}:{seed}")
            for i in range(n_endpoints)
        ]
        self._rest_port = rest_port or 0
        self._rest_server: Server | None = None
        self._rest_requests = 0
        self._interval_s = interval_s
        self._jitter_s = jitter_ms / 1000.0
        self._queue_cap = client_queue_frames
        self._heartbeat_s = heartbeat_interval_s
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._close_timeout_s = close_timeout_s
        self._paused = False
        self._stack: contextlib.AsyncExitStack | None = None
        self._started = False
        self._errors: list[Exception] = []
        self._faults = faults
        self._t0 = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._started:
            raise RuntimeError("a simulated venue is started once")
        self._started = True
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_servers)
            for endpoint in self._endpoints:
                await self._start_endpoint(endpoint)
            if self.protocol.rest_path is not None:
                self._rest_server = await serve(
                    _refuse_websocket,
                    self._host,
                    self._rest_port,
                    process_request=self._rest_request,
                    compression=None,
                    close_timeout=self._close_timeout_s,
                )
                self._rest_port = _bound_port(self._rest_server)
            group = await stack.enter_async_context(asyncio.TaskGroup())
            self._t0 = asyncio.get_running_loop().time()
            generator = group.create_task(
                self._generate(), name=f"sim-{self.protocol.name}-generator"
            )
            stack.callback(generator.cancel)
            if self._faults is not None:
                faults = group.create_task(
                    run_fault_schedule(
                        self._faults,
                        self._t0,
                        close_connections=self._fault_close,
                        close_endpoint=self._fault_refuse,
                        open_endpoint=self.open_endpoint,
                        notice=self._fault_notice,
                    ),
                    name=f"sim-{self.protocol.name}-faults",
                )
                stack.callback(faults.cancel)
            self._stack = stack.pop_all()
        return self

    # --- addresses and state --------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        return list(self._procs)

    @property
    def endpoint_urls(self) -> list[str]:
        """``ws://host:port`` of every endpoint (ports are known once started)."""
        return [f"ws://{self._host}:{endpoint.port}" for endpoint in self._endpoints]

    @property
    def rest_url(self) -> str | None:
        """``http://host:port`` of the REST endpoint (port known once started); None when
        the venue serves no REST."""
        if self.protocol.rest_path is None:
            return None
        return f"http://{self._host}:{self._rest_port}"

    @property
    def rest_requests(self) -> int:
        """HTTP requests received on the REST port (any path)."""
        return self._rest_requests

    def is_open(self, index: int) -> bool:
        return self._endpoints[index].server is not None

    async def wait_connections(self, index: int, count: int) -> None:
        """Wait until endpoint ``index`` has exactly ``count`` open connections."""
        endpoint = self._endpoints[index]
        while len(endpoint.conns) != count:
            await endpoint.conns_changed.wait()

    def stats(self, index: int) -> EndpointStats:
        endpoint = self._endpoints[index]
        return EndpointStats(
            index=index,
            url=self.endpoint_urls[index],
            is_open=endpoint.server is not None,
            connections_accepted=endpoint.accepted,
            connections_open=len(endpoint.conns),
            frames_sent=endpoint.frames_sent,
            slow_client_closes=endpoint.slow_closes,
            shutdown_notices=endpoint.notices,
        )

    def true_book(self, symbol: str) -> L2Book:
        """A copy of the venue's whole book of ``symbol``, in the venue's wire strings."""
        source = self._procs[symbol].book
        fmt = self.protocol.format_level
        book = L2Book()
        book.load(
            [fmt(symbol, lv) for lv in source.bids()], [fmt(symbol, lv) for lv in source.asks()]
        )
        return book

    def last_id(self, symbol: str) -> int | None:
        """The venue's current book id of ``symbol``, where the venue has one."""
        if symbol not in self._procs:
            raise KeyError(symbol)
        return self.protocol.last_id(symbol)

    # --- control --------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop generating book updates (heartbeats go on). Queued frames are delivered."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def advance(self, steps: int = 1) -> None:
        """Generate and send ``steps`` intervals now, paused or not (call on the loop)."""
        for _ in range(steps):
            self._tick()

    async def close_endpoint(
        self, index: int, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "endpoint closed"
    ) -> None:
        """Close every connection of endpoint ``index`` and stop listening (new connections
        are refused until :meth:`open_endpoint`). No-op when already closed."""
        endpoint = self._endpoints[index]
        async with endpoint.lock:
            server, endpoint.server = endpoint.server, None
            if server is None:
                return
            server.close(close_connections=True, code=code, reason=reason)
            await server.wait_closed()

    async def open_endpoint(self, index: int) -> None:
        """Listen again on endpoint ``index``'s port. No-op when already open."""
        endpoint = self._endpoints[index]
        async with endpoint.lock:
            if endpoint.server is None:
                await self._start_endpoint(endpoint)

    # --- generator ------------------------------------------------------------------------

    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        next_s = loop.time()
        next_heartbeat_s = next_s + (self._heartbeat_s or 0.0)
        while True:
            next_s += self._interval_s
            delay_s = next_s - loop.time()
            if delay_s < -self._interval_s:
                next_s = loop.time()  # fell behind: skip, do not burst
            await asyncio.sleep(max(0.0, delay_s))
            if not self._paused:
                self._tick()
            if self._heartbeat_s is not None and loop.time() >= next_heartbeat_s:
                next_heartbeat_s = loop.time() + self._heartbeat_s
                pubs = self.protocol.on_heartbeat(time.time_ns())
                if pubs:
                    self._publish(pubs)

    def _tick(self) -> None:
        now_ns = time.time_ns()
        pubs: list[Publication] = []
        for symbol, process in self._procs.items():
            batch = process.step()
            if batch is not None:
                pubs += self.protocol.on_batch(symbol, batch, now_ns)
        if pubs:
            self._publish(pubs)

    def _publish(self, pubs: list[Publication]) -> None:
        now_s = asyncio.get_running_loop().time()
        for endpoint in self._endpoints:
            delay_s = endpoint.rng.uniform(0.0, self._jitter_s) if self._jitter_s else 0.0
            deliver_at = max(now_s + delay_s, endpoint.last_deliver_s)
            endpoint.last_deliver_s = deliver_at
            if endpoint.server is None:
                continue
            for conn in list(endpoint.conns):
                frames = [f for p in pubs if (f := self.protocol.frame_for(conn.state, p))]
                self._push(endpoint, conn, frames, deliver_at)

    def _push(self, endpoint: _Endpoint, conn: _Conn, frames: list[bytes], at: float) -> None:
        if not frames or conn.close_code is not None:
            return
        if len(conn.queue) + len(frames) > self._queue_cap:
            endpoint.slow_closes += 1
            if conn in endpoint.conns:
                endpoint.conns.discard(conn)
                endpoint.changed()
            conn.queue.clear()
            conn.stop(TOO_SLOW_CODE, TOO_SLOW_REASON)
            return
        conn.queue.extend((at, frame) for frame in frames)
        conn.wake.set()

    # --- WebSocket endpoints --------------------------------------------------------------

    async def _start_endpoint(self, endpoint: _Endpoint) -> None:
        async def handler(ws: ServerConnection) -> None:
            try:
                await self._serve_connection(endpoint, ws)
            except Exception as exc:
                self._errors.append(exc)  # websockets would only log it: a simulator bug
                raise

        server = await serve(
            handler,
            self._host,
            endpoint.port,
            process_request=self._check_request,
            compression=None,
            ping_interval=self._ping_interval_s,
            ping_timeout=self._ping_timeout_s,
            close_timeout=self._close_timeout_s,
        )
        endpoint.port = _bound_port(server)
        endpoint.server = server

    def _check_request(self, conn: ServerConnection, request: Request) -> Response | None:
        problem = self.protocol.check_path(request.path)
        if problem is not None:
            return conn.respond(HTTPStatus.NOT_FOUND, problem)
        return None

    async def _serve_connection(self, endpoint: _Endpoint, ws: ServerConnection) -> None:
        assert ws.request is not None
        endpoint.accepted += 1
        conn = _Conn(ws, ConnState(ws.request.path))
        endpoint.conns.add(conn)
        endpoint.changed()
        self._push_now(endpoint, conn, self.protocol.on_open(conn.state))
        try:
            async with asyncio.TaskGroup() as group:
                conn.reader = group.create_task(self._read_loop(endpoint, conn))
                conn.writer = group.create_task(self._write_loop(endpoint, conn))
        finally:
            if conn in endpoint.conns:
                endpoint.conns.discard(conn)
                endpoint.changed()
            conn.queue.clear()
        if conn.close_code is not None:
            await ws.close(conn.close_code, conn.close_reason)

    def _push_now(self, endpoint: _Endpoint, conn: _Conn, frames: list[bytes]) -> None:
        """Queue replies after everything already queued for ``endpoint``."""
        at = max(asyncio.get_running_loop().time(), endpoint.last_deliver_s)
        self._push(endpoint, conn, frames, at)

    async def _read_loop(self, endpoint: _Endpoint, conn: _Conn) -> None:
        try:
            async for message in conn.ws:
                try:
                    frames = self.protocol.on_message(conn.state, message, time.time_ns())
                except CloseConnection as close:
                    conn.stop(close.code, close.reason)
                    return
                self._push_now(endpoint, conn, frames)
        except ConnectionClosed:
            pass
        finally:
            conn.stop()

    async def _write_loop(self, endpoint: _Endpoint, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._faults is not None:
                await write_with_faults(
                    self._faults, endpoint, conn, self.fault_time, 2.0 * self._interval_s
                )
            while True:
                if not conn.queue:
                    conn.wake.clear()
                    await conn.wake.wait()
                    continue
                deliver_at, frame = conn.queue.popleft()
                delay_s = deliver_at - loop.time()
                if delay_s > 0.0:
                    await asyncio.sleep(delay_s)
                await conn.ws.send(frame, text=True)
                endpoint.frames_sent += 1
        except ConnectionClosed:
            pass
        finally:
            conn.stop()

    # --- faults ---------------------------------------------------------------------------

    def fault_time(self) -> float:
        """Seconds since the venue started: the time of the fault plan."""
        return asyncio.get_running_loop().time() - self._t0

    def _fault_close(self, index: int) -> None:
        for conn in list(self._endpoints[index].conns):
            conn.stop(CloseCode.GOING_AWAY, "fault: close")

    async def _fault_refuse(self, index: int) -> None:
        await self.close_endpoint(index, CloseCode.GOING_AWAY, "fault: refuse")

    def _fault_notice(self, index: int) -> None:
        frame = self.protocol.notice_frame(time.time_ns())
        if frame is None:
            return
        endpoint = self._endpoints[index]
        endpoint.notices += 1
        for conn in list(endpoint.conns):
            self._push_now(endpoint, conn, [frame])

    # --- REST -----------------------------------------------------------------------------

    async def _rest_request(self, conn: ServerConnection, request: Request) -> Response:
        index = self._rest_requests
        self._rest_requests += 1
        url = urlsplit(request.path)
        if url.path != self.protocol.rest_path:
            return _http_response(HTTPStatus.NOT_FOUND, b"Not Found\n", "text/plain")
        fault = self._faults and self._faults.rest_fault(self.fault_time(), index)
        if fault:
            await asyncio.sleep(fault.extra_delay_s)
            if fault.status is not None:
                return fault_response(fault)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            status, body = self.protocol.rest_response(query, time.time_ns())
        except Exception as exc:
            self._errors.append(exc)  # a simulator bug: raised when the venue stops
            return _http_response(HTTPStatus.INTERNAL_SERVER_ERROR, b"{}", "application/json")
        return _http_response(status, body, "application/json")

    async def _close_servers(self) -> None:
        servers = [endpoint.server for endpoint in self._endpoints] + [self._rest_server]
        self._rest_server = None
        live = [server for server in servers if server is not None]
        for endpoint in self._endpoints:
            endpoint.server = None
        for server in live:
            server.close(close_connections=True, code=CloseCode.GOING_AWAY, reason="sim stopping")
        for server in live:
            await server.wait_closed()


def _bound_port(server: Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


async def _refuse_websocket(ws: ServerConnection) -> None:
    # Unreachable: the REST hook answers every request with plain HTTP.
    await ws.close(CloseCode.POLICY_VIOLATION, "REST endpoint")


def _http_response(status: int, body: bytes, content_type: str) -> Response:
    code = HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", f"{content_type}; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(code.value, code.phrase, headers, body)
