"""Log helpers for the shells: lines limited per cause (see :mod:`gateway.core.lograte`),
for log lines a peer can trigger at will (refused subscribers, bad frames, failing
endpoints); :class:`JsonFormatter`, one JSON object per line for log collectors; and
file-descriptor exhaustion, logged once per episode (:class:`FdExhaustion`); and
:class:`RedactSecrets`, which keeps subscriber tokens and URL passwords out of the lines
of the loggers it is on (:func:`redact_secrets`).

Log calls give the venue, connection and symbol they concern as record attributes,
``log.warning(..., extra={"venue": ..., "connection": ...})``; the JSON lines carry them
as fields (:data:`CONTEXT_FIELDS`), the text lines do not show them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from typing import Any
from typing import Final

import orjson

from gateway.core.lograte import AtLevel
from gateway.core.lograte import LimitedLogger
from gateway.core.lograte import LogLimiter
from gateway.core.stats import FdExhaustionStats
from gateway.io.changes import StateChanges
from gateway.wire.tokens import redact

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
            # exc_text when a filter set it (RedactSecrets: the traceback, redacted).
            line["exception"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message or traceback holds a token value, a bearer
    credential, an ``Authorization`` header value or a URL's password
    (:func:`gateway.wire.tokens.redact`)
    with ``***`` in their place; every record passes. On a logger, it sees the records
    logged on that logger (websockets logs request lines and headers at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format: logging reports it when it emits
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
        return True


_FORMATTER: Final = logging.Formatter()
_REDACT_SECRETS: Final = RedactSecrets()


def redact_secrets(*loggers: logging.Logger) -> None:
    """Puts :class:`RedactSecrets` on each of ``loggers`` (once: calling again adds none)."""
    for logger in loggers:
        if _REDACT_SECRETS not in logger.filters:
            logger.addFilter(_REDACT_SECRETS)


class LimitedLog:
    """A logger whose lines are rate-limited per cause, read on ``clock_s``.

    ``log.warning(cause, msg, *args)`` is :class:`~gateway.core.lograte.LimitedLogger`'s
    line at the clock's reading: written with `` (N similar suppressed)`` appended when
    lines of that cause were dropped before it, or counted in :attr:`suppressed` and
    dropped.
    """

    def __init__(
        self,
        logger: logging.Logger,
        limiter: LogLimiter | None = None,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines = LimitedLogger(logger, limiter)
        self._clock_s = clock_s

    @property
    def suppressed(self) -> int:
        return self.lines.limiter.suppressed_total

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
        return self.lines.log(level, cause, self._clock_s(), msg, *args, extra=extra, stacklevel=2)

    info = AtLevel(logging.INFO, log)
    warning = AtLevel(logging.WARNING, log)
    error = AtLevel(logging.ERROR, log)


#: The errnos of a process (EMFILE) or the system (ENFILE) out of file descriptors.
FD_EXHAUSTION_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE})


def fd_exhaustion_error(exc: BaseException) -> OSError | None:
    """The EMFILE/ENFILE error ``exc`` is or was caused by (httpx wraps it), else None."""
    seen: BaseException | None = exc
    for _ in range(8):  # a cause chain is short; a cycle must not loop
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in FD_EXHAUSTION_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class FdExhaustion:
    """Episodes of file-descriptor exhaustion: every connect or accept fails while the
    process is out of descriptors, so each failure is counted and only the first of an
    episode is logged, as an ERROR saying what to do. The episode ends at the next
    successful connect or accept (:meth:`succeeded`).

    One instance serves the whole process (:data:`FD_EXHAUSTION`): the descriptors are
    the process's. :meth:`watch` routes the event loop's accept failures here (asyncio
    reports them; uvloop does not), and :meth:`probe`, called often, finds an exhaustion
    on any loop by opening a descriptor at most every ``probe_interval_s``.

    asyncio's loop retries accepting a second after each failed accept (one turn of its
    accept loop can fail up to its backlog of times), even when the server has closed
    since: such a retry fails on the closed socket. :meth:`watch` counts those in
    ``stats.retries_after_close`` instead of letting the loop log them as errors, so a
    server stopped during or just after an episode logs nothing more.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        probe_interval_s: float = 1.0,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.probe_interval_s = probe_interval_s
        self._clock_s = clock_s
        self._next_probe_s = 0.0
        #: In an episode: failures since the last success.
        self.failing = 0
        #: Episodes and failures since start, and asyncio's accept retries that found their
        #: server closed (not failures).
        self.stats = FdExhaustionStats()
        #: Notified after every failure counted and every episode's end.
        self.changes = StateChanges()

    def failed(self, exc: BaseException, doing: str) -> bool:
        """Counts ``exc`` when it is a descriptor exhaustion (True), logging the first of
        an episode; False, and nothing counted, for any other error."""
        error = fd_exhaustion_error(exc)
        if error is None:
            return False
        self.stats.failures += 1
        self.failing += 1
        if self.failing == 1:
            self.stats.episodes += 1
            self.logger.error(
                "out of file descriptors %s (%s): connections fail until descriptors are "
                "free; raise the limit (ulimit -n, systemd LimitNOFILE=)",
                doing,
                error.strerror or errno.errorcode.get(error.errno or 0, "?"),
            )
        self.changes.notify()
        return True

    def succeeded(self) -> None:
        """A connect or accept succeeded: an episode in progress is over."""
        if self.failing:
            self.logger.warning("file descriptors available again after %d failures", self.failing)
            self.failing = 0
            self.changes.notify()

    def probe(self, doing: str) -> None:
        """Counts a failure (starting an episode) if no descriptor can be opened now;
        does nothing until ``probe_interval_s`` passed since the last probe."""
        now_s = self._clock_s()
        if now_s < self._next_probe_s:
            return
        self._next_probe_s = now_s + self.probe_interval_s
        try:
            fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if not self.failed(exc, doing):
                raise
            return
        os.close(fd)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Routes ``loop``'s descriptor-exhaustion reports (asyncio's accept loop reports
        them to the loop's exception handler, once a second while they last) here; every
        other report goes to the handler that was installed before. Idempotent."""
        previous = loop.get_exception_handler()
        if isinstance(previous, _FdExhaustionHandler) and previous.owner is self:
            return
        loop.set_exception_handler(_FdExhaustionHandler(self, previous))


class _FdExhaustionHandler:
    def __init__(
        self,
        owner: FdExhaustion,
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
    ) -> None:
        self.owner = owner
        self.previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException) and self.owner.failed(exc, "accepting subscribers"):
            return
        if isinstance(exc, ValueError) and _accept_retry_on_closed_socket(context):
            self.owner.stats.retries_after_close += 1
            self.owner.changes.notify()
            return
        if self.previous is None:
            loop.default_exception_handler(context)
        else:
            self.previous(loop, context)


def _accept_retry_on_closed_socket(context: dict[str, Any]) -> bool:
    """Whether ``context`` reports a call of the loop's ``_start_serving`` (the accept
    retry asyncio schedules after an accept out of descriptors) on a closed socket."""
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    args = getattr(handle, "_args", ())
    return getattr(callback, "__name__", "") == "_start_serving" and any(
        isinstance(arg, socket.socket) and arg.fileno() == -1 for arg in args
    )


#: The process's descriptor-exhaustion episodes (upstream connects, subscriber accepts).
FD_EXHAUSTION: Final = FdExhaustion(logging.getLogger("gateway.fd"))
