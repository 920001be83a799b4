"""A subscription or resubscribe that no snapshot answers while the connection stays up:
asked again by the pipeline ``awaiting.timeout_s`` after its request was written, then
after twice each wait (gateway.core.awaiting). No event loop: the clock is passed in, and
the shell's writes are told as it tells them (``receive_sent``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from feeds import kraken
from gateway.core.activity import ActivityLimits
from gateway.core.awaiting import AwaitLimits
from gateway.core.model import DepthDiff
from gateway.core.model import Level
from gateway.core.model import VenueEvent
from gateway.core.model import VenueNotice
from gateway.core.pipeline import Action
from gateway.core.pipeline import Reconnect
from gateway.core.pipeline import Resubscribe
from gateway.core.pipeline import Step
from gateway.core.pipeline import SymbolRejected
from gateway.core.pipeline import VenuePipeline
from gateway.core.replicated import ReplicatedBook
from gateway.wire.venues import ADAPTERS

from .test_pipeline import LIMITS
from .test_pipeline import FakeVenue
from .test_pipeline import diff
from .test_pipeline import snap

RealData = Callable[[str], Path]
MS = 1_000_000
S = 1000 * MS
AWAIT = AwaitLimits(timeout_s=1.0, max_timeout_s=3.0)


class _Venue:
    """BTC on connections 0 and 1, subscribed at 0 (the subscriptions written at
    ``subscribed_s``, None: never) and each built from its own in-band snapshot where
    ``first`` names it, updated every 0.1 s on the connections ``tick`` names (the other
    one gets a heartbeat: it carries traffic); every step's actions kept with their time.
    Each Resubscribe is written ``write_delay_s`` after it was asked (a connection's paced
    queue), one at a time per connection and symbol, as ``Connection.send`` queues them."""

    def __init__(
        self,
        *,
        unsequenced: bool,
        activity: ActivityLimits | None = None,
        first: tuple[int, ...] = (0, 1),
        subscribed_s: float | None = 0.0,
        write_delay_s: float = 0.0,
    ) -> None:
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
        self.write_delay_ns = int(write_delay_s * S)
        #: Requests queued, not written yet: (when written, connection, symbols).
        self.queued: list[tuple[int, int, tuple[str, ...]]] = []
        for conn_id in (0, 1):
            self.p.receive_connection(conn_id, True, 0)
            if subscribed_s is not None:
                self.queued.append((int(subscribed_s * S), conn_id, ("BTC",)))
        self.write()
        for conn_id in first:
            self.send(conn_id, snap("BTC", 10, venue="v", conn=conn_id))

    def act(self, actions: list[Action]) -> None:
        """Keeps the actions; queues each Resubscribe not queued already."""
        self.asked += [(self.t_ns, a) for a in actions]
        for a in actions:
            if isinstance(a, Resubscribe) and not any(
                q[1:] == (a.conn_id, (a.symbol,)) for q in self.queued
            ):
                self.queued.append((self.t_ns + self.write_delay_ns, a.conn_id, (a.symbol,)))
        self.write()

    def write(self) -> None:
        """Writes what is due by now, as the connection's writer tells the pipeline."""
        for queued in [q for q in self.queued if q[0] <= self.t_ns]:
            self.queued.remove(queued)
            self.p.receive_sent(queued[1], queued[2], self.t_ns)

    def send(self, conn_id: int, *events: VenueEvent) -> None:
        self.act(self.p.receive_frame(conn_id, self.venue.frame(*events), 1, self.t_ns).actions)

    def update(self, conn_id: int, first: int | None = None) -> DepthDiff:
        first = self.next_id if first is None else first
        return diff("BTC", first, first, conn=conn_id, venue="v")

    def tick(self, on: tuple[int, ...] = (0, 1), n: int = 1) -> None:
        for _ in range(n):
            self.t_ns += 100 * MS
            self.write()
            for conn_id in (0, 1):
                self.send(conn_id, *([self.update(conn_id)] if conn_id in on else []))
            self.next_id += 1
            self.act(self.p.on_timer(self.t_ns).actions)

    def awaited(self, conn_id: int) -> bool:
        awaiting = self.p._awaiting
        assert awaiting is not None
        return "v:BTC" in awaiting.awaiting(conn_id)

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
    """Connection 1 reconnects; its subscription is written, its snapshot not yet come."""
    venue.p.receive_connection(1, False, venue.t_ns)
    venue.p.receive_connection(1, True, venue.t_ns)
    venue.p.receive_sent(1, ["BTC"], venue.t_ns)


#: What the pipeline does about a resubscribe whose wait passes, by what happened since:
#: (book kind, how the resubscribe came, what happened in its first 0.5 s, the connections
#: asked again at 1 s, the connections still awaiting the snapshot then, the connections the
#: book itself asked to reconnect).
DUE_TABLE = [
    ("replicated", _replica_failed_on_1, _nothing, {1}, {1}, set()),
    ("replicated", _replica_failed_on_1, _snapshot_on_1, set(), set(), set()),
    ("replicated", _replica_failed_on_1, _snapshot_on_0, {1}, {1}, set()),
    ("replicated", _replica_failed_on_1, _reconnect_1, set(), {1}, set()),  # its subscription's
    ("sequenced", _gap_on_both, _nothing, {0, 1}, {0, 1}, set()),
    # Rebuilt from connection 0's snapshot: connection 1's copies after it, before its answer,
    # are of no known sequence and place it nowhere, however they agree with what the book
    # applied; the book reopens it once the reset window passes with no answer.
    ("sequenced", _gap_on_both, _snapshot_on_0, set(), set(), {1}),
    # Rebuilt from connection 1's: connection 0 always delivers first, so nothing places it;
    # the book reopens it once the reset window passes with no answer (its own rule, not this
    # one's resubscribe).
    ("sequenced", _gap_on_both, _snapshot_on_1, set(), set(), {0}),
]


@pytest.mark.parametrize(
    ("kind", "resubscribed", "then", "asked", "awaiting", "reconnected"), DUE_TABLE
)
def test_a_due_resubscribe_is_asked_again_only_while_its_answer_is_still_needed(
    kind: str,
    resubscribed: Callable[[_Venue], None],
    then: Callable[[_Venue], None],
    asked: set[int],
    awaiting: set[int],
    reconnected: set[int],
) -> None:
    """The updates keep coming on both connections throughout: no channel is silent."""
    venue = _Venue(unsequenced=kind == "replicated")
    resubscribed(venue)
    venue.asked.clear()
    venue.tick(n=5)
    then(venue)
    venue.tick(n=4)
    assert _resubscribes(venue) == [], "not before the wait"
    venue.tick(n=1)
    assert set(_resubscribes(venue)) == {(venue.t_ns, Resubscribe(c, "BTC")) for c in asked}
    assert venue.p.stats.unanswered_resubscribes == len(asked)
    assert {c for c in (0, 1) if venue.awaited(c)} == awaiting
    assert {a.conn_id for _, a in venue.asked if isinstance(a, Reconnect)} == reconnected


def _resubscribes(venue: _Venue) -> list[tuple[int, Action]]:
    return [(t, a) for t, a in venue.asked if isinstance(a, Resubscribe)]


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


#: What the pipeline does about the subscription sent on connect, by the kind of book, the
#: connections whose first snapshot comes, and when the subscriptions are written (s;
#: None: still queued): the (s, connection) of each Resubscribe asked within 2.5 s, and how
#: many of them this rule asked (the others the book's own resync).
FIRST_TABLE = [
    ("replicated", (0, 1), 0.0, [], 0),  # answered on both
    ("replicated", (0,), 0.0, [(1.0, 1)], 1),  # lost on 1 while its updates flow
    ("replicated", (0,), 0.6, [(1.6, 1)], 1),  # written late: its wait starts then
    ("replicated", (0,), None, [], 0),  # not written: not due
    ("sequenced", (0,), 0.0, [], 0),  # the book is built from connection 0's
    # Lost on both: the book resyncs at its first update, then waits twice as long.
    ("sequenced", (), 0.0, [(0.1, 0), (0.1, 1), (2.1, 0), (2.1, 1)], 2),
]


@pytest.mark.parametrize(("kind", "first", "subscribed_s", "asked", "unanswered"), FIRST_TABLE)
def test_a_subscription_unanswered_one_wait_after_it_was_written_is_asked_again(
    kind: str,
    first: tuple[int, ...],
    subscribed_s: float | None,
    asked: list[tuple[float, int]],
    unanswered: int,
) -> None:
    venue = _Venue(unsequenced=kind == "replicated", first=first, subscribed_s=subscribed_s)
    venue.tick(n=25)
    got = [(round(t / S, 3), a) for t, a in venue.asked]
    assert got == [(t, Resubscribe(c, "BTC")) for t, c in asked]
    assert venue.p.stats.unanswered_resubscribes == unanswered


def test_a_resubscribe_waits_from_when_it_was_written_not_from_when_it_was_asked() -> None:
    """Connection 1's resubscribe is asked at 0 and written 2 s later (its connection's
    queue): not asked again at 1 s, while it is still queued, but 1 s after the write."""
    venue = _Venue(unsequenced=True, write_delay_s=2.0)
    _replica_failed_on_1(venue)
    venue.asked.clear()
    venue.tick(n=29)
    assert venue.asked == [] and venue.awaited(1)
    venue.tick()
    assert venue.asked == [(3 * S, Resubscribe(1, "BTC"))]
    assert venue.p.stats.unanswered_resubscribes == 1


def test_a_subscription_the_venue_refuses_is_not_asked_again() -> None:
    """ETH's subscription is answered by the venue's error naming it: refused, and never
    resubscribed; BTC's is answered by its snapshot. Nothing is awaited after the wait."""
    fake = FakeVenue(venue="v", unsequenced=True)
    p = VenuePipeline(fake, ["BTC", "ETH"], limits=LIMITS, rest_snapshots=False, awaiting=AWAIT)
    p.receive_connection(0, True, 0)
    p.receive_sent(0, ["BTC", "ETH"], 0)
    error = VenueNotice("v", "error", "ETH: unknown symbol", False, 1, 0)
    assert p.receive_frame(0, fake.frame(error), 1, 100 * MS).actions == [
        SymbolRejected(0, "ETH", True)
    ]
    p.receive_frame(0, fake.frame(snap("BTC", 10, venue="v", conn=0)), 1, 200 * MS)
    actions = [a for t in range(3, 40) for a in p.on_timer(t * 100 * MS).actions]
    assert actions == [] and p.stats.unanswered_resubscribes == 0
    assert not p.timer_armed, "nothing awaited"


def test_a_venue_that_cannot_resubscribe_one_symbol_awaits_nothing() -> None:
    fake = FakeVenue(venue="v", unsequenced=True, can_resubscribe=False)
    p = VenuePipeline(fake, ["BTC"], limits=LIMITS, rest_snapshots=False, awaiting=AWAIT)
    p.receive_connection(0, True, 0)
    p.receive_sent(0, ["BTC"], 0)
    assert not p.timer_armed and p.on_timer(10 * S).actions == []


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


class _KrakenSession:
    """A recorded Kraken session on connections 0 and 1, channels watched as the gateway
    does, both subscribed at 0 and every Resubscribe written as soon as asked; a frame
    every 7 ms (3000 frames, 21 s)."""

    def __init__(self, real_data: RealData) -> None:
        path = "kraken/flashbook/live-btc-eth.ndjson"
        self.lines = real_data(path).read_bytes().splitlines()
        self.p = VenuePipeline(
            ADAPTERS["kraken"],
            ["BTC/USD", "ETH/USD"],
            activity=ActivityLimits(),
            awaiting=AwaitLimits(timeout_s=2.0, max_timeout_s=8.0),
        )
        eth = self.p.books["kraken:ETH/USD"]
        assert isinstance(eth, ReplicatedBook)
        self.eth = eth
        #: Every Resubscribe asked, with its time.
        self.asked: list[tuple[int, Resubscribe]] = []
        for conn_id in (0, 1):
            self.p.receive_connection(conn_id, True, 0)
            self.p.receive_sent(conn_id, ["BTC/USD", "ETH/USD"], 0)

    def run(self, conn_1_copy: Callable[[int, bytes], bytes | None], answer_at: int) -> None:
        """Each line to connection 0, and ``conn_1_copy(i, line)`` (None: lost) to
        connection 1; once ``answer_at`` Resubscribes were asked, connection 1 gets its
        ETH/USD snapshot (at the leader's point)."""
        answered = False
        for i, line in enumerate(self.lines):
            now_ns = i * 7 * MS
            asked = len(self.asked)
            for conn_id, frame in ((0, line), (1, conn_1_copy(i, line))):
                if frame is not None:
                    self._asked(now_ns, self.p.receive_frame(conn_id, frame, now_ns, now_ns))
            self._asked(now_ns, self.p.on_timer(now_ns))
            for _, written in self.asked[asked:]:
                self.p.receive_sent(written.conn_id, [written.symbol], now_ns)
            if len(self.asked) == answer_at and not answered:
                snapshot = _kraken_snapshot("ETH/USD", self.eth, 0)
                self.p.receive_frame(1, snapshot, now_ns, now_ns)
                answered = True

    def _asked(self, now_ns: int, step: Step) -> None:
        self.asked += [(now_ns, a) for a in step.actions if isinstance(a, Resubscribe)]

    def conn_1_follows(self) -> None:
        """Connection 1's ETH/USD replica is valid and followed the session."""
        eth, p = self.eth, self.p
        assert p.stats.silent_channels == 0, "ETH/USD never went silent on connection 1"
        assert p.stats.unanswered_resubscribes == 1 and p.stats.bad_frames == 0
        assert eth.replicas[1].valid
        assert eth.replicas[1].book.normalized() == eth.replicas[0].book.normalized()
        assert eth.stats.conn(1).duplicates > 0, "connection 1's replica followed the session"


def test_kraken_a_lost_resubscribe_answer_is_asked_again_within_the_bound_then_the_replica_is_valid(
    real_data: RealData,
) -> None:
    """Connection 1's ETH/USD replica fails its checksum and is resubscribed; the snapshot
    answering it is lost while ETH/USD's updates keep coming on connection 1 (so its
    channel is never silent). Within ``timeout_s`` it is resubscribed again, and with the
    answer connection 1's replica is valid and follows the session, checksums matching."""
    session = _KrakenSession(real_data)
    broken: list[int] = []

    def conn_1_copy(i: int, line: bytes) -> bytes:
        if i > 600 and not broken and b'"ETH/USD"' in line and b'"update"' in line:
            # Connection 1's copy of this update arrives with a checksum its replica fails.
            broken.append(i * 7 * MS)
            return re.sub(rb'"checksum":(\d+)', b'"checksum":1', line)
        return line

    session.run(conn_1_copy, answer_at=2)
    (broken_ns,) = broken
    asked = session.asked
    assert asked[0] == (broken_ns, Resubscribe(1, "ETH/USD"))
    assert len(asked) == 2, "asked once more, then answered"
    again_ns, again = asked[1]
    assert again == Resubscribe(1, "ETH/USD")
    assert 2 * S <= again_ns - broken_ns <= 2 * S + 7 * MS, "asked again within the bound"
    assert session.eth.stats.checksum_failed == 1
    session.conn_1_follows()


def test_kraken_a_lost_first_snapshot_is_asked_for_within_the_bound_then_the_replica_is_valid(
    real_data: RealData, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection 1's subscription is answered by BTC/USD's snapshot only: ETH/USD's is
    lost, while ETH/USD's updates come on connection 1 from then on (its channel is never
    silent, and updates without a snapshot build no replica). ``timeout_s`` after the
    subscription was written, ETH/USD is resubscribed there; with the answer connection 1
    has a valid replica that follows the session."""
    session = _KrakenSession(real_data)
    first_eth = next(
        i
        for i, line in enumerate(session.lines)
        if b'"type":"snapshot"' in line and b'"ETH/USD"' in line
    )

    def conn_1_copy(i: int, line: bytes) -> bytes | None:
        return None if i == first_eth else line

    caplog.set_level(logging.WARNING, logger="gateway.core.pipeline")
    session.run(conn_1_copy, answer_at=1)
    ((asked_ns, asked),) = session.asked
    assert asked == Resubscribe(1, "ETH/USD")
    assert 2 * S <= asked_ns <= 2 * S + 7 * MS, "one wait after the subscription was written"
    assert [r.getMessage() for r in caplog.records if "no snapshot" in r.getMessage()] == [
        "kraken:ETH/USD: no snapshot on conn 1 2 s after its subscription there, while it is "
        "up; resubscribing"
    ]
    assert session.eth.replicas[0].valid and session.eth.stats.checksum_failed == 0
    session.conn_1_follows()
