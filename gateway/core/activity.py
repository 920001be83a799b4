"""Whether each symbol's channel is alive on each connection, judged against the symbol's
own message rate. Pure: time is ``now_s``.

A connection can stay up while one symbol's channel on it goes silent (the venue stopped
that subscription; other symbols' updates, trades or heartbeats keep the connection
alive, so the stall timeout never fires). :class:`ActivityMonitor` keeps, per (symbol,
connection), an exponentially weighted mean of the time between the symbol's book
messages. A channel silent for ``factor`` times its usual interval, bounded by
``min_silence_s`` and ``max_silence_s``, on a connection that carried other traffic since,
is dead on that connection (reported by :meth:`ActivityMonitor.check`). A quiet
market raises the usual interval and so the bound; a connection with no traffic at all is
the stall timeout's concern, not this one's. A dead channel is alive again with its next
message (:meth:`ActivityMonitor.update` says so).

Each report makes the owner resubscribe the symbol on that connection; a resubscribe that
is never answered leaves the channel silent, so a dead channel is reported again once it
stayed silent, since its last report, for twice the wait before that report (the bound,
then twice it, four times, ... capped at ``max_silence_s``): the owner asks again, less
and less often, until the channel's next message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from typing import NamedTuple

#: Weight of the newest interval in the mean.
DEFAULT_ALPHA: Final = 0.1


class ActivityLimits(NamedTuple):
    """``factor`` times the usual interval is silence, bounded by ``min_silence_s`` and
    ``max_silence_s`` (a channel with no usual interval yet: ``max_silence_s``)."""

    factor: float = 20.0
    min_silence_s: float = 5.0
    max_silence_s: float = 300.0
    alpha: float = DEFAULT_ALPHA

    def check(self) -> None:
        if not (self.factor > 0 and 0 < self.min_silence_s <= self.max_silence_s):
            raise ValueError("need factor > 0 and 0 < min_silence_s <= max_silence_s")
        if not 0 < self.alpha <= 1:
            raise ValueError("need 0 < alpha <= 1")


#: The limits of :class:`ActivityMonitor` by default (``venues[]`` config's defaults).
DEFAULT_LIMITS: Final = ActivityLimits()


class Silence(NamedTuple):
    """``symbol`` went silent on ``conn_id``: nothing for ``silent_s``, usually every
    ``usual_s`` (None: no interval measured yet); ``reported``: how many times this
    silence was reported before (0: it is new)."""

    symbol: str
    conn_id: int
    silent_s: float
    usual_s: float | None
    reported: int = 0


class _Channel:
    __slots__ = ("dead", "interval_s", "last_s", "reported", "reported_s", "retry_s", "updates")

    def __init__(self, now_s: float) -> None:
        #: The last message, or when the connection came up.
        self.last_s = now_s
        #: The mean interval between messages; None before two messages.
        self.interval_s: float | None = None
        self.updates = 0
        self.dead = False
        #: While dead: the reports of this silence, the last one's wait, and its time.
        self.reported = 0
        self.retry_s = 0.0
        self.reported_s = 0.0


class ActivityMonitor:
    """Per (symbol, connection) message rates and silences; see the module doc.

    Contract: :meth:`check` reports a channel first when it has been silent for at least
    :meth:`bound_s` and its connection received a frame after the channel's last message,
    within the bound; again, while it stays silent, each time twice the previous wait
    (capped at ``max_silence_s``) passed since its last report and its connection received
    a frame since that report, within the bound. Memory: one entry per (symbol,
    connection that is up, or that delivered the symbol since it came up).
    """

    def __init__(self, limits: ActivityLimits = DEFAULT_LIMITS) -> None:
        limits.check()
        self.limits = limits
        self._channels: dict[str, dict[int, _Channel]] = {}
        #: Per connection that is up: its last frame of any kind.
        self._conn_last_s: dict[int, float] = {}

    def connection_up(self, conn_id: int, symbols: Iterable[str], now_s: float) -> None:
        """``conn_id`` came up carrying ``symbols``: their silence is counted from now."""
        self._conn_last_s[conn_id] = now_s
        for symbol in symbols:
            self._channels.setdefault(symbol, {})[conn_id] = _Channel(now_s)

    def connection_down(self, conn_id: int) -> None:
        self._conn_last_s.pop(conn_id, None)
        for channels in self._channels.values():
            channels.pop(conn_id, None)

    def forget(self, symbol: str) -> None:
        """``symbol`` is no longer carried: its channels are not watched."""
        self._channels.pop(symbol, None)

    def frame(self, conn_id: int, now_s: float) -> None:
        """Any frame received on ``conn_id``."""
        self._conn_last_s[conn_id] = now_s

    def update(self, symbol: str, conn_id: int, now_s: float) -> bool:
        """A book message of ``symbol`` on ``conn_id``; True when the channel was dead and
        is alive again."""
        channels = self._channels.setdefault(symbol, {})
        channel = channels.get(conn_id)
        if channel is None:
            channel = channels[conn_id] = _Channel(now_s)
        revived = channel.dead
        if channel.updates and not revived:  # a silence is not a usual interval
            sample_s = now_s - channel.last_s
            mean = channel.interval_s
            alpha = self.limits.alpha
            channel.interval_s = sample_s if mean is None else mean + alpha * (sample_s - mean)
        channel.updates += 1
        channel.last_s = now_s
        channel.dead = False
        channel.reported = 0
        return revived

    def bound_s(self, symbol: str, conn_id: int) -> float:
        """The silence after which ``symbol`` is dead on ``conn_id``."""
        channel = self._channels.get(symbol, {}).get(conn_id)
        return self._bound_s(None if channel is None else channel.interval_s)

    def check(self, now_s: float) -> list[Silence]:
        """The channels found dead now, and the dead ones due to be reported again (the
        resubscribe the last report asked for went unanswered)."""
        found: list[Silence] = []
        max_silence_s = self.limits.max_silence_s
        for symbol, channels in self._channels.items():
            for conn_id, channel in channels.items():
                bound_s = self._bound_s(channel.interval_s)
                if channel.dead:
                    since_s, wait_s = channel.reported_s, min(max_silence_s, 2 * channel.retry_s)
                else:
                    since_s, wait_s = channel.last_s, bound_s
                conn_last_s = self._conn_last_s.get(conn_id)
                if (
                    now_s - since_s >= wait_s
                    and conn_last_s is not None
                    and conn_last_s > since_s
                    and now_s - conn_last_s < bound_s
                ):
                    found.append(
                        Silence(
                            symbol,
                            conn_id,
                            now_s - channel.last_s,
                            channel.interval_s,
                            channel.reported,
                        )
                    )
                    channel.dead = True
                    channel.reported += 1
                    channel.retry_s, channel.reported_s = wait_s, now_s
        return found

    def dead(self, symbol: str, conn_id: int) -> bool:
        """True when ``symbol``'s channel on ``conn_id`` was reported dead and has carried
        no message since."""
        channel = self._channels.get(symbol, {}).get(conn_id)
        return channel is not None and channel.dead

    def dead_everywhere(self, symbol: str) -> bool:
        """True when ``symbol`` has channels and every one is dead."""
        channels = self._channels.get(symbol)
        if not channels:
            return False
        return all(c.dead for c in channels.values())

    def alive_elsewhere(self, symbol: str, conn_id: int) -> bool:
        """True when ``symbol`` is alive on a connection other than ``conn_id``."""
        channels = self._channels.get(symbol, {})
        return any(not c.dead for other, c in channels.items() if other != conn_id)

    def stale_reason(self, symbol: str, now_s: float) -> str:
        """Why ``symbol`` is stale when dead on every connection: its silence since the
        last message on any connection, and its usual interval (the shortest measured)."""
        channels = self._channels.get(symbol, {}).values()
        silent_s = now_s - max((c.last_s for c in channels), default=now_s)
        usual = [c.interval_s for c in channels if c.interval_s is not None]
        usual_text = f"usual every {min(usual):.3g} s" if usual else "no usual rate measured yet"
        return f"no updates for {silent_s:.3g} s on any connection ({usual_text})"

    def _bound_s(self, interval_s: float | None) -> float:
        limits = self.limits
        if interval_s is None:
            return limits.max_silence_s
        return min(limits.max_silence_s, max(limits.min_silence_s, limits.factor * interval_s))
