"""What the commands share: option types that validate, the one-line parser, and the event
loop that turns a user's mistake inside task groups into one UsageError."""

from __future__ import annotations

import argparse
import asyncio
import errno
import faulthandler
import io
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.tools.runtime import TOKEN_ENV
from gateway.tools.runtime import Parser
from gateway.tools.runtime import UsageError
from gateway.tools.runtime import gateway_token
from gateway.tools.runtime import int_between
from gateway.tools.runtime import log_level
from gateway.tools.runtime import port_number
from gateway.tools.runtime import run_loop
from gateway.tools.runtime import seconds
from gateway.tools.runtime import stack_dumps
from gateway.tools.runtime import users_mistake
from gateway.wire.config import ListenerLost
from gateway.wire.config import ListenError
from gateway.wire.config import listen_error


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (port_number, "0", 0),
        (port_number, "65535", 65535),
        (int_between(1, 8), "8", 8),
        (seconds(positive=True), "0.5", 0.5),
        (seconds(positive=False), "0", 0.0),
        (log_level, "debug", "DEBUG"),
    ],
)
def test_option_types_take_the_values_in_range(
    parse: Callable[[str], object], text: str, value: object
) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (port_number, "65536"),
        (port_number, "-1"),
        (port_number, "http"),
        (int_between(1, 8), "9"),
        (seconds(positive=True), "0"),
        (seconds(positive=True), "inf"),
        (seconds(positive=True), "nan"),
        (seconds(positive=False), "-0.1"),
        (log_level, "verbose"),
    ],
)
def test_option_types_refuse_the_others(parse: Callable[[str], object], text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text).strip("'")):
        parse(text)


def test_the_parser_answers_a_mistake_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = Parser(prog="mdgateway x")
    parser.add_argument("--port", type=port_number, default=8765, help="a port")
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--port", "70000"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "mdgateway x: argument --port: must be at most 65535: '70000' (see mdgateway x --help)\n"
    )
    assert "(default: 8765)" in parser.format_help()


def _in_use() -> ListenError:
    return listen_error(OSError(errno.EADDRINUSE, "Address already in use"), "127.0.0.1", 80)


def test_a_mistake_is_found_however_deep_in_exception_groups() -> None:
    usage = UsageError("bad")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [_in_use()]), usage])
    found = users_mistake(nested)
    assert isinstance(found, ListenError) and found.errno == errno.EADDRINUSE
    assert users_mistake(usage) is usage
    # A bug beside a mistake keeps its traceback.
    assert users_mistake(ExceptionGroup("g", [usage, RuntimeError("bug")])) is None
    assert users_mistake(RuntimeError("bug")) is None


def test_a_bind_failure_names_the_address_and_why() -> None:
    error = _in_use()
    assert str(error) == "cannot listen on 127.0.0.1:80: the port is already in use"
    assert isinstance(error, OSError)


async def _bind_in_a_task_group(port: int) -> int:
    async def listen() -> None:
        try:
            await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
        except OSError as exc:
            raise listen_error(exc, "127.0.0.1", port) from exc

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(listen())
        tasks.create_task(asyncio.sleep(30))
    return 0


def test_run_loop_turns_a_bind_failure_in_task_groups_into_one_usage_error() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(UsageError) as raised:
            run_loop(_bind_in_a_task_group(port), listen_hint="; pass another --port")
    assert str(raised.value) == (
        f"cannot listen on 127.0.0.1:{port}: the port is already in use; pass another --port"
    )


async def _bug() -> int:
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(asyncio.sleep(0, result=None))
        raise KeyError("a bug")


def test_run_loop_lets_a_bug_through() -> None:
    with pytest.raises(BaseExceptionGroup) as raised:
        run_loop(_bug())
    assert raised.group_contains(KeyError)


async def _listener_lost() -> int:
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(asyncio.sleep(0, result=None))
        raise ListenerLost("no longer listening for subscribers on 127.0.0.1:8765")


def test_run_loop_answers_a_lost_listener_with_one_line_and_exit_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_loop(_listener_lost()) == 1
    assert capsys.readouterr().err == (
        "mdgateway: no longer listening for subscribers on 127.0.0.1:8765\n"
    )


def _parked(release: threading.Event) -> None:
    release.wait()


def test_the_stack_dump_signal_writes_every_threads_stack_and_the_process_goes_on(
    tmp_path: Path,
) -> None:
    release = threading.Event()
    other = threading.Thread(target=_parked, args=(release,))
    other.start()
    try:
        with (tmp_path / "stacks.txt").open("w+") as out:
            with stack_dumps(signal.SIGUSR1, file=out):
                signal.raise_signal(signal.SIGUSR1)  # dumped by the handler before it returns
            text = Path(out.name).read_text()
    finally:
        release.set()
        other.join()
    assert "Current thread" in text
    assert "test_the_stack_dump_signal_writes_every_threads_stack" in text  # this thread
    assert "in _parked" in text  # and the other one


def test_the_stack_dump_goes_to_the_process_stderr_when_sys_stderr_has_no_descriptor(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The gateway run in a program that captures ``sys.stderr`` (a StringIO)."""
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    with stack_dumps(signal.SIGUSR2):
        signal.raise_signal(signal.SIGUSR2)
    assert "test_the_stack_dump_goes_to_the_process_stderr" in capfd.readouterr().err
    assert captured.getvalue() == ""


def test_the_stack_dump_signal_is_released_after_its_block(tmp_path: Path) -> None:
    with (tmp_path / "stacks.txt").open("w") as out, stack_dumps(signal.SIGUSR2, file=out):
        pass
    # unregister answers whether the signal was registered (typeshed types it None).
    still_registered = faulthandler.unregister(signal.SIGUSR2)  # type: ignore[func-returns-value]
    assert not still_registered


# --- the gateway's token: --token, --token-file, the URL, MDGATEWAY_TOKEN -----------------

URL = "ws://127.0.0.1:8765/"


@pytest.mark.parametrize(
    ("option", "file_text", "url", "environ", "expected"),
    [
        ("by-option", "by-file\n", f"{URL}?token=by-url", {TOKEN_ENV: "by-env"}, "by-option"),
        (None, " by-file \nrest\n", f"{URL}?token=by-url", {TOKEN_ENV: "by-env"}, "by-file"),
        (None, None, f"{URL}?token=by-url", {TOKEN_ENV: "by-env"}, "by-url"),
        (None, None, URL, {TOKEN_ENV: " by-env\n"}, "by-env"),
        (None, None, URL, {TOKEN_ENV: ""}, None),
        (None, None, URL, {}, None),
    ],
)
def test_the_token_sent_is_the_first_given_of_option_file_url_environment(
    tmp_path: Path,
    option: str | None,
    file_text: str | None,
    url: str,
    environ: dict[str, str],
    expected: str | None,
) -> None:
    token_file = None
    if file_text is not None:
        token_file = tmp_path / "token"
        token_file.write_text(file_text)
    # The URL is given back without its token, whichever token is sent.
    assert gateway_token(url, option, token_file, environ) == (URL, expected)


def test_a_token_option_that_gives_no_token_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for option, token_file, message in (
        ("", None, "--token: empty"),
        (None, tmp_path / "missing", "--token-file: cannot read .*missing"),
        (None, empty, "--token-file: .*first line is empty"),
    ):
        with pytest.raises(UsageError, match=message):
            gateway_token(URL, option, token_file, {TOKEN_ENV: "by-env"})


async def _signal_and_wait_to_be_cancelled(signum: int, stages: list[str]) -> None:
    """Signals itself with ``signum``, then waits, within a bound, to be cancelled by it
    (noted as ``stopped at once``): a signal that does not cancel fails it with
    TimeoutError."""
    os.kill(os.getpid(), signum)
    try:
        async with asyncio.timeout(10):
            await asyncio.Event().wait()
    except asyncio.CancelledError:
        stages.append("stopped at once")
        raise


async def _stop_with_a_long_drain(stages: list[str]) -> int:
    """Signals itself to stop, and in its stop waits (a drain) until signalled again; each
    wait bounded."""
    os.kill(os.getpid(), signal.SIGINT)
    try:
        async with asyncio.timeout(10):
            await asyncio.Event().wait()
    except asyncio.CancelledError:
        stages.append("stopping")
        await _signal_and_wait_to_be_cancelled(signal.SIGTERM, stages)
    return 1


def test_a_second_signal_ends_the_stop_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    stages: list[str] = []
    assert run_loop(_stop_with_a_long_drain(stages)) == 0
    assert stages == ["stopping", "stopped at once"]
    assert capsys.readouterr().err == "mdgateway: stopped by signal\n"


async def _end_on_stop(stop: asyncio.Event, stages: list[str]) -> int:
    """Signals itself; the first signal sets ``stop``, on which it starts its own ending (a
    report) that waits, within a bound, until signalled again: the second signal cancels."""
    os.kill(os.getpid(), signal.SIGINT)
    async with asyncio.timeout(10):
        await stop.wait()
    stages.append("ending")
    await _signal_and_wait_to_be_cancelled(signal.SIGINT, stages)
    return 1


def test_with_a_stop_event_the_first_signal_sets_it_and_the_second_cancels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stop = asyncio.Event()
    stages: list[str] = []
    assert run_loop(_end_on_stop(stop, stages), stop=stop) == 0
    assert stages == ["ending", "stopped at once"]
    assert capsys.readouterr().err == "mdgateway: stopped by signal\n"
