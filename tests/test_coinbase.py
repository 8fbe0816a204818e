"""Tests of the Coinbase Advanced Trade codec (adapters/coinbase.py).

``tests/data/coinbase/market_trades.jsonl`` and ``ticker.jsonl`` are ccxt's real 2026
recordings (see the README there). No real ``level2`` recording exists in the captures, so
the book tests use nautilus_trader's Advanced-Trade-shaped fixtures (synthetic values) for
the snapshot/update shapes and build scenarios (gaps, crossed books) from them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import adapters
from adapters._common import rfc3339_fraction_ns
from adapters.coinbase import (
    ADAPTER,
    MAX_PRODUCTS_PER_CONNECTION,
    CoinbaseCodec,
)
from relay.book import OrderBook, parse_levels
from relay.captures import Frame, load
from relay.codec import Codec, Endpoints, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    MarketEvent,
    Ticker,
    Trade,
    VenueStatus,
)
from relay.timestamps import rfc3339_ns
from relay.wire import encode, subject, to_message

DATA = Path(__file__).parent / "data" / "coinbase"
ALL_TYPES = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
ENDPOINTS = ADAPTER.default_endpoints


@cache
def frames(name: str) -> tuple[Frame, ...]:
    return tuple(load(DATA / name).received)


@cache
def fixture(channel: str) -> str:
    """The nautilus fixture frame of ``channel`` (``l2_data`` gives the snapshot)."""
    return next(
        f.text
        for f in frames("nautilus_fixtures.jsonl")
        if json.loads(f.text)["channel"] == channel
    )


def l2_update_fixture() -> str:
    return [f.text for f in frames("nautilus_fixtures.jsonl") if '"l2_data"' in f.text][1]


def with_seq(text: str, seq: int, timestamp: str | None = None) -> str:
    msg = json.loads(text)
    msg["sequence_num"] = seq
    if timestamp is not None:
        msg["timestamp"] = timestamp
    return json.dumps(msg)


def subscriptions(
    natives: Iterable[str] = ("BTC-USD",),
    types: frozenset[DataType] = ALL_TYPES,
    contract_size: Decimal | None = None,
) -> list[Subscription]:
    out = []
    for native in natives:
        canonical = ADAPTER.canonical_symbol(native)
        assert canonical is not None
        out.append(Subscription(native, canonical, types, contract_size))
    return out


def new_codec(
    natives: Iterable[str] = ("BTC-USD",),
    types: frozenset[DataType] = ALL_TYPES,
    contract_size: Decimal | None = None,
) -> CoinbaseCodec:
    [codec] = ADAPTER.make_codecs(
        "coinbase", subscriptions(natives, types, contract_size), ENDPOINTS
    )
    assert isinstance(codec, CoinbaseCodec)
    codec.connected(0)
    codec.actions()
    return codec


def feed(codec: Codec, items: Iterable[Frame]) -> list[MarketEvent]:
    out: list[MarketEvent] = []
    for frame in items:
        out += codec.receive(frame.text, frame.ts)
    return out


def statuses(events: Iterable[MarketEvent], kind: str | None = None) -> list[VenueStatus]:
    return [e for e in events if isinstance(e, VenueStatus) and (kind is None or e.kind == kind)]


def sent(codec: Codec) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in codec.actions() if isinstance(a, SendFrame)]


def synced_codec() -> CoinbaseCodec:
    """A codec with BTC-USD's fixture snapshot applied (sequence_num 0)."""
    codec = new_codec()
    out = codec.receive(fixture("l2_data"), 1)
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]
    return codec


# ---------------------------------------------------------------------------------------------
# Real captures: trades and tickers


def test_market_trades_capture() -> None:
    codec = new_codec()
    events = feed(codec, frames("market_trades.jsonl"))
    raw = [json.loads(f.text) for f in frames("market_trades.jsonl")]
    want = [
        t for m in raw if m["channel"] == "market_trades" for e in m["events"] for t in e["trades"]
    ]
    trades = [e for e in events if isinstance(e, Trade)]
    assert len(trades) == len(want) == 7
    assert len(events) == len(trades)  # the subscriptions ack gives nothing
    assert {t.trade_id for t in trades} == {t["trade_id"] for t in want}
    # Published in trade order (the snapshot lists newest first).
    assert [t.trade_id for t in trades[:5]] == [f"106972628{i}" for i in range(7, 10)] + [
        "1069726290",
        "1069726291",
    ]
    first = trades[0]
    assert (first.symbol, first.side, first.price, first.size) == (
        "BTC-USD",
        "buy",
        "63310.25",
        "0.00000015",
    )
    assert first.ts_venue == rfc3339_ns("2026-08-12T19:27:45.873162Z")
    assert b'"size":"0.00000015"' in encode(first)
    assert to_message(first).msg_id == "coinbase:BTC-USD:trade:1069726287"
    assert subject(first) == "market.coinbase.btc-usd.trade"
    c = codec.counters
    assert (c.frames, c.parse_errors, c.book_gaps) == (3, 0, 0)


def test_ticker_capture() -> None:
    codec = new_codec()
    events = feed(codec, frames("ticker.jsonl"))
    tickers = [e for e in events if isinstance(e, Ticker)]
    assert len(tickers) == len(events) == 2
    t = tickers[1]
    assert (t.bid_price, t.bid_size, t.ask_price, t.ask_size, t.last_price) == (
        "63318.86",
        "0.2275291",
        "63318.87",
        "0.49990114",
        "63320.73",
    )
    assert t.ts_venue == 1786562853829058895  # the envelope time, to the nanosecond
    assert to_message(t).msg_id == f"coinbase:BTC-USD:ticker:{t.ts_venue}"
    assert codec.counters.parse_errors == 0


def test_contract_size_scales_sizes() -> None:
    codec = new_codec(contract_size=Decimal("0.01"))
    trades = [e for e in feed(codec, frames("market_trades.jsonl")) if isinstance(e, Trade)]
    assert trades[0].size == "0.0000000015"
    assert trades[0].price == "63310.25"
    codec.connected(0)
    [snapshot, _] = codec.receive(fixture("l2_data"), 1)
    assert isinstance(snapshot, BookSnapshot)
    assert snapshot.bids[0] == ("68900.00", "0.0150000000")
    codec.connected(0)
    [ticker] = feed(codec, frames("ticker.jsonl"))[:1]
    assert isinstance(ticker, Ticker) and ticker.bid_size == "0.0012636254"


# ---------------------------------------------------------------------------------------------
# Books (fixture shapes, synthetic values)


def test_snapshot_and_update() -> None:
    codec = new_codec()
    events = codec.receive(fixture("l2_data"), 1)
    snapshot = events[0]
    assert isinstance(snapshot, BookSnapshot)
    assert snapshot.bids == [
        ("68900.00", "1.50000000"),
        ("68899.50", "0.75000000"),
        ("68899.00", "2.30000000"),
    ]
    assert snapshot.asks == [
        ("68901.00", "0.50000000"),
        ("68901.50", "1.20000000"),
        ("68902.00", "0.80000000"),
    ]
    assert snapshot.sequence == snapshot.ts_venue == rfc3339_ns("2026-04-07T14:30:00.123456Z")
    [delta] = codec.receive(l2_update_fixture(), 2)
    assert isinstance(delta, BookDelta)
    assert delta.bids == [("68900.00", "2.00000000")]
    assert delta.asks == [("68901.00", "0.00000000")]
    assert delta.prev_sequence == snapshot.sequence
    assert delta.first_sequence == delta.sequence == rfc3339_ns("2026-04-07T14:30:01.456789Z")
    assert b'"asks":[["68901.00","0.00000000"]]' in encode(delta)
    assert subject(delta) == "market.coinbase.btc-usd.l2_orderbook"
    book = OrderBook()
    book.apply_snapshot(parse_levels(snapshot.bids), parse_levels(snapshot.asks))
    book.apply_delta(parse_levels(delta.bids), parse_levels(delta.asks))
    assert book.best_ask() == (Decimal("68901.50"), Decimal("1.20000000"))
    assert codec._products["BTC-USD"].book.sorted_asks() == book.sorted_asks()


def test_same_timestamp_gets_distinct_sequences() -> None:
    codec = synced_codec()
    same = "2026-04-07T14:30:00.123456Z"  # the snapshot's own time
    [d1] = codec.receive(with_seq(l2_update_fixture(), 1, same), 2)
    [d2] = codec.receive(with_seq(l2_update_fixture(), 2, same), 3)
    assert isinstance(d1, BookDelta) and isinstance(d2, BookDelta)
    assert d2.prev_sequence == d1.sequence and d2.sequence == d1.sequence + 1
    assert to_message(d1).msg_id != to_message(d2).msg_id


def test_updates_before_a_snapshot_are_dropped() -> None:
    codec = new_codec()
    assert codec.receive(l2_update_fixture(), 1) == []
    assert codec.counters.stale_deltas_dropped == 1


def test_sequence_gap_resubscribes_books_and_trades() -> None:
    codec = new_codec(natives=("BTC-USD", "ETH-USD"))
    codec.receive(fixture("l2_data"), 1)  # sequence_num 0
    codec.receive(l2_update_fixture(), 2)  # 1
    # sequence_num 2 and 3 are lost.
    out = codec.receive(with_seq(l2_update_fixture(), 4), 3)
    assert [(s.kind, s.symbol) for s in statuses(out)] == [
        ("book_gap", "BTC-USD"),
        ("book_resync", "BTC-USD"),
        ("book_gap", "ETH-USD"),
        ("book_resync", "ETH-USD"),
    ]
    assert "from 1 to 4" in out[0].detail
    assert not [e for e in out if isinstance(e, BookDelta)]  # the book waits for a snapshot
    c = codec.counters
    assert (c.book_gaps, c.book_resyncs, c.stale_deltas_dropped) == (2, 2, 1)
    assert sent(codec) == [
        {"type": "unsubscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
        {"type": "unsubscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"},
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"},
    ]
    # The new snapshot restores the book; the chain goes on from the previous sequence.
    out = codec.receive(with_seq(fixture("l2_data"), 5, "2026-04-07T14:30:05Z"), 4)
    assert isinstance(out[0], BookSnapshot) and out[1].kind == "book_synced"
    [delta] = codec.receive(with_seq(l2_update_fixture(), 6, "2026-04-07T14:30:06Z"), 5)
    assert isinstance(delta, BookDelta) and delta.prev_sequence == out[0].sequence
    # A repeated or older sequence_num is not a gap.
    assert statuses(codec.receive(with_seq(fixture("heartbeats"), 6), 6)) == []
    assert codec.counters.book_gaps == 2


def test_crossed_book_resyncs_that_product() -> None:
    codec = new_codec(natives=("BTC-USD", "ETH-USD"))
    codec.receive(fixture("l2_data"), 1)
    msg = json.loads(l2_update_fixture())
    msg["events"][0]["updates"] = [
        {
            "side": "bid",
            "event_time": "2026-04-07T14:30:01Z",
            "price_level": "68905",
            "new_quantity": "1",
        }
    ]
    [status] = codec.receive(json.dumps(msg), 2)
    assert status.kind == "book_resync" and "crossed" in status.detail
    assert status.symbol == "BTC-USD"
    assert sent(codec) == [
        {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"},
    ]
    assert codec.counters.book_resyncs == 1 and codec.counters.book_gaps == 0


def test_reconnect_resets_sequence_and_books() -> None:
    codec = synced_codec()
    codec.receive(l2_update_fixture(), 2)
    codec.connected(3)
    assert [f["channel"] for f in sent(codec)] == [
        "heartbeats",
        "level2",
        "market_trades",
        "ticker",
    ]
    # sequence_num restarts at 0 on the new connection: no gap; no delta before a snapshot.
    assert codec.receive(with_seq(l2_update_fixture(), 0), 4) == []
    assert codec.counters.book_gaps == 0
    out = codec.receive(with_seq(fixture("l2_data"), 1, "2026-04-07T14:31:00Z"), 5)
    assert isinstance(out[0], BookSnapshot)


# ---------------------------------------------------------------------------------------------
# Resync asked for by downstream (Codec.resync) and Codec.synced


def l2(text: str, product: str, seq: int, timestamp: str | None = None) -> str:
    """A fixture ``l2_data`` frame for ``product``, numbered ``seq`` on the connection."""
    msg = json.loads(with_seq(text, seq, timestamp))
    for event in msg["events"]:
        event["product_id"] = product
    return json.dumps(msg)


def test_resync_resubscribes_that_product_until_its_snapshot() -> None:
    codec = new_codec(natives=("BTC-USD", "ETH-USD"))
    snapshot, update = fixture("l2_data"), l2_update_fixture()
    assert not codec.synced
    codec.receive(l2(snapshot, "BTC-USD", 0), 1)
    assert not codec.synced  # ETH-USD has no snapshot yet
    codec.receive(l2(snapshot, "ETH-USD", 1), 2)
    assert codec.synced
    [before] = codec.receive(l2(update, "BTC-USD", 2), 3)
    assert isinstance(before, BookDelta)

    [status] = codec.resync("BTC-USD", "consumer missed a delta", 4)
    assert (status.kind, status.symbol, status.native_symbol, status.ts_recv) == (
        "book_resync",
        "BTC-USD",
        "BTC-USD",
        4,
    )
    assert "consumer missed a delta" in status.detail
    assert sent(codec) == [
        {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"},
    ]
    assert not codec.synced
    assert not codec._products["BTC-USD"].book.bids
    # Asked again while the snapshot is awaited: the status, no second request.
    [again] = codec.resync("BTC-USD", "another lost delta", 4)
    assert again.kind == "book_resync" and "awaited already" in again.detail
    assert codec.actions() == []

    # No BTC-USD delta until its snapshot; ETH-USD flows on.
    assert codec.receive(l2(update, "BTC-USD", 3), 5) == []
    assert codec.counters.stale_deltas_dropped == 1
    [eth] = codec.receive(l2(update, "ETH-USD", 4), 6)
    assert isinstance(eth, BookDelta) and eth.symbol == "ETH-USD"

    out = codec.receive(l2(snapshot, "BTC-USD", 5, "2026-04-07T14:30:05Z"), 7)
    assert isinstance(out[0], BookSnapshot) and out[0].symbol == "BTC-USD"
    assert [(s.kind, s.symbol) for s in statuses(out)] == [("book_synced", "BTC-USD")]
    assert out[0].sequence > before.sequence
    assert codec.synced
    [after] = codec.receive(l2(update, "BTC-USD", 6, "2026-04-07T14:30:06Z"), 8)
    assert isinstance(after, BookDelta) and after.prev_sequence == out[0].sequence
    c = codec.counters
    assert (c.book_resyncs, c.book_gaps, c.parse_errors) == (2, 0, 0)


def test_resync_of_a_product_without_book_is_a_no_op() -> None:
    subs = [
        *subscriptions(("BTC-USD",)),
        *subscriptions(("ETH-USD",), frozenset({DataType.TICKER})),
    ]
    [codec] = ADAPTER.make_codecs("coinbase", subs, ENDPOINTS)
    codec.connected(0)
    codec.actions()
    codec.receive(fixture("l2_data"), 1)
    assert codec.synced
    for symbol in ("ETH-USD", "SOL-USD", "btc-usd"):
        assert codec.resync(symbol, "test", 2) == []
    assert codec.actions() == []
    assert codec.counters.book_resyncs == 0 and codec.synced
    [delta] = codec.receive(l2_update_fixture(), 3)
    assert isinstance(delta, BookDelta)


def test_synced_without_books() -> None:
    codec = new_codec(types=frozenset({DataType.TRADE}))
    assert codec.synced
    assert codec.resync("BTC-USD", "test", 1) == [] and codec.actions() == []


def test_fixture_shapes() -> None:
    """Every nautilus fixture decodes (each on a fresh connection: their sequence_nums are
    per fixture, not one session's)."""
    kinds: Counter[str] = Counter()
    for frame in frames("nautilus_fixtures.jsonl"):
        codec = new_codec(natives=("BTC-USD", "ETH-USD"))
        for event in codec.receive(frame.text, frame.ts):
            kinds[type(event).__name__] += 1
        assert codec.counters.parse_errors == 0
    # snapshot (+ book_synced), 2 trades, 1 ticker; the lone update has no snapshot before it.
    assert kinds == {"BookSnapshot": 1, "VenueStatus": 1, "Trade": 2, "Ticker": 1}


# ---------------------------------------------------------------------------------------------
# Control frames and garbage


def test_error_and_ignored_frames() -> None:
    codec = new_codec()
    [status] = codec.receive('{"type":"error","message":"failure to subscribe"}', 1)
    assert status.kind == "venue_error" and "failure to subscribe" in status.detail
    candles = (
        '{"channel":"candles","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":[]}'
    )
    assert codec.receive(candles, 2) == []
    assert codec.receive(fixture("subscriptions"), 3) == []
    assert codec.counters.parse_errors == 0
    assert codec.actions() == []


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\xff",
        "{",
        "[]",
        "{}",
        '{"channel":"ticker"}',
        '{"channel":"ticker","timestamp":"never","sequence_num":0,"events":[]}',
        '{"channel":"l2_data","timestamp":"2026-04-07T14:30:00Z","sequence_num":0}',
        '{"channel":"l2_data","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":'
        '[{"type":"update","product_id":"BTC-USD","updates":[{"side":"ask","price_level":"1",'
        '"new_quantity":"1"}]}]}',
        '{"channel":"l2_data","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":'
        '[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","price_level":"NaN",'
        '"new_quantity":"1"}]}]}',
        '{"channel":"l2_data","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":'
        '[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","price_level":"1",'
        '"new_quantity":"-1"}]}]}',
        '{"channel":"market_trades","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":'
        '[{"type":"update","trades":[{"trade_id":"1","product_id":"BTC-USD","price":"1",'
        '"size":"1","side":"UP","time":"2026-04-07T14:30:00Z"}]}]}',
        '{"channel":"ticker","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":'
        '[{"type":"update","tickers":[{"product_id":"BTC-USD","best_bid":"x"}]}]}',
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
    codec.connected(100)
    trades = [e for e in feed(codec, frames("market_trades.jsonl")) if isinstance(e, Trade)]
    assert len(trades) == 7
    assert codec.counters.parse_errors == 1


# ---------------------------------------------------------------------------------------------
# The one-pass reading of a frame and the two-step one (envelope, then events) agree


def twins() -> tuple[CoinbaseCodec, CoinbaseCodec]:
    """Two like codecs; the second reads every frame the two-step way only."""
    fast = new_codec(natives=("BTC-USD", "ETH-USD"))
    slow = new_codec(natives=("BTC-USD", "ETH-USD"))
    slow._receive = slow._receive_envelope  # type: ignore[method-assign]
    return fast, slow


def assert_alike(fast: CoinbaseCodec, slow: CoinbaseCodec, text: str, recv_ns: int) -> None:
    assert fast.receive(text, recv_ns) == slow.receive(text, recv_ns)
    assert fast.actions() == slow.actions()
    assert fast.counters == slow.counters
    assert fast.synced == slow.synced


def test_one_pass_reads_the_recordings_as_two_steps() -> None:
    fast, slow = twins()
    for name in ("market_trades.jsonl", "ticker.jsonl", "nautilus_fixtures.jsonl"):
        for frame in frames(name):
            assert_alike(fast, slow, frame.text, frame.ts)
    assert fast.counters.parse_errors == 0


def _trades_frame(*trades: dict[str, str], seq: int = 0, ts: str = "2026-04-07T14:30:00Z") -> str:
    return json.dumps(
        {
            "channel": "market_trades",
            "timestamp": ts,
            "sequence_num": seq,
            "events": [{"type": "update", "trades": list(trades)}],
        }
    )


_TRADE = {
    "trade_id": "1",
    "product_id": "BTC-USD",
    "price": "1",
    "size": "1",
    "side": "BUY",
    "time": "2026-04-07T14:30:00.5Z",
}


@pytest.mark.parametrize(
    "frame",
    [
        _trades_frame(_TRADE, {**_TRADE, "price": "-1"}),
        _trades_frame(_TRADE, {**_TRADE, "size": "1e999"}),
        _trades_frame({**_TRADE, "time": "2026-04-07T14:30:60.5Z"}),  # a leap second
        _trades_frame({**_TRADE, "time": "2026-04-07T14:30:00.5+01:00"}),
        _trades_frame({**_TRADE, "time": "2026-02-30T14:30:00.5Z"}),
        _trades_frame({**_TRADE, "price": "-1"}, ts="never"),  # which error is told
        _trades_frame({**_TRADE, "price": "-1"}, seq=5),  # a gap, then a bad trade
        _trades_frame(_TRADE, seq=5, ts="never"),
        _trades_frame(_TRADE, {**_TRADE, "product_id": "ETH-USD", "trade_id": "2"}),
        '{"channel":"ticker","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":'
        '[{"tickers":[{"product_id":"BTC-USD","price":"1"},{"product_id":"ETH-USD"},'
        '{"product_id":"BTC-USD","price":"2","best_ask":"3"}]},{"tickers":[]}]}',
        '{"channel":"ticker","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":'
        '[{"tickers":[{"product_id":"BTC-USD","price":"1"}]},{"tickers":[{"product_id":"BTC-USD",'
        '"best_bid":"-2"}]}]}',
        '{"channel":"ticker","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":null}',
        '{"channel":"ticker","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"type":5,'
        '"events":[]}',
        '{"channel":"ticker","channel":"market_trades","timestamp":"2026-04-07T14:30:00Z",'
        '"sequence_num":0,"events":[]}',
        '{"channel":"market_trades","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,'
        '"events":[{"trades":[{"price":"x"}]}],"events":[]}',
        '{"channel":"heartbeats","timestamp":"2026-04-07T14:30:00Z","sequence_num":3}',
        '{"channel":"status","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":[]}',
        '{"type":"error","message":"nope"}',
    ],
)
def test_one_pass_reads_any_frame_as_two_steps(frame: str) -> None:
    """A frame the one pass cannot read goes the two-step way: the same events, statuses
    (the same parse_error detail, naming where the bad value is) and sequence check."""
    fast, slow = twins()
    assert_alike(fast, slow, fixture("subscriptions"), 1)  # sequence_num 0
    assert_alike(fast, slow, frame, 2)
    assert_alike(fast, slow, _trades_frame(_TRADE, seq=1), 3)


def test_a_later_quote_of_a_product_supersedes() -> None:
    codec = new_codec(natives=("BTC-USD", "ETH-USD"))
    frame = (
        '{"channel":"ticker","timestamp":"2026-04-07T14:30:00Z","sequence_num":0,"events":'
        '[{"tickers":[{"product_id":"BTC-USD","price":"1"},{"product_id":"ETH-USD",'
        '"price":"9"}]},{"tickers":[{"product_id":"BTC-USD","price":"2"}]}]}'
    )
    tickers = codec.receive(frame, 1)
    assert [(t.native_symbol, t.last_price) for t in tickers if isinstance(t, Ticker)] == [
        ("BTC-USD", "2"),
        ("ETH-USD", "9"),
    ]


# ---------------------------------------------------------------------------------------------
# Subscriptions, sharding, symbols, wire


def test_subscribe_frames() -> None:
    natives = [f"C{i}-USD" for i in range(150)]
    codecs = ADAPTER.make_codecs("coinbase", subscriptions(natives), ENDPOINTS)
    assert len(codecs) == 2 and MAX_PRODUCTS_PER_CONNECTION == 100
    codec = codecs[0]
    assert codec.connected(0) == []
    frames_out = sent(codec)
    assert frames_out[0] == {"type": "subscribe", "channel": "heartbeats"}
    assert [(f["channel"], len(f["product_ids"])) for f in frames_out[1:]] == [
        ("level2", 100),
        ("market_trades", 100),
        ("ticker", 100),
    ]
    codecs[1].connected(0)
    assert [len(f.get("product_ids", [])) for f in sent(codecs[1])] == [0, 50, 50, 50]
    for c in codecs:
        assert c.url == "wss://advanced-trade-ws.coinbase.com"
        assert c.ping_interval is None and c.keepalive() is None
        assert c.max_send_rate == 4.0 and c.max_lifetime is None
    assert ADAPTER.make_codecs("coinbase", [], ENDPOINTS) == []


def test_only_wanted_channels() -> None:
    codec = new_codec(types=frozenset({DataType.TICKER}))
    codec.connected(0)
    assert [f["channel"] for f in sent(codec)] == ["heartbeats", "ticker"]
    assert feed(codec, frames("market_trades.jsonl")) == []
    assert codec.receive(fixture("l2_data"), 1) == []


def test_make_codecs_merges_and_validates() -> None:
    subs = [
        Subscription("BTC-USD", "BTC-USD", frozenset({DataType.TRADE})),
        Subscription("BTC-USD", "BTC-USD", frozenset({DataType.TICKER})),
    ]
    [codec] = ADAPTER.make_codecs("cb", subs, ENDPOINTS)
    codec.connected(0)
    assert [f["channel"] for f in sent(codec)] == ["heartbeats", "market_trades", "ticker"]
    with pytest.raises(ValueError, match="funding_rate"):
        ADAPTER.make_codecs(
            "cb",
            [Subscription("BTC-USD", "BTC-USD", frozenset({DataType.FUNDING_RATE}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="differently"):
        ADAPTER.make_codecs(
            "cb", [subs[0], Subscription("BTC-USD", "XBT-USD", subs[0].data_types)], ENDPOINTS
        )


def test_wire_messages_are_unique() -> None:
    codec = new_codec()
    events = feed(codec, frames("market_trades.jsonl")) + feed(codec, frames("ticker.jsonl"))
    codec = synced_codec()
    events += codec.receive(fixture("l2_data"), 1)
    events += codec.receive(l2_update_fixture(), 2)
    ids = [to_message(e).msg_id for e in events]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("BTC-USD", "BTC-USD"),
        ("ETH-EUR", "ETH-EUR"),
        ("USDT-USDC", "USDT-USDC"),
        ("btc-usd", "BTC-USD"),
        ("BIT-26JUN26-CDE", None),
        ("BTCUSD", None),
        ("BTC-", None),
        ("", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


def test_adapter_is_registered() -> None:
    assert adapters.load("coinbase") is ADAPTER
    assert ADAPTER.name == "coinbase"
    assert ADAPTER.data_types == ALL_TYPES
    assert ADAPTER.default_endpoints == Endpoints(
        ws_url="wss://advanced-trade-ws.coinbase.com", rest_url="https://api.coinbase.com"
    )


@pytest.mark.parametrize(
    "text",
    [
        "2026-08-12T19:27:48.098821666Z",
        "2026-08-12T19:27:48.0Z",
        "2026-08-12T19:27:60.5Z",  # a leap second
        "2026-08-12T19:27:48Z",
        "2026-08-12T19:27:48.12z",
        "2026-08-12t19:27:48.5Z",
        "2026-08-12T19:27:48.12+01:00",
        "2026-08-12T19:27:48.1_0Z",
        "2026-08-12T19:27:48.١Z",
        "2026-08-12T19:27:48.Z",
        "2026-08-12T19:27:48.1234567890Z",
        "2026-08-12T19:27:48." + "1" * 5000 + "Z",  # past int()'s digit limit
        "2026-08-12T19:27:48.",
        "2026-08-12T19:27:48.5",
        "2026-08-12T19:27:48.5ZZ",
        "2026-08-12T19:27:4.85Z",
        "12026-08-12T19:27:48.5Z",
        "2026-08-12T19:27:48Z.5Z",
        "2026-08-12T19:27:48.5.5Z",
        "2026-02-30T19:27:48.1Z",
        "x.1Z",
        ".5Z",
        "2262-04-11T23:47:16.854775807Z",  # the last time an int64 holds
        "2262-04-11T23:47:16.854775808Z",
        "1969-12-31T23:59:59.5Z",
    ],
)
def test_rfc3339_fraction_ns_is_rfc3339_ns(text: str) -> None:
    """The memoized fast path gives what rfc3339_ns gives, value or error, twice over."""
    for _ in range(2):
        try:
            expected: int | str = rfc3339_ns(text)
        except ValueError as exc:
            expected = str(exc)
        try:
            got: int | str = rfc3339_fraction_ns(text)
        except ValueError as exc:
            got = str(exc)
        assert got == expected
