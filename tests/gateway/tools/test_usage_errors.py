"""A user's mistake is answered in one line on stderr with exit status 2, never a traceback:
bad option values (in process, through ``mdgateway``'s parser) and a port already in use
(each command as a subprocess, against a port held by a test socket)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.tools.cli import main
from gateway.tools.demo import PORT_BASE

ROOT = Path(__file__).resolve().parents[3]
SPOT_DIFF = (
    b'{"stream":"btcusdt@depth@100ms","data":'
    b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}}'
)


def _answer(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The exit status of ``mdgateway argv`` run in process, its stdout and its stderr."""
    try:
        code = main(argv)
    except SystemExit as stopped:
        assert isinstance(stopped.code, int)
        code = stopped.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["demo", "--port", "70000"], "--port: must be at most 65535"),
        (["demo", "--port", "-1"], "--port: must be at least 0"),
        (["demo", "--duration", "0"], "--duration: must be more than 0 seconds"),
        (["demo", "--duration", "soon"], "--duration: not a number of seconds"),
        (["demo", "--outage", "-1"], "--outage: must be at least 0 seconds"),
        (["demo", "--fault-every", "0"], "--fault-every: must be more than 0 seconds"),
        (["demo", "--endpoints", "1"], "--endpoints: must be at least 2"),
        (["demo", "--venues", "foo"], "unknown venue(s) foo"),
        (["demo", "--log-level", "verbose"], "unknown log level 'verbose'"),
        (["sim", "--venues", "foo,binance"], "unknown venue(s) foo"),
        (["sim", "--endpoints", "0"], "--endpoints: must be at least 1"),
        (["sim", "--endpoints", "9"], "--endpoints: must be at most 8"),
        (["sim", "--faults", "ep0: explode@1"], "bad --faults"),
        (["sim", "--faults", "ep5: close@1"], "ep5 does not exist (3 endpoints)"),
        (["sim", "--port", "65500"], "--port: must be at most 65467"),
        (["run", "--config", "deploy/sim-binance.toml", "--log-level", "verbose"], "verbose"),
        (["run", "--config", "deploy/sim-binance.toml", "--port", "70000"], "65535"),
        (["run", "--config", "missing.toml"], "missing.toml: cannot read"),
        (["run", "--config", "deploy/sim-binance.toml", "--host", "no host"], "$.server.host"),
        (["replay", "missing.ndjson"], "missing.ndjson"),
        (["replay", "--port", "65536", "x"], "--port: must be at most 65535"),
        (["replay", "--rest-port", "-5", "x"], "--rest-port: must be at least 0"),
        (["verify", "missing.gz"], "missing.gz"),
        (["verify", "--depth", "-1", "x"], "--depth: must be at least 0"),
        (
            ["tap", "ws://127.0.0.1:9/", "--symbol", "x", "--duration", "0"],
            "--duration: must be more than 0 seconds",
        ),
        (
            ["tap", "ws://127.0.0.1:9/", "--symbol", "x", "--duration", "nan"],
            "--duration: must be more than 0 seconds",
        ),
        (["top", "http://127.0.0.1:9", "--interval", "0"], "--interval: must be more than 0"),
        (["top", "http://127.0.0.1:9", "--timeout", "soon"], "--timeout: not a number of"),
        (["tap", "ws://127.0.0.1:9/", "--symbol", "x", "--duration", "1"], "cannot connect"),
    ],
)
def test_a_mistake_is_one_line_naming_what_to_change_and_exit_2(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, _, err = _answer(argv, capsys)
    assert code == 2
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"mdgateway {argv[0]}: ") and names in err
    # The simulated venues are not only the demo's.
    assert "the demo" not in err


def test_a_snapshot_limit_the_venue_refuses_stops_run_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused at start-up, not at the venue's first REST fetch (OKX: its first resync)."""
    config = tmp_path / "okx.toml"
    config.write_text(
        '[[venues]]\nvenue = "okx"\nsymbols = ["BTC-USDT"]\n'
        'endpoints = ["ws://127.0.0.1:9451/ws/v5/public"]\n'
        'rest = ["http://127.0.0.1:9459"]\nsnapshot_limit = 500\n'
    )
    code, out, err = _answer(["run", "--config", str(config), "--port", "0"], capsys)
    assert code == 2 and out == ""
    assert err == (
        f"mdgateway run: bad configuration: {config}: $.venues[0].snapshot_limit: "
        "okx's REST snapshot limit must be 1..400, got 500\n"
    )


@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_capture_directory_that_cannot_be_created_is_one_line(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    options = {
        "run": ["--config", "deploy/sim-binance.toml", "--port", "0"],
        "demo": ["--venues", "binance", "--no-view", "--port", "0", "--duration", "30"],
    }[command]
    code, _, err = _answer([command, *options, "--capture", str(not_a_directory)], capsys)
    assert code == 2
    assert err == f"mdgateway {command}: --capture {not_a_directory}: a file, not a directory\n"


def test_help_texts_show_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    expected = {
        "demo": ["(default: 8765)", "(default: 3)", "(default: 1.5)", "(default: 4.0)"],
        "sim": ["(default: 3)", "(default: INFO)", "binance,okx,kraken"],
        "replay": ["(default: 1)", "(default: 0)", "(default: 1.0)"],
        "tap": ["(default: until Ctrl-C)", "(default: the full book)"],
        "verify": ["(default: 20)", "(default: ERROR)"],
        "top": ["(default: 1.0)", "(default: 5.0)"],
    }
    for command, defaults in expected.items():
        code, out, _ = _answer([command, "--help"], capsys)
        assert code == 0
        for default in defaults:
            assert default in " ".join(out.split()), (command, default)
        assert "(default: None)" not in out and "(default: False)" not in out


def test_verify_help_names_every_capture_format(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.capture import FORMATS

    code, out, _ = _answer(["verify", "--help"], capsys)
    assert code == 0
    out = " ".join(out.split())
    assert len(FORMATS) == 6
    for spec in FORMATS:
        assert spec.format.value in out and " ".join(spec.expected.split()) in out


def test_verify_json_ok_is_true_exactly_when_the_exit_code_is_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_snapshot = tmp_path / "frames.ndjson"
    no_snapshot.write_bytes(SPOT_DIFF + b"\n")
    assert main(["verify", str(no_snapshot), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert next(iter(doc)) == "ok" and doc["ok"] is False


def test_verify_json_ok_on_a_clean_capture(
    real_data: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = real_data("binance/cryptofeed/BINANCE.ws.1.0")
    assert main(["verify", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


# --- a port already in use ------------------------------------------------------------------


@contextlib.contextmanager
def _held_port(port: int = 0) -> Iterator[int]:
    """A listening TCP socket on 127.0.0.1 (``port`` 0: any free); yields its port. A
    fixed port already held by another process is in use all the same."""
    with socket.socket() as held:
        with contextlib.suppress(OSError):
            held.bind(("127.0.0.1", port))
            held.listen()
        yield held.getsockname()[1] if port == 0 else port


def _stderr_of(argv: list[str]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    return result.returncode, result.stderr


def _assert_in_use(code: int, err: str, port: int, what_to_change: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "ExceptionGroup" not in err, err
    # The error is the last line; replay may say what it loaded, and warn about it, first.
    *before, last = err.strip().splitlines()
    assert all(line.startswith(("loaded ", "warning: ")) for line in before), err
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in last
    assert what_to_change in last


@pytest.mark.parametrize(
    ("argv", "what_to_change"),
    [
        (["run", "--config", "deploy/sim-binance.toml", "--port", "{port}"], "--host/--port"),
        (["demo", "--venues", "binance", "--no-view", "--port", "{port}"], "another --port"),
        (["replay", "{capture}", "--port", "{port}"], "--port, --rest-port"),
    ],
)
def test_a_port_in_use_is_one_line(tmp_path: Path, argv: list[str], what_to_change: str) -> None:
    capture = tmp_path / "frames.ndjson"
    capture.write_bytes(SPOT_DIFF + b"\n")
    with _held_port() as port:
        code, err = _stderr_of([a.format(port=port, capture=capture) for a in argv])
    _assert_in_use(code, err, port, what_to_change)


def test_sim_on_a_port_in_use_is_one_line() -> None:
    first = PORT_BASE + 1  # sim's first Binance endpoint
    with _held_port(first):
        code, err = _stderr_of(["sim", "--venues", "binance"])
    _assert_in_use(code, err, first, "pass another --port (0: any free ports)")
