"""``mdgateway top URL``: a live terminal view of a running gateway.

The shell: every ``--interval`` it reads the gateway's ``/healthz``, ``/metrics`` and
``/subscribers`` over HTTP (httpx), and follows the top of every book over one WebSocket
subscription (``bbo`` channel, :class:`~gateway.wire.client_session.ClientSession`); what
is drawn is :func:`gateway.tools.top_model.top_frame`'s, in the terminal's size.

Errors that stop it with exit code 2 (one line on stderr): the URL is not a gateway's, the
gateway cannot be reached (which URL, and why), it wants a token (401). The token comes from
``--token``, ``--token-file``, the URL's ``?token=`` or ``MDGATEWAY_TOKEN``
(:func:`gateway.tools.runtime.gateway_token`) and is sent as ``Authorization: Bearer``,
never in a URL; the URL shown is without it. Once running, a failed read is shown in the
header and the last values stay on screen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http
import shutil
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.exceptions import ConnectionClosedOK
from websockets.exceptions import InvalidHandshake

from gateway.io.changes import StateChanges
from gateway.io.client import UNIX_SCHEME
from gateway.io.client import connect_gateway
from gateway.io.client import next_step
from gateway.io.fanout import SubscriberStats
from gateway.tools.runtime import TOKEN_ENV
from gateway.tools.runtime import UsageError
from gateway.tools.runtime import add_gateway_url_argument
from gateway.tools.runtime import add_seconds_argument
from gateway.tools.runtime import add_token_arguments
from gateway.tools.runtime import run_loop
from gateway.tools.runtime import url_and_token
from gateway.tools.top_model import NotAGateway
from gateway.tools.top_model import Reading
from gateway.tools.top_model import Samples
from gateway.tools.top_model import Top
from gateway.tools.top_model import check_health
from gateway.tools.top_model import parse_metrics
from gateway.tools.top_model import subscriber_rows
from gateway.tools.top_model import top_frame
from gateway.wire.client_session import BboEvent
from gateway.wire.client_session import ClientSession
from gateway.wire.client_session import GatewayError
from gateway.wire.client_session import StatusEvent
from gateway.wire.protocol import Ping
from gateway.wire.protocol import Pong
from gateway.wire.protocol import ProtocolError
from gateway.wire.protocol import decode_server_message
from gateway.wire.protocol import encode_json
from gateway.wire.tokens import Secret
from gateway.wire.tokens import bearer_headers
from gateway.wire.tokens import redact
from gateway.wire.tokens import redacted_repr
from gateway.wire.tokens import split_token

#: The URL schemes accepted → (HTTP scheme, WebSocket scheme) of the same gateway.
_SCHEMES = {
    "http": ("http", "ws"),
    "https": ("https", "wss"),
    "ws": ("http", "ws"),
    "wss": ("https", "wss"),
}
_PING_ID = "mdgateway-top"
#: The gateway's HTTP routes read here.
_ROUTES = ("/healthz", "/metrics", "/subscribers")


@redacted_repr
@dataclasses.dataclass(frozen=True, slots=True)
class GatewayUrls:
    """Where a gateway answers: ``http_base`` + ``/healthz`` etc., and ``ws_url``. Its
    ``repr`` shows no secret (the URLs redacted, the token a :class:`Secret`)."""

    http_base: str
    ws_url: str
    token: str | None
    #: The gateway's Unix socket (``server.unix_path``) the HTTP requests go through, or
    #: None: over TCP.
    uds: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and not isinstance(self.token, Secret):
            object.__setattr__(self, "token", Secret(self.token))

    @property
    def via(self) -> str:
        """How the HTTP URLs are reached, for messages: `` on unix:PATH`` or nothing."""
        return "" if self.uds is None else f" on {UNIX_SCHEME}{self.uds}"


def gateway_urls(url: str, token: str | None = None) -> GatewayUrls:
    """The HTTP base and WebSocket URL of the gateway at ``url`` (``http://``, ``https://``,
    ``ws://`` or ``wss://``, any path prefix kept; or its Unix socket, ``unix:PATH``); a
    ``?token=`` in it is the token when ``token`` is None. Raises UsageError for any other
    URL."""
    if url.startswith(UNIX_SCHEME):
        bare, url_token = split_token(url)
        path = bare[len(UNIX_SCHEME) :]
        if not path or "?" in path:
            raise UsageError(f"URL {redact(url)!r}: expected unix:PATH, the gateway's socket")
        return GatewayUrls("http://localhost", bare, url_token if token is None else token, path)
    parts = urlsplit(url if "://" in url else f"http://{url}")
    schemes = _SCHEMES.get(parts.scheme.lower())
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if schemes is None or not parts.hostname or not port_ok:
        raise UsageError(
            f"URL {redact(url)!r}: expected the gateway's base URL, e.g. http://127.0.0.1:8765 "
            "or ws://127.0.0.1:8765/"
        )
    if token is None:
        token = split_token(url)[1]
    path = parts.path.rstrip("/")
    for route in _ROUTES:  # the URL of one of its routes: the gateway's base is before it
        path = path.removesuffix(route)
    return GatewayUrls(
        f"{schemes[0]}://{parts.netloc}{path}", f"{schemes[1]}://{parts.netloc}{path}/", token
    )


# --- HTTP -------------------------------------------------------------------------------------


async def _get(
    client: httpx.AsyncClient, url: str, token_given: bool, via: str = ""
) -> httpx.Response:
    """GET ``url``; UsageError when it cannot be reached or refuses us (the URL shown
    without its password, ``via`` after it: how it is reached)."""
    try:
        response = await client.get(url)
    except httpx.TimeoutException:
        url = redact(url) + via
        raise UsageError(f"gateway not reachable at {url}: no answer in time") from None
    except httpx.HTTPError as exc:
        url = redact(url) + via
        reason = str(exc) or type(exc).__name__
        raise UsageError(f"gateway not reachable at {url}: {reason}") from None
    url = redact(url) + via
    if response.status_code == http.HTTPStatus.UNAUTHORIZED:
        if token_given:
            raise UsageError(
                f"the gateway at {url} refused the token (401): check --token-file, "
                f"--token or {TOKEN_ENV}"
            )
        raise UsageError(
            f"the gateway at {url} needs a token (401): pass --token-file PATH or set {TOKEN_ENV}"
        )
    if response.status_code == http.HTTPStatus.FORBIDDEN:
        raise UsageError(f"the gateway at {url} refused the request (403 Forbidden)")
    return response


def _not_a_gateway(url: str, why: str) -> UsageError:
    return UsageError(f"{redact(url)} is not an mdgateway gateway: {why}")


async def read_http(
    client: httpx.AsyncClient, urls: GatewayUrls
) -> tuple[Samples, dict[str, Any], list[SubscriberStats] | None]:
    """``(metrics samples, /healthz document, /subscribers list or None)``. Raises
    UsageError when the gateway cannot be read or is not a gateway."""
    token_given = urls.token is not None
    health_url = f"{urls.http_base}/healthz"
    response = await _get(client, health_url, token_given, urls.via)
    if response.status_code not in (http.HTTPStatus.OK, http.HTTPStatus.SERVICE_UNAVAILABLE):
        raise _not_a_gateway(
            urls.http_base + urls.via, f"GET {health_url} answered {_status(response)}"
        )
    try:
        health = dict(check_health(response.json()))
    except (ValueError, NotAGateway) as exc:
        raise _not_a_gateway(
            urls.http_base + urls.via, str(exc) or "/healthz is not JSON"
        ) from None
    metrics_url = f"{urls.http_base}/metrics"
    response = await _get(client, metrics_url, token_given, urls.via)
    if response.status_code != http.HTTPStatus.OK:
        raise _not_a_gateway(
            urls.http_base + urls.via, f"GET {metrics_url} answered {_status(response)}"
        )
    try:
        samples = parse_metrics(response.text)
    except NotAGateway as exc:
        raise _not_a_gateway(urls.http_base + urls.via, str(exc)) from None
    response = await _get(client, f"{urls.http_base}/subscribers", token_given, urls.via)
    subscribers = None
    if response.status_code == http.HTTPStatus.OK:  # older gateways: no such route
        with contextlib.suppress(ValueError, KeyError, TypeError, NotAGateway):
            subscribers = subscriber_rows(response.json()["subscribers"])
    return samples, health, subscribers


def _status(response: httpx.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


# --- WebSocket --------------------------------------------------------------------------------


class BookFollower:
    """Follows the top of book and status of ``symbols`` on one WebSocket, reconnecting
    every ``retry_s`` while the gateway is away (every symbol ``stale`` meanwhile).
    :attr:`tops` is what it last saw, :attr:`error` why the stream is down (None while it
    is up); :attr:`ready` is set once the subscription's first answers are all in (or it
    failed); :attr:`changes` is notified after each message and each loss. A subscribe
    the gateway refuses as ``rate_limited`` is sent again after the session's backoff
    (and :attr:`ready` waits for its answers)."""

    def __init__(
        self, urls: GatewayUrls, symbols: Sequence[str], retry_s: float, timeout_s: float
    ) -> None:
        self.urls = urls
        self.session = ClientSession(symbols, ["bbo"])
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.tops: dict[str, Top] = {}
        self.error: str | None = None
        self.ready = asyncio.Event()
        self.changes = StateChanges()

    async def run(self) -> None:
        """Follow until cancelled."""
        while True:
            try:
                await self._follow()
                self.error = "book stream closed by the gateway"
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                self.error = f"book stream: {exc or type(exc).__name__}"
            except GatewayError as exc:
                self.error = f"book stream refused: {exc}"
            self._apply(self.session.on_disconnected(self.error, time.time_ns()).events)
            self.ready.set()
            self.changes.notify()
            await asyncio.sleep(self.retry_s)

    async def _follow(self) -> None:
        async with connect_gateway(
            self.urls.ws_url,
            token=self.urls.token,
            compression=None,
            open_timeout=self.timeout_s,
            close_timeout=self.timeout_s,
        ) as ws:
            await ws.send(encode_json(self.session.subscribe_request()).decode())
            # Answered after every status and bbo of the subscription: then ready.
            await ws.send(encode_json(Ping(_PING_ID)).decode())
            try:
                await self._read(ws)
            except asyncio.CancelledError:
                # top stopping is no failure: a normal close (1000), not 1011.
                await ws.close()
                raise

    async def _read(self, ws: ClientConnection) -> None:
        while True:
            try:
                step, data = await next_step(ws, self.session, time.time_ns, time.monotonic_ns)
            except ConnectionClosedOK:
                return
            for request in step.requests:  # a subscribe refused as rate_limited, again
                await ws.send(encode_json(request).decode())
            if step.requests and not self.ready.is_set():  # ready once it is answered
                await ws.send(encode_json(Ping(_PING_ID)).decode())
            self._apply(step.events)
            if (
                data is not None
                and not self.ready.is_set()
                and not step.events
                and self.session.next_retry_ns() is None  # no refused subscribe waits
                and _is_our_pong(data)
            ):
                self.error = None
                self.ready.set()
            self.changes.notify()

    def _apply(self, events: Sequence[object]) -> None:
        for event in events:
            if isinstance(event, BboEvent):
                top = self.tops.get(event.symbol, Top())
                self.tops[event.symbol] = dataclasses.replace(
                    top, bid=event.bid, ask=event.ask, position=(event.epoch, event.seq)
                )
            elif isinstance(event, StatusEvent):
                top = self.tops.get(event.symbol, Top())
                self.tops[event.symbol] = dataclasses.replace(
                    top, state=event.state, reason=event.reason
                )


def _is_our_pong(data: str | bytes) -> bool:
    try:
        msg = decode_server_message(data)
    except ProtocolError:
        return False
    return isinstance(msg, Pong) and msg.id == _PING_ID


# --- the command ------------------------------------------------------------------------------


def terminal_size() -> tuple[int, int]:
    """The terminal's columns and lines (``COLUMNS``/``LINES`` first; 80 x 24 when not a
    terminal)."""
    columns, lines = shutil.get_terminal_size((80, 24))
    return columns, lines


async def run_top(args: argparse.Namespace) -> int:
    """Run ``top`` on the running loop: one frame with ``--once``, else until cancelled."""
    from rich.console import Console
    from rich.live import Live

    url, token = url_and_token(args)
    urls = gateway_urls(url, token)
    async with (
        httpx.AsyncClient(
            headers=bearer_headers(urls.token),
            timeout=args.timeout,
            transport=None if urls.uds is None else httpx.AsyncHTTPTransport(uds=urls.uds),
        ) as client,
        asyncio.TaskGroup() as tasks,
    ):
        samples, health, subscribers = await read_http(client, urls)
        symbols = [str(entry["symbol"]) for entry in health["symbols"]]
        follower = None
        if symbols:
            follower = BookFollower(urls, symbols, args.interval, args.timeout)
            follow_task = tasks.create_task(follower.run())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.timeout):
                    await follower.ready.wait()
            # Read again: the counters as of the books shown, this view's subscriber in.
            samples, health, subscribers = await read_http(client, urls)

        def reading(error: str | None) -> Reading:
            tops: Mapping[str, Top] = {} if follower is None else follower.tops
            if error is None and follower is not None:
                error = follower.error
            clock = time.strftime("%H:%M:%S")
            return Reading(redact(url), samples, health, subscribers, tops, error, clock)

        try:
            if args.once:
                width, height = terminal_size()
                console = Console(width=width, height=height)
                console.print(top_frame(reading(None), width, height), crop=True)
                return 0
            console = Console()
            error: str | None = None
            with Live(console=console, screen=True, auto_refresh=False) as live:
                while True:
                    live.update(top_frame(reading(error), *console.size), refresh=True)
                    await asyncio.sleep(args.interval)
                    try:
                        samples, health, subscribers = await read_http(client, urls)
                        error = None
                    except UsageError as exc:
                        error = str(exc)
        finally:
            if follower is not None:
                follow_task.cancel()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``top``; :func:`main` takes the namespace they produce."""
    add_gateway_url_argument(parser)
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    add_seconds_argument(
        parser, "--interval", "seconds between two reads of the gateway", default=1.0
    )
    add_seconds_argument(
        parser, "--timeout", "seconds to wait for each answer of the gateway", default=5.0
    )
    add_token_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Run ``top`` until Ctrl-C (or one frame with ``--once``); returns the exit code."""
    return run_loop(run_top(args))
