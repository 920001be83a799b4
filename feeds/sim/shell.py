"""The one server shell of the simulated venues and the replay: N loopback WebSocket
endpoints and an optional REST port.

:class:`EndpointServer` holds everything that is not a venue: binding and lifecycle,
connections and their bounded queues, the writers (plain or under a fault plan), the fault
schedule, refusing and reopening endpoints, the venue notice, and REST serving. What is
sent comes from its subclasses: :class:`feeds.sim.simulators.SimVenue` (a book generator
speaking a pure :class:`feeds.sim.venue.VenueProtocol`) and
:class:`feeds.sim.replay.ReplayServer` (a recorded capture).

Lifecycle (structured concurrency). A server is an async context manager: entering binds
every endpoint and the REST port and starts the server's own tasks (the generator, the
fault schedule) in a TaskGroup owned by the server and entered in the caller's task;
leaving cancels them, closes every connection (code 1001; one still in its handshake is
aborted: :func:`gateway.io.server_close.close_servers`) and waits until every connection
handler has returned. If one of its tasks fails, the TaskGroup cancels the caller's task
and the error comes out of the ``async with``; errors of connection handlers (simulator
bugs: websockets would only log them) are raised on leaving as an ExceptionGroup.
:meth:`EndpointServer.run` is the same for use as one task of the caller's own TaskGroup:
it serves until cancelled and sets ``ready`` once the ports are bound. A server is started
once.

Tasks. Connection handler tasks are created by websockets' server and awaited by its
``wait_closed()``; inside each handler the connection's reader, writer and (replay) producer
run in a TaskGroup of the handler. No task is created per message.

Connections. Every frame for a connection, replies included, goes through that
connection's bounded FIFO queue of ``client_queue_frames`` frames, each with the loop time
before which it is not sent; when frames do not fit, the queue is dropped and the
connection is closed with code 1008 and reason ``"client too slow"`` (counted in
:attr:`EndpointStats.slow_client_closes`); the other connections are not affected.

Faults (``faults``, a :class:`feeds.sim.faults.FaultPlan`, docs/faults.md; time measured
from entering the server). Each endpoint's writers ask the plan about every frame they send
(counted per endpoint over all its connections) and apply the answer through the pure
:class:`feeds.sim.faults.FaultedStream`: drop, duplicate, extra delay (order kept), corrupt,
or hold behind the next frames (reorder; held frames are flushed after ``quiet_s`` without
frames); before that, content faults (ids, numbers, crossing, oversize) rewrite the frame
through the subclass's ``_rewrite`` (the venue's wire shape, :mod:`feeds.sim.rewrite`); while
the endpoint flaps, a connection is closed (1001 "fault: flap") after a frame was sent on
it; a stall stops every writer of the endpoint (sockets open; WebSocket pongs still
answered; the bounded queue may then close a connection as too slow). A task of the server
runs the timed actions (:meth:`EndpointServer.apply_fault`): ``close`` closes the
endpoint's connections (1001 "fault: close") and keeps listening, ``refuse`` closes the
endpoint (1001 "fault: refuse") until the window ends, ``notice`` sends the venue's notice
to every connection (a venue without one skips it), and a venue ``restart`` hands the
subclass its new first id (``_restart_ids``). REST requests get the plan's status (429 with
``Retry-After``, 418, 5xx) and extra delay before anything else is checked; an oversized
successful answer is grown (or altered) by the subclass's ``_rewrite_rest``.

REST: served through websockets' ``process_request`` hook on a port of its own (HTTP/1.1,
``Connection: close``): every request gets a plain HTTP answer, a WebSocket handshake
included (never 101). The REST port stays open while endpoints are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
from collections import deque
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any
from typing import Final
from typing import Self
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.server import Server
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request
from websockets.http11 import Response

from feeds.sim.connection import CloseConnection
from feeds.sim.connection import ConnState
from feeds.sim.connection import RestAnswer
from feeds.sim.faults import Action
from feeds.sim.faults import FaultedStream
from feeds.sim.faults import FaultPlan
from feeds.sim.faults import FrameFault
from feeds.sim.faults import RestFault
from gateway.io.server_close import AcceptedConnection
from gateway.io.server_close import close_servers
from gateway.wire.config import MAX_PORT
from gateway.wire.config import ListenError
from gateway.wire.config import listen_error

#: Close code and reason for a connection whose queue overflowed.
TOO_SLOW_CODE: Final = CloseCode.POLICY_VIOLATION
TOO_SLOW_REASON: Final = "client too slow"
_MAX_CLOSE_REASON: Final = 120


class EndpointStats(msgspec.Struct, frozen=True):
    """Counters of one WebSocket endpoint, as of the call to :meth:`EndpointServer.stats`."""

    index: int
    url: str
    is_open: bool
    connections_accepted: int
    connections_open: int
    frames_sent: int
    slow_client_closes: int
    shutdown_notices: int


class Conn:
    """One client connection: the protocol's state, its bounded outgoing queue and its
    tasks (ended by :meth:`stop`)."""

    __slots__ = (
        "busy",
        "close_code",
        "close_reason",
        "progress",
        "queue",
        "state",
        "tasks",
        "wake",
        "ws",
    )

    def __init__(self, ws: ServerConnection, state: ConnState) -> None:
        self.ws = ws
        self.state = state
        #: ``(deliver_at_s on the loop clock, frame)``, oldest first.
        self.queue: deque[tuple[float, bytes]] = deque()
        #: Set when a frame is queued.
        self.wake = asyncio.Event()
        #: Set by the writer whenever it took a frame or ran out of frames.
        self.progress = asyncio.Event()
        #: True while the writer handles a frame it took from the queue.
        self.busy = False
        self.tasks: list[asyncio.Task[None]] = []
        self.close_code: int | None = None
        self.close_reason = ""

    def stop(self, code: int | None = None, reason: str = "") -> None:
        """End the connection's tasks; the handler then closes with ``code`` if given."""
        if code is not None and self.close_code is None:
            self.close_code = code
            self.close_reason = reason[:_MAX_CLOSE_REASON]
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()

    async def drained(self, below: int = 1) -> None:
        """Return once fewer than ``below`` frames are queued (``1``: the queue is empty
        and the writer is done with every frame it took)."""
        while len(self.queue) >= below or (below == 1 and self.busy):
            self.progress.clear()
            await self.progress.wait()


class Endpoint:
    """One WebSocket endpoint: its server (None while closed), connections and counters."""

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
        #: Draws the endpoint's delivery jitter.
        self.rng = random.Random(seed)
        self.server: Server | None = None
        self.conns: set[Conn] = set()
        #: Set, then replaced, whenever ``conns`` changes.
        self.conns_changed = asyncio.Event()
        self.last_deliver_s = 0.0
        self.lock = asyncio.Lock()
        self.accepted = 0
        self.frames_sent = 0
        self.slow_closes = 0
        self.fault_index = 0
        self.notices = 0

    def add(self, conn: Conn) -> None:
        self.conns.add(conn)
        self._changed()

    def discard(self, conn: Conn) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            self._changed()

    def _changed(self) -> None:
        self.conns_changed.set()
        self.conns_changed = asyncio.Event()


class EndpointServer:
    """The shell: see the module docstring. Subclasses say what is served through the
    hooks ``_check_path``, ``_admit_connection``, ``_open``, ``_answer``, ``_producer``, ``_send``,
    ``_notice_frame``, ``_rest_answer`` and ``_start_tasks``, and how the venue misbehaves
    through ``_rewrite``, ``_rewrite_rest`` and ``_restart_ids``.

    Args:
        name: used in task names and the endpoints' jitter seeds.
        n_endpoints: number of WebSocket endpoints.
        seed: seeds every endpoint's jitter.
        host: address to bind; keep it loopback.
        ports: one port per endpoint; None or 0 picks an ephemeral port (kept on reopen).
        rest_port: port of the REST endpoint; None or 0 picks an ephemeral port.
        serves_rest: whether the REST port is bound at all.
        client_queue_frames: frames queued per connection before it is closed as too slow.
        ping_interval_s / ping_timeout_s: WebSocket protocol pings (None: off).
        close_timeout_s: how long a closing handshake may take.
        rest_open_timeout_s: how long a REST request may take to be answered.
        faults: the fault plan applied (see the module doc); None: no faults.
        quiet_s: how long a fault writer waits for frames before it flushes held ones.
    """

    #: The message of the ExceptionGroup of handler errors.
    _handler_failure = "simulated connection handler failed"

    def __init__(
        self,
        name: str,
        n_endpoints: int,
        seed: int,
        *,
        host: str,
        ports: Sequence[int] | None,
        rest_port: int | None,
        serves_rest: bool,
        client_queue_frames: int,
        ping_interval_s: float | None,
        ping_timeout_s: float | None,
        close_timeout_s: float,
        rest_open_timeout_s: float = 10.0,
        faults: FaultPlan | None,
        quiet_s: float,
    ) -> None:
        if n_endpoints < 1:
            raise ValueError("n_endpoints must be at least 1")
        if ports is not None and len(ports) != n_endpoints:
            raise ValueError(f"ports has {len(ports)} entries for {n_endpoints} endpoints")
        if client_queue_frames < 1:
            raise ValueError("client_queue_frames must be at least 1")
        if faults is not None and faults.n_endpoints != n_endpoints:
            raise ValueError(f"the fault plan is for {faults.n_endpoints} endpoints")
        self._name = name
        self._host = host
        self._endpoints = [
            Endpoint(i, (ports[i] if ports else 0) or 0, f"{name}-endpoint:{i}:{seed}")
            for i in range(n_endpoints)
        ]
        self._rest_port = rest_port or 0
        self._serves_rest = serves_rest
        self._rest_server: Server | None = None
        self._rest_requests = 0
        self._queue_cap = client_queue_frames
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._close_timeout_s = close_timeout_s
        self._rest_open_timeout_s = rest_open_timeout_s
        self._faults = faults
        self._quiet_s = quiet_s
        self._t0 = 0.0
        self._started = False
        self._stack: contextlib.AsyncExitStack | None = None
        self._errors: list[Exception] = []

    # --- hooks ----------------------------------------------------------------------------

    def _check_path(self, path: str) -> str | None:
        """None when a WebSocket handshake to ``path`` is accepted, else a 404 body."""
        return None

    def _admit_connection(self, source: str) -> RestAnswer | None:
        """None when a handshake from address ``source`` goes ahead, else the HTTP
        refusal (a venue's connection-attempt limit)."""
        return None

    def _open(self, conn: Conn) -> list[bytes]:
        """Frames queued when ``conn`` opens; may raise CloseConnection."""
        return []

    async def _answer(self, conn: Conn, message: str | bytes) -> list[bytes]:
        """Frames answering one client message, queued in order; may raise
        CloseConnection."""
        return []

    def _producer(self, endpoint: Endpoint, conn: Conn) -> Coroutine[Any, Any, None] | None:
        """A task of its own that feeds ``conn`` (None: the server's tasks feed it)."""
        return None

    async def _send(self, conn: Conn, frame: bytes) -> None:
        await conn.ws.send(frame, text=True)

    def _notice_frame(self) -> bytes | None:
        """The venue's notice sent by :meth:`send_notice` (None: it has none)."""
        return None

    def _rewrite(self, conn: Conn, frame: bytes, fault: FrameFault) -> bytes:
        """``frame`` as it says ``fault``'s content faults (:mod:`feeds.sim.rewrite` with
        the venue's wire shape); unchanged where the venue's shape is unknown."""
        return frame

    def _rewrite_rest(self, target: str, answer: RestAnswer, fault: RestFault) -> RestAnswer:
        """A successful REST ``answer`` to ``GET target`` as ``fault`` says it: with
        ``oversize_levels`` more levels, its best bid altered."""
        return answer

    def _restart_ids(self, first_id: int) -> None:
        """The venue restarts its ids at ``first_id`` (a ``restart`` fault)."""

    async def _rest_answer(self, target: str) -> RestAnswer | None:
        """The answer to ``GET target`` (path and query); None: 404."""
        return None

    def _start_tasks(self, group: asyncio.TaskGroup, stack: contextlib.AsyncExitStack) -> None:
        """Start the server's own tasks in ``group``; ``stack`` cancels them on leaving."""

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._started:
            raise RuntimeError(f"a {type(self).__name__} is started once")
        self._started = True
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_servers)
            for endpoint in self._endpoints:
                await self._start_endpoint(endpoint)
            if self._serves_rest:
                self._rest_server = await self._listen(
                    _refuse_websocket,
                    self._rest_port,
                    process_request=self._rest_request,
                    open_timeout=self._rest_open_timeout_s,
                )
                self._rest_port = _bound_port(self._rest_server)
            group = await stack.enter_async_context(asyncio.TaskGroup())
            self._t0 = asyncio.get_running_loop().time()
            self._start_tasks(group, stack)
            if self._faults is not None:
                schedule = group.create_task(
                    run_fault_schedule(self._faults, self.apply_fault, self._sleep_until),
                    name=f"sim-{self._name}-faults",
                )
                # Runs before the TaskGroup exits, which then waits for the task to end.
                stack.callback(schedule.cancel)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        suppress = await stack.__aexit__(exc_type, exc, tb)
        if self._errors and exc_type is None:
            raise ExceptionGroup(self._handler_failure, list(self._errors))
        return suppress

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled; set ``ready`` once every port is bound."""
        async with self:
            if ready is not None:
                ready.set()
            await asyncio.Event().wait()

    # --- addresses and state --------------------------------------------------------------

    @property
    def endpoint_urls(self) -> list[str]:
        """``ws://host:port`` of every endpoint (ports are known once started)."""
        return [f"ws://{self._host}:{endpoint.port}" for endpoint in self._endpoints]

    @property
    def rest_requests(self) -> int:
        """HTTP requests received on the REST port (any path)."""
        return self._rest_requests

    def is_open(self, index: int) -> bool:
        """True when endpoint ``index`` accepts connections."""
        return self._endpoints[index].server is not None

    async def wait_connections(self, index: int, count: int) -> None:
        """Wait until endpoint ``index`` streams to exactly ``count`` connections (a
        connection counts from when its handshake is done until it stops receiving)."""
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

    def fault_time(self) -> float:
        """Seconds since the server started: the time of the fault plan."""
        return asyncio.get_running_loop().time() - self._t0

    # --- control --------------------------------------------------------------------------

    async def close_endpoint(
        self, index: int, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "endpoint closed"
    ) -> None:
        """Close every connection of endpoint ``index`` with ``code`` and stop listening,
        so new connections are refused until :meth:`open_endpoint`. Returns once every
        connection of the endpoint is closed. No-op when already closed."""
        endpoint = self._endpoints[index]
        async with endpoint.lock:
            server, endpoint.server = endpoint.server, None
            if server is None:
                return
            await close_servers([server], code, reason)

    async def open_endpoint(self, index: int) -> None:
        """Listen again on endpoint ``index``'s port. No-op when already open."""
        endpoint = self._endpoints[index]
        async with endpoint.lock:
            if endpoint.server is None:
                await self._start_endpoint(endpoint)

    def close_connections(self, index: int, code: int, reason: str) -> None:
        """Close every connection of endpoint ``index``; it keeps listening."""
        for conn in list(self._endpoints[index].conns):
            conn.stop(code, reason)

    def send_notice(self, index: int) -> None:
        """Queue the venue's notice to every connection of endpoint ``index``, after the
        frames already queued (connections stay open); nothing when it has none."""
        frame = self._notice_frame()
        if frame is None:
            return
        endpoint = self._endpoints[index]
        endpoint.notices += 1
        for conn in list(endpoint.conns):
            self._push_now(endpoint, conn, [frame])

    async def apply_fault(self, action: Action) -> None:
        """Do one timed action of the fault plan now (see the module docstring); a
        ``reopen`` inside another ``refuse`` window of the endpoint is skipped."""
        if action.endpoint is None:
            if self._faults is not None:
                self._restart_ids(self._faults.restart_first_id(action.t_s))
            return
        if action.kind == "close":
            self.close_connections(action.endpoint, CloseCode.GOING_AWAY, "fault: close")
        elif action.kind == "refuse":
            await self.close_endpoint(action.endpoint, CloseCode.GOING_AWAY, "fault: refuse")
        elif action.kind == "reopen":
            if self._faults is None or not self._faults.refusing(action.endpoint, action.t_s):
                await self.open_endpoint(action.endpoint)
        else:
            self.send_notice(action.endpoint)

    async def _sleep_until(self, t_s: float) -> None:
        await asyncio.sleep(max(0.0, t_s - self.fault_time()))

    # --- queues ---------------------------------------------------------------------------

    def _push(self, endpoint: Endpoint, conn: Conn, frames: list[bytes], at: float) -> None:
        """Queue ``frames`` not to be sent before ``at``; close ``conn`` when they do not fit."""
        if not frames or conn.close_code is not None:
            return
        if len(conn.queue) + len(frames) > self._queue_cap:
            endpoint.slow_closes += 1
            endpoint.discard(conn)
            conn.queue.clear()
            conn.stop(TOO_SLOW_CODE, TOO_SLOW_REASON)
            return
        conn.queue.extend((at, frame) for frame in frames)
        conn.wake.set()

    def _push_now(self, endpoint: Endpoint, conn: Conn, frames: list[bytes]) -> None:
        """Queue ``frames`` after everything already queued for ``endpoint``."""
        at = max(asyncio.get_running_loop().time(), endpoint.last_deliver_s)
        self._push(endpoint, conn, frames, at)

    # --- WebSocket endpoints --------------------------------------------------------------

    async def _start_endpoint(self, endpoint: Endpoint) -> None:
        async def handler(ws: ServerConnection) -> None:
            try:
                await self._serve_connection(endpoint, ws)
            except Exception as exc:
                self._errors.append(exc)  # websockets would only log it: a simulator bug
                raise

        server = await self._listen(
            handler,
            endpoint.port,
            process_request=self._check_request,
            ping_interval=self._ping_interval_s,
            ping_timeout=self._ping_timeout_s,
        )
        endpoint.port = _bound_port(server)
        endpoint.server = server

    async def _listen(
        self, handler: Callable[[ServerConnection], Awaitable[None]], port: int, **options: Any
    ) -> Server:
        """The server of ``handler`` on ``port``; raises ListenError when it cannot bind."""
        if not 0 <= port <= MAX_PORT:
            # The OS would bind the port modulo 65536.
            raise ListenError(f"cannot listen on {self._host}:{port}: ports are 0-{MAX_PORT}")
        try:
            return await serve(
                handler,
                self._host,
                port,
                compression=None,
                close_timeout=self._close_timeout_s,
                create_connection=AcceptedConnection,
                **options,
            )
        except OSError as exc:
            raise listen_error(exc, self._host, port) from exc

    def _check_request(self, conn: ServerConnection, request: Request) -> Response | None:
        problem = self._check_path(request.path)
        if problem is not None:
            return conn.respond(HTTPStatus.NOT_FOUND, problem)
        refusal = self._admit_connection(str(conn.remote_address[0]))
        if refusal is not None:
            return http_response(refusal)
        return None

    async def _serve_connection(self, endpoint: Endpoint, ws: ServerConnection) -> None:
        assert ws.request is not None  # the handler runs after the handshake
        endpoint.accepted += 1
        conn = Conn(ws, ConnState(ws.request.path))
        try:
            opening = self._open(conn)
        except CloseConnection as close:
            await ws.close(close.code, close.reason[:_MAX_CLOSE_REASON])
            return
        endpoint.add(conn)
        self._push_now(endpoint, conn, opening)
        try:
            async with asyncio.TaskGroup() as group:
                conn.tasks.append(group.create_task(self._read_loop(endpoint, conn)))
                conn.tasks.append(group.create_task(self._write_loop(endpoint, conn)))
                producer = self._producer(endpoint, conn)
                if producer is not None:
                    conn.tasks.append(group.create_task(producer))
        finally:
            endpoint.discard(conn)
            conn.queue.clear()
        if conn.close_code is not None:
            await ws.close(conn.close_code, conn.close_reason)

    async def _read_loop(self, endpoint: Endpoint, conn: Conn) -> None:
        try:
            async for message in conn.ws:
                try:
                    frames = await self._answer(conn, message)
                except CloseConnection as close:
                    conn.stop(close.code, close.reason)
                    return
                self._push_now(endpoint, conn, frames)
        except ConnectionClosed:
            pass
        finally:
            conn.stop()

    async def _write_loop(self, endpoint: Endpoint, conn: Conn) -> None:
        try:
            if self._faults is None:
                await self._write_plain(endpoint, conn)
            else:
                await self._write_with_faults(self._faults, endpoint, conn)
        except ConnectionClosed:
            pass
        finally:
            conn.stop()

    async def _write_plain(self, endpoint: Endpoint, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not await _next_frame(conn):
                continue
            deliver_at, frame = conn.queue.popleft()
            conn.busy = True
            conn.progress.set()
            delay_s = deliver_at - loop.time()
            if delay_s > 0.0:
                await asyncio.sleep(delay_s)
            await self._send(conn, frame)
            endpoint.frames_sent += 1
            conn.busy = False

    async def _write_with_faults(self, plan: FaultPlan, endpoint: Endpoint, conn: Conn) -> None:
        """The writer under ``plan``: each frame's :class:`~feeds.sim.faults.Release`,
        sent once due and while the endpoint is not stalled."""
        loop = asyncio.get_running_loop()
        stream = FaultedStream()
        while True:
            if not conn.queue and stream.holding:
                conn.busy = False
                conn.wake.clear()
                conn.progress.set()
                try:
                    async with asyncio.timeout(self._quiet_s):
                        await conn.wake.wait()
                except TimeoutError:
                    for frame in stream.flush():
                        await self._send(conn, frame)
                        endpoint.frames_sent += 1
                continue
            if not await _next_frame(conn):
                continue
            deliver_at, frame = conn.queue.popleft()
            conn.busy = True
            conn.progress.set()
            fault = plan.decide(endpoint.index, endpoint.fault_index, self.fault_time())
            endpoint.fault_index += 1
            if fault.rewrites:
                frame = self._rewrite(conn, frame, fault)
            release = stream.admit(fault, deliver_at, frame)
            if release is None:
                continue
            delay_s = release.not_before_s - loop.time()
            if delay_s > 0.0:
                await asyncio.sleep(delay_s)
            now_s = self.fault_time()
            resume_s = plan.resume_s(endpoint.index, now_s)
            if resume_s > now_s:
                await asyncio.sleep(resume_s - now_s)  # stalled: sockets stay open
            for out in release.frames:
                await self._send(conn, out)
                endpoint.frames_sent += 1
            if release.frames and plan.flapping(endpoint.index, self.fault_time()):
                conn.stop(CloseCode.GOING_AWAY, "fault: flap")
                return

    # --- REST -----------------------------------------------------------------------------

    async def _rest_request(self, conn: ServerConnection, request: Request) -> Response:
        index = self._rest_requests
        self._rest_requests += 1
        symbol = parse_qs(urlsplit(request.path).query).get("symbol", [""])[0]
        fault = self._faults.rest_fault(self.fault_time(), index, symbol) if self._faults else None
        if fault:
            await asyncio.sleep(fault.extra_delay_s)
            if fault.status is not None:
                return fault_response(fault)
        try:
            answer = await self._rest_answer(request.path)
        except Exception as exc:
            self._errors.append(exc)  # a simulator bug: raised when the server stops
            return http_response(RestAnswer(HTTPStatus.INTERNAL_SERVER_ERROR, b"{}"))
        if answer is None:
            return http_response(
                RestAnswer(HTTPStatus.NOT_FOUND, b"Not Found\n", content_type="text/plain")
            )
        if fault and (fault.oversize_levels or fault.alter) and answer.status == HTTPStatus.OK:
            answer = self._rewrite_rest(request.path, answer, fault)
        return http_response(answer)

    async def _close_servers(self) -> None:
        servers = [endpoint.server for endpoint in self._endpoints] + [self._rest_server]
        for endpoint in self._endpoints:
            endpoint.server = None
        self._rest_server = None
        live = [server for server in servers if server is not None]
        await close_servers(live, CloseCode.GOING_AWAY, "sim stopping")


async def _next_frame(conn: Conn) -> bool:
    """True when a frame is queued; else wait until one is queued and return False."""
    if conn.queue:
        return True
    conn.busy = False
    conn.wake.clear()
    conn.progress.set()
    await conn.wake.wait()
    return False


async def run_fault_schedule(
    plan: FaultPlan,
    apply: Callable[[Action], Awaitable[None]],
    sleep_until: Callable[[float], Awaitable[None]],
) -> None:
    """Apply the plan's timed actions in order, each once ``sleep_until`` its time
    (seconds since the server started) returned; then return."""
    for action in plan.schedule():
        await sleep_until(action.t_s)
        await apply(action)


def fault_response(fault: RestFault) -> Response:
    """The HTTP answer of a REST fault with a status (429 carries ``Retry-After``)."""
    assert fault.status is not None
    body = b'{"code":%d,"msg":"simulated fault"}' % fault.status
    headers: tuple[tuple[str, str], ...] = ()
    if fault.retry_after_s is not None:
        headers = (("Retry-After", f"{fault.retry_after_s:g}"),)
    return http_response(RestAnswer(fault.status, body, headers))


def http_response(answer: RestAnswer) -> Response:
    """The HTTP/1.1 response of ``answer`` (``Connection: close``)."""
    code = HTTPStatus(answer.status)
    content_type = answer.content_type
    if "charset" not in content_type:
        content_type += "; charset=utf-8"
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", content_type),
            ("Content-Length", str(len(answer.body))),
            ("Connection", "close"),
            *answer.headers,
        ]
    )
    return Response(code.value, code.phrase, headers, answer.body)


def _bound_port(server: Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


async def _refuse_websocket(ws: ServerConnection) -> None:
    # Unreachable: the REST hook answers every request with plain HTTP.
    await ws.close(CloseCode.POLICY_VIOLATION, "REST endpoint")
