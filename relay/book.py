"""An L2 order book for one instrument: price levels with absolute sizes, best first.

Every venue codec keeps one :class:`OrderBook` per subscribed book to validate what it
publishes (a delta that leaves the book crossed means the book is corrupt). The book is
pure data: no I/O, no clock, no sequence numbers (the codec owns the venue's sequencing).

Layout, chosen for a stream of small updates against books of a few thousand levels:

* each side keys its levels by a *sort key*: the price for bids, the negated price for
  asks, so that on both sides the best level has the largest key;
* a ``dict`` from key to the ``(price, size)`` level makes changing the size of an existing
  level (the most frequent update) one dict store;
* a sorted ``list`` of the same key objects, ascending, puts the **best level at the end**.
  A new or removed level costs a ``bisect`` plus a list insert/delete, and since most of
  them happen near the top of the book the memmove behind the list operation is short.
  (Keeping asks ascending by price would put the best ask at index 0 and move the whole
  list on every top-of-book change; measured about 3x slower at 5000 levels.)

Prices are :class:`~decimal.Decimal`; prices equal in value (``1.10`` and ``1.1``) are the
same level, and a level reads back as the tuple of its latest update, so the strings a
venue sent survive. That tuple is a :data:`Level` ``(price, size)``, or a :data:`TextLevel`
``(price, size, price text, size text)`` for the venues whose checksums are computed over
the text (:func:`parse_text_levels`): the book reads the first two items only. Negation
uses :meth:`~decimal.Decimal.copy_negate`, which is exact whatever the decimal context.

:func:`parse_levels` and :func:`parse_text_levels` memoize, in bounded module-level caches,
the decimal of each price and size text, and :meth:`BookSide.update` and
:meth:`BookSide.replace` the sort key of each ask price: the same numbers recur in every
update, and a dict lookup is far cheaper than building a Decimal, let alone hashing a fresh
one. The values are the exact ones either way; only object identity is shared.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Final, Generic, TypeVar

from relay.events import is_plain_decimal

Level = tuple[Decimal, Decimal]
"""A level as the book holds it: (price, size) as decimals."""
TextLevel = tuple[Decimal, Decimal, str, str]
"""A level that also carries the venue's text of its price and size."""
L = TypeVar("L", Level, TextLevel)

__all__ = [
    "MAX_MAGNITUDE",
    "BookSide",
    "Level",
    "OrderBook",
    "TextLevel",
    "levels_valid",
    "parse_levels",
    "parse_text_levels",
]

MAX_MAGNITUDE: Final = 100
"""Decimal exponents (of the leading digit) a venue number may have, either way: no price or
size needs more. ``1E+999999999`` is finite, but its plain text (``format(d, "f")``, and so
every checksum and published level) would take a gigabyte."""


CACHE_LIMIT: Final = 1 << 15
"""Entries each of the module's decimal caches holds before it starts over empty."""

# Venue numbers repeat constantly (the prices near the top of a book, zero sizes, round
# lots). A str dict lookup costs a fraction of building a Decimal from the text, and far less
# than hashing a fresh Decimal (~0.7 us, several times its construction); a Decimal caches its
# hash, so reusing the cached object also makes every book dict operation on it cheap.
# Decimal(text) is exact whatever the context, so memoizing it cannot change a value, only
# which of several equal objects is returned, and Decimals are immutable, so sharing one
# between levels and books is safe. Only validated values are cached: a cached price is
# finite, a cached size finite and non-negative, both within MAX_MAGNITUDE, so a hit needs
# no further check.
#
# A cache that reaches CACHE_LIMIT is emptied in place (cheaper on a miss than any LRU
# bookkeeping): memory stays bounded, and a working set too large to fit costs about what no
# cache would (a miss adds only a len() and a dict store to the Decimal it builds anyway).
_prices: dict[str, Decimal] = {}
_sizes: dict[str, Decimal] = {}
# The sort key (exact negation) of each ask price seen by BookSide.update(), by price: a dict
# lookup on a price whose hash is cached, instead of copy_negate() and a fresh ~0.7 us hash of
# the negation in the book's own dict operations.
_negated: dict[Decimal, Decimal] = {}
BULK_UPDATE: Final = 256
"""Levels in one delta above which :meth:`BookSide.update` re-sorts instead of inserting."""


def parse_levels(levels: Sequence[tuple[str, str]]) -> list[Level]:
    """Decimal levels from a venue's text levels; ``ValueError`` unless :func:`levels_valid`
    and within :data:`MAX_MAGNITUDE`.

    Each text is looked up in a bounded cache of already validated decimals first, so the
    common case costs two dict lookups a level; a miss builds and checks the decimal. On
    the first invalid level the whole list is parsed again without the caches, so the error
    (and its message) is exactly the one of the plain parse.
    """
    # One comprehension of subscripts while every text is cached (a KeyError leaves it for
    # the loop that fills the caches): about half the work of a loop with get() and tests.
    try:
        return [(_prices[price], _sizes[size]) for price, size in levels]
    except KeyError:
        return [(p, s) for p, s, _, _ in _parse_missed(levels)]


def parse_text_levels(
    levels: Sequence[Sequence[str]],
) -> tuple[list[tuple[str, str]], list[TextLevel]]:
    """:func:`parse_levels` of ``[price, size, …]`` lists (items past the size are ignored),
    giving both the ``(price, size)`` texts and the book's levels; ``ValueError`` for a
    short level, and as :func:`parse_levels` does."""
    try:
        texts = [(level[0], level[1]) for level in levels]
    except IndexError:
        raise ValueError("a book level needs a price and a size") from None
    try:
        return texts, [(_prices[price], _sizes[size], price, size) for price, size in texts]
    except KeyError:
        return texts, _parse_missed(texts)


def _parse_missed(texts: Sequence[tuple[str, str]]) -> list[TextLevel]:
    """:func:`parse_text_levels`'s levels (of which :func:`parse_levels` keeps the Decimals)
    once a text is missing from the caches: each one is looked up or built, checked and
    cached, or the reference error raised."""
    # Misses are built and checked inline, not by a function per number: the two calls a
    # level cost about a seventh of a cold level. Unsigned ASCII digits with at most one dot
    # between digits (the cheap test described after relay.events.is_plain_decimal) are in
    # plain notation, finite and not negative, and with at most MAX_MAGNITUDE characters
    # within it (adjusted() lies between minus the digits after the dot and the digits
    # before it less one); only the rest (a sign, an exponent, a longer text, no number)
    # needs _is_price() or _is_size(), which decide exactly as _parse_uncached() does.
    prices = _prices
    sizes = _sizes
    parsed: list[TextLevel] = []
    try:
        for price, size in texts:
            p = prices.get(price)
            if p is None:
                p = Decimal(price)
                head, dot, tail = price.partition(".")
                if not (
                    price.isascii()
                    and head.isdigit()
                    and (tail.isdigit() or not dot)
                    and len(price) <= MAX_MAGNITUDE
                ) and not _is_price(p, price):
                    break
                if len(prices) >= CACHE_LIMIT:
                    prices.clear()
                prices[price] = p
            s = sizes.get(size)
            if s is None:
                s = Decimal(size)
                head, dot, tail = size.partition(".")
                if not (
                    size.isascii()
                    and head.isdigit()
                    and (tail.isdigit() or not dot)
                    and len(size) <= MAX_MAGNITUDE
                ) and not _is_size(s, size):
                    break
                if len(sizes) >= CACHE_LIMIT:
                    sizes.clear()
                sizes[size] = s
            parsed.append((p, s, price, size))
        else:
            return parsed
    except InvalidOperation:  # Decimal() of no number at all
        pass
    _parse_uncached(texts)
    raise AssertionError("unreachable: _parse_uncached raises on what the caches refused")


def _is_price(p: Decimal, text: str) -> bool:
    """Whether ``p``, the Decimal of ``text``, is a valid price: finite, in plain notation
    and within :data:`MAX_MAGNITUDE`."""
    return (
        p.is_finite() and is_plain_decimal(text) and -MAX_MAGNITUDE <= p.adjusted() <= MAX_MAGNITUDE
    )


def _is_size(s: Decimal, text: str) -> bool:
    """:func:`_is_price` for a size, which must not be negative either (``-0`` is signed but
    zero, hence ``and s``)."""
    return _is_price(s, text) and not (s.is_signed() and s)


def _parse_uncached(levels: Sequence[tuple[str, str]]) -> list[Level]:
    """:func:`parse_levels` without the caches: the reference behaviour, errors included."""
    for price, size in levels:
        if not (is_plain_decimal(price) and is_plain_decimal(size)):
            raise ValueError("a level is not a decimal number in plain notation")
    try:
        parsed = [(Decimal(price), Decimal(size)) for price, size in levels]
    except InvalidOperation:
        raise ValueError("a level is not a decimal number") from None
    if not levels_valid(parsed):
        raise ValueError("a level has a non-finite price or a non-finite or negative size")
    for price, size in parsed:
        if not (
            -MAX_MAGNITUDE <= price.adjusted() <= MAX_MAGNITUDE
            and -MAX_MAGNITUDE <= size.adjusted() <= MAX_MAGNITUDE
        ):
            raise ValueError(f"a level of absurd magnitude: {str(price)[:40]} {str(size)[:40]}")
    return parsed


def levels_valid(levels: Iterable[Level]) -> bool:
    """Whether every level has a finite price and a finite, non-negative size.

    The book assumes this and does not check it on its hot path: a ``NaN`` price cannot be
    ordered and a negative size is meaningless, so codecs call this on decoded venue data
    before applying it.
    """
    # An explicit loop with method calls: measured 3-4x faster than ``all()`` over a
    # generator with ``size >= 0`` (``-0`` is signed but zero, hence ``and size``).
    for price, size in levels:
        if not price.is_finite() or not size.is_finite() or (size.is_signed() and size):
            return False
    return True


def _ask_key(price: Decimal) -> Decimal:
    """The sort key of an ask at ``price``, its exact negation, remembered in :data:`_negated`."""
    key = price.copy_negate()
    if len(_negated) >= CACHE_LIMIT:
        _negated.clear()
    _negated[price] = key
    return key


class BookSide(Generic[L]):
    """One side of a book: bids (``ask=False``) or asks (``ask=True``) of levels ``L``."""

    __slots__ = ("_ask", "_keys", "_levels")

    def __init__(self, *, ask: bool) -> None:
        self._ask = ask
        # Both the dict and the sorted list use the sort key (the price for bids, the negated
        # price for asks), and they share the key objects: a Decimal caches its hash, and
        # hashing a fresh one costs ~0.75 us, so best()/top() must not build new keys.
        self._levels: dict[Decimal, L] = {}
        self._keys: list[Decimal] = []  # ascending: the best level is last

    def _key(self, price: Decimal) -> Decimal:
        return price.copy_negate() if self._ask else price

    def __len__(self) -> int:
        return len(self._levels)

    def __contains__(self, price: Decimal) -> bool:
        return self._key(price) in self._levels

    def get(self, price: Decimal) -> Decimal | None:
        """The size at ``price``, or ``None`` when there is no such level."""
        level = self._levels.get(self._key(price))
        return None if level is None else level[1]

    def set(self: BookSide[Level], price: Decimal, size: Decimal) -> None:
        """Set the absolute size at ``price``; a zero size removes the level."""
        self.update(((price, size),))

    def update(self, levels: Iterable[L]) -> None:
        """Apply absolute-size updates in order (size zero deletes)."""
        if isinstance(levels, list) and len(levels) > BULK_UPDATE:
            self._update_bulk(levels)
            return
        book = self._levels
        keys = self._keys
        ask = self._ask
        negated = _negated
        for level in levels:
            price = level[0]
            size = level[1]
            if ask:
                key = negated.get(price)
                if key is None:
                    key = _ask_key(price)
            else:
                key = price
            if size:
                if key not in book:
                    insort(keys, key)
                # Store the caller's tuple itself: no allocation, and the book reports the
                # level exactly as the venue last sent it.
                book[key] = level
            elif key in book:
                del book[key]
                del keys[bisect_left(keys, key)]

    def _update_bulk(self, levels: list[L]) -> None:
        """:meth:`update` for a delta of many levels: the sorted keys are rebuilt once
        instead of one insertion each (each a memmove of the key list: quadratic)."""
        self._store(self._levels, levels)
        self._keys[:] = sorted(self._levels)

    def replace(self, levels: Iterable[L]) -> None:
        """Replace the whole side (snapshot); zero sizes are skipped, a repeated price keeps
        its last level."""
        book: dict[Decimal, L] = {}
        self._store(book, levels)
        self._levels = book
        self._keys = sorted(book)

    def _store(self, book: dict[Decimal, L], levels: Iterable[L]) -> None:
        """Put ``levels`` in ``book`` by sort key in order, a zero size removing its price;
        the keys list is the caller's to rebuild."""
        ask = self._ask
        negated = _negated
        for level in levels:
            price = level[0]
            size = level[1]
            # Through _negated, as in update(): venues that send the whole book again and
            # again (Hyperliquid, Kraken, Bybit's depth 1) repeat most prices, and a repeated
            # price's cached key saves hashing a fresh negation (measured 4x faster on 50
            # repeated asks). A new price costs one hash more, of the price itself.
            if ask:
                key = negated.get(price)
                if key is None:
                    key = _ask_key(price)
            else:
                key = price
            if size:
                book[key] = level
            else:
                book.pop(key, None)

    def clear(self) -> None:
        self._levels = {}
        self._keys = []

    def best(self) -> L | None:
        """The best level (highest bid, lowest ask), or ``None`` when the side is empty."""
        keys = self._keys
        return self._levels[keys[-1]] if keys else None

    def top(self, n: int) -> list[L]:
        """The best ``n`` levels, best first."""
        if n <= 0:
            return []
        keys = self._keys
        levels = self._levels
        picked = keys[: -n - 1 : -1] if n < len(keys) else keys[::-1]
        return [levels[k] for k in picked]

    def levels(self) -> list[L]:
        """All levels, best first (bids descending, asks ascending by price)."""
        return self.top(len(self._keys))


class OrderBook(Generic[L]):
    """Bids and asks of one instrument, of levels ``L`` (:data:`Level` or :data:`TextLevel`).

    ``bids`` and ``asks`` are the two :class:`BookSide` objects; the methods here are the
    whole-book operations a codec needs.
    """

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: BookSide[L] = BookSide(ask=False)
        self.asks: BookSide[L] = BookSide(ask=True)

    def __len__(self) -> int:
        """Number of levels on both sides."""
        return len(self.bids) + len(self.asks)

    def apply_snapshot(self, bids: Iterable[L], asks: Iterable[L]) -> None:
        """Replace the book with a snapshot."""
        self.bids.replace(bids)
        self.asks.replace(asks)

    def apply_delta(self, bids: Iterable[L], asks: Iterable[L]) -> None:
        """Apply absolute-size updates to both sides (size zero deletes the level)."""
        self.bids.update(bids)
        self.asks.update(asks)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def best_bid(self) -> L | None:
        return self.bids.best()

    def best_ask(self) -> L | None:
        return self.asks.best()

    def is_crossed(self) -> bool:
        """Whether the best bid is at or above the best ask.

        A locked book (bid == ask) counts as crossed: a single matching engine never rests
        both, so a codec seeing one has a corrupt copy. An empty side is never crossed.
        """
        bid = self.bids.best()
        if bid is None:
            return False
        ask = self.asks.best()
        return ask is not None and bid[0] >= ask[0]

    def crossing(self) -> str | None:
        """``"bid 101.5 >= ask 101.2"`` when the book :meth:`is_crossed`, else ``None``.

        The crossing prices for a codec's status detail; one call does the check and the
        text, so a codec can use it on every update instead of :meth:`is_crossed`.
        """
        # The sides' insides, read here directly: this runs after every update, and the best
        # bid's sort key is its price.
        bid_keys = self.bids._keys
        ask_keys = self.asks._keys
        if not bid_keys or not ask_keys:
            return None
        bid = bid_keys[-1]
        ask = self.asks._levels[ask_keys[-1]][0]
        if bid < ask:
            return None
        return f"bid {bid} >= ask {ask}"

    def top(self, n: int) -> tuple[list[L], list[L]]:
        """The best ``n`` bids (descending) and asks (ascending)."""
        return self.bids.top(n), self.asks.top(n)

    def sorted_bids(self) -> list[L]:
        """All bids, highest price first."""
        return self.bids.levels()

    def sorted_asks(self) -> list[L]:
        """All asks, lowest price first."""
        return self.asks.levels()
