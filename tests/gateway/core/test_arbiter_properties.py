"""Property tests of arbitration (hypothesis).

From one true diff stream, 1-4 redundant copies are made with drops, duplicates, different
batching, delays (any interleaving of the copies) and disconnects. Invariants:

- no id lost on every copy: the published stream, applied to its snapshot, equals the true
  book after every step; seq rises by exactly 1; venue ids strictly rise; no gap is declared;
- some ids lost on every copy: exactly one resync, and the book is right afterwards;
- one faulty copy on one of 2-3 connections (a mangled last id, a far-future id): the book
  is the true book whenever it is live, and it resyncs at most once more than real gaps
  ask for;
- every copy of one of 2-3 connections mangled for a while, the others complete and each
  update's copies delivered within one reorder window: the book never resyncs, the
  contradicted copies are blamed on that connection only.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Literal

import msgspec
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from feeds.binance import BinanceSpotRule
from gateway.core.arbiter import ArbiterLimits
from gateway.core.book import L2Book
from gateway.core.model import ArbiterEvent
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthDiff
from gateway.core.model import ReconnectWanted
from gateway.core.model import SnapshotWanted
from gateway.core.model import SymbolState
from gateway.core.sequenced import SequencedBook

from .arbiter_streams import ASK_PRICES
from .arbiter_streams import BID_PRICES
from .arbiter_streams import KEY
from .arbiter_streams import QTYS
from .arbiter_streams import Run
from .arbiter_streams import TrueStream
from .arbiter_streams import make_stream
from .arbiter_streams import merged

#: Every property here replays whole streams: slow examples are expected, not a health
#: problem.
STREAM_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

WINDOW_NS = 10**12  # never expires in these tests: only certain gaps count

#: ("diff", conn, start, end): true diffs ``start..end`` arrive on ``conn`` as one event;
#: ("down", conn) / ("up", conn): the connection drops / comes back.
Step = tuple[Literal["diff"], int, int, int] | tuple[Literal["down", "up"], int]


@dataclass
class Subscriber:
    """Applies the published stream as a subscriber would and checks it step by step."""

    truth: TrueStream
    arb: SequencedBook
    book: L2Book = field(default_factory=L2Book)
    epoch: int = 0
    seq: int = -1
    venue_id: int = -1
    resets: int = 0

    def take(self, events: list[ArbiterEvent]) -> None:
        for event in events:
            if isinstance(event, BookReset):
                # The fan-out builds a snapshot from the live book at this moment.
                assert event.epoch > self.epoch
                assert event.venue_id == self.arb.applied_id
                self.book.load(self.arb.book.bids(), self.arb.book.asks())
                self.epoch, self.seq, self.venue_id = event.epoch, event.seq, event.venue_id
                self.resets += 1
            elif isinstance(event, BookDelta):
                assert event.epoch == self.epoch
                assert event.seq == self.seq + 1, "seq must rise by exactly one"
                assert event.venue_id > self.venue_id, "nothing emitted twice or out of order"
                self.book.apply(event.bids, event.asks)
                self.seq, self.venue_id = event.seq, event.venue_id
            else:
                continue
            assert self.book.normalized() == self.truth.book_at_id(self.venue_id)


diff_choice = st.tuples(
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, len(BID_PRICES) - 1),
    st.integers(0, len(QTYS) - 1),
)
assert len(BID_PRICES) == len(ASK_PRICES)


@st.composite
def scenarios(draw: st.DrawFn, lose_some: bool) -> tuple[TrueStream, list[Step], set[int]]:
    """A true stream and an arrival schedule of ('diff', conn, start, end, dup) /
    ('down', conn) / ('up', conn) steps, and the indices lost on every copy."""
    stream = make_stream(draw(st.lists(diff_choice, min_size=2, max_size=40)))
    n = len(stream.diffs)
    n_copies = draw(st.integers(1, 4))
    lost: set[int] = set()
    if lose_some:
        start = draw(st.integers(1, n - 1))
        length = draw(st.integers(1, 3))
        lost = set(range(start, min(n, start + length)))
    copies: list[list[Step]] = []
    for conn in range(n_copies):
        groups: list[tuple[int, int]] = []
        i = 0
        while i < n:
            if i in lost or draw(st.integers(0, 7)) == 0:
                i += 1  # dropped on this copy
                continue
            end = i
            while end + 1 < n and end + 1 not in lost and draw(st.integers(0, 3)) == 0:
                end += 1  # this copy batches the next ids into the same event
            groups.append((i, end))
            i = end + 1
        copies.append([("diff", conn, s, e) for s, e in groups])
    for conn, copy in enumerate(copies):
        # len(): with the list itself left of `and`, mypy types the draw as a list draw.
        if len(copy) > 0 and draw(st.booleans()):
            at = draw(st.integers(0, len(copy) - 1))
            copy.insert(at, copy[at])  # a duplicate on the same connection
        if conn > 0 and copy and draw(st.booleans()):
            down_at = draw(st.integers(0, len(copy)))
            if draw(st.booleans()):
                del copy[down_at:]  # down for good
                copy.append(("down", conn))
            else:
                # Down, then back; other copies' steps interleave in between.
                copy[down_at:down_at] = [("down", conn), ("up", conn)]
    # Interleave the copies arbitrarily, each keeping its own order (TCP).
    interleaved: list[Step] = []
    cursors = [0] * n_copies
    while any(cursors[c] < len(copies[c]) for c in range(n_copies)):
        live = [c for c in range(n_copies) if cursors[c] < len(copies[c])]
        c = draw(st.sampled_from(live))
        interleaved.append(copies[c][cursors[c]])
        cursors[c] += 1
    # A reconnected stream starts at the venue's current point: nothing older.
    schedule: list[Step] = []
    venue_point = -1
    floor: dict[int, int] = {}
    for step in interleaved:
        if step[0] == "up":
            floor[step[1]] = venue_point
        elif step[0] == "diff":
            if step[2] <= floor.get(step[1], -1):
                continue
            venue_point = max(venue_point, step[3])
        schedule.append(step)
    # Copy 0 never disconnects; it carries every id no other copy delivered.
    covered = {i for step in schedule if step[0] == "diff" for i in range(step[2], step[3] + 1)}
    for i in range(n):
        if i not in covered and i not in lost:
            at = next(
                (
                    k
                    for k, st_ in enumerate(schedule)
                    if st_[0] == "diff" and st_[1] == 0 and st_[2] > i
                ),
                len(schedule),
            )
            schedule.insert(at, ("diff", 0, i, i))
    return stream, schedule, lost


def run(
    stream: TrueStream, schedule: list[Step], snapshot_lag: int
) -> tuple[SequencedBook, Subscriber, int]:
    """Runs the schedule; returns the arbiter, the subscriber and how many true diffs the
    first snapshot included."""
    arb = SequencedBook(KEY, BinanceSpotRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS))
    sub = Subscriber(stream, arb)
    conns = {step[1] for step in schedule}
    for conn in conns:
        sub.take(arb.on_connection(conn, True, 0))
    delivered_max = 0  # the venue is at least as far as anything delivered
    snapshot_due: int | None = None
    first_snapshot_point = -1
    for now, step in enumerate(schedule):
        if step[0] == "diff":
            _, conn, start, end = step
            delivered_max = max(delivered_max, end + 1)
            events = arb.on_diff(merged(stream, start, end, conn, now), now)
        else:
            events = arb.on_connection(step[1], step[0] == "up", now)
        sub.take(events)
        if any(isinstance(e, SnapshotWanted) for e in events):
            snapshot_due = now + snapshot_lag
        if snapshot_due is not None and now >= snapshot_due and arb.snapshot_wanted:
            if first_snapshot_point < 0:
                first_snapshot_point = delivered_max
            sub.take(arb.on_snapshot(stream.snapshot(delivered_max), now))
            snapshot_due = None
    # The window passes at the end; any snapshot still wanted is fetched.
    sub.take(arb.on_timer(10**15))
    if arb.snapshot_wanted:
        if first_snapshot_point < 0:
            first_snapshot_point = len(stream.diffs)
        sub.take(arb.on_snapshot(stream.snapshot(len(stream.diffs)), 10**15))
    return arb, sub, first_snapshot_point


@STREAM_SETTINGS
@given(scenarios(lose_some=False), st.integers(0, 5))
def test_redundant_copies_without_common_loss_give_the_clean_book(
    scenario: tuple[TrueStream, list[Step], set[int]], snapshot_lag: int
) -> None:
    stream, schedule, _ = scenario
    arb, sub, _ = run(stream, schedule, snapshot_lag)
    assert arb.stats.gaps == 0 and arb.stats.resyncs == 0
    assert sub.resets == 1
    last_delivered = max((s[3] for s in schedule if s[0] == "diff"), default=-1)
    if arb.applied_id >= stream.id_after(last_delivered + 1):
        assert sub.book.normalized() == stream.books[last_delivered + 1]
    assert sub.book.normalized() == arb.book.normalized()


@STREAM_SETTINGS
@given(scenarios(lose_some=True), st.integers(0, 5))
def test_ids_lost_on_every_copy_cause_exactly_one_resync(
    scenario: tuple[TrueStream, list[Step], set[int]], snapshot_lag: int
) -> None:
    stream, schedule, lost = scenario
    arb, sub, snapshot_point = run(stream, schedule, snapshot_lag)
    # The loss matters when the first snapshot does not include it and a later id arrived.
    later_delivered = any(s[0] == "diff" and s[2] > max(lost) for s in schedule)
    expected_resyncs = 1 if max(lost) >= snapshot_point and later_delivered else 0
    assert arb.stats.resyncs == expected_resyncs == arb.stats.gaps
    assert sub.resets == 1 + expected_resyncs
    assert sub.book.normalized() == stream.book_at_id(arb.applied_id)
    assert arb.book.normalized() == sub.book.normalized()


# --- one faulty copy: a mangled last id or a far-future id on one connection ----------------

FAULT_WINDOW_NS = 100_000_000
FAULT_STEP_NS = 10_000_000
FAR = 10**12


@st.composite
def faulty_scenarios(
    draw: st.DrawFn,
) -> tuple[TrueStream, list[tuple[int, int, int, int, str]], int, int]:
    """A true stream, 2-3 complete copies of it (each batched its own way), ids lost on
    every copy or not, and one fault on one copy: a copy whose last id is mangled to
    ``U + 10^12``, or an extra update 10^12 ids ahead. Returns the stream, the arrival
    schedule of (time, conn, start, end, kind) with kind "ok", "mangled" or "far", the
    number of real gaps (0 or 1) and the snapshot lag in steps."""
    stream = make_stream(draw(st.lists(diff_choice, min_size=3, max_size=40)))
    n = len(stream.diffs)
    lost: set[int] = set()
    if draw(st.booleans()):
        start = draw(st.integers(1, n - 1))
        lost = set(range(start, min(n, start + draw(st.integers(1, 3)))))
    n_conns = draw(st.integers(2, 3))
    copies: list[list[tuple[int, int, int, str]]] = []
    for conn in range(n_conns):
        groups: list[tuple[int, int, int, str]] = []
        i = 0
        while i < n:
            if i in lost:
                i += 1
                continue
            end = i
            while end + 1 < n and end + 1 not in lost and draw(st.integers(0, 3)) == 0:
                end += 1
            groups.append((conn, i, end, "ok"))
            i = end + 1
        copies.append(groups)
    bad = draw(st.integers(0, n_conns - 1))
    if copies[bad]:
        at = draw(st.integers(0, len(copies[bad]) - 1))
        conn, start, end, _ = copies[bad][at]
        if draw(st.booleans()):
            copies[bad][at] = (conn, start, end, "mangled")
        else:
            copies[bad].insert(at + 1, (conn, end, end, "far"))
    schedule: list[tuple[int, int, int, int, str]] = []
    cursors = [0] * n_conns
    now = 0
    while any(cursors[c] < len(copies[c]) for c in range(n_conns)):
        live = [c for c in range(n_conns) if cursors[c] < len(copies[c])]
        c = draw(st.sampled_from(live))
        now += draw(st.integers(0, 3)) * FAULT_STEP_NS
        schedule.append((now, *copies[c][cursors[c]]))
        cursors[c] += 1
    later = any(s[2] > max(lost) for s in schedule) if lost else False
    return stream, schedule, int(later), draw(st.integers(0, 5))


def faulty_copy(
    stream: TrueStream, start: int, end: int, conn: int, kind: str, now: int
) -> DepthDiff:
    diff = merged(stream, start, end, conn, now)
    if kind == "mangled":
        return msgspec.structs.replace(diff, last_id=diff.first_id + FAR)
    if kind == "far":
        ahead = stream.diffs[end][1] + FAR
        return msgspec.structs.replace(diff, first_id=ahead, last_id=ahead)
    return diff


@STREAM_SETTINGS
@given(faulty_scenarios())
def test_one_faulty_copy_never_makes_a_live_book_wrong(
    scenario: tuple[TrueStream, list[tuple[int, int, int, int, str]], int, int],
) -> None:
    stream, schedule, real_gaps, lag_steps = scenario
    point = [0]
    run = Run(
        SequencedBook(KEY, BinanceSpotRule(), ArbiterLimits(reorder_window_ns=FAULT_WINDOW_NS)),
        lambda arb: stream,
        lambda now: stream.snapshot(point[0], now),
        lag_steps * FAULT_STEP_NS,
    )
    for conn in {s[1] for s in schedule}:
        run.connection(conn, True, 0)
    for now, conn, start, end, kind in schedule:
        if kind != "far":
            point[0] = max(point[0], end + 1)
        # Run checks after every input: while live, the book is the true book.
        run.diff(faulty_copy(stream, start, end, conn, kind, now), now)
    run.until(schedule[-1][0] + 10 * FAULT_WINDOW_NS)
    arb = run.arb
    assert arb.state is SymbolState.LIVE
    assert arb.book.normalized() == stream.book_at_id(arb.applied_id)
    assert arb.stats.resyncs <= real_gaps + 1
    assert arb.stats.venue_resets == 0


# --- one connection's copies mangled for a while -------------------------------------------


@st.composite
def mangled_window_scenarios(
    draw: st.DrawFn,
) -> tuple[TrueStream, list[tuple[int, int, int, int, str]], int]:
    """A true stream and 2-3 complete copies of it, each batched its own way; the copies of
    one connection ending in a drawn window of updates have their last id mangled to
    ``U + 10^12``. The venue makes update ``i`` at ``i`` steps: each copy arrives in the
    step of its last update, the copies of a step in any order. Returns the stream, the
    arrival schedule (time, conn, start, end, kind) and the mangled connection."""
    stream = make_stream(draw(st.lists(diff_choice, min_size=4, max_size=40)))
    n = len(stream.diffs)
    n_conns = draw(st.integers(2, 3))
    bad = draw(st.integers(0, n_conns - 1))
    first_bad = draw(st.integers(1, n - 1))
    last_bad = draw(st.integers(first_bad, n - 1))
    by_step: list[list[tuple[int, int, int, str]]] = [[] for _ in range(n)]
    for conn in range(n_conns):
        i = 0
        while i < n:
            end = i
            while end + 1 < n and draw(st.integers(0, 3)) == 0:
                end += 1
            kind = "mangled" if conn == bad and first_bad <= end <= last_bad else "ok"
            by_step[end].append((conn, i, end, kind))
            i = end + 1
    schedule: list[tuple[int, int, int, int, str]] = []
    for step, copies in enumerate(by_step):
        for copy in draw(st.permutations(copies)):
            schedule.append((step * FAULT_STEP_NS, *copy))
    return stream, schedule, bad


@STREAM_SETTINGS
@given(mangled_window_scenarios())
def test_one_connection_mangling_for_a_while_costs_the_book_no_resync(
    scenario: tuple[TrueStream, list[tuple[int, int, int, int, str]], int],
) -> None:
    stream, schedule, bad = scenario
    point = [0]
    run = Run(
        SequencedBook(KEY, BinanceSpotRule(), ArbiterLimits(reorder_window_ns=FAULT_WINDOW_NS)),
        lambda arb: stream,
        lambda now: stream.snapshot(point[0], now),
    )
    for conn in {s[1] for s in schedule}:
        run.connection(conn, True, 0)
    for now, conn, start, end, kind in schedule:
        point[0] = max(point[0], end + 1)
        # Run checks after every input: while live, the book is the true book.
        run.diff(faulty_copy(stream, start, end, conn, kind, now), now)
    run.until(schedule[-1][0] + 10 * FAULT_WINDOW_NS)
    arb = run.arb
    assert arb.state is SymbolState.LIVE and arb.stats.resyncs == 0
    assert arb.applied_id == stream.id_after(len(stream.diffs))
    assert arb.book.normalized() == stream.books[-1]
    blamed = {c for c, stats in arb.stats.connections.items() if stats.disagreements}
    assert blamed <= {bad}
    reconnects = {e.conn_id for _, e in run.published if isinstance(e, ReconnectWanted)}
    assert reconnects <= {bad}
