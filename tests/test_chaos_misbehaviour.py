"""Chaos with a misbehaving venue: the real gateway against a simulated venue on loopback
(Binance spot; OKX for the id faults too), one misbehaviour of the fault language
(docs/faults.md) per test, beside a clean simulated venue (the other of the two).

Each test asserts that (a) once the misbehaviour is over and the venue is paused, the
subscriber's book is the venue's true book; (b) every book the subscriber was served as
``live`` was one of the venue's true books (a twin of the venue's seeded book process gives
every book the venue ever had, whatever ids the venue showed); (c) nothing crashed: the
gateway served on, and the clean venue's symbol stayed ``live`` and kept moving."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from feeds.sim.book_process import BookProcess
from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceSpot
from feeds.sim.simulators import SimOkx
from feeds.sim.simulators import SimVenue
from feeds.sim.venue import default_mid
from gateway.core.model import SymbolState
from gateway.io.client import BookEvent
from gateway.io.client import ClientState
from gateway.io.client import Event
from gateway.io.client import StatusEvent
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config

from .subscriber import serving

SEED = 11
INTERVAL_S = 0.02
#: Venue steps after the first book: 1.6 s of the venue's time, past every fault below
#: (the last ends at 1.5 s) but flapping (its test runs longer).
RUN_STEPS = 80
#: Bound of the wait for the subscriber's book to be the truth once the venue paused:
#: generous, a resync on a busy machine must not reach it.
CATCH_UP_S = 15.0
#: When each misbehaviour starts (s since the venue started); the gateway syncs before.
AT_S = 1.0
#: Endpoint 0 misbehaves; the others send each frame a little later, so that endpoint 0's
#: copy is the first the gateway sees.
FIRST = ";ep1:delay=10ms;ep2:delay=10ms"
LIVE = SymbolState.LIVE
#: A plain decimal, the only number grammar subscribers are served.
PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")

Normalized = tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]


@dataclasses.dataclass(frozen=True)
class Venue:
    """A simulated venue of the demo (``DEMO_VENUES[demo]``) with one symbol."""

    demo: int
    symbol: str
    #: The book process tick the simulator uses.
    tick: str

    @property
    def key(self) -> str:
        return f"{DEMO_VENUES[self.demo].venue}:{self.symbol}"

    def sim(self, n_endpoints: int, interval_s: float, faults: FaultPlan | None) -> SimVenue:
        cls = SimBinanceSpot if self.demo == 0 else SimOkx
        return cls([self.symbol], n_endpoints, SEED, interval_s, faults=faults)

    def twin(self) -> BookProcess:
        """The book process of the venue's symbol, as its simulator builds it."""
        mid = default_mid(self.symbol)
        return BookProcess(self.symbol, SEED, mid=mid, tick=self.tick, lot="0.00001")

    def true_books(self, up_to_id: int) -> set[Normalized]:
        """Every book the venue had, up to its (true) id ``up_to_id``."""
        twin = self.twin()
        books = {twin.book.normalized()}
        while twin.last_id < up_to_id:
            if twin.step() is not None:
                books.add(twin.book.normalized())
        assert twin.last_id == up_to_id
        return books


BINANCE = Venue(0, "BTCUSDT", "0.01")
OKX = Venue(1, "BTC-USDT", "0.1")


@dataclasses.dataclass
class Seen:
    """What the subscriber saw: each ``live`` book of ``key`` (normalized), every level
    text of ``key``, the states of ``clean_key`` and its last venue id."""

    key: str
    clean_key: str
    live_books: list[Normalized] = dataclasses.field(default_factory=list)
    odd_numbers: set[str] = dataclasses.field(default_factory=set)
    clean_states: list[ClientState] = dataclasses.field(default_factory=list)
    clean_id: int = 0

    def keep(self, event: Event) -> None:
        if event.symbol == self.clean_key:
            if isinstance(event, BookEvent | StatusEvent):
                self.clean_states.append(event.state)
            if isinstance(event, BookEvent):
                self.clean_id = max(self.clean_id, event.venue_id)
            return
        if event.symbol != self.key or not isinstance(event, BookEvent):
            return
        if event.state == LIVE:
            self.live_books.append(event.book.normalized())
        for price, qty in [*event.book.bids(), *event.book.asks()]:
            for text in (price, qty):
                if not PLAIN_DECIMAL.fullmatch(text):
                    self.odd_numbers.add(text)


async def run(
    spec: str,
    venue: Venue = BINANCE,
    during: Callable[[SimVenue], None] | None = None,
    steps: int = RUN_STEPS,
    backoff_max_s: float = 1.0,
) -> None:
    """The gateway (reconnecting to ``venue`` with backoff up to ``backoff_max_s``) against
    ``venue`` under ``spec`` (seeded) for ``steps`` venue steps, then ``during(sim)``;
    asserts (a), (b) and (c)."""
    plan = FaultPlan(spec, seed=SEED, n_endpoints=3)
    clean_venue = OKX if venue is BINANCE else BINANCE
    key, clean_key = venue.key, clean_venue.key
    seen = Seen(key, clean_key)
    async with (
        venue.sim(3, INTERVAL_S, plan) as sim,
        clean_venue.sim(2, 0.05, None) as clean,
    ):
        assert sim.true_book(venue.symbol).normalized() == venue.twin().book.normalized()
        config = demo_config(
            [
                (dataclasses.replace(DEMO_VENUES[v.demo], symbols=(v.symbol,)), s)
                for v, s in ((venue, sim), (clean_venue, clean))
            ],
            port=0,
        )
        faulty = msgspec.structs.replace(config.venues[0], backoff_max_s=backoff_max_s)
        config = msgspec.structs.replace(config, venues=[faulty, *config.venues[1:]])
        async with serving(config, [key, clean_key], 0.2, seen.keep) as (service, subscriber):
            client = subscriber.client
            await subscriber.until(lambda: client.book(clean_key) is not None, 10)
            await subscriber.until(lambda: client.book(key) is not None, 10)
            if not spec.startswith("rest:"):
                # The misbehaviour must meet a gateway in sync, or it tests nothing.
                assert sim.fault_time() < AT_S, "the gateway synced too late"
            await sim.wait_steps(steps)
            if during is not None:
                during(sim)
            clean_id = seen.clean_id
            sim.pause()
            truth = sim.true_book(venue.symbol).normalized()

            def caught_up() -> bool:
                book = client.book(key)
                return book is not None and book.normalized() == truth

            # (a) the venue's true book in the end
            await subscriber.until(caught_up, CATCH_UP_S)
            # (c) the clean venue moved on, live all along; the gateway serves both
            await subscriber.until(lambda: seen.clean_id > clean_id, CATCH_UP_S)
            first_live = seen.clean_states.index(LIVE)
            assert set(seen.clean_states[first_live:]) == {LIVE}
            assert set(service.books) >= {key, clean_key}
        # (b) nothing wrong was served as live
        last_id = sim.last_id(venue.symbol)
        assert last_id is not None
        truths = venue.true_books(last_id)
        wrong = [i for i, book in enumerate(seen.live_books) if book not in truths]
        assert not wrong, f"{len(wrong)} of {len(seen.live_books)} live books were wrong"
        assert not seen.odd_numbers, sorted(seen.odd_numbers)[:5]


def _case(name: str, spec: str, steps: int = RUN_STEPS, venue: Venue = BINANCE) -> Any:
    """One misbehaviour, named ``name`` in the test's id."""
    return pytest.param(spec, steps, venue, id=name)


@pytest.mark.parametrize(
    ("spec", "steps", "venue"),
    [
        _case("id-restart", f"venue:restart@{AT_S}"),
        _case("okx-id-restart", f"venue:restart@{AT_S}", venue=OKX),
        _case("mangled-ids", f"ep0:mangle@{AT_S}+0.5{FIRST}"),
        _case(
            "okx-mangled-ids",
            f"ep0:mangle@{AT_S}+0.5{FIRST}",
            venue=OKX,
        ),
        _case("far-future-id", f"ep0:farid@{AT_S}+0.1{FIRST}"),
        _case(
            "non-decimal-numbers",
            f"ep0:numbers@{AT_S}+0.5{FIRST}",
        ),
        _case("crossing-update", f"ep0:cross@{AT_S}+0.1{FIRST}"),
        # Twice the venue's max_levels, under its max_frame_bytes: parsed, then refused.
        _case("too-many-levels", f"ep0:oversize@{AT_S}+0.1,oversize_levels=20000{FIRST}"),
        # Above its max_frame_bytes: never read.
        _case("oversized-frames", f"ep0:oversize@{AT_S}+0.1,oversize_levels=100000{FIRST}"),
        # Twice the 5000 levels per side the venue serves at most, at the first snapshot.
        _case("oversized-rest-body", "rest:oversize@0+1,oversize_levels=10000", 40),
    ],
)
@pytest.mark.async_timeout_s(40)
async def test_a_misbehaving_venue(spec: str, steps: int, venue: Venue) -> None:
    await run(spec, venue, steps=steps)


def _few_reconnects(sim: SimVenue) -> None:
    # Over the 3 s of flapping, a disciplined backoff (full jitter up to 0.05 s doubling to
    # 4 s) connects about 8 times; one that forgets its failures on every connect, 30 or
    # more (each cycle is a connect, one frame and a wait of at most 0.05 s).
    assert sim.stats(0).connections_accepted <= 14, sim.stats(0)


@pytest.mark.async_timeout_s(40)
async def test_a_flapping_endpoint() -> None:
    await run(f"ep0:flap@{AT_S}+3", BINANCE, _few_reconnects, steps=210, backoff_max_s=4.0)
