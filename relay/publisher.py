"""The JetStream publisher: the last stage of the pipeline, from batches of messages to PubAcks.

Place in the nursery tree (see :mod:`relay.app`): :meth:`Publisher.run` is the first task of
the pipeline nursery. It takes messages from the :class:`~relay.overload.OutageBuffer` the
normalizer fills, as many as its window has room for. It owns one helper thread that runs an
asyncio event loop with the nats-py client (nats-py is asyncio-only; the relay runs on trio).
``run`` starts the thread, and stops and joins it before it returns, raises or re-raises a
cancellation, so the thread never outlives the task.

Division of labour:

* The **trio side** owns all the state: the window of outstanding messages, their ack
  deadlines, the retry schedule, the metrics, and the read-only properties used by
  ``/health`` and ``/readyz``. There are no locks because the thread never touches it.
* The **asyncio side** is a pipe. It connects, provisions streams and consumers, writes the
  flights of messages handed over, and hands back all the PubAcks read in one loop
  iteration as one report. Nothing crosses the thread boundary per message, and a wakeup
  crosses it only when the other side has none pending: flights and reports go through
  thread-safe deques, and ``loop.call_soon_threadsafe`` or ``TrioToken.run_sync_soon`` is
  called only for the first item since the other side last took them.

Publishing is core NATS ``PUB`` with a reply subject rather than ``js.publish``: a message's
reply is ``<inbox>.<n>.<attempt>`` under a per-publisher inbox, and one wildcard
subscription collects every PubAck. JetStream deduplicates on the ``Nats-Msg-Id`` header, so
a retry after a lost or late PubAck (same id) is stored once.

The publisher never gives up a message for a passing reason (a lost PubAck, a server
error, an outage): it retries until the message is stored. While NATS is away it waits
instead, and ack deadlines start again at the reconnect. So during an outage its window
fills, and the outage buffer in front of it decides what gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
import trio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig
from prometheus_client import Counter, Histogram

from relay.metrics import Metrics
from relay.overload import OutageBuffer, count_dropped
from relay.wire import OutMessage

__all__ = ["ProvisioningError", "Publisher", "PublisherError"]

log = structlog.get_logger(__name__)

_MSG_ID = "Nats-Msg-Id"
_STATUS = "Status"
_NO_RESPONDERS = "503"
# JetStream API error "stream name already in use with a different configuration".
_ERR_STREAM_NAME_EXIST = 10058
# How long the thread may take to close the connection before run() stops waiting for it.
_CLOSE_TIMEOUT = 5.0

# An outstanding message is a 3-item list, not an object: it is made for every message on
# the hot path, and a list display costs a fraction of a Python __init__ call.
_MSG = 0  # the OutMessage
_ATTEMPT = 1  # how many times it has been published
_SERIAL = 2  # the flight carrying its current attempt; 0 while it waits for a retry
_Entry = list[Any]

# What the trio side hands the asyncio side: reply keys, the attempt number (one for all,
# or one per message), and the messages.
_Flight = tuple[list[str], int | list[int], Sequence[OutMessage]]
# What comes back for each PubAck: reply subject, body, headers.
_Ack = tuple[str, bytes, dict[str, str] | None]


class PublisherError(Exception):
    """The NATS side of the publisher failed in a way the publisher cannot recover from."""


class ProvisioningError(PublisherError):
    """A stream or consumer could not be created or updated; the message is the server's."""


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_puback = msgspec.json.Decoder(_PubAck).decode


def _venue(subject: str) -> str:
    return subject.split(".", 2)[1]


def _observe_many(histogram: Histogram, values: list[float]) -> None:
    """``histogram.observe(v)`` for every value, with the same result.

    ``Histogram.observe`` takes 2-3 µs (two locked increments and a linear bucket scan),
    a fifth of the per-message budget at 80k msgs/s. This bins the values first and then
    increments each bucket once, through prometheus_client's (long-stable but private)
    bucket fields; without them it falls back to ``observe``.
    """
    if not values:
        return
    try:
        bounds: list[float] = histogram._upper_bounds  # type: ignore[attr-defined]
        buckets = histogram._buckets  # type: ignore[attr-defined]
        total = histogram._sum  # type: ignore[attr-defined]
    except AttributeError:
        for v in values:
            histogram.observe(v)
        return
    counts = [0] * len(bounds)
    for v in values:
        # observe() counts v in the first bucket whose upper bound is >= v; the last
        # bound is +Inf, so bisect_left always lands on a bucket.
        counts[bisect_left(bounds, v)] += 1
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)
    total.inc(math.fsum(values))


class Publisher:
    """Publishes messages (:class:`~relay.wire.OutMessage`) to JetStream, at most ``window``
    unsettled at a time, retrying each with the same ``Nats-Msg-Id`` until it is stored.

    ``connect_options`` are keyword arguments for :func:`nats.connect`. Unless given there,
    ``max_reconnect_attempts`` is -1 (keep trying forever, at start-up too: a daemon must
    outlive a NATS restart, and ``connected`` tells /readyz meanwhile) and
    ``flush_timeout`` is ``ack_timeout``. Connection callbacks given there are called
    after the publisher's own.

    A message is *outstanding* from its first publish until it is settled. Every message
    taken from the outage buffer is settled exactly once, as stored (``published{venue}``),
    already stored (``duplicates{venue}``), or dropped (``dropped{type, reason}``) for a
    reason that retrying cannot fix:

    ``no_stream``
        no stream captures the subject (the server answered "no responders");
    ``rejected``
        JetStream refused it with a client error (4xx, e.g. larger than the stream allows);
    ``invalid``
        nats-py refused it (e.g. larger than the server's max payload, bad subject);
    ``shutdown``
        still outstanding, or still in the outage buffer, when ``run`` ended;
    ``nats_closed``
        the same, when ``run`` ended because the connection closed for good.

    ``publish_errors{reason}`` counts failed attempts: ``ack_timeout``, ``buffer_full``
    (nats-py's reconnect buffer was full), ``nack`` (a server error, 5xx), ``status`` (an
    unexpected status reply), ``bad_ack`` (an unreadable PubAck), and the final
    ``no_stream``, ``rejected`` and ``invalid``. ``publish_retries`` counts republished
    attempts.

    A failed attempt is retried after the next delay of ``retry_schedule``, then after its
    last delay again and again; an attempt fails when its PubAck has not come
    ``ack_timeout`` seconds after it was handed to the thread, not counting time spent
    disconnected.
    """

    def __init__(
        self,
        connect_options: dict[str, Any],
        streams: list[StreamConfig],
        consumers: list[tuple[str, ConsumerConfig]],
        *,
        window: int,
        ack_timeout: float,
        retry_schedule: Sequence[float] = (0.1, 0.5, 2.0),
        metrics: Metrics,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if ack_timeout <= 0:
            raise ValueError("ack_timeout must be positive")
        if not retry_schedule or any(d < 0 for d in retry_schedule):
            raise ValueError("retry delays must be given and not negative")
        self._connect_options = dict(connect_options)
        self._connect_options.setdefault("max_reconnect_attempts", -1)
        # When its buffer is over pending_size, nc.publish() waits for nats-py's flusher,
        # by default forever; if the connection drops just then, the flusher never answers
        # and publishing stops for good. A bound turns that into one slow publish.
        self._connect_options.setdefault("flush_timeout", ack_timeout)
        self._streams = list(streams)
        self._consumers = list(consumers)
        self._window = window
        self._ack_timeout = ack_timeout
        self._retry_schedule = tuple(retry_schedule)
        self._shutdown_timeout = shutdown_timeout
        self._metrics = metrics

        self._connected = False
        self._provisioned = False
        self._last_error: str | None = None

        # --- trio side ---
        # Keyed by the reply subject minus its ".<attempt>": "<inbox>.<n>".
        self._outstanding: dict[str, _Entry] = {}
        self._source: OutageBuffer | None = None
        self._next_n = 1
        self._serial = 0
        # (deadline, serial, keys) per flight. A deadline is the send time plus ack_timeout
        # and send times only grow, so this stays sorted without a heap.
        self._deadlines: deque[tuple[float, int, list[str]]] = deque()
        # (due, seq, keys) of messages waiting out a retry delay; delays differ by attempt.
        self._retries: list[tuple[float, int, list[str]]] = []
        self._retry_seq = 0
        # Appended to by the helper thread (see _report).
        self._reports: deque[tuple[str, Any]] = deque()
        self._report_pending = False
        """Whether a ``run_sync_soon(_on_report)`` is on its way: set by the thread, cleared
        by the trio side."""
        self._wake = trio.Event()
        self._settle_until = math.inf
        """When the settle loop, asleep, wakes up by itself: a new flight whose deadline is
        later needs no wakeup."""
        self._room: trio.Event | None = None
        self._input_done = False
        self._thread_exited = False
        self._thread_error: BaseException | None = None
        self._closed = False
        self._logged: set[tuple[str, str]] = set()
        # Counter children by subject, so that counting a PubAck needs no subject parsing.
        self._published_by_subject: dict[str, Any] = {}
        self._duplicates_by_subject: dict[str, Any] = {}
        self._trio_token: trio.lowlevel.TrioToken | None = None

        # --- asyncio side: only the helper thread uses these once it runs ---
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._inbox = ""
        """``<inbox prefix>.<nuid>.``, set by the thread before it reports ready."""
        # Appended to by the trio side (see _dispatch).
        self._aio_flights: deque[_Flight] = deque()
        self._aio_flights_pending = False
        """Whether a ``call_soon_threadsafe(_aio_take_flights)`` is on its way: set by the
        trio side, cleared by the thread."""
        self._aio_wake: asyncio.Event | None = None
        self._aio_publishing = False
        self._aio_stopping = False
        self._aio_acks: list[_Ack] = []

    # ------------------------------------------------------------------ read-only state
    # For /health and /readyz; read them from the trio thread.

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up (false while nats-py reconnects)."""
        return self._connected

    @property
    def provisioned(self) -> bool:
        """Whether every stream and consumer has been created or updated."""
        return self._provisioned

    @property
    def in_flight(self) -> int:
        """Outstanding messages: published, not settled (including those awaiting a retry)."""
        return len(self._outstanding)

    @property
    def backlog(self) -> int:
        """Messages not settled: waiting in the outage buffer, plus :attr:`in_flight`."""
        waiting = len(self._source) if self._source is not None else 0
        return waiting + len(self._outstanding)

    @property
    def last_error(self) -> str | None:
        """The latest connection error or retryable PubAck error, for humans."""
        return self._last_error

    # ------------------------------------------------------------------ trio side

    async def run(
        self,
        source: OutageBuffer,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, provision, then publish every message until ``source`` is closed and empty.

        ``task_status.started()`` is called once connected and provisioned; failing to
        connect raises :class:`PublisherError`, failing to provision
        :class:`ProvisioningError` with the server's message. Once the input is exhausted,
        waits up to ``shutdown_timeout`` seconds for the outstanding messages to settle,
        counts the rest as dropped (``shutdown``) and returns. Raises
        :class:`PublisherError` if the connection closes for good. On cancellation, counts
        the unsettled messages as dropped, closes the connection, joins the thread and
        re-raises. Call it once per instance.
        """
        if self._loop is not None:
            raise RuntimeError("Publisher.run() can only be called once")
        self._source = source
        self._trio_token = trio.lowlevel.current_trio_token()
        # Read when Prometheus scrapes, not set on every change.
        self._metrics.publish_in_flight.set_function(lambda: len(self._outstanding))
        # The loop and its main task are made before the thread exists, so that stopping
        # can always reach them, even when cancelled before the thread has started.
        loop = self._loop = asyncio.new_event_loop()
        self._main_task = loop.create_task(self._aio_main())
        thread = threading.Thread(target=self._thread_main, name="relay-publisher", daemon=True)
        thread.start()
        try:
            await self._until_provisioned()
            task_status.started()
            failure: PublisherError | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed, source)
                try:
                    await self._settle()
                except PublisherError as e:
                    # Raised after the nursery, so callers get it bare, not in a group.
                    failure = e
                    nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure
        finally:
            self._abandon("nats_closed" if self._closed else "shutdown")
            await self._stop_thread(thread)

    async def _until_provisioned(self) -> None:
        while True:
            self._process_reports()
            if self._provisioned:
                return
            if self._thread_exited:
                err = self._thread_error
                if isinstance(err, PublisherError):
                    raise err
                raise PublisherError(f"could not connect to NATS: {err!r}") from err
            self._wake = trio.Event()
            await self._wake.wait()

    async def _feed(self, source: OutageBuffer) -> None:
        """Move messages from the outage buffer into the window, as much as fits."""
        while True:
            room = self._window - len(self._outstanding)
            if room <= 0:
                self._room = trio.Event()
                await self._room.wait()
                continue
            try:
                messages = await source.get(room)
            except trio.EndOfChannel:
                break
            self._send_new(messages)
        self._input_done = True
        self._wake.set()

    async def _settle(self) -> None:
        """Take in PubAcks and reports, fail expired attempts and send due retries, until the
        input is exhausted and everything settled, or ``shutdown_timeout`` has passed since."""
        shutdown_at = math.inf
        while True:
            self._process_reports()
            now = trio.current_time()
            if self._connected:
                # While disconnected nothing can be acked, and what is sent only fills
                # nats-py's reconnect buffer: failures and retries wait for the reconnect.
                self._expire(now)
                self._retry_due(now)
            if self._room is not None and len(self._outstanding) < self._window:
                self._room.set()
                self._room = None
            if self._input_done:
                if not self._outstanding:
                    return
                if shutdown_at == math.inf:
                    shutdown_at = now + self._shutdown_timeout
                elif now >= shutdown_at:
                    return
            if self._reports:
                # More arrived meanwhile: go round again, but let the feeder run first.
                await trio.lowlevel.checkpoint()
                continue
            wake_at = shutdown_at
            if self._deadlines and self._connected:
                wake_at = min(wake_at, self._deadlines[0][0])
            if self._retries and self._connected:
                wake_at = min(wake_at, self._retries[0][0])
            self._wake = trio.Event()
            self._settle_until = wake_at
            with trio.move_on_at(wake_at):
                await self._wake.wait()

    def _send_new(self, msgs: Sequence[OutMessage]) -> None:
        """Publish messages for the first time, as one flight."""
        self._serial += 1
        serial = self._serial
        n = self._next_n
        self._next_n = n + len(msgs)
        inbox = self._inbox
        keys = [f"{inbox}{i}" for i in range(n, n + len(msgs))]
        self._outstanding.update(zip(keys, [[m, 1, serial] for m in msgs], strict=True))
        self._dispatch(serial, (keys, 1, msgs))

    def _send_again(self, keys: list[str]) -> None:
        """Republish messages that wait for a retry, as one flight."""
        self._serial += 1
        serial = self._serial
        out = self._outstanding
        attempts = []
        msgs = []
        for k in keys:
            e = out[k]
            e[_ATTEMPT] += 1
            e[_SERIAL] = serial
            attempts.append(e[_ATTEMPT])
            msgs.append(e[_MSG])
        self._metrics.publish_retries.inc(len(keys))
        self._dispatch(serial, (keys, attempts, msgs))

    def _dispatch(self, serial: int, flight: _Flight) -> None:
        """Hand a flight to the asyncio thread; its PubAck deadline starts now."""
        deadline = trio.current_time() + self._ack_timeout
        self._deadlines.append((deadline, serial, flight[0]))
        # Appended before the flag is read, and the thread clears the flag before it takes
        # the flights: a flight is never left behind without a wakeup on its way.
        self._aio_flights.append(flight)
        if not self._aio_flights_pending:
            self._aio_flights_pending = True
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._aio_take_flights)
        # The settle loop may be asleep with no earlier deadline to wake it.
        if deadline < self._settle_until:
            self._wake.set()

    def _expire(self, now: float) -> None:
        """Fail every attempt whose flight's deadline has passed without its PubAck."""
        deadlines = self._deadlines
        out = self._outstanding
        while deadlines and deadlines[0][0] <= now:
            _, serial, keys = deadlines.popleft()
            failed = [k for k in keys if (e := out.get(k)) is not None and e[_SERIAL] == serial]
            if failed:
                self._failed(failed, "ack_timeout", now)

    def _retry_due(self, now: float) -> None:
        """Republish, as one flight, every message whose retry delay has run out."""
        retries = self._retries
        out = self._outstanding
        due: list[str] = []
        while retries and retries[0][0] <= now:
            _, _, keys = heapq.heappop(retries)
            due.extend(k for k in keys if (e := out.get(k)) is not None and e[_SERIAL] == 0)
        if due:
            self._send_again(due)

    def _failed(self, keys: list[str], reason: str, now: float) -> None:
        """Attempts that got no usable PubAck: schedule each message's next attempt, after
        the schedule's delay for that attempt (its last delay once the schedule is used up)."""
        self._metrics.publish_errors.labels(reason).inc(len(keys))
        schedule = self._retry_schedule
        last = len(schedule) - 1
        out = self._outstanding
        by_delay: dict[float, list[str]] = {}
        for k in keys:
            e = out[k]
            e[_SERIAL] = 0
            by_delay.setdefault(schedule[min(e[_ATTEMPT] - 1, last)], []).append(k)
        for delay, waiting in by_delay.items():
            self._retry_seq += 1
            heapq.heappush(self._retries, (now + delay, self._retry_seq, waiting))

    def _drop(self, msgs: Iterable[OutMessage], reason: str) -> dict[str, int]:
        return count_dropped(self._metrics, msgs, reason)

    def _abandon(self, reason: str) -> None:
        """Count every message not settled as dropped: ``run`` is ending."""
        msgs = [e[_MSG] for e in self._outstanding.values()]
        if self._source is not None:
            msgs.extend(self._source.take_all())
        self._outstanding.clear()
        self._deadlines.clear()
        self._retries.clear()
        if msgs:
            by_type = self._drop(msgs, reason)
            log.error(
                "publisher stopped with messages unconfirmed; counted as dropped",
                count=len(msgs),
                reason=reason,
                by_type=by_type,
            )

    def _on_report(self) -> None:
        """Runs on the trio thread (``run_sync_soon``) when the asyncio side has queued
        reports. It only wakes their reader: an exception raised here would crash the whole
        trio run."""
        self._report_pending = False
        self._wake.set()

    def _process_reports(self) -> None:
        reports = self._reports
        while reports:
            kind, payload = reports.popleft()
            if kind == "acks":
                self._on_acks(*payload)
            elif kind == "unsent":
                self._on_unsent(payload)
            elif kind == "invalid":
                self._on_invalid(payload)
            elif kind == "connected":
                if payload and not self._connected:
                    self._resume(trio.current_time())
                self._connected = payload
                self._metrics.nats_connected.set(1 if payload else 0)
                log.info("NATS connected" if payload else "NATS disconnected")
            elif kind == "error":
                self._last_error = payload
            elif kind == "ready":
                self._provisioned = True
            elif kind == "closed":
                self._closed = True
            elif kind == "exited":
                self._thread_exited = True
                self._thread_error = payload
            if kind in ("closed", "exited"):
                self._connected = False
                self._metrics.nats_connected.set(0)
        if self._provisioned and (self._closed or self._thread_exited):
            # Once provisioned, the connection closes and the thread ends only when run()
            # asks them to; reconnecting is nats-py's job. So this is a failure.
            err = self._thread_error
            self._closed = True
            self._last_error = "NATS connection closed for good" + (f": {err!r}" if err else "")
            raise PublisherError(self._last_error) from err

    def _resume(self, now: float) -> None:
        """Back from an outage: every attempt in flight gets a full ``ack_timeout`` from now
        (nats-py sends what it buffered meanwhile first), and due retries go out."""
        limit = now + self._ack_timeout
        # Deadlines only grow along the deque, so raising the early ones to one value keeps
        # it sorted.
        self._deadlines = deque((max(d, limit), s, k) for d, s, k in self._deadlines)
        self._wake.set()

    def _on_acks(self, read_ns: int, acks: list[_Ack]) -> None:
        """Settle messages from a chunk of PubAcks and no-responder replies, read by the
        thread at ``read_ns`` (epoch nanoseconds)."""
        out = self._outstanding
        stored: dict[str, int] = {}
        dups: dict[str, int] = {}
        latencies: list[float] = []
        retry: dict[str, list[str]] = {}
        no_stream: list[OutMessage] = []
        rejected: list[OutMessage] = []
        for subject, data, headers in acks:
            key, _, attempt = subject.rpartition(".")
            # Popped up front because success is the common case; put back on failure.
            e = out.pop(key, None)
            if e is None:
                continue  # already settled: a late reply to an earlier attempt
            if headers is not None and _STATUS in headers:
                ack = None
            else:
                try:
                    ack = _decode_puback(data)
                except msgspec.DecodeError:
                    ack = None
            if ack is not None and ack.error is None:
                m = e[_MSG]
                # Counted by subject (a dict hit), summed per venue after the loop.
                if ack.duplicate:
                    dups[m.subject] = dups.get(m.subject, 0) + 1
                else:
                    stored[m.subject] = stored.get(m.subject, 0) + 1
                latencies.append((read_ns - m.recv_ns) / 1e9)
                continue
            out[key] = e
            # A failure only counts for the attempt in flight: a late failure of an earlier
            # attempt must not fail (or drop) a retry that may still succeed.
            if e[_SERIAL] == 0 or attempt != str(e[_ATTEMPT]):
                continue
            if ack is None:
                if headers is not None and headers.get(_STATUS) == _NO_RESPONDERS:
                    del out[key]
                    no_stream.append(e[_MSG])
                    self._log_once(
                        e[_MSG].subject,
                        "no_stream",
                        "no JetStream stream captures this subject; its messages are dropped",
                    )
                else:
                    e[_SERIAL] = 0  # failed: a second reply to this attempt is ignored
                    retry.setdefault("status" if headers is not None else "bad_ack", []).append(key)
            elif ack.error is not None and ack.error.code >= 500:
                # Server-side trouble (storage, limits with discard=new, leadership) may
                # pass: retry.
                e[_SERIAL] = 0
                retry.setdefault("nack", []).append(key)
                self._last_error = f"PubAck error {ack.error.err_code}: {ack.error.description}"
            elif ack.error is not None:
                del out[key]
                rejected.append(e[_MSG])
                self._log_once(
                    e[_MSG].subject,
                    "rejected",
                    "JetStream rejected a message; dropped",
                    code=ack.error.code,
                    err_code=ack.error.err_code,
                    description=ack.error.description,
                )
        metrics = self._metrics
        for subject, n in stored.items():
            self._venue_child(self._published_by_subject, metrics.published, subject).inc(n)
        for subject, n in dups.items():
            self._venue_child(self._duplicates_by_subject, metrics.duplicates, subject).inc(n)
        _observe_many(metrics.puback_latency, latencies)
        if no_stream:
            metrics.publish_errors.labels("no_stream").inc(len(no_stream))
            self._drop(no_stream, "no_stream")
        if rejected:
            metrics.publish_errors.labels("rejected").inc(len(rejected))
            self._drop(rejected, "rejected")
        if retry:
            now = trio.current_time()
            for reason, keys in retry.items():
                self._failed(keys, reason, now)

    def _on_unsent(self, attempts: list[tuple[str, int]]) -> None:
        """Attempts nats-py refused to buffer while disconnected: retry them later."""
        out = self._outstanding
        failed = [
            k
            for k, a in attempts
            if (e := out.get(k)) is not None and e[_ATTEMPT] == a and e[_SERIAL] != 0
        ]
        if failed:
            self._failed(failed, "buffer_full", trio.current_time())

    def _on_invalid(self, attempts: list[tuple[str, int, str]]) -> None:
        """Messages nats-py refused outright (bad subject, over max payload): drop them."""
        out = self._outstanding
        dropped = []
        for k, a, why in attempts:
            e = out.get(k)
            if e is not None and e[_ATTEMPT] == a:
                del out[k]
                dropped.append(e[_MSG])
                self._log_once(e[_MSG].subject, "invalid", "NATS refused a message", error=why)
        if dropped:
            self._metrics.publish_errors.labels("invalid").inc(len(dropped))
            self._drop(dropped, "invalid")

    def _log_once(self, subject: str, what: str, event: str, **kw: Any) -> None:
        """Log an error the first time it happens to a subject: it repeats per message."""
        if (subject, what) not in self._logged:
            self._logged.add((subject, what))
            log.error(event, subject=subject, **kw)

    @staticmethod
    def _venue_child(cache: dict[str, Any], counter: Counter, subject: str) -> Any:
        """The child of ``counter`` for the subject's venue, cached by subject."""
        child = cache.get(subject)
        if child is None:
            child = cache[subject] = counter.labels(_venue(subject))
        return child

    async def _stop_thread(self, thread: threading.Thread) -> None:
        """Ask the asyncio side to close the connection and end, and wait for the thread."""
        loop = self._loop
        assert loop is not None
        if not self._thread_exited:
            # RuntimeError: the loop has closed already, the thread is on its way out.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._aio_stop)
        # Shielded: when run() is being cancelled, this must still wait for the thread.
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT + 1.0):
            while True:
                while self._reports:
                    kind, payload = self._reports.popleft()
                    if kind == "exited":
                        self._thread_exited = True
                        self._thread_error = payload
                if self._thread_exited:
                    break
                self._wake = trio.Event()
                await self._wake.wait()
        if self._thread_exited:
            thread.join()
        else:
            log.error("publisher thread did not stop in time; leaving it behind (daemon)")
        self._connected = False
        self._metrics.nats_connected.set(0)

    # ------------------------------------------------------------------ asyncio side

    def _report(self, kind: str, payload: Any = None) -> None:
        """From the helper thread: queue ``(kind, payload)`` for the trio side, and wake it
        unless a wakeup is on its way already (see _dispatch for the order)."""
        self._reports.append((kind, payload))
        if self._report_pending:
            return
        self._report_pending = True
        assert self._trio_token is not None
        # RunFinishedError: trio is gone, nobody is left to tell.
        with contextlib.suppress(trio.RunFinishedError):
            self._trio_token.run_sync_soon(self._on_report)

    def _thread_main(self) -> None:
        loop = self._loop
        assert loop is not None and self._main_task is not None
        error: BaseException | None = None
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._main_task)
        except asyncio.CancelledError:
            pass
        except BaseException as e:
            error = e
        finally:
            try:
                # What nats-py left behind when its close() failed half-way (it does when
                # the socket died with data pending), like asyncio.run() would.
                leftovers = asyncio.all_tasks(loop)
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    loop.run_until_complete(asyncio.wait(leftovers, timeout=1.0))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self._report("exited", error)

    def _aio_stop(self) -> None:
        """Runs on the asyncio loop (``call_soon_threadsafe``): make the main task end.

        Once publishing, stopping is cooperative: nats-py swallows a CancelledError that
        lands inside ``publish()``, which would leave the task running with its
        cancellation spent. Before that (connecting, provisioning), cancelling is safe.
        """
        self._aio_stopping = True
        if self._aio_publishing:
            assert self._aio_wake is not None
            self._aio_wake.set()
        elif self._main_task is not None:
            self._main_task.cancel()

    async def _aio_main(self) -> None:
        """Connect, provision, subscribe to PubAcks, then publish flights until stopped."""
        self._aio_wake = asyncio.Event()
        options = dict(self._connect_options)
        options["disconnected_cb"] = _chain(options, "disconnected_cb", self._aio_disconnected)
        options["reconnected_cb"] = _chain(options, "reconnected_cb", self._aio_reconnected)
        options["closed_cb"] = _chain(options, "closed_cb", self._aio_closed)
        options["error_cb"] = _chain(options, "error_cb", self._aio_error)
        nc: NatsClient = await nats.connect(**options)
        try:
            self._report("connected", True)
            await self._provision(nc.jetstream())
            self._inbox = nc.new_inbox() + "."
            # PubAcks arrive as fast as messages go out: room for several windows of them,
            # or a burst becomes slow-consumer drops and then needless retries.
            await nc.subscribe(
                self._inbox + "*.*",
                cb=self._aio_on_ack,
                pending_msgs_limit=max(4 * self._window, 65536),
            )
            await nc.flush()
            self._aio_publishing = True
            self._report("ready")
            await self._aio_publish_loop(nc)
        finally:
            # Not wait_for(): it would wait on for a close() that swallowed its cancellation.
            closing = asyncio.ensure_future(nc.close())
            await asyncio.wait([closing], timeout=_CLOSE_TIMEOUT)
            if not closing.done():
                log.warning("closing the NATS connection timed out")
            elif not closing.cancelled() and closing.exception() is not None:
                # Typically ConnectionResetError: the server was gone with PUBs buffered.
                log.info("NATS connection closed uncleanly", error=repr(closing.exception()))

    async def _provision(self, js: JetStreamContext) -> None:
        """Create or update every configured stream, then every consumer, idempotently."""
        for config in self._streams:
            what = f"stream {config.name!r}"
            try:
                try:
                    # Creating a stream that exists with the same config succeeds.
                    await js.add_stream(config)
                    action = "created or unchanged"
                except nats.js.errors.BadRequestError as e:
                    if e.err_code != _ERR_STREAM_NAME_EXIST:
                        raise
                    await js.update_stream(config)
                    action = "updated"
            except nats.errors.Error as e:
                raise _provisioning_error(what, e) from e
            log.info("stream provisioned", stream=config.name, action=action)
        for stream, cconfig in self._consumers:
            name = cconfig.durable_name or cconfig.name
            try:
                # The server treats create as create-or-update for a durable consumer.
                await js.add_consumer(stream, cconfig)
            except nats.errors.Error as e:
                raise _provisioning_error(f"consumer {name!r} on stream {stream!r}", e) from e
            log.info("consumer provisioned", stream=stream, consumer=name)

    def _aio_take_flights(self) -> None:
        """Runs on the asyncio loop (``call_soon_threadsafe``): flights are queued."""
        self._aio_flights_pending = False
        assert self._aio_wake is not None
        self._aio_wake.set()

    async def _aio_publish_loop(self, nc: NatsClient) -> None:
        wake = self._aio_wake
        assert wake is not None
        flights = self._aio_flights
        while not self._aio_stopping:
            await wake.wait()
            wake.clear()
            while flights and not self._aio_stopping:
                # Every flight queued by now goes into nats-py's buffer before this yields,
                # so flights that came together leave in one write.
                while flights and not self._aio_stopping:
                    await self._aio_publish(nc, flights.popleft())
                # nc.publish() does not yield; yielding here lets nats-py's flusher write
                # them out and its reader take in PubAcks before the next ones.
                await asyncio.sleep(0)

    async def _aio_publish(self, nc: NatsClient, flight: _Flight) -> None:
        """Buffer one flight's PUBs in nats-py; its flusher task writes them out in large
        writes once this yields."""
        keys, attempts, msgs = flight
        attempt_of = [attempts] * len(keys) if isinstance(attempts, int) else attempts
        if nc.is_connected and not nc.is_draining_pubs:
            # The whole flight as one protocol block through nats-py's pending buffer:
            # nc.publish() costs ~15 us a message in header building and checks that our
            # subjects and ids never need. What the block cannot carry goes the slow way
            # below, which reports it.
            block, rest = _hpub_block(keys, attempt_of, msgs, nc.max_payload)
            if block:
                await nc._send_command(block)
                # As nc.publish() does: a flush already queued writes this block too, so
                # flights buffered back to back leave in one write. (_flush_pending writes
                # inline when the flusher task is gone.)
                queued, flusher = nc._flush_queue, nc._flusher_task
                if queued is None or queued.empty() or flusher is None or flusher.done():
                    await nc._flush_pending()
            keys = [keys[i] for i in rest]
            attempt_of = [attempt_of[i] for i in rest]
            msgs = [msgs[i] for i in rest]
        replies = [f"{key}.{attempt}" for key, attempt in zip(keys, attempt_of, strict=True)]
        publish = nc.publish
        unsent: list[tuple[str, int]] = []
        invalid: list[tuple[str, int, str]] = []
        for key, reply, attempt, m in zip(keys, replies, attempt_of, msgs, strict=True):
            if self._aio_stopping:
                break  # a forced flush may have made this flight slow; the rest is abandoned
            try:
                await publish(m.subject, m.payload, reply=reply, headers={_MSG_ID: m.msg_id})
            except (
                nats.errors.OutboundBufferLimitError,
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionDrainingError,
            ):
                # Disconnected and nats-py's reconnect buffer is full (or the connection is
                # closing): a failed attempt like a lost PubAck, retried on the same schedule.
                unsent.append((key, attempt))
            except nats.errors.Error as e:
                invalid.append((key, attempt, repr(e)))
        if unsent:
            self._report("unsent", unsent)
        if invalid:
            self._report("invalid", invalid)

    async def _aio_on_ack(self, msg: Msg) -> None:
        # Collect the PubAcks of one loop iteration; hand them over in one call after it.
        acks = self._aio_acks
        acks.append((msg.subject, msg.data, msg.headers))
        if len(acks) == 1:
            assert self._loop is not None
            self._loop.call_soon(self._aio_hand_over_acks)

    def _aio_hand_over_acks(self) -> None:
        acks, self._aio_acks = self._aio_acks, []
        if acks:
            # Stamped here, when they have been read: the latency histogram is of the PubAck's
            # arrival, not of when the trio side, busy with frames, gets round to the report.
            self._report("acks", (time.time_ns(), acks))

    async def _aio_disconnected(self) -> None:
        self._report("connected", False)

    async def _aio_reconnected(self) -> None:
        self._report("connected", True)

    async def _aio_closed(self) -> None:
        self._report("closed")

    async def _aio_error(self, e: Exception) -> None:
        self._report("error", f"NATS: {e!r}")
        log.warning("NATS client error", error=repr(e))


def _provisioning_error(what: str, e: nats.errors.Error) -> ProvisioningError:
    """The error for a failed stream or consumer request, in the server's words when it gave
    some (e.g. "stream configuration update can not change storage type")."""
    if isinstance(e, nats.js.errors.APIError) and e.description:
        return ProvisioningError(f"{what}: {e.description} (code {e.code}, err_code {e.err_code})")
    if isinstance(e, nats.js.errors.ServiceUnavailableError):
        return ProvisioningError(f"{what}: JetStream did not answer; is it enabled on the server?")
    return ProvisioningError(f"{what}: {e!r}")  # e.g. a timeout


# HPUB <subject> <key>.<attempt> <header bytes> <total bytes>, the header with the id, the
# payload.
_HPUB = b"HPUB %s %s.%d %d %d\r\nNATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n%s\r\n"
_HEADER_LEN = len(b"NATS/1.0\r\nNats-Msg-Id: \r\n\r\n")
"""The header's length without the id."""


def _hpub_block(
    keys: list[str], attempt_of: list[int], msgs: Sequence[OutMessage], max_payload: int
) -> tuple[bytes, list[int]]:
    """HPUB commands for a flight, replying to ``<key>.<attempt>``, joined; and the indexes
    of messages left out (too large, or an id with a line break that only nats-py's escaping
    can carry)."""
    parts = []
    rest = []
    for i, (key, attempt, m) in enumerate(zip(keys, attempt_of, msgs, strict=True)):
        msg_id = m.msg_id
        payload = m.payload
        if len(payload) > max_payload or "\r" in msg_id or "\n" in msg_id:
            rest.append(i)
            continue
        id_bytes = msg_id.encode()
        header_len = _HEADER_LEN + len(id_bytes)
        parts.append(
            _HPUB
            % (
                m.subject.encode(),
                key.encode(),
                attempt,
                header_len,
                header_len + len(payload),
                id_bytes,
                payload,
            )
        )
    return b"".join(parts), rest


def _chain(
    options: dict[str, Any], name: str, ours: Callable[..., Awaitable[None]]
) -> Callable[..., Awaitable[None]]:
    """Our nats-py callback, followed by the caller's one of the same name if given."""
    theirs = options.get(name)
    if theirs is None:
        return ours

    async def both(*args: Any) -> None:
        await ours(*args)
        await theirs(*args)

    return both
