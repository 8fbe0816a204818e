"""OKX v5: the sans-IO codec for the public market-data WebSocket (``/ws/v5/public``).

One :class:`OkxCodec` serves one connection to ``wss://ws.okx.com:8443/ws/v5/public``. Every
channel used here lives on ``/public``; the unaggregated ``trades-all`` tape and candles live
on ``/ws/v5/business`` and are deliberately not used (one URL per codec). On
:meth:`~OkxCodec.connected` the codec queues ``subscribe`` requests with many
``{channel, instId}`` args each (each request is one unit of OKX's 480 requests/hour budget):

* ``trades`` → :class:`~relay.events.Trade` (OKX aggregates fills per taker order and price;
  ``tradeId`` is the last fill id of the aggregate, ``side`` the taker side);
* ``tickers`` → :class:`~relay.events.Ticker` (best bid/ask and last price);
* ``books`` (400 levels, 100 ms) → :class:`~relay.events.BookSnapshot` then
  :class:`~relay.events.BookDelta` (see :class:`OkxCodec` for the sync rules);
* ``funding-rate`` (swaps) → :class:`~relay.events.FundingRate`;
* ``mark-price`` → :class:`~relay.events.MarkPrice`;
* ``liquidation-orders`` (subscribed per ``instType``: ``SWAP``, ``FUTURES``, ``MARGIN`` for
  spot pairs, ``OPTION``) → :class:`~relay.events.Liquidation` for the subscribed
  instruments only. OKX samples this stream (at most one order per contract per second).

**Units.** Spot sizes are base units. SWAP/FUTURES sizes (trade ``sz``, ticker ``bidSz``/
``askSz``, book level sizes, liquidation ``sz``) are *contracts*; when the subscription has a
``contract_size`` (OKX ``ctVal``) the published sizes are ``contracts × contract_size``
(exact Decimal arithmetic). The codec's own book keeps the venue's contract strings, because
the checksum is computed over them.

**Sequence ids** (``BookSnapshot.sequence`` / ``BookDelta``): ``sequence`` is the message's
``seqId`` and ``prev_sequence`` the ``sequence`` of the message it follows on this book
(equal to the update's ``prevSeqId``). ``first_sequence`` is ``None``: OKX ids are not
contiguous, a message has no id range. Messages from before OKX introduced ``seqId`` (the
2022 capture) carry none: then ``sequence`` is the message's ``ts`` in milliseconds, no chain
check is possible, and the checksum is the only integrity check.

**Keepalive.** The client sends the text ``ping`` every :attr:`OkxCodec.ping_interval`
seconds (OKX closes a connection silent for 30 s) and the server answers ``pong``, which is
dropped. A ``notice`` with code ``64008`` (service upgrade, ~60 s before OKX closes the
connection) becomes a ``server_shutdown`` status and a :class:`~relay.codec.Reconnect`.

``ADAPTER.make_codecs`` shards subscriptions so that a connection holds at most
:data:`MAX_BOOKS_PER_CONNECTION` ``books`` channels (OKX recommends fewer than 30 heavy book
channels per connection) and :data:`MAX_CHANNELS_PER_CONNECTION` channels in all.

**Instrument list** (``ADAPTER.instruments``): ``GET <rest_url>/api/v5/public/instruments``
with ``instType`` ``SPOT``, ``SWAP`` and ``FUTURES`` (options are not relayed). The native is
the ``instId``; base and quote are ``baseCcy``/``quoteCcy`` for spot and the two parts of
``instFamily`` (``uly`` on older answers) for swaps and futures, whose canonical symbols
end in ``-PERP`` or the UTC date of ``expTime``. Tick ``tickSz``, lot ``lotSz`` (contracts
for derivatives); ``state`` ``live`` is active. **Contract size:** a linear contract
(``ctType`` ``linear``, ``ctValCcy`` = the base) holds ``ctVal × ctMult`` base units, e.g.
0.01 BTC for ``BTC-USDT-SWAP``. An inverse contract (``BTC-USD-SWAP``) is worth a fixed
amount of USD (``ctVal``), which no fixed factor turns into base units: its contract size
is ``None`` and its sizes stay in contracts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from adapters._common import (
    Int64,
    check_data_types,
    chunks,
    merge_subscriptions,
    scale_levels,
    scale_size,
)
from relay.book import OrderBook, TextLevel, parse_text_levels
from relay.checksum import text_book_checksum
from relay.codec import Adapter, Codec, Endpoints, Reconnect, SendFrame, Subscription
from relay.events import (
    BookDelta,
    BookSnapshot,
    DataType,
    FundingRate,
    Level,
    Liquidation,
    MarketEvent,
    MarkPrice,
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
)
from relay.timestamps import NS_PER_MS, ms_text_to_ns

__all__ = [
    "ADAPTER",
    "INSTRUMENTS",
    "MAX_ARGS_PER_REQUEST",
    "MAX_BOOKS_PER_CONNECTION",
    "MAX_CHANNELS_PER_CONNECTION",
    "OkxCodec",
    "canonical_symbol",
    "inst_type",
    "make_codecs",
    "parse_instruments",
]

MAX_BOOKS_PER_CONNECTION: Final = 29
"""``books`` channels per connection: OKX recommends fewer than 30 heavy book channels."""
MAX_CHANNELS_PER_CONNECTION: Final = 200
"""Channels per connection. OKX documents no number (only close codes 4008/4009 "too many
channels"); this is our conservative choice."""
MAX_ARGS_PER_REQUEST: Final = 100
"""Args per ``subscribe`` request: about 5 kB, far below OKX's 64 kB request limit."""

_SHUTDOWN_CODE: Final = "64008"

# ---------------------------------------------------------------------------------------------
# Symbols


def inst_type(native: str) -> str | None:
    """OKX ``instType`` of an ``instId``: ``SPOT``, ``SWAP``, ``FUTURES``, ``OPTION`` or None."""
    parts = native.upper().split("-")
    if len(parts) == 2 and all(parts):
        return "SPOT"
    if len(parts) == 3 and all(parts):
        if parts[2] == "SWAP":
            return "SWAP"
        if len(parts[2]) == 6 and parts[2].isdigit():
            return "FUTURES"
    if len(parts) == 5 and parts[4] in ("C", "P"):
        return "OPTION"
    return None


def canonical_symbol(native: str) -> str | None:
    """``BTC-USDT`` → ``BTC-USDT``, ``BTC-USDT-SWAP`` → ``BTC-USDT-PERP``,
    ``BTC-USD-250328`` → ``BTC-USD-250328``; options and anything else → ``None``.

    The instId spells base and quote with a delimiter, so this is exact for the kinds it
    knows; at run time ``GET /api/v5/public/instruments`` (:data:`INSTRUMENTS`) decides and
    brings ``ctVal``.
    """
    kind = inst_type(native)
    parts = native.upper().split("-")
    if kind == "SPOT":
        return f"{parts[0]}-{parts[1]}"
    if kind == "SWAP":
        return f"{parts[0]}-{parts[1]}-PERP"
    if kind == "FUTURES":
        return f"{parts[0]}-{parts[1]}-{parts[2]}"
    return None


# ---------------------------------------------------------------------------------------------
# Wire formats. Only the fields the codec uses are declared; msgspec skips the rest. Prices
# and sizes stay the venue's text; ``__post_init__`` checks it (msgspec turns the ValueError
# into a decode error).


class _Arg(msgspec.Struct, gc=False):
    channel: str
    instId: str | None = None
    instType: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    """Any frame: a push (``arg`` + ``data``), an ack, an error or a notice."""

    event: str | None = None
    code: str | int | None = None
    msg: str | None = None
    arg: _Arg | None = None
    action: str | None = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _Trade(msgspec.Struct, gc=False):
    instId: str
    tradeId: str
    px: str
    sz: str
    side: Side
    ts: str

    def __post_init__(self) -> None:
        check_non_negative(self.px)
        check_non_negative(self.sz)


class _Ticker(msgspec.Struct, gc=False):
    instId: str
    ts: str
    last: str = ""
    bidPx: str = ""
    bidSz: str = ""
    askPx: str = ""
    askSz: str = ""

    def __post_init__(self) -> None:
        for text in (self.last, self.bidPx, self.bidSz, self.askPx, self.askSz):
            # OKX writes an absent value (no bid on an empty book) as "".
            if text:
                check_non_negative(text)


class _Funding(msgspec.Struct, gc=False):
    instId: str
    fundingRate: str
    ts: str
    fundingTime: str = ""

    def __post_init__(self) -> None:
        check_num(self.fundingRate)


class _Mark(msgspec.Struct, gc=False):
    instId: str
    markPx: str
    ts: str

    def __post_init__(self) -> None:
        check_num(self.markPx)


class _LiqDetail(msgspec.Struct, gc=False):
    bkPx: str
    sz: str
    side: Side
    ts: str
    posSide: str = ""

    def __post_init__(self) -> None:
        check_non_negative(self.bkPx)
        check_non_negative(self.sz)


class _Liquidation(msgspec.Struct, gc=False):
    instId: str
    details: list[_LiqDetail]


class _Book(msgspec.Struct, gc=False):
    """One ``books`` message. Levels are ``[price, size, "0", orders]``; any items past the
    size are ignored, a level without one is an error."""

    asks: list[list[str]]
    bids: list[list[str]]
    ts: str
    checksum: int = 0
    seqId: Int64 | None = None
    prevSeqId: Int64 | None = None
    # Not in the JSON (the names cannot occur there); filled after decoding.
    wire_bids: list[Level] = msgspec.field(default_factory=list, name="__wire_bids")
    wire_asks: list[Level] = msgspec.field(default_factory=list, name="__wire_asks")
    book_bids: list[TextLevel] = msgspec.field(default_factory=list, name="__book_bids")
    book_asks: list[TextLevel] = msgspec.field(default_factory=list, name="__book_asks")
    ts_ns: int = msgspec.field(default=0, name="__ts_ns")

    def __post_init__(self) -> None:
        # Everything is validated here, before the book is touched: a bad message must not
        # leave a half-applied book behind.
        self.ts_ns = ms_text_to_ns(self.ts)
        self.wire_bids, self.book_bids = parse_text_levels(self.bids)
        self.wire_asks, self.book_asks = parse_text_levels(self.asks)


class _StrictBook(_Book, gc=False):
    """:class:`_Book` whose levels are exactly the four strings OKX sends: decoded straight
    into tuples, which msgspec builds faster than lists."""

    asks: list[tuple[str, str, str, str]]  # type: ignore[assignment]
    bids: list[tuple[str, str, str, str]]  # type: ignore[assignment]


class _BooksPush(_Envelope, gc=False):
    """A frame that starts like a ``books`` push, read in one pass with its messages.

    The general path reads the envelope, skipping ``data``, and then ``data`` again. This
    reading is narrower than that one (strict levels): whatever it refuses is read the
    general way instead, which gives the exact result, errors and all; whatever it accepts,
    the general way would accept with the same values.
    """

    data: list[_StrictBook] | msgspec.UnsetType = msgspec.UNSET


_BOOKS_PUSH: Final = '{"arg":{"channel":"books",'
"""How OKX starts every ``books`` push (compact JSON, ``arg`` first)."""

_books_push_decoder = msgspec.json.Decoder(_BooksPush)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_trades_decoder = msgspec.json.Decoder(list[_Trade])
_tickers_decoder = msgspec.json.Decoder(list[_Ticker])
_funding_decoder = msgspec.json.Decoder(list[_Funding])
_mark_decoder = msgspec.json.Decoder(list[_Mark])
_liquidation_decoder = msgspec.json.Decoder(list[_Liquidation])
_books_decoder = msgspec.json.Decoder(list[_Book])
_request_encoder = msgspec.json.Encoder()

# ---------------------------------------------------------------------------------------------
# Per-symbol state

_CHANNEL_OF: Final = {
    DataType.TRADE: "trades",
    DataType.TICKER: "tickers",
    DataType.L2_ORDERBOOK: "books",
    DataType.FUNDING_RATE: "funding-rate",
    DataType.MARK_PRICE: "mark-price",
}
_LIQ_INST_TYPE: Final = {"SPOT": "MARGIN", "SWAP": "SWAP", "FUTURES": "FUTURES", "OPTION": "OPTION"}


class _Symbol:
    """Everything the codec knows about one subscribed instrument."""

    __slots__ = (
        "book",
        "contract_size",
        "data_types",
        "native",
        "seq_id",
        "sequence",
        "symbol",
        "synced",
    )

    def __init__(self, sub: Subscription) -> None:
        self.native = sub.native_symbol.upper()
        self.symbol = sub.symbol
        self.data_types = sub.data_types
        self.contract_size = sub.contract_size
        self.book: OrderBook[TextLevel] = OrderBook()
        self.synced = False
        """A snapshot was applied (and published) on this connection; deltas may follow."""
        self.seq_id: int | None = None
        """The venue ``seqId`` of the last applied book message (None before seqId existed)."""
        self.sequence = 0
        """The ``sequence`` published for the last applied book message."""

    def channels(self) -> list[str]:
        return [_CHANNEL_OF[t] for t in _CHANNEL_OF if t in self.data_types]

    def reset(self) -> None:
        self.book.clear()
        self.synced = False
        self.seq_id = None
        self.sequence = 0


# ---------------------------------------------------------------------------------------------
# The codec


class OkxCodec(Codec):
    """The protocol state of one OKX ``/ws/v5/public`` connection.

    **Book sync** (per instrument; okx.md section 5):

    1. The first ``books`` message after subscribing is ``action: "snapshot"``
       (``prevSeqId = -1``): it replaces the book, is checked (checksum, crossed), and is
       published as a :class:`~relay.events.BookSnapshot`, followed by a ``book_synced``
       status. A later snapshot (after a resubscribe) replaces the book again.
    2. Each ``update`` must have ``prevSeqId`` equal to the ``seqId`` of the previous
       message; the documented special cases pass this rule and are accepted: a no-op
       (``seqId == prevSeqId``, no levels; applied, checked, not published) and a sequence
       reset after maintenance (``seqId < prevSeqId``; published, and the chain continues
       from the new ``seqId``). A message without ``seqId`` (pre-2023 OKX) is not chain
       checked. Anything else is a gap: ``book_gap`` + ``book_resync`` statuses.
    3. After applying a message, whenever its ``checksum`` is non-zero (OKX sends ``0``
       since it retired the checksum in 2026), the CRC32 of the top 25 interleaved levels
       of the codec's book (:func:`relay.checksum.text_book_checksum`) must equal it; otherwise
       ``checksum_mismatch`` + ``book_resync``. A crossed book is treated the same way
       (``book_resync`` with the crossing prices).
    4. Resync: the instrument's book is dropped, nothing more is published for it until the
       next snapshot, and an ``unsubscribe`` + ``subscribe`` of its ``books`` channel is
       queued (OKX sends a fresh snapshot on subscribe). Updates arriving meanwhile (still
       in flight from the old subscription) are dropped (``counters.stale_deltas_dropped``).
       Only that instrument resyncs. :meth:`resync` starts the same from outside;
       :attr:`synced` is true while every book is past its snapshot.

    **Other frames.** Subscribe/unsubscribe acks and ``pong`` are dropped; ``event: error``
    becomes ``venue_error``; ``notice`` 64008 becomes ``server_shutdown`` + Reconnect. Pushes
    for instruments or channels this codec did not subscribe (e.g. a shared replay) are
    ignored. Anything undecodable counts ``counters.parse_errors`` and becomes a
    ``parse_error`` status.
    """

    max_send_rate = 3.0  # subscribe/unsubscribe requests; OKX answers 60014 when too frequent
    ping_interval = 20.0  # OKX closes a connection after 30 s without traffic
    max_lifetime = None  # no documented forced disconnect; upgrades are announced (64008)
    # Handlers read the ``ts`` texts after decoding: ms_text_to_ns's ValueError is a bad frame.
    bad_frame_errors = (ValueError,)

    def __init__(
        self, venue: str, subscriptions: Sequence[Subscription], endpoints: Endpoints
    ) -> None:
        """One connection for ``subscriptions`` (distinct native symbols)."""
        super().__init__()
        self.venue = venue
        self.url = endpoints.ws_url
        self._symbols: dict[str, _Symbol] = {}
        for sub in subscriptions:
            state = _Symbol(sub)
            if state.native in self._symbols:
                raise ValueError(f"{venue}: {sub.native_symbol} subscribed twice")
            self._symbols[state.native] = state
        self.args: list[dict[str, str]] = [
            {"channel": channel, "instId": state.native}
            for state in self._symbols.values()
            for channel in state.channels()
        ]
        """The subscribe args this connection sends, in order."""
        liq_types = sorted(
            {
                _LIQ_INST_TYPE[kind]
                for state in self._symbols.values()
                if DataType.LIQUIDATION in state.data_types
                and (kind := inst_type(state.native)) is not None
            }
        )
        self.args += [{"channel": "liquidation-orders", "instType": t} for t in liq_types]
        self._handlers = {
            "trades": self._on_trades,
            "tickers": self._on_tickers,
            "books": self._on_books,
            "funding-rate": self._on_funding,
            "mark-price": self._on_mark,
            "liquidation-orders": self._on_liquidation,
        }

    # -- connection ---------------------------------------------------------------------------

    def connected(self, now_ns: int) -> list[MarketEvent]:
        """Reset every book and queue the ``subscribe`` requests."""
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
        if type(data) is str and data.startswith(_BOOKS_PUSH):
            # Most frames: book messages, read in one pass instead of two.
            try:
                push = _books_push_decoder.decode(data)
            except Exception:
                # Anything at all (a bad frame, a level of other length): the general path
                # below reads the frame again and gives what it always gave. This one must
                # not answer, as it read the messages before the checks that may drop them.
                pass
            else:
                arg = push.arg
                if (
                    push.event is None
                    and arg is not None
                    and arg.channel == "books"
                    and push.data is not msgspec.UNSET
                ):
                    return self._on_books(push, push.data, recv_ns)
        if data == "pong" or data == b"pong":
            return []
        env = _envelope_decoder.decode(data)
        event = env.event
        if event is not None:
            return self._on_event(env, event, recv_ns)
        arg = env.arg
        if arg is None or env.data is msgspec.UNSET:
            return [self._parse_error("neither a push nor an event", recv_ns)]
        handler = self._handlers.get(arg.channel)
        if handler is None:
            return []  # a channel we never subscribe (shared replay)
        try:
            return handler(env, env.data, recv_ns)
        except msgspec.DecodeError as exc:
            return [self._parse_error(f"{arg.channel}: {exc}", recv_ns)]

    def _on_event(self, env: _Envelope, event: str, recv_ns: int) -> list[MarketEvent]:
        if event == "error":
            return [self._status("venue_error", f"code {env.code}: {env.msg}", recv_ns)]
        if event == "notice":
            if str(env.code) == _SHUTDOWN_CODE:
                self._actions.append(Reconnect("service upgrade notice 64008", planned=True))
                detail = f"notice {env.code}: {env.msg}; reconnecting"
                return [self._status("server_shutdown", detail, recv_ns)]
            return [self._status("venue_error", f"notice {env.code}: {env.msg}", recv_ns)]
        # subscribe / unsubscribe acks, channel-conn-count and other informational events
        return []

    def _lookup(self, item_inst: str, data_type: DataType) -> _Symbol | None:
        state = self._symbols.get(item_inst)
        if state is None or data_type not in state.data_types:
            return None
        return state

    # -- trades, tickers, funding, mark, liquidations -----------------------------------------

    def _on_trades(self, env: _Envelope, raw: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for t in _trades_decoder.decode(raw):
            state = self._lookup(t.instId, DataType.TRADE)
            if state is None:
                continue
            out.append(
                Trade(
                    venue=self.venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=ms_text_to_ns(t.ts),
                    ts_recv=recv_ns,
                    trade_id=t.tradeId,
                    price=t.px,
                    size=scale_size(t.sz, state.contract_size),
                    side=t.side,
                )
            )
        return out

    def _on_tickers(self, env: _Envelope, raw: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for t in _tickers_decoder.decode(raw):
            state = self._lookup(t.instId, DataType.TICKER)
            if state is None:
                continue
            cs = state.contract_size
            out.append(
                Ticker(
                    venue=self.venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=ms_text_to_ns(t.ts),
                    ts_recv=recv_ns,
                    bid_price=t.bidPx or None,
                    bid_size=scale_size(t.bidSz, cs) if t.bidSz else None,
                    ask_price=t.askPx or None,
                    ask_size=scale_size(t.askSz, cs) if t.askSz else None,
                    last_price=t.last or None,
                )
            )
        return out

    def _on_funding(self, env: _Envelope, raw: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for f in _funding_decoder.decode(raw):
            state = self._lookup(f.instId, DataType.FUNDING_RATE)
            if state is None:
                continue
            out.append(
                FundingRate(
                    venue=self.venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=ms_text_to_ns(f.ts),
                    ts_recv=recv_ns,
                    rate=f.fundingRate,
                    # ``fundingRate`` is the rate of the period that settles at
                    # ``fundingTime``; ``nextFundingTime`` is the settlement after that.
                    next_funding_ts=ms_text_to_ns(f.fundingTime) if f.fundingTime else None,
                )
            )
        return out

    def _on_mark(self, env: _Envelope, raw: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for m in _mark_decoder.decode(raw):
            state = self._lookup(m.instId, DataType.MARK_PRICE)
            if state is None:
                continue
            out.append(
                MarkPrice(
                    venue=self.venue,
                    symbol=state.symbol,
                    native_symbol=state.native,
                    ts_venue=ms_text_to_ns(m.ts),
                    ts_recv=recv_ns,
                    mark_price=m.markPx,
                )
            )
        return out

    def _on_liquidation(self, env: _Envelope, raw: msgspec.Raw, recv_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for item in _liquidation_decoder.decode(raw):
            state = self._lookup(item.instId, DataType.LIQUIDATION)
            if state is None:
                continue  # the channel covers a whole instType; keep our instruments only
            for d in item.details:
                out.append(
                    Liquidation(
                        venue=self.venue,
                        symbol=state.symbol,
                        native_symbol=state.native,
                        ts_venue=ms_text_to_ns(d.ts),
                        ts_recv=recv_ns,
                        side=_position_side(d),
                        price=d.bkPx,
                        size=scale_size(d.sz, state.contract_size),
                    )
                )
        return out

    # -- order book ---------------------------------------------------------------------------

    def _on_books(
        self, env: _Envelope, data: msgspec.Raw | list[_StrictBook], recv_ns: int
    ) -> list[MarketEvent]:
        """The ``books`` push ``env``; ``data`` is its messages still to decode, or already
        decoded (:class:`_BooksPush`)."""
        arg = env.arg
        assert arg is not None  # checked by _receive
        state = self._lookup((arg.instId or "").upper(), DataType.L2_ORDERBOOK)
        if state is None:
            return []
        action = env.action
        if action not in ("snapshot", "update"):
            return [self._parse_error(f"books: unknown action {action!r}", recv_ns)]
        out: list[MarketEvent] = []
        msgs = _books_decoder.decode(data) if type(data) is msgspec.Raw else data
        for msg in msgs:
            if action == "snapshot":
                self._snapshot(state, msg, recv_ns, out)
            elif state.synced:
                self._update(state, msg, recv_ns, out)
            else:
                # Still in flight from before a resync (or from a subscription whose
                # snapshot we have not seen): meaningless without its snapshot.
                self.counters.stale_deltas_dropped += 1
        return out

    def _snapshot(self, state: _Symbol, msg: _Book, recv_ns: int, out: list[MarketEvent]) -> None:
        book = state.book
        book.apply_snapshot(msg.book_bids, msg.book_asks)
        if not self._book_ok(state, msg, recv_ns, out):
            return
        sequence = msg.seqId if msg.seqId is not None else msg.ts_ns // NS_PER_MS
        state.synced = True
        state.seq_id = msg.seqId
        state.sequence = sequence
        cs = state.contract_size
        out.append(
            BookSnapshot(
                venue=self.venue,
                symbol=state.symbol,
                native_symbol=state.native,
                ts_venue=msg.ts_ns,
                ts_recv=recv_ns,
                sequence=sequence,
                # The venue's text as sent (contract sizes scaled), as for every delta.
                bids=scale_levels(msg.wire_bids, cs),
                asks=scale_levels(msg.wire_asks, cs),
            )
        )
        detail = f"snapshot seqId={msg.seqId} levels={len(book)}"
        out.append(self._symbol_status(state, "book_synced", detail, recv_ns))

    def _update(self, state: _Symbol, msg: _Book, recv_ns: int, out: list[MarketEvent]) -> None:
        seq_id = msg.seqId
        if msg.prevSeqId is not None and msg.prevSeqId != state.seq_id:
            detail = f"prevSeqId={msg.prevSeqId} but last seqId={state.seq_id} (seqId={seq_id})"
            out.append(self._book_gap(state, detail, recv_ns))
            self._resync(state, f"sequence gap: {detail}", recv_ns, out)
            return
        state.book.apply_delta(msg.book_bids, msg.book_asks)
        if not self._book_ok(state, msg, recv_ns, out):
            return
        if seq_id is not None and seq_id == msg.prevSeqId:
            return  # the documented no-op heartbeat: nothing changed, nothing to publish
        prev = state.sequence
        sequence = seq_id if seq_id is not None else msg.ts_ns // NS_PER_MS
        state.seq_id = seq_id
        state.sequence = sequence
        cs = state.contract_size
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
                bids=scale_levels(msg.wire_bids, cs),
                asks=scale_levels(msg.wire_asks, cs),
            )
        )

    def _book_ok(self, state: _Symbol, msg: _Book, recv_ns: int, out: list[MarketEvent]) -> bool:
        """Check the book after applying ``msg``; on failure resync and return False."""
        book = state.book
        if msg.checksum:
            ours = text_book_checksum(book)
            if ours != msg.checksum:
                detail = f"checksum {msg.checksum}, book gives {ours} (seqId={msg.seqId})"
                out.append(self._checksum_mismatch(state, detail, recv_ns))
                self._resync(state, f"checksum mismatch: {detail}", recv_ns, out)
                return False
        if crossing := book.crossing():
            self._resync(state, f"book crossed at seqId={msg.seqId}: {crossing}", recv_ns, out)
            return False
        return True

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Rebuild the book of canonical ``symbol`` from a fresh WS snapshot, as after a gap
        (step 4): a ``book_resync`` status, the book is dropped, and an ``unsubscribe`` then
        a ``subscribe`` of its ``books`` channel only are queued; updates are dropped until
        the snapshot that answers them. A book still waiting for its snapshot (after
        connecting or an earlier resync) gets the status but no second request (each one
        spends OKX's 480 requests/hour). The instrument's other channels and other
        instruments are untouched; a symbol without a book on this connection is ignored.
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
        state.reset()
        arg = [{"channel": "books", "instId": state.native}]
        self._send("unsubscribe", arg)
        self._send("subscribe", arg)


def _position_side(d: _LiqDetail) -> Side:
    """The liquidated position's side: ``buy`` = a long was liquidated.

    ``posSide`` says it directly in long/short mode; in net mode (``posSide: "net"``) the
    liquidation *order* side is the opposite of the position's (a sell closes a long).
    """
    if d.posSide == "long":
        return "buy"
    if d.posSide == "short":
        return "sell"
    return "buy" if d.side == "sell" else "sell"


# ---------------------------------------------------------------------------------------------
# The adapter

_SUPPORTED: Final = frozenset(
    {
        DataType.TRADE,
        DataType.TICKER,
        DataType.L2_ORDERBOOK,
        DataType.FUNDING_RATE,
        DataType.MARK_PRICE,
        DataType.LIQUIDATION,
    }
)


def make_codecs(
    venue: str,
    subscriptions: Sequence[Subscription],
    endpoints: Endpoints,
    *,
    credentials: Mapping[str, str] = {},  # public channels need none
) -> list[Codec]:
    """One :class:`OkxCodec` per connection.

    Subscriptions naming the same instId (in any case) are merged. A connection holds at
    most :data:`MAX_BOOKS_PER_CONNECTION` ``books`` channels and
    :data:`MAX_CHANNELS_PER_CONNECTION` channels; an instrument's channels always share one
    connection (its ``liquidation-orders`` instType subscription counts one channel).
    """

    def key(sub: Subscription) -> str:
        check_data_types(venue, "okx codec", sub, _SUPPORTED)
        if inst_type(sub.native_symbol) is None:
            raise ValueError(f"{venue}: {sub.native_symbol} is not an OKX instId")
        return sub.native_symbol.upper()

    merged = merge_subscriptions(venue, subscriptions, key)
    # Two budgets per connection (books and all channels), so not adapters._common.pack.
    shards: list[list[Subscription]] = []
    books = channels = 0
    for sub in merged.values():
        n = len(sub.data_types)
        if n == 0:
            continue
        n_books = int(DataType.L2_ORDERBOOK in sub.data_types)
        if (
            not shards
            or books + n_books > MAX_BOOKS_PER_CONNECTION
            or channels + n > MAX_CHANNELS_PER_CONNECTION
        ):
            shards.append([])
            books = channels = 0
        shards[-1].append(sub)
        books += n_books
        channels += n
    return [OkxCodec(venue, shard, endpoints) for shard in shards]


# ---------------------------------------------------------------------------------------------
# Instrument list

_INSTRUMENT_TYPES: Final = ("SPOT", "SWAP", "FUTURES")


class _InstrumentInfo(msgspec.Struct, gc=False):
    instId: str
    instType: str
    state: str
    baseCcy: str = ""  # spot only
    quoteCcy: str = ""  # spot only
    instFamily: str = ""  # derivatives: "BTC-USDT"
    uly: str = ""  # derivatives, older answers
    ctVal: str = ""
    ctMult: str = ""
    ctValCcy: str = ""
    ctType: str = ""  # "linear" | "inverse"
    expTime: str = ""  # futures: epoch ms
    tickSz: str | None = None
    lotSz: str | None = None


class _InstrumentsAnswer(msgspec.Struct, gc=False):
    code: str
    msg: str = ""
    data: list[_InstrumentInfo] = []


def instrument_urls(endpoints: Endpoints) -> list[str]:
    """``/api/v5/public/instruments`` once per relayed ``instType``."""
    base = f"{endpoints.rest_url.rstrip('/')}/api/v5/public/instruments"
    return [f"{base}?instType={t}" for t in _INSTRUMENT_TYPES]


def parse_instruments(url: str, body: bytes) -> list[Instrument]:
    """The instruments of one ``public/instruments`` answer (see the module docstring)."""
    answer = decode("okx", url, body, _InstrumentsAnswer)
    if answer.code != "0":
        raise ValueError(f"okx: {url} answered code {answer.code}: {answer.msg}")
    out: list[Instrument] = []
    for i in answer.data:
        kind: Kind
        expiry = None
        contract_size = None
        if i.instType == "SPOT":
            kind, base, quote = "spot", i.baseCcy, i.quoteCcy
        elif i.instType in ("SWAP", "FUTURES"):
            base, _, quote = (i.instFamily or i.uly).partition("-")
            if i.instType == "SWAP":
                kind = "perp"
            else:
                ms = epoch_ms(i.expTime, f"okx: {url}: {i.instId} expTime")
                kind, expiry = "future", expiry_code(ms)
            if i.ctType == "linear" and i.ctValCcy == base:
                what = f"okx: {url}: {i.instId}"
                contract_size = positive_decimal(i.ctVal, f"{what} ctVal") * positive_decimal(
                    i.ctMult or "1", f"{what} ctMult"
                )
        else:
            continue  # OPTION, MARGIN: not asked for
        if not (base and quote):
            raise ValueError(f"okx: {url}: cannot tell base and quote of {i.instId}")
        out.append(
            Instrument(
                native_symbol=i.instId,
                symbol=canonical(base, quote, kind, expiry),
                kind=kind,
                base=base,
                quote=quote,
                price_increment=i.tickSz,
                size_increment=i.lotSz,
                contract_size=contract_size,
                active=i.state == "live",
            )
        )
    return out


INSTRUMENTS: Final = InstrumentSource(
    urls=instrument_urls,
    parse=parse_instruments,
    # The codec upper-cases instIds.
    native_key=lambda sub: sub.native_symbol.upper(),
)


ADAPTER = Adapter(
    name="okx",
    data_types=_SUPPORTED,
    default_endpoints=Endpoints(
        ws_url="wss://ws.okx.com:8443/ws/v5/public", rest_url="https://www.okx.com"
    ),
    make_codecs=make_codecs,
    canonical_symbol=canonical_symbol,
    instruments=INSTRUMENTS,
)
