"""A venue's REST request-weight budget and its rate-limit bans. Pure: time is ``now_s``.

Venues price each REST request in *weight* and allow so much weight per minute per IP;
over it they answer 429 (slow down, with ``Retry-After``) and, to a client that keeps
going, 418 (the IP is banned for ``Retry-After`` seconds). :class:`WeightBudget` keeps a
fetcher under both: it counts the weight spent in the current window (``window_s`` from
the first request after the previous window ended), keeps a fifth of the venue's budget
for anything else sharing the IP, and says how long the next request must wait.

Use: ``wait = budget.wait_s(weight, now_s)``; sleep while it is positive (asking again
after the sleep); then ``budget.spend(weight, now_s)`` and send. After the response,
``observe_used`` with the weight the venue reports, or ``rate_limited`` on a 429/418.

:class:`AttemptBudget` does the same for WebSocket connection attempts, which venues
count per IP in a sliding window of their own.
"""

from __future__ import annotations

from collections import deque
from typing import Final

#: Statuses by which a venue says the client is over its request limits (418: banned).
RATE_LIMIT_STATUSES: Final = frozenset({418, 429})
#: The wait after a 429/418 without a usable ``Retry-After``.
DEFAULT_RETRY_AFTER_S: Final = 60.0


def retry_after_s(header: str) -> float:
    """Seconds from a ``Retry-After`` header value: a whole number of seconds, or
    :data:`DEFAULT_RETRY_AFTER_S` when missing or in another form (an HTTP date)."""
    header = header.strip()
    return float(header) if header.isdigit() else DEFAULT_RETRY_AFTER_S


class WeightBudget:
    """Request weight spent per window, and the time until which the venue banned us.

    Args:
        weight_per_window: the venue's limit per window (e.g. Binance's 6000 per minute).
        window_s: the window's length.
        share: the fraction of the venue's limit this budget may use.

    Contract: following :meth:`wait_s` and recording each request with :meth:`spend`, the
    weight spent within one window never exceeds :attr:`budget`, except that a window
    always admits its first request (one heavier than the whole budget would otherwise
    never be sent).
    """

    def __init__(
        self, weight_per_window: int, *, window_s: float = 60.0, share: float = 0.8
    ) -> None:
        if weight_per_window < 1 or window_s <= 0 or not 0 < share <= 1:
            raise ValueError("weight_per_window >= 1, window_s > 0, 0 < share <= 1")
        #: The weight this budget may spend per window.
        self.budget = max(1, int(round(weight_per_window * share, 6)))
        self.window_s = window_s
        self.used = 0
        #: When the current window ends; None: no window open (nothing spent yet).
        self.window_end_s: float | None = None
        #: No request before this time (a 429/418's Retry-After).
        self.blocked_until_s = 0.0

    def wait_s(self, weight: int, now_s: float) -> float:
        """Seconds to wait before a request of ``weight`` may be sent; 0.0: send now."""
        self._roll(now_s)
        wait_s = max(0.0, self.blocked_until_s - now_s)
        if self.window_end_s is not None and self.used and self.used + weight > self.budget:
            wait_s = max(wait_s, self.window_end_s - now_s)
        return wait_s

    def spend(self, weight: int, now_s: float) -> None:
        """A request of ``weight`` is being sent now."""
        self._open(now_s)
        self.used += weight

    def observe_used(self, used: int, now_s: float) -> None:
        """The venue reported the weight used in its current window (it also counts
        requests of others sharing the IP): that figure replaces ours."""
        self._open(now_s)
        self.used = used

    def rate_limited(self, retry_after: float, now_s: float) -> None:
        """A 429 or 418 came back: nothing is sent for ``retry_after`` seconds."""
        self.blocked_until_s = max(self.blocked_until_s, now_s + retry_after)

    def _roll(self, now_s: float) -> None:
        # One comparison with the stored end: a wait of end - now always lands past it.
        if self.window_end_s is not None and now_s >= self.window_end_s:
            self.window_end_s = None
            self.used = 0

    def _open(self, now_s: float) -> None:
        self._roll(now_s)
        if self.window_end_s is None:
            self.window_end_s = now_s + self.window_s


class AttemptBudget:
    """Connection attempts a venue allows per IP in a sliding window, shared by every
    connection of the venue (Binance: 300 per 5 minutes; over it the IP is banned).

    Args:
        attempts_per_window: the venue's limit per window.
        window_s: the window's length.
        share: the fraction of the venue's limit this budget may use (the rest is left to
            anything else sharing the IP, a restarted gateway among them).

    Use: ``wait = budget.wait_s(now_s)``; sleep while it is positive (asking again after
    the sleep); then ``budget.spend(now_s)`` and connect, with no await in between.

    Contract: following :meth:`wait_s`, an attempt recorded with :meth:`spend` at ``t``
    finds fewer than :attr:`budget` others in its window (those at ``u`` with
    ``u + window_s > t``). Memory is bounded by
    :attr:`budget` (the times of the last ``budget`` attempts).
    """

    def __init__(self, attempts_per_window: int, window_s: float, *, share: float = 0.8) -> None:
        if attempts_per_window < 1 or window_s <= 0 or not 0 < share <= 1:
            raise ValueError("attempts_per_window >= 1, window_s > 0, 0 < share <= 1")
        #: The attempts this budget may spend per window.
        self.budget = max(1, int(round(attempts_per_window * share, 6)))
        self.window_s = window_s
        #: When each of the last ``budget`` attempts leaves the window, oldest first.
        self._expiries: deque[float] = deque(maxlen=self.budget)
        #: Attempts recorded since start.
        self.attempts = 0

    def wait_s(self, now_s: float) -> float:
        """Seconds to wait before the next attempt; 0.0: connect now."""
        if len(self._expiries) < self.budget:
            return 0.0
        return max(0.0, self._expiries[0] - now_s)

    def spend(self, now_s: float) -> None:
        """An attempt starts now (the oldest remembered one, out of the window, is dropped)."""
        self._expiries.append(now_s + self.window_s)
        self.attempts += 1
