"""``just bench-memory``: the relay's memory with 1,000 streams over three venues.

The issue's target: at most 250 MB RSS for 1,000 symbol streams across venues. A *stream*
is one (venue, symbol, data type), one subject ``market.<venue>.<token>.<type>``. By default:

* ``binance`` (spot): 100 symbols x trade, ticker, l2_orderbook = 300 streams;
* ``okx`` (spot): 100 symbols x trade, ticker, l2_orderbook = 300 streams;
* ``bybit`` (linear perpetuals): 100 symbols x trade, ticker, l2_orderbook, funding_rate =
  400 streams;

1,000 streams, 300 symbols, 300 order books. ``--binance``, ``--okx`` and ``--bybit`` set
the symbols per venue.

**What runs**, as real processes on 127.0.0.1, like ``bench.py``: a nats-server with
JetStream and a fresh file store (:class:`relay.natsd.NatsServer`), the feed
(``python bench/memory.py feed``, below) and ``python -m relay run -c <config>`` with the three
venues on the feed and one stream per data type (plus status) on file storage.

**The feed** is one process serving each venue on its own WebSocket and HTTP ports, in that
venue's real wire format: the frame shapes of the recorded captures (``tests/data/``:
Binance combined streams and REST depth snapshots, OKX v5 ``books``/``tickers``/``trades``,
Bybit v5 ``orderbook.50``/``tickers``/``publicTrade``), with synthetic symbols ``M000USDT``,
``M001USDT``, ... (``M000-USDT`` on OKX) and the instrument lists the relay fetches at start
(``exchangeInfo``, ``public/instruments``, ``instruments-info``, each entry a copy of the
recorded one under the new name). Books have production depths: Binance REST snapshots
1,000 levels a side (what the codec asks for), OKX ``books`` snapshots 400, Bybit
``orderbook.50`` 50. Each book is a dense ladder that drifts one tick up or down on about a
fifth of its updates (a level deleted at one end, a new price at the other), so new price
texts keep coming, as on a live market. Sizes are random, so few size texts repeat.

Each connection streams only the symbols the relay subscribed on it (read from its
subscribe requests, acknowledged as the venue does), at ``--per-symbol`` frames/s each
(default 5: 1,500 frames/s for 300 symbols), half of them book updates, a quarter tickers
and a quarter trades; OKX and Bybit get their book snapshot on subscribe, Binance serves it
on ``GET /api/v3/depth``. Application pings (OKX ``ping``, Bybit ``{"op":"ping"}``) are
answered.

**Measured**: once every book is synced (one ``l2_snapshot`` per book symbol in
``relay_events_total``), the relay's ``VmRSS`` every second for ``--seconds`` (default 60)
under flow, its ``VmHWM`` (peak) at the end, and nats-server's RSS (reported, not counted in
the target). Then JetStream's per-subject counts say how many distinct streams received
messages. PASS when the relay's peak stays at or under ``--target-mb`` (250; MB = 10^6
bytes, as in the issue). A table, then one JSON line (``--json PATH`` too); exit 1 on FAIL.

``--breakdown`` (:func:`breakdown`) then says where the memory is: the same codecs, driven
in this process with the same frames, measured with tracemalloc by allocating line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import linecache
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import nats
from feed import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    _Closed,
    _control,
    _exit_now,
    _exit_when_orphaned,
    _handshake,
    _read_frame,
    _Reader,
    ws_header,
)
from prometheus_client.parser import text_string_to_metric_families

import adapters
from bench import Relay, _die_with_parent, _interrupt, _say, _stop, environment, memory_kib
from relay.codec import Codec, Endpoints, FetchSnapshot, SendFrame, Subscription
from relay.events import DataType
from relay.natsd import NatsServer, free_port

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SELF = Path(__file__).resolve()

VENUES = ("binance", "okx", "bybit")
DATA_TYPES = {
    "binance": ("trade", "ticker", "l2_orderbook"),
    "okx": ("trade", "ticker", "l2_orderbook"),
    "bybit": ("trade", "ticker", "l2_orderbook", "funding_rate"),
}
DEPTH = {"binance": 1000, "okx": 400, "bybit": 50}
"""Levels a side of each venue's book snapshot: Binance's REST ``limit=1000`` (the codec's
``SNAPSHOT_LIMIT``), OKX's ``books`` channel, Bybit's ``orderbook.50``."""
SYMBOLS_PER_VENUE = 100
PER_SYMBOL_RATE = 5.0
KINDS = ("book", "ticker", "book", "trade")
"""The frames a symbol sends, in turn: half book updates."""
DRIFT = 0.2
"""Share of book updates that move the ladder one tick (new price texts)."""
TICK = 0.01
"""Seconds between a connection's writes."""
SECONDS = 60.0
TARGET_MB = 250.0
SYNC_TIMEOUT = 180.0
STREAMS = {
    "MARKET_TRADES": "market.*.*.trade",
    "MARKET_TICKERS": "market.*.*.ticker",
    "MARKET_BOOKS": "market.*.*.l2_orderbook",
    "MARKET_FUNDING": "market.*.*.funding_rate",
    "MARKET_STATUS": "market.*._status",
}
STREAM_MAX_BYTES = 256 * 2**20
"""Per stream: the store stays bounded however long the run (oldest messages go first)."""
MB = 1_000_000
EVENTS = ("relay_events_total", "venue", "type")


def natives(venue: str, n: int) -> list[str]:
    """The venue's spelling of the ``n`` synthetic symbols (the subscription's instruments)."""
    if venue == "okx":
        return [f"M{i:03d}-USDT" for i in range(n)]
    if venue == "bybit":
        return [f"linear:M{i:03d}USDT" for i in range(n)]
    return [f"M{i:03d}USDT" for i in range(n)]


# ---------------------------------------------------------------------------------------------
# The feed: books


class Ladder:
    """One symbol's book at the feed: a dense ladder of ``depth`` price ticks a side.

    Prices are integers in ticks, written with ``decimals`` places; the spread is one tick.
    """

    def __init__(self, rng: random.Random, depth: int) -> None:
        self.rng = rng
        self.depth = depth
        mid = 10 ** rng.uniform(-3, 4.5)
        self.decimals = max(0, 4 - math.floor(math.log10(mid)))
        self.size_decimals = rng.choice((0, 2, 3, 4, 6))
        self.best_bid = round(mid * 10**self.decimals)
        self.bids = {self.best_bid - i: self.size() for i in range(depth)}
        self.asks = {self.best_bid + 1 + i: self.size() for i in range(depth)}
        self.sequence = rng.randrange(10**8, 10**10)
        self.trade_id = rng.randrange(10**6, 10**9)

    def size(self) -> str:
        """A random size of at least one lot (a ``0`` would delete the level)."""
        lots = max(1.0, self.rng.lognormvariate(2, 2) * 10**self.size_decimals)
        return f"{round(lots) / 10**self.size_decimals:.{self.size_decimals}f}"

    def price(self, ticks: int) -> str:
        return f"{ticks / 10**self.decimals:.{self.decimals}f}"

    def snapshot(self, limit: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
        """(bids best first, asks best first) as ``[price, size]`` texts."""
        n = self.depth if limit is None else min(limit, self.depth)
        bids = [[self.price(p), self.bids[p]] for p in sorted(self.bids, reverse=True)[:n]]
        asks = [[self.price(p), self.asks[p]] for p in sorted(self.asks)[:n]]
        return bids, asks

    def update(self) -> tuple[list[list[str]], list[list[str]]]:
        """Change the book and return what changed: (bids, asks), size ``"0"`` deletes."""
        rng = self.rng
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        if rng.random() < DRIFT:
            # Shift the ladder by one tick (never below one tick); the depth stays.
            up = rng.random() < 0.5 or self.best_bid - self.depth < 1
            bb, ba = self.best_bid, self.best_bid + 1
            if up:
                gone_bid, new_bid = bb - self.depth + 1, bb + 1
                gone_ask, new_ask = ba, ba + self.depth
            else:
                gone_bid, new_bid = bb, bb - self.depth
                gone_ask, new_ask = ba + self.depth - 1, ba - 1
            del self.bids[gone_bid], self.asks[gone_ask]
            self.bids[new_bid], self.asks[new_ask] = self.size(), self.size()
            self.best_bid += 1 if up else -1
            bids += [[self.price(gone_bid), "0"], [self.price(new_bid), self.bids[new_bid]]]
            asks += [[self.price(gone_ask), "0"], [self.price(new_ask), self.asks[new_ask]]]
        for _ in range(rng.randint(1, 4)):
            # Mostly near the top, as on a real book.
            offset = min(self.depth - 1, int(rng.expovariate(1 / 8)))
            if rng.random() < 0.5:
                p = self.best_bid - offset
                self.bids[p] = self.size()
                bids.append([self.price(p), self.bids[p]])
            else:
                p = self.best_bid + 1 + offset
                self.asks[p] = self.size()
                asks.append([self.price(p), self.asks[p]])
        self.sequence += 1
        return bids, asks

    def top(self) -> tuple[str, str, str, str]:
        """Best bid price, size, best ask price, size."""
        bb, ba = self.best_bid, self.best_bid + 1
        return self.price(bb), self.bids[bb], self.price(ba), self.asks[ba]

    def trade(self) -> tuple[int, str, str, bool]:
        """(trade id, price, size, taker bought)."""
        self.trade_id += 1
        buy = self.rng.random() < 0.5
        price = self.best_bid + 1 if buy else self.best_bid
        return self.trade_id, self.price(price), self.size(), buy


# ---------------------------------------------------------------------------------------------
# The feed: venues


def _recorded(path: Path) -> Any:
    """A recorded REST answer (``tests/data/``), the template of the feed's own."""
    return json.loads(path.read_text())


class Venue:
    """One venue's symbols, books and wire format, shared by its connections."""

    name = ""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(f"{self.name}-{seed}")
        self.symbols = [self.wire_symbol(native) for native in natives(self.name, n)]
        self.books = {s: Ladder(rng, DEPTH[self.name]) for s in self.symbols}
        self.lock = threading.Lock()
        """Held while a book changes and its frame is written: snapshots and updates of a
        book reach the client in the order of their sequence ids."""

    @staticmethod
    def wire_symbol(native: str) -> str:
        return native

    def ms(self) -> int:
        return time.time_ns() // 1_000_000

    def on_client(self, text: str) -> tuple[list[bytes], list[str]]:
        """A client frame: (frames to answer with, symbols it subscribed)."""
        raise NotImplementedError

    def frame(self, symbol: str, kind: str) -> bytes:
        raise NotImplementedError

    def rest(self, path: str, query: dict[str, list[str]]) -> bytes | None:
        raise NotImplementedError


class Binance(Venue):
    name = "binance"

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed)
        self.by_stream = {s.lower(): s for s in self.symbols}

    def on_client(self, text: str) -> tuple[list[bytes], list[str]]:
        request = json.loads(text)
        if request.get("method") != "SUBSCRIBE":
            return [], []
        subscribed = {self.by_stream.get(p.partition("@")[0]) for p in request["params"]}
        answer = msgspec.json.encode({"result": None, "id": request.get("id")})
        return [answer], sorted(s for s in subscribed if s is not None)

    def frame(self, symbol: str, kind: str) -> bytes:
        book, ms = self.books[symbol], self.ms()
        data: dict[str, Any]
        if kind == "book":
            bids, asks = book.update()
            u = book.sequence
            data = {"e": "depthUpdate", "E": ms, "s": symbol, "U": u, "u": u, "b": bids, "a": asks}
            stream = "depth@100ms"
        elif kind == "ticker":
            b, bq, a, aq = book.top()
            data = {"u": book.sequence, "s": symbol, "b": b, "B": bq, "a": a, "A": aq}
            stream = "bookTicker"
        else:
            tid, p, q, buy = book.trade()
            data = {"e": "trade", "E": ms, "s": symbol, "t": tid, "p": p, "q": q, "T": ms}
            data |= {"m": not buy, "M": True}
            stream = "trade"
        return msgspec.json.encode({"stream": f"{symbol.lower()}@{stream}", "data": data})

    def rest(self, path: str, query: dict[str, list[str]]) -> bytes | None:
        if path == "/api/v3/exchangeInfo":
            template = _recorded(DATA / "binance" / "instruments_spot.json")
            entry = template["symbols"][0]
            template["symbols"] = [self._instrument(entry, s) for s in self.symbols]
            return msgspec.json.encode(template)
        symbol = query.get("symbol", [""])[0]
        if path != "/api/v3/depth" or symbol not in self.books:
            return None
        with self.lock:
            book = self.books[symbol]
            bids, asks = book.snapshot(int(query.get("limit", ["100"])[0]))
            return msgspec.json.encode({"lastUpdateId": book.sequence, "bids": bids, "asks": asks})

    def _instrument(self, entry: dict[str, Any], symbol: str) -> dict[str, Any]:
        book = self.books[symbol]
        out = json.loads(json.dumps(entry))
        out |= {"symbol": symbol, "baseAsset": symbol.removesuffix("USDT"), "quoteAsset": "USDT"}
        for f in out["filters"]:
            if f["filterType"] == "PRICE_FILTER":
                f["tickSize"] = f"{10**-book.decimals:.8f}"
            elif f["filterType"] == "LOT_SIZE":
                f["stepSize"] = f"{10**-book.size_decimals:.8f}"
        return out


class Okx(Venue):
    name = "okx"

    def on_client(self, text: str) -> tuple[list[bytes], list[str]]:
        if text == "ping":
            return [b"pong"], []
        request = json.loads(text)
        if request.get("op") != "subscribe":
            return [], []
        out: list[bytes] = []
        subscribed = []
        for arg in request["args"]:
            out.append(msgspec.json.encode({"event": "subscribe", "arg": arg, "connId": "m"}))
            symbol = arg.get("instId")
            if symbol in self.books:
                subscribed.append(symbol)
                if arg["channel"] == "books":
                    out.append(self._books(symbol, "snapshot"))
        return out, subscribed

    def _books(self, symbol: str, action: str) -> bytes:
        book = self.books[symbol]
        if action == "snapshot":
            bids, asks = book.snapshot()
            prev = -1
        else:
            prev = book.sequence
            bids, asks = book.update()
        data = {
            "asks": [[p, s, "0", "1" if s != "0" else "0"] for p, s in asks],
            "bids": [[p, s, "0", "1" if s != "0" else "0"] for p, s in bids],
            "ts": str(self.ms()),
            "checksum": 0,  # OKX retired the checksum in 2026 and sends 0
            "seqId": book.sequence,
            "prevSeqId": prev,
        }
        arg = {"channel": "books", "instId": symbol}
        return msgspec.json.encode({"arg": arg, "action": action, "data": [data]})

    def frame(self, symbol: str, kind: str) -> bytes:
        if kind == "book":
            return self._books(symbol, "update")
        book, ts = self.books[symbol], str(self.ms())
        if kind == "ticker":
            b, bq, a, aq = book.top()
            data = {"instType": "SPOT", "instId": symbol, "last": b, "lastSz": bq, "askPx": a}
            data |= {"askSz": aq, "bidPx": b, "bidSz": bq, "open24h": a, "high24h": a}
            data |= {"low24h": b, "vol24h": "1000", "volCcy24h": "1000", "ts": ts}
            channel = "tickers"
        else:
            tid, p, q, buy = book.trade()
            data = {"instId": symbol, "tradeId": str(tid), "px": p, "sz": q}
            data |= {"side": "buy" if buy else "sell", "ts": ts, "count": "1"}
            channel = "trades"
        return msgspec.json.encode({"arg": {"channel": channel, "instId": symbol}, "data": [data]})

    def rest(self, path: str, query: dict[str, list[str]]) -> bytes | None:
        if path != "/api/v5/public/instruments":
            return None
        answer = _recorded(DATA / "okx" / "instruments_spot.json")
        entry = answer["data"][0]
        answer["data"] = []
        if query.get("instType") == ["SPOT"]:
            for s in self.symbols:
                book = self.books[s]
                item = dict(entry, instId=s, baseCcy=s.removesuffix("-USDT"), quoteCcy="USDT")
                item |= {"tickSz": f"{10**-book.decimals:.8f}".rstrip("0").rstrip(".")}
                item |= {"lotSz": f"{10**-book.size_decimals:.8f}".rstrip("0").rstrip(".")}
                answer["data"].append(item)
        return msgspec.json.encode(answer)


class Bybit(Venue):
    name = "bybit"

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed)
        self.cross_sequence = 10**11

    @staticmethod
    def wire_symbol(native: str) -> str:
        return native.removeprefix("linear:")

    def on_client(self, text: str) -> tuple[list[bytes], list[str]]:
        request = json.loads(text)
        op = request.get("op")
        ack = {"success": True, "ret_msg": "", "conn_id": "m", "req_id": request.get("req_id")}
        if op == "ping":
            return [msgspec.json.encode(ack | {"ret_msg": "pong", "op": "ping"})], []
        if op not in ("subscribe", "unsubscribe"):
            return [], []
        out = [msgspec.json.encode(ack | {"op": op})]
        subscribed = []
        if op == "subscribe":
            for topic in request["args"]:
                symbol = topic.rpartition(".")[2]
                if symbol in self.books:
                    subscribed.append(symbol)
                    if topic.startswith("orderbook."):
                        out.append(self._orderbook(symbol, "snapshot"))
                    elif topic.startswith("tickers."):
                        out.append(self._ticker(symbol, "snapshot"))
        return out, subscribed

    def _orderbook(self, symbol: str, kind: str) -> bytes:
        book = self.books[symbol]
        bids, asks = book.snapshot() if kind == "snapshot" else book.update()
        self.cross_sequence += 7
        ms = self.ms()
        data = {"s": symbol, "b": bids, "a": asks, "u": book.sequence, "seq": self.cross_sequence}
        topic = f"orderbook.50.{symbol}"
        return msgspec.json.encode(
            {"topic": topic, "type": kind, "ts": ms, "data": data, "cts": ms}
        )

    def _ticker(self, symbol: str, kind: str) -> bytes:
        book = self.books[symbol]
        b, bq, a, aq = book.top()
        rate = f"{book.rng.uniform(-0.0005, 0.0005):.8f}"
        data = {"symbol": symbol, "bid1Price": b, "bid1Size": bq, "ask1Price": a, "ask1Size": aq}
        data |= {"lastPrice": b, "fundingRate": rate}
        if kind == "snapshot":
            data |= {"markPrice": b, "indexPrice": a, "nextFundingTime": "1786550400000"}
            data |= {"openInterest": "57798.137", "openInterestValue": "3696687925.13"}
        self.cross_sequence += 7
        return msgspec.json.encode(
            {"topic": f"tickers.{symbol}", "type": kind, "data": data}
            | {"cs": self.cross_sequence, "ts": self.ms()}
        )

    def frame(self, symbol: str, kind: str) -> bytes:
        if kind == "book":
            return self._orderbook(symbol, "delta")
        if kind == "ticker":
            return self._ticker(symbol, "delta")
        tid, p, q, buy = self.books[symbol].trade()
        ms = self.ms()
        trade = {"T": ms, "s": symbol, "S": "Buy" if buy else "Sell", "v": q, "p": p}
        trade |= {"L": "PlusTick", "i": f"m-{tid}", "BT": False, "RPI": False, "seq": tid}
        return msgspec.json.encode(
            {"topic": f"publicTrade.{symbol}", "type": "snapshot", "ts": ms, "data": [trade]}
        )

    def rest(self, path: str, query: dict[str, list[str]]) -> bytes | None:
        if path != "/v5/market/instruments-info":
            return None
        answer = _recorded(DATA / "bybit" / "instruments_linear.json")
        entry = answer["result"]["list"][0]
        category = query.get("category", [""])[0]
        answer["result"]["category"] = category
        answer["result"]["list"] = []
        if category == "linear":
            for s in self.symbols:
                book = self.books[s]
                item = json.loads(json.dumps(entry))
                item |= {"symbol": s, "baseCoin": s.removesuffix("USDT"), "quoteCoin": "USDT"}
                item["priceFilter"]["tickSize"] = f"{10**-book.decimals:.{book.decimals}f}"
                step = f"{10**-book.size_decimals:.{book.size_decimals}f}"
                item["lotSizeFilter"]["qtyStep"] = step
                answer["result"]["list"].append(item)
        return msgspec.json.encode(answer)


VENUE_CLASSES: dict[str, Callable[[int, int], Venue]] = {
    "binance": Binance,
    "okx": Okx,
    "bybit": Bybit,
}


# ---------------------------------------------------------------------------------------------
# The feed: connections


class _Client:
    """One WebSocket client: its subscribed symbols get frames at the per-symbol rate."""

    def __init__(self, sock: socket.socket, venue: Venue, per_symbol: float) -> None:
        self.sock = sock
        self.venue = venue
        self.per_symbol = per_symbol
        self.symbols: list[str] = []
        self.closed = threading.Event()

    def run(self) -> None:
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = _Reader(self.sock)
            if not _handshake(reader, self.sock):
                return
            threading.Thread(target=self._read, args=(reader,), daemon=True).start()
            self._stream()
        except (_Closed, OSError):
            pass
        finally:
            self.closed.set()
            with contextlib.suppress(OSError):
                self.sock.close()

    def _send(self, payload: bytes) -> None:
        """Write one text frame; the venue's lock is held by the caller."""
        self.sock.sendall(ws_header(len(payload)) + payload)

    def _read(self, reader: _Reader) -> None:
        try:
            while True:
                opcode, payload = _read_frame(reader)
                if opcode == OP_PING:
                    with self.venue.lock:
                        self.sock.sendall(_control(OP_PONG, payload[:125]))
                elif opcode == OP_CLOSE:
                    with self.venue.lock:
                        self.sock.sendall(_control(OP_CLOSE, payload[:2]))
                    break
                elif opcode == OP_TEXT:
                    with self.venue.lock:
                        answers, subscribed = self.venue.on_client(payload.decode())
                        for answer in answers:
                            self._send(answer)
                        # After its snapshot went out: only then may its updates follow.
                        self.symbols += [
                            s for s in dict.fromkeys(subscribed) if s not in self.symbols
                        ]
        except (_Closed, OSError, ValueError):
            pass
        self.closed.set()

    def _stream(self) -> None:
        credit, turn = 0.0, 0
        last = time.monotonic()
        while not self.closed.wait(TICK):
            now = time.monotonic()
            n = len(self.symbols)
            credit += (now - last) * self.per_symbol * n
            last = now
            with self.venue.lock:
                while credit >= 1 and n:
                    symbol, kind = self.symbols[turn % n], KINDS[(turn // n) % len(KINDS)]
                    self._send(self.venue.frame(symbol, kind))
                    credit -= 1
                    turn += 1


def _serve_ws(listener: socket.socket, venue: Venue, per_symbol: float) -> None:
    while True:
        sock, _ = listener.accept()
        client = _Client(sock, venue, per_symbol)
        threading.Thread(target=client.run, daemon=True).start()


def _rest_handler(venue: Venue) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            body = venue.rest(parts.path, parse_qs(parts.query))
            status = 200 if body is not None else 404
            body = body if body is not None else b'{"error":"not served by the memory feed"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # stdout is the control channel

    return Handler


def feed_main(argv: list[str]) -> int:
    """``memory.py feed``: serve the venues until SIGTERM or the parent is gone."""
    parser = argparse.ArgumentParser(prog="bench/memory.py feed")
    for venue in VENUES:
        parser.add_argument(f"--{venue}", type=int, default=SYMBOLS_PER_VENUE)
    parser.add_argument("--per-symbol", type=float, default=PER_SYMBOL_RATE)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    for name in VENUES:
        venue = VENUE_CLASSES[name](getattr(args, name), args.seed)
        listener = socket.create_server(("127.0.0.1", 0))
        rest = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(venue))
        rest.daemon_threads = True
        threading.Thread(target=rest.serve_forever, daemon=True).start()
        threading.Thread(
            target=_serve_ws, args=(listener, venue, args.per_symbol), daemon=True
        ).start()
        ws_port, rest_port = listener.getsockname()[1], rest.server_address[1]
        print(f"{name} ws://127.0.0.1:{ws_port} http://127.0.0.1:{rest_port}", flush=True)
    print("ready", flush=True)
    threading.Event().wait()
    return 0


# ---------------------------------------------------------------------------------------------
# --breakdown: what the codecs keep


def canonical(venue: str, native: str) -> str:
    """``M000-USDT``, or ``M000-USDT-PERP`` for Bybit's linear perpetuals."""
    base = native.removeprefix("linear:").removesuffix("-USDT").removesuffix("USDT")
    return f"{base}-USDT-PERP" if venue == "bybit" else f"{base}-USDT"


def _drive(codec: Codec, venue: Venue, text: str | bytes | None) -> list[str]:
    """Hand ``text`` (if any) to ``codec`` and carry out what it asks: its subscribe requests
    go to the venue, whose answers come back; snapshot requests are answered from the
    venue's REST. Returns the symbols subscribed on the way."""
    now = time.time_ns()
    if text is not None:
        codec.receive(text, now)
    subscribed = []
    while actions := codec.actions():
        for action in actions:
            if isinstance(action, SendFrame):
                answers, symbols = venue.on_client(action.text)
                subscribed += symbols
                for answer in answers:
                    subscribed += _drive(codec, venue, answer)
            elif isinstance(action, FetchSnapshot):
                url = urlsplit(action.url)
                body = venue.rest(url.path, parse_qs(url.query))
                assert body is not None, action.url
                codec.snapshot_received(action.key, body, now)
    return subscribed


def breakdown(args: argparse.Namespace, updates: int = 100) -> dict[str, Any]:
    """Drive each venue's codecs in this process with the feed's frames (every book synced,
    then ``updates`` frames per symbol) and measure with tracemalloc what they keep, by
    allocating line: the books and caches of a relay without its I/O, publisher or runtime.
    """
    import tracemalloc

    tracemalloc.start(1)
    venues = [VENUE_CLASSES[name](getattr(args, name), 1) for name in VENUES]
    codecs: list[Codec] = []  # alive until the second snapshot: what they keep is the point
    before = tracemalloc.take_snapshot()
    for venue in venues:
        name = venue.name
        types = frozenset(DataType(t) for t in DATA_TYPES[name])
        subscriptions = [
            Subscription(native, canonical(name, native), types)
            for native in natives(name, getattr(args, name))
        ]
        made = adapters.load(name).make_codecs(
            name, subscriptions, Endpoints("ws://127.0.0.1:1/ws", "http://127.0.0.1:1")
        )
        for codec in made:
            codec.connected(time.time_ns())
            symbols = list(dict.fromkeys(_drive(codec, venue, None)))
            for turn in range(updates * len(symbols)):
                symbol = symbols[turn % len(symbols)]
                kind = KINDS[(turn // len(symbols)) % len(KINDS)]
                _drive(codec, venue, venue.frame(symbol, kind))
            assert codec.synced, f"{name}: not every book synced"
        codecs += made
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # The feed's own ladders are in this process too: only what the codecs keep counts.
    mine = tracemalloc.Filter(False, str(SELF))
    stats = after.filter_traces([mine]).compare_to(before.filter_traces([mine]), "lineno")
    total = sum(stat.size_diff for stat in stats)
    levels = sum(2 * DEPTH[v.name] * len(v.symbols) for v in venues)
    top = [stat for stat in stats if stat.size_diff > 0][:12]
    return {
        "codecs": len(codecs),
        "book_levels": levels,
        "kept_mib": round(total / 2**20, 1),
        "bytes_per_level": round(total / levels) if levels else None,
        "sites_mib": {_site(stat.traceback[0]): round(stat.size_diff / 2**20, 2) for stat in top},
    }


def _site(frame: Any) -> str:
    """``relay/book.py:123 p = Decimal(text)``: the line, with its source for a line of the
    project (line numbers move as the code changes)."""
    parts = Path(frame.filename).parts
    for top in ("relay", "adapters"):
        if top in parts and "site-packages" not in parts:
            source = linecache.getline(frame.filename, frame.lineno).strip()
            return f"{'/'.join(parts[parts.index(top) :])}:{frame.lineno} {source}"
    return f"{parts[-1]}:{frame.lineno}"


def breakdown_table(b: dict[str, Any]) -> str:
    lines = [
        f"codecs alone ({b['codecs']} connections, {b['book_levels']:,} book levels): "
        f"{b['kept_mib']:.1f} MiB kept, {b['bytes_per_level']} bytes a level",
        f"{'MiB':>7}  allocated at",
    ]
    lines += [f"{mib:7.2f}  {site}" for site, mib in b["sites_mib"].items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The run


class FeedProcess:
    """``memory.py feed`` as a child process: its venues' (ws_url, rest_url)."""

    def __init__(self, args: argparse.Namespace, log: Path) -> None:
        cmd = [sys.executable, str(SELF), "feed", "--per-symbol", str(args.per_symbol)]
        for venue in VENUES:
            cmd += [f"--{venue}", str(getattr(args, venue))]
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            preexec_fn=_die_with_parent,
        )
        self.urls: dict[str, tuple[str, str]] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "ready":
                return
            venue, ws_url, rest_url = line.split()
            self.urls[venue] = (ws_url, rest_url)
        raise RuntimeError(f"the feed did not start; see {log}")

    def close(self) -> None:
        _stop(self.proc)
        self._log.close()


def write_config(
    path: Path, args: argparse.Namespace, nats_url: str, urls: dict[str, tuple[str, str]]
) -> int:
    """The relay's config on the feed; returns its sidecar port."""
    http_port = free_port()
    ws_paths = {"binance": "/stream", "okx": "/ws/v5/public", "bybit": "/v5/public/linear"}
    streams = "".join(
        f'\n[[nats.streams]]\nname = "{name}"\nsubjects = ["{subject}"]\nstorage = "file"\n'
        f"max_bytes = {STREAM_MAX_BYTES}\n"
        for name, subject in STREAMS.items()
    )
    venues = ""
    for venue in VENUES:
        n = getattr(args, venue)
        if not n:
            continue
        ws_url, rest_url = urls[venue]
        venues += f"""
[[venues]]
id = "{venue}"
adapter = "{venue}"

[venues.connection]
ws_url = "{ws_url}{ws_paths[venue]}"
rest_url = "{rest_url}"

[venues.rest]
requests_per_second = 10.0
burst = 10

[[venues.subscriptions]]
instruments = {json.dumps(natives(venue, n))}
data_types = {json.dumps(list(DATA_TYPES[venue]))}
"""
    path.write_text(
        f"""
[service]
name = "relay-bench-memory"
log_level = "warning"
log_format = "json"
shutdown_timeout_ms = 2000
state_dir = "{path.parent / "state"}"

[nats]
urls = ["{nats_url}"]
{streams}
[http]
bind = "127.0.0.1"
port = {http_port}
{venues}"""
    )
    return http_port


def by_labels(text: str, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Sample ``name`` of a ``/metrics`` text by the values of ``labels``."""
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(s.labels[label] for label in labels)] = s.value
    return out


def rss_kib(pid: int) -> int:
    return memory_kib(pid).get("VmRSS", 0)


async def subjects_with_messages(url: str) -> dict[str, int]:
    """Per data stream, how many distinct subjects hold messages."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        out = {}
        for name in STREAMS:
            if name == "MARKET_STATUS":
                continue
            info = await js.stream_info(name, subjects_filter=">")
            out[name] = len(info.state.subjects or {})
        return out
    finally:
        await nc.close()


@dataclass(slots=True)
class Result:
    streams: dict[str, int]
    """Configured streams per venue."""
    sync_s: float
    rss_kib: list[int] = field(default_factory=list)
    """The relay's VmRSS each second from the moment all books were synced."""
    nats_rss_kib: list[int] = field(default_factory=list)
    relay_hwm_kib: int = 0
    events: dict[tuple[str, ...], float] = field(default_factory=dict)
    """``relay_events_total`` by (venue, type), at the end."""
    frames: dict[tuple[str, ...], float] = field(default_factory=dict)
    """``relay_frames_received_total`` by venue, at the end."""
    subjects: dict[str, int] = field(default_factory=dict)
    gaps: float = 0.0
    resyncs: float = 0.0
    dropped: float = 0.0


def measure(args: argparse.Namespace, tmp: Path) -> Result:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(NatsServer(tmp / "nats"))
        feed = FeedProcess(args, tmp / "feed.log")
        stack.callback(feed.close)
        http_port = write_config(tmp / "relay.toml", args, server.url, feed.urls)
        relay = Relay(tmp / "relay.toml", http_port, tmp / "relay.log")
        stack.callback(relay.close)
        started = time.monotonic()
        relay.wait_ready()
        # NatsServer keeps its process private; its pid is only read, for /proc.
        nats_pid = server._proc.pid if server._proc is not None else None
        books = {v: getattr(args, v) for v in VENUES if "l2_orderbook" in DATA_TYPES[v]}
        while True:
            relay.check_alive()
            events = by_labels(relay.http.get("/metrics").text, *EVENTS)
            if all(events.get((v, "l2_snapshot"), 0) >= n for v, n in books.items()):
                break
            if time.monotonic() - started > SYNC_TIMEOUT:
                raise RuntimeError(f"books not all synced after {SYNC_TIMEOUT:g} s: {events}")
            time.sleep(0.5)
        result = Result(
            streams={v: getattr(args, v) * len(DATA_TYPES[v]) for v in VENUES},
            sync_s=round(time.monotonic() - started, 1),
        )
        _say(f"memory: all books synced after {result.sync_s:g} s; sampling {args.seconds:g} s")
        t0 = time.monotonic()
        for k in range(int(args.seconds) + 1):
            time.sleep(max(0.0, t0 + k - time.monotonic()))
            relay.check_alive()
            result.rss_kib.append(rss_kib(relay.proc.pid))
            if nats_pid is not None:
                result.nats_rss_kib.append(rss_kib(nats_pid))
        result.relay_hwm_kib = memory_kib(relay.proc.pid).get("VmHWM", 0)
        metrics = relay.metrics()
        text = relay.http.get("/metrics").text
        result.events = by_labels(text, *EVENTS)
        result.frames = by_labels(text, "relay_frames_received_total", "venue")
        result.gaps = metrics.get("relay_book_gaps_total")
        result.resyncs = metrics.get("relay_book_resyncs_total")
        result.dropped = metrics.get("relay_dropped_messages_total")
        result.subjects = asyncio.run(subjects_with_messages(server.url))
        return result


def summarize(result: Result, args: argparse.Namespace) -> dict[str, Any]:
    rss = [k / 1024 for k in result.rss_kib]
    nats_rss = [k / 1024 for k in result.nats_rss_kib]
    peak_mb = result.relay_hwm_kib * 1024 / MB
    return {
        "streams": sum(result.streams.values()),
        "streams_by_venue": result.streams,
        "symbols": sum(getattr(args, v) for v in VENUES),
        "book_depth_per_side": DEPTH,
        "per_symbol_frames_per_s": args.per_symbol,
        "sync_s": result.sync_s,
        "window_s": len(rss) - 1,
        "relay_rss_mib": {
            "synced": round(rss[0], 1),
            "steady_median": round(statistics.median(rss[len(rss) // 2 :]), 1),
            "end": round(rss[-1], 1),
            "max_sampled": round(max(rss), 1),
            "peak_vmhwm": round(result.relay_hwm_kib / 1024, 1),
            "growth_2nd_half": round(rss[-1] - rss[len(rss) // 2], 1),
            "samples": [round(x, 1) for x in rss],
        },
        "relay_peak_mb": round(peak_mb, 1),
        "target_mb": args.target_mb,
        "pass": peak_mb <= args.target_mb,
        "nats_rss_mib": {
            "synced": round(nats_rss[0], 1) if nats_rss else None,
            "end": round(nats_rss[-1], 1) if nats_rss else None,
            "max": round(max(nats_rss), 1) if nats_rss else None,
        },
        "subjects_with_messages": result.subjects,
        "streams_with_messages": sum(result.subjects.values()),
        "frames": {v: int(n) for (v,), n in sorted(result.frames.items())},
        "events": {f"{v}.{t}": int(n) for (v, t), n in sorted(result.events.items())},
        "book_gaps": int(result.gaps),
        "book_resyncs": int(result.resyncs),
        "dropped_messages": int(result.dropped),
    }


def table(s: dict[str, Any]) -> str:
    rss, nats_rss = s["relay_rss_mib"], s["nats_rss_mib"]
    rows = [
        ("streams (venue, symbol, data type)", f"{s['streams']:,}"),
        *((f"  {v}", f"{n:,}") for v, n in s["streams_by_venue"].items()),
        ("symbols (= order books)", f"{s['symbols']:,}"),
        ("book depth a side: binance/okx/bybit", "/".join(str(d) for d in DEPTH.values())),
        ("frames/s per symbol", f"{s['per_symbol_frames_per_s']:g}"),
        ("streams that stored messages", f"{s['streams_with_messages']:,}"),
        ("all books synced after, s", f"{s['sync_s']:g}"),
        ("relay RSS when synced, MiB", f"{rss['synced']:.1f}"),
        ("relay RSS steady (median 2nd half), MiB", f"{rss['steady_median']:.1f}"),
        ("relay RSS at the end, MiB", f"{rss['end']:.1f}"),
        ("relay RSS growth over the 2nd half, MiB", f"{rss['growth_2nd_half']:+.1f}"),
        ("relay peak RSS (VmHWM), MiB", f"{rss['peak_vmhwm']:.1f}"),
        ("relay peak RSS, MB / target", f"{s['relay_peak_mb']:.1f} / {s['target_mb']:g}"),
        ("nats-server RSS synced / end, MiB", f"{nats_rss['synced']} / {nats_rss['end']}"),
        (
            "book gaps / resyncs / drops",
            f"{s['book_gaps']} / {s['book_resyncs']} / {s['dropped_messages']}",
        ),
        ("result", "PASS" if s["pass"] else "FAIL"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:{width}}  {value:>16}" for label, value in rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/memory.py", description=__doc__.splitlines()[0])
    for venue in VENUES:
        parser.add_argument(
            f"--{venue}",
            type=int,
            default=SYMBOLS_PER_VENUE,
            help=f"{venue} symbols, each with {', '.join(DATA_TYPES[venue])} "
            f"(default: {SYMBOLS_PER_VENUE})",
        )
    parser.add_argument(
        "--per-symbol",
        type=float,
        default=PER_SYMBOL_RATE,
        help=f"frames/s each symbol sends (default: {PER_SYMBOL_RATE:g})",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=SECONDS,
        help=f"sampling window after all books synced (default: {SECONDS:g})",
    )
    parser.add_argument(
        "--target-mb",
        type=float,
        default=TARGET_MB,
        help=f"pass when the relay's peak RSS is at most this, 10^6 bytes (default: {TARGET_MB:g})",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also drive the codecs in this process with the same frames and print what "
        "they keep, by allocating line (tracemalloc)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures here too")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["feed"]:
        return feed_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if min(getattr(args, v) for v in VENUES) < 0 or args.per_symbol <= 0 or args.seconds < 2:
        parser.error("symbol counts must be >= 0, --per-symbol > 0, --seconds >= 2")
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="relay-memory-"))
    keep = args.keep
    try:
        summary = summarize(measure(args, tmp), args)
    except KeyboardInterrupt:
        _say("memory: interrupted")
        return 130
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        _say(f"memory: {exc!r}")
        keep = True
        return 1
    finally:
        if keep:
            _say(f"memory: config, logs and store kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results = {"environment": environment(), "memory": summary}
    if args.breakdown:
        results["breakdown"] = breakdown(args)
    print(table(summary))
    if args.breakdown:
        print("\n" + breakdown_table(results["breakdown"]))
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
