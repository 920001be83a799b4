"""``mdgateway verify``: rebuild books offline from a capture file and report per symbol.

The capture is read by :mod:`gateway.capture`; each WebSocket frame goes through the
venue's parser and each depth update into the same :class:`~gateway.core.arbiter.SymbolArbiter`
the service uses, one per symbol, with the recorded receive times as its clock. REST
depth snapshots in the capture sync the books. The report says, per symbol, what the
arbiter counted and what the final book holds.

Exit codes of :func:`main`: 0 when every symbol was synced and had 0 gaps, 1 when a symbol
had a gap or never synced (or the capture holds no book), 2 for usage and format errors,
with the reason on stderr.

Adding a venue: its adapter goes into :data:`gateway.wire.venues.ADAPTERS`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final, TextIO
from urllib.parse import urlsplit

import msgspec

from gateway.capture import (
    INLINE_SNAPSHOT_SCHEME,
    KNOWN_VENUES,
    CaptureFormat,
    CaptureFormatError,
    CaptureReader,
    CaptureRecord,
    connection_venue,
    detect_format,
    detect_venue,
    rest_symbol,
)
from gateway.core.arbiter import (
    DEFAULT_REORDER_WINDOW_NS,
    Checksum,
    ConnectionSequenceChecker,
    ReplicatedBook,
    SymbolArbiter,
)
from gateway.core.model import (
    ConnectionSequence,
    DepthDiff,
    DepthSnapshot,
    InstrumentPrecision,
    Level,
    VenueContractError,
    symbol_key,
)
from gateway.wire.venues import ADAPTERS, VenueAdapter

log = logging.getLogger(__name__)

DEFAULT_DEPTH: Final = 20
#: Bad frames logged one by one; the rest are only counted.
_MAX_LOGGED_BAD_FRAMES: Final = 10
#: Records between two calls of the progress callback.
_PROGRESS_EVERY: Final = 8192


class VerifyError(Exception):
    """A usage error: the venue is unknown, not supported yet, or cannot be told."""


class SymbolReport(msgspec.Struct):
    """One symbol's result. The first twelve fields are the documented JSON shape; ``bids``
    and ``asks`` are the top levels, best first, as the venue's decimal strings."""

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
    #: Updates older than the snapshot the book was built from.
    stale: int
    snapshots: int
    snapshots_unused: int
    #: Updates still waiting for missing ids when the capture ended.
    pending: int
    bad_updates: int


class VerifyReport(msgspec.Struct):
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

    @property
    def ok(self) -> bool:
        """Every symbol synced with 0 gaps and no failed checksum, no connection lost
        messages, and there was at least one symbol."""
        return (
            bool(self.symbols)
            and self.connection_gaps == 0
            and all(
                s.synced and s.gaps == 0 and s.checksum_failed == 0 for s in self.symbols.values()
            )
        )


def _recorded_venue(payload: bytes) -> str:
    """The venue an mdgateway connect record names (``{"venue": name}``), or ""."""
    try:
        named = msgspec.json.decode(payload) if payload else {}
    except msgspec.DecodeError:
        return ""
    venue = named.get("venue") if isinstance(named, dict) else None
    return venue if isinstance(venue, str) else ""


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
    """The books of one capture, fed record by record."""

    def __init__(self, spec: VenueAdapter, reorder_window_ns: int, *, by_url: bool) -> None:
        self.spec = spec
        #: Read each connection with the venue its URL names (no --venue given).
        self.by_url = by_url
        #: The venue of each recorded connection whose URL names one.
        self.conn_spec: dict[int, VenueAdapter] = {}
        self.sequences = ConnectionSequenceChecker()
        #: Checksums at announced instrument precisions, by key (books may come later).
        self.checksums: dict[str, Checksum] = {}
        self.reorder_window_ns = reorder_window_ns
        self.books: dict[str, SymbolArbiter] = {}
        #: Connections that delivered updates of each book: told when they end.
        self.conns: dict[str, set[int]] = {}
        #: Books with a reorder deadline to watch.
        self.armed: set[str] = set()
        self.bad_frames = 0

    def book(self, key: str) -> SymbolArbiter:
        book = self.books.get(key)
        if book is None:
            venue, _, symbol = key.partition(":")
            spec = ADAPTERS.get(venue, self.spec)
            book = self.books[key] = spec.new_arbiter(
                symbol, reorder_window_ns=self.reorder_window_ns
            )
            if key in self.checksums:
                book.checksum = self.checksums[key]
            self.conns[key] = set()
        return book

    def feed(self, record: CaptureRecord) -> None:
        now_ns = record.recv_ns
        if self.armed:
            self._fire_timers(now_ns)
        if record.kind == "connect" and self.by_url:
            named = ADAPTERS.get(connection_venue(record.url) or "") or ADAPTERS.get(
                _recorded_venue(record.payload)
            )
            if named is not None:
                self.conn_spec[record.conn_id] = named
        elif record.kind == "ws":
            spec = self.conn_spec.get(record.conn_id, self.spec)
            try:
                events = spec.parse(record.payload, now_ns, record.conn_id)
            except VenueContractError as exc:
                self._bad_frame(record, exc)
                return
            for event in events:
                if isinstance(event, DepthDiff):
                    key = event.key
                    self.book(key).on_diff(event, now_ns)
                    self.conns[key].add(event.conn_id)
                    self._arm(key)
                elif isinstance(event, DepthSnapshot):
                    self._snapshot(event, now_ns)
                elif isinstance(event, InstrumentPrecision):
                    make = spec.checksum_at_precision
                    if make is not None:
                        key = symbol_key(event.venue, event.symbol)
                        self.checksums[key] = make(event.price_precision, event.qty_precision)
                        if key in self.books:
                            self.books[key].checksum = self.checksums[key]
                elif isinstance(event, ConnectionSequence) and self.sequences.on_seq(
                    record.conn_id, event.seq
                ):
                    # That connection lost messages: its replicas are wrong from here.
                    for book in self.books.values():
                        if isinstance(book, ReplicatedBook):
                            book.invalidate(record.conn_id, "connection sequence jump")
        elif record.kind == "rest":
            self._rest(record)
        elif record.kind == "disconnect":
            for key, conns in self.conns.items():
                if record.conn_id in conns:
                    conns.discard(record.conn_id)
                    self.books[key].on_connection(record.conn_id, False, now_ns)
                    self._arm(key)

    def _rest(self, record: CaptureRecord) -> None:
        parts = urlsplit(record.url)
        spec = self.spec
        if self.by_url:
            # The venue the URL names, else the one whose snapshot path it is (loopback).
            spec = ADAPTERS.get(connection_venue(record.url) or "") or next(
                (
                    a
                    for a in ADAPTERS.values()
                    if a.snapshot_paths and parts.path.endswith(a.snapshot_paths)
                ),
                spec,
            )
        if parts.scheme != INLINE_SNAPSHOT_SCHEME and not parts.path.endswith(spec.snapshot_paths):
            return
        symbol = rest_symbol(record.url)
        if symbol is None:
            self._bad_frame(record, VenueContractError("REST snapshot URL names no symbol"))
            return
        if spec.parse_snapshot is None:
            return
        try:
            snap = spec.parse_snapshot(symbol, record.payload, record.recv_ns, record.conn_id)
        except VenueContractError as exc:
            self._bad_frame(record, exc)
            return
        self._snapshot(snap, record.recv_ns)

    def _snapshot(self, snap: DepthSnapshot, now_ns: int) -> None:
        key = symbol_key(snap.venue, snap.symbol)
        self.book(key).on_snapshot(snap, now_ns)
        self._arm(key)

    def _arm(self, key: str) -> None:
        if self.books[key].deadline_ns() is not None:
            self.armed.add(key)

    def _fire_timers(self, now_ns: int) -> None:
        for key in list(self.armed):
            book = self.books[key]
            deadline = book.deadline_ns()
            if deadline is None:
                self.armed.discard(key)
            elif deadline <= now_ns:
                book.on_timer(now_ns)
                if book.deadline_ns() is None:
                    self.armed.discard(key)

    def _bad_frame(self, record: CaptureRecord, exc: VenueContractError) -> None:
        self.bad_frames += 1
        if self.bad_frames <= _MAX_LOGGED_BAD_FRAMES:
            log.warning(
                "bad %s frame at recv_ns %d on conn %d: %s",
                record.kind,
                record.recv_ns,
                record.conn_id,
                exc,
            )
            if self.bad_frames == _MAX_LOGGED_BAD_FRAMES:
                log.warning("further bad frames are counted, not logged")


def _symbol_report(book: SymbolArbiter, depth: int) -> SymbolReport:
    s = book.stats
    return SymbolReport(
        updates=s.updates,
        duplicates=s.duplicates,
        gaps=s.gaps,
        resyncs=s.resyncs,
        crossed=s.crossed,
        checksum_ok=s.checksum_ok,
        checksum_failed=s.checksum_failed,
        last_id=book.applied_id,
        bid_levels=book.book.bid_count,
        ask_levels=book.book.ask_count,
        bids=book.book.bids(depth),
        asks=book.book.asks(depth),
        synced=s.snapshots > 0,
        state=book.state.value,
        diffs=sum(c.received for c in s.connections.values()),
        stale=s.stale,
        snapshots=s.snapshots,
        snapshots_unused=s.snapshots_unused,
        pending=book.pending,
        bad_updates=s.bad_updates,
    )


def verify_capture(
    path: Path,
    *,
    venue: str | None = None,
    depth: int = DEFAULT_DEPTH,
    fmt: CaptureFormat | None = None,
    reorder_window_ns: int = DEFAULT_REORDER_WINDOW_NS,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Rebuild every book in the capture at ``path`` and report on each.

    ``depth`` levels per side go into the report (>= 0). ``progress`` is called with the
    number of records read, now and then. Raises CaptureFormatError when the file's format
    cannot be told, VerifyError for venue problems and ValueError for a negative ``depth``;
    bad lines and bad frames are counted in the report, not raised. Holes still open when
    the capture ends are reported as ``pending``, not as gaps: the capture does not say
    whether the ids would have come.
    """
    if depth < 0:
        raise ValueError("depth must be >= 0")
    fmt = fmt or detect_format(path)
    spec = resolve_venue(path, fmt, venue)
    reader = CaptureReader(path, fmt)
    rebuild = _Rebuild(spec, reorder_window_ns, by_url=venue is None)
    for count, record in enumerate(reader, 1):
        rebuild.feed(record)
        if progress is not None and count % _PROGRESS_EVERY == 0:
            progress(count)
    stats = reader.stats
    return VerifyReport(
        file=str(path),
        format=fmt.value,
        venue=",".join(sorted({key.partition(":")[0] for key in rebuild.books})) or spec.venue,
        sources=stats.sources,
        records=stats.records,
        bad_frames=rebuild.bad_frames,
        connection_gaps=rebuild.sequences.gaps,
        malformed_lines=stats.malformed,
        malformed_examples=stats.examples,
        truncated=stats.truncated,
        symbols={key: _symbol_report(rebuild.books[key], depth) for key in sorted(rebuild.books)},
    )


def encode_json(report: VerifyReport) -> bytes:
    """The report as one JSON object (no trailing newline)."""
    return msgspec.json.encode(report)


# --- command line -------------------------------------------------------------------------


def _depth_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``verify``; :func:`main` takes the namespace they produce."""
    parser.add_argument(
        "path",
        type=Path,
        help="capture file: hftbacktest collector .gz, or a cryptofeed NAME.ws.N.M "
        "(its NAME.http.N.M beside it is read too)",
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
        type=_depth_arg,
        default=DEFAULT_DEPTH,
        metavar="N",
        help=f"levels per side in the report (default {DEFAULT_DEPTH})",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``verify``: report on stdout, errors on stderr; returns the exit code."""
    path: Path = args.path
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


def _verify_with_status(path: Path, venue: str | None, depth: int) -> VerifyReport:
    """verify_capture with a status line on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return verify_capture(path, venue=venue, depth=depth)
    from rich.console import Console

    with Console(stderr=True).status(f"reading {path.name}") as status:

        def progress(count: int) -> None:
            status.update(f"reading {path.name}: {count:,} records")

        return verify_capture(path, venue=venue, depth=depth, progress=progress)


def render_table(report: VerifyReport, file: TextIO | None = None) -> None:
    """The report as a human-readable table on ``file`` (default stdout)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file)
    if not console.is_terminal:
        # Redirected: no terminal width to respect, so do not squeeze the columns.
        console.width = max(console.width, 200)
    table = Table(title=f"{Path(report.file).name}: {report.format}, venue {report.venue}")
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
    if report.ok:
        console.print("[green]OK[/green]: every symbol synced with 0 gaps")
    elif not report.symbols:
        console.print("[red]FAIL[/red]: no order book in the capture")
    else:
        bad = [k for k, s in report.symbols.items() if s.gaps or s.checksum_failed or not s.synced]
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
