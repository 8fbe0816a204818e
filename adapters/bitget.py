"""Bitget v2 ("classic"): the sans-IO codec for the public market-data WebSocket.

One :class:`BitgetCodec` serves one connection to ``wss://ws.bitget.com/v2/ws/public``. On
:meth:`~BitgetCodec.connected` it queues ``subscribe`` requests whose args are
``{instType, channel, instId}``:

* ``trade`` → :class:`~relay.events.Trade` (``side`` is the taker side; the first push after
  subscribing is a ``snapshot`` of recent trades, published too: their trade ids make the
  overlap with earlier publications collapse in JetStream);
* ``ticker`` → :class:`~relay.events.Ticker`; on futures the same push also carries
  ``fundingRate``/``nextFundingTime`` → :class:`~relay.events.FundingRate`,
  ``markPrice``/``indexPrice`` → :class:`~relay.events.MarkPrice` and ``holdingAmount``
  (open interest in base coin) → :class:`~relay.events.OpenInterest`. The ticker is pushed
  several times a second; these three are published when their values change (the first
  push on a connection always publishes), not on every push;
* ``books`` → :class:`~relay.events.BookSnapshot` then :class:`~relay.events.BookDelta`
  (see :class:`BitgetCodec` for the sync rules).

**Native symbols.** A v2 ``instId`` (``BTCUSDT``) names both the spot pair and the USDT
perpetual; only the ``instType`` tells them apart. A native symbol here is therefore
``<instType>:<instId>``: ``SPOT:BTCUSDT``, ``USDT-FUTURES:BTCUSDT``, ``COIN-FUTURES:BTCUSD``,
``USDC-FUTURES:BTCPERP``. Events carry that spelling as ``native_symbol``.

**Units.** Bitget sizes are base-coin quantities on every instType (spot and futures alike),
so no contract conversion applies; a subscription with a ``contract_size`` is rejected.

**Sequence ids.** ``sequence`` is the book message's ``seq``, ``prev_sequence`` the
``sequence`` of the message it follows (equal to ``pseq`` where Bitget sends it);
``first_sequence`` is ``None`` (a message has one id, not a range). Messages without ``seq``
(Bitget v1, as in the 2022 captures) use their ``ts`` in milliseconds instead and are not
chain checked; the checksum still is.

**Connection.** The client sends the text ``ping`` every :attr:`BitgetCodec.ping_interval`
seconds and drops the ``pong``; Bitget closes every connection after 24 h, so
:attr:`~BitgetCodec.max_lifetime` makes the shell reconnect before. Client messages are
limited to 10/s (pings included). ``ADAPTER.make_codecs`` keeps at most
:data:`MAX_CHANNELS_PER_CONNECTION` channels per connection, as Bitget recommends.

**Instrument list** (``ADAPTER.instruments``): ``GET <rest_url>/api/v2/spot/public/symbols``
(natives ``SPOT:<symbol>``) and ``GET <rest_url>/api/v2/mix/market/contracts`` with
``productType`` ``USDT-FUTURES``, ``COIN-FUTURES`` and ``USDC-FUTURES`` (natives
``<productType>:<symbol>``; the answer does not repeat the product type, so it is read from
the URL). Canonical ``baseCoin-quoteCoin``; a contract of ``symbolType`` ``perpetual`` ends
in ``-PERP``, a ``delivery`` one in the UTC date of its ``deliveryTime``. Spot tick and lot
are ``10^-pricePrecision`` and ``10^-quantityPrecision``, spot ``status`` ``online`` is
active; a contract's tick is ``priceEndStep × 10^-pricePlace``, its lot ``sizeMultiplier``,
and ``symbolStatus`` ``normal`` is active. Sizes are base coin everywhere: no contract
size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final
from urllib.parse import parse_qs, urlsplit

import msgspec

from adapters._common import (
    Int64,
    check_data_types,
    chunks,
    merge_subscriptions,
    pack,
    split_quote,
)
from relay.book import OrderBook, TextLevel, parse_text_levels
from relay.checksum import text_book_checksum
from relay.codec import Adapter, Codec, Endpoints, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    FundingRate,
    Level,
    MarketEvent,
    MarkPrice,
    OpenInterest,
    Side,
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
    positive_decimal,
    step_text,
)
from relay.timestamps import NS_PER_MS, check_ns, ms_text_to_ns

__all__ = [
    "ADAPTER",
    "INSTRUMENTS",
    "INST_TYPES",
    "MAX_CHANNELS_PER_CONNECTION",
    "BitgetCodec",
    "canonical_symbol",
    "make_codecs",
    "parse_instruments",
    "split_native",
]

MAX_CHANNELS_PER_CONNECTION: Final = 50
"""Bitget allows 1000 channels per connection but recommends at most 50 for stability."""
MAX_ARGS_PER_REQUEST: Final = 50
"""Args per ``subscribe`` request (each request counts against 240/hour/connection)."""
INST_TYPES: Final = frozenset({"SPOT", "USDT-FUTURES", "COIN-FUTURES", "USDC-FUTURES"})

# ---------------------------------------------------------------------------------------------
# Symbols

SPOT_QUOTES: Final[tuple[str, ...]] = (
    "USDT", "USDC", "USDE", "BTC", "ETH", "BGB", "EUR", "BRL", "TRY", "MXN", "ARS", "JPY",
)  # fmt: skip
"""Quote assets of Bitget spot pairs, matched longest first (a heuristic, see below)."""
_SPOT_QUOTES = sorted(SPOT_QUOTES, key=len, reverse=True)


def split_native(native: str) -> tuple[str, str] | None:
    """``"USDT-FUTURES:BTCUSDT"`` → ``("USDT-FUTURES", "BTCUSDT")``; None if not that shape."""
    inst_type, sep, inst_id = native.upper().partition(":")
    bare = inst_id.replace("_", "")
    if not sep or inst_type not in INST_TYPES or not (bare.isascii() and bare.isalnum()):
        return None
    return inst_type, inst_id


def canonical_symbol(native: str) -> str | None:
    """``SPOT:BTCUSDT`` → ``BTC-USDT``; ``USDT-FUTURES:BTCUSDT`` → ``BTC-USDT-PERP``;
    ``COIN-FUTURES:BTCUSD`` → ``BTC-USD-PERP``; ``COIN-FUTURES:BTCUSD_231229`` →
    ``BTC-USD-231229``; ``USDC-FUTURES:BTCPERP`` → ``BTC-USDC-PERP``. Else ``None``.

    Bitget ids have no delimiter, so the split relies on known quote assets. At run time
    ``/api/v2/spot/public/symbols`` and ``/api/v2/mix/market/contracts``
    (:data:`INSTRUMENTS`) decide; this serves config checks and starts without them.
    """
    parts = split_native(native)
    if parts is None:
        return None
    inst_type, inst_id = parts
    if inst_type == "SPOT":
        split = split_quote(inst_id, _SPOT_QUOTES) if inst_id.isalnum() else None
        return None if split is None else f"{split[0]}-{split[1]}"
    if inst_type == "USDT-FUTURES":
        if inst_id.endswith("USDT") and len(inst_id) > 4 and inst_id.isalnum():
            return f"{inst_id[:-4]}-USDT-PERP"
        return None
    if inst_type == "USDC-FUTURES":
        for suffix in ("PERP", "USDC"):
            if inst_id.endswith(suffix) and len(inst_id) > 4 and inst_id.isalnum():
                return f"{inst_id[:-4]}-USDC-PERP"
        return None
    # COIN-FUTURES: BTCUSD (perpetual) or BTCUSD_YYMMDD (delivery)
    pair, _, expiry = inst_id.partition("_")
    if not (pair.endswith("USD") and len(pair) > 3 and pair.isalnum()):
        return None
    if not expiry:
        return f"{pair[:-3]}-USD-PERP"
    if len(expiry) == 6 and expiry.isdigit():
        return f"{pair[:-3]}-USD-{expiry}"
    return None


# ---------------------------------------------------------------------------------------------
# Wire formats. Only the fields the codec uses are declared; msgspec skips the rest.


class _Arg(msgspec.Struct, gc=False):
    channel: str
    instType: str = ""
    instId: str = ""


class _Envelope(msgspec.Struct, gc=False):
    """Any frame: a push (``action`` + ``arg`` + ``data``), an ack or an error."""

    event: str | None = None
    code: int | str | None = None
    msg: str | None = None
    arg: _Arg | None = None
    action: str | None = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


def _ms(value: str | int) -> int:
    """A millisecond time in ns; Bitget sends both strings and numbers (doc vs production)."""
    if isinstance(value, int):
        return check_ns(value * NS_PER_MS, str(value))
    return ms_text_to_ns(value)


class _Trade(msgspec.Struct, gc=False):
    ts: str | int
    price: str
    size: str
    side: Side
    tradeId: str

    def __post_init__(self) -> None:
        check_non_negative(self.price)
        check_non_negative(self.size)
        _ms(self.ts)


class _Ticker(msgspec.Struct, gc=False):
    ts: str | int
    bidPr: str = ""
    bidSz: str = ""
    askPr: str = ""
    askSz: str = ""
    lastPr: str = ""
    last: str = ""  # the demo-trading sample's spelling of lastPr
    fundingRate: str = ""
    nextFundingTime: str | int = ""
    markPrice: str = ""
    indexPrice: str = ""
    holdingAmount: str = ""

    def __post_init__(self) -> None:
        _ms(self.ts)
        # Bitget leaves absent values empty. Funding rates, mark and index prices may be
        # negative; the rest are traded or quoted prices, sizes and open interest.
        for text in (
            self.bidPr, self.bidSz, self.askPr, self.askSz, self.lastPr, self.last,
            self.holdingAmount,
        ):  # fmt: skip
            if text:
                check_non_negative(text)
        for text in (self.fundingRate, self.markPrice, self.indexPrice):
            if text:
                check_num(text)
        if self.nextFundingTime not in ("", "0", 0):
            _ms(self.nextFundingTime)


class _Book(msgspec.Struct, gc=False):
    """One ``books`` message; levels are ``[price, size]``."""

    asks: list[list[str]]
    bids: list[list[str]]
    ts: str | int
    checksum: int = 0
    seq: Int64 | None = None
    pseq: Int64 | None = None
    # Not in the JSON (the names cannot occur there); filled after decoding.
    wire_bids: list[Level] = msgspec.field(default_factory=list, name="__wire_bids")
    wire_asks: list[Level] = msgspec.field(default_factory=list, name="__wire_asks")
    book_bids: list[TextLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[TextLevel] = msgspec.field(default_factory=list, name="__book_asks")
    ts_ns: int = msgspec.field(default=0, name="__ts_ns")

    def __post_init__(self) -> None:
        # Everything is validated before the book is touched.
        self.ts_ns = _ms(self.ts)
        self.wire_bids, self.book_bids = parse_text_levels(self.bids)
        self.wire_asks, self.book_asks = parse_text_levels(self.asks)


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_trades_decoder = msgspec.json.Decoder(list[_Trade])
_tickers_decoder = msgspec.json.Decoder(list[_Ticker])
_books_decoder = msgspec.json.Decoder(list[_Book])
_request_encoder = msgspec.json.Encoder()

# ---------------------------------------------------------------------------------------------
# Per-symbol state

_TICKER_TYPES: Final = frozenset(
    {DataType.TICKER, DataType.FUNDING_RATE, DataType.MARK_PRICE, DataType.OPEN_INTEREST}
)
_FUTURES_ONLY: Final = frozenset(
    {DataType.FUNDING_RATE, DataType.MARK_PRICE, DataType.OPEN_INTEREST}
)


class _Symbol:
    """Everything the codec knows about one subscribed instrument."""

    __slots__ = (
        "book",
        "data_types",
        "inst_id",
        "inst_type",
        "last_funding",
        "last_mark",
        "last_oi",
        "native",
        "seq_id",
        "sequence",
        "symbol",
        "synced",
    )

    def __init__(self, sub: Subscription, inst_type: str, inst_id: str) -> None:
        self.inst_type = inst_type
        self.inst_id = inst_id
        self.native = f"{inst_type}:{inst_id}"
        self.symbol = sub.symbol
        self.data_types = sub.data_types
        self.book: OrderBook[TextLevel] = OrderBook()
        self.synced = False
        self.seq_id: int | None = None
        """The venue ``seq`` of the last applied book message (None without seq)."""
        self.sequence = 0
        """The ``sequence`` published for the last applied book message."""
        self.last_funding: tuple[str, int | None] | None = None
        self.last_mark: tuple[str, str | None] | None = None
        self.last_oi: str | None = None

    def channels(self) -> list[str]:
        out = []
        if DataType.TRADE in self.data_types:
            out.append("trade")
        if self.data_types & _TICKER_TYPES:
            out.append("ticker")
        if DataType.L2_ORDERBOOK in self.data_types:
            out.append("books")
        return out

    def reset_book(self) -> None:
        self.book.clear()
        self.synced = False
        self.seq_id = None
        self.sequence = 0

    def reset(self) -> None:
        self.reset_book()
        self.last_funding = None
        self.last_mark = None
        self.last_oi = None


# ---------------------------------------------------------------------------------------------
# The codec


class BitgetCodec(Codec):
    """The protocol state of one Bitget v2 public connection.

    **Book sync** (per instrument; bitget.md section 5):

    1. A ``books`` push with ``action: "snapshot"`` replaces the book; it is checked
       (checksum, crossed) and published as a :class:`~relay.events.BookSnapshot`, followed
       by a ``book_synced`` status.
    2. Each ``update``: where ``pseq`` is sent (non-zero) it must equal the previous
       message's ``seq``; where only ``seq`` is sent it must be greater than the previous
       one (⚠ Bitget documents ``pseq`` for futures and an "incrementing" ``seq`` for spot);
       without ``seq`` (v1) no chain check is possible. A violation is a gap:
       ``book_gap`` + ``book_resync``.
    3. After applying a message whose ``checksum`` is non-zero, the signed CRC32 of the top
       25 interleaved levels of the codec's book must equal it, else ``checksum_mismatch``
       + ``book_resync`` (⚠ v3/UTA sends ``0``; a zero checksum is not checked). A crossed
       book also resyncs.
    4. Resync: the instrument's book is dropped, nothing is published for it until the next
       snapshot, and ``unsubscribe`` + ``subscribe`` of its ``books`` channel are queued;
       updates still in flight meanwhile are dropped (``counters.stale_deltas_dropped``).
       Other instruments are unaffected. :meth:`resync` starts the same from outside;
       :attr:`synced` is true while every book is past its snapshot.

    **Other frames.** ``pong`` and subscribe/unsubscribe acks are dropped, ``event: error``
    becomes ``venue_error``; pushes for instruments or channels not subscribed here are
    ignored; anything undecodable is a ``parse_error``.
    """

    max_send_rate = 5.0  # Bitget allows 10 client messages/s, pings included
    ping_interval = 25.0  # Bitget asks for a ping every 30 s
    max_lifetime = 23.5 * 3600  # Bitget closes every connection after 24 h
    # Handlers read the ``ts`` values after decoding: _ms's ValueError is a bad frame.
    bad_frame_errors = (ValueError,)

    def __init__(
        self, venue: str, subscriptions: Sequence[Subscription], endpoints: Endpoints
    ) -> None:
        """One connection for ``subscriptions`` (distinct native symbols)."""
        super().__init__()
        self.venue = venue
        self.url = endpoints.ws_url
        self._symbols: dict[tuple[str, str], _Symbol] = {}
        for sub in subscriptions:
            parts = split_native(sub.native_symbol)
            if parts is None:
                raise ValueError(f"{venue}: {sub.native_symbol} is not <instType>:<instId>")
            if parts in self._symbols:
                raise ValueError(f"{venue}: {sub.native_symbol} subscribed twice")
            self._symbols[parts] = _Symbol(sub, *parts)
        self.args: list[dict[str, str]] = [
            {"instType": state.inst_type, "channel": channel, "instId": state.inst_id}
            for state in self._symbols.values()
            for channel in state.channels()
        ]
        """The subscribe args this connection sends, in order."""
        self._handlers = {
            "trade": self._on_trades,
            "ticker": self._on_tickers,
            "books": self._on_books,
        }

    # -- connection ---------------------------------------------------------------------------

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Reset all per-connection state and queue the ``subscribe`` requests."""
        for state in self._symbols.values():
            state.reset()
        for args in chunks(self.args, MAX_ARGS_PER_REQUEST):
            self._send("subscribe", args)
        return []

    def keepalive(self) -> str | None:
        return "ping"

    def _send(self, op: str, args: list[dict[str, str]]) -> None:
        frame = _request_encoder.encode({"op": op, "args": args}).decode()
        self._actions.append(SendFrame(frame))

    # -- frames -------------------------------------------------------------------------------

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        if data == "pong" or data == b"pong":
            return []
        env = _envelope_decoder.decode(data)
        if env.event is not None:
            if env.event == "error":
                detail = f"code {env.code}: {env.msg}"
                return [self._status("venue_error", detail, recv_ns)]
            return []  # subscribe / unsubscribe acks
        arg = env.arg
        if arg is None or env.data is msgspec.UNSET:
            return [self._parse_error("neither a push nor an event", recv_ns)]
        handler = self._handlers.get(arg.channel)
        if handler is None:
            return []  # a channel we never subscribe (candles, books5, a shared replay)
        state = self._symbols.get((arg.instType.upper(), arg.instId.upper()))
        if state is None:
            return []
        try:
            return handler(state, env, env.data, recv_ns)
        except msgspec.DecodeError as exc:
            return [self._parse_error(f"{arg.channel}: {exc}", recv_ns)]

    # -- trades and tickers -------------------------------------------------------------------

    def _on_trades(
        self, state: _Symbol, env: _Envelope, raw: msgspec.Raw, recv_ns: int
    ) -> list[MarketEvent]:
        trades = _trades_decoder.decode(raw)
        if DataType.TRADE not in state.data_types:
            return []
        return [
            Trade(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=_ms(t.ts),
                ts_recv=recv_ns,
                trade_id=t.tradeId,
                price=t.price,
                size=t.size,
                side=t.side,
            )
            # A snapshot lists the recent trades newest first; publish them oldest first.
            for t in (reversed(trades) if env.action == "snapshot" else trades)
        ]

    def _on_tickers(
        self, state: _Symbol, env: _Envelope, raw: msgspec.Raw, recv_ns: int
    ) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        types = state.data_types
        for t in _tickers_decoder.decode(raw):
            ts = _ms(t.ts)
            head = {
                "venue": self.venue,
                "symbol": state.symbol,
                "native_symbol": state.native,
                "ts_venue": ts,
                "ts_recv": recv_ns,
            }
            if DataType.TICKER in types:
                out.append(
                    Ticker(
                        **head,
                        bid_price=t.bidPr or None,
                        bid_size=t.bidSz or None,
                        ask_price=t.askPr or None,
                        ask_size=t.askSz or None,
                        last_price=t.lastPr or t.last or None,
                    )
                )
            if DataType.FUNDING_RATE in types and t.fundingRate:
                next_ts = None if t.nextFundingTime in ("", "0", 0) else _ms(t.nextFundingTime)
                funding = (t.fundingRate, next_ts)
                if funding != state.last_funding:
                    state.last_funding = funding
                    out.append(
                        FundingRate(
                            **head,
                            rate=t.fundingRate,
                            next_funding_ts=next_ts,
                            mark_price=t.markPrice or None,
                            index_price=t.indexPrice or None,
                        )
                    )
            if DataType.MARK_PRICE in types and t.markPrice:
                mark = (t.markPrice, t.indexPrice or None)
                if mark != state.last_mark:
                    state.last_mark = mark
                    out.append(MarkPrice(**head, mark_price=mark[0], index_price=mark[1]))
            if (
                DataType.OPEN_INTEREST in types
                and t.holdingAmount
                and t.holdingAmount != state.last_oi
            ):
                state.last_oi = t.holdingAmount
                out.append(OpenInterest(**head, open_interest=t.holdingAmount))
        return out

    # -- order book ---------------------------------------------------------------------------

    def _on_books(
        self, state: _Symbol, env: _Envelope, raw: msgspec.Raw, recv_ns: int
    ) -> list[MarketEvent]:
        action = env.action
        if action not in ("snapshot", "update"):
            return [self._parse_error(f"books: unknown action {action!r}", recv_ns)]
        messages = _books_decoder.decode(raw)
        if DataType.L2_ORDERBOOK not in state.data_types:
            return []
        out: list[MarketEvent] = []
        for msg in messages:
            if action == "snapshot":
                self._snapshot(state, msg, recv_ns, out)
            elif state.synced:
                self._update(state, msg, recv_ns, out)
            else:
                # In flight from before a resync: meaningless without its snapshot.
                self.counters.stale_deltas_dropped += 1
        return out

    def _snapshot(self, state: _Symbol, msg: _Book, recv_ns: int, out: list[MarketEvent]) -> None:
        state.book.apply_snapshot(msg.book_bids, msg.book_asks)
        if not self._book_ok(state, msg, recv_ns, out):
            return
        sequence = msg.seq if msg.seq is not None else msg.ts_ns // NS_PER_MS
        state.synced = True
        state.seq_id = msg.seq
        state.sequence = sequence
        out.append(
            BookSnapshot(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=msg.ts_ns,
                ts_recv=recv_ns,
                sequence=sequence,
                bids=msg.wire_bids,
                asks=msg.wire_asks,
            )
        )
        detail = f"snapshot seq={msg.seq} levels={len(state.book)}"
        out.append(self._symbol_status(state, "book_synced", detail, recv_ns))

    def _update(self, state: _Symbol, msg: _Book, recv_ns: int, out: list[MarketEvent]) -> None:
        seq, pseq, last = msg.seq, msg.pseq, state.seq_id
        if seq is not None:
            if pseq:
                broken = pseq != last
                detail = f"pseq={pseq} but last seq={last} (seq={seq})"
            else:
                broken = last is not None and seq <= last
                detail = f"seq={seq} not above last seq={last}"
            if broken:
                out.append(self._book_gap(state, detail, recv_ns))
                self._resync(state, f"sequence gap: {detail}", recv_ns, out)
                return
        state.book.apply_delta(msg.book_bids, msg.book_asks)
        if not self._book_ok(state, msg, recv_ns, out):
            return
        prev = state.sequence
        sequence = seq if seq is not None else msg.ts_ns // NS_PER_MS
        state.seq_id = seq
        state.sequence = sequence
        out.append(
            BookDelta(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=msg.ts_ns,
                ts_recv=recv_ns,
                first_sequence=None,
                sequence=sequence,
                prev_sequence=prev,
                bids=msg.wire_bids,
                asks=msg.wire_asks,
            )
        )

    def _book_ok(self, state: _Symbol, msg: _Book, recv_ns: int, out: list[MarketEvent]) -> bool:
        """Check the book after applying ``msg``; on failure resync and return False."""
        book = state.book
        if msg.checksum:
            ours = text_book_checksum(book)
            if ours != msg.checksum:
                detail = f"checksum {msg.checksum}, book gives {ours} (seq={msg.seq})"
                out.append(self._checksum_mismatch(state, detail, recv_ns))
                self._resync(state, f"checksum mismatch: {detail}", recv_ns, out)
                return False
        if crossing := book.crossing():
            self._resync(state, f"book crossed at seq={msg.seq}: {crossing}", recv_ns, out)
            return False
        return True

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Rebuild the book of canonical ``symbol`` from a fresh WS snapshot, as after a gap
        (step 4): a ``book_resync`` status, the book is dropped, and an ``unsubscribe`` then
        a ``subscribe`` of its ``books`` channel only are queued; updates are dropped until
        the snapshot that answers them. A book still waiting for its snapshot (after
        connecting or an earlier resync) gets the status but no second request. The
        instrument's trades and ticker, and other instruments, are untouched; a symbol
        without a book on this connection is ignored.
        """
        books = (s for s in self._symbols.values() if DataType.L2_ORDERBOOK in s.data_types)
        return self._resync_books(
            books, symbol, reason, recv_ns, lambda s, d, out: self._resync(s, d, recv_ns, out)
        )

    @property
    def synced(self) -> bool:
        """Whether every book on this connection has had its snapshot since
        :meth:`connected` and no resync is under way."""
        return all(
            state.synced
            for state in self._symbols.values()
            if DataType.L2_ORDERBOOK in state.data_types
        )

    def _resync(self, state: _Symbol, detail: str, recv_ns: int, out: list[MarketEvent]) -> None:
        """Drop the instrument's book and resubscribe its ``books`` channel (new snapshot)."""
        out.append(self._book_resync(state, f"{detail}; resubscribing", recv_ns))
        state.reset_book()
        arg = [{"instType": state.inst_type, "channel": "books", "instId": state.inst_id}]
        self._send("unsubscribe", arg)
        self._send("subscribe", arg)


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


def make_codecs(
    venue: str,
    subscriptions: Sequence[Subscription],
    endpoints: Endpoints,
    *,
    credentials: Mapping[str, str] = {},  # public channels need none
) -> list[Codec]:
    """One :class:`BitgetCodec` per connection of at most 50 channels.

    Subscriptions naming the same ``<instType>:<instId>`` (in any case) are merged; an
    instrument's channels always share one connection.
    """

    def key(sub: Subscription) -> tuple[str, str]:
        parts = split_native(sub.native_symbol)
        if parts is None:
            raise ValueError(
                f"{venue}: {sub.native_symbol!r} is not <instType>:<instId> "
                f"(instType one of {', '.join(sorted(INST_TYPES))})"
            )
        spot = parts[0] == "SPOT"
        check_data_types(venue, "bitget", sub, _SUPPORTED - _FUTURES_ONLY if spot else _SUPPORTED)
        if sub.contract_size is not None:
            raise ValueError(
                f"{venue}: {sub.native_symbol}: bitget sizes are base units; "
                "contract_size does not apply"
            )
        return parts

    merged = merge_subscriptions(venue, subscriptions, key)
    shards = pack(
        merged.values(),
        lambda sub: len(_Symbol(sub, "", "").channels()),
        MAX_CHANNELS_PER_CONNECTION,
    )
    return [BitgetCodec(venue, shard, endpoints) for shard in shards]


# ---------------------------------------------------------------------------------------------
# Instrument list

_CONTRACT_TYPES: Final = ("USDT-FUTURES", "COIN-FUTURES", "USDC-FUTURES")


class _SpotSymbol(msgspec.Struct, gc=False):
    symbol: str
    baseCoin: str
    quoteCoin: str
    status: str
    pricePrecision: str
    quantityPrecision: str


class _Contract(msgspec.Struct, gc=False):
    symbol: str
    baseCoin: str
    quoteCoin: str
    symbolType: str
    symbolStatus: str
    pricePlace: str
    priceEndStep: str
    sizeMultiplier: str
    deliveryTime: str = ""


class _Answer(msgspec.Struct, gc=False):
    code: str
    msg: str = ""
    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """The spot symbols, then the contracts of each futures product type."""
    base = endpoints.rest_url.rstrip("/")
    contracts = f"{base}/api/v2/mix/market/contracts?productType="
    return [f"{base}/api/v2/spot/public/symbols"] + [contracts + t for t in _CONTRACT_TYPES]


def _precision(text: str, what: str) -> str:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{what}: not a number of decimal places: {text!r}")
    return step_text(int(text))


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The instruments of one spot ``symbols`` or ``contracts`` answer (module docstring)."""
    answer = decode("bitget", url, body, _Answer)
    if answer.code != "00000":
        raise ValueError(f"bitget: {url} answered code {answer.code}: {answer.msg}")
    out: list[Instrument] = []
    if "/spot/" in url:
        for s in decode("bitget", url, answer.data, list[_SpotSymbol]):
            what = f"bitget: {url}: {s.symbol}"
            out.append(
                Instrument(
                    native_symbol=f"SPOT:{s.symbol}",
                    symbol=canonical(s.baseCoin, s.quoteCoin, "spot"),
                    kind="spot",
                    base=s.baseCoin,
                    quote=s.quoteCoin,
                    price_increment=_precision(s.pricePrecision, f"{what} pricePrecision"),
                    size_increment=_precision(s.quantityPrecision, f"{what} quantityPrecision"),
                    contract_size=None,
                    active=s.status == "online",
                )
            )
        return out
    product_type = parse_qs(urlsplit(url).query).get("productType", [""])[0].upper()
    if product_type not in _CONTRACT_TYPES:
        raise ValueError(f"bitget: {url}: no futures productType in the URL")
    for c in decode("bitget", url, answer.data, list[_Contract]):
        what = f"bitget: {url}: {c.symbol}"
        kind: Kind
        expiry = None
        if c.symbolType == "perpetual":
            kind = "perp"
        elif c.symbolType == "delivery":
            kind = "future"
            expiry = expiry_code(epoch_ms(c.deliveryTime, f"{what} deliveryTime"))
        else:
            raise ValueError(f"{what}: symbolType {c.symbolType!r}")
        step = positive_decimal(c.priceEndStep, f"{what} priceEndStep")
        places = _precision(c.pricePlace, f"{what} pricePlace")
        out.append(
            Instrument(
                native_symbol=f"{product_type}:{c.symbol}",
                symbol=canonical(c.baseCoin, c.quoteCoin, kind, expiry),
                kind=kind,
                base=c.baseCoin,
                quote=c.quoteCoin,
                price_increment=format(step * Decimal(places), "f"),
                size_increment=c.sizeMultiplier,
                contract_size=None,
                active=c.symbolStatus == "normal",
            )
        )
    return out


def _native_key(sub: Subscription) -> str:
    """``<instType>:<instId>`` upper-cased, as the codec reads it."""
    parts = split_native(sub.native_symbol)
    return sub.native_symbol if parts is None else f"{parts[0]}:{parts[1]}"


INSTRUMENTS: Final = InstrumentSource(
    urls=instrument_urls, parse=parse_instruments, native_key=_native_key
)


ADAPTER = Adapter(
    name="bitget",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(
        ws_url="wss://ws.bitget.com/v2/ws/public", rest_url="https://api.bitget.com"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    instruments=INSTRUMENTS,
)
