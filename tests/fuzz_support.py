"""What ``tests/test_fuzz_codecs.py`` fuzzes with, and what it holds every codec to.

* :func:`scenarios`: one :class:`Scenario` per venue setup the codec tests drive from real
  captures (``tests/data``): the subscriptions, the captured frames in order and the REST
  snapshot bodies recorded with them.
* :class:`Checker`: the codecs of one scenario, fed frames and snapshot bodies under the
  codec contract (:mod:`relay.codec`). Nothing may escape ``connected``/``receive``/
  ``snapshot_received``/``snapshot_failed``/``resync``; every event must be a relay event
  that :func:`relay.wire.to_message` encodes and that decodes back to itself; prices and
  sizes must be finite decimal text; a frame that is not JSON must count a parse error; a
  book delta must follow a snapshot of its book published since the last (re)connect or
  resync, and chain onto it (``prev_sequence``). ``internal error`` statuses are collected.
* :class:`Mutator`: seeded mutations of captured frames (truncation, byte flips, spans
  deleted or duplicated, values swapped for other types and absurd numbers, keys dropped or
  renamed, bytes and invalid UTF-8, empty frames).
* :func:`shaped`: a Hypothesis strategy for JSON shaped like a given venue message: the
  same keys and nesting, with values drawn around the captured ones.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from hypothesis import strategies as st

import adapters
from relay.captures import Frame, Recording, load
from relay.codec import STATUS_DETAIL_MAX, Codec, FetchSnapshot, Reconnect, SendFrame, Subscription
from relay.events import (
    STATUS_KINDS,
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
    check_num,
)
from relay.wire import encode, to_message

DATA = Path(__file__).parent / "data"
INT64 = range(-(2**63), 2**63)

# ---------------------------------------------------------------------------------------------
# Scenarios: what each venue's own tests feed their codecs


@dataclass(frozen=True)
class Scenario:
    label: str
    """``venue/capture``: names the test."""
    adapter: str
    subscriptions: tuple[Subscription, ...]
    frames: tuple[str, ...]
    """The captured frames, in arrival order."""
    snapshots: Mapping[str, str] = field(default_factory=dict)
    """``FetchSnapshot.key`` → the REST body recorded in the same session."""
    credentials: Mapping[str, str] = field(default_factory=dict)
    keepalive_texts: frozenset[str] = frozenset()
    """Frames the venue sends that are not JSON and not an error (``pong``)."""

    def build(self) -> list[Codec]:
        adapter = adapters.load(self.adapter)
        return adapter.make_codecs(
            self.adapter,
            list(self.subscriptions),
            adapter.default_endpoints,
            credentials=dict(self.credentials),
        )

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(sub.symbol for sub in self.subscriptions)


def _subs(
    adapter: str,
    natives: Iterable[str],
    types: Iterable[DataType],
    contract_size: Decimal | None = None,
) -> list[Subscription]:
    canonical_symbol = adapters.load(adapter).canonical_symbol
    out = []
    for native in natives:
        canonical = canonical_symbol(native)
        assert canonical is not None, native
        out.append(Subscription(native, canonical, frozenset(types), contract_size))
    return out


def _texts(*recordings: Recording) -> tuple[str, ...]:
    return tuple(frame.text for rec in recordings for frame in rec.received)


def _joined(pattern: str, directory: Path) -> Recording:
    rec = Recording()
    for path in sorted(directory.glob(pattern)):
        rec.received += load(path).received
    assert rec.received, pattern
    return rec


def _snapshot_bodies(rec: Recording) -> dict[str, str]:
    return {parse_qs(urlsplit(r.url).query)["symbol"][0]: r.body for r in rec.http}


def _bitget_v1_as_v2(rec: Recording) -> Recording:
    """Bitget's v1 book captures with the instType spelled as in v2 (as test_bitget does)."""
    v2 = {"sp": "SPOT", "mc": "USDT-FUTURES"}
    out = Recording()
    for frame in rec.received:
        message = json.loads(frame.text)
        message["arg"]["instType"] = v2[message["arg"]["instType"]]
        out.received.append(Frame(frame.ts, json.dumps(message, separators=(",", ":"))))
    return out


def _bitget_natives(rec: Recording) -> list[str]:
    natives = set()
    for frame in rec.received:
        arg = json.loads(frame.text)["arg"]
        natives.add(f"{arg['instType']}:{arg['instId']}")
    return sorted(natives)


def _deribit_option_natives(rec: Recording) -> list[str]:
    seen: dict[str, None] = {}
    for frame in rec.received:
        message = json.loads(frame.text)
        if message.get("method") == "subscription":
            seen[message["params"]["data"]["instrument_name"]] = None
    return list(seen)


ALPACA_CREDENTIALS: Mapping[str, str] = {"key_id": "PKFUZZ0123456789", "secret_key": "fuzz"}


@cache
def scenarios() -> dict[str, Scenario]:
    """Every venue setup, by label."""
    trio_types = (DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK)
    out: list[Scenario] = []

    rec = load(DATA / "cryptofeed" / "BINANCE.ws.1.0")
    natives = ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR")
    out.append(
        Scenario(
            "binance/cryptofeed",
            "binance",
            tuple(_subs("binance", natives, trio_types)),
            _texts(rec),
            _snapshot_bodies(rec),
        )
    )

    usdm_types = adapters.load("binance_usdm").data_types
    rec = load(DATA / "binance_usdm" / "cryptofeed_futures.jsonl")
    out.append(
        Scenario(
            "binance_usdm/cryptofeed",
            "binance_usdm",
            tuple(_subs("binance_usdm", ("AKROUSDT", "CTKUSDT"), usdm_types)),
            _texts(rec),
            _snapshot_bodies(rec),
        )
    )
    ccxt = load(DATA / "binance_usdm" / "ccxt_usdm.jsonl")
    nautilus = load(DATA / "binance_usdm" / "nautilus_usdm.jsonl")
    out.append(
        Scenario(
            "binance_usdm/ccxt+nautilus",
            "binance_usdm",
            tuple(
                _subs("binance_usdm", ("BTCUSDT", "BNBUSDT"), usdm_types)
                + _subs("binance_usdm", ("ETHUSDT",), usdm_types, Decimal("10"))
            ),
            _texts(ccxt, nautilus),
            {**_snapshot_bodies(ccxt), **_snapshot_bodies(nautilus)},
        )
    )

    for category, types in (("spot", trio_types), ("linear", tuple(DataType))):
        out.append(
            Scenario(
                f"bybit/{category}",
                "bybit",
                tuple(_subs("bybit", (f"{category}:BTCUSDT",), types)),
                _texts(load(DATA / "bybit" / f"ccxt_{category}.jsonl")),
            )
        )

    okx_all = adapters.load("okx").data_types
    out.append(
        Scenario(
            "okx/cryptofeed",
            "okx",
            tuple(_subs("okx", ("BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT"), trio_types)),
            _texts(_joined("OKX.ws.1.0.part*.jsonl", DATA / "okx")),
            keepalive_texts=frozenset({"pong"}),
        )
    )
    out.append(
        Scenario(
            "okx/ccxt",
            "okx",
            tuple(
                _subs("okx", ("BTC-USDT",), trio_types)
                + _subs("okx", ("BTC-USDT-SWAP",), okx_all, Decimal("0.01"))
            ),
            _texts(load(DATA / "okx" / "ccxt_okx.jsonl")),
            keepalive_texts=frozenset({"pong"}),
        )
    )

    for name in ("BITGET.ws.1.0", "BITGET.ws.2.0"):
        rec = _bitget_v1_as_v2(_joined(f"{name}.part*.jsonl", DATA / "bitget"))
        out.append(
            Scenario(
                f"bitget/{name}",
                "bitget",
                tuple(_subs("bitget", _bitget_natives(rec), (DataType.L2_ORDERBOOK,))),
                _texts(rec),
                keepalive_texts=frozenset({"pong"}),
            )
        )
    futures_types = (
        *trio_types,
        DataType.FUNDING_RATE,
        DataType.MARK_PRICE,
        DataType.OPEN_INTEREST,
    )
    out.append(
        Scenario(
            "bitget/ccxt",
            "bitget",
            tuple(
                _subs("bitget", ("SPOT:BTCUSDT",), trio_types)
                + _subs("bitget", ("USDT-FUTURES:BTCUSDT",), futures_types)
            ),
            _texts(load(DATA / "bitget" / "ccxt_bitget.jsonl")),
            keepalive_texts=frozenset({"pong"}),
        )
    )

    kraken_files = (
        "book_depth10.jsonl",
        "book_repeated_snapshot.jsonl",
        "book_thin_then_deep.jsonl",
        "ticker.jsonl",
        "ohlc.jsonl",
        "trade_nautilus.jsonl",
    )
    out.append(
        Scenario(
            "kraken/v2",
            "kraken",
            tuple(_subs("kraken", ("BTC/USD", "DOGE/USDT"), trio_types)),
            _texts(*(load(DATA / "kraken" / name) for name in kraken_files)),
        )
    )

    coinbase_files = ("nautilus_fixtures.jsonl", "market_trades.jsonl", "ticker.jsonl")
    out.append(
        Scenario(
            "coinbase/advanced",
            "coinbase",
            tuple(_subs("coinbase", ("BTC-USD", "ETH-USD"), trio_types)),
            _texts(*(load(DATA / "coinbase" / name) for name in coinbase_files)),
        )
    )

    deribit_all = adapters.load("deribit").data_types
    out.append(
        Scenario(
            "deribit/perpetual",
            "deribit",
            (Subscription("BTC-PERPETUAL", "BTC-USD-PERP", deribit_all),),
            _texts(load(DATA / "deribit" / "ccxt_btc_perpetual.jsonl")),
        )
    )
    rec = load(DATA / "deribit" / "cryptofeed_options_raw.jsonl")
    out.append(
        Scenario(
            "deribit/options",
            "deribit",
            # Options have no canonical spelling: config names them by their native.
            tuple(Subscription(n, n, frozenset(trio_types)) for n in _deribit_option_natives(rec)),
            _texts(rec),
        )
    )

    hl_types = adapters.load("hyperliquid").data_types - {DataType.LIQUIDATION}
    out.append(
        Scenario(
            "hyperliquid/ccxt+nautilus",
            "hyperliquid",
            tuple(_subs("hyperliquid", ("BTC",), hl_types)),
            _texts(load(DATA / "hyperliquid" / "ccxt_nautilus_btc.jsonl")),
        )
    )

    alpaca_subs = [
        *_subs("alpaca", ("BTC/USD",), (DataType.TRADE, DataType.L2_ORDERBOOK)),
        *_subs("alpaca", ("ETH/USDT", "ETH/USD", "BAT/USD", "AMD"), (DataType.TICKER,)),
        *_subs("alpaca", ("AVAX/USD",), (DataType.TRADE,)),
    ]
    out.append(
        Scenario(
            "alpaca/docs",
            "alpaca",
            tuple(alpaca_subs),
            _texts(load(DATA / "alpaca" / "doc_examples.jsonl")),
            credentials=ALPACA_CREDENTIALS,
        )
    )
    return {s.label: s for s in out}


# ---------------------------------------------------------------------------------------------
# Frame classification


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def not_json(data: str | bytes, keepalive_texts: frozenset[str] = frozenset()) -> bool | None:
    """``True`` when ``data`` is no JSON text at all (RFC 8259, UTF-8), so a codec must count
    a parse error for it; ``False`` when it is JSON; ``None`` when that is not cheaply told
    (nested deeper than Python's parser goes)."""
    if isinstance(data, bytes):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return True
    else:
        text = data
    if text in keepalive_texts:
        return False
    try:
        msgspec.json.decode(text)
        return False  # msgspec takes nothing that is not JSON
    except (msgspec.DecodeError, RecursionError):
        pass  # nor all that is: 1e400, nesting, huge integers
    try:
        json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return None
    except ValueError as exc:
        # Python's own cap on integer digits is no JSON rule.
        return None if "integer string conversion" in str(exc) else True
    return False


# ---------------------------------------------------------------------------------------------
# The checker

NUM_FIELDS: Mapping[type, tuple[str, ...]] = {
    Trade: ("price", "size"),
    Ticker: ("bid_price", "bid_size", "ask_price", "ask_size", "last_price"),
    FundingRate: ("rate", "mark_price", "index_price"),
    Liquidation: ("price", "size"),
    MarkPrice: ("mark_price", "index_price"),
    OpenInterest: ("open_interest", "open_interest_value"),
    BookSnapshot: (),
    BookDelta: (),
    VenueStatus: (),
}
INT_FIELDS = ("ts_venue", "ts_recv", "sequence", "first_sequence", "prev_sequence")
SIZE_FIELDS = frozenset({"size", "bid_size", "ask_size", "open_interest"})
RESYNC_KINDS = frozenset({"book_gap", "book_resync", "checksum_mismatch"})
PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")
_decoder = msgspec.json.Decoder(MarketEvent)


def short(data: object, limit: int = 300) -> str:
    """``repr(data)`` cut to about ``limit`` characters (without a repr of all of it)."""
    if isinstance(data, str | bytes) and len(data) > limit:
        return f"{data[:limit]!r}… ({len(data)} chars)"
    text = repr(data)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def check_decimal(text: object, what: str, *, size: bool = False) -> None:
    """A price or size as the contract has it: text that is a finite decimal number."""
    assert isinstance(text, str), f"{what}: {text!r} is not text"
    check_num(text)  # raises ValueError: not a finite decimal number
    if size:
        assert Decimal(text) >= 0 or Decimal(text).is_zero(), f"{what}: negative size {text!r}"


def check_levels(
    levels: object, what: str, prices: set[str] | None = None, sizes: set[str] | None = None
) -> None:
    """Levels as the contract has them: ``(price, size)`` text, sizes not negative.
    ``prices``/``sizes``: texts already checked as such, skipped (and added to)."""
    assert isinstance(levels, list), f"{what}: {levels!r} is not a list"
    prices = set() if prices is None else prices
    sizes = set() if sizes is None else sizes
    for level in levels:
        assert isinstance(level, tuple | list) and len(level) == 2, f"{what}: level {level!r}"
        price, size = level
        if price not in prices:
            check_decimal(price, f"{what} price")
            prices.add(price)
        if size not in sizes:
            check_decimal(size, f"{what} size", size=True)
            sizes.add(size)


class Checker:
    """The codecs of a scenario, driven the way the venue shell drives them, checked after
    every call. ``frames`` counts frames fed (each goes to every codec of the scenario)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.codecs = scenario.build()
        assert self.codecs, scenario.label
        self.symbols = scenario.symbols
        self.books: list[dict[str, int]] = [{} for _ in self.codecs]
        """Per codec: symbol → ``sequence`` of the last book message published since the
        last (re)connect or resync (absent: a delta now would be a contract breach)."""
        self.pending: list[tuple[int, FetchSnapshot]] = []
        self.reconnects: set[int] = set()
        self.now = 1_700_000_000_000_000_000
        self.frames = 0
        self.bodies = 0
        self.events: Counter[str] = Counter()
        self.internal_errors: list[str] = []
        self.slowest = (0.0, "")
        self._prices: set[str] = set()
        self._sizes: set[str] = set()
        self.observations: Counter[str] = Counter()
        """Gaps by kind: counts of events with a number in exponent notation (``1E-8``,
        which check_num lets through by design). Reported, not failed."""
        self.observed: dict[str, str] = {}
        """The first example of each gap."""

    # -- driving ------------------------------------------------------------------------------

    def tick(self, ns: int = 1_000_000) -> None:
        self.now += ns

    def connect(self, index: int | None = None) -> None:
        """A new connection for codec ``index`` (all when ``None``)."""
        for i in range(len(self.codecs)) if index is None else (index,):
            self.tick()
            self.books[i].clear()
            self.reconnects.discard(i)
            events = self._call(i, "connected", lambda c: c.connected(self.now), None)
            self._check(i, events)
            self._take_actions(i)

    def feed(self, data: str | bytes) -> None:
        """One frame, to every codec of the scenario."""
        self.tick()
        self.frames += 1
        junk = not_json(data, self.scenario.keepalive_texts)
        for i, codec in enumerate(self.codecs):
            before = codec.counters.parse_errors
            frames_before = codec.counters.frames
            events = self._call(i, "receive", lambda c: c.receive(data, self.now), data)
            assert codec.counters.frames == frames_before + 1
            self._check(i, events, data)
            if junk:
                assert codec.counters.parse_errors > before, (
                    f"{self.scenario.label}: a frame that is not JSON counted no parse error: "
                    f"{short(data)} -> {events!r}"
                )
                assert any(isinstance(e, VenueStatus) and e.kind == "parse_error" for e in events)
            self._take_actions(i)

    def answer(self, choose: Callable[[str, str], str | bytes | None]) -> int:
        """Answer the FetchSnapshots out now: ``choose(key, recorded body)`` gives the body
        to deliver, or ``None`` for a failed fetch. Returns how many were answered."""
        pending, self.pending = self.pending, []
        for i, action in pending:
            self.tick()
            recorded = self.scenario.snapshots.get(action.key, "")
            body = choose(action.key, recorded)
            codec = self.codecs[i]
            if body is None:
                events = self._call(
                    i,
                    "snapshot_failed",
                    lambda c, key=action.key: c.snapshot_failed(key, "503"),
                    None,
                )
            else:
                raw = body.encode() if isinstance(body, str) else body
                self.bodies += 1
                before = codec.counters.parse_errors
                events = self._call(
                    i,
                    "snapshot_received",
                    lambda c, key=action.key, raw=raw: c.snapshot_received(key, raw, self.now),
                    raw,
                )
                if not_json(raw) and codec.counters.parse_errors == before:
                    # Only an answer the codec no longer waits for may go unreported.
                    assert events == [], f"{self.scenario.label}: {short(raw)} -> {events!r}"
            self._check(i, events, body)
            self._take_actions(i)
        return len(pending)

    def resync(self, index: int, symbol: str, reason: str = "fuzz") -> None:
        """Downstream asks codec ``index`` to rebuild ``symbol``'s book."""
        self.tick()
        self.books[index].pop(symbol, None)
        events = self._call(index, "resync", lambda c: c.resync(symbol, reason, self.now), None)
        self._check(index, events)
        self._take_actions(index)

    def reconnect_requested(self) -> None:
        """Open the new connections the codecs asked for (Reconnect actions)."""
        for i in sorted(self.reconnects):
            self.connect(i)

    # -- checks -------------------------------------------------------------------------------

    def _call(
        self,
        index: int,
        what: str,
        call: Callable[[Codec], list[MarketEvent]],
        data: object,
    ) -> list[MarketEvent]:
        codec = self.codecs[index]
        started = time.perf_counter()
        try:
            events = call(codec)
            # What the shell does with every codec besides: must not raise either.
            codec.keepalive()
            _ = codec.synced
        except BaseException as exc:
            raise AssertionError(
                f"{self.scenario.label}: {what} raised {type(exc).__name__}: {exc} on {short(data)}"
            ) from exc
        elapsed = time.perf_counter() - started
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, f"{what} {short(data, 120)}")
        assert isinstance(events, list), f"{what} returned {events!r}"
        return events

    def _take_actions(self, index: int) -> None:
        for action in self.codecs[index].actions():
            if isinstance(action, FetchSnapshot):
                self.pending.append((index, action))
            elif isinstance(action, Reconnect):
                self.reconnects.add(index)
            else:
                assert isinstance(action, SendFrame), action
                assert isinstance(action.text, str)

    def _check(self, index: int, events: list[MarketEvent], data: object = None) -> None:
        codec = self.codecs[index]
        books = self.books[index]
        for event in events:
            kind = type(event)
            where = f"{self.scenario.label}: {kind.__name__} from {short(data)}"
            assert kind in NUM_FIELDS, where
            self.events[kind.__name__] += 1
            assert event.venue == codec.venue, where
            for name in INT_FIELDS:
                value = getattr(event, name, None)
                assert value is None or type(value) is int, f"{where}: {name}={value!r}"
                assert value is None or value in INT64, f"{where}: {name}={value} beyond int64"
            assert 0 < event.ts_recv <= self.now, where
            # The publisher's encoding, and what a consumer's decoding makes of it.
            message = to_message(event)
            assert encode(_decoder.decode(message.payload)) == message.payload, where
            for name in NUM_FIELDS[kind]:
                value = getattr(event, name)
                if value is not None:
                    check_decimal(value, f"{where}: {name}")
                    self._plain(value, where)
                    assert name not in SIZE_FIELDS or Decimal(value) >= 0, (
                        f"{where}: {name}={value}"
                    )
            if kind is VenueStatus:
                assert isinstance(event, VenueStatus)
                assert event.kind in STATUS_KINDS, where
                assert len(event.detail) <= STATUS_DETAIL_MAX, where
                if event.kind == "parse_error" and "internal error" in event.detail:
                    self.internal_errors.append(f"{event.detail} <- {short(data, 200)}")
                if event.kind in RESYNC_KINDS:
                    if event.symbol:
                        books.pop(event.symbol, None)
                    else:
                        books.clear()
                continue
            assert event.symbol in self.symbols, f"{where}: symbol {event.symbol!r}"
            if isinstance(event, BookSnapshot | BookDelta):
                for side in (event.bids, event.asks):
                    new = {price for price, _ in side if price not in self._prices}
                    check_levels(side, where, self._prices, self._sizes)
                    for price in new:
                        self._plain(price, where)
            if isinstance(event, BookSnapshot):
                books[event.symbol] = event.sequence
            elif isinstance(event, BookDelta):
                assert event.symbol in books, f"{where}: delta before a snapshot of its book"
                if event.prev_sequence is not None:
                    assert event.prev_sequence == books[event.symbol], (
                        f"{where}: prev_sequence {event.prev_sequence} does not chain onto "
                        f"{books[event.symbol]}"
                    )
                books[event.symbol] = event.sequence

    def _plain(self, text: str, where: str) -> None:
        """Note a number that passed check_num without being plain ASCII decimal notation."""
        if not PLAIN_DECIMAL.match(text):
            self.observe("number not in plain notation", repr(text[:40]), where)

    def observe(self, gap: str, value: str, where: str) -> None:
        """Note what the contract leaves open but a consumer would trip over."""
        self.observations[gap] += 1
        self.observed.setdefault(gap, f"{value} in {where}")


# ---------------------------------------------------------------------------------------------
# Values that break things

RAW_NUMBERS = (
    "1e400",
    "-1e400",
    "1E+999999999",
    "1e-400",
    "-0",
    "-0.0",
    "0",
    "-1",
    "1.5",
    "0.1e1",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "123456789012345678901234567890",
    "1" * 100,
)
BAD_TOKENS = ("NaN", "Infinity", "-Infinity", "01", "+1", ".5", "1.", "0x10", "1e", "--1")
NASTY_STRINGS = (
    "",
    " ",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "sNaN",
    "-0",
    "1e400",
    "-1e400",
    "1e-400",
    "1E+999999999",
    "-1",
    "0",
    "0.0000000000000000000000000000001",
    "9" * 400,
    "1_000",
    " 1",
    "1 ",
    "+1",
    ".5",
    "5.",
    "1,5",
    "0x1A",
    "١٢٣",  # Arabic-Indic digits: Decimal() reads them
    "１２３",  # full-width digits
    "\u00a0",
    "null",
    "true",
    "[]",
    "{}",
    "\x00",
    "\u2028",
    "🙂",
    "snapshot",
    "update",
    "delta",
    "error",
)
EDGE_INTS = (0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**64), 10**30)
JUNK = tuple('"{}[],:\\09-.en \né\x7f')

_RAW = "\x1fRAW\x1f"
_RAW_JSON = json.dumps(_RAW)


class Raw:
    """A JSON token written as is (``1e400``, ``NaN``, 10,000 nested lists)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(doc: Any) -> str:
    """Compact JSON of ``doc``, :class:`Raw` tokens written verbatim."""
    raws: list[str] = []

    def default(obj: object) -> str:
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return _RAW
        raise TypeError(type(obj).__name__)

    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=default)
    if raws:
        parts = text.split(_RAW_JSON)
        assert len(parts) == len(raws) + 1
        text = parts[0] + "".join(r + p for r, p in zip(raws, parts[1:], strict=True))
    return text


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


# ---------------------------------------------------------------------------------------------
# Mutations of captured frames

NodePath = tuple[str | int, ...]


def _paths(doc: Any) -> list[NodePath]:
    """Every node of a JSON document (the root too), as key/index paths."""
    out: list[NodePath] = [()]
    stack: list[tuple[NodePath, Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            items: Iterable[tuple[str | int, Any]] = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        for key, child in items:
            out.append((*path, key))
            stack.append(((*path, key), child))
    return out


def _strings(doc: Any, out: set[str]) -> None:
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.update(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and len(node) < 64:
            out.add(node)


class Mutator:
    """Seeded mutations of a scenario's captured frames."""

    def __init__(self, rng: random.Random, frames: Sequence[str]) -> None:
        self.rng = rng
        self.frames = frames
        self._docs: dict[int, tuple[Any, list[NodePath]]] = {}
        strings: set[str] = set()
        for text in frames:
            with contextlib.suppress(ValueError):
                _strings(json.loads(text), strings)
        self.corpus = sorted(strings)
        """Every key and short string of the captures: channel names, symbols, types."""
        self.ops: list[tuple[Callable[[str, int], str | bytes], int]] = [
            (self.structural, 50),
            (self.truncate, 8),
            (self.flip, 10),
            (self.delete_span, 5),
            (self.duplicate_span, 5),
            (self.insert_junk, 4),
            (self.as_bytes, 5),
            (self.invalid_utf8, 4),
            (self.odd_frame, 3),
            (self.wrap, 2),
            (self.concatenate, 2),
        ]
        self._choices = [op for op, _ in self.ops]
        self._weights = [w for _, w in self.ops]
        self.counts: Counter[str] = Counter()

    def mutate(self, index: int) -> str | bytes:
        """A mutation of captured frame ``index``."""
        [op] = self.rng.choices(self._choices, self._weights)
        self.counts[op.__name__] += 1
        return op(self.frames[index], index)

    # -- text ---------------------------------------------------------------------------------

    def truncate(self, text: str, _: int) -> str:
        return text[: self.rng.randrange(len(text) + 1)]

    def flip(self, text: str, _: int) -> str:
        chars = list(text)
        for _ in range(self.rng.choice((1, 1, 1, 2, 3, 8))):
            if chars:
                i = self.rng.randrange(len(chars))
                if self.rng.random() < 0.5:
                    chars[i] = self.rng.choice(JUNK)
                else:  # flip one bit of a character (keep it a valid character)
                    flipped = ord(chars[i]) ^ (1 << self.rng.randrange(8))
                    chars[i] = chr(flipped) if not 0xD800 <= flipped < 0xE000 else "?"
        return "".join(chars)

    def _span(self, text: str) -> tuple[int, int]:
        start = self.rng.randrange(len(text) + 1)
        return start, min(len(text), start + self.rng.choice((1, 2, 5, 20, 200, len(text))))

    def delete_span(self, text: str, _: int) -> str:
        start, end = self._span(text)
        return text[:start] + text[end:]

    def duplicate_span(self, text: str, _: int) -> str:
        start, end = self._span(text)
        return text[:end] + text[start:end] + text[end:]

    def insert_junk(self, text: str, _: int) -> str:
        i = self.rng.randrange(len(text) + 1)
        junk = "".join(self.rng.choices(JUNK, k=self.rng.randrange(1, 6)))
        return text[:i] + junk + text[i:]

    def as_bytes(self, text: str, index: int) -> bytes:
        inner = self.structural(text, index) if self.rng.random() < 0.5 else text
        return inner.encode() if isinstance(inner, str) else inner

    def invalid_utf8(self, text: str, _: int) -> bytes:
        raw = text.encode()
        i = self.rng.randrange(len(raw) + 1)
        bad = self.rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"))
        return raw[:i] + bad + raw[i:]

    def odd_frame(self, text: str, _: int) -> str | bytes:
        return self.rng.choice(
            (
                "",
                b"",
                " ",
                "\n",
                "\ufeff" + text,
                "null",
                "true",
                "0",
                "-0",
                "1e400",
                '""',
                '"pong"',
                "[]",
                "{}",
                "[{}]",
                "[null]",
                '{"":""}',
                "ping",
                "pong",
                "PONG",
                "NaN",
                "\x00",
                text + "\x00",
            )
        )

    def wrap(self, text: str, _: int) -> str:
        return self.rng.choice((f"[{text}]", f'{{"data":{text}}}', f" {text} ", f"{text}\n"))

    def concatenate(self, text: str, _: int) -> str:
        other = self.rng.choice(self.frames)
        return self.rng.choice((text + other, text + "," + other, text + "\n" + other))

    # -- structure ----------------------------------------------------------------------------

    def structural(self, text: str, index: int) -> str:
        """Parse the frame, change one node (value, type, key, list), write it back."""
        cached = self._docs.get(index)
        if cached is None:
            try:
                doc = json.loads(text)
            except ValueError:
                return self.flip(text, index)
            cached = self._docs[index] = (doc, _paths(doc))
        doc, paths = cached
        path = self.rng.choice(paths)
        return dumps(self._replace(doc, path, 0))

    def _replace(self, node: Any, path: NodePath, depth: int) -> Any:
        """A copy of ``node`` with the node at ``path`` changed (copying only that path)."""
        if depth == len(path):
            return self.change(node)
        key = path[depth]
        if isinstance(node, dict):
            copy: Any = dict(node)
            if depth == len(path) - 1 and self.rng.random() < 0.2:
                return self._change_key(copy, key)
        else:
            copy = list(node)
        copy[key] = self._replace(node[key], path, depth + 1)
        return copy

    def _change_key(self, obj: dict[str, Any], key: Any) -> dict[str, Any]:
        value = obj.pop(key)
        what = self.rng.randrange(3)
        if what == 1:  # renamed: to another key of the venue, or to nothing it knows
            obj[self.rng.choice((*self.corpus, key.upper(), key + "_", ""))] = value
        elif what == 2:  # duplicated in the text: the later one wins in most parsers
            obj[key] = value
            obj[self.rng.choice(self.corpus)] = self.change(value)
        return obj

    def change(self, value: Any) -> Any:
        """``value`` swapped for something of another type, an absurd number, a venue word,
        or (for lists) with elements dropped, repeated or reordered."""
        rng = self.rng
        r = rng.random()
        if isinstance(value, list) and value and r < 0.4:
            items = list(value)
            what = rng.randrange(6)
            if what == 0:
                return []
            if what == 1:
                del items[rng.randrange(len(items))]
            elif what == 2:
                items.insert(rng.randrange(len(items) + 1), rng.choice(items))
            elif what == 3:
                items.reverse()
            elif what == 4:
                rng.shuffle(items)
            else:
                items = items * rng.choice((2, 10))
            return items
        if isinstance(value, str) and r < 0.35:
            # The same text as a JSON number where it is one: a type swap that keeps digits.
            try:
                Decimal(value)
                if PLAIN_DECIMAL.match(value):
                    return Raw(value)
            except ArithmeticError:
                pass
            return rng.choice(self.corpus) if rng.random() < 0.5 else rng.choice(NASTY_STRINGS)
        if isinstance(value, bool | int | float) and r < 0.45:
            if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
                return value + rng.choice((-(10**6), -1000, -2, -1, 1, 2, 1000, 10**6))
            if rng.random() < 0.3:
                return str(value)  # "123": a number as text
            return rng.choice(EDGE_INTS)
        what = rng.randrange(12)
        if what <= 2:
            return Raw(rng.choice(RAW_NUMBERS))
        if what == 3:
            return Raw(rng.choice(BAD_TOKENS))
        if what == 4:
            return rng.choice(NASTY_STRINGS)
        if what == 5:
            return rng.choice((None, True, False, 0, -1, 1.5, "", [], {}))
        if what == 6:
            return [value]
        if what == 7:
            return {rng.choice(self.corpus): value}
        if what == 8:
            return rng.choice(self.corpus)
        if what == 9:
            return Raw(nested(rng.choice((2, 50, 300))))
        if what == 10:
            return "x" * rng.choice((1000, 70_000))
        return rng.choice(EDGE_INTS)


# ---------------------------------------------------------------------------------------------
# Hypothesis: JSON shaped like a venue's messages

_NUMERIC_TEXT = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
    st.integers().map(str),
    st.sampled_from(NASTY_STRINGS),
    st.floats().map(repr),
)
_JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(RAW_NUMBERS + BAD_TOKENS).map(Raw),
)
ANY_JSON = st.recursive(
    _JSON_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


# Defined once each: a composite defined per call costs Hypothesis an introspection of its
# source every time, which was most of the run time.
_PERCENT = st.integers(0, 99)


@st.composite
def _weighted(
    draw: st.DrawFn, keep: st.SearchStrategy[Any], other: st.SearchStrategy[Any], percent: int
) -> Any:
    """``keep`` most of the time, ``other`` in ``percent`` % of the draws."""
    return draw(other) if draw(_PERCENT) < percent else draw(keep)


@st.composite
def _dict_ops(
    draw: st.DrawFn,
    whole: st.SearchStrategy[dict[str, Any]],
    words: st.SearchStrategy[str],
    anything: st.SearchStrategy[Any],
) -> dict[str, Any]:
    """A dict of ``whole``, now and then with a key dropped or an unknown one added."""
    obj = dict(draw(whole))
    if obj and draw(_PERCENT) < 8:
        del obj[draw(st.sampled_from(sorted(obj)))]
    if draw(_PERCENT) < 4:
        obj[draw(words)] = draw(anything)
    return obj


def shaped(value: Any, words: Sequence[str], percent: int = 12) -> st.SearchStrategy[Any]:
    """JSON like ``value``: its keys and nesting, each value kept or redrawn (in about
    ``percent`` % of the nodes) around the captured one: numbers as text and as numbers,
    absurd numbers, the venue's own words (``words``), other types, arbitrary JSON."""
    other_words = st.sampled_from(words) if words else st.text(max_size=8)
    anything = st.one_of(ANY_JSON, other_words)
    if isinstance(value, dict):
        keys = {k: shaped(v, words, percent) for k, v in value.items()}
        whole = st.fixed_dictionaries(keys)
        return _weighted(_dict_ops(whole, other_words, anything), anything, percent // 3)
    if isinstance(value, list):
        samples = [shaped(v, words, percent) for v in value[:3]]
        if not samples:
            return _weighted(st.just([]), st.lists(anything, max_size=3), percent)
        return _weighted(
            st.lists(st.one_of(*samples), min_size=0, max_size=min(len(value), 3) + 1),
            anything,
            percent // 3,
        )
    if isinstance(value, str):
        try:
            Decimal(value)
            numeric = True
        except ArithmeticError:
            numeric = False
        if numeric:
            return _weighted(
                st.just(value),
                st.one_of(_NUMERIC_TEXT, st.just(Raw(value)), anything),
                percent,
            )
        return _weighted(st.just(value), st.one_of(other_words, st.text(max_size=10)), percent)
    if isinstance(value, bool) or value is None:
        return _weighted(st.just(value), st.one_of(st.none(), st.booleans(), anything), percent)
    if isinstance(value, int):
        near = st.integers(value - 3, value + 3)
        return _weighted(
            st.one_of(st.just(value), near),
            st.one_of(st.integers(), st.sampled_from(EDGE_INTS), st.just(str(value)), anything),
            percent,
        )
    if isinstance(value, float):
        return _weighted(
            st.just(value),
            st.one_of(
                st.floats(allow_nan=False, allow_infinity=False),
                st.sampled_from(RAW_NUMBERS + BAD_TOKENS).map(Raw),
                st.just(repr(value)),
                anything,
            ),
            percent,
        )
    return st.just(value)


def templates(frames: Sequence[str], limit: int = 40) -> list[Any]:
    """Captured messages of distinct shapes (keys and channel-like values), parsed."""
    seen: dict[str, Any] = {}
    for text in frames:
        try:
            doc = json.loads(text)
        except ValueError:
            continue
        signature = _signature(doc)
        if signature not in seen:
            seen[signature] = doc
    picked = list(seen.values())
    if len(picked) > limit:
        step = len(picked) / limit
        picked = [picked[int(i * step)] for i in range(limit)]
    return picked


def _signature(doc: Any, depth: int = 0) -> str:
    if depth > 4:
        return "…"
    if isinstance(doc, dict):
        inner = ",".join(
            f"{k}={v if isinstance(v, str) and len(v) < 24 and not v[:1].isdigit() else ''}"
            f"{_signature(v, depth + 1)}"
            for k, v in sorted(doc.items())
        )
        return "{" + inner + "}"
    if isinstance(doc, list):
        return "[" + (_signature(doc[0], depth + 1) if doc else "") + "]"
    return type(doc).__name__


def words_of(frames: Sequence[str]) -> list[str]:
    out: set[str] = set()
    for text in frames:
        with contextlib.suppress(ValueError):
            _strings(json.loads(text), out)
    return sorted(out)
