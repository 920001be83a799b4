"""The replay plan and the books at the replay's position, without an event loop: grouping,
fan-out, order, speed, REST lookup, REST and in-band snapshots rebuilt at a position."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from feeds import bybit
from feeds import okx
from feeds.sim import binance_spot
from feeds.sim import bybit as sim_bybit
from feeds.sim import okx as sim_okx
from feeds.sim.replay_book import request_op
from feeds.sim.replay_plan import ReplayFrame
from feeds.sim.replay_plan import build_plan
from feeds.sim.replay_plan import due_count
from feeds.sim.replay_plan import due_s
from feeds.sim.replay_plan import endpoint_layout
from feeds.sim.replay_plan import parse_speed
from feeds.sim.replay_plan import route_of
from gateway.capture import REST_CONN_ID
from gateway.capture import CaptureRecord
from gateway.capture import inline_snapshot_url
from gateway.core.model import DepthSnapshot

_WS_URL = "wss://x/ws"


def _connect(ns: int, conn: int, url: str = _WS_URL) -> CaptureRecord:
    return CaptureRecord(ns, conn, "connect", url, b"")


def _ws(ns: int, conn: int, payload: str | bytes, url: str = _WS_URL) -> CaptureRecord:
    frame = payload.encode() if isinstance(payload, str) else payload
    return CaptureRecord(ns, conn, "ws", url, frame)


def _rest(ns: int, url: str, payload: str) -> CaptureRecord:
    return CaptureRecord(ns, REST_CONN_ID, "rest", url, payload.encode())


def test_connections_go_round_robin_and_keep_the_recorded_order_and_clock() -> None:
    records = [
        _ws(1_000, 7, "a0"),
        _ws(1_500, 3, "b0"),
        _ws(2_000, 7, "a1"),
        _connect(2_100, 9),
        _ws(2_500, 9, "c0"),
        _ws(3_000, 3, "b1"),
    ]
    plan = build_plan(records, 2)
    assert plan.connections == 3
    # Connection numbers by first frame: 7 -> 0, 3 -> 1, 9 -> 2 (endpoint 0 again).
    assert [f.payload for f in plan.endpoints[0]] == [b"a0", b"a1", b"c0"]
    assert [f.payload for f in plan.endpoints[1]] == [b"b0", b"b1"]
    # One clock: offsets from the capture's first frame, on every endpoint.
    assert [f.offset_ns for f in plan.endpoints[1]] == [500, 2_000]
    assert plan.first_ns == 1_000 and plan.duration_ns == 2_000


def test_one_connection_is_fanned_to_every_endpoint() -> None:
    plan = build_plan([_ws(10, 0, "x"), _ws(20, 0, "y")], 3)
    assert len(plan.endpoints) == 3
    assert all([f.payload for f in frames] == [b"x", b"y"] for frames in plan.endpoints)


def test_a_clock_stepping_back_never_reorders() -> None:
    plan = build_plan([_ws(10, 0, "x"), _ws(5, 0, "y"), _ws(30, 0, "z")], 1)
    assert [f.offset_ns for f in plan.endpoints[0]] == [0, 0, 20]


def test_speed_scales_the_schedule_and_bursts_are_due_together() -> None:
    frames = [
        ReplayFrame(o, o, b"") for o in (0, 0, 0, 1_000_000_000, 1_000_000_000, 3_000_000_000)
    ]
    assert due_s(1_000_000_000, 1.0) == 1.0
    assert due_s(1_000_000_000, 4.0) == 0.25
    assert due_s(1_000_000_000, None) == 0.0
    assert due_count(frames, 0, 0.0, 1.0) == 3
    assert due_count(frames, 3, 0.5, 1.0) == 0
    assert due_count(frames, 3, 1.0, 1.0) == 2
    assert due_count(frames, 3, 0.25, 4.0) == 2
    assert due_count(frames, 0, 0.0, None) == 6
    assert parse_speed("max") is None and parse_speed("2.5") == 2.5
    with pytest.raises(ValueError):
        parse_speed("0")


def test_rest_matches_exact_then_symbol_and_serves_by_replay_time() -> None:
    records = [  # in recorded order
        _rest(100, "https://api.x/api/v3/depth?symbol=BTCUSDT&limit=1000", "btc1"),
        _rest(200, "https://api.x/api/v3/depth?limit=5&symbol=ETHUSDT", "eth"),
        _rest(150, "https://api.x/api/v3/depth?symbol=BTCUSDT&limit=5", "btc5"),
        _rest(300, "https://api.x/api/v3/depth?symbol=BTCUSDT&limit=1000", "btc2"),
    ]
    rest = build_plan(records, 1).rest
    assert rest.lookup("/api/v3/depth?limit=1000&symbol=BTCUSDT", None) == b"btc1"
    assert rest.lookup("/api/v3/depth?symbol=BTCUSDT&limit=1000", 299) == b"btc1"
    assert rest.lookup("/api/v3/depth?symbol=BTCUSDT&limit=1000", 300) == b"btc2"
    assert rest.lookup("/api/v3/depth?symbol=BTCUSDT&limit=5", 10_000) == b"btc5"
    assert rest.lookup("/api/v3/depth?symbol=BTCUSDT&limit=100", 160) == b"btc5"
    assert rest.lookup("/api/v3/depth?symbol=ETHUSDT", 0) == b"eth"
    assert rest.lookup("/api/v3/depth?symbol=SOLUSDT", 0) is None
    assert rest.lookup("/other?symbol=BTCUSDT", 0) is None


def test_inline_snapshots_are_served_at_the_venue_path() -> None:
    plan = build_plan([_rest(1, inline_snapshot_url("BTCUSDT"), "s")], 1, "/api/v3/depth")
    assert plan.rest.lookup("/api/v3/depth?symbol=BTCUSDT&limit=1000", 5) == b"s"


@pytest.mark.parametrize("module", ["feeds.sim.replay_plan", "feeds.sim.replay_book"])
def test_the_plan_and_books_modules_import_no_io(module: str) -> None:
    probe = (
        f"import sys, {module}; "
        "print([m for m in ('asyncio', 'websockets', 'socket') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_without_k_each_recorded_connection_gets_its_own_endpoint() -> None:
    public_url = "ws://h:1/public/stream?streams=a"
    records = [
        _connect(1, 4, public_url),
        _connect(2, 5, "ws://h:1/market/stream?streams=a"),
        _connect(3, 6, "ws://h:2/ws"),
        _ws(10, 4, "p0"),
        _ws(11, 5, "m0"),
        _ws(12, 6, "o0"),
        _connect(13, 7, public_url),
        _ws(14, 7, "p1"),
        _ws(15, 4, "p2"),
    ]
    plan = build_plan(records, None)
    # 4 and 5 are the venue's two paths of one endpoint (h:1); 7 reconnects to h:1 while
    # 4 is still up: another endpoint.
    assert [[f.payload for f in frames] for frames in plan.endpoints] == [
        [b"p0", b"m0", b"p2"],
        [b"o0"],
        [b"p1"],
    ]
    assert [(c.conn_id, c.endpoints, c.frames) for c in plan.connections_served] == [
        (4, (0,), 2),
        (5, (0,), 1),
        (6, (1,), 1),
        (7, (2,), 1),
    ]
    assert plan.connections_served[2].url == "ws://h:2/ws"
    # Endpoint 0 serves two paths: each frame goes only to connections on its own path.
    assert [f.route for f in plan.endpoints[0]] == ["public", "market", "public"]
    assert [f.route for frames in plan.endpoints[1:] for f in frames] == ["", ""]


def test_the_route_is_the_first_path_segment() -> None:
    assert route_of("ws://h:1/public/stream?streams=a") == "public"
    assert route_of("/market/stream?streams=a") == "market"
    assert route_of("ws://h:1") == route_of("/?x=1") == ""


def test_the_endpoint_layout_without_urls_gives_each_its_own() -> None:
    assert endpoint_layout(["", "", "ws://a/x", "ws://a/y", "ws://a/x", ""]) == [0, 1, 2, 2, 3, 4]


def test_one_connection_is_one_endpoint_without_k_and_k_with_it() -> None:
    assert len(build_plan([_ws(10, 0, "x")], None).endpoints) == 1
    plan = build_plan([_ws(10, 0, "x")], 2)
    assert plan.connections_served[0].endpoints == (0, 1)
    assert build_plan([_ws(10, 0, "x"), _ws(11, 1, "y")], 1).connections_served[1].endpoints == (0,)


# --- the books at the replay's position (feeds.sim.replay_book) -----------------------------


def _binance_session() -> list[CaptureRecord]:
    """A Binance spot session: an inline REST snapshot at id 100, then diffs 101-102,
    103-105 (bid 10 goes), 106-106 (ask 12 at 3)."""
    return [
        _rest(
            1_000,
            inline_snapshot_url("BTCUSDT"),
            binance_spot.snapshot_body(100, [("10", "1"), ("9", "2")], [("11", "1")]).decode(),
        ),
        _ws(2_000, 0, binance_spot.depth_frame("btcusdt", 101, 102, [("9", "5")], [], 2)),
        _ws(3_000, 0, binance_spot.depth_frame("btcusdt", 103, 105, [("10", "0")], [], 3)),
        _ws(4_000, 0, binance_spot.depth_frame("btcusdt", 106, 106, [], [("12", "3")], 4)),
    ]


def _rest_book(body: bytes | None) -> tuple[int, list[list[str]], list[list[str]]]:
    assert body is not None
    answer = msgspec.json.decode(body)
    return answer["lastUpdateId"], answer["bids"], answer["asks"]


def test_the_replay_serves_the_book_at_its_position_with_its_last_update_id() -> None:
    plan = build_plan(_binance_session(), 1, "/api/v3/depth", default_venue="binance")
    books = plan.books
    assert [frame.record for frame in plan.endpoints[0]] == [1, 2, 3]
    assert books.venue_of(plan.endpoints[0][0].record) == "binance"
    target = "/api/v3/depth?symbol=BTCUSDT&limit=1000"
    assert books.rest_answer(target, 0) is None, "no book before the snapshot"
    books.advance(plan.endpoints[0][1].record + 1)  # the first two diffs sent
    assert _rest_book(books.rest_answer(target, 0)) == (105, [["9", "5"]], [["11", "1"]])
    books.advance(len(books))
    assert _rest_book(books.rest_answer(target, 0)) == (
        106,
        [["9", "5"]],
        [["11", "1"], ["12", "3"]],
    )
    assert _rest_book(books.rest_answer("/api/v3/depth?symbol=BTCUSDT&limit=1", 0))[2] == [
        ["11", "1"]
    ]
    assert books.rest_answer("/api/v3/depth?symbol=ETHUSDT", 0) is None
    assert books.rest_answer("/api/v3/trades?symbol=BTCUSDT", 0) is None


def test_a_position_behind_starts_the_rebuild_over_and_a_budget_bounds_each_call() -> None:
    books = build_plan(_binance_session(), 1, "/api/v3/depth", default_venue="binance").books
    books.advance(len(books))
    assert books.position == 4
    assert not books.advance(3, budget=2), "two records fed, one to go"
    assert books.position == 2
    assert books.advance(3, budget=2) and books.position == 3
    target = "/api/v3/depth?symbol=BTCUSDT"
    assert _rest_book(books.rest_answer(target, 0))[0] == 105


def _bybit_session() -> list[CaptureRecord]:
    """A Bybit linear connection: its snapshot (u 7) and one delta (u 8)."""
    topic = "orderbook.200.BTCUSDT"
    url = "wss://stream.bybit.com/v5/public/linear"
    snapshot = sim_bybit.book_frame(
        topic, "snapshot", "BTCUSDT", [("10", "1"), ("9", "2")], [("11", "1")], 7, 70, 1
    )
    delta = sim_bybit.book_frame(topic, "delta", "BTCUSDT", [("10", "0")], [], 8, 80, 2)
    return [_connect(1_000, 4, url), _ws(2_000, 4, snapshot, url), _ws(3_000, 4, delta, url)]


def test_a_bybit_subscribe_is_answered_with_an_in_band_snapshot_at_the_position() -> None:
    books = build_plan(_bybit_session(), 1).books
    assert books.venue_of(2) == "bybit-linear"
    subscribe = bybit.subscribe_messages(["BTCUSDT"])[0]
    books.advance(len(books))
    [frame] = books.in_band_answer("bybit-linear", subscribe, 5_000_000)
    [snapshot] = bybit.parse_linear(frame, 0, 0)
    assert isinstance(snapshot, DepthSnapshot)
    assert snapshot.last_id == 8
    assert snapshot.bids == (("9", "2"),) and snapshot.asks == (("11", "1"),)
    assert books.in_band_answer("okx", subscribe, 0) == [], "not a book of that venue"
    assert books.in_band_answer("bybit-linear", b'{"op":"ping"}', 0) == []


def test_a_capture_without_connects_has_its_book_from_its_first_frame() -> None:
    """Bybit's history files record no connection: their first frame, the snapshot, makes
    a live book at once (its connection up from that frame), which a subscribe gets."""
    records = [r for r in _bybit_session() if r.kind == "ws"]
    books = build_plan(records, 1).books
    books.advance(1)  # the snapshot only
    subscribe = bybit.subscribe_messages(["BTCUSDT"])[0]
    [frame] = books.in_band_answer("bybit-linear", subscribe, 5_000_000)
    [snapshot] = bybit.parse_linear(frame, 0, 0)
    assert isinstance(snapshot, DepthSnapshot) and snapshot.last_id == 7


def test_an_okx_subscribe_is_answered_with_a_snapshot_push_its_parser_accepts() -> None:
    url = "wss://ws.okx.com:8443/ws/v5/public"
    bids, asks = [("10.0", "1")], [("11.0", "2")]
    crc = okx.checksum(bids, asks)
    snapshot = sim_okx.book_frame("BTC-USDT", "snapshot", bids, asks, 1, crc, -1, 50)
    books = build_plan([_connect(1_000, 0, url), _ws(2_000, 0, snapshot, url)], 1).books
    books.advance(len(books))
    subscribe = okx.subscribe_messages(["BTC-USDT"])[0]
    [frame] = books.in_band_answer("okx", subscribe, 5_000_000)
    [parsed] = [e for e in okx.parse(frame, 0, 0) if isinstance(e, DepthSnapshot)]
    assert (parsed.last_id, parsed.bids, parsed.asks) == (50, tuple(bids), tuple(asks))
    assert parsed.checksum == crc


def test_request_ops_are_told_from_any_other_message() -> None:
    assert request_op(b'{"op":"subscribe","args":[]}') == "subscribe"
    assert request_op('{"op":"unsubscribe"}') == "unsubscribe"
    assert request_op("ping") is None
    assert request_op(b'{"op":') is None
    assert request_op(b'{"method":"SUBSCRIBE"}') is None
