"""The slow-subscriber flow policy: its transition table row by row, the classification of
inputs into events, the time-dependent rules on a driven clock, and the owed trade
positions (replayed whole or skipped whole)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.flow import TRANSITIONS
from gateway.core.flow import WRITE
from gateway.core.flow import FlowAction
from gateway.core.flow import FlowError
from gateway.core.flow import FlowEvent
from gateway.core.flow import FlowPolicy
from gateway.core.flow import FlowState
from gateway.core.flow import SubscriberFlow

from .state_tables import specify

LIVE, BEHIND, GONE = FlowState.LIVE, FlowState.BEHIND, FlowState.DISCONNECTED
E = FlowEvent
A = FlowAction
KEY = "binance:BTCUSDT"
POLICY = FlowPolicy(
    max_buffer_bytes=1000,
    low_water_bytes=250,
    max_conflations=2,
    conflation_window_s=60.0,
    max_behind_s=5.0,
)

#: The policy written out: state, event, new state, actions.
FLOW_SPEC = specify(
    "flow",
    TRANSITIONS,
    """
    LIVE          MESSAGE_FITS                 LIVE          WRITE
    LIVE          MESSAGE_OVERFLOWS            BEHIND        DROP CONFLATE
    LIVE          MESSAGE_OVERFLOWS_TOO_OFTEN  DISCONNECTED  DROP CONFLATE DISCONNECT
    LIVE          REPLY_FITS                   LIVE          WRITE
    LIVE          REPLY_UNREAD                 DISCONNECTED  DISCONNECT
    LIVE          RESYNC_ASKED                 LIVE          WRITE
    LIVE          CLOSED                       DISCONNECTED  -
    BEHIND        MESSAGE_FITS                 BEHIND        DROP
    BEHIND        MESSAGE_OVERFLOWS            BEHIND        DROP
    BEHIND        REPLY_FITS                   BEHIND        WRITE
    BEHIND        REPLY_UNREAD                 DISCONNECTED  DISCONNECT
    BEHIND        RESYNC_ASKED                 BEHIND        OWE
    BEHIND        DRAINED                      LIVE          RESEND_OWED
    BEHIND        STILL_BEHIND                 BEHIND        -
    BEHIND        BEHIND_TOO_LONG              DISCONNECTED  DISCONNECT
    BEHIND        CLOSED                       DISCONNECTED  -
    LIVE          TRADES_HELD                  LIVE          REPLAY_TRADES
    LIVE          TRADES_LOST                  LIVE          SKIP_TRADES
    BEHIND        TRADES_HELD                  BEHIND        OWE
    BEHIND        TRADES_LOST                  BEHIND        OWE
    DISCONNECTED  MESSAGE_FITS                 DISCONNECTED  DROP
    DISCONNECTED  MESSAGE_OVERFLOWS            DISCONNECTED  DROP
    DISCONNECTED  REPLY_FITS                   DISCONNECTED  -
    DISCONNECTED  REPLY_UNREAD                 DISCONNECTED  -
    DISCONNECTED  RESYNC_ASKED                 DISCONNECTED  -
    DISCONNECTED  CLOSED                       DISCONNECTED  -
    DISCONNECTED  TRADES_HELD                  DISCONNECTED  -
    DISCONNECTED  TRADES_LOST                  DISCONNECTED  -
    """,
)
UNDEFINED = FLOW_SPEC.undefined()


def flow_in(state: FlowState, policy: FlowPolicy = POLICY) -> SubscriberFlow:
    flow = SubscriberFlow(policy)
    flow.state = state
    return flow


def test_a_write_is_one_shared_tuple() -> None:
    assert WRITE is TRANSITIONS[LIVE, E.MESSAGE_FITS][1]


@pytest.mark.parametrize(("state", "event"), list(FLOW_SPEC.expected), ids=lambda x: x.name)
def test_every_row(state: FlowState, event: FlowEvent) -> None:
    flow = flow_in(state)
    new_state, actions = FLOW_SPEC.expected[state, event]
    assert flow.handle(event, KEY, 10.0) == actions
    assert flow.state is new_state
    # The bookkeeping actions are done by the flow itself.
    assert flow.dropped == (1 if A.DROP in actions else 0)
    assert flow.owed == ({KEY} if A.DROP in actions or A.OWE in actions else set())
    assert flow.conflations == (1 if A.CONFLATE in actions else 0)
    if A.CONFLATE in actions:
        assert flow.behind_since_s == 10.0
    assert (flow.close_reason != "") == (A.DISCONNECT in actions)


@pytest.mark.parametrize(("state", "event"), UNDEFINED, ids=lambda x: x.name)
def test_undefined_pairs_are_errors(state: FlowState, event: FlowEvent) -> None:
    flow = flow_in(state)
    with pytest.raises(FlowError, match=event.name):
        flow.handle(event, KEY, 0.0)
    assert flow.state is state


# --- classification: inputs to events ---------------------------------------------------------


#: Input, state, buffered bytes (limit 1000; replies may use twice that), event.
CLASSIFIED = [
    (kind, FlowState[state], int(buffered), FlowEvent[event])
    for kind, state, buffered, event in map(
        str.split,
        """
        message  LIVE          0     MESSAGE_FITS
        message  LIVE          1000  MESSAGE_FITS
        message  LIVE          1001  MESSAGE_OVERFLOWS
        message  BEHIND        0     MESSAGE_FITS
        message  BEHIND        1001  MESSAGE_OVERFLOWS
        message  DISCONNECTED  0     MESSAGE_FITS
        message  DISCONNECTED  1001  MESSAGE_OVERFLOWS
        reply    LIVE          2000  REPLY_FITS
        reply    LIVE          2001  REPLY_UNREAD
        reply    BEHIND        2000  REPLY_FITS
        reply    BEHIND        2001  REPLY_UNREAD
        reply    DISCONNECTED  0     REPLY_FITS
        """.strip().splitlines(),
    )
]


@pytest.mark.parametrize(("kind", "state", "buffered", "expected"), CLASSIFIED)
def test_messages_and_replies_are_classified_by_the_buffer(
    kind: str, state: FlowState, buffered: int, expected: FlowEvent
) -> None:
    flow = flow_in(state)
    message = kind == "message"
    actions = flow.on_message(KEY, buffered, 0.0) if message else flow.on_reply(buffered)
    assert (actions, flow.state) == (
        FLOW_SPEC.expected[state, expected][1],
        FLOW_SPEC.expected[state, expected][0],
    )
    if expected is E.REPLY_UNREAD:
        assert flow.close_reason == "subscriber too slow: it does not read its replies"


def test_a_live_message_under_the_limit_returns_the_write_tuple_itself() -> None:
    flow = SubscriberFlow(POLICY)
    assert flow.on_message(KEY, 1000, 0.0) is WRITE
    assert flow.dropped == 0 and flow.owed == set()


# --- time: a driven clock ---------------------------------------------------------------------


def test_behind_then_drained_is_conflated_with_the_owed_keys() -> None:
    flow = SubscriberFlow(POLICY)
    assert flow.on_message("a", 1001, 100.0) == (A.DROP, A.CONFLATE)
    assert flow.state is BEHIND and flow.behind_since_s == 100.0
    assert flow.on_message("b", 0, 100.1) == (A.DROP,), "behind: dropped even if it fits"
    assert flow.on_resync("c") == (A.OWE,)
    flow.forget("b")
    assert flow.on_check(251, 101.0) == (), "above low water"
    assert flow.on_check(250, 101.0) == (A.RESEND_OWED,)
    assert flow.state is LIVE
    assert flow.take_owed() == {"a", "c"} and flow.owed == set()
    assert flow.dropped == 2 and flow.conflations == 1
    assert flow.on_message("a", 0, 101.0) is WRITE


def test_behind_longer_than_max_behind_s_disconnects() -> None:
    flow = SubscriberFlow(POLICY)
    flow.on_message(KEY, 5000, 10.0)
    assert flow.on_check(5000, 15.0) == (), "exactly max_behind_s: still allowed"
    assert flow.on_check(5000, 15.001) == (A.DISCONNECT,)
    assert flow.state is GONE
    assert flow.close_reason == (
        "subscriber too slow: send buffer above 1000 bytes for more than 5 s"
    )


def test_falling_behind_too_often_within_the_window_disconnects() -> None:
    flow = SubscriberFlow(POLICY)  # at most 2 conflations within 60 s
    for now_s in (0.0, 30.0):
        assert flow.on_message(KEY, 5000, now_s) == (A.DROP, A.CONFLATE)
        assert flow.on_check(0, now_s + 1) == (A.RESEND_OWED,)
    assert flow.on_message(KEY, 5000, 59.0) == (A.DROP, A.CONFLATE, A.DISCONNECT)
    assert flow.state is GONE and flow.conflations == 3
    assert flow.close_reason == "subscriber too slow: fell behind 3 times within 60 s (limit 2)"


def test_conflations_older_than_the_window_are_forgotten() -> None:
    flow = SubscriberFlow(POLICY)
    for now_s in (0.0, 30.0, 60.5, 91.0):  # never three within 60 s
        assert flow.on_message(KEY, 5000, now_s) == (A.DROP, A.CONFLATE)
        assert flow.on_check(0, now_s) == (A.RESEND_OWED,)
    assert flow.state is LIVE and flow.conflations == 4


def test_zero_conflations_allowed_disconnects_at_the_first() -> None:
    flow = SubscriberFlow(FlowPolicy(max_buffer_bytes=10, low_water_bytes=0, max_conflations=0))
    assert A.DISCONNECT in flow.on_message(KEY, 11, 0.0)
    assert "fell behind 1 times within 60 s (limit 0)" in flow.close_reason


def test_disconnected_is_final() -> None:
    flow = flow_in(GONE)
    assert flow.on_message(KEY, 0, 0.0) == (A.DROP,)
    assert flow.on_reply(0) == () and flow.on_resync(KEY) == ()
    assert flow.state is GONE


@pytest.mark.parametrize("state", [LIVE, BEHIND])
def test_closed_by_the_shell_writes_nothing_more(state: FlowState) -> None:
    flow = flow_in(state)
    assert flow.on_closed() == ()
    assert flow.state is GONE and flow.close_reason == ""
    assert flow.on_message(KEY, 0, 0.0) == (A.DROP,)
    assert flow.on_reply(0) == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_buffer_bytes": 0},
        {"max_conflations": -1},
        {"max_buffer_bytes": 10, "low_water_bytes": 11},
        {"low_water_bytes": -1},
    ],
)
def test_bad_policies(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FlowPolicy(**kwargs)


# --- invariants ---------------------------------------------------------------------------------

_inputs = st.lists(
    st.tuples(
        st.sampled_from(["message", "reply", "check", "resync"]),
        st.integers(0, 3000),
        st.floats(0.0, 20.0),
    ),
    max_size=80,
)


@given(_inputs)
def test_policy_invariants(inputs: list[tuple[str, int, float]]) -> None:
    flow = SubscriberFlow(POLICY)
    now_s = 0.0
    conflated_at: list[float] = []
    for kind, buffered, dt_s in inputs:
        now_s += dt_s
        before = flow.state
        if kind == "check":
            if before is not BEHIND:
                continue  # the shell checks behind subscribers only
            actions = flow.on_check(buffered, now_s)
        elif kind == "message":
            actions = flow.on_message(KEY, buffered, now_s)
            fits = before is LIVE and buffered <= POLICY.max_buffer_bytes
            assert (actions is WRITE) == fits
        elif kind == "reply":
            actions = flow.on_reply(buffered)
        else:
            actions = flow.on_resync(KEY)
        if A.RESEND_OWED in actions:
            flow.take_owed()
        if A.CONFLATE in actions:
            conflated_at.append(now_s)
        if before is GONE:
            assert flow.state is GONE and A.WRITE not in actions
        if flow.state is not GONE:
            recent = [t for t in conflated_at if now_s - t <= POLICY.conflation_window_s]
            assert len(recent) <= POLICY.max_conflations
        if flow.state is BEHIND:
            assert now_s - flow.behind_since_s >= 0
        assert (A.DISCONNECT in actions) == (before is not GONE and flow.state is GONE)


# --- owed trade positions -------------------------------------------------------------------------


def test_a_dropped_trade_owes_the_position_before_it_and_the_first_drop_wins() -> None:
    flow = SubscriberFlow(POLICY)
    assert flow.on_message(KEY, 0, 0.0, trade_seq=7) is WRITE
    assert flow.owed_trades == {}, "a written trade owes nothing"
    assert flow.on_message(KEY, 1001, 0.0, trade_seq=8) == (A.DROP, A.CONFLATE)
    flow.on_message(KEY, 0, 0.0, trade_seq=9)
    flow.on_message("b", 0, 0.0)  # not a trade: owed, no trade position
    assert flow.owed == {KEY, "b"} and flow.owed_trades == {KEY: 7}


def test_missed_trades_held_are_replayed_and_the_position_is_no_longer_owed() -> None:
    flow = SubscriberFlow(POLICY)
    flow.on_message(KEY, 1001, 0.0, trade_seq=8)
    assert flow.on_check(0, 1.0) == (A.RESEND_OWED,)
    assert flow.take_owed() == {KEY} and flow.owed_trades == {KEY: 7}
    assert flow.on_missed_trades(KEY, held=True, last_seq=20) == (A.REPLAY_TRADES,)
    assert flow.owed_trades == {} and flow.skipped_trades == {}
    # The replay falls behind at trade 12: the position reached is owed.
    assert flow.on_message(KEY, 1001, 1.0, trade_seq=12) == (A.DROP, A.CONFLATE)
    assert flow.owed_trades == {KEY: 11}


def test_missed_trades_lost_are_skipped_and_the_subscriber_stays_at_its_position() -> None:
    """No trade after the skip was written when the next one is dropped: the subscriber
    still stands where it was, so a later replay could only be a partial one."""
    flow = SubscriberFlow(POLICY)
    flow.on_message(KEY, 1001, 0.0, trade_seq=8)
    flow.on_check(0, 1.0)
    flow.take_owed()
    assert flow.on_missed_trades(KEY, held=False, last_seq=20) == (A.SKIP_TRADES,)
    assert flow.owed_trades == {} and flow.skipped_trades == {KEY: (7, 20)}
    flow.on_message(KEY, 1001, 2.0, trade_seq=21)
    assert flow.owed_trades == {KEY: 7} and flow.skipped_trades == {}


def test_a_trade_written_after_a_skip_moves_the_position_on() -> None:
    flow = SubscriberFlow(POLICY)
    flow.on_message(KEY, 1001, 0.0, trade_seq=8)
    flow.on_check(0, 1.0)
    flow.take_owed()
    flow.on_missed_trades(KEY, held=False, last_seq=20)
    assert flow.on_message(KEY, 0, 2.0, trade_seq=21) is WRITE
    flow.on_message(KEY, 1001, 2.0, trade_seq=22)
    assert flow.owed_trades == {KEY: 21}


def test_behind_again_before_the_decision_keeps_the_position_owed() -> None:
    flow = SubscriberFlow(POLICY)
    flow.on_message(KEY, 1001, 0.0, trade_seq=8)
    flow.on_check(0, 1.0)
    flow.take_owed()
    flow.on_message("b", 1001, 1.0)  # the resend of another key overflowed
    for held in (True, False):
        assert flow.on_missed_trades(KEY, held=held, last_seq=20) == (A.OWE,)
        assert flow.owed == {KEY, "b"} and flow.owed_trades == {KEY: 7}


def test_forgetting_a_key_forgets_its_trade_positions() -> None:
    flow = SubscriberFlow(POLICY)
    flow.on_message(KEY, 1001, 0.0, trade_seq=8)
    flow.on_message("b", 0, 0.0, trade_seq=3)
    flow.skipped_trades["c"] = (1, 5)
    for key in (KEY, "c"):
        flow.forget(key)
    assert flow.owed_trades == {"b": 2} and flow.skipped_trades == {}


def _stream_one_subscriber(
    steps: list[tuple[str, int]], evictions: list[int]
) -> tuple[list[tuple[int, bool]], int]:
    """A trade stream served to one subscriber as the fan-out serves it: each trade is
    offered (``trade``), or a check runs (``check``); a drained check resends the owed
    trades from a ring that holds every seq above its floor (which moves up by the step's
    evictions, never past the last trade), while it holds them,
    each replayed trade adding 100 bytes to the buffer (so that a replay may fall behind).
    Returns what the subscriber got, ``(seq, replayed)`` in order, and the last seq."""
    flow = SubscriberFlow(
        FlowPolicy(max_buffer_bytes=1000, low_water_bytes=250, max_conflations=10**6)
    )
    got: list[tuple[int, bool]] = []
    last_seq = 0
    floor = 0
    for (kind, buffered), evicted in zip(steps, evictions, strict=True):
        floor = min(floor + evicted, last_seq)
        if kind == "trade":
            last_seq += 1
            if flow.on_message(KEY, buffered, 0.0, trade_seq=last_seq) is WRITE:
                got.append((last_seq, False))
        elif flow.state is BEHIND and A.RESEND_OWED in flow.on_check(buffered % 500, 0.0):
            flow.take_owed()
            position = flow.owed_trades.get(KEY)
            if position is None:
                continue
            actions = flow.on_missed_trades(KEY, position >= floor, last_seq)
            if A.REPLAY_TRADES in actions:
                for seq in range(position + 1, last_seq + 1):
                    replayed_bytes = buffered % 500 + 100 * (seq - position)
                    if flow.on_message(KEY, replayed_bytes, 0.0, trade_seq=seq) is not WRITE:
                        break
                    got.append((seq, True))
    return got, last_seq


@given(
    st.lists(
        st.tuples(st.sampled_from(["trade", "trade", "check"]), st.integers(0, 1500)), max_size=120
    ),
    st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=120, max_size=120),
)
def test_trades_are_each_sent_once_in_order_and_a_replay_never_follows_a_skip(
    steps: list[tuple[str, int]], evictions: list[int]
) -> None:
    got, _ = _stream_one_subscriber(steps, evictions[: len(steps)])
    seqs = [seq for seq, _ in got]
    assert seqs == sorted(set(seqs)), "in order, each once"
    previous = 0
    for seq, replayed in got:
        if replayed:
            assert seq == previous + 1, "a replay continues the subscriber's stream: no partial"
        previous = seq


@given(
    st.lists(
        st.tuples(st.sampled_from(["trade", "trade", "check"]), st.integers(0, 1500)), max_size=120
    )
)
def test_with_every_trade_held_a_subscriber_that_catches_up_misses_none(
    steps: list[tuple[str, int]],
) -> None:
    steps = [*steps, *[("check", 0)] * 20]  # it catches up at the end, 8 trades a check
    got, last_seq = _stream_one_subscriber(steps, [0] * len(steps))
    assert [seq for seq, _ in got] == list(range(1, last_seq + 1))
