"""StateChanges: a waiter checks its condition now and after every notification."""

from __future__ import annotations

import asyncio

import pytest

from gateway.io.changes import StateChanges


async def test_a_condition_that_holds_returns_without_a_notification() -> None:
    changes = StateChanges()
    async with asyncio.timeout(1):
        await changes.wait_until(lambda: True)


async def test_waiters_wake_on_each_notification_until_their_condition_holds() -> None:
    changes = StateChanges()
    count = 0
    checks = 0

    def reached(target: int) -> bool:
        nonlocal checks
        checks += 1
        return count >= target

    async with asyncio.TaskGroup() as tasks:
        waiters = [tasks.create_task(changes.wait_until(lambda: reached(2))) for _ in "ab"]
        await asyncio.sleep(0)  # let both waiters check once and block
        assert checks == 2
        count = 1
        changes.notify()
        await asyncio.sleep(0)  # one loop turn: both re-check, neither is done
        assert checks == 4 and not any(w.done() for w in waiters)
        count = 2
        changes.notify()
    assert checks == 6


async def test_without_a_notification_the_wait_is_only_bounded_by_the_caller() -> None:
    changes = StateChanges()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await changes.wait_until(lambda: False)
