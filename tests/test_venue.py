"""The venue shell on real loopback sockets: reconnects, backoff, breaker, crash isolation."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import request
from quart_trio import QuartTrio

from adapters.binance import ADAPTER
from relay.breaker import CircuitBreaker
from relay.captures import load
from relay.codec import Codec, Endpoints, Reconnect, Subscription
from relay.config import BackoffConfig, BreakerConfig
from relay.events import DataType, MarketEvent, VenueStatus
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
    codecs: list[Codec],
    collector: Collector,
    http: httpx.AsyncClient,
    metrics: Metrics,
    breaker: BreakerConfig | None = None,
) -> tuple[VenueSupervisor, VenueHealth]:
    health = VenueHealth(venue_id, "binance")
    sup = VenueSupervisor(
        venue_id,
        codecs,
        events=collector.send.clone(),
        http=http,
        metrics=metrics,
        health=health,
        backoff=FAST_BACKOFF,
        breaker=breaker or BreakerConfig(),
        rest=RestBudget(rate=4.0, burst=4),
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
        sup, health = supervisor("binance", binance_codecs(venue), collector, http, metrics)
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
        broken, broken_health = supervisor("broken", [exploding], collector, http, metrics)
        healthy, healthy_health = supervisor(
            "binance", binance_codecs(healthy_venue), collector, http, metrics
        )
        nursery.start_soon(broken.run)
        nursery.start_soon(healthy.run)
        await wait_until(lambda: exploding.connections >= 3)
        await wait_until(lambda: healthy_health.connections[0].frames >= 50)
        assert healthy_health.state == "streaming"
        assert healthy_health.connections[0].reconnects == 0
        assert "codec bug" in (broken_health.connections[0].last_error or "")
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
            [codec],
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
            [codec],
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
        sup, health = supervisor("binance", binance_codecs(venue), collector, http, metrics)
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
        sup, _ = supervisor("binance", codecs, collector, http, metrics)
        nursery.start_soon(sup.run)
        await wait_until(lambda: len(collector.statuses("book_synced")) == len(SYMBOLS))
        nursery.cancel_scope.cancel()
    assert requests[1] - requests[0] >= 1.0
    assert metric(metrics, "relay_snapshot_requests_total", venue="binance", outcome="error") == 1
