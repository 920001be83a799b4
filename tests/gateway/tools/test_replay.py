"""``mdgateway replay``: the notice sent on request is the one the capture's venue adapter
declares, and reads back as a reconnect request; each recorded connection on an endpoint of
its own, the table and the written config; consecutive files as one session; progress."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from feeds.sim import bybit as sim_bybit
from feeds.sim.replay_plan import build_plan
from gateway.capture import CaptureRecord
from gateway.capture import codec as mdgw
from gateway.capture import inline_snapshot_url
from gateway.capture.records import rest_record
from gateway.core.model import VenueNotice
from gateway.tools.replay import _File
from gateway.tools.replay import _missing_snapshots
from gateway.tools.replay import _notice_frame
from gateway.tools.replay import _numbered
from gateway.tools.replay import _show_progress
from gateway.tools.replay import _venue_endpoints
from gateway.tools.replay import endpoint_table
from gateway.tools.replay import gateway_config
from gateway.tools.replay import load_plan
from gateway.tools.replay import load_session
from gateway.tools.replay import progress_line
from gateway.tools.replay import quiet_rebuild_logs
from gateway.wire.config import ConfigError
from gateway.wire.config import parse_config
from gateway.wire.venues import ADAPTERS

SPOT_DIFF = (
    b'{"stream":"btcusdt@depth@100ms","data":'
    b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}}'
)
USDM_DIFF = SPOT_DIFF.replace(b'"U":', b'"pu":0,"U":')
OKX_FRAME = b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[]}'
KRAKEN_FRAME = b'{"channel":"status","type":"update","data":[]}'


@pytest.mark.parametrize(
    ("frame", "venue"),
    [(SPOT_DIFF, "binance"), (USDM_DIFF, "binance-usdm"), (OKX_FRAME, "okx")],
)
def test_the_notice_is_the_venues_and_asks_to_reconnect(
    tmp_path: Path, frame: bytes, venue: str
) -> None:
    path = tmp_path / "frames.ndjson"
    path.write_bytes(frame + b"\n")
    notice = _notice_frame(path)
    assert notice is not None
    events = ADAPTERS[venue].parse(notice(), 1, 0)
    assert len(events) == 1 and isinstance(events[0], VenueNotice)
    assert events[0].reconnect


def test_a_venue_without_a_notice_gets_none(tmp_path: Path) -> None:
    path = tmp_path / "frames.ndjson"
    path.write_bytes(KRAKEN_FRAME + b"\n")
    assert _notice_frame(path) is None
    assert _notice_frame(tmp_path / "missing.ndjson") is None


def test_the_notices_are_the_venues_wire_bytes() -> None:
    binance = ADAPTERS["binance"].notice_frame
    okx = ADAPTERS["okx"].notice_frame
    assert binance is not None and okx is not None
    assert binance(1_770_123_456_789_999_999) == (
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}'
    )
    assert okx(0) == (
        b'{"event":"notice","code":"64008","msg":"The connection will soon be closed for a '
        b'service upgrade. Please reconnect.","connId":"sim"}'
    )


# --- sessions, endpoint layout, table and config ------------------------------------------

SPOT_URL = "ws://127.0.0.1:9001/stream?streams=btcusdt@depth@100ms"
OKX_URL = "ws://127.0.0.1:9002/ws/v5/public"
OKX_BOOK = (
    b'{"arg":{"channel":"books","instId":"ETH-USDT"},"action":"update","data":'
    b'[{"asks":[],"bids":[],"ts":"1","checksum":0,"seqId":2,"prevSeqId":1}]}'
)


def _spot_diff(first: int) -> bytes:
    return SPOT_DIFF.replace(b'"U":1,"u":2', b'"U":%d,"u":%d' % (first, first))


def _two_venue_capture(directory: Path) -> Path:
    """An mdgateway capture: two Binance connections, one OKX connection, one REST
    snapshot; loopback URLs, so each connect line names its venue."""
    lines = [
        mdgw.encode_line(1_000, "connect", 0, SPOT_URL, b'{"venue":"binance"}'),
        mdgw.encode_line(1_001, "connect", 1, SPOT_URL, b'{"venue":"binance"}'),
        mdgw.encode_line(1_002, "connect", 2, OKX_URL, b'{"venue":"okx"}'),
        mdgw.encode_line(
            1_003,
            "rest",
            -1,
            "http://127.0.0.1:9003/api/v3/depth?symbol=BTCUSDT&limit=1000",
            b'{"lastUpdateId":1,"bids":[],"asks":[]}',
        ),
        mdgw.encode_line(2_000, "ws", 0, SPOT_URL, _spot_diff(2)),
        mdgw.encode_line(2_001, "ws", 1, SPOT_URL, _spot_diff(2)),
        mdgw.encode_line(2_002, "ws", 2, OKX_URL, OKX_BOOK),
        mdgw.encode_line(3_000, "ws", 0, SPOT_URL, _spot_diff(3)),
    ]
    writer = mdgw.CaptureFileWriter(directory)
    writer.write(lines, now_ns=4_000, now_s=0.0)
    writer.close()
    return directory


def test_each_recorded_connection_gets_an_endpoint_named_in_the_table(tmp_path: Path) -> None:
    session = load_session([_two_venue_capture(tmp_path / "cap")], None)
    plan = session.plan
    assert len(plan.endpoints) == 3 and plan.connections == 3
    assert [len(frames) for frames in plan.endpoints] == [2, 1, 1]
    assert session.venue_of == {0: "binance", 1: "binance", 2: "okx"}
    assert session.symbols == {"binance": {"BTCUSDT"}, "okx": {"ETH-USDT"}}
    urls = ["ws://127.0.0.1:7000", "ws://127.0.0.1:7001", "ws://127.0.0.1:7002"]
    assert endpoint_table(session, urls) == [
        (urls[0], "binance", f"#0 {SPOT_URL}"),
        (urls[1], "binance", f"#1 {SPOT_URL}"),
        (urls[2], "okx", f"#2 {OKX_URL}"),
    ]
    # --endpoints K keeps dealing the connections round-robin.
    assert len(load_session([tmp_path / "cap"], 2).plan.endpoints) == 2


def test_a_connection_told_only_by_its_first_frame_is_replayed_as_that_venue(
    tmp_path: Path,
) -> None:
    # The capture names Binance (its one connect naming a venue); the other connection's
    # connect names none, on a loopback URL: its first frame shows OKX, as verify reads it.
    lines = [
        mdgw.encode_line(1_000, "connect", 0, SPOT_URL, b'{"venue":"binance"}'),
        mdgw.encode_line(1_001, "connect", 1, OKX_URL, b""),
        mdgw.encode_line(2_000, "ws", 0, SPOT_URL, _spot_diff(2)),
        mdgw.encode_line(2_001, "ws", 1, OKX_URL, OKX_BOOK),
    ]
    writer = mdgw.CaptureFileWriter(tmp_path / "cap")
    writer.write(lines, now_ns=3_000, now_s=0.0)
    writer.close()
    session = load_session([tmp_path / "cap"], None)
    assert session.venue_of == {0: "binance", 1: "okx"}
    assert session.symbols == {"binance": {"BTCUSDT"}, "okx": {"ETH-USDT"}}
    urls = ["ws://127.0.0.1:7000", "ws://127.0.0.1:7001"]
    assert [venue for _, venue, _ in endpoint_table(session, urls)] == ["binance", "okx"]
    # The books the replay answers snapshots from read each frame as the same venue.
    books = session.plan.books
    assert [books.venue_of(frames[0].record) for frames in session.plan.endpoints] == [
        "binance",
        "okx",
    ]


def test_the_written_config_points_every_venue_at_its_endpoints(tmp_path: Path) -> None:
    session = load_session([_two_venue_capture(tmp_path / "cap")], None)
    urls = ["ws://127.0.0.1:7000", "ws://127.0.0.1:7001", "ws://127.0.0.1:7002"]
    text, left_out = gateway_config(session, urls, "http://127.0.0.1:7003")
    assert left_out == [] and _missing_snapshots(session) == []
    config = parse_config(text)
    venues = {v.venue: v for v in config.venues}
    assert venues["binance"].symbols == ["BTCUSDT"]
    assert venues["binance"].endpoints == urls[:2]
    assert venues["binance"].rest == ["http://127.0.0.1:7003"]
    # OKX's snapshots come in band: no REST base, so the gateway never asks the replay. Its
    # endpoint keeps the path the recorded connection was opened on.
    assert venues["okx"].endpoints == [urls[2] + "/ws/v5/public"] and venues["okx"].rest == []
    assert venues["okx"].symbols == ["ETH-USDT"]


def test_a_venue_without_symbols_is_left_out_and_none_at_all_is_an_error(
    tmp_path: Path,
) -> None:
    session = load_session([_two_venue_capture(tmp_path / "cap")], None)
    urls = ["ws://127.0.0.1:7000", "ws://127.0.0.1:7001", "ws://127.0.0.1:7002"]
    del session.symbols["okx"]
    text, left_out = gateway_config(session, urls, "http://127.0.0.1:7003")
    assert [v.venue for v in parse_config(text).venues] == ["binance"]
    assert len(left_out) == 1 and "okx" in left_out[0]
    session.symbols.clear()
    with pytest.raises(ConfigError, match="no venue"):
        gateway_config(session, urls, "http://127.0.0.1:7003")


def _hft_file(path: Path, first_ns: int, ids: range) -> Path:
    lines = [b"%d %s" % (first_ns + i, _spot_diff(u)) for i, u in enumerate(ids)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_an_inline_snapshot_is_the_files_venue_and_served_at_its_snapshot_path() -> None:
    # Bybit's spot and linear snapshots share one path: the served path would tell spot.
    snapshot = rest_record(1_000, inline_snapshot_url("XRPUSDT"), b"{}")
    file = _File(Path("xrpusdt"), "bybit-linear", [snapshot])
    ((record, venue),) = list(_numbered(0, [file], {}, {}))
    assert record.url == ADAPTERS["bybit-linear"].snapshot_paths[0] + "?symbol=XRPUSDT"
    assert venue is ADAPTERS["bybit-linear"]


def test_consecutive_files_are_one_session_and_overlapping_ones_side_by_side(
    tmp_path: Path,
) -> None:
    a = _hft_file(tmp_path / "btcusdt_20240808", 100, range(2, 5))
    b = _hft_file(tmp_path / "btcusdt_20240809", 200, range(5, 7))
    chained = load_session([a, b], None)
    assert chained.plan.connections == 1 and len(chained.plan.endpoints) == 1
    assert [f.recv_ns for f in chained.plan.endpoints[0]] == [100, 101, 102, 200, 201]
    assert chained.joins == ["btcusdt_20240809: continues btcusdt_20240808 (one session)"]
    # The same connection in both: fanned out to K endpoints as one connection is.
    assert len(load_session([a, b], 3).plan.endpoints) == 3
    # No file holds the REST snapshot these Binance books need: said at start.
    assert "no REST snapshot" in _missing_snapshots(chained)[0]
    beside = load_session([b, a], None)
    assert beside.plan.connections == 2 and len(beside.plan.endpoints) == 2
    assert "replayed beside it" in beside.joins[0]


class _FakeServer:
    def __init__(self) -> None:
        self.finished = asyncio.Event()
        self.finished.set()
        self.frames_sent = [10, 20]
        self.replay_ns = 2_000_000_000 + 1_000


def test_progress_shows_time_replayed_frames_and_rate() -> None:
    assert progress_line(1_500_000_000, 60_000_000_000, 12_345, 1234.4) == (
        "replayed 1.5 s of 60.0 s, 12,345 frames, 1,234 frames/s"
    )
    assert progress_line(None, 60_000_000_000, 0, 0.0) == (
        "waiting for a connection (60.0 s to replay)"
    )
    plan = build_plan([_ws_record(1_000), _ws_record(4_000_001_000)], None)
    out = io.StringIO()
    asyncio.run(_show_progress(_FakeServer(), plan, out))  # type: ignore[arg-type]
    assert out.getvalue().startswith("\rreplayed 2.0 s of 4.0 s, 30 frames, ")
    assert out.getvalue().endswith("\n")


def _ws_record(recv_ns: int) -> CaptureRecord:
    return CaptureRecord(recv_ns, 0, "ws", "", b"{}")


def test_a_real_session_split_in_two_replays_as_the_whole_file(
    real_data: Callable[[str], Path], tmp_path: Path
) -> None:
    whole = real_data("binance/hftbacktest/spot/btcusdt_20240808.gz")
    with gzip.open(whole, "rb") as f:
        lines = f.readlines()
    first, later = tmp_path / "btcusdt_20240808.gz", tmp_path / "btcusdt_20240809.gz"
    with gzip.open(first, "wb", compresslevel=1) as f:  # level 9 takes seconds
        f.writelines(lines[:12_345])
    with gzip.open(later, "wb", compresslevel=1) as f:
        f.writelines(lines[12_345:])
    expected = load_plan([whole], 3)
    got = load_session([first, later], 3)
    assert got.joins == ["btcusdt_20240809.gz: continues btcusdt_20240808.gz (one session)"]
    assert got.plan.endpoints == expected.endpoints
    assert got.plan.connections == expected.connections == 1
    target = "/api/v3/depth?symbol=BTCUSDT&limit=1000"
    assert got.plan.rest.lookup(target, None) == expected.rest.lookup(target, None) is not None


def test_a_futures_venue_is_configured_on_its_book_path_and_derives_its_trade_path() -> None:
    rows = [
        ("ws://127.0.0.1:7000", "ws://127.0.0.1:9001/public/stream?streams=btcusdt@depth@100ms"),
        ("ws://127.0.0.1:7000", "ws://127.0.0.1:9001/market/stream?streams=btcusdt@aggTrade"),
        ("ws://127.0.0.1:7001", "ws://127.0.0.1:9002/public/stream?streams=btcusdt@depth@100ms"),
    ]
    assert _venue_endpoints(ADAPTERS["binance-usdm"], ["BTCUSDT"], rows) == [
        "ws://127.0.0.1:7000/public",
        "ws://127.0.0.1:7001/public",
    ]
    spot = [("ws://127.0.0.1:7002", "ws://127.0.0.1:9003/stream?streams=btcusdt@depth@100ms")]
    assert _venue_endpoints(ADAPTERS["binance"], ["BTCUSDT"], spot) == ["ws://127.0.0.1:7002"]


def test_the_books_rebuilt_to_answer_snapshots_log_no_warning_of_the_replay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The replay rebuilds the capture's books with the gateway's pipeline: the recorded
    disconnect at its end makes them stale there, which is news of no gateway, so the
    replay's stderr does not say it (the books still answer as before)."""
    topic, url = "orderbook.200.BTCUSDT", "wss://stream.bybit.com/v5/public/linear"
    snapshot = sim_bybit.book_frame(
        topic, "snapshot", "BTCUSDT", [("10", "1")], [("11", "1")], 7, 70, 1
    )
    records = [
        CaptureRecord(1_000, 4, "connect", url, b""),
        CaptureRecord(2_000, 4, "ws", url, snapshot),
        CaptureRecord(3_000, 4, "disconnect", url, b""),
    ]
    books = build_plan(records, 1).books
    core = logging.getLogger("gateway.core")
    level = core.level
    try:
        quiet_rebuild_logs()
        with caplog.at_level(logging.INFO):
            books.advance(len(books))
    finally:
        core.setLevel(level)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
