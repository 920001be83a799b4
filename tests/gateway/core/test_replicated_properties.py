"""Property tests of the unsequenced mode (ReplicatedBook), without an event loop.

A venue produces one true book sequence; 2-4 connections each follow it from their own
snapshot, at their own pace, and may disconnect, resubscribe or deliver a corrupted frame.
Invariants after every step:

- subscribers see one snapshot, then a seq-continuous stream;
- the published book equals the leader's replica (so right after a switch it equals the
  new leader's book);
- every valid replica equals the true book at its connection's position;
- a replica whose checksum failed is never the leader before its next snapshot.
"""

from __future__ import annotations

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from gateway.core.book import L2Book
from gateway.core.model import ArbiterEvent
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import ResubscribeWanted
from gateway.core.replicated import ReplicatedBook

from .arbiter_streams import BID_PRICES
from .arbiter_streams import crc
from .arbiter_streams import make_stream

KEY = "kraken:BTC/USD"


change = st.tuples(
    st.just(1), st.booleans(), st.integers(0, len(BID_PRICES) - 1), st.integers(0, 4)
)
step = st.tuples(
    st.sampled_from(["venue", "deliver", "deliver", "deliver", "snap", "down", "corrupt"]),
    st.integers(0, 3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(change, min_size=5, max_size=30), st.integers(2, 4), st.lists(step, max_size=120))
def test_any_schedule_of_leader_failures_keeps_subscribers_consistent(
    changes: list[tuple[int, bool, int, int]], n_conns: int, steps: list[tuple[str, int]]
) -> None:
    truth = make_stream(changes)
    books: list[L2Book] = []
    for i in range(len(truth.diffs) + 1):
        b = L2Book()
        b.load(*truth.initial)
        for _, _, bids, asks in truth.diffs[:i]:
            b.apply(bids, asks)
        books.append(b)
    arb = ReplicatedBook(KEY, checksum=crc)
    sub = L2Book()
    epoch, seq, resets = 0, -1, 0
    venue = 0  # how many true updates the venue has produced
    position: dict[int, int | None] = {}  # conn -> true index its replica reflects
    up: set[int] = set()
    corrupt_next: set[int] = set()
    failed: set[int] = set()  # checksum failed since the last snapshot

    def take(events: list[ArbiterEvent]) -> None:
        nonlocal epoch, seq, resets
        for event in events:
            if isinstance(event, BookReset):
                assert resets == 0, "one snapshot: failovers are deltas"
                resets += 1
                sub.copy_from(arb.book)
                epoch, seq = event.epoch, event.seq
            elif isinstance(event, BookDelta):
                assert (event.epoch, event.seq) == (epoch, seq + 1)
                seq = event.seq
                sub.apply(event.bids, event.asks)
            elif isinstance(event, ResubscribeWanted):
                failed.add(event.conn_id)
                position[event.conn_id] = None

    now = 0
    for conn in range(n_conns):
        up.add(conn)
        take(arb.on_connection(conn, True, now))
        position[conn] = None
    for kind, c in steps:
        now += 1_000
        conn = c % n_conns
        if kind == "venue":
            venue = min(venue + 1, len(truth.diffs))
        elif kind == "down" and conn in up:
            up.discard(conn)
            take(arb.on_connection(conn, False, now))
            position[conn] = None
        elif kind == "snap":
            if conn not in up:
                up.add(conn)
                take(arb.on_connection(conn, True, now))
            book = books[venue]
            failed.discard(conn)
            position[conn] = venue
            snap = DepthSnapshot(
                "kraken",
                "BTC/USD",
                -1,
                tuple(book.bids()),
                tuple(book.asks()),
                now,
                conn,
                checksum=crc(book),
            )
            take(arb.on_snapshot(snap, now))
        elif kind == "corrupt":
            corrupt_next.add(conn)
        elif kind == "deliver" and conn in up and position[conn] is not None:
            p = position[conn]
            assert p is not None
            if p >= venue:
                continue
            _, _, bids, asks = truth.diffs[p]
            if conn in corrupt_next:
                corrupt_next.discard(conn)
                bids = ((BID_PRICES[0], "123.5"),)  # a mangled copy; checksum of the truth
            diff = DepthDiff(
                "kraken",
                "BTC/USD",
                -1,
                -1,
                -1,
                bids,
                asks,
                1_000 + p,
                now,
                conn,
                checksum=crc(books[p + 1]),
            )
            position[conn] = p + 1
            take(arb.on_diff(diff, now))
        # Invariants after every step.
        if arb.leader is not None:
            assert arb.leader not in failed, "a failed replica never leads"
            assert sub.normalized() == arb.replicas[arb.leader].book.normalized()
            assert arb.book.normalized() == sub.normalized()
        for cid, replica in arb.replicas.items():
            if replica.valid:
                pos = position[cid]
                assert pos is not None
                assert replica.book.normalized() == books[pos].normalized()
