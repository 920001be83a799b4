"""The fault language (feeds.sim.faults) and its application by SimVenue, seen on the wire
with a raw websockets client on loopback (the simulated OKX venue)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from feeds import binance, okx
from feeds.sim import binance_spot as binance_render
from feeds.sim.faults import FaultPlan, FaultSpecError, FrameFault, Window, corrupt, parse
from feeds.sim.simulators import SimBinanceSpot, SimOkx

SYMBOL = "BTC-USDT"
BINANCE_SYMBOL = "BTCUSDT"
DEADLINE_S = 10.0
EXAMPLE = (
    "ep0:close@5;ep1:stall@3+2;ep*:drop=0.01,dup=0.01,delay=5ms~2ms,reorder=3;"
    "ep2:corrupt=0.001;ep1:refuse@10+2;ep0:notice@8;rest:429@4+2,retry_after=1;"
    "rest:5xx=0.1;rest:slow=200ms"
)


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(DEADLINE_S):
            await test()

    asyncio.run(bounded())


# --- the language ---------------------------------------------------------------------------


def test_example_spec_parses_and_merges_the_wildcard() -> None:
    spec = parse(EXAMPLE)
    assert spec.endpoints["0"].closes == (5.0,)
    assert spec.endpoints["1"].stalls == (Window(3.0, 2.0),)
    assert spec.endpoints["*"].delay_s == pytest.approx(0.005)
    assert spec.endpoints["*"].jitter_s == pytest.approx(0.002)
    assert spec.rest.retry_after_s == 1.0 and spec.rest.slow_s == pytest.approx(0.2)
    plan = FaultPlan(EXAMPLE, seed=1, n_endpoints=3)
    assert plan.endpoints[2].corrupt == 0.001 and plan.endpoints[2].drop == 0.01
    assert plan.endpoints[1].reorder == 3
    assert plan.stalled(1, 4.0) == 5.0 and plan.stalled(1, 5.0) is None
    assert plan.refusing(1, 11.0) and not plan.refusing(1, 12.0)
    assert plan.notice_due(0, 8.0) == (8.0,) and plan.notice_due(0, 7.9) == ()
    assert plan.closed_at(0) == (5.0,)
    kinds = [(a.t_s, a.kind, a.endpoint) for a in plan.schedule()]
    assert kinds == [
        (5.0, "close", 0),
        (8.0, "notice", 0),
        (10.0, "refuse", 1),
        (12.0, "reopen", 1),
    ]
    fault = plan.rest_fault(4.5)
    assert fault is not None and fault.status == 429 and fault.retry_after_s == 1.0
    assert fault.extra_delay_s == pytest.approx(0.2)
    assert parse("") == parse(" ; ")
    assert FaultPlan("", 1, 1).decide(0, 0) == FrameFault()


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("ep0:explode@1", "explode@1"),
        ("ep0:drop=2", "drop=2"),
        ("ep0:drop=x", "drop=x"),
        ("x:close@1", "'x'"),
        ("ep0", "'ep0'"),
        ("ep0:delay=fast", "delay=fast"),
        ("ep0:stall@3", "stall@3"),
        ("ep0:reorder=0", "reorder=0"),
        ("ep0:close@1,,dup=0.1", "ep0:close@1,,dup=0.1"),
        ("rest:999@1+1", "999@1+1"),
        ("rest:slow@1+1", "slow@1+1"),
        ("rest:retry_after=soon", "retry_after=soon"),
    ],
)
def test_bad_tokens_are_named(spec: str, named: str) -> None:
    with pytest.raises(FaultSpecError, match=named.replace("+", r"\+").replace("*", r"\*")):
        parse(spec)


def test_unknown_endpoint_is_named() -> None:
    with pytest.raises(FaultSpecError, match="ep9"):
        FaultPlan("ep9:close@1", 1, 3)


def test_decisions_are_deterministic_by_seed_and_independent_of_order() -> None:
    spec = "ep*:drop=0.1,dup=0.1,delay=5ms~2ms,reorder=3,corrupt=0.1;rest:5xx=0.3"
    first = FaultPlan(spec, 7, 2)
    again = FaultPlan(spec, 7, 2)
    other = FaultPlan(spec, 8, 2)
    forward = [first.decide(e, i) for e in (0, 1) for i in range(500)]
    backward = {(e, i): again.decide(e, i) for e in (1, 0) for i in reversed(range(500))}
    assert forward == [backward[e, i] for e in (0, 1) for i in range(500)]
    assert forward != [other.decide(e, i) for e in (0, 1) for i in range(500)]
    assert forward[:500] != forward[500:]  # endpoints draw apart
    rest = [first.rest_fault(1.0, i) for i in range(200)]
    assert rest == [again.rest_fault(1.0, i) for i in range(200)]
    assert rest != [other.rest_fault(1.0, i) for i in range(200)]
    drops = sum(f.drop for f in forward)
    assert 60 < drops < 140  # p = 0.1 of 1000
    assert {f.corrupt for f in forward} == {None, "truncate", "invalid"}
    assert {f.hold for f in forward} == {0, 1, 2}


@pytest.mark.parametrize("how", ["truncate", "invalid"])
def test_corrupt_frames_do_not_decode(how: str) -> None:
    for frame in (b'{"a":1,"b":[1,2,3]}', b"{}", b"[]", b"1"):
        bad = corrupt(frame, how)  # type: ignore[arg-type]
        assert bad != frame
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(bad)


# --- on the wire ----------------------------------------------------------------------------


async def subscribed(sim: SimOkx) -> ClientConnection:
    ws = await connect(sim.public_urls[0], open_timeout=5.0)
    for request in okx.subscribe_messages([SYMBOL]):
        await ws.send(request)
    return ws


async def collect(ws: ClientConnection, duration_s: float) -> list[tuple[float, bytes]]:
    """Frames (arrival time, bytes) received for ``duration_s`` or until the close."""
    frames: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_s
    try:
        while (left := end - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):
                    message = await ws.recv()
            except TimeoutError:
                break
            raw = message.encode() if isinstance(message, str) else message
            frames.append((loop.time(), raw))
    except ConnectionClosed:
        pass
    return frames


def book_ids(frames: list[tuple[float, bytes]]) -> list[tuple[int, int]]:
    """``(prevSeqId, seqId)`` of every decodable book frame."""
    ids = []
    for _, raw in frames:
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            continue
        if isinstance(decoded, dict) and decoded.get("arg", {}).get("channel") == okx.CHANNEL:
            for item in decoded.get("data", []):
                ids.append((int(item["prevSeqId"]), int(item["seqId"])))
    return ids


async def frames_with(spec: str, duration_s: float = 0.6) -> list[tuple[float, bytes]]:
    plan = FaultPlan(spec, seed=3, n_endpoints=1)
    async with (
        SimOkx([SYMBOL], 1, seed=3, interval_s=0.01, faults=plan) as sim,
        await subscribed(sim) as ws,
    ):
        return await collect(ws, duration_s)


def test_drop_leaves_gaps_in_the_ids() -> None:
    async def body() -> None:
        ids = book_ids(await frames_with("ep0:drop=0.3"))
        assert len(ids) > 10
        assert any(prev != last for (_, last), (prev, _) in itertools.pairwise(ids))

    run(body)


def test_dup_sends_frames_twice() -> None:
    async def body() -> None:
        frames = [raw for _, raw in await frames_with("ep0:dup=0.3")]
        assert any(a == b for a, b in itertools.pairwise(frames))

    run(body)


def test_reorder_sends_ids_out_of_order_and_loses_nothing() -> None:
    async def body() -> None:
        ids = book_ids(await frames_with("ep0:reorder=3"))
        seqs = [last for _, last in ids]
        assert seqs != sorted(seqs)
        linked = {prev for prev, _ in ids}
        assert all(s in linked for s in sorted(seqs)[:-3])  # no gap once sorted

    run(body)


def test_corrupt_sends_undecodable_frames() -> None:
    async def body() -> None:
        frames = await frames_with("ep0:corrupt=0.3")
        bad = 0
        for _, raw in frames:
            try:
                msgspec.json.decode(raw)
            except msgspec.DecodeError:
                bad += 1
        assert 0 < bad < len(frames)

    run(body)


def test_delay_holds_every_frame() -> None:
    async def body() -> None:
        plan = FaultPlan("ep0:delay=150ms~20ms", 1, 1)
        async with (
            SimOkx([SYMBOL], 1, interval_s=0.01, faults=plan) as sim,
            await subscribed(sim) as ws,
        ):
            sent = asyncio.get_running_loop().time()
            frames = await collect(ws, 0.4)
        assert frames and frames[0][0] - sent >= 0.14

    run(body)


def test_stall_keeps_the_socket_open_and_sends_nothing() -> None:
    async def body() -> None:
        plan = FaultPlan("ep0:stall@0.3+0.4", 1, 1)
        async with (
            SimOkx([SYMBOL], 1, interval_s=0.01, faults=plan) as sim,
            await subscribed(sim) as ws,
        ):
            frames = await collect(ws, 1.0)
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(frames)]
            assert max(gaps) >= 0.3
            assert frames[-1][0] > frames[0][0] + 0.7  # resumed on the same socket
            await ws.ping()

    run(body)


def test_close_and_notice_and_refuse() -> None:
    async def body() -> None:
        plan = FaultPlan("ep0:notice@0.1,close@0.3,refuse@0.5+0.4", 1, 1)
        async with SimOkx([SYMBOL], 1, interval_s=0.01, faults=plan) as sim:
            loop = asyncio.get_running_loop()
            start = loop.time()
            async with await subscribed(sim) as ws:
                frames = await collect(ws, 2.0)
                assert ws.close_code == 1001
            assert 0.2 < loop.time() - start < 0.6
            assert any(b'"64008"' in raw for _, raw in frames)
            assert sim.stats(0).shutdown_notices == 1
            async with await subscribed(sim) as ws:  # closing is not refusing
                frames = await collect(ws, 2.0)  # until the refuse window closes it
                assert book_ids(frames) and ws.close_code == 1001
            assert loop.time() - start < 0.9
            with pytest.raises(OSError):
                await connect(sim.public_urls[0], open_timeout=1.0)
            await asyncio.sleep(max(0.0, start + 1.0 - loop.time()))
            async with await subscribed(sim) as ws:
                assert book_ids(await collect(ws, 0.2))

    run(body)


def test_rest_faults() -> None:
    async def body() -> None:
        spec = "rest:429@0+0.5,retry_after=2;rest:418@0.5+0.3;rest:slow@0.8+5=200ms"
        plan = FaultPlan(spec, 1, 1)
        async with SimOkx([SYMBOL], 1, interval_s=0.01, faults=plan) as sim:
            assert sim.rest_url is not None
            url = okx.snapshot_url(sim.rest_url, SYMBOL, 5)
            loop = asyncio.get_running_loop()
            start = loop.time()
            async with httpx.AsyncClient(timeout=5.0) as client:
                first = await client.get(url)
                assert first.status_code == 429 and first.headers["Retry-After"] == "2"
                await asyncio.sleep(max(0.0, start + 0.55 - loop.time()))
                assert (await client.get(url)).status_code == 418
                await asyncio.sleep(max(0.0, start + 0.85 - loop.time()))
                t0 = time.monotonic()
                slow = await client.get(url)
                assert slow.status_code == 200 and time.monotonic() - t0 >= 0.19
        five = FaultPlan("rest:5xx=1", 1, 1)
        async with SimOkx([SYMBOL], 1, interval_s=0.01, faults=five) as sim:
            assert sim.rest_url is not None
            url = okx.snapshot_url(sim.rest_url, SYMBOL, 5)
            async with httpx.AsyncClient(timeout=5.0) as client:
                assert 500 <= (await client.get(url)).status_code < 600

    run(body)


def test_binance_spot_applies_the_same_language() -> None:
    async def body() -> None:
        spec = "ep0:dup=0.3,corrupt=0.2,notice@0.2,close@0.5;rest:429@0+10,retry_after=3"
        plan = FaultPlan(spec, 1, 1)
        async with SimBinanceSpot([BINANCE_SYMBOL], 1, interval_s=0.01, faults=plan) as sim:
            loop = asyncio.get_running_loop()
            start = loop.time()
            url = binance.stream_url(sim.endpoint_urls[0], [BINANCE_SYMBOL])
            async with connect(url, open_timeout=5.0) as ws:
                frames = [raw for _, raw in await collect(ws, 2.0)]
                assert ws.close_code == 1001
            assert loop.time() - start < 0.9
            assert any(a == b for a, b in itertools.pairwise(frames))
            assert any(binance_render.SHUTDOWN_STREAM.encode() in raw for raw in frames)
            assert sim.stats(0).shutdown_notices == 1
            undecodable = 0
            for raw in frames:
                try:
                    msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    undecodable += 1
            assert undecodable
            async with httpx.AsyncClient(timeout=5.0) as client:
                limited = await client.get(binance.snapshot_url(sim.rest_url, BINANCE_SYMBOL, 5))
            assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"

    run(body)
