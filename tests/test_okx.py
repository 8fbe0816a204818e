"""Tests of the OKX v5 codec (adapters/okx.py), driven by real captures.

* ``tests/data/okx/OKX.ws.1.0.part*.jsonl``: cryptofeed's 2022 recording of ``books``
  (with CRC32 checksums, before OKX added ``seqId``), ``trades`` and ``tickers`` for
  BTC-USDT, UNI-USD-SWAP and BTC-USD-220527 (split in two files to keep each small).
* ``tests/data/okx/ccxt_okx.jsonl``: ccxt's 2026 recordings of ``tickers``, ``trades``
  (with ``seqId``) and ``books5`` for BTC-USDT and BTC-USDT-SWAP.

The tests count what the captures hold independently (from the raw JSON) and check the
codec's output against that. Shapes of channels not in any real capture (funding-rate,
mark-price, liquidation-orders) come from the OKX docs' samples quoted in okx.md.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import adapters
from adapters.okx import ADAPTER, MAX_BOOKS_PER_CONNECTION, OkxCodec
from relay.book import OrderBook, parse_levels
from relay.captures import Frame, Recording, load
from relay.checksum import book_checksum
from relay.codec import Endpoints, Reconnect, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    FundingRate,
    Liquidation,
    MarketEvent,
    MarkPrice,
    Ticker,
    Trade,
    VenueStatus,
)
from relay.wire import encode, msg_id, to_message

DATA = Path(__file__).parent / "data" / "okx"
CF_SYMBOLS = ("BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT")
BASIC = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
ENDPOINTS = ADAPTER.default_endpoints


# ---------------------------------------------------------------------------------------------
# Capture helpers


@cache
def cryptofeed() -> Recording:
    """The 2022 recording, its parts joined in order."""
    rec = Recording()
    for path in sorted(DATA.glob("OKX.ws.1.0.part*.jsonl")):
        part = load(path)
        rec.venue, rec.url = rec.venue or part.venue, rec.url or part.url
        rec.received += part.received
        rec.sent += part.sent
    return rec


@cache
def ccxt() -> Recording:
    return load(DATA / "ccxt_okx.jsonl")


def pushes(frames: Iterable[Frame], channel: str) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        message = json.loads(frame.text)
        if "data" in message and message["arg"]["channel"] == channel:
            out.append(message)
    return out


def subs(
    natives: Iterable[str],
    types: frozenset[DataType] = BASIC,
    contract_size: Decimal | None = None,
) -> list[Subscription]:
    out = []
    for native in natives:
        canonical = ADAPTER.canonical_symbol(native)
        assert canonical is not None
        out.append(Subscription(native, canonical, types, contract_size))
    return out


def new_codec(subscriptions: Sequence[Subscription]) -> OkxCodec:
    [codec] = ADAPTER.make_codecs("okx", subscriptions, ENDPOINTS)
    assert isinstance(codec, OkxCodec)
    codec.connected(0)
    codec.actions()  # the subscribe frames, tested separately
    return codec


def feed(codec: OkxCodec, frames: Iterable[Frame]) -> list[MarketEvent]:
    out: list[MarketEvent] = []
    for frame in frames:
        out += codec.receive(frame.text, frame.ts)
    return out


def statuses(events: Iterable[MarketEvent], kind: str | None = None) -> list[VenueStatus]:
    return [e for e in events if isinstance(e, VenueStatus) and (kind is None or e.kind == kind)]


def book_events(events: Iterable[MarketEvent], native: str) -> list[BookSnapshot | BookDelta]:
    return [
        e for e in events if isinstance(e, (BookSnapshot, BookDelta)) and e.native_symbol == native
    ]


def rebuild(events: Sequence[BookSnapshot | BookDelta]) -> OrderBook:
    """A consumer's copy from published events; checks the chain and that it never crosses."""
    book = OrderBook()
    prev = None
    for event in events:
        if isinstance(event, BookSnapshot):
            book.apply_snapshot(parse_levels(event.bids), parse_levels(event.asks))
        else:
            assert event.prev_sequence == prev
            book.apply_delta(parse_levels(event.bids), parse_levels(event.asks))
        prev = event.sequence
        assert not book.is_crossed(), event
    return book


def book_frame(
    native: str,
    action: str,
    bids: Sequence[tuple[str, str]] = (),
    asks: Sequence[tuple[str, str]] = (),
    *,
    seq: int | None = None,
    prev: int | None = None,
    checksum: int = 0,
    ts: str = "1700000000000",
) -> str:
    data: dict[str, Any] = {
        "asks": [[p, s, "0", "1"] for p, s in asks],
        "bids": [[p, s, "0", "1"] for p, s in bids],
        "ts": ts,
        "checksum": checksum,
    }
    if seq is not None:
        data["seqId"] = seq
        data["prevSeqId"] = prev
    return json.dumps(
        {"arg": {"channel": "books", "instId": native}, "action": action, "data": [data]}
    )


# ---------------------------------------------------------------------------------------------
# The 2022 capture: books with checksums, trades, tickers


def test_cryptofeed_capture_end_to_end() -> None:
    codec = new_codec(subs(CF_SYMBOLS))
    frames = cryptofeed().received
    events = feed(codec, frames)

    books = pushes(frames, "books")
    actions = Counter(m["action"] for m in books)
    assert actions == {"snapshot": 3, "update": 287}
    assert all(m["data"][0]["checksum"] != 0 for m in books)  # every one is verified
    n_trades = sum(len(m["data"]) for m in pushes(frames, "trades"))
    n_tickers = sum(len(m["data"]) for m in pushes(frames, "tickers"))

    got = Counter(type(e).__name__ for e in events)
    assert got["BookSnapshot"] == 3
    assert got["BookDelta"] == 287
    assert got["Trade"] == n_trades == 74
    assert got["Ticker"] == n_tickers == 28
    assert [s.kind for s in statuses(events)] == ["book_synced"] * 3
    c = codec.counters
    assert c.frames == len(frames)
    assert (c.parse_errors, c.checksum_failures, c.book_gaps, c.book_resyncs) == (0, 0, 0, 0)
    assert codec.actions() == []

    for native in CF_SYMBOLS:
        events_n = book_events(events, native)
        raw = [m["data"][0] for m in books if m["arg"]["instId"] == native]
        assert len(events_n) == len(raw)
        # Pre-seqId era: the sequence is the message's ts (ms), chained by prev_sequence.
        assert [e.sequence for e in events_n] == [int(d["ts"]) for d in raw]
        for event, data in zip(events_n, raw, strict=True):
            assert [list(lv) for lv in event.bids] == [lv[:2] for lv in data["bids"]]
            assert [list(lv) for lv in event.asks] == [lv[:2] for lv in data["asks"]]
            assert event.ts_venue == int(data["ts"]) * 1_000_000
        consumer = rebuild(events_n)
        # The consumer's copy carries the same checksum as the last message.
        assert book_checksum(consumer) == raw[-1]["checksum"]


def test_cryptofeed_trades_and_tickers() -> None:
    codec = new_codec(subs(CF_SYMBOLS))
    events = feed(codec, cryptofeed().received)
    trades = [e for e in events if isinstance(e, Trade)]
    first = trades[0]
    assert (first.symbol, first.native_symbol, first.trade_id) == (
        "BTC-USD-220527",
        "BTC-USD-220527",
        "7849",
    )
    assert (first.price, first.size, first.side) == ("30218.8", "1", "buy")
    assert first.ts_venue == 1652459199958 * 1_000_000
    uni = next(t for t in trades if t.native_symbol == "UNI-USD-SWAP")
    assert (uni.symbol, uni.trade_id, uni.price, uni.size, uni.side) == (
        "UNI-USD-PERP",
        "12883020",
        "5.123",
        "100",
        "sell",
    )
    raw = [d for m in pushes(cryptofeed().received, "tickers") for d in m["data"]]
    tickers = [e for e in events if isinstance(e, Ticker)]
    for ticker, data in zip(tickers, raw, strict=True):
        assert (ticker.bid_price, ticker.bid_size) == (data["bidPx"], data["bidSz"])
        assert (ticker.ask_price, ticker.ask_size) == (data["askPx"], data["askSz"])
        assert ticker.last_price == data["last"]
        assert ticker.ts_venue == int(data["ts"]) * 1_000_000


def test_contract_size_scales_published_sizes_only() -> None:
    swap = subs(["UNI-USD-SWAP"], contract_size=Decimal("10"))
    codec = new_codec(swap)
    events = feed(codec, cryptofeed().received)
    assert codec.counters.checksum_failures == 0  # the book keeps the contract strings
    snapshot = next(e for e in events if isinstance(e, BookSnapshot))
    raw = next(
        m for m in pushes(cryptofeed().received, "books") if m["arg"]["instId"] == "UNI-USD-SWAP"
    )
    assert snapshot.bids[0] == (raw["data"][0]["bids"][0][0], "2510")  # 251 contracts x 10
    assert raw["data"][0]["bids"][0][1] == "251"
    trade = next(e for e in events if isinstance(e, Trade))
    assert (trade.price, trade.size) == ("5.123", "1000")
    # Deletions stay zero after scaling.
    deltas = [e for e in events if isinstance(e, BookDelta)]
    assert any(Decimal(s) == 0 for d in deltas for _, s in d.bids + d.asks)
    ticker = next(e for e in events if isinstance(e, Ticker))
    assert ticker.bid_size is not None and Decimal(ticker.bid_size) % 10 == 0
    # Decimal contract sizes stay exact.
    codec = new_codec(subs(["BTC-USDT-SWAP"], contract_size=Decimal("0.01")))
    [trade] = feed(codec, [f for f in ccxt().received if '"tradeId":"2832749645"' in f.text])
    assert isinstance(trade, Trade) and trade.size == "0.3495"  # 34.95 contracts


# ---------------------------------------------------------------------------------------------
# The 2026 capture: tickers and trades with seqId; books5 is not a channel we subscribe


def test_ccxt_capture() -> None:
    frames = ccxt().received
    codec = new_codec(subs(["BTC-USDT", "BTC-USDT-SWAP"]))
    events = feed(codec, frames)
    raw_trades = [d for m in pushes(frames, "trades") for d in m["data"]]
    raw_tickers = [d for m in pushes(frames, "tickers") for d in m["data"]]
    assert len(pushes(frames, "books5")) == 4
    got = Counter(type(e).__name__ for e in events)
    assert got == {"Trade": len(raw_trades), "Ticker": len(raw_tickers)}
    assert (len(raw_trades), len(raw_tickers)) == (4, 6)
    assert codec.counters.parse_errors == 0
    trades = [e for e in events if isinstance(e, Trade)]
    for trade, data in zip(trades, raw_trades, strict=True):
        assert trade.trade_id == data["tradeId"]
        assert (trade.price, trade.size, trade.side) == (data["px"], data["sz"], data["side"])
        body = encode(trade)
        assert f'"price":"{data["px"]}"'.encode() in body
        assert f'"size":"{data["sz"]}"'.encode() in body
    swap = next(t for t in trades if t.native_symbol == "BTC-USDT-SWAP")
    assert swap.symbol == "BTC-USDT-PERP"
    spot_ticker = next(e for e in events if isinstance(e, Ticker) and e.symbol == "BTC-USDT")
    assert encode(spot_ticker).count(b'"ask_size":"2.31126955"') == 1  # exactly as sent


# ---------------------------------------------------------------------------------------------
# Book sync rules (seqId era)


def synced_codec(native: str = "BTC-USDT") -> OkxCodec:
    codec = new_codec(subs([native]))
    out = codec.receive(
        book_frame(native, "snapshot", [("100", "1")], [("101", "1")], seq=10, prev=-1), 1
    )
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]
    return codec


def test_documented_sequence_cases() -> None:
    codec = synced_codec()
    # update 10→15, no-op 15→15, reset 15→3, update 3→5 (okx.md section 5)
    [d1] = codec.receive(book_frame("BTC-USDT", "update", [("100", "2")], seq=15, prev=10), 2)
    assert codec.receive(book_frame("BTC-USDT", "update", seq=15, prev=15), 3) == []
    [d2] = codec.receive(book_frame("BTC-USDT", "update", [("99", "1")], seq=3, prev=15), 4)
    [d3] = codec.receive(book_frame("BTC-USDT", "update", asks=[("101", "0")], seq=5, prev=3), 5)
    chain = [(d.prev_sequence, d.sequence, d.first_sequence) for d in (d1, d2, d3)]
    assert chain == [(10, 15, None), (15, 3, None), (3, 5, None)]
    assert codec.counters.book_gaps == 0
    assert len({msg_id(d) for d in (d1, d2, d3)}) == 3


def test_gap_resubscribes_that_symbol_only() -> None:
    codec = new_codec(subs(["BTC-USDT", "ETH-USDT"]))
    for native in ("BTC-USDT", "ETH-USDT"):
        codec.receive(
            book_frame(native, "snapshot", [("1", "1")], [("2", "1")], seq=10, prev=-1), 1
        )
    out = codec.receive(book_frame("BTC-USDT", "update", [("1", "2")], seq=20, prev=12), 2)
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]
    assert not any(isinstance(e, BookDelta) for e in out)
    assert (codec.counters.book_gaps, codec.counters.book_resyncs) == (1, 1)
    arg = [{"channel": "books", "instId": "BTC-USDT"}]
    assert codec.actions() == [
        SendFrame(json.dumps({"op": "unsubscribe", "args": arg}, separators=(",", ":"))),
        SendFrame(json.dumps({"op": "subscribe", "args": arg}, separators=(",", ":"))),
    ]
    # In-flight updates are dropped until the fresh snapshot; ETH keeps flowing.
    assert codec.receive(book_frame("BTC-USDT", "update", seq=21, prev=20), 3) == []
    assert codec.counters.stale_deltas_dropped == 1
    [eth] = codec.receive(book_frame("ETH-USDT", "update", [("1", "3")], seq=11, prev=10), 4)
    assert isinstance(eth, BookDelta) and eth.symbol == "ETH-USDT"
    out = codec.receive(
        book_frame("BTC-USDT", "snapshot", [("1", "5")], [("2", "1")], seq=30, prev=-1), 5
    )
    assert isinstance(out[0], BookSnapshot) and out[0].sequence == 30
    [delta] = codec.receive(book_frame("BTC-USDT", "update", [("1", "4")], seq=31, prev=30), 6)
    assert isinstance(delta, BookDelta) and delta.prev_sequence == 30


def test_corrupted_checksum_on_real_data_resyncs() -> None:
    frames = list(cryptofeed().received)
    # Corrupt the 10th UNI-USD-SWAP update's checksum.
    uni = [
        i
        for i, f in enumerate(frames)
        if '"books","instId":"UNI-USD-SWAP"},"action":"update"' in f.text
    ]
    i = uni[9]
    message = json.loads(frames[i].text)
    message["data"][0]["checksum"] += 1
    frames[i] = Frame(frames[i].ts, json.dumps(message))
    codec = new_codec(subs(CF_SYMBOLS))
    events = feed(codec, frames)
    kinds = [s.kind for s in statuses(events)]
    assert kinds == ["book_synced"] * 3 + ["checksum_mismatch", "book_resync"]
    mismatch = statuses(events, "checksum_mismatch")[0]
    assert mismatch.symbol == "UNI-USD-PERP" and "checksum" in mismatch.detail
    assert codec.counters.checksum_failures == 1 and codec.counters.book_resyncs == 1
    sent = [json.loads(a.text) for a in codec.actions() if isinstance(a, SendFrame)]
    assert [s["op"] for s in sent] == ["unsubscribe", "subscribe"]
    assert sent[0]["args"] == [{"channel": "books", "instId": "UNI-USD-SWAP"}]
    # No UNI delta after the corrupted one (no new snapshot in the capture); others unaffected.
    uni_deltas = [e for e in book_events(events, "UNI-USD-SWAP") if isinstance(e, BookDelta)]
    assert len(uni_deltas) == 9
    total_uni_updates = len(uni)
    assert codec.counters.stale_deltas_dropped == total_uni_updates - 10
    others = [e for e in events if isinstance(e, BookDelta) and e.native_symbol != "UNI-USD-SWAP"]
    assert len(others) == 287 - total_uni_updates


def test_crossed_book_resyncs() -> None:
    codec = synced_codec()
    out = codec.receive(book_frame("BTC-USDT", "update", [("101.5", "1")], seq=11, prev=10), 2)
    assert [s.kind for s in statuses(out)] == ["book_resync"]
    assert "crossed" in out[0].detail
    assert len(codec.actions()) == 2


def test_update_before_snapshot_is_dropped() -> None:
    codec = new_codec(subs(["BTC-USDT"]))
    assert codec.receive(book_frame("BTC-USDT", "update", [("1", "1")], seq=2, prev=1), 1) == []
    assert codec.counters.stale_deltas_dropped == 1


def test_reconnect_resets_books() -> None:
    codec = synced_codec()
    codec.connected(5)
    [frame] = codec.actions()
    assert isinstance(frame, SendFrame) and '"op":"subscribe"' in frame.text
    assert codec.receive(book_frame("BTC-USDT", "update", [("1", "1")], seq=11, prev=10), 6) == []


# ---------------------------------------------------------------------------------------------
# Funding, mark price, liquidations (doc-shaped frames: no real capture has them)

FUNDING = {  # nautilus_trader crates/adapters/okx/test_data/ws_funding_rate.json (doc shape)
    "arg": {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
    "data": [
        {
            "instId": "BTC-USDT-SWAP",
            "fundingRate": "0.0001",
            "nextFundingRate": "0.0002",
            "fundingTime": "1744590349506",
            "nextFundingTime": "1744619149506",
            "ts": "1744590349506",
        }
    ],
}
MARK = {
    "arg": {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
    "data": [
        {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "markPx": "0.1", "ts": "1597026383085"}
    ],
}
LIQUIDATION = json.loads(  # okx.md 4.5 (doc sample), plus a net-mode and a foreign item
    '{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":[{"details":['
    '{"bkLoss":"0","bkPx":"0.007831","ccy":"","posSide":"short","side":"buy","sz":"13",'
    '"ts":"1692266434010"},'
    '{"bkLoss":"0","bkPx":"0.0079","ccy":"","posSide":"net","side":"sell","sz":"2",'
    '"ts":"1692266434011"}],'
    '"instFamily":"IOST-USDT","instId":"IOST-USDT-SWAP","instType":"SWAP","uly":"IOST-USDT"},'
    '{"details":[{"bkPx":"1","posSide":"long","side":"sell","sz":"1","ts":"1692266434012"}],'
    '"instId":"OTHER-USDT-SWAP","instType":"SWAP"}]}'
)


def test_funding_mark_and_liquidations() -> None:
    types = frozenset({DataType.FUNDING_RATE, DataType.MARK_PRICE, DataType.LIQUIDATION})
    subscriptions = [
        *subs(["BTC-USDT-SWAP"], types),
        *subs(["IOST-USDT-SWAP"], types, contract_size=Decimal("1000")),
    ]
    [codec] = ADAPTER.make_codecs("okx", subscriptions, ENDPOINTS)
    codec.connected(0)
    [frame] = codec.actions()
    assert isinstance(frame, SendFrame)
    args = json.loads(frame.text)["args"]
    assert args == [
        {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
        {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
        {"channel": "funding-rate", "instId": "IOST-USDT-SWAP"},
        {"channel": "mark-price", "instId": "IOST-USDT-SWAP"},
        {"channel": "liquidation-orders", "instType": "SWAP"},
    ]
    [funding] = codec.receive(json.dumps(FUNDING), 1)
    assert isinstance(funding, FundingRate)
    assert (funding.symbol, funding.rate) == ("BTC-USDT-PERP", "0.0001")
    assert funding.next_funding_ts == 1744590349506 * 1_000_000
    assert funding.ts_venue == 1744590349506 * 1_000_000
    [mark] = codec.receive(json.dumps(MARK), 2)
    assert isinstance(mark, MarkPrice) and mark.mark_price == "0.1"
    liqs = codec.receive(json.dumps(LIQUIDATION), 3)
    assert [type(e) for e in liqs] == [Liquidation, Liquidation]  # OTHER-USDT-SWAP is not ours
    first, second = liqs
    assert isinstance(first, Liquidation) and isinstance(second, Liquidation)
    # An order buying back a short: the liquidated position is a short.
    assert (first.symbol, first.side, first.price, first.size) == (
        "IOST-USDT-PERP",
        "sell",
        "0.007831",
        "13000",
    )
    assert (second.side, second.size) == ("buy", "2000")  # net mode: a sell closes a long
    assert msg_id(first) != msg_id(second)
    for event in (funding, mark, *liqs):
        to_message(event)


# ---------------------------------------------------------------------------------------------
# Resync asked for from outside (Codec.resync) and Codec.synced


def venue_snapshot(frames: Iterable[Frame], native: str) -> str:
    """The ``books`` snapshot the venue would send for ``native`` after ``frames``: its
    snapshot and updates in them merged (wire strings kept), with the checksum and ts of
    the last one, as a fresh subscription would be answered then."""
    sides: dict[str, dict[str, list[str]]] = {"bids": {}, "asks": {}}
    last: dict[str, Any] = {}
    for message in pushes(frames, "books"):
        if message["arg"]["instId"] != native:
            continue
        [last] = message["data"]
        if message["action"] == "snapshot":
            sides = {"bids": {}, "asks": {}}
        for side, levels in sides.items():
            for level in last[side]:
                if Decimal(level[1]) == 0:
                    levels.pop(level[0], None)
                else:
                    levels[level[0]] = level
    data = {
        "asks": sorted(sides["asks"].values(), key=lambda lv: Decimal(lv[0])),
        "bids": sorted(sides["bids"].values(), key=lambda lv: Decimal(lv[0]), reverse=True),
        "ts": last["ts"],
        "checksum": last["checksum"],
    }
    return json.dumps(
        {"arg": {"channel": "books", "instId": native}, "action": "snapshot", "data": [data]}
    )


def test_resync_resubscribes_that_book_only() -> None:
    frames = cryptofeed().received
    btc = [
        i
        for i, f in enumerate(frames)
        if '"books","instId":"BTC-USDT"},"action":"update"' in f.text
    ]
    codec = new_codec(subs(CF_SYMBOLS))
    assert not codec.synced
    events = feed(codec, frames[: btc[9]])
    assert codec.synced and [s.kind for s in statuses(events)] == ["book_synced"] * 3

    [status] = codec.resync("BTC-USDT", "consumer dropped l2d:7", 5)
    assert (status.kind, status.symbol, status.native_symbol) == (
        "book_resync",
        "BTC-USDT",
        "BTC-USDT",
    )
    assert "consumer dropped l2d:7" in status.detail and status.ts_recv == 5
    assert codec.counters.book_resyncs == 1
    arg = [{"channel": "books", "instId": "BTC-USDT"}]
    assert codec.actions() == [
        SendFrame(json.dumps({"op": "unsubscribe", "args": arg}, separators=(",", ":"))),
        SendFrame(json.dumps({"op": "subscribe", "args": arg}, separators=(",", ":"))),
    ]
    assert not codec.synced

    # Until the new snapshot: BTC-USDT's in-flight updates are dropped; its trades and
    # tickers and the other books go on.
    cut = btc[49]
    held = feed(codec, frames[btc[9] : cut])
    assert book_events(held, "BTC-USDT") == []
    assert codec.counters.stale_deltas_dropped == 40
    others = [e for e in held if isinstance(e, BookDelta)]
    assert others and all(e.native_symbol != "BTC-USDT" for e in others)
    for channel, kind in (("trades", Trade), ("tickers", Ticker)):
        published = [e for e in held if isinstance(e, kind) and e.native_symbol == "BTC-USDT"]
        sent = [
            d
            for m in pushes(frames[btc[9] : cut], channel)
            for d in m["data"]
            if d["instId"] == "BTC-USDT"
        ]
        assert len(published) == len(sent) > 0
    assert statuses(held) == []
    # Asked again while the snapshot is awaited: reported, no second resubscribe.
    [again] = codec.resync("BTC-USDT", "again", 6)
    assert again.kind == "book_resync" and "awaited" in again.detail
    assert codec.actions() == [] and not codec.synced
    ack = '{"event":"unsubscribe","arg":{"channel":"books","instId":"BTC-USDT"}}'
    assert codec.receive(ack, 7) == []

    # The fresh snapshot, as the venue has the book now: published and checked (its
    # checksum is the real one), then the book's updates flow again.
    snap = venue_snapshot(frames[:cut], "BTC-USDT")
    snapshot, synced = codec.receive(snap, frames[cut].ts - 1)
    assert isinstance(snapshot, BookSnapshot) and snapshot.symbol == "BTC-USDT"
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    assert codec.synced
    rest = feed(codec, frames[cut:])
    deltas = [e for e in book_events(rest, "BTC-USDT") if isinstance(e, BookDelta)]
    assert len(deltas) == len(btc) - 49
    consumer = rebuild([snapshot, *deltas])
    last = [m for m in pushes(frames, "books") if m["arg"]["instId"] == "BTC-USDT"][-1]
    assert book_checksum(consumer) == last["data"][0]["checksum"]
    c = codec.counters
    assert (c.checksum_failures, c.book_gaps, c.book_resyncs, c.parse_errors) == (0, 0, 2, 0)
    assert codec.actions() == []


def test_resync_of_unknown_or_bookless_symbol_is_a_no_op() -> None:
    codec = new_codec(subs(CF_SYMBOLS))
    feed(codec, cryptofeed().received)
    assert codec.synced
    assert codec.resync("ETH-USDT", "x", 1) == []
    assert codec.resync("UNI-USD-SWAP", "x", 1) == []  # a native spelling is no canonical
    assert codec.actions() == [] and codec.counters.book_resyncs == 0
    assert codec.synced
    trades = new_codec(subs(CF_SYMBOLS, frozenset({DataType.TRADE, DataType.TICKER})))
    assert trades.synced  # no book on the connection
    assert trades.resync("UNI-USD-PERP", "x", 1) == []
    assert trades.actions() == []
    assert any(isinstance(e, Trade) for e in feed(trades, cryptofeed().received))
    assert trades.synced and trades.counters.book_resyncs == 0


def test_resync_before_the_first_snapshot() -> None:
    codec = new_codec(subs(["BTC-USDT"]))
    # The subscription's snapshot is already on its way: no second request.
    [status] = codec.resync("BTC-USDT", "x", 1)
    assert status.kind == "book_resync"
    assert codec.actions() == []
    out = codec.receive(
        book_frame("BTC-USDT", "snapshot", [("100", "1")], [("101", "1")], seq=10, prev=-1), 2
    )
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]
    assert codec.synced
    codec.connected(3)
    assert not codec.synced


# ---------------------------------------------------------------------------------------------
# Control frames and garbage


def test_control_frames() -> None:
    codec = new_codec(subs(["BTC-USDT"]))
    assert codec.keepalive() == "ping"
    assert codec.ping_interval is not None and codec.ping_interval < 30
    assert codec.receive("pong", 1) == []
    ack = '{"event":"subscribe","arg":{"channel":"tickers","instId":"BTC-USDT"},"connId":"a"}'
    assert codec.receive(ack, 2) == []
    assert (
        codec.receive('{"event":"channel-conn-count","channel":"tickers","connCount":"1"}', 3) == []
    )
    error = '{"id":"1512","event":"error","code":"60012","msg":"Invalid request","connId":"a"}'
    [status] = codec.receive(error, 4)
    assert status.kind == "venue_error" and "60012" in status.detail
    # Channels and instruments we did not subscribe are ignored.
    candle = '{"arg":{"channel":"candle1m","instId":"BTC-USDT"},"data":[["1","2"]]}'
    assert codec.receive(candle, 5) == []
    other = next(f for f in cryptofeed().received if '"instId":"UNI-USD-SWAP"},"data"' in f.text)
    assert codec.receive(other.text, 6) == []
    assert codec.counters.parse_errors == 0


def test_upgrade_notice_reconnects() -> None:
    codec = new_codec(subs(["BTC-USDT"]))
    notice = (
        '{"event":"notice","code":"64008","msg":"The connection will soon be closed for a '
        'service upgrade. Please reconnect.","connId":"a4d3ae55"}'
    )
    [status] = codec.receive(notice, 9)
    assert status.kind == "server_shutdown" and status.symbol == ""
    assert codec.actions() == [Reconnect("service upgrade notice 64008", planned=True)]
    to_message(status)


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\xff",
        "{",
        "[]",
        "{}",
        "null",
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":{"x":1}}',
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1","px":"x","sz":"1","side":"buy","ts":"1"}]}',
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1","px":"1","sz":"1","side":"up","ts":"1"}]}',
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1","px":"1","sz":"1","side":"buy","ts":"-1"}]}',
        '{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","ts":"1","bidPx":"NaN"}]}',
        book_frame("BTC-USDT", "snapshot", [("NaN", "1")]),
        book_frame("BTC-USDT", "snapshot", [("1", "-1")]),
        book_frame("BTC-USDT", "snapshot", ts="soon"),
        book_frame("BTC-USDT", "partial"),
        '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{"asks":[["1"]],"bids":[],"ts":"1"}]}',
    ],
)  # fmt: skip
def test_garbage_is_a_parse_error(frame: str | bytes) -> None:
    codec = new_codec(subs(["BTC-USDT"]))
    [status] = codec.receive(frame, 99)
    assert isinstance(status, VenueStatus) and status.kind == "parse_error"
    assert status.detail and len(status.detail) <= 200
    assert codec.counters.parse_errors == 1
    assert codec.actions() == []
    to_message(status)


def test_wire_messages_are_unique() -> None:
    codec = new_codec(subs(CF_SYMBOLS))
    events = feed(codec, cryptofeed().received)
    codec2 = new_codec(subs(["BTC-USDT", "BTC-USDT-SWAP"]))
    events += feed(codec2, ccxt().received)
    messages = [to_message(e) for e in events]
    data = [m for m, e in zip(messages, events, strict=True) if not isinstance(e, VenueStatus)]
    assert len({m.msg_id for m in data}) == len(data)
    assert all(m.subject.startswith("market.okx.") for m in messages)
    assert {m.subject for m in data} >= {
        "market.okx.uni-usd-perp.l2_orderbook",
        "market.okx.btc-usd-220527.trade",
        "market.okx.btc-usdt.ticker",
    }


# ---------------------------------------------------------------------------------------------
# Subscriptions, sharding, symbols


def test_subscribe_frames_and_sharding() -> None:
    natives = [f"C{i}-USDT" for i in range(70)]
    codecs = ADAPTER.make_codecs("okx", subs(natives), ENDPOINTS)
    assert len(codecs) == 3  # 29 + 29 + 12 books channels
    seen: list[str] = []
    for codec in codecs:
        assert isinstance(codec, OkxCodec)
        assert codec.url == "wss://ws.okx.com:8443/ws/v5/public"
        assert codec.connected(0) == []
        frames = codec.actions()
        args = [a for f in frames if isinstance(f, SendFrame) for a in json.loads(f.text)["args"]]
        assert all(
            json.loads(f.text)["op"] == "subscribe" for f in frames if isinstance(f, SendFrame)
        )
        assert sum(a["channel"] == "books" for a in args) <= MAX_BOOKS_PER_CONNECTION
        assert all(len(f.text) < 64_000 for f in frames if isinstance(f, SendFrame))
        seen += [a["instId"] for a in args if a["channel"] == "books"]
        insts = {a["instId"] for a in args}
        assert all(sum(a["instId"] == i for a in args) == 3 for i in insts)
    assert sorted(seen) == sorted(natives)
    # 87 args on the first connection fit in one request.
    codecs[0].connected(1)
    assert len(codecs[0].actions()) == 1
    assert ADAPTER.make_codecs("okx", [], ENDPOINTS) == []


def test_make_codecs_validates() -> None:
    with pytest.raises(ValueError, match="open_interest"):
        ADAPTER.make_codecs(
            "okx",
            [Subscription("BTC-USDT-SWAP", "BTC-USDT-PERP", frozenset({DataType.OPEN_INTEREST}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="not an OKX instId"):
        ADAPTER.make_codecs("okx", [Subscription("BTCUSDT", "BTC-USDT", BASIC)], ENDPOINTS)
    merged = [
        Subscription("btc-usdt", "BTC-USDT", frozenset({DataType.TRADE})),
        Subscription("BTC-USDT", "BTC-USDT", frozenset({DataType.TICKER})),
    ]
    [codec] = ADAPTER.make_codecs("okx", merged, ENDPOINTS)
    assert isinstance(codec, OkxCodec)
    assert codec.args == [
        {"channel": "trades", "instId": "BTC-USDT"},
        {"channel": "tickers", "instId": "BTC-USDT"},
    ]
    endpoints = Endpoints(ws_url="ws://127.0.0.1:9/ws/v5/public", rest_url="http://127.0.0.1:9")
    [codec] = ADAPTER.make_codecs("okx-replay", merged, endpoints)
    assert codec.url == "ws://127.0.0.1:9/ws/v5/public" and codec.venue == "okx-replay"


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("BTC-USDT", "BTC-USDT"),
        ("btc-usdt", "BTC-USDT"),
        ("BTC-USDT-SWAP", "BTC-USDT-PERP"),
        ("BTC-USD-SWAP", "BTC-USD-PERP"),
        ("BTC-USD-250328", "BTC-USD-250328"),
        ("BTC-USD-250328-60000-C", None),
        ("BTCUSDT", None),
        ("BTC-USD-2503", None),
        ("", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


def test_adapter_is_registered() -> None:
    assert adapters.load("okx") is ADAPTER
    assert ADAPTER.name == "okx"
    assert DataType.LIQUIDATION in ADAPTER.data_types


def test_one_pass_book_reading_matches_the_general_one() -> None:
    """Compact ``books`` pushes (as OKX sends them) are read in one pass with strict levels
    (:class:`adapters.okx._BooksPush`); the same JSON with spaces takes the general path.
    Both must give the same events, statuses and errors, whatever the frame holds."""
    snapshot = [("100", "1"), ("99.5", "2")], [("101", "3"), ("102", "4")]
    frames = [
        book_frame("BTC-USDT", "snapshot", *snapshot, seq=1, prev=-1),
        # Levels of other lengths: the strict reading refuses, the general one accepts.
        book_frame("BTC-USDT", "update", [("99.5", "5")], seq=2, prev=1).replace(
            '"0", "1"]', '"0"]'
        ),
        book_frame("BTC-USDT", "update", [("99", "1")], seq=3, prev=2).replace(
            '"0", "1"]', '"0", "1", "x"]'
        ),
        book_frame("BTC-USDT", "update", asks=[("101", "0")], seq=4, prev=3),
        # Bad frames: the same parse_error detail either way.
        book_frame("BTC-USDT", "update", [("NaN", "1")], seq=5, prev=4),
        book_frame("BTC-USDT", "update", [("98", "1")], seq=5, prev=4).replace(
            '["98", "1", "0", "1"]', '["98"]'
        ),
        book_frame("BTC-USDT", "update", seq=5, prev=4, ts="soon"),
        book_frame("BTC-USDT", "partial", seq=5, prev=4),
        book_frame("BTC-USDT", "update", seq=5, prev=4).replace('"checksum": 0', '"checksum": "0"'),
        # Not ours: ignored even when its data is bad.
        book_frame("ETH-USDT", "update", [("NaN", "1")], seq=5, prev=4),
        # A gap, then a checksum that does not match: statuses and resubscribe requests.
        book_frame("BTC-USDT", "update", [("98", "1")], seq=9, prev=8),
        book_frame("BTC-USDT", "snapshot", *snapshot, seq=10, prev=-1, checksum=12345),
        book_frame("BTC-USDT", "snapshot", *snapshot, seq=11, prev=-1),
        book_frame("BTC-USDT", "update", [("98", "1")], seq=12, prev=11),
    ]
    compact = [json.dumps(json.loads(f), separators=(",", ":")) for f in frames]
    assert all(f.startswith('{"arg":{"channel":"books",') for f in compact)
    assert not any(f.startswith('{"arg":{"channel":"books",') for f in frames)
    general, one_pass = new_codec(subs(["BTC-USDT"])), new_codec(subs(["BTC-USDT"]))
    for i, (spaced, tight) in enumerate(zip(frames, compact, strict=True)):
        events = general.receive(spaced, i)
        assert one_pass.receive(tight, i) == events, tight
        assert one_pass.actions() == general.actions()
    assert one_pass.counters == general.counters
    c = one_pass.counters
    assert (c.parse_errors, c.book_gaps, c.checksum_failures) == (5, 1, 1)
