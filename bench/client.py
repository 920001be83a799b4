"""client: what one strategy process pays per gateway message, JSON vs MessagePack.

Message kinds: ``delta`` of 1, 10 and 50 levels, ``snapshot`` of 400 levels (200 per
side), ``trade``, ``bbo``, ``status``, for one symbol. Their prices and quantities are the
venue's decimal strings of the depth data's REST snapshot (the real capture's, see
``bench/common.py``): a delta re-sets the quantities of levels of that 400-level book, so
the client's book keeps its size, and every delta follows the previous message.

Table ``per message`` (pure, no event loop), each message kind in both formats, the
messages encoded with the protocol's own encoders (JSON as the ``str`` a text frame
gives the client):

- ``decode``: :func:`gateway.wire.protocol.read_server_message` alone (the module-level
  decoders the client uses);
- ``on_data``: :meth:`gateway.wire.client_session.ClientSession.on_data` whole (decode,
  seq check, book apply, events), on a session subscribed to ``book``, ``bbo`` and
  ``trade`` that holds the 400-level snapshot (rebuilt before each timed run).

Table ``loopback``: the same kinds through a real ``GatewayClient`` against a real
``gateway.io.fanout.Fanout`` on 127.0.0.1. The Fanout runs in this process (uvloop); each
client in its own process (``bench/client_process.py``), as a strategy does: one per
format for ``book`` + ``trade`` (deltas, snapshots, trades, statuses), one per format for
``bbo``, each on a symbol of its own. A round publishes one kind's generated events
(``BookDelta``, ``BookReset``, ``TradeOut``, ``StatusChange``) at full speed to one client,
then an end marker, and ends when that client has yielded the marker: the client's
throughput, and its process CPU time per message. Between batches the publisher yields
to the loop and waits while the client's unsent bytes exceed a high-water mark, so
nothing is dropped or conflated (checked, as are the events counted: one per message).
JSON and MessagePack rounds alternate; one warm-up round, then ``repeats`` timed ones.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from decimal import Decimal
from typing import Literal

from bench.common import REPO_ROOT
from bench.common import Timing
from bench.common import load_depth_data
from bench.common import measure
from bench.common import read_line
from bench.common import run_async
from bench.common import serving
from bench.common import stop_process
from gateway.core.book import L2Book
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import GatewayEvent
from gateway.core.model import Level
from gateway.core.model import Side
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import Trade
from gateway.core.model import TradeOut
from gateway.core.pipeline import BookState
from gateway.io.fanout import Fanout
from gateway.wire.client_session import CHANNELS
from gateway.wire.client_session import ClientSession
from gateway.wire.config import ServerConfig
from gateway.wire.protocol import Bbo
from gateway.wire.protocol import Delta
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import Subscribed
from gateway.wire.protocol import TradeMsg
from gateway.wire.protocol import WireFormat
from gateway.wire.protocol import encode
from gateway.wire.protocol import read_server_message

TITLE = "client: a strategy process's receive path per gateway message, JSON vs MessagePack"

FORMATS: tuple[WireFormat, ...] = ("json", "msgpack")
VENUE = "binance"
SYMBOL = "BTCUSDT"
#: The symbol of the pure table's messages.
KEY = f"{VENUE}:{SYMBOL}"
#: Levels per side of the book the messages are drawn from (the snapshot's 400 levels).
LEVELS_PER_SIDE = 200
EPOCH = 1
#: Times carried by the messages (the capture's day): venue ms, gateway receive and send ns.
EVENT_MS = 1_723_161_255_000
RECV_NS = EVENT_MS * 1_000_000 + 123_456
SEND_NS = RECV_NS + 14_000
TRADE_EPOCH = 1_723_161_000_000
FIRST_VENUE_ID = 48_882_215_000
MARKER = "bench-end-"
PROCESS = "bench.client_process"
#: Messages published between two yields to the event loop.
BATCH_MESSAGES = 32
#: Unsent bytes of the client's connection above which publishing waits.
HIGH_WATER = 256 * 1024


# --- the messages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Levels:
    """The book the messages are drawn from: best first, the venue's decimal strings."""

    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    def other_best_bid_qty(self, i: int) -> str:
        """Quantities of the best bid that alternate with ``i`` (two distinct strings)."""
        first = self.bids[0][1]
        if i % 2 == 0:
            return first
        return next((qty for _, qty in self.bids if qty != first), first + "1")


def _delta_levels(levels: Levels, size: int, i: int) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
    """``size`` levels (half bids, rounded up; half asks) of message ``i``: prices of the
    book's levels from a place that moves with ``i``, each with another level's quantity
    (never zero: the book keeps its levels and stays uncrossed)."""

    def side(book: tuple[Level, ...], count: int) -> tuple[Level, ...]:
        depth = len(book)
        start = (7 * i) % depth
        return tuple(
            (book[(start + j) % depth][0], book[(start + j + i + 1) % depth][1])
            for j in range(count)
        )

    return side(levels.bids, (size + 1) // 2), side(levels.asks, size // 2)


def _trade(levels: Levels, key: str, i: int) -> Trade:
    buy = i % 2 == 0
    price = (levels.asks if buy else levels.bids)[i % 5][0]
    qty = levels.bids[(3 * i) % len(levels.bids)][1]
    venue, _, symbol = key.partition(":")
    side = Side.BUY if buy else Side.SELL
    return Trade(venue, symbol, 3_700_000_000 + i, price, qty, side, EVENT_MS + i, RECV_NS, 0)


Position = Literal["next seq", "same seq", "counter"]


@dataclass(frozen=True)
class Kind:
    """One kind of message: ``message(levels, key, i)`` is the ``i``-th (from 1) as the
    gateway sends it (its seq ``i`` for book and trade streams, after a snapshot at seq 0);
    ``event(levels, key, i)`` the gateway event that makes the Fanout send it, ``i`` as
    ``position`` says."""

    name: str
    #: Messages per timed run (pure table) and per round (loopback); ``--quick``: 1/200.
    count: int
    message: Callable[[Levels, str, int], ServerMessage]
    event: Callable[[Levels, str, int], GatewayEvent]
    #: The client's channels: ``book`` + ``trade``, or ``bbo`` only.
    bbo: bool = False
    #: What ``i`` is in the loopback stream: the book stream's next seq (a delta), its
    #: current seq (a snapshot), or a counter of the symbol's other messages.
    position: Position = "next seq"


def _delta_kind(size: int, count: int) -> Kind:
    def message(levels: Levels, key: str, i: int) -> ServerMessage:
        bids, asks = _delta_levels(levels, size, i)
        return Delta(key, EPOCH, i, FIRST_VENUE_ID + i, bids, asks, EVENT_MS + i, RECV_NS, SEND_NS)

    def event(levels: Levels, key: str, i: int) -> GatewayEvent:
        bids, asks = _delta_levels(levels, size, i)
        return BookDelta(key, EPOCH, i, FIRST_VENUE_ID + i, bids, asks, RECV_NS, EVENT_MS + i)

    return Kind(f"delta, {size} level{'s' if size > 1 else ''}", count, message, event)


def _snapshot_message(levels: Levels, key: str, i: int) -> ServerMessage:
    return Snapshot(key, EPOCH, i, FIRST_VENUE_ID + i, list(levels.bids), list(levels.asks))


def _snapshot_event(levels: Levels, key: str, i: int) -> GatewayEvent:
    return BookReset(key, EPOCH, i, FIRST_VENUE_ID + i, RECV_NS)


def _trade_message(levels: Levels, key: str, i: int) -> ServerMessage:
    t = _trade(levels, key, i)
    return TradeMsg(
        key, t.trade_id, t.price, t.qty, t.side, t.trade_ms, t.recv_ns, SEND_NS, TRADE_EPOCH, i
    )


def _trade_event(levels: Levels, key: str, i: int) -> GatewayEvent:
    return TradeOut(_trade(levels, key, i))


def _bbo_message(levels: Levels, key: str, i: int) -> ServerMessage:
    bid = (levels.bids[0][0], levels.other_best_bid_qty(i))
    return Bbo(key, EPOCH, i, bid, levels.asks[0], EVENT_MS + i, RECV_NS, SEND_NS)


def _bbo_event(levels: Levels, key: str, i: int) -> GatewayEvent:
    """A delta that changes the best bid's quantity: the Fanout sends its ``bbo``."""
    bid = (levels.bids[0][0], levels.other_best_bid_qty(i))
    return BookDelta(key, EPOCH, i, FIRST_VENUE_ID + i, (bid,), (), RECV_NS, EVENT_MS + i)


def _status_reason(i: int) -> str:
    """Alternating reasons: each status is a change the client yields."""
    return f"status {i % 2}"


def _status_message(levels: Levels, key: str, i: int) -> ServerMessage:
    return Status(key, SymbolState.LIVE, _status_reason(i), RECV_NS)


def _status_event(levels: Levels, key: str, i: int) -> GatewayEvent:
    return StatusChange(key, SymbolState.LIVE, _status_reason(i))


KINDS: tuple[Kind, ...] = (
    _delta_kind(1, 20_000),
    _delta_kind(10, 10_000),
    _delta_kind(50, 4_000),
    Kind("snapshot, 400 levels", 400, _snapshot_message, _snapshot_event, position="same seq"),
    Kind("trade", 20_000, _trade_message, _trade_event, position="counter"),
    Kind("bbo", 20_000, _bbo_message, _bbo_event, bbo=True),
    Kind("status", 20_000, _status_message, _status_event, position="counter"),
)


def _count(kind: Kind, quick: bool) -> int:
    return max(5, kind.count // 200) if quick else kind.count


def _wire(msg: ServerMessage, wire_format: WireFormat) -> str | bytes:
    """What the client's ``recv()`` returns for ``msg``: JSON as ``str``, MessagePack as
    ``bytes``."""
    data = encode(msg, wire_format)
    return data.decode() if wire_format == "json" else data


def _deeper(side: tuple[Level, ...], *, bids: bool) -> tuple[Level, ...]:
    """``side`` (best first, at least 2 levels) extended to :data:`LEVELS_PER_SIDE` levels
    away from the top, one tick (its last two prices' difference) apart, the quantities
    repeated: for a simulated book shallower than the real one."""
    prices = [Decimal(price) for price, _ in side[-2:]]
    tick = abs(prices[1] - prices[0])
    step = -tick if bids else tick
    extra = tuple(
        (str(prices[1] + step * (n + 1)), side[n % len(side)][1])
        for n in range(LEVELS_PER_SIDE - len(side))
    )
    return side + extra


def _load_levels() -> tuple[Levels, str]:
    """The top :data:`LEVELS_PER_SIDE` levels per side of the depth data's snapshot (made
    deeper when it is shallower) and the data's source."""
    data = load_depth_data(limit=1)
    bids = data.snapshot.bids[:LEVELS_PER_SIDE]
    asks = data.snapshot.asks[:LEVELS_PER_SIDE]
    source = data.source
    if len(bids) < LEVELS_PER_SIDE or len(asks) < LEVELS_PER_SIDE:
        source += f"; its {len(bids)}/{len(asks)} levels extended to {LEVELS_PER_SIDE} per side"
        bids, asks = _deeper(bids, bids=True), _deeper(asks, bids=False)
    return Levels(bids, asks), source


# --- per message: decode, ClientSession.on_data ------------------------------------------------


def _session(levels: Levels, wire_format: WireFormat) -> ClientSession:
    """A session subscribed to every channel of :data:`KEY`, live, holding the 400-level
    snapshot at seq 0."""
    session = ClientSession([KEY], CHANNELS, wire_format=wire_format)
    for msg in (
        Subscribed([KEY], list(CHANNELS)),
        Status(KEY, SymbolState.LIVE, "", RECV_NS),
        _snapshot_message(levels, KEY, 0),
    ):
        session.on_data(_wire(msg, wire_format), RECV_NS)
    return session


def _decode_all(messages: list[str | bytes]) -> None:
    for data in messages:
        read_server_message(data)


def _check_events(kind: Kind, session: ClientSession, messages: list[str | bytes]) -> None:
    """One event per message, no gap, nothing bad: the workload does what it says."""
    events = sum(len(session.on_data(data, RECV_NS).events) for data in messages)
    stats = session.stats
    if events != len(messages) or stats.gaps or stats.bad_messages or stats.duplicate_trades:
        raise RuntimeError(f"{kind.name}: {events} events for {len(messages)} messages, {stats}")


def _measure(
    kind: Kind, levels: Levels, wire_format: WireFormat, count: int, repeats: int
) -> tuple[float, Timing, Timing]:
    """Mean message bytes, and the timings of ``decode`` and ``on_data`` over ``count``
    messages of ``kind`` in ``wire_format``."""
    messages = [_wire(kind.message(levels, KEY, i), wire_format) for i in range(1, count + 1)]

    def fresh() -> ClientSession:
        return _session(levels, wire_format)

    def on_data_all(session: ClientSession) -> None:
        on_data = session.on_data
        for data in messages:
            on_data(data, RECV_NS)

    _check_events(kind, fresh(), messages)
    decode = measure(_decode_all, lambda: messages, repeats=repeats)
    whole = measure(on_data_all, fresh, repeats=repeats)
    return statistics.mean(len(data) for data in messages), decode, whole


def _per_message(levels: Levels, quick: bool, repeats: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for kind in KINDS:
        count = _count(kind, quick)
        reference = 0.0
        for wire_format in FORMATS:
            size, decode, whole = _measure(kind, levels, wire_format, count, repeats)
            if not reference:
                reference = whole.median_ns
            rows.append(
                {
                    "table": "per message",
                    "message": kind.name,
                    "format": wire_format,
                    "message B": round(size),
                    "decode µs/msg": decode.per_op_us(count),
                    "decode msg/s": decode.ops_per_s(count),
                    "decode spread %": decode.spread_pct,
                    "on_data µs/msg": whole.per_op_us(count),
                    "on_data msg/s": whole.ops_per_s(count),
                    "on_data spread %": whole.spread_pct,
                    "on_data speed vs json": reference / whole.median_ns,
                }
            )
    return rows


# --- loopback: Fanout -> GatewayClient in its own process --------------------------------------


@dataclass
class _Feed:
    """One client's symbol as the Fanout's view holds it."""

    book: L2Book
    #: The book stream's seq, and a counter for the trade and status streams.
    seq: int = 0
    count: int = 0


class _View:
    """The Fanout's BookView: one 400-level book per client symbol, at the seq of what was
    published. Deltas re-set quantities of the book's levels; only the bbo kind's (one
    level) are applied here, for the Fanout to read the changed top of book: the other
    kinds' snapshots are the 400-level book as loaded, which any delta stream follows."""

    def __init__(self, levels: Levels, keys: list[str]) -> None:
        self.feeds: dict[str, _Feed] = {}
        for key in keys:
            book = L2Book()
            book.load(levels.bids, levels.asks)
            self.feeds[key] = _Feed(book)

    def book_state(self, key: str) -> BookState | None:
        feed = self.feeds.get(key)
        if feed is None:
            return None
        return BookState(feed.book, EPOCH, feed.seq, FIRST_VENUE_ID + feed.seq, SymbolState.LIVE)

    def symbols(self) -> list[tuple[str, SymbolState]]:
        return [(key, SymbolState.LIVE) for key in self.feeds]


@dataclass
class _Client:
    """A strategy process: its symbol, format, channels and pipes."""

    key: str
    wire_format: WireFormat
    bbo: bool
    proc: asyncio.subprocess.Process | None = None
    #: Per kind, the timed rounds: (messages, wall ns, server CPU ns, client CPU ns).
    runs: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"client process {self.key}"

    async def line(self, timeout_s: float = 30.0) -> str:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return await read_line(self.proc, self.name, timeout_s)


async def _start(client: _Client, port: int, timeout_s: float) -> None:
    channels = "bbo" if client.bbo else "book,trade"
    client.proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        PROCESS,
        f"ws://127.0.0.1:{port}/",
        client.key,
        client.wire_format,
        channels,
        str(timeout_s),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _drain(fanout: Fanout) -> None:
    await asyncio.sleep(0)
    # Polls: the subscribers' buffers have no event to wait on.
    while any(s.buffered_bytes > HIGH_WATER for s in fanout.subscriber_stats()):  # noqa: ASYNC110
        await asyncio.sleep(0.0005)


@dataclass
class _Loopback:
    fanout: Fanout
    view: _View
    levels: Levels
    cell: int = 0

    def events(self, kind: Kind, key: str, count: int) -> list[GatewayEvent]:
        """The round's events, built before it is timed; the view's seqs move on."""
        feed = self.view.feeds[key]
        out: list[GatewayEvent] = []
        for _ in range(count):
            if kind.position == "next seq":
                feed.seq += 1
                i = feed.seq
            elif kind.position == "same seq":
                i = feed.seq
            else:
                feed.count += 1
                i = feed.count
            out.append(kind.event(self.levels, key, i))
        return out

    async def round(self, kind: Kind, client: _Client, count: int) -> tuple[int, int, int]:
        """Publish ``count`` messages of ``kind`` to ``client``, then the end marker; the
        wall and CPU ns of this process and the client's CPU ns until the client yielded
        the marker."""
        events = self.events(kind, client.key, count)
        book = self.view.feeds[client.key].book
        publish = self.fanout.publish
        self.cell += 1
        marker = StatusChange(client.key, SymbolState.LIVE, f"{MARKER}{self.cell}")
        gc.collect()
        t0 = time.perf_counter_ns()
        c0 = time.process_time_ns()
        for index, event in enumerate(events):
            if kind.bbo and isinstance(event, BookDelta):
                book.apply(event.bids, event.asks)  # the view reflects what is published
            publish([event])
            if index % BATCH_MESSAGES == BATCH_MESSAGES - 1:
                await _drain(self.fanout)
        publish([marker])
        line = await client.line()
        wall_ns = time.perf_counter_ns() - t0
        cpu_ns = time.process_time_ns() - c0
        done, cell, got, client_cpu_ns, gaps, bad = line.split()
        if done != "done" or int(cell) != self.cell:
            raise RuntimeError(f"{client.name}: expected 'done {self.cell} ...', got {line!r}")
        if int(got) != count or int(gaps) or int(bad):
            raise RuntimeError(
                f"{client.name}, {kind.name}: {got} events for {count} messages, "
                f"{gaps} seq gaps, {bad} bad messages"
            )
        return wall_ns, cpu_ns, int(client_cpu_ns)


async def _loopback(levels: Levels, quick: bool, repeats: int) -> list[dict[str, object]]:
    clients = [
        _Client(f"{VENUE}:{SYMBOL}-{wire_format}{'-bbo' if bbo else ''}", wire_format, bbo)
        for bbo in (False, True)
        for wire_format in FORMATS
    ]
    view = _View(levels, [client.key for client in clients])
    server = ServerConfig(max_buffer_bytes=64 * 1024 * 1024, recovery_bytes=0)
    fanout = Fanout(view, server, ping_interval_s=None)
    loopback = _Loopback(fanout, view, levels)
    process_timeout_s = 60.0 if quick else 150.0

    async with serving(fanout):
        try:
            for client in clients:
                await _start(client, fanout.port, process_timeout_s)
            for client in clients:
                if (line := await client.line(timeout_s=30.0)) != "ready":
                    raise RuntimeError(f"{client.name}: expected 'ready', got {line!r}")
            for rep in range(1 + repeats):  # the first round warms up, untimed
                for kind in KINDS:
                    count = _count(kind, quick)
                    for client in clients:
                        if client.bbo != kind.bbo:
                            continue
                        run = await loopback.round(kind, client, count)
                        if rep:
                            client.runs.setdefault(kind.name, []).append((count, *run))
        finally:
            for client in clients:
                if client.proc is not None:
                    await stop_process(client.proc)
    stats = fanout.stats
    if stats.dropped or stats.conflations or stats.slow_disconnects:
        raise RuntimeError(f"the fanout dropped or conflated messages: {stats}")

    rows: list[dict[str, object]] = []
    for kind in KINDS:
        reference = 0.0
        for client in clients:
            if client.bbo != kind.bbo:
                continue
            runs = client.runs[kind.name]
            count = runs[0][0]
            wall = Timing(tuple(run[1] for run in runs))
            cpu_ns = statistics.median(run[2] for run in runs)
            client_cpu = Timing(tuple(run[3] for run in runs))
            client_cpu_ns = client_cpu.median_ns
            if not reference:
                reference = wall.median_ns
            rows.append(
                {
                    "table": "loopback",
                    "message": kind.name,
                    "format": client.wire_format,
                    "messages/round": count,
                    "messages/s": wall.ops_per_s(count),
                    "µs/message": wall.per_op_us(count),
                    "client CPU µs/msg": client_cpu.per_op_us(count),
                    "client busy %": 100.0 * client_cpu_ns / wall.median_ns,
                    "server busy %": 100.0 * cpu_ns / wall.median_ns,
                    "speed vs json": reference / wall.median_ns,
                    "spread %": wall.spread_pct,
                    "client CPU spread %": client_cpu.spread_pct,
                }
            )
    return rows


# --- the benchmark ----------------------------------------------------------------------------


def run(quick: bool) -> list[dict[str, object]]:
    repeats = 1 if quick else 5
    levels, source = _load_levels()
    rows = _per_message(levels, quick, repeats)
    rows.extend(run_async(_loopback(levels, quick, repeats), timeout_s=60.0 if quick else 150.0))
    rows.append(
        {
            "table": "data",
            "source": source,
            "book levels (bids/asks)": f"{len(levels.bids)}/{len(levels.asks)}",
        }
    )
    return rows
