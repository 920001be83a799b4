"""The simulated venues, ready to serve on loopback: :class:`SimVenue` (a seeded book
generator speaking a pure :class:`feeds.sim.venue.VenueProtocol` on the one server shell,
:class:`feeds.sim.shell.EndpointServer`) and one class per venue.

===================  ===============================  ===============================
class                protocol (wire, pure)            connect to
===================  ===============================  ===============================
SimBinanceSpot       :mod:`feeds.sim.binance_spot`    ``endpoint_urls`` + ``/stream``
SimBinanceUsdm       :mod:`feeds.sim.binance_usdm`    ``public_urls``, ``market_urls``
SimBinanceCoinm      :mod:`feeds.sim.binance_coinm`   ``public_urls``, ``market_urls``
SimOkx               :mod:`feeds.sim.okx`             ``public_urls``
SimBybit             :mod:`feeds.sim.bybit`           ``public_urls``
SimKraken            :mod:`feeds.sim.kraken`          ``v2_urls``
SimCoinbase          :mod:`feeds.sim.coinbase`        ``endpoint_urls`` (path ``/``)
===================  ===============================  ===============================

Lifecycle, connections, faults and REST serving are the shell's (its module docstring);
for example::

    async with SimBinanceSpot(["BTCUSDT"], n_endpoints=3, interval_s=0.02) as sim:
        url = feeds.binance.stream_url(sim.endpoint_urls[0], ["BTCUSDT"])
        ...

Generator. The simulator's one task of its own: every ``interval_s`` the protocol takes one
step of every book (:meth:`VenueProtocol.step`), rendered ONCE, and the same bytes are
queued to every connection of every open endpoint that gets them. Each endpoint draws a
seeded delivery delay per interval, uniform in ``[0, jitter_ms]``, and never delivers
before the previous interval's frames, so copies from different endpoints interleave
differently while each endpoint stays in order. A generator that falls behind skips
intervals rather than bursting. Every ``heartbeat_interval_s`` (paused or not) the
protocol's heartbeats are published.

Misbehaviours. The content faults and ``restart`` of the fault plan (docs/faults.md) are
applied with the protocol's ``stream_shape`` and ``rest_shape`` (:mod:`feeds.sim.rewrite`):
content faults per endpoint by the shell's writer, ``restart`` once where publications,
answers and REST books are rendered. :meth:`SimVenue.last_id` and :meth:`SimVenue.true_book`
stay the venue's true ids and book.

Limits. Every venue enforces its documented limits (:mod:`feeds.sim.limits`, docs/faults.md):
handshakes per window per address (429, then a ban where the venue bans), client messages
per second and streams per connection (closed with the venue's code), REST requests per
window; :meth:`SimVenue.limit_stats` counts every refusal.

REST. A protocol with a ``rest_path`` also gets the REST port (:attr:`SimVenue.rest_url`):
``GET rest_path?query`` is answered by :meth:`VenueProtocol.rest_response` with the book
as of arrival (on the event loop, so consistent with the stream's ids), delivered
``snapshot_delay_s`` later when it succeeds, so a delayed snapshot is already stale on
arrival like a real one; any other path gets 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import msgspec

from feeds import binance_coinm as coinm
from feeds import binance_usdm as usdm
from feeds.sim.binance_coinm import BinanceCoinmProtocol
from feeds.sim.binance_spot import BinanceSpotProtocol
from feeds.sim.binance_usdm import BinanceUsdmProtocol
from feeds.sim.book_process import BookProcess
from feeds.sim.bybit import BybitProtocol
from feeds.sim.coinbase import CoinbaseProtocol
from feeds.sim.connection import Publication
from feeds.sim.connection import RestAnswer
from feeds.sim.faults import FaultPlan
from feeds.sim.faults import FrameFault
from feeds.sim.faults import RestFault
from feeds.sim.kraken import DEFAULT_LOT
from feeds.sim.kraken import PATH as KRAKEN_PATH
from feeds.sim.kraken import KrakenProtocol
from feeds.sim.limits import REST_SOURCE
from feeds.sim.limits import LimitStats
from feeds.sim.limits import SimLimits
from feeds.sim.limits import rest_refusal
from feeds.sim.numbers import decimals
from feeds.sim.okx import PATH as OKX_PATH
from feeds.sim.okx import OkxProtocol
from feeds.sim.rewrite import IdRestart
from feeds.sim.rewrite import rewrite_body
from feeds.sim.rewrite import rewrite_frame
from feeds.sim.shell import Conn
from feeds.sim.shell import EndpointServer
from feeds.sim.shell import EndpointStats
from feeds.sim.venue import VenueProtocol
from feeds.sim.venue import default_mid
from gateway.core.book import L2Book
from gateway.core.model import Level

__all__ = [
    "EndpointStats",
    "RestStats",
    "SimBinanceCoinm",
    "SimBinanceSpot",
    "SimBinanceUsdm",
    "SimBybit",
    "SimCoinbase",
    "SimKraken",
    "SimOkx",
    "SimVenue",
]


class SimVenue(EndpointServer):
    """A seeded venue speaking ``protocol`` on ``n_endpoints`` loopback WebSocket endpoints.

    Args:
        protocol: the venue's :class:`VenueProtocol`.
        symbols: the venue's symbols as it spells them (``BTC-USDT``, ``BTC/USD``).
        n_endpoints: number of endpoints; all serve the same venue events.
        seed: seeds every book and every endpoint's jitter.
        interval_s: time between generator steps.
        host: address to bind; keep it loopback.
        ports: one port per endpoint; None or 0 picks an ephemeral port (kept on reopen).
        rest_port: port of the REST endpoint, for a protocol with a ``rest_path``; None or
            0 picks an ephemeral port. Not allowed when the protocol serves no REST.
        jitter_ms: largest seeded per-endpoint delivery delay per interval.
        snapshot_delay_s: delay of every successful REST answer (the book is taken on
            arrival).
        client_queue_frames: frames queued per connection before it is closed as too slow.
        heartbeat_interval_s: period of :meth:`VenueProtocol.on_heartbeat` (None: off).
        ping_interval_s / ping_timeout_s: WebSocket protocol pings (None: off).
        close_timeout_s: how long a closing handshake may take.
        mids: initial mid per symbol (default by base asset: BTC 60000, ETH 3000, ...).
        tick: price tick of every book; lot: quantity step.
        actions_per_step: Poisson mean of book actions per step and symbol.
        faults: the fault plan applied (docs/faults.md); None: no faults.
        limits: the venue's limits (:mod:`feeds.sim.limits`); None: the protocol's own,
            its venue's documented ones. Refusals are counted in :meth:`limit_stats`.
    """

    def __init__(
        self,
        protocol: VenueProtocol,
        symbols: Sequence[str],
        n_endpoints: int = 2,
        seed: int = 1,
        interval_s: float = 0.1,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        rest_port: int | None = None,
        *,
        jitter_ms: float = 0.0,
        snapshot_delay_s: float = 0.0,
        client_queue_frames: int = 4096,
        heartbeat_interval_s: float | None = 1.0,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 60.0,
        close_timeout_s: float = 2.0,
        mids: Mapping[str, float] | None = None,
        tick: str = "0.01",
        lot: str = "0.00001",
        actions_per_step: float = 8.0,
        faults: FaultPlan | None = None,
        limits: SimLimits | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("at least one symbol is required")
        if interval_s <= 0.0 or jitter_ms < 0.0 or snapshot_delay_s < 0.0:
            raise ValueError("interval_s must be > 0; jitter_ms and snapshot_delay_s >= 0")
        if heartbeat_interval_s is not None and heartbeat_interval_s <= 0.0:
            raise ValueError("heartbeat_interval_s must be > 0 or None")
        if rest_port is not None and protocol.rest_path is None:
            raise ValueError(f"{protocol.name} serves no REST: rest_port must be None")
        super().__init__(
            protocol.name,
            n_endpoints,
            seed,
            host=host,
            ports=ports,
            rest_port=rest_port,
            serves_rest=protocol.rest_path is not None,
            client_queue_frames=client_queue_frames,
            ping_interval_s=ping_interval_s,
            ping_timeout_s=ping_timeout_s,
            close_timeout_s=close_timeout_s,
            rest_open_timeout_s=snapshot_delay_s + 10.0,
            faults=faults,
            quiet_s=2.0 * interval_s,
        )
        self._procs: dict[str, BookProcess] = {}
        for symbol in symbols:
            if symbol in self._procs:
                raise ValueError(f"duplicate symbol {symbol}")
            mid = (mids or {}).get(symbol, default_mid(symbol))
            self._procs[symbol] = BookProcess(
                symbol, seed, mid=mid, tick=tick, lot=lot, actions_per_step=actions_per_step
            )
        self.protocol = protocol
        if limits is not None:
            protocol.limiter.limits = limits
        protocol.attach(self._procs)
        self._interval_s = interval_s
        self._jitter_s = jitter_ms / 1000.0
        self._snapshot_delay_s = snapshot_delay_s
        self._heartbeat_s = heartbeat_interval_s
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._steps = 0
        #: Set, then replaced, after every step.
        self._stepped = asyncio.Event()
        #: The renumbering of ids since the venue's last ``restart`` fault (None: none).
        self._restart: IdRestart | None = None

    # --- addresses and state --------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        return list(self._procs)

    @property
    def rest_url(self) -> str | None:
        """``http://host:port`` of the REST endpoint (port known once started); None when
        the venue serves no REST."""
        if self.protocol.rest_path is None:
            return None
        return f"http://{self._host}:{self._rest_port}"

    def true_book(self, symbol: str) -> L2Book:
        """A copy of the venue's whole book of ``symbol`` as its stream has published it,
        in the venue's wire strings."""
        return self.protocol.true_book(symbol)

    def last_id(self, symbol: str) -> int | None:
        """The venue's current book id of ``symbol``, where the venue has one."""
        if symbol not in self._procs:
            raise KeyError(symbol)
        return self.protocol.last_id(symbol)

    # --- control --------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop generating book updates (heartbeats go on); what the venue holds open is
        published first when called on the event loop. Queued frames are delivered."""
        self._paused = True
        self._resumed.clear()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        pubs = self.protocol.on_pause(time.time_ns())
        if pubs:
            self._publish(pubs)

    def resume(self) -> None:
        """Generate updates again."""
        self._paused = False
        self._resumed.set()

    def advance(self, steps: int = 1) -> None:
        """Generate and send ``steps`` intervals now, paused or not (call on the loop)."""
        for _ in range(steps):
            self._tick()

    async def wait_steps(self, count: int = 1) -> None:
        """Return once the venue took ``count`` more steps (by its generator or
        :meth:`advance`); while paused only :meth:`advance` takes steps."""
        target = self._steps + count
        while self._steps < target:
            await self._stepped.wait()

    # --- generator ------------------------------------------------------------------------

    def _start_tasks(self, group: asyncio.TaskGroup, stack: contextlib.AsyncExitStack) -> None:
        generator = group.create_task(self._generate(), name=f"sim-{self._name}-generator")
        # Runs before the TaskGroup exits, which then waits for the generator to end.
        stack.callback(generator.cancel)

    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        next_s = loop.time()
        next_heartbeat_s = next_s + (self._heartbeat_s or 0.0)
        while True:
            if self._paused and self._heartbeat_s is None:
                await self._resumed.wait()
                next_s = loop.time()
            next_s += self._interval_s
            delay_s = next_s - loop.time()
            if delay_s < -self._interval_s:
                next_s = loop.time()  # fell behind (busy machine): skip, do not burst
            # Always yield, even when late, so the loop is never starved.
            await asyncio.sleep(max(0.0, delay_s))
            if not self._paused:
                self._tick()
            if self._heartbeat_s is not None and loop.time() >= next_heartbeat_s:
                next_heartbeat_s = loop.time() + self._heartbeat_s
                pubs = self.protocol.on_heartbeat(time.time_ns())
                if pubs:
                    self._publish(pubs)

    def _tick(self) -> None:
        pubs = self.protocol.step(time.time_ns())
        if pubs:
            self._publish(pubs)
        self._steps += 1
        self._stepped.set()
        self._stepped = asyncio.Event()

    def _publish(self, pubs: list[Publication]) -> None:
        restart, shape = self._restart, self.protocol.stream_shape
        if restart is not None and shape is not None:
            pubs = [Publication(p.key, restart.apply(p.frame, shape), p.tail) for p in pubs]
        now_s = asyncio.get_running_loop().time()
        for endpoint in self._endpoints:
            # Drawn whether or not anyone listens, so the delays depend on the seed only.
            delay_s = endpoint.rng.uniform(0.0, self._jitter_s) if self._jitter_s else 0.0
            deliver_at = max(now_s + delay_s, endpoint.last_deliver_s)
            endpoint.last_deliver_s = deliver_at
            if endpoint.server is None:
                continue
            for conn in list(endpoint.conns):
                frames = [f for p in pubs if (f := self.protocol.frame_for(conn.state, p))]
                self._push(endpoint, conn, frames, deliver_at)

    def limit_stats(self) -> LimitStats:
        """Every refusal of the venue's limits since start (``violations``: their sum)."""
        return self.protocol.limiter.stats

    # --- the shell's hooks ----------------------------------------------------------------

    def _check_path(self, path: str) -> str | None:
        return self.protocol.check_path(path)

    def _admit_connection(self, source: str) -> RestAnswer | None:
        return self.protocol.limiter.admit_connection(source, time.time_ns())

    def _open(self, conn: Conn) -> list[bytes]:
        conn.state.extra["source"] = str(conn.ws.remote_address[0])
        frames = self.protocol.on_open(conn.state)
        self.protocol.limiter.streams(conn.state)
        return frames

    async def _answer(self, conn: Conn, message: str | bytes) -> list[bytes]:
        now_ns = time.time_ns()
        limiter = self.protocol.limiter
        limiter.client_message(conn.state, now_ns)
        frames = self.protocol.on_message(conn.state, message, now_ns)
        limiter.streams(conn.state)
        restart, shape = self._restart, self.protocol.stream_shape
        if restart is not None and shape is not None:
            frames = [restart.apply(frame, shape) for frame in frames]
        return frames

    def _notice_frame(self) -> bytes | None:
        return self.protocol.notice_frame(time.time_ns())

    def _rewrite(self, conn: Conn, frame: bytes, fault: FrameFault) -> bytes:
        shape = self.protocol.stream_shape
        return frame if shape is None else rewrite_frame(frame, shape, fault)

    def _rewrite_rest(self, target: str, answer: RestAnswer, fault: RestFault) -> RestAnswer:
        shape = self.protocol.rest_shape
        if shape is None:
            return answer
        return answer._replace(
            body=rewrite_body(answer.body, shape, fault.oversize_levels, alter=fault.alter)
        )

    def _restart_ids(self, first_id: int) -> None:
        self._restart = IdRestart(first_id, before=self._restart)

    async def _rest_answer(self, target: str) -> RestAnswer | None:
        url = urlsplit(target)
        if url.path != self.protocol.rest_path:
            return None
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        refused = self.protocol.limiter.admit_rest(REST_SOURCE, time.time_ns())
        if refused is not None:
            return rest_refusal(*refused)
        # The book as of arrival, delivered after the delay: stale on arrival, as in life.
        answer = self.protocol.rest_response(query, time.time_ns())
        restart, shape = self._restart, self.protocol.rest_shape
        if restart is not None and shape is not None and answer.status == 200:
            symbol = query.get(shape.symbol_param, "")
            answer = answer._replace(body=restart.apply(answer.body, shape, symbol))
        if answer.status == 200 and self._snapshot_delay_s > 0.0:
            await asyncio.sleep(self._snapshot_delay_s)
        return answer


# --- Binance -----------------------------------------------------------------------------------


class RestStats(msgspec.Struct, frozen=True):
    """Counters of the Binance REST endpoint."""

    requests: int
    snapshots_served: int
    rate_limited: int


class SimBinanceSpot(SimVenue):
    """A seeded Binance spot venue (:mod:`feeds.sim.binance_spot`): N WebSocket endpoints
    serving combined streams on ``/stream`` and the REST depth endpoint.

    Args:
        symbols: upper-case symbols, e.g. ``["BTCUSDT", "ETHUSDT"]`` (upper-cased).
        max_incoming_per_s: client messages allowed per second (None: unlimited).
        rest_weight_limit_1m: REST request weight per 60 s before 429 (None: unlimited).
        mids: initial mid per symbol (default by base asset: BTC 60000, ETH 3000, BNB 600,
            SOL 150, others 100).
        Others: as :class:`SimVenue`'s (by default 3 endpoints, Binance's 0.1 s interval,
            pings every 20 s with a 60 s timeout; no heartbeats).

    The ``notice`` fault is Binance's ``serverShutdown`` (:meth:`send_shutdown_notice`).
    """

    protocol: BinanceSpotProtocol
    #: The venue's limits and keepalive; each may be given as a keyword argument.
    venue_defaults: Mapping[str, Any] = {
        "max_incoming_per_s": 5,
        "rest_weight_limit_1m": 6000,
        "ping_interval_s": 20.0,
        "ping_timeout_s": 60.0,
    }
    #: Book process steps per interval (``actions_per_step`` is shared among them).
    steps_per_interval = 1

    def __init__(
        self,
        symbols: Sequence[str],
        n_endpoints: int = 3,
        seed: int = 1,
        interval_s: float = 0.1,
        *args: Any,
        mids: Mapping[str, float] | None = None,
        actions_per_step: float = 8.0,
        **kwargs: Any,
    ) -> None:
        if actions_per_step <= 0.0:
            raise ValueError("actions_per_step must be > 0")
        options = {**self.venue_defaults, **kwargs}
        protocol = self._binance_protocol(
            seed, options.pop("max_incoming_per_s"), options.pop("rest_weight_limit_1m")
        )
        super().__init__(
            protocol,
            [symbol.upper() for symbol in symbols],
            n_endpoints,
            seed,
            interval_s,
            *args,
            mids={symbol.upper(): mid for symbol, mid in (mids or {}).items()},
            actions_per_step=actions_per_step / self.steps_per_interval,
            heartbeat_interval_s=None,
            **options,
        )

    @classmethod
    def _binance_protocol(
        cls, seed: int, max_incoming_per_s: int | None, rest_weight_limit_1m: int | None
    ) -> BinanceSpotProtocol:
        return BinanceSpotProtocol(max_incoming_per_s, rest_weight_limit_1m)

    @property
    def rest_url(self) -> str:
        """``http://host:port`` of the REST endpoint (known once started)."""
        return f"http://{self._host}:{self._rest_port}"

    @property
    def rest_stats(self) -> RestStats:
        statuses = self.protocol.rest_statuses
        return RestStats(
            requests=self._rest_requests,
            snapshots_served=statuses.get(200, 0),
            rate_limited=statuses.get(429, 0),
        )

    def true_book(self, symbol: str) -> L2Book:
        """A copy of the venue's book of ``symbol`` as of :meth:`last_id`."""
        return super().true_book(symbol.upper())

    def last_id(self, symbol: str) -> int:
        """The venue update id of the latest published step of ``symbol``."""
        last = super().last_id(symbol.upper())
        assert last is not None
        return last

    def snapshot(self, symbol: str, limit: int = 100) -> tuple[int, list[Level], list[Level]]:
        """``(last_id, bids, asks)`` of ``symbol``, as the REST endpoint would serve it now."""
        return self.protocol.snapshot(symbol.upper(), limit)

    def send_shutdown_notice(self, index: int) -> None:
        """Queue Binance's ``serverShutdown`` notice to every connection of endpoint
        ``index``, after the frames already queued. Connections stay open."""
        self.send_notice(index)


class SimBinanceUsdm(SimBinanceSpot):
    """A seeded Binance USD-M futures venue (:mod:`feeds.sim.binance_usdm`, where the
    differences are listed): the spot simulator with the futures wire and limits (10 client
    messages/s, REST weight 2400/min, pings every 3 min with a 10 min timeout).

    :meth:`true_book` and :meth:`last_id` are the book and ``u`` of the last *published*
    event; :meth:`snapshot` is the engine's, which runs half an interval ahead of the
    stream. :meth:`pause` first publishes the open event (when called on the event loop),
    so while paused all three agree.
    """

    protocol: BinanceUsdmProtocol
    venue_defaults = {
        "max_incoming_per_s": usdm.MAX_MESSAGES_PER_S,
        "rest_weight_limit_1m": usdm.REST_WEIGHT_PER_MINUTE,
        "ping_interval_s": 180.0,
        "ping_timeout_s": 600.0,
    }
    # Two half steps per interval (see feeds.sim.binance_usdm).
    steps_per_interval = 2
    #: The venue protocol's class: USD-M's, or a subclass of it on USD-M's wire.
    protocol_type: type[BinanceUsdmProtocol] = BinanceUsdmProtocol

    @classmethod
    def _binance_protocol(
        cls, seed: int, max_incoming_per_s: int | None, rest_weight_limit_1m: int | None
    ) -> BinanceSpotProtocol:
        return cls.protocol_type(seed, max_incoming_per_s, rest_weight_limit_1m)

    @property
    def public_urls(self) -> list[str]:
        """``ws://host:port/public`` of every endpoint: the bases to pass to
        :func:`feeds.binance_usdm.stream_url`."""
        return [f"{url}/public" for url in self.endpoint_urls]

    @property
    def market_urls(self) -> list[str]:
        """``ws://host:port/market`` of every endpoint: for
        :func:`feeds.binance_usdm.market_stream_url`."""
        return [f"{url}/market" for url in self.endpoint_urls]

    def snapshot(self, symbol: str, limit: int = 500) -> tuple[int, list[Level], list[Level]]:
        """``(lastUpdateId, bids, asks)`` of ``symbol``, as the REST endpoint would serve it."""
        return super().snapshot(symbol, limit)


class SimBinanceCoinm(SimBinanceUsdm):
    """A seeded Binance COIN-M futures venue (:mod:`feeds.sim.binance_coinm`): the USD-M
    simulator with COIN-M's contracts (``BTCUSD_PERP``, ``BTCUSD_261225``), the ``ps`` pair
    in every depth event and ``/dapi/v1/depth``; COIN-M's limits are USD-M's."""

    protocol: BinanceCoinmProtocol
    protocol_type = BinanceCoinmProtocol
    venue_defaults = {
        **SimBinanceUsdm.venue_defaults,
        "max_incoming_per_s": coinm.MAX_MESSAGES_PER_S,
        "rest_weight_limit_1m": coinm.REST_WEIGHT_PER_MINUTE,
    }


# --- the venues that subscribe by message -------------------------------------------------


class _MessageVenue(SimVenue):
    """A venue whose protocol is built from the book's tick and lot and the options named
    in :attr:`protocol_options` (keyword arguments taken from those of :class:`SimVenue`).
    The other arguments, and their defaults, are :class:`SimVenue`'s."""

    #: The price tick of the books when none is given.
    default_tick = "0.01"
    #: Keyword arguments that go to :meth:`make_protocol`, with their defaults.
    protocol_options: Mapping[str, object] = {}

    def __init__(
        self,
        symbols: Sequence[str],
        *args: Any,
        tick: str | None = None,
        lot: str = DEFAULT_LOT,
        **kwargs: Any,
    ) -> None:
        tick = tick or self.default_tick
        options = {k: kwargs.pop(k, default) for k, default in self.protocol_options.items()}
        protocol = self.make_protocol(tick, lot, **options)
        super().__init__(protocol, symbols, *args, tick=tick, lot=lot, **kwargs)

    @staticmethod
    def make_protocol(tick: str, lot: str, **options: Any) -> VenueProtocol:
        raise NotImplementedError


class SimOkx(_MessageVenue):
    """A simulated OKX public endpoint set (:mod:`feeds.sim.okx`): ``SimOkx(["BTC-USDT"],
    n_endpoints=2)``; connect to :attr:`public_urls`; REST books on :attr:`rest_url`
    (:func:`feeds.okx.snapshot_url`). Keyword arguments are those of :class:`SimVenue`
    (``tick`` 0.1 by default); the price decimals are the tick's."""

    default_tick = "0.1"

    @staticmethod
    def make_protocol(tick: str, lot: str, **options: Any) -> VenueProtocol:
        return OkxProtocol(decimals(tick))

    @property
    def public_urls(self) -> list[str]:
        """``ws://host:port/ws/v5/public`` of every endpoint."""
        return [url + OKX_PATH for url in self.endpoint_urls]


class SimBybit(_MessageVenue):
    """A simulated Bybit endpoint set of one category (:mod:`feeds.sim.bybit`):
    ``SimBybit(["BTCUSDT"], category="linear")`` (default ``spot``); connect to
    :attr:`public_urls`; REST books on :attr:`rest_url` (:func:`feeds.bybit.snapshot_url`).
    Keyword arguments are those of :class:`SimVenue`."""

    protocol: BybitProtocol
    protocol_options = {"category": "spot"}

    @staticmethod
    def make_protocol(tick: str, lot: str, **options: Any) -> VenueProtocol:
        return BybitProtocol(options["category"], decimals(tick), decimals(lot))

    @property
    def public_urls(self) -> list[str]:
        """``ws://host:port/v5/public/<category>`` of every endpoint."""
        return [url + self.protocol.path for url in self.endpoint_urls]

    def u(self, symbol: str, depth: int) -> int | None:
        """The last ``u`` of ``orderbook.{depth}.{symbol}``."""
        return self.protocol.u(symbol, depth)


class SimKraken(_MessageVenue):
    """A simulated Kraken v2 endpoint set (:mod:`feeds.sim.kraken`):
    ``SimKraken(["BTC/USD"], n_endpoints=2)``; connect to :attr:`v2_urls`. Keyword arguments
    are those of :class:`SimVenue` (``tick`` 0.1 by default); the price precision is the
    tick's decimals, the qty precision 8. ``rest=True`` (the default) also serves
    ``GET /0/public/Depth`` on :attr:`rest_url`."""

    protocol: KrakenProtocol
    default_tick = "0.1"
    protocol_options = {"rest": True}

    @staticmethod
    def make_protocol(tick: str, lot: str, **options: Any) -> VenueProtocol:
        return KrakenProtocol(decimals(tick), tick=tick, lot=lot, rest=options["rest"])

    @property
    def v2_urls(self) -> list[str]:
        """``ws://host:port/v2`` of every endpoint."""
        return [url + KRAKEN_PATH for url in self.endpoint_urls]

    @property
    def precisions(self) -> dict[str, tuple[int, int]]:
        """``{symbol: (price_precision, qty_precision)}`` the venue renders at (what its
        ``instrument`` snapshot announces)."""
        return self.protocol.precisions


class SimCoinbase(_MessageVenue):
    """A simulated Advanced Trade endpoint set (:mod:`feeds.sim.coinbase`):
    ``SimCoinbase(["BTC-USD"], n_endpoints=2)``; connect to ``endpoint_urls[i]`` (path
    ``/``). Keyword arguments are those of :class:`SimVenue`. ``rest=True`` (the default)
    also serves the public product book on :attr:`rest_url`."""

    protocol_options = {"rest": True}

    @staticmethod
    def make_protocol(tick: str, lot: str, **options: Any) -> VenueProtocol:
        return CoinbaseProtocol(decimals(tick), rest=options["rest"])
