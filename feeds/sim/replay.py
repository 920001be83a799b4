"""The replay server: a recorded capture served from K loopback WebSocket endpoints and one
REST port, as the venue would, so the gateway connects with only its endpoint URLs changed.

The asyncio shell around the pure :mod:`feeds.sim.replay_plan` (what goes where, when) and
:mod:`feeds.sim.replay_book` (the books at the replay's position).

Served by the one server shell, :class:`feeds.sim.shell.EndpointServer` (lifecycle,
connections, faults, REST serving: see its module docstring)::

    async with ReplayServer(plan, speed=None) as replay:
        ... replay.endpoint_urls, replay.rest_url, await replay.finished.wait() ...

The server's only task of its own is the fault schedule (with ``faults``); each connection
runs a producer beside its reader and writer, which feeds the connection's queue.

WebSocket endpoints accept any path and query; an endpoint that serves recorded connections of
several paths (Binance futures' ``/public`` and ``/market``) sends each recorded stream only
to connections opened on its path's first segment. Each endpoint streams its frames in recorded
order in passes, as a venue streams live: the first connection starts a pass at the
endpoint's first frame, and a connection opened during a pass (a reconnection) joins at the
endpoint's current position, past every frame already given to a connection of the
endpoint and, at speed X, every frame already due. At speed X frame ``f`` is sent
``f.offset_ns / X`` after the pass started (every frame already due is sent at once, so
bursts stay bursts); at ``max`` (speed None) as fast as the client reads: the producer
waits while the connection's queue holds ``_QUEUE_MAX`` frames, and the writer's ``send``
awaits the connection's bounded write buffer draining. With ``loop`` the first connection
through the end starts the next pass (the others join it); otherwise a pass is run once and
connections stay open and idle after it (:meth:`ReplayServer.close_endpoints` closes them).
:attr:`ReplayServer.finished` is set once every endpoint has sent all its frames to some
connection.

Client messages: OKX's text ``ping`` is answered ``pong``. A subscribe request (OKX's or
Bybit's ``{"op":"subscribe",...}``) on a connection that joined during a pass, or that
unsubscribed before (a resubscribe), is answered as the venue would with an in-band snapshot
of each book it names, rebuilt at the connection's position (the records before the next
frame it is sent); a connection from the pass's start gets the recorded snapshots in its
stream. Other messages are ignored.

REST (``rest_port``): a venue's depth request is answered with the book at the replay's
position (one past the newest record sent on any connection in the current pass), rebuilt
by the gateway's pipeline and rendered in the venue's REST format with its last update id
(:meth:`feeds.sim.replay_book.ReplayBooks.rest_answer`). Any other ``GET``, or one before
the first frame or for a book not consistent at the position, is answered from the recorded
responses: by path + query (exact, else same path and same ``symbol``/``instId``), the most
recent one recorded at or before the replay time (:attr:`ReplayServer.replay_ns`), or the
first one when no frame was sent yet; else 404. The books are rebuilt on demand, a bounded
number of records per turn of the event loop.

Faults (``faults``, a :class:`feeds.sim.faults.FaultPlan`, docs/faults.md): the whole
language, applied by the same shell as the simulators'. Each connection's frames go, at
their replay time, through the fault writer (drop, duplicate, corrupt, delay and jitter,
reorder, stall); the fault schedule closes an endpoint's connections at ``close@t`` (code
1001; the client's next connection joins at the endpoint's position) and stops listening during
``refuse@t+d``. ``notice`` sends the ``notice`` frame given
(the capture's venue's own maintenance or shutdown notice), or nothing where none is known.
REST faults answer the REST port's requests (status with ``Retry-After``, ``slow``). The
fault time ``t`` is seconds since the server started. :attr:`ReplayServer.finished` is set
once the endpoint's frames were all written out (with faults: handed to the fault writer
and written, held frames flush after a quiet interval).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Sequence
from typing import Any
from typing import Final

from websockets.frames import CloseCode

from feeds.sim.connection import RestAnswer
from feeds.sim.faults import FaultPlan
from feeds.sim.faults import FrameFault
from feeds.sim.faults import RestFault
from feeds.sim.replay_book import STREAM_SHAPES
from feeds.sim.replay_book import request_op
from feeds.sim.replay_book import rest_shape
from feeds.sim.replay_plan import ReplayFrame
from feeds.sim.replay_plan import ReplayPlan
from feeds.sim.replay_plan import due_count
from feeds.sim.replay_plan import due_s
from feeds.sim.replay_plan import route_of
from feeds.sim.rewrite import IdRestart
from feeds.sim.rewrite import rewrite_body
from feeds.sim.rewrite import rewrite_frame
from feeds.sim.shell import Conn
from feeds.sim.shell import Endpoint
from feeds.sim.shell import EndpointServer

#: Frames sent in a row at ``max`` before the producer lets other tasks run.
_YIELD_EVERY: Final = 64
#: Frames queued for a connection's writer before the producer waits for it.
_QUEUE_MAX: Final = 256
#: Frames a connection's queue may hold (the producer's frames and replies) before the
#: connection is closed as too slow.
_QUEUE_CAP: Final = 4096
#: Held (reordered) frames are sent after this long without a frame at the latest.
_QUIET_S: Final = 0.2
#: Records the books are rebuilt by before the server lets other tasks run.
_REBUILD_BUDGET: Final = 2048


class _Extra(enum.StrEnum):
    """The replay's keys in a connection's ``state.extra``."""

    #: The endpoint frame index the connection joined at.
    JOINED = "replay_joined"
    #: The books' position of the last frame queued for it.
    POSITION = "replay_position"
    #: The venue of the endpoint's frames.
    VENUE = "replay_venue"
    #: The first segment of the path it was opened on (:attr:`ReplayFrame.route`).
    ROUTE = "replay_route"
    #: Set once it unsubscribed: its subscribes are answered.
    RESUBSCRIBING = "replay_resubscribing"


class ReplayServer(EndpointServer):
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
        super().__init__(
            "replay",
            count,
            0,
            host=host,
            ports=[port + i if port else 0 for i in range(count)],
            rest_port=rest_port if rest_port is not None else (port + count if port else 0),
            serves_rest=True,
            client_queue_frames=_QUEUE_CAP,
            # websockets' defaults
            ping_interval_s=20.0,
            ping_timeout_s=20.0,
            close_timeout_s=10.0,
            faults=faults,
            quiet_s=_QUIET_S,
        )
        self._plan = plan
        self._speed = speed
        self._loop = loop
        #: The venue's maintenance/shutdown notice frame, sent by ``notice`` faults.
        self._notice = notice
        self._done = [not frames for frames in plan.endpoints]
        self._clock_ns: int | None = None
        #: The books' position: one past the newest record sent on any connection.
        self._position = 0
        #: Per endpoint: when its current pass started (loop time; None: not started),
        #: the pass's number, and the frames any connection of it was given so far.
        self._pass_start: list[float | None] = [None] * count
        self._pass_number = [0] * count
        self._reached = [0] * count
        #: Without faults, the frames queued and not yet sent, per connection: the replay
        #: time advances as frames are sent.
        self._pending: dict[Conn, deque[ReplayFrame]] = {}
        self.finished = asyncio.Event()
        self.rest_served = 0
        #: The renumbering of ids since the last ``restart`` fault (None: none).
        self._restart: IdRestart | None = None
        if all(self._done):
            self.finished.set()

    # --- addresses and state --------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        return f"http://{self._host}:{self._rest_port}"

    @property
    def frames_sent(self) -> list[int]:
        """Frames written per endpoint (duplicates count twice, dropped ones not)."""
        return [endpoint.frames_sent for endpoint in self._endpoints]

    @property
    def replay_ns(self) -> int | None:
        """The replay time REST answers at: None until a frame was sent."""
        return self._clock_ns

    # --- the shell's hooks ----------------------------------------------------------------

    async def _answer(self, conn: Conn, message: str | bytes) -> list[bytes]:
        # OKX's application-level keepalive is answered at once (not behind the capture's
        # frames, and never faulted).
        if message == "ping":
            await conn.ws.send("pong")
            return []
        op = request_op(message)
        extra = conn.state.extra
        if op == "unsubscribe":
            extra[_Extra.RESUBSCRIBING] = True
        if op != "subscribe" or not (extra.get(_Extra.JOINED) or extra.get(_Extra.RESUBSCRIBING)):
            # A connection from the capture's start: its recorded stream carries the
            # snapshots of its first subscriptions.
            return []
        books = self._plan.books
        position = extra.get(_Extra.POSITION, 0)
        assert isinstance(position, int)
        await self._rebuild(position)
        recv_ns = books.recv_ns(position - 1) if position else 0
        frames = books.in_band_answer(self._venue(conn), message, recv_ns)
        return [self._renumbered(conn, frame) for frame in frames]

    @staticmethod
    def _venue(conn: Conn) -> str | None:
        venue = conn.state.extra.get(_Extra.VENUE)
        assert venue is None or isinstance(venue, str)
        return venue

    def _renumbered(self, conn: Conn, frame: bytes) -> bytes:
        """``frame`` with its ids renumbered since the last ``restart`` fault."""
        shape = STREAM_SHAPES.get(self._venue(conn) or "")
        if self._restart is None or shape is None:
            return frame
        return self._restart.apply(frame, shape)

    def _rewrite(self, conn: Conn, frame: bytes, fault: FrameFault) -> bytes:
        shape = STREAM_SHAPES.get(self._venue(conn) or "")
        return frame if shape is None else rewrite_frame(frame, shape, fault)

    def _rewrite_rest(self, target: str, answer: RestAnswer, fault: RestFault) -> RestAnswer:
        found = rest_shape(target)
        if found is None:
            return answer
        return answer._replace(
            body=rewrite_body(answer.body, found[0], fault.oversize_levels, alter=fault.alter)
        )

    def _restart_ids(self, first_id: int) -> None:
        self._restart = IdRestart(first_id, before=self._restart)

    def _producer(self, endpoint: Endpoint, conn: Conn) -> Coroutine[Any, Any, None]:
        # Joined now, before the connection's first message is read.
        self._join(endpoint.index, conn)
        return self._produce(endpoint, conn)

    async def _send(self, conn: Conn, frame: bytes) -> None:
        await conn.ws.send(frame, text=_is_text(frame))
        pending = self._pending.get(conn)
        if pending and pending[0].payload is frame:  # not a reply
            self._advance_clock(pending.popleft())

    def _notice_frame(self) -> bytes | None:
        return None if self._notice is None else self._notice()

    async def _rest_answer(self, target: str) -> RestAnswer | None:
        position = self._position
        body: bytes | None = None
        if position:
            await self._rebuild(position)
            body = self._plan.books.rest_answer(target, self._plan.books.recv_ns(position - 1))
        if body is None:
            body = self._plan.rest.lookup(target, self._clock_ns)
        if body is None:
            return None
        found = rest_shape(target)
        if self._restart is not None and found is not None:
            body = self._restart.apply(body, *found)
        self.rest_served += 1
        return RestAnswer(200, body, content_type="application/json;charset=UTF-8")

    async def _rebuild(self, position: int) -> None:
        """Bring the books to ``position``, letting other tasks run in between."""
        books = self._plan.books
        done = books.advance(position, _REBUILD_BUDGET)
        while not done:
            await asyncio.sleep(0)  # a bounded slice of work per turn of the loop
            done = books.advance(position, _REBUILD_BUDGET)

    # --- control --------------------------------------------------------------------------

    async def close_endpoints(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "replay finished"
    ) -> None:
        """Close every endpoint's connections with ``code`` and stop listening (REST stays
        up). Returns once every connection is closed."""
        for index in range(len(self._endpoints)):
            await self.close_endpoint(index, code, reason)

    # --- the producer ---------------------------------------------------------------------

    async def _produce(self, endpoint: Endpoint, conn: Conn) -> None:
        """Queue each frame of the endpoint at its replay time, from the endpoint's current
        position on; at the end of a pass, once the writer is done with them, the endpoint
        is done (and a loop starts over)."""
        index = endpoint.index
        frames = self._plan.endpoints[index]
        if self._faults is None:
            self._pending[conn] = deque()
        try:
            await self._passes(index, endpoint, conn, frames)
        finally:
            self._pending.pop(conn, None)

    async def _passes(
        self, index: int, endpoint: Endpoint, conn: Conn, frames: Sequence[ReplayFrame]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start, position = self._pass_start[index], conn.state.extra[_Extra.JOINED]
            assert start is not None and isinstance(position, int)
            pass_number = self._pass_number[index]
            while position < len(frames):
                elapsed = loop.time() - start
                count = due_count(frames, position, elapsed, self._speed)
                if count == 0:
                    await asyncio.sleep(due_s(frames[position].offset_ns, self._speed) - elapsed)
                    continue
                for frame in frames[position : position + count]:
                    await conn.drained(below=_QUEUE_MAX)
                    self._queue(endpoint, conn, frame)
                    position += 1
                    self._reached[index] = max(self._reached[index], position)
                    if self._speed is None and position % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            await conn.drained()
            self._endpoint_done(index)
            if not self._loop:
                return
            if self._pass_number[index] == pass_number:
                # The first connection through the end starts the next pass; the others
                # join it where it is.
                self._pass_number[index] += 1
                self._pass_start[index] = None
                self._reached[index] = 0
                self._clock_ns = None
                self._position = 0
            self._join(index, conn)

    def _join(self, index: int, conn: Conn) -> None:
        """Set where ``conn`` joins the endpoint's pass (starting the pass if none runs)."""
        frames = self._plan.endpoints[index]
        now = asyncio.get_running_loop().time()
        start = self._pass_start[index]
        if start is None:  # this connection starts the endpoint's pass
            self._pass_start[index] = now
            position = 0
        else:
            position = self._join_position(index, frames, now - start)
        extra = conn.state.extra
        extra[_Extra.ROUTE] = route_of(conn.ws.request.path if conn.ws.request is not None else "")
        extra[_Extra.JOINED] = position
        extra[_Extra.POSITION] = self._record_position(frames, position)
        if frames:
            extra[_Extra.VENUE] = self._plan.books.venue_of(
                frames[min(position, len(frames) - 1)].record
            )

    def _join_position(self, index: int, frames: Sequence[ReplayFrame], elapsed_s: float) -> int:
        """Where a connection joins the endpoint's pass: past every frame already sent on
        the endpoint, and past every frame due by now (speed X), as on the venue."""
        due = 0 if self._speed is None else due_count(frames, 0, elapsed_s, self._speed)
        return max(self._reached[index], due)

    def _record_position(self, frames: Sequence[ReplayFrame], position: int) -> int:
        """The books' position of a connection about to be sent ``frames[position]``."""
        if position < len(frames):
            return frames[position].record
        return frames[-1].record + 1 if frames else 0

    def _queue(self, endpoint: Endpoint, conn: Conn, frame: ReplayFrame) -> None:
        if frame.route and frame.route != conn.state.extra.get(_Extra.ROUTE):
            return  # another path's stream of this endpoint
        payload = self._renumbered(conn, frame.payload)
        self._push(endpoint, conn, [payload], asyncio.get_running_loop().time())
        conn.state.extra[_Extra.POSITION] = frame.record + 1
        pending = self._pending.get(conn)
        if pending is None:
            self._advance_clock(frame)  # with faults: as handed to the fault writer
        else:
            pending.append(frame)

    def _advance_clock(self, frame: ReplayFrame) -> None:
        clock = self._clock_ns
        self._clock_ns = frame.recv_ns if clock is None else max(clock, frame.recv_ns)
        self._position = max(self._position, frame.record + 1)

    def _endpoint_done(self, index: int) -> None:
        self._done[index] = True
        if all(self._done):
            self.finished.set()


def _is_text(payload: bytes) -> bool:
    if payload.isascii():
        return True
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True
