"""Upstream shells on loopback: reconnects, stalls, renewal; the REST snapshot fetcher."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from gateway.core.backoff import Backoff
from gateway.core.model import DepthSnapshot
from gateway.io.changes import StateChanges
from gateway.io.upstream import Connection, SnapshotFetcher
from gateway.wire.venues import adapter_for

if TYPE_CHECKING:
    from tests.gateway.conftest import Run, RunUntil, WaitUntil

Handler = Callable[[ServerConnection], Awaitable[None]]


class Recorder:
    """The connection's handlers: keeps what they are given; ``changes`` is the
    connection's own notifier, and is also notified after every frame."""

    def __init__(self, reconnect_on: bytes | None = None) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.states: list[bool] = []
        self.reconnect_on = reconnect_on
        self.changes = StateChanges()

    def on_frame(self, conn_id: int, raw: bytes, recv_ns: int) -> bool:
        assert recv_ns > 0
        self.frames.append((conn_id, raw))
        self.changes.notify()
        return raw == self.reconnect_on

    def on_state(self, conn_id: int, up: bool) -> None:
        self.states.append(up)


async def _with_server(handler: Handler, body: Callable[[str], Awaitable[None]]) -> None:
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with asyncio.timeout(10):
            await body(f"ws://127.0.0.1:{port}/stream?streams=x")


def _connection(url: str, rec: Recorder, **kwargs: float) -> Connection:
    return Connection(
        7,
        url,
        on_frame=rec.on_frame,
        on_state=rec.on_state,
        backoff=Backoff(0.01, 0.05, random.Random(1)),
        stall_timeout_s=kwargs.get("stall_timeout_s", 5.0),
        max_age_s=kwargs.get("max_age_s", 3600.0),
        changes=rec.changes,
    )


def test_frames_are_delivered_as_bytes_and_a_closed_connection_is_reopened(
    run: Run, run_until: RunUntil
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.send(b"two")
        await ws.close()

    async def body(url: str) -> None:
        rec = Recorder()
        conn = _connection(url, rec)
        await run_until(conn.run, rec.changes, lambda: len(rec.frames) >= 6)
        assert rec.frames[:2] == [(7, b"one"), (7, b"two")]
        assert rec.states[:4] == [True, False, True, False]
        assert conn.stats.connects >= 3
        assert conn.stats.reconnects == conn.stats.connects - 1
        assert conn.stats.failed_attempts == 0
        assert not conn.stats.connected
        assert conn.stats.received_bytes == 3 * conn.stats.frames  # "one", b"two"

    run(lambda: _with_server(handler, body))


def test_a_stalled_connection_is_closed_and_reopened(run: Run, run_until: RunUntil) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.wait_closed()  # socket open, nothing sent

    async def body(url: str) -> None:
        rec = Recorder()
        conn = _connection(url, rec, stall_timeout_s=0.2)
        await run_until(conn.run, rec.changes, lambda: conn.stats.connects >= 2)
        assert rec.states[:3] == [True, False, True]
        assert conn.stats.last_error == "stalled"

    run(lambda: _with_server(handler, body))


def test_the_venue_reconnect_notice_reconnects_without_backoff(
    run: Run, run_until: RunUntil
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("data")
        await ws.send("please reconnect")
        await ws.wait_closed()

    async def body(url: str) -> None:
        rec = Recorder(reconnect_on=b"please reconnect")
        conn = _connection(url, rec)
        conn._backoff = Backoff(60.0, 60.0)  # a backoff wait would time the test out
        conn._backoff.failures = 5
        await run_until(conn.run, rec.changes, lambda: conn.stats.connects >= 2)
        assert conn.stats.last_error == "venue asked to reconnect"

    run(lambda: _with_server(handler, body))


def test_connections_are_renewed_at_max_age_while_data_flows(run: Run, run_until: RunUntil) -> None:
    async def handler(ws: ServerConnection) -> None:
        while True:
            await ws.send("tick")
            await asyncio.sleep(0.01)  # the venue's pace: data keeps flowing, slowly

    async def body(url: str) -> None:
        rec = Recorder()
        conn = _connection(url, rec, max_age_s=0.2)
        await run_until(conn.run, rec.changes, lambda: conn.stats.connects >= 2)
        assert conn.stats.last_error == "renewed at max age"

    run(lambda: _with_server(handler, body))


def test_refused_connections_back_off_and_retry(run: Run, run_until: RunUntil) -> None:
    async def body() -> None:
        rec = Recorder()
        conn = _connection("ws://127.0.0.1:9/stream", rec)  # discard port: refused
        await run_until(conn.run, rec.changes, lambda: conn.stats.failed_attempts >= 3)
        assert rec.states == [] and conn.stats.connects == 0 and conn.stats.reconnects == 0
        assert "Refused" in conn.stats.last_error or "Errno" in conn.stats.last_error

    run(body, 10)


# --- SnapshotFetcher ---------------------------------------------------------------------------

GOOD_BODY = b'{"lastUpdateId":42,"bids":[["100.0","1"]],"asks":[["101.0","2"]]}'


def _fetch(
    run: Run,
    run_until: RunUntil,
    responses: dict[str, list[httpx.Response]],
    bases: list[str],
    banned_s: float = 0.0,
) -> tuple[list[DepthSnapshot], SnapshotFetcher, list[str]]:
    """Fetch one snapshot from ``responses``; the venue's ban (``banned_s``) runs at start."""
    seen: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return responses[request.url.host].pop(0)

    got: list[DepthSnapshot] = []
    fetched = StateChanges()

    def on_snapshot(snapshot: DepthSnapshot) -> None:
        got.append(snapshot)
        fetched.notify()

    fetcher = SnapshotFetcher(
        adapter_for("binance"),
        bases,
        limit=1000,
        on_snapshot=on_snapshot,
        timeout_s=1.0,
        backoff_initial_s=0.001,
        backoff_max_s=0.01,
        transport=httpx.MockTransport(respond),
    )

    async def body() -> None:
        if banned_s:
            fetcher.budget.rate_limited(banned_s, time.monotonic())
        fetcher.request("BTCUSDT")
        fetcher.request("BTCUSDT")  # deduplicated while queued
        await run_until(fetcher.run, fetched, lambda: bool(got))

    run(body, 10)
    return got, fetcher, seen


def test_fetcher_falls_back_to_the_next_base_on_errors_and_bad_bodies(
    run: Run, run_until: RunUntil
) -> None:
    got, fetcher, seen = _fetch(
        run,
        run_until,
        {
            "a.test": [httpx.Response(503, text="down"), httpx.Response(200, text="junk")],
            "b.test": [httpx.Response(200, content=b"{}"), httpx.Response(200, content=GOOD_BODY)],
        },
        ["http://a.test", "http://b.test"],
    )
    assert [s.last_id for s in got] == [42] and got[0].symbol == "BTCUSDT"
    assert got[0].bids == (("100.0", "1"),)
    assert fetcher.stats.failures == 3 and fetcher.stats.by_base == {"http://b.test": 1}
    assert seen[0] == "http://a.test/api/v3/depth?symbol=BTCUSDT&limit=1000"
    assert len(seen) == 4


def test_fetcher_honours_rate_limits_on_every_base(run: Run, run_until: RunUntil) -> None:
    got, fetcher, seen = _fetch(
        run,
        run_until,
        {
            "a.test": [
                httpx.Response(429, headers={"Retry-After": "0"}),
                httpx.Response(200, content=GOOD_BODY, headers={"X-MBX-USED-WEIGHT-1M": "55"}),
            ],
            "b.test": [],
        },
        ["http://a.test", "http://b.test"],
    )
    # The 429 stops the round: the fallback base shares the IP's limit and is not tried.
    assert [url.split("/")[2] for url in seen] == ["a.test", "a.test"]
    assert fetcher.stats.rate_limited == 1 and len(got) == 1
    # The weight the venue reported replaced the fetcher's own count.
    assert fetcher.budget.used == 55


@pytest.mark.parametrize("status", [418, 429])
def test_rate_limit_statuses_are_recognised(status: int, run: Run, run_until: RunUntil) -> None:
    got, fetcher, _ = _fetch(
        run,
        run_until,
        {
            "a.test": [
                httpx.Response(status, headers={"Retry-After": "0"}),
                httpx.Response(200, content=GOOD_BODY),
            ]
        },
        ["http://a.test"],
    )
    assert fetcher.stats.rate_limited == 1 and got


def test_waits_for_a_ban_are_counted_with_their_seconds(run: Run, run_until: RunUntil) -> None:
    got, fetcher, seen = _fetch(
        run,
        run_until,
        {"a.test": [httpx.Response(200, content=GOOD_BODY)]},
        ["http://a.test"],
        0.05,
    )
    assert got and len(seen) == 1
    assert fetcher.stats.rate_limit_waits >= 1, "the request waited for the ban to end"
    assert 0.04 < fetcher.stats.rate_limit_wait_s <= 0.05 * fetcher.stats.rate_limit_waits
    assert fetcher.stats.rate_limited == 0, "no response said so"


def test_subscriptions_are_sent_as_text_on_every_connect_then_pings_and_queued_messages(
    run: Run, wait_until: WaitUntil
) -> None:
    received: list[str | bytes] = []
    arrived = StateChanges()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)
            arrived.notify()
            if message == "close me":
                await ws.close()

    async def body(url: str) -> None:
        rec = Recorder()
        conn = Connection(
            3,
            url,
            on_frame=rec.on_frame,
            on_state=rec.on_state,
            backoff=Backoff(0.01, 0.05, random.Random(1)),
            stall_timeout_s=5.0,
            max_age_s=3600.0,
            subscribe_messages=[b'{"op":"subscribe"}'],
            ping_message=b"ping",
            ping_interval_s=0.05,
            max_messages_per_s=1000.0,
        )
        assert conn.send([b"too early"]) is False, "nothing is queued while down"
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(conn.run())
            await wait_until(arrived, lambda: received.count("ping") >= 2)
            assert conn.send([b"close me"])
            await wait_until(arrived, lambda: received.count('{"op":"subscribe"}') >= 2)
            task.cancel()
        assert received[0] == '{"op":"subscribe"}', "text frames, subscriptions first"
        assert "too early" not in received
        assert conn.stats.messages_dropped == 1 and conn.stats.reconnects >= 1

    run(lambda: _with_server(handler, body))
