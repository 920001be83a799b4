"""What ``mdgateway top`` draws from a gateway's metrics, health, subscribers and books,
without a network: rows read from the documents, and the frame at 80x24 and 160x50."""

from __future__ import annotations

import pytest
from rich.cells import cell_len

from gateway.core.model import SymbolState
from gateway.tools.top_model import NotAGateway
from gateway.tools.top_model import Reading
from gateway.tools.top_model import Top
from gateway.tools.top_model import book_rows
from gateway.tools.top_model import check_health
from gateway.tools.top_model import endpoint_rows
from gateway.tools.top_model import parse_metrics
from gateway.tools.top_model import subscriber_rows
from gateway.tools.top_model import top_frame
from gateway.wire.protocol import UnknownValue
from tests.gateway.tools.test_view import rendered

LATENCY = "mdgateway_connection_event_latency_seconds"
BOUNDS = ("0.0", "0.001", "0.0025", "0.005", "0.01", "0.025", "+Inf")


def metrics_text(n_symbols: int, n_connections: int) -> str:
    """A gateway's /metrics: ``n_symbols`` binance symbols, ``n_connections`` book
    connections (every third down) and one trade connection; names as in docs/metrics.md."""
    lines = [
        "# TYPE mdgateway_connection_info gauge",
        "# TYPE mdgateway_connection_up gauge",
        "# TYPE mdgateway_connection_frames_total counter",
        "# TYPE mdgateway_connection_reconnects_total counter",
        "# TYPE mdgateway_connection_failed_attempts_total counter",
        "# TYPE mdgateway_connection_bad_frames_total counter",
        f"# TYPE {LATENCY} histogram",
        "# TYPE mdgateway_symbol_updates_total counter",
        "# TYPE mdgateway_symbol_duplicates_total counter",
        "# TYPE mdgateway_symbol_gaps_total counter",
        "# TYPE mdgateway_symbol_resyncs_total counter",
        "# TYPE mdgateway_symbol_connection_first_wins_total counter",
        "# TYPE mdgateway_fanout_subscribers gauge",
        "# TYPE mdgateway_fanout_sent_bytes_total counter",
    ]
    for c in range(n_connections + 1):
        role = "trade" if c == n_connections else "book"
        conn = f'venue="binance",connection="{c}"'
        endpoint = f"wss://stream{c}.binance.example:9443/stream/with/a/long/path"
        lines += [
            f'mdgateway_connection_info{{{conn},endpoint="{endpoint}",role="{role}"}} 1.0',
            f"mdgateway_connection_up{{{conn}}} {0.0 if c % 3 == 2 else 1.0}",
            f"mdgateway_connection_frames_total{{{conn}}} {1000 + c}.0",
            f"mdgateway_connection_reconnects_total{{{conn}}} {c}.0",
            f"mdgateway_connection_failed_attempts_total{{{conn}}} 0.0",
        ]
        # 100 observations: 50 at or below 1 ms, 40 more by 2.5 ms, 10 more by 10 ms.
        for bound, count in zip(BOUNDS, (0, 50, 90, 90, 100, 100, 100), strict=True):
            lines.append(f'{LATENCY}_bucket{{{conn},le="{bound}"}} {count}.0')
        lines += [f"{LATENCY}_count{{{conn}}} 100.0", f"{LATENCY}_sum{{{conn}}} 0.2"]
    lines.append('mdgateway_connection_bad_frames_total{venue="binance",connection="1"} 3.0')
    for s in range(n_symbols):
        sym = f'venue="binance",symbol="S{s}USDT"'
        lines += [
            f"mdgateway_symbol_updates_total{{{sym}}} {500 + s}.0",
            f"mdgateway_symbol_duplicates_total{{{sym}}} 7.0",
            f"mdgateway_symbol_gaps_total{{{sym}}} 0.0",
            f"mdgateway_symbol_resyncs_total{{{sym}}} 1.0",
        ]
        for c in range(n_connections):
            wins = f'{sym},connection="{c}"'
            lines.append(f"mdgateway_symbol_connection_first_wins_total{{{wins}}} 10.0")
    lines += ["mdgateway_fanout_subscribers 2.0", "mdgateway_fanout_sent_bytes_total 2048.0"]
    return "\n".join(lines) + "\n"


def health(n_symbols: int) -> dict[str, object]:
    symbols = [
        {"symbol": f"binance:S{s}USDT", "state": "stale" if s == 1 else "live"}
        for s in range(n_symbols)
    ]
    return {
        "status": "ok",
        "protocol_version": 1,
        "subscribers": 2,
        "live": n_symbols - 1,
        "total": n_symbols,
        "not_live_share_limit": 1.0,
        "not_live": [
            {
                "symbol": "binance:S1USDT",
                "state": "stale",
                "reason": "every upstream connection down",
            }
        ],
        "symbols": symbols,
    }


def subscribers(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": i,
            "remote": f"127.0.0.1:{50000 + i}",
            "wire_format": "json",
            "books": 3,
            "messages_sent": 100 * i,
            "bytes_sent": 10_000 * i,
            "dropped": 5 if i == 2 else 0,
            "conflations": 1 if i == 2 else 0,
            "bad_requests": 0,
            "behind": i == 2,
            "buffered_bytes": 6 << 20 if i == 2 else 0,
            "behind_s": 1.5 if i == 2 else 0.0,
        }
        for i in range(1, n + 1)
    ]


def tops(n_symbols: int) -> dict[str, Top]:
    return {
        f"binance:S{s}USDT": Top(
            SymbolState.LIVE, "", (f"{100 + s}.25", "0.125"), (f"{100 + s}.5", "4.75"), (1, 40 + s)
        )
        for s in range(n_symbols)
        if s != 1
    }


def reading(n_symbols: int, n_connections: int, n_subscribers: int) -> Reading:
    return Reading(
        "http://127.0.0.1:8765",
        parse_metrics(metrics_text(n_symbols, n_connections)),
        check_health(health(n_symbols)),
        subscriber_rows(subscribers(n_subscribers)),
        tops(n_symbols),
        clock="12:00:00",
    )


# --- rows -------------------------------------------------------------------------------------


def test_endpoint_rows_from_the_metrics() -> None:
    rows = endpoint_rows(parse_metrics(metrics_text(2, 3)))
    assert [row.conn for row in rows] == ["0", "1", "2", "3"]
    assert [row.up for row in rows] == [True, True, False, True]
    assert rows[3].venue == "binance (trade)" and rows[0].venue == "binance"
    assert rows[1].frames == 1001 and rows[1].reconnects == 1 and rows[1].bad_frames == 3
    assert rows[0].bad_frames == 0, "no series: none was bad"
    assert rows[0].first_wins == 20 and rows[3].first_wins == 0
    assert rows[0].latency_p50_s == pytest.approx(0.001)
    assert rows[0].latency_p99_s == pytest.approx(0.005 + 0.005 * 9 / 10)


def test_book_rows_take_the_stream_state_and_top_and_the_metrics_counters() -> None:
    rows = book_rows(parse_metrics(metrics_text(3, 1)), health(3), tops(3))
    assert [row.symbol for row in rows] == ["binance:S0USDT", "binance:S1USDT", "binance:S2USDT"]
    assert rows[0].bid == ("100.25", "0.125") and rows[0].position == (1, 40)
    assert (rows[0].updates, rows[0].duplicates, rows[0].gaps, rows[0].resyncs) == (500, 7, 0, 1)
    assert rows[1].state is SymbolState.STALE and rows[1].bid is None
    assert rows[1].reason == "every upstream connection down" and rows[0].reason is None
    streamed = {"binance:S1USDT": Top(SymbolState.RESYNCING, "gap")}
    assert book_rows({}, health(3), streamed)[1].state is SymbolState.RESYNCING


def test_subscriber_rows_put_the_most_behind_first() -> None:
    rows = subscriber_rows(subscribers(3))
    assert [row.id for row in rows] == [2, 1, 3]
    assert rows[0].behind and rows[0].buffered_bytes == 6 << 20 and rows[0].behind_s == 1.5
    with pytest.raises(NotAGateway, match="/subscribers"):
        subscriber_rows([{"id": 1}])


def test_documents_that_are_not_a_gateways_are_refused() -> None:
    with pytest.raises(NotAGateway, match="no mdgateway_ metric"):
        parse_metrics("# TYPE up gauge\nup 1.0\n")
    with pytest.raises(NotAGateway, match="Prometheus"):
        parse_metrics("<html><body>hello</body></html>\n")
    with pytest.raises(NotAGateway, match="health"):
        check_health({"status": "ok"})
    with pytest.raises(NotAGateway, match="health"):
        check_health(["not", "a", "dict"])
    bad_state = {**health(2), "symbols": [{"symbol": "binance:X", "state": 3}]}
    with pytest.raises(NotAGateway, match="health"):
        check_health(bad_state)


def test_a_later_gateways_state_is_shown_as_unknown_and_not_live() -> None:
    later = {**health(2), "symbols": [{"symbol": "binance:S0USDT", "state": "halted"}]}
    rows = book_rows({}, check_health(later), {})
    assert rows[0].state == UnknownValue("halted")
    streamed = {"binance:S0USDT": Top(UnknownValue("auction"), "venue auction")}
    (row,) = book_rows({}, check_health(later), streamed)
    assert row.state == UnknownValue("auction") and row.reason == "venue auction"
    lines = rendered(top_frame(Reading("ws://gw", {}, later, tops=streamed), 120, 10), 120, 10)
    assert any("unknown (auction)" in line for line in lines)


# --- the frame --------------------------------------------------------------------------------


def _check_fits(lines: list[str], width: int, height: int) -> None:
    assert 0 < len(lines) <= height
    assert all(cell_len(line) <= width for line in lines), max(lines, key=cell_len)


def test_at_80x24_every_part_fits_by_dropping_columns_and_rows_never_wrapping() -> None:
    lines = rendered(top_frame(reading(40, 12, 6), 80, 24), 80, 24)
    _check_fits(lines, 80, 24)
    text = "\n".join(lines)
    assert lines[0].startswith("mdgateway top  http://127.0.0.1:8765  ok  live 39/40")
    for title in ("Books (", "Upstream endpoints (", "Subscribers ("):
        assert title in text, title
    book_lines = [line for line in lines if line.startswith("binance:S")]
    assert book_lines and len(book_lines) < 40
    # One line per symbol, price then quantity on each side.
    s0 = next(line for line in book_lines if line.startswith("binance:S0USDT "))
    assert s0.index("100.25") < s0.index("0.125") < s0.index("100.5")
    # Columns went, not wrapped: the widest ones of the 160 view are missing here.
    assert "dups/gaps/resyncs" not in text and "endpoint" not in text.split("\n", 2)[1]
    # The subscriber behind comes first, with its lag.
    sub_header = next(i for i, line in enumerate(lines) if line.startswith("Subscribers"))
    assert "behind" in lines[sub_header + 3] and "6 MiB" in lines[sub_header + 3]


def test_at_160x50_more_rows_and_columns_are_shown() -> None:
    small = rendered(top_frame(reading(40, 12, 6), 80, 24), 80, 24)
    lines = rendered(top_frame(reading(40, 12, 6), 160, 50), 160, 50)
    _check_fits(lines, 160, 50)
    text = "\n".join(lines)
    assert lines[0].endswith("slow closes 0"), "the whole header"
    book_lines = [line for line in lines if line.startswith("binance:S")]
    assert len(book_lines) > len([line for line in small if line.startswith("binance:S")])
    for column in ("ask qty", "spread", "seq", "dups/gaps/resyncs", "p50", "p99", "unsent"):
        assert column in text, column
    assert "wss://stream0.binance.example" in text
    s0 = next(line for line in book_lines if line.startswith("binance:S0USDT "))
    assert s0.index("100.5") < s0.index("4.75"), "ask price before its quantity"
    assert "1:40" in s0 and "7/0/1" in s0


def test_a_small_gateway_is_shown_whole_and_an_error_in_the_header() -> None:
    small = reading(2, 2, 1)
    small = Reading(small.url, small.metrics, small.health, [], small.tops, "unreachable")
    lines = rendered(top_frame(small, 80, 24), 80, 24)
    _check_fits(lines, 80, 24)
    assert "Books" in lines and "Upstream endpoints" in lines and "Subscribers: none" in lines
    assert "subscribers 2  unreachable" in lines[0], "before the totals"
