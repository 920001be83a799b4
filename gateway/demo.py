"""``mdgateway demo``: the gateway on its built-in simulated venue, with endpoint faults.

Starts a simulated Binance spot venue (several WebSocket endpoints and its REST depth
endpoint on loopback), runs the gateway connected to every endpoint, and every few seconds
closes one endpoint (never all) and brings it back. A live view shows books and endpoints;
``--no-view`` logs a line per second instead. At the end the venue is paused, the gateway
catches up, and each book is compared with the venue's true book: the exit code is 0 only
when every book matches and no gap was ever declared.

``mdgateway sim`` runs the same simulated venue alone on fixed ports, for
``mdgateway run --config deploy/sim-binance.toml``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING

from gateway.cli import configure_logging, run_loop
from gateway.config import Config, ServerConfig, VenueConfig, validate
from gateway.service import Service

if TYPE_CHECKING:
    from feeds.sim.server import SimBinanceSpot

log = logging.getLogger("mdgateway.demo")

DEFAULT_SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"
CATCH_UP_TIMEOUT_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    parser.add_argument("--port", type=int, default=8765, help="subscriber port (0: any free)")
    parser.add_argument("--no-view", action="store_true", help="log progress instead of a view")
    parser.add_argument("--symbols", default=DEFAULT_SYMBOLS, help="comma-separated symbols")
    parser.add_argument("--endpoints", type=int, default=3, help="simulated endpoints (>= 2)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated venue")
    parser.add_argument(
        "--fault-every", type=float, default=4.0, help="seconds between endpoint faults"
    )
    parser.add_argument("--outage", type=float, default=1.5, help="seconds an endpoint is down")
    parser.add_argument(
        "--log-level", default=None, help="log level (default: INFO with the view, else WARNING)"
    )


def demo_config(sim: SimBinanceSpot, port: int) -> Config:
    return validate(
        Config(
            venues=[
                VenueConfig(
                    venue="binance",
                    symbols=sim.symbols,
                    endpoints=sim.endpoint_urls,
                    rest=[sim.rest_url],
                    stall_timeout_s=3.0,
                    backoff_initial_s=0.05,
                    backoff_max_s=1.0,
                    reorder_window_ms=100.0,
                )
            ],
            server=ServerConfig(port=port),
        )
    )


async def _faults(sim: SimBinanceSpot, every_s: float, outage_s: float) -> None:
    """Closes one endpoint at a time, round robin, and reopens it after ``outage_s``."""
    n = len(sim.endpoint_urls)
    index = 0
    while True:
        await asyncio.sleep(every_s)
        log.warning("fault: closing endpoint %d for %.1f s", index, outage_s)
        await sim.close_endpoint(index, reason="demo fault")
        await asyncio.sleep(outage_s)
        await sim.open_endpoint(index)
        index = (index + 1) % n


def _progress_line(service: Service) -> str:
    parts = []
    for key, book in service.books.items():
        bid, ask = book.book.best_bid(), book.book.best_ask()
        top = f"{bid[0] if bid else '-'}/{ask[0] if ask else '-'}"
        parts.append(f"{key} {book.state.value} seq={book.epoch}:{book.seq} {top}")
    ups = sum(c.stats.connected for v in service.venues for c in v.connections.values())
    total = sum(len(v.connections) for v in service.venues)
    return f"endpoints up {ups}/{total} | " + " | ".join(parts)


async def _show(service: Service, view: bool, started_s: float) -> None:
    if not view:
        while True:
            await asyncio.sleep(1.0)
            print(_progress_line(service), flush=True)
    from rich.live import Live

    from gateway.view import RecentLog, render

    # Log lines go to the view's events panel while it is on screen.
    events = RecentLog()
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [events]
    try:
        with Live(render(service, events=events), refresh_per_second=4, screen=True) as live:
            while True:
                await asyncio.sleep(0.25)
                elapsed_s = time.monotonic() - started_s
                footer = f"running {elapsed_s:.0f} s  (Ctrl-C stops)"
                live.update(render(service, footer, events))
    finally:
        root.handlers[:] = saved


async def _catch_up(sim: SimBinanceSpot, service: Service) -> bool:
    """Pauses the venue and waits until every book reached the venue's last id."""
    sim.pause()
    deadline_s = time.monotonic() + CATCH_UP_TIMEOUT_S
    while time.monotonic() < deadline_s:
        if all(
            book.has_book and book.applied_id == sim.last_id(key.partition(":")[2])
            for key, book in service.books.items()
        ):
            return True
        await asyncio.sleep(0.05)
    return False


def _report(sim: SimBinanceSpot, service: Service, caught_up: bool) -> bool:
    ok = caught_up
    print("symbol            venue id      updates  dups   gaps  resyncs  book")
    for key, book in service.books.items():
        symbol = key.partition(":")[2]
        matches = book.has_book and book.book.normalized() == sim.true_book(symbol).normalized()
        stats = book.stats
        ok = ok and matches and stats.gaps == 0
        print(
            f"{key:<17} {book.applied_id:<12} {stats.updates:>8} {stats.duplicates:>5} "
            f"{stats.gaps:>6} {stats.resyncs:>8}  {'matches venue' if matches else 'DIFFERS'}"
        )
    for venue in service.venues:
        for conn in venue.connections.values():
            print(
                f"endpoint {conn.conn_id}: {conn.stats.frames} frames, "
                f"{conn.stats.reconnects} reconnects, {conn.stats.failed_attempts} failed attempts"
            )
    print("result:", "OK, every book equals the venue's" if ok else "FAILED")
    return ok


async def run_demo(args: argparse.Namespace) -> int:
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    if args.endpoints < 2:
        print("mdgateway demo: --endpoints must be at least 2", file=sys.stderr)
        return 2
    from feeds.sim.server import SimBinanceSpot

    started_s = time.monotonic()
    async with SimBinanceSpot(
        symbols, n_endpoints=args.endpoints, seed=args.seed, jitter_ms=20.0, snapshot_delay_s=0.05
    ) as sim:
        service = Service(demo_config(sim, args.port))
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            service_task = tasks.create_task(service.run(ready))
            await ready.wait()
            print(f"gateway serving ws://127.0.0.1:{service.port}", flush=True)
            side = [
                tasks.create_task(_faults(sim, args.fault_every, args.outage)),
                tasks.create_task(_show(service, not args.no_view, started_s)),
            ]
            if args.duration is None:
                await asyncio.Event().wait()  # until Ctrl-C cancels the demo
            await asyncio.sleep(args.duration)
            for task in side:
                task.cancel()
            caught_up = await _catch_up(sim, service)
            ok = _report(sim, service, caught_up)
            service_task.cancel()
    return 0 if ok else 1


def main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level or ("WARNING" if args.no_view else "INFO"))
    return run_loop(run_demo(args))


# --- mdgateway sim -----------------------------------------------------------------------------


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbols", default=DEFAULT_SYMBOLS, help="comma-separated symbols")
    parser.add_argument(
        "--ports", default="9441,9442,9443", help="comma-separated WebSocket endpoint ports"
    )
    parser.add_argument("--rest-port", type=int, default=9450, help="REST depth port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-level", default="INFO")


async def _run_sim(args: argparse.Namespace) -> int:
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    ports = [int(p) for p in args.ports.split(",")]
    from feeds.sim.server import SimBinanceSpot

    sim = SimBinanceSpot(
        symbols, n_endpoints=len(ports), seed=args.seed, ports=ports, rest_port=args.rest_port
    )
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(sim.run(ready))
        await ready.wait()
        print("simulated binance endpoints:", " ".join(sim.endpoint_urls), flush=True)
        print("simulated binance REST:", sim.rest_url, flush=True)
    return 0


def sim_main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    return run_loop(_run_sim(args))
