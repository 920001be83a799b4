"""SnapshotAttempts: only the current attempt's first answer is used."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.snapshots import SnapshotAttempts


def test_attempts_are_numbered_per_symbol_and_only_the_current_one_is_admitted() -> None:
    attempts = SnapshotAttempts()
    assert attempts.current("A") is None
    assert not attempts.admit("A", 1), "no attempt was started"
    assert [attempts.start("A"), attempts.start("B"), attempts.start("A")] == [1, 1, 2]
    assert attempts.current("A") == 2
    assert not attempts.admit("A", 1), "superseded by attempt 2"
    assert attempts.admit("B", 1)
    assert attempts.admit("A", 2)
    assert not attempts.admit("A", 2), "answered already"
    assert attempts.superseded == 3


#: Operations: ("start", symbol, _) or ("answer", symbol, attempt).
_OPS = st.lists(
    st.tuples(st.sampled_from(["start", "answer"]), st.sampled_from(["A", "B"]), st.integers(0, 6)),
    max_size=40,
)


@given(_OPS)
def test_at_most_one_answer_per_attempt_and_only_to_the_latest(
    ops: list[tuple[str, str, int]],
) -> None:
    attempts = SnapshotAttempts()
    latest: dict[str, int] = {}
    used: set[tuple[str, int]] = set()
    discarded = 0
    for op in ops:
        kind, symbol, attempt = op
        if kind == "start":
            latest[symbol] = attempts.start(symbol)
            continue
        if attempts.admit(symbol, attempt):
            assert latest.get(symbol) == attempt
            assert (symbol, attempt) not in used
            used.add((symbol, attempt))
        else:
            discarded += 1
            assert latest.get(symbol) != attempt or (symbol, attempt) in used
    assert attempts.superseded == discarded
