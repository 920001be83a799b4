"""``/metrics`` and ``/healthz`` of a running gateway against a simulated venue on loopback,
and docs/metrics.md against what is exported: names, types and labels."""

from __future__ import annotations

import re
from collections.abc import Iterable

import httpx
import msgspec
import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from feeds.sim.simulators import SimBinanceUsdm
from gateway.core.model import SymbolState
from gateway.core.renewal import Renewal
from gateway.core.stats import FdExhaustionStats
from gateway.io.logs import FD_EXHAUSTION
from gateway.io.service import Service
from gateway.wire.config import Config
from tests.harness import wait_until
from tests.subscriber import ROOT
from tests.subscriber import loopback_config
from tests.subscriber import serving

DOC = ROOT / "docs" / "metrics.md"
VENUE = "binance-usdm"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KEYS = [f"{VENUE}:{s}" for s in SYMBOLS]


def documented_names() -> set[str]:
    """The names of docs/metrics.md's tables (first column, in backquotes)."""
    return set(documented_families())


#: The types docs/metrics.md writes, as prometheus_client names them.
DOC_TYPES = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "gauge (state set)": "stateset",
}
#: A row of docs/metrics.md's tables: name, type, labels.
MARKDOWN_ROW = re.compile(r"^\| `([a-z_:]+)` \| ([a-z ()]+?) \|\s*([a-z_, ]*?)\s*\|", re.MULTILINE)


def documented_families() -> dict[str, tuple[str, tuple[str, ...]]]:
    """docs/metrics.md's tables: each family's exposed name, with its type as
    prometheus_client names it and its labels, in order."""
    families = {}
    for name, kind, labels in MARKDOWN_ROW.findall(DOC.read_text()):
        names = tuple(label.strip() for label in labels.split(",") if label.strip())
        families[name] = (DOC_TYPES[kind], names)
    return families


def exported_families(families: Iterable[Metric]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each family as collected: its exposed name, type and label names. A family keeps
    the label names it was built with (``_labelnames``; a family with no series has its
    labels nowhere else); a state set adds the label of its states, named as the family."""
    exported = {}
    for family in families:
        labels: tuple[str, ...] = tuple(getattr(family, "_labelnames", ()))
        if family.type == "stateset":
            labels += (family.name,)
        exported[exposed_names([family]).pop()] = (family.type, labels)
    return exported


def exposed_names(families: Iterable[Metric]) -> set[str]:
    """Each family's name as the text exposition shows it (counters with ``_total``)."""
    return {f.name + "_total" if f.type == "counter" else f.name for f in families}


def samples(families: list[Metric], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples named ``name``, by their sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in families
        for s in family.samples
        if s.name == name
    }


def test_every_exported_family_is_documented_with_its_type_and_labels() -> None:
    config = loopback_config(VENUE, ["BTCUSDT"], ["ws://127.0.0.1:1"], ["http://127.0.0.1:2"])
    registry = Service(config).metrics
    text = generate_latest(registry).decode()
    exported = exposed_names(text_string_to_metric_families(text))
    documented = documented_families()
    assert len(documented) > 40
    assert exported - documented.keys() == set(), "exported but not in docs/metrics.md"
    assert documented.keys() - exported == set(), "in docs/metrics.md but not exported"
    assert {kind for kind, _ in documented.values()} == set(DOC_TYPES.values())
    collected = exported_families(registry.collect())
    wrong = {
        name: (documented[name], got) for name, got in collected.items() if documented[name] != got
    }
    assert wrong == {}, "name: (documented, exported) type and labels"


def test_the_descriptor_exhaustions_accept_retries_are_exported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process's one FdExhaustion is scraped with every service's metrics."""
    config = loopback_config(VENUE, ["BTCUSDT"], ["ws://127.0.0.1:1"], ["http://127.0.0.1:2"])
    monkeypatch.setattr(FD_EXHAUSTION, "stats", FdExhaustionStats(retries_after_close=3))
    registry = Service(config).metrics
    name = "mdgateway_fanout_accept_retries_after_close_total"
    assert registry.get_sample_value(name) == 3.0
    FD_EXHAUSTION.stats.retries_after_close += 1
    assert registry.get_sample_value(name) == 4.0, "read at each scrape"


def _config(sim: SimBinanceUsdm) -> Config:
    return loopback_config(VENUE, SYMBOLS, sim.public_urls, [sim.rest_url])


@pytest.mark.async_timeout_s(40)
async def test_a_running_gateway_is_scraped_and_healthz_turns_503_when_no_symbol_is_live() -> None:
    async with (
        SimBinanceUsdm(SYMBOLS, n_endpoints=2, seed=3, interval_s=0.02) as sim,
        serving(_config(sim), KEYS) as (service, subscriber),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as http,
    ):
        client = subscriber.client
        await subscriber.until(lambda: all(client.book(k) is not None for k in KEYS), 15)
        await sim.wait_steps(10)

        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok" and health.json()["not_live"] == []

        response = await http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = list(text_string_to_metric_families(response.text))
        assert exposed_names(families) == documented_names()

        venue = (("venue", "binance-usdm"),)
        state = samples(families, "mdgateway_symbol_state")
        for symbol in SYMBOLS:
            for s in SymbolState:
                labels = (("mdgateway_symbol_state", s), ("symbol", symbol), *venue)
                assert state[tuple(sorted(labels))] == (1.0 if s == "live" else 0.0)
        frames = samples(families, "mdgateway_connection_frames_total")
        received = samples(families, "mdgateway_connection_received_bytes_total")
        assert len(frames) == 4, "2 book and 2 trade connections"
        assert all(frames[k] > 0 and received[k] > frames[k] for k in frames)
        wins = samples(families, "mdgateway_symbol_connection_first_wins_total")
        updates = samples(families, "mdgateway_symbol_updates_total")
        for symbol in SYMBOLS:
            per_symbol = [v for k, v in wins.items() if ("symbol", symbol) in k]
            # Each applied update was some connection's first arrival (and a snapshot
            # applied none): wins never exceed the updates, and both move.
            assert 0 < sum(per_symbol) <= updates[(("symbol", symbol), *venue)]
        latency = samples(families, "mdgateway_connection_event_latency_seconds_count")
        assert len(latency) == 2 and all(count > 0 for count in latency.values())
        assert samples(families, "mdgateway_snapshots_fetched_total")[venue] >= 2
        assert samples(families, "mdgateway_fanout_subscribers")[()] == 1.0
        assert samples(families, "mdgateway_trades_total")

        for index in range(2):
            await sim.close_endpoint(index)
        await wait_until(
            service.connection_changes,
            lambda: all(b.state == SymbolState.STALE for b in service.books.values()),
            10.0,
        )
        health = await http.get("/healthz")
        assert health.status_code == 503
        doc = health.json()
        assert doc["status"] == "unavailable" and doc["live"] == 0 and doc["total"] == 2
        assert {(s["symbol"], s["state"]) for s in doc["not_live"]} == {
            (key, "stale") for key in KEYS
        }
        assert all(s["reason"] for s in doc["not_live"])
        response = await http.get("/metrics")
        families = list(text_string_to_metric_families(response.text))
        up = samples(families, "mdgateway_connection_up")
        assert len(up) == 4 and set(up.values()) == {0.0}


@pytest.mark.async_timeout_s(40)
async def test_the_counts_by_key_are_exported_with_a_label_per_key() -> None:
    """Close codes sent, HTTP refusals, renewal causes and REST bases: one series a key."""
    async with SimBinanceUsdm(SYMBOLS, n_endpoints=2, seed=3, interval_s=0.02) as sim:
        config = _config(sim)
        # The test's subscriber is the one allowed: a second one is closed with 1013.
        server = msgspec.structs.replace(config.server, max_subscribers=1)
        async with (
            serving(msgspec.structs.replace(config, server=server), KEYS) as (service, subscriber),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as http,
        ):
            client = subscriber.client
            await subscriber.until(lambda: all(client.book(k) is not None for k in KEYS), 15)
            async with connect(f"ws://127.0.0.1:{service.port}/") as refused:
                with pytest.raises(ConnectionClosedError) as closed:
                    await refused.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            assert (await http.get("/no-such-path")).status_code == 404
            renewals = service.venues[0].renewals
            sim.send_shutdown_notice(0)
            # The notice renews endpoint 0's two connections (book, trades), one after the
            # other: until both are done.
            await wait_until(
                service.connection_changes,
                lambda: (
                    sum(renewals.stats(slot).due.get("notice", 0) for slot in renewals.slots) == 2
                    and all(renewals.state(slot) is Renewal.STEADY for slot in renewals.slots)
                ),
                15.0,
            )
            response = await http.get("/metrics")
            due_by_slot = {slot: dict(renewals.stats(slot).due) for slot in renewals.slots}

    families = list(text_string_to_metric_families(response.text))
    assert samples(families, "mdgateway_fanout_closes_sent_total") == {(("code", "1013"),): 1.0}
    assert samples(families, "mdgateway_fanout_http_refused_total") == {(("status", "404"),): 1.0}
    venue = ("venue", VENUE)
    fetched = samples(families, "mdgateway_snapshots_fetched_total")[(venue,)]
    by_base = samples(families, "mdgateway_snapshots_fetched_by_base_total")
    assert fetched >= 2 and by_base == {(("base", sim.rest_url), venue): fetched}
    due = samples(families, "mdgateway_slot_renewals_due_total")
    assert {key[0][1] for key in due} == {"notice"} and sum(due.values()) == 2.0
    assert due == {
        (("cause", cause), ("slot", str(slot)), venue): float(count)
        for slot, counts in due_by_slot.items()
        for cause, count in counts.items()
    }
