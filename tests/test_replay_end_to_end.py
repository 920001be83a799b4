"""Replay of a real capture (hftbacktest, Binance spot) at max from 3 endpoints, two of them
faulty → gateway → subscribers: the full-book subscriber's final book is verify's final
book, with no gap, and a depth subscriber's book is the full book's top N after every
message. With messages lost on every endpoint, the gateway resyncs from the replay's REST
(the book rebuilt at the replay's position) and still ends on verify's book; at the
capture's end the replay closes its endpoints (going away) and the gateway reports stale, or
holds them open."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from feeds.binance import notice_frame
from feeds.sim.faults import FaultPlan
from feeds.sim.replay import ReplayServer
from gateway.core.model import SymbolState
from gateway.io.client import BookEvent
from gateway.io.client import Event
from gateway.io.client import GatewayClient
from gateway.io.service import Service
from gateway.tools.replay import end_of_capture
from gateway.tools.replay import load_plan
from gateway.tools.verify import SymbolReport
from gateway.tools.verify import verify_capture
from gateway.wire.config import Config
from gateway.wire.config import ServerConfig
from gateway.wire.config import VenueConfig

from .harness import run_bounded
from .subscriber import MDGATEWAY
from .subscriber import ROOT
from .subscriber import Subscriber
from .subscriber import loopback_config
from .subscriber import mdgateway_process
from .subscriber import run_mdgateway
from .subscriber import serving

CAPTURE = "binance/hftbacktest/spot/btcusdt_20240808.gz"
OKX_CAPTURE = "okx/cryptofeed/OKX.ws.1.0"
KEY = "binance:BTCUSDT"


def _binance_config(replay: ReplayServer) -> Config:
    """The gateway's config for Binance BTCUSDT on every endpoint and the REST of ``replay``."""
    return loopback_config(
        "binance",
        ["BTCUSDT"],
        replay.endpoint_urls,
        [replay.rest_url],
        stall_timeout_s=30.0,
        backoff_max_s=1.0,
        # At max speed the endpoints drift apart by more than a live venue's.
        reorder_window_ms=2000.0,
    )


@pytest.fixture(scope="module")
def capture_report(real_data: Callable[[str], Path]) -> SymbolReport:
    """verify's report of :data:`CAPTURE`'s symbol: what every replay of it must end on."""
    return verify_capture(real_data(CAPTURE)).symbols[KEY]


#: Endpoints 0 and 1 drop, duplicate and corrupt frames; endpoint 2 is healthy.
FAULTS = "ep0:drop=0.2,dup=0.1;ep1:corrupt=0.1,dup=0.2"
DEPTHS = (1, 10, 50)


@dataclasses.dataclass(frozen=True)
class Replayed:
    """What one replay through the gateway left: the stopped service, the full-book
    subscriber, one subscriber per depth of :data:`DEPTHS`, and every mismatch found: after
    each book event of a depth subscriber, its book must be the full book's top N at the
    same ``(epoch, venue_id)``."""

    service: Service
    full: Subscriber
    depths: dict[int, Subscriber]
    mismatches: list[str]


async def _replay_at_depths(path: Path, last_id: int, faults: str) -> Replayed:
    """The replay at max from 3 endpoints under ``faults`` through the gateway to a
    full-book subscriber and one per depth of :data:`DEPTHS`, until each has ``last_id``."""
    full_tops: dict[tuple[int, int], dict[int, int]] = {}
    seen: dict[int, list[tuple[int, int, int]]] = {depth: [] for depth in DEPTHS}

    def on_full(event: Event) -> None:
        if isinstance(event, BookEvent):
            book = event.book
            full_tops[event.epoch, event.venue_id] = {
                depth: hash((tuple(book.bids(depth)), tuple(book.asks(depth)))) for depth in DEPTHS
            }

    def on_depth(depth: int) -> Callable[[Event], None]:
        def record(event: Event) -> None:
            if isinstance(event, BookEvent):
                book = event.book
                assert book.bid_count <= depth and book.ask_count <= depth
                levels = hash((tuple(book.bids()), tuple(book.asks())))
                seen[depth].append((event.epoch, event.venue_id, levels))

        return record

    plan = load_plan([path], 3)
    async with ReplayServer(plan, speed=None, faults=FaultPlan(faults, 7, 3)) as replay:
        config = _binance_config(replay)
        async with serving(config, [KEY], on_update=on_full) as (service, full):
            url = f"ws://127.0.0.1:{service.port}/"
            subscribers = {
                depth: Subscriber(url, [KEY], on_update=on_depth(depth), depth=depth)
                for depth in DEPTHS
            }
            async with asyncio.TaskGroup() as tasks:
                followers = [tasks.create_task(s.follow()) for s in subscribers.values()]
                await asyncio.wait_for(replay.finished.wait(), 90)
                await full.until(lambda: full.venue_ids.get(KEY) == last_id, 30)
                for subscriber in subscribers.values():

                    def at_last(s: Subscriber = subscriber) -> bool:
                        return s.venue_ids.get(KEY) == last_id

                    await subscriber.until(at_last, 30)
                for follower in followers:
                    follower.cancel()
            assert replay.rest_served >= 1
    mismatches = [
        f"depth {depth} at {epoch}:{venue_id}"
        for depth, events in seen.items()
        for epoch, venue_id, levels in events
        if full_tops[epoch, venue_id][depth] != levels
    ]
    return Replayed(service, full, subscribers, mismatches)


@pytest.fixture(scope="module")
def replayed(real_data: Callable[[str], Path], capture_report: SymbolReport) -> Replayed:
    """:data:`CAPTURE` replayed once under :data:`FAULTS`, for the tests of its results."""
    path, last_id = real_data(CAPTURE), capture_report.last_id
    return run_bounded(lambda: _replay_at_depths(path, last_id, FAULTS), 150)


def test_real_capture_replayed_at_max_with_faults_on_two_endpoints_gives_verifys_book(
    replayed: Replayed, capture_report: SymbolReport
) -> None:
    """Chaos (:data:`FAULTS`): the subscriber's final book is verify's, with no gap and
    no resync."""
    report, client, service = capture_report, replayed.full.client, replayed.service
    book = client.book(KEY)
    assert book is not None
    assert client.stats.gaps == 0 and client.stats.snapshots == 1
    assert replayed.full.venue_ids[KEY] == report.last_id
    assert book.bids()[:20] == report.bids[:20]
    assert book.asks()[:20] == report.asks[:20]
    stats = service.symbol_stats(KEY)
    assert stats.gaps == 0 and stats.resyncs == 0
    venue = service.venues[0]
    assert venue.stats.bad_frames > 0, "corrupt frames were seen and counted"
    assert stats.conn(0).duplicates > 0 and stats.conn(1).duplicates > 0


def test_real_capture_replayed_at_depths_1_10_50_holds_the_full_books_top_n_after_every_message(
    replayed: Replayed, capture_report: SymbolReport
) -> None:
    report, subscribers = capture_report, replayed.depths
    assert replayed.mismatches == []
    for depth, subscriber in subscribers.items():
        assert subscriber.client.stats.gaps == 0, depth
        book = subscriber.client.book(KEY)
        assert book is not None
        assert book.bid_count == depth and book.ask_count == depth
        shown = min(depth, len(report.bids))  # verify reports the top levels only
        assert book.bids(shown) == report.bids[:shown] and book.asks(shown) == report.asks[:shown]
    updates = [subscribers[depth].updates for depth in DEPTHS]
    assert updates == sorted(updates) and updates[0] < updates[-1], (
        "a shallower depth gets fewer messages"
    )


def test_replay_command_rejects_a_bad_fault_spec(real_data: Callable[[str], Path]) -> None:
    path = real_data(CAPTURE)
    result = run_mdgateway(
        "replay", str(path), "--endpoints", "3", "--faults", "ep9:drop=0.1", timeout_s=60
    )
    assert result.returncode == 2 and "ep9" in result.stderr, result.stderr


@pytest.mark.async_timeout_s(60)
async def test_timed_faults_and_rest_faults_on_the_wire(real_data: Callable[[str], Path]) -> None:
    import httpx
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    plan = load_plan([real_data(CAPTURE)], 2)
    # Endpoint 1 is stalled from the start, so its notice comes after the stall; only
    # order and causality are asserted (the schedule's timing is tested with a driven
    # clock in tests/feeds/sim/test_faults.py).
    faults = FaultPlan("ep0:close@0.5;ep1:stall@0+1,notice@0.3;rest:429@0+1000,retry_after=1", 3, 2)
    notice = notice_frame(1_000_000)
    async with ReplayServer(plan, speed=10.0, faults=faults, notice=lambda: notice) as replay:
        async with httpx.AsyncClient() as http:
            response = await http.get(replay.rest_url + "/api/v3/depth?symbol=BTCUSDT")
            assert response.status_code == 429
            assert response.headers["Retry-After"] == "1"

        async def closed_at() -> float:
            async with connect(replay.endpoint_urls[0], max_queue=None) as ws0:
                try:
                    while True:
                        await ws0.recv()
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == 1001
                    return replay.fault_time()

        async def received() -> tuple[float, list[bytes]]:
            """When the first frame came, and the frames up to 20 after the notice."""
            async with connect(replay.endpoint_urls[1], max_queue=None) as ws1:
                frames = [await ws1.recv(decode=False)]
                first_at = replay.fault_time()
                while notice not in frames[-20:]:
                    frames.append(await ws1.recv(decode=False))
                for _ in range(19):
                    frames.append(await ws1.recv(decode=False))
            return first_at, frames

        async with asyncio.timeout(10):
            closed, (first_at, frames) = await asyncio.gather(closed_at(), received())
        assert closed >= 0.5, "closed by the schedule, not before"
        assert first_at >= 1.0, "nothing is sent while stalled"
        assert frames.count(notice) == 1, "the venue's notice, once"
        assert frames.index(notice) > 0, "queued at 0.3 s, behind the frames due by then"


def test_replay_command_prints_its_urls_and_finishes(real_data: Callable[[str], Path]) -> None:
    path = real_data(CAPTURE)
    replay = ("replay", str(path), "--endpoints", "2", "--speed", "max", "--port", "0")
    with mdgateway_process(*replay) as process:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(3)]
        assert [line.split()[0] for line in lines] == ["endpoint", "endpoint", "rest"]
        assert lines[0].startswith("endpoint ws://127.0.0.1:")
        # Nobody connects, so the replay does not finish: it waits idle until stopped.
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "replay finished" not in stdout


@pytest.mark.async_timeout_s(20)
async def test_speed_scales_the_recorded_gaps_and_ping_gets_pong() -> None:
    from websockets.asyncio.client import connect

    from feeds.sim.replay_plan import build_plan
    from gateway.capture import CaptureRecord

    # 100 s recorded between the bursts, replayed at speed 1000: 0.1 s. Unscaled, the
    # test would outlast its deadline.
    records = [
        CaptureRecord(t, 0, "ws", "", f'{{"n":{n}}}'.encode())
        for n, t in enumerate([0, 0, 0, 100_000_000_000, 100_000_000_000])
    ]
    records.append(CaptureRecord(1, -1, "rest", "https://x/api/v3/depth?symbol=A", b"{}"))
    async with ReplayServer(build_plan(records, 1), speed=1000.0) as replay:
        loop = asyncio.get_running_loop()
        async with connect(replay.endpoint_urls[0] + "/stream?streams=a@depth") as ws:
            start = loop.time()
            await ws.send("ping")
            got = [str(await ws.recv()) for _ in range(6)]
            elapsed = loop.time() - start
        await asyncio.wait_for(replay.finished.wait(), 5)
        body = replay._plan.rest.lookup("/api/v3/depth?symbol=A&limit=5", replay.replay_ns)
    frames = [g for g in got if g != "pong"]
    assert "pong" in got
    assert frames == [f'{{"n":{n}}}' for n in range(5)]
    assert elapsed >= 0.1 - 0.01  # the second burst is not sent before it is due
    assert body == b"{}"


@pytest.mark.async_timeout_s(150)
async def test_messages_lost_on_every_endpoint_resync_from_the_replay_and_end_on_verifys_book(
    real_data: Callable[[str], Path], capture_report: SymbolReport
) -> None:
    """At speed 75 (the capture's 346 s in about 4.6 s) every endpoint is down from 2 s to
    2.2 s (15 s of the capture): the reconnections join at the replay's position, so the
    updates sent meanwhile are lost on every copy. At the end the replay closes its
    endpoints."""
    report = capture_report
    plan = load_plan([real_data(CAPTURE)], 3)
    fault_plan = FaultPlan("ep*:refuse@2+0.2", 7, 3)
    async with ReplayServer(plan, speed=75.0, faults=fault_plan) as replay:
        config = _binance_config(replay)
        async with serving(config, [KEY]) as (service, subscriber):
            await asyncio.wait_for(replay.finished.wait(), 60)
            await subscriber.until(lambda: subscriber.venue_ids.get(KEY) == report.last_id, 30)
            rest_served = replay.rest_served
            await end_of_capture(replay, hold=False)
            await subscriber.until(lambda: subscriber.statuses[-1:] == ["stale"], 30)
            assert not any(replay.is_open(i) for i in range(3))
    client, last_id, statuses = subscriber.client, subscriber.venue_ids[KEY], subscriber.statuses
    stats = service.symbol_stats(KEY)
    assert stats.gaps >= 1 and stats.resyncs >= 1, "the loss was on every copy"
    assert rest_served >= 2, "the start's snapshot and the resync's"
    resyncing = statuses.index("resyncing")
    assert "live" in statuses[resyncing:], statuses
    book = client.book(KEY)
    assert book is not None
    assert last_id == report.last_id
    assert book.bids()[:20] == report.bids[:20]
    assert book.asks()[:20] == report.asks[:20]
    assert statuses[-1] == SymbolState.STALE.value


@pytest.mark.parametrize(
    ("hold", "said", "close_code"),
    [
        pytest.param(False, "closed", 1001, id="closes-going-away"),
        pytest.param(True, "held open", None, id="hold-keeps-open"),
    ],
)
@pytest.mark.async_timeout_s(60)
async def test_replay_command_at_the_capture_end_closes_or_with_hold_keeps_its_endpoints(
    real_data: Callable[[str], Path], hold: bool, said: str, close_code: int | None
) -> None:
    """``mdgateway replay`` at max, its endpoint read to the end: at the capture's end it
    says it closed its endpoints (the connection gets going away), or with ``--hold`` that
    it holds them open (a ping answered after that line proves it)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    process = await asyncio.create_subprocess_exec(
        *MDGATEWAY,
        "replay",
        str(real_data(OKX_CAPTURE)),
        "--speed",
        "max",
        *(["--hold"] if hold else []),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        url = (await process.stdout.readline()).decode().split()[1]
        assert (await process.stdout.readline()).startswith(b"rest ")
        code: int | None = None
        async with connect(url, max_queue=None) as ws:
            line = (await process.stdout.readline()).decode().strip()
            if hold:
                await ws.send("ping")
                while await ws.recv() != "pong":
                    pass
            else:
                try:
                    while True:
                        await ws.recv()
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None
                    code = closed.rcvd.code
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
    assert line.startswith("replay finished") and said in line
    assert code == close_code


BYBIT_CAPTURE = "bybit/cryptofeed/BYBIT.jsonl.gz"
BYBIT_KEYS = ["bybit-linear:BTCUSDT", "bybit-spot:BTCUSDT"]


@pytest.fixture(scope="module")
def bybit_reports(real_data: Callable[[str], Path]) -> dict[str, SymbolReport]:
    """verify's reports of :data:`BYBIT_CAPTURE`'s symbols."""
    return verify_capture(real_data(BYBIT_CAPTURE)).symbols


async def _bybit_replay(
    path: Path, last_ids: dict[str, int], faults: str
) -> tuple[GatewayClient, dict[str, int], list[str], Service]:
    """Bybit's two recorded connections (linear, spot), each on its own endpoint (one copy
    of each venue: a loss is a loss on every copy), at speed 10 (the capture's 42 s in 4.2
    s) under ``faults``; returns once the subscriber has verify's last ids."""
    plan = load_plan([path], 2)
    fault_plan = FaultPlan(faults, 7, 2)
    async with ReplayServer(plan, speed=10.0, faults=fault_plan) as replay:
        # The venue each endpoint serves: its recorded connection's.
        venues = [plan.books.venue_of(frames[0].record) for frames in plan.endpoints]
        config = Config(
            venues=[
                VenueConfig(
                    venue=str(venue),
                    symbols=["BTCUSDT"],
                    endpoints=[url],
                    stall_timeout_s=30.0,
                    backoff_initial_s=0.05,
                    backoff_max_s=0.2,
                )
                for venue, url in zip(venues, replay.endpoint_urls, strict=True)
            ],
            server=ServerConfig(port=0),
        )
        async with serving(config, BYBIT_KEYS) as (service, subscriber):
            await asyncio.wait_for(replay.finished.wait(), 60)
            await subscriber.until(
                lambda: all(subscriber.venue_ids.get(k) == last_ids[k] for k in BYBIT_KEYS), 30
            )
        return subscriber.client, subscriber.venue_ids, subscriber.statuses, service


async def _bybit_ends_on_verifys_books(
    path: Path, reports: dict[str, SymbolReport], faults: str
) -> tuple[list[str], Service]:
    last_ids = {key: reports[key].last_id for key in BYBIT_KEYS}
    client, venue_ids, statuses, service = await _bybit_replay(path, last_ids, faults)
    for key in BYBIT_KEYS:
        book = client.book(key)
        assert book is not None
        assert venue_ids[key] == last_ids[key]
        assert book.bids()[:20] == reports[key].bids[:20]
        assert book.asks()[:20] == reports[key].asks[:20]
    return statuses, service


@pytest.mark.async_timeout_s(150)
async def test_in_band_venue_reconnected_mid_replay_gets_a_snapshot_at_the_position(
    real_data: Callable[[str], Path], bybit_reports: dict[str, SymbolReport]
) -> None:
    """Both endpoints down from 2 s to 2.25 s (2.5 s of the capture): the reconnections
    join at the replay's position and their subscribes are answered with in-band snapshots
    rebuilt there."""
    path = real_data(BYBIT_CAPTURE)
    statuses, service = await _bybit_ends_on_verifys_books(path, bybit_reports, "ep*:refuse@2+0.25")
    stale = statuses.index("stale")
    assert "live" in statuses[stale:], statuses
    for key in BYBIT_KEYS:
        assert service.symbol_stats(key).snapshots >= 2, "the recorded one and the replay's"


@pytest.mark.async_timeout_s(150)
async def test_in_band_venue_resubscribes_after_a_loss_and_gets_a_snapshot_at_the_position(
    real_data: Callable[[str], Path], bybit_reports: dict[str, SymbolReport]
) -> None:
    """Frames dropped on the only copy: the gateway resubscribes, the replay answers with an
    in-band snapshot rebuilt at the connection's position."""
    path = real_data(BYBIT_CAPTURE)
    statuses, service = await _bybit_ends_on_verifys_books(path, bybit_reports, "ep*:drop=0.005")
    assert sum(service.symbol_stats(key).gaps for key in BYBIT_KEYS) >= 1
    resyncing = statuses.index("resyncing")
    assert "live" in statuses[resyncing:], statuses


@pytest.mark.async_timeout_s(30)
async def test_a_connection_opened_during_a_pass_joins_at_the_endpoints_position() -> None:
    """At max, a first connection reads 300 frames of 2000; a second one then opens on the
    same endpoint: its first frame is not the capture's start but at least the frames the
    first one was given in all (as the endpoint reached)."""
    from websockets.asyncio.client import connect

    from feeds.sim.replay_plan import build_plan
    from gateway.capture import CaptureRecord

    records = [CaptureRecord(n, 0, "ws", "", b'{"n":%d}' % n) for n in range(2000)]
    async with ReplayServer(build_plan(records, 1), speed=None) as replay:
        url = replay.endpoint_urls[0]
        async with connect(url, max_queue=None) as first:
            for _ in range(300):
                await first.recv()
            reached = replay._reached[0]
            async with connect(url, max_queue=None) as second:
                joined: int = msgspec.json.decode(await second.recv())["n"]
    assert joined >= reached >= 300, "not the capture's start: the frames already given"


@pytest.mark.async_timeout_s(30)
async def test_with_loop_the_connection_through_the_end_starts_the_next_pass() -> None:
    from websockets.asyncio.client import connect

    from feeds.sim.replay_plan import build_plan
    from gateway.capture import CaptureRecord

    records = [CaptureRecord(n, 0, "ws", "", b'{"n":%d}' % n) for n in range(5)]
    plan = build_plan(records, 1)
    async with (
        ReplayServer(plan, speed=None, loop=True) as replay,
        connect(replay.endpoint_urls[0], max_queue=None) as ws,
    ):
        read = [msgspec.json.decode(await ws.recv())["n"] for _ in range(12)]
    assert read == [0, 1, 2, 3, 4] * 2 + [0, 1]
