"""fanout: deliveries per second from one server core to N WebSocket subscribers.

The server runs in this process on uvloop: a ``gateway.io.fanout.Fanout`` on 127.0.0.1 with
a fake ``BookView`` (one book, loaded from the capture's REST snapshot). The subscribers
are N raw WebSocket connections opened by ``bench/fanout_reader.py`` in a separate
process (started here, stopped by its pid, bounded in time), which only counts bytes, so
the figures are the server core's.

Messages: ``delta`` messages of ``binance:BTCUSDT`` whose levels are the first 3 bids and 3
asks of the capture's real diffs (about the 300 B frame of the performance targets), one per
``BookDelta``. Each measured round publishes E events to N subscribers (E·N deliveries),
then an end marker, and ends when the reader has received the marker on every
connection. Between batches of about 512 deliveries the loop yields, and waits while any
transport holds more than 256 KiB unsent, so nothing is dropped or conflated (checked).

Side by side, on the same connections and messages:

- ``Fanout.publish``: the gateway's path (``BookDelta`` → ``Delta`` → JSON once → frame
  once → queued per subscriber, with its per-subscriber checks, and one
  ``transport.write`` per subscriber at the end of the loop turn);
- ``websockets broadcast()``: the same JSON bytes encoded once per event, framed by
  websockets once per connection;
- ``prebuilt frame -> transport.write``: the floor of the gateway's approach: encode and
  frame once, write to every transport, no bookkeeping;
- ``16 frames coalesced -> transport.write``: 16 consecutive frames joined into one write
  per subscriber (the performance targets: coalescing a subscriber's pending messages).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import broadcast

from bench.common import KEY
from bench.common import load_depth_data
from bench.common import read_line
from bench.common import run_async
from bench.common import serving
from bench.common import stop_process
from gateway.core.book import L2Book
from gateway.core.model import BookDelta
from gateway.core.model import Level
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.pipeline import BookState
from gateway.io.fanout import Fanout
from gateway.io.fanout import build_frame
from gateway.wire.config import ServerConfig
from gateway.wire.protocol import Delta
from gateway.wire.protocol import Status
from gateway.wire.protocol import encode_json

TITLE = "fanout: deliveries/s to N loopback WebSocket subscribers, server on uvloop"

SUBSCRIBERS = (1, 8, 32)
READER = Path(__file__).with_name("fanout_reader.py")
COALESCE = 16
#: Deliveries between two yields to the event loop.
BATCH_DELIVERIES = 512
#: Unsent bytes per transport above which publishing waits.
HIGH_WATER = 256 * 1024
MARKER = "bench-end-"


class _View:
    """A BookView of one live book whose (epoch, seq) follows what is published."""

    def __init__(self, book: L2Book, venue_id: int) -> None:
        self.book = book
        self.seq = 0
        self.venue_id = venue_id

    def book_state(self, key: str) -> BookState | None:
        if key != KEY:
            return None
        return BookState(self.book, 1, self.seq, self.venue_id, SymbolState.LIVE)

    def symbols(self) -> list[tuple[str, SymbolState]]:
        return [(KEY, SymbolState.LIVE)]

    def next_delta(self, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> Delta:
        self.seq += 1
        self.venue_id += 1
        return Delta(KEY, 1, self.seq, self.venue_id, bids, asks)


@dataclass
class _Ctx:
    fanout: Fanout
    view: _View
    changes: list[tuple[tuple[Level, ...], tuple[Level, ...]]]
    proc: Any = None
    conns: list[ServerConnection] = field(default_factory=list)
    transports: list[Any] = field(default_factory=list)
    cell: int = 0
    position: int = 0

    def next_change(self) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        change = self.changes[self.position]
        self.position = (self.position + 1) % len(self.changes)
        return change

    async def drain(self) -> None:
        await asyncio.sleep(0)
        # Polls: a transport's buffer has no event to wait on.
        while any(t.get_write_buffer_size() > HIGH_WATER for t in self.transports):  # noqa: ASYNC110
            await asyncio.sleep(0.0005)


# --- the four ways of sending -----------------------------------------------------------------


async def _send_fanout(ctx: _Ctx, events: int, batch: int) -> None:
    publish = ctx.fanout.publish
    view = ctx.view
    for i in range(events):
        bids, asks = ctx.next_change()
        view.seq += 1
        view.venue_id += 1
        publish([BookDelta(KEY, 1, view.seq, view.venue_id, bids, asks, 0)])
        if i % batch == batch - 1:
            await ctx.drain()
    ctx.fanout.publish([StatusChange(KEY, SymbolState.LIVE, f"{MARKER}{ctx.cell}")])


async def _send_broadcast(ctx: _Ctx, events: int, batch: int) -> None:
    conns = ctx.conns
    for i in range(events):
        payload = encode_json(ctx.view.next_delta(*ctx.next_change()))
        broadcast(conns, payload, text=True)
        if i % batch == batch - 1:
            await ctx.drain()
    broadcast(conns, encode_json(Status(KEY, SymbolState.LIVE, f"{MARKER}{ctx.cell}")), text=True)


def _write_all(ctx: _Ctx, frame: bytes) -> None:
    for transport in ctx.transports:
        transport.write(frame)


async def _send_prebuilt(ctx: _Ctx, events: int, batch: int) -> None:
    transports = ctx.transports
    for i in range(events):
        frame = build_frame(encode_json(ctx.view.next_delta(*ctx.next_change())), binary=False)
        for transport in transports:
            transport.write(frame)
        if i % batch == batch - 1:
            await ctx.drain()
    _write_all(ctx, _status_frame(ctx))


async def _send_coalesced(ctx: _Ctx, events: int, batch: int) -> None:
    transports = ctx.transports
    groups = events // COALESCE
    group_batch = max(1, batch // COALESCE)
    for g in range(groups):
        blob = b"".join(
            build_frame(encode_json(ctx.view.next_delta(*ctx.next_change())), binary=False)
            for _ in range(COALESCE)
        )
        for transport in transports:
            transport.write(blob)
        if g % group_batch == group_batch - 1:
            await ctx.drain()
    _write_all(ctx, _status_frame(ctx))


def _status_frame(ctx: _Ctx) -> bytes:
    return build_frame(
        encode_json(Status(KEY, SymbolState.LIVE, f"{MARKER}{ctx.cell}")), binary=False
    )


Sender = Callable[[_Ctx, int, int], Awaitable[None]]
VARIANTS: tuple[tuple[str, Sender], ...] = (
    ("Fanout.publish", _send_fanout),
    ("websockets broadcast()", _send_broadcast),
    ("prebuilt frame -> transport.write", _send_prebuilt),
    (f"{COALESCE} frames coalesced -> transport.write", _send_coalesced),
)


# --- the reader process -----------------------------------------------------------------------


async def _line(ctx: _Ctx, timeout_s: float) -> str:
    return await read_line(ctx.proc, "fanout reader", timeout_s)


async def _wait_done(ctx: _Ctx, cell: int, timeout_s: float = 30.0) -> None:
    while True:
        line = await _line(ctx, timeout_s)
        if line == f"done {cell}":
            return


async def _start_readers(ctx: _Ctx, count: int, timeout_s: float) -> None:
    ctx.proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(READER),
        str(ctx.fanout.port),
        str(count),
        str(timeout_s),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if await _line(ctx, 20.0) != "ready":
        raise RuntimeError("fanout reader did not start")
    async with asyncio.timeout(20.0):
        while sum(s.books for s in ctx.fanout.subscriber_stats()) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    # Reaching into the fanout for the connections, so every variant uses the same ones.
    ctx.conns = [sub.conn for sub in ctx.fanout._subs]
    ctx.transports = [conn.transport for conn in ctx.conns]
    # A first marker: every snapshot has been received before anything is timed. The
    # reader counts markers from its start.
    ctx.cell = 1
    ctx.fanout.publish([StatusChange(KEY, SymbolState.LIVE, f"{MARKER}{ctx.cell}")])
    await _wait_done(ctx, ctx.cell)


async def _stop_readers(ctx: _Ctx) -> None:
    proc, ctx.proc = ctx.proc, None
    ctx.conns, ctx.transports = [], []
    if proc is None:
        return
    await stop_process(proc)
    async with asyncio.timeout(10.0):
        while ctx.fanout.stats.subscribers:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# --- the benchmark ----------------------------------------------------------------------------


async def _main(quick: bool) -> list[dict[str, object]]:
    data = load_depth_data(limit=150 if quick else None)
    book = L2Book()
    book.load(data.snapshot.bids, data.snapshot.asks)
    view = _View(book, data.snapshot.last_id)
    changes = [(d.bids[:3], d.asks[:3]) for d in data.applicable]
    frame_bytes = statistics.mean(
        len(
            build_frame(
                encode_json(Delta(KEY, 1, 100_000, data.snapshot.last_id, b, a)), binary=False
            )
        )
        for b, a in changes
    )
    fanout = Fanout(view, ServerConfig(max_buffer_bytes=64 * 1024 * 1024), ping_interval_s=None)
    ctx = _Ctx(fanout, view, changes)
    deliveries_target = 1_600 if quick else 40_000
    repeats = 1 if quick else 5
    results: dict[tuple[str, int], list[tuple[int, int, int]]] = {}

    async with serving(fanout):
        for count in SUBSCRIBERS:
            events = max(COALESCE, deliveries_target // count // COALESCE * COALESCE)
            batch = max(1, BATCH_DELIVERIES // count)
            await _start_readers(ctx, count, timeout_s=120.0)
            try:
                for rep in range(1 + repeats):  # the first round warms up, untimed
                    for name, send in VARIANTS:
                        ctx.cell += 1
                        t0 = time.perf_counter_ns()
                        c0 = time.process_time_ns()
                        await send(ctx, events, batch)
                        await _wait_done(ctx, ctx.cell)
                        wall = time.perf_counter_ns() - t0
                        cpu = time.process_time_ns() - c0
                        if rep:
                            results.setdefault((name, count), []).append(
                                (wall, cpu, events * count)
                            )
            finally:
                await _stop_readers(ctx)
    if fanout.stats.dropped or fanout.stats.conflations or fanout.stats.slow_disconnects:
        raise RuntimeError(f"the fanout dropped or conflated messages: {fanout.stats}")

    rows: list[dict[str, object]] = []
    for count in SUBSCRIBERS:
        reference = 0.0
        for name, _ in VARIANTS:
            runs = results[(name, count)]
            deliveries = runs[0][2]
            median_wall_ns = float(statistics.median(r[0] for r in runs))
            median_cpu_ns = float(statistics.median(r[1] for r in runs))
            if not reference:
                reference = median_cpu_ns
            rows.append(
                {
                    "variant": name,
                    "subscribers": count,
                    "deliveries/round": deliveries,
                    "frame B": round(frame_bytes),
                    "deliveries/s": deliveries * 1e9 / median_wall_ns,
                    "µs/delivery": median_wall_ns / deliveries / 1000.0,
                    "server CPU µs/delivery": median_cpu_ns / deliveries / 1000.0,
                    "server busy %": 100.0 * median_cpu_ns / median_wall_ns,
                    "speed vs Fanout.publish (CPU)": reference / median_cpu_ns,
                    "spread %": 100.0
                    * (max(r[0] for r in runs) - min(r[0] for r in runs))
                    / median_wall_ns,
                }
            )
    return rows


def run(quick: bool) -> list[dict[str, object]]:
    return run_async(_main(quick), timeout_s=60.0 if quick else 150.0)
