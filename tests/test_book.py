"""Unit tests of relay.book: the L2 order book every codec validates its output with."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal, localcontext
from typing import Any, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay import book, events
from relay.book import BookSide, OrderBook, levels_valid, parse_levels, parse_text_levels
from relay.events import Level, check_non_negative, check_num

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def lv(price: str, size: str) -> Level:
    return (Decimal(price), Decimal(size))


def strs(levels: list[Level]) -> list[tuple[str, str]]:
    return [(str(p), str(s)) for p, s in levels]


def test_empty_book() -> None:
    book = OrderBook()
    assert len(book) == 0
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert not book.is_crossed()
    assert book.top(5) == ([], [])
    assert book.sorted_bids() == []
    assert book.sorted_asks() == []


def test_insert_update_delete() -> None:
    book = OrderBook()
    book.apply_delta([lv("10", "1"), lv("9", "2"), lv("11", "3")], [lv("12", "1"), lv("13", "2")])
    assert strs(book.sorted_bids()) == [("11", "3"), ("10", "1"), ("9", "2")]
    assert strs(book.sorted_asks()) == [("12", "1"), ("13", "2")]
    assert book.best_bid() == lv("11", "3")
    assert book.best_ask() == lv("12", "1")

    book.apply_delta([lv("10", "5")], [lv("12", "0")])  # update a size, delete the best ask
    assert strs(book.sorted_bids()) == [("11", "3"), ("10", "5"), ("9", "2")]
    assert strs(book.sorted_asks()) == [("13", "2")]
    assert book.best_ask() == lv("13", "2")

    book.apply_delta([lv("8", "0")], [lv("99", "0")])  # deleting absent levels is a no-op
    assert len(book) == 4


def test_zero_with_exponent_deletes_and_equal_prices_are_one_level() -> None:
    book = OrderBook()
    book.apply_delta([lv("0.35130000", "6195.00000000")], [])
    # Same value, other spelling: the same level, read back as last sent.
    book.apply_delta([lv("0.3513", "7")], [])
    assert len(book.bids) == 1
    assert strs(book.sorted_bids()) == [("0.3513", "7")]
    book.apply_delta([lv("0.351300", "0.00000000")], [])
    assert len(book) == 0
    assert book.sorted_bids() == []


def test_levels_keep_the_venue_strings() -> None:
    book = OrderBook()
    book.apply_snapshot([lv("0.35130000", "6195.00000000")], [lv("0.35290000", "10968.00000000")])
    assert strs(book.top(1)[0]) == [("0.35130000", "6195.00000000")]
    assert strs(book.top(1)[1]) == [("0.35290000", "10968.00000000")]


def test_snapshot_replaces_everything() -> None:
    book = OrderBook()
    book.apply_delta([lv("1", "1"), lv("2", "1")], [lv("5", "1")])
    book.apply_snapshot(
        [lv("3", "1"), lv("4", "0"), lv("3", "2")],  # a zero is skipped, a repeat wins
        [lv("7", "1"), lv("6", "1")],  # unsorted input is fine
    )
    assert strs(book.sorted_bids()) == [("3", "2")]
    assert strs(book.sorted_asks()) == [("6", "1"), ("7", "1")]
    # The replaced sides keep working incrementally.
    book.apply_delta([lv("3.5", "1")], [lv("6", "0"), lv("5.5", "2")])
    assert strs(book.sorted_bids()) == [("3.5", "1"), ("3", "2")]
    assert strs(book.sorted_asks()) == [("5.5", "2"), ("7", "1")]


def test_top_n() -> None:
    book = OrderBook()
    book.apply_snapshot(
        [lv(str(p), "1") for p in range(1, 11)], [lv(str(p), "1") for p in range(11, 21)]
    )
    bids, asks = book.top(3)
    assert [str(p) for p, _ in bids] == ["10", "9", "8"]
    assert [str(p) for p, _ in asks] == ["11", "12", "13"]
    assert len(book.top(100)[0]) == 10
    assert book.top(0) == ([], [])
    assert book.top(-1) == ([], [])
    assert book.bids.top(10) == book.sorted_bids()


def test_crossed_and_locked() -> None:
    book = OrderBook()
    book.apply_snapshot([lv("10", "1")], [lv("11", "1")])
    assert not book.is_crossed()
    book.apply_delta([lv("11", "1")], [])  # locked: bid == ask
    assert book.is_crossed()
    book.apply_delta([lv("11", "0"), lv("12", "1")], [])  # crossed
    assert book.is_crossed()
    book.apply_delta([lv("12", "0")], [])
    assert not book.is_crossed()
    book.apply_delta([], [lv("11", "0")])  # one side empty: never crossed
    assert not book.is_crossed()


def test_clear_get_contains() -> None:
    book = OrderBook()
    book.apply_snapshot([lv("1", "2")], [lv("3", "4")])
    assert Decimal("1.0") in book.bids
    assert book.bids.get(Decimal("1")) == Decimal("2")
    assert book.asks.get(Decimal("1")) is None
    book.clear()
    assert len(book) == 0
    assert book.best_bid() is None


def test_side_set() -> None:
    side = BookSide(ask=True)
    side.set(Decimal("2"), Decimal("1"))
    side.set(Decimal("1"), Decimal("1"))
    side.set(Decimal("3"), Decimal("1"))
    side.set(Decimal("1"), Decimal("0"))
    assert strs(side.levels()) == [("2", "1"), ("3", "1")]
    assert side.best() == lv("2", "1")


def test_negation_is_exact_under_a_small_context() -> None:
    # Ask keys are negated prices: this must not round, whatever the caller's context.
    book = OrderBook()
    with localcontext() as ctx:
        ctx.prec = 3
        book.apply_delta([], [lv("1.23456789", "1"), lv("1.23456788", "1")])
        assert strs(book.sorted_asks()) == [("1.23456788", "1"), ("1.23456789", "1")]
        book.apply_delta([], [lv("1.23456788", "0")])
        assert strs(book.sorted_asks()) == [("1.23456789", "1")]


def test_levels_valid() -> None:
    assert levels_valid([lv("1", "0"), lv("1", "-0"), lv("-5", "1")])
    assert levels_valid([])
    assert not levels_valid([lv("NaN", "1")])
    assert not levels_valid([lv("1", "Infinity")])
    assert not levels_valid([lv("1", "-1")])
    assert not levels_valid([lv("1", "sNaN")])


# A reference model: a plain dict per side, sorted on every read.
_prices = st.integers(min_value=1, max_value=60).map(lambda n: Decimal(n) / 4)
_sizes = st.sampled_from([Decimal(0), Decimal("0.000"), Decimal(1), Decimal("2.50")])
_levels = st.lists(st.tuples(_prices, _sizes), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _levels, _levels), max_size=25))
def test_matches_reference_model(ops: list[tuple[bool, list[Level], list[Level]]]) -> None:
    book = OrderBook()
    ref_bids: dict[Decimal, Decimal] = {}
    ref_asks: dict[Decimal, Decimal] = {}
    for is_snapshot, bids, asks in ops:
        if is_snapshot:
            book.apply_snapshot(bids, asks)
            ref_bids.clear()
            ref_asks.clear()
        else:
            book.apply_delta(bids, asks)
        for ref, levels in ((ref_bids, bids), (ref_asks, asks)):
            for price, size in levels:
                if size:
                    ref[price] = size
                else:
                    ref.pop(price, None)
        want_bids = sorted(ref_bids.items(), reverse=True)
        want_asks = sorted(ref_asks.items())
        assert book.sorted_bids() == want_bids
        assert book.sorted_asks() == want_asks
        assert book.best_bid() == (want_bids[0] if want_bids else None)
        assert book.best_ask() == (want_asks[0] if want_asks else None)
        assert book.top(3) == (want_bids[:3], want_asks[:3])
        assert book.is_crossed() == bool(
            want_bids and want_asks and want_bids[0][0] >= want_asks[0][0]
        )


def test_parse_levels_keeps_spelling_and_rejects_bad_numbers() -> None:
    # Twice: the second parse is served from the caches and must give the same answer.
    for _ in range(2):
        got = parse_levels([("0.35130000", "6195.00000000"), ("0.3513", "0"), ("1E+2", "-0")])
        assert strs(got) == [("0.35130000", "6195.00000000"), ("0.3513", "0"), ("1E+2", "-0")]
    # A bad level after cached good ones is still rejected, with the plain parse's message.
    for bad in [("NaN", "1"), ("1", "Infinity"), ("1", "sNaN"), ("-Inf", "1"), (".5", "1")]:
        with pytest.raises(ValueError, match="not a decimal number in plain notation"):
            parse_levels([("0.35130000", "6195.00000000"), bad])
    for bad in [("1", "1_000"), ("1", " 1"), ("1E+999", "1"), ("+1", "1")]:
        with pytest.raises(ValueError, match="plain notation"):
            parse_levels([("0.35130000", "6195.00000000"), bad])
    with pytest.raises(ValueError, match="negative size"):
        parse_levels([("0.35130000", "6195.00000000"), ("1", "-1")])
    with pytest.raises(ValueError, match="not a decimal number"):
        parse_levels([("1", "NaN"), ("abc", "1")])  # garbage anywhere wins, as before
    assert parse_levels([("-5", "1")]) == [lv("-5", "1")]  # negative prices are allowed


def test_parse_text_levels_gives_texts_and_levels_and_rejects_what_parse_levels_does() -> None:
    wire = [["0.35130000", "6195.00000000", "0", "4"], ["0.3513", "0"], ["1E+2", "-0"]]
    for _ in range(2):  # the second time from the caches
        texts, levels = parse_text_levels(wire)
        assert texts == [("0.35130000", "6195.00000000"), ("0.3513", "0"), ("1E+2", "-0")]
        assert [(p, s, pt, st) for p, s, pt, st in levels] == [
            (Decimal(p), Decimal(s), p, s) for p, s in texts
        ]
    with pytest.raises(ValueError, match="needs a price and a size"):
        parse_text_levels([["1", "1"], ["2"]])
    for bad, message in [
        (["NaN", "1"], "plain notation"),
        (["1", "-1"], "negative size"),
        (["1" + "0" * 101, "1"], "absurd magnitude"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_text_levels([["0.35130000", "6195.00000000"], bad])
        with pytest.raises(ValueError, match=message):
            parse_levels([("0.35130000", "6195.00000000"), (bad[0], bad[1])])


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(book, "CACHE_LIMIT", 4)
    for cache in ("_prices", "_sizes", "_negated"):
        monkeypatch.setattr(book, cache, {})
    side = BookSide(ask=True)
    for n in range(1, 20):
        side.update(parse_levels([(str(n), str(n))]))
        assert max(len(book._prices), len(book._sizes), len(book._negated)) <= 4
    assert [int(p) for p, _ in side.levels()] == list(range(1, 20))
    side.update(parse_levels([("1", "0"), ("19", "0")]))
    assert [int(p) for p, _ in side.levels()] == list(range(2, 19))


@pytest.mark.parametrize("ask", [False, True])
def test_a_large_delta_gives_the_book_level_by_level_updates_give(ask: bool) -> None:
    # Above BULK_UPDATE levels the sorted keys are rebuilt once; the result must not differ.
    rng = random.Random(7)
    start = [lv(str(p), "1") for p in range(100, 400)]
    delta = [
        lv(f"{rng.randrange(50, 500)}.{rng.randrange(100)}", rng.choice(["0", "2", "0.5"]))
        for _ in range(3 * book.BULK_UPDATE)
    ]
    bulk, incremental = BookSide(ask=ask), BookSide(ask=ask)
    bulk.replace(start)
    incremental.replace(start)
    bulk.update(delta)
    for level in delta:
        incremental.update([level])
    assert strs(bulk.levels()) == strs(incremental.levels())
    assert bulk.best() == incremental.best() and len(bulk) == len(incremental)


# Texts for the cheap plain-notation test the number checks try before their regex: the
# characters Decimal() or str.isdigit() take that the regexes do not (non-ASCII digits, signs,
# spaces, underscores, dots at either end, long exponents, NaN and Infinity), arbitrary text,
# and numbers around MAX_MAGNITUDE digits on either side of the dot.
_NUMBER_CHARS = "0123456789.-+eE _\t\n²٣０𝟙½ⅷNaInfinity"
_digits = st.text("0123456789", max_size=110)
_texts = st.one_of(
    st.text(_NUMBER_CHARS, max_size=12),
    st.text(max_size=8),
    st.builds(
        lambda sign, head, dot, tail, exponent: sign + head + dot + tail + exponent,
        st.sampled_from(["", "", "-", "+", "--", " "]),
        _digits,
        st.sampled_from(["", ".", ".", ".."]),
        _digits,
        st.sampled_from(["", "", "e5", "E-8", "E+12", "e123", "E", "_1", "²"]),
    ),
)


def _outcome(call: Callable[[T], object], arg: T) -> tuple[str, object]:
    """What ``call(arg)`` gives: ``("ok", result)``, or its exception's type and message."""
    try:
        result = call(arg)
    except Exception as exc:  # the type and message are what is compared
        return type(exc).__name__, str(exc)
    return "ok", result


def _exact(outcome: tuple[str, object]) -> tuple[str, object]:
    """An outcome with each Decimal of its levels as ``as_tuple()``: an equal value of
    another spelling (``1.0`` for ``1``) must not pass for the same parse."""
    kind, levels = outcome
    if kind != "ok":
        return outcome
    assert isinstance(levels, list)
    return kind, [tuple(x.as_tuple() for x in level) for level in levels]


def _parse_text_levels_checked(levels: list[tuple[str, str]]) -> list[Level]:
    """:func:`parse_text_levels`' decimals, once its texts are checked to be the input's."""
    texts, parsed = parse_text_levels([list(level) for level in levels])
    assert texts == levels
    assert [(price, size) for _, _, price, size in parsed] == levels
    return [(p, s) for p, s, _, _ in parsed]


_EDGES = [
    "", "-", ".", "0", "-0", "+0", "1.", ".5", "-.5", "1..2", "1.2.3", "²", "٣", "1²", "０",
    " 1", "1 ", "1_000", "1e5", "1E+99", "1e100", "-1E-8", "NaN", "-Infinity", "sNaN",
    "1" + "0" * 99, "1" + "0" * 100, "1" + "0" * 101, "0." + "0" * 98 + "1",
    "0." + "0" * 99 + "1", "0." + "0" * 100 + "1", "-" + "9" * 99, "0" * 120,
]  # fmt: skip
"""Texts each side of every rule: always tried, whatever Hypothesis draws."""


def _with_edges(*rest: str) -> Callable[[F], F]:
    """Hypothesis ``@example`` of each of :data:`_EDGES` (followed by ``rest``)."""

    def decorate(test: F) -> F:
        for edge in _EDGES:
            test = example(edge, *rest)(test)
        return test

    return decorate


@settings(max_examples=2000, deadline=None)
@_with_edges()
@given(_texts)
def test_number_checks_decide_as_their_regexes_on_any_text(text: str) -> None:
    # From empty caches each check takes its miss path, the one with the cheap test; the
    # second call is served from the cache and must agree.
    for check, regex, message in [
        (check_num, events._PLAIN_DECIMAL, "not a plain decimal number"),
        (
            check_non_negative,
            events._NON_NEGATIVE_DECIMAL,
            "not a non-negative plain decimal number",
        ),
    ]:
        events._checked_nums.clear()
        events._checked_non_negative.clear()
        want = ("ok", text)
        if regex.fullmatch(text) is None:
            want = ("ValueError", f"{message}: {text[:40]!r}")
        assert _outcome(check, text) == want
        assert _outcome(check, text) == want


@settings(max_examples=2000, deadline=None)
@_with_edges("1")
@given(_texts, st.sampled_from(["1", "0.5", "-0", "-1", "1E+2", "NaN", ".5"]))
def test_parsing_a_missed_number_gives_what_the_uncached_parse_does(text: str, other: str) -> None:
    # The same levels, digit for digit, or the same exception and message, whether the text
    # is a price or a size, from empty caches (the miss path) and from the caches it filled.
    for levels in ([(text, other)], [(other, text)], [("1", "1"), (text, text)]):
        want = _exact(_outcome(book._parse_uncached, levels))
        for parse in (parse_levels, _parse_text_levels_checked):
            book._prices.clear()
            book._sizes.clear()
            assert _exact(_outcome(parse, levels)) == want
            assert _exact(_outcome(parse, levels)) == want
