"""Fixtures for the asyncio tests of the gateway's shells and tools.

``run(main, timeout_s)`` runs ``main()`` on a fresh event loop, bounded in time;
``wait_until(predicate, timeout_s)`` waits, bounded, for a condition on state that the
code under test owns and signals no event for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import pytest


class Run(Protocol):
    def __call__(self, main: Callable[[], Awaitable[object]], timeout_s: float = ...) -> None: ...


class WaitUntil(Protocol):
    async def __call__(self, predicate: Callable[[], bool], timeout_s: float = ...) -> None: ...


def run_bounded(main: Callable[[], Awaitable[object]], timeout_s: float = 20.0) -> None:
    """``asyncio.run(main())``, failing with TimeoutError after ``timeout_s``."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout_s):
            await main()

    asyncio.run(bounded())


async def wait_until_true(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Return once ``predicate()`` holds; TimeoutError after ``timeout_s``. Polls: the
    state it reads belongs to other tasks and has no event to wait on."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polls state that other tasks own
            await asyncio.sleep(0.005)


@pytest.fixture
def run() -> Run:
    return run_bounded


@pytest.fixture
def wait_until() -> WaitUntil:
    return wait_until_true
