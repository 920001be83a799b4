"""The service's unsequenced path on a real Kraken session, without network: two
connections carry the same frames (one lagging), the leader fails mid-session, and the
subscribers' stream stays continuous and equal to the surviving replica."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from feeds import kraken
from gateway.core.book import L2Book
from gateway.core.budget import AttemptBudget
from gateway.core.model import BookDelta, BookReset, GatewayEvent
from gateway.core.replicated import ReplicatedBook
from gateway.io.upstream import Sent
from gateway.io.venue_runtime import VenueRuntime
from gateway.wire.config import parse_config

from ...feeds.test_kraken import MATIC_SNAPSHOT, MATIC_UPDATE

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


def test_kraken_resubscribes_again_on_the_configured_waits_while_no_snapshot_comes(
    real_data: RealData,
) -> None:
    """The configuration's ``resubscribe_timeout_s`` and ``resubscribe_timeout_max_s``
    drive the venue's pipeline: connection 1's failed replica is resubscribed, then again
    1.5 s later and 3 s after that (the cap), on the clock the runtime reads."""
    lines = real_data("kraken/flashbook/live-btc-eth.ndjson").read_bytes().splitlines()
    config = parse_config(
        """
[[venues]]
venue = "kraken"
symbols = ["BTC/USD", "ETH/USD"]
endpoints = ["wss://ws.kraken.com/v2/a", "wss://ws.kraken.com/v2/b"]
resubscribe_timeout_s = 1.5
resubscribe_timeout_max_s = 3
"""
    )
    clock_ns = [0]
    rt = VenueRuntime(
        config.venues[0], itertools.count(0), lambda events: None, lambda: clock_ns[0]
    )
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

    rt.connections[1].send = send  # type: ignore[method-assign]
    rt.on_state(0, True)
    rt.on_state(1, True)
    for line in lines[:300]:
        rt.on_frame(0, line, 0)
        rt.on_frame(1, line, 0)
    broken = next(line for line in lines[300:] if b'"ETH/USD"' in line and b'"update"' in line)
    rt.on_frame(1, re.sub(rb'"checksum":\d+', b'"checksum":1', broken), 0)
    resubscribe = kraken.resubscribe_messages("ETH/USD")
    assert sent == resubscribe
    for at_s, asks in ((1.4, 1), (1.5, 2), (4.4, 2), (4.5, 3), (7.5, 4)):
        clock_ns[0] = int(at_s * 1e9)
        rt.on_timer()
        assert sent == resubscribe * asks, at_s
    assert rt.stats.unanswered_resubscribes == 3
