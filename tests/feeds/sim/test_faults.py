"""The fault language (feeds.sim.faults): the plan and a connection's frame faults with a
driven clock, the schedule of timed actions with a driven clock, and their application by
the server shell seen on the wire with a raw websockets client on loopback (the simulated
OKX and Binance venues), where only order and causality are asserted."""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from feeds import binance
from feeds import okx
from feeds.sim import binance_spot
from feeds.sim.faults import DEFAULT_OVERSIZE_LEVELS
from feeds.sim.faults import NUMBER_STYLES
from feeds.sim.faults import RESTART_FIRST_ID
from feeds.sim.faults import Action
from feeds.sim.faults import ContentWindow
from feeds.sim.faults import CorruptHow
from feeds.sim.faults import FaultedStream
from feeds.sim.faults import FaultPlan
from feeds.sim.faults import FaultSpecError
from feeds.sim.faults import FrameFault
from feeds.sim.faults import Release
from feeds.sim.faults import RestFault
from feeds.sim.faults import Window
from feeds.sim.faults import corrupt
from feeds.sim.faults import parse
from feeds.sim.limits import SimLimits
from feeds.sim.replay import ReplayServer
from feeds.sim.replay_plan import ReplayPlan
from feeds.sim.replay_plan import build_plan
from feeds.sim.shell import run_fault_schedule
from feeds.sim.simulators import SimBinanceSpot
from feeds.sim.simulators import SimOkx
from gateway.capture import REST_CONN_ID
from gateway.capture import CaptureRecord
from gateway.capture import inline_snapshot_url

from .conftest import get
from .conftest import rest_base

SYMBOL = "BTC-USDT"
BINANCE_SYMBOL = "BTCUSDT"
EXAMPLE = (
    "ep0:close@5;ep1:stall@3+2;ep*:drop=0.01,dup=0.01,delay=5ms~2ms,reorder=3;"
    "ep2:corrupt=0.001;ep1:refuse@10+2;ep0:notice@8;rest:429@4+2,retry_after=1;"
    "rest:5xx=0.1;rest:slow=200ms"
)


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
        ("ep0:mangle=1.5", "mangle=1.5"),
        ("ep0:cross@1", "cross@1"),
        ("ep0:flap=0.1", "flap=0.1"),
        ("ep0:oversize_levels=0", "oversize_levels=0"),
        ("rest:oversize_levels=many", "oversize_levels=many"),
        ("rest:oversize@1", "oversize@1"),
        ("venue:restart", "'restart'"),
        ("venue:restart@soon", "restart@soon"),
        ("venue:close@1", "close@1"),
    ],
)
def test_bad_tokens_are_named(spec: str, named: str) -> None:
    with pytest.raises(FaultSpecError, match=named.replace("+", r"\+").replace("*", r"\*")):
        parse(spec)


NEW_CLAUSES = (
    "venue:restart@20,restart@5;ep1:mangle@4+1,numbers=0.01;"
    "ep2:farid=0.001,cross@6+0.1,oversize@7+0.1,flap@8+3,oversize_levels=1000;"
    "ep*:cross=0.5;rest:oversize@9+1,oversize=0.2,oversize_levels=2000"
)


def test_the_misbehaviour_clauses_parse() -> None:
    spec = parse(NEW_CLAUSES)
    assert spec.venue.restarts == (5.0, 20.0)
    ep1, ep2 = spec.endpoints["1"], spec.endpoints["2"]
    assert ep1.content_windows == (ContentWindow("mangle", Window(4.0, 1.0)),)
    assert ep1.content == {"numbers": 0.01}
    assert ep2.content == {"farid": 0.001}
    assert [w.kind for w in ep2.content_windows] == ["cross", "oversize"]
    assert ep2.flaps == (Window(8.0, 3.0),) and ep2.oversize_levels == 1000
    assert spec.endpoints["*"].content == {"cross": 0.5}
    assert spec.rest.oversize_windows == (Window(9.0, 1.0),)
    assert spec.rest.oversize == 0.2 and spec.rest.oversize_levels == 2000
    plan = FaultPlan(NEW_CLAUSES, 1, 3)
    # The wildcard's rate adds to an endpoint's own content rates.
    assert plan.endpoints[2].content == {"cross": 0.5, "farid": 0.001}
    assert plan.endpoints[0].oversize_levels is None
    assert parse("rest:oversize@1+1").rest.oversize_levels == DEFAULT_OVERSIZE_LEVELS


def test_content_windows_decide_by_time_and_name_the_rewrite() -> None:
    plan = FaultPlan("ep0:mangle@1+1,numbers@3+1,cross@5+1,oversize@7+1;ep1:farid@1+1", 4, 2)
    assert plan.decide(0, 0, 0.5) == FrameFault() and not plan.decide(0, 0, 0.5).rewrites
    assert plan.decide(0, 0, 1.0).ids == "mangle" and plan.decide(0, 0, 1.0).rewrites
    assert plan.decide(0, 0, 2.0) == FrameFault()
    assert plan.decide(1, 0, 1.5).ids == "far"
    styles = {plan.decide(0, i, 3.5).numbers for i in range(200)}
    assert styles == set(NUMBER_STYLES)
    assert all(0.0 <= plan.decide(0, i, 3.5).pick < 1.0 for i in range(50))
    assert plan.decide(0, 9, 5.5).cross and not plan.decide(0, 9, 6.0).cross
    assert plan.decide(0, 9, 7.5).oversize == DEFAULT_OVERSIZE_LEVELS
    both = FaultPlan("ep0:mangle@0+1,farid@0+1", 4, 1)
    assert both.decide(0, 0, 0.5).ids == "mangle"


def test_content_rates_are_seeded_and_combine_with_frame_faults() -> None:
    spec = "ep0:numbers=0.1,cross=0.1,farid=0.1,mangle=0.05,oversize=0.02,oversize_levels=7"
    plan, again = FaultPlan(spec, 5, 1), FaultPlan(spec, 5, 1)
    decided = [plan.decide(0, i) for i in range(2000)]
    assert decided == [again.decide(0, i) for i in reversed(range(2000))][::-1]
    assert decided != [FaultPlan(spec, 6, 1).decide(0, i) for i in range(2000)]
    assert 130 < sum(f.numbers is not None for f in decided) < 270
    assert 130 < sum(f.cross for f in decided) < 270
    assert 20 < sum(f.oversize == 7 for f in decided) < 70
    assert {f.ids for f in decided} == {None, "far", "mangle"}
    mixed = FaultPlan("ep0:cross@0+1,dup=1,delay=5ms", 5, 1).decide(0, 3, 0.5)
    assert mixed.cross and mixed.duplicate and mixed.delay_s == pytest.approx(0.005)
    assert FaultPlan("ep0:cross@0+1,drop=1", 5, 1).decide(0, 3, 0.5) == FrameFault(drop=True)


def test_alter_is_planned_per_endpoint_by_rate_and_window() -> None:
    plan = FaultPlan("ep1:alter=0.1;ep0:alter@2+1", 5, 2)
    decided = [plan.decide(1, i) for i in range(2000)]
    assert 130 < sum(f.alter for f in decided) < 270
    assert all(f.ids is None and f.rewrites == f.alter for f in decided)
    assert plan.decide(0, 0, 2.5).alter and not plan.decide(0, 0, 3.5).alter


def test_rest_alter_is_planned_in_its_window() -> None:
    plan = FaultPlan("rest:alter@2+1", 9, 1)
    fault = plan.rest_fault(2.5)
    assert fault is not None and fault.alter and fault.status is None
    assert plan.rest_fault(3.5) is None


def test_flapping_restarts_and_rest_oversize_are_planned() -> None:
    plan = FaultPlan("ep1:flap@2+1;venue:restart@1.5;rest:oversize@4+1", 9, 2)
    assert plan.flapping(1, 2.0) and plan.flapping(1, 2.9) and not plan.flapping(1, 3.0)
    assert not plan.flapping(0, 2.5)
    assert plan.restarts() == (1.5,)
    assert plan.schedule() == [Action(1.5, "restart", None)]
    first_id = plan.restart_first_id(1.5)
    assert first_id == FaultPlan("venue:restart@1.5", 9, 1).restart_first_id(1.5)
    assert RESTART_FIRST_ID <= first_id < 2 * RESTART_FIRST_ID
    assert plan.rest_fault(3.9, 0) is None
    big = plan.rest_fault(4.5, 1)
    assert big == RestFault(None, None, 0.0, DEFAULT_OVERSIZE_LEVELS)
    sometimes = FaultPlan("rest:oversize=0.3", 9, 1)
    hits = sum(bool(sometimes.rest_fault(0.0, i)) for i in range(1000))
    assert 230 < hits < 370


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
def test_corrupt_frames_do_not_decode(how: CorruptHow) -> None:
    for frame in (b'{"a":1,"b":[1,2,3]}', b"{}", b"[]", b"1"):
        bad = corrupt(frame, how)
        assert bad != frame
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(bad)


# --- one connection's frames, with a driven clock -------------------------------------------


def test_delay_releases_each_frame_late_and_never_out_of_order() -> None:
    stream = FaultedStream()
    first = stream.admit(FrameFault(delay_s=0.15), 1.0, b"a")
    second = stream.admit(FrameFault(delay_s=0.05), 1.01, b"b")  # less delay: still after a
    third = stream.admit(FrameFault(delay_s=0.15), 1.2, b"c")
    assert first == Release(1.15, (b"a",))
    assert second == Release(1.15, (b"b",))
    assert third is not None
    assert third.not_before_s == pytest.approx(1.35) and third.frames == (b"c",)
    plan = FaultPlan("ep0:delay=150ms~20ms", 1, 1)
    stream = FaultedStream()
    releases = [stream.admit(plan.decide(0, i), i * 0.01, b"x") for i in range(100)]
    times = [r.not_before_s for r in releases if r is not None]
    assert times == sorted(times)
    assert all(0.15 <= r - i * 0.01 <= 0.17 + 1e-9 for i, r in enumerate(times))


def test_hold_releases_a_frame_behind_the_next_ones_and_flush_empties() -> None:
    stream = FaultedStream()
    assert stream.admit(FrameFault(hold=2), 0.0, b"a") == Release(0.0, ())
    assert stream.holding
    assert stream.admit(FrameFault(), 0.0, b"b") == Release(0.0, (b"b",))
    assert stream.admit(FrameFault(), 0.0, b"c") == Release(0.0, (b"c", b"a"))
    assert not stream.holding
    stream.admit(FrameFault(hold=1), 0.0, b"d")
    stream.admit(FrameFault(hold=2), 0.0, b"e")
    assert stream.flush() == (b"d", b"e") and stream.flush() == ()


def test_drop_dup_and_corrupt_of_one_frame() -> None:
    stream = FaultedStream()
    assert stream.admit(FrameFault(drop=True, delay_s=5.0), 0.0, b"a") is None
    assert stream.admit(FrameFault(duplicate=True), 0.0, b"b") == Release(0.0, (b"b", b"b"))
    bad = stream.admit(FrameFault(corrupt="invalid"), 0.0, b"{}")
    assert bad == Release(0.0, (b"}{}",))


def test_a_stall_resumes_at_its_end_and_back_to_back_stalls_are_one() -> None:
    plan = FaultPlan("ep0:stall@1+1,stall@2+0.5,stall@5+1;ep1:stall@1+1", 1, 2)
    assert plan.resume_s(0, 0.5) == 0.5
    assert plan.resume_s(0, 1.0) == 2.5
    assert plan.resume_s(0, 2.2) == 2.5
    assert plan.resume_s(0, 2.5) == 2.5
    assert plan.resume_s(0, 5.9) == 6.0
    assert plan.resume_s(1, 1.5) == 2.0


def test_rest_windows_answer_by_time() -> None:
    spec = "rest:429@0+0.5,retry_after=2;rest:418@0.5+0.3;rest:slow@0.8+5=200ms"
    plan = FaultPlan(spec, 1, 1)
    first = plan.rest_fault(0.0, 0)
    assert first is not None and (first.status, first.retry_after_s) == (429, 2.0)
    assert first.extra_delay_s == 0.0
    teapot = plan.rest_fault(0.55, 1)
    assert teapot is not None and (teapot.status, teapot.retry_after_s) == (418, None)
    slow = plan.rest_fault(0.85, 2)
    assert slow is not None and slow.status is None
    assert slow.extra_delay_s == pytest.approx(0.2)
    assert plan.rest_fault(6.0, 3) is None


# --- the schedule, with a driven clock ----------------------------------------------------------


async def test_the_schedule_applies_each_action_once_its_time_has_come() -> None:
    plan = FaultPlan("ep0:notice@0.1,close@0.3,refuse@0.5+0.4;ep1:close@0.3", 1, 2)
    clock = [0.0]
    applied: list[tuple[float, str, int | None]] = []

    async def sleep_until(t_s: float) -> None:
        clock[0] = max(clock[0], t_s)

    async def apply(action: Action) -> None:
        assert clock[0] >= action.t_s
        applied.append((clock[0], action.kind, action.endpoint))

    await run_fault_schedule(plan, apply, sleep_until)
    assert applied == [
        (0.1, "notice", 0),
        (0.3, "close", 0),
        (0.3, "close", 1),
        (0.5, "refuse", 0),
        (pytest.approx(0.9), "reopen", 0),
    ]


# --- on the wire ----------------------------------------------------------------------------


async def subscribed(sim: SimOkx) -> ClientConnection:
    # An unbounded queue: a client that stops reading still reads the closing handshake.
    ws = await connect(sim.public_urls[0], open_timeout=5.0, max_queue=None)
    for request in okx.subscribe_messages([SYMBOL]):
        await ws.send(request)
    return ws


async def collect(ws: ClientConnection, count: int) -> list[bytes]:
    """The next ``count`` frames, or those received until the connection closes."""
    frames: list[bytes] = []
    try:
        while len(frames) < count:
            message = await ws.recv()
            frames.append(message.encode() if isinstance(message, str) else message)
    except ConnectionClosed:
        pass
    return frames


def book_ids(frames: list[bytes]) -> list[tuple[int, int]]:
    """``(prevSeqId, seqId)`` of every decodable book frame."""
    ids = []
    for raw in frames:
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            continue
        if isinstance(decoded, dict) and decoded.get("arg", {}).get("channel") == okx.CHANNEL:
            for item in decoded.get("data", []):
                ids.append((int(item["prevSeqId"]), int(item["seqId"])))
    return ids


def undecodable(frames: list[bytes]) -> int:
    """How many of ``frames`` are not JSON."""
    bad = 0
    for raw in frames:
        try:
            msgspec.json.decode(raw)
        except msgspec.DecodeError:
            bad += 1
    return bad


async def frames_with(spec: str, count: int = 60) -> list[bytes]:
    plan = FaultPlan(spec, seed=3, n_endpoints=1)
    async with (
        SimOkx([SYMBOL], 1, seed=3, interval_s=0.01, faults=plan) as sim,
        await subscribed(sim) as ws,
    ):
        return await collect(ws, count)


async def test_drop_leaves_gaps_in_the_ids() -> None:
    ids = book_ids(await frames_with("ep0:drop=0.3"))
    assert len(ids) > 10
    assert any(prev != last for (_, last), (prev, _) in itertools.pairwise(ids))


async def test_dup_sends_frames_twice() -> None:
    frames = await frames_with("ep0:dup=0.3")
    assert any(a == b for a, b in itertools.pairwise(frames))


async def test_reorder_sends_ids_out_of_order_and_loses_nothing() -> None:
    ids = book_ids(await frames_with("ep0:reorder=3"))
    seqs = [last for _, last in ids]
    assert seqs != sorted(seqs)
    linked = {prev for prev, _ in ids}
    assert all(s in linked for s in sorted(seqs)[:-3])  # no gap once sorted


async def test_corrupt_sends_undecodable_frames() -> None:
    frames = await frames_with("ep0:corrupt=0.3")
    assert 0 < undecodable(frames) < len(frames)


async def test_delay_holds_every_frame_and_keeps_their_order() -> None:
    plan = FaultPlan("ep0:delay=150ms~20ms", 1, 1)
    async with SimOkx([SYMBOL], 1, interval_s=0.01, faults=plan) as sim:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        async with await subscribed(sim) as ws:
            first = await ws.recv()
            # Released no earlier than its delay after it was queued (after ``sent``).
            assert loop.time() - sent >= 0.15
            frames = [first.encode() if isinstance(first, str) else first]
            frames += await collect(ws, 30)
    ids = book_ids(frames)
    assert len(ids) > 10
    assert all(prev == last for (_, last), (prev, _) in itertools.pairwise(ids))


async def test_stall_keeps_the_socket_open_and_sends_nothing() -> None:
    plan = FaultPlan("ep0:stall@0+0.3", 1, 1)
    async with (
        SimOkx([SYMBOL], 1, interval_s=0.01, faults=plan) as sim,
        await subscribed(sim) as ws,
    ):
        first = await ws.recv()
        # Nothing, not even the subscribe answer, left before the stall's end.
        assert sim.fault_time() >= 0.3
        assert b'"event":"subscribe"' in (first.encode() if isinstance(first, str) else first)
        frames = await collect(ws, 20)
        assert len(book_ids(frames)) > 5  # resumed on the same socket
        await ws.ping()


async def test_close_notice_and_refuse_actions() -> None:
    plan = FaultPlan("ep0:notice@0.1,close@0.3,refuse@0.5+0.4", 1, 1)
    [notice, close, refuse, reopen] = plan.schedule()
    # The plan's times are far in the future for this venue: the test applies them.
    far = FaultPlan("ep0:notice@900", 1, 1)
    async with SimOkx([SYMBOL], 1, interval_s=0.01, faults=far) as sim:
        async with await subscribed(sim) as ws:
            assert book_ids(await collect(ws, 3))
            await sim.apply_fault(notice)
            while b'"64008"' not in await ws.recv(decode=False):
                pass
            assert sim.stats(0).shutdown_notices == 1
            await sim.apply_fault(close)
            await collect(ws, 10_000)  # until the close
            assert ws.close_code == 1001 and ws.close_reason == "fault: close"
        async with await subscribed(sim) as ws:  # closing is not refusing
            assert book_ids(await collect(ws, 3))
            await sim.apply_fault(refuse)
            await collect(ws, 10_000)
            assert ws.close_code == 1001 and ws.close_reason == "fault: refuse"
        with pytest.raises(OSError):
            await connect(sim.public_urls[0], open_timeout=1.0)
        await sim.apply_fault(reopen)
        async with await subscribed(sim) as ws:
            assert book_ids(await collect(ws, 3))


async def test_the_venue_runs_its_schedule() -> None:
    plan = FaultPlan("ep0:close@0.5", 1, 1)
    async with (
        SimOkx([SYMBOL], 1, interval_s=0.01, faults=plan) as sim,
        await subscribed(sim) as ws,
    ):
        await collect(ws, 10_000)  # until the close
        assert ws.close_code == 1001 and ws.close_reason == "fault: close"
        assert sim.fault_time() >= 0.5


async def test_rest_faults() -> None:
    for spec, status, retry_after in (
        ("rest:429@0+1000,retry_after=2", 429, "2"),
        ("rest:418@0+1000", 418, None),
        ("rest:slow=200ms", 200, None),
    ):
        plan = FaultPlan(spec, 1, 1)
        async with SimOkx([SYMBOL], 1, interval_s=0.01, faults=plan) as sim:
            url = okx.snapshot_url(rest_base(sim), SYMBOL, 5)
            loop = asyncio.get_running_loop()
            asked = loop.time()
            response = await get(url)
            assert response.status_code == status
            assert response.headers.get("Retry-After") == retry_after
            if spec.startswith("rest:slow"):
                assert loop.time() - asked >= 0.2  # answered after the extra delay
    five = FaultPlan("rest:5xx=1", 1, 1)
    async with SimOkx([SYMBOL], 1, interval_s=0.01, faults=five) as sim:
        assert 500 <= (await get(okx.snapshot_url(rest_base(sim), SYMBOL, 5))).status_code < 600


async def test_binance_spot_applies_the_same_language() -> None:
    spec = "ep0:dup=0.3,corrupt=0.2,notice@900;rest:429@0+1000,retry_after=3"
    plan = FaultPlan(spec, 1, 1)
    async with SimBinanceSpot([BINANCE_SYMBOL], 1, interval_s=0.01, faults=plan) as sim:
        url = binance.stream_url(sim.endpoint_urls[0], [BINANCE_SYMBOL])
        async with connect(url, open_timeout=5.0, max_queue=None) as ws:
            frames = await collect(ws, 30)
            await sim.apply_fault(Action(0.2, "notice", 0))
            shutdown = binance.SHUTDOWN_STREAM.encode()
            while shutdown not in frames[-1]:  # even corrupted, the stream name is left
                frames.append(await ws.recv(decode=False))
            assert sim.stats(0).shutdown_notices == 1
            await sim.apply_fault(Action(0.5, "close", 0))
            frames += await collect(ws, 10_000)  # until the close
            assert ws.close_code == 1001
        assert any(a == b for a, b in itertools.pairwise(frames))
        assert undecodable(frames)
        limited = await get(binance.snapshot_url(sim.rest_url, BINANCE_SYMBOL, 5))
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"


# --- the misbehaviours on the wire ----------------------------------------------------------


async def test_a_flapping_endpoint_sends_one_frame_per_connection_then_closes() -> None:
    plan = FaultPlan("ep0:flap@0+1000", 1, 2)
    # Four connections within a second: over OKX's 3 per second, which is not the subject.
    unlimited = SimLimits()
    async with SimOkx([SYMBOL], 2, interval_s=0.01, faults=plan, limits=unlimited) as sim:
        for _ in range(3):
            async with await subscribed(sim) as ws:
                frames = await collect(ws, 10_000)  # until the close
                assert len(frames) == 1 and b'"event":"subscribe"' in frames[0]
                assert ws.close_code == 1001 and ws.close_reason == "fault: flap"
        assert sim.stats(0).connections_accepted == 3
        ws = await connect(sim.public_urls[1], open_timeout=5.0, max_queue=None)
        async with ws:  # the other endpoint streams on
            for request in okx.subscribe_messages([SYMBOL]):
                await ws.send(request)
            assert len(book_ids(await collect(ws, 10))) > 3


async def test_a_restart_renumbers_the_stream_and_the_rest_book_from_a_low_id() -> None:
    plan = FaultPlan("venue:restart@900", 1, 1)
    async with SimOkx([SYMBOL], 1, interval_s=0.01, faults=plan) as sim:
        async with await subscribed(sim) as ws:
            before = book_ids(await collect(ws, 5))
            assert min(seq for _, seq in before) > 10 * RESTART_FIRST_ID
            await sim.apply_fault(Action(900.0, "restart", None))
            first_id = plan.restart_first_id(900.0)
            after: list[tuple[int, int]] = []
            while len(after) < 5:
                after += [ids for ids in book_ids(await collect(ws, 1)) if ids[1] < first_id * 2]
        # Renumbered from the first frame after the restart on: low, and chained after the
        # first, which links to the last id before (OKX's reset: seqId < prevSeqId).
        assert after[0][1] == first_id < 10 * RESTART_FIRST_ID < after[0][0]
        assert all(prev == last for (_, last), (prev, _) in itertools.pairwise(after))
        body = (await get(okx.snapshot_url(rest_base(sim), SYMBOL, 5))).content
        rest = okx.parse_snapshot(SYMBOL, body, 0)
        assert after[-1][1] <= rest.last_id < 2 * RESTART_FIRST_ID + 10_000
        async with await subscribed(sim) as ws:  # a new connection's snapshot too
            snapshot = book_ids(await collect(ws, 2))[0]
            assert snapshot[0] == -1 and rest.last_id <= snapshot[1] < first_id + 10_000


async def test_content_faults_reach_the_wire_on_their_endpoint_only() -> None:
    plan = FaultPlan("ep0:mangle@0+1000", 1, 2)
    async with SimBinanceSpot([BINANCE_SYMBOL], 2, interval_s=0.01, faults=plan) as sim:
        ranges = []
        for index in (0, 1):
            url = binance.stream_url(sim.endpoint_urls[index], [BINANCE_SYMBOL])
            async with connect(url, open_timeout=5.0) as ws:
                frames = await collect(ws, 5)
            data = [msgspec.json.decode(frame)["data"] for frame in frames]
            ranges.append([item["u"] - item["U"] for item in data if "U" in item])
        assert ranges[0] and all(span >= 10**12 for span in ranges[0])
        assert ranges[1] and all(span < 1000 for span in ranges[1])


async def test_rest_oversize_serves_a_huge_book_in_its_window() -> None:
    plan = FaultPlan("rest:oversize@0+1000,oversize_levels=20000", 1, 1)
    async with SimBinanceSpot([BINANCE_SYMBOL], 1, interval_s=0.01, faults=plan) as sim:
        response = await get(binance.snapshot_url(sim.rest_url, BINANCE_SYMBOL, 5))
        snapshot = binance.parse_snapshot(BINANCE_SYMBOL, response.content, 0)
        assert len(snapshot.asks) == 5 + 20_000 and len(snapshot.bids) == 5


# --- the misbehaviours from the replay server -------------------------------------------------


def _replay_plan() -> ReplayPlan:
    """A Binance spot capture: an inline snapshot at id 100, then diffs 101..130."""
    records = [
        CaptureRecord(
            1_000,
            REST_CONN_ID,
            "rest",
            inline_snapshot_url(BINANCE_SYMBOL),
            binance_spot.snapshot_body(100, [("10.00", "1.0")], [("11.00", "1.0")]),
        )
    ]
    for i in range(10):
        frame = binance_spot.depth_frame(
            BINANCE_SYMBOL, 101 + 3 * i, 103 + 3 * i, [("9.00", f"{i + 1}.0")], [], i
        )
        records.append(CaptureRecord(2_000 + i, 0, "ws", "wss://x/ws", frame))
    return build_plan(records, 2, binance.SNAPSHOT_PATH, default_venue="binance")


def _ids(frames: list[bytes]) -> list[tuple[int, int]]:
    return [(f["data"]["U"], f["data"]["u"]) for f in map(msgspec.json.decode, frames)]


async def test_the_replay_server_applies_the_misbehaviours() -> None:
    spec = "ep0:mangle@0+1000;ep1:flap@0+1000;rest:oversize@0+1000,oversize_levels=50"
    plan = FaultPlan(spec + ";venue:restart@900", 1, 2)
    async with ReplayServer(_replay_plan(), speed=None, faults=plan) as replay:
        async with connect(replay.endpoint_urls[0], open_timeout=5.0) as ws:
            mangled = _ids(await collect(ws, 10))
        assert mangled[0] == (101, 103 + 10**12)
        async with connect(replay.endpoint_urls[1], open_timeout=5.0) as ws:
            flapped = await collect(ws, 10)
        assert len(flapped) == 1 and ws.close_reason == "fault: flap"
        assert _ids(flapped) == [(101, 103)]  # endpoint 1's copy is true
        url = binance.snapshot_url(replay.rest_url, BINANCE_SYMBOL, 5)
        oversized = binance.parse_snapshot(BINANCE_SYMBOL, (await get(url)).content, 0)
        assert len(oversized.asks) == 1 + 50
        await replay.apply_fault(Action(900.0, "restart", None))
        first_id = plan.restart_first_id(900.0)
        restarted = binance.parse_snapshot(BINANCE_SYMBOL, (await get(url)).content, 0)
        assert first_id <= restarted.last_id < first_id + 100


def test_rest_faults_of_one_symbol_replace_the_venue_wide_ones_for_that_symbol() -> None:
    plan = FaultPlan("rest:429@0+10;rest[BTCUSDT]:5xx@0+2,slow=5ms", seed=1, n_endpoints=1)
    btc = plan.rest_fault(1.0, 0, "BTCUSDT")
    assert btc is not None and btc.status in (500, 502, 503, 504) and btc.retry_after_s is None
    after = plan.rest_fault(2.5, 1, "BTCUSDT")
    assert after is not None and after.status is None and after.extra_delay_s == 0.005
    other = plan.rest_fault(1.0, 2, "ETHUSDT")
    assert other is not None and other.status == 429
    assert plan.rest_fault(1.0, 3) == other
    with pytest.raises(FaultSpecError, match=r"rest\[SYMBOL\]"):
        parse("rest[]:5xx@0+1")
