"""Tests of :mod:`relay.config`: loading, env substitution, error messages and the helpers.

Each ``tests/data/configs/bad_*.toml`` starts with ``# expect: <key path>: <message>``: the
exact text its :class:`ConfigError` must have after ``<file>: ``. The tests run against the
real ``binance`` adapter.
"""

from __future__ import annotations

import pickle
import ssl
from pathlib import Path

import certifi
import msgspec
import pytest

import adapters
from relay.codec import Endpoints, Subscription
from relay.config import (
    BackoffConfig,
    BreakerConfig,
    Config,
    ConfigError,
    ConnectionConfig,
    ConsumerConfig,
    HttpConfig,
    NatsConfig,
    PipelineConfig,
    ServiceConfig,
    StreamConfig,
    SubscriptionConfig,
    TlsConfig,
    VenueConfig,
    _subject_matches,
    _subject_within,
    _subjects_overlap,
    load_config,
    nats_connect_options,
    plan_text,
    venue_endpoints,
    venue_subscriptions,
)
from relay.events import DataType

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "relay.toml"
CONFIGS = Path(__file__).resolve().parent / "data" / "configs"
BAD_CONFIGS = sorted(CONFIGS.glob("bad_*.toml"))
EXPECT_PREFIX = "# expect: "

BINANCE = adapters.load("binance")


def expected_error(path: Path) -> str:
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith(EXPECT_PREFIX), f"{path.name} lacks its '# expect:' line"
    names = ", ".join(repr(name) for name in adapters.NAMES)
    return first_line.removeprefix(EXPECT_PREFIX).replace("{ADAPTER_NAMES}", names)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# The example config and the defaults.


EXAMPLE_STREAM_OF = {
    DataType.TRADE: "MARKET_TRADES",
    DataType.LIQUIDATION: "MARKET_TRADES",
    DataType.L2_ORDERBOOK: "MARKET_BOOKS",
    DataType.TICKER: "MARKET_TICKERS",
    DataType.FUNDING_RATE: "MARKET_TICKERS",
    DataType.MARK_PRICE: "MARKET_TICKERS",
    DataType.OPEN_INTEREST: "MARKET_TICKERS",
}
"""Where the example sends each data type: books in a stream of their own, so that a flood of
deltas can only evict older book messages, never trades."""
EXAMPLE_BYTES_PER_VENUE = 1 << 29
"""The example's storage budget: 1 GiB per 2 venues."""


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE, env={})

    assert config.nats.urls == ["nats://127.0.0.1:4222"]
    assert config.nats.auth == "none"
    assert (config.http.bind, config.http.port) == ("127.0.0.1", 8080)
    streams = {s.name: s for s in config.nats.streams}
    assert list(streams) == ["MARKET_TRADES", "MARKET_BOOKS", "MARKET_TICKERS", "MARKET_STATUS"]
    expected: dict[str, list[str]] = {"MARKET_STATUS": ["market.*._status"]}
    for data_type, name in EXAMPLE_STREAM_OF.items():
        expected.setdefault(name, []).append(f"market.*.*.{data_type}")
    assert {name: sorted(s.subjects) for name, s in streams.items()} == {
        name: sorted(subjects) for name, subjects in expected.items()
    }
    for stream in streams.values():
        assert (stream.storage, stream.retention, stream.discard) == ("file", "limits", "old")
        assert stream.max_age_secs > 0 and stream.max_bytes > 0
        # Long enough to recognize what a reconnect or a publish retry sends again.
        assert stream.duplicate_window_secs >= 120
    assert streams["MARKET_TRADES"].max_age_secs > streams["MARKET_BOOKS"].max_age_secs
    # Every adapter counts against the budget, alpaca too: it is one export away from running.
    total = sum(s.max_bytes for s in streams.values())
    assert total <= len(adapters.NAMES) * EXAMPLE_BYTES_PER_VENUE

    venues = {venue.id: venue for venue in config.venues}
    assert sorted(venues) == sorted(adapters.NAMES)
    # With no keys in the environment, alpaca is configured but disabled.
    assert venues["alpaca"].missing_credentials(adapters.load("alpaca")) == [
        "key_id",
        "secret_key",
    ]
    for venue in venues.values():
        adapter = adapters.load(venue.adapter)
        assert (venue.adapter, venue.enabled) == (venue.id, True)
        assert venue.connection == ConnectionConfig()  # the real endpoints
        if venue.id != "alpaca":
            assert venue.missing_credentials(adapter) == []
        subscriptions = venue_subscriptions(venue)
        assert {s.symbol.split("-")[0] for s in subscriptions} == {"BTC", "ETH"}, venue.id
        subscribed = set().union(*(s.data_types for s in subscriptions))
        # OKX swaps size liquidations (and trades, books, tickers) in contracts, which a
        # config cannot convert yet: the example takes only their unit-free data.
        unused = {DataType.LIQUIDATION} if venue.id == "okx" else set()
        assert adapter.data_types - subscribed == unused, venue.id
    assert venue_subscriptions(venues["binance"]) == [
        Subscription(
            "BTCUSDT",
            "BTC-USDT",
            frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK}),
        ),
        Subscription(
            "ETHUSDT",
            "ETH-USDT",
            frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK}),
        ),
    ]


def test_example_alpaca_runs_once_its_keys_are_exported() -> None:
    env = {"ALPACA_KEY_ID": "key-id", "ALPACA_SECRET_KEY": "secret-key"}
    alpaca = next(v for v in load_config(EXAMPLE, env=env).venues if v.id == "alpaca")
    assert alpaca.credentials == {"key_id": "key-id", "secret_key": "secret-key"}
    assert alpaca.missing_credentials(adapters.load("alpaca")) == []
    assert "key-id" not in repr(alpaca) and "secret-key" not in repr(alpaca)


def test_example_config_takes_nats_url_from_env() -> None:
    config = load_config(EXAMPLE, env={"NATS_URL": "nats://127.0.0.1:14222"})
    assert config.nats.urls == ["nats://127.0.0.1:14222"]


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ""), env={})

    assert config == Config()
    assert config.service == ServiceConfig(
        name="relay", log_level="info", log_format="json", shutdown_timeout_ms=5000
    )
    nats = config.nats
    assert nats.urls == ["nats://127.0.0.1:4222"]
    assert nats.auth == "none"
    assert nats.tls == TlsConfig(enabled=False)
    assert (nats.connect_timeout_ms, nats.reconnect_time_wait_ms) == (5000, 500)
    assert (nats.max_reconnects, nats.ping_interval_secs) == (-1, 20)
    assert nats.reconnect_buffer_size == 8 * 1024 * 1024
    assert (nats.publish_window, nats.ack_timeout_ms) == (4096, 2000)
    assert nats.retry_schedule_ms == [100, 500, 2000]
    assert (nats.streams, nats.consumers) == ([], [])
    assert config.http == HttpConfig(bind="127.0.0.1", port=8080)
    assert config.pipeline == PipelineConfig(
        venue_channel_capacity=256, outage_buffer_bytes=64 * 1024 * 1024, batch_max=256
    )
    assert config.venues == []


def test_every_table_is_strict_and_frozen() -> None:
    for cls in (
        Config,
        ServiceConfig,
        NatsConfig,
        TlsConfig,
        StreamConfig,
        ConsumerConfig,
        HttpConfig,
        PipelineConfig,
        VenueConfig,
        ConnectionConfig,
        BackoffConfig,
        BreakerConfig,
        SubscriptionConfig,
    ):
        assert cls.__struct_config__.forbid_unknown_fields, cls
        assert cls.__struct_config__.frozen, cls
    with pytest.raises(AttributeError):
        Config().http.port = 1  # type: ignore[misc]


def test_full_config_loads_every_section() -> None:
    config = load_config(CONFIGS / "good_full.toml", env={})

    assert config.service == ServiceConfig(
        name="relay-test", log_level="debug", log_format="console", shutdown_timeout_ms=1500
    )
    nats = config.nats
    assert nats.auth == "creds" and nats.creds_file == "/etc/relay/relay.creds"
    assert nats.retry_schedule_ms == [50, 100]
    assert nats.streams[0] == StreamConfig(
        name="TRADES",
        subjects=["market.*.*.trade"],
        storage="memory",
        retention="interest",
        max_age_secs=3600,
        max_bytes=1048576,
        max_msg_size=65536,
        discard="new",
        num_replicas=3,
        duplicate_window_secs=60,
    )
    assert nats.streams[1].storage == "file" and nats.streams[1].max_bytes == -1
    assert nats.consumers == [
        ConsumerConfig(
            stream="TRADES",
            name="archiver",
            durable=True,
            ack_policy="all",
            ack_wait_secs=10,
            max_deliver=5,
            deliver_policy="last_per_subject",
            max_ack_pending=100,
            filter_subject="market.replay.*.trade",
        ),
        ConsumerConfig(stream="EVERYTHING_ELSE", name="watcher", durable=False),
    ]
    assert config.http == HttpConfig(bind="0.0.0.0", port=0)
    assert config.pipeline == PipelineConfig(
        venue_channel_capacity=8, outage_buffer_bytes=1048576, batch_max=32
    )
    replay, spare = config.venues
    assert replay.backoff == BackoffConfig(initial_ms=100, max_ms=1000, multiplier=3.0, jitter=0.0)
    assert replay.circuit_breaker == BreakerConfig(
        failure_threshold=2, reset_timeout_secs=5, half_open_max_requests=2
    )
    assert not spare.enabled


# ---------------------------------------------------------------------------------------------
# ${VAR} substitution.


def test_env_defaults_apply_when_variables_are_unset() -> None:
    config = load_config(CONFIGS / "good_env.toml", env={})

    assert config.service.name == "relay-dev-${LITERAL}"
    assert config.service.log_level == "info"
    assert config.nats.urls == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
    assert config.nats.max_reconnects == -1
    assert config.nats.retry_schedule_ms == [100, 1000]
    assert config.nats.tls.enabled is False
    assert config.http.port == 8080
    assert config.venues[0].enabled is True
    assert config.venues[0].backoff.multiplier == 2.0
    assert config.venues[0].subscriptions[0].instruments == ["BTCUSDT"]


def test_env_values_replace_defaults_and_convert_to_field_types() -> None:
    env = {
        "RELAY_TEST_SUFFIX": "prod",
        "RELAY_TEST_LOG_LEVEL": "warning",
        "RELAY_TEST_NATS_URL": "tls://127.0.0.1:4443",
        "RELAY_TEST_NATS_HOST": "localhost",
        "RELAY_TEST_MAX_RECONNECTS": "7",
        "RELAY_TEST_FIRST_RETRY_MS": "25",
        "RELAY_TEST_NATS_TLS": "true",
        "RELAY_TEST_HTTP_PORT": "9090",
        "RELAY_TEST_BINANCE_ENABLED": "false",
        "RELAY_TEST_BACKOFF_MULTIPLIER": "1.5",
        "RELAY_TEST_INSTRUMENT": "ETHUSDT",
    }
    config = load_config(CONFIGS / "good_env.toml", env=env)

    assert config.service.name == "relay-prod-${LITERAL}"
    assert config.service.log_level == "warning"
    assert config.nats.urls == ["tls://127.0.0.1:4443", "nats://localhost:4223"]
    assert config.nats.max_reconnects == 7
    assert config.nats.retry_schedule_ms == [25, 1000]
    assert config.nats.tls.enabled is True
    assert config.http.port == 9090
    assert config.venues[0].enabled is False
    assert config.venues[0].backoff.multiplier == 1.5
    assert config.venues[0].subscriptions[0].instruments == ["ETHUSDT"]


def test_env_default_applies_to_an_empty_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[http]\nbind = "${RELAY_TEST_BIND:-127.0.0.2}"\n')
    assert load_config(path, env={"RELAY_TEST_BIND": ""}).http.bind == "127.0.0.2"


def test_env_value_is_never_parsed_as_toml(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[nats]\nauth = "token"\ntoken = "${RELAY_TEST_TOKEN}"\n',
    )
    token = "a\"b'c\\d ${NOT_A_VAR} #e"
    assert load_config(path, env={"RELAY_TEST_TOKEN": token}).nats.token == token


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_TEST_HTTP_PORT", "18080")
    path = write_config(tmp_path, '[http]\nport = "${RELAY_TEST_HTTP_PORT}"\n')
    assert load_config(path).http.port == 18080


def test_placeholder_inside_a_longer_string_does_not_make_an_int(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[http]\nport = "80${RELAY_TEST_DIGITS}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"RELAY_TEST_DIGITS": "80"})
    assert str(caught.value) == f"{path}: http.port: expected int, got str"


# ---------------------------------------------------------------------------------------------
# Error messages.


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=[path.stem for path in BAD_CONFIGS])
def test_bad_config_reports_file_key_path_and_message(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == f"{path}: {expected_error(path)}"


def test_bad_configs_cover_the_required_cases() -> None:
    names = {path.stem for path in BAD_CONFIGS}
    assert {
        "bad_unknown_key",
        "bad_wrong_type",
        "bad_data_type_enum",
        "bad_missing_env",
        "bad_duplicate_venue",
        "bad_unknown_adapter",
        "bad_unsupported_data_type",
        "bad_canonical_two_instruments",
        "bad_toml_syntax",
        "bad_token_missing",
        "bad_consumer_stream",
    } <= names


def test_error_uses_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "relay.toml").write_text("[http]\nprot = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(Path("config/relay.toml"), env={})
    assert str(caught.value) == "config/relay.toml: http.prot: unknown key"
    error = caught.value
    assert (error.path, error.key_path, error.message) == (
        Path("config/relay.toml"),
        "http.prot",
        "unknown key",
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == f"{path}: cannot read config file: no such file or directory"


def test_odd_keys_are_quoted_in_the_key_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[service]\n"log level" = "info"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == f'{path}: service."log level": unknown key'


def test_config_error_pickles() -> None:
    error = ConfigError("relay.toml", "http.port", "expected int, got str")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


# ---------------------------------------------------------------------------------------------
# Helpers for the runtime.


def test_venue_subscriptions_merge_entries_per_instrument() -> None:
    config = load_config(CONFIGS / "good_full.toml", env={})
    assert venue_subscriptions(config.venues[0]) == [
        Subscription(
            "BTCUSDT",
            "BTC-USDT",
            frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK}),
        ),
        Subscription("ETHUSDT", "ETH-USDT", frozenset({DataType.TRADE})),
        Subscription("1000SATSUSDT", "SATS1000-USDT", frozenset({DataType.TRADE})),
    ]


def test_venue_endpoints_override_adapter_defaults() -> None:
    config = load_config(CONFIGS / "good_full.toml", env={})
    replay, spare = config.venues
    assert venue_endpoints(replay) == Endpoints(
        ws_url="ws://127.0.0.1:9001/stream", rest_url="http://127.0.0.1:9002"
    )
    assert venue_endpoints(spare) == BINANCE.default_endpoints


def test_venue_endpoints_override_one_endpoint_only() -> None:
    venue = msgspec.convert(
        {
            "id": "binance",
            "adapter": "binance",
            "connection": {"rest_url": "http://127.0.0.1:9002"},
            "subscriptions": [{"instruments": ["BTCUSDT"], "data_types": ["trade"]}],
        },
        VenueConfig,
    )
    assert venue_endpoints(venue) == Endpoints(
        ws_url=BINANCE.default_endpoints.ws_url, rest_url="http://127.0.0.1:9002"
    )


def test_nats_connect_options_without_auth() -> None:
    options = nats_connect_options(load_config(CONFIGS / "good_full.toml", env={}).nats)
    assert options == {
        "servers": ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"],
        "user_credentials": "/etc/relay/relay.creds",
        "connect_timeout": 1.0,
        "reconnect_time_wait": 0.25,
        "max_reconnect_attempts": 10,
        "ping_interval": 5,
        "pending_size": 1048576,
    }


@pytest.mark.parametrize(
    ("settings", "credentials"),
    [
        ({"auth": "none"}, {}),
        ({"auth": "token", "token": "t0k"}, {"token": "t0k"}),
        (
            {"auth": "user_password", "user": "relay", "password": "pw"},
            {"user": "relay", "password": "pw"},
        ),
        ({"auth": "nkey", "nkey_seed_file": "/etc/relay.nk"}, {"nkeys_seed": "/etc/relay.nk"}),
        (
            {"auth": "creds", "creds_file": "/etc/relay.creds"},
            {"user_credentials": "/etc/relay.creds"},
        ),
    ],
)
def test_nats_connect_options_pass_the_chosen_credentials(
    tmp_path: Path, settings: dict[str, str], credentials: dict[str, str]
) -> None:
    lines = "".join(f'{key} = "{value}"\n' for key, value in settings.items())
    nats = load_config(write_config(tmp_path, f"[nats]\n{lines}"), env={}).nats
    options = nats_connect_options(nats)
    secret_keys = {"token", "user", "password", "nkeys_seed", "user_credentials"}
    assert {key: options[key] for key in secret_keys & options.keys()} == credentials
    assert options["servers"] == ["nats://127.0.0.1:4222"]
    assert "tls" not in options


def test_nats_connect_options_build_a_tls_context(tmp_path: Path) -> None:
    path = write_config(tmp_path, f'[nats.tls]\nenabled = true\nca_file = "{certifi.where()}"\n')
    options = nats_connect_options(load_config(path, env={}).nats)
    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0


def test_nats_repr_masks_secrets(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[nats]\nauth = "token"\ntoken = "s3cret-t0ken"\n')
    config = load_config(path, env={})
    assert "s3cret-t0ken" not in repr(config)
    assert "token='***'" in repr(config.nats)


# ---------------------------------------------------------------------------------------------
# plan_text.


def test_plan_maps_every_subject_to_its_stream() -> None:
    config = load_config(EXAMPLE, env={})
    plan = plan_text(config)

    for symbol in ("btc-usdt", "eth-usdt"):
        assert f"market.binance.{symbol}.trade -> MARKET_TRADES" in plan
        assert f"market.binance.{symbol}.ticker -> MARKET_TICKERS" in plan
        assert f"market.binance.{symbol}.l2_orderbook -> MARKET_BOOKS" in plan
    routes = [line.strip().split(" -> ") for line in plan.splitlines() if " -> " in line]
    # Every venue routes its subjects, except alpaca, disabled without its keys.
    assert {subject.split(".")[1] for subject, _ in routes} == {
        v.id for v in config.venues if v.id != "alpaca"
    }
    assert "venue alpaca: disabled: no credentials (key_id, secret_key)" in plan
    for subject, stream in routes:
        if subject.endswith("._status"):
            assert stream == "MARKET_STATUS", subject
        else:
            assert stream == EXAMPLE_STREAM_OF[DataType(subject.rsplit(".", 1)[1])], subject
    assert "MARKET_TRADES: market.*.*.trade, market.*.*.liquidation" in plan
    assert "storage file, retention limits, max age 7d, max bytes 2 GiB" in plan
    assert "auth none" in plan
    assert "WARNING" not in plan


def test_plan_lists_adapter_endpoints_and_connections() -> None:
    config = load_config(EXAMPLE, env={})
    sections = {
        section.split(":")[0].removeprefix("venue "): section
        for section in plan_text(config).split("\n\n")
        if section.startswith("venue ")
    }

    assert list(sections) == [venue.id for venue in config.venues]
    for venue in config.venues:
        if venue.id == "alpaca":  # disabled without its keys: no connections to list
            continue
        adapter = adapters.load(venue.adapter)
        section = sections[venue.id]
        codecs = adapter.make_codecs(venue.id, venue_subscriptions(venue), venue_endpoints(venue))
        assert section.startswith(f"venue {venue.id}: adapter {adapter.name}\n")
        assert f"ws endpoint: {adapter.default_endpoints.ws_url}\n" in section
        assert f"rest endpoint: {adapter.default_endpoints.rest_url}\n" in section
        assert f"connections ({len(codecs)}):" in section
        for codec in codecs:
            assert f"    {codec.url}\n" in section


def test_plan_shows_disabled_venues_consumers_and_overrides() -> None:
    plan = plan_text(load_config(CONFIGS / "good_full.toml", env={}))

    assert "venue binance-spare: disabled" in plan
    assert "market.binance-spare" not in plan
    assert "1000SATSUSDT as SATS1000-USDT" in plan
    assert "market.replay.sats1000-usdt.trade -> TRADES" in plan
    assert "ws endpoint: ws://127.0.0.1:9001/stream" in plan
    assert "TRADES/archiver: durable, ack all, deliver last_per_subject" in plan
    assert "EVERYTHING_ELSE/watcher: ephemeral" in plan


def test_plan_warns_about_uncaptured_subjects_and_hides_secrets() -> None:
    config = load_config(
        CONFIGS / "good_secrets.toml", env={"RELAY_TEST_NATS_PASSWORD": "env-secret-pw"}
    )
    plan = plan_text(config)

    assert "market.binance.btc-usdt.trade -> MARKET_TRADES" in plan
    assert "market.binance.btc-usdt.ticker -> (no stream)" in plan
    warnings = [line for line in plan.splitlines() if line.startswith("WARNING:")]
    assert warnings == [
        "WARNING: no stream captures market.binance.btc-usdt.ticker; "
        "publishing to it gets no PubAck"
    ]
    assert "auth user_password" in plan
    for secret in ("env-secret-pw", "url-secret-pw", "url-secret-token", "alice"):
        assert secret not in plan
    assert "nats://***@127.0.0.1:4222" in plan


# ---------------------------------------------------------------------------------------------
# NATS subject wildcards.


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("market.*.*.trade", "market.binance.btc-usdt.trade", True),
        ("market.*.*.trade", "market.binance.btc-usdt.ticker", False),
        ("market.*.*.trade", "market.binance._status", False),
        ("market.*._status", "market.binance._status", True),
        ("market.>", "market.binance._status", True),
        ("market.>", "market", False),
        ("market.binance.>", "market.okx.btc-usdt.trade", False),
    ],
)
def test_subject_matches(pattern: str, subject: str, matches: bool) -> None:
    assert _subject_matches(pattern, subject) is matches


@pytest.mark.parametrize(
    ("inner", "outer", "within"),
    [
        ("market.binance.*.trade", "market.*.*.trade", True),
        ("market.binance.>", "market.*.*.trade", False),
        ("market.*.*.trade", "market.>", True),
        ("market.>", "market.>", True),
        ("market.*", "market.*.*", False),
    ],
)
def test_subject_within(inner: str, outer: str, within: bool) -> None:
    assert _subject_within(inner, outer) is within


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("market.*.*.trade", "market.*.*.ticker", False),
        ("market.*.*.trade", "market.binance.>", True),
        ("market.*.*.trade", "market.*._status", False),
        ("market.>", "market", False),
        ("market.a.*", "market.*.b", True),
    ],
)
def test_subjects_overlap(first: str, second: str, overlap: bool) -> None:
    assert _subjects_overlap(first, second) is overlap
    assert _subjects_overlap(second, first) is overlap
