"""Waiting on state that synchronous code changes: the shells notify, tests and tools wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class StateChanges:
    """Wakes the tasks that wait for a condition on state which synchronous code changes:
    the code that changes it calls :meth:`notify`, and each waiter checks its condition
    again."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Returns once ``predicate()`` holds, checked now and after every notification.
        Unbounded: the caller bounds the wait (``asyncio.timeout``)."""
        while not predicate():
            await self._changed.wait()
