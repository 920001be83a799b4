"""End to end on loopback for Binance USD-M: simulated venue (3 endpoints, REST snapshots,
non-contiguous ``pu``-chained ids) → gateway → subscriber, one endpoint closed mid-run: the
subscriber sees no gap and ends with the venue's book. Modelled on test_end_to_end_venues."""

from __future__ import annotations

import asyncio

from feeds import binance_usdm
from feeds.sim.server import SimBinanceUsdm
from gateway.client import GatewayClient
from gateway.config import Config, ServerConfig, VenueConfig, validate
from gateway.service import Service

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


async def _scenario() -> None:
    keys = [f"binance-usdm:{s}" for s in SYMBOLS]
    async with SimBinanceUsdm(
        SYMBOLS, n_endpoints=3, seed=7, interval_s=0.02, jitter_ms=10.0
    ) as sim:
        # The gateway builds <endpoint>/stream?streams=... (and /market for trades).
        assert binance_usdm.stream_url(sim.public_urls[0], SYMBOLS).startswith(
            sim.endpoint_urls[0] + "/public/stream?streams="
        )
        config = validate(
            Config(
                venues=[
                    VenueConfig(
                        venue="binance-usdm",
                        symbols=SYMBOLS,
                        endpoints=sim.public_urls,
                        rest=[sim.rest_url],
                        stall_timeout_s=3.0,
                        backoff_initial_s=0.05,
                        backoff_max_s=0.5,
                    )
                ],
                server=ServerConfig(port=0),
            )
        )
        service = Service(config)
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            service_task = tasks.create_task(service.run(ready))
            await ready.wait()
            client = GatewayClient(f"ws://127.0.0.1:{service.port}/", keys, backoff_max_s=0.5)

            async def follow() -> None:
                async with client:
                    async for _ in client:
                        pass

            follower = tasks.create_task(follow())
            async with asyncio.timeout(15):
                while not all(client.book(k) is not None for k in keys):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            await sim.close_endpoint(0)
            await asyncio.sleep(0.5)
            await sim.open_endpoint(0)
            await asyncio.sleep(0.5)
            sim.pause()

            def caught_up() -> bool:
                for key, symbol in zip(keys, SYMBOLS, strict=True):
                    book = client.book(key)
                    if book is None or book.normalized() != sim.true_book(symbol).normalized():
                        return False
                return True

            async with asyncio.timeout(15):
                while not caught_up():  # noqa: ASYNC110 - polls state that other tasks own
                    await asyncio.sleep(0.05)
            assert client.stats.gaps == 0
            assert client.stats.snapshots == len(keys), "failovers and resyncs are deltas"
            for key in keys:
                stats = service.symbol_stats(key)
                assert stats.gaps == 0 and stats.resyncs == 0
                assert stats.snapshots == 1
            assert sim.rest_stats.snapshots_served >= len(keys)
            assert sim.stats(0).connections_accepted >= 2  # reconnected after the close
            follower.cancel()
            service_task.cancel()


def test_binance_usdm_end_to_end_with_an_endpoint_closed_mid_run() -> None:
    asyncio.run(_scenario())
