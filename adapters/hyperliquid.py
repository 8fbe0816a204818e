"""Hyperliquid (HyperCore perps and spot): the sans-IO codec for the public WebSocket.

One :class:`HyperliquidCodec` serves one connection to ``<ws_url>`` (``wss://api.hyperliquid.xyz
/ws``). Every payload arrives as ``{"channel": <type>, "data": ...}``. On
:meth:`~HyperliquidCodec.connected` the codec queues one ``subscribe`` frame per coin and
subscription type (Hyperliquid takes exactly one coin per subscription):

* ``trades`` → :class:`~relay.events.Trade`. ``side`` ``"B"`` is a buying taker and ``"A"``
  a selling taker. (⚠ The docs call the field only "side"; we read it as the aggressor side,
  as ccxt and third-party SDKs with recorded prints do: a resting bid is hit by an ``A``.)
  ``tid`` is the trade id (sent as an integer, ccxt's recording has it as a string: both
  give the same digits). The first frame after subscribing may replay recent trades; they
  are published too, and their ids make JetStream drop the ones already stored.
* ``bbo`` → :class:`~relay.events.Ticker` (``bbo[0]`` best bid, ``bbo[1]`` best ask, either
  may be ``null``), ``ts_venue`` from ``time``; no sequence id exists.
* ``l2Book`` → :class:`~relay.events.BookSnapshot` only. Every message is a full snapshot of
  the top levels (20 a side), so there are no deltas, no sequence chain and no checksum.
  **Sequence mapping:** ``BookSnapshot.sequence`` is the message's ``time`` in epoch
  **milliseconds** (block time; one book message per block), which makes the message id
  ``…:l2s:<time>`` identical for the same book seen twice. A snapshot whose ``time`` is not
  newer than the last one published on this connection is dropped
  (``counters.stale_deltas_dropped``). A crossed snapshot is corrupt: it is not published,
  and the coin's ``l2Book`` is resubscribed (``book_resync``); the next good snapshot is
  published with a ``book_synced`` status, as is the first one after every connect. A
  resync asked for by downstream (:meth:`HyperliquidCodec.resync`) sends nothing: it drops
  the coin's book, and the next newer ``l2Book`` message is the fresh snapshot.
* ``activeAssetCtx`` (perps) → :class:`~relay.events.FundingRate` (``funding``, the current
  rate **per hour** ⚠, with ``markPx`` and ``oraclePx``), :class:`~relay.events.MarkPrice`
  (``markPx``; ``oraclePx`` as the index price) and :class:`~relay.events.OpenInterest`
  (``openInterest``). The context carries **no timestamp**, so ``ts_venue`` is ``None`` and
  the message ids derive from the values; to keep one event per change, each of the three is
  emitted only when its values differ from the previous context of that coin on this
  connection (the server repeats unchanged contexts).

Liquidations have no public stream (user feeds only), so they are not offered.

**Units.** Sizes (``sz``, ``openInterest``) are in base units of the coin as Hyperliquid
names it (``kPEPE`` = 1000 PEPE). When a subscription sets ``contract_size`` the sizes are
multiplied by it; prices are never converted, so keep ``kPEPE`` as its own base
(``kPEPE-USDC-PERP``) rather than scaling it to PEPE.

**Connection.** The server drops a connection that has sent nothing for 60 s: the codec's
:meth:`~HyperliquidCodec.keepalive` is ``{"method":"ping"}`` every 50 s (the official SDK's
interval), answered by ``{"channel":"pong"}``. The per-IP limits are 1000 subscriptions and
2000 client messages a minute over all connections, so ``make_codecs`` builds a single
connection (more connections would not raise either limit) and refuses more than
:data:`MAX_SUBSCRIPTIONS` subscriptions. ``{"channel":"error"}`` frames become
``venue_error`` statuses; no server shutdown notice is documented.

**Instrument list** (``ADAPTER.instruments``): Hyperliquid's info endpoint takes POSTs only,
so the source gives request bodies: ``POST <rest_url>/info`` with ``{"type":"meta"}`` (perps:
``universe[].name`` is the native, canonical ``<name>-USDC-PERP``, lot
``10^-szDecimals``, active unless ``isDelisted``) and with ``{"type":"spotMeta"}`` (spot
pairs: ``universe[].name`` is the native, ``PURR/USDC`` or ``@<index>``, and its ``tokens``
index pair names base and quote in ``tokens[]``, so ``@107`` resolves to e.g. ``HYPE-USDC``;
lot ``10^-szDecimals`` of the base token; always active). Both answers come from the same URL,
so the parser tells them apart by shape (only ``spotMeta`` has ``tokens``). Prices have no
fixed tick (at most 5 significant figures), so ``price_increment`` is ``None``; sizes are
base units. HIP-3 dexes (``dex:COIN``) need ``{"type":"meta","dex":…}`` and are not
fetched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import msgspec

from adapters._common import (
    EpochMs,
    Int64,
    check_data_types,
    merge_subscriptions,
    scale_levels,
    scale_size,
)
from relay.book import OrderBook, parse_levels
from relay.codec import Adapter, Codec, Endpoints, SendFrame, Subscription
from relay.events import (
    BookSnapshot,
    DataType,
    FundingRate,
    Level,
    MarketEvent,
    MarkPrice,
    OpenInterest,
    Ticker,
    Trade,
    VenueStatus,
    check_non_negative,
    check_num,
)
from relay.instruments import Instrument, InstrumentSource, canonical, decode, step_text
from relay.timestamps import NS_PER_MS

__all__ = [
    "ADAPTER",
    "INSTRUMENTS",
    "MAX_SUBSCRIPTIONS",
    "HyperliquidCodec",
    "canonical_symbol",
    "make_codecs",
    "parse_instruments",
]

MAX_SUBSCRIPTIONS: Final = 1000
"""Hyperliquid's per-IP limit of subscriptions (one per coin and type)."""
PING_FRAME: Final = '{"method":"ping"}'

# ---------------------------------------------------------------------------------------------
# Symbols

_PERP = re.compile(r"k?[A-Z0-9]+")  # BTC, ETH, kPEPE (k = 1000 units)
_SPOT_PAIR = re.compile(r"([A-Za-z0-9]+)/([A-Za-z0-9]+)")  # PURR/USDC


def canonical_symbol(native: str) -> str | None:
    """``BTC`` → ``BTC-USDC-PERP``; ``PURR/USDC`` → ``PURR-USDC``; otherwise ``None``.

    Perps are named by their coin alone and are margined and settled in USDC, hence the
    quote. Spot pairs other than ``PURR/USDC`` are named ``@<index>`` (a position in
    ``spotMeta.universe``) and HIP-3 perps ``dex:COIN`` (whose collateral need not be USDC):
    neither can be mapped from the name, so both give ``None``; at run time the ``meta`` /
    ``spotMeta`` info endpoints (:data:`INSTRUMENTS`) decide.
    """
    if _PERP.fullmatch(native):
        return f"{native}-USDC-PERP"
    if m := _SPOT_PAIR.fullmatch(native):
        return f"{m.group(1)}-{m.group(2)}"
    return None


def _is_perp_name(native: str) -> bool:
    """Whether ``native`` names a perp (which has an ``activeAssetCtx``), not a spot pair."""
    return "/" not in native and not native.startswith("@")


# ---------------------------------------------------------------------------------------------
# Wire formats. Prices and sizes are decimal strings, checked on decode.


class _Envelope(msgspec.Struct, gc=False):
    channel: str
    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


class _Level(msgspec.Struct, gc=False):
    px: str
    sz: str

    def __post_init__(self) -> None:
        check_non_negative(self.px)
        check_non_negative(self.sz)


class _BookLevel(msgspec.Struct, gc=False):
    """A book level: checked by relay.book.parse_levels, once per text thanks to its cache,
    rather than by a ``__post_init__`` per level of every (full-depth) message."""

    px: str
    sz: str


class _Trade(msgspec.Struct, gc=False):
    coin: str
    side: Literal["B", "A"]
    px: str
    sz: str
    time: EpochMs
    tid: Int64 | str

    def __post_init__(self) -> None:
        check_non_negative(self.px)
        check_non_negative(self.sz)


class _Bbo(msgspec.Struct, gc=False):
    coin: str
    time: EpochMs
    bbo: tuple[_Level | None, _Level | None]


class _Book(msgspec.Struct, gc=False):
    coin: str
    time: EpochMs
    levels: tuple[list[_BookLevel], list[_BookLevel]]


class _Ctx(msgspec.Struct, gc=False):
    funding: str
    open_interest: str = msgspec.field(name="openInterest")
    oracle_px: str = msgspec.field(name="oraclePx")
    mark_px: str = msgspec.field(name="markPx")

    def __post_init__(self) -> None:
        check_num(self.funding)
        check_non_negative(self.open_interest)
        check_num(self.oracle_px)
        check_num(self.mark_px)


class _AssetCtx(msgspec.Struct, gc=False):
    coin: str
    ctx: _Ctx


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_trades_decoder = msgspec.json.Decoder(list[_Trade])
_bbo_decoder = msgspec.json.Decoder(_Bbo)
_book_decoder = msgspec.json.Decoder(_Book)
_ctx_decoder = msgspec.json.Decoder(_AssetCtx)
_error_decoder = msgspec.json.Decoder(str | dict[str, object] | None)
_encoder = msgspec.json.Encoder()


# ---------------------------------------------------------------------------------------------
# Per-coin state


class _Coin:
    __slots__ = (
        "book",
        "book_time",
        "contract_size",
        "ctx",
        "funding",
        "last_funding",
        "last_mark",
        "last_oi",
        "mark",
        "native",
        "oi",
        "symbol",
        "synced",
        "ticker",
        "trade",
        "want_book",
    )

    def __init__(self, sub: Subscription) -> None:
        self.native = sub.native_symbol
        self.symbol = sub.symbol
        self.contract_size = sub.contract_size
        types = sub.data_types
        self.trade = DataType.TRADE in types
        self.ticker = DataType.TICKER in types
        self.want_book = DataType.L2_ORDERBOOK in types
        self.funding = DataType.FUNDING_RATE in types
        self.mark = DataType.MARK_PRICE in types
        self.oi = DataType.OPEN_INTEREST in types
        self.ctx = self.funding or self.mark or self.oi
        self.book = OrderBook()
        self.reset()

    def reset(self) -> None:
        self.book.clear()
        self.book_time = -1
        """``time`` of the last published snapshot on this connection."""
        self.synced = False
        """A snapshot was published since connect / since the last resync."""
        self.last_funding: tuple[str, str, str] | None = None
        self.last_mark: tuple[str, str] | None = None
        self.last_oi: str | None = None

    def subscriptions(self) -> list[dict[str, str]]:
        out = []
        if self.trade:
            out.append({"type": "trades", "coin": self.native})
        if self.ticker:
            out.append({"type": "bbo", "coin": self.native})
        if self.want_book:
            out.append(self.book_subscription())
        if self.ctx:
            out.append({"type": "activeAssetCtx", "coin": self.native})
        return out

    def book_subscription(self) -> dict[str, str]:
        # Unsubscribing needs exactly this body again, so there is one place that builds it.
        return {"type": "l2Book", "coin": self.native}


# ---------------------------------------------------------------------------------------------
# The codec


class HyperliquidCodec(Codec):
    """The protocol state of one Hyperliquid WebSocket connection (see the module docstring).

    Frames for coins or channels this codec did not subscribe are ignored; a frame that is
    not JSON, has no ``channel``, or whose payload for a subscribed channel has the wrong
    shape, types or numbers is a ``parse_error`` (``counters.parse_errors``).
    """

    max_send_rate = 25.0  # 2000 client messages / minute per IP (33/s); keep a margin
    ping_interval = 50.0  # the server closes after 60 s without a client message
    max_lifetime = None  # no forced disconnect documented

    def __init__(
        self, venue: str, subscriptions: Sequence[Subscription], endpoints: Endpoints
    ) -> None:
        super().__init__()
        self.venue = venue
        self.url = endpoints.ws_url
        self._coins: dict[str, _Coin] = {}
        for sub in subscriptions:
            if sub.native_symbol in self._coins:
                raise ValueError(f"{venue}: {sub.native_symbol} subscribed twice")
            self._coins[sub.native_symbol] = _Coin(sub)
        self.subscriptions: list[dict[str, str]] = [
            s for coin in self._coins.values() for s in coin.subscriptions()
        ]
        """The subscription bodies this connection sends, in order."""
        if len(self.subscriptions) > MAX_SUBSCRIPTIONS:
            raise ValueError(
                f"{venue}: {len(self.subscriptions)} subscriptions "
                f"(Hyperliquid allows {MAX_SUBSCRIPTIONS} per IP)"
            )
        self._handlers = {
            "trades": self._on_trades,
            "bbo": self._on_bbo,
            "l2Book": self._on_book,
            "activeAssetCtx": self._on_ctx,
        }

    # -- connection ---------------------------------------------------------------------------

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Forget per-connection state and queue one ``subscribe`` frame per subscription."""
        for coin in self._coins.values():
            coin.reset()
        for body in self.subscriptions:
            self._send("subscribe", body)
        return []

    def keepalive(self) -> str:
        return PING_FRAME

    def _send(self, method: str, subscription: dict[str, str]) -> None:
        frame = {"method": method, "subscription": subscription}
        self._actions.append(SendFrame(_encoder.encode(frame).decode()))

    # -- frames -------------------------------------------------------------------------------

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        env = _envelope_decoder.decode(data)
        handler = self._handlers.get(env.channel)
        if handler is not None:
            return handler(env.data, recv_ns)
        if env.channel == "error":
            return [self._venue_error(env.data, recv_ns)]
        # Acks (subscriptionResponse), pongs, and channels we never subscribe (candle,
        # allMids: other feeds on a shared replay) carry nothing for us.
        return []

    def _venue_error(self, data: msgspec.Raw, recv_ns: int) -> VenueStatus:
        try:
            message = _error_decoder.decode(data)
        except msgspec.DecodeError:
            message = bytes(data).decode(errors="replace")
        return self._status("venue_error", f"error: {message}", recv_ns)

    def _on_trades(self, data: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for t in _trades_decoder.decode(data):
            coin = self._coins.get(t.coin)
            if coin is None or not coin.trade:
                continue
            out.append(
                Trade(
                    venue=self.venue,
                    symbol=coin.symbol,
                    native_symbol=coin.native,
                    ts_venue=t.time * NS_PER_MS,
                    ts_recv=recv_ns,
                    trade_id=str(t.tid),
                    price=t.px,
                    size=scale_size(t.sz, coin.contract_size),
                    side="buy" if t.side == "B" else "sell",
                )
            )
        return out

    def _on_bbo(self, data: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        q = _bbo_decoder.decode(data)
        coin = self._coins.get(q.coin)
        if coin is None or not coin.ticker:
            return []
        bid, ask = q.bbo
        cs = coin.contract_size
        return [
            Ticker(
                venue=self.venue,
                symbol=coin.symbol,
                native_symbol=coin.native,
                ts_venue=q.time * NS_PER_MS,
                ts_recv=recv_ns,
                bid_price=None if bid is None else bid.px,
                bid_size=None if bid is None else scale_size(bid.sz, cs),
                ask_price=None if ask is None else ask.px,
                ask_size=None if ask is None else scale_size(ask.sz, cs),
            )
        ]

    def _on_book(self, data: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        book = _book_decoder.decode(data)
        coin = self._coins.get(book.coin)
        if coin is None or not coin.want_book:
            return []
        if book.time <= coin.book_time:
            self.counters.stale_deltas_dropped += 1
            return []
        bids: list[Level] = [(lv.px, lv.sz) for lv in book.levels[0]]
        asks: list[Level] = [(lv.px, lv.sz) for lv in book.levels[1]]
        # The venue's texts are checked here, before any contract-size arithmetic; the book
        # holds them unscaled (only its prices and which sizes are zero matter to it).
        try:
            book_bids, book_asks = parse_levels(bids), parse_levels(asks)
        except ValueError as exc:  # not raised while decoding: not a bad_frame_errors
            return [self._parse_error(f"l2Book: {exc}", recv_ns)]
        coin.book.apply_snapshot(book_bids, book_asks)
        if crossing := coin.book.crossing():
            return [self._resync(coin, f"l2Book time={book.time} crossed: {crossing}", recv_ns)]
        coin.book_time = book.time
        out: list[MarketEvent] = [
            BookSnapshot(
                venue=self.venue,
                symbol=coin.symbol,
                native_symbol=coin.native,
                ts_venue=book.time * NS_PER_MS,
                ts_recv=recv_ns,
                sequence=book.time,
                bids=scale_levels(bids, coin.contract_size),
                asks=scale_levels(asks, coin.contract_size),
            )
        ]
        if not coin.synced:
            coin.synced = True
            detail = f"l2Book snapshot time={book.time}"
            out.append(self._symbol_status(coin, "book_synced", detail, recv_ns))
        return out

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Drop the book of canonical ``symbol``; **no action is queued**.

        Every ``l2Book`` message is a full snapshot (hyperliquid.md §5), so the coin's next
        one (newer than the last published) is the fresh snapshot, published with a
        ``book_synced`` status; there are no deltas to hold back. A coin without a book on
        this connection is ignored.
        """
        out: list[MarketEvent] = []
        for coin in self._coins.values():
            if coin.symbol != symbol or not coin.want_book:
                continue
            coin.book.clear()
            coin.synced = False
            detail = f"resync asked for: {reason}; the next l2Book snapshot restores it"
            out.append(self._book_resync(coin, detail, recv_ns))
        return out

    @property
    def synced(self) -> bool:
        """Every wanted book has had a snapshot since connect and none awaits a resync."""
        return all(c.synced for c in self._coins.values() if c.want_book)

    def _resync(self, coin: _Coin, detail: str, recv_ns: int) -> VenueStatus:
        """Drop a crossed snapshot and resubscribe the coin's book (that coin only)."""
        coin.book.clear()
        coin.synced = False
        body = coin.book_subscription()
        self._send("unsubscribe", body)
        self._send("subscribe", body)
        return self._book_resync(coin, f"{detail}; resubscribing", recv_ns)

    def _on_ctx(self, data: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        msg = _ctx_decoder.decode(data)
        coin = self._coins.get(msg.coin)
        if coin is None or not coin.ctx:
            return []
        ctx = msg.ctx
        out: list[MarketEvent] = []
        head = {
            "venue": self.venue,
            "symbol": coin.symbol,
            "native_symbol": coin.native,
            "ts_venue": None,  # the context carries no time
            "ts_recv": recv_ns,
        }
        funding = (ctx.funding, ctx.mark_px, ctx.oracle_px)
        if coin.funding and funding != coin.last_funding:
            coin.last_funding = funding
            out.append(
                FundingRate(
                    **head, rate=ctx.funding, mark_price=ctx.mark_px, index_price=ctx.oracle_px
                )
            )
        mark = (ctx.mark_px, ctx.oracle_px)
        if coin.mark and mark != coin.last_mark:
            coin.last_mark = mark
            out.append(MarkPrice(**head, mark_price=ctx.mark_px, index_price=ctx.oracle_px))
        if coin.oi and ctx.open_interest != coin.last_oi:
            coin.last_oi = ctx.open_interest
            oi = scale_size(ctx.open_interest, coin.contract_size)
            out.append(OpenInterest(**head, open_interest=oi))
        return out


# ---------------------------------------------------------------------------------------------
# The adapter

_SUPPORTED: Final = frozenset(
    {
        DataType.TRADE,
        DataType.TICKER,
        DataType.L2_ORDERBOOK,
        DataType.FUNDING_RATE,
        DataType.MARK_PRICE,
        DataType.OPEN_INTEREST,
    }
)
_PERP_ONLY: Final = frozenset({DataType.FUNDING_RATE, DataType.MARK_PRICE, DataType.OPEN_INTEREST})


def make_codecs(
    venue: str,
    subscriptions: Sequence[Subscription],
    endpoints: Endpoints,
    *,
    credentials: Mapping[str, str] = {},  # public data needs none
) -> list[Codec]:
    """One :class:`HyperliquidCodec` for all ``subscriptions`` (none when there are none).

    Subscriptions of the same native coin (exact spelling: ``kPEPE`` is case-sensitive) are
    merged. Funding, mark price and open interest exist for perps only: asking them of a
    spot pair (``PURR/USDC``, ``@107``) is a ``ValueError``, as is any data type Hyperliquid
    does not publish (liquidations).
    """

    def key(sub: Subscription) -> str:
        check_data_types(venue, "hyperliquid (public data)", sub, _SUPPORTED)
        spot_only = sub.data_types & _PERP_ONLY
        if spot_only and not _is_perp_name(sub.native_symbol):
            names = ", ".join(sorted(spot_only))
            raise ValueError(f"{venue}: {sub.native_symbol} is a spot pair: no {names}")
        return sub.native_symbol

    merged = merge_subscriptions(venue, subscriptions, key)
    subs = [s for s in merged.values() if s.data_types]
    if not subs:
        return []
    return [HyperliquidCodec(venue, subs, endpoints)]


# ---------------------------------------------------------------------------------------------
# Instrument list


class _PerpAsset(msgspec.Struct, gc=False):
    name: str
    szDecimals: int
    isDelisted: bool = False


class _SpotPair(msgspec.Struct, gc=False):
    name: str
    tokens: tuple[int, int]


class _SpotToken(msgspec.Struct, gc=False):
    name: str
    szDecimals: int
    index: int


class _Meta(msgspec.Struct, gc=False):
    """A ``meta`` answer, or a ``spotMeta`` one when ``tokens`` is present."""

    universe: msgspec.Raw
    tokens: list[_SpotToken] | None = None


_META_BODIES: Final = (b'{"type":"meta"}', b'{"type":"spotMeta"}')


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """``<rest_url>/info`` twice: one POST for perps, one for spot (:func:`instrument_bodies`)."""
    return [f"{endpoints.rest_url.rstrip('/')}/info"] * len(_META_BODIES)


def instrument_bodies(endpoints: Endpoints) -> list[bytes | None]:
    """The POST bodies of :func:`instrument_urls`: ``meta``, then ``spotMeta``."""
    return list(_META_BODIES)


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The perps of a ``meta`` answer or the spot pairs of a ``spotMeta`` one."""
    meta = decode("hyperliquid", url, body, _Meta)
    if meta.tokens is None:
        return [
            Instrument(
                native_symbol=a.name,
                symbol=canonical(a.name, "USDC", "perp"),
                kind="perp",
                base=a.name,
                quote="USDC",
                price_increment=None,
                size_increment=step_text(a.szDecimals),
                contract_size=None,
                active=not a.isDelisted,
            )
            for a in decode("hyperliquid", url, meta.universe, list[_PerpAsset])
        ]
    tokens = {t.index: t for t in meta.tokens}
    out: list[Instrument] = []
    for pair in decode("hyperliquid", url, meta.universe, list[_SpotPair]):
        base_index, quote_index = pair.tokens
        if base_index not in tokens or quote_index not in tokens:
            raise ValueError(f"hyperliquid: {url}: {pair.name} names an unknown token")
        base, quote = tokens[base_index], tokens[quote_index]
        out.append(
            Instrument(
                native_symbol=pair.name,
                symbol=canonical(base.name, quote.name, "spot"),
                kind="spot",
                base=base.name,
                quote=quote.name,
                price_increment=None,
                size_increment=step_text(base.szDecimals),
                contract_size=None,
                active=True,
            )
        )
    return out


INSTRUMENTS: Final = InstrumentSource(
    urls=instrument_urls, parse=parse_instruments, bodies=instrument_bodies
)


ADAPTER = Adapter(
    name="hyperliquid",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(
        ws_url="wss://api.hyperliquid.xyz/ws", rest_url="https://api.hyperliquid.xyz"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    instruments=INSTRUMENTS,
)
