"""``mdgateway verify``: rebuild books offline from a capture and report per symbol.

The capture is read by :mod:`gateway.capture`; its records (frames, connects and
disconnects, REST depth snapshots) go into the service's own
:class:`~gateway.core.pipeline.VenuePipeline`, one per venue, with the recorded receive
times as its clock: parsing, dispatch and arbitration are the code the gateway runs. The
report says, per symbol, what the arbiter counted and what the final book holds.

Several files are one session (:class:`~gateway.capture.chain.ChainedReader`): consecutive
captures of the same connections, read in the order given. At each boundary between two
files the id chain must run on: a symbol whose first event after the boundary is a gap, or
a later file that starts before the earlier one ends, is a break at that boundary
(:class:`BoundaryReport`), and the report is not ok.

Exit codes of :func:`main`: 0 when every symbol was synced and had 0 gaps, 1 when a symbol
had a gap or never synced (or the capture holds no book), 2 for usage and format errors,
with the reason on stderr.

Adding a venue: its adapter goes into :data:`gateway.wire.venues.ADAPTERS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Final
from typing import TextIO

import msgspec

from gateway.capture import FORMATS
from gateway.capture import KNOWN_VENUES
from gateway.capture import CaptureFormat
from gateway.capture import CaptureFormatError
from gateway.capture import CaptureRecord
from gateway.capture import ReadStats
from gateway.capture import detect_format
from gateway.capture import detect_venue
from gateway.capture.chain import Boundary
from gateway.capture.chain import ChainedReader
from gateway.capture.driver import RecordDriver
from gateway.capture.driver import VenueRouter
from gateway.core.arbiter import DEFAULT_REORDER_WINDOW_NS
from gateway.core.arbiter import ArbiterLimits
from gateway.core.arbiter import SymbolArbiter
from gateway.core.model import Level
from gateway.core.pipeline import VenuePipeline
from gateway.core.stats import SymbolStats
from gateway.tools.runtime import configure_logging
from gateway.tools.runtime import int_at_least
from gateway.tools.runtime import log_level
from gateway.wire.venues import ADAPTERS
from gateway.wire.venues import VenueAdapter

DEFAULT_DEPTH: Final = 20
#: Records between two calls of the progress callback.
_PROGRESS_EVERY: Final = 8192


class VerifyError(Exception):
    """A usage error: the venue is unknown, not supported yet, or cannot be told."""


class SymbolReport(msgspec.Struct):
    """One symbol's result. The first twelve fields are the documented JSON shape; ``bids``
    and ``asks`` are the top levels, best first, as the venue's decimal strings. A count named
    as a :class:`~gateway.core.stats.SymbolStats` field is that counter at the end."""

    updates: int
    duplicates: int
    gaps: int
    resyncs: int
    crossed: int
    checksum_ok: int
    checksum_failed: int
    last_id: int
    bid_levels: int
    ask_levels: int
    bids: list[Level]
    asks: list[Level]
    #: A snapshot built the book at least once.
    synced: bool
    #: The final SymbolState: syncing, live, resyncing or stale.
    state: str
    #: Depth updates received, every copy counted.
    diffs: int
    stale: int
    snapshots: int
    snapshots_unused: int
    #: Updates still waiting for missing ids when the capture ended.
    pending: int
    bad_updates: int


class BoundaryReport(msgspec.Struct):
    """One boundary between two files of a session: ``after`` ends, ``before`` starts."""

    after: str
    before: str
    #: ``before`` starts before ``after`` ends: wrong order, or not one session.
    out_of_order: bool
    #: Symbols whose first event after the boundary was a gap: the id chain breaks there.
    gaps: list[str]

    @property
    def ok(self) -> bool:
        return not self.out_of_order and not self.gaps


class VerifyReport(msgspec.Struct):
    #: The first file; ``files`` lists them all (several: one session, in order).
    file: str
    format: str
    venue: str
    sources: list[str]
    records: int
    #: Frames the venue parser rejected (VenueContractError).
    bad_frames: int
    #: Jumps of a connection-wide message counter (Coinbase ``sequence_num``).
    connection_gaps: int
    #: Lines without the capture format's syntax.
    malformed_lines: int
    #: A few of them, and where (``"<file>:<line>: <reason>: <start of line>"``).
    malformed_examples: list[str]
    #: The compressed capture ended before its end marker.
    truncated: bool
    symbols: dict[str, SymbolReport]
    files: list[str] = []
    #: Between consecutive files, in order (none for one file).
    boundaries: list[BoundaryReport] = []
    #: What the user should know to read the report (why nothing synced).
    notes: list[str] = []

    @property
    def ok(self) -> bool:
        """Every symbol synced with 0 gaps and no failed checksum, no connection lost
        messages, no break at a file boundary, and there was at least one symbol."""
        return (
            bool(self.symbols)
            and self.connection_gaps == 0
            and all(b.ok for b in self.boundaries)
            and all(
                s.synced and s.gaps == 0 and s.checksum_failed == 0 for s in self.symbols.values()
            )
        )


def resolve_venue(path: Path, fmt: CaptureFormat, venue: str | None) -> VenueAdapter:
    """The venue to rebuild with: ``venue`` when given, else the one the capture shows.

    Raises VerifyError when it is unknown, not supported yet, or cannot be told.
    """
    name = venue if venue is not None else detect_venue(path, fmt)
    if name is None and fmt is CaptureFormat.MDGATEWAY:
        # Several venues: each recorded connection names its own.
        return next(iter(ADAPTERS.values()))
    if name is None:
        raise VerifyError(
            f"cannot tell the venue of {path}; pass --venue ({', '.join(sorted(ADAPTERS))})"
        )
    spec = ADAPTERS.get(name)
    if spec is not None:
        return spec
    family = [a for a in ADAPTERS.values() if a.exchange == name]
    if family:
        # A capture mixing a venue's categories (Bybit spot and linear): each recorded
        # connection is read with the venue its URL names.
        return family[0]
    if name in KNOWN_VENUES:
        raise VerifyError(f"venue {name} is not supported yet (supported: {', '.join(ADAPTERS)})")
    raise VerifyError(f"unknown venue {name!r} (supported: {', '.join(ADAPTERS)})")


class _Rebuild:
    """The books of one capture: one :class:`VenuePipeline` per venue, driven record by
    record (:mod:`gateway.capture.driver`) with the recorded receive times as the clock."""

    def __init__(self, spec: VenueAdapter, reorder_window_ns: int, *, by_url: bool) -> None:
        #: Without --venue (``by_url``), each record is read with the venue it shows.
        self.router = VenueRouter(spec, forced=not by_url)
        self.driver = RecordDriver(limits=ArbiterLimits(reorder_window_ns=reorder_window_ns))
        # The default venue's pipeline from the start: its needs are what the report notes
        # when nothing else is read.
        self.driver.pipeline(spec)

    @property
    def pipelines(self) -> dict[str, VenuePipeline]:
        return self.driver.pipelines

    @property
    def rest_snapshots(self) -> int:
        return self.driver.rest_snapshots

    @property
    def books(self) -> dict[str, SymbolArbiter]:
        return {key: book for p in self.pipelines.values() for key, book in p.books.items()}

    @property
    def bad_frames(self) -> int:
        return sum(p.stats.bad_frames for p in self.pipelines.values())

    @property
    def connection_gaps(self) -> int:
        return sum(p.stats.connection_gaps for p in self.pipelines.values())

    def feed(self, record: CaptureRecord) -> None:
        """One record, in recorded order."""
        self.driver.feed(record, self.router.venue_of(record))


class _BoundaryWatch:
    """Whether the id chain runs on across one boundary: per symbol that had a book there,
    the first thing after it must be an update applied, not a gap."""

    def __init__(self, boundary: Boundary, books: dict[str, SymbolArbiter]) -> None:
        self.boundary = boundary
        self._open = {
            key: (book, book.stats.gaps, book.applied_id)
            for key, book in books.items()
            if book.stats.snapshots > 0
        }
        self.gaps: list[str] = []

    def check(self) -> bool:
        """After each record: close the symbols that moved on, note those that gapped.
        False once every symbol is closed (the watch has nothing left to see)."""
        for key, (book, gaps, applied_id) in list(self._open.items()):
            if book.stats.gaps > gaps:
                self.gaps.append(key)
            elif book.applied_id == applied_id:
                continue
            del self._open[key]
        return bool(self._open)

    def report(self) -> BoundaryReport:
        b = self.boundary
        return BoundaryReport(b.after, b.before, b.out_of_order, sorted(self.gaps))


def _no_snapshot_note(rebuild: _Rebuild, books: dict[str, SymbolArbiter]) -> list[str]:
    """Why no book synced, when it is that the capture holds no REST snapshot."""
    needs_rest = [v for v in rebuild.pipelines if not ADAPTERS[v].in_band_snapshots]
    if rebuild.rest_snapshots or not needs_rest or any(b.stats.snapshots for b in books.values()):
        return []
    return [
        "the capture holds no depth snapshot, so no book could be built: a later file of a "
        "session has none; give the session's files in order, its first file first"
    ]


#: The report's counts that are the symbol's stats of the same name, copied as they are.
_STATS_COUNTS: Final = tuple(
    f.name for f in dataclasses.fields(SymbolStats) if f.name in SymbolReport.__struct_fields__
)


def _symbol_report(book: SymbolArbiter, depth: int) -> SymbolReport:
    s = book.stats
    return SymbolReport(
        **{name: getattr(s, name) for name in _STATS_COUNTS},
        last_id=book.applied_id,
        bid_levels=book.book.bid_count,
        ask_levels=book.book.ask_count,
        bids=book.book.bids(depth),
        asks=book.book.asks(depth),
        synced=s.snapshots > 0,
        state=book.state.value,
        diffs=sum(c.received for c in s.connections.values()),
        pending=book.pending,
    )


def verify_capture(
    path: Path | Sequence[Path],
    *,
    venue: str | None = None,
    depth: int = DEFAULT_DEPTH,
    fmt: CaptureFormat | None = None,
    reorder_window_ns: int = DEFAULT_REORDER_WINDOW_NS,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Rebuild every book in the capture at ``path`` and report on each; several paths
    are one session, read in order, with each boundary between them checked.

    ``depth`` levels per side go into the report (>= 0). ``progress`` is called with the
    number of records read, now and then. Raises CaptureFormatError when the file's format
    cannot be told, VerifyError for venue problems (``venue`` naming another venue than the
    capture's, so that none of its frames parses) and ValueError for a negative ``depth``;
    bad lines and bad frames are counted in the report, not raised. Holes still open when
    the capture ends are reported as ``pending``, not as gaps: the capture does not say
    whether the ids would have come.
    """
    if depth < 0:
        raise ValueError("depth must be >= 0")
    paths = [path] if isinstance(path, Path) else list(path)
    fmt = fmt or detect_format(paths[0])
    spec = resolve_venue(paths[0], fmt, venue)
    reader = ChainedReader(paths, fmt)
    rebuild = _Rebuild(spec, reorder_window_ns, by_url=venue is None)
    watches: list[_BoundaryWatch] = []
    # Only the boundaries with a symbol still to move on past them are checked per record.
    watching: list[_BoundaryWatch] = []
    for count, record in enumerate(reader, 1):
        while len(reader.boundaries) > len(watches):
            watch = _BoundaryWatch(reader.boundaries[len(watches)], rebuild.books)
            watches.append(watch)
            watching.append(watch)
        rebuild.feed(record)
        if watching:
            watching = [watch for watch in watching if watch.check()]
        if progress is not None and count % _PROGRESS_EVERY == 0:
            progress(count)
    # Files with no record: their boundaries saw no book.
    watches.extend(_BoundaryWatch(b, {}) for b in reader.boundaries[len(watches) :])
    stats: ReadStats = reader.stats
    books = rebuild.books
    notes = _no_snapshot_note(rebuild, books)
    shown = None if venue is None else detect_venue(paths[0], fmt)
    if shown is not None and shown not in (spec.venue, spec.exchange):
        if not books and rebuild.bad_frames:
            raise VerifyError(
                f"--venue {venue}: no frame of the capture parses as {venue} "
                f"({rebuild.bad_frames:,} refused); the capture shows {shown} "
                "(verify it without --venue)"
            )
        notes.append(f"read as --venue {venue}; the capture shows {shown}")
    return VerifyReport(
        file=str(paths[0]),
        format=fmt.value,
        venue=",".join(sorted({key.partition(":")[0] for key in books})) or spec.venue,
        sources=stats.sources,
        records=stats.records,
        bad_frames=rebuild.bad_frames,
        connection_gaps=rebuild.connection_gaps,
        malformed_lines=stats.malformed,
        malformed_examples=stats.examples,
        truncated=stats.truncated,
        symbols={key: _symbol_report(books[key], depth) for key in sorted(books)},
        files=[str(p) for p in paths],
        boundaries=[watch.report() for watch in watches],
        notes=notes,
    )


def encode_json(report: VerifyReport) -> bytes:
    """The report as one JSON object (no trailing newline), with ``ok`` first: true exactly
    when ``verify`` exits 0."""
    return msgspec.json.encode({"ok": report.ok, **msgspec.structs.asdict(report)})


# --- command line -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``verify``; :func:`main` takes the namespace they produce."""
    parser.epilog = "Capture formats, told from the content: " + "; ".join(
        f"{spec.format.value}: {spec.expected}" for spec in FORMATS
    )
    parser.add_argument(
        "path",
        type=Path,
        nargs="+",
        help="capture file or directory, of any format below "
        f"({', '.join(_FORMAT_NAMES)}); several: consecutive files of one session, in order",
    )
    parser.add_argument(
        "--venue",
        default=None,
        help="venue of the capture (default: told from the capture); "
        f"supported: {', '.join(ADAPTERS)}",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--depth",
        type=int_at_least(0),
        default=DEFAULT_DEPTH,
        metavar="N",
        help="levels per side in the --json report",
    )
    parser.add_argument(
        "--log-level",
        type=log_level,
        default="ERROR",
        help="DEBUG, INFO, WARNING or ERROR: the rebuild's own log lines on stderr from this "
        "level (the gateway's: gaps, resyncs, books going stale, which the report counts) "
        "(default: ERROR)",
    )


_FORMAT_NAMES: Final = tuple(spec.format.value for spec in FORMATS)


def main(args: argparse.Namespace) -> int:
    """Run ``verify``: report on stdout, errors on stderr; returns the exit code."""
    path: list[Path] = args.path
    configure_logging(args.log_level)
    try:
        if args.json:
            report = verify_capture(path, venue=args.venue, depth=args.depth)
        else:
            report = _verify_with_status(path, args.venue, args.depth)
    except (CaptureFormatError, VerifyError) as exc:
        print(f"mdgateway verify: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        # Text, not sys.stdout.buffer: works when stdout is replaced by a text stream.
        sys.stdout.write(encode_json(report).decode() + "\n")
        sys.stdout.flush()
    else:
        render_table(report)
    return 0 if report.ok else 1


def _verify_with_status(path: list[Path], venue: str | None, depth: int) -> VerifyReport:
    """verify_capture with a status line on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return verify_capture(path, venue=venue, depth=depth)
    from rich.console import Console

    name = path[0].name + (f" (+{len(path) - 1} files)" if len(path) > 1 else "")
    with Console(stderr=True).status(f"reading {name}") as status:

        def progress(count: int) -> None:
            status.update(f"reading {name}: {count:,} records")

        return verify_capture(path, venue=venue, depth=depth, progress=progress)


def render_table(report: VerifyReport, file: TextIO | None = None) -> None:
    """The report as a human-readable table on ``file`` (default stdout)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file)
    if not console.is_terminal:
        # Redirected: no terminal width to respect, so do not squeeze the columns.
        console.width = max(console.width, 200)
    names = [Path(f).name for f in report.files or [report.file]]
    title = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(names)} files)"
    table = Table(title=f"{title}: {report.format}, venue {report.venue}")
    table.add_column("symbol", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for name in ("updates", "dups", "gaps", "resyncs", "crossed", "checksums ok/failed"):
        table.add_column(name, justify="right", no_wrap=True)
    for name in ("last id", "levels b/a"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("best bid", justify="right", no_wrap=True)
    table.add_column("best ask", justify="right", no_wrap=True)
    for key, s in report.symbols.items():
        table.add_row(
            key,
            s.state if s.synced else "never synced",
            f"{s.updates:,}",
            f"{s.duplicates:,}",
            f"[red]{s.gaps:,}[/red]" if s.gaps else "0",
            f"{s.resyncs:,}",
            f"[red]{s.crossed:,}[/red]" if s.crossed else "0",
            f"{s.checksum_ok:,}/"
            + (f"[red]{s.checksum_failed:,}[/red]" if s.checksum_failed else "0"),
            str(s.last_id),
            f"{s.bid_levels:,}/{s.ask_levels:,}",
            s.bids[0][0] if s.bids else "-",
            s.asks[0][0] if s.asks else "-",
        )
    console.print(table)
    console.print(
        f"records {report.records:,}, bad frames {report.bad_frames:,}, "
        f"malformed lines {report.malformed_lines:,}"
        + (", [red]capture truncated[/red]" if report.truncated else "")
    )
    for example in report.malformed_examples:
        console.print(f"  {example}", markup=False, highlight=False)
    for b in report.boundaries:
        where = f"{Path(b.after).name} | {Path(b.before).name}"
        if b.out_of_order:
            console.print(
                f"[red]gap at the boundary[/red] {where}: the later file starts before the "
                "earlier one ends (wrong order, or not one session)",
                highlight=False,
            )
        if b.gaps:
            console.print(
                f"[red]gap at the boundary[/red] {where}: the id chain breaks for "
                + ", ".join(b.gaps),
                highlight=False,
            )
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if report.ok:
        console.print("[green]OK[/green]: every symbol synced with 0 gaps")
    elif not report.symbols:
        console.print("[red]FAIL[/red]: no order book in the capture")
    else:
        bad = [k for k, s in report.symbols.items() if s.gaps or s.checksum_failed or not s.synced]
        bad += [f"boundary {Path(b.before).name}" for b in report.boundaries if not b.ok]
        console.print(f"[red]FAIL[/red]: gaps, checksum failures or never synced: {', '.join(bad)}")


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mdgateway verify",
        description="Rebuild books offline from a capture file and report per symbol.",
    )
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_cli())
