"""Helpers several venue codecs share, for the parts of their work that are venue-neutral.

* planning connections in ``make_codecs``: :func:`check_data_types`,
  :func:`merge_subscriptions`, :func:`pack` (symbols onto connections) and :func:`chunks`
  (args into request frames);
* numbers: :func:`scale_size` and :func:`scale_levels` turn contracts into base units
  with exact :class:`~decimal.Decimal` arithmetic; for venues that send JSON numbers,
  decoded as ``Decimal``, :func:`check_finite` rejects NaN, infinities and absurd
  exponents (:func:`check_levels_magnitude` the latter in book levels,
  :func:`check_non_negative` negative values as well) and :func:`decimal_text` writes the
  number back as plain text; :data:`Int64` and :data:`EpochMs` are the wire Structs' types
  for venue integers, bounded so that what is published fits an int64;
* times: :func:`rfc3339_fraction_ns` reads the RFC 3339 times venues stamp on every message;
* symbols: :func:`split_quote` splits an undelimited pair (``BTCUSDT``) at a known quote
  asset.

What is venue-specific (which data types, which key names an instrument, what a unit
costs on a connection, which quote assets) is passed in by the venue module. The module's
name starts with ``_``, so :data:`adapters.NAMES` does not list it as an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from decimal import Decimal
from typing import Annotated, Final, TypeVar, overload

import msgspec

from relay.book import MAX_MAGNITUDE
from relay.codec import Subscription
from relay.events import DataType, Level
from relay.timestamps import MAX_NS, NS_PER_MS, rfc3339_ns

__all__ = [
    "MAX_EPOCH_MS",
    "EpochMs",
    "Int64",
    "check_data_types",
    "check_finite",
    "check_levels_magnitude",
    "check_non_negative",
    "chunks",
    "decimal_text",
    "merge_subscriptions",
    "pack",
    "rfc3339_fraction_ns",
    "scale_levels",
    "scale_size",
    "split_quote",
]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Connection planning


def check_data_types(
    venue: str, what: str, sub: Subscription, supported: frozenset[DataType]
) -> None:
    """Raise ``ValueError`` naming the data types of ``sub`` that ``supported`` lacks.

    ``what`` names the feed in the message: ``"okx"``, ``"bybit spot"``.
    """
    unsupported = sub.data_types - supported
    if unsupported:
        names = ", ".join(sorted(unsupported))
        raise ValueError(f"{venue}: {what} has no {names} ({sub.native_symbol})")


def merge_subscriptions(
    venue: str, subscriptions: Iterable[Subscription], key: Callable[[Subscription], K]
) -> dict[K, Subscription]:
    """One subscription per instrument, in the order instruments are first named.

    ``key(sub)`` names the instrument a subscription is for (for example its native symbol
    upper-cased, where the venue ignores case); it is called once per subscription, in
    order, and is also where a venue rejects what it cannot serve, by raising
    ``ValueError``. Subscriptions with equal keys are merged into the first one's spelling
    with the union of their data types. ``ValueError`` if they disagree on the canonical
    symbol or on the contract size.
    """
    merged: dict[K, Subscription] = {}
    for sub in subscriptions:
        k = key(sub)
        seen = merged.get(k)
        if seen is None:
            merged[k] = sub
            continue
        if seen.symbol != sub.symbol:
            raise ValueError(
                f"{venue}: {sub.native_symbol} configured twice differently: "
                f"mapped to both {seen.symbol} and {sub.symbol}"
            )
        if seen.contract_size != sub.contract_size:
            raise ValueError(
                f"{venue}: {sub.native_symbol} configured twice differently: "
                f"given two contract sizes ({seen.contract_size} and {sub.contract_size})"
            )
        merged[k] = Subscription(
            seen.native_symbol, seen.symbol, seen.data_types | sub.data_types, seen.contract_size
        )
    return merged


def pack(items: Iterable[T], cost: Callable[[T], int], limit: int) -> list[list[T]]:
    """Items, in order, on as few connections as keep each one's total ``cost`` in ``limit``.

    A connection is filled until the next item does not fit, then a new one is started: an
    item's units (a symbol's streams, say) are never split. Items costing nothing are left
    out; an item costing more than ``limit`` gets a connection of its own.
    """
    shards: list[list[T]] = []
    used = limit  # forces a first shard
    for item in items:
        n = cost(item)
        if n == 0:
            continue
        if used + n > limit:
            shards.append([])
            used = 0
        shards[-1].append(item)
        used += n
    return shards


def chunks(items: list[T], size: int) -> list[list[T]]:
    """``items`` cut into consecutive lists of at most ``size`` (for request frames)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


# ---------------------------------------------------------------------------------------------
# Sizes and numbers


def scale_size(size: str, contract_size: Decimal | None) -> str:
    """A venue size in base units: ``size`` unchanged without a contract size, else
    ``size × contract_size`` exactly, written in plain notation."""
    if contract_size is None:
        return size
    return format(Decimal(size) * contract_size, "f")


def scale_levels(levels: list[Level], contract_size: Decimal | None) -> list[Level]:
    """:func:`scale_size` on every level's size; ``levels`` itself without a contract size."""
    if contract_size is None:
        return levels
    return [(price, format(Decimal(size) * contract_size, "f")) for price, size in levels]


def check_finite(*values: Decimal | None) -> None:
    """Raise ``ValueError`` for a NaN or infinite value, or one beyond
    :data:`MAX_MAGNITUDE` (``None`` passes).

    For the ``__post_init__`` of Structs with ``Decimal`` fields: msgspec also accepts a
    JSON *string* for a Decimal, so ``"NaN"`` could get in; raised there, the ValueError
    becomes a decode error.
    """
    for value in values:
        if value is not None and (
            not value.is_finite() or not -MAX_MAGNITUDE <= value.adjusted() <= MAX_MAGNITUDE
        ):
            raise ValueError(f"not a finite number of sane magnitude: {str(value)[:40]}")


def check_non_negative(*values: Decimal | None) -> None:
    """:func:`check_finite`, and ``ValueError`` for a negative value (``-0`` included, as
    :func:`relay.events.check_non_negative` refuses the text ``"-0"``): for sizes and the
    prices of trades, quotes and liquidations."""
    for value in values:
        # One test of all three on the common path; check_finite names what failed.
        if value is not None and (
            value.is_signed()
            or not value.is_finite()
            or not -MAX_MAGNITUDE <= value.adjusted() <= MAX_MAGNITUDE
        ):
            check_finite(value)
            raise ValueError(f"a negative size or price: {str(value)[:40]}")


def check_levels_magnitude(levels: Iterable[tuple[Decimal, Decimal]]) -> None:
    """:func:`check_finite`'s magnitude bound on decoded book levels (which
    :func:`relay.book.levels_valid` lets through; :func:`relay.book.parse_levels` does not)."""
    for price, size in levels:
        if not (
            -MAX_MAGNITUDE <= price.adjusted() <= MAX_MAGNITUDE
            and -MAX_MAGNITUDE <= size.adjusted() <= MAX_MAGNITUDE
        ):
            raise ValueError(f"a level of absurd magnitude: {str(price)[:40]} {str(size)[:40]}")


Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""A venue integer (update id, sequence number) in a wire Struct: msgspec decodes JSON
integers of any size, and one beyond int64 would be published as a JSON number that
consumers in most languages cannot read. Out of range, it is a decode error (a bad frame)."""

MAX_EPOCH_MS: Final = MAX_NS // NS_PER_MS
"""The last epoch millisecond whose nanoseconds (``ts_venue``) fit an int64 (in 2262)."""

EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]
"""Venue time in epoch milliseconds in a wire Struct, at most :data:`MAX_EPOCH_MS`."""


_SECOND_NS_LIMIT: Final = 256
"""Times up to the second that :func:`rfc3339_fraction_ns` remembers before it starts over."""
_seconds: dict[str, int] = {}
"""``2026-08-12T19:27:48.`` (a time up to the second, and the dot) → its nanoseconds."""
_FRACTION_SCALE: Final = (0, *(10 ** (9 - n) for n in range(1, 10)))
"""Nanoseconds per unit of a fraction of ``n`` digits (index ``n``): ``.5`` is 5 × 10⁸ ns."""


def _second_ns(key: str) -> int | None:
    """The nanoseconds of ``key``, a time up to the second and its dot; ``None`` if it is not
    one. Remembered in :data:`_seconds` (only times that parse)."""
    if key[19:] != ".":
        return None
    try:
        second = rfc3339_ns(f"{key[:19]}Z")
    except ValueError:
        return None
    if len(_seconds) >= _SECOND_NS_LIMIT:
        _seconds.clear()
    _seconds[key] = second
    return second


def rfc3339_fraction_ns(text: str) -> int:
    """:func:`relay.timestamps.rfc3339_ns`, several times faster for what venues stamp on
    every message, a UTC time with a fraction (``2026-08-12T19:27:48.098821666Z``): the time
    up to the second is read once (memoized: a stream stays on one second for many messages)
    and only the fraction here. Anything else, errors included, is rfc3339_ns's own."""
    # A time up to the second is 19 characters (rfc3339_ns takes no other widths), so the
    # first 20 are it and the dot, and what follows up to the Z is the fraction.
    key = text[:20]
    second = _seconds.get(key)
    if second is None:
        second = _second_ns(key)
        if second is None:
            return rfc3339_ns(text)
    digits = text[20:-1]
    # int() alone would also take "+1", " 1", "1_0" and non-ASCII digits.
    if text[-1] == "Z" and digits.isdigit() and digits.isascii():
        try:
            scale = _FRACTION_SCALE[len(digits)]
        except IndexError:  # more than 9 digits
            return rfc3339_ns(text)
        # Not negative (rfc3339_ns checked the second), but it may pass MAX_NS.
        ns = second + int(digits) * scale
        if ns <= MAX_NS:
            return ns
    return rfc3339_ns(text)


@overload
def decimal_text(value: Decimal, factor: Decimal | None = None) -> str: ...
@overload
def decimal_text(value: None, factor: Decimal | None = None) -> None: ...
@overload
def decimal_text(value: Decimal | None, factor: Decimal | None = None) -> str | None: ...
def decimal_text(value: Decimal | None, factor: Decimal | None = None) -> str | None:
    """A venue number decoded as a Decimal, as plain text (``5e-05`` → ``"0.00005"``),
    times ``factor`` (a contract size) when one is given; ``None`` stays ``None``.

    Plain notation keeps every digit the venue sent, trailing zeros included.
    """
    if value is None:
        return None
    return format(value if factor is None else value * factor, "f")


# ---------------------------------------------------------------------------------------------
# Symbols and book levels


def split_pair(native: str, separator: str) -> tuple[str, str] | None:
    """``("BTC", "USD")`` for ``BTC<separator>USD``: two non-empty ASCII alphanumeric codes
    around one separator; ``None`` otherwise."""
    base, sep, quote = native.partition(separator)
    if not (sep and base.isascii() and quote.isascii() and base.isalnum() and quote.isalnum()):
        return None
    return base, quote


def split_quote(symbol: str, quotes: Sequence[str]) -> tuple[str, str] | None:
    """``("BTCUSDT", quotes)`` → ``("BTC", "USDT")``: the first of ``quotes`` that ends
    ``symbol`` and leaves a non-empty base; ``None`` when none does.

    Pass ``quotes`` longest first, so that ``USDT`` is tried before ``USD``.
    """
    for quote in quotes:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return None
