"""Bybit v5 public market data (spot and linear): the sans-IO codec.

Bybit serves each product *category* on its own WebSocket endpoint and one connection carries
one category only, so a :class:`BybitCodec` is one connection to ``<ws_url>/spot`` or
``<ws_url>/linear``, where ``ws_url`` is the category-less base (default
``wss://stream.bybit.com/v5/public``; a base already ending in a category has it replaced).

**Native symbols.** Bybit spells the spot pair and the USDT perpetual the same (``BTCUSDT``),
so the native symbol of a subscription may carry the category as a prefix:
``spot:BTCUSDT`` or ``linear:BTCUSDT`` (category case-insensitive). Without a prefix the
category follows the canonical symbol: ``…-PERP`` or a dated future ``…-YYMMDD`` is linear,
anything else spot. :func:`canonical_symbol` reads the same convention: a bare ``BTCUSDT``
is the spot pair ``BTC-USDT``, ``linear:BTCUSDT`` the perpetual ``BTC-USDT-PERP``. Events carry
the subscription's native symbol (prefix included, symbol upper-cased).

**Topics** (one ``subscribe`` request holds at most 10 args on spot, Bybit's limit, and
:data:`LINEAR_ARGS_PER_REQUEST` on linear, which has no documented per-request limit):

* ``publicTrade.<s>`` → :class:`~relay.events.Trade`; ``S`` is the taker side, ``i`` the id.
* ``tickers.<s>`` → :class:`~relay.events.Ticker` (best bid/ask from ``bid1*``/``ask1*``,
  which spot tickers lack, and ``lastPrice``) and, on linear, :class:`~relay.events.MarkPrice`
  (``markPrice``, ``indexPrice``), :class:`~relay.events.FundingRate` (``fundingRate``,
  ``nextFundingTime``) and :class:`~relay.events.OpenInterest` (``openInterest``,
  ``openInterestValue``). Linear tickers are a snapshot followed by deltas that carry only the
  changed fields: the codec keeps the merged ticker per symbol and publishes each event
  when a message carries one of its fields (a snapshot carries all). An empty string
  (dated futures send ``fundingRate: ""``) means the venue has no value. ``sequence`` of a
  Ticker is the message's cross sequence ``cs``.
* ``allLiquidation.<s>`` (linear) → :class:`~relay.events.Liquidation`. Bybit's ``S`` is the
  side of the liquidated *position* (``Buy`` = a long was liquidated), which is exactly the
  event's ``side``; ``p`` is the bankruptcy price.
* ``orderbook.<depth>.<s>`` (depth :data:`BOOK_DEPTH` unless told otherwise) →
  :class:`~relay.events.BookSnapshot` / :class:`~relay.events.BookDelta`; see
  :class:`BybitCodec` for the sync rules.

**Sequence ids.** A book message's update id ``u`` is the event's sequence: a snapshot's
``sequence`` is its ``u``; a delta has ``first_sequence == sequence == u`` and
``prev_sequence`` = the ``u`` it follows, which on an unbroken book is ``u - 1``. (``seq``,
the cross sequence, is not contiguous and is not used for the chain.)

**Units.** Spot and linear sizes (``v``, book sizes, ``bid1Size``/``ask1Size``,
``openInterest``) are base-coin quantities; ``openInterestValue`` is in the quote coin.
If a subscription sets ``contract_size`` anyway, every base-unit size is multiplied by it.
Times are epoch milliseconds: trades and liquidations use the fill time ``T``, book
messages the matching-engine time ``cts`` (falling back to ``ts``), tickers ``ts``.

**Connection.** The client pings with ``{"op":"ping"}`` every 20 s (Bybit's advice; the
server drops a silent connection after about 10 minutes). Acks and pongs are dropped; an
ack with ``success: false`` becomes a ``venue_error`` status naming the refused args.
``make_codecs`` shards each category's subscriptions so that no connection's args exceed
Bybit's 21,000 characters. Bybit documents no forced disconnect and no shutdown notice on
public streams, so ``max_lifetime`` is ``None`` and no ``server_shutdown`` is produced.

**Instrument list** (``ADAPTER.instruments``): ``GET <rest_url>/v5/market/instruments-info``
with ``category=spot`` and ``category=linear&limit=1000``. Natives are ``spot:<symbol>`` and
``linear:<symbol>``; canonical ``baseCoin-quoteCoin``, with ``-PERP`` for a
``LinearPerpetual`` and the UTC date of ``deliveryTime`` for ``LinearFutures``.
``priceFilter.tickSize`` is the tick; the lot is ``lotSizeFilter.qtyStep`` (linear) or
``basePrecision`` (spot); ``status`` ``Trading`` is active. Sizes are base units, so no
contract size. ⚠ Only one page is read: spot is not paginated, linear gives one page of up
to 1000 contracts (Bybit's largest page) and ``nextPageCursor`` is not followed, so a linear
contract beyond the first 1000 would be reported as unlisted. A bare configured symbol is
looked up in the category :func:`category_of` picks for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal

import msgspec

from adapters._common import (
    EpochMs,
    Int64,
    check_data_types,
    chunks,
    merge_subscriptions,
    pack,
    scale_levels,
    scale_size,
    split_quote,
)
from relay.book import Level as BookLevel
from relay.book import OrderBook, parse_levels
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
    Ticker,
    Trade,
    check_non_negative,
    check_num,
)
from relay.instruments import (
    Instrument,
    InstrumentSource,
    Kind,
    canonical,
    decode,
    epoch_ms,
    expiry_code,
)
from relay.timestamps import NS_PER_MS, ms_text_to_ns

__all__ = [
    "ADAPTER",
    "BOOK_DEPTH",
    "INSTRUMENTS",
    "LINEAR_ARGS_PER_REQUEST",
    "MAX_ARGS_CHARS",
    "QUOTE_ASSETS",
    "SPOT_ARGS_PER_REQUEST",
    "BybitCodec",
    "canonical_symbol",
    "category_of",
    "make_codecs",
    "parse_instruments",
]

Category = Literal["spot", "linear"]
CATEGORIES: Final[tuple[Category, ...]] = ("spot", "linear")

BOOK_DEPTH: Final = 50
"""Default ``orderbook`` depth: 50 levels pushed every 20 ms (200 would be every 100 ms)."""
BOOK_DEPTHS: Final = frozenset({1, 50, 200, 1000})
"""Depths Bybit serves on spot and linear."""
SPOT_ARGS_PER_REQUEST: Final = 10
"""Bybit rejects a spot ``subscribe`` with more than 10 args."""
LINEAR_ARGS_PER_REQUEST: Final = 100
"""Linear has no per-request limit; 100 topics keep each frame a few kB."""
MAX_ARGS_CHARS: Final = 21_000
"""Bybit's limit on the total length of the args subscribed on one public connection,
counted here as the length of the JSON array of all of a connection's topics."""

_PING: Final = '{"op":"ping"}'

# ---------------------------------------------------------------------------------------------
# Symbols

QUOTE_ASSETS: Final[tuple[str, ...]] = (
    "USDT", "USDC", "USDE", "USD1", "FDUSD", "DAI", "BTC", "ETH", "MNT",
    "EUR", "BRL", "PLN", "TRY", "BRZ",
)  # fmt: skip
"""Quote coins Bybit lists spot pairs and linear contracts against, matched longest first."""

_QUOTES_LONGEST_FIRST = sorted(QUOTE_ASSETS, key=len, reverse=True)
_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
# A dated linear future named after its pair: ``BTCUSDT-26DEC25``.
_DATED = re.compile(r"^([A-Z0-9]+)-(\d{1,2})([A-Z]{3})(\d{2})$")
_CANONICAL_DERIVATIVE = re.compile(r"-(PERP|\d{6})$")


def _split_native(native: str) -> tuple[Category | None, str]:
    """``linear:btcusdt`` → ``("linear", "BTCUSDT")``; a bare symbol has category ``None``.

    Raises ``ValueError`` for a prefix that is not a supported category.
    """
    prefix, sep, symbol = native.partition(":")
    if not sep:
        return None, native.upper()
    category = prefix.lower()
    if category == "spot" or category == "linear":
        return category, symbol.upper()
    raise ValueError(f"{native!r}: category prefix must be 'spot:' or 'linear:'")


def _linear_canonical(symbol: str) -> str | None:
    if m := _DATED.match(symbol):
        pair, day, month, year = m.groups()
        split = split_quote(pair, _QUOTES_LONGEST_FIRST)
        if split is None or month not in _MONTHS or not 1 <= int(day) <= 31:
            return None
        return f"{split[0]}-{split[1]}-{year}{_MONTHS[month]:02d}{int(day):02d}"
    if "-" in symbol:
        # ``BTC-26DEC25`` (USDC-settled futures) and options: the quote coin is not in the
        # name, only in instruments-info.
        return None
    if symbol.endswith("PERP") and len(symbol) > 4:
        return f"{symbol[:-4]}-USDC-PERP"  # legacy USDC perpetual naming (BTCPERP) ⚠
    split = split_quote(symbol, _QUOTES_LONGEST_FIRST)
    return None if split is None else f"{split[0]}-{split[1]}-PERP"


def canonical_symbol(native: str) -> str | None:
    """Canonical symbol of a native spelling (see the module docstring for the prefix rule).

    ``spot:BTCUSDT`` and bare ``BTCUSDT`` → ``BTC-USDT``; ``linear:BTCUSDT`` →
    ``BTC-USDT-PERP``; ``BTCPERP`` → ``BTC-USDC-PERP``; ``BTCUSDT-26DEC25`` (bare or
    ``linear:``) → ``BTC-USDT-251226``. Returns ``None`` when the split is unknown (no quote
    coin of :data:`QUOTE_ASSETS` ends the name, ``BTC-26DEC25``, an unknown prefix). This is
    a heuristic on the name; at run time ``GET /v5/market/instruments-info``
    (:data:`INSTRUMENTS`) decides, and this serves config checks and starts without it.
    """
    try:
        category, symbol = _split_native(native)
    except ValueError:
        return None
    if category == "linear":
        return _linear_canonical(symbol)
    if category is None and (symbol.endswith("PERP") or _DATED.match(symbol)):
        return _linear_canonical(symbol)
    if "-" in symbol:
        return None
    split = split_quote(symbol, _QUOTES_LONGEST_FIRST)
    return None if split is None else f"{split[0]}-{split[1]}"


def category_of(sub: Subscription) -> Category:
    """The endpoint a subscription is served on: its prefix, else from its canonical symbol.

    Raises ``ValueError`` for an unknown prefix.
    """
    category, _ = _split_native(sub.native_symbol)
    if category is not None:
        return category
    return "linear" if _CANONICAL_DERIVATIVE.search(sub.symbol) else "spot"


# ---------------------------------------------------------------------------------------------
# Wire formats. Only the fields the codec uses are declared; msgspec skips the rest.
# ``gc=False``: these structs never take part in reference cycles.


class _Envelope(msgspec.Struct, gc=False):
    """Any frame: a topic push, or a reply to an ``op`` (subscribe ack, pong)."""

    topic: str | None = None
    type: str | None = None
    ts: EpochMs | None = None
    cts: EpochMs | None = None
    cs: Int64 | None = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None
    req_id: str | None = None


# Prices and sizes stay the venue's text; ``__post_init__`` checks that it is a number
# (msgspec turns the ValueError into a decode error).


class _Trade(msgspec.Struct, gc=False):
    time: EpochMs = msgspec.field(name="T")
    side: Literal["Buy", "Sell"] = msgspec.field(name="S")
    size: str = msgspec.field(name="v")
    price: str = msgspec.field(name="p")
    id: str = msgspec.field(name="i")

    def __post_init__(self) -> None:
        check_non_negative(self.price)
        check_non_negative(self.size)


class _Liquidation(msgspec.Struct, gc=False):
    time: EpochMs = msgspec.field(name="T")
    side: Literal["Buy", "Sell"] = msgspec.field(name="S")
    size: str = msgspec.field(name="v")
    price: str = msgspec.field(name="p")

    def __post_init__(self) -> None:
        check_non_negative(self.price)
        check_non_negative(self.size)


class _Book(msgspec.Struct, gc=False):
    bids: list[Level] = msgspec.field(name="b")
    asks: list[Level] = msgspec.field(name="a")
    update_id: Int64 = msgspec.field(name="u")
    # Not in the JSON (the names cannot occur there); filled from bids/asks after decoding.
    book_bids: list[BookLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[BookLevel] = msgspec.field(default_factory=list, name="__book_asks")

    def __post_init__(self) -> None:
        self.book_bids = parse_levels(self.bids)
        self.book_asks = parse_levels(self.asks)


_TICKER_FIELDS: Final = (
    "lastPrice",
    "bid1Price",
    "bid1Size",
    "ask1Price",
    "ask1Size",
    "markPrice",
    "indexPrice",
    "fundingRate",
    "nextFundingTime",
    "openInterest",
    "openInterestValue",
)
_QUOTE_FIELDS: Final = frozenset({"lastPrice", "bid1Price", "bid1Size", "ask1Price", "ask1Size"})
_MARK_FIELDS: Final = frozenset({"markPrice", "indexPrice"})
_FUNDING_FIELDS: Final = frozenset({"fundingRate", "nextFundingTime"})
_OI_FIELDS: Final = frozenset({"openInterest", "openInterestValue"})


class _Ticker(msgspec.Struct, gc=False, rename="camel"):
    """A ticker snapshot or delta: ``None`` = absent (unchanged), ``""`` = no value."""

    last_price: str | None = None
    bid1_price: str | None = None
    bid1_size: str | None = None
    ask1_price: str | None = None
    ask1_size: str | None = None
    mark_price: str | None = None
    index_price: str | None = None
    funding_rate: str | None = None
    next_funding_time: str | None = None
    open_interest: str | None = None
    open_interest_value: str | None = None

    def __post_init__(self) -> None:
        # Funding rates, mark and index prices may be negative; the rest are traded or
        # quoted prices, sizes and open interest.
        for text in (
            self.last_price, self.bid1_price, self.bid1_size, self.ask1_price, self.ask1_size,
            self.open_interest, self.open_interest_value,
        ):  # fmt: skip
            if text:
                check_non_negative(text)
        for text in (self.mark_price, self.index_price, self.funding_rate):
            if text:
                check_num(text)
        if self.next_funding_time:
            ms_text_to_ns(self.next_funding_time)

    def present(self) -> dict[str, str]:
        """The fields this message carries, by wire name."""
        out = {}
        for wire, attr in zip(_TICKER_FIELDS, _TICKER_ATTRS, strict=True):
            value = getattr(self, attr)
            if value is not None:
                out[wire] = value
        return out


_TICKER_ATTRS: Final = tuple(re.sub(r"(?<!^)([A-Z])", r"_\1", f).lower() for f in _TICKER_FIELDS)

_envelope_decoder = msgspec.json.Decoder(_Envelope)
_trades_decoder = msgspec.json.Decoder(list[_Trade])
_liquidations_decoder = msgspec.json.Decoder(list[_Liquidation])
_book_decoder = msgspec.json.Decoder(_Book)
_ticker_decoder = msgspec.json.Decoder(_Ticker)
_request_encoder = msgspec.json.Encoder()

# ---------------------------------------------------------------------------------------------
# Per-symbol state


def _value(fields: Mapping[str, str], name: str) -> str | None:
    """A merged ticker field, ``None`` when absent or empty."""
    return fields.get(name) or None


class _Symbol:
    """Everything the codec knows about one subscribed instrument."""

    __slots__ = (
        "book",
        "book_topic",
        "bybit",
        "contract_size",
        "funding",
        "l2",
        "last_u",
        "liquidation",
        "mark",
        "native",
        "oi",
        "resyncing",
        "symbol",
        "synced",
        "ticker",
        "ticker_fields",
        "trade",
    )

    def __init__(self, sub: Subscription, book_depth: int) -> None:
        category, self.bybit = _split_native(sub.native_symbol)
        """Bybit's own spelling (upper case), as in topics."""
        self.native = self.bybit if category is None else f"{category}:{self.bybit}"
        self.symbol = sub.symbol
        self.contract_size = sub.contract_size
        types = sub.data_types
        self.trade = DataType.TRADE in types
        self.ticker = DataType.TICKER in types
        self.funding = DataType.FUNDING_RATE in types
        self.mark = DataType.MARK_PRICE in types
        self.oi = DataType.OPEN_INTEREST in types
        self.liquidation = DataType.LIQUIDATION in types
        self.l2 = DataType.L2_ORDERBOOK in types
        self.book_topic = f"orderbook.{book_depth}.{self.bybit}"
        self.book = OrderBook()
        self.synced = False
        """A snapshot was applied on this connection and the chain has held since."""
        self.resyncing = False
        """Unsubscribe + subscribe were sent for the book; waiting for its snapshot."""
        self.last_u = 0
        """The ``u`` of the last applied book message."""
        self.ticker_fields: dict[str, str] | None = None
        """The merged ticker (wire name → text), ``None`` until a snapshot arrived."""

    def topics(self) -> list[str]:
        out = []
        if self.l2:
            out.append(self.book_topic)
        if self.ticker or self.funding or self.mark or self.oi:
            out.append(f"tickers.{self.bybit}")
        if self.trade:
            out.append(f"publicTrade.{self.bybit}")
        if self.liquidation:
            out.append(f"allLiquidation.{self.bybit}")
        return out

    def reset(self) -> None:
        """Forget the book and the merged ticker (new connection)."""
        self.book.clear()
        self.synced = False
        self.resyncing = False
        self.last_u = 0
        self.ticker_fields = None


# ---------------------------------------------------------------------------------------------
# The codec

_Handler = Callable[["_Symbol", _Envelope, int], list[MarketEvent]]


class BybitCodec(Codec):
    """The protocol state of one Bybit v5 public connection (one category).

    **Book sync** (Bybit's procedure for WS-snapshot books; bybit.md section 5A), per symbol:

    1. After (re)subscribing, the first ``orderbook`` message is a ``snapshot``: the book is
       replaced, a :class:`~relay.events.BookSnapshot` is published with ``sequence = u``, and
       a ``book_synced`` status follows. Deltas before it are dropped
       (``counters.stale_deltas_dropped``); none is published before its snapshot.
    2. Any later ``snapshot`` resets the book the same way (Bybit sends one after a service
       restart, then with ``u == 1``); on depth > 1 it is reported as ``book_synced`` with a
       "venue reset" detail. Depth 1 is snapshot-only: every message is published as a
       snapshot.
    3. Each delta must have ``u == previous u + 1`` (bybit.md marks the +1 step ⚠ for the
       depth streams; the 2026 capture follows it). ``u == previous u`` is a repeat and is
       dropped; anything else is a gap: ``counters.book_gaps``, ``book_gap`` and
       ``book_resync`` statuses, the symbol's book is dropped, and an ``unsubscribe`` then a
       ``subscribe`` of that symbol's book topic are queued: Bybit answers the new
       subscription with a fresh snapshot. Deltas until then are dropped.
    4. A book left crossed by a snapshot or delta is corrupt: nothing is published for that
       message and the symbol resyncs as for a gap (``book_resync`` with the prices).

    Only the affected symbol resyncs; other books keep flowing. Bybit sends no checksum.
    :meth:`resync` starts step 3's resubscription from outside; :attr:`synced` is true while
    every book is past its snapshot.

    **Other frames.** Pongs and successful acks are dropped; a refused request becomes a
    ``venue_error`` status. Topics the codec did not subscribe (kline, other depths, other
    symbols on a shared replay) are ignored. Anything undecodable, including a known topic
    whose payload has the wrong shape or types, counts ``counters.parse_errors`` and becomes
    a ``parse_error`` status.
    """

    max_send_rate = 5.0  # Bybit documents no limit for public WS requests ⚠; be modest
    ping_interval = 20.0  # Bybit's recommended client ping period
    max_lifetime = None  # no documented forced disconnect ⚠

    def __init__(
        self,
        venue: str,
        category: Category,
        subscriptions: Sequence[Subscription],
        endpoints: Endpoints,
        *,
        book_depth: int = BOOK_DEPTH,
    ) -> None:
        """One connection of ``category`` for ``subscriptions`` (distinct Bybit symbols,
        all of that category; :func:`make_codecs` checks and shards)."""
        super().__init__()
        if category not in CATEGORIES:
            raise ValueError(f"{venue}: unsupported Bybit category {category!r}")
        if book_depth not in BOOK_DEPTHS:
            raise ValueError(f"{venue}: Bybit has no orderbook depth {book_depth}")
        self.venue = venue
        self.category: Category = category
        self.url = f"{_ws_base(endpoints.ws_url)}/{category}"
        self.book_depth = book_depth
        self._args_per_request = (
            SPOT_ARGS_PER_REQUEST if category == "spot" else LINEAR_ARGS_PER_REQUEST
        )
        self._symbols: dict[str, _Symbol] = {}  # by Bybit symbol
        for sub in subscriptions:
            state = _Symbol(sub, book_depth)
            if state.bybit in self._symbols:
                raise ValueError(f"{venue}: {state.bybit} subscribed twice on {category}")
            self._symbols[state.bybit] = state
        self.topics: list[str] = [t for s in self._symbols.values() for t in s.topics()]
        """The topics this connection subscribes to."""
        self._requests: dict[str, list[str]] = {}  # req_id → args, until its ack
        self._next_req = 1
        # Topic kind → handler: the first thing looked up for every push.
        self._handlers: dict[str, _Handler] = {
            "orderbook": self._on_book,
            "publicTrade": self._on_trades,
            "tickers": self._on_ticker,
            "allLiquidation": self._on_liquidations,
        }

    # -- connection ---------------------------------------------------------------------------

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Reset all state and queue the ``subscribe`` requests (``req_id`` 1, 2, …)."""
        for state in self._symbols.values():
            state.reset()
        self._requests = {}
        self._next_req = 1
        for topics in chunks(self.topics, self._args_per_request):
            self._request("subscribe", topics)
        return []

    def keepalive(self) -> str:
        """Bybit's application ping (answered with ``{"op":"ping","ret_msg":"pong",…}``)."""
        return _PING

    def _request(self, op: str, args: list[str]) -> None:
        req_id = str(self._next_req)
        self._next_req += 1
        self._requests[req_id] = args
        frame = {"req_id": req_id, "op": op, "args": args}
        self._actions.append(SendFrame(_request_encoder.encode(frame).decode()))

    # -- frames -------------------------------------------------------------------------------

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        env = _envelope_decoder.decode(data)
        topic = env.topic
        if topic is not None:
            kind, _, rest = topic.partition(".")
            handler = self._handlers.get(kind)
            if handler is None:
                return []  # kline and other topics we never ask for
            if kind == "orderbook":
                depth, _, rest = rest.partition(".")
                if depth != str(self.book_depth):
                    return []  # another depth (a shared replay): not our book
            state = self._symbols.get(rest)
            if state is None:
                return []  # a symbol of another connection on a shared replay
            if env.data is msgspec.UNSET:
                return [self._parse_error(f"{topic}: no data", recv_ns)]
            try:
                return handler(state, env, recv_ns)
            except msgspec.DecodeError as exc:
                return [self._parse_error(f"{topic}: {exc}", recv_ns)]
        if env.op is not None:
            return self._on_reply(env, recv_ns)
        return [self._parse_error("unrecognized frame", recv_ns)]

    def _on_reply(self, env: _Envelope, recv_ns: int) -> list[MarketEvent]:
        """A subscribe/unsubscribe ack or a pong: only a refusal is news."""
        args = self._requests.pop(env.req_id, None) if env.req_id is not None else None
        if env.success is not False:
            return []
        detail = f"{env.op} refused: {env.ret_msg}"
        if args:
            detail += f" (args {','.join(args)})"
        return [self._status("venue_error", detail, recv_ns)]

    # -- trades, liquidations -----------------------------------------------------------------

    def _on_trades(self, state: _Symbol, env: _Envelope, recv_ns: int) -> list[MarketEvent]:
        if not state.trade:
            return []
        assert env.data is not msgspec.UNSET
        trades = _trades_decoder.decode(env.data)
        venue, symbol, native, cs = self.venue, state.symbol, state.native, state.contract_size
        return [
            Trade(
                venue=venue,
                symbol=symbol,
                native_symbol=native,
                ts_venue=t.time * NS_PER_MS,
                ts_recv=recv_ns,
                trade_id=t.id,
                price=t.price,
                size=scale_size(t.size, cs),
                side="buy" if t.side == "Buy" else "sell",
            )
            for t in trades
        ]

    def _on_liquidations(self, state: _Symbol, env: _Envelope, recv_ns: int) -> list[MarketEvent]:
        if not state.liquidation:
            return []
        assert env.data is not msgspec.UNSET
        out: list[MarketEvent] = []
        seen: dict[tuple[int, str, str, str], int] = {}
        for liq in _liquidations_decoder.decode(env.data):
            # Bybit gives no id. The message id falls back to (time, side, price, size); two
            # equal entries in one message are told apart by their rank among equals, which
            # is the same however often the venue's message is seen.
            key = (liq.time, liq.side, liq.price, liq.size)
            rank = seen.get(key, 0)
            seen[key] = rank + 1
            out.append(
                Liquidation(
                    venue=self.venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=liq.time * NS_PER_MS,
                    ts_recv=recv_ns,
                    # S is the position side: Buy = a long was liquidated = "buy".
                    side="buy" if liq.side == "Buy" else "sell",
                    price=liq.price,
                    size=scale_size(liq.size, state.contract_size),
                    liquidation_id=(
                        f"{liq.time}:{liq.side}:{liq.price}:{liq.size}#{rank}" if rank else None
                    ),
                )
            )
        return out

    # -- tickers ------------------------------------------------------------------------------

    def _on_ticker(self, state: _Symbol, env: _Envelope, recv_ns: int) -> list[MarketEvent]:
        assert env.data is not msgspec.UNSET
        present = _ticker_decoder.decode(env.data).present()
        if env.type == "snapshot":
            state.ticker_fields = fields = present
        elif env.type == "delta":
            fields_or_none = state.ticker_fields
            if fields_or_none is None:
                # Bybit starts every subscription with a snapshot; a delta without one
                # cannot be merged.
                self.counters.stale_deltas_dropped += 1
                return []
            fields = fields_or_none
            fields.update(present)
        else:
            return [self._parse_error(f"tickers.{state.bybit}: type {env.type!r}", recv_ns)]
        ts_venue = None if env.ts is None else env.ts * NS_PER_MS
        cs = state.contract_size
        venue, symbol, native = self.venue, state.symbol, state.native
        out: list[MarketEvent] = []
        if state.ticker and not _QUOTE_FIELDS.isdisjoint(present):
            bid_size = _value(fields, "bid1Size")
            ask_size = _value(fields, "ask1Size")
            out.append(
                Ticker(
                    venue=venue,
                    symbol=symbol,
                    native_symbol=native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    bid_price=_value(fields, "bid1Price"),
                    bid_size=None if bid_size is None else scale_size(bid_size, cs),
                    ask_price=_value(fields, "ask1Price"),
                    ask_size=None if ask_size is None else scale_size(ask_size, cs),
                    last_price=_value(fields, "lastPrice"),
                    sequence=env.cs,
                )
            )
        mark = _value(fields, "markPrice")
        if state.mark and mark is not None and not _MARK_FIELDS.isdisjoint(present):
            out.append(
                MarkPrice(
                    venue=venue,
                    symbol=symbol,
                    native_symbol=native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    mark_price=mark,
                    index_price=_value(fields, "indexPrice"),
                )
            )
        rate = _value(fields, "fundingRate")
        if state.funding and rate is not None and not _FUNDING_FIELDS.isdisjoint(present):
            next_time = _value(fields, "nextFundingTime")
            out.append(
                FundingRate(
                    venue=venue,
                    symbol=symbol,
                    native_symbol=native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    rate=rate,
                    next_funding_ts=None if next_time is None else int(next_time) * NS_PER_MS,
                    mark_price=mark,
                    index_price=_value(fields, "indexPrice"),
                )
            )
        oi = _value(fields, "openInterest")
        if state.oi and oi is not None and not _OI_FIELDS.isdisjoint(present):
            out.append(
                OpenInterest(
                    venue=venue,
                    symbol=symbol,
                    native_symbol=native,
                    ts_venue=ts_venue,
                    ts_recv=recv_ns,
                    open_interest=scale_size(oi, cs),
                    open_interest_value=_value(fields, "openInterestValue"),
                )
            )
        return out

    # -- order book ---------------------------------------------------------------------------

    def _on_book(self, state: _Symbol, env: _Envelope, recv_ns: int) -> list[MarketEvent]:
        if not state.l2:
            return []
        assert env.data is not msgspec.UNSET
        msg = _book_decoder.decode(env.data)
        stamp = env.cts if env.cts is not None else env.ts
        ts_venue = None if stamp is None else stamp * NS_PER_MS
        out: list[MarketEvent] = []
        if env.type == "snapshot":
            self._snapshot(state, msg, ts_venue, recv_ns, out)
        elif env.type == "delta":
            self._delta(state, msg, ts_venue, recv_ns, out)
        else:
            out.append(self._parse_error(f"{state.book_topic}: type {env.type!r}", recv_ns))
        return out

    def _snapshot(
        self, state: _Symbol, msg: _Book, ts_venue: int | None, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        # This snapshot answers any resubscription under way: should it be crossed, the
        # resync below must resubscribe again, not wait for a snapshot that never comes.
        state.resyncing = False
        book = state.book
        book.apply_snapshot(msg.book_bids, msg.book_asks)
        if book.is_crossed():
            self._resync(state, recv_ns, out, f"snapshot u={msg.update_id} is crossed")
            return
        was_synced = state.synced
        state.synced = True
        state.last_u = msg.update_id
        out.append(
            BookSnapshot(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=ts_venue,
                ts_recv=recv_ns,
                sequence=msg.update_id,
                bids=scale_levels(msg.bids, state.contract_size),
                asks=scale_levels(msg.asks, state.contract_size),
            )
        )
        if not was_synced:
            detail = f"snapshot u={msg.update_id}"
            out.append(self._symbol_status(state, "book_synced", detail, recv_ns))
        elif self.book_depth > 1:
            detail = f"venue reset the book: snapshot u={msg.update_id}"
            out.append(self._symbol_status(state, "book_synced", detail, recv_ns))

    def _delta(
        self, state: _Symbol, msg: _Book, ts_venue: int | None, recv_ns: int, out: list[MarketEvent]
    ) -> None:
        if not state.synced:
            self.counters.stale_deltas_dropped += 1
            return
        u, last = msg.update_id, state.last_u
        if u != last + 1:
            if u == last:
                self.counters.stale_deltas_dropped += 1  # a repeat of the last update
                return
            detail = f"expected u={last + 1}, got u={u}"
            out.append(self._book_gap(state, detail, recv_ns))
            self._resync(state, recv_ns, out, f"sequence gap: {detail}")
            return
        book = state.book
        book.apply_delta(msg.book_bids, msg.book_asks)
        if crossing := book.crossing():
            self._resync(state, recv_ns, out, f"book crossed after u={u}: {crossing}")
            return
        state.last_u = u
        out.append(
            BookDelta(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=ts_venue,
                ts_recv=recv_ns,
                first_sequence=u,
                sequence=u,
                prev_sequence=last,
                bids=scale_levels(msg.bids, state.contract_size),
                asks=scale_levels(msg.asks, state.contract_size),
            )
        )

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Rebuild the book of canonical ``symbol`` from a fresh WS snapshot, as after a gap
        (step 3): a ``book_resync`` status, the book is dropped, and an ``unsubscribe`` then
        a ``subscribe`` of its ``orderbook`` topic only are queued; deltas are dropped until
        the snapshot that answers them. A book still waiting for its snapshot (after
        connecting or an earlier resync) gets the status but no second request. The
        symbol's other topics and other symbols are untouched; a symbol without a book on
        this connection is ignored.
        """
        books = (s for s in self._symbols.values() if s.l2)
        return self._resync_books(
            books, symbol, reason, recv_ns, lambda s, d, out: self._resync(s, recv_ns, out, d)
        )

    @property
    def synced(self) -> bool:
        """Whether every book on this connection has had its snapshot since
        :meth:`connected` and no resync is under way."""
        return all(state.synced for state in self._symbols.values() if state.l2)

    def _resync(self, state: _Symbol, recv_ns: int, out: list[MarketEvent], detail: str) -> None:
        """Drop the symbol's book and resubscribe its book topic to get a fresh snapshot."""
        out.append(self._book_resync(state, f"{detail}; resubscribing", recv_ns))
        state.book.clear()
        state.synced = False
        if not state.resyncing:
            state.resyncing = True
            self._request("unsubscribe", [state.book_topic])
            self._request("subscribe", [state.book_topic])


def _ws_base(ws_url: str) -> str:
    """The category-less base of ``ws_url`` (a trailing ``/spot``, ``/linear``… is dropped)."""
    base = ws_url.rstrip("/")
    head, sep, last = base.rpartition("/")
    if sep and last in ("spot", "linear", "inverse", "option", "spread"):
        return head
    return base


# ---------------------------------------------------------------------------------------------
# The adapter

_SUPPORTED: Final[Mapping[Category, frozenset[DataType]]] = {
    "spot": frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK}),
    "linear": frozenset(DataType),
}


def make_codecs(
    venue: str,
    subscriptions: Sequence[Subscription],
    endpoints: Endpoints,
    *,
    credentials: Mapping[str, str] = {},  # public streams need none
    book_depth: int = BOOK_DEPTH,
) -> list[Codec]:
    """One :class:`BybitCodec` per category and shard: spot connections first, then linear.

    Subscriptions naming the same category and Bybit symbol (in any spelling) are merged.
    A symbol's topics all go to one connection; symbols are packed onto connections in the
    order given while the JSON args array stays within :data:`MAX_ARGS_CHARS`. Raises
    ``ValueError`` for a data type the category lacks (funding, mark price, open interest
    and liquidations are linear-only), an unknown category prefix, or one instrument
    mapped to two canonical symbols.
    """

    def key(sub: Subscription) -> tuple[Category, str]:
        category = category_of(sub)
        check_data_types(venue, f"bybit {category}", sub, _SUPPORTED[category])
        return category, _split_native(sub.native_symbol)[1]

    def args_chars(sub: Subscription) -> int:
        # Each topic costs its quoted text plus a comma in the args array.
        return sum(len(t) + 3 for t in _Symbol(sub, book_depth).topics())

    merged = merge_subscriptions(venue, subscriptions, key)
    codecs: list[Codec] = []
    for category in CATEGORIES:
        subs = [sub for (cat, _), sub in merged.items() if cat == category]
        shards = pack(subs, args_chars, MAX_ARGS_CHARS - 2)  # less the array's brackets
        codecs += [
            BybitCodec(venue, category, shard, endpoints, book_depth=book_depth) for shard in shards
        ]
    return codecs


# ---------------------------------------------------------------------------------------------
# Instrument list


class _PriceFilter(msgspec.Struct, gc=False):
    tickSize: str | None = None


class _LotSizeFilter(msgspec.Struct, gc=False):
    qtyStep: str | None = None  # linear
    basePrecision: str | None = None  # spot


class _InstrumentInfo(msgspec.Struct, gc=False):
    symbol: str
    status: str
    baseCoin: str
    quoteCoin: str
    contractType: str = ""  # linear only
    deliveryTime: str = "0"  # linear only; "0" for perpetuals
    priceFilter: _PriceFilter = msgspec.field(default_factory=_PriceFilter)
    lotSizeFilter: _LotSizeFilter = msgspec.field(default_factory=_LotSizeFilter)


class _InstrumentsResult(msgspec.Struct, gc=False):
    category: str = ""
    items: list[_InstrumentInfo] = msgspec.field(default_factory=list, name="list")


class _InstrumentsAnswer(msgspec.Struct, gc=False):
    retCode: int
    retMsg: str = ""
    # An error answer carries ``"result": {}``.
    result: _InstrumentsResult = msgspec.field(default_factory=_InstrumentsResult)


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """``instruments-info`` for spot and for linear (one page; see the module docstring)."""
    base = f"{endpoints.rest_url.rstrip('/')}/v5/market/instruments-info"
    # Spot ignores limit/cursor (not paginated); linear defaults to 500 a page, 1000 at most.
    return [f"{base}?category=spot", f"{base}?category=linear&limit=1000"]


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The instruments of one ``instruments-info`` answer (see the module docstring)."""
    answer = decode("bybit", url, body, _InstrumentsAnswer)
    if answer.retCode != 0:
        raise ValueError(f"bybit: {url} answered retCode {answer.retCode}: {answer.retMsg}")
    category = answer.result.category
    if category not in CATEGORIES:
        raise ValueError(f"bybit: {url}: unexpected category {category!r}")
    out: list[Instrument] = []
    for i in answer.result.items:
        kind: Kind
        expiry = None
        if category == "spot":
            kind, lot = "spot", i.lotSizeFilter.basePrecision
        elif i.contractType == "LinearPerpetual":
            kind, lot = "perp", i.lotSizeFilter.qtyStep
        elif i.contractType == "LinearFutures":
            kind, lot = "future", i.lotSizeFilter.qtyStep
            ms = epoch_ms(i.deliveryTime, f"bybit: {url}: {i.symbol} deliveryTime")
            expiry = expiry_code(ms)
        else:
            raise ValueError(f"bybit: {url}: {i.symbol} has contractType {i.contractType!r}")
        out.append(
            Instrument(
                native_symbol=f"{category}:{i.symbol}",
                symbol=canonical(i.baseCoin, i.quoteCoin, kind, expiry),
                kind=kind,
                base=i.baseCoin,
                quote=i.quoteCoin,
                price_increment=i.priceFilter.tickSize,
                size_increment=lot,
                contract_size=None,
                active=i.status == "Trading",
            )
        )
    return out


def _native_key(sub: Subscription) -> str:
    """``<category>:<SYMBOL>`` of a subscription, prefixed or bare (see :func:`category_of`)."""
    try:
        return f"{category_of(sub)}:{_split_native(sub.native_symbol)[1]}"
    except ValueError:
        return sub.native_symbol  # an unknown prefix: make_codecs refuses it anyway


INSTRUMENTS: Final = InstrumentSource(
    urls=instrument_urls, parse=parse_instruments, native_key=_native_key
)


ADAPTER = Adapter(
    name="bybit",
    data_types=frozenset(DataType),
    default_endpoints=Endpoints(
        ws_url="wss://stream.bybit.com/v5/public", rest_url="https://api.bybit.com"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    instruments=INSTRUMENTS,
)
