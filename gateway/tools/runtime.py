"""What every command shares: logging, the event loop with signal handling, capture options,
the gateway token options of the commands that connect to a gateway, option types that
validate, and the one-line answer to a user's mistake.

A mistake of the user's (a bad option value, a port in use, a missing file) is answered
with one line on stderr naming what to change and exit status 2: argument types raise
``argparse.ArgumentTypeError`` (the :class:`Parser` prints it in one line), commands raise
:class:`UsageError`, which ``mdgateway`` (:func:`gateway.tools.cli.main`) prints. A server
that cannot bind its address raises :class:`~gateway.wire.config.ListenError`;
:func:`run_loop` turns it into a UsageError. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Final
from typing import NoReturn
from typing import TypeVar

import msgspec

from gateway.wire.config import LOG_FORMATS
from gateway.wire.config import LOG_LEVELS
from gateway.wire.config import MAX_PORT
from gateway.wire.config import ListenerLost
from gateway.wire.config import ListenError
from gateway.wire.tokens import TokenError
from gateway.wire.tokens import read_token_file
from gateway.wire.tokens import split_token

if TYPE_CHECKING:
    from gateway.io.capture_writer import CaptureWriter


_E = TypeVar("_E", bound=BaseException)


class UsageError(Exception):
    """A mistake of the user's; the message names what to change. The command exits 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (with where to find the usage), and
    whose help shows each option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its
    default or there is none to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
        ):
            return text
        return text + " (default: %(default)s)"


def log_level(text: str) -> str:
    """An argparse ``type``: a log level name of LOG_LEVELS, in any case."""
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r}; use one of {', '.join(LOG_LEVELS)}"
        )
    return text.upper()


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level`` (a name of LOG_LEVELS), as text lines or, with
    ``log_format`` ``json``, one JSON object a line (:class:`gateway.io.logs.JsonFormatter`);
    raises UsageError for another level or format."""
    if level.upper() not in LOG_LEVELS:
        raise UsageError(f"unknown log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
    if log_format not in LOG_FORMATS:
        raise UsageError(f"unknown log format {log_format!r}; use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from gateway.io.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # websockets logs every connection at INFO; the gateway logs what matters of them.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_loop(
    main: Coroutine[Any, Any, int], *, listen_hint: str = "", stop: asyncio.Event | None = None
) -> int:
    """Runs ``main`` on uvloop (asyncio where uvloop is missing) until it returns or
    SIGINT/SIGTERM arrives; a signal cancels it, so every task it started is stopped, and
    each further signal cancels it again: a stop that takes its time (the service draining
    its subscribers) ends at once on a second Ctrl-C. With ``stop``, the first signal sets
    it instead (``main`` ends its own way, e.g. with its report) and the next ones cancel.

    Returns 1 after one line on stderr when ``main`` fails with only ListenerLosts (however
    deep in exception groups; each logged where it was found). Raises UsageError when
    ``main`` fails with only UsageErrors and ListenErrors (as deep): the first one's
    message, ``listen_hint`` appended to a ListenError's (what to change, e.g. "; pick
    another --port").
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        return run(_until_signal(main, stop))
    except Exception as exc:
        lost = _only(exc, ListenerLost)
        if lost is not None:  # logged where it was found; not a bug: no traceback
            print(f"mdgateway: {lost}", file=sys.stderr)
            return 1
        mistake = users_mistake(exc)
        if mistake is None:
            raise
        if isinstance(mistake, ListenError):
            raise UsageError(f"{mistake}{listen_hint}") from None
        raise mistake from None


#: The signal on which ``mdgateway run`` writes every thread's Python stack to stderr.
STACK_DUMP_SIGNAL: Final = signal.SIGUSR1


@contextlib.contextmanager
def stack_dumps(signum: int = STACK_DUMP_SIGNAL, file: Any = None) -> Iterator[None]:
    """Within the block, ``signum`` writes the Python stack of every thread to ``file``
    (a file object with a descriptor; None: stderr) and the process goes on.

    The dump is written by :mod:`faulthandler` from the signal handler itself, not by the
    event loop, so it answers while the loop is blocked: what a gateway that stopped
    answering is doing (``kill -USR1 PID``). The handler is removed when the block ends.
    With no ``file`` and a ``sys.stderr`` that has no descriptor (the gateway run inside
    another program that captures it), the process's original stderr is written to.
    """
    if file is None:
        file = sys.stderr
        try:
            file.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation included
            file = sys.__stderr__
    if file is None:  # no stderr at all: nowhere to write a dump
        yield
        return
    faulthandler.register(signum, file=file, all_threads=True)
    try:
        yield
    finally:
        faulthandler.unregister(signum)


def _only(exc: BaseException, kind: type[_E]) -> _E | None:
    """``exc`` when it is a ``kind``, or the first of an exception group of nothing else."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_only(inner, kind) for inner in exc.exceptions]
        if found and all(one is not None for one in found):
            return found[0]
    return None


def users_mistake(exc: BaseException) -> UsageError | ListenError | None:
    """``exc`` when it is a UsageError or ListenError, or the first of an exception group
    that holds nothing else; None otherwise."""
    if isinstance(exc, UsageError | ListenError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [users_mistake(inner) for inner in exc.exceptions]
        if found and all(mistake is not None for mistake in found):
            return found[0]
    return None


async def _until_signal(main: Coroutine[Any, Any, int], stop: asyncio.Event | None) -> int:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.TaskGroup() as tasks:
            work = tasks.create_task(main)

            def on_signal() -> None:
                if stop is not None and not stop.is_set():
                    stop.set()
                else:
                    work.cancel()

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
            await asyncio.wait({work})
            if not work.cancelled() and work.exception() is None:
                return work.result()  # a failure is the task group's to raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    # After the stop's own log lines: the command's last word.
    print("mdgateway: stopped by signal", file=sys.stderr)
    return 0


def toml_strings(values: Iterable[str]) -> str:
    """A TOML array of strings, for the configurations the tools write."""
    # JSON strings are TOML basic strings.
    return "[" + ", ".join(msgspec.json.encode(v).decode() for v in values) + "]"


def make_capture(directory: Path | None) -> CaptureWriter | None:
    """The capture writer of ``--capture DIR``, or None. Creates DIR; raises UsageError
    when it cannot be created or written to."""
    if directory is None:
        return None
    from gateway.io.capture_writer import CaptureWriter

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--capture {directory}: a file, not a directory") from None
    except OSError as exc:
        raise UsageError(f"--capture {directory}: {exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--capture {directory}: the directory is not writable")

    return CaptureWriter(directory)


def add_capture_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--capture",
        type=Path,
        metavar="DIR",
        help="record every raw upstream frame, connection event and REST snapshot into DIR "
        "(docs/capture-format.md); `mdgateway verify DIR` reads it",
    )


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number no less than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text!r}")
        return value

    return parse


def int_between(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``minimum`` to ``maximum``."""
    at_least = int_at_least(minimum)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}: {text!r}")
        return value

    return parse


#: An argparse ``type``: a TCP port, 0 to 65535 (0: any free port).
port_number: Final = int_between(0, MAX_PORT)


def seconds(*, positive: bool) -> Callable[[str], float]:
    """An argparse ``type``: a finite number of seconds, > 0 when ``positive``, else >= 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "more than 0" if positive else "at least 0"
            raise argparse.ArgumentTypeError(f"must be {bound} seconds: {text!r}")
        return value

    return parse


def add_seconds_argument(
    parser: argparse.ArgumentParser,
    flag: str,
    help: str,
    *,
    default: float | None = None,
    positive: bool = True,
) -> None:
    """Adds the option ``flag S``: a number of seconds (:func:`seconds`), > 0 when
    ``positive``, else >= 0; ``default`` when not given."""
    parser.add_argument(
        flag, type=seconds(positive=positive), default=default, metavar="S", help=help
    )


# --- the gateway's token ------------------------------------------------------------------

#: The environment variable the commands that connect to a gateway read its token from.
TOKEN_ENV: Final = "MDGATEWAY_TOKEN"


def add_gateway_url_argument(parser: argparse.ArgumentParser) -> None:
    """Adds the positional ``url``: the gateway, in any form ``top.gateway_urls`` reads."""
    parser.add_argument(
        "url",
        help="the gateway: its base URL (http://127.0.0.1:8765, ws://127.0.0.1:8765/ or "
        "127.0.0.1:8765) or its Unix socket (unix:/run/mdgateway.sock)",
    )


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--token TOKEN`` and ``--token-file PATH``: the gateway's ``server.token``
    (:func:`gateway_token` says which one is sent)."""
    parser.add_argument(
        "--token",
        help="the gateway's server.token, sent as Authorization: Bearer TOKEN; on the command "
        f"line it is visible to every local user (ps): prefer --token-file or {TOKEN_ENV}",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="a file whose first line is the gateway's server.token",
    )


def gateway_token(
    url: str, token: str | None, token_file: Path | None, environ: Mapping[str, str]
) -> tuple[str, str | None]:
    """``url`` without its ``?token=``, and the token to send to the gateway: ``token``
    (``--token``), else the first line of ``token_file`` (``--token-file``), else the
    URL's ``?token=``, else ``environ[TOKEN_ENV]`` (unless empty), else None. Raises
    UsageError for an empty ``--token``, and for a token file that cannot be read or whose
    first line is empty."""
    url, url_token = split_token(url)
    if token is not None:
        if not token.strip():
            raise UsageError("--token: empty; give the gateway's server.token")
        return url, token.strip()
    if token_file is not None:
        try:
            return url, read_token_file(token_file)
        except TokenError as exc:
            raise UsageError(f"--token-file: {exc}") from None
    if url_token is not None:
        return url, url_token
    return url, environ.get(TOKEN_ENV, "").strip() or None


def url_and_token(args: argparse.Namespace) -> tuple[str, str | None]:
    """:func:`gateway_token` of the ``url`` and :func:`add_token_arguments` options of
    ``args``, in the process's environment."""
    return gateway_token(args.url, args.token, args.token_file, os.environ)
