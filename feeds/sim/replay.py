"""The replay server: a recorded capture served from K loopback WebSocket endpoints and one
REST port, as the venue would, so the gateway connects with only its endpoint URLs changed.

The asyncio shell around the pure :mod:`feeds.sim.replay_plan` (what goes where, when).

Lifecycle (structured concurrency), as :class:`feeds.sim.server.SimBinanceSpot`::

    async with ReplayServer(plan, speed=None) as replay:
        ... replay.endpoint_urls, replay.rest_url, await replay.finished.wait() ...

Entering binds every port; leaving closes every connection (code 1001) and waits until every
connection handler has returned. :meth:`ReplayServer.run` serves until cancelled. The
server creates one task of its own, the fault schedule (only with ``faults``; cancelled and
awaited on leaving): each connection handler (created and awaited by websockets' server)
runs the connection's reader and writer (and fault writer) in a TaskGroup.

WebSocket endpoints accept any path and query. Client messages are read and ignored, except
OKX's text ``ping``, answered ``pong``. Each connection gets its endpoint's frames from the
start of the capture, in recorded order: at speed X frame ``f`` is sent ``f.offset_ns / X``
after the connection opened (every frame already due is sent at once, so bursts stay
bursts); at ``max`` (speed None) as fast as the client reads: ``send`` awaits the
connection's bounded write buffer draining. With ``loop`` a connection starts over at the
end; otherwise it stays open and idle. :attr:`ReplayServer.finished` is set once every
endpoint has sent all its frames to some connection.

REST (``rest_port``): ``GET`` of a recorded URL's path + query (exact, else same path and
same ``symbol``/``instId``) returns the most recent response recorded at or before the
replay time (:attr:`ReplayServer.replay_ns`: the newest recorded frame time sent on any
connection in its current pass), or the first one when no frame was sent yet; else 404.

Faults (``faults``, a :class:`feeds.sim.faults.FaultPlan`, docs/faults.md): the whole
language, applied as the simulators apply it, through the shared helpers of
:mod:`feeds.sim.server`. Each connection's frames go, at their replay time, through
:func:`~feeds.sim.server.write_with_faults` (drop, duplicate, corrupt, delay and jitter,
reorder, stall); :func:`~feeds.sim.server.run_fault_schedule` closes an endpoint's
connections at ``close@t`` (code 1001; the client's next connection starts the capture over)
and stops listening during ``refuse@t+d``. ``notice`` sends the ``notice`` frame given
(the capture's venue's own maintenance or shutdown notice), or nothing where none is known.
REST faults answer the REST port's requests (status with ``Retry-After``, ``slow``). The
fault time ``t`` is seconds since the server started. :attr:`ReplayServer.finished` is set
once the endpoint's frames were all handed to the fault writer and written out (held frames
flush after a quiet interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Final, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from feeds.sim.faults import FaultPlan
from feeds.sim.replay_plan import ReplayFrame, ReplayPlan, due_count, due_s
from feeds.sim.server import (
    ServerLifecycle,
    fault_response,
    run_fault_schedule,
    write_with_faults,
)

#: Frames sent in a row at ``max`` before the writer lets other tasks run.
_YIELD_EVERY: Final = 64
#: Frames queued for a connection's fault writer before the replay waits for it (max).
_QUEUE_MAX: Final = 256
#: Held (reordered) frames are sent after this long without a frame at the latest.
_QUIET_S: Final = 0.2


class _Endpoint:
    """What :func:`write_with_faults` needs of an endpoint, and its connections."""

    __slots__ = ("conns", "fault_index", "frames_sent", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self.fault_index = 0
        self.frames_sent = 0
        self.conns: set[_Conn] = set()


class _Conn:
    """One connection: its fault writer's queue, and its tasks (stopped by ``close``)."""

    __slots__ = ("close_code", "queue", "reader", "wake", "writer", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        #: ``(deliver_at_s on the loop clock, frame)``, oldest first.
        self.queue: deque[tuple[float, bytes]] = deque()
        self.wake = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.close_code: int | None = None

    def stop(self, code: int) -> None:
        """End the reader and writer; the handler then closes with ``code``."""
        self.close_code = code
        for task in (self.reader, self.writer):
            if task is not None:
                task.cancel()


class ReplayServer(ServerLifecycle):
    """Serves ``plan`` at ``speed`` (None: max) on ``len(plan.endpoints)`` endpoints.

    ``port`` 0 binds every port (endpoints and REST) to a free one; otherwise endpoint i is
    on ``port + i`` and REST on ``rest_port`` (default ``port + K``).
    """

    _handler_failure = "replay connection handler failed"

    def __init__(
        self,
        plan: ReplayPlan,
        *,
        speed: float | None = 1.0,
        port: int = 0,
        rest_port: int | None = None,
        host: str = "127.0.0.1",
        loop: bool = False,
        faults: FaultPlan | None = None,
        notice: Callable[[], bytes] | None = None,
    ) -> None:
        count = len(plan.endpoints)
        if faults is not None and faults.n_endpoints != count:
            raise ValueError("the fault plan is for another number of endpoints")
        self._plan = plan
        self._speed = speed
        self._host = host
        self._loop = loop
        self._faults = faults
        #: The venue's maintenance/shutdown notice frame, sent by ``notice`` faults.
        self._notice = notice
        self._endpoints = [_Endpoint(i) for i in range(count)]
        self._t0 = 0.0
        self._rest_requests = 0
        self._ports = [port + i if port else 0 for i in range(count)]
        self._rest_port = rest_port if rest_port is not None else (port + count if port else 0)
        self._servers: list[Server | None] = [None] * count
        self._rest_server: Server | None = None
        self._done = [not frames for frames in plan.endpoints]
        self._clock_ns: int | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._errors: list[Exception] = []
        self.finished = asyncio.Event()
        self.rest_served = 0
        if all(self._done):
            self.finished.set()

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None or any(self._servers):
            raise RuntimeError("a ReplayServer is started once")
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_servers)
            for index in range(len(self._ports)):
                await self._start_endpoint(index)
            self._rest_server = await serve(
                _refuse_websocket,
                self._host,
                self._rest_port,
                process_request=self._rest_request,
                compression=None,
            )
            self._rest_port = _bound_port(self._rest_server)
            self._t0 = asyncio.get_running_loop().time()
            if self._faults is not None:
                schedule = asyncio.create_task(
                    run_fault_schedule(
                        self._faults,
                        self._t0,
                        close_connections=self._fault_close,
                        close_endpoint=self._fault_refuse,
                        open_endpoint=self._start_endpoint,
                        notice=self._fault_notice,
                    ),
                    name="replay-faults",
                )
                stack.push_async_callback(_cancel_and_wait, schedule)
            self._stack = stack.pop_all()
        return self

    def _fault_notice(self, index: int) -> None:
        """Queue the venue's notice to every connection of endpoint ``index`` (none known:
        nothing to send)."""
        if self._notice is None:
            return
        frame = self._notice()
        now_s = asyncio.get_running_loop().time()
        for conn in self._endpoints[index].conns:
            conn.queue.append((now_s, frame))
            conn.wake.set()

    # --- addresses and state --------------------------------------------------------------

    @property
    def endpoint_urls(self) -> list[str]:
        return [f"ws://{self._host}:{port}" for port in self._ports]

    @property
    def rest_url(self) -> str:
        return f"http://{self._host}:{self._rest_port}"

    @property
    def frames_sent(self) -> list[int]:
        """Frames written per endpoint (duplicates count twice, dropped ones not)."""
        return [endpoint.frames_sent for endpoint in self._endpoints]

    def fault_time(self) -> float:
        """Seconds since the server started: the time of the fault plan."""
        return asyncio.get_running_loop().time() - self._t0

    @property
    def replay_ns(self) -> int | None:
        """The replay time REST answers at: None until a frame was sent."""
        return self._clock_ns

    # --- WebSocket endpoints --------------------------------------------------------------

    async def _start_endpoint(self, index: int) -> None:
        async def handler(ws: ServerConnection) -> None:
            try:
                await self._serve_connection(index, ws)
            except Exception as exc:
                self._errors.append(exc)  # websockets would only log it: a server bug
                raise

        if self._servers[index] is not None:
            return
        server = await serve(handler, self._host, self._ports[index], compression=None)
        self._ports[index] = _bound_port(server)
        self._servers[index] = server

    async def _serve_connection(self, index: int, ws: ServerConnection) -> None:
        endpoint = self._endpoints[index]
        conn = _Conn(ws)
        endpoint.conns.add(conn)
        try:
            async with asyncio.TaskGroup() as group:
                conn.writer = group.create_task(self._write_loop(index, conn))
                conn.reader = group.create_task(self._read_loop(conn))
        finally:
            endpoint.conns.discard(conn)
        if conn.close_code is not None:
            await ws.close(conn.close_code, "fault: close")

    async def _read_loop(self, conn: _Conn) -> None:
        try:
            with contextlib.suppress(ConnectionClosed):
                async for message in conn.ws:
                    if message == "ping":  # OKX's application-level keepalive
                        await conn.ws.send("pong")
        finally:
            if conn.writer is not None:
                conn.writer.cancel()

    async def _write_loop(self, index: int, conn: _Conn) -> None:
        if self._faults is None:
            with contextlib.suppress(ConnectionClosed):
                await self._produce(index, conn)
            return
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    write_with_faults(
                        self._faults, self._endpoints[index], conn, self.fault_time, _QUIET_S
                    )
                )
                await self._produce(index, conn)
        except* ConnectionClosed:
            pass

    async def _produce(self, index: int, conn: _Conn) -> None:
        """Send (no faults) or queue for the fault writer each frame at its replay time."""
        frames = self._plan.endpoints[index]
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            self._clock_ns = None if self._loop and self._done[index] else self._clock_ns
            position = 0
            while position < len(frames):
                elapsed = loop.time() - start
                count = due_count(frames, position, elapsed, self._speed)
                if count == 0:
                    await asyncio.sleep(due_s(frames[position].offset_ns, self._speed) - elapsed)
                    continue
                for frame in frames[position : position + count]:
                    await self._send(index, conn, frame)
                    position += 1
                    if self._speed is None and position % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            while conn.queue:  # noqa: ASYNC110 - the fault writer drains it
                await asyncio.sleep(0.01)
            self._endpoint_done(index)
            if not self._loop:
                return

    async def _send(self, index: int, conn: _Conn, frame: ReplayFrame) -> None:
        payload = frame.payload
        if self._faults is None:
            await conn.ws.send(payload, text=_is_text(payload))
            self._endpoints[index].frames_sent += 1
        else:
            while len(conn.queue) >= _QUEUE_MAX:  # noqa: ASYNC110 - the fault writer drains it
                await asyncio.sleep(0.001)
            conn.queue.append((asyncio.get_running_loop().time(), payload))
            conn.wake.set()
        clock = self._clock_ns
        self._clock_ns = frame.recv_ns if clock is None else max(clock, frame.recv_ns)

    def _endpoint_done(self, index: int) -> None:
        self._done[index] = True
        if all(self._done):
            self.finished.set()

    # --- REST -----------------------------------------------------------------------------

    async def _rest_request(self, conn: ServerConnection, request: Request) -> Response:
        index = self._rest_requests
        self._rest_requests += 1
        fault = self._faults.rest_fault(self.fault_time(), index) if self._faults else None
        if fault:
            await asyncio.sleep(fault.extra_delay_s)
            if fault.status is not None:
                return fault_response(fault)
        body = self._plan.rest.lookup(request.path, self._clock_ns)
        if body is None:
            return conn.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        self.rest_served += 1
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Content-Type", "application/json;charset=UTF-8"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ]
        )
        return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)

    # --- faults ---------------------------------------------------------------------------

    def _fault_close(self, index: int) -> None:
        for conn in list(self._endpoints[index].conns):
            conn.stop(CloseCode.GOING_AWAY)

    async def _fault_refuse(self, index: int) -> None:
        server, self._servers[index] = self._servers[index], None
        if server is not None:
            server.close(close_connections=True, code=CloseCode.GOING_AWAY, reason="fault: refuse")
            await server.wait_closed()

    async def _close_servers(self) -> None:
        live = [s for s in (*self._servers, self._rest_server) if s is not None]
        self._servers = [None] * len(self._servers)
        self._rest_server = None
        for server in live:
            server.close(
                close_connections=True, code=CloseCode.GOING_AWAY, reason="replay stopping"
            )
        for server in live:
            await server.wait_closed()


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _is_text(payload: bytes) -> bool:
    if payload.isascii():
        return True
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


def _bound_port(server: Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


async def _refuse_websocket(ws: ServerConnection) -> None:
    # Unreachable: the REST hook answers every request with plain HTTP.
    await ws.close(CloseCode.POLICY_VIOLATION, "REST endpoint")
