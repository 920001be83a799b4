"""A simulated venue's frames, as its protocol renders them (:mod:`feeds.sim`), delivered
on redundant connections to the gateway's parser and arbiter, with content faults on one
connection's copies: the sequenced arbiter against a venue's real wire, without an event
loop or a socket.

:class:`CopiesRun` plays the venue, its connections and the part of the pipeline the
arbiter's commands need (a REST snapshot or an in-band resubscribe for a resync, a reconnect
with a fresh subscription), on a clock of its own, and checks the book after every input:
while ``live``, it is one of the venue's true books.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Final
from typing import Literal
from urllib.parse import urlsplit

from feeds.sim.binance_spot import BinanceSpotProtocol
from feeds.sim.binance_usdm import BinanceUsdmProtocol
from feeds.sim.book_process import BookProcess
from feeds.sim.bybit import BybitProtocol
from feeds.sim.connection import ConnState
from feeds.sim.faults import FrameFault
from feeds.sim.okx import OkxProtocol
from feeds.sim.rewrite import rewrite_frame
from feeds.sim.venue import VenueProtocol
from feeds.sim.venue import default_mid
from gateway.core.book import L2Book
from gateway.core.model import ArbiterEvent
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import ReconnectWanted
from gateway.core.model import SnapshotWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.sequenced import SequencedBook
from gateway.wire.venues import VenueAdapter
from gateway.wire.venues import adapter_for

#: The sequenced venues' link rules, each with a venue speaking it: Binance spot (``U``,
#: ``u``), USD-M (the ``pu`` chain), OKX (``prevSeqId``, ``seqId``, in-band snapshots) and
#: Bybit (``u``, in-band snapshots).
VENUES: Final = ("binance", "binance-usdm", "okx", "bybit-spot")
#: Between two steps of the venue, as the chaos tests run it.
INTERVAL_NS: Final = 20_000_000
#: The REST snapshot's round trip; a reconnect's backoff.
REST_NS: Final = 30_000_000
RECONNECT_NS: Final = 100_000_000
#: Levels compared of the books (Bybit's stream keeps the top 50).
DEPTH: Final = 50

#: A book's top :data:`DEPTH` levels per side, as numbers.
Normalized = tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]


@dataclass(frozen=True)
class Venue:
    """How to speak to one simulated venue: its adapter, its protocol, its symbol."""

    adapter: VenueAdapter
    protocol: VenueProtocol
    symbol: str

    @property
    def rest(self) -> bool:
        """Resyncs fetch a REST snapshot (Binance); else they resubscribe for one in band."""
        return self.adapter.venue.startswith("binance")

    def connect(self, now_ns: int) -> tuple[ConnState, list[bytes]]:
        """A new connection subscribed to the symbol, and the frames its subscription is
        answered with (an in-band snapshot where the venue sends one)."""
        url = self.adapter.stream_url("ws://127.0.0.1:1/", [self.symbol])
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if self.adapter.subscribe_messages is None:
            state = ConnState(path)
            return state, self.protocol.on_open(state)
        state = ConnState(self.protocol.path or path)
        frames = self.protocol.on_open(state)
        for message in self.adapter.subscribe_messages([self.symbol]):
            frames += self.protocol.on_message(state, message, now_ns)
        return state, frames

    def resubscribe(self, state: ConnState, now_ns: int) -> list[bytes]:
        """The frames answering a resubscribe of the symbol on ``state``'s connection."""
        assert self.adapter.resubscribe_messages is not None
        frames: list[bytes] = []
        for message in self.adapter.resubscribe_messages(self.symbol):
            frames += self.protocol.on_message(state, message, now_ns)
        return frames

    def rest_snapshot(self, now_ns: int) -> DepthSnapshot:
        """The venue's REST snapshot of the symbol now."""
        assert self.adapter.parse_snapshot is not None
        query = {"symbol": self.symbol, "limit": "1000"}
        answer = self.protocol.rest_response(query, now_ns)
        assert answer.status == 200, answer
        return self.adapter.parse_snapshot(self.symbol, answer.body, now_ns, -1)

    def true_book(self) -> Normalized:
        """The venue's book as its stream has published it."""
        return _top(self.protocol.true_book(self.symbol))


def _top(book: L2Book) -> Normalized:
    bids, asks = book.normalized()
    return bids[:DEPTH], asks[:DEPTH]


def _loaded(snap: DepthSnapshot) -> L2Book:
    book = L2Book()
    book.load(snap.bids, snap.asks)
    return book


def make_venue(name: str, seed: int = 11) -> Venue:
    """The simulated venue ``name`` of :data:`VENUES`, with one symbol."""
    protocol: VenueProtocol
    if name == "binance":
        symbol, protocol, tick = "BTCUSDT", BinanceSpotProtocol(None, None), "0.01"
    elif name == "binance-usdm":
        symbol, protocol, tick = "BTCUSDT", BinanceUsdmProtocol(seed, None, None), "0.1"
    elif name == "okx":
        symbol, protocol, tick = "BTC-USDT", OkxProtocol(1), "0.1"
    elif name == "bybit-spot":
        symbol, protocol, tick = "BTCUSDT", BybitProtocol("spot", 2, 5), "0.01"
    else:
        raise ValueError(name)
    proc = BookProcess(symbol, seed, mid=default_mid(symbol), tick=tick, lot="0.00001")
    protocol.attach({symbol: proc})
    return Venue(adapter_for(name), protocol, symbol)


@dataclass(frozen=True)
class Window:
    """Copies endpoint ``endpoint`` sends in ``[start_ns, end_ns)`` carry ``fault``."""

    endpoint: int
    start_ns: int
    end_ns: int
    fault: FrameFault = field(default_factory=lambda: FrameFault(ids="mangle"))


#: What the shell does with a connection the arbiter wants reconnected: nothing (it stays
#: as it is), close it and open it again after a backoff (``reopen``), or open its
#: replacement on the same endpoint beside it and close it once the replacement delivered
#: (``renew``, the gateway's make-before-break).
Reconnects = Literal["none", "reopen", "renew"]


@dataclass
class CopiesRun:
    """``venue`` on one connection to each of ``len(lags_ns)`` endpoints, endpoint ``e``
    delivering each frame ``lags_ns[e]`` after the venue sends it, ``windows`` of faulty
    copies, ``reconnects`` as the shell does them; the arbiter as the gateway makes it.
    :meth:`play` runs it; the counters are the arbiter's and:

    - ``reconnects_wanted``: ReconnectWanted given, per endpoint;
    - ``wrong_live``: inputs after which the book was ``live`` and not a true book.
    """

    venue: Venue
    lags_ns: Sequence[int] = (0, 10_000_000, 10_000_000)
    windows: Sequence[Window] = ()
    reconnects: Reconnects = "reopen"
    arb: SequencedBook = field(init=False)
    reconnects_wanted: dict[int, int] = field(default_factory=dict)
    wrong_live: int = 0
    statuses: list[tuple[int, SymbolState, str]] = field(default_factory=list)
    _queue: list[tuple[int, int, Callable[[int], None]]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _conn_ids: itertools.count[int] = field(default_factory=itertools.count)
    #: Per connection: its endpoint, and its state while open (None: closed).
    _endpoint: dict[int, int] = field(default_factory=dict)
    _states: dict[int, ConnState | None] = field(default_factory=dict)
    #: Connections being replaced.
    _renewing: set[int] = field(default_factory=set)
    _truths: set[Normalized] = field(default_factory=set)
    _snapshot_due: bool = False

    def __post_init__(self) -> None:
        arb = self.venue.adapter.new_arbiter(self.venue.symbol)
        assert isinstance(arb, SequencedBook)
        self.arb = arb
        self._truths.add(self.venue.true_book())

    # --- the run ------------------------------------------------------------------------

    def play(self, steps: int) -> None:
        """Connect to every endpoint, then ``steps`` venue steps, then until every frame
        and command is done."""
        for endpoint in range(len(self.lags_ns)):
            self._connect(endpoint, 0)
        now = 0
        for _ in range(steps):
            now += INTERVAL_NS
            self._run_until(now)
            self._step(now)
        self._run_until(now + 50 * INTERVAL_NS)

    def _at(self, when_ns: int, action: Callable[[int], None]) -> None:
        heapq.heappush(self._queue, (when_ns, next(self._order), action))

    def _run_until(self, end_ns: int) -> None:
        while True:
            deadline = self.arb.deadline_ns()
            when = self._queue[0][0] if self._queue else None
            if deadline is not None and deadline <= end_ns and (when is None or deadline < when):
                self._take(self.arb.on_timer(deadline), deadline)
                assert self.arb.deadline_ns() != deadline, "the timer changed nothing"
                continue
            if when is None or when > end_ns:
                return
            when, _, action = heapq.heappop(self._queue)
            action(when)

    def _step(self, now_ns: int) -> None:
        pubs = self.venue.protocol.step(now_ns)
        if pubs:
            self._truths.add(self.venue.true_book())
        for conn, state in list(self._states.items()):
            if state is None:
                continue
            frames = [f for f in (self.venue.protocol.frame_for(state, p) for p in pubs) if f]
            self._send(conn, state, frames, now_ns)

    def _send(self, conn: int, state: ConnState, frames: list[bytes], now_ns: int) -> None:
        """``frames`` sent at ``now_ns`` on ``conn`` (faulty in its endpoint's window),
        delivered after its endpoint's lag unless it was closed meanwhile."""
        endpoint = self._endpoint[conn]
        for window in self.windows:
            if window.endpoint == endpoint and window.start_ns <= now_ns < window.end_ns:
                shape = self.venue.protocol.stream_shape
                assert shape is not None
                frames = [rewrite_frame(f, shape, window.fault) for f in frames]

        def deliver(when_ns: int) -> None:
            if self._states.get(conn) is not state:
                return  # closed since
            for frame in frames:
                for event in self.venue.adapter.parse(frame, when_ns, conn):
                    if isinstance(event, DepthDiff):
                        self._take(self.arb.on_diff(event, when_ns), when_ns)
                    elif isinstance(event, DepthSnapshot):
                        self._take(self.arb.on_snapshot(event, when_ns), when_ns)
            if frames:
                # A replacement that delivered has caught up: the connection it renews closes.
                for old in [
                    c for c in self._renewing if c != conn and self._endpoint[c] == endpoint
                ]:
                    self._close(old, when_ns)

        self._at(now_ns + self.lags_ns[endpoint], deliver)

    def _connect(self, endpoint: int, now_ns: int) -> None:
        conn = next(self._conn_ids)
        state, frames = self.venue.connect(now_ns)
        self._endpoint[conn] = endpoint
        self._states[conn] = state
        self._take(self.arb.on_connection(conn, True, now_ns), now_ns)
        self._send(conn, state, frames, now_ns)

    def _close(self, conn: int, now_ns: int) -> None:
        self._renewing.discard(conn)
        self._states[conn] = None
        self._take(self.arb.on_connection(conn, False, now_ns), now_ns)

    def _take(self, events: list[ArbiterEvent], now_ns: int) -> None:
        for event in events:
            if isinstance(event, SnapshotWanted):
                self._snapshot_wanted(now_ns)
            elif isinstance(event, ReconnectWanted):
                self._reconnect(event.conn_id, now_ns)
            elif isinstance(event, StatusChange):
                self.statuses.append((now_ns, event.state, event.reason))
        if self.arb.state is SymbolState.LIVE and _top(self.arb.book) not in self._truths:
            self.wrong_live += 1

    def _reconnect(self, conn: int, now_ns: int) -> None:
        endpoint = self._endpoint[conn]
        self.reconnects_wanted[endpoint] = self.reconnects_wanted.get(endpoint, 0) + 1
        if self._states.get(conn) is None or any(
            self._endpoint[c] == endpoint for c in self._renewing
        ):
            return  # closed, or its endpoint's renewal under way: one at a time
        if self.reconnects == "reopen":
            self._close(conn, now_ns)
            self._at(now_ns + RECONNECT_NS, lambda t: self._connect(endpoint, t))
        elif self.reconnects == "renew":
            self._renewing.add(conn)
            self._at(now_ns + 1, lambda t: self._connect(endpoint, t))

    def _snapshot_wanted(self, now_ns: int) -> None:
        if self.venue.rest:
            if not self._snapshot_due:
                self._snapshot_due = True

                def fetched(when_ns: int) -> None:
                    self._snapshot_due = False
                    snap = self.venue.rest_snapshot(when_ns)
                    # USD-M's engine runs ahead of its stream: its book is a true one too.
                    self._truths.add(_top(_loaded(snap)))
                    self._take(self.arb.on_snapshot(snap, when_ns), when_ns)

                self._at(now_ns + REST_NS, fetched)
            return
        for conn, state in self._states.items():
            if state is not None:
                self._send(conn, state, self.venue.resubscribe(state, now_ns), now_ns)

    def endpoint_of(self, conn_id: int) -> int:
        """The endpoint connection ``conn_id`` was opened to."""
        return self._endpoint[conn_id]

    def is_true(self) -> bool:
        """The book is the venue's now."""
        return _top(self.arb.book) == self.venue.true_book()
