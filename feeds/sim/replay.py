"""The replay server: a recorded capture served from K loopback WebSocket endpoints and one
REST port, as the venue would, so the gateway connects with only its endpoint URLs changed.

The asyncio shell around the pure :mod:`feeds.sim.replay_plan` (what goes where, when).

Lifecycle (structured concurrency), as :class:`feeds.sim.server.SimBinanceSpot`::

    async with ReplayServer(plan, speed=None) as replay:
        ... replay.endpoint_urls, replay.rest_url, await replay.finished.wait() ...

Entering binds every port; leaving closes every connection (code 1001) and waits until every
connection handler has returned. :meth:`ReplayServer.run` serves until cancelled. The
server creates no task of its own: each connection handler (created and awaited by
websockets' server) runs the connection's reader and writer in a TaskGroup.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
from collections.abc import Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Final, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from feeds.sim.replay_plan import FrameHook, ReplayFrame, ReplayPlan, due_count, due_s

#: Frames sent in a row at ``max`` before the writer lets other tasks run.
_YIELD_EVERY: Final = 64


class ReplayServer:
    """Serves ``plan`` at ``speed`` (None: max) on ``len(plan.endpoints)`` endpoints.

    ``port`` 0 binds every port (endpoints and REST) to a free one; otherwise endpoint i is
    on ``port + i`` and REST on ``rest_port`` (default ``port + K``).
    """

    def __init__(
        self,
        plan: ReplayPlan,
        *,
        speed: float | None = 1.0,
        port: int = 0,
        rest_port: int | None = None,
        host: str = "127.0.0.1",
        loop: bool = False,
        faults: Sequence[FrameHook | None] | None = None,
    ) -> None:
        count = len(plan.endpoints)
        if faults is not None and len(faults) != count:
            raise ValueError("one fault hook (or None) per endpoint")
        self._plan = plan
        self._speed = speed
        self._host = host
        self._loop = loop
        # FAULT HOOK: the fault language plugs in here, one FrameHook per endpoint
        # (replay_plan.FrameHook); None sends every frame as recorded.
        self._faults: list[FrameHook | None] = list(faults) if faults else [None] * count
        self._ports = [port + i if port else 0 for i in range(count)]
        self._rest_port = rest_port if rest_port is not None else (port + count if port else 0)
        self._servers: list[Server] = []
        self._rest_server: Server | None = None
        self._done = [not frames for frames in plan.endpoints]
        self._clock_ns: int | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._errors: list[Exception] = []
        self.finished = asyncio.Event()
        self.frames_sent = [0] * count
        self.rest_served = 0
        if all(self._done):
            self.finished.set()

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None or self._servers:
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
            raise ExceptionGroup("replay connection handler failed", list(self._errors))
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
        return [f"ws://{self._host}:{port}" for port in self._ports]

    @property
    def rest_url(self) -> str:
        return f"http://{self._host}:{self._rest_port}"

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

        server = await serve(handler, self._host, self._ports[index], compression=None)
        self._ports[index] = _bound_port(server)
        self._servers.append(server)

    async def _serve_connection(self, index: int, ws: ServerConnection) -> None:
        async with asyncio.TaskGroup() as group:
            writer = group.create_task(self._write_loop(index, ws))
            await self._read_loop(ws)
            writer.cancel()

    async def _read_loop(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                if message == "ping":  # OKX's application-level keepalive
                    await ws.send("pong")

    async def _write_loop(self, index: int, ws: ServerConnection) -> None:
        frames = self._plan.endpoints[index]
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionClosed):
            while True:
                start = loop.time()
                self._clock_ns = None if self._loop and self._done[index] else self._clock_ns
                position = 0
                while position < len(frames):
                    elapsed = loop.time() - start
                    count = due_count(frames, position, elapsed, self._speed)
                    if count == 0:
                        await asyncio.sleep(
                            due_s(frames[position].offset_ns, self._speed) - elapsed
                        )
                        continue
                    for frame in frames[position : position + count]:
                        await self._send(index, ws, frame)
                        position += 1
                        if self._speed is None and position % _YIELD_EVERY == 0:
                            await asyncio.sleep(0)
                self._endpoint_done(index)
                if not self._loop:
                    return

    async def _send(self, index: int, ws: ServerConnection, frame: ReplayFrame) -> None:
        hook = self._faults[index]
        # FAULT HOOK: the per-endpoint hook replaces the frame by the frames it returns
        # (dropped, duplicated, delayed, corrupted). Delays are not scheduled yet: the
        # returned frames are sent now, in the returned order.
        out: Sequence[ReplayFrame] = (frame,) if hook is None else hook(frame)
        for item in out:
            payload = item.payload
            await ws.send(payload, text=_is_text(payload))
            self.frames_sent[index] += 1
        clock = self._clock_ns
        self._clock_ns = frame.recv_ns if clock is None else max(clock, frame.recv_ns)

    def _endpoint_done(self, index: int) -> None:
        self._done[index] = True
        if all(self._done):
            self.finished.set()

    # --- REST -----------------------------------------------------------------------------

    async def _rest_request(self, conn: ServerConnection, request: Request) -> Response:
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

    async def _close_servers(self) -> None:
        live = [*self._servers, *([self._rest_server] if self._rest_server else [])]
        self._rest_server = None
        for server in live:
            server.close(
                close_connections=True, code=CloseCode.GOING_AWAY, reason="replay stopping"
            )
        for server in live:
            await server.wait_closed()


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
