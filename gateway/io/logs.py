"""Log helpers for the shells: lines limited per cause (see :mod:`gateway.core.lograte`),
for log lines a peer can trigger at will (refused subscribers, bad frames, failing
endpoints); and :class:`JsonFormatter`, one JSON object per line for log collectors.

Log calls give the venue, connection and symbol they concern as record attributes,
``log.warning(..., extra={"venue": ..., "connection": ...})``; the JSON lines carry them
as fields (:data:`CONTEXT_FIELDS`), the text lines do not show them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, datetime
from typing import Final

import orjson

from gateway.core.lograte import LogLimiter

#: Record attributes a JSON line carries as fields when the log call set them (``extra=``).
CONTEXT_FIELDS: Final = ("venue", "connection", "endpoint", "symbol", "subscriber")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line: ``time`` (UTC, ISO 8601 with
    microseconds), ``level``, ``logger``, ``message``, then those of :data:`CONTEXT_FIELDS`
    the call gave (neither None nor empty), and ``exception`` / ``stack`` (their text)
    where the record has them. Values that are not JSON types are written as their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in CONTEXT_FIELDS:
            value = fields.get(name)
            if value is not None and value != "":
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


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

    def log(
        self,
        level: int,
        cause: Hashable,
        msg: str,
        *args: object,
        extra: Mapping[str, object] | None = None,
    ) -> bool:
        """Write one line of ``cause`` at ``level`` if allowed (``extra``: the record's
        context fields, as for :meth:`logging.Logger.log`); True when written."""
        if not self.logger.isEnabledFor(level):
            return False
        before = self.limiter.admit(cause, self._clock_s())
        if before is None:
            return False
        if before:
            msg = f"{msg} (%d similar suppressed)"
            args = (*args, before)
        self.logger.log(level, msg, *args, extra=extra, stacklevel=2)
        return True

    def warning(
        self,
        cause: Hashable,
        msg: str,
        *args: object,
        extra: Mapping[str, object] | None = None,
    ) -> bool:
        return self.log(logging.WARNING, cause, msg, *args, extra=extra)

    def error(
        self,
        cause: Hashable,
        msg: str,
        *args: object,
        extra: Mapping[str, object] | None = None,
    ) -> bool:
        return self.log(logging.ERROR, cause, msg, *args, extra=extra)

    def info(
        self,
        cause: Hashable,
        msg: str,
        *args: object,
        extra: Mapping[str, object] | None = None,
    ) -> bool:
        return self.log(logging.INFO, cause, msg, *args, extra=extra)
