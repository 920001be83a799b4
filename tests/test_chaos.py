"""Chaos on loopback: every upstream endpoint down for 2 s.

Subscribers are told `stale` within a bounded time, then get a fresh snapshot and `live`
once an endpoint is back; their book is the venue's afterwards; buffers stay bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from feeds.sim.simulators import SimBinanceSpot
from gateway.core.model import SymbolState
from gateway.io.client import BookUpdate, GatewayClient
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES, demo_config

KEY = "binance:BTCUSDT"
STALE_WITHIN_S = 1.0
LIVE_AGAIN_WITHIN_S = 5.0


async def _all_endpoints_down() -> None:
    async with SimBinanceSpot(["BTCUSDT"], n_endpoints=3, seed=5, interval_s=0.02) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=("BTCUSDT",))
        service = Service(demo_config([(binance, sim)], port=0))
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            service_task = tasks.create_task(service.run(ready))
            await ready.wait()
            client = GatewayClient(f"ws://127.0.0.1:{service.port}/", [KEY], backoff_max_s=0.2)
            seen: list[tuple[float, BookUpdate]] = []

            async def follow() -> None:
                async with client:
                    async for update in client:
                        seen.append((time.monotonic(), update))

            follower = tasks.create_task(follow())

            def states_since(t0: float) -> list[tuple[float, str]]:
                return [(t, u.state.value) for t, u in seen if t >= t0 and u.kind == "status"]

            async with asyncio.timeout(10):
                while client.book(KEY) is None:  # noqa: ASYNC110 - polls another task's state
                    await asyncio.sleep(0.02)
            snapshots_before = client.stats.snapshots
            down_at = time.monotonic()
            for index in range(3):
                await sim.close_endpoint(index)
            await asyncio.sleep(2.0)
            stale = [t for t, s in states_since(down_at) if s == SymbolState.STALE.value]
            assert stale and stale[0] - down_at <= STALE_WITHIN_S, states_since(down_at)
            up_at = time.monotonic()
            for index in range(3):
                await sim.open_endpoint(index)
            async with asyncio.timeout(LIVE_AGAIN_WITHIN_S):
                while not any(  # noqa: ASYNC110 - polls another task's state
                    s == SymbolState.LIVE.value for _, s in states_since(up_at)
                ):
                    await asyncio.sleep(0.02)
            # The venue moved on while every copy was down: a fresh snapshot, no seq gap.
            assert client.stats.snapshots == snapshots_before + 1
            assert client.stats.gaps == 0
            sim.pause()
            async with asyncio.timeout(10):
                while True:
                    book = client.book(KEY)
                    if (
                        book is not None
                        and book.normalized() == sim.true_book("BTCUSDT").normalized()
                    ):
                        break
                    await asyncio.sleep(0.05)
            arbiter = service.books[KEY]
            assert arbiter.pending <= 4096 and arbiter.stats.resyncs == 1
            assert all(not s.behind for s in service.fanout.subscriber_stats())
            follower.cancel()
            service_task.cancel()


def test_all_endpoints_down_for_two_seconds_is_stale_then_live_with_a_fresh_snapshot() -> None:
    asyncio.run(asyncio.wait_for(_all_endpoints_down(), 40))
