"""What a simulated venue says, without I/O: the :class:`VenueProtocol` interface the one
server shell (:mod:`feeds.sim.shell`, :class:`feeds.sim.simulators.SimVenue`) drives. The
number formatting the venue renderers share is in :mod:`feeds.sim.numbers`.

A protocol answers, as pure functions of its arguments and its own state: which URL paths
are served, what a connection receives on open (or why it is refused), how a client
message is answered (subscribe acks, the in-band snapshot, app-level pongs, unsubscribe),
what one generator step publishes (:meth:`VenueProtocol.step`, by default the venue's
rendering of each book's :class:`~feeds.sim.book_process.Batch`, ONCE per venue, as
:class:`Publication` objects), how a publication is framed for one connection (the identity
for sequenced venues; Coinbase stamps its per-connection ``sequence_num``), the venue's
notice, and the answer of its REST endpoint (:class:`RestAnswer`). Time comes in as
arguments (``now_ns``: nanoseconds since the epoch); nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from feeds.sim.book_process import Batch
from feeds.sim.book_process import BookProcess
from feeds.sim.book_process import SimTrade
from feeds.sim.connection import ConnState
from feeds.sim.connection import Publication
from feeds.sim.connection import RestAnswer
from feeds.sim.limits import VENUE_LIMITS
from feeds.sim.limits import SimLimits
from feeds.sim.limits import VenueLimiter
from feeds.sim.rewrite import WireShape
from gateway.core.book import L2Book
from gateway.core.model import Level

#: Initial mid by base asset; other symbols start at 100.
_BASE_MIDS: Final[Mapping[str, float]] = {
    "BTC": 60_000.0,
    "XBT": 60_000.0,
    "ETH": 3_000.0,
    "SOL": 150.0,
    "BNB": 600.0,
}
DEFAULT_MID: Final = 100.0


def default_mid(symbol: str) -> float:
    """The initial mid of ``symbol`` by its base asset (``BTC-USDT``, ``BTC/USD``, ...)."""
    upper = symbol.upper()
    for base, mid in _BASE_MIDS.items():
        if upper.startswith(base):
            return mid
    return DEFAULT_MID


def query_int(text: str, max_digits: int) -> int | None:
    """The value of a query parameter that must be a non-negative integer of at most
    ``max_digits`` ASCII digits; None when it is not one."""
    if text.isascii() and text.isdigit() and len(text) <= max_digits:
        return int(text)
    return None


# --- the protocol interface -----------------------------------------------------------------


class VenueProtocol:
    """What a simulated venue says; the defaults suit a venue that frames nothing per
    connection. :meth:`attach` gives it the books before the server starts."""

    #: Used in task names and RNG seeds.
    name = "venue"
    #: The one WebSocket path served (None: every path).
    path: str | None = None
    #: Path of the REST depth endpoint; None: the venue serves no REST.
    rest_path: str | None = None
    #: Where the venue's stream frames and REST bodies carry ids and levels, for the
    #: content faults (:mod:`feeds.sim.rewrite`); None: they do not apply.
    stream_shape: WireShape | None = None
    rest_shape: WireShape | None = None

    def __init__(self) -> None:
        self.procs: Mapping[str, BookProcess] = {}
        #: The venue's limits and their counters (:mod:`feeds.sim.limits`); the shell
        #: applies them to handshakes, client messages, subscriptions and REST requests.
        self.limiter = VenueLimiter(VENUE_LIMITS.get(self.name, SimLimits()))

    def attach(self, procs: Mapping[str, BookProcess]) -> None:
        self.procs = procs

    def check_path(self, path: str) -> str | None:
        """None when ``path`` is served, else the body of a 404 response."""
        if self.path is not None and urlsplit(path).path != self.path:
            return f"Only {self.path} is simulated\n"
        return None

    def on_open(self, state: ConnState) -> list[bytes]:
        """Frames sent when a connection opens (e.g. Kraken's ``status``). May raise
        :class:`CloseConnection` to close it at once (it then never streams)."""
        return []

    def on_message(self, state: ConnState, message: str | bytes, now_ns: int) -> list[bytes]:
        """Frames answering one client message, in order (acks, snapshots, pong). Updates
        ``state.subs``. May raise :class:`CloseConnection`."""
        return []

    def step(self, now_ns: int) -> list[Publication]:
        """One generator interval: every book takes one step, rendered by :meth:`on_batch`."""
        pubs: list[Publication] = []
        for symbol, process in self.procs.items():
            batch = process.step()
            if batch is not None:
                pubs += self.on_batch(symbol, batch, now_ns)
        return pubs

    def on_pause(self, now_ns: int) -> list[Publication]:
        """Publications due when the generator pauses (a venue whose engine runs ahead of
        its stream publishes what is open)."""
        return []

    def on_batch(self, symbol: str, batch: Batch, now_ns: int) -> list[Publication]:
        """The venue's messages for one step of ``symbol`` (called once per venue)."""
        return []

    def on_heartbeat(self, now_ns: int) -> list[Publication]:
        """Messages sent every heartbeat interval (paused or not)."""
        return []

    def frame_for(self, state: ConnState, pub: Publication) -> bytes | None:
        """``pub`` as sent on one connection, or None when the connection does not get it."""
        return pub.frame if pub.key in state.subs else None

    def format_level(self, symbol: str, level: Level) -> Level:
        """A BookProcess level in the venue's wire strings."""
        return level

    def wire_levels(
        self, symbol: str, bids: Iterable[Level], asks: Iterable[Level]
    ) -> tuple[list[Level], list[Level]]:
        """BookProcess levels of ``symbol`` in the venue's wire strings, in their order."""
        fmt = self.format_level
        return [fmt(symbol, lv) for lv in bids], [fmt(symbol, lv) for lv in asks]

    def wire_trades(self, symbol: str, trades: Iterable[SimTrade]) -> list[tuple[SimTrade, Level]]:
        """Each trade of ``symbol`` with its ``(price, qty)`` in the venue's wire strings."""
        return [(t, self.format_level(symbol, (t.price, t.qty))) for t in trades]

    def wire_book(self, symbol: str, depth: int | None = None) -> tuple[list[Level], list[Level]]:
        """The best ``depth`` levels per side (None: all) of the book of ``symbol``, best
        first, in the venue's wire strings."""
        book = self.procs[symbol].book
        return self.wire_levels(symbol, book.bids(depth), book.asks(depth))

    def true_book(self, symbol: str) -> L2Book:
        """A copy of the venue's whole book of ``symbol`` as its stream has published it,
        in the venue's wire strings."""
        book = L2Book()
        book.load(*self.wire_book(symbol))
        return book

    def last_id(self, symbol: str) -> int | None:
        """The venue's current book id of ``symbol`` (None: the venue has none)."""
        return None

    def notice_frame(self, now_ns: int) -> bytes | None:
        """The venue's maintenance or shutdown notice sent by the ``notice`` fault (None:
        the venue has none and the fault is skipped)."""
        return None

    def rest_response(self, query: Mapping[str, str], now_ns: int) -> RestAnswer:
        """The answer to ``GET rest_path?query`` (``query``: the first value of each
        parameter). Only called when :attr:`rest_path` is set."""
        raise NotImplementedError(f"{self.name} serves no REST")
