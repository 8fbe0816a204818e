"""Every venue codec under fuzzed input: mutated captures, Hypothesis-made frames, absurd
frames; the WebSocket message-size bound; the normalizer's sampling of parse errors.

Each venue setup of the codec tests (:func:`tests.fuzz_support.scenarios`: the captures
under ``tests/data`` with the subscriptions they are recorded for) is driven the way the
venue shell drives it (connect, frames, REST snapshots, resyncs, reconnects) and checked
after every call by :class:`tests.fuzz_support.Checker`: nothing escapes the codec, every
event is one the publisher encodes and a consumer decodes, prices and sizes are finite
decimal text, frames that are not JSON count parse errors, no book delta comes before its
book's snapshot, and garbage is reported as ``bad frame``, never ``internal error``.

The mutation corpus is seeded (``random.Random``) and Hypothesis runs derandomized, so
every run feeds the same frames. ``pytest -s`` prints the figures of each test.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import random
import struct
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import structlog
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

import adapters
import relay.normalizer
from relay import transport
from relay.codec import Subscription
from relay.events import DataType, FundingRate, MarketEvent, Ticker, Trade, VenueStatus
from relay.metrics import Metrics
from relay.normalizer import Normalizer
from relay.overload import OutageBuffer
from relay.transport import MAX_MESSAGE_SIZE, TransportClosed, connect
from relay.wire import OutMessage
from tests.fuzz_support import (
    ALPACA_CREDENTIALS,
    ANY_JSON,
    Checker,
    Mutator,
    Raw,
    Scenario,
    dumps,
    nested,
    scenarios,
    shaped,
    templates,
    words_of,
)

SCENARIOS = scenarios()
LABELS = sorted(SCENARIOS)

# Mutated frames per scenario: the big-frame captures (1000-level REST snapshots, 200-level
# books) cost ten times what the others do, so they get fewer.
MUTATED = {label: 7_300 for label in LABELS} | {
    "binance/cryptofeed": 3_500,
    "binance_usdm/cryptofeed": 2_500,
    "bitget/BITGET.ws.1.0": 3_500,
    "bitget/BITGET.ws.2.0": 3_500,
}
MUTATIONS_PER_FRAME = (0, 1, 2, 2, 3, 4)
"""Mutations fed before each captured frame: between them the frames as recorded keep the
books going (a mutation the codec refuses leaves its state as it was)."""
EXAMPLES = 20
"""Hypothesis examples per scenario (2 to 8 generated frames each)."""
GENERATED_MIN = 50
"""Generated frames each scenario's Hypothesis test must have fed at least."""
SUITE_MINIMUM = 100_000
SLOW = 1.0
"""Seconds no single codec call may take on fuzzed input (a hang or a blow-up)."""

FED: dict[str, int] = {}
"""Mutated and generated frames fed, per test (for the suite total)."""


def _figures(what: str, label: str, checker: Checker, fed: int, started: float) -> None:
    events = ", ".join(f"{n} {kind}" for kind, n in sorted(checker.events.items()))
    slowest, call = checker.slowest
    print(
        f"\n{what} {label}: {fed} frames fuzzed ({checker.frames} fed in all, "
        f"{checker.bodies} snapshot bodies) in {time.perf_counter() - started:.2f} s; "
        f"slowest call {slowest * 1000:.1f} ms ({call[:60]}); events: {events}"
    )
    for gap, n in sorted(checker.observations.items()):
        print(f"  gap ({n}x) {gap}: {checker.observed[gap][:160]}")


def _assert_contract_kept(checker: Checker) -> None:
    assert checker.internal_errors == [], checker.internal_errors[:5]
    assert checker.slowest[0] < SLOW, checker.slowest


def _clean_run(scenario: Scenario) -> Checker:
    """The scenario's captures fed as recorded, every snapshot answered as recorded."""
    checker = Checker(scenario)
    checker.connect()
    for text in scenario.frames:
        checker.feed(text)
        checker.answer(lambda _, recorded: recorded)
        checker.reconnect_requested()
    return checker


# ---------------------------------------------------------------------------------------------
# Mutated captures


@pytest.mark.parametrize("label", LABELS)
def test_mutated_captures(label: str) -> None:
    """Rounds of: connect, then the captured frames in order, most of them preceded by
    mutations of themselves, so that mutations meet books that are synced, buffering or
    resyncing. REST snapshots are answered late, mutated or failed; resyncs are asked for
    now and then; reconnects the codec asks for are made."""
    scenario = SCENARIOS[label]
    target = MUTATED[label]
    started = time.perf_counter()
    rng = random.Random(f"relay-fuzz:{label}")
    checker = Checker(scenario)
    mutator = Mutator(rng, scenario.frames)
    keys = sorted(scenario.snapshots)
    bodies = Mutator(rng, [scenario.snapshots[k] for k in keys]) if keys else None
    book_symbols = sorted(
        {s.symbol for s in scenario.subscriptions if DataType.L2_ORDERBOOK in s.data_types}
    )
    mutated = mutated_bodies = rounds = 0

    def choose(key: str, recorded: str) -> str | bytes | None:
        nonlocal mutated_bodies
        r = rng.random()
        if bodies is None or r < 0.55:
            return recorded
        if r < 0.9:
            mutated_bodies += 1
            return bodies.mutate(keys.index(key) if key in keys else 0)
        return None  # the fetch failed

    while mutated < target:
        rounds += 1
        checker.connect()
        for index, text in enumerate(scenario.frames):
            for _ in range(rng.choice(MUTATIONS_PER_FRAME)):
                checker.feed(mutator.mutate(index))
                mutated += 1
            checker.feed(text)
            if checker.pending and rng.random() < 0.3:
                checker.answer(choose)
            if book_symbols and rng.random() < 0.003:
                codec = rng.randrange(len(checker.codecs))
                checker.resync(codec, rng.choice([*book_symbols, "NOPE-USD"]))
            checker.reconnect_requested()
            if mutated >= target:
                break

    FED[f"mutated {label}"] = mutated
    _figures("mutated", label, checker, mutated, started)
    print(f"  {rounds} rounds, {mutated_bodies} mutated snapshot bodies; ops {mutator.counts}")
    assert mutated >= target
    _assert_contract_kept(checker)
    # The fuzzing reached the deep states: books synced and updated between the mutations.
    clean = _clean_run(scenario)
    for kind in ("BookSnapshot", "BookDelta", "Trade", "Ticker"):
        if clean.events[kind]:
            assert checker.events[kind] > 0, kind
    assert checker.events["VenueStatus"] > 0


# ---------------------------------------------------------------------------------------------
# Hypothesis: venue-shaped JSON


def _warm_prefix(scenario: Scenario, limit: int = 60) -> tuple[str, ...]:
    """The captured frames up to the one after which every book of the scenario has been
    published (at most ``limit``): replayed before each example, so that generated frames
    meet synced books."""
    books = {s.symbol for s in scenario.subscriptions if DataType.L2_ORDERBOOK in s.data_types}
    checker = Checker(scenario)
    checker.connect()
    seen: set[str] = set()
    for n, text in enumerate(scenario.frames[:limit], 1):
        before = checker.events["BookSnapshot"]
        checker.feed(text)
        checker.answer(lambda _, recorded: recorded)
        if checker.events["BookSnapshot"] > before:
            seen |= {symbol for codec_books in checker.books for symbol in codec_books}
        if seen >= books:
            return scenario.frames[:n]
    return scenario.frames[:limit]


@pytest.mark.parametrize("label", LABELS)
def test_hypothesis_frames(label: str) -> None:
    """Frames shaped like the venue's own messages (the captured messages' keys and
    nesting, values redrawn around the captured ones), fed after a warm prefix."""
    scenario = SCENARIOS[label]
    started = time.perf_counter()
    checker = Checker(scenario)
    warm = _warm_prefix(scenario)
    words = words_of(scenario.frames)
    message = st.one_of(*(shaped(doc, words) for doc in templates(scenario.frames)), ANY_JSON)
    frames = st.lists(st.tuples(message, st.booleans()), min_size=2, max_size=8)
    generated = 0

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(frames)
    def run(batch: list[tuple[Any, bool]]) -> None:
        nonlocal generated
        checker.connect()
        for text in warm:
            checker.feed(text)
            checker.answer(lambda _, recorded: recorded)
        for doc, binary in batch:
            text = dumps(doc)
            checker.feed(text.encode() if binary else text)
            checker.answer(lambda _, recorded: recorded)
            checker.reconnect_requested()
            generated += 1

    run()
    FED[f"generated {label}"] = generated
    _figures("generated", label, checker, generated, started)
    assert generated >= GENERATED_MIN
    _assert_contract_kept(checker)


# ---------------------------------------------------------------------------------------------
# Absurd frames


def _replace_numbers(doc: Any, text_to: str | None, number_to: Raw | None) -> Any:
    """``doc`` with every decimal text (``"0.35"``) and/or every JSON float replaced."""
    if isinstance(doc, dict):
        return {k: _replace_numbers(v, text_to, number_to) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_replace_numbers(v, text_to, number_to) for v in doc]
    if text_to is not None and isinstance(doc, str) and doc[:1].isdigit():
        try:
            Decimal(doc)
        except ArithmeticError:
            return doc
        return text_to
    if number_to is not None and isinstance(doc, float):
        return number_to
    return doc


def _replace_first_leaf(doc: Any, value: Any) -> Any:
    """``doc`` with its deepest first string or number replaced by ``value``."""
    if isinstance(doc, dict) and doc:
        key = max(doc, key=lambda k: isinstance(doc[k], dict | list))
        return {**doc, key: _replace_first_leaf(doc[key], value)}
    if isinstance(doc, list) and doc:
        return [_replace_first_leaf(doc[0], value), *doc[1:]]
    return value


def _event_templates(scenario: Scenario) -> list[str]:
    """One captured frame per kind of event it gives in a clean run."""
    checker = Checker(scenario)
    checker.connect()
    out: dict[str, str] = {}
    for text in scenario.frames:
        before = Counter(checker.events)
        checker.feed(text)
        checker.answer(lambda _, recorded: recorded)
        for kind in checker.events - before:
            out.setdefault(kind, text)
    return list(out.values())


def _absurd(template: str, big: bool) -> Iterator[tuple[str, str | bytes]]:
    doc = json.loads(template)
    yield "1E+999999999 for every decimal text", dumps(_replace_numbers(doc, "1E+999999999", None))
    yield (
        "1E+999999999 for every JSON float",
        dumps(_replace_numbers(doc, None, Raw("1E+999999999"))),
    )
    yield "1e400 for every number", dumps(_replace_numbers(doc, "1e400", Raw("1e400")))
    yield "-0 for every number", dumps(_replace_numbers(doc, "-0", Raw("-0")))
    yield "10,000 nested lists in a value", dumps(_replace_first_leaf(doc, Raw(nested(10_000))))
    yield "200,000 zeros in a value", dumps(_replace_first_leaf(doc, Raw(f"[{'0,' * 199_999}0]")))
    if big:
        yield "a 5 MB number in a value", dumps(_replace_first_leaf(doc, "9" * 5_000_000))
        yield "a 5 MB string in a value", dumps(_replace_first_leaf(doc, "x" * 5_000_000))


WHOLE_FRAMES: tuple[tuple[str, str | bytes], ...] = (
    ("empty text", ""),
    ("empty binary", b""),
    ("10,000 nested lists", nested(10_000)),
    ("100,000 nested lists", nested(100_000)),
    ("10,000 nested objects", '{"a":' * 10_000 + "0" + "}" * 10_000),
    ("5 MB of spaces", " " * 5_000_000),
    ("invalid UTF-8", b'{"\xff":1}'),
)


@pytest.mark.parametrize("label", LABELS)
def test_absurd_frames(label: str) -> None:
    """Absurd numbers, nesting and sizes, in a codec whose books are synced."""
    scenario = SCENARIOS[label]
    started = time.perf_counter()
    checker = _clean_run(scenario)
    fed = 0
    frames = list(WHOLE_FRAMES)
    for n, template in enumerate(_event_templates(scenario)):
        frames += _absurd(template, big=n == 0)
    for what, data in frames:
        before = [c.counters.parse_errors for c in checker.codecs]
        fed_at = time.perf_counter()
        checker.feed(data)
        fed += 1
        # Time linear in the size (a 5 MB number is read as a Decimal, and written out,
        # in about 0.1 s each time): a blow-up is what exceeds it.
        elapsed = time.perf_counter() - fed_at
        assert elapsed < SLOW + len(data) / 1_000_000, (what, elapsed)
        if what in dict(WHOLE_FRAMES):
            after = [c.counters.parse_errors for c in checker.codecs]
            assert all(a == b + 1 for a, b in zip(after, before, strict=True)), what
    FED[f"absurd {label}"] = fed
    _figures("absurd", label, checker, fed, started)
    assert fed >= len(WHOLE_FRAMES) + 6
    assert checker.internal_errors == [], checker.internal_errors[:5]


# ---------------------------------------------------------------------------------------------
# Regressions: what the fuzzing found


@pytest.mark.parametrize("label", LABELS)
def test_nesting_too_deep_is_a_bad_frame(label: str) -> None:
    """msgspec raises RecursionError beyond ~1000 levels (whether it decodes the value or
    skips it): that was an ``internal error``."""
    deep = nested(2_000)
    frames = (deep, f'{{"x":{deep}}}', f'[{{"x":{deep}}}]', f'{{"data":{deep}}}')
    for codec in SCENARIOS[label].build():
        codec.connected(1)
        details = []
        for frame in frames:
            [status] = codec.receive(frame, 2)
            assert isinstance(status, VenueStatus)
            assert status.kind == "parse_error"
            assert status.detail.startswith("bad frame: "), status.detail
            details.append(status.detail)
        assert codec.counters.parse_errors == len(frames)
        assert any("RecursionError" in detail for detail in details), details


@pytest.mark.parametrize("label", LABELS)
def test_binary_frame_that_is_not_utf8_is_a_bad_frame(label: str) -> None:
    """msgspec skips unknown keys without checking their bytes: a binary frame with invalid
    UTF-8 there went through (and its events were published) without a parse error."""
    scenario = SCENARIOS[label]
    for codec in scenario.build():
        codec.connected(1)
        for text in scenario.frames[:30]:
            frame = text.encode().replace(b"{", b'{"\xff":0,', 1)
            [status] = codec.receive(frame, 2)
            assert isinstance(status, VenueStatus)
            assert status.kind == "parse_error"
            assert status.detail.startswith("bad frame: "), status.detail
            assert "'utf-8' codec can't decode" in status.detail, status.detail
        assert codec.counters.parse_errors == min(30, len(scenario.frames))


HUGE_EXPONENT_TRADES = {
    # JSON numbers, decoded as Decimal and written back with format(d, "f"): a gigabyte.
    "kraken": (
        Subscription("BTC/USD", "BTC-USD", frozenset({DataType.TRADE})),
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
        '"price":1E+999999999,"qty":0.1,"ord_type":"limit","trade_id":1,'
        '"timestamp":"2023-10-06T17:35:55.440295Z"}]}',
    ),
    "alpaca": (
        Subscription("AVAX/USD", "AVAX-USD", frozenset({DataType.TRADE})),
        '[{"T":"t","S":"AVAX/USD","p":1E+999999999,"s":1,'
        '"t":"2024-03-12T10:27:48.858228144Z","i":1,"tks":"S"}]',
    ),
    "deribit": (
        Subscription("BTC-PERPETUAL", "BTC-USD-PERP", frozenset({DataType.TRADE})),
        '{"jsonrpc":"2.0","method":"subscription","params":{"channel":'
        '"trades.BTC-PERPETUAL.100ms","data":[{"timestamp":1786563102,"price":1E+999999999,'
        '"direction":"sell","trade_id":"1","instrument_name":"BTC-PERPETUAL","amount":40}]}}',
    ),
}


@pytest.mark.parametrize("adapter", sorted(HUGE_EXPONENT_TRADES))
def test_huge_exponent_in_a_json_number_is_a_bad_frame_and_quick(adapter: str) -> None:
    """``1E+999999999`` is a finite Decimal; written out in plain notation it took seconds
    and a gigabyte per number. Now refused when decoded (adapters._common.check_finite)."""
    sub, frame = HUGE_EXPONENT_TRADES[adapter]
    [codec] = Scenario(adapter, adapter, (sub,), (), credentials=ALPACA_CREDENTIALS).build()
    codec.connected(1)
    if adapter == "alpaca":
        assert codec.receive('[{"T":"success","msg":"authenticated"}]', 1) == []
    started = time.perf_counter()
    events = codec.receive(frame, 2)
    assert time.perf_counter() - started < 0.5
    [status] = events
    assert isinstance(status, VenueStatus)
    assert status.kind == "parse_error"
    assert "not a finite number of sane magnitude: 1E+999999999" in status.detail, status.detail
    assert "internal error" not in status.detail
    # The same trade with a sane price is published.
    [trade] = codec.receive(frame.replace("1E+999999999", "64000.5"), 3)
    assert isinstance(trade, Trade)
    assert trade.price == "64000.5"


@pytest.mark.parametrize("label", ["okx/cryptofeed", "bitget/BITGET.ws.1.0", "kraken/v2"])
def test_huge_exponent_in_a_checksummed_book_is_a_bad_frame_and_quick(label: str) -> None:
    """A book level priced ``1E+999999999`` passed relay.book.parse_levels; the checksum
    then wrote the book out as text: seconds and a gigabyte for one frame."""
    scenario = SCENARIOS[label]
    checker = _clean_run(scenario)
    delta = next(
        text
        for text in reversed(scenario.frames)
        if '"update"' in text and ('"books"' in text or '"book"' in text)
    )
    doc = json.loads(delta)
    for side in ("asks", "bids"):
        for item in doc["data"]:
            if item.get(side):
                level = item[side][0]
                if isinstance(level, dict):  # kraken: {"price": 1.5, "qty": 2}
                    item[side][0] = {**level, "price": Raw("1E+999999999")}
                else:
                    item[side][0] = ["1E+999999999", *level[1:]]
    frame = dumps(doc)
    assert "1E+999999999" in frame
    started = time.perf_counter()
    [codec] = checker.codecs
    before = codec.counters.parse_errors
    checker.feed(frame)
    assert time.perf_counter() - started < 0.5
    assert codec.counters.parse_errors == before + 1
    _assert_contract_kept(checker)


def test_decimal_overflow_under_a_contract_size_is_a_bad_frame() -> None:
    """``size x contract size`` beyond the decimal context's exponent range raised
    decimal.Overflow out of the codec: an ``internal error``. Now such a number is not
    even taken in."""
    sub = Subscription(
        "BTC-USDT-SWAP", "BTC-USDT-PERP", frozenset({DataType.TRADE}), Decimal("0.01")
    )
    [codec] = Scenario("okx", "okx", (sub,), ()).build()
    codec.connected(1)
    frame = (
        '{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP",'
        '"tradeId":"1","px":"64040.2","sz":"1E+9999999","side":"buy","ts":"1786538076047"}]}'
    )
    [status] = codec.receive(frame, 2)
    assert isinstance(status, VenueStatus)
    # Refused as not plain (its exponent has over two digits), before any arithmetic.
    assert status.kind == "parse_error" and "1E+9999999" in status.detail, status.detail
    [trade] = codec.receive(frame.replace("1E+9999999", "2"), 3)
    assert isinstance(trade, Trade)
    assert trade.size == "0.02"


def test_negative_size_in_a_hyperliquid_book_is_a_bad_frame() -> None:
    """relay.book.parse_levels raised its ValueError after decoding, which the Hyperliquid
    codec does not count as a bad frame: an ``internal error``."""
    scenario = SCENARIOS["hyperliquid/ccxt+nautilus"]
    book = next(text for text in scenario.frames if '"channel":"l2Book"' in text)
    doc = json.loads(book)
    level = doc["data"]["levels"][0][0]
    doc["data"]["levels"][0][0] = {**level, "sz": "-1"}
    [codec] = scenario.build()
    codec.connected(1)
    [status] = codec.receive(dumps(doc), 2)
    assert isinstance(status, VenueStatus)
    assert status.kind == "parse_error"
    assert status.detail.startswith("l2Book: a level has"), status.detail
    events = codec.receive(book, 3)
    assert [type(e).__name__ for e in events] == ["BookSnapshot", "VenueStatus"]


# ---------------------------------------------------------------------------------------------
# Numbers a consumer could not take: not plain, negative where nothing can be, beyond int64


def _binance_ticker(bid_size: str, update_id: str = "400900217") -> list[MarketEvent]:
    scenario = SCENARIOS["binance/cryptofeed"]
    [codec] = scenario.build()
    codec.connected(1)
    frame = (
        '{"stream":"nknusdt@bookTicker","data":{"u":' + update_id + ',"s":"NKNUSDT",'
        f'"b":"0.35250000","B":"{bid_size}","a":"0.35310000","A":"3284.00000000"}}}}'
    )
    return codec.receive(frame, 2)


@pytest.mark.parametrize("text", [" 1", "1_000", "١٢٣", ".5", "1e400", "+1", "1.", "NaN"])
def test_prices_and_sizes_not_in_plain_notation_are_bad_frames(text: str) -> None:
    [event] = _binance_ticker(text)
    assert isinstance(event, VenueStatus), f"published as {event!r}"


@pytest.mark.parametrize("text", ["-5", "-0", "-0.0"])
def test_negative_ticker_size_is_a_bad_frame(text: str) -> None:
    [event] = _binance_ticker(text)
    assert isinstance(event, VenueStatus), f"published as {event!r}"
    assert event.kind == "parse_error"
    assert "not a non-negative plain decimal number" in event.detail, event.detail


@pytest.mark.parametrize("update_id", [2**63, 2**64, 10**30, -(2**63) - 1])
def test_sequence_beyond_int64_is_a_bad_frame(update_id: int) -> None:
    [event] = _binance_ticker("1", update_id=str(update_id))
    assert isinstance(event, VenueStatus), f"published as {event!r}"
    assert event.kind == "parse_error"
    assert "Expected `int` <=" in event.detail or "Expected `int` >=" in event.detail


@pytest.mark.parametrize("ms", [2**63 // 1_000_000 + 1, 2**64, -1])
def test_venue_time_whose_nanoseconds_leave_int64_is_a_bad_frame(ms: int) -> None:
    scenario = SCENARIOS["binance/cryptofeed"]
    [codec] = scenario.build()
    codec.connected(1)
    frame = (
        '{"stream":"nknusdt@trade","data":{"e":"trade","E":1,"s":"NKNUSDT","t":5,'
        f'"p":"0.35","q":"1","T":{ms},"m":true}}}}'
    )
    [event] = codec.receive(frame, 2)
    assert isinstance(event, VenueStatus), f"published as {event!r}"
    assert event.kind == "parse_error"
    [trade] = codec.receive(frame.replace(f'"T":{ms}', '"T":1786538076047'), 3)
    assert isinstance(trade, Trade)
    assert trade.ts_venue == 1786538076047 * 1_000_000


def test_sequence_at_the_int64_bound_is_published() -> None:
    [ticker] = _binance_ticker("1", update_id=str(2**63 - 1))
    assert isinstance(ticker, Ticker)
    assert ticker.sequence == 2**63 - 1


NEGATIVE_VALUES = {
    # (adapter, subscription, a frame with one negative value)
    "okx trade size": (
        "okx",
        Subscription("BTC-USDT", "BTC-USDT", frozenset({DataType.TRADE})),
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
        '"tradeId":"1","px":"64040.2","sz":"-0.5","side":"buy","ts":"1786538076047"}]}',
    ),
    "okx trade price": (
        "okx",
        Subscription("BTC-USDT", "BTC-USDT", frozenset({DataType.TRADE})),
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
        '"tradeId":"1","px":"-64040.2","sz":"0.5","side":"buy","ts":"1786538076047"}]}',
    ),
    "bybit open interest": (
        "bybit",
        Subscription("linear:BTCUSDT", "BTC-USDT-PERP", frozenset({DataType.OPEN_INTEREST})),
        '{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",'
        '"openInterest":"-10","openInterestValue":"640000"},"cs":1,"ts":1786538076047}',
    ),
    "bybit liquidation size": (
        "bybit",
        Subscription("linear:BTCUSDT", "BTC-USDT-PERP", frozenset({DataType.LIQUIDATION})),
        '{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":1786538076047,"data":'
        '[{"T":1786538076047,"s":"BTCUSDT","S":"Buy","v":"-0.5","p":"64000"}]}',
    ),
    "deribit trade amount": (
        "deribit",
        Subscription("BTC-PERPETUAL", "BTC-USD-PERP", frozenset({DataType.TRADE})),
        '{"jsonrpc":"2.0","method":"subscription","params":{"channel":'
        '"trades.BTC-PERPETUAL.100ms","data":[{"timestamp":1786563102,"price":64000.5,'
        '"direction":"sell","trade_id":"1","instrument_name":"BTC-PERPETUAL","amount":-40}]}}',
    ),
    "kraken trade price": (
        "kraken",
        Subscription("BTC/USD", "BTC-USD", frozenset({DataType.TRADE})),
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
        '"price":-64000.5,"qty":0.1,"ord_type":"limit","trade_id":1,'
        '"timestamp":"2023-10-06T17:35:55.440295Z"}]}',
    ),
}


@pytest.mark.parametrize("what", sorted(NEGATIVE_VALUES))
def test_negative_price_or_size_is_a_bad_frame(what: str) -> None:
    """Sizes, open interest and the prices of trades, quotes and liquidations cannot be
    negative: a frame with one is refused whole, and the same frame without the sign is
    published."""
    adapter, sub, frame = NEGATIVE_VALUES[what]
    [codec] = Scenario(adapter, adapter, (sub,), ()).build()
    codec.connected(1)
    [status] = codec.receive(frame, 2)
    assert isinstance(status, VenueStatus), f"published as {status!r}"
    assert status.kind == "parse_error", status
    assert "negative" in status.detail and "internal error" not in status.detail, status
    events = codec.receive(frame.replace(":-", ":").replace('"-', '"'), 3)
    assert events and not any(isinstance(e, VenueStatus) for e in events), events


def test_negative_funding_rate_is_published() -> None:
    """Funding rates (and mark and index prices, which follow no sign rule) may be
    negative."""
    sub = Subscription("BTC-USDT-SWAP", "BTC-USDT-PERP", frozenset({DataType.FUNDING_RATE}))
    [codec] = Scenario("okx", "okx", (sub,), ()).build()
    codec.connected(1)
    frame = (
        '{"arg":{"channel":"funding-rate","instId":"BTC-USDT-SWAP"},"data":[{"instId":'
        '"BTC-USDT-SWAP","fundingRate":"-0.0001","fundingTime":"1786540000000",'
        '"ts":"1786538076047"}]}'
    )
    [event] = codec.receive(frame, 2)
    assert isinstance(event, FundingRate), event
    assert event.rate == "-0.0001"


# ---------------------------------------------------------------------------------------------
# The suite's total


def test_every_adapter_is_fuzzed() -> None:
    assert {s.adapter for s in SCENARIOS.values()} == set(adapters.NAMES)
    assert len(adapters.NAMES) == 10


def test_the_suite_fuzzes_at_least_100k_frames() -> None:
    """Runs last in this file: the frames the fuzz tests above fed (all of them when the
    whole file runs), and what their targets promise."""
    planned = sum(MUTATED.values()) + GENERATED_MIN * len(LABELS)
    assert planned >= SUITE_MINIMUM
    total = sum(FED.values())
    print(f"\nfuzzed frames in this run: {total} ({len(FED)} tests); planned >= {planned}")
    if len(FED) == 3 * len(LABELS):
        assert total >= SUITE_MINIMUM


# ---------------------------------------------------------------------------------------------
# The WebSocket message-size bound, against real servers on loopback

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame_header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """A server frame's header (unmasked) announcing ``length`` payload bytes."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 2**16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


async def _raw_venue(nursery: trio.Nursery, writes: list[bytes]) -> str:
    """A hand-rolled WebSocket server on 127.0.0.1: it answers the opening handshake, writes
    ``writes``, then waits for the client's close frame and hangs up. Returns its URL."""

    async def handler(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        [key] = [
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        ]
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        for chunk in writes:
            await stream.send_all(chunk)
        with trio.move_on_after(5):
            await stream.receive_some(4096)  # the client's close frame
        await stream.aclose()

    [listener] = await nursery.start(
        functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    )
    port = listener.socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}/"


async def test_a_frame_announcing_more_than_the_bound_closes_at_its_header() -> None:
    """A frame header announcing 2**62 bytes (followed by 1 MiB of them): the client fails
    the connection with 1009 on the header, without waiting for or buffering the payload."""
    assert 2**20 <= MAX_MESSAGE_SIZE <= 64 * 2**20
    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            url = await _raw_venue(nursery, [_frame_header(0x1, 2**62), b"x" * 2**20])
            with trio.fail_after(5):
                async with connect(url, connect_timeout=5) as conn:
                    with pytest.raises(TransportClosed) as closed:
                        await conn.receive_burst(10)
            nursery.cancel_scope.cancel()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n2**62-byte frame: {closed.value.reason}; peak traced memory {peak} bytes")
    assert closed.value.reason.startswith("closed by us: 1009"), closed.value.reason
    assert str(MAX_MESSAGE_SIZE) in closed.value.reason
    assert peak < 8 * 2**20


async def test_fragments_adding_up_past_the_bound_close_the_connection() -> None:
    """9 MiB sent as a first fragment, then a continuation announcing 9 MiB more: 18 MiB is
    past the bound, so the second header ends the connection."""
    nine = 9 * 2**20
    async with trio.open_nursery() as nursery:
        url = await _raw_venue(
            nursery,
            [
                _frame_header(0x1, nine, fin=False),
                b"x" * nine,
                _frame_header(0x0, nine),
                b"x" * 1024,
            ],
        )
        with trio.fail_after(10):
            async with connect(url, connect_timeout=5) as conn:
                with pytest.raises(TransportClosed) as closed:
                    await conn.receive_burst(10)
        nursery.cancel_scope.cancel()
    assert closed.value.reason.startswith("closed by us: 1009"), closed.value.reason


async def test_a_message_at_the_bound_passes_and_one_byte_more_closes() -> None:
    """A trio-websocket server sends a text message of exactly MAX_MESSAGE_SIZE bytes, then
    one byte longer: the first arrives whole, the second ends the connection (1009)."""

    server_saw: list[int] = []

    async def venue(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("a" * MAX_MESSAGE_SIZE)
        # The client fails the connection while this is being written (1009).
        with pytest.raises(ConnectionClosed) as closed:
            await ws.send_message("b" * (MAX_MESSAGE_SIZE + 1))
            await ws.get_message()
        server_saw.append(closed.value.reason.code)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, venue, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/"
        with trio.fail_after(20):
            async with connect(url, connect_timeout=5) as conn:
                [first] = await conn.receive_burst(1)
                assert isinstance(first, str)
                assert len(first) == MAX_MESSAGE_SIZE
                assert first == "a" * MAX_MESSAGE_SIZE
                del first
                with pytest.raises(TransportClosed) as closed:
                    await conn.receive_burst(1)
        nursery.cancel_scope.cancel()
    print(f"\nmessage of MAX_MESSAGE_SIZE + 1 bytes: {closed.value.reason}")
    assert server_saw == [1009]
    assert closed.value.reason.startswith("closed by us: 1009"), closed.value.reason
    assert transport.MAX_MESSAGE_SIZE == MAX_MESSAGE_SIZE


# ---------------------------------------------------------------------------------------------
# The normalizer: parse errors are sampled into the log, never published


def _parse_error(venue: str, n: int) -> VenueStatus:
    return VenueStatus(
        venue=venue,
        symbol="",
        native_symbol="",
        ts_venue=None,
        ts_recv=n,
        kind="parse_error",
        detail=f"bad frame: number {n}",
    )


TRADE = Trade(
    venue="okx",
    symbol="BTC-USDT",
    native_symbol="BTC-USDT",
    ts_venue=1,
    ts_recv=2,
    trade_id="7",
    price="64000.1",
    size="0.5",
    side="buy",
)
GAP = VenueStatus(
    venue="okx",
    symbol="BTC-USDT",
    native_symbol="BTC-USDT",
    ts_venue=None,
    ts_recv=3,
    kind="book_gap",
    detail="seqId 5 after 3",
)


def _no_resync(venue: str, symbol: str, reason: str) -> None:
    raise AssertionError(f"nothing here asks for a resync ({venue} {symbol}: {reason})")


@pytest.fixture
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Captured log entries of relay.normalizer. The module's logger is replaced by a new
    lazy one inside capture_logs: a cached logger (``relay run`` configures structlog with
    cache_logger_on_first_use) would keep its old processors."""
    with capture_logs() as logs:
        monkeypatch.setattr(relay.normalizer, "log", structlog.get_logger("relay.normalizer"))
        yield logs


def test_parse_errors_log_one_line_per_venue_and_interval_and_are_not_published(
    fresh_log: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [10**15]
    monkeypatch.setattr(relay.normalizer.time, "monotonic_ns", lambda: clock[0])
    normalizer = Normalizer(Metrics(), batch_max=100_000)

    def sampled() -> list[dict[str, Any]]:
        return [e for e in fresh_log if e["event"] == "unparseable frame (sampled)"]

    messages: list[OutMessage] = []
    batch: list[MarketEvent] = [_parse_error("okx", n) for n in range(5_000)]
    messages += normalizer.encode([*batch[:2_500], TRADE, GAP, *batch[2_500:]])
    clock[0] += relay.normalizer.PARSE_ERROR_LOG_INTERVAL_NS // 2
    messages += normalizer.encode([_parse_error("okx", n) for n in range(5_000, 6_000)])
    assert [(e["venue"], e["detail"], e["log_level"]) for e in sampled()] == [
        ("okx", "bad frame: number 0", "warning")
    ]
    # Another venue has an interval of its own.
    messages += normalizer.encode([_parse_error("kraken", n) for n in range(100)])
    assert [e["venue"] for e in sampled()] == ["okx", "kraken"]
    # Once the interval is over, the next one is logged again.
    clock[0] += relay.normalizer.PARSE_ERROR_LOG_INTERVAL_NS // 2
    messages += normalizer.encode([_parse_error("okx", 7_000), _parse_error("okx", 7_001)])
    assert [(e["venue"], e["detail"]) for e in sampled()][2:] == [("okx", "bad frame: number 7000")]

    # Nothing of the 6,102 parse errors is published; the trade and the gap are.
    assert [m.subject for m in messages] == ["market.okx.btc-usdt.trade", "market.okx._status"]
    assert b"parse_error" not in b"".join(m.payload for m in messages)
    assert json.loads(messages[1].payload)["kind"] == "book_gap"


def test_other_statuses_are_all_published_and_their_log_is_sampled_per_kind(
    fresh_log: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [10**15]
    monkeypatch.setattr(relay.normalizer.time, "monotonic_ns", lambda: clock[0])
    normalizer = Normalizer(Metrics(), batch_max=100_000)
    gaps = [msgspec.structs.replace(GAP, ts_recv=n) for n in range(1_000)]
    resync = msgspec.structs.replace(GAP, kind="book_resync")
    messages = normalizer.encode([*gaps, resync])
    clock[0] += relay.normalizer.PARSE_ERROR_LOG_INTERVAL_NS
    messages += normalizer.encode([GAP])
    assert len(messages) == 1_002  # every one published
    logged = [(e["kind"], e["suppressed"]) for e in fresh_log if e["event"] == "venue status"]
    # One line per kind and interval; the next line says how many were left out.
    assert logged == [("book_gap", 0), ("book_resync", 0), ("book_gap", 999)]


async def test_the_running_normalizer_forwards_no_parse_error(
    fresh_log: list[dict[str, Any]],
) -> None:
    metrics = Metrics()
    normalizer = Normalizer(metrics, batch_max=64)
    events_in, events_out = trio.open_memory_channel[list[MarketEvent]](100)
    out = OutageBuffer(1 << 20, {}, metrics, _no_resync)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(normalizer.run, events_out, out)
        async with events_in:
            for n in range(50):
                await events_in.send([_parse_error("bybit", n * 10 + i) for i in range(10)])
            await events_in.send([TRADE])
    published: list[OutMessage] = []
    with pytest.raises(trio.EndOfChannel):  # the normalizer closed it when its input ended
        while True:
            published += await out.get(100)
    assert [m.subject for m in published] == ["market.okx.btc-usdt.trade"]
    lines = [e for e in fresh_log if e["event"] == "unparseable frame (sampled)"]
    assert [(e["venue"], e["detail"]) for e in lines] == [("bybit", "bad frame: number 0")]
