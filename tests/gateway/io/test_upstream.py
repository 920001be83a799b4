"""Upstream shells on loopback: reconnects, stalls, renewal; the REST snapshot fetcher."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import sys
import time
from collections.abc import Awaitable
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request
from websockets.http11 import Response

from gateway.core.backoff import Backoff
from gateway.core.budget import DEFAULT_RETRY_AFTER_S
from gateway.core.budget import AttemptBudget
from gateway.core.model import DepthSnapshot
from gateway.io.changes import StateChanges
from gateway.io.upstream import Connection
from gateway.io.upstream import Sent
from gateway.io.upstream import SnapshotFetcher
from gateway.wire.venues import adapter_for
from tests.harness import run_until
from tests.harness import wait_until
from tests.harness import ws_serving

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

    def more_frames_than(self, count: int) -> Callable[[], bool]:
        return lambda: len(self.frames) > count


class Written:
    """A connection's ``on_sent``: keeps what it is told, ``changes`` notified after each."""

    def __init__(self) -> None:
        self.told: list[tuple[int, str | None]] = []
        self.changes = StateChanges()

    def on_sent(self, conn_id: int, key: str | None) -> None:
        self.told.append((conn_id, key))
        self.changes.notify()


class Inbox:
    """A test server's handler keeping what it receives (``arrived`` notified after each
    message); it closes the connection after a message ``close_on``."""

    def __init__(self, close_on: str | None = None) -> None:
        self.received: list[str | bytes] = []
        self.arrived = StateChanges()
        self.close_on = close_on

    async def handler(self, ws: ServerConnection) -> None:
        async for message in ws:
            self.received.append(message)
            self.arrived.notify()
            if message == self.close_on:
                await ws.close()


async def _with_server(handler: Handler, body: Callable[[str], Awaitable[None]]) -> None:
    async with ws_serving(handler, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with asyncio.timeout(10):
            await body(f"ws://127.0.0.1:{port}/stream?streams=x")


class ManualTime:
    """The clock and sleep a connection runs on, moved only by the test: backoffs, budget
    waits, stall and age deadlines of any length take no real time."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self._wakes: list[tuple[float, asyncio.Future[None]]] = []
        #: Notified whenever a sleep starts.
        self.changes = StateChanges()

    def clock_s(self) -> float:
        return self.now_s

    async def sleep(self, delay_s: float) -> None:
        if delay_s <= 0:
            await asyncio.sleep(0)
            return
        wake = (self.now_s + delay_s, asyncio.get_running_loop().create_future())
        self._wakes.append(wake)
        self.changes.notify()
        try:
            await wake[1]
        finally:
            self._wakes.remove(wake)

    def sleeping(self) -> bool:
        return bool(self._wakes)

    def advance(self, delay_s: float) -> None:
        self._advance_to(self.now_s + delay_s)

    def advance_to_next_wake(self) -> None:
        self._advance_to(min(wake_s for wake_s, _ in self._wakes))

    def _advance_to(self, now_s: float) -> None:
        self.now_s = max(self.now_s, now_s)
        for wake_s, future in self._wakes:
            if wake_s <= self.now_s and not future.done():
                future.set_result(None)


async def _run_driven(
    connections: list[Connection], manual: ManualTime, until: Callable[[], bool]
) -> None:
    """Runs the connections until ``until()``, moving time to the next wake whenever every
    connection is down and waiting (a connected one waits for the server instead)."""

    def idle() -> bool:
        return manual.sleeping() and not any(conn.stats.connected for conn in connections)

    async with asyncio.TaskGroup() as tasks:
        runs = [tasks.create_task(conn.run()) for conn in connections]
        while not until():
            await manual.changes.wait_until(lambda: until() or idle())
            if not until():
                manual.advance_to_next_wake()
                await asyncio.sleep(0)  # the woken sleeper moves on before the next look
        for task in runs:
            task.cancel()


def _connection(
    url: str, rec: Recorder, *, manual: ManualTime | None = None, **options: Any
) -> Connection:
    """Connection 7 to ``url``, reporting to ``rec``, on ``manual``'s time when given;
    ``options`` are further Connection keywords, over a short backoff, a 5 s stall
    timeout and an hour's age."""
    return Connection(
        7,
        url,
        on_frame=rec.on_frame,
        on_state=rec.on_state,
        changes=rec.changes,
        clock_s=time.monotonic if manual is None else manual.clock_s,
        sleep=asyncio.sleep if manual is None else manual.sleep,
        **{
            "backoff": Backoff(0.01, 0.05, random.Random(1)),
            "stall_timeout_s": 5.0,
            "max_age_s": 3600.0,
            **options,
        },
    )


async def test_frames_are_delivered_as_bytes_and_a_closed_connection_is_reopened() -> None:
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

    await _with_server(handler, body)


async def test_a_frame_above_max_frame_bytes_is_refused_unread_counted_and_reconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"a" * 2048)  # at the cap: delivered
        await ws.send(b"b" * 2049)  # above it: the connection is closed
        await ws.send(b"never read")
        await ws.wait_closed()

    async def body(url: str) -> None:
        rec = Recorder()
        conn = _connection(url, rec, max_frame_bytes=2048)
        with caplog.at_level(logging.WARNING, logger="gateway.io.upstream"):
            await run_until(conn.run, rec.changes, lambda: len(rec.frames) >= 3)
        assert {raw for _, raw in rec.frames} == {b"a" * 2048}
        assert conn.stats.oversized_frames >= 2 and conn.stats.connects >= 3
        assert conn.stats.received_bytes == 2048 * conn.stats.frames
        assert "frame with 2049 bytes exceeds limit of 2048 bytes" in conn.stats.last_error
        lines = [r.getMessage() for r in caplog.records if "max_frame_bytes" in r.getMessage()]
        assert lines and "conn 7 " in lines[0] and "closed (1009)" in lines[0]

    await _with_server(handler, body)


async def test_a_stalled_connection_is_closed_and_reopened() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.wait_closed()  # socket open, nothing sent

    async def body(url: str) -> None:
        rec, manual = Recorder(), ManualTime()
        conn = _connection(url, rec, stall_timeout_s=5.0, manual=manual)
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(conn.run())
            await rec.changes.wait_until(lambda: len(rec.frames) == 1)
            manual.advance(4.5)
            await asyncio.sleep(0)
            assert conn.stats.connected, "not yet stalled"
            manual.advance(0.5)
            await rec.changes.wait_until(lambda: not conn.stats.connected)
            assert conn.stats.last_error == "stalled"
            await manual.changes.wait_until(manual.sleeping)  # the backoff
            manual.advance_to_next_wake()
            await rec.changes.wait_until(lambda: conn.stats.connects == 2)
            task.cancel()
        assert rec.states[:3] == [True, False, True]

    await _with_server(handler, body)


async def test_the_venue_reconnect_notice_reconnects_without_backoff() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("data")
        await ws.send("please reconnect")
        await ws.wait_closed()

    async def body(url: str) -> None:
        rec = Recorder(reconnect_on=b"please reconnect")
        # Healthy from its first frame; a backoff wait would time the test out.
        conn = _connection(url, rec, backoff=Backoff(60.0, 60.0), healthy_after_s=0.0)
        conn.policy.backoff.failures = 5
        await run_until(conn.run, rec.changes, lambda: conn.stats.connects >= 2)
        assert conn.stats.last_error == "venue asked to reconnect"

    await _with_server(handler, body)


async def test_connections_are_renewed_at_max_age_while_data_flows() -> None:
    async def handler(ws: ServerConnection) -> None:
        while True:
            await ws.send("tick")
            await asyncio.sleep(0.01)  # the venue's pace: data keeps flowing, slowly

    async def body(url: str) -> None:
        rec, manual = Recorder(), ManualTime()
        conn = _connection(url, rec, max_age_s=56.0, healthy_after_s=0.0, manual=manual)
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(conn.run())
            await rec.changes.wait_until(lambda: len(rec.frames) >= 1)
            for _ in range(12):  # frames keep coming: the stall deadline (5 s) moves on
                manual.advance(4.5)
                await rec.changes.wait_until(rec.more_frames_than(len(rec.frames)))
            assert conn.stats.connects == 1
            manual.advance(2.0)  # 56 s since the connect
            # Healthy, so renewed at once: the next connect needs no advance.
            await rec.changes.wait_until(lambda: conn.stats.connects == 2)
            task.cancel()
        assert conn.stats.last_error == "renewed at max age"

    await _with_server(handler, body)


@pytest.mark.async_timeout_s(10)
async def test_refused_connections_back_off_and_retry() -> None:
    rec = Recorder()
    conn = _connection("ws://127.0.0.1:9/stream", rec)  # discard port: refused
    await run_until(conn.run, rec.changes, lambda: conn.stats.failed_attempts >= 3)
    assert rec.states == [] and conn.stats.connects == 0 and conn.stats.reconnects == 0
    assert "Refused" in conn.stats.last_error or "Errno" in conn.stats.last_error


async def test_an_endpoints_password_is_in_no_log_line_view_or_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    conn = _connection("ws://desk:hunter2@127.0.0.1:9/stream?streams=x", rec)  # refused
    with caplog.at_level(logging.DEBUG):
        await run_until(conn.run, rec.changes, lambda: conn.stats.failed_attempts >= 1)
    assert conn.endpoint == "ws://desk:***@127.0.0.1:9"
    assert any("ws://desk:***@127.0.0.1:9" in r.getMessage() for r in caplog.records)
    assert "hunter2" not in caplog.text and "hunter2" not in conn.stats.last_error


# --- SnapshotFetcher ---------------------------------------------------------------------------

GOOD_BODY = b'{"lastUpdateId":42,"bids":[["100.0","1"]],"asks":[["101.0","2"]]}'


def _fetcher(
    bases: list[str],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    max_body_bytes: int = 1024 * 1024,
    audits: list[DepthSnapshot] | None = None,
) -> tuple[list[DepthSnapshot], SnapshotFetcher, StateChanges]:
    """A Binance fetcher, the snapshots it delivers, and a notifier of each delivery;
    audit snapshots go to ``audits`` where given."""
    got: list[DepthSnapshot] = []
    fetched = StateChanges()

    def on_snapshot(snapshot: DepthSnapshot, attempt: int) -> None:
        got.append(snapshot)
        fetched.notify()

    def on_audit(snapshot: DepthSnapshot) -> None:
        assert audits is not None
        audits.append(snapshot)
        fetched.notify()

    fetcher = SnapshotFetcher(
        adapter_for("binance"),
        bases,
        limit=1000,
        on_snapshot=on_snapshot,
        timeout_s=5.0,
        backoff_initial_s=0.001,
        backoff_max_s=0.01,
        transport=transport,
        max_body_bytes=max_body_bytes,
        on_audit=None if audits is None else on_audit,
    )
    return got, fetcher, fetched


async def _fetch(
    responses: dict[str, list[httpx.Response]],
    bases: list[str],
    banned_s: float = 0.0,
) -> tuple[list[DepthSnapshot], SnapshotFetcher, list[str]]:
    """Fetch one snapshot from ``responses``; the venue's ban (``banned_s``) runs at start."""
    seen: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return responses[request.url.host].pop(0)

    got, fetcher, fetched = _fetcher(bases, transport=httpx.MockTransport(respond))

    if banned_s:
        fetcher.budget.rate_limited(banned_s, time.monotonic())
    fetcher.request("BTCUSDT", 1)
    fetcher.request("BTCUSDT", 1)  # deduplicated while queued
    await run_until(fetcher.run, fetched, lambda: bool(got))
    return got, fetcher, seen


async def test_fetcher_falls_back_to_the_next_base_on_errors_and_bad_bodies() -> None:
    got, fetcher, seen = await _fetch(
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


async def test_a_rest_bases_password_is_in_no_log_line_stat_or_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        got, fetcher, seen = await _fetch(
            {
                "a.test": [httpx.Response(503, text="down")],
                "b.test": [httpx.Response(200, content=GOOD_BODY)],
            },
            ["http://desk:hunter2@a.test", "http://desk:hunter2@b.test"],
        )
    assert [s.last_id for s in got] == [42]
    assert seen[0] == "http://desk:hunter2@a.test/api/v3/depth?symbol=BTCUSDT&limit=1000"
    assert fetcher.stats.by_base == {"http://desk:***@b.test": 1}
    assert "from http://desk:***@a.test failed" in caplog.text
    assert "hunter2" not in caplog.text and "hunter2" not in fetcher.stats.last_error


@pytest.mark.async_timeout_s(10)
async def test_audit_fetches_share_the_budget_and_a_book_request_supersedes_one() -> None:
    seen: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params["symbol"])
        return httpx.Response(200, content=GOOD_BODY)

    audits: list[DepthSnapshot] = []
    got, fetcher, fetched = _fetcher(
        ["http://a.test"], transport=httpx.MockTransport(respond), audits=audits
    )

    fetcher.request_audit("BTCUSDT")
    fetcher.request_audit("ETHUSDT")
    fetcher.request("ETHUSDT", 1)  # the book wants it: applied, not audited
    fetcher.request_audit("ETHUSDT")  # a fetch is queued already
    await run_until(fetcher.run, fetched, lambda: len(got) + len(audits) == 2)
    assert [s.symbol for s in audits] == ["BTCUSDT"]
    assert [s.symbol for s in got] == ["ETHUSDT"]
    assert seen == ["BTCUSDT", "ETHUSDT"] and fetcher.stats.requests == 2


async def test_fetcher_honours_rate_limits_on_every_base() -> None:
    got, fetcher, seen = await _fetch(
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
async def test_rate_limit_statuses_are_recognised(status: int) -> None:
    got, fetcher, _ = await _fetch(
        {
            "a.test": [
                httpx.Response(status, headers={"Retry-After": "0"}),
                httpx.Response(200, content=GOOD_BODY),
            ]
        },
        ["http://a.test"],
    )
    assert fetcher.stats.rate_limited == 1 and got


async def test_waits_for_a_ban_are_counted_with_their_seconds() -> None:
    got, fetcher, seen = await _fetch(
        {"a.test": [httpx.Response(200, content=GOOD_BODY)]},
        ["http://a.test"],
        0.05,
    )
    assert got and len(seen) == 1
    assert fetcher.stats.rate_limit_waits >= 1, "the request waited for the ban to end"
    assert 0.04 < fetcher.stats.rate_limit_wait_s <= 0.05 * fetcher.stats.rate_limit_waits
    assert fetcher.stats.rate_limited == 0, "no response said so"


async def test_subscriptions_are_sent_as_text_on_every_connect_then_pings_and_queued_messages() -> (
    None
):
    inbox = Inbox(close_on="close me")
    received, arrived = inbox.received, inbox.arrived

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
        assert conn.send([b"too early"]) is Sent.DROPPED, "nothing is queued while down"
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(conn.run())
            await wait_until(arrived, lambda: received.count("ping") >= 2)
            assert conn.send([b"close me"]) is Sent.QUEUED
            await wait_until(arrived, lambda: received.count('{"op":"subscribe"}') >= 2)
            task.cancel()
        assert received[0] == '{"op":"subscribe"}', "text frames, subscriptions first"
        assert "too early" not in received
        assert conn.stats.messages_dropped == 1 and conn.stats.reconnects >= 1

    await _with_server(inbox.handler, body)


async def test_a_resubscription_already_queued_is_not_queued_again_nor_budgeted() -> None:
    """A symbol failing again before its resubscription was written needs no second one:
    the snapshot the queued one brings follows every failure before it. Once its last
    message was written (``on_sent`` told), the symbol's next resubscription is queued
    again. A budget given is spent for the messages queued only: none for a group answered
    by a queued one or dropped; none queued when it has no room."""
    inbox = Inbox()
    received, arrived = inbox.received, inbox.arrived
    written = Written()
    told, wrote = written.told, written.changes

    async def body(url: str) -> None:
        rec = Recorder()
        conn = _connection(
            url,
            rec,
            subscribe_messages=[b"subscribe"],
            max_messages_per_s=1000.0,
            on_sent=written.on_sent,
        )
        budget = AttemptBudget(6, 3600.0, share=1.0)
        again = [b"unsubscribe X", b"subscribe X"]

        def send(messages: list[bytes], key: str) -> Sent:
            return conn.send(messages, key=key, budget=budget, now_s=0.0)

        assert send(again, "X") is Sent.DROPPED and budget.attempts == 0, "down"
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(conn.run())
            await wait_until(arrived, lambda: received == ["subscribe"])
            await wait_until(wrote, lambda: told == [(7, None)])  # the subscription
            # No await between: the writer takes nothing meanwhile.
            assert send(again, "X") is Sent.QUEUED
            assert send(again, "X") is Sent.ANSWERED, "answered by the queued one"
            assert send([b"unsubscribe Y", b"subscribe Y"], "Y") is Sent.QUEUED
            assert send(again, "X") is Sent.ANSWERED
            assert budget.attempts == 4
            await wait_until(arrived, lambda: len(received) >= 5)
            assert received[1:] == ["unsubscribe X", "subscribe X", "unsubscribe Y", "subscribe Y"]
            await wait_until(wrote, lambda: told == [(7, None), (7, "X"), (7, "Y")])  # each once
            assert send(again, "X") is Sent.QUEUED, "sent already: queued again"
            zed = [b"unsubscribe Z", b"subscribe Z"]
            assert send(zed, "Z") is Sent.OVER_BUDGET
            assert budget.attempts == 6
            # Not queued over budget: without a budget it is queued, not answered.
            assert conn.send(zed, key="Z") is Sent.QUEUED
            await wait_until(arrived, lambda: len(received) >= 9)
            await wait_until(wrote, lambda: len(told) == 5)
            task.cancel()
        assert received[5:] == ["unsubscribe X", "subscribe X", "unsubscribe Z", "subscribe Z"]
        assert told[3:] == [(7, "X"), (7, "Z")], "each written group told once"
        assert conn.stats.messages_dropped == 2  # the two sent while down

    await _with_server(inbox.handler, body)


def test_a_group_is_queued_only_when_all_of_it_fits_the_budget() -> None:
    """A resubscription of two messages with one attempt left in the window is not queued
    (OVER_BUDGET) and spends nothing: no part of a group goes past the venue's budget.
    Once the window has room for the whole group, it is queued and spends both."""
    conn = _connection("ws://127.0.0.1:1", Recorder())
    conn._outbox = asyncio.Queue(maxsize=8)  # as a session would: up, nothing written
    budget = AttemptBudget(3, 3600.0, share=1.0)
    assert conn.send([b"subscribe A"], key="A", budget=budget, now_s=0.0) is Sent.QUEUED
    assert conn.send([b"subscribe B"], key="B", budget=budget, now_s=10.0) is Sent.QUEUED
    group = [b"unsubscribe X", b"subscribe X"]
    assert conn.send(group, key="X", budget=budget, now_s=20.0) is Sent.OVER_BUDGET
    assert budget.attempts == 2 and conn._outbox.qsize() == 2
    # At 3600 s the first attempt left the window: two slots, the group fits.
    assert conn.send(group, key="X", budget=budget, now_s=3599.0) is Sent.OVER_BUDGET
    assert conn.send(group, key="X", budget=budget, now_s=3600.0) is Sent.QUEUED
    assert budget.attempts == 4 and conn._outbox.qsize() == 4
    assert budget.wait_s(3600.0) == pytest.approx(10.0), "full until B leaves"
    with pytest.raises(ValueError, match="never fit"):
        conn.send([b"a", b"b", b"c", b"d"], key="Y", budget=budget, now_s=10_000.0)
    assert conn._outbox.qsize() == 4, "a group that can never fit is not queued"


async def test_a_subscription_is_told_written_on_connect_and_when_sent_again() -> None:
    """``on_sent(conn_id, None)``: once the subscription's last message is written on
    connect, at once where there is none (the URL subscribes), and once a subscription
    sent again (:meth:`Connection.subscribe`) is written."""
    inbox, written = Inbox(), Written()
    received, arrived, told, wrote = inbox.received, inbox.arrived, written.told, written.changes

    async def body(url: str) -> None:
        rec = Recorder()
        two = [b"book", b"trades"]
        conn = _connection(
            url, rec, subscribe_messages=two, max_messages_per_s=1000.0, on_sent=written.on_sent
        )
        bare_written = Written()  # a connection with no subscribe messages
        bare = _connection(url, Recorder(), on_sent=bare_written.on_sent)
        assert conn.subscribe([b"again"]) is Sent.DROPPED, "down"
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(conn.run())
            await wait_until(arrived, lambda: received == ["book", "trades"])
            await wait_until(wrote, lambda: told == [(7, None)])  # once, for the two
            assert conn.subscribe([b"book again"]) is Sent.QUEUED
            await wait_until(wrote, lambda: len(told) == 2)
            assert told[1] == (7, None)
            await wait_until(arrived, lambda: received[2:] == ["book again"])
            other = tasks.create_task(bare.run())
            await wait_until(bare_written.changes, lambda: bare_written.told == [(7, None)])
            task.cancel()
            other.cancel()
        assert conn.stats.messages_dropped == 1

    await _with_server(inbox.handler, body)


# --- reconnect discipline on virtual time -----------------------------------------------------


async def _one_frame_then_close(ws: ServerConnection) -> None:
    await ws.send("one")
    await ws.close()


@pytest.mark.parametrize(("healthy_after_s", "backs_off"), [(10.0, True), (0.0, False)])
async def test_an_endpoint_that_sends_a_frame_and_closes_backs_off_until_healthy(
    healthy_after_s: float, backs_off: bool
) -> None:
    """Before, any frame reset the backoff: such an endpoint was reconnected at once,
    forever. Now only a connection healthy for ``healthy_after_s`` resets it."""

    async def body(url: str) -> None:
        rec, manual = Recorder(), ManualTime()
        conn = _connection(
            url,
            rec,
            backoff=Backoff(1.0, 64.0, random.Random(1)),
            healthy_after_s=healthy_after_s,
            manual=manual,
        )
        await _run_driven([conn], manual, lambda: conn.stats.connects >= 8)
        assert conn.stats.failed_attempts == 0 and len(rec.frames) >= 8
        if backs_off:
            assert conn.policy.backoff.failures >= 7
            assert conn.policy.backoff.ceiling_s() == 64.0, "the delays grew to the cap"
        else:
            assert conn.policy.backoff.failures <= 1

    await _with_server(_one_frame_then_close, body)


class RecordedBudget(AttemptBudget):
    """The real budget, keeping the time of every attempt spent."""

    def __init__(self, attempts_per_window: int, window_s: float) -> None:
        super().__init__(attempts_per_window, window_s, share=1.0)
        self.spent_at: list[float] = []

    def spend(self, now_s: float, *, attempts: int = 1) -> None:
        super().spend(now_s, attempts=attempts)
        self.spent_at.extend([now_s] * attempts)


async def test_every_attempt_of_a_venues_connections_waits_for_the_shared_budget() -> None:
    async def body(url: str) -> None:
        rec, manual = Recorder(), ManualTime()
        budget = RecordedBudget(3, 100.0)
        # Healthy at their first frame: without the budget they would reconnect at once.
        connections = [
            _connection(url, rec, attempts=budget, manual=manual, healthy_after_s=0.0)
            for _ in range(2)
        ]

        await _run_driven(connections, manual, lambda: len(budget.spent_at) >= 9)
        assert sum(conn.stats.connects for conn in connections) >= 8
        assert sum(conn.stats.budget_waits for conn in connections) >= 2
        for t in budget.spent_at:
            assert sum(1 for u in budget.spent_at if u <= t < u + 100.0) <= 3

    await _with_server(_one_frame_then_close, body)


@pytest.mark.async_timeout_s(10)
async def test_failures_a_venue_repeats_are_logged_a_few_times_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec, manual = Recorder(), ManualTime()
    conn = _connection("ws://127.0.0.1:9/stream", rec, manual=manual)  # refused
    with caplog.at_level(logging.INFO, logger="gateway.io.upstream"):
        await _run_driven([conn], manual, lambda: conn.stats.failed_attempts >= 30)
    lines = [r for r in caplog.records if r.name == "gateway.io.upstream"]
    assert 1 <= len(lines) <= 5, "30 failures of one kind, within one minute"
    assert conn._log.suppressed >= 25


# --- REST bodies are read as a bounded stream -------------------------------------------------


class _HttpServer:
    """A loopback HTTP/1.1 server answering every request with ``body_bytes`` of one
    snapshot body padded with spaces, streamed in chunks, with or without Content-Length;
    it counts the bytes it managed to send before the client stopped reading."""

    def __init__(self, body_bytes: int, *, declare_length: bool) -> None:
        self.body_bytes = body_bytes
        self.declare_length = declare_length
        self.sent = 0
        self.done = StateChanges()
        self.closed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            length = f"Content-Length: {self.body_bytes}\r\n" if self.declare_length else ""
            chunked = "" if self.declare_length else "Transfer-Encoding: chunked\r\n"
            writer.write(f"HTTP/1.1 200 OK\r\n{length}{chunked}\r\n".encode())
            chunk = GOOD_BODY + b" " * (64 * 1024 - len(GOOD_BODY))
            left = self.body_bytes
            while left > 0:
                part = chunk[: min(left, len(chunk))]
                framed = part if self.declare_length else b"%x\r\n%s\r\n" % (len(part), part)
                writer.write(framed)
                await writer.drain()
                self.sent += len(part)
                left -= len(part)
            if not self.declare_length:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed += 1
            self.done.notify()


@pytest.mark.parametrize("declare_length", [True, False])
async def test_an_oversized_rest_body_is_abandoned_unread_as_a_failed_fetch(
    declare_length: bool, caplog: pytest.LogCaptureFixture
) -> None:
    body_bytes = 256 * 1024 * 1024  # never sent whole: the client stops reading
    huge = _HttpServer(body_bytes, declare_length=declare_length)
    good = _HttpServer(len(GOOD_BODY), declare_length=True)

    async with (
        await asyncio.start_server(huge.handle, "127.0.0.1", 0) as huge_server,
        await asyncio.start_server(good.handle, "127.0.0.1", 0) as good_server,
    ):
        bases = [
            f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            for server in (huge_server, good_server)
        ]
        got, fetcher, fetched = _fetcher(bases, max_body_bytes=1024 * 1024)
        fetcher.request("BTCUSDT", 1)
        with caplog.at_level(logging.WARNING, logger="gateway.io.upstream"):
            await run_until(fetcher.run, fetched, lambda: bool(got))
        await huge.done.wait_until(lambda: huge.closed == 1)
        assert [s.last_id for s in got] == [42], "the next base served the snapshot"
        assert fetcher.stats.oversized == 1 and fetcher.stats.failures == 1
        assert "BodyTooLarge" in fetcher.stats.last_error
        assert any("BodyTooLarge" in r.getMessage() for r in caplog.records)
        assert huge.sent < body_bytes // 4, "the body was not read whole"


async def test_a_handshake_refused_with_429_blocks_the_shared_budget_for_its_retry_after() -> None:
    async def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "slow down\n")

    async with ws_serving(_one_frame_then_close, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        rec = Recorder()
        budget = AttemptBudget(100, 60.0)
        manual = ManualTime()  # the refusal's time is the budget's: the wait is exact
        conn = _connection(f"ws://127.0.0.1:{port}/stream", rec, manual=manual, attempts=budget)
        await run_until(conn.run, rec.changes, lambda: conn.stats.rate_limited >= 1)
    assert conn.stats.failed_attempts == 1 and not conn.stats.connected
    # No Retry-After given: the default wait, for every connection of the budget.
    assert budget.wait_s(manual.now_s) == DEFAULT_RETRY_AFTER_S


@pytest.mark.async_timeout_s(10)
async def test_symbols_are_fetched_concurrently_within_the_bound_each_with_its_own_retries() -> (
    None
):
    """A's answers fail while B and C are fetched side by side (two requests in flight,
    the bound); A's snapshot goes to the attempt current when it was asked."""
    failing = {"A"}
    in_barrier: set[str] = set()
    barrier = asyncio.Event()

    async def respond(request: httpx.Request) -> httpx.Response:
        symbol = request.url.params["symbol"]
        if symbol in failing:
            return httpx.Response(503, text="down")
        in_barrier.add(symbol)
        if in_barrier >= {"B", "C"}:
            barrier.set()
        await barrier.wait()  # B and C must be in flight together
        return httpx.Response(200, content=GOOD_BODY)

    got: list[tuple[str, int]] = []
    fetched = StateChanges()

    def on_snapshot(snapshot: DepthSnapshot, attempt: int) -> None:
        got.append((snapshot.symbol, attempt))
        fetched.notify()

    fetcher = SnapshotFetcher(
        adapter_for("binance"),
        ["http://a.test"],
        limit=1000,
        on_snapshot=on_snapshot,
        timeout_s=5.0,
        backoff_initial_s=0.001,
        backoff_max_s=0.01,
        max_concurrent=2,
        transport=httpx.MockTransport(respond),
    )

    for symbol in ("A", "B", "C"):
        fetcher.request(symbol, 1)
    await run_until(fetcher.run, fetched, lambda: len(got) == 2)
    assert sorted(got) == [("B", 1), ("C", 1)]
    assert fetcher.stats.failures >= 1 and fetcher.stats.max_in_flight == 2
    failing.clear()
    fetcher.request("A", 1)
    fetcher.request("A", 2)  # superseded before it was answered
    await run_until(fetcher.run, fetched, lambda: len(got) == 3)
    assert got[-1] == ("A", 2) and fetcher.stats.in_flight == 0


#: Run in a fresh interpreter (what an earlier test imported is not there): a fetcher made,
#: then run, fetching one snapshot over a real socket; prints the modules that the run and
#: the fetch imported.
_FIRST_FETCH = """
import asyncio, sys
from gateway.io.upstream import SnapshotFetcher
from gateway.wire.venues import adapter_for

BODY = b'{"lastUpdateId":7,"bids":[["1.0","2.0"]],"asks":[["1.5","3.0"]]}'

async def answer(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n"
                 % len(BODY) + BODY)
    await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got = asyncio.Event()
    new = []
    fetcher = SnapshotFetcher(
        adapter_for("binance"), [f"http://127.0.0.1:{port}"], limit=10,
        on_snapshot=lambda snapshot, attempt: (new.extend(set(sys.modules) - before), got.set()),
        timeout_s=5.0,
    )
    before = set(sys.modules)
    task = asyncio.create_task(fetcher.run())
    fetcher.request("BTCUSDT", 1)
    await asyncio.wait_for(got.wait(), 10.0)
    task.cancel()
    server.close()
    assert fetcher.stats.snapshots == 1, fetcher.stats
    print(sorted(new))

asyncio.run(main())
"""


def test_the_first_snapshot_fetch_imports_nothing_on_the_event_loop() -> None:
    """httpx loads its network backend (anyio's) on its first request; imported there,
    it would block the event loop, frames waiting, for tens of ms. A fetcher loads it
    when it is made: its run and its first fetch import nothing."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_FETCH],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", "imported by the first fetch"
