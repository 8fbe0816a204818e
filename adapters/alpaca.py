"""Alpaca market data stream (crypto and US stocks): the sans-IO codec.

Alpaca serves each feed on its own endpoint and allows one connection per endpoint, so
``make_codecs`` builds **one codec per feed**, and the native symbol says which feed it
belongs to: a symbol with a ``/`` (``BTC/USD``) is crypto, one without (``AAPL``,
``BRK.B``) a stock. The configured ``ws_url`` names the **stock feed**
(``wss://stream.data.alpaca.markets/v2/iex`` by default; ``/v2/sip`` for the paid
consolidated tape, ``/v2/test`` for the always-on test stream; a bare host means ``/v2/iex``);
the crypto feed is ``/v1beta3/crypto/us`` on the same host.

**Session.** The server greets with ``[{"T":"success","msg":"connected"}]`` and wants
``{"action":"auth","key":…,"secret":…}`` within a few seconds. :meth:`AlpacaCodec.connected`
queues the auth frame at once (built from the ``key_id`` / ``secret_key`` credentials; its
``repr`` is redacted, and the keys appear in no event, status or log line); the
``subscribe`` frames follow when ``[{"T":"success","msg":"authenticated"}]`` arrives, so they
never race the authentication. One subscribe frame carries up to
:data:`MAX_SYMBOLS_PER_FRAME` symbols with their ``trades`` / ``quotes`` / ``orderbooks``
lists.

**Errors.** ``{"T":"error","code":…,"msg":…}`` becomes a ``venue_error`` status (code and
message; for 402 auth failed a hint to check the credentials). The codec never answers an
error with :class:`~relay.codec.Reconnect`: a Reconnect is carried out at once, without the
shell's backoff, so after an auth failure (402), a connection-limit refusal (406) or an
insufficient plan (409) it would hammer the server with logins that cannot succeed. The
server closes such sessions itself, and the shell's backoff and circuit breaker pace the
next attempts.

**Messages.** Every server message is a JSON array of objects tagged by ``"T"``; each
element is decoded on its own, so one bad element is a ``parse_error`` and the others still
count. Prices and sizes are JSON numbers: decoded as :class:`~decimal.Decimal` (the digits
as sent) and published as ``format(d, "f")``. Times are RFC 3339 with up to nanosecond
fractions, converted exactly to integer nanoseconds.

* ``"t"`` trades (crypto) → :class:`~relay.events.Trade`; ``tks`` (``B``/``S``) is the taker
  side, ``i`` the trade id. **Stock trades are not offered:** they carry no taker side and
  :class:`~relay.events.Trade` requires one (see :func:`make_codecs`).
* ``"q"`` quotes → :class:`~relay.events.Ticker` (``bp``/``bs``/``ap``/``as``; no sequence id,
  the message id uses the venue time).
* ``"o"`` order books (crypto only) → :class:`~relay.events.BookSnapshot` for a message with
  ``"r": true`` (reset; the documented first message after subscribing), else
  :class:`~relay.events.BookDelta` (absolute sizes, ``0`` removes the level). ⚠ The reset
  flag is shown in Alpaca's own subscribe example but its semantics are not spelled out: we
  require it for the initial state and drop updates that arrive before one
  (``counters.stale_deltas_dropped``) rather than mistake an update for a whole book.
  **Sequence mapping:** Alpaca books have no sequence numbers or checksums, so
  ``sequence`` is the message's venue time ``t`` in epoch **nanoseconds**, raised to the
  previous sequence + 1 should two messages of a book share (or go back in) time, so that
  ids stay unique and increasing; ``first_sequence == sequence``, and ``prev_sequence`` is
  the previous message's sequence on the same book. No gap can be detected. A book left
  crossed by a message is corrupt: nothing is published, and that symbol's ``orderbooks``
  is unsubscribed and subscribed again (``book_resync``) to get a fresh reset; a resync
  asked for by downstream (:meth:`AlpacaCodec.resync`) does the same.
* ``success`` / ``subscription`` acks and the bar, status and correction types are dropped.

**Units.** Crypto sizes are in the base asset. Stock quote sizes are as the feed sends them
(⚠ round lots of 100 shares on some feeds): set ``contract_size`` (e.g. ``100``) on the
subscription to get shares; every size is multiplied by it.

Canonical symbols: ``BTC/USD`` → ``BTC-USD``; stocks are quoted in dollars: ``AAPL`` →
``AAPL-USD``.

**Instrument list** (``ADAPTER.instruments``): ``GET /v2/assets?asset_class=crypto`` and
``GET /v2/assets?status=active&asset_class=us_equity`` on the **trading** API, which is not
the market-data host of ``rest_url``: the default ``https://data.alpaca.markets`` maps to
``https://api.alpaca.markets`` (⚠ paper-trading keys are only accepted by
``https://paper-api.alpaca.markets``), and any other ``rest_url`` (a replay venue) is used
as it is. The endpoint needs the account's keys: the runtime sends the headers of
``INSTRUMENTS.credential_headers`` (``APCA-API-KEY-ID`` = ``key_id``,
``APCA-API-SECRET-KEY`` = ``secret_key``). Crypto assets are spot pairs ``BASE/QUOTE`` with
``price_increment`` and ``min_trade_increment``; stocks are spot ``<symbol>-USD`` without
increments (the list of active stocks is long: thousands of assets). An asset is active when
its ``status`` is ``active`` and it is ``tradable``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from adapters._common import (
    Int64,
    check_levels_magnitude,
    check_non_negative,
    chunks,
    decimal_text,
    merge_subscriptions,
    rfc3339_fraction_ns,
)
from relay.book import OrderBook, parse_levels
from relay.codec import Adapter, Codec, Endpoints, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    Level,
    MarketEvent,
    Ticker,
    Trade,
)
from relay.instruments import Instrument, InstrumentSource, canonical, decode

__all__ = [
    "ADAPTER",
    "CRYPTO_PATH",
    "INSTRUMENTS",
    "MAX_SYMBOLS_PER_FRAME",
    "AlpacaCodec",
    "canonical_symbol",
    "feed_of",
    "feed_urls",
    "make_codecs",
    "parse_instruments",
]

CRYPTO_PATH: Final = "/v1beta3/crypto/us"
DEFAULT_STOCKS_PATH: Final = "/v2/iex"
MAX_SYMBOLS_PER_FRAME: Final = 100
"""Symbols per subscribe frame (Alpaca documents no limit; this keeps frames near 2 kB)."""

Feed = Literal["crypto", "stocks"]

# ---------------------------------------------------------------------------------------------
# Symbols and feeds

_CRYPTO = re.compile(r"([A-Z0-9]+)/([A-Z0-9]+)")  # BTC/USD, ETH/BTC
_STOCK = re.compile(r"[A-Z][A-Z0-9.]*")  # AAPL, BRK.B


def feed_of(native: str) -> Feed:
    """The feed a native symbol belongs to: crypto pairs have a ``/``, stock tickers none."""
    return "crypto" if "/" in native else "stocks"


def canonical_symbol(native: str) -> str | None:
    """``BTC/USD`` → ``BTC-USD``, ``AAPL`` → ``AAPL-USD``; ``None`` for anything else.

    Only Alpaca's own (upper-case) spelling is accepted. Stocks trade in US dollars, hence
    the ``-USD``. At run time ``GET /v2/assets`` (:data:`INSTRUMENTS`) decides; this
    spelling rule serves config checks and starts without that list.
    """
    if m := _CRYPTO.fullmatch(native):
        return f"{m.group(1)}-{m.group(2)}"
    if _STOCK.fullmatch(native):
        return f"{native}-USD"
    return None


def feed_urls(ws_url: str) -> tuple[str, str]:
    """``(crypto URL, stocks URL)`` from the configured ``ws_url`` (see the module docstring).

    ``ValueError`` when its path is neither empty nor a ``/v2/<feed>`` stock feed.
    """
    parts = urlsplit(ws_url)
    root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    path = parts.path.rstrip("/")
    if not path:
        path = DEFAULT_STOCKS_PATH
    elif not re.fullmatch(r"/v2/[a-z_]+", path):
        raise ValueError(f"alpaca ws_url must be a host or a /v2/<feed> stock feed: {ws_url}")
    return root + CRYPTO_PATH, root + path


# ---------------------------------------------------------------------------------------------
# Wire formats. Numbers decode to Decimal with the digits as sent; __post_init__ rejects
# NaN/Infinity (which msgspec accepts from strings) and bad times.


class _Head(msgspec.Struct, gc=False):
    type: str = msgspec.field(name="T")


class _Control(msgspec.Struct, gc=False):
    msg: str = ""
    code: int | None = None


class _Trade(msgspec.Struct, gc=False):
    symbol: str = msgspec.field(name="S")
    price: Decimal = msgspec.field(name="p")
    size: Decimal = msgspec.field(name="s")
    time: str = msgspec.field(name="t")
    id: Int64 = msgspec.field(name="i")
    taker: Literal["B", "S"] | None = msgspec.field(default=None, name="tks")
    ts: int = msgspec.field(default=0, name="__ts")  # filled from ``time``

    def __post_init__(self) -> None:
        check_non_negative(self.price, self.size)
        self.ts = rfc3339_fraction_ns(self.time)


class _Quote(msgspec.Struct, gc=False):
    symbol: str = msgspec.field(name="S")
    bid_price: Decimal = msgspec.field(name="bp")
    bid_size: Decimal = msgspec.field(name="bs")
    ask_price: Decimal = msgspec.field(name="ap")
    ask_size: Decimal = msgspec.field(name="as")
    time: str = msgspec.field(name="t")
    ts: int = msgspec.field(default=0, name="__ts")

    def __post_init__(self) -> None:
        check_non_negative(self.bid_price, self.bid_size, self.ask_price, self.ask_size)
        self.ts = rfc3339_fraction_ns(self.time)


class _Level(msgspec.Struct, gc=False):
    price: Decimal = msgspec.field(name="p")
    size: Decimal = msgspec.field(name="s")


class _Book(msgspec.Struct, gc=False):
    symbol: str = msgspec.field(name="S")
    time: str = msgspec.field(name="t")
    bids: list[_Level] = msgspec.field(default_factory=list, name="b")
    asks: list[_Level] = msgspec.field(default_factory=list, name="a")
    reset: bool = msgspec.field(default=False, name="r")
    ts: int = msgspec.field(default=0, name="__ts")

    def __post_init__(self) -> None:
        check_levels_magnitude((lv.price, lv.size) for lv in (*self.bids, *self.asks))
        self.ts = rfc3339_fraction_ns(self.time)


_frame_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_head_decoder = msgspec.json.Decoder(_Head)
_control_decoder = msgspec.json.Decoder(_Control)
_trade_decoder = msgspec.json.Decoder(_Trade)
_quote_decoder = msgspec.json.Decoder(_Quote)
_book_decoder = msgspec.json.Decoder(_Book)
_encoder = msgspec.json.Encoder()

_ERROR_HINTS: Final = {
    402: "check the key_id / secret_key credentials",
    405: "symbol limit of the data plan exceeded; the previous subscription is kept",
    406: "another connection to this feed is already authenticated",
    409: "the data plan does not include this feed",
}


class _AuthFrame(SendFrame):
    """The auth frame: a :class:`SendFrame` whose ``repr`` never shows the credentials."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SendFrame(text='<alpaca auth frame, redacted>')"


# ---------------------------------------------------------------------------------------------
# Per-symbol state


class _Symbol:
    __slots__ = (
        "book",
        "contract_size",
        "native",
        "quotes",
        "sequence",
        "symbol",
        "synced",
        "trades",
        "want_book",
    )

    def __init__(self, sub: Subscription) -> None:
        self.native = sub.native_symbol
        self.symbol = sub.symbol
        self.contract_size = sub.contract_size
        self.trades = DataType.TRADE in sub.data_types
        self.quotes = DataType.TICKER in sub.data_types
        self.want_book = DataType.L2_ORDERBOOK in sub.data_types
        self.book = OrderBook()
        self.reset()

    def reset(self) -> None:
        self.book.clear()
        self.synced = False
        """A reset message was applied and published since connect / the last resync."""
        self.sequence = 0
        """The sequence given to the last book message of this symbol (see the docstring)."""


# ---------------------------------------------------------------------------------------------
# The codec


class AlpacaCodec(Codec):
    """One authenticated Alpaca market-data connection: the crypto or the stock feed."""

    max_send_rate = 5.0  # a handful of frames per session; no documented limit
    ping_interval = None  # no application ping; the shell's WebSocket pings cover idle times
    max_lifetime = None

    def __init__(
        self,
        venue: str,
        feed: Feed,
        subscriptions: Sequence[Subscription],
        url: str,
        *,
        key_id: str,
        secret_key: str,
    ) -> None:
        super().__init__()
        self.venue = venue
        self.feed = feed
        self.url = url
        self._symbols: dict[str, _Symbol] = {}
        for sub in subscriptions:
            if feed_of(sub.native_symbol) != feed:
                raise ValueError(f"{venue}: {sub.native_symbol} is not on the {feed} feed")
            if sub.native_symbol in self._symbols:
                raise ValueError(f"{venue}: {sub.native_symbol} subscribed twice")
            self._symbols[sub.native_symbol] = _Symbol(sub)
        # Only the encoded frame is kept; nothing else of the codec holds the credentials.
        self._auth = _AuthFrame(
            _encoder.encode({"action": "auth", "key": key_id, "secret": secret_key}).decode()
        )
        self.authenticated = False
        """Whether the server has accepted the credentials on the current connection."""

    def __repr__(self) -> str:
        return f"AlpacaCodec(venue={self.venue!r}, feed={self.feed!r}, url={self.url!r})"

    # -- connection ---------------------------------------------------------------------------

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Reset the books and queue the auth frame; subscribing waits for its success."""
        for state in self._symbols.values():
            state.reset()
        self.authenticated = False
        self._actions.append(self._auth)
        return []

    def subscribe_frames(self) -> list[str]:
        """The ``subscribe`` frames for every symbol of this connection."""
        frames = []
        for chunk in chunks(list(self._symbols.values()), MAX_SYMBOLS_PER_FRAME):
            frame: dict[str, object] = {"action": "subscribe"}
            for key, wanted in (
                ("trades", [s.native for s in chunk if s.trades]),
                ("quotes", [s.native for s in chunk if s.quotes]),
                ("orderbooks", [s.native for s in chunk if s.want_book]),
            ):
                if wanted:  # the server takes any subset of the lists
                    frame[key] = wanted
            frames.append(_encoder.encode(frame).decode())
        return frames

    # -- frames -------------------------------------------------------------------------------

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        """One frame, an array of messages: a frame that is no array is a ``bad frame``
        (see :meth:`~relay.codec.Codec.receive`); each message is decoded on its own, so
        that a bad one is a ``parse_error`` and the others still count."""
        elements = _frame_decoder.decode(data)
        out: list[MarketEvent] = []
        for raw in elements:
            try:
                self._element(raw, recv_ns, out)
            except (msgspec.DecodeError, ValueError) as exc:  # ValidationError is a ValueError
                out.append(self._parse_error(f"bad message: {exc}", recv_ns))
            except Exception as exc:  # a bug of ours: report it rather than kill the connection
                detail = f"internal error: {type(exc).__name__}: {exc}"
                out.append(self._parse_error(detail, recv_ns))
        return out

    def _element(self, raw: msgspec.Raw, recv_ns: int, out: list[MarketEvent]) -> None:
        kind = _head_decoder.decode(raw).type
        if kind == "q":
            self._on_quote(_quote_decoder.decode(raw), recv_ns, out)
        elif kind == "o":
            self._on_book(_book_decoder.decode(raw), recv_ns, out)
        elif kind == "t":
            self._on_trade(_trade_decoder.decode(raw), recv_ns, out)
        elif kind == "success":
            if _control_decoder.decode(raw).msg == "authenticated" and not self.authenticated:
                self.authenticated = True
                self._actions += [SendFrame(f) for f in self.subscribe_frames()]
        elif kind == "error":
            error = _control_decoder.decode(raw)
            detail = f"error {error.code}: {error.msg}"
            if hint := _ERROR_HINTS.get(error.code or 0):
                detail = f"{detail} ({hint})"
            out.append(self._status("venue_error", detail, recv_ns))
        # "subscription" acks, bars ("b", "d", "u"), stock statuses, LULDs and corrections
        # carry nothing this codec publishes.

    def _on_trade(self, t: _Trade, recv_ns: int, out: list[MarketEvent]) -> None:
        state = self._symbols.get(t.symbol)
        if state is None or not state.trades:
            return
        if t.taker is None:
            raise ValueError(f"trade {t.id} of {t.symbol} has no taker side (tks)")
        out.append(
            Trade(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=t.ts,
                ts_recv=recv_ns,
                trade_id=str(t.id),
                price=decimal_text(t.price),
                size=decimal_text(t.size, state.contract_size),
                side="buy" if t.taker == "B" else "sell",
            )
        )

    def _on_quote(self, q: _Quote, recv_ns: int, out: list[MarketEvent]) -> None:
        state = self._symbols.get(q.symbol)
        if state is None or not state.quotes:
            return
        cs = state.contract_size
        out.append(
            Ticker(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=q.ts,
                ts_recv=recv_ns,
                bid_price=decimal_text(q.bid_price),
                bid_size=decimal_text(q.bid_size, cs),
                ask_price=decimal_text(q.ask_price),
                ask_size=decimal_text(q.ask_size, cs),
            )
        )

    def _on_book(self, msg: _Book, recv_ns: int, out: list[MarketEvent]) -> None:
        state = self._symbols.get(msg.symbol)
        if state is None or not state.want_book:
            return
        cs = state.contract_size
        bids: list[Level] = [(decimal_text(lv.price), decimal_text(lv.size, cs)) for lv in msg.bids]
        asks: list[Level] = [(decimal_text(lv.price), decimal_text(lv.size, cs)) for lv in msg.asks]
        # Checks every number (NaN, negative sizes) before anything is applied.
        book_bids, book_asks = parse_levels(bids), parse_levels(asks)
        if not msg.reset and not state.synced:
            self.counters.stale_deltas_dropped += 1  # no base to apply it to
            return
        prev = state.sequence
        sequence = max(msg.ts, prev + 1)
        book = state.book
        if msg.reset:
            book.apply_snapshot(book_bids, book_asks)
        else:
            book.apply_delta(book_bids, book_asks)
        if crossing := book.crossing():
            self._resync(state, f"book crossed at t={msg.time}: {crossing}", recv_ns, out)
            return
        state.sequence = sequence
        head = {
            "venue": self.venue,
            "symbol": state.symbol,
            "native_symbol": state.native,
            "ts_venue": msg.ts,
            "ts_recv": recv_ns,
        }
        if msg.reset:
            out.append(BookSnapshot(**head, sequence=sequence, bids=bids, asks=asks))
            if not state.synced:
                state.synced = True
                detail = f"reset t={msg.time}"
                out.append(self._symbol_status(state, "book_synced", detail, recv_ns))
        else:
            out.append(
                BookDelta(
                    **head,
                    first_sequence=sequence,
                    sequence=sequence,
                    prev_sequence=prev,
                    bids=bids,
                    asks=asks,
                )
            )

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Drop the book of canonical ``symbol`` and get a fresh one (alpaca.md §4.4, §5).

        The first ``orderbooks`` message after subscribing is the full book with ``"r":
        true``, so the symbol's ``orderbooks`` alone is unsubscribed and subscribed again,
        as for a crossed book; updates before the reset are dropped. A book still waiting
        for its reset (before authentication, whose subscribe frames will bring it, or
        after a resubscription) gets the status but no second request. A symbol without a
        book on this connection (stocks have none) is ignored.
        """
        out: list[MarketEvent] = []
        for state in self._symbols.values():
            if state.symbol != symbol or not state.want_book:
                continue
            detail = f"resync asked for: {reason}"
            if state.synced and self.authenticated:
                self._resync(state, detail, recv_ns, out)
            else:
                state.book.clear()
                state.synced = False
                detail = f"{detail}; its reset is awaited already"
                out.append(self._book_resync(state, detail, recv_ns))
        return out

    @property
    def synced(self) -> bool:
        """Every wanted book has had its reset message since connect, none awaits a resync."""
        return all(s.synced for s in self._symbols.values() if s.want_book)

    def _resync(self, state: _Symbol, detail: str, recv_ns: int, out: list[MarketEvent]) -> None:
        """Drop a crossed book and resubscribe that symbol's ``orderbooks`` for a new reset."""
        state.book.clear()
        state.synced = False
        for action in ("unsubscribe", "subscribe"):
            frame = {"action": action, "orderbooks": [state.native]}
            self._actions.append(SendFrame(_encoder.encode(frame).decode()))
        out.append(self._book_resync(state, f"{detail}; resubscribing", recv_ns))


# ---------------------------------------------------------------------------------------------
# The adapter

_SUPPORTED: Final = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
_STOCK_TYPES: Final = frozenset({DataType.TICKER})
CREDENTIALS: Final = ("key_id", "secret_key")


def make_codecs(
    venue: str,
    subscriptions: Sequence[Subscription],
    endpoints: Endpoints,
    *,
    credentials: Mapping[str, str] = {},
) -> list[Codec]:
    """One :class:`AlpacaCodec` per feed that has subscriptions: crypto first, then stocks.

    Subscriptions of the same native symbol are merged. ``ValueError`` when a credential is
    missing, for data types a feed does not have (order books and liquidations etc. for
    stocks; stock **trades** too, which have no taker side for
    :attr:`~relay.events.Trade.side`), or for a ``ws_url`` that is not a stock feed URL.
    """
    missing = [name for name in CREDENTIALS if not credentials.get(name)]
    if missing:
        raise ValueError(f"{venue}: alpaca needs credentials {', '.join(missing)}")

    def key(sub: Subscription) -> str:
        feed = feed_of(sub.native_symbol)
        unsupported = sub.data_types - (_SUPPORTED if feed == "crypto" else _STOCK_TYPES)
        if unsupported:  # not check_data_types: the message explains the missing stock trades
            names = ", ".join(sorted(unsupported))
            raise ValueError(
                f"{venue}: alpaca {feed} has no {names} "
                f"for {sub.native_symbol} (stock trades lack a taker side)"
            )
        return sub.native_symbol

    merged = merge_subscriptions(venue, subscriptions, key)
    crypto_url, stocks_url = feed_urls(endpoints.ws_url)
    codecs: list[Codec] = []
    feeds: tuple[tuple[Feed, str], ...] = (("crypto", crypto_url), ("stocks", stocks_url))
    for feed, url in feeds:
        subs = [s for s in merged.values() if s.data_types and feed_of(s.native_symbol) == feed]
        if subs:
            codecs.append(
                AlpacaCodec(
                    venue,
                    feed,
                    subs,
                    url,
                    key_id=credentials["key_id"],
                    secret_key=credentials["secret_key"],
                )
            )
    return codecs


# ---------------------------------------------------------------------------------------------
# Instrument list

TRADING_API_HOSTS: Final = {"data.alpaca.markets": "api.alpaca.markets"}
"""Market-data host → the trading-API host that serves ``/v2/assets``."""


class _Asset(msgspec.Struct, gc=False):
    symbol: str
    asset_class: str = msgspec.field(name="class")
    status: str
    tradable: bool
    price_increment: str | None = None  # crypto only
    min_trade_increment: str | None = None  # crypto only


class _ApiError(msgspec.Struct, gc=False):
    code: int | None = None
    message: str | None = None


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """``/v2/assets`` for crypto and for active US equities, on the trading API."""
    parts = urlsplit(endpoints.rest_url)
    host = TRADING_API_HOSTS.get(parts.netloc, parts.netloc)
    base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    return [
        f"{base}/v2/assets?asset_class=crypto",
        f"{base}/v2/assets?status=active&asset_class=us_equity",
    ]


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The crypto pairs and stocks of one ``/v2/assets`` answer (module docstring)."""
    if body.lstrip()[:1] == b"{":  # an error object instead of the list
        error = decode("alpaca", url, body, _ApiError)
        raise ValueError(f"alpaca: {url} answered error {error.code}: {error.message}")
    out: list[Instrument] = []
    for a in decode("alpaca", url, body, list[_Asset]):
        if a.asset_class == "crypto":
            if not (m := _CRYPTO.fullmatch(a.symbol)):
                raise ValueError(f"alpaca: {url}: crypto asset {a.symbol!r} is not BASE/QUOTE")
            base, quote = m.group(1), m.group(2)
        elif a.asset_class == "us_equity":
            base, quote = a.symbol, "USD"  # stocks trade in US dollars
        else:
            continue  # e.g. options: not relayed
        out.append(
            Instrument(
                native_symbol=a.symbol,
                symbol=canonical(base, quote, "spot"),
                kind="spot",
                base=base,
                quote=quote,
                price_increment=a.price_increment,
                size_increment=a.min_trade_increment,
                contract_size=None,
                active=a.status == "active" and a.tradable,
            )
        )
    return out


INSTRUMENTS: Final = InstrumentSource(
    urls=instrument_urls,
    parse=parse_instruments,
    credential_headers=(("APCA-API-KEY-ID", "key_id"), ("APCA-API-SECRET-KEY", "secret_key")),
)


ADAPTER = Adapter(
    name="alpaca",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(
        ws_url="wss://stream.data.alpaca.markets/v2/iex", rest_url="https://data.alpaca.markets"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    required_credentials=CREDENTIALS,
    instruments=INSTRUMENTS,
)
