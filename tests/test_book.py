"""Unit tests of relay.book: the L2 order book every codec validates its output with."""

from __future__ import annotations

import random
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import book
from relay.book import BookSide, OrderBook, levels_valid, parse_levels, parse_text_levels
from relay.events import Level


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
