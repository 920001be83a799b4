"""Asyncio helpers of the tests, every wait bounded in time.

``run_bounded(main, timeout_s)`` runs ``main()`` on a fresh event loop and returns its
result (``conftest.py`` runs every ``async def`` test with it, a sync fixture may too);
``wait_until(changes, predicate, timeout_s)`` waits for a condition checked after every
notification of ``changes`` (a :class:`StateChanges` the code under test, or the test's own
recorder, notifies); ``run_until(main, changes, predicate, timeout_s)`` runs ``main()`` (a
loop that runs until cancelled) as a task until the condition holds; ``started(tasks,
serve)`` and ``running(serve)`` run a server, ``serve(ready)``, from the moment it has set
``ready``; ``ws_serving(handler)`` runs a websockets server of the test's own, closed as the
project's servers are; ``cancel_within(task, timeout_s)`` stops a server's task within a bound;
``tcp_connect(port)`` and ``wait_peer_closed(sock)`` stand for a client that connects and
never speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Coroutine
from typing import Any
from typing import TypeVar

from websockets.asyncio.server import Server
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve

from gateway.io.changes import StateChanges
from gateway.io.server_close import AcceptedConnection
from gateway.io.server_close import close_servers

T = TypeVar("T")

#: The bound of an ``async def`` test without an ``async_timeout_s`` marker.
ASYNC_TIMEOUT_S = 20.0

#: A server: sets the event once it listens, then serves until cancelled.
Serve = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def run_bounded(main: Callable[[], Awaitable[T]], timeout_s: float = ASYNC_TIMEOUT_S) -> T:
    """``asyncio.run(main())``: its result, or TimeoutError after ``timeout_s``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await main()

    return asyncio.run(bounded())


async def wait_until(
    changes: StateChanges, predicate: Callable[[], bool], timeout_s: float = 10.0
) -> None:
    """Return once ``predicate()`` holds, checked now and after every notification of
    ``changes``; TimeoutError after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        await changes.wait_until(predicate)


async def run_until(
    main: Callable[[], Coroutine[Any, Any, object]],
    changes: StateChanges,
    predicate: Callable[[], bool],
    timeout_s: float = 10.0,
) -> None:
    """Run ``main()`` as a task until ``predicate()`` holds (as :func:`wait_until`), then
    cancel it; an error of the task propagates (in an ExceptionGroup), and TimeoutError
    after ``timeout_s``."""
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(main())
        await wait_until(changes, predicate, timeout_s)
        task.cancel()


async def started(tasks: asyncio.TaskGroup, serve: Serve) -> asyncio.Task[None]:
    """Start ``serve`` in ``tasks``; returns its task once it listens."""
    ready = asyncio.Event()
    task = tasks.create_task(serve(ready))
    await ready.wait()
    return task


@contextlib.asynccontextmanager
async def running(serve: Serve) -> AsyncIterator[None]:
    """``serve`` running for the block's duration, from the moment it listens."""
    async with asyncio.TaskGroup() as tasks:
        task = await started(tasks, serve)
        try:
            yield
        finally:
            task.cancel()


async def cancel_within(task: asyncio.Task[Any], timeout_s: float) -> None:
    """Cancel ``task`` and return once it ended cancelled; TimeoutError after ``timeout_s``
    (the task left as it is)."""
    task.cancel()
    async with asyncio.timeout(timeout_s):
        await asyncio.wait([task])
    assert task.cancelled(), f"{task} ended without being cancelled"


@contextlib.asynccontextmanager
async def ws_serving(
    handler: Callable[[ServerConnection], Awaitable[None]], **options: Any
) -> AsyncIterator[Server]:
    """A websockets server of ``handler`` on an ephemeral loopback port (``options``:
    :func:`websockets.asyncio.server.serve`'s) for the block's duration, closed by
    :func:`~gateway.io.server_close.close_servers`: no connection it accepted outlives it."""
    server = await serve(handler, "127.0.0.1", 0, create_connection=AcceptedConnection, **options)
    try:
        yield server
    finally:
        await close_servers([server])


def tcp_connect(port: int) -> socket.socket:
    """A raw TCP connection to ``127.0.0.1:port``, established when this returns: the
    server's kernel has queued it, and its event loop accepts it at its next turn."""
    return socket.create_connection(("127.0.0.1", port), timeout=5.0)


async def wait_peer_closed(sock: socket.socket, timeout_s: float = 5.0) -> None:
    """Return once the server closed ``sock`` (end of stream or reset), reading and
    dropping what it sent; TimeoutError after ``timeout_s``. ``sock`` is closed after."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        async with asyncio.timeout(timeout_s):
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(65536):
                    pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
