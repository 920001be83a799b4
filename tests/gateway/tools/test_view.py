"""The view's layout: tables fitted to a width by dropping columns, rows shared between
tables within a height, nothing wrapped."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console
from rich.console import RenderableType

from gateway.core.model import SymbolState
from gateway.io.fanout import SubscriberStats
from gateway.tools.view import BookRow
from gateway.tools.view import Column
from gateway.tools.view import TableData
from gateway.tools.view import allot_rows
from gateway.tools.view import books_data
from gateway.tools.view import duration
from gateway.tools.view import fit_table
from gateway.tools.view import frame
from gateway.tools.view import size
from gateway.tools.view import subscribers_data


def rendered(renderable: RenderableType, width: int, height: int) -> list[str]:
    """The lines ``renderable`` prints in a ``width`` x ``height`` terminal, as text."""
    out = io.StringIO()
    console = Console(width=width, height=height, file=out, color_system=None)
    console.print(renderable, crop=True)
    return out.getvalue().splitlines()


def _wide(n_rows: int) -> TableData:
    columns = [Column("key", 0, "left")] + [Column(f"c{i}", i + 1) for i in range(12)]
    rows = [[f"row{r}"] + [f"{r * 1000 + i:>8}" for i in range(12)] for r in range(n_rows)]
    return TableData("Wide", columns, rows)


def test_a_table_too_wide_loses_its_least_kept_columns_first() -> None:
    table = fit_table(_wide(3), 60, 10)
    names = [str(column.header) for column in table.columns]
    assert names[0] == "key" and names == ["key"] + [f"c{i}" for i in range(len(names) - 1)]
    assert len(names) < 13
    lines = rendered(table, 60, 30)
    assert all(cell_len(line) <= 60 for line in lines)
    assert len(lines) == 2 + 3, "header, rule, three rows: nothing wrapped"
    wider = fit_table(_wide(3), 200, 10)
    assert len(wider.columns) == 13


def test_columns_unknown_in_every_row_are_left_out() -> None:
    data = TableData(
        "T", [Column("a", 0), Column("b", 1), Column("c", 2)], [["1", None, "3"], ["4", None, None]]
    )
    table = fit_table(data, 80, 5)
    assert [str(column.header) for column in table.columns] == ["a", "c"]


@given(
    wanted=st.lists(st.integers(0, 60), min_size=1, max_size=4),
    available=st.integers(-3, 100),
)
def test_rows_are_shared_without_exceeding_what_is_available_or_wanted(
    wanted: list[int], available: int
) -> None:
    given_rows = allot_rows(wanted, available)
    assert sum(given_rows) == min(sum(wanted), max(0, available))
    assert all(0 <= g <= w for g, w in zip(given_rows, wanted, strict=True))
    # Fair: a table given less than it wants has at least as many as any other, less one.
    for g, w in zip(given_rows, wanted, strict=True):
        if g < w:
            assert all(other <= g + 1 for other in given_rows)


def test_frame_fits_its_height_and_says_how_many_rows_it_shows() -> None:
    lines = rendered(frame("head", [_wide(30), _wide(2)], 100, 20), 100, 40)
    assert len(lines) <= 20
    assert lines[0] == "head"
    assert any(line.startswith("Wide (") and "of 30)" in line for line in lines)
    assert sum(1 for line in lines if line.startswith("row")) == 20 - 1 - 2 * 3


def test_a_table_without_rows_is_one_line_and_tables_that_cannot_fit_are_left_out() -> None:
    empty = TableData("Subscribers", [Column("id", 0)], [])
    lines = rendered(frame("h", [_wide(1), empty], 80, 24), 80, 24)
    assert lines[-1] == "Subscribers: none"
    assert rendered(frame("h", [_wide(5), _wide(5)], 80, 5), 80, 24)[1:2] == ["Wide (1 of 5)"]


def test_books_show_each_price_before_its_quantity() -> None:
    row = BookRow("binance:BTCUSDT", SymbolState.LIVE, ("64012.10", "0.512"), ("64012.20", "0.08"))
    data = books_data([row])
    names = [column.name for column in data.columns]
    assert names.index("bid") < names.index("bid qty") < names.index("ask") < names.index("ask qty")
    line = rendered(fit_table(data, 200, 1), 200, 10)[-1]
    assert (
        line.index("64012.10") < line.index("0.512") < line.index("64012.20") < line.index("0.08")
    )
    assert "0.10" in line, "the spread, exact"


def test_subscriber_lag_cells() -> None:
    behind = SubscriberStats(7, "127.0.0.1:5000", "json", 3, 10, 2048, 4, 1, 0, True, 5 << 20, 2.5)
    live = SubscriberStats(8, "127.0.0.1:5001", "msgpack", 1, 5, 100, 0, 0, 0, False, 0, 0.0)
    rows = subscribers_data([behind, live]).rows
    assert [str(c) for c in rows[0][2:5]] == ["behind", "5 MiB", "2.5 s"]
    assert [str(c) for c in rows[1][2:5]] == ["live", "0 B", "-"]


def test_sizes_and_durations() -> None:
    assert [size(n) for n in (0, 1023, 1024, 1536, 5 << 30)] == [
        "0 B",
        "1023 B",
        "1 KiB",
        "1.5 KiB",
        "5 GiB",
    ]
    assert [duration(s) for s in (0.0, 0.0004, 0.0125, 2.0)] == ["0 µs", "400 µs", "12.5 ms", "2 s"]
    assert duration(None) is None
