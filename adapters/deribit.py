"""Deribit: the sans-IO codec for the public JSON-RPC 2.0 WebSocket API (v2).

One :class:`DeribitCodec` serves one connection to ``<ws_url>`` (``…/ws/api/v2``). On
:meth:`~DeribitCodec.connected` it queues ``public/set_heartbeat`` and then
``public/subscribe`` requests for these channels of each instrument (the ``100ms``
interval: ``raw`` is only served to logged-in connections):

* ``trades.{instrument}.100ms`` → :class:`~relay.events.Trade` per trade (``direction`` is
  the taker side), and a :class:`~relay.events.Liquidation` per liquidated party of a trade
  that carries the ``liquidation`` flag (see *Liquidations* below);
* ``ticker.{instrument}.100ms`` → :class:`~relay.events.Ticker` (best bid/ask and last
  price), :class:`~relay.events.MarkPrice` (``mark_price``, ``index_price``),
  :class:`~relay.events.OpenInterest` (``open_interest``) and, for perpetuals,
  :class:`~relay.events.FundingRate` (``current_funding``), each only if subscribed;
* ``book.{instrument}.100ms`` → :class:`~relay.events.BookSnapshot` then
  :class:`~relay.events.BookDelta` events (see :class:`DeribitCodec` for the chain rule).

Numbers arrive as JSON numbers; they are decoded straight into :class:`~decimal.Decimal`
(msgspec keeps the digits, never a float) and published as ``format(d, "f")``.

**Sequence-id mapping** (book): ``BookSnapshot.sequence`` = the snapshot's ``change_id``;
``BookDelta.sequence`` = ``change_id``, ``BookDelta.prev_sequence`` = ``prev_change_id``,
``BookDelta.first_sequence`` = ``None``: an instrument's change ids are not contiguous
(even on ``raw``; and a 100 ms message folds several changes together), so a message has
no id range beyond "after ``prev_change_id``, up to ``change_id``". A consumer checks
``prev_sequence`` == the previous ``sequence``, exactly as the codec does.

**Size units.** Every size published (trade and liquidation size, book level sizes, ticker
bid/ask sizes, open interest) is Deribit's ``amount`` exactly as sent, which already
includes the instrument's contract size:

* inverse perpetuals and futures (``BTC-PERPETUAL``, ``BTC-27DEC24``): **USD** (quote
  currency), not base units. The base amount would be ``amount / price``: not a fixed factor
  (no ``contract_size`` can express it) and not exact in decimal, so the codec does not
  divide; consumers that want BTC divide by the event's own price. For these instruments
  :class:`~relay.events.OpenInterest` carries the USD figure in both ``open_interest`` and
  ``open_interest_value`` (the latter is the field meant for quote units).
* linear USDC contracts (``BTC_USDC-PERPETUAL``), spot (``BTC_USDC``) and options: the base
  coin, i.e. already base units.

:attr:`~relay.codec.Subscription.contract_size` therefore has no meaning here and
``make_codecs`` refuses a subscription that sets one (a silent multiply would double-convert
linear sizes and cannot make inverse sizes base units).

**Liquidations.** Deribit has no public liquidation channel; a trade carries
``liquidation`` = ``"M"`` (the maker was liquidated), ``"T"`` (the taker) or ``"MT"``
(both). A liquidation closes the liquidated position, so the liquidated party's order side
is the opposite of its position side: a liquidated taker that sold (``direction`` ``sell``)
held a long, so the event side is ``buy``; a liquidated maker traded against the taker, so
its position side equals the taker ``direction``. ``"MT"`` gives two events (one per side).
``liquidation_id`` is ``<trade_id>:T`` / ``<trade_id>:M``; price and size are the trade's.

**Funding.** ``FundingRate.rate`` is the ticker's ``current_funding``, the rate in force
now (the role of other venues' current rate); ``funding_8h``, the rate realised over the
last 8 hours, is not published. Deribit funding accrues continuously, so
``next_funding_ts`` is ``None``. Ticker-derived events (ticker, mark price, open interest,
funding) are published for every ``ticker`` notification, stamped with its ``timestamp``.

**Not handled.** ``trade_seq`` gaps are not reported (trades have no resync); Deribit
documents no server-shutdown notice, so none is handled; ``quote``, grouped-book,
per-currency and ``perpetual`` channels are not used.

**Keepalive.** ``public/set_heartbeat`` (interval :data:`HEARTBEAT_INTERVAL`) makes the
server send a heartbeat every interval; its ``test_request`` heartbeats must be answered
with ``public/test`` or the server closes the connection, so the codec queues that answer
as a :class:`~relay.codec.SendFrame`. The client sends no pings of its own.

``ADAPTER.make_codecs`` shards instruments over connections of at most
:data:`MAX_CHANNELS_PER_CONNECTION` channels, keeping an instrument's channels together.

**Instrument list** (``ADAPTER.instruments``): ``GET
<rest_url>/api/v2/public/get_instruments`` with ``currency=any&kind=future`` (perpetuals and
dated futures of every settlement currency: BTC, ETH, USDC, …) and ``currency=any&kind=spot``;
``any`` keeps it to two requests, as the method is limited to about one request a second.
Canonical ``base_currency-quote_currency``, ``-PERP`` when ``settlement_period`` is
``perpetual``, else the UTC date of ``expiration_timestamp``. Tick ``tick_size``, lot
``min_trade_amount`` (USD for inverse instruments, base coin otherwise); ``is_active`` is
active. **No contract size** is given, for the reasons under *Size units*: Deribit's
``amount`` already includes ``contract_size`` (inverse: USD; linear and spot: base coin).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final, Generic, Literal, TypeVar

import msgspec

from adapters._common import (
    EpochMs,
    Int64,
    check_data_types,
    check_finite,
    check_levels_magnitude,
    check_non_negative,
    chunks,
    decimal_text,
    merge_subscriptions,
    pack,
)
from relay.book import MAX_MAGNITUDE, OrderBook, levels_valid, parse_levels
from relay.book import Level as BookLevel
from relay.codec import Adapter, Codec, Endpoints, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    FundingRate,
    Level,
    Liquidation,
    MarketEvent,
    MarkPrice,
    OpenInterest,
    Side,
    Ticker,
    Trade,
    VenueStatus,
)
from relay.instruments import (
    Instrument,
    InstrumentSource,
    Kind,
    canonical,
    decode,
    expiry_code,
)
from relay.timestamps import NS_PER_MS

__all__ = [
    "ADAPTER",
    "HEARTBEAT_INTERVAL",
    "INSTRUMENTS",
    "MAX_CHANNELS_PER_CONNECTION",
    "MAX_CHANNELS_PER_SUBSCRIBE",
    "DeribitCodec",
    "canonical_symbol",
    "make_codecs",
    "parse_instruments",
]

HEARTBEAT_INTERVAL: Final = 30
"""Seconds between server heartbeats asked for with ``public/set_heartbeat`` (minimum 10)."""
MAX_CHANNELS_PER_SUBSCRIBE: Final = 100
"""Channels per ``public/subscribe`` request. Deribit documents no limit; each request costs
subscribe credits whatever its size, so requests are large, but bounded to keep a frame
and its answer a few kB."""
MAX_CHANNELS_PER_CONNECTION: Final = 300
"""Channels per connection. Deribit documents no per-connection limit (but only about 32
connections per IP); this bound (100 instruments with all three channels) is ours, to
spread the 100 ms book traffic of many instruments over several connections."""
INTERVAL: Final = "100ms"
"""The notification interval subscribed (``raw`` needs an authenticated connection)."""

# ---------------------------------------------------------------------------------------------
# Symbols

_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
_EXPIRY = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$")  # 27DEC24, 5JAN24
_ASSET = re.compile(r"^[A-Z0-9]+$")


def _expiry(text: str) -> str | None:
    """``27DEC24`` → ``241227``; ``None`` unless a valid DDMMMYY date."""
    m = _EXPIRY.match(text)
    if m is None:
        return None
    day, month = int(m.group(1)), _MONTHS.get(m.group(2))
    if month is None or not 1 <= day <= 31:
        return None
    return f"{m.group(3)}{month:02d}{day:02d}"


def canonical_symbol(native: str) -> str | None:
    """The canonical symbol of a Deribit instrument name, where the name alone tells.

    * ``BTC-PERPETUAL`` → ``BTC-USD-PERP`` (inverse: coin-margined, quoted in USD);
    * ``BTC-27DEC24`` → ``BTC-USD-241227`` (inverse future);
    * ``BTC_USDC-PERPETUAL`` → ``BTC-USDC-PERP``; ``BTC_USDC-27DEC24`` → ``BTC-USDC-241227``
      (linear contracts, the pair spelt with ``_``);
    * ``BTC_USDC`` → ``BTC-USDC`` (spot pair).

    Options (``BTC-27DEC24-100000-C``), combos and anything else give ``None``: the
    canonical scheme has no spelling for them (configure ``canonical_symbol`` explicitly to
    relay one). At run time ``public/get_instruments`` (:data:`INSTRUMENTS`) decides; this
    serves config checks and starts without it.
    """
    parts = native.split("-")
    if len(parts) > 2:
        return None  # options and combos
    pair = parts[0]
    base, sep, quote = pair.partition("_")
    if not sep:
        quote = "USD"  # inverse instruments are quoted in USD
    if not _ASSET.match(base) or not _ASSET.match(quote):
        return None
    if len(parts) == 1:
        return f"{base}-{quote}" if sep else None  # spot needs an explicit pair
    if parts[1] == "PERPETUAL":
        return f"{base}-{quote}-PERP"
    expiry = _expiry(parts[1])
    return None if expiry is None else f"{base}-{quote}-{expiry}"


def _is_inverse(native: str) -> bool:
    """Whether ``amount`` is in USD: an inverse perpetual or future (``BTC-PERPETUAL``)."""
    parts = native.split("-")
    return len(parts) == 2 and "_" not in parts[0]


# ---------------------------------------------------------------------------------------------
# Wire formats. Only the fields the codec uses are declared; msgspec skips the rest.
# ``gc=False``: these structs never take part in reference cycles.


class _RpcError(msgspec.Struct, gc=False):
    code: int | None = None
    message: str | None = None


D = TypeVar("D")


class _Params(msgspec.Struct, Generic[D], gc=False):
    """A notification's ``params``: a subscription's ``channel`` and ``data``, or a
    heartbeat's ``type``. Decoded with the envelope, in the same pass over the frame."""

    channel: str | None = None
    data: D | msgspec.UnsetType = msgspec.UNSET
    type: str | None = None


class _Envelope(msgspec.Struct, Generic[D], gc=False):
    """Any frame: a notification (``method`` + ``params``) or a response (``id``).

    ``D`` is what ``params.data`` is decoded as: :class:`msgspec.Raw` (left for later) in
    the envelope every frame can be decoded as, or one channel's data (:data:`_DATA`).
    """

    id: int | str | None = None
    method: str | None = None
    params: _Params[D] | msgspec.UnsetType = msgspec.UNSET
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    error: _RpcError | None = None


def _non_negative_text(value: Decimal) -> str:
    """``format(value, "f")`` of a venue number :func:`check_non_negative` passes;
    its ``ValueError`` otherwise.

    ``str()`` costs a third of ``format()`` and writes the same text whenever it writes no
    exponent (the exponent is then at most 0 and ``adjusted()`` at least -6); the length
    bounds ``adjusted()`` from above (fewer than :data:`MAX_MAGNITUDE` digits before the
    point). Anything else takes the reference check and ``format()``.
    """
    text = str(value)
    if (
        "E" not in text
        and value.is_finite()
        and not value.is_signed()
        and len(text) <= MAX_MAGNITUDE
    ):
        return text
    check_non_negative(value)
    return format(value, "f")


def _finite_text(value: Decimal | None) -> str | None:
    """:func:`_non_negative_text` for a number that may be negative (:func:`check_finite`);
    ``None`` stays ``None``."""
    if value is None:
        return None
    text = str(value)
    if "E" not in text and len(text) <= MAX_MAGNITUDE and value.is_finite():
        return text
    check_finite(value)
    return format(value, "f")


class _Trade(msgspec.Struct, gc=False):
    trade_id: str | Int64
    timestamp: EpochMs
    price: Decimal
    amount: Decimal
    direction: Literal["buy", "sell"]
    liquidation: Literal["M", "T", "MT"] | None = None
    # Not in the JSON (the names cannot occur there): price and amount as published text.
    price_text: str = msgspec.field(default="", name="__price_text")
    amount_text: str = msgspec.field(default="", name="__amount_text")

    def __post_init__(self) -> None:
        self.price_text = _non_negative_text(self.price)
        self.amount_text = _non_negative_text(self.amount)


class _Ticker(msgspec.Struct, gc=False):
    timestamp: EpochMs
    best_bid_price: Decimal | None = None
    best_bid_amount: Decimal | None = None
    best_ask_price: Decimal | None = None
    best_ask_amount: Decimal | None = None
    last_price: Decimal | None = None
    mark_price: Decimal | None = None
    index_price: Decimal | None = None
    open_interest: Decimal | None = None
    current_funding: Decimal | None = None
    # Not in the JSON: the numbers above as published text (``None`` where absent), in the
    # order of the checks (sizes and traded or quoted prices, then the signed ones).
    texts: tuple[str | None, ...] = msgspec.field(default=(), name="__texts")

    def __post_init__(self) -> None:
        # The checks run in this order (the first failure's error is the one reported).
        nn = _non_negative_text
        self.texts = (
            None if self.best_bid_price is None else nn(self.best_bid_price),
            None if self.best_bid_amount is None else nn(self.best_bid_amount),
            None if self.best_ask_price is None else nn(self.best_ask_price),
            None if self.best_ask_amount is None else nn(self.best_ask_amount),
            None if self.last_price is None else nn(self.last_price),
            None if self.open_interest is None else nn(self.open_interest),
            _finite_text(self.mark_price),
            _finite_text(self.index_price),
            _finite_text(self.current_funding),
        )


_RawLevel = tuple[Literal["new", "change", "delete"], Decimal, Decimal]

_ZERO: Final = Decimal(0)


def _levels(raw: list[_RawLevel]) -> tuple[list[Level], list[BookLevel]]:
    """Published text levels and the book's Decimal levels; ``delete`` is size zero.

    The book's Decimals come from :func:`relay.book.parse_levels`, looked up by their text
    in its bounded caches: equal values (``str()`` round-trips a Decimal exactly), but with
    their hashes already computed, which the book's dict operations would otherwise spend
    ~0.5 us a number on. What those caches refuse (exponents of three digits, and what is
    invalid) gets the reference checks on the decoded Decimals, with their errors.
    """
    decoded: list[BookLevel] = []
    texts: list[Level] = []
    exponent = False
    for action, price, amount in raw:
        if action == "delete" and amount:
            amount = _ZERO  # the venue sends 0 with a delete; a delete always removes
        decoded.append((price, amount))
        p, a = str(price), str(amount)
        if "E" in p or "E" in a:
            exponent = True
        texts.append((p, a))
    try:
        book = parse_levels(texts)
    except ValueError:
        if not levels_valid(decoded):
            raise ValueError(
                "a level has a non-finite price or a non-finite or negative size"
            ) from None
        check_levels_magnitude(decoded)  # before format(): 1E+999999999 takes a gigabyte
        book = decoded
    if exponent:  # str() wrote an exponent: the published text is plain
        texts = [(format(price, "f"), format(amount, "f")) for price, amount in book]
    return texts, book


class _Book(msgspec.Struct, gc=False):
    type: Literal["snapshot", "change"]
    timestamp: EpochMs
    change_id: Int64
    bids: list[_RawLevel]
    asks: list[_RawLevel]
    prev_change_id: Int64 | None = None
    # Not in the JSON (the names cannot occur there); filled from bids/asks after decoding.
    text_bids: list[Level] = msgspec.field(default_factory=list, name="__text_bids")
    text_asks: list[Level] = msgspec.field(default_factory=list, name="__text_asks")
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__book_asks")

    def __post_init__(self) -> None:
        self.text_bids, self.book_bids = _levels(self.bids)
        self.text_asks, self.book_asks = _levels(self.asks)


_DATA: Final[dict[str, object]] = {"book": _Book, "ticker": _Ticker, "trades": list[_Trade]}
"""The ``data`` of each channel kind (the channel name's first part) the codec reads."""
_envelope_decoder = msgspec.json.Decoder(_Envelope[msgspec.Raw])
_data_decoders: Final = {kind: msgspec.json.Decoder(data) for kind, data in _DATA.items()}
"""One channel kind's ``data``, from the envelope's :class:`msgspec.Raw`."""
_notification_decoders: Final = {
    kind: msgspec.json.Decoder(_Envelope[data])  # type: ignore[valid-type]
    for kind, data in _DATA.items()
}
"""A whole frame with one channel kind's ``data``, in one pass (see ``_receive``)."""
_CHANNEL_KEY: Final = '"channel":"'
_channels_decoder = msgspec.json.Decoder(list[str])
_request_encoder = msgspec.json.Encoder()

# ---------------------------------------------------------------------------------------------
# Per-instrument state

_TICKER_TYPES: Final = frozenset(
    {DataType.TICKER, DataType.MARK_PRICE, DataType.OPEN_INTEREST, DataType.FUNDING_RATE}
)


class _Instrument:
    """Everything the codec knows about one subscribed instrument."""

    __slots__ = (
        "book",
        "book_channel",
        "change_id",
        "data_types",
        "inverse",
        "native",
        "symbol",
        "synced",
        "ticker_channel",
        "trades_channel",
        "want_funding",
        "want_liquidations",
        "want_mark_price",
        "want_open_interest",
        "want_ticker",
        "want_trades",
    )

    def __init__(self, sub: Subscription) -> None:
        self.native = sub.native_symbol
        self.symbol = sub.symbol
        self.data_types = sub.data_types
        self.inverse = _is_inverse(self.native)
        wanted = sub.data_types
        # Which events to publish, read per notification: a bool is much cheaper to test
        # than a DataType in a frozenset (an enum attribute lookup and a str hash).
        self.want_trades = DataType.TRADE in wanted
        self.want_liquidations = DataType.LIQUIDATION in wanted
        self.want_ticker = DataType.TICKER in wanted
        self.want_mark_price = DataType.MARK_PRICE in wanted
        self.want_open_interest = DataType.OPEN_INTEREST in wanted
        self.want_funding = DataType.FUNDING_RATE in wanted
        self.trades_channel = (
            f"trades.{self.native}.{INTERVAL}"
            if wanted & {DataType.TRADE, DataType.LIQUIDATION}
            else None
        )
        self.ticker_channel = f"ticker.{self.native}.{INTERVAL}" if wanted & _TICKER_TYPES else None
        self.book_channel = (
            f"book.{self.native}.{INTERVAL}" if DataType.L2_ORDERBOOK in wanted else None
        )
        self.book = OrderBook()
        self.synced = False
        """A snapshot was applied on this subscription and the chain has held since."""
        self.change_id = 0
        """The ``change_id`` of the last applied book message."""

    def channels(self) -> list[str]:
        return [c for c in (self.book_channel, self.ticker_channel, self.trades_channel) if c]

    def reset(self) -> None:
        """Forget the book (new connection, or a resync)."""
        self.book.clear()
        self.synced = False
        self.change_id = 0


# ---------------------------------------------------------------------------------------------
# The codec


class DeribitCodec(Codec):
    """The protocol state of one Deribit connection.

    **Book sync** (per instrument; deribit.md section 5, Deribit's documented rule):

    1. The first ``book`` notification of a subscription is ``type: snapshot``: the book is
       replaced with it and a :class:`~relay.events.BookSnapshot` (only levels with a
       non-zero size) and a ``book_synced`` status are published. A snapshot arriving later
       resets the book the same way.
    2. Each ``type: change`` must have ``prev_change_id`` equal to the ``change_id`` of the
       previous message applied; its levels are applied (``new``/``change`` set the
       absolute amount, ``delete`` removes the level) and published as a
       :class:`~relay.events.BookDelta`. A change with ``change_id`` not above the last one
       is a repeat and dropped (``counters.stale_deltas_dropped``), as is a change that
       arrives while the instrument has no snapshot (before the first, or during a resync).
    3. Otherwise (``prev_change_id`` differs or is missing) it is a gap: ``book_gap`` and
       ``book_resync`` statuses, the book is discarded, and the codec queues
       ``public/unsubscribe`` + ``public/subscribe`` for that instrument's book channel
       only: the new subscription starts with a fresh snapshot (step 1).
    4. A snapshot or change that leaves the book crossed (best bid >= best ask) means a
       corrupt copy: nothing is published and the instrument resyncs as for a gap (a
       ``book_resync`` status with the crossing prices).
    5. :meth:`resync` (downstream lost a delta) resyncs an instrument as for a gap.

    Deribit sends no checksum. ``new``/``change``/``delete`` are applied as absolute
    updates without checking whether the level existed: a ``change`` of an unknown level
    or a ``delete`` of an absent one is not treated as an error (and ccxt's recording, whose
    snapshots are trimmed to 5 levels, would fail such a check).

    **Other frames.** Responses to ``public/subscribe`` are compared with the channels asked
    for: channels missing from the result (an unknown instrument, say) become an
    ``unknown_symbol`` status for their instrument. Other results (heartbeat set-up,
    ``public/test``, ``public/unsubscribe``) are dropped. JSON-RPC errors (e.g. 10028
    ``too_many_requests``, after which Deribit closes the session) become ``venue_error``
    statuses. A heartbeat ``test_request`` queues a ``public/test`` request. Notifications
    of channels the codec did not subscribe are ignored. Anything undecodable, including a
    known channel whose data has the wrong shape or a non-finite number, counts
    ``counters.parse_errors`` and becomes a ``parse_error`` status.
    """

    # Deribit's credit bucket allows about 10 subscribe requests in a burst and ~3.3/s
    # sustained (deribit.md section 1); other requests are cheaper. Stay below.
    max_send_rate = 3.0
    ping_interval = None  # the server heartbeats (public/set_heartbeat); we answer them
    max_lifetime = None  # Deribit does not cut connections on a schedule

    def __init__(
        self, venue: str, subscriptions: Sequence[Subscription], endpoints: Endpoints
    ) -> None:
        """One connection for ``subscriptions`` (distinct native symbols, at most
        :data:`MAX_CHANNELS_PER_CONNECTION` channels in all)."""
        super().__init__()
        self.venue = venue
        self.url = endpoints.ws_url
        self._instruments: dict[str, _Instrument] = {}
        for sub in subscriptions:
            if sub.native_symbol in self._instruments:
                raise ValueError(f"{venue}: {sub.native_symbol} subscribed twice")
            self._instruments[sub.native_symbol] = _Instrument(sub)
        self.channels: list[str] = [
            c for state in self._instruments.values() for c in state.channels()
        ]
        """The channels this connection subscribes to."""
        if len(self.channels) > MAX_CHANNELS_PER_CONNECTION:
            raise ValueError(
                f"{venue}: {len(self.channels)} channels on one connection "
                f"(at most {MAX_CHANNELS_PER_CONNECTION})"
            )
        self._next_id = 1
        # Subscribe requests awaiting their answer: request id -> channels asked for.
        self._pending_subscribes: dict[int, list[str]] = {}
        self._refused: set[str] = set()
        """Channels the venue left out of a subscribe answer on this connection."""
        self._handlers = {
            "book": self._on_book,
            "ticker": self._on_ticker,
            "trades": self._on_trades,
        }

    # -- requests ------------------------------------------------------------------------------

    def _request(self, method: str, params: dict[str, object]) -> int:
        """Queue one JSON-RPC request; returns its id (1, 2, … per connection)."""
        request_id = self._next_id
        self._next_id += 1
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self._actions.append(SendFrame(_request_encoder.encode(frame).decode()))
        return request_id

    def _subscribe(self, channels: list[str]) -> None:
        request_id = self._request("public/subscribe", {"channels": channels})
        self._pending_subscribes[request_id] = channels

    # -- connection ---------------------------------------------------------------------------

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Reset every book, queue ``public/set_heartbeat`` and the subscribe requests."""
        for state in self._instruments.values():
            state.reset()
        self._next_id = 1
        self._pending_subscribes = {}
        self._refused = set()
        self._request("public/set_heartbeat", {"interval": HEARTBEAT_INTERVAL})
        for channels in chunks(self.channels, MAX_CHANNELS_PER_SUBSCRIBE):
            self._subscribe(channels)
        return []

    # -- frames -------------------------------------------------------------------------------

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        # A notification is decoded in one pass with its channel's data type, picked by the
        # channel name as written in the frame: the envelope path below reads the data
        # twice (skipped as Raw, then decoded). The name found by text search is only a
        # guess; the decoded channel decides. This pass is at least as strict as that path
        # (it also checks the data of a repeated key, where the envelope keeps the last
        # one's Raw) and reads what it accepts the same way; a frame it does not take or
        # cannot decode goes through the envelope path, which words every error.
        start = data.find(_CHANNEL_KEY) if isinstance(data, str) else -1
        if start >= 0:
            start += len(_CHANNEL_KEY)
            kind = data[start : data.find(".", start)]
            decoder = _notification_decoders.get(kind)
            if decoder is not None:
                try:
                    frame = decoder.decode(data)
                except Exception:  # the envelope path below reports it
                    frame = None
                if frame is not None and frame.method == "subscription":
                    params = frame.params
                    if (
                        params is not msgspec.UNSET
                        and params.channel is not None
                        and params.data is not msgspec.UNSET
                    ):
                        parts = params.channel.split(".")
                        if len(parts) == 3 and parts[0] == kind:
                            state = self._instruments.get(parts[1])
                            if state is None or (kind == "book" and state.book_channel is None):
                                return []
                            return self._handlers[kind](state, params.data, recv_ns)
        env = _envelope_decoder.decode(data)
        method = env.method
        params = env.params
        if method == "subscription":
            if params is msgspec.UNSET or params.channel is None or params.data is msgspec.UNSET:
                return [self._parse_error("subscription without channel and data", recv_ns)]
            channel = params.channel
            # book.BTC-PERPETUAL.100ms: instrument names hold no dots. Other shapes (grouped
            # books, per-currency trades) and other kinds are channels we never ask for.
            parts = channel.split(".")
            if len(parts) != 3:
                return []
            data_decoder = _data_decoders.get(parts[0])
            state = self._instruments.get(parts[1])
            if data_decoder is None or state is None:
                return []
            if parts[0] == "book" and state.book_channel is None:
                return []  # the book of an instrument subscribed for other data (a shared replay)
            try:
                decoded = data_decoder.decode(params.data)
            except msgspec.DecodeError as exc:
                return [self._parse_error(f"{channel}: {exc}", recv_ns)]
            return self._handlers[parts[0]](state, decoded, recv_ns)
        if method == "heartbeat":
            if params is msgspec.UNSET or params.type is None:
                return [self._parse_error("heartbeat without type", recv_ns)]
            if params.type == "test_request":
                # Unanswered, the server closes the connection.
                self._request("public/test", {})
            return []
        if method is not None:
            return [self._parse_error(f"unknown notification method {method!r}", recv_ns)]
        if env.error is not None:
            return [self._venue_error(env.id, env.error, recv_ns)]
        if env.result is not msgspec.UNSET:
            return self._on_result(env.id, env.result, recv_ns)
        return [self._parse_error("unrecognized frame", recv_ns)]

    def _on_result(
        self, request_id: object, result: msgspec.Raw, recv_ns: int
    ) -> list[MarketEvent]:
        asked = (
            self._pending_subscribes.pop(request_id, None) if isinstance(request_id, int) else None
        )
        if asked is None:
            return []  # set_heartbeat "ok", public/test, unsubscribe, or not ours
        got = set(_channels_decoder.decode(result))
        self._refused -= got
        missing: dict[str, list[str]] = {}
        for channel in asked:
            if channel not in got:
                self._refused.add(channel)
                native = channel.split(".")[1]
                missing.setdefault(native, []).append(channel)
        out: list[MarketEvent] = []
        for native, channels in missing.items():
            state = self._instruments[native]
            detail = f"not subscribed by the venue: {', '.join(channels)}"
            out.append(self._symbol_status(state, "unknown_symbol", detail, recv_ns))
        return out

    # -- resync on request ----------------------------------------------------------------------

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Drop the book of canonical ``symbol`` and get a fresh snapshot (deribit.md §5).

        As for a gap: ``public/unsubscribe`` + ``public/subscribe`` of the instrument's book
        channel, whose first notification is a ``type: snapshot``; changes before it are
        dropped. A book still waiting for its snapshot (after connecting or a resync) gets
        the status but no second request: subscribing costs credits. An instrument without
        a book on this connection (not wanted, or its book channel left out of the venue's
        subscribe answer) is ignored.
        """
        books = (s for s in self._instruments.values() if self._has_book(s))
        return self._resync_books(
            books,
            symbol,
            reason,
            recv_ns,
            lambda s, d, out: self._resync(s, f"{d}; resubscribing", recv_ns, out),
        )

    @property
    def synced(self) -> bool:
        """Every book has had its snapshot since connect and its chain has held since (no
        resync pending); books the venue refused to subscribe do not count."""
        return all(s.synced for s in self._instruments.values() if self._has_book(s))

    def _has_book(self, state: _Instrument) -> bool:
        channel = state.book_channel
        return channel is not None and channel not in self._refused

    def _venue_error(self, request_id: object, error: _RpcError, recv_ns: int) -> VenueStatus:
        what = ""
        if isinstance(request_id, int) and request_id in self._pending_subscribes:
            channels = self._pending_subscribes.pop(request_id)
            what = f" subscribing {len(channels)} channels ({channels[0]}, ...)"
        detail = f"code {error.code}: {error.message} (request id {request_id}{what})"
        return self._status("venue_error", detail, recv_ns)

    # -- trades and liquidations ---------------------------------------------------------------

    def _on_trades(
        self, state: _Instrument, trades: list[_Trade], recv_ns: int
    ) -> list[MarketEvent]:
        want_trades = state.want_trades
        want_liquidations = state.want_liquidations
        out: list[MarketEvent] = []
        for t in trades:
            price = t.price_text
            size = t.amount_text
            ts_venue = t.timestamp * NS_PER_MS
            if want_trades:
                out.append(
                    Trade(
                        venue=self.venue,
                        symbol=state.symbol,
                        native_symbol=state.native,
                        ts_venue=ts_venue,
                        ts_recv=recv_ns,
                        trade_id=str(t.trade_id),
                        price=price,
                        size=size,
                        side=t.direction,
                    )
                )
            if want_liquidations and t.liquidation is not None:
                taker: Side = t.direction
                maker: Side = "sell" if taker == "buy" else "buy"
                # (party, side of the liquidated position): a liquidation order closes the
                # position, so the position side is the opposite of the party's order side.
                parties: list[tuple[str, Side]] = []
                if "M" in t.liquidation:
                    parties.append(("M", taker))  # maker's order side is ``maker``
                if "T" in t.liquidation:
                    parties.append(("T", maker))  # taker's order side is ``taker``
                for party, side in parties:
                    out.append(
                        Liquidation(
                            venue=self.venue,
                            symbol=state.symbol,
                            native_symbol=state.native,
                            ts_venue=ts_venue,
                            ts_recv=recv_ns,
                            side=side,
                            price=price,
                            size=size,
                            liquidation_id=f"{t.trade_id}:{party}",
                        )
                    )
        return out

    # -- ticker ----------------------------------------------------------------------------------

    def _on_ticker(self, state: _Instrument, t: _Ticker, recv_ns: int) -> list[MarketEvent]:
        ts_venue = t.timestamp * NS_PER_MS
        venue, symbol, native = self.venue, state.symbol, state.native
        out: list[MarketEvent] = []
        (
            bid_price,
            bid_amount,
            ask_price,
            ask_amount,
            last_price,
            oi,
            mark_price,
            index_price,
            funding,
        ) = t.texts
        if state.want_ticker:
            # Deribit writes an empty side as price 0 and amount 0.
            if bid_price is None or bid_amount is None or not t.best_bid_amount:
                bid_price = bid_amount = None
            if ask_price is None or ask_amount is None or not t.best_ask_amount:
                ask_price = ask_amount = None
            out.append(
                Ticker(
                    venue=venue,
                    symbol=symbol,
                    native_symbol=native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    bid_price=bid_price,
                    bid_size=bid_amount,
                    ask_price=ask_price,
                    ask_size=ask_amount,
                    last_price=last_price,
                )
            )
        if state.want_mark_price and mark_price is not None:
            out.append(
                MarkPrice(
                    venue=venue,
                    symbol=symbol,
                    native_symbol=native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    mark_price=mark_price,
                    index_price=index_price,
                )
            )
        if state.want_open_interest and oi is not None:
            out.append(
                OpenInterest(
                    venue=venue,
                    symbol=symbol,
                    native_symbol=native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    open_interest=oi,
                    # Inverse open interest is in USD (see the module docstring).
                    open_interest_value=oi if state.inverse else None,
                )
            )
        if state.want_funding and funding is not None:
            out.append(
                FundingRate(
                    venue=venue,
                    symbol=symbol,
                    native_symbol=native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    rate=funding,
                    # Deribit funding accrues continuously: there is no next funding time.
                    next_funding_ts=None,
                    mark_price=mark_price,
                    index_price=index_price,
                )
            )
        return out

    # -- order book ---------------------------------------------------------------------------

    def _on_book(self, state: _Instrument, msg: _Book, recv_ns: int) -> list[MarketEvent]:
        """A book notification of an instrument whose book channel is subscribed."""
        out: list[MarketEvent] = []
        if msg.type == "snapshot":
            self._snapshot(state, msg, recv_ns, out)
        elif not state.synced or msg.change_id <= state.change_id:
            # Before the snapshot, while a resync is under way, or a repeat.
            self.counters.stale_deltas_dropped += 1
        elif msg.prev_change_id != state.change_id:
            detail = (
                f"expected prev_change_id={state.change_id}, got {msg.prev_change_id} "
                f"(change_id={msg.change_id})"
            )
            out.append(self._book_gap(state, detail, recv_ns))
            self._resync(state, f"sequence gap: {detail}", recv_ns, out)
        else:
            self._change(state, msg, recv_ns, out)
        return out

    def _snapshot(
        self, state: _Instrument, msg: _Book, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        book = state.book
        book.apply_snapshot(msg.book_bids, msg.book_asks)
        if crossing := book.crossing():
            detail = f"snapshot change_id={msg.change_id} is crossed: {crossing}; resyncing"
            self._resync(state, detail, recv_ns, out)
            return
        state.synced = True
        state.change_id = msg.change_id
        out.append(
            BookSnapshot(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=msg.timestamp * NS_PER_MS,
                ts_recv=recv_ns,
                sequence=msg.change_id,
                # A snapshot is the full book: zero-size levels would be no levels at all.
                bids=_nonzero(msg.text_bids, msg.book_bids),
                asks=_nonzero(msg.text_asks, msg.book_asks),
            )
        )
        detail = f"snapshot change_id={msg.change_id}"
        out.append(self._symbol_status(state, "book_synced", detail, recv_ns))

    def _change(self, state: _Instrument, msg: _Book, recv_ns: int, out: list[MarketEvent]) -> None:
        book = state.book
        book.apply_delta(msg.book_bids, msg.book_asks)
        if crossing := book.crossing():
            detail = f"book crossed after change_id={msg.change_id}: {crossing}; resyncing"
            self._resync(state, detail, recv_ns, out)
            return
        out.append(
            BookDelta(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=msg.timestamp * NS_PER_MS,
                ts_recv=recv_ns,
                first_sequence=None,  # change ids are not contiguous: no range to give
                sequence=msg.change_id,
                prev_sequence=msg.prev_change_id,
                bids=msg.text_bids,
                asks=msg.text_asks,
            )
        )
        state.change_id = msg.change_id

    def _resync(
        self, state: _Instrument, detail: str, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        """Drop the instrument's book and re-subscribe its book channel for a new snapshot."""
        out.append(self._book_resync(state, detail, recv_ns))
        state.reset()
        channel = state.book_channel
        assert channel is not None  # only book messages of subscribed books get here
        # On one connection Deribit handles requests in order: no change of the old
        # subscription follows the new one's snapshot.
        self._request("public/unsubscribe", {"channels": [channel]})
        self._subscribe([channel])


def _nonzero(text: list[Level], book: list[BookLevel]) -> list[Level]:
    """The text levels whose size is not zero (``text`` and ``book`` are parallel)."""
    return [lv for lv, (_, size) in zip(text, book, strict=True) if size]


# ---------------------------------------------------------------------------------------------
# The adapter

_SUPPORTED: Final = frozenset(
    {
        DataType.TRADE,
        DataType.TICKER,
        DataType.L2_ORDERBOOK,
        DataType.FUNDING_RATE,
        DataType.LIQUIDATION,
        DataType.MARK_PRICE,
        DataType.OPEN_INTEREST,
    }
)


def make_codecs(
    venue: str,
    subscriptions: Sequence[Subscription],
    endpoints: Endpoints,
    *,
    credentials: Mapping[str, str] = {},  # public channels need none
) -> list[Codec]:
    """One :class:`DeribitCodec` per connection of at most
    :data:`MAX_CHANNELS_PER_CONNECTION` channels.

    Subscriptions naming the same instrument are merged; an instrument's channels all go to
    one connection, packed in the order given. Raises ``ValueError`` for a funding-rate
    subscription of an instrument that is not a perpetual, and for any ``contract_size``
    (Deribit sizes already include it; see the module docstring).
    """

    def key(sub: Subscription) -> str:
        native = sub.native_symbol
        if sub.contract_size is not None:
            raise ValueError(
                f"{venue}: {native}: Deribit sizes (amount) already include the contract "
                "size (USD for inverse, coin otherwise); contract_size must not be set"
            )
        if DataType.FUNDING_RATE in sub.data_types and not native.endswith("-PERPETUAL"):
            raise ValueError(f"{venue}: {native} is not a perpetual and has no funding rate")
        check_data_types(venue, "deribit", sub, _SUPPORTED)
        return native

    merged = merge_subscriptions(venue, subscriptions, key)
    shards = pack(
        merged.values(), lambda sub: len(_Instrument(sub).channels()), MAX_CHANNELS_PER_CONNECTION
    )
    return [DeribitCodec(venue, shard, endpoints) for shard in shards]


# ---------------------------------------------------------------------------------------------
# Instrument list


class _InstrumentInfo(msgspec.Struct, gc=False):
    instrument_name: str
    kind: str
    base_currency: str
    quote_currency: str
    is_active: bool
    settlement_period: str | None = None  # not on spot
    expiration_timestamp: int | None = None
    tick_size: Decimal | None = None
    min_trade_amount: Decimal | None = None


class _RpcError(msgspec.Struct, gc=False):
    code: int | None = None
    message: str | None = None


class _InstrumentsAnswer(msgspec.Struct, gc=False):
    result: list[_InstrumentInfo] | None = None
    error: _RpcError | None = None


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """``public/get_instruments`` for futures (perpetuals included) and for spot."""
    base = f"{endpoints.rest_url.rstrip('/')}/api/v2/public/get_instruments"
    return [f"{base}?currency=any&kind=future", f"{base}?currency=any&kind=spot"]


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The futures and spot pairs of one ``get_instruments`` answer (module docstring)."""
    answer = decode("deribit", url, body, _InstrumentsAnswer)
    if answer.result is None:
        error = answer.error or _RpcError()
        raise ValueError(f"deribit: {url} answered error {error.code}: {error.message}")
    out: list[Instrument] = []
    for i in answer.result:
        kind: Kind
        expiry = None
        if i.kind == "spot":
            kind = "spot"
        elif i.kind == "future" and i.settlement_period == "perpetual":
            kind = "perp"
        elif i.kind == "future" and i.expiration_timestamp is not None:
            kind, expiry = "future", expiry_code(i.expiration_timestamp)
        elif i.kind == "future":
            raise ValueError(f"deribit: {url}: {i.instrument_name} has no expiration_timestamp")
        else:
            continue  # options and combos: no canonical spelling
        out.append(
            Instrument(
                native_symbol=i.instrument_name,
                symbol=canonical(i.base_currency, i.quote_currency, kind, expiry),
                kind=kind,
                base=i.base_currency,
                quote=i.quote_currency,
                price_increment=decimal_text(i.tick_size),
                size_increment=decimal_text(i.min_trade_amount),
                contract_size=None,
                active=i.is_active,
            )
        )
    return out


INSTRUMENTS: Final = InstrumentSource(urls=instrument_urls, parse=parse_instruments)


ADAPTER = Adapter(
    name="deribit",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(
        ws_url="wss://www.deribit.com/ws/api/v2", rest_url="https://www.deribit.com"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    instruments=INSTRUMENTS,
)
