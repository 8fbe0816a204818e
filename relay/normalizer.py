"""The normalizer: the one task between every venue and the publisher.

It turns batches of events from the venue supervisors into batches of
:class:`~relay.wire.OutMessage` (subject, deterministic message id, JSON body), counts what it
sees in Prometheus, and puts the batches into the :class:`~relay.overload.OutageBuffer` in
front of the publisher. Both sides are bounded: when the buffer is full, each data type's
overload policy decides (for a trade, the normalizer waits, and the venue readers on it).

Status events are published on ``market.<venue>._status``, except parse errors, which are
only sampled into the log (the codecs count them): a venue sending garbage must not flood
the status stream.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import structlog
import trio

from relay.events import MarketEvent, VenueStatus
from relay.metrics import Metrics
from relay.overload import OutageBuffer
from relay.wire import OutMessage, to_message

log = structlog.get_logger(__name__)

PARSE_ERROR_LOG_INTERVAL_NS = 10 * 1_000_000_000
"""The log shows one status of a kind per venue in this interval; the rest are counted in
the next one's ``suppressed``. (All are published but parse errors; the codecs count them.)"""


class Normalizer:
    def __init__(self, metrics: Metrics, batch_max: int) -> None:
        self._metrics = metrics
        self._batch_max = batch_max
        self._last_logged: dict[tuple[str, str], int] = {}
        self._suppressed: Counter[tuple[str, str]] = Counter()
        # relay_events_total's child by (venue, event class): labels() takes a lock and
        # builds its key on every call.
        self._event_counters: dict[tuple[str, type], Any] = {}

    async def run(
        self,
        events: trio.MemoryReceiveChannel[list[MarketEvent]],
        out: OutageBuffer,
    ) -> None:
        """Run until every venue has closed its end of ``events``, then close ``out``."""
        # Read when Prometheus scrapes, not on every batch (statistics() builds an object).
        self._metrics.channel_depth.labels("venue_events").set_function(
            lambda: events.statistics().current_buffer_used
        )
        try:
            async with events:
                await self._run(events, out)
        finally:
            out.close()

    async def _run(
        self,
        events: trio.MemoryReceiveChannel[list[MarketEvent]],
        out: OutageBuffer,
    ) -> None:
        async for first in events:
            batch = first
            # Take whatever else is already waiting so the publisher gets big batches.
            while len(batch) < self._batch_max:
                try:
                    batch += events.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            messages = self.encode(batch)
            if messages:
                await out.put(messages)

    def encode(self, batch: list[MarketEvent]) -> list[OutMessage]:
        counts: dict[tuple[str, type], int] = {}
        messages = []
        for event in batch:
            cls = type(event)
            if cls is VenueStatus and not self._status(event):
                continue
            key = (event.venue, cls)
            counts[key] = counts.get(key, 0) + 1
            messages.append(to_message(event))
        children = self._event_counters
        for key, n in counts.items():
            child = children.get(key)
            if child is None:
                venue, cls = key
                tag = cls.__struct_config__.tag  # type: ignore[attr-defined]
                child = children[key] = self._metrics.events.labels(venue, tag)
            child.inc(n)
        return messages

    def _status(self, status: VenueStatus) -> bool:
        """Log a status event, sampled per venue and kind: a venue sending garbage or a
        book flapping must not flood the log. Return whether it is published (all but parse
        errors). What a status reports is counted by the codec that raised it; see
        :meth:`Metrics.add_codec_counters`."""
        kind = status.kind
        if kind == "connected":
            return True
        key = (status.venue, kind)
        now = time.monotonic_ns()
        if now - self._last_logged.get(key, 0) < PARSE_ERROR_LOG_INTERVAL_NS:
            self._suppressed[key] += 1
        else:
            self._last_logged[key] = now
            suppressed = self._suppressed.pop(key, 0)
            if kind == "parse_error":
                log.warning(
                    "unparseable frame (sampled)",
                    venue=status.venue,
                    detail=status.detail,
                    suppressed=suppressed,
                )
            else:
                log.info(
                    "venue status",
                    venue=status.venue,
                    symbol=status.symbol,
                    kind=kind,
                    detail=status.detail,
                    suppressed=suppressed,
                )
        return kind != "parse_error"
