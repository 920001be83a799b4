"""The service's unsequenced path on a real Kraken session, without network: two
connections carry the same frames (one lagging), the leader fails mid-session, and the
subscribers' stream stays continuous and equal to the surviving replica."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path

from feeds import kraken
from gateway.core.book import L2Book
from gateway.core.budget import AttemptBudget
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import GatewayEvent
from gateway.core.replicated import ReplicatedBook
from gateway.io.upstream import Sent
from gateway.io.venue_runtime import VenueRuntime
from gateway.wire.config import parse_config

from ...feeds.test_kraken import MATIC_SNAPSHOT
from ...feeds.test_kraken import MATIC_UPDATE

RealData = Callable[[str], Path]


class Subscriber:
    """Applies the published stream as it is published, as the fan-out's subscribers do."""

    def __init__(self) -> None:
        self.runtime: VenueRuntime | None = None
        self.books: dict[str, L2Book] = {}
        self.seqs: dict[str, int] = {}
        self.events: list[GatewayEvent] = []

    def publish(self, events: Sequence[GatewayEvent]) -> None:
        assert self.runtime is not None
        for event in events:
            self.events.append(event)
            if isinstance(event, BookReset):
                assert event.key not in self.books, "one snapshot: a failover is a delta"
                book = self.books[event.key] = L2Book()
                book.copy_from(self.runtime.books[event.key].book)
                self.seqs[event.key] = event.seq
            elif isinstance(event, BookDelta):
                assert event.seq == self.seqs[event.key] + 1
                self.seqs[event.key] = event.seq
                self.books[event.key].apply(event.bids, event.asks)


def runtime(venue: str, symbols: list[str], endpoint: str) -> tuple[VenueRuntime, Subscriber]:
    listed = ", ".join(f'"{s}"' for s in symbols)
    config = parse_config(
        f"""
[[venues]]
venue = "{venue}"
symbols = [{listed}]
endpoints = ["{endpoint}/a", "{endpoint}/b"]
"""
    )
    subscriber = Subscriber()
    rt = VenueRuntime(config.venues[0], itertools.count(0), subscriber.publish, lambda: 0)
    subscriber.runtime = rt
    return rt, subscriber


def test_kraken_session_through_two_connections_with_a_leader_failure(
    real_data: RealData,
) -> None:
    lines = real_data("kraken/flashbook/live-btc-eth.ndjson").read_bytes().splitlines()
    rt, subscriber = runtime("kraken", ["BTC/USD", "ETH/USD"], "wss://ws.kraken.com/v2")
    rt.on_state(0, True)
    rt.on_state(1, True)
    lag = 5
    half = len(lines) // 2
    for i in range(len(lines) + lag):
        if i < half:
            rt.on_frame(0, lines[i], i)
        elif i == half:
            rt.on_state(0, False)  # the leader's connection drops
        if i >= lag:
            rt.on_frame(1, lines[i - lag], i)
    assert rt.stats.bad_frames == 0
    assert set(subscriber.books) == {"kraken:BTC/USD", "kraken:ETH/USD"}
    for key, arbiter in rt.books.items():
        stats = arbiter.stats
        assert stats.checksum_failed == 0 and stats.checksum_ok > 0
        assert stats.failovers == 1 and stats.gaps == 0
        assert isinstance(arbiter, ReplicatedBook)
        replica = arbiter.replicas[1].book
        # What subscribers hold (snapshot + deltas) equals the surviving replica.
        assert subscriber.books[key].normalized() == replica.normalized()
        assert len(subscriber.books[key].bids()) == 10


def test_coinbase_sequence_jump_resubscribes_that_connection(real_data: RealData) -> None:
    import gzip
    import json

    rt, subscriber = runtime(
        "coinbase", ["BTC-USD", "ETH-USD"], "wss://advanced-trade-ws.coinbase.com"
    )
    rt.on_state(0, True)
    frames = []
    with gzip.open(real_data("coinbase/cryptofeed/COINBASE.jsonl.gz"), "rt") as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("t") == "recv":
                frames.append(record["data"].encode())
    reconnects = [rt.on_frame(0, frame, i) for i, frame in enumerate(frames[:300])]
    assert not any(reconnects) and rt.stats.connection_gaps == 0
    assert any(isinstance(e, BookReset) for e in subscriber.events)
    # Skip one message: the connection lost something; its replicas are resubscribed.
    sent: list[bytes] = []

    def send(
        messages: Sequence[bytes],
        key: str | None = None,
        *,
        budget: AttemptBudget | None = None,
        now_s: float = 0.0,
    ) -> Sent:
        sent.extend(messages)
        return Sent.QUEUED

    rt.connections[0].send = send  # type: ignore[method-assign]
    replicas = {k: b.replicas[0] for k, b in rt.books.items() if isinstance(b, ReplicatedBook)}
    assert len(replicas) == len(rt.books) and all(r.valid for r in replicas.values())
    assert rt.on_frame(0, frames[301], 301) is False, "no reconnect: a resubscribe"
    assert rt.stats.connection_gaps == 1
    assert not any(r.valid for r in replicas.values())
    assert rt.stats.resubscribes == 2  # one per symbol on this connection
    assert sum(b'"unsubscribe"' in m for m in sent) == 2
    assert sum(b'"type":"subscribe"' in m for m in sent) == 2


# The Kraken docs' MATIC/USD example drops trailing zeros (0.566), so its checksums hold
# only at the instrument's precision (4, 8).
MATIC_INSTRUMENT = (
    b'{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{"symbol":'
    b'"MATIC/USD","base":"MATIC","quote":"USD","status":"online","qty_precision":8,'
    b'"qty_increment":0.00000001,"price_precision":4,"price_increment":0.0001,'
    b'"cost_precision":5,"marginable":false,"has_index":true,"cost_min":0.5,'
    b'"tick_size":0.0001,"qty_min":5}]}}'
)


def test_kraken_checksums_use_the_precision_the_instrument_channel_announces() -> None:
    rt, _ = runtime("kraken", ["MATIC/USD"], "wss://ws.kraken.com/v2")
    assert b'"channel":"instrument"' in rt.adapter.subscribe_messages(["MATIC/USD"])[0]
    rt.on_state(0, True)
    book = rt.books["kraken:MATIC/USD"]
    # Without the precision the venue's digits are used, and this snapshot fails.
    rt.on_frame(0, MATIC_SNAPSHOT, 1)
    assert book.stats.checksum_failed == 1 and not book.has_book
    rt.on_frame(0, MATIC_INSTRUMENT, 2)
    rt.on_frame(0, MATIC_SNAPSHOT, 3)
    rt.on_frame(0, MATIC_UPDATE, 4)
    assert book.stats.checksum_ok == 2 and book.has_book
    assert book.book.bids()[-1] == ("0.5657", "1098.3947558")


class _Outbox:
    """Connection 1's ``send``, as ``Connection.send`` answers: each keyed group queued
    once until the test writes it (:meth:`write`, telling the runtime as the connection's
    writer does)."""

    def __init__(self, rt: VenueRuntime) -> None:
        self.rt = rt
        #: Drop every group (the connection's queue full).
        self.full = False
        self.queued: list[str] = []
        #: Every message queued.
        self.sent: list[bytes] = []
        rt.connections[1].send = self.send  # type: ignore[method-assign]

    def send(self, messages: Sequence[bytes], key: str | None = None, **_: object) -> Sent:
        if key in self.queued:
            return Sent.ANSWERED
        if self.full:
            return Sent.DROPPED
        self.sent.extend(messages)
        if key is not None:
            self.queued.append(key)
        return Sent.QUEUED

    def write(self) -> None:
        for key in self.queued:
            self.rt.on_sent(1, key)
        self.queued.clear()


def _kraken_runtime(timeouts: str) -> tuple[VenueRuntime, list[int]]:
    """Kraken's runtime on two connections with ``timeouts`` (configuration lines), on a
    clock the test moves (its one item, ns)."""
    config = parse_config(
        f"""
[[venues]]
venue = "kraken"
symbols = ["BTC/USD", "ETH/USD"]
endpoints = ["wss://ws.kraken.com/v2/a", "wss://ws.kraken.com/v2/b"]
{timeouts}
"""
    )
    clock_ns = [0]
    rt = VenueRuntime(
        config.venues[0], itertools.count(0), lambda events: None, lambda: clock_ns[0]
    )
    return rt, clock_ns


class _Live:
    """Kraken's runtime (``_kraken_runtime``) with both connections up, their
    subscriptions written at 0 and the session's first 300 frames received on both (every
    replica valid); connection 1 sends through an :class:`_Outbox`."""

    def __init__(self, real_data: RealData, timeouts: str) -> None:
        path = "kraken/flashbook/live-btc-eth.ndjson"
        self.lines = real_data(path).read_bytes().splitlines()
        self.rt, self.clock_ns = _kraken_runtime(timeouts)
        self.outbox = _Outbox(self.rt)
        for conn_id in (0, 1):
            self.rt.on_state(conn_id, True)
            self.rt.on_sent(conn_id, None)
        for line in self.lines[:300]:
            self.rt.on_frame(0, line, 0)
            self.rt.on_frame(1, line, 0)

    def fail_eth_on_1(self) -> None:
        """An ETH/USD update whose checksum connection 1's replica fails: resubscribed."""
        broken = next(
            line for line in self.lines[300:] if b'"ETH/USD"' in line and b'"update"' in line
        )
        self.rt.on_frame(1, re.sub(rb'"checksum":\d+', b'"checksum":1', broken), 0)

    def at(self, at_s: float) -> None:
        _at(self.rt, self.clock_ns, at_s)


def _at(rt: VenueRuntime, clock_ns: list[int], at_s: float) -> None:
    clock_ns[0] = int(at_s * 1e9)
    rt.on_timer()


def test_kraken_a_resubscribe_waits_from_when_its_connection_wrote_it_not_from_the_ask(
    real_data: RealData,
) -> None:
    """Connection 1's failed replica is resubscribed at 0 s; its connection writes the
    resubscription at 2 s (its paced queue). The 1.5 s wait starts then: nothing is asked
    again at 1.5 s (a re-ask would be answered by the queued one, and counted as
    unanswered), and it is asked again at 3.5 s."""
    live = _Live(real_data, "resubscribe_timeout_s = 1.5")
    outbox, stats = live.outbox, live.rt.stats
    live.fail_eth_on_1()
    resubscribe = kraken.resubscribe_messages("ETH/USD")
    assert outbox.sent == resubscribe and outbox.queued == ["ETH/USD"]
    for at_s in (1.5, 1.9):
        live.at(at_s)
    assert outbox.sent == resubscribe, "still queued: not asked again"
    live.clock_ns[0] = 2 * 10**9
    outbox.write()
    live.at(3.4)
    assert outbox.sent == resubscribe and stats.unanswered_resubscribes == 0
    live.at(3.5)
    assert outbox.sent == resubscribe * 2 and stats.unanswered_resubscribes == 1


def test_kraken_a_resubscribe_its_full_queue_dropped_is_asked_again_one_wait_later(
    real_data: RealData,
) -> None:
    """Connection 1's queue is full when its failed replica is resubscribed at 0 s: the
    resubscription is dropped, and its wait starts then (nothing will write it); at 1.5 s
    it is asked again, and queued."""
    live = _Live(real_data, "resubscribe_timeout_s = 1.5")
    live.outbox.full = True
    live.fail_eth_on_1()
    live.outbox.full = False
    live.at(1.4)
    assert live.outbox.sent == []
    live.at(1.5)
    assert live.outbox.sent == kraken.resubscribe_messages("ETH/USD")
    assert live.rt.stats.unanswered_resubscribes == 1


def test_kraken_a_first_snapshot_lost_is_asked_for_one_wait_after_the_subscription_was_written(
    real_data: RealData,
) -> None:
    """Connection 1 comes up at 0 s and its writer writes its subscription at 0.5 s (both
    symbols of its slot); ETH/USD's snapshot is lost there while its updates come. At 2 s,
    1.5 s after the write, ETH/USD is resubscribed on connection 1; BTC/USD, answered, is
    not."""
    lines = real_data("kraken/flashbook/live-btc-eth.ndjson").read_bytes().splitlines()
    rt, clock_ns = _kraken_runtime("resubscribe_timeout_s = 1.5")
    outbox = _Outbox(rt)
    for conn_id in (0, 1):
        rt.on_state(conn_id, True)
    rt.on_sent(0, None)
    _at(rt, clock_ns, 0.5)
    rt.on_sent(1, None)
    for line in lines[:300]:
        rt.on_frame(0, line, clock_ns[0])
        if not (b'"type":"snapshot"' in line and b'"ETH/USD"' in line):
            rt.on_frame(1, line, clock_ns[0])
    _at(rt, clock_ns, 1.9)
    assert outbox.sent == []
    _at(rt, clock_ns, 2.0)
    assert outbox.sent == kraken.resubscribe_messages("ETH/USD")
    assert rt.stats.unanswered_resubscribes == 1


def test_kraken_resubscribes_again_on_the_configured_waits_while_no_snapshot_comes(
    real_data: RealData,
) -> None:
    """The configuration's ``resubscribe_timeout_s`` and ``resubscribe_timeout_max_s``
    drive the venue's pipeline: connection 1's failed replica is resubscribed, then again
    1.5 s later and 3 s after that (the cap), on the clock the runtime reads; each
    resubscription written as soon as asked."""
    live = _Live(real_data, "resubscribe_timeout_s = 1.5\nresubscribe_timeout_max_s = 3")
    live.fail_eth_on_1()
    live.outbox.write()
    resubscribe = kraken.resubscribe_messages("ETH/USD")
    assert live.outbox.sent == resubscribe
    for at_s, asks in ((1.4, 1), (1.5, 2), (4.4, 2), (4.5, 3), (7.5, 4)):
        live.at(at_s)
        live.outbox.write()
        assert live.outbox.sent == resubscribe * asks, at_s
    assert live.rt.stats.unanswered_resubscribes == 3
