"""Coinbase Advanced Trade: the sans-IO codec for the public market-data WebSocket.

One :class:`CoinbaseCodec` serves one connection to ``wss://advanced-trade-ws.coinbase.com``
(no JWT needed for public channels). Every frame is an envelope
``{"channel", "client_id", "timestamp", "sequence_num", "events": [...]}``; each event has
``type`` ``snapshot`` or ``update``. On :meth:`~CoinbaseCodec.connected` the codec queues one
subscribe frame per channel (Coinbase takes one channel per message, many products each):

* ``heartbeats`` (no products): one message a second keeps the connection open; Coinbase
  closes idle connections after 60-90 s;
* ``level2`` (data arrives as channel ``l2_data``) → :class:`~relay.events.BookSnapshot`
  then :class:`~relay.events.BookDelta` events; ``new_quantity`` is the level's new absolute
  size (``"0"`` deletes), ``side`` is ``bid`` or ``offer``;
* ``market_trades`` → :class:`~relay.events.Trade`; the first event is a snapshot of recent
  trades (published too: after a reconnect it refills the gap, and trades already published
  carry the same ``trade_id`` message id, which JetStream stores once);
* ``ticker`` → :class:`~relay.events.Ticker` (best bid/ask with quantities and last price,
  sent on every trade).

**Trade side** ⚠ (coinbase.md §5.1): Advanced Trade documents ``side`` only as ``BUY`` /
``SELL``. The codec publishes it as the taker side, lower-cased, as documented for the
unified field and as ccxt reads it; the legacy Exchange feed's ``match.side`` was the maker
side, which is why this is marked unconfirmed. :data:`TRADE_SIDE` is the one place to flip.

**Gaps** ⚠ (coinbase.md §4, §6): ``sequence_num`` counts the messages of the connection
across all channels (the captures show ``market_trades`` 0, ``subscriptions`` 1,
``market_trades`` 2). A jump means messages of unknown channel and product were lost, so
every book on the connection is affected: each gets ``book_gap`` and ``book_resync``
statuses, is dropped, and ``level2`` is resubscribed (``unsubscribe`` + ``subscribe``) for a
fresh snapshot; ``market_trades`` is resubscribed too, since its snapshot refills lost
trades. Tickers need nothing: the next one supersedes.

**Sequence ids.** Book messages carry only the connection-level ``sequence_num``, which
restarts at 0 on every connection and so cannot identify an event (message ids built from it
would collide after a reconnect and JetStream would drop the new events as duplicates).
Each book's events are numbered by the envelope ``timestamp`` (RFC 3339, ns) instead:
``sequence = max(timestamp_ns, previous sequence + 1)``; ``first_sequence == sequence``
and ``prev_sequence`` is the ``sequence`` of the book event published before (the snapshot
for the first delta). The same frame replayed gets the same ids; a second connection gets
its own frames and timestamps, so two relays do not share book message ids.

**Sizes** are in base units on spot products. Where a :class:`~relay.codec.Subscription`
gives a ``contract_size`` (futures products), published sizes are multiplied by it.

``ADAPTER.make_codecs`` puts at most :data:`MAX_PRODUCTS_PER_CONNECTION` products on one
connection (Coinbase documents no cap; the figure is our choice).

**Instrument list** (``ADAPTER.instruments``): ``GET
<rest_url>/api/v3/brokerage/market/products`` (public, no JWT), once with
``product_type=SPOT`` and once with ``product_type=FUTURE``. Spot products are
``base_currency_id-quote_currency_id``; a future's base is
``future_product_details.contract_root_unit``, it is a perpetual when
``contract_expiry_type`` is ``PERPETUAL`` and otherwise named by the UTC date of
``contract_expiry``, and its ``contract_size`` (base units per contract, e.g. ``0.01`` BTC) is
the contract size. Tick ``price_increment`` (else ``quote_increment``), lot
``base_increment``; a product is active unless ``is_disabled``, ``trading_disabled`` or a
``status`` other than ``online`` (futures report an empty status) says otherwise. The
endpoint's ``limit``/``offset`` paging is not used: without ``limit`` it answers with every
product of the type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Final, Literal

import msgspec

from adapters._common import (
    Int64,
    check_data_types,
    chunks,
    merge_subscriptions,
    rfc3339_fraction_ns,
    scale_levels,
    scale_size,
    split_pair,
)
from relay.book import Level as BookLevel
from relay.book import OrderBook, parse_levels
from relay.codec import Adapter, Codec, Endpoints, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    Level,
    MarketEvent,
    Side,
    Ticker,
    Trade,
    check_non_negative,
)
from relay.instruments import (
    Instrument,
    InstrumentSource,
    Kind,
    canonical,
    decode,
    expiry_code,
    positive_decimal,
)
from relay.timestamps import rfc3339_ns

__all__ = [
    "ADAPTER",
    "INSTRUMENTS",
    "MAX_PRODUCTS_PER_CONNECTION",
    "MAX_PRODUCTS_PER_SUBSCRIBE",
    "TRADE_SIDE",
    "CoinbaseCodec",
    "canonical_symbol",
    "make_codecs",
    "parse_instruments",
]

MAX_PRODUCTS_PER_CONNECTION: Final = 100
"""Products per connection: our choice, Coinbase documents no limit (coinbase.md §1 ⚠)."""
MAX_PRODUCTS_PER_SUBSCRIBE: Final = 100
"""Products per subscribe frame, to keep request frames small."""
TRADE_SIDE: Final[dict[str, Side]] = {"BUY": "buy", "SELL": "sell"}
"""``market_trades.side`` → published taker side (⚠ unconfirmed; see the module docstring)."""

_L2_CHANNEL: Final = "level2"  # the subscription name; its data arrives as "l2_data"

# ---------------------------------------------------------------------------------------------
# Symbols


def canonical_symbol(native: str) -> str | None:
    """``BTC-USD`` → ``BTC-USD``: spot product ids are already ``BASE-QUOTE``.

    Returns ``None`` for anything else: futures ids such as ``BIT-26JUN26-CDE`` need the
    products endpoint's ``product_type`` and contract details, which :data:`INSTRUMENTS`
    brings at run time.
    """
    pair = split_pair(native, "-")
    if pair is None:
        return None
    base, quote = pair
    return f"{base.upper()}-{quote.upper()}"


# ---------------------------------------------------------------------------------------------
# Wire formats. Only the fields the codec uses are declared; msgspec skips the rest.


class _Envelope(msgspec.Struct, gc=False):
    channel: str | None = None
    timestamp: str | None = None
    sequence_num: Int64 | None = None
    events: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    type: str | None = None  # "error" frames
    message: str | None = None
    reason: str | None = None


class _L2Update(msgspec.Struct, gc=False):
    side: Literal["bid", "offer"]
    price_level: str
    new_quantity: str


class _L2Event(msgspec.Struct, gc=False):
    type: Literal["snapshot", "update"]
    product_id: str
    updates: list[_L2Update]
    # Filled after decoding (the names cannot occur in the JSON).
    bids: list[Level] = msgspec.field(default_factory=list, name="__bids")
    asks: list[Level] = msgspec.field(default_factory=list, name="__asks")
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__book_asks")

    def __post_init__(self) -> None:
        bids: list[Level] = []
        asks: list[Level] = []
        for u in self.updates:
            (bids if u.side == "bid" else asks).append((u.price_level, u.new_quantity))
        self.bids, self.asks = bids, asks
        self.book_bids = parse_levels(bids)
        self.book_asks = parse_levels(asks)


# Trades and tickers come in two kinds: the fast path (below) decodes the fields alone and
# calls check() on each before it uses any; the two-step way decodes the subclass, whose
# __post_init__ calls check(), so that the error of a bad frame names where it is. One
# check() for both keeps them reading the same frames alike.


class _TradeFields(msgspec.Struct, gc=False):
    trade_id: str
    product_id: str
    price: str
    size: str
    side: Literal["BUY", "SELL"]
    time: str
    ts_ns: int = msgspec.field(default=0, name="__ts")

    def check(self) -> None:
        """Check the numbers and read the time into ``ts_ns``; ``ValueError`` if bad."""
        check_non_negative(self.price)
        check_non_negative(self.size)
        self.ts_ns = rfc3339_fraction_ns(self.time)


class _Trade(_TradeFields, gc=False):
    def __post_init__(self) -> None:
        self.check()


class _TradesEventFields(msgspec.Struct, gc=False):
    trades: list[_TradeFields] = []


class _TradesEvent(msgspec.Struct, gc=False):
    trades: list[_Trade] = []


class _TickerFields(msgspec.Struct, gc=False):
    product_id: str
    price: str | None = None
    best_bid: str | None = None
    best_bid_quantity: str | None = None
    best_ask: str | None = None
    best_ask_quantity: str | None = None

    def check(self) -> None:
        """Check the numbers that are given; ``ValueError`` if one is bad."""
        # Unrolled: a loop over a tuple of the fields costs as much as the checks.
        if self.price is not None:
            check_non_negative(self.price)
        if self.best_bid is not None:
            check_non_negative(self.best_bid)
        if self.best_bid_quantity is not None:
            check_non_negative(self.best_bid_quantity)
        if self.best_ask is not None:
            check_non_negative(self.best_ask)
        if self.best_ask_quantity is not None:
            check_non_negative(self.best_ask_quantity)


class _Ticker(_TickerFields, gc=False):
    def __post_init__(self) -> None:
        self.check()


class _TickerEventFields(msgspec.Struct, gc=False):
    tickers: list[_TickerFields] = []


class _TickerEvent(msgspec.Struct, gc=False):
    tickers: list[_Ticker] = []


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_l2_decoder = msgspec.json.Decoder(list[_L2Event])
_trades_decoder = msgspec.json.Decoder(list[_TradesEvent])
_ticker_decoder = msgspec.json.Decoder(list[_TickerEvent])
_request_encoder = msgspec.json.Encoder()


# The fast path: a frame of a channel the codec subscribes to, decoded in one pass, events
# and all, where the envelope decoder above skips the events as Raw for a second decoder to
# read. Every field _Envelope checks is decoded here too, and the events into the same
# fields, so a frame this decodes (and whose trades and tickers pass check()) is one the
# two-step way reads alike; anything else (other channels, error frames, bad frames) goes
# the two-step way, which says what is wrong with it.
class _Frame(msgspec.Struct, gc=False, tag_field="channel"):
    timestamp: str | None = None
    sequence_num: Int64 | None = None
    type: str | None = None
    message: str | None = None
    reason: str | None = None


class _L2Frame(_Frame, gc=False, tag="l2_data"):
    events: list[_L2Event] | msgspec.UnsetType = msgspec.UNSET


class _TradesFrame(_Frame, gc=False, tag="market_trades"):
    events: list[_TradesEventFields] | msgspec.UnsetType = msgspec.UNSET


class _TickerFrame(_Frame, gc=False, tag="ticker"):
    events: list[_TickerEventFields] | msgspec.UnsetType = msgspec.UNSET


class _HeartbeatsFrame(_Frame, gc=False, tag="heartbeats"):
    events: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _SubscriptionsFrame(_Frame, gc=False, tag="subscriptions"):
    events: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_frame_decoder = msgspec.json.Decoder(
    _L2Frame | _TradesFrame | _TickerFrame | _HeartbeatsFrame | _SubscriptionsFrame
)
_trade_time = attrgetter("ts_ns")

# ---------------------------------------------------------------------------------------------
# Per-product state


class _Product:
    __slots__ = (
        "book",
        "book_wanted",
        "contract_size",
        "last_sequence",
        "native",
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
        self.last_sequence = 0
        """The ``sequence`` of the last published book event (kept across reconnects)."""

    def next_sequence(self, ts_ns: int) -> int:
        seq = max(ts_ns, self.last_sequence + 1)
        self.last_sequence = seq
        return seq


# ---------------------------------------------------------------------------------------------
# The codec


class CoinbaseCodec(Codec):
    """The protocol state of one Coinbase Advanced Trade market-data connection.

    **Books** (coinbase.md §6): the first ``l2_data`` event of type ``snapshot`` for a
    product sets its book and is published as a :class:`~relay.events.BookSnapshot` with a
    ``book_synced`` status; a later snapshot (after a resubscribe) replaces the book the same
    way. ``update`` events are applied in order and published as
    :class:`~relay.events.BookDelta`; updates for a product without a snapshot on this
    connection are dropped (``counters.stale_deltas_dropped``). There is no checksum; a
    book left crossed by an update is corrupt: the delta is not published and the product
    alone is resynced (``unsubscribe`` + ``subscribe`` of ``level2`` for that product).
    A ``sequence_num`` gap resyncs every book on the connection (module docstring);
    :meth:`resync` (downstream lost a delta) resyncs one product as for a crossed book.

    **Other frames.** ``subscriptions`` acks and ``heartbeats`` carry no market data (the
    heartbeats' ``sequence_num`` still feeds the gap check). ``{"type": "error"}`` frames
    become ``venue_error`` statuses. Channels not asked for (``candles``, ``status``) are
    ignored; undecodable frames become ``parse_error`` statuses.
    """

    max_send_rate = 4.0  # 8 unauthenticated messages/s per IP; leave room for other connections
    ping_interval = None  # no application ping: the heartbeats channel keeps the connection open
    max_lifetime = None  # no documented forced disconnect ⚠
    # The envelope's timestamp is parsed after decoding: its ValueError is a bad frame.
    bad_frame_errors = (ValueError,)

    def __init__(
        self, venue: str, subscriptions: Sequence[Subscription], endpoints: Endpoints
    ) -> None:
        """One connection for ``subscriptions`` (distinct product ids)."""
        super().__init__()
        self.venue = venue
        self.url = endpoints.ws_url
        self._products: dict[str, _Product] = {}
        for sub in subscriptions:
            if sub.native_symbol in self._products:
                raise ValueError(f"{venue}: {sub.native_symbol} subscribed twice")
            self._products[sub.native_symbol] = _Product(sub)
        states = list(self._products.values())
        self._book_ids = [p.native for p in states if p.book_wanted]
        self._trade_ids = [p.native for p in states if p.trade]
        self._ticker_ids = [p.native for p in states if p.ticker]
        self._next_sequence_num: int | None = None
        """The ``sequence_num`` expected next; ``None`` until the first message."""

    # -- connection ---------------------------------------------------------------------------

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Reset every book and the sequence check; queue the subscribe frames."""
        self._next_sequence_num = None
        for state in self._products.values():
            state.book.clear()
            state.synced = False
        if self._products:
            self._send({"type": "subscribe", "channel": "heartbeats"})
        self._channel("subscribe", _L2_CHANNEL, self._book_ids)
        self._channel("subscribe", "market_trades", self._trade_ids)
        self._channel("subscribe", "ticker", self._ticker_ids)
        return []

    def _send(self, frame: dict[str, object]) -> None:
        self._actions.append(SendFrame(_request_encoder.encode(frame).decode()))

    def _channel(self, kind: str, channel: str, product_ids: list[str]) -> None:
        for chunk in chunks(product_ids, MAX_PRODUCTS_PER_SUBSCRIBE):
            self._send({"type": kind, "product_ids": chunk, "channel": channel})

    def _resubscribe(self, channel: str, product_ids: list[str]) -> None:
        self._channel("unsubscribe", channel, product_ids)
        self._channel("subscribe", channel, product_ids)

    # -- resync on request ----------------------------------------------------------------------

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Drop the book of canonical ``symbol`` and get a fresh snapshot: **resubscribe**.

        ``sequence_num`` counts the whole connection, but the book itself needs no
        reconnect: the first ``l2_data`` event after subscribing ``level2`` is a full
        ``snapshot`` of the product (coinbase.md §5.3), so the product alone is
        unsubscribed and subscribed again, as for a crossed book, and the connection's
        sequence check goes on unchanged. Updates before the new snapshot are dropped. A
        book still waiting for its snapshot (after connecting or a resubscription) gets the
        status but no second request. A product without a book on this connection is
        ignored.
        """
        resync: list[str] = []

        def start(state: _Product, detail: str, out: list[MarketEvent]) -> None:
            out.append(self._book_resync(state, f"{detail}; resubscribing", recv_ns))
            state.book.clear()
            state.synced = False
            resync.append(state.native)

        books = (s for s in self._products.values() if s.book_wanted)
        out = self._resync_books(books, symbol, reason, recv_ns, start)
        self._resubscribe(_L2_CHANNEL, resync)
        return out

    @property
    def synced(self) -> bool:
        """Every wanted book has had its snapshot since connect, and no resync is pending."""
        return all(p.synced for p in self._products.values() if p.book_wanted)

    # -- frames -------------------------------------------------------------------------------

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        try:
            frame = _frame_decoder.decode(data)
        except Exception:
            # Decoding has no effect on the codec's state: the two-step way starts afresh.
            return self._receive_envelope(data, recv_ns)
        timestamp, sequence_num, events = frame.timestamp, frame.sequence_num, frame.events
        if timestamp is None or sequence_num is None or events is msgspec.UNSET:
            return self._receive_envelope(data, recv_ns)  # a bad frame or a bare ack
        kind = type(frame)
        try:
            if kind is _TradesFrame:
                for trades_event in events:
                    for trade in trades_event.trades:
                        trade.check()
            elif kind is _TickerFrame:
                for ticker_event in events:
                    for quote in ticker_event.tickers:
                        quote.check()
        except ValueError:
            return self._receive_envelope(data, recv_ns)
        # As _receive_envelope does, in its order: the time, the sequence check, the events.
        ts_ns = rfc3339_fraction_ns(timestamp)
        out: list[MarketEvent] = []
        self._check_sequence(sequence_num, recv_ns, out)
        if kind is _TradesFrame:
            self._on_trades(events, recv_ns, out)
        elif kind is _TickerFrame:
            self._on_ticker(events, ts_ns, recv_ns, out)
        elif kind is _L2Frame:
            self._on_l2(events, ts_ns, recv_ns, out)
        return out

    def _receive_envelope(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        """Any frame, read in two steps: the envelope, then the events of its channel."""
        env = _envelope_decoder.decode(data)
        channel = env.channel
        if channel is None:
            if env.type == "error":
                detail = f"error: {env.message or ''} {env.reason or ''}".strip()
                return [self._status("venue_error", detail, recv_ns)]
            return [self._parse_error("unrecognized frame", recv_ns)]
        if env.timestamp is None or env.sequence_num is None:
            return [self._parse_error(f"{channel}: no timestamp or sequence_num", recv_ns)]
        ts_ns = rfc3339_fraction_ns(env.timestamp)
        out: list[MarketEvent] = []
        self._check_sequence(env.sequence_num, recv_ns, out)
        if env.events is msgspec.UNSET:
            if channel in ("l2_data", "market_trades", "ticker"):
                out.append(self._parse_error(f"{channel}: no events", recv_ns))
            return out
        if channel == "l2_data":
            self._on_l2(_l2_decoder.decode(env.events), ts_ns, recv_ns, out)
        elif channel == "market_trades":
            self._on_trades(_trades_decoder.decode(env.events), recv_ns, out)
        elif channel == "ticker":
            self._on_ticker(_ticker_decoder.decode(env.events), ts_ns, recv_ns, out)
        # heartbeats, subscriptions and channels not asked for: nothing to publish
        return out

    def _check_sequence(self, sequence_num: int, recv_ns: int, out: list[MarketEvent]) -> None:
        expected = self._next_sequence_num
        if expected is None or sequence_num == expected:
            self._next_sequence_num = sequence_num + 1
            return
        if sequence_num < expected:
            return  # a repeat or reordering: nothing was lost, keep the expectation
        self._next_sequence_num = sequence_num + 1
        detail = f"sequence_num jumped from {expected - 1} to {sequence_num}"
        resync: list[str] = []
        for state in self._products.values():
            if not state.book_wanted:
                continue
            out.append(self._book_gap(state, detail, recv_ns))
            out.append(self._book_resync(state, f"{detail}; resubscribing", recv_ns))
            state.book.clear()
            state.synced = False
            resync.append(state.native)
        self._resubscribe(_L2_CHANNEL, resync)
        self._resubscribe("market_trades", self._trade_ids)

    # -- trades and tickers -------------------------------------------------------------------

    def _on_trades(
        self,
        events: list[_TradesEvent] | list[_TradesEventFields],
        recv_ns: int,
        out: list[MarketEvent],
    ) -> None:
        """Publish checked trades (``ts_ns`` read)."""
        products, venue = self._products, self.venue
        for event in events:
            # Snapshots list the newest trade first; publish in trade order.
            for t in sorted(event.trades, key=_trade_time):
                state = products.get(t.product_id)
                if state is None or not state.trade:
                    continue
                cs = state.contract_size
                out.append(
                    Trade(
                        venue=venue,
                        symbol=state.symbol,
                        native_symbol=state.native,
                        ts_venue=t.ts_ns,
                        ts_recv=recv_ns,
                        trade_id=t.trade_id,
                        price=t.price,
                        size=t.size if cs is None else scale_size(t.size, cs),
                        side=TRADE_SIDE[t.side],
                    )
                )

    def _on_ticker(
        self,
        events: list[_TickerEvent] | list[_TickerEventFields],
        ts_ns: int,
        recv_ns: int,
        out: list[MarketEvent],
    ) -> None:
        """Publish checked quotes."""
        quotes: Iterable[_TickerFields]
        if len(events) == 1:
            quotes = events[0].tickers  # as Coinbase sends them
        else:
            quotes = [q for event in events for q in event.tickers]
        if len(quotes) > 1:
            # The message id of a ticker is its venue time, the envelope's: should one frame
            # carry two quotes of a product, only the later one (which supersedes) is
            # published, where the product's first quote was.
            quotes = {q.product_id: q for q in quotes}.values()
        products, venue = self._products, self.venue
        for q in quotes:
            state = products.get(q.product_id)
            if state is None or not state.ticker:
                continue
            bid_qty, ask_qty, cs = q.best_bid_quantity, q.best_ask_quantity, state.contract_size
            if cs is not None:  # else scale_size is the identity
                bid_qty = None if bid_qty is None else scale_size(bid_qty, cs)
                ask_qty = None if ask_qty is None else scale_size(ask_qty, cs)
            out.append(
                Ticker(
                    venue=venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=ts_ns,
                    ts_recv=recv_ns,
                    bid_price=q.best_bid,
                    bid_size=bid_qty,
                    ask_price=q.best_ask,
                    ask_size=ask_qty,
                    last_price=q.price,
                )
            )

    # -- order book ---------------------------------------------------------------------------

    def _on_l2(
        self, events: list[_L2Event], ts_ns: int, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        for event in events:
            state = self._products.get(event.product_id)
            if state is None or not state.book_wanted:
                continue
            if event.type == "snapshot":
                self._snapshot(state, event, ts_ns, recv_ns, out)
            elif state.synced:
                self._update(state, event, ts_ns, recv_ns, out)
            else:
                self.counters.stale_deltas_dropped += 1

    def _snapshot(
        self, state: _Product, event: _L2Event, ts_ns: int, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        book = state.book
        book.apply_snapshot(event.book_bids, event.book_asks)
        if self._crossed(state, "snapshot", recv_ns, out):
            return
        out.append(
            BookSnapshot(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=ts_ns,
                ts_recv=recv_ns,
                sequence=state.next_sequence(ts_ns),
                bids=scale_levels(event.bids, state.contract_size),
                asks=scale_levels(event.asks, state.contract_size),
            )
        )
        state.synced = True
        detail = f"snapshot applied: {len(book.bids)} bids, {len(book.asks)} asks"
        out.append(self._symbol_status(state, "book_synced", detail, recv_ns))

    def _update(
        self, state: _Product, event: _L2Event, ts_ns: int, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        state.book.apply_delta(event.book_bids, event.book_asks)
        if self._crossed(state, "update", recv_ns, out):
            return
        prev = state.last_sequence
        sequence = state.next_sequence(ts_ns)
        out.append(
            BookDelta(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=ts_ns,
                ts_recv=recv_ns,
                first_sequence=sequence,
                sequence=sequence,
                prev_sequence=prev,
                bids=scale_levels(event.bids, state.contract_size),
                asks=scale_levels(event.asks, state.contract_size),
            )
        )

    def _crossed(self, state: _Product, what: str, recv_ns: int, out: list[MarketEvent]) -> bool:
        """Whether the book is crossed; if so report it and resync the product."""
        book = state.book
        crossing = book.crossing()
        if crossing is None:
            return False
        detail = f"book crossed after {what}: {crossing}; resubscribing"
        out.append(self._book_resync(state, detail, recv_ns))
        book.clear()
        state.synced = False
        self._resubscribe(_L2_CHANNEL, [state.native])
        return True


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
    """One :class:`CoinbaseCodec` per :data:`MAX_PRODUCTS_PER_CONNECTION` products.

    Subscriptions naming the same product id are merged; products are packed in the order
    given.
    """

    def key(sub: Subscription) -> str:
        check_data_types(venue, "coinbase", sub, _SUPPORTED)
        return sub.native_symbol

    merged = merge_subscriptions(venue, subscriptions, key)
    subs = [s for s in merged.values() if s.data_types]
    return [
        CoinbaseCodec(venue, chunk, endpoints)
        for chunk in chunks(subs, MAX_PRODUCTS_PER_CONNECTION)
    ]


# ---------------------------------------------------------------------------------------------
# Instrument list


class _FutureDetails(msgspec.Struct, gc=False):
    contract_root_unit: str = ""
    contract_size: str = ""
    contract_expiry: str | None = None
    contract_expiry_type: str = ""


class _ProductInfo(msgspec.Struct, gc=False):
    product_id: str
    product_type: str
    base_currency_id: str = ""
    quote_currency_id: str = ""
    base_increment: str | None = None
    quote_increment: str | None = None
    price_increment: str | None = None
    status: str = ""
    is_disabled: bool = False
    trading_disabled: bool = False
    future_product_details: _FutureDetails | None = None


class _ProductsAnswer(msgspec.Struct, gc=False):
    products: list[_ProductInfo] | None = None
    error: str | None = None
    message: str | None = None


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """The public products list, once for spot and once for futures."""
    base = f"{endpoints.rest_url.rstrip('/')}/api/v3/brokerage/market/products"
    return [f"{base}?product_type=SPOT", f"{base}?product_type=FUTURE"]


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The products of one ``market/products`` answer (see the module docstring)."""
    answer = decode("coinbase", url, body, _ProductsAnswer)
    if answer.products is None:
        raise ValueError(f"coinbase: {url} answered error {answer.error}: {answer.message}")
    out: list[Instrument] = []
    for p in answer.products:
        kind: Kind
        expiry = None
        contract_size = None
        quote = p.quote_currency_id
        if p.product_type == "SPOT":
            kind, base = "spot", p.base_currency_id
        elif p.product_type == "FUTURE" and p.future_product_details is not None:
            details = p.future_product_details
            base = details.contract_root_unit
            what = f"coinbase: {url}: {p.product_id}"
            contract_size = positive_decimal(details.contract_size, f"{what} contract_size")
            if details.contract_expiry_type == "PERPETUAL":
                kind = "perp"
            elif details.contract_expiry is not None:
                kind = "future"
                try:
                    expiry_ns = rfc3339_ns(details.contract_expiry)
                except ValueError as exc:
                    raise ValueError(f"{what} contract_expiry: {exc}") from None
                expiry = expiry_code(expiry_ns // 1_000_000)
            else:
                raise ValueError(f"{what}: a future without contract_expiry")
        else:
            raise ValueError(f"coinbase: {url}: {p.product_id}: product_type {p.product_type!r}")
        if not (base and quote):
            raise ValueError(f"coinbase: {url}: cannot tell base and quote of {p.product_id}")
        out.append(
            Instrument(
                native_symbol=p.product_id,
                symbol=canonical(base, quote, kind, expiry),
                kind=kind,
                base=base,
                quote=quote,
                price_increment=p.price_increment or p.quote_increment,
                size_increment=p.base_increment,
                contract_size=contract_size,
                active=not (p.is_disabled or p.trading_disabled) and p.status in ("online", ""),
            )
        )
    return out


INSTRUMENTS: Final = InstrumentSource(urls=instrument_urls, parse=parse_instruments)


ADAPTER = Adapter(
    name="coinbase",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(
        ws_url="wss://advanced-trade-ws.coinbase.com", rest_url="https://api.coinbase.com"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    instruments=INSTRUMENTS,
)
