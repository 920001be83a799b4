"""Asyncio helpers of the tests, every wait bounded in time.

``run_bounded(main, timeout_s)`` runs ``main()`` on a fresh event loop and returns its
result (``conftest.py`` runs every ``async def`` test with it, a sync fixture may too);
``wait_until(changes, predicate, timeout_s)`` waits for a condition checked after every
notification of ``changes`` (a :class:`StateChanges` the code under test, or the test's own
recorder, notifies); ``run_until(main, changes, predicate, timeout_s)`` runs ``main()`` (a
loop that runs until cancelled) as a task until the condition holds; ``started(tasks,
serve)`` and ``running(serve)`` run a server, ``serve(ready)``, from the moment it has set
``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from gateway.io.changes import StateChanges

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
