"""cryptofeed's format-2 JSONL reader: time order, connections written one after another,
reconnects, malformed lines, detection and venue."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gateway.capture import REST_CONN_ID
from gateway.capture import CaptureFormat
from gateway.capture import CaptureFormatError
from gateway.capture import detect_format
from gateway.capture import detect_venue

from .samples import BYBIT_DELTA
from .samples import BYBIT_LINEAR
from .samples import BYBIT_SPOT
from .samples import HEADER
from .samples import cf2
from .samples import records
from .samples import write
from .samples import write_gz


def test_cryptofeed_jsonl_records_in_time_order(tmp_path: Path) -> None:
    path = write_gz(
        tmp_path / "BYBIT.jsonl.gz",
        [
            cf2(**HEADER),
            cf2(
                t="http",
                conn="BYBIT.http.1",
                ts=1786310817.601629,
                url="https://api.bybit.com/v5/x?category=linear",
                data="{}",
            ),
            cf2(conn="BYBIT.ws.2", ts=1786310818.2235148, t="connect", addr=BYBIT_LINEAR),
            cf2(conn="BYBIT.ws.2", ts=1786310819.228447, t="send", addr=BYBIT_LINEAR, data="{}"),
            cf2(conn="BYBIT.ws.2", ts=1786310819.5648682, t="recv", data=BYBIT_DELTA.decode()),
            cf2(conn="BYBIT.ws.3", ts=1786310819.6, t="connect", addr=BYBIT_SPOT),
            cf2(
                conn="BYBIT.ws.3",
                ts=1786310819.7,
                t="recv",
                b64=base64.b64encode(b"\x00\xff").decode(),
            ),
            cf2(conn="BYBIT.ws.2", ts=1786310820, t="recv", data="héllo"),
        ],
    )
    assert detect_format(path) is CaptureFormat.CRYPTOFEED_JSONL
    recs, stats = records(path)
    assert [(r.kind, r.conn_id, r.url) for r in recs] == [
        ("rest", REST_CONN_ID, "https://api.bybit.com/v5/x?category=linear"),
        ("connect", 0, BYBIT_LINEAR),
        ("ws", 0, BYBIT_LINEAR),
        ("connect", 1, BYBIT_SPOT),
        ("ws", 1, BYBIT_SPOT),
        ("ws", 0, BYBIT_LINEAR),
    ]
    # Times from the JSON number's digits, exactly.
    assert recs[2].recv_ns == 1_786_310_819_564_868_200
    assert recs[5].recv_ns == 1_786_310_820_000_000_000
    assert [r.payload for r in recs] == [
        b"{}",
        b"",
        BYBIT_DELTA,
        b"",
        b"\x00\xff",
        "héllo".encode(),
    ]
    assert (stats.lines, stats.records, stats.skipped, stats.malformed) == (8, 6, 2, 0)
    assert stats.sources == [str(path)]


def test_cryptofeed_jsonl_connections_written_one_after_another_are_merged(
    tmp_path: Path,
) -> None:
    # As in files converted from format 1: one connection's records, then the next's.
    path = write(
        tmp_path / "X.jsonl",
        [
            cf2(**HEADER),
            cf2(t="connect", conn="X.ws.1", ts=1, addr=BYBIT_LINEAR),
            cf2(t="recv", conn="X.ws.1", ts=3, data="a3"),
            cf2(t="recv", conn="X.ws.1", ts=2.5, data="a2.5"),  # its clock stepped back
            cf2(t="recv", conn="X.ws.1", ts=6, data="a6"),
            cf2(t="connect", conn="X.ws.2", ts=2, addr=BYBIT_SPOT),
            cf2(t="recv", conn="X.ws.2", ts=4, data="b4"),
            cf2(t="http", conn="X.http.1", ts=0.5, url="https://api.bybit.com/a", data="h0.5"),
            cf2(t="http", conn="X.http.1", ts=5, url="https://api.bybit.com/b", data="h5"),
        ],
    )
    recs, stats = records(path)
    assert [(r.kind, r.conn_id, r.payload) for r in recs] == [
        ("rest", REST_CONN_ID, b"h0.5"),
        ("connect", 0, b""),
        ("connect", 1, b""),
        ("ws", 0, b"a3"),
        ("ws", 0, b"a2.5"),  # each connection keeps its own order
        ("ws", 1, b"b4"),
        ("rest", REST_CONN_ID, b"h5"),
        ("ws", 0, b"a6"),
    ]
    assert (stats.lines, stats.records, stats.skipped) == (9, 8, 1)


@pytest.mark.parametrize("concatenated", [False, True])
def test_cryptofeed_jsonl_reconnect_is_a_new_connection(tmp_path: Path, concatenated: bool) -> None:
    a = [
        cf2(t="connect", conn="X.ws.1", ts=1, addr=BYBIT_LINEAR),
        cf2(t="recv", conn="X.ws.1", ts=2, data="a2"),
        cf2(t="connect", conn="X.ws.1", ts=5, addr=BYBIT_LINEAR + "?again"),
        cf2(t="recv", conn="X.ws.1", ts=6, data="a6"),
    ]
    b = [
        cf2(t="connect", conn="X.ws.2", ts=3, addr=BYBIT_SPOT),
        cf2(t="recv", conn="X.ws.2", ts=4, data="b4"),
    ]
    lines = a + b if concatenated else [a[0], a[1], b[0], b[1], a[2], a[3]]
    recs, _ = records(write(tmp_path / "X.jsonl", lines))
    # Ids in order of the (re)connects in the file.
    a0, a1, b0 = (0, 1, 2) if concatenated else (0, 2, 1)
    assert [(r.kind, r.conn_id, r.url, r.recv_ns // 10**9) for r in recs] == [
        ("connect", a0, BYBIT_LINEAR, 1),
        ("ws", a0, BYBIT_LINEAR, 2),
        ("connect", b0, BYBIT_SPOT, 3),
        ("ws", b0, BYBIT_SPOT, 4),
        ("disconnect", a0, BYBIT_LINEAR, 5),
        ("connect", a1, BYBIT_LINEAR + "?again", 5),
        ("ws", a1, BYBIT_LINEAR + "?again", 6),
    ]


def test_cryptofeed_jsonl_recv_before_any_connect(tmp_path: Path) -> None:
    path = write(
        tmp_path / "X.jsonl",
        [
            cf2(conn="X.ws.1", ts=1, t="recv", data="x"),
            cf2(conn="X.ws.1", ts=2, t="send", addr=BYBIT_SPOT, data="{}"),
            cf2(conn="X.ws.1", ts=3, t="recv", data="y"),
        ],
    )
    assert detect_format(path) is CaptureFormat.CRYPTOFEED_JSONL
    recs, _ = records(path)
    # A sent frame tells the connection's URL when no connect record did.
    assert [(r.kind, r.conn_id, r.url) for r in recs] == [("ws", 0, ""), ("ws", 0, BYBIT_SPOT)]


def test_cryptofeed_jsonl_malformed_lines_are_counted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "X.jsonl",
        [
            cf2(**HEADER),
            b"not json",
            cf2(t="close", conn="X.ws.1", ts=1),
            cf2(t="recv", ts=1, data="no conn"),
            cf2(t="recv", conn="X.ws.1", ts=1),
            cf2(t="recv", conn="X.ws.1", ts=1, b64="!!not base64!!"),
            cf2(t="recv", conn="X.ws.1", ts="1", data="ts as a string"),
            cf2(t="recv", conn="X.ws.1", data="no ts"),
            cf2(t="connect", conn="X.ws.1", ts=1),
            cf2(t="http", conn="X.http.1", ts=1, data="no url"),
            cf2(t="recv", conn="X.ws.1", ts=-1, data="negative"),
            cf2(t="recv", conn="X.ws.1", ts=1.5e0, data="ok"),
        ],
    )
    recs, stats = records(path)
    assert [(r.kind, r.recv_ns, r.payload) for r in recs] == [("ws", 1_500_000_000, b"ok")]
    assert (stats.malformed, stats.skipped, stats.lines) == (10, 1, 12)
    assert stats.examples[0].startswith("X.jsonl:2: ")
    assert "unknown record type 'close'" in stats.examples[1]


def test_cryptofeed_jsonl_detected_from_a_long_first_line(tmp_path: Path) -> None:
    big = "x" * 100_000  # the first line does not fit in the bytes read to detect
    path = write_gz(
        tmp_path / "capture.gz",
        [
            cf2(conn="X.http.1", ts=1, t="http", url="https://api.bybit.com/a", data=big),
            cf2(conn="X.ws.1", ts=2, t="recv", data="y"),
        ],
    )
    assert detect_format(path) is CaptureFormat.CRYPTOFEED_JSONL
    recs, _ = records(path)
    assert [len(r.payload) for r in recs] == [100_000, 1]


def test_cryptofeed_jsonl_other_format_versions_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "X.jsonl", [cf2(t="header", format=3, exchange="BYBIT")])
    with pytest.raises(CaptureFormatError, match="format 3 is not supported") as info:
        detect_format(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("addrs", "exchange", "venue"),
    [
        ([BYBIT_LINEAR, BYBIT_SPOT], "BYBIT", "bybit"),
        ([BYBIT_LINEAR, BYBIT_LINEAR], "BYBIT", "bybit-linear"),
        ([BYBIT_SPOT], "BYBIT", "bybit-spot"),
        ([], "BYBIT", "bybit"),
        ([], "COINBASE", "coinbase"),
        ([], "NOPE", None),
        (["wss://advanced-trade-ws.coinbase.com"], "COINBASE", "coinbase"),
        (["wss://ws-feed.exchange.coinbase.com"], "COINBASEPRO", "coinbase-exchange"),
        (["wss://ws.okx.com:8443/ws/v5/public", BYBIT_SPOT], "X", None),
    ],
)
def test_detect_venue_of_cryptofeed_jsonl(
    tmp_path: Path, addrs: list[str], exchange: str, venue: str | None
) -> None:
    lines = [cf2(t="header", format=2, exchange=exchange, config={})]
    lines += [cf2(t="connect", conn=f"X.ws.{i}", ts=i, addr=a) for i, a in enumerate(addrs)]
    lines.append(cf2(t="recv", conn="X.ws.0", ts=9, data="{}"))
    assert detect_venue(write(tmp_path / "X.jsonl", lines)) == venue
