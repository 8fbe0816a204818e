"""Instrument lists (:mod:`relay.instruments` and each adapter's ``INSTRUMENTS``).

Fixtures are ``tests/data/<venue>/instruments*.json``. **Only Alpaca's crypto asset list is
real** (the ``httpResponse`` of ccxt's 2026 ``alpaca.json`` recording, 73 assets). Every
other fixture is **doc-shaped, not recorded**: a handful of instruments written by hand in
the response shape the venue documents, with plausible values (tick sizes, contract values,
expiry times) that were never checked against a live answer. They test that the parsers read
the documented fields; they cannot show that a venue still answers in that shape.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import adapters
from relay.codec import Adapter, Endpoints, Subscription
from relay.events import DataType
from relay.instruments import (
    Catalog,
    Instrument,
    InstrumentSource,
    canonical,
    expiry_code,
    positive_decimal,
    step_text,
)

DATA = Path(__file__).parent / "data"

# venue → [(fixture file, index of the source URL it answers)]
FIXTURES: dict[str, list[tuple[str, int]]] = {
    "alpaca": [("instruments_crypto.json", 0), ("instruments_us_equity.json", 1)],
    "binance": [("instruments_spot.json", 0)],
    "binance_usdm": [("instruments.json", 0)],
    "bitget": [
        ("instruments_spot.json", 0),
        ("instruments_usdt_futures.json", 1),
        ("instruments_coin_futures.json", 2),
    ],
    "bybit": [("instruments_spot.json", 0), ("instruments_linear.json", 1)],
    "coinbase": [("instruments_spot.json", 0), ("instruments_future.json", 1)],
    "deribit": [("instruments_future.json", 0), ("instruments_spot.json", 1)],
    "hyperliquid": [("instruments_meta.json", 0), ("instruments_spot_meta.json", 1)],
    "kraken": [("instruments_asset_pairs.json", 0)],
    "okx": [
        ("instruments_spot.json", 0),
        ("instruments_swap.json", 1),
        ("instruments_futures.json", 2),
    ],
}


def source(venue: str) -> InstrumentSource:
    src = adapters.load(venue).instruments
    assert src is not None
    return src


def parse_fixtures(venue: str) -> list[Instrument]:
    """Every fixture of ``venue`` parsed, each with the URL it answers."""
    adapter = adapters.load(venue)
    src = source(venue)
    urls = src.urls(adapter.default_endpoints)
    out: list[Instrument] = []
    for name, index in FIXTURES[venue]:
        out += src.parse(urls[index], (DATA / venue / name).read_bytes())
    return out


def by_native(venue: str) -> dict[str, Instrument]:
    return {i.native_symbol: i for i in parse_fixtures(venue)}


def inst(
    native: str,
    symbol: str,
    kind: str,
    base: str,
    quote: str,
    price: str | None,
    size: str | None,
    contract: str | None = None,
    *,
    active: bool = True,
) -> Instrument:
    return Instrument(
        native,
        symbol,
        kind,  # type: ignore[arg-type]
        base,
        quote,
        price,
        size,
        None if contract is None else Decimal(contract),
        active,
    )


# ---------------------------------------------------------------------------------------------
# Every venue


def test_every_adapter_has_an_instrument_source_and_fixtures() -> None:
    assert set(FIXTURES) == set(adapters.NAMES)
    for name in adapters.NAMES:
        assert isinstance(adapters.load(name).instruments, InstrumentSource)


@pytest.mark.parametrize("venue", sorted(FIXTURES))
def test_canonical_symbols_agree_with_the_adapters_heuristic(venue: str) -> None:
    """Where ``canonical_symbol`` gives an answer for a native, the list gives the same."""
    adapter: Adapter = adapters.load(venue)
    instruments = parse_fixtures(venue)
    assert instruments
    checked = 0
    for i in instruments:
        heuristic = adapter.canonical_symbol(i.native_symbol)
        if heuristic is not None:
            assert i.symbol == heuristic, i
            checked += 1
        assert i.symbol == canonical(i.base, i.quote, i.kind, i.symbol.rsplit("-", 1)[-1])
    assert checked > 0


@pytest.mark.parametrize("venue", sorted(FIXTURES))
def test_requests_follow_the_configured_endpoints(venue: str) -> None:
    src = source(venue)
    local = Endpoints(ws_url="ws://127.0.0.1:9/ws", rest_url="http://127.0.0.1:9")
    requests = src.requests(local)
    assert len(requests) > max(index for _, index in FIXTURES[venue])
    for url, body in requests:
        assert url.startswith("http://127.0.0.1:9/"), url
        # Only Hyperliquid's info endpoint is POST-only.
        assert (body is not None) == (venue == "hyperliquid")


@pytest.mark.parametrize("venue", sorted(FIXTURES))
@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"unexpected": true}', b"null"])
def test_a_malformed_body_raises_value_error_naming_venue_and_url(venue: str, body: bytes) -> None:
    src = source(venue)
    url = src.urls(adapters.load(venue).default_endpoints)[0]
    with pytest.raises(ValueError) as info:
        src.parse(url, body)
    assert str(info.value).startswith(f"{venue}: "), info.value
    assert url in str(info.value)


ERROR_ANSWERS = {
    "alpaca": b'{"code": 40110000, "message": "request is not authorized"}',
    "binance": b'{"code": -1003, "msg": "Too many requests."}',
    "binance_usdm": b'{"code": -1003, "msg": "Too many requests."}',
    "bitget": b'{"code": "40034", "msg": "Parameter does not exist", "data": null}',
    "bybit": b'{"retCode": 10001, "retMsg": "params error", "result": {}, "time": 1}',
    "coinbase": b'{"error": "INVALID_ARGUMENT", "message": "bad product_type"}',
    "deribit": b'{"jsonrpc": "2.0", "error": {"code": 10028, "message": "too_many_requests"}}',
    "hyperliquid": b'{"error": "unknown type"}',
    "kraken": b'{"error": ["EGeneral:Invalid arguments"], "result": {}}',
    "okx": b'{"code": "51000", "msg": "Parameter instType error", "data": []}',
}


@pytest.mark.parametrize("venue", sorted(ERROR_ANSWERS))
def test_an_error_answer_raises_value_error(venue: str) -> None:
    src = source(venue)
    url = src.urls(adapters.load(venue).default_endpoints)[0]
    with pytest.raises(ValueError, match=f"^{venue}: "):
        src.parse(url, ERROR_ANSWERS[venue])


# ---------------------------------------------------------------------------------------------
# Per venue


def test_binance_spot() -> None:
    got = by_native("binance")
    assert got["BTCUSDT"] == inst("BTCUSDT", "BTC-USDT", "spot", "BTC", "USDT", "0.01000000",
                                  "0.00001000")  # fmt: skip
    assert got["ETHBTC"].symbol == "ETH-BTC"
    assert got["LUNAUSDT"].active is False  # status BREAK


def test_binance_usdm() -> None:
    got = by_native("binance_usdm")
    assert got["BTCUSDT"] == inst("BTCUSDT", "BTC-USDT-PERP", "perp", "BTC", "USDT", "0.10",
                                  "0.001")  # fmt: skip
    assert got["BTCUSDT_260925"].symbol == "BTC-USDT-260925"
    assert got["BTCUSDT_260925"].kind == "future"
    assert got["1000PEPEUSDT"].symbol == "1000PEPE-USDT-PERP"
    assert got["1000PEPEUSDT"].contract_size is None  # sizes are base units (1000PEPE)
    assert got["ETHUSDT_250926"].active is False  # SETTLING


def test_bybit() -> None:
    got = by_native("bybit")
    assert got["spot:BTCUSDT"] == inst("spot:BTCUSDT", "BTC-USDT", "spot", "BTC", "USDT", "0.1",
                                       "0.000001")  # fmt: skip
    assert got["linear:BTCUSDT"] == inst("linear:BTCUSDT", "BTC-USDT-PERP", "perp", "BTC",
                                         "USDT", "0.10", "0.001")  # fmt: skip
    assert got["linear:BTCPERP"].symbol == "BTC-USDC-PERP"
    assert got["linear:BTCUSDT-26DEC25"].symbol == "BTC-USDT-251226"
    # The heuristic cannot name USDC futures; the list can.
    assert got["linear:BTC-26DEC25"].symbol == "BTC-USDC-251226"
    assert got["linear:XYZUSDT"].active is False  # PreLaunch


def test_okx_contract_sizes() -> None:
    got = by_native("okx")
    assert got["BTC-USDT-SWAP"] == inst("BTC-USDT-SWAP", "BTC-USDT-PERP", "perp", "BTC", "USDT",
                                        "0.1", "0.01", "0.01")  # fmt: skip
    assert got["ETH-USDT-SWAP"].contract_size == Decimal("0.1")
    assert got["BTC-USDT-250328"].contract_size == Decimal("0.01")
    assert got["BTC-USDT-250328"].symbol == "BTC-USDT-250328"
    # Inverse contracts are worth USD: no factor makes them base units.
    assert got["BTC-USD-SWAP"].contract_size is None
    assert got["BTC-USD-250328"].contract_size is None
    assert got["BTC-USD-250328"].kind == "future"
    assert got["BTC-USDT"] == inst("BTC-USDT", "BTC-USDT", "spot", "BTC", "USDT", "0.1",
                                   "0.00000001")  # fmt: skip
    assert got["ETH-BTC"].active is False  # suspend


def test_kraken_renames_legacy_asset_codes() -> None:
    got = by_native("kraken")
    assert got["BTC/USD"] == inst("BTC/USD", "BTC-USD", "spot", "BTC", "USD", "0.1", "0.00000001")
    assert got["ETH/BTC"].symbol == "ETH-BTC"
    assert got["DOGE/USD"].symbol == "DOGE-USD"
    assert "XBT/USD" not in got
    assert got["USDT/USD"].active is False  # cancel_only
    assert len(got) == 5  # the pair without a wsname is skipped


def test_coinbase() -> None:
    got = by_native("coinbase")
    assert got["BTC-USD"] == inst("BTC-USD", "BTC-USD", "spot", "BTC", "USD", "0.01", "0.00000001")
    assert got["BTC-USDC"].active is False  # delisted
    assert got["BIT-26JUN26-CDE"] == inst("BIT-26JUN26-CDE", "BTC-USD-260626", "future", "BTC",
                                          "USD", "5", "1", "0.01")  # fmt: skip
    assert got["ET-26JUN26-CDE"].contract_size == Decimal("0.1")
    assert got["BIP-20DEC30-CDE"].symbol == "BTC-USD-PERP"


def test_deribit_has_no_contract_sizes() -> None:
    got = by_native("deribit")
    assert got["BTC-PERPETUAL"] == inst("BTC-PERPETUAL", "BTC-USD-PERP", "perp", "BTC", "USD",
                                        "0.5", "10")  # fmt: skip
    assert got["BTC-26DEC25"].symbol == "BTC-USD-251226"
    assert got["BTC_USDC-PERPETUAL"].symbol == "BTC-USDC-PERP"
    assert got["BTC_USDC-PERPETUAL"].size_increment == "0.0001"
    assert got["BTC_USDC"].kind == "spot"
    assert got["BTC-29SEP23"].active is False
    assert all(i.contract_size is None for i in got.values())


def test_bitget() -> None:
    got = by_native("bitget")
    assert got["SPOT:BTCUSDT"] == inst("SPOT:BTCUSDT", "BTC-USDT", "spot", "BTC", "USDT", "0.01",
                                       "0.000001")  # fmt: skip
    assert got["USDT-FUTURES:BTCUSDT"] == inst("USDT-FUTURES:BTCUSDT", "BTC-USDT-PERP", "perp",
                                               "BTC", "USDT", "0.1", "0.001")  # fmt: skip
    assert got["COIN-FUTURES:BTCUSD"].price_increment == "0.5"  # priceEndStep 5, pricePlace 1
    assert got["COIN-FUTURES:BTCUSD_251226"].symbol == "BTC-USD-251226"
    assert got["SPOT:ETHBTC"].active is False
    assert got["USDT-FUTURES:XYZUSDT"].active is False
    assert all(i.contract_size is None for i in got.values())


def test_hyperliquid_resolves_spot_indices() -> None:
    got = by_native("hyperliquid")
    assert got["BTC"] == inst("BTC", "BTC-USDC-PERP", "perp", "BTC", "USDC", None, "0.00001")
    assert got["kPEPE"].symbol == "kPEPE-USDC-PERP"
    assert got["MATIC"].active is False  # isDelisted
    assert got["PURR/USDC"] == inst("PURR/USDC", "PURR-USDC", "spot", "PURR", "USDC", None, "1")
    assert got["@107"].symbol == "HYPE-USDC"
    assert got["@107"].size_increment == "0.01"


def test_hyperliquid_posts_meta_and_spot_meta() -> None:
    requests = source("hyperliquid").requests(adapters.load("hyperliquid").default_endpoints)
    assert requests == [
        ("https://api.hyperliquid.xyz/info", b'{"type":"meta"}'),
        ("https://api.hyperliquid.xyz/info", b'{"type":"spotMeta"}'),
    ]


def test_alpaca_real_crypto_list_and_stocks() -> None:
    got = by_native("alpaca")
    crypto = [i for i in got.values() if "/" in i.native_symbol]
    assert len(crypto) == 73
    assert all(i.kind == "spot" and i.active for i in crypto)
    btc = got["BTC/USD"]
    assert (btc.symbol, btc.base, btc.quote) == ("BTC-USD", "BTC", "USD")
    assert btc.price_increment is not None and btc.size_increment is not None
    assert got["AAPL"] == inst("AAPL", "AAPL-USD", "spot", "AAPL", "USD", None, None)
    assert got["BRK.B"].symbol == "BRK.B-USD"
    assert got["XYZQ"].active is False  # not tradable


def test_alpaca_asks_the_trading_api_with_the_account_keys() -> None:
    adapter = adapters.load("alpaca")
    src = source("alpaca")
    assert src.urls(adapter.default_endpoints) == [
        "https://api.alpaca.markets/v2/assets?asset_class=crypto",
        "https://api.alpaca.markets/v2/assets?status=active&asset_class=us_equity",
    ]
    assert {name for _, name in src.credential_headers} == set(adapter.required_credentials)


# ---------------------------------------------------------------------------------------------
# The catalog

TRADES = frozenset({DataType.TRADE})


def okx_catalog() -> Catalog:
    return Catalog.from_instruments(parse_fixtures("okx"), fetched_at_ns=1_760_000_000_000_000_000)


def test_resolve_fills_symbol_and_contract_size() -> None:
    subs = [
        Subscription("BTC-USDT-SWAP", "BTC-USDT-PERP", TRADES),
        Subscription("btc-usd-250328", "BTC-USD-250328", TRADES),
    ]
    resolved, missing = okx_catalog().resolve(subs, key=source("okx").native_key)
    assert missing == []
    assert resolved[0] == Subscription("BTC-USDT-SWAP", "BTC-USDT-PERP", TRADES, Decimal("0.01"))
    # Found despite the case; the configured spelling is kept.
    assert resolved[1] == Subscription("btc-usd-250328", "BTC-USD-250328", TRADES, None)


def test_resolve_replaces_a_heuristic_symbol_but_honours_overrides() -> None:
    catalog = Catalog.from_instruments(parse_fixtures("bybit"))
    key = source("bybit").native_key
    subs = [
        Subscription("linear:BTC-26DEC25", "guessed", TRADES),
        Subscription("spot:ETHUSDT", "MY-ETH", TRADES),
    ]
    resolved, missing = catalog.resolve(subs, {"spot:ETHUSDT"}, key=key)
    assert [s.symbol for s in resolved] == ["BTC-USDC-251226", "MY-ETH"]
    assert missing == []


def test_resolve_keeps_an_explicit_contract_size() -> None:
    sub = Subscription("BTC-USDT-SWAP", "BTC-USDT-PERP", TRADES, Decimal("0.5"))
    resolved, _ = okx_catalog().resolve([sub])
    assert resolved[0].contract_size == Decimal("0.5")


def test_resolve_reports_unlisted_and_inactive_natives() -> None:
    subs = [
        Subscription("DOGE-USDT-SWAP", "DOGE-USDT-PERP", TRADES),  # not in the list
        Subscription("ETH-BTC", "x", TRADES),  # listed, suspended
        Subscription("ETH-USDT", "ETH-USDT", TRADES),
    ]
    resolved, missing = okx_catalog().resolve(subs)
    assert missing == ["DOGE-USDT-SWAP", "ETH-BTC"]
    assert resolved[0] == subs[0]  # unlisted: unchanged
    assert resolved[1].symbol == "ETH-BTC"  # inactive: still filled in


def test_bybit_bare_symbols_are_looked_up_in_their_category() -> None:
    catalog = Catalog.from_instruments(parse_fixtures("bybit"))
    subs = [
        Subscription("BTCUSDT", "BTC-USDT", TRADES),  # bare: spot
        Subscription("BTCUSDT", "BTC-USDT-PERP", TRADES),  # bare, configured as a perp: linear
        Subscription("Linear:ethusdt", "ETH-USDT-PERP", TRADES),
    ]
    resolved, missing = catalog.resolve(subs, {"BTCUSDT"}, key=source("bybit").native_key)
    assert missing == []
    assert [s.symbol for s in resolved] == ["BTC-USDT", "BTC-USDT-PERP", "ETH-USDT-PERP"]


def test_bitget_natives_are_looked_up_upper_cased() -> None:
    catalog = Catalog.from_instruments(parse_fixtures("bitget"))
    sub = Subscription("usdt-futures:btcusdt", "BTC-USDT-PERP", TRADES)
    _, missing = catalog.resolve([sub], key=source("bitget").native_key)
    assert missing == []


def test_resolved_subscriptions_are_accepted_by_the_codecs() -> None:
    """Contract sizes from the list are ones the codecs take (Deribit and Bitget refuse any)."""
    for venue, natives in {
        "okx": ["BTC-USDT-SWAP", "BTC-USD-SWAP", "BTC-USDT"],
        "deribit": ["BTC-PERPETUAL", "BTC_USDC-PERPETUAL"],
        "bitget": ["USDT-FUTURES:BTCUSDT", "SPOT:BTCUSDT"],
    }.items():
        adapter = adapters.load(venue)
        catalog = Catalog.from_instruments(parse_fixtures(venue))
        subs = [Subscription(n, adapter.canonical_symbol(n) or n, TRADES) for n in natives]
        resolved, missing = catalog.resolve(subs, key=source(venue).native_key)
        assert missing == []
        assert adapter.make_codecs(venue, resolved, adapter.default_endpoints)


@pytest.mark.parametrize("venue", sorted(FIXTURES))
def test_json_round_trip(venue: str) -> None:
    catalog = Catalog.from_instruments(parse_fixtures(venue), fetched_at_ns=123_456_789)
    data = catalog.to_json()
    again = Catalog.from_json(data)
    assert again == catalog
    assert again.fetched_at_ns == 123_456_789
    assert again.to_json() == data
    assert len(again) == len(parse_fixtures(venue))


def test_json_keeps_contract_sizes_exact() -> None:
    data = okx_catalog().to_json()
    assert b'"contract_size":"0.01"' in data
    assert Catalog.from_json(data).get("BTC-USDT-SWAP").contract_size == Decimal("0.01")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"instruments": []}',
        b'{"fetched_at_ns": 1, "instruments": [{"native_symbol": "X"}]}',
        b'{"fetched_at_ns": 1, "instruments": [], "extra": 1}',
        b'{"fetched_at_ns": 1, "instruments": [{"native_symbol": "X", "symbol": "X-Y", '
        b'"kind": "option", "base": "X", "quote": "Y", "price_increment": null, '
        b'"size_increment": null, "contract_size": null, "active": true}]}',
        b'{"fetched_at_ns": 1, "instruments": [{"native_symbol": "X", "symbol": "X-Y", '
        b'"kind": "spot", "base": "X", "quote": "Y", "price_increment": null, '
        b'"size_increment": null, "contract_size": "NaN", "active": true}]}',
    ],
)
def test_from_json_rejects_anything_else(data: bytes) -> None:
    with pytest.raises(ValueError, match="not an instrument catalog"):
        Catalog.from_json(data)


def test_a_native_listed_twice_differently_is_an_error() -> None:
    a = inst("BTCUSDT", "BTC-USDT", "spot", "BTC", "USDT", "0.01", "0.001")
    b = inst("BTCUSDT", "BTC-USDT", "spot", "BTC", "USDT", "0.1", "0.001")
    assert len(Catalog.from_instruments([a, a])) == 1
    with pytest.raises(ValueError, match="listed twice differently"):
        Catalog.from_instruments([a, b])


def test_requests_refuses_mismatched_bodies() -> None:
    src = InstrumentSource(
        urls=lambda e: ["http://a", "http://b"], parse=lambda u, b: [], bodies=lambda e: [None]
    )
    with pytest.raises(ValueError, match="2 instrument URLs but 1 request bodies"):
        src.requests(Endpoints("ws://x", "http://x"))


# ---------------------------------------------------------------------------------------------
# Helpers


def test_helpers() -> None:
    assert expiry_code(1_766_736_000_000) == "251226"  # 2025-12-26T08:00Z
    assert expiry_code(1_766_793_599_999) == "251226"  # the last ms of that UTC day
    assert step_text(0) == "1"
    assert step_text(3) == "0.001"
    assert positive_decimal("0.01", "x") == Decimal("0.01")
    for bad in ("", "abc", "0", "-1", "NaN", "Infinity"):
        with pytest.raises(ValueError, match=r"^x: not a positive number"):
            positive_decimal(bad, "x")
    assert canonical("BTC", "USD", "future", "251226") == "BTC-USD-251226"
    with pytest.raises(ValueError):
        canonical("BTC", "USD", "future")
