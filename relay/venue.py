"""The I/O shell of one venue: connect, read, feed the codec, act, reconnect.

:class:`VenueSupervisor` is the venue's node in the nursery tree. It runs one
:meth:`~VenueSupervisor._supervise` loop per connection the adapter asked for; each loop
opens the WebSocket, feeds every frame to the connection's sans-IO codec, sends the events
it returns downstream as one list per read burst, and carries out the codec's actions
(paced subscribe frames, REST snapshots, reconnects). Whatever ends a connection (the venue
closing it, a silent socket, even a bug in a codec) ends only that connection: it is
reopened after exponential backoff with jitter, spaced further by a circuit breaker, forever.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping

import httpx
import structlog
import tenacity
import trio

from relay.breaker import CircuitBreaker
from relay.codec import Codec, Endpoints, FetchSnapshot, Reconnect, SendFrame
from relay.config import BackoffConfig, BreakerConfig
from relay.events import MarketEvent, VenueStatus
from relay.health import ConnectionHealth, VenueHealth
from relay.instruments import Catalog, Instrument, InstrumentSource
from relay.metrics import CIRCUIT_STATES, Metrics
from relay.transport import Connection, TransportClosed, connect

log = structlog.get_logger(__name__)

BURST_LIMIT = 512
"""Frames decoded per read before the events go downstream as one batch."""
IDLE_PING_AFTER = 20.0
"""Seconds without a frame before we ping the venue to check the socket is alive."""
PONG_TIMEOUT = 10.0
SNAPSHOT_TIMEOUT = 15.0
SNAPSHOT_RETRY_AFTER = 1.0
"""Seconds a venue's snapshot requests wait after one failed for another reason than 429."""
RETRY_AFTER_DEFAULT = 60.0
"""Hold-off after a 429/418 without a usable ``Retry-After``."""
CATALOG_TIMEOUT = 30.0
"""Seconds a venue's whole instrument list may take."""
CATALOG_ERRORS = (httpx.HTTPError, ValueError, trio.TooSlowError)
"""What :func:`fetch_catalog` raises when it gets no list."""


class _PlannedReconnect(Exception):
    """The codec or the connection lifetime asked for a fresh connection."""


class _HealthyEnd(Exception):
    """A connection that had been streaming ended; backoff starts over."""


class RestBudget:
    """A venue's REST request budget: a token bucket shared by all its connections.

    ``rate`` requests per second are allowed on average and up to ``burst`` at once, so
    the snapshots of a reconnect with many books are staggered. An answer of 429 or 418
    (or any ``Retry-After``) holds every request of the venue back until the venue's time
    is up: a venue that starts refusing must not be asked again sooner.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._interval = 1 / rate
        self._burst = burst
        self._tokens = float(burst)
        self._updated = trio.current_time()
        self._held_until = 0.0
        self._lock = trio.Lock()  # FIFO: requests go out in the order they asked

    async def acquire(self) -> None:
        """Wait for a token (and for any hold-off to end), then take it."""
        async with self._lock:
            while True:
                now = trio.current_time()
                self._tokens = min(
                    self._burst, self._tokens + (now - self._updated) / self._interval
                )
                self._updated = now
                if now >= self._held_until and self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait_token = (1 - self._tokens) * self._interval
                await trio.sleep(max(self._held_until - now, wait_token, 0))

    def hold_off(self, seconds: float) -> None:
        """No request before ``seconds`` from now; the bucket is emptied too."""
        self._held_until = max(self._held_until, trio.current_time() + seconds)
        self._tokens = 0.0


async def fetch_catalog(
    source: InstrumentSource,
    endpoints: Endpoints,
    credentials: Mapping[str, str],
    http: httpx.AsyncClient,
    rest: RestBudget,
) -> Catalog:
    """The venue's instrument list, from every request its source names: all or nothing (a
    partial list would report the instruments it misses as unlisted).

    Raises one of :data:`CATALOG_ERRORS`: ``httpx.HTTPError`` when a request fails,
    ``ValueError`` when a body is not what the venue documents, ``trio.TooSlowError`` after
    :data:`CATALOG_TIMEOUT`.
    """
    headers = {
        header: credentials[name]
        for header, name in source.credential_headers
        if credentials.get(name)
    }
    instruments: list[Instrument] = []
    with trio.fail_after(CATALOG_TIMEOUT):
        for url, body in source.requests(endpoints):
            await rest.acquire()
            if body is None:
                response = await http.get(url, headers=headers, timeout=SNAPSHOT_TIMEOUT)
            else:
                post_headers = {**headers, "Content-Type": "application/json"}
                response = await http.post(
                    url, content=body, headers=post_headers, timeout=SNAPSHOT_TIMEOUT
                )
            if response.status_code in (418, 429) or "Retry-After" in response.headers:
                rest.hold_off(_retry_after(response))
            response.raise_for_status()
            instruments += source.parse(url, response.content)
    return Catalog.from_instruments(instruments, fetched_at_ns=time.time_ns())


class _Backoff(tenacity.wait.wait_base):
    """Exponential backoff with proportional jitter, never shorter than the breaker says."""

    def __init__(self, config: BackoffConfig, breaker: CircuitBreaker) -> None:
        self._config = config
        self._breaker = breaker

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        c = self._config
        delay = min(c.max_ms, c.initial_ms * c.multiplier ** (retry_state.attempt_number - 1))
        delay *= 1 + random.uniform(-c.jitter, c.jitter)
        return max(delay / 1000, self._breaker.wait_time(trio.current_time()))


class VenueSupervisor:
    """Runs and re-runs every connection of one venue."""

    def __init__(
        self,
        venue: str,
        codecs: list[Codec],
        *,
        events: trio.MemorySendChannel[list[MarketEvent]],
        http: httpx.AsyncClient,
        metrics: Metrics,
        health: VenueHealth,
        backoff: BackoffConfig,
        breaker: BreakerConfig,
        rest: RestBudget,
    ) -> None:
        self.venue = venue
        self._codecs = codecs
        self._events = events
        self._http = http
        self._metrics = metrics
        self._health = health
        self._backoff = backoff
        self._breaker_config = breaker
        self._rest = rest
        health.connections = [ConnectionHealth(codec.url) for codec in codecs]
        metrics.add_codec_counters(venue, [codec.counters for codec in codecs])

    async def run(self) -> None:
        async with self._events, trio.open_nursery() as nursery:
            for codec, conn_health in zip(self._codecs, self._health.connections, strict=True):
                nursery.start_soon(self._supervise, codec, conn_health)

    async def _supervise(self, codec: Codec, health: ConnectionHealth) -> None:
        c = self._breaker_config
        breaker = CircuitBreaker(
            c.failure_threshold, c.reset_timeout_secs, c.half_open_max_requests
        )
        circuit = self._metrics.circuit_state.labels(self.venue)
        circuit.set(CIRCUIT_STATES["closed"])

        def after_failure(retry_state: tenacity.RetryCallState) -> None:
            # Runs before the wait is computed, so an opening breaker lengthens this wait.
            breaker.failure(trio.current_time())
            circuit.set(CIRCUIT_STATES[breaker.state])

        def before_sleep(retry_state: tenacity.RetryCallState) -> None:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            health.state = "circuit_open" if breaker.state == "open" else "backoff"
            health.last_error = _describe(exc)
            log.warning(
                "venue connection failed",
                venue=self.venue,
                url=codec.url,
                error=health.last_error,
                retry_in_s=round(retry_state.upcoming_sleep, 3),
                circuit=breaker.state,
            )

        while True:
            retrying = tenacity.AsyncRetrying(
                sleep=trio.sleep,
                stop=tenacity.stop_never,
                wait=_Backoff(self._backoff, breaker),
                retry=tenacity.retry_if_exception(_is_failure),
                after=after_failure,
                before_sleep=before_sleep,
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        breaker.wait_time(trio.current_time())  # open → half-open if due
                        breaker.attempt()
                        circuit.set(CIRCUIT_STATES[breaker.state])
                        await self._connection(codec, health, breaker)
            except _PlannedReconnect as exc:
                log.info("planned reconnect", venue=self.venue, url=codec.url, reason=str(exc))
            except _HealthyEnd as exc:
                health.last_error = str(exc.__cause__ or exc)
                log.warning("venue connection lost", venue=self.venue, error=health.last_error)
                await trio.sleep(self._backoff.initial_ms / 1000)
            health.reconnects += 1
            self._metrics.reconnects.labels(self.venue).inc()

    async def _connection(
        self, codec: Codec, health: ConnectionHealth, breaker: CircuitBreaker
    ) -> None:
        """One connection's life. Always ends in an exception saying why it ended."""
        health.state = "connecting"
        opened = streaming = False
        try:
            async with connect(codec.url) as conn, trio.open_nursery() as nursery:
                opened = True
                sends, to_send = trio.open_memory_channel[str](1024)
                nursery.start_soon(self._pace_sends, conn, codec.max_send_rate, to_send)
                if codec.ping_interval:
                    nursery.start_soon(self._keepalive, codec, sends)
                if codec.max_lifetime:
                    nursery.start_soon(self._lifetime, codec.max_lifetime)
                events = [self._status("connected", codec.url)]
                await self._emit(codec, events + codec.connected(time.time_ns()), nursery, sends)
                frames_counter = self._metrics.frames_received.labels(self.venue)
                while True:
                    with trio.move_on_after(IDLE_PING_AFTER) as idle:
                        frames = await conn.receive_burst(BURST_LIMIT)
                    if idle.cancelled_caught:
                        with trio.fail_after(PONG_TIMEOUT):
                            await conn.ping()
                        continue
                    batch: list[MarketEvent] = []
                    for frame in frames:
                        batch += codec.receive(frame, time.time_ns())
                    frames_counter.inc(len(frames))
                    health.frames += len(frames)
                    health.last_frame_ns = time.time_ns()
                    if not streaming:
                        streaming = True
                        breaker.success()
                        health.state = "streaming"
                        health.last_error = None
                    await self._emit(codec, batch, nursery, sends)
        except BaseException as exc:
            # Nurseries wrap what ended the connection in exception groups; act on the cause.
            cause = _cause(exc)
            if not isinstance(cause, Exception):
                raise  # cancellation and interrupts pass through untouched
            if streaming and not isinstance(cause, _PlannedReconnect):
                raise _HealthyEnd(_describe(cause)) from cause
            raise cause from None
        finally:
            if opened:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await self._events.send([self._status("disconnected", codec.url)])

    def _status(self, kind: str, detail: str) -> VenueStatus:
        return VenueStatus(
            venue=self.venue,
            symbol="",
            native_symbol="",
            ts_venue=None,
            ts_recv=time.time_ns(),
            kind=kind,
            detail=detail,
        )

    async def _emit(
        self,
        codec: Codec,
        events: list[MarketEvent],
        nursery: trio.Nursery,
        sends: trio.MemorySendChannel[str],
    ) -> None:
        """Send ``events`` downstream, then carry out the actions the codec queued."""
        if events:
            self._health.events += len(events)
            await self._events.send(events)
        for action in codec.actions():
            match action:
                case SendFrame(text=text):
                    sends.send_nowait(text)
                case FetchSnapshot():
                    nursery.start_soon(self._fetch_snapshot, codec, action, nursery, sends)
                case Reconnect(reason=reason):
                    raise _PlannedReconnect(reason)

    async def _fetch_snapshot(
        self,
        codec: Codec,
        request: FetchSnapshot,
        nursery: trio.Nursery,
        sends: trio.MemorySendChannel[str],
    ) -> None:
        outcome = self._metrics.snapshot_requests
        await self._rest.acquire()
        try:
            response = await self._http.get(request.url, timeout=SNAPSHOT_TIMEOUT)
            if response.status_code in (418, 429) or "Retry-After" in response.headers:
                self._rest.hold_off(_retry_after(response))
            response.raise_for_status()
        except httpx.HTTPError as exc:
            outcome.labels(self.venue, "error").inc()
            log.warning(
                "snapshot request failed", venue=self.venue, url=request.url, error=str(exc)
            )
            # The codec asks again at once; the budget makes that wait.
            self._rest.hold_off(SNAPSHOT_RETRY_AFTER)
            events = codec.snapshot_failed(request.key, _describe(exc))
        else:
            outcome.labels(self.venue, "ok").inc()
            events = codec.snapshot_received(request.key, response.content, time.time_ns())
        await self._emit(codec, events, nursery, sends)

    @staticmethod
    async def _pace_sends(
        conn: Connection, rate: float, to_send: trio.MemoryReceiveChannel[str]
    ) -> None:
        async for text in to_send:
            await conn.send(text)
            await trio.sleep(1 / rate)

    @staticmethod
    async def _keepalive(codec: Codec, sends: trio.MemorySendChannel[str]) -> None:
        assert codec.ping_interval is not None
        while True:
            await trio.sleep(codec.ping_interval)
            if (frame := codec.keepalive()) is not None:
                await sends.send(frame)

    @staticmethod
    async def _lifetime(seconds: float) -> None:
        await trio.sleep(seconds)
        raise _PlannedReconnect(f"connection reached its planned lifetime of {seconds:.0f} s")


def _is_failure(exc: BaseException) -> bool:
    """Whether a connection's end is a failure to back off from. Tenacity's attempt block
    catches everything, cancellation included, so this must say no to that."""
    return isinstance(exc, Exception) and not isinstance(exc, (_HealthyEnd, _PlannedReconnect))


def _retry_after(response: httpx.Response) -> float:
    """Seconds the venue asks us to wait (``Retry-After`` in seconds; HTTP dates are rare
    from these APIs and fall back to the default)."""
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return RETRY_AFTER_DEFAULT


def _cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group that is not a cancellation (``exc`` itself when
    it is no group, or when it holds nothing but cancellations)."""
    while isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        if rest is None:
            return exc
        exc = rest.exceptions[0]
    return exc


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    if isinstance(exc, TransportClosed):
        return exc.reason
    if isinstance(exc, trio.TooSlowError):
        return "venue did not answer a ping"
    return f"{type(exc).__name__}: {exc}"
