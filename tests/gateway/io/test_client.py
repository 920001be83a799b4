"""GatewayClient against a real Fanout: consistent books, gap recovery, reconnection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from gateway.core.model import SymbolState
from gateway.io.changes import StateChanges
from gateway.io.client import BookUpdate, GatewayClient, GatewayError, subscribe_books

from .fanout_helpers import KEY, KEY2, FakeView, live_fanout

if TYPE_CHECKING:
    from tests.gateway.conftest import Run, WaitUntil
    from tests.gateway.io.conftest import Serving, StartServing

BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1"), ("101.00", "2")]


class Consumer:
    """Iterates a client and checks every yielded book against the published history at
    the moment it is yielded (the book object is reused afterwards)."""

    def __init__(self, client: GatewayClient, view: FakeView) -> None:
        self.client = client
        self.view = view
        self.updates: list[BookUpdate] = []
        self._changed = asyncio.Event()
        self._cursor = 0

    async def run(self) -> None:
        async for update in self.client:
            if update.book is not None:
                expected = self.view.history[update.symbol, update.epoch, update.seq]
                assert update.book.normalized() == expected, update
            self.updates.append(update)
            self._changed.set()

    async def until(self, predicate: Callable[[BookUpdate], bool]) -> BookUpdate:
        """The first update after the one ``until`` last returned that matches
        ``predicate``, waiting for it if needed."""
        while True:
            for index in range(self._cursor, len(self.updates)):
                if predicate(self.updates[index]):
                    self._cursor = index + 1
                    return self.updates[index]
            self._changed.clear()
            await self._changed.wait()

    def seqs(self, symbol: str, kind: str) -> list[int]:
        return [u.seq for u in self.updates if u.symbol == symbol and u.kind == kind]


def snapshot_of(symbol: str, seq: int | None = None) -> Callable[[BookUpdate], bool]:
    return lambda u: u.kind == "snapshot" and u.symbol == symbol and (seq is None or u.seq == seq)


def delta_of(symbol: str, seq: int) -> Callable[[BookUpdate], bool]:
    return lambda u: u.kind == "delta" and u.symbol == symbol and u.seq == seq


@pytest.mark.parametrize("wire_format", ["json", "msgpack"])
def test_client_yields_consistent_books_and_recovers_from_a_gap(
    wire_format: str, run: Run, serving: Serving
) -> None:
    async def main() -> None:
        view, fanout = live_fanout(BIDS, ASKS)
        async with serving(fanout), asyncio.TaskGroup() as tasks:
            client = GatewayClient(
                f"ws://127.0.0.1:{fanout.port}/",
                [KEY, KEY2],
                wire_format=wire_format,  # type: ignore[arg-type]
            )
            consumer = Consumer(client, view)
            task = tasks.create_task(consumer.run())
            first = await consumer.until(snapshot_of(KEY))
            assert (first.epoch, first.seq, first.venue_id) == (1, 0, 1000)
            assert first.state is SymbolState.LIVE
            assert client.book(KEY2) is None  # no book yet upstream

            for i in range(1, 6):
                fanout.publish([view.delta(KEY, bids=[(f"99.{i}0", str(i))])])
            fanout.publish(view.reset(KEY2, [("10.0", "1")], [("11.0", "1")]))
            fanout.publish([view.delta(KEY2, asks=[("11.0", "0")])])
            await consumer.until(delta_of(KEY, 5))
            await consumer.until(delta_of(KEY2, 1))
            assert consumer.seqs(KEY, "delta") == [1, 2, 3, 4, 5]

            # A lost message: the view moves two steps, the client sees only the second.
            view.delta(KEY, asks=[("100.50", "0")])
            fanout.publish([view.delta(KEY, asks=[("100.75", "3")])])
            gap = await consumer.until(lambda u: u.symbol == KEY and u.kind == "status")
            assert gap.book is None and gap.state is SymbolState.RESYNCING
            assert "sequence gap" in gap.reason
            resynced = await consumer.until(snapshot_of(KEY))
            assert resynced.seq == 7 and resynced.book is not None
            fanout.publish([view.delta(KEY, bids=[("99.10", "0")])])
            await consumer.until(delta_of(KEY, 8))
            assert client.stats.gaps == 1
            assert 6 not in consumer.seqs(KEY, "delta") and 7 not in consumer.seqs(KEY, "delta")
            book = client.book(KEY)
            assert book is not None and book.normalized() == view.history[KEY, 1, 8]

            await client.aclose()
            await task  # the iteration ends after aclose
            assert fanout.stats.bad_requests == 0

    run(main)


def _notify_on_every_retry(client: GatewayClient) -> StateChanges:
    """A notifier of every backoff step the client takes before a reconnect attempt."""
    retries = StateChanges()
    backoff = client._backoff
    next_delay_s = backoff.next_delay_s

    def counted() -> float:
        delay_s = next_delay_s()
        retries.notify()
        return delay_s

    backoff.next_delay_s = counted  # type: ignore[method-assign]
    return retries


def test_client_reconnects_after_the_gateway_restarts(
    run: Run, wait_until: WaitUntil, start_serving: StartServing
) -> None:
    async def main() -> None:
        view, fanout = live_fanout(BIDS, ASKS)
        async with asyncio.TaskGroup() as tasks:
            server = await start_serving(tasks, fanout, 0)
            port = fanout.port
            client = GatewayClient(
                f"ws://127.0.0.1:{port}/", [KEY], backoff_initial_s=0.02, backoff_max_s=0.1
            )
            retries = _notify_on_every_retry(client)
            consumer = Consumer(client, view)
            consuming = tasks.create_task(consumer.run())
            await consumer.until(snapshot_of(KEY, 0))

            server.cancel()
            lost = await consumer.until(lambda u: u.kind == "status")
            assert lost.book is None and lost.state is SymbolState.STALE
            assert "connection lost" in lost.reason
            # The book moves on while the client is away.
            for _ in range(3):
                fanout.publish([view.delta(KEY, bids=[("98.00", "1")])])
            # A few refused reconnects (each retry after the first counts a backoff step).
            await wait_until(retries, lambda: client._backoff.failures >= 3)

            server = await start_serving(tasks, fanout, port)
            back = await consumer.until(snapshot_of(KEY))
            assert back.seq == 3 and back.state is SymbolState.LIVE
            fanout.publish([view.delta(KEY, asks=[("100.50", "0")])])
            await consumer.until(delta_of(KEY, 4))
            assert client.stats.connects == 2 and client.stats.disconnects == 1

            await client.aclose()
            await consuming
            server.cancel()

    run(main)


def test_without_reconnect_the_iteration_ends_and_unknown_symbols_raise(
    run: Run, start_serving: StartServing
) -> None:
    async def main() -> None:
        _view, fanout = live_fanout(BIDS, ASKS)
        async with asyncio.TaskGroup() as tasks:
            server = await start_serving(tasks, fanout, 0)
            url = f"ws://127.0.0.1:{fanout.port}/"

            with pytest.raises(GatewayError, match="unknown_symbol"):
                async for _ in subscribe_books(url, ["nowhere:XYZ"]):
                    pass

            kinds = []
            async with GatewayClient(url, [KEY], reconnect=False) as client:
                async for update in client:
                    kinds.append((update.kind, update.state))
                    if update.kind == "snapshot":
                        server.cancel()
            assert kinds == [
                ("status", SymbolState.LIVE),
                ("snapshot", SymbolState.LIVE),
                ("status", SymbolState.STALE),
            ]

        with pytest.raises(OSError):
            async with GatewayClient(url, [KEY], reconnect=False) as client:
                await anext(client)

    run(main)


def test_too_many_subscriptions_raise_and_a_token_goes_in_the_url(
    run: Run, serving: Serving
) -> None:
    async def main() -> None:
        token = "client-token-0123456789"
        _view, fanout = live_fanout(BIDS, ASKS, max_subscriptions=1, token=token)
        async with serving(fanout):
            url = f"ws://127.0.0.1:{fanout.port}/?token={token}"
            with pytest.raises(GatewayError, match="too_many_subscriptions"):
                async for _ in subscribe_books(url, [KEY, KEY2], reconnect=False):
                    pass
            async for update in subscribe_books(url, [KEY], reconnect=False):
                assert update.symbol == KEY
                break

    run(main)
