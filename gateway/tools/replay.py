"""``mdgateway replay PATH... [--endpoints K] --speed X|max --port P [--loop] [--rest-port R]
[--write-config FILE]``.

Serves recorded captures (every format ``verify`` reads) from loopback WebSocket endpoints
and a REST port (:mod:`feeds.sim.replay`), so ``mdgateway run`` connects to it with only its
endpoint URLs and REST bases changed. Without ``--endpoints``, each recorded connection is
served on an endpoint of its own (a one-connection capture on one; the layout is
:func:`feeds.sim.replay_plan.endpoint_layout`); with ``--endpoints K``, K endpoints (one
connection fanned to all K, several dealt round-robin). Prints a table endpoint -> venue ->
recorded connection and the REST URL at start. ``--write-config FILE`` writes a gateway
configuration (:mod:`gateway.wire.config`) pointing every venue of the capture at its
endpoints and at the REST port, checked by loading it back. On a terminal, stderr shows
the progress (replay time, frames sent, frames per second) once a second. When every
endpoint has sent the whole capture (not with ``--loop``), prints ``replay finished: ...``
and closes every endpoint with a going-away close (1001), or with ``--hold`` keeps them open.

PATHs whose receive times follow one another are one session (consecutive files of the same
connections, :class:`gateway.capture.chain.ChainedReader`: the later files continue the
recorded connections); a PATH that starts before the previous one ends is another capture,
merged in receive order with its own recorded connections. Each record's venue, the one the
table, the written configuration and the replay's books use alike, is the capture's one rule
(:class:`gateway.capture.driver.VenueRouter`, as ``verify`` reads it), one router per
session with each file's venue as the default of its records; a connection of no venue the
gateway supports is shown as the venue its URL or file names, else ``?``. An inline REST
snapshot (a format that recorded no URL) is served at the venue's snapshot path
(``gateway.wire.venues.ADAPTERS[venue].snapshot_paths``); the notice a ``notice`` fault
sends is the venue's (``ADAPTERS[venue].notice_frame``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import logging
import sys
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Final
from typing import TextIO
from urllib.parse import urlsplit

import msgspec

from feeds.sim.faults import FaultPlan
from feeds.sim.faults import FaultSpecError
from feeds.sim.replay_book import Routed
from feeds.sim.replay_plan import ReplayPlan
from feeds.sim.replay_plan import build_plan
from feeds.sim.replay_plan import parse_speed
from gateway.capture import CaptureFormatError
from gateway.capture import CaptureReader
from gateway.capture import CaptureRecord
from gateway.capture import connection_venue
from gateway.capture import detect_venue
from gateway.capture import is_inline_snapshot
from gateway.capture.driver import VenueRouter
from gateway.capture.driver import venue_adapter
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import VenueContractError
from gateway.tools.runtime import int_at_least
from gateway.tools.runtime import port_number
from gateway.tools.runtime import toml_strings
from gateway.wire.config import SYMBOL_PATTERN
from gateway.wire.config import ConfigError
from gateway.wire.config import parse_config
from gateway.wire.venues import ADAPTERS
from gateway.wire.venues import VenueAdapter

if TYPE_CHECKING:
    from feeds.sim.replay import ReplayServer

#: Frames of each recorded connection parsed to learn the symbols it carries.
_SYMBOL_FRAMES: Final = 200


def _snapshot_path(venue: str | None) -> str | None:
    """The path a venue's REST depth snapshots are served at, where it has one."""
    adapter = ADAPTERS.get(venue) if venue is not None else None
    if adapter is None or not adapter.snapshot_paths:
        return None
    return adapter.snapshot_paths[0]


@dataclass
class _File:
    """One PATH's records and its venue (:func:`gateway.capture.detect_venue`: the venue, or
    the exchange, that the capture recorded; None when it cannot be told)."""

    path: Path
    venue: str | None
    records: list[CaptureRecord]

    @classmethod
    def read(cls, path: Path) -> _File:
        reader = CaptureReader(path)
        return cls(path, detect_venue(path, reader.format), list(reader))

    @property
    def first_ns(self) -> int | None:
        return self.records[0].recv_ns if self.records else None

    @property
    def last_ns(self) -> int | None:
        return self.records[-1].recv_ns if self.records else None


@dataclass
class Session:
    """What the replay serves, and what the tool learnt of it: each recorded connection's
    venue (``""`` when it cannot be told), the symbols each venue's frames carry, and how
    the PATHs were put together."""

    plan: ReplayPlan
    venue_of: dict[int, str] = field(default_factory=dict)
    symbols: dict[str, set[str]] = field(default_factory=dict)
    #: One line per PATH after the first: chained to the previous one, or side by side.
    joins: list[str] = field(default_factory=list)


def _sessions(files: Sequence[_File]) -> tuple[list[list[_File]], list[str]]:
    """The PATHs grouped into sessions: a file that starts at or after the previous one's
    end continues its session; one that starts before starts another capture."""
    groups: list[list[_File]] = []
    joins: list[str] = []
    for file in files:
        if groups:
            previous = groups[-1][-1]
            first, last = file.first_ns, previous.last_ns
            if first is None or last is None or first >= last:
                groups[-1].append(file)
                joins.append(f"{file.path.name}: continues {previous.path.name} (one session)")
                continue
            joins.append(
                f"{file.path.name}: starts before {previous.path.name} ends, replayed beside "
                "it as another capture"
            )
        groups.append([file])
    return groups, joins


def _numbered(
    group: int, files: Sequence[_File], ids: dict[tuple[int, int], int], venues: dict[int, str]
) -> Iterator[Routed]:
    """The records of one session, file after file, with the connection ids of the plan
    (the files of one session share their recorded connections) and their venues, told by
    the capture's one rule (:class:`~gateway.capture.driver.VenueRouter`, one per session,
    asked in recorded order, each file's venue the default of its records); each recorded
    connection's venue noted in ``venues``. An inline REST snapshot (a format that recorded
    no URL) is told by its recorded URL, then served at the venue's snapshot path."""
    router = VenueRouter(None)
    for file in files:
        router.default = venue_adapter(file.venue)
        snapshot_path = _snapshot_path(file.venue)
        for record in file.records:
            adapter = router.venue_of(record)
            if record.kind == "rest":
                url = record.url
                if snapshot_path and is_inline_snapshot(url):
                    url = snapshot_path + url[url.index("?") :] if "?" in url else snapshot_path
                    record = msgspec.structs.replace(record, url=url)
                yield Routed(record, adapter)
                continue
            conn_id = ids.setdefault((group, record.conn_id), len(ids))
            if adapter is not None:
                venues[conn_id] = adapter.venue
            elif conn_id not in venues or record.kind == "connect":
                # No venue the gateway supports (a connect's: told by its first frame): the
                # table still names what the URL or the file does, "" when neither does.
                venues[conn_id] = connection_venue(record.url) or file.venue or ""
            yield Routed(msgspec.structs.replace(record, conn_id=conn_id), adapter)


def _learn_symbols(records: Iterable[Routed], symbols: dict[str, set[str]]) -> Iterator[Routed]:
    """``records`` unchanged; the symbols of the first frames of each connection noted, by
    the venue each frame was told."""
    parsed: dict[int, int] = {}
    for routed in records:
        record, adapter = routed
        if record.kind == "ws" and parsed.get(record.conn_id, 0) < _SYMBOL_FRAMES:
            parsed[record.conn_id] = parsed.get(record.conn_id, 0) + 1
            if adapter is not None:
                try:
                    events = adapter.parse(record.payload, record.recv_ns, record.conn_id)
                except VenueContractError:
                    events = []
                found = symbols.setdefault(adapter.venue, set())
                found.update(e.symbol for e in events if isinstance(e, DepthDiff | DepthSnapshot))
        yield routed


def _routed_recv_ns(routed: Routed) -> int:
    return routed.record.recv_ns


def load_session(paths: Sequence[Path], endpoints: int | None) -> Session:
    """The replay of the captures at ``paths`` on ``endpoints`` endpoints (None: one per
    recorded connection). Raises CaptureFormatError and OSError."""
    groups, joins = _sessions([_File.read(path) for path in paths])
    ids: dict[tuple[int, int], int] = {}
    venue_of: dict[int, str] = {}
    symbols: dict[str, set[str]] = {}
    streams = [_numbered(number, files, ids, venue_of) for number, files in enumerate(groups)]
    merged = heapq.merge(*streams, key=_routed_recv_ns)
    plan = build_plan(_learn_symbols(merged, symbols), endpoints)
    return Session(plan, venue_of, {v: s for v, s in symbols.items() if s}, joins)


def _missing_snapshots(session: Session) -> list[str]:
    """A warning when venues that build their books from REST snapshots have none to get."""
    if len(session.plan.rest):
        return []
    venues = sorted(
        {
            venue
            for venue in session.venue_of.values()
            if venue in ADAPTERS
            and ADAPTERS[venue].snapshot_url is not None
            and not ADAPTERS[venue].in_band_snapshots
        }
    )
    if not venues:
        return []
    return [
        f"warning: no REST snapshot in the capture, so {', '.join(venues)} books cannot sync "
        "(a later file of a session has none: give the session's files in order, the first "
        "one first)"
    ]


def load_plan(paths: Sequence[Path], endpoints: int | None) -> ReplayPlan:
    """The replay plan of the captures at ``paths`` on ``endpoints`` endpoints."""
    return load_session(paths, endpoints).plan


def endpoint_table(session: Session, endpoint_urls: Sequence[str]) -> list[tuple[str, str, str]]:
    """Rows endpoint URL -> venue -> recorded connection (``#id url``), one per recorded
    connection and endpoint that serves it."""
    rows = []
    for conn in session.plan.connections_served:
        recorded = f"#{conn.conn_id} {conn.url}".rstrip()
        venue = session.venue_of.get(conn.conn_id, "") or "?"
        for endpoint in conn.endpoints:
            rows.append((endpoint_urls[endpoint], venue, recorded))
    return sorted(rows, key=lambda row: endpoint_urls.index(row[0]))


def gateway_config(
    session: Session, endpoint_urls: Sequence[str], rest_url: str
) -> tuple[str, list[str]]:
    """A gateway configuration (TOML) pointing every venue of the replay at the endpoints
    that serve its recorded connections and, where the venue takes REST snapshots, at the
    replay's REST port; and what was left out, and why. Checked by loading it back
    (:func:`gateway.wire.config.parse_config`); raises ConfigError when no venue could be
    configured."""
    served: dict[str, list[tuple[str, str]]] = {}
    for conn in session.plan.connections_served:
        venue = session.venue_of.get(conn.conn_id, "") or "?"
        for endpoint in conn.endpoints:
            served.setdefault(venue, []).append((endpoint_urls[endpoint], conn.url))
    lines = [
        "# Written by `mdgateway replay --write-config`: the replay's endpoints and REST port.",
    ]
    left_out: list[str] = []
    for venue, rows in served.items():
        adapter = ADAPTERS.get(venue)
        if adapter is None:
            unsupported = ", ".join(dict.fromkeys(url for url, _ in rows))
            left_out.append(f"{unsupported}: venue {venue} is not supported by run")
            continue
        symbols = sorted(s for s in session.symbols.get(venue, ()) if SYMBOL_PATTERN.match(s))
        if not symbols:
            left_out.append(f"venue {venue}: no depth symbol in its first frames")
            continue
        urls = _venue_endpoints(adapter, symbols, rows)
        lines += ["", "[[venues]]", f"venue = {toml_strings([venue])[1:-1]}"]
        lines.append(f"symbols = {toml_strings(symbols)}")
        lines.append(f"endpoints = {toml_strings(urls)}")
        if adapter.snapshot_url is not None and not adapter.in_band_snapshots:
            lines.append(f"rest = {toml_strings([rest_url])}")
    if not any(line == "[[venues]]" for line in lines):
        raise ConfigError("no venue of the capture can be configured: " + "; ".join(left_out))
    text = "\n".join(lines) + "\n"
    parse_config(text, "the written configuration")
    return text, left_out


def _venue_endpoints(
    adapter: VenueAdapter, symbols: Sequence[str], rows: Iterable[tuple[str, str]]
) -> list[str]:
    """The endpoints to configure for a venue, from (replay endpoint, recorded URL) rows:
    each replay endpoint with the path of the venue endpoint the recorded connection was
    opened on (its URL's path less what the venue's stream URL adds: ``/public`` of
    ``/public/stream?streams=...``), the trade endpoints of venues with trade-only
    connections left out (the gateway derives those), each once."""
    added = urlsplit(adapter.stream_url("ws://h", symbols)).path
    endpoints = []
    for endpoint_url, recorded_url in rows:
        path = urlsplit(recorded_url).path
        if added and path.endswith(added):
            path = path[: -len(added)]
        endpoints.append(endpoint_url + path)
    unique = list(dict.fromkeys(endpoints))
    if adapter.trade_endpoint is not None:
        trades = {adapter.trade_endpoint(url) for url in unique}
        unique = [url for url in unique if url not in trades]
    return unique


def progress_line(replayed_ns: int | None, total_ns: int, frames: int, frames_per_s: float) -> str:
    """The progress shown on a terminal (``replayed_ns`` None: nothing sent yet)."""
    if replayed_ns is None:
        return f"waiting for a connection ({total_ns / 1e9:,.1f} s to replay)"
    return (
        f"replayed {replayed_ns / 1e9:,.1f} s of {total_ns / 1e9:,.1f} s, "
        f"{frames:,} frames, {frames_per_s:,.0f} frames/s"
    )


async def _show_progress(server: ReplayServer, plan: ReplayPlan, out: TextIO) -> None:
    """Rewrites one line on ``out`` every second, the last one once the replay finishes."""
    loop = asyncio.get_running_loop()
    last_frames, last_s = 0, loop.time()
    finished = False
    while not finished:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.finished.wait(), 1.0)
        finished = server.finished.is_set()
        now_s, frames = loop.time(), sum(server.frames_sent)
        replay_ns = server.replay_ns
        replayed = None if replay_ns is None else replay_ns - plan.first_ns
        rate = (frames - last_frames) / max(now_s - last_s, 1e-9)
        out.write("\r" + progress_line(replayed, plan.duration_ns, frames, rate) + "\033[K")
        out.flush()
        last_frames, last_s = frames, now_s
    out.write("\n")
    out.flush()


def _speed(text: str) -> float | None:
    try:
        return parse_speed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="capture file or DIR; several: the files of one session in order, or "
        "captures replayed side by side",
    )
    parser.add_argument(
        "--endpoints",
        type=int_at_least(1),
        default=None,
        metavar="K",
        help="loopback endpoints (default: one per recorded connection; a one-connection "
        "capture: 1)",
    )
    parser.add_argument(
        "--speed", type=_speed, default=1.0, metavar="X|max", help="time factor, or max"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=0,
        metavar="P",
        help="first endpoint port, 0-65535 (0: any free)",
    )
    parser.add_argument(
        "--rest-port", type=port_number, metavar="R", help="REST port (default: P+K, or any free)"
    )
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
    parser.add_argument(
        "--write-config",
        type=Path,
        metavar="FILE",
        help="write a gateway config for `mdgateway run --config FILE` pointing every venue "
        "at its replay endpoints and REST port",
    )


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


async def _serve(args: argparse.Namespace, session: Session) -> int:
    from feeds.sim.replay import ReplayServer

    plan = session.plan
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
        if not _announce(args, session, server):
            return 2
        async with asyncio.TaskGroup() as tasks:
            if sys.stderr.isatty():
                tasks.create_task(_show_progress(server, plan, sys.stderr))
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


def _announce(args: argparse.Namespace, session: Session, server: ReplayServer) -> bool:
    """The endpoint table and REST URL on stdout, the config file written; False (after
    saying why) when it cannot be."""
    rows = endpoint_table(session, server.endpoint_urls)
    widths = [max(len(row[i]) for row in rows) for i in range(2)] if rows else [0, 0]
    for url, venue, recorded in rows:
        line = f"endpoint {url:<{widths[0]}}  {venue:<{widths[1]}}  recorded {recorded}"
        print(line, flush=True)
    print(f"rest {server.rest_url}", flush=True)
    if args.write_config is None:
        return True
    try:
        text, left_out = gateway_config(session, server.endpoint_urls, server.rest_url)
        args.write_config.write_text(text)
    except ConfigError as exc:
        print(f"mdgateway replay: cannot write --write-config: {exc}", file=sys.stderr)
        return False
    except OSError as exc:
        print(f"mdgateway replay: cannot write {args.write_config}: {exc}", file=sys.stderr)
        return False
    for reason in left_out:
        print(f"mdgateway replay: left out of {args.write_config}: {reason}", file=sys.stderr)
    print(f"config {args.write_config} (mdgateway run --config {args.write_config})", flush=True)
    return True


def quiet_rebuild_logs() -> None:
    """Errors only from the replay's own rebuild of the capture's books (the books it
    answers snapshots from): the gateway's pipeline logs as a gateway would (books stale at
    the capture's recorded disconnects), news of no gateway."""
    logging.getLogger("gateway.core").setLevel(logging.ERROR)


def main(args: argparse.Namespace) -> int:
    from gateway.tools.runtime import configure_logging
    from gateway.tools.runtime import run_loop

    configure_logging("WARNING")
    try:
        session = load_session(args.paths, args.endpoints)
        plan = session.plan
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
    for line in [*session.joins, *_missing_snapshots(session)]:
        print(line, file=sys.stderr)
    quiet_rebuild_logs()  # serving from here on (a usage error above changes nothing)
    return run_loop(_serve(args, session), listen_hint="; pass other ports (--port, --rest-port)")
