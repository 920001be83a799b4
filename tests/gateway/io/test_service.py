"""VenueRuntime without network: frames in, counters and published events out."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from collections.abc import Sequence
from unittest.mock import patch

import msgspec
import pytest

from gateway.core import pipeline
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthSnapshot
from gateway.core.model import GatewayEvent
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import TradeOut
from gateway.core.renewal import AGE_JITTER
from gateway.core.sequenced import SequencedBook
from gateway.io.service import Service
from gateway.io.upstream import Sent
from gateway.io.venue_runtime import VenueRuntime
from gateway.wire.config import Config
from gateway.wire.config import VenueConfig
from gateway.wire.config import validate
from gateway.wire.venues import ADAPTERS

BINANCE = VenueConfig(
    "binance", ["BTCUSDT"], ["ws://127.0.0.1:1", "ws://127.0.0.1:2"], rest=["http://127.0.0.1:3"]
)
OKX = VenueConfig("okx", ["BTC-USDT"], ["wss://ws.okx.com:8443/ws/v5/public"])
CONFIG = validate(Config(venues=[BINANCE]))


def venue_runtime(
    cfg: VenueConfig,
    publish: Callable[[Sequence[GatewayEvent]], None] = lambda events: None,
    now_ns: Callable[[], int] = lambda: 0,
) -> VenueRuntime:
    """The runtime of ``cfg``, validated as a configuration's venue is."""
    (validated,) = validate(Config(venues=[cfg])).venues
    return VenueRuntime(validated, itertools.count(0), publish, now_ns)


def depth(first: int, last: int, price: str = "100.0", qty: str = "1") -> bytes:
    return (
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
        + f'"U":{first},"u":{last},"b":[["{price}","{qty}"]],"a":[]}}}}'.encode()
    )


def runtime() -> tuple[VenueRuntime, list[GatewayEvent]]:
    published: list[GatewayEvent] = []

    def publish(events: Sequence[GatewayEvent]) -> None:
        published.extend(events)

    venue = venue_runtime(BINANCE, publish)
    for conn in venue.connections.values():
        venue.on_state(conn.conn_id, True)
    return venue, published


def test_bad_frames_are_counted_and_never_touch_the_book() -> None:
    venue, published = runtime()
    assert venue.fetcher is not None
    venue.on_frame(0, depth(10, 11), 1)
    assert venue.fetcher._queued == {"BTCUSDT"}, "the first diff asks for a snapshot"
    venue.on_snapshot(DepthSnapshot("binance", "BTCUSDT", 11, (("99.0", "2"),), (), 1, -1), 1)
    assert any(isinstance(e, BookReset) for e in published)
    book = venue.books["binance:BTCUSDT"]
    before = book.book.normalized()
    for junk in (b"", b"{", b"\x80\x81", depth(12, 12, qty="-1"), depth(12, 12, price="x")):
        assert venue.on_frame(0, junk, 1) is False
    assert venue.stats.bad_frames == 5 and venue.bad_frames_by_conn == {0: 5}
    assert book.book.normalized() == before and book.applied_id == 11
    # The good copy of id 12 from the other connection is applied.
    venue.on_frame(1, depth(12, 12, qty="3"), 1)
    assert book.applied_id == 12 and book.book.bids() == [("100.0", "3"), ("99.0", "2")]
    assert isinstance(published[-1], BookDelta)


def test_unknown_symbols_notices_and_trades() -> None:
    venue, published = runtime()
    other = depth(1, 2).replace(b"BTCUSDT", b"ETHUSDT").replace(b"btcusdt", b"ethusdt")
    venue.on_frame(0, other, 1)
    assert venue.stats.unknown_symbols == 1
    assert venue.on_frame(0, b'{"code":1,"msg":"Invalid value type"}', 1) is False
    shutdown = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}'
    # The notice renews the connection make-before-break: the reader is not told to close.
    assert venue.on_frame(0, shutdown, 1) is False
    assert venue.renewals.stats(0).due == {"notice": 1} and len(venue.connections) == 3
    assert venue.stats.notices == 2
    trade = (
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,'
        b'"p":"1.0","q":"2.0","T":1,"m":false,"M":true}}'
    )
    venue.on_frame(0, trade, 1)
    venue.on_frame(1, trade, 2)
    trades = [e for e in published if isinstance(e, TradeOut)]
    assert len(trades) == 1 and trades[0].trade.conn_id == 0


def test_connection_ages_are_jittered_and_connections_carry_every_symbol() -> None:
    venue, _ = runtime()
    ages = [c._max_age_s for c in venue.connections.values()]
    max_age_s = venue.cfg.max_connection_age_s
    assert len(set(ages)) == len(ages)
    assert all(max_age_s * (1 - AGE_JITTER) <= age <= max_age_s for age in ages)
    assert all("btcusdt@depth@100ms" in c.url for c in venue.connections.values())


def test_trades_on_their_own_endpoint_get_connections_the_books_do_not_count() -> None:
    usdm = VenueConfig(
        "binance-usdm",
        ["BTCUSDT"],
        ["wss://fstream.binance.com/public"],
        rest=["https://fapi.binance.com"],
        connections_per_endpoint=2,
    )
    published: list[GatewayEvent] = []
    venue = venue_runtime(usdm, published.extend)
    urls = {c.conn_id: c.url for c in venue.connections.values()}
    assert len(urls) == 3 and venue.trade_connections == {2}
    assert urls[2] == "wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade"
    assert urls[0] == urls[1] and "/public/stream?streams=btcusdt@depth@100ms" in urls[0]
    for conn_id in urls:
        venue.on_state(conn_id, True)
    book = venue.books["binance-usdm:BTCUSDT"]
    assert isinstance(book, SequencedBook)
    assert set(book._conn_high) == {0, 1}
    trade = (
        b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":5,'
        b'"p":"1.0","q":"2.0","f":1,"l":2,"T":1,"m":true}}'
    )
    venue.on_frame(2, trade, 1)
    assert [type(e).__name__ for e in published] == ["TradeOut"]


def _okx_runtime(rest: list[str]) -> tuple[VenueRuntime, list[GatewayEvent]]:
    published: list[GatewayEvent] = []
    venue = venue_runtime(msgspec.structs.replace(OKX, rest=rest), published.extend)
    venue.on_state(0, True)
    return venue, published


def okx_update(prev: int, seq: int, price: str) -> bytes:
    return (
        '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{'
        f'"asks":[],"bids":[["{price}","1","0","1"]],"ts":"1","checksum":0,'
        f'"prevSeqId":{prev},"seqId":{seq}}}]}}'
    ).encode()


def test_another_connection_to_reopen_is_renewed_under_the_cause_the_book_gave() -> None:
    """A connection whose copies were contradicted is renewed as ``contradicted``; one
    silent when a venue reset was declared (no fault) as ``venue reset``. Neither is the
    connection whose frame gave the action, so neither is closed at once."""
    venue, _ = runtime()
    slots = {conn_id: venue.renewals.slot_of(conn_id) for conn_id in (0, 1)}
    assert None not in slots.values() and len(set(slots.values())) == 2
    step = pipeline.Step([], [pipeline.Reconnect(1, fault=False)])
    assert venue._act(step, frame_conn_id=0) is False
    step = pipeline.Step([], [pipeline.Reconnect(0)])
    assert venue._act(step, frame_conn_id=1) is False
    due = {
        conn_id: dict(venue.renewals.stats(slot).due)
        for conn_id, slot in slots.items()
        if slot is not None
    }
    assert due == {0: {"contradicted": 1}, 1: {"venue reset": 1}}


def test_a_slot_shows_its_url_without_the_password() -> None:
    cfg = msgspec.structs.replace(BINANCE, endpoints=["wss://desk:hunter2@127.0.0.1:1"])
    slots = venue_runtime(cfg).slots.values()
    assert slots and all("desk:***@127.0.0.1:1" in repr(slot) for slot in slots)
    assert all("hunter2" not in repr(slot) and "hunter2" in slot.url for slot in slots)


def test_okx_resubscribes_stay_within_its_requests_per_connection_and_hour() -> None:
    """A resubscription queued spends its messages of the connection's hourly budget; one
    not queued (the connection down, or the symbol's already queued) spends none. Past
    the budget the connection is renewed instead of sending."""
    now_ns = [0]
    venue = venue_runtime(OKX, now_ns=lambda: now_ns[0])
    venue.on_state(0, True)
    connection = venue.connections[0]
    slot = venue.renewals.slot_of(0)
    assert slot is not None and venue.limits.subscribe_requests_per_hour == 480
    budget = int(480 * 0.8)  # the share the gateway leaves itself of the venue's limit
    assert venue.adapter.resubscribe_messages is not None
    per_resubscribe = len(venue.adapter.resubscribe_messages("BTC-USDT"))

    def resubscribe(symbol: str) -> pipeline.Step:
        return pipeline.Step([], [pipeline.Resubscribe(0, symbol)])

    def renewed() -> int:
        return venue.renewals.stats(slot).due.get("subscribe budget", 0)

    # No session runs it: every resubscription is dropped, and spends nothing.
    for _ in range(budget):
        venue._act(resubscribe("BTC-USDT"))
    assert renewed() == 0 and connection.stats.messages_dropped == budget * per_resubscribe
    # Its session's queue, which no writer empties here.
    connection._outbox = asyncio.Queue(maxsize=2 * budget)
    for i in range(budget // per_resubscribe):
        venue._act(resubscribe(f"S{i}"))
        venue._act(resubscribe(f"S{i}"))  # queued already: answered, spends nothing
    assert renewed() == 0 and connection._outbox.qsize() == budget
    # Spent: the next resubscription renews the connection instead of sending.
    venue._act(resubscribe("BTC-USDT"))
    assert renewed() == 1 and connection._outbox.qsize() == budget, "nothing queued"
    # An hour later the connection may resubscribe again.
    now_ns[0] = 3600 * 1_000_000_000
    venue._act(resubscribe("BTC-USDT"))
    assert connection._outbox.qsize() == budget + per_resubscribe and renewed() == 1
    messages = venue.adapter.resubscribe_messages("BTC-USDT")
    assert connection.send(messages, key="BTC-USDT") is Sent.ANSWERED, "it is queued"


def test_okx_a_resubscription_is_never_sent_in_part_past_the_hourly_budget() -> None:
    """With fewer requests left in the hour than a resubscription takes, none of it is
    sent (the venue would count the first past its limit): the connection is renewed."""
    venue = venue_runtime(OKX, now_ns=lambda: 0)
    venue.on_state(0, True)
    connection = venue.connections[0]
    slot = venue.renewals.slot_of(0)
    assert slot is not None and venue.adapter.resubscribe_messages is not None
    assert len(venue.adapter.resubscribe_messages("BTC-USDT")) == 2
    connection._outbox = asyncio.Queue(maxsize=1000)
    budget = int(480 * 0.8)
    # Other subscribe requests of the connection left one of the hour's requests.
    venue._act(pipeline.Step([], [pipeline.Resubscribe(0, "S0")]))
    venue._subscribe_budgets[0].spend(0.0, attempts=budget - 3)
    venue._act(pipeline.Step([], [pipeline.Resubscribe(0, "BTC-USDT")]))
    assert connection._outbox.qsize() == 2, "only S0's two requests are queued"
    assert venue.renewals.stats(slot).due.get("subscribe budget", 0) == 1
    assert venue._subscribe_budgets[0].attempts == budget - 1


def test_a_venue_whose_resubscription_never_fits_its_hourly_budget_is_refused() -> None:
    """A resubscription with more requests than a connection's whole hourly budget could
    never be sent (each resync would renew the connection instead): refused at start."""
    adapter = dataclasses.replace(ADAPTERS["okx"], subscribe_requests_per_hour=1)
    with (
        patch.dict(ADAPTERS, {"okx": adapter}),
        pytest.raises(ValueError, match="resubscribing BTC-USDT takes 2 requests, more than the 1"),
    ):
        venue_runtime(OKX)


def test_okx_resyncs_by_resubscribing_unless_rest_is_configured() -> None:
    venue, _ = _okx_runtime([])
    assert venue.fetcher is None
    venue.on_frame(0, okx_update(10, 15, "100"), 1)  # no book yet: a snapshot is wanted
    assert venue.stats.resubscribes == 1

    venue, published = _okx_runtime(["https://www.okx.com"])
    assert venue.fetcher is not None
    # snapshot_limit unset: OKX's largest depth, not the 1000 its REST would refuse.
    assert venue.fetcher._limit == 400
    venue.on_frame(0, okx_update(10, 15, "100"), 1)
    venue.on_frame(0, okx_update(15, 18, "101"), 1)
    assert venue.fetcher._queued == {"BTC-USDT"} and venue.stats.resubscribes == 0
    # The REST procedure: the first update kept has prevSeqId <= snapshot seqId < seqId.
    body = (
        b'{"code":"0","msg":"","data":[{"asks":[["102","1","0","1"]],'
        b'"bids":[["99","1","0","1"]],"ts":"1","seqId":16}]}'
    )
    from feeds import okx

    venue.on_snapshot(okx.parse_snapshot("BTC-USDT", body, 1), 1)
    book = venue.books["okx:BTC-USDT"]
    assert book.has_book and book.applied_id == 18
    assert book.book.bids() == [("101", "1"), ("99", "1")]
    assert any(type(e).__name__ == "BookReset" for e in published)


def depth_levels(first: int, last: int, bids: Sequence[tuple[str, str]]) -> bytes:
    levels = ",".join(f'["{price}","{qty}"]' for price, qty in bids)
    return (
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
        + f'"U":{first},"u":{last},"b":[{levels}],"a":[]}}}}'.encode()
    )


def test_the_configured_cap_bounds_the_book_and_an_oversized_frame_is_refused() -> None:
    published: list[GatewayEvent] = []
    venue = venue_runtime(msgspec.structs.replace(BINANCE, max_levels=1000), published.extend)
    venue.on_state(0, True)
    venue.on_frame(0, depth(10, 11), 1)
    asks = (("100000.0", "1"),)
    snapshot = DepthSnapshot("binance", "BTCUSDT", 11, (("50000.0", "1"),), asks, 1, -1)
    venue.on_snapshot(snapshot, 1)
    book = venue.books["binance:BTCUSDT"]
    assert book.book.max_levels == 1000 and book.state is SymbolState.LIVE
    # One frame of 50,000 levels: a contract error, the book untouched and still live.
    huge = [(f"{40000 + i * 0.01:.2f}", "1") for i in range(50_000)]
    venue.on_frame(0, depth_levels(12, 12, huge), 1)
    assert book.book.bid_count == 1 and book.stats.bad_updates == 1
    # Frames that grow the book beyond the cap: pruned farthest from the touch.
    for n in range(3):
        chunk = [(f"{49000 + n * 100 + i * 0.1:.1f}", "1") for i in range(500)]
        venue.on_frame(0, depth_levels(12 + n, 12 + n, chunk), 1)
    assert book.book.bid_count == 1000 and book.book.best_bid() == ("50000.0", "1")
    assert book.stats.levels_pruned == 501
    delta = published[-1]
    assert isinstance(delta, BookDelta) and delta.bids[-1][1] == "0"


def test_a_crossing_frame_is_not_published_and_asks_for_a_snapshot() -> None:
    venue, published = runtime()
    assert venue.fetcher is not None
    venue.on_frame(0, depth(10, 11), 1)
    venue.on_snapshot(
        DepthSnapshot("binance", "BTCUSDT", 11, (("99.0", "2"),), (("101.0", "1"),), 1, -1), 1
    )
    venue.fetcher._queued.clear()
    published.clear()
    venue.on_frame(0, depth(12, 12, price="102.0"), 1)
    assert published == [
        StatusChange(
            "binance:BTCUSDT", SymbolState.RESYNCING, "crossed book (bid 102.0 >= ask 101.0)"
        )
    ]
    assert venue.fetcher._queued == {"BTCUSDT"} and venue.stats.crossed_books == 1


def test_a_connection_that_goes_back_on_its_own_implausible_ids_is_reconnected() -> None:
    venue = venue_runtime(msgspec.structs.replace(BINANCE, max_id_jump=1000))
    for conn in venue.connections.values():
        venue.on_state(conn.conn_id, True)
    book = venue.books["binance:BTCUSDT"]
    assert isinstance(book, SequencedBook) and book.max_id_jump == 1000
    venue.on_snapshot(DepthSnapshot("binance", "BTCUSDT", 10, (("99", "1"),), (), 0, -1))
    assert not venue.on_frame(1, depth(11, 2000), 1), "held, not applied"
    assert venue.on_frame(1, depth(11, 11), 1), "its reader reconnects it"
    assert book.applied_id == 11 and book.stats.conn(1).disagreements == 1


def test_a_connection_whose_implausible_ids_the_others_contradict_is_renewed() -> None:
    venue = venue_runtime(msgspec.structs.replace(BINANCE, max_id_jump=1000))
    for conn in venue.connections.values():
        venue.on_state(conn.conn_id, True)
    book = venue.books["binance:BTCUSDT"]
    venue.on_snapshot(DepthSnapshot("binance", "BTCUSDT", 10, (("99", "1"),), (), 0, -1))
    assert not venue.on_frame(1, depth(11, 2000), 1), "held, not applied"
    assert not venue.on_frame(0, depth(11, 11), 1), "not the frame's connection: renewed"
    assert book.applied_id == 11 and book.stats.conn(1).disagreements == 1
    slot = venue.renewals.slot_of(1)
    assert slot is not None and venue.renewals.stats(slot).due == {"contradicted": 1}


def _sharded(symbols: list[str]) -> VenueRuntime:
    """binance-usdm (200 streams per connection) on two endpoints, REST configured."""
    endpoints = ["wss://a.example/public", "wss://b.example/public"]
    return venue_runtime(
        VenueConfig("binance-usdm", symbols, endpoints, rest=["https://fapi.binance.com"])
    )


def test_symbols_are_sharded_within_the_stream_limit_on_every_endpoint() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(401)]
    venue = _sharded(symbols)
    books = {c: s for c, s in venue.conn_symbols.items() if c not in venue.trade_connections}
    # 401 streams at 200 per connection: 3 groups on each of 2 endpoints.
    assert len(books) == 6
    assert all(len(s) <= 200 for s in venue.conn_symbols.values())
    for symbol in symbols:
        assert sum(symbol in s for s in books.values()) == 2
    for conn_id, carried in books.items():
        url = venue.connections[conn_id].url
        assert url.count("@depth@100ms") == len(carried)
    # A book hears only of its own connections.
    for conn_id in venue.connections:
        venue.on_state(conn_id, True)
    book = venue.books["binance-usdm:S000USDT"]
    assert isinstance(book, SequencedBook)
    assert set(book._conn_high) == {c for c, s in books.items() if "S000USDT" in s}


def test_venues_of_one_limit_group_share_their_budgets() -> None:
    venues = [
        VenueConfig("bybit-spot", ["BTCUSDT"], ["wss://stream.bybit.com/v5/public/spot"]),
        VenueConfig("bybit-linear", ["BTCUSDT"], ["wss://stream.bybit.com/v5/public/linear"]),
        VenueConfig(
            "coinbase",
            ["BTC-USD"],
            ["wss://advanced-trade-ws.coinbase.com"],
            connections_per_endpoint=3,
        ),
    ]
    service = Service(validate(Config(venues=venues)))
    spot, linear, coinbase = service.venues
    assert spot.attempts is linear.attempts and spot.attempts.budget == 400
    assert coinbase.attempts is not spot.attempts
    # Coinbase counts messages per IP: its connections share one bucket, no second over 8.
    buckets = {id(c.shared_messages) for c in coinbase.connections.values()}
    assert len(buckets) == 1 and coinbase.shared_messages is not None
    assert coinbase.shared_messages.burst + coinbase.shared_messages.rate_per_s <= 8.0
    assert all(c.shared_messages is None for c in spot.connections.values())


def test_each_service_is_a_new_instance_with_epochs_of_its_own() -> None:
    first, restarted = Service(CONFIG), Service(CONFIG)
    assert first.instance.id != restarted.instance.id
    assert first.fanout.instance == first.instance.id
    assert first.fanout.trade_epoch == first.instance.epoch_base
    assert first.instance.epoch_base != restarted.instance.epoch_base
    assert max(first.instance.epoch_base, restarted.instance.epoch_base) < 2**52
    for service in (first, restarted):
        (venue,) = service.venues
        assert venue.pipeline.epoch_base == service.instance.epoch_base
        assert all(book.epoch == service.instance.epoch_base for book in venue.books.values())


def test_each_planned_connection_is_a_slot_and_its_renewal_carries_the_same_shard() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(401)]
    venue = _sharded(symbols)
    book_slots = {s: spec for s, spec in venue.slots.items() if not spec.trades_only}
    assert len(book_slots) == 6
    assert {spec.endpoint for spec in book_slots.values()} == {
        "wss://a.example/public",
        "wss://b.example/public",
    }
    for spec in book_slots.values():
        assert spec.url.count("@depth@100ms") == len(spec.symbols) <= 200
    trade_shards = [spec.symbols for spec in venue.slots.values() if spec.trades_only]
    # One trade connection group per distinct trade endpoint (two): each symbol on two.
    assert sorted(s for shard in trade_shards for s in shard) == sorted(symbols * 2)
    for conn_id in list(venue.connections):
        venue.on_state(conn_id, True)
    old = next(c for c, conn in venue.connections.items() if conn.slot == 0)
    shard = venue.slots[0].symbols
    venue._renew(venue.renewals.due(old, "age"))
    new = max(venue.connections)  # the replacement: a conn id of its own, the slot stays
    assert venue.connections[new].slot == 0 and venue.conn_symbols[new] == shard
    assert venue.connections[new].url == venue.connections[old].url
    venue.on_state(new, True)
    inside, outside = venue.books[f"binance-usdm:{shard[0]}"], venue.books["binance-usdm:S400USDT"]
    assert "S400USDT" not in shard
    assert isinstance(inside, SequencedBook) and isinstance(outside, SequencedBook)
    assert new in inside._conn_high and new not in outside._conn_high
    # Closed for good (renewed): the pipeline forgets the old connection's shard.
    venue._stop(old)
    assert old not in venue.connections and old not in venue.pipeline._conn_keys


def test_a_refused_symbol_is_left_out_of_its_own_slots_shard_only() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(401)]
    venue = _sharded(symbols)
    before = dict(venue.slots)
    refused = "S000USDT"
    conn_id = next(
        c
        for c, conn in venue.connections.items()
        if refused in venue.slots[conn.slot].symbols and not venue.slots[conn.slot].trades_only
    )
    venue._without(pipeline.SymbolRejected(conn_id, refused, True))
    assert venue.subscribed == symbols[1:]
    for slot, spec in venue.slots.items():
        assert spec.symbols == tuple(s for s in before[slot].symbols if s != refused)
        if refused in before[slot].symbols:
            assert "s000usdt@" not in spec.url and spec.url != before[slot].url
        else:
            assert spec == before[slot], "a slot without the symbol is untouched"
    for connection in venue.connections.values():
        assert connection.url == venue.slots[connection.slot].url
