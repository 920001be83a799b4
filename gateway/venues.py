"""The venue registry: what the service needs to know of each supported venue's adapter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from feeds import binance
from gateway.arbiter import BinanceSpotRule, LinkRule
from gateway.model import DepthSnapshot, VenueEvent


@dataclass(frozen=True)
class VenueAdapter:
    """A venue's pure functions: URLs, parsing, and the sequence rule of its book stream."""

    venue: str
    stream_url: Callable[[str, Sequence[str]], str]
    parse: Callable[[bytes, int, int], list[VenueEvent]]
    snapshot_url: Callable[[str, str, int], str]
    parse_snapshot: Callable[[str, bytes, int, int], DepthSnapshot]
    snapshot_weight: Callable[[int], int]
    #: REST request-weight budget per minute per IP.
    rest_weight_per_minute: int
    link_rule: Callable[[], LinkRule]
    #: URL paths of the venue's REST depth snapshots (to recognise them in captures).
    snapshot_paths: tuple[str, ...]


ADAPTERS: dict[str, VenueAdapter] = {
    "binance": VenueAdapter(
        venue=binance.VENUE,
        stream_url=binance.stream_url,
        parse=binance.parse,
        snapshot_url=binance.snapshot_url,
        parse_snapshot=binance.parse_snapshot,
        snapshot_weight=binance.snapshot_weight,
        rest_weight_per_minute=6000,
        link_rule=BinanceSpotRule,
        snapshot_paths=(binance.SNAPSHOT_PATH,),
    ),
}


def adapter_for(venue: str) -> VenueAdapter:
    try:
        return ADAPTERS[venue]
    except KeyError:
        raise ValueError(f"venue {venue!r} is not supported") from None
