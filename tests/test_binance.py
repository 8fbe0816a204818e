"""Tests of the Binance spot codec (adapters/binance.py), driven by a real capture.

``tests/data/cryptofeed/BINANCE.ws.1.0`` is a combined stream (depth@100ms, bookTicker,
aggTrade, kline_1m) for four symbols, and ``BINANCE.http.0.0`` the REST depth snapshots
taken during the same session. The tests count what the capture holds independently (from
the raw JSON) and check the codec's output against that.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import adapters
from adapters.binance import ADAPTER, MAX_PARAMS_PER_SUBSCRIBE, BinanceCodec
from relay.book import OrderBook, parse_levels
from relay.captures import Frame, Recording, load
from relay.codec import Codec, Endpoints, FetchSnapshot, Reconnect, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    MarketEvent,
    Ticker,
    Trade,
    VenueStatus,
)
from relay.wire import encode, subject, to_message

CAPTURE = Path(__file__).parent / "data" / "cryptofeed" / "BINANCE.ws.1.0"
SYMBOLS = ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR")
ALL_TYPES = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
ENDPOINTS = ADAPTER.default_endpoints


# ---------------------------------------------------------------------------------------------
# Capture helpers


@cache
def recording() -> Recording:
    return load(CAPTURE)


@cache
def snapshot_bodies() -> dict[str, str]:
    """Native symbol → recorded REST depth body (matched on the ``symbol`` query param)."""
    out = {}
    for response in recording().http:
        [symbol] = parse_qs(urlsplit(response.url).query)["symbol"]
        out[symbol] = response.body
    return out


@cache
def snapshot_urls() -> dict[str, str]:
    return {parse_qs(urlsplit(r.url).query)["symbol"][0]: r.url for r in recording().http}


def payload(frame: Frame) -> tuple[str, dict[str, Any]]:
    message = json.loads(frame.text)
    return message["stream"], message["data"]


@cache
def depth_diffs() -> dict[str, list[dict[str, Any]]]:
    """The capture's depthUpdate payloads per symbol, in arrival order."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SYMBOLS}
    for frame in recording().received:
        _, data = payload(frame)
        if data.get("e") == "depthUpdate":
            out[data["s"]].append(data)
    return out


def stale_count(symbol: str) -> int:
    """Diffs the sync must drop: ``u <= lastUpdateId`` of the recorded snapshot."""
    last_id = json.loads(snapshot_bodies()[symbol])["lastUpdateId"]
    return sum(1 for d in depth_diffs()[symbol] if d["u"] <= last_id)


def subscriptions(
    symbols: Iterable[str] = SYMBOLS, types: frozenset[DataType] = ALL_TYPES
) -> list[Subscription]:
    out = []
    for native in symbols:
        canonical = ADAPTER.canonical_symbol(native)
        assert canonical is not None
        out.append(Subscription(native, canonical, types))
    return out


def new_codec(
    symbols: Iterable[str] = SYMBOLS, types: frozenset[DataType] = ALL_TYPES
) -> BinanceCodec:
    """The single codec ``make_codecs`` builds for ``symbols``, connected."""
    [codec] = ADAPTER.make_codecs("binance", subscriptions(symbols, types), ENDPOINTS)
    assert isinstance(codec, BinanceCodec)
    codec.connected(recording().received[0].ts - 1)
    codec.actions()  # the SUBSCRIBE frames, tested separately
    return codec


class Driver:
    """Feeds frames to a codec and answers its FetchSnapshot actions when told to."""

    def __init__(self, codec: Codec, *, answer_immediately: bool) -> None:
        self.codec = codec
        self.answer_immediately = answer_immediately
        self.events: list[MarketEvent] = []
        self.pending: list[FetchSnapshot] = []
        self.fetches: list[FetchSnapshot] = []
        self.other_actions: list[object] = []
        self.bodies = dict(snapshot_bodies())

    def _take_actions(self) -> None:
        for action in self.codec.actions():
            if isinstance(action, FetchSnapshot):
                self.fetches.append(action)
                self.pending.append(action)
            else:
                self.other_actions.append(action)

    def answer_all(self, now_ns: int) -> list[MarketEvent]:
        """Answer the FetchSnapshots pending now with ``self.bodies``; requests the answers
        cause (a snapshot found too old) stay pending for the next call."""
        out: list[MarketEvent] = []
        pending, self.pending = self.pending, []
        for action in pending:
            body = self.bodies[action.key].encode()
            out += self.codec.snapshot_received(action.key, body, now_ns)
            self._take_actions()
        self.events += out
        return out

    def feed(self, frames: Iterable[Frame]) -> list[MarketEvent]:
        """Receive ``frames``; returns the events they (and any snapshots answered) gave."""
        out: list[MarketEvent] = []
        for frame in frames:
            events = self.codec.receive(frame.text, frame.ts)
            self.events += events
            out += events
            self._take_actions()
            if self.answer_immediately:
                out += self.answer_all(frame.ts)
        return out


def book_events(events: Sequence[MarketEvent], native: str) -> list[BookSnapshot | BookDelta]:
    return [
        e for e in events if isinstance(e, (BookSnapshot, BookDelta)) and e.native_symbol == native
    ]


def statuses(events: Iterable[MarketEvent], kind: str | None = None) -> list[VenueStatus]:
    return [e for e in events if isinstance(e, VenueStatus) and (kind is None or e.kind == kind)]


def reference_book(native: str, through_u: int) -> OrderBook:
    """The book built by the test itself: recorded snapshot + raw diffs up to ``through_u``."""
    snap = json.loads(snapshot_bodies()[native])
    book = OrderBook()
    book.apply_snapshot(
        [(Decimal(p), Decimal(q)) for p, q in snap["bids"]],
        [(Decimal(p), Decimal(q)) for p, q in snap["asks"]],
    )
    for diff in depth_diffs()[native]:
        if snap["lastUpdateId"] < diff["u"] <= through_u:
            book.apply_delta(
                [(Decimal(p), Decimal(q)) for p, q in diff["b"]],
                [(Decimal(p), Decimal(q)) for p, q in diff["a"]],
            )
    return book


def rebuild(events: Sequence[BookSnapshot | BookDelta]) -> OrderBook:
    """A consumer's copy of the book from published events; asserts it is never crossed."""
    book = OrderBook()
    for event in events:
        if isinstance(event, BookSnapshot):
            book.apply_snapshot(parse_levels(event.bids), parse_levels(event.asks))
        else:
            book.apply_delta(parse_levels(event.bids), parse_levels(event.asks))
        assert not book.is_crossed(), event
    return book


def depth_frame(
    native: str,
    first: int,
    last: int,
    bids: Sequence[tuple[str, str]] = (),
    asks: Sequence[tuple[str, str]] = (),
    ts_ms: int = 1,
) -> str:
    """A combined-stream depthUpdate frame for synthetic scenarios."""
    data = {
        "e": "depthUpdate",
        "E": ts_ms,
        "s": native,
        "U": first,
        "u": last,
        "b": [list(level) for level in bids],
        "a": [list(level) for level in asks],
    }
    return json.dumps({"stream": f"{native.lower()}@depth@100ms", "data": data})


# ---------------------------------------------------------------------------------------------
# The capture, end to end


@pytest.mark.parametrize("answer_immediately", [True, False], ids=["snapshot-now", "snapshot-late"])
def test_capture_event_counts(answer_immediately: bool) -> None:
    codec = new_codec()
    driver = Driver(codec, answer_immediately=answer_immediately)
    frames = recording().received
    driver.feed(frames)
    if not answer_immediately:
        # Nothing of the books may have been published while the snapshots were held back.
        assert not any(isinstance(e, (BookSnapshot, BookDelta)) for e in driver.events)
        driver.answer_all(frames[-1].ts + 1)

    # Count the capture independently, by stream suffix and payload "e".
    kinds: Counter[str] = Counter()
    for frame in frames:
        stream, data = payload(frame)
        kinds[data.get("e") or stream.split("@", 1)[1]] += 1
    assert kinds == {"depthUpdate": 177, "bookTicker": 84, "aggTrade": 2, "kline": 2}

    got = Counter(type(e).__name__ for e in driver.events)
    stale = {s: stale_count(s) for s in SYMBOLS}
    # binance.md's worked example: NKNUSDT's first diff (U=499869750, u=499869752) is older
    # than the snapshot (lastUpdateId=499869752) and dropped; the next one is applied.
    assert stale == {"NKNUSDT": 1, "BLZETH": 1, "LRCBTC": 2, "RUNEEUR": 1}
    assert got["BookDelta"] == kinds["depthUpdate"] - sum(stale.values()) == 172
    assert got["BookSnapshot"] == len(SYMBOLS)
    assert got["Ticker"] == kinds["bookTicker"]
    assert got["Trade"] == kinds["aggTrade"]
    assert [s.kind for s in statuses(driver.events)] == ["book_synced"] * len(SYMBOLS)

    for native in SYMBOLS:
        published = [e for e in book_events(driver.events, native) if isinstance(e, BookDelta)]
        assert len(published) == len(depth_diffs()[native]) - stale[native]

    nkn = book_events(driver.events, "NKNUSDT")
    assert isinstance(nkn[0], BookSnapshot) and nkn[0].sequence == 499869752
    assert isinstance(nkn[1], BookDelta)
    assert (nkn[1].first_sequence, nkn[1].sequence, nkn[1].prev_sequence) == (
        499869753,
        499869754,
        499869752,
    )

    # One snapshot request per symbol, at exactly the URL the recorder used.
    assert sorted(f.key for f in driver.fetches) == sorted(SYMBOLS)
    for fetch in driver.fetches:
        assert fetch.url == snapshot_urls()[fetch.key]
    assert driver.other_actions == []

    c = codec.counters
    assert c.frames == len(frames)
    assert c.stale_deltas_dropped == sum(stale.values())
    assert (c.parse_errors, c.book_gaps, c.book_resyncs) == (0, 0, 0)


@pytest.mark.parametrize("answer_immediately", [True, False], ids=["snapshot-now", "snapshot-late"])
def test_capture_books_are_consistent(answer_immediately: bool) -> None:
    codec = new_codec()
    driver = Driver(codec, answer_immediately=answer_immediately)
    driver.feed(recording().received)
    driver.answer_all(recording().received[-1].ts + 1)
    for native in SYMBOLS:
        events = book_events(driver.events, native)
        snapshot, deltas = events[0], events[1:]
        assert isinstance(snapshot, BookSnapshot)
        assert all(isinstance(d, BookDelta) for d in deltas) and deltas
        # The snapshot is the full book, sorted.
        assert snapshot.bids == sorted(snapshot.bids, key=lambda lv: Decimal(lv[0]), reverse=True)
        assert snapshot.asks == sorted(snapshot.asks, key=lambda lv: Decimal(lv[0]))
        recorded = json.loads(snapshot_bodies()[native])
        assert len(snapshot.bids) == len(recorded["bids"])
        assert len(snapshot.asks) == len(recorded["asks"])
        # The chain a consumer verifies.
        prev = snapshot.sequence
        for i, delta in enumerate(deltas):
            assert isinstance(delta, BookDelta)
            assert delta.prev_sequence == prev
            assert delta.first_sequence is not None
            if i == 0:
                assert delta.first_sequence <= prev + 1 <= delta.sequence
            else:
                assert delta.first_sequence == prev + 1
            prev = delta.sequence
        # Each delta carries exactly its diff's levels, digits and exponent as sent
        # (``format(d, "f")``: ``str()`` would write "0.00000000" as "0E-8").
        raw = {d["u"]: d for d in depth_diffs()[native]}
        for delta in deltas:
            assert isinstance(delta, BookDelta)
            diff = raw[delta.sequence]
            assert [[p, q] for p, q in delta.bids] == diff["b"]
            assert [[p, q] for p, q in delta.asks] == diff["a"]
            assert delta.ts_venue == diff["E"] * 1_000_000
        # A consumer's copy is never crossed and ends equal to the test's own book.
        consumer = rebuild(events)
        want = reference_book(native, prev)
        assert consumer.sorted_bids() == want.sorted_bids()
        assert consumer.sorted_asks() == want.sorted_asks()


def test_buffered_deltas_keep_their_receive_time() -> None:
    codec = new_codec()
    driver = Driver(codec, answer_immediately=False)
    frames = recording().received
    driver.feed(frames)
    late = frames[-1].ts + 1
    driver.answer_all(late)
    arrival = {}
    for frame in frames:
        _, data = payload(frame)
        if data.get("e") == "depthUpdate":
            arrival[(data["s"], data["u"])] = frame.ts
    for event in driver.events:
        if isinstance(event, BookDelta):
            assert event.ts_recv == arrival[(event.native_symbol, event.sequence)]
        elif isinstance(event, BookSnapshot):
            assert event.ts_recv == late


def test_trades_and_tickers_from_capture() -> None:
    codec = new_codec()
    driver = Driver(codec, answer_immediately=True)
    driver.feed(recording().received)
    trades = [e for e in driver.events if isinstance(e, Trade)]
    assert [(t.symbol, t.trade_id, t.side, str(t.price), str(t.size)) for t in trades] == [
        ("NKN-USDT", "a15683430", "buy", "0.35280000", "58.00000000"),
        ("LRC-BTC", "a9213679", "buy", "0.00000638", "177.00000000"),
    ]
    assert trades[0].ts_venue == 1633998523963 * 1_000_000
    assert trades[0].native_symbol == "NKNUSDT"

    tickers = [e for e in driver.events if isinstance(e, Ticker)]
    first = tickers[0]
    assert (first.symbol, first.sequence, first.ts_venue) == ("NKN-USDT", 499869768, None)
    assert (str(first.bid_price), str(first.bid_size)) == ("0.35210000", "672.00000000")
    assert (str(first.ask_price), str(first.ask_size)) == ("0.35260000", "3199.00000000")
    assert first.ts_recv == 1633998513377805000


def test_plain_trade_stream() -> None:
    codec = new_codec()
    frame = json.dumps(
        {
            "stream": "blzeth@trade",
            "data": {
                "e": "trade",
                "E": 1672515782136,
                "s": "BLZETH",
                "t": 12345,
                "p": "0.00006547",
                "q": "100.00000000",
                "T": 1672515782135,
                "m": True,
                "M": True,
            },
        }
    )
    [trade] = codec.receive(frame, 7)
    assert isinstance(trade, Trade)
    assert (trade.trade_id, trade.side, trade.symbol) == ("12345", "sell", "BLZ-ETH")
    assert trade.ts_venue == 1672515782135 * 1_000_000
    assert trade.ts_recv == 7
    assert encode(trade).count(b'"0.00006547"') == 1


def test_wire_messages() -> None:
    codec = new_codec()
    driver = Driver(codec, answer_immediately=True)
    driver.feed(recording().received)
    messages = [to_message(e) for e in driver.events]
    ids = [m.msg_id for m in messages]
    assert len(set(ids)) == len(ids), "two different events share a message id"
    subjects = {m.subject for m in messages}
    assert "market.binance.nkn-usdt.l2_orderbook" in subjects
    assert "market.binance.rune-eur.l2_orderbook" in subjects
    assert "market.binance.nkn-usdt.ticker" in subjects
    assert "market.binance.lrc-btc.trade" in subjects
    assert "market.binance._status" in subjects

    # The venue's exact decimal strings survive into the JSON body.
    nkn = book_events(driver.events, "NKNUSDT")
    assert b'["0.35130000","6195.00000000"]' in encode(nkn[0])  # in the REST snapshot
    assert b'"bids":[["0.35170000","4265.00000000"]]' in encode(nkn[1])
    assert b'"asks":[["0.35290000","10968.00000000"]]' in encode(nkn[1])
    ticker = next(e for e in driver.events if isinstance(e, Ticker))
    assert b'"bid_price":"0.35210000"' in encode(ticker)
    assert subject(ticker) == "market.binance.nkn-usdt.ticker"


def test_wire_keeps_zero_size_strings() -> None:
    codec = new_codec()
    driver = Driver(codec, answer_immediately=True)
    driver.feed(recording().received)
    deletion = next(
        e
        for e in driver.events
        if isinstance(e, BookDelta) and any(Decimal(size) == 0 for _, size in e.bids + e.asks)
    )
    assert b'"0.00000000"' in encode(deletion)


# ---------------------------------------------------------------------------------------------
# Gaps and resyncs


def test_gap_resyncs_only_that_symbol() -> None:
    frames = list(recording().received)
    nkn_diffs = [i for i, f in enumerate(frames) if payload(f)[0] == "nknusdt@depth@100ms"]
    # NKN's 61st diff arrives after all four books are synced; drop it from the stream.
    dropped_index = nkn_diffs[60]
    _, dropped = payload(frames[dropped_index])
    del frames[dropped_index]
    after = nkn_diffs[61] - 1  # where the next NKN diff now sits

    codec = new_codec()
    driver = Driver(codec, answer_immediately=True)
    driver.feed(frames[:after])
    assert codec.counters.book_gaps == 0
    fetches_before = len(driver.fetches)

    # The diff after the hole: a gap, a resync and a new snapshot request.
    driver.answer_immediately = False
    out = driver.feed(frames[after : after + 1])
    assert [(s.kind, s.symbol) for s in statuses(out)] == [
        ("book_gap", "NKN-USDT"),
        ("book_resync", "NKN-USDT"),
    ]
    assert f"expected U={dropped['U']}" in statuses(out)[0].detail
    assert not any(isinstance(e, BookDelta) for e in out)
    assert (codec.counters.book_gaps, codec.counters.book_resyncs) == (1, 1)
    assert len(driver.fetches) == fetches_before + 1
    assert driver.fetches[-1].key == "NKNUSDT"

    # Until a new snapshot arrives no NKN book event is published; other symbols go on.
    rest = frames[after + 1 :]
    cut = len(rest) // 2
    held = driver.feed(rest[:cut])
    assert book_events(held, "NKNUSDT") == []
    other_deltas = [e for e in held if isinstance(e, BookDelta)]
    assert other_deltas and all(e.native_symbol != "NKNUSDT" for e in other_deltas)
    assert codec.counters.book_gaps == 1  # still buffering, no further gaps

    # The recorded snapshot predates the hole: too old, fetched again (step 3).
    stale_answer = driver.answer_all(rest[cut - 1].ts + 1)
    assert [s.kind for s in statuses(stale_answer)] == ["book_resync"]
    assert "older than first buffered" in statuses(stale_answer)[0].detail
    assert book_events(stale_answer, "NKNUSDT") == []
    assert [f.key for f in driver.pending] == ["NKNUSDT"]

    # A good snapshot taken right at the hole: the book resumes and the chain holds.
    good = reference_book("NKNUSDT", dropped["u"])
    driver.bodies["NKNUSDT"] = json.dumps(
        {
            "lastUpdateId": dropped["u"],
            "bids": [[str(p), str(q)] for p, q in good.sorted_bids()],
            "asks": [[str(p), str(q)] for p, q in good.sorted_asks()],
        }
    )
    resumed = driver.answer_all(rest[cut - 1].ts + 2)
    events = book_events(resumed, "NKNUSDT")
    assert isinstance(events[0], BookSnapshot) and events[0].sequence == dropped["u"]
    assert len(events) > 2
    driver.answer_immediately = True
    driver.feed(rest[cut:])
    events = book_events(driver.events, "NKNUSDT")
    resync_at = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, BookSnapshot) and e.sequence == dropped["u"]
    )
    before, after_resync = events[:resync_at], events[resync_at:]
    assert before[-1].sequence == dropped["U"] - 1  # the last delta before the hole
    prev = after_resync[0].sequence
    for delta in after_resync[1:]:
        assert isinstance(delta, BookDelta) and delta.prev_sequence == prev
        prev = delta.sequence
    final = rebuild(after_resync)
    want = reference_book("NKNUSDT", prev)
    assert final.sorted_bids() == want.sorted_bids()
    assert final.sorted_asks() == want.sorted_asks()
    assert codec.counters.book_gaps == 1


def test_gap_while_buffering_restarts_the_buffer() -> None:
    codec = new_codec(symbols=["BLZETH"])
    assert codec.receive(depth_frame("BLZETH", 10, 12, [("1", "1")]), 1) == []
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot)
    assert codec.receive(depth_frame("BLZETH", 13, 13), 2) == []
    out = codec.receive(depth_frame("BLZETH", 15, 16), 3)  # 14 is missing
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]
    assert codec.actions() == []  # the snapshot already asked for is still awaited
    # A snapshot bridging to the old buffer start is now too old...
    body = json.dumps({"lastUpdateId": 12, "bids": [["1", "1"]], "asks": [["2", "1"]]})
    out = codec.snapshot_received("BLZETH", body.encode(), 4)
    assert [s.kind for s in statuses(out)] == ["book_resync"]
    assert codec.actions() == [fetch]
    # ...one at 14 is good: U=15 of the new first diff is lastUpdateId + 1.
    body = json.dumps({"lastUpdateId": 14, "bids": [["1", "1"]], "asks": [["2", "1"]]})
    out = codec.snapshot_received("BLZETH", body.encode(), 5)
    snapshot, delta, synced = out
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == 14
    assert isinstance(delta, BookDelta) and (delta.first_sequence, delta.prev_sequence) == (15, 14)
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"


def test_stale_and_duplicate_diffs_are_dropped() -> None:
    codec = new_codec(symbols=["BLZETH"])
    codec.receive(depth_frame("BLZETH", 10, 12), 1)
    codec.actions()
    body = json.dumps({"lastUpdateId": 11, "bids": [["1", "1"]], "asks": [["2", "1"]]})
    out = codec.snapshot_received("BLZETH", body.encode(), 2)
    assert [type(e) for e in out] == [BookSnapshot, BookDelta, VenueStatus]
    assert out[1].first_sequence == 10 and out[1].prev_sequence == 11  # overlaps the snapshot
    assert codec.receive(depth_frame("BLZETH", 10, 12), 3) == []  # a repeat
    assert codec.counters.stale_deltas_dropped == 1
    [delta] = codec.receive(depth_frame("BLZETH", 13, 14), 4)
    assert isinstance(delta, BookDelta) and delta.prev_sequence == 12
    # After the first applied diff overlap is no longer allowed: U must be prev u + 1.
    out = codec.receive(depth_frame("BLZETH", 14, 15), 5)
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]


def test_crossed_book_resyncs() -> None:
    codec = new_codec(symbols=["BLZETH"])
    codec.receive(depth_frame("BLZETH", 5, 5), 1)
    codec.actions()
    body = json.dumps({"lastUpdateId": 5, "bids": [["100", "1"]], "asks": [["101", "1"]]})
    codec.snapshot_received("BLZETH", body.encode(), 2)
    out = codec.receive(depth_frame("BLZETH", 6, 6, bids=[("101.5", "1")]), 3)
    [resync] = out  # no delta published
    assert resync.kind == "book_resync" and "crossed" in resync.detail
    assert codec.counters.book_resyncs == 1
    assert codec.counters.book_gaps == 0
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot) and fetch.key == "BLZETH"
    # Nothing is published until the new snapshot.
    assert codec.receive(depth_frame("BLZETH", 7, 7, asks=[("102", "0")]), 4) == []


def test_crossed_snapshot_is_fetched_again() -> None:
    codec = new_codec(symbols=["BLZETH"])
    codec.receive(depth_frame("BLZETH", 5, 5), 1)
    codec.actions()
    body = json.dumps({"lastUpdateId": 5, "bids": [["102", "1"]], "asks": [["101", "1"]]})
    [status] = codec.snapshot_received("BLZETH", body.encode(), 2)
    assert status.kind == "book_resync" and "crossed" in status.detail
    assert [type(a) for a in codec.actions()] == [FetchSnapshot]


def test_buffer_overflow_resyncs() -> None:
    codec = BinanceCodec("binance", subscriptions(["BLZETH"]), ENDPOINTS, max_buffered_diffs=3)
    codec.connected(0)
    codec.actions()
    for u in range(1, 4):
        assert codec.receive(depth_frame("BLZETH", u, u), u) == []
    assert len(codec.actions()) == 1
    [status] = codec.receive(depth_frame("BLZETH", 4, 4), 4)
    assert status.kind == "book_resync" and "buffered" in status.detail
    assert codec.counters.book_resyncs == 1
    assert codec.actions() == []  # the first request is still out
    # The answer is checked against the new buffer, which starts at U=4.
    body = json.dumps({"lastUpdateId": 3, "bids": [["1", "1"]], "asks": [["2", "1"]]})
    out = codec.snapshot_received("BLZETH", body.encode(), 5)
    assert [type(e) for e in out] == [BookSnapshot, BookDelta, VenueStatus]


def test_snapshot_failures_are_retried() -> None:
    codec = new_codec(symbols=["BLZETH"])
    codec.receive(depth_frame("BLZETH", 5, 5), 100)
    [fetch] = codec.actions()
    [status] = codec.snapshot_failed("BLZETH", "HTTP 429")
    assert status.kind == "book_resync" and "HTTP 429" in status.detail
    assert status.ts_recv == 100
    assert codec.actions() == [fetch]
    # An error body from the venue.
    error = b'{"code":-1121,"msg":"Invalid symbol."}'
    [status] = codec.snapshot_received("BLZETH", error, 101)
    assert status.kind == "venue_error" and "-1121" in status.detail
    assert codec.actions() == [fetch]
    # A body that is not a snapshot at all.
    [status] = codec.snapshot_received("BLZETH", b"<html>", 102)
    assert status.kind == "parse_error"
    assert codec.actions() == [fetch]
    assert codec.counters.parse_errors == 1
    # Unknown keys and answers nobody is waiting for are ignored.
    assert codec.snapshot_received("NOPE", b"{}", 103) == []
    assert codec.snapshot_failed("NOPE", "x") == []


def test_reconnect_resets_books() -> None:
    codec = new_codec(symbols=["BLZETH"])
    codec.receive(depth_frame("BLZETH", 5, 5), 1)
    codec.actions()
    body = json.dumps({"lastUpdateId": 5, "bids": [["1", "1"]], "asks": [["2", "1"]]})
    codec.snapshot_received("BLZETH", body.encode(), 2)
    assert len(codec.receive(depth_frame("BLZETH", 6, 6), 3)) == 1
    codec.connected(4)
    assert [type(a) for a in codec.actions()] == [SendFrame]
    # A late answer from the old connection is ignored, nothing is published before a
    # new snapshot, and the first diff asks for one.
    assert codec.snapshot_received("BLZETH", body.encode(), 5) == []
    assert codec.receive(depth_frame("BLZETH", 9, 9), 6) == []
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot)
    body = json.dumps({"lastUpdateId": 9, "bids": [["1", "1"]], "asks": [["2", "1"]]})
    out = codec.snapshot_received("BLZETH", body.encode(), 7)
    assert isinstance(out[0], BookSnapshot) and out[0].sequence == 9


# ---------------------------------------------------------------------------------------------
# Resync asked for from outside (Codec.resync) and Codec.synced


def snapshot_at(native: str, u: int) -> str:
    """A REST depth body as the venue would give it at update ``u``: the recorded snapshot
    plus the capture's diffs up to ``u``."""
    book = reference_book(native, u)
    return json.dumps(
        {
            "lastUpdateId": u,
            "bids": [[str(p), str(q)] for p, q in book.sorted_bids()],
            "asks": [[str(p), str(q)] for p, q in book.sorted_asks()],
        }
    )


def synced_midway() -> tuple[BinanceCodec, Driver, list[Frame], int]:
    """A codec fed the capture up to NKN's 61st diff, all four books synced; returns it, its
    driver, the frames not fed yet and the ``u`` of the last NKN diff fed."""
    frames = recording().received
    nkn = [i for i, f in enumerate(frames) if payload(f)[0] == "nknusdt@depth@100ms"]
    at = nkn[60]
    codec = new_codec()
    assert not codec.synced  # no book has its snapshot yet
    driver = Driver(codec, answer_immediately=True)
    driver.feed(frames[:at])
    assert codec.synced
    return codec, driver, list(frames[at:]), payload(frames[nkn[59]])[1]["u"]


def test_resync_refetches_that_book_only() -> None:
    codec, driver, rest, seen = synced_midway()
    fetches_before = len(driver.fetches)
    driver.answer_immediately = False

    out = codec.resync("NKN-USDT", "consumer dropped l2d:123", rest[0].ts - 1)
    [status] = out
    assert (status.kind, status.symbol, status.native_symbol) == (
        "book_resync",
        "NKN-USDT",
        "NKNUSDT",
    )
    assert "consumer dropped l2d:123" in status.detail
    assert status.ts_recv == rest[0].ts - 1
    assert codec.counters.book_resyncs == 1
    [fetch] = codec.actions()
    assert fetch == FetchSnapshot(key="NKNUSDT", url=snapshot_urls()["NKNUSDT"])
    driver.fetches.append(fetch)
    driver.pending.append(fetch)
    assert not codec.synced

    # Until the snapshot: NKN diffs are buffered, none published; NKN's tickers and trades
    # and the other books go on.
    cut = len(rest) // 2
    held = driver.feed(rest[:cut])
    assert book_events(held, "NKNUSDT") == []
    others = [e for e in held if isinstance(e, BookDelta)]
    assert others and all(e.native_symbol != "NKNUSDT" for e in others)
    nkn_tickers = [e for e in held if isinstance(e, Ticker) and e.native_symbol == "NKNUSDT"]
    assert len(nkn_tickers) == sum(payload(f)[0] == "nknusdt@bookTicker" for f in rest[:cut]) > 0
    assert statuses(held) == []
    assert not codec.synced

    # The recorded snapshot is older than the first diff buffered since: fetched again.
    old = driver.answer_all(rest[cut - 1].ts + 1)
    assert [s.kind for s in statuses(old)] == ["book_resync"]
    assert "older than first buffered" in statuses(old)[0].detail
    assert book_events(old, "NKNUSDT") == [] and not codec.synced
    assert [f.key for f in driver.pending] == ["NKNUSDT"]

    # A snapshot at the third NKN diff since the resync bridges the buffer: it is published,
    # then the buffered diffs after it, in one chain.
    buffered = [payload(f)[1] for f in rest[:cut] if payload(f)[0] == "nknusdt@depth@100ms"]
    assert buffered[0]["U"] == seen + 1
    snap_u = buffered[2]["u"]
    driver.bodies["NKNUSDT"] = snapshot_at("NKNUSDT", snap_u)
    resumed = driver.answer_all(rest[cut - 1].ts + 2)
    events = book_events(resumed, "NKNUSDT")
    assert isinstance(events[0], BookSnapshot) and events[0].sequence == snap_u
    assert [e.sequence for e in events[1:]] == [d["u"] for d in buffered[3:]]
    assert statuses(resumed)[-1].kind == "book_synced"
    assert codec.synced
    assert len(driver.fetches) == fetches_before + 2

    driver.answer_immediately = True
    driver.feed(rest[cut:])
    after = book_events(driver.events, "NKNUSDT")
    after = after[after.index(events[0]) :]
    prev = snap_u
    for delta in after[1:]:
        assert isinstance(delta, BookDelta) and delta.prev_sequence == prev
        prev = delta.sequence
    assert prev == depth_diffs()["NKNUSDT"][-1]["u"]
    final = rebuild(after)
    want = reference_book("NKNUSDT", prev)
    assert final.sorted_bids() == want.sorted_bids()
    assert final.sorted_asks() == want.sorted_asks()
    c = codec.counters
    assert (c.book_gaps, c.book_resyncs, c.parse_errors) == (0, 2, 0)
    assert driver.other_actions == []


def test_resync_snapshot_before_any_diff() -> None:
    codec, driver, rest, seen = synced_midway()
    [status] = codec.resync("NKN-USDT", "gap downstream", 1)
    assert status.kind == "book_resync"
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot)
    # The answer comes before any NKN diff: one taken at the last diff seen is published
    # alone, and the next live diff (U = seen + 1) bridges it.
    body = snapshot_at("NKNUSDT", seen).encode()
    snapshot, synced = codec.snapshot_received("NKNUSDT", body, 3)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == seen
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    assert codec.synced
    events = [snapshot, *book_events(driver.feed(rest), "NKNUSDT")]
    # Every NKN diff since the resync is published, in one chain from the snapshot.
    assert len(events) - 1 == sum(payload(f)[0] == "nknusdt@depth@100ms" for f in rest)
    assert isinstance(events[1], BookDelta) and events[1].first_sequence == seen + 1
    prev = seen
    for delta in events[1:]:
        assert isinstance(delta, BookDelta) and delta.prev_sequence == prev
        prev = delta.sequence
    final = rebuild(events)
    want = reference_book("NKNUSDT", prev)
    assert final.sorted_bids() == want.sorted_bids()
    assert final.sorted_asks() == want.sorted_asks()
    assert codec.counters.book_gaps == 0


def test_resync_snapshot_before_any_diff_too_old() -> None:
    codec, driver, rest, seen = synced_midway()
    driver.answer_immediately = False
    codec.resync("NKN-USDT", "gap downstream", 1)
    [fetch] = codec.actions()
    # The recorded snapshot comes back before any NKN diff and is older than the last diff
    # seen: the next diff (U = seen + 1) could not bridge it. Dropped; no new request yet.
    old = snapshot_bodies()["NKNUSDT"].encode()
    [status] = codec.snapshot_received("NKNUSDT", old, 2)
    assert status.kind == "book_resync"
    assert f"older than the last diff seen u={seen}" in status.detail
    assert codec.actions() == [] and not codec.synced
    # The next NKN diff asks again, as after connecting; that answer bridges the buffer.
    first = next(i for i, f in enumerate(rest) if payload(f)[0] == "nknusdt@depth@100ms")
    held = driver.feed(rest[: first + 1])
    assert book_events(held, "NKNUSDT") == []
    assert driver.pending == [fetch]
    diff = payload(rest[first])[1]
    assert diff["U"] == seen + 1
    driver.bodies["NKNUSDT"] = snapshot_at("NKNUSDT", seen)
    snapshot, delta, synced = driver.answer_all(rest[first].ts + 1)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == seen
    assert isinstance(delta, BookDelta) and (delta.prev_sequence, delta.sequence) == (
        seen,
        diff["u"],
    )
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    assert codec.synced
    assert codec.counters.book_gaps == 0


def test_resync_of_unknown_or_bookless_symbol_is_a_no_op() -> None:
    codec, _, _, _ = synced_midway()
    before = (codec.counters.book_resyncs, codec.counters.stale_deltas_dropped)
    assert codec.resync("BTC-USDT", "x", 1) == []
    assert codec.resync("NKNUSDT", "x", 1) == []  # a native spelling is no canonical symbol
    assert codec.actions() == []
    assert (codec.counters.book_resyncs, codec.counters.stale_deltas_dropped) == before
    assert codec.synced
    # A connection without books: always synced, nothing to resync.
    trades = new_codec(types=frozenset({DataType.TRADE, DataType.TICKER}))
    assert trades.synced
    assert trades.resync("NKN-USDT", "x", 1) == []
    assert trades.actions() == []
    Driver(trades, answer_immediately=True).feed(recording().received)
    assert trades.synced and trades.counters.book_resyncs == 0


def test_resync_while_a_snapshot_is_awaited() -> None:
    codec = new_codec(symbols=["BLZETH"])
    assert not codec.synced
    # Before any diff: the book starts buffering and a snapshot is asked for at once.
    [status] = codec.resync("BLZ-ETH", "x", 1)
    assert status.kind == "book_resync"
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot) and fetch.key == "BLZETH"
    assert codec.receive(depth_frame("BLZETH", 10, 12), 2) == []
    # Again while that fetch is out: the buffer is dropped, the same request awaited.
    [status] = codec.resync("BLZ-ETH", "y", 3)
    assert status.kind == "book_resync"
    assert codec.actions() == []
    assert codec.receive(depth_frame("BLZETH", 13, 14), 4) == []
    body = json.dumps({"lastUpdateId": 12, "bids": [["1", "1"]], "asks": [["2", "1"]]})
    snapshot, delta, synced = codec.snapshot_received("BLZETH", body.encode(), 5)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == 12
    assert isinstance(delta, BookDelta) and (delta.first_sequence, delta.prev_sequence) == (13, 12)
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    assert codec.synced
    # A reconnect: not synced until the new snapshot.
    codec.connected(6)
    assert not codec.synced


# ---------------------------------------------------------------------------------------------
# Control frames and garbage


@pytest.mark.parametrize(
    "frame",
    [
        '{"e":"serverShutdown","E":1770123456789}',
        '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
    ],
    ids=["bare", "combined"],
)
def test_server_shutdown_reconnects(frame: str) -> None:
    codec = new_codec()
    [status] = codec.receive(frame, 42)
    assert isinstance(status, VenueStatus)
    assert status.kind == "server_shutdown"
    assert status.ts_venue == 1770123456789 * 1_000_000
    assert status.symbol == ""
    assert codec.actions() == [Reconnect("server shutdown", planned=True)]
    to_message(status)


def test_control_frames() -> None:
    codec = new_codec()
    assert codec.receive('{"result":null,"id":1}', 1) == []
    assert codec.receive('{"result":["nknusdt@trade"],"id":3}', 2) == []
    [err] = codec.receive('{"code":2,"msg":"Invalid request: too many parameters","id":7}', 3)
    assert err.kind == "venue_error" and "too many parameters" in err.detail
    [err] = codec.receive('{"error":{"code":3,"msg":"Invalid JSON"},"id":null}', 4)
    assert err.kind == "venue_error" and "Invalid JSON" in err.detail
    kline = next(f for f in recording().received if "@kline_1m" in f.text)
    assert codec.receive(kline.text, 5) == []
    assert codec.receive('{"stream":"nknusdt@ticker","data":{"e":"24hrTicker"}}', 6) == []
    # A stream of a symbol this codec did not subscribe (e.g. a shared replay) is ignored.
    other = kline.text.replace("nknusdt", "btcusdt")
    assert codec.receive(other, 7) == []
    assert codec.receive(depth_frame("BTCUSDT", 1, 2), 8) == []
    assert codec.actions() == []
    assert codec.counters.parse_errors == 0
    assert codec.counters.frames == 8


def test_unsubscribed_data_types_are_ignored() -> None:
    codec = new_codec(types=frozenset({DataType.TICKER}))
    events = []
    for frame in recording().received:
        events += codec.receive(frame.text, frame.ts)
    assert codec.actions() == []  # no book wanted, no snapshot asked for
    assert {type(e) for e in events} == {Ticker}


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\xff",
        "{",
        "[]",
        '{"stream":"x@trade","data":{"p":1}}',
        "{}",
        "null",
        '"text"',
        '{"stream":"nknusdt@depth@100ms"}',
        '{"stream":"nknusdt@bookTicker","data":{"u":1,"b":"x","B":"1","a":"1","A":"1"}}',
        '{"stream":"nknusdt@aggTrade","data":[1,2]}',
        '{"stream":5,"data":{}}',
        depth_frame("NKNUSDT", 5, 4),
        depth_frame("NKNUSDT", 5, 6, bids=[("NaN", "1")]),
        depth_frame("NKNUSDT", 5, 6, asks=[("1", "-2")]),
    ],
)
def test_garbage_is_a_parse_error(frame: str | bytes) -> None:
    codec = new_codec()
    [status] = codec.receive(frame, 99)
    assert isinstance(status, VenueStatus)
    assert status.kind == "parse_error"
    assert status.detail and len(status.detail) <= 200
    assert codec.counters.parse_errors == 1
    assert codec.counters.frames == 1
    assert codec.actions() == []
    to_message(status)
    # The codec is unharmed: the capture still decodes completely.
    driver = Driver(codec, answer_immediately=True)
    driver.feed(recording().received)
    assert sum(isinstance(e, BookDelta) for e in driver.events) == 172
    assert codec.counters.parse_errors == 1


# ---------------------------------------------------------------------------------------------
# Subscriptions, sharding, symbols


def test_subscribe_frames_are_batched() -> None:
    natives = [f"SYM{i}USDT" for i in range(100)]
    [codec] = ADAPTER.make_codecs("binance", subscriptions(natives), ENDPOINTS)
    assert codec.connected(0) == []
    frames = codec.actions()
    assert all(isinstance(f, SendFrame) for f in frames)
    requests = [json.loads(f.text) for f in frames if isinstance(f, SendFrame)]
    assert [len(r["params"]) for r in requests] == [200, 100]
    assert [r["id"] for r in requests] == [1, 2]
    assert all(r["method"] == "SUBSCRIBE" for r in requests)
    streams = [s for r in requests for s in r["params"]]
    want = {f"sym{i}usdt@{kind}" for i in range(100) for kind in ("trade", "bookTicker")}
    want |= {f"sym{i}usdt@depth@100ms" for i in range(100)}
    assert set(streams) == want and len(streams) == len(want)
    # A reconnect subscribes again from id 1.
    codec.connected(1)
    assert [json.loads(f.text)["id"] for f in codec.actions() if isinstance(f, SendFrame)] == [
        1,
        2,
    ]
    assert max(len(r["params"]) for r in requests) <= MAX_PARAMS_PER_SUBSCRIBE


def test_sharding_over_1024_streams() -> None:
    natives = [f"SYM{i}USDT" for i in range(400)]
    codecs = ADAPTER.make_codecs("binance", subscriptions(natives), ENDPOINTS)
    assert len(codecs) == 2
    per_codec = []
    for codec in codecs:
        assert isinstance(codec, BinanceCodec)
        assert codec.url == "wss://stream.binance.com:9443/stream"
        assert codec.max_send_rate == 4.0
        assert codec.max_lifetime == 23.5 * 3600
        assert codec.ping_interval is None
        assert codec.venue == "binance"
        assert len(codec.streams) <= 1024
        per_codec.append({s.split("@")[0] for s in codec.streams})
    assert sum(len(c.streams) for c in codecs if isinstance(c, BinanceCodec)) == 1200
    assert not per_codec[0] & per_codec[1]  # a symbol never spans two connections
    assert ADAPTER.make_codecs("binance", [], ENDPOINTS) == []


def test_make_codecs_merges_and_validates() -> None:
    subs = [
        Subscription("btcusdt", "BTC-USDT", frozenset({DataType.TRADE})),
        Subscription("BTCUSDT", "BTC-USDT", frozenset({DataType.TICKER})),
    ]
    [codec] = ADAPTER.make_codecs("bn", subs, ENDPOINTS)
    assert isinstance(codec, BinanceCodec)
    assert sorted(codec.streams) == ["btcusdt@bookTicker", "btcusdt@trade"]
    with pytest.raises(ValueError, match="funding_rate"):
        ADAPTER.make_codecs(
            "bn",
            [Subscription("BTCUSDT", "BTC-USDT", frozenset({DataType.FUNDING_RATE}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="mapped to both"):
        ADAPTER.make_codecs(
            "bn",
            [subs[0], Subscription("BTCUSDT", "XBT-USDT", frozenset({DataType.TRADE}))],
            ENDPOINTS,
        )


def test_events_carry_configured_venue_and_endpoints() -> None:
    endpoints = Endpoints(ws_url="ws://127.0.0.1:9/stream", rest_url="http://127.0.0.1:9/")
    subs = [Subscription("nknusdt", "NKN-USDT", ALL_TYPES)]
    [codec] = ADAPTER.make_codecs("binance-replay", subs, endpoints)
    assert codec.url == "ws://127.0.0.1:9/stream"
    codec.connected(0)
    codec.actions()
    frame = next(f for f in recording().received if "nknusdt@depth" in f.text)
    codec.receive(frame.text, frame.ts)
    [fetch] = codec.actions()
    assert fetch == FetchSnapshot(
        "NKNUSDT", "http://127.0.0.1:9/api/v3/depth?symbol=NKNUSDT&limit=1000"
    )
    body = snapshot_bodies()["NKNUSDT"].encode()
    snapshot = codec.snapshot_received("NKNUSDT", body, 1)[0]
    assert (snapshot.venue, snapshot.symbol, snapshot.native_symbol) == (
        "binance-replay",
        "NKN-USDT",
        "NKNUSDT",
    )


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("BTCUSDT", "BTC-USDT"),
        ("btcusdt", "BTC-USDT"),
        ("ETHBTC", "ETH-BTC"),
        ("BTCFDUSD", "BTC-FDUSD"),
        ("BTCTUSD", "BTC-TUSD"),
        ("USDCUSDT", "USDC-USDT"),
        ("NKNUSDT", "NKN-USDT"),
        ("BLZETH", "BLZ-ETH"),
        ("LRCBTC", "LRC-BTC"),
        ("RUNEEUR", "RUNE-EUR"),
        ("USDTTRY", "USDT-TRY"),
        ("1000SATSUSDT", "1000SATS-USDT"),
        ("FOOBAR", None),
        ("USDT", None),
        ("", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


def test_adapter_is_registered() -> None:
    assert adapters.load("binance") is ADAPTER
    assert ADAPTER.name == "binance"
    assert ADAPTER.data_types == ALL_TYPES
    assert ADAPTER.default_endpoints == Endpoints(
        ws_url="wss://stream.binance.com:9443/stream", rest_url="https://api.binance.com"
    )
