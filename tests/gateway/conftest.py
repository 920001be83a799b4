"""The harness of the asyncio tests of the gateway's shells and tools.

An ``async def`` test runs on a fresh event loop, bounded in time: 20 s, or the seconds of
its ``@pytest.mark.async_timeout_s(seconds)`` (a TimeoutError past them). Fixtures:
``run(main, timeout_s)`` does the same for ``main()``, for a test that runs several loops (a
hypothesis test: one per example); ``wait_until(changes, predicate, timeout_s)`` waits,
bounded, for a condition checked after every notification of ``changes`` (a
:class:`StateChanges` the code under test, or the test's own recorder, notifies);
``run_until(main, changes, predicate, timeout_s)`` runs ``main()`` (a loop that runs until
cancelled) as a task until the condition holds.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import pytest

from gateway.io.changes import StateChanges


class Run(Protocol):
    def __call__(self, main: Callable[[], Awaitable[object]], timeout_s: float = ...) -> None: ...


class WaitUntil(Protocol):
    async def __call__(
        self, changes: StateChanges, predicate: Callable[[], bool], timeout_s: float = ...
    ) -> None: ...


class RunUntil(Protocol):
    async def __call__(
        self,
        main: Callable[[], Coroutine[Any, Any, object]],
        changes: StateChanges,
        predicate: Callable[[], bool],
        timeout_s: float = ...,
    ) -> None: ...


ASYNC_TIMEOUT_S = 20.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"async_timeout_s(seconds): the bound of an async test's run ({ASYNC_TIMEOUT_S} s without)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Runs an ``async def`` test with ``asyncio.run``, bounded by ``asyncio.timeout``;
    other tests are left to pytest."""
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test):
        return None
    marker = pyfuncitem.get_closest_marker("async_timeout_s")
    timeout_s = ASYNC_TIMEOUT_S if marker is None else float(marker.args[0])
    arguments = {name: pyfuncitem.funcargs[name] for name in inspect.signature(test).parameters}
    run_bounded(lambda: test(**arguments), timeout_s)
    return True


def run_bounded(main: Callable[[], Awaitable[object]], timeout_s: float = ASYNC_TIMEOUT_S) -> None:
    """``asyncio.run(main())``, failing with TimeoutError after ``timeout_s``."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout_s):
            await main()

    asyncio.run(bounded())


async def wait_until_true(
    changes: StateChanges, predicate: Callable[[], bool], timeout_s: float = 10.0
) -> None:
    """Return once ``predicate()`` holds, checked now and after every notification of
    ``changes``; TimeoutError after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        await changes.wait_until(predicate)


async def run_task_until(
    main: Callable[[], Coroutine[Any, Any, object]],
    changes: StateChanges,
    predicate: Callable[[], bool],
    timeout_s: float = 10.0,
) -> None:
    """Run ``main()`` as a task until ``predicate()`` holds (as :func:`wait_until_true`),
    then cancel it; an error of the task propagates (in an ExceptionGroup), and
    TimeoutError after ``timeout_s``."""
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(main())
        await wait_until_true(changes, predicate, timeout_s)
        task.cancel()


@pytest.fixture
def run() -> Run:
    return run_bounded


@pytest.fixture
def wait_until() -> WaitUntil:
    return wait_until_true


@pytest.fixture
def run_until() -> RunUntil:
    return run_task_until
