"""A live terminal view of the gateway: books per symbol, health per endpoint (rich)."""

from __future__ import annotations

import logging
from collections import deque

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gateway.core.model import SymbolState
from gateway.io.service import Service

STATE_STYLE = {
    SymbolState.LIVE: "green",
    SymbolState.SYNCING: "yellow",
    SymbolState.RESYNCING: "yellow",
    SymbolState.STALE: "red",
}


def _spread(bid: str | None, ask: str | None) -> str:
    if bid is None or ask is None:
        return "-"
    return f"{float(ask) - float(bid):.8g}"


def books_table(service: Service) -> Table:
    table = Table(title="Books", expand=True)
    for name in (
        "symbol",
        "state",
        "best bid",
        "best ask",
        "spread",
        "levels b/a",
        "seq",
        "venue id",
    ):
        table.add_column(name, justify="right" if name not in ("symbol", "state") else "left")
    table.add_column("dups / gaps / resyncs", justify="right")
    for key, book in service.books.items():
        bid = book.book.best_bid() if book.has_book else None
        ask = book.book.best_ask() if book.has_book else None
        stats = book.stats
        table.add_row(
            key,
            Text(book.state.value, style=STATE_STYLE[book.state]),
            f"{bid[1]} @ {bid[0]}" if bid else "-",
            f"{ask[1]} @ {ask[0]}" if ask else "-",
            _spread(bid[0] if bid else None, ask[0] if ask else None),
            f"{book.book.bid_count}/{book.book.ask_count}",
            f"{book.epoch}:{book.seq}",
            str(book.applied_id),
            f"{stats.duplicates} / {stats.gaps} / {stats.resyncs}",
        )
    return table


def endpoints_table(service: Service) -> Table:
    table = Table(title="Upstream endpoints", expand=True)
    columns = (
        "conn",
        "venue",
        "endpoint",
        "state",
        "frames",
        "first wins",
        "duplicates",
        "reconnects",
    )
    for name in (*columns, "failed attempts"):
        left = name in ("venue", "endpoint", "state")
        table.add_column(name, justify="left" if left else "right")
    table.add_column("error while down", overflow="ellipsis", max_width=40, no_wrap=True)
    for venue in service.venues:
        for conn in venue.connections.values():
            per_book = [b.stats.connections.get(conn.conn_id) for b in venue.books.values()]
            wins = sum(s.first_wins for s in per_book if s is not None)
            dups = sum(s.duplicates for s in per_book if s is not None)
            up = conn.stats.connected
            table.add_row(
                str(conn.conn_id),
                venue.cfg.venue,
                conn.endpoint,
                Text("up" if up else "down", style="green" if up else "red"),
                str(conn.stats.frames),
                str(wins),
                str(dups),
                str(conn.stats.reconnects),
                str(conn.stats.failed_attempts),
                "" if up else conn.stats.last_error,
            )
    return table


class RecentLog(logging.Handler):
    """Keeps the last ``capacity`` log lines for the view (bounded), instead of printing
    them over it."""

    def __init__(self, capacity: int = 8) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def render(service: Service, footer: str = "", events: RecentLog | None = None) -> Group:
    subscribers = len(service.fanout.subscriber_stats())
    head = Text(
        f"mdgateway  ws://{service.config.server.host}:{service.port}  "
        f"subscribers: {subscribers}  {footer}",
        style="bold",
    )
    parts: list[Table | Text | Panel] = [head, books_table(service), endpoints_table(service)]
    if events is not None:
        parts.append(Panel("\n".join(events.lines) or "-", title="Events", title_align="left"))
    return Group(*parts)
