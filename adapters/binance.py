"""Binance spot: the sans-IO codec for the combined market-data stream.

One :class:`BinanceCodec` serves one WebSocket connection to ``<ws_url>`` (the combined
endpoint ``…/stream``), which wraps every payload as ``{"stream": "<name>", "data": {...}}``.
On :meth:`~BinanceCodec.connected` the codec queues ``SUBSCRIBE`` frames for its streams:

* ``<sym>@trade`` → :class:`~relay.events.Trade` (``@aggTrade`` frames are accepted too);
* ``<sym>@bookTicker`` → :class:`~relay.events.Ticker`;
* ``<sym>@depth@100ms`` → :class:`~relay.events.BookSnapshot` then
  :class:`~relay.events.BookDelta` events, synchronised with a REST depth snapshot as
  Binance's order-book sync procedure prescribes (see :class:`BinanceCodec`).

``ADAPTER.make_codecs`` shards the subscriptions over connections of at most
:data:`MAX_STREAMS_PER_CONNECTION` streams, keeping all of a symbol's streams on one
connection.

**Instrument list** (``ADAPTER.instruments``): ``GET <rest_url>/api/v3/exchangeInfo``, every
symbol with its ``baseAsset``/``quoteAsset`` (canonical ``BASE-QUOTE``, kind spot),
``PRICE_FILTER.tickSize``, ``LOT_SIZE.stepSize``; ``status`` ``TRADING`` is active. Sizes
are base units (no contract size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from adapters._binance import (
    MAX_BUFFERED_DIFFS,
    MAX_PARAMS_PER_SUBSCRIBE,
    MAX_STREAMS_PER_CONNECTION,
    QUOTE_ASSETS,
    SYNCED,
    BinanceStreamCodec,
    Buffered,
    DepthState,
    envelope_decoder,
    exchange_info,
    pair_symbol,
)
from adapters._common import EpochMs, Int64, check_data_types, merge_subscriptions, pack
from relay.book import Level as BookLevel
from relay.book import parse_levels
from relay.codec import Adapter, Codec, Endpoints, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    Level,
    MarketEvent,
    Ticker,
    Trade,
    check_non_negative,
)
from relay.instruments import Instrument, InstrumentSource, canonical
from relay.timestamps import NS_PER_MS

__all__ = [
    "ADAPTER",
    "INSTRUMENTS",
    "MAX_BUFFERED_DIFFS",
    "MAX_PARAMS_PER_SUBSCRIBE",
    "MAX_STREAMS_PER_CONNECTION",
    "QUOTE_ASSETS",
    "BinanceCodec",
    "canonical_symbol",
    "make_codecs",
    "parse_instruments",
]

SNAPSHOT_LIMIT: Final = 1000
"""Levels per side asked of ``/api/v3/depth`` (request weight 10; 5000 would cost 50)."""

# ---------------------------------------------------------------------------------------------
# Symbols


def canonical_symbol(native: str) -> str | None:
    """``BTCUSDT`` → ``BTC-USDT``: split off the longest known quote asset suffix.

    Returns ``None`` when no quote asset in :data:`QUOTE_ASSETS` ends the symbol (or it is
    nothing but a quote asset). Binance symbols have no delimiter, so this is a heuristic;
    at run time the ``baseAsset``/``quoteAsset`` of ``GET /api/v3/exchangeInfo``
    (:data:`INSTRUMENTS`) decide, and this serves config checks and starts without it.
    """
    return pair_symbol(native)


# ---------------------------------------------------------------------------------------------
# Wire formats. Only the fields the codec uses are declared; msgspec skips the rest.
# ``gc=False``: these structs never take part in reference cycles, and skipping GC tracking
# makes decoding cheaper.


# Prices and sizes stay the venue's text (published as sent); ``__post_init__`` checks that
# the text is a number (msgspec turns its ValueError into a decode error) and gives the
# book its Decimal levels.


class _TradeFields(msgspec.Struct, gc=False):
    price: str = msgspec.field(name="p")
    qty: str = msgspec.field(name="q")
    time: EpochMs = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")

    def __post_init__(self) -> None:
        check_non_negative(self.price)
        check_non_negative(self.qty)


class _Trade(_TradeFields, gc=False):
    id: Int64 = msgspec.field(name="t")


class _AggTrade(_TradeFields, gc=False):
    id: Int64 = msgspec.field(name="a")


class _BookTicker(msgspec.Struct, gc=False):
    update_id: Int64 = msgspec.field(name="u")
    bid_price: str = msgspec.field(name="b")
    bid_size: str = msgspec.field(name="B")
    ask_price: str = msgspec.field(name="a")
    ask_size: str = msgspec.field(name="A")

    def __post_init__(self) -> None:
        for text in (self.bid_price, self.bid_size, self.ask_price, self.ask_size):
            check_non_negative(text)


class _DepthDiff(msgspec.Struct, gc=False):
    event_time: EpochMs = msgspec.field(name="E")
    first_id: Int64 = msgspec.field(name="U")
    last_id: Int64 = msgspec.field(name="u")
    bids: list[Level] = msgspec.field(name="b")
    asks: list[Level] = msgspec.field(name="a")
    # Not in the JSON (the names cannot occur there); filled from bids/asks after decoding.
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__book_asks")

    def __post_init__(self) -> None:
        self.book_bids = parse_levels(self.bids)
        self.book_asks = parse_levels(self.asks)


class _DepthSnapshot(msgspec.Struct, gc=False):
    last_update_id: Int64 = msgspec.field(name="lastUpdateId")
    bids: list[Level]
    asks: list[Level]
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__book_asks")

    def __post_init__(self) -> None:
        self.book_bids = parse_levels(self.bids)
        self.book_asks = parse_levels(self.asks)


_trade_decoder = msgspec.json.Decoder(_Trade)
_agg_trade_decoder = msgspec.json.Decoder(_AggTrade)
_book_ticker_decoder = msgspec.json.Decoder(_BookTicker)
_depth_decoder = msgspec.json.Decoder(_DepthDiff)
_snapshot_decoder = msgspec.json.Decoder(_DepthSnapshot)

# ---------------------------------------------------------------------------------------------
# Per-symbol state


class _Symbol(DepthState[_DepthDiff]):
    """Everything the codec knows about one subscribed symbol."""

    __slots__ = ("ticker", "trade")

    def __init__(self, sub: Subscription, rest_url: str) -> None:
        depth_url = f"{rest_url.rstrip('/')}/api/v3/depth"
        types = sub.data_types
        super().__init__(
            sub, depth=DataType.L2_ORDERBOOK in types, depth_url=depth_url, limit=SNAPSHOT_LIMIT
        )
        self.trade = DataType.TRADE in types
        self.ticker = DataType.TICKER in types

    def streams(self) -> list[str]:
        out = []
        if self.depth:
            out.append(f"{self.stream}@depth@100ms")
        if self.ticker:
            out.append(f"{self.stream}@bookTicker")
        if self.trade:
            out.append(f"{self.stream}@trade")
        return out


# ---------------------------------------------------------------------------------------------
# The codec


class BinanceCodec(BinanceStreamCodec[_Symbol]):
    """The protocol state of one Binance spot combined-stream connection.

    **Book sync** (per symbol, following Binance's documented procedure; the venue
    reference binance.md section 5):

    1. The first ``depthUpdate`` after connect (or after a resync) is buffered and a
       :class:`~relay.codec.FetchSnapshot` keyed by the native symbol is queued. Later diffs
       are buffered too, checking as they come that ``U == previous u + 1``.
    2. :meth:`snapshot_received`: a snapshot with ``lastUpdateId + 1 < U`` of the first
       buffered diff is too old (a diff between them is missing): it is discarded and
       fetched again, keeping the buffer. (The docs' wording, ``lastUpdateId < U``, would
       also refetch the exact fit ``lastUpdateId == U - 1``, which their own next step
       accepts; so the test here is that next step's ``U <= lastUpdateId + 1``.)
       Otherwise buffered diffs with ``u <= lastUpdateId`` are dropped
       (``counters.stale_deltas_dropped``), the book is set from the snapshot, and a
       :class:`~relay.events.BookSnapshot` is published, followed by a
       :class:`~relay.events.BookDelta` per remaining buffered diff and a ``book_synced``
       status.
    3. Each diff applied after that: ``u <= book id`` is stale and dropped; the first one
       after the snapshot must have ``U <= lastUpdateId + 1``, every later one
       ``U == previous u + 1``. Anything else is a gap: ``book_gap`` and ``book_resync``
       statuses, the symbol's book is discarded, and it starts again at step 1 with the
       offending diff as the first buffered one (it is a valid diff of the new chain).
    4. After applying a diff the book must not be crossed; if it is, the copy is corrupt:
       the delta is not published, and the symbol resyncs as for a gap (``book_resync``
       status with the crossing prices).

    A delta is never published for a book whose snapshot has not been published on this
    connection. Only the affected symbol resyncs; other books keep flowing. Every
    ``book_resync`` status (gap, crossed book, buffer overflow, snapshot too old or crossed,
    snapshot fetch failed) counts one ``counters.book_resyncs`` and comes with a new
    FetchSnapshot, unless one is still outstanding (see
    :class:`~adapters._binance.BinanceStreamCodec`).

    **Resync from outside** (:meth:`~adapters._binance.BinanceStreamCodec.resync`): the
    symbol's book and buffer are dropped and it restarts at step 1 with a FetchSnapshot
    queued at once (``book_resync``). A snapshot that comes back before any diff is
    buffered is published alone, and the first live diff must bridge it by step 3; unless
    it is older than the last diff seen before the resync (``lastUpdateId < u``), which the
    next diff (``U = u + 1``) could not bridge: then it is dropped, and the next diff starts
    step 1 again (no refetch loop on a quiet book).
    :attr:`~adapters._binance.BinanceStreamCodec.synced` is true while every book is past
    step 2.

    **Other frames.** ``{"result": null, "id": n}`` acks are dropped; ``{"code", "msg"}``
    errors (bare or under ``"error"``) become ``venue_error`` statuses; ``serverShutdown``
    (bare or as the ``!serverShutdown`` stream) becomes a ``server_shutdown`` status and a
    :class:`~relay.codec.Reconnect` action. Streams the codec did not subscribe (kline, or
    other symbols on a shared replay) are ignored. Anything undecodable, including a
    known stream whose payload has the wrong shape or types, counts
    ``counters.parse_errors`` and becomes a ``parse_error`` status.
    """

    max_send_rate = 4.0  # Binance allows 5 client messages/s; keep a margin
    ping_interval = None  # Binance pings every 20 s; the WebSocket library answers

    def __init__(
        self,
        venue: str,
        subscriptions: Sequence[Subscription],
        endpoints: Endpoints,
        *,
        max_buffered_diffs: int = MAX_BUFFERED_DIFFS,
    ) -> None:
        """One connection for ``subscriptions`` (distinct native symbols, at most
        :data:`MAX_STREAMS_PER_CONNECTION` streams in all)."""
        states = [_Symbol(sub, endpoints.rest_url) for sub in subscriptions]
        super().__init__(venue, endpoints.ws_url, states)
        self.max_buffered_diffs = max_buffered_diffs
        # By lower-case stream prefix: how frames name their symbol.
        self._symbols = {state.stream: state for state in states}
        # Stream-name suffix → payload handler: the first thing looked up for every frame.
        self._handlers = {
            "depth@100ms": self._on_depth,
            "depth": self._on_depth,
            "bookTicker": self._on_book_ticker,
            "trade": self._on_trade,
            "aggTrade": self._on_agg_trade,
        }

    # -- frames -------------------------------------------------------------------------------

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        self._now_ns = recv_ns
        env = envelope_decoder.decode(data)
        stream = env.stream
        if stream is not None:
            prefix, _, kind = stream.partition("@")
            handler = self._handlers.get(kind)
            if handler is None:
                if stream == "!serverShutdown":
                    return self._server_shutdown(env.data, recv_ns)
                return []  # kline and other streams we did not ask for (a shared replay)
            payload = env.data
            if payload is msgspec.UNSET:
                return [self._parse_error(f"{stream}: no data", recv_ns)]
            try:
                return handler(prefix, payload, recv_ns)
            except msgspec.DecodeError as exc:
                return [self._parse_error(f"{stream}: {exc}", recv_ns)]
        control = self._on_control(env, recv_ns)
        if control is not None:
            return control
        return [self._parse_error("unrecognized frame", recv_ns)]

    def _lookup(self, prefix: str) -> _Symbol | None:
        state = self._symbols.get(prefix)
        if state is None and not prefix.islower():
            state = self._symbols.get(prefix.lower())
        return state

    # -- trades and tickers -------------------------------------------------------------------

    def _on_trade(self, prefix: str, payload: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        return self._trade(_trade_decoder.decode(payload), "", prefix, recv_ns)

    def _on_agg_trade(self, prefix: str, payload: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        # Aggregate ids are a separate id space from trade ids; the "a" keeps the two from
        # ever sharing a message id.
        return self._trade(_agg_trade_decoder.decode(payload), "a", prefix, recv_ns)

    def _trade(
        self, t: _Trade | _AggTrade, id_prefix: str, prefix: str, recv_ns: int
    ) -> list[MarketEvent]:
        state = self._lookup(prefix)
        if state is None or not state.trade:
            return []
        return [
            Trade(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=t.time * NS_PER_MS,
                ts_recv=recv_ns,
                trade_id=f"{id_prefix}{t.id}",
                price=t.price,
                size=t.qty,
                side="sell" if t.buyer_is_maker else "buy",
            )
        ]

    def _on_book_ticker(self, prefix: str, payload: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        q = _book_ticker_decoder.decode(payload)
        state = self._lookup(prefix)
        if state is None or not state.ticker:
            return []
        return [
            Ticker(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=None,  # spot bookTicker carries no time
                ts_recv=recv_ns,
                bid_price=q.bid_price,
                bid_size=q.bid_size,
                ask_price=q.ask_price,
                ask_size=q.ask_size,
                sequence=q.update_id,
            )
        ]

    # -- order book ---------------------------------------------------------------------------

    def _on_depth(self, prefix: str, payload: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        diff = _depth_decoder.decode(payload)
        state = self._lookup(prefix)
        if state is None or not state.depth:
            return []
        if diff.last_id < diff.first_id:
            return [self._parse_error(f"{prefix}@depth: u < U", recv_ns)]
        return self._on_diff(state, diff, recv_ns)

    def _buffer(
        self, state: _Symbol, diff: _DepthDiff, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        """Buffer a diff while waiting for a snapshot, keeping the buffer a gapless chain."""
        buffer = state.buffer
        if buffer:
            prev_u = buffer[-1].diff.last_id
            if diff.last_id <= prev_u:
                self.counters.stale_deltas_dropped += 1
                return
            if diff.first_id != prev_u + 1:
                # A snapshot can only bridge to the first buffered diff, so a hole inside
                # the buffer makes all of it useless: restart from this diff.
                self._gap(state, diff, recv_ns, out, prev_u)
                return
        if len(buffer) >= self.max_buffered_diffs:
            detail = f"{len(buffer)} diffs buffered and still no snapshot"
            self._resync(state, diff, recv_ns, out, detail)
            return
        buffer.append(Buffered(diff, recv_ns))

    def _apply(
        self, state: _Symbol, diff: _DepthDiff, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        """Check one diff against the synced book, apply it and publish it (step 3-4)."""
        book_id = state.book_id
        if diff.last_id <= book_id:
            self.counters.stale_deltas_dropped += 1
            return
        first_id = diff.first_id
        if first_id != book_id + 1 and (first_id > book_id + 1 or not state.from_snapshot):
            self._gap(state, diff, recv_ns, out, book_id)
            return
        book = state.book
        book.apply_delta(diff.book_bids, diff.book_asks)
        if crossing := book.crossing():
            detail = f"book crossed after U={first_id} u={diff.last_id}: {crossing}; resyncing"
            self._resync(state, diff, recv_ns, out, detail)
            return
        out.append(
            BookDelta(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=diff.event_time * NS_PER_MS,
                ts_recv=recv_ns,
                first_sequence=first_id,
                sequence=diff.last_id,
                prev_sequence=book_id,
                bids=diff.bids,
                asks=diff.asks,
            )
        )
        state.book_id = diff.last_id
        state.from_snapshot = False

    def _gap(
        self,
        state: _Symbol,
        diff: _DepthDiff,
        recv_ns: int,
        out: list[MarketEvent],
        prev_u: int,
    ) -> None:
        detail = f"expected U={prev_u + 1}, got U={diff.first_id} u={diff.last_id}"
        out.append(self._book_gap(state, detail, recv_ns))
        self._resync(state, diff, recv_ns, out, f"sequence gap: {detail}")

    # -- snapshots ----------------------------------------------------------------------------

    def _snapshot_received(self, state: _Symbol, body: bytes, recv_ns: int) -> list[MarketEvent]:
        """Step 2 of the book sync."""
        try:
            snapshot = _snapshot_decoder.decode(body)
        except msgspec.DecodeError as exc:
            return [self._bad_snapshot(state, body, str(exc), recv_ns)]
        out: list[MarketEvent] = []
        last_id = snapshot.last_update_id
        buffered = state.buffer
        if not buffered:
            # Right after resync(), before any diff: the next diff follows the last one seen
            # (U = seen u + 1) and must bridge this snapshot by step 3.
            if last_id < state.seen_id:
                detail = f"snapshot lastUpdateId={last_id} older than the last diff seen"
                return [self._unbridgeable(state, detail, recv_ns)]
            first_id = last_id + 1
        else:
            first_id = buffered[0].diff.first_id
        if last_id + 1 < first_id:
            detail = (
                f"snapshot lastUpdateId={last_id} older than first buffered U={first_id}; "
                "fetching again"
            )
            out.append(self._book_resync(state, detail, recv_ns))
            self._fetch(state)
            return out
        skip = 0
        while skip < len(buffered) and buffered[skip].diff.last_id <= last_id:
            skip += 1
        book = state.book
        book.apply_snapshot(snapshot.book_bids, snapshot.book_asks)
        if book.is_crossed():
            book.clear()
            detail = f"snapshot lastUpdateId={last_id} is crossed; fetching again"
            out.append(self._book_resync(state, detail, recv_ns))
            self._fetch(state)
            return out
        self.counters.stale_deltas_dropped += skip
        state.buffer = []
        state.phase = SYNCED
        state.book_id = last_id
        state.from_snapshot = True
        out.append(
            BookSnapshot(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=None,  # the REST depth answer carries no time
                ts_recv=recv_ns,
                sequence=last_id,
                # The venue's own text, as for every delta; the book only checked it.
                bids=snapshot.bids,
                asks=snapshot.asks,
            )
        )
        # Buffered deltas keep the receive time of their own frame.
        for item in buffered[skip:]:
            if state.phase == SYNCED:
                self._apply(state, item.diff, item.recv_ns, out)
            else:  # a crossed book resynced part way: the rest waits for the next snapshot
                self._buffer(state, item.diff, item.recv_ns, out)
        if state.phase == SYNCED:
            detail = f"snapshot lastUpdateId={last_id}, book at u={state.book_id}"
            out.append(self._symbol_status(state, "book_synced", detail, recv_ns))
        return out


# ---------------------------------------------------------------------------------------------
# The adapter

_SUPPORTED: Final = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})


def make_codecs(
    venue: str,
    subscriptions: Sequence[Subscription],
    endpoints: Endpoints,
    *,
    credentials: Mapping[str, str] = {},  # public streams need none
) -> list[Codec]:
    """One :class:`BinanceCodec` per connection of at most 1024 streams.

    Subscriptions naming the same native symbol (in any case) are merged. A symbol's streams
    all go to one connection, so its trades, ticker and book share one codec; symbols are
    packed onto connections in the order given.
    """

    def key(sub: Subscription) -> str:
        check_data_types(venue, "binance spot", sub, _SUPPORTED)
        return sub.native_symbol.upper()

    merged = merge_subscriptions(venue, subscriptions, key)
    # One stream per data type.
    shards = pack(merged.values(), lambda sub: len(sub.data_types), MAX_STREAMS_PER_CONNECTION)
    return [BinanceCodec(venue, shard, endpoints) for shard in shards]


# ---------------------------------------------------------------------------------------------
# Instrument list


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """``<rest_url>/api/v3/exchangeInfo``: all spot symbols in one answer."""
    return [f"{endpoints.rest_url.rstrip('/')}/api/v3/exchangeInfo"]


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The spot symbols of an ``exchangeInfo`` body (see the module docstring)."""
    return [
        Instrument(
            native_symbol=s.symbol,
            symbol=canonical(s.base_asset, s.quote_asset, "spot"),
            kind="spot",
            base=s.base_asset,
            quote=s.quote_asset,
            price_increment=s.tick_size(),
            size_increment=s.step_size(),
            contract_size=None,
            active=s.status == "TRADING",
        )
        for s in exchange_info("binance", url, body).symbols
    ]


INSTRUMENTS: Final = InstrumentSource(
    urls=instrument_urls,
    parse=parse_instruments,
    # The codec upper-cases symbols (streams are their lower-case form).
    native_key=lambda sub: sub.native_symbol.upper(),
)


ADAPTER = Adapter(
    name="binance",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(
        ws_url="wss://stream.binance.com:9443/stream", rest_url="https://api.binance.com"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    instruments=INSTRUMENTS,
)
