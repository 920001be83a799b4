"""The Unix domain socket listener (``server.unix_path``): the same protocol as TCP for
GatewayClient and tap (``unix:/path``), owner-only permissions, a stale socket file
replaced, a live one refused, the file removed on shutdown."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.io.client import BookEvent
from gateway.io.client import Event
from gateway.io.client import GatewayClient
from gateway.io.fanout import Fanout
from gateway.tools.tap import Tap
from gateway.wire.config import ListenError
from tests.harness import started

from .fanout_helpers import KEY
from .fanout_helpers import live_fanout

BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1"), ("101.00", "2")]


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A socket path in a fresh directory short enough for AF_UNIX (108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="mdg-", dir="/tmp") as directory:
        yield Path(directory) / "gw.sock"


def _exists(path: Path) -> bool:
    return path.exists()


async def _next_book(events: AsyncIterator[Event]) -> BookEvent:
    while not isinstance(event := await anext(events), BookEvent):
        pass
    return event


async def _serving(tasks: asyncio.TaskGroup, fanout: Fanout, path: Path) -> asyncio.Task[None]:
    """Start ``fanout.serve`` on ``path`` (and a loopback port) in ``tasks``; returns its task
    once it listens."""
    return await started(
        tasks, lambda ready: fanout.serve("127.0.0.1", 0, ready, unix_path=str(path))
    )


async def test_client_and_tap_over_the_unix_socket_and_the_file_goes_with_the_server(
    sock_path: Path,
) -> None:
    view, fanout = live_fanout(BIDS, ASKS)
    async with asyncio.TaskGroup() as tasks:
        server = await _serving(tasks, fanout, sock_path)
        assert fanout.unix_path == str(sock_path)
        assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
        url = f"unix:{sock_path}"
        async with GatewayClient(url, [KEY], reconnect=False) as client:
            events = aiter(client)
            assert (await _next_book(events)).kind == "snapshot"
            fanout.publish([view.delta(KEY, bids=[("99.90", "3")])])
            event = await _next_book(events)
            assert event.kind == "delta" and event.seq == 1
            assert event.book.bids() == [("100.00", "1"), ("99.90", "3"), ("99.50", "2")]
            assert [s.remote for s in fanout.subscriber_stats()] == ["unix socket"]
        report = await Tap(url, KEY).run(duration_s=0.2)
        assert report.snapshots == 1 and report.status == "live"
        server.cancel()
    assert not _exists(sock_path), "removed on shutdown"
    assert fanout.unix_path is None


async def test_the_unix_socket_answers_any_host_and_tcp_does_not(sock_path: Path) -> None:
    _view, fanout = live_fanout(BIDS, ASKS)
    request = b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    async with asyncio.TaskGroup() as tasks:
        server = await _serving(tasks, fanout, sock_path)
        heads = []
        for opened in (
            asyncio.open_unix_connection(str(sock_path)),
            asyncio.open_connection("127.0.0.1", fanout.port),
        ):
            reader, writer = await opened
            writer.write(request)
            heads.append((await reader.read()).partition(b"\r\n")[0])
            writer.close()
            await writer.wait_closed()
        server.cancel()
    assert heads == [b"HTTP/1.1 200 OK", b"HTTP/1.1 421 Misdirected Request"]
    assert fanout.stats.http_refused == {421: 1}


@pytest.fixture
def stale_sock_path(sock_path: Path) -> Path:
    """``sock_path`` left by a server that died: the file stays, nobody listens."""
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))
    dead.close()
    assert sock_path.exists()
    return sock_path


async def test_a_stale_socket_file_is_replaced(stale_sock_path: Path) -> None:
    _view, fanout = live_fanout(BIDS, ASKS)
    async with asyncio.TaskGroup() as tasks:
        server = await _serving(tasks, fanout, stale_sock_path)
        async with GatewayClient(f"unix:{stale_sock_path}", [KEY], reconnect=False) as client:
            assert (await _next_book(aiter(client))).kind == "snapshot"
        server.cancel()


async def test_a_live_server_on_the_path_is_refused_and_keeps_serving(sock_path: Path) -> None:
    _view, first = live_fanout(BIDS, ASKS)
    async with asyncio.TaskGroup() as tasks:
        server = await _serving(tasks, first, sock_path)
        _view2, second = live_fanout(BIDS, ASKS)
        with pytest.raises(ListenError, match="a server is running on it"):
            await second.serve("127.0.0.1", 0, unix_path=str(sock_path))
        assert _exists(sock_path)
        async with GatewayClient(f"unix:{sock_path}", [KEY], reconnect=False) as client:
            assert (await _next_book(aiter(client))).kind == "snapshot"
        server.cancel()
    assert not _exists(sock_path)


def _text(path: Path) -> str:
    return path.read_text()


@pytest.fixture
def file_path(sock_path: Path) -> Path:
    """``sock_path`` holding a regular file, ``not a socket``."""
    sock_path.write_text("not a socket")
    return sock_path


async def test_a_file_that_is_not_a_socket_is_refused_and_kept(file_path: Path) -> None:
    _view, fanout = live_fanout(BIDS, ASKS)
    with pytest.raises(ListenError, match="not a socket"):
        await fanout.serve("127.0.0.1", 0, unix_path=str(file_path))
    assert _text(file_path) == "not a socket"
