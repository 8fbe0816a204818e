"""Tests of the Deribit codec (adapters/deribit.py), driven by real captures.

* ``data/deribit/ccxt_btc_perpetual.jsonl``: BTC-PERPETUAL ``book``/``trades``/``ticker``
  at ``100ms``, recorded 2026 by ccxt (three subscriptions, one after the other).
* ``data/deribit/cryptofeed_options_raw.jsonl``: ten option books and tickers at ``raw``,
  recorded 2021 by cryptofeed: 10 snapshots and 36 changes whose
  ``prev_change_id``/``change_id`` chain the tests follow.

The tests count what the captures hold independently (from the raw JSON, numbers parsed as
``Decimal``) and check the codec's output against that.
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
from adapters.deribit import (
    ADAPTER,
    HEARTBEAT_INTERVAL,
    MAX_CHANNELS_PER_CONNECTION,
    MAX_CHANNELS_PER_SUBSCRIBE,
    DeribitCodec,
)
from relay.book import OrderBook, parse_levels
from relay.captures import Recording, load
from relay.codec import Codec, Endpoints, SendFrame, Subscription
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

DATA = Path(__file__).parent / "data" / "deribit"
PERP_CAPTURE = DATA / "ccxt_btc_perpetual.jsonl"
OPTIONS_CAPTURE = DATA / "cryptofeed_options_raw.jsonl"
ALL_TYPES = ADAPTER.data_types
OPTION_TYPES = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
ENDPOINTS = ADAPTER.default_endpoints


# ---------------------------------------------------------------------------------------------
# Capture helpers


@cache
def perp() -> Recording:
    return load(PERP_CAPTURE)


@cache
def options() -> Recording:
    return load(OPTIONS_CAPTURE)


def parse(text: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    return message


def notifications(rec: Recording, kind: str) -> list[dict[str, Any]]:
    """``params`` of every notification of channel kind ``kind`` (book/ticker/trades)."""
    out = []
    for frame in rec.received:
        message = parse(frame.text)
        if (
            message.get("method") == "subscription"
            and message["params"]["channel"].split(".")[0] == kind
        ):
            out.append(message["params"])
    return out


@cache
def option_natives() -> tuple[str, ...]:
    """The option instruments of the cryptofeed capture, in order of first appearance."""
    seen: dict[str, None] = {}
    for params in notifications(options(), "book") + notifications(options(), "ticker"):
        seen[params["data"]["instrument_name"]] = None
    return tuple(seen)


def new_codec(subs: Sequence[Subscription], venue: str = "deribit") -> DeribitCodec:
    """The single codec ``make_codecs`` builds for ``subs``, connected, actions drained."""
    [codec] = ADAPTER.make_codecs(venue, subs, ENDPOINTS)
    assert isinstance(codec, DeribitCodec)
    codec.connected(0)
    codec.actions()
    return codec


def perp_codec(types: frozenset[DataType] = ALL_TYPES) -> DeribitCodec:
    return new_codec([Subscription("BTC-PERPETUAL", "BTC-USD-PERP", types)])


def options_codec() -> DeribitCodec:
    # Options have no canonical spelling: config names them explicitly (here: the native).
    return new_codec([Subscription(n, n, OPTION_TYPES) for n in option_natives()])


def feed(codec: Codec, rec: Recording) -> list[MarketEvent]:
    out: list[MarketEvent] = []
    for frame in rec.received:
        out += codec.receive(frame.text, frame.ts)
    return out


def statuses(events: Iterable[MarketEvent], kind: str | None = None) -> list[VenueStatus]:
    return [e for e in events if isinstance(e, VenueStatus) and (kind is None or e.kind == kind)]


def book_events(events: Iterable[MarketEvent], native: str) -> list[BookSnapshot | BookDelta]:
    return [
        e for e in events if isinstance(e, (BookSnapshot, BookDelta)) and e.native_symbol == native
    ]


def requests(codec: Codec) -> list[dict[str, Any]]:
    out = []
    for action in codec.actions():
        assert isinstance(action, SendFrame)
        out.append(json.loads(action.text))
    return out


def fmt(d: Decimal) -> str:
    return format(d, "f")


def reference_book(native: str, through_change_id: int) -> OrderBook:
    """The test's own book from the raw capture, up to and including ``through_change_id``."""
    book = OrderBook()
    for params in notifications(options(), "book"):
        data = params["data"]
        if data["instrument_name"] != native or data["change_id"] > through_change_id:
            continue
        bids = [(p, Decimal(0) if a == "delete" else q) for a, p, q in data["bids"]]
        asks = [(p, Decimal(0) if a == "delete" else q) for a, p, q in data["asks"]]
        if data["type"] == "snapshot":
            book.apply_snapshot(bids, asks)
        else:
            book.apply_delta(bids, asks)
    return book


def rebuild(events: Sequence[BookSnapshot | BookDelta]) -> OrderBook:
    """A consumer's copy of the book from published events; asserts the chain and no cross."""
    book = OrderBook()
    prev: int | None = None
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
    kind: str,
    change_id: int,
    prev: int | None = None,
    bids: Sequence[list[Any]] = (),
    asks: Sequence[list[Any]] = (),
    ts_ms: int = 1,
) -> str:
    data: dict[str, Any] = {
        "type": kind,
        "timestamp": ts_ms,
        "instrument_name": native,
        "change_id": change_id,
        "bids": list(bids),
        "asks": list(asks),
    }
    if prev is not None:
        data["prev_change_id"] = prev
    params = {"channel": f"book.{native}.100ms", "data": data}
    return json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": params})


def trades_frame(native: str, trades: list[dict[str, Any]]) -> str:
    params = {"channel": f"trades.{native}.100ms", "data": trades}
    return json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": params})


# ---------------------------------------------------------------------------------------------
# The 2026 BTC-PERPETUAL capture


def test_perpetual_capture_end_to_end() -> None:
    codec = perp_codec()
    events = feed(codec, perp())
    trades = [t for p in notifications(perp(), "trades") for t in p["data"]]
    tickers = [p["data"] for p in notifications(perp(), "ticker")]
    books = [p["data"] for p in notifications(perp(), "book")]
    assert (len(trades), len(tickers), len(books)) == (2, 2, 2)
    got = Counter(type(e).__name__ for e in events)
    assert got == {
        "Trade": len(trades),
        "Ticker": len(tickers),
        "MarkPrice": len(tickers),
        "OpenInterest": len(tickers),
        "FundingRate": len(tickers),
        "BookSnapshot": sum(b["type"] == "snapshot" for b in books),
        "BookDelta": sum(b["type"] == "change" for b in books),
        "VenueStatus": 1,
    }
    assert [s.kind for s in statuses(events)] == ["book_synced"]
    c = codec.counters
    assert c.frames == len(perp().received)
    assert (c.parse_errors, c.book_gaps, c.book_resyncs, c.stale_deltas_dropped) == (0, 0, 0, 0)
    # The recorded acks answer other request ids than ours: nothing to do, nothing sent.
    assert codec.actions() == []

    # Trades: taker side, USD amount, exact text.
    got_trades = [e for e in events if isinstance(e, Trade)]
    assert [(t.trade_id, t.side, t.price, t.size) for t in got_trades] == [
        (t["trade_id"], t["direction"], fmt(t["price"]), fmt(t["amount"])) for t in trades
    ]
    assert got_trades[0].ts_venue == 1786563104514 * 1_000_000
    assert got_trades[0].symbol == "BTC-USD-PERP"

    # Ticker family: ccxt wrote current_funding as 2.081e-05; published in plain notation.
    ticker = next(e for e in events if isinstance(e, Ticker))
    assert (ticker.bid_price, ticker.bid_size, ticker.ask_price, ticker.ask_size) == (
        "63344",
        "58060",
        "63344.5",
        "9980",
    )
    assert ticker.last_price == "63344" and ticker.ts_venue == 1786563120494 * 1_000_000
    funding = next(e for e in events if isinstance(e, FundingRate))
    assert (funding.rate, funding.mark_price, funding.index_price) == (
        "0.00002081",
        "63346.33",
        "63329.18",
    )
    assert funding.next_funding_ts is None
    mark = next(e for e in events if isinstance(e, MarkPrice))
    assert (mark.mark_price, mark.index_price) == ("63346.33", "63329.18")
    oi = next(e for e in events if isinstance(e, OpenInterest))
    assert (oi.open_interest, oi.open_interest_value) == ("716004750", "716004750")  # USD

    # Book: snapshot then one change chained on its change_id.
    snapshot, delta = book_events(events, "BTC-PERPETUAL")
    assert isinstance(snapshot, BookSnapshot) and isinstance(delta, BookDelta)
    assert snapshot.sequence == books[0]["change_id"] == 169600103289
    assert (delta.first_sequence, delta.sequence, delta.prev_sequence) == (
        None,
        169600103676,
        169600103289,
    )
    assert delta.bids == [("62533", "0")]
    assert delta.asks == [("63350.5", "8250"), ("63353", "10"), ("64116.5", "0"), ("94987.5", "20")]
    assert b'"asks":[["63325","7730"],["63330","220"]' in encode(snapshot)


def test_wire_messages_perpetual() -> None:
    events = feed(perp_codec(), perp())
    messages = [to_message(e) for e in events]
    ids = [m.msg_id for m in messages]
    assert len(set(ids)) == len(ids), "two different events share a message id"
    assert {m.subject for m in messages} == {
        "market.deribit.btc-usd-perp.trade",
        "market.deribit.btc-usd-perp.ticker",
        "market.deribit.btc-usd-perp.mark_price",
        "market.deribit.btc-usd-perp.open_interest",
        "market.deribit.btc-usd-perp.funding_rate",
        "market.deribit.btc-usd-perp.l2_orderbook",
        "market.deribit._status",
    }
    # The same venue events seen again (another relay, a replay) get the same ids, except
    # statuses, which are the relay's own observations.
    again = [msg_id(e) for e in feed(perp_codec(), perp()) if not isinstance(e, VenueStatus)]
    assert again == [msg_id(e) for e in events if not isinstance(e, VenueStatus)]


# ---------------------------------------------------------------------------------------------
# The 2021 options capture: book chains over many messages


def test_options_capture_books_and_chains() -> None:
    codec = options_codec()
    events = feed(codec, options())
    books = notifications(options(), "book")
    tickers = notifications(options(), "ticker")
    snapshots = sum(p["data"]["type"] == "snapshot" for p in books)
    changes = sum(p["data"]["type"] == "change" for p in books)
    assert (snapshots, changes, len(tickers)) == (10, 36, 89)
    got = Counter(type(e).__name__ for e in events)
    assert got == {
        "BookSnapshot": snapshots,
        "BookDelta": changes,
        "Ticker": len(tickers),
        "VenueStatus": snapshots,
    }
    assert {s.kind for s in statuses(events)} == {"book_synced"}
    assert (codec.counters.book_gaps, codec.counters.parse_errors) == (0, 0)

    raw_by_id = {p["data"]["change_id"]: p["data"] for p in books}
    for native in option_natives():
        published = book_events(events, native)
        assert isinstance(published[0], BookSnapshot)
        # The chain the codec checked holds in what it published (ids not contiguous).
        consumer = rebuild(published)
        want = reference_book(native, published[-1].sequence)
        assert consumer.sorted_bids() == want.sorted_bids()
        assert consumer.sorted_asks() == want.sorted_asks()
        for event in published:
            raw = raw_by_id[event.sequence]
            assert event.ts_venue == int(raw["timestamp"]) * 1_000_000
            if isinstance(event, BookDelta):
                assert event.prev_sequence == raw["prev_change_id"]
                assert event.bids == [(fmt(p), fmt(q)) for _, p, q in raw["bids"]]
                assert event.asks == [(fmt(p), fmt(q)) for _, p, q in raw["asks"]]
    # Ids are really not contiguous: the chain is by prev_change_id only.
    deltas = [e for e in events if isinstance(e, BookDelta)]
    assert any(d.prev_sequence is not None and d.sequence > d.prev_sequence + 1 for d in deltas)

    # Exact decimal text as the venue wrote it, e.g. "4714.0" and "0.0015".
    eth = book_events(events, "ETH-30JUL21-2800-C")[0]
    assert b'"bids":[["0.0015","4714.0"],["0.001","861.0"],["0.0005","1.0"]]' in encode(eth)


def test_options_tickers_empty_side_is_none() -> None:
    events = feed(options_codec(), options())
    tickers = [e for e in events if isinstance(e, Ticker)]
    raw = [p["data"] for p in notifications(options(), "ticker")]
    for ticker, data in zip(tickers, raw, strict=True):
        assert ticker.native_symbol == data["instrument_name"]
        if data["best_bid_amount"] == 0:
            assert (ticker.bid_price, ticker.bid_size) == (None, None)
        else:
            assert (ticker.bid_price, ticker.bid_size) == (
                fmt(data["best_bid_price"]),
                fmt(data["best_bid_amount"]),
            )
        assert ticker.last_price == (
            None if data["last_price"] is None else fmt(data["last_price"])
        )
    assert any(t.bid_price is None for t in tickers)  # the capture has empty sides


def test_wire_messages_options() -> None:
    events = feed(options_codec(), options())
    ids = [to_message(e).msg_id for e in events]
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------------------------
# Gaps and resyncs


def test_gap_resyncs_only_that_instrument() -> None:
    frames = list(options().received)
    target = "BTC-24SEP21-8000-P"
    indexes = [i for i, f in enumerate(frames) if f'"channel":"book.{target}.raw"' in f.text]
    assert len(indexes) >= 4
    dropped = parse(frames[indexes[2]].text)["params"]["data"]  # a change after the snapshot
    assert dropped["type"] == "change"
    del frames[indexes[2]]
    after = indexes[3] - 1  # the next change of the target now sits here

    codec = options_codec()
    events: list[MarketEvent] = []
    for frame in frames[:after]:
        events += codec.receive(frame.text, frame.ts)
    assert codec.actions() == []
    out = codec.receive(frames[after].text, frames[after].ts)
    assert [(s.kind, s.native_symbol) for s in statuses(out)] == [
        ("book_gap", target),
        ("book_resync", target),
    ]
    assert f"expected prev_change_id={dropped['prev_change_id']}" in statuses(out)[0].detail
    assert not any(isinstance(e, BookDelta) for e in out)
    c = codec.counters
    assert (c.book_gaps, c.book_resyncs) == (1, 1)
    # Unsubscribe + subscribe of that book channel only.
    channel = f"book.{target}.100ms"
    assert [(r["method"], r["params"]) for r in requests(codec)] == [
        ("public/unsubscribe", {"channels": [channel]}),
        ("public/subscribe", {"channels": [channel]}),
    ]

    # Nothing of the target's book until a snapshot; the other books go on.
    rest: list[MarketEvent] = []
    for frame in frames[after + 1 :]:
        rest += codec.receive(frame.text, frame.ts)
    assert book_events(rest, target) == []
    assert any(isinstance(e, BookDelta) for e in rest)
    assert codec.counters.book_gaps == 1
    later = [f for f in frames[after + 1 :] if f'"channel":"book.{target}.raw"' in f.text]
    assert later and codec.counters.stale_deltas_dropped == len(later)

    # The new subscription's snapshot: the book is back and the chain continues from it.
    resumed = codec.receive(book_frame(target, "snapshot", 50, bids=[["new", 0.5, 1.0]]), 1)
    assert [type(e) for e in resumed] == [BookSnapshot, VenueStatus]
    [delta] = codec.receive(book_frame(target, "change", 60, 50, asks=[["new", 0.6, 2]]), 2)
    assert isinstance(delta, BookDelta) and delta.prev_sequence == 50


def test_change_before_snapshot_and_repeats_are_dropped() -> None:
    codec = perp_codec()
    assert codec.receive(book_frame("BTC-PERPETUAL", "change", 5, 4), 1) == []
    assert codec.counters.stale_deltas_dropped == 1
    snap = book_frame(
        "BTC-PERPETUAL", "snapshot", 10, bids=[["new", 100, 5]], asks=[["new", 101, 5]]
    )
    assert [type(e) for e in codec.receive(snap, 2)] == [BookSnapshot, VenueStatus]
    change = book_frame("BTC-PERPETUAL", "change", 12, 10, bids=[["change", 100, 7]])
    assert [type(e) for e in codec.receive(change, 3)] == [BookDelta]
    assert codec.receive(change, 4) == []  # the same message again
    assert codec.counters.stale_deltas_dropped == 2
    assert codec.counters.book_gaps == 0
    # A later snapshot resets the book and the chain.
    snap2 = book_frame(
        "BTC-PERPETUAL", "snapshot", 20, bids=[["new", 99, 1]], asks=[["new", 100, 1]]
    )
    [snapshot, _] = codec.receive(snap2, 5)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == 20
    [delta] = codec.receive(book_frame("BTC-PERPETUAL", "change", 21, 20), 6)
    assert isinstance(delta, BookDelta)


def test_change_without_prev_is_a_gap() -> None:
    codec = perp_codec()
    codec.receive(book_frame("BTC-PERPETUAL", "snapshot", 10, bids=[["new", 1, 1]]), 1)
    out = codec.receive(book_frame("BTC-PERPETUAL", "change", 11), 2)
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]


def test_crossed_book_resyncs() -> None:
    codec = perp_codec()
    snap = book_frame(
        "BTC-PERPETUAL", "snapshot", 10, bids=[["new", 100, 5]], asks=[["new", 101, 5]]
    )
    codec.receive(snap, 1)
    out = codec.receive(book_frame("BTC-PERPETUAL", "change", 11, 10, bids=[["new", 101.5, 1]]), 2)
    [resync] = out  # no delta published
    assert resync.kind == "book_resync" and "crossed" in resync.detail
    assert (codec.counters.book_resyncs, codec.counters.book_gaps) == (1, 0)
    assert [r["method"] for r in requests(codec)] == ["public/unsubscribe", "public/subscribe"]
    # Nothing is published until the new snapshot.
    assert codec.receive(book_frame("BTC-PERPETUAL", "change", 12, 11), 3) == []
    # A crossed snapshot is refused the same way.
    bad = book_frame(
        "BTC-PERPETUAL", "snapshot", 20, bids=[["new", 102, 1]], asks=[["new", 101, 1]]
    )
    [status] = codec.receive(bad, 4)
    assert status.kind == "book_resync" and "crossed" in status.detail


def test_delete_publishes_zero_and_removes() -> None:
    codec = perp_codec()
    snap = book_frame(
        "BTC-PERPETUAL", "snapshot", 1, bids=[["new", 100, 5], ["new", 99, 5]], asks=[]
    )
    codec.receive(snap, 1)
    # A delete with a (wrong) non-zero amount still removes the level.
    [delta] = codec.receive(
        book_frame("BTC-PERPETUAL", "change", 2, 1, bids=[["delete", 100, 3]]), 2
    )
    assert isinstance(delta, BookDelta) and delta.bids == [("100", "0")]
    snap_with_zero = book_frame(
        "BTC-PERPETUAL", "snapshot", 3, bids=[["new", 100, 0], ["new", 99, 1.50]]
    )
    snapshot, _ = codec.receive(snap_with_zero, 3)
    assert isinstance(snapshot, BookSnapshot) and snapshot.bids == [("99", "1.5")]


def test_reconnect_resets_books_and_request_ids() -> None:
    codec = perp_codec()
    codec.receive(book_frame("BTC-PERPETUAL", "snapshot", 10, bids=[["new", 1, 1]]), 1)
    codec.receive('{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}', 2)
    assert requests(codec)[0]["id"] == 3
    codec.connected(3)
    assert [r["id"] for r in requests(codec)] == [1, 2]
    # The old chain is gone: a change continuing it is dropped until a snapshot.
    assert codec.receive(book_frame("BTC-PERPETUAL", "change", 11, 10), 4) == []


# ---------------------------------------------------------------------------------------------
# Resync asked for by downstream (Codec.resync) and Codec.synced


def test_resync_resubscribes_that_book_until_its_snapshot() -> None:
    frames = options().received
    target = "BTC-24SEP21-8000-P"

    def is_book(i: int, native: str) -> bool:
        return f'"channel":"book.{native}.raw"' in frames[i].text

    snapshot_at = next(i for i in range(len(frames)) if is_book(i, target))
    first_change, second_change = [i for i in range(len(frames)) if is_book(i, target)][1:3]
    codec = options_codec()
    assert not codec.synced
    last_snapshot = max(i for i, f in enumerate(frames) if '"type":"snapshot"' in f.text)
    assert snapshot_at < last_snapshot < first_change
    events: list[MarketEvent] = []
    synced = []
    for frame in frames[: first_change + 1]:
        events += codec.receive(frame.text, frame.ts)
        synced.append(codec.synced)
    # False until the last of the ten books has its snapshot.
    assert synced == [False] * last_snapshot + [True] * (first_change + 1 - last_snapshot)
    before = book_events(events, target)
    assert [type(e) for e in before] == [BookSnapshot, BookDelta]

    [status] = codec.resync(target, "consumer missed a delta", 7)
    assert (status.kind, status.symbol, status.native_symbol, status.ts_recv) == (
        "book_resync",
        target,
        target,
        7,
    )
    assert "consumer missed a delta" in status.detail
    assert codec.counters.book_resyncs == 1
    channel = f"book.{target}.100ms"
    assert codec.actions() == [
        SendFrame(
            '{"jsonrpc":"2.0","id":3,"method":"public/unsubscribe",'
            f'"params":{{"channels":["{channel}"]}}}}'
        ),
        SendFrame(
            '{"jsonrpc":"2.0","id":4,"method":"public/subscribe",'
            f'"params":{{"channels":["{channel}"]}}}}'
        ),
    ]
    assert not codec.synced
    # Asked again while the snapshot is awaited: the status, no second request.
    [again] = codec.resync(target, "another lost delta", 8)
    assert again.kind == "book_resync" and "awaited already" in again.detail
    assert codec.actions() == []

    # The target's changes are dropped until a snapshot; the other books go on.
    rest: list[MarketEvent] = []
    for frame in frames[first_change + 1 :]:
        rest += codec.receive(frame.text, frame.ts)
    assert book_events(rest, target) == []
    later = [i for i in range(first_change + 1, len(frames)) if is_book(i, target)]
    assert codec.counters.stale_deltas_dropped == len(later)
    others = [e for e in rest if isinstance(e, BookDelta)]
    assert others and all(e.native_symbol != target for e in others)
    assert statuses(rest) == []  # in particular no gap on the other books
    assert not codec.synced

    # The venue accepts the subscription; the capture's own snapshot and changes of the
    # target play its notifications, and the book is back.
    answer = {"jsonrpc": "2.0", "id": 4, "result": [channel]}
    assert codec.receive(json.dumps(answer), 8) == []
    resumed: list[MarketEvent] = []
    for i in (snapshot_at, first_change, second_change):
        resumed += codec.receive(frames[i].text, frames[i].ts)
    published = book_events(resumed, target)
    assert [type(e) for e in published] == [BookSnapshot, BookDelta, BookDelta]
    assert [(s.kind, s.symbol) for s in statuses(resumed)] == [("book_synced", target)]
    snapshot, delta = published[0], published[1]
    assert isinstance(delta, BookDelta) and delta.prev_sequence == snapshot.sequence
    assert codec.synced
    c = codec.counters
    assert (c.book_resyncs, c.book_gaps, c.parse_errors) == (2, 0, 0)


def test_resync_without_book_is_a_no_op() -> None:
    subs = [
        Subscription("BTC-PERPETUAL", "BTC-USD-PERP", ALL_TYPES),
        Subscription("ETH-PERPETUAL", "ETH-USD-PERP", frozenset({DataType.TRADE})),
    ]
    codec = new_codec(subs)
    assert not codec.synced
    for symbol in ("ETH-USD-PERP", "SOL-USD-PERP", "BTC-PERPETUAL"):
        assert codec.resync(symbol, "test", 1) == []
    assert codec.actions() == [] and codec.counters.book_resyncs == 0
    # The venue leaves the book channel out of its answer: no book on this connection.
    answer = {
        "jsonrpc": "2.0",
        "id": 2,
        "result": [
            "ticker.BTC-PERPETUAL.100ms",
            "trades.BTC-PERPETUAL.100ms",
            "trades.ETH-PERPETUAL.100ms",
        ],
    }
    [status] = codec.receive(json.dumps(answer), 2)
    assert status.kind == "unknown_symbol" and "book.BTC-PERPETUAL.100ms" in status.detail
    assert codec.synced
    assert codec.resync("BTC-USD-PERP", "test", 3) == [] and codec.actions() == []
    # A new connection subscribes it again, and waits for it.
    codec.connected(4)
    codec.actions()
    assert not codec.synced


def test_synced_without_books() -> None:
    codec = perp_codec(frozenset({DataType.TRADE, DataType.TICKER}))
    assert codec.synced
    assert codec.resync("BTC-USD-PERP", "test", 1) == [] and codec.actions() == []


# ---------------------------------------------------------------------------------------------
# Trades and liquidations


def _trade(**overrides: Any) -> dict[str, Any]:
    trade = {
        "timestamp": 1765531356452,
        "price": 92294.5,
        "amount": 10.0,
        "direction": "sell",
        "instrument_name": "BTC-PERPETUAL",
        "trade_seq": 271252854,
        "trade_id": "403691824",
    }
    return trade | overrides


@pytest.mark.parametrize(
    ("flag", "direction", "want"),
    [
        ("T", "sell", [("403691824:T", "buy")]),  # taker sold to close a long
        ("T", "buy", [("403691824:T", "sell")]),  # taker bought to close a short
        ("M", "sell", [("403691824:M", "sell")]),  # maker bought to close a short
        ("M", "buy", [("403691824:M", "buy")]),  # maker sold to close a long
        ("MT", "sell", [("403691824:M", "sell"), ("403691824:T", "buy")]),
        (None, "sell", []),
    ],
)
def test_liquidation_flag(flag: str | None, direction: str, want: list[tuple[str, str]]) -> None:
    codec = perp_codec()
    extra = {} if flag is None else {"liquidation": flag}
    out = codec.receive(trades_frame("BTC-PERPETUAL", [_trade(direction=direction, **extra)]), 9)
    [trade] = [e for e in out if isinstance(e, Trade)]
    assert trade.side == direction  # the taker side, liquidation or not
    liquidations = [e for e in out if isinstance(e, Liquidation)]
    assert [(e.liquidation_id, e.side) for e in liquidations] == want
    for e in liquidations:
        assert (e.price, e.size, e.ts_venue) == ("92294.5", "10.0", 1765531356452 * 1_000_000)
        assert subject(e) == "market.deribit.btc-usd-perp.liquidation"
    ids = [msg_id(e) for e in out]
    assert len(set(ids)) == len(ids)


def test_liquidations_without_trades() -> None:
    codec = perp_codec(frozenset({DataType.LIQUIDATION}))
    frame = trades_frame("BTC-PERPETUAL", [_trade(liquidation="T"), _trade(trade_id="x2")])
    [liquidation] = codec.receive(frame, 1)
    assert isinstance(liquidation, Liquidation)


def test_sizes_are_amount_in_venue_units() -> None:
    """Inverse: amount in USD, published as is; linear USDC: amount in the base coin."""
    linear = new_codec([Subscription("BTC_USDC-PERPETUAL", "BTC-USDC-PERP", ALL_TYPES)])
    frame = trades_frame(
        "BTC_USDC-PERPETUAL",
        [_trade(instrument_name="BTC_USDC-PERPETUAL", amount=0.001, contracts=1.0)],
    )
    [trade] = linear.receive(frame, 1)
    assert isinstance(trade, Trade) and trade.size == "0.001"
    ticker = {
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {
            "channel": "ticker.BTC_USDC-PERPETUAL.100ms",
            "data": {"timestamp": 5, "open_interest": 12.345, "current_funding": 0},
        },
    }
    out = linear.receive(json.dumps(ticker), 2)
    [oi] = [e for e in out if isinstance(e, OpenInterest)]
    assert (oi.open_interest, oi.open_interest_value) == ("12.345", None)  # base units
    [funding] = [e for e in out if isinstance(e, FundingRate)]
    assert funding.rate == "0"
    # A contract_size cannot convert Deribit amounts (already multiplied; USD for inverse).
    with pytest.raises(ValueError, match="contract_size"):
        ADAPTER.make_codecs(
            "deribit",
            [Subscription("BTC-PERPETUAL", "BTC-USD-PERP", ALL_TYPES, Decimal(10))],
            ENDPOINTS,
        )


# ---------------------------------------------------------------------------------------------
# Control frames and garbage


def test_heartbeats() -> None:
    codec = perp_codec()
    assert (
        codec.receive('{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}', 1)
        == []
    )
    assert codec.actions() == []
    test_request = '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}'
    assert codec.receive(test_request, 2) == []
    [answer] = requests(codec)
    assert answer == {"jsonrpc": "2.0", "id": 3, "method": "public/test", "params": {}}
    # Its answer, and that of set_heartbeat, are dropped.
    assert codec.receive('{"jsonrpc":"2.0","id":3,"result":{"version":"1.2.26"}}', 3) == []
    assert codec.receive('{"jsonrpc":"2.0","id":1,"result":"ok"}', 4) == []
    assert codec.counters.parse_errors == 0


def test_subscribe_answers_and_errors() -> None:
    subs = [
        Subscription("BTC-PERPETUAL", "BTC-USD-PERP", frozenset({DataType.TRADE})),
        Subscription("NOPE-PERPETUAL", "NOPE-USD-PERP", frozenset({DataType.TRADE})),
    ]
    [codec] = ADAPTER.make_codecs("deribit", subs, ENDPOINTS)
    codec.connected(0)
    sent = requests(codec)
    assert [r["method"] for r in sent] == ["public/set_heartbeat", "public/subscribe"]
    assert sent[0]["params"] == {"interval": HEARTBEAT_INTERVAL}
    subscribe_id = sent[1]["id"]
    answer = {"jsonrpc": "2.0", "id": subscribe_id, "result": ["trades.BTC-PERPETUAL.100ms"]}
    [status] = codec.receive(json.dumps(answer), 1)
    assert (status.kind, status.symbol) == ("unknown_symbol", "NOPE-USD-PERP")
    assert "trades.NOPE-PERPETUAL.100ms" in status.detail
    assert codec.receive(json.dumps(answer), 2) == []  # answered already
    error = {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": 10028, "message": "too_many_requests", "data": None},
    }
    [status] = codec.receive(json.dumps(error), 3)
    assert status.kind == "venue_error" and "10028" in status.detail
    assert "too_many_requests" in status.detail
    to_message(status)


def test_unsubscribed_channels_and_types_are_ignored() -> None:
    codec = perp_codec(frozenset({DataType.MARK_PRICE}))
    events = feed(codec, perp())
    assert {type(e) for e in events} == {MarkPrice}
    other = next(f.text for f in perp().received if "trades.BTC-PERPETUAL" in f.text)
    assert codec.receive(other.replace("BTC-PERPETUAL", "ETH-PERPETUAL"), 1) == []
    grouped = {
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {"channel": "book.BTC-PERPETUAL.none.10.100ms", "data": {"bids": []}},
    }
    assert codec.receive(json.dumps(grouped), 2) == []
    quote = (
        '{"jsonrpc":"2.0","method":"subscription",'
        '"params":{"channel":"quote.BTC-PERPETUAL","data":{}}}'
    )
    assert codec.receive(quote, 3) == []
    assert codec.counters.parse_errors == 0


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\xff",
        "{",
        "[]",
        "null",
        "{}",
        '{"jsonrpc":"2.0","method":"subscription"}',
        '{"jsonrpc":"2.0","method":"subscription","params":{"channel":5}}',
        '{"jsonrpc":"2.0","method":"heartbeat"}',
        '{"jsonrpc":"2.0","method":"bogus","params":{}}',
        trades_frame("BTC-PERPETUAL", [{"price": 1}]),
        trades_frame("BTC-PERPETUAL", [_trade(direction="up")]),
        trades_frame("BTC-PERPETUAL", [_trade(amount=-1)]),
        trades_frame("BTC-PERPETUAL", [_trade(price="NaN")]),
        trades_frame("BTC-PERPETUAL", [_trade(liquidation="X")]),
        book_frame("BTC-PERPETUAL", "snapshot", 1, bids=[["add", 1, 1]]),
        book_frame("BTC-PERPETUAL", "snapshot", 1, bids=[["new", 1, -1]]),
        book_frame("BTC-PERPETUAL", "update", 1),
        '{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.BTC-PERPETUAL.100ms",'
        '"data":{"timestamp":1,"mark_price":"Infinity"}}}',
        '{"jsonrpc":"2.0","id":2,"result":{"not":"a list"}}',
    ],
)
def test_garbage_is_a_parse_error(frame: str | bytes) -> None:
    codec = perp_codec()
    [status] = codec.receive(frame, 99)
    assert isinstance(status, VenueStatus)
    assert status.kind == "parse_error"
    assert status.detail and len(status.detail) <= 200
    assert codec.counters.parse_errors == 1
    assert codec.actions() == []
    to_message(status)
    # The codec is unharmed: the capture still decodes completely.
    events = feed(codec, perp())
    assert sum(isinstance(e, BookDelta) for e in events) == 1
    assert codec.counters.parse_errors == 1


# ---------------------------------------------------------------------------------------------
# Subscriptions, sharding, symbols


def test_subscribe_frames_are_batched() -> None:
    natives = [f"C{i}-PERPETUAL" for i in range(60)]
    subs = [Subscription(n, f"C{i}-USD-PERP", ALL_TYPES) for i, n in enumerate(natives)]
    [codec] = ADAPTER.make_codecs("deribit", subs, ENDPOINTS)
    assert codec.connected(0) == []
    sent = requests(codec)
    assert sent[0]["method"] == "public/set_heartbeat"
    subscribes = sent[1:]
    assert all(r["method"] == "public/subscribe" and r["jsonrpc"] == "2.0" for r in subscribes)
    assert [len(r["params"]["channels"]) for r in subscribes] == [100, 80]
    assert [r["id"] for r in sent] == [1, 2, 3]
    channels = [c for r in subscribes for c in r["params"]["channels"]]
    want = {f"{k}.{n}.100ms" for n in natives for k in ("book", "ticker", "trades")}
    assert set(channels) == want and len(channels) == len(want)
    assert max(len(r["params"]["channels"]) for r in subscribes) <= MAX_CHANNELS_PER_SUBSCRIBE


def test_sharding() -> None:
    subs = [Subscription(f"C{i}-PERPETUAL", f"C{i}-USD-PERP", ALL_TYPES) for i in range(250)]
    codecs = ADAPTER.make_codecs("deribit", subs, ENDPOINTS)
    assert len(codecs) == 3
    seen: list[set[str]] = []
    for codec in codecs:
        assert isinstance(codec, DeribitCodec)
        assert codec.url == "wss://www.deribit.com/ws/api/v2"
        assert codec.max_send_rate == 3.0
        assert codec.ping_interval is None and codec.max_lifetime is None
        assert len(codec.channels) <= MAX_CHANNELS_PER_CONNECTION
        seen.append({c.split(".")[1] for c in codec.channels})
    assert sum(len(c.channels) for c in codecs if isinstance(c, DeribitCodec)) == 750
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])
    assert ADAPTER.make_codecs("deribit", [], ENDPOINTS) == []


def test_make_codecs_merges_and_validates() -> None:
    subs = [
        Subscription("BTC-PERPETUAL", "BTC-USD-PERP", frozenset({DataType.TRADE})),
        Subscription("BTC-PERPETUAL", "BTC-USD-PERP", frozenset({DataType.FUNDING_RATE})),
    ]
    [codec] = ADAPTER.make_codecs("d", subs, ENDPOINTS)
    assert isinstance(codec, DeribitCodec)
    assert codec.channels == ["ticker.BTC-PERPETUAL.100ms", "trades.BTC-PERPETUAL.100ms"]
    with pytest.raises(ValueError, match="not a perpetual"):
        ADAPTER.make_codecs(
            "d",
            [Subscription("BTC-27DEC24", "BTC-USD-241227", frozenset({DataType.FUNDING_RATE}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="mapped to both"):
        ADAPTER.make_codecs(
            "d",
            [subs[0], Subscription("BTC-PERPETUAL", "XBT-USD-PERP", frozenset({DataType.TRADE}))],
            ENDPOINTS,
        )


def test_events_carry_configured_venue_and_endpoints() -> None:
    endpoints = Endpoints(ws_url="ws://127.0.0.1:9/ws/api/v2", rest_url="http://127.0.0.1:9")
    subs = [Subscription("BTC-PERPETUAL", "BTC-USD-PERP", ALL_TYPES)]
    [codec] = ADAPTER.make_codecs("deribit-replay", subs, endpoints)
    assert codec.url == "ws://127.0.0.1:9/ws/api/v2"
    codec.connected(0)
    events = feed(codec, perp())
    assert {e.venue for e in events} == {"deribit-replay"}


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("BTC-PERPETUAL", "BTC-USD-PERP"),
        ("ETH-PERPETUAL", "ETH-USD-PERP"),
        ("BTC-27DEC24", "BTC-USD-241227"),
        ("ETH-5JAN24", "ETH-USD-240105"),
        ("BTC_USDC-PERPETUAL", "BTC-USDC-PERP"),
        ("SOL_USDC-PERPETUAL", "SOL-USDC-PERP"),
        ("BTC_USDC-28MAR25", "BTC-USDC-250328"),
        ("BTC_USDC", "BTC-USDC"),
        ("BTC-27DEC24-100000-C", None),  # options are not mapped
        ("BTC-FS-27DEC24_PERP", None),  # combos
        ("BTC-32DEC24", None),
        ("BTC-27FOO24", None),
        ("BTC", None),
        ("btc-perpetual", None),
        ("", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


def test_adapter_is_registered() -> None:
    assert adapters.load("deribit") is ADAPTER
    assert ADAPTER.name == "deribit"
    assert ADAPTER.required_credentials == ()
    assert DataType.LIQUIDATION in ADAPTER.data_types
