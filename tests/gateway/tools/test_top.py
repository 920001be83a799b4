"""``mdgateway top``: one frame of a running gateway on a simulated venue, and the errors
(a bad URL, a gateway not reachable, a URL that is not a gateway's, a token needed)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.http11 import Response

from feeds.sim.simulators import SimBinanceSpot
from gateway.core.model import SymbolState
from gateway.io.service import Service
from gateway.tools.cli import main
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config
from gateway.tools.runtime import UsageError
from gateway.tools.top import BookFollower
from gateway.tools.top import gateway_urls
from gateway.wire.protocol import Bbo
from gateway.wire.protocol import Error
from gateway.wire.protocol import ErrorCode
from gateway.wire.protocol import Ping
from gateway.wire.protocol import Pong
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Status
from gateway.wire.protocol import Subscribe
from gateway.wire.protocol import Subscribed
from gateway.wire.protocol import decode_request
from gateway.wire.protocol import encode_json
from tests.harness import running
from tests.harness import started
from tests.harness import wait_until
from tests.harness import ws_serving
from tests.subscriber import mdgateway_output
from tests.subscriber import serving

SYMBOLS = ("BTCUSDT", "ETHUSDT")
KEYS = [f"binance:{symbol}" for symbol in SYMBOLS]
TOKEN = "s3cret-token-0123456789"


async def _mdgateway(
    *args: str, columns: int, lines: int, token_env: str = ""
) -> tuple[int, str, str]:
    """``mdgateway ARGS`` in a terminal of ``columns`` x ``lines`` (``COLUMNS``, ``LINES``),
    ``MDGATEWAY_TOKEN`` set to ``token_env`` (empty: none)."""
    env = {"COLUMNS": str(columns), "LINES": str(lines), "MDGATEWAY_TOKEN": token_env}
    return await mdgateway_output(*args, timeout_s=30, env=env)


async def _frame_of_a_live_gateway(url: str, columns: int, lines: int) -> list[str]:
    """The lines of ``mdgateway top --once URL`` in a terminal of ``columns`` x ``lines``,
    checked to succeed, to fit the terminal and to head with the gateway ``ok`` and both
    symbols live."""
    code, out, err = await _mdgateway("top", "--once", url, columns=columns, lines=lines)
    assert code == 0, err
    frame = out.splitlines()
    assert 0 < len(frame) <= lines and all(len(line) <= columns for line in frame)
    assert frame[0].startswith(f"mdgateway top  {url}  ok  live 2/2")
    return frame


# --- a running gateway ------------------------------------------------------------------------


@pytest.mark.async_timeout_s(60)
async def test_once_shows_the_books_endpoints_and_subscribers_of_a_running_gateway() -> None:
    async with SimBinanceSpot(list(SYMBOLS), n_endpoints=2, seed=5, interval_s=0.02) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=SYMBOLS)
        config = demo_config([(binance, sim)], port=0)
        # Paused below: no stall may take the books out of live meanwhile.
        venues = [msgspec.structs.replace(v, stall_timeout_s=120.0) for v in config.venues]
        config = msgspec.structs.replace(config, venues=venues)
        async with serving(config, KEYS) as (service, subscriber):
            client = subscriber.client
            await subscriber.until(lambda: all(client.book(k) is not None for k in KEYS), 20)
            sim.pause()  # the books stay put: top must show exactly the gateway's top
            last = {key: sim.last_id(key.partition(":")[2]) for key in KEYS}
            await subscriber.until(lambda: subscriber.venue_ids == last, 10)

            lines = await _frame_of_a_live_gateway(
                f"http://127.0.0.1:{service.port}", columns=160, lines=50
            )
            for key in KEYS:
                row = next(line for line in lines if line.startswith(f"{key} "))
                book = service.books[key].book
                best_bid, best_ask = book.best_bid(), book.best_ask()
                assert best_bid is not None and best_ask is not None
                cells = row.split()
                assert cells[1] == "live"
                assert cells[2:6] == [*best_bid, *best_ask], row
            endpoints = lines[lines.index("Upstream endpoints") + 3 : lines.index("Subscribers")]
            assert [line.split()[:2] for line in endpoints] == [["0", "binance"], ["1", "binance"]]
            assert all(" up " in line and "ws://127.0.0.1:" in line for line in endpoints)
            # The strategy's subscriber and top's own, each with its lag.
            start = lines.index("Subscribers")
            assert "unsent" in lines[start + 1] and "behind for" in lines[start + 1]
            subscribers = lines[start + 3 :]
            assert len(subscribers) == 2 and all(" live " in line for line in subscribers)
            assert all("127.0.0.1:" in line for line in subscribers)

            # The same from its WebSocket URL, in 80 x 24: everything fits, nothing wraps.
            ws_url = f"ws://127.0.0.1:{service.port}/"
            lines = await _frame_of_a_live_gateway(ws_url, columns=80, lines=24)
            assert all(any(line.startswith(f"{key} ") for line in lines) for key in KEYS)
            assert "Upstream endpoints" in lines and "Subscribers" in lines


@pytest.mark.async_timeout_s(60)
async def test_a_gateway_with_a_token_is_read_with_token(tmp_path: Path) -> None:
    async with SimBinanceSpot(list(SYMBOLS), n_endpoints=2, seed=5, interval_s=0.02) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=SYMBOLS)
        config = demo_config([(binance, sim)], port=0)
        server = msgspec.structs.replace(config.server, token=TOKEN)
        config = msgspec.structs.replace(config, server=server)
        service = Service(config)
        async with running(service.run):
            url = f"http://127.0.0.1:{service.port}"
            code, _, err = await _mdgateway("top", "--once", url, columns=120, lines=40)
            assert (code, err) == (
                2,
                f"mdgateway top: the gateway at {url}/healthz needs a token (401): "
                "pass --token-file PATH or set MDGATEWAY_TOKEN\n",
            )
            token_file = tmp_path / "token"
            token_file.write_text(f"  {TOKEN}  \nnot the token\n")
            # Sent on every request and on the WebSocket: the books are there; the URL
            # shown is without the token.
            for args, token_env in (
                ((url, "--token-file", str(token_file)), ""),
                ((url,), TOKEN),
                ((f"{url}/?token={TOKEN}",), ""),
            ):
                code, out, err = await _mdgateway(
                    "top", "--once", *args, columns=120, lines=40, token_env=token_env
                )
                assert code == 0, err
                frame = out.splitlines()
                assert all(any(line.startswith(f"{key} ") for line in frame) for key in KEYS)
                assert "book stream" not in frame[0], "no error of the WebSocket"
                assert frame[0].startswith(f"mdgateway top  {url}"), frame[0]
                assert TOKEN not in out and TOKEN not in err


@pytest.mark.async_timeout_s(60)
async def test_a_gateway_is_read_on_its_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "gw.sock"
    async with SimBinanceSpot(list(SYMBOLS), n_endpoints=2, seed=5, interval_s=0.02) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=SYMBOLS)
        config = demo_config([(binance, sim)], port=0)
        server = msgspec.structs.replace(config.server, unix_path=str(socket_path))
        config = msgspec.structs.replace(config, server=server)
        async with serving(config, KEYS) as (_, subscriber):
            client = subscriber.client
            await subscriber.until(lambda: all(client.book(k) is not None for k in KEYS), 20)
            # The HTTP routes and the book stream both through the socket.
            lines = await _frame_of_a_live_gateway(f"unix:{socket_path}", columns=120, lines=40)
            assert "book stream" not in lines[0], "no error of the WebSocket"
            assert all(any(line.startswith(f"{key} ") for line in lines) for key in KEYS)
    code, _, err = await _mdgateway("top", "--once", f"unix:{socket_path}", columns=80, lines=24)
    assert (code, err.count("\n")) == (2, 1)
    assert err.startswith("mdgateway top: gateway not reachable at ")
    assert f" on unix:{socket_path}: " in err


@pytest.mark.async_timeout_s(40)
async def test_the_book_stream_follows_tops_and_marks_them_stale_when_the_gateway_goes() -> None:
    async with SimBinanceSpot(list(SYMBOLS), n_endpoints=2, seed=5, interval_s=0.02) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=SYMBOLS)
        service = Service(demo_config([(binance, sim)], port=0))
        async with asyncio.TaskGroup() as tasks:
            gateway = await started(tasks, service.run)
            urls = gateway_urls(f"ws://127.0.0.1:{service.port}/")
            follower = BookFollower(urls, KEYS, retry_s=0.05, timeout_s=5.0)
            following = tasks.create_task(follower.run())
            tops = follower.tops

            def live_with_a_top() -> bool:
                return all(
                    k in tops and tops[k].state is SymbolState.LIVE and tops[k].bid is not None
                    for k in KEYS
                )

            async with asyncio.timeout(20):
                await follower.ready.wait()
                await follower.changes.wait_until(live_with_a_top)
            assert follower.error is None
            position = tops[KEYS[0]].position
            assert position is not None and position[0] >= 1

            gateway.cancel()  # the gateway goes away: every symbol stale, the reason shown
            await wait_until(follower.changes, lambda: follower.error is not None)
            assert all(tops[k].state is SymbolState.STALE for k in KEYS)
            assert follower.error is not None and "book stream" in follower.error
            following.cancel()


def _scripted_gateway(
    answer: Callable[[Subscribe], list[ServerMessage]],
) -> Callable[[ServerConnection], Awaitable[None]]:
    """A scripted gateway's connection handler: a ping gets its pong, a subscribe what
    ``answer`` makes of it."""

    async def gateway(conn: ServerConnection) -> None:
        async for data in conn:
            request = decode_request(data)
            replies: list[ServerMessage] = []
            if isinstance(request, Ping):
                replies = [Pong(request.id)]
            elif isinstance(request, Subscribe):
                replies = answer(request)
            for reply in replies:
                await conn.send(encode_json(reply).decode())

    return gateway


async def test_a_subscribe_refused_as_rate_limited_is_sent_again_and_ready_waits_for_it() -> None:
    """A scripted gateway (a real one never refuses the first request of a connection)
    refuses top's first subscribe as ``rate_limited``: the follower sends it again after
    its backoff, and is ready only once that subscription is answered."""
    key = KEYS[0]
    subscribes: list[Subscribe] = []

    def answer(request: Subscribe) -> list[ServerMessage]:
        subscribes.append(request)
        if len(subscribes) == 1:
            return [Error(ErrorCode.RATE_LIMITED, "retry in 0.050 s")]
        return [
            Subscribed(request.symbols, request.channels, "gw-1"),
            Status(key, SymbolState.LIVE, ""),
            Bbo(key, 7, 3, ("100.0", "1"), ("100.5", "2")),
        ]

    async with ws_serving(_scripted_gateway(answer)) as server:
        port = server.sockets[0].getsockname()[1]
        urls = gateway_urls(f"ws://127.0.0.1:{port}/")
        follower = BookFollower(urls, [key], retry_s=0.05, timeout_s=5.0)
        async with asyncio.TaskGroup() as tasks:
            following = tasks.create_task(follower.run())
            async with asyncio.timeout(10):
                await follower.ready.wait()
            assert len(subscribes) == 2 and follower.error is None
            top = follower.tops[key]
            assert (top.state, top.bid, top.position) == (SymbolState.LIVE, ("100.0", "1"), (7, 3))
            assert follower.session.stats.retries == 1
            following.cancel()


async def test_the_book_stream_leaves_with_a_normal_close_when_top_stops() -> None:
    """top stopping (``--once`` done, Ctrl-C) is no failure of its own: the gateway sees a
    normal close (1000), not an internal error (1011)."""
    key = KEYS[0]
    close_codes: list[int | None] = []
    closed = asyncio.Event()

    def answer(request: Subscribe) -> list[ServerMessage]:
        return [
            Subscribed(request.symbols, request.channels, "gw-1"),
            Status(key, SymbolState.LIVE, ""),
        ]

    scripted = _scripted_gateway(answer)

    async def gateway(conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # its code is the assertion
            await scripted(conn)
        close_codes.append(conn.close_code)
        closed.set()

    async with ws_serving(gateway) as server:
        port = server.sockets[0].getsockname()[1]
        follower = BookFollower(
            gateway_urls(f"ws://127.0.0.1:{port}/"), [key], retry_s=0.05, timeout_s=5.0
        )
        following = asyncio.create_task(follower.run())
        async with asyncio.timeout(10):
            await follower.ready.wait()
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            await closed.wait()
        assert close_codes == [1000]


# --- errors -----------------------------------------------------------------------------------


def _answer(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stopped:
        assert isinstance(stopped.code, int)
        code = stopped.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["top", "ftp://127.0.0.1:8765"], "expected the gateway's base URL"),
        (["top", "--once", "--interval", "0", "http://127.0.0.1:9"], "--interval: must be"),
        # Port 9 (discard) on loopback: nothing listens there in the test environment.
        (["top", "--once", "http://127.0.0.1:9"], "gateway not reachable at http://127.0.0.1:9/"),
        # A URL's password is not shown.
        (["top", "ftp://desk:hunter2@127.0.0.1:8765"], "URL 'ftp://desk:***@127.0.0.1:8765'"),
        (["top", "--once", "http://desk:hunter2@127.0.0.1:9"], "at http://desk:***@127.0.0.1:9/"),
    ],
)
def test_a_bad_url_or_an_unreachable_gateway_is_one_line_and_exit_2(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _answer(argv, capsys)
    assert code == 2
    assert err.startswith("mdgateway top: ") and err.count("\n") == 1 and names in err, err
    assert "hunter2" not in err


def test_urls_of_every_accepted_form() -> None:
    for url in (
        "http://127.0.0.1:8765",
        "ws://127.0.0.1:8765/",
        "127.0.0.1:8765",
        "http://127.0.0.1:8765/metrics",
    ):
        urls = gateway_urls(url)
        assert (urls.http_base, urls.ws_url) == ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/")
    secure = gateway_urls("wss://gw.example/desk/?token=abc")
    assert (secure.http_base, secure.ws_url) == (
        "https://gw.example/desk",
        "wss://gw.example/desk/",
    )
    assert secure.token == "abc" and gateway_urls("https://gw.example", "t").token == "t"
    shown = repr(gateway_urls("https://desk:hunter2@gw.example/?token=abc"))
    assert "hunter2" not in shown and "abc" not in shown, shown
    assert "http_base='https://desk:***@gw.example'" in shown and "token='***'" in shown
    with pytest.raises(UsageError, match="base URL"):
        gateway_urls("mailto:someone")
    local = gateway_urls("unix:/run/gw.sock?token=abc")
    assert (local.uds, local.ws_url, local.token) == ("/run/gw.sock", "unix:/run/gw.sock", "abc")
    assert local.via == " on unix:/run/gw.sock" and gateway_urls("ws://h:1/").via == ""
    with pytest.raises(UsageError, match="unix:PATH"):
        gateway_urls("unix:")


@contextlib.asynccontextmanager
async def _http_server(status: http.HTTPStatus, body: bytes) -> AsyncIterator[str]:
    """A loopback HTTP server (not a gateway) answering every GET with ``status`` and
    ``body``, or 401 without ``Authorization: Bearer TOKEN``; yields its base URL."""

    def answer(conn: ServerConnection, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return conn.respond(http.HTTPStatus.UNAUTHORIZED, "token needed\n")
        return conn.respond(status, body.decode())

    async def never(conn: ServerConnection) -> None:
        raise AssertionError("no WebSocket was expected")

    async with ws_serving(never, process_request=answer) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"


async def _top_once(*args: str) -> tuple[int, str]:
    code, _, err = await _mdgateway("top", "--once", *args, columns=80, lines=24)
    return code, err


@pytest.mark.async_timeout_s(60)
async def test_a_url_that_is_not_a_gateway_and_a_token_needed_are_named() -> None:
    async with _http_server(http.HTTPStatus.NOT_FOUND, b"nothing here\n") as url:
        assert await _top_once(url) == (
            2,
            f"mdgateway top: the gateway at {url}/healthz needs a token (401): "
            "pass --token-file PATH or set MDGATEWAY_TOKEN\n",
        )
        code, err = await _top_once(url, "--token", "wrong")
        assert code == 2 and "refused the token (401): check --token-file" in err
        # The token is sent: past the 401, the answer is not a gateway's.
        assert await _top_once(url, "--token", TOKEN) == (
            2,
            f"mdgateway top: {url} is not an mdgateway gateway: "
            f"GET {url}/healthz answered 404 Not Found\n",
        )
    async with _http_server(http.HTTPStatus.OK, b"<html>hello</html>") as url:
        code, err = await _top_once(f"{url}/?token={TOKEN}")
        assert code == 2
        assert err.startswith(f"mdgateway top: {url} is not an mdgateway gateway: ")
