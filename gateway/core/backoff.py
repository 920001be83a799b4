"""Reconnect backoff policy: capped exponential with full jitter. Pure, no I/O.

The n-th consecutive failure waits a uniform random time in ``[0, min(cap, initial * 2**n)]``
("full jitter"), so redundant connections that fail together do not retry in lockstep.
:class:`ReconnectPolicy` decides when a connection's failures count as over: only after it
stayed healthy for a while, so an endpoint that accepts and drops backs off too.
"""

from __future__ import annotations

import enum
import random
from typing import Final

from gateway.core.transitions import Table
from gateway.core.transitions import transition


class Backoff:
    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError("need 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng if rng is not None else random.Random()
        self.failures = 0

    def ceiling_s(self) -> float:
        """The largest delay the next call may return."""
        # Exponent capped so the float never overflows however long the outage.
        return min(self.max_s, self.initial_s * 2.0 ** min(self.failures, 64))

    def next_delay_s(self) -> float:
        """Delay before the next attempt; counts one more failure."""
        delay = self._rng.uniform(0.0, self.ceiling_s())
        self.failures += 1
        return delay

    def reset(self) -> None:
        """A connection succeeded: the next failure starts from ``initial_s`` again."""
        self.failures = 0


class Health(enum.Enum):
    """Where a connection stands for the reconnect policy."""

    #: Not connected: connecting, or waiting before the next attempt.
    DOWN = enum.auto()
    #: Connected, not yet receiving for ``healthy_after_s``.
    UP = enum.auto()
    #: Connected and receiving for at least ``healthy_after_s``: the backoff was reset.
    HEALTHY = enum.auto()


class HealthEvent(enum.Enum):
    CONNECTED = enum.auto()
    #: A frame arrived less than ``healthy_after_s`` after the connect.
    FRAME = enum.auto()
    #: A frame arrived ``healthy_after_s`` or more after the connect.
    SETTLED_FRAME = enum.auto()
    #: The attempt failed, or the connection closed, stalled or broke.
    ENDED = enum.auto()
    #: The connection ended to be renewed: the venue asked for it, or it reached its age.
    RENEWED = enum.auto()


class HealthAction(enum.Enum):
    RESET_BACKOFF = enum.auto()
    #: The next attempt waits the backoff's next delay.
    BACK_OFF = enum.auto()
    #: The next attempt starts at once.
    AT_ONCE = enum.auto()


_D, _U, _H = Health.DOWN, Health.UP, Health.HEALTHY
#: Only a healthy connection resets the backoff, and only a healthy connection's renewal
#: skips it: an endpoint that accepts and then closes (or asks to reconnect) before it was
#: healthy backs off exactly as one that refuses.
HEALTH_TRANSITIONS: Final[Table[Health, HealthEvent, HealthAction]] = {
    (_D, HealthEvent.CONNECTED): (_U, ()),
    (_D, HealthEvent.ENDED): (_D, (HealthAction.BACK_OFF,)),
    (_U, HealthEvent.FRAME): (_U, ()),
    (_U, HealthEvent.SETTLED_FRAME): (_H, (HealthAction.RESET_BACKOFF,)),
    (_U, HealthEvent.ENDED): (_D, (HealthAction.BACK_OFF,)),
    (_U, HealthEvent.RENEWED): (_D, (HealthAction.BACK_OFF,)),
    (_H, HealthEvent.FRAME): (_H, ()),
    (_H, HealthEvent.SETTLED_FRAME): (_H, ()),
    (_H, HealthEvent.ENDED): (_D, (HealthAction.BACK_OFF,)),
    (_H, HealthEvent.RENEWED): (_D, (HealthAction.AT_ONCE,)),
}


class ReconnectPolicy:
    """How long one connection waits before its next attempt. Pure: time is ``now_s``.

    The shell reports :meth:`connected`, every :meth:`received` frame, and :meth:`ended`,
    which returns the delay before the next attempt. The backoff is reset only once the
    connection has been up and receiving for ``healthy_after_s`` (a frame arrived that long
    after the connect; a silent connection is closed by its stall timeout before that), so
    a connection that fails soon after every connect keeps backing off up to ``max_s``.

    Contract: between two resets the delays are those of :class:`Backoff`, one per ended
    attempt, except that the renewal of a healthy connection does not wait.
    """

    def __init__(self, backoff: Backoff, healthy_after_s: float) -> None:
        if healthy_after_s < 0:
            raise ValueError("need healthy_after_s >= 0")
        self.backoff = backoff
        self.healthy_after_s = healthy_after_s
        self.state = Health.DOWN
        self._up_s = 0.0

    def connected(self, now_s: float) -> None:
        self._up_s = now_s
        self._step(HealthEvent.CONNECTED)

    def received(self, now_s: float) -> None:
        """A frame arrived (once healthy, a comparison and nothing more)."""
        if self.state is not Health.HEALTHY:
            settled = now_s - self._up_s >= self.healthy_after_s
            self._step(HealthEvent.SETTLED_FRAME if settled else HealthEvent.FRAME)

    def ended(self, *, renew: bool = False) -> float:
        """The attempt or connection is over; the delay before the next attempt.
        ``renew``: it ended to be renewed (the venue's notice, its maximum age)."""
        actions = self._step(HealthEvent.RENEWED if renew else HealthEvent.ENDED)
        return self.backoff.next_delay_s() if HealthAction.BACK_OFF in actions else 0.0

    def _step(self, event: HealthEvent) -> tuple[HealthAction, ...]:
        self.state, actions = transition("health", HEALTH_TRANSITIONS, self.state, event)
        if HealthAction.RESET_BACKOFF in actions:
            self.backoff.reset()
        return actions
