"""End to end, venue by venue: recording → replay venue → relay process → real JetStream.

One case per venue: :class:`~relay.replay.ReplayVenue` serves that venue's committed
recording from ``tests/data/<venue>/`` over its real protocols (WebSocket, plus REST where
the codec fetches book snapshots), a real relay subprocess (``python -m relay run``)
configured with that venue only reads it, and a real nats-server (the ``nats_server``
fixture) stores what is published, one stream per data type. Per venue the test asserts:

* the relay becomes ready (``/readyz``) and healthy, the venue ``streaming``;
* exactly the expected subjects hold exactly the expected number of messages, both counted
  from the raw frames by the venue's *documented* rules (JSON channel / type / id fields),
  never by running the codec; and exact decimal strings from the raw frames (every trade's
  price and size, every ticker's quotes, each snapshot's best levels) appear verbatim in the
  stored bodies;
* every book subject starts with a snapshot, and every delta chains onto the message before
  it (``prev_sequence`` == the previous ``sequence``), as the wire contract promises;
* ``/metrics``: ``relay_frames_received_total`` equals the frames the replay venue served,
  no parse error (none of these recordings has a deliberately malformed frame), no book
  gap, checksum failure, duplicate, publish error or drop, and every event was stored;
* status events are only ``connected`` (one per connection) and ``book_synced``;
* stored message ids are present and unique.

The replay venue plays **every** frame on **every** connection, so cases subscribe only
what keeps each connection's view meaningful:

* ``binance_usdm`` opens ``/public`` (depth, bookTicker) and ``/market`` (aggTrade,
  markPrice, forceOrder): each codec ignores the streams it did not subscribe, so both read
  every frame and each publishes only its own share.
* ``alpaca`` opens the crypto feed and, for the ``AMD`` stock, the stock feed; each ignores
  the other feed's symbols. The recording (Alpaca's documented session) begins with the
  ``connected`` / ``authenticated`` frames, so fake credentials get the codec through the
  login to its subscriptions.
* ``bybit`` runs twice, ``bybit-spot`` and ``bybit-linear``, one recording each: Bybit
  topics do not name the category (``publicTrade.BTCUSDT`` on both), so on one replay the
  spot codec would publish the linear frames as spot events and vice versa.

Recordings are served as committed, with these selections (frames are never edited):

* ``binance_usdm``: all three files: ``cryptofeed_futures.jsonl`` (2021, combined streams,
  with its REST snapshots), ``ccxt_usdm.jsonl`` (2026, bare BTCUSDT depth and per-fill trade
  frames with the REST snapshot that seeds the book) and ``nautilus_usdm.jsonl`` (documented
  shapes, bare: the only ``markPriceUpdate`` and ``forceOrder``).
* ``coinbase``: the two ``l2_data`` frames of ``nautilus_fixtures.jsonl`` (the only level2
  data there is; synthetic values), then ``ticker.jsonl`` and ``market_trades.jsonl``. The
  fixtures' other frames carry per-fixture ``sequence_num`` values (5, 12, 0) that on one
  connection read as a gap, which would (rightly) make the codec resync the book.
* ``kraken``: every ``book_*.jsonl`` (each has the ``instrument`` frame the checksum needs
  ahead of its books), ``ticker.jsonl``, ``ohlc.jsonl`` (an unsubscribed channel) and
  ``trade_nautilus.jsonl``.
* ``okx``: both parts of the 2022 capture plus ``ccxt_okx.jsonl`` (2026, with
  ``BTC-USDT-SWAP``).

What cannot be tested end to end with the committed recordings, and is therefore asserted
absent rather than skipped:

* ``bitget`` books: the only v2 book frames are ``books5`` (the codec subscribes ``books``),
  and the v1 ``books`` captures spell ``instType`` as ``sp``/``mc``, which no configurable
  native symbol (``<instType>:<instId>`` with a v2 instType) can subscribe. ``l2_orderbook``
  is subscribed anyway and must stay empty: ``books5`` must not be taken for ``books``.
* ``bybit-spot`` books: the spot recording has ``orderbook.1`` only; the codec subscribes
  ``orderbook.50`` (its depth is not a config setting), so spot books must stay empty too.
* OKX books from ``ccxt_okx.jsonl``: ``books5`` again, so ``BTC-USDT-SWAP`` books stay empty.
* Liquidations on Bybit and Deribit (no recorded trade carries Deribit's liquidation flag),
  funding and mark price on OKX, tickers (``bbo``) on Hyperliquid: in no recording;
  subscribed anyway, and expected absent.

Venues run one after another (one relay and one nats-server per case); ``--durations``
shows the time of each.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from relay.captures import Frame, Recording, load
from relay.natsd import NatsServer, free_port
from relay.replay import ReplayVenue
from tests.e2e_support import eventually, metric, relay_process
from tests.jetstream import StoredMessage, stream_counts, stream_messages

DATA = Path(__file__).parent / "data"
DATA_TYPES = (
    "trade",
    "ticker",
    "l2_orderbook",
    "funding_rate",
    "liquidation",
    "mark_price",
    "open_interest",
)
STREAMS = {f"E2E_{data_type.upper()}": f"market.*.*.{data_type}" for data_type in DATA_TYPES}
STATUS_STREAM = "E2E_STATUS"
SETTLE_TIMEOUT = 20.0
"""Seconds a case may take from start to everything stored (about 1 s is typical)."""


# ---------------------------------------------------------------------------------------------
# What JetStream must hold, counted from the raw frames.


class Want:
    """Expected messages per subject, and field values that must appear in stored bodies."""

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.counts: Counter[str] = Counter()
        self.samples: list[tuple[str, dict[str, Any]]] = []
        self._keys: set[tuple[str, str]] = set()

    def add(self, token: str, data_type: str, key: object = None, **fields: Any) -> None:
        """One message on ``market.<venue>.<token>.<data_type>`` whose body has ``fields``.

        ``key`` is what its ``Nats-Msg-Id`` is built from (a trade id, a venue time): a
        recording that repeats it (a trade snapshot overlapping the updates) is stored once.
        """
        subject = f"market.{self.venue}.{token}.{data_type}"
        if key is not None:
            if (subject, str(key)) in self._keys:
                return
            self._keys.add((subject, str(key)))
        self.counts[subject] += 1
        if fields:
            self.samples.append((subject, fields))

    def sample(self, token: str, data_type: str, **fields: Any) -> None:
        """Some stored body on that subject must have ``fields`` (no message counted)."""
        self.samples.append((f"market.{self.venue}.{token}.{data_type}", fields))

    def snapshot(self, token: str, bids: list[Any], asks: list[Any]) -> None:
        """A book snapshot; ``bids`` and ``asks`` best first, as ``[price, size]`` strings.

        Book messages are never de-duplicated here: no two frames of a recording are the
        same book event, so a message id shared by two of them would lose one.
        """
        fields: dict[str, Any] = {"type": "l2_snapshot"}
        if bids:
            fields["best_bid"] = bids[0]
        if asks:
            fields["best_ask"] = asks[0]
        self.add(token, "l2_orderbook", **fields)

    def delta(self, token: str) -> None:
        self.add(token, "l2_orderbook", type="l2_delta")


def parse(frame: Frame) -> Any:
    return json.loads(frame.text)


def parse_numbers(frame: Frame) -> Any:
    """For venues that send prices as JSON numbers: keep the digits as written."""
    return json.loads(frame.text, parse_float=Decimal)


def num(value: object) -> str:
    """A JSON number as the relay publishes it (``format(Decimal, "f")``: ``5e-05`` →
    ``0.00005``, ``85600.40`` stays); ints and strings keep their digits."""
    return format(Decimal(str(value)), "f")


def levels(pairs: Iterable[Iterable[Any]]) -> list[list[str]]:
    return [[str(price), str(size)] for price, size, *_ in pairs]


def expect_binance(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """Binance spot combined streams; books by the documented REST-snapshot procedure
    (a diff applies when its final id ``u`` is above the snapshot's ``lastUpdateId``)."""
    want = Want("binance")
    snapshots = {}
    for response in rec.http:
        symbol = response.url.split("symbol=")[1].split("&")[0]
        body = json.loads(response.body)
        snapshots[symbol] = body["lastUpdateId"]
        want.snapshot(tokens[symbol], body["bids"], body["asks"])
    for frame in rec.received:
        message = parse(frame)
        stream, data = message["stream"], message["data"]
        token = tokens.get(data.get("s", ""))
        if token is None:
            continue
        if stream.endswith("@aggTrade"):
            side = "sell" if data["m"] else "buy"  # buyer is maker: the taker sold
            want.add(token, "trade", data["a"], price=data["p"], size=data["q"], side=side)
        elif stream.endswith("@bookTicker"):
            quote = {"bid_price": data["b"], "bid_size": data["B"], "ask_price": data["a"]}
            want.add(token, "ticker", data["u"], ask_size=data["A"], sequence=data["u"], **quote)
        elif stream.endswith("@depth@100ms") and data["u"] > snapshots[data["s"]]:
            want.delta(token)
    return want


def expect_binance_usdm(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """USD-M: combined-stream and bare frames alike; a diff applies when ``u`` is at least
    the snapshot's ``lastUpdateId`` (USD-M drops only ``u < lastUpdateId``)."""
    want = Want("binance_usdm")
    snapshots = {}
    for response in rec.http:
        symbol = response.url.split("symbol=")[1].split("&")[0]
        body = json.loads(response.body)
        snapshots[symbol] = body["lastUpdateId"]
        want.snapshot(tokens[symbol], body["bids"], body["asks"])
    for frame in rec.received:
        message = parse(frame)
        data = message.get("data", message)
        symbol = data["o"]["s"] if data.get("e") == "forceOrder" else data.get("s", "")
        token = tokens.get(symbol)
        if token is None:
            continue
        match data.get("e"):
            case "aggTrade" | "trade":  # per-fill trades are documented as decoded too
                side = "sell" if data["m"] else "buy"
                key = data.get("a", data.get("t"))
                want.add(token, "trade", key, price=data["p"], size=data["q"], side=side)
            case "bookTicker":
                quote = {"bid_price": data["b"], "bid_size": data["B"], "ask_price": data["a"]}
                want.add(token, "ticker", data["u"], ask_size=data["A"], **quote)
            case "depthUpdate" if data["u"] >= snapshots[symbol]:
                want.delta(token)
            case "markPriceUpdate":
                prices = {"mark_price": data["p"], "index_price": data["i"]}
                want.add(token, "funding_rate", data["E"], rate=data["r"], **prices)
                want.add(token, "mark_price", data["E"], **prices)
            case "forceOrder":
                order = data["o"]
                # The order closing a long is a SELL: the liquidated position was long ("buy").
                side = {"SELL": "buy", "BUY": "sell"}[order["S"]]
                want.add(token, "liquidation", order["T"], size=order["q"], side=side)
    return want


def expect_bitget(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """Bitget v2: trades by id, a ticker per push, and from futures tickers funding / mark
    price / open interest whenever their values change (the first push always counts)."""
    want = Want("bitget")
    last: dict[tuple[str, str], tuple[Any, ...]] = {}
    for frame in rec.received:
        message = parse(frame)
        arg = message.get("arg", {})
        token = tokens.get(f"{arg.get('instType')}:{arg.get('instId')}")
        if token is None or "data" not in message:
            continue
        for item in message["data"]:
            if arg["channel"] == "trade":
                fields = {"price": item["price"], "size": item["size"], "side": item["side"]}
                want.add(token, "trade", item["tradeId"], trade_id=item["tradeId"], **fields)
            elif arg["channel"] == "ticker":
                quote = {"bid_price": item["bidPr"], "bid_size": item["bidSz"]}
                quote |= {"ask_price": item["askPr"], "ask_size": item["askSz"]}
                want.add(token, "ticker", item["ts"], last_price=item["lastPr"], **quote)
                if "fundingRate" not in item:
                    continue
                derived = {
                    "funding_rate": (item["fundingRate"], item["nextFundingTime"]),
                    "mark_price": (item["markPrice"], item["indexPrice"]),
                    "open_interest": (item["holdingAmount"],),
                }
                for data_type, values in derived.items():
                    if last.get((token, data_type)) != values:
                        last[token, data_type] = values
                        want.add(token, data_type, item["ts"])
                want.sample(token, "funding_rate", rate=item["fundingRate"])
                want.sample(token, "open_interest", open_interest=item["holdingAmount"])
    return want


BYBIT_BOOK_DEPTH = 50
"""The adapter's documented default ``orderbook`` depth, the only one a config can get."""
_BYBIT_FIELDS = {
    "ticker": ("bid1Price", "bid1Size", "ask1Price", "ask1Size", "lastPrice"),
    "mark_price": ("markPrice", "indexPrice"),
    "funding_rate": ("fundingRate", "nextFundingTime"),
    "open_interest": ("openInterest", "openInterestValue"),
}


def expect_bybit(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """Bybit v5 (one category per recording): trades by id; ticker snapshots and deltas
    merged, each event counted when a message carries one of its fields; books on
    ``orderbook.50`` only."""
    want = Want("bybit")
    merged: dict[str, dict[str, Any]] = defaultdict(dict)
    for frame in rec.received:
        message = parse(frame)
        kind, _, symbol = message.get("topic", "").rpartition(".")
        token = tokens.get(symbol)
        if token is None:
            continue
        data = message["data"]
        if kind == "publicTrade":
            for t in data:
                fields = {"price": t["p"], "size": t["v"], "side": t["S"].lower()}
                want.add(token, "trade", t["i"], trade_id=t["i"], **fields)
        elif kind == "tickers":
            merged[symbol].update(data)
            for data_type, names in _BYBIT_FIELDS.items():
                if any(name in data for name in names):
                    want.add(token, data_type, message.get("cs", message["ts"]))
            state = merged[symbol]
            quote = {"last_price": state["lastPrice"], "bid_price": state.get("bid1Price")}
            want.sample(token, "ticker", **quote)
            if "markPrice" in state:
                prices = {"mark_price": state["markPrice"], "index_price": state["indexPrice"]}
                want.sample(token, "mark_price", **prices)
        elif kind == f"orderbook.{BYBIT_BOOK_DEPTH}":
            if message["type"] == "snapshot":
                want.snapshot(token, data["b"], data["a"])
            else:
                want.delta(token)
    return want


def expect_coinbase(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """Coinbase Advanced Trade envelopes: trades by id, a ticker per ticker entry, level2
    snapshot then updates."""
    want = Want("coinbase")
    for frame in rec.received:
        message = parse(frame)
        for event in message["events"]:
            if message["channel"] == "market_trades":
                for t in event["trades"]:
                    if (token := tokens.get(t["product_id"])) is not None:
                        fields = {"price": t["price"], "size": t["size"], "side": t["side"].lower()}
                        want.add(token, "trade", t["trade_id"], trade_id=t["trade_id"], **fields)
            elif message["channel"] == "ticker":
                for t in event["tickers"]:
                    if (token := tokens.get(t["product_id"])) is not None:
                        quote = {"bid_price": t["best_bid"], "bid_size": t["best_bid_quantity"]}
                        quote |= {"ask_price": t["best_ask"], "ask_size": t["best_ask_quantity"]}
                        want.add(token, "ticker", message["timestamp"], **quote)
            elif message["channel"] == "l2_data":
                token = tokens[event["product_id"]]
                if event["type"] == "snapshot":
                    book = defaultdict(list)
                    for level in event["updates"]:
                        book[level["side"]].append((level["price_level"], level["new_quantity"]))
                    bids = sorted(book["bid"], key=lambda lv: Decimal(lv[0]), reverse=True)
                    asks = sorted(book["offer"], key=lambda lv: Decimal(lv[0]))
                    want.snapshot(token, levels(bids), levels(asks))
                else:
                    want.delta(token)
    return want


def expect_deribit(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """Deribit JSON-RPC notifications; numbers are JSON numbers, published as ``f``-format
    decimals. A ticker notification gives ticker, mark price, open interest and (perpetuals)
    funding; a trade flagged ``liquidation`` would also give liquidations."""
    want = Want("deribit")
    for frame in rec.received:
        message = parse_numbers(frame)
        if message.get("method") != "subscription":
            continue
        kind, instrument, _ = message["params"]["channel"].split(".")
        token, data = tokens.get(instrument), message["params"]["data"]
        if token is None:
            continue
        if kind == "trades":
            for t in data:
                fields = {
                    "price": num(t["price"]),
                    "size": num(t["amount"]),
                    "side": t["direction"],
                }
                want.add(token, "trade", t["trade_id"], trade_id=t["trade_id"], **fields)
                for party in t.get("liquidation") or "":
                    want.add(token, "liquidation", f"{t['trade_id']}:{party}")
        elif kind == "ticker":
            quote = {
                "bid_price": num(data["best_bid_price"]),
                "ask_price": num(data["best_ask_price"]),
            }
            want.add(
                token, "ticker", data["timestamp"], bid_size=num(data["best_bid_amount"]), **quote
            )
            prices = {
                "mark_price": num(data["mark_price"]),
                "index_price": num(data["index_price"]),
            }
            want.add(token, "mark_price", data["timestamp"], **prices)
            want.add(
                token, "open_interest", data["timestamp"], open_interest=num(data["open_interest"])
            )
            if "current_funding" in data:
                want.add(
                    token, "funding_rate", data["timestamp"], rate=num(data["current_funding"])
                )
        elif kind == "book":
            if data["type"] == "snapshot":  # levels are [action, price, amount]
                bids = [[num(price), num(size)] for _, price, size in data["bids"]]
                asks = [[num(price), num(size)] for _, price, size in data["asks"]]
                want.snapshot(token, bids, asks)
            else:
                want.delta(token)
    return want


def expect_hyperliquid(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """Hyperliquid: trades by ``tid`` (``B`` a buying taker, ``A`` a selling one); every
    ``l2Book`` newer than the last is a snapshot; ``activeAssetCtx`` gives funding, mark
    price and open interest, each only when its values changed."""
    want = Want("hyperliquid")
    newest: dict[str, int] = {}
    last: dict[tuple[str, str], tuple[Any, ...]] = {}
    for frame in rec.received:
        message = parse(frame)
        channel, data = message["channel"], message["data"]
        if channel == "trades":
            for t in data:
                if (token := tokens.get(t["coin"])) is not None:
                    side = {"B": "buy", "A": "sell"}[t["side"]]
                    fields = {"price": t["px"], "size": t["sz"], "side": side}
                    want.add(token, "trade", t["tid"], trade_id=str(t["tid"]), **fields)
        elif channel == "l2Book" and (token := tokens.get(data["coin"])) is not None:
            if data["time"] > newest.get(token, -1):
                newest[token] = data["time"]
                bids, asks = ([[lv["px"], lv["sz"]] for lv in side] for side in data["levels"])
                want.snapshot(token, bids, asks)
        elif channel == "activeAssetCtx" and (token := tokens.get(data["coin"])) is not None:
            ctx = data["ctx"]
            derived = {
                "funding_rate": (ctx["funding"], ctx["markPx"], ctx["oraclePx"]),
                "mark_price": (ctx["markPx"], ctx["oraclePx"]),
                "open_interest": (ctx["openInterest"],),
            }
            for data_type, values in derived.items():
                if last.get((token, data_type)) != values:
                    last[token, data_type] = values
                    want.add(token, data_type, values)
            want.sample(token, "funding_rate", rate=ctx["funding"])
            want.sample(token, "mark_price", mark_price=ctx["markPx"], index_price=ctx["oraclePx"])
    return want


def expect_kraken(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """Kraken v2: numbers are JSON numbers; every ``book`` data item is a snapshot or an
    update, every ``ticker`` item a ticker, every ``trade`` item a trade (by id)."""
    want = Want("kraken")
    for frame in rec.received:
        message = parse_numbers(frame)
        channel = message.get("channel")
        if channel not in ("book", "ticker", "trade"):
            continue
        for item in message["data"]:
            token = tokens.get(item["symbol"])
            if token is None:
                continue
            if channel == "trade":
                fields = {
                    "price": num(item["price"]),
                    "size": num(item["qty"]),
                    "side": item["side"],
                }
                want.add(token, "trade", item["trade_id"], trade_id=str(item["trade_id"]), **fields)
            elif channel == "ticker":
                quote = {"bid_price": num(item["bid"]), "bid_size": num(item["bid_qty"])}
                quote |= {"ask_price": num(item["ask"]), "ask_size": num(item["ask_qty"])}
                want.add(token, "ticker", item["timestamp"], last_price=num(item["last"]), **quote)
            elif message["type"] == "snapshot":
                bids = [[num(lv["price"]), num(lv["qty"])] for lv in item["bids"]]
                asks = [[num(lv["price"]), num(lv["qty"])] for lv in item["asks"]]
                want.snapshot(token, bids, asks)
            else:
                want.delta(token)
    return want


def expect_okx(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """OKX v5 pushes: trades by id, tickers by venue time, ``books`` (not ``books5``)
    snapshot then updates."""
    want = Want("okx")
    for frame in rec.received:
        message = parse(frame)
        arg = message.get("arg", {})
        token = tokens.get(arg.get("instId", ""))
        if token is None or "data" not in message:
            continue
        for item in message["data"]:
            if arg["channel"] == "trades":
                fields = {"price": item["px"], "size": item["sz"], "side": item["side"]}
                want.add(token, "trade", item["tradeId"], trade_id=item["tradeId"], **fields)
            elif arg["channel"] == "tickers":
                quote = {"bid_price": item["bidPx"], "bid_size": item["bidSz"]}
                quote |= {"ask_price": item["askPx"], "ask_size": item["askSz"]}
                want.add(token, "ticker", item["ts"], last_price=item["last"], **quote)
            elif arg["channel"] == "books" and message["action"] == "snapshot":
                want.snapshot(token, levels(item["bids"]), levels(item["asks"]))
            elif arg["channel"] == "books":
                want.delta(token)
    return want


def expect_alpaca(rec: Recording, tokens: Mapping[str, str]) -> Want:
    """Alpaca: arrays of ``T``-tagged messages with JSON numbers; crypto trades (``tks`` the
    taker side), quotes as tickers, ``o`` books with ``r`` as snapshots. Stock trades carry
    no taker side and are not offered."""
    want = Want("alpaca")
    for frame in rec.received:
        for item in parse_numbers(frame):
            token = tokens.get(item.get("S", ""))
            if token is None:
                continue
            if item["T"] == "t" and "/" in item["S"]:
                side = {"B": "buy", "S": "sell"}[item["tks"]]
                fields = {"price": num(item["p"]), "size": num(item["s"]), "side": side}
                want.add(token, "trade", item["i"], trade_id=str(item["i"]), **fields)
            elif item["T"] == "q":
                quote = {"bid_price": num(item["bp"]), "bid_size": num(item["bs"])}
                quote |= {"ask_price": num(item["ap"]), "ask_size": num(item["as"])}
                want.add(token, "ticker", item["t"], **quote)
            elif item["T"] == "o" and item.get("r"):
                bids = [[num(lv["p"]), num(lv["s"])] for lv in item["b"]]
                asks = [[num(lv["p"]), num(lv["s"])] for lv in item["a"]]
                want.snapshot(token, bids, asks)
    return want


# ---------------------------------------------------------------------------------------------
# The cases.


@dataclass(frozen=True)
class Case:
    id: str
    venue: str
    """Adapter name, also the venue id (so subjects are ``market.<adapter>...``)."""
    files: tuple[str, ...]
    """Recordings under ``tests/data``, served one after the other."""
    subscriptions: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    """``(instruments, data_types)`` per ``[[venues.subscriptions]]`` entry."""
    tokens: Mapping[str, str]
    """Native symbol (as the venue's frames spell it) → subject token."""
    expect: Callable[[Recording, Mapping[str, str]], Want]
    connections: int = 1
    ws_path: str = "/stream"
    credentials: Mapping[str, str] = field(default_factory=dict)
    keep: Callable[[str, Frame], bool] = lambda file, frame: True
    """Which frames of each file are served (see the module docstring)."""

    def recording(self) -> Recording:
        rec = Recording(venue=self.venue)
        for name in self.files:
            part = load(DATA / name)
            rec.received += [frame for frame in part.received if self.keep(name, frame)]
            rec.http += part.http
        return rec


COMMON_TYPES = ("trade", "ticker", "l2_orderbook")
"""What every adapter offers."""
PERP_TYPES = ("funding_rate", "mark_price", "open_interest")

CASES = [
    Case(
        "binance",
        "binance",
        ("cryptofeed/BINANCE.ws.1.0",),
        ((("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"), COMMON_TYPES),),
        {"NKNUSDT": "nkn-usdt", "BLZETH": "blz-eth", "LRCBTC": "lrc-btc", "RUNEEUR": "rune-eur"},
        expect_binance,
    ),
    Case(
        "binance_usdm",
        "binance_usdm",
        (
            "binance_usdm/cryptofeed_futures.jsonl",
            "binance_usdm/ccxt_usdm.jsonl",
            "binance_usdm/nautilus_usdm.jsonl",
        ),
        (
            (("AKROUSDT", "CTKUSDT"), COMMON_TYPES),
            (("BTCUSDT",), ("trade", "l2_orderbook", "funding_rate", "mark_price", "liquidation")),
        ),
        {"AKROUSDT": "akro-usdt-perp", "CTKUSDT": "ctk-usdt-perp", "BTCUSDT": "btc-usdt-perp"},
        expect_binance_usdm,
        connections=2,  # /public and /market
    ),
    Case(
        "bitget",
        "bitget",
        ("bitget/ccxt_bitget.jsonl",),
        # l2_orderbook stays empty: the recording's books are books5, not the books channel.
        ((("SPOT:BTCUSDT",), COMMON_TYPES), (("USDT-FUTURES:BTCUSDT",), COMMON_TYPES + PERP_TYPES)),
        {"SPOT:BTCUSDT": "btc-usdt", "USDT-FUTURES:BTCUSDT": "btc-usdt-perp"},
        expect_bitget,
    ),
    Case(
        "bybit-spot",
        "bybit",
        ("bybit/ccxt_spot.jsonl",),
        # l2_orderbook stays empty: the recording's books are orderbook.1, not orderbook.50.
        ((("spot:BTCUSDT",), COMMON_TYPES),),
        {"BTCUSDT": "btc-usdt"},
        expect_bybit,
    ),
    Case(
        "bybit-linear",
        "bybit",
        ("bybit/ccxt_linear.jsonl",),
        ((("linear:BTCUSDT",), COMMON_TYPES + PERP_TYPES + ("liquidation",)),),
        {"BTCUSDT": "btc-usdt-perp"},
        expect_bybit,
    ),
    Case(
        "coinbase",
        "coinbase",
        (
            "coinbase/nautilus_fixtures.jsonl",
            "coinbase/ticker.jsonl",
            "coinbase/market_trades.jsonl",
        ),
        ((("BTC-USD",), COMMON_TYPES),),
        {"BTC-USD": "btc-usd"},
        expect_coinbase,
        # Only the level2 fixtures: the others' sequence_num values read as a gap.
        keep=lambda file, frame: "nautilus" not in file or '"l2_data"' in frame.text,
    ),
    Case(
        "deribit",
        "deribit",
        ("deribit/ccxt_btc_perpetual.jsonl",),
        ((("BTC-PERPETUAL",), COMMON_TYPES + PERP_TYPES + ("liquidation",)),),
        {"BTC-PERPETUAL": "btc-usd-perp"},
        expect_deribit,
    ),
    Case(
        "hyperliquid",
        "hyperliquid",
        ("hyperliquid/ccxt_nautilus_btc.jsonl",),
        ((("BTC",), COMMON_TYPES + PERP_TYPES),),
        {"BTC": "btc-usdc-perp"},
        expect_hyperliquid,
    ),
    Case(
        "kraken",
        "kraken",
        (
            "kraken/book_depth10.jsonl",
            "kraken/book_thin_then_deep.jsonl",
            "kraken/book_repeated_snapshot.jsonl",
            "kraken/ticker.jsonl",
            "kraken/ohlc.jsonl",
            "kraken/trade_nautilus.jsonl",
        ),
        ((("BTC/USD",), COMMON_TYPES), (("DOGE/USDT",), ("l2_orderbook",))),
        {"BTC/USD": "btc-usd", "DOGE/USDT": "doge-usdt"},
        expect_kraken,
    ),
    Case(
        "okx",
        "okx",
        ("okx/OKX.ws.1.0.part1.jsonl", "okx/OKX.ws.1.0.part2.jsonl", "okx/ccxt_okx.jsonl"),
        (
            (("BTC-USDT", "BTC-USD-220527"), COMMON_TYPES),
            (("UNI-USD-SWAP", "BTC-USDT-SWAP"), (*COMMON_TYPES, "funding_rate", "mark_price")),
        ),
        {
            "BTC-USDT": "btc-usdt",
            "BTC-USD-220527": "btc-usd-220527",
            "UNI-USD-SWAP": "uni-usd-perp",
            "BTC-USDT-SWAP": "btc-usdt-perp",
        },
        expect_okx,
    ),
    Case(
        "alpaca",
        "alpaca",
        ("alpaca/doc_examples.jsonl",),
        (
            (("BTC/USD",), COMMON_TYPES),
            (("ETH/USDT", "AVAX/USD", "BAT/USD"), ("trade", "ticker")),
            (("AMD",), ("ticker",)),
        ),
        {
            "BTC/USD": "btc-usd",
            "ETH/USDT": "eth-usdt",
            "AVAX/USD": "avax-usd",
            "BAT/USD": "bat-usd",
            "AMD": "amd-usd",
        },
        expect_alpaca,
        connections=2,  # the crypto feed and the stock feed
        ws_path="/v2/iex",  # the adapter derives both feeds' paths from a /v2/<feed> URL
        credentials={"key_id": "e2e-key-id", "secret_key": "e2e-secret-key"},
    ),
]


# ---------------------------------------------------------------------------------------------
# The test.


def write_config(path: Path, case: Case, nats_url: str, venue: ReplayVenue, http_port: int) -> Path:
    streams = "".join(
        f'\n[[nats.streams]]\nname = "{name}"\nsubjects = ["{subject}"]\n'
        for name, subject in {**STREAMS, STATUS_STREAM: "market.*._status"}.items()
    )
    credentials = "".join(f'{name} = "{value}"\n' for name, value in case.credentials.items())
    subscriptions = "".join(
        f"\n[[venues.subscriptions]]\ninstruments = {json.dumps(list(instruments))}\n"
        f"data_types = {json.dumps(list(data_types))}\n"
        for instruments, data_types in case.subscriptions
    )
    ws_url = venue.ws_url.removesuffix("/stream") + case.ws_path
    path.write_text(
        f"""
[service]
name = "relay-e2e-{case.id}"
log_level = "info"
log_format = "json"
shutdown_timeout_ms = 5000

[nats]
urls = ["{nats_url}"]
{streams}
[http]
bind = "127.0.0.1"
port = {http_port}

[[venues]]
id = "{case.venue}"
adapter = "{case.venue}"

[venues.connection]
ws_url = "{ws_url}"
rest_url = "{venue.rest_url}"

{"[venues.credentials]" if credentials else ""}
{credentials}
{subscriptions}
"""
    )
    return path


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_venue_end_to_end(case: Case, nats_server: NatsServer, tmp_path: Path) -> None:
    rec = case.recording()
    want = case.expect(rec, case.tokens)
    served = case.connections * len(rec.received)
    per_stream = {name: 0 for name in STREAMS}
    for subject, n in want.counts.items():
        per_stream[f"E2E_{subject.rsplit('.', 1)[1].upper()}"] += n
    label = f'{{venue="{case.venue}"}}'

    venue = ReplayVenue(rec, pace="fast")
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        config = write_config(tmp_path / "relay.toml", case, nats_server.url, venue, http_port)
        log = tmp_path / "relay.log"
        async with relay_process(config, log) as proc, httpx.AsyncClient() as http:

            async def ready() -> bool:
                try:
                    return (await http.get(f"{base}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False  # the sidecar is not listening yet

            await eventually(ready)

            async def settled() -> bool:
                """Every frame read, every event acknowledged, and the counts reached."""
                text = (await http.get(f"{base}/metrics")).text
                events = sum(
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith("relay_events_total{") and f'venue="{case.venue}"' in line
                )
                acked = metric(text, f"relay_published_messages_total{label}") + metric(
                    text, f"relay_published_duplicates_total{label}"
                )
                stored = await stream_counts(nats_server.url, list(STREAMS))
                return (
                    metric(text, f"relay_frames_received_total{label}") == served
                    and events == acked
                    and metric(text, "relay_publish_in_flight") == 0
                    and stored == per_stream
                )

            # On a timeout, the assertions below say what is missing or extra.
            with contextlib.suppress(trio.TooSlowError):
                await eventually(settled, timeout=SETTLE_TIMEOUT)

            health = await http.get(f"{base}/health")
            metrics = (await http.get(f"{base}/metrics")).text
            # Read before stopping: a graceful stop publishes "disconnected" statuses.
            stored = await read_streams(nats_server.url, [*STREAMS, STATUS_STREAM])

            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await proc.wait() == 0, log.read_text()[-3000:]
        nursery.cancel_scope.cancel()

    statuses = stored.pop(STATUS_STREAM)
    data = [m for messages in stored.values() for m in messages]

    # Ready and healthy, every connection streaming, none reconnected.
    assert health.status_code == 200, health.text
    venue_health = health.json()["venues"][case.venue]
    assert venue_health["state"] == "streaming", venue_health
    assert venue.connections == case.connections
    assert metric(metrics, f"relay_reconnects_total{label}") == 0

    # Exactly the expected subjects, each with exactly the expected number of messages.
    got = Counter(m.subject for m in data)
    wrong = {s: (got[s], want.counts[s]) for s in got | want.counts if got[s] != want.counts[s]}
    assert wrong == {}, "subject: (stored, expected)"

    # Exact decimal strings (and sides, ids) from the raw frames, verbatim in stored bodies.
    bodies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in data:
        bodies[m.subject].append(json.loads(m.data))
    missing = [
        (subject, fields)
        for subject, fields in want.samples
        if not any(_has(body, fields) for body in bodies[subject])
    ]
    assert missing == [], f"{len(missing)} of {len(want.samples)} raw values not stored"

    _check_books(stored["E2E_L2_ORDERBOOK"])

    # The sidecar's counts agree with what the replay venue sent and JetStream stored.
    assert venue.frames_sent == served
    assert metric(metrics, f"relay_frames_received_total{label}") == served
    assert metric(metrics, f"relay_parse_errors_total{label}") == 0
    for counter in ("book_gaps", "checksum_failures", "published_duplicates"):
        assert metric(metrics, f"relay_{counter}_total{label}") == 0, counter
    assert "relay_publish_errors_total{" not in metrics
    assert "relay_dropped_messages_total{" not in metrics
    published = metric(metrics, f"relay_published_messages_total{label}")
    assert published == len(data) + len(statuses)

    # Status: one "connected" per connection, and books that synced; nothing else went
    # wrong. The replay venue serves no instrument list, which the relay reports once.
    bodies = [json.loads(m.data) for m in statuses]
    kinds = Counter(body["kind"] for body in bodies)
    assert kinds["connected"] == case.connections
    assert set(kinds) <= {"connected", "book_synced", "venue_error"}, kinds
    errors = [b["detail"] for b in bodies if b["kind"] == "venue_error"]
    assert len(errors) <= 1, errors
    assert all(d.startswith("instrument list unavailable") for d in errors), errors

    ids = [m.msg_id for m in data + statuses]
    assert all(ids) and len(set(ids)) == len(ids)


async def read_streams(url: str, names: list[str]) -> dict[str, list[StoredMessage]]:
    return {name: await stream_messages(url, name) for name in names}


def _has(body: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    for name, value in fields.items():
        if name in ("best_bid", "best_ask"):
            side = body.get("bids" if name == "best_bid" else "asks") or [None]
            if side[0] != value:
                return False
        elif body.get(name) != value:
            return False
    return True


def _check_books(messages: list[StoredMessage]) -> None:
    """Per symbol, in stream order: a snapshot first, and every delta chained onto the
    message before it, as a consumer applies them."""
    last: dict[str, int] = {}
    for m in messages:
        body = json.loads(m.data)
        if body["type"] == "l2_snapshot":
            last[m.subject] = body["sequence"]
            continue
        assert m.subject in last, f"delta before any snapshot on {m.subject}: {body}"
        assert body["prev_sequence"] == last[m.subject], f"broken chain on {m.subject}: {body}"
        last[m.subject] = body["sequence"]
