"""Log lines limited per cause (see :mod:`gateway.core.lograte`), for shells whose log
lines a peer can trigger at will: refused subscribers, bad frames, failing endpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

from gateway.core.lograte import LogLimiter


class LimitedLog:
    """A logger whose lines are rate-limited per cause.

    ``log.warning(cause, msg, *args)`` writes ``msg % args`` when the cause's budget
    allows, with `` (N similar suppressed)`` appended when lines of that cause were
    dropped before it; otherwise the line is counted in :attr:`suppressed` and dropped.
    """

    def __init__(
        self,
        logger: logging.Logger,
        limiter: LogLimiter | None = None,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.limiter = limiter if limiter is not None else LogLimiter()
        self._clock_s = clock_s

    @property
    def suppressed(self) -> int:
        return self.limiter.suppressed_total

    def log(self, level: int, cause: Hashable, msg: str, *args: object) -> bool:
        """Write one line of ``cause`` at ``level`` if allowed; True when written."""
        if not self.logger.isEnabledFor(level):
            return False
        before = self.limiter.admit(cause, self._clock_s())
        if before is None:
            return False
        if before:
            msg = f"{msg} (%d similar suppressed)"
            args = (*args, before)
        self.logger.log(level, msg, *args, stacklevel=2)
        return True

    def warning(self, cause: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, cause, msg, *args)

    def error(self, cause: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, cause, msg, *args)

    def info(self, cause: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, cause, msg, *args)
