"""Terminal views of a gateway (rich): its books, endpoints and subscribers as tables that
fit the screen.

The tables are built from plain rows (:class:`BookRow`, :class:`EndpointRow`, and the
fan-out's :class:`~gateway.io.fanout.SubscriberStats`), so that the in-process demo (rows
read from the :class:`~gateway.io.service.Service`) and ``mdgateway top`` (rows read from
a gateway's HTTP routes and its WebSocket) draw the same tables. :func:`frame` lays a
header and tables out in ``width`` x ``height`` cells: a table too wide loses its least
important columns, tables too long lose rows (the title says how many are shown); nothing
wraps. A column whose every value is unknown (None) is not drawn. Prices come before
quantities.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING
from typing import Literal

from rich import box
from rich.console import Console
from rich.console import Group
from rich.console import RenderableType
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gateway.core.model import Level
from gateway.core.model import SymbolState
from gateway.io.fanout import SubscriberStats
from gateway.wire.client_session import ClientState
from gateway.wire.client_session import spread_of

if TYPE_CHECKING:
    from gateway.io.service import Service

STATE_STYLE = {
    SymbolState.LIVE: "green",
    SymbolState.SYNCING: "yellow",
    SymbolState.RESYNCING: "yellow",
    SymbolState.STALE: "red",
}

#: Lines a table takes besides its rows: its title, its header and the rule under it.
TABLE_CHROME_LINES = 3

Cell = str | Text | None


@dataclasses.dataclass(frozen=True, slots=True)
class BookRow:
    """One symbol's line. None: not known to this view (its column is not drawn)."""

    symbol: str
    #: An UnknownValue: a later gateway's state, shown as ``unknown (VALUE)``.
    state: ClientState
    bid: Level | None
    ask: Level | None
    position: tuple[int, int] | None = None
    updates: int | None = None
    duplicates: int | None = None
    gaps: int | None = None
    resyncs: int | None = None
    levels: tuple[int, int] | None = None
    venue_id: int | None = None
    reason: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class EndpointRow:
    """One upstream connection's line. None: not known to this view."""

    conn: str
    venue: str
    endpoint: str
    up: bool
    frames: int | None = None
    first_wins: int | None = None
    duplicates: int | None = None
    reconnects: int | None = None
    failed_attempts: int | None = None
    bad_frames: int | None = None
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """A table column: ``keep`` ranks it (0 is dropped last), ``max_width`` caps it (the
    cells beyond are cut with an ellipsis)."""

    name: str
    keep: int
    justify: Literal["left", "right"] = "right"
    max_width: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TableData:
    """A table's title, columns and rows of cells (one per column; None: unknown)."""

    title: str
    columns: Sequence[Column]
    rows: Sequence[Sequence[Cell]]


# --- cells ------------------------------------------------------------------------------------


def _int(value: int | None) -> str | None:
    return None if value is None else str(value)


def size(n_bytes: int) -> str:
    """A byte count in B, KiB, MiB or GiB, at most 3 significant digits beyond the unit."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n_bytes} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} GiB"


def duration(seconds: float | None) -> str | None:
    """A latency or a duration: µs, ms or s."""
    if seconds is None:
        return None
    if abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if abs(seconds) < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _spread(bid: Level | None, ask: Level | None) -> str:
    spread: Decimal | None = spread_of(bid, ask)
    return "-" if spread is None else str(spread)


#: A state this view does not know (a later gateway's): not live.
UNKNOWN_STATE_STYLE = "bold red"


def _state(state: ClientState) -> Text:
    if isinstance(state, SymbolState):
        return Text(state.value, style=STATE_STYLE.get(state, ""))
    return Text(str(state), style=UNKNOWN_STATE_STYLE)


# --- tables -----------------------------------------------------------------------------------

BOOK_COLUMNS = (
    Column("symbol", 0, "left", max_width=28),
    Column("state", 1, "left"),
    Column("bid", 2),
    Column("bid qty", 4),
    Column("ask", 2),
    Column("ask qty", 4),
    Column("spread", 5),
    Column("seq", 7),
    Column("updates", 8),
    Column("dups/gaps/resyncs", 6),
    Column("levels b/a", 9),
    Column("venue id", 10),
    Column("reason", 11, "left", max_width=40),
)


def books_data(rows: Sequence[BookRow]) -> TableData:
    """The books table: best bid price then quantity, best ask price then quantity."""
    cells: list[list[Cell]] = []
    for row in rows:
        counts = (row.duplicates, row.gaps, row.resyncs)
        cells.append(
            [
                row.symbol,
                _state(row.state),
                row.bid[0] if row.bid else "-",
                row.bid[1] if row.bid else "-",
                row.ask[0] if row.ask else "-",
                row.ask[1] if row.ask else "-",
                _spread(row.bid, row.ask),
                None if row.position is None else f"{row.position[0]}:{row.position[1]}",
                _int(row.updates),
                None if None in counts else "/".join(str(c) for c in counts),
                None if row.levels is None else f"{row.levels[0]}/{row.levels[1]}",
                _int(row.venue_id),
                row.reason,
            ]
        )
    return TableData("Books", BOOK_COLUMNS, cells)


ENDPOINT_COLUMNS = (
    Column("conn", 0),
    Column("venue", 1, "left"),
    Column("endpoint", 5, "left", max_width=36),
    Column("state", 0, "left"),
    Column("frames", 4),
    Column("p50", 3),
    Column("p99", 3),
    Column("reconnects", 2),
    Column("bad frames", 4),
    Column("first wins", 6),
    Column("dups", 7),
    Column("failed", 8),
    Column("error while down", 9, "left", max_width=40),
)


def endpoints_data(rows: Sequence[EndpointRow]) -> TableData:
    """The upstream connections table: state, traffic, event latency, failures."""
    cells: list[list[Cell]] = [
        [
            row.conn,
            row.venue,
            row.endpoint,
            Text("up", style="green") if row.up else Text("down", style="red"),
            _int(row.frames),
            duration(row.latency_p50_s),
            duration(row.latency_p99_s),
            _int(row.reconnects),
            _int(row.bad_frames),
            _int(row.first_wins),
            _int(row.duplicates),
            _int(row.failed_attempts),
            None if row.error is None else ("" if row.up else row.error),
        ]
        for row in rows
    ]
    return TableData("Upstream endpoints", ENDPOINT_COLUMNS, cells)


SUBSCRIBER_COLUMNS = (
    Column("id", 0),
    Column("remote", 3, "left"),
    Column("flow", 1, "left"),
    Column("unsent", 1),
    Column("behind for", 2),
    Column("books", 4),
    Column("messages", 5),
    Column("sent", 5),
    Column("dropped", 3),
    Column("conflations", 6),
    Column("format", 7, "left"),
)


def subscribers_data(rows: Sequence[SubscriberStats]) -> TableData:
    """The subscribers table: flow state and lag first, then counters."""
    cells: list[list[Cell]] = [
        [
            str(row.id),
            row.remote,
            Text("behind", style="red") if row.behind else Text("live", style="green"),
            size(row.buffered_bytes),
            duration(row.behind_s) if row.behind else "-",
            str(row.books),
            str(row.messages_sent),
            size(row.bytes_sent),
            str(row.dropped),
            str(row.conflations),
            row.wire_format,
        ]
        for row in rows
    ]
    return TableData("Subscribers", SUBSCRIBER_COLUMNS, cells)


# --- layout -----------------------------------------------------------------------------------

_MEASURE = Console(width=1000, file=None, color_system=None)


def _table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for column in columns:
        table.add_column(
            column.name,
            justify=column.justify,
            no_wrap=True,
            overflow="ellipsis",
            max_width=column.max_width,
        )
    for row in rows:
        table.add_row(*("" if cell is None else cell for cell in row))
    return table


def _natural_width(table: Table) -> int:
    return Measurement.get(_MEASURE, _MEASURE.options, table).maximum


def fit_table(data: TableData, width: int, max_rows: int) -> Table:
    """The table in at most ``width`` cells and ``max_rows`` rows: the first rows; columns
    unknown in every row left out, then the least kept ones dropped until it fits (columns
    of equal rank go together, the rightmost first)."""
    rows = list(data.rows[:max_rows])
    known = [i for i in range(len(data.columns)) if any(r[i] is not None for r in data.rows)]
    order = sorted(known, key=lambda i: (data.columns[i].keep, i))
    while True:
        shown = sorted(order)
        table = _table([data.columns[i] for i in shown], [[r[i] for i in shown] for r in rows])
        if len(order) <= 1 or _natural_width(table) <= width:
            return table
        order.pop()


def allot_rows(wanted: Sequence[int], available: int) -> list[int]:
    """Rows for each table, ``available`` in all: one at a time to each table that wants
    more, in order, so that short tables are shown whole and long ones share the rest."""
    given = [0] * len(wanted)
    left = max(0, available)
    while left > 0 and any(g < w for g, w in zip(given, wanted, strict=True)):
        for index, want in enumerate(wanted):
            if left > 0 and given[index] < want:
                given[index] += 1
                left -= 1
    return given


def _line(text: str | Text, width: int, style: str = "") -> Text:
    line = text if isinstance(text, Text) else Text(text, style=style)
    line.no_wrap = True
    line.overflow = "ellipsis"
    line.truncate(width, overflow="ellipsis")
    return line


def frame(
    header: str | Text, tables: Sequence[TableData], width: int, height: int
) -> RenderableType:
    """``header`` on one line, then each table under its title, in at most ``width`` x
    ``height`` cells. Rows are shared between the tables (:func:`allot_rows`); a table
    shown in part says ``title (shown of total)``; one with no row is its title alone
    (``title: none``); when even the titles do not fit, the last tables are left out."""
    parts: list[RenderableType] = [_line(header, width, "bold")]
    budget = height - 1
    shown: list[TableData] = []
    for data in tables:
        cost = TABLE_CHROME_LINES if data.rows else 1
        if budget < cost + (1 if data.rows else 0):  # a table is shown with a row or more
            break
        budget -= cost
        shown.append(data)
    wanted = [len(data.rows) for data in shown]
    rows = allot_rows(wanted, budget)
    for data, n_rows in zip(shown, rows, strict=True):
        if not data.rows:
            parts.append(_line(f"{data.title}: none", width, "bold"))
            continue
        total = len(data.rows)
        title = data.title if n_rows == total else f"{data.title} ({n_rows} of {total})"
        parts.append(_line(title, width, "bold"))
        parts.append(fit_table(data, width, n_rows))
    return Group(*parts)


# --- the in-process demo ----------------------------------------------------------------------


def book_rows(service: Service) -> list[BookRow]:
    rows = []
    for key, book in service.books.items():
        stats = book.stats
        rows.append(
            BookRow(
                key,
                book.state,
                book.book.best_bid() if book.has_book else None,
                book.book.best_ask() if book.has_book else None,
                position=(book.epoch, book.seq),
                duplicates=stats.duplicates,
                gaps=stats.gaps,
                resyncs=stats.resyncs,
                levels=(book.book.bid_count, book.book.ask_count),
                venue_id=book.applied_id,
            )
        )
    return rows


def endpoint_rows(service: Service) -> list[EndpointRow]:
    rows = []
    for venue in service.venues:
        for conn in venue.connections.values():
            per_book = [b.stats.connections.get(conn.conn_id) for b in venue.books.values()]
            rows.append(
                EndpointRow(
                    str(conn.conn_id),
                    venue.cfg.venue,
                    conn.endpoint,
                    conn.stats.connected,
                    frames=conn.stats.frames,
                    first_wins=sum(s.first_wins for s in per_book if s is not None),
                    duplicates=sum(s.duplicates for s in per_book if s is not None),
                    reconnects=conn.stats.reconnects,
                    failed_attempts=conn.stats.failed_attempts,
                    error=conn.stats.last_error,
                )
            )
    return rows


class RecentLog(logging.Handler):
    """Keeps the last ``capacity`` log lines for the view (bounded), instead of printing
    them over it."""

    def __init__(self, capacity: int = 8) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def render(
    service: Service,
    width: int,
    height: int,
    footer: str = "",
    events: RecentLog | None = None,
) -> Group:
    """The demo's view in ``width`` x ``height`` cells: books and endpoints, and the last
    log lines (``events``) in a panel under them."""
    subscribers = len(service.fanout.subscriber_stats())
    head = (
        f"mdgateway  ws://{service.config.server.host}:{service.port}  "
        f"subscribers: {subscribers}  {footer}"
    )
    panel_lines = 0 if events is None else (events.lines.maxlen or 0) + 2
    tables = [books_data(book_rows(service)), endpoints_data(endpoint_rows(service))]
    parts: list[RenderableType] = [frame(head, tables, width, height - panel_lines)]
    if events is not None:
        lines = Text("\n".join(events.lines) or "-", no_wrap=True, overflow="ellipsis")
        parts.append(Panel(lines, title="Events", title_align="left"))
    return Group(*parts)
