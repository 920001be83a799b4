"""A resubscribe that no snapshot answers while the connection stays up: asked again by the
pipeline after ``awaiting.timeout_s``, then after twice each wait (gateway.core.awaiting).
No event loop: the clock is passed in."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from feeds import kraken
from gateway.core.activity import ActivityLimits
from gateway.core.awaiting import AwaitLimits
from gateway.core.model import DepthDiff, Level, VenueEvent
from gateway.core.pipeline import Action, Resubscribe, VenuePipeline
from gateway.core.replicated import ReplicatedBook
from gateway.wire.venues import ADAPTERS

from .test_pipeline import LIMITS, FakeVenue, diff, snap

RealData = Callable[[str], Path]
MS = 1_000_000
S = 1000 * MS
AWAIT = AwaitLimits(timeout_s=1.0, max_timeout_s=3.0)


class _Venue:
    """BTC on connections 0 and 1, each built from its own in-band snapshot, updated every
    0.1 s on the connections ``tick`` names (the other one gets a heartbeat: it carries
    traffic); every step's actions kept with their time."""

    def __init__(self, *, unsequenced: bool, activity: ActivityLimits | None = None) -> None:
        self.venue = FakeVenue(venue="v", unsequenced=unsequenced)
        self.p = VenuePipeline(
            self.venue,
            ["BTC"],
            limits=LIMITS,
            rest_snapshots=False,
            activity=activity,
            awaiting=AWAIT,
        )
        self.t_ns = 0
        self.next_id = 11
        self.asked: list[tuple[int, Action]] = []
        for conn_id in (0, 1):
            self.p.receive_connection(conn_id, True, 0)
            self.send(conn_id, snap("BTC", 10, venue="v", conn=conn_id))

    def send(self, conn_id: int, *events: VenueEvent) -> None:
        step = self.p.receive_frame(conn_id, self.venue.frame(*events), 1, self.t_ns)
        self.asked += [(self.t_ns, a) for a in step.actions]

    def update(self, conn_id: int, first: int | None = None) -> DepthDiff:
        first = self.next_id if first is None else first
        return diff("BTC", first, first, conn=conn_id, venue="v")

    def tick(self, on: tuple[int, ...] = (0, 1), n: int = 1) -> None:
        for _ in range(n):
            self.t_ns += 100 * MS
            for conn_id in (0, 1):
                self.send(conn_id, *([self.update(conn_id)] if conn_id in on else []))
            self.next_id += 1
            self.asked += [(self.t_ns, a) for a in self.p.on_timer(self.t_ns).actions]

    def awaited(self, conn_id: int) -> bool:
        return "v:BTC" in self.p._awaiting.awaiting(conn_id)

    def replica_valid(self, conn_id: int) -> bool:
        book = self.p.books["v:BTC"]
        assert isinstance(book, ReplicatedBook)
        replica = book.replicas.get(conn_id)
        return replica is not None and replica.valid


def _replica_failed_on_1(venue: _Venue) -> None:
    """Connection 1's replica fails (an update that crosses it): resubscribed there."""
    crossing = DepthDiff("v", "BTC", 11, 11, -1, (("102", "1"),), (), 0, 0, 1)
    venue.send(1, crossing)
    assert [a for _, a in venue.asked] == [Resubscribe(1, "BTC")]


def _gap_on_both(venue: _Venue) -> None:
    """Both connections jump past id 11: the sequenced book resyncs, resubscribing both."""
    venue.next_id = 13
    venue.tick()
    assert {a for _, a in venue.asked} == {Resubscribe(0, "BTC"), Resubscribe(1, "BTC")}


def _nothing(venue: _Venue) -> None:
    pass


def _snapshot_on_1(venue: _Venue) -> None:
    venue.send(1, snap("BTC", venue.next_id - 1, venue="v", conn=1))


def _snapshot_on_0(venue: _Venue) -> None:
    venue.send(0, snap("BTC", venue.next_id - 1, venue="v", conn=0))


def _reconnect_1(venue: _Venue) -> None:
    venue.p.receive_connection(1, False, venue.t_ns)
    venue.p.receive_connection(1, True, venue.t_ns)


#: What the pipeline does about a resubscribe whose wait passes, by what happened since:
#: (book kind, how the resubscribe came, what happened in its first 0.5 s, the connections
#: asked again at 1 s, the connections still awaiting the snapshot then).
DUE_TABLE = [
    ("replicated", _replica_failed_on_1, _nothing, {1}, {1}),
    ("replicated", _replica_failed_on_1, _snapshot_on_1, set(), set()),
    ("replicated", _replica_failed_on_1, _snapshot_on_0, {1}, {1}),
    ("replicated", _replica_failed_on_1, _reconnect_1, set(), set()),
    ("sequenced", _gap_on_both, _nothing, {0, 1}, {0, 1}),
    ("sequenced", _gap_on_both, _snapshot_on_0, set(), set()),
    ("sequenced", _gap_on_both, _snapshot_on_1, set(), set()),
]


@pytest.mark.parametrize(("kind", "resubscribed", "then", "asked", "awaiting"), DUE_TABLE)
def test_a_due_resubscribe_is_asked_again_only_while_its_answer_is_still_needed(
    kind: str,
    resubscribed: Callable[[_Venue], None],
    then: Callable[[_Venue], None],
    asked: set[int],
    awaiting: set[int],
) -> None:
    """The updates keep coming on both connections throughout: no channel is silent."""
    venue = _Venue(unsequenced=kind == "replicated")
    resubscribed(venue)
    venue.asked.clear()
    venue.tick(n=5)
    then(venue)
    venue.tick(n=4)
    assert venue.asked == [], "not before the wait"
    venue.tick(n=1)
    assert {(t, a) for t, a in venue.asked} == {(venue.t_ns, Resubscribe(c, "BTC")) for c in asked}
    assert venue.p.stats.unanswered_resubscribes == len(asked)
    assert {c for c in (0, 1) if venue.awaited(c)} == awaiting


def test_each_further_ask_waits_twice_as_long_up_to_the_cap_until_the_snapshot_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.core.pipeline")
    venue = _Venue(unsequenced=True)
    _replica_failed_on_1(venue)
    start_ns = venue.asked[-1][0]
    venue.asked.clear()
    venue.tick(n=100)  # 10 s of updates, no snapshot on connection 1
    assert {a for _, a in venue.asked} == {Resubscribe(1, "BTC")}
    asked_s = [(t - start_ns) / S for t, _ in venue.asked]
    assert asked_s == pytest.approx([1.0, 3.0, 6.0, 9.0]), "waits 1, 2, 3 (capped), 3 s"
    assert venue.p.stats.unanswered_resubscribes == 4
    assert venue.p.stats.resubscribes == 5, "the first ask, then four more"
    logged = [r.getMessage() for r in caplog.records if "no snapshot" in r.getMessage()]
    assert logged[0] == (
        "v:BTC: no snapshot on conn 1 1 s after resubscribe #1 there, while it is up; "
        "resubscribing again"
    )
    assert len(logged) == 4
    _snapshot_on_1(venue)
    assert venue.replica_valid(1) and not venue.awaited(1)
    venue.asked.clear()
    venue.tick(n=100)
    assert venue.asked == []
    assert not venue.p.timer_armed, "nothing awaited, nothing watched: no timer needed"


def test_unanswered_lines_are_limited_per_symbol(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.core.pipeline")
    venue = _Venue(unsequenced=True)
    _replica_failed_on_1(venue)
    venue.tick(n=1200)  # 2 minutes: 41 asks (at 1, 3, 6 s, then every 3 s), 5 lines a minute
    assert venue.p.stats.unanswered_resubscribes == 41
    lines = [r.getMessage() for r in caplog.records if "no snapshot" in r.getMessage()]
    assert len(lines) == 10
    assert lines[5].endswith("(16 similar suppressed)"), "the asks of the first minute's rest"


def test_a_silent_channel_is_asked_again_by_its_silence_and_once_alive_by_its_wait() -> None:
    """BTC's channel dies on connection 1: the silence's reports resubscribe it (1 s bound,
    then waits of 2 s and 4 s), none of them this rule's. Its updates come back without a
    snapshot: asked again one wait after the last ask."""
    venue = _Venue(
        unsequenced=True, activity=ActivityLimits(factor=10.0, min_silence_s=1.0, alpha=0.5)
    )
    venue.tick(n=20)
    venue.tick(on=(0,), n=90)  # 9 s, BTC silent on connection 1 only
    asked = [(t / S, a) for t, a in venue.asked]
    assert {a for _, a in asked} == {Resubscribe(1, "BTC")}
    assert len(asked) == 3 and venue.p.stats.silent_channels == 1
    assert venue.p.stats.unanswered_resubscribes == 0
    last_s = asked[-1][0]
    venue.asked.clear()
    venue.tick(n=30)  # back on both, with no snapshot on connection 1
    assert venue.p.stats.revived_channels == 1 and not venue.replica_valid(1)
    (when_s, action), *_ = [(t / S, a) for t, a in venue.asked]
    assert action == Resubscribe(1, "BTC") and venue.p.stats.unanswered_resubscribes == 1
    # Each silence report doubled the wait: 1, 2, then 3 s (the cap) after the last ask.
    assert when_s - last_s == pytest.approx(3.0, abs=0.26)


# --- the real Kraken parser ---------------------------------------------------------------


def _levels_json(levels: list[Level]) -> str:
    return "[" + ",".join(f'{{"price":{price},"qty":{qty}}}' for price, qty in levels) + "]"


def _kraken_snapshot(symbol: str, book: ReplicatedBook, conn_id: int) -> bytes:
    """A ``book`` snapshot frame of ``symbol`` as Kraken sends it: the replica of
    ``conn_id``'s levels, numbers as fixed-point JSON numbers (the venue's own text), and
    its checksum."""
    levels = book.replicas[conn_id].book
    return (
        f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{symbol}",'
        f'"bids":{_levels_json(levels.bids())},"asks":{_levels_json(levels.asks())},'
        f'"checksum":{kraken.book_checksum(levels)},'
        f'"timestamp":"2026-07-07T23:00:10.000000Z"}}]}}'
    ).encode()


def test_kraken_a_lost_resubscribe_answer_is_asked_again_within_the_bound_then_the_replica_is_valid(
    real_data: RealData,
) -> None:
    """A recorded Kraken session on two connections, channels watched as the gateway does.
    Connection 1's ETH/USD replica fails its checksum and is resubscribed; the snapshot
    answering it is lost while ETH/USD's updates keep coming on connection 1 (so its
    channel is never silent). Within ``timeout_s`` it is resubscribed again, and with the
    answer connection 1's replica is valid and follows the session, checksums matching."""
    lines = real_data("kraken/flashbook/live-btc-eth.ndjson").read_bytes().splitlines()
    adapter = ADAPTERS["kraken"]
    p = VenuePipeline(
        adapter,
        ["BTC/USD", "ETH/USD"],
        activity=ActivityLimits(),
        awaiting=AwaitLimits(timeout_s=2.0, max_timeout_s=8.0),
    )
    eth = p.books["kraken:ETH/USD"]
    assert isinstance(eth, ReplicatedBook)
    for conn_id in (0, 1):
        p.receive_connection(conn_id, True, 0)
    asked: list[tuple[int, Resubscribe]] = []
    answered = False
    broken_ns = 0
    for i, line in enumerate(lines):
        now_ns = i * 7 * MS  # 3000 frames, 21 s
        frames = {0: line, 1: line}
        if i > 600 and not broken_ns and b'"ETH/USD"' in line and b'"update"' in line:
            # Connection 1's copy of this update arrives with a checksum its replica fails.
            frames[1] = re.sub(rb'"checksum":(\d+)', b'"checksum":1', line)
            broken_ns = now_ns
        for conn_id, frame in frames.items():
            step = p.receive_frame(conn_id, frame, now_ns, now_ns)
            asked += [(now_ns, a) for a in step.actions if isinstance(a, Resubscribe)]
        asked += [(now_ns, a) for a in p.on_timer(now_ns).actions if isinstance(a, Resubscribe)]
        if len(asked) == 2 and not answered:
            # Answered, this time: connection 1's snapshot, at the leader's point.
            p.receive_frame(1, _kraken_snapshot("ETH/USD", eth, 0), now_ns, now_ns)
            answered = True
    assert broken_ns and asked[0] == (broken_ns, Resubscribe(1, "ETH/USD"))
    assert len(asked) == 2, "asked once more, then answered"
    again_ns, again = asked[1]
    assert again == Resubscribe(1, "ETH/USD")
    assert 2 * S <= again_ns - broken_ns <= 2 * S + 7 * MS, "asked again within the bound"
    assert p.stats.silent_channels == 0, "ETH/USD never went silent on connection 1"
    assert p.stats.unanswered_resubscribes == 1 and p.stats.bad_frames == 0
    assert eth.replicas[1].valid and eth.stats.checksum_failed == 1
    assert eth.replicas[1].book.normalized() == eth.replicas[0].book.normalized()
    assert eth.stats.conn(1).duplicates > 0, "connection 1's replica followed the session"
