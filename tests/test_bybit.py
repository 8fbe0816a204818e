"""Tests of the Bybit v5 codec (adapters/bybit.py), driven by real 2026 captures.

``tests/data/bybit/ccxt_{spot,linear}.jsonl`` hold the frames of ccxt's recorded Bybit test
cases per category (``orderbook.1`` spot snapshots, ``orderbook.50`` linear snapshot + delta,
``tickers`` spot snapshots and a linear snapshot + delta with funding/mark/index/OI,
``publicTrade``, ``kline`` and subscribe acks); see the README there. The tests count what
the captures hold independently (from the raw JSON) and check the codec's output against
that. Liquidations, gaps and refusals have no capture: those tests build frames in the
documented shape.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest

import adapters
from adapters.bybit import (
    ADAPTER,
    LINEAR_ARGS_PER_REQUEST,
    MAX_ARGS_CHARS,
    SPOT_ARGS_PER_REQUEST,
    BybitCodec,
    category_of,
)
from relay.book import OrderBook, parse_levels
from relay.captures import Frame, Recording, load
from relay.codec import Endpoints, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    FundingRate,
    Liquidation,
    MarketEvent,
    MarkPrice,
    OpenInterest,
    Ticker,
    Trade,
    VenueStatus,
)
from relay.wire import encode, msg_id, subject, to_message

DATA = Path(__file__).parent / "data" / "bybit"
ENDPOINTS = ADAPTER.default_endpoints
SPOT_TYPES = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
ALL_TYPES = frozenset(DataType)
E = TypeVar("E", bound=MarketEvent)

# ---------------------------------------------------------------------------------------------
# Capture helpers


@cache
def recording(category: str) -> Recording:
    return load(DATA / f"ccxt_{category}.jsonl")


def frames(category: str) -> list[Frame]:
    return recording(category).received


def raw(category: str) -> list[dict[str, Any]]:
    return [json.loads(f.text) for f in frames(category)]


def topic_kinds(category: str) -> Counter[str]:
    """Frames per topic kind (``orderbook.50``, ``tickers``…) or ``op`` for replies."""
    out: Counter[str] = Counter()
    for msg in raw(category):
        if "topic" in msg:
            parts = msg["topic"].split(".")
            kind = ".".join(parts[:2]) if parts[0] in ("orderbook", "kline") else parts[0]
            out[f"{kind}/{msg['type']}"] += 1
        else:
            out[f"op:{msg['op']}"] += 1
    return out


def new_codec(
    category: str,
    natives: Sequence[str] = ("BTCUSDT",),
    types: frozenset[DataType] | None = None,
    *,
    book_depth: int = 50,
    contract_size: Decimal | None = None,
) -> BybitCodec:
    """The single connected codec ``make_codecs`` builds for ``natives`` of ``category``."""
    if types is None:
        types = SPOT_TYPES if category == "spot" else ALL_TYPES
    subs = []
    for native in natives:
        prefixed = f"{category}:{native}"
        canonical = ADAPTER.canonical_symbol(prefixed)
        assert canonical is not None
        subs.append(Subscription(prefixed, canonical, types, contract_size))
    [codec] = ADAPTER.make_codecs("bybit", subs, ENDPOINTS, book_depth=book_depth)
    assert isinstance(codec, BybitCodec)
    assert codec.category == category
    codec.connected(0)
    codec.actions()  # the subscribe frames, tested separately
    return codec


def feed(codec: BybitCodec, items: Iterable[Frame | tuple[str, int]]) -> list[MarketEvent]:
    out: list[MarketEvent] = []
    for item in items:
        text, ts = (item.text, item.ts) if isinstance(item, Frame) else item
        out += codec.receive(text, ts)
    return out


def of_type(events: Iterable[MarketEvent], cls: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, cls)]


def statuses(events: Iterable[MarketEvent], kind: str | None = None) -> list[VenueStatus]:
    return [e for e in events if isinstance(e, VenueStatus) and (kind is None or e.kind == kind)]


def book_frame(
    kind: str,
    u: int,
    bids: Sequence[tuple[str, str]] = (),
    asks: Sequence[tuple[str, str]] = (),
    *,
    symbol: str = "BTCUSDT",
    depth: int = 50,
    ts: int = 1786540345200,
) -> str:
    """An ``orderbook`` push in Bybit's documented shape, for synthetic scenarios."""
    data = {"s": symbol, "b": [list(x) for x in bids], "a": [list(x) for x in asks], "u": u}
    data["seq"] = 1000 + u
    message = {"topic": f"orderbook.{depth}.{symbol}", "type": kind, "ts": ts, "data": data}
    message["cts"] = ts - 2
    return json.dumps(message)


def linear_book_frames(symbol: str = "BTCUSDT") -> list[Frame]:
    """The capture's linear ``orderbook.50`` frames, relabelled to ``symbol``."""
    out = []
    for frame in frames("linear"):
        if '"orderbook.50.BTCUSDT"' in frame.text:
            out.append(Frame(frame.ts, frame.text.replace("BTCUSDT", symbol)))
    return out


def rebuild(events: Sequence[MarketEvent]) -> OrderBook:
    """A consumer's copy of the book from published events; asserts it is never crossed."""
    book = OrderBook()
    for event in events:
        if isinstance(event, BookSnapshot):
            book.apply_snapshot(parse_levels(event.bids), parse_levels(event.asks))
        elif isinstance(event, BookDelta):
            book.apply_delta(parse_levels(event.bids), parse_levels(event.asks))
        else:
            continue
        assert not book.is_crossed(), event
    return book


# ---------------------------------------------------------------------------------------------
# The captures, end to end


def test_linear_capture_event_counts() -> None:
    kinds = topic_kinds("linear")
    assert kinds == {
        "orderbook.50/snapshot": 1,
        "orderbook.50/delta": 1,
        "publicTrade/snapshot": 2,
        "kline.1/snapshot": 2,
        "tickers/snapshot": 1,
        "tickers/delta": 1,
        "op:subscribe": 2,
    }
    trades = sum(len(m["data"]) for m in raw("linear") if m.get("topic", "").startswith("pub"))
    codec = new_codec("linear")
    events = feed(codec, frames("linear"))
    got = Counter(type(e).__name__ for e in events)
    assert got == {
        "BookSnapshot": kinds["orderbook.50/snapshot"],
        "BookDelta": kinds["orderbook.50/delta"],
        "Trade": trades,
        # The snapshot carries every field; the delta only indexPrice: a mark price event.
        "Ticker": 1,
        "MarkPrice": 2,
        "FundingRate": 1,
        "OpenInterest": 1,
        "VenueStatus": 1,  # book_synced
    }
    assert [s.kind for s in statuses(events)] == ["book_synced"]
    c = codec.counters
    assert c.frames == len(frames("linear"))
    assert (c.parse_errors, c.book_gaps, c.book_resyncs, c.stale_deltas_dropped) == (0, 0, 0, 0)
    assert codec.actions() == []


def test_spot_capture_event_counts() -> None:
    kinds = topic_kinds("spot")
    assert kinds == {
        "orderbook.1/snapshot": 4,
        "publicTrade/snapshot": 2,
        "kline.1/snapshot": 2,
        "tickers/snapshot": 2,
        "op:subscribe": 5,
    }
    trades = sum(len(m["data"]) for m in raw("spot") if m.get("topic", "").startswith("pub"))
    assert trades == 11
    # Depth 1 is the BBO book: snapshot-only, every message a BookSnapshot.
    codec = new_codec("spot", book_depth=1)
    events = feed(codec, frames("spot"))
    got = Counter(type(e).__name__ for e in events)
    assert got == {
        "BookSnapshot": 4,
        "Trade": trades,
        "Ticker": kinds["tickers/snapshot"],
        "VenueStatus": 1,
    }
    [synced] = statuses(events)
    assert synced.kind == "book_synced" and synced.symbol == "BTC-USDT"
    snaps = of_type(events, BookSnapshot)
    assert [s.sequence for s in snaps] == [70913931, 70913932, 72212457, 72212458]
    assert snaps[0].bids == [("64097.1", "0.463717")] and snaps[0].asks == [("64097.2", "1.299102")]
    assert snaps[0].ts_venue == 1786538684930 * 1_000_000  # cts, the matching-engine time
    assert codec.counters.parse_errors == 0
    # A depth-50 codec ignores the depth-1 topic.
    codec50 = new_codec("spot")
    assert not of_type(feed(codec50, frames("spot")), BookSnapshot)


def test_linear_book_chain_and_levels() -> None:
    codec = new_codec("linear", types=frozenset({DataType.L2_ORDERBOOK}))
    events = feed(codec, frames("linear"))
    snapshot, delta = of_type(events, BookSnapshot) + of_type(events, BookDelta)
    messages = [m for m in raw("linear") if m.get("topic") == "orderbook.50.BTCUSDT"]
    snap_raw, delta_raw = messages
    assert snapshot.sequence == snap_raw["data"]["u"] == 53935309
    assert [list(lv) for lv in snapshot.bids] == snap_raw["data"]["b"]
    assert [list(lv) for lv in snapshot.asks] == snap_raw["data"]["a"]
    assert len(snapshot.bids) == len(snapshot.asks) == 50
    assert isinstance(delta, BookDelta)
    assert (delta.first_sequence, delta.sequence, delta.prev_sequence) == (
        53935310,
        53935310,
        53935309,
    )
    assert [list(lv) for lv in delta.bids] == delta_raw["data"]["b"]
    assert delta.ts_venue == delta_raw["cts"] * 1_000_000
    assert (snapshot.symbol, snapshot.native_symbol) == ("BTC-USDT-PERP", "linear:BTCUSDT")
    # The consumer's copy equals a book built from the raw frames.
    want = OrderBook()
    for m in messages:
        levels = [(Decimal(p), Decimal(q)) for p, q in m["data"]["b"]]
        asks = [(Decimal(p), Decimal(q)) for p, q in m["data"]["a"]]
        if m["type"] == "snapshot":
            want.apply_snapshot(levels, asks)
        else:
            want.apply_delta(levels, asks)
    got = rebuild(events)
    assert got.sorted_bids() == want.sorted_bids()
    assert got.sorted_asks() == want.sorted_asks()
    assert got.best_bid() == (Decimal("63982.70"), Decimal("6.408"))


def test_trades_from_captures() -> None:
    linear = of_type(feed(new_codec("linear"), frames("linear")), Trade)
    first = linear[0]
    assert (first.trade_id, first.side, first.price, first.size) == (
        "e799c7b7-1ccc-53d9-b84a-fb7a460397bc",
        "buy",
        "63976.10",
        "0.015",
    )
    assert first.ts_venue == 1786540363843 * 1_000_000
    assert first.ts_recv == 1786540363844 * 1_000_000
    spot = of_type(feed(new_codec("spot"), frames("spot")), Trade)
    want = [
        (t["i"], t["S"].lower(), t["p"], t["v"])
        for m in raw("spot")
        if m.get("topic") == "publicTrade.BTCUSDT"
        for t in m["data"]
    ]
    assert [(t.trade_id, t.side, t.price, t.size) for t in spot] == want
    assert spot[0].symbol == "BTC-USDT" and spot[0].native_symbol == "spot:BTCUSDT"
    assert all(t.side == "sell" for t in spot)


def test_linear_ticker_snapshot_and_delta_merge() -> None:
    codec = new_codec("linear", types=ALL_TYPES - {DataType.L2_ORDERBOOK, DataType.TRADE})
    ticker_frames = [f for f in frames("linear") if '"tickers.BTCUSDT"' in f.text]
    snapshot_events = codec.receive(ticker_frames[0].text, 1)
    ticker, mark, funding, oi = snapshot_events
    ts = 1786540397684 * 1_000_000
    assert isinstance(ticker, Ticker)
    assert (ticker.bid_price, ticker.bid_size, ticker.ask_price, ticker.ask_size) == (
        "63958.60",
        "6.907",
        "63958.70",
        "2.750",
    )
    assert (ticker.last_price, ticker.sequence, ticker.ts_venue) == ("63958.60", 760580211302, ts)
    assert isinstance(mark, MarkPrice)
    assert (mark.mark_price, mark.index_price) == ("63958.60", "63986.67")
    assert isinstance(funding, FundingRate)
    assert (funding.rate, funding.next_funding_ts) == ("0.0000544", 1786550400000 * 1_000_000)
    assert (funding.mark_price, funding.index_price) == ("63958.60", "63986.67")
    assert isinstance(oi, OpenInterest)
    assert (oi.open_interest, oi.open_interest_value) == ("57798.137", "3696687925.13")
    # The delta changes only indexPrice: one MarkPrice with the merged mark.
    [mark2] = codec.receive(ticker_frames[1].text, 2)
    assert isinstance(mark2, MarkPrice)
    assert (mark2.mark_price, mark2.index_price) == ("63958.60", "63986.66")
    assert mark2.ts_venue == 1786540397983 * 1_000_000
    # A later quote delta is merged into the full ticker.
    delta = {
        "topic": "tickers.BTCUSDT",
        "type": "delta",
        "data": {"symbol": "BTCUSDT", "bid1Size": "7.100", "fundingRate": "0.0000601"},
        "cs": 760580218999,
        "ts": 1786540398083,
    }
    ticker3, funding3 = codec.receive(json.dumps(delta), 3)
    assert isinstance(ticker3, Ticker) and isinstance(funding3, FundingRate)
    assert (ticker3.bid_price, ticker3.bid_size, ticker3.ask_size) == ("63958.60", "7.100", "2.750")
    assert funding3.rate == "0.0000601"
    assert funding3.next_funding_ts == 1786550400000 * 1_000_000
    assert funding3.index_price == "63986.66"


def test_ticker_delta_before_snapshot_is_dropped() -> None:
    codec = new_codec("linear")
    delta = next(f for f in frames("linear") if '"type":"delta","data":{"symbol"' in f.text)
    assert codec.receive(delta.text, 1) == []
    assert codec.counters.stale_deltas_dropped == 1


def test_dated_future_ticker_without_funding() -> None:
    codec = new_codec("linear", ["BTCUSDT-26DEC25"])
    snapshot = {
        "topic": "tickers.BTCUSDT-26DEC25",
        "type": "snapshot",
        "data": {
            "symbol": "BTCUSDT-26DEC25",
            "lastPrice": "65000.5",
            "bid1Price": "65000",
            "bid1Size": "1.2",
            "ask1Price": "65001",
            "ask1Size": "0.4",
            "markPrice": "65000.7",
            "indexPrice": "63990.1",
            "openInterest": "12.5",
            "openInterestValue": "812508.75",
            "fundingRate": "",
            "nextFundingTime": "",
            "deliveryTime": "2025-12-26T08:00:00Z",
        },
        "cs": 5,
        "ts": 1786540398000,
    }
    events = codec.receive(json.dumps(snapshot), 1)
    assert [type(e) for e in events] == [Ticker, MarkPrice, OpenInterest]
    assert events[0].symbol == "BTC-USDT-251226"


def test_spot_ticker_has_no_quote() -> None:
    codec = new_codec("spot")
    tickers = of_type(feed(codec, frames("spot")), Ticker)
    assert [(t.last_price, t.bid_price, t.ask_price, t.sequence) for t in tickers] == [
        ("64057.7", None, None, 112571857121),
        ("64057.7", None, None, 112571857482),
    ]


def test_liquidations() -> None:
    codec = new_codec("linear", ["ROSEUSDT"], frozenset({DataType.LIQUIDATION}))
    frame = {
        "topic": "allLiquidation.ROSEUSDT",
        "type": "snapshot",
        "ts": 1739502303204,
        "data": [
            {"T": 1739502302929, "s": "ROSEUSDT", "S": "Sell", "v": "20000", "p": "0.04499"},
            {"T": 1739502302929, "s": "ROSEUSDT", "S": "Buy", "v": "150", "p": "0.04512"},
            {"T": 1739502302929, "s": "ROSEUSDT", "S": "Buy", "v": "150", "p": "0.04512"},
        ],
    }
    events = codec.receive(json.dumps(frame), 5)
    assert all(isinstance(e, Liquidation) for e in events)
    liqs = of_type(events, Liquidation)
    # S is the position side: Sell = a short was liquidated.
    assert [(x.side, x.price, x.size) for x in liqs] == [
        ("sell", "0.04499", "20000"),
        ("buy", "0.04512", "150"),
        ("buy", "0.04512", "150"),
    ]
    assert liqs[0].ts_venue == 1739502302929 * 1_000_000
    assert liqs[0].symbol == "ROSE-USDT-PERP"
    ids = [msg_id(x) for x in liqs]
    assert len(set(ids)) == 3
    # The same venue message seen again gives the same ids.
    assert [msg_id(x) for x in of_type(codec.receive(json.dumps(frame), 6), Liquidation)] == ids


def test_wire_messages() -> None:
    events = feed(new_codec("linear"), frames("linear"))
    events += feed(new_codec("spot", book_depth=1), frames("spot"))
    messages = [to_message(e) for e in events]
    ids = [m.msg_id for m in messages]
    assert len(set(ids)) == len(ids), "two different events share a message id"
    subjects = {m.subject for m in messages}
    assert {
        "market.bybit.btc-usdt-perp.l2_orderbook",
        "market.bybit.btc-usdt-perp.trade",
        "market.bybit.btc-usdt-perp.ticker",
        "market.bybit.btc-usdt-perp.funding_rate",
        "market.bybit.btc-usdt-perp.mark_price",
        "market.bybit.btc-usdt-perp.open_interest",
        "market.bybit.btc-usdt.l2_orderbook",
        "market.bybit.btc-usdt.trade",
        "market.bybit.btc-usdt.ticker",
        "market.bybit._status",
    } == subjects
    # The venue's exact decimal strings (trailing zeros included) survive into the bodies.
    snapshot = next(e for e in events if isinstance(e, BookSnapshot) and e.sequence == 53935309)
    assert b'["63982.70","6.408"]' in encode(snapshot)
    delta = next(e for e in events if isinstance(e, BookDelta))
    assert b'"bids":[["63982.50","0.003"],["63980.60","0.004"]]' in encode(delta)
    funding = next(e for e in events if isinstance(e, FundingRate))
    assert b'"rate":"0.0000544"' in encode(funding)
    oi = next(e for e in events if isinstance(e, OpenInterest))
    assert b'"open_interest":"57798.137"' in encode(oi)
    ticker = next(e for e in events if isinstance(e, Ticker))
    assert b'"ask_size":"2.750"' in encode(ticker)
    assert subject(ticker) == "market.bybit.btc-usdt-perp.ticker"


def test_contract_size_scales_base_sizes() -> None:
    codec = new_codec("linear", contract_size=Decimal("0.001"))
    events = feed(codec, frames("linear"))
    snapshot = of_type(events, BookSnapshot)[0]
    assert snapshot.bids[0] == ("63982.70", "0.006408")
    assert of_type(events, BookDelta)[0].asks == [("63990.50", "0.000008")]
    assert of_type(events, Trade)[0].size == "0.000015"
    ticker = of_type(events, Ticker)[0]
    assert (ticker.bid_size, ticker.ask_size, ticker.bid_price) == (
        "0.006907",
        "0.002750",
        "63958.60",
    )
    oi = of_type(events, OpenInterest)[0]
    assert (oi.open_interest, oi.open_interest_value) == ("57.798137", "3696687925.13")
    liq = {
        "topic": "allLiquidation.BTCUSDT",
        "type": "snapshot",
        "ts": 1,
        "data": [{"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "2500", "p": "60000.1"}],
    }
    [event] = codec.receive(json.dumps(liq), 1)
    assert isinstance(event, Liquidation) and event.size == "2.500"
    # Zero sizes stay zero (a deletion).
    [delta] = codec.receive(book_frame("delta", 53935311, bids=[("63982.50", "0")]), 2)
    assert isinstance(delta, BookDelta) and delta.bids == [("63982.50", "0.000")]


# ---------------------------------------------------------------------------------------------
# Gaps, resets and resyncs


def test_gap_resyncs_only_that_symbol() -> None:
    codec = new_codec("linear", ["BTCUSDT", "ETHUSDT"], frozenset({DataType.L2_ORDERBOOK}))
    feed(codec, linear_book_frames("BTCUSDT") + linear_book_frames("ETHUSDT"))
    assert codec.actions() == []
    # BTC skips u=53935311.
    out = codec.receive(book_frame("delta", 53935312, bids=[("63982.00", "1")]), 10)
    assert [(s.kind, s.symbol) for s in statuses(out)] == [
        ("book_gap", "BTC-USDT-PERP"),
        ("book_resync", "BTC-USDT-PERP"),
    ]
    assert "expected u=53935311, got u=53935312" in statuses(out)[0].detail
    assert not of_type(out, BookDelta)
    c = codec.counters
    assert (c.book_gaps, c.book_resyncs) == (1, 1)
    actions = codec.actions()
    assert [json.loads(a.text) for a in actions if isinstance(a, SendFrame)] == [
        {"req_id": "2", "op": "unsubscribe", "args": ["orderbook.50.BTCUSDT"]},
        {"req_id": "3", "op": "subscribe", "args": ["orderbook.50.BTCUSDT"]},
    ]
    assert len(actions) == 2
    # Until the new snapshot nothing of BTC's book is published; ETH goes on.
    assert codec.receive(book_frame("delta", 53935313), 11) == []
    [eth] = codec.receive(book_frame("delta", 53935311, symbol="ETHUSDT"), 12)
    assert isinstance(eth, BookDelta) and eth.prev_sequence == 53935310
    assert codec.actions() == []  # no second resubscribe while waiting
    assert codec.counters.stale_deltas_dropped == 1
    # Acks of the resync requests are dropped quietly.
    ack = '{"success":true,"ret_msg":"","conn_id":"x","req_id":"%s","op":"%s"}'
    assert codec.receive(ack % ("2", "unsubscribe"), 13) == []
    assert codec.receive(ack % ("3", "subscribe"), 14) == []
    # The fresh snapshot restarts the chain.
    snap = book_frame("snapshot", 53935400, [("63980.0", "1")], [("63981.0", "2")])
    snapshot, synced = codec.receive(snap, 15)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == 53935400
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    [delta] = codec.receive(book_frame("delta", 53935401, asks=[("63981.0", "0")]), 16)
    assert isinstance(delta, BookDelta) and delta.prev_sequence == 53935400
    book = rebuild([snapshot, delta])
    assert book.sorted_asks() == [] and book.best_bid() == (Decimal("63980.0"), Decimal("1"))


def test_repeat_and_old_deltas() -> None:
    codec = new_codec("linear", types=frozenset({DataType.L2_ORDERBOOK}))
    feed(codec, linear_book_frames())
    assert codec.receive(book_frame("delta", 53935310), 1) == []  # a repeat of the last u
    assert codec.counters.stale_deltas_dropped == 1
    out = codec.receive(book_frame("delta", 53935300), 2)  # going back is a broken chain
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]


def test_venue_reset_snapshot_replaces_the_book() -> None:
    codec = new_codec("linear", types=frozenset({DataType.L2_ORDERBOOK}))
    feed(codec, linear_book_frames())
    # A service restart: a new snapshot with u == 1, then the chain continues from it.
    snapshot, status = codec.receive(book_frame("snapshot", 1, [("1", "1")], [("2", "1")]), 1)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == 1
    assert status.kind == "book_synced" and "reset" in status.detail
    [delta] = codec.receive(book_frame("delta", 2, [("1.5", "1")]), 2)
    assert isinstance(delta, BookDelta) and delta.prev_sequence == 1
    assert codec.counters.book_resyncs == 0 and codec.actions() == []


def test_crossed_book_resyncs() -> None:
    codec = new_codec("linear", types=frozenset({DataType.L2_ORDERBOOK}))
    feed(codec, linear_book_frames())
    out = codec.receive(book_frame("delta", 53935311, bids=[("63990.00", "1")]), 1)
    [resync] = out  # no delta published
    assert resync.kind == "book_resync" and "crossed" in resync.detail
    assert (codec.counters.book_resyncs, codec.counters.book_gaps) == (1, 0)
    assert [json.loads(a.text)["op"] for a in codec.actions() if isinstance(a, SendFrame)] == [
        "unsubscribe",
        "subscribe",
    ]
    # A crossed snapshot (the answer to that resubscribe) is not published either, and
    # the book resubscribes again: no other snapshot would come.
    [again] = codec.receive(book_frame("snapshot", 9, [("5", "1")], [("4", "1")]), 2)
    assert again.kind == "book_resync" and "crossed" in again.detail
    assert [json.loads(a.text)["op"] for a in codec.actions() if isinstance(a, SendFrame)] == [
        "unsubscribe",
        "subscribe",
    ]
    assert not codec.synced
    snapshot, synced = codec.receive(book_frame("snapshot", 12, [("4", "1")], [("5", "1")]), 3)
    assert isinstance(snapshot, BookSnapshot) and synced.kind == "book_synced"
    assert codec.synced and codec.actions() == []


def test_delta_before_snapshot_is_dropped() -> None:
    codec = new_codec("linear", types=frozenset({DataType.L2_ORDERBOOK}))
    assert codec.receive(book_frame("delta", 5), 1) == []
    assert codec.counters.stale_deltas_dropped == 1


def test_reconnect_resets_state() -> None:
    codec = new_codec("linear")
    feed(codec, frames("linear"))
    codec.connected(1)
    [frame] = codec.actions()
    assert isinstance(frame, SendFrame) and json.loads(frame.text)["req_id"] == "1"
    assert codec.receive(book_frame("delta", 53935311), 2) == []  # no book yet
    delta = next(f for f in frames("linear") if '"type":"delta","data":{"symbol"' in f.text)
    assert codec.receive(delta.text, 3) == []  # no ticker to merge into yet
    events = feed(codec, linear_book_frames())
    assert [type(e) for e in events] == [BookSnapshot, VenueStatus, BookDelta]


# ---------------------------------------------------------------------------------------------
# Resync asked for from outside (Codec.resync) and Codec.synced


def test_resync_resubscribes_that_book_only() -> None:
    codec = new_codec("linear", ["BTCUSDT", "ETHUSDT"])
    assert not codec.synced  # subscribed, no snapshot yet
    snap, delta = linear_book_frames("BTCUSDT")
    feed(codec, [snap, *linear_book_frames("ETHUSDT")])
    assert codec.synced

    [status] = codec.resync("BTC-USDT-PERP", "consumer dropped l2d:7", 5)
    assert (status.kind, status.symbol, status.native_symbol) == (
        "book_resync",
        "BTC-USDT-PERP",
        "linear:BTCUSDT",
    )
    assert "consumer dropped l2d:7" in status.detail and status.ts_recv == 5
    assert codec.counters.book_resyncs == 1
    actions = codec.actions()
    assert all(isinstance(a, SendFrame) for a in actions)
    assert [json.loads(a.text) for a in actions if isinstance(a, SendFrame)] == [
        {"req_id": "2", "op": "unsubscribe", "args": ["orderbook.50.BTCUSDT"]},
        {"req_id": "3", "op": "subscribe", "args": ["orderbook.50.BTCUSDT"]},
    ]
    assert not codec.synced

    # Until the new snapshot: BTC's in-flight delta is dropped; its trades and tickers and
    # ETH's book go on.
    others = [f for f in frames("linear") if '"orderbook.' not in f.text]
    eth = (book_frame("delta", 53935311, [("63982.00", "1")], symbol="ETHUSDT"), 6)
    events = feed(codec, [delta, *others, eth])
    assert codec.counters.stale_deltas_dropped == 1
    assert of_type(events, BookSnapshot) == []
    [eth_delta] = of_type(events, BookDelta)
    assert eth_delta.symbol == "ETH-USDT-PERP" and eth_delta.prev_sequence == 53935310
    btc = Counter(type(e).__name__ for e in events if e.symbol == "BTC-USDT-PERP")
    trades = sum(len(m["data"]) for m in raw("linear") if m.get("topic", "").startswith("pub"))
    assert btc == {
        "Trade": trades,
        "Ticker": 1,
        "MarkPrice": 2,
        "FundingRate": 1,
        "OpenInterest": 1,
    }
    assert statuses(events) == []
    # Asked again while the snapshot is awaited: reported, no second resubscribe.
    [again] = codec.resync("BTC-USDT-PERP", "again", 7)
    assert again.kind == "book_resync" and "awaited" in again.detail
    assert codec.actions() == [] and not codec.synced

    # Bybit answers the subscription with a snapshot (the capture's, as the venue sends it):
    # the book is back, and the deltas after it flow.
    snapshot, synced = codec.receive(snap.text, snap.ts + 100)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == 53935309
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    assert codec.synced
    [btc_delta] = codec.receive(delta.text, delta.ts + 100)
    assert isinstance(btc_delta, BookDelta) and btc_delta.prev_sequence == 53935309
    assert rebuild([snapshot, btc_delta]).best_bid() == (Decimal("63982.70"), Decimal("6.408"))
    c = codec.counters
    assert (c.book_gaps, c.book_resyncs, c.parse_errors) == (0, 2, 0)


def test_resync_of_a_depth_1_book() -> None:
    codec = new_codec("spot", book_depth=1)
    books = [f for f in frames("spot") if '"orderbook.1.' in f.text]
    feed(codec, books[:1])
    assert codec.synced
    [status] = codec.resync("BTC-USDT", "x", 1)
    assert status.kind == "book_resync"
    assert [json.loads(a.text) for a in codec.actions() if isinstance(a, SendFrame)] == [
        {"req_id": "2", "op": "unsubscribe", "args": ["orderbook.1.BTCUSDT"]},
        {"req_id": "3", "op": "subscribe", "args": ["orderbook.1.BTCUSDT"]},
    ]
    assert not codec.synced
    snapshot, synced = codec.receive(books[1].text, books[1].ts)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == 70913932
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    assert codec.synced


def test_resync_of_unknown_or_bookless_symbol_is_a_no_op() -> None:
    codec = new_codec("linear")
    feed(codec, frames("linear"))
    assert codec.synced
    assert codec.resync("ETH-USDT-PERP", "x", 1) == []
    assert codec.resync("linear:BTCUSDT", "x", 1) == []  # a native spelling is no canonical
    assert codec.actions() == [] and codec.counters.book_resyncs == 0
    assert codec.synced
    trades = new_codec("linear", types=frozenset({DataType.TRADE, DataType.TICKER}))
    assert trades.synced  # no book on the connection
    assert trades.resync("BTC-USDT-PERP", "x", 1) == []
    assert trades.actions() == []
    assert of_type(feed(trades, frames("linear")), Trade)
    assert trades.synced and trades.counters.book_resyncs == 0


def test_reconnect_unsyncs() -> None:
    codec = new_codec("linear", types=frozenset({DataType.L2_ORDERBOOK}))
    feed(codec, linear_book_frames())
    assert codec.synced
    codec.connected(1)
    assert not codec.synced
    feed(codec, linear_book_frames()[:1])
    assert codec.synced


# ---------------------------------------------------------------------------------------------
# Control frames and garbage


def test_acks_pongs_and_refusals() -> None:
    codec = new_codec("linear", ["BTCUSDT", "ETHUSDT"])
    assert codec.keepalive() == '{"op":"ping"}'
    assert codec.ping_interval == 20.0
    pongs = [
        '{"success":true,"ret_msg":"pong","conn_id":"0970e817","op":"ping"}',
        '{"success":true,"ret_msg":"pong","conn_id":"465772b1","req_id":"","op":"ping"}',
        '{"args":["1672916271846"],"op":"pong"}',
        '{"success":true,"ret_msg":"","conn_id":"3cd84cb1","req_id":"","op":"subscribe"}',
    ]
    assert feed(codec, [(p, i) for i, p in enumerate(pongs)]) == []
    refusal = (
        '{"success":false,"ret_msg":"Invalid topic: invalid.topic.BTCUSDT",'
        '"conn_id":"cejreaspqfm9se7usbrg-2xh","req_id":"1","op":"subscribe"}'
    )
    [status] = codec.receive(refusal, 9)
    assert status.kind == "venue_error" and status.symbol == ""
    assert "Invalid topic" in status.detail and "orderbook.50.ETHUSDT" in status.detail
    # nautilus' ws_public_trade.json fixture uses "trade.linear.BTCUSDT", not a v5 topic.
    fixture = (
        '{"topic":"trade.linear.BTCUSDT","type":"snapshot","ts":1709891679005,"data":[{"T":'
        '1709891679000,"s":"BTCUSDT","S":"Buy","v":"0.010","p":"27451.00","i":"9dc7","BT":false}]}'
    )
    assert codec.receive(fixture, 10) == []
    assert codec.counters.parse_errors == 0


def test_unsubscribed_data_types_and_symbols_are_ignored() -> None:
    codec = new_codec("linear", types=frozenset({DataType.TRADE}))
    events = feed(codec, frames("linear"))
    assert {type(e) for e in events} == {Trade}
    other = new_codec("linear", ["ETHUSDT"])
    assert feed(other, frames("linear")) == []
    assert codec.counters.parse_errors == other.counters.parse_errors == 0


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\xff",
        "{",
        "[]",
        "{}",
        "null",
        '"text"',
        '{"topic":5}',
        '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1}',
        '{"topic":"publicTrade.BTCUSDT","data":[{"T":1,"S":"Up","v":"1","p":"1","i":"x"}]}',
        '{"topic":"publicTrade.BTCUSDT","data":[{"T":1,"S":"Buy","v":"1","p":"NaN","i":"x"}]}',
        '{"topic":"publicTrade.BTCUSDT","data":{"T":1}}',
        '{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"markPrice":"x"}}',
        '{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"nextFundingTime":"soon"}}',
        '{"topic":"tickers.BTCUSDT","type":"update","data":{"markPrice":"1"}}',
        '{"topic":"allLiquidation.BTCUSDT","data":[{"T":1,"S":"Buy","v":"-","p":"1"}]}',
        '{"topic":"orderbook.50.BTCUSDT","type":"snapshot","data":{"b":[],"a":[]}}',
        '{"topic":"orderbook.50.BTCUSDT","type":"other","data":{"b":[],"a":[],"u":1}}',
        book_frame("snapshot", 1, bids=[("NaN", "1")]),
        book_frame("snapshot", 1, asks=[("1", "-2")]),
    ],
)
def test_garbage_is_a_parse_error(frame: str | bytes) -> None:
    codec = new_codec("linear")
    [status] = codec.receive(frame, 99)
    assert isinstance(status, VenueStatus)
    assert status.kind == "parse_error"
    assert status.detail and len(status.detail) <= 200
    assert codec.counters.parse_errors == 1
    assert codec.counters.frames == 1
    assert codec.actions() == []
    to_message(status)
    # The codec is unharmed: the capture still decodes completely.
    events = feed(codec, frames("linear"))
    assert len(of_type(events, BookDelta)) == 1
    assert codec.counters.parse_errors == 1


# ---------------------------------------------------------------------------------------------
# Subscriptions, sharding, symbols


def subscribe_requests(codec: BybitCodec) -> list[dict[str, Any]]:
    codec.connected(0)
    actions = codec.actions()
    assert all(isinstance(a, SendFrame) for a in actions)
    return [json.loads(a.text) for a in actions if isinstance(a, SendFrame)]


def test_subscribe_frames_are_batched_per_category() -> None:
    natives = [f"SYM{i}USDT" for i in range(20)]
    subs = [Subscription(f"spot:{n}", f"SYM{i}-USDT", SPOT_TYPES) for i, n in enumerate(natives)]
    subs += [Subscription(n, f"SYM{i}-USDT-PERP", ALL_TYPES) for i, n in enumerate(natives)]
    spot, linear = ADAPTER.make_codecs("bybit", subs, ENDPOINTS)
    assert isinstance(spot, BybitCodec) and isinstance(linear, BybitCodec)
    assert spot.url == "wss://stream.bybit.com/v5/public/spot"
    assert linear.url == "wss://stream.bybit.com/v5/public/linear"
    requests = subscribe_requests(spot)
    assert [len(r["args"]) for r in requests] == [10] * 6
    assert all(len(r["args"]) <= SPOT_ARGS_PER_REQUEST for r in requests)
    assert [r["req_id"] for r in requests] == [str(i) for i in range(1, 7)]
    assert all(r["op"] == "subscribe" for r in requests)
    topics = {t for r in requests for t in r["args"]}
    assert topics == {
        f"{kind}.SYM{i}USDT"
        for i in range(20)
        for kind in ("orderbook.50", "tickers", "publicTrade")
    }
    requests = subscribe_requests(linear)
    assert [len(r["args"]) for r in requests] == [80]  # 4 topics x 20, one request
    assert LINEAR_ARGS_PER_REQUEST >= 80
    assert "allLiquidation.SYM3USDT" in requests[0]["args"]
    assert "tickers.SYM3USDT" in requests[0]["args"]
    # A reconnect subscribes again from req_id 1.
    assert subscribe_requests(linear)[0]["req_id"] == "1"


def test_sharding_by_args_length() -> None:
    # 4 topics of 24-31 characters per symbol: about 169 symbols fit in 21,000 characters.
    natives = [f"LONGNAME{i:04d}USDT" for i in range(300)]
    subs = [
        Subscription(f"linear:{n}", f"X{i}-USDT-PERP", ALL_TYPES) for i, n in enumerate(natives)
    ]
    codecs = ADAPTER.make_codecs("bybit", subs, ENDPOINTS)
    assert len(codecs) == 2
    per_codec = []
    for codec in codecs:
        assert isinstance(codec, BybitCodec)
        assert len(json.dumps(codec.topics, separators=(",", ":"))) <= MAX_ARGS_CHARS
        assert codec.max_lifetime is None and codec.max_send_rate == 5.0
        per_codec.append({t.rsplit(".", 1)[1] for t in codec.topics})
    assert sum(len(c.topics) for c in codecs if isinstance(c, BybitCodec)) == 1200
    # The first connection is full: the next symbol's topics would not have fitted.
    first, second = codecs
    assert isinstance(first, BybitCodec) and isinstance(second, BybitCodec)
    more = first.topics + second.topics[:4]
    assert len(json.dumps(more, separators=(",", ":"))) > MAX_ARGS_CHARS
    assert not per_codec[0] & per_codec[1]  # a symbol never spans two connections
    assert ADAPTER.make_codecs("bybit", [], ENDPOINTS) == []


def test_make_codecs_merges_and_validates() -> None:
    subs = [
        Subscription("BTCUSDT", "BTC-USDT", frozenset({DataType.TRADE})),
        Subscription("spot:btcusdt", "BTC-USDT", frozenset({DataType.TICKER})),
        Subscription("linear:BTCUSDT", "BTC-USDT-PERP", frozenset({DataType.FUNDING_RATE})),
    ]
    spot, linear = ADAPTER.make_codecs("bb", subs, ENDPOINTS)
    assert isinstance(spot, BybitCodec) and isinstance(linear, BybitCodec)
    assert sorted(spot.topics) == ["publicTrade.BTCUSDT", "tickers.BTCUSDT"]
    assert linear.topics == ["tickers.BTCUSDT"]
    with pytest.raises(ValueError, match="spot has no funding_rate"):
        ADAPTER.make_codecs(
            "bb",
            [Subscription("spot:BTCUSDT", "BTC-USDT", frozenset({DataType.FUNDING_RATE}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="liquidation"):
        ADAPTER.make_codecs(
            "bb",
            [Subscription("BTCUSDT", "BTC-USDT", frozenset({DataType.LIQUIDATION}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="mapped to both"):
        ADAPTER.make_codecs(
            "bb", [subs[0], Subscription("spot:BTCUSDT", "XBT-USDT", subs[0].data_types)], ENDPOINTS
        )
    with pytest.raises(ValueError, match="prefix"):
        ADAPTER.make_codecs(
            "bb", [Subscription("inverse:BTCUSD", "BTC-USD-PERP", subs[0].data_types)], ENDPOINTS
        )
    with pytest.raises(ValueError, match="depth"):
        ADAPTER.make_codecs("bb", subs, ENDPOINTS, book_depth=25)


def test_events_carry_configured_venue_and_endpoints() -> None:
    for ws_url in ("ws://127.0.0.1:9/v5/public", "ws://127.0.0.1:9/v5/public/linear/"):
        endpoints = Endpoints(ws_url=ws_url, rest_url="http://127.0.0.1:9")
        subs = [Subscription("BTCUSDT", "BTC-USDT-PERP", frozenset({DataType.TRADE}))]
        [codec] = ADAPTER.make_codecs("bybit-replay", subs, endpoints)
        assert codec.url == "ws://127.0.0.1:9/v5/public/linear"
    [trade, *_] = of_type(feed(codec, frames("linear")), Trade)
    assert (trade.venue, trade.symbol, trade.native_symbol) == (
        "bybit-replay",
        "BTC-USDT-PERP",
        "BTCUSDT",
    )


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("BTCUSDT", "BTC-USDT"),
        ("spot:BTCUSDT", "BTC-USDT"),
        ("SPOT:btcusdt", "BTC-USDT"),
        ("linear:BTCUSDT", "BTC-USDT-PERP"),
        ("linear:ETHUSDC", "ETH-USDC-PERP"),
        ("linear:1000PEPEUSDT", "1000PEPE-USDT-PERP"),
        ("BTCPERP", "BTC-USDC-PERP"),
        ("linear:BTCPERP", "BTC-USDC-PERP"),
        ("BTCUSDT-26DEC25", "BTC-USDT-251226"),
        ("linear:ETHUSDT-3APR26", "ETH-USDT-260403"),
        ("spot:ETHBTC", "ETH-BTC"),
        ("spot:USDCUSDT", "USDC-USDT"),
        ("linear:BTC-26DEC25", None),
        ("linear:BTCUSDT-26XYZ25", None),
        ("inverse:BTCUSD", None),
        ("FOOBAR", None),
        ("USDT", None),
        ("", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


@pytest.mark.parametrize(
    ("native", "symbol", "category"),
    [
        ("BTCUSDT", "BTC-USDT", "spot"),
        ("BTCUSDT", "BTC-USDT-PERP", "linear"),
        ("BTCUSDT-26DEC25", "BTC-USDT-251226", "linear"),
        ("spot:BTCUSDT", "BTC-USDT-PERP", "spot"),  # the prefix wins
        ("linear:BTCUSDT", "BTC-USDT", "linear"),
    ],
)
def test_category_of(native: str, symbol: str, category: str) -> None:
    assert category_of(Subscription(native, symbol, frozenset({DataType.TRADE}))) == category


def test_adapter_is_registered() -> None:
    assert adapters.load("bybit") is ADAPTER
    assert ADAPTER.name == "bybit"
    assert ADAPTER.data_types == ALL_TYPES
    assert ADAPTER.default_endpoints == Endpoints(
        ws_url="wss://stream.bybit.com/v5/public", rest_url="https://api.bybit.com"
    )
