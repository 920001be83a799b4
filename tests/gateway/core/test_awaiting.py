"""Resubscribes awaiting their snapshot (gateway.core.awaiting): pure, the clock passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.awaiting import AwaitedSnapshots, AwaitLimits, Unanswered

S = 1_000_000_000
LIMITS = AwaitLimits(timeout_s=2.0, max_timeout_s=5.0)


def test_limits_need_a_positive_timeout_at_most_the_maximum() -> None:
    for bad in (AwaitLimits(0.0, 1.0), AwaitLimits(2.0, 1.0)):
        with pytest.raises(ValueError, match="timeout_s"):
            AwaitedSnapshots(bad)


def test_nothing_asked_is_nothing_due() -> None:
    awaited = AwaitedSnapshots(LIMITS)
    assert not awaited and awaited.due(10**15) == []


def test_an_unanswered_resubscribe_is_due_after_the_timeout_then_each_wait_doubles_capped() -> None:
    awaited = AwaitedSnapshots(LIMITS)
    awaited.asked(0, "v:A", 0)
    assert awaited and awaited.awaiting(0) == {"v:A"}
    assert awaited.due(2 * S - 1) == []
    assert awaited.due(2 * S) == [Unanswered(0, "v:A", 2.0, 1)]
    asked_ns, waits = 2 * S, []
    for _ in range(4):  # asked again each time it is due: 4 s, then 5 s (the cap)
        awaited.asked(0, "v:A", asked_ns)
        due = next(t for t in range(asked_ns, asked_ns + 10 * S, S // 10) if awaited.due(t))
        waits.append((due - asked_ns) / S)
        asked_ns = due
    assert waits == [4.0, 5.0, 5.0, 5.0]
    assert awaited.due(asked_ns) == [Unanswered(0, "v:A", 5.0, 5)], "due until acted on"


def test_an_answer_or_the_connection_ending_ends_the_wait_of_that_connection_only() -> None:
    awaited = AwaitedSnapshots(LIMITS)
    for conn_id in (0, 1):
        awaited.asked(conn_id, "v:A", 0)
        awaited.asked(conn_id, "v:B", 0)
    awaited.answered(0, "v:A")
    awaited.answered(0, "v:C")  # never awaited: nothing happens
    awaited.forget_connection(1)
    assert awaited.due(10 * S) == [Unanswered(0, "v:B", 10.0, 1)]
    awaited.answered(0, "v:B")
    assert not awaited and awaited.awaiting(0) == frozenset()


def test_a_postponed_resubscribe_is_due_one_wait_later_without_an_ask_counted() -> None:
    awaited = AwaitedSnapshots(LIMITS)
    awaited.asked(0, "v:A", 0)
    assert awaited.due(2 * S) != []
    awaited.postpone(0, "v:A", 2 * S)
    awaited.postpone(1, "v:A", 2 * S)  # not awaited there: nothing happens
    assert awaited.due(4 * S - 1) == []
    assert awaited.due(4 * S) == [Unanswered(0, "v:A", 2.0, 1)]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ask", "answer", "postpone", "forget", "due"]),
            st.integers(0, 1),
            st.sampled_from(["v:A", "v:B"]),
            st.integers(0, 3 * S),
        ),
        max_size=60,
    )
)
def test_due_reports_exactly_the_entries_whose_wait_passed(
    ops: list[tuple[str, int, str, int]],
) -> None:
    """Against a model: each (connection, key) is due exactly when its last ask or
    postponement is one wait old, the wait being the timeout doubled once per ask after
    the first, capped; answered or forgotten, it is never due."""
    awaited = AwaitedSnapshots(LIMITS)
    model: dict[tuple[int, str], tuple[int, int, int]] = {}  # since, wait, asks
    now_ns = 0
    for op, conn_id, key, step_ns in ops:
        now_ns += step_ns
        entry = (conn_id, key)
        if op == "ask":
            awaited.asked(conn_id, key, now_ns)
            _, wait, asks = model.get(entry, (0, 1 * S, 0))
            wait = 2 * S if not asks else min(5 * S, 2 * wait)
            model[entry] = (now_ns, wait, asks + 1)
        elif op == "answer":
            awaited.answered(conn_id, key)
            model.pop(entry, None)
        elif op == "postpone":
            awaited.postpone(conn_id, key, now_ns)
            if entry in model:
                model[entry] = (now_ns, *model[entry][1:])
        elif op == "forget":
            awaited.forget_connection(conn_id)
            model = {e: v for e, v in model.items() if e[0] != conn_id}
        else:
            expected = {
                Unanswered(c, k, (now_ns - since) / 1e9, asks)
                for (c, k), (since, wait, asks) in model.items()
                if now_ns - since >= wait
            }
            assert set(awaited.due(now_ns)) == expected
            for unanswered in expected:  # the owner postpones what it does not ask
                awaited.postpone(unanswered.conn_id, unanswered.key, now_ns)
                _, wait, asks = model[(unanswered.conn_id, unanswered.key)]
                model[(unanswered.conn_id, unanswered.key)] = (now_ns, wait, asks)
        assert bool(awaited) == bool(model)
        for c in (0, 1):
            assert awaited.awaiting(c) == {k for (cc, k) in model if cc == c}
