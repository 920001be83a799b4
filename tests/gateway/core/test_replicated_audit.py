"""ReplicatedBook's audit of replicas without a checksum (Coinbase): replicas compared at
the same point, divergence counted only when it persists."""

from __future__ import annotations

from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.replicated import ReplicatedBook

KEY = "coinbase:BTC-USD"
S = 1_000_000_000


def snap(conn: int) -> DepthSnapshot:
    return DepthSnapshot("coinbase", "BTC-USD", -1, (("100", "1"),), (("101", "1"),), 0, conn)


def upd(conn: int, ms: int, qty: str) -> DepthDiff:
    return DepthDiff("coinbase", "BTC-USD", -1, -1, -1, (("100", qty),), (), ms, 0, conn)


def replicated(conns: tuple[int, ...]) -> ReplicatedBook:
    arb = ReplicatedBook(KEY, audit_check_ns=S, audit_window_ns=3 * S)
    for conn in conns:
        arb.on_connection(conn, True, 0)
        arb.on_snapshot(snap(conn), 0)
    assert arb.leader == conns[0]
    return arb


def counted(arb: ReplicatedBook) -> dict[int, int]:
    return {c: s.audit_disagreements for c, s in arb.stats.connections.items()}


def test_a_replica_apart_at_the_same_point_for_the_window_is_counted_once() -> None:
    arb = replicated((0, 1, 2))
    for second in range(1, 9):
        ms = second * 1000
        # Connection 2's replica keeps a wrong quantity; 0 (the leader) comes last so that
        # every check sees the others at its point.
        arb.on_diff(upd(1, ms, "2"), second * S)
        arb.on_diff(upd(2, ms, "7"), second * S)
        arb.on_diff(upd(0, ms, "2"), second * S + 1)
    assert counted(arb) == {0: 0, 1: 0, 2: 1}
    assert arb.stats.audit_disagreements == 1
    assert arb.book.bids() == [("100", "2")]  # never acted on


def test_a_lagging_replica_is_compared_only_at_the_same_point() -> None:
    arb = replicated((0, 1))
    for second in range(1, 9):
        ms = second * 1000
        arb.on_diff(upd(0, ms, str(second)), second * S)  # 1 is one update behind
        arb.on_diff(upd(1, ms - 1000, str(second - 1)), second * S)
    assert arb.stats.audit_disagreements == 0


def test_replicas_apart_briefly_are_not_counted_and_two_apart_are_both_counted() -> None:
    arb = replicated((0, 1))
    for second in range(1, 9):
        ms = second * 1000
        wrong = "9" if second in (2, 3) else "2"  # apart for two checks: within the window
        arb.on_diff(upd(1, ms, wrong), second * S)
        arb.on_diff(upd(0, ms, "2"), second * S + 1)
    assert arb.stats.audit_disagreements == 0
    for second in range(9, 15):
        arb.on_diff(upd(1, second * 1000, "9"), second * S)
        arb.on_diff(upd(0, second * 1000, "2"), second * S + 1)
    assert counted(arb) == {0: 1, 1: 1}
