"""The service configuration: TOML validated into frozen msgspec Structs.

Unknown keys and out-of-range values stop start-up with a :class:`ConfigError` that names
the key (``$.venues[0].endpoints`` style paths, as msgspec reports them).
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Annotated, Final
from urllib.parse import urlsplit

import msgspec

from gateway.wire.venues import ADAPTERS

SUPPORTED_VENUES: Final = tuple(ADAPTERS)
#: Symbols as venues spell them: BTCUSDT, BTC-USDT, BTC/USD, BTC-USDT-SWAP.
SYMBOL_PATTERN: Final = re.compile(r"^[A-Z0-9][A-Z0-9._/-]*$")

MAX_PORT: Final = 65535
Port = Annotated[int, msgspec.Meta(ge=0, le=MAX_PORT)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
#: The log levels a configuration and ``--log-level`` accept (in any case).
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending key."""


class ListenError(OSError):
    """A server cannot listen on its address (in use, not an address of this host, not
    permitted): the address is the user's to change. The message names it and why."""


_LISTEN_REASONS: Final = {
    errno.EADDRINUSE: "the port is already in use",
    errno.EADDRNOTAVAIL: "not an address of this host",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}


def listen_error(exc: OSError, host: str, port: int) -> ListenError:
    """The :class:`ListenError` of a failed bind of ``host:port``, keeping its errno."""
    reason = _LISTEN_REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    error = ListenError(f"cannot listen on {host}:{port}: {reason}")
    error.errno = exc.errno
    return error


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The local subscriber server."""

    host: str = "127.0.0.1"
    port: Port = 8765
    max_subscribers: PositiveInt = 256
    #: A subscriber whose unsent bytes exceed this is behind and gets conflated.
    max_buffer_bytes: PositiveInt = 4 * 1024 * 1024


class VenueConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One venue: its symbols, its redundant WebSocket endpoints, its REST bases."""

    venue: str
    symbols: list[str]
    endpoints: list[str]
    #: REST bases for snapshots: required where the venue has no in-band snapshot (Binance);
    #: optional where it has both (OKX); ignored where it has no usable REST book.
    rest: list[str] = []
    #: Redundant connections opened to each endpoint (venues with one public endpoint).
    connections_per_endpoint: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    snapshot_limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 1000
    reorder_window_ms: NonNegativeFloat = 100.0
    max_pending: PositiveInt = 4096
    #: The largest id jump one update may make before it is held for another connection
    #: to confirm; None: the venue's link rule's own (docs/architecture.md).
    max_id_jump: PositiveInt | None = None
    #: A connection that delivers nothing for this long is closed and reopened.
    stall_timeout_s: PositiveFloat = 10.0
    backoff_initial_s: PositiveFloat = 0.1
    backoff_max_s: PositiveFloat = 10.0
    #: Connections are renewed before the venue's 24 h limit, staggered per endpoint.
    max_connection_age_s: PositiveFloat = 23 * 3600.0
    rest_timeout_s: PositiveFloat = 10.0


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    venues: list[VenueConfig]
    server: ServerConfig = ServerConfig()
    log_level: str = "INFO"


def _check_urls(urls: list[str], schemes: tuple[str, ...], where: str) -> None:
    if not urls:
        raise ConfigError(f"{where}: at least one URL is required")
    for i, url in enumerate(urls):
        parts = urlsplit(url)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(f"{where}[{i}]: {url!r} is not a {'/'.join(schemes)} URL with a host")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{where}: duplicate URLs")


def validate(config: Config) -> Config:
    """Checks what the types alone cannot; returns ``config`` or raises ConfigError."""
    if config.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"$.log_level: unknown level {config.log_level!r}")
    if not config.venues:
        raise ConfigError("$.venues: at least one venue is required")
    seen: set[str] = set()
    for i, venue in enumerate(config.venues):
        where = f"$.venues[{i}]"
        if venue.venue not in SUPPORTED_VENUES:
            raise ConfigError(
                f"{where}.venue: {venue.venue!r} is not supported (supported: "
                + ", ".join(SUPPORTED_VENUES)
                + ")"
            )
        if venue.venue in seen:
            raise ConfigError(f"{where}.venue: {venue.venue!r} is configured twice")
        seen.add(venue.venue)
        if not venue.symbols:
            raise ConfigError(f"{where}.symbols: at least one symbol is required")
        for j, symbol in enumerate(venue.symbols):
            if not SYMBOL_PATTERN.match(symbol):
                raise ConfigError(
                    f"{where}.symbols[{j}]: {symbol!r} must be the venue's upper-case symbol"
                )
        if len(set(venue.symbols)) != len(venue.symbols):
            raise ConfigError(f"{where}.symbols: duplicate symbols")
        _check_urls(venue.endpoints, ("ws", "wss"), f"{where}.endpoints")
        adapter = ADAPTERS[venue.venue]
        if venue.rest or (adapter.snapshot_url is not None and not adapter.in_band_snapshots):
            _check_urls(venue.rest, ("http", "https"), f"{where}.rest")
        if venue.backoff_max_s < venue.backoff_initial_s:
            raise ConfigError(f"{where}.backoff_max_s: must be >= backoff_initial_s")
    return config


def parse_config(text: bytes | str, source: str = "<config>") -> Config:
    """Decode and validate TOML text. Raises ConfigError naming ``source`` and the key."""
    try:
        config = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return validate(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: Path) -> Config:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, str(path))
