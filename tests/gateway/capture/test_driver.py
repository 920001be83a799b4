"""The capture driver as a core, without an event loop: records to venues (the router's
table), records to pipeline calls (spied pipelines), and books rebuilt from records."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.sim import binance_spot
from feeds.sim import bybit as sim_bybit
from feeds.sim import okx as sim_okx
from gateway.capture import REST_CONN_ID
from gateway.capture import CaptureRecord
from gateway.capture import RecordKind
from gateway.capture import inline_snapshot_url
from gateway.capture.driver import RecordDriver
from gateway.capture.driver import VenueRouter
from gateway.core.model import SymbolState
from gateway.core.model import VenueContractError
from gateway.core.pipeline import Step
from gateway.core.pipeline import VenuePipeline
from gateway.wire.venues import ADAPTERS

BINANCE_URL = "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms"
OKX_URL = "wss://ws.okx.com:8443/ws/v5/public"
LOOPBACK = "ws://127.0.0.1:9441/ws"
BINANCE_FRAME = binance_spot.depth_frame("btcusdt", 101, 102, [("9", "5")], [], 2)
OKX_FRAME = sim_okx.book_frame("BTC-USDT", "snapshot", [("10", "1")], [("11", "1")], 1, 0, -1, 5)
BYBIT_FRAME = sim_bybit.book_frame(
    "orderbook.200.BTCUSDT", "snapshot", "BTCUSDT", [("10", "1")], [("11", "1")], 7, 70, 1
)


def connect(conn: int, url: str, payload: bytes = b"", ns: int = 0) -> CaptureRecord:
    return CaptureRecord(ns, conn, "connect", url, payload)


def disconnect(conn: int, url: str = "", ns: int = 0) -> CaptureRecord:
    return CaptureRecord(ns, conn, "disconnect", url, b"")


def ws(conn: int, frame: bytes, url: str = "", ns: int = 0) -> CaptureRecord:
    return CaptureRecord(ns, conn, "ws", url, frame)


def rest(url: str, body: bytes = b"{}", ns: int = 0) -> CaptureRecord:
    return CaptureRecord(ns, REST_CONN_ID, "rest", url, body)


# --- which venue each record belongs to ---------------------------------------------------

#: (default venue, forced, records, the venue of each record).
ROUTES: list[tuple[str | None, bool, list[CaptureRecord], list[str | None]]] = [
    # A connect's URL tells its connection's venue; its frames (no URL) follow it.
    (None, False, [connect(1, OKX_URL), ws(1, b"?"), disconnect(1)], ["okx", "okx", "okx"]),
    # A loopback URL: the venue the project's own connect payload names.
    ("binance", False, [connect(1, LOOPBACK, b'{"venue":"okx"}'), ws(1, b"?")], ["okx"] * 2),
    # A connect naming none: told by its first frame's shape, not the default.
    ("binance", False, [connect(1, LOOPBACK), ws(1, OKX_FRAME), ws(1, b"?")], [None, "okx", "okx"]),
    # No connect record: the frame's URL, else its shape, else the default.
    (None, False, [ws(1, b"?", OKX_URL), ws(2, BINANCE_FRAME)], ["okx", "binance"]),
    ("kraken", False, [ws(1, b"?"), ws(1, BINANCE_FRAME)], ["kraken", "kraken"]),
    (None, False, [ws(1, b"?"), ws(1, OKX_FRAME)], [None, "okx"]),
    # An exchange's frames (Bybit's do not tell the market): the default when one of its
    # markets, else the exchange's first.
    ("bybit-linear", False, [ws(1, BYBIT_FRAME)], ["bybit-linear"]),
    ("binance", False, [ws(1, BYBIT_FRAME)], ["bybit-spot"]),
    # A connection id used again: the new connect's venue.
    (
        None,
        False,
        [connect(1, OKX_URL), connect(1, BINANCE_URL), ws(1, b"?")],
        ["okx", *["binance"] * 2],
    ),
    # A disconnect of a connection not told: its URL's venue, else the default; not kept.
    ("kraken", False, [disconnect(1, OKX_URL), ws(1, b"?")], ["okx", "kraken"]),
    # REST: the URL's venue, else the venue whose snapshot path the path ends with (a base
    # with a path of its own too), else the default (the inline scheme, other paths).
    (
        "kraken",
        False,
        [
            rest("https://api.binance.com/api/v3/depth?symbol=BTCUSDT"),
            rest("http://127.0.0.1:9/fapi/v1/depth?symbol=BTCUSDT"),
            rest("http://127.0.0.1:9/proxy/api/v5/market/books?instId=BTC-USDT"),
            rest(inline_snapshot_url("BTCUSDT")),
            rest("http://127.0.0.1:9/api/v3/exchangeInfo"),
        ],
        ["binance", "binance-usdm", "okx", "kraken", "kraken"],
    ),
    # Forced (verify --venue): every record is the default's, whatever it shows.
    (
        "binance",
        True,
        [connect(1, OKX_URL), ws(2, OKX_FRAME), rest("https://www.okx.com/api/v5/market/books")],
        ["binance"] * 3,
    ),
]


@pytest.mark.parametrize(("default", "forced", "records", "venues"), ROUTES)
def test_each_record_goes_to_the_venue_the_rule_gives(
    default: str | None,
    forced: bool,
    records: list[CaptureRecord],
    venues: list[str | None],
) -> None:
    router = VenueRouter(ADAPTERS[default] if default else None, forced=forced)
    got = [router.venue_of(record) for record in records]
    assert [a.venue if a is not None else None for a in got] == venues


def test_a_forced_venue_needs_a_default() -> None:
    with pytest.raises(ValueError, match="default"):
        VenueRouter(None, forced=True)


KINDS: list[RecordKind] = ["ws", "connect", "disconnect"]


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(KINDS)),
        max_size=40,
    )
)
def test_a_connection_keeps_the_venue_its_connect_named(
    events: list[tuple[int, RecordKind]],
) -> None:
    """Connections 0-3 open to Binance, OKX, Binance, OKX; whatever the interleaving (frames
    that tell nothing, disconnects without URL, connects again), every record of a connection
    is its venue's, the default never."""
    urls = [BINANCE_URL, OKX_URL, BINANCE_URL, OKX_URL]
    router = VenueRouter(ADAPTERS["kraken"])
    for conn in range(4):
        router.venue_of(connect(conn, urls[conn]))
    for conn, kind in events:
        record = CaptureRecord(0, conn, kind, urls[conn] if kind == "connect" else "", b"?")
        adapter = router.venue_of(record)
        assert adapter is not None and adapter.venue == ("binance", "okx")[conn % 2]


# --- records to pipeline calls ------------------------------------------------------------

Call = tuple[str, ...]


class SpyPipeline(VenuePipeline):
    """Notes each call as ``(venue, what, args...)`` in a list shared by every spy."""

    def __init__(self, venue: str, calls: list[Call]) -> None:
        super().__init__(ADAPTERS[venue], None)
        self.name = venue
        self.calls = calls
        self.armed = False

    @property
    def timer_armed(self) -> bool:
        return self.armed

    def on_timer(self, now_ns: int) -> Step:
        self.calls.append((self.name, "timer", str(now_ns)))
        return Step([], [])

    def receive_frame(self, conn_id: int, raw: bytes, recv_ns: int, now_ns: int) -> Step:
        self.calls.append((self.name, "frame", str(conn_id), raw.decode()))
        return Step([], [])

    def receive_connection(self, conn_id: int, up: bool, now_ns: int, reason: str = "") -> Step:
        self.calls.append((self.name, "up" if up else "down", str(conn_id)))
        return Step([], [])

    def receive_rest(self, symbol: str, body: bytes, recv_ns: int, now_ns: int) -> Step:
        self.calls.append((self.name, "rest", symbol))
        return Step([], [])

    def reject_frame(self, conn_id: int, raw: bytes, exc: VenueContractError) -> None:
        self.calls.append((self.name, "bad", str(exc)))


def spied(
    default: str, venues: Sequence[str] | None = None
) -> tuple[VenueRouter, RecordDriver, list[Call]]:
    calls: list[Call] = []
    driver = RecordDriver(venues=venues)
    driver.pipelines.update({name: SpyPipeline(name, calls) for name in ("binance", "okx")})
    return VenueRouter(ADAPTERS[default]), driver, calls


def drive(router: VenueRouter, driver: RecordDriver, records: list[CaptureRecord]) -> None:
    for record in records:
        driver.feed(record, router.venue_of(record))


#: (records, the pipeline calls they make), with the default venue binance.
CALLS: list[tuple[list[CaptureRecord], list[Call]]] = [
    # No connect record: up from the first frame, once.
    (
        [ws(1, b"a"), ws(1, b"b")],
        [("binance", "up", "1"), ("binance", "frame", "1", "a"), ("binance", "frame", "1", "b")],
    ),
    # A connect, its frame, its end: to the venue's pipeline, no second up.
    (
        [connect(1, OKX_URL), ws(1, b"a"), disconnect(1)],
        [("okx", "up", "1"), ("okx", "frame", "1", "a"), ("okx", "down", "1")],
    ),
    # A connect naming no venue is not fed: its connection is up from its first frame.
    (
        [connect(1, OKX_URL), connect(1, LOOPBACK), ws(1, b"x")],
        [("okx", "up", "1"), ("binance", "up", "1"), ("binance", "frame", "1", "x")],
    ),
    # REST depth snapshots: the inline scheme, a venue path (a base with a path too), the
    # symbol of `symbol` or `instId`; a snapshot naming none is a counted bad frame; any
    # other REST call is not fed.
    (
        [
            rest(inline_snapshot_url("BTCUSDT")),
            rest("https://api.binance.com/api/v3/depth?symbol=ETHUSDT&limit=1000"),
            rest("http://127.0.0.1:9/binance/api/v3/depth?symbol=LTCUSDT"),
            rest("https://www.okx.com/api/v5/market/books?instId=BTC-USDT&sz=400"),
            rest("https://api.binance.com/api/v3/depth?limit=1000"),
            rest("https://api.binance.com/api/v3/exchangeInfo?symbol=BTCUSDT"),
        ],
        [
            ("binance", "rest", "BTCUSDT"),
            ("binance", "rest", "ETHUSDT"),
            ("binance", "rest", "LTCUSDT"),
            ("okx", "rest", "BTC-USDT"),
            ("binance", "bad", "REST snapshot URL names no symbol"),
        ],
    ),
]


@pytest.mark.parametrize(("records", "calls"), CALLS)
def test_records_make_their_pipeline_calls(records: list[CaptureRecord], calls: list[Call]) -> None:
    router, driver, made = spied("binance")
    drive(router, driver, records)
    assert made == calls


def test_armed_timers_fire_at_each_record_before_it() -> None:
    router, driver, calls = spied("binance")
    okx_pipeline = driver.pipelines["okx"]
    assert isinstance(okx_pipeline, SpyPipeline)
    okx_pipeline.armed = True
    drive(router, driver, [ws(1, b"a", ns=5), ws(1, b"b", ns=9)])
    assert calls == [
        ("okx", "timer", "5"),
        ("binance", "up", "1"),
        ("binance", "frame", "1", "a"),
        ("okx", "timer", "9"),
        ("binance", "frame", "1", "b"),
    ]


def test_the_records_of_a_venue_not_driven_are_not_fed() -> None:
    router, driver, calls = spied("binance", venues=["okx"])
    drive(router, driver, [connect(1, BINANCE_URL), ws(1, b"a"), connect(2, OKX_URL)])
    assert calls == [("okx", "up", "2")]
    assert set(driver.pipelines) == {"binance", "okx"}, "no pipeline created for them"


def test_a_connect_naming_no_venue_makes_its_connection_new() -> None:
    """A connection id used again by a connect that names no venue: up again from its
    first frame."""
    router, driver, calls = spied("binance")
    drive(router, driver, [ws(1, b"a"), connect(1, LOOPBACK), ws(1, b"b")])
    assert calls == [
        ("binance", "up", "1"),
        ("binance", "frame", "1", "a"),
        ("binance", "up", "1"),
        ("binance", "frame", "1", "b"),
    ]


# --- books rebuilt ------------------------------------------------------------------------


def test_a_binance_session_rebuilds_its_book_through_the_driver() -> None:
    """An inline snapshot at 100 and diffs 101-106 (the first on a connection with no
    connect record), fed with the default venue: the live book at 106, as the venue's."""
    snapshot = binance_spot.snapshot_body(100, [("10", "1"), ("9", "2")], [("11", "1")])
    records = [
        rest(inline_snapshot_url("BTCUSDT"), snapshot, ns=1_000),
        ws(0, BINANCE_FRAME, ns=2_000),
        ws(0, binance_spot.depth_frame("btcusdt", 103, 105, [("10", "0")], [], 3), ns=3_000),
        ws(0, binance_spot.depth_frame("btcusdt", 106, 106, [], [("12", "3")], 4), ns=4_000),
        rest("https://api.binance.com/api/v3/depth?limit=5", snapshot, ns=5_000),
    ]
    router, driver = VenueRouter(ADAPTERS["binance"]), RecordDriver()
    drive(router, driver, records)
    pipeline = driver.pipelines["binance"]
    state = pipeline.book_state("binance:BTCUSDT")
    assert state is not None and state.state is SymbolState.LIVE
    assert state.venue_id == 106
    assert state.book.bids(5) == [("9", "5")]
    assert state.book.asks(5) == [("11", "1"), ("12", "3")]
    assert driver.rest_snapshots == 1
    assert pipeline.stats.bad_frames == 1, "the snapshot naming no symbol"
