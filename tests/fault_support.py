"""Helpers for the fault-injection suite (``test_faults.py``).

* :func:`binance_feed`: the real Binance capture looped into a long, paced feed in which every
  event is new (ids shifted per pass, as ``bench/feed.py`` does), with as many extra trades
  as a test wants;
* :class:`LiveBooks`: the REST depth snapshots of such a feed played live, computed at request
  time from where the feed is, as Binance's API would answer;
* :func:`sent_events`: what a set of frames carries, counted by Binance's documented fields;
* :class:`SlowProxy`: a loopback TCP proxy that delays and/or rate-limits each direction;
* :func:`read_stream`: a whole JetStream stream, read fast through an ephemeral consumer;
* :func:`write_config`, :func:`metric_sum`, :func:`settled`, :func:`rss_mb`.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import trio
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from bench.feed import shifted_templates  # the bench's per-pass id shifting
from relay.captures import Frame, HttpResponse, Recording, load
from tests.jetstream import StoredMessage

CAPTURE = Path(__file__).parent / "data" / "cryptofeed" / "BINANCE.ws.1.0"
SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
PAIRS = {"NKNUSDT": ("NKN", "USDT"), "BLZETH": ("BLZ", "ETH"), "LRCBTC": ("LRC", "BTC")}
PAIRS["RUNEEUR"] = ("RUNE", "EUR")
INSTRUMENTS = Path(__file__).parent / "data" / "binance" / "instruments_spot.json"
DATA_STREAMS = ["MARKET_TRADES", "MARKET_TICKERS", "MARKET_BOOKS"]
STATUS_STREAM = "MARKET_STATUS"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

# ---------------------------------------------------------------------------------------------
# The feed


def binance_feed(
    *, rate: float, seconds: float, trades_per_pass: int, books: bool = True, tick: float = 0.01
) -> Recording:
    """``rate * seconds`` frames of the Binance capture played over and over, paced at
    ``rate`` frames per second (frames due in the same ``tick`` share a timestamp, so the
    replay venue sleeps once per tick, not once per frame).

    Each pass is the capture's depth diffs (unless ``books`` is false) and bookTickers with
    their ids shifted by ``bench/feed.py``'s rules, so every event is new and each symbol's
    depth chain runs on across passes (with the bench's restoring diff closing every pass,
    so no pass crosses the book). The capture has only two trades, so each pass gets
    ``trades_per_pass`` aggTrades instead, spread evenly over it: copies of the capture's own
    aggTrade frames with fresh consecutive ids per symbol. The REST depth snapshots are the
    recorded ones (the chain starts in the first pass), and ``exchangeInfo`` lists the four
    symbols (in the shape of ``tests/data/binance/instruments_spot.json``).
    """
    capture = load(CAPTURE)
    templates = shifted_templates(capture)
    trades = [t for t in templates if t.stream.endswith("@aggTrade")]
    base = [
        t for t in templates if t.stream.endswith("@bookTicker") or (books and "@depth" in t.stream)
    ]
    next_id = {t.data["s"]: t.data["a"] for t in trades}
    total = round(rate * seconds)
    texts: list[str] = []
    made = 0
    passes = 0
    while len(texts) < total:
        stride = len(base) / trades_per_pass if trades_per_pass else math.inf
        emitted = 0
        for j, t in enumerate(base):
            data = dict(t.data)
            for name, value, step in t.shifts:
                data[name] = value + passes * step
            texts.append(_encode({"stream": t.stream, "data": data}).decode())
            while emitted < trades_per_pass and j + 1 >= (emitted + 1) * stride:
                template = trades[made % len(trades)]
                symbol = template.data["s"]
                trade_id = next_id[symbol]
                next_id[symbol] += 1
                data = {**template.data, "a": trade_id, "f": trade_id, "l": trade_id}
                data["m"] = bool(made % 3)
                texts.append(_encode({"stream": template.stream, "data": data}).decode())
                emitted += 1
                made += 1
        passes += 1
    frames = [
        Frame(int(math.floor(i / rate / tick) * tick * 1e9), text)
        for i, text in enumerate(texts[:total])
    ]
    http = [*capture.http, HttpResponse(0, EXCHANGE_INFO_URL, exchange_info())]
    return Recording(venue="binance", url=capture.url, received=frames, http=http)


EXCHANGE_INFO_URL = "https://api.binance.com/api/v3/exchangeInfo"


def exchange_info() -> str:
    """An ``exchangeInfo`` body listing :data:`SYMBOLS`, trading."""
    fixture = _decode(INSTRUMENTS.read_bytes())
    template = fixture["symbols"][0]
    fixture["symbols"] = [
        {**template, "symbol": symbol, "baseAsset": base, "quoteAsset": quote, "status": "TRADING"}
        for symbol, (base, quote) in PAIRS.items()
    ]
    return _encode(fixture).decode()


@dataclass
class SentEvents:
    """What frames carry, by Binance's documented fields (never by running the codec)."""

    trades: set[tuple[str, str]] = field(default_factory=set)
    """(native symbol, trade id as published: ``a<aggregate id>``)."""
    tickers: set[tuple[str, int]] = field(default_factory=set)
    """(native symbol, bookTicker update id ``u``)."""
    last_ticker: dict[str, int] = field(default_factory=dict)
    """Per symbol, the update id of the last bookTicker."""
    diffs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    """Per symbol, the depth diffs in order."""

    def book_messages(self, snapshots: dict[str, int]) -> int:
        """Book messages a relay publishes for these diffs on one connection that synced on
        the given snapshots (``lastUpdateId`` per symbol): one snapshot, then one delta per
        diff newer than it."""
        return sum(
            1 + sum(d["u"] > last_id for d in self.diffs.get(symbol, []))
            for symbol, last_id in snapshots.items()
        )


def sent_events(texts: Iterable[str]) -> SentEvents:
    out = SentEvents()
    for text in texts:
        msg = _decode(text)
        kind = msg["stream"].partition("@")[2]
        data = msg["data"]
        if kind == "aggTrade":
            out.trades.add((data["s"], f"a{data['a']}"))
        elif kind == "bookTicker":
            out.tickers.add((data["s"], data["u"]))
            out.last_ticker[data["s"]] = data["u"]
        elif kind.startswith("depth"):
            out.diffs[data["s"]].append(data)
    return out


def recorded_snapshots(recording: Recording) -> dict[str, int]:
    """``lastUpdateId`` of each recorded ``/api/v3/depth`` snapshot, by symbol."""
    return {
        h.url.split("symbol=")[1].split("&")[0]: _decode(h.body)["lastUpdateId"]
        for h in recording.http
        if "/api/v3/depth" in h.url
    }


class Book:
    """An L2 book keyed by exact price (``"0.3513"`` and ``"0.35130000"`` are one level)."""

    def __init__(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.apply(bids, asks)

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, size)

    def best(self) -> tuple[Decimal | None, Decimal | None]:
        return max(self.bids, default=None), min(self.asks, default=None)

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = [list(self.bids[p]) for p in sorted(self.bids, reverse=True)]
        asks = [list(self.asks[p]) for p in sorted(self.asks)]
        return bids, asks


@dataclass
class BookChain:
    """What :func:`walk_book_chain` found in one symbol's stored book messages."""

    book: Book
    last: int
    """The sequence of the last message: where the stored book ends."""
    counts: Counter[str]
    skipped: int
    """Diffs a later snapshot stood in for (the deltas dropped before it)."""


def walk_book_chain(
    symbol: str,
    messages: list[dict[str, Any]],
    served: Iterable[int],
    diffs_by_u: dict[int, dict[str, Any]],
) -> BookChain:
    """Walk one symbol's stored ``l2_orderbook`` messages in stream order, asserting that a
    consumer can verify them: the first is a snapshot the venue served, no snapshot is older
    than the book, every delta's ``prev_sequence`` is the last message's sequence (none is
    missing) and its content is the venue's diff, and the rebuilt book is never crossed."""
    served = set(served)
    assert messages, f"nothing stored for {symbol}"
    assert messages[0]["type"] == "l2_snapshot", f"{symbol}: a delta before any snapshot"
    book: Book | None = None
    last = 0
    after_snapshot = False
    counts = Counter[str]()
    skipped = 0
    for body in messages:
        counts[body["type"]] += 1
        if body["type"] == "l2_snapshot":
            assert body["sequence"] in served, "a snapshot the venue never sent"
            assert body["sequence"] >= last, f"{symbol}: a snapshot older than the book"
            if book is not None:
                skipped += sum(last < u <= body["sequence"] for u in diffs_by_u)
            book = Book(body["bids"], body["asks"])
            last, after_snapshot = body["sequence"], True
        else:
            assert body["type"] == "l2_delta"
            assert book is not None
            first, seq = body["first_sequence"], body["sequence"]
            assert body["prev_sequence"] == last, f"{symbol}: chain broken at {body}"
            if after_snapshot:
                assert first <= last + 1 <= seq, f"{symbol}: delta does not bridge {last}"
            else:
                assert first == last + 1, f"{symbol}: gap after {last}: {body}"
            diff = diffs_by_u[seq]
            assert (first, body["bids"], body["asks"]) == (diff["U"], diff["b"], diff["a"])
            book.apply(body["bids"], body["asks"])
            last, after_snapshot = seq, False
        bid, ask = book.best()
        assert bid is None or ask is None or bid < ask, f"{symbol} crossed: {bid} >= {ask}"
    assert book is not None
    return BookChain(book, last, counts, skipped)


class LiveBooks:
    """A ``rest_responder`` for a live :class:`~relay.replay.ReplayVenue` playing a
    :func:`binance_feed`: ``GET /api/v3/depth?symbol=X`` answers with the recorded snapshot of
    ``X`` with every depth diff of the feed due by now (``position()``) applied, and
    ``lastUpdateId`` the last applied diff's ``u``: what Binance would answer at that moment.
    Positions only move forward, so each symbol's book is advanced, never rebuilt."""

    def __init__(self, recording: Recording, position: Callable[[], int]) -> None:
        self._position = position
        self._diffs: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        for i, frame in enumerate(recording.received):
            msg = _decode(frame.text)
            if "@depth" in msg["stream"]:
                self._diffs[msg["data"]["s"]].append((i, msg["data"]))
        self._books: dict[str, Book] = {}
        self._last_id: dict[str, int] = {}
        self._next: dict[str, int] = {}
        for h in recording.http:
            if "/api/v3/depth" in h.url:
                symbol = h.url.split("symbol=")[1].split("&")[0]
                body = _decode(h.body)
                self._books[symbol] = Book(body["bids"], body["asks"])
                self._last_id[symbol] = body["lastUpdateId"]
                self._next[symbol] = 0
        self.served: dict[str, list[int]] = defaultdict(list)
        """Per symbol, the ``lastUpdateId`` of every snapshot answered."""

    def __call__(self, path: str, symbol: str | None) -> bytes | None:
        if path != "/api/v3/depth" or symbol not in self._books:
            return None
        position = self._position()
        diffs, book = self._diffs[symbol], self._books[symbol]
        i = self._next[symbol]
        while i < len(diffs) and diffs[i][0] < position:
            diff = diffs[i][1]
            if diff["u"] > self._last_id[symbol]:
                book.apply(diff["b"], diff["a"])
                self._last_id[symbol] = diff["u"]
            i += 1
        self._next[symbol] = i
        bids, asks = book.levels()
        self.served[symbol].append(self._last_id[symbol])
        return _encode({"lastUpdateId": self._last_id[symbol], "bids": bids, "asks": asks})


# ---------------------------------------------------------------------------------------------
# A slow network path


class SlowProxy:
    """A loopback TCP proxy in front of ``127.0.0.1:target_port``.

    Each direction (``up``: client → server, ``down``: server → client) can be delayed (every
    chunk is written ``delay`` seconds after it was read, order kept, like a long link) and
    rate-limited (at most ``rate`` bytes per second). It reads a direction only as fast as
    it writes it (a short queue in between), so a slow path pushes back on the sender as TCP
    would rather than hiding the data in the proxy's memory.
    """

    CHUNK = 16 * 1024

    def __init__(
        self,
        target_port: int,
        *,
        up_delay: float = 0.0,
        down_delay: float = 0.0,
        up_rate: float = 0.0,
        down_rate: float = 0.0,
    ) -> None:
        self.target_port = target_port
        self.up = (up_delay, up_rate)
        self.down = (down_delay, down_rate)
        self.port = 0
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started()

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()  # the server is down: so is the path
            return
        self.connections += 1
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, server, *self.up, "up", nursery.cancel_scope)
            nursery.start_soon(self._pipe, server, client, *self.down, "down", nursery.cancel_scope)

    async def _pipe(
        self,
        src: trio.SocketStream,
        dst: trio.SocketStream,
        delay: float,
        rate: float,
        name: str,
        scope: trio.CancelScope,
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](64)

        async def reader() -> None:
            async with send:
                while data := await src.receive_some(self.CHUNK):
                    await send.send((trio.current_time() + delay, data))

        async def writer() -> None:
            next_free = trio.current_time()
            async with receive:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    if rate:
                        now = trio.current_time()
                        next_free = max(next_free, now) + len(data) / rate
                        await trio.sleep_until(next_free)
                    await dst.send_all(data)
                    if name == "up":
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(writer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            scope.cancel()  # one side gone: close the other too


# ---------------------------------------------------------------------------------------------
# JetStream, the relay's sidecar, the config


async def read_stream(url: str, stream: str) -> list[StoredMessage]:
    """Every message of ``stream`` in stream order, through one ephemeral pull consumer (one
    request per thousand messages, where ``tests.jetstream.stream_messages`` makes one per
    message)."""

    async def fetch() -> list[StoredMessage]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            state = (await js.stream_info(stream)).state
            out: list[StoredMessage] = []
            if state.messages == 0:
                return out
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
                filter_subjects=None,
            )
            sub = await js.pull_subscribe("", stream=stream, config=config)
            while len(out) < state.messages:
                for m in await sub.fetch(1000, timeout=10):
                    seq = m.metadata.sequence.stream
                    headers = m.headers or {}
                    out.append(
                        StoredMessage(m.subject, headers.get("Nats-Msg-Id", ""), m.data, seq)
                    )
                    if seq >= state.last_seq:
                        return out
            return out
        finally:
            await nc.close()

    return await trio.to_thread.run_sync(asyncio.run, fetch())


def write_config(
    path: Path,
    *,
    nats_url: str,
    ws_url: str,
    rest_url: str,
    http_port: int,
    data_types: Iterable[str] = ("trade", "ticker", "l2_orderbook"),
    nats: str = "",
    pipeline: str = "",
    venue: str = "",
    name: str = "relay-faults",
) -> Path:
    """A relay config with one ``binance`` venue on the replay venue, the four streams (one
    subject each) and its state under ``path``'s directory. ``nats``, ``pipeline`` and
    ``venue`` are extra TOML lines for those tables (``venue`` may open sub-tables)."""
    types = ", ".join(f'"{t}"' for t in data_types)
    symbols = ", ".join(f'"{s}"' for s in SYMBOLS)
    path.write_text(
        f"""
[service]
name = "{name}"
log_level = "info"
log_format = "json"
shutdown_timeout_ms = 5000
state_dir = "{path.parent / ("state-" + path.stem)}"

[nats]
urls = ["{nats_url}"]
reconnect_time_wait_ms = 100
{nats}

[[nats.streams]]
name = "MARKET_TRADES"
subjects = ["market.*.*.trade"]

[[nats.streams]]
name = "MARKET_TICKERS"
subjects = ["market.*.*.ticker"]

[[nats.streams]]
name = "MARKET_BOOKS"
subjects = ["market.*.*.l2_orderbook"]

[[nats.streams]]
name = "MARKET_STATUS"
subjects = ["market.*._status"]

[http]
bind = "127.0.0.1"
port = {http_port}

[pipeline]
{pipeline}

[[venues]]
id = "binance"
adapter = "binance"

[venues.connection]
ws_url = "{ws_url}"
rest_url = "{rest_url}"

[venues.backoff]
initial_ms = 200
max_ms = 2000

[venues.rest]
requests_per_second = 20.0
burst = 20

{venue}

[[venues.subscriptions]]
instruments = [{symbols}]
data_types = [{types}]
"""
    )
    return path


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` (e.g. ``relay_dropped_messages_total``) whose labels
    include ``labels``, in a Prometheus exposition; 0 when there is none."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def metric_samples(text: str, name: str) -> list[Any]:
    """Every sample ``name`` (with ``.labels`` and ``.value``) in a Prometheus exposition."""
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def metric_by_label(text: str, name: str, label: str) -> dict[str, float]:
    """The samples ``name`` summed by the value of one label."""
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels.get(label, "")] += sample.value
    return dict(out)


async def settled(
    http: httpx.AsyncClient, base: str, *, frames: Callable[[], int] | None = None
) -> dict[str, Any]:
    """Wait until the relay at ``base`` has nothing left to publish: NATS connected, no
    backlog and nothing in flight, twice in a row a quarter second apart (and, when
    ``frames`` is given, ``relay_frames_received_total`` equal to it). Returns the last
    ``/health``."""
    calm = 0
    while True:
        try:
            health = (await http.get(f"{base}/health")).json()
            metrics = (await http.get(f"{base}/metrics")).text
        except httpx.HTTPError:
            calm = 0
            await trio.sleep(0.25)
            continue
        nats_state = health["nats"]
        received = metric_sum(metrics, "relay_frames_received_total")
        quiet = (
            nats_state["connected"]
            and nats_state["backlog"] == 0
            and nats_state["in_flight"] == 0
            and (frames is None or received == frames())
        )
        calm = calm + 1 if quiet else 0
        if calm >= 2:
            return health
        await trio.sleep(0.25)


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The relay's JSON log lines (others, such as a traceback, are skipped)."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            try:
                out.append(_decode(line))
            except msgspec.DecodeError:
                continue
    return out
