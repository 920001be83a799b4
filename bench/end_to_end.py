"""end_to_end: simulated venue -> gateway -> subscriber on loopback, latency per delta.

One process, one uvloop event loop: ``SimBinanceSpot`` (BTCUSDT, 3 WebSocket endpoints
and the REST endpoint, a step every 5 ms, no jitter) -> ``gateway.io.service.Service`` (3
upstream connections, arbiter, fan-out server; the demo's configuration of the venue) -> one
``gateway.io.client.GatewayClient``.

Timestamps, all ``time.time_ns()`` in this process, matched by the venue update id
(``u``, the ``id`` of the subscriber's delta):

- render: in the simulator, right after a step's frames are rendered and before they are
  queued to the three endpoints (a subclass hooks ``SimBinanceSpot._publish``);
- gateway recv: the ``recv_ns`` the upstream connection stamped on the first copy, as
  carried by the ``BookDelta``;
- fanout written: right after ``Fanout.publish`` returned for that ``BookDelta`` (a hook
  wraps the venue runtime's publish callback);
- client: when ``GatewayClient`` yields the delta (decoded and applied to its book).

The venue's event time ``E`` (milliseconds) is not used. Because everything shares one
core's event loop, each segment also contains the time the loop spent on the other
parties' work in between (e.g. the simulator writing the other two copies); that is the
cost of the whole chain on one core, not of one hop between processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from bench.common import KEY
from bench.common import SYMBOL
from bench.common import percentile
from bench.common import run_async
from feeds.sim.connection import Publication
from feeds.sim.simulators import SimBinanceSpot
from gateway.core.model import BookDelta
from gateway.core.model import GatewayEvent
from gateway.io.client import GatewayClient
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config
from gateway.wire.config import Config

TITLE = "end_to_end: SimBinanceSpot x3 -> Service -> GatewayClient (one process)"

ENDPOINTS = 3
INTERVAL_S = 0.005
SEGMENTS = (
    ("sim render -> gateway recv (first copy)", "render", "recv"),
    ("gateway recv -> fanout written", "recv", "published"),
    ("fanout written -> client yields delta", "published", "client"),
    ("total: sim render -> client yields delta", "render", "client"),
)


class TimedSim(SimBinanceSpot):
    """The simulator, recording the wall time at which each venue update id was rendered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.render_ns: dict[int, int] = {}

    def _publish(self, pubs: list[Publication]) -> None:
        now = time.time_ns()
        for symbol in self.symbols:
            self.render_ns.setdefault(self.last_id(symbol), now)
        super()._publish(pubs)


def _config(sim: SimBinanceSpot) -> Config:
    """The demo's configuration of the simulated Binance spot, for :data:`SYMBOL` only."""
    binance = dataclasses.replace(DEMO_VENUES[0], symbols=(SYMBOL,))
    return demo_config([(binance, sim)], port=0)


def _counters(service: Service, client: GatewayClient) -> dict[str, Any]:
    venue = service.venues[0]
    book = service.books[KEY]
    per_conn = []
    for conn in venue.connections.values():
        arb = book.stats.connections.get(conn.conn_id)
        per_conn.append(
            (
                conn.stats.frames,
                arb.received if arb else 0,
                arb.first_wins if arb else 0,
                arb.duplicates if arb else 0,
                conn.stats.reconnects,
            )
        )
    return {
        "conns": per_conn,
        "updates": book.stats.updates,
        "gaps": book.stats.gaps,
        "resyncs": book.stats.resyncs,
        "client_deltas": client.stats.deltas,
        "client_gaps": client.stats.gaps,
    }


async def _main(quick: bool) -> list[dict[str, object]]:
    duration_s = 1.0 if quick else 5.0
    warmup_s = 0.3 if quick else 0.5
    recv_ns: dict[int, int] = {}
    published_ns: dict[int, int] = {}
    samples: list[tuple[int, int]] = []
    synced = asyncio.Event()

    async with TimedSim(
        [SYMBOL], n_endpoints=ENDPOINTS, seed=5, interval_s=INTERVAL_S, jitter_ms=0.0
    ) as sim:
        service = Service(_config(sim))
        for venue in service.venues:
            inner = venue._publish

            def hooked(events: Sequence[GatewayEvent], inner: Any = inner) -> None:
                inner(events)
                now = time.time_ns()
                for event in events:
                    if isinstance(event, BookDelta):
                        published_ns[event.venue_id] = now
                        recv_ns[event.venue_id] = event.recv_ns

            venue._publish = hooked

        async def follow(client: GatewayClient) -> None:
            async with client:
                async for update in client:
                    if update.kind == "delta":
                        samples.append((update.venue_id, time.time_ns()))
                    elif update.kind == "snapshot":
                        synced.set()

        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            service_task = tasks.create_task(service.run(ready))
            await ready.wait()
            client = GatewayClient(f"ws://127.0.0.1:{service.port}/", [KEY], reconnect=False)
            client_task = tasks.create_task(follow(client))
            async with asyncio.timeout(20.0):
                await synced.wait()
            await asyncio.sleep(warmup_s)
            before = _counters(service, client)
            first = len(samples)
            t0 = time.perf_counter()
            await asyncio.sleep(duration_s)
            elapsed_s = time.perf_counter() - t0
            after = _counters(service, client)
            window = samples[first:]
            client_task.cancel()
            service_task.cancel()
        endpoint_urls = sim.endpoint_urls
        render_ns = sim.render_ns

    points: dict[str, list[float]] = {name: [] for name, _, _ in SEGMENTS}
    unmatched = 0
    for venue_id, client_ns in window:
        stamps = {
            "render": render_ns.get(venue_id),
            "recv": recv_ns.get(venue_id),
            "published": published_ns.get(venue_id),
            "client": client_ns,
        }
        if any(v is None for v in stamps.values()):
            unmatched += 1
            continue
        for name, start, end in SEGMENTS:
            points[name].append((stamps[end] - stamps[start]) / 1000.0)  # type: ignore[operator]

    rows: list[dict[str, object]] = []
    for name, _, _ in SEGMENTS:
        values = sorted(points[name])
        rows.append(
            {
                "table": "latency",
                "segment": name,
                "samples": len(values),
                "p50 µs": percentile(values, 50),
                "p90 µs": percentile(values, 90),
                "p99 µs": percentile(values, 99),
                "max µs": values[-1] if values else float("nan"),
                "mean µs": sum(values) / len(values) if values else float("nan"),
            }
        )
    for index, url in enumerate(endpoint_urls):
        b, a = before["conns"][index], after["conns"][index]
        rows.append(
            {
                "table": "endpoints",
                "endpoint": f"{index} {url}",
                "frames received": a[0] - b[0],
                "depth diffs received": a[1] - b[1],
                "first wins": a[2] - b[2],
                "duplicates dropped": a[3] - b[3],
                "reconnects": a[4] - b[4],
            }
        )
    rows.append(
        {
            "table": "summary",
            "measured s": elapsed_s,
            "sim step ms": INTERVAL_S * 1000.0,
            "deltas published": after["updates"] - before["updates"],
            "deltas at client": after["client_deltas"] - before["client_deltas"],
            "unmatched": unmatched,
            "client seq gaps": after["client_gaps"] - before["client_gaps"],
            "gateway gaps": after["gaps"] - before["gaps"],
            "resyncs": after["resyncs"] - before["resyncs"],
        }
    )
    return rows


def run(quick: bool) -> list[dict[str, object]]:
    return run_async(_main(quick), timeout_s=60.0)
