"""Normalized market events: what every venue codec produces and the relay publishes.

Each event is a msgspec Struct with a ``type`` tag; the JSON body of a published message is
exactly the event encoded by :mod:`relay.wire`. Prices and sizes are :data:`Num`: the exact
decimal text the venue sent (``"0.00000000"``), checked by the codec to be a decimal number
in plain notation (:func:`check_num`; sizes and traded or quoted prices, which cannot be
negative, by :func:`check_non_negative`), so ``Decimal(x)`` gives the value and the JSON
strings equal what the venue sent.
(A ``Decimal`` field would not do: msgspec writes ``Decimal("0.00000000")`` as ``"0E-8"``.)
Timestamps are integer nanoseconds since the Unix epoch: ``ts_venue`` as stamped by the venue
(``None`` when the venue sends none) and ``ts_recv`` when the relay read the frame.
"""

from __future__ import annotations

import enum
import re
from typing import Final, Literal

import msgspec


class DataType(enum.StrEnum):
    """The kinds of data a subscription can ask for; each is a subject suffix."""

    TRADE = "trade"
    TICKER = "ticker"
    L2_ORDERBOOK = "l2_orderbook"
    FUNDING_RATE = "funding_rate"
    LIQUIDATION = "liquidation"
    MARK_PRICE = "mark_price"
    OPEN_INTEREST = "open_interest"


Side = Literal["buy", "sell"]
Num = str
"""An exact decimal number as the venue wrote it (plain notation, never a float)."""


_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]{1,2})?")
"""What consumers in any language can read: ASCII digits, an optional fraction, and an
optional exponent of at most two digits (``str(Decimal)`` writes ``1E-8``). ``Decimal()``
alone would also take ``" 1"``, ``"1_000"``, ``"١٢٣"``, ``".5"`` and ``"1E+999999999"``."""


def is_plain_decimal(text: str) -> bool:
    """Whether ``text`` is a decimal number in plain notation (see :func:`check_num`)."""
    return _PLAIN_DECIMAL.fullmatch(text) is not None


# The checks on the codecs' hot paths (check_num(), check_non_negative() and the decimal
# caches of relay.book) first try a cheaper test, inlined because a call would cost about as
# much as it saves:
#
#     head, dot, tail = text.partition(".")
#     text.isascii() and head.isdigit() and (tail.isdigit() or not dot)
#
# ASCII digits, at most one dot, and digits on both sides of it: the shape of nearly every
# venue number ("60123.4", "0.00100000", "5"), accepted at under half the cost of a regex
# match. It accepts a subset of what the regexes accept, and what it refuses is left to the
# regex, so the decision is the regex's. isdigit() alone would take non-ASCII digits ("²",
# "٣"), hence isascii() (constant time); an empty side of the dot ("1.", ".5") fails isdigit().


CHECKED_LIMIT: Final = 1 << 13
"""Texts each of :func:`check_num` and :func:`check_non_negative` remembers as checked
before it starts over empty."""

# Venues repeat the same numbers constantly (the best bid and ask, round sizes): a set lookup
# costs a fraction of a regex match. Only texts that matched are remembered.
_checked_nums: set[str] = set()
_checked_non_negative: set[str] = set()


def check_num(text: str) -> str:
    """Return ``text`` if it is a decimal number in plain notation, else raise
    ``ValueError``. For values that can be negative: funding rates, mark and index prices."""
    if text not in _checked_nums:
        # The cheap test (see after is_plain_decimal()), with an optional "-" (funding rates
        # are often negative); what it refuses is left to the regex.
        head, dot, tail = text.partition(".")
        if (
            not (
                text.isascii()
                and (head.isdigit() or (head[:1] == "-" and head[1:].isdigit()))
                and (tail.isdigit() or not dot)
            )
            and _PLAIN_DECIMAL.fullmatch(text) is None
        ):
            raise ValueError(f"not a plain decimal number: {text[:40]!r}")
        if len(_checked_nums) >= CHECKED_LIMIT:
            _checked_nums.clear()
        _checked_nums.add(text)
    return text


_NON_NEGATIVE_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]{1,2})?")
""":data:`_PLAIN_DECIMAL` without the sign: one match checks both."""


def check_non_negative(text: str) -> str:
    """:func:`check_num` for what cannot be negative: sizes, open interest, and the prices
    of trades, quotes and liquidations. ``-0`` is refused too (no venue writes it)."""
    if text not in _checked_non_negative:
        head, dot, tail = text.partition(".")  # the cheap test, see after is_plain_decimal()
        if not (text.isascii() and head.isdigit() and (tail.isdigit() or not dot)) and (
            _NON_NEGATIVE_DECIMAL.fullmatch(text) is None
        ):
            raise ValueError(f"not a non-negative plain decimal number: {text[:40]!r}")
        if len(_checked_non_negative) >= CHECKED_LIMIT:
            _checked_non_negative.clear()
        _checked_non_negative.add(text)
    return text


Level = tuple[Num, Num]
"""One book level: (price, size). Size zero in a delta removes the level."""


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event carries."""

    venue: str
    symbol: str
    """Canonical symbol: ``BTC-USDT``, ``BTC-USDT-PERP``, ``BTC-USD-261225``."""
    native_symbol: str
    ts_venue: int | None
    ts_recv: int


class Trade(Event, frozen=True, kw_only=True, tag="trade"):
    trade_id: str
    price: Num
    size: Num
    side: Side
    """The taker (aggressor) side."""


class Ticker(Event, frozen=True, kw_only=True, tag="ticker"):
    bid_price: Num | None
    bid_size: Num | None
    ask_price: Num | None
    ask_size: Num | None
    last_price: Num | None = None
    sequence: int | None = None
    """The venue's update id for this quote, where it sends one."""


class BookSnapshot(Event, frozen=True, kw_only=True, tag="l2_snapshot"):
    """The full known book; consumers replace their copy with it."""

    sequence: int
    """The venue update id the snapshot is current at (Binance ``lastUpdateId``)."""
    bids: list[Level]
    asks: list[Level]


class BookDelta(Event, frozen=True, kw_only=True, tag="l2_delta"):
    """Absolute sizes for the levels that changed; size ``0`` deletes the level.

    ``first_sequence``..``sequence`` is the venue's update-id range in this delta and
    ``prev_sequence`` the ``sequence`` of the message it follows on this book, so a
    consumer can verify the chain exactly as the relay did.
    """

    first_sequence: int | None
    sequence: int
    prev_sequence: int | None
    bids: list[Level]
    asks: list[Level]


class FundingRate(Event, frozen=True, kw_only=True, tag="funding_rate"):
    rate: Num
    next_funding_ts: int | None = None
    mark_price: Num | None = None
    index_price: Num | None = None


class Liquidation(Event, frozen=True, kw_only=True, tag="liquidation"):
    side: Side
    """The side of the liquidated position (``buy`` = a long was liquidated)."""
    price: Num
    size: Num
    liquidation_id: str | None = None


class MarkPrice(Event, frozen=True, kw_only=True, tag="mark_price"):
    mark_price: Num
    index_price: Num | None = None


class OpenInterest(Event, frozen=True, kw_only=True, tag="open_interest"):
    open_interest: Num
    """In base units (contracts converted with the contract size)."""
    open_interest_value: Num | None = None
    """In quote units, where the venue gives it."""


class VenueStatus(Event, frozen=True, kw_only=True, tag="status"):
    """Something the relay noticed about a venue or one of its books.

    ``kind`` is one of :data:`STATUS_KINDS`. ``symbol`` is empty when the status is about
    the whole connection.
    """

    kind: str
    detail: str = ""


STATUS_KINDS = frozenset(
    {
        "connected",
        "disconnected",
        "book_gap",  # sequence chain broke; a resync follows
        "book_resync",  # a fresh snapshot was requested for one symbol
        "book_synced",  # snapshot applied, deltas flowing
        "checksum_mismatch",
        "server_shutdown",  # the venue announced it will close the connection
        "parse_error",
        "venue_error",  # the venue answered a request with an error
        "unknown_symbol",
        "stale",  # a stream (symbol, data type) went silent past its learned threshold
        "fresh",  # a stale stream delivers again
        "stalled",  # a connection delivered no data frame for the stall timeout; reopened
    }
)

MarketEvent = (
    Trade
    | Ticker
    | BookSnapshot
    | BookDelta
    | FundingRate
    | Liquidation
    | MarkPrice
    | OpenInterest
    | VenueStatus
)

DATA_TYPE_OF: dict[type[Event], DataType | None] = {
    Trade: DataType.TRADE,
    Ticker: DataType.TICKER,
    BookSnapshot: DataType.L2_ORDERBOOK,
    BookDelta: DataType.L2_ORDERBOOK,
    FundingRate: DataType.FUNDING_RATE,
    Liquidation: DataType.LIQUIDATION,
    MarkPrice: DataType.MARK_PRICE,
    OpenInterest: DataType.OPEN_INTEREST,
    VenueStatus: None,
}
"""The subject type each event is published under; ``None`` means the venue status subject."""
