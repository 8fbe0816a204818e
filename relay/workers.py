"""``service.workers > 1``: one parent process, N relay worker processes.

One relay process is bound to one core by the GIL. With ``[service] workers = N``, ``relay
run`` becomes a parent that shards the enabled venues over N worker processes and
supervises them::

    relay run -c relay.toml                 parent: no venue, no NATS connection
    ├── sidecar on [http]                   aggregates the workers' /health and /metrics
    ├── worker 0: python -m relay run -c relay.toml --worker 0/N --worker-venues a,c
    │     a whole relay (its own trio run, NATS connection, pipeline) for venues a and c,
    │     its own sidecar on 127.0.0.1:<ephemeral>
    └── worker 1: ... --worker 1/N --worker-venues b

**Sharding** (:func:`shard`): a venue never splits, so its books and sequence state stay in
one process. Venues are weighed by their subscriptions, one per (instrument, data type), 0
for a venue without its credentials (it will not run), and placed heaviest first on the
least loaded worker, ties to the lower worker number; equal venues therefore go round
robin, venue *i* to worker *i* mod N. Never more workers than enabled venues: with one, the
relay runs in a single process as with ``workers = 1``. The parent computes the plan once
and passes each worker its venue ids, so a config edited on disk cannot make a restarted
worker take a venue another worker runs.

**Worker protocol.** The parent starts each worker in its own process group (a terminal's
Ctrl-C reaches the parent only; it forwards the stop). A worker writes one line,
``sidecar=<url>``, to its stdout once its streams are provisioned and its sidecar listens
(port 0 on 127.0.0.1); the parent reads that pipe until it closes. The worker's stdin is a
pipe the parent never writes to: when it reads end of file, the parent is gone (even by
SIGKILL), and the worker stops as on SIGTERM. A worker swallows repeated stop signals (the
parent's forwarded SIGTERM and systemd's own), so a second one never cuts its drain short.

**Provisioning.** Every worker provisions the configured streams and consumers. JetStream
answers concurrent identical creates and updates without error (checked against
nats-server 2.15, ``tests/test_workers.py``), and the publisher turns "name already in use"
into an update; still, worker 0 is started first and the others once it has provisioned
(or exited, or after :data:`STAGGER_MAX` seconds), so that even a clustered JetStream never
sees N racing creates.

**Supervision.** A worker that exits while the parent runs is started again after a
backoff (1 s doubling to 30 s, back to 1 s once a worker ran for 60 s), logged and counted
(``relay_worker_restarts_total{worker}``). SIGTERM or SIGINT: the parent forwards SIGTERM
to every worker and waits for them to drain (``service.shutdown_timeout_ms`` plus
:data:`STOP_GRACE` seconds, then SIGKILL); it exits 0 when every worker stopped cleanly,
1 otherwise.

**The parent's sidecar**, on ``[http]``: ``/metrics`` is every worker's exposition, each
sample with a ``worker="K"`` label added, plus the parent's own ``relay_worker_*``;
``/health`` has the overall ``status``, the worst of the workers' (``ok``, ``degraded``,
``starting``, ``unreachable``, ``down``, ``stopped``; 200 only when ``ok``), every venue
(with its ``worker``), the NATS state summed over the workers and each worker's status,
pid, restarts and venues; ``/readyz`` is 200 when every worker's is; ``/livez`` is 200
while the parent serves.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import structlog
import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from quart import Response
from quart_trio import QuartTrio

import adapters
from relay import redact
from relay.config import Config, HttpConfig, venue_subscriptions
from relay.sidecar import serve_app

if TYPE_CHECKING:
    from relay.app import Relay

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # as relay.cli's

REPORT_PREFIX = "sidecar="
"""A worker's one line on stdout: ``sidecar=<url>``."""
WORKER_BIND = "127.0.0.1"
"""Where a worker's own sidecar listens, on a port the OS picks."""
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
BACKOFF_RESET_AFTER = 60.0
"""A worker that ran this long before it died is restarted after :data:`BACKOFF_INITIAL`."""
STOP_GRACE = 10.0
"""Seconds a stopping worker gets on top of ``service.shutdown_timeout_ms`` before SIGKILL."""
STAGGER_MAX = 30.0
"""Longest wait of workers 1..N-1 for worker 0 to provision the streams."""
SCRAPE_TIMEOUT = 2.0
"""Seconds the parent's sidecar waits for a worker's answer."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

STATUS_RANK = {"ok": 0, "degraded": 1, "starting": 2, "unreachable": 3, "down": 4, "stopped": 5}
"""A worker's status, from best to worst; the parent's ``/health`` status is the worst."""


# ---------------------------------------------------------------------------------------------
# The plan


def venue_weight(venue_id: str, config: Config) -> int:
    """What a venue costs a worker: its (instrument, data type) subscriptions; 0 when it
    lacks credentials and will only be reported as disabled."""
    venue = next(v for v in config.venues if v.id == venue_id)
    if venue.missing_credentials(adapters.load(venue.adapter)):
        return 0
    return sum(len(sub.data_types) for sub in venue_subscriptions(venue))


def shard(config: Config, workers: int) -> list[list[str]]:
    """The enabled venues' ids over at most ``workers`` workers (see the module docstring):
    one list per worker, never empty, each in config order. No enabled venue: one empty
    shard."""
    ids = [venue.id for venue in config.venues if venue.enabled]
    count = max(1, min(workers, len(ids)))
    weights = {venue_id: venue_weight(venue_id, config) for venue_id in ids}
    loads = [0] * count
    owner: dict[str, int] = {}
    # Heaviest first; sorted() is stable, so equal weights keep their config order.
    for venue_id in sorted(ids, key=lambda venue_id: -weights[venue_id]):
        worker = min(range(count), key=lambda k: (loads[k], k))
        owner[venue_id] = worker
        loads[worker] += weights[venue_id]
    return [[venue_id for venue_id in ids if owner[venue_id] == k] for k in range(count)]


# ---------------------------------------------------------------------------------------------
# Entry point (relay.cli)


def main(config: Config, config_path: Path, worker: str | None, venues: str | None) -> int:
    """``relay run`` with ``service.workers > 1`` (the parent) or with ``--worker K/N`` (a
    worker); logging is configured. The exit code."""
    if worker is not None:
        return run_worker(config, worker, venues)
    if venues is not None:
        print("relay: --worker-venues needs --worker", file=sys.stderr)
        return EXIT_USAGE
    plan = shard(config, config.service.workers)
    if len(plan) == 1:
        from relay import cli

        log.info(
            "one worker is enough: running in this process",
            workers=config.service.workers,
            enabled_venues=len(plan[0]),
        )
        return trio.run(cli._run, config)
    return trio.run(Parent(config, config_path, plan).run)


# ---------------------------------------------------------------------------------------------
# A worker


def parse_worker_spec(spec: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; :class:`ValueError` otherwise."""
    index, sep, count = spec.partition("/")
    if not (sep and index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise ValueError(f"{spec!r} is not K/N with 0 <= K < N")
    return int(index), int(count)


def worker_config(config: Config, venue_ids: Sequence[str]) -> Config:
    """``config`` for one worker: only these venues, its sidecar on an ephemeral loopback
    port; :class:`ValueError` naming a venue id the config does not have."""
    by_id = {venue.id: venue for venue in config.venues}
    unknown = [venue_id for venue_id in venue_ids if venue_id not in by_id]
    if unknown:
        raise ValueError(f"no such venue in the config: {', '.join(unknown)}")
    return msgspec.structs.replace(
        config,
        venues=[by_id[venue_id] for venue_id in venue_ids],
        http=HttpConfig(bind=WORKER_BIND, port=0),
    )


def run_worker(config: Config, spec: str, venues: str | None) -> int:
    try:
        index, _ = parse_worker_spec(spec)
        config = worker_config(config, [v for v in (venues or "").split(",") if v])
    except ValueError as exc:
        print(f"relay: --worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return trio.run(_worker_main, config, index)


async def _worker_main(config: Config, index: int) -> int:
    from relay.app import Relay  # the runtime, as in relay.cli._run

    structlog.contextvars.bind_contextvars(worker=index)
    stop = trio.Event()
    # Ignored outside the receiver below, i.e. once the worker has drained: a late
    # SIGTERM (systemd's, after the parent's) must not turn a clean exit into a kill.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    try:
        relay = Relay(config)
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signals, signals, stop)
                nursery.start_soon(_stop_when_orphaned, stop)
                with trio.CancelScope() as starting:
                    nursery.start_soon(_cancel_on, stop, starting)
                    scope = nursery.cancel_scope
                    urls = await nursery.start(_run_then_cancel, relay, stop, scope)
                if starting.cancelled_caught:
                    log.info("worker stopped before it was ready")
                    nursery.cancel_scope.cancel()
                else:
                    sys.stdout.write(f"{REPORT_PREFIX}{urls[0]}\n")
                    sys.stdout.flush()
    except Exception:
        log.exception("relay worker failed")
        return EXIT_FAILED
    log.info("relay worker stopped")
    return EXIT_OK


async def _run_then_cancel(
    relay: Relay,
    stop: trio.Event,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``relay.run``, then cancel ``scope`` (the signal and lifeline watchers)."""
    await relay.run(stop, task_status=task_status)
    scope.cancel()


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _stop_on_signals(signals: AsyncIterator[int], stop: trio.Event) -> None:
    """Set ``stop`` on SIGINT or SIGTERM, and keep receiving them until cancelled: a
    second signal must not fall back to the default action and kill a draining worker."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.info("signal received; already stopping", signal=name)
        else:
            log.info("signal received", signal=name)
            stop.set()


async def _stop_when_orphaned(stop: trio.Event) -> None:
    """Set ``stop`` once stdin, the parent's lifeline pipe, reaches end of file."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(4096):
            pass
    if not stop.is_set():
        log.warning("the parent process is gone; stopping")
        stop.set()


# ---------------------------------------------------------------------------------------------
# The parent


@dataclass(slots=True)
class WorkerSlot:
    """One worker as the parent sees it, across its restarts."""

    index: int
    venues: list[str]
    process: trio.Process | None = None
    """The running process; ``None`` before the first start and between restarts."""
    pid: int | None = None
    """The latest process's pid, kept after it exits."""
    url: str | None = None
    """The running process's sidecar, once it reported it (streams provisioned)."""
    restarts: int = 0
    last_exit: int | None = None
    """The latest process's exit status (negative: the signal that ended it)."""
    finished: trio.Event = field(default_factory=trio.Event)
    """Set when the parent stopped supervising this worker for good."""

    @property
    def name(self) -> str:
        return str(self.index)


class Parent:
    """The parent of ``service.workers > 1``: runs, supervises and aggregates the workers."""

    def __init__(self, config: Config, config_path: Path, plan: Sequence[Sequence[str]]) -> None:
        self.config = config
        self.config_path = config_path
        self.slots = [WorkerSlot(k, list(venues)) for k, venues in enumerate(plan)]
        self.stopping = False
        self._stop = trio.Event()
        self._first_provisioned = trio.Event()
        self._http: httpx.AsyncClient | None = None
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "relay_worker_restarts",
            "Worker processes started again after they exited",
            ["worker"],
            registry=self.registry,
        )
        self.up = Gauge(
            "relay_worker_up",
            "1 while the worker process runs and has reported its sidecar",
            ["worker"],
            registry=self.registry,
        )
        for slot in self.slots:
            self.restarts.labels(slot.name)
            self.up.labels(slot.name).set(0)

    def command(self, slot: WorkerSlot) -> list[str]:
        spec = f"{slot.index}/{len(self.slots)}"
        return [
            *(sys.executable, "-m", "relay", "run", "-c", str(self.config_path)),
            *("--worker", spec, "--worker-venues", ",".join(slot.venues)),
        ]

    async def run(self) -> int:
        """Serve the sidecar, run the workers until SIGINT/SIGTERM, stop them; exit code."""
        # The parent's only HTTP client is this sidecar's, asking the workers on every
        # scrape: a log line per request would be noise.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
        # As in a worker: ignored once the receiver is closed, i.e. after a clean stop.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        try:
            with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                return await self._run(signals)
        except Exception:
            # The workers' lifelines closed with the pipes: they stop by themselves.
            log.exception("relay parent failed")
            return EXIT_FAILED

    async def _run(self, signals: AsyncIterator[int]) -> int:
        http_cfg = self.config.http
        clean = False
        async with (
            httpx.AsyncClient(timeout=SCRAPE_TIMEOUT, trust_env=False) as http,
            trio.open_nursery() as root,
        ):
            self._http = http
            root.start_soon(self._signals, signals)
            urls = await root.start(serve_app, self.app(), http_cfg.bind, http_cfg.port)
            log.info(
                "sidecar listening; starting workers",
                urls=urls,
                workers={slot.name: slot.venues for slot in self.slots},
            )
            async with trio.open_nursery() as supervisors:
                for slot in self.slots:
                    supervisors.start_soon(self._supervise, slot)
                await self._stop.wait()
                clean = await self._stop_workers()
            root.cancel_scope.cancel()
        log.info("relay stopped", clean=clean)
        return EXIT_OK if clean else EXIT_FAILED

    async def _signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if self._stop.is_set():
                log.info("signal received; already stopping", signal=name)
            else:
                log.info("signal received; stopping the workers", signal=name)
                self.stopping = True
                self._stop.set()
                self._first_provisioned.set()  # no worker waits to start any more

    # -- supervision --------------------------------------------------------------------------

    async def _supervise(self, slot: WorkerSlot) -> None:
        try:
            if slot.index > 0:
                with trio.move_on_after(STAGGER_MAX):
                    await self._first_provisioned.wait()
            delay = BACKOFF_INITIAL
            while not self.stopping:
                started = trio.current_time()
                await self._run_once(slot)
                if self.stopping:
                    break
                ran = trio.current_time() - started
                if ran >= BACKOFF_RESET_AFTER:
                    delay = BACKOFF_INITIAL
                log.error(
                    "worker exited; restarting it",
                    worker=slot.index,
                    pid=slot.pid,
                    status=slot.last_exit,
                    ran_s=round(ran, 1),
                    restart_in_s=delay,
                )
                with trio.move_on_after(delay):
                    await self._stop.wait()
                if self.stopping:
                    break
                delay = min(delay * 2, BACKOFF_MAX)
                slot.restarts += 1
                self.restarts.labels(slot.name).inc()
        finally:
            slot.finished.set()
            if slot.index == 0:
                self._first_provisioned.set()

    async def _run_once(self, slot: WorkerSlot) -> None:
        """Start the worker, read its report, wait for it to exit."""
        process = await trio.lowlevel.open_process(
            self.command(slot),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            process_group=0,  # a terminal's Ctrl-C is for the parent, which forwards it
        )
        slot.process, slot.pid, slot.url = process, process.pid, None
        log.info("worker started", worker=slot.index, pid=process.pid, venues=slot.venues)
        if self.stopping:  # the stop came while it was being started
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        assert process.stdout is not None and process.stdin is not None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_reports, slot, process.stdout)
                await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await process.stdin.aclose()  # the lifeline; the worker is gone anyway
                await process.stdout.aclose()
            slot.process, slot.url, slot.last_exit = None, None, process.returncode
            self.up.labels(slot.name).set(0)
            if slot.index == 0:
                self._first_provisioned.set()  # provisioned or not: the others may go

    async def _read_reports(self, slot: WorkerSlot, stdout: trio.abc.ReceiveStream) -> None:
        pending = b""
        async for chunk in stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace").strip()
                if not text.startswith(REPORT_PREFIX):
                    continue
                slot.url = text.removeprefix(REPORT_PREFIX)
                self.up.labels(slot.name).set(1)
                log.info("worker ready", worker=slot.index, pid=slot.pid, sidecar=slot.url)
                if slot.index == 0:
                    self._first_provisioned.set()

    async def _stop_workers(self) -> bool:
        """SIGTERM to every worker, wait for them to drain, SIGKILL what is left; whether
        every running worker stopped with status 0."""
        running = [slot for slot in self.slots if slot.process is not None]
        for slot in running:
            assert slot.process is not None
            with contextlib.suppress(ProcessLookupError):
                slot.process.send_signal(signal.SIGTERM)
        grace = self.config.service.shutdown_timeout_ms / 1000 + STOP_GRACE
        with trio.move_on_after(grace):
            for slot in self.slots:
                await slot.finished.wait()
        killed = self._kill_all()
        for slot in self.slots:
            await slot.finished.wait()
        failed = {slot.index: slot.last_exit for slot in running if slot.last_exit != 0}
        if failed or killed:
            log.error("workers did not stop cleanly", exit_status=failed, killed=killed)
        return not failed and not killed

    def _kill_all(self) -> list[int]:
        """SIGKILL every worker still running; their numbers."""
        killed = []
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                log.error("worker did not stop in time; killing it", worker=slot.index)
                with contextlib.suppress(ProcessLookupError):
                    slot.process.kill()
                killed.append(slot.index)
        return killed

    # -- the sidecar --------------------------------------------------------------------------

    def app(self) -> QuartTrio:
        app = QuartTrio("relay-parent")

        @app.get("/health")
        async def health_view() -> tuple[dict[str, object], int]:
            answers = await self._ask_workers("/health")
            docs: dict[int, dict[str, Any] | str] = {}
            for index, answer in answers.items():
                try:
                    docs[index] = answer.json() if isinstance(answer, httpx.Response) else answer
                except ValueError as exc:
                    docs[index] = f"/health: not JSON: {exc}"
            document = merge_health(self.slots, docs, self.stopping)
            document = redact.active().redact_value(document)
            return document, 200 if document["status"] == "ok" else 503

        @app.get("/livez")
        async def livez() -> tuple[dict[str, object], int]:
            return {"status": "alive"}, 200

        @app.get("/readyz")
        async def readyz() -> tuple[dict[str, object], int]:
            answers = await self._ask_workers("/readyz")
            workers = {}
            for slot in self.slots:
                answer = answers.get(slot.index)
                workers[slot.name] = (
                    isinstance(answer, httpx.Response) and answer.status_code == 200
                )
            ready = not self.stopping and all(workers.values())
            return {"ready": ready, "workers": workers}, 200 if ready else 503

        @app.get("/metrics")
        async def metrics_view() -> Response:
            answers = await self._ask_workers("/metrics")
            texts = {}
            for slot in self.slots:
                answer = answers.get(slot.index)
                if isinstance(answer, httpx.Response) and answer.status_code == 200:
                    texts[slot.name] = answer.text
            body = exposition(texts, self.registry)
            return Response(body, content_type=CONTENT_TYPE_LATEST)

        return app

    async def _ask_workers(self, path: str) -> dict[int, httpx.Response | str]:
        """``GET path`` of every worker that reported its sidecar, at once: the response,
        or what went wrong. Workers without a sidecar are left out."""
        assert self._http is not None
        http = self._http
        answers: dict[int, httpx.Response | str] = {}

        async def ask(slot: WorkerSlot, url: str) -> None:
            try:
                answers[slot.index] = await http.get(url + path)
            except httpx.HTTPError as exc:
                answers[slot.index] = f"{path}: {exc!r}"

        async with trio.open_nursery() as nursery:
            for slot in self.slots:
                if slot.url is not None:
                    nursery.start_soon(ask, slot, slot.url)
        return answers


# ---------------------------------------------------------------------------------------------
# Aggregation (pure: tested without processes)


class _Families:
    """A collector that hands out already collected metric families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge_metrics(texts: Mapping[str, str]) -> list[Metric]:
    """The workers' expositions (by worker name) as one set of metric families, every
    sample with a ``worker`` label added. A text that does not parse is left out."""
    families: dict[str, Metric] = {}
    for worker, text in texts.items():
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as exc:
            log.warning("worker metrics unreadable", worker=worker, error=repr(exc))
            continue
        for family in parsed:
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            merged.samples.extend(
                sample._replace(labels={**sample.labels, "worker": worker})
                for sample in family.samples
            )
    return list(families.values())


def exposition(texts: Mapping[str, str], own: CollectorRegistry) -> bytes:
    """Prometheus text: the parent's own metrics, then :func:`merge_metrics` of ``texts``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*own.collect(), *merge_metrics(texts)]))
    return generate_latest(registry)


def merge_health(
    slots: Sequence[WorkerSlot], docs: Mapping[int, dict[str, Any] | str], stopping: bool
) -> dict[str, Any]:
    """The parent's ``/health`` document from each worker's (``docs``: its JSON, or why it
    could not be had; a worker without a sidecar yet is absent)."""
    workers: dict[str, dict[str, Any]] = {}
    venues: dict[str, Any] = {}
    nats_docs: list[dict[str, Any]] = []
    for slot in slots:
        doc = docs.get(slot.index)
        error: str | None = None
        if slot.process is None:
            status = "stopped" if stopping else "down"
        elif slot.url is None:
            status = "starting"
        elif isinstance(doc, dict):
            status = doc.get("status") if doc.get("status") in STATUS_RANK else "degraded"
        else:
            status, error = "unreachable", doc
        worker: dict[str, Any] = {
            "status": status,
            "pid": slot.pid,
            "restarts": slot.restarts,
            "venues": slot.venues,
        }
        if isinstance(doc, dict):
            worker["ready"] = bool(doc.get("ready"))
            nats = doc.get("nats")
            if isinstance(nats, dict):
                nats_docs.append(nats)
            for venue_id, venue in (doc.get("venues") or {}).items():
                venues[venue_id] = {**venue, "worker": slot.index}
        else:
            worker["ready"] = False
            if error is not None:
                worker["error"] = error
            if slot.last_exit is not None and status == "down":
                worker["last_exit"] = slot.last_exit
        for venue_id in slot.venues:
            venues.setdefault(venue_id, {"state": f"worker {status}", "worker": slot.index})
        workers[slot.name] = worker
    statuses = [w["status"] for w in workers.values()] or ["down"]
    all_answered = len(nats_docs) == len(slots)
    errors = [n["last_error"] for n in nats_docs if n.get("last_error")]
    return {
        "status": max(statuses, key=STATUS_RANK.__getitem__),
        "ready": not stopping and all(w["ready"] for w in workers.values()),
        "shutting_down": stopping,
        "nats": {
            "connected": all_answered and all(bool(n.get("connected")) for n in nats_docs),
            "streams_provisioned": all_answered
            and all(bool(n.get("streams_provisioned")) for n in nats_docs),
            "in_flight": sum(_number(n.get("in_flight")) for n in nats_docs),
            "backlog": sum(_number(n.get("backlog")) for n in nats_docs),
            "last_error": errors[0] if errors else None,
        },
        "venues": venues,
        "workers": workers,
    }


def _number(value: object) -> int:
    return int(value) if isinstance(value, int | float) and math.isfinite(value) else 0
