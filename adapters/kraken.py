"""Kraken spot: the sans-IO codec for the public WebSocket API v2 (``wss://ws.kraken.com/v2``).

One :class:`KrakenCodec` serves one connection. Every v2 frame is a JSON object: channel
data as ``{"channel", "type": "snapshot"|"update", "data": [...]}``, request answers as
``{"method", "success", "result"|"error", "req_id", ...}``. Channels used:

* ``trade`` → :class:`~relay.events.Trade`: ``side`` is the taker side, ``qty`` is in base
  units, ``trade_id`` is Kraken's sequential integer per pair (the message id). Subscribed
  with ``snapshot: true``: on every (re)connect Kraken replays its last ~50 trades, which
  fills what a disconnect lost; trades already published carry the same message id and
  JetStream stores them once.
* ``ticker`` with ``event_trigger: "bbo"`` → :class:`~relay.events.Ticker` on every change
  of the best bid/offer (``last`` is included).
* ``book`` → :class:`~relay.events.BookSnapshot` / :class:`~relay.events.BookDelta`, depth
  :data:`BOOK_DEPTH` (see :class:`KrakenCodec` for the checksum rule).
* ``instrument`` → not published; it gives each pair's ``price_precision`` and
  ``qty_precision``, which the book checksum needs.
* ``status`` (system state), ``heartbeat`` and ``pong`` frames carry no market data.

**Numbers.** Kraken v2 sends prices and quantities as JSON *numbers*. They are decoded
straight into :class:`~decimal.Decimal` (msgspec keeps every digit the venue wrote, never
going through a float) and published as ``format(d, "f")``, so ``85600.40`` stays
``"85600.40"`` and ``5e-05`` becomes ``"0.00005"``.

**Sizes** are base-asset units on Kraken spot. A :class:`~relay.codec.Subscription` with a
``contract_size`` has every published size multiplied by it (Decimal arithmetic); the books
the codec keeps stay in venue units, which the checksum needs.

**Sequence ids.** Kraken book messages carry no sequence number. The codec numbers each
book's events by the venue's message ``timestamp`` (RFC 3339, microseconds) in nanoseconds:
``sequence = max(timestamp_ns, previous sequence + 1)``, so two messages stamped in the same
microsecond get consecutive ids. ``first_sequence == sequence`` and ``prev_sequence`` is the
``sequence`` of the book event published before it (the snapshot for the first delta). The
ids are built from venue data only, so the same frame replayed gets the same message id.

``ADAPTER.make_codecs`` puts at most :data:`MAX_SYMBOLS_PER_CONNECTION` pairs on one
connection (Kraken documents no per-connection cap; the figure is our choice).

**Instrument list** (``ADAPTER.instruments``): ``GET <rest_url>/0/public/AssetPairs`` (REST,
spot pairs of the default ``aclass_base=currency``; tokenized equities such as ``AAPLx/USD``
are not in that answer and would be reported as unlisted). A pair's native symbol is its
``wsname`` with the legacy asset codes the v1 names still use renamed to the v2 ones
(:data:`V2_ASSET_CODES`: ``XBT/USD`` → ``BTC/USD``, ``XDG/USD`` → ``DOGE/USD``); pairs without
a ``wsname`` are skipped. Tick ``tick_size`` (else ``10^-pair_decimals``), lot
``10^-lot_decimals``; ``status`` ``online`` is active. Sizes are base units.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final, Literal

import msgspec

from adapters._common import (
    Int64,
    check_data_types,
    check_levels_magnitude,
    check_non_negative,
    chunks,
    decimal_text,
    merge_subscriptions,
    rfc3339_fraction_ns,
    split_pair,
)
from relay.book import CACHE_LIMIT, MAX_MAGNITUDE, BookSide, OrderBook, levels_valid
from relay.book import Level as BookLevel
from relay.codec import Adapter, Codec, Endpoints, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    Level,
    MarketEvent,
    Ticker,
    Trade,
    VenueStatus,
)
from relay.instruments import Instrument, InstrumentSource, canonical, decode, step_text

__all__ = [
    "ADAPTER",
    "BOOK_DEPTH",
    "CHECKSUM_DEPTH",
    "INSTRUMENTS",
    "MAX_SYMBOLS_PER_CONNECTION",
    "MAX_SYMBOLS_PER_SUBSCRIBE",
    "V2_ASSET_CODES",
    "KrakenCodec",
    "book_checksum",
    "canonical_symbol",
    "make_codecs",
    "parse_instruments",
]

BOOK_DEPTH: Final = 10
"""Levels per side subscribed (Kraken's default; it allows 10, 25, 100, 500, 1000)."""
BOOK_DEPTHS: Final = frozenset({10, 25, 100, 500, 1000})
CHECKSUM_DEPTH: Final = 10
"""Levels per side the checksum covers, whatever the subscribed depth."""
MAX_SYMBOLS_PER_CONNECTION: Final = 200
"""Pairs per connection: our choice, Kraken documents no limit (kraken.md §1 ⚠)."""
MAX_SYMBOLS_PER_SUBSCRIBE: Final = 100
"""Pairs per subscribe request, to keep request frames small."""
PING_INTERVAL: Final = 30.0

_PING: Final = '{"method":"ping"}'
_BOOK_FRAME: Final = '{"channel":"book",'
"""How a ``book`` frame starts (:meth:`KrakenCodec._receive`)."""

# ---------------------------------------------------------------------------------------------
# Symbols


def canonical_symbol(native: str) -> str | None:
    """``BTC/USD`` → ``BTC-USD``: v2 pairs are ``BASE/QUOTE`` with ISO-style asset codes.

    Returns ``None`` unless the symbol is two non-empty alphanumeric codes around one
    ``/``. Case is kept (tokenized equities are spelled ``AAPLx/USD``). v2 already uses
    ``BTC`` (never the legacy ``XBT``/``XXBT`` codes), so no asset renaming is needed. At
    run time the REST asset pairs (:data:`INSTRUMENTS`) decide.
    """
    pair = split_pair(native, "/")
    if pair is None:
        return None
    base, quote = pair
    return f"{base}-{quote}"


# ---------------------------------------------------------------------------------------------
# Wire formats. Only the fields the codec uses are declared; msgspec skips the rest.


class _Envelope(msgspec.Struct, gc=False):
    channel: str | None = None
    type: str | None = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    method: str | None = None
    success: bool | None = None
    error: str | None = None
    symbol: str | None = None
    req_id: int | None = None


class _Level(msgspec.Struct, gc=False):
    price: Decimal
    qty: Decimal


_NO_LEVELS: Final = msgspec.Raw(b"[]")


class _Book(msgspec.Struct, gc=False):
    """A ``book`` item with its levels read by :func:`_read_levels`, the fast path.

    Any level it cannot read there, or any other check failing, fails the decode, and
    :class:`_CheckedBook` decodes the payload again: that is the reference, which gives the
    exact error a bad frame is reported with (and the values of any frame this struct
    refuses).
    """

    symbol: str
    timestamp: str
    bids: msgspec.Raw = _NO_LEVELS
    asks: msgspec.Raw = _NO_LEVELS
    checksum: int | None = None
    # Filled after decoding (the names cannot occur in the JSON): the levels for the book and
    # their plain texts (format(d, "f")), in the message's order.
    bid_levels: list[BookLevel] = msgspec.field(default_factory=list, name="__bids")
    bid_texts: list[Level] = msgspec.field(default_factory=list, name="__bid_texts")
    ask_levels: list[BookLevel] = msgspec.field(default_factory=list, name="__asks")
    ask_texts: list[Level] = msgspec.field(default_factory=list, name="__ask_texts")
    ts_ns: int = msgspec.field(default=0, name="__ts")

    def __post_init__(self) -> None:
        self._read_sides()
        if self.checksum is not None and not 0 <= self.checksum <= 0xFFFF_FFFF:
            raise ValueError("checksum is not an unsigned 32-bit integer")
        self.ts_ns = rfc3339_fraction_ns(self.timestamp)

    def _read_sides(self) -> None:
        """Fill the levels and their texts from ``bids`` and ``asks``; ``ValueError`` if bad."""
        self.bid_levels, self.bid_texts = _read_levels(self.bids)
        self.ask_levels, self.ask_texts = _read_levels(self.asks)


class _CheckedBook(_Book, gc=False):
    """A ``book`` item decoded by msgspec's own types and checked level by level."""

    bids: list[_Level] = []  # type: ignore[assignment]
    asks: list[_Level] = []  # type: ignore[assignment]

    def _read_sides(self) -> None:
        book_bids = [(lv.price, lv.qty) for lv in self.bids]
        book_asks = [(lv.price, lv.qty) for lv in self.asks]
        if not (levels_valid(book_bids) and levels_valid(book_asks)):
            raise ValueError("a level has a non-finite price or a non-finite or negative qty")
        check_levels_magnitude(book_bids)
        check_levels_magnitude(book_asks)
        self.bid_levels = book_bids
        self.bid_texts = [(format(p, "f"), format(q, "f")) for p, q in book_bids]
        self.ask_levels = book_asks
        self.ask_texts = [(format(p, "f"), format(q, "f")) for p, q in book_asks]


# Book levels, read from the JSON text of a side's list, which msgspec has checked is valid
# JSON when it kept it as Raw. Kraken writes every level as ``{"price":<number>,"qty":<number>}``
# in that order, without spaces. If the text holds n matches of _LEVEL, exactly n ``{``, one
# ``[`` and 2n - 1 commas, it is a list of those n levels and nothing else (spaces aside): the
# matches hold all the ``{`` (so no other object, nor a ``{`` in a string) and the ``[`` is
# the list's own (so no other array, and the value is a list), so the levels are elements of
# the list; they hold n of the commas, and the n - 1 others can only separate n elements.
_LEVEL: Final = re.compile(rb'\{"price":([-+.0-9Ee]+),"qty":([-+.0-9Ee]+)\}')
_decimal_decoder = msgspec.json.Decoder(Decimal)

# The numbers of levels by their JSON text, as Decimals and as plain texts: bounded caches like
# relay.book's (emptied in place at CACHE_LIMIT entries, a value's two together). Book
# numbers repeat constantly (prices near the top, round sizes), and a dict lookup saves
# building the Decimal, hashing it afresh (~0.7 us) in the book's dict operations and
# writing its plain text. Only numbers that passed the checks of _CheckedBook are cached,
# each as msgspec decodes it, so a hit needs no further check.
_prices: dict[bytes, Decimal] = {}
_price_texts: dict[bytes, str] = {}
_sizes: dict[bytes, Decimal] = {}
_size_texts: dict[bytes, str] = {}


def _read_levels(raw: msgspec.Raw) -> tuple[list[BookLevel], list[Level]]:
    """The levels of a side and their plain texts, from its JSON text; ``ValueError`` unless
    the text is a list of levels in Kraken's layout and each number passes
    :class:`_CheckedBook`'s checks."""
    text = bytes(raw)
    if text == b"[]":
        return [], []
    pairs: list[tuple[bytes, bytes]] = _LEVEL.findall(text)
    n = len(pairs)
    if not n:
        raise ValueError("not a list of levels in Kraken's layout")
    if text.count(b"{") != n or text.count(b"[") != 1 or text.count(b",") != 2 * n - 1:
        raise ValueError("not a list of levels in Kraken's layout")
    # Comprehensions of subscripts while every text is cached; a KeyError leaves it for the
    # loop that fills the caches.
    try:
        levels = [(_prices[price], _sizes[qty]) for price, qty in pairs]
    except KeyError:
        return _read_missed(pairs)
    return levels, [(_price_texts[price], _size_texts[qty]) for price, qty in pairs]


def _read_missed(pairs: list[tuple[bytes, bytes]]) -> tuple[list[BookLevel], list[Level]]:
    """:func:`_read_levels` once a number is missing from the caches (each looked up or
    checked and cached; a cache may be emptied on the way, so nothing is looked up twice)."""
    levels: list[BookLevel] = []
    texts: list[Level] = []
    for price, qty in pairs:
        if price in _prices:
            p, p_text = _prices[price], _price_texts[price]
        else:
            p, p_text = _new_number(price, _prices, _price_texts, size=False)
        if qty in _sizes:
            q, q_text = _sizes[qty], _size_texts[qty]
        else:
            q, q_text = _new_number(qty, _sizes, _size_texts, size=True)
        levels.append((p, q))
        texts.append((p_text, q_text))
    return levels, texts


def _new_number(
    text: bytes, values: dict[bytes, Decimal], texts: dict[bytes, str], *, size: bool
) -> tuple[Decimal, str]:
    """The number of a level's JSON ``text`` and its plain text, cached in ``values`` and
    ``texts`` once checked as :class:`_CheckedBook` checks it; ``ValueError`` if it fails."""
    value = _decimal_decoder.decode(text)
    if (
        not value.is_finite()
        or not -MAX_MAGNITUDE <= value.adjusted() <= MAX_MAGNITUDE
        or (size and value.is_signed() and value)  # -0 is signed but zero, hence ``and``
    ):
        raise ValueError("a level number _CheckedBook refuses")
    if len(values) >= CACHE_LIMIT:
        values.clear()
        texts.clear()
    number = (value, format(value, "f"))
    values[text], texts[text] = number
    return number


class _BookFrame(msgspec.Struct, gc=False):
    """A ``book`` frame decoded in one pass: the fields of :class:`_Envelope`, of the same
    types, with ``data`` read as :class:`_Book` items (see :meth:`KrakenCodec._receive`)."""

    channel: str | None = None
    type: str | None = None
    data: list[_Book] | msgspec.UnsetType = msgspec.UNSET
    method: str | None = None
    success: bool | None = None
    error: str | None = None
    symbol: str | None = None
    req_id: int | None = None


class _Trade(msgspec.Struct, gc=False):
    symbol: str
    side: Literal["buy", "sell"]
    price: Decimal
    qty: Decimal
    trade_id: Int64
    timestamp: str
    ts_ns: int = msgspec.field(default=0, name="__ts")

    def __post_init__(self) -> None:
        check_non_negative(self.price, self.qty)
        self.ts_ns = rfc3339_fraction_ns(self.timestamp)


class _Ticker(msgspec.Struct, gc=False):
    symbol: str
    bid: Decimal | None = None
    bid_qty: Decimal | None = None
    ask: Decimal | None = None
    ask_qty: Decimal | None = None
    last: Decimal | None = None
    timestamp: str | None = None
    ts_ns: int | None = msgspec.field(default=None, name="__ts")

    def __post_init__(self) -> None:
        check_non_negative(self.bid, self.bid_qty, self.ask, self.ask_qty, self.last)
        if self.timestamp is not None:
            self.ts_ns = rfc3339_fraction_ns(self.timestamp)


class _Pair(msgspec.Struct, gc=False):
    symbol: str
    price_precision: int
    qty_precision: int

    def __post_init__(self) -> None:
        if not (0 <= self.price_precision <= 30 and 0 <= self.qty_precision <= 30):
            raise ValueError(f"{self.symbol}: implausible precision")


class _Instruments(msgspec.Struct, gc=False):
    pairs: list[_Pair] = []


class _SystemStatus(msgspec.Struct, gc=False):
    system: str | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_book_frame_decoder = msgspec.json.Decoder(_BookFrame)
_book_decoder = msgspec.json.Decoder(list[_Book])
_checked_book_decoder = msgspec.json.Decoder(list[_CheckedBook])
_trade_decoder = msgspec.json.Decoder(list[_Trade])
_ticker_decoder = msgspec.json.Decoder(list[_Ticker])
_instrument_decoder = msgspec.json.Decoder(_Instruments)
_status_decoder = msgspec.json.Decoder(list[_SystemStatus])
_request_encoder = msgspec.json.Encoder()


# ---------------------------------------------------------------------------------------------
# Checksum


def _checksum_part(value: Decimal, spec: str) -> str:
    return format(value, spec).replace(".", "").lstrip("0")


def book_checksum(book: OrderBook[BookLevel], price_precision: int, qty_precision: int) -> int:
    """Kraken v2's CRC32 (unsigned) of the best :data:`CHECKSUM_DEPTH` levels (kraken.md §5).

    For the asks, best (lowest) first, then the bids, best (highest) first: each price and
    qty written with exactly the pair's precision in decimals, the ``.`` removed and the
    leading zeros stripped, all concatenated.
    """
    return _checksum(book, f".{price_precision}f", f".{qty_precision}f", {})


_Memo = dict[int, tuple[BookLevel, Level, str | None]]
"""A pair's memo of its book's levels by id (see :class:`_Symbol`): each level itself, its
plain texts ``(price, qty)`` and its checksum text, ``None`` until the checksum needs it."""

MEMO_LIMIT: Final = 8
"""A pair's level memo starts over empty beyond this many times the subscribed depth."""

PARTS_LIMIT: Final = 1 << 12
"""Numbers each checksum text cache of :data:`_parts` holds before it starts over empty."""
SPECS_LIMIT: Final = 64
"""Precisions :data:`_parts` holds caches for before it starts over empty."""

# The checksum text of a number by the precision's format spec, then by the number's plain
# text (which is the value, sign and all, so it names the checksum text): bounded caches
# like relay.book's. The same prices and sizes recur across levels and messages, and a
# lookup is several times cheaper than writing a Decimal out with a precision.
_parts: dict[str, dict[str, str]] = {}


def _checksum(book: OrderBook[BookLevel], price_spec: str, qty_spec: str, memo: _Memo) -> int:
    """:func:`book_checksum` with the precisions as format specs (``".1f"``), kept per pair,
    and the texts of its levels in ``memo`` (see :func:`_side_text`)."""
    asks = _side_text(book.asks.top(CHECKSUM_DEPTH), price_spec, qty_spec, memo)
    bids = _side_text(book.bids.top(CHECKSUM_DEPTH), price_spec, qty_spec, memo)
    return zlib.crc32((asks + bids).encode())


def _side_text(levels: list[BookLevel], price_spec: str, qty_spec: str, memo: _Memo) -> str:
    """The checksum text of one side's best levels ``levels``, best first.

    ``memo`` gives the checksum text of each level the codec has seen the text of, whether
    it came in this message (see :meth:`KrakenCodec._remember`) or earlier: the book keeps
    a level's tuple until that price changes, so most of the top levels are the same
    objects as at the last message. A level the memo lacks, or lacks the checksum text of,
    gets it from the caches of :data:`_parts` (written out from its Decimals on a miss).
    """
    try:
        # An id in the memo is its entry's level, which the entry keeps alive: a live level
        # of the book with that id is that very object.
        return "".join([memo[id(level)][2] for level in levels])  # type: ignore[misc]
    except (KeyError, TypeError):  # a level missing, or its checksum text None
        return "".join([_level_part(level, price_spec, qty_spec, memo) for level in levels])


def _level_part(level: BookLevel, price_spec: str, qty_spec: str, memo: _Memo) -> str:
    """The checksum text of a book level, stored in ``memo`` with the level's plain texts."""
    entry = memo.get(id(level))
    if entry is not None:
        part = entry[2]
        if part is not None:
            return part
        texts = entry[1]
    else:
        texts = (format(level[0], "f"), format(level[1], "f"))
    part = _part(_spec_parts(price_spec), texts[0], level[0], price_spec) + _part(
        _spec_parts(qty_spec), texts[1], level[1], qty_spec
    )
    memo[id(level)] = (level, texts, part)
    return part


def _spec_parts(spec: str) -> dict[str, str]:
    """The checksum text cache of :data:`_parts` for ``spec``."""
    cache = _parts.get(spec)
    if cache is None:
        if len(_parts) >= SPECS_LIMIT:
            _parts.clear()
        cache = _parts[spec] = {}
    return cache


def _part(cache: dict[str, str], text: str, value: Decimal, spec: str) -> str:
    """The checksum text of ``value`` (whose plain text is ``text``), from ``cache`` of
    :data:`_parts` for ``spec``."""
    part = cache.get(text)
    if part is None:
        part = _checksum_part(value, spec)
        if len(cache) >= PARTS_LIMIT:
            cache.clear()
        cache[text] = part
    return part


# ---------------------------------------------------------------------------------------------
# Per-symbol state


class _Symbol:
    __slots__ = (
        "book",
        "book_subscribed",
        "book_wanted",
        "contract_size",
        "last_sequence",
        "memo",
        "native",
        "parts",
        "precision",
        "side_texts",
        "symbol",
        "synced",
        "ticker",
        "trade",
    )

    def __init__(self, sub: Subscription) -> None:
        self.native = sub.native_symbol
        self.symbol = sub.symbol
        self.trade = DataType.TRADE in sub.data_types
        self.ticker = DataType.TICKER in sub.data_types
        self.book_wanted = DataType.L2_ORDERBOOK in sub.data_types
        self.contract_size = sub.contract_size
        self.book = OrderBook()
        self.synced = False
        """A snapshot was published on this connection since the last resync."""
        self.book_subscribed = False
        """The ``book`` subscription of the pair was sent on this connection."""
        self.precision: tuple[str, str] | None = None
        """Format specs (``".1f"``, ``".8f"``) from the instrument channel, once known."""
        self.parts: tuple[dict[str, str], dict[str, str]] | None = None
        """The caches of :data:`_parts` for ``precision`` (prices, qtys), once known."""
        self.memo: _Memo = {}
        """The book's levels by id, with their texts: the plain texts of every level decoded
        are stored as it is put in the book, for publishing, and its checksum text once
        :func:`_checksum` has needed it (for ``precision``). Holding the level keeps its id
        from being reused while it is in the memo."""
        self.side_texts: list[str | None] = [None, None]
        """The checksum texts (:func:`_side_text`) of the book's asks and bids, for
        ``precision``, kept while that side is unchanged; ``None`` when not known."""
        self.last_sequence = 0
        """The ``sequence`` of the last published book event (kept across reconnects)."""

    def drop_book(self) -> None:
        """Empty the book (its checksum texts with it)."""
        self.book.clear()
        self.side_texts = [None, None]

    def next_sequence(self, ts_ns: int) -> int:
        seq = max(ts_ns, self.last_sequence + 1)
        self.last_sequence = seq
        return seq


# ---------------------------------------------------------------------------------------------
# The codec


class KrakenCodec(Codec):
    """The protocol state of one Kraken spot v2 connection.

    **Subscribing.** :meth:`connected` queues the ``trade`` and ``ticker`` subscriptions and,
    when any book is wanted, one for the ``instrument`` channel. The ``book`` subscription
    is sent only once the instrument snapshot has given every pair's price and qty
    precision, so that every book message can be checked. A wanted pair missing from the
    instrument snapshot is reported as ``unknown_symbol`` and its book is not subscribed.

    **Books** (kraken.md §5). There is no sequence number; the CRC32 ``checksum`` carried by
    snapshots and updates is the only integrity signal.

    1. A ``snapshot`` replaces the pair's book (Kraken may send a new one at any time, e.g.
       after a resubscribe) and is published as a :class:`~relay.events.BookSnapshot`,
       followed by a ``book_synced`` status.
    2. An ``update`` sets each level's absolute qty (0 deletes), then each side is truncated
       to the subscribed depth: Kraken sends no delete for a level pushed out of range. The
       published :class:`~relay.events.BookDelta` carries the venue's levels followed by an
       explicit size-``0`` delete for every level truncated away, so a consumer applying
       the deltas holds exactly the codec's book.
    3. After every snapshot or update the checksum of the top 10 levels is compared with the
       message's ``checksum`` (when it has one: thin snapshots were seen without). On a
       mismatch, or a crossed book: ``checksum_mismatch`` (or the crossing prices) and
       ``book_resync`` statuses, the message is not published, the pair's book is dropped
       and the pair alone is resubscribed (``unsubscribe`` echoing the depth, then
       ``subscribe``). Updates arriving before the new snapshot are dropped
       (``counters.stale_deltas_dropped``).
    4. :meth:`resync` (downstream lost a delta) resyncs a pair the same way.

    If book data arrives for a pair whose precision is unknown (a replayed recording that
    has no instrument frame), the book is kept and published unchecked, and its
    ``book_synced`` status says so.

    **Other frames.** Failed requests (``success: false``) become ``venue_error`` statuses
    (``unknown_symbol`` for "not supported" pairs). A ``status`` frame whose ``system`` is
    not ``online`` (``maintenance``, ``cancel_only``, ``post_only``) becomes a
    ``venue_error`` status; it is not a connection shutdown notice, so no reconnect is
    asked for. Undecodable frames become ``parse_error`` statuses.
    """

    max_send_rate = 5.0  # Kraken documents no WS request rate for public data ⚠; conservative
    ping_interval = PING_INTERVAL  # Kraken documents no idle timeout ⚠; an app ping is cheap
    max_lifetime = None
    # Venue data failing a check outside msgspec raises a plain ValueError: a bad frame too.
    bad_frame_errors = (ValueError,)

    def __init__(
        self,
        venue: str,
        subscriptions: Sequence[Subscription],
        endpoints: Endpoints,
        *,
        depth: int = BOOK_DEPTH,
    ) -> None:
        """One connection for ``subscriptions`` (distinct native symbols)."""
        super().__init__()
        if depth not in BOOK_DEPTHS:
            raise ValueError(f"{venue}: Kraken book depth must be one of {sorted(BOOK_DEPTHS)}")
        self.venue = venue
        self.url = endpoints.ws_url
        self.depth = depth
        self._symbols: dict[str, _Symbol] = {}
        for sub in subscriptions:
            if sub.native_symbol in self._symbols:
                raise ValueError(f"{venue}: {sub.native_symbol} subscribed twice")
            self._symbols[sub.native_symbol] = _Symbol(sub)
        self._req_id = 0
        self._books_subscribed = False

    # -- connection ---------------------------------------------------------------------------

    def keepalive(self) -> str | None:
        return _PING

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Reset every book and queue the subscriptions (the book's waits for instruments)."""
        self._req_id = 0
        self._books_subscribed = False
        for state in self._symbols.values():
            state.drop_book()
            state.synced = False
            state.book_subscribed = False
        states = list(self._symbols.values())
        if any(s.book_wanted for s in states):
            self._request("subscribe", {"channel": "instrument", "snapshot": True})
        trades = [s.native for s in states if s.trade]
        tickers = [s.native for s in states if s.ticker]
        self._subscribe(trades, {"channel": "trade", "snapshot": True})
        self._subscribe(tickers, {"channel": "ticker", "event_trigger": "bbo", "snapshot": True})
        return []

    def _request(self, method: str, params: dict[str, object]) -> None:
        self._req_id += 1
        frame = {"method": method, "params": params, "req_id": self._req_id}
        self._actions.append(SendFrame(_request_encoder.encode(frame).decode()))

    def _subscribe(self, natives: list[str], params: dict[str, object]) -> None:
        for chunk in chunks(natives, MAX_SYMBOLS_PER_SUBSCRIBE):
            self._request("subscribe", {**params, "symbol": chunk})

    def _book_params(self) -> dict[str, object]:
        return {"channel": "book", "depth": self.depth, "snapshot": True}

    # -- resync on request ----------------------------------------------------------------------

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Drop the book of canonical ``symbol`` and get a fresh snapshot (kraken.md §5).

        Kraken sends a ``snapshot`` on every ``book`` subscribe, so the pair alone is
        unsubscribed (echoing the depth) and subscribed again, as after a checksum
        mismatch; updates before the new snapshot are dropped. A book still waiting for its
        snapshot (its subscription waits for the instrument snapshot, or a resubscription
        is under way) gets the status but no second request. A pair without a book on this
        connection (not wanted, or left out as missing from the instrument snapshot) is
        ignored.
        """
        books = (s for s in self._symbols.values() if self._has_book(s))
        return self._resync_books(
            books, symbol, reason, recv_ns, lambda s, d, out: self._resync(s, d, recv_ns, out)
        )

    @property
    def synced(self) -> bool:
        """Every book of the connection has been built from a snapshot since connect and no
        resync is under way; pairs whose book was not subscribed (unknown) do not count."""
        return all(s.synced for s in self._symbols.values() if self._has_book(s))

    def _has_book(self, state: _Symbol) -> bool:
        """Whether the pair has a book on this connection: wanted and, once the instrument
        snapshot has released the book subscriptions, subscribed."""
        return state.book_wanted and (state.book_subscribed or not self._books_subscribed)

    # -- frames -------------------------------------------------------------------------------

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        # Book frames, most of the traffic, in one decoding instead of the envelope's and then
        # the data's. This only takes a frame the envelope's path would hand to _on_book
        # with data that _Book reads (the same fields of the same types, and the same items);
        # anything else, a failure included, takes the envelope's path, which decides.
        if type(data) is str and data.startswith(_BOOK_FRAME):
            try:
                frame = _book_frame_decoder.decode(data)
            except Exception:
                frame = None
            if (
                frame is not None
                and frame.channel == "book"
                and frame.type in ("snapshot", "update")
                and frame.data is not msgspec.UNSET
            ):
                return self._book_items(frame.type, frame.data, recv_ns)
        env = _envelope_decoder.decode(data)
        channel = env.channel
        if channel is not None:
            if channel == "heartbeat":
                return []
            payload = env.data
            if payload is msgspec.UNSET:
                return [self._parse_error(f"{channel}: no data", recv_ns)]
            if channel == "book":
                return self._on_book(env.type, payload, recv_ns)
            if channel == "trade":
                return self._on_trade(payload, recv_ns)
            if channel == "ticker":
                return self._on_ticker(payload, recv_ns)
            if channel == "instrument":
                return self._on_instrument(env.type, payload, recv_ns)
            if channel == "status":
                return self._on_status(payload, recv_ns)
            return []  # ohlc and other channels we did not ask for (a shared replay)
        method = env.method
        if method is not None:
            if env.success is False or method == "error":
                return [self._request_failed(env, recv_ns)]
            return []  # subscribe/unsubscribe acks, pong
        return [self._parse_error("unrecognized frame", recv_ns)]

    def _request_failed(self, env: _Envelope, recv_ns: int) -> VenueStatus:
        detail = f"{env.method} failed: {env.error} (request id {env.req_id})"
        state = self._symbols.get(env.symbol) if env.symbol else None
        kind = "unknown_symbol" if env.error and "not supported" in env.error else "venue_error"
        if state is None:
            return self._status(kind, detail, recv_ns)
        return self._symbol_status(state, kind, detail, recv_ns)

    def _on_status(self, payload: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for item in _status_decoder.decode(payload):
            if item.system is not None and item.system != "online":
                out.append(self._status("venue_error", f"system status: {item.system}", recv_ns))
        return out

    # -- instruments --------------------------------------------------------------------------

    def _on_instrument(
        self, kind: str | None, payload: msgspec.Raw, recv_ns: int
    ) -> list[MarketEvent]:
        pairs = _instrument_decoder.decode(payload).pairs
        for pair in pairs:
            state = self._symbols.get(pair.symbol)
            if state is not None:
                state.precision = price_spec, qty_spec = (
                    f".{pair.price_precision}f",
                    f".{pair.qty_precision}f",
                )
                state.parts = (_spec_parts(price_spec), _spec_parts(qty_spec))
                state.memo = {}
                state.side_texts = [None, None]
        if kind != "snapshot" or self._books_subscribed:
            return []
        self._books_subscribed = True
        out: list[MarketEvent] = []
        ready = []
        for state in self._symbols.values():
            if not state.book_wanted:
                continue
            if state.precision is None:
                detail = "not in the instrument snapshot; book not subscribed"
                out.append(self._symbol_status(state, "unknown_symbol", detail, recv_ns))
            else:
                state.book_subscribed = True
                ready.append(state.native)
        self._subscribe(ready, self._book_params())
        return out

    # -- trades and tickers -------------------------------------------------------------------

    def _on_trade(self, payload: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for t in _trade_decoder.decode(payload):
            state = self._symbols.get(t.symbol)
            if state is None or not state.trade:
                continue
            out.append(
                Trade(
                    venue=self.venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=t.ts_ns,
                    ts_recv=recv_ns,
                    trade_id=str(t.trade_id),
                    price=format(t.price, "f"),
                    size=decimal_text(t.qty, state.contract_size),
                    side=t.side,
                )
            )
        return out

    def _on_ticker(self, payload: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for q in _ticker_decoder.decode(payload):
            state = self._symbols.get(q.symbol)
            if state is None or not state.ticker:
                continue
            out.append(
                Ticker(
                    venue=self.venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=q.ts_ns,
                    ts_recv=recv_ns,
                    bid_price=decimal_text(q.bid),
                    bid_size=decimal_text(q.bid_qty, state.contract_size),
                    ask_price=decimal_text(q.ask),
                    ask_size=decimal_text(q.ask_qty, state.contract_size),
                    last_price=decimal_text(q.last),
                )
            )
        return out

    # -- order book ---------------------------------------------------------------------------

    def _on_book(self, kind: str | None, payload: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        if kind not in ("snapshot", "update"):
            return [self._parse_error(f"book: unknown type {kind!r}", recv_ns)]
        items: Sequence[_Book]
        try:
            items = _book_decoder.decode(payload)
        except (msgspec.ValidationError, ArithmeticError):
            # Something _Book does not read fast, or a bad item: the reference decodes it
            # (and raises the error the frame is reported with).
            items = _checked_book_decoder.decode(payload)
        return self._book_items(kind, items, recv_ns)

    def _book_items(self, kind: str, items: Sequence[_Book], recv_ns: int) -> list[MarketEvent]:
        """The events of a book frame's decoded items; ``kind`` is its ``type``."""
        out: list[MarketEvent] = []
        for item in items:
            state = self._symbols.get(item.symbol)
            if state is None or not state.book_wanted:
                continue
            if kind == "snapshot":
                self._snapshot(state, item, recv_ns, out)
            elif state.synced:
                self._update(state, item, recv_ns, out)
            else:
                self.counters.stale_deltas_dropped += 1  # before its snapshot: unusable
        return out

    def _snapshot(self, state: _Symbol, item: _Book, recv_ns: int, out: list[MarketEvent]) -> None:
        book = state.book
        bid_levels, bids = item.bid_levels, item.bid_texts
        ask_levels, asks = item.ask_levels, item.ask_texts
        bid_parts = self._remember(state, bid_levels, bids)
        ask_parts = self._remember(state, ask_levels, asks)
        book.apply_snapshot(bid_levels, ask_levels)
        self._truncate(book)
        # Kraken sends each side sorted, best first, and at most the depth: then the book
        # holds the message's levels in the message's order (the same objects; equal lists
        # of them, a C loop, mean none was dropped), and its texts are the message's.
        sorted_bids = book.sorted_bids()
        sorted_asks = book.sorted_asks()
        bids_as_sent = sorted_bids == bid_levels
        asks_as_sent = sorted_asks == ask_levels
        known = state.parts is not None
        state.side_texts = [
            "".join(ask_parts) if known and asks_as_sent else None,
            "".join(bid_parts) if known and bids_as_sent else None,
        ]
        if not self._check(state, item, recv_ns, out):
            return
        cs = state.contract_size
        if cs is not None or not bids_as_sent:
            bids = _published(state.memo, sorted_bids, cs)
        if cs is not None or not asks_as_sent:
            asks = _published(state.memo, sorted_asks, cs)
        sequence = state.next_sequence(item.ts_ns)
        out.append(
            BookSnapshot(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=item.ts_ns,
                ts_recv=recv_ns,
                sequence=sequence,
                bids=bids,
                asks=asks,
            )
        )
        state.synced = True
        if state.precision is None:
            detail = "snapshot applied; checksum NOT verified (instrument precision unknown)"
        elif item.checksum is None:
            detail = "snapshot applied (it carried no checksum)"
        else:
            detail = f"snapshot applied, checksum {item.checksum} verified"
        out.append(self._symbol_status(state, "book_synced", detail, recv_ns))

    def _update(self, state: _Symbol, item: _Book, recv_ns: int, out: list[MarketEvent]) -> None:
        book = state.book
        bid_levels, bids = item.bid_levels, item.bid_texts
        ask_levels, asks = item.ask_levels, item.ask_texts
        self._remember(state, bid_levels, bids)
        self._remember(state, ask_levels, asks)
        book.apply_delta(bid_levels, ask_levels)
        if ask_levels:
            state.side_texts[0] = None
        if bid_levels:
            state.side_texts[1] = None
        cut_bids, cut_asks = self._truncate(book)
        if not self._check(state, item, recv_ns, out):
            return
        cs = state.contract_size
        if cs is not None:
            bids = _published(state.memo, bid_levels, cs)
            asks = _published(state.memo, ask_levels, cs)
        if cut_bids:
            bids += [(_texts(state.memo, level)[0], "0") for level in cut_bids]
        if cut_asks:
            asks += [(_texts(state.memo, level)[0], "0") for level in cut_asks]
        prev = state.last_sequence
        sequence = state.next_sequence(item.ts_ns)
        out.append(
            BookDelta(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=item.ts_ns,
                ts_recv=recv_ns,
                first_sequence=sequence,
                sequence=sequence,
                prev_sequence=prev,
                bids=bids,
                asks=asks,
            )
        )

    def _remember(self, state: _Symbol, levels: list[BookLevel], texts: list[Level]) -> list[str]:
        """Store a message's ``levels`` in the pair's memo with their plain ``texts`` and,
        once the precision is known, the checksum texts of the first :data:`CHECKSUM_DEPTH`
        (the best ones of a snapshot; all of most updates), so that :func:`_side_text` finds
        them; return those checksum texts.

        The memo is emptied first when it has grown past :data:`MEMO_LIMIT` times the depth.
        """
        if not levels:
            return []
        memo = state.memo
        if len(memo) > MEMO_LIMIT * self.depth:
            memo.clear()
        parts: list[str] = []
        if state.parts is not None and state.precision is not None:
            price_parts, qty_parts = state.parts
            best = texts[:CHECKSUM_DEPTH]
            try:
                parts = [price_parts[price] + qty_parts[qty] for price, qty in best]
            except KeyError:
                price_spec, qty_spec = state.precision
                parts = [
                    _part(price_parts, price, level[0], price_spec)
                    + _part(qty_parts, qty, level[1], qty_spec)
                    for (price, qty), level in zip(best, levels, strict=False)
                ]
        for level, text, part in zip(levels, texts, parts, strict=False):  # the first ones
            memo[id(level)] = (level, text, part)
        if len(parts) < len(levels):
            for level, text in zip(levels[len(parts) :], texts[len(parts) :], strict=True):
                memo[id(level)] = (level, text, None)
        return parts

    def _truncate(self, book: OrderBook) -> tuple[list[BookLevel], list[BookLevel]]:
        """Drop the levels beyond the subscribed depth; returns them (bids, asks)."""
        depth = self.depth
        return _cut(book.bids, depth), _cut(book.asks, depth)

    def _check(self, state: _Symbol, item: _Book, recv_ns: int, out: list[MarketEvent]) -> bool:
        """Verify the book after ``item``; on failure report, resync and return False."""
        book = state.book
        if state.precision is not None and item.checksum is not None:
            price_spec, qty_spec = state.precision
            texts = state.side_texts
            asks = texts[0]
            if asks is None:
                top = book.asks.top(CHECKSUM_DEPTH)
                asks = texts[0] = _side_text(top, price_spec, qty_spec, state.memo)
            bids = texts[1]
            if bids is None:
                top = book.bids.top(CHECKSUM_DEPTH)
                bids = texts[1] = _side_text(top, price_spec, qty_spec, state.memo)
            got = zlib.crc32((asks + bids).encode())
            if got != item.checksum:
                detail = f"checksum {item.checksum} sent, {got} computed at {item.timestamp}"
                out.append(self._checksum_mismatch(state, detail, recv_ns))
                self._resync(state, f"checksum mismatch at {item.timestamp}", recv_ns, out)
                return False
        if crossing := book.crossing():
            self._resync(state, f"book crossed at {item.timestamp}: {crossing}", recv_ns, out)
            return False
        return True

    def _resync(self, state: _Symbol, reason: str, recv_ns: int, out: list[MarketEvent]) -> None:
        """Drop the pair's book and resubscribe its book alone for a fresh snapshot."""
        out.append(self._book_resync(state, f"{reason}; resubscribing", recv_ns))
        state.drop_book()
        state.synced = False
        # Kraken requires an unsubscribe to echo the subscribed depth.
        self._request(
            "unsubscribe", {"channel": "book", "symbol": [state.native], "depth": self.depth}
        )
        self._request("subscribe", {**self._book_params(), "symbol": [state.native]})


def _cut(side: BookSide[BookLevel], depth: int) -> list[BookLevel]:
    """Drop the levels of ``side`` beyond ``depth``; returns them."""
    if len(side) <= depth:
        return []
    extra = side.levels()[depth:]
    side.update((price, Decimal(0)) for price, _ in extra)
    return extra


def _texts(memo: _Memo, level: BookLevel) -> Level:
    """The plain texts ``(price, qty)`` of a book level: from ``memo``, else written out."""
    entry = memo.get(id(level))
    if entry is not None:
        return entry[1]
    return (format(level[0], "f"), format(level[1], "f"))


def _published(memo: _Memo, levels: list[BookLevel], contract_size: Decimal | None) -> list[Level]:
    """Book levels as published: their plain texts, sizes times ``contract_size`` if any."""
    if contract_size is None:
        try:
            # As in _checksum: an id in the memo is that of the very level.
            return [memo[id(level)][1] for level in levels]
        except KeyError:
            return [_texts(memo, level) for level in levels]
    return [(_texts(memo, level)[0], decimal_text(level[1], contract_size)) for level in levels]


# ---------------------------------------------------------------------------------------------
# The adapter

_SUPPORTED: Final = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})


def make_codecs(
    venue: str,
    subscriptions: Sequence[Subscription],
    endpoints: Endpoints,
    *,
    credentials: Mapping[str, str] = {},  # public channels need none
) -> list[Codec]:
    """One :class:`KrakenCodec` per :data:`MAX_SYMBOLS_PER_CONNECTION` pairs.

    Subscriptions naming the same native pair are merged (Kraken pair names are
    case-sensitive, so they are compared exactly); pairs are packed in the order given.
    """

    def key(sub: Subscription) -> str:
        check_data_types(venue, "kraken spot", sub, _SUPPORTED)
        return sub.native_symbol

    merged = merge_subscriptions(venue, subscriptions, key)
    subs = [s for s in merged.values() if s.data_types]
    return [
        KrakenCodec(venue, chunk, endpoints) for chunk in chunks(subs, MAX_SYMBOLS_PER_CONNECTION)
    ]


# ---------------------------------------------------------------------------------------------
# Instrument list

V2_ASSET_CODES: Final = {"XBT": "BTC", "XDG": "DOGE"}
"""Asset codes of REST ``wsname`` (the v1 WebSocket names) that WebSocket v2 spells
differently (kraken.md §6: v2 uses ``BTC``, never ``XBT``). ⚠ Only these two are known to
differ; a pair with another renamed asset would be reported as unlisted."""


class _AssetPair(msgspec.Struct, gc=False):
    wsname: str | None = None
    status: str = "online"  # older answers carry no status
    tick_size: str | None = None
    pair_decimals: int | None = None
    lot_decimals: int | None = None


class _AssetPairsAnswer(msgspec.Struct, gc=False):
    error: list[str] = []
    result: dict[str, _AssetPair] | None = None  # absent from some error answers


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """``<rest_url>/0/public/AssetPairs``: every spot pair in one answer."""
    return [f"{endpoints.rest_url.rstrip('/')}/0/public/AssetPairs"]


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The pairs of an ``AssetPairs`` answer (see the module docstring)."""
    answer = decode("kraken", url, body, _AssetPairsAnswer)
    if answer.error:
        raise ValueError(f"kraken: {url} answered errors: {', '.join(answer.error)}")
    if answer.result is None:
        raise ValueError(f"kraken: unexpected instrument list from {url}: no result")
    out: list[Instrument] = []
    for name, pair in answer.result.items():
        if pair.wsname is None:
            continue  # not tradable on the WebSocket API
        base, slash, quote = pair.wsname.partition("/")
        if not (slash and base and quote):
            raise ValueError(f"kraken: {url}: {name} has wsname {pair.wsname!r}")
        base, quote = V2_ASSET_CODES.get(base, base), V2_ASSET_CODES.get(quote, quote)
        tick = pair.tick_size
        if tick is None and pair.pair_decimals is not None:
            tick = step_text(pair.pair_decimals)
        out.append(
            Instrument(
                native_symbol=f"{base}/{quote}",
                symbol=canonical(base, quote, "spot"),
                kind="spot",
                base=base,
                quote=quote,
                price_increment=tick,
                size_increment=None if pair.lot_decimals is None else step_text(pair.lot_decimals),
                contract_size=None,
                active=pair.status == "online",
            )
        )
    return out


INSTRUMENTS: Final = InstrumentSource(urls=instrument_urls, parse=parse_instruments)


ADAPTER = Adapter(
    name="kraken",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(ws_url="wss://ws.kraken.com/v2", rest_url="https://api.kraken.com"),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    instruments=INSTRUMENTS,
)
