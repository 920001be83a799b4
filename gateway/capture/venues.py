"""Which venue a recorded URL, frame or feed name belongs to: asked of the venue adapters.

Pure. Nothing here knows a venue: each adapter of :data:`gateway.wire.venues.ADAPTERS`
declares its hosts (and, where one host serves several venues, how a URL names one), how to
recognise one of its frames, and cryptofeed's names for it; these functions look them up.
A name returned may be a venue without an adapter that an adapter recognises (Bybit's
inverse category) or an exchange (``bybit``) where only the exchange is told:
:data:`KNOWN_VENUES` holds them all.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Final
from typing import TypeVar
from urllib.parse import urlsplit

from gateway.wire.venues import ADAPTERS
from gateway.wire.venues import VenueAdapter

__all__ = [
    "FRAME_HEAD_BYTES",
    "KNOWN_VENUES",
    "agreed_venue",
    "connection_venue",
    "cryptofeed_venue",
    "exchange_of",
    "first_frame_venue",
    "venue_from_frame",
    "venue_from_url",
]

#: Bytes of a frame that its venue is told from.
FRAME_HEAD_BYTES: Final = 4096


_T = TypeVar("_T")


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    """``items`` without repeats (by identity), in order: adapters share recognisers."""
    seen: dict[int, _T] = {}
    for item in items:
        seen.setdefault(id(item), item)
    return tuple(seen.values())


def _merged(tables: Iterable[Mapping[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for table in tables:
        merged.update(table)
    return merged


_ADAPTERS: Final[tuple[VenueAdapter, ...]] = tuple(ADAPTERS.values())
#: host -> venue the host names.
_HOSTS: Final = _merged(a.hosts for a in _ADAPTERS)
#: host -> how a URL on it names one of the venues it serves.
_URL_VENUE: Final[dict[str, Callable[[str], str | None]]] = {
    host: a.url_venue for a in _ADAPTERS if a.url_venue is not None for host in a.hosts
}
_FRAME_VENUE: Final = _unique(a.frame_venue for a in _ADAPTERS)
_CRYPTOFEED_NAMES: Final = _merged(a.cryptofeed_names for a in _ADAPTERS)

#: Every venue name the functions here can return.
KNOWN_VENUES: Final = (
    frozenset(ADAPTERS)
    | frozenset(_HOSTS.values())
    | frozenset(_CRYPTOFEED_NAMES.values())
    | frozenset(venue for a in _ADAPTERS for venue in a.url_venues)
)


def _host_of(url: str) -> str | None:
    """The adapters' host ``url`` is on: its host or the longest suffix of it after a dot."""
    host = (urlsplit(url).hostname or "").lower()
    while host:
        if host in _HOSTS:
            return host
        _, _, host = host.partition(".")
    return None


def venue_from_url(url: str) -> str | None:
    """The venue whose WebSocket or REST host ``url`` names, or None.

    From the host alone, so a host serving several venues gives their exchange (``bybit``):
    see :func:`connection_venue`.
    """
    host = _host_of(url)
    return _HOSTS[host] if host is not None else None


def connection_venue(url: str) -> str | None:
    """The venue of a connection or REST URL, as precise as the URL tells.

    :func:`venue_from_url`, refined where one host serves several venues by what the path or
    query names (``wss://stream.bybit.com/v5/public/linear`` is ``bybit-linear``).
    """
    host = _host_of(url)
    if host is None:
        return None
    refine = _URL_VENUE.get(host)
    return (refine(url) if refine is not None else None) or _HOSTS[host]


def venue_from_frame(frame: bytes) -> str | None:
    """The venue whose wire format one raw frame has, or None.

    Each adapter's recogniser is asked, in registry order, about the first
    :data:`FRAME_HEAD_BYTES` bytes; the first answer wins. A venue whose frames do not name
    the market answers with its exchange (Bybit: ``bybit``).
    """
    head = frame[:FRAME_HEAD_BYTES]
    for recognise in _FRAME_VENUE:
        venue = recognise(head)
        if venue is not None:
            return venue
    return None


def first_frame_venue(frames: Iterable[bytes]) -> str | None:
    """The venue of the first of ``frames`` whose shape tells one, or None."""
    for frame in frames:
        venue = venue_from_frame(frame)
        if venue is not None:
            return venue
    return None


def cryptofeed_venue(name: str) -> str | None:
    """The venue of a cryptofeed feed id (``BINANCE_FUTURES``, any case), or None."""
    return _CRYPTOFEED_NAMES.get(name.upper())


def exchange_of(venue: str) -> str:
    """The exchange ``venue`` is a market of where several venues share it, else
    ``venue``."""
    adapter = ADAPTERS.get(venue)
    return adapter.exchange if adapter is not None and adapter.exchange else venue


def agreed_venue(venues: Mapping[str, str]) -> str | None:
    """The venue of a capture whose connections name ``venues`` (venue -> its exchange):
    the one venue, else the one exchange they share, else None (no venue, or several)."""
    if len(venues) == 1:
        return next(iter(venues))
    exchanges = set(venues.values())
    return exchanges.pop() if len(exchanges) == 1 else None
