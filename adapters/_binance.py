"""What the Binance spot (:mod:`adapters.binance`) and USDⓈ-M (:mod:`adapters.binance_usdm`)
codecs share: one protocol, two markets.

Both speak Binance's combined-stream protocol (``SUBSCRIBE`` frames with ids 1, 2, …;
``{"stream", "data"}`` wrappers; ``{"result": null, "id"}`` acks; ``{"code", "msg"}``
errors, bare or under ``"error"``; ``serverShutdown`` notices) and keep each book the same
way: depth diffs are buffered until a REST depth snapshot arrives (:class:`DepthState`).
Here are the wire formats of those frames, the pair-splitting of symbols, and
:class:`BinanceStreamCodec`, the codec base with everything but the market's own rules.
Those stay in the venue modules: the streams, the payloads, how a diff chains to the one
before (``U == u + 1`` on spot, ``pu`` on USD-M) and how a snapshot bridges to the buffer.

Both markets also list their instruments the same way, in ``exchangeInfo``
(:func:`exchange_info` reads it; spot ``/api/v3/exchangeInfo``, USD-M
``/fapi/v1/exchangeInfo``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterable
from typing import Any, Final, Generic, Protocol, TypeVar

import msgspec

from adapters._common import EpochMs, chunks, split_quote
from relay.book import OrderBook
from relay.codec import Codec, FetchSnapshot, Reconnect, SendFrame, Subscription
from relay.events import MarketEvent, VenueStatus
from relay.instruments import decode
from relay.timestamps import NS_PER_MS

__all__ = [
    "BUFFERING",
    "IDLE",
    "MAX_BUFFERED_DIFFS",
    "MAX_PARAMS_PER_SUBSCRIBE",
    "MAX_STREAMS_PER_CONNECTION",
    "QUOTE_ASSETS",
    "SYNCED",
    "BinanceStreamCodec",
    "Buffered",
    "DepthState",
    "Envelope",
    "ExchangeInfo",
    "SymbolInfo",
    "exchange_info",
    "pair_symbol",
]

MAX_STREAMS_PER_CONNECTION: Final = 1024
"""Binance's limit of streams on one connection."""
MAX_PARAMS_PER_SUBSCRIBE: Final = 200
"""Streams per ``SUBSCRIBE`` frame: 1024 streams take 6 frames, about 5 kB each."""
MAX_BUFFERED_DIFFS: Final = 10_000
"""Depth diffs kept per symbol while waiting for a snapshot; more means a resync."""

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
"""Quote assets Binance lists symbols against, matched longest first."""

_QUOTES_LONGEST_FIRST: Final = sorted(QUOTE_ASSETS, key=len, reverse=True)


def pair_symbol(native: str) -> str | None:
    """``BTCUSDT`` → ``BTC-USDT``: split off the longest known quote asset suffix.

    Returns ``None`` when no quote asset in :data:`QUOTE_ASSETS` ends the symbol (or it is
    nothing but a quote asset). Binance symbols have no delimiter, so this is a heuristic;
    the ``baseAsset``/``quoteAsset`` of ``exchangeInfo`` is the only authoritative split.
    """
    split = split_quote(native.upper(), _QUOTES_LONGEST_FIRST)
    return None if split is None else f"{split[0]}-{split[1]}"


# ---------------------------------------------------------------------------------------------
# Wire formats of the frames both markets send. ``gc=False``: these structs never take part
# in reference cycles, and skipping GC tracking makes decoding cheaper.


class Error(msgspec.Struct, gc=False):
    code: int | str | None = None
    msg: str | None = None


class Envelope(msgspec.Struct, gc=False):
    """Any frame: a combined-stream wrapper, a request ack, an error or a bare event."""

    stream: str | None = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    id: int | str | None = None
    # The documented error shape is bare ``{"code", "msg"}``; the server has also been seen
    # to nest it as ``{"error": {...}}``. Both are accepted.
    code: int | str | None = None
    msg: str | None = None
    error: Error | None = None
    event: str | None = msgspec.field(default=None, name="e")
    event_time: EpochMs | None = msgspec.field(default=None, name="E")


class _EventTime(msgspec.Struct, gc=False):
    event_time: EpochMs | None = msgspec.field(default=None, name="E")


envelope_decoder: Final = msgspec.json.Decoder(Envelope)
_event_time_decoder: Final = msgspec.json.Decoder(_EventTime)
_error_decoder: Final = msgspec.json.Decoder(Error)
_request_encoder: Final = msgspec.json.Encoder()

# ---------------------------------------------------------------------------------------------
# Per-symbol book state

# Book sync phases of one symbol.
IDLE: Final = 0  # no diff seen since connect: nothing buffered, no snapshot asked for
BUFFERING: Final = 1  # diffs buffered, a snapshot asked for (or about to be re-asked)
SYNCED: Final = 2  # snapshot applied; diffs are checked, applied and published


class Diff(Protocol):
    """What the shared code reads of a market's decoded depth diff."""

    @property
    def last_id(self) -> int:
        """The diff's final update id ``u``."""
        ...


D = TypeVar("D", bound=Diff)
"""A market's decoded depth diff."""


class Buffered(msgspec.Struct, Generic[D], gc=False):
    """A depth diff waiting for its snapshot, with the receive time of its own frame."""

    diff: D
    recv_ns: int


class DepthState(Generic[D]):
    """What a codec knows about one subscribed symbol: its spelling and its book sync.

    A market's codec subclasses it with its data types, :meth:`streams` and what else its
    symbols need.
    """

    __slots__ = (
        "book",
        "book_id",
        "buffer",
        "depth",
        "fetching",
        "from_snapshot",
        "native",
        "phase",
        "seen_id",
        "snapshot_url",
        "stream",
        "symbol",
    )

    def __init__(self, sub: Subscription, *, depth: bool, depth_url: str, limit: int) -> None:
        """``depth``: whether the book is wanted; ``depth_url``: the REST depth endpoint,
        asked for ``limit`` levels a side."""
        self.native = sub.native_symbol.upper()
        """Binance's own spelling (upper case), stamped on events and the snapshot key."""
        self.symbol = sub.symbol
        self.stream = self.native.lower()
        """The stream-name prefix: ``btcusdt`` of ``btcusdt@depth@100ms``."""
        self.depth = depth
        self.snapshot_url = f"{depth_url}?symbol={self.native}&limit={limit}"
        self.book = OrderBook()
        self.phase = IDLE
        self.buffer: list[Buffered[D]] = []
        self.fetching = False
        """A FetchSnapshot is out and neither answer nor failure has come back yet."""
        self.book_id = 0
        """The ``u`` of the last applied diff, or the snapshot's ``lastUpdateId``."""
        self.from_snapshot = False
        """No diff applied since the snapshot: the next one must bridge ``lastUpdateId``."""
        self.seen_id = 0
        """After :meth:`~BinanceStreamCodec.resync`, which empties the buffer: the ``u`` of
        the last diff seen before it (0 if none). The next diff follows it, so a snapshot
        that arrives before any diff is buffered and is older than this cannot bridge."""

    def streams(self) -> list[str]:
        """The stream names to subscribe for this symbol."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the book and everything pending (new connection)."""
        self.book.clear()
        self.phase = IDLE
        self.buffer = []
        self.fetching = False
        self.book_id = 0
        self.from_snapshot = False
        self.seen_id = 0


S = TypeVar("S", bound=DepthState[Any])

# ---------------------------------------------------------------------------------------------
# The codec base


class BinanceStreamCodec(Codec, Generic[S]):
    """One combined-stream connection: subscribing, control frames and snapshot fetching.

    A market's codec decodes its streams in :meth:`_receive`, using :meth:`_on_control`
    for frames that are no stream payload and :meth:`_on_diff` for each decoded depth diff,
    and implements the market's chain rules in :meth:`_buffer` and :meth:`_apply` and its
    snapshot bridging in :meth:`_snapshot_received`. Every ``book_resync`` status comes with
    a new FetchSnapshot, unless one is still outstanding: its answer is checked against
    the buffer on arrival like any other. A snapshot body that is a venue error or
    unreadable is reported as ``venue_error`` / ``parse_error`` and fetched again.
    :meth:`resync` restarts one symbol's sync from outside the same way, with an empty
    buffer; :attr:`synced` tells whether every book is past its snapshot.
    """

    max_lifetime = 23.5 * 3600  # Binance closes every connection at 24 h

    def __init__(self, venue: str, url: str, states: Iterable[S]) -> None:
        """One connection for ``states`` (distinct symbols, at most
        :data:`MAX_STREAMS_PER_CONNECTION` streams in all)."""
        super().__init__()
        self.venue = venue
        self.url = url
        self._by_native: dict[str, S] = {}  # by upper-case native symbol (snapshot key)
        for state in states:
            if state.native in self._by_native:
                raise ValueError(f"{venue}: {state.native} subscribed twice")
            self._by_native[state.native] = state
        self.streams: list[str] = [s for st in self._by_native.values() for s in st.streams()]
        """The stream names this connection subscribes to."""
        if len(self.streams) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(
                f"{venue}: {len(self.streams)} streams on one connection "
                f"(Binance allows {MAX_STREAMS_PER_CONNECTION})"
            )
        self._now_ns = 0
        """The latest time the shell gave us; stamps statuses from :meth:`snapshot_failed`."""

    # -- connection ---------------------------------------------------------------------------

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Reset every book and queue the ``SUBSCRIBE`` frames (ids 1, 2, … per connection)."""
        self._now_ns = now_ns
        for state in self._by_native.values():
            state.reset()
        for n, params in enumerate(chunks(self.streams, MAX_PARAMS_PER_SUBSCRIBE), 1):
            frame = {"method": "SUBSCRIBE", "params": params, "id": n}
            self._actions.append(SendFrame(_request_encoder.encode(frame).decode()))
        return []

    # -- control frames -----------------------------------------------------------------------

    def _on_control(self, env: Envelope, recv_ns: int) -> list[MarketEvent] | None:
        """A frame that is no stream payload: an ack, an error or a ``serverShutdown``
        notice; ``None`` when it is none of these."""
        if env.result is not msgspec.UNSET:
            # {"result": null, "id": n} acknowledges SUBSCRIBE n; non-null results answer
            # queries we never send. Errors come with "code"/"error" instead of "result".
            return []
        error = env.error
        if env.code is not None or error is not None:
            code = env.code if error is None else error.code
            msg = env.msg if error is None else error.msg
            detail = f"code {code}: {msg} (request id {env.id})"
            return [self._status("venue_error", detail, recv_ns)]
        if env.event == "serverShutdown":
            return self._shutdown_events(env.event_time, recv_ns)
        return None

    def _server_shutdown(
        self, payload: msgspec.Raw | msgspec.UnsetType, recv_ns: int
    ) -> list[MarketEvent]:
        """The ``!serverShutdown`` stream's notice."""
        event_time = None
        # The notice counts even if its payload is odd; only its time is lost then.
        if payload is not msgspec.UNSET:
            with contextlib.suppress(msgspec.DecodeError):
                event_time = _event_time_decoder.decode(payload).event_time
        return self._shutdown_events(event_time, recv_ns)

    def _shutdown_events(self, event_time: int | None, recv_ns: int) -> list[MarketEvent]:
        self._actions.append(Reconnect("server shutdown", planned=True))
        detail = "venue announced a shutdown; reconnecting"
        ts_venue = None if event_time is None else event_time * NS_PER_MS
        return [self._status("server_shutdown", detail, recv_ns, ts_venue=ts_venue)]

    # -- book sync ----------------------------------------------------------------------------

    def _on_diff(self, state: S, diff: object, recv_ns: int) -> list[MarketEvent]:
        """A depth diff for ``state``'s book, by the symbol's sync phase."""
        out: list[MarketEvent] = []
        phase = state.phase
        if phase == SYNCED:
            self._apply(state, diff, recv_ns, out)
        elif phase == BUFFERING:
            self._buffer(state, diff, recv_ns, out)
        else:
            state.buffer.append(Buffered(diff, recv_ns))
            state.phase = BUFFERING
            self._fetch(state)
        return out

    @abc.abstractmethod
    def _buffer(self, state: S, diff: Any, recv_ns: int, out: list[MarketEvent]) -> None:
        """Buffer a diff while waiting for a snapshot, keeping the buffer a gapless chain."""

    @abc.abstractmethod
    def _apply(self, state: S, diff: Any, recv_ns: int, out: list[MarketEvent]) -> None:
        """Check one diff against the synced book, apply it and publish it."""

    def _resync(
        self, state: S, first: object, recv_ns: int, out: list[MarketEvent], detail: str
    ) -> None:
        """Discard the symbol's book, restart buffering at ``first`` and ask for a snapshot."""
        out.append(self._book_resync(state, detail, recv_ns))
        state.book.clear()
        state.buffer = [Buffered(first, recv_ns)]
        state.phase = BUFFERING
        state.from_snapshot = False
        # A snapshot already on its way is still useful: it is checked against the new
        # first buffered diff on arrival (and fetched again if too old).
        if not state.fetching:
            self._fetch(state)

    def _fetch(self, state: S) -> None:
        state.fetching = True
        self._actions.append(FetchSnapshot(key=state.native, url=state.snapshot_url))

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Rebuild the book of canonical ``symbol`` from a new REST snapshot, as after a gap.

        The book and its buffered diffs are dropped, a ``book_resync`` status is returned and
        a FetchSnapshot is queued (unless one is still outstanding: its answer is checked on
        arrival like any other). Diffs from now on are buffered until the snapshot arrives,
        then bridged to it by the market's rules; no delta of the book is published before
        that snapshot. Should the snapshot arrive before any diff, it is published alone and
        the next live diff must bridge it; one the next diff cannot bridge (older than the
        last diff seen before this call) is dropped, and the next diff asks again. The
        symbol's trades and tickers, and other symbols, are untouched; a symbol without a
        book on this connection is ignored.
        """
        self._now_ns = recv_ns
        out: list[MarketEvent] = []
        for state in self._by_native.values():
            if state.symbol != symbol or not state.depth:
                continue
            if state.buffer:
                state.seen_id = state.buffer[-1].diff.last_id
            elif state.phase == SYNCED:
                state.seen_id = state.book_id
            out.append(self._book_resync(state, f"resync asked for: {reason}", recv_ns))
            state.book.clear()
            state.buffer = []
            state.phase = BUFFERING
            state.from_snapshot = False
            if not state.fetching:
                self._fetch(state)
        return out

    def _unbridgeable(self, state: S, detail: str, recv_ns: int) -> VenueStatus:
        """A snapshot that came before any diff was buffered (after :meth:`resync`) and that
        the next diff cannot bridge: drop it, and wait as after connecting for the next
        diff, which asks for a new one (asking at once could get the same answer again and
        again: a quiet book's stays where it is)."""
        state.phase = IDLE
        detail = f"{detail} u={state.seen_id}; asking again at the next diff"
        return self._book_resync(state, detail, recv_ns)

    @property
    def synced(self) -> bool:
        """Whether every book on this connection is built from a snapshot fetched since
        :meth:`connected` (its symbol is past step 2 and no resync is under way)."""
        return all(s.phase == SYNCED for s in self._by_native.values() if s.depth)

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_received(self, key: str, body: bytes, recv_ns: int) -> list[MarketEvent]:
        """Apply the REST depth snapshot for ``key``; never raises."""
        self._now_ns = recv_ns
        try:
            state = self._by_native.get(key.upper())
            if state is None or not state.depth:
                return []
            state.fetching = False
            if state.phase != BUFFERING:
                return []  # an answer to a request from before a reconnect, or a duplicate
            return self._snapshot_received(state, body, recv_ns)
        except Exception as exc:  # a bug of ours; see Codec.receive
            return [self._parse_error(f"internal error: {type(exc).__name__}: {exc}", recv_ns)]

    @abc.abstractmethod
    def _snapshot_received(self, state: S, body: bytes, recv_ns: int) -> list[MarketEvent]:
        """Bridge the snapshot ``body`` to ``state``'s buffered diffs (the symbol is
        buffering and no fetch is out any more)."""

    def _bad_snapshot(self, state: S, body: bytes, reason: str, recv_ns: int) -> VenueStatus:
        """An unusable snapshot body: report it and ask again."""
        self._fetch(state)
        try:
            error = _error_decoder.decode(body)
        except msgspec.DecodeError:
            error = Error()
        if error.code is not None:
            detail = f"depth snapshot refused: code {error.code}: {error.msg}"
            return self._symbol_status(state, "venue_error", detail, recv_ns)
        self.counters.parse_errors += 1
        return self._symbol_status(state, "parse_error", f"depth snapshot: {reason}", recv_ns)

    def snapshot_failed(self, key: str, reason: str) -> list[MarketEvent]:
        """The snapshot fetch failed: ask again (the shell paces retries) and report it."""
        state = self._by_native.get(key.upper())
        if state is None or not state.depth:
            return []
        state.fetching = False
        if state.phase != BUFFERING:
            return []
        self._fetch(state)
        # No time comes with this call: stamp the status with the latest time we were given.
        detail = f"depth snapshot failed: {reason}; fetching again"
        return [self._book_resync(state, detail, self._now_ns)]


# ---------------------------------------------------------------------------------------------
# Instrument list: ``exchangeInfo``. Only the fields the instrument parsers use are declared.


class SymbolFilter(msgspec.Struct, gc=False):
    """One entry of a symbol's ``filters``; only the two used here are read."""

    filter_type: str = msgspec.field(name="filterType")
    tick_size: str | None = msgspec.field(default=None, name="tickSize")  # PRICE_FILTER
    step_size: str | None = msgspec.field(default=None, name="stepSize")  # LOT_SIZE


class SymbolInfo(msgspec.Struct, gc=False):
    """One entry of ``exchangeInfo.symbols`` (spot or USD-M)."""

    symbol: str
    status: str
    base_asset: str = msgspec.field(name="baseAsset")
    quote_asset: str = msgspec.field(name="quoteAsset")
    filters: list[SymbolFilter] = []
    # USD-M only:
    contract_type: str | None = msgspec.field(default=None, name="contractType")
    delivery_date: int | None = msgspec.field(default=None, name="deliveryDate")

    def tick_size(self) -> str | None:
        """``PRICE_FILTER.tickSize``, as Binance writes it (``"0.01000000"``)."""
        return next((f.tick_size for f in self.filters if f.filter_type == "PRICE_FILTER"), None)

    def step_size(self) -> str | None:
        """``LOT_SIZE.stepSize``, as Binance writes it."""
        return next((f.step_size for f in self.filters if f.filter_type == "LOT_SIZE"), None)


class ExchangeInfo(msgspec.Struct, gc=False):
    symbols: list[SymbolInfo]


def exchange_info(venue: str, url: str, body: bytes) -> ExchangeInfo:
    """Decode an ``exchangeInfo`` body; ``ValueError`` for Binance's ``{"code", "msg"}``
    error answer or any other shape."""
    # An error answer would otherwise only be reported as "missing field symbols".
    with contextlib.suppress(msgspec.DecodeError):
        error = _error_decoder.decode(body)
        if error.code is not None:
            raise ValueError(f"{venue}: {url} answered error {error.code}: {error.msg}")
    return decode(venue, url, body, ExchangeInfo)
