"""The registry: detection and its errors, repeated reading, purity of the capture package,
and every real capture read as recorded."""

from __future__ import annotations

import ast
import gzip
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import gateway.capture
from gateway.capture import CaptureFormat
from gateway.capture import CaptureFormatError
from gateway.capture import CaptureReader
from gateway.capture import connection_venue
from gateway.capture import detect_format
from gateway.capture import detect_venue

from .samples import DIFF
from .samples import write_gz


def test_reader_can_be_iterated_twice(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "btcusdt_20240808.gz", [b"1 " + DIFF % (1, 2)])
    reader = CaptureReader(path)
    assert list(reader) == list(reader)
    assert reader.stats.records == 1


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"# a markdown file\n", "unrecognised capture format"),
        (b'{"stream":"btcusdt@depth","data":{}}\n', "unrecognised capture format"),
        # mtime=0: the same bytes, so the same test id, in every process (xdist compares ids).
        (gzip.compress(b'{"type":"l2update"}\n', mtime=0), "unrecognised capture format"),
        (b"\x1f\x8bnot really gzip", "gzip data is unreadable"),
    ],
)
def test_detect_format_errors_name_the_path_and_what_was_expected(
    tmp_path: Path, content: bytes, match: str
) -> None:
    path = tmp_path / "capture.bin"
    path.write_bytes(content)
    with pytest.raises(CaptureFormatError, match=match) as info:
        detect_format(path)
    message = str(info.value)
    assert str(path) in message
    if "unrecognised" in match or "empty" in match:
        assert "expected" in message and "hftbacktest" in message and "cryptofeed" in message


def test_detect_format_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.gz"
    with pytest.raises(CaptureFormatError, match="cannot read") as info:
        CaptureReader(path)
    assert str(path) in str(info.value)


def test_zstd_captures_are_refused_with_a_way_out(tmp_path: Path) -> None:
    path = tmp_path / "BYBIT.jsonl.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(20))
    with pytest.raises(CaptureFormatError, match="zstd") as info:
        detect_format(path)
    assert str(path) in str(info.value)


# --- layering -----------------------------------------------------------------------------


def test_capture_modules_import_no_event_loop_or_network() -> None:
    package = Path(gateway.capture.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert {"registry.py", "hftbacktest.py", "mdgateway.py", "venues.py"} <= {
        m.name for m in modules
    }
    for module in modules:
        imported: set[str] = set()
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"asyncio", "websockets", "socket", "ssl", "selectors", "rich"}, (
            module.name
        )


@pytest.mark.parametrize(
    ("relpath", "fmt", "venue", "counts"),
    [
        (
            "bybit/cryptofeed/BYBIT.jsonl.gz",
            CaptureFormat.CRYPTOFEED_JSONL,
            "bybit",
            {
                ("rest", -1): 2,
                ("connect", 0): 1,
                ("ws", 0): 2546,
                ("connect", 1): 1,
                ("ws", 1): 681,
            },
        ),
        (
            "coinbase/cryptofeed/COINBASE.jsonl.gz",
            CaptureFormat.CRYPTOFEED_JSONL,
            "coinbase",
            {("rest", -1): 1, ("connect", 0): 1, ("ws", 0): 1030},
        ),
        (
            "bybit/nautilus_trader/xrpusdt-ob500.data.zip",
            CaptureFormat.BYBIT_HISTORY,
            "bybit-linear",
            {("ws", 0): 50},
        ),
        ("kraken/flashbook/live-btc-eth.ndjson", CaptureFormat.NDJSON, "kraken", {("ws", 0): 3000}),
        (
            "coinbase/flashbook/live-btc-eth.ndjson",
            CaptureFormat.NDJSON,
            "coinbase-exchange",
            {("ws", 0): 2456},
        ),
    ],
)
def test_real_captures(
    real_data: Callable[[str], Path],
    relpath: str,
    fmt: CaptureFormat,
    venue: str,
    counts: dict[tuple[str, int], int],
) -> None:
    path = real_data(relpath)
    assert detect_format(path) is fmt
    assert detect_venue(path) == venue
    reader = CaptureReader(path)
    recs = list(reader)
    assert Counter((r.kind, r.conn_id) for r in recs) == counts
    times = [r.recv_ns for r in recs]
    assert times == sorted(times)
    assert (reader.stats.malformed, reader.stats.truncated) == (0, False)
    urls = {r.conn_id: r.url for r in recs if r.kind == "connect"}
    if fmt is CaptureFormat.CRYPTOFEED_JSONL and venue == "bybit":
        assert {c: connection_venue(u) for c, u in urls.items()} == {
            0: "bybit-linear",
            1: "bybit-spot",
        }
