"""The service configuration: TOML validated into frozen msgspec Structs.

Unknown keys and out-of-range values stop start-up with a :class:`ConfigError` that names
the key (``$.venues[0].endpoints`` style paths, as msgspec reports them).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated
from typing import Final
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from gateway.core.limits import VenueLimits
from gateway.core.limits import plan_connections
from gateway.wire.tokens import Secret
from gateway.wire.tokens import TokenError
from gateway.wire.tokens import read_token_file
from gateway.wire.tokens import redact
from gateway.wire.tokens import redacted_repr
from gateway.wire.venues import ADAPTERS

SUPPORTED_VENUES: Final = tuple(ADAPTERS)
#: Symbols as venues spell them: BTCUSDT, BTC-USDT, BTC/USD, BTC-USDT-SWAP.
SYMBOL_PATTERN: Final = re.compile(r"^[A-Z0-9][A-Z0-9._/-]*$")

MAX_PORT: Final = 65535
Port = Annotated[int, msgspec.Meta(ge=0, le=MAX_PORT)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
#: A share of a whole: more than 0, at most 1.
Share = Annotated[float, msgspec.Meta(gt=0, le=1)]
#: The log levels a configuration and ``--log-level`` accept (in any case).
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
#: How log lines are written: ``text`` for people, ``json`` (one object a line) for collectors.
LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")


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


class ListenerLost(Exception):
    """A server that was listening no longer is (its socket stopped accepting or was
    closed under it, e.g. by an event loop that closes a listener on an accept error without
    a word): new clients would wait or be refused while the process looks alive. Raised once
    it has been logged; the command exits 1 with one line, no traceback."""


def listen_error(exc: OSError, host: str, port: int) -> ListenError:
    """The :class:`ListenError` of a failed bind of ``host:port``, keeping its errno."""
    reason = _LISTEN_REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    error = ListenError(f"cannot listen on {host}:{port}: {reason}")
    error.errno = exc.errno
    return error


#: A host name as DNS spells it: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME: Final = re.compile(
    r"^(?=.{1,253}\.?$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
MIN_TOKEN_LENGTH: Final = 16
#: A bearer token's characters (RFC 6750 ``b64token``).
_TOKEN: Final = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


def host_error(host: str) -> str | None:
    """Why ``host`` cannot be a listening address (None: an IP address or a host name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if _HOSTNAME.match(host):
            return None
        return (
            f"{host!r} is neither an IP address nor a host name "
            "(e.g. 127.0.0.1, ::1, localhost; 0.0.0.0 or :: for every interface)"
        )
    return None


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches: 127.0.0.0/8, ::1, ``localhost``."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, has_token: bool) -> str | None:
    """The start-up warning for a subscriber server on ``host`` (None: nothing to say):
    beyond loopback without a token, anyone who can reach the port may subscribe."""
    if has_token or is_loopback(host):
        return None
    return (
        f"serving subscribers on {host}, beyond loopback, without a token: anyone who can "
        "reach it may subscribe; set server.token (and server.allowed_origins for browsers)"
    )


def origin_error(origin: str) -> str | None:
    """Why ``origin`` cannot be an allowed Origin (None: ``scheme://host[:port]``); shows
    it without a password."""
    parts = urlsplit(origin)
    shown = redact(origin)
    try:
        _ = parts.port
    except ValueError:
        return f"{shown!r} has a bad port"
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        return f"{shown!r} is not an origin: scheme://host[:port], e.g. https://desk.example"
    return None


def _normalized_host(name: str) -> str:
    """``name`` as Host headers are compared: lower case, no trailing dot, an IP address
    in its canonical form (``[::1]``, ``0:0:0:0:0:0:0:1``: ``::1``)."""
    name = name.lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def allowed_host_error(host: str) -> str | None:
    """Why ``host`` cannot be an allowed Host name (None: a host name or an IP address,
    IPv6 with or without brackets, no port)."""
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    if host_error(bare) is None and (not bracketed or _is_ipv6(bare)):
        return None
    return f"{host!r} is not a host name or an IP address without a port (e.g. gw.desk.example)"


def _is_ipv6(name: str) -> bool:
    """Whether ``name`` is an IPv6 address (what brackets may enclose in a Host)."""
    try:
        return isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address)
    except ValueError:
        return False


def host_header_name(value: str) -> str | None:
    """The host of an HTTP ``Host`` header (``name``, ``name:port``, ``[v6]``,
    ``[v6]:port``), normalized (:func:`_normalized_host`); None when it is malformed."""
    if value.startswith("["):
        name, bracket, port = value[1:].partition("]")
        if not bracket or ":" not in name or (port and not port.startswith(":")):
            return None
        port = port[1:]
    else:
        name, _, port = value.partition(":")
        if ":" in port:
            return None
    if not name or (port and not (port.isascii() and port.isdigit() and int(port) <= MAX_PORT)):
        return None
    normalized = _normalized_host(name)
    return normalized if host_error(normalized) is None else None


#: Host names a loopback server answers besides its own address.
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def allowed_host_names(bound_host: str, configured: list[str] | None) -> frozenset[str] | None:
    """The Host names a TCP server bound to ``bound_host`` answers (against DNS rebinding),
    normalized; None: any. ``configured`` (``server.allowed_hosts``) when set; else, on
    loopback, the bound address and :data:`LOOPBACK_HOSTS`; beyond loopback, any."""
    if configured is not None:
        return frozenset(_normalized_host(host) for host in configured)
    if not is_loopback(bound_host):
        return None
    return LOOPBACK_HOSTS | {_normalized_host(bound_host)}


@redacted_repr
class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The local subscriber server and its per-subscriber limits (``docs/protocol.md``).
    Its ``repr`` shows no secret: the token is a :class:`Secret`, the origins redacted."""

    #: The address to listen on; loopback by default. Another one, without a ``token``,
    #: is warned about at start-up.
    host: str = "127.0.0.1"
    port: Port = 8765
    #: A Unix domain socket path served beside TCP (same protocol, routes and checks), for
    #: subscribers on the same host; None: TCP only.
    unix_path: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    #: The socket file's permissions (owner only by default).
    unix_mode: Annotated[int, msgspec.Meta(ge=0, le=0o777)] = 0o600
    #: Further connections are closed with 1013.
    max_subscribers: PositiveInt = 256
    #: A subscriber whose unsent bytes exceed this is behind and gets conflated.
    max_buffer_bytes: PositiveInt = 4 * 1024 * 1024
    #: ``/healthz`` answers 503 when at least this share of the symbols is not live.
    healthz_not_live_share: Share = 1.0
    #: A subscriber falling behind more often than this within ``conflation_window_s`` is
    #: disconnected (1008); 0: at the first time.
    max_conflations: Annotated[int, msgspec.Meta(ge=0)] = 5
    conflation_window_s: PositiveFloat = 60.0
    #: A subscriber behind for longer than this is disconnected (1008).
    max_behind_s: PositiveFloat = 5.0
    #: A larger request closes the connection (1009).
    max_request_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    #: Symbols one connection may be subscribed to (``too_many_subscriptions`` beyond).
    max_subscriptions: PositiveInt = 1024
    #: ``subscribe``, ``resync`` and ``list`` requests per second per connection, on
    #: average (``rate_limited`` beyond) ...
    requests_per_s: PositiveFloat = 20.0
    #: ... and at once.
    request_burst: PositiveInt = 40
    #: When set, every connection (WebSocket and HTTP) must present it: an
    #: ``Authorization: Bearer TOKEN`` header or ``?token=TOKEN``; refused with 401. At most
    #: one of ``token``, ``token_file`` and ``token_env`` is given; :func:`parse_config`
    #: reads the other two into ``token`` (and clears them), so a loaded configuration
    #: holds the token here whichever way it was given. Held as a :class:`Secret`, so that
    #: no ``repr`` of a configuration shows it.
    token: Annotated[str, msgspec.Meta(min_length=MIN_TOKEN_LENGTH)] | None = None
    #: A file whose first line (stripped) is the token, kept out of the configuration; a
    #: relative path is relative to the configuration file's directory.
    token_file: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    #: The name of an environment variable holding the token.
    token_env: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    #: Origins (``https://desk.example``) whose browser pages may connect; a connection
    #: with another ``Origin`` header is refused with 403. Clients that send no ``Origin``
    #: (not browsers) are not concerned.
    allowed_origins: list[str] = []
    #: Host names (or IP addresses) the TCP server answers, whatever the port in the
    #: ``Host`` header; a request naming another is refused with 421 (DNS rebinding).
    #: None: on loopback the bound address, ``localhost``, ``127.0.0.1`` and ``[::1]``;
    #: beyond loopback any; ``[]``: every TCP request is refused. The Unix socket is not
    #: concerned.
    allowed_hosts: list[str] | None = None
    #: Per symbol, the recent deltas kept for subscribers that reconnect with
    #: ``subscribe.recover``, and in a second ring the recent trades for
    #: ``subscribe.recover_trades``: at most this many bytes per ring (0: no recovery) ...
    recovery_bytes: Annotated[int, msgspec.Meta(ge=0)] = 1024 * 1024
    #: ... and none older than this.
    recovery_age_s: NonNegativeFloat = 60.0
    #: When the gateway stops, after its venues: how long each subscriber has to read what
    #: is queued for it and answer the close (1001); one that has not by then is aborted.
    stop_drain_s: PositiveFloat = 1.0

    def __post_init__(self) -> None:
        # However the server was made (decoded, constructed, replaced), its token is a
        # Secret: its repr, and the configuration's, does not show it.
        if self.token is not None and not isinstance(self.token, Secret):
            msgspec.structs.force_setattr(self, "token", Secret(self.token))


class LimitsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``venues[].limits``: the venue's limits as the gateway budgets them; each key unset
    is the venue's documented default (docs/architecture.md, "Venue limits")."""

    #: Connection attempts per ``connect_window_s`` per source address.
    connect_attempts: PositiveInt | None = None
    connect_window_s: PositiveFloat | None = None
    #: Client messages per second per connection.
    messages_per_s: PositiveFloat | None = None
    #: Client messages per second per source address (venues that count them so).
    messages_per_s_per_address: PositiveFloat | None = None
    #: Streams per connection (the venue's unit): symbols are sharded over connections.
    streams_per_connection: PositiveInt | None = None
    #: REST request weight per ``rest_window_s`` per source address.
    rest_weight: PositiveInt | None = None
    rest_window_s: PositiveFloat | None = None


@redacted_repr
class VenueConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One venue: its symbols, its redundant WebSocket endpoints, its REST bases. Its
    ``repr`` shows the URLs without a password or ``token=`` value (:func:`redact`)."""

    venue: str
    symbols: list[str]
    endpoints: list[str]
    #: REST bases for snapshots: required where the venue has no in-band snapshot (Binance);
    #: optional where it has both (OKX); ignored where it has no usable REST book.
    rest: list[str] = []
    #: Redundant connections opened to each endpoint (venues with one public endpoint).
    connections_per_endpoint: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    #: Levels of each REST snapshot, within what the venue's REST serves (validated);
    #: None: the venue's default (:func:`snapshot_limit`).
    snapshot_limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] | None = None
    reorder_window_ms: NonNegativeFloat = 100.0
    max_pending: PositiveInt = 4096
    #: The cap of each book's levels per side; None: the venue's default (README).
    max_levels: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    #: A frame above this many bytes is refused unread and its connection reopened (the
    #: venue broke its contract); None: the venue's default (README).
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1024**3)] | None = None
    #: The largest id jump one update may make before it is held for another connection
    #: to confirm; None: the venue's link rule's own (docs/architecture.md).
    max_id_jump: PositiveInt | None = None
    #: A connection that delivers nothing for this long is closed and reopened.
    stall_timeout_s: PositiveFloat = 10.0
    backoff_initial_s: PositiveFloat = 0.1
    backoff_max_s: PositiveFloat = 10.0
    #: The reconnect backoff starts over only after a connection was up and receiving this
    #: long, so an endpoint that accepts and drops backs off like one that refuses.
    healthy_after_s: NonNegativeFloat = 10.0
    #: Connections are renewed before the venue's 24 h limit, each at an age drawn from
    #: the last 5 % before it (jitter), make-before-break.
    max_connection_age_s: PositiveFloat = 23 * 3600.0
    #: A renewal's replacement that has not caught up this long after it was opened: the
    #: old connection is closed anyway (logged, counted).
    renew_timeout_s: PositiveFloat = 30.0
    #: A connection whose score (docs/architecture.md, Endpoint scoring) stays this much
    #: below every other's for ``replace_after_s`` is replaced by a fresh connection;
    #: then none is for ``replace_cooldown_s``.
    replace_margin: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.2
    replace_after_s: PositiveFloat = 60.0
    replace_cooldown_s: NonNegativeFloat = 300.0
    #: Endpoints connected only while every primary endpoint has been silent for
    #: ``standby_after_s``; released once a primary was receiving for
    #: ``standby_release_after_s``.
    standby_endpoints: list[str] = []
    standby_after_s: PositiveFloat = 10.0
    standby_release_after_s: NonNegativeFloat = 60.0
    rest_timeout_s: PositiveFloat = 10.0
    #: REST snapshot requests in flight at once for the venue (each symbol fetches and
    #: retries on its own, within the venue's weight budget).
    max_concurrent_snapshots: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    #: A symbol's failed snapshot fetches are retried after a backoff from 0.25 s,
    #: doubling, up to this.
    snapshot_backoff_max_s: PositiveFloat = 30.0
    #: A symbol's channel silent on a connection that carries other traffic for this many
    #: times its usual interval between updates, bounded by ``silence_min_s`` and
    #: ``silence_max_s``, is dead on that connection (0: not watched).
    silence_factor: NonNegativeFloat = 20.0
    silence_min_s: PositiveFloat = 5.0
    silence_max_s: PositiveFloat = 300.0
    #: A resubscribe not answered by a snapshot on its connection this long is asked again
    #: there, each further ask waiting twice as long, at most ``resubscribe_timeout_max_s``.
    resubscribe_timeout_s: PositiveFloat = 5.0
    resubscribe_timeout_max_s: PositiveFloat = 60.0
    #: A REST snapshot body above this is abandoned as a failed fetch (a 5000-level
    #: snapshot is well under 1 MiB).
    max_rest_body_bytes: PositiveInt = 16 * 1024 * 1024
    #: Every this many seconds, each live book with REST snapshots is compared with a REST
    #: snapshot fetched for it (an audit: counted, never applied); 0: never.
    audit_interval_s: NonNegativeFloat = 300.0
    limits: LimitsConfig = LimitsConfig()


def venue_limits(cfg: VenueConfig) -> VenueLimits:
    """The venue's documented limits with ``cfg.limits``' overrides."""
    base = ADAPTERS[cfg.venue].limits
    given = cfg.limits
    return VenueLimits(
        group=base.group,
        connect_attempts_per_window=given.connect_attempts or base.connect_attempts_per_window,
        connect_window_s=given.connect_window_s or base.connect_window_s,
        messages_per_s=given.messages_per_s or base.messages_per_s,
        max_streams_per_connection=given.streams_per_connection or base.max_streams_per_connection,
        rest_weight_per_window=given.rest_weight or base.rest_weight_per_window,
        rest_window_s=given.rest_window_s or base.rest_window_s,
        messages_per_s_per_address=given.messages_per_s_per_address
        or base.messages_per_s_per_address,
        subscribe_requests_per_hour=base.subscribe_requests_per_hour,
    )


def snapshot_limit(cfg: VenueConfig) -> int | None:
    """The levels each of the venue's REST snapshots asks for: ``cfg.snapshot_limit``, else
    the venue's default (1000 where it serves that, else its largest); None where the venue
    fetches none (it has no REST snapshots, or ``cfg.rest`` lists no base)."""
    adapter = ADAPTERS[cfg.venue]
    if adapter.snapshot_url is None or not cfg.rest:
        return None
    if cfg.snapshot_limit is not None:
        return cfg.snapshot_limit
    return adapter.default_snapshot_limit


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    venues: list[VenueConfig]
    server: ServerConfig = ServerConfig()
    log_level: str = "INFO"
    log_format: LogFormat = "text"


def _check_urls(urls: list[str], schemes: tuple[str, ...], where: str) -> None:
    if not urls:
        raise ConfigError(f"{where}: at least one URL is required")
    for i, url in enumerate(urls):
        parts = urlsplit(url)
        if parts.scheme not in schemes or not parts.hostname:
            shown = redact(url)
            raise ConfigError(
                f"{where}[{i}]: {shown!r} is not a {'/'.join(schemes)} URL with a host"
            )
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{where}: duplicate URLs")


#: The keys a subscriber token may be given by, one at most.
_TOKEN_KEYS: Final = ("token", "token_file", "token_env")


def token_error(token: str) -> str | None:
    """Why ``token`` cannot be a subscriber token (None: it can); never names the token."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"too short: at least {MIN_TOKEN_LENGTH} characters, {len(token)} given"
    if not _TOKEN.match(token):
        return "only letters, digits and - . _ ~ + / = (a bearer token's characters)"
    return None


def resolve_token(
    server: ServerConfig, environ: Mapping[str, str], base_dir: Path | None = None
) -> ServerConfig:
    """``server`` with the token of ``token_file`` (a relative path under ``base_dir``) or
    ``token_env`` (read in ``environ``) in ``token``, those two cleared; ``server`` itself
    when neither is set. Raises ConfigError naming the key: the file unreadable or its
    first line empty, the variable unset or empty, the token not a valid one."""
    if server.token_file is not None:
        key = "$.server.token_file"
        path = Path(server.token_file)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            token = read_token_file(path)
        except TokenError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    elif server.token_env is not None:
        key = "$.server.token_env"
        token = environ.get(server.token_env, "").strip()
        if not token:
            raise ConfigError(
                f"{key}: the environment variable {server.token_env} is not set or empty"
            )
    else:
        return server
    error = token_error(token)
    if error is not None:
        raise ConfigError(f"{key}: the token read is not valid: {error}")
    return msgspec.structs.replace(server, token=token, token_file=None, token_env=None)


def validate_server(server: ServerConfig) -> ServerConfig:
    """Checks what the types alone cannot of ``[server]``; returns it or raises ConfigError."""
    error = host_error(server.host)
    if error is not None:
        raise ConfigError(f"$.server.host: {error}")
    given = [key for key in _TOKEN_KEYS if getattr(server, key) is not None]
    if len(given) > 1:
        raise ConfigError(
            f"$.server: {', '.join(given)} given together; give one of " + ", ".join(_TOKEN_KEYS)
        )
    if server.token is not None:
        error = token_error(server.token)
        if error is not None:
            raise ConfigError(f"$.server.token: {error}")
    for i, origin in enumerate(server.allowed_origins):
        error = origin_error(origin)
        if error is not None:
            raise ConfigError(f"$.server.allowed_origins[{i}]: {error}")
    for i, allowed in enumerate(server.allowed_hosts or ()):
        error = allowed_host_error(allowed)
        if error is not None:
            raise ConfigError(f"$.server.allowed_hosts[{i}]: {error}")
    return server


def validate(config: Config) -> Config:
    """Checks what the types alone cannot; returns ``config`` or raises ConfigError."""
    if config.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"$.log_level: unknown level {config.log_level!r}")
    if not config.venues:
        raise ConfigError("$.venues: at least one venue is required")
    validate_server(config.server)
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
        if venue.standby_endpoints:
            _check_urls(venue.standby_endpoints, ("ws", "wss"), f"{where}.standby_endpoints")
        adapter = ADAPTERS[venue.venue]
        if venue.rest or (adapter.snapshot_url is not None and not adapter.in_band_snapshots):
            _check_urls(venue.rest, ("http", "https"), f"{where}.rest")
        limit = snapshot_limit(venue)
        if limit is not None and adapter.check_snapshot_limit is not None:
            try:
                adapter.check_snapshot_limit(limit)
            except ValueError as exc:
                raise ConfigError(f"{where}.snapshot_limit: {venue.venue}'s REST {exc}") from None
        if venue.max_levels is not None:
            floor = max(adapter.venue_depth or 1, limit or 1)
            if venue.max_levels < floor:
                raise ConfigError(
                    f"{where}.max_levels: must be >= {floor}, the depth of the venue's "
                    "snapshots (its maintained depth, or snapshot_limit)"
                )
        try:
            plan_connections(
                venue.symbols,
                venue.endpoints,
                max_streams=venue_limits(venue).max_streams_per_connection,
                streams_of=adapter.streams_per_symbol,
            )
        except ValueError as exc:
            raise ConfigError(f"{where}.limits.streams_per_connection: {exc}") from None
        if venue.silence_max_s < venue.silence_min_s:
            raise ConfigError(f"{where}.silence_max_s: must be >= silence_min_s")
        if venue.resubscribe_timeout_max_s < venue.resubscribe_timeout_s:
            raise ConfigError(
                f"{where}.resubscribe_timeout_max_s: must be >= resubscribe_timeout_s"
            )
        if venue.backoff_max_s < venue.backoff_initial_s:
            raise ConfigError(f"{where}.backoff_max_s: must be >= backoff_initial_s")
    return config


def parse_config(
    text: bytes | str,
    source: str = "<config>",
    *,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Decode and validate TOML text, and read the subscriber token where it is kept
    (:func:`resolve_token`: ``server.token_env`` in ``environ``, the process's environment
    by default; a relative ``server.token_file`` under ``base_dir``, the working directory
    by default). Raises ConfigError naming ``source`` and the key."""
    try:
        config = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        validate(config)
        server = resolve_token(config.server, os.environ if environ is None else environ, base_dir)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return msgspec.structs.replace(config, server=server)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """The configuration in the TOML file at ``path`` (:func:`parse_config`; a relative
    ``server.token_file`` is under the file's directory)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, str(path), environ=environ, base_dir=path.parent)
