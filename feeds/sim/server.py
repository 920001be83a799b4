"""A simulated Binance spot venue on loopback: N WebSocket endpoints and one REST endpoint.

:class:`SimBinanceUsdm` is the same venue as Binance USD-M futures (``/public/stream``,
``pu``-chained non-contiguous ids, ``/fapi/v1/depth``); its docstring lists the differences.

The asyncio shell around the pure :mod:`feeds.sim.book_process` (the books) and
:mod:`feeds.sim.binance_spot` (the wire format).

Lifecycle (structured concurrency). :class:`SimBinanceSpot` is an async context manager::

    async with SimBinanceSpot(["BTCUSDT"], n_endpoints=3, interval_s=0.02) as sim:
        url = feeds.binance.stream_url(sim.endpoint_urls[0], ["BTCUSDT"])
        ...

Entering binds every endpoint and the REST port and starts the generator in a TaskGroup
owned by the simulator and entered in the caller's task; leaving cancels the generator,
closes every connection (code 1001) and waits until every connection handler has returned.
If the generator fails, the TaskGroup cancels the caller's task and the error comes out of
the ``async with``. :meth:`SimBinanceSpot.run` is the same for use as one task of the
caller's own TaskGroup: it serves until cancelled and sets ``ready`` once the ports are bound.
An instance is started once.

Faults. ``faults=`` takes a :class:`feeds.sim.faults.FaultPlan` (docs/faults.md), applied
as in :mod:`feeds.sim.venue` by :func:`write_with_faults` and :func:`run_fault_schedule`
(shared by both): its ``notice`` is :meth:`SimBinanceSpot.send_shutdown_notice` and REST
faults are answered before the weight limit is checked.

Tasks. The simulator creates exactly one task of its own, the generator. Connection
handler tasks are created by websockets' server and awaited by its ``wait_closed()``;
inside each handler, the connection's reader and writer run in a TaskGroup of the handler.
No task is created per message.

Generator. Every ``interval_s`` each symbol's book takes one :meth:`BookProcess.step`; its
trades and its depth diff are rendered ONCE and the same bytes are queued to every
connection of every open endpoint whose subscriptions include the stream. Each endpoint
draws a seeded delivery delay per interval, uniform in ``[0, jitter_ms]``, and never
delivers before the previous interval's frames, so copies from different endpoints
interleave differently while each endpoint stays in order.

Slow clients. Each connection has a bounded queue of ``client_queue_frames`` frames. When a
frame does not fit, the queue is dropped and the connection is closed with code 1008 and
reason ``"client too slow"`` (counted in :attr:`EndpointStats.slow_client_closes`); the
other connections are not affected.

WebSocket endpoints serve combined streams only: ``/stream?streams=a@depth@100ms/a@trade``
(any other path gets HTTP 404). Simulated streams are ``<symbol>@depth@100ms`` and
``<symbol>@trade`` of the configured symbols, lower case; any other stream name in the URL
closes the connection with code 1008 and a reason naming the stream. Live requests
``SUBSCRIBE``, ``UNSUBSCRIBE`` (reply ``{"result":null,"id":N}``) and
``LIST_SUBSCRIPTIONS`` are answered; an unknown stream or method gets ``{"code":2,...}``,
malformed JSON ``{"code":3,...}``. More than ``max_incoming_per_s`` client messages within
one second close the connection with code 1008 (Binance allows 5). The server pings every
``ping_interval_s`` (Binance: 20 s) and websockets answers the client's pongs.

REST: ``GET /api/v3/depth?symbol=BTCUSDT&limit=N`` (HTTP/1.1, ``Connection: close``)
returns the book as of the moment the request arrived, delivered ``snapshot_delay_s``
later, so a delayed snapshot is already stale on arrival like a real one. ``limit``
defaults to 100 and is clamped to 1..5000. Errors carry Binance bodies: 400
``{"code":-1121,"msg":"Invalid symbol."}``, 400 ``-1102`` for a missing symbol, 400
``-1100`` for a non-numeric limit, 429 ``-1003`` with ``Retry-After`` once the request
weight of the last 60 s would exceed ``rest_weight_limit_1m`` (None: no limit). Every
response carries ``X-MBX-USED-WEIGHT-1M``. Any other path gets 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Final, Protocol, Self
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from feeds import binance_usdm as usdm
from feeds.binance import MAX_SNAPSHOT_LIMIT, SNAPSHOT_PATH, snapshot_weight
from feeds.sim import binance_spot as render
from feeds.sim import binance_usdm as render_usdm
from feeds.sim.book_process import BookProcess
from feeds.sim.faults import FaultPlan, RestFault, corrupt
from gateway.core.book import L2Book
from gateway.core.model import Level

#: Binance's cap on streams per connection.
MAX_STREAMS_PER_CONNECTION: Final = 1024
#: Close code and reason for a connection whose queue overflowed.
TOO_SLOW_CODE: Final = CloseCode.POLICY_VIOLATION
TOO_SLOW_REASON: Final = "client too slow"
#: Initial mid per symbol; other symbols start at 100.0.
DEFAULT_MIDS: Final[Mapping[str, float]] = {
    "BTCUSDT": 60_000.0,
    "ETHUSDT": 3_000.0,
    "BNBUSDT": 600.0,
    "SOLUSDT": 150.0,
}
_DEFAULT_MID: Final = 100.0
_REST_WINDOW_S: Final = 60.0
_MAX_CLOSE_REASON: Final = 120


class EndpointStats(msgspec.Struct, frozen=True):
    """Counters of one WebSocket endpoint, as of the call to :meth:`SimBinanceSpot.stats`."""

    index: int
    url: str
    is_open: bool
    connections_accepted: int
    connections_open: int
    frames_sent: int
    slow_client_closes: int
    shutdown_notices: int


class RestStats(msgspec.Struct, frozen=True):
    """Counters of the REST endpoint."""

    requests: int
    snapshots_served: int
    rate_limited: int


class _Request(msgspec.Struct):
    method: str
    params: list[str] | None = None
    id: int | str | None = None


_request_decoder: Final = msgspec.json.Decoder(_Request)


class _Conn:
    """One client connection: its subscriptions and its bounded outgoing queue."""

    __slots__ = ("close_code", "close_reason", "queue", "reader", "streams", "wake", "writer", "ws")

    def __init__(self, ws: ServerConnection, streams: set[str]) -> None:
        self.ws = ws
        self.streams = streams
        #: ``(deliver_at_s on the loop clock, frame)``, oldest first.
        self.queue: deque[tuple[float, bytes]] = deque()
        self.wake = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    def stop(self, code: int | None = None, reason: str = "") -> None:
        """End the reader and writer; the handler then closes with ``code`` if given."""
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
        "port",
        "rng",
        "server",
        "shutdown_notices",
        "slow_closes",
    )

    def __init__(self, index: int, port: int, seed: int) -> None:
        self.index = index
        self.port = port
        self.rng = random.Random(f"binance-spot-endpoint:{index}:{seed}")
        self.server: Server | None = None
        self.conns: set[_Conn] = set()
        #: Set, then replaced, whenever ``conns`` changes.
        self.conns_changed = asyncio.Event()
        self.last_deliver_s = 0.0
        self.lock = asyncio.Lock()
        self.accepted = 0
        self.frames_sent = 0
        self.slow_closes = 0
        self.shutdown_notices = 0
        self.fault_index = 0


def _add_conn(endpoint: _Endpoint, conn: _Conn) -> None:
    endpoint.conns.add(conn)
    endpoint.conns_changed.set()
    endpoint.conns_changed = asyncio.Event()


def _drop_conn(endpoint: _Endpoint, conn: _Conn) -> None:
    if conn in endpoint.conns:
        endpoint.conns.discard(conn)
        endpoint.conns_changed.set()
        endpoint.conns_changed = asyncio.Event()


# --- faults (shared with feeds.sim.venue) ---------------------------------------------------


class FaultEndpoint(Protocol):
    """What :func:`write_with_faults` needs of an endpoint."""

    index: int
    fault_index: int
    frames_sent: int


class FaultConn(Protocol):
    """What :func:`write_with_faults` needs of a connection."""

    ws: ServerConnection
    queue: deque[tuple[float, bytes]]
    wake: asyncio.Event


async def wait_unstalled(plan: FaultPlan, index: int, fault_time: Callable[[], float]) -> None:
    """Return once endpoint ``index`` is not stalled (its sockets stay open meanwhile)."""
    while True:
        end_s = plan.stalled(index, fault_time())
        if end_s is None:
            return
        await asyncio.sleep(max(0.001, end_s - fault_time()))


async def write_with_faults(
    plan: FaultPlan,
    endpoint: FaultEndpoint,
    conn: FaultConn,
    fault_time: Callable[[], float],
    quiet_s: float,
) -> None:
    """A connection's writer under ``plan`` (see docs/faults.md): each queued frame is
    dropped, delayed (order kept), corrupted, held behind the next frames (reorder; sent
    after ``quiet_s`` without frames at the latest) or duplicated; nothing is sent while
    the endpoint is stalled. Raises ConnectionClosed when the connection closes."""
    loop = asyncio.get_running_loop()
    held: list[tuple[int, bytes]] = []  # (frames still to pass, frame)
    last_at = 0.0

    async def send(frame: bytes) -> None:
        await conn.ws.send(frame, text=True)
        endpoint.frames_sent += 1

    while True:
        if not conn.queue:
            conn.wake.clear()
            if not held:
                await conn.wake.wait()
                continue
            try:
                async with asyncio.timeout(quiet_s):
                    await conn.wake.wait()
            except TimeoutError:
                flushed, held = held, []
                for _, frame in flushed:
                    await send(frame)
            continue
        deliver_at, frame = conn.queue.popleft()
        fault = plan.decide(endpoint.index, endpoint.fault_index, fault_time())
        endpoint.fault_index += 1
        if fault.drop:
            continue
        last_at = max(deliver_at + fault.delay_s, last_at)
        delay_s = last_at - loop.time()
        if delay_s > 0.0:
            await asyncio.sleep(delay_s)
        await wait_unstalled(plan, endpoint.index, fault_time)
        if fault.corrupt is not None:
            frame = corrupt(frame, fault.corrupt)
        if fault.hold:
            held.append((fault.hold, frame))
            continue
        await send(frame)
        if fault.duplicate:
            await send(frame)
        due = [late for remaining, late in held if remaining <= 1]
        held = [(remaining - 1, late) for remaining, late in held if remaining > 1]
        for late in due:
            await send(late)


async def run_fault_schedule(
    plan: FaultPlan,
    t0: float,
    *,
    close_connections: Callable[[int], None],
    close_endpoint: Callable[[int], Awaitable[None]],
    open_endpoint: Callable[[int], Awaitable[None]],
    notice: Callable[[int], None],
) -> None:
    """Run the plan's timed actions (``t0``: the loop time of t = 0), then return."""
    loop = asyncio.get_running_loop()
    for action in plan.schedule():
        await asyncio.sleep(max(0.0, t0 + action.t_s - loop.time()))
        if action.kind == "close":
            close_connections(action.endpoint)
        elif action.kind == "refuse":
            await close_endpoint(action.endpoint)
        elif action.kind == "reopen":
            if not plan.refusing(action.endpoint, action.t_s):
                await open_endpoint(action.endpoint)
        else:
            notice(action.endpoint)


def fault_response(fault: RestFault) -> Response:
    """The HTTP answer of a REST fault with a status (429 carries ``Retry-After``)."""
    assert fault.status is not None
    code = HTTPStatus(fault.status)
    body = b'{"code":%d,"msg":"simulated fault"}' % fault.status
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    if fault.retry_after_s is not None:
        headers["Retry-After"] = f"{fault.retry_after_s:g}"
    return Response(code.value, code.phrase, headers, body)


class ServerLifecycle:
    """The exit and ``run`` of a loopback server whose ``__aenter__`` binds its ports and
    leaves what must be undone in ``_stack``. Leaving closes everything (in reverse order);
    errors that connection handlers collected in ``_errors`` are raised then, as an
    ExceptionGroup, unless another exception is already on its way out."""

    _stack: contextlib.AsyncExitStack | None
    _errors: list[Exception]
    #: The ExceptionGroup's message.
    _handler_failure = "simulated connection handler failed"

    async def __aenter__(self) -> Self:
        """Bind the ports and start; every subclass implements it."""
        raise NotImplementedError

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


class SimBinanceSpot(ServerLifecycle):
    """A seeded Binance spot venue: see the module docstring for the behaviour.

    Args:
        symbols: upper-case symbols, e.g. ``["BTCUSDT", "ETHUSDT"]``.
        n_endpoints: number of WebSocket endpoints; all serve the same events.
        seed: seeds every book and every endpoint's jitter.
        interval_s: time between generator steps (Binance: 0.1).
        host: address to bind; keep it loopback.
        ports: one port per endpoint; None or 0 picks an ephemeral port. A reopened
            endpoint binds the port it had.
        rest_port: REST port; None or 0 picks an ephemeral port.
        jitter_ms: largest seeded per-endpoint delivery delay per interval.
        snapshot_delay_s: delay of every REST response (the book is taken on arrival).
        client_queue_frames: frames queued per connection before it is closed as too slow.
        ping_interval_s / ping_timeout_s: server pings (Binance: 20 s / 60 s; None: off).
        close_timeout_s: how long a closing handshake may take before the TCP is dropped.
        max_incoming_per_s: client messages allowed per second (None: unlimited).
        rest_weight_limit_1m: REST request weight per 60 s before 429 (None: unlimited).
        mids: initial mid per symbol, overriding :data:`DEFAULT_MIDS`.
        actions_per_step: Poisson mean of book actions (update ids) per step and symbol.
    """

    #: The only WebSocket path served (combined streams).
    _stream_path: str = "/stream"
    #: The venue's cap on streams per connection.
    _max_streams: int = MAX_STREAMS_PER_CONNECTION

    def __init__(
        self,
        symbols: Sequence[str],
        n_endpoints: int = 3,
        seed: int = 1,
        interval_s: float = 0.1,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        rest_port: int | None = None,
        *,
        jitter_ms: float = 0.0,
        snapshot_delay_s: float = 0.0,
        client_queue_frames: int = 4096,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 60.0,
        close_timeout_s: float = 2.0,
        max_incoming_per_s: int | None = 5,
        rest_weight_limit_1m: int | None = 6000,
        mids: Mapping[str, float] | None = None,
        actions_per_step: float = 8.0,
        faults: FaultPlan | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("at least one symbol is required")
        if n_endpoints < 1:
            raise ValueError("n_endpoints must be at least 1")
        if ports is not None and len(ports) != n_endpoints:
            raise ValueError(f"ports has {len(ports)} entries for {n_endpoints} endpoints")
        if interval_s <= 0.0 or jitter_ms < 0.0 or snapshot_delay_s < 0.0:
            raise ValueError("interval_s must be > 0; jitter_ms and snapshot_delay_s >= 0")
        if client_queue_frames < 1:
            raise ValueError("client_queue_frames must be at least 1")
        if faults is not None and faults.n_endpoints != n_endpoints:
            raise ValueError(f"the fault plan is for {faults.n_endpoints} endpoints")
        mids = {**DEFAULT_MIDS, **(mids or {})}
        self._procs: dict[str, BookProcess] = {}
        for symbol in symbols:
            sym = symbol.upper()
            if sym in self._procs:
                raise ValueError(f"duplicate symbol {sym}")
            self._procs[sym] = BookProcess(
                sym, seed, mid=mids.get(sym, _DEFAULT_MID), actions_per_step=actions_per_step
            )
        #: Stream name -> symbol, for every simulated stream.
        self._stream_symbols: dict[str, str] = {}
        for sym in self._procs:
            self._stream_symbols[render.depth_stream(sym)] = sym
            self._stream_symbols[render.trade_stream(sym)] = sym
        self._host = host
        self._endpoints = [
            _Endpoint(i, (ports[i] if ports else 0) or 0, seed) for i in range(n_endpoints)
        ]
        self._rest_port = rest_port or 0
        self._interval_s = interval_s
        self._jitter_s = jitter_ms / 1000.0
        self._snapshot_delay_s = snapshot_delay_s
        self._queue_cap = client_queue_frames
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._close_timeout_s = close_timeout_s
        self._max_incoming = max_incoming_per_s
        self._rest_weight_limit = rest_weight_limit_1m
        self._rest_weights: deque[tuple[float, int]] = deque()
        self._rest_requests = 0
        self._snapshots_served = 0
        self._rate_limited = 0
        self._rest_server: Server | None = None
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._stack: contextlib.AsyncExitStack | None = None
        self._started = False
        self._errors: list[Exception] = []
        self._faults = faults
        self._t0 = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._started:
            raise RuntimeError("a SimBinanceSpot is started once")
        self._started = True
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_servers)
            for endpoint in self._endpoints:
                await self._start_endpoint(endpoint)
            self._rest_server = await serve(
                _refuse_websocket,
                self._host,
                self._rest_port,
                process_request=self._rest_request,
                compression=None,
                open_timeout=self._snapshot_delay_s + 10.0,
            )
            self._rest_port = _bound_port(self._rest_server)
            group = await stack.enter_async_context(asyncio.TaskGroup())
            self._t0 = asyncio.get_running_loop().time()
            generator = group.create_task(self._generate(), name="sim-binance-spot-generator")
            # Runs before the TaskGroup exits, which then waits for the generator to end.
            stack.callback(generator.cancel)
            if self._faults is not None:
                faults = group.create_task(
                    run_fault_schedule(
                        self._faults,
                        self._t0,
                        close_connections=self._fault_close,
                        close_endpoint=self._fault_refuse,
                        open_endpoint=self.open_endpoint,
                        notice=self.send_shutdown_notice,
                    ),
                    name="sim-binance-spot-faults",
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
    def rest_url(self) -> str:
        """``http://host:port`` of the REST endpoint (known once started)."""
        return f"http://{self._host}:{self._rest_port}"

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
            shutdown_notices=endpoint.shutdown_notices,
        )

    @property
    def rest_stats(self) -> RestStats:
        return RestStats(
            requests=self._rest_requests,
            snapshots_served=self._snapshots_served,
            rate_limited=self._rate_limited,
        )

    def true_book(self, symbol: str) -> L2Book:
        """A copy of the venue's book of ``symbol`` as of :meth:`last_id`."""
        source = self._procs[symbol.upper()].book
        book = L2Book()
        book.load(source.bids(), source.asks())
        return book

    def last_id(self, symbol: str) -> int:
        """The venue update id of the latest step of ``symbol`` (what a snapshot would say)."""
        return self._procs[symbol.upper()].last_id

    def snapshot(self, symbol: str, limit: int = 100) -> tuple[int, list[Level], list[Level]]:
        """``(last_id, bids, asks)`` of ``symbol``, as the REST endpoint would serve it now."""
        return self._procs[symbol.upper()].snapshot(limit)

    # --- control --------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop generating updates. Frames already queued are still delivered."""
        self._paused = True
        self._resumed.clear()

    def resume(self) -> None:
        """Generate updates again, one interval after now."""
        self._paused = False
        self._resumed.set()

    def advance(self, steps: int = 1) -> None:
        """Generate and send ``steps`` intervals now, paused or not (call on the loop)."""
        for _ in range(steps):
            self._tick()

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
            server.close(close_connections=True, code=code, reason=reason)
            await server.wait_closed()

    async def open_endpoint(self, index: int) -> None:
        """Listen again on endpoint ``index``'s port. No-op when already open."""
        endpoint = self._endpoints[index]
        async with endpoint.lock:
            if endpoint.server is None:
                await self._start_endpoint(endpoint)

    def send_shutdown_notice(self, index: int) -> None:
        """Queue Binance's ``serverShutdown`` notice to every connection of endpoint
        ``index``, after the frames already queued. Connections stay open."""
        endpoint = self._endpoints[index]
        endpoint.shutdown_notices += 1
        frames = [(render.SHUTDOWN_STREAM, render.shutdown_frame(time.time_ns() // 1_000_000))]
        deliver_at = max(asyncio.get_running_loop().time(), endpoint.last_deliver_s)
        for conn in list(endpoint.conns):
            self._push(endpoint, conn, frames, deliver_at, every_stream=True)

    # --- generator ------------------------------------------------------------------------

    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        next_s = loop.time()
        while True:
            if self._paused:
                await self._resumed.wait()
                next_s = loop.time()
            next_s += self._interval_s
            delay_s = next_s - loop.time()
            if delay_s < -self._interval_s:
                next_s = loop.time()  # fell behind (busy machine): skip, do not burst
            # Always yield, even when late, so the loop is never starved.
            await asyncio.sleep(max(0.0, delay_s))
            if not self._paused:
                self._tick()

    def _tick(self) -> None:
        event_ms = time.time_ns() // 1_000_000
        frames: list[tuple[str, bytes]] = []
        for symbol, process in self._procs.items():
            batch = process.step()
            if batch is None:
                continue
            if batch.trades:
                stream = render.trade_stream(symbol)
                for trade in batch.trades:
                    frames.append((stream, render.trade_frame(symbol, trade, event_ms)))
            frames.append((render.depth_stream(symbol), render.batch_frame(batch, event_ms)))
        if frames:
            self._publish(frames)

    def _publish(self, frames: list[tuple[str, bytes]]) -> None:
        now_s = asyncio.get_running_loop().time()
        for endpoint in self._endpoints:
            # Drawn whether or not anyone listens, so the delays depend on the seed only.
            delay_s = endpoint.rng.uniform(0.0, self._jitter_s) if self._jitter_s else 0.0
            deliver_at = max(now_s + delay_s, endpoint.last_deliver_s)
            endpoint.last_deliver_s = deliver_at
            if endpoint.server is None:
                continue
            for conn in list(endpoint.conns):
                self._push(endpoint, conn, frames, deliver_at)

    def _push(
        self,
        endpoint: _Endpoint,
        conn: _Conn,
        frames: list[tuple[str, bytes]],
        deliver_at: float,
        every_stream: bool = False,
    ) -> None:
        queued = False
        for stream, frame in frames:
            if not (every_stream or stream in conn.streams):
                continue
            if len(conn.queue) >= self._queue_cap:
                endpoint.slow_closes += 1
                _drop_conn(endpoint, conn)
                conn.queue.clear()
                conn.stop(TOO_SLOW_CODE, TOO_SLOW_REASON)
                return
            conn.queue.append((deliver_at, frame))
            queued = True
        if queued:
            conn.wake.set()

    # --- WebSocket endpoints ----------------------------------------------------------------

    async def _start_endpoint(self, endpoint: _Endpoint) -> None:
        async def handler(ws: ServerConnection) -> None:
            await self._handle(endpoint, ws)

        server = await serve(
            handler,
            self._host,
            endpoint.port,
            process_request=self._check_stream_path,
            compression=None,
            ping_interval=self._ping_interval_s,
            ping_timeout=self._ping_timeout_s,
            close_timeout=self._close_timeout_s,
        )
        endpoint.port = _bound_port(server)
        endpoint.server = server

    def _check_stream_path(self, conn: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != self._stream_path:
            return conn.respond(
                HTTPStatus.NOT_FOUND,
                f"Only combined streams are simulated: {self._stream_path}?streams=...\n",
            )
        return None

    async def _handle(self, endpoint: _Endpoint, ws: ServerConnection) -> None:
        try:
            await self._serve_connection(endpoint, ws)
        except Exception as exc:
            # websockets would only log it; a handler failure is a simulator bug.
            self._errors.append(exc)
            raise

    async def _serve_connection(self, endpoint: _Endpoint, ws: ServerConnection) -> None:
        assert ws.request is not None  # the handler runs after the handshake
        streams, error = self._url_streams(ws.request.path)
        endpoint.accepted += 1
        if error is not None:
            await ws.close(CloseCode.POLICY_VIOLATION, error[:_MAX_CLOSE_REASON])
            return
        conn = _Conn(ws, streams)
        _add_conn(endpoint, conn)
        try:
            async with asyncio.TaskGroup() as group:
                conn.reader = group.create_task(self._read_loop(conn))
                conn.writer = group.create_task(self._write_loop(endpoint, conn))
        finally:
            _drop_conn(endpoint, conn)
            conn.queue.clear()
        if conn.close_code is not None:
            await ws.close(conn.close_code, conn.close_reason)

    def _url_streams(self, path: str) -> tuple[set[str], str | None]:
        """The streams named in ``/stream?streams=a/b``, or an error close reason."""
        query = parse_qs(urlsplit(path).query)
        names = [name for value in query.get("streams", []) for name in value.split("/") if name]
        if len(names) > self._max_streams:
            return set(), f"Too many streams: {len(names)} > {self._max_streams}"
        for name in names:
            problem = self._stream_problem(name)
            if problem is not None:
                return set(), problem
        return set(names), None

    def _stream_problem(self, name: str) -> str | None:
        if name in self._stream_symbols:
            return None
        if name.partition("@")[0].upper() in self._procs and name == name.lower():
            return f"Stream not simulated: {name}"
        return f"Invalid stream name (unknown symbol): {name}"

    async def _read_loop(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        recent_s: deque[float] = deque()
        try:
            async for message in conn.ws:
                if self._max_incoming is not None:
                    now_s = loop.time()
                    recent_s.append(now_s)
                    while recent_s[0] <= now_s - 1.0:
                        recent_s.popleft()
                    if len(recent_s) > self._max_incoming:
                        conn.stop(CloseCode.POLICY_VIOLATION, "Too many requests")
                        return
                await conn.ws.send(self._control_reply(conn, message), text=True)
        except ConnectionClosed:
            pass
        finally:
            conn.stop()

    def _control_reply(self, conn: _Conn, message: str | bytes) -> bytes:
        try:
            request = _request_decoder.decode(message)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return render.error_frame(3, f"Invalid JSON: {exc}")
        if request.method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            names = request.params or []
            for name in names:
                problem = self._stream_problem(name)
                if problem is not None:
                    return render.error_frame(2, f"Invalid request: {problem}", request.id)
            if request.method == "UNSUBSCRIBE":
                conn.streams.difference_update(names)
            elif len(conn.streams | set(names)) > self._max_streams:
                return render.error_frame(2, "Invalid request: too many streams", request.id)
            else:
                conn.streams.update(names)
            return render.result_frame(request.id)
        if request.method == "LIST_SUBSCRIPTIONS":
            return render.result_frame(request.id, sorted(conn.streams))
        return render.error_frame(
            2, f"Invalid request: unknown method {request.method!r}", request.id
        )

    def fault_time(self) -> float:
        """Seconds since the simulator started: the time of the fault plan."""
        return asyncio.get_running_loop().time() - self._t0

    def _fault_close(self, index: int) -> None:
        for conn in list(self._endpoints[index].conns):
            conn.stop(CloseCode.GOING_AWAY, "fault: close")

    async def _fault_refuse(self, index: int) -> None:
        await self.close_endpoint(index, CloseCode.GOING_AWAY, "fault: refuse")

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

    # --- REST -----------------------------------------------------------------------------

    # The REST snapshot endpoint's venue rules; the USD-M venue overrides them.
    _snapshot_path = SNAPSHOT_PATH
    _default_limit = "100"

    def _has_symbol(self, symbol: str) -> bool:
        return symbol in self._procs

    def _parse_limit(self, limit: int) -> int | Response:
        """The limit served, or the venue's error response."""
        return min(max(limit, 1), MAX_SNAPSHOT_LIMIT)

    def _snapshot_weight(self, limit: int) -> int:
        return snapshot_weight(limit)

    def _snapshot_body(self, symbol: str, limit: int) -> bytes:
        return render.snapshot_body(*self._procs[symbol].snapshot(limit))

    async def _rest_request(self, conn: ServerConnection, request: Request) -> Response:
        index = self._rest_requests
        self._rest_requests += 1
        url = urlsplit(request.path)
        if url.path != self._snapshot_path:
            return conn.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        fault = self._faults and self._faults.rest_fault(self.fault_time(), index)
        if fault:
            await asyncio.sleep(fault.extra_delay_s)
            if fault.status is not None:
                return fault_response(fault)
        query = parse_qs(url.query, keep_blank_values=True)
        symbol = query.get("symbol", [""])[0]
        if not symbol:
            return self._rest_error(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        if not self._has_symbol(symbol):
            return self._rest_error(-1121, "Invalid symbol.")
        limit_text = query.get("limit", [self._default_limit])[0]
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 20):
            return self._rest_error(
                -1100,
                "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
            )
        limit = self._parse_limit(int(limit_text))
        if isinstance(limit, Response):
            return limit
        used = self._use_weight(self._snapshot_weight(limit))
        if used is None:
            self._rate_limited += 1
            response = self._rest_error(
                -1003,
                "Too much request weight used; please use WebSocket Streams for live updates"
                " to avoid polling the API.",
                HTTPStatus.TOO_MANY_REQUESTS,
            )
            response.headers["Retry-After"] = str(int(_REST_WINDOW_S))
            return response
        # The book as of arrival, delivered after the delay: stale on arrival, as in life.
        body = self._snapshot_body(symbol, limit)
        if self._snapshot_delay_s > 0.0:
            await asyncio.sleep(self._snapshot_delay_s)
        self._snapshots_served += 1
        return _json_response(HTTPStatus.OK, body, used)

    def _use_weight(self, weight: int) -> int | None:
        """Record ``weight``; the weight used in the window, or None when over the limit."""
        now_s = time.monotonic()
        weights = self._rest_weights
        while weights and weights[0][0] <= now_s - _REST_WINDOW_S:
            weights.popleft()
        used = sum(w for _, w in weights)
        if self._rest_weight_limit is not None and used + weight > self._rest_weight_limit:
            return None
        weights.append((now_s, weight))
        return used + weight

    def _rest_error(
        self, code: int, msg: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST
    ) -> Response:
        used = sum(w for _, w in self._rest_weights)
        return _json_response(status, render.rest_error_body(code, msg), used)

    async def _close_servers(self) -> None:
        servers = [endpoint.server for endpoint in self._endpoints] + [self._rest_server]
        for endpoint in self._endpoints:
            endpoint.server = None
        self._rest_server = None
        live = [server for server in servers if server is not None]
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


def _json_response(status: HTTPStatus, body: bytes, used_weight: int) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("X-MBX-USED-WEIGHT-1M", str(used_weight)),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


class SimBinanceUsdm(SimBinanceSpot):
    """A seeded Binance USD-M futures venue: the spot simulator with the futures wire.

    Same constructor, lifecycle, faults and control as :class:`SimBinanceSpot` (see the
    module docstring); the defaults are the futures limits (10 client messages/s, REST
    weight 2400/min, pings every 3 min with a 10 min timeout). What differs:

    - WebSocket paths (the 2026 split): ``/public/stream?streams=<s>@depth@100ms/...``
      (:func:`feeds.binance_usdm.stream_url` of :attr:`public_urls`) and
      ``/market/stream?streams=<s>@aggTrade/...`` (:func:`~feeds.binance_usdm.market_stream_url`
      of :attr:`market_urls`); a stream of the other endpoint in the URL closes with 1008.
      Live SUBSCRIBE accepts both kinds on either path (a simplification). At most 200
      streams per connection. One simulated trade is one aggTrade.
    - ``depthUpdate`` carries ``E``, ``T``, ``U``, ``u`` and ``pu``; ids are not
      contiguous between events (:mod:`feeds.sim.binance_usdm`).
    - REST ``GET /fapi/v1/depth?symbol=X&limit=N``, ``limit`` one of
      :data:`feeds.binance_usdm.SNAPSHOT_LIMITS` (default 500; another value gets 400
      ``-1130``), body ``{"lastUpdateId","E","T","bids","asks"}`` read from the engine,
      which runs half an interval ahead of the stream: ``lastUpdateId`` usually lies inside
      the next event's ``U..u``.
    - :meth:`true_book` and :meth:`last_id` are the book and ``u`` of the last *published*
      event; :meth:`snapshot` is the engine's. :meth:`pause` first publishes the open event
      (when called on the event loop), so while paused all three agree.
    """

    _stream_path = "/public/stream"
    _market_path = "/market/stream"
    _max_streams = usdm.MAX_STREAMS_PER_CONNECTION

    def __init__(
        self,
        symbols: Sequence[str],
        n_endpoints: int = 3,
        seed: int = 1,
        interval_s: float = 0.1,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        rest_port: int | None = None,
        *,
        jitter_ms: float = 0.0,
        snapshot_delay_s: float = 0.0,
        client_queue_frames: int = 4096,
        ping_interval_s: float | None = 180.0,
        ping_timeout_s: float | None = 600.0,
        close_timeout_s: float = 2.0,
        max_incoming_per_s: int | None = usdm.MAX_MESSAGES_PER_S,
        rest_weight_limit_1m: int | None = usdm.REST_WEIGHT_PER_MINUTE,
        mids: Mapping[str, float] | None = None,
        actions_per_step: float = 8.0,
        faults: FaultPlan | None = None,
    ) -> None:
        if actions_per_step <= 0.0:
            raise ValueError("actions_per_step must be > 0")
        super().__init__(
            symbols,
            n_endpoints,
            seed,
            interval_s,
            host,
            ports,
            rest_port,
            jitter_ms=jitter_ms,
            snapshot_delay_s=snapshot_delay_s,
            client_queue_frames=client_queue_frames,
            ping_interval_s=ping_interval_s,
            ping_timeout_s=ping_timeout_s,
            close_timeout_s=close_timeout_s,
            max_incoming_per_s=max_incoming_per_s,
            rest_weight_limit_1m=rest_weight_limit_1m,
            mids=mids,
            # Two half steps per interval (see feeds.sim.binance_usdm).
            actions_per_step=actions_per_step / 2.0,
            faults=faults,
        )
        self._books = {sym: render_usdm.UsdmBook(proc, seed) for sym, proc in self._procs.items()}
        self._depth_streams = {render_usdm.depth_stream(sym): sym for sym in self._procs}
        self._trade_streams = {render_usdm.trade_stream(sym): sym for sym in self._procs}
        self._stream_symbols = {**self._depth_streams, **self._trade_streams}

    @property
    def public_urls(self) -> list[str]:
        """``ws://host:port/public`` of every endpoint: the bases to pass to
        :func:`feeds.binance_usdm.stream_url`."""
        return [f"{url}/public" for url in self.endpoint_urls]

    @property
    def market_urls(self) -> list[str]:
        """``ws://host:port/market`` of every endpoint: for
        :func:`feeds.binance_usdm.market_stream_url`."""
        return [f"{url}/market" for url in self.endpoint_urls]

    def true_book(self, symbol: str) -> L2Book:
        """A copy of the book of ``symbol`` as of the last published event."""
        source = self._books[symbol.upper()].published_book
        book = L2Book()
        book.load(source.bids(), source.asks())
        return book

    def last_id(self, symbol: str) -> int:
        """``u`` of the last published event of ``symbol``."""
        return self._books[symbol.upper()].last_u

    def snapshot(self, symbol: str, limit: int = 500) -> tuple[int, list[Level], list[Level]]:
        """``(lastUpdateId, bids, asks)`` of ``symbol``, as the REST endpoint would serve it."""
        return self._books[symbol.upper()].snapshot(limit)

    def pause(self) -> None:
        """Stop generating updates, after publishing every open event when on the loop."""
        super().pause()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._publish_events(lambda book: book.flush())

    def _tick(self) -> None:
        self._publish_events(lambda book: book.step())

    def _check_stream_path(self, conn: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path not in (self._stream_path, self._market_path):
            return conn.respond(
                HTTPStatus.NOT_FOUND,
                "Only combined streams are simulated: /public/stream?streams=... or"
                " /market/stream?streams=...\n",
            )
        return None

    def _url_streams(self, path: str) -> tuple[set[str], str | None]:
        streams, error = super()._url_streams(path)
        if error is not None:
            return streams, error
        market = urlsplit(path).path == self._market_path
        wrong = self._depth_streams if market else self._trade_streams
        for name in sorted(streams):
            if name in wrong:
                where = "/public" if market else "/market"
                return set(), f"Stream {name} is served on {where}"
        return streams, None

    def _publish_events(
        self, next_event: Callable[[render_usdm.UsdmBook], render_usdm.UsdmEvent | None]
    ) -> None:
        event_ms = time.time_ns() // 1_000_000
        frames: list[tuple[str, bytes]] = []
        for symbol, book in self._books.items():
            event = next_event(book)
            stream = render_usdm.trade_stream(symbol)
            for trade in book.take_trades():
                frames.append((stream, render_usdm.agg_trade_frame(symbol, trade, event_ms)))
            if event is not None:
                frames.append(
                    (render_usdm.depth_stream(symbol), render_usdm.event_frame(event, event_ms))
                )
        if frames:
            self._publish(frames)

    _snapshot_path = usdm.SNAPSHOT_PATH
    _default_limit = "500"

    def _has_symbol(self, symbol: str) -> bool:
        return symbol in self._books

    def _parse_limit(self, limit: int) -> int | Response:
        if limit not in usdm.SNAPSHOT_LIMITS:
            return self._rest_error(-1130, "Data sent for parameter 'limit' is not valid.")
        return limit

    def _snapshot_weight(self, limit: int) -> int:
        return usdm.snapshot_weight(limit)

    def _snapshot_body(self, symbol: str, limit: int) -> bytes:
        # The engine's book as of arrival.
        book = self._books[symbol]
        return render_usdm.snapshot_body(*book.snapshot(limit), time.time_ns() // 1_000_000)
