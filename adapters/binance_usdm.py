"""Binance USDⓈ-M futures: the sans-IO codec for the routed combined market-data streams.

Since 2026 Binance serves USD-M market data from two routed entry points, and a stream
subscribed on the wrong one is acknowledged but never delivered (binance-usdm.md §1). So
``ADAPTER.make_codecs`` plans connections **per route**, each codec serving one combined
stream ``<base>/<route>/stream`` that wraps every payload as ``{"stream": .., "data": ..}``:

* ``/public`` (book data):

  * ``<sym>@depth@100ms`` → :class:`~relay.events.BookSnapshot` then
    :class:`~relay.events.BookDelta`, synchronised with the REST snapshot
    ``GET /fapi/v1/depth`` by the USD-M procedure (see :class:`BinanceUsdmCodec`);
  * ``<sym>@bookTicker`` → :class:`~relay.events.Ticker` (``sequence`` = ``u``).

* ``/market`` (regular market data):

  * ``<sym>@aggTrade`` → :class:`~relay.events.Trade` (``trade_id`` ``"a<agg id>"``; the
    per-fill ``@trade`` stream, seen on ``/public`` in 2026 recordings, is decoded too, with
    the plain trade id, but not subscribed: the venue docs only document ``@aggTrade``);
  * ``<sym>@markPrice@1s`` → :class:`~relay.events.FundingRate` (``r`` current predicted
    rate as a fraction, ``T`` next funding time, with ``p`` mark and ``i`` index) and/or
    :class:`~relay.events.MarkPrice` (``p``, ``i``): one stream serves both data types;
  * ``<sym>@forceOrder`` → :class:`~relay.events.Liquidation` (sampled by the venue: at
    most the latest liquidation per symbol per second).

**Endpoints.** ``Endpoints.ws_url`` is the host base, ``wss://fstream.binance.com``; a codec's
:attr:`~BinanceUsdmCodec.url` is ``<base>/public/stream`` or ``<base>/market/stream``. A
trailing ``/stream`` (the decommissioned unrouted path, and what the replay venue prints)
and a trailing ``/public`` or ``/market`` are dropped from ``ws_url`` before the route is
appended, so either spelling of the base works.

**Frames.** Besides combined-stream frames the codec accepts bare event payloads (what a
raw ``/ws`` connection delivers), dispatched on their ``e`` field; events are matched to a
subscription by their own symbol field ``s``, so the stream name is only used to pick the
decoder.

**Sequence-id mapping** (:class:`~relay.events.BookDelta`): ``first_sequence`` = ``U``,
``sequence`` = ``u``, ``prev_sequence`` = the ``sequence`` of the event the delta follows on
this book: the venue's ``pu`` for every chained diff, and the snapshot's ``lastUpdateId`` for
the first diff applied after a snapshot (that diff straddles ``lastUpdateId``, its own
``pu`` points before the snapshot). :class:`~relay.events.BookSnapshot` ``sequence`` =
``lastUpdateId``.

**Timestamps.** ``ts_venue`` is the matching-engine time ``T`` where the payload has one
(trades, bookTicker, depth diffs, REST snapshots, liquidation orders), else the event time
``E`` (mark price, where ``T`` is the next funding time; depth diffs without ``T``).

**Sides.** Trades: ``m`` (buyer is maker) true ⇒ the taker sold ⇒ ``"sell"``.
Liquidations: ``o.S`` is the side of the liquidation *order* the engine sends to close the
position, so ``SELL`` closes a long ⇒ the liquidated position is long ⇒ ``"buy"``, and
``BUY`` ⇒ ``"sell"`` (binance-usdm.md §4.7; README "Liquidation side").

**Size units.** USD-M quantities are in the base asset (BTC for BTCUSDT; for ``1000PEPEUSDT``
the base asset is ``1000PEPE``), so ``Subscription.contract_size`` is normally unset. When it
is set, every size (trade, ticker, book level, liquidation) is multiplied by it with
:class:`~decimal.Decimal` arithmetic and published as ``format(x, "f")``; prices are never
rescaled.

**Instrument list** (``ADAPTER.instruments``): ``GET <rest_url>/fapi/v1/exchangeInfo``, every
contract with ``baseAsset``/``quoteAsset``; a ``contractType`` ending in ``PERPETUAL`` is a
perpetual (``BASE-QUOTE-PERP``), any other (``CURRENT_QUARTER``, ``NEXT_QUARTER``, …) a dated
future named by the UTC date of its ``deliveryDate`` (``BASE-QUOTE-YYMMDD``, the
``_YYMMDD`` suffix of its symbol). Tick and lot size from ``PRICE_FILTER.tickSize`` and
``LOT_SIZE.stepSize``; ``status`` ``TRADING`` is active. Sizes are base units, so no contract
size is given (a ``1000PEPEUSDT`` contract's base asset is ``1000PEPE``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final, Literal

import msgspec

from adapters._binance import (
    MAX_BUFFERED_DIFFS,
    MAX_PARAMS_PER_SUBSCRIBE,
    MAX_STREAMS_PER_CONNECTION,
    SYNCED,
    BinanceStreamCodec,
    Buffered,
    DepthState,
    envelope_decoder,
    exchange_info,
    pair_symbol,
)
from adapters._common import (
    EpochMs,
    Int64,
    check_data_types,
    merge_subscriptions,
    pack,
    scale_levels,
    scale_size,
)
from relay.book import Level as BookLevel
from relay.book import parse_levels
from relay.codec import Adapter, Codec, Endpoints, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    FundingRate,
    Level,
    Liquidation,
    MarketEvent,
    MarkPrice,
    Ticker,
    Trade,
    check_non_negative,
    check_num,
)
from relay.instruments import Instrument, InstrumentSource, Kind, canonical, expiry_code
from relay.timestamps import NS_PER_MS

__all__ = [
    "ADAPTER",
    "INSTRUMENTS",
    "MARKET",
    "MAX_BUFFERED_DIFFS",
    "MAX_PARAMS_PER_SUBSCRIBE",
    "MAX_STREAMS_PER_CONNECTION",
    "PUBLIC",
    "BinanceUsdmCodec",
    "Route",
    "canonical_symbol",
    "make_codecs",
    "parse_instruments",
    "route_url",
]

Route = Literal["public", "market"]
PUBLIC: Final[Route] = "public"
"""The entry point for book data: ``@depth*`` and ``@bookTicker``."""
MARKET: Final[Route] = "market"
"""The entry point for regular market data: ``@aggTrade``, ``@markPrice``, ``@forceOrder``."""

SNAPSHOT_LIMIT: Final = 1000
"""Levels per side asked of ``/fapi/v1/depth`` (its maximum). (The other limits, and the
``SUBSCRIBE`` batch size, which futures does not document, are the spot codec's.)"""

# ---------------------------------------------------------------------------------------------
# Symbols and URLs


def canonical_symbol(native: str) -> str | None:
    """``BTCUSDT`` → ``BTC-USDT-PERP``; ``BTCUSDT_260925`` → ``BTC-USDT-260925``.

    The pair is split with the spot codec's quote-asset heuristic
    (:func:`adapters._binance.pair_symbol`); a ``_YYMMDD`` suffix marks a dated
    (quarterly) contract, no suffix a perpetual. Anything else (``BTCUSD_PERP`` is COIN-M,
    not USD-M; an unknown quote; a suffix that is no date) gives ``None``. At run time
    ``GET /fapi/v1/exchangeInfo`` (:data:`INSTRUMENTS`) decides; this serves config checks
    and starts without it.
    """
    pair, sep, expiry = native.upper().partition("_")
    if sep and not _is_yymmdd(expiry):
        return None
    split = pair_symbol(pair)
    if split is None:
        return None
    return f"{split}-{expiry}" if sep else f"{split}-PERP"


def _is_yymmdd(text: str) -> bool:
    return (
        len(text) == 6
        and text.isascii()
        and text.isdigit()
        and 1 <= int(text[2:4]) <= 12
        and 1 <= int(text[4:6]) <= 31
    )


def route_url(ws_url: str, route: Route) -> str:
    """The combined-stream URL of ``route`` under the configured ``ws_url`` base."""
    base = ws_url.rstrip("/")
    base = base.removesuffix("/stream")
    for suffix in ("/public", "/market"):
        base = base.removesuffix(suffix)
    return f"{base}/{route}/stream"


# ---------------------------------------------------------------------------------------------
# Wire formats. Only the fields the codec uses are declared; msgspec skips the rest.
# ``gc=False``: these structs never take part in reference cycles, and skipping GC tracking
# makes decoding cheaper. Prices and sizes stay the venue's text; ``__post_init__`` checks
# the text is a number (msgspec turns the ValueError into a decode error).


class _TradeFields(msgspec.Struct, gc=False):
    symbol: str = msgspec.field(name="s")
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
    symbol: str = msgspec.field(name="s")
    update_id: Int64 = msgspec.field(name="u")
    bid_price: str = msgspec.field(name="b")
    bid_size: str = msgspec.field(name="B")
    ask_price: str = msgspec.field(name="a")
    ask_size: str = msgspec.field(name="A")
    time: EpochMs | None = msgspec.field(default=None, name="T")
    event_time: EpochMs | None = msgspec.field(default=None, name="E")

    def __post_init__(self) -> None:
        for text in (self.bid_price, self.bid_size, self.ask_price, self.ask_size):
            check_non_negative(text)


class _DepthDiff(msgspec.Struct, gc=False):
    symbol: str = msgspec.field(name="s")
    event_time: EpochMs = msgspec.field(name="E")
    first_id: Int64 = msgspec.field(name="U")
    last_id: Int64 = msgspec.field(name="u")
    prev_id: Int64 = msgspec.field(name="pu")
    bids: list[Level] = msgspec.field(name="b")
    asks: list[Level] = msgspec.field(name="a")
    time: EpochMs | None = msgspec.field(default=None, name="T")
    # Not in the JSON (the names cannot occur there); filled from bids/asks after decoding.
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__book_asks")

    def __post_init__(self) -> None:
        if self.last_id < self.first_id:
            raise ValueError("u < U")
        self.book_bids = parse_levels(self.bids)
        self.book_asks = parse_levels(self.asks)


class _DepthSnapshot(msgspec.Struct, gc=False):
    last_update_id: Int64 = msgspec.field(name="lastUpdateId")
    bids: list[Level]
    asks: list[Level]
    time: EpochMs | None = msgspec.field(default=None, name="T")
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__book_asks")

    def __post_init__(self) -> None:
        self.book_bids = parse_levels(self.bids)
        self.book_asks = parse_levels(self.asks)


class _MarkPrice(msgspec.Struct, gc=False):
    symbol: str = msgspec.field(name="s")
    event_time: EpochMs = msgspec.field(name="E")
    mark: str = msgspec.field(name="p")
    index: str = msgspec.field(default="", name="i")
    rate: str = msgspec.field(default="", name="r")
    """Empty for contracts without funding (⚠ as reported for dated contracts)."""
    next_funding: EpochMs = msgspec.field(default=0, name="T")

    def __post_init__(self) -> None:
        check_num(self.mark)
        if self.index:
            check_num(self.index)
        if self.rate:
            check_num(self.rate)


class _ForceOrderBody(msgspec.Struct, gc=False):
    symbol: str = msgspec.field(name="s")
    side: Literal["BUY", "SELL"] = msgspec.field(name="S")
    qty: str = msgspec.field(name="q")
    price: str = msgspec.field(name="p")
    avg_price: str = msgspec.field(name="ap")
    filled: str = msgspec.field(name="z")
    time: EpochMs = msgspec.field(name="T")

    def __post_init__(self) -> None:
        for text in (self.qty, self.price, self.avg_price, self.filled):
            check_non_negative(text)


class _ForceOrder(msgspec.Struct, gc=False):
    order: _ForceOrderBody = msgspec.field(name="o")


_trade_decoder = msgspec.json.Decoder(_Trade)
_agg_trade_decoder = msgspec.json.Decoder(_AggTrade)
_book_ticker_decoder = msgspec.json.Decoder(_BookTicker)
_depth_decoder = msgspec.json.Decoder(_DepthDiff)
_snapshot_decoder = msgspec.json.Decoder(_DepthSnapshot)
_mark_price_decoder = msgspec.json.Decoder(_MarkPrice)
_force_order_decoder = msgspec.json.Decoder(_ForceOrder)

# ---------------------------------------------------------------------------------------------
# Per-symbol state


class _Symbol(DepthState[_DepthDiff]):
    """Everything one codec knows about one subscribed symbol, for its route's data types.

    ``native`` is matched against the payloads' ``s``.
    """

    __slots__ = ("contract_size", "funding", "liquidation", "mark", "ticker", "trade")

    def __init__(self, sub: Subscription, route: Route, rest_url: str) -> None:
        types = sub.data_types
        public = route == PUBLIC
        super().__init__(
            sub,
            depth=public and DataType.L2_ORDERBOOK in types,
            depth_url=f"{rest_url.rstrip('/')}/fapi/v1/depth",
            limit=SNAPSHOT_LIMIT,
        )
        self.contract_size = sub.contract_size
        self.ticker = public and DataType.TICKER in types
        self.trade = not public and DataType.TRADE in types
        self.funding = not public and DataType.FUNDING_RATE in types
        self.mark = not public and DataType.MARK_PRICE in types
        self.liquidation = not public and DataType.LIQUIDATION in types

    def streams(self) -> list[str]:
        out = []
        if self.depth:
            out.append(f"{self.stream}@depth@100ms")
        if self.ticker:
            out.append(f"{self.stream}@bookTicker")
        if self.trade:
            out.append(f"{self.stream}@aggTrade")
        if self.funding or self.mark:
            out.append(f"{self.stream}@markPrice@1s")
        if self.liquidation:
            out.append(f"{self.stream}@forceOrder")
        return out


# ---------------------------------------------------------------------------------------------
# The codec


class BinanceUsdmCodec(BinanceStreamCodec[_Symbol]):
    """The protocol state of one USD-M combined-stream connection on one route.

    **Book sync** (per symbol; binance-usdm.md §5, the venue's documented procedure):

    1. The first ``depthUpdate`` after connect (or after a resync) is buffered and a
       :class:`~relay.codec.FetchSnapshot` keyed by the native symbol is queued. Later diffs
       are buffered too, checking as they come that ``pu == previous u``; a break restarts
       the buffer at the offending diff (``book_gap`` + ``book_resync``).
    2. :meth:`snapshot_received`: buffered diffs with ``u < lastUpdateId`` are dropped
       (``counters.stale_deltas_dropped``). If a diff remains and it does not straddle the
       snapshot (its ``U > lastUpdateId``), the snapshot is too old to be bridged: it is
       discarded and fetched again, keeping the buffer (``book_resync``). Otherwise the
       book is set from the snapshot and a :class:`~relay.events.BookSnapshot` is
       published, then a :class:`~relay.events.BookDelta` per remaining buffered diff and a
       ``book_synced`` status.
    3. The first diff applied after a snapshot (buffered or live) must satisfy
       ``U <= lastUpdateId <= u`` (a live one with ``u < lastUpdateId`` is stale and
       dropped); every later one ``pu == previous u`` (a repeat with ``u <= previous u`` is
       dropped as stale). Anything else is a gap: ``book_gap`` and ``book_resync`` statuses,
       the symbol's book is discarded, and it starts again at step 1 with the offending
       diff as the first buffered one. USD-M update ids are not contiguous per symbol, so
       the chain is checked with ``pu`` only, never with ``U == u + 1``.
    4. After applying a diff the book must not be crossed; if it is, the copy is corrupt:
       the delta is not published and the symbol resyncs as for a gap.

    A delta is never published for a book whose snapshot has not been published on this
    connection, and only the affected symbol resyncs. Every ``book_resync`` status counts
    one ``counters.book_resyncs`` and comes with a new FetchSnapshot unless one is still
    outstanding (see :class:`~adapters._binance.BinanceStreamCodec`). USD-M has no book
    checksum.

    **Resync from outside** (:meth:`~adapters._binance.BinanceStreamCodec.resync`): the
    symbol's book and buffer are dropped and it restarts at step 1 with a FetchSnapshot
    queued at once (``book_resync``). A snapshot that comes back before any diff is
    buffered is published alone, and the first live diff must straddle it by step 3;
    unless it is not past the last diff seen before the resync (``lastUpdateId <= u``),
    which the next diff (``U > u``) could not straddle: then it is dropped, and the next
    diff starts step 1 again (a quiet book's REST answer stays at that ``u``: no refetch
    loop).
    :attr:`~adapters._binance.BinanceStreamCodec.synced` is true while every book on the
    connection is past step 2 (always, on a ``/market`` connection).

    **Other frames.** ``{"result": null, "id": n}`` acks are dropped; ``{"code", "msg"}``
    errors (bare or under ``"error"``) become ``venue_error`` statuses; ``serverShutdown``
    (documented for spot; accepted here too, bare or as ``!serverShutdown``) becomes a
    ``server_shutdown`` status and a :class:`~relay.codec.Reconnect`. Streams and events the
    codec did not subscribe (kline, 24h tickers, other symbols on a shared replay, the
    other route's data types) are ignored. Anything undecodable, including a known stream
    whose payload has the wrong shape or types, counts ``counters.parse_errors`` and
    becomes a ``parse_error`` status.
    """

    max_send_rate = 8.0  # USD-M allows 10 client messages/s per connection; keep a margin
    ping_interval = None  # the server pings every 3 minutes; the WebSocket library answers

    def __init__(
        self,
        venue: str,
        route: Route,
        subscriptions: Sequence[Subscription],
        endpoints: Endpoints,
        *,
        max_buffered_diffs: int = MAX_BUFFERED_DIFFS,
    ) -> None:
        """One ``route`` connection for the ``route`` data types of ``subscriptions``
        (distinct native symbols, at most :data:`MAX_STREAMS_PER_CONNECTION` streams)."""
        if route not in (PUBLIC, MARKET):
            raise ValueError(f"{venue}: unknown USD-M route {route!r}")
        states = [_Symbol(sub, route, endpoints.rest_url) for sub in subscriptions]
        super().__init__(venue, route_url(endpoints.ws_url, route), states)
        self.route: Route = route
        self.max_buffered_diffs = max_buffered_diffs
        # Combined frames: stream-name suffix → handler. Bare frames: event type → handler.
        self._by_stream = {
            "depth@100ms": self._on_depth,
            "depth@500ms": self._on_depth,
            "depth": self._on_depth,
            "bookTicker": self._on_book_ticker,
            "aggTrade": self._on_agg_trade,
            "trade": self._on_trade,
            "markPrice@1s": self._on_mark_price,
            "markPrice": self._on_mark_price,
            "forceOrder": self._on_force_order,
        }
        self._by_event = {
            "depthUpdate": self._on_depth,
            "bookTicker": self._on_book_ticker,
            "aggTrade": self._on_agg_trade,
            "trade": self._on_trade,
            "markPriceUpdate": self._on_mark_price,
            "forceOrder": self._on_force_order,
        }

    # -- frames -------------------------------------------------------------------------------

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        self._now_ns = recv_ns
        env = envelope_decoder.decode(data)
        stream = env.stream
        if stream is not None:
            kind = stream.partition("@")[2]
            handler = self._by_stream.get(kind)
            if handler is None:
                if stream == "!serverShutdown":
                    return self._server_shutdown(env.data, recv_ns)
                return []  # kline and other streams we did not ask for (a shared replay)
            payload = env.data
            if payload is msgspec.UNSET:
                return [self._parse_error(f"{stream}: no data", recv_ns)]
            try:
                return handler(payload, recv_ns)
            except msgspec.DecodeError as exc:
                return [self._parse_error(f"{stream}: {exc}", recv_ns)]
        control = self._on_control(env, recv_ns)
        if control is not None:
            return control
        event = env.event
        if event is not None:
            # A bare event, as a raw /ws connection delivers it.
            handler = self._by_event.get(event)
            if handler is None:
                return []  # kline, 24hrTicker, ...: not published
            try:
                return handler(data, recv_ns)
            except msgspec.DecodeError as exc:
                return [self._parse_error(f"{event}: {exc}", recv_ns)]
        return [self._parse_error("unrecognized frame", recv_ns)]

    def _lookup(self, native: str) -> _Symbol | None:
        state = self._by_native.get(native)
        if state is None and not native.isupper():
            state = self._by_native.get(native.upper())
        return state

    # -- trades, tickers, mark price, liquidations ---------------------------------------------

    def _on_trade(self, payload: msgspec.Raw | str | bytes, recv_ns: int) -> list[MarketEvent]:
        return self._trade(_trade_decoder.decode(payload), "", recv_ns)

    def _on_agg_trade(self, payload: msgspec.Raw | str | bytes, recv_ns: int) -> list[MarketEvent]:
        # Aggregate ids are a separate id space from trade ids; the "a" keeps the two from
        # ever sharing a message id.
        return self._trade(_agg_trade_decoder.decode(payload), "a", recv_ns)

    def _trade(self, t: _Trade | _AggTrade, id_prefix: str, recv_ns: int) -> list[MarketEvent]:
        state = self._lookup(t.symbol)
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
                size=scale_size(t.qty, state.contract_size),
                side="sell" if t.buyer_is_maker else "buy",
            )
        ]

    def _on_book_ticker(
        self, payload: msgspec.Raw | str | bytes, recv_ns: int
    ) -> list[MarketEvent]:
        q = _book_ticker_decoder.decode(payload)
        state = self._lookup(q.symbol)
        if state is None or not state.ticker:
            return []
        time = q.time if q.time is not None else q.event_time
        cs = state.contract_size
        return [
            Ticker(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=None if time is None else time * NS_PER_MS,
                ts_recv=recv_ns,
                bid_price=q.bid_price,
                bid_size=scale_size(q.bid_size, cs),
                ask_price=q.ask_price,
                ask_size=scale_size(q.ask_size, cs),
                sequence=q.update_id,
            )
        ]

    def _on_mark_price(self, payload: msgspec.Raw | str | bytes, recv_ns: int) -> list[MarketEvent]:
        m = _mark_price_decoder.decode(payload)
        state = self._lookup(m.symbol)
        if state is None:
            return []
        ts_venue = m.event_time * NS_PER_MS
        index = m.index or None
        out: list[MarketEvent] = []
        # No rate, no funding event: contracts without funding send an empty "r".
        if state.funding and m.rate:
            out.append(
                FundingRate(
                    venue=self.venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    rate=m.rate,
                    next_funding_ts=m.next_funding * NS_PER_MS if m.next_funding else None,
                    mark_price=m.mark,
                    index_price=index,
                )
            )
        if state.mark:
            out.append(
                MarkPrice(
                    venue=self.venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    mark_price=m.mark,
                    index_price=index,
                )
            )
        return out

    def _on_force_order(
        self, payload: msgspec.Raw | str | bytes, recv_ns: int
    ) -> list[MarketEvent]:
        o = _force_order_decoder.decode(payload).order
        state = self._lookup(o.symbol)
        if state is None or not state.liquidation:
            return []
        # What was liquidated: the filled quantity at its average price; an order not (yet)
        # filled reports zeros there, so its order quantity and price stand in.
        filled = Decimal(o.filled) != 0
        price = o.avg_price if filled and Decimal(o.avg_price) != 0 else o.price
        return [
            Liquidation(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=o.time * NS_PER_MS,
                ts_recv=recv_ns,
                # A SELL liquidation order closes a long position: the long was liquidated.
                side="buy" if o.side == "SELL" else "sell",
                price=price,
                size=scale_size(o.filled if filled else o.qty, state.contract_size),
            )
        ]

    # -- order book ---------------------------------------------------------------------------

    def _on_depth(self, payload: msgspec.Raw | str | bytes, recv_ns: int) -> list[MarketEvent]:
        diff = _depth_decoder.decode(payload)
        state = self._lookup(diff.symbol)
        if state is None or not state.depth:
            return []
        return self._on_diff(state, diff, recv_ns)

    def _buffer(
        self, state: _Symbol, diff: _DepthDiff, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        """Buffer a diff while waiting for a snapshot, keeping the buffer a ``pu`` chain."""
        buffer = state.buffer
        if buffer:
            prev_u = buffer[-1].diff.last_id
            if diff.prev_id != prev_u:
                if diff.last_id <= prev_u:
                    self.counters.stale_deltas_dropped += 1
                    return
                # A snapshot can only bridge to the first buffered diff, so a hole inside
                # the buffer makes all of it useless: restart from this diff.
                self._gap(state, diff, recv_ns, out, f"expected pu={prev_u}")
                return
        if len(buffer) >= self.max_buffered_diffs:
            detail = f"{len(buffer)} diffs buffered and still no snapshot"
            self._resync(state, diff, recv_ns, out, detail)
            return
        buffer.append(Buffered(diff, recv_ns))

    def _apply(
        self, state: _Symbol, diff: _DepthDiff, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        """Check one diff against the synced book, apply it and publish it (steps 3-4)."""
        book_id = state.book_id
        if state.from_snapshot:
            if diff.last_id < book_id:
                self.counters.stale_deltas_dropped += 1
                return
            if diff.first_id > book_id:
                self._gap(state, diff, recv_ns, out, f"expected U <= lastUpdateId={book_id}")
                return
        elif diff.prev_id != book_id:
            if diff.last_id <= book_id:
                self.counters.stale_deltas_dropped += 1
                return
            self._gap(state, diff, recv_ns, out, f"expected pu={book_id}")
            return
        book = state.book
        book.apply_delta(diff.book_bids, diff.book_asks)
        if crossing := book.crossing():
            detail = f"book crossed after U={diff.first_id} u={diff.last_id}: {crossing}; resyncing"
            self._resync(state, diff, recv_ns, out, detail)
            return
        time = diff.time if diff.time is not None else diff.event_time
        out.append(
            BookDelta(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=time * NS_PER_MS,
                ts_recv=recv_ns,
                first_sequence=diff.first_id,
                sequence=diff.last_id,
                prev_sequence=book_id,
                bids=scale_levels(diff.bids, state.contract_size),
                asks=scale_levels(diff.asks, state.contract_size),
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
        expected: str,
    ) -> None:
        detail = f"{expected}, got U={diff.first_id} u={diff.last_id} pu={diff.prev_id}"
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
        skip = 0
        while skip < len(buffered) and buffered[skip].diff.last_id < last_id:
            skip += 1
        if skip < len(buffered) and buffered[skip].diff.first_id > last_id:
            first = buffered[skip].diff
            detail = (
                f"snapshot lastUpdateId={last_id} older than buffered U={first.first_id} "
                f"u={first.last_id}; fetching again"
            )
            out.append(self._book_resync(state, detail, recv_ns))
            self._fetch(state)
            return out
        if not buffered and last_id <= state.seen_id:
            # Right after resync(), before any diff: the next diff follows the last one seen
            # (its U > seen u), so it could not straddle this snapshot.
            detail = f"snapshot lastUpdateId={last_id} not past the last diff seen"
            return [self._unbridgeable(state, detail, recv_ns)]
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
                ts_venue=None if snapshot.time is None else snapshot.time * NS_PER_MS,
                ts_recv=recv_ns,
                sequence=last_id,
                # The venue's own text, as for every delta; the book only checked it.
                bids=scale_levels(snapshot.bids, state.contract_size),
                asks=scale_levels(snapshot.asks, state.contract_size),
            )
        )
        # Buffered deltas keep the receive time of their own frame.
        for item in buffered[skip:]:
            if state.phase == SYNCED:
                self._apply(state, item.diff, item.recv_ns, out)
            else:  # resynced part way (gap or crossed): the rest waits for the next snapshot
                self._buffer(state, item.diff, item.recv_ns, out)
        if state.phase == SYNCED:
            detail = f"snapshot lastUpdateId={last_id}, book at u={state.book_id}"
            out.append(self._symbol_status(state, "book_synced", detail, recv_ns))
        return out


# ---------------------------------------------------------------------------------------------
# The adapter

_PUBLIC_TYPES: Final = frozenset({DataType.L2_ORDERBOOK, DataType.TICKER})
_MARKET_TYPES: Final = frozenset(
    {DataType.TRADE, DataType.FUNDING_RATE, DataType.MARK_PRICE, DataType.LIQUIDATION}
)
_SUPPORTED: Final = _PUBLIC_TYPES | _MARKET_TYPES


def _stream_count(types: frozenset[DataType], route: Route) -> int:
    """How many streams ``types`` take on ``route`` (funding and mark share ``@markPrice``)."""
    if route == PUBLIC:
        return len(types & _PUBLIC_TYPES)
    market = types & _MARKET_TYPES
    shared = DataType.FUNDING_RATE in market and DataType.MARK_PRICE in market
    return len(market) - shared


def make_codecs(
    venue: str,
    subscriptions: Sequence[Subscription],
    endpoints: Endpoints,
    *,
    credentials: Mapping[str, str] = {},  # public streams need none
) -> list[Codec]:
    """Codecs for ``/public`` connections first, then ``/market`` ones, each of at most
    1024 streams.

    Subscriptions naming the same native symbol (in any case) are merged. Per route, all of
    a symbol's streams go to one connection (its book and ticker share a codec; its trades,
    funding, mark price and liquidations share another), and symbols are packed onto
    connections in the order given.
    """

    def key(sub: Subscription) -> str:
        check_data_types(venue, "binance USD-M", sub, _SUPPORTED)
        if sub.contract_size is not None and not (
            sub.contract_size.is_finite() and sub.contract_size > 0
        ):
            raise ValueError(
                f"{venue}: contract size of {sub.native_symbol} must be a positive number"
            )
        return sub.native_symbol.upper()

    merged = merge_subscriptions(venue, subscriptions, key)
    codecs: list[Codec] = []
    for route in (PUBLIC, MARKET):
        shards = pack(
            merged.values(),
            lambda sub, route=route: _stream_count(sub.data_types, route),
            MAX_STREAMS_PER_CONNECTION,
        )
        codecs += [BinanceUsdmCodec(venue, route, shard, endpoints) for shard in shards]
    return codecs


# ---------------------------------------------------------------------------------------------
# Instrument list


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """``<rest_url>/fapi/v1/exchangeInfo``: all USD-M contracts in one answer."""
    return [f"{endpoints.rest_url.rstrip('/')}/fapi/v1/exchangeInfo"]


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The contracts of a USD-M ``exchangeInfo`` body (see the module docstring)."""
    out: list[Instrument] = []
    for s in exchange_info("binance_usdm", url, body).symbols:
        kind: Kind
        if (s.contract_type or "").endswith("PERPETUAL"):  # PERPETUAL, TRADIFI_PERPETUAL
            kind, expiry = "perp", None
        elif s.delivery_date is not None:
            kind, expiry = "future", expiry_code(s.delivery_date)
        else:
            raise ValueError(f"binance_usdm: {url}: {s.symbol} is neither perpetual nor dated")
        out.append(
            Instrument(
                native_symbol=s.symbol,
                symbol=canonical(s.base_asset, s.quote_asset, kind, expiry),
                kind=kind,
                base=s.base_asset,
                quote=s.quote_asset,
                price_increment=s.tick_size(),
                size_increment=s.step_size(),
                contract_size=None,
                active=s.status == "TRADING",
            )
        )
    return out


INSTRUMENTS: Final = InstrumentSource(
    urls=instrument_urls,
    parse=parse_instruments,
    # The codec upper-cases symbols (streams are their lower-case form).
    native_key=lambda sub: sub.native_symbol.upper(),
)


ADAPTER = Adapter(
    name="binance_usdm",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(
        ws_url="wss://fstream.binance.com", rest_url="https://fapi.binance.com"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    instruments=INSTRUMENTS,
)
