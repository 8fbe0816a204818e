"""Tests of the Kraken spot v2 codec (adapters/kraken.py), driven by real captures.

``tests/data/kraken/*.jsonl`` are ccxt's real 2026 recordings of Kraken WS v2 (see the
README there): book depth 10 for BTC/USD (one session with a repeated snapshot) and
DOGE/USDT (a thin snapshot without checksum, then a full one), ticker, ohlc, status,
heartbeat. ccxt's capture has no ``instrument`` frame; each book recording has one
synthetic instrument snapshot inserted, giving the precisions the capture itself shows
(BTC/USD 1/8, DOGE/USDT 5/8). The trade frame is nautilus_trader's doc-shaped fixture.
The tests count what the recordings hold from the raw JSON and check the codec against it.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import adapters
from adapters.kraken import (
    ADAPTER,
    MAX_SYMBOLS_PER_CONNECTION,
    MAX_SYMBOLS_PER_SUBSCRIBE,
    KrakenCodec,
    book_checksum,
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

DATA = Path(__file__).parent / "data" / "kraken"
BOOK_FILES = ("book_depth10.jsonl", "book_repeated_snapshot.jsonl", "book_thin_then_deep.jsonl")
ALL_FILES = (*BOOK_FILES, "ticker.jsonl", "ohlc.jsonl", "trade_nautilus.jsonl")
ALL_TYPES = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
ENDPOINTS = ADAPTER.default_endpoints
PRECISION = {"BTC/USD": (1, 8), "DOGE/USDT": (5, 8)}


@cache
def frames(name: str) -> tuple[Frame, ...]:
    return tuple(load(DATA / name).received)


def messages(name: str) -> list[dict[str, Any]]:
    # parse_float=Decimal: the test's own reading keeps every digit, as the codec must.
    return [json.loads(f.text, parse_float=Decimal) for f in frames(name)]


def subscriptions(
    natives: Iterable[str] = ("BTC/USD", "DOGE/USDT"),
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
    natives: Iterable[str] = ("BTC/USD", "DOGE/USDT"),
    types: frozenset[DataType] = ALL_TYPES,
    contract_size: Decimal | None = None,
) -> KrakenCodec:
    """The single codec ``make_codecs`` builds, connected (its subscribe frames drained)."""
    [codec] = ADAPTER.make_codecs("kraken", subscriptions(natives, types, contract_size), ENDPOINTS)
    assert isinstance(codec, KrakenCodec)
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


def book_events(events: Iterable[MarketEvent]) -> list[BookSnapshot | BookDelta]:
    return [e for e in events if isinstance(e, (BookSnapshot, BookDelta))]


def sent(codec: Codec) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in codec.actions() if isinstance(a, SendFrame)]


def instrument_frame(pairs: dict[str, tuple[int, int]]) -> str:
    data = {
        "assets": [],
        "pairs": [
            {"symbol": s, "price_precision": p, "qty_precision": q} for s, (p, q) in pairs.items()
        ],
    }
    return json.dumps({"channel": "instrument", "type": "snapshot", "data": data})


def rebuild(events: Sequence[BookSnapshot | BookDelta]) -> OrderBook:
    """A consumer's copy from published events; asserts it never crosses."""
    book = OrderBook()
    for event in events:
        if isinstance(event, BookSnapshot):
            book.apply_snapshot(parse_levels(event.bids), parse_levels(event.asks))
        else:
            book.apply_delta(parse_levels(event.bids), parse_levels(event.asks))
        assert not book.is_crossed()
    return book


def reference_checksum(
    bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]], pp: int, qp: int
) -> int:
    """kraken.md §5 written out independently of the codec."""

    def part(value: Decimal, places: int) -> str:
        return str(value.quantize(Decimal(1).scaleb(-places))).replace(".", "").lstrip("0")

    top_asks = sorted(asks)[:10]
    top_bids = sorted(bids, reverse=True)[:10]
    text = "".join(part(p, pp) + part(q, qp) for p, q in top_asks + top_bids)
    return zlib.crc32(text.encode())


# ---------------------------------------------------------------------------------------------
# Books on the real capture


def test_checksums_verify_on_the_capture() -> None:
    """The test's own book and checksum (no codec) reproduce all 14 recorded checksums."""
    verified = 0
    for name in BOOK_FILES:
        book: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
        for msg in messages(name):
            if msg.get("channel") != "book":
                continue
            for item in msg["data"]:
                if msg["type"] == "snapshot":
                    book = {"bids": {}, "asks": {}}
                for side in ("bids", "asks"):
                    for level in item[side]:
                        price, qty = Decimal(level["price"]), Decimal(level["qty"])
                        if qty == 0:
                            book[side].pop(price, None)
                        else:
                            book[side][price] = qty
                # truncate to the subscribed depth 10
                book["bids"] = dict(sorted(book["bids"].items(), reverse=True)[:10])
                book["asks"] = dict(sorted(book["asks"].items())[:10])
                if "checksum" in item:
                    pp, qp = PRECISION[item["symbol"]]
                    bids, asks = list(book["bids"].items()), list(book["asks"].items())
                    assert reference_checksum(bids, asks, pp, qp) == item["checksum"]
                    verified += 1
    assert verified == 14


@pytest.mark.parametrize("name", BOOK_FILES)
def test_capture_books(name: str) -> None:
    codec = new_codec()
    events = feed(codec, frames(name))
    raw = [m for m in messages(name) if m.get("channel") == "book"]
    snapshots = sum(1 for m in raw if m["type"] == "snapshot")
    updates = sum(1 for m in raw if m["type"] == "update")
    got = Counter(type(e).__name__ for e in events)
    assert got["BookSnapshot"] == snapshots
    assert got["BookDelta"] == updates
    assert [s.kind for s in statuses(events)] == ["book_synced"] * snapshots
    with_checksum = sum(1 for m in raw if "checksum" in m["data"][0])
    verified = [s for s in statuses(events) if "verified" in s.detail]
    assert len(verified) == sum(
        1 for m in raw if m["type"] == "snapshot" and "checksum" in m["data"][0]
    )
    assert with_checksum - len(verified) == updates  # every update carried one and passed
    c = codec.counters
    assert c.frames == len(frames(name))
    assert (c.parse_errors, c.checksum_failures, c.book_resyncs, c.stale_deltas_dropped) == (
        0,
        0,
        0,
        0,
    )

    # The chain a consumer verifies, and ids from the venue timestamps.
    published = book_events(events)
    assert isinstance(published[0], BookSnapshot)
    prev = None
    for event in published:
        if isinstance(event, BookDelta):
            assert event.prev_sequence == prev
            assert event.first_sequence == event.sequence
        assert prev is None or event.sequence > prev
        assert event.sequence >= (event.ts_venue or 0)
        prev = event.sequence

    # A consumer's copy equals the codec's own book at the end, and the checksum of the
    # last message verifies against the consumer's copy too.
    consumer = rebuild(published)
    for native, (pp, qp) in PRECISION.items():
        state = codec._symbols[native]
        if state.synced:
            assert consumer.sorted_bids() == state.book.sorted_bids()
            assert consumer.sorted_asks() == state.book.sorted_asks()
            last = next(m for m in reversed(raw) if "checksum" in m["data"][0])
            assert book_checksum(consumer, pp, qp) == last["data"][0]["checksum"]


def test_repeated_snapshot_resets_the_book_and_chain_continues() -> None:
    codec = new_codec()
    events = book_events(feed(codec, frames("book_repeated_snapshot.jsonl")))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["BookSnapshot"] + ["BookDelta"] * 4 + ["BookSnapshot"] + ["BookDelta"] * 3
    first, second = events[0], events[5]
    assert isinstance(first, BookSnapshot) and isinstance(second, BookSnapshot)
    assert first.bids == second.bids and first.asks == second.asks
    assert second.sequence > events[4].sequence
    # Two updates stamped in the same microsecond get consecutive, distinct ids.
    d1, d2 = events[1], events[2]
    assert d1.ts_venue == d2.ts_venue
    assert d2.sequence == d1.sequence + 1
    assert d1.sequence == rfc3339_ns("2026-10-06T08:04:56.153890Z")


def test_exact_decimals_on_the_wire() -> None:
    codec = new_codec()
    events = feed(codec, frames("book_repeated_snapshot.jsonl"))
    snapshot = events[0]
    assert isinstance(snapshot, BookSnapshot)
    body = encode(snapshot)
    # 5e-05 in the (re-serialised) capture is the number 0.00005.
    assert b'["85597.8","0.00005"]' in body
    assert b'["85600.5","0.90679198"]' in body
    assert b'["85592","0.000051"]' in body
    delta = next(e for e in events if isinstance(e, BookDelta))
    assert delta.asks == [("85601.6", "0"), ("85608", "0.04358176")]
    assert delta.bids == []
    assert subject(delta) == "market.kraken.btc-usd.l2_orderbook"


def test_truncation_is_published_as_deletes() -> None:
    codec = new_codec()
    feed(codec, frames("book_thin_then_deep.jsonl")[:5])  # up to the deep snapshot
    # An ask inserted inside the top 10 pushes the 10th (0.09578) out, and Kraken sends no
    # delete for it: the codec truncates and publishes the delete itself. (The capture's
    # own updates only change existing levels, so this one is synthetic, without checksum.)
    update = {
        "channel": "book",
        "type": "update",
        "data": [
            {
                "symbol": "DOGE/USDT",
                "bids": [],
                "asks": [{"price": 0.09572, "qty": 100}],
                "timestamp": "2026-10-06T11:17:10.000000Z",
            }
        ],
    }
    [delta] = codec.receive(json.dumps(update), 1)
    assert isinstance(delta, BookDelta)
    assert delta.asks == [("0.09572", "100"), ("0.09578", "0")]
    book = codec._symbols["DOGE/USDT"].book
    assert len(book.asks) == 10 and Decimal("0.09578") not in book.asks
    # The venue's book never had 0.09572, so the capture's next update no longer matches:
    # the checksum catches the divergence and the pair resyncs.
    out = feed(codec, frames("book_thin_then_deep.jsonl")[5:6])
    assert [s.kind for s in statuses(out)] == ["checksum_mismatch", "book_resync"]


# ---------------------------------------------------------------------------------------------
# Checksum mismatch → resync of that pair only


def corrupt(text: str) -> str:
    msg = json.loads(text, parse_float=Decimal)
    msg["data"][0]["checksum"] = (msg["data"][0]["checksum"] + 1) % 2**32
    return json.dumps(msg, default=str)


def test_checksum_mismatch_resubscribes_that_pair() -> None:
    codec = new_codec()
    items = list(frames("book_repeated_snapshot.jsonl"))
    # Frames: status, instrument, ack, snapshot, 4 updates, snapshot, 3 updates.
    feed(codec, items[:4])
    codec.actions()  # the book subscription the instrument frame released
    bad = Frame(items[4].ts, corrupt(items[4].text))
    out = codec.receive(bad.text, bad.ts)
    assert [(s.kind, s.symbol) for s in statuses(out)] == [
        ("checksum_mismatch", "BTC-USD"),
        ("book_resync", "BTC-USD"),
    ]
    assert not book_events(out)
    c = codec.counters
    assert (c.checksum_failures, c.book_resyncs, c.book_gaps) == (1, 1, 0)
    assert sent(codec) == [
        {
            "method": "unsubscribe",
            "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 10},
            "req_id": 5,
        },
        {
            "method": "subscribe",
            "params": {"channel": "book", "depth": 10, "snapshot": True, "symbol": ["BTC/USD"]},
            "req_id": 6,
        },
    ]
    # Updates before the new snapshot are dropped, never published.
    assert not book_events(feed(codec, items[5:8]))
    assert codec.counters.stale_deltas_dropped == 3
    # The repeated snapshot in the capture plays the resubscribe's answer.
    after = feed(codec, items[8:])
    published = book_events(after)
    assert isinstance(published[0], BookSnapshot)
    assert all(isinstance(e, BookDelta) for e in published[1:]) and len(published) == 4
    assert statuses(after, "book_synced")
    assert codec.counters.checksum_failures == 1


def test_crossed_book_resyncs() -> None:
    codec = new_codec()
    items = frames("book_depth10.jsonl")
    feed(codec, items[:4])
    codec.actions()
    frame = json.dumps(
        {
            "channel": "book",
            "type": "update",
            "data": [
                {
                    "symbol": "BTC/USD",
                    "bids": [{"price": 63400.0, "qty": 1}],
                    "asks": [],
                    "timestamp": "2026-08-12T19:28:09.000000Z",
                }
            ],
        }
    )
    out = codec.receive(frame, 1)
    [resync] = out
    assert resync.kind == "book_resync" and "crossed" in resync.detail
    assert [m["method"] for m in sent(codec)] == ["unsubscribe", "subscribe"]


def test_unknown_precision_publishes_unverified() -> None:
    """A replay without instrument frame: the book flows, its status says unchecked."""
    codec = new_codec()
    items = [f for f in frames("book_depth10.jsonl") if '"instrument"' not in f.text]
    events = feed(codec, items)
    assert len(book_events(events)) == 2
    [synced] = statuses(events)
    assert "NOT verified" in synced.detail


# ---------------------------------------------------------------------------------------------
# Resync asked for by downstream (Codec.resync) and Codec.synced


def test_resync_resubscribes_that_pair_until_its_snapshot() -> None:
    codec = new_codec()
    btc = frames("book_repeated_snapshot.jsonl")  # BTC/USD: snapshot at 3 and at 8
    doge = frames("book_thin_then_deep.jsonl")  # DOGE/USDT: snapshots at 3, 4
    assert not codec.synced  # the books wait for the instrument snapshot
    feed(codec, btc[:4])
    codec.actions()  # the book subscription the instrument frame released (req_id 4)
    assert not codec.synced  # DOGE/USDT has no snapshot yet
    feed(codec, doge[3:5])
    assert codec.synced
    [delta] = feed(codec, btc[4:5])
    assert isinstance(delta, BookDelta) and delta.symbol == "BTC-USD"

    out = codec.resync("BTC-USD", "consumer missed a delta", 7)
    [status] = out
    assert (status.kind, status.symbol, status.native_symbol, status.ts_recv) == (
        "book_resync",
        "BTC-USD",
        "BTC/USD",
        7,
    )
    assert "consumer missed a delta" in status.detail
    assert codec.counters.book_resyncs == 1
    assert sent(codec) == [
        {
            "method": "unsubscribe",
            "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 10},
            "req_id": 5,
        },
        {
            "method": "subscribe",
            "params": {"channel": "book", "depth": 10, "snapshot": True, "symbol": ["BTC/USD"]},
            "req_id": 6,
        },
    ]
    assert not codec.synced
    assert not codec._symbols["BTC/USD"].book.bids  # the state is dropped
    # Asked again while the snapshot is awaited: the status, no second request.
    [again] = codec.resync("BTC-USD", "another lost delta", 8)
    assert again.kind == "book_resync" and "awaited already" in again.detail
    assert codec.actions() == []

    # BTC/USD updates before the new snapshot are dropped; DOGE/USDT flows on.
    assert book_events(feed(codec, btc[5:8])) == []
    assert codec.counters.stale_deltas_dropped == 3
    [doge_delta] = feed(codec, doge[5:6])
    assert isinstance(doge_delta, BookDelta) and doge_delta.symbol == "DOGE-USDT"
    assert not codec.synced

    # The capture's repeated snapshot plays the resubscribe's answer.
    after = feed(codec, btc[8:])
    published = book_events(after)
    assert [type(e) for e in published] == [BookSnapshot, BookDelta, BookDelta, BookDelta]
    snapshot, first = published[0], published[1]
    assert isinstance(first, BookDelta)
    assert snapshot.sequence > delta.sequence and first.prev_sequence == snapshot.sequence
    assert [(s.kind, s.symbol) for s in statuses(after)] == [("book_synced", "BTC-USD")]
    assert codec.synced
    c = codec.counters
    assert (c.book_resyncs, c.checksum_failures, c.parse_errors) == (2, 0, 0)


def test_resync_of_a_pair_without_book_is_a_no_op() -> None:
    subs = [
        *subscriptions(["BTC/USD", "XXX/USD"]),
        *subscriptions(["ETH/USD"], frozenset({DataType.TRADE})),
    ]
    [codec] = ADAPTER.make_codecs("kraken", subs, ENDPOINTS)
    codec.connected(0)
    codec.actions()
    # XXX/USD is not in the instrument snapshot: its book is never subscribed.
    codec.receive(instrument_frame({"BTC/USD": PRECISION["BTC/USD"]}), 1)
    assert [r["params"]["symbol"] for r in sent(codec)] == [["BTC/USD"]]
    assert not codec.synced
    feed(codec, frames("book_repeated_snapshot.jsonl")[3:5])
    assert codec.synced  # XXX/USD has no book here, so it is not waited for
    for symbol in ("XXX-USD", "ETH-USD", "SOL-USD", "BTC/USD"):
        assert codec.resync(symbol, "test", 2) == []
    assert codec.actions() == []
    assert codec.counters.book_resyncs == 0
    assert codec.synced
    # BTC/USD is untouched: its next update is published.
    [delta] = feed(codec, frames("book_repeated_snapshot.jsonl")[5:6])
    assert isinstance(delta, BookDelta)


def test_resync_before_the_book_subscription_sends_nothing() -> None:
    codec = new_codec()
    [status] = codec.resync("BTC-USD", "early", 1)
    assert status.kind == "book_resync" and "early" in status.detail
    assert codec.actions() == []  # the pending book subscription will bring the snapshot
    feed(codec, frames("book_repeated_snapshot.jsonl")[:2])
    [books] = sent(codec)
    assert books["params"] == {
        "channel": "book",
        "depth": 10,
        "snapshot": True,
        "symbol": ["BTC/USD", "DOGE/USDT"],
    }
    events = feed(codec, frames("book_repeated_snapshot.jsonl")[2:5])
    assert [type(e) for e in book_events(events)] == [BookSnapshot, BookDelta]


# ---------------------------------------------------------------------------------------------
# Trades, tickers, control frames


def test_trades() -> None:
    codec = new_codec()
    events = feed(codec, frames("trade_nautilus.jsonl"))
    assert [(t.trade_id, t.side, t.price, t.size) for t in events if isinstance(t, Trade)] == [
        ("10218208", "buy", "105944.20", "0.00027625"),
        ("10218209", "sell", "105910.50", "0.00012460"),
    ]
    first = events[0]
    assert isinstance(first, Trade)
    assert first.ts_venue == rfc3339_ns("2023-10-06T17:35:55.440295Z") == 1696613755440295000
    assert b'"price":"105944.20"' in encode(first)
    assert to_message(first).msg_id == "kraken:BTC-USD:trade:10218208"


def test_tickers() -> None:
    codec = new_codec()
    events = feed(codec, frames("ticker.jsonl"))
    raw = [m for m in messages("ticker.jsonl") if m.get("channel") == "ticker"]
    tickers = [e for e in events if isinstance(e, Ticker)]
    assert len(tickers) == len(raw) == 2
    assert len(events) == 2  # status, ack and heartbeat give nothing
    t = tickers[0]
    assert (t.bid_price, t.bid_size, t.ask_price, t.ask_size, t.last_price) == (
        "63297.7",
        "5.75119051",
        "63297.8",
        "0.36977971",
        "63297.8",
    )
    assert t.ts_venue == rfc3339_ns("2026-08-12T19:29:00.921195Z")
    assert to_message(t).msg_id == f"kraken:BTC-USD:ticker:{t.ts_venue}"


def test_contract_size_scales_sizes() -> None:
    codec = new_codec(contract_size=Decimal("0.5"))
    trades = feed(codec, frames("trade_nautilus.jsonl"))
    assert [e.size for e in trades if isinstance(e, Trade)] == ["0.000138125", "0.000062300"]
    events = feed(codec, frames("book_depth10.jsonl"))
    snapshot = next(e for e in events if isinstance(e, BookSnapshot))
    assert snapshot.bids[0] == ("63299.4", "0.001049935")
    # The checksum still verifies on the venue's own quantities.
    assert codec.counters.checksum_failures == 0
    ticker = feed(codec, frames("ticker.jsonl"))[0]
    assert isinstance(ticker, Ticker) and ticker.bid_size == "2.875595255"


def test_ohlc_and_control_frames_are_ignored() -> None:
    codec = new_codec()
    assert feed(codec, frames("ohlc.jsonl")) == []
    pong = '{"method":"pong","req_id":42,"time_in":"2023-09-25T09:05:00.123456Z"}'
    assert codec.receive(pong, 1) == []
    assert codec.receive('{"channel":"heartbeat"}', 2) == []
    assert codec.counters.parse_errors == 0
    assert codec.actions() == []


def test_failed_requests_and_system_status() -> None:
    codec = new_codec()
    fail = (
        '{"error":"Currency pair not supported XBT/USD","method":"subscribe","success":false,'
        '"symbol":"XBT/USD","time_in":"2018-11-12T21:14:59.545897Z"}'
    )
    [status] = codec.receive(fail, 1)
    assert status.kind == "unknown_symbol" and "XBT/USD" in status.detail
    [status] = codec.receive('{"error":"Malformed request","method":"error"}', 2)
    assert status.kind == "venue_error"
    maint = '{"channel":"status","type":"update","data":[{"system":"maintenance"}]}'
    [status] = codec.receive(maint, 3)
    assert status.kind == "venue_error" and "maintenance" in status.detail
    assert codec.actions() == []


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\xff",
        "{",
        "[]",
        "{}",
        "null",
        '{"channel":"book","type":"update"}',
        '{"channel":"book","type":"weird","data":[]}',
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"}]}',
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"up","price":1,'
        '"qty":1,"trade_id":1,"timestamp":"2023-10-06T17:35:55Z"}]}',
        '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":"NaN"}]}',
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":1,'
        '"qty":-1}],"asks":[],"timestamp":"2023-10-06T17:35:55Z"}]}',
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[],'
        '"timestamp":"yesterday"}]}',
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[],'
        '"checksum":-1,"timestamp":"2023-10-06T17:35:55Z"}]}',
        '{"channel":"instrument","type":"snapshot","data":{"pairs":[{"symbol":"X"}]}}',
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
    events = feed(codec, frames("book_repeated_snapshot.jsonl"))
    assert len(book_events(events)) == 9
    assert codec.counters.parse_errors == 1


# ---------------------------------------------------------------------------------------------
# Subscriptions, sharding, symbols, wire


def test_subscribe_frames() -> None:
    natives = [f"C{i}/USD" for i in range(150)]
    [codec] = ADAPTER.make_codecs("kraken", subscriptions(natives), ENDPOINTS)
    assert codec.connected(0) == []
    requests = sent(codec)
    assert requests[0] == {
        "method": "subscribe",
        "params": {"channel": "instrument", "snapshot": True},
        "req_id": 1,
    }
    channels = [(r["params"]["channel"], len(r["params"]["symbol"])) for r in requests[1:]]
    assert channels == [("trade", 100), ("trade", 50), ("ticker", 100), ("ticker", 50)]
    assert requests[3]["params"]["event_trigger"] == "bbo"
    assert all(r["params"]["snapshot"] is True for r in requests)
    assert [r["req_id"] for r in requests] == [1, 2, 3, 4, 5]
    # The book waits for the instruments; a pair missing from them is reported.
    pairs = {n: (2, 8) for n in natives[:-1]}
    out = codec.receive(instrument_frame(pairs), 1)
    assert [(s.kind, s.symbol) for s in statuses(out)] == [("unknown_symbol", "C149-USD")]
    books = sent(codec)
    assert [len(r["params"]["symbol"]) for r in books] == [100, 49]
    assert all(r["params"]["channel"] == "book" and r["params"]["depth"] == 10 for r in books)
    # An instrument update changes precisions but does not subscribe again.
    update = instrument_frame(pairs).replace('"snapshot"', '"update"')
    assert codec.receive(update, 2) == [] and codec.actions() == []
    # A reconnect starts over, req_id from 1, book again after the instruments.
    codec.connected(3)
    assert [r["req_id"] for r in sent(codec)] == [1, 2, 3, 4, 5]
    assert max(len(r["params"]["symbol"]) for r in books) <= MAX_SYMBOLS_PER_SUBSCRIBE


def test_no_instrument_subscription_without_books() -> None:
    [codec] = ADAPTER.make_codecs(
        "kraken", subscriptions(["BTC/USD"], frozenset({DataType.TRADE})), ENDPOINTS
    )
    codec.connected(0)
    assert [r["params"]["channel"] for r in sent(codec)] == ["trade"]


def test_sharding_and_profile() -> None:
    natives = [f"C{i}/USD" for i in range(450)]
    codecs = ADAPTER.make_codecs("kraken", subscriptions(natives), ENDPOINTS)
    assert [len(c._symbols) for c in codecs if isinstance(c, KrakenCodec)] == [200, 200, 50]
    assert MAX_SYMBOLS_PER_CONNECTION == 200
    for codec in codecs:
        assert codec.url == "wss://ws.kraken.com/v2"
        assert codec.ping_interval == 30.0
        assert codec.keepalive() == '{"method":"ping"}'
        assert codec.max_lifetime is None
        assert codec.max_send_rate == 5.0
    assert ADAPTER.make_codecs("kraken", [], ENDPOINTS) == []


def test_make_codecs_merges_and_validates() -> None:
    subs = [
        Subscription("BTC/USD", "BTC-USD", frozenset({DataType.TRADE})),
        Subscription("BTC/USD", "BTC-USD", frozenset({DataType.TICKER})),
    ]
    [codec] = ADAPTER.make_codecs("kr", subs, ENDPOINTS)
    codec.connected(0)
    assert [r["params"]["channel"] for r in sent(codec)] == ["trade", "ticker"]
    with pytest.raises(ValueError, match="funding_rate"):
        ADAPTER.make_codecs(
            "kr",
            [Subscription("BTC/USD", "BTC-USD", frozenset({DataType.FUNDING_RATE}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="differently"):
        ADAPTER.make_codecs(
            "kr", [subs[0], Subscription("BTC/USD", "XBT-USD", subs[0].data_types)], ENDPOINTS
        )
    with pytest.raises(ValueError, match="depth"):
        KrakenCodec("kr", subs[:1], ENDPOINTS, depth=20)


def test_wire_messages_are_unique() -> None:
    events: list[MarketEvent] = []
    for name in ALL_FILES:
        codec = new_codec()
        events += feed(codec, frames(name))
    messages_out = [to_message(e) for e in events]
    ids = [m.msg_id for m in messages_out]
    assert len(set(ids)) == len(ids)
    subjects = {m.subject for m in messages_out}
    assert {
        "market.kraken.btc-usd.l2_orderbook",
        "market.kraken.doge-usdt.l2_orderbook",
        "market.kraken.btc-usd.ticker",
        "market.kraken.btc-usd.trade",
        "market.kraken._status",
    } <= subjects
    # The same frame seen twice gives the same ids (a second codec from scratch).
    again = [to_message(e).msg_id for e in feed(new_codec(), frames("book_depth10.jsonl"))]
    first = [to_message(e).msg_id for e in feed(new_codec(), frames("book_depth10.jsonl"))]
    assert again == first


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("BTC/USD", "BTC-USD"),
        ("DOGE/USDT", "DOGE-USDT"),
        ("ETH/EUR", "ETH-EUR"),
        ("AAPLx/USD", "AAPLx-USD"),
        ("BTCUSD", None),
        ("BTC/", None),
        ("/USD", None),
        ("BTC/USD/X", None),
        ("BTC-USD", None),
        ("", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-10-06T08:04:56.000569Z", 1791273896000569000),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00.5+01:00", 500_000_000),
        ("2023-02-09T20:32:50.714964855Z", 1675974770714964855),
    ],
)
def test_rfc3339(text: str, ns: int) -> None:
    assert rfc3339_ns(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "2026-13-01T00:00:00Z",
        "2026-10-06T08:04:56",
        "x",
        "2026-10-06T08:04:56.1234567890Z",
        "9999-12-31T23:59:59Z",  # beyond int64 nanoseconds
        "1969-12-31T23:59:59Z",
    ],
)
def test_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        rfc3339_ns(text)


def test_adapter_is_registered() -> None:
    assert adapters.load("kraken") is ADAPTER
    assert ADAPTER.name == "kraken"
    assert ADAPTER.data_types == ALL_TYPES
    assert ADAPTER.default_endpoints == Endpoints(
        ws_url="wss://ws.kraken.com/v2", rest_url="https://api.kraken.com"
    )


def test_benchmark_smoke() -> None:
    """Not a benchmark: a guard that decoding the capture stays well under 1 ms a frame."""
    items = [f for name in BOOK_FILES for f in frames(name)]
    codec = new_codec()
    start = time.perf_counter()
    for _ in range(20):
        feed(codec, items)
    per_frame = (time.perf_counter() - start) / (20 * len(items))
    assert per_frame < 1e-3
