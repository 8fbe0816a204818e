"""The nursery tree: who starts, supervises and cancels whom.

::

    root nursery
    ├── HTTP sidecar (Hypercorn + Quart-Trio)          cancelled last
    ├── heap trimmer (relay.heap: freed memory back to the system every 10 s)
    └── pipeline nursery
        ├── publisher (nats-py on its own asyncio thread)   ← outage buffer (bytes, policies)
        ├── normalizer                                      ← venue events channel
        └── venues nursery                                  cancelled first on shutdown
            ├── venue supervisor "binance"  (one loop per connection)
            └── venue supervisor ...

Data flows down the channels from the venue supervisors to the publisher. Shutdown runs
the other way: the venues nursery is cancelled, which closes the venue ends of the events
channel; the normalizer drains it and closes the outage buffer; the publisher publishes
what is left, waits for PubAcks up to the shutdown timeout and returns; then the sidecar is
cancelled. Should NATS be away then, the pipeline is cancelled a little after the shutdown
timeout, and what it still held is counted as dropped (``shutdown``).
"""

from __future__ import annotations

import time

import httpx
import msgspec
import structlog
import trio

import adapters
from relay import catalogs, redact
from relay.codec import Adapter, Endpoints, Subscription
from relay.config import (
    Config,
    VenueConfig,
    nats_connect_options,
    venue_endpoints,
    venue_subscriptions,
)
from relay.events import MarketEvent, VenueStatus
from relay.health import RelayHealth, VenueHealth
from relay.heap import trim_heap_forever
from relay.instruments import Catalog, InstrumentSource
from relay.metrics import Metrics
from relay.normalizer import Normalizer
from relay.overload import OutageBuffer
from relay.publisher import Publisher
from relay.sidecar import serve_sidecar
from relay.streams import consumer_configs, stream_configs
from relay.venue import CATALOG_ERRORS, RestBudget, VenueSupervisor, fetch_catalog

log = structlog.get_logger(__name__)


class Relay:
    """One relay process's pipeline, built from a validated config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.health = RelayHealth()
        nats = config.nats
        self.publisher = Publisher(
            nats_connect_options(nats),
            stream_configs(nats.streams),
            consumer_configs(nats.consumers),
            window=nats.publish_window,
            ack_timeout=nats.ack_timeout_ms / 1000,
            retry_schedule=[ms / 1000 for ms in nats.retry_schedule_ms],
            metrics=self.metrics,
            shutdown_timeout=config.service.shutdown_timeout_ms / 1000,
        )
        self.health.publisher = self.publisher
        self.supervisors: dict[str, VenueSupervisor] = {}
        """The running venues' supervisors, by venue id."""

    async def run(
        self,
        stop: trio.Event,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until ``stop`` is set, then shut down gracefully and return.

        ``task_status.started`` gets the sidecar's URLs once streams are provisioned and
        the venues are starting.
        """
        pipeline_cfg = self.config.pipeline
        events_in, events_out = trio.open_memory_channel[list[MarketEvent]](
            pipeline_cfg.venue_channel_capacity
        )
        outage_buffer = OutageBuffer(
            pipeline_cfg.outage_buffer_bytes,
            msgspec.structs.asdict(pipeline_cfg.overload),
            self.metrics,
            on_resync=self._resync_book,
        )
        http_cfg = self.config.http
        async with httpx.AsyncClient() as http, trio.open_nursery() as root:
            urls = await root.start(
                serve_sidecar, self.health, self.metrics, http_cfg.bind, http_cfg.port
            )
            log.info("sidecar listening", urls=urls)
            root.start_soon(trim_heap_forever)
            async with trio.open_nursery() as pipeline:
                # Until NATS answers, a stop ends the start-up: nothing has been read yet.
                with trio.CancelScope() as startup:
                    root.start_soon(_cancel_when_set, stop, startup)
                    await pipeline.start(self.publisher.run, outage_buffer)
                if startup.cancelled_caught:
                    log.info("stopped before NATS answered; nothing was read")
                    root.cancel_scope.cancel()
                    return
                log.info("streams provisioned; publishing")
                pipeline.start_soon(
                    Normalizer(self.metrics, pipeline_cfg.batch_max).run, events_out, outage_buffer
                )
                venues = await pipeline.start(self._run_venues, events_in, http)
                task_status.started(urls)
                await stop.wait()
                log.info("shutting down: stopping venues, draining the pipeline")
                self.health.shutting_down = True
                venues.cancel()
                pipeline.cancel_scope.deadline = (
                    trio.current_time() + self.config.service.shutdown_timeout_ms / 1000 + 2.0
                )
            log.info("pipeline drained")
            root.cancel_scope.cancel()

    def _resync_book(self, venue: str, symbol: str, reason: str) -> None:
        """The outage buffer dropped a delta of this book: have the venue rebuild it."""
        supervisor = self.supervisors.get(venue)
        if supervisor is not None:
            supervisor.request_resync(symbol, reason)

    async def _run_venues(
        self,
        events: trio.MemorySendChannel[list[MarketEvent]],
        http: httpx.AsyncClient,
        *,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with events, trio.open_nursery() as nursery:
            task_status.started(nursery.cancel_scope)
            for venue in self.config.venues:
                if not venue.enabled:
                    continue
                adapter = adapters.load(venue.adapter)
                health = VenueHealth(venue.id, venue.adapter)
                self.health.venues[venue.id] = health
                if missing := venue.missing_credentials(adapter):
                    health.disabled = f"no credentials ({', '.join(missing)})"
                    log.warning("venue disabled", venue=venue.id, reason=health.disabled)
                    continue
                nursery.start_soon(
                    self._run_venue,
                    venue,
                    adapter,
                    health,
                    events.clone(),
                    http,
                    name=f"venue:{venue.id}",
                )

    async def _run_venue(
        self,
        venue: VenueConfig,
        adapter: Adapter,
        health: VenueHealth,
        events: trio.MemorySendChannel[list[MarketEvent]],
        http: httpx.AsyncClient,
    ) -> None:
        """Resolve the venue's symbols against its instrument list, then supervise it."""
        rest = RestBudget(venue.rest.requests_per_second, venue.rest.burst)
        endpoints = venue_endpoints(venue)
        subscriptions = venue_subscriptions(venue)
        if adapter.instruments is not None:
            subscriptions = await self._resolve(
                venue, adapter.instruments, endpoints, subscriptions, health, events, http, rest
            )
        try:
            supervisor = VenueSupervisor(
                venue.id,
                lambda: adapter.make_codecs(
                    venue.id, subscriptions, endpoints, credentials=venue.credentials
                ),
                events=events,
                http=http,
                metrics=self.metrics,
                health=health,
                backoff=venue.backoff,
                breaker=venue.circuit_breaker,
                rest=rest,
                liveness=venue.liveness,
            )
        except ValueError as exc:
            # What the instrument list changed (a symbol, a contract size) may be refused
            # by the adapter: that venue stays down, reported; the others run on.
            health.start_error = f"cannot start: {exc}"
            log.error("venue cannot start", venue=venue.id, error=str(exc))
            async with events:
                await events.send([_status(venue.id, "venue_error", health.start_error)])
            return
        self.supervisors[venue.id] = supervisor
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run)
            if adapter.instruments is not None:
                nursery.start_soon(
                    self._refresh_instruments,
                    venue,
                    adapter.instruments,
                    endpoints,
                    subscriptions,
                    health,
                    events.clone(),
                    http,
                    rest,
                )

    async def _refresh_instruments(
        self,
        venue: VenueConfig,
        source: InstrumentSource,
        endpoints: Endpoints,
        subscriptions: list[Subscription],
        health: VenueHealth,
        events: trio.MemorySendChannel[list[MarketEvent]],
        http: httpx.AsyncClient,
        rest: RestBudget,
    ) -> None:
        """Fetch the instrument list again now and then; keep the cache fresh and report a
        subscribed symbol the venue stops listing (its feed goes quiet: a delisting)."""
        async with events:
            while True:
                await trio.sleep(self.config.service.instruments_refresh_secs)
                try:
                    catalog = await self._fetch_catalog(venue, source, endpoints, http, rest)
                except CATALOG_ERRORS as exc:
                    log.warning("instrument list refresh failed", venue=venue.id, error=repr(exc))
                    continue
                _, missing = catalog.resolve(subscriptions, key=source.native_key)
                gone = [native for native in missing if native not in health.unknown_symbols]
                if gone:
                    health.unknown_symbols += gone
                    log.warning("venue stopped listing symbols", venue=venue.id, symbols=gone)
                    detail = "no longer listed by the venue"
                    await events.send(
                        [_status(venue.id, "unknown_symbol", detail, native) for native in gone]
                    )

    async def _fetch_catalog(
        self,
        venue: VenueConfig,
        source: InstrumentSource,
        endpoints: Endpoints,
        http: httpx.AsyncClient,
        rest: RestBudget,
    ) -> Catalog:
        """The venue's instrument list, fetched now and kept as the cache for later runs and
        ``relay check``; raises one of :data:`relay.venue.CATALOG_ERRORS`."""
        catalog = await fetch_catalog(source, endpoints, venue.credentials, http, rest)
        state_dir = self.config.service.state_dir
        await trio.to_thread.run_sync(catalogs.save, state_dir, venue.id, catalog)
        return catalog

    async def _resolve(
        self,
        venue: VenueConfig,
        source: InstrumentSource,
        endpoints: Endpoints,
        subscriptions: list[Subscription],
        health: VenueHealth,
        events: trio.MemorySendChannel[list[MarketEvent]],
        http: httpx.AsyncClient,
        rest: RestBudget,
    ) -> list[Subscription]:
        """Canonical symbols and contract sizes from the venue's own instrument list; symbols
        it does not list (or lists as inactive) are reported and left out.

        Without the list (the venue's REST API unreachable or answering something else), the
        symbols are used as configured, and the status stream says so.
        """
        state_dir = self.config.service.state_dir
        try:
            catalog = await self._fetch_catalog(venue, source, endpoints, http, rest)
        except CATALOG_ERRORS as exc:
            cached = catalogs.load_cached(state_dir, venue.id)
            used = "the cached list" if cached else "symbols as configured"
            detail = f"instrument list unavailable, using {used}: {exc!r}"
            log.warning("instrument list unavailable", venue=venue.id, error=repr(exc), using=used)
            await events.send([_status(venue.id, "venue_error", detail)])
            if cached is None:
                return subscriptions
            catalog = cached
        overrides = {
            native
            for entry in venue.subscriptions
            if entry.canonical_symbol is not None
            for native in entry.instruments
        }
        resolved, missing = catalog.resolve(subscriptions, overrides, key=source.native_key)
        if missing:
            health.unknown_symbols = missing
            log.warning("venue does not list these symbols", venue=venue.id, symbols=missing)
            await events.send(
                [
                    _status(venue.id, "unknown_symbol", "not listed by the venue", native)
                    for native in missing
                ]
            )
        return [sub for sub in resolved if sub.native_symbol not in missing]


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _status(venue: str, kind: str, detail: str, native: str = "") -> VenueStatus:
    return VenueStatus(
        venue=venue,
        symbol="",
        native_symbol=native,
        ts_venue=None,
        ts_recv=time.time_ns(),
        kind=kind,
        # Published: errors in it may carry credentials (an httpx error names its URL).
        detail=redact.active().redact(detail),
    )
