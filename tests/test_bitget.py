"""Tests of the Bitget v2 codec (adapters/bitget.py), driven by real captures.

* ``tests/data/bitget/ccxt_bitget.jsonl``: ccxt's 2026 recordings of the v2 public
  ``ticker`` (spot and USDT-FUTURES, the latter with funding/mark/index/open interest),
  ``trade`` (snapshot + update) and ``books5`` (a channel this codec does not use).
* ``tests/data/bitget/BITGET.ws.{1,2}.0.part*.jsonl``: the ``books`` frames of cryptofeed's
  2022 recordings of Bitget **v1** spot (8 pairs) and futures (2 contracts), with checksums.
  v1 frames differ from v2 only in the ``arg.instType`` spelling (``sp``/``mc`` instead of
  ``SPOT``/``USDT-FUTURES``) and the missing ``seq``/``pseq``; :func:`v1_as_v2` rewrites
  that one field, so the codec's whole book path (including the checksum on every message)
  runs on real data.
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
from adapters.bitget import ADAPTER, MAX_CHANNELS_PER_CONNECTION, BitgetCodec
from relay.book import OrderBook, parse_levels
from relay.captures import Frame, Recording, load
from relay.checksum import book_checksum
from relay.codec import Endpoints, SendFrame, Subscription
from relay.events import (
    BookDelta,
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
from relay.wire import encode, msg_id, to_message

DATA = Path(__file__).parent / "data" / "bitget"
BOOK = frozenset({DataType.L2_ORDERBOOK})
ALL_FUTURES = frozenset(
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
_V1_INST_TYPE = {"sp": "SPOT", "mc": "USDT-FUTURES"}


# ---------------------------------------------------------------------------------------------
# Capture helpers


@cache
def v1_books(name: str) -> Recording:
    """``BITGET.ws.1.0`` (spot) or ``BITGET.ws.2.0`` (futures) books, parts joined."""
    rec = Recording()
    for path in sorted(DATA.glob(f"{name}.part*.jsonl")):
        part = load(path)
        rec.url = rec.url or part.url
        rec.received += part.received
    return rec


def v1_as_v2(frame: Frame) -> Frame:
    """The v1 frame with its instType spelled as in v2; every other byte of meaning kept."""
    message = json.loads(frame.text)
    message["arg"]["instType"] = _V1_INST_TYPE[message["arg"]["instType"]]
    return Frame(frame.ts, json.dumps(message, separators=(",", ":")))


@cache
def ccxt() -> Recording:
    return load(DATA / "ccxt_bitget.jsonl")


def pushes(frames: Iterable[Frame], channel: str) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        message = json.loads(frame.text)
        if "data" in message and message["arg"]["channel"] == channel:
            out.append(message)
    return out


def subs(natives: Iterable[str], types: frozenset[DataType]) -> list[Subscription]:
    out = []
    for native in natives:
        canonical = ADAPTER.canonical_symbol(native)
        assert canonical is not None, native
        out.append(Subscription(native, canonical, types))
    return out


def new_codec(subscriptions: Sequence[Subscription]) -> BitgetCodec:
    [codec] = ADAPTER.make_codecs("bitget", subscriptions, ENDPOINTS)
    assert isinstance(codec, BitgetCodec)
    codec.connected(0)
    codec.actions()
    return codec


def feed(codec: BitgetCodec, frames: Iterable[Frame]) -> list[MarketEvent]:
    out: list[MarketEvent] = []
    for frame in frames:
        out += codec.receive(frame.text, frame.ts)
    return out


def statuses(events: Iterable[MarketEvent], kind: str | None = None) -> list[VenueStatus]:
    return [e for e in events if isinstance(e, VenueStatus) and (kind is None or e.kind == kind)]


def rebuild(events: Sequence[MarketEvent]) -> OrderBook:
    """A consumer's copy from published events; checks the chain and that it never crosses."""
    book = OrderBook()
    prev = None
    for event in events:
        if isinstance(event, BookSnapshot):
            book.apply_snapshot(parse_levels(event.bids), parse_levels(event.asks))
        elif isinstance(event, BookDelta):
            assert event.prev_sequence == prev
            book.apply_delta(parse_levels(event.bids), parse_levels(event.asks))
        else:
            continue
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
    pseq: int | None = None,
    checksum: int = 0,
    ts: str = "1700000000000",
) -> str:
    inst_type, inst_id = native.split(":")
    data: dict[str, Any] = {
        "asks": [list(lv) for lv in asks],
        "bids": [list(lv) for lv in bids],
        "checksum": checksum,
        "ts": ts,
    }
    if seq is not None:
        data["seq"] = seq
    if pseq is not None:
        data["pseq"] = pseq
    arg = {"instType": inst_type, "channel": "books", "instId": inst_id}
    return json.dumps({"action": action, "arg": arg, "data": [data], "ts": 1700000000001})


# ---------------------------------------------------------------------------------------------
# Real v1 books: checksums on every message


@pytest.mark.parametrize(
    ("name", "inst_type", "n_checked"),
    [("BITGET.ws.1.0", "SPOT", 443), ("BITGET.ws.2.0", "USDT-FUTURES", 194)],
)
def test_v1_books_validate_every_checksum(name: str, inst_type: str, n_checked: int) -> None:
    frames = [v1_as_v2(f) for f in v1_books(name).received]
    books = pushes(frames, "books")
    assert len(books) == n_checked  # the data files hold the books frames and their acks
    assert len(frames) - len(books) == sum('"event":"subscribe"' in f.text for f in frames)
    assert all(m["data"][0]["checksum"] != 0 for m in books)
    natives = sorted({f"{inst_type}:{m['arg']['instId']}" for m in books})
    codec = new_codec(subs(natives, BOOK))
    events = feed(codec, frames)
    snapshots = sum(m["action"] == "snapshot" for m in books)
    got = Counter(type(e).__name__ for e in events)
    assert got["BookSnapshot"] == snapshots == len(natives)
    assert got["BookDelta"] == n_checked - snapshots
    assert [s.kind for s in statuses(events)] == ["book_synced"] * len(natives)
    c = codec.counters
    assert (c.checksum_failures, c.book_gaps, c.book_resyncs, c.parse_errors) == (0, 0, 0, 0)
    assert codec.actions() == []
    for native in natives:
        inst_id = native.split(":")[1]
        raw = [m["data"][0] for m in books if m["arg"]["instId"] == inst_id]
        mine = [e for e in events if getattr(e, "native_symbol", "") == native]
        consumer = rebuild(mine)
        # The consumer's copy carries the checksum the venue sent with the last message.
        assert book_checksum(consumer) == raw[-1]["checksum"]
        published = [e for e in mine if isinstance(e, (BookSnapshot, BookDelta))]
        for event, data in zip(published, raw, strict=True):
            assert [list(lv) for lv in event.bids] == data["bids"]
            assert [list(lv) for lv in event.asks] == data["asks"]
            assert event.sequence == int(data["ts"])  # v1 has no seq: ts stands in
            assert event.ts_venue == int(data["ts"]) * 1_000_000


def test_corrupted_checksum_on_real_data_resyncs() -> None:
    frames = [v1_as_v2(f) for f in v1_books("BITGET.ws.2.0").received]
    uni = [i for i, f in enumerate(frames) if '"instId":"UNIUSDT"},"data"' in f.text]
    i = uni[5]
    message = json.loads(frames[i].text)
    message["data"][0]["checksum"] ^= 1
    frames[i] = Frame(frames[i].ts, json.dumps(message))
    codec = new_codec(subs(["USDT-FUTURES:DASHUSDT", "USDT-FUTURES:UNIUSDT"], BOOK))
    events = feed(codec, frames)
    bad = [s for s in statuses(events) if s.kind != "book_synced"]
    assert [s.kind for s in bad] == ["checksum_mismatch", "book_resync"]
    assert all(s.symbol == "UNI-USDT-PERP" for s in bad)
    assert codec.counters.checksum_failures == 1
    sent = [json.loads(a.text) for a in codec.actions() if isinstance(a, SendFrame)]
    arg = {"instType": "USDT-FUTURES", "channel": "books", "instId": "UNIUSDT"}
    assert sent == [{"op": "unsubscribe", "args": [arg]}, {"op": "subscribe", "args": [arg]}]
    uni_deltas = [e for e in events if isinstance(e, BookDelta) and e.symbol == "UNI-USDT-PERP"]
    assert len(uni_deltas) == 4  # after the snapshot, updates 1-4; the 5th is corrupted
    assert codec.counters.stale_deltas_dropped == len(uni) - 6
    dash = [e for e in events if isinstance(e, BookDelta) and e.symbol == "DASH-USDT-PERP"]
    assert len(dash) == 98 - 1


# ---------------------------------------------------------------------------------------------
# Real v2 (2026): tickers with funding/mark/OI, trades; books5 ignored


def test_ccxt_capture() -> None:
    frames = ccxt().received
    spot_types = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
    codec = new_codec(
        [*subs(["SPOT:BTCUSDT"], spot_types), *subs(["USDT-FUTURES:BTCUSDT"], ALL_FUTURES)]
    )
    events = feed(codec, frames)
    assert codec.counters.parse_errors == 0
    raw_trades = pushes(frames, "trade")
    raw_tickers = pushes(frames, "ticker")
    assert len(pushes(frames, "books5")) == 4
    got = Counter(type(e).__name__ for e in events)
    assert got["Trade"] == sum(len(m["data"]) for m in raw_trades) == 8
    assert got["Ticker"] == len(raw_tickers) == 6
    # The futures ticker pushes repeat funding, mark and OI: one event each.
    assert (got["FundingRate"], got["MarkPrice"], got["OpenInterest"]) == (1, 1, 1)
    assert set(got) == {"Trade", "Ticker", "FundingRate", "MarkPrice", "OpenInterest"}

    trades = [e for e in events if isinstance(e, Trade)]
    futures_trades = [t for t in trades if t.symbol == "BTC-USDT-PERP"]
    # The snapshot's trades come out oldest first, then the update.
    assert [t.trade_id for t in futures_trades] == [
        "1471423021987938304",
        "1471423022176681984",
        "1471423022176681986",
        "1471423027117572096",
    ]
    assert (futures_trades[-1].price, futures_trades[-1].size, futures_trades[-1].side) == (
        "63961",
        "0.7596",
        "buy",
    )
    assert futures_trades[-1].ts_venue == 1786540508059 * 1_000_000
    assert futures_trades[-1].native_symbol == "USDT-FUTURES:BTCUSDT"
    spot_trade = next(t for t in trades if t.symbol == "BTC-USDT")
    assert encode(spot_trade).count(b'"size":"0.000019"') == 1

    [funding] = [e for e in events if isinstance(e, FundingRate)]
    assert (funding.symbol, funding.rate, funding.next_funding_ts) == (
        "BTC-USDT-PERP",
        "0.00001",
        1786550400000 * 1_000_000,
    )
    assert (funding.mark_price, funding.index_price) == ("63997.5", "64023.4365")
    [mark] = [e for e in events if isinstance(e, MarkPrice)]
    assert (mark.mark_price, mark.index_price) == ("63997.5", "64023.4365")
    [oi] = [e for e in events if isinstance(e, OpenInterest)]
    assert oi.open_interest == "37698.1952000001167"  # every digit as sent
    assert b'"open_interest":"37698.1952000001167"' in encode(oi)
    tickers = [e for e in events if isinstance(e, Ticker)]
    raw = [m["data"][0] for m in raw_tickers]
    for ticker, data in zip(tickers, raw, strict=True):
        assert (ticker.bid_price, ticker.bid_size) == (data["bidPr"], data["bidSz"])
        assert (ticker.ask_price, ticker.ask_size) == (data["askPr"], data["askSz"])
        assert ticker.last_price == data["lastPr"]
        assert ticker.ts_venue == int(data["ts"]) * 1_000_000

    messages = [to_message(e) for e in events]
    assert len({m.msg_id for m in messages}) == len(messages)
    assert "market.bitget.btc-usdt-perp.open_interest" in {m.subject for m in messages}


def test_ticker_types_are_separately_selectable() -> None:
    codec = new_codec(subs(["USDT-FUTURES:BTCUSDT"], frozenset({DataType.FUNDING_RATE})))
    events = feed(codec, ccxt().received)
    assert [type(e) for e in events] == [FundingRate]
    codec.connected(1)  # a new connection publishes the current values again
    codec.actions()
    assert len(feed(codec, ccxt().received)) == 1


# ---------------------------------------------------------------------------------------------
# seq / pseq chain (v2)


def test_futures_pseq_chain_and_gap() -> None:
    native = "USDT-FUTURES:BTCUSDT"
    codec = new_codec(subs([native, "USDT-FUTURES:ETHUSDT"], BOOK))
    out = codec.receive(
        book_frame(native, "snapshot", [("1", "1")], [("2", "1")], seq=100, pseq=0), 1
    )
    assert isinstance(out[0], BookSnapshot) and out[0].sequence == 100
    [d1] = codec.receive(book_frame(native, "update", [("1", "2")], seq=105, pseq=100), 2)
    assert isinstance(d1, BookDelta)
    assert (d1.first_sequence, d1.prev_sequence, d1.sequence) == (None, 100, 105)
    out = codec.receive(book_frame(native, "update", [("1", "3")], seq=110, pseq=106), 3)
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]
    assert "pseq=106" in out[0].detail
    assert (codec.counters.book_gaps, codec.counters.book_resyncs) == (1, 1)
    assert [json.loads(a.text)["op"] for a in codec.actions() if isinstance(a, SendFrame)] == [
        "unsubscribe",
        "subscribe",
    ]
    assert codec.receive(book_frame(native, "update", seq=111, pseq=110), 4) == []
    out = codec.receive(
        book_frame(native, "snapshot", [("1", "9")], [("2", "1")], seq=200, pseq=0), 5
    )
    assert isinstance(out[0], BookSnapshot) and out[0].bids == [("1", "9")]
    assert msg_id(out[0]) != msg_id(d1)


def test_spot_seq_only_must_increase() -> None:
    native = "SPOT:BTCUSDT"
    codec = new_codec(subs([native], BOOK))
    codec.receive(book_frame(native, "snapshot", [("1", "1")], [("2", "1")], seq=10), 1)
    [delta] = codec.receive(book_frame(native, "update", [("1", "2")], seq=12), 2)
    assert isinstance(delta, BookDelta) and delta.prev_sequence == 10
    out = codec.receive(book_frame(native, "update", [("1", "3")], seq=12), 3)
    assert [s.kind for s in statuses(out)] == ["book_gap", "book_resync"]


def test_crossed_book_resyncs() -> None:
    native = "SPOT:BTCUSDT"
    codec = new_codec(subs([native], BOOK))
    codec.receive(book_frame(native, "snapshot", [("1", "1")], [("2", "1")], seq=10), 1)
    [status] = codec.receive(book_frame(native, "update", [("2.5", "1")], seq=11), 2)
    assert status.kind == "book_resync" and "crossed" in status.detail


def test_update_before_snapshot_is_dropped() -> None:
    codec = new_codec(subs(["SPOT:BTCUSDT"], BOOK))
    assert codec.receive(book_frame("SPOT:BTCUSDT", "update", [("1", "1")], seq=2), 1) == []
    assert codec.counters.stale_deltas_dropped == 1


# ---------------------------------------------------------------------------------------------
# Resync asked for from outside (Codec.resync) and Codec.synced


def venue_snapshot(frames: Iterable[Frame], inst_id: str) -> str:
    """The ``books`` snapshot the venue would send for ``inst_id`` after ``frames``: its
    snapshot and updates in them merged (wire strings kept), with the checksum and ts of
    the last one, as a fresh subscription would be answered then."""
    sides: dict[str, dict[str, list[str]]] = {"bids": {}, "asks": {}}
    last: dict[str, Any] = {}
    arg: dict[str, str] = {}
    for message in pushes(frames, "books"):
        if message["arg"]["instId"] != inst_id:
            continue
        arg = message["arg"]
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
        "checksum": last["checksum"],
        "ts": last["ts"],
    }
    return json.dumps({"action": "snapshot", "arg": arg, "data": [data]})


def futures_tape(inst_id: str) -> list[Frame]:
    """ccxt's real USDT-FUTURES trade and ticker frames, relabelled to ``inst_id``."""
    out = []
    for frame in ccxt().received:
        message = json.loads(frame.text)
        arg = message.get("arg", {})
        futures = arg.get("instType") == "USDT-FUTURES"
        if "data" in message and futures and arg["channel"] in ("trade", "ticker"):
            out.append(Frame(frame.ts, frame.text.replace("BTCUSDT", inst_id)))
    return out


def test_resync_resubscribes_that_book_only() -> None:
    frames = [v1_as_v2(f) for f in v1_books("BITGET.ws.2.0").received]
    uni = [i for i, f in enumerate(frames) if '"instId":"UNIUSDT"},"data"' in f.text]
    subscriptions = [
        *subs(["USDT-FUTURES:DASHUSDT"], BOOK),
        *subs(["USDT-FUTURES:UNIUSDT"], ALL_FUTURES),
    ]
    codec = new_codec(subscriptions)
    assert not codec.synced
    events = feed(codec, frames[: uni[10]])  # both snapshots, UNI's first 9 updates
    assert codec.synced and [s.kind for s in statuses(events)] == ["book_synced"] * 2

    [status] = codec.resync("UNI-USDT-PERP", "consumer dropped l2d:7", 5)
    assert (status.kind, status.symbol, status.native_symbol) == (
        "book_resync",
        "UNI-USDT-PERP",
        "USDT-FUTURES:UNIUSDT",
    )
    assert "consumer dropped l2d:7" in status.detail and status.ts_recv == 5
    assert codec.counters.book_resyncs == 1
    arg = '[{"instType":"USDT-FUTURES","channel":"books","instId":"UNIUSDT"}]'
    assert codec.actions() == [
        SendFrame(f'{{"op":"unsubscribe","args":{arg}}}'),
        SendFrame(f'{{"op":"subscribe","args":{arg}}}'),
    ]
    assert not codec.synced

    # Until the new snapshot: UNI's in-flight updates are dropped; its trades and ticker
    # (real futures frames, relabelled) and DASH's book go on.
    cut = uni[50]
    tape = futures_tape("UNIUSDT")
    held = feed(codec, [*frames[uni[10] : cut], *tape])
    assert not [e for e in held if isinstance(e, (BookSnapshot, BookDelta)) and "UNI" in e.symbol]
    assert codec.counters.stale_deltas_dropped == 40
    dash = [e for e in held if isinstance(e, BookDelta)]
    assert dash and all(e.symbol == "DASH-USDT-PERP" for e in dash)
    reference = new_codec(subscriptions)
    want = Counter(type(e).__name__ for e in feed(reference, tape))
    assert want.keys() == {"Trade", "Ticker", "FundingRate", "MarkPrice", "OpenInterest"}
    uni_other = Counter(type(e).__name__ for e in held if e.symbol == "UNI-USDT-PERP")
    assert uni_other == want
    assert statuses(held) == []
    # Asked again while the snapshot is awaited: reported, no second resubscribe.
    [again] = codec.resync("UNI-USDT-PERP", "again", 6)
    assert again.kind == "book_resync" and "awaited" in again.detail
    assert codec.actions() == [] and not codec.synced

    # The fresh snapshot, as the venue has the book now: published and checked (its
    # checksum is the real one), then UNI's updates flow again.
    snap = venue_snapshot(frames[:cut], "UNIUSDT")
    snapshot, synced = codec.receive(snap, frames[cut].ts - 1)
    assert isinstance(snapshot, BookSnapshot) and snapshot.symbol == "UNI-USDT-PERP"
    assert isinstance(synced, VenueStatus) and synced.kind == "book_synced"
    assert codec.synced
    rest = feed(codec, frames[cut:])
    deltas = [e for e in rest if isinstance(e, BookDelta) and e.symbol == "UNI-USDT-PERP"]
    assert len(deltas) == len(uni) - 50
    consumer = rebuild([snapshot, *deltas])
    last = [m for m in pushes(frames, "books") if m["arg"]["instId"] == "UNIUSDT"][-1]
    assert book_checksum(consumer) == last["data"][0]["checksum"]
    c = codec.counters
    assert (c.checksum_failures, c.book_gaps, c.book_resyncs, c.parse_errors) == (0, 0, 2, 0)
    assert codec.actions() == []


def test_resync_of_unknown_or_bookless_symbol_is_a_no_op() -> None:
    frames = [v1_as_v2(f) for f in v1_books("BITGET.ws.2.0").received]
    codec = new_codec(subs(["USDT-FUTURES:DASHUSDT", "USDT-FUTURES:UNIUSDT"], BOOK))
    feed(codec, frames)
    assert codec.synced
    assert codec.resync("BTC-USDT-PERP", "x", 1) == []
    assert codec.resync("USDT-FUTURES:UNIUSDT", "x", 1) == []  # a native is no canonical
    assert codec.actions() == [] and codec.counters.book_resyncs == 0
    assert codec.synced
    no_book = ALL_FUTURES - BOOK
    tickers = new_codec(subs(["USDT-FUTURES:BTCUSDT"], no_book))
    assert tickers.synced  # no book on the connection
    assert tickers.resync("BTC-USDT-PERP", "x", 1) == []
    assert tickers.actions() == []
    assert any(isinstance(e, Ticker) for e in feed(tickers, ccxt().received))
    assert tickers.synced and tickers.counters.book_resyncs == 0


def test_resync_before_the_first_snapshot() -> None:
    frames = [v1_as_v2(f) for f in v1_books("BITGET.ws.2.0").received]
    codec = new_codec(subs(["USDT-FUTURES:UNIUSDT"], BOOK))
    # The subscription's snapshot is already on its way: no second request.
    [status] = codec.resync("UNI-USDT-PERP", "x", 1)
    assert status.kind == "book_resync"
    assert codec.actions() == []
    events = feed(codec, frames)
    assert [s.kind for s in statuses(events)] == ["book_synced"]
    assert codec.synced
    codec.connected(2)
    assert not codec.synced


# ---------------------------------------------------------------------------------------------
# Control frames and garbage


def test_control_frames() -> None:
    codec = new_codec(subs(["SPOT:BTCUSDT"], frozenset({DataType.TRADE})))
    assert codec.keepalive() == "ping"
    assert codec.ping_interval is not None and codec.ping_interval <= 30
    assert codec.max_lifetime is not None and codec.max_lifetime < 24 * 3600
    assert codec.receive("pong", 1) == []
    ack = '{"event":"subscribe","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"}}'
    assert codec.receive(ack, 2) == []
    error = (
        '{"event":"error","arg":{"instType":"USDT-FUTURES","channel":"books","instId":"X"},'
        '"code":30001,"msg":"doesn\'t exist","op":"subscribe"}'
    )
    [status] = codec.receive(error, 3)
    assert status.kind == "venue_error" and "30001" in status.detail
    # Other instTypes, channels and instruments are ignored.
    for frame in ccxt().received:
        if '"USDT-FUTURES"' in frame.text or '"ticker"' in frame.text:
            assert codec.receive(frame.text, frame.ts) == []
    assert codec.counters.parse_errors == 0


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\xff",
        "{",
        "[]",
        "{}",
        "null",
        '{"action":"update","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":{}}',
        '{"action":"update","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1","price":"x","size":"1","side":"buy","tradeId":"1"}]}',
        '{"action":"update","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1.5","price":"1","size":"1","side":"buy","tradeId":"1"}]}',
        '{"action":"update","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1","price":"1","size":"1","side":"long","tradeId":"1"}]}',
        '{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":[{"ts":"1","bidPr":"Infinity"}]}',
        book_frame("SPOT:BTCUSDT", "snapshot", [("NaN", "1")]),
        book_frame("SPOT:BTCUSDT", "snapshot", [("1", "-1")]),
        book_frame("SPOT:BTCUSDT", "snapshot", ts="x"),
        book_frame("SPOT:BTCUSDT", "partial"),
    ],
)  # fmt: skip
def test_garbage_is_a_parse_error(frame: str | bytes) -> None:
    types = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
    codec = new_codec(subs(["SPOT:BTCUSDT"], types))
    [status] = codec.receive(frame, 99)
    assert isinstance(status, VenueStatus) and status.kind == "parse_error"
    assert status.detail and len(status.detail) <= 200
    assert codec.counters.parse_errors == 1
    assert codec.actions() == []
    to_message(status)


# ---------------------------------------------------------------------------------------------
# Subscriptions, sharding, symbols


def test_subscribe_frames_and_sharding() -> None:
    natives = [f"SPOT:C{i}USDT" for i in range(40)]
    types = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
    codecs = ADAPTER.make_codecs("bitget", subs(natives, types), ENDPOINTS)
    assert len(codecs) == 3  # 16 + 16 + 8 instruments of 3 channels
    seen = []
    for codec in codecs:
        assert isinstance(codec, BitgetCodec)
        assert codec.url == "wss://ws.bitget.com/v2/ws/public"
        codec.connected(0)
        [frame] = codec.actions()
        assert isinstance(frame, SendFrame)
        request = json.loads(frame.text)
        assert request["op"] == "subscribe"
        assert len(request["args"]) <= MAX_CHANNELS_PER_CONNECTION
        seen += [a["instId"] for a in request["args"] if a["channel"] == "books"]
        assert {a["instType"] for a in request["args"]} == {"SPOT"}
    assert sorted(seen) == sorted(n.split(":")[1] for n in natives)
    # Futures ticker-derived types share one ticker channel.
    [codec] = ADAPTER.make_codecs("bitget", subs(["USDT-FUTURES:BTCUSDT"], ALL_FUTURES), ENDPOINTS)
    assert isinstance(codec, BitgetCodec)
    assert [a["channel"] for a in codec.args] == ["trade", "ticker", "books"]


def test_make_codecs_validates() -> None:
    with pytest.raises(ValueError, match="instType"):
        ADAPTER.make_codecs("bitget", [Subscription("BTCUSDT", "BTC-USDT", BOOK)], ENDPOINTS)
    with pytest.raises(ValueError, match="funding_rate"):
        ADAPTER.make_codecs(
            "bitget",
            [Subscription("SPOT:BTCUSDT", "BTC-USDT", frozenset({DataType.FUNDING_RATE}))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="contract_size"):
        ADAPTER.make_codecs(
            "bitget",
            [Subscription("USDT-FUTURES:BTCUSDT", "BTC-USDT-PERP", BOOK, Decimal("0.001"))],
            ENDPOINTS,
        )
    with pytest.raises(ValueError, match="liquidation"):
        ADAPTER.make_codecs(
            "bitget",
            [
                Subscription(
                    "USDT-FUTURES:BTCUSDT", "BTC-USDT-PERP", frozenset({DataType.LIQUIDATION})
                )
            ],
            ENDPOINTS,
        )
    merged = [
        Subscription("spot:btcusdt", "BTC-USDT", frozenset({DataType.TRADE})),
        Subscription("SPOT:BTCUSDT", "BTC-USDT", frozenset({DataType.TICKER})),
        Subscription("USDT-FUTURES:BTCUSDT", "BTC-USDT-PERP", frozenset({DataType.TICKER})),
    ]
    endpoints = Endpoints(ws_url="ws://127.0.0.1:9/v2/ws/public", rest_url="http://127.0.0.1:9")
    [codec] = ADAPTER.make_codecs("bitget-replay", merged, endpoints)
    assert isinstance(codec, BitgetCodec)
    assert codec.url == "ws://127.0.0.1:9/v2/ws/public"
    assert codec.args == [
        {"instType": "SPOT", "channel": "trade", "instId": "BTCUSDT"},
        {"instType": "SPOT", "channel": "ticker", "instId": "BTCUSDT"},
        {"instType": "USDT-FUTURES", "channel": "ticker", "instId": "BTCUSDT"},
    ]


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("SPOT:BTCUSDT", "BTC-USDT"),
        ("spot:ethbtc", "ETH-BTC"),
        ("SPOT:USDCUSDT", "USDC-USDT"),
        ("USDT-FUTURES:BTCUSDT", "BTC-USDT-PERP"),
        ("USDT-FUTURES:1000PEPEUSDT", "1000PEPE-USDT-PERP"),
        ("COIN-FUTURES:BTCUSD", "BTC-USD-PERP"),
        ("COIN-FUTURES:BTCUSD_231229", "BTC-USD-231229"),
        ("USDC-FUTURES:BTCPERP", "BTC-USDC-PERP"),
        ("BTCUSDT", None),
        ("MARGIN:BTCUSDT", None),
        ("SPOT:FOOBAR", None),
        ("USDT-FUTURES:BTCUSD", None),
        ("SPOT:BTC-USDT", None),
        ("", None),
    ],
)
def test_canonical_symbol(native: str, canonical: str | None) -> None:
    assert ADAPTER.canonical_symbol(native) == canonical


def test_adapter_is_registered() -> None:
    assert adapters.load("bitget") is ADAPTER
    assert ADAPTER.name == "bitget"
    assert DataType.OPEN_INTEREST in ADAPTER.data_types
    assert DataType.LIQUIDATION not in ADAPTER.data_types
