"""The I/O shell of one venue: connect, read, feed the codec, act, reconnect.

:class:`VenueSupervisor` is the venue's node in the nursery tree. It runs one
:meth:`~VenueSupervisor._supervise` loop per connection the adapter asked for (a *slot*);
each loop opens the WebSocket, feeds every frame to the connection's sans-IO codec, sends
the events it returns downstream as one list per read burst, and carries out the codec's
actions (paced subscribe frames, REST snapshots, reconnects). Whatever ends a connection
(the venue closing it, a silent socket, a feed that stalls, even a bug in a codec) ends
only that connection: it is reopened after exponential backoff with jitter, spaced further
by a circuit breaker, forever.

A connection that is healthy but must be replaced (the codec queues a planned
:class:`~relay.codec.Reconnect`, e.g. a shutdown notice, or the connection reaches the
codec's ``max_lifetime``) is replaced make-before-break: the new connection, with a new
codec, opens and syncs while the old one still publishes, and only then is the old one
closed. Both publish during the overlap; the deterministic message ids make JetStream
drop the duplicates.

Liveness: a connection without a data frame for ``liveness.stall_timeout_secs`` is
reopened even if it answers pings (the idle ping still catches dead sockets sooner), and
once a second every stream (symbol, data type) of a streaming connection that has been
silent beyond its learned threshold (:mod:`relay.liveness`) is reported ``stale``, then
``fresh`` when it delivers again. Downstream may ask for a book's resync at any time
(:meth:`VenueSupervisor.request_resync`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping

import httpx
import structlog
import tenacity
import trio

from relay import redact
from relay.breaker import CircuitBreaker
from relay.codec import Codec, Endpoints, FetchSnapshot, Reconnect, SendFrame
from relay.config import BackoffConfig, BreakerConfig, LivenessConfig
from relay.events import MarketEvent, VenueStatus
from relay.health import ConnectionHealth, VenueHealth
from relay.instruments import Catalog, Instrument, InstrumentSource
from relay.liveness import LivenessTracker
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
HANDOVER_TIMEOUT = 30.0
"""Seconds a connection being replaced waits for its successor to be synced before it
closes anyway."""
LIVENESS_CHECK_EVERY = 1.0
"""Seconds between two staleness checks of a venue's streams."""


class _Ending(Exception):
    """Why a connection ended, in words (``str(exc)``)."""


class _AskedReconnect(_Ending):
    """The codec asked for a fresh connection because of an error it cannot mend on this one
    (a book it cannot resync): this one closes, then the next opens at once. Not a failure,
    and not a planned replacement (those are :class:`_Handover`)."""


class _Handover(_Ending):
    """A healthy connection must be replaced (a planned :class:`Reconnect`, or its lifetime
    is up): its slot opens the next one now, with a new codec, while it runs on until the
    new one is synced (make-before-break)."""

    def __init__(self, conn: _Conn) -> None:
        super().__init__(conn.replace_reason or "replaced")
        self.conn = conn


class _Stalled(_Ending):
    """No data frame for the stall timeout, though the socket may still answer pings."""


class _Retired(_Ending):
    """A replaced connection closes: its successor is synced (or did not sync in time)."""


class _HealthyEnd(_Ending):
    """A connection that had been streaming ended; backoff starts over."""


class _Conn:
    """One connection of a slot, from its attempt to open to its close."""

    def __init__(self, codec: Codec, predecessor: _Conn | None) -> None:
        self.codec = codec
        self.predecessor = predecessor
        """The connection this one replaces, until this one is synced."""
        self.streaming = False
        """Open and delivering: at least one data frame read."""
        self.replace_reason: str | None = None
        """Why this connection is being replaced make-before-break, once it is."""
        self.settled = trio.Event()
        """Set when this connection ended or asked to be replaced: its slot moves on."""
        self.retire = trio.Event()
        """Set when the successor is synced: a replaced connection closes then."""
        self.closed = trio.Event()
        self.error: Exception | None = None
        """Why the connection ended, once it has."""
        self.sends, self.to_send = trio.open_memory_channel[str](1024)
        # Unbounded, yet bounded by the symbols: a symbol is queued once until served.
        self.resyncs, self.resync_requests = trio.open_memory_channel[tuple[str, str]](math.inf)
        self.pending_resyncs: set[str] = set()


class _Slot:
    """Connection ``index`` of a venue: the connections that, one after the other (two at
    once during a handover), serve the subscriptions of the adapter's codec ``index``."""

    def __init__(
        self, index: int, codec: Codec, health: ConnectionHealth, liveness: LivenessTracker
    ) -> None:
        self.index = index
        self.codec = codec
        """The first codec; each handover makes a new one."""
        self.health = health
        self.liveness = liveness
        """The staleness of the slot's streams, fed by all of its connections."""
        self.live: list[_Conn] = []
        """Open connections whose codec has been told it is ``connected``."""
        self.breaks = 0
        """Connections that closed leaving no other of the slot streaming: outages."""
        self.breaks_seen = 0
        """``breaks`` as the liveness check last saw it."""

    @property
    def streaming(self) -> bool:
        return any(conn.streaming for conn in self.live)


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
    """Runs and re-runs every connection of one venue, and watches its streams' liveness."""

    def __init__(
        self,
        venue: str,
        make_codecs: Callable[[], list[Codec]],
        *,
        events: trio.MemorySendChannel[list[MarketEvent]],
        http: httpx.AsyncClient,
        metrics: Metrics,
        health: VenueHealth,
        backoff: BackoffConfig,
        breaker: BreakerConfig,
        rest: RestBudget,
        liveness: LivenessConfig,
    ) -> None:
        """``make_codecs`` makes the venue's codecs, one per connection. It is called here
        once (what it raises, e.g. ``ValueError`` for subscriptions the adapter refuses,
        passes through), and again whenever connection ``i`` is replaced make-before-break,
        for a fresh codec ``i``."""
        self.venue = venue
        self._make_codecs = make_codecs
        self._events = events
        self._http = http
        self._metrics = metrics
        self._health = health
        self._backoff = backoff
        self._breaker_config = breaker
        self._rest = rest
        self._liveness = liveness
        codecs = make_codecs()
        self._slots = [
            _Slot(i, codec, ConnectionHealth(codec.url), LivenessTracker.from_config(liveness))
            for i, codec in enumerate(codecs)
        ]
        health.connections = [slot.health for slot in self._slots]
        metrics.add_codec_counters(venue, [codec.counters for codec in codecs])

    async def run(self) -> None:
        async with self._events, trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_liveness)
            for slot in self._slots:
                nursery.start_soon(self._supervise, slot)

    def request_resync(self, symbol: str, reason: str) -> None:
        """Have every open connection of the venue rebuild the book of canonical ``symbol``
        (downstream dropped one of its deltas; ``reason`` says why).

        Returns at once; any trio task of the relay may call it. Each connection's codec
        gets :meth:`~relay.codec.Codec.resync` in that connection's own task, whose events
        go downstream and whose actions are carried out like any others. A request for a
        symbol still queued on a connection is merged into the queued one.
        """
        self._metrics.resync_requests.labels(self.venue).inc()
        for slot in self._slots:
            for conn in slot.live:
                if symbol not in conn.pending_resyncs:
                    conn.pending_resyncs.add(symbol)
                    conn.resyncs.send_nowait((symbol, reason))

    async def _supervise(self, slot: _Slot) -> None:
        health = slot.health
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
                url=health.url,
                error=health.last_error,
                retry_in_s=round(retry_state.upcoming_sleep, 3),
                circuit=breaker.state,
            )

        codec = slot.codec
        predecessor: _Conn | None = None
        # Connections run in this nursery, so that a replaced one can outlive its attempt.
        async with trio.open_nursery() as conns:
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
                            await self._attempt(conns, slot, _Conn(codec, predecessor), breaker)
                except _Handover as exc:
                    log.info(
                        "planned reconnect",
                        venue=self.venue,
                        url=health.url,
                        reason=str(exc),
                        make_before_break=True,
                    )
                    codec = await self._successor_codec(slot, exc.conn)
                    predecessor = None if codec is exc.conn.codec else exc.conn
                except _AskedReconnect as exc:
                    log.info(
                        "reconnect asked for", venue=self.venue, url=health.url, reason=str(exc)
                    )
                    predecessor = None
                except _HealthyEnd as exc:
                    health.state = "backoff"
                    health.last_error = str(exc)
                    log.warning(
                        "venue connection lost",
                        venue=self.venue,
                        url=health.url,
                        error=health.last_error,
                    )
                    predecessor = None
                    await trio.sleep(self._backoff.initial_ms / 1000)
                health.reconnects += 1
                self._metrics.reconnects.labels(self.venue).inc()

    async def _attempt(
        self, conns: trio.Nursery, slot: _Slot, conn: _Conn, breaker: CircuitBreaker
    ) -> None:
        """Run ``conn`` until it ends, raising why, or until it asks to be replaced, raising
        :class:`_Handover` while it runs on in ``conns``."""
        conns.start_soon(self._run_connection, slot, conn, breaker)
        await conn.settled.wait()
        if conn.replace_reason is not None:
            raise _Handover(conn)
        raise conn.error or RuntimeError("connection ended without a reason")

    async def _run_connection(self, slot: _Slot, conn: _Conn, breaker: CircuitBreaker) -> None:
        try:
            await self._connection(slot, conn, breaker)
        except Exception as exc:
            conn.error = exc
        finally:
            conn.closed.set()
            conn.settled.set()
        if conn.replace_reason is not None:
            log.info(
                "replaced connection closed",
                venue=self.venue,
                url=conn.codec.url,
                reason=_describe(conn.error),
            )

    async def _successor_codec(self, slot: _Slot, old: _Conn) -> Codec:
        """A new codec for the slot's next connection, sharing ``old``'s counters (so the
        exported counts never go backwards). Should the factory fail, ``old`` is closed
        first and its codec used again: break-before-make."""
        try:
            codec = self._make_codecs()[slot.index]
            if codec is old.codec:
                raise ValueError("the codec factory returned the codec still in use")
        except Exception as exc:
            log.error(
                "no new codec for a planned reconnect; closing the old connection first",
                venue=self.venue,
                url=slot.health.url,
                error=_describe(exc),
            )
            old.retire.set()
            await old.closed.wait()
            return old.codec
        codec.counters = old.codec.counters
        return codec

    async def _connection(self, slot: _Slot, conn: _Conn, breaker: CircuitBreaker) -> None:
        """One connection's life. Always ends in an exception saying why it ended."""
        codec, health = conn.codec, slot.health
        if not slot.streaming:  # during a handover the slot streams on
            health.state = "connecting"
        stall_timeout = self._liveness.stall_timeout_secs
        opened = False
        try:
            async with connect(codec.url) as ws, trio.open_nursery() as nursery:
                opened = True
                nursery.start_soon(self._pace_sends, ws, codec.max_send_rate, conn.to_send)
                if codec.ping_interval:
                    nursery.start_soon(self._keepalive, codec, conn.sends)
                if codec.max_lifetime:
                    nursery.start_soon(self._lifetime, conn, codec.max_lifetime, nursery)
                events = [self._status("connected", codec.url)]
                await self._emit(slot, conn, events + codec.connected(time.time_ns()), nursery)
                slot.live.append(conn)
                nursery.start_soon(self._serve_resyncs, slot, conn, nursery)
                frames_counter = self._metrics.frames_received.labels(self.venue)
                last_data = trio.current_time()
                ping_at = last_data + IDLE_PING_AFTER
                while True:
                    stall_at = last_data + stall_timeout
                    with trio.move_on_at(min(ping_at, stall_at)) as idle:
                        frames = await ws.receive_burst(BURST_LIMIT)
                    if idle.cancelled_caught:
                        silent = trio.current_time() - last_data
                        if silent >= stall_timeout:
                            # The venue may well answer pings: a feed that stopped is as
                            # useless as a dead socket.
                            detail = (
                                f"no data frame for {silent:.1f} s "
                                f"(stall timeout {stall_timeout:g} s); reconnecting"
                            )
                            log.warning(
                                "venue connection stalled",
                                venue=self.venue,
                                url=codec.url,
                                silent_s=round(silent, 3),
                            )
                            await self._events.send([self._status("stalled", detail)])
                            raise _Stalled(f"stalled: {detail}")
                        with trio.fail_after(PONG_TIMEOUT):
                            await ws.ping()
                        ping_at = trio.current_time() + IDLE_PING_AFTER
                        continue
                    batch: list[MarketEvent] = []
                    for frame in frames:
                        batch += codec.receive(frame, time.time_ns())
                    frames_counter.inc(len(frames))
                    health.frames += len(frames)
                    health.last_frame_ns = time.time_ns()
                    if not conn.streaming:
                        conn.streaming = True
                        breaker.success()
                        self._metrics.circuit_state.labels(self.venue).set(
                            CIRCUIT_STATES[breaker.state]
                        )
                        health.state = "streaming"
                        health.last_error = None
                    await self._emit(slot, conn, batch, nursery)
                    # Silence counts from here: while the emit waited (backpressure from a
                    # full outage buffer), frames queued up unread; that is no stall.
                    last_data = trio.current_time()
                    ping_at = last_data + IDLE_PING_AFTER
        except BaseException as exc:
            # Nurseries wrap what ended the connection in exception groups; act on the cause.
            cause = _cause(exc)
            if not isinstance(cause, Exception):
                raise  # cancellation and interrupts pass through untouched
            if conn.streaming and not isinstance(cause, _AskedReconnect):
                raise _HealthyEnd(_describe(cause)) from cause
            raise cause from None
        finally:
            conn.streaming = False
            if conn in slot.live:
                slot.live.remove(conn)
            if not slot.streaming:
                slot.breaks += 1
            if opened:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await self._events.send([self._status("disconnected", codec.url)])

    def _status(self, kind: str, detail: str, symbol: str = "") -> VenueStatus:
        return VenueStatus(
            venue=self.venue,
            symbol=symbol,
            native_symbol="",
            ts_venue=None,
            ts_recv=time.time_ns(),
            kind=kind,
            # Published: URLs and errors in it may carry credentials.
            detail=redact.active().redact(detail),
        )

    async def _emit(
        self, slot: _Slot, conn: _Conn, events: list[MarketEvent], nursery: trio.Nursery
    ) -> None:
        """Send ``events`` downstream, then carry out the actions the codec queued. A
        replacement connection retires its predecessor once it streams and is synced."""
        if events:
            slot.liveness.observe(events, time.monotonic_ns())
            self._health.events += len(events)
            await self._events.send(events)
        codec = conn.codec
        for action in codec.actions():
            match action:
                case SendFrame(text=text):
                    conn.sends.send_nowait(text)
                case FetchSnapshot():
                    nursery.start_soon(self._fetch_snapshot, slot, conn, action, nursery)
                case Reconnect(reason=reason, planned=True):
                    self._replace(conn, reason, nursery)
                case Reconnect(reason=reason):
                    raise _AskedReconnect(reason)
        if conn.predecessor is not None and conn.streaming and codec.synced:
            log.info("replacement connection synced", venue=self.venue, url=codec.url)
            conn.predecessor.retire.set()
            conn.predecessor = None

    def _replace(self, conn: _Conn, reason: str, nursery: trio.Nursery) -> None:
        """Have ``conn`` replaced make-before-break: its slot opens the next connection now,
        and ``conn`` closes once that one is synced, or after :data:`HANDOVER_TIMEOUT`."""
        if conn.replace_reason is not None:
            return  # already being replaced
        conn.replace_reason = reason
        conn.settled.set()
        nursery.start_soon(self._retire, conn)

    async def _retire(self, conn: _Conn) -> None:
        with trio.move_on_after(HANDOVER_TIMEOUT) as waiting:
            await conn.retire.wait()
        if waiting.cancelled_caught:
            log.warning(
                "replacement connection not synced in time; closing the old one anyway",
                venue=self.venue,
                url=conn.codec.url,
                waited_s=HANDOVER_TIMEOUT,
            )
            raise _Retired(
                f"replaced ({conn.replace_reason}); the new connection was not synced "
                f"after {HANDOVER_TIMEOUT:g} s"
            )
        raise _Retired(f"replaced ({conn.replace_reason}); the new connection is synced")

    async def _serve_resyncs(self, slot: _Slot, conn: _Conn, nursery: trio.Nursery) -> None:
        """Carry :meth:`request_resync` to this connection's codec."""
        async for symbol, reason in conn.resync_requests:
            conn.pending_resyncs.discard(symbol)
            log.info(
                "book resync asked for",
                venue=self.venue,
                url=conn.codec.url,
                symbol=symbol,
                reason=reason,
            )
            events = conn.codec.resync(symbol, reason, time.time_ns())
            await self._emit(slot, conn, events, nursery)

    async def _watch_liveness(self) -> None:
        """Once every :data:`LIVENESS_CHECK_EVERY` seconds: report the streams of streaming
        connections that became stale or recovered (statuses, ``/health``, the gauge)."""
        gauge = self._metrics.stale_streams.labels(self.venue)
        gauge.set(0)
        while True:
            await trio.sleep(LIVENESS_CHECK_EVERY)
            now = time.monotonic_ns()
            statuses: list[MarketEvent] = []
            stale: list[str] = []
            for slot in self._slots:
                if not slot.streaming:
                    continue  # the connection state says it all
                if slot.breaks != slot.breaks_seen:
                    slot.breaks_seen = slot.breaks
                    slot.liveness.resume(now)
                became, recovered = slot.liveness.check(now)
                for change in became:
                    detail = (
                        f"{change.data_type}: no event for {change.silent_secs:.1f} s "
                        f"(threshold {change.threshold_secs:.1f} s)"
                    )
                    statuses.append(self._status("stale", detail, change.symbol))
                    log.warning("stream stale", venue=self.venue, stream=change.name)
                for change in recovered:
                    detail = f"{change.data_type}: events again after {change.silent_secs:.1f} s"
                    statuses.append(self._status("fresh", detail, change.symbol))
                    log.info("stream fresh again", venue=self.venue, stream=change.name)
                stale += slot.liveness.stale()
            self._health.stale_streams = sorted(stale)
            gauge.set(len(stale))
            if statuses:
                await self._events.send(statuses)

    async def _fetch_snapshot(
        self, slot: _Slot, conn: _Conn, request: FetchSnapshot, nursery: trio.Nursery
    ) -> None:
        codec = conn.codec
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
        await self._emit(slot, conn, events, nursery)

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

    async def _lifetime(self, conn: _Conn, seconds: float, nursery: trio.Nursery) -> None:
        await trio.sleep(seconds)
        self._replace(conn, f"connection reached its planned lifetime of {seconds:g} s", nursery)


def _is_failure(exc: BaseException) -> bool:
    """Whether a connection's end is a failure to back off from. Tenacity's attempt block
    catches everything, cancellation included, so this must say no to that."""
    return isinstance(exc, Exception) and not isinstance(
        exc, (_HealthyEnd, _AskedReconnect, _Handover)
    )


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
    if isinstance(exc, _Ending):
        return str(exc)
    if isinstance(exc, TransportClosed):
        return exc.reason
    if isinstance(exc, trio.TooSlowError):
        return "venue did not answer a ping"
    return f"{type(exc).__name__}: {exc}"
