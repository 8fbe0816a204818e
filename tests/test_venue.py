"""The venue shell on real loopback sockets: reconnects, backoff, breaker, crash isolation."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import request
from quart_trio import QuartTrio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from adapters.binance import ADAPTER
from relay import venue as venue_module
from relay.breaker import CircuitBreaker
from relay.captures import load
from relay.codec import Codec, Endpoints, Reconnect, SendFrame, Subscription
from relay.config import BackoffConfig, BreakerConfig, LivenessConfig
from relay.events import DataType, MarketEvent, Trade, VenueStatus
from relay.health import VenueHealth
from relay.metrics import Metrics
from relay.replay import ReplayVenue
from relay.venue import RestBudget, VenueSupervisor

CAPTURE = Path(__file__).parent / "data" / "cryptofeed" / "BINANCE.ws.1.0"
SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
FAST_BACKOFF = BackoffConfig(initial_ms=20, max_ms=100, multiplier=2.0, jitter=0.0)


def binance_codecs(venue: ReplayVenue) -> list[Codec]:
    types = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
    subs = [Subscription(s, ADAPTER.canonical_symbol(s) or s, types) for s in SYMBOLS]
    return ADAPTER.make_codecs("binance", subs, Endpoints(venue.ws_url, venue.rest_url))


class Collector:
    """The normalizer's seat: receives what a supervisor sends downstream."""

    def __init__(self) -> None:
        self.send, self._receive = trio.open_memory_channel[list[MarketEvent]](1000)
        self.events: list[MarketEvent] = []

    async def run(self) -> None:
        async for batch in self._receive:
            self.events += batch

    def statuses(self, kind: str) -> list[VenueStatus]:
        return [e for e in self.events if isinstance(e, VenueStatus) and e.kind == kind]


def supervisor(
    venue_id: str,
    make_codecs: Callable[[], list[Codec]],
    collector: Collector,
    http: httpx.AsyncClient,
    metrics: Metrics,
    breaker: BreakerConfig | None = None,
    liveness: LivenessConfig | None = None,
) -> tuple[VenueSupervisor, VenueHealth]:
    health = VenueHealth(venue_id, "binance")
    sup = VenueSupervisor(
        venue_id,
        make_codecs,
        events=collector.send.clone(),
        http=http,
        metrics=metrics,
        health=health,
        backoff=FAST_BACKOFF,
        breaker=breaker or BreakerConfig(),
        rest=RestBudget(rate=4.0, burst=4),
        liveness=liveness or LivenessConfig(),
    )
    return sup, health


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def wait_until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.02)


def test_breaker_opens_after_threshold_and_half_opens_after_timeout() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10.0, half_open_max=1)
    for t in range(2):
        breaker.failure(float(t))
        assert breaker.state == "closed" and breaker.wait_time(float(t)) == 0
    breaker.failure(2.0)
    assert breaker.state == "open"
    assert breaker.wait_time(5.0) == 7.0
    assert breaker.wait_time(12.0) == 0 and breaker.state == "half_open"
    breaker.attempt()
    assert breaker.wait_time(12.5) == 10.0  # the one trial slot is taken
    breaker.failure(13.0)  # the trial failed: open again at once
    assert breaker.state == "open" and breaker.wait_time(13.0) == 10.0
    assert breaker.wait_time(23.0) == 0
    breaker.attempt()
    breaker.success()
    assert breaker.state == "closed" and breaker.consecutive_failures == 0


async def test_reconnects_after_venue_closes_and_resyncs_books() -> None:
    # Recorded pace (x20, ~1.5 s a connection) leaves time for the spaced snapshot requests.
    venue = ReplayVenue(load(CAPTURE), pace="recorded", speed=20.0, after_end="close")
    metrics, collector = Metrics(), Collector()
    frames = len(venue.recording.received)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(venue.serve)
        nursery.start_soon(collector.run)
        sup, health = supervisor("binance", lambda: binance_codecs(venue), collector, http, metrics)
        nursery.start_soon(sup.run)
        await wait_until(
            lambda: venue.connections >= 3 and health.connections[0].frames >= 3 * frames
        )
        nursery.cancel_scope.cancel()
    assert metric(metrics, "relay_reconnects_total", venue="binance") >= 2
    assert health.connections[0].reconnects >= 2
    # Each connection is announced and each close reported; each symbol's book is synced
    # afresh on every connection, snapshot before deltas.
    assert len(collector.statuses("connected")) >= 3
    assert len(collector.statuses("disconnected")) >= 2
    assert metric(metrics, "relay_frames_received_total", venue="binance") >= 3 * frames
    snapshots = [e for e in collector.events if type(e).__name__ == "BookSnapshot"]
    assert len(snapshots) >= 3 * len(SYMBOLS)
    assert metric(metrics, "relay_snapshot_requests_total", venue="binance", outcome="ok") >= 12


class ExplodingCodec(Codec):
    """A codec with a bug: it raises on the third frame of every connection."""

    venue = "broken"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.seen = 0
        self.connections = 0

    def connected(self, now_ns: int) -> list[MarketEvent]:
        self.connections += 1
        self.seen = 0
        return []

    def receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        self.seen += 1
        if self.seen == 3:
            raise RuntimeError("codec bug")
        return []


async def test_a_crashing_venue_restarts_alone() -> None:
    healthy_venue = ReplayVenue(load(CAPTURE), pace="recorded", speed=10.0)
    broken_venue = ReplayVenue(load(CAPTURE), pace="fast", wait_for_client_frame=False)
    metrics, collector = Metrics(), Collector()
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(healthy_venue.serve)
        await nursery.start(broken_venue.serve)
        nursery.start_soon(collector.run)
        exploding = ExplodingCodec(broken_venue.ws_url)
        broken, broken_health = supervisor("broken", lambda: [exploding], collector, http, metrics)
        healthy, healthy_health = supervisor(
            "binance", lambda: binance_codecs(healthy_venue), collector, http, metrics
        )
        nursery.start_soon(broken.run)
        nursery.start_soon(healthy.run)
        await wait_until(lambda: exploding.connections >= 3)
        await wait_until(lambda: healthy_health.connections[0].frames >= 50)
        assert healthy_health.state == "streaming"
        assert healthy_health.connections[0].reconnects == 0
        # Each new connection that streams clears the error until its third frame: wait.
        await wait_until(lambda: "codec bug" in (broken_health.connections[0].last_error or ""))
        nursery.cancel_scope.cancel()
    assert metric(metrics, "relay_reconnects_total", venue="broken") >= 2
    assert metric(metrics, "relay_reconnects_total", venue="binance") == 0


async def test_circuit_opens_when_the_venue_is_down() -> None:
    metrics, collector = Metrics(), Collector()
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    codec = ExplodingCodec(f"ws://127.0.0.1:{port}/stream")
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        nursery.start_soon(collector.run)
        sup, health = supervisor(
            "down",
            lambda: [codec],
            collector,
            http,
            metrics,
            BreakerConfig(failure_threshold=3, reset_timeout_secs=30, half_open_max_requests=1),
        )
        nursery.start_soon(sup.run)
        await wait_until(lambda: health.state == "circuit_open")
        assert metric(metrics, "relay_circuit_state", venue="down") == 2
        assert "connect" in (health.connections[0].last_error or "")
        nursery.cancel_scope.cancel()
    assert codec.connections == 0
    assert not collector.statuses("connected")


class ReconnectingCodec(ExplodingCodec):
    """Asks for a fresh connection on its second frame, like Binance's serverShutdown."""

    def receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        self.seen += 1
        if self.seen == 2:
            self._actions.append(Reconnect("server shutdown"))
        return []


async def test_planned_reconnect_is_not_a_failure() -> None:
    venue = ReplayVenue(load(CAPTURE), pace="fast", wait_for_client_frame=False)
    metrics, collector = Metrics(), Collector()
    codec = ReconnectingCodec("")
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(venue.serve)
        codec.url = venue.ws_url
        nursery.start_soon(collector.run)
        sup, health = supervisor(
            "planned",
            lambda: [codec],
            collector,
            http,
            metrics,
            BreakerConfig(failure_threshold=1, reset_timeout_secs=60, half_open_max_requests=1),
        )
        nursery.start_soon(sup.run)
        # With a threshold of 1, a single counted failure would open the circuit for 60 s.
        await wait_until(lambda: codec.connections >= 4)
        assert health.connections[0].last_error is None
        nursery.cancel_scope.cancel()
    assert metric(metrics, "relay_circuit_state", venue="planned") == 0


async def test_failed_snapshots_are_counted_and_asked_again() -> None:
    recording = load(CAPTURE)
    recording.http = []  # the REST side answers 404 to everything
    venue = ReplayVenue(recording, pace="recorded", speed=5.0)
    metrics, collector = Metrics(), Collector()
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(venue.serve)
        nursery.start_soon(collector.run)
        sup, health = supervisor("binance", lambda: binance_codecs(venue), collector, http, metrics)
        nursery.start_soon(sup.run)
        await wait_until(
            lambda: (
                metric(metrics, "relay_snapshot_requests_total", venue="binance", outcome="error")
                >= 6
            )
        )
        nursery.cancel_scope.cancel()
    # No book event may be published without its snapshot.
    assert not [e for e in collector.events if type(e).__name__ in ("BookSnapshot", "BookDelta")]
    assert health.connections[0].reconnects == 0


async def test_rest_budget_staggers_and_holds_off(autojump_clock: trio.abc.Clock) -> None:
    budget = RestBudget(rate=2.0, burst=3)
    start = trio.current_time()
    times = []
    for _ in range(6):
        await budget.acquire()
        times.append(round(trio.current_time() - start, 3))
    assert times == [0, 0, 0, 0.5, 1.0, 1.5]
    budget.hold_off(10)
    await budget.acquire()
    assert trio.current_time() - start == pytest.approx(11.5)


async def test_snapshot_429_holds_the_venue_off(nursery: trio.Nursery) -> None:
    """A real HTTP 429 with Retry-After: the next snapshot request waits that long."""
    recording = load(CAPTURE)
    bodies = {h.url.split("symbol=")[1].split("&")[0]: h.body for h in recording.http}
    requests: list[float] = []
    app = QuartTrio("rest429")

    @app.get("/api/v3/depth")
    async def depth() -> tuple[str, int, dict[str, str]]:
        requests.append(trio.current_time())
        if len(requests) == 1:
            return "{}", 429, {"Retry-After": "1"}
        return bodies[request.args["symbol"]], 200, {"Content-Type": "application/json"}

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    [rest_url] = await nursery.start(hypercorn_serve, app, config)
    venue = ReplayVenue(recording, pace="recorded", speed=5.0)
    await nursery.start(venue.serve)
    types = frozenset({DataType.L2_ORDERBOOK})
    subs = [Subscription(s, ADAPTER.canonical_symbol(s) or s, types) for s in SYMBOLS]
    codecs = ADAPTER.make_codecs("binance", subs, Endpoints(venue.ws_url, rest_url))
    metrics, collector = Metrics(), Collector()
    async with httpx.AsyncClient() as http:
        nursery.start_soon(collector.run)
        sup, _ = supervisor("binance", lambda: codecs, collector, http, metrics)
        nursery.start_soon(sup.run)
        await wait_until(lambda: len(collector.statuses("book_synced")) == len(SYMBOLS))
        nursery.cancel_scope.cancel()
    assert requests[1] - requests[0] >= 1.0
    assert metric(metrics, "relay_snapshot_requests_total", venue="binance", outcome="error") == 1


# -- liveness, make-before-break and resyncs, against a loopback venue of our own ------------


class TickServer:
    """A loopback venue: on each connection, one JSON frame per symbol of :attr:`symbols`
    every ``interval`` seconds (``{"conn": n, "seq": i, "symbol": s}``), while it reads what
    the client sends and answers its pings. :attr:`symbols` may change while serving; empty,
    the feed is stalled but the connection stays up."""

    def __init__(self, symbols: list[str], interval: float = 0.01) -> None:
        self.symbols = symbols
        self.interval = interval
        self.url = ""
        self.opened: list[float] = []
        """``trio.current_time()`` at each connection's opening, by connection number."""
        self.closed: dict[int, float] = {}
        """The same at each connection's close, by connection number."""
        self.received: list[tuple[int, str | bytes]] = []
        self._scope = trio.CancelScope()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_websocket, self._handle, "127.0.0.1", 0, None)
                self.url = f"ws://127.0.0.1:{server.port}/ws"
                task_status.started()

    def stop(self) -> None:
        """Go away: every connection drops, and no new one is accepted."""
        self._scope.cancel()

    async def _handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        n = len(self.opened)
        self.opened.append(trio.current_time())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, ws, n, nursery.cancel_scope)
                with contextlib.suppress(ConnectionClosed):
                    for seq in itertools.count():
                        for symbol in self.symbols:
                            frame = {"conn": n, "seq": seq, "symbol": symbol}
                            await ws.send_message(json.dumps(frame))
                        await trio.sleep(self.interval)
        finally:
            self.closed.setdefault(n, trio.current_time())

    async def _read(self, ws: WebSocketConnection, n: int, scope: trio.CancelScope) -> None:
        try:
            while True:
                self.received.append((n, await ws.get_message()))
        except ConnectionClosed:
            self.closed.setdefault(n, trio.current_time())
            scope.cancel()


class TickCodec(Codec):
    """Decodes :class:`TickServer` frames into trades (``trade_id`` ``<conn>:<seq>``).

    It counts as synced after ``sync_after`` frames of a connection (like a codec waiting
    for its book snapshots); ``replace_after`` frames into its first connection it queues
    ``Reconnect(planned=planned)``; ``max_lifetime`` is the shell's to enforce. Its
    :meth:`resync` (unless ``own_resync`` is false: then the base class's, which reopens
    the connection) records the request, asks the venue with a frame and reports it."""

    venue = "ticks"

    def __init__(
        self,
        url: str,
        *,
        sync_after: float = 0,
        replace_after: int | None = None,
        planned: bool = True,
        lifetime: float | None = None,
        own_resync: bool = True,
    ) -> None:
        super().__init__()
        self.url = url
        self.sync_after = sync_after
        self.replace_after = replace_after
        self.planned = planned
        self.max_lifetime = lifetime
        self.own_resync = own_resync
        self.connections = 0
        self.frames_seen = 0
        self.synced_at: float | None = None
        self.resyncs: list[tuple[str, str]] = []

    def connected(self, now_ns: int) -> list[MarketEvent]:
        self.connections += 1
        self.frames_seen = 0
        return []

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        tick = json.loads(data)
        self.frames_seen += 1
        if self.synced_at is None and self.synced:
            self.synced_at = trio.current_time()
        if self.connections == 1 and self.frames_seen == self.replace_after:
            self._actions.append(Reconnect("upgrade notice", planned=self.planned))
        symbol = tick["symbol"]
        return [
            Trade(
                venue=self.venue,
                symbol=symbol,
                native_symbol=symbol,
                ts_venue=None,
                ts_recv=recv_ns,
                trade_id=f"{tick['conn']}:{tick['seq']}",
                price="1",
                size="1",
                side="buy",
            )
        ]

    @property
    def synced(self) -> bool:
        return self.frames_seen >= self.sync_after

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        if not self.own_resync:
            return super().resync(symbol, reason, recv_ns)
        self.resyncs.append((symbol, reason))
        self._actions.append(SendFrame(f"resync {symbol}"))
        self.counters.book_resyncs += 1
        status = VenueStatus(
            venue=self.venue,
            symbol=symbol,
            native_symbol=symbol,
            ts_venue=None,
            ts_recv=recv_ns,
            kind="book_resync",
            detail=reason,
        )
        return [status]


def trades_of(collector: Collector, conn: int) -> list[int]:
    """Positions in the collected events of the trades that came on connection ``conn``."""
    return [
        i
        for i, e in enumerate(collector.events)
        if isinstance(e, Trade) and e.trade_id.startswith(f"{conn}:")
    ]


async def test_a_stalled_connection_that_answers_pings_is_reopened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Idle pings every 0.1 s, each given 0.3 s: a venue that did not answer them would be
    # dropped for that well before the stall timeout.
    monkeypatch.setattr(venue_module, "IDLE_PING_AFTER", 0.1)
    monkeypatch.setattr(venue_module, "PONG_TIMEOUT", 0.3)
    server = TickServer(["A-USD"])
    metrics, collector = Metrics(), Collector()
    liveness = LivenessConfig(stall_timeout_secs=0.6)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(server.serve)
        nursery.start_soon(collector.run)
        sup, health = supervisor(
            "ticks", lambda: [TickCodec(server.url)], collector, http, metrics, liveness=liveness
        )
        nursery.start_soon(sup.run)
        await wait_until(lambda: len(trades_of(collector, 0)) >= 5)
        server.symbols = []  # the venue stops sending, and keeps the connection up
        stopped = trio.current_time()
        await wait_until(lambda: len(server.opened) == 2)
        reopened = server.opened[1]
        nursery.cancel_scope.cancel()
    assert 0.6 - 0.05 <= reopened - stopped <= 0.6 + 0.5
    assert server.closed[0] <= reopened
    [stalled] = collector.statuses("stalled")
    assert stalled.detail.startswith("no data frame for 0.6 s (stall timeout 0.6 s)")
    assert (health.connections[0].last_error or "").startswith("stalled: no data frame")
    assert metric(metrics, "relay_reconnects_total", venue="ticks") == 1
    # A stream does not go stale in 0.6 s by default: only the connection was acted on.
    assert not collector.statuses("stale")


async def test_reconnecting_never_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A venue that accepts but never sends: every connection stalls before streaming, so
    each is a failure, the circuit opens and half-opens again and again, and the relay keeps
    trying until the venue sends again."""
    server = TickServer([])
    metrics, collector = Metrics(), Collector()
    liveness = LivenessConfig(stall_timeout_secs=0.2)
    breaker = BreakerConfig(failure_threshold=2, reset_timeout_secs=1, half_open_max_requests=1)
    states: list[str] = []

    async def watch(health: VenueHealth) -> None:
        while True:
            states.append(health.state)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(server.serve)
        nursery.start_soon(collector.run)
        sup, health = supervisor(
            "ticks",
            lambda: [TickCodec(server.url)],
            collector,
            http,
            metrics,
            breaker=breaker,
            liveness=liveness,
        )
        nursery.start_soon(sup.run)
        nursery.start_soon(watch, health)
        await wait_until(lambda: len(server.opened) >= 4)
        assert "circuit_open" in states
        server.symbols = ["A-USD"]
        await wait_until(lambda: health.state == "streaming")
        nursery.cancel_scope.cancel()
    # Every connection but the last stalled; the last streams.
    assert len(collector.statuses("stalled")) == len(server.opened) - 1 >= 3
    assert metric(metrics, "relay_circuit_state", venue="ticks") == 0
    assert trades_of(collector, len(server.opened) - 1)


async def test_stale_streams_are_reported_and_recover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(venue_module, "LIVENESS_CHECK_EVERY", 0.05)
    server = TickServer(["A-USD", "B-USD"])
    metrics, collector = Metrics(), Collector()
    liveness = LivenessConfig(stale_after_intervals=4, stale_min_secs=0.5, stale_max_secs=5)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(server.serve)
        nursery.start_soon(collector.run)
        sup, health = supervisor(
            "ticks", lambda: [TickCodec(server.url)], collector, http, metrics, liveness=liveness
        )
        nursery.start_soon(sup.run)
        await wait_until(lambda: health.state == "streaming")
        await trio.sleep(0.5)  # enough gaps learned: 0.05 s each, so the floor applies
        server.symbols = ["A-USD"]
        stopped = trio.current_time()
        await wait_until(lambda: any(s.symbol == "B-USD" for s in collector.statuses("stale")))
        detected = trio.current_time()
        assert health.stale_streams == ["B-USD/trade"]
        assert health.as_dict(0)["stale_streams"] == ["B-USD/trade"]
        assert metric(metrics, "relay_stale_streams", venue="ticks") == 1
        server.symbols = ["A-USD", "B-USD"]
        await wait_until(lambda: collector.statuses("fresh"))
        await wait_until(lambda: not health.stale_streams)
        assert metric(metrics, "relay_stale_streams", venue="ticks") == 0
        nursery.cancel_scope.cancel()
    [stale] = collector.statuses("stale")
    assert stale.venue == "ticks" and stale.symbol == "B-USD"
    match = re.fullmatch(r"trade: no event for ([\d.]+) s \(threshold ([\d.]+) s\)", stale.detail)
    assert match, stale.detail
    silent, threshold = float(match[1]), float(match[2])
    assert 0.5 <= threshold < 1.0 and silent >= threshold
    assert 0.5 - 0.05 <= detected - stopped < 1.5  # the learned threshold, not the 5 s ceiling
    [fresh] = collector.statuses("fresh")
    assert fresh.symbol == "B-USD" and fresh.detail.startswith("trade: events again after")
    assert health.connections[0].reconnects == 0  # reported, not acted on


async def test_streams_of_a_connection_that_is_down_are_not_reported_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(venue_module, "LIVENESS_CHECK_EVERY", 0.05)
    server = TickServer(["A-USD", "B-USD"])
    metrics, collector = Metrics(), Collector()
    liveness = LivenessConfig(stale_after_intervals=2, stale_min_secs=0.1, stale_max_secs=0.3)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(server.serve)
        nursery.start_soon(collector.run)
        sup, health = supervisor(
            "ticks", lambda: [TickCodec(server.url)], collector, http, metrics, liveness=liveness
        )
        nursery.start_soon(sup.run)
        await wait_until(lambda: health.state == "streaming")
        await trio.sleep(0.3)
        server.stop()
        await wait_until(lambda: health.state != "streaming")
        await trio.sleep(1.0)  # more than three times the ceiling
        assert health.state in ("backoff", "circuit_open", "connecting")
        assert health.stale_streams == []
        nursery.cancel_scope.cancel()
    # (A stream may go stale before the drop is noticed, on a busy machine; not after.)
    kinds = [e.kind for e in collector.events if isinstance(e, VenueStatus)]
    assert "disconnected" in kinds
    assert "stale" not in kinds[kinds.index("disconnected") :]
    assert metric(metrics, "relay_stale_streams", venue="ticks") == 0


class Handover:
    """The codec factory of a one-connection venue; remembers every codec it made."""

    def __init__(
        self, server: TickServer, first: dict[str, object], later: dict[str, object]
    ) -> None:
        self.server = server
        self.first = first
        self.later = later
        self.codecs: list[TickCodec] = []

    def __call__(self) -> list[Codec]:
        options = self.later if self.codecs else self.first
        codec = TickCodec(self.server.url, **options)  # type: ignore[arg-type]
        self.codecs.append(codec)
        return [codec]


@pytest.mark.parametrize(
    "first",
    [{"replace_after": 10}, {"lifetime": 0.3}],
    ids=["planned Reconnect", "max_lifetime"],
)
async def test_a_planned_reconnect_is_make_before_break(first: dict[str, object]) -> None:
    server = TickServer(["A-USD"])
    metrics, collector = Metrics(), Collector()
    factory = Handover(server, {"sync_after": 5, **first}, {"sync_after": 5})
    states: list[str] = []

    async def watch(health: VenueHealth) -> None:
        while True:
            states.append(health.state)
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(server.serve)
        nursery.start_soon(collector.run)
        sup, health = supervisor("ticks", factory, collector, http, metrics)
        nursery.start_soon(sup.run)
        nursery.start_soon(watch, health)
        await wait_until(lambda: 0 in server.closed)
        await wait_until(lambda: len(trades_of(collector, 1)) >= 20)
        assert len(server.opened) == 2 and 1 not in server.closed  # the new one streams on
        nursery.cancel_scope.cancel()
    old, new = factory.codecs
    # The server saw the new connection open before the old one closed, and the old one
    # closed once the new one was synced, not at the end of the handover timeout.
    assert server.opened[1] < server.closed[0]
    assert new.synced_at is not None and new.synced_at <= server.closed[0]
    assert server.closed[0] - server.opened[1] < 5
    # Both published during the overlap: a trade of the old after the first of the new.
    assert trades_of(collector, 1)[0] < trades_of(collector, 0)[-1]
    kinds = [
        e.kind
        for e in collector.events
        if isinstance(e, VenueStatus) and e.kind in ("connected", "disconnected")
    ]
    assert kinds == ["connected", "connected", "disconnected"]
    # A new codec for the new connection, counting on in the old one's counters.
    assert old.connections == new.connections == 1
    assert new.counters is old.counters
    assert old.counters.frames == len(trades_of(collector, 0)) + len(trades_of(collector, 1))
    assert metric(metrics, "relay_reconnects_total", venue="ticks") == 1
    assert metric(metrics, "relay_circuit_state", venue="ticks") == 0
    assert states[states.index("streaming") :].count("streaming") == len(
        states[states.index("streaming") :]
    )  # no "connecting" blip during the handover


async def test_a_replaced_connection_closes_after_the_handover_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(venue_module, "HANDOVER_TIMEOUT", 0.4)
    server = TickServer(["A-USD"])
    metrics, collector = Metrics(), Collector()
    never = float("inf")
    factory = Handover(server, {"replace_after": 10}, {"sync_after": never})
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(server.serve)
        nursery.start_soon(collector.run)
        sup, health = supervisor("ticks", factory, collector, http, metrics)
        nursery.start_soon(sup.run)
        await wait_until(lambda: 0 in server.closed)
        nursery.cancel_scope.cancel()
    _, new = factory.codecs
    assert new.synced_at is None
    # The wait starts when the replacement is asked for, a little before the new one opens.
    assert 0.4 - 0.1 <= server.closed[0] - server.opened[1] < 0.4 + 0.5
    assert health.connections[0].reconnects == 1


async def test_request_resync_reaches_the_codec_and_its_actions_run() -> None:
    server = TickServer(["A-USD", "B-USD"])
    metrics, collector = Metrics(), Collector()
    codec = TickCodec("")
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(server.serve)
        codec.url = server.url
        nursery.start_soon(collector.run)
        sup, health = supervisor("ticks", lambda: [codec], collector, http, metrics)
        nursery.start_soon(sup.run)
        await wait_until(lambda: len(trades_of(collector, 0)) >= 5)
        sup.request_resync("A-USD", "delta dropped: outage buffer full")
        sup.request_resync("A-USD", "another drop")  # still pending: merged into the first
        sup.request_resync("B-USD", "delta dropped")
        await wait_until(lambda: len(server.received) == 2)
        await trio.sleep(0.3)  # room for a stray third request (sends are paced at 5/s)
        nursery.cancel_scope.cancel()
    # The codec was asked once per symbol, in its connection, and its SendFrame went out.
    assert codec.resyncs == [
        ("A-USD", "delta dropped: outage buffer full"),
        ("B-USD", "delta dropped"),
    ]
    assert server.received == [(0, "resync A-USD"), (0, "resync B-USD")]
    resyncs = collector.statuses("book_resync")
    assert [(s.symbol, s.detail) for s in resyncs] == codec.resyncs
    assert metric(metrics, "relay_resync_requests_total", venue="ticks") == 3
    assert metric(metrics, "relay_book_resyncs_total", venue="ticks") == 2
    assert health.connections[0].reconnects == 0


async def test_a_resync_the_codec_cannot_do_in_place_reopens_break_before_make() -> None:
    """The base codec's resync queues an unplanned Reconnect: the connection closes first,
    then the same codec opens the next one (no overlap, no new codec)."""
    server = TickServer(["A-USD"])
    metrics, collector = Metrics(), Collector()
    factory = Handover(server, {"own_resync": False}, {})
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(server.serve)
        nursery.start_soon(collector.run)
        sup, health = supervisor("ticks", factory, collector, http, metrics)
        nursery.start_soon(sup.run)
        await wait_until(lambda: len(trades_of(collector, 0)) >= 5)
        sup.request_resync("A-USD", "delta dropped")
        await wait_until(lambda: len(trades_of(collector, 1)) >= 5)
        nursery.cancel_scope.cancel()
    [codec] = factory.codecs
    assert codec.connections == 2
    assert server.closed[0] <= server.opened[1]
    assert metric(metrics, "relay_reconnects_total", venue="ticks") == 1
    assert health.connections[0].last_error is None
