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
from relay.book import Level as BookLevel
from relay.book import OrderBook, levels_valid
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


class _Book(msgspec.Struct, gc=False):
    symbol: str
    timestamp: str
    bids: list[_Level] = []
    asks: list[_Level] = []
    checksum: int | None = None
    # Filled after decoding (the names cannot occur in the JSON).
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__asks")
    ts_ns: int = msgspec.field(default=0, name="__ts")

    def __post_init__(self) -> None:
        self.book_bids = [(lv.price, lv.qty) for lv in self.bids]
        self.book_asks = [(lv.price, lv.qty) for lv in self.asks]
        if not (levels_valid(self.book_bids) and levels_valid(self.book_asks)):
            raise ValueError("a level has a non-finite price or a non-finite or negative qty")
        check_levels_magnitude(self.book_bids)
        check_levels_magnitude(self.book_asks)
        if self.checksum is not None and not 0 <= self.checksum <= 0xFFFF_FFFF:
            raise ValueError("checksum is not an unsigned 32-bit integer")
        self.ts_ns = rfc3339_fraction_ns(self.timestamp)


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
_book_decoder = msgspec.json.Decoder(list[_Book])
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


MEMO_LIMIT: Final = 8 * CHECKSUM_DEPTH
"""Levels a pair's checksum memo holds before it starts over empty."""


def _checksum(
    book: OrderBook[BookLevel],
    price_spec: str,
    qty_spec: str,
    memo: dict[int, tuple[BookLevel, str]],
) -> int:
    """:func:`book_checksum` with the precisions as format specs (``".1f"``), kept per pair.

    ``memo`` keeps the text of each level by the level's id, with the level itself: the book
    keeps a level's tuple until that price changes, so most of the top levels are the same
    objects as at the last message, and a lookup is several times cheaper than writing two
    Decimals out. Holding the level keeps its id from being reused while it is in the memo.
    """
    bids, asks = book.top(CHECKSUM_DEPTH)
    if len(memo) > MEMO_LIMIT:
        memo.clear()
    parts = []
    for level in (*asks, *bids):
        entry = memo.get(id(level))
        if entry is not None and entry[0] is level:
            parts.append(entry[1])
        else:
            part = _checksum_part(level[0], price_spec) + _checksum_part(level[1], qty_spec)
            memo[id(level)] = (level, part)
            parts.append(part)
    return zlib.crc32("".join(parts).encode())


# ---------------------------------------------------------------------------------------------
# Per-symbol state


class _Symbol:
    __slots__ = (
        "book",
        "book_subscribed",
        "book_wanted",
        "checksum_memo",
        "contract_size",
        "last_sequence",
        "native",
        "precision",
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
        self.checksum_memo: dict[int, tuple[BookLevel, str]] = {}
        """The checksum's texts of levels (see :func:`_checksum`), for ``precision``."""
        self.last_sequence = 0
        """The ``sequence`` of the last published book event (kept across reconnects)."""

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
            state.book.clear()
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
                state.precision = (f".{pair.price_precision}f", f".{pair.qty_precision}f")
                state.checksum_memo = {}
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
        out: list[MarketEvent] = []
        for item in _book_decoder.decode(payload):
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
        book.apply_snapshot(item.book_bids, item.book_asks)
        self._truncate(book)
        if not self._check(state, item, recv_ns, out):
            return
        cs = state.contract_size
        sequence = state.next_sequence(item.ts_ns)
        out.append(
            BookSnapshot(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=item.ts_ns,
                ts_recv=recv_ns,
                sequence=sequence,
                bids=[(format(p, "f"), decimal_text(q, cs)) for p, q in book.sorted_bids()],
                asks=[(format(p, "f"), decimal_text(q, cs)) for p, q in book.sorted_asks()],
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
        book.apply_delta(item.book_bids, item.book_asks)
        cut_bids, cut_asks = self._truncate(book)
        if not self._check(state, item, recv_ns, out):
            return
        cs = state.contract_size
        bids: list[Level] = [(format(p, "f"), decimal_text(q, cs)) for p, q in item.book_bids]
        asks: list[Level] = [(format(p, "f"), decimal_text(q, cs)) for p, q in item.book_asks]
        bids += [(format(p, "f"), "0") for p, _ in cut_bids]
        asks += [(format(p, "f"), "0") for p, _ in cut_asks]
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

    def _truncate(self, book: OrderBook) -> tuple[list[BookLevel], list[BookLevel]]:
        """Drop the levels beyond the subscribed depth; returns them (bids, asks)."""
        depth = self.depth
        cut: list[list[BookLevel]] = []
        for side in (book.bids, book.asks):
            if len(side) > depth:
                extra = side.levels()[depth:]
                side.update((price, Decimal(0)) for price, _ in extra)
                cut.append(extra)
            else:
                cut.append([])
        return cut[0], cut[1]

    def _check(self, state: _Symbol, item: _Book, recv_ns: int, out: list[MarketEvent]) -> bool:
        """Verify the book after ``item``; on failure report, resync and return False."""
        book = state.book
        if state.precision is not None and item.checksum is not None:
            got = _checksum(book, *state.precision, state.checksum_memo)
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
        state.book.clear()
        state.synced = False
        # Kraken requires an unsubscribe to echo the subscribed depth.
        self._request(
            "unsubscribe", {"channel": "book", "symbol": [state.native], "depth": self.depth}
        )
        self._request("subscribe", {**self._book_params(), "symbol": [state.native]})


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
