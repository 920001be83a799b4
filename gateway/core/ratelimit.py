"""A token bucket: how many requests a peer may make per second. Pure: time is ``now_s``.

The bucket holds up to ``burst`` tokens and gains ``rate_per_s`` tokens per second; each
admitted request takes one. A peer may thus send ``burst`` requests at once, then
``rate_per_s`` per second on average. The fan-out keeps one per subscriber for the
requests that cost the gateway work (``subscribe``, ``resync``, ``list``).
"""

from __future__ import annotations


class TokenBucket:
    """Admits requests at ``rate_per_s`` on average, ``burst`` at once.

    Contract: over any interval of ``d`` seconds (on the clock passed to :meth:`take`),
    at most ``burst + rate_per_s * d`` calls of :meth:`take` return True. A clock reading
    earlier than the previous one adds no tokens.
    """

    __slots__ = ("_last_s", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int, now_s: float) -> None:
        if not rate_per_s > 0 or burst < 1:
            raise ValueError("rate_per_s > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._last_s = now_s

    def take(self, now_s: float) -> bool:
        """True (and one token less) when a request may go now; False when it may not."""
        if now_s > self._last_s:
            self._tokens = min(
                float(self.burst), self._tokens + (now_s - self._last_s) * self.rate_per_s
            )
            self._last_s = now_s
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self, now_s: float) -> float:
        """Seconds until :meth:`take` may next return True (0 when it would now)."""
        elapsed_s = max(0.0, now_s - self._last_s)
        tokens = min(float(self.burst), self._tokens + elapsed_s * self.rate_per_s)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s
