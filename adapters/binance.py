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
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from relay.book import Level as BookLevel
from relay.book import OrderBook, parse_levels
from relay.codec import (
    Adapter,
    Codec,
    Endpoints,
    FetchSnapshot,
    Reconnect,
    SendFrame,
    Subscription,
)
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    Level,
    MarketEvent,
    Ticker,
    Trade,
    VenueStatus,
    check_num,
)

__all__ = [
    "ADAPTER",
    "MAX_BUFFERED_DIFFS",
    "MAX_PARAMS_PER_SUBSCRIBE",
    "MAX_STREAMS_PER_CONNECTION",
    "QUOTE_ASSETS",
    "BinanceCodec",
    "canonical_symbol",
    "make_codecs",
]

MAX_STREAMS_PER_CONNECTION: Final = 1024
"""Binance's limit of streams on one connection."""
MAX_PARAMS_PER_SUBSCRIBE: Final = 200
"""Streams per ``SUBSCRIBE`` frame: 1024 streams take 6 frames, about 5 kB each."""
MAX_BUFFERED_DIFFS: Final = 10_000
"""Depth diffs kept per symbol while waiting for a snapshot; more means a resync."""
SNAPSHOT_LIMIT: Final = 1000
"""Levels per side asked of ``/api/v3/depth`` (request weight 10; 5000 would cost 50)."""

_MS: Final = 1_000_000  # Binance times are epoch milliseconds; events carry nanoseconds.
_DETAIL_MAX: Final = 200  # keep status details short: they go into every status message

# ---------------------------------------------------------------------------------------------
# Symbols

QUOTE_ASSETS: Final[tuple[str, ...]] = (
    # Stablecoins
    "USDT", "USDC", "FDUSD", "TUSD", "BUSD", "USDP", "PAX", "DAI", "AEUR", "EURI",
    # Crypto quotes
    "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE",
    # Fiat and fiat tokens
    "EUR", "GBP", "AUD", "TRY", "BRL", "JPY", "RUB", "UAH", "NGN", "ZAR", "PLN", "RON",
    "ARS", "MXN", "COP", "CZK", "IDRT", "BIDR", "BKRW", "BVND",
)  # fmt: skip
"""Quote assets Binance spot lists symbols against, matched longest first."""

_QUOTES_LONGEST_FIRST = sorted(QUOTE_ASSETS, key=len, reverse=True)


def canonical_symbol(native: str) -> str | None:
    """``BTCUSDT`` → ``BTC-USDT``: split off the longest known quote asset suffix.

    Returns ``None`` when no quote asset in :data:`QUOTE_ASSETS` ends the symbol (or it is
    nothing but a quote asset). Binance symbols have no delimiter, so this is a heuristic;
    a later issue replaces it with the ``baseAsset``/``quoteAsset`` of
    ``GET /api/v3/exchangeInfo``, which is the only authoritative split.
    """
    upper = native.upper()
    for quote in _QUOTES_LONGEST_FIRST:
        if upper.endswith(quote) and len(upper) > len(quote):
            return f"{upper[: -len(quote)]}-{quote}"
    return None


# ---------------------------------------------------------------------------------------------
# Wire formats. Only the fields the codec uses are declared; msgspec skips the rest.
# ``gc=False``: these structs never take part in reference cycles, and skipping GC tracking
# makes decoding cheaper.


class _Error(msgspec.Struct, gc=False):
    code: int | str | None = None
    msg: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    """Any frame: a combined-stream wrapper, a request ack, an error or a bare event."""

    stream: str | None = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    id: int | str | None = None
    # The documented error shape is bare ``{"code", "msg"}``; the server has also been seen
    # to nest it as ``{"error": {...}}``. Both are accepted.
    code: int | str | None = None
    msg: str | None = None
    error: _Error | None = None
    event: str | None = msgspec.field(default=None, name="e")
    event_time: int | None = msgspec.field(default=None, name="E")


class _EventTime(msgspec.Struct, gc=False):
    event_time: int | None = msgspec.field(default=None, name="E")


# Prices and sizes stay the venue's text (published as sent); ``__post_init__`` checks that
# the text is a number (msgspec turns its ValueError into a decode error) and gives the
# book its Decimal levels.


class _TradeFields(msgspec.Struct, gc=False):
    price: str = msgspec.field(name="p")
    qty: str = msgspec.field(name="q")
    time: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")

    def __post_init__(self) -> None:
        check_num(self.price)
        check_num(self.qty)


class _Trade(_TradeFields, gc=False):
    id: int = msgspec.field(name="t")


class _AggTrade(_TradeFields, gc=False):
    id: int = msgspec.field(name="a")


class _BookTicker(msgspec.Struct, gc=False):
    update_id: int = msgspec.field(name="u")
    bid_price: str = msgspec.field(name="b")
    bid_size: str = msgspec.field(name="B")
    ask_price: str = msgspec.field(name="a")
    ask_size: str = msgspec.field(name="A")

    def __post_init__(self) -> None:
        for text in (self.bid_price, self.bid_size, self.ask_price, self.ask_size):
            check_num(text)


class _DepthDiff(msgspec.Struct, gc=False):
    event_time: int = msgspec.field(name="E")
    first_id: int = msgspec.field(name="U")
    last_id: int = msgspec.field(name="u")
    bids: list[Level] = msgspec.field(name="b")
    asks: list[Level] = msgspec.field(name="a")
    # Not in the JSON (the names cannot occur there); filled from bids/asks after decoding.
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__book_asks")

    def __post_init__(self) -> None:
        self.book_bids = parse_levels(self.bids)
        self.book_asks = parse_levels(self.asks)


class _DepthSnapshot(msgspec.Struct, gc=False):
    last_update_id: int = msgspec.field(name="lastUpdateId")
    bids: list[Level]
    asks: list[Level]
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__book_asks")

    def __post_init__(self) -> None:
        self.book_bids = parse_levels(self.bids)
        self.book_asks = parse_levels(self.asks)


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_event_time_decoder = msgspec.json.Decoder(_EventTime)
_trade_decoder = msgspec.json.Decoder(_Trade)
_agg_trade_decoder = msgspec.json.Decoder(_AggTrade)
_book_ticker_decoder = msgspec.json.Decoder(_BookTicker)
_depth_decoder = msgspec.json.Decoder(_DepthDiff)
_snapshot_decoder = msgspec.json.Decoder(_DepthSnapshot)
_error_decoder = msgspec.json.Decoder(_Error)
_request_encoder = msgspec.json.Encoder()

# ---------------------------------------------------------------------------------------------
# Per-symbol state

# Book sync phases of one symbol.
_IDLE: Final = 0  # no diff seen since connect: nothing buffered, no snapshot asked for
_BUFFERING: Final = 1  # diffs buffered, a snapshot asked for (or about to be re-asked)
_SYNCED: Final = 2  # snapshot applied; diffs are checked, applied and published


class _Buffered(msgspec.Struct, gc=False):
    diff: _DepthDiff
    recv_ns: int


class _Symbol:
    """Everything the codec knows about one subscribed symbol."""

    __slots__ = (
        "book",
        "book_id",
        "buffer",
        "depth",
        "fetching",
        "from_snapshot",
        "native",
        "phase",
        "snapshot_url",
        "stream",
        "symbol",
        "ticker",
        "trade",
    )

    def __init__(self, sub: Subscription, rest_url: str) -> None:
        self.native = sub.native_symbol.upper()
        """Binance's own spelling (upper case), stamped on events and used as snapshot key."""
        self.symbol = sub.symbol
        self.stream = self.native.lower()
        self.trade = DataType.TRADE in sub.data_types
        self.ticker = DataType.TICKER in sub.data_types
        self.depth = DataType.L2_ORDERBOOK in sub.data_types
        self.snapshot_url = (
            f"{rest_url.rstrip('/')}/api/v3/depth?symbol={self.native}&limit={SNAPSHOT_LIMIT}"
        )
        self.book = OrderBook()
        self.phase = _IDLE
        self.buffer: list[_Buffered] = []
        self.fetching = False
        """A FetchSnapshot is out and neither answer nor failure has come back yet."""
        self.book_id = 0
        """The ``u`` of the last applied diff, or the snapshot's ``lastUpdateId``."""
        self.from_snapshot = False
        """No diff applied since the snapshot: the next may overlap ``lastUpdateId``."""

    def streams(self) -> list[str]:
        out = []
        if self.depth:
            out.append(f"{self.stream}@depth@100ms")
        if self.ticker:
            out.append(f"{self.stream}@bookTicker")
        if self.trade:
            out.append(f"{self.stream}@trade")
        return out

    def reset(self) -> None:
        """Forget the book and everything pending (new connection)."""
        self.book.clear()
        self.phase = _IDLE
        self.buffer = []
        self.fetching = False
        self.book_id = 0
        self.from_snapshot = False


# ---------------------------------------------------------------------------------------------
# The codec


class BinanceCodec(Codec):
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
    FetchSnapshot, unless one is still outstanding: its answer is checked against the
    buffer on arrival like any other. A snapshot body that is a venue error or unreadable
    is reported as ``venue_error`` / ``parse_error`` and fetched again.

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
    max_lifetime = 23.5 * 3600  # Binance closes every connection at 24 h

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
        super().__init__()
        self.venue = venue
        self.url = endpoints.ws_url
        self.max_buffered_diffs = max_buffered_diffs
        self._symbols: dict[str, _Symbol] = {}  # by lower-case stream prefix
        self._by_native: dict[str, _Symbol] = {}  # by upper-case native symbol (snapshot key)
        for sub in subscriptions:
            state = _Symbol(sub, endpoints.rest_url)
            if state.stream in self._symbols:
                raise ValueError(f"{venue}: {sub.native_symbol} subscribed twice")
            self._symbols[state.stream] = state
            self._by_native[state.native] = state
        self.streams: list[str] = [s for state in self._symbols.values() for s in state.streams()]
        """The stream names this connection subscribes to."""
        if len(self.streams) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(
                f"{venue}: {len(self.streams)} streams on one connection "
                f"(Binance allows {MAX_STREAMS_PER_CONNECTION})"
            )
        self._now_ns = 0
        """The latest time the shell gave us; stamps statuses from :meth:`snapshot_failed`."""
        # Stream-name suffix → payload handler: the first thing looked up for every frame.
        self._handlers = {
            "depth@100ms": self._on_depth,
            "depth": self._on_depth,
            "bookTicker": self._on_book_ticker,
            "trade": self._on_trade,
            "aggTrade": self._on_agg_trade,
        }

    # -- connection ---------------------------------------------------------------------------

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Reset every book and queue the ``SUBSCRIBE`` frames (ids 1, 2, … per connection)."""
        self._now_ns = now_ns
        for state in self._symbols.values():
            state.reset()
        streams = self.streams
        for n, start in enumerate(range(0, len(streams), MAX_PARAMS_PER_SUBSCRIBE), 1):
            params = streams[start : start + MAX_PARAMS_PER_SUBSCRIBE]
            frame = {"method": "SUBSCRIBE", "params": params, "id": n}
            self._actions.append(SendFrame(_request_encoder.encode(frame).decode()))
        return []

    # -- frames -------------------------------------------------------------------------------

    def receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        """Decode one frame. Never raises: undecodable frames become ``parse_error``."""
        self.counters.frames += 1
        self._now_ns = recv_ns
        try:
            return self._receive(data, recv_ns)
        except msgspec.DecodeError as exc:  # includes msgspec.ValidationError
            return [self._parse_error(f"bad frame: {exc}", recv_ns)]
        except Exception as exc:
            # Not expected: a bug of ours. The contract says never raise, so report it
            # the same way rather than kill the connection.
            return [self._parse_error(f"internal error: {type(exc).__name__}: {exc}", recv_ns)]

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        env = _envelope_decoder.decode(data)
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
        # Not a stream payload: a request ack, an error, or a bare event.
        if env.result is not msgspec.UNSET:
            # {"result": null, "id": n} acknowledges SUBSCRIBE n; non-null results answer
            # queries we never send. Errors come with "code"/"error" instead of "result".
            return []
        error = env.error
        if env.code is not None or error is not None:
            code = env.code if error is None else error.code
            msg = env.msg if error is None else error.msg
            detail = f"code {code}: {msg} (request id {env.id})"
            return [self._status("venue_error", detail[:_DETAIL_MAX], recv_ns)]
        if env.event == "serverShutdown":
            return self._shutdown_events(env.event_time, recv_ns)
        return [self._parse_error("unrecognized frame", recv_ns)]

    def _server_shutdown(
        self, payload: msgspec.Raw | msgspec.UnsetType, recv_ns: int
    ) -> list[MarketEvent]:
        event_time = None
        # The notice counts even if its payload is odd; only its time is lost then.
        if payload is not msgspec.UNSET:
            with contextlib.suppress(msgspec.DecodeError):
                event_time = _event_time_decoder.decode(payload).event_time
        return self._shutdown_events(event_time, recv_ns)

    def _shutdown_events(self, event_time: int | None, recv_ns: int) -> list[MarketEvent]:
        self._actions.append(Reconnect("server shutdown"))
        ts_venue = None if event_time is None else event_time * _MS
        return [
            VenueStatus(
                venue=self.venue,
                symbol="",
                native_symbol="",
                ts_venue=ts_venue,
                ts_recv=recv_ns,
                kind="server_shutdown",
                detail="venue announced a shutdown; reconnecting",
            )
        ]

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
                ts_venue=t.time * _MS,
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
        out: list[MarketEvent] = []
        phase = state.phase
        if phase == _SYNCED:
            self._apply(state, diff, recv_ns, out)
        elif phase == _BUFFERING:
            self._buffer(state, diff, recv_ns, out)
        else:
            state.buffer.append(_Buffered(diff, recv_ns))
            state.phase = _BUFFERING
            self._fetch(state)
        return out

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
        buffer.append(_Buffered(diff, recv_ns))

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
        if book.is_crossed():
            bid, ask = book.best_bid(), book.best_ask()
            assert bid is not None and ask is not None  # a crossed book has both sides
            detail = (
                f"book crossed after U={first_id} u={diff.last_id}: "
                f"bid {bid[0]} >= ask {ask[0]}; resyncing"
            )
            self._resync(state, diff, recv_ns, out, detail)
            return
        out.append(
            BookDelta(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=diff.event_time * _MS,
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
        self.counters.book_gaps += 1
        detail = f"expected U={prev_u + 1}, got U={diff.first_id} u={diff.last_id}"
        out.append(self._book_status(state, "book_gap", detail, recv_ns))
        self._resync(state, diff, recv_ns, out, f"sequence gap: {detail}")

    def _resync(
        self,
        state: _Symbol,
        first: _DepthDiff,
        recv_ns: int,
        out: list[MarketEvent],
        detail: str,
    ) -> None:
        """Discard the symbol's book, restart buffering at ``first`` and ask for a snapshot."""
        self.counters.book_resyncs += 1
        out.append(self._book_status(state, "book_resync", detail, recv_ns))
        state.book.clear()
        state.buffer = [_Buffered(first, recv_ns)]
        state.phase = _BUFFERING
        state.from_snapshot = False
        # A snapshot already on its way is still useful: it is checked against the new
        # first buffered diff on arrival (and fetched again if too old).
        if not state.fetching:
            self._fetch(state)

    def _fetch(self, state: _Symbol) -> None:
        state.fetching = True
        self._actions.append(FetchSnapshot(key=state.native, url=state.snapshot_url))

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_received(self, key: str, body: bytes, recv_ns: int) -> list[MarketEvent]:
        """Apply the REST depth snapshot for ``key`` (step 2); never raises."""
        self._now_ns = recv_ns
        try:
            return self._snapshot_received(key, body, recv_ns)
        except Exception as exc:  # a bug of ours; see receive()
            return [self._parse_error(f"internal error: {type(exc).__name__}: {exc}", recv_ns)]

    def _snapshot_received(self, key: str, body: bytes, recv_ns: int) -> list[MarketEvent]:
        state = self._by_native.get(key.upper())
        if state is None:
            return []
        state.fetching = False
        if state.phase != _BUFFERING:
            return []  # an answer to a request from before a reconnect, or a duplicate
        try:
            snapshot = _snapshot_decoder.decode(body)
        except msgspec.DecodeError as exc:
            return [self._bad_snapshot(state, body, str(exc), recv_ns)]
        out: list[MarketEvent] = []
        last_id = snapshot.last_update_id
        buffered = state.buffer
        first_id = buffered[0].diff.first_id
        if last_id + 1 < first_id:
            self.counters.book_resyncs += 1
            detail = (
                f"snapshot lastUpdateId={last_id} older than first buffered U={first_id}; "
                "fetching again"
            )
            out.append(self._book_status(state, "book_resync", detail, recv_ns))
            self._fetch(state)
            return out
        skip = 0
        while skip < len(buffered) and buffered[skip].diff.last_id <= last_id:
            skip += 1
        book = state.book
        book.apply_snapshot(snapshot.book_bids, snapshot.book_asks)
        if book.is_crossed():
            book.clear()
            self.counters.book_resyncs += 1
            detail = f"snapshot lastUpdateId={last_id} is crossed; fetching again"
            out.append(self._book_status(state, "book_resync", detail, recv_ns))
            self._fetch(state)
            return out
        self.counters.stale_deltas_dropped += skip
        state.buffer = []
        state.phase = _SYNCED
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
            if state.phase == _SYNCED:
                self._apply(state, item.diff, item.recv_ns, out)
            else:  # a crossed book resynced part way: the rest waits for the next snapshot
                self._buffer(state, item.diff, item.recv_ns, out)
        if state.phase == _SYNCED:
            detail = f"snapshot lastUpdateId={last_id}, book at u={state.book_id}"
            out.append(self._book_status(state, "book_synced", detail, recv_ns))
        return out

    def _bad_snapshot(self, state: _Symbol, body: bytes, reason: str, recv_ns: int) -> VenueStatus:
        """An unusable snapshot body: report it and ask again."""
        self._fetch(state)
        try:
            error = _error_decoder.decode(body)
        except msgspec.DecodeError:
            error = _Error()
        if error.code is not None:
            detail = f"depth snapshot refused: code {error.code}: {error.msg}"
            return self._book_status(state, "venue_error", detail, recv_ns)
        self.counters.parse_errors += 1
        return self._book_status(state, "parse_error", f"depth snapshot: {reason}", recv_ns)

    def snapshot_failed(self, key: str, reason: str) -> list[MarketEvent]:
        """The snapshot fetch failed: ask again (the shell paces retries) and report it."""
        state = self._by_native.get(key.upper())
        if state is None:
            return []
        state.fetching = False
        if state.phase != _BUFFERING:
            return []
        self.counters.book_resyncs += 1
        self._fetch(state)
        # No time comes with this call: stamp the status with the latest time we were given.
        detail = f"depth snapshot failed: {reason}; fetching again"
        return [self._book_status(state, "book_resync", detail, self._now_ns)]

    # -- statuses -----------------------------------------------------------------------------

    def _book_status(self, state: _Symbol, kind: str, detail: str, recv_ns: int) -> VenueStatus:
        return VenueStatus(
            venue=self.venue,
            symbol=state.symbol,
            native_symbol=state.native,
            ts_venue=None,
            ts_recv=recv_ns,
            kind=kind,
            detail=detail[:_DETAIL_MAX],
        )

    def _status(self, kind: str, detail: str, recv_ns: int) -> VenueStatus:
        return VenueStatus(
            venue=self.venue,
            symbol="",
            native_symbol="",
            ts_venue=None,
            ts_recv=recv_ns,
            kind=kind,
            detail=detail[:_DETAIL_MAX],
        )

    def _parse_error(self, detail: str, recv_ns: int) -> VenueStatus:
        self.counters.parse_errors += 1
        return self._status("parse_error", detail, recv_ns)


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
    merged: dict[str, Subscription] = {}
    for sub in subscriptions:
        unsupported = sub.data_types - _SUPPORTED
        if unsupported:
            names = ", ".join(sorted(unsupported))
            raise ValueError(f"{venue}: binance spot has no {names} ({sub.native_symbol})")
        key = sub.native_symbol.upper()
        seen = merged.get(key)
        if seen is None:
            merged[key] = sub
        elif seen.symbol != sub.symbol:
            raise ValueError(
                f"{venue}: {sub.native_symbol} mapped to both {seen.symbol} and {sub.symbol}"
            )
        else:
            merged[key] = Subscription(
                seen.native_symbol, seen.symbol, seen.data_types | sub.data_types
            )
    shards: list[list[Subscription]] = []
    used = MAX_STREAMS_PER_CONNECTION  # forces a first shard
    for sub in merged.values():
        n = len(sub.data_types)
        if n == 0:
            continue
        if used + n > MAX_STREAMS_PER_CONNECTION:
            shards.append([])
            used = 0
        shards[-1].append(sub)
        used += n
    return [BinanceCodec(venue, shard, endpoints) for shard in shards]


ADAPTER = Adapter(
    name="binance",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(
        ws_url="wss://stream.binance.com:9443/stream", rest_url="https://api.binance.com"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
)
