"""Requests awaiting their snapshot (gateway.core.awaiting): pure, the clock passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.awaiting import AwaitedSnapshots
from gateway.core.awaiting import AwaitLimits
from gateway.core.awaiting import Unanswered

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
    awaited.asked(0, "v:A")
    awaited.written(0, "v:A", 0)
    assert awaited and awaited.awaiting(0) == {"v:A"}
    assert awaited.due(2 * S - 1) == []
    assert awaited.due(2 * S) == [Unanswered(0, "v:A", 2.0, 1)]
    written_ns, waits = 2 * S, []
    for _ in range(4):  # asked again and written each time it is due: 4 s, then 5 s (the cap)
        awaited.asked(0, "v:A")
        awaited.written(0, "v:A", written_ns)
        due = next(t for t in range(written_ns, written_ns + 10 * S, S // 10) if awaited.due(t))
        waits.append((due - written_ns) / S)
        written_ns = due
    assert waits == [4.0, 5.0, 5.0, 5.0]
    assert awaited.due(written_ns) == [Unanswered(0, "v:A", 5.0, 5)], "due until acted on"


#: A request's wait by what happened to it: (the steps, at 1 s apart from 0 s, then the
#: time it is first due, None: never). "sub": subscribed on connect; "ask": resubscribed;
#: "write": its request written.
WAIT_TABLE = [
    (["sub"], None),
    (["ask"], None),
    (["sub", "write"], 3.0),
    (["ask", "write"], 3.0),
    (["ask", "-", "-", "-", "write"], 6.0),  # queued 4 s: the wait starts at the write
    (["ask", "ask", "write"], 4.0),  # asked again while queued: one request, one wait
    (["sub", "write", "ask", "write"], 7.0),  # asked again once written: twice the wait
    (["sub", "write", "ask"], None),  # asked again, not written yet: not due
    (["sub", "write", "write"], 4.0),  # written again (a subscription sent again)
    (["sub", "ask", "write"], 4.0),  # the subscription not written yet answers the ask
]


@pytest.mark.parametrize(("steps", "due_s"), WAIT_TABLE)
def test_a_request_is_due_one_wait_after_it_was_written_never_before(
    steps: list[str], due_s: float | None
) -> None:
    awaited = AwaitedSnapshots(LIMITS)
    for at_s, what in enumerate(steps):
        if what == "sub":
            awaited.subscribed(0, "v:A")
        elif what == "ask":
            awaited.asked(0, "v:A")
        elif what == "write":
            awaited.written(0, "v:A", at_s * S)
    first = next((t for t in range(0, 20 * S, S // 10) if awaited.due(t)), None)
    assert (None if first is None else first / S) == due_s
    assert awaited.awaiting(0) == {"v:A"}, "awaited, due or not"


def test_a_subscription_counts_no_resubscribe() -> None:
    awaited = AwaitedSnapshots(LIMITS)
    awaited.subscribed(0, "v:A")
    awaited.written(0, "v:A", 0)
    assert awaited.due(2 * S) == [Unanswered(0, "v:A", 2.0, 0)]
    awaited.subscribed(0, "v:A")  # awaited already: nothing changes
    awaited.asked(0, "v:A")
    awaited.written(0, "v:A", 2 * S)
    assert awaited.due(6 * S) == [Unanswered(0, "v:A", 4.0, 1)]


def test_a_write_of_a_key_not_awaited_awaits_nothing() -> None:
    awaited = AwaitedSnapshots(LIMITS)
    awaited.subscribed(0, "v:A")
    awaited.answered(0, "v:A")  # the answer came before the write was told
    awaited.written(0, "v:A", 0)
    awaited.written(1, "v:B", 0)
    assert not awaited and awaited.due(10 * S) == []


def test_an_answer_or_the_connection_ending_ends_the_wait_of_that_connection_only() -> None:
    awaited = AwaitedSnapshots(LIMITS)
    for conn_id in (0, 1):
        for key in ("v:A", "v:B"):
            awaited.asked(conn_id, key)
            awaited.written(conn_id, key, 0)
    awaited.answered(0, "v:A")
    awaited.answered(0, "v:C")  # never awaited: nothing happens
    awaited.forget_connection(1)
    assert awaited.due(10 * S) == [Unanswered(0, "v:B", 10.0, 1)]
    awaited.answered(0, "v:B")
    assert not awaited and awaited.awaiting(0) == frozenset()


def test_a_postponed_resubscribe_is_due_one_wait_later_without_an_ask_counted() -> None:
    awaited = AwaitedSnapshots(LIMITS)
    awaited.asked(0, "v:A")
    awaited.written(0, "v:A", 0)
    assert awaited.due(2 * S) != []
    awaited.postpone(0, "v:A", 2 * S)
    awaited.postpone(1, "v:A", 2 * S)  # not awaited there: nothing happens
    assert awaited.due(4 * S - 1) == []
    assert awaited.due(4 * S) == [Unanswered(0, "v:A", 2.0, 1)]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["subscribe", "ask", "write", "answer", "postpone", "forget", "due"]),
            st.integers(0, 1),
            st.sampled_from(["v:A", "v:B"]),
            st.integers(0, 3 * S),
        ),
        max_size=60,
    )
)
def test_due_reports_exactly_the_entries_whose_wait_passed_since_written(
    ops: list[tuple[str, int, str, int]],
) -> None:
    """Against a model: each (connection, key) is due exactly when its last write or
    postponement is one wait old, and never while its last ask is not written; the wait is
    the timeout doubled once per ask after a write, capped; answered or forgotten, it is
    never due."""
    awaited = AwaitedSnapshots(LIMITS)
    # (written at or None, wait, asks)
    model: dict[tuple[int, str], tuple[int | None, int, int]] = {}
    now_ns = 0
    for op, conn_id, key, step_ns in ops:
        now_ns += step_ns
        entry = (conn_id, key)
        found = model.get(entry)
        if op == "subscribe":
            awaited.subscribed(conn_id, key)
            model.setdefault(entry, (None, 2 * S, 0))
        elif op == "ask":
            awaited.asked(conn_id, key)
            if found is None:
                model[entry] = (None, 2 * S, 1)
            elif found[0] is not None:
                model[entry] = (None, min(5 * S, 2 * found[1]), found[2] + 1)
        elif op == "write":
            awaited.written(conn_id, key, now_ns)
            if found is not None:
                model[entry] = (now_ns, *found[1:])
        elif op == "answer":
            awaited.answered(conn_id, key)
            model.pop(entry, None)
        elif op == "postpone":
            awaited.postpone(conn_id, key, now_ns)
            if found is not None and found[0] is not None:
                model[entry] = (now_ns, *found[1:])
        elif op == "forget":
            awaited.forget_connection(conn_id)
            model = {e: v for e, v in model.items() if e[0] != conn_id}
        else:
            expected = {
                Unanswered(c, k, (now_ns - since) / 1e9, asks)
                for (c, k), (since, wait, asks) in model.items()
                if since is not None and now_ns - since >= wait
            }
            assert set(awaited.due(now_ns)) == expected
            for unanswered in expected:  # the owner postpones what it does not ask
                awaited.postpone(unanswered.conn_id, unanswered.key, now_ns)
                _, wait, asks = model[(unanswered.conn_id, unanswered.key)]
                model[(unanswered.conn_id, unanswered.key)] = (now_ns, wait, asks)
        assert bool(awaited) == bool(model)
        for c in (0, 1):
            assert awaited.awaiting(c) == {k for (cc, k) in model if cc == c}
