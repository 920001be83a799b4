"""Endpoint scoring, the replacement of a worst connection, and standby endpoints. Pure:
time is ``now_s``; no I/O.

- :func:`score`: one connection's score in [0, 1] (higher is better) from what it did in the
  last evaluation interval (:class:`Window`), the formula in docs/architecture.md
  (Endpoint scoring).
- :class:`Scorer`: per connection, turns the cumulative counters the gateway keeps
  (:class:`Totals`) into windows and smooths the scores (EWMA).
- :class:`ReplacementPolicy`: a connection that stays worst by ``margin`` for
  ``replace_after_s`` is replaced (make-before-break, :mod:`gateway.core.renewal`), with
  hysteresis (it stops being suspect only below ``margin * EXIT_SHARE``) and a cooldown.
- :func:`rotated_endpoint`: the endpoint a replaced connection moves to (rotation).
- :class:`StandbyPolicy`: standby endpoints connected only while every primary is silent
  for ``standby_after_s``, released once a primary was receiving for ``release_after_s``.

Both policies are explicit state machines (:data:`REPLACE_TRANSITIONS`,
:data:`STANDBY_TRANSITIONS`).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.core.transitions import Table
from gateway.core.transitions import transition

#: Weights of the score's terms (they sum to 1).
W_ARRIVAL: Final = 0.4
W_LATENCY: Final = 0.3
W_STABILITY: Final = 0.15
W_RELIABILITY: Final = 0.15
#: Event-to-receive latency (s) and arrival lag behind the first copy (s) at which their
#: terms are one half.
LATENCY_SCALE_S: Final = 0.05
LAG_SCALE_S: Final = 0.01
#: Uptime (s) after which a connection counts as fully settled.
SETTLED_S: Final = 60.0
#: Faults (bad frames, gaps, checksum failures) per 1000 frames at which reliability is 1/2.
FAULTS_PER_1000_SCALE: Final = 1.0
#: Smoothing of the score across evaluations.
SCORE_ALPHA: Final = 0.3
#: A suspect stops being suspect once its distance to the next worst falls below this
#: share of the margin (hysteresis).
EXIT_SHARE: Final = 0.5


@dataclass(frozen=True)
class Window:
    """What one connection did in one evaluation interval (differences of counters)."""

    up: bool
    uptime_s: float
    #: Book updates first to arrive, and copies another connection brought first.
    first_wins: int = 0
    duplicates: int = 0
    #: Mean venue-event-to-receive latency in the interval; None: no update carried one.
    latency_s: float | None = None
    #: Unsequenced venues: mean lag behind the first connection to reach each book state
    #: (the replicas' ``lag_ewma_ns``); None on sequenced venues (``first_wins`` count).
    lag_s: float | None = None
    frames: int = 0
    bad_frames: int = 0
    #: Gaps seen and checksum failures: the connection's replicas found wrong, its
    #: connection-wide sequence jumps.
    faults: int = 0
    reconnects: int = 0


def score(window: Window) -> float:
    """The connection's score in [0, 1]; 0 while it is down.

    ``W_ARRIVAL * arrival + W_LATENCY * latency + W_STABILITY * stability +
    W_RELIABILITY * reliability`` where

    - arrival: on sequenced venues the first-arrival win rate ``first_wins / (first_wins +
      duplicates)`` (0.5 without updates); on unsequenced ones ``LAG_SCALE_S / (LAG_SCALE_S
      + lag_s)``;
    - latency: ``LATENCY_SCALE_S / (LATENCY_SCALE_S + max(0, latency_s))`` (1 without a
      measurement: it then ranks no connection above another);
    - stability: ``min(1, uptime_s / SETTLED_S) / (1 + reconnects)``;
    - reliability: ``1 / (1 + faults_per_1000 / FAULTS_PER_1000_SCALE)`` with
      ``faults_per_1000 = 1000 * (bad_frames + faults) / max(frames, 1)``.
    """
    if not window.up:
        return 0.0
    if window.lag_s is not None:
        arrival = LAG_SCALE_S / (LAG_SCALE_S + max(0.0, window.lag_s))
    else:
        races = window.first_wins + window.duplicates
        arrival = window.first_wins / races if races else 0.5
    latency = (
        1.0
        if window.latency_s is None
        else LATENCY_SCALE_S / (LATENCY_SCALE_S + max(0.0, window.latency_s))
    )
    stability = min(1.0, max(0.0, window.uptime_s) / SETTLED_S) / (1 + window.reconnects)
    faults_per_1000 = 1000.0 * (window.bad_frames + window.faults) / max(window.frames, 1)
    reliability = 1.0 / (1.0 + faults_per_1000 / FAULTS_PER_1000_SCALE)
    return (
        W_ARRIVAL * arrival
        + W_LATENCY * latency
        + W_STABILITY * stability
        + W_RELIABILITY * reliability
    )


@dataclass(frozen=True)
class Totals:
    """One connection's cumulative counters at one evaluation."""

    up: bool
    uptime_s: float
    first_wins: int = 0
    duplicates: int = 0
    #: Sum and count of the event-to-receive latencies observed so far.
    latency_sum_s: float = 0.0
    latency_count: int = 0
    lag_s: float | None = None
    frames: int = 0
    bad_frames: int = 0
    faults: int = 0
    reconnects: int = 0


def window(before: Totals | None, now: Totals) -> Window:
    """The interval from ``before`` (None: since the start) to ``now``."""
    b = before if before is not None else Totals(up=False, uptime_s=0.0)
    count = now.latency_count - b.latency_count
    return Window(
        up=now.up,
        uptime_s=now.uptime_s,
        first_wins=now.first_wins - b.first_wins,
        duplicates=now.duplicates - b.duplicates,
        latency_s=(now.latency_sum_s - b.latency_sum_s) / count if count > 0 else None,
        lag_s=now.lag_s,
        frames=now.frames - b.frames,
        bad_frames=now.bad_frames - b.bad_frames,
        faults=now.faults - b.faults,
        reconnects=now.reconnects,
    )


class Scorer:
    """Smoothed scores of a venue's connections, one evaluation at a time.

    Contract: :meth:`evaluate` returns a score in [0, 1] for every connection given; a
    connection not given is forgotten (it was closed).
    """

    def __init__(self, alpha: float = SCORE_ALPHA) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("need 0 < alpha <= 1")
        self.alpha = alpha
        self._totals: dict[int, Totals] = {}
        self.scores: dict[int, float] = {}

    def evaluate(self, totals: Mapping[int, Totals]) -> dict[int, float]:
        for conn_id in list(self.scores):
            if conn_id not in totals:
                del self.scores[conn_id]
                self._totals.pop(conn_id, None)
        for conn_id, now in totals.items():
            fresh = score(window(self._totals.get(conn_id), now))
            previous = self.scores.get(conn_id)
            self.scores[conn_id] = (
                fresh if previous is None else previous + self.alpha * (fresh - previous)
            )
            self._totals[conn_id] = now
        return dict(self.scores)


# --- replacing the worst connection -----------------------------------------------------------


class Replace(enum.Enum):
    #: No connection is worst by the margin.
    CLEAR = "clear"
    #: One connection is worst by the margin since ``since_s``.
    SUSPECT = "suspect"
    #: A connection was replaced; none is until the cooldown ends.
    COOLDOWN = "cooldown"


class ReplaceEvent(enum.Enum):
    #: A connection is worst by at least the margin (the suspect, or a new one).
    WORST = "worst"
    #: The suspect is still worst by more than the exit share of the margin.
    STILL_WORST = "still worst"
    #: No connection is worst by the margin (or the suspect fell inside the exit band).
    NONE_WORST = "none worst"
    #: The suspect was worst by the margin for ``replace_after_s``.
    HELD = "held"
    #: The cooldown passed.
    COOLED = "cooled"


class ReplaceAction(enum.Enum):
    #: Remember the suspect and since when.
    SUSPECT = "suspect"
    #: Forget the suspect.
    CLEAR = "clear"
    #: Replace the suspect; start the cooldown.
    REPLACE = "replace"


_R, _RE, _RA = Replace, ReplaceEvent, ReplaceAction
REPLACE_TRANSITIONS: Final[Table[Replace, ReplaceEvent, ReplaceAction]] = {
    (_R.CLEAR, _RE.WORST): (_R.SUSPECT, (_RA.SUSPECT,)),
    (_R.CLEAR, _RE.NONE_WORST): (_R.CLEAR, ()),
    (_R.SUSPECT, _RE.WORST): (_R.SUSPECT, (_RA.SUSPECT,)),
    (_R.SUSPECT, _RE.STILL_WORST): (_R.SUSPECT, ()),
    (_R.SUSPECT, _RE.NONE_WORST): (_R.CLEAR, (_RA.CLEAR,)),
    (_R.SUSPECT, _RE.HELD): (_R.COOLDOWN, (_RA.REPLACE,)),
    (_R.COOLDOWN, _RE.WORST): (_R.COOLDOWN, ()),
    (_R.COOLDOWN, _RE.NONE_WORST): (_R.COOLDOWN, ()),
    (_R.COOLDOWN, _RE.COOLED): (_R.CLEAR, ()),
}


class ReplacementPolicy:
    """Which connection of a venue to replace, if any, at each evaluation.

    A connection is *worst by the margin* when its score is at least ``margin`` below every
    other scored connection's (two or more connections). It is replaced once it stayed so
    for ``replace_after_s``; it stops being suspect when its distance to the next worst
    falls below ``margin * EXIT_SHARE`` or another connection becomes worst by the margin
    (whose clock then starts). After a replacement no connection is replaced for
    ``cooldown_s``.
    """

    def __init__(self, margin: float, replace_after_s: float, cooldown_s: float) -> None:
        if margin <= 0 or replace_after_s < 0 or cooldown_s < 0:
            raise ValueError("need margin > 0, replace_after_s >= 0, cooldown_s >= 0")
        self.margin = margin
        self.replace_after_s = replace_after_s
        self.cooldown_s = cooldown_s
        self.state = Replace.CLEAR
        self.suspect: int | None = None
        self.since_s = 0.0
        self.cooldown_until_s = 0.0
        #: Connections replaced so far.
        self.replaced = 0

    def evaluate(self, scores: Mapping[int, float], now_s: float) -> int | None:
        """The connection to replace now, or None."""
        if self.state is Replace.COOLDOWN:
            if now_s < self.cooldown_until_s:
                return None
            self._step(ReplaceEvent.COOLED, None, now_s)
        ranked = sorted(scores.items(), key=lambda item: item[1])
        if len(ranked) < 2:
            return self._step(ReplaceEvent.NONE_WORST, None, now_s)
        (worst, low), (_, next_low) = ranked[0], ranked[1]
        distance = next_low - low
        if self.state is Replace.SUSPECT and worst == self.suspect:
            if distance < self.margin * EXIT_SHARE:
                return self._step(ReplaceEvent.NONE_WORST, None, now_s)
            if now_s - self.since_s >= self.replace_after_s:
                return self._step(ReplaceEvent.HELD, worst, now_s)
            return self._step(ReplaceEvent.STILL_WORST, worst, now_s)
        if distance >= self.margin:
            return self._step(ReplaceEvent.WORST, worst, now_s)
        return self._step(ReplaceEvent.NONE_WORST, None, now_s)

    def _step(self, event: ReplaceEvent, conn_id: int | None, now_s: float) -> int | None:
        self.state, actions = transition("replace", REPLACE_TRANSITIONS, self.state, event)
        chosen = None
        for action in actions:
            if action is ReplaceAction.SUSPECT:
                self.suspect, self.since_s = conn_id, now_s
            elif action is ReplaceAction.CLEAR:
                self.suspect = None
            elif action is ReplaceAction.REPLACE:
                chosen, self.suspect = self.suspect, None
                self.cooldown_until_s = now_s + self.cooldown_s
                self.replaced += 1
        return chosen


def rotated_endpoint(order: Sequence[str], current: str, busy: Collection[str]) -> str | None:
    """The endpoint a connection on ``current`` that scored worst is replaced on: the
    first of the venue's endpoints ``order`` after ``current`` (cyclically, ``current``
    itself last) that is not ``busy`` (serving the same symbols already); None when there
    is none: the replacement stays on ``current``."""
    start = order.index(current) + 1 if current in order else 0
    for endpoint in (*order[start:], *order[:start]):
        if endpoint != current and endpoint not in busy:
            return endpoint
    return None


# --- standby endpoints --------------------------------------------------------------------


class Standby(enum.Enum):
    #: Standby endpoints are not connected.
    IDLE = "idle"
    #: Standby endpoints are connected (every primary was silent).
    ACTIVE = "active"


class StandbyEvent(enum.Enum):
    #: Every primary has been silent for ``standby_after_s``.
    PRIMARIES_SILENT = "primaries silent"
    #: A primary has been receiving for ``release_after_s``.
    PRIMARIES_HEALTHY = "primaries healthy"
    #: Neither.
    UNSETTLED = "unsettled"


class StandbyAction(enum.Enum):
    CONNECT = "connect"
    RELEASE = "release"


_SB, _SE, _SA = Standby, StandbyEvent, StandbyAction
STANDBY_TRANSITIONS: Final[Table[Standby, StandbyEvent, StandbyAction]] = {
    (_SB.IDLE, _SE.PRIMARIES_SILENT): (_SB.ACTIVE, (_SA.CONNECT,)),
    (_SB.IDLE, _SE.PRIMARIES_HEALTHY): (_SB.IDLE, ()),
    (_SB.IDLE, _SE.UNSETTLED): (_SB.IDLE, ()),
    (_SB.ACTIVE, _SE.PRIMARIES_SILENT): (_SB.ACTIVE, ()),
    (_SB.ACTIVE, _SE.PRIMARIES_HEALTHY): (_SB.IDLE, (_SA.RELEASE,)),
    (_SB.ACTIVE, _SE.UNSETTLED): (_SB.ACTIVE, ()),
}


class StandbyPolicy:
    """When a venue's standby endpoints are connected and released.

    The shell reports, at each evaluation, per primary connection when it last received a
    frame (None: never, or down) and since when it has been receiving without a silence of
    ``standby_after_s``. Every primary silent for ``standby_after_s`` (none received within
    it): CONNECT. Once connected, a primary receiving continuously for ``release_after_s``:
    RELEASE.
    """

    def __init__(self, standby_after_s: float, release_after_s: float) -> None:
        if standby_after_s <= 0 or release_after_s < 0:
            raise ValueError("need standby_after_s > 0 and release_after_s >= 0")
        self.standby_after_s = standby_after_s
        self.release_after_s = release_after_s
        self.state = Standby.IDLE
        #: Per primary: when the policy first heard of it (a primary that never received
        #: is silent from then on).
        self._first_seen_s: dict[int, float] = {}
        #: Per primary: since when it has been receiving without a silence (None: silent).
        self._receiving_since: dict[int, float | None] = {}
        self.activations = 0

    def evaluate(
        self, last_recv_s: Mapping[int, float | None], now_s: float
    ) -> StandbyAction | None:
        """``last_recv_s``: per primary connection, when it last received a frame (None:
        never). Returns what to do with the standby endpoints now."""
        for known in (self._first_seen_s, self._receiving_since):
            for conn_id in [c for c in known if c not in last_recv_s]:
                del known[conn_id]
        all_silent = True
        for conn_id, last in last_recv_s.items():
            heard_s = self._first_seen_s.setdefault(conn_id, now_s) if last is None else last
            silent = now_s - heard_s >= self.standby_after_s
            all_silent = all_silent and silent
            if last is None or silent:
                self._receiving_since[conn_id] = None
            elif self._receiving_since.get(conn_id) is None:
                self._receiving_since[conn_id] = now_s
        settled = [
            since
            for since in self._receiving_since.values()
            if since is not None and now_s - since >= self.release_after_s
        ]
        if all_silent:
            event = StandbyEvent.PRIMARIES_SILENT
        elif settled:
            event = StandbyEvent.PRIMARIES_HEALTHY
        else:
            event = StandbyEvent.UNSETTLED
        self.state, actions = transition("standby", STANDBY_TRANSITIONS, self.state, event)
        if StandbyAction.CONNECT in actions:
            self.activations += 1
        return actions[0] if actions else None
