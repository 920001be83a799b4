"""The REST weight budget on a driven clock: spending within a window, refill, waits,
429 Retry-After and 418 bans, and that the budget is never exceeded; the same of the
connection-attempt budget's sliding window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.budget import DEFAULT_RETRY_AFTER_S
from gateway.core.budget import RATE_LIMIT_STATUSES
from gateway.core.budget import AttemptBudget
from gateway.core.budget import SharedBudgets
from gateway.core.budget import WeightBudget
from gateway.core.budget import retry_after_s


def test_a_fifth_of_the_venue_limit_is_left_to_others() -> None:
    assert WeightBudget(6000).budget == 4800
    assert WeightBudget(1200).budget == 960
    assert WeightBudget(7).budget == 5
    assert WeightBudget(100, share=1.0).budget == 100


def test_weight_is_spent_within_a_window_then_waits_for_the_refill() -> None:
    budget = WeightBudget(100, share=1.0)  # 100 per 60 s
    now_s = 1000.0
    for _ in range(4):
        assert budget.wait_s(25, now_s) == 0.0
        budget.spend(25, now_s)
        now_s += 1.0
    assert budget.used == 100
    # Full: the next request waits until the first (sent at 1000 s) left the window.
    assert budget.wait_s(25, now_s) == pytest.approx(56.0)
    assert budget.wait_s(1, 1059.5) == pytest.approx(0.5)
    # The window slides: each request frees its weight a window after it was sent.
    assert budget.wait_s(25, 1060.0) == 0.0
    assert budget.used == 75
    budget.spend(25, 1060.0)
    assert budget.wait_s(50, 1060.0) == pytest.approx(2.0)  # 1001 and 1002 must leave
    assert budget.wait_s(1, 1120.0) == 0.0 and budget.used == 0


def test_a_request_that_fits_exactly_is_sent() -> None:
    budget = WeightBudget(100, share=1.0)
    budget.spend(60, 0.0)
    assert budget.wait_s(40, 1.0) == 0.0
    assert budget.wait_s(41, 1.0) == pytest.approx(59.0)


def test_a_request_heavier_than_the_budget_goes_alone_in_a_fresh_window() -> None:
    budget = WeightBudget(10, share=1.0)
    assert budget.wait_s(50, 0.0) == 0.0
    budget.spend(50, 0.0)
    assert budget.wait_s(50, 30.0) == pytest.approx(30.0)
    assert budget.wait_s(50, 60.0) == 0.0


def test_the_venue_reported_weight_replaces_ours() -> None:
    budget = WeightBudget(100, share=1.0)
    budget.spend(10, 0.0)
    budget.observe_used(95, 0.5)  # others on the IP spent too: counted from the report
    assert budget.used == 95
    assert budget.wait_s(10, 1.0) == pytest.approx(59.5)
    budget.observe_used(0, 2.0)
    assert budget.wait_s(10, 2.0) == 0.0


@pytest.mark.parametrize("status", sorted(RATE_LIMIT_STATUSES))
def test_rate_limit_retry_after_is_obeyed(status: int) -> None:
    assert status in (418, 429)
    budget = WeightBudget(6000)
    budget.spend(1, 0.0)
    budget.rate_limited(retry_after_s("30"), 5.0)
    assert budget.wait_s(1, 5.0) == pytest.approx(30.0)
    assert budget.wait_s(1, 34.0) == pytest.approx(1.0)
    assert budget.wait_s(1, 35.0) == 0.0


def test_a_418_ban_is_honoured_over_a_shorter_429() -> None:
    budget = WeightBudget(6000)
    budget.rate_limited(retry_after_s("7200"), 0.0)  # 418: banned for two hours
    budget.rate_limited(retry_after_s("1"), 10.0)  # a later 429 does not shorten it
    assert budget.wait_s(1, 10.0) == pytest.approx(7190.0)
    assert budget.wait_s(1, 7200.0) == 0.0


def test_the_longer_of_ban_and_window_is_waited() -> None:
    budget = WeightBudget(10, share=1.0)
    budget.spend(10, 0.0)
    budget.rate_limited(5.0, 0.0)
    assert budget.wait_s(1, 1.0) == pytest.approx(59.0)
    budget.rate_limited(100.0, 1.0)
    assert budget.wait_s(1, 1.0) == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        ("12", 12.0),
        (" 3 ", 3.0),
        ("", DEFAULT_RETRY_AFTER_S),
        ("1.5", DEFAULT_RETRY_AFTER_S),
        ("Wed, 21 Oct 2026 07:28:00 GMT", DEFAULT_RETRY_AFTER_S),
        ("-5", DEFAULT_RETRY_AFTER_S),
    ],
)
def test_retry_after_header(header: str, expected: float) -> None:
    assert retry_after_s(header) == expected


@pytest.mark.parametrize(
    "kwargs", [{"weight_per_window": 0}, {"window_s": 0.0}, {"share": 0.0}, {"share": 1.5}]
)
def test_bad_budgets(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"weight_per_window": 100, **kwargs}
    with pytest.raises(ValueError):
        WeightBudget(int(args.pop("weight_per_window")), **args)


@given(
    limit=st.integers(1, 500),
    requests=st.lists(
        st.tuples(st.integers(1, 120), st.floats(0.0, 90.0), st.floats(0.0, 5.0)),
        max_size=60,
    ),
)
def test_the_budget_is_never_exceeded_within_a_window(
    limit: int, requests: list[tuple[int, float, float]]
) -> None:
    """Requests at arbitrary times, each sent once the budget admits it (sleeping what
    ``wait_s`` says, asking again), some rate limited: within every sliding window the
    weight sent is at most the budget, or a single request that alone is heavier."""
    budget = WeightBudget(limit, window_s=60.0)
    now_s = 0.0
    sent: list[tuple[float, int]] = []
    for weight, gap_s, ban_s in requests:
        now_s += gap_s
        waits = 0
        while (wait_s := budget.wait_s(weight, now_s)) > 0:
            assert wait_s <= max(60.0, budget.blocked_until_s - now_s) + 1e-9
            now_s += wait_s
            waits += 1
            assert waits <= 3, "a wait is followed by a request"
        assert now_s >= budget.blocked_until_s
        budget.spend(weight, now_s)
        sent.append((now_s, weight))
        if ban_s > 4.0:
            budget.rate_limited(ban_s, now_s)
    # Every window that starts at a request holds at most the budget (the heaviest
    # windows start at a request).
    for i, (start_s, _) in enumerate(sent):
        window = [w for at_s, w in sent[i:] if at_s < start_s + 60.0]
        assert sum(window) <= budget.budget or len(window) == 1


# --- AttemptBudget: connection attempts per sliding window ------------------------------------


def test_attempt_budgets_keep_a_fifth_of_the_venue_limit() -> None:
    assert AttemptBudget(300, 300.0).budget == 240
    assert AttemptBudget(3, 1.0).budget == 2
    assert AttemptBudget(1, 1.0).budget == 1
    with pytest.raises(ValueError):
        AttemptBudget(0, 1.0)
    with pytest.raises(ValueError):
        AttemptBudget(5, 0.0)


def test_attempts_wait_when_the_window_is_spent_until_the_oldest_leaves_it() -> None:
    budget = AttemptBudget(3, 10.0, share=1.0)
    for now_s in (100.0, 101.0, 102.0):
        assert budget.wait_s(now_s) == 0.0
        budget.spend(now_s)
    assert budget.wait_s(103.0) == pytest.approx(7.0)
    assert budget.wait_s(110.0) == 0.0  # the attempt at 100 s left the window
    budget.spend(110.0)
    assert budget.wait_s(110.5) == pytest.approx(0.5)  # the one at 101 s has not
    assert budget.attempts == 4


def test_a_venues_connections_share_one_budget() -> None:
    """Binance: 240 of its 300 attempts per 5 minutes; however many connections flap, the
    241st attempt waits for the first to leave the window."""
    budget = AttemptBudget(300, 300.0)
    now_s = 0.0
    for attempt in range(240):
        assert budget.wait_s(now_s) == 0.0, attempt
        budget.spend(now_s)
        now_s += 0.02  # 21 connections, each retrying at once
    assert budget.wait_s(now_s) == pytest.approx(300.0 - now_s)


@given(
    st.integers(1, 12),
    st.floats(0.5, 600.0),
    st.lists(st.floats(0.0, 50.0), min_size=1, max_size=200),
)
def test_no_window_ever_holds_more_attempts_than_the_budget(
    limit: int, window_s: float, gaps_s: list[float]
) -> None:
    budget = AttemptBudget(limit, window_s, share=1.0)
    now_s = 1000.0
    times: list[float] = []
    for gap_s in gaps_s:
        now_s += gap_s
        while (wait_s := budget.wait_s(now_s)) > 0:
            now_s += wait_s
        budget.spend(now_s)
        times.append(now_s)
    for i, t in enumerate(times):
        # An attempt at u is in the window until u + window_s.
        in_window = [u for u in times[: i + 1] if u + window_s > t]
        assert len(in_window) <= budget.budget


def test_shared_budgets_are_one_per_group_and_source_address() -> None:
    budgets = SharedBudgets(share=1.0)
    spot = budgets.attempts(("bybit", None), 500, 300.0)
    # Another venue of the same group and source address: the same budget, its limits kept.
    assert budgets.attempts(("bybit", None), 250, 300.0) is spot
    assert spot.budget == 500
    assert budgets.attempts(("bybit", "10.0.0.2"), 500, 300.0) is not spot
    weight = budgets.weight(("binance", None), 6000, 60.0)
    assert budgets.weight(("binance", None), 100, 1.0) is weight
    assert weight.budget == 6000 and weight.window_s == 60.0
    # Spending through one holder is seen by every other.
    for _ in range(500):
        spot.spend(0.0)
    assert budgets.attempts(("bybit", None), 500, 300.0).wait_s(1.0) == pytest.approx(299.0)


def test_an_attempt_counts_from_the_end_of_its_handshake() -> None:
    budget = AttemptBudget(2, 10.0, share=1.0)
    budget.spend(0.0)
    budget.spend(1.0)
    # The first handshake took 3 s: the venue may have counted it as late as 3 s.
    budget.settle(0.0, 3.0)
    assert budget.wait_s(10.5) == pytest.approx(0.5)  # the second attempt leaves first
    budget.spend(11.0)
    assert budget.wait_s(12.0) == pytest.approx(1.0)  # the first counts until 13 s, not 10 s
    # An attempt no longer remembered is left alone.
    budget.settle(1.0, 20.0)
    assert budget.wait_s(12.0) == pytest.approx(1.0)


def test_a_refused_handshake_blocks_every_attempt_until_its_retry_after() -> None:
    budget = AttemptBudget(100, 10.0)
    budget.rate_limited(30.0, 5.0)
    assert budget.wait_s(5.0) == pytest.approx(30.0)
    assert budget.wait_s(35.0) == 0.0


# --- AttemptBudget: groups of attempts at once ---------------------------------------------


@pytest.mark.parametrize(
    ("spent_s", "attempts", "now_s", "wait_s"),
    [
        ((), 3, 0.0, 0.0),  # an empty window holds the whole budget
        ((0.0,), 2, 5.0, 0.0),  # two free slots, two asked
        ((0.0, 1.0), 1, 5.0, 0.0),
        ((0.0, 1.0), 2, 5.0, 5.0),  # one slot free: until the attempt at 0 s leaves
        ((0.0, 1.0), 3, 5.0, 6.0),  # none is enough until both left
        ((0.0, 1.0, 2.0), 1, 5.0, 5.0),
        ((0.0, 1.0, 2.0), 2, 5.0, 6.0),
        ((0.0, 1.0, 2.0), 3, 5.0, 7.0),
        ((0.0, 1.0, 2.0), 2, 10.5, 0.5),  # the one at 0 s left; the one at 1 s leaves at 11
        ((0.0, 1.0, 2.0), 3, 12.0, 0.0),  # all three left
        ((0.0, 1.0, 2.0), 0, 5.0, 0.0),  # nothing asked, nothing to wait for
    ],
)
def test_a_group_waits_until_all_of_it_fits_in_the_window(
    spent_s: tuple[float, ...], attempts: int, now_s: float, wait_s: float
) -> None:
    budget = AttemptBudget(3, 10.0, share=1.0)
    for at_s in spent_s:
        budget.spend(at_s)
    assert budget.wait_s(now_s, attempts=attempts) == pytest.approx(wait_s)


def test_a_group_spent_at_once_is_remembered_whole() -> None:
    """Spending a group pushes out of the remembered attempts only those out of the
    window: the next ask still sees every attempt within it."""
    budget = AttemptBudget(4, 10.0, share=1.0)
    budget.spend(0.0, attempts=2)
    budget.spend(1.0, attempts=2)
    assert budget.attempts == 4 and budget.wait_s(5.0) == pytest.approx(5.0)
    assert budget.wait_s(10.0, attempts=3) == pytest.approx(1.0)
    budget.spend(10.0, attempts=2)  # the two at 0 s left the window
    assert budget.wait_s(10.0) == pytest.approx(1.0), "the two at 1 s are remembered"
    assert budget.wait_s(11.0, attempts=2) == 0.0
    assert budget.wait_s(11.0, attempts=3) == pytest.approx(9.0)


def test_a_group_is_blocked_by_a_refused_handshake_too() -> None:
    budget = AttemptBudget(10, 10.0, share=1.0)
    budget.rate_limited(30.0, 0.0)
    assert budget.wait_s(1.0, attempts=2) == pytest.approx(29.0)


@pytest.mark.parametrize("attempts", [-1, 4, 100])
def test_a_group_larger_than_the_whole_budget_never_fits_and_is_refused(attempts: int) -> None:
    budget = AttemptBudget(3, 10.0, share=1.0)
    with pytest.raises(ValueError, match="never fit a budget of 3 per 10 s"):
        budget.wait_s(0.0, attempts=attempts)


@given(
    st.integers(1, 12),
    st.floats(0.5, 600.0),
    st.lists(st.tuples(st.floats(0.0, 50.0), st.integers(0, 12)), min_size=1, max_size=200),
)
def test_no_window_ever_holds_more_attempts_than_the_budget_groups_included(
    limit: int, window_s: float, steps: list[tuple[float, int]]
) -> None:
    """Groups of any size up to the budget, each spent once ``wait_s`` for the group
    admits it (sleeping what it says, asking again): no window holds more than the budget."""
    budget = AttemptBudget(limit, window_s, share=1.0)
    now_s = 1000.0
    times: list[float] = []
    for gap_s, group in steps:
        group = min(group, budget.budget)
        now_s += gap_s
        waits = 0
        while (wait_s := budget.wait_s(now_s, attempts=group)) > 0:
            now_s += wait_s
            waits += 1
            assert waits <= 2, "a wait (rounded at most once) admits the group"
        budget.spend(now_s, attempts=group)
        times.extend([now_s] * group)
    assert budget.attempts == len(times)
    for t in set(times):
        # An attempt at u is in the window until u + window_s.
        in_window = [u for u in times if u <= t < u + window_s]
        assert len(in_window) <= budget.budget
