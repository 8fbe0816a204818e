"""The benchmark's venues: fast loopback stand-ins for a mix of venues, run as one process.

``bench/bench.py`` points each venue of the relay's config at this process. It must never be
what limits the measured rate, so it does as little as possible while it streams: every
WebSocket frame is built once, before listening, into one big buffer of ready-to-send bytes
per stream, and streaming is nothing but ``sendall`` of slices of that buffer on a plain
blocking socket. (The in-tree :mod:`relay.replay` venue, on trio-websocket, tops out near
12k frames/s, which would cap what the bench can show.)

**Venues** (:data:`VENUES`; ``--venues`` picks some, all by default). Each plays real
captures from ``tests/data/`` in its own wire format, on its own paths under the one
WebSocket port (a venue that opens several connections, Binance USD-M's ``/public`` and
``/market`` or Bybit's ``/spot`` and ``/linear``, gets one stream per path, each with the
frames of that connection only):

* ``binance``: spot, ``cryptofeed/BINANCE.ws.1.0`` (4 symbols: depth, bookTicker, aggTrade);
* ``binance_usdm``: ``binance_usdm/cryptofeed_futures.jsonl`` (AKROUSDT and CTKUSDT);
* ``okx``: ``okx/OKX.ws.1.0.part{1,2}.jsonl`` (books with checksums, trades, tickers of
  BTC-USDT, BTC-USD-220527 and UNI-USD-SWAP);
* ``bybit``: ``bybit/ccxt_linear.jsonl`` (orderbook.50, trades, tickers with funding, mark
  price and open interest) and ``bybit/ccxt_spot.jsonl`` (trades, tickers), BTCUSDT;
* ``kraken``: v2 ``kraken/book_repeated_snapshot.jsonl`` (BTC/USD),
  ``book_thin_then_deep.jsonl`` (DOGE/USDT), ``ticker.jsonl`` and ``trade_nautilus.jsonl``
  (a documented trade frame, not a recording), books with checksums;
* ``coinbase``: Advanced Trade ``coinbase/ticker.jsonl`` and ``market_trades.jsonl``
  (BTC-USD), and the ``l2_data`` frames of ``nautilus_fixtures.jsonl`` (documented shape,
  synthetic values: there is no level2 recording); ``sequence_num`` counts the messages of
  the connection, so it is renumbered: each frame's position, on across passes;
* ``deribit``: ``deribit/ccxt_btc_perpetual.jsonl`` (BTC-PERPETUAL book, trades, ticker);
* ``hyperliquid``: ``hyperliquid/ccxt_nautilus_btc.jsonl`` (BTC trades, l2Book, asset
  context; the fixtures appended after the recorded frames are left out).

**Passes.** Captures are short, so each stream plays its frames in passes, with the venue
ids a message id is built from shifted on every pass, so that every frame is new to
JetStream (a repeated id would only be a duplicate hit) and every book chain runs on across
passes. Per pass ``k``, each such field gets ``k * step``, where ``step`` is the width of
the range its *series* (one id space of one symbol) covers in a pass: trade ids, update
ids, sequence ids, and venue times where the venue keys an event by its time (OKX's 2022
books and its tickers, Kraken's and Coinbase's books and tickers, Bybit's and Deribit's
tickers, which also key their funding, mark price and open interest, Hyperliquid's
books). Ids without
an order (Bybit linear's UUID trade ids, Hyperliquid's ``tid``) move by one per pass
instead. Checksums are over prices and sizes, so the shifts leave them valid.

* Binance (REST snapshot + diff chain): per symbol, depth ``U``/``u`` (and USD-M's ``pu``)
  and bookTicker ``u`` move by the width of the pass's chain, so pass ``k + 1`` starts
  right where pass ``k`` ended; aggTrade ``a``/``f``/``l`` by the width of their own range.
  Each pass ends every symbol's chain with one extra, *restoring* diff (see
  :func:`_restoring_diff`), so that every pass is applied to the same book and none
  crosses it. ``GET .../depth?symbol=X`` (``/api/v3`` spot, ``/fapi/v1`` USD-M) answers
  with the recorded snapshot, ``lastUpdateId`` unshifted: the relay asks when it sees the
  symbol's first diff, in pass 0, and follows the chain from there.
* Venues with the snapshot in the stream (OKX, Bybit, Kraken, Coinbase, Deribit,
  Hyperliquid) send it again at the start of every pass, with shifted ids: the relay
  replaces its book with it and follows the pass's updates from there.

Frames the relay does not subscribe (klines, Bybit's ``orderbook.1``, Hyperliquid's
``allMids``) and frames without market data (subscribe acks, status, heartbeats) are
dropped; Kraken's ``instrument`` snapshot, which the book checksums need, is sent once
before the first pass. Frames are re-encoded compactly with msgspec; JSON numbers go
through :class:`~decimal.Decimal`, never a float, so they keep their exact value (``5e-05``
is written ``0.00005``, ``85600.40`` stays).

**WebSocket** (``ws://127.0.0.1:PORT<path>``, paths in :data:`VENUES`): answer the upgrade,
wait for the client's first frame (the subscribe request), then stream, either as fast as
the socket takes it (``--rate 0``, in 256 KiB writes) or paced at ``--rate`` frames/s per
connection (every ``--tick``, 1 ms by default, all frames due by then). A reader thread
consumes the client's frames so that its side never fills up, answers pings, and ends the
stream on a close frame. After the last frame (or ``--duration``) the connection stays open
and silent until the client leaves or the process ends. Every connection gets its own
playback from the start of its path's buffer.

**Output** on stdout, one line each, flushed: ``ws_url=ws://127.0.0.1:PORT`` and
``rest_url=...`` once listening; then per connection ``streaming conn=N path=P``, about
every second ``sent conn=N path=P frames=F bytes=B seconds=S``, and at the end
``done conn=N path=P frames=F bytes=B seconds=S reason=end|duration|closed``. On stderr,
one line per stream about the buffer built.

Runs until SIGTERM or SIGINT, or until the process that started it is gone.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import contextlib
import functools
import hashlib
import itertools
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from array import array
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from relay.captures import Recording, load

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
CAPTURE = DATA / "cryptofeed"
DEFAULT_CAPTURE = CAPTURE / "BINANCE.ws.1.0"

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 section 1.3: the accept token is base64(sha1(key + this GUID))."""
CHUNK = 256 * 1024
"""Bytes per ``sendall`` at full speed: few syscalls, and the kernel buffer stays full."""
TICK = 0.001
"""Seconds between two writes when paced (``--tick``)."""
REPORT_EVERY = 1.0
"""Seconds between two ``sent`` lines while streaming."""
SNDBUF = 4 * 2**20
MAX_HANDSHAKE = 64 * 1024
MAX_MB = 1024.0
"""Default cap on all frame buffers together, MiB (``--max-mb``)."""

# Opcodes (RFC 6455 section 5.2).
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA

# Floats as Decimal: re-encoded, a JSON number keeps its exact value (Kraken's checksums
# read its digits).
_decode = msgspec.json.Decoder(float_hook=Decimal).decode
_encode = msgspec.json.Encoder(decimal_format="number").encode


# ---------------------------------------------------------------------------------------------
# Binance: combined-stream frames, REST snapshots, restoring diffs


@dataclass(frozen=True, slots=True)
class ShiftedFrame:
    """One Binance combined-stream frame, decoded, with the integer fields each pass shifts."""

    stream: str
    data: dict[str, Any]
    shifts: tuple[tuple[str, int, int], ...]
    """(field, value in the capture, added per pass)."""


def shifted_templates(recording: Recording) -> list[ShiftedFrame]:
    """A Binance capture's frames that carry shiftable ids (spot or USD-M), with each
    field's per-pass offset, plus one restoring diff per symbol and pass (see
    :func:`_restoring_diff`)."""
    decoded: list[tuple[str, dict[str, Any]]] = []
    for frame in recording.received:
        msg = msgspec.json.decode(frame.text)
        if isinstance(msg, dict) and isinstance(msg.get("stream"), str):
            kind = msg["stream"].partition("@")[2]
            if kind.startswith("depth") or kind in ("bookTicker", "aggTrade", "trade"):
                decoded.append((msg["stream"], msg["data"]))
            # kline and anything else: no id to shift, so it cannot be looped
    books = snapshots(recording)
    last_diff: dict[str, int] = {}
    for i, (stream, data) in enumerate(decoded):
        if stream.partition("@")[2].startswith("depth"):
            last_diff[data["s"]] = i
    for symbol, i in sorted(last_diff.items(), key=lambda item: -item[1]):
        if symbol in books:
            stream = decoded[i][0]
            diffs = [d for s, d in decoded if s == stream]
            decoded.insert(i + 1, (stream, _restoring_diff(diffs, books[symbol])))

    # Id ranges per (id space, symbol); bookTicker u shares the depth space.
    lo: dict[tuple[str, str], int] = {}
    hi: dict[tuple[str, str], int] = {}
    fields_of: list[tuple[str, tuple[str, ...]]] = []
    for stream, data in decoded:
        kind, symbol = stream.partition("@")[2], data.get("s", "")
        if kind.startswith("depth"):
            space, fields, low, high = "depth", ("U", "u", "pu"), data["U"], data["u"]
            if "pu" in data:
                # USD-M chains by pu (the previous diff's u): the chain's range starts just
                # after it, so that the next pass's first pu is this pass's last u.
                low = min(low, data["pu"] + 1)
        elif kind == "bookTicker":
            space, fields, low, high = "ticker", ("u",), data["u"], data["u"]
        elif kind == "aggTrade":
            space, fields, low, high = "aggTrade", ("a", "f", "l"), data["a"], data["a"]
        else:
            space, fields, low, high = "trade", ("t",), data["t"], data["t"]
        key = (space, symbol)
        lo[key] = min(lo.get(key, low), low)
        hi[key] = max(hi.get(key, high), high)
        fields_of.append((space, fields))

    out: list[ShiftedFrame] = []
    for (stream, data), (space, fields) in zip(decoded, fields_of, strict=True):
        symbol = data.get("s", "")
        if space == "ticker" and ("depth", symbol) in lo:
            space = "depth"  # same update ids as the book: step with the book
        key = (space, symbol)
        step = hi[key] - lo[key] + 1
        shifts = tuple((f, data[f], step) for f in fields if isinstance(data.get(f), int))
        out.append(ShiftedFrame(stream, data, shifts))
    return out


def _restoring_diff(diffs: list[dict[str, Any]], snapshot: bytes) -> dict[str, Any]:
    """A depth diff that puts every level the capture's ``diffs`` touch back to its size in
    ``snapshot`` (``"0"`` when the snapshot has no such level), chained right after them.

    Without it, pass ``k + 1`` would be applied on top of the book as pass ``k`` left it:
    levels set late in the capture (an ask that came down) would still stand when the early
    diffs come again (a bid from before the price moved), and the relay would find the book
    crossed and resync; its only snapshot, from pass 0, could never resync it. With it,
    every pass starts from the snapshot's book, as pass 0 did.
    """
    book = msgspec.json.decode(snapshot)
    last = max(diffs, key=lambda d: d["u"])
    levels: dict[str, list[list[str]]] = {}
    for side, snapshot_side in (("b", "bids"), ("a", "asks")):
        # Keyed by value: "0.3513" and "0.35130000" are the same level.
        sizes = {Decimal(p): q for p, q in book[snapshot_side]}
        touched = {Decimal(p): p for d in diffs for p, _ in d[side]}
        order = sorted(touched, reverse=side == "b")  # bids descending, asks ascending
        levels[side] = [[touched[k], sizes.get(k, "0")] for k in order]
    # The last diff's other fields (event and transaction times), with the next ids.
    diff = {**last, "U": last["u"] + 1, "u": last["u"] + 1, "b": levels["b"], "a": levels["a"]}
    if "pu" in last:
        diff["pu"] = last["u"]
    return diff


def snapshots(recording: Recording) -> dict[str, bytes]:
    """The first recorded REST depth body (``/api/v3/depth``, ``/fapi/v1/depth``) per symbol."""
    return {symbol: body for (_, symbol), body in rest_bodies(recording).items()}


def rest_bodies(recording: Recording) -> dict[tuple[str, str], bytes]:
    """The first recorded REST depth body per (path, symbol)."""
    out: dict[tuple[str, str], bytes] = {}
    for response in recording.http:
        parts = urlsplit(response.url)
        symbol = parse_qs(parts.query).get("symbol", [""])[0].upper()
        if parts.path.endswith("/depth") and symbol and (parts.path, symbol) not in out:
            out[parts.path, symbol] = response.body.encode()
    return out


# ---------------------------------------------------------------------------------------------
# Templates: any venue's frames, with the fields each pass rewrites


@dataclass(frozen=True, slots=True)
class Slot:
    """One id or time field of a decoded frame, rewritten on every pass."""

    holder: dict[str, Any]
    """The JSON object that holds it, inside :attr:`Template.message`."""
    field: str
    base: int
    """Its value in the capture, as an integer (an id, epoch ms or ns)."""
    step: int
    """Added per pass."""
    form: Callable[[int], Any]
    """The integer as the venue writes it: a JSON number, a decimal string, a time text."""


@dataclass(frozen=True, slots=True)
class Template:
    """One frame of a pass: its decoded message and the fields each pass rewrites."""

    message: Any
    slots: tuple[Slot, ...] = ()

    def payload(self, number: int) -> bytes:
        """The frame's JSON in pass ``number``."""
        for s in self.slots:
            s.holder[s.field] = s.form(s.base + number * s.step)
        return _encode(self.message)


@dataclass(frozen=True, slots=True)
class Playback:
    """What one connection (one path) is sent: the preamble once, then pass after pass."""

    templates: tuple[Template, ...]
    preamble: tuple[bytes, ...] = ()
    """Payloads sent once, before the first pass."""


def binance_playbacks(recording: Recording, path_of: Callable[[str], str]) -> dict[str, Playback]:
    """A Binance capture's :func:`shifted_templates`, on the path ``path_of(stream name)``."""
    by_path: dict[str, list[Template]] = defaultdict(list)
    for t in shifted_templates(recording):
        slots = tuple(Slot(t.data, f, base, step, int) for f, base, step in t.shifts)
        by_path[path_of(t.stream)].append(Template({"stream": t.stream, "data": t.data}, slots))
    return {path: Playback(tuple(templates)) for path, templates in by_path.items()}


@dataclass(slots=True)
class _Field:
    holder: dict[str, Any]
    field: str
    value: int
    form: Callable[[int], Any]
    series: tuple[str, ...]
    quantum: int = 1
    """The step is a multiple of this (a time with microseconds, in ns: 1000)."""
    fixed_step: int | None = None
    """A step of its own (ids without an order), instead of the series' range."""


class _Pass:
    """Builds one pass of templates: each frame's shifted fields are collected by series,
    whose per-pass steps are known only once the whole pass has been seen."""

    def __init__(self) -> None:
        self._frames: list[tuple[Any, list[_Field]]] = []

    def frame(self, message: Any) -> None:
        """Start the next frame of the pass; the calls below add its fields."""
        self._frames.append((message, []))

    def number(self, holder: dict[str, Any], field: str, series: tuple[str, ...]) -> None:
        """A JSON integer: an id, or a time in ms."""
        self._add(_Field(holder, field, holder[field], int, series))

    def decimal(self, holder: dict[str, Any], field: str, series: tuple[str, ...]) -> None:
        """An integer written as a decimal string (OKX's ``ts`` and ids, Deribit's ids)."""
        self._add(_Field(holder, field, int(holder[field]), str, series))

    def unordered(self, holder: dict[str, Any], field: str, series: tuple[str, ...]) -> None:
        """An id string without an order: a number, or a UUID (whose last 48 bits move)."""
        text = holder[field]
        if text.isdigit():
            self._add(_Field(holder, field, int(text), str, series, fixed_step=1))
            return
        if not _UUID.fullmatch(text):
            raise ValueError(f"{field}={text!r}: neither a number nor a UUID")
        head = text[:-12]

        def form(value: int) -> str:
            return f"{head}{value % 2**48:012x}"

        self._add(_Field(holder, field, int(text[-12:], 16), form, series, fixed_step=1))

    def position(self, holder: dict[str, Any], field: str) -> None:
        """A count of the connection's messages (Coinbase's ``sequence_num``): the frame's
        position in the pass, moving by the pass's length, so it counts on across passes."""
        self._add(_Field(holder, field, len(self._frames) - 1, int, ("position",)))

    def time(self, holder: dict[str, Any], field: str, series: tuple[str, ...]) -> None:
        """An RFC 3339 UTC time (``2026-10-06T08:04:56.153890Z``), its digits kept."""
        text = holder[field]
        head, _, fraction = text.removesuffix("Z").partition(".")
        seconds = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
        digits = len(fraction)
        ns = seconds * 10**9 + int(fraction.ljust(9, "0"))

        def form(value: int) -> str:
            whole, part = divmod(value, 10**9)
            out = _utc_seconds(whole)
            if digits:
                out += "." + f"{part:09d}"[:digits]
            return out + "Z"

        self._add(_Field(holder, field, ns, form, series, quantum=10 ** (9 - digits)))

    def _add(self, f: _Field) -> None:
        self._frames[-1][1].append(f)

    def templates(self) -> tuple[Template, ...]:
        """The pass's frames, each field stepping by its series' range (or its own step)."""
        lo: dict[tuple[str, ...], int] = {}
        hi: dict[tuple[str, ...], int] = {}
        quantum: dict[tuple[str, ...], int] = defaultdict(lambda: 1)
        for _, fields in self._frames:
            for f in fields:
                lo[f.series] = min(lo.get(f.series, f.value), f.value)
                hi[f.series] = max(hi.get(f.series, f.value), f.value)
                quantum[f.series] = max(quantum[f.series], f.quantum)
        out = []
        for message, fields in self._frames:
            slots = []
            for f in fields:
                step = f.fixed_step
                if step is None:
                    q = quantum[f.series]
                    step = -(-(hi[f.series] - lo[f.series] + 1) // q) * q  # rounded up to q
                slots.append(Slot(f.holder, f.field, f.value, step, f.form))
            out.append(Template(message, tuple(slots)))
        return tuple(out)


@functools.lru_cache(maxsize=1024)
def _utc_seconds(seconds: int) -> str:
    """``2026-10-06T08:04:56``: cached, as a pass's times share few seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _messages(*names: str) -> Iterator[Any]:
    """The received frames of captures under ``tests/data``, decoded, in order."""
    for name in names:
        for frame in load(DATA / name).received:
            yield _decode(frame.text)


# ---------------------------------------------------------------------------------------------
# Venues


BOOKS = ("trade", "ticker", "l2_orderbook")
PERP = ("funding_rate", "mark_price", "open_interest")
BINANCE_PATH = "/binance/stream"

Built = tuple[dict[str, Playback], dict[tuple[str, str], bytes]]
"""Playbacks by path, and REST bodies by (path, symbol)."""


@dataclass(frozen=True, slots=True)
class Venue:
    """One venue of the mix: where the relay finds it, what it subscribes, what it is sent."""

    adapter: str
    ws_path: str
    """The path of the relay's ``ws_url`` under the feed's base URL."""
    paths: tuple[str, ...]
    """The paths its connections open (one stream each)."""
    subscriptions: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    """``(instruments, data_types)`` per ``[[venues.subscriptions]]`` entry."""
    build: Callable[[], Built]
    """Reads its captures into its playbacks and REST bodies."""


def _binance() -> Built:
    recording = load(DEFAULT_CAPTURE)
    return binance_playbacks(recording, lambda stream: BINANCE_PATH), rest_bodies(recording)


def _binance_usdm() -> Built:
    recording = load(DATA / "binance_usdm" / "cryptofeed_futures.jsonl")

    def path_of(stream: str) -> str:
        kind = stream.partition("@")[2]
        route = "public" if kind.startswith("depth") or kind == "bookTicker" else "market"
        return f"/binance_usdm/{route}/stream"

    return binance_playbacks(recording, path_of), rest_bodies(recording)


def _okx() -> Built:
    p = _Pass()
    for msg in _messages("okx/OKX.ws.1.0.part1.jsonl", "okx/OKX.ws.1.0.part2.jsonl"):
        if "data" not in msg:
            continue  # subscribe acks
        channel, inst = msg["arg"]["channel"], msg["arg"]["instId"]
        p.frame(msg)
        for item in msg["data"]:
            if channel == "trades":
                p.decimal(item, "tradeId", ("trade", inst))
            else:  # books before seqId, and tickers: their ids are their ts
                p.decimal(item, "ts", (channel, inst))
    return {"/okx/ws/v5/public": Playback(p.templates())}, {}


BYBIT_BOOK = "orderbook.50"
"""The only book topic the relay subscribes (the adapter's default depth)."""


def _bybit() -> Built:
    out = {}
    for category in ("linear", "spot"):
        p = _Pass()
        for msg in _messages(f"bybit/ccxt_{category}.jsonl"):
            kind, _, symbol = msg.get("topic", "").rpartition(".")
            if kind == "publicTrade":
                p.frame(msg)
                for trade in msg["data"]:
                    # Spot ids count up; linear ids are UUIDs.
                    add = p.decimal if trade["i"].isdigit() else p.unordered
                    add(trade, "i", ("trade", symbol))
            elif kind == "tickers":
                p.frame(msg)
                if "cs" in msg:
                    p.number(msg, "cs", ("cs", symbol))
                p.number(msg, "ts", ("ticker", symbol))
            elif kind == BYBIT_BOOK:
                p.frame(msg)
                p.number(msg["data"], "u", ("book", symbol))
            # acks, klines, orderbook.1: nothing the relay publishes
        out[f"/bybit/v5/public/{category}"] = Playback(p.templates())
    return out, {}


def _kraken() -> Built:
    p = _Pass()
    preamble: list[bytes] = []
    for msg in _messages(
        "kraken/book_repeated_snapshot.jsonl",
        "kraken/book_thin_then_deep.jsonl",
        "kraken/ticker.jsonl",
        "kraken/trade_nautilus.jsonl",
    ):
        channel = msg.get("channel")
        if channel == "instrument" and not preamble:
            preamble.append(_encode(msg))  # the precisions the book checksums need
        if channel not in ("book", "ticker", "trade"):
            continue  # status, acks, heartbeats, the instrument snapshot's copies
        p.frame(msg)
        for item in msg["data"]:
            if channel == "trade":
                p.number(item, "trade_id", ("trade", item["symbol"]))
            elif "timestamp" in item:  # book and ticker events are numbered by their time
                p.time(item, "timestamp", (channel, item["symbol"]))
    return {"/kraken/v2": Playback(p.templates(), tuple(preamble))}, {}


def _coinbase() -> Built:
    p = _Pass()
    # The fixtures' level2 frames only (the only level2 there is; synthetic values): their
    # other frames are synthetic too, and the recordings have real trades and tickers.
    books = (m for m in _messages("coinbase/nautilus_fixtures.jsonl") if m["channel"] == "l2_data")
    recorded = _messages("coinbase/ticker.jsonl", "coinbase/market_trades.jsonl")
    for msg in itertools.chain(books, recorded):
        channel = msg["channel"]
        if channel not in ("l2_data", "ticker", "market_trades"):
            continue  # subscriptions, heartbeats
        p.frame(msg)
        p.position(msg, "sequence_num")  # one count across the connection's channels
        if channel == "market_trades":
            for event in msg["events"]:
                for trade in event["trades"]:
                    p.decimal(trade, "trade_id", ("trade", trade["product_id"]))
        else:  # book and ticker events are numbered by the envelope's time
            p.time(msg, "timestamp", (channel,))
    return {"/coinbase": Playback(p.templates())}, {}


def _deribit() -> Built:
    p = _Pass()
    for msg in _messages("deribit/ccxt_btc_perpetual.jsonl"):
        if msg.get("method") != "subscription":
            continue  # subscribe answers
        kind, instrument, _ = msg["params"]["channel"].split(".")
        data = msg["params"]["data"]
        p.frame(msg)
        if kind == "book":
            p.number(data, "change_id", ("book", instrument))
            if "prev_change_id" in data:
                p.number(data, "prev_change_id", ("book", instrument))
        elif kind == "trades":
            for trade in data:
                p.decimal(trade, "trade_id", ("trade", instrument))
                p.number(trade, "trade_seq", ("trade_seq", instrument))
        else:  # ticker: its events are keyed by its time
            p.number(data, "timestamp", ("ticker", instrument))
    return {"/deribit/ws/api/v2": Playback(p.templates())}, {}


def _hyperliquid() -> Built:
    p = _Pass()
    newest = -1
    for msg in _messages("hyperliquid/ccxt_nautilus_btc.jsonl"):
        channel, data = msg.get("channel"), msg.get("data")
        if channel == "trades":
            p.frame(msg)
            for trade in data:
                p.unordered(trade, "tid", ("trade", trade["coin"]))
        elif channel == "l2Book" and data["time"] > newest:  # not the older fixture book
            newest = data["time"]
            p.frame(msg)
            p.number(data, "time", ("book", data["coin"]))
        elif channel == "activeAssetCtx":
            p.frame(msg)  # no id: the relay publishes its values when they change
    return {"/hyperliquid/ws": Playback(p.templates())}, {}


VENUES: dict[str, Venue] = {
    "binance": Venue(
        "binance",
        BINANCE_PATH,
        (BINANCE_PATH,),
        ((("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"), BOOKS),),
        _binance,
    ),
    "binance_usdm": Venue(
        "binance_usdm",
        "/binance_usdm",
        ("/binance_usdm/public/stream", "/binance_usdm/market/stream"),
        ((("AKROUSDT", "CTKUSDT"), BOOKS),),
        _binance_usdm,
    ),
    "okx": Venue(
        "okx",
        "/okx/ws/v5/public",
        ("/okx/ws/v5/public",),
        ((("BTC-USDT", "BTC-USD-220527", "UNI-USD-SWAP"), BOOKS),),
        _okx,
    ),
    "bybit": Venue(
        "bybit",
        "/bybit/v5/public",
        ("/bybit/v5/public/linear", "/bybit/v5/public/spot"),
        ((("linear:BTCUSDT",), BOOKS + PERP), (("spot:BTCUSDT",), ("trade", "ticker"))),
        _bybit,
    ),
    "kraken": Venue(
        "kraken",
        "/kraken/v2",
        ("/kraken/v2",),
        ((("BTC/USD",), BOOKS), (("DOGE/USDT",), ("l2_orderbook",))),
        _kraken,
    ),
    "coinbase": Venue(
        "coinbase",
        "/coinbase",
        ("/coinbase",),
        ((("BTC-USD",), BOOKS),),
        _coinbase,
    ),
    "deribit": Venue(
        "deribit",
        "/deribit/ws/api/v2",
        ("/deribit/ws/api/v2",),
        ((("BTC-PERPETUAL",), BOOKS + PERP),),
        _deribit,
    ),
    "hyperliquid": Venue(
        "hyperliquid",
        "/hyperliquid/ws",
        ("/hyperliquid/ws",),
        ((("BTC",), ("trade", "l2_orderbook", *PERP)),),
        _hyperliquid,
    ),
}
"""The mix, by name (the relay's venue id and adapter)."""


def build(names: Iterable[str]) -> Built:
    """Playbacks by path and REST bodies by (path, symbol) of the venues ``names``."""
    playbacks: dict[str, Playback] = {}
    rest: dict[tuple[str, str], bytes] = {}
    for name in dict.fromkeys(names):  # a venue named twice is served once
        venue_playbacks, venue_rest = VENUES[name].build()
        assert set(venue_playbacks) == set(VENUES[name].paths), name
        playbacks.update(venue_playbacks)
        rest.update(venue_rest)
    return playbacks, rest


# ---------------------------------------------------------------------------------------------
# Pre-encoded streams


def ws_header(length: int) -> bytes:
    """The header of an unmasked, final text frame of ``length`` payload bytes."""
    if length < 126:
        return bytes((0x80 | OP_TEXT, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | OP_TEXT, 126, length)
    return struct.pack("!BBQ", 0x80 | OP_TEXT, 127, length)


@dataclass(slots=True)
class Stream:
    """The pre-encoded WebSocket frames of one whole playback."""

    data: bytearray
    """Every frame (header and payload), back to back."""
    ends: array[int]
    """``ends[i]``: the offset just past frame ``i`` in :attr:`data`."""
    loops: int

    @property
    def frames(self) -> int:
        return len(self.ends)

    def frames_within(self, nbytes: int) -> int:
        """How many whole frames the first ``nbytes`` bytes hold."""
        return bisect_right(self.ends, nbytes)


def build_stream(playback: Playback, max_frames: int, max_bytes: int) -> Stream:
    """The preamble, then whole passes with their ids shifted, up to ``max_frames`` frames
    or ``max_bytes`` bytes, whichever comes first (at least one pass)."""
    if not playback.templates:
        raise ValueError("nothing to play")
    data = bytearray()
    ends: array[int] = array("q")
    for payload in playback.preamble:
        data += ws_header(len(payload))
        data += payload
        ends.append(len(data))
    loops = 0
    while True:
        start_len, start_frames = len(data), len(ends)
        for t in playback.templates:
            payload = t.payload(loops)
            data += ws_header(len(payload))
            data += payload
            ends.append(len(data))
        loops += 1
        if len(ends) >= max_frames or len(data) >= max_bytes:
            if loops > 1 and (len(ends) > max_frames or len(data) > max_bytes):
                # Keep whole passes only, within the limits.
                del data[start_len:]
                del ends[start_frames:]
                loops -= 1
            break
    return Stream(data, ends, loops)


# ---------------------------------------------------------------------------------------------
# WebSocket


class _Closed(Exception):
    """The peer closed the socket."""


class _Reader:
    """Buffered exact reads from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def read_until(self, marker: bytes, limit: int) -> bytes:
        while (i := self._buf.find(marker)) < 0:
            if len(self._buf) > limit:
                raise ValueError("request too large")
            self._fill()
        out = bytes(self._buf[: i + len(marker)])
        del self._buf[: i + len(marker)]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise _Closed
        self._buf += chunk


def _read_frame(reader: _Reader) -> tuple[int, bytes]:
    """One client frame: (opcode, unmasked payload). Fragments come back as they are."""
    b0, b1 = reader.read_exact(2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", reader.read_exact(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", reader.read_exact(8))
    mask = reader.read_exact(4) if b1 & 0x80 else b""
    payload = reader.read_exact(length)
    if mask:
        # XOR with the 4-byte key repeated: one big-integer operation, not a byte loop.
        key = (mask * (length // 4 + 1))[:length]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
            length, "big"
        )
    return b0 & 0x0F, payload


def _control(opcode: int, payload: bytes) -> bytes:
    """An unmasked server control frame (payloads of control frames are < 126 bytes)."""
    return bytes((0x80 | opcode, len(payload))) + payload


def _handshake(
    reader: _Reader, sock: socket.socket, paths: Container[str] | None = None
) -> str | None:
    """Answer the HTTP upgrade request; its path (without the query), or None after a 400
    (not an upgrade) or a 404 (a path not in ``paths``; any path when None)."""
    request = reader.read_until(b"\r\n\r\n", MAX_HANDSHAKE).decode("latin-1")
    lines = request.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    target = lines[0].split(" ")[1] if lines[0].count(" ") >= 2 else ""
    path = target.partition("?")[0]
    key = headers.get("sec-websocket-key")
    if key is None or "websocket" not in headers.get("upgrade", "").lower():
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return None
    if paths is not None and path not in paths:
        sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return None
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    sock.sendall(
        (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    return path


def _say(line: str) -> None:
    # One print per line under a lock: connection threads must not interleave lines.
    with _say_lock:
        print(line, flush=True)


_say_lock = threading.Lock()


class _Connection:
    """One client: handshake, wait for its first frame, stream its path's playback, then
    idle."""

    def __init__(
        self,
        sock: socket.socket,
        number: int,
        streams: Mapping[str, Stream],
        rate: float,
        duration: float,
        tick: float,
    ) -> None:
        self.sock = sock
        self.number = number
        self.streams = streams
        """By path."""
        self.path = ""
        self.rate = rate
        self.duration = duration
        self.tick = tick
        self.send_lock = threading.Lock()
        """Held for every write: the pong of the reader thread must not land mid-frame."""
        self.closed = threading.Event()

    def run(self) -> None:
        sock = self.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            reader = _Reader(sock)
            path = _handshake(reader, sock, self.streams)
            if path is None:
                return
            self.path = path
            _read_frame(reader)  # the subscribe request; its content does not matter
            threading.Thread(target=self._read_forever, args=(reader,), daemon=True).start()
            _say(f"streaming conn={self.number} path={path}")
            self._stream(self.streams[path])
            self.closed.wait()  # idle until the client leaves
        except (_Closed, OSError, ValueError):
            pass
        finally:
            self.closed.set()
            with contextlib.suppress(OSError):
                sock.close()

    def _read_forever(self, reader: _Reader) -> None:
        """Consume client frames; answer pings; on a close frame, answer it and stop."""
        try:
            while True:
                opcode, payload = _read_frame(reader)
                if opcode == OP_PING:
                    with self.send_lock:
                        self.sock.sendall(_control(OP_PONG, payload[:125]))
                elif opcode == OP_CLOSE:
                    with self.send_lock:
                        self.sock.sendall(_control(OP_CLOSE, payload[:2]))
                    break
        except (_Closed, OSError):
            pass
        self.closed.set()

    def _stream(self, stream: Stream) -> None:
        view = memoryview(stream.data)
        total = len(view)
        sent = 0
        start = time.perf_counter()
        stop_at = start + self.duration if self.duration > 0 else float("inf")
        next_report = start + REPORT_EVERY
        reason = "end"
        # Paced: frame i is due at start + i / rate; every tick, send all frames due by now.
        paced = self.rate > 0
        done_frames = 0
        while sent < total:
            now = time.perf_counter()
            if self.closed.is_set():
                reason = "closed"
                break
            if now >= stop_at:
                reason = "duration"
                break
            if now >= next_report:
                _say(self._line("sent", stream.frames_within(sent), sent, now - start))
                next_report += REPORT_EVERY
            if paced:
                due = min(stream.frames, int((now - start) * self.rate) + 1)
                if due > done_frames:
                    end = stream.ends[due - 1]
                    with self.send_lock:
                        self.sock.sendall(view[sent:end])
                    sent, done_frames = end, due
                time.sleep(self.tick)
            else:
                end = min(total, sent + CHUNK)
                with self.send_lock:
                    self.sock.sendall(view[sent:end])
                sent = end
        elapsed = time.perf_counter() - start
        line = self._line("done", stream.frames_within(sent), sent, elapsed)
        _say(f"{line} reason={reason}")

    def _line(self, what: str, frames: int, nbytes: int, seconds: float) -> str:
        return (
            f"{what} conn={self.number} path={self.path} frames={frames} bytes={nbytes} "
            f"seconds={seconds:.3f}"
        )


def serve_ws(
    listener: socket.socket,
    streams: Mapping[str, Stream],
    rate: float,
    duration: float,
    tick: float,
) -> None:
    """Accept connections forever, one thread each."""
    number = 0
    while True:
        sock, _ = listener.accept()
        number += 1
        conn = _Connection(sock, number, streams, rate, duration, tick)
        threading.Thread(target=conn.run, name=f"ws-{number}", daemon=True).start()


# ---------------------------------------------------------------------------------------------
# REST


def make_rest_handler(
    bodies: Mapping[tuple[str, str], bytes],
) -> type[BaseHTTPRequestHandler]:
    """A request handler answering ``<path>?symbol=X`` from ``bodies`` (by (path, symbol));
    404 to anything else (the instrument lists: the relay then goes on without them)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the relay's client reuses connections

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            symbol = parse_qs(parts.query).get("symbol", [""])[0].upper()
            body = bodies.get((parts.path, symbol))
            status = 200
            if body is None:
                status = 404
                body = b'{"code":-1121,"msg":"Invalid symbol."}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # stdout is the bench's control channel; stay quiet

    return Handler


# ---------------------------------------------------------------------------------------------
# Command line


def _exit_when_orphaned(parent: int) -> None:
    """Exit once the process that started us is gone, so a killed bench leaves no feed."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    # Nothing to flush or close: the streams and sockets die with the process.
    os._exit(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/feed.py",
        description="Fast loopback venues: looped real captures with shifted ids.",
    )
    parser.add_argument(
        "--venues",
        default=",".join(VENUES),
        help=f"comma-separated, of {', '.join(VENUES)} (default: all of them)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="frames/s per connection; 0 = as fast as possible (default)",
    )
    parser.add_argument(
        "--tick",
        type=float,
        default=TICK,
        help=f"paced: seconds between two writes (default: {TICK:g})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop streaming after this many seconds per connection; 0 = until the frames "
        "run out (default)",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=0,
        help="frames to build per stream; 0 = rate x duration (+10%%) when both are set, "
        "else as many as --max-mb allows",
    )
    parser.add_argument(
        "--max-mb",
        type=float,
        default=MAX_MB,
        help=f"cap on all frame buffers together, shared equally by the streams (default: "
        f"{MAX_MB:g})",
    )
    parser.add_argument("--ws-port", type=int, default=0, help="0 = a free port (default)")
    parser.add_argument("--http-port", type=int, default=0, help="0 = a free port (default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [name for name in args.venues.split(",") if name]
    if not names or any(name not in VENUES for name in names):
        print(f"feed: --venues takes names from {', '.join(VENUES)}", file=sys.stderr)
        return 2
    if min(args.rate, args.duration, args.frames) < 0 or args.max_mb <= 0 or args.tick <= 0:
        print(
            "feed: --rate, --duration and --frames must be >= 0, --max-mb and --tick > 0",
            file=sys.stderr,
        )
        return 2
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)

    playbacks, bodies = build(names)
    frames = args.frames
    if not frames:
        frames = int(args.rate * args.duration * 1.1) + 1 if args.rate and args.duration else 0
    # Equal shares of the byte cap: at full speed the relay read its connections at about
    # the same bytes/s in trials (within 1.5x), so every stream lasts about as long.
    max_bytes = int(args.max_mb * 2**20 / len(playbacks))
    streams: dict[str, Stream] = {}
    for path, playback in playbacks.items():
        began = time.perf_counter()
        stream = build_stream(playback, frames or sys.maxsize, max_bytes)
        streams[path] = stream
        print(
            f"feed: {path}: built {stream.frames} frames ({stream.loops} passes of "
            f"{len(playback.templates)}, {len(stream.data) / 2**20:.0f} MiB) in "
            f"{time.perf_counter() - began:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    listener = socket.create_server(("127.0.0.1", args.ws_port), backlog=64)
    return serve_until_stopped(
        listener, serve_ws, (streams, args.rate, args.duration, args.tick), args.http_port, bodies
    )


def serve_until_stopped(
    listener: socket.socket,
    serve: Callable[..., None],
    serve_args: tuple[Any, ...],
    http_port: int,
    bodies: Mapping[tuple[str, str], bytes],
) -> int:
    """A feed process's last step: ``serve(listener, *serve_args)`` in a thread, the REST
    snapshots (``bodies``) on ``http_port`` in another, both URLs on stdout for the bench;
    then wait until a signal or orphaning ends the process."""
    rest = ThreadingHTTPServer(("127.0.0.1", http_port), make_rest_handler(bodies))
    rest.daemon_threads = True
    threading.Thread(target=rest.serve_forever, daemon=True).start()
    threading.Thread(target=serve, args=(listener, *serve_args), daemon=True).start()
    _say(f"ws_url=ws://127.0.0.1:{listener.getsockname()[1]}")
    _say(f"rest_url=http://127.0.0.1:{rest.server_address[1]}")
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
