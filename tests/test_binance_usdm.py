"""Tests of the Binance USD-M futures codec (adapters/binance_usdm.py), driven by captures.

``tests/data/binance_usdm/`` (see its README.md):

* ``cryptofeed_futures.jsonl``: a real 2021 USD-M combined stream (``depth@100ms`` with
  ``pu``, ``bookTicker``, ``aggTrade``, two ``kline_1m``) for AKROUSDT and CTKUSDT, with the
  REST ``/fapi/v1/depth`` snapshots taken during the same session;
* ``ccxt_usdm.jsonl``: real 2026 raw-endpoint (bare) frames: BTCUSDT ``depthUpdate`` x 11
  with a REST snapshot (limit 5), and two ``trade`` events from ``/public``;
* ``nautilus_usdm.jsonl``: doc-shaped fixtures for ``markPriceUpdate``, ``forceOrder``,
  ``aggTrade`` and ``bookTicker`` (no real capture of the first two exists here).

The tests count what the captures hold independently (from the raw JSON) and check the
codec's output against that. Every frame is fed to every codec ``make_codecs`` returns,
as the replay venue does, so the route split is exercised on the way.
"""

from __future__ import annotations

import itertools
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
from adapters.binance_usdm import (
    ADAPTER,
    MARKET,
    MAX_PARAMS_PER_SUBSCRIBE,
    PUBLIC,
    BinanceUsdmCodec,
    Route,
    route_url,
)
from relay.book import OrderBook, parse_levels
from relay.captures import Frame, Recording, load
from relay.codec import Codec, Endpoints, FetchSnapshot, Reconnect, SendFrame, Subscription
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
from relay.wire import encode, msg_id, subject, to_message

DATA = Path(__file__).parent / "data" / "binance_usdm"
SYMBOLS = ("AKROUSDT", "CTKUSDT")
ALL_TYPES = ADAPTER.data_types
BOOK_TYPES = frozenset({DataType.L2_ORDERBOOK, DataType.TICKER})
ENDPOINTS = ADAPTER.default_endpoints
MS = 1_000_000


# ---------------------------------------------------------------------------------------------
# Capture helpers


@cache
def recording(name: str = "cryptofeed_futures") -> Recording:
    return load(DATA / f"{name}.jsonl")


def _symbol_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["symbol"][0]


@cache
def snapshot_bodies(name: str = "cryptofeed_futures") -> dict[str, str]:
    """Native symbol → recorded REST depth body."""
    return {_symbol_of(r.url): r.body for r in recording(name).http}


def payload(frame: Frame) -> dict[str, Any]:
    """The event payload of a frame, combined (``data``) or bare."""
    message = json.loads(frame.text)
    return message.get("data", message)


@cache
def depth_diffs(name: str = "cryptofeed_futures") -> dict[str, list[dict[str, Any]]]:
    """The capture's depthUpdate payloads per symbol, in arrival order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for frame in recording(name).received:
        data = payload(frame)
        if data.get("e") == "depthUpdate":
            out.setdefault(data["s"], []).append(data)
    return out


def stale_count(symbol: str, name: str = "cryptofeed_futures") -> int:
    """Diffs the sync must drop: ``u < lastUpdateId`` of the recorded snapshot."""
    last_id = json.loads(snapshot_bodies(name)[symbol])["lastUpdateId"]
    return sum(1 for d in depth_diffs(name)[symbol] if d["u"] < last_id)


def subscriptions(
    symbols: Iterable[str] = SYMBOLS,
    types: frozenset[DataType] = ALL_TYPES,
    contract_size: Decimal | None = None,
) -> list[Subscription]:
    out = []
    for native in symbols:
        canonical = ADAPTER.canonical_symbol(native)
        assert canonical is not None
        out.append(Subscription(native, canonical, types, contract_size))
    return out


def new_codecs(
    symbols: Iterable[str] = SYMBOLS,
    types: frozenset[DataType] = ALL_TYPES,
    contract_size: Decimal | None = None,
) -> list[BinanceUsdmCodec]:
    """The codecs ``make_codecs`` builds for ``symbols``, connected."""
    codecs = ADAPTER.make_codecs(
        "binance_usdm", subscriptions(symbols, types, contract_size), ENDPOINTS
    )
    out = []
    for codec in codecs:
        assert isinstance(codec, BinanceUsdmCodec)
        codec.connected(0)
        codec.actions()  # the SUBSCRIBE frames, tested separately
        out.append(codec)
    return out


def book_codec(symbols: Iterable[str] = ("AKROUSDT",)) -> BinanceUsdmCodec:
    [codec] = new_codecs(symbols, frozenset({DataType.L2_ORDERBOOK}))
    assert codec.route == PUBLIC
    return codec


class Driver:
    """Feeds frames to codecs and answers their FetchSnapshot actions when told to."""

    def __init__(
        self,
        codecs: Sequence[Codec],
        *,
        answer_immediately: bool,
        bodies: dict[str, str] | None = None,
    ) -> None:
        self.codecs = list(codecs)
        self.answer_immediately = answer_immediately
        self.events: list[MarketEvent] = []
        self.pending: list[tuple[Codec, FetchSnapshot]] = []
        self.fetches: list[FetchSnapshot] = []
        self.other_actions: list[object] = []
        self.bodies = dict(snapshot_bodies() if bodies is None else bodies)

    def _take_actions(self, codec: Codec) -> None:
        for action in codec.actions():
            if isinstance(action, FetchSnapshot):
                self.fetches.append(action)
                self.pending.append((codec, action))
            else:
                self.other_actions.append(action)

    def answer_all(self, now_ns: int) -> list[MarketEvent]:
        """Answer the FetchSnapshots pending now with ``self.bodies``; requests the answers
        cause (a snapshot found too old) stay pending for the next call."""
        out: list[MarketEvent] = []
        pending, self.pending = self.pending, []
        for codec, action in pending:
            body = self.bodies[action.key].encode()
            out += codec.snapshot_received(action.key, body, now_ns)
            self._take_actions(codec)
        self.events += out
        return out

    def feed(self, frames: Iterable[Frame]) -> list[MarketEvent]:
        """Receive ``frames`` on every codec; returns the events they (and any snapshots
        answered) gave."""
        out: list[MarketEvent] = []
        for frame in frames:
            for codec in self.codecs:
                events = codec.receive(frame.text, frame.ts)
                self.events += events
                out += events
                self._take_actions(codec)
            if self.answer_immediately:
                out += self.answer_all(frame.ts)
        return out


def book_events(events: Sequence[MarketEvent], native: str) -> list[BookSnapshot | BookDelta]:
    return [
        e for e in events if isinstance(e, (BookSnapshot, BookDelta)) and e.native_symbol == native
    ]


def statuses(events: Iterable[MarketEvent], kind: str | None = None) -> list[VenueStatus]:
    return [e for e in events if isinstance(e, VenueStatus) and (kind is None or e.kind == kind)]


def _levels(raw: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in raw]


def reference_book(native: str, through_u: int, name: str = "cryptofeed_futures") -> OrderBook:
    """The book built by the test itself: recorded snapshot + raw diffs up to ``through_u``."""
    snap = json.loads(snapshot_bodies(name)[native])
    book = OrderBook()
    book.apply_snapshot(_levels(snap["bids"]), _levels(snap["asks"]))
    for diff in depth_diffs(name)[native]:
        if snap["lastUpdateId"] <= diff["u"] <= through_u:
            book.apply_delta(_levels(diff["b"]), _levels(diff["a"]))
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
    prev: int,
    bids: Sequence[tuple[str, str]] = (),
    asks: Sequence[tuple[str, str]] = (),
    ts_ms: int = 1,
) -> str:
    """A combined-stream depthUpdate frame for synthetic scenarios."""
    data = {
        "e": "depthUpdate",
        "E": ts_ms,
        "T": ts_ms,
        "s": native,
        "U": first,
        "u": last,
        "pu": prev,
        "b": [list(level) for level in bids],
        "a": [list(level) for level in asks],
    }
    return json.dumps({"stream": f"{native.lower()}@depth@100ms", "data": data})


def snapshot_body(
    last_id: int, bids: Sequence[str] = ("1",), asks: Sequence[str] = ("2",)
) -> bytes:
    return json.dumps(
        {
            "lastUpdateId": last_id,
            "E": 5,
            "T": 4,
            "bids": [[p, "1"] for p in bids],
            "asks": [[p, "1"] for p in asks],
        }
    ).encode()


def synced_codec(last_id: int = 100) -> BinanceUsdmCodec:
    """An AKROUSDT book codec synced on a synthetic snapshot at ``last_id``, no diff applied."""
    codec = book_codec()
    assert codec.receive(depth_frame("AKROUSDT", last_id - 5, last_id - 1, last_id - 9), 1) == []
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot)
    out = codec.snapshot_received("AKROUSDT", snapshot_body(last_id), 2)
    assert [type(e) for e in out] == [BookSnapshot, VenueStatus]
    return codec


# ---------------------------------------------------------------------------------------------
# The real cryptofeed capture, end to end


@pytest.mark.parametrize("answer_immediately", [True, False], ids=["snapshot-now", "snapshot-late"])
def test_capture_event_counts(answer_immediately: bool) -> None:
    codecs = new_codecs()
    assert [c.route for c in codecs] == [PUBLIC, MARKET]
    driver = Driver(codecs, answer_immediately=answer_immediately)
    frames = recording().received
    driver.feed(frames)
    if not answer_immediately:
        # Nothing of the books may have been published while the snapshots were held back.
        assert not any(isinstance(e, (BookSnapshot, BookDelta)) for e in driver.events)
        driver.answer_all(frames[-1].ts + 1)

    # Count the capture independently, by payload "e".
    kinds = Counter(payload(f)["e"] for f in frames)
    assert kinds == {"depthUpdate": 374, "bookTicker": 233, "aggTrade": 46, "kline": 2}

    got = Counter(type(e).__name__ for e in driver.events)
    stale = {s: stale_count(s) for s in SYMBOLS}
    assert stale == {"AKROUSDT": 1, "CTKUSDT": 5}
    assert got["BookDelta"] == kinds["depthUpdate"] - sum(stale.values()) == 368
    assert got["BookSnapshot"] == len(SYMBOLS)
    assert got["Ticker"] == kinds["bookTicker"]
    assert got["Trade"] == kinds["aggTrade"]
    assert [s.kind for s in statuses(driver.events)] == ["book_synced"] * len(SYMBOLS)
    assert set(got) == {"BookDelta", "BookSnapshot", "Ticker", "Trade", "VenueStatus"}

    for native in SYMBOLS:
        published = [e for e in book_events(driver.events, native) if isinstance(e, BookDelta)]
        assert len(published) == len(depth_diffs()[native]) - stale[native]

    # AKROUSDT: the first applied diff ends exactly at the snapshot (u == lastUpdateId): the
    # USD-M rule drops only u < lastUpdateId and asks U <= lastUpdateId <= u.
    akro = book_events(driver.events, "AKROUSDT")
    assert isinstance(akro[0], BookSnapshot) and akro[0].sequence == 600859605486
    assert isinstance(akro[1], BookDelta)
    assert (akro[1].first_sequence, akro[1].sequence, akro[1].prev_sequence) == (
        600859603597,
        600859605486,
        600859605486,
    )
    assert akro[0].ts_venue == 1626992741238 * MS  # the snapshot's "T"

    # One snapshot request per symbol, at exactly the URL the recorder used.
    recorded_urls = {_symbol_of(r.url): r.url for r in recording().http}
    assert sorted(f.key for f in driver.fetches) == sorted(SYMBOLS)
    for fetch in driver.fetches:
        assert fetch.url == recorded_urls[fetch.key]
    assert driver.other_actions == []

    public, market = codecs
    for codec in codecs:
        assert codec.counters.frames == len(frames)
        assert (codec.counters.parse_errors, codec.counters.book_gaps) == (0, 0)
        assert codec.counters.book_resyncs == 0
    assert public.counters.stale_deltas_dropped == sum(stale.values())
    assert market.counters.stale_deltas_dropped == 0


@pytest.mark.parametrize("answer_immediately", [True, False], ids=["snapshot-now", "snapshot-late"])
def test_capture_books_are_consistent(answer_immediately: bool) -> None:
    driver = Driver(new_codecs(), answer_immediately=answer_immediately)
    driver.feed(recording().received)
    driver.answer_all(recording().received[-1].ts + 1)
    for native in SYMBOLS:
        events = book_events(driver.events, native)
        snapshot, deltas = events[0], events[1:]
        assert isinstance(snapshot, BookSnapshot)
        assert deltas and all(isinstance(d, BookDelta) for d in deltas)
        recorded = json.loads(snapshot_bodies()[native])
        assert [list(lv) for lv in snapshot.bids] == recorded["bids"]
        assert [list(lv) for lv in snapshot.asks] == recorded["asks"]
        # The chain a consumer verifies, and the venue's own pu chain behind it.
        raw = {d["u"]: d for d in depth_diffs()[native]}
        prev = snapshot.sequence
        for i, delta in enumerate(deltas):
            assert isinstance(delta, BookDelta)
            assert delta.prev_sequence == prev
            assert delta.first_sequence is not None
            diff = raw[delta.sequence]
            if i == 0:
                assert delta.first_sequence <= prev <= delta.sequence
            else:
                assert diff["pu"] == prev
            assert delta.first_sequence == diff["U"]
            # Each delta carries exactly its diff's levels, as sent.
            assert [list(lv) for lv in delta.bids] == diff["b"]
            assert [list(lv) for lv in delta.asks] == diff["a"]
            assert delta.ts_venue == diff["T"] * MS
            prev = delta.sequence
        # A consumer's copy is never crossed and ends equal to the test's own book.
        consumer = rebuild(events)
        want = reference_book(native, prev)
        assert consumer.sorted_bids() == want.sorted_bids()
        assert consumer.sorted_asks() == want.sorted_asks()


def test_buffered_deltas_keep_their_receive_time() -> None:
    driver = Driver(new_codecs(), answer_immediately=False)
    frames = recording().received
    driver.feed(frames)
    late = frames[-1].ts + 1
    driver.answer_all(late)
    arrival = {}
    for frame in frames:
        data = payload(frame)
        if data["e"] == "depthUpdate":
            arrival[(data["s"], data["u"])] = frame.ts
    for event in driver.events:
        if isinstance(event, BookDelta):
            assert event.ts_recv == arrival[(event.native_symbol, event.sequence)]
        elif isinstance(event, BookSnapshot):
            assert event.ts_recv == late


def test_trades_and_tickers_from_capture() -> None:
    driver = Driver(new_codecs(), answer_immediately=True)
    driver.feed(recording().received)
    raw_trades = [payload(f) for f in recording().received if payload(f)["e"] == "aggTrade"]
    trades = [e for e in driver.events if isinstance(e, Trade)]
    assert [(t.native_symbol, t.trade_id, t.price, t.size, t.side, t.ts_venue) for t in trades] == [
        (d["s"], f"a{d['a']}", d["p"], d["q"], "sell" if d["m"] else "buy", d["T"] * MS)
        for d in raw_trades
    ]
    assert {t.side for t in trades} == {"buy", "sell"}
    assert {t.symbol for t in trades} == {"AKRO-USDT-PERP", "CTK-USDT-PERP"}

    raw_tickers = [payload(f) for f in recording().received if payload(f)["e"] == "bookTicker"]
    tickers = [e for e in driver.events if isinstance(e, Ticker)]
    assert [
        (t.native_symbol, t.sequence, t.bid_price, t.bid_size, t.ask_price, t.ask_size)
        for t in tickers
    ] == [(d["s"], d["u"], d["b"], d["B"], d["a"], d["A"]) for d in raw_tickers]
    assert [t.ts_venue for t in tickers] == [d["T"] * MS for d in raw_tickers]


def test_wire_messages() -> None:
    driver = Driver(new_codecs(), answer_immediately=True)
    driver.feed(recording().received)
    messages = [to_message(e) for e in driver.events]
    ids = [m.msg_id for m in messages]
    assert len(set(ids)) == len(ids), "two different events share a message id"
    subjects = {m.subject for m in messages}
    assert subjects == {
        "market.binance_usdm.akro-usdt-perp.l2_orderbook",
        "market.binance_usdm.ctk-usdt-perp.l2_orderbook",
        "market.binance_usdm.akro-usdt-perp.ticker",
        "market.binance_usdm.ctk-usdt-perp.ticker",
        "market.binance_usdm.akro-usdt-perp.trade",
        "market.binance_usdm.ctk-usdt-perp.trade",
        "market.binance_usdm._status",
    }
    # The venue's exact decimal strings survive into the JSON body (trailing zeros kept).
    ctk = book_events(driver.events, "CTKUSDT")
    assert b'["1.01000","85782"]' in encode(ctk[0])  # the REST snapshot's best bid
    deletion = next(
        e
        for e in driver.events
        if isinstance(e, BookDelta) and any(size == "0" for _, size in e.bids + e.asks)
    )
    assert b'"0"]' in encode(deletion)
    ticker = next(e for e in driver.events if isinstance(e, Ticker))
    first = next(payload(f) for f in recording().received if payload(f)["e"] == "bookTicker")
    assert f'"bid_price":"{first["b"]}"'.encode() in encode(ticker)
    # The same venue event decoded twice (a reconnect overlap) gets the same id.
    again = Driver(new_codecs(), answer_immediately=True)
    again.feed(recording().received)
    assert [m.msg_id for m in map(to_message, again.events)] == ids


# ---------------------------------------------------------------------------------------------
# The real 2026 ccxt recording: bare frames from the raw /ws endpoint


def test_ccxt_2026_book_and_trades() -> None:
    rec = recording("ccxt_usdm")
    [codec_public, codec_market] = new_codecs(["BTCUSDT"])
    driver = Driver(
        [codec_public, codec_market],
        answer_immediately=False,
        bodies=snapshot_bodies("ccxt_usdm"),
    )
    # Play frames and the REST answer in recorded order: the snapshot arrived between the
    # 10th and the 11th diff.
    [http] = rec.http
    driver.feed(f for f in rec.received if f.ts < http.ts)
    driver.answer_all(http.ts)
    driver.feed(f for f in rec.received if f.ts >= http.ts)

    diffs = depth_diffs("ccxt_usdm")["BTCUSDT"]
    assert len(diffs) == 11
    assert all(b["pu"] == a["u"] for a, b in itertools.pairwise(diffs))
    assert stale_count("BTCUSDT", "ccxt_usdm") == 10
    events = book_events(driver.events, "BTCUSDT")
    assert [type(e) for e in events] == [BookSnapshot, BookDelta]
    snapshot, delta = events
    assert isinstance(snapshot, BookSnapshot) and isinstance(delta, BookDelta)
    assert snapshot.sequence == 11270657312257
    assert (delta.first_sequence, delta.sequence, delta.prev_sequence) == (
        11270657305889,
        11270657314522,
        11270657312257,
    )
    assert codec_public.counters.stale_deltas_dropped == 10
    assert b'["63921.70","29.841"]' in encode(snapshot)
    # ccxt's own parsed top 5 after the delta (from the same recording).
    book = rebuild(events)
    bids, asks = book.top(5)
    assert [(str(p), str(q)) for p, q in bids] == [
        ("63921.70", "29.840"),
        ("63921.60", "0.018"),
        ("63921.50", "0.308"),
        ("63921.30", "0.006"),
        ("63921.10", "0.005"),
    ]
    assert [float(p) for p, _ in asks] == [63921.8, 63921.9, 63922.0, 63922.4, 63922.5]
    assert [float(q) for _, q in asks] == [5.333, 0.003, 0.001, 1.034, 0.002]

    trades = [e for e in driver.events if isinstance(e, Trade)]
    assert [(t.trade_id, t.price, t.size, t.side) for t in trades] == [
        ("7967419777", "64042.10", "0.038", "sell"),
        ("7967419778", "64042.20", "0.025", "buy"),
    ]
    assert trades[0].symbol == "BTC-USDT-PERP"
    assert trades[0].ts_venue == 1786540291675 * MS
    assert statuses(driver.events) == statuses(driver.events, "book_synced")
    for codec in (codec_public, codec_market):
        assert codec.counters.parse_errors == 0


# ---------------------------------------------------------------------------------------------
# Mark price, funding, liquidations (doc-shaped nautilus fixtures)


def test_fixture_mark_price_funding_liquidation() -> None:
    codecs = new_codecs(["BTCUSDT", "BNBUSDT"])
    driver = Driver(codecs, answer_immediately=False, bodies={})
    driver.feed(recording("nautilus_usdm").received)
    assert all(c.counters.parse_errors == 0 for c in codecs)

    [funding] = [e for e in driver.events if isinstance(e, FundingRate)]
    assert (funding.symbol, funding.native_symbol) == ("BTC-USDT-PERP", "BTCUSDT")
    assert (funding.rate, funding.mark_price, funding.index_price) == (
        "0.00038167",
        "11794.15000000",
        "11784.62659091",
    )
    assert funding.next_funding_ts == 1562306400000 * MS
    assert funding.ts_venue == 1562305380000 * MS
    [mark] = [e for e in driver.events if isinstance(e, MarkPrice)]
    assert (mark.mark_price, mark.index_price) == ("11794.15000000", "11784.62659091")
    assert mark.ts_venue == funding.ts_venue

    [liq] = [e for e in driver.events if isinstance(e, Liquidation)]
    # "S": "SELL" is the liquidation order closing a long: the liquidated position is long.
    assert liq.side == "buy"
    assert (liq.price, liq.size) == ("9910.12345678", "0.014")  # average fill price, filled qty
    assert liq.ts_venue == 1568014460893 * MS
    assert liq.liquidation_id is None

    [trade] = [e for e in driver.events if isinstance(e, Trade)]
    assert (trade.trade_id, trade.price, trade.size, trade.side) == (
        "a5933014",
        "0.001",
        "100",
        "sell",
    )
    [ticker] = [e for e in driver.events if isinstance(e, Ticker)]
    assert (ticker.symbol, ticker.sequence, ticker.ts_venue) == (
        "BNB-USDT-PERP",
        400900217,
        1568014460891 * MS,
    )
    assert (ticker.bid_price, ticker.ask_size) == ("25.35190000", "40.66000000")

    for event in driver.events:
        message = to_message(event)
        assert message.msg_id == msg_id(event)
    assert b'"rate":"0.00038167"' in encode(funding)
    assert b'"price":"9910.12345678"' in encode(liq)
    assert subject(funding) == "market.binance_usdm.btc-usdt-perp.funding_rate"
    assert subject(mark) == "market.binance_usdm.btc-usdt-perp.mark_price"
    assert subject(liq) == "market.binance_usdm.btc-usdt-perp.liquidation"
    ids = [msg_id(e) for e in driver.events]
    assert len(set(ids)) == len(ids)


def _mark_frame(native: str, rate: str, next_funding: int, ts_ms: int = 1000) -> str:
    data = {
        "e": "markPriceUpdate",
        "E": ts_ms,
        "s": native,
        "p": "63000.10",
        "i": "62990.00000000",
        "P": "63001.00",
        "r": rate,
        "T": next_funding,
    }
    return json.dumps({"stream": f"{native.lower()}@markPrice@1s", "data": data})


def test_mark_price_and_funding_are_separate_data_types() -> None:
    [funding_only] = new_codecs(["BTCUSDT"], frozenset({DataType.FUNDING_RATE}))
    [mark_only] = new_codecs(["BTCUSDT"], frozenset({DataType.MARK_PRICE}))
    frame = _mark_frame("BTCUSDT", "-0.00010000", 1786550400000)
    [funding] = funding_only.receive(frame, 1)
    assert isinstance(funding, FundingRate) and funding.rate == "-0.00010000"
    [mark] = mark_only.receive(frame, 1)
    assert isinstance(mark, MarkPrice) and mark.mark_price == "63000.10"
    # Both types share one stream.
    assert funding_only.streams == mark_only.streams == ["btcusdt@markPrice@1s"]
    # A second update is a distinct message.
    [later] = funding_only.receive(_mark_frame("BTCUSDT", "-0.00010000", 1786550400000, 2000), 2)
    assert msg_id(later) != msg_id(funding)


def test_dated_contract_has_mark_price_but_no_funding() -> None:
    types = frozenset({DataType.FUNDING_RATE, DataType.MARK_PRICE})
    [codec] = new_codecs(["BTCUSDT_260925"], types)
    assert codec.streams == ["btcusdt_260925@markPrice@1s"]
    # ⚠ Contracts without funding send an empty "r" (and "T": 0): no FundingRate, no error.
    [mark] = codec.receive(_mark_frame("BTCUSDT_260925", "", 0), 1)
    assert isinstance(mark, MarkPrice)
    assert (mark.symbol, mark.native_symbol) == ("BTC-USDT-260925", "BTCUSDT_260925")
    assert codec.counters.parse_errors == 0


def _force_order(side: str, status: str, filled: str, avg: str) -> str:
    order = {
        "s": "ETHUSDT",
        "S": side,
        "o": "LIMIT",
        "f": "IOC",
        "q": "1.250",
        "p": "3001.50",
        "ap": avg,
        "X": status,
        "l": filled,
        "z": filled,
        "T": 1786540000123,
    }
    return json.dumps(
        {
            "stream": "ethusdt@forceOrder",
            "data": {"e": "forceOrder", "E": 1786540000124, "o": order},
        }
    )


def test_liquidation_sides_and_unfilled_orders() -> None:
    [codec] = new_codecs(["ETHUSDT"], frozenset({DataType.LIQUIDATION}))
    assert codec.route == MARKET and codec.streams == ["ethusdt@forceOrder"]
    [short] = codec.receive(_force_order("BUY", "FILLED", "1.250", "3002.17"), 1)
    assert isinstance(short, Liquidation)
    assert (short.side, short.price, short.size) == ("sell", "3002.17", "1.250")  # a short
    [long_] = codec.receive(_force_order("SELL", "FILLED", "1.250", "2990.00"), 2)
    assert isinstance(long_, Liquidation) and long_.side == "buy"
    # Not filled yet: the order's own quantity and price.
    [pending] = codec.receive(_force_order("SELL", "NEW", "0", "0.00"), 3)
    assert isinstance(pending, Liquidation)
    assert (pending.price, pending.size) == ("3001.50", "1.250")
    assert len({msg_id(e) for e in (short, long_, pending)}) == 3
    [bad] = codec.receive(_force_order("HOLD", "FILLED", "1", "1"), 4)
    assert isinstance(bad, VenueStatus) and bad.kind == "parse_error"


# ---------------------------------------------------------------------------------------------
# Contract size


def test_contract_size_scales_sizes_not_prices() -> None:
    cs = Decimal("0.001")
    codecs = new_codecs(SYMBOLS, ALL_TYPES, contract_size=cs)
    driver = Driver(codecs, answer_immediately=True)
    driver.feed(recording().received)
    plain = Driver(new_codecs(), answer_immediately=True)
    plain.feed(recording().received)
    assert len(driver.events) == len(plain.events)

    def scaled(size: str) -> str:
        return format(Decimal(size) * cs, "f")

    for got, want in zip(driver.events, plain.events, strict=True):
        assert type(got) is type(want)
        if isinstance(got, Trade) and isinstance(want, Trade):
            assert (got.price, got.size) == (want.price, scaled(want.size))
        elif isinstance(got, Ticker) and isinstance(want, Ticker):
            assert want.bid_size is not None and want.ask_size is not None
            assert (got.bid_price, got.bid_size) == (want.bid_price, scaled(want.bid_size))
            assert got.ask_size == scaled(want.ask_size)
        elif isinstance(got, (BookSnapshot, BookDelta)):
            assert isinstance(want, (BookSnapshot, BookDelta))
            assert got.bids == [(p, scaled(q)) for p, q in want.bids]
            assert got.asks == [(p, scaled(q)) for p, q in want.asks]
    snapshot = next(e for e in driver.events if isinstance(e, BookSnapshot))
    assert snapshot.native_symbol == "AKROUSDT"
    assert snapshot.bids[0] == ("0.01731", "57.618")  # 57618 x 0.001

    [codec] = new_codecs(["ETHUSDT"], frozenset({DataType.LIQUIDATION}), Decimal("10"))
    [liq] = codec.receive(_force_order("SELL", "FILLED", "1.250", "2990.00"), 1)
    assert isinstance(liq, Liquidation) and (liq.size, liq.price) == ("12.500", "2990.00")


# ---------------------------------------------------------------------------------------------
# Gaps and resyncs


def test_gap_resyncs_only_that_symbol() -> None:
    frames = list(recording().received)
    akro_diffs = [
        i for i, f in enumerate(frames) if json.loads(f.text)["stream"] == "akrousdt@depth@100ms"
    ]
    # AKRO's 61st diff arrives after both books are synced; drop it from the stream.
    dropped_index = akro_diffs[60]
    dropped = payload(frames[dropped_index])
    del frames[dropped_index]
    after = akro_diffs[61] - 1  # where the next AKRO diff now sits
    assert payload(frames[after])["pu"] == dropped["u"]

    codecs = new_codecs(types=BOOK_TYPES)
    [codec] = codecs
    driver = Driver(codecs, answer_immediately=True)
    driver.feed(frames[:after])
    assert codec.counters.book_gaps == 0
    fetches_before = len(driver.fetches)

    # The diff after the hole: a gap, a resync and a new snapshot request.
    driver.answer_immediately = False
    out = driver.feed(frames[after : after + 1])
    assert [(s.kind, s.symbol) for s in statuses(out)] == [
        ("book_gap", "AKRO-USDT-PERP"),
        ("book_resync", "AKRO-USDT-PERP"),
    ]
    assert f"expected pu={dropped['pu']}" in statuses(out)[0].detail
    assert not any(isinstance(e, BookDelta) for e in out)
    assert (codec.counters.book_gaps, codec.counters.book_resyncs) == (1, 1)
    assert len(driver.fetches) == fetches_before + 1
    assert driver.fetches[-1].key == "AKROUSDT"

    # Until a new snapshot arrives no AKRO book event is published; CTK goes on.
    rest = frames[after + 1 :]
    cut = len(rest) // 2
    held = driver.feed(rest[:cut])
    assert book_events(held, "AKROUSDT") == []
    other = [e for e in held if isinstance(e, BookDelta)]
    assert other and all(e.native_symbol == "CTKUSDT" for e in other)
    assert codec.counters.book_gaps == 1  # still buffering, no further gaps

    # The recorded snapshot predates the hole: too old (its first kept diff does not
    # straddle it), fetched again.
    stale_answer = driver.answer_all(rest[cut - 1].ts + 1)
    assert [s.kind for s in statuses(stale_answer)] == ["book_resync"]
    assert "older than buffered" in statuses(stale_answer)[0].detail
    assert book_events(stale_answer, "AKROUSDT") == []
    assert [a.key for _, a in driver.pending] == ["AKROUSDT"]

    # A snapshot taken right at the hole is too old as well: USD-M ids are not contiguous,
    # so the next diff's U lies above the dropped diff's u and cannot straddle it.
    nxt = payload(frames[after])
    assert nxt["U"] > dropped["u"]
    # One taken at the end of that next diff (U <= lastUpdateId <= u) is good: the book
    # resumes and the chain holds.
    good = reference_book("AKROUSDT", nxt["u"])
    driver.bodies["AKROUSDT"] = json.dumps(
        {
            "lastUpdateId": nxt["u"],
            "bids": [[str(p), str(q)] for p, q in good.sorted_bids()],
            "asks": [[str(p), str(q)] for p, q in good.sorted_asks()],
        }
    )
    resumed = driver.answer_all(rest[cut - 1].ts + 2)
    events = book_events(resumed, "AKROUSDT")
    assert isinstance(events[0], BookSnapshot) and events[0].sequence == nxt["u"]
    assert isinstance(events[1], BookDelta) and events[1].sequence == nxt["u"]
    assert len(events) > 2
    driver.answer_immediately = True
    driver.feed(rest[cut:])
    events = book_events(driver.events, "AKROUSDT")
    resync_at = next(
        i for i, e in enumerate(events) if isinstance(e, BookSnapshot) and e.sequence == nxt["u"]
    )
    before, after_resync = events[:resync_at], events[resync_at:]
    assert before[-1].sequence == dropped["pu"]  # the last delta before the hole
    prev = after_resync[0].sequence
    for delta in after_resync[1:]:
        assert isinstance(delta, BookDelta) and delta.prev_sequence == prev
        prev = delta.sequence
    final = rebuild(after_resync)
    want = reference_book("AKROUSDT", prev)
    assert final.sorted_bids() == want.sorted_bids()
    assert final.sorted_asks() == want.sorted_asks()
    assert codec.counters.book_gaps == 1


def test_gap_while_buffering_restarts_the_buffer() -> None:
    codec = book_codec()
    assert codec.receive(depth_frame("AKROUSDT", 10, 12, 7, [("1", "1")]), 1) == []
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot)
    assert codec.receive(depth_frame("AKROUSDT", 15, 16, 12), 2) == []  # ids need not be +1
    out = codec.receive(depth_frame("AKROUSDT", 20, 22, 18), 3)  # pu 18 != 16
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]
    assert "expected pu=16" in out[0].detail
    assert codec.actions() == []  # the snapshot already asked for is still awaited
    # A snapshot that bridged the old buffer start is now too old...
    out = codec.snapshot_received("AKROUSDT", snapshot_body(12), 4)
    assert [s.kind for s in statuses(out)] == ["book_resync"]
    assert codec.actions() == [fetch]
    # ...one inside the new first diff's [U, u] is good.
    out = codec.snapshot_received("AKROUSDT", snapshot_body(21), 5)
    snapshot, delta, synced = out
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == 21
    assert snapshot.ts_venue == 4 * MS
    assert isinstance(delta, BookDelta)
    assert (delta.first_sequence, delta.sequence, delta.prev_sequence) == (20, 22, 21)
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"


def test_first_diff_must_straddle_the_snapshot() -> None:
    # Snapshot newer than everything buffered: the book is published at once and the next
    # live diff must satisfy U <= lastUpdateId <= u.
    codec = synced_codec(100)
    assert codec.counters.stale_deltas_dropped == 1
    assert codec.receive(depth_frame("AKROUSDT", 96, 99, 95), 3) == []  # u < lastUpdateId
    assert codec.counters.stale_deltas_dropped == 2
    [delta] = codec.receive(depth_frame("AKROUSDT", 100, 100, 99), 4)  # u == lastUpdateId
    assert isinstance(delta, BookDelta) and delta.prev_sequence == 100
    [delta] = codec.receive(depth_frame("AKROUSDT", 104, 107, 100), 5)
    assert isinstance(delta, BookDelta) and delta.prev_sequence == 100

    codec = synced_codec(100)
    out = codec.receive(depth_frame("AKROUSDT", 101, 103, 100), 3)  # U > lastUpdateId
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]
    assert "expected U <= lastUpdateId=100" in out[0].detail
    assert codec.counters.book_gaps == 1


def test_stale_and_duplicate_diffs_are_dropped() -> None:
    codec = book_codec()
    codec.receive(depth_frame("AKROUSDT", 10, 12, 8), 1)
    codec.actions()
    out = codec.snapshot_received("AKROUSDT", snapshot_body(11), 2)
    assert [type(e) for e in out] == [BookSnapshot, BookDelta, VenueStatus]
    assert out[1].first_sequence == 10 and out[1].prev_sequence == 11  # straddles the snapshot
    assert codec.receive(depth_frame("AKROUSDT", 10, 12, 8), 3) == []  # a repeat
    assert codec.counters.stale_deltas_dropped == 1
    [delta] = codec.receive(depth_frame("AKROUSDT", 14, 15, 12), 4)
    assert isinstance(delta, BookDelta) and delta.prev_sequence == 12
    # After the first applied diff only the pu chain counts.
    out = codec.receive(depth_frame("AKROUSDT", 16, 18, 16), 5)
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]


def test_duplicate_while_buffering_is_dropped() -> None:
    codec = book_codec()
    codec.receive(depth_frame("AKROUSDT", 10, 12, 8), 1)
    codec.receive(depth_frame("AKROUSDT", 13, 15, 12), 2)
    assert codec.receive(depth_frame("AKROUSDT", 13, 15, 12), 3) == []
    assert codec.counters.stale_deltas_dropped == 1
    assert codec.counters.book_gaps == 0


def test_crossed_book_resyncs() -> None:
    codec = synced_codec(5)
    out = codec.receive(depth_frame("AKROUSDT", 5, 6, 4, bids=[("2.5", "1")]), 3)
    [resync] = out  # no delta published
    assert resync.kind == "book_resync" and "crossed" in resync.detail
    assert (codec.counters.book_resyncs, codec.counters.book_gaps) == (1, 0)
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot) and fetch.key == "AKROUSDT"
    # Nothing is published until the new snapshot.
    assert codec.receive(depth_frame("AKROUSDT", 7, 7, 6, asks=[("3", "0")]), 4) == []


def test_crossed_snapshot_is_fetched_again() -> None:
    codec = book_codec()
    codec.receive(depth_frame("AKROUSDT", 5, 5, 4), 1)
    codec.actions()
    [status] = codec.snapshot_received("AKROUSDT", snapshot_body(5, ["3"], ["2"]), 2)
    assert status.kind == "book_resync" and "crossed" in status.detail
    assert [type(a) for a in codec.actions()] == [FetchSnapshot]


def test_buffer_overflow_resyncs() -> None:
    subs = subscriptions(["AKROUSDT"], frozenset({DataType.L2_ORDERBOOK}))
    codec = BinanceUsdmCodec("bu", PUBLIC, subs, ENDPOINTS, max_buffered_diffs=3)
    codec.connected(0)
    codec.actions()
    for u in range(1, 4):
        assert codec.receive(depth_frame("AKROUSDT", u, u, u - 1), u) == []
    assert len(codec.actions()) == 1
    [status] = codec.receive(depth_frame("AKROUSDT", 4, 4, 3), 4)
    assert status.kind == "book_resync" and "buffered" in status.detail
    assert codec.counters.book_resyncs == 1
    assert codec.actions() == []  # the first request is still out
    # The answer is checked against the new buffer, which starts at U=4.
    out = codec.snapshot_received("AKROUSDT", snapshot_body(4), 5)
    assert [type(e) for e in out] == [BookSnapshot, BookDelta, VenueStatus]


def test_snapshot_failures_are_retried() -> None:
    codec = book_codec()
    codec.receive(depth_frame("AKROUSDT", 5, 5, 4), 100)
    [fetch] = codec.actions()
    assert fetch == FetchSnapshot(
        "AKROUSDT", "https://fapi.binance.com/fapi/v1/depth?symbol=AKROUSDT&limit=1000"
    )
    [status] = codec.snapshot_failed("AKROUSDT", "HTTP 429")
    assert status.kind == "book_resync" and "HTTP 429" in status.detail
    assert status.ts_recv == 100
    assert codec.actions() == [fetch]
    error = b'{"code":-1121,"msg":"Invalid symbol."}'
    [status] = codec.snapshot_received("AKROUSDT", error, 101)
    assert status.kind == "venue_error" and "-1121" in status.detail
    assert codec.actions() == [fetch]
    [status] = codec.snapshot_received("AKROUSDT", b"<html>", 102)
    assert status.kind == "parse_error"
    assert codec.actions() == [fetch]
    assert codec.counters.parse_errors == 1
    # Unknown keys and answers nobody is waiting for are ignored.
    assert codec.snapshot_received("NOPE", b"{}", 103) == []
    assert codec.snapshot_failed("NOPE", "x") == []


def test_reconnect_resets_books() -> None:
    codec = synced_codec(5)
    assert len(codec.receive(depth_frame("AKROUSDT", 5, 6, 4), 3)) == 1
    codec.connected(4)
    assert [type(a) for a in codec.actions()] == [SendFrame]
    # A late answer from the old connection is ignored, nothing is published before a
    # new snapshot, and the first diff asks for one.
    assert codec.snapshot_received("AKROUSDT", snapshot_body(5), 5) == []
    assert codec.receive(depth_frame("AKROUSDT", 9, 9, 8), 6) == []
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot)
    out = codec.snapshot_received("AKROUSDT", snapshot_body(9), 7)
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


def is_akro_diff(frame: Frame) -> bool:
    return json.loads(frame.text).get("stream") == "akrousdt@depth@100ms"


def synced_midway() -> tuple[BinanceUsdmCodec, BinanceUsdmCodec, Driver, list[Frame], int]:
    """Both routes' codecs fed the capture up to AKRO's 61st diff, both books synced;
    returns them, their driver, the frames not fed yet and the ``u`` of the last AKRO diff
    fed."""
    frames = recording().received
    akro = [i for i, f in enumerate(frames) if is_akro_diff(f)]
    at = akro[60]
    public, market = new_codecs()
    assert (public.route, market.route) == (PUBLIC, MARKET)
    assert not public.synced and market.synced  # /market carries no book
    driver = Driver([public, market], answer_immediately=True)
    driver.feed(frames[:at])
    assert public.synced and market.synced
    return public, market, driver, list(frames[at:]), payload(frames[akro[59]])["u"]


def test_resync_refetches_that_book_only() -> None:
    public, market, driver, rest, seen = synced_midway()
    fetches_before = len(driver.fetches)
    driver.answer_immediately = False

    [status] = public.resync("AKRO-USDT-PERP", "consumer dropped l2d:42", rest[0].ts - 1)
    assert (status.kind, status.symbol, status.native_symbol) == (
        "book_resync",
        "AKRO-USDT-PERP",
        "AKROUSDT",
    )
    assert "consumer dropped l2d:42" in status.detail
    assert public.counters.book_resyncs == 1
    [fetch] = public.actions()
    assert fetch == FetchSnapshot(key="AKROUSDT", url=recording().http[0].url)
    driver.fetches.append(fetch)
    driver.pending.append((public, fetch))
    assert not public.synced
    # The /market connection has no book of AKRO: nothing to do there.
    assert market.resync("AKRO-USDT-PERP", "x", 1) == []
    assert market.actions() == [] and market.synced

    # Until the snapshot: AKRO diffs are buffered, none published; AKRO's ticker and
    # trades, and CTK's book, go on.
    cut = len(rest) // 2
    held = driver.feed(rest[:cut])
    assert book_events(held, "AKROUSDT") == []
    others = [e for e in held if isinstance(e, BookDelta)]
    assert others and all(e.native_symbol == "CTKUSDT" for e in others)
    akro = [e for e in held if e.native_symbol == "AKROUSDT"]
    want = Counter(json.loads(f.text)["stream"] for f in rest[:cut])
    assert sum(isinstance(e, Ticker) for e in akro) == want["akrousdt@bookTicker"] > 0
    assert sum(isinstance(e, Trade) for e in akro) == want["akrousdt@aggTrade"] > 0
    assert statuses(held) == []
    assert not public.synced

    # The recorded snapshot is older than the diffs buffered since: fetched again.
    old = driver.answer_all(rest[cut - 1].ts + 1)
    assert [s.kind for s in statuses(old)] == ["book_resync"]
    assert "older than buffered" in statuses(old)[0].detail
    assert book_events(old, "AKROUSDT") == [] and not public.synced

    # A snapshot at the end of the third AKRO diff since the resync: that diff straddles
    # it and is published after it, then the rest of the buffer, in one chain.
    buffered = [payload(f) for f in rest[:cut] if is_akro_diff(f)]
    assert buffered[0]["pu"] == seen
    snap_u = buffered[2]["u"]
    driver.bodies["AKROUSDT"] = snapshot_at("AKROUSDT", snap_u)
    resumed = driver.answer_all(rest[cut - 1].ts + 2)
    events = book_events(resumed, "AKROUSDT")
    assert isinstance(events[0], BookSnapshot) and events[0].sequence == snap_u
    assert [e.sequence for e in events[1:]] == [d["u"] for d in buffered[2:]]
    assert statuses(resumed)[-1].kind == "book_synced"
    assert public.synced
    assert len(driver.fetches) == fetches_before + 2

    driver.answer_immediately = True
    driver.feed(rest[cut:])
    after = book_events(driver.events, "AKROUSDT")
    after = after[after.index(events[0]) :]
    prev = snap_u
    for delta in after[1:]:
        assert isinstance(delta, BookDelta) and delta.prev_sequence == prev
        prev = delta.sequence
    assert prev == depth_diffs()["AKROUSDT"][-1]["u"]
    final = rebuild(after)
    want_book = reference_book("AKROUSDT", prev)
    assert final.sorted_bids() == want_book.sorted_bids()
    assert final.sorted_asks() == want_book.sorted_asks()
    c = public.counters
    assert (c.book_gaps, c.book_resyncs, c.parse_errors) == (0, 2, 0)
    assert driver.other_actions == []


def test_resync_snapshot_before_any_diff() -> None:
    public, _, driver, rest, seen = synced_midway()
    [status] = public.resync("AKRO-USDT-PERP", "gap downstream", 1)
    assert status.kind == "book_resync"
    [fetch] = public.actions()
    assert isinstance(fetch, FetchSnapshot)
    # The answer comes before any AKRO diff: one taken at the end of the next diff is
    # published alone, and that diff straddles it.
    nxt = payload(next(f for f in rest if is_akro_diff(f)))
    assert nxt["pu"] == seen
    body = snapshot_at("AKROUSDT", nxt["u"]).encode()
    snapshot, synced = public.snapshot_received("AKROUSDT", body, 3)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == nxt["u"]
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    assert public.synced
    events = [snapshot, *book_events(driver.feed(rest), "AKROUSDT")]
    assert len(events) - 1 == sum(is_akro_diff(f) for f in rest)
    assert isinstance(events[1], BookDelta) and events[1].first_sequence == nxt["U"]
    prev = nxt["u"]
    for delta in events[1:]:
        assert isinstance(delta, BookDelta) and delta.prev_sequence == prev
        prev = delta.sequence
    final = rebuild(events)
    want = reference_book("AKROUSDT", prev)
    assert final.sorted_bids() == want.sorted_bids()
    assert final.sorted_asks() == want.sorted_asks()
    assert public.counters.book_gaps == 0


def test_resync_snapshot_before_any_diff_not_past_it() -> None:
    public, _, driver, rest, seen = synced_midway()
    driver.answer_immediately = False
    public.resync("AKRO-USDT-PERP", "gap downstream", 1)
    [fetch] = public.actions()
    # The answer comes before any AKRO diff and stands at the last diff seen (a quiet
    # book's REST answer stays there): the next diff (U > seen) could not straddle it.
    # Dropped, and no new request until that diff, so a quiet book is not polled.
    body = snapshot_at("AKROUSDT", seen).encode()
    [status] = public.snapshot_received("AKROUSDT", body, 2)
    assert status.kind == "book_resync"
    assert f"not past the last diff seen u={seen}" in status.detail
    assert public.actions() == [] and not public.synced
    # The next AKRO diff asks again, as after connecting; that answer bridges the buffer.
    first = next(i for i, f in enumerate(rest) if is_akro_diff(f))
    held = driver.feed(rest[: first + 1])
    assert book_events(held, "AKROUSDT") == []
    assert driver.pending == [(public, fetch)]
    nxt = payload(rest[first])
    driver.bodies["AKROUSDT"] = snapshot_at("AKROUSDT", nxt["u"])
    snapshot, delta, synced = driver.answer_all(rest[first].ts + 1)
    assert isinstance(snapshot, BookSnapshot) and snapshot.sequence == nxt["u"]
    assert isinstance(delta, BookDelta) and (delta.prev_sequence, delta.sequence) == (
        nxt["u"],
        nxt["u"],
    )
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    assert public.synced
    assert public.counters.book_gaps == 0


def test_resync_of_unknown_symbol_is_a_no_op() -> None:
    public, market, _, _, _ = synced_midway()
    for codec in (public, market):
        assert codec.resync("BTC-USDT-PERP", "x", 1) == []
        assert codec.resync("AKROUSDT", "x", 1) == []  # a native spelling is no canonical
        assert codec.actions() == []
        assert codec.counters.book_resyncs == 0
        assert codec.synced


def test_resync_while_a_snapshot_is_awaited() -> None:
    codec = book_codec()
    assert codec.receive(depth_frame("AKROUSDT", 10, 12, 7), 1) == []
    [fetch] = codec.actions()
    assert isinstance(fetch, FetchSnapshot) and not codec.synced
    # The fetch is still out: the buffer is dropped, no second request.
    [status] = codec.resync("AKRO-USDT-PERP", "x", 2)
    assert status.kind == "book_resync"
    assert codec.actions() == []
    assert codec.receive(depth_frame("AKROUSDT", 15, 16, 12), 3) == []
    out = codec.snapshot_received("AKROUSDT", snapshot_body(15), 4)
    assert [type(e) for e in out] == [BookSnapshot, BookDelta, VenueStatus]
    assert out[1].prev_sequence == 15 and codec.synced
    codec.connected(5)
    assert not codec.synced


# ---------------------------------------------------------------------------------------------
# Routes, control frames and garbage


def test_routes_ignore_each_others_streams() -> None:
    public, market = new_codecs()
    depth = next(f for f in recording().received if "@depth" in f.text)
    trade = next(f for f in recording().received if "@aggTrade" in f.text)
    assert market.receive(depth.text, 1) == []
    assert market.actions() == []  # the market codec has no book to sync
    assert public.receive(trade.text, 2) == []
    assert market.snapshot_received("AKROUSDT", snapshot_body(1), 3) == []
    assert public.receive(_mark_frame("AKROUSDT", "0.0001", 1), 4) == []
    assert (public.counters.parse_errors, market.counters.parse_errors) == (0, 0)


@pytest.mark.parametrize(
    "frame",
    [
        '{"e":"serverShutdown","E":1770123456789}',
        '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
    ],
    ids=["bare", "combined"],
)
def test_server_shutdown_reconnects(frame: str) -> None:
    for codec in new_codecs():
        [status] = codec.receive(frame, 42)
        assert isinstance(status, VenueStatus)
        assert status.kind == "server_shutdown"
        assert status.ts_venue == 1770123456789 * MS
        assert status.symbol == ""
        assert codec.actions() == [Reconnect("server shutdown", planned=True)]
        to_message(status)


def test_control_frames() -> None:
    public, _ = new_codecs()
    assert public.receive('{"result":null,"id":1}', 1) == []
    assert public.receive('{"result":["akrousdt@bookTicker"],"id":3}', 2) == []
    [err] = public.receive('{"code":2,"msg":"Invalid request: too many parameters","id":7}', 3)
    assert err.kind == "venue_error" and "too many parameters" in err.detail
    [err] = public.receive('{"error":{"code":3,"msg":"Invalid JSON"},"id":null}', 4)
    assert err.kind == "venue_error" and "Invalid JSON" in err.detail
    kline = next(f for f in recording().received if "@kline_1m" in f.text)
    assert public.receive(kline.text, 5) == []
    assert public.receive(json.dumps(payload(kline)), 6) == []  # bare kline
    # A symbol this codec did not subscribe (e.g. a shared replay) is ignored.
    other = next(f for f in recording().received if "akrousdt@depth" in f.text)
    assert public.receive(other.text.replace("AKROUSDT", "BTCUSDT"), 7) == []
    assert public.receive(depth_frame("BTCUSDT", 1, 2, 0), 8) == []
    assert public.actions() == []
    assert public.counters.parse_errors == 0
    assert public.counters.frames == 8


def test_unsubscribed_data_types_are_ignored() -> None:
    [codec] = new_codecs(types=frozenset({DataType.TICKER}))
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
        "{}",
        "null",
        '"text"',
        '{"stream":5,"data":{}}',
        '{"stream":"akrousdt@depth@100ms"}',
        '{"stream":"x@aggTrade","data":{"p":1}}',
        '{"stream":"akrousdt@aggTrade","data":[1,2]}',
        '{"stream":"akrousdt@bookTicker","data":{"s":"AKROUSDT","u":1,"b":"x","B":"1","a":"1","A":"1"}}',
        '{"stream":"akrousdt@markPrice@1s","data":{"s":"AKROUSDT","E":1,"p":"1","r":"inf"}}',
        '{"e":"depthUpdate","s":"AKROUSDT"}',
        '{"e":5}',
        depth_frame("AKROUSDT", 5, 4, 3),
        depth_frame("AKROUSDT", 5, 6, 4, bids=[("NaN", "1")]),
        depth_frame("AKROUSDT", 5, 6, 4, asks=[("1", "-2")]),
        depth_frame("AKROUSDT", 5, 6, 4).replace('"pu": 4, ', ""),
    ],
)
def test_garbage_is_a_parse_error(frame: str | bytes) -> None:
    codecs = new_codecs()
    for codec in codecs:
        [status] = codec.receive(frame, 99)
        assert isinstance(status, VenueStatus)
        assert status.kind == "parse_error"
        assert status.detail and len(status.detail) <= 200
        assert codec.counters.parse_errors == 1
        assert codec.counters.frames == 1
        assert codec.actions() == []
        to_message(status)
    # The codecs are unharmed: the capture still decodes completely.
    driver = Driver(codecs, answer_immediately=True)
    driver.feed(recording().received)
    assert sum(isinstance(e, BookDelta) for e in driver.events) == 368
    assert all(c.counters.parse_errors == 1 for c in codecs)


# ---------------------------------------------------------------------------------------------
# Subscriptions, sharding, symbols


def test_subscribe_frames_are_batched_per_route() -> None:
    natives = [f"SYM{i}USDT" for i in range(100)]
    public, market = new_codecs(natives)
    requests = {}
    for codec in (public, market):
        codec.connected(1)
        frames = codec.actions()
        assert all(isinstance(f, SendFrame) for f in frames)
        requests[codec.route] = [json.loads(f.text) for f in frames if isinstance(f, SendFrame)]
    assert [len(r["params"]) for r in requests[PUBLIC]] == [200]
    assert [len(r["params"]) for r in requests[MARKET]] == [200, 100]
    assert [r["id"] for r in requests[MARKET]] == [1, 2]
    for route, kinds in (
        (PUBLIC, ("depth@100ms", "bookTicker")),
        (MARKET, ("aggTrade", "markPrice@1s", "forceOrder")),
    ):
        assert all(r["method"] == "SUBSCRIBE" for r in requests[route])
        streams = [s for r in requests[route] for s in r["params"]]
        want = {f"sym{i}usdt@{kind}" for i in range(100) for kind in kinds}
        assert set(streams) == want and len(streams) == len(want)
        assert max(len(r["params"]) for r in requests[route]) <= MAX_PARAMS_PER_SUBSCRIBE


def test_sharding_over_1024_streams_per_route() -> None:
    natives = [f"SYM{i}USDT" for i in range(600)]
    codecs = ADAPTER.make_codecs("binance_usdm", subscriptions(natives), ENDPOINTS)
    assert [c.route for c in codecs if isinstance(c, BinanceUsdmCodec)] == [
        PUBLIC,
        PUBLIC,
        MARKET,
        MARKET,
    ]
    for route, per_symbol in ((PUBLIC, 2), (MARKET, 3)):
        shards = [c for c in codecs if isinstance(c, BinanceUsdmCodec) and c.route == route]
        assert sum(len(c.streams) for c in shards) == 600 * per_symbol
        symbols = []
        for codec in shards:
            assert codec.url == f"wss://fstream.binance.com/{route}/stream"
            assert len(codec.streams) <= 1024
            assert codec.max_send_rate == 8.0
            assert codec.max_lifetime == 23.5 * 3600
            assert codec.ping_interval is None and codec.keepalive() is None
            assert codec.venue == "binance_usdm"
            symbols.append({s.split("@")[0] for s in codec.streams})
        assert not symbols[0] & symbols[1]  # a symbol never spans two connections of a route
    assert ADAPTER.make_codecs("binance_usdm", [], ENDPOINTS) == []
    # Only market-route types: no /public connection at all.
    [market] = ADAPTER.make_codecs(
        "bu", subscriptions(["BTCUSDT"], frozenset({DataType.TRADE})), ENDPOINTS
    )
    assert isinstance(market, BinanceUsdmCodec) and market.streams == ["btcusdt@aggTrade"]


def test_make_codecs_merges_and_validates() -> None:
    subs = [
        Subscription("btcusdt", "BTC-USDT-PERP", frozenset({DataType.TRADE})),
        Subscription("BTCUSDT", "BTC-USDT-PERP", frozenset({DataType.TICKER})),
    ]
    public, market = ADAPTER.make_codecs("bu", subs, ENDPOINTS)
    assert isinstance(public, BinanceUsdmCodec) and isinstance(market, BinanceUsdmCodec)
    assert (public.streams, market.streams) == (["btcusdt@bookTicker"], ["btcusdt@aggTrade"])
    with pytest.raises(ValueError, match="open_interest"):
        ADAPTER.make_codecs(
            "bu",
            [Subscription("BTCUSDT", "BTC-USDT-PERP", frozenset({DataType.OPEN_INTEREST}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="mapped to both"):
        ADAPTER.make_codecs(
            "bu",
            [subs[0], Subscription("BTCUSDT", "XBT-USDT-PERP", frozenset({DataType.TRADE}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="two contract sizes"):
        ADAPTER.make_codecs(
            "bu",
            [subs[0], Subscription("BTCUSDT", "BTC-USDT-PERP", subs[1].data_types, Decimal(1))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="positive"):
        ADAPTER.make_codecs(
            "bu",
            [Subscription("BTCUSDT", "BTC-USDT-PERP", subs[0].data_types, Decimal(0))],
            ENDPOINTS,
        )


@pytest.mark.parametrize(
    ("ws_url", "route", "want"),
    [
        ("wss://fstream.binance.com", PUBLIC, "wss://fstream.binance.com/public/stream"),
        ("wss://fstream.binance.com/", MARKET, "wss://fstream.binance.com/market/stream"),
        ("wss://fstream.binance.com/stream", MARKET, "wss://fstream.binance.com/market/stream"),
        ("wss://fstream.binance.com/public", MARKET, "wss://fstream.binance.com/market/stream"),
        ("ws://127.0.0.1:9/stream", PUBLIC, "ws://127.0.0.1:9/public/stream"),
    ],
)
def test_route_urls(ws_url: str, route: Route, want: str) -> None:
    assert route_url(ws_url, route) == want


def test_events_carry_configured_venue_and_endpoints() -> None:
    endpoints = Endpoints(ws_url="ws://127.0.0.1:9/stream", rest_url="http://127.0.0.1:9/")
    subs = [Subscription("akrousdt", "AKRO-USDT-PERP", ALL_TYPES)]
    public, market = ADAPTER.make_codecs("usdm-replay", subs, endpoints)
    assert (public.url, market.url) == (
        "ws://127.0.0.1:9/public/stream",
        "ws://127.0.0.1:9/market/stream",
    )
    public.connected(0)
    public.actions()
    frame = next(f for f in recording().received if "akrousdt@depth" in f.text)
    public.receive(frame.text, frame.ts)
    [fetch] = public.actions()
    assert fetch == FetchSnapshot(
        "AKROUSDT", "http://127.0.0.1:9/fapi/v1/depth?symbol=AKROUSDT&limit=1000"
    )
    body = snapshot_bodies()["AKROUSDT"].encode()
    snapshot = public.snapshot_received("AKROUSDT", body, 1)[0]
    assert (snapshot.venue, snapshot.symbol, snapshot.native_symbol) == (
        "usdm-replay",
        "AKRO-USDT-PERP",
        "AKROUSDT",
    )


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("BTCUSDT", "BTC-USDT-PERP"),
        ("btcusdt", "BTC-USDT-PERP"),
        ("ETHUSDC", "ETH-USDC-PERP"),
        ("1000PEPEUSDT", "1000PEPE-USDT-PERP"),
        ("AKROUSDT", "AKRO-USDT-PERP"),
        ("BTCUSDT_260925", "BTC-USDT-260925"),
        ("ethusdt_261225", "ETH-USDT-261225"),
        ("BTCUSD_PERP", None),  # COIN-M, not USD-M
        ("BTCUSDT_261325", None),  # month 13
        ("BTCUSDT_2609", None),
        ("BTCUSDT_", None),
        ("FOOBAR", None),
        ("USDT", None),
        ("", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


def test_adapter_is_registered() -> None:
    assert adapters.load("binance_usdm") is ADAPTER
    assert ADAPTER.name == "binance_usdm"
    assert ADAPTER.data_types == frozenset(
        {
            DataType.TRADE,
            DataType.TICKER,
            DataType.L2_ORDERBOOK,
            DataType.FUNDING_RATE,
            DataType.MARK_PRICE,
            DataType.LIQUIDATION,
        }
    )
    assert ADAPTER.default_endpoints == Endpoints(
        ws_url="wss://fstream.binance.com", rest_url="https://fapi.binance.com"
    )
    assert ADAPTER.required_credentials == ()
