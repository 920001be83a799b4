"""A venue's REST request-weight budget and its rate-limit bans. Pure: time is ``now_s``.

Venues price each REST request in *weight* and allow so much weight per minute per IP;
over it they answer 429 (slow down, with ``Retry-After``) and, to a client that keeps
going, 418 (the IP is banned for ``Retry-After`` seconds). :class:`WeightBudget` keeps a
fetcher under both: it counts the weight spent in a sliding window of ``window_s`` (so it
stays within the limit however the venue counts), keeps a fifth of the venue's budget for
anything else sharing the IP, and says how long the next request must wait.

Use: ``wait = budget.wait_s(weight, now_s)``; sleep while it is positive (asking again
after the sleep); then ``budget.spend(weight, now_s)`` and send. After the response,
``observe_used`` with the weight the venue reports, or ``rate_limited`` on a 429/418.

:class:`AttemptBudget` does the same for WebSocket connection attempts, which venues
count per IP in a sliding window of their own.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Final

from gateway.core.ratelimit import TokenBucket

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
    """Request weight spent in a sliding window, and the time until which the venue
    banned us.

    Args:
        weight_per_window: the venue's limit per window (e.g. Binance's 6000 per minute).
        window_s: the window's length.
        share: the fraction of the venue's limit this budget may use.

    Contract: following :meth:`wait_s` and recording each request with :meth:`spend`, the
    weight spent within any ``window_s`` (a sliding window, the strictest way a venue may
    count) never exceeds :attr:`budget`, except that a request is always admitted when
    nothing else is in its window (one heavier than the whole budget would otherwise never
    be sent). The weight a venue reports (:meth:`observe_used`) replaces ours, counted from
    the time of the report. Memory is bounded by the requests of one window.
    """

    def __init__(
        self, weight_per_window: int, *, window_s: float = 60.0, share: float = 0.8
    ) -> None:
        if weight_per_window < 1 or window_s <= 0 or not 0 < share <= 1:
            raise ValueError("weight_per_window >= 1, window_s > 0, 0 < share <= 1")
        #: The weight this budget may spend per window.
        self.budget = max(1, int(round(weight_per_window * share, 6)))
        self.window_s = window_s
        #: The weight spent within the window, as of the last call.
        self.used = 0
        #: (when it leaves the window, weight) of each request in the window, oldest first.
        self._spent: deque[tuple[float, int]] = deque()
        #: No request before this time (a 429/418's Retry-After).
        self.blocked_until_s = 0.0

    def wait_s(self, weight: int, now_s: float) -> float:
        """Seconds to wait before a request of ``weight`` may be sent; 0.0: send now."""
        self._expire(now_s)
        wait_s = max(0.0, self.blocked_until_s - now_s)
        excess = self.used + weight - self.budget
        if self.used and excess > 0:
            # Until the oldest requests that make room for this one have left the window;
            # one heavier than the budget waits for the window to be empty.
            leaves_s = self._spent[-1][0]
            for entry_leaves_s, spent in self._spent:
                excess -= spent
                if excess <= 0:
                    leaves_s = entry_leaves_s
                    break
            wait_s = max(wait_s, leaves_s - now_s)
        return wait_s

    def spend(self, weight: int, now_s: float) -> None:
        """A request of ``weight`` is being sent now."""
        self._expire(now_s)
        if weight > 0:
            self._spent.append((now_s + self.window_s, weight))
            self.used += weight

    def observe_used(self, used: int, now_s: float) -> None:
        """The venue reported the weight used in its current window (it also counts
        requests of others sharing the IP): that figure replaces ours, from now on."""
        self._spent.clear()
        self.used = 0
        self.spend(used, now_s)

    def rate_limited(self, retry_after: float, now_s: float) -> None:
        """A 429 or 418 came back: nothing is sent for ``retry_after`` seconds."""
        self.blocked_until_s = max(self.blocked_until_s, now_s + retry_after)

    def _expire(self, now_s: float) -> None:
        spent = self._spent
        while spent and spent[0][0] <= now_s:
            self.used -= spent.popleft()[1]


class AttemptBudget:
    """Connection attempts a venue allows per IP in a sliding window, shared by every
    connection of the venue (Binance: 300 per 5 minutes; over it the IP is banned).

    Args:
        attempts_per_window: the venue's limit per window.
        window_s: the window's length.
        share: the fraction of the venue's limit this budget may use (the rest is left to
            anything else sharing the IP, a restarted gateway among them).

    Use: ``wait = budget.wait_s(now_s)``; sleep while it is positive (asking again after
    the sleep); then ``budget.spend(now_s)`` and connect, with no await in between. A group
    of ``n`` attempts sent together (a resubscription's unsubscribe and subscribe) asks for
    them at once: ``wait_s(now_s, attempts=n)``, then ``spend(now_s, attempts=n)``.

    Contract: following :meth:`wait_s` for the same number of attempts, the attempts
    recorded with :meth:`spend` at ``t`` find at most :attr:`budget` minus their number
    others in their window (those at ``u`` with ``u + window_s > t``): no window ever holds
    more than :attr:`budget` attempts, a group's included. A group of more than
    :attr:`budget` attempts never fits: :meth:`wait_s` raises ValueError for it rather
    than answer a wait that never ends (whoever builds such groups checks them against
    :attr:`budget` first). Memory is bounded by :attr:`budget` (the times of the last
    ``budget`` attempts: those that a group spent pushes out had left the window).
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
        #: No attempt before this time (a refused handshake's Retry-After).
        self.blocked_until_s = 0.0

    def wait_s(self, now_s: float, *, attempts: int = 1) -> float:
        """Seconds to wait before ``attempts`` more may start together; 0.0: now.

        Raises ValueError when ``attempts`` is negative or above :attr:`budget` (they
        would never fit in one window)."""
        if not 0 <= attempts <= self.budget:
            raise ValueError(
                f"{attempts} attempts at once can never fit a budget of {self.budget} "
                f"per {self.window_s:g} s"
            )
        blocked_s = max(0.0, self.blocked_until_s - now_s)
        # Room for them once the oldest attempts they would push out of the last
        # ``budget`` have left the window; the last of those leaves at ``expiries[over - 1]``.
        over = len(self._expiries) + attempts - self.budget
        if over <= 0:
            return blocked_s
        return max(blocked_s, self._expiries[over - 1] - now_s)

    def settle(self, spent_s: float, ended_s: float) -> None:
        """The attempt spent at ``spent_s`` ended its handshake at ``ended_s``: it counts
        until ``ended_s + window_s``, since the venue counted it on arrival, between the
        two. Nothing when it has left the remembered attempts."""
        expiries = self._expiries
        try:
            expiries.remove(spent_s + self.window_s)
        except ValueError:
            return
        expiry = ended_s + self.window_s
        index = len(expiries)
        while index > 0 and expiries[index - 1] > expiry:
            index -= 1
        expiries.insert(index, expiry)

    def rate_limited(self, retry_after: float, now_s: float) -> None:
        """The venue refused a handshake with 429 or 418: no attempt for
        ``retry_after`` seconds."""
        self.blocked_until_s = max(self.blocked_until_s, now_s + retry_after)

    def spend(self, now_s: float, *, attempts: int = 1) -> None:
        """``attempts`` start now (as many of the oldest remembered, out of the window when
        :meth:`wait_s` allowed them, are dropped)."""
        self._expiries.extend(itertools.repeat(now_s + self.window_s, attempts))
        self.attempts += attempts


#: What budgets are kept per: a venue's limit group (:attr:`VenueLimits.group
#: <gateway.core.limits.VenueLimits.group>`) and the source address its connections leave
#: from (None: the host's default route).
BudgetKey = tuple[str, str | None]


class SharedBudgets:
    """One :class:`AttemptBudget` and one :class:`WeightBudget` per :data:`BudgetKey`,
    handed to every connection and fetcher of every venue configuration that shares the
    key, since the venue counts them together.

    The first request for a key fixes its limits; later requests for the same key get the
    same budget whatever limits they name.
    """

    def __init__(self, *, share: float = 0.8) -> None:
        self.share = share
        self.attempt_budgets: dict[BudgetKey, AttemptBudget] = {}
        self.weight_budgets: dict[BudgetKey, WeightBudget] = {}
        self.message_budgets: dict[BudgetKey, TokenBucket] = {}

    def attempts(self, key: BudgetKey, attempts_per_window: int, window_s: float) -> AttemptBudget:
        """The connection-attempt budget of ``key``."""
        budget = self.attempt_budgets.get(key)
        if budget is None:
            budget = self.attempt_budgets[key] = AttemptBudget(
                attempts_per_window, window_s, share=self.share
            )
        return budget

    def messages(self, key: BudgetKey, messages_per_s: float, now_s: float) -> TokenBucket:
        """The client-message budget of ``key`` (venues that count messages per source
        address): ``share`` of the rate, with a burst of the rest of the venue's rate, so
        that no second holds more than ``messages_per_s`` (TokenBucket's contract)."""
        bucket = self.message_budgets.get(key)
        if bucket is None:
            rate_per_s = messages_per_s * self.share
            burst = max(1, int(messages_per_s - rate_per_s))
            bucket = self.message_budgets[key] = TokenBucket(rate_per_s, burst, now_s)
        return bucket

    def weight(self, key: BudgetKey, weight_per_window: int, window_s: float) -> WeightBudget:
        """The REST weight budget of ``key``."""
        budget = self.weight_budgets.get(key)
        if budget is None:
            budget = self.weight_budgets[key] = WeightBudget(
                weight_per_window, window_s=window_s, share=self.share
            )
        return budget
