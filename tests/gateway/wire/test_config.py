from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from feeds import binance
from feeds import binance_coinm
from feeds import binance_usdm
from feeds import okx
from gateway.wire.config import Config
from gateway.wire.config import ConfigError
from gateway.wire.config import LimitsConfig
from gateway.wire.config import ServerConfig
from gateway.wire.config import VenueConfig
from gateway.wire.config import allowed_host_names
from gateway.wire.config import exposure_warning
from gateway.wire.config import host_error
from gateway.wire.config import host_header_name
from gateway.wire.config import is_loopback
from gateway.wire.config import load_config
from gateway.wire.config import parse_config
from gateway.wire.config import snapshot_limit
from tests.markdown import CODE
from tests.markdown import table_rows

ROOT = Path(__file__).resolve().parents[3]

GOOD = """
[server]
port = 9000

[[venues]]
venue = "binance"
symbols = ["BTCUSDT"]
endpoints = ["ws://127.0.0.1:9001", "ws://127.0.0.1:9002"]
rest = ["http://127.0.0.1:9100"]
"""


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "deploy").glob("*.toml")))
def test_every_shipped_config_is_valid(name: str) -> None:
    config = load_config(ROOT / "deploy" / name)
    assert config.venues and all(v.endpoints for v in config.venues)


def test_a_good_config_gets_defaults() -> None:
    config = parse_config(GOOD)
    assert config.server.port == 9000 and config.server.host == "127.0.0.1"
    venue = config.venues[0]
    assert venue.symbols == ["BTCUSDT"] and venue.reorder_window_ms == 100.0
    assert venue.healthy_after_s == 10.0 and venue.max_rest_body_bytes == 16 * 1024 * 1024
    assert config.server.healthz_not_live_share == 1.0 and config.log_format == "text"
    assert venue.max_id_jump is None  # the venue's link rule's own
    config = parse_config(
        GOOD.replace("port = 9000", "port = 9000\nhealthz_not_live_share = 0.5").replace(
            "[server]", 'log_format = "json"\n[server]'
        )
    )
    assert config.server.healthz_not_live_share == 0.5 and config.log_format == "json"


def test_the_plausibility_bound_is_configurable() -> None:
    config = parse_config(GOOD.replace("rest = [", "max_id_jump = 5000\nrest = ["))
    assert config.venues[0].max_id_jump == 5000


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("port = 9000", "prot = 9000"), ("unknown", "prot", "$.server")),
        (("port = 9000", "port = 70000"), "$.server.port"),
        (("port = 9000", 'port = "x"'), ("int", "str", "$.server.port")),
        (('venue = "binance"', 'venue = "nyse"'), "$.venues[0].venue: 'nyse' is not supported"),
        (('["BTCUSDT"]', '["btcusdt"]'), "$.venues[0].symbols[0]"),
        (('["BTCUSDT"]', "[]"), "$.venues[0].symbols: at least one symbol"),
        (('"ws://127.0.0.1:9001"', '"http://127.0.0.1:9001"'), "$.venues[0].endpoints[0]"),
        (('rest = ["http://127.0.0.1:9100"]', 'rest = ["ftp://x"]'), "$.venues[0].rest[0]"),
        (("[[venues]]", "[[venue]]"), ("unknown", "venue")),
        (('rest = ["http://127.0.0.1:9100"]', ""), "$.venues[0].rest: at least one URL"),
        (("port = 9000", "port = 9000\n[oops"), "not valid TOML"),
        (('rest = ["', 'healthy_after_s = -1\nrest = ["'), "$.venues[0].healthy_after_s"),
        (('rest = ["', 'max_rest_body_bytes = 0\nrest = ["'), "$.venues[0].max_rest_body_bytes"),
        (("rest = [", "max_id_jump = 0\nrest = ["), ("$.venues[0].max_id_jump", ">= 1")),
        (
            ("rest = [", "resubscribe_timeout_s = 0\nrest = ["),
            ("$.venues[0].resubscribe_timeout_s", "> 0"),
        ),
        (
            ("rest = [", "resubscribe_timeout_s = 9\nresubscribe_timeout_max_s = 8\nrest = ["),
            "$.venues[0].resubscribe_timeout_max_s: must be >= resubscribe_timeout_s",
        ),
        (("port = 9000", "healthz_not_live_share = 0"), "$.server.healthz_not_live_share"),
        (("port = 9000", "healthz_not_live_share = 1.5"), "$.server.healthz_not_live_share"),
        (("[server]", 'log_format = "xml"\n[server]'), "$.log_format"),
    ],
)
def test_bad_keys_and_values_are_named(
    edit: tuple[str, str], message: str | tuple[str, ...]
) -> None:
    """Our own messages verbatim; the TOML decoder's by what they name (key, path, type)."""
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace(*edit), "test.toml")
    words = (message,) if isinstance(message, str) else message
    assert all(word in str(info.value) for word in words), str(info.value)
    assert str(info.value).startswith("test.toml: ")


def test_a_bad_url_is_named_without_its_password() -> None:
    bad = GOOD.replace('"ws://127.0.0.1:9002"', '"http://desk:hunter2@127.0.0.1:9002"')
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "test.toml")
    assert "$.venues[0].endpoints[1]: 'http://desk:***@127.0.0.1:9002' is not a ws/wss URL" in str(
        info.value
    )
    assert "hunter2" not in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_invalid_utf8_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config(GOOD.encode() + b'log_level = "\x80"\n', "test.toml")


def test_venues_with_in_band_snapshots_need_no_rest() -> None:
    config = parse_config(
        '[[venues]]\nvenue = "kraken"\nsymbols = ["BTC/USD"]\nendpoints = ["wss://ws.kraken.com/v2"]\n'
    )
    assert config.venues[0].rest == []


def test_the_simulator_config_matches_the_port_plan_of_mdgateway_sim() -> None:
    from urllib.parse import urlsplit

    from gateway.tools.demo import DEMO_VENUES
    from gateway.tools.demo import sim_ports

    config = load_config(ROOT / "deploy" / "sim-all.toml")
    by_venue = {v.venue: v for v in config.venues}
    assert list(by_venue) == [v.venue for v in DEMO_VENUES]
    for index, demo in enumerate(DEMO_VENUES):
        venue = by_venue[demo.venue]
        ports, rest_port = sim_ports(index, len(venue.endpoints))
        assert [urlsplit(e).port for e in venue.endpoints] == ports
        assert [urlsplit(r).port for r in venue.rest] == ([rest_port] if venue.rest else [])
        assert venue.symbols == list(demo.symbols)
    binance = load_config(ROOT / "deploy" / "sim-binance.toml").venues[0]
    assert binance.endpoints == by_venue["binance"].endpoints
    assert binance.rest == by_venue["binance"].rest


def test_redundant_connections_per_endpoint() -> None:
    import itertools

    from gateway.io.venue_runtime import VenueRuntime

    config = load_config(ROOT / "deploy" / "all-venues.toml")
    coinbase = next(v for v in config.venues if v.venue == "coinbase")
    runtime = VenueRuntime(coinbase, itertools.count(0), lambda events: None, lambda: 0)
    assert len(runtime.connections) == 3
    assert len({c.url for c in runtime.connections.values()}) == 1


SERVER_LIMITS = """
[server]
host = "gw-1.desk.internal"
port = 9000
max_subscribers = 10
max_buffer_bytes = 65536
max_conflations = 0
conflation_window_s = 30
max_behind_s = 2.5
max_request_bytes = 4096
max_subscriptions = 50
requests_per_s = 5
request_burst = 10
token = "0123456789abcdef-_.~+/="
allowed_origins = ["https://desk.example", "http://127.0.0.1:3000"]
allowed_hosts = ["gw-1.desk.internal", "[::1]"]

[[venues]]
venue = "kraken"
symbols = ["BTC/USD"]
endpoints = ["wss://ws.kraken.com/v2"]
"""


def test_every_server_limit_is_read_from_toml() -> None:
    server = parse_config(SERVER_LIMITS).server
    assert server == ServerConfig(
        host="gw-1.desk.internal",
        port=9000,
        max_subscribers=10,
        max_buffer_bytes=65536,
        max_conflations=0,
        conflation_window_s=30.0,
        max_behind_s=2.5,
        max_request_bytes=4096,
        max_subscriptions=50,
        requests_per_s=5.0,
        request_burst=10,
        token="0123456789abcdef-_.~+/=",
        allowed_origins=["https://desk.example", "http://127.0.0.1:3000"],
        allowed_hosts=["gw-1.desk.internal", "[::1]"],
    )


def test_the_server_defaults_are_loopback_without_token_or_origins() -> None:
    server = ServerConfig()
    assert server.host == "127.0.0.1" and is_loopback(server.host)
    assert server.token is None and server.allowed_origins == []
    assert server.allowed_hosts is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('host = "gw-1.desk.internal"', 'host = "gw 1"'), "$.server.host: 'gw 1' is neither"),
        (('host = "gw-1.desk.internal"', 'host = ""'), "$.server.host"),
        (('host = "gw-1.desk.internal"', 'host = "-bad.example"'), "$.server.host"),
        (('host = "gw-1.desk.internal"', 'host = "http://x"'), "$.server.host"),
        (
            ('token = "0123456789abcdef-_.~+/="', 'token = "short"'),
            ("length >= 16", "$.server.token"),
        ),
        (
            ('token = "0123456789abcdef-_.~+/="', 'token = "0123456789abcdef 0"'),
            "$.server.token: only",
        ),
        (
            ('"https://desk.example"', '"desk.example"'),
            "$.server.allowed_origins[0]: 'desk.example'",
        ),
        (('"https://desk.example"', '"https://desk.example/app"'), "$.server.allowed_origins[0]"),
        (('"https://desk.example"', '"https://desk.example:99999"'), "bad port"),
        (('"gw-1.desk.internal", "[::1]"', '"gw-1.desk.internal:9000"'), "allowed_hosts[0]"),
        (('"gw-1.desk.internal", "[::1]"', '"*"'), "$.server.allowed_hosts[0]: '*' is not"),
        (('"gw-1.desk.internal", "[::1]"', '"[gw-1.desk.internal]"'), "allowed_hosts[0]"),
        (('"gw-1.desk.internal", "[::1]"', '"[127.0.0.1]"'), "allowed_hosts[0]"),
        (("max_request_bytes = 4096", "max_request_bytes = 10"), "$.server.max_request_bytes"),
        (("max_conflations = 0", "max_conflations = -1"), "$.server.max_conflations"),
        (("max_behind_s = 2.5", "max_behind_s = 0"), "$.server.max_behind_s"),
        (("requests_per_s = 5", "requests_per_s = 0"), "$.server.requests_per_s"),
        (("request_burst = 10", "request_burst = 0"), "$.server.request_burst"),
        (("max_subscriptions = 50", "max_subscriptions = 0"), "$.server.max_subscriptions"),
    ],
)
def test_bad_server_values_are_named(edit: tuple[str, str], message: str | tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(SERVER_LIMITS.replace(*edit), "test.toml")
    words = (message,) if isinstance(message, str) else message
    assert all(word in str(info.value) for word in words), str(info.value)


@pytest.mark.parametrize(
    ("host", "valid", "loopback"),
    [
        ("127.0.0.1", True, True),
        ("127.1.2.3", True, True),
        ("::1", True, True),
        ("localhost", True, True),
        ("LOCALHOST.", True, True),
        ("0.0.0.0", True, False),
        ("::", True, False),
        ("10.0.0.5", True, False),
        ("gw-1.desk.internal", True, False),
        ("", False, False),
        ("gw_1", False, False),
        ("a" * 64 + ".example", False, False),
        ("1.2.3.4:80", False, False),
    ],
)
def test_hosts(host: str, valid: bool, loopback: bool) -> None:
    assert (host_error(host) is None) is valid
    assert is_loopback(host) is loopback


def test_exposure_is_warned_about_beyond_loopback_without_a_token() -> None:
    warning = exposure_warning("0.0.0.0", has_token=False)
    assert warning is not None and "0.0.0.0" in warning and "server.token" in warning
    assert exposure_warning("10.0.0.5", has_token=True) is None
    assert exposure_warning("127.0.0.1", has_token=False) is None
    assert exposure_warning("localhost", has_token=False) is None


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost.:8765", "localhost"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[0:0::1]:8765", "::1"),
        ("gw.example:", "gw.example"),
        ("::1", None),  # IPv6 without brackets
        ("[::1", None),
        ("[::1]8765", None),
        ("[gw.example]", None),
        ("gw.example:99999", None),
        ("gw.example:+1", None),
        (":8765", None),
        ("", None),
        ("evil host", None),
    ],
)
def test_host_headers_are_read_as_their_host_name(header: str, name: str | None) -> None:
    assert host_header_name(header) == name


def test_allowed_hosts_default_to_loopback_names_on_loopback_and_any_beyond() -> None:
    loopback = frozenset({"localhost", "127.0.0.1", "::1"})
    assert allowed_host_names("127.0.0.1", None) == loopback
    assert allowed_host_names("127.0.0.2", None) == loopback | {"127.0.0.2"}
    assert allowed_host_names("localhost", None) == loopback
    assert allowed_host_names("0.0.0.0", None) is None
    assert allowed_host_names("gw-1.desk.internal", None) is None
    # Configured, they are the only ones, beyond loopback too.
    assert allowed_host_names("0.0.0.0", ["GW.Example.", "[::1]"]) == frozenset(
        {"gw.example", "::1"}
    )
    assert allowed_host_names("127.0.0.1", []) == frozenset()


def config_defaults() -> dict[str, object]:
    """Every key of the configuration as the README spells it (``server.port``,
    ``venues[].limits.rest_weight``), with its default (:data:`REQUIRED`: none)."""
    keys: dict[str, object] = {}

    def walk(struct: type[msgspec.Struct], prefix: str) -> None:
        for field in msgspec.structs.fields(struct):
            if field.name == "venues":
                walk(VenueConfig, "venues[].")
            elif field.name in ("server", "limits"):
                walk(
                    ServerConfig if field.name == "server" else LimitsConfig,
                    f"{prefix}{field.name}.",
                )
            elif field.default is not msgspec.NODEFAULT:
                keys[prefix + field.name] = field.default
            elif field.default_factory is not msgspec.NODEFAULT:
                keys[prefix + field.name] = field.default_factory()
            else:
                keys[prefix + field.name] = REQUIRED

    walk(Config, "")
    return keys


REQUIRED = object()
#: What a README default is when it is not a value read here ("the venue's").
UNREAD = object()
UNITS = {"": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def readme_keys() -> dict[str, tuple[str, ...]]:
    """The README's configuration table: each row's keys, by its meaning. A key without
    ``server.`` or ``venues[].`` (``silence_min_s``, ``limits.connect_window_s``) has the
    prefix of its row's first key."""
    rows: dict[str, tuple[str, ...]] = {}
    for cell, meaning in table_rows((ROOT / "README.md").read_text(), "| key |"):
        names = CODE.findall(cell)
        prefix = re.match(r"(server\.|venues\[\]\.)?", names[0])
        assert prefix is not None
        rows[meaning] = tuple(
            n if n.startswith(("server.", "venues[].")) else prefix.group() + n for n in names
        )
    return rows


def readme_value(text: str) -> object:
    """A default as the README writes it: ``none``, a number with an optional binary unit
    (``1 MiB``), a literal in backquotes (`` `0o600` ``, `` `INFO` ``), a remark after a
    colon ignored; :data:`UNREAD` for anything else."""
    text = text.partition(":")[0].strip()
    if text == "none":
        return None
    literal = re.fullmatch(r"`([^`]+)`", text)
    if literal is not None:
        try:
            return int(literal[1], 0)
        except ValueError:
            return literal[1]
    number = re.fullmatch(r"(\d+(?:\.\d+)?)(?: (KiB|MiB|GiB))?", text)
    if number is None:
        return UNREAD
    return float(number[1]) * UNITS[number[2] or ""]


def readme_defaults(meaning: str, count: int) -> list[object] | None:
    """The defaults a row's meaning gives its ``count`` keys, in its last bracket
    (``[20, 5, 300; factor 0: not watched]``: what follows ``;`` is a remark), or None when
    it gives none this test reads (``[the venue's: ...]``)."""
    brackets = re.findall(r"\[([^\[\]]*)\](?!\()", meaning)
    if not brackets:
        return None
    values = [readme_value(item) for item in brackets[-1].partition(";")[0].split(", ")]
    if len(values) != count or UNREAD in values:
        return None
    return values


def test_the_readme_documents_every_config_key_with_its_default() -> None:
    defaults = config_defaults()
    rows = readme_keys()
    documented = [key for keys in rows.values() for key in keys]
    assert len(documented) == len(set(documented)), "a key documented twice"
    assert set(defaults) - set(documented) == set(), "config keys missing in the README"
    assert set(documented) - set(defaults) == set(), "README keys the config does not have"
    checked = 0
    for meaning, keys in rows.items():
        written = readme_defaults(meaning, len(keys))
        for key, value in zip(keys, written or (), strict=False):
            default = defaults[key]
            if value is None:
                assert default in (None, []), key
            else:
                assert default == value, key
            checked += 1
    assert checked >= 40, "the README's defaults are no longer read"


def test_readme_defaults_are_read_as_written() -> None:
    assert readme_defaults("cap [1 MiB, 60]", 2) == [1024**2, 60]
    assert readme_defaults("s ([docs](docs/a.md), x) [`0o600`: the owner]", 1) == [0o600]
    assert readme_defaults("[20, 5, 300; factor 0: not watched]", 3) == [20, 5, 300]
    assert readme_defaults("[`INFO`]", 1) == ["INFO"]
    assert readme_defaults("[none: TCP only]", 1) == [None]
    assert readme_defaults("[the venue's: table]", 1) is None
    assert readme_defaults("[1, 2]", 1) is None


def test_max_levels_defaults_to_the_venue_and_may_not_refuse_its_snapshots() -> None:
    assert parse_config(GOOD).venues[0].max_levels is None
    rest = 'rest = ["http://127.0.0.1:9100"]'
    config = parse_config(GOOD.replace(rest, rest + "\nmax_levels = 2000"))
    assert config.venues[0].max_levels == 2000
    # Below the REST snapshots' depth every snapshot would be refused.
    with pytest.raises(ConfigError, match=r"\$.venues\[0\].max_levels: must be >= 1000"):
        parse_config(GOOD.replace(rest, rest + "\nmax_levels = 999"))
    okx = GOOD.replace('"binance"', '"okx"').replace("BTCUSDT", "BTC-USDT").replace(rest, "")
    with pytest.raises(ConfigError, match=r"max_levels: must be >= 400"):
        parse_config(okx + "max_levels = 399\n")
    assert parse_config(okx + "max_levels = 400\n").venues[0].max_levels == 400
    with pytest.raises(ConfigError, match=r"\$.venues\[0\].max_levels"):
        parse_config(GOOD.replace(rest, rest + "\nmax_levels = 0"))


def _one_venue(venue: str, symbol: str, lines: str = "") -> str:
    return (
        f'[[venues]]\nvenue = "{venue}"\nsymbols = ["{symbol}"]\n'
        f'endpoints = ["wss://{venue}.example/ws"]\n{lines}\n'
    )


SYMBOLS = {"binance-coinm": "BTCUSD_PERP", "okx": "BTC-USDT"}
REST = 'rest = ["https://rest.example"]'
USDM_LIMITS = "must be one of 5, 10, 20, 50, 100, 500, 1000, got"


@pytest.mark.parametrize(
    ("venue", "lines", "error"),
    [
        ("binance", "snapshot_limit = 1", None),
        ("binance", "snapshot_limit = 5000", None),
        ("binance", "snapshot_limit = 5001", "$.venues[0].snapshot_limit"),
        ("binance", "snapshot_limit = 0", "$.venues[0].snapshot_limit"),
        ("binance-usdm", "snapshot_limit = 5", None),
        ("binance-usdm", "snapshot_limit = 1000", None),
        (
            "binance-usdm",
            "snapshot_limit = 200",
            f"$.venues[0].snapshot_limit: binance-usdm's REST snapshot limit {USDM_LIMITS} 200",
        ),
        (
            "binance-usdm",
            "snapshot_limit = 5000",
            f"$.venues[0].snapshot_limit: binance-usdm's REST snapshot limit {USDM_LIMITS} 5000",
        ),
        ("binance-coinm", "snapshot_limit = 500", None),
        (
            "binance-coinm",
            "snapshot_limit = 30",
            f"$.venues[0].snapshot_limit: binance-coinm's REST snapshot limit {USDM_LIMITS} 30",
        ),
        ("okx", "snapshot_limit = 1", None),
        ("okx", "snapshot_limit = 400", None),
        (
            "okx",
            "snapshot_limit = 401",
            "$.venues[0].snapshot_limit: okx's REST snapshot limit must be 1..400, got 401",
        ),
        (
            "okx",
            "snapshot_limit = 1000",
            "$.venues[0].snapshot_limit: okx's REST snapshot limit must be 1..400, got 1000",
        ),
    ],
)
def test_a_snapshot_limit_the_venue_refuses_is_named_with_what_it_serves(
    venue: str, lines: str, error: str | None
) -> None:
    text = _one_venue(venue, SYMBOLS.get(venue, "BTCUSDT"), f"{REST}\n{lines}")
    if error is None:
        config = parse_config(text, "test.toml")
        assert snapshot_limit(config.venues[0]) == int(lines.rpartition("=")[2])
        return
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.toml")
    assert str(info.value).startswith("test.toml: ") and error in str(info.value), info.value


@pytest.mark.parametrize(
    ("venue", "lines", "resolved"),
    [
        ("binance", REST, 1000),
        ("binance-usdm", REST, 1000),
        ("binance-coinm", REST, 1000),
        # 1000, the default elsewhere, is more than OKX's REST serves: its largest.
        ("okx", REST, 400),
        # No REST base: OKX resyncs in band, and a limit is never asked for.
        ("okx", "", None),
        ("okx", "snapshot_limit = 1000", None),
        # Bybit's REST book is not used (resyncs resubscribe), whatever is configured.
        ("bybit-spot", f"{REST}\nsnapshot_limit = 2000", None),
        ("kraken", "", None),
    ],
)
def test_an_unset_snapshot_limit_is_the_venues_default(
    venue: str, lines: str, resolved: int | None
) -> None:
    symbol = {"kraken": "BTC/USD"}.get(venue, SYMBOLS.get(venue, "BTCUSDT"))
    config = parse_config(_one_venue(venue, symbol, lines))
    assert snapshot_limit(config.venues[0]) == resolved


def test_the_max_levels_floor_is_the_resolved_snapshot_limit() -> None:
    okx = _one_venue("okx", "BTC-USDT", REST)
    assert parse_config(okx + "max_levels = 400\n").venues[0].max_levels == 400
    usdm = _one_venue("binance-usdm", "BTCUSDT", f"{REST}\nsnapshot_limit = 500")
    assert parse_config(usdm + "max_levels = 500\n").venues[0].max_levels == 500
    with pytest.raises(ConfigError, match=r"\$.venues\[0\].max_levels: must be >= 500"):
        parse_config(usdm + "max_levels = 499\n")
    # Bybit fetches no REST snapshot: its floor is its maintained depth alone.
    bybit = _one_venue("bybit-spot", "BTCUSDT", REST)
    assert parse_config(bybit + "max_levels = 200\n").venues[0].max_levels == 200


def test_the_readme_names_the_depths_each_venues_rest_serves() -> None:
    (row,) = (
        meaning
        for cell, meaning in table_rows((ROOT / "README.md").read_text(), "| key |")
        if cell == "`venues[].snapshot_limit`"
    )
    *most, last = binance_usdm.SNAPSHOT_LIMITS
    assert f"Binance spot 1-{binance.MAX_SNAPSHOT_LIMIT};" in row
    assert f"Binance USD-M and COIN-M {', '.join(map(str, most))} or {last};" in row
    assert f"OKX 1-{okx.MAX_SNAPSHOT_LIMIT})" in row
    defaults = {binance.DEFAULT_SNAPSHOT_LIMIT, binance_usdm.DEFAULT_SNAPSHOT_LIMIT}
    assert defaults == {binance_coinm.DEFAULT_SNAPSHOT_LIMIT}
    assert f"Binance spot, USD-M, COIN-M {defaults.pop()} (" in row
    assert f"OKX {okx.DEFAULT_SNAPSHOT_LIMIT}, its largest]" in row


# --- the subscriber token from a file or the environment ------------------------------------

TOKEN = "0123456789abcdef-_.~+/="
KRAKEN = """
[[venues]]
venue = "kraken"
symbols = ["BTC/USD"]
endpoints = ["wss://ws.kraken.com/v2"]
"""


def _with_server(lines: str) -> str:
    return f"[server]\n{lines}\n{KRAKEN}"


def test_the_token_is_read_from_a_file_under_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(f"{TOKEN}\n# comment\n")
    path = tmp_path / "gateway.toml"
    path.write_text(_with_server('token_file = "secrets/token"'))
    server = load_config(path, environ={}).server
    # Loaded, the token is the server's whichever way it was given.
    assert (server.token, server.token_file, server.token_env) == (TOKEN, None, None)
    absolute = _with_server(f'token_file = "{tmp_path / "secrets" / "token"}"')
    assert parse_config(absolute, environ={}).server.token == TOKEN


def test_the_token_is_read_from_an_environment_variable() -> None:
    server = parse_config(
        _with_server('token_env = "GW_TOKEN"'), environ={"GW_TOKEN": f" {TOKEN}\n"}
    ).server
    assert (server.token, server.token_file, server.token_env) == (TOKEN, None, None)


def test_no_repr_of_a_configuration_shows_its_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    path = tmp_path / "gateway.toml"
    path.write_text(_with_server('token_file = "token"'))
    loaded = [
        parse_config(_with_server(f'token = "{TOKEN}"')),
        load_config(path, environ={}),
        parse_config(_with_server('token_env = "GW_TOKEN"'), environ={"GW_TOKEN": TOKEN}),
    ]
    made = ServerConfig(token=TOKEN)
    replaced = msgspec.structs.replace(ServerConfig(), token=TOKEN)
    for config in loaded:
        for shown in (repr(config), str(config), repr(config.server), f"{config.server}"):
            assert TOKEN not in shown and "token='***'" in shown, shown
        # The value itself is the token, as the server compares it.
        assert config.server.token == TOKEN and config.server.token.encode() == TOKEN.encode()
    assert TOKEN not in repr(made) + repr(replaced)
    assert repr(ServerConfig()).count("token=None") == 1


def test_no_repr_of_a_configuration_shows_a_url_password_or_token() -> None:
    config = parse_config(
        GOOD.replace(
            "ws://127.0.0.1:9001", f"wss://desk:hunter2@127.0.0.1:9001/ws?token={TOKEN}"
        ).replace("http://127.0.0.1:9100", "https://desk:hunter2@127.0.0.1:9100")
    )
    venue = config.venues[0]
    for shown in (repr(config), str(config), repr(venue), f"{venue}", repr(config.server)):
        assert "hunter2" not in shown and TOKEN not in shown, shown
    assert "endpoints=['wss://desk:***@127.0.0.1:9001/ws?token=***', 'ws://127.0.0.1:9002']" in (
        repr(venue)
    )
    assert "rest=['https://desk:***@127.0.0.1:9100']" in repr(venue)
    # The values themselves are the URLs, as the connections open them.
    assert venue.endpoints[0] == f"wss://desk:hunter2@127.0.0.1:9001/ws?token={TOKEN}"
    assert venue.rest == ["https://desk:hunter2@127.0.0.1:9100"]
    # Nor does an error naming one (an origin holds no password).
    origin = GOOD.replace("port = 9000", 'port = 9000\nallowed_origins = ["https://d:hunter2@x"]')
    with pytest.raises(ConfigError, match=re.escape("'https://d:***@x' is not an origin")):
        parse_config(origin)


@pytest.mark.parametrize(
    ("server", "files", "environ", "message"),
    [
        ('token_file = "missing"', {}, {}, "$.server.token_file: cannot read"),
        ('token_file = "token"', {"token": "\n" + TOKEN}, {}, "first line is empty"),
        ('token_file = "token"', {"token": ""}, {}, "$.server.token_file: "),
        ('token_file = "token"', {"token": "short\n"}, {}, "too short: at least 16"),
        ('token_file = "token"', {"token": "0123456789abcdef 0"}, {}, "only letters, digits"),
        ('token_env = "GW_TOKEN"', {}, {}, "GW_TOKEN is not set or empty"),
        ('token_env = "GW_TOKEN"', {}, {"GW_TOKEN": "  "}, "GW_TOKEN is not set or empty"),
        ('token_env = "GW_TOKEN"', {}, {"GW_TOKEN": "short"}, "$.server.token_env: the token"),
        (
            f'token = "{TOKEN}"\ntoken_env = "GW_TOKEN"',
            {},
            {"GW_TOKEN": TOKEN},
            "$.server: token, token_env given together; give one of token, token_file, token_env",
        ),
        (
            'token_file = "token"\ntoken_env = "GW_TOKEN"',
            {"token": TOKEN},
            {"GW_TOKEN": TOKEN},
            "token_file, token_env given together",
        ),
        ('token_env = ""', {}, {}, "$.server.token_env"),
    ],
)
def test_a_token_file_or_variable_that_gives_no_valid_token_is_named(
    tmp_path: Path, server: str, files: dict[str, str], environ: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "gateway.toml"
    path.write_text(_with_server(server))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value), info.value
    assert TOKEN not in str(info.value)
