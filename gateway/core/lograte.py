"""Per-cause log rate limit. Pure: time is ``now_s``.

A flood of one kind of event (a refused subscriber per millisecond, a venue sending one
bad frame after another) must not flood the log or cost a write per event. Each *cause*
may write ``burst`` lines per ``window_s``; further lines of that cause are suppressed and
counted, and the next line admitted says how many were suppressed before it.

Causes are kept in a bounded table (``max_causes``); when it is full the cause seen
least recently is forgotten, so a stream of distinct causes cannot grow memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class _Window:
    __slots__ = ("end_s", "suppressed", "written")

    def __init__(self, end_s: float) -> None:
        self.end_s = end_s
        self.written = 0
        self.suppressed = 0


class LogLimiter:
    """How many lines each cause may still write.

    Contract: within any window of one cause (opened by its first line after the previous
    window ended), at most ``burst`` calls of :meth:`admit` return a number; the others
    return None. The number is the count of that cause's lines suppressed since the last
    admitted one, so no event goes uncounted in the log.
    """

    def __init__(self, *, burst: int = 5, window_s: float = 60.0, max_causes: int = 1024) -> None:
        if burst < 1 or window_s <= 0 or max_causes < 1:
            raise ValueError("need burst >= 1, window_s > 0, max_causes >= 1")
        self.burst = burst
        self.window_s = window_s
        self.max_causes = max_causes
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()
        #: Lines suppressed since start, all causes together.
        self.suppressed_total = 0

    def admit(self, cause: Hashable, now_s: float) -> int | None:
        """None: do not write this line. A number: write it, noting that many suppressed."""
        window = self._windows.get(cause)
        if window is None or now_s >= window.end_s:
            carried = window.suppressed if window is not None else 0
            window = _Window(now_s + self.window_s)
            window.suppressed = carried
            self._windows[cause] = window
            if len(self._windows) > self.max_causes:
                self._windows.popitem(last=False)
        self._windows.move_to_end(cause)
        if window.written >= self.burst:
            window.suppressed += 1
            self.suppressed_total += 1
            return None
        window.written += 1
        suppressed, window.suppressed = window.suppressed, 0
        return suppressed

    def __len__(self) -> int:
        """Causes currently remembered (at most ``max_causes``)."""
        return len(self._windows)
