"""Tests of the Hyperliquid codec (adapters/hyperliquid.py).

``tests/data/hyperliquid/ccxt_nautilus_btc.jsonl`` holds real BTC-perp frames recorded by
ccxt in 2026 (``activeAssetCtx``, ``candle``, ``trades``, ``l2Book`` with 20+20 levels, the
subscribe acks, and the subscribe frames ccxt sent), followed by two nautilus_trader fixtures
(an ``allMids`` frame and a doc-shaped book we wrapped as an ``l2Book`` frame); see the
README next to it. The tests count what the capture holds from the raw JSON and check the
codec's output against that. ``bbo`` and error frames are not in any capture: those tests
use the documented example shapes, and say so.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import adapters
from adapters.hyperliquid import ADAPTER, MAX_SUBSCRIPTIONS, PING_FRAME, HyperliquidCodec
from relay.book import OrderBook, parse_levels
from relay.captures import Recording, load
from relay.codec import Endpoints, SendFrame, Subscription
from relay.events import (
    BookSnapshot,
    DataType,
    FundingRate,
    MarketEvent,
    MarkPrice,
    OpenInterest,
    Ticker,
    Trade,
    VenueStatus,
)
from relay.wire import encode, subject, to_message

CAPTURE = Path(__file__).parent / "data" / "hyperliquid" / "ccxt_nautilus_btc.jsonl"
ALL_TYPES = frozenset(
    {
        DataType.TRADE,
        DataType.TICKER,
        DataType.L2_ORDERBOOK,
        DataType.FUNDING_RATE,
        DataType.MARK_PRICE,
        DataType.OPEN_INTEREST,
    }
)
ENDPOINTS = ADAPTER.default_endpoints


@cache
def recording() -> Recording:
    return load(CAPTURE)


def raw_frames() -> list[dict[str, Any]]:
    return [json.loads(f.text) for f in recording().received]


def new_codec(
    natives: tuple[str, ...] = ("BTC",),
    types: frozenset[DataType] = ALL_TYPES,
    contract_size: Decimal | None = None,
) -> HyperliquidCodec:
    subs = []
    for native in natives:
        canonical = ADAPTER.canonical_symbol(native)
        assert canonical is not None
        subs.append(Subscription(native, canonical, types, contract_size))
    [codec] = ADAPTER.make_codecs("hyperliquid", subs, ENDPOINTS)
    assert isinstance(codec, HyperliquidCodec)
    codec.connected(0)
    codec.actions()
    return codec


def feed(codec: HyperliquidCodec) -> list[MarketEvent]:
    out: list[MarketEvent] = []
    for frame in recording().received:
        out += codec.receive(frame.text, frame.ts)
    return out


def statuses(events: list[MarketEvent], kind: str | None = None) -> list[VenueStatus]:
    return [e for e in events if isinstance(e, VenueStatus) and (kind is None or e.kind == kind)]


def book_frame(
    coin: str, time_ms: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]
) -> str:
    levels = [[{"px": p, "sz": s, "n": 1} for p, s in side] for side in (bids, asks)]
    return json.dumps(
        {"channel": "l2Book", "data": {"coin": coin, "time": time_ms, "levels": levels}}
    )


# ---------------------------------------------------------------------------------------------
# The capture, end to end


def test_capture_event_counts() -> None:
    codec = new_codec()
    events = feed(codec)

    # Count the capture independently.
    channels = Counter(m["channel"] for m in raw_frames())
    assert channels == {
        "subscriptionResponse": 4,
        "activeAssetCtx": 2,
        "candle": 2,
        "trades": 2,
        "l2Book": 3,
        "allMids": 1,
    }
    trades = sum(len(m["data"]) for m in raw_frames() if m["channel"] == "trades")
    books = [m["data"] for m in raw_frames() if m["channel"] == "l2Book"]
    # Books are published while their time increases; the wrapped nautilus fixture is older.
    newest, publishable = -1, 0
    for b in books:
        if b["time"] > newest:
            newest, publishable = b["time"], publishable + 1
    ctxs = [m["data"]["ctx"] for m in raw_frames() if m["channel"] == "activeAssetCtx"]
    distinct_ctxs = sum(1 for i, c in enumerate(ctxs) if i == 0 or c != ctxs[i - 1])
    assert (trades, publishable, distinct_ctxs) == (4, 2, 1)  # the two contexts are equal

    got = Counter(type(e).__name__ for e in events)
    assert got == {
        "Trade": trades,
        "BookSnapshot": publishable,
        "FundingRate": distinct_ctxs,
        "MarkPrice": distinct_ctxs,
        "OpenInterest": distinct_ctxs,
        "VenueStatus": 1,
    }
    assert [s.kind for s in statuses(events)] == ["book_synced"]
    c = codec.counters
    assert c.frames == len(recording().received)
    assert c.stale_deltas_dropped == len(books) - publishable == 1
    assert (c.parse_errors, c.book_gaps, c.book_resyncs, c.checksum_failures) == (0, 0, 0, 0)
    assert codec.actions() == []


def test_trades_from_capture() -> None:
    events = feed(new_codec())
    trades = [e for e in events if isinstance(e, Trade)]
    raw = [t for m in raw_frames() if m["channel"] == "trades" for t in m["data"]]
    assert [(t.trade_id, t.price, t.size) for t in trades] == [
        (str(r["tid"]), r["px"], r["sz"]) for r in raw
    ]
    assert [t.side for t in trades] == ["buy" if r["side"] == "B" else "sell" for r in raw]
    first = trades[0]
    assert (first.symbol, first.native_symbol, first.trade_id, first.side) == (
        "BTC-USDC-PERP",
        "BTC",
        "604438142537043",
        "buy",
    )
    assert first.ts_venue == 1786539552700 * 1_000_000
    first_trades_frame = next(f for f in recording().received if '"channel":"trades"' in f.text)
    assert first.ts_recv == first_trades_frame.ts
    body = encode(first)
    assert b'"price":"64097.0"' in body and b'"size":"0.00033"' in body


def test_books_from_capture() -> None:
    events = feed(new_codec())
    snapshots = [e for e in events if isinstance(e, BookSnapshot)]
    raw = [m["data"] for m in raw_frames() if m["channel"] == "l2Book"][:2]
    for snap, book in zip(snapshots, raw, strict=True):
        assert snap.sequence == book["time"]
        assert snap.ts_venue == book["time"] * 1_000_000
        assert [list(lv) for lv in snap.bids] == [[lv["px"], lv["sz"]] for lv in book["levels"][0]]
        assert [list(lv) for lv in snap.asks] == [[lv["px"], lv["sz"]] for lv in book["levels"][1]]
        assert len(snap.bids) == len(snap.asks) == 20
        rebuilt = OrderBook()
        rebuilt.apply_snapshot(parse_levels(snap.bids), parse_levels(snap.asks))
        assert not rebuilt.is_crossed()
        assert rebuilt.sorted_bids() == parse_levels(snap.bids)  # best first, as sent
        assert rebuilt.sorted_asks() == parse_levels(snap.asks)
    assert b'["64094.0","12.29409"]' in encode(snapshots[0])
    assert snapshots[0].sequence < snapshots[1].sequence


def test_asset_context_from_capture() -> None:
    events = feed(new_codec())
    [funding] = [e for e in events if isinstance(e, FundingRate)]
    [mark] = [e for e in events if isinstance(e, MarkPrice)]
    [oi] = [e for e in events if isinstance(e, OpenInterest)]
    assert (funding.rate, funding.mark_price, funding.index_price) == (
        "0.0000125",
        "64040.0",
        "64063.1",
    )
    assert funding.next_funding_ts is None and funding.ts_venue is None
    assert (mark.mark_price, mark.index_price) == ("64040.0", "64063.1")
    assert (oi.open_interest, oi.open_interest_value) == ("38485.06546", None)
    assert b'"rate":"0.0000125"' in encode(funding)
    # A changed context is published again.
    codec = new_codec()
    feed(codec)
    ctx = {"funding": "0.00001", "openInterest": "38485.06546", "oraclePx": "64063.1"}
    frame = {"channel": "activeAssetCtx", "data": {"coin": "BTC", "ctx": ctx | {"markPx": "1.5"}}}
    out = codec.receive(json.dumps(frame), 5)
    assert [type(e) for e in out] == [FundingRate, MarkPrice]  # open interest unchanged


def test_wire_messages() -> None:
    events = feed(new_codec())
    messages = [to_message(e) for e in events]
    ids = [m.msg_id for m in messages]
    assert len(set(ids)) == len(ids)
    assert {m.subject for m in messages} == {
        "market.hyperliquid.btc-usdc-perp.trade",
        "market.hyperliquid.btc-usdc-perp.l2_orderbook",
        "market.hyperliquid.btc-usdc-perp.funding_rate",
        "market.hyperliquid.btc-usdc-perp.mark_price",
        "market.hyperliquid.btc-usdc-perp.open_interest",
        "market.hyperliquid._status",
    }
    snapshot = next(e for e in events if isinstance(e, BookSnapshot))
    assert to_message(snapshot).msg_id == "hyperliquid:BTC-USDC-PERP:l2s:1786539643751"
    # The same venue event seen again (e.g. on a second relay) has the same id.
    again = feed(new_codec())
    assert [to_message(e).msg_id for e in again if not isinstance(e, VenueStatus)] == [
        m.msg_id for m, e in zip(messages, events, strict=True) if not isinstance(e, VenueStatus)
    ]


# ---------------------------------------------------------------------------------------------
# Subscriptions and connection profile


def test_subscribe_frames_match_the_recorded_ones() -> None:
    subs = [Subscription("BTC", "BTC-USDC-PERP", ALL_TYPES)]
    [codec] = ADAPTER.make_codecs("hyperliquid", subs, ENDPOINTS)
    assert codec.connected(0) == []
    frames = codec.actions()
    assert all(isinstance(f, SendFrame) for f in frames)
    sent = [json.loads(f.text) for f in frames if isinstance(f, SendFrame)]
    assert sent == [
        {"method": "subscribe", "subscription": {"type": t, "coin": "BTC"}}
        for t in ("trades", "bbo", "l2Book", "activeAssetCtx")
    ]
    # ccxt's recorded subscribe frames (candle aside, which we do not use) are ours exactly.
    recorded = [json.loads(f.text) for f in recording().sent]
    ours = {s["subscription"]["type"]: s for s in sent}
    theirs = {r["subscription"]["type"]: r for r in recorded}
    assert set(theirs) == {"activeAssetCtx", "candle", "trades", "l2Book"}
    for kind in ("activeAssetCtx", "trades", "l2Book"):
        assert ours[kind] == theirs[kind]
    assert codec.url == "wss://api.hyperliquid.xyz/ws"
    assert codec.ping_interval == 50.0 and codec.keepalive() == PING_FRAME
    assert json.loads(PING_FRAME) == {"method": "ping"}
    assert codec.max_send_rate * 60 < 2000
    assert codec.max_lifetime is None
    # Pongs and acks are swallowed.
    assert codec.receive('{"channel":"pong"}', 1) == []
    assert codec.counters.parse_errors == 0


def test_only_wanted_types_are_subscribed_and_published() -> None:
    codec = new_codec(types=frozenset({DataType.MARK_PRICE}))
    codec.connected(0)
    [frame] = codec.actions()
    assert isinstance(frame, SendFrame)
    assert json.loads(frame.text)["subscription"] == {"type": "activeAssetCtx", "coin": "BTC"}
    events = feed(codec)
    assert {type(e) for e in events} == {MarkPrice}


def test_make_codecs_merges_and_validates() -> None:
    subs = [
        Subscription("BTC", "BTC-USDC-PERP", frozenset({DataType.TRADE})),
        Subscription("BTC", "BTC-USDC-PERP", frozenset({DataType.TICKER})),
        Subscription("PURR/USDC", "PURR-USDC", frozenset({DataType.L2_ORDERBOOK})),
        Subscription("@107", "HYPE-USDC", frozenset({DataType.TRADE})),
    ]
    [codec] = ADAPTER.make_codecs("hl", subs, ENDPOINTS)
    assert isinstance(codec, HyperliquidCodec)
    assert [(s["type"], s["coin"]) for s in codec.subscriptions] == [
        ("trades", "BTC"),
        ("bbo", "BTC"),
        ("l2Book", "PURR/USDC"),
        ("trades", "@107"),
    ]
    assert ADAPTER.make_codecs("hl", [], ENDPOINTS) == []
    with pytest.raises(ValueError, match="liquidation"):
        ADAPTER.make_codecs(
            "hl",
            [Subscription("BTC", "BTC-USDC-PERP", frozenset({DataType.LIQUIDATION}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="spot pair: no funding_rate"):
        ADAPTER.make_codecs(
            "hl", [Subscription("@107", "HYPE-USDC", frozenset({DataType.FUNDING_RATE}))], ENDPOINTS
        )
    with pytest.raises(ValueError, match="configured twice"):
        ADAPTER.make_codecs(
            "hl",
            [subs[0], Subscription("BTC", "XBT-USDC-PERP", frozenset({DataType.TRADE}))],
            ENDPOINTS,
        )
    many = [
        Subscription(f"C{i}", f"C{i}-USDC-PERP", ALL_TYPES) for i in range(MAX_SUBSCRIPTIONS // 4)
    ]
    assert len(ADAPTER.make_codecs("hl", many, ENDPOINTS)) == 1
    extra = Subscription("ZZZ", "ZZZ-USDC-PERP", frozenset({DataType.TRADE}))
    with pytest.raises(ValueError, match="allows 1000"):
        ADAPTER.make_codecs("hl", [*many, extra], ENDPOINTS)


def test_events_carry_configured_venue_and_endpoint() -> None:
    endpoints = Endpoints(ws_url="ws://127.0.0.1:9/ws", rest_url="http://127.0.0.1:9")
    subs = [Subscription("BTC", "BTC-USDC-PERP", ALL_TYPES)]
    [codec] = ADAPTER.make_codecs("hl-replay", subs, endpoints)
    assert codec.url == "ws://127.0.0.1:9/ws"
    codec.connected(0)
    events = [e for f in recording().received for e in codec.receive(f.text, f.ts)]
    assert {e.venue for e in events} == {"hl-replay"}


# ---------------------------------------------------------------------------------------------
# Books: staleness, crossed snapshots, reconnects


def test_crossed_snapshot_resubscribes_that_coin_only() -> None:
    codec = new_codec(natives=("BTC", "ETH"))
    out = codec.receive(book_frame("BTC", 10, [("100", "1")], [("101", "1")]), 1)
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]
    codec.receive(book_frame("ETH", 10, [("10", "1")], [("11", "1")]), 1)
    out = codec.receive(book_frame("BTC", 11, [("102", "1")], [("101", "1")]), 2)
    [status] = out  # nothing published
    assert (status.kind, status.symbol) == ("book_resync", "BTC-USDC-PERP")
    assert "crossed" in status.detail and "102 >= ask 101" in status.detail
    assert codec.counters.book_resyncs == 1
    sent = [json.loads(a.text) for a in codec.actions() if isinstance(a, SendFrame)]
    body = {"type": "l2Book", "coin": "BTC"}
    assert sent == [
        {"method": "unsubscribe", "subscription": body},
        {"method": "subscribe", "subscription": body},
    ]
    # ETH is unaffected; BTC's next good snapshot is published and marks the book synced.
    [eth] = codec.receive(book_frame("ETH", 12, [("10", "2")], [("11", "1")]), 3)
    assert isinstance(eth, BookSnapshot)
    out = codec.receive(book_frame("BTC", 12, [("100", "1")], [("101", "1")]), 4)
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]
    assert statuses(out)[0].kind == "book_synced"


def test_stale_and_repeated_snapshots_are_dropped() -> None:
    codec = new_codec()
    frame = book_frame("BTC", 10, [("100", "1")], [("101", "1")])
    assert len(codec.receive(frame, 1)) == 2
    assert codec.receive(frame, 2) == []
    assert codec.receive(book_frame("BTC", 9, [("99", "1")], [("101", "1")]), 3) == []
    assert codec.counters.stale_deltas_dropped == 2
    # A reconnect starts over: the venue's first book on the new connection is published
    # (its message id makes JetStream drop it if it repeats a stored one).
    codec.connected(4)
    codec.actions()
    out = codec.receive(frame, 5)
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]


def test_resync_waits_for_the_next_snapshot_without_sending() -> None:
    # The capture's two real BTC books (the third, the wrapped fixture, is older).
    books = [f.text for f in recording().received if json.loads(f.text)["channel"] == "l2Book"]
    first, second = books[:2]
    codec = new_codec(natives=("BTC", "ETH"))
    assert not codec.synced
    assert [type(e) for e in codec.receive(first, 1)] == [BookSnapshot, VenueStatus]
    assert not codec.synced  # ETH has no book yet
    codec.receive(book_frame("ETH", 10, [("10", "1")], [("11", "1")]), 2)
    assert codec.synced

    [status] = codec.resync("BTC-USDC-PERP", "consumer missed a snapshot", 3)
    assert (status.kind, status.symbol, status.native_symbol, status.ts_recv) == (
        "book_resync",
        "BTC-USDC-PERP",
        "BTC",
        3,
    )
    assert "consumer missed a snapshot" in status.detail
    assert codec.counters.book_resyncs == 1
    assert codec.actions() == []  # every l2Book message is a full snapshot
    assert not codec.synced
    assert not codec._coins["BTC"].book.bids

    # ETH goes on; the same BTC book again is no fresh one; the next one restores the book.
    [eth] = codec.receive(book_frame("ETH", 11, [("10", "2")], [("11", "1")]), 4)
    assert isinstance(eth, BookSnapshot) and eth.symbol == "ETH-USDC-PERP"
    assert codec.receive(first, 5) == []
    assert not codec.synced
    out = codec.receive(second, 6)
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]
    snapshot = out[0]
    assert isinstance(snapshot, BookSnapshot) and snapshot.symbol == "BTC-USDC-PERP"
    assert snapshot.sequence == json.loads(second)["data"]["time"]
    assert statuses(out)[0].kind == "book_synced"
    assert codec.synced
    assert len(codec._coins["BTC"].book.bids) == len(snapshot.bids) == 20


def test_resync_without_book_is_a_no_op() -> None:
    codec = new_codec(natives=("BTC",), types=frozenset({DataType.TRADE}))
    assert codec.synced  # no books on this connection
    for symbol in ("BTC-USDC-PERP", "ETH-USDC-PERP", "BTC"):
        assert codec.resync(symbol, "test", 1) == []
    assert codec.actions() == [] and codec.counters.book_resyncs == 0
    codec = new_codec()
    codec.receive(book_frame("BTC", 10, [("100", "1")], [("101", "1")]), 1)
    assert codec.resync("ETH-USDC-PERP", "test", 2) == [] and codec.synced
    [snap] = codec.receive(book_frame("BTC", 11, [("100", "2")], [("101", "1")]), 3)
    assert isinstance(snap, BookSnapshot)  # no second book_synced: BTC was never resynced


def test_empty_side_and_one_sided_book() -> None:
    codec = new_codec()
    [snap, _] = codec.receive(book_frame("BTC", 10, [("100", "1")], []), 1)
    assert isinstance(snap, BookSnapshot) and snap.asks == []


# ---------------------------------------------------------------------------------------------
# BBO (doc-shaped: no capture has bbo frames)


def test_bbo_doc_example() -> None:
    codec = new_codec()
    frame = (
        '{"channel":"bbo","data":{"coin":"BTC","time":1708622398623,"bbo":'
        '[{"px":"64437.0","sz":"1.4491","n":2},{"px":"64438.0","sz":"0.541","n":3}]}}'
    )
    [ticker] = codec.receive(frame, 9)
    assert isinstance(ticker, Ticker)
    assert (ticker.bid_price, ticker.bid_size, ticker.ask_price, ticker.ask_size) == (
        "64437.0",
        "1.4491",
        "64438.0",
        "0.541",
    )
    assert ticker.ts_venue == 1708622398623 * 1_000_000 and ticker.sequence is None
    assert subject(ticker) == "market.hyperliquid.btc-usdc-perp.ticker"
    assert to_message(ticker).msg_id == "hyperliquid:BTC-USDC-PERP:ticker:1708622398623000000"
    one_sided = '{"channel":"bbo","data":{"coin":"BTC","time":1,"bbo":[null,{"px":"2","sz":"1"}]}}'
    [ticker] = codec.receive(one_sided, 10)
    assert isinstance(ticker, Ticker)
    assert (ticker.bid_price, ticker.bid_size, ticker.ask_price) == (None, None, "2")


# ---------------------------------------------------------------------------------------------
# Units


def test_contract_size_scales_sizes_not_prices() -> None:
    codec = new_codec(natives=("kPEPE",), contract_size=Decimal("1000"))
    trade = (
        '{"channel":"trades","data":[{"coin":"kPEPE","side":"A","px":"0.012345","sz":"1.5",'
        '"time":1,"tid":7,"hash":"0x0","users":["a","b"]}]}'
    )
    [t] = codec.receive(trade, 1)
    assert isinstance(t, Trade)
    assert (t.symbol, t.price, t.size, t.side, t.trade_id) == (
        "kPEPE-USDC-PERP",
        "0.012345",
        "1500.0",
        "sell",
        "7",
    )
    [snap, _] = codec.receive(
        book_frame("kPEPE", 5, [("0.0123", "2.25")], [("0.0124", "0.001")]), 2
    )
    assert isinstance(snap, BookSnapshot)
    assert snap.bids == [("0.0123", "2250.00")] and snap.asks == [("0.0124", "1.000")]
    ctx = {"funding": "0", "openInterest": "12.5", "oraclePx": "0.0123", "markPx": "0.0123"}
    out = codec.receive(
        json.dumps({"channel": "activeAssetCtx", "data": {"coin": "kPEPE", "ctx": ctx}}), 3
    )
    [oi] = [e for e in out if isinstance(e, OpenInterest)]
    assert oi.open_interest == "12500.0"
    assert subject(oi) == "market.hyperliquid._6bpepe-usdc-perp.open_interest"


# ---------------------------------------------------------------------------------------------
# Errors and garbage


def test_error_channel_is_a_venue_error() -> None:
    codec = new_codec()
    [status] = codec.receive('{"channel":"error","data":"Invalid subscription: unknown coin"}', 3)
    assert status.kind == "venue_error" and "unknown coin" in status.detail
    assert codec.counters.parse_errors == 0
    to_message(status)


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\xff",
        "{",
        "[]",
        "null",
        "{}",
        '{"channel":5}',
        '{"channel":"trades"}',
        '{"channel":"trades","data":{"coin":"BTC"}}',
        '{"channel":"trades","data":[{"coin":"BTC","side":"X","px":"1","sz":"1","time":1,"tid":1}]}',
        '{"channel":"trades","data":[{"coin":"BTC","side":"B","px":"abc","sz":"1","time":1,"tid":1}]}',
        '{"channel":"bbo","data":{"coin":"BTC","time":1,"bbo":[null]}}',
        '{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[]]}}',
        book_frame("BTC", 1, [("NaN", "1")], []),
        book_frame("BTC", 1, [("1", "-1")], []),
        '{"channel":"activeAssetCtx","data":{"coin":"BTC","ctx":{"funding":"x","openInterest":"1",'
        '"oraclePx":"1","markPx":"1"}}}',
    ],
)
def test_garbage_is_a_parse_error(frame: str | bytes) -> None:
    codec = new_codec()
    [status] = codec.receive(frame, 99)
    assert isinstance(status, VenueStatus) and status.kind == "parse_error"
    assert status.detail and len(status.detail) <= 200
    assert codec.counters.parse_errors == 1
    assert codec.actions() == []
    to_message(status)
    # The codec is unharmed.
    assert sum(isinstance(e, BookSnapshot) for e in feed(codec)) == 2


# ---------------------------------------------------------------------------------------------
# Symbols and registration


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("BTC", "BTC-USDC-PERP"),
        ("ETH", "ETH-USDC-PERP"),
        ("kPEPE", "kPEPE-USDC-PERP"),
        ("PURR/USDC", "PURR-USDC"),
        ("@107", None),
        ("xyz:XYZ100", None),
        ("btc", None),
        ("", None),
        ("BTC/", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


def test_adapter_is_registered() -> None:
    assert adapters.load("hyperliquid") is ADAPTER
    assert ADAPTER.name == "hyperliquid"
    assert ADAPTER.data_types == ALL_TYPES
    assert ADAPTER.required_credentials == ()


def test_receive_throughput_smoke() -> None:
    """Not a benchmark gate: the capture decodes well above any real Hyperliquid rate."""
    codec = new_codec()
    frames = [f.text for f in recording().received]
    start = time.perf_counter()
    for _ in range(20):
        codec.connected(0)
        for text in frames:
            codec.receive(text, 0)
    assert len(frames) * 20 / (time.perf_counter() - start) > 1000
