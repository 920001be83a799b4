"""``mdgateway demo``: the gateway on its built-in simulated venues, with endpoint faults.

Starts the simulated venues (each with several WebSocket endpoints, and its REST depth
endpoint where the venue has one, on loopback), runs the gateway connected to every
endpoint, and every few seconds closes one endpoint (never all of a venue's) and brings it
back. A live view shows books and endpoints; ``--no-view`` logs a line per second instead.
At the end (``--duration``, or the first Ctrl-C) the venues are paused, the gateway catches
up, and each book is compared with its venue's true book: the exit code is 0 only when every
book matches and no gap was ever declared. A second Ctrl-C stops at once.

``mdgateway sim`` runs the same simulated venues alone on fixed ports, for
``mdgateway run --config deploy/sim-all.toml``; ``--port`` moves them, ``--write-config``
writes the configuration of the ports they took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import Final

from feeds.sim.faults import FaultPlan
from feeds.sim.faults import FaultSpecError
from gateway.core.book import L2Book
from gateway.io.service import Service
from gateway.tools.runtime import UsageError
from gateway.tools.runtime import add_capture_argument
from gateway.tools.runtime import add_seconds_argument
from gateway.tools.runtime import configure_logging
from gateway.tools.runtime import int_at_least
from gateway.tools.runtime import int_between
from gateway.tools.runtime import log_level
from gateway.tools.runtime import make_capture
from gateway.tools.runtime import port_number
from gateway.tools.runtime import run_loop
from gateway.tools.runtime import toml_strings
from gateway.wire.config import MAX_PORT
from gateway.wire.config import Config
from gateway.wire.config import ServerConfig
from gateway.wire.config import VenueConfig
from gateway.wire.config import parse_config
from gateway.wire.config import validate

log = logging.getLogger("mdgateway.demo")

CATCH_UP_TIMEOUT_S = 10.0
#: ``mdgateway sim`` ports: venue i of DEMO_VENUES listens on PORT_BASE + 10 * i + 1..n,
#: its REST endpoint (where it has one) on PORT_BASE + 10 * i + 9; ``--port P`` puts
#: PORT_BASE at P - 1.
PORT_BASE = 9440
#: Endpoints per venue under ``mdgateway sim``: ports + 1..8, below the REST port.
SIM_MAX_ENDPOINTS = 8
#: From a venue's first port to its REST port.
_SIM_REST_OFFSET = 8


@dataclass(frozen=True)
class DemoVenue:
    """A simulated venue of the demo: how to start it and where the gateway connects."""

    venue: str
    symbols: tuple[str, ...]
    #: The simulator's class in :mod:`feeds.sim.simulators`.
    sim_class: str
    #: The simulator's attribute listing the WebSocket URLs the gateway connects to.
    urls_attribute: str
    #: Whether the gateway fetches REST snapshots from the simulator's ``rest_url``.
    uses_rest: bool = False
    #: Levels per side the gateway holds of this venue (the subscribed depth), None: all.
    depth: int | None = None
    #: Keyword arguments of the simulator besides those every simulator takes.
    options: Mapping[str, Any] = field(default_factory=dict)

    def start(
        self,
        symbols: list[str],
        n: int,
        seed: int,
        ports: list[int] | None,
        rest_port: int | None,
        faults: FaultPlan | None = None,
    ) -> Any:
        """The simulator (an async context manager) on ``n`` endpoints, under ``faults``."""
        from feeds.sim import simulators

        return getattr(simulators, self.sim_class)(
            symbols,
            n_endpoints=n,
            seed=seed,
            ports=ports,
            rest_port=rest_port,
            jitter_ms=20.0,
            faults=faults,
            **self.options,
        )

    def urls(self, sim: Any) -> list[str]:
        return list(getattr(sim, self.urls_attribute))

    def rest(self, sim: Any) -> list[str]:
        return [sim.rest_url] if self.uses_rest else []


DEMO_VENUES: tuple[DemoVenue, ...] = (
    DemoVenue(
        "binance",
        ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        "SimBinanceSpot",
        "endpoint_urls",
        uses_rest=True,
        options={"snapshot_delay_s": 0.05},
    ),
    DemoVenue("okx", ("BTC-USDT", "ETH-USDT"), "SimOkx", "public_urls"),
    DemoVenue("kraken", ("BTC/USD", "ETH/USD"), "SimKraken", "v2_urls", depth=10),
    DemoVenue(
        "bybit-spot",
        ("BTCUSDT",),
        "SimBybit",
        "public_urls",
        depth=200,
        options={"category": "spot"},
    ),
    DemoVenue("coinbase", ("BTC-USD", "ETH-USD"), "SimCoinbase", "endpoint_urls"),
    DemoVenue(
        "binance-usdm", ("BTCUSDT", "ETHUSDT"), "SimBinanceUsdm", "public_urls", uses_rest=True
    ),
    DemoVenue(
        "binance-coinm",
        ("BTCUSD_PERP", "BTCUSD_261225"),
        "SimBinanceCoinm",
        "public_urls",
        uses_rest=True,
    ),
)
DEFAULT_VENUES = ",".join(v.venue for v in DEMO_VENUES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_seconds_argument(parser, "--duration", "seconds to run, > 0 (default: until Ctrl-C)")
    parser.add_argument(
        "--port", type=port_number, default=8765, help="subscriber port, 0-65535 (0: any free)"
    )
    parser.add_argument("--no-view", action="store_true", help="log progress instead of a view")
    _add_venues_argument(parser)
    parser.add_argument(
        "--endpoints", type=int_at_least(2), default=3, help="endpoints per venue (>= 2)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated venues")
    add_seconds_argument(
        parser, "--fault-every", "seconds between endpoint faults (> 0)", default=4.0
    )
    add_seconds_argument(
        parser, "--outage", "seconds an endpoint is down (>= 0)", default=1.5, positive=False
    )
    parser.add_argument(
        "--log-level",
        type=log_level,
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (default: INFO with the view, else WARNING)",
    )
    add_capture_argument(parser)


def _add_venues_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--venues",
        type=selected_venues,
        default=DEFAULT_VENUES,
        help="comma-separated simulated venues (default: %(default)s)",
    )


def selected_venues(names: str) -> list[DemoVenue]:
    """An argparse ``type``: the simulated venues of a comma-separated list of names."""
    by_name = {v.venue: v for v in DEMO_VENUES}
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in by_name]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown venue(s) {', '.join(unknown) or '(none given)'}; "
            f"the simulated venues are {DEFAULT_VENUES}"
        )
    return [by_name[n] for n in chosen]


def demo_config(sims: Sequence[tuple[DemoVenue, Any]], port: int) -> Config:
    return validate(
        Config(
            venues=[
                VenueConfig(
                    venue=venue.venue,
                    symbols=list(venue.symbols),
                    endpoints=venue.urls(sim),
                    rest=venue.rest(sim),
                    stall_timeout_s=3.0,
                    backoff_initial_s=0.05,
                    backoff_max_s=1.0,
                    reorder_window_ms=100.0,
                )
                for venue, sim in sims
            ],
            server=ServerConfig(port=port),
        )
    )


async def _faults(sims: Sequence[tuple[DemoVenue, Any]], every_s: float, outage_s: float) -> None:
    """Closes one endpoint at a time, round robin over every venue's endpoints, and reopens
    it after ``outage_s``: never two at once, so every venue always has a healthy copy."""
    most = max(len(venue.urls(sim)) for venue, sim in sims)
    # Interleaved by venue, so that every venue meets a fault early on.
    targets = [
        (venue, sim, i) for i in range(most) for venue, sim in sims if i < len(venue.urls(sim))
    ]
    for step in range(10**9):
        await asyncio.sleep(every_s)
        venue, sim, index = targets[step % len(targets)]
        log.warning("fault: closing %s endpoint %d for %.1f s", venue.venue, index, outage_s)
        await sim.close_endpoint(index, reason="demo fault")
        await asyncio.sleep(outage_s)
        await sim.open_endpoint(index)


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
    from rich.console import Console
    from rich.live import Live

    from gateway.tools.view import RecentLog
    from gateway.tools.view import render

    # Log lines go to the view's events panel while it is on screen.
    events = RecentLog()
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [events]
    try:
        console = Console()
        first = render(service, *console.size, events=events)
        with Live(first, console=console, refresh_per_second=4, screen=True) as live:
            while True:
                await asyncio.sleep(0.25)
                elapsed_s = time.monotonic() - started_s
                footer = f"running {elapsed_s:.0f} s  (Ctrl-C: compare the books and stop)"
                live.update(render(service, *console.size, footer, events))
    finally:
        root.handlers[:] = saved


def _top(book: L2Book, depth: int | None) -> object:
    bids, asks = book.normalized()
    return (bids, asks) if depth is None else (bids[:depth], asks[:depth])


def _matches(service: Service, venue: DemoVenue, sim: Any, symbol: str) -> bool:
    book = service.books[f"{venue.venue}:{symbol}"]
    return book.has_book and _top(book.book, venue.depth) == _top(
        sim.true_book(symbol), venue.depth
    )


async def _catch_up(sims: Sequence[tuple[DemoVenue, Any]], service: Service) -> bool:
    """Waits until every book was built (a stop just after the start: a paused venue sends
    no update to build one on), pauses every venue and waits until every book equals its
    venue's; all within CATCH_UP_TIMEOUT_S."""
    deadline_s = time.monotonic() + CATCH_UP_TIMEOUT_S
    keys = [f"{v.venue}:{s}" for v, _ in sims for s in v.symbols]
    paused = False
    while time.monotonic() < deadline_s:
        if not paused and all(service.books[key].has_book for key in keys):
            for _, sim in sims:
                sim.pause()
            paused = True
        if paused and all(_matches(service, v, sim, s) for v, sim in sims for s in v.symbols):
            return True
        await asyncio.sleep(0.05)
    return False


def _report(sims: Sequence[tuple[DemoVenue, Any]], service: Service, caught_up: bool) -> bool:
    ok = caught_up
    width = max(len(f"{venue.venue}:{s}") for venue, _ in sims for s in venue.symbols)
    print(
        f"{'symbol':<{width}} {'updates':>8} {'dups':>6} {'gaps':>6} {'resyncs':>8} "
        f"{'checksums':>10}  book"
    )
    for venue, sim in sims:
        for symbol in venue.symbols:
            key = f"{venue.venue}:{symbol}"
            stats = service.symbol_stats(key)
            matches = _matches(service, venue, sim, symbol)
            ok = ok and matches and stats.gaps == 0 and stats.checksum_failed == 0
            print(
                f"{key:<{width}} {stats.updates:>8} {stats.duplicates:>6} {stats.gaps:>6} "
                f"{stats.resyncs:>8} {stats.checksum_ok:>6}/{stats.checksum_failed:<3}  "
                f"{'matches venue' if matches else 'DIFFERS'}"
            )
    for runtime in service.venues:
        for conn in runtime.connections.values():
            print(
                f"{runtime.cfg.venue} endpoint {conn.conn_id}: {conn.stats.frames} frames, "
                f"{conn.stats.reconnects} reconnects, {conn.stats.failed_attempts} failed attempts"
            )
    print("result:", "OK, every book equals its venue's" if ok else "FAILED")
    return ok


async def run_demo(args: argparse.Namespace, stop: asyncio.Event | None = None) -> int:
    """The demo: runs until ``--duration`` passes or ``stop`` is set (the first Ctrl-C),
    then pauses the venues and compares every book with its venue's; 0 when all match."""
    stop = asyncio.Event() if stop is None else stop
    started_s = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        sims = []
        for i, venue in enumerate(args.venues):
            sim = venue.start(list(venue.symbols), args.endpoints, args.seed + i, None, None)
            sims.append((venue, await stack.enter_async_context(sim)))
        service = Service(demo_config(sims, args.port), capture=make_capture(args.capture))
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            service_task = tasks.create_task(service.run(ready))
            await ready.wait()
            print(f"gateway serving ws://127.0.0.1:{service.port}", flush=True)
            side = [
                tasks.create_task(_faults(sims, args.fault_every, args.outage)),
                tasks.create_task(_show(service, not args.no_view, started_s)),
            ]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.duration):  # None: until stopped
                    await stop.wait()
            for task in side:
                task.cancel()
            if stop.is_set():
                print(
                    "stopping: the venues pause and every book is compared with its venue's "
                    "(Ctrl-C again stops at once)",
                    flush=True,
                )
            caught_up = await _catch_up(sims, service)
            ok = _report(sims, service, caught_up)
            service_task.cancel()
    return 0 if ok else 1


def main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level or ("WARNING" if args.no_view else "INFO"))
    stop = asyncio.Event()
    return run_loop(
        run_demo(args, stop), listen_hint="; pass another --port (0: any free)", stop=stop
    )


# --- mdgateway sim -----------------------------------------------------------------------------


def sim_ports(
    index: int, n_endpoints: int, first_port: int = PORT_BASE + 1
) -> tuple[list[int], int]:
    """The ports of the ``index``-th venue of DEMO_VENUES under ``mdgateway sim --port
    first_port``: its endpoints and its REST port."""
    base = first_port + 10 * index
    return [base + i for i in range(n_endpoints)], base + _SIM_REST_OFFSET


#: The highest ``sim --port``: the last venue's REST port is a port.
SIM_MAX_FIRST_PORT: Final = MAX_PORT - 10 * (len(DEMO_VENUES) - 1) - _SIM_REST_OFFSET


def sim_config_toml(sims: Sequence[tuple[DemoVenue, Any]]) -> str:
    """The gateway configuration (TOML) of running simulated venues: each venue with its
    endpoints and REST URL, and the short stall timeout and backoff of
    ``deploy/sim-all.toml``. Checked by loading it back."""
    lines = ["# Written by `mdgateway sim --write-config`: the simulated venues' ports."]
    for venue, sim in sims:
        lines += ["", "[[venues]]", f"venue = {toml_strings([venue.venue])[1:-1]}"]
        lines.append(f"symbols = {toml_strings(venue.symbols)}")
        lines.append(f"endpoints = {toml_strings(venue.urls(sim))}")
        if venue.uses_rest:
            lines.append(f"rest = {toml_strings(venue.rest(sim))}")
        lines += ["stall_timeout_s = 3", "backoff_initial_s = 0.05", "backoff_max_s = 1"]
    text = "\n".join(lines) + "\n"
    parse_config(text, "the written configuration")
    return text


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    _add_venues_argument(parser)
    parser.add_argument(
        "--port",
        type=int_between(0, SIM_MAX_FIRST_PORT),
        default=PORT_BASE + 1,
        metavar="P",
        help=f"first port, 0-{SIM_MAX_FIRST_PORT}: the i-th simulated venue ({DEFAULT_VENUES}, "
        "whichever --venues) "
        "on P + 10 i upwards, its REST on P + 10 i + 8 (0: each on any free port)",
    )
    parser.add_argument(
        "--write-config",
        type=Path,
        metavar="FILE",
        help="write a gateway config for `mdgateway run --config FILE` pointing at the "
        "venues' ports (for another --port)",
    )
    parser.add_argument(
        "--endpoints",
        type=int_between(1, SIM_MAX_ENDPOINTS),
        default=3,
        help=f"endpoints per venue, 1-{SIM_MAX_ENDPOINTS}",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the venues and of --faults")
    parser.add_argument(
        "--faults",
        metavar="SPEC",
        help="faults of every venue in the fault language (docs/faults.md), e.g. "
        "'ep0: close@10; ep*: drop=0.001'; times count from the start",
    )
    parser.add_argument(
        "--log-level", type=log_level, default="INFO", help="DEBUG, INFO, WARNING or ERROR"
    )


def sim_fault_plan(args: argparse.Namespace, venue_index: int) -> FaultPlan | None:
    """The fault plan of ``--faults`` for the ``venue_index``-th venue of DEMO_VENUES
    (seeded with ``--seed`` + index, as the venue itself); raises UsageError for a bad
    spec."""
    if not args.faults:
        return None
    try:
        return FaultPlan(args.faults, args.seed + venue_index, args.endpoints)
    except FaultSpecError as exc:
        raise UsageError(f"bad --faults: {exc}") from None


async def start_sims(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack
) -> list[tuple[DemoVenue, Any]]:
    """Start the venues of ``sim`` ARGS on ``stack``, each announced on stdout."""
    sims: list[tuple[DemoVenue, Any]] = []
    for venue in args.venues:
        index = DEMO_VENUES.index(venue)
        ports, rest_port = sim_ports(index, args.endpoints, args.port)
        sim = venue.start(
            list(venue.symbols),
            args.endpoints,
            args.seed + index,
            ports if args.port else None,
            rest_port if args.port else None,
            sim_fault_plan(args, index),
        )
        await stack.enter_async_context(sim)
        sims.append((venue, sim))
        rest_url = getattr(sim, "rest_url", None)
        print(
            f"simulated {venue.venue}: {' '.join(venue.urls(sim))}"
            + (f" REST {rest_url}" if rest_url else ""),
            flush=True,
        )
    return sims


async def _run_sim(args: argparse.Namespace) -> int:
    async with contextlib.AsyncExitStack() as stack:
        sims = await start_sims(args, stack)
        if args.write_config is not None:
            try:
                args.write_config.write_text(sim_config_toml(sims))
            except OSError as exc:
                raise UsageError(f"cannot write {args.write_config}: {exc}") from None
            config = args.write_config
            print(f"config {config} (mdgateway run --config {config})", flush=True)
        await asyncio.Event().wait()  # until Ctrl-C
    return 0


def sim_main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    sim_fault_plan(args, 0)  # a bad spec is refused before any venue starts
    first = args.port
    last = first + 10 * (len(DEMO_VENUES) - 1) + _SIM_REST_OFFSET
    hint = f"; sim listens on ports {first}-{last}: pass another --port (0: any free ports)"
    return run_loop(_run_sim(args), listen_hint=hint)
