"""Reconnect backoff policy: capped exponential with full jitter. Pure, no I/O.

The n-th consecutive failure waits a uniform random time in ``[0, min(cap, initial * 2**n)]``
("full jitter"), so redundant connections that fail together do not retry in lockstep.
"""

from __future__ import annotations

import random


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
