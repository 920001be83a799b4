"""End to end on loopback: simulated venue (3 endpoints) → gateway → subscribers."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from pathlib import Path

import pytest

from feeds.sim.simulators import SimBinanceSpot
from gateway.core.model import SymbolState
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config

from .harness import started
from .subscriber import MDGATEWAY
from .subscriber import ROOT
from .subscriber import Subscriber
from .subscriber import run_mdgateway

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KEYS = [f"binance:{s}" for s in SYMBOLS]
#: Venue steps between the failures (0.2 s of the venue's time).
STEPS = 10


@pytest.mark.async_timeout_s(45)
async def test_two_subscribers_keep_the_true_book_while_endpoints_fail_one_at_a_time() -> None:
    async with SimBinanceSpot(
        SYMBOLS, n_endpoints=3, seed=11, interval_s=0.02, jitter_ms=15.0, snapshot_delay_s=0.02
    ) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=tuple(SYMBOLS))
        service = Service(demo_config([(binance, sim)], port=0))
        async with asyncio.TaskGroup() as tasks:
            service_task = await started(tasks, service.run)
            url = f"ws://127.0.0.1:{service.port}/"
            subscribers = [Subscriber(url, KEYS) for _ in range(2)]
            follow = [tasks.create_task(s.follow()) for s in subscribers]
            for subscriber in subscribers:

                def both_books(s: Subscriber = subscriber) -> bool:
                    return len(s.venue_ids) == 2

                await subscriber.until(both_books, 10)
            for index in range(3):  # each endpoint fails once, never two at a time
                await sim.wait_steps(STEPS)
                await sim.close_endpoint(index)
                await sim.wait_steps(STEPS)
                await sim.open_endpoint(index)
                await sim.wait_connections(index, 1)
            await sim.wait_steps(STEPS)
            sim.pause()
            last = {f"binance:{s}": sim.last_id(s) for s in SYMBOLS}
            for subscriber in subscribers:

                def at_last(s: Subscriber = subscriber) -> bool:
                    return s.venue_ids == last

                await subscriber.until(at_last, 10)
            for subscriber in subscribers:
                assert subscriber.client.stats.gaps == 0
                assert subscriber.client.stats.snapshots == 2, "one snapshot per symbol"
                for key, symbol in zip(KEYS, SYMBOLS, strict=True):
                    book = subscriber.client.book(key)
                    assert book is not None
                    assert book.normalized() == sim.true_book(symbol).normalized()
            for key in KEYS:
                stats = service.symbol_stats(key)
                assert stats.gaps == 0 and stats.resyncs == 0
                assert stats.duplicates > 0, "redundant copies were seen and dropped"
                assert service.books[key].state is SymbolState.LIVE
            connections = [c for v in service.venues for c in v.connections.values()]
            async with asyncio.timeout(10):
                await service.connection_changes.wait_until(
                    lambda: all(c.stats.connected for c in connections)
                )
            assert all(c.stats.reconnects >= 1 for c in connections)
            for task in [*follow, service_task]:
                task.cancel()


def _config_text(sim: SimBinanceSpot) -> str:
    endpoints = ", ".join(f'"{u}"' for u in sim.endpoint_urls)
    return f"""
[server]
port = 0

[[venues]]
venue = "binance"
symbols = ["BTCUSDT"]
endpoints = [{endpoints}]
rest = ["{sim.rest_url}"]
"""


# The sum of the test's own bounds: the gateway ready, a book served, the dump, the exit.
@pytest.mark.async_timeout_s(60)
async def test_run_command_serves_books_dumps_stacks_on_sigusr1_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    async with SimBinanceSpot(["BTCUSDT"], n_endpoints=2, seed=5, interval_s=0.02) as sim:
        config = tmp_path / "gateway.toml"
        config.write_text(_config_text(sim))
        process = await asyncio.create_subprocess_exec(
            *MDGATEWAY,
            "run",
            "--config",
            str(config),
            "--port",
            "0",
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert process.stderr is not None
            port = None
            async with asyncio.timeout(20):
                while port is None:
                    line = (await process.stderr.readline()).decode()
                    assert line, "gateway exited before it was ready"
                    if "gateway ready: ws://" in line:
                        port = int(line.split("ws://")[1].split(",")[0].rsplit(":", 1)[1])
            subscriber = Subscriber(f"ws://127.0.0.1:{port}/", ["binance:BTCUSDT"])
            async with asyncio.timeout(20):
                async with subscriber.client:
                    async for update in subscriber.client:
                        if update.kind == "delta":  # a BookEvent: its book is consistent
                            break
            # SIGUSR1: every thread's stack on stderr, and the gateway goes on (to SIGTERM).
            process.send_signal(signal.SIGUSR1)
            async with asyncio.timeout(10):
                while not (line := (await process.stderr.readline()).decode()).startswith(
                    "Current thread"
                ):
                    assert line, "gateway exited on SIGUSR1"
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def test_run_command_names_the_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nprot = 1\n[[venues]]\nvenue = "binance"\n')
    result = run_mdgateway("run", "--config", str(config), timeout_s=30)
    assert result.returncode == 2
    assert "unknown" in result.stderr and "prot" in result.stderr and "$.server" in result.stderr


def test_headless_demo_exits_zero_by_itself() -> None:
    result = run_mdgateway(
        # Faults at 1.2 s (binance endpoint 0) and 2.9 s (okx endpoint 0), each 0.5 s long.
        *("demo", "--duration", "4", "--port", "0", "--no-view"),
        *("--fault-every", "1.2", "--outage", "0.5"),
        timeout_s=40,
    )
    stdout, stderr = result.stdout, result.stderr
    assert result.returncode == 0, stdout + stderr
    assert "result: OK" in stdout
    assert "fault: closing binance endpoint 0" in stderr
    assert "fault: closing okx endpoint 0" in stderr
    assert "kraken:BTC/USD" in stdout and "coinbase:BTC-USD" in stdout
    # The report's columns line up whatever the symbols' lengths (COIN-M's are the longest).
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("symbol "))
    rows = [line for line in lines if line.endswith("matches venue")]
    assert any(row.startswith("binance-coinm:BTCUSD_261225 ") for row in rows)
    assert {row.index("matches venue") for row in rows} == {header.index("book")}
    # ok/failed under "checksums", which ends where the failed count's 3 places do.
    assert {row.rindex("/") + 4 for row in rows} == {header.index("checksums") + 9}


# The sum of the test's own bounds: the gateway serving, the comparison, the exit.
@pytest.mark.async_timeout_s(60)
async def test_demo_compares_the_books_at_the_first_ctrl_c() -> None:
    """The second Ctrl-C's cancel is run_loop's (tests/gateway/tools/test_runtime.py)."""

    async def demo() -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *(*MDGATEWAY, "demo", "--venues", "binance,kraken", "--port", "0", "--no-view"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=ROOT,
        )
        assert process.stdout is not None
        async with asyncio.timeout(20):
            while b"gateway serving ws://" not in await process.stdout.readline():
                assert process.returncode is None, "the demo exited before it served"
        return process

    async def output(process: asyncio.subprocess.Process) -> str:
        assert process.stdout is not None
        return (await process.stdout.read()).decode()

    first = await demo()
    try:
        first.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            stdout = await output(first)
            assert await first.wait() == 0, stdout
        assert "stopping: the venues pause and every book is compared" in stdout
        assert "result: OK" in stdout and "binance:BTCUSDT" in stdout
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
