"""Tests of the Alpaca market-data codec (adapters/alpaca.py).

Honest caveat: there is **no real Alpaca market-data recording**. The frames in
``tests/data/alpaca/doc_examples.jsonl`` are the example messages printed in Alpaca's
documentation (see the README next to it), and the book updates, errors and garbage used
below are built here in the same documented shapes. These tests therefore show that the
codec handles the documented protocol, not that it matches the live wire in every detail.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import adapters
from adapters.alpaca import (
    ADAPTER,
    MAX_SYMBOLS_PER_FRAME,
    AlpacaCodec,
    feed_urls,
)
from relay.book import OrderBook, parse_levels
from relay.captures import Recording, load
from relay.codec import Codec, Endpoints, Reconnect, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    MarketEvent,
    Ticker,
    Trade,
    VenueStatus,
)
from relay.timestamps import rfc3339_ns as parse_time
from relay.wire import encode, subject, to_message

DOC = Path(__file__).parent / "data" / "alpaca" / "doc_examples.jsonl"
KEY, SECRET = "PKTESTKEY0123456789", "s3cr3t-never-to-be-seen"
CREDS = {"key_id": KEY, "secret_key": SECRET}
ENDPOINTS = ADAPTER.default_endpoints
CRYPTO_TYPES = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
T = "2024-03-12T10:38:50.79613221Z"


@cache
def recording() -> Recording:
    return load(DOC)


def doc_messages() -> list[dict[str, Any]]:
    return [m for f in recording().received for m in json.loads(f.text)]


def sub(
    native: str, types: frozenset[DataType], contract_size: Decimal | None = None
) -> Subscription:
    canonical = ADAPTER.canonical_symbol(native)
    assert canonical is not None
    return Subscription(native, canonical, types, contract_size)


def doc_subscriptions() -> list[Subscription]:
    """What the documented session subscribes, plus the symbols of the other examples."""
    return [
        sub("BTC/USD", frozenset({DataType.TRADE, DataType.L2_ORDERBOOK})),
        sub("ETH/USDT", frozenset({DataType.TICKER})),
        sub("ETH/USD", frozenset({DataType.TICKER})),
        sub("AVAX/USD", frozenset({DataType.TRADE})),
        sub("BAT/USD", frozenset({DataType.TICKER})),
        sub("AMD", frozenset({DataType.TICKER})),
    ]


def codecs() -> tuple[AlpacaCodec, AlpacaCodec]:
    crypto, stocks = ADAPTER.make_codecs(
        "alpaca", doc_subscriptions(), ENDPOINTS, credentials=CREDS
    )
    assert isinstance(crypto, AlpacaCodec) and isinstance(stocks, AlpacaCodec)
    return crypto, stocks


def crypto_codec(*subs: Subscription) -> AlpacaCodec:
    """A connected, authenticated crypto codec."""
    chosen = list(subs) or [sub("BTC/USD", CRYPTO_TYPES)]
    [codec] = ADAPTER.make_codecs("alpaca", chosen, ENDPOINTS, credentials=CREDS)
    assert isinstance(codec, AlpacaCodec)
    codec.connected(0)
    codec.receive('[{"T":"success","msg":"authenticated"}]', 0)
    codec.actions()
    return codec


def feed(codec: Codec) -> list[MarketEvent]:
    out: list[MarketEvent] = []
    for frame in recording().received:
        out += codec.receive(frame.text, frame.ts)
    return out


def book_msg(
    bids: list[tuple[float | int | str, float | int | str]],
    asks: list[tuple[float | int | str, float | int | str]],
    *,
    reset: bool = False,
    t: str = T,
    symbol: str = "BTC/USD",
) -> str:
    """An ``o`` message in the documented shape; numbers are written as given (raw JSON)."""
    levels = {
        side: ",".join(f'{{"p":{p},"s":{s}}}' for p, s in lv)
        for side, lv in (("b", bids), ("a", asks))
    }
    r = ',"r":true' if reset else ""
    return f'[{{"T":"o","S":"{symbol}","t":"{t}","b":[{levels["b"]}],"a":[{levels["a"]}]{r}}}]'


def statuses(events: list[MarketEvent], kind: str | None = None) -> list[VenueStatus]:
    return [e for e in events if isinstance(e, VenueStatus) and (kind is None or e.kind == kind)]


# ---------------------------------------------------------------------------------------------
# The documented session, end to end


def test_doc_session_event_counts() -> None:
    crypto, stocks = codecs()
    assert (crypto.feed, stocks.feed) == ("crypto", "stocks")
    crypto.connected(0)
    stocks.connected(0)
    for codec in (crypto, stocks):
        [auth] = codec.actions()
        assert isinstance(auth, SendFrame) and json.loads(auth.text) == {
            "action": "auth",
            "key": KEY,
            "secret": SECRET,
        }
    c_events, s_events = feed(crypto), feed(stocks)

    # Count the documented messages independently, per feed and type.
    kinds = Counter(
        (("crypto" if "/" in m.get("S", "/") else "stocks"), m["T"]) for m in doc_messages()
    )
    assert kinds == {
        ("crypto", "success"): 2,
        ("crypto", "subscription"): 1,
        ("crypto", "o"): 1,
        ("crypto", "q"): 2,
        ("crypto", "t"): 1,
        ("crypto", "b"): 1,
        ("stocks", "t"): 1,
        ("stocks", "q"): 1,
    }
    got = Counter(type(e).__name__ for e in c_events)
    assert got == {"BookSnapshot": 1, "Ticker": 2, "Trade": 1, "VenueStatus": 1}
    assert [s.kind for s in statuses(c_events)] == ["book_synced"]
    # Stocks: only the quote (stock trades are not offered; AAPL is not subscribed anyway).
    assert [type(e) for e in s_events] == [Ticker]
    for codec in (crypto, stocks):
        assert codec.counters.frames == len(recording().received)
        assert codec.counters.parse_errors == 0
        assert codec.authenticated

    # After "authenticated" each codec subscribes its own feed's symbols, once.
    [frame] = crypto.actions()
    assert isinstance(frame, SendFrame)
    assert json.loads(frame.text) == {
        "action": "subscribe",
        "trades": ["BTC/USD", "AVAX/USD"],
        "quotes": ["ETH/USDT", "ETH/USD", "BAT/USD"],
        "orderbooks": ["BTC/USD"],
    }
    # The documented client frame asks for the same BTC/ETH channels.
    [documented] = [json.loads(f.text) for f in recording().sent]
    ours = json.loads(frame.text)
    for key in ("trades", "quotes", "orderbooks"):
        assert set(documented[key]) <= set(ours[key])
    [frame] = stocks.actions()
    assert isinstance(frame, SendFrame)
    assert json.loads(frame.text) == {"action": "subscribe", "quotes": ["AMD"]}


def test_doc_values_survive_exactly() -> None:
    crypto, stocks = codecs()
    events = feed(crypto)
    [snapshot] = [e for e in events if isinstance(e, BookSnapshot)]
    assert snapshot.bids == [("27485.3445", "0.25893365"), ("27466.92727", "0.52351568")]
    assert snapshot.asks == [("27512.92", "0.26137249"), ("27547.9425", "0.52011956")]
    assert snapshot.ts_venue == snapshot.sequence == parse_time("2023-03-18T13:51:29.754747009Z")
    assert snapshot.sequence == 1679147489754747009
    assert b'["27485.3445","0.25893365"]' in encode(snapshot)
    assert subject(snapshot) == "market.alpaca.btc-usd.l2_orderbook"

    [trade] = [e for e in events if isinstance(e, Trade)]
    assert (trade.symbol, trade.native_symbol, trade.trade_id, trade.side) == (
        "AVAX-USD",
        "AVAX/USD",
        "3447222699101865076",  # above 2**53: kept exactly
        "sell",
    )
    assert (trade.price, trade.size) == ("47.299", "29.205707815")
    assert trade.ts_venue == 1710239268858228144

    tickers = {e.native_symbol: e for e in events if isinstance(e, Ticker)}
    eth = tickers["ETH/USDT"]
    assert (eth.bid_price, eth.bid_size, eth.ask_price, eth.ask_size) == (
        "1815.55510989",
        "8.24941727",
        "1818.4",
        "4.15121428",
    )
    assert b'"ask_price":"1818.4"' in encode(eth)
    [amd] = feed(stocks)
    assert isinstance(amd, Ticker)
    assert (amd.symbol, amd.bid_price, amd.bid_size, amd.ask_price, amd.ask_size) == (
        "AMD-USD",
        "87.66",
        "1",
        "87.68",
        "4",
    )
    assert amd.ts_venue == parse_time("2021-02-22T15:51:45.335689322Z")


def test_wire_messages_and_ids() -> None:
    crypto, stocks = codecs()
    events = feed(crypto) + feed(stocks)
    messages = [to_message(e) for e in events]
    ids = [m.msg_id for m in messages]
    assert len(set(ids)) == len(ids)
    assert "market.alpaca.amd-usd.ticker" in {m.subject for m in messages}
    assert "alpaca:AVAX-USD:trade:3447222699101865076" in ids
    # Seen again (a second relay): the same ids.
    crypto2, stocks2 = codecs()
    again = [to_message(e).msg_id for e in feed(crypto2) + feed(stocks2)]
    status_free = [i for i, e in zip(ids, events, strict=True) if not isinstance(e, VenueStatus)]
    assert [i for i in again if ":status:" not in i] == status_free


# ---------------------------------------------------------------------------------------------
# Credentials


def test_credentials_never_leak() -> None:
    crypto, stocks = codecs()
    for codec in (crypto, stocks):
        codec.connected(0)
        [auth] = codec.actions()
        assert SECRET in auth.text  # it has to reach the venue...
        assert SECRET not in repr(auth) and KEY not in repr(auth)  # ...and nowhere else
        assert SECRET not in repr(codec) and SECRET not in str(codec)
        events = feed(codec)
        events += codec.receive('[{"T":"error","code":402,"msg":"auth failed"}]', 1)
        for event in events:
            body = encode(event)
            assert SECRET.encode() not in body and KEY.encode() not in body
            assert SECRET not in repr(event)
        for action in codec.actions():
            assert SECRET not in repr(action)
    assert SECRET not in repr(ADAPTER)


def test_missing_credentials_are_refused() -> None:
    subs = [sub("BTC/USD", CRYPTO_TYPES)]
    with pytest.raises(ValueError, match="secret_key") as exc:
        ADAPTER.make_codecs("alpaca", subs, ENDPOINTS, credentials={"key_id": KEY})
    assert KEY not in str(exc.value)
    with pytest.raises(ValueError, match="key_id, secret_key"):
        ADAPTER.make_codecs("alpaca", subs, ENDPOINTS)
    assert ADAPTER.required_credentials == ("key_id", "secret_key")


# ---------------------------------------------------------------------------------------------
# Control messages and errors


def test_subscribe_waits_for_authentication() -> None:
    [codec] = ADAPTER.make_codecs(
        "alpaca", [sub("BTC/USD", CRYPTO_TYPES)], ENDPOINTS, credentials=CREDS
    )
    assert codec.connected(0) == []
    [auth] = codec.actions()
    assert json.loads(auth.text)["action"] == "auth"
    assert codec.receive('[{"T":"success","msg":"connected"}]', 1) == []
    assert codec.actions() == []
    assert codec.receive('[{"T":"success","msg":"authenticated"}]', 2) == []
    [subscribe] = codec.actions()
    assert isinstance(subscribe, SendFrame) and json.loads(subscribe.text)["action"] == "subscribe"
    # A repeated success does not subscribe twice; a reconnect authenticates again.
    codec.receive('[{"T":"success","msg":"authenticated"}]', 3)
    assert codec.actions() == []
    codec.connected(4)
    assert [json.loads(a.text)["action"] for a in codec.actions() if isinstance(a, SendFrame)] == [
        "auth"
    ]


@pytest.mark.parametrize(
    ("code", "msg", "hint"),
    [
        (402, "auth failed", "credentials"),
        (404, "auth timeout", None),
        (405, "symbol limit exceeded", "previous subscription is kept"),
        (406, "connection limit exceeded", "already authenticated"),
        (407, "slow client", None),
        (409, "insufficient subscription", "data plan"),
        (500, "internal error", None),
    ],
)
def test_errors_are_venue_errors_without_reconnect(code: int, msg: str, hint: str | None) -> None:
    [codec] = ADAPTER.make_codecs(
        "alpaca", [sub("BTC/USD", CRYPTO_TYPES)], ENDPOINTS, credentials=CREDS
    )
    codec.connected(0)
    codec.actions()
    [status] = codec.receive(f'[{{"T":"error","code":{code},"msg":"{msg}"}}]', 5)
    assert (status.kind, status.symbol) == ("venue_error", "")
    assert status.detail.startswith(f"error {code}: {msg}")
    if hint:
        assert hint in status.detail
    # No Reconnect (it would skip the shell's backoff) and no subscribe without auth.
    assert not any(isinstance(a, Reconnect) for a in codec.actions())
    assert codec.actions() == []
    assert not codec.authenticated
    assert codec.counters.parse_errors == 0
    to_message(status)


# ---------------------------------------------------------------------------------------------
# Order books (updates built in the documented shape; no capture exists)


def test_book_reset_then_updates() -> None:
    codec = crypto_codec()
    out = codec.receive(book_msg([(100, 1), (99.5, 2)], [(101, 1)], reset=True, t=T), 1)
    snapshot, synced = out
    assert isinstance(snapshot, BookSnapshot) and synced.kind == "book_synced"
    seq0 = snapshot.sequence
    assert seq0 == parse_time(T) == 1710239930796132210
    # An update: absolute sizes, 0 removes; exponent forms become plain decimal text.
    t1 = "2024-03-12T10:38:50.79613221Z".replace("221Z", "300Z")
    [delta] = codec.receive(book_msg([(99.5, 0), (100, 1e-05)], [(101.25, 3)], t=t1), 2)
    assert isinstance(delta, BookDelta)
    assert delta.bids == [("99.5", "0"), ("100", "0.00001")]
    assert delta.asks == [("101.25", "3")]
    assert (delta.first_sequence, delta.sequence, delta.prev_sequence) == (
        parse_time(t1),
        parse_time(t1),
        seq0,
    )
    # Same venue time again: the sequence still moves on, so ids stay unique.
    [same] = codec.receive(book_msg([(98, 1)], [], t=t1), 3)
    assert isinstance(same, BookDelta)
    assert (same.prev_sequence, same.sequence) == (delta.sequence, delta.sequence + 1)
    assert len({to_message(e).msg_id for e in (snapshot, delta, same)}) == 3
    # A consumer's copy follows.
    book = OrderBook()
    book.apply_snapshot(parse_levels(snapshot.bids), parse_levels(snapshot.asks))
    for d in (delta, same):
        book.apply_delta(parse_levels(d.bids), parse_levels(d.asks))
    assert book.sorted_bids() == [(Decimal("100"), Decimal("0.00001")), (Decimal(98), Decimal(1))]
    assert [str(p) for p, _ in book.sorted_asks()] == ["101", "101.25"]
    # A later reset replaces the book (snapshot, no second book_synced).
    out = codec.receive(book_msg([(50, 1)], [(51, 1)], reset=True, t="2024-03-12T10:39:00Z"), 4)
    assert [type(e) for e in out] == [BookSnapshot]
    assert codec.counters.book_resyncs == 0 and codec.counters.parse_errors == 0


def test_updates_before_a_reset_are_dropped() -> None:
    codec = crypto_codec()
    assert codec.receive(book_msg([(100, 1)], [(101, 1)]), 1) == []
    assert codec.counters.stale_deltas_dropped == 1
    assert codec.actions() == []
    out = codec.receive(book_msg([(100, 1)], [(101, 1)], reset=True), 2)
    assert isinstance(out[0], BookSnapshot)


def test_crossed_book_resubscribes_that_symbol_only() -> None:
    codec = crypto_codec(sub("BTC/USD", CRYPTO_TYPES), sub("ETH/USD", CRYPTO_TYPES))
    codec.receive(book_msg([(100, 1)], [(101, 1)], reset=True), 1)
    codec.receive(book_msg([(10, 1)], [(11, 1)], reset=True, symbol="ETH/USD"), 1)
    [status] = codec.receive(book_msg([(101.5, 1)], []), 2)  # no delta published
    assert (status.kind, status.symbol) == ("book_resync", "BTC-USD")
    assert "101.5 >= ask 101" in status.detail
    assert codec.counters.book_resyncs == 1
    assert [json.loads(a.text) for a in codec.actions() if isinstance(a, SendFrame)] == [
        {"action": "unsubscribe", "orderbooks": ["BTC/USD"]},
        {"action": "subscribe", "orderbooks": ["BTC/USD"]},
    ]
    # Until the fresh reset: BTC updates dropped, ETH unaffected.
    assert codec.receive(book_msg([(99, 1)], []), 3) == []
    [eth] = codec.receive(book_msg([(10, 2)], [], symbol="ETH/USD"), 3)
    assert isinstance(eth, BookDelta)
    out = codec.receive(book_msg([(100, 1)], [(101, 1)], reset=True), 4)
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]


def test_crossed_reset_is_not_published() -> None:
    codec = crypto_codec()
    [status] = codec.receive(book_msg([(102, 1)], [(101, 1)], reset=True), 1)
    assert status.kind == "book_resync"


def test_reconnect_resets_books() -> None:
    codec = crypto_codec()
    codec.receive(book_msg([(100, 1)], [(101, 1)], reset=True), 1)
    codec.connected(2)
    codec.actions()
    assert codec.receive(book_msg([(100, 2)], []), 3) == []  # needs a new reset first
    assert codec.counters.stale_deltas_dropped == 1


def test_resync_resubscribes_that_symbol_until_its_reset() -> None:
    # The documented BTC/USD book (with "r":true); updates built in the same shape.
    [reset] = [f.text for f in recording().received if '"T":"o"' in f.text]
    codec = crypto_codec(sub("BTC/USD", CRYPTO_TYPES), sub("ETH/USD", CRYPTO_TYPES))
    assert not codec.synced
    assert [type(e) for e in codec.receive(reset, 1)] == [BookSnapshot, VenueStatus]
    assert not codec.synced  # ETH/USD has no reset yet
    codec.receive(book_msg([(10, 1)], [(11, 1)], reset=True, symbol="ETH/USD"), 2)
    assert codec.synced
    [before] = codec.receive(book_msg([(27480, 1)], []), 3)
    assert isinstance(before, BookDelta)

    [status] = codec.resync("BTC-USD", "consumer missed a delta", 4)
    assert (status.kind, status.symbol, status.native_symbol, status.ts_recv) == (
        "book_resync",
        "BTC-USD",
        "BTC/USD",
        4,
    )
    assert "consumer missed a delta" in status.detail
    assert codec.counters.book_resyncs == 1
    assert codec.actions() == [
        SendFrame('{"action":"unsubscribe","orderbooks":["BTC/USD"]}'),
        SendFrame('{"action":"subscribe","orderbooks":["BTC/USD"]}'),
    ]
    assert not codec.synced
    # Asked again while the reset is awaited: the status, no second request.
    [again] = codec.resync("BTC-USD", "another lost delta", 4)
    assert again.kind == "book_resync" and "awaited already" in again.detail
    assert codec.actions() == [] and codec.counters.book_resyncs == 2

    # Until the fresh reset: BTC/USD updates dropped, ETH/USD unaffected.
    assert codec.receive(book_msg([(27481, 1)], []), 5) == []
    assert codec.counters.stale_deltas_dropped == 1
    [eth] = codec.receive(book_msg([(10, 2)], [], symbol="ETH/USD"), 6)
    assert isinstance(eth, BookDelta) and eth.symbol == "ETH-USD"
    assert not codec.synced

    out = codec.receive(reset, 7)  # the resubscription's first message
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]
    snapshot = out[0]
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence > before.sequence
    assert statuses(out)[0].kind == "book_synced"
    assert codec.synced
    [after] = codec.receive(book_msg([(27480, 2)], []), 8)
    assert isinstance(after, BookDelta) and after.prev_sequence == snapshot.sequence


def test_resync_before_authentication_sends_nothing() -> None:
    [codec] = ADAPTER.make_codecs(
        "alpaca", [sub("BTC/USD", CRYPTO_TYPES)], ENDPOINTS, credentials=CREDS
    )
    codec.connected(0)
    codec.actions()  # the auth frame
    [status] = codec.resync("BTC-USD", "early", 1)
    assert status.kind == "book_resync" and "early" in status.detail
    assert codec.actions() == []  # subscribing waits for the authentication
    codec.receive('[{"T":"success","msg":"authenticated"}]', 2)
    [subscribe] = codec.actions()
    assert isinstance(subscribe, SendFrame)
    assert json.loads(subscribe.text)["orderbooks"] == ["BTC/USD"]


def test_resync_without_book_is_a_no_op() -> None:
    crypto, stocks = codecs()
    for codec in (crypto, stocks):
        codec.connected(0)
        codec.actions()
        codec.receive('[{"T":"success","msg":"authenticated"}]', 0)
        codec.actions()
    assert stocks.synced  # stocks have no books
    assert not crypto.synced  # BTC/USD's book waits for its reset
    for symbol in ("AMD-USD", "ETH-USD", "SOL-USD", "BTC/USD"):
        assert crypto.resync(symbol, "test", 1) == []
        assert stocks.resync(symbol, "test", 1) == []
    assert stocks.resync("BTC-USD", "test", 1) == []  # not on the stock connection
    assert crypto.actions() == [] and stocks.actions() == []
    assert crypto.counters.book_resyncs == stocks.counters.book_resyncs == 0


def test_batched_messages_and_one_bad_element() -> None:
    codec = crypto_codec(sub("BTC/USD", CRYPTO_TYPES))
    frame = (
        '[{"T":"t","S":"BTC/USD","p":27530.5,"s":0.0104,"t":"2023-03-18T13:31:44.932988033Z",'
        '"i":6212534,"tks":"B"},'
        '{"T":"q","S":"BTC/USD","bp":"x"},'
        '{"T":"q","S":"BTC/USD","bp":1,"bs":2,"ap":3,"as":4,"t":"2023-03-18T13:31:45Z"}]'
    )
    trade, error, ticker = codec.receive(frame, 7)
    assert isinstance(trade, Trade) and trade.side == "buy" and trade.size == "0.0104"
    assert isinstance(error, VenueStatus) and error.kind == "parse_error"
    assert isinstance(ticker, Ticker) and ticker.ts_venue == 1679146305 * 10**9
    assert codec.counters.parse_errors == 1


# ---------------------------------------------------------------------------------------------
# Units


def test_contract_size_scales_stock_quote_sizes() -> None:
    subs = [sub("AMD", frozenset({DataType.TICKER}), contract_size=Decimal(100))]
    [codec] = ADAPTER.make_codecs("alpaca", subs, ENDPOINTS, credentials=CREDS)
    events = feed(codec)
    [amd] = events
    assert isinstance(amd, Ticker)
    assert (amd.bid_price, amd.bid_size, amd.ask_price, amd.ask_size) == (
        "87.66",
        "100",
        "87.68",
        "400",
    )


def test_contract_size_scales_crypto_sizes() -> None:
    codec = crypto_codec(sub("BTC/USD", CRYPTO_TYPES, contract_size=Decimal("0.5")))
    [snap, _] = codec.receive(book_msg([(100, 3)], [(101, 0.25)], reset=True), 1)
    assert isinstance(snap, BookSnapshot)
    assert snap.bids == [("100", "1.5")] and snap.asks == [("101", "0.125")]


# ---------------------------------------------------------------------------------------------
# Garbage


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\xff",
        "{",
        "{}",
        "null",
        '"x"',
        "[1]",
        '[{"S":"BTC/USD"}]',
        '[{"T":"t","S":"BTC/USD","p":1,"s":1,"t":"2024-01-01T00:00:00Z","i":1}]',  # no tks
        '[{"T":"t","S":"BTC/USD","p":"NaN","s":1,"t":"2024-01-01T00:00:00Z","i":1,"tks":"B"}]',
        '[{"T":"t","S":"BTC/USD","p":1,"s":1,"t":"yesterday","i":1,"tks":"B"}]',
        '[{"T":"q","S":"BTC/USD","bp":1,"bs":1,"ap":1,"as":1}]',
        '[{"T":"o","S":"BTC/USD","t":"2024-01-01T00:00:00Z","b":[{"p":1}],"a":[]}]',
        '[{"T":"o","S":"BTC/USD","t":"2024-01-01T00:00:00Z","b":[{"p":1,"s":-1}],"a":[],"r":true}]',
        '[{"T":"o","S":"BTC/USD","t":"2024-01-01T00:00:00Z","b":[{"p":"Infinity","s":1}],"a":[]}]',
        '[{"T":"error","code":"x"}]',
    ],
)
def test_garbage_is_a_parse_error(frame: str | bytes) -> None:
    codec = crypto_codec()
    [status] = codec.receive(frame, 99)
    assert isinstance(status, VenueStatus) and status.kind == "parse_error"
    assert status.detail and len(status.detail) <= 200
    assert codec.counters.parse_errors == 1
    assert codec.actions() == []
    to_message(status)
    # The codec is unharmed.
    assert [type(e) for e in codec.receive(book_msg([(1, 1)], [(2, 1)], reset=True), 100)] == [
        BookSnapshot,
        VenueStatus,
    ]


def test_messages_of_unsubscribed_symbols_and_types_are_ignored() -> None:
    codec = crypto_codec(sub("ETH/USD", frozenset({DataType.TICKER})))
    events = feed(codec)
    assert events == []  # the docs have no ETH/USD quote; everything else is another symbol
    assert codec.receive(book_msg([(1, 1)], [(2, 1)], reset=True), 1) == []
    assert codec.receive('[{"T":"x","S":"ETH/USD"}]', 2) == []
    assert codec.counters.parse_errors == 0


# ---------------------------------------------------------------------------------------------
# Feeds, sharding, symbols, times


def test_one_codec_per_feed_and_urls() -> None:
    subs = [sub("BTC/USD", CRYPTO_TYPES), sub("AAPL", frozenset({DataType.TICKER}))]
    crypto, stocks = ADAPTER.make_codecs("alpaca", subs, ENDPOINTS, credentials=CREDS)
    assert crypto.url == "wss://stream.data.alpaca.markets/v1beta3/crypto/us"
    assert stocks.url == "wss://stream.data.alpaca.markets/v2/iex"
    for codec in (crypto, stocks):
        assert codec.ping_interval is None and codec.keepalive() is None
        assert codec.max_lifetime is None
    only_stocks = ADAPTER.make_codecs("alpaca", subs[1:], ENDPOINTS, credentials=CREDS)
    assert [c.url for c in only_stocks] == ["wss://stream.data.alpaca.markets/v2/iex"]
    assert ADAPTER.make_codecs("alpaca", [], ENDPOINTS, credentials=CREDS) == []
    replay = Endpoints(ws_url="ws://127.0.0.1:9", rest_url="http://127.0.0.1:9")
    assert [c.url for c in ADAPTER.make_codecs("a", subs, replay, credentials=CREDS)] == [
        "ws://127.0.0.1:9/v1beta3/crypto/us",
        "ws://127.0.0.1:9/v2/iex",
    ]


@pytest.mark.parametrize(
    ("ws_url", "urls"),
    [
        (
            "wss://stream.data.alpaca.markets/v2/sip",
            (
                "wss://stream.data.alpaca.markets/v1beta3/crypto/us",
                "wss://stream.data.alpaca.markets/v2/sip",
            ),
        ),
        (
            "wss://stream.data.sandbox.alpaca.markets/",
            (
                "wss://stream.data.sandbox.alpaca.markets/v1beta3/crypto/us",
                "wss://stream.data.sandbox.alpaca.markets/v2/iex",
            ),
        ),
        (
            "ws://127.0.0.1:8/v2/test",
            ("ws://127.0.0.1:8/v1beta3/crypto/us", "ws://127.0.0.1:8/v2/test"),
        ),
    ],
)
def test_feed_urls(ws_url: str, urls: tuple[str, str]) -> None:
    assert feed_urls(ws_url) == urls


def test_feed_urls_rejects_other_paths() -> None:
    with pytest.raises(ValueError, match="stock feed"):
        feed_urls("wss://stream.data.alpaca.markets/v1beta3/crypto/us")


def test_subscribe_frames_are_batched() -> None:
    subs = [sub(f"C{i}/USD", frozenset({DataType.TICKER})) for i in range(250)]
    [codec] = ADAPTER.make_codecs("alpaca", subs, ENDPOINTS, credentials=CREDS)
    frames = [json.loads(f) for f in codec.subscribe_frames()]
    assert [len(f["quotes"]) for f in frames] == [MAX_SYMBOLS_PER_FRAME, MAX_SYMBOLS_PER_FRAME, 50]
    assert all(set(f) == {"action", "quotes"} for f in frames)


def test_make_codecs_validates() -> None:
    with pytest.raises(ValueError, match="stocks has no trade"):
        ADAPTER.make_codecs(
            "a", [sub("AAPL", frozenset({DataType.TRADE}))], ENDPOINTS, credentials=CREDS
        )
    with pytest.raises(ValueError, match="l2_orderbook"):
        ADAPTER.make_codecs(
            "a", [sub("AAPL", frozenset({DataType.L2_ORDERBOOK}))], ENDPOINTS, credentials=CREDS
        )
    with pytest.raises(ValueError, match="funding_rate"):
        ADAPTER.make_codecs(
            "a", [sub("BTC/USD", frozenset({DataType.FUNDING_RATE}))], ENDPOINTS, credentials=CREDS
        )
    merged = [
        sub("BTC/USD", frozenset({DataType.TRADE})),
        sub("BTC/USD", frozenset({DataType.TICKER})),
    ]
    [codec] = ADAPTER.make_codecs("a", merged, ENDPOINTS, credentials=CREDS)
    assert isinstance(codec, AlpacaCodec)
    assert json.loads(codec.subscribe_frames()[0]) == {
        "action": "subscribe",
        "trades": ["BTC/USD"],
        "quotes": ["BTC/USD"],
    }
    with pytest.raises(ValueError, match="twice differently"):
        ADAPTER.make_codecs(
            "a",
            [merged[0], Subscription("BTC/USD", "XBT-USD", frozenset({DataType.TRADE}))],
            ENDPOINTS,
            credentials=CREDS,
        )


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("BTC/USD", "BTC-USD"),
        ("ETH/BTC", "ETH-BTC"),
        ("SOL/USDT", "SOL-USDT"),
        ("AAPL", "AAPL-USD"),
        ("BRK.B", "BRK.B-USD"),
        ("FAKEPACA", "FAKEPACA-USD"),
        ("btc/usd", None),
        ("aapl", None),
        ("BTC/", None),
        ("", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2022-07-19T22:18:43.569566208Z", 1658269123569566208),
        ("2021-02-22T15:51:44.208Z", 1614009104208000000),
        ("2021-09-17T02:02:00Z", 1631844120000000000),
        ("2021-09-17T04:02:00.5+02:00", 1631844120500000000),
        ("1970-01-01T00:00:00.000000001Z", 1),
    ],
)
def test_parse_time(text: str, ns: int) -> None:
    assert parse_time(text) == ns


def test_adapter_is_registered() -> None:
    assert adapters.load("alpaca") is ADAPTER
    assert ADAPTER.name == "alpaca"
    assert ADAPTER.data_types == CRYPTO_TYPES
