"""A venue that misbehaves, against SequencedBook: ids restarted on every connection, a
mangled copy on one connection, a far-future id. In each, the book is checked after every
input (:class:`Run`): never ``live`` while wrong, and right at the end."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec
import pytest

from feeds.binance import BinanceSpotRule
from gateway.core.arbiter import ArbiterLimits
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import ReconnectWanted
from gateway.core.model import SymbolState
from gateway.core.sequenced import SequencedBook
from gateway.core.sequenced import Sync

from .arbiter_streams import KEY
from .arbiter_streams import SYMBOL
from .arbiter_streams import VENUE
from .arbiter_streams import Run
from .arbiter_streams import TrueStream
from .arbiter_streams import choices
from .arbiter_streams import make_stream
from .arbiter_streams import merged

WINDOW_NS = 100_000_000
STEP_NS = 10_000_000
FAR = 10**12
LIVE, RESYNCING = SymbolState.LIVE, SymbolState.RESYNCING


def book(max_id_jump: int | None = None, *, up: tuple[int, ...] = ()) -> SequencedBook:
    """A book with the connections ``up`` up."""
    limits = ArbiterLimits(reorder_window_ns=WINDOW_NS, max_id_jump=max_id_jump)
    arb = SequencedBook(KEY, BinanceSpotRule(), limits)
    for conn in up:
        arb.on_connection(conn, True, 0)
    return arb


def mangled(stream: TrueStream, index: int, conn: int, recv_ns: int) -> DepthDiff:
    """Diff ``index`` with its last id ``u = U + 10^12``."""
    first, _, bids, asks = stream.diffs[index]
    return DepthDiff(VENUE, SYMBOL, first, first + FAR, -1, bids, asks, 0, recv_ns, conn)


def far_future(after_id: int, conn: int, recv_ns: int) -> DepthDiff:
    bids = (("95.00", "7"),)
    return DepthDiff(VENUE, SYMBOL, after_id + FAR, after_id + FAR, -1, bids, (), 0, recv_ns, conn)


def started(stream: TrueStream, conns: tuple[int, ...], lag_ns: int = 0) -> tuple[Run, list[int]]:
    """A Run on ``stream`` built from its first snapshot; ``point[0]``: the diffs the venue
    has made (set it as the test goes: REST snapshots are taken there)."""
    point = [0]
    run = Run(book(), lambda a: stream, lambda now: stream.snapshot(point[0], now), lag_ns)
    for conn in conns:
        run.connection(conn, True, 0)
    run.diff(merged(stream, 0, 0, conns[0], 0), 0)
    point[0] = 1
    run.until(lag_ns)
    assert run.arb.state is LIVE and run.arb.applied_id == stream.id_after(1)
    return run, point


# --- a venue that restarts its ids ----------------------------------------------------------


@dataclass
class RestartingVenue:
    """A venue on stream ``old`` until it restarts its ids on stream ``new``; ``point``:
    the diffs it has made in its current stream (its REST snapshots are taken there)."""

    old: TrueStream
    new: TrueStream
    restarted: bool = False
    point: int = 0

    def snapshot(self, now_ns: int) -> DepthSnapshot:
        return (self.new if self.restarted else self.old).snapshot(self.point, now_ns)

    def run(self, lag_ns: int) -> Run:
        """A Run whose book follows the new stream once it recognised the reset."""

        def truth(arb: SequencedBook) -> TrueStream:
            return self.new if arb.stats.venue_resets else self.old

        run = Run(book(), truth, self.snapshot, lag_ns)
        run.connection(0, True, 0)
        run.connection(1, True, 0)
        return run

    def restart(self) -> None:
        self.restarted, self.point = True, 0

    def makes(self, run: Run, i: int, now_ns: int, *, lost: bool = False) -> None:
        """The venue makes diff ``i`` of its stream; connections 0 and 1 deliver it."""
        stream = self.new if self.restarted else self.old
        self.point = i + 1
        if not lost:
            run.diff(merged(stream, i, i, 0, now_ns), now_ns)
            run.diff(merged(stream, i, i, 1, now_ns), now_ns + 1)


@pytest.mark.parametrize("inside", [False, True], ids=["from 11", "inside the applied range"])
@pytest.mark.parametrize("reconnect", [False, True], ids=["same connections", "reconnected"])
def test_a_venue_that_restarts_its_ids_is_recognised_and_the_book_rebuilt(
    reconnect: bool, inside: bool
) -> None:
    old = make_stream(choices(60))
    # Inside: the new ids start above the first snapshot's and below the book's, so each
    # connection's ids are copies of ids the book applied, but not of its updates.
    new = make_stream(choices(40, shift=3), initial_id=old.id_after(10) if inside else 10)
    assert new.books[0] != old.books[-1]
    venue = RestartingVenue(old, new)
    run = venue.run(lag_ns=2 * STEP_NS)
    now = 0
    for i in range(len(old.diffs)):
        now += STEP_NS
        venue.makes(run, i, now)
    assert run.arb.state is LIVE and run.arb.applied_id == old.id_after(60)

    venue.restart()
    restart_ns = now
    if reconnect:
        for conn in (0, 1):
            run.connection(conn, False, now)
        for conn in (0, 1):
            run.connection(conn, True, now)
    for i in range(len(new.diffs)):
        now += STEP_NS
        venue.makes(run, i, now)
    run.until(now + 10 * WINDOW_NS)

    arb = run.arb
    assert arb.state is LIVE and arb.applied_id == new.id_after(len(new.diffs))
    assert arb.book.normalized() == new.books[-1]
    assert (arb.stats.venue_resets, arb.stats.resyncs, arb.stats.gaps) == (1, 1, 0)
    resyncing = [(t, r) for t, state, r in run.statuses() if state is RESYNCING]
    assert len(resyncing) == 1 and resyncing[0][1].startswith("venue reset")
    # Recognised within 1.25 reset windows (of twice the reorder window) and an update.
    assert resyncing[0][0] - restart_ns <= 2 * WINDOW_NS * 5 // 4 + 2 * STEP_NS
    assert run.statuses()[-1][1:] == (LIVE, "snapshot applied")
    assert run.fetches == 2  # the first snapshot and the one after the reset


def test_a_snapshot_below_the_book_while_every_connection_restarted_is_a_venue_reset() -> None:
    old = make_stream(choices(20))
    new = make_stream(choices(30, shift=5), initial_id=10)
    venue = RestartingVenue(old, new)
    # The REST snapshot of the resync comes back after the venue restarted.
    run = venue.run(lag_ns=15 * STEP_NS)
    run.diff(merged(old, 0, 0, 0, 0), 0)
    venue.point = 1
    run.until(15 * STEP_NS)
    now = 15 * STEP_NS
    for i in range(1, 12):
        now += STEP_NS
        venue.makes(run, i, now, lost=i == 8)  # lost on every connection: a gap
    assert run.arb.sync is Sync.AWAITING_SNAPSHOT and run.arb.stats.gaps == 1
    venue.restart()
    for i in range(len(new.diffs)):
        now += STEP_NS
        venue.makes(run, i, now)
    run.until(now + 10 * WINDOW_NS)

    arb = run.arb
    assert arb.state is LIVE and arb.book.normalized() == new.books[-1]
    assert (arb.stats.venue_resets, arb.stats.resyncs, arb.stats.gaps) == (1, 1, 1)
    reasons = [r for _, state, r in run.statuses() if state is RESYNCING]
    assert reasons[0].startswith("gap ") and reasons[1].startswith("venue reset: snapshot id")


def test_streams_behind_a_snapshot_ahead_of_them_are_not_a_venue_reset() -> None:
    stream = make_stream(choices(30))
    # The REST snapshot is 5 diffs ahead of both streams, which stay behind it for longer
    # than the reset window: the book never moved past its snapshot, so nothing is wrong.
    arb = book(up=(0, 1))
    arb.on_diff(merged(stream, 0, 0, 0, 0), 0)
    arb.on_snapshot(stream.snapshot(6), 0)
    for i in range(0, 6):
        arb.on_diff(merged(stream, i, i, 0, i * WINDOW_NS), i * WINDOW_NS)
    assert arb.state is LIVE and arb.stats.venue_resets == 0 and arb.stats.resyncs == 0
    arb.on_diff(merged(stream, 6, 6, 1, 7 * WINDOW_NS), 7 * WINDOW_NS)
    assert arb.applied_id == stream.id_after(7) and arb.stats.venue_resets == 0


def test_a_stream_lagging_a_rest_snapshot_is_catching_up_until_ids_go_back() -> None:
    """The book is built from a REST snapshot ahead of connection 1 and moved past it by
    connection 0's buffered updates; connection 0 goes down. Connection 1's copies are
    older than the snapshot (no applied update to compare them with) for longer than the
    reset window, rising in its stream: it lags, no venue reset. Once its ids go back (its
    stream restarted), they no longer put the reset off."""
    stream = make_stream(choices(60))
    arb = book(up=(0, 1))
    arb.on_diff(merged(stream, 0, 0, 1, 0), 0)
    for i in (40, 41):
        arb.on_diff(merged(stream, i, i, 0, 0), 0)
    arb.on_snapshot(stream.snapshot(40), 0)
    assert arb.state is LIVE and arb.applied_id == stream.id_after(42)
    arb.on_connection(0, False, 0)
    now = 0
    for i in range(1, 40):
        now += 2 * STEP_NS
        arb.on_diff(merged(stream, i, i, 1, now), now)
    assert now > arb.reset_window_ns
    assert arb.state is LIVE and arb.stats.venue_resets == 0
    last_rising_ns = now
    start_ns = now + STEP_NS
    arb.on_diff(merged(stream, 5, 5, 1, start_ns), start_ns)  # back: a restart
    for i in range(6, 40):
        now = start_ns + (i - 5) * STEP_NS
        arb.on_diff(merged(stream, i, i, 1, now), now)
        if arb.stats.venue_resets:
            break
    # The window runs from its last rising copy.
    assert arb.stats.venue_resets == 1 and now == last_rising_ns + arb.reset_window_ns


# --- a connection that lags -----------------------------------------------------------------

#: How many steps connection 1 lags connection 0, the fastest; connection 2 lags 5 more.
#: 30 steps are 1.5 reset windows (twice the reorder window).
LAG_STEPS = 30


def lagging_copy(stream: TrueStream, i: int, conn: int, now_ns: int, own: bool) -> DepthDiff:
    """Diff ``i`` as ``conn`` delivers it: alone, or (``own``) batched its own way, with
    diff ``i + 1`` on odd ``i``."""
    if own and i % 2 == 1 and i + 1 < len(stream.diffs):
        return merged(stream, i, i + 1, conn, now_ns)
    return merged(stream, i, i, conn, now_ns)


@pytest.mark.parametrize("own_batching", [False, True], ids=["same batches", "own batches"])
@pytest.mark.parametrize("n_conns", [2, 3])
def test_connections_lagging_the_one_that_went_down_are_not_a_venue_reset(
    n_conns: int, own_batching: bool
) -> None:
    stream = make_stream(choices(120))
    conns = tuple(range(n_conns))
    run, point = started(stream, conns)
    down_at = 50
    lags = {c: 0 if c == 0 else LAG_STEPS + 5 * (c - 1) for c in conns}
    own = conns[-1] if own_batching else -1  # the slowest batches its own way
    now = 0
    step = 0
    # Connection 0, the fastest, goes down at step 50; the others deliver copies of what
    # the book applied for 1.5 to 2 reset windows, then catch up and move the book on.
    while step < len(stream.diffs) + max(lags.values()):
        step += 1
        now += STEP_NS
        point[0] = min(step + 1, len(stream.diffs))
        if step == down_at:
            run.connection(0, False, now)
        for conn in conns:
            i = step - lags[conn]
            if (conn == 0 and step >= down_at) or not 1 <= i < len(stream.diffs):
                continue
            if conn != own or i % 2 == 1:  # its even diffs are in the odd ones' batches
                run.diff(lagging_copy(stream, i, conn, now, conn == own), now)
    run.until(now + 10 * WINDOW_NS)

    arb = run.arb
    assert (arb.stats.venue_resets, arb.stats.resyncs, arb.stats.gaps) == (0, 0, 0)
    assert run.statuses() == [(0, LIVE, "snapshot applied")] and run.fetches == 1
    assert arb.applied_id == stream.id_after(len(stream.diffs))
    assert arb.book.normalized() == stream.books[-1]
    # The lagging copies were dropped as duplicates, and they moved the book once past it.
    assert arb.stats.conn(1).duplicates > 0 and arb.stats.conn(1).first_wins > 0


def test_a_connection_lagging_when_the_venue_restarts_is_a_venue_reset_once_it_restarts() -> None:
    old = make_stream(choices(80))
    new = make_stream(choices(60, shift=3), initial_id=10)
    venue = RestartingVenue(old, new)
    run = venue.run(lag_ns=2 * STEP_NS)
    down_at = 50
    now = 0
    # Connection 1 lags connection 0 by LAG_STEPS. The venue restarts its ids when
    # connection 0 goes down: connection 1 delivers copies of what the book applied for
    # 1.5 reset windows, then the new sequence.
    run.diff(merged(old, 0, 0, 0, now), now)
    venue.point = 1
    for step in range(1, down_at + LAG_STEPS + len(new.diffs)):
        now += STEP_NS
        if step < down_at:
            run.diff(merged(old, step, step, 0, now), now)
            venue.point = step + 1
        elif step == down_at:
            run.connection(0, False, now)
            venue.restart()
        elif step - down_at - 1 < len(new.diffs):
            venue.point = step - down_at
        i = step - LAG_STEPS
        if 1 <= i < down_at:
            run.diff(merged(old, i, i, 1, now), now)
        elif i >= down_at:
            run.diff(merged(new, i - down_at, i - down_at, 1, now), now)
    run.until(now + 10 * WINDOW_NS)

    arb = run.arb
    assert arb.state is LIVE and arb.book.normalized() == new.books[-1]
    assert (arb.stats.venue_resets, arb.stats.resyncs, arb.stats.gaps) == (1, 1, 0)
    resyncing = [t for t, state, _ in run.statuses() if state is RESYNCING]
    assert len(resyncing) == 1
    # Not while its copies came; within 1.25 reset windows of its last copy.
    last_copy_ns = (down_at - 1 + LAG_STEPS) * STEP_NS
    assert last_copy_ns < resyncing[0] <= last_copy_ns + 2 * WINDOW_NS * 5 // 4 + STEP_NS


def test_copies_that_agree_after_one_that_disagreed_do_not_put_off_a_venue_reset() -> None:
    stream = make_stream(choices(100))
    arb = book(up=(0, 1))
    arb.on_snapshot(stream.snapshot(0), 0)
    for i in range(60):
        arb.on_diff(merged(stream, i, i, 0, 0), 0)
    for i in range(20):
        arb.on_diff(merged(stream, i, i, 1, 0), 0)
    arb.on_connection(0, False, 0)
    # Connection 1's copy of diff 20 says another quantity than the book at its id (a
    # restarted sequence may agree with the book now and then; this one did not).
    first, last, bids, asks = stream.diffs[20]
    wrong = tuple((p, "7") for p, _ in bids), tuple((p, "7") for p, _ in asks)
    start_ns = WINDOW_NS
    arb.on_diff(DepthDiff(VENUE, SYMBOL, first, last, -1, *wrong, 0, start_ns, 1), start_ns)
    assert arb.applied_ring.agrees(merged(stream, 21, 21, 1, 0)) is True
    for i in range(21, 60):
        now = start_ns + (i - 20) * STEP_NS
        arb.on_diff(merged(stream, i, i, 1, now), now)
        if arb.stats.venue_resets:
            break
    # Its later copies agree, and it is advancing: the reset is not put off.
    assert arb.stats.venue_resets == 1 and now == start_ns + 2 * WINDOW_NS


def test_a_book_whose_id_came_from_a_bogus_copy_is_rebuilt() -> None:
    stream = make_stream(choices(200))
    arb = book(up=(0, 1))
    arb.on_snapshot(stream.snapshot(0), 0)
    first, last, bids, asks = stream.diffs[0]
    # Connection 1's copy of the first update ends 300 ids late (within max_id_jump), and
    # comes first: the book's id is bogus, and both connections' copies are below it.
    bogus = DepthDiff(VENUE, SYMBOL, first, last + 300, -1, bids, asks, 0, 0, 1)
    arb.on_diff(bogus, 0)
    assert arb.applied_id == last + 300 and arb.state is LIVE
    now = 0
    reset_ns = -1
    for i in range(len(stream.diffs)):
        now += STEP_NS
        for conn in (0, 1):
            out = arb.on_diff(merged(stream, i, i, conn, now), now)
            if reset_ns < 0 and arb.stats.venue_resets:
                reset_ns = now
                assert "venue reset: every connection below" in str(out[0])
        if reset_ns >= 0:
            break
    assert stream.id_after(i + 1) < last + 300  # before the copies caught up with it
    assert 0 < reset_ns <= 2 * WINDOW_NS * 5 // 4 + STEP_NS
    arb.on_snapshot(stream.snapshot(i + 1), now)
    assert arb.state is LIVE and arb.book.normalized() == stream.books[i + 1]


def test_connections_behind_for_moments_only_are_not_a_venue_reset() -> None:
    """Every connection below the book for a moment at every update, caught up a
    millisecond later each time: never behind for the reset window, so no venue reset.
    (A connection that delivers each copy with an old one late behind it makes them.)"""
    stream = make_stream(choices(100))
    run, point = started(stream, (0, 1, 2))
    now = 0
    for i in range(1, len(stream.diffs)):
        now += STEP_NS
        point[0] = i + 1
        # Connection 0 is first with diff i, then delivers diff i - 1 again, late: for a
        # moment every connection is below the book; 1 and 2 catch up a millisecond later.
        run.diff(merged(stream, i, i, 0, now), now)
        run.diff(merged(stream, i - 1, i - 1, 0, now), now)
        for conn in (1, 2):
            run.diff(merged(stream, i, i, conn, now + 1_000_000), now + 1_000_000)
    assert now > 3 * run.arb.reset_window_ns
    assert run.arb.stats.venue_resets == 0 and run.arb.stats.resyncs == 0
    assert run.arb.state is LIVE and run.arb.applied_id == stream.id_after(len(stream.diffs))


# --- one mangled copy -----------------------------------------------------------------------


@pytest.mark.parametrize("mangled_first", [False, True], ids=["true copy first", "mangled first"])
@pytest.mark.parametrize("n_conns", [2, 3])
def test_a_mangled_copy_on_one_connection_is_held_and_that_connection_reset(
    mangled_first: bool, n_conns: int
) -> None:
    stream = make_stream(choices(30))
    conns = tuple(range(n_conns))
    run, point = started(stream, conns)
    bad = n_conns - 1
    now = 0
    for i in range(1, len(stream.diffs)):
        now += STEP_NS
        point[0] = i + 1
        copies = [
            mangled(stream, i, c, now) if (i == 10 and c == bad) else merged(stream, i, i, c, now)
            for c in conns
        ]
        if mangled_first:
            copies.reverse()
        for copy in copies:
            run.diff(copy, now)
    run.until(now + 10 * WINDOW_NS)

    arb = run.arb
    assert arb.state is LIVE and arb.applied_id == stream.id_after(len(stream.diffs))
    assert arb.book.normalized() == stream.books[-1]
    assert arb.stats.resyncs == 0 and run.statuses() == [(0, LIVE, "snapshot applied")]
    bad_stats = arb.stats.conn(bad)
    assert (bad_stats.implausible, bad_stats.disagreements) == (1, 1)
    assert arb.stats.implausible == 1 and arb.stats.obsolete == 1
    reconnects = [e for _, e in run.published if isinstance(e, ReconnectWanted)]
    assert [e.conn_id for e in reconnects] == [bad]
    assert reconnects[0].reason.startswith(f"implausible ids from conn {bad}")
    assert not arb._held and arb.pending == 0 and arb.sync is Sync.SYNCED


def test_a_mangled_copy_on_the_only_connection_is_never_applied_the_book_resyncs() -> None:
    stream = make_stream(choices(30))
    run, point = started(stream, (0,), lag_ns=STEP_NS)
    now = 0
    for i in range(1, len(stream.diffs)):
        now += STEP_NS
        point[0] = i + 1
        run.diff(mangled(stream, i, 0, now) if i == 10 else merged(stream, i, i, 0, now), now)
    run.until(now + 10 * WINDOW_NS)

    arb = run.arb
    assert arb.state is LIVE and arb.book.normalized() == stream.books[-1]
    assert arb.stats.resyncs == 1 and arb.stats.conn(0).implausible == 1
    reasons = [r for _, state, r in run.statuses() if state is RESYNCING]
    assert reasons == [
        f"implausible ids from conn 0: {stream.diffs[10][0]}-{stream.diffs[10][0] + FAR}"
        " with no other connection to confirm them"
    ]


def test_an_implausible_jump_confirmed_by_another_connection_is_applied() -> None:
    arb = book(up=(0, 1))
    arb.on_snapshot(make_stream(choices(1)).snapshot(0), 0)
    jump = DepthDiff(VENUE, SYMBOL, 1001, 1001 + FAR, -1, (("95.00", "1"),), (), 0, 0, 0)
    assert arb.on_diff(jump, 0) == [] and arb.sync is Sync.HOLE
    # Another connection's copy with other levels does not confirm it.
    other = DepthDiff(VENUE, SYMBOL, 1001, 1001 + FAR, -1, (("95.00", "2"),), (), 0, 0, 1)
    assert arb.on_diff(other, 0) == [] and arb.applied_id == 1000
    same = DepthDiff(VENUE, SYMBOL, 1001, 1001 + FAR, -1, (("95.00", "1"),), (), 0, 0, 1)
    out = arb.on_diff(same, 0)
    assert arb.applied_id == 1001 + FAR and arb.stats.confirmed == 1
    assert [type(e).__name__ for e in out] == ["BookDelta"]
    assert arb.state is LIVE and arb.stats.resyncs == 0


def test_an_unconfirmed_jump_is_a_gap_when_the_window_passes() -> None:
    stream = make_stream(choices(10))
    run, _ = started(stream, (0, 1), lag_ns=STEP_NS)
    run.diff(mangled(stream, 1, 1, STEP_NS), STEP_NS)  # connection 1 then says nothing
    assert run.arb.sync is Sync.HOLE and run.arb.applied_id == stream.id_after(1)
    run.until(STEP_NS + WINDOW_NS)
    assert run.arb.state is RESYNCING and run.arb.stats.resyncs == 1
    assert run.statuses()[-1] == (
        STEP_NS + WINDOW_NS,
        RESYNCING,
        f"implausible ids from conn 1: {stream.diffs[1][0]}-{stream.diffs[1][0] + FAR}"
        " not confirmed within the reorder window",
    )


def test_a_copy_from_a_replacement_on_the_same_endpoint_does_not_confirm_a_mangled_one() -> None:
    stream = make_stream(choices(10))
    run, _ = started(stream, (0, 1, 2))
    # Connection 0 was blamed; its replacement 3 is opened beside it and carries the same
    # mangled copy: two copies, but not a majority of the four connections up.
    run.connection(3, True, 0)
    run.diff(mangled(stream, 1, 0, STEP_NS), STEP_NS)
    run.diff(mangled(stream, 1, 3, STEP_NS), STEP_NS)
    assert run.arb.applied_id == stream.id_after(1) and run.arb.stats.confirmed == 0
    for conn in (1, 2):
        run.diff(merged(stream, 1, 1, conn, 2 * STEP_NS), 2 * STEP_NS)
    run.until(10 * WINDOW_NS)
    arb = run.arb
    assert arb.applied_id == stream.id_after(2) and arb.book.normalized() == stream.books[2]
    assert arb.stats.resyncs == 0 and arb.state is LIVE and not arb._held
    assert {c for c, s in arb.stats.connections.items() if s.disagreements} == {0, 3}


def test_a_mangled_copy_held_on_a_snapshot_is_contradicted_by_a_stale_copy() -> None:
    stream = make_stream(choices(10))
    arb = book(up=(0, 1))
    # Connection 0's mangled copy of diffs 0-3 waits for the book, built at diff 3: held.
    first, _, bids, asks = stream.diffs[0]
    bogus = DepthDiff(VENUE, SYMBOL, first, first + FAR, -1, bids, asks, 0, 0, 0)
    arb.on_diff(bogus, 0)
    arb.on_snapshot(stream.snapshot(4), 0)
    assert arb.sync is Sync.HOLE and len(arb._held) == 1
    # Connection 1's copy of the same ids ends at the snapshot's id: stale, and it shows the
    # held copy's end wrong.
    out = arb.on_diff(merged(stream, 0, 3, 1, STEP_NS), STEP_NS)
    assert [e.conn_id for e in out if isinstance(e, ReconnectWanted)] == [0]
    assert arb.deadline_ns() is None and not arb._held and arb.stats.resyncs == 0


def test_an_implausible_jump_is_applied_once_a_majority_of_connections_carries_it() -> None:
    arb = book(up=(0, 1, 2))
    arb.on_snapshot(make_stream(choices(1)).snapshot(0), 0)
    jump = [
        DepthDiff(VENUE, SYMBOL, 1001, 1001 + FAR, -1, (("95.00", "1"),), (), 0, 0, c)
        for c in (0, 1, 2)
    ]
    assert arb.on_diff(jump[2], 0) == [] and arb.on_diff(jump[0], 0) != []
    assert arb.applied_id == 1001 + FAR and arb.stats.confirmed == 1
    assert arb.on_diff(jump[1], 0) == [] and arb.stats.duplicates == 1


def test_copies_held_past_the_window_are_dropped_when_another_connection_went_on() -> None:
    stream = make_stream(choices(10))
    run, _ = started(stream, (0, 1), lag_ns=STEP_NS)
    run.diff(mangled(stream, 1, 1, STEP_NS), STEP_NS)
    # Connection 0 delivers again (a copy of the book's last update), then nothing moves.
    run.diff(merged(stream, 0, 0, 0, 2 * STEP_NS), 2 * STEP_NS)
    run.until(STEP_NS + WINDOW_NS)
    arb = run.arb
    assert arb.state is LIVE and arb.stats.resyncs == 0 and not arb._held
    assert arb.stats.conn(1).disagreements == 1 and arb.sync is Sync.SYNCED
    reconnects = [e for _, e in run.published if isinstance(e, ReconnectWanted)]
    assert [e.conn_id for e in reconnects] == [1]
    assert "not confirmed within the reorder window by conn 0" in reconnects[0].reason


@pytest.mark.parametrize("others_up", [True, False], ids=["another at the book", "none"])
def test_an_in_band_snapshot_far_ahead_is_used_only_when_no_connection_is_at_the_book(
    others_up: bool,
) -> None:
    stream = make_stream(choices(10))
    arb = book(up=(0, 1))
    arb.on_snapshot(stream.snapshot(0), 0)
    arb.on_diff(merged(stream, 0, 0, 0, 0), 0)
    if not others_up:
        arb.on_connection(0, False, 0)
    true = stream.snapshot(3)
    bogus = msgspec.structs.replace(true, last_id=true.last_id + FAR, conn_id=1)
    out = arb.on_snapshot(bogus, STEP_NS)
    if others_up:
        assert arb.applied_id == stream.id_after(1) and arb.stats.snapshots_unused == 1
        assert arb.stats.conn(1).disagreements == 1
        assert [type(e) for e in out] == [ReconnectWanted]
    else:
        assert arb.applied_id == true.last_id + FAR and arb.stats.jumps == 1


# --- a far-future id ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "conns, bad_goes_on",
    [((0,), True), ((0, 1), False), ((0, 1), True)],
    ids=["one connection", "its connection falls silent", "its connection goes on"],
)
def test_one_far_future_id_causes_at_most_one_resync(
    conns: tuple[int, ...], bad_goes_on: bool
) -> None:
    stream = make_stream(choices(1000))
    run, point = started(stream, conns, lag_ns=STEP_NS)
    bad = conns[-1]
    now = 0
    # 10 s of updates every 10 ms; the far-future id comes after the 5th.
    for i in range(1, len(stream.diffs)):
        now += STEP_NS
        point[0] = i + 1
        for conn in conns:
            if conn == bad and i > 5 and not bad_goes_on:
                continue
            run.diff(merged(stream, i, i, conn, now), now)
            if conn == bad and i == 5:
                run.diff(far_future(stream.id_after(i), bad, now), now)
    run.until(now + 10 * WINDOW_NS)

    arb = run.arb
    assert arb.state is LIVE and arb.book.normalized() == stream.books[-1]
    # With another connection carrying the book on, the far-future id is its connection's
    # fault, whether that connection goes on (its own lower ids) or falls silent (the
    # other's, through the reorder window).
    expected = 0 if len(conns) > 1 else 1
    assert arb.stats.resyncs == arb.stats.gaps == expected
    assert run.fetches == 1 + expected and arb.pending == 0
    assert arb.stats.obsolete == 1  # the far-future id, forgotten
    if expected == 0:
        assert arb.stats.conn(bad).disagreements == 1


def test_a_held_update_the_book_has_since_passed_is_forgotten_without_a_resync() -> None:
    arb = book(max_id_jump=10, up=(0, 1))
    arb.on_snapshot(make_stream(choices(1)).snapshot(0), 0)

    def d(first: int, last: int, conn: int) -> DepthDiff:
        return DepthDiff(VENUE, SYMBOL, first, last, -1, (("95.00", str(last)),), (), 0, 0, conn)

    assert arb.on_diff(d(1001, 1030, 1), 0) == []
    assert (arb.sync, arb.deadline_ns() is None) == (Sync.HOLE, False)  # jumps 30 > 10
    for first, last in ((1001, 1010), (1011, 1020), (1021, 1028), (1029, 1031)):
        arb.on_diff(d(first, last, 0), 0)
    assert arb.sync is Sync.SYNCED and arb.deadline_ns() is None
    assert arb.applied_id == 1031 and arb.stats.obsolete == 1
    assert arb.on_timer(10 * WINDOW_NS) == [] and arb.stats.resyncs == 0


def test_a_connection_disagreeing_again_and_again_is_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = make_stream(choices(40))
    run, point = started(stream, (0, 1))
    now = 0
    with caplog.at_level(logging.WARNING, logger="gateway.core.sequenced"):
        for i in range(1, len(stream.diffs)):
            now += STEP_NS
            point[0] = i + 1
            run.diff(merged(stream, i, i, 0, now), now)
            run.diff(
                mangled(stream, i, 1, now) if i % 5 == 0 else merged(stream, i, i, 1, now), now
            )
    arb = run.arb
    assert arb.stats.conn(1).disagreements == 7 and arb.stats.resyncs == 0
    assert len([e for _, e in run.published if isinstance(e, ReconnectWanted)]) == 7
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "reconnecting it" in m]) == 1
    assert len([m for m in lines if m.endswith(": held")]) == 1
    assert arb.book.normalized() == stream.books[-1]
