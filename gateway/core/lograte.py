"""Per-cause log rate limit. Pure: time is ``now_s``.

A flood of one kind of event (a refused subscriber per millisecond, a venue sending one
bad frame after another) must not flood the log or cost a write per event. Each *cause*
may write ``burst`` lines per ``window_s``; further lines of that cause are suppressed and
counted, and the next line admitted says how many were suppressed before it.

Causes are kept in a bounded table (``max_causes``); when it is full the cause seen
least recently is forgotten, so a stream of distinct causes cannot grow memory.

:class:`LimitedLogger` writes a logger's lines through a limiter, the one way a line says
how many of its kind were suppressed. It only calls the :class:`logging.Logger` it is
given; the handlers are the application's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Mapping
from functools import partial
from typing import Any
from typing import Concatenate
from typing import Final
from typing import Generic
from typing import ParamSpec
from typing import Self
from typing import overload

#: Appended to an admitted line, with the count, when lines of its cause were suppressed.
SUPPRESSED_SUFFIX: Final = " (%d similar suppressed)"

_LogParams = ParamSpec("_LogParams")


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


class AtLevel(Generic[_LogParams]):
    """A logger's method for one level: in a class body, ``warning = AtLevel(WARNING, log)``
    makes ``obj.warning(...)`` the call ``obj.log(WARNING, ...)``, typed with the rest of
    ``log``'s parameters. The call adds no Python frame, so a ``stacklevel`` given to it
    counts as one given to ``log``."""

    def __init__(self, level: int, log: Callable[Concatenate[Any, int, _LogParams], bool]) -> None:
        self.level = level
        self._log = log

    @overload
    def __get__(self, instance: None, owner: type) -> Self: ...

    @overload
    def __get__(
        self, instance: object, owner: type | None = None
    ) -> Callable[_LogParams, bool]: ...

    def __get__(
        self, instance: object, owner: type | None = None
    ) -> Self | Callable[_LogParams, bool]:
        if instance is None:
            return self
        return partial(self._log, instance, self.level)


class LimitedLogger:
    """A logger whose lines are limited per cause by a :class:`LogLimiter`.

    ``log(level, cause, now_s, msg, *args)`` writes ``msg % args`` when the limiter admits
    the cause at ``now_s``, with :data:`SUPPRESSED_SUFFIX` and the count appended when
    lines of that cause were suppressed before it; otherwise the line is dropped, counted
    by the limiter. A level the logger does not write costs no budget. ``info``,
    ``warning`` and ``error`` are ``log`` at their level.
    """

    def __init__(self, logger: logging.Logger, limiter: LogLimiter | None = None) -> None:
        self.logger = logger
        self.limiter = limiter if limiter is not None else LogLimiter()

    def log(
        self,
        level: int,
        cause: Hashable,
        now_s: float,
        msg: str,
        *args: object,
        extra: Mapping[str, object] | None = None,
        stacklevel: int = 1,
    ) -> bool:
        """Write one line of ``cause`` if admitted (``extra``, ``stacklevel``: as for
        :meth:`logging.Logger.log`, counted from the caller); True when written."""
        if not self.logger.isEnabledFor(level):
            return False
        suppressed = self.limiter.admit(cause, now_s)
        if suppressed is None:
            return False
        if suppressed:
            msg += SUPPRESSED_SUFFIX
            args = (*args, suppressed)
        self.logger.log(level, msg, *args, extra=extra, stacklevel=stacklevel + 1)
        return True

    info = AtLevel(logging.INFO, log)
    warning = AtLevel(logging.WARNING, log)
    error = AtLevel(logging.ERROR, log)
