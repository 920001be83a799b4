"""``mdgateway replay PATH... --endpoints K --speed X|max --port P [--loop] [--rest-port R]``.

Serves recorded captures (every format ``verify`` reads) from K loopback WebSocket endpoints
and a REST port (:mod:`feeds.sim.replay`), so ``mdgateway run`` connects to it with only its
endpoint URLs changed. Prints the endpoint URLs and the REST URL at start, and ``replay
finished: ...`` once every endpoint has sent the whole capture (not with ``--loop``), then
closes every endpoint with a going-away close (1001), or with ``--hold`` keeps them open.

Several PATHs are merged in receive order, each keeping its own recorded connections. An
inline REST snapshot (a format that recorded no URL) is served at the venue's snapshot path
(``gateway.wire.venues.ADAPTERS[venue].snapshot_paths``); the notice a ``notice`` fault sends
is the venue's (``ADAPTERS[venue].notice_frame``).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from feeds.sim.faults import FaultPlan, FaultSpecError
from feeds.sim.replay_plan import ReplayPlan, build_plan, parse_speed
from gateway.capture import (
    INLINE_SNAPSHOT_SCHEME,
    CaptureFormatError,
    CaptureReader,
    CaptureRecord,
    detect_venue,
)
from gateway.tools.runtime import int_at_least
from gateway.wire.venues import ADAPTERS

if TYPE_CHECKING:
    from feeds.sim.replay import ReplayServer


def _snapshot_path(path: Path, reader: CaptureReader) -> str | None:
    venue = detect_venue(path, reader.format)
    adapter = ADAPTERS.get(venue) if venue is not None else None
    if adapter is None or not adapter.snapshot_paths:
        return None
    return adapter.snapshot_paths[0]


def _records(path: Path, number: int, ids: dict[tuple[int, int], int]) -> Iterator[CaptureRecord]:
    reader = CaptureReader(path)
    snapshot_path = _snapshot_path(path, reader)
    for record in reader:
        conn_id = record.conn_id
        if record.kind != "rest":
            conn_id = ids.setdefault((number, conn_id), len(ids))
        url = record.url
        if record.kind == "rest" and snapshot_path and url.startswith(INLINE_SNAPSHOT_SCHEME + ":"):
            url = snapshot_path + url[url.index("?") :] if "?" in url else snapshot_path
        yield msgspec.structs.replace(record, conn_id=conn_id, url=url)


def load_plan(paths: Sequence[Path], endpoints: int) -> ReplayPlan:
    """The replay plan of the captures at ``paths`` on ``endpoints`` endpoints."""
    ids: dict[tuple[int, int], int] = {}
    streams = [_records(path, number, ids) for number, path in enumerate(paths)]
    merged = heapq.merge(*streams, key=attrgetter("recv_ns"))
    return build_plan(merged, endpoints, default_venue=_default_venue(paths))


def _default_venue(paths: Sequence[Path]) -> str | None:
    """The venue of frames whose capture records no URL (hftbacktest): the first file's."""
    for path in paths:
        try:
            venue = detect_venue(path)
        except (CaptureFormatError, OSError):
            continue
        if venue is not None:
            return venue
    return None


def _speed(text: str) -> float | None:
    try:
        return parse_speed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="capture file or DIR")
    parser.add_argument(
        "--endpoints", type=int_at_least(1), default=1, metavar="K", help="loopback endpoints"
    )
    parser.add_argument(
        "--speed", type=_speed, default=1.0, metavar="X|max", help="time factor, or max"
    )
    parser.add_argument(
        "--port", type=int, default=0, metavar="P", help="first endpoint port (0: any free)"
    )
    parser.add_argument("--rest-port", type=int, metavar="R", help="REST port (default P+K)")
    parser.add_argument("--loop", action="store_true", help="start over at the capture's end")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="keep the endpoints open at the capture's end (default: close them, going away)",
    )
    parser.add_argument(
        "--faults",
        metavar="SPEC",
        help="per-endpoint and REST faults in the fault language (docs/faults.md), applied "
        "as the simulators apply them",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of --faults")


def _notice_frame(path: Path) -> Callable[[], bytes] | None:
    """The maintenance/shutdown notice of the capture's venue, where the venue has one."""
    try:
        venue = detect_venue(path)
    except (CaptureFormatError, OSError):
        return None
    adapter = ADAPTERS.get(venue) if venue is not None else None
    notice_frame = adapter.notice_frame if adapter is not None else None
    if notice_frame is None:
        return None
    return lambda: notice_frame(time.time_ns())


def _fault_plan(args: argparse.Namespace, plan: ReplayPlan) -> FaultPlan | None:
    """The fault plan of ``--faults``; raises FaultSpecError."""
    if not args.faults:
        return None
    return FaultPlan(args.faults, args.seed, len(plan.endpoints))


async def _serve(args: argparse.Namespace, plan: ReplayPlan) -> int:
    from feeds.sim.replay import ReplayServer

    faults = _fault_plan(args, plan)
    notice = _notice_frame(args.paths[0])
    async with ReplayServer(
        plan,
        speed=args.speed,
        port=args.port,
        rest_port=args.rest_port,
        loop=args.loop,
        faults=faults,
        notice=notice,
    ) as server:
        for url in server.endpoint_urls:
            print(f"endpoint {url}", flush=True)
        print(f"rest {server.rest_url}", flush=True)
        if not args.loop:
            await server.finished.wait()
            await end_of_capture(server, hold=args.hold)
        await asyncio.Event().wait()
    return 0


async def end_of_capture(server: ReplayServer, *, hold: bool) -> None:
    """Say that the capture ended (one line on stdout); unless ``hold``, close every
    endpoint with a going-away close (1001), so the gateway reports its books stale."""
    if hold:
        print("replay finished: capture ended; endpoints held open (--hold)", flush=True)
        return
    print("replay finished: capture ended; endpoints closed (1001 going away)", flush=True)
    await server.close_endpoints()


def main(args: argparse.Namespace) -> int:
    from gateway.tools.runtime import configure_logging, run_loop

    configure_logging("WARNING")
    try:
        plan = load_plan(args.paths, args.endpoints)
    except (CaptureFormatError, OSError) as exc:
        print(f"mdgateway replay: {exc}", file=sys.stderr)
        return 2
    try:
        _fault_plan(args, plan)
    except FaultSpecError as exc:
        print(f"mdgateway replay: bad --faults: {exc}", file=sys.stderr)
        return 2
    print(
        f"loaded {sum(map(len, plan.endpoints))} frames of {plan.connections} connection(s), "
        f"{len(plan.rest)} REST responses",
        file=sys.stderr,
    )
    return run_loop(_serve(args, plan))
